/*
 * pool.c - fork-join pool. A job is published by bumping `gen`; helpers notice it by
 * spinning for a bounded number of polls, then by sleeping on `cv_work`. The caller
 * works as thread 0, then waits for `pending` to reach zero the same way. Spinning keeps
 * the per-job cost near a cache-line round trip when jobs come back to back (as inside
 * one forward pass); the bound keeps idle pools from burning CPU.
 */
#define _GNU_SOURCE // CPU_SET, pthread_setaffinity_np
#include "pool.h"

#include "llm_err.h"

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define POOL_SPIN_POLLS 100000
// Yield the core every so often while spinning: when threads outnumber cores (tests,
// busy hosts) the thread we wait for may need this very core to make progress. With a
// core each, a yield is only a syscall between a job's arrival and its start, so rarely.
#define POOL_YIELD_OVERSUBSCRIBED 256
#define POOL_YIELD_OWN_CORE 8192

struct pool {
    int n_threads;
    pthread_t *threads; // [n_threads - 1] helpers
    pool_fn fn;         // current job, valid while pending > 0
    void *ctx;
    atomic_uint gen;    // bumped once per job
    atomic_int pending; // helpers still running the current job
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv_work; // helpers wait here for gen to move
    pthread_cond_t cv_done; // caller waits here for pending == 0
    int n_started;
    int yield_every;   // polls between sched_yield() calls while spinning
    int cpu0;          // CPU for thread 0 after pool_pin, else -1
    pthread_t pinned0; // the caller pinned there (valid once has_pinned0)
    bool has_pinned0;
};

typedef struct {
    pool *p;
    int ith;
} pool_arg;

static void *
pool_main(void *argp)
{
    pool_arg arg = *(pool_arg *)argp;
    free(argp);
    pool *p = arg.p;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int polls = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed) && polls < POOL_SPIN_POLLS)
            if (++polls % p->yield_every == 0)
                sched_yield();
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            return NULL;
        seen = g;
        p->fn(p->ctx, arg.ith, p->n_threads);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* The CPUs the process may run on, as first seen (at the first pool_new, before any
 * pool pinned a thread: a pinned thread's own mask would be one CPU). */
static cpu_set_t start_cpus;
static bool start_cpus_ok;
static pthread_once_t start_cpus_once = PTHREAD_ONCE_INIT;

static void
read_start_cpus(void)
{
    start_cpus_ok = sched_getaffinity(0, sizeof(start_cpus), &start_cpus) == 0;
}

/* Those CPU ids in order, into cpus[0..*n). */
static int
allowed_cpus(int *cpus, int cap, int *n)
{
    pthread_once(&start_cpus_once, read_start_cpus);
    if (!start_cpus_ok)
        return LLM_EINVAL;
    *n = 0;
    for (int c = 0; c < CPU_SETSIZE && *n < cap; c++)
        if (CPU_ISSET(c, &start_cpus))
            cpus[(*n)++] = c;
    return *n > 0 ? LLM_OK : LLM_EINVAL;
}

static int
bind_thread(pthread_t t, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(t, sizeof(set), &set) == 0 ? LLM_OK : LLM_EINVAL;
}

int
pool_new(int n_threads, pool **out)
{
    if (n_threads < 1 || n_threads > 1024)
        return LLM_EINVAL;
    pool *p = calloc(1, sizeof(*p));
    if (!p)
        return LLM_ENOMEM;
    p->n_threads = n_threads;
    p->cpu0 = -1;
    pthread_once(&start_cpus_once, read_start_cpus);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    p->yield_every =
        cpus > 0 && n_threads <= cpus ? POOL_YIELD_OWN_CORE : POOL_YIELD_OVERSUBSCRIBED;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!p->threads) {
            pool_free(p);
            return LLM_ENOMEM;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        pool_arg *arg = malloc(sizeof(*arg));
        if (!arg) {
            pool_free(p);
            return LLM_ENOMEM;
        }
        arg->p = p;
        arg->ith = i;
        if (pthread_create(&p->threads[i - 1], NULL, pool_main, arg) != 0) {
            free(arg);
            pool_free(p);
            return LLM_ENOMEM;
        }
        p->n_started++;
    }
    *out = p;
    return LLM_OK;
}

void
pool_free(pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    free(p->threads);
    free(p);
}

int
pool_n_threads(const pool *p)
{
    return p ? p->n_threads : 1;
}

int
pool_pin(pool *p)
{
    int cpus[CPU_SETSIZE], n;
    if (!p || allowed_cpus(cpus, CPU_SETSIZE, &n) != LLM_OK)
        return LLM_EINVAL;
    int rc = LLM_OK;
    for (int i = 1; i < p->n_threads; i++)
        if (bind_thread(p->threads[i - 1], cpus[i % n]) != LLM_OK)
            rc = LLM_EINVAL;
    p->cpu0 = cpus[0];
    p->has_pinned0 = false;
    return rc;
}

void
pool_run(pool *p, pool_fn fn, void *ctx)
{
    if (p && p->cpu0 >= 0 && !(p->has_pinned0 && pthread_equal(p->pinned0, pthread_self()))) {
        p->pinned0 = pthread_self();
        p->has_pinned0 = true;
        (void)bind_thread(p->pinned0, p->cpu0); // best effort: pool_pin reported the rest
    }
    if (!p || p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);

    fn(ctx, 0, p->n_threads);

    int polls = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0 && polls < POOL_SPIN_POLLS)
        if (++polls % p->yield_every == 0)
            sched_yield();
    if (atomic_load(&p->pending) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

// --- pool_split ----------------------------------------------------------------------

// A run's next chunk from the front (low 32 bits) and its end (high 32 bits), in one
// word so that the owner taking the front and a thief taking the back cannot both take
// the last chunk.
typedef struct {
    alignas(64) atomic_ullong fb;
} split_run;

struct pool_split {
    int max_threads, nth;
    split_run *runs; // [max_threads]
};

static uint64_t
fb_pack(uint32_t front, uint32_t back)
{
    return (uint64_t)front | (uint64_t)back << 32;
}

pool_split *
pool_split_new(int max_threads)
{
    if (max_threads < 1 || max_threads > 1024)
        return NULL;
    pool_split *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->max_threads = max_threads;
    s->runs = aligned_alloc(alignof(split_run), sizeof(split_run) * (size_t)max_threads);
    if (!s->runs) {
        free(s);
        return NULL;
    }
    pool_split_reset(s, 1, 0);
    return s;
}

void
pool_split_free(pool_split *s)
{
    if (!s)
        return;
    free(s->runs);
    free(s);
}

void
pool_split_reset(pool_split *s, int nth, int64_t n_chunks)
{
    assert(nth >= 1 && nth <= s->max_threads && n_chunks >= 0 && n_chunks <= INT32_MAX);
    s->nth = nth;
    for (int i = 0; i < nth; i++)
        atomic_store_explicit(
            &s->runs[i].fb,
            fb_pack((uint32_t)(n_chunks * i / nth), (uint32_t)(n_chunks * (i + 1) / nth)),
            memory_order_relaxed);
}

// Takes the front chunk of run r (own) or its back chunk (a thief).
static bool
take(split_run *r, bool own, int64_t *chunk)
{
    uint64_t v = atomic_load_explicit(&r->fb, memory_order_relaxed);
    for (;;) {
        uint32_t front = (uint32_t)v, back = (uint32_t)(v >> 32);
        if (front >= back)
            return false;
        uint64_t next = own ? fb_pack(front + 1, back) : fb_pack(front, back - 1);
        if (atomic_compare_exchange_weak_explicit(&r->fb, &v, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *chunk = own ? front : back - 1;
            return true;
        }
    }
}

bool
pool_split_next(pool_split *s, int ith, int64_t *chunk)
{
    if (take(&s->runs[ith], true, chunk))
        return true;
    for (int k = 1; k < s->nth; k++)
        if (take(&s->runs[(ith + k) % s->nth], false, chunk))
            return true;
    return false;
}
