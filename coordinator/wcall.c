/*
 * wcall.c - context open, send, receive, close: one call, one callback.
 */
#include "wcall.h"

#include "llm_err.h"
#include "wire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { WC_IDLE, WC_SEND, WC_RECV, WC_FAILED };

/* The context gate. NNG 1.5.2 frees a socket while a context call that began before
 * nng_close still holds its context: nni_ctx_rele unlinks the context and wakes the
 * closer before it finalizes the context, and the finalizer then locks the freed
 * socket's mutex (abort: "pthread_mutex_lock: Invalid argument"). Any nng_ctx_* call
 * can be that one (the receive a callback starts after its send, a close, a send).
 * So no context call runs while a socket closes: calls count themselves in `users`,
 * a close waits for users to leave and keeps new ones out while `closers` > 0.
 * A call never waits at the gate, though (NNG's threads must stay free while a socket
 * closes: the close waits for work on them): it is queued, and the last closer runs
 * the queue once its close is done. A queued call on a socket that closed meanwhile
 * fails with ECLOSED through its aio, as it would have under NNG alone.
 *
 * The way in is two atomics, no lock (a lock taken by every call of every NNG thread
 * cost the coordinator ~8% of its 1-token request rate at 16 streams): a call counts
 * itself in, then looks for closers; a closer counts itself in, then looks for users.
 * Both sequentially consistent, so at least one of them sees the other and backs off.
 * The queue, the closers' wait and the wcalls' gate fields are under gate_mu. */
typedef enum { OP_START, OP_RECV, OP_CLOSE } op_kind;

typedef struct op {
    struct op *next;
    op_kind kind;
    wcall *c;    // OP_START, OP_RECV
    nng_ctx ctx; // OP_CLOSE
} op;

static atomic_int closers, users;
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static op *queued; // calls held back by a close, newest first

struct wcall {
    wcall_fn done;
    void *arg;
    nng_aio *aio;
    nng_socket sock;
    nng_ctx ctx;
    bool ctx_open;
    int state;
    int fail_rc; // WC_FAILED: why the call could not start
    // The gate's (under gate_mu): the call's own queue entry (a call has at most one
    // start or receive pending), whether it is queued or being run by a closer, and
    // whether wcall_free has begun.
    op pending;
    bool is_queued, is_running, freeing;
};

static void
fail_start(wcall *c, int rc)
{
    // Reported through the aio, so the callback never runs inside wcall_start's caller
    // (which may hold the locks the callback takes).
    c->state = WC_FAILED;
    c->fail_rc = rc;
    nng_sleep_aio(0, c->aio);
}

static void
run_op(op_kind kind, wcall *c, nng_ctx ctx)
{
    int rv;
    switch (kind) {
    case OP_START:
        if ((rv = nng_ctx_open(&c->ctx, c->sock)) != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
            nng_aio_set_msg(c->aio, NULL);
            fail_start(c, wire_nng_err(rv));
            return;
        }
        c->ctx_open = true;
        c->state = WC_SEND;
        nng_ctx_send(c->ctx, c->aio);
        return;
    case OP_RECV: nng_ctx_recv(c->ctx, c->aio); return;
    case OP_CLOSE: nng_ctx_close(ctx); return;
    }
}

/* queue_locked holds a call back until the closes under way are done. A wcall being
 * freed gets no more calls: its start is dropped, its receive becomes a close. */
static void
queue_locked(op_kind kind, wcall *c, nng_ctx ctx)
{
    op *o;
    if (c && c->freeing) {
        if (kind == OP_START)
            return; // wcall_free frees the request
        kind = OP_CLOSE;
        ctx = c->ctx;
        c->ctx_open = false; // closed here, not again by wcall_free
        c = NULL;
    }
    if (c) {
        o = &c->pending;
        c->is_queued = true;
    } else if (!(o = malloc(sizeof(*o)))) {
        return; // a close without memory: the context stays open until its socket closes
    }
    *o = (op){.next = queued, .kind = kind, .c = c, .ctx = ctx};
    queued = o;
}

/* user_leave counts a call out, waking a closer that waits for the last one. */
static void
user_leave(void)
{
    if (atomic_fetch_sub(&users, 1) == 1 && atomic_load(&closers) > 0) {
        pthread_mutex_lock(&gate_mu);
        pthread_cond_broadcast(&gate_cv);
        pthread_mutex_unlock(&gate_mu);
    }
}

/* ctx_call runs one context call now, or queues it while a socket closes. */
static void
ctx_call(op_kind kind, wcall *c, nng_ctx ctx)
{
    for (;;) {
        atomic_fetch_add(&users, 1);
        if (atomic_load(&closers) == 0) {
            run_op(kind, c, ctx);
            user_leave();
            return;
        }
        user_leave(); // a close is coming or under way: queue behind it
        pthread_mutex_lock(&gate_mu);
        if (atomic_load(&closers) > 0) {
            queue_locked(kind, c, ctx);
            pthread_mutex_unlock(&gate_mu);
            return;
        }
        pthread_mutex_unlock(&gate_mu); // it ended (and ran its queue) meanwhile: go again
    }
}

/* run_queued_locked runs the held-back calls while no close is under way; a close
 * that starts meanwhile (it counts itself in under gate_mu, so not between a pop and
 * the count of its call) leaves the rest to its own closer. */
static void
run_queued_locked(void)
{
    while (atomic_load(&closers) == 0 && queued) {
        op *o = queued;
        queued = o->next;
        wcall *c = o->c;
        if (c) {
            c->is_queued = false;
            c->is_running = true;
        }
        atomic_fetch_add(&users, 1);
        pthread_mutex_unlock(&gate_mu);
        run_op(o->kind, c, o->ctx);
        if (!c)
            free(o);
        user_leave();
        pthread_mutex_lock(&gate_mu);
        if (c)
            c->is_running = false;
        pthread_cond_broadcast(&gate_cv); // a wcall_free waiting for c
    }
}

void
wcall_close_socket(nng_socket s)
{
    pthread_mutex_lock(&gate_mu);
    atomic_fetch_add(&closers, 1);
    while (atomic_load(&users) > 0)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    nng_close(s); // every call in flight on it ends with ECLOSED
    pthread_mutex_lock(&gate_mu);
    atomic_fetch_sub(&closers, 1);
    run_queued_locked();
    pthread_mutex_unlock(&gate_mu);
}

static void
finish(wcall *c, int rc, Llm__Envelope *reply)
{
    if (c->ctx_open)
        ctx_call(OP_CLOSE, NULL, c->ctx);
    c->ctx_open = false;
    c->state = WC_IDLE;
    c->done(c->arg, rc, reply);
}

static void
on_aio(void *arg)
{
    wcall *c = arg;
    int rv = nng_aio_result(c->aio);
    // The socket's close closed the context too: nothing left to close.
    if (rv == NNG_ECLOSED)
        c->ctx_open = false;
    if (c->state == WC_FAILED) {
        finish(c, c->fail_rc, NULL);
        return;
    }
    if (c->state == WC_SEND) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
            nng_aio_set_msg(c->aio, NULL);
            finish(c, wire_nng_err(rv), NULL);
            return;
        }
        c->state = WC_RECV;
        ctx_call(OP_RECV, c, c->ctx);
        return;
    }
    if (rv != 0) {
        finish(c, wire_nng_err(rv), NULL);
        return;
    }
    nng_msg *m = nng_aio_get_msg(c->aio);
    nng_aio_set_msg(c->aio, NULL);
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
    // Take the call out of the gate first: a closer must not run it on freed memory.
    pthread_mutex_lock(&gate_mu);
    c->freeing = true;
    if (c->is_queued) {
        op **p = &queued;
        while (*p != &c->pending)
            p = &(*p)->next;
        *p = c->pending.next;
        c->is_queued = false;
        queue_locked(c->pending.kind, c, c->ctx); // freeing: dropped, or a close
    }
    while (c->is_running)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    nng_aio_stop(c->aio);
    // A call its callback started as the aio stopped never ran: its request and context.
    nng_msg_free(nng_aio_get_msg(c->aio));
    if (c->ctx_open)
        ctx_call(OP_CLOSE, NULL, c->ctx);
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
    if (rc == LLM_OK)
        memcpy(nng_msg_body(m), buf, len);
    free(buf);
    if (rc != LLM_OK) {
        fail_start(c, rc);
        return;
    }
    c->sock = sock;
    nng_aio_set_timeout(c->aio, timeout_ms);
    nng_aio_set_msg(c->aio, m);
    ctx_call(OP_START, c, c->ctx);
}

void
wcall_abort(wcall *c)
{
    nng_aio_abort(c->aio, NNG_ECANCELED);
}
