/*
 * llmctl.c - command line for the cluster's RPC (a coordinator or a single worker).
 *
 *   llmctl [OPTS] generate [GEN] PROMPT   stream the completion of PROMPT to stdout
 *   llmctl [OPTS] chat [GEN] MESSAGE      the same for one user message (chat template)
 *   llmctl [OPTS] health | stats | cancel REQUEST_ID
 *   llmctl [OPTS] status [--json]         a coordinator's workers and models
 *   llmctl [OPTS] models [--json]         the models a coordinator serves
 *   llmctl [OPTS] drain WORKER_ID         stop routing to a worker; it finishes and exits
 *   llmctl [OPTS] raw < BYTES             send bytes as one message, describe the reply
 * OPTS: [--addr URL] [--timeout-ms MS]; GEN: [--max-tokens N] [--temperature T] [--seed S]
 * [--model NAME]. The address comes from --addr, else $LLM_RPC_ADDR, else
 * tcp://127.0.0.1:7070 (an empty $LLM_RPC_ADDR counts as unset). --timeout-ms bounds each round
 * trip: default 30 s for generate and chat (the coordinator may be failing over), 5 s for the rest,
 * so a script polling `llmctl status` for a cluster that is not up yet hears about it quickly. Exit
 * codes: 0 ok, 1 the request failed, 2 bad usage.
 */
#include "args.h"
#include "llm_err.h"
#include "llmclient.h"
#include "wire.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "llmctl"

static int
print_chunk(void *ctx, uint32_t seq, const int32_t *ids, int n, const char *text, size_t len)
{
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static int
cmd_generate(llmc *c, bool chat, int argc, char **argv)
{
    llmc_request r = {0};
    r.max_tokens = 128;
    r.temperature = 0.0f;
    int i = 0;
    for (; i < argc - 1 && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--max-tokens") == 0)
            r.max_tokens = (int)args_need_int(PROG, argv[i], argv[i + 1], 1, 1 << 20);
        else if (strcmp(argv[i], "--temperature") == 0)
            r.temperature = (float)args_need_float(PROG, argv[i], argv[i + 1], 0, 100);
        else if (strcmp(argv[i], "--seed") == 0)
            r.seed = args_need_u64(PROG, argv[i], argv[i + 1]);
        else if (strcmp(argv[i], "--model") == 0)
            r.model = argv[i + 1];
        else
            exit(args_die(PROG, 2, "unknown flag %s", argv[i]));
    }
    if (i != argc - 1)
        exit(args_die(PROG, 2, "%s needs one PROMPT argument", chat ? "chat" : "generate"));
    llmc_msg msg = {"user", argv[i]};
    if (chat) {
        r.messages = &msg;
        r.n_messages = 1;
    } else {
        r.prompt = argv[i];
    }
    llmc_result res;
    char err[256];
    int rc = llmc_generate(c, &r, print_chunk, NULL, &res, err, sizeof(err));
    if (rc != LLM_OK) {
        fprintf(stderr, "\nllmctl: error: %s (%s)\n", err, llm_strerror(rc));
        return 1;
    }
    printf("\n");
    fprintf(stderr, "[finish=%s prompt=%u completion=%u cached=%u]\n", llmc_finish_name(res.finish),
            res.prompt_tokens, res.completion_tokens, res.cached_tokens);
    return 0;
}

static int
cmd_raw(llmc *c)
{
    size_t cap = 1 << 16, len = 0, n;
    unsigned char *buf = malloc(cap);
    while (buf && (n = fread(buf + len, 1, cap - len, stdin)) > 0) {
        len += n;
        if (len == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    if (!buf)
        exit(args_die(PROG, 1, "out of memory"));
    void *rep = NULL;
    size_t rep_len = 0;
    char err[256];
    int rc = llmc_call_raw(c, buf, len, &rep, &rep_len, err, sizeof(err));
    free(buf);
    if (rc != LLM_OK) {
        fprintf(stderr, "llmctl: error: %s\n", err);
        return 1;
    }
    Llm__Envelope *env = NULL;
    rc = wire_decode(rep, rep_len, &env, err, sizeof(err));
    free(rep);
    if (rc != LLM_OK) {
        fprintf(stderr, "llmctl: error: undecodable reply: %s\n", err);
        return 1;
    }
    // One line a test can parse: body, then the error code and message when it is one.
    if (env->body_case == LLM__ENVELOPE__BODY_ERROR)
        printf("error %u %s\n", env->error->code, env->error->message);
    else
        printf("%s\n", wire_body_name(env->body_case));
    wire_free(env);
    return 0;
}

/* ---- coordinator: status, models, drain ------------------------------------------------- */

static bool
want_json(int argc, char **argv)
{
    if (argc == 0)
        return false;
    if (argc == 1 && strcmp(argv[0], "--json") == 0)
        return true;
    exit(args_die(PROG, 2, "unexpected argument '%s' (only --json)", argv[0]));
}

static void
json_add_models(cJSON *parent, const llmc_model_info *m, int n)
{
    cJSON *arr = cJSON_AddArrayToObject(parent, "models");
    for (int i = 0; arr && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", m[i].name);
        cJSON_AddStringToObject(o, "policy", m[i].policy);
        cJSON_AddNumberToObject(o, "workers_ready", m[i].workers_ready);
        cJSON_AddNumberToObject(o, "workers_total", m[i].workers_total);
        cJSON_AddItemToArray(arr, o);
    }
}

static cJSON *
json_worker(const llmc_worker_status *w)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "worker_id", w->worker_id);
    cJSON_AddStringToObject(o, "address", w->address);
    cJSON_AddStringToObject(o, "state", w->state);
    cJSON_AddStringToObject(o, "model", w->model);
    cJSON_AddNumberToObject(o, "inflight", w->inflight);
    cJSON_AddNumberToObject(o, "running", w->running);
    cJSON_AddNumberToObject(o, "waiting", w->waiting);
    cJSON_AddNumberToObject(o, "kv_blocks_used", w->kv_blocks_used);
    cJSON_AddNumberToObject(o, "kv_blocks_cached", w->kv_blocks_cached);
    cJSON_AddNumberToObject(o, "kv_blocks_total", w->kv_blocks_total);
    cJSON_AddNumberToObject(o, "step_ms_ewma", w->step_ms_ewma);
    cJSON_AddNumberToObject(o, "tp_size", w->tp_size);
    cJSON_AddNumberToObject(o, "prefix_hashes", w->n_prefix_hashes);
    cJSON_AddStringToObject(o, "breaker", w->breaker);
    cJSON_AddNumberToObject(o, "heartbeat_age_ms", (double)w->heartbeat_age_ms);
    cJSON_AddNumberToObject(o, "routed", (double)w->routed);
    cJSON_AddNumberToObject(o, "failures", (double)w->failures);
    cJSON_AddBoolToObject(o, "is_static", w->is_static);
    return o;
}

static int
print_json(cJSON *root)
{
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "llmctl: error: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    cJSON_free(text);
    return 0;
}

static int
str_width(const char *s, int at_least)
{
    int n = (int)strlen(s);
    return n > at_least ? n : at_least;
}

static void
print_models_table(const llmc_model_info *m, int n)
{
    int wn = 5, wp = 6;
    for (int i = 0; i < n; i++) {
        wn = str_width(m[i].name, wn);
        wp = str_width(m[i].policy, wp);
    }
    printf("%-*s  %-*s  %s\n", wn, "MODEL", wp, "POLICY", "READY");
    for (int i = 0; i < n; i++)
        printf("%-*s  %-*s  %u/%u\n", wn, m[i].name, wp, m[i].policy, m[i].workers_ready,
               m[i].workers_total);
}

static int
cmd_status(llmc *c, const char *addr, int argc, char **argv)
{
    bool json = want_json(argc, argv);
    llmc_cluster_info *s = NULL;
    char err[256];
    int rc = llmc_cluster_status(c, &s, err, sizeof(err));
    if (rc != LLM_OK) {
        fprintf(stderr, "llmctl: error: %s: %s (%s)\n", addr, err, llm_strerror(rc));
        return 1;
    }
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON *arr = cJSON_AddArrayToObject(root, "workers");
        for (int i = 0; arr && i < s->n_workers; i++)
            cJSON_AddItemToArray(arr, json_worker(&s->workers[i]));
        json_add_models(root, s->models, s->n_models);
        cJSON_AddNumberToObject(root, "requests_active", (double)s->requests_active);
        llmc_cluster_info_free(s);
        return print_json(root);
    }
    // One row a worker; the id first and the state second, so `awk '$2 == "ready"'` counts.
    int wi = 6, wm = 5;
    for (int i = 0; i < s->n_workers; i++) {
        wi = str_width(s->workers[i].worker_id, wi);
        wm = str_width(s->workers[i].model, wm);
    }
    printf("%-*s  %-8s  %-*s  %8s  %4s  %4s  %13s  %-9s  %7s  %7s  %5s  %s\n", wi, "WORKER",
           "STATE", wm, "MODEL", "INFLIGHT", "RUN", "WAIT", "KV USED/TOTAL", "BREAKER", "HB AGE",
           "ROUTED", "FAILS", "ADDRESS");
    for (int i = 0; i < s->n_workers; i++) {
        const llmc_worker_status *w = &s->workers[i];
        char kv[32], age[32];
        snprintf(kv, sizeof(kv), "%u/%u", w->kv_blocks_used, w->kv_blocks_total);
        if (w->heartbeat_age_ms == 0)
            snprintf(age, sizeof(age), "-");
        else
            snprintf(age, sizeof(age), "%.1fs", (double)w->heartbeat_age_ms / 1000.0);
        printf("%-*s  %-8s  %-*s  %8u  %4u  %4u  %13s  %-9s  %7s  %7llu  %5llu  %s%s\n", wi,
               w->worker_id, w->state, wm, w->model, w->inflight, w->running, w->waiting, kv,
               w->breaker, age, (unsigned long long)w->routed, (unsigned long long)w->failures,
               w->address, w->is_static ? " (static)" : "");
    }
    if (s->n_workers == 0)
        printf("(no workers)\n");
    printf("\n");
    print_models_table(s->models, s->n_models);
    printf("\nrequests active: %llu\n", (unsigned long long)s->requests_active);
    llmc_cluster_info_free(s);
    return 0;
}

static int
cmd_models(llmc *c, const char *addr, int argc, char **argv)
{
    bool json = want_json(argc, argv);
    llmc_model_info *m = NULL;
    int n = 0;
    char err[256];
    int rc = llmc_list_models(c, &m, &n, err, sizeof(err));
    if (rc != LLM_OK) {
        fprintf(stderr, "llmctl: error: %s: %s (%s)\n", addr, err, llm_strerror(rc));
        return 1;
    }
    if (json) {
        cJSON *root = cJSON_CreateObject();
        json_add_models(root, m, n);
        llmc_models_free(m, n);
        return print_json(root);
    }
    print_models_table(m, n);
    llmc_models_free(m, n);
    return 0;
}

static int
cmd_drain(llmc *c, const char *addr, int argc, char **argv)
{
    if (argc != 1 || argv[0][0] == '\0')
        exit(args_die(PROG, 2, "drain needs one WORKER_ID argument"));
    llmc_worker_status w;
    char err[256];
    int rc = llmc_drain(c, argv[0], &w, err, sizeof(err));
    if (rc != LLM_OK) {
        fprintf(stderr, "llmctl: error: %s: drain %s: %s (%s)\n", addr, argv[0], err,
                llm_strerror(rc));
        return 1;
    }
    printf("%s %s (inflight %u, address %s)\n", w.worker_id, w.state, w.inflight, w.address);
    llmc_worker_status_fini(&w);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *addr = getenv("LLM_RPC_ADDR");
    if (!addr || !addr[0])
        addr = "tcp://127.0.0.1:7070";
    int timeout_ms = 0;
    int i = 1;
    while (i + 1 < argc &&
           (strcmp(argv[i], "--addr") == 0 || strcmp(argv[i], "--timeout-ms") == 0)) {
        if (strcmp(argv[i], "--addr") == 0)
            addr = argv[i + 1];
        else
            timeout_ms = (int)args_need_int(PROG, argv[i], argv[i + 1], 1, 3600000);
        i += 2;
    }
    if (i >= argc)
        exit(args_die(PROG, 2,
                      "usage: llmctl [--addr URL] [--timeout-ms MS] "
                      "generate|chat|status|models|drain|health|stats|cancel|raw ..."));
    const char *cmd = argv[i++];
    llmc *c = NULL;
    char err[256];
    bool generating = strcmp(cmd, "generate") == 0 || strcmp(cmd, "chat") == 0;
    if (timeout_ms == 0)
        timeout_ms = generating ? 30000 : 5000;
    if (llmc_open(addr, timeout_ms, &c, err, sizeof(err)) != LLM_OK)
        exit(args_die(PROG, 1, "%s", err));
    int code = 0;
    if (generating) {
        code = cmd_generate(c, strcmp(cmd, "chat") == 0, argc - i, argv + i);
    } else if (strcmp(cmd, "health") == 0) {
        bool ready = false;
        char state[64] = "";
        if (llmc_health(c, &ready, state, sizeof(state), err, sizeof(err)) != LLM_OK) {
            fprintf(stderr, "llmctl: error: %s\n", err);
            code = 1;
        } else {
            printf("%s\n", state);
            code = ready ? 0 : 1;
        }
    } else if (strcmp(cmd, "stats") == 0) {
        char *text = NULL;
        if (llmc_stats(c, &text, err, sizeof(err)) != LLM_OK) {
            fprintf(stderr, "llmctl: error: %s\n", err);
            code = 1;
        } else {
            fputs(text, stdout);
            free(text);
        }
    } else if (strcmp(cmd, "cancel") == 0 && i == argc - 1) {
        if (llmc_cancel(c, args_need_u64(PROG, "request id", argv[i]), err, sizeof(err)) !=
            LLM_OK) {
            fprintf(stderr, "llmctl: error: %s\n", err);
            code = 1;
        }
    } else if (strcmp(cmd, "raw") == 0) {
        code = cmd_raw(c);
    } else if (strcmp(cmd, "status") == 0) {
        code = cmd_status(c, addr, argc - i, argv + i);
    } else if (strcmp(cmd, "models") == 0) {
        code = cmd_models(c, addr, argc - i, argv + i);
    } else if (strcmp(cmd, "drain") == 0) {
        code = cmd_drain(c, addr, argc - i, argv + i);
    } else {
        llmc_close(c);
        exit(args_die(PROG, 2, "unknown command '%s'", cmd));
    }
    llmc_close(c);
    return code;
}
