/*
 * handoff: a module that hands libc code of its own for later, the way ordinary C libraries do,
 * without the host's API. Built once per case, with -DCASE_<NAME> (tests/src/modules.rs,
 * `handoff_module`); each build is a module named "handoff_<name>".
 *
 * | case           | what module code does                                            | answer       |
 * |----------------|------------------------------------------------------------------|--------------|
 * | thread         | init: pthread_create; the thread posts call_rcu, and once refused | Pinned: the  |
 * |                | sleeps and retries, forever                                      | thread named |
 * | thread_joined  | the same thread, told to stop and joined in exit                 | Unloaded     |
 * | ctor_thread    | a constructor (before the host can interpose) starts the thread  | Pinned: scan |
 * | signal         | init: sigaction(SIGUSR2) with a handler in the module            | restored     |
 * | ctor_signal    | a constructor installs that handler                              | Pinned       |
 * | key            | init: pthread_key_create with a destructor in the module; a hook  | key deleted  |
 * |                | sets a value on the calling thread                               |              |
 * | ctor_key       | the key is created by a constructor                              | key deleted  |
 * | timer          | init: timer_create(SIGEV_THREAD) every 2 ms, never deleted        | deleted      |
 * | atexit         | init: atexit() and on_exit() handlers that write a line, and a   | run at unload|
 * |                | pthread_atfork child handler                                     | (glibc, host)|
 * | slow_exit      | exit sleeps 60 s                                                 | Pinned at the|
 * |                |                                                                  | deadline     |
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rcumod.h"

static const struct rcumod_host_api *api;
static struct rcumod_ctx *ctx;
static atomic_int stop;
static atomic_ulong ticks;
static pthread_t worker;

static void say(const char *s)
{
	ssize_t r = write(1, s, strlen(s)); /* stdout, in order with the host's lines */
	(void)r;
}

static void free_head(struct rcu_head *h)
{
	free(h);
}

/* Posts while the host accepts, then sleeps and retries: a refusal is not a reason to stop. */
static void *loop(void *unused)
{
	(void)unused;
	while (!atomic_load(&stop)) {
		if (!api) { /* started by a constructor: init has not run yet */
			usleep(1000);
			continue;
		}
		struct rcu_head *h = calloc(1, sizeof(*h));
		if (h && api->call_rcu(ctx, RCUMOD_DOMAIN_GLOBAL, h, free_head) != RCUMOD_OK) {
			free(h);
			usleep(1000);
		}
		atomic_fetch_add(&ticks, 1);
		usleep(100);
	}
	return NULL;
}

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&ticks, 1);
}

static pthread_key_t key;
static void key_dtor(void *v)
{
	(void)v;
	say("handoff: key destructor ran\n");
}

static uint64_t set_value(void *data, uint64_t arg)
{
	(void)data;
	pthread_setspecific(key, (void *)(uintptr_t)(arg | 1));
	return 0;
}

static void on_timer(union sigval v)
{
	(void)v;
	atomic_fetch_add(&ticks, 1);
}

static void at_exit_handler(void)
{
	say("handoff: atexit handler ran\n");
}

static void after_fork_child(void)
{
	atomic_fetch_add(&ticks, 1);
}

static void on_exit_handler(int status, void *arg)
{
	(void)status;
	(void)arg;
	say("handoff: on_exit handler ran\n");
}

static uint64_t get_ticks(void *data, uint64_t arg)
{
	(void)data;
	(void)arg;
	return atomic_load(&ticks);
}

#if defined(CASE_CTOR_THREAD)
__attribute__((constructor)) static void ctor(void)
{
	pthread_t t;
	pthread_create(&t, NULL, loop, NULL);
	pthread_detach(t);
}
#elif defined(CASE_CTOR_SIGNAL)
__attribute__((constructor)) static void ctor(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGUSR2, &sa, NULL);
}
#elif defined(CASE_CTOR_KEY)
__attribute__((constructor)) static void ctor(void)
{
	pthread_key_create(&key, key_dtor);
}
#endif

static int init(const struct rcumod_host_api *a, struct rcumod_ctx *c)
{
	api = a;
	ctx = c;
	int r = api->hook_publish(ctx, "handoff.ticks", get_ticks, NULL);
	if (r != RCUMOD_OK)
		return r;
#if defined(CASE_THREAD) || defined(CASE_THREAD_JOINED)
	if (pthread_create(&worker, NULL, loop, NULL) != 0)
		return RCUMOD_EINVAL;
	pthread_setname_np(worker, "handoff-loop");
#elif defined(CASE_SIGNAL)
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	if (sigaction(SIGUSR2, &sa, NULL) != 0)
		return RCUMOD_EINVAL;
#elif defined(CASE_KEY) || defined(CASE_CTOR_KEY)
#if defined(CASE_KEY)
	if (pthread_key_create(&key, key_dtor) != 0)
		return RCUMOD_EINVAL;
#endif
	r = api->hook_publish(ctx, "handoff.set", set_value, NULL);
	if (r != RCUMOD_OK)
		return r;
#elif defined(CASE_TIMER)
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD;
	ev.sigev_notify_function = on_timer;
	timer_t t;
	if (timer_create(CLOCK_MONOTONIC, &ev, &t) != 0)
		return RCUMOD_EINVAL;
	struct itimerspec its = { { 0, 2000000 }, { 0, 2000000 } };
	timer_settime(t, 0, &its, NULL);
#elif defined(CASE_ATEXIT)
	atexit(at_exit_handler);
	on_exit(on_exit_handler, NULL);
	pthread_atfork(NULL, NULL, after_fork_child);
#endif
	return RCUMOD_OK;
}

static void fini(const struct rcumod_host_api *a, struct rcumod_ctx *c)
{
	(void)a;
	(void)c;
#if defined(CASE_THREAD_JOINED)
	atomic_store(&stop, 1);
	pthread_join(worker, NULL);
#elif defined(CASE_SLOW_EXIT)
	sleep(60);
#endif
}

RCUMOD_MODINFO("name=" MODNAME "\0"
	       "version=1.0\0"
	       "description=hands libc code for later (see handoff.c)\0"
	       "license=MIT OR Apache-2.0\0");
RCUMOD_MODULE(MODNAME, init, fini);
