/*
 * serve_probe.c - drives one worker RPC for test_worker_serve.py and prints the outcome
 * as one JSON line: a Generate through libllmclient (resume_ids included), then the
 * finished stream read again from every cursor; or a Drain.
 *
 *   serve_probe URL generate [--chat] [--max-tokens N] [--temperature T] [--top-p P]
 *               [--seed S] [--stop S] [--resume-ids 1,2,3] [--resume-from-seq N] PROMPT
 *     {"ok", "error_code", "error", "request_id", "finish", "ids", "text", "usage",
 *      "from": [{"ids", "text"} for every cursor 0..n]}   ("from" only when it ended)
 *   serve_probe URL drain WORKER_ID
 *     {"ok", "error_code", "error", "worker_id", "address", "state", "model", "running",
 *      "draining"}
 * ids and text are what the client received from its cursor on (n_resume with
 * --resume-ids). What it does not do: anything llm-load or llmctl already does.
 * Exit codes: 0 the call was made (the JSON says how it went), 2 bad usage.
 */
#include "args.h"
#include "llm_err.h"
#include "llmclient.h"
#include "wire.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "serve_probe"
#define MAX_IDS 4096

typedef struct {
    int32_t ids[MAX_IDS];
    int n_ids;
    char *text;
    size_t text_len;
} received;

static int
on_chunk(void *ctx, uint32_t seq, const int32_t *ids, int n, const char *text, size_t len)
{
    received *r = ctx;
    if (r->n_ids + n > MAX_IDS)
        return 1;
    memcpy(r->ids + r->n_ids, ids, sizeof(int32_t) * (size_t)n);
    r->n_ids += n;
    char *t = realloc(r->text, r->text_len + len + 1);
    if (!t)
        return 1;
    memcpy(t + r->text_len, text, len);
    r->text_len += len;
    t[r->text_len] = '\0';
    r->text = t;
    return 0;
}

static cJSON *
ids_json(const int32_t *ids, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* call decodes the reply to env sent as raw bytes; an Error reply becomes its code. */
static int
call(llmc *c, Llm__Envelope *env, Llm__Envelope **rep, char *err, size_t err_len)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    void *out = NULL;
    size_t out_len = 0;
    int rc = wire_pack(env, &buf, &len);
    if (rc == LLM_OK)
        rc = llmc_call_raw(c, buf, len, &out, &out_len, err, err_len);
    free(buf);
    if (rc == LLM_OK)
        rc = wire_decode(out, out_len, rep, err, err_len);
    free(out);
    if (rc == LLM_OK && (*rep)->body_case == LLM__ENVELOPE__BODY_ERROR) {
        rc = (*rep)->error->code ? (int)(*rep)->error->code : LLM_EPROTO;
        snprintf(err, err_len, "%s", (*rep)->error->message);
    }
    return rc;
}

/* reread reads the finished stream id from cursor at (Next with no wait). */
static cJSON *
reread(llmc *c, uint64_t id, uint32_t at)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
    Llm__NextRequest nr = LLM__NEXT_REQUEST__INIT;
    nr.request_id = id;
    nr.after_seq = at;
    env.request_id = id;
    env.body_case = LLM__ENVELOPE__BODY_NEXT;
    env.next = &nr;
    char err[256] = "";
    cJSON *o = cJSON_CreateObject();
    int rc = call(c, &env, &rep, err, sizeof(err));
    if (rc == LLM_OK && rep->body_case == LLM__ENVELOPE__BODY_CHUNK) {
        cJSON_AddItemToObject(o, "ids",
                              ids_json(rep->chunk->token_ids, (int)rep->chunk->n_token_ids));
        cJSON_AddStringToObject(o, "text", rep->chunk->text);
    } else {
        cJSON_AddNumberToObject(o, "error_code", rc);
        cJSON_AddStringToObject(o, "error", err);
    }
    wire_free(rep);
    return o;
}

static int
parse_ids(const char *s, int32_t *ids, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || n == max || (*end && *end != ','))
            exit(args_die(PROG, 2, "--resume-ids: expected numbers separated by commas"));
        ids[n++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    return n;
}

static int
cmd_generate(llmc *c, int argc, char **argv)
{
    static int32_t resume[MAX_IDS];
    const char *stop[8];
    llmc_request r = {0};
    r.max_tokens = 16;
    r.poll_wait_ms = 5000;
    bool chat = false;
    int i = 0;
    for (; i < argc - 1 && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--chat") == 0) {
            chat = true;
            continue;
        }
        const char *v = argv[++i];
        if (strcmp(f, "--max-tokens") == 0)
            r.max_tokens = (int)args_need_int(PROG, f, v, 0, 1 << 24);
        else if (strcmp(f, "--temperature") == 0)
            r.temperature = (float)args_need_float(PROG, f, v, -100, 100);
        else if (strcmp(f, "--top-p") == 0)
            r.top_p = (float)args_need_float(PROG, f, v, 0, 100);
        else if (strcmp(f, "--seed") == 0)
            r.seed = args_need_u64(PROG, f, v);
        else if (strcmp(f, "--stop") == 0 && r.n_stop < 8)
            stop[r.n_stop++] = v;
        else if (strcmp(f, "--resume-ids") == 0)
            r.n_resume_ids = parse_ids(v, resume, MAX_IDS);
        else if (strcmp(f, "--resume-from-seq") == 0)
            r.resume_from_seq = (uint32_t)args_need_int(PROG, f, v, 0, UINT32_MAX);
        else
            exit(args_die(PROG, 2, "unknown flag %s", f));
    }
    if (i != argc - 1)
        exit(args_die(PROG, 2, "generate needs one PROMPT argument"));
    llmc_msg msg = {"user", argv[i]};
    if (chat) {
        r.messages = &msg;
        r.n_messages = 1;
    } else {
        r.prompt = argv[i];
    }
    r.stop = stop;
    r.resume_ids = r.n_resume_ids ? resume : NULL;

    received got = {.n_ids = 0};
    llmc_result res;
    char err[256] = "";
    int rc = llmc_generate(c, &r, on_chunk, &got, &res, err, sizeof(err));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", rc == LLM_OK);
    cJSON_AddNumberToObject(o, "error_code", rc);
    cJSON_AddStringToObject(o, "error", err);
    char rid[32]; // as a string: a double would round ids of the upper half
    snprintf(rid, sizeof(rid), "%llu", (unsigned long long)res.request_id);
    cJSON_AddStringToObject(o, "request_id", rid);
    cJSON_AddStringToObject(o, "finish", llmc_finish_name(res.finish));
    cJSON_AddItemToObject(o, "ids", ids_json(got.ids, got.n_ids));
    cJSON_AddStringToObject(o, "text", got.text ? got.text : "");
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", res.prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", res.completion_tokens);
    cJSON_AddNumberToObject(u, "cached_tokens", res.cached_tokens);
    if (rc == LLM_OK) {
        // Straight away: a stream whose final chunk was read stays for a second.
        cJSON *from = cJSON_AddArrayToObject(o, "from");
        for (uint32_t k = 0; k <= res.completion_tokens; k++)
            cJSON_AddItemToArray(from, reread(c, res.request_id, k));
    }
    char *s = cJSON_PrintUnformatted(o);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
    free(got.text);
    return 0;
}

static int
cmd_drain(llmc *c, const char *worker_id)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
    Llm__DrainRequest dr = LLM__DRAIN_REQUEST__INIT;
    dr.worker_id = (char *)worker_id;
    env.body_case = LLM__ENVELOPE__BODY_DRAIN;
    env.drain = &dr;
    char err[256] = "";
    int rc = call(c, &env, &rep, err, sizeof(err));
    if (rc == LLM_OK && rep->body_case != LLM__ENVELOPE__BODY_WORKER_STATUS) {
        snprintf(err, sizeof(err), "unexpected reply '%s'", wire_body_name(rep->body_case));
        rc = LLM_EPROTO;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", rc == LLM_OK);
    cJSON_AddNumberToObject(o, "error_code", rc);
    cJSON_AddStringToObject(o, "error", err);
    if (rc == LLM_OK) {
        const Llm__WorkerStatus *ws = rep->worker_status;
        cJSON_AddStringToObject(o, "worker_id", ws->worker_id);
        cJSON_AddStringToObject(o, "address", ws->address);
        cJSON_AddStringToObject(o, "state", ws->state);
        cJSON_AddStringToObject(o, "model", ws->model);
        cJSON_AddNumberToObject(o, "running", ws->load ? (double)ws->load->running : -1.0);
        cJSON_AddNumberToObject(o, "draining", ws->load ? (double)ws->load->draining : -1.0);
    }
    wire_free(rep);
    char *s = cJSON_PrintUnformatted(o);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc < 3)
        return args_die(PROG, 2, "usage: serve_probe URL generate|drain ...");
    llmc *c = NULL;
    char err[256];
    if (llmc_open(argv[1], 30000, &c, err, sizeof(err)) != LLM_OK)
        return args_die(PROG, 1, "%s", err);
    int code;
    if (strcmp(argv[2], "generate") == 0)
        code = cmd_generate(c, argc - 3, argv + 3);
    else if (strcmp(argv[2], "drain") == 0 && argc == 4)
        code = cmd_drain(c, argv[3]);
    else
        code = args_die(PROG, 2, "unknown command '%s'", argv[2]);
    llmc_close(c);
    return code;
}
