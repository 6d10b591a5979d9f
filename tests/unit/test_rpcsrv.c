/*
 * test_rpcsrv.c - the req/rep server: answers now or parked, and a close while another
 * thread sends parked replies (NNG 1.5.2 aborts when a context call overlaps its
 * socket's nng_close, so rpcsrv_close shuts a gate first: later replies only free).
 *
 * Clients are req sockets on inproc:// URLs; waits are bounded polls.
 */
#include "llm_err.h"
#include "log.h"
#include "rpcsrv.h"

#include <check.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CTXS = 128 };

/* The handler: "now" is answered at once with "re:now"; anything else is parked for
 * the replier thread. */
typedef struct {
    pthread_mutex_t mu;
    rpcsrv_ctx *parked[CTXS];
    int n_parked;
    atomic_bool quit;
    atomic_int replied;
} server_state;

static uint8_t *
dup_bytes(const char *s, size_t *len)
{
    *len = strlen(s);
    uint8_t *b = malloc(*len);
    ck_assert_ptr_nonnull(b);
    memcpy(b, s, *len);
    return b;
}

static bool
handle(void *arg, rpcsrv_ctx *c, const uint8_t *msg, size_t len, uint8_t **reply, size_t *reply_len)
{
    server_state *st = arg;
    if (len == 3 && memcmp(msg, "now", 3) == 0) {
        *reply = dup_bytes("re:now", reply_len);
        return false;
    }
    pthread_mutex_lock(&st->mu);
    st->parked[st->n_parked++] = c; // at most one per context
    pthread_mutex_unlock(&st->mu);
    return true;
}

static void *
replier_main(void *arg)
{
    server_state *st = arg;
    while (!atomic_load(&st->quit)) {
        rpcsrv_ctx *c = NULL;
        pthread_mutex_lock(&st->mu);
        if (st->n_parked > 0)
            c = st->parked[--st->n_parked];
        pthread_mutex_unlock(&st->mu);
        if (!c) {
            nng_msleep(0);
            continue;
        }
        size_t len;
        uint8_t *b = dup_bytes("re:later", &len);
        rpcsrv_reply(c, b, len);
        atomic_fetch_add(&st->replied, 1);
    }
    return NULL;
}

static rpcsrv *
listen_on(const char *url, server_state *st)
{
    rpcsrv *s = NULL;
    char err[256] = "";
    log_set_level(LOG_LEVEL_ERROR);
    ck_assert_msg(rpcsrv_listen(url, CTXS, 0, handle, st, &s, err, sizeof(err)) == LLM_OK, "%s",
                  err);
    return s;
}

static nng_socket
client(const char *url)
{
    nng_socket s;
    ck_assert_int_eq(nng_req0_open(&s), 0);
    ck_assert_int_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 10000), 0);
    ck_assert_int_eq(nng_dial(s, url, NULL, 0), 0);
    return s;
}

static void
call(nng_socket s, const char *req, const char *want)
{
    ck_assert_int_eq(nng_send(s, (void *)req, strlen(req), 0), 0);
    char *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(nng_recv(s, &buf, &len, NNG_FLAG_ALLOC), 0);
    ck_assert_int_eq(len, strlen(want));
    ck_assert(memcmp(buf, want, len) == 0);
    nng_free(buf, len);
}

START_TEST(test_answers_now_and_parked)
{
    server_state st = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpcsrv *srv = listen_on("inproc://rpcsrv-answers", &st);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, replier_main, &st), 0);
    nng_socket s = client("inproc://rpcsrv-answers");
    for (int i = 0; i < 20; i++) {
        call(s, "now", "re:now");
        call(s, "park", "re:later");
    }
    nng_close(s);
    atomic_store(&st.quit, true);
    pthread_join(th, NULL);
    ck_assert_int_eq(atomic_load(&st.replied), 20);
    rpcsrv_free(srv);
}
END_TEST

/* A client context with one request out. */
typedef struct {
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
} asker;

static void
on_ask(void *arg)
{
    asker *a = arg;
    int rv = nng_aio_result(a->aio);
    if (a->sending && rv == 0) {
        a->sending = false;
        nng_ctx_recv(a->ctx, a->aio);
        return;
    }
    nng_msg_free(nng_aio_get_msg(a->aio)); // the reply, or the request that failed
    nng_aio_set_msg(a->aio, NULL);
}

/* Regression: the coordinator's relay and the worker answer parked long polls from
 * their own threads; a shutdown closing the server while such replies are being sent
 * must neither abort nor leak them. Before the close gate, every reply that reached a
 * context rpcsrv_close had stopped leaked its message (LeakSanitizer: every run), and a
 * reply overlapping nng_close could abort in NNG 1.5.2. Every context is parked, then
 * the replier answers them as fast as it can while the server closes (after a few
 * replies, a number that varies by round). The clients send nothing during the close:
 * NNG 1.5.2 sometimes leaks a request whose pipe send races a close, which is not what
 * this is about. */
START_TEST(test_closing_while_parked_replies_are_sent_is_safe)
{
    for (int k = 0; k < 100; k++) {
        char url[64];
        snprintf(url, sizeof(url), "inproc://rpcsrv-close-%d", k);
        server_state st = {.mu = PTHREAD_MUTEX_INITIALIZER};
        rpcsrv *srv = listen_on(url, &st);
        nng_socket cl;
        ck_assert_int_eq(nng_req0_open(&cl), 0);
        ck_assert_int_eq(nng_dial(cl, url, NULL, 0), 0);
        asker a[CTXS];
        for (int i = 0; i < CTXS; i++) {
            a[i] = (asker){.sending = true};
            ck_assert_int_eq(nng_ctx_open(&a[i].ctx, cl), 0);
            ck_assert_int_eq(nng_aio_alloc(&a[i].aio, on_ask, &a[i]), 0);
            nng_msg *m;
            ck_assert_int_eq(nng_msg_alloc(&m, 0), 0);
            ck_assert_int_eq(nng_msg_append(m, "park", 4), 0);
            nng_aio_set_msg(a[i].aio, m);
            nng_ctx_send(a[i].ctx, a[i].aio);
        }
        bool all = false;
        for (int w = 0; w < 10000 && !all; w++) {
            pthread_mutex_lock(&st.mu);
            all = st.n_parked == CTXS;
            pthread_mutex_unlock(&st.mu);
            if (!all)
                nng_msleep(1);
        }
        ck_assert(all);
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, replier_main, &st), 0);
        while (atomic_load(&st.replied) < 4 + k % 16) // closes while most are being answered
            nng_msleep(0);
        rpcsrv_close(srv);
        atomic_store(&st.quit, true);
        pthread_join(th, NULL);
        for (int i = 0; i < CTXS; i++)
            nng_aio_stop(a[i].aio); // no client call left when its socket closes
        nng_close(cl);
        for (int i = 0; i < CTXS; i++)
            nng_aio_free(a[i].aio);
        rpcsrv_free(srv);
    }
}
END_TEST

Suite *rpcsrv_suite(void);

Suite *
rpcsrv_suite(void)
{
    Suite *s = suite_create("rpcsrv");
    TCase *tc = tcase_create("serve");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_answers_now_and_parked);
    tcase_add_test(tc, test_closing_while_parked_replies_are_sent_is_safe);
    suite_add_tcase(s, tc);
    return s;
}
