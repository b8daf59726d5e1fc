/* boundary: the module side of the module-boundary benchmark (tests/benches/boundary.rs).
 *
 * Each hook repeats one host-API operation `arg` times in a loop, so the host's cost per
 * operation is the hook's time divided by `arg`, with one hook dispatch spread over them:
 *
 * | hook                     | each iteration                                              |
 * |--------------------------|-------------------------------------------------------------|
 * | boundary.read_pair       | rcumod_reader_lock + rcumod_dereference + _unlock, with the |
 * |                          | thread's reader fetched once per call (memb domain 0)       |
 * | boundary.read_pair_tls   | rcumod_read_lock(0) / _unlock(0): the reader looked up in   |
 * |                          | thread-local storage at each call                           |
 * | boundary.read_pair_api   | api->read_lock + api->dereference + api->read_unlock        |
 * | boundary.read_pair_qsbr  | rcumod_read_lock on domain 1 (qsbr: the API underneath)     |
 * | boundary.call_rcu        | malloc + call_rcu(0, &item->rcu, free_item)                 |
 * | boundary.call_rcu_entry  | malloc + call_rcu_entry(0, &item->entry, free_arg, item)    |
 * | boundary.nop             | (none: returns arg + 1; the dispatch cost alone)            |
 *
 * and one for the misuse tests (tests/tests/loader_boundary.rs): `boundary.misuse` returns the
 * answers of the fast paths to a foreign context and an unbalanced unlock, packed one byte each.
 */
#include "rcumod.h"
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

static const struct rcumod_host_api *api;
static struct rcumod_ctx *ctx;
static void *shared_slot;
static uint64_t shared_value = 42;

struct item {
	struct rcu_head rcu;
	uint64_t payload;
};

struct entry_item {
	struct rcu_entry entry;
	uint64_t payload;
};

static void free_item(struct rcu_head *h)
{
	free(container_of(h, struct item, rcu));
}

static void free_arg(void *p)
{
	free(p);
}

static uint64_t read_pair_on(uint32_t domain, uint64_t n)
{
	uint64_t sum = 0;
	for (uint64_t i = 0; i < n; i++) {
		rcumod_read_lock(api, ctx, domain);
		uint64_t *p = rcumod_dereference(&shared_slot);
		sum += *p;
		rcumod_read_unlock(api, ctx, domain);
	}
	return sum;
}

static uint64_t read_pair(void *d, uint64_t n)
{
	(void)d;
	struct rcumod_reader *found = rcumod_reader(api, ctx, RCUMOD_DOMAIN_GLOBAL);
	if (!found)
		return 0;
	/* A copy in a local: its fields stay in registers across the sections' fences. */
	struct rcumod_reader r = *found;
	uint64_t sum = 0;
	for (uint64_t i = 0; i < n; i++) {
		rcumod_reader_lock(&r);
		uint64_t *p = rcumod_dereference(&shared_slot);
		sum += *p;
		rcumod_reader_unlock(api, ctx, &r);
	}
	return sum;
}

static uint64_t read_pair_tls(void *d, uint64_t n)
{
	(void)d;
	return read_pair_on(RCUMOD_DOMAIN_GLOBAL, n);
}

static uint64_t read_pair_api(void *d, uint64_t n)
{
	(void)d;
	uint64_t sum = 0;
	for (uint64_t i = 0; i < n; i++) {
		api->read_lock(ctx, RCUMOD_DOMAIN_GLOBAL);
		uint64_t *p = api->dereference(&shared_slot);
		sum += *p;
		api->read_unlock(ctx, RCUMOD_DOMAIN_GLOBAL);
	}
	return sum;
}

static uint64_t read_pair_qsbr(void *d, uint64_t n)
{
	(void)d;
	return read_pair_on(1, n);
}

static uint64_t call_rcu_loop(void *d, uint64_t n)
{
	(void)d;
	uint64_t refused = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct item *it = malloc(sizeof *it);
		if (!it)
			return refused + n - i;
		it->payload = i;
		if (api->call_rcu(ctx, RCUMOD_DOMAIN_GLOBAL, &it->rcu, free_item) != RCUMOD_OK) {
			free(it);
			refused++;
		}
	}
	return refused;
}

static uint64_t call_rcu_entry_loop(void *d, uint64_t n)
{
	(void)d;
	uint64_t refused = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct entry_item *it = malloc(sizeof *it);
		if (!it)
			return refused + n - i;
		it->payload = i;
		if (api->call_rcu_entry(ctx, RCUMOD_DOMAIN_GLOBAL, &it->entry, free_arg, it) !=
		    RCUMOD_OK) {
			free(it);
			refused++;
		}
	}
	return refused;
}

/* Each answer as a byte: its negated error code. */
static uint64_t misuse(void *d, uint64_t x)
{
	(void)d;
	(void)x;
	struct rcumod_ctx *foreign = (struct rcumod_ctx *)&shared_value;
	struct item it;
	uint64_t r = 0;
	r |= (uint64_t)(uint8_t)-api->read_lock(foreign, RCUMOD_DOMAIN_GLOBAL);
	r |= (uint64_t)(uint8_t)-api->read_unlock(foreign, RCUMOD_DOMAIN_GLOBAL) << 8;
	r |= (uint64_t)(uint8_t)-api->call_rcu(foreign, RCUMOD_DOMAIN_GLOBAL, &it.rcu, free_item) << 16;
	r |= (uint64_t)(uint8_t)-api->call_rcu(NULL, RCUMOD_DOMAIN_GLOBAL, &it.rcu, free_item) << 24;
	/* Outside any section of domain 1 (the hook runs inside one of domain 0 only). */
	r |= (uint64_t)(uint8_t)-api->read_unlock(ctx, 1) << 32;
	r |= (uint64_t)(uint8_t)-api->call_rcu(ctx, 99, &it.rcu, free_item) << 40;
	struct rcumod_reader rd;
	r |= (uint64_t)(uint8_t)-api->reader_get(ctx, 1, &rd) << 48;
	r |= (uint64_t)(uint8_t)-api->reader_get(ctx, RCUMOD_DOMAIN_PROCESS, &rd) << 56;
	return r;
}

static uint64_t nop(void *d, uint64_t x)
{
	(void)d;
	return x + 1;
}

static int boundary_init(const struct rcumod_host_api *a, struct rcumod_ctx *c)
{
	api = a;
	ctx = c;
	api->assign_pointer(&shared_slot, &shared_value);
	int r = 0;
	r = r ? r : api->hook_publish(ctx, "boundary.read_pair", read_pair, NULL);
	r = r ? r : api->hook_publish(ctx, "boundary.read_pair_tls", read_pair_tls, NULL);
	r = r ? r : api->hook_publish(ctx, "boundary.read_pair_api", read_pair_api, NULL);
	r = r ? r : api->hook_publish(ctx, "boundary.read_pair_qsbr", read_pair_qsbr, NULL);
	r = r ? r : api->hook_publish(ctx, "boundary.call_rcu", call_rcu_loop, NULL);
	r = r ? r : api->hook_publish(ctx, "boundary.call_rcu_entry", call_rcu_entry_loop, NULL);
	r = r ? r : api->hook_publish(ctx, "boundary.nop", nop, NULL);
	r = r ? r : api->hook_publish(ctx, "boundary.misuse", misuse, NULL);
	return r;
}

static void boundary_exit(const struct rcumod_host_api *a, struct rcumod_ctx *c)
{
	(void)a;
	(void)c;
}

RCUMOD_MODINFO("name=boundary\0"
	       "license=MIT\0"
	       "description=the module side of the module-boundary benchmark\0");
RCUMOD_MODULE("boundary", boundary_init, boundary_exit);
