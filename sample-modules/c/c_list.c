/*
 * c_list: the rcu_list sample written in C against rcumod.h.
 *
 * An RCU-protected list of nodes with an embedded rcu_head; the hook "c_list.sum" walks it
 * (the host calls hooks inside a read section of RCUMOD_DOMAIN_GLOBAL); a host-managed timer
 * unlinks one node (list_del_rcu) and frees it through call_rcu (on host domain `domain`, the
 * readers' hook domain 0 by default), and pushes a new one; every
 * other deletion uses the Keyronex form (call_rcu_entry) to exercise both. At exit the list is
 * detached and freed by a final callback.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rcumod.h"

struct node {
	uint64_t value;
	_Atomic(struct node *) next;
	struct rcu_head rcu;     /* for call_rcu */
	struct rcu_entry entry;  /* for call_rcu_entry */
};

static _Atomic(struct node *) head;
static pthread_mutex_t writer = PTHREAD_MUTEX_INITIALIZER;
static uint64_t next_value = 1;
static uint64_t churns;
static const struct rcumod_host_api *api;
static struct rcumod_ctx *ctx;
static uint32_t timer_id;
static uint32_t domain = RCUMOD_DOMAIN_GLOBAL; /* where deletions are posted */

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

static void log_info(const char *msg)
{
	api->log(ctx, RCUMOD_LOG_INFO, (const uint8_t *)msg, strlen(msg));
}

static void free_node_head(struct rcu_head *h)
{
	free(container_of(h, struct node, rcu));
}

static void free_node_arg(void *arg)
{
	free(arg);
}

static void push_front(uint64_t v)
{
	struct node *n = calloc(1, sizeof(*n));
	if (!n)
		return;
	n->value = v;
	atomic_store_explicit(&n->next, atomic_load_explicit(&head, memory_order_relaxed),
			      memory_order_relaxed);
	/* rcu_assign_pointer */
	atomic_store_explicit(&head, n, memory_order_release);
}

static void churn(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&writer);
	struct node *h = atomic_load_explicit(&head, memory_order_relaxed);
	struct node *victim = h ? atomic_load_explicit(&h->next, memory_order_relaxed) : NULL;
	if (victim) {
		atomic_store_explicit(&h->next,
				      atomic_load_explicit(&victim->next, memory_order_relaxed),
				      memory_order_release); /* list_del_rcu */
		int r;
		if (churns++ % 2)
			r = api->call_rcu(ctx, domain, &victim->rcu, free_node_head);
		else
			r = api->call_rcu_entry(ctx, domain, &victim->entry, free_node_arg, victim);
		if (r != RCUMOD_OK) {
			/* Refused: wait for readers ourselves. */
			api->synchronize(ctx, domain);
			free(victim);
		}
	}
	push_front(next_value++);
	pthread_mutex_unlock(&writer);
}

static uint64_t sum(void *data, uint64_t arg)
{
	(void)data;
	(void)arg;
	/* The host calls hooks inside a read section of domain 0. Nodes are retired through
	 * `domain`; if that is another domain, its grace periods do not wait for domain-0
	 * readers, so the walk must hold a section of `domain` as well. */
	int other = domain != RCUMOD_DOMAIN_GLOBAL;
	if (other && api->read_lock(ctx, domain) != RCUMOD_OK)
		return 0;
	uint64_t total = 0;
	for (struct node *p = atomic_load_explicit(&head, memory_order_acquire); p;
	     p = atomic_load_explicit(&p->next, memory_order_acquire))
		total += p->value;
	if (other)
		api->read_unlock(ctx, domain);
	return total;
}

struct chain {
	struct rcu_head rcu;
	struct node *first;
};

static void free_chain(struct rcu_head *h)
{
	struct chain *c = container_of(h, struct chain, rcu);
	struct node *p = c->first;
	while (p) {
		struct node *n = atomic_load_explicit(&p->next, memory_order_relaxed);
		free(p);
		p = n;
	}
	free(c);
}

static int c_list_init(const struct rcumod_host_api *a, struct rcumod_ctx *c)
{
	api = a;
	ctx = c;
	char buf[32];
	uint64_t count = 32, period_us = 200;
	if (api->param_get(ctx, "count", buf, sizeof buf) > 0)
		count = strtoull(buf, NULL, 10);
	if (api->param_get(ctx, "period_us", buf, sizeof buf) > 0)
		period_us = strtoull(buf, NULL, 10);
	if (api->param_get(ctx, "domain", buf, sizeof buf) > 0)
		domain = (uint32_t)strtoul(buf, NULL, 10);
	for (uint64_t i = 0; i < count; i++)
		push_front(next_value++);
	int r = api->hook_publish(ctx, "c_list.sum", sum, NULL);
	if (r)
		return r;
	r = api->timer_start(ctx, period_us * 1000, churn, NULL, &timer_id);
	if (r)
		return r;
	log_info("c_list: ready");
	return RCUMOD_OK;
}

static void c_list_exit(const struct rcumod_host_api *a, struct rcumod_ctx *c)
{
	(void)a;
	(void)c;
	struct chain *ch = malloc(sizeof(*ch));
	struct node *first = atomic_exchange(&head, NULL);
	if (!ch) {
		api->synchronize(ctx, domain);
		while (first) {
			struct node *n = atomic_load(&first->next);
			free(first);
			first = n;
		}
		return;
	}
	ch->first = first;
	if (api->call_rcu(ctx, domain, &ch->rcu, free_chain) != RCUMOD_OK) {
		api->synchronize(ctx, domain);
		free_chain(&ch->rcu);
	}
}

RCUMOD_MODINFO("name=c_list\0"
	       "version=1.0\0"
	       "description=RCU-protected list in C (call_rcu and call_rcu_entry)\0"
	       "author=rcumod\0"
	       "license=MIT OR Apache-2.0\0"
	       "depends=\0"
	       "parm=count:uint:initial number of nodes\0"
	       "parm=period_us:uint:churn period in microseconds\0"
	       "parm=domain:uint:host RCU domain that frees are posted to (0 memb, 1 qsbr)\0");

RCUMOD_MODULE("c_list", c_list_init, c_list_exit);
