/*
 * http.c - the HTTP front door on libmicrohttpd: routing, limits, auth, the OpenAI
 * endpoints (JSON and SSE), health, metrics, admin. JSON itself is oai.c's.
 *
 * One thread per connection. A request's state (hreq) lives from the first call of the
 * access handler to MHD's "completed" notification, which also releases its stream in
 * the relay (that cancels it on the worker when it still runs). While a generation runs
 * the connection thread sleeps in poll() on three things: the request's eventfd (the
 * relay writes it when the stream grows), the server's quit eventfd, and the client's
 * socket (a hang-up there is a client gone: cancel at once).
 */
#define _GNU_SOURCE // POLLRDHUP

#include "http.h"

#include "admin.h"
#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "oai.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#define SSE_BLOCK 16384

enum {
    R_COMPLETIONS,
    R_CHAT,
    R_MODELS,
    R_HEALTH,
    R_METRICS,
    R_ADMIN_WORKERS,
    R_ADMIN_DRAIN,
    R_OTHER,
    N_ROUTES
};
static const char *const route_names[N_ROUTES] = {
    "completions", "chat", "models", "health", "metrics", "admin_workers", "admin_drain", "other"};

// Status codes counted per route (anything else counts as 500).
static const int counted_codes[] = {200, 400, 401, 403, 404, 405, 413, 429, 500, 503};
#define N_CODES ((int)(sizeof(counted_codes) / sizeof(counted_codes[0])))

struct http_server {
    http_opts o;
    struct MHD_Daemon *d;
    int quit_efd; // written once by http_stop: every waiting connection returns
    int port;
    metric_counter *requests[N_ROUTES][N_CODES];
    metric_counter *client_gone;
    metric_histogram *gen_seconds;
};

/* One TCP connection: its requests (keep-alive) share the eventfd the relay signals. */
typedef struct {
    int efd;
} hconn;

/* One HTTP request. Only its connection's thread touches it; the relay only writes efd. */
typedef struct {
    http_server *h;
    struct MHD_Connection *conn;
    int route;
    char *body;
    size_t len, cap;
    bool too_big;
    // A generation.
    oai_kind kind;
    oai_request q;
    bool parsed;
    uint64_t id;
    bool submitted;
    int efd;  // borrowed from the connection's hconn
    int sock; // the client's socket while watched for a hang-up; -1 not watched
    uint32_t seq;
    size_t text_off;
    bool sent_role, done;
    char *out; // SSE bytes formatted, not yet handed to MHD
    size_t out_len, out_off, out_cap;
    char resp_id[48];
    int64_t created;
    int key; // auth key index; -1 none
    uint32_t charged;
    char trace[64];
    int64_t t0_ns;
} hreq;

/* ---- responses ---------------------------------------------------------------------------- */

static void
count(hreq *r, int status)
{
    int k = -1, k500 = 0;
    for (int i = 0; i < N_CODES; i++) {
        if (counted_codes[i] == status)
            k = i;
        if (counted_codes[i] == 500)
            k500 = i;
    }
    metric_counter_add(r->h->requests[r->route][k >= 0 ? k : k500], 1);
}

/* respond queues body (malloc'd; taken) with status. */
static enum MHD_Result
respond(hreq *r, int status, char *body, const char *type, int retry_after_s)
{
    if (!body)
        return MHD_NO; // out of memory: MHD closes the connection
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", type);
    if (r->trace[0])
        MHD_add_response_header(resp, "traceparent", r->trace);
    if (retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry_after_s);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    if (status == 405) {
        bool post = r->route == R_COMPLETIONS || r->route == R_CHAT || r->route == R_ADMIN_DRAIN;
        MHD_add_response_header(resp, "Allow", post ? "POST" : "GET");
    }
    count(r, status);
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result
respond_json(hreq *r, int status, char *json)
{
    return respond(r, status, json, "application/json", 0);
}

/* respond_error sends OpenAI's error shape. */
static enum MHD_Result
respond_error(hreq *r, int status, const char *type, const char *code, const char *param,
              int retry_after_s, const char *fmt, ...)
{
    oai_error e = {.status = status, .type = type, .code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof(e.message), fmt, ap);
    va_end(ap);
    snprintf(e.param, sizeof(e.param), "%s", param ? param : "");
    return respond(r, status, oai_error_json(&e), "application/json", retry_after_s);
}

/* respond_llm_error maps an llm_err from the relay to a status and OpenAI's shape. */
static enum MHD_Result
respond_llm_error(hreq *r, int code, const char *msg)
{
    switch (code) {
    case LLM_EINVAL:
    case LLM_ERANGE:
    case LLM_ENOTSUP:
        return respond_error(r, 400, "invalid_request_error", NULL, NULL, 0, "%s", msg);
    case LLM_ENOENT:
        return respond_error(r, 404, "invalid_request_error", "model_not_found", "model", 0, "%s",
                             msg);
    case LLM_EBUSY: return respond_error(r, 429, "server_busy", "queue_full", NULL, 1, "%s", msg);
    case LLM_ETIMEDOUT:
        return respond_error(r, 429, "server_busy", "deadline_unmeetable", NULL, 1, "%s", msg);
    case LLM_EUNAVAIL:
        return respond_error(r, 503, "service_unavailable", "no_worker", NULL, 1, "%s", msg);
    default:
        return respond_error(r, 500, "server_error", NULL, NULL, 0, "%s (%s)", msg,
                             llm_strerror(code));
    }
}

/* ---- tracing ------------------------------------------------------------------------------ */

static bool
hex_run(const char *s, int n)
{
    bool nonzero = false;
    for (int i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        nonzero |= s[i] != '0';
    }
    return nonzero;
}

/* rand64: per-thread xorshift64*, seeded once from the kernel: trace ids and default
 * seeds need to be unpredictable enough not to collide, not secret, and a getrandom call
 * per id would be three system calls per request. */
static uint64_t
rand64(void)
{
    static _Thread_local uint64_t x;
    if (!x && (getrandom(&x, sizeof(x), 0) != sizeof(x) || !x))
        x = llm_now_ns() | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 0x2545f4914f6cdd1dull;
}

static void
hex_random(char *dst, int n_bytes)
{
    uint8_t b[16];
    for (int i = 0; i < n_bytes; i += 8) {
        uint64_t v = rand64();
        memcpy(b + i, &v, (size_t)(n_bytes - i < 8 ? n_bytes - i : 8));
    }
    b[0] |= 1; // never all zeros (invalid in W3C trace context)
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < n_bytes; i++) {
        dst[2 * i] = hex[b[i] >> 4];
        dst[2 * i + 1] = hex[b[i] & 15];
    }
    dst[2 * n_bytes] = '\0';
}

/* trace_of: a valid incoming traceparent (version 00: 00-<32 hex trace>-<16 hex parent>-
 * <2 hex flags>) keeps its trace id and flags; this hop gets its own parent id. Anything
 * else starts a new trace (W3C: an invalid header is ignored). */
static void
trace_of(const char *in, char out[64])
{
    char trace[33], flags[3] = "01";
    if (in && strlen(in) == 55 && in[0] == '0' && in[1] == '0' && in[2] == '-' && in[35] == '-' &&
        in[52] == '-' && hex_run(in + 3, 32) && hex_run(in + 36, 16) &&
        (hex_run(in + 53, 2) || (in[53] == '0' && in[54] == '0'))) {
        memcpy(trace, in + 3, 32);
        trace[32] = '\0';
        memcpy(flags, in + 53, 2);
    } else {
        hex_random(trace, 16);
    }
    char span[17];
    hex_random(span, 8);
    snprintf(out, 64, "00-%s-%s-%s", trace, span, flags);
}

/* ---- waiting for the stream ---------------------------------------------------------------- */

static void
on_stream_news(void *arg)
{
    hreq *r = arg;
    uint64_t one = 1;
    ssize_t n = write(r->efd, &one, sizeof(one)); // cannot block: an eventfd counter
    (void)n;
}

enum { W_NEWS, W_IDLE, W_GONE, W_STOP };

/* wait_news sleeps until the relay signals, the server stops, the client hangs up, or
 * timeout_ms pass. */
static int
wait_news(hreq *r, int timeout_ms)
{
    struct pollfd p[3] = {{.fd = r->efd, .events = POLLIN},
                          {.fd = r->h->quit_efd, .events = POLLIN},
                          {.fd = r->sock, .events = POLLIN | POLLRDHUP}};
    int n = r->sock >= 0 ? 3 : 2;
    int rv = poll(p, (nfds_t)n, timeout_ms);
    if (rv == 0)
        return W_IDLE;
    if (rv < 0)
        return errno == EINTR ? W_NEWS : W_STOP;
    if (p[1].revents)
        return W_STOP;
    if (n == 3 && p[2].revents) {
        if (p[2].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
            return W_GONE;
        char c;
        if (recv(r->sock, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
            return W_GONE;
        r->sock = -1; // a pipelined request's bytes: not a hang-up; stop watching
    }
    return W_NEWS;
}

static void
drain_efd(hreq *r)
{
    uint64_t v;
    ssize_t n = read(r->efd, &v, sizeof(v)); // non-blocking; EAGAIN when nothing came
    (void)n;
}

enum { UNTIL_ACCEPTED, UNTIL_ENDED, UNTIL_NEWS };

/* wait_until reads the stream into *v until `until` holds. W_NEWS when it does (*v is
 * then the caller's to fini), W_IDLE after idle_ms without news (UNTIL_NEWS only; -1 waits
 * without end), W_GONE / W_STOP otherwise. */
static int
wait_until(hreq *r, int until, int idle_ms, relay_view *v)
{
    for (;;) {
        drain_efd(r); // before the read: a signal after it wakes the poll below
        int rc = relay_read(r->h->o.rl, r->id, r->seq, r->text_off, v);
        if (rc != LLM_OK) {
            // The stream is gone from the table (swept): nothing more will come.
            memset(v, 0, sizeof(*v));
            v->ended = true;
            v->err_code = rc;
            snprintf(v->err_msg, sizeof(v->err_msg), "the stream was lost");
            return W_NEWS;
        }
        bool ok = until == UNTIL_ACCEPTED ? v->accepted || v->ended
                  : until == UNTIL_ENDED  ? v->ended
                                          : v->ended || v->text[0] || v->next_seq > r->seq;
        if (ok)
            return W_NEWS;
        relay_view_fini(v);
        int w = wait_news(r, until == UNTIL_NEWS ? idle_ms : -1);
        if (w == W_GONE) {
            metric_counter_add(r->h->client_gone, 1);
            LOG_INFO("event=client_gone req=%" PRIu64 " trace=%s", r->id, r->trace);
            return w;
        }
        if (w == W_STOP || (w == W_IDLE && until == UNTIL_NEWS))
            return w;
    }
}

/* ---- generation ---------------------------------------------------------------------------- */

static const char *
finish_name(int f)
{
    switch (f) {
    case LLM__FINISH_REASON__FINISH_STOP: return "stop";
    case LLM__FINISH_REASON__FINISH_LENGTH: return "length";
    case LLM__FINISH_REASON__FINISH_CANCELED: return "canceled";
    case LLM__FINISH_REASON__FINISH_DEADLINE_EXCEEDED: return "deadline_exceeded";
    default: return "error";
    }
}

static Llm__SlaTier
tier_of_rank(int rank)
{
    static const Llm__SlaTier t[] = {LLM__SLA_TIER__TIER_CRITICAL, LLM__SLA_TIER__TIER_HIGH,
                                     LLM__SLA_TIER__TIER_NORMAL, LLM__SLA_TIER__TIER_LOW,
                                     LLM__SLA_TIER__TIER_BACKGROUND};
    return t[rank];
}

/* release ends the request's hold on its stream and gives unused tokens back to its
 * key's bucket. */
static void
release(hreq *r, const relay_view *last)
{
    if (!r->submitted)
        return;
    r->submitted = false;
    relay_release(r->h->o.rl, r->id);
    if (r->key >= 0 && r->h->o.auth) {
        uint32_t used = last ? last->prompt_tokens + last->completion_tokens : 0;
        if (last && used < r->charged)
            auth_refund(r->h->o.auth, r->key, r->charged - used);
    }
    metric_histogram_observe(r->h->gen_seconds, (double)((int64_t)llm_now_ns() - r->t0_ns) / 1e9);
}

/* out_add appends an SSE event (or comment) to the bytes waiting for MHD. */
static int
out_add(hreq *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return LLM_EINVAL;
    if (r->out_len + (size_t)n + 1 > r->out_cap) {
        size_t cap = r->out_cap ? r->out_cap : 1024;
        while (cap < r->out_len + (size_t)n + 1)
            cap *= 2;
        char *p = realloc(r->out, cap);
        if (!p)
            return LLM_ENOMEM;
        r->out = p;
        r->out_cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(r->out + r->out_len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    r->out_len += (size_t)n;
    return LLM_OK;
}

static int
out_chunk(hreq *r, uint32_t seq, const oai_chunk *c)
{
    char *json = oai_chunk_json(r->kind, c);
    if (!json)
        return LLM_ENOMEM;
    int rc = out_add(r, "id: %u\ndata: %s\n\n", seq, json);
    free(json);
    return rc;
}

/* sse_events formats what v brought: text, then at the end the finish chunk, the usage
 * chunk and [DONE] (or an error event). */
static int
sse_events(hreq *r, const relay_view *v)
{
    oai_chunk c = {.id = r->resp_id,
                   .created = r->created,
                   .model = r->q.model,
                   .include_usage = r->q.include_usage};
    int rc = LLM_OK;
    if (v->text[0]) {
        c.text = v->text;
        rc = out_chunk(r, v->seq, &c);
    }
    r->seq = v->next_seq;
    r->text_off = v->next_text_off;
    if (rc != LLM_OK || !v->ended)
        return rc;
    r->done = true;
    if (v->finish == LLM__FINISH_REASON__FINISH_NONE ||
        v->finish == LLM__FINISH_REASON__FINISH_ERROR) {
        oai_error e = {.status = 500, .type = "server_error"};
        snprintf(e.message, sizeof(e.message), "%s",
                 v->err_msg[0] ? v->err_msg : "the worker failed the request");
        char *json = oai_error_json(&e);
        rc = json ? out_add(r, "data: %s\n\ndata: [DONE]\n\n", json) : LLM_ENOMEM;
        free(json);
        return rc;
    }
    c.text = r->kind == OAI_COMPLETIONS ? "" : NULL;
    c.finish_reason = finish_name(v->finish);
    if ((rc = out_chunk(r, v->next_seq, &c)) != LLM_OK)
        return rc;
    if (r->q.include_usage) {
        oai_chunk u = {.id = r->resp_id,
                       .created = r->created,
                       .model = r->q.model,
                       .include_usage = true,
                       .usage_only = true,
                       .prompt_tokens = v->prompt_tokens,
                       .completion_tokens = v->completion_tokens,
                       .cached_tokens = v->cached_tokens};
        if ((rc = out_chunk(r, v->next_seq, &u)) != LLM_OK)
            return rc;
    }
    return out_add(r, "data: [DONE]\n\n");
}

/* sse_read is MHD's content reader for a streamed response: it blocks (this is the
 * connection's own thread) until there is something to send. */
static ssize_t
sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    hreq *r = cls;
    (void)pos;
    while (r->out_off == r->out_len) {
        r->out_off = r->out_len = 0;
        if (r->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        relay_view v;
        int w = wait_until(r, UNTIL_NEWS, r->h->o.keepalive_s * 1000, &v);
        if (w == W_IDLE) {
            // Nothing for a while (a long queue or prefill): a comment keeps proxies
            // and clients from timing the connection out.
            if (out_add(r, ": keep-alive\n\n") != LLM_OK)
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        if (w != W_NEWS)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        int rc = sse_events(r, &v);
        if (v.ended)
            release(r, &v);
        relay_view_fini(&v);
        if (rc != LLM_OK)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = r->out_len - r->out_off < max ? r->out_len - r->out_off : max;
    memcpy(buf, r->out + r->out_off, n);
    r->out_off += n;
    return (ssize_t)n;
}

/* build_generate fills g (pointing into r->q and the arrays given) from the request. */
static void
build_generate(hreq *r, Llm__GenerateRequest *g, Llm__Sampling *sp, Llm__ChatList *cl,
               Llm__ChatMessage *msgs, Llm__ChatMessage **mps, Llm__TokenList *tl,
               Llm__SlaTier tier, uint64_t deadline_unix_ms, uint64_t seed)
{
    oai_request *q = &r->q;
    g->model = q->model;
    if (r->kind == OAI_CHAT) {
        for (size_t i = 0; i < q->n_messages; i++) {
            llm__chat_message__init(&msgs[i]);
            msgs[i].role = q->roles[i];
            msgs[i].content = q->contents[i];
            mps[i] = &msgs[i];
        }
        cl->messages = mps;
        cl->n_messages = q->n_messages;
        g->input_case = LLM__GENERATE_REQUEST__INPUT_MESSAGES;
        g->messages = cl;
    } else if (q->prompt_ids) {
        tl->ids = q->prompt_ids;
        tl->n_ids = q->n_prompt_ids;
        g->input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT_IDS;
        g->prompt_ids = tl;
    } else {
        g->input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT;
        g->prompt = q->prompt;
    }
    // OpenAI: top_p 0 keeps only the likeliest token, which is greedy decoding here.
    sp->temperature = q->top_p == 0 ? 0.0f : (float)q->temperature;
    sp->top_p = (float)q->top_p;
    sp->top_k = (uint32_t)q->top_k;
    sp->seed = seed;
    sp->max_tokens = (uint32_t)q->max_tokens;
    sp->stop = q->stop;
    sp->n_stop = (size_t)q->n_stop;
    g->sampling = sp;
    g->tier = tier;
    g->deadline_unix_ms = deadline_unix_ms;
    g->traceparent = r->trace;
}

/* requested_rank: the priority a request asks for (the body's `priority`, else the
 * X-Priority header), as a rank. None: normal, or the key's highest tier when that is
 * below normal (a key limited to `low` need not say so on every request). LLM_EINVAL
 * for a bad name. */
static int
requested_rank(hreq *r, int *rank)
{
    const char *name = r->q.priority[0]
                           ? r->q.priority
                           : MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Priority");
    if (name && name[0])
        return auth_tier_parse(name, rank);
    *rank = AUTH_TIER_NORMAL;
    if (r->key >= 0 && auth_key_max_tier(r->h->o.auth, r->key) > *rank)
        *rank = auth_key_max_tier(r->h->o.auth, r->key);
    return LLM_OK;
}

static enum MHD_Result
on_generate(hreq *r)
{
    http_server *h = r->h;
    oai_error e = {0};
    int rc = oai_parse(r->body ? r->body : "", r->len, r->kind, &r->q, &e);
    if (rc != LLM_OK) {
        if (rc == LLM_ENOMEM)
            return MHD_NO;
        return respond(r, e.status ? e.status : 400, oai_error_json(&e), "application/json", 0);
    }
    r->parsed = true;
    if (r->q.max_tokens == 0)
        r->q.max_tokens = r->kind == OAI_CHAT ? h->o.default_max_tokens : 16; // OpenAI's default
    int rank;
    if (requested_rank(r, &rank) != LLM_OK)
        return respond_error(r, 400, "invalid_request_error", NULL, "priority", 0,
                             "unknown priority: use critical, high, normal, low or background");
    if (r->key >= 0 && rank < auth_key_max_tier(h->o.auth, r->key))
        return respond_error(r, 403, "permission_error", "tier_not_allowed", "priority", 0,
                             "this API key may use priorities up to '%s', not '%s'",
                             auth_tier_name(auth_key_max_tier(h->o.auth, r->key)),
                             auth_tier_name(rank));
    uint64_t deadline = 0;
    const char *dl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Deadline-Ms");
    if (dl) {
        char *end = NULL;
        errno = 0;
        long long ms = strtoll(dl, &end, 10);
        if (errno || end == dl || *end || ms < 1 || ms > 86400000LL)
            return respond_error(r, 400, "invalid_request_error", NULL, "X-Deadline-Ms", 0,
                                 "X-Deadline-Ms must be milliseconds from now, 1 to 86400000");
        deadline = (uint64_t)(llm_unix_ms() + ms);
    }
    if (r->key >= 0) {
        // Prompt tokens are not known before the relay tokenizes; like OpenAI's limiter,
        // estimate from the size (4 bytes a token) and give back what was not used.
        size_t est = r->len / 4 + (size_t)r->q.max_tokens;
        r->charged = est > UINT32_MAX ? UINT32_MAX : (uint32_t)est;
        int retry_ms = 0;
        rc = auth_admit(h->o.auth, r->key, llm_now_ms(), r->charged, &retry_ms);
        if (rc == LLM_ERANGE)
            return respond_error(r, 429, "tokens", "rate_limit_exceeded", NULL, 0,
                                 "the request (about %u tokens) is larger than this key's "
                                 "tokens-per-minute limit",
                                 r->charged);
        if (rc != LLM_OK)
            return respond_error(r, 429, "requests", "rate_limit_exceeded", NULL,
                                 (retry_ms + 999) / 1000,
                                 "rate limit reached for this API key; retry in %d ms", retry_ms);
    }
    uint64_t seed = r->q.has_seed ? (uint64_t)r->q.seed : rand64();

    Llm__GenerateRequest g = LLM__GENERATE_REQUEST__INIT;
    Llm__Sampling sp = LLM__SAMPLING__INIT;
    Llm__ChatList cl = LLM__CHAT_LIST__INIT;
    Llm__TokenList tl = LLM__TOKEN_LIST__INIT;
    size_t nm = r->kind == OAI_CHAT ? r->q.n_messages : 0;
    Llm__ChatMessage *msgs = calloc(nm + 1, sizeof(*msgs));
    Llm__ChatMessage **mps = calloc(nm + 1, sizeof(*mps));
    const union MHD_ConnectionInfo *sc =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const hconn *hc = sc ? sc->socket_context : NULL;
    r->efd = hc ? hc->efd : -1;
    if (!msgs || !mps || r->efd < 0) {
        free(msgs);
        free(mps);
        if (r->key >= 0)
            auth_refund(h->o.auth, r->key, r->charged);
        return respond_error(r, 500, "server_error", NULL, NULL, 0, "out of resources");
    }
    build_generate(r, &g, &sp, &cl, msgs, mps, &tl, tier_of_rank(rank), deadline, seed);
    char err[256] = "";
    r->t0_ns = (int64_t)llm_now_ns();
    rc = relay_submit(h->o.rl, &g, on_stream_news, r, &r->id, err, sizeof(err));
    free(msgs);
    free(mps);
    if (rc != LLM_OK) {
        if (r->key >= 0)
            auth_refund(h->o.auth, r->key, r->charged);
        return respond_llm_error(r, rc, err);
    }
    r->submitted = true;
    snprintf(r->resp_id, sizeof(r->resp_id), "%s-%" PRIu64,
             r->kind == OAI_CHAT ? "chatcmpl" : "cmpl", r->id);
    r->created = llm_unix_ms() / 1000;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->sock = ci ? ci->connect_fd : -1;
    LOG_INFO("event=http_generate req=%" PRIu64 " route=%s stream=%d model=%s trace=%s", r->id,
             route_names[r->route], (int)r->q.stream, r->q.model, r->trace);

    // Wait for the answer (stream: for a worker to take it, so that a request no worker
    // can serve still gets its status code rather than a 200 with an error inside).
    relay_view v;
    int w = wait_until(r, r->q.stream ? UNTIL_ACCEPTED : UNTIL_ENDED, -1, &v);
    if (w != W_NEWS) {
        release(r, NULL);
        return MHD_NO; // the client is gone, or the server stops: close the connection
    }
    bool failed = v.ended && v.err_code != LLM_OK && (!r->q.stream || v.next_seq == 0);
    if (failed || (v.ended && v.finish == LLM__FINISH_REASON__FINISH_ERROR && !r->q.stream)) {
        release(r, &v);
        enum MHD_Result ret = v.err_code != LLM_OK
                                  ? respond_llm_error(r, v.err_code, v.err_msg)
                                  : respond_error(r, 500, "server_error", NULL, NULL, 0,
                                                  "the worker failed the request");
        relay_view_fini(&v);
        return ret;
    }
    if (!r->q.stream) {
        oai_result res = {.id = r->resp_id,
                          .created = r->created,
                          .model = r->q.model,
                          .text = v.text,
                          .finish_reason = finish_name(v.finish),
                          .prompt_tokens = v.prompt_tokens,
                          .completion_tokens = v.completion_tokens,
                          .cached_tokens = v.cached_tokens};
        release(r, &v);
        char *json = oai_response_json(r->kind, &res);
        relay_view_fini(&v);
        return respond_json(r, 200, json);
    }
    // Streamed: the role chunk first (chat), then whatever sse_read finds.
    if (r->kind == OAI_CHAT) {
        oai_chunk c = {.id = r->resp_id,
                       .created = r->created,
                       .model = r->q.model,
                       .role = true,
                       .text = "",
                       .include_usage = r->q.include_usage};
        if (out_chunk(r, 0, &c) != LLM_OK) {
            relay_view_fini(&v);
            return MHD_NO;
        }
    }
    int erc = sse_events(r, &v);
    if (v.ended)
        release(r, &v);
    relay_view_fini(&v);
    if (erc != LLM_OK)
        return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_read, r, NULL);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "traceparent", r->trace);
    count(r, 200);
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- the other endpoints ------------------------------------------------------------------- */

static enum MHD_Result
on_health(hreq *r)
{
    int ready = reg_workers_ready(r->h->o.reg);
    char *body = malloc(96);
    if (body)
        snprintf(body, 96, "{\"status\":\"%s\",\"workers_ready\":%d}",
                 ready > 0 ? "ok" : "unavailable", ready);
    return respond_json(r, ready > 0 ? 200 : 503, body);
}

static enum MHD_Result
on_models(hreq *r, const char *url)
{
    registry *reg = r->h->o.reg;
    int n = reg_n_models(reg);
    int64_t created = llm_unix_ms() / 1000;
    if (strncmp(url, "/v1/models/", 11) == 0) { // route_of: a non-empty id follows
        const char *one = url + 11;
        if (reg_find_model(reg, one) < 0)
            return respond_error(r, 404, "invalid_request_error", "model_not_found", "model", 0,
                                 "The model '%.100s' does not exist", one);
        return respond_json(r, 200, oai_model_json(one, created));
    }
    reg_model_info *infos = calloc((size_t)n + 1, sizeof(*infos));
    const char **names = calloc((size_t)n + 1, sizeof(*names));
    char *json = NULL;
    if (infos && names) {
        int k = 0;
        for (int m = 0; m < n; m++)
            if (reg_get_model(reg, m, &infos[k]) == LLM_OK)
                names[k] = infos[k].name, k++;
        json = oai_models_json(names, k, created);
    }
    free(infos);
    free(names);
    return respond_json(r, 200, json);
}

static enum MHD_Result
on_metrics(hreq *r)
{
    return respond(r, 200, metrics_render(r->h->o.m), "text/plain; version=0.0.4; charset=utf-8",
                   0);
}

static cJSON *
worker_json(const reg_worker_info *wi)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "id", wi->id);
    cJSON_AddStringToObject(o, "address", wi->address);
    cJSON_AddStringToObject(o, "model", wi->model);
    cJSON_AddStringToObject(o, "state", reg_state_name(wi->state));
    cJSON_AddNumberToObject(o, "inflight", wi->inflight);
    cJSON_AddNumberToObject(o, "running", wi->running);
    cJSON_AddNumberToObject(o, "waiting", wi->waiting);
    cJSON_AddNumberToObject(o, "kv_blocks_used", wi->kv_used);
    cJSON_AddNumberToObject(o, "kv_blocks_total", wi->kv_total);
    cJSON_AddStringToObject(o, "breaker", reg_breaker_name(wi->breaker));
    cJSON_AddNumberToObject(o, "heartbeat_age_ms",
                            (double)(wi->heartbeat_age_ms > 0 ? wi->heartbeat_age_ms : 0));
    cJSON_AddNumberToObject(o, "routed", (double)wi->routed);
    cJSON_AddNumberToObject(o, "failures", (double)wi->failures);
    cJSON_AddBoolToObject(o, "static", wi->is_static);
    return o;
}

/* print_free renders o (NULL: out of memory) and frees it. */
static char *
print_free(cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

static enum MHD_Result
on_admin_workers(hreq *r)
{
    registry *reg = r->h->o.reg;
    cJSON *root = cJSON_CreateObject(), *data = cJSON_CreateArray(), *models = cJSON_CreateArray();
    if (!root || !data || !models) {
        cJSON_Delete(root);
        cJSON_Delete(data);
        cJSON_Delete(models);
        return MHD_NO;
    }
    cJSON_AddStringToObject(root, "object", "list");
    cJSON_AddItemToObject(root, "data", data);
    cJSON_AddItemToObject(root, "models", models);
    for (int i = 0; i < reg_n_workers(reg); i++) {
        reg_worker_info wi;
        if (reg_get_worker(reg, i, &wi) == LLM_OK)
            cJSON_AddItemToArray(data, worker_json(&wi));
    }
    for (int m = 0; m < reg_n_models(reg); m++) {
        reg_model_info mi;
        cJSON *o = reg_get_model(reg, m, &mi) == LLM_OK ? cJSON_CreateObject() : NULL;
        if (!o)
            continue;
        cJSON_AddStringToObject(o, "id", mi.name);
        cJSON_AddStringToObject(o, "policy", route_policy_name(mi.policy));
        cJSON_AddNumberToObject(o, "workers_ready", mi.workers_ready);
        cJSON_AddNumberToObject(o, "workers_total", mi.workers_total);
        cJSON_AddItemToArray(models, o);
    }
    cJSON_AddNumberToObject(root, "requests_active", relay_active(r->h->o.rl));
    return respond_json(r, 200, print_free(root));
}

static enum MHD_Result
on_admin_drain(hreq *r)
{
    cJSON *in = cJSON_ParseWithLength(r->body ? r->body : "", r->len);
    const cJSON *w = cJSON_IsObject(in) ? cJSON_GetObjectItemCaseSensitive(in, "worker") : NULL;
    if (!cJSON_IsString(w) || !w->valuestring[0] || cJSON_GetArraySize(in) != 1) {
        cJSON_Delete(in);
        return respond_error(r, 400, "invalid_request_error", NULL, "worker", 0,
                             "the body must be {\"worker\": \"ID\"}");
    }
    reg_worker_info wi;
    char err[256] = "";
    int rc =
        admin_drain(r->h->o.reg, w->valuestring, r->h->o.drain_timeout_ms, &wi, err, sizeof(err));
    cJSON_Delete(in);
    if (rc != LLM_OK)
        return respond_error(r, 404, "invalid_request_error", "worker_not_found", "worker", 0, "%s",
                             err);
    return respond_json(r, 200, print_free(worker_json(&wi)));
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static int
route_of(const char *url)
{
    if (strcmp(url, "/v1/completions") == 0)
        return R_COMPLETIONS;
    if (strcmp(url, "/v1/chat/completions") == 0)
        return R_CHAT;
    if (strcmp(url, "/v1/models") == 0 || (strncmp(url, "/v1/models/", 11) == 0 && url[11]))
        return R_MODELS;
    if (strcmp(url, "/health") == 0)
        return R_HEALTH;
    if (strcmp(url, "/metrics") == 0)
        return R_METRICS;
    if (strcmp(url, "/admin/workers") == 0)
        return R_ADMIN_WORKERS;
    if (strcmp(url, "/admin/drain") == 0)
        return R_ADMIN_DRAIN;
    return R_OTHER;
}

/* authorize: r->key is set (or -1 when auth is off). */
static enum MHD_Result
authorize(hreq *r, bool *ok)
{
    http_server *h = r->h;
    *ok = false;
    if (!h->o.auth) {
        *ok = true;
        return MHD_YES;
    }
    const char *ah = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    int rc = auth_lookup(h->o.auth, ah, &r->key);
    if (rc != LLM_OK) {
        r->key = -1;
        LOG_INFO("event=http_unauthorized route=%s trace=%s", route_names[r->route], r->trace);
        return respond_error(r, 401, "invalid_request_error", "invalid_api_key", NULL, 0,
                             rc == LLM_ENOENT ? "Incorrect API key provided."
                                              : "You didn't provide an API key. Send it as an "
                                                "'Authorization: Bearer KEY' header.");
    }
    bool admin_route = r->route == R_ADMIN_WORKERS || r->route == R_ADMIN_DRAIN;
    if (admin_route && auth_key_role(h->o.auth, r->key) != AUTH_ADMIN)
        return respond_error(r, 403, "permission_error", "admin_only", NULL, 0,
                             "this endpoint needs an admin API key (key '%s' is a user key)",
                             auth_key_name(h->o.auth, r->key));
    *ok = true;
    return MHD_YES;
}

static enum MHD_Result
serve(hreq *r, const char *url, const char *method)
{
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool is_post = strcmp(method, "POST") == 0;
    bool want_post = r->route == R_COMPLETIONS || r->route == R_CHAT || r->route == R_ADMIN_DRAIN;
    if (r->route == R_OTHER)
        return respond_error(r, 404, "invalid_request_error", "unknown_url", NULL, 0,
                             "Unknown request URL: %s %.200s", method, url);
    if (want_post ? !is_post : !is_get)
        return respond_error(r, 405, "invalid_request_error", "method_not_allowed", NULL, 0,
                             "%s is not allowed on %.200s (use %s)", method, url,
                             want_post ? "POST" : "GET");
    if (r->too_big)
        return respond_error(r, 413, "invalid_request_error", "body_too_large", NULL, 0,
                             "the request body is larger than %zu bytes", r->h->o.max_body_bytes);
    if (r->route == R_HEALTH)
        return on_health(r);
    bool ok;
    enum MHD_Result ret = authorize(r, &ok);
    if (!ok)
        return ret;
    switch (r->route) {
    case R_COMPLETIONS: r->kind = OAI_COMPLETIONS; return on_generate(r);
    case R_CHAT: r->kind = OAI_CHAT; return on_generate(r);
    case R_MODELS: return on_models(r, url);
    case R_METRICS: return on_metrics(r);
    case R_ADMIN_WORKERS: return on_admin_workers(r);
    default: return on_admin_drain(r);
    }
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    http_server *h = cls;
    hreq *r = *con_cls;
    (void)version;
    if (!r) {
        if (!(r = calloc(1, sizeof(*r))))
            return MHD_NO;
        r->h = h;
        r->conn = conn;
        r->route = route_of(url);
        r->efd = -1;
        r->sock = -1;
        r->key = -1;
        trace_of(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent"), r->trace);
        *con_cls = r;
        // A declared body over the limit is refused before it is read.
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->o.max_body_bytes) {
            r->too_big = true;
            return serve(r, url, method);
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->too_big)
            return MHD_YES;
        if (r->len + n > h->o.max_body_bytes) {
            r->too_big = true; // sent at the end; the rest is read and dropped
            return MHD_YES;
        }
        if (r->len + n > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + n)
                cap *= 2;
            char *p = realloc(r->body, cap);
            if (!p)
                return MHD_NO;
            r->body = p;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload, n);
        r->len += n;
        return MHD_YES;
    }
    return serve(r, url, method);
}

/* on_completed: MHD is done with the request (answered, or the client went away). */
static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode why)
{
    hreq *r = *con_cls;
    (void)cls;
    (void)conn;
    if (!r)
        return;
    if (r->submitted && why != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        LOG_INFO("event=http_aborted req=%" PRIu64 " why=%d trace=%s", r->id, (int)why, r->trace);
    release(r, NULL); // after it the relay no longer writes the connection's eventfd
    if (r->parsed)
        oai_request_fini(&r->q);
    free(r->body);
    free(r->out);
    free(r);
    *con_cls = NULL;
}

/* on_connection gives each connection its eventfd, for all its requests. */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
              enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)conn;
    hconn *hc = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        if ((hc = malloc(sizeof(*hc))) != NULL &&
            (hc->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
            free(hc);
            hc = NULL; // its generation requests get 500 (out of resources)
        }
        *socket_context = hc;
    } else if (hc) {
        close(hc->efd);
        free(hc);
        *socket_context = NULL;
    }
}

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[256];
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    LOG_DEBUG("event=http_server msg=\"%s\"", line);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

int
http_start(const http_opts *o, http_server **out, char *err, size_t err_len)
{
    if (o->port < 0 || o->port > 65535 || o->max_connections < 1 || o->timeout_s < 1 ||
        o->max_body_bytes < 1 || o->default_max_tokens < 1 || o->keepalive_s < 1 ||
        o->drain_timeout_ms < 1 || !o->rl || !o->reg) {
        llm_errf(err, err_len, "http: bad options");
        return LLM_EINVAL;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->bind, &sa.sin_addr) != 1) {
        llm_errf(err, err_len, "http_bind '%s' is not an IPv4 address", o->bind);
        return LLM_EINVAL;
    }
    http_server *h = calloc(1, sizeof(*h));
    if (!h)
        return LLM_ENOMEM;
    h->o = *o;
    if ((h->quit_efd = eventfd(0, EFD_CLOEXEC)) < 0) {
        free(h);
        return LLM_EIO;
    }
    for (int rt = 0; rt < N_ROUTES; rt++) {
        for (int k = 0; k < N_CODES; k++) {
            char lb[64];
            snprintf(lb, sizeof(lb), "route=\"%s\",code=\"%d\"", route_names[rt], counted_codes[k]);
            h->requests[rt][k] =
                metrics_counter(o->m, "llm_http_requests_total", "HTTP requests answered.", lb);
        }
    }
    h->client_gone = metrics_counter(o->m, "llm_http_client_gone_total",
                                     "Generations whose client went away before the end.", NULL);
    h->gen_seconds = metrics_histogram(o->m, "llm_http_generation_seconds",
                                       "Completions and chats, from admission to release.", NULL,
                                       metrics_latency_bounds, metrics_latency_n);
    // Thread stacks: cJSON parses nested JSON recursively (up to its nesting limit of
    // 1000), which under sanitizers wants more than a small stack.
    h->d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_ERROR_LOG,
        (uint16_t)o->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)o->timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)4 << 20, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_END);
    if (!h->d) {
        llm_errf(err, err_len, "cannot listen for HTTP on %s:%d (in use?)", o->bind, o->port);
        close(h->quit_efd);
        free(h);
        return LLM_EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    *out = h;
    return LLM_OK;
}

int
http_port(const http_server *h)
{
    return h->port;
}

void
http_stop(http_server *h)
{
    if (!h)
        return;
    uint64_t one = 1;
    ssize_t n = write(h->quit_efd, &one, sizeof(one));
    (void)n;
    MHD_stop_daemon(h->d); // joins every connection thread
    close(h->quit_efd);
    free(h);
}
