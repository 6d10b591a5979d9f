/*
 * llmctl.c - command line for the cluster's RPC (a coordinator or a single worker).
 *
 *   llmctl [--addr URL] generate [--max-tokens N] [--temperature T] [--seed S] PROMPT
 *   llmctl [--addr URL] chat [--max-tokens N] [--temperature T] [--seed S] MESSAGE
 *   llmctl [--addr URL] health | stats | cancel REQUEST_ID
 *   llmctl [--addr URL] raw < BYTES      send bytes as one message, describe the reply
 * The address comes from --addr, else $LLM_RPC_ADDR, else tcp://127.0.0.1:7070.
 * Exit codes: 0 ok, 1 the request failed, 2 bad usage.
 */
#include "args.h"
#include "llm_err.h"
#include "llmclient.h"
#include "wire.h"

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

int
main(int argc, char **argv)
{
    const char *addr = getenv("LLM_RPC_ADDR") ? getenv("LLM_RPC_ADDR") : "tcp://127.0.0.1:7070";
    int i = 1;
    if (i + 1 < argc && strcmp(argv[i], "--addr") == 0) {
        addr = argv[i + 1];
        i += 2;
    }
    if (i >= argc)
        exit(args_die(PROG, 2,
                      "usage: llmctl [--addr URL] generate|chat|health|stats|cancel|raw ..."));
    const char *cmd = argv[i++];
    llmc *c = NULL;
    char err[256];
    if (llmc_open(addr, 30000, &c, err, sizeof(err)) != LLM_OK)
        exit(args_die(PROG, 1, "%s", err));
    int code = 0;
    if (strcmp(cmd, "generate") == 0 || strcmp(cmd, "chat") == 0) {
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
    } else {
        llmc_close(c);
        exit(args_die(PROG, 2, "unknown command '%s'", cmd));
    }
    llmc_close(c);
    return code;
}
