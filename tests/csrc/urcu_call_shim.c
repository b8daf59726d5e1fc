/*
 * urcu_call_shim.c - liburcu call_rcu / rcu_barrier measurements for
 * benches/callbacks.rs (see docs/performance.md, "Callbacks and barriers").
 *
 * Original code written for this project; it only calls liburcu's public API
 * (memb flavor, explicit urcu_memb_* names). Compiled by build.rs next to
 * urcu_shim.c when liburcu is found. Each function runs a whole measurement
 * in C and returns elapsed nanoseconds; the shapes are the anchor harness's
 * (../shared/anchors/BASELINE.md, tables C, D and E).
 */
#define _GNU_SOURCE
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

struct cb_item {
	struct rcu_head head;
	long payload;
};

static uint64_t cb_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void cb_free(struct rcu_head *h)
{
	free(caa_container_of(h, struct cb_item, head));
}

/* The calling thread must be registered (shim_cb_register). */
void shim_cb_register(void) { urcu_memb_register_thread(); }
void shim_cb_unregister(void) { urcu_memb_unregister_thread(); }

/* n x (malloc + call_rcu(free)); returns the enqueue time only. */
uint64_t shim_cb_call_loop(uint64_t n)
{
	uint64_t t0 = cb_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		struct cb_item *it = malloc(sizeof(*it));
		it->payload = (long)i;
		urcu_memb_call_rcu(&it->head, cb_free);
	}
	return cb_now_ns() - t0;
}

/* rcu_barrier() with nothing pending. */
uint64_t shim_cb_barrier(void)
{
	uint64_t t0 = cb_now_ns();
	urcu_memb_barrier();
	return cb_now_ns() - t0;
}

/* n callbacks posted, then rcu_barrier(): end to end. */
uint64_t shim_cb_end_to_end(uint64_t n)
{
	uint64_t t0 = cb_now_ns();
	shim_cb_call_loop(n);
	urcu_memb_barrier();
	return cb_now_ns() - t0;
}

struct holder {
	volatile int entered;
	volatile int release;
};

static void *hold_reader(void *arg)
{
	struct holder *h = arg;
	urcu_memb_register_thread();
	urcu_memb_read_lock();
	__atomic_store_n(&h->entered, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE))
		caa_cpu_relax();
	urcu_memb_read_unlock();
	urcu_memb_unregister_thread();
	return NULL;
}

/* A reader holds the grace period while n callbacks are posted; at t0 it is released and
 * rcu_barrier() is called; returns t1 - t0 (anchor table D). */
uint64_t shim_cb_barrier_pending(uint64_t n)
{
	struct holder h = { 0, 0 };
	pthread_t t;
	pthread_create(&t, NULL, hold_reader, &h);
	while (!__atomic_load_n(&h.entered, __ATOMIC_ACQUIRE))
		caa_cpu_relax();
	shim_cb_call_loop(n);
	uint64_t t0 = cb_now_ns();
	__atomic_store_n(&h.release, 1, __ATOMIC_RELEASE);
	urcu_memb_barrier();
	uint64_t d = cb_now_ns() - t0;
	pthread_join(t, NULL);
	return d;
}
