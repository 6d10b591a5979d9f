/*
 * wire.c - Envelope framing and validation.
 */
#include "wire.h"

#include "llm_err.h"
#include "utf8.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int
wire_pack(Llm__Envelope *env, uint8_t **buf, size_t *len)
{
    env->version = WIRE_VERSION;
    size_t n = llm__envelope__get_packed_size(env);
    uint8_t *b = malloc(n ? n : 1);
    if (!b)
        return LLM_ENOMEM;
    llm__envelope__pack(env, b);
    *buf = b;
    *len = n;
    return LLM_OK;
}

/* The sub-message a body case must carry (protobuf-c leaves it NULL when the oneof
 * tag was present with garbage or the peer sent an empty field). */
static const void *
body_ptr(const Llm__Envelope *e)
{
    switch (e->body_case) {
    case LLM__ENVELOPE__BODY_GENERATE: return e->generate;
    case LLM__ENVELOPE__BODY_ACCEPTED: return e->accepted;
    case LLM__ENVELOPE__BODY_NEXT: return e->next;
    case LLM__ENVELOPE__BODY_CHUNK: return e->chunk;
    case LLM__ENVELOPE__BODY_CANCEL: return e->cancel;
    case LLM__ENVELOPE__BODY_ERROR: return e->error;
    case LLM__ENVELOPE__BODY_HEALTH: return e->health;
    case LLM__ENVELOPE__BODY_HEALTH_REPLY: return e->health_reply;
    case LLM__ENVELOPE__BODY_REGISTER: return e->register_;
    case LLM__ENVELOPE__BODY_HEARTBEAT: return e->heartbeat;
    case LLM__ENVELOPE__BODY_DEREGISTER: return e->deregister;
    case LLM__ENVELOPE__BODY_STATS: return e->stats;
    case LLM__ENVELOPE__BODY_STATS_REPLY: return e->stats_reply;
    case LLM__ENVELOPE__BODY_LIST_MODELS: return e->list_models;
    case LLM__ENVELOPE__BODY_LIST_MODELS_REPLY: return e->list_models_reply;
    case LLM__ENVELOPE__BODY_CLUSTER_STATUS: return e->cluster_status;
    case LLM__ENVELOPE__BODY_CLUSTER_STATUS_REPLY: return e->cluster_status_reply;
    case LLM__ENVELOPE__BODY_DRAIN: return e->drain;
    case LLM__ENVELOPE__BODY_WORKER_STATUS: return e->worker_status;
    default: return NULL;
    }
}

const char *
wire_body_name(Llm__Envelope__BodyCase c)
{
    switch (c) {
    case LLM__ENVELOPE__BODY_GENERATE: return "generate";
    case LLM__ENVELOPE__BODY_ACCEPTED: return "accepted";
    case LLM__ENVELOPE__BODY_NEXT: return "next";
    case LLM__ENVELOPE__BODY_CHUNK: return "chunk";
    case LLM__ENVELOPE__BODY_CANCEL: return "cancel";
    case LLM__ENVELOPE__BODY_ERROR: return "error";
    case LLM__ENVELOPE__BODY_HEALTH: return "health";
    case LLM__ENVELOPE__BODY_HEALTH_REPLY: return "health_reply";
    case LLM__ENVELOPE__BODY_REGISTER: return "register";
    case LLM__ENVELOPE__BODY_HEARTBEAT: return "heartbeat";
    case LLM__ENVELOPE__BODY_DEREGISTER: return "deregister";
    case LLM__ENVELOPE__BODY_STATS: return "stats";
    case LLM__ENVELOPE__BODY_STATS_REPLY: return "stats_reply";
    case LLM__ENVELOPE__BODY_LIST_MODELS: return "list_models";
    case LLM__ENVELOPE__BODY_LIST_MODELS_REPLY: return "list_models_reply";
    case LLM__ENVELOPE__BODY_CLUSTER_STATUS: return "cluster_status";
    case LLM__ENVELOPE__BODY_CLUSTER_STATUS_REPLY: return "cluster_status_reply";
    case LLM__ENVELOPE__BODY_DRAIN: return "drain";
    case LLM__ENVELOPE__BODY_WORKER_STATUS: return "worker_status";
    default: return "none";
    }
}

int
wire_decode(const uint8_t *buf, size_t len, Llm__Envelope **out, char *err, size_t err_len)
{
    *out = NULL;
    if (len > WIRE_MAX_MESSAGE) {
        llm_errf(err, err_len, "message of %zu bytes exceeds the %u-byte limit", len,
                 WIRE_MAX_MESSAGE);
        return LLM_ERANGE;
    }
    Llm__Envelope *e = llm__envelope__unpack(NULL, len, buf);
    if (!e) {
        llm_errf(err, err_len, "malformed message: not a protobuf Envelope");
        return LLM_EPROTO;
    }
    if (e->version != WIRE_VERSION) {
        llm_errf(err, err_len, "unsupported envelope version %u (this peer speaks %u)", e->version,
                 WIRE_VERSION);
        wire_free(e);
        return LLM_EPROTO;
    }
    if (!body_ptr(e)) {
        llm_errf(err, err_len, "envelope has no body");
        wire_free(e);
        return LLM_EPROTO;
    }
    *out = e;
    return LLM_OK;
}

void
wire_free(Llm__Envelope *env)
{
    if (env)
        llm__envelope__free_unpacked(env, NULL);
}

int
wire_error_reply(uint64_t request_id, int code, const char *message, uint32_t retry_after_ms,
                 uint8_t **buf, size_t *len)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__Error er = LLM__ERROR__INIT;
    er.code = (uint32_t)code;
    er.message = (char *)(message ? message : llm_strerror(code));
    er.retry_after_ms = retry_after_ms;
    env.request_id = request_id;
    env.body_case = LLM__ENVELOPE__BODY_ERROR;
    env.error = &er;
    return wire_pack(&env, buf, len);
}

int
wire_nng_err(int rv)
{
    switch (rv) {
    case 0: return LLM_OK;
    case NNG_ENOMEM: return LLM_ENOMEM;
    case NNG_ETIMEDOUT: return LLM_ETIMEDOUT;
    case NNG_ECLOSED:
    case NNG_ECONNRESET:
    case NNG_ECONNSHUT: return LLM_ECLOSED;
    case NNG_EINVAL:
    case NNG_EADDRINVAL: return LLM_EINVAL;
    case NNG_EPROTO: return LLM_EPROTO;
    case NNG_EAGAIN:
    case NNG_EBUSY: return LLM_EBUSY;
    case NNG_ECANCELED: return LLM_ECANCELED;
    case NNG_ENOENT: return LLM_ENOENT;
    case NNG_ENOTSUP: return LLM_ENOTSUP;
    case NNG_EMSGSIZE: return LLM_ERANGE;
    default: return LLM_EIO;
    }
}

int
wire_call(nng_socket sock, Llm__Envelope *req, Llm__Envelope **reply, char *err, size_t err_len)
{
    uint8_t *buf;
    size_t len;
    *reply = NULL;
    int rc = wire_pack(req, &buf, &len);
    if (rc != LLM_OK)
        return rc;
    int rv = nng_send(sock, buf, len, 0);
    free(buf);
    if (rv != 0) {
        llm_errf(err, err_len, "send: %s", nng_strerror(rv));
        return wire_nng_err(rv);
    }
    void *in = NULL;
    size_t in_len = 0;
    if ((rv = nng_recv(sock, &in, &in_len, NNG_FLAG_ALLOC)) != 0) {
        llm_errf(err, err_len, "receive: %s", nng_strerror(rv));
        return wire_nng_err(rv);
    }
    rc = wire_decode(in, in_len, reply, err, err_len);
    nng_free(in, in_len);
    return rc;
}

static bool
role_ok(const char *r)
{
    return r && (!strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant"));
}

int
wire_check_text_input(const Llm__GenerateRequest *g, size_t max_bytes, char *err, size_t err_len)
{
    size_t bytes = 0;
    if (g->input_case == LLM__GENERATE_REQUEST__INPUT_PROMPT) {
        bytes = strlen(g->prompt);
        if (bytes <= max_bytes && !utf8_valid(g->prompt, bytes, NULL)) {
            llm_errf(err, err_len, "the prompt is not valid UTF-8");
            return LLM_EINVAL;
        }
    } else if (g->input_case == LLM__GENERATE_REQUEST__INPUT_MESSAGES) {
        const Llm__ChatList *cl = g->messages;
        if (!cl || cl->n_messages == 0) {
            llm_errf(err, err_len, "messages is empty");
            return LLM_EINVAL;
        }
        for (size_t i = 0; i < cl->n_messages; i++) {
            const Llm__ChatMessage *m = cl->messages[i];
            if (!m || !role_ok(m->role)) {
                llm_errf(err, err_len, "message %zu: role must be system, user or assistant", i);
                return LLM_EINVAL;
            }
            if (!utf8_valid(m->content, strlen(m->content), NULL)) {
                llm_errf(err, err_len, "message %zu: content is not valid UTF-8", i);
                return LLM_EINVAL;
            }
            bytes += strlen(m->content) + 16;
        }
    }
    if (bytes > max_bytes) {
        llm_errf(err, err_len, "the prompt is larger than %zu bytes", max_bytes);
        return LLM_ERANGE;
    }
    return LLM_OK;
}
