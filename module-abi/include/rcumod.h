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
#define RCUMOD_ABI_MINOR 0
#define RCUMOD_ABI_STR "1.0"
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
};

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
