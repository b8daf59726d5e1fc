/*
 * urcu_shim.c - liburcu measurement loops for the rcumod-tests benchmarks
 * (benches/read_side.rs, benches/grace_period.rs; see docs/performance.md).
 *
 * Original code written for this project. It only calls liburcu's public API
 * (liburcu-dev 0.13 headers); it is compiled by build.rs only when pkg-config
 * finds liburcu-memb and liburcu-qsbr.
 *
 * - Both flavors live in this one translation unit through their explicit
 *   names (urcu_memb_*, urcu_qsbr_*). URCU_API_MAP is deliberately not
 *   defined, so the generic names (rcu_read_lock, ...) do not exist here.
 * - _LGPL_SOURCE inlines the read-side fast paths, as in the anchor harness
 *   (../shared/anchors/liburcu-bench/urcu_bench.c).
 * - Every loop runs entirely in C: one FFI call per measurement (or per
 *   busy-reader thread), never one per read.
 * - The loop body is the anchor harness's: lock, rcu_dereference of a global
 *   pointer, add the object's field to a sum, unlock; 1024 reads per check.
 */
#define _GNU_SOURCE
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>
#include <urcu/urcu-qsbr.h>

#include <stdint.h>
#include <time.h>

#define SHIM_BATCH 1024

struct shim_obj {
	long val;
	long pad;
};

/* The RCU-protected pointer read by every loop. Nothing ever updates it:
 * the grace-period benchmarks measure synchronize alone. */
static struct shim_obj shim_initial = { 42, 0 };
static struct shim_obj *shim_gp = &shim_initial;

/* Where the loops leave their sums, so the reads cannot be optimised away. */
static volatile long shim_sink;

static uint64_t shim_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline int shim_stopped(const uint32_t *stop)
{
	return __atomic_load_n(stop, __ATOMIC_RELAXED) != 0;
}

/* ------------------------------------------------------------------ */
/* memb                                                               */

void shim_memb_register_thread(void)
{
	urcu_memb_register_thread();
}

void shim_memb_unregister_thread(void)
{
	urcu_memb_unregister_thread();
}

void shim_memb_synchronize(void)
{
	urcu_memb_synchronize_rcu();
}

static inline __attribute__((always_inline)) long memb_reads(long sum, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		urcu_memb_read_lock();
		struct shim_obj *p = rcu_dereference(shim_gp);
		sum += p->val;
		urcu_memb_read_unlock();
	}
	return sum;
}

/* `iters` read-side pairs on the calling (registered) thread, in batches of
 * SHIM_BATCH. Returns the elapsed time in ns. */
uint64_t shim_memb_read_loop(uint64_t iters)
{
	long sum = 0;
	uint64_t t0 = shim_now_ns();
	for (uint64_t b = iters / SHIM_BATCH; b > 0; b--)
		sum = memb_reads(sum, SHIM_BATCH);
	sum = memb_reads(sum, iters % SHIM_BATCH);
	uint64_t t1 = shim_now_ns();
	shim_sink = sum;
	return t1 - t0;
}

/* A busy reader: registers the calling thread, reads in batches of
 * SHIM_BATCH until *stop becomes nonzero, unregisters. Returns the number of
 * reads. */
uint64_t shim_memb_reader_until(const uint32_t *stop)
{
	uint64_t count = 0;
	long sum = 0;
	urcu_memb_register_thread();
	while (!shim_stopped(stop)) {
		sum = memb_reads(sum, SHIM_BATCH);
		count += SHIM_BATCH;
	}
	urcu_memb_unregister_thread();
	shim_sink = sum;
	return count;
}

/* ------------------------------------------------------------------ */
/* qsbr                                                               */

void shim_qsbr_register_thread(void)
{
	urcu_qsbr_register_thread();
}

void shim_qsbr_unregister_thread(void)
{
	urcu_qsbr_unregister_thread();
}

void shim_qsbr_thread_online(void)
{
	urcu_qsbr_thread_online();
}

void shim_qsbr_thread_offline(void)
{
	urcu_qsbr_thread_offline();
}

void shim_qsbr_synchronize(void)
{
	urcu_qsbr_synchronize_rcu();
}

static inline __attribute__((always_inline)) long qsbr_reads(long sum, uint64_t n,
							     int qs_each_read)
{
	for (uint64_t i = 0; i < n; i++) {
		urcu_qsbr_read_lock();
		struct shim_obj *p = rcu_dereference(shim_gp);
		sum += p->val;
		urcu_qsbr_read_unlock();
		if (qs_each_read)
			urcu_qsbr_quiescent_state();
	}
	return sum;
}

/* `iters` read-side pairs on the calling (registered, online) thread, with a
 * quiescent state after every SHIM_BATCH reads. Returns the elapsed ns. */
uint64_t shim_qsbr_read_loop(uint64_t iters)
{
	long sum = 0;
	uint64_t t0 = shim_now_ns();
	for (uint64_t b = iters / SHIM_BATCH; b > 0; b--) {
		sum = qsbr_reads(sum, SHIM_BATCH, 0);
		urcu_qsbr_quiescent_state();
	}
	sum = qsbr_reads(sum, iters % SHIM_BATCH, 0);
	urcu_qsbr_quiescent_state();
	uint64_t t1 = shim_now_ns();
	shim_sink = sum;
	return t1 - t0;
}

/* A busy reader: registers the calling thread (online), reads until *stop
 * becomes nonzero with a quiescent state after every read (qs_each_read) or
 * after every SHIM_BATCH reads, then goes offline and unregisters. Returns
 * the number of reads. */
uint64_t shim_qsbr_reader_until(const uint32_t *stop, int qs_each_read)
{
	uint64_t count = 0;
	long sum = 0;
	urcu_qsbr_register_thread();
	while (!shim_stopped(stop)) {
		if (qs_each_read) {
			sum = qsbr_reads(sum, SHIM_BATCH, 1);
		} else {
			sum = qsbr_reads(sum, SHIM_BATCH, 0);
			urcu_qsbr_quiescent_state();
		}
		count += SHIM_BATCH;
	}
	urcu_qsbr_thread_offline();
	urcu_qsbr_unregister_thread();
	shim_sink = sum;
	return count;
}
