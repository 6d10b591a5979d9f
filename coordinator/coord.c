/*
 * coord.c - the coordinator's settings table and lifecycle: load the settings and the
 * models' tokenizers, open the membership and client ports, then run the health loop
 * (registry and relay ticks) until a signal.
 */
#define _DEFAULT_SOURCE // nanosleep

#include "coord.h"

#include "auth.h"
#include "config.h"
#include "http.h"
#include "ctok.h"
#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "members.h"
#include "metrics.h"
#include "registry.h"
#include "relay.h"
#include "router.h"

#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *listen, *register_listen, *default_policy, *log_level, *http_bind;
    cfg_strlist models, workers, api_keys;
    bool auth;
    int64_t http_port, http_max_connections, http_timeout_s, http_max_body_bytes,
        http_default_max_tokens, http_keepalive_s, queue_critical, queue_high, queue_normal,
        queue_low, queue_background;
    int64_t contexts, max_requests, max_attempts, call_timeout_ms, poll_wait_ms, max_wait_ms,
        accept_wait_ms, finished_ttl_ms, max_prompt_bytes, heartbeat_timeout_ms, probe_interval_ms,
        breaker_failures, breaker_backoff_ms, breaker_backoff_max_ms, max_workers,
        prefix_imbalance_cap, tick_ms;
    double prefix_load_penalty;
} coord_cfg;

static coord_cfg C;

static const cfg_opt OPTS[] = {
    {"listen", CFG_STR, &C.listen, "tcp://127.0.0.1:7070", 0, 0, "client RPC URL"},
    {"register_listen", CFG_STR, &C.register_listen, "tcp://127.0.0.1:7079", 0, 0,
     "URL workers register and heartbeat to"},
    {"models", CFG_STRLIST, &C.models, "", 0, 0,
     "a model served: \"NAME tokenizer=GGUF|synthetic [policy=POLICY]\" (repeatable)"},
    {"workers", CFG_STRLIST, &C.workers, "", 0, 0,
     "a static worker: \"ID address=URL model=NAME\" (repeatable)"},
    {"default_policy", CFG_STR, &C.default_policy, "prefix", 0, 0,
     "round_robin | least_loaded | p2c | latency | prefix"},
    {"contexts", CFG_INT, &C.contexts, "1024", 1, 65536, "client requests in flight on the socket"},
    {"max_requests", CFG_INT, &C.max_requests, "65536", 1, 1 << 24,
     "streams tracked at once (running or recently finished)"},
    {"max_attempts", CFG_INT, &C.max_attempts, "3", 1, 16, "workers one request may be tried on"},
    {"call_timeout_ms", CFG_INT, &C.call_timeout_ms, "10000", 1, 600000,
     "a call to a worker fails after this long (a busy worker answers a Generate after its "
     "current step)"},
    {"poll_wait_ms", CFG_INT, &C.poll_wait_ms, "10000", 1, 600000, "long poll length to workers"},
    {"max_wait_ms", CFG_INT, &C.max_wait_ms, "30000", 0, 600000, "longest client long poll"},
    {"accept_wait_ms", CFG_INT, &C.accept_wait_ms, "2000", 0, 600000,
     "a client's Generate waits this long for a worker to take it"},
    {"finished_ttl_ms", CFG_INT, &C.finished_ttl_ms, "30000", 0, 3600000,
     "a finished stream stays readable this long"},
    {"max_prompt_bytes", CFG_INT, &C.max_prompt_bytes, "1048576", 1, 1 << 28,
     "prompt text size limit"},
    {"heartbeat_timeout_ms", CFG_INT, &C.heartbeat_timeout_ms, "3000", 10, 3600000,
     "a registered worker is down after this long without a heartbeat"},
    {"probe_interval_ms", CFG_INT, &C.probe_interval_ms, "5000", 10, 3600000,
     "Health probe period per worker"},
    {"breaker_failures", CFG_INT, &C.breaker_failures, "3", 1, 1000,
     "consecutive failures that open a worker's circuit breaker"},
    {"breaker_backoff_ms", CFG_INT, &C.breaker_backoff_ms, "1000", 1, 3600000,
     "an open breaker's first wait before its half-open probe"},
    {"breaker_backoff_max_ms", CFG_INT, &C.breaker_backoff_max_ms, "30000", 1, 3600000,
     "cap of the doubling breaker wait"},
    {"max_workers", CFG_INT, &C.max_workers, "1024", 1, 65536, "workers the registry holds"},
    {"prefix_load_penalty", CFG_DOUBLE, &C.prefix_load_penalty, "2", 0, 1e6,
     "prefix policy: blocks of prefix one queued request is worth"},
    {"prefix_imbalance_cap", CFG_INT, &C.prefix_imbalance_cap, "8", 0, 1 << 20,
     "prefix policy: never pick a worker this much busier than the least busy"},
    {"tick_ms", CFG_INT, &C.tick_ms, "5", 1, 1000, "health loop period"},
    {"http_port", CFG_INT, &C.http_port, "8080", -1, 65535,
     "HTTP front door port (OpenAI API); 0 picks a free one, -1 turns HTTP off"},
    {"http_bind", CFG_STR, &C.http_bind, "127.0.0.1", 0, 0, "HTTP front door IPv4 address"},
    {"http_max_connections", CFG_INT, &C.http_max_connections, "2048", 1, 65536,
     "open HTTP connections at once (one thread each)"},
    {"http_timeout_s", CFG_INT, &C.http_timeout_s, "30", 1, 3600,
     "an idle HTTP connection (slow headers or body) is closed after this long"},
    {"http_max_body_bytes", CFG_INT, &C.http_max_body_bytes, "4194304", 1024, 1 << 30,
     "larger request bodies get 413"},
    {"http_default_max_tokens", CFG_INT, &C.http_default_max_tokens, "256", 1, 1 << 20,
     "max_tokens of a chat request that gives none (completions: 16, as OpenAI)"},
    {"http_keepalive_s", CFG_INT, &C.http_keepalive_s, "15", 1, 3600,
     "an SSE comment after this long without tokens"},
    {"auth", CFG_BOOL, &C.auth, "true", 0, 0,
     "require an API key (api_keys) on every HTTP endpoint but /health"},
    {"api_keys", CFG_STRLIST, &C.api_keys, "", 0, 0,
     "an API key: \"NAME sha256=HEX role=admin|user [rps=R] [tpm=T] [max_tier=TIER]\" "
     "(repeatable; HEX = sha256 of the key)"},
    {"queue_critical", CFG_INT, &C.queue_critical, "1024", 0, 1 << 24,
     "admission: critical requests waiting for a first token, at most (0 = no bound)"},
    {"queue_high", CFG_INT, &C.queue_high, "1024", 0, 1 << 24, "admission: the same, tier high"},
    {"queue_normal", CFG_INT, &C.queue_normal, "512", 0, 1 << 24,
     "admission: the same, tier normal"},
    {"queue_low", CFG_INT, &C.queue_low, "256", 0, 1 << 24, "admission: the same, tier low"},
    {"queue_background", CFG_INT, &C.queue_background, "128", 0, 1 << 24,
     "admission: the same, tier background"},
    {"log_level", CFG_STR, &C.log_level, "info", 0, 0, "debug | info | warn | error | off"},
};
#define N_OPTS ((int)(sizeof(OPTS) / sizeof(OPTS[0])))

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
    stop_signal = sig;
}

/* raise_fd_limit: every HTTP connection is a socket plus, while it generates, an
 * eventfd; the usual soft limit of 1024 would cap the front door near 500 clients. */
static void
raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            LOG_WARN("event=fd_limit_unchanged");
    }
}

/* spec_value finds "key=value" among the space-separated words of spec. */
static bool
spec_value(const char *spec, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = spec; *p;) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ' ');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            snprintf(out, cap, "%.*s", (int)(n - kl - 1), p + kl + 1);
            return true;
        }
        p += n;
    }
    return false;
}

/* spec_check refuses words other than the first that are not one of keys. */
static bool
spec_check(const char *spec, const char *const *keys, int n_keys, char *bad, size_t cap)
{
    const char *p = spec;
    while (*p == ' ')
        p++;
    p += strcspn(p, " ");
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n == 0)
            break;
        bool ok = false;
        for (int k = 0; k < n_keys && !ok; k++) {
            size_t kl = strlen(keys[k]);
            ok = n > kl && strncmp(p, keys[k], kl) == 0 && p[kl] == '=';
        }
        if (!ok) {
            snprintf(bad, cap, "%.*s", (int)n, p);
            return false;
        }
        p += n;
    }
    return true;
}

static void
spec_name(const char *spec, char *out, size_t cap)
{
    while (*spec == ' ')
        spec++;
    snprintf(out, cap, "%.*s", (int)strcspn(spec, " "), spec);
}

/* load_models declares every configured model and loads its tokenizer. */
static int
load_models(registry *reg, ctok **toks, route_policy def)
{
    static const char *const keys[] = {"tokenizer", "policy"};
    char bad[128];
    for (int i = 0; i < C.models.n; i++) {
        const char *spec = C.models.items[i];
        char name[REG_MAX_ID], tok[1024] = "", pol[64] = "";
        spec_name(spec, name, sizeof(name));
        route_policy p = def;
        if (!spec_check(spec, keys, 2, bad, sizeof(bad))) {
            fprintf(stderr, "llm-coordinator: error: models \"%s\": unknown setting '%s'\n", spec,
                    bad);
            return LLM_EINVAL;
        }
        if (!name[0] || !spec_value(spec, "tokenizer", tok, sizeof(tok))) {
            fprintf(stderr,
                    "llm-coordinator: error: models \"%s\": want \"NAME tokenizer=GGUF|synthetic "
                    "[policy=POLICY]\"\n",
                    spec);
            return LLM_EINVAL;
        }
        if (spec_value(spec, "policy", pol, sizeof(pol)) && route_policy_parse(pol, &p) != LLM_OK) {
            fprintf(stderr, "llm-coordinator: error: models \"%s\": unknown policy '%s'\n", spec,
                    pol);
            return LLM_EINVAL;
        }
        int m = reg_add_model(reg, name, p);
        if (m < 0) {
            fprintf(stderr, "llm-coordinator: error: model '%s' is listed twice\n", name);
            return LLM_EINVAL;
        }
        char err[512] = "";
        int rc = ctok_new(tok, &toks[m], err, sizeof(err));
        if (rc != LLM_OK) {
            fprintf(stderr, "llm-coordinator: error: model '%s': tokenizer %s: %s\n", name, tok,
                    err[0] ? err : llm_strerror(rc));
            return rc;
        }
        LOG_INFO("event=model name=%s tokenizer=%s policy=%s", name, tok, route_policy_name(p));
    }
    return LLM_OK;
}

static int
load_workers(registry *reg)
{
    static const char *const keys[] = {"address", "model"};
    char bad[128];
    for (int i = 0; i < C.workers.n; i++) {
        const char *spec = C.workers.items[i];
        char id[REG_MAX_ID], addr[REG_MAX_ADDRESS] = "", model[REG_MAX_ID] = "", err[256] = "";
        spec_name(spec, id, sizeof(id));
        if (!spec_check(spec, keys, 2, bad, sizeof(bad))) {
            fprintf(stderr, "llm-coordinator: error: workers \"%s\": unknown setting '%s'\n", spec,
                    bad);
            return LLM_EINVAL;
        }
        if (!spec_value(spec, "address", addr, sizeof(addr))) {
            fprintf(stderr,
                    "llm-coordinator: error: workers \"%s\": want \"ID address=URL "
                    "[model=NAME]\"\n",
                    spec);
            return LLM_EINVAL;
        }
        spec_value(spec, "model", model, sizeof(model));
        int rc = reg_add_static(reg, id, addr, model, err, sizeof(err));
        if (rc != LLM_OK) {
            fprintf(stderr, "llm-coordinator: error: workers \"%s\": %s\n", spec, err);
            return rc;
        }
    }
    return LLM_OK;
}

int
coord_main(int argc, char **argv)
{
    char err[512] = "";
    int rc = cfg_load(OPTS, N_OPTS, argc, argv, err, sizeof(err));
    if (rc == LLM_ECANCELED) {
        cfg_usage(stdout, "llm-coordinator",
                  "route requests to workers, fail over, report (see docs/config.md)", OPTS,
                  N_OPTS);
        return 0;
    }
    if (rc != LLM_OK) {
        fprintf(stderr, "llm-coordinator: error: %s\n", err);
        return 2;
    }
    int code = 2;
    registry *reg = NULL;
    relay *rl = NULL;
    members *mb = NULL;
    http_server *web = NULL;
    auth *keys = NULL;
    metrics *met = metrics_new();
    ctok *toks[64] = {0};
    route_policy def;
    if (log_parse_level(C.log_level) < 0) {
        fprintf(stderr, "llm-coordinator: error: unknown log_level '%s'\n", C.log_level);
        goto done;
    }
    log_set_level((log_level)log_parse_level(C.log_level));
    if (route_policy_parse(C.default_policy, &def) != LLM_OK) {
        fprintf(stderr, "llm-coordinator: error: unknown default_policy '%s'\n", C.default_policy);
        goto done;
    }
    if (C.models.n < 1 || C.models.n > 64) {
        fprintf(stderr, "llm-coordinator: error: give 1 to 64 models: --models \"NAME "
                        "tokenizer=GGUF|synthetic [policy=POLICY]\"\n");
        goto done;
    }
    if (!met) {
        fprintf(stderr, "llm-coordinator: error: out of memory\n");
        code = 1;
        goto done;
    }
    reg_opts ro = {
        .max_workers = (int)C.max_workers,
        .heartbeat_timeout_ms = (int)C.heartbeat_timeout_ms,
        .breaker_failures = (int)C.breaker_failures,
        .breaker_backoff_ms = (int)C.breaker_backoff_ms,
        .breaker_backoff_max_ms = (int)C.breaker_backoff_max_ms < (int)C.breaker_backoff_ms
                                      ? (int)C.breaker_backoff_ms
                                      : (int)C.breaker_backoff_max_ms,
        .call_timeout_ms = (int)C.call_timeout_ms,
        .route = route_opts_default(),
    };
    ro.route.prefix_load_penalty = C.prefix_load_penalty;
    ro.route.prefix_imbalance_cap = (int)C.prefix_imbalance_cap;
    if (reg_new(&ro, met, &reg) != LLM_OK) {
        fprintf(stderr, "llm-coordinator: error: cannot create the registry\n");
        code = 1;
        goto done;
    }
    if (load_models(reg, toks, def) != LLM_OK || load_workers(reg) != LLM_OK)
        goto done;
    code = 1;
    relay_opts o = {
        .listen = C.listen,
        .contexts = (int)C.contexts,
        .max_requests = (int)C.max_requests,
        .max_attempts = (int)C.max_attempts,
        .call_timeout_ms = (int)C.call_timeout_ms,
        .poll_wait_ms = (int)C.poll_wait_ms,
        .max_wait_ms = (int)C.max_wait_ms,
        .accept_wait_ms = (int)C.accept_wait_ms,
        .finished_ttl_ms = (int)C.finished_ttl_ms,
        .max_prompt_bytes = (int)C.max_prompt_bytes,
        .queue_limit = {[LLM__SLA_TIER__TIER_NORMAL] = (int)C.queue_normal,
                        [LLM__SLA_TIER__TIER_CRITICAL] = (int)C.queue_critical,
                        [LLM__SLA_TIER__TIER_HIGH] = (int)C.queue_high,
                        [LLM__SLA_TIER__TIER_LOW] = (int)C.queue_low,
                        [LLM__SLA_TIER__TIER_BACKGROUND] = (int)C.queue_background},
    };
    if (C.auth && C.http_port >= 0 && C.api_keys.n == 0) {
        fprintf(stderr, "llm-coordinator: error: auth is on but no api_keys are configured: "
                        "add api_keys, or set auth = false for local use\n");
        code = 2;
        goto done;
    }
    if ((rc = auth_new((const char *const *)C.api_keys.items, C.api_keys.n, &keys, err,
                       sizeof(err))) != LLM_OK) {
        fprintf(stderr, "llm-coordinator: error: api_keys: %s\n", err);
        code = 2;
        goto done;
    }
    raise_fd_limit();
    if ((rc = relay_new(reg, toks, met, &o, &rl, err, sizeof(err))) != LLM_OK ||
        (rc = members_listen(reg, met, C.register_listen, 16, &mb, err, sizeof(err))) != LLM_OK ||
        (rc = relay_listen(rl, err, sizeof(err))) != LLM_OK) {
        fprintf(stderr, "llm-coordinator: error: %s\n", err[0] ? err : llm_strerror(rc));
        goto done;
    }
    if (C.http_port >= 0) {
        http_opts ho = {
            .bind = C.http_bind,
            .port = (int)C.http_port,
            .max_connections = (int)C.http_max_connections,
            .timeout_s = (int)C.http_timeout_s,
            .max_body_bytes = (size_t)C.http_max_body_bytes,
            .default_max_tokens = (int)C.http_default_max_tokens,
            .keepalive_s = (int)C.http_keepalive_s,
            .drain_timeout_ms = (int)C.call_timeout_ms,
            .auth = C.auth ? keys : NULL,
            .rl = rl,
            .reg = reg,
            .m = met,
        };
        if ((rc = http_start(&ho, &web, err, sizeof(err))) != LLM_OK) {
            fprintf(stderr, "llm-coordinator: error: %s\n", err[0] ? err : llm_strerror(rc));
            goto done;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    LOG_INFO("event=coordinator_ready listen=%s register=%s http_port=%d auth=%d models=%d "
             "static_workers=%d",
             C.listen, C.register_listen, web ? http_port(web) : -1, (int)C.auth, C.models.n,
             C.workers.n);
    printf("llm-coordinator: ready on %s (workers register at %s, HTTP on %s:%d)\n", C.listen,
           C.register_listen, C.http_bind, web ? http_port(web) : -1);
    fflush(stdout);
    // The health loop: registry (connections, heartbeat timeouts, breakers, probes) and
    // relay (long polls whose wait is over, finished streams past their TTL).
    while (!stop_signal) {
        int64_t now = llm_now_ms();
        reg_tick(reg, now, (int)C.probe_interval_ms);
        relay_tick(rl, now);
        llm_sleep_ms((int)C.tick_ms);
    }
    LOG_INFO("event=coordinator_stopping signal=%d", (int)stop_signal);
    code = 0;

done:
    http_stop(web); // before the relay: its connections hold streams
    members_free(mb);
    relay_close(rl);
    relay_free(rl);
    reg_free(reg);
    auth_free(keys);
    for (int i = 0; i < 64; i++)
        ctok_free(toks[i]);
    metrics_free(met);
    cfg_free(OPTS, N_OPTS);
    return code;
}
