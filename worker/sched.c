/*
 * sched.c - continuous batching: admission, step planning, preemption, streaming.
 *
 * All request state is guarded by one mutex. The forward pass runs without it: during
 * a step only the scheduler thread touches a running request's tokens, blocks and KV,
 * while readers (holding the lock) see tokens and text only as they were before the
 * step. Requests live in one array (a worker holds at most a few hundred), searched
 * linearly: simpler than an index and far below the cost of one step.
 */
#include "sched.h"

#include "gen.h"
#include "kvcache.h"
#include "llm_err.h"
#include "llm_time.h"
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum { ST_WAITING, ST_RUNNING, ST_FINISHED } req_state;

typedef struct {
    uint64_t id;
    req_state state;
    sched_tier tier;
    int64_t deadline_ns, submit_ns;
    char trace[64];   // the traceparent, for log lines ("-" none)
    uint64_t arrival; // FIFO order within a tier and deadline
    samp_params samp;
    int max_tokens;
    char *stop[SCHED_MAX_STOP];
    int n_stop;
    gen_text detok;
    uint32_t seq_base;
    int n_resume; // the first n_resume generated tokens came with the request (failover)

    int32_t *tokens; // prompt then generated: [n_tokens], capacity n_prompt + max_tokens
    int n_prompt, n_tokens;
    int n_computed; // positions whose K/V are in the cache

    int32_t *blocks;  // block table, capacity cap_blocks
    uint64_t *hashes; // chain hash of each full block
    int n_blocks, n_published, cap_blocks;
    model_kv view; // what the engine reads: {pool, blocks, n_blocks}

    char *text; // released text of the whole stream
    size_t text_len, text_cap;
    size_t *text_end; // text_len after each generated token

    int cached_tokens; // prefix-cache hit on first admission (usage)
    bool admitted_once, cancel, final_read, first_token_seen;
    sched_finish finish;
    int64_t expire_ns;

    int step_take; // tokens of this request in the current step
    bool step_logits;
} sreq;

struct sched {
    engine *e;
    sched_opts o;
    kvcache *kvc;
    samp_ctx **sc; // one per pool thread: rows are sampled in parallel
    int n_sc;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stopping, draining;

    sreq **reqs; // every live request
    int n_reqs, cap_reqs;
    uint64_t next_arrival;
    sched_waiter *waiters; // parked readers (doubly linked)
    double step_ms_ewma;

    // Step buffers, sized at creation.
    int32_t *b_tokens, *b_pos;
    model_kv **b_kv;
    bool *b_want;
    float *b_logits;
    sreq **planned;   // requests in this step, in batch order
    sreq **row_req;   // the request of each logits row
    int32_t *row_tok; // the token sampled from each row
    int n_rows;
    int n_planned;
    sreq **order; // scratch for sorting

    struct {
        metric_counter *submitted, *rejected, *preempted, *prompt_tokens, *cached_tokens,
            *generated_tokens, *prefix_hits, *prefix_lookups;
        metric_counter *finished[6];
        metric_gauge *running, *waiting, *kv_used, *kv_cached, *kv_total;
        metric_histogram *step_s, *ttft_s, *queue_s, *batch_tokens;
    } m;
};

/* ---- helpers -------------------------------------------------------------------------- */

static const char *const finish_names[] = {
    "none", "stop", "length", "canceled", "deadline_exceeded", "error"};

const char *
sched_finish_name(sched_finish f)
{
    return (unsigned)f < 6 ? finish_names[f] : "unknown";
}

static sreq *
find_req(const sched *s, uint64_t id)
{
    for (int i = 0; i < s->n_reqs; i++)
        if (s->reqs[i]->id == id)
            return s->reqs[i];
    return NULL;
}

static void
req_free(sreq *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->tokens);
    free(r->blocks);
    free(r->hashes);
    free(r->text);
    free(r->text_end);
    free(r);
}

/* Priority order: tier rank, then the earlier deadline (none = last), then arrival. */
static int
cmp_priority(const void *a, const void *b)
{
    const sreq *x = *(sreq *const *)a, *y = *(sreq *const *)b;
    if (x->tier != y->tier)
        return x->tier < y->tier ? -1 : 1;
    int64_t dx = x->deadline_ns ? x->deadline_ns : INT64_MAX;
    int64_t dy = y->deadline_ns ? y->deadline_ns : INT64_MAX;
    if (dx != dy)
        return dx < dy ? -1 : 1;
    return x->arrival < y->arrival ? -1 : x->arrival > y->arrival;
}

static int
blocks_for(int n_positions)
{
    return (n_positions + KVC_BLOCK_TOKENS - 1) / KVC_BLOCK_TOKENS;
}

static int
count_state(const sched *s, req_state st)
{
    int n = 0;
    for (int i = 0; i < s->n_reqs; i++)
        n += s->reqs[i]->state == st;
    return n;
}

static void
update_gauges(sched *s)
{
    int running = count_state(s, ST_RUNNING), waiting = count_state(s, ST_WAITING);
    kvc_stats st = kvcache_stats(s->kvc);
    metric_gauge_set(s->m.running, running);
    metric_gauge_set(s->m.waiting, waiting);
    metric_gauge_set(s->m.kv_used, st.used);
    metric_gauge_set(s->m.kv_cached, st.cached);
}

static void
release_blocks(sched *s, sreq *r)
{
    for (int i = 0; i < r->n_blocks; i++)
        kvcache_release(s->kvc, r->blocks[i]);
    r->n_blocks = r->n_published = 0;
    r->n_computed = 0;
    r->view.n_blocks = 0;
}

static int
text_append(void *ctx, const char *t, size_t len)
{
    sreq *r = ctx;
    if (r->text_len + len + 1 > r->text_cap) {
        size_t cap = (r->text_cap ? r->text_cap * 2 : 256) + len;
        char *b = realloc(r->text, cap);
        if (!b)
            return 1; // gen_text reports LLM_ECANCELED; the request ends with an error
        r->text = b;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, t, len);
    r->text_len += len;
    r->text[r->text_len] = '\0';
    return 0;
}

static void
finish_req(sched *s, sreq *r, sched_finish why, int64_t now)
{
    if (r->state == ST_FINISHED)
        return;
    release_blocks(s, r);
    if (why != SCHED_FINISH_ERROR && gen_text_flush(&r->detok, text_append, r) != LLM_OK)
        why = SCHED_FINISH_ERROR;
    r->state = ST_FINISHED;
    r->finish = why;
    r->expire_ns = now + (int64_t)s->o.finished_ttl_ms * 1000000;
    metric_counter_add(s->m.finished[why], 1);
    LOG_INFO("event=request_done req=%llu finish=%s prompt=%d generated=%d resumed=%d "
             "cached=%d ms=%.1f trace=%s",
             (unsigned long long)r->id, sched_finish_name(why), r->n_prompt,
             r->n_tokens - r->n_prompt, r->n_resume, r->cached_tokens,
             (double)(now - r->submit_ns) / 1e6, r->trace);
}

/* Preemption: drop the KV (full blocks stay cached for a cheap resume) and queue the
 * request again; its tokens so far are kept and recomputed as its new prompt. */
static void
preempt(sched *s, sreq *r)
{
    release_blocks(s, r);
    r->state = ST_WAITING;
    r->step_take = 0;
    metric_counter_add(s->m.preempted, 1);
    LOG_INFO("event=preempt req=%llu tier=%d tokens=%d trace=%s", (unsigned long long)r->id,
             r->tier, r->n_tokens, r->trace);
}

/* take_token runs the newest token of r (already in r->tokens) through the detokenizer
 * and the stop strings, records where its text ends, and says whether the stream ends
 * with it. Sampled tokens and resumed ones (at submit) both come through here, so a
 * resumed stream's text, hold-back and finish are those of the undisturbed run. */
static sched_finish
take_token(const sched *s, sreq *r)
{
    int gen = r->n_tokens - r->n_prompt - 1;
    int32_t id = r->tokens[r->n_tokens - 1];
    sched_finish why = SCHED_FINISH_NONE;
    if (s->e->is_eog(s->e, id)) {
        why = SCHED_FINISH_STOP;
    } else {
        char piece[256];
        size_t len = 0;
        bool stopped = false;
        int rc = s->e->token_bytes(s->e, id, piece, sizeof(piece), &len);
        if (rc == LLM_OK)
            rc = gen_text_push(&r->detok, piece, len, text_append, r, &stopped);
        if (rc != LLM_OK)
            why = SCHED_FINISH_ERROR; // a token longer than 256 bytes, or no memory
        else if (stopped)
            why = SCHED_FINISH_STOP;
    }
    r->text_end[gen] = r->text_len;
    if (why == SCHED_FINISH_NONE && (gen + 1 == r->max_tokens || r->n_tokens >= s->e->ctx_len))
        why = SCHED_FINISH_LENGTH;
    return why;
}

/* take_resume appends the resumed tokens to r as its first outputs and sets *why to
 * how they end the stream (SCHED_FINISH_NONE: it goes on). Only the last of them may
 * end it: the undisturbed stream had no tokens after its end. */
static int
take_resume(const sched *s, sreq *r, const int32_t *ids, int n, sched_finish *why, char *err,
            size_t err_len)
{
    *why = SCHED_FINISH_NONE;
    for (int i = 0; i < n; i++) {
        if (*why != SCHED_FINISH_NONE) {
            llm_errf(err, err_len, "resume_ids go on after the stream ended: index %d ends it (%s)",
                     i - 1, sched_finish_name(*why));
            return LLM_EINVAL;
        }
        r->tokens[r->n_tokens++] = ids[i];
        *why = take_token(s, r);
        if (*why == SCHED_FINISH_ERROR) {
            llm_errf(err, err_len, "resume id %d at index %d cannot be turned into text", ids[i],
                     i);
            return LLM_EINVAL;
        }
    }
    return LLM_OK;
}

/* ---- submit / cancel / read ------------------------------------------------------------ */

int
sched_submit(sched *s, uint64_t id, const sched_req *q, char *err, size_t err_len)
{
    char why[160];
    if (id == 0) {
        llm_errf(err, err_len, "request id 0 is reserved");
        return LLM_EINVAL;
    }
    if (q->n_prompt < 1) {
        llm_errf(err, err_len, "the prompt is empty");
        return LLM_EINVAL;
    }
    if (q->max_tokens < 1) {
        llm_errf(err, err_len, "max_tokens must be at least 1 (got %d)", q->max_tokens);
        return LLM_EINVAL;
    }
    if (samp_params_validate(&q->samp, why, sizeof(why)) != LLM_OK) {
        llm_errf(err, err_len, "%s", why);
        return LLM_EINVAL;
    }
    if (q->n_stop < 0 || q->n_stop > s->o.max_stop) {
        llm_errf(err, err_len, "at most %d stop strings (got %d)", s->o.max_stop, q->n_stop);
        return LLM_EINVAL;
    }
    for (int i = 0; i < q->n_prompt; i++) {
        if (q->prompt[i] < 0 || q->prompt[i] >= s->e->n_vocab) {
            llm_errf(err, err_len, "prompt token %d at index %d is outside the vocabulary",
                     q->prompt[i], i);
            return LLM_EINVAL;
        }
    }
    if (q->n_resume < 0 || q->n_resume > q->max_tokens) {
        llm_errf(err, err_len, "%d resume ids exceed max_tokens %d (they count toward it)",
                 q->n_resume, q->max_tokens);
        return LLM_ERANGE;
    }
    if (q->n_resume > 0 && q->seq_base != 0) {
        llm_errf(err, err_len, "resume ids number the stream from 0; seq_base must be 0");
        return LLM_EINVAL;
    }
    for (int i = 0; i < q->n_resume; i++) {
        if (q->resume[i] < 0 || q->resume[i] >= s->e->n_vocab) {
            llm_errf(err, err_len, "resume id %d at index %d is outside the vocabulary",
                     q->resume[i], i);
            return LLM_EINVAL;
        }
    }
    // With n_resume <= max_tokens, this also keeps prompt + resume within the context.
    if ((int64_t)q->n_prompt + q->max_tokens > s->e->ctx_len) {
        llm_errf(err, err_len,
                 "this model's maximum context length is %d tokens; the request needs %lld "
                 "(%d in the prompt, %d max_tokens)",
                 s->e->ctx_len, (long long)q->n_prompt + q->max_tokens, q->n_prompt, q->max_tokens);
        return LLM_ERANGE;
    }
    int need_blocks = blocks_for(q->n_prompt + q->max_tokens);
    if (need_blocks > s->e->n_blocks) {
        llm_errf(err, err_len, "the request needs %d KV blocks; this worker has %d in all",
                 need_blocks, s->e->n_blocks);
        return LLM_ERANGE;
    }
    if ((unsigned)q->tier >= SCHED_N_TIERS) {
        llm_errf(err, err_len, "unknown SLA tier %d", (int)q->tier);
        return LLM_EINVAL;
    }

    sreq *r = calloc(1, sizeof(*r));
    if (!r)
        return LLM_ENOMEM;
    r->id = id;
    r->tier = q->tier;
    r->deadline_ns = q->deadline_ns;
    snprintf(r->trace, sizeof(r->trace), "%s", q->trace && q->trace[0] ? q->trace : "-");
    r->samp = q->samp;
    r->max_tokens = q->max_tokens;
    r->seq_base = q->seq_base;
    r->n_prompt = r->n_tokens = q->n_prompt;
    r->cap_blocks = need_blocks;
    r->tokens = malloc(sizeof(int32_t) * (size_t)(q->n_prompt + q->max_tokens));
    r->blocks = malloc(sizeof(int32_t) * (size_t)need_blocks);
    r->hashes = malloc(sizeof(uint64_t) * (size_t)need_blocks);
    r->text_end = malloc(sizeof(size_t) * (size_t)q->max_tokens);
    bool ok = r->tokens && r->blocks && r->hashes && r->text_end;
    for (int i = 0; ok && i < q->n_stop; i++) {
        r->stop[i] = strdup(q->stop[i]);
        ok = r->stop[i] != NULL;
        r->n_stop += ok;
    }
    if (!ok) {
        req_free(r);
        return LLM_ENOMEM;
    }
    if (gen_text_init(&r->detok, (const char *const *)r->stop, r->n_stop) != LLM_OK) {
        llm_errf(err, err_len, "a stop string is empty or longer than %d bytes", GEN_MAX_STOP_LEN);
        req_free(r);
        return LLM_EINVAL;
    }
    memcpy(r->tokens, q->prompt, sizeof(int32_t) * (size_t)q->n_prompt);
    r->view.pool = s->e->kvpool;
    r->view.blocks = r->blocks;
    // Not yet visible to the scheduler thread: no lock needed to fill in its output.
    sched_finish resumed_end;
    int rc = take_resume(s, r, q->resume, q->n_resume, &resumed_end, err, err_len);
    if (rc != LLM_OK) {
        req_free(r);
        return rc;
    }
    r->n_resume = q->n_resume;

    pthread_mutex_lock(&s->mu);
    int waiting = count_state(s, ST_WAITING);
    if (s->draining || s->stopping) {
        llm_errf(err, err_len, "the worker is draining and takes no new requests");
        rc = LLM_EBUSY;
    } else if (find_req(s, id)) {
        llm_errf(err, err_len, "request id %llu is already in use", (unsigned long long)id);
        rc = LLM_EINVAL;
    } else if (waiting >= s->o.max_waiting) {
        llm_errf(err, err_len, "the queue is full (%d waiting)", waiting);
        rc = LLM_EBUSY;
    } else if (s->n_reqs == s->cap_reqs) {
        int cap = s->cap_reqs ? s->cap_reqs * 2 : 64;
        sreq **v = realloc(s->reqs, sizeof(*v) * (size_t)cap);
        sreq **o = realloc(s->order, sizeof(*o) * (size_t)cap);
        if (v)
            s->reqs = v;
        if (o)
            s->order = o;
        if (v && o)
            s->cap_reqs = cap;
        else
            rc = LLM_ENOMEM;
    }
    if (rc == LLM_OK) {
        r->submit_ns = llm_now_ns();
        r->arrival = s->next_arrival++;
        s->reqs[s->n_reqs++] = r;
        metric_counter_add(s->m.submitted, 1);
        if (resumed_end != SCHED_FINISH_NONE)
            finish_req(s, r, resumed_end, r->submit_ns); // readable at once, never admitted
        pthread_cond_signal(&s->cv);
    } else {
        metric_counter_add(s->m.rejected, 1);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != LLM_OK)
        req_free(r);
    return rc;
}

int
sched_cancel(sched *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    sreq *r = find_req(s, id);
    if (r) {
        r->cancel = true;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return r ? LLM_OK : LLM_ENOENT;
}

void
sched_chunk_fini(sched_chunk *c)
{
    free(c->ids);
    free(c->text);
    memset(c, 0, sizeof(*c));
}

static bool
req_ready(const sreq *r, uint32_t after_seq)
{
    return r->state == ST_FINISHED ||
           (int64_t)r->seq_base + (r->n_tokens - r->n_prompt) > (int64_t)after_seq;
}

/* read_locked fills out with what lies past after_seq. */
static int
read_locked(sched *s, uint64_t id, uint32_t after_seq, sched_chunk *out, bool *ready)
{
    memset(out, 0, sizeof(*out));
    *ready = false;
    sreq *r = find_req(s, id);
    if (!r)
        return LLM_ENOENT;
    int n_gen = r->n_tokens - r->n_prompt;
    int64_t end_seq = (int64_t)r->seq_base + n_gen;
    if (after_seq < r->seq_base || (int64_t)after_seq > end_seq)
        return LLM_EINVAL;
    int from = (int)(after_seq - r->seq_base), n = n_gen - from;
    out->seq = after_seq;
    *ready = req_ready(r, after_seq);
    if (!*ready)
        return LLM_OK;
    size_t t0 = from > 0 ? r->text_end[from - 1] : 0;
    size_t t1 = r->state == ST_FINISHED ? r->text_len : (n_gen > 0 ? r->text_end[n_gen - 1] : 0);
    out->ids = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    out->text = malloc(t1 - t0 + 1);
    if (!out->ids || !out->text) {
        sched_chunk_fini(out);
        return LLM_ENOMEM;
    }
    if (n > 0)
        memcpy(out->ids, r->tokens + r->n_prompt + from, sizeof(int32_t) * (size_t)n);
    out->n_ids = n;
    if (t1 > t0)
        memcpy(out->text, r->text + t0, t1 - t0);
    out->text[t1 - t0] = '\0';
    out->text_len = t1 - t0;
    if (r->state == ST_FINISHED) {
        out->finish = r->finish;
        out->usage.prompt_tokens = (uint32_t)r->n_prompt;
        out->usage.completion_tokens = (uint32_t)n_gen;
        out->usage.cached_tokens = (uint32_t)r->cached_tokens;
        // Delivered in full: keep it only briefly, for a retried read.
        if (!r->final_read) {
            r->final_read = true;
            int64_t soon = llm_now_ns() + 1000000000;
            if (soon < r->expire_ns)
                r->expire_ns = soon;
        }
    }
    return LLM_OK;
}

int
sched_read(sched *s, uint64_t id, uint32_t after_seq, sched_chunk *out, bool *ready)
{
    pthread_mutex_lock(&s->mu);
    int rc = read_locked(s, id, after_seq, out, ready);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int
sched_read_or_park(sched *s, sched_waiter *w, sched_chunk *out, bool *ready, bool *parked)
{
    *parked = false;
    pthread_mutex_lock(&s->mu);
    int rc = read_locked(s, w->id, w->after_seq, out, ready);
    if (rc == LLM_OK && !*ready) {
        if (s->stopping) {
            rc = LLM_ECLOSED;
        } else {
            w->prev = NULL;
            w->next = s->waiters;
            if (s->waiters)
                s->waiters->prev = w;
            s->waiters = w;
            *parked = true;
            pthread_cond_signal(&s->cv); // its deadline may be the nearest
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void
unpark(sched *s, sched_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        s->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* collect_waiters unlinks the waiters that can be answered now (or must be: deadline,
 * stop) into a singly linked list through ->next. */
static sched_waiter *
collect_waiters(sched *s, int64_t now, bool all)
{
    sched_waiter *ready = NULL, *w = s->waiters;
    while (w) {
        sched_waiter *next = w->next;
        sreq *r = find_req(s, w->id);
        if (all || !r || req_ready(r, w->after_seq) || now >= w->deadline_ns) {
            unpark(s, w);
            w->next = ready;
            ready = w;
        }
        w = next;
    }
    return ready;
}

static void
wake_all(sched_waiter *list)
{
    while (list) {
        sched_waiter *next = list->next;
        list->next = NULL;
        list->wake(list); // may free or re-park list: read nothing after this
        list = next;
    }
}

/* ---- the step ------------------------------------------------------------------------- */

/* reap ends cancelled and overdue requests and frees expired finished ones. */
static void
reap(sched *s, int64_t now)
{
    for (int i = 0; i < s->n_reqs; i++) {
        sreq *r = s->reqs[i];
        if (r->state == ST_FINISHED) {
            if (now >= r->expire_ns) {
                s->reqs[i--] = s->reqs[--s->n_reqs];
                req_free(r);
            }
            continue;
        }
        if (r->cancel)
            finish_req(s, r, SCHED_FINISH_CANCELED, now);
        else if (r->deadline_ns && now >= r->deadline_ns)
            finish_req(s, r, SCHED_FINISH_DEADLINE, now);
    }
}

static int
sorted(sched *s, req_state st)
{
    int n = 0;
    for (int i = 0; i < s->n_reqs; i++)
        if (s->reqs[i]->state == st)
            s->order[n++] = s->reqs[i];
    qsort(s->order, (size_t)n, sizeof(sreq *), cmp_priority);
    return n;
}

/* admit moves waiting requests into the batch while there is room, in priority order.
 * A request first takes the cached blocks of its longest known prefix (at least its
 * last token is recomputed, for its logits). */
static void
admit(sched *s, int64_t now)
{
    int running = count_state(s, ST_RUNNING);
    int n = sorted(s, ST_WAITING);
    for (int i = 0; i < n && running < s->o.max_running; i++) {
        sreq *r = s->order[i];
        int max_match = (r->n_tokens - 1) / KVC_BLOCK_TOKENS;
        int matched = kvcache_match_prefix(s->kvc, r->tokens, r->n_tokens, s->e->fingerprint,
                                           max_match, r->blocks, r->hashes);
        int first = r->n_tokens - matched * KVC_BLOCK_TOKENS;
        if (first > s->o.prefill_chunk)
            first = s->o.prefill_chunk;
        int need = blocks_for(matched * KVC_BLOCK_TOKENS + first) - matched;
        kvc_stats st = kvcache_stats(s->kvc);
        // Leave each running sequence a block to grow into, or admitting would only
        // cause preemptions.
        if (st.free + st.cached < need + running) {
            for (int k = 0; k < matched; k++)
                kvcache_release(s->kvc, r->blocks[k]);
            break; // strict priority: nobody overtakes the head of the queue
        }
        r->n_blocks = r->n_published = matched;
        r->n_computed = matched * KVC_BLOCK_TOKENS;
        r->view.n_blocks = matched;
        r->state = ST_RUNNING;
        running++;
        if (!r->admitted_once) {
            r->admitted_once = true;
            // Usage counts cached prompt tokens; a resumed request's match may reach
            // into its resumed output, which is not prompt.
            r->cached_tokens = matched * KVC_BLOCK_TOKENS;
            if (r->cached_tokens > r->n_prompt)
                r->cached_tokens = r->n_prompt;
            metric_counter_add(s->m.prefix_lookups, 1);
            metric_counter_add(s->m.prefix_hits, matched > 0);
            metric_counter_add(s->m.cached_tokens, (uint64_t)r->cached_tokens);
            metric_counter_add(s->m.prompt_tokens, (uint64_t)r->n_prompt);
            metric_histogram_observe(s->m.queue_s, (double)(now - r->submit_ns) / 1e9);
        }
    }
}

/* victim: the lowest-priority running request after position at in the priority order
 * (so never one that outranks the request needing the block), not yet in this step. */
static sreq *
pick_victim(sched *s, int n_sorted, int at)
{
    for (int i = n_sorted - 1; i > at; i--) {
        sreq *v = s->order[i];
        if (v->state == ST_RUNNING && v->step_take == 0)
            return v;
    }
    return NULL;
}

/* plan fills the step's batch. */
static int
plan(sched *s)
{
    int n = sorted(s, ST_RUNNING), n_tok = 0;
    int budget = s->e->max_step_tokens, decoders = 0;
    s->n_planned = 0;
    for (int i = 0; i < n; i++) {
        s->order[i]->step_take = 0;
        decoders += s->order[i]->n_tokens - s->order[i]->n_computed == 1;
    }
    for (int i = 0; i < n; i++) {
        sreq *r = s->order[i];
        if (r->state != ST_RUNNING)
            continue; // preempted by someone before it
        int need = r->n_tokens - r->n_computed, take;
        if (need == 1) {
            take = 1;
            decoders--;
        } else {
            take = need < s->o.prefill_chunk ? need : s->o.prefill_chunk;
            if (take > budget - decoders)
                take = budget - decoders;
            if (take < 1)
                continue;
        }
        int want_blocks = blocks_for(r->n_computed + take);
        while (r->state == ST_RUNNING && r->n_blocks < want_blocks) {
            int32_t b;
            if (kvcache_alloc(s->kvc, &b) == LLM_OK) {
                r->blocks[r->n_blocks++] = b;
                continue;
            }
            sreq *v = pick_victim(s, n, i);
            if (v)
                decoders -= v->n_tokens - v->n_computed == 1;
            preempt(s, v ? v : r);
        }
        if (r->state != ST_RUNNING)
            continue;
        r->view.n_blocks = r->n_blocks;
        r->step_take = take;
        r->step_logits = r->n_computed + take == r->n_tokens;
        for (int k = 0; k < take; k++) {
            s->b_tokens[n_tok] = r->tokens[r->n_computed + k];
            s->b_pos[n_tok] = r->n_computed + k;
            s->b_kv[n_tok] = &r->view;
            s->b_want[n_tok] = r->step_logits && k == take - 1;
            n_tok++;
        }
        budget -= take;
        s->planned[s->n_planned++] = r;
    }
    return n_tok;
}

/* append_token adds a sampled token to r and decides whether r ends. */
static void
append_token(sched *s, sreq *r, int32_t id, int64_t now)
{
    r->tokens[r->n_tokens++] = id;
    metric_counter_add(s->m.generated_tokens, 1);
    if (!r->first_token_seen) {
        r->first_token_seen = true;
        metric_histogram_observe(s->m.ttft_s, (double)(now - r->submit_ns) / 1e9);
    }
    sched_finish why = take_token(s, r);
    if (why != SCHED_FINISH_NONE)
        finish_req(s, r, why, now);
}

/* apply takes a finished step's results: positions computed, full blocks published,
 * tokens sampled. */
static void
apply(sched *s, int rc, int64_t now)
{
    int row = 0;
    for (int i = 0; i < s->n_planned; i++) {
        sreq *r = s->planned[i];
        int r_row = row;
        row += r->step_logits;
        if (r->state != ST_RUNNING)
            continue;
        if (rc != LLM_OK) {
            finish_req(s, r, SCHED_FINISH_ERROR, now);
            continue;
        }
        r->n_computed += r->step_take;
        r->step_take = 0;
        while (r->n_published < r->n_computed / KVC_BLOCK_TOKENS) {
            int b = r->n_published;
            uint64_t parent = b ? r->hashes[b - 1] : 0;
            r->hashes[b] =
                kvcache_block_hash(parent, r->tokens + b * KVC_BLOCK_TOKENS, s->e->fingerprint);
            kvcache_publish(s->kvc, r->blocks[b], r->hashes[b]);
            r->n_published++;
        }
        if (r->step_logits && !r->cancel) {
            append_token(s, r, s->row_tok[r_row], now);
        }
    }
}

/* sample_rows draws the next token of every logits row of the step, the rows split
 * across the pool's threads (a full-vocabulary draw is about a millisecond). Runs
 * without the lock: only this thread changes a running request's tokens and params. */
static void
sample_run(void *ctx, int ith, int nth)
{
    sched *s = ctx;
    for (int i = ith; i < s->n_rows; i += nth) {
        const sreq *r = s->row_req[i];
        const float *lg = s->b_logits + (size_t)i * (size_t)s->e->n_vocab;
        s->row_tok[i] = samp_sample(s->sc[ith], &r->samp, lg, r->n_tokens);
    }
}

static void
sample_rows(sched *s)
{
    s->n_rows = 0;
    for (int i = 0; i < s->n_planned; i++)
        if (s->planned[i]->step_logits)
            s->row_req[s->n_rows++] = s->planned[i];
    pool_run(s->e->pool, sample_run, s);
}

static bool
has_work(const sched *s)
{
    // A cancel of a finished request changes nothing: only unfinished ones are work
    // (counting the cancel flag too kept the loop spinning until the record expired).
    return count_state(s, ST_FINISHED) < s->n_reqs;
}

/* next_wakeup: the earliest time something must happen while idle. */
static int64_t
next_wakeup(const sched *s, int64_t now)
{
    int64_t t = now + 200000000; // 200 ms at most
    for (const sched_waiter *w = s->waiters; w; w = w->next)
        if (w->deadline_ns < t)
            t = w->deadline_ns;
    for (int i = 0; i < s->n_reqs; i++)
        if (s->reqs[i]->state == ST_FINISHED && s->reqs[i]->expire_ns < t)
            t = s->reqs[i]->expire_ns;
    return t;
}

static void *
sched_main(void *arg)
{
    sched *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        int64_t now = llm_now_ns();
        reap(s, now);
        if (!has_work(s)) {
            int64_t until = next_wakeup(s, now);
            sched_waiter *ready = collect_waiters(s, now, false);
            if (ready) {
                pthread_mutex_unlock(&s->mu);
                wake_all(ready);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            update_gauges(s);
            // llm_now_ns is CLOCK_MONOTONIC, and so is the condvar (see sched_new).
            struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            continue;
        }
        admit(s, now);
        int n_tok = plan(s);
        update_gauges(s);
        sched_waiter *ready = collect_waiters(s, now, false);
        pthread_mutex_unlock(&s->mu);
        wake_all(ready);
        if (n_tok == 0) {
            // Nothing could run (waiting for blocks that running requests hold cannot
            // happen with none running); yield briefly rather than spin.
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        model_batch b = {n_tok,     s->b_tokens, s->b_pos, (model_kv *const *)s->b_kv,
                         s->b_want, s->b_logits};
        int64_t t0 = llm_now_ns();
        int rc = s->e->forward(s->e, &b);
        int64_t t1 = llm_now_ns();
        if (rc == LLM_OK)
            sample_rows(s);
        else
            LOG_ERROR("event=step_failed tokens=%d err=%s", n_tok, llm_strerror(rc));
        double ms = (double)(t1 - t0) / 1e6;
        metric_histogram_observe(s->m.step_s, ms / 1e3);
        metric_histogram_observe(s->m.batch_tokens, n_tok);
        pthread_mutex_lock(&s->mu);
        s->step_ms_ewma = s->step_ms_ewma == 0 ? ms : 0.9 * s->step_ms_ewma + 0.1 * ms;
        apply(s, rc, t1);
        ready = collect_waiters(s, t1, false);
        if (ready) {
            pthread_mutex_unlock(&s->mu);
            wake_all(ready);
            pthread_mutex_lock(&s->mu);
        }
    }
    // Stopping: end everything, answer every reader.
    int64_t now = llm_now_ns();
    for (int i = 0; i < s->n_reqs; i++)
        finish_req(s, s->reqs[i], SCHED_FINISH_ERROR, now);
    sched_waiter *all = collect_waiters(s, now, true);
    pthread_mutex_unlock(&s->mu);
    wake_all(all);
    return NULL;
}

/* ---- lifecycle and load --------------------------------------------------------------- */

static void
register_metrics(sched *s, metrics *reg)
{
    if (!reg)
        return;
    s->m.submitted = metrics_counter(reg, "llm_worker_requests_submitted_total",
                                     "Requests accepted into the queue.", NULL);
    s->m.rejected = metrics_counter(reg, "llm_worker_requests_rejected_total",
                                    "Requests refused at submit (queue full, draining).", NULL);
    for (int f = 0; f < 6; f++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "finish=\"%s\"", finish_names[f]);
        s->m.finished[f] = metrics_counter(reg, "llm_worker_requests_finished_total",
                                           "Requests ended, by finish reason.", labels);
    }
    s->m.preempted = metrics_counter(reg, "llm_worker_preemptions_total",
                                     "Sequences preempted for lack of KV blocks.", NULL);
    s->m.prompt_tokens =
        metrics_counter(reg, "llm_worker_prompt_tokens_total", "Prompt tokens admitted.", NULL);
    s->m.cached_tokens = metrics_counter(reg, "llm_worker_prefix_cached_tokens_total",
                                         "Prompt tokens served from the prefix cache.", NULL);
    s->m.generated_tokens =
        metrics_counter(reg, "llm_worker_generated_tokens_total", "Tokens sampled.", NULL);
    s->m.prefix_lookups = metrics_counter(reg, "llm_worker_prefix_lookups_total",
                                          "Requests looked up in the prefix cache.", NULL);
    s->m.prefix_hits = metrics_counter(reg, "llm_worker_prefix_hits_total",
                                       "Requests that reused at least one cached block.", NULL);
    s->m.running = metrics_gauge(reg, "llm_worker_running", "Sequences in the batch.", NULL);
    s->m.waiting = metrics_gauge(reg, "llm_worker_waiting", "Requests queued.", NULL);
    s->m.kv_used =
        metrics_gauge(reg, "llm_worker_kv_blocks_used", "KV blocks referenced by sequences.", NULL);
    s->m.kv_cached = metrics_gauge(reg, "llm_worker_kv_blocks_cached",
                                   "Unreferenced KV blocks kept for prefix reuse.", NULL);
    s->m.kv_total =
        metrics_gauge(reg, "llm_worker_kv_blocks_total", "KV blocks in the pool.", NULL);
    metric_gauge_set(s->m.kv_total, s->e->n_blocks);
    s->m.step_s = metrics_histogram(reg, "llm_worker_step_seconds", "Forward step time.", NULL,
                                    metrics_latency_bounds, metrics_latency_n);
    s->m.ttft_s = metrics_histogram(reg, "llm_worker_ttft_seconds", "Submit to first token.", NULL,
                                    metrics_latency_bounds, metrics_latency_n);
    s->m.queue_s = metrics_histogram(reg, "llm_worker_queue_seconds", "Submit to first admission.",
                                     NULL, metrics_latency_bounds, metrics_latency_n);
    static const double tok_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
    s->m.batch_tokens =
        metrics_histogram(reg, "llm_worker_step_tokens", "Tokens per step.", NULL, tok_bounds, 10);
}

/* free_parts releases what sched_new allocates (NULL-safe): its failure path and
 * sched_free share it. */
static void
free_parts(sched *s)
{
    kvcache_free(s->kvc);
    for (int i = 0; s->sc && i < s->n_sc; i++)
        samp_ctx_free(s->sc[i]);
    free(s->sc);
    free(s->row_req);
    free(s->row_tok);
    free(s->b_tokens);
    free(s->b_pos);
    free(s->b_kv);
    free(s->b_want);
    free(s->b_logits);
    free(s->planned);
}

int
sched_new(engine *e, const sched_opts *o, metrics *reg, sched **out)
{
    if (o->max_running < 1 || o->prefill_chunk < 1 || o->max_waiting < 0 || o->max_stop < 0 ||
        o->max_stop > SCHED_MAX_STOP || o->max_running > e->max_step_tokens)
        return LLM_EINVAL;
    sched *s = calloc(1, sizeof(*s));
    if (!s)
        return LLM_ENOMEM;
    s->e = e;
    s->o = *o;
    s->next_arrival = 1;
    int T = e->max_step_tokens;
    s->b_tokens = malloc(sizeof(int32_t) * (size_t)T);
    s->b_pos = malloc(sizeof(int32_t) * (size_t)T);
    s->b_kv = malloc(sizeof(model_kv *) * (size_t)T);
    s->b_want = malloc(sizeof(bool) * (size_t)T);
    s->b_logits = malloc(sizeof(float) * (size_t)o->max_running * (size_t)e->n_vocab);
    s->planned = malloc(sizeof(sreq *) * (size_t)o->max_running);
    s->row_req = malloc(sizeof(sreq *) * (size_t)o->max_running);
    s->row_tok = malloc(sizeof(int32_t) * (size_t)o->max_running);
    s->n_sc = pool_n_threads(e->pool);
    s->sc = calloc((size_t)s->n_sc, sizeof(samp_ctx *));
    int rc = LLM_ENOMEM;
    bool ok = s->b_tokens && s->b_pos && s->b_kv && s->b_want && s->b_logits && s->planned &&
              s->row_req && s->row_tok && s->sc;
    for (int i = 0; ok && i < s->n_sc; i++)
        ok = (rc = samp_ctx_new(e->n_vocab, &s->sc[i])) == LLM_OK;
    if (ok && (rc = kvcache_new(e->n_blocks, &s->kvc)) == LLM_OK) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&s->cv, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&s->mu, NULL);
        register_metrics(s, reg);
        *out = s;
        return LLM_OK;
    }
    free_parts(s);
    free(s);
    return rc;
}

int
sched_start(sched *s)
{
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0)
        return LLM_ENOMEM;
    s->started = true;
    return LLM_OK;
}

void
sched_stop(sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->started)
        pthread_join(s->thread, NULL);
    s->started = false;
}

void
sched_free(sched *s)
{
    if (!s)
        return;
    if (s->started)
        sched_stop(s);
    for (int i = 0; i < s->n_reqs; i++)
        req_free(s->reqs[i]);
    free(s->reqs);
    free(s->order);
    free_parts(s);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void
sched_get_load(sched *s, sched_load *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->mu);
    out->running = count_state(s, ST_RUNNING);
    out->waiting = count_state(s, ST_WAITING);
    kvc_stats st = kvcache_stats(s->kvc);
    out->kv_blocks_total = st.total;
    out->kv_blocks_used = st.used;
    out->kv_blocks_cached = st.cached;
    out->step_ms_ewma = s->step_ms_ewma;
    out->draining = s->draining;
    pthread_mutex_unlock(&s->mu);
}

int
sched_prefix_summary(sched *s, uint64_t *hashes, int max)
{
    pthread_mutex_lock(&s->mu);
    int n = kvcache_summary(s->kvc, hashes, max);
    pthread_mutex_unlock(&s->mu);
    return n;
}

void
sched_drain(sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    pthread_mutex_unlock(&s->mu);
}

bool
sched_draining(sched *s)
{
    pthread_mutex_lock(&s->mu);
    bool d = s->draining;
    pthread_mutex_unlock(&s->mu);
    return d;
}

bool
sched_idle(sched *s)
{
    pthread_mutex_lock(&s->mu);
    bool idle = true;
    for (int i = 0; i < s->n_reqs; i++)
        idle &= s->reqs[i]->state == ST_FINISHED && s->reqs[i]->final_read;
    pthread_mutex_unlock(&s->mu);
    return idle;
}
