/*
 * relay.c - client requests, their streams, the pumps that fill them, failover.
 *
 * Locking: one mutex (rl->mu) guards the request table, every stream and every parked
 * client context. Nothing blocks under it: calls to workers start after it is released
 * (wcall callbacks take it), and the registry has its own lock, never taken inside
 * this one.
 *
 * Lifetime: a stream (creq) is referenced by the table, by its pump while a call is in
 * flight, and by each client context parked on it. The last unref does not free it at
 * once (that may happen inside a wcall's own callback, which cannot free the wcall): it
 * goes to a graveyard that relay_tick empties.
 */
#include "relay.h"

#include "admin.h"
#include "kvcache.h"
#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "rpcsrv.h"
#include "wcall.h"
#include "wire.h"

#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TRIED 16
#define MAX_STOP 8
#define TABLE_BUCKETS 4096

typedef struct creq creq;
typedef struct cctx cctx;

typedef struct {
    creq *head, *tail;
} rlist;

enum { LIST_NONE, LIST_ENDED, LIST_READ };
#define READ_GRACE_MS 2000

enum { PUMP_IDLE, PUMP_SUBMIT, PUMP_POLL };

struct creq {
    relay *rl;
    uint64_t id; // the client's id
    int model;
    int refs;
    creq *hnext; // table chain / graveyard

    // The request as the workers get it.
    int32_t *prompt;
    int n_prompt;
    uint64_t *blocks; // the prompt's full-block hashes, for prefix routing
    int n_blocks;
    float temperature, top_p;
    uint32_t top_k, max_tokens;
    uint64_t seed;
    char *stop[MAX_STOP];
    int n_stop;
    Llm__SlaTier tier;
    uint64_t deadline_unix_ms;
    char *traceparent;

    // The stream so far: ids, their text, and where each chunk's text starts.
    int32_t *ids;
    int n_ids, cap_ids;
    char *text;
    size_t text_len, text_cap;
    uint32_t *bound_seq;
    size_t *bound_off;
    int n_bounds, cap_bounds;
    Llm__FinishReason finish;
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
    int err_code; // ended without finishing: the client gets this Error
    char err_msg[200];
    bool accepted, canceled, cancel_sent;
    int64_t done_ms;        // when it ended (finish or error); 0 while running
    creq *dprev, *dnext;    // on rl->ended or rl->read, oldest first
    int64_t list_ms;        // when it joined that list
    int list;               // LIST_NONE, LIST_ENDED, LIST_READ
    cctx *waiters;          // client contexts parked on this stream
    relay_notify_fn notify; // an in-process reader's subscription (relay_submit)
    void *notify_arg;
    bool queued;   // counted in its tier's admission queue (no token yet, not ended)
    bool released; // its in-process reader is gone: nobody reads its end

    // The pump and its current attempt.
    wcall *call, *ctl;
    int pump;
    int worker; // registry index, -1 none
    nng_socket sock;
    uint64_t wid; // the request's id on that worker
    int attempts, n_tried, tried[MAX_TRIED];
    int last_refusal; // EBUSY from every worker tried: say busy, not unavailable
    int64_t t_start_ns, t_attempt_ns, t_first_ns;
    int ids_at_attempt;
};

enum { PARK_ACCEPT, PARK_NEXT };

/* A client context's own state (rpcsrv.h keeps it with the NNG context). */
struct cctx {
    relay *rl;
    int park_kind;
    creq *r; // parked on (a reference); NULL when not parked
    uint32_t after_seq;
    uint64_t env_id;
    int64_t deadline_ms;
    cctx *pnext; // r's waiter list
};

enum {
    K_GENERATE,
    K_NEXT,
    K_CANCEL,
    K_HEALTH,
    K_STATS,
    K_LIST_MODELS,
    K_CLUSTER_STATUS,
    K_DRAIN,
    K_OTHER,
    N_KINDS
};
static const char *const kind_names[N_KINDS] = {"generate",       "next",  "cancel",
                                                "health",         "stats", "list_models",
                                                "cluster_status", "drain", "other"};

enum {
    OUT_OK,
    OUT_CANCELED,
    OUT_DEADLINE,
    OUT_ERROR,
    OUT_UNAVAILABLE,
    OUT_BUSY,
    OUT_REFUSED,
    N_OUT
};
// Indexed by Llm__SlaTier.
static const char *const tier_names[RELAY_N_TIERS] = {"normal", "critical", "high", "low",
                                                      "background"};

static const char *const out_names[N_OUT] = {
    "ok", "canceled", "deadline_exceeded", "error", "unavailable", "busy", "refused"};

struct relay {
    registry *reg;
    ctok *const *toks;
    metrics *m;
    relay_opts o;
    pthread_mutex_t mu;
    creq *table[TABLE_BUCKETS];
    int n_active;
    creq *graveyard;
    // Ended streams wait in one of two lists, each in the order of its clock: `ended` for
    // finished_ttl_ms (the client may not have read the end yet), `read` for READ_GRACE_MS
    // once a reply carried the end (only a resent Next can still ask). At thousands of
    // requests a second the table would otherwise fill with streams nobody reads.
    rlist ended, read;
    int64_t next_deadline_ms; // the earliest parked context's deadline (a lower bound)
    bool closing;             // relay_free: pumps stop instead of going on
    _Atomic uint64_t next_id;
    rpcsrv *rpc;
    int queued[RELAY_N_TIERS]; // admission: requests of each tier with no token yet
    metric_counter *refused_full[RELAY_N_TIERS], *refused_deadline;
    metric_gauge *queued_g[RELAY_N_TIERS];
    metric_counter *rpc_ok[N_KINDS], *rpc_err[N_KINDS], *outcome[N_OUT], *failovers;
    metric_histogram *ttft, *e2e;
    metric_gauge *active;
};

/* ---- the table ----------------------------------------------------------------------- */

static size_t
bucket(uint64_t id)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 52) % TABLE_BUCKETS;
}

static creq *
lookup(relay *rl, uint64_t id)
{
    for (creq *r = rl->table[bucket(id)]; r; r = r->hnext)
        if (r->id == id)
            return r;
    return NULL;
}

static void
creq_destroy(creq *r)
{
    wcall_free(r->call);
    wcall_free(r->ctl);
    free(r->prompt);
    free(r->blocks);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->traceparent);
    free(r->ids);
    free(r->text);
    free(r->bound_seq);
    free(r->bound_off);
    free(r);
}

/* unref drops one reference; under mu. */
static void
unref(creq *r)
{
    if (--r->refs > 0)
        return;
    r->hnext = r->rl->graveyard;
    r->rl->graveyard = r;
}

/* ---- the stream ------------------------------------------------------------------------ */

static bool
ended(const creq *r)
{
    return r->finish != LLM__FINISH_REASON__FINISH_NONE || r->err_code != LLM_OK;
}

static void
list_push(rlist *l, creq *r, int which)
{
    r->dprev = l->tail;
    r->dnext = NULL;
    if (l->tail)
        l->tail->dnext = r;
    else
        l->head = r;
    l->tail = r;
    r->list = which;
    r->list_ms = llm_now_ms();
}

static void
list_unlink(rlist *l, creq *r)
{
    if (r->dprev)
        r->dprev->dnext = r->dnext;
    else
        l->head = r->dnext;
    if (r->dnext)
        r->dnext->dprev = r->dprev;
    else
        l->tail = r->dprev;
    r->dprev = r->dnext = NULL;
    r->list = LIST_NONE;
}

/* dequeue takes r out of its tier's admission queue: its first token came, or it
 * ended. Under mu. */
static void
dequeue(creq *r)
{
    if (!r->queued)
        return;
    r->queued = false;
    relay *rl = r->rl;
    metric_gauge_set(rl->queued_g[r->tier], --rl->queued[r->tier]);
}

/* mark_done records that r has just ended, for its TTL. Under mu. */
static void
mark_done(creq *r)
{
    dequeue(r);
    r->done_ms = llm_now_ms();
    // A stream whose reader is gone is as good as read: it leaves after the short grace.
    if (r->released)
        list_push(&r->rl->read, r, LIST_READ);
    else
        list_push(&r->rl->ended, r, LIST_ENDED);
}

/* mark_read: a reply carried r's end to a client. Under mu. */
static void
mark_read(creq *r)
{
    if (r->list != LIST_ENDED)
        return;
    list_unlink(&r->rl->ended, r);
    list_push(&r->rl->read, r, LIST_READ);
}

/* append takes a chunk from the worker into the stream. Under mu. LLM_EPROTO for a
 * chunk that does not continue the stream. */
static int
append(creq *r, const Llm__TokenChunk *c)
{
    uint32_t seq = c->seq;
    size_t skip = 0;
    if (seq > (uint32_t)r->n_ids)
        return LLM_EPROTO;
    if (seq < (uint32_t)r->n_ids) {
        // An overlap (we asked from n_ids, so only a confused worker sends one): keep
        // the new tail only. Its text cannot be split, so drop it with the overlap.
        skip = (size_t)r->n_ids - seq;
        if (skip > c->n_token_ids)
            skip = c->n_token_ids;
    }
    size_t n_new = c->n_token_ids - skip, tlen = skip ? 0 : strlen(c->text);
    if (n_new > 0 || tlen > 0) {
        if (r->n_ids + (int)n_new > r->cap_ids) {
            int cap = r->cap_ids ? r->cap_ids : 64;
            while (cap < r->n_ids + (int)n_new)
                cap *= 2;
            int32_t *p = realloc(r->ids, sizeof(int32_t) * (size_t)cap);
            if (!p)
                return LLM_ENOMEM;
            r->ids = p;
            r->cap_ids = cap;
        }
        if (r->text_len + tlen + 1 > r->text_cap) {
            size_t cap = r->text_cap ? r->text_cap : 256;
            while (cap < r->text_len + tlen + 1)
                cap *= 2;
            char *p = realloc(r->text, cap);
            if (!p)
                return LLM_ENOMEM;
            r->text = p;
            r->text_cap = cap;
        }
        if (r->n_bounds == r->cap_bounds) {
            int cap = r->cap_bounds ? r->cap_bounds * 2 : 16;
            uint32_t *s = realloc(r->bound_seq, sizeof(uint32_t) * (size_t)cap);
            if (s)
                r->bound_seq = s;
            size_t *o = s ? realloc(r->bound_off, sizeof(size_t) * (size_t)cap) : NULL;
            if (!o)
                return LLM_ENOMEM;
            r->bound_off = o;
            r->cap_bounds = cap;
        }
        r->bound_seq[r->n_bounds] = (uint32_t)r->n_ids;
        r->bound_off[r->n_bounds++] = r->text_len;
        if (n_new > 0)
            memcpy(r->ids + r->n_ids, c->token_ids + skip, sizeof(int32_t) * n_new);
        r->n_ids += (int)n_new;
        if (tlen > 0)
            memcpy(r->text + r->text_len, c->text, tlen);
        r->text_len += tlen;
        r->text[r->text_len] = '\0';
        if (n_new > 0 && !r->t_first_ns) {
            r->t_first_ns = (int64_t)llm_now_ns();
            dequeue(r);
        }
    }
    if (c->finish_reason != LLM__FINISH_REASON__FINISH_NONE) {
        r->finish = c->finish_reason;
        if (c->usage) {
            r->prompt_tokens = c->usage->prompt_tokens;
            r->completion_tokens = c->usage->completion_tokens;
            r->cached_tokens = c->usage->cached_tokens;
        }
        mark_done(r);
    }
    return LLM_OK;
}

/* A reply to a client: the stream past after_seq, or an Error. */
typedef struct {
    uint8_t *buf;
    size_t len;
} reply;

static int
reply_error(reply *out, uint64_t id, int code, const char *msg)
{
    uint32_t retry = code == LLM_EBUSY || code == LLM_EUNAVAIL ? 500 : 0;
    return wire_error_reply(id, code, msg, retry, &out->buf, &out->len);
}

/* text_from: the stream's text from the first chunk that starts at or after the cursor.
 * A cursor inside a chunk (clients only hold cursors we gave them, which are chunk ends)
 * skips that chunk's text rather than sending it twice. Under mu. */
static char *
text_from(creq *r, uint32_t after_seq)
{
    size_t off = r->text_len;
    for (int b = r->n_bounds - 1; b >= 0 && r->bound_seq[b] >= after_seq; b--)
        off = r->bound_off[b];
    return r->text ? r->text + off : (char *)"";
}

/* reply_stream packs what lies past after_seq: as Accepted{first} (a Generate's answer)
 * or as a chunk. Under mu. */
static int
reply_stream(reply *out, uint64_t env_id, creq *r, uint32_t after_seq, bool as_accepted)
{
    if (after_seq > (uint32_t)r->n_ids)
        return reply_error(out, env_id, LLM_EINVAL, "cursor after_seq is past the stream");
    // An error reaches the client after every token before it: at the end of the stream,
    // or at once when no worker ever accepted the request.
    bool at_end = after_seq == (uint32_t)r->n_ids;
    if (r->err_code != LLM_OK && (as_accepted ? !r->accepted : at_end)) {
        mark_read(r);
        return reply_error(out, env_id, r->err_code, r->err_msg);
    }
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__TokenChunk pc = LLM__TOKEN_CHUNK__INIT;
    Llm__Usage pu = LLM__USAGE__INIT;
    Llm__Accepted acc = LLM__ACCEPTED__INIT;
    pc.seq = after_seq;
    pc.n_token_ids = (size_t)r->n_ids - after_seq;
    pc.token_ids = pc.n_token_ids ? r->ids + after_seq : NULL;
    char *text = text_from(r, after_seq);
    pc.text = text;
    if (r->finish != LLM__FINISH_REASON__FINISH_NONE) {
        mark_read(r);
        pc.finish_reason = r->finish;
        pu.prompt_tokens = r->prompt_tokens;
        pu.completion_tokens = r->completion_tokens;
        pu.cached_tokens = r->cached_tokens;
        pc.usage = &pu;
    }
    env.request_id = r->id;
    if (as_accepted) {
        acc.request_id = r->id;
        if (pc.n_token_ids > 0 || pc.finish_reason != LLM__FINISH_REASON__FINISH_NONE || text[0])
            acc.first = &pc;
        env.body_case = LLM__ENVELOPE__BODY_ACCEPTED;
        env.accepted = &acc;
    } else {
        env.body_case = LLM__ENVELOPE__BODY_CHUNK;
        env.chunk = &pc;
    }
    return wire_pack(&env, &out->buf, &out->len);
}

/* ---- client contexts -------------------------------------------------------------------- */

/* park puts c on r's waiter list. Under mu. */
static void
park(cctx *c, creq *r, int kind, uint64_t env_id, uint32_t after_seq, int wait_ms)
{
    c->park_kind = kind;
    c->r = r;
    r->refs++;
    c->env_id = env_id;
    c->after_seq = after_seq;
    c->deadline_ms = llm_now_ms() + wait_ms;
    if (c->deadline_ms < c->rl->next_deadline_ms)
        c->rl->next_deadline_ms = c->deadline_ms;
    c->pnext = r->waiters;
    r->waiters = c;
}

/* unpark takes c off its stream's list and packs its reply (the stream past its
 * cursor, or nothing new when its wait is over). Under mu. */
static void
unpark(cctx *c, reply *out)
{
    creq *r = c->r;
    for (cctx **pp = &r->waiters; *pp; pp = &(*pp)->pnext) {
        if (*pp == c) {
            *pp = c->pnext;
            break;
        }
    }
    reply_stream(out, c->env_id, r, c->after_seq, c->park_kind == PARK_ACCEPT);
    c->r = NULL;
    c->pnext = NULL;
    unref(r);
}

static bool
waiter_ready(const cctx *c, const creq *r)
{
    if (c->park_kind == PARK_ACCEPT)
        return r->accepted || ended(r);
    return (uint32_t)r->n_ids > c->after_seq || ended(r);
}

/* A batch of replies packed under mu and sent after it is released. */
typedef struct {
    cctx *c[64];
    reply out[64];
    int n;
} sendq;

static void
sendq_flush(sendq *q)
{
    for (int i = 0; i < q->n; i++)
        rpcsrv_reply(rpcsrv_ctx_of(q->c[i]), q->out[i].buf, q->out[i].len);
    q->n = 0;
}

/* wake answers the waiters of r that have news. Under mu; sends when mu is released
 * (the caller calls sendq_flush). */
static void
wake(creq *r, sendq *q)
{
    if (r->notify)
        r->notify(r->notify_arg);
    cctx *c = r->waiters;
    while (c && q->n < 64) {
        cctx *next = c->pnext;
        if (waiter_ready(c, r)) {
            q->c[q->n] = c;
            unpark(c, &q->out[q->n++]);
        }
        c = next;
    }
}

/* ---- the pump ----------------------------------------------------------------------------- */

static void pump_submit(creq *r);
static void pump_poll(creq *r);

static int
outcome_of(const creq *r)
{
    switch (r->finish) {
    case LLM__FINISH_REASON__FINISH_STOP:
    case LLM__FINISH_REASON__FINISH_LENGTH: return OUT_OK;
    case LLM__FINISH_REASON__FINISH_CANCELED: return OUT_CANCELED;
    case LLM__FINISH_REASON__FINISH_DEADLINE_EXCEEDED: return OUT_DEADLINE;
    case LLM__FINISH_REASON__FINISH_ERROR: return OUT_ERROR;
    default: break;
    }
    switch (r->err_code) {
    case LLM_EUNAVAIL: return OUT_UNAVAILABLE;
    case LLM_EBUSY: return OUT_BUSY;
    case LLM_EINVAL:
    case LLM_ERANGE:
    case LLM_ENOENT:
    case LLM_ENOTSUP: return OUT_REFUSED;
    default: return OUT_ERROR;
    }
}

/* pump_end stops the pump for good: the stream has ended. Drops the pump's reference. */
static void
pump_end(creq *r)
{
    relay *rl = r->rl;
    int64_t now_ns = (int64_t)llm_now_ns();
    pthread_mutex_lock(&rl->mu);
    r->pump = PUMP_IDLE;
    metric_counter_add(rl->outcome[outcome_of(r)], 1);
    if (r->t_first_ns)
        metric_histogram_observe(rl->ttft, (double)(r->t_first_ns - r->t_start_ns) / 1e9);
    metric_histogram_observe(rl->e2e, (double)(now_ns - r->t_start_ns) / 1e9);
    LOG_INFO("event=request_done req=%llu outcome=%s tokens=%d attempts=%d trace=%s",
             (unsigned long long)r->id, out_names[outcome_of(r)], r->n_ids, r->attempts,
             r->traceparent[0] ? r->traceparent : "-");
    unref(r);
    pthread_mutex_unlock(&rl->mu);
}

/* fail ends the stream with an error the client will read, then the pump. */
static void
fail(creq *r, int code, const char *fmt_msg)
{
    relay *rl = r->rl;
    sendq q = {.n = 0};
    pthread_mutex_lock(&rl->mu);
    if (!ended(r)) {
        if (r->canceled) {
            r->finish = LLM__FINISH_REASON__FINISH_CANCELED;
            r->completion_tokens = (uint32_t)r->n_ids;
            r->prompt_tokens = (uint32_t)r->n_prompt;
        } else {
            r->err_code = code;
            snprintf(r->err_msg, sizeof(r->err_msg), "%s", fmt_msg);
        }
        mark_done(r);
    }
    wake(r, &q);
    pthread_mutex_unlock(&rl->mu);
    sendq_flush(&q);
    pump_end(r);
}

/* leave_worker ends the current attempt's hold on its worker. */
static void
leave_worker(creq *r, bool ok)
{
    if (r->worker < 0)
        return;
    double queue_ms = 0, tpot_ms = 0;
    if (ok && r->t_first_ns >= r->t_attempt_ns && r->t_first_ns) {
        queue_ms = (double)(r->t_first_ns - r->t_attempt_ns) / 1e6;
        int n = r->n_ids - r->ids_at_attempt - 1;
        if (n > 0)
            tpot_ms = (double)((int64_t)llm_now_ns() - r->t_first_ns) / 1e6 / n;
    }
    reg_done(r->rl->reg, r->worker, ok, queue_ms, tpot_ms);
    pthread_mutex_lock(&r->rl->mu);
    r->worker = -1;
    pthread_mutex_unlock(&r->rl->mu);
}

/* failover sends the request to another worker after its worker failed it. */
static void
failover(creq *r, int rc, const char *why)
{
    relay *rl = r->rl;
    reg_worker_info wi;
    bool known = reg_get_worker(rl->reg, r->worker, &wi) == LLM_OK;
    LOG_WARN("event=failover req=%llu worker=%s tokens=%d attempt=%d why=\"%s\" err=%s trace=%s",
             (unsigned long long)r->id, known ? wi.id : "-", r->n_ids, r->attempts, why,
             llm_strerror(rc), r->traceparent[0] ? r->traceparent : "-");
    leave_worker(r, false);
    metric_counter_add(rl->failovers, 1);
    pump_submit(r);
}

static void
cancel_done(void *arg, int rc, Llm__Envelope *rep)
{
    creq *r = arg;
    (void)rc;
    wire_free(rep);
    pthread_mutex_lock(&r->rl->mu);
    unref(r);
    pthread_mutex_unlock(&r->rl->mu);
}

/* maybe_cancel tells the worker to stop r once r is canceled and a worker has it. */
static void
maybe_cancel(creq *r)
{
    relay *rl = r->rl;
    pthread_mutex_lock(&rl->mu);
    bool go = r->canceled && !r->cancel_sent && r->worker >= 0 && r->pump == PUMP_POLL &&
              !ended(r) && (r->ctl || wcall_new(cancel_done, r, &r->ctl) == LLM_OK);
    uint64_t wid = r->wid;
    nng_socket sock = r->sock;
    if (go) {
        r->cancel_sent = true;
        r->refs++;
    }
    pthread_mutex_unlock(&rl->mu);
    if (!go)
        return;
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__CancelRequest cr = LLM__CANCEL_REQUEST__INIT;
    cr.request_id = wid;
    env.request_id = wid;
    env.body_case = LLM__ENVELOPE__BODY_CANCEL;
    env.cancel = &cr;
    wcall_start(r->ctl, sock, &env, rl->o.call_timeout_ms);
}

/* retryable: an Error from a worker that another worker may not give. */
static bool
retryable(int code)
{
    switch (code) {
    case LLM_EBUSY:
    case LLM_EUNAVAIL:
    case LLM_ECLOSED:
    case LLM_ETIMEDOUT:
    case LLM_EIO:
    case LLM_ENOMEM:
    case LLM_EPROTO: return true;
    default: return false;
    }
}

static void
pump_on_call(void *arg, int rc, Llm__Envelope *rep)
{
    creq *r = arg;
    relay *rl = r->rl;
    pthread_mutex_lock(&rl->mu);
    bool closing = rl->closing;
    if (closing) {
        r->pump = PUMP_IDLE;
        unref(r);
    }
    pthread_mutex_unlock(&rl->mu);
    if (closing) {
        wire_free(rep);
        return;
    }
    Llm__Envelope__BodyCase body = rc == LLM_OK ? rep->body_case : LLM__ENVELOPE__BODY__NOT_SET;
    if (rc == LLM_OK && body == LLM__ENVELOPE__BODY_ERROR) {
        int code = rep->error->code ? (int)rep->error->code : LLM_EPROTO;
        char msg[200];
        snprintf(msg, sizeof(msg), "%s", rep->error->message);
        wire_free(rep);
        if (r->pump == PUMP_SUBMIT && !retryable(code)) {
            // The request's own fault (bad sampling values, too long, ...): every
            // worker would say the same.
            leave_worker(r, true);
            fail(r, code, msg);
            return;
        }
        if (code == LLM_EBUSY)
            r->last_refusal = LLM_EBUSY;
        // Not a breaker failure: the worker answered. Move on.
        leave_worker(r, true);
        LOG_INFO("event=worker_refused req=%llu code=%s msg=\"%s\" trace=%s",
                 (unsigned long long)r->id, llm_strerror(code), msg,
                 r->traceparent[0] ? r->traceparent : "-");
        metric_counter_add(rl->failovers, 1);
        pump_submit(r);
        return;
    }
    const Llm__TokenChunk *chunk = NULL;
    if (rc == LLM_OK && r->pump == PUMP_SUBMIT && body == LLM__ENVELOPE__BODY_ACCEPTED)
        chunk = rep->accepted->first;
    else if (rc == LLM_OK && r->pump == PUMP_POLL && body == LLM__ENVELOPE__BODY_CHUNK)
        chunk = rep->chunk;
    else if (rc == LLM_OK)
        rc = LLM_EPROTO; // a reply that does not answer the call
    if (rc != LLM_OK) {
        wire_free(rep);
        reg_call_failed(rl->reg, r->worker, rc);
        failover(r, rc, "call failed");
        return;
    }
    sendq q = {.n = 0};
    pthread_mutex_lock(&rl->mu);
    bool first_accept = r->pump == PUMP_SUBMIT;
    r->accepted = true;
    if (first_accept)
        r->pump = PUMP_POLL;
    int arc = chunk ? append(r, chunk) : LLM_OK;
    bool done = ended(r);
    wake(r, &q);
    pthread_mutex_unlock(&rl->mu);
    wire_free(rep);
    sendq_flush(&q);
    if (arc != LLM_OK) {
        reg_call_failed(rl->reg, r->worker, arc);
        failover(r, arc, "bad chunk");
        return;
    }
    if (done) {
        leave_worker(r, true);
        pump_end(r);
        return;
    }
    if (first_accept)
        maybe_cancel(r);
    pump_poll(r);
}

static void
pump_poll(creq *r)
{
    relay *rl = r->rl;
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__NextRequest nr = LLM__NEXT_REQUEST__INIT;
    nr.request_id = r->wid;
    nr.after_seq = (uint32_t)r->n_ids; // only the pump changes n_ids
    nr.wait_ms = (uint32_t)rl->o.poll_wait_ms;
    env.request_id = r->wid;
    env.body_case = LLM__ENVELOPE__BODY_NEXT;
    env.next = &nr;
    wcall_start(r->call, r->sock, &env, rl->o.poll_wait_ms + rl->o.call_timeout_ms);
}

/* pump_submit routes r and sends its Generate: the first time, or to resume it. */
static void
pump_submit(creq *r)
{
    relay *rl = r->rl;
    pthread_mutex_lock(&rl->mu);
    bool canceled = r->canceled, closing = rl->closing;
    if (closing) {
        r->pump = PUMP_IDLE;
        unref(r);
    }
    pthread_mutex_unlock(&rl->mu);
    if (closing)
        return;
    if (canceled) {
        fail(r, LLM_ECANCELED, "canceled");
        return;
    }
    if (r->attempts >= rl->o.max_attempts) {
        char msg[160];
        snprintf(msg, sizeof(msg), "no worker could serve the request (%d attempts)", r->attempts);
        fail(r, r->last_refusal == LLM_EBUSY ? LLM_EBUSY : LLM_EUNAVAIL, msg);
        return;
    }
    route_req q = {
        .block_hashes = r->blocks, .n_blocks = r->n_blocks, .max_tokens = (int)r->max_tokens};
    int w = -1;
    nng_socket sock;
    if (reg_route(rl->reg, r->model, &q, r->tried, r->n_tried, &w, &sock, NULL) != LLM_OK) {
        char msg[160];
        snprintf(msg, sizeof(msg), "no worker can serve the model now (%d tried)", r->n_tried);
        fail(r, r->last_refusal == LLM_EBUSY ? LLM_EBUSY : LLM_EUNAVAIL, msg);
        return;
    }
    pthread_mutex_lock(&rl->mu);
    r->worker = w;
    r->sock = sock;
    r->wid = atomic_fetch_add(&rl->next_id, 1);
    r->pump = PUMP_SUBMIT;
    r->cancel_sent = false;
    pthread_mutex_unlock(&rl->mu);
    if (r->n_tried < MAX_TRIED)
        r->tried[r->n_tried++] = w;
    r->attempts++;
    r->t_attempt_ns = (int64_t)llm_now_ns();
    r->ids_at_attempt = r->n_ids;

    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__GenerateRequest g = LLM__GENERATE_REQUEST__INIT;
    Llm__TokenList prompt = LLM__TOKEN_LIST__INIT, resume = LLM__TOKEN_LIST__INIT;
    Llm__Sampling sp = LLM__SAMPLING__INIT;
    reg_model_info mi;
    g.model = reg_get_model(rl->reg, r->model, &mi) == LLM_OK ? mi.name : (char *)"";
    prompt.ids = r->prompt;
    prompt.n_ids = (size_t)r->n_prompt;
    g.input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT_IDS;
    g.prompt_ids = &prompt;
    if (r->n_ids > 0) { // a resumed stream: the ids the client has or may have
        resume.ids = r->ids;
        resume.n_ids = (size_t)r->n_ids;
        g.resume_ids = &resume;
    }
    sp.temperature = r->temperature;
    sp.top_p = r->top_p;
    sp.top_k = r->top_k;
    sp.seed = r->seed;
    sp.max_tokens = r->max_tokens;
    sp.stop = r->stop;
    sp.n_stop = (size_t)r->n_stop;
    g.sampling = &sp;
    g.tier = r->tier;
    g.deadline_unix_ms = r->deadline_unix_ms;
    g.traceparent = r->traceparent;
    env.request_id = r->wid;
    env.body_case = LLM__ENVELOPE__BODY_GENERATE;
    env.generate = &g;
    wcall_start(r->call, sock, &env, rl->o.call_timeout_ms);
}

/* ---- client requests ------------------------------------------------------------------------ */

/* tokenize turns the request's input into prompt ids (the coordinator's copy). */
static int
tokenize(relay *rl, int model, const Llm__GenerateRequest *g, int32_t **ids, size_t *n, char *err,
         size_t err_len)
{
    const ctok *t = rl->toks[model];
    int rc = wire_check_text_input(g, (size_t)rl->o.max_prompt_bytes, err, err_len);
    if (rc != LLM_OK)
        return rc;
    switch (g->input_case) {
    case LLM__GENERATE_REQUEST__INPUT_PROMPT:
        return ctok_encode(t, g->prompt, NULL, 0, ids, n, err, err_len);
    case LLM__GENERATE_REQUEST__INPUT_MESSAGES: {
        const Llm__ChatList *cl = g->messages;
        tok_chat_msg *msgs = calloc(cl->n_messages, sizeof(*msgs));
        if (!msgs)
            return LLM_ENOMEM;
        for (size_t i = 0; i < cl->n_messages; i++)
            msgs[i] = (tok_chat_msg){cl->messages[i]->role, cl->messages[i]->content};
        rc = ctok_encode(t, NULL, msgs, cl->n_messages, ids, n, err, err_len);
        free(msgs);
        return rc;
    }
    case LLM__GENERATE_REQUEST__INPUT_PROMPT_IDS: {
        const Llm__TokenList *tl = g->prompt_ids;
        if (!tl || tl->n_ids == 0) {
            llm_errf(err, err_len, "prompt_ids is empty");
            return LLM_EINVAL;
        }
        if (tl->n_ids > (size_t)rl->o.max_prompt_bytes) {
            llm_errf(err, err_len, "%zu prompt ids is too many", tl->n_ids);
            return LLM_ERANGE;
        }
        if (!(*ids = malloc(sizeof(int32_t) * tl->n_ids)))
            return LLM_ENOMEM;
        memcpy(*ids, tl->ids, sizeof(int32_t) * tl->n_ids);
        *n = tl->n_ids;
        return LLM_OK;
    }
    default:
        llm_errf(err, err_len, "the request has no prompt, messages or prompt_ids");
        return LLM_EINVAL;
    }
}

/* creq_from builds a stream from a client's Generate (not yet in the table). */
static int
creq_from(relay *rl, const Llm__GenerateRequest *g, creq **out, char *err, size_t err_len)
{
    int model = reg_find_model(rl->reg, g->model);
    if (model < 0) {
        llm_errf(err, err_len, "unknown model '%.64s'%s", g->model,
                 g->model[0] ? "" : " (this coordinator serves several: name one)");
        return LLM_ENOENT;
    }
    const Llm__Sampling *sp = g->sampling;
    if (!sp) {
        llm_errf(err, err_len, "sampling is required (max_tokens at least)");
        return LLM_EINVAL;
    }
    if (sp->n_stop > MAX_STOP) {
        llm_errf(err, err_len, "at most %d stop strings (got %zu)", MAX_STOP, sp->n_stop);
        return LLM_EINVAL;
    }
    if (g->resume_ids) {
        llm_errf(err, err_len, "resume_ids is set by the coordinator, not by clients");
        return LLM_EINVAL;
    }
    if ((int)g->tier < 0 || (int)g->tier >= RELAY_N_TIERS) {
        llm_errf(err, err_len, "unknown SLA tier %d", (int)g->tier);
        return LLM_EINVAL;
    }
    creq *r = calloc(1, sizeof(*r));
    if (!r)
        return LLM_ENOMEM;
    r->rl = rl;
    r->model = model;
    r->worker = -1;
    r->refs = 1; // the table's
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tokenize(rl, model, g, &ids, &n, err, err_len);
    if (rc != LLM_OK)
        goto fail;
    r->prompt = ids;
    r->n_prompt = (int)n;
    // The prompt's full blocks, named as the workers name them (kvcache.h), so prefix
    // routing can compare them with the hashes workers advertise.
    reg_model_info mi;
    if (reg_get_model(rl->reg, model, &mi) == LLM_OK && mi.fingerprint && n >= KVC_BLOCK_TOKENS) {
        r->n_blocks = (int)(n / KVC_BLOCK_TOKENS);
        if (!(r->blocks = malloc(sizeof(uint64_t) * (size_t)r->n_blocks))) {
            rc = LLM_ENOMEM;
            goto fail;
        }
        uint64_t parent = 0;
        for (int b = 0; b < r->n_blocks; b++)
            parent = r->blocks[b] =
                kvcache_block_hash(parent, ids + (size_t)b * KVC_BLOCK_TOKENS, mi.fingerprint);
    }
    r->temperature = sp->temperature;
    r->top_p = sp->top_p;
    r->top_k = sp->top_k;
    r->seed = sp->seed;
    r->max_tokens = sp->max_tokens;
    for (size_t i = 0; i < sp->n_stop; i++) {
        if (!(r->stop[i] = strdup(sp->stop[i]))) {
            rc = LLM_ENOMEM;
            goto fail;
        }
        r->n_stop++;
    }
    r->tier = g->tier;
    r->deadline_unix_ms = g->deadline_unix_ms;
    if (!(r->traceparent = strdup(g->traceparent)) || wcall_new(pump_on_call, r, &r->call)) {
        rc = LLM_ENOMEM;
        goto fail;
    }
    r->t_start_ns = (int64_t)llm_now_ns();
    *out = r;
    return LLM_OK;
fail:
    creq_destroy(r);
    return rc;
}

static int
kind_of(Llm__Envelope__BodyCase c)
{
    switch (c) {
    case LLM__ENVELOPE__BODY_GENERATE: return K_GENERATE;
    case LLM__ENVELOPE__BODY_NEXT: return K_NEXT;
    case LLM__ENVELOPE__BODY_CANCEL: return K_CANCEL;
    case LLM__ENVELOPE__BODY_HEALTH: return K_HEALTH;
    case LLM__ENVELOPE__BODY_STATS: return K_STATS;
    case LLM__ENVELOPE__BODY_LIST_MODELS: return K_LIST_MODELS;
    case LLM__ENVELOPE__BODY_CLUSTER_STATUS: return K_CLUSTER_STATUS;
    case LLM__ENVELOPE__BODY_DRAIN: return K_DRAIN;
    default: return K_OTHER;
    }
}

/* admission_check refuses r when its tier's queue is full or its deadline cannot be met.
 * Under mu. */
static int
admission_check(relay *rl, const creq *r, char *err, size_t err_len)
{
    int limit = rl->o.queue_limit[r->tier];
    if (limit > 0 && rl->queued[r->tier] >= limit) {
        metric_counter_add(rl->refused_full[r->tier], 1);
        llm_errf(err, err_len,
                 "the queue of tier %s is full (%d requests wait for a worker); retry later",
                 tier_names[r->tier], limit);
        return LLM_EBUSY;
    }
    if (r->deadline_unix_ms) {
        int64_t left_ms = llm_ms_until_unix(r->deadline_unix_ms);
        double ttft_ms = reg_ttft_estimate_ms(rl->reg, r->model);
        if (left_ms <= 0 || (ttft_ms > 0 && ttft_ms > (double)left_ms)) {
            metric_counter_add(rl->refused_deadline, 1);
            llm_errf(err, err_len,
                     "the deadline cannot be met: %lld ms left, the first token is expected "
                     "in %.0f ms",
                     (long long)(left_ms > 0 ? left_ms : 0), ttft_ms > 0 ? ttft_ms : 0);
            return LLM_ETIMEDOUT;
        }
    }
    return LLM_OK;
}

/* admit builds a stream from a client's Generate and puts it in the table with a
 * reference for its pump, subscribed to fn (may be NULL). Nothing runs it yet: the
 * caller parks its reader (or not) and then calls pump_submit. */
static int
admit(relay *rl, uint64_t id, const Llm__GenerateRequest *g, relay_notify_fn fn, void *arg,
      creq **out, char *err, size_t err_len)
{
    creq *r = NULL;
    int rc = creq_from(rl, g, &r, err, err_len);
    if (rc != LLM_OK)
        return rc;
    r->notify = fn;
    r->notify_arg = arg;
    pthread_mutex_lock(&rl->mu);
    if (id == 0)
        id = atomic_fetch_add(&rl->next_id, 1);
    if (lookup(rl, id)) {
        llm_errf(err, err_len, "request id %llu is in use", (unsigned long long)id);
        rc = LLM_EINVAL;
    } else if (rl->n_active >= rl->o.max_requests) {
        llm_errf(err, err_len, "the coordinator tracks %d streams already; retry later",
                 rl->o.max_requests);
        rc = LLM_EBUSY;
    } else {
        rc = admission_check(rl, r, err, err_len);
    }
    if (rc != LLM_OK) {
        pthread_mutex_unlock(&rl->mu);
        creq_destroy(r);
        return rc;
    }
    r->id = id;
    r->hnext = rl->table[bucket(id)];
    rl->table[bucket(id)] = r;
    rl->n_active++;
    metric_gauge_set(rl->active, rl->n_active);
    r->queued = true;
    metric_gauge_set(rl->queued_g[r->tier], ++rl->queued[r->tier]);
    r->refs++; // the pump's
    pthread_mutex_unlock(&rl->mu);
    LOG_DEBUG("event=request_accepted req=%llu prompt=%d max_tokens=%u tier=%d trace=%s",
              (unsigned long long)id, r->n_prompt, r->max_tokens, (int)r->tier,
              r->traceparent[0] ? r->traceparent : "-");
    *out = r;
    return LLM_OK;
}

/* on_generate admits a request and starts its pump; c (when not NULL) is parked until a
 * worker accepts it. */
static int
on_generate(relay *rl, uint64_t id, const Llm__GenerateRequest *g, cctx *c, reply *out,
            bool *parked, char *err, size_t err_len)
{
    creq *r = NULL;
    int rc = admit(rl, id, g, NULL, NULL, &r, err, err_len);
    if (rc != LLM_OK)
        return rc;
    pthread_mutex_lock(&rl->mu);
    if (c) {
        park(c, r, PARK_ACCEPT, r->id, 0, rl->o.accept_wait_ms);
        *parked = true;
    } else {
        r->accepted = true; // relay_handle: answer now, the stream goes on
        rc = reply_stream(out, r->id, r, 0, true);
    }
    pthread_mutex_unlock(&rl->mu);
    pump_submit(r);
    return rc;
}

static int
on_next(relay *rl, uint64_t id, const Llm__NextRequest *nr, cctx *c, reply *out, bool *parked,
        char *err, size_t err_len)
{
    if (nr->request_id)
        id = nr->request_id;
    int rc = LLM_OK;
    pthread_mutex_lock(&rl->mu);
    creq *r = lookup(rl, id);
    if (!r) {
        llm_errf(err, err_len, "unknown request id %llu", (unsigned long long)id);
        rc = LLM_ENOENT;
    } else if (nr->after_seq > (uint32_t)r->n_ids) {
        llm_errf(err, err_len, "cursor after_seq=%u is past the stream (%d tokens)", nr->after_seq,
                 r->n_ids);
        rc = LLM_EINVAL;
    } else if ((uint32_t)r->n_ids > nr->after_seq || ended(r) || !c || nr->wait_ms == 0) {
        rc = reply_stream(out, id, r, nr->after_seq, false);
    } else {
        int wait = nr->wait_ms < (uint32_t)rl->o.max_wait_ms ? (int)nr->wait_ms : rl->o.max_wait_ms;
        park(c, r, PARK_NEXT, id, nr->after_seq, wait);
        *parked = true;
    }
    pthread_mutex_unlock(&rl->mu);
    return rc;
}

static int
pack(Llm__Envelope *env, uint64_t id, reply *out)
{
    env->request_id = id;
    return wire_pack(env, &out->buf, &out->len);
}

static int
on_cancel(relay *rl, uint64_t id, const Llm__CancelRequest *cr, reply *out, char *err,
          size_t err_len)
{
    if (cr->request_id)
        id = cr->request_id;
    pthread_mutex_lock(&rl->mu);
    creq *r = lookup(rl, id);
    if (r) {
        r->canceled = true;
        r->refs++;
    }
    pthread_mutex_unlock(&rl->mu);
    if (!r) {
        llm_errf(err, err_len, "unknown request id %llu", (unsigned long long)id);
        return LLM_ENOENT;
    }
    maybe_cancel(r);
    pthread_mutex_lock(&rl->mu);
    unref(r);
    pthread_mutex_unlock(&rl->mu);
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__Accepted acc = LLM__ACCEPTED__INIT;
    acc.request_id = id;
    env.body_case = LLM__ENVELOPE__BODY_ACCEPTED;
    env.accepted = &acc;
    return pack(&env, id, out);
}

/* dispatch answers msg into out, or parks c (when not NULL) and sets *parked. */
static int
dispatch(relay *rl, const uint8_t *msg, size_t len, cctx *c, reply *out, bool *parked)
{
    char err[256] = "";
    Llm__Envelope *env = NULL;
    *parked = false;
    int rc = wire_decode(msg, len, &env, err, sizeof(err));
    if (rc != LLM_OK) {
        metric_counter_add(rl->rpc_err[K_OTHER], 1);
        LOG_INFO("event=bad_message bytes=%zu err=\"%s\"", len, err);
        return reply_error(out, 0, rc, err);
    }
    uint64_t id = env->request_id;
    int kind = kind_of(env->body_case);
    switch (env->body_case) {
    case LLM__ENVELOPE__BODY_GENERATE:
        rc = on_generate(rl, id, env->generate, c, out, parked, err, sizeof(err));
        break;
    case LLM__ENVELOPE__BODY_NEXT:
        rc = on_next(rl, id, env->next, c, out, parked, err, sizeof(err));
        break;
    case LLM__ENVELOPE__BODY_CANCEL:
        rc = on_cancel(rl, id, env->cancel, out, err, sizeof(err));
        break;
    case LLM__ENVELOPE__BODY_HEALTH: {
        int ready = reg_workers_ready(rl->reg);
        Llm__Envelope r = LLM__ENVELOPE__INIT;
        Llm__HealthReply hr = LLM__HEALTH_REPLY__INIT;
        hr.ready = ready > 0;
        hr.state = ready > 0 ? "ready" : "no_workers";
        r.body_case = LLM__ENVELOPE__BODY_HEALTH_REPLY;
        r.health_reply = &hr;
        rc = pack(&r, id, out);
        break;
    }
    case LLM__ENVELOPE__BODY_STATS: {
        char *text = metrics_render(rl->m);
        if (!text) {
            rc = LLM_ENOMEM;
            break;
        }
        Llm__Envelope r = LLM__ENVELOPE__INIT;
        Llm__StatsReply sr = LLM__STATS_REPLY__INIT;
        sr.prometheus_text = text;
        r.body_case = LLM__ENVELOPE__BODY_STATS_REPLY;
        r.stats_reply = &sr;
        rc = pack(&r, id, out);
        free(text);
        break;
    }
    case LLM__ENVELOPE__BODY_LIST_MODELS:
        rc = admin_list_models(rl->reg, id, &out->buf, &out->len);
        break;
    case LLM__ENVELOPE__BODY_CLUSTER_STATUS:
        rc = admin_cluster_status(rl->reg, (uint64_t)relay_active(rl), id, &out->buf, &out->len);
        break;
    case LLM__ENVELOPE__BODY_DRAIN:
        rc = admin_drain_reply(rl->reg, env->drain->worker_id, rl->o.call_timeout_ms, id, &out->buf,
                               &out->len, err, sizeof(err));
        break;
    default:
        llm_errf(err, sizeof(err), "the coordinator's client port does not answer '%s' messages",
                 wire_body_name(env->body_case));
        rc = LLM_EPROTO;
        break;
    }
    // The trace of a refused Generate, for its log line (env goes now).
    char trace[64] = "-";
    if (env->body_case == LLM__ENVELOPE__BODY_GENERATE && env->generate->traceparent[0])
        snprintf(trace, sizeof(trace), "%s", env->generate->traceparent);
    wire_free(env);
    metric_counter_add(rc == LLM_OK ? rl->rpc_ok[kind] : rl->rpc_err[kind], 1);
    if (rc != LLM_OK) {
        if (kind == K_GENERATE)
            metric_counter_add(rl->outcome[rc == LLM_EBUSY ? OUT_BUSY : OUT_REFUSED], 1);
        LOG_INFO("event=request_refused req=%llu kind=%s code=%s err=\"%s\" trace=%s",
                 (unsigned long long)id, kind_names[kind], llm_strerror(rc), err, trace);
        return reply_error(out, id, rc, err[0] ? err : NULL);
    }
    return LLM_OK;
}

int
relay_handle(relay *rl, const uint8_t *msg, size_t len, uint8_t **buf, size_t *buf_len)
{
    reply out = {0};
    bool parked;
    int rc = dispatch(rl, msg, len, NULL, &out, &parked);
    *buf = out.buf;
    *buf_len = out.len;
    return rc;
}

/* ---- in-process readers ---------------------------------------------------------------------- */

int
relay_submit(relay *rl, const Llm__GenerateRequest *g, relay_notify_fn fn, void *arg, uint64_t *id,
             char *err, size_t err_len)
{
    creq *r = NULL;
    int rc = admit(rl, 0, g, fn, arg, &r, err, err_len);
    metric_counter_add(rc == LLM_OK ? rl->rpc_ok[K_GENERATE] : rl->rpc_err[K_GENERATE], 1);
    if (rc != LLM_OK) {
        metric_counter_add(rl->outcome[rc == LLM_EBUSY ? OUT_BUSY : OUT_REFUSED], 1);
        LOG_INFO("event=request_refused kind=generate code=%s err=\"%s\" trace=%s",
                 llm_strerror(rc), err, g->traceparent[0] ? g->traceparent : "-");
        return rc;
    }
    *id = r->id;
    pump_submit(r);
    return LLM_OK;
}

int
relay_read(relay *rl, uint64_t id, uint32_t after_seq, size_t text_off, relay_view *v)
{
    memset(v, 0, sizeof(*v));
    int rc = LLM_OK;
    pthread_mutex_lock(&rl->mu);
    creq *r = lookup(rl, id);
    if (!r) {
        rc = LLM_ENOENT;
    } else if (after_seq > (uint32_t)r->n_ids || text_off > r->text_len) {
        rc = LLM_EINVAL;
    } else if (!(v->text = strdup(r->text ? r->text + text_off : ""))) {
        rc = LLM_ENOMEM;
    } else {
        v->seq = after_seq;
        v->next_seq = (uint32_t)r->n_ids;
        v->next_text_off = r->text_len;
        v->accepted = r->accepted;
        v->ended = ended(r);
        v->finish = (int)r->finish;
        v->prompt_tokens = r->prompt_tokens;
        v->completion_tokens = r->completion_tokens;
        v->cached_tokens = r->cached_tokens;
        v->err_code = r->err_code;
        snprintf(v->err_msg, sizeof(v->err_msg), "%s", r->err_msg);
        if (v->ended)
            mark_read(r);
    }
    pthread_mutex_unlock(&rl->mu);
    return rc;
}

void
relay_view_fini(relay_view *v)
{
    if (v) {
        free(v->text);
        v->text = NULL;
    }
}

void
relay_release(relay *rl, uint64_t id)
{
    pthread_mutex_lock(&rl->mu);
    creq *r = lookup(rl, id);
    bool cancel = r && !ended(r);
    if (r) {
        r->notify = NULL;
        r->notify_arg = NULL;
        r->released = true;
        if (ended(r))
            mark_read(r);
    }
    if (cancel) {
        r->canceled = true;
        r->refs++;
    }
    pthread_mutex_unlock(&rl->mu);
    if (!cancel)
        return;
    LOG_INFO("event=reader_gone req=%llu trace=%s", (unsigned long long)id,
             r->traceparent[0] ? r->traceparent : "-");
    maybe_cancel(r);
    pthread_mutex_lock(&rl->mu);
    unref(r);
    pthread_mutex_unlock(&rl->mu);
}

/* ---- the socket --------------------------------------------------------------------------- */

static bool
on_message(void *arg, rpcsrv_ctx *rc, const uint8_t *msg, size_t len, uint8_t **buf,
           size_t *buf_len)
{
    cctx *c = rpcsrv_ctx_data(rc);
    c->rl = arg;
    reply out = {0};
    bool parked = false;
    // Parking happens under mu inside dispatch; from then on a wake may answer c.
    dispatch(c->rl, msg, len, c, &out, &parked);
    *buf = out.buf;
    *buf_len = out.len;
    return parked;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

int
relay_new(registry *reg, ctok *const *toks, metrics *m, const relay_opts *o, relay **out, char *err,
          size_t err_len)
{
    if (o->contexts < 1 || o->max_requests < 1 || o->max_attempts < 1 || o->call_timeout_ms < 1 ||
        o->poll_wait_ms < 1 || o->max_wait_ms < 0 || o->accept_wait_ms < 0 ||
        o->finished_ttl_ms < 0 || o->max_prompt_bytes < 1) {
        llm_errf(err, err_len, "relay: contexts, requests, attempts and timeouts must be positive");
        return LLM_EINVAL;
    }
    for (int t = 0; t < RELAY_N_TIERS; t++) {
        if (o->queue_limit[t] < 0) {
            llm_errf(err, err_len, "relay: a queue limit is negative");
            return LLM_EINVAL;
        }
    }
    relay *rl = calloc(1, sizeof(*rl));
    if (!rl)
        return LLM_ENOMEM;
    rl->reg = reg;
    rl->toks = toks;
    rl->m = m;
    rl->o = *o;
    pthread_mutex_init(&rl->mu, NULL);
    rl->next_deadline_ms = INT64_MAX;
    // Ids this coordinator assigns (client streams and worker attempts) start at a
    // clock-derived base, so a restarted coordinator does not reuse ids workers still hold.
    atomic_init(&rl->next_id, ((uint64_t)llm_now_ns() << 16) | 1);
    for (int k = 0; k < N_KINDS; k++) {
        char lb[64];
        snprintf(lb, sizeof(lb), "kind=\"%s\",outcome=\"ok\"", kind_names[k]);
        rl->rpc_ok[k] = metrics_counter(m, "llm_coord_rpc_total", "Client messages answered.", lb);
        snprintf(lb, sizeof(lb), "kind=\"%s\",outcome=\"error\"", kind_names[k]);
        rl->rpc_err[k] = metrics_counter(m, "llm_coord_rpc_total", "Client messages answered.", lb);
    }
    for (int k = 0; k < N_OUT; k++) {
        char lb[64];
        snprintf(lb, sizeof(lb), "outcome=\"%s\"", out_names[k]);
        rl->outcome[k] =
            metrics_counter(m, "llm_coord_requests_total", "Generate requests by outcome.", lb);
    }
    rl->failovers = metrics_counter(m, "llm_coord_failovers_total",
                                    "Requests sent to another worker after a failure.", NULL);
    rl->ttft =
        metrics_histogram(m, "llm_coord_ttft_seconds", "Time from a Generate to its first token.",
                          NULL, metrics_latency_bounds, metrics_latency_n);
    rl->e2e = metrics_histogram(m, "llm_coord_e2e_seconds", "Time from a Generate to its end.",
                                NULL, metrics_latency_bounds, metrics_latency_n);
    rl->active = metrics_gauge(m, "llm_coord_requests_active", "Streams tracked now.", NULL);
    for (int t = 0; t < RELAY_N_TIERS; t++) {
        char lb[64];
        snprintf(lb, sizeof(lb), "tier=\"%s\"", tier_names[t]);
        rl->queued_g[t] = metrics_gauge(m, "llm_coord_queued",
                                        "Admitted requests waiting for their first token.", lb);
        snprintf(lb, sizeof(lb), "tier=\"%s\",reason=\"queue_full\"", tier_names[t]);
        rl->refused_full[t] = metrics_counter(m, "llm_coord_admission_refused_total",
                                              "Generates refused by admission.", lb);
    }
    rl->refused_deadline =
        metrics_counter(m, "llm_coord_admission_refused_total", "Generates refused by admission.",
                        "tier=\"any\",reason=\"deadline\"");
    *out = rl;
    return LLM_OK;
}

int
relay_listen(relay *rl, char *err, size_t err_len)
{
    return rpcsrv_listen(rl->o.listen, rl->o.contexts, sizeof(cctx), on_message, rl, &rl->rpc, err,
                         err_len);
}

int
relay_active(relay *rl)
{
    pthread_mutex_lock(&rl->mu);
    int n = rl->n_active;
    pthread_mutex_unlock(&rl->mu);
    return n;
}

/* sweep drops the streams of l that joined it at or before `before`. Under mu. */
static void
sweep(relay *rl, rlist *l, int64_t before)
{
    while (l->head && l->head->list_ms <= before && l->head->pump == PUMP_IDLE) {
        creq *r = l->head;
        list_unlink(l, r);
        for (creq **pp = &rl->table[bucket(r->id)]; *pp; pp = &(*pp)->hnext) {
            if (*pp == r) {
                *pp = r->hnext;
                break;
            }
        }
        rl->n_active--;
        unref(r);
    }
}

void
relay_tick(relay *rl, int64_t now_ms)
{
    sendq q = {.n = 0};
    creq *dead = NULL;
    pthread_mutex_lock(&rl->mu);
    // Long polls whose wait is over get "nothing new". The scan runs only when the
    // earliest deadline has come (parking lowers next_deadline_ms).
    if (now_ms >= rl->next_deadline_ms) {
        int64_t next = INT64_MAX;
        for (int i = 0; i < rpcsrv_n_ctxs(rl->rpc); i++) {
            cctx *c = rpcsrv_ctx_data(rpcsrv_ctx_at(rl->rpc, i));
            if (!c->r)
                continue;
            if (now_ms >= c->deadline_ms && q.n < 64) {
                q.c[q.n] = c;
                unpark(c, &q.out[q.n++]);
            } else if (c->deadline_ms < next) {
                next = c->deadline_ms;
            }
        }
        rl->next_deadline_ms = q.n == 64 ? now_ms : next;
    }
    // Streams that ended longer than their list's wait ago leave the table, oldest first.
    sweep(rl, &rl->ended, now_ms - rl->o.finished_ttl_ms);
    sweep(rl, &rl->read,
          now_ms - (READ_GRACE_MS < rl->o.finished_ttl_ms ? READ_GRACE_MS : rl->o.finished_ttl_ms));
    metric_gauge_set(rl->active, rl->n_active);
    dead = rl->graveyard;
    rl->graveyard = NULL;
    pthread_mutex_unlock(&rl->mu);
    sendq_flush(&q);
    while (dead) {
        creq *next = dead->hnext;
        creq_destroy(dead);
        dead = next;
    }
}

void
relay_close(relay *rl)
{
    if (rl)
        rpcsrv_close(rl->rpc);
}

void
relay_free(relay *rl)
{
    if (!rl)
        return;
    relay_close(rl);
    // Pumps still running hold their streams: stop their calls first (the registry's
    // sockets are closed by then, so every call has ended or ends now).
    pthread_mutex_lock(&rl->mu);
    rl->closing = true;
    creq *all = NULL;
    for (int b = 0; b < TABLE_BUCKETS; b++) {
        while (rl->table[b]) {
            creq *r = rl->table[b];
            rl->table[b] = r->hnext;
            r->hnext = all;
            all = r;
        }
    }
    pthread_mutex_unlock(&rl->mu);
    for (creq *r = all; r; r = r->hnext) {
        wcall_abort(r->call);
        if (r->ctl)
            wcall_abort(r->ctl);
    }
    for (creq *r = all; r;) {
        creq *next = r->hnext;
        creq_destroy(r); // wcall_free waits for a callback in flight
        r = next;
    }
    for (creq *r = rl->graveyard; r;) {
        creq *next = r->hnext;
        creq_destroy(r);
        r = next;
    }
    pthread_mutex_destroy(&rl->mu);
    rpcsrv_free(rl->rpc);
    free(rl);
}
