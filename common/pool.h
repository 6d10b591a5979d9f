/*
 * pool.h - a persistent fork-join thread pool for the forward pass.
 *
 * pool_run() calls fn(ctx, ith, nth) once on each of the pool's nth threads (the caller
 * is thread 0) and returns when all calls have returned: one barrier per call. Threads
 * are created once, spin briefly between jobs (a forward pass issues a few jobs per
 * layer) and then sleep on a condition variable. It is not a task queue: no nesting,
 * one pool_run at a time. pool_split deals a job's chunks out to its threads.
 */
#ifndef LLM_COMMON_POOL_H
#define LLM_COMMON_POOL_H

#include <stdbool.h>
#include <stdint.h>

typedef struct pool pool;

typedef void (*pool_fn)(void *ctx, int ith, int nth);

/* pool_new starts n_threads - 1 helper threads (n_threads >= 1). Returns LLM_OK,
 * LLM_EINVAL or LLM_ENOMEM; *out is freed with pool_free(). */
int pool_new(int n_threads, pool **out);

/* pool_pin binds thread i to the i-th CPU this process may run on (its affinity at the
 * first pool_new; cycling when threads outnumber them): helpers at once, thread 0 (whichever thread
 * calls pool_run) at its next pool_run. A pinned thread keeps its core's caches between jobs. Under
 * mpirun
 * --bind-to, each rank pins within its own CPUs. Returns LLM_OK, or LLM_EINVAL when the
 * CPU set cannot be read or the kernel refuses a binding (the pool still works). */
int pool_pin(pool *p);

/* pool_free stops and joins the helpers. Accepts NULL. Not concurrent with pool_run. */
void pool_free(pool *p);

/* pool_n_threads returns the thread count given to pool_new (1 for NULL). */
int pool_n_threads(const pool *p);

/* pool_run runs fn on every thread and waits for all. p may be NULL: fn(ctx, 0, 1).
 * Only one thread may call pool_run on a pool at a time. */
void pool_run(pool *p, pool_fn fn, void *ctx);

/* pool_split hands out a job's chunks 0..n_chunks-1 as one contiguous run per thread
 * (thread i's run starts at chunk i * n_chunks / nth), taken front to back by its owner:
 * each thread walks through its part of the data in order, so the hardware prefetcher
 * follows one long stream instead of restarting on every nth chunk. A thread whose run
 * is done takes chunks from the back of the others' runs, so a core that a neighbour
 * slows ends up with less work and the job's threads still finish together. Each run's
 * counters have a cache line of their own. */
typedef struct pool_split pool_split;

/* pool_split_new makes one for jobs of up to max_threads threads; NULL when out of
 * memory. pool_split_free accepts NULL. */
pool_split *pool_split_new(int max_threads);
void pool_split_free(pool_split *s);

/* pool_split_reset deals n_chunks (>= 0, < 2^31) to nth threads (1..max_threads): call
 * it before the pool_run whose threads then call pool_split_next. */
void pool_split_reset(pool_split *s, int nth, int64_t n_chunks);

/* pool_split_next gives thread ith its next chunk in *chunk, or false when none is left. */
bool pool_split_next(pool_split *s, int ith, int64_t *chunk);

#endif
