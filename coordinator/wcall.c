/*
 * wcall.c - context open, send, receive, close: one call, one callback.
 */
#include "wcall.h"

#include "llm_err.h"
#include "wire.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { WC_IDLE, WC_SEND, WC_RECV, WC_FAILED };

/* Closing a context while its socket is being closed makes NNG 1.5.2 abort now and then
 * (both tear the context down). So contexts close under the read side of close_lock and
 * sockets under the write side (wcall_close_socket). A callback never waits for the
 * lock, though (NNG's threads must stay free while a socket closes): when a close is
 * under way it leaves its context in `deferred`, which the closer empties afterwards. */
static pthread_rwlock_t close_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t deferred_mu = PTHREAD_MUTEX_INITIALIZER;
static nng_ctx deferred[4096];
static int n_deferred;

static void
close_ctx(nng_ctx ctx)
{
    if (pthread_rwlock_tryrdlock(&close_lock) == 0) {
        nng_ctx_close(ctx);
        pthread_rwlock_unlock(&close_lock);
        return;
    }
    pthread_mutex_lock(&deferred_mu);
    if (n_deferred < (int)(sizeof(deferred) / sizeof(deferred[0])))
        deferred[n_deferred++] = ctx;
    // else: left to its socket's close (a context per call in flight at that moment)
    pthread_mutex_unlock(&deferred_mu);
}

void
wcall_close_socket(nng_socket s)
{
    pthread_rwlock_wrlock(&close_lock);
    nng_close(s);
    pthread_rwlock_unlock(&close_lock);
    pthread_mutex_lock(&deferred_mu);
    while (n_deferred > 0) {
        nng_ctx ctx = deferred[--n_deferred];
        pthread_mutex_unlock(&deferred_mu);
        close_ctx(ctx); // a context of a closed socket: NNG answers ECLOSED, harmlessly
        pthread_mutex_lock(&deferred_mu);
    }
    pthread_mutex_unlock(&deferred_mu);
}

struct wcall {
    wcall_fn done;
    void *arg;
    nng_aio *aio;
    nng_ctx ctx;
    bool ctx_open;
    int state;
    int fail_rc; // WC_FAILED: why the call could not start
};

static void
finish(wcall *c, int rc, Llm__Envelope *reply)
{
    if (c->ctx_open)
        close_ctx(c->ctx);
    c->ctx_open = false;
    c->state = WC_IDLE;
    c->done(c->arg, rc, reply);
}

static void
on_aio(void *arg)
{
    wcall *c = arg;
    int rv = nng_aio_result(c->aio);
    // The socket's close closed the context too: closing it again races NNG's own
    // teardown (NNG 1.5.2 aborts on a mutex now and then).
    if (rv == NNG_ECLOSED)
        c->ctx_open = false;
    if (c->state == WC_FAILED) {
        finish(c, c->fail_rc, NULL);
        return;
    }
    if (c->state == WC_SEND) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
            finish(c, wire_nng_err(rv), NULL);
            return;
        }
        c->state = WC_RECV;
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    if (rv != 0) {
        finish(c, wire_nng_err(rv), NULL);
        return;
    }
    nng_msg *m = nng_aio_get_msg(c->aio);
    Llm__Envelope *env = NULL;
    int rc = wire_decode(nng_msg_body(m), nng_msg_len(m), &env, NULL, 0);
    nng_msg_free(m);
    finish(c, rc, env);
}

int
wcall_new(wcall_fn done, void *arg, wcall **out)
{
    wcall *c = calloc(1, sizeof(*c));
    if (!c)
        return LLM_ENOMEM;
    c->done = done;
    c->arg = arg;
    if (nng_aio_alloc(&c->aio, on_aio, c) != 0) {
        free(c);
        return LLM_ENOMEM;
    }
    *out = c;
    return LLM_OK;
}

void
wcall_free(wcall *c)
{
    if (!c)
        return;
    nng_aio_stop(c->aio);
    nng_aio_free(c->aio);
    free(c);
}

void
wcall_start(wcall *c, nng_socket sock, Llm__Envelope *env, int timeout_ms)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    nng_msg *m = NULL;
    int rv;
    int rc = wire_pack(env, &buf, &len);
    if (rc == LLM_OK && (rv = nng_msg_alloc(&m, len)) != 0)
        rc = wire_nng_err(rv);
    if (rc == LLM_OK) {
        memcpy(nng_msg_body(m), buf, len);
        if ((rv = nng_ctx_open(&c->ctx, sock)) != 0) {
            rc = wire_nng_err(rv);
            nng_msg_free(m);
        }
    }
    free(buf);
    if (rc != LLM_OK) {
        // Report through the aio as well, so the callback never runs inside the caller
        // (which may hold the locks the callback takes).
        c->state = WC_FAILED;
        c->fail_rc = rc;
        nng_sleep_aio(0, c->aio);
        return;
    }
    c->ctx_open = true;
    nng_aio_set_timeout(c->aio, timeout_ms);
    nng_aio_set_msg(c->aio, m);
    c->state = WC_SEND;
    nng_ctx_send(c->ctx, c->aio);
}

void
wcall_abort(wcall *c)
{
    nng_aio_abort(c->aio, NNG_ECANCELED);
}
