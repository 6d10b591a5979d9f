/*
 * server.c - Envelope dispatch over NNG req/rep contexts.
 *
 * A context is a small state machine: RECV -> (handle) -> SEND -> RECV, with a detour
 * through PARKED when a Generate or Next has to wait for tokens. While parked, the
 * context's sched_waiter sits in the scheduler, which calls park_wake; the reply is
 * built and sent from there.
 */
#include "server.h"

#include "llm_err.h"
#include "llm_time.h"
#include "rpcsrv.h"
#include "log.h"
#include "wire.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { PARK_ACCEPTED, PARK_NEXT };

/* A context's own state (rpcsrv.h keeps it with the NNG context). */
typedef struct wctx {
    wserver *srv;
    int park_kind;
    uint64_t env_id; // request_id of the envelope being answered
    sched_waiter w;
} wctx;

enum {
    KIND_GENERATE,
    KIND_NEXT,
    KIND_CANCEL,
    KIND_HEALTH,
    KIND_STATS,
    KIND_DRAIN,
    KIND_OTHER,
    N_KINDS
};
static const char *const kind_names[N_KINDS] = {"generate", "next",  "cancel", "health",
                                                "stats",    "drain", "other"};

struct wserver {
    sched *s;
    engine *e;
    metrics *reg;
    wserver_opts o;
    char *model_name, *worker_id, *address;
    rpcsrv *rpc;
    _Atomic uint64_t next_id;
    metric_counter *rpc_ok[N_KINDS], *rpc_err[N_KINDS];
};

/* ---- replies ------------------------------------------------------------------------ */

typedef struct {
    uint8_t *buf;
    size_t len;
} reply;

static int
reply_error(reply *out, uint64_t id, int code, const char *msg)
{
    uint32_t retry = code == LLM_EBUSY ? 100 : 0;
    return wire_error_reply(id, code, msg, retry, &out->buf, &out->len);
}

static Llm__FinishReason
finish_to_proto(sched_finish f)
{
    switch (f) {
    case SCHED_FINISH_STOP: return LLM__FINISH_REASON__FINISH_STOP;
    case SCHED_FINISH_LENGTH: return LLM__FINISH_REASON__FINISH_LENGTH;
    case SCHED_FINISH_CANCELED: return LLM__FINISH_REASON__FINISH_CANCELED;
    case SCHED_FINISH_DEADLINE: return LLM__FINISH_REASON__FINISH_DEADLINE_EXCEEDED;
    case SCHED_FINISH_ERROR: return LLM__FINISH_REASON__FINISH_ERROR;
    default: return LLM__FINISH_REASON__FINISH_NONE;
    }
}

/* fill_chunk points the protobuf chunk at c's fields (borrowed until packed). */
static void
fill_chunk(Llm__TokenChunk *pc, Llm__Usage *pu, const sched_chunk *c)
{
    pc->seq = c->seq;
    pc->n_token_ids = (size_t)c->n_ids;
    pc->token_ids = c->ids;
    pc->text = c->text ? c->text : (char *)"";
    pc->finish_reason = finish_to_proto(c->finish);
    if (c->finish != SCHED_FINISH_NONE) {
        pu->prompt_tokens = c->usage.prompt_tokens;
        pu->completion_tokens = c->usage.completion_tokens;
        pu->cached_tokens = c->usage.cached_tokens;
        pc->usage = pu;
    }
}

static int
reply_chunk(reply *out, uint64_t id, const sched_chunk *c, bool as_accepted)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__TokenChunk pc = LLM__TOKEN_CHUNK__INIT;
    Llm__Usage pu = LLM__USAGE__INIT;
    Llm__Accepted acc = LLM__ACCEPTED__INIT;
    fill_chunk(&pc, &pu, c);
    env.request_id = id;
    if (as_accepted) {
        acc.request_id = id;
        if (c->n_ids > 0 || c->finish != SCHED_FINISH_NONE)
            acc.first = &pc;
        env.body_case = LLM__ENVELOPE__BODY_ACCEPTED;
        env.accepted = &acc;
    } else {
        env.body_case = LLM__ENVELOPE__BODY_CHUNK;
        env.chunk = &pc;
    }
    return wire_pack(&env, &out->buf, &out->len);
}

/* ---- request validation ---------------------------------------------------------------- */

static sched_tier
tier_from_proto(Llm__SlaTier t)
{
    switch (t) {
    case LLM__SLA_TIER__TIER_CRITICAL: return SCHED_TIER_CRITICAL;
    case LLM__SLA_TIER__TIER_HIGH: return SCHED_TIER_HIGH;
    case LLM__SLA_TIER__TIER_LOW: return SCHED_TIER_LOW;
    case LLM__SLA_TIER__TIER_BACKGROUND: return SCHED_TIER_BACKGROUND;
    case LLM__SLA_TIER__TIER_NORMAL: return SCHED_TIER_NORMAL;
    default: return SCHED_N_TIERS; // refused by sched_submit
    }
}

/* build_prompt turns the request's input into token ids. */
static int
build_prompt(wserver *w, const Llm__GenerateRequest *g, int32_t **ids, size_t *n, char *err,
             size_t err_len)
{
    int rc = wire_check_text_input(g, (size_t)w->o.max_prompt_bytes, err, err_len);
    if (rc != LLM_OK)
        return rc;
    switch (g->input_case) {
    case LLM__GENERATE_REQUEST__INPUT_PROMPT:
        return w->e->encode(w->e, g->prompt, NULL, 0, ids, n, err, err_len);
    case LLM__GENERATE_REQUEST__INPUT_MESSAGES: {
        const Llm__ChatList *cl = g->messages;
        tok_chat_msg *msgs = calloc(cl->n_messages, sizeof(*msgs));
        if (!msgs)
            return LLM_ENOMEM;
        for (size_t i = 0; i < cl->n_messages; i++)
            msgs[i] = (tok_chat_msg){cl->messages[i]->role, cl->messages[i]->content};
        rc = w->e->encode(w->e, NULL, msgs, cl->n_messages, ids, n, err, err_len);
        free(msgs);
        return rc;
    }
    case LLM__GENERATE_REQUEST__INPUT_PROMPT_IDS: {
        const Llm__TokenList *tl = g->prompt_ids;
        if (!tl || tl->n_ids == 0) {
            llm_errf(err, err_len, "prompt_ids is empty");
            return LLM_EINVAL;
        }
        if (tl->n_ids > (size_t)w->e->ctx_len) {
            llm_errf(err, err_len, "%zu prompt ids exceed the context of %d tokens", tl->n_ids,
                     w->e->ctx_len);
            return LLM_ERANGE;
        }
        *ids = malloc(sizeof(int32_t) * tl->n_ids);
        if (!*ids)
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

static int64_t
deadline_from_unix_ms(uint64_t unix_ms)
{
    if (unix_ms == 0)
        return 0;
    int64_t left_ms = llm_ms_until_unix(unix_ms);
    if (left_ms > 365LL * 86400 * 1000)
        left_ms = 365LL * 86400 * 1000;
    int64_t d = (int64_t)llm_now_ns() + left_ms * 1000000;
    return d > 0 ? d : 1; // already past: ends at once with deadline_exceeded
}

/* resume_of returns the request's resumed output (failover), NULL when there is none. */
static const Llm__TokenList *
resume_of(const Llm__GenerateRequest *g)
{
    return g->resume_ids && g->resume_ids->n_ids > 0 ? g->resume_ids : NULL;
}

/* first_seq is where the stream's new tokens start: the usual cursor of a Generate. */
static uint32_t
first_seq(const Llm__GenerateRequest *g)
{
    const Llm__TokenList *rs = resume_of(g);
    return rs ? (uint32_t)rs->n_ids : g->resume_from_seq;
}

/* submit validates a Generate and hands it to the scheduler. */
static int
submit(wserver *w, uint64_t id, const Llm__GenerateRequest *g, char *err, size_t err_len)
{
    if (g->model[0] && strcmp(g->model, w->model_name) != 0) {
        llm_errf(err, err_len, "unknown model '%.64s' (this worker serves '%s')", g->model,
                 w->model_name);
        return LLM_ENOENT;
    }
    const Llm__Sampling *sp = g->sampling;
    if (!sp) {
        llm_errf(err, err_len, "sampling is required (max_tokens at least)");
        return LLM_EINVAL;
    }
    if (sp->max_tokens > (uint32_t)w->e->ctx_len) {
        llm_errf(err, err_len, "max_tokens %u exceeds the context of %d tokens", sp->max_tokens,
                 w->e->ctx_len);
        return LLM_ERANGE;
    }
    if (sp->n_stop > SCHED_MAX_STOP) {
        llm_errf(err, err_len, "at most %d stop strings (got %zu)", SCHED_MAX_STOP, sp->n_stop);
        return LLM_EINVAL;
    }
    // The scheduler checks this too; here it also bounds the (int) cast below.
    const Llm__TokenList *rs = resume_of(g);
    if (rs && rs->n_ids > sp->max_tokens) {
        llm_errf(err, err_len, "%zu resume ids exceed max_tokens %u (they count toward it)",
                 rs->n_ids, sp->max_tokens);
        return LLM_ERANGE;
    }
    // Resumed output numbers the stream from 0, so resume_from_seq (the older form of
    // resume, where the delivered tokens ride in prompt_ids) can only agree with it.
    if (rs && g->resume_from_seq != 0 && g->resume_from_seq != rs->n_ids) {
        llm_errf(err, err_len, "resume_from_seq %u disagrees with %zu resume ids",
                 g->resume_from_seq, rs->n_ids);
        return LLM_EINVAL;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = build_prompt(w, g, &ids, &n_ids, err, err_len);
    if (rc != LLM_OK)
        return rc;
    sched_req q = {0};
    q.prompt = ids;
    q.n_prompt = (int)n_ids;
    q.samp = samp_params_default();
    q.samp.temperature = sp->temperature;
    q.samp.top_p = sp->top_p == 0.0f ? 1.0f : sp->top_p;
    q.samp.top_k = sp->top_k > (uint32_t)w->e->n_vocab ? w->e->n_vocab : (int)sp->top_k;
    q.samp.seed = sp->seed;
    q.max_tokens = (int)sp->max_tokens;
    q.stop = (const char *const *)sp->stop;
    q.n_stop = (int)sp->n_stop;
    q.tier = tier_from_proto(g->tier);
    q.deadline_ns = deadline_from_unix_ms(g->deadline_unix_ms);
    q.seq_base = rs ? 0 : g->resume_from_seq;
    q.resume = rs ? rs->ids : NULL;
    q.n_resume = rs ? (int)rs->n_ids : 0;
    q.trace = g->traceparent;
    rc = sched_submit(w->s, id, &q, err, err_len);
    free(ids);
    if (rc == LLM_OK)
        LOG_INFO("event=request_accepted req=%llu prompt=%zu resume=%d max_tokens=%u tier=%d "
                 "trace=%s",
                 (unsigned long long)id, n_ids, q.n_resume, sp->max_tokens, (int)q.tier,
                 g->traceparent[0] ? g->traceparent : "-");
    return rc;
}

/* ---- drain ---------------------------------------------------------------------------- */

/* on_drain starts draining (refusing new work at once, so the reply tells the truth) and
 * answers with this worker's status. The rest of the drain, as on SIGTERM, is serve.c's:
 * its main loop sees the scheduler draining. */
static int
on_drain(wserver *w, uint64_t id, const Llm__DrainRequest *dr, reply *out, char *err,
         size_t err_len)
{
    if (dr->worker_id[0] && strcmp(dr->worker_id, w->worker_id) != 0) {
        llm_errf(err, err_len, "this is worker '%s', not '%.64s'", w->worker_id, dr->worker_id);
        return LLM_ENOENT;
    }
    sched_drain(w->s);
    LOG_INFO("event=drain_requested worker=%s req=%llu", w->worker_id, (unsigned long long)id);
    sched_load l;
    sched_get_load(w->s, &l);
    Llm__WorkerLoad ld = LLM__WORKER_LOAD__INIT;
    ld.running = (uint32_t)l.running;
    ld.waiting = (uint32_t)l.waiting;
    ld.kv_blocks_used = (uint32_t)l.kv_blocks_used;
    ld.kv_blocks_total = (uint32_t)l.kv_blocks_total;
    ld.kv_blocks_cached = (uint32_t)l.kv_blocks_cached;
    ld.step_ms_ewma = (float)l.step_ms_ewma;
    ld.model = w->model_name;
    ld.tp_size = 1;
    ld.model_fingerprint = w->e->fingerprint;
    ld.block_tokens = MODEL_KV_BLOCK;
    ld.draining = 1;
    Llm__WorkerStatus ws = LLM__WORKER_STATUS__INIT;
    ws.worker_id = w->worker_id;
    ws.address = w->address;
    ws.state = "draining";
    ws.model = w->model_name;
    ws.load = &ld;
    Llm__Envelope r = LLM__ENVELOPE__INIT;
    r.request_id = id;
    r.body_case = LLM__ENVELOPE__BODY_WORKER_STATUS;
    r.worker_status = &ws;
    return wire_pack(&r, &out->buf, &out->len);
}

/* ---- dispatch ------------------------------------------------------------------------ */

static void
count(wserver *w, int kind, bool ok)
{
    metric_counter_add(ok ? w->rpc_ok[kind] : w->rpc_err[kind], 1);
}

static int
body_kind(Llm__Envelope__BodyCase c)
{
    switch (c) {
    case LLM__ENVELOPE__BODY_GENERATE: return KIND_GENERATE;
    case LLM__ENVELOPE__BODY_NEXT: return KIND_NEXT;
    case LLM__ENVELOPE__BODY_CANCEL: return KIND_CANCEL;
    case LLM__ENVELOPE__BODY_HEALTH: return KIND_HEALTH;
    case LLM__ENVELOPE__BODY_STATS: return KIND_STATS;
    case LLM__ENVELOPE__BODY_DRAIN: return KIND_DRAIN;
    default: return KIND_OTHER;
    }
}

/* dispatch answers msg into out, or parks c (when c is not NULL) and returns with
 * *parked set. */
static int
dispatch(wserver *w, const uint8_t *msg, size_t len, wctx *c, reply *out, bool *parked)
{
    char err[256] = "";
    Llm__Envelope *env = NULL;
    *parked = false;
    int rc = wire_decode(msg, len, &env, err, sizeof(err));
    if (rc != LLM_OK) {
        count(w, KIND_OTHER, false);
        LOG_INFO("event=bad_message bytes=%zu err=\"%s\"", len, err);
        return reply_error(out, 0, rc, err);
    }
    uint64_t id = env->request_id;
    int kind = body_kind(env->body_case);
    sched_chunk ch = {0};
    bool ready = false;
    switch (env->body_case) {
    case LLM__ENVELOPE__BODY_GENERATE:
        if (id == 0)
            id = atomic_fetch_add(&w->next_id, 1);
        rc = submit(w, id, env->generate, err, sizeof(err));
        if (rc != LLM_OK)
            break;
        if (c && w->o.first_chunk_wait_ms > 0) {
            c->env_id = id;
            c->park_kind = PARK_ACCEPTED;
            c->w.id = id;
            c->w.after_seq = first_seq(env->generate);
            c->w.deadline_ns = llm_now_ns() + (int64_t)w->o.first_chunk_wait_ms * 1000000;
            rc = sched_read_or_park(w->s, &c->w, &ch, &ready, parked);
            if (rc == LLM_OK && *parked)
                break;
        }
        if (rc == LLM_OK)
            rc = reply_chunk(out, id, &ch, true);
        break;
    case LLM__ENVELOPE__BODY_NEXT: {
        const Llm__NextRequest *nr = env->next;
        if (nr->request_id)
            id = nr->request_id;
        uint32_t wait =
            nr->wait_ms < (uint32_t)w->o.max_wait_ms ? nr->wait_ms : (uint32_t)w->o.max_wait_ms;
        if (c && wait > 0) {
            c->env_id = id;
            c->park_kind = PARK_NEXT;
            c->w.id = id;
            c->w.after_seq = nr->after_seq;
            c->w.deadline_ns = llm_now_ns() + (int64_t)wait * 1000000;
            rc = sched_read_or_park(w->s, &c->w, &ch, &ready, parked);
        } else {
            rc = sched_read(w->s, id, nr->after_seq, &ch, &ready);
        }
        if (rc == LLM_ENOENT)
            llm_errf(err, sizeof(err), "unknown request id %llu", (unsigned long long)id);
        else if (rc == LLM_EINVAL)
            llm_errf(err, sizeof(err), "cursor after_seq=%u is outside the stream", nr->after_seq);
        if (rc == LLM_OK && !*parked)
            rc = reply_chunk(out, id, &ch, false);
        break;
    }
    case LLM__ENVELOPE__BODY_CANCEL:
        if (env->cancel->request_id)
            id = env->cancel->request_id;
        rc = sched_cancel(w->s, id);
        if (rc == LLM_ENOENT) {
            llm_errf(err, sizeof(err), "unknown request id %llu", (unsigned long long)id);
        } else {
            Llm__Envelope r = LLM__ENVELOPE__INIT;
            Llm__Accepted acc = LLM__ACCEPTED__INIT;
            acc.request_id = id;
            r.request_id = id;
            r.body_case = LLM__ENVELOPE__BODY_ACCEPTED;
            r.accepted = &acc;
            rc = wire_pack(&r, &out->buf, &out->len);
        }
        break;
    case LLM__ENVELOPE__BODY_HEALTH: {
        sched_load ld;
        sched_get_load(w->s, &ld);
        Llm__Envelope r = LLM__ENVELOPE__INIT;
        Llm__HealthReply hr = LLM__HEALTH_REPLY__INIT;
        hr.ready = !ld.draining;
        hr.state = ld.draining ? "draining" : "ready";
        r.request_id = id;
        r.body_case = LLM__ENVELOPE__BODY_HEALTH_REPLY;
        r.health_reply = &hr;
        rc = wire_pack(&r, &out->buf, &out->len);
        break;
    }
    case LLM__ENVELOPE__BODY_STATS: {
        char *text = metrics_render(w->reg);
        if (!text) {
            rc = LLM_ENOMEM;
            break;
        }
        Llm__Envelope r = LLM__ENVELOPE__INIT;
        Llm__StatsReply sr = LLM__STATS_REPLY__INIT;
        sr.prometheus_text = text;
        r.request_id = id;
        r.body_case = LLM__ENVELOPE__BODY_STATS_REPLY;
        r.stats_reply = &sr;
        rc = wire_pack(&r, &out->buf, &out->len);
        free(text);
        break;
    }
    case LLM__ENVELOPE__BODY_DRAIN: rc = on_drain(w, id, env->drain, out, err, sizeof(err)); break;
    default:
        llm_errf(err, sizeof(err), "a worker does not answer '%s' messages",
                 wire_body_name(env->body_case));
        rc = LLM_EPROTO;
        break;
    }
    sched_chunk_fini(&ch);
    // The trace of a refused Generate, for its log line (env goes now).
    char trace[64] = "-";
    if (env->body_case == LLM__ENVELOPE__BODY_GENERATE && env->generate->traceparent[0])
        snprintf(trace, sizeof(trace), "%s", env->generate->traceparent);
    wire_free(env);
    count(w, kind, rc == LLM_OK);
    if (rc != LLM_OK) {
        LOG_INFO("event=request_refused req=%llu kind=%s code=%s err=\"%s\" trace=%s",
                 (unsigned long long)id, kind_names[kind], llm_strerror(rc), err, trace);
        return reply_error(out, id, rc, err[0] ? err : NULL);
    }
    return LLM_OK;
}

int
wserver_handle(wserver *w, const uint8_t *msg, size_t len, uint8_t **buf, size_t *buf_len)
{
    reply out = {0};
    bool parked;
    int rc = dispatch(w, msg, len, NULL, &out, &parked);
    *buf = out.buf;
    *buf_len = out.len;
    return rc;
}

/* ---- NNG contexts ---------------------------------------------------------------------- */

/* park_wake runs on the scheduler thread: the stream has news, or the wait is over. */
static void
park_wake(sched_waiter *sw)
{
    wctx *c = (wctx *)((char *)sw - offsetof(wctx, w));
    sched_chunk ch;
    bool ready;
    reply out = {0};
    int rc = sched_read(c->srv->s, c->w.id, c->w.after_seq, &ch, &ready);
    if (rc == LLM_OK)
        reply_chunk(&out, c->env_id, &ch, c->park_kind == PARK_ACCEPTED);
    else if (c->park_kind == PARK_ACCEPTED && rc == LLM_ENOENT)
        reply_chunk(&out, c->env_id, &(sched_chunk){.seq = c->w.after_seq}, true);
    else
        reply_error(&out, c->env_id, rc, "the stream ended while waiting");
    sched_chunk_fini(&ch);
    rpcsrv_reply(rpcsrv_ctx_of(c), out.buf, out.len);
}

static bool
on_message(void *arg, rpcsrv_ctx *rc, const uint8_t *msg, size_t len, uint8_t **buf,
           size_t *buf_len)
{
    wctx *c = rpcsrv_ctx_data(rc);
    c->srv = arg;
    c->w.wake = park_wake;
    reply out = {0};
    bool parked = false;
    dispatch(c->srv, msg, len, c, &out, &parked);
    *buf = out.buf;
    *buf_len = out.len;
    return parked; // park_wake replies
}

/* ---- lifecycle ------------------------------------------------------------------------ */

int
wserver_new(sched *s, engine *e, metrics *reg, const wserver_opts *o, wserver **out, char *err,
            size_t err_len)
{
    if (o->contexts < 1 || o->max_wait_ms < 0 || o->first_chunk_wait_ms < 0 ||
        o->max_prompt_bytes < 1) {
        llm_errf(err, err_len, "server: contexts and max prompt bytes must be positive");
        return LLM_EINVAL;
    }
    wserver *w = calloc(1, sizeof(*w));
    if (!w)
        return LLM_ENOMEM;
    w->s = s;
    w->e = e;
    w->reg = reg;
    w->o = *o;
    w->model_name = strdup(o->model_name ? o->model_name : "");
    w->worker_id = strdup(o->worker_id ? o->worker_id : "");
    w->address = strdup(o->address ? o->address : o->listen ? o->listen : "");
    if (!w->model_name || !w->worker_id || !w->address) {
        wserver_free(w);
        return LLM_ENOMEM;
    }
    // Ids the worker assigns itself live in the upper half, away from callers' ids.
    atomic_init(&w->next_id, (UINT64_C(1) << 63) | (uint64_t)llm_now_ns());
    for (int k = 0; k < N_KINDS; k++) {
        char lb[64];
        snprintf(lb, sizeof(lb), "kind=\"%s\",outcome=\"ok\"", kind_names[k]);
        w->rpc_ok[k] = metrics_counter(reg, "llm_worker_rpc_total", "Messages answered.", lb);
        snprintf(lb, sizeof(lb), "kind=\"%s\",outcome=\"error\"", kind_names[k]);
        w->rpc_err[k] = metrics_counter(reg, "llm_worker_rpc_total", "Messages answered.", lb);
    }
    *out = w;
    return LLM_OK;
}

int
wserver_listen(wserver *w, char *err, size_t err_len)
{
    return rpcsrv_listen(w->o.listen, w->o.contexts, sizeof(wctx), on_message, w, &w->rpc, err,
                         err_len);
}

void
wserver_close(wserver *w)
{
    if (w)
        rpcsrv_close(w->rpc);
}

void
wserver_free(wserver *w)
{
    if (!w)
        return;
    rpcsrv_free(w->rpc);
    free(w->model_name);
    free(w->worker_id);
    free(w->address);
    free(w);
}
