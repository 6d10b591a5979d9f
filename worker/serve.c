/*
 * serve.c - the worker server's settings table and lifecycle.
 *
 * A drain starts in one of two ways, SIGTERM/SIGINT or a Drain RPC (server.c puts the
 * scheduler into draining), and then runs one path: wait for running requests and their
 * readers, deregister, exit 0.
 */
#define _DEFAULT_SOURCE // sysconf(_SC_NPROCESSORS_ONLN), gethostname

#include "serve.h"

#include "announce.h"
#include "config.h"
#include "engine.h"
#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "metrics.h"
#include "sched.h"
#include "server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char *engine, *model, *model_name, *listen, *advertise, *coordinator, *worker_id, *log_level,
        *kv_type;
    int64_t threads, ctx, kv_memory_mb, step_tokens, max_running, prefill_chunk, max_waiting,
        contexts, first_chunk_wait_ms, max_wait_ms, max_prompt_bytes, heartbeat_ms, finished_ttl_ms,
        drain_timeout_ms, summary_max;
    int64_t synth_step_us, synth_prefill_us, synth_ctx, synth_blocks;
    bool mlock, pin_threads;
} serve_cfg;

static serve_cfg C;

static const cfg_opt OPTS[] = {
    {"engine", CFG_STR, &C.engine, "model", 0, 0, "model | synthetic"},
    {"model", CFG_STR, &C.model, "", 0, 0, "GGUF file (engine model)"},
    {"model_name", CFG_STR, &C.model_name, "", 0, 0,
     "name requests use (default: the file name without .gguf)"},
    {"listen", CFG_STR, &C.listen, "tcp://127.0.0.1:7071", 0, 0, "NNG URL to serve on"},
    {"advertise", CFG_STR, &C.advertise, "", 0, 0,
     "URL the coordinator should use (default: listen)"},
    {"coordinator", CFG_STR, &C.coordinator, "", 0, 0,
     "coordinator registration URL (empty: do not register)"},
    {"worker_id", CFG_STR, &C.worker_id, "", 0, 0, "id in the registry (default: host:pid)"},
    {"threads", CFG_INT, &C.threads, "0", 0, 1024, "compute threads (0: online CPUs)"},
    {"pin_threads", CFG_BOOL, &C.pin_threads, "false", 0, 0,
     "bind each compute thread to one CPU of the process's set"},
    {"ctx", CFG_INT, &C.ctx, "0", 0, 1 << 20,
     "longest sequence in tokens (0: the model's context)"},
    {"kv_memory_mb", CFG_INT, &C.kv_memory_mb, "1024", 1, 1 << 20, "KV block pool budget"},
    {"step_tokens", CFG_INT, &C.step_tokens, "512", 1, 65536, "tokens per forward step"},
    {"max_running", CFG_INT, &C.max_running, "64", 1, 4096, "sequences in a step at most"},
    {"prefill_chunk", CFG_INT, &C.prefill_chunk, "256", 1, 65536,
     "prompt tokens one sequence adds to a step at most"},
    {"max_waiting", CFG_INT, &C.max_waiting, "1024", 0, 1 << 20, "queue bound"},
    {"contexts", CFG_INT, &C.contexts, "256", 1, 65536, "requests in flight on the socket"},
    {"first_chunk_wait_ms", CFG_INT, &C.first_chunk_wait_ms, "5", 0, 10000,
     "Generate waits this long to carry the first tokens"},
    {"max_wait_ms", CFG_INT, &C.max_wait_ms, "30000", 0, 600000, "longest Next long poll"},
    {"max_prompt_bytes", CFG_INT, &C.max_prompt_bytes, "1048576", 1, 1 << 28,
     "prompt text size limit"},
    {"heartbeat_ms", CFG_INT, &C.heartbeat_ms, "1000", 10, 600000, "heartbeat period"},
    {"summary_max", CFG_INT, &C.summary_max, "256", 0, 65536, "prefix block hashes per heartbeat"},
    {"finished_ttl_ms", CFG_INT, &C.finished_ttl_ms, "30000", 0, 3600000,
     "a finished stream stays readable this long"},
    {"drain_timeout_ms", CFG_INT, &C.drain_timeout_ms, "60000", 0, 3600000,
     "on SIGTERM, wait this long for running requests"},
    {"synthetic_step_us", CFG_INT, &C.synth_step_us, "2000", 0, 10000000,
     "synthetic engine: time of one step"},
    {"synthetic_prefill_us", CFG_INT, &C.synth_prefill_us, "20", 0, 1000000,
     "synthetic engine: extra time per prompt token"},
    {"synthetic_ctx", CFG_INT, &C.synth_ctx, "4096", 1, 1 << 20, "synthetic engine: context"},
    {"synthetic_blocks", CFG_INT, &C.synth_blocks, "4096", 1, 1 << 24,
     "synthetic engine: KV blocks"},
    {"mlock", CFG_BOOL, &C.mlock, "false", 0, 0, "lock the model in memory"},
    {"kv_type", CFG_STR, &C.kv_type, "f16", 0, 0,
     "KV cache elements: f16 | f32 (exact, twice the memory)"},
    {"log_level", CFG_STR, &C.log_level, "info", 0, 0, "debug | info | warn | error | off"},
};
#define N_OPTS ((int)(sizeof(OPTS) / sizeof(OPTS[0])))

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
    stop_signal = sig;
}

static char *
default_model_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *name = strdup(base);
    if (name) {
        size_t n = strlen(name);
        if (n > 5 && strcmp(name + n - 5, ".gguf") == 0)
            name[n - 5] = '\0';
    }
    return name;
}

int
serve_main(int argc, char **argv)
{
    char err[512] = "";
    int rc = cfg_load(OPTS, N_OPTS, argc, argv, err, sizeof(err));
    if (rc == LLM_ECANCELED) {
        cfg_usage(stdout, "llm-worker", "serve a model over NNG (see docs/config.md)", OPTS,
                  N_OPTS);
        return 0;
    }
    if (rc != LLM_OK) {
        fprintf(stderr, "llm-worker: error: %s\n", err);
        return 2;
    }
    int code = 1;
    if (log_parse_level(C.log_level) < 0) {
        fprintf(stderr, "llm-worker: error: unknown log_level '%s'\n", C.log_level);
        cfg_free(OPTS, N_OPTS);
        return 2;
    }
    log_set_level((log_level)log_parse_level(C.log_level));
    if (strcmp(C.kv_type, "f16") != 0 && strcmp(C.kv_type, "f32") != 0) {
        fprintf(stderr, "llm-worker: error: kv_type must be 'f16' or 'f32', not '%s'\n", C.kv_type);
        cfg_free(OPTS, N_OPTS);
        return 2;
    }
    bool synthetic = strcmp(C.engine, "synthetic") == 0;
    if (!synthetic && strcmp(C.engine, "model") != 0) {
        fprintf(stderr, "llm-worker: error: engine must be 'model' or 'synthetic', not '%s'\n",
                C.engine);
        cfg_free(OPTS, N_OPTS);
        return 2;
    }
    if (!synthetic && !C.model[0]) {
        fprintf(stderr, "llm-worker: error: --model FILE.gguf is required (or --engine "
                        "synthetic, or --prompt for one local generation)\n");
        cfg_free(OPTS, N_OPTS);
        return 2;
    }
    int threads = (int)C.threads;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    char *model_name = C.model_name[0] ? strdup(C.model_name)
                       : synthetic     ? strdup("synthetic")
                                       : default_model_name(C.model);
    char worker_id[300];
    if (C.worker_id[0]) {
        snprintf(worker_id, sizeof(worker_id), "%s", C.worker_id);
    } else {
        char host[256] = "worker";
        gethostname(host, sizeof(host) - 1);
        snprintf(worker_id, sizeof(worker_id), "%s:%ld", host, (long)getpid());
    }

    engine *e = NULL;
    metrics *reg = metrics_new();
    sched *s = NULL;
    wserver *w = NULL;
    announcer *a = NULL;
    if (!model_name || !reg) {
        fprintf(stderr, "llm-worker: error: out of memory\n");
        goto done;
    }
    if (synthetic) {
        engine_synth_opts so = {(int)C.synth_step_us, (int)C.synth_prefill_us, (int)C.synth_ctx,
                                (int)C.synth_blocks, (int)C.step_tokens};
        rc = engine_synthetic_new(&so, &e, err, sizeof(err));
    } else {
        engine_model_opts mo = {C.model,
                                threads,
                                (int)C.step_tokens,
                                (uint64_t)C.kv_memory_mb << 20,
                                C.mlock,
                                strcmp(C.kv_type, "f32") == 0,
                                C.pin_threads};
        rc = engine_model_new(&mo, &e, err, sizeof(err));
    }
    if (rc != LLM_OK) {
        fprintf(stderr, "llm-worker: error: %s\n", err[0] ? err : llm_strerror(rc));
        goto done;
    }
    if (C.ctx > 0 && C.ctx < e->ctx_len)
        e->ctx_len = (int)C.ctx;
    sched_opts so = {(int)C.max_running, (int)C.prefill_chunk, (int)C.max_waiting,
                     (int)C.finished_ttl_ms, SCHED_MAX_STOP};
    if (so.max_running > e->max_step_tokens) {
        fprintf(stderr, "llm-worker: error: max_running (%d) must not exceed step_tokens (%d)\n",
                so.max_running, e->max_step_tokens);
        code = 2;
        goto done;
    }
    if ((rc = sched_new(e, &so, reg, &s)) != LLM_OK) {
        fprintf(stderr, "llm-worker: error: scheduler: %s\n", llm_strerror(rc));
        goto done;
    }
    const char *address = C.advertise[0] ? C.advertise : C.listen;
    wserver_opts wo = {.listen = C.listen,
                       .model_name = model_name,
                       .contexts = (int)C.contexts,
                       .first_chunk_wait_ms = (int)C.first_chunk_wait_ms,
                       .max_wait_ms = (int)C.max_wait_ms,
                       .max_prompt_bytes = (int)C.max_prompt_bytes,
                       .worker_id = worker_id,
                       .address = address};
    if ((rc = wserver_new(s, e, reg, &wo, &w, err, sizeof(err))) != LLM_OK ||
        (rc = sched_start(s)) != LLM_OK || (rc = wserver_listen(w, err, sizeof(err))) != LLM_OK) {
        fprintf(stderr, "llm-worker: error: %s\n", err[0] ? err : llm_strerror(rc));
        goto done;
    }
    if (C.coordinator[0]) {
        announce_opts ao = {C.coordinator,       worker_id, address,           model_name,
                            (int)C.heartbeat_ms, 1,         (int)C.summary_max};
        if ((rc = announce_start(s, e, &ao, &a, err, sizeof(err))) != LLM_OK) {
            fprintf(stderr, "llm-worker: error: %s\n", err);
            goto done;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    LOG_INFO("event=worker_ready id=%s model=%s engine=%s listen=%s", worker_id, model_name,
             e->kind, C.listen);
    printf("llm-worker: ready on %s\n", C.listen);
    fflush(stdout);
    // A signal or a Drain RPC (which has already set the scheduler draining).
    while (!stop_signal && !sched_draining(s))
        llm_sleep_ms(50);

    // Drain: refuse new work, let running requests finish and their readers collect
    // the last chunks, then leave the registry.
    LOG_INFO("event=draining cause=%s signal=%d", stop_signal ? "signal" : "rpc", (int)stop_signal);
    sched_drain(s);
    uint64_t give_up = llm_now_ns() + (uint64_t)C.drain_timeout_ms * 1000000u;
    while (!sched_idle(s) && llm_now_ns() < give_up)
        llm_sleep_ms(20);
    if (!sched_idle(s))
        LOG_WARN("event=drain_timeout");
    announce_stop(a, true);
    a = NULL;
    code = 0;
    LOG_INFO("event=worker_stopped");

done:
    announce_stop(a, false);
    if (s)
        sched_stop(s);
    wserver_free(w);
    sched_free(s);
    engine_free(e);
    metrics_free(reg);
    free(model_name);
    cfg_free(OPTS, N_OPTS);
    return code;
}
