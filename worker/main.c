/*
 * main.c - llm-worker. For now one local generation, like llama-cli:
 *   llm-worker --model M --prompt "..." [--chat] [--max-tokens N] ...
 * The text streams to stdout as it is produced. Exit codes: 0 ok, 1 runtime error
 * (bad model file, prompt too long), 2 bad usage. Every error is one line on stderr
 * starting "llm-worker: error:". Without --prompt, llm-worker is the server (serve.c:
 * --config FILE and/or flags).
 */
#define _DEFAULT_SOURCE // sysconf(_SC_NPROCESSORS_ONLN)

#include "args.h"
#include "gen.h"
#include "llm_err.h"
#include "log.h"
#include "model.h"
#include "pool.h"
#include "samp.h"
#include "serve.h"
#include "tok.h"
#include "utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STEP_TOKENS 64 // prompt tokens per forward step during prefill

typedef struct {
    const char *model_path;
    const char *prompt;
    const char *system;
    bool chat;
    int max_tokens;
    int threads;
    int ctx;
    samp_params samp;
    const char *stop[GEN_MAX_STOP];
    int n_stop;
    const char *dump_json;
    const char *dump_logits;
    bool mlock;
    bool kv_f32;
} cli_opts;

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: llm-worker --model FILE.gguf --prompt TEXT [options]\n"
            "  --chat              wrap the prompt in the model's chat template\n"
            "  --system TEXT       system message for --chat (default: the template's)\n"
            "  --max-tokens N      tokens to generate (default 256)\n"
            "  --temperature T     0 = greedy (default 0.8), up to 100\n"
            "  --top-k K           keep the K most likely tokens (default 40, 0 = off)\n"
            "  --top-p P           nucleus mass in (0, 1] (default 0.95)\n"
            "  --seed S            random seed (default 0)\n"
            "  --stop TEXT         stop string, repeatable (up to %d)\n"
            "  --threads N         compute threads (default: online CPUs)\n"
            "  --ctx N             context size in tokens (default min(model, 4096))\n"
            "  --mlock             lock the model in memory\n"
            "  --kv-type T         f16 (default) or f32: the KV cache's element type\n"
            "  --dump-json FILE    write prompt/generated ids and text as JSON\n"
            "  --dump-logits FILE  write the last prompt position's logits (float32)\n"
            "  --log-level L       debug|info|warn|error|off (default info; $LLM_LOG_LEVEL)\n",
            GEN_MAX_STOP);
}

/* parse_args fills o; returns 0, or the exit code after printing the error. */
static int
parse_args(int argc, char **argv, cli_opts *o)
{
    o->max_tokens = 256;
    o->samp = samp_params_default();
    o->samp.temperature = 0.8f;
    o->samp.top_k = 40;
    o->samp.top_p = 0.95f;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = ncpu > 0 ? (int)ncpu : 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--chat")) {
            o->chat = true;
            continue;
        }
        if (!strcmp(a, "--mlock")) {
            o->mlock = true;
            continue;
        }
        static const char *const valued[] = {
            "--model", "--prompt",    "--system",      "--max-tokens", "--temperature",
            "--top-k", "--top-p",     "--seed",        "--stop",       "--threads",
            "--ctx",   "--dump-json", "--dump-logits", "--log-level",  "--kv-type"};
        bool known = false;
        for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); k++)
            known = known || !strcmp(a, valued[k]);
        if (!known)
            return args_die("llm-worker", 2, "%s '%s' (see --help)",
                            strncmp(a, "--", 2) ? "unexpected argument" : "unknown option", a);
        if (i + 1 >= argc)
            return args_die("llm-worker", 2, "missing value for '%s' (see --help)", a);
        const char *v = argv[++i];
        int64_t n;
        uint64_t u;
        double d;
        if (!strcmp(a, "--model")) {
            o->model_path = v;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--system")) {
            o->system = v;
        } else if (!strcmp(a, "--max-tokens")) {
            if (args_int(v, 0, 1 << 24, &n) != LLM_OK)
                return args_die("llm-worker", 2,
                                "--max-tokens must be an integer in [0, 16777216], got '%s'", v);
            o->max_tokens = (int)n;
        } else if (!strcmp(a, "--temperature")) {
            if (args_float(v, 0.0, 100.0, &d) != LLM_OK)
                return args_die("llm-worker", 2,
                                "--temperature must be a number in [0, 100], got '%s'", v);
            o->samp.temperature = (float)d;
        } else if (!strcmp(a, "--top-k")) {
            if (args_int(v, 0, 1 << 24, &n) != LLM_OK)
                return args_die("llm-worker", 2, "--top-k must be an integer >= 0, got '%s'", v);
            o->samp.top_k = (int)n;
        } else if (!strcmp(a, "--top-p")) {
            if (args_float(v, 0.0, 1.0, &d) != LLM_OK || d <= 0.0)
                return args_die("llm-worker", 2, "--top-p must be a number in (0, 1], got '%s'", v);
            o->samp.top_p = (float)d;
        } else if (!strcmp(a, "--seed")) {
            if (args_u64(v, &u) != LLM_OK)
                return args_die("llm-worker", 2,
                                "--seed must be an unsigned 64-bit integer, got '%s'", v);
            o->samp.seed = u;
        } else if (!strcmp(a, "--stop")) {
            if (o->n_stop == GEN_MAX_STOP)
                return args_die("llm-worker", 2, "at most %d --stop strings", GEN_MAX_STOP);
            if (!*v || strlen(v) > GEN_MAX_STOP_LEN)
                return args_die("llm-worker", 2, "--stop must be 1..%d bytes", GEN_MAX_STOP_LEN);
            o->stop[o->n_stop++] = v;
        } else if (!strcmp(a, "--threads")) {
            if (args_int(v, 1, 256, &n) != LLM_OK)
                return args_die("llm-worker", 2,
                                "--threads must be an integer in [1, 256], got '%s'", v);
            o->threads = (int)n;
        } else if (!strcmp(a, "--ctx")) {
            if (args_int(v, 1, 1 << 24, &n) != LLM_OK)
                return args_die("llm-worker", 2,
                                "--ctx must be an integer in [1, 16777216], got '%s'", v);
            o->ctx = (int)n;
        } else if (!strcmp(a, "--dump-json")) {
            o->dump_json = v;
        } else if (!strcmp(a, "--dump-logits")) {
            o->dump_logits = v;
        } else if (!strcmp(a, "--kv-type")) {
            if (strcmp(v, "f16") != 0 && strcmp(v, "f32") != 0)
                return args_die("llm-worker", 2, "--kv-type must be f16 or f32, got '%s'", v);
            o->kv_f32 = !strcmp(v, "f32");
        } else if (!strcmp(a, "--log-level")) {
            int lvl = log_parse_level(v);
            if (lvl < 0)
                return args_die("llm-worker", 2,
                                "--log-level must be debug, info, warn, error or off");
            log_set_level((log_level)lvl);
        }
    }
    if (!o->model_path)
        return args_die("llm-worker", 2, "--model is required (see --help)");
    if (!o->prompt)
        return args_die("llm-worker", 2, "--prompt is required (see --help)");
    size_t bad = 0;
    if (!utf8_valid(o->prompt, strlen(o->prompt), &bad))
        return args_die("llm-worker", 2, "--prompt is not valid UTF-8 (bad byte at offset %zu)",
                        bad);
    if (o->system && !utf8_valid(o->system, strlen(o->system), &bad))
        return args_die("llm-worker", 2, "--system is not valid UTF-8 (bad byte at offset %zu)",
                        bad);
    return 0;
}

/* The streamed text, kept for --dump-json so the dump is exactly what was printed. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} text_log;

static int
print_text(void *ctx, const char *text, size_t len)
{
    text_log *t = ctx;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    if (t->len + len + 1 > t->cap && !t->oom) {
        size_t cap = (t->cap ? t->cap : 256) * 2 + len;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->oom = true;
            return 0; // printing goes on; only the dump is lost, and reported
        }
        t->buf = b;
        t->cap = cap;
    }
    if (!t->oom) {
        memcpy(t->buf + t->len, text, len);
        t->len += len;
    }
    return 0;
}

/* json_str writes s (valid UTF-8: gen_text guarantees it) as a JSON string. */
static void
json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void
json_ids(FILE *f, const int32_t *ids, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? "," : "", ids[i]);
    fputc(']', f);
}

static int
dump_json(const char *path, const text_log *text, const int32_t *prompt, int n_prompt,
          const gen_result *r)
{
    if (text->oom)
        return LLM_ENOMEM;
    FILE *f = fopen(path, "w");
    if (!f)
        return LLM_EIO;
    fputs("{\"prompt_ids\":", f);
    json_ids(f, prompt, n_prompt);
    fputs(",\"generated_ids\":", f);
    json_ids(f, r->ids, r->n_ids);
    fputs(",\"text\":", f);
    json_str(f, text->buf ? text->buf : "", text->len);
    fprintf(f, ",\"finish_reason\":\"%s\"}\n", gen_finish_name(r->finish));
    return fclose(f) == 0 ? LLM_OK : LLM_EIO;
}

/* build_prompt turns the prompt (and chat wrapping) into token ids. */
static int
build_prompt(const cli_opts *o, const tok_vocab *v, int32_t **ids, size_t *n_ids)
{
    tok_chat_msg msgs[2];
    size_t n = 0;
    if (o->system)
        msgs[n++] = (tok_chat_msg){"system", o->system};
    msgs[n++] = (tok_chat_msg){"user", o->prompt};
    return tok_prompt(v, o->prompt, o->chat ? msgs : NULL, n, ids, n_ids);
}

/* One local generation when --prompt is given; otherwise the server (serve.c). */
static bool
wants_one_shot(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--prompt") == 0 || strncmp(argv[i], "--prompt=", 9) == 0)
            return true;
    return false;
}

int
main(int argc, char **argv)
{
    if (!wants_one_shot(argc, argv))
        return serve_main(argc, argv);
    cli_opts o = {0};
    int code = parse_args(argc, argv, &o);
    if (code != 0)
        return code;

    char err[512] = "";
    model *m = NULL;
    model_state *st = NULL;
    model_kv *kv = NULL;
    pool *p = NULL;
    samp_ctx *sc = NULL;
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    gen_result res = {0};
    text_log text = {0};
    float *logits = NULL;
    int rc;

    model_load_opts lo = {.mlock = o.mlock, .willneed = true, .kv_f32 = o.kv_f32};
    if ((rc = model_load(o.model_path, &lo, &m, err, sizeof(err))) != LLM_OK) {
        code = args_die("llm-worker", 1, "model %s: %s", o.model_path, err);
        goto out;
    }
    const model_config *c = model_get_config(m);
    const tok_vocab *v = model_get_vocab(m);
    int n_ctx = o.ctx ? o.ctx : (c->ctx_len < 4096 ? c->ctx_len : 4096);
    if (n_ctx > c->ctx_len) {
        code = args_die("llm-worker", 2, "--ctx %d exceeds the model's context length %d", n_ctx,
                        c->ctx_len);
        goto out;
    }
    rc = build_prompt(&o, v, &prompt, &n_prompt);
    if (rc == LLM_ENOTSUP) {
        code = args_die("llm-worker", 1,
                        "the model's chat template is not supported; run without --chat");
        goto out;
    } else if (rc != LLM_OK) {
        code = args_die("llm-worker", 1, "tokenizing the prompt: %s", llm_strerror(rc));
        goto out;
    }
    if (n_prompt == 0) {
        code = args_die("llm-worker", 2, "the prompt is empty");
        goto out;
    }
    if (n_prompt > (size_t)n_ctx) {
        code =
            args_die("llm-worker", 1, "prompt of %zu tokens does not fit the context of %d tokens",
                     n_prompt, n_ctx);
        goto out;
    }
    model_shard shard = model_full_shard(m);
    if ((rc = pool_new(o.threads, &p)) != LLM_OK ||
        (rc = model_state_new(m, &shard, STEP_TOKENS, o.threads, &st)) != LLM_OK ||
        (rc = model_kv_new(m, &shard, n_ctx, &kv)) != LLM_OK ||
        (rc = samp_ctx_new(c->vocab_size, &sc)) != LLM_OK) {
        code = args_die("llm-worker", 1, "allocating the run state: %s", llm_strerror(rc));
        goto out;
    }
    if (o.dump_logits && !(logits = malloc(sizeof(float) * (size_t)c->vocab_size))) {
        code = args_die("llm-worker", 1, "out of memory");
        goto out;
    }
    if (strcmp(kern_simd_name(), "scalar") == 0)
        LOG_WARN("event=simd_fallback simd=scalar reason=\"no AVX2/FMA/F16C, or LLM_SIMD=scalar\"");
    LOG_INFO("event=generate model=%s prompt_tokens=%zu max_tokens=%d threads=%d simd=%s",
             o.model_path, n_prompt, o.max_tokens, o.threads, kern_simd_name());
    gen_params gp = {
        .max_tokens = o.max_tokens, .samp = o.samp, .stop = o.stop, .n_stop = o.n_stop};
    rc = gen_run(m, st, kv, p, sc, prompt, (int)n_prompt, STEP_TOKENS, &gp, print_text, &text,
                 logits, &res);
    if (rc != LLM_OK) {
        code = args_die("llm-worker", 1, "generation failed: %s", llm_strerror(rc));
        goto out;
    }
    if (res.n_ids > 0)
        fputc('\n', stdout);
    fflush(stdout);
    double pf = (double)res.prefill_ns / 1e9, dc = (double)res.decode_ns / 1e9;
    LOG_INFO("event=generated prompt_tokens=%zu tokens=%d finish=%s prefill_tok_s=%.1f "
             "decode_tok_s=%.1f",
             n_prompt, res.n_ids, gen_finish_name(res.finish), pf > 0 ? n_prompt / pf : 0.0,
             dc > 0 ? res.n_ids / dc : 0.0);
    if (o.dump_json &&
        (rc = dump_json(o.dump_json, &text, prompt, (int)n_prompt, &res)) != LLM_OK) {
        code = args_die("llm-worker", 1, "writing %s: %s", o.dump_json, llm_strerror(rc));
        goto out;
    }
    if (o.dump_logits) {
        FILE *f = fopen(o.dump_logits, "wb");
        bool ok =
            f && fwrite(logits, sizeof(float), (size_t)c->vocab_size, f) == (size_t)c->vocab_size;
        if (f)
            ok = (fclose(f) == 0) && ok;
        if (!ok) {
            code = args_die("llm-worker", 1, "writing %s failed", o.dump_logits);
            goto out;
        }
    }
out:
    free(text.buf);
    gen_result_fini(&res);
    free(logits);
    free(prompt);
    samp_ctx_free(sc);
    model_kv_free(kv);
    model_state_free(st);
    pool_free(p);
    model_free(m);
    return code;
}
