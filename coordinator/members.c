/*
 * members.c - Register / Heartbeat / Deregister in, Accepted or Error out.
 */
#include "members.h"

#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "wire.h"

#include <nng/protocol/reqrep0/rep.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    members *m;
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
} mctx;

struct members {
    registry *r;
    nng_socket sock;
    bool open;
    mctx *ctxs;
    int n_ctxs;
    metric_counter *ok, *refused;
};

static void
to_load(const Llm__WorkerLoad *l, reg_load *out)
{
    *out = (reg_load){
        .running = (int)(l->running > INT32_MAX ? INT32_MAX : l->running),
        .waiting = (int)(l->waiting > INT32_MAX ? INT32_MAX : l->waiting),
        .kv_used = (int)(l->kv_blocks_used > INT32_MAX ? INT32_MAX : l->kv_blocks_used),
        .kv_total = (int)(l->kv_blocks_total > INT32_MAX ? INT32_MAX : l->kv_blocks_total),
        .kv_cached = (int)(l->kv_blocks_cached > INT32_MAX ? INT32_MAX : l->kv_blocks_cached),
        .step_ms = l->step_ms_ewma == l->step_ms_ewma && l->step_ms_ewma >= 0 ? l->step_ms_ewma : 0,
        .model = l->model,
        .fingerprint = l->model_fingerprint,
        .tp_size = (int)(l->tp_size > 1024 ? 1024 : l->tp_size),
        .block_tokens = (int)(l->block_tokens > 4096 ? 4096 : l->block_tokens),
        .draining = l->draining != 0,
        .hashes = l->prefix_hashes,
        .n_hashes =
            (int)(l->n_prefix_hashes > REG_MAX_HASHES ? REG_MAX_HASHES : l->n_prefix_hashes),
    };
}

int
members_handle(members *m, const uint8_t *msg, size_t len, uint8_t **out, size_t *out_len)
{
    char err[256] = "";
    Llm__Envelope *env = NULL;
    int rc = wire_decode(msg, len, &env, err, sizeof(err));
    uint64_t id = env ? env->request_id : 0;
    const char *who = "-";
    int64_t now = llm_now_ms();
    reg_load ld;
    if (rc == LLM_OK) {
        switch (env->body_case) {
        case LLM__ENVELOPE__BODY_REGISTER:
            who = env->register_->worker_id;
            if (!env->register_->load) {
                llm_errf(err, sizeof(err), "Register without load figures");
                rc = LLM_EINVAL;
                break;
            }
            to_load(env->register_->load, &ld);
            rc = reg_register(m->r, who, env->register_->address, &ld, now, err, sizeof(err));
            break;
        case LLM__ENVELOPE__BODY_HEARTBEAT:
            who = env->heartbeat->worker_id;
            if (!env->heartbeat->load) {
                llm_errf(err, sizeof(err), "Heartbeat without load figures");
                rc = LLM_EINVAL;
                break;
            }
            to_load(env->heartbeat->load, &ld);
            rc = reg_heartbeat(m->r, who, &ld, now, err, sizeof(err));
            break;
        case LLM__ENVELOPE__BODY_DEREGISTER:
            who = env->deregister->worker_id;
            rc = reg_deregister(m->r, who, err, sizeof(err));
            break;
        default:
            llm_errf(err, sizeof(err), "the membership port does not answer '%s' messages",
                     wire_body_name(env->body_case));
            rc = LLM_EPROTO;
            break;
        }
    }
    if (rc != LLM_OK) {
        if (m->refused)
            metric_counter_add(m->refused, 1);
        LOG_WARN("event=membership_refused worker=%.64s code=%s err=\"%s\"", who, llm_strerror(rc),
                 err);
        rc = wire_error_reply(id, rc, err, 0, out, out_len);
    } else {
        if (m->ok)
            metric_counter_add(m->ok, 1);
        Llm__Envelope r = LLM__ENVELOPE__INIT;
        Llm__Accepted acc = LLM__ACCEPTED__INIT;
        r.request_id = id;
        r.body_case = LLM__ENVELOPE__BODY_ACCEPTED;
        r.accepted = &acc;
        rc = wire_pack(&r, out, out_len);
    }
    wire_free(env);
    return rc;
}

static void
ctx_cb(void *arg)
{
    mctx *c = arg;
    int rv = nng_aio_result(c->aio);
    if (c->sending) {
        if (rv != 0)
            nng_msg_free(nng_aio_get_msg(c->aio));
        c->sending = false;
        if (rv != NNG_ECLOSED)
            nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    if (rv != 0) {
        if (rv != NNG_ECLOSED)
            nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    nng_msg *in = nng_aio_get_msg(c->aio);
    uint8_t *buf = NULL;
    size_t len = 0;
    members_handle(c->m, nng_msg_body(in), nng_msg_len(in), &buf, &len);
    nng_msg_free(in);
    nng_msg *out = NULL;
    if (!buf || nng_msg_alloc(&out, len) != 0) {
        free(buf);
        nng_ctx_recv(c->ctx, c->aio); // no memory: no reply; the worker retries
        return;
    }
    memcpy(nng_msg_body(out), buf, len);
    free(buf);
    nng_aio_set_msg(c->aio, out);
    c->sending = true;
    nng_ctx_send(c->ctx, c->aio);
}

int
members_listen(registry *r, metrics *reg, const char *url, int n_ctxs, members **out, char *err,
               size_t err_len)
{
    members *m = calloc(1, sizeof(*m));
    if (!m || !(m->ctxs = calloc((size_t)(n_ctxs > 0 ? n_ctxs : 1), sizeof(mctx)))) {
        free(m);
        return LLM_ENOMEM;
    }
    m->r = r;
    if (reg) {
        m->ok = metrics_counter(reg, "llm_coord_membership_total", "Membership messages.",
                                "outcome=\"ok\"");
        m->refused = metrics_counter(reg, "llm_coord_membership_total", "Membership messages.",
                                     "outcome=\"refused\"");
    }
    int rv;
    if ((rv = nng_rep0_open(&m->sock)) != 0) {
        llm_errf(err, err_len, "cannot open a rep socket: %s", nng_strerror(rv));
        free(m->ctxs);
        free(m);
        return wire_nng_err(rv);
    }
    m->open = true;
    nng_socket_set_size(m->sock, NNG_OPT_RECVMAXSZ, WIRE_MAX_MESSAGE);
    if ((rv = nng_listen(m->sock, url, NULL, 0)) != 0) {
        llm_errf(err, err_len, "cannot listen on %s: %s", url, nng_strerror(rv));
        members_free(m);
        return wire_nng_err(rv);
    }
    for (int i = 0; i < n_ctxs; i++) {
        mctx *c = &m->ctxs[i];
        c->m = m;
        if ((rv = nng_aio_alloc(&c->aio, ctx_cb, c)) != 0 ||
            (rv = nng_ctx_open(&c->ctx, m->sock)) != 0) {
            if (c->aio)
                nng_aio_free(c->aio);
            llm_errf(err, err_len, "cannot open context %d: %s", i, nng_strerror(rv));
            members_free(m);
            return wire_nng_err(rv);
        }
        m->n_ctxs++;
        nng_ctx_recv(c->ctx, c->aio);
    }
    LOG_INFO("event=membership_listening url=%s", url);
    *out = m;
    return LLM_OK;
}

void
members_free(members *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_ctxs; i++)
        nng_aio_stop(m->ctxs[i].aio);
    for (int i = 0; i < m->n_ctxs; i++) {
        nng_ctx_close(m->ctxs[i].ctx);
        nng_aio_free(m->ctxs[i].aio);
    }
    if (m->open)
        nng_close(m->sock);
    free(m->ctxs);
    free(m);
}
