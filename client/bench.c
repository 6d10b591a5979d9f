/*
 * bench.c - llm-bench: a serving benchmark in the manner of vLLM's benchmark_serving.py.
 * It replays a JSONL dataset against an OpenAI-compatible HTTP endpoint (ours, vLLM,
 * llama.cpp server, ...) with streamed requests, or against our protobuf RPC, in a
 * closed loop (--concurrency N) or an open loop of Poisson arrivals (--rate R, at most
 * --max-concurrency in flight), and reports throughput, TTFT, TPOT, ITL, end-to-end
 * latency and goodput per SLA tier as a table and as JSON.
 *
 * Latency is measured from when a request was *scheduled*, not when a free thread sent
 * it: in the open loop a request that waits for the concurrency cap carries that wait,
 * as in vLLM. Each thread owns one connection (HTTP keep-alive) and runs one request at a
 * time; the RPC client is shared (it is thread-safe).
 *
 * It deliberately does not: generate synthetic prompts, tokenize (token counts come from
 * the server's usage, or token ids on the RPC), retry failed requests, or send
 * ignore_eos (our servers do not support it).
 */
#define _DEFAULT_SOURCE // clock_nanosleep, strdup

#include "hash.h"
#include "bench_stats.h"
#include "config.h"
#include "http_cli.h"
#include "llm_err.h"
#include "llm_time.h"
#include "llmclient.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROG "llm-bench"
#define MAX_TOKENS_LIMIT (1 << 20)

/* ---- settings ------------------------------------------------------------------------- */

typedef struct {
    char *url, *addr, *api, *api_key, *model, *dataset, *json;
    cfg_strlist slo;
    double rate, duration_s, temperature, timeout_s;
    int64_t max_concurrency, concurrency, seed, num_requests, warmup;
    bool per_request;
} bench_cfg;

#define N_OPTS 18

/* bench_opts fills the settings table for the fields of c (a table per config struct,
 * so nothing here is a mutable global). */
static void
bench_opts(bench_cfg *c, cfg_opt o[N_OPTS])
{
    const cfg_opt t[] = {
        {"url", CFG_STR, &c->url, "", 0, 0,
         "target an OpenAI-compatible server: http://HOST:PORT[/v1] (or --addr)"},
        {"addr", CFG_STR, &c->addr, "", 0, 0, "target our RPC instead: tcp://HOST:PORT"},
        {"api", CFG_STR, &c->api, "chat", 0, 0,
         "HTTP endpoint: chat (/v1/chat/completions) | completions (/v1/completions)"},
        {"api_key", CFG_STR, &c->api_key, "", 0, 0, "HTTP: sent as Authorization: Bearer KEY"},
        {"model", CFG_STR, &c->model, "", 0, 0,
         "model name (required over HTTP; RPC: the coordinator's default when empty)"},
        {"rate", CFG_DOUBLE, &c->rate, "0", 0, 1e6,
         "open loop: Poisson arrivals at this many requests/s (0: unset)"},
        {"max_concurrency", CFG_INT, &c->max_concurrency, "256", 1, 65536,
         "open loop: requests in flight at most; later ones wait, and the wait counts"},
        {"concurrency", CFG_INT, &c->concurrency, "0", 0, 65536,
         "closed loop: this many requests always in flight (0: unset)"},
        {"seed", CFG_INT, &c->seed, "1", 0, 9007199254740991.0,
         "seed of the arrival times (open loop)"},
        {"num_requests", CFG_INT, &c->num_requests, "0", 0, 1e12,
         "requests to issue, warm-up excluded (0: unbounded if --duration-s, else one per "
         "dataset line)"},
        {"duration_s", CFG_DOUBLE, &c->duration_s, "0", 0, 1e7,
         "stop issuing after this long (0: unbounded); requests in flight finish"},
        {"warmup", CFG_INT, &c->warmup, "0", 0, 1e9,
         "requests run first and left out of every figure"},
        {"dataset", CFG_STR, &c->dataset, "", 0, 0,
         "JSONL prompts: {\"prompt\"|\"messages\", \"max_tokens\", \"tier\", \"id\"} per line, "
         "used in order, cycling"},
        {"temperature", CFG_DOUBLE, &c->temperature, "0", 0, 2, "sampling temperature"},
        {"slo", CFG_STRLIST, &c->slo, "", 0, 0,
         "a tier's targets: \"TIER ttft_ms=X tpot_ms=Y e2e_ms=Z\" (TIER * = every "
         "tier without its own; a missing target is not checked)"},
        {"timeout_s", CFG_DOUBLE, &c->timeout_s, "300", 0.001, 86400, "one request's time limit"},
        {"json", CFG_STR, &c->json, "", 0, 0,
         "also write the results as JSON to FILE (- : stdout, and the table goes to stderr)"},
        {"per_request", CFG_BOOL, &c->per_request, "false", 0, 0, "list every request in the JSON"},
    };
    _Static_assert(sizeof(t) / sizeof(t[0]) == N_OPTS, "N_OPTS is the table's size");
    memcpy(o, t, sizeof(t));
}

/* ---- dataset -------------------------------------------------------------------------- */

static const char *const TIER_NAMES[BSTATS_N_TIERS] = {"normal", "critical", "high", "low",
                                                       "background"};
// Table and JSON order: most urgent first.
static const int TIER_ORDER[BSTATS_N_TIERS] = {LLMC_TIER_CRITICAL, LLMC_TIER_HIGH, LLMC_TIER_NORMAL,
                                               LLMC_TIER_LOW, LLMC_TIER_BACKGROUND};

static int
tier_parse(const char *s)
{
    for (int i = 0; s && i < BSTATS_N_TIERS; i++)
        if (strcmp(s, TIER_NAMES[i]) == 0)
            return i;
    return -1;
}

/* One dataset line, with the HTTP body it becomes (built once, before the clock runs). */
typedef struct {
    char *prompt; // or messages
    llmc_msg *msgs;
    int n_msgs;
    int max_tokens;
    int tier;
    bool tier_given;
    char *http_body;
    size_t http_body_len;
} bench_item;

typedef struct {
    bench_item *items;
    int n;
} bench_dataset;

static void
dataset_free(bench_dataset *d)
{
    for (int i = 0; d && i < d->n; i++) {
        bench_item *it = &d->items[i];
        free(it->prompt);
        for (int m = 0; m < it->n_msgs; m++) {
            free((char *)it->msgs[m].role);
            free((char *)it->msgs[m].content);
        }
        free(it->msgs);
        free(it->http_body);
    }
    if (d) {
        free(d->items);
        d->items = NULL;
        d->n = 0;
    }
}

/* item_parse fills it from one JSON line. LLM_EINVAL with err naming the problem. */
static int
item_parse(const char *line, bench_item *it, char *err, size_t err_len)
{
    int rc = LLM_EINVAL;
    cJSON *o = cJSON_Parse(line);
    memset(it, 0, sizeof(*it));
    if (!cJSON_IsObject(o)) {
        llm_errf(err, err_len, "not a JSON object");
        goto out;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "messages");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(o, "max_tokens");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "tier");
    if ((p != NULL) == (m != NULL) || (p && !cJSON_IsString(p)) ||
        (m && (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0))) {
        llm_errf(err, err_len,
                 "needs either \"prompt\" (a string) or \"messages\" (a non-empty "
                 "array of {\"role\", \"content\"})");
        goto out;
    }
    it->max_tokens = 64;
    if (mt) {
        double v = cJSON_IsNumber(mt) ? mt->valuedouble : 0;
        if (v < 1 || v > MAX_TOKENS_LIMIT || v != floor(v)) {
            llm_errf(err, err_len, "\"max_tokens\" must be an integer from 1 to %d",
                     MAX_TOKENS_LIMIT);
            goto out;
        }
        it->max_tokens = (int)v;
    }
    if (t) {
        it->tier = tier_parse(cJSON_IsString(t) ? t->valuestring : NULL);
        if (it->tier < 0) {
            llm_errf(err, err_len, "\"tier\" must be critical, high, normal, low or background");
            goto out;
        }
        it->tier_given = true;
    }
    rc = LLM_ENOMEM;
    if (p && !(it->prompt = strdup(p->valuestring)))
        goto out;
    if (m) {
        int n = cJSON_GetArraySize(m);
        if (!(it->msgs = calloc((size_t)n, sizeof(llmc_msg))))
            goto out;
        for (int i = 0; i < n; i++) {
            const cJSON *e = cJSON_GetArrayItem(m, i);
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(e, "role");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
            if (!cJSON_IsString(role) || !cJSON_IsString(content)) {
                llm_errf(err, err_len, "messages[%d] needs \"role\" and \"content\" strings", i);
                rc = LLM_EINVAL;
                goto out;
            }
            it->n_msgs = i + 1;
            it->msgs[i].role = strdup(role->valuestring);
            it->msgs[i].content = strdup(content->valuestring);
            if (!it->msgs[i].role || !it->msgs[i].content)
                goto out;
        }
    }
    rc = LLM_OK;
out:
    cJSON_Delete(o);
    return rc;
}

/* dataset_load reads path: one item per non-blank line. LLM_EIO (unreadable) or
 * LLM_EINVAL (a bad line, named in err as PATH:LINE) with err filled. */
static int
dataset_load(const char *path, bench_dataset *d, char *err, size_t err_len)
{
    int rc = LLM_OK;
    char *line = NULL, e[256];
    size_t cap = 0;
    int lineno = 0, n_cap = 0;
    memset(d, 0, sizeof(*d));
    FILE *f = fopen(path, "r");
    if (!f) {
        llm_errf(err, err_len, "dataset %s: %s", path, strerror(errno));
        return LLM_EIO;
    }
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len)
            continue;
        if (d->n == n_cap) {
            n_cap = n_cap ? 2 * n_cap : 64;
            bench_item *v = realloc(d->items, sizeof(bench_item) * (size_t)n_cap);
            if (!v) {
                rc = LLM_ENOMEM;
                goto out;
            }
            d->items = v;
        }
        rc = item_parse(line, &d->items[d->n], e, sizeof(e));
        d->n++; // a half-parsed item is freed with the rest
        if (rc != LLM_OK) {
            llm_errf(err, err_len, "%s:%d: %s", path, lineno,
                     rc == LLM_ENOMEM ? "out of memory" : e);
            goto out;
        }
    }
    if (ferror(f)) {
        llm_errf(err, err_len, "dataset %s: read error", path);
        rc = LLM_EIO;
    } else if (d->n == 0) {
        llm_errf(err, err_len, "dataset %s has no requests", path);
        rc = LLM_EINVAL;
    }
out:
    free(line);
    fclose(f);
    if (rc != LLM_OK)
        dataset_free(d);
    return rc;
}

/* item_http_body builds the streamed request body of it for api "chat" or "completions":
 * a prompt line becomes one user message for chat; messages become their contents joined
 * by newlines for completions. */
static int
item_http_body(bench_item *it, const bench_cfg *c)
{
    bool chat = strcmp(c->api, "chat") == 0;
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "model", c->model);
    if (chat) {
        cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
        for (int i = 0; ok && i < (it->prompt ? 1 : it->n_msgs); i++) {
            cJSON *m = cJSON_CreateObject();
            ok = msgs && m && cJSON_AddItemToArray(msgs, m) &&
                 cJSON_AddStringToObject(m, "role", it->prompt ? "user" : it->msgs[i].role) &&
                 cJSON_AddStringToObject(m, "content",
                                         it->prompt ? it->prompt : it->msgs[i].content);
        }
    } else if (it->prompt) {
        ok = ok && cJSON_AddStringToObject(o, "prompt", it->prompt);
    } else {
        size_t n = 1;
        for (int i = 0; i < it->n_msgs; i++)
            n += strlen(it->msgs[i].content) + 1;
        char *joined = calloc(1, n);
        for (int i = 0; joined && i < it->n_msgs; i++) {
            if (i)
                strcat(joined, "\n");
            strcat(joined, it->msgs[i].content);
        }
        ok = ok && joined && cJSON_AddStringToObject(o, "prompt", joined);
        free(joined);
    }
    cJSON *so = NULL;
    ok = ok && cJSON_AddNumberToObject(o, "max_tokens", it->max_tokens) &&
         cJSON_AddNumberToObject(o, "temperature", c->temperature) &&
         cJSON_AddTrueToObject(o, "stream") &&
         (so = cJSON_AddObjectToObject(o, "stream_options")) &&
         cJSON_AddTrueToObject(so, "include_usage");
    it->http_body = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!it->http_body)
        return LLM_ENOMEM;
    it->http_body_len = strlen(it->http_body);
    return LLM_OK;
}

/* ---- SLOs ----------------------------------------------------------------------------- */

/* slo_parse applies one "TIER ttft_ms=X tpot_ms=Y e2e_ms=Z" spec: to slo[tier] (and
 * own[tier] set), or, for "*", to star. */
static int
slo_parse(const char *spec, bstats_slo slo[BSTATS_N_TIERS], bool own[BSTATS_N_TIERS],
          bstats_slo *star, bool *has_star, char *err, size_t err_len)
{
    char buf[512];
    if (strlen(spec) >= sizeof(buf)) {
        llm_errf(err, err_len, "--slo \"%.40s...\": too long", spec);
        return LLM_EINVAL;
    }
    snprintf(buf, sizeof(buf), "%s", spec);
    char *save = NULL, *w = strtok_r(buf, " \t", &save);
    int tier = w ? tier_parse(w) : -1;
    if (!w || (tier < 0 && strcmp(w, "*") != 0)) {
        llm_errf(err, err_len,
                 "--slo \"%s\": starts with a tier (critical|high|normal|low|background|*)", spec);
        return LLM_EINVAL;
    }
    bstats_slo s = bstats_slo_none();
    while ((w = strtok_r(NULL, " \t", &save)) != NULL) {
        char *eq = strchr(w, '='), *end = NULL;
        double v = eq ? strtod(eq + 1, &end) : NAN;
        if (!eq || end == eq + 1 || *end != '\0' || !(v >= 0) || isinf(v)) {
            llm_errf(err, err_len, "--slo \"%s\": \"%s\" is not NAME=MILLISECONDS", spec, w);
            return LLM_EINVAL;
        }
        *eq = '\0';
        if (strcmp(w, "ttft_ms") == 0)
            s.ttft_ms = v;
        else if (strcmp(w, "tpot_ms") == 0)
            s.tpot_ms = v;
        else if (strcmp(w, "e2e_ms") == 0)
            s.e2e_ms = v;
        else {
            llm_errf(err, err_len, "--slo \"%s\": unknown target %s (ttft_ms, tpot_ms, e2e_ms)",
                     spec, w);
            return LLM_EINVAL;
        }
    }
    if (tier < 0) {
        *star = s;
        *has_star = true;
    } else {
        slo[tier] = s;
        own[tier] = true;
    }
    return LLM_OK;
}

/* ---- one run -------------------------------------------------------------------------- */

/* One measured request. Written by the thread that runs it; read after the join. */
typedef struct {
    int item, tier;
    bool ok;
    int status; // HTTP status, 0 when none (RPC, or no answer)
    char err_key[32];
    char error[200];
    int64_t input_tokens, output_tokens;
    double ttft_ms, e2e_ms, tpot_ms, start_ms;
    double *itl_ms;
    int n_itl, cap_itl;
    // while it runs
    uint64_t t_sched_ns, t_last_ns;
    int n_content;
    bool usage_seen, stream_error;
} bench_rec;

typedef struct {
    const bench_cfg *cfg;
    const bench_dataset *ds;
    llmc *rpc;
    char path[1100]; // HTTP path of the endpoint
    bool open_loop;
    int64_t limit;               // requests this phase issues at most
    uint64_t t0_ns, stop_ns;     // phase start; no request is issued at or after stop_ns
    pthread_mutex_t mu;          // guards the fields below
    int64_t issued;              //
    int cursor;                  // next dataset line
    uint64_t next_sched_ns, rng; // open loop arrivals
    bench_rec **recs;            // [issued]
    int64_t cap_recs;            //
    bool oom;                    //
} bench_run;

static double
ms_between(uint64_t from_ns, uint64_t to_ns)
{
    return ((double)to_ns - (double)from_ns) / 1e6;
}

/* rec_content notes one content event (an SSE chunk with text, an RPC chunk with
 * tokens) at t_ns: the first sets TTFT, later ones add a gap to ITL. */
static int
rec_content(bench_rec *r, uint64_t t_ns)
{
    if (r->n_content++ == 0) {
        r->ttft_ms = ms_between(r->t_sched_ns, t_ns);
    } else {
        if (r->n_itl == r->cap_itl) {
            int cap = r->cap_itl ? 2 * r->cap_itl : 64;
            double *v = realloc(r->itl_ms, sizeof(double) * (size_t)cap);
            if (!v)
                return LLM_ENOMEM;
            r->itl_ms = v;
            r->cap_itl = cap;
        }
        r->itl_ms[r->n_itl++] = ms_between(r->t_last_ns, t_ns);
    }
    r->t_last_ns = t_ns;
    return LLM_OK;
}

static void
rec_fail(bench_rec *r, const char *key, const char *msg)
{
    r->ok = false;
    snprintf(r->err_key, sizeof(r->err_key), "%s", key);
    snprintf(r->error, sizeof(r->error), "%s", msg);
}

/* on_sse reads one event of an OpenAI stream: content, usage, or an error. */
static int
on_sse(void *ctx, const httpc_event *ev)
{
    bench_rec *r = ctx;
    if (strcmp(ev->data, "[DONE]") == 0)
        return 0;
    cJSON *o = cJSON_ParseWithLength(ev->data, ev->data_len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return 0; // not ours to judge; vLLM's client skips such lines too
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (e && !cJSON_IsNull(e)) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        r->stream_error = true;
        snprintf(r->error, sizeof(r->error), "%s",
                 cJSON_IsString(msg) ? msg->valuestring : "an error event in the stream");
    }
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "usage");
    if (cJSON_IsObject(u)) {
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
        if (cJSON_IsNumber(pt))
            r->input_tokens = (int64_t)pt->valuedouble;
        if (cJSON_IsNumber(ct))
            r->output_tokens = (int64_t)ct->valuedouble;
        r->usage_seen = true;
    }
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(ch, "delta");
    const cJSON *text = delta ? cJSON_GetObjectItemCaseSensitive(delta, "content")
                              : cJSON_GetObjectItemCaseSensitive(ch, "text");
    int rc = 0;
    if (cJSON_IsString(text) && text->valuestring[0] != '\0')
        rc = rec_content(r, ev->t_ns) != LLM_OK;
    cJSON_Delete(o);
    return rc;
}

static void
run_http(bench_run *run, httpc *h, const bench_item *it, bench_rec *r)
{
    char prio[48], err[256] = "";
    const char *hdrs[1] = {prio};
    snprintf(prio, sizeof(prio), "X-Priority: %s", TIER_NAMES[it->tier]);
    httpc_response resp;
    int rc = httpc_post(h, run->path, run->cfg->api_key, hdrs, it->tier_given ? 1 : 0,
                        it->http_body, it->http_body_len, on_sse, r, &resp, err, sizeof(err));
    uint64_t t_end = llm_now_ns();
    r->e2e_ms = ms_between(r->t_sched_ns, t_end);
    r->status = resp.status;
    if (rc != LLM_OK) {
        rec_fail(r, llm_strerror(rc), err);
    } else if (resp.status < 200 || resp.status > 299) {
        char key[8], msg[200];
        snprintf(key, sizeof(key), "%d", resp.status);
        cJSON *o = resp.body ? cJSON_Parse(resp.body) : NULL;
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(o, "error"), "message");
        snprintf(msg, sizeof(msg), "HTTP %d: %s", resp.status,
                 cJSON_IsString(m) ? m->valuestring
                 : resp.body       ? resp.body
                                   : "");
        cJSON_Delete(o);
        rec_fail(r, key, msg);
    } else if (r->stream_error) {
        char msg[sizeof(r->error)];
        snprintf(msg, sizeof(msg), "%s", r->error);
        rec_fail(r, "stream_error", msg);
    } else if (!resp.event_stream) {
        // A server that ignored stream: true: the whole answer counts as its first token.
        cJSON *o = resp.body ? cJSON_Parse(resp.body) : NULL;
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "usage");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
        if (cJSON_IsNumber(ct) && cJSON_IsNumber(pt)) {
            r->ok = true;
            r->usage_seen = true;
            r->output_tokens = (int64_t)ct->valuedouble;
            r->input_tokens = (int64_t)pt->valuedouble;
            r->ttft_ms = r->e2e_ms;
        } else {
            rec_fail(r, "bad_response", "a 2xx answer that is neither a stream nor has usage");
        }
        cJSON_Delete(o);
    } else {
        r->ok = true;
    }
    if (r->ok && !r->usage_seen)
        r->output_tokens = r->n_content; // no usage chunk: one token per content event
    httpc_response_fini(&resp);
}

static int
on_rpc_chunk(void *ctx, uint32_t seq, const int32_t *ids, int n_ids, const char *text,
             size_t text_len)
{
    (void)seq;
    (void)text;
    bench_rec *r = ctx;
    if (n_ids <= 0 && text_len == 0)
        return 0;
    r->output_tokens += n_ids > 0 ? n_ids : 0;
    return rec_content(r, llm_now_ns()) != LLM_OK;
}

static void
run_rpc(bench_run *run, const bench_item *it, bench_rec *r)
{
    const bench_cfg *c = run->cfg;
    char err[256] = "";
    llmc_request q = {
        .model = c->model,
        .prompt = it->prompt,
        .messages = it->msgs,
        .n_messages = it->n_msgs,
        .temperature = (float)c->temperature,
        .max_tokens = it->max_tokens,
        .tier = (llmc_tier)it->tier,
    };
    llmc_result res = {0};
    int rc = llmc_generate(run->rpc, &q, on_rpc_chunk, r, &res, err, sizeof(err));
    r->e2e_ms = ms_between(r->t_sched_ns, llm_now_ns());
    r->input_tokens = res.prompt_tokens;
    if (rc != LLM_OK) {
        rec_fail(r, llm_strerror(res.error_code ? res.error_code : rc), err);
    } else if (res.finish != 1 && res.finish != 2) { // stop, length
        char msg[64];
        snprintf(msg, sizeof(msg), "finish %s", llmc_finish_name(res.finish));
        rec_fail(r, llmc_finish_name(res.finish), msg);
    } else {
        r->ok = true;
        if (r->output_tokens == 0)
            r->output_tokens = res.completion_tokens;
    }
}

/* run_next claims the next request of the phase: LLM_OK with *rec (appended to
 * run->recs) and its item, or LLM_ECANCELED when the phase issues no more. */
static int
run_next(bench_run *run, bench_rec **rec, const bench_item **it)
{
    int rc = LLM_ECANCELED;
    pthread_mutex_lock(&run->mu);
    uint64_t now = llm_now_ns();
    uint64_t sched = run->open_loop ? run->next_sched_ns : now;
    if (run->issued >= run->limit || sched >= run->stop_ns || run->oom)
        goto out;
    if (run->issued == run->cap_recs) {
        int64_t cap = run->cap_recs ? 2 * run->cap_recs : 1024;
        bench_rec **v = realloc(run->recs, sizeof(bench_rec *) * (size_t)cap);
        if (!v) {
            run->oom = true;
            goto out;
        }
        run->recs = v;
        run->cap_recs = cap;
    }
    bench_rec *r = calloc(1, sizeof(*r));
    if (!r) {
        run->oom = true;
        goto out;
    }
    r->item = run->cursor;
    run->cursor = (run->cursor + 1) % run->ds->n;
    *it = &run->ds->items[r->item];
    r->tier = (*it)->tier;
    r->t_sched_ns = sched;
    r->start_ms = ms_between(run->t0_ns, sched);
    r->ttft_ms = r->tpot_ms = NAN;
    run->recs[run->issued++] = r;
    if (run->open_loop) {
        // Exponential gaps make a Poisson process; 1 - u is in (0, 1], so log is finite.
        double u = (double)(llm_splitmix64(&run->rng) >> 11) * 0x1.0p-53;
        run->next_sched_ns += (uint64_t)(-log(1.0 - u) / run->cfg->rate * 1e9);
    }
    *rec = r;
    rc = LLM_OK;
out:
    pthread_mutex_unlock(&run->mu);
    return rc;
}

typedef struct {
    bench_run *run;
    httpc *http;
} bench_thread;

static void *
thread_main(void *arg)
{
    bench_thread *t = arg;
    bench_run *run = t->run;
    bench_rec *r;
    const bench_item *it;
    while (run_next(run, &r, &it) == LLM_OK) {
        if (run->open_loop) {
            struct timespec ts = {(time_t)(r->t_sched_ns / 1000000000),
                                  (long)(r->t_sched_ns % 1000000000)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
            }
        }
        if (t->http)
            run_http(run, t->http, it, r);
        else
            run_rpc(run, it, r);
        if (r->ok)
            r->tpot_ms = bstats_tpot_ms(r->e2e_ms, r->ttft_ms, r->output_tokens);
    }
    return NULL;
}

/* run_phase issues run->limit requests (or until run->stop_ns) on n_threads threads and
 * waits for all of them. LLM_OK with the wall time in *duration_s; LLM_ENOMEM or
 * LLM_EIO (no thread could start) with err filled. */
static int
run_phase(bench_run *run, int n_threads, double duration_s, double *duration_out, char *err,
          size_t err_len)
{
    int rc = LLM_OK, started = 0;
    bench_thread *th = calloc((size_t)n_threads, sizeof(*th));
    pthread_t *tid = calloc((size_t)n_threads, sizeof(*tid));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    if (!th || !tid) {
        rc = LLM_ENOMEM;
        goto out;
    }
    for (int i = 0; i < n_threads; i++) {
        th[i].run = run;
        if (run->cfg->url[0] && (rc = httpc_new(run->cfg->url, (int)(run->cfg->timeout_s * 1000),
                                                &th[i].http, err, err_len)) != LLM_OK)
            goto out;
    }
    run->t0_ns = llm_now_ns();
    run->next_sched_ns = run->t0_ns;
    run->stop_ns = duration_s > 0 ? run->t0_ns + (uint64_t)(duration_s * 1e9) : UINT64_MAX;
    for (; started < n_threads; started++)
        if (pthread_create(&tid[started], &attr, thread_main, &th[started]) != 0)
            break;
    if (started == 0) {
        llm_errf(err, err_len, "cannot start threads");
        rc = LLM_EIO;
    }
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    *duration_out = (double)(llm_now_ns() - run->t0_ns) / 1e9;
    if (rc == LLM_OK && run->oom) {
        llm_errf(err, err_len, "out of memory");
        rc = LLM_ENOMEM;
    }
out:
    pthread_attr_destroy(&attr);
    for (int i = 0; th && i < n_threads; i++)
        httpc_free(th[i].http);
    free(th);
    free(tid);
    return rc;
}

static void
run_recs_free(bench_run *run)
{
    for (int64_t i = 0; i < run->issued; i++) {
        free(run->recs[i]->itl_ms);
        free(run->recs[i]);
    }
    free(run->recs);
    run->recs = NULL;
    run->issued = run->cap_recs = 0;
}

/* ---- report --------------------------------------------------------------------------- */

typedef struct {
    int64_t completed, failed, input_tokens, output_tokens;
    double duration_s;
    bstats_summary ttft, tpot, itl, e2e;
    bstats_goodput good, good_tier[BSTATS_N_TIERS];
    bstats_slo slo[BSTATS_N_TIERS];
} bench_report;

static int
report_build(const bench_run *run, const bstats_slo slo[BSTATS_N_TIERS], double duration_s,
             bench_report *rep)
{
    int rc = LLM_ENOMEM;
    int64_t n = run->issued, n_itl = 0;
    memset(rep, 0, sizeof(*rep));
    rep->duration_s = duration_s;
    memcpy(rep->slo, slo, sizeof(rep->slo));
    for (int64_t i = 0; i < n; i++)
        n_itl += run->recs[i]->ok ? run->recs[i]->n_itl : 0;
    double *ttft = malloc(sizeof(double) * (size_t)(n + 1));
    double *tpot = malloc(sizeof(double) * (size_t)(n + 1));
    double *e2e = malloc(sizeof(double) * (size_t)(n + 1));
    double *itl = malloc(sizeof(double) * (size_t)(n_itl + 1));
    bstats_req *br = malloc(sizeof(bstats_req) * (size_t)(n + 1));
    if (!ttft || !tpot || !e2e || !itl || !br)
        goto out;
    int n_ttft = 0, n_tpot = 0, n_e2e = 0, k = 0;
    for (int64_t i = 0; i < n; i++) {
        const bench_rec *r = run->recs[i];
        br[i] = (bstats_req){r->tier, r->ok, r->ttft_ms, r->tpot_ms, r->e2e_ms};
        if (!r->ok) {
            rep->failed++;
            continue;
        }
        rep->completed++;
        rep->input_tokens += r->input_tokens;
        rep->output_tokens += r->output_tokens;
        if (!isnan(r->ttft_ms))
            ttft[n_ttft++] = r->ttft_ms;
        if (!isnan(r->tpot_ms))
            tpot[n_tpot++] = r->tpot_ms;
        e2e[n_e2e++] = r->e2e_ms;
        memcpy(itl + k, r->itl_ms, sizeof(double) * (size_t)r->n_itl);
        k += r->n_itl;
    }
    if (bstats_summarize(ttft, n_ttft, &rep->ttft) != LLM_OK ||
        bstats_summarize(tpot, n_tpot, &rep->tpot) != LLM_OK ||
        bstats_summarize(itl, k, &rep->itl) != LLM_OK ||
        bstats_summarize(e2e, n_e2e, &rep->e2e) != LLM_OK)
        goto out;
    bstats_goodput_compute(br, (int)n, slo, duration_s, &rep->good, rep->good_tier);
    rc = LLM_OK;
out:
    free(ttft);
    free(tpot);
    free(e2e);
    free(itl);
    free(br);
    return rc;
}

static double
per_s(double x, double duration_s)
{
    return duration_s > 0 ? x / duration_s : 0;
}

static void
table_metric(FILE *f, const char *title, const char *name, const bstats_summary *s)
{
    int pad = (50 - (int)strlen(title) - 2) / 2;
    fprintf(f, "%.*s %s %.*s\n", pad, "--------------------------------------------------", title,
            50 - pad - (int)strlen(title) - 2,
            "--------------------------------------------------");
    char label[64];
    const char *which[4] = {"Mean", "Median", "P90", "P99"};
    double v[4] = {s->mean, s->p50, s->p90, s->p99};
    for (int i = 0; i < 4; i++) {
        snprintf(label, sizeof(label), "%s %s (ms):", which[i], name);
        if (isnan(v[i]))
            fprintf(f, "%-40s %s\n", label, "n/a");
        else
            fprintf(f, "%-40s %-10.2f\n", label, v[i]);
    }
}

static void
slo_text(const bstats_slo *s, char *buf, size_t cap)
{
    int n = 0;
    buf[0] = '\0';
    if (s->ttft_ms >= 0)
        n += snprintf(buf + n, cap - (size_t)n, "ttft<=%g ", s->ttft_ms);
    if (s->tpot_ms >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, "tpot<=%g ", s->tpot_ms);
    if (s->e2e_ms >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, "e2e<=%g ", s->e2e_ms);
    if (n == 0)
        snprintf(buf, cap, "no SLO");
    else if ((size_t)n <= cap)
        buf[n - 1] = '\0';
}

static void
table_print(FILE *f, const bench_report *r)
{
    fprintf(f, "============ Serving Benchmark Result ============\n");
    fprintf(f, "%-40s %-10lld\n", "Successful requests:", (long long)r->completed);
    fprintf(f, "%-40s %-10lld\n", "Failed requests:", (long long)r->failed);
    fprintf(f, "%-40s %-10.2f\n", "Benchmark duration (s):", r->duration_s);
    fprintf(f, "%-40s %-10lld\n", "Total input tokens:", (long long)r->input_tokens);
    fprintf(f, "%-40s %-10lld\n", "Total generated tokens:", (long long)r->output_tokens);
    fprintf(f, "%-40s %-10.2f\n",
            "Request throughput (req/s):", per_s((double)r->completed, r->duration_s));
    fprintf(f, "%-40s %-10.2f\n",
            "Input token throughput (tok/s):", per_s((double)r->input_tokens, r->duration_s));
    fprintf(f, "%-40s %-10.2f\n",
            "Output token throughput (tok/s):", per_s((double)r->output_tokens, r->duration_s));
    table_metric(f, "Time to First Token", "TTFT", &r->ttft);
    table_metric(f, "Time per Output Token (excl. 1st token)", "TPOT", &r->tpot);
    table_metric(f, "Inter-token Latency", "ITL", &r->itl);
    table_metric(f, "End-to-end Latency", "E2E", &r->e2e);
    fprintf(f, "--------------------- Goodput --------------------\n");
    fprintf(f, "%-40s %-10.2f\n", "Goodput (req/s):", r->good.req_per_s);
    if (isnan(r->good.fraction))
        fprintf(f, "%-40s %s\n", "Good fraction:", "n/a");
    else
        fprintf(f, "%-40s %-10.4f\n", "Good fraction:", r->good.fraction);
    for (int k = 0; k < BSTATS_N_TIERS; k++) {
        int t = TIER_ORDER[k];
        const bstats_goodput *g = &r->good_tier[t];
        if (g->requests == 0)
            continue;
        char slo[128], label[160];
        slo_text(&r->slo[t], slo, sizeof(slo));
        snprintf(label, sizeof(label), "  %s (%s):", TIER_NAMES[t], slo);
        fprintf(f, "%-40s %d/%d good, %.2f req/s\n", label, g->good, g->requests, g->req_per_s);
    }
    fprintf(f, "==================================================\n");
}

/* jnum adds a number, or null for NaN (no data). */
static void
jnum(cJSON *o, const char *k, double v)
{
    if (isnan(v) || isinf(v))
        cJSON_AddNullToObject(o, k);
    else
        cJSON_AddNumberToObject(o, k, v);
}

static void
jsummary(cJSON *o, const char *k, const bstats_summary *s)
{
    cJSON *m = cJSON_AddObjectToObject(o, k);
    jnum(m, "mean", s->mean);
    jnum(m, "p50", s->p50);
    jnum(m, "p90", s->p90);
    jnum(m, "p99", s->p99);
}

static void
jslo(cJSON *o, const bstats_slo *s)
{
    cJSON *m = cJSON_AddObjectToObject(o, "slo");
    if (s->ttft_ms >= 0)
        cJSON_AddNumberToObject(m, "ttft_ms", s->ttft_ms);
    if (s->tpot_ms >= 0)
        cJSON_AddNumberToObject(m, "tpot_ms", s->tpot_ms);
    if (s->e2e_ms >= 0)
        cJSON_AddNumberToObject(m, "e2e_ms", s->e2e_ms);
}

static cJSON *
config_json(const cfg_opt *opts, int n)
{
    cJSON *c = cJSON_CreateObject();
    for (int i = 0; c && i < n; i++) {
        const cfg_opt *o = &opts[i];
        switch (o->type) {
        case CFG_STR: {
            const char *v = *(char **)o->dst;
            // The key is a secret: say whether one was given, never what it is.
            if (strcmp(o->name, "api_key") == 0 && v[0])
                v = "(set)";
            cJSON_AddStringToObject(c, o->name, v);
            break;
        }
        case CFG_INT: cJSON_AddNumberToObject(c, o->name, (double)*(int64_t *)o->dst); break;
        case CFG_DOUBLE: cJSON_AddNumberToObject(c, o->name, *(double *)o->dst); break;
        case CFG_BOOL: cJSON_AddBoolToObject(c, o->name, *(bool *)o->dst); break;
        case CFG_STRLIST: {
            const cfg_strlist *l = o->dst;
            cJSON *a = cJSON_AddArrayToObject(c, o->name);
            for (int k = 0; a && k < l->n; k++)
                cJSON_AddItemToArray(a, cJSON_CreateString(l->items[k]));
            break;
        }
        }
    }
    return c;
}

static cJSON *
report_json(const bench_report *r, const bench_run *run, const cfg_opt *opts, int n_opts)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddItemToObject(o, "config", config_json(opts, n_opts));
    cJSON_AddNumberToObject(o, "completed", (double)r->completed);
    cJSON_AddNumberToObject(o, "failed", (double)r->failed);
    cJSON *errs = cJSON_AddObjectToObject(o, "errors");
    for (int64_t i = 0; i < run->issued; i++) {
        const bench_rec *q = run->recs[i];
        if (q->ok)
            continue;
        cJSON *c = cJSON_GetObjectItemCaseSensitive(errs, q->err_key);
        if (c)
            cJSON_SetNumberValue(c, c->valuedouble + 1);
        else
            cJSON_AddNumberToObject(errs, q->err_key, 1);
    }
    cJSON_AddNumberToObject(o, "duration_s", r->duration_s);
    cJSON_AddNumberToObject(o, "request_throughput", per_s((double)r->completed, r->duration_s));
    cJSON_AddNumberToObject(o, "input_tokens", (double)r->input_tokens);
    cJSON_AddNumberToObject(o, "output_tokens", (double)r->output_tokens);
    cJSON_AddNumberToObject(o, "input_tok_per_s", per_s((double)r->input_tokens, r->duration_s));
    cJSON_AddNumberToObject(o, "output_tok_per_s", per_s((double)r->output_tokens, r->duration_s));
    jsummary(o, "ttft_ms", &r->ttft);
    jsummary(o, "tpot_ms", &r->tpot);
    jsummary(o, "itl_ms", &r->itl);
    jsummary(o, "e2e_ms", &r->e2e);
    cJSON *g = cJSON_AddObjectToObject(o, "goodput");
    jnum(g, "req_per_s", r->good.req_per_s);
    jnum(g, "fraction", r->good.fraction);
    cJSON *bt = cJSON_AddObjectToObject(g, "by_tier");
    for (int k = 0; k < BSTATS_N_TIERS; k++) {
        int t = TIER_ORDER[k];
        const bstats_goodput *gt = &r->good_tier[t];
        if (gt->requests == 0)
            continue;
        cJSON *m = cJSON_AddObjectToObject(bt, TIER_NAMES[t]);
        jnum(m, "req_per_s", gt->req_per_s);
        jnum(m, "fraction", gt->fraction);
        cJSON_AddNumberToObject(m, "completed", gt->completed);
        cJSON_AddNumberToObject(m, "good", gt->good);
        jslo(m, &r->slo[t]);
    }
    if (run->cfg->per_request) {
        cJSON *a = cJSON_AddArrayToObject(o, "requests");
        for (int64_t i = 0; a && i < run->issued; i++) {
            const bench_rec *q = run->recs[i];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddItemToArray(a, e);
            cJSON_AddStringToObject(e, "tier", TIER_NAMES[q->tier]);
            cJSON_AddBoolToObject(e, "ok", q->ok);
            if (q->status)
                cJSON_AddNumberToObject(e, "status", q->status);
            else
                cJSON_AddNullToObject(e, "status");
            if (q->ok)
                cJSON_AddNullToObject(e, "error");
            else
                cJSON_AddStringToObject(e, "error", q->error);
            cJSON_AddNumberToObject(e, "input_tokens", (double)q->input_tokens);
            cJSON_AddNumberToObject(e, "output_tokens", (double)q->output_tokens);
            jnum(e, "ttft_ms", q->ttft_ms);
            jnum(e, "e2e_ms", q->e2e_ms);
            jnum(e, "tpot_ms", q->tpot_ms);
            jnum(e, "start_ms", q->start_ms);
        }
    }
    return o;
}

/* ---- main ----------------------------------------------------------------------------- */

static int
usage_error(const char *msg)
{
    fprintf(stderr, PROG ": error: %s (see --help)\n", msg);
    return 2;
}

int
main(int argc, char **argv)
{
    bench_cfg c = {0};
    cfg_opt opts[N_OPTS];
    bench_opts(&c, opts);
    bench_dataset ds = {0};
    bench_run run = {0};
    bench_report rep;
    bstats_slo slo[BSTATS_N_TIERS], star = bstats_slo_none();
    bool own[BSTATS_N_TIERS] = {0}, has_star = false;
    char err[512] = "";
    int code = 2, rc;
    FILE *jf = NULL;
    cJSON *js = NULL;
    pthread_mutex_init(&run.mu, NULL);

    rc = cfg_load(opts, N_OPTS, argc, argv, err, sizeof(err));
    if (rc == LLM_ECANCELED) {
        cfg_usage(stdout, PROG,
                  "a serving benchmark: replay a JSONL dataset against an OpenAI HTTP server "
                  "(--url) or our RPC (--addr), closed loop (--concurrency) or Poisson "
                  "arrivals (--rate)",
                  opts, N_OPTS);
        code = 0;
        goto done;
    }
    if (rc != LLM_OK) {
        fprintf(stderr, PROG ": error: %s\n", err);
        goto done;
    }
    if (!c.url[0] == !c.addr[0]) {
        code = usage_error("give exactly one target: --url http://HOST:PORT or --addr "
                           "tcp://HOST:PORT");
        goto done;
    }
    if (strcmp(c.api, "chat") != 0 && strcmp(c.api, "completions") != 0) {
        code = usage_error("--api: chat or completions");
        goto done;
    }
    if (c.url[0] && !c.model[0]) {
        code = usage_error("--model is required over HTTP (OpenAI servers need it)");
        goto done;
    }
    if ((c.rate > 0) == (c.concurrency > 0)) {
        code = usage_error("give exactly one of --rate R (open loop) and --concurrency N "
                           "(closed loop)");
        goto done;
    }
    if (!c.dataset[0]) {
        code = usage_error("--dataset FILE is required");
        goto done;
    }
    for (int t = 0; t < BSTATS_N_TIERS; t++)
        slo[t] = bstats_slo_none();
    for (int i = 0; i < c.slo.n; i++)
        if (slo_parse(c.slo.items[i], slo, own, &star, &has_star, err, sizeof(err)) != LLM_OK) {
            fprintf(stderr, PROG ": error: %s\n", err);
            goto done;
        }
    for (int t = 0; t < BSTATS_N_TIERS; t++)
        if (!own[t] && has_star)
            slo[t] = star;
    if ((rc = dataset_load(c.dataset, &ds, err, sizeof(err))) != LLM_OK) {
        fprintf(stderr, PROG ": error: %s\n", err);
        code = rc == LLM_ENOMEM ? 1 : 2;
        goto done;
    }
    code = 1;
    for (int i = 0; c.url[0] && i < ds.n; i++)
        if (item_http_body(&ds.items[i], &c) != LLM_OK) {
            fprintf(stderr, PROG ": error: out of memory\n");
            goto done;
        }
    if (c.url[0]) {
        httpc *probe = NULL;
        if (httpc_new(c.url, 0, &probe, err, sizeof(err)) != LLM_OK) {
            fprintf(stderr, PROG ": error: --url: %s\n", err);
            code = 2;
            goto done;
        }
        const char *base = httpc_base_path(probe);
        size_t bl = strlen(base);
        bool v1 = bl >= 3 && strcmp(base + bl - 3, "/v1") == 0;
        snprintf(run.path, sizeof(run.path), "%s%s/%s", base, v1 ? "" : "/v1",
                 strcmp(c.api, "chat") == 0 ? "chat/completions" : "completions");
        httpc_free(probe);
    } else if (llmc_open(c.addr, (int)(c.timeout_s * 1000), &run.rpc, err, sizeof(err)) != LLM_OK) {
        fprintf(stderr, PROG ": error: --addr: %s\n", err);
        code = 2;
        goto done;
    }
    if (c.json[0] && strcmp(c.json, "-") != 0 && !(jf = fopen(c.json, "w"))) {
        fprintf(stderr, PROG ": error: --json %s: %s\n", c.json, strerror(errno));
        goto done;
    }
    signal(SIGPIPE, SIG_IGN);
    run.cfg = &c;
    run.ds = &ds;
    run.rng = (uint64_t)c.seed;
    int64_t limit = c.num_requests > 0 ? c.num_requests : c.duration_s > 0 ? INT64_MAX : ds.n;
    int64_t cap = c.concurrency > 0 ? c.concurrency : c.max_concurrency;
    double duration_s = 0;
    if (c.warmup > 0) {
        // Warm-up: a closed loop over the first lines; its records are dropped.
        run.limit = c.warmup;
        run.open_loop = false;
        if ((rc = run_phase(&run, (int)(cap < c.warmup ? cap : c.warmup), 0, &duration_s, err,
                            sizeof(err))) != LLM_OK) {
            fprintf(stderr, PROG ": error: %s\n", err);
            goto done;
        }
        run_recs_free(&run);
    }
    run.limit = limit;
    run.open_loop = c.rate > 0;
    if ((rc = run_phase(&run, (int)(cap < limit ? cap : limit), c.duration_s, &duration_s, err,
                        sizeof(err))) != LLM_OK) {
        fprintf(stderr, PROG ": error: %s\n", err);
        goto done;
    }
    if (report_build(&run, slo, duration_s, &rep) != LLM_OK) {
        fprintf(stderr, PROG ": error: out of memory\n");
        goto done;
    }
    bool json_stdout = strcmp(c.json, "-") == 0;
    table_print(json_stdout ? stderr : stdout, &rep);
    if (c.json[0]) {
        js = report_json(&rep, &run, opts, N_OPTS);
        char *text = js ? cJSON_Print(js) : NULL;
        FILE *out = json_stdout ? stdout : jf;
        bool ok = text && fputs(text, out) >= 0 && fputc('\n', out) != EOF && fflush(out) == 0;
        free(text);
        if (!ok) {
            fprintf(stderr, PROG ": error: cannot write the JSON results\n");
            goto done;
        }
    }
    code = 0;
    if (rep.failed > 0) {
        const char *first = "";
        for (int64_t i = 0; i < run.issued && !first[0]; i++)
            if (!run.recs[i]->ok)
                first = run.recs[i]->error;
        fprintf(stderr, PROG ": %s: %lld of %lld requests failed (first: %s)\n",
                rep.completed == 0 ? "error" : "warning", (long long)rep.failed,
                (long long)(rep.failed + rep.completed), first);
        if (rep.completed == 0)
            code = 1;
    } else if (run.issued == 0) {
        fprintf(stderr, PROG ": error: no request was issued\n");
        code = 1;
    }
done:
    cJSON_Delete(js);
    if (jf && fclose(jf) != 0 && code == 0) {
        fprintf(stderr, PROG ": error: --json %s: %s\n", c.json, strerror(errno));
        code = 1;
    }
    run_recs_free(&run);
    llmc_close(run.rpc);
    pthread_mutex_destroy(&run.mu);
    dataset_free(&ds);
    cfg_free(opts, N_OPTS);
    return code;
}
