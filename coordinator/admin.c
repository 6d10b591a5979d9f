/*
 * admin.c - ListModels, ClusterStatus and Drain from the registry's records.
 */
#include "admin.h"

#include "llm_err.h"
#include "log.h"
#include "wire.h"

#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
pack(Llm__Envelope *env, uint64_t id, uint8_t **buf, size_t *len)
{
    env->request_id = id;
    return wire_pack(env, buf, len);
}

static void
fill_models(registry *reg, Llm__ModelInfo *mis, Llm__ModelInfo **mps, reg_model_info *infos, int n)
{
    for (int i = 0; i < n; i++) {
        llm__model_info__init(&mis[i]);
        if (reg_get_model(reg, i, &infos[i]) != LLM_OK)
            memset(&infos[i], 0, sizeof(infos[i]));
        mis[i].name = infos[i].name;
        mis[i].policy = (char *)route_policy_name(infos[i].policy);
        mis[i].workers_ready = (uint32_t)infos[i].workers_ready;
        mis[i].workers_total = (uint32_t)infos[i].workers_total;
        mps[i] = &mis[i];
    }
}

int
admin_list_models(registry *reg, uint64_t id, uint8_t **buf, size_t *len)
{
    int n = reg_n_models(reg);
    Llm__ModelInfo *mis = calloc((size_t)n + 1, sizeof(*mis));
    Llm__ModelInfo **mps = calloc((size_t)n + 1, sizeof(*mps));
    reg_model_info *infos = calloc((size_t)n + 1, sizeof(*infos));
    int rc = LLM_ENOMEM;
    if (mis && mps && infos) {
        fill_models(reg, mis, mps, infos, n);
        Llm__Envelope env = LLM__ENVELOPE__INIT;
        Llm__ListModelsReply lr = LLM__LIST_MODELS_REPLY__INIT;
        lr.n_models = (size_t)n;
        lr.models = mps;
        env.body_case = LLM__ENVELOPE__BODY_LIST_MODELS_REPLY;
        env.list_models_reply = &lr;
        rc = pack(&env, id, buf, len);
    }
    free(mis);
    free(mps);
    free(infos);
    return rc;
}

/* worker_status fills ws from a registry copy (strings borrowed from wi). */
static void
worker_status(Llm__WorkerStatus *ws, Llm__WorkerLoad *ld, reg_worker_info *wi)
{
    llm__worker_status__init(ws);
    llm__worker_load__init(ld);
    ws->worker_id = wi->id;
    ws->address = wi->address;
    ws->state = (char *)reg_state_name(wi->state);
    ws->model = wi->model;
    ld->running = (uint32_t)wi->running;
    ld->waiting = (uint32_t)wi->waiting;
    ld->kv_blocks_used = (uint32_t)wi->kv_used;
    ld->kv_blocks_total = (uint32_t)wi->kv_total;
    ld->kv_blocks_cached = (uint32_t)wi->kv_cached;
    ld->step_ms_ewma = (float)wi->step_ms;
    ld->model = wi->model;
    ld->tp_size = (uint32_t)wi->tp_size;
    ld->model_fingerprint = wi->fingerprint;
    ld->block_tokens = (uint32_t)wi->block_tokens;
    ld->draining = wi->state == REG_DRAINING;
    ws->load = ld;
    ws->inflight = (uint32_t)wi->inflight;
    ws->breaker = (char *)reg_breaker_name(wi->breaker);
    ws->heartbeat_age_ms = wi->heartbeat_age_ms > 0 ? (uint64_t)wi->heartbeat_age_ms : 0;
    ws->routed = wi->routed;
    ws->failures = wi->failures;
    ws->is_static = wi->is_static;
}

int
admin_cluster_status(registry *reg, uint64_t requests_active, uint64_t id, uint8_t **buf,
                     size_t *len)
{
    int nw = reg_n_workers(reg), nm = reg_n_models(reg);
    reg_worker_info *wis = calloc((size_t)nw + 1, sizeof(*wis));
    Llm__WorkerStatus *wss = calloc((size_t)nw + 1, sizeof(*wss));
    Llm__WorkerStatus **wps = calloc((size_t)nw + 1, sizeof(*wps));
    Llm__WorkerLoad *lds = calloc((size_t)nw + 1, sizeof(*lds));
    Llm__ModelInfo *mis = calloc((size_t)nm + 1, sizeof(*mis));
    Llm__ModelInfo **mps = calloc((size_t)nm + 1, sizeof(*mps));
    reg_model_info *infos = calloc((size_t)nm + 1, sizeof(*infos));
    int rc = LLM_ENOMEM;
    if (wis && wss && wps && lds && mis && mps && infos) {
        int n = 0;
        for (int i = 0; i < nw; i++) {
            if (reg_get_worker(reg, i, &wis[n]) != LLM_OK)
                continue;
            worker_status(&wss[n], &lds[n], &wis[n]);
            wps[n] = &wss[n];
            n++;
        }
        fill_models(reg, mis, mps, infos, nm);
        Llm__Envelope env = LLM__ENVELOPE__INIT;
        Llm__ClusterStatusReply cs = LLM__CLUSTER_STATUS_REPLY__INIT;
        cs.n_workers = (size_t)n;
        cs.workers = wps;
        cs.n_models = (size_t)nm;
        cs.models = mps;
        cs.requests_active = requests_active;
        env.body_case = LLM__ENVELOPE__BODY_CLUSTER_STATUS_REPLY;
        env.cluster_status_reply = &cs;
        rc = pack(&env, id, buf, len);
    }
    free(wis);
    free(wss);
    free(wps);
    free(lds);
    free(mis);
    free(mps);
    free(infos);
    return rc;
}

int
admin_drain(registry *reg, const char *worker_id, int timeout_ms, reg_worker_info *out, char *err,
            size_t err_len)
{
    char address[REG_MAX_ADDRESS];
    if (reg_drain(reg, worker_id, address) != LLM_OK) {
        llm_errf(err, err_len, "unknown worker '%.64s'", worker_id);
        return LLM_ENOENT;
    }
    nng_socket s;
    int rv = nng_req0_open(&s);
    if (rv == 0) {
        nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms);
        nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms);
        // Non-blocking: an unreachable host costs the send timeout, not a TCP connect timeout.
        if ((rv = nng_dial(s, address, NULL, NNG_FLAG_NONBLOCK)) == 0) {
            Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
            Llm__DrainRequest wdr = LLM__DRAIN_REQUEST__INIT;
            wdr.worker_id = (char *)worker_id;
            env.body_case = LLM__ENVELOPE__BODY_DRAIN;
            env.drain = &wdr;
            if (wire_call(s, &env, &rep, NULL, 0) == LLM_OK)
                rv = rep->body_case == LLM__ENVELOPE__BODY_WORKER_STATUS ? 0 : NNG_EPROTO;
            else
                rv = NNG_ETIMEDOUT;
            wire_free(rep);
        }
        nng_close(s);
    }
    if (rv != 0)
        LOG_WARN("event=drain_not_delivered worker=%s address=%s err=\"%s\"", worker_id, address,
                 nng_strerror(rv));
    else
        LOG_INFO("event=drain worker=%s", worker_id);
    // Routing stopped either way; the reply says what the registry now holds.
    int i = reg_find_worker(reg, worker_id);
    if (i < 0 || reg_get_worker(reg, i, out) != LLM_OK) {
        llm_errf(err, err_len, "unknown worker '%.64s'", worker_id);
        return LLM_ENOENT;
    }
    return LLM_OK;
}

int
admin_drain_reply(registry *reg, const char *worker_id, int timeout_ms, uint64_t id, uint8_t **buf,
                  size_t *len, char *err, size_t err_len)
{
    reg_worker_info wi;
    int rc = admin_drain(reg, worker_id, timeout_ms, &wi, err, err_len);
    if (rc != LLM_OK)
        return rc;
    Llm__WorkerStatus ws;
    Llm__WorkerLoad ld;
    worker_status(&ws, &ld, &wi);
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    env.body_case = LLM__ENVELOPE__BODY_WORKER_STATUS;
    env.worker_status = &ws;
    return pack(&env, id, buf, len);
}
