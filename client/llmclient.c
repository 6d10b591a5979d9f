/*
 * llmclient.c - Generate/Next long polling over per-call NNG contexts.
 */
#include "llmclient.h"

#include "llm_err.h"
#include "wire.h"

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
