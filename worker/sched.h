/*
 * sched.h - the worker's scheduler: continuous batching over a paged KV cache.
 *
 * One scheduler thread owns the engine and the KV block manager. Each step it
 *   1. ends requests that were cancelled or passed their deadline,
 *   2. admits waiting requests in priority order (SLA tier, then deadline, then
 *      arrival), reusing cached prefix blocks so only the rest is prefilled,
 *   3. gives every running sequence one decode token, and prompt chunks (at most
 *      prefill_chunk tokens each) to sequences still prefilling, within the step's
 *      token budget, so a long prompt never stalls the decode of the others,
 *   4. runs one forward step over all of them, samples, detokenizes, and wakes the
 *      clients waiting for those tokens.
 * When KV blocks run out, the lowest-tier, latest-deadline sequence not yet in the step
 * is preempted: its blocks are released (full ones stay cached, so its resume is mostly
 * a prefix hit) and it is recomputed later. Nothing is dropped.
 *
 * Streams are read with a cursor (DESIGN.md, "Protocol"): a reader asks for the tokens
 * after `after_seq` (the number it already has) and gets them with their text; a reader
 * with nothing to read parks a waiter that the scheduler wakes.
 *
 * Thread: every function may be called from any thread; waiter callbacks run on the
 * scheduler thread (or the caller of sched_stop) with no scheduler lock held.
 */
#ifndef LLM_WORKER_SCHED_H
#define LLM_WORKER_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "metrics.h"
#include "samp.h"

typedef struct sched sched;

/* Tiers by rank: a lower rank is served first. */
typedef enum {
    SCHED_TIER_CRITICAL = 0,
    SCHED_TIER_HIGH = 1,
    SCHED_TIER_NORMAL = 2,
    SCHED_TIER_LOW = 3,
    SCHED_TIER_BACKGROUND = 4,
    SCHED_N_TIERS
} sched_tier;

typedef enum {
    SCHED_FINISH_NONE = 0,
    SCHED_FINISH_STOP = 1,
    SCHED_FINISH_LENGTH = 2,
    SCHED_FINISH_CANCELED = 3,
    SCHED_FINISH_DEADLINE = 4,
    SCHED_FINISH_ERROR = 5,
} sched_finish;

typedef struct {
    int max_running;     // sequences in a step at most
    int prefill_chunk;   // prompt tokens one sequence adds to a step at most
    int max_waiting;     // waiting requests at most; past it submit says LLM_EBUSY
    int finished_ttl_ms; // a finished stream stays readable this long
    int max_stop;        // stop strings per request at most
} sched_opts;

#define SCHED_MAX_STOP 8

typedef struct {
    const int32_t *prompt; // copied
    int n_prompt;
    samp_params samp;
    int max_tokens;
    const char *const *stop; // copied
    int n_stop;
    sched_tier tier;
    int64_t deadline_ns;   // llm_now_ns() clock; 0 = none
    uint32_t seq_base;     // index of the first generated token (a resumed stream)
    const int32_t *resume; // copied: output already delivered by another worker
    int n_resume;          // 0 = none; else seq_base must be 0
    const char *trace;     // W3C traceparent for the request's log lines (copied); NULL none
} sched_req;

/* sched_new does not start the thread. reg may be NULL (no metrics). */
int sched_new(engine *e, const sched_opts *o, metrics *reg, sched **out);
/* sched_start starts the scheduler thread. */
int sched_start(sched *s);
/* sched_stop ends the thread: running requests finish as FINISH_ERROR, every parked
 * waiter is woken. Then sched_free. */
void sched_stop(sched *s);
void sched_free(sched *s);

/* sched_submit queues a request under id. LLM_EINVAL (bad id 0, duplicate id, bad
 * sampling values, empty prompt, max_tokens < 1, too many stop strings, a prompt or
 * resume id outside the vocabulary, resume ids that go on after the stream would have
 * ended) or LLM_ERANGE (prompt + max_tokens past the context or the whole KV pool, more
 * resume ids than max_tokens) with a reason in err; LLM_EBUSY when the queue is full or
 * the worker drains.
 *
 * Resume (failover): the n_resume tokens are taken as this request's own first outputs,
 * exactly as if it had sampled them: they are seq 0..n_resume-1 of the stream (readable
 * from any cursor), count toward max_tokens and usage, go through the same detokenizer
 * and stop strings at submit, and the next token is sampled at the same absolute
 * position. So with the same seed the stream read from cursor n_resume is, byte for
 * byte, what the undisturbed run would have sent from there. When the resumed tokens
 * already end the stream (end-of-generation, a stop string, max_tokens) it is finished
 * at once with that reason. */
int sched_submit(sched *s, uint64_t id, const sched_req *r, char *err, size_t err_len);

/* sched_cancel ends id at the next step (FINISH_CANCELED); LLM_ENOENT if unknown. */
int sched_cancel(sched *s, uint64_t id);

typedef struct {
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
} sched_usage;

/* What a reader gets: tokens [seq, seq + n_ids) and their text. */
typedef struct {
    uint32_t seq;
    int32_t *ids; // malloc'ed
    int n_ids;
    char *text; // malloc'ed, NUL-terminated
    size_t text_len;
    sched_finish finish; // set on the chunk that ends the stream
    sched_usage usage;   // set with finish
} sched_chunk;
void sched_chunk_fini(sched_chunk *c);

typedef struct sched_waiter sched_waiter;
struct sched_waiter {
    uint64_t id;
    uint32_t after_seq;
    int64_t deadline_ns; // wake with nothing new at this time
    void (*wake)(sched_waiter *w);
    sched_waiter *prev, *next; // owned by the scheduler while parked
};

/* sched_read copies what lies past after_seq. *ready is false when there is nothing
 * new and the stream has not ended (the chunk is then empty). LLM_ENOENT for an unknown
 * (or expired) id, LLM_EINVAL for a cursor outside the stream. */
int sched_read(sched *s, uint64_t id, uint32_t after_seq, sched_chunk *out, bool *ready);

/* sched_read_or_park: like sched_read, but when nothing is ready it parks w (same id
 * and cursor) and sets *parked; w->wake runs once, later, after which the caller reads
 * again. Atomic: no wake-up can be missed between the read and the park. */
int sched_read_or_park(sched *s, sched_waiter *w, sched_chunk *out, bool *ready, bool *parked);

/* Load for heartbeats and routing. */
typedef struct {
    int running, waiting;
    int kv_blocks_total, kv_blocks_used, kv_blocks_cached;
    double step_ms_ewma;
    bool draining;
} sched_load;
void sched_get_load(sched *s, sched_load *out);
/* Up to max hashes of cached prefix blocks, most recently used first. */
int sched_prefix_summary(sched *s, uint64_t *hashes, int max);

/* sched_drain refuses new requests from now on (idempotent); sched_draining says
 * whether it was called; sched_idle is true when nothing runs or waits and every
 * finished stream's last chunk has been read (or has expired). */
void sched_drain(sched *s);
bool sched_draining(sched *s);
bool sched_idle(sched *s);

const char *sched_finish_name(sched_finish f);

#endif
