/*
 * load.c - llm-load: run many requests at once through the RPC (a worker's or the
 * coordinator's) and report each stream's tokens, text and timing as JSON.
 *
 *   llm-load [--addr URL] [--concurrency N] [--repeat K] SPEC.json   (or - for stdin)
 *
 * SPEC: {"requests": [{"prompt": "..." | "messages": [{"role","content"}...] |
 *         "prompt_ids": [...], "max_tokens": N, "temperature": T, "top_p": P, "top_k": K,
 *         "seed": S, "stop": [...], "tier": "critical|high|normal|low|background",
 *         "deadline_ms": D (from start), "cancel_after": N (tokens), "start_ms": D,
 *         "model": "..."}, ...]}
 * Output: {"wall_s", "generated_tokens", "tok_per_s", "results": [{"index", "ok",
 *          "error_code", "error", "finish", "ids", "text", "usage", "ttft_ms", "e2e_ms",
 *          "tpot_ms"}]}
 * The integration tests and the serving benchmark both drive workers with it.
 */
#define _DEFAULT_SOURCE

#include "args.h"
#include "llm_err.h"
#include "llm_time.h"
#include "llmclient.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "llm-load"

#include <sys/time.h>
#include <time.h>

typedef struct {
    llmc_request rq;
    llmc_msg *msgs;
    int32_t *ids;
    const char **stop;
    int cancel_after, start_ms;
    int64_t deadline_ms;
    // results
    int rc;
    char err[256];
    llmc_result res;
    int32_t *out_ids;
    int n_out, cap_out;
    char *text;
    size_t text_len, text_cap;
    int64_t t_start, t_first, t_end;
} job;

typedef struct {
    llmc *c;
    job *jobs;
    int n_jobs;
    pthread_mutex_t mu;
    int next;
    int64_t t0;
} runner;

static int
on_chunk(void *ctx, uint32_t seq, const int32_t *ids, int n, const char *text, size_t len)
{
    job *j = ctx;
    if (n > 0 && j->t_first == 0)
        j->t_first = (int64_t)llm_now_ns();
    if (j->n_out + n > j->cap_out) {
        int cap = (j->cap_out ? j->cap_out * 2 : 64) + n;
        int32_t *v = realloc(j->out_ids, sizeof(int32_t) * (size_t)cap);
        if (!v)
            return 1;
        j->out_ids = v;
        j->cap_out = cap;
    }
    memcpy(j->out_ids + j->n_out, ids, sizeof(int32_t) * (size_t)n);
    j->n_out += n;
    if (j->text_len + len + 1 > j->text_cap) {
        size_t cap = (j->text_cap ? j->text_cap * 2 : 256) + len;
        char *t = realloc(j->text, cap);
        if (!t)
            return 1;
        j->text = t;
        j->text_cap = cap;
    }
    memcpy(j->text + j->text_len, text, len);
    j->text_len += len;
    j->text[j->text_len] = '\0';
    return j->cancel_after > 0 && j->n_out >= j->cancel_after;
}

static void *
run_jobs(void *arg)
{
    runner *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int i = r->next < r->n_jobs ? r->next++ : -1;
        pthread_mutex_unlock(&r->mu);
        if (i < 0)
            return NULL;
        job *j = &r->jobs[i];
        if (j->start_ms > 0) {
            int64_t at = r->t0 + (int64_t)j->start_ms * 1000000;
            int64_t now = (int64_t)llm_now_ns();
            if (at > now) {
                struct timespec ts = {(at - now) / 1000000000, (at - now) % 1000000000};
                nanosleep(&ts, NULL);
            }
        }
        if (j->deadline_ms) {
            struct timeval tv;
            gettimeofday(&tv, NULL);
            j->rq.deadline_unix_ms =
                (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000 + (uint64_t)j->deadline_ms;
        }
        j->t_start = (int64_t)llm_now_ns();
        j->rc = llmc_generate(r->c, &j->rq, on_chunk, j, &j->res, j->err, sizeof(j->err));
        j->t_end = (int64_t)llm_now_ns();
    }
}

static const char *
jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double
jnum(const cJSON *o, const char *k, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static int
parse_tier(const char *t)
{
    static const char *const names[] = {"normal", "critical", "high", "low", "background"};
    for (int i = 0; t && i < 5; i++)
        if (strcmp(t, names[i]) == 0)
            return i;
    return 0;
}

/* parse_job fills j from one spec object (pointers into the cJSON tree). */
static int
parse_job(const cJSON *o, job *j)
{
    memset(j, 0, sizeof(*j));
    llmc_request *q = &j->rq;
    q->prompt = jstr(o, "prompt");
    q->model = jstr(o, "model");
    q->max_tokens = (int)jnum(o, "max_tokens", 16);
    q->temperature = (float)jnum(o, "temperature", 0);
    q->top_p = (float)jnum(o, "top_p", 0);
    q->top_k = (int)jnum(o, "top_k", 0);
    q->seed = (uint64_t)jnum(o, "seed", 0);
    q->tier = (llmc_tier)parse_tier(jstr(o, "tier"));
    q->request_id = (uint64_t)jnum(o, "request_id", 0);
    j->cancel_after = (int)jnum(o, "cancel_after", 0);
    j->start_ms = (int)jnum(o, "start_ms", 0);
    j->deadline_ms = (int64_t)jnum(o, "deadline_ms", 0);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (cJSON_IsArray(msgs)) {
        int n = cJSON_GetArraySize(msgs);
        j->msgs = calloc((size_t)n + 1, sizeof(llmc_msg));
        if (!j->msgs)
            return LLM_ENOMEM;
        for (int i = 0; i < n; i++) {
            const cJSON *m = cJSON_GetArrayItem(msgs, i);
            j->msgs[i].role = jstr(m, "role") ? jstr(m, "role") : "";
            j->msgs[i].content = jstr(m, "content") ? jstr(m, "content") : "";
        }
        q->messages = j->msgs;
        q->n_messages = n;
    }
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "prompt_ids");
    if (cJSON_IsArray(ids)) {
        int n = cJSON_GetArraySize(ids);
        j->ids = calloc((size_t)n + 1, sizeof(int32_t));
        if (!j->ids)
            return LLM_ENOMEM;
        for (int i = 0; i < n; i++)
            j->ids[i] = (int32_t)cJSON_GetArrayItem(ids, i)->valuedouble;
        q->prompt_ids = j->ids;
        q->n_prompt_ids = n;
    }
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(o, "stop");
    if (cJSON_IsArray(stop)) {
        int n = cJSON_GetArraySize(stop);
        j->stop = calloc((size_t)n + 1, sizeof(char *));
        if (!j->stop)
            return LLM_ENOMEM;
        for (int i = 0; i < n; i++)
            j->stop[i] = cJSON_GetStringValue(cJSON_GetArrayItem(stop, i));
        q->stop = j->stop;
        q->n_stop = n;
    }
    return LLM_OK;
}

static char *
read_all(FILE *f)
{
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    size_t n;
    while (b && (n = fread(b + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *nb = realloc(b, cap *= 2);
            if (!nb)
                free(b);
            b = nb;
        }
    }
    if (b)
        b[len] = '\0';
    return b;
}

static cJSON *
result_json(const job *j, int index)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", index);
    cJSON_AddBoolToObject(o, "ok", j->rc == LLM_OK);
    cJSON_AddNumberToObject(o, "error_code", j->rc);
    cJSON_AddStringToObject(o, "error", j->rc == LLM_OK ? "" : j->err);
    cJSON_AddStringToObject(o, "finish", llmc_finish_name(j->res.finish));
    char id[24];
    snprintf(id, sizeof(id), "%llu", (unsigned long long)j->res.request_id);
    cJSON_AddStringToObject(o, "request_id", id); // a string: JSON numbers lose 64-bit ids
    cJSON *ids = cJSON_AddArrayToObject(o, "ids");
    for (int i = 0; i < j->n_out; i++)
        cJSON_AddItemToArray(ids, cJSON_CreateNumber(j->out_ids[i]));
    cJSON_AddStringToObject(o, "text", j->text ? j->text : "");
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", j->res.prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", j->res.completion_tokens);
    cJSON_AddNumberToObject(u, "cached_tokens", j->res.cached_tokens);
    double ttft = j->t_first ? (double)(j->t_first - j->t_start) / 1e6 : -1;
    double e2e = (double)(j->t_end - j->t_start) / 1e6;
    cJSON_AddNumberToObject(o, "ttft_ms", ttft);
    cJSON_AddNumberToObject(o, "e2e_ms", e2e);
    cJSON_AddNumberToObject(o, "tpot_ms",
                            j->n_out > 1 && ttft >= 0 ? (e2e - ttft) / (j->n_out - 1) : 0);
    return o;
}

int
main(int argc, char **argv)
{
    const char *addr = getenv("LLM_RPC_ADDR") ? getenv("LLM_RPC_ADDR") : "tcp://127.0.0.1:7070";
    int concurrency = 0, repeat = 1, i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--addr") == 0)
            addr = argv[i + 1];
        else if (strcmp(argv[i], "--concurrency") == 0)
            concurrency = (int)args_need_int(PROG, argv[i], argv[i + 1], 1, 4096);
        else if (strcmp(argv[i], "--repeat") == 0)
            repeat = (int)args_need_int(PROG, argv[i], argv[i + 1], 1, 1000000);
        else
            exit(args_die(PROG, 2, "unknown flag %s", argv[i]));
    }
    if (i != argc - 1)
        exit(args_die(PROG, 2,
                      "usage: llm-load [--addr URL] [--concurrency N] [--repeat K] "
                      "SPEC.json|-"));
    FILE *f = strcmp(argv[i], "-") == 0 ? stdin : fopen(argv[i], "r");
    if (!f)
        exit(args_die(PROG, 1, "cannot open %s", argv[i]));
    char *text = read_all(f);
    if (f != stdin)
        fclose(f);
    cJSON *spec = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(spec, "requests");
    if (!cJSON_IsArray(reqs))
        exit(args_die(PROG, 2, "the spec needs a \"requests\" array"));
    int n_spec = cJSON_GetArraySize(reqs), n = n_spec * repeat;
    job *jobs = calloc((size_t)n + 1, sizeof(job));
    if (!jobs)
        exit(args_die(PROG, 1, "out of memory"));
    for (int k = 0; k < n; k++)
        if (parse_job(cJSON_GetArrayItem(reqs, k % n_spec), &jobs[k]) != LLM_OK)
            exit(args_die(PROG, 1, "out of memory"));

    char err[256];
    runner r = {0};
    if (llmc_open(addr, 60000, &r.c, err, sizeof(err)) != LLM_OK)
        exit(args_die(PROG, 1, "%s", err));
    r.jobs = jobs;
    r.n_jobs = n;
    pthread_mutex_init(&r.mu, NULL);
    if (concurrency == 0 || concurrency > n)
        concurrency = n;
    pthread_t *th = calloc((size_t)concurrency + 1, sizeof(pthread_t));
    r.t0 = (int64_t)llm_now_ns();
    for (int k = 0; k < concurrency; k++)
        pthread_create(&th[k], NULL, run_jobs, &r);
    for (int k = 0; k < concurrency; k++)
        pthread_join(th[k], NULL);
    double wall = (double)((int64_t)llm_now_ns() - r.t0) / 1e9;

    cJSON *out = cJSON_CreateObject();
    long gen = 0;
    int failed = 0;
    cJSON *res = cJSON_CreateArray();
    for (int k = 0; k < n; k++) {
        gen += jobs[k].n_out;
        failed += jobs[k].rc != LLM_OK;
        cJSON_AddItemToArray(res, result_json(&jobs[k], k));
    }
    cJSON_AddNumberToObject(out, "wall_s", wall);
    cJSON_AddNumberToObject(out, "requests", n);
    cJSON_AddNumberToObject(out, "failed", failed);
    cJSON_AddNumberToObject(out, "generated_tokens", (double)gen);
    cJSON_AddNumberToObject(out, "tok_per_s", wall > 0 ? (double)gen / wall : 0);
    cJSON_AddItemToObject(out, "results", res);
    char *js = cJSON_PrintUnformatted(out);
    puts(js ? js : "{}");
    free(js);
    cJSON_Delete(out);
    for (int k = 0; k < n; k++) {
        free(jobs[k].msgs);
        free(jobs[k].ids);
        free(jobs[k].stop);
        free(jobs[k].out_ids);
        free(jobs[k].text);
    }
    free(jobs);
    free(th);
    cJSON_Delete(spec);
    llmc_close(r.c);
    return 0;
}
