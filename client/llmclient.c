/*
 * llmclient.c - Generate/Next long polling over per-call NNG contexts.
 */
#include "llmclient.h"

#include "llm_err.h"
#include "wire.h"

#include <assert.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct llmc {
    nng_socket sock;
    int timeout_ms;
};

int
llmc_open(const char *url, int timeout_ms, llmc **out, char *err, size_t err_len)
{
    llmc *c = calloc(1, sizeof(*c));
    if (!c)
        return LLM_ENOMEM;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
    int rv = nng_req0_open(&c->sock);
    if (rv == 0) {
        nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, WIRE_MAX_MESSAGE);
        nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 20);
        nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 500);
        // Long polls outlive the default one-minute resend; never resend on our own.
        nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
        rv = nng_dial(c->sock, url, NULL, NNG_FLAG_NONBLOCK);
    }
    if (rv != 0) {
        llm_errf(err, err_len, "cannot dial %s: %s", url, nng_strerror(rv));
        nng_close(c->sock);
        free(c);
        return wire_nng_err(rv);
    }
    *out = c;
    return LLM_OK;
}

void
llmc_close(llmc *c)
{
    if (!c)
        return;
    nng_close(c->sock);
    free(c);
}

/* call_bytes: one round trip on a fresh context. */
static int
call_bytes(llmc *c, const void *buf, size_t len, int timeout_ms, nng_msg **reply, char *err,
           size_t err_len)
{
    nng_ctx ctx;
    nng_aio *aio = NULL;
    nng_msg *m = NULL;
    int rv;
    if ((rv = nng_msg_alloc(&m, len)) != 0 || (rv = nng_aio_alloc(&aio, NULL, NULL)) != 0 ||
        (rv = nng_ctx_open(&ctx, c->sock)) != 0)
        goto out;
    if (len)
        memcpy(nng_msg_body(m), buf, len);
    nng_aio_set_timeout(aio, timeout_ms);
    nng_aio_set_msg(aio, m);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) == 0) {
        m = NULL; // sent: NNG owns it now
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        if ((rv = nng_aio_result(aio)) == 0)
            *reply = nng_aio_get_msg(aio);
    }
    nng_ctx_close(ctx);
out:
    if (m)
        nng_msg_free(m);
    if (aio)
        nng_aio_free(aio);
    if (rv != 0)
        llm_errf(err, err_len, "rpc: %s", nng_strerror(rv));
    return wire_nng_err(rv);
}

static int
call(llmc *c, Llm__Envelope *req, int timeout_ms, Llm__Envelope **reply, char *err, size_t err_len)
{
    uint8_t *buf;
    size_t len;
    nng_msg *m = NULL;
    int rc = wire_pack(req, &buf, &len);
    if (rc != LLM_OK)
        return rc;
    rc = call_bytes(c, buf, len, timeout_ms, &m, err, err_len);
    free(buf);
    if (rc != LLM_OK)
        return rc;
    rc = wire_decode(nng_msg_body(m), nng_msg_len(m), reply, err, err_len);
    nng_msg_free(m);
    if (rc == LLM_OK && (*reply)->body_case == LLM__ENVELOPE__BODY_ERROR) {
        rc = (*reply)->error->code ? (int)(*reply)->error->code : LLM_EPROTO;
        llm_errf(err, err_len, "%s", (*reply)->error->message);
    }
    return rc;
}

int
llmc_call_raw(llmc *c, const void *buf, size_t len, void **reply, size_t *reply_len, char *err,
              size_t err_len)
{
    nng_msg *m = NULL;
    int rc = call_bytes(c, buf, len, c->timeout_ms, &m, err, err_len);
    if (rc != LLM_OK)
        return rc;
    *reply_len = nng_msg_len(m);
    *reply = malloc(*reply_len ? *reply_len : 1);
    if (*reply)
        memcpy(*reply, nng_msg_body(m), *reply_len);
    nng_msg_free(m);
    return *reply ? LLM_OK : LLM_ENOMEM;
}

static int
deliver(const Llm__TokenChunk *ch, llmc_chunk_fn cb, void *ctx, uint32_t *cursor, llmc_result *out)
{
    if (ch->seq != *cursor)
        return LLM_EPROTO; // the server answered for another cursor
    int stop = 0;
    if (cb && (ch->n_token_ids > 0 || ch->text[0]))
        stop = cb(ctx, ch->seq, ch->token_ids, (int)ch->n_token_ids, ch->text, strlen(ch->text));
    *cursor += (uint32_t)ch->n_token_ids;
    if (ch->finish_reason != LLM__FINISH_REASON__FINISH_NONE) {
        out->finish = (int)ch->finish_reason;
        if (ch->usage) {
            out->prompt_tokens = ch->usage->prompt_tokens;
            out->completion_tokens = ch->usage->completion_tokens;
            out->cached_tokens = ch->usage->cached_tokens;
        }
    }
    return stop ? LLM_ECANCELED : LLM_OK;
}

int
llmc_generate(llmc *c, const llmc_request *r, llmc_chunk_fn cb, void *ctx, llmc_result *out,
              char *err, size_t err_len)
{
    memset(out, 0, sizeof(*out));
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__GenerateRequest g = LLM__GENERATE_REQUEST__INIT;
    Llm__Sampling s = LLM__SAMPLING__INIT;
    Llm__ChatList cl = LLM__CHAT_LIST__INIT;
    Llm__TokenList tl = LLM__TOKEN_LIST__INIT, rl = LLM__TOKEN_LIST__INIT;
    Llm__ChatMessage *msgs = NULL, **mp = NULL;
    g.model = (char *)(r->model ? r->model : "");
    if (r->messages) {
        msgs = calloc((size_t)r->n_messages + 1, sizeof(*msgs));
        mp = calloc((size_t)r->n_messages + 1, sizeof(*mp));
        if (!msgs || !mp) {
            free(msgs);
            free(mp);
            return LLM_ENOMEM;
        }
        for (int i = 0; i < r->n_messages; i++) {
            llm__chat_message__init(&msgs[i]);
            msgs[i].role = (char *)r->messages[i].role;
            msgs[i].content = (char *)r->messages[i].content;
            mp[i] = &msgs[i];
        }
        cl.n_messages = (size_t)r->n_messages;
        cl.messages = mp;
        g.input_case = LLM__GENERATE_REQUEST__INPUT_MESSAGES;
        g.messages = &cl;
    } else if (r->prompt_ids) {
        tl.n_ids = (size_t)r->n_prompt_ids;
        tl.ids = (int32_t *)r->prompt_ids;
        g.input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT_IDS;
        g.prompt_ids = &tl;
    } else if (r->prompt) {
        g.input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT;
        g.prompt = (char *)r->prompt;
    }
    s.temperature = r->temperature;
    s.top_p = r->top_p;
    s.top_k = r->top_k > 0 ? (uint32_t)r->top_k : 0;
    s.seed = r->seed;
    s.max_tokens = r->max_tokens > 0 ? (uint32_t)r->max_tokens : 0;
    s.n_stop = (size_t)r->n_stop;
    s.stop = (char **)r->stop;
    g.sampling = &s;
    g.tier = (Llm__SlaTier)r->tier;
    g.deadline_unix_ms = r->deadline_unix_ms;
    g.traceparent = (char *)(r->traceparent ? r->traceparent : "");
    g.resume_from_seq = r->resume_from_seq;
    if (r->resume_ids && r->n_resume_ids > 0) {
        rl.n_ids = (size_t)r->n_resume_ids;
        rl.ids = (int32_t *)r->resume_ids;
        g.resume_ids = &rl;
    }
    env.request_id = r->request_id;
    env.body_case = LLM__ENVELOPE__BODY_GENERATE;
    env.generate = &g;

    Llm__Envelope *rep = NULL;
    int rc = call(c, &env, c->timeout_ms, &rep, err, err_len);
    free(msgs);
    free(mp);
    if (rc != LLM_OK) {
        if (rep && rep->body_case == LLM__ENVELOPE__BODY_ERROR)
            out->error_code = rc;
        wire_free(rep);
        return rc;
    }
    if (rep->body_case != LLM__ENVELOPE__BODY_ACCEPTED) {
        wire_free(rep);
        llm_errf(err, err_len, "unexpected reply to generate");
        return LLM_EPROTO;
    }
    uint64_t id = rep->accepted->request_id;
    out->request_id = id;
    // The new tokens start after what the client already holds.
    uint32_t cursor = g.resume_ids ? (uint32_t)r->n_resume_ids : r->resume_from_seq;
    if (rep->accepted->first)
        rc = deliver(rep->accepted->first, cb, ctx, &cursor, out);
    wire_free(rep);
    int wait = r->poll_wait_ms > 0 ? r->poll_wait_ms : 10000;
    while (rc == LLM_OK && out->finish == 0) {
        Llm__Envelope ne = LLM__ENVELOPE__INIT;
        Llm__NextRequest nr = LLM__NEXT_REQUEST__INIT;
        nr.request_id = id;
        nr.after_seq = cursor;
        nr.wait_ms = (uint32_t)wait;
        ne.request_id = id;
        ne.body_case = LLM__ENVELOPE__BODY_NEXT;
        ne.next = &nr;
        rc = call(c, &ne, wait + c->timeout_ms, &rep, err, err_len);
        if (rc == LLM_OK && rep->body_case != LLM__ENVELOPE__BODY_CHUNK) {
            llm_errf(err, err_len, "unexpected reply to next");
            rc = LLM_EPROTO;
        }
        if (rc == LLM_OK)
            rc = deliver(rep->chunk, cb, ctx, &cursor, out);
        else if (rep && rep->body_case == LLM__ENVELOPE__BODY_ERROR)
            out->error_code = rc;
        wire_free(rep);
        rep = NULL;
    }
    if (rc == LLM_ECANCELED) {
        llmc_cancel(c, id, NULL, 0);
        out->finish = LLM__FINISH_REASON__FINISH_CANCELED;
        rc = LLM_OK;
    }
    return rc;
}

int
llmc_cancel(llmc *c, uint64_t request_id, char *err, size_t err_len)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
    Llm__CancelRequest cr = LLM__CANCEL_REQUEST__INIT;
    cr.request_id = request_id;
    env.request_id = request_id;
    env.body_case = LLM__ENVELOPE__BODY_CANCEL;
    env.cancel = &cr;
    int rc = call(c, &env, c->timeout_ms, &rep, err, err_len);
    wire_free(rep);
    return rc;
}

int
llmc_health(llmc *c, bool *ready, char *state, size_t state_len, char *err, size_t err_len)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
    Llm__HealthRequest hr = LLM__HEALTH_REQUEST__INIT;
    env.body_case = LLM__ENVELOPE__BODY_HEALTH;
    env.health = &hr;
    int rc = call(c, &env, c->timeout_ms, &rep, err, err_len);
    if (rc == LLM_OK && rep->body_case != LLM__ENVELOPE__BODY_HEALTH_REPLY)
        rc = LLM_EPROTO;
    if (rc == LLM_OK) {
        *ready = rep->health_reply->ready;
        if (state && state_len)
            snprintf(state, state_len, "%s", rep->health_reply->state);
    }
    wire_free(rep);
    return rc;
}

int
llmc_stats(llmc *c, char **text, char *err, size_t err_len)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
    Llm__StatsRequest sr = LLM__STATS_REQUEST__INIT;
    env.body_case = LLM__ENVELOPE__BODY_STATS;
    env.stats = &sr;
    int rc = call(c, &env, c->timeout_ms, &rep, err, err_len);
    if (rc == LLM_OK && rep->body_case != LLM__ENVELOPE__BODY_STATS_REPLY)
        rc = LLM_EPROTO;
    if (rc == LLM_OK) {
        *text = strdup(rep->stats_reply->prometheus_text);
        if (!*text)
            rc = LLM_ENOMEM;
    }
    wire_free(rep);
    return rc;
}

const char *
llmc_finish_name(int f)
{
    static const char *const names[] = {"none", "stop", "length", "canceled", "deadline_exceeded",
                                        "error"};
    return f >= 0 && f < 6 ? names[f] : "unknown";
}

/* ---- coordinator RPC: models, cluster status, drain ------------------------------------- */

/* call_expect: one round trip whose reply must be a `want` body (an Error reply is an error). */
static int
call_expect(llmc *c, Llm__Envelope *req, Llm__Envelope__BodyCase want, Llm__Envelope **reply,
            char *err, size_t err_len)
{
    int rc = call(c, req, c->timeout_ms, reply, err, err_len);
    if (rc == LLM_OK && (*reply)->body_case != want) {
        llm_errf(err, err_len, "unexpected reply %s to %s", wire_body_name((*reply)->body_case),
                 wire_body_name(req->body_case));
        rc = LLM_EPROTO;
    }
    if (rc != LLM_OK) {
        wire_free(*reply);
        *reply = NULL;
    }
    return rc;
}

/* model_info_copy fills m from a decoded ModelInfo; LLM_ENOMEM leaves m for the free. */
static int
model_info_copy(const Llm__ModelInfo *src, llmc_model_info *m)
{
    m->name = strdup(src->name ? src->name : "");
    m->policy = strdup(src->policy ? src->policy : "");
    m->workers_ready = src->workers_ready;
    m->workers_total = src->workers_total;
    return m->name && m->policy ? LLM_OK : LLM_ENOMEM;
}

static int
models_copy(Llm__ModelInfo **src, size_t n, llmc_model_info **out)
{
    *out = NULL;
    if (n == 0)
        return LLM_OK;
    llmc_model_info *m = calloc(n, sizeof(*m));
    if (!m)
        return LLM_ENOMEM;
    *out = m; // freed by the caller's free function, even half-filled
    for (size_t i = 0; i < n; i++) {
        if (model_info_copy(src[i], &m[i]) != LLM_OK)
            return LLM_ENOMEM;
    }
    return LLM_OK;
}

static int
worker_status_copy(const Llm__WorkerStatus *src, llmc_worker_status *w)
{
    memset(w, 0, sizeof(*w));
    w->worker_id = strdup(src->worker_id ? src->worker_id : "");
    w->address = strdup(src->address ? src->address : "");
    w->model = strdup(src->model ? src->model : "");
    w->state = strdup(src->state ? src->state : "");
    w->breaker = strdup(src->breaker ? src->breaker : "");
    if (src->load) {
        const Llm__WorkerLoad *l = src->load;
        w->running = l->running;
        w->waiting = l->waiting;
        w->kv_blocks_used = l->kv_blocks_used;
        w->kv_blocks_cached = l->kv_blocks_cached;
        w->kv_blocks_total = l->kv_blocks_total;
        w->step_ms_ewma = l->step_ms_ewma;
        w->tp_size = l->tp_size;
        w->n_prefix_hashes = (uint32_t)l->n_prefix_hashes;
    }
    w->inflight = src->inflight;
    w->heartbeat_age_ms = src->heartbeat_age_ms;
    w->routed = src->routed;
    w->failures = src->failures;
    w->is_static = src->is_static;
    return w->worker_id && w->address && w->model && w->state && w->breaker ? LLM_OK : LLM_ENOMEM;
}

void
llmc_models_free(llmc_model_info *models, int n_models)
{
    if (!models)
        return;
    for (int i = 0; i < n_models; i++) {
        free(models[i].name);
        free(models[i].policy);
    }
    free(models);
}

int
llmc_list_models(llmc *c, llmc_model_info **models, int *n_models, char *err, size_t err_len)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
    Llm__ListModelsRequest lr = LLM__LIST_MODELS_REQUEST__INIT;
    env.body_case = LLM__ENVELOPE__BODY_LIST_MODELS;
    env.list_models = &lr;
    *models = NULL;
    *n_models = 0;
    int rc = call_expect(c, &env, LLM__ENVELOPE__BODY_LIST_MODELS_REPLY, &rep, err, err_len);
    if (rc != LLM_OK)
        return rc;
    size_t n = rep->list_models_reply->n_models;
    llmc_model_info *m = NULL;
    rc = models_copy(rep->list_models_reply->models, n, &m);
    wire_free(rep);
    if (rc != LLM_OK) {
        llmc_models_free(m, (int)n);
        llm_errf(err, err_len, "list_models: %s", llm_strerror(rc));
        return rc;
    }
    *models = m;
    *n_models = (int)n;
    return LLM_OK;
}

void
llmc_worker_status_fini(llmc_worker_status *w)
{
    if (!w)
        return;
    free(w->worker_id);
    free(w->address);
    free(w->model);
    free(w->state);
    free(w->breaker);
    memset(w, 0, sizeof(*w));
}

void
llmc_cluster_info_free(llmc_cluster_info *s)
{
    if (!s)
        return;
    for (int i = 0; s->workers && i < s->n_workers; i++)
        llmc_worker_status_fini(&s->workers[i]);
    free(s->workers);
    llmc_models_free(s->models, s->n_models);
    free(s);
}

int
llmc_cluster_status(llmc *c, llmc_cluster_info **out, char *err, size_t err_len)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
    Llm__ClusterStatusRequest cr = LLM__CLUSTER_STATUS_REQUEST__INIT;
    env.body_case = LLM__ENVELOPE__BODY_CLUSTER_STATUS;
    env.cluster_status = &cr;
    *out = NULL;
    int rc = call_expect(c, &env, LLM__ENVELOPE__BODY_CLUSTER_STATUS_REPLY, &rep, err, err_len);
    if (rc != LLM_OK)
        return rc;
    const Llm__ClusterStatusReply *r = rep->cluster_status_reply;
    llmc_cluster_info *s = calloc(1, sizeof(*s));
    if (!s) {
        rc = LLM_ENOMEM;
        goto out;
    }
    s->requests_active = r->requests_active;
    if (r->n_workers) {
        if (!(s->workers = calloc(r->n_workers, sizeof(*s->workers)))) {
            rc = LLM_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < r->n_workers; i++) {
            s->n_workers = (int)i + 1; // so the free sees what was filled
            if ((rc = worker_status_copy(r->workers[i], &s->workers[i])) != LLM_OK)
                goto out;
        }
    }
    s->n_models = (int)r->n_models;
    rc = models_copy(r->models, r->n_models, &s->models);
out:
    wire_free(rep);
    if (rc != LLM_OK) {
        llmc_cluster_info_free(s);
        llm_errf(err, err_len, "cluster_status: %s", llm_strerror(rc));
        return rc;
    }
    *out = s;
    return LLM_OK;
}

int
llmc_drain(llmc *c, const char *worker_id, llmc_worker_status *out, char *err, size_t err_len)
{
    assert(worker_id && out);
    Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
    Llm__DrainRequest dr = LLM__DRAIN_REQUEST__INIT;
    dr.worker_id = (char *)worker_id;
    env.body_case = LLM__ENVELOPE__BODY_DRAIN;
    env.drain = &dr;
    memset(out, 0, sizeof(*out));
    int rc = call_expect(c, &env, LLM__ENVELOPE__BODY_WORKER_STATUS, &rep, err, err_len);
    if (rc != LLM_OK)
        return rc;
    rc = worker_status_copy(rep->worker_status, out);
    wire_free(rep);
    if (rc != LLM_OK) {
        llmc_worker_status_fini(out);
        llm_errf(err, err_len, "drain: %s", llm_strerror(rc));
    }
    return rc;
}
