/*
 * announce.c - Register / Heartbeat / Deregister over a req0 socket.
 */
#include "announce.h"

#include "llm_err.h"
#include "log.h"
#include "wire.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct announcer {
    sched *s;
    engine *e;
    announce_opts o;
    char *worker_id, *address, *model_name;
    nng_socket sock;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    uint64_t *hashes;
};

/* fill_load builds the WorkerLoad of this moment (hashes borrowed from a). */
static void
fill_load(announcer *a, Llm__WorkerLoad *ld)
{
    sched_load l;
    sched_get_load(a->s, &l);
    ld->running = (uint32_t)l.running;
    ld->waiting = (uint32_t)l.waiting;
    ld->kv_blocks_used = (uint32_t)l.kv_blocks_used;
    ld->kv_blocks_total = (uint32_t)l.kv_blocks_total;
    ld->kv_blocks_cached = (uint32_t)l.kv_blocks_cached;
    ld->step_ms_ewma = (float)l.step_ms_ewma;
    ld->model = a->model_name;
    ld->tp_size = (uint32_t)a->o.tp_size;
    ld->model_fingerprint = a->e->fingerprint;
    ld->block_tokens = MODEL_KV_BLOCK;
    ld->draining = l.draining;
    ld->n_prefix_hashes = (size_t)sched_prefix_summary(a->s, a->hashes, a->o.summary_max);
    ld->prefix_hashes = a->hashes;
}

/* send_one sends one membership message; LLM_OK when the coordinator acknowledged. */
static int
send_one(announcer *a, Llm__Envelope__BodyCase kind)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__WorkerLoad ld = LLM__WORKER_LOAD__INIT;
    Llm__Register reg = LLM__REGISTER__INIT;
    Llm__Heartbeat hb = LLM__HEARTBEAT__INIT;
    Llm__Deregister dr = LLM__DEREGISTER__INIT;
    env.body_case = kind;
    if (kind == LLM__ENVELOPE__BODY_REGISTER) {
        fill_load(a, &ld);
        reg.worker_id = a->worker_id;
        reg.address = a->address;
        reg.load = &ld;
        env.register_ = &reg;
    } else if (kind == LLM__ENVELOPE__BODY_HEARTBEAT) {
        fill_load(a, &ld);
        hb.worker_id = a->worker_id;
        hb.load = &ld;
        env.heartbeat = &hb;
    } else {
        dr.worker_id = a->worker_id;
        env.deregister = &dr;
    }
    Llm__Envelope *rep = NULL;
    char err[160] = "";
    int rc = wire_call(a->sock, &env, &rep, err, sizeof(err));
    if (rc == LLM_OK && rep->body_case == LLM__ENVELOPE__BODY_ERROR) {
        rc = rep->error->code ? (int)rep->error->code : LLM_EPROTO;
        snprintf(err, sizeof(err), "%s", rep->error->message);
    }
    wire_free(rep);
    if (rc != LLM_OK)
        LOG_DEBUG("event=announce_failed kind=%s err=\"%s\"", wire_body_name(kind), err);
    return rc;
}

static void *
announce_main(void *arg)
{
    announcer *a = arg;
    bool registered = false;
    pthread_mutex_lock(&a->mu);
    while (!a->stopping) {
        pthread_mutex_unlock(&a->mu);
        Llm__Envelope__BodyCase kind =
            registered ? LLM__ENVELOPE__BODY_HEARTBEAT : LLM__ENVELOPE__BODY_REGISTER;
        bool ok = send_one(a, kind) == LLM_OK;
        if (ok && !registered)
            LOG_INFO("event=registered coordinator=%s worker=%s", a->o.coordinator, a->worker_id);
        registered = ok; // a failure: register again next time
        pthread_mutex_lock(&a->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)(a->o.interval_ms % 1000) * 1000000L;
        ts.tv_sec += a->o.interval_ms / 1000 + ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        while (!a->stopping && pthread_cond_timedwait(&a->cv, &a->mu, &ts) == 0) {
        }
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void
announcer_free(announcer *a)
{
    free(a->worker_id);
    free(a->address);
    free(a->model_name);
    free(a->hashes);
    free(a);
}

int
announce_start(sched *s, engine *e, const announce_opts *o, announcer **out, char *err,
               size_t err_len)
{
    if (o->interval_ms < 10 || o->summary_max < 0) {
        llm_errf(err, err_len, "heartbeat interval must be at least 10 ms");
        return LLM_EINVAL;
    }
    announcer *a = calloc(1, sizeof(*a));
    if (!a)
        return LLM_ENOMEM;
    a->s = s;
    a->e = e;
    a->o = *o;
    a->worker_id = strdup(o->worker_id);
    a->address = strdup(o->address);
    a->model_name = strdup(o->model_name);
    a->hashes = malloc(sizeof(uint64_t) * (size_t)(o->summary_max + 1));
    if (!a->worker_id || !a->address || !a->model_name || !a->hashes) {
        announcer_free(a);
        return LLM_ENOMEM;
    }
    int rv;
    if ((rv = nng_req0_open(&a->sock)) != 0) {
        announcer_free(a);
        llm_errf(err, err_len, "cannot open a req socket: %s", nng_strerror(rv));
        return wire_nng_err(rv);
    }
    nng_duration t = o->interval_ms;
    nng_socket_set_ms(a->sock, NNG_OPT_SENDTIMEO, t);
    nng_socket_set_ms(a->sock, NNG_OPT_RECVTIMEO, t);
    nng_socket_set_ms(a->sock, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(a->sock, NNG_OPT_RECONNMAXT, 1000);
    // Non-blocking dial: the coordinator may come up after us; NNG keeps trying.
    if ((rv = nng_dial(a->sock, o->coordinator, NULL, NNG_FLAG_NONBLOCK)) != 0) {
        nng_close(a->sock);
        announcer_free(a);
        llm_errf(err, err_len, "cannot dial coordinator %s: %s", o->coordinator, nng_strerror(rv));
        return wire_nng_err(rv);
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (pthread_create(&a->thread, NULL, announce_main, a) != 0) {
        nng_close(a->sock);
        announcer_free(a);
        return LLM_ENOMEM;
    }
    *out = a;
    return LLM_OK;
}

void
announce_stop(announcer *a, bool deregister)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    if (deregister && send_one(a, LLM__ENVELOPE__BODY_DEREGISTER) == LLM_OK)
        LOG_INFO("event=deregistered worker=%s", a->worker_id);
    nng_close(a->sock);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    announcer_free(a);
}
