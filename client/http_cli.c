/*
 * http_cli.c - a blocking HTTP/1.1 client with an SSE reader (see http_cli.h).
 *
 * Reading is layered: a buffered socket reader with one deadline (rd_*), a body decoder
 * for Content-Length, chunked and close-delimited bodies that hands decoded slices to a
 * sink, and two sinks: the plain body collector and the SSE parser. The SSE parser keeps
 * its own line buffer, so an event split across TCP reads or chunk boundaries (even in
 * the middle of "data:") is put back together before it is called back.
 */
#define _DEFAULT_SOURCE // getaddrinfo, strncasecmp

#include "http_cli.h"

#include "llm_err.h"
#include "llm_time.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

// The reader's buffer holds one header block or one chunk-size line at most; body bytes
// pass through it in slices, so it never needs to grow.
#define RD_CAP (HTTPC_MAX_HEADER_BYTES + 1)

struct httpc {
    char host[256], port[8], path[1024];
    int timeout_ms;
    int fd; // -1 when not connected
    char *buf;
    size_t start, end;  // unread bytes: buf[start..end)
    uint64_t t_recv_ns; // when the last bytes arrived
    uint64_t deadline_ns;
    bool got_bytes; // this request's answer has sent at least one byte
};

/* ---- connection ----------------------------------------------------------------------- */

int
httpc_new(const char *url, int timeout_ms, httpc **out, char *err, size_t err_len)
{
    assert(url && out);
    *out = NULL;
    if (strncmp(url, "http://", 7) != 0) {
        llm_errf(err, err_len, "url %s: only http:// is supported", url);
        return LLM_EINVAL;
    }
    const char *h = url + 7;
    size_t hl = strcspn(h, ":/");
    if (hl == 0 || hl >= sizeof(((httpc *)0)->host)) {
        llm_errf(err, err_len, "url %s: no host", url);
        return LLM_EINVAL;
    }
    httpc *c = calloc(1, sizeof(*c));
    if (!c || !(c->buf = malloc(RD_CAP))) {
        free(c);
        return LLM_ENOMEM;
    }
    memcpy(c->host, h, hl);
    const char *p = h + hl;
    snprintf(c->port, sizeof(c->port), "80");
    if (*p == ':') {
        size_t pl = strspn(p + 1, "0123456789");
        long port = pl > 0 && pl <= 5 ? strtol(p + 1, NULL, 10) : 0;
        if (port < 1 || port > 65535 || (p[1 + pl] != '\0' && p[1 + pl] != '/')) {
            llm_errf(err, err_len, "url %s: bad port", url);
            httpc_free(c);
            return LLM_EINVAL;
        }
        snprintf(c->port, sizeof(c->port), "%ld", port);
        p += 1 + pl;
    }
    size_t len = strlen(p);
    while (len > 0 && p[len - 1] == '/')
        len--;
    if (len >= sizeof(c->path)) {
        llm_errf(err, err_len, "url %s: path too long", url);
        httpc_free(c);
        return LLM_EINVAL;
    }
    memcpy(c->path, p, len);
    c->timeout_ms = timeout_ms;
    c->fd = -1;
    *out = c;
    return LLM_OK;
}

static void
conn_drop(httpc *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->start = c->end = 0;
}

void
httpc_free(httpc *c)
{
    if (!c)
        return;
    conn_drop(c);
    free(c->buf);
    free(c);
}

const char *
httpc_base_path(const httpc *c)
{
    return c->path;
}

/* remaining_ms: the time left to the request's deadline, -1 for none, 0 when past. */
static int
remaining_ms(const httpc *c)
{
    if (!c->deadline_ns)
        return -1;
    uint64_t now = llm_now_ns();
    if (now >= c->deadline_ns)
        return 0;
    uint64_t ms = (c->deadline_ns - now + 999999) / 1000000;
    return ms > 1 << 30 ? 1 << 30 : (int)ms;
}

/* wait_fd polls c->fd for events until the deadline: LLM_OK, LLM_ETIMEDOUT or LLM_EIO. */
static int
wait_fd(httpc *c, short events, char *err, size_t err_len)
{
    for (;;) {
        int ms = remaining_ms(c);
        if (ms == 0) {
            llm_errf(err, err_len, "%s:%s: timed out after %d ms", c->host, c->port, c->timeout_ms);
            return LLM_ETIMEDOUT;
        }
        struct pollfd pfd = {.fd = c->fd, .events = events};
        int n = poll(&pfd, 1, ms);
        if (n > 0)
            return LLM_OK;
        if (n < 0 && errno != EINTR) {
            llm_errf(err, err_len, "poll: %s", strerror(errno));
            return LLM_EIO;
        }
    }
}

static int
conn_open(httpc *c, char *err, size_t err_len)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(c->host, c->port, &hints, &ai);
    if (gai != 0) {
        llm_errf(err, err_len, "resolve %s: %s", c->host, gai_strerror(gai));
        return LLM_EIO;
    }
    int rc = LLM_EIO;
    for (struct addrinfo *a = ai; a && c->fd < 0; a = a->ai_next) {
        c->fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (c->fd < 0)
            continue;
        int e = 0;
        if (connect(c->fd, a->ai_addr, a->ai_addrlen) != 0) {
            e = errno;
            if (e == EINPROGRESS) {
                rc = wait_fd(c, POLLOUT, err, err_len);
                socklen_t el = sizeof(e);
                if (rc == LLM_OK && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0)
                    e = errno;
                if (rc == LLM_ETIMEDOUT) {
                    conn_drop(c);
                    break;
                }
            }
        }
        if (e != 0) {
            llm_errf(err, err_len, "connect %s:%s: %s", c->host, c->port, strerror(e));
            rc = LLM_EIO;
            conn_drop(c);
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        rc = LLM_OK;
    }
    freeaddrinfo(ai);
    c->start = c->end = 0;
    return rc;
}

static int
send_all(httpc *c, const char *p, size_t n, char *err, size_t err_len)
{
    while (n > 0) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(c, POLLOUT, err, err_len);
            if (rc != LLM_OK)
                return rc;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        llm_errf(err, err_len, "send to %s:%s: %s", c->host, c->port,
                 k < 0 ? strerror(errno) : "closed");
        return LLM_EIO;
    }
    return LLM_OK;
}

/* ---- buffered reader ------------------------------------------------------------------ */

/* rd_fill reads more bytes into the buffer (compacting it first). LLM_OK with *eof set
 * when the server closed; LLM_ERANGE when the buffer is full of unread bytes. */
static int
rd_fill(httpc *c, bool *eof, char *err, size_t err_len)
{
    *eof = false;
    if (c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    if (c->end >= RD_CAP) {
        llm_errf(err, err_len, "a header block or line over %d bytes", HTTPC_MAX_HEADER_BYTES);
        return LLM_ERANGE;
    }
    for (;;) {
        ssize_t k = recv(c->fd, c->buf + c->end, RD_CAP - c->end, 0);
        if (k > 0) {
            c->end += (size_t)k;
            c->t_recv_ns = llm_now_ns();
            c->got_bytes = true;
            return LLM_OK;
        }
        if (k == 0) {
            *eof = true;
            return LLM_OK;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(c, POLLIN, err, err_len);
            if (rc != LLM_OK)
                return rc;
            continue;
        }
        if (errno == ECONNRESET && !c->got_bytes) {
            *eof = true; // a reused connection the server had dropped: dialled again
            return LLM_OK;
        }
        llm_errf(err, err_len, "recv from %s:%s: %s", c->host, c->port, strerror(errno));
        return LLM_EIO;
    }
}

/* rd_line returns the next line without its CR LF (NUL-terminated in place, borrowed
 * until the next read). LLM_ECLOSED when the server closes first. */
static int
rd_line(httpc *c, char **line, size_t *len, char *err, size_t err_len)
{
    for (;;) {
        char *nl = memchr(c->buf + c->start, '\n', c->end - c->start);
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->start));
            *line = c->buf + c->start;
            c->start += n + 1;
            if (n > 0 && (*line)[n - 1] == '\r')
                n--;
            (*line)[n] = '\0';
            *len = n;
            return LLM_OK;
        }
        bool eof;
        int rc = rd_fill(c, &eof, err, err_len);
        if (rc != LLM_OK)
            return rc;
        if (eof) {
            llm_errf(err, err_len, "%s:%s closed the connection %s", c->host, c->port,
                     c->got_bytes ? "in the middle of the answer" : "without an answer");
            return LLM_ECLOSED;
        }
    }
}

/* ---- sinks: the plain body and the SSE parser ----------------------------------------- */

typedef struct {
    httpc_response *out;
    size_t cap;
    // SSE
    bool sse;
    char *line, *data;
    size_t line_len, line_cap, data_len, data_cap;
    bool has_data;
    char id[256];
    httpc_event_fn cb;
    void *ctx;
} sink;

static int
grow(char **p, size_t *cap, size_t need, size_t limit)
{
    if (need <= *cap)
        return LLM_OK;
    if (need > limit)
        return LLM_ERANGE;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    if (n > limit)
        n = limit;
    char *q = realloc(*p, n);
    if (!q)
        return LLM_ENOMEM;
    *p = q;
    *cap = n;
    return LLM_OK;
}

/* sse_line handles one complete line (no '\n', a trailing '\r' already cut). */
static int
sse_line(sink *s, const char *l, size_t n, uint64_t t_ns, char *err, size_t err_len)
{
    if (n == 0) { // a blank line ends the event; one without data is no event
        if (!s->has_data)
            return LLM_OK;
        s->data[s->data_len] = '\0';
        httpc_event ev = {s->data, s->data_len, s->id, t_ns};
        s->has_data = false;
        s->data_len = 0;
        s->out->n_events++;
        if (s->cb && s->cb(s->ctx, &ev) != 0) {
            llm_errf(err, err_len, "stopped by the caller");
            return LLM_ECANCELED;
        }
        return LLM_OK;
    }
    if (l[0] == ':')
        return LLM_OK; // a comment (": keep-alive")
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vl = n - (size_t)(v - l);
    if (vl > 0 && *v == ' ') {
        v++;
        vl--;
    }
    if (fl == 4 && memcmp(l, "data", 4) == 0) {
        size_t need = s->data_len + (s->has_data ? 1 : 0) + vl + 1;
        int rc = grow(&s->data, &s->data_cap, need, 4 * (size_t)HTTPC_MAX_LINE_BYTES);
        if (rc != LLM_OK) {
            llm_errf(err, err_len, "an SSE event over %d bytes", 4 * HTTPC_MAX_LINE_BYTES);
            return rc;
        }
        if (s->has_data)
            s->data[s->data_len++] = '\n';
        memcpy(s->data + s->data_len, v, vl);
        s->data_len += vl;
        s->has_data = true;
    } else if (fl == 2 && memcmp(l, "id", 2) == 0 && !memchr(v, '\0', vl)) {
        size_t k = vl < sizeof(s->id) - 1 ? vl : sizeof(s->id) - 1;
        memcpy(s->id, v, k);
        s->id[k] = '\0';
    } // event:, retry: and unknown fields are ignored
    return LLM_OK;
}

static int
sink_put(sink *s, const char *p, size_t n, uint64_t t_ns, char *err, size_t err_len)
{
    int rc;
    if (!s->sse) {
        if ((rc = grow(&s->out->body, &s->cap, s->out->body_len + n + 1, HTTPC_MAX_BODY_BYTES)) !=
            LLM_OK) {
            llm_errf(err, err_len, "a body over %d bytes", HTTPC_MAX_BODY_BYTES);
            return rc;
        }
        memcpy(s->out->body + s->out->body_len, p, n);
        s->out->body_len += n;
        s->out->body[s->out->body_len] = '\0';
        return LLM_OK;
    }
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t k = nl ? (size_t)(nl - p) : n;
        if ((rc = grow(&s->line, &s->line_cap, s->line_len + k + 1, HTTPC_MAX_LINE_BYTES + 2)) !=
            LLM_OK) {
            llm_errf(err, err_len, "an SSE line over %d bytes", HTTPC_MAX_LINE_BYTES);
            return rc;
        }
        memcpy(s->line + s->line_len, p, k);
        s->line_len += k;
        p += k;
        n -= k;
        if (!nl)
            break;
        p++; // the '\n'
        n--;
        size_t ll = s->line_len;
        if (ll > 0 && s->line[ll - 1] == '\r')
            ll--;
        s->line_len = 0;
        if ((rc = sse_line(s, s->line, ll, t_ns, err, err_len)) != LLM_OK)
            return rc;
    }
    return LLM_OK;
}

/* ---- body decoding -------------------------------------------------------------------- */

/* body_bytes passes n bytes of body (n < 0: until the server closes) to the sink. */
static int
body_bytes(httpc *c, sink *s, int64_t n, char *err, size_t err_len)
{
    while (n != 0) {
        if (c->start == c->end) {
            bool eof;
            int rc = rd_fill(c, &eof, err, err_len);
            if (rc != LLM_OK)
                return rc;
            if (eof) {
                if (n < 0)
                    return LLM_OK;
                llm_errf(err, err_len,
                         "%s:%s closed the connection with %lld body bytes "
                         "still to come (a truncated body)",
                         c->host, c->port, (long long)n);
                return LLM_ECLOSED;
            }
        }
        size_t k = c->end - c->start;
        if (n > 0 && (int64_t)k > n)
            k = (size_t)n;
        int rc = sink_put(s, c->buf + c->start, k, c->t_recv_ns, err, err_len);
        c->start += k;
        if (rc != LLM_OK)
            return rc;
        if (n > 0)
            n -= (int64_t)k;
    }
    return LLM_OK;
}

static int
body_chunked(httpc *c, sink *s, char *err, size_t err_len)
{
    int rc;
    char *line;
    size_t len;
    for (;;) {
        if ((rc = rd_line(c, &line, &len, err, err_len)) != LLM_OK)
            return rc;
        char *end;
        errno = 0;
        unsigned long long size = strtoull(line, &end, 16);
        if (end == line || errno != 0 || (*end != '\0' && *end != ';' && *end != ' ') ||
            size > (unsigned long long)HTTPC_MAX_BODY_BYTES) {
            llm_errf(err, err_len, "bad chunk size line \"%.40s\"", line);
            return LLM_EPROTO;
        }
        if (size == 0)
            break;
        if ((rc = body_bytes(c, s, (int64_t)size, err, err_len)) != LLM_OK)
            return rc;
        if ((rc = rd_line(c, &line, &len, err, err_len)) != LLM_OK)
            return rc;
        if (len != 0) {
            llm_errf(err, err_len, "a chunk longer than its size line says");
            return LLM_EPROTO;
        }
    }
    do { // trailers, up to the blank line
        if ((rc = rd_line(c, &line, &len, err, err_len)) != LLM_OK)
            return rc;
    } while (len > 0);
    return LLM_OK;
}

/* ---- one exchange --------------------------------------------------------------------- */

typedef struct {
    int64_t content_length; // -1: none
    bool chunked, close, event_stream;
} head;

static int
read_head(httpc *c, httpc_response *out, head *h, char *err, size_t err_len)
{
    int rc;
    char *line;
    size_t len, total = 0;
    for (;;) { // skip 1xx answers
        memset(h, 0, sizeof(*h));
        h->content_length = -1;
        if ((rc = rd_line(c, &line, &len, err, err_len)) != LLM_OK)
            return rc;
        total += len + 2;
        int major = 0, minor = 0, status = 0, used = 0;
        if (sscanf(line, "HTTP/%1d.%1d %3d%n", &major, &minor, &status, &used) != 3 || major != 1 ||
            status < 100 || status > 599 || used != 12 ||
            (line[used] != ' ' && line[used] != '\0')) {
            llm_errf(err, err_len, "malformed status line \"%.60s\"", line);
            return LLM_EPROTO;
        }
        out->status = status;
        h->close = minor == 0;
        for (;;) {
            if ((rc = rd_line(c, &line, &len, err, err_len)) != LLM_OK)
                return rc;
            total += len + 2;
            if (total > HTTPC_MAX_HEADER_BYTES) {
                llm_errf(err, err_len, "a header block over %d bytes", HTTPC_MAX_HEADER_BYTES);
                return LLM_ERANGE;
            }
            if (len == 0)
                break;
            char *colon = strchr(line, ':');
            if (!colon || colon == line) {
                llm_errf(err, err_len, "malformed header line \"%.60s\"", line);
                return LLM_EPROTO;
            }
            *colon = '\0';
            char *v = colon + 1;
            v += strspn(v, " \t");
            if (strcasecmp(line, "content-length") == 0) {
                char *end;
                errno = 0;
                long long n = strtoll(v, &end, 10);
                if (end == v || errno != 0 || n < 0 || *(end + strspn(end, " \t")) != '\0') {
                    llm_errf(err, err_len, "bad Content-Length \"%.40s\"", v);
                    return LLM_EPROTO;
                }
                h->content_length = n;
            } else if (strcasecmp(line, "transfer-encoding") == 0) {
                h->chunked = strstr(v, "chunked") != NULL;
            } else if (strcasecmp(line, "connection") == 0) {
                if (strncasecmp(v, "close", 5) == 0)
                    h->close = true;
                else if (strncasecmp(v, "keep-alive", 10) == 0)
                    h->close = false;
            } else if (strcasecmp(line, "content-type") == 0) {
                h->event_stream = strncasecmp(v, "text/event-stream", 17) == 0;
            }
        }
        if (status >= 200)
            break;
    }
    out->t_head_ns = llm_now_ns();
    out->event_stream = h->event_stream;
    return LLM_OK;
}

static int
exchange(httpc *c, const char *req, size_t req_len, const char *body, size_t body_len, sink *s,
         char *err, size_t err_len)
{
    int rc;
    head h;
    c->got_bytes = false;
    h.close = true;
    if ((rc = send_all(c, req, req_len, err, err_len)) != LLM_OK ||
        (rc = send_all(c, body, body_len, err, err_len)) != LLM_OK ||
        (rc = read_head(c, s->out, &h, err, err_len)) != LLM_OK)
        goto out;
    int st = s->out->status;
    s->sse = h.event_stream && st >= 200 && st < 300;
    if (st == 204 || st == 304)
        rc = LLM_OK;
    else if (h.chunked)
        rc = body_chunked(c, s, err, err_len);
    else if (h.content_length >= 0)
        rc = body_bytes(c, s, h.content_length, err, err_len);
    else {
        h.close = true;
        rc = body_bytes(c, s, -1, err, err_len);
    }
    if (rc == LLM_OK && !s->sse && !s->out->body) {
        // An empty body is still a body: callers may read it as a string.
        if ((s->out->body = calloc(1, 1)) == NULL)
            rc = LLM_ENOMEM;
    }
out:
    if (rc != LLM_OK || h.close)
        conn_drop(c);
    return rc;
}

int
httpc_post(httpc *c, const char *path, const char *api_key, const char *const *headers,
           int n_headers, const char *body, size_t body_len, httpc_event_fn cb, void *ctx,
           httpc_response *out, char *err, size_t err_len)
{
    assert(c && path && out && (body || body_len == 0));
    memset(out, 0, sizeof(*out));
    int rc = LLM_OK;
    char *req = NULL;
    size_t cap = 512 + strlen(path) + strlen(c->host) + (api_key ? strlen(api_key) : 0);
    for (int i = 0; i < n_headers; i++)
        cap += strlen(headers[i]) + 2;
    sink s = {.out = out, .cb = cb, .ctx = ctx};
    if (!(req = malloc(cap))) {
        rc = LLM_ENOMEM;
        goto out;
    }
    int len = snprintf(req, cap,
                       "POST %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: llm-bench\r\n"
                       "Content-Type: application/json\r\n"
                       "Accept: text/event-stream, application/json\r\n"
                       "Content-Length: %zu\r\n",
                       path, c->host, c->port, body_len);
    if (api_key && *api_key)
        len += snprintf(req + len, cap - (size_t)len, "Authorization: Bearer %s\r\n", api_key);
    for (int i = 0; i < n_headers; i++)
        len += snprintf(req + len, cap - (size_t)len, "%s\r\n", headers[i]);
    len += snprintf(req + len, cap - (size_t)len, "\r\n");
    c->deadline_ns = c->timeout_ms > 0 ? llm_now_ns() + (uint64_t)c->timeout_ms * 1000000 : 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = c->fd >= 0;
        if (!reused && (rc = conn_open(c, err, err_len)) != LLM_OK)
            goto out;
        rc = exchange(c, req, (size_t)len, body, body_len, &s, err, err_len);
        // The server may close an idle keep-alive connection just as we reuse it: then
        // nothing of the answer came and the request was never handled; send it again.
        if (rc == LLM_OK || !reused || c->got_bytes || (rc != LLM_ECLOSED && rc != LLM_EIO))
            break;
        memset(out, 0, sizeof(*out));
    }
out:
    if (rc != LLM_OK)
        conn_drop(c);
    free(req);
    free(s.line);
    free(s.data);
    return rc;
}

void
httpc_response_fini(httpc_response *r)
{
    if (!r)
        return;
    free(r->body);
    memset(r, 0, sizeof(*r));
}
