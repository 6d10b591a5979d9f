/*
 * test_http_cli.c - the bench's HTTP client against a tiny in-process server thread on
 * 127.0.0.1 that answers each request with canned bytes: Content-Length, chunked with
 * chunk boundaries inside SSE lines and fields, close-delimited, keep-alive reuse and
 * reconnection, 1xx skipping, and every failure as a clear error code and message:
 * malformed status line and headers, truncated bodies, oversized header blocks and SSE
 * lines, a refused connection, a silent server, a callback that stops the stream.
 */
#define _DEFAULT_SOURCE

#include "http_cli.h"
#include "llm_err.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the canned server ---------------------------------------------------------------- */

#define MAX_REPLIES 4

typedef struct {
    const char *bytes; // sent as is, in one write per part ('\x01' separates parts)
    size_t len;        // 0: strlen(bytes)
    bool close_after;  // close the connection after this reply
    bool silent;       // read the request, then wait for the client to hang up
} reply;

typedef struct {
    int lfd, port;
    pthread_t th;
    reply replies[MAX_REPLIES];
    int n_replies;
    int accepted;
    char first_req[8192];
} server;

/* read_request reads one request (headers and a Content-Length body) into buf; false when
 * the client closed first. */
static bool
read_request(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    char *end = NULL;
    while (!(end = strstr(buf, "\r\n\r\n"))) {
        ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
        if (k <= 0)
            return false;
        n += (size_t)k;
        buf[n] = '\0';
    }
    const char *cl = strstr(buf, "Content-Length: ");
    size_t want = (size_t)(end + 4 - buf) + (cl ? (size_t)atol(cl + 16) : 0);
    while (n < want && n < cap - 1) {
        ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
        if (k <= 0)
            return false;
        n += (size_t)k;
        buf[n] = '\0';
    }
    return true;
}

static void *
server_main(void *arg)
{
    server *s = arg;
    int fd = -1;
    char req[8192];
    for (int i = 0; i < s->n_replies;) {
        if (fd < 0) {
            fd = accept(s->lfd, NULL, NULL);
            if (fd < 0)
                break;
            s->accepted++;
        }
        req[0] = '\0';
        if (!read_request(fd, req, sizeof(req))) {
            close(fd); // the client hung up (or dials again): accept the next connection
            fd = -1;
            continue;
        }
        if (i == 0)
            snprintf(s->first_req, sizeof(s->first_req), "%s", req);
        const reply *r = &s->replies[i++];
        if (r->silent) {
            char b[64];
            while (recv(fd, b, sizeof(b), 0) > 0) {
            }
        } else {
            size_t len = r->len ? r->len : strlen(r->bytes);
            const char *p = r->bytes, *end = p + len;
            while (p < end) { // one send per part, so parts tend to arrive in separate reads
                const char *sep = memchr(p, '\x01', (size_t)(end - p));
                size_t k = sep ? (size_t)(sep - p) : (size_t)(end - p);
                if (k > 0 && send(fd, p, k, MSG_NOSIGNAL) < 0)
                    break;
                p += k + (sep ? 1 : 0);
            }
        }
        if (r->close_after || r->silent) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0) {
        shutdown(fd, SHUT_WR);
        char b[64];
        while (recv(fd, b, sizeof(b), 0) > 0) {
        }
        close(fd);
    }
    return NULL;
}

static void
server_start(server *s)
{
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(s->lfd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(s->lfd, 8), 0);
    socklen_t al = sizeof(a);
    ck_assert_int_eq(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&s->th, NULL, server_main, s), 0);
}

static void
server_join(server *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
}

static httpc *
client_for(const server *s, int timeout_ms)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/", s->port);
    httpc *c = NULL;
    char err[256];
    ck_assert_int_eq(httpc_new(url, timeout_ms, &c, err, sizeof(err)), LLM_OK);
    return c;
}

/* events collected by the callback */
typedef struct {
    int n, stop_after;
    char data[8][256];
    char id[8][32];
} evlog;

static int
on_event(void *ctx, const httpc_event *ev)
{
    evlog *l = ctx;
    ck_assert_uint_eq(strlen(ev->data), ev->data_len);
    ck_assert_uint_gt(ev->t_ns, 0);
    if (l->n < 8) {
        snprintf(l->data[l->n], sizeof(l->data[0]), "%s", ev->data);
        snprintf(l->id[l->n], sizeof(l->id[0]), "%s", ev->id);
    }
    l->n++;
    return l->stop_after > 0 && l->n >= l->stop_after;
}

static int
post(httpc *c, evlog *l, httpc_response *r, char *err, size_t err_len)
{
    const char *hdr[] = {"X-Priority: high"};
    const char *body = "{\"x\":1}";
    return httpc_post(c, "/v1/chat/completions", "sk-test", hdr, 1, body, strlen(body), on_event, l,
                      r, err, err_len);
}

/* run_one serves the replies to one request and returns httpc_post's code. */
static int
run_one(server *s, evlog *l, httpc_response *r, char *err, size_t err_len, int timeout_ms)
{
    server_start(s);
    httpc *c = client_for(s, timeout_ms);
    int rc = post(c, l, r, err, err_len);
    httpc_free(c); // closes the connection, which ends the server thread
    server_join(s);
    return rc;
}

/* ---- bodies --------------------------------------------------------------------------- */

START_TEST(test_content_length_body_is_read_and_request_is_well_formed)
{
    server s = {.n_replies = 1,
                .replies = {{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 11\r\n\r\n{\"ok\":true}"}}};
    evlog l = {0};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(run_one(&s, &l, &r, err, sizeof(err), 5000), LLM_OK);
    ck_assert_int_eq(r.status, 200);
    ck_assert(!r.event_stream);
    ck_assert_str_eq(r.body, "{\"ok\":true}");
    ck_assert_uint_eq(r.body_len, 11);
    ck_assert_int_eq(l.n, 0);
    ck_assert_ptr_nonnull(strstr(s.first_req, "POST /v1/chat/completions HTTP/1.1\r\n"));
    ck_assert_ptr_nonnull(strstr(s.first_req, "Authorization: Bearer sk-test\r\n"));
    ck_assert_ptr_nonnull(strstr(s.first_req, "X-Priority: high\r\n"));
    ck_assert_ptr_nonnull(strstr(s.first_req, "Content-Length: 7\r\n"));
    ck_assert_ptr_nonnull(strstr(s.first_req, "\r\n\r\n{\"x\":1}"));
    httpc_response_fini(&r);
    ck_assert_ptr_null(r.body);
}
END_TEST

START_TEST(test_chunked_sse_with_boundaries_inside_lines_is_put_back_together)
{
    // Chunk boundaries fall inside "data:", inside a JSON value, between CR and LF, and
    // each chunk is its own send; a comment and an event without data are not events.
    server s = {.n_replies = 1,
                .replies = {{"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n"
                             "5\r\ndata:\r\n\x01"
                             "9\r\n {\"a\":1}\n\r\n\x01"
                             "3\r\n\nid\r\n\x01"
                             "d\r\n: 7\r\ndata: x\r\r\n\x01"
                             "24\r\n\ndata: y\r\n\r\n: keep-alive\n\nevent: e\n\n\r\n\x01"
                             "d\r\ndata: [DONE]\n\r\n"
                             "1\r\n\n\r\n"
                             "0\r\nX-Trailer: 1\r\n\r\n"}}};
    evlog l = {0};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(run_one(&s, &l, &r, err, sizeof(err), 5000), LLM_OK);
    ck_assert_msg(err[0] == '\0', "%s", err);
    ck_assert_int_eq(r.status, 200);
    ck_assert(r.event_stream);
    ck_assert_ptr_null(r.body);
    ck_assert_int_eq(l.n, 3);
    ck_assert_int_eq(r.n_events, 3);
    ck_assert_str_eq(l.data[0], "{\"a\":1}");
    ck_assert_str_eq(l.id[0], "");
    ck_assert_str_eq(l.data[1], "x\ny");
    ck_assert_str_eq(l.id[1], "7");
    ck_assert_str_eq(l.data[2], "[DONE]");
    ck_assert_str_eq(l.id[2], "7"); // the last event id stays until a new one
    httpc_response_fini(&r);
}
END_TEST

START_TEST(test_close_delimited_sse_ends_when_the_server_closes)
{
    server s = {.n_replies = 1,
                .replies = {{"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                             "data: a\n\n\x01"
                             "data: b\n\x01\ndata: never finished",
                             0, true}}};
    evlog l = {0};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(run_one(&s, &l, &r, err, sizeof(err), 5000), LLM_OK);
    ck_assert_int_eq(l.n, 2);
    ck_assert_str_eq(l.data[0], "a");
    ck_assert_str_eq(l.data[1], "b");
    httpc_response_fini(&r);
}
END_TEST

START_TEST(test_an_error_status_keeps_its_body_and_1xx_is_skipped)
{
    server s = {.n_replies = 1,
                .replies = {{"HTTP/1.1 100 Continue\r\n\r\n"
                             "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/event-stream\r\n"
                             "Content-Length: 18\r\n\r\ndata: not an event"}}};
    evlog l = {0};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(run_one(&s, &l, &r, err, sizeof(err), 5000), LLM_OK);
    ck_assert_int_eq(r.status, 429);
    ck_assert_int_eq(l.n, 0); // events only for a 2xx
    ck_assert_str_eq(r.body, "data: not an event");
    httpc_response_fini(&r);
}
END_TEST

/* ---- connections ---------------------------------------------------------------------- */

START_TEST(test_keep_alive_reuses_one_connection)
{
    server s = {.n_replies = 2,
                .replies = {{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"},
                            {"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "3\r\nyes\r\n0\r\n\r\n"}}};
    server_start(&s);
    httpc *c = client_for(&s, 5000);
    evlog l = {0};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(post(c, &l, &r, err, sizeof(err)), LLM_OK);
    ck_assert_str_eq(r.body, "hi");
    httpc_response_fini(&r);
    ck_assert_int_eq(post(c, &l, &r, err, sizeof(err)), LLM_OK);
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(r.body, "yes");
    httpc_response_fini(&r);
    httpc_free(c);
    server_join(&s);
    ck_assert_int_eq(s.accepted, 1);
}
END_TEST

START_TEST(test_a_connection_the_server_closed_is_dialled_again)
{
    // The first answer has a length and no "Connection: close", but the server closes
    // anyway: the second request finds a dead connection and goes out on a new one.
    server s = {.n_replies = 2,
                .replies = {{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", 0, true},
                            {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"}}};
    server_start(&s);
    httpc *c = client_for(&s, 5000);
    evlog l = {0};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(post(c, &l, &r, err, sizeof(err)), LLM_OK);
    ck_assert_str_eq(r.body, "a");
    httpc_response_fini(&r);
    int rc = post(c, &l, &r, err, sizeof(err));
    ck_assert_msg(rc == LLM_OK, "rc %d: %s", rc, err);
    ck_assert_str_eq(r.body, "b");
    httpc_response_fini(&r);
    httpc_free(c);
    server_join(&s);
    ck_assert_int_eq(s.accepted, 2);
}
END_TEST

START_TEST(test_connection_close_is_honoured)
{
    server s = {
        .n_replies = 2,
        .replies = {{"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na", 0, true},
                    {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb", 0, true}}};
    server_start(&s);
    httpc *c = client_for(&s, 5000);
    evlog l = {0};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(post(c, &l, &r, err, sizeof(err)), LLM_OK);
    httpc_response_fini(&r);
    ck_assert_int_eq(post(c, &l, &r, err, sizeof(err)), LLM_OK);
    ck_assert_str_eq(r.body, "b");
    httpc_response_fini(&r);
    httpc_free(c);
    server_join(&s);
    ck_assert_int_eq(s.accepted, 2);
}
END_TEST

START_TEST(test_a_refused_connection_is_an_io_error)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t al = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd); // bound, never listening, closed: nothing there
    char url[64], err[256] = "";
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    httpc *c = NULL;
    ck_assert_int_eq(httpc_new(url, 2000, &c, err, sizeof(err)), LLM_OK);
    ck_assert_str_eq(httpc_base_path(c), "");
    httpc_response r;
    evlog l = {0};
    ck_assert_int_eq(post(c, &l, &r, err, sizeof(err)), LLM_EIO);
    ck_assert_msg(strstr(err, "connect") && strstr(err, "refused"), "%s", err);
    httpc_response_fini(&r);
    httpc_free(c);
}
END_TEST

START_TEST(test_a_silent_server_times_out)
{
    server s = {.n_replies = 1, .replies = {{"", 0, false, true}}};
    evlog l = {0};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(run_one(&s, &l, &r, err, sizeof(err), 200), LLM_ETIMEDOUT);
    ck_assert_msg(strstr(err, "timed out"), "%s", err);
    httpc_response_fini(&r);
}
END_TEST

START_TEST(test_urls_are_checked)
{
    httpc *c = (httpc *)1;
    char err[256];
    ck_assert_int_eq(httpc_new("https://x:1", 0, &c, err, sizeof(err)), LLM_EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(err, "http://"));
    ck_assert_int_eq(httpc_new("http://", 0, &c, err, sizeof(err)), LLM_EINVAL);
    ck_assert_int_eq(httpc_new("http://h:0", 0, &c, err, sizeof(err)), LLM_EINVAL);
    ck_assert_int_eq(httpc_new("http://h:65536", 0, &c, err, sizeof(err)), LLM_EINVAL);
    ck_assert_int_eq(httpc_new("http://h:80x", 0, &c, err, sizeof(err)), LLM_EINVAL);
    ck_assert_int_eq(httpc_new("http://h:8000/v1//", 0, &c, err, sizeof(err)), LLM_OK);
    ck_assert_str_eq(httpc_base_path(c), "/v1");
    httpc_free(c);
    ck_assert_int_eq(httpc_new("http://h", 0, &c, err, sizeof(err)), LLM_OK);
    ck_assert_str_eq(httpc_base_path(c), "");
    httpc_free(c);
    httpc_free(NULL);
    httpc_response_fini(NULL);
}
END_TEST

/* ---- malformed answers ---------------------------------------------------------------- */

static void
expect_failure(const char *bytes, size_t len, int want_rc, const char *want_msg)
{
    server s = {.n_replies = 1, .replies = {{bytes, len, true}}};
    evlog l = {0};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(run_one(&s, &l, &r, err, sizeof(err), 5000), want_rc);
    ck_assert_msg(strstr(err, want_msg), "err \"%s\" lacks \"%s\"", err, want_msg);
    httpc_response_fini(&r);
}

START_TEST(test_a_malformed_status_line_is_a_protocol_error)
{
    expect_failure("HTP/1.1 200 OK\r\n\r\n", 0, LLM_EPROTO, "malformed status line");
    expect_failure("HTTP/1.1 20 OK\r\n\r\n", 0, LLM_EPROTO, "malformed status line");
    expect_failure("HTTP/2.0 200 OK\r\n\r\n", 0, LLM_EPROTO, "malformed status line");
    expect_failure("garbage\r\n\r\n", 0, LLM_EPROTO, "malformed status line");
}
END_TEST

START_TEST(test_malformed_headers_and_chunks_are_protocol_errors)
{
    expect_failure("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", 0, LLM_EPROTO, "header line");
    expect_failure("HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n", 0, LLM_EPROTO,
                   "Content-Length");
    expect_failure("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, LLM_EPROTO,
                   "Content-Length");
    expect_failure("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, LLM_EPROTO,
                   "chunk size");
    expect_failure("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 0,
                   LLM_EPROTO, "chunk longer");
}
END_TEST

START_TEST(test_a_truncated_body_is_a_closed_error)
{
    expect_failure("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", 0, LLM_ECLOSED,
                   "truncated");
    expect_failure("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n8\r\ndata: a\n",
                   0, LLM_ECLOSED, "closed the connection");
    expect_failure("HTTP/1.1 200 OK\r\nContent-Len", 0, LLM_ECLOSED, "closed the connection");
    expect_failure("", 0, LLM_ECLOSED, "without an answer");
}
END_TEST

START_TEST(test_an_oversized_header_block_is_refused)
{
    size_t n = 70 * 1024;
    char *b = malloc(n + 64);
    int k = snprintf(b, n + 64, "HTTP/1.1 200 OK\r\n");
    while ((size_t)k < n)
        k += snprintf(b + k, n + 64 - (size_t)k, "X-Pad: %0100d\r\n", 0);
    k += snprintf(b + k, n + 64 - (size_t)k, "\r\n");
    expect_failure(b, (size_t)k, LLM_ERANGE, "header block");
    // One header line longer than the whole bound.
    k = snprintf(b, n + 64, "HTTP/1.1 200 OK\r\nX-Long: ");
    memset(b + k, 'a', n - (size_t)k);
    memcpy(b + n, "\r\n\r\n", 4);
    expect_failure(b, n + 4, LLM_ERANGE, "over");
    free(b);
}
END_TEST

START_TEST(test_an_oversized_sse_line_is_refused)
{
    size_t n = HTTPC_MAX_LINE_BYTES + 4096;
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: ";
    size_t hl = strlen(head);
    char *b = malloc(hl + n + 3);
    memcpy(b, head, hl);
    memset(b + hl, 'x', n);
    memcpy(b + hl + n, "\n\n", 2);
    expect_failure(b, hl + n + 2, LLM_ERANGE, "SSE line");
    free(b);
}
END_TEST

START_TEST(test_a_callback_can_stop_the_stream)
{
    server s = {.n_replies = 1,
                .replies = {{"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             "Content-Length: 27\r\n\r\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"}}};
    evlog l = {.stop_after = 2};
    httpc_response r;
    char err[256] = "";
    ck_assert_int_eq(run_one(&s, &l, &r, err, sizeof(err), 5000), LLM_ECANCELED);
    ck_assert_int_eq(l.n, 2);
    httpc_response_fini(&r);
}
END_TEST

Suite *http_cli_suite(void);

Suite *
http_cli_suite(void)
{
    Suite *s = suite_create("http_cli");
    TCase *tc = tcase_create("bodies");
    tcase_add_test(tc, test_content_length_body_is_read_and_request_is_well_formed);
    tcase_add_test(tc, test_chunked_sse_with_boundaries_inside_lines_is_put_back_together);
    tcase_add_test(tc, test_close_delimited_sse_ends_when_the_server_closes);
    tcase_add_test(tc, test_an_error_status_keeps_its_body_and_1xx_is_skipped);
    tcase_add_test(tc, test_a_callback_can_stop_the_stream);
    suite_add_tcase(s, tc);
    tc = tcase_create("connections");
    tcase_add_test(tc, test_keep_alive_reuses_one_connection);
    tcase_add_test(tc, test_a_connection_the_server_closed_is_dialled_again);
    tcase_add_test(tc, test_connection_close_is_honoured);
    tcase_add_test(tc, test_a_refused_connection_is_an_io_error);
    tcase_add_test(tc, test_a_silent_server_times_out);
    tcase_add_test(tc, test_urls_are_checked);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_test(tc, test_a_malformed_status_line_is_a_protocol_error);
    tcase_add_test(tc, test_malformed_headers_and_chunks_are_protocol_errors);
    tcase_add_test(tc, test_a_truncated_body_is_a_closed_error);
    tcase_add_test(tc, test_an_oversized_header_block_is_refused);
    tcase_add_test(tc, test_an_oversized_sse_line_is_refused);
    suite_add_tcase(s, tc);
    return s;
}
