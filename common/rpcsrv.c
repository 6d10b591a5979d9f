/*
 * rpcsrv.c - contexts that receive, hand over, and send: RECV -> handler -> SEND -> RECV,
 * with a detour through the caller's hands when the handler parks.
 */
#include "rpcsrv.h"

#include "llm_err.h"
#include "log.h"
#include "wire.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { RS_RECV, RS_SEND, RS_HANDLING };

struct rpcsrv_ctx {
    rpcsrv *s;
    nng_ctx ctx;
    nng_aio *aio;
    int state;
    alignas(max_align_t) unsigned char data[]; // the caller's ctx_size bytes
};

struct rpcsrv {
    rpcsrv_fn fn;
    void *arg;
    nng_socket sock;
    bool open;
    rpcsrv_ctx **ctxs;
    int n_ctxs;
    // Parked replies come from other threads, maybe while the socket closes; NNG 1.5.2
    // aborts when a context call overlaps its socket's nng_close (see wcall.c). So a
    // close first shuts this gate and waits for the replies inside it. The way in is two
    // atomics (a reply counts itself in, then looks at closing; the close sets closing,
    // then looks at replying: one of them sees the other); the wait is under gate_mu.
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    atomic_bool closing;
    atomic_int replying;
};

static void
send_reply(rpcsrv_ctx *c, uint8_t *buf, size_t len)
{
    nng_msg *m = NULL;
    if (!buf || nng_msg_alloc(&m, len) != 0) {
        // No memory for the reply: drop it; the client's call times out and it retries.
        free(buf);
        c->state = RS_RECV;
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    memcpy(nng_msg_body(m), buf, len);
    free(buf);
    nng_aio_set_msg(c->aio, m);
    c->state = RS_SEND;
    nng_ctx_send(c->ctx, c->aio);
}

void
rpcsrv_reply(rpcsrv_ctx *c, uint8_t *buf, size_t len)
{
    rpcsrv *s = c->s;
    atomic_fetch_add(&s->replying, 1);
    if (atomic_load(&s->closing))
        free(buf); // never answered, as the contract says of a closing server
    else
        send_reply(c, buf, len);
    if (atomic_fetch_sub(&s->replying, 1) == 1 && atomic_load(&s->closing)) {
        pthread_mutex_lock(&s->gate_mu);
        pthread_cond_broadcast(&s->gate_cv);
        pthread_mutex_unlock(&s->gate_mu);
    }
}

static void
on_aio(void *arg)
{
    rpcsrv_ctx *c = arg;
    int rv = nng_aio_result(c->aio);
    if (c->state == RS_SEND) {
        if (rv != 0)
            nng_msg_free(nng_aio_get_msg(c->aio));
        if (rv == NNG_ECLOSED)
            return;
        c->state = RS_RECV;
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    if (rv != 0) {
        if (rv != NNG_ECLOSED)
            nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    nng_msg *m = nng_aio_get_msg(c->aio);
    uint8_t *reply = NULL;
    size_t len = 0;
    c->state = RS_HANDLING; // before the handler: a parked reply may come before it returns
    bool parked = c->s->fn(c->s->arg, c, nng_msg_body(m), nng_msg_len(m), &reply, &len);
    nng_msg_free(m);
    if (!parked)
        rpcsrv_reply(c, reply, len);
}

int
rpcsrv_listen(const char *url, int n_ctxs, size_t ctx_size, rpcsrv_fn fn, void *arg, rpcsrv **out,
              char *err, size_t err_len)
{
    if (n_ctxs < 1) {
        llm_errf(err, err_len, "a server needs at least one context");
        return LLM_EINVAL;
    }
    rpcsrv *s = calloc(1, sizeof(*s));
    if (!s || !(s->ctxs = calloc((size_t)n_ctxs, sizeof(*s->ctxs)))) {
        free(s);
        return LLM_ENOMEM;
    }
    pthread_mutex_init(&s->gate_mu, NULL);
    pthread_cond_init(&s->gate_cv, NULL);
    s->fn = fn;
    s->arg = arg;
    int rv;
    if ((rv = nng_rep0_open(&s->sock)) != 0) {
        llm_errf(err, err_len, "cannot open a rep socket: %s", nng_strerror(rv));
        rpcsrv_free(s);
        return wire_nng_err(rv);
    }
    s->open = true;
    nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, WIRE_MAX_MESSAGE);
    if ((rv = nng_listen(s->sock, url, NULL, 0)) != 0) {
        llm_errf(err, err_len, "cannot listen on %s: %s", url, nng_strerror(rv));
        rpcsrv_free(s);
        return wire_nng_err(rv);
    }
    for (int i = 0; i < n_ctxs; i++) {
        rpcsrv_ctx *c = calloc(1, sizeof(*c) + ctx_size);
        if (!c) {
            rpcsrv_free(s);
            return LLM_ENOMEM;
        }
        c->s = s;
        if ((rv = nng_aio_alloc(&c->aio, on_aio, c)) != 0 ||
            (rv = nng_ctx_open(&c->ctx, s->sock)) != 0) {
            if (c->aio)
                nng_aio_free(c->aio);
            free(c);
            llm_errf(err, err_len, "cannot open context %d: %s", i, nng_strerror(rv));
            rpcsrv_free(s);
            return wire_nng_err(rv);
        }
        s->ctxs[s->n_ctxs++] = c;
    }
    for (int i = 0; i < s->n_ctxs; i++) {
        s->ctxs[i]->state = RS_RECV;
        nng_ctx_recv(s->ctxs[i]->ctx, s->ctxs[i]->aio);
    }
    LOG_INFO("event=listening url=%s contexts=%d", url, n_ctxs);
    *out = s;
    return LLM_OK;
}

void
rpcsrv_close(rpcsrv *s)
{
    if (!s || !s->open)
        return;
    pthread_mutex_lock(&s->gate_mu);
    atomic_store(&s->closing, true);
    while (atomic_load(&s->replying) > 0)
        pthread_cond_wait(&s->gate_cv, &s->gate_mu);
    pthread_mutex_unlock(&s->gate_mu);
    // Then no callback runs (nor re-arms its context) when the socket closes.
    for (int i = 0; i < s->n_ctxs; i++)
        nng_aio_stop(s->ctxs[i]->aio);
    nng_close(s->sock);
    s->open = false;
}

void
rpcsrv_free(rpcsrv *s)
{
    if (!s)
        return;
    rpcsrv_close(s);
    for (int i = 0; i < s->n_ctxs; i++) {
        nng_ctx_close(s->ctxs[i]->ctx);
        nng_aio_free(s->ctxs[i]->aio);
        free(s->ctxs[i]);
    }
    pthread_cond_destroy(&s->gate_cv);
    pthread_mutex_destroy(&s->gate_mu);
    free(s->ctxs);
    free(s);
}

void *
rpcsrv_ctx_data(rpcsrv_ctx *c)
{
    return c->data;
}

rpcsrv_ctx *
rpcsrv_ctx_of(void *data)
{
    return (rpcsrv_ctx *)((unsigned char *)data - offsetof(rpcsrv_ctx, data));
}

int
rpcsrv_n_ctxs(const rpcsrv *s)
{
    return s ? s->n_ctxs : 0;
}

rpcsrv_ctx *
rpcsrv_ctx_at(rpcsrv *s, int i)
{
    return s->ctxs[i];
}
