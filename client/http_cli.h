/*
 * http_cli.h - a minimal blocking HTTP/1.1 client for llm-bench: POST a JSON body to an
 * OpenAI-compatible server and read the answer, calling back for every Server-Sent Event
 * of a streamed answer with the monotonic time its bytes arrived.
 *
 * One httpc is one keep-alive connection, used by one thread: it is opened on the first
 * request, kept while the server keeps it, and dialled again when the server had closed
 * it (a request that got no byte back on a reused connection is sent once more). Bodies
 * are read by Content-Length, chunked transfer encoding or until the server closes.
 * Everything is bounded: a header block over 64 KiB, an SSE line over 1 MiB or a plain
 * body over 16 MiB is refused, and each request has one deadline over connect, send and
 * every read.
 *
 * It deliberately does not: speak TLS (http:// only), HTTP/2, proxies, redirects,
 * cookies or compression; follow the SSE `retry:` field; or resolve IPv6 (loopback and
 * cluster benchmarks are IPv4).
 */
#ifndef LLM_CLIENT_HTTP_CLI_H
#define LLM_CLIENT_HTTP_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct httpc httpc;

#define HTTPC_MAX_HEADER_BYTES (64 * 1024)
#define HTTPC_MAX_LINE_BYTES (1024 * 1024)
#define HTTPC_MAX_BODY_BYTES (16 * 1024 * 1024)

/* One Server-Sent Event: its `data:` lines joined with '\n' (NUL-terminated), the last
 * `id:` seen on the stream ("" when none), and the CLOCK_MONOTONIC time (llm_now_ns) at
 * which the bytes that completed it were received. Borrowed for the callback only. */
typedef struct {
    const char *data;
    size_t data_len;
    const char *id;
    uint64_t t_ns;
} httpc_event;

/* Called for every event of a 2xx text/event-stream answer; non-zero stops the request
 * (httpc_post then returns LLM_ECANCELED and drops the connection). */
typedef int (*httpc_event_fn)(void *ctx, const httpc_event *ev);

/* What one request got. body is the answer's body when it was not an event stream (or
 * the status was not 2xx): malloc'ed, NUL-terminated, released by httpc_response_fini. */
typedef struct {
    int status;         // e.g. 200, 429
    bool event_stream;  // Content-Type text/event-stream
    char *body;         // NULL for an event stream
    size_t body_len;    //
    int n_events;       // events called back
    uint64_t t_head_ns; // when the status line and headers were complete
} httpc_response;

/* httpc_new parses url, "http://HOST[:PORT][/PATH]" (PORT defaults to 80), and prepares a
 * connection that is dialled on the first request. timeout_ms bounds each request (0: no
 * limit). LLM_OK with *out (free with httpc_free), or LLM_EINVAL with err filled (a
 * scheme other than http, an empty host, a bad port) or LLM_ENOMEM. Thread: any. */
int httpc_new(const char *url, int timeout_ms, httpc **out, char *err, size_t err_len);

/* httpc_free closes the connection and frees c. NULL is fine. */
void httpc_free(httpc *c);

/* httpc_base_path returns the URL's path without its trailing '/' ("" for none), e.g.
 * "/v1" for http://h:8000/v1/. Borrowed, valid until httpc_free. */
const char *httpc_base_path(const httpc *c);

/* httpc_post sends `POST path` with body[0..body_len) as application/json, adding
 * `Authorization: Bearer api_key` when api_key is not NULL or "", and the extra header
 * lines headers[0..n_headers) ("Name: value", no CRLF). It reads the whole answer: for
 * a 2xx text/event-stream it calls cb(ctx, event) per event (cb may be NULL); otherwise
 * it keeps the body in out->body. 1xx answers are skipped.
 *
 * Returns LLM_OK when a complete answer was read, whatever its status (out->status);
 * LLM_EIO when the server cannot be reached or the connection fails; LLM_ETIMEDOUT when
 * the request's deadline passed; LLM_ECLOSED when the server closed before the answer
 * was complete (a truncated body); LLM_EPROTO for a malformed status line, header or
 * chunk; LLM_ERANGE for a header block, SSE line or body over its bound; LLM_ECANCELED
 * when cb stopped it; LLM_ENOMEM. On any error err is filled, the connection is dropped
 * (the next request dials again) and *out holds what was read (release it with
 * httpc_response_fini either way). Thread: the httpc's one thread. */
int httpc_post(httpc *c, const char *path, const char *api_key, const char *const *headers,
               int n_headers, const char *body, size_t body_len, httpc_event_fn cb, void *ctx,
               httpc_response *out, char *err, size_t err_len);

/* httpc_response_fini frees out->body and zeroes *r. NULL and a zeroed struct are fine. */
void httpc_response_fini(httpc_response *r);

#endif
