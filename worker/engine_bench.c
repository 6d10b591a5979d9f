/*
 * engine_bench.c - llm-engine-bench: single-stream engine speed on one machine.
 *
 *   llm-engine-bench --model M [--threads 1,2] [--prompt-tokens 512] [--decode-tokens 128]
 *                    [--batch 1,4,16,64] [--pin 0|1] [--sample N]
 *
 * For each thread count it measures the memory bandwidth (a read of one array and the
 * STREAM triad, a = b + s*c, over arrays far larger than the caches), prompt processing
 * (prefill of a fixed pseudo-random prompt, in 64-token steps) and decode (one token
 * per step) after a 16-token prompt and after the prefill's, and prints a Markdown
 * table with each decode as a fraction of its bandwidth bound: read bandwidth / bytes
 * read per decoded token (every weight, and the KV cache of the positions before it),
 * and decode speed relative to the first thread count. Best of --reps runs.
 * --batch adds batched decode at the last thread count: B sequences with 32-token
 * prompts decode 64 tokens each, one token per sequence per step, and the table gives
 * aggregate tok/s and the time of one step (each sequence's per-token latency).
 * --pin 1 binds each thread to a CPU (pool_pin).
 * --sample N times N draws of samp_sample at temperatures 0.7, 1 and 2 over the whole
 * vocabulary on the last decode step's logits (the per-sequence cost of a serving
 * step's draw).
 */
#define _DEFAULT_SOURCE // madvise(MADV_HUGEPAGE)
#include "args.h"
#include "llm_err.h"
#include "llm_time.h"
#include "model.h"
#include "pool.h"
#include "samp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define STEP_TOKENS 64
#define SHORT_PROMPT 16          // decode is also timed after a prompt this long
#define TRIAD_FLOATS (32u << 20) // 128 MiB per array

typedef struct {
    float *a, *b, *c;
    size_t n;
    uint64_t sums[256]; // the read pass's, one per thread (kept so it is not optimized away)
} triad_job;

static void
triad_run(void *ctx, int ith, int nth)
{
    triad_job *j = ctx;
    size_t i0 = j->n * (size_t)ith / (size_t)nth, i1 = j->n * (size_t)(ith + 1) / (size_t)nth;
    for (size_t i = i0; i < i1; i++)
        j->a[i] = j->b[i] + 3.0f * j->c[i];
}

/* Reads this thread's part of b (kern_read_sum): loads only, as a decode step's weight
 * stream is. */
static void
read_run(void *ctx, int ith, int nth)
{
    triad_job *j = ctx;
    size_t n = j->n / 2, i0 = n * (size_t)ith / (size_t)nth,
           i1 = n * (size_t)(ith + 1) / (size_t)nth;
    j->sums[ith] = kern_read_sum((const uint64_t *)j->b + i0, (int64_t)(i1 - i0));
}

/* An array in 2 MiB pages where the kernel allows it, as the packed weights are
 * (model.c): with 4 KiB pages every page is a TLB miss and a restart of the prefetcher,
 * and the figure would be the bandwidth of a layout the engine does not use. */
static float *
huge_floats(size_t n)
{
    void *p = NULL;
    size_t bytes = (sizeof(float) * n + (2u << 20) - 1) / (2u << 20) * (2u << 20);
    if (posix_memalign(&p, 2u << 20, bytes) != 0)
        return NULL;
    madvise(p, bytes, MADV_HUGEPAGE); // advice: a failure only costs speed
    return p;
}

/* The best of reps runs of the triad (a = b + 3c: two streams read, one written) and of
 * a read of one array, in GB/s. */
static void
bench_bandwidth(pool *p, int reps, double *triad_gbs, double *read_gbs)
{
    triad_job j = {huge_floats(TRIAD_FLOATS),
                   huge_floats(TRIAD_FLOATS),
                   huge_floats(TRIAD_FLOATS),
                   TRIAD_FLOATS,
                   {0}};
    *triad_gbs = *read_gbs = 0;
    if (j.a && j.b && j.c) {
        for (size_t i = 0; i < j.n; i++) {
            j.a[i] = 0;
            j.b[i] = 1;
            j.c[i] = 2;
        }
        for (int r = 0; r < reps; r++) {
            uint64_t t0 = llm_now_ns();
            pool_run(p, triad_run, &j);
            double s = (double)(llm_now_ns() - t0) / 1e9;
            double gbs = 3.0 * sizeof(float) * (double)j.n / s / 1e9;
            *triad_gbs = gbs > *triad_gbs ? gbs : *triad_gbs;
            t0 = llm_now_ns();
            pool_run(p, read_run, &j);
            s = (double)(llm_now_ns() - t0) / 1e9;
            gbs = sizeof(float) * (double)j.n / s / 1e9;
            *read_gbs = gbs > *read_gbs ? gbs : *read_gbs;
        }
    }
    free(j.a);
    free(j.b);
    free(j.c);
}

/* Runs n_prompt tokens of prefill then n_decode single-token steps; returns tok/s, and
 * the last step's logits in last (vocab_size floats) when it is not NULL. */
static int
bench_model(const model *m, pool *p, int n_threads, int n_prompt, int n_decode, double *pp_tok_s,
            double *tg_tok_s, float *last)
{
    const model_config *c = model_get_config(m);
    model_shard sh = model_full_shard(m);
    model_state *st = NULL;
    model_kv *kv = NULL;
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)(n_prompt + n_decode));
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    int rc = LLM_ENOMEM;
    if (!toks || !logits)
        goto out;
    if ((rc = model_state_new(m, &sh, STEP_TOKENS, n_threads, &st)) != LLM_OK ||
        (rc = model_kv_new(m, &sh, n_prompt + n_decode, &kv)) != LLM_OK)
        goto out;
    uint64_t x = 12345;
    for (int i = 0; i < n_prompt + n_decode; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = (int32_t)((x >> 33) % (uint64_t)c->vocab_size);
    }
    uint64_t t0 = llm_now_ns();
    for (int pos = 0; pos < n_prompt && rc == LLM_OK; pos += STEP_TOKENS) {
        int n = n_prompt - pos < STEP_TOKENS ? n_prompt - pos : STEP_TOKENS;
        rc = model_forward(m, st, kv, toks + pos, n, pos, p, NULL, NULL,
                           pos + n == n_prompt ? logits : NULL);
    }
    *pp_tok_s = n_prompt / ((double)(llm_now_ns() - t0) / 1e9);
    t0 = llm_now_ns();
    for (int i = 0; i < n_decode && rc == LLM_OK; i++)
        rc = model_forward(m, st, kv, toks + n_prompt + i, 1, n_prompt + i, p, NULL, NULL, logits);
    *tg_tok_s = n_decode / ((double)(llm_now_ns() - t0) / 1e9);
    if (last)
        memcpy(last, logits, sizeof(float) * (size_t)c->vocab_size);
out:
    model_state_free(st);
    model_kv_free(kv);
    free(toks);
    free(logits);
    return rc;
}

#define BATCH_PROMPT 32
#define BATCH_DECODE 64

/* Batched decode: n_seq sequences step together. Returns aggregate tok/s and step ms. */
static int
bench_batch(const model *m, pool *p, int n_threads, int n_seq, double *tok_s, double *step_ms)
{
    const model_config *c = model_get_config(m);
    model_shard sh = model_full_shard(m);
    model_state *st = NULL;
    model_kv **kv = calloc((size_t)n_seq, sizeof(model_kv *));
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_seq),
            *pos = malloc(sizeof(int32_t) * (size_t)n_seq);
    bool *want = malloc(sizeof(bool) * (size_t)n_seq);
    float *logits = malloc(sizeof(float) * (size_t)n_seq * (size_t)c->vocab_size);
    int32_t prompt[BATCH_PROMPT];
    int rc = LLM_ENOMEM;
    if (!kv || !tok || !pos || !want || !logits)
        goto out;
    int step = n_seq > STEP_TOKENS ? n_seq : STEP_TOKENS;
    if ((rc = model_state_new(m, &sh, step, n_threads, &st)) != LLM_OK)
        goto out;
    for (int i = 0; i < BATCH_PROMPT; i++)
        prompt[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
    for (int s = 0; s < n_seq && rc == LLM_OK; s++) {
        rc = model_kv_new(m, &sh, BATCH_PROMPT + BATCH_DECODE, &kv[s]);
        if (rc == LLM_OK)
            rc = model_forward(m, st, kv[s], prompt, BATCH_PROMPT, 0, p, NULL, NULL, NULL);
        tok[s] = (int32_t)((s * 31 + 7) % c->vocab_size);
        want[s] = true;
    }
    uint64_t t0 = llm_now_ns();
    for (int i = 0; i < BATCH_DECODE && rc == LLM_OK; i++) {
        for (int s = 0; s < n_seq; s++)
            pos[s] = BATCH_PROMPT + i;
        model_batch b = {n_seq, tok, pos, kv, want, logits};
        rc = model_forward_batch(m, st, &b, p, NULL, NULL);
    }
    double sec = (double)(llm_now_ns() - t0) / 1e9;
    *tok_s = (double)n_seq * BATCH_DECODE / sec;
    *step_ms = sec * 1e3 / BATCH_DECODE;
out:
    for (int s = 0; kv && s < n_seq; s++)
        model_kv_free(kv[s]);
    model_state_free(st);
    free(kv);
    free(tok);
    free(pos);
    free(want);
    free(logits);
    return rc;
}

/* A pool of n threads, pinned when asked (a warning when that fails); NULL on failure. */
static pool *
start_pool(long n, int64_t pin)
{
    pool *p = NULL;
    if (pool_new((int)n, &p) != LLM_OK)
        return NULL;
    if (pin && pool_pin(p) != LLM_OK)
        fprintf(stderr, "llm-engine-bench: warning: cannot pin the threads\n");
    return p;
}

int
main(int argc, char **argv)
{
    const char *model_path = NULL, *threads = "1,2", *batches = NULL;
    int64_t n_prompt = 512, n_decode = 128, reps = 3, pin = 0, n_sample = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--model"))
            model_path = v;
        else if (!strcmp(a, "--threads"))
            threads = v;
        else if (!strcmp(a, "--batch"))
            batches = v;
        else if (!strcmp(a, "--prompt-tokens") && args_int(v, 1, 8192, &n_prompt) == LLM_OK)
            ;
        else if (!strcmp(a, "--decode-tokens") && args_int(v, 1, 8192, &n_decode) == LLM_OK)
            ;
        else if (!strcmp(a, "--reps") && args_int(v, 1, 100, &reps) == LLM_OK)
            ;
        else if (!strcmp(a, "--pin") && args_int(v, 0, 1, &pin) == LLM_OK)
            ;
        else if (!strcmp(a, "--sample") && args_int(v, 0, 1000000, &n_sample) == LLM_OK)
            ;
        else
            return args_die("llm-engine-bench", 1, "bad option '%s %s'", a, v);
    }
    if (!model_path || argc % 2 == 0)
        return args_die("llm-engine-bench", 1,
                        "usage: llm-engine-bench --model M [--threads 1,2] [--prompt-tokens N] "
                        "[--decode-tokens N] [--reps N] [--batch 1,16] [--pin 0|1] [--sample N]");
    char err[512];
    model *m = NULL;
    model_load_opts lo = {.willneed = true};
    if (model_load(model_path, &lo, &m, err, sizeof(err)) != LLM_OK)
        return args_die("llm-engine-bench", 1, "model %s: %s", model_path, err);
    const model_config *c = model_get_config(m);
    if ((n_prompt > SHORT_PROMPT ? n_prompt : SHORT_PROMPT) + n_decode > c->ctx_len) {
        model_free(m);
        return args_die("llm-engine-bench", 1,
                        "prompt (at least %d) + decode tokens exceed the model context %d",
                        SHORT_PROMPT, c->ctx_len);
    }
    // Bytes a decode step reads: every weight once, and the KV cache of the positions
    // before it (on average those of the middle of the decode window). Decode is timed
    // twice: after a SHORT_PROMPT-token prompt (what llama-bench's tg reports) and after
    // the n_prompt tokens of the prefill.
    model_shard full = model_full_shard(m);
    double wbytes = (double)model_weight_bytes(m);
    double kv_pos = (double)model_kv_block_bytes(m, &full) / MODEL_KV_BLOCK;
    double kv_short = kv_pos * (SHORT_PROMPT + (double)n_decode / 2);
    double kv_long = kv_pos * ((double)n_prompt + (double)n_decode / 2);
    printf("model: %s (%.1f MB of weights read per decoded token, and %.1f MB of KV cache "
           "after %d tokens, %.1f after %d), simd: %s, activations: %s\n\n",
           model_path, wbytes / 1e6, kv_short / 1e6, SHORT_PROMPT, kv_long / 1e6, (int)n_prompt,
           kern_simd_name(), kern_act_name());
    printf("| threads | read GB/s | triad GB/s | prefill tok/s (%d-token prompt) | "
           "decode tok/s (%d-token prompt) | decode / read bound | "
           "decode tok/s (%d-token prompt) | decode / read bound | decode vs 1st row |\n"
           "|---|---|---|---|---|---|---|---|---|\n",
           (int)n_prompt, SHORT_PROMPT, (int)n_prompt);
    double tg_first = 0, tg_first_short = 0;
    int code = 0;
    float *last = n_sample ? malloc(sizeof(float) * (size_t)c->vocab_size) : NULL;
    if (n_sample && !last) {
        model_free(m);
        return args_die("llm-engine-bench", 1, "out of memory");
    }
    for (const char *s = threads; *s;) {
        char *end;
        long nt = strtol(s, &end, 10);
        if (end == s || nt < 1 || nt > 256) {
            code = args_die("llm-engine-bench", 1,
                            "--threads must be a comma-separated list of counts");
            break;
        }
        s = *end == ',' ? end + 1 : end;
        pool *p = start_pool(nt, pin);
        if (!p) {
            code = args_die("llm-engine-bench", 1, "cannot start %ld threads", nt);
            break;
        }
        double triad, bw, pp = 0, tg = 0, tg_short = 0;
        bench_bandwidth(p, (int)reps, &triad, &bw);
        for (int r = 0; r < reps && code == 0; r++) {
            double a, b, pp_r, ignored;
            if (bench_model(m, p, (int)nt, SHORT_PROMPT, (int)n_decode, &ignored, &a, NULL) !=
                    LLM_OK ||
                bench_model(m, p, (int)nt, (int)n_prompt, (int)n_decode, &pp_r, &b, last) !=
                    LLM_OK) {
                code = args_die("llm-engine-bench", 1, "forward pass failed");
                break;
            }
            pp = pp_r > pp ? pp_r : pp;
            tg_short = a > tg_short ? a : tg_short;
            tg = b > tg ? b : tg;
        }
        pool_free(p);
        if (code != 0)
            break;
        double bound_short = bw * 1e9 / (wbytes + kv_short), bound = bw * 1e9 / (wbytes + kv_long);
        if (tg_first == 0) {
            tg_first_short = tg_short;
            tg_first = tg;
        }
        printf("| %ld | %.1f | %.1f | %.1f | %.1f | %.2f of %.0f | %.1f | %.2f of %.0f | %.2fx / "
               "%.2fx |\n",
               nt, bw, triad, pp, tg_short, tg_short / bound_short, bound_short, tg, tg / bound,
               bound, tg_short / tg_first_short, tg / tg_first);
        fflush(stdout);
    }
    if (code == 0 && last) {
        // What a serving step spends per sequence on its draw: stories at T = 0.7, and
        // flatter distributions (T = 1, 2: most of the vocabulary in the sorted prefix).
        samp_ctx *sc = NULL;
        if (samp_ctx_new(c->vocab_size, &sc) != LLM_OK)
            code = args_die("llm-engine-bench", 1, "out of memory");
        static const float temps[] = {0.7f, 1.0f, 2.0f};
        for (size_t k = 0; sc && k < sizeof(temps) / sizeof(temps[0]); k++) {
            samp_params sp = {.temperature = temps[k], .top_k = 0, .top_p = 1.0f, .seed = 1};
            uint64_t t0 = llm_now_ns();
            int64_t ids = 0;
            for (int64_t i = 0; i < n_sample; i++)
                ids += samp_sample(sc, &sp, last, i);
            double us = (double)(llm_now_ns() - t0) / 1e3 / (double)n_sample;
            printf("%sSampling at temperature %.1f over the whole vocabulary (the last decode "
                   "step's logits): %.1f us a draw (%lld draws, ids summing to %lld)\n",
                   k ? "" : "\n", temps[k], us, (long long)n_sample, (long long)ids);
        }
        samp_ctx_free(sc);
    }
    free(last);
    long last_threads = 1;
    for (const char *t = threads; *t;) {
        char *end;
        last_threads = strtol(t, &end, 10);
        t = *end == ',' ? end + 1 : end;
        if (end == t && *t)
            break;
    }
    if (code == 0 && batches) {
        printf("\nBatched decode, %ld threads, %d-token prompts, %d steps:\n\n"
               "| sequences | aggregate tok/s | step ms (per-token latency) |\n|---|---|---|\n",
               last_threads, BATCH_PROMPT, BATCH_DECODE);
        pool *p = start_pool(last_threads, pin);
        if (!p)
            code = args_die("llm-engine-bench", 1, "cannot start %ld threads", last_threads);
        for (const char *b = batches; code == 0 && *b;) {
            char *end;
            long n = strtol(b, &end, 10);
            if (end == b || n < 1 || n > 1024) {
                code = args_die("llm-engine-bench", 1, "--batch must list counts in 1..1024");
                break;
            }
            b = *end == ',' ? end + 1 : end;
            double best = 0, ms = 0;
            for (int r = 0; r < reps; r++) {
                double ts, sm;
                if (bench_batch(m, p, (int)last_threads, (int)n, &ts, &sm) != LLM_OK) {
                    code = args_die("llm-engine-bench", 1, "batched forward failed");
                    break;
                }
                if (ts > best) {
                    best = ts;
                    ms = sm;
                }
            }
            if (code == 0)
                printf("| %ld | %.1f | %.2f |\n", n, best, ms);
            fflush(stdout);
        }
        pool_free(p);
    }
    model_free(m);
    return code;
}
