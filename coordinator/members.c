/*
 * members.c - Register / Heartbeat / Deregister in, Accepted or Error out.
 */
#include "members.h"

#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "rpcsrv.h"
#include "wire.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct members {
    registry *r;
    rpcsrv *rpc;
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

static bool
on_message(void *arg, rpcsrv_ctx *c, const uint8_t *msg, size_t len, uint8_t **reply,
           size_t *reply_len)
{
    (void)c;
    members_handle(arg, msg, len, reply, reply_len);
    return false;
}

int
members_listen(registry *r, metrics *reg, const char *url, int n_ctxs, members **out, char *err,
               size_t err_len)
{
    members *m = calloc(1, sizeof(*m));
    if (!m)
        return LLM_ENOMEM;
    m->r = r;
    if (reg) {
        m->ok = metrics_counter(reg, "llm_coord_membership_total", "Membership messages.",
                                "outcome=\"ok\"");
        m->refused = metrics_counter(reg, "llm_coord_membership_total", "Membership messages.",
                                     "outcome=\"refused\"");
    }
    int rc = rpcsrv_listen(url, n_ctxs, 0, on_message, m, &m->rpc, err, err_len);
    if (rc != LLM_OK) {
        free(m);
        return rc;
    }
    *out = m;
    return LLM_OK;
}

void
members_free(members *m)
{
    if (!m)
        return;
    rpcsrv_free(m->rpc);
    free(m);
}
