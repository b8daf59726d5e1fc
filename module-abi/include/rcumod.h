/*
 * rcumod.h - the rcumod module contract for C modules.
 *
 * Mirrors the Rust definitions in module-abi/src/lib.rs; the test
 * module-abi/tests/header_sync.rs compiles this header against offsets and sizes computed
 * from the Rust types, so the two cannot drift apart.
 *
 * A module exports one `const struct rcumod_module rcumod_module` and a `.modinfo` section
 * (RCUMOD_MODINFO), and reaches every host service through the `struct rcumod_host_api`
 * passed to its init. Every host function is thread-safe. Error codes are negative.
 */
#ifndef RCUMOD_H
#define RCUMOD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RCUMOD_ABI_MAJOR 1
#define RCUMOD_ABI_MINOR 1
#define RCUMOD_ABI_STR "1.1"
/* "RCUMOD" 0x01 0x00, little-endian */
#define RCUMOD_DESCRIPTOR_MAGIC 0x0001444F4D554352ULL

#define RCUMOD_DOMAIN_GLOBAL 0u
#define RCUMOD_DOMAIN_QSBR 1u
#define RCUMOD_DOMAIN_PROCESS 2u /* the process-wide domain; signal hooks run under it */

#define RCUMOD_OK 0
#define RCUMOD_EINVAL (-22)
#define RCUMOD_ENOENT (-2)
#define RCUMOD_ESHUTDOWN (-108)
#define RCUMOD_EFAULT (-14)
#define RCUMOD_EDEADLK (-35)
#define RCUMOD_ENOSPC (-28)
#define RCUMOD_ERANGE (-34)
#define RCUMOD_EOPNOTSUPP (-95)

#define RCUMOD_LOG_ERROR 1u
#define RCUMOD_LOG_WARN 2u
#define RCUMOD_LOG_INFO 3u
#define RCUMOD_LOG_DEBUG 4u

struct rcumod_ctx; /* opaque */

struct rcu_head {
	struct rcu_head *next;           /* host-owned while posted */
	void (*func)(struct rcu_head *); /* host-owned while posted */
};

/* The Keyronex RCU(9) form: ke_rcu_call(entry, callback, arg). */
struct rcu_entry {
	struct rcu_head head;
	void (*callback)(void *);
	void *arg;
};

struct rcumod_host_api;

/* A thread's reader of a memb host domain (ABI 1.1): see rcumod_read_lock below. */
struct rcumod_reader {
	uint64_t *word;           /* the thread's reader word */
	const uint64_t *gp_ctr;   /* the domain's grace-period counter */
	const uint32_t *sleepers; /* nonzero: an outermost unlock calls read_unlock_slow */
	uint64_t nest_mask;       /* the nesting bits of the word */
	uint32_t full_fence;      /* nonzero: full fences (no membarrier on this system) */
	uint32_t domain;
};

struct rcumod_module {
	uint64_t magic;     /* RCUMOD_DESCRIPTOR_MAGIC */
	uint32_t abi_major; /* RCUMOD_ABI_MAJOR */
	uint32_t abi_minor; /* RCUMOD_ABI_MINOR */
	uint32_t size;      /* sizeof(struct rcumod_module) */
	uint32_t flags;     /* 0 */
	const char *name;   /* must equal the .modinfo name */
	int (*init)(const struct rcumod_host_api *api, struct rcumod_ctx *ctx);
	void (*exit)(const struct rcumod_host_api *api, struct rcumod_ctx *ctx);
};

typedef uint64_t (*rcumod_hook_fn)(void *data, uint64_t arg);

struct rcumod_host_api {
	uint32_t abi_major;
	uint32_t abi_minor;
	uint32_t size;
	uint32_t flags;

	void (*log)(struct rcumod_ctx *ctx, uint32_t level, const uint8_t *msg, size_t len);

	int (*read_lock)(struct rcumod_ctx *ctx, uint32_t domain);
	int (*read_unlock)(struct rcumod_ctx *ctx, uint32_t domain);
	void *(*dereference)(void *const *slot);
	void (*assign_pointer)(void **slot, void *value);
	int (*synchronize)(struct rcumod_ctx *ctx, uint32_t domain);

	int (*call_rcu)(struct rcumod_ctx *ctx, uint32_t domain, struct rcu_head *head,
			void (*func)(struct rcu_head *));
	int (*call_rcu_entry)(struct rcumod_ctx *ctx, uint32_t domain, struct rcu_entry *entry,
			      void (*callback)(void *), void *arg);

	int (*srcu_create)(struct rcumod_ctx *ctx, const char *name, uint32_t *id);
	int (*srcu_read_lock)(struct rcumod_ctx *ctx, uint32_t id);
	int (*srcu_read_unlock)(struct rcumod_ctx *ctx, uint32_t id, int token);
	int (*srcu_synchronize)(struct rcumod_ctx *ctx, uint32_t id);
	int (*call_srcu)(struct rcumod_ctx *ctx, uint32_t id, struct rcu_head *head,
			 void (*func)(struct rcu_head *));

	int (*timer_start)(struct rcumod_ctx *ctx, uint64_t period_ns, void (*func)(void *),
			   void *arg, uint32_t *id);
	int (*timer_cancel)(struct rcumod_ctx *ctx, uint32_t id);

	int (*thread_spawn)(struct rcumod_ctx *ctx, const char *name, void (*func)(void *),
			    void *arg, uint32_t *id);
	int (*thread_should_stop)(struct rcumod_ctx *ctx);
	int (*thread_sleep)(struct rcumod_ctx *ctx, uint64_t ns);

	int (*hook_publish)(struct rcumod_ctx *ctx, const char *name, rcumod_hook_fn func,
			    void *data);
	int (*hook_unpublish)(struct rcumod_ctx *ctx, const char *name);

	int (*param_get)(struct rcumod_ctx *ctx, const char *name, char *buf, size_t len);

	/* Run func(data, signo) from the host's handler for signo (SIGPROF, SIGALRM, SIGUSR1,
	 * SIGUSR2), inside a read section of RCUMOD_DOMAIN_PROCESS; func must be signal-safe. */
	int (*signal_hook)(struct rcumod_ctx *ctx, int signo, rcumod_hook_fn func, void *data);
	int (*signal_unhook)(struct rcumod_ctx *ctx, int signo);

	/* rcu_barrier() on a host domain; RCUMOD_EDEADLK from a callback or a read section. */
	int (*barrier)(struct rcumod_ctx *ctx, uint32_t domain);

	/* ---- ABI 1.1 ---- */
	/* The calling thread's reader of memb host domain `domain`, for the inline read side
	 * below; RCUMOD_EOPNOTSUPP for qsbr and for RCUMOD_DOMAIN_PROCESS. */
	int (*reader_get)(struct rcumod_ctx *ctx, uint32_t domain, struct rcumod_reader *out);
	void (*read_unlock_slow)(struct rcumod_ctx *ctx, uint32_t domain);
};

/* The inline read side (ABI 1.1). rcu-core's memb read side, fence for fence
 * (rcu-core/src/foreign.rs), in a few instructions instead of a call into the host:
 *
 *   struct rcumod_reader *r = rcumod_reader(api, ctx, RCUMOD_DOMAIN_GLOBAL);
 *   if (r) { rcumod_reader_lock(r); p = rcumod_dereference(&slot); ...;
 *            rcumod_reader_unlock(api, ctx, r); }
 *
 * A reader is the calling thread's (it may be kept for the thread's life, never handed to
 * another thread); rcumod_reader returns NULL where none is offered (a qsbr domain, the
 * process domain, a host without ABI 1.1), and then api->read_lock / read_unlock serve.
 * rcumod_read_lock / rcumod_read_unlock do both: they look the reader up in this file's
 * thread-local cache at each call (a __tls_get_addr call in a module), with the API's
 * arguments and answers. The first lookup on a thread may allocate (registration): in a signal
 * handler, use api->read_lock. */
#define RCUMOD_FAST_DOMAINS 4

struct rcumod_fast_tls {
	struct rcumod_reader r[RCUMOD_FAST_DOMAINS];
	uint8_t state[RCUMOD_FAST_DOMAINS]; /* 0 not asked, 1 ready, 2 not offered */
};

static __thread struct rcumod_fast_tls rcumod_fast_tls_;

static inline struct rcumod_reader *rcumod_reader(const struct rcumod_host_api *api,
						  struct rcumod_ctx *ctx, uint32_t domain)
{
	if (domain >= RCUMOD_FAST_DOMAINS)
		return 0;
	uint8_t st = rcumod_fast_tls_.state[domain];
	if (__builtin_expect(st == 1, 1))
		return &rcumod_fast_tls_.r[domain];
	if (st == 2)
		return 0;
	if (api->size < offsetof(struct rcumod_host_api, read_unlock_slow) + sizeof(void *) ||
	    api->reader_get(ctx, domain, &rcumod_fast_tls_.r[domain]) != RCUMOD_OK) {
		rcumod_fast_tls_.state[domain] = 2;
		return 0;
	}
	rcumod_fast_tls_.state[domain] = 1;
	return &rcumod_fast_tls_.r[domain];
}

static inline void rcumod_fast_fence_(const struct rcumod_reader *r)
{
	if (r->full_fence)
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	else
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* Enter a section; RCUMOD_EINVAL only on nesting overflow. */
static inline int rcumod_reader_lock(struct rcumod_reader *r)
{
	uint64_t w = __atomic_load_n(r->word, __ATOMIC_RELAXED);
	if (__builtin_expect((w & r->nest_mask) == 0, 1)) {
		/* Acquire R, then fence B (rcu-core docs/design/memory-ordering.md). */
		__atomic_store_n(r->word, __atomic_load_n(r->gp_ctr, __ATOMIC_ACQUIRE),
				 __ATOMIC_RELAXED);
		rcumod_fast_fence_(r);
		return RCUMOD_OK;
	}
	if ((w & r->nest_mask) == r->nest_mask)
		return RCUMOD_EINVAL;
	__atomic_store_n(r->word, w + 1, __ATOMIC_RELAXED);
	return RCUMOD_OK;
}

/* Leave a section; RCUMOD_EINVAL (and nothing changes) outside one. */
static inline int rcumod_reader_unlock(const struct rcumod_host_api *api, struct rcumod_ctx *ctx,
				       struct rcumod_reader *r)
{
	uint64_t w = __atomic_load_n(r->word, __ATOMIC_RELAXED);
	uint64_t n = w & r->nest_mask;
	if (__builtin_expect(n == 1, 1)) {
		/* Release C, then fence D; a waiting writer is woken by the host. */
		__atomic_store_n(r->word, 0, __ATOMIC_RELEASE);
		rcumod_fast_fence_(r);
		if (__atomic_load_n(r->sleepers, __ATOMIC_RELAXED))
			api->read_unlock_slow(ctx, r->domain);
		return RCUMOD_OK;
	}
	if (n == 0)
		return RCUMOD_EINVAL;
	__atomic_store_n(r->word, w - 1, __ATOMIC_RELAXED);
	return RCUMOD_OK;
}

static inline int rcumod_read_lock(const struct rcumod_host_api *api, struct rcumod_ctx *ctx,
				   uint32_t domain)
{
	struct rcumod_reader *r = rcumod_reader(api, ctx, domain);
	return r ? rcumod_reader_lock(r) : api->read_lock(ctx, domain);
}

static inline int rcumod_read_unlock(const struct rcumod_host_api *api, struct rcumod_ctx *ctx,
				     uint32_t domain)
{
	struct rcumod_reader *r = rcumod_reader(api, ctx, domain);
	return r ? rcumod_reader_unlock(api, ctx, r) : api->read_unlock(ctx, domain);
}

/* api->dereference and api->assign_pointer, inline. */
static inline void *rcumod_dereference(void *const *slot)
{
	return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

static inline void rcumod_assign_pointer(void **slot, void *value)
{
	__atomic_store_n(slot, value, __ATOMIC_RELEASE);
}

/* Declare the .modinfo records: RCUMOD_MODINFO("name=x\0" "license=MIT\0" ...).
 * The abi record is added for you. */
#define RCUMOD_MODINFO(records)                                                          \
	__attribute__((section(".modinfo"), used, aligned(1)))                          \
	static const char rcumod_modinfo_records[] = records "abi=" RCUMOD_ABI_STR "\0"

/* Export the descriptor. */
#define RCUMOD_MODULE(modname, init_fn, exit_fn)                                          \
	__attribute__((visibility("default"))) const struct rcumod_module rcumod_module = { \
		RCUMOD_DESCRIPTOR_MAGIC, RCUMOD_ABI_MAJOR, RCUMOD_ABI_MINOR,             \
		sizeof(struct rcumod_module), 0, modname, init_fn, exit_fn }

#ifdef __cplusplus
}
#endif

#endif /* RCUMOD_H */
