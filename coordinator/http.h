/*
 * http.h - the coordinator's HTTP front door (DESIGN.md, "HTTP"): OpenAI-compatible
 * completions and chat (JSON, or Server-Sent Events with `stream: true`), models,
 * health, Prometheus metrics and the admin endpoints, on libmicrohttpd.
 *
 * Every request passes, in order: the body limit (413), API-key auth (401) and role
 * (403), the JSON layer (oai.h; 400), the key's highest tier (403) and rate limits
 * (429 with Retry-After), then the relay's admission (429 when its tier's queue is
 * full or its deadline cannot be met). Generation runs in-process through the relay
 * (relay_submit/relay_read), with the same routing and failover as the RPC port.
 *
 * Threads: one per connection (libmicrohttpd's thread-per-connection mode). A
 * connection waits for its stream on an eventfd the relay signals, and on its own
 * socket, so a client that goes away cancels its request on the worker at once (not at
 * the next token). Connections are bounded (http_max_connections) and idle ones time
 * out (slow or stalled clients cannot hold threads forever).
 *
 * Tracing: a valid W3C `traceparent` header keeps its trace id; otherwise one is
 * created. This hop's traceparent goes to the worker in the Generate, back to the client
 * in the response header, and into every log line of the request.
 *
 * It deliberately does not do TLS (put a proxy in front), HTTP/2, or n > 1.
 */
#ifndef LLM_COORD_HTTP_H
#define LLM_COORD_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "auth.h"
#include "metrics.h"
#include "registry.h"
#include "relay.h"

typedef struct http_server http_server;

typedef struct {
    const char *bind;       // IPv4 address to listen on, "127.0.0.1"
    int port;               // 0: pick a free one (http_port tells which)
    int max_connections;    // open connections at once; more are refused
    int timeout_s;          // an idle connection (slow headers, stalled body) closes
    size_t max_body_bytes;  // a larger request body is refused with 413
    int default_max_tokens; // chat requests without max_tokens
    int keepalive_s;        // an SSE comment after this long without tokens
    int drain_timeout_ms;   // POST /admin/drain: the round trip to the worker, at most
    auth *auth;             // API keys (borrowed); NULL: no auth
    relay *rl;              // borrowed
    registry *reg;          // borrowed
    metrics *m;             // borrowed
} http_opts;

/* http_start listens and serves until http_stop. LLM_OK, LLM_EINVAL (bad opts),
 * LLM_EIO (the port is taken, with the reason in err), LLM_ENOMEM. */
int http_start(const http_opts *o, http_server **out, char *err, size_t err_len);
/* http_port: the port it listens on. */
int http_port(const http_server *h);
/* http_stop ends every connection (streams waiting are released: their requests are
 * canceled) and frees h. Call before the relay is closed. NULL is fine. */
void http_stop(http_server *h);

#endif
