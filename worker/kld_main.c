/*
 * kld_main.c - llm-kld: how far a quantized model's predictions are from the original's.
 *   llm-kld --base ORIG.gguf --model QUANT.gguf --text FILE [--max-tokens N] [--threads N]
 * The text is tokenized with the base model's tokenizer and both models are run over it
 * with teacher forcing, in independent windows of up to KLD_WINDOW tokens (each starts
 * from an empty cache, and with BOS when the vocabulary asks for one). At every scored
 * position it takes both next-token distributions and accumulates, in double:
 * KL(base || model) = sum_i p_i (log p_i - log q_i), whether the two argmaxes agree, and
 * each model's negative log-likelihood of the actual next token. It prints one
 * "key value" line per figure on stdout: tokens, windows, kl_mean, kl_p99, kl_max,
 * top1_agree, ppl_base, ppl_model.
 *
 * model_forward gives only the last token's logits, so each step runs one token: slow
 * per token but exact, and ~1,000 tokens of a 135M model take seconds.
 * Exit codes: 0 ok, 1 runtime error, 2 bad usage; errors are one line on stderr.
 */
#define _DEFAULT_SOURCE // sysconf(_SC_NPROCESSORS_ONLN)

#include "args.h"
#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "model.h"
#include "pool.h"
#include "tok.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KLD_WINDOW 512 // tokens fed per window, BOS included
#define KLD_MAX_TEXT (64u << 20)

typedef struct {
    const char *base_path, *model_path, *text_path;
    int64_t max_tokens; // 0 = all
    int threads;
} kld_opts;

/* One model with its own cache and scratch. */
typedef struct {
    model *m;
    model_state *st;
    model_kv *kv;
    float *logits; // [vocab_size]
} kld_side;

static void
usage(FILE *out)
{
    fprintf(out, "usage: llm-kld --base ORIG.gguf --model QUANT.gguf --text FILE [options]\n"
                 "  --max-tokens N   score at most N tokens of the text (default: all)\n"
                 "  --threads N      compute threads (default: online CPUs)\n"
                 "  --log-level L    debug|info|warn|error|off (default info)\n"
                 "Prints tokens, windows, kl_mean, kl_p99, kl_max, top1_agree, ppl_base and\n"
                 "ppl_model, one \"key value\" per line. KL is KL(base || model) in nats.\n");
}

static int
parse_args(int argc, char **argv, kld_opts *o)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = ncpu > 0 ? (int)ncpu : 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return -1;
        }
        static const char *const valued[] = {"--base",       "--model",   "--text",
                                             "--max-tokens", "--threads", "--log-level"};
        bool known = false;
        for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); k++)
            known = known || !strcmp(a, valued[k]);
        if (!known)
            return args_die("llm-kld", 2, "%s '%s' (see --help)",
                            strncmp(a, "--", 2) ? "unexpected argument" : "unknown option", a);
        if (i + 1 >= argc)
            return args_die("llm-kld", 2, "missing value for '%s' (see --help)", a);
        const char *v = argv[++i];
        int64_t n;
        if (!strcmp(a, "--base")) {
            o->base_path = v;
        } else if (!strcmp(a, "--model")) {
            o->model_path = v;
        } else if (!strcmp(a, "--text")) {
            o->text_path = v;
        } else if (!strcmp(a, "--max-tokens")) {
            if (args_int(v, 1, 1 << 24, &n) != LLM_OK)
                return args_die("llm-kld", 2,
                                "--max-tokens must be an integer in [1, 16777216], got '%s'", v);
            o->max_tokens = n;
        } else if (!strcmp(a, "--threads")) {
            if (args_int(v, 1, 256, &n) != LLM_OK)
                return args_die("llm-kld", 2, "--threads must be an integer in [1, 256], got '%s'",
                                v);
            o->threads = (int)n;
        } else {
            int lvl = log_parse_level(v);
            if (lvl < 0)
                return args_die("llm-kld", 2,
                                "--log-level must be debug, info, warn, error or off");
            log_set_level((log_level)lvl);
        }
    }
    if (!o->base_path || !o->model_path || !o->text_path)
        return args_die("llm-kld", 2, "--base, --model and --text are required (see --help)");
    return 0;
}

/* read_text reads a whole (small) file; *buf is malloc'ed. LLM_EIO or LLM_ERANGE. */
static int
read_text(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return LLM_EIO;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    int rc = b ? LLM_OK : LLM_ENOMEM;
    while (rc == LLM_OK) {
        if (n == cap) {
            char *nb = cap < KLD_MAX_TEXT ? realloc(b, cap * 2) : NULL;
            if (!nb) {
                rc = cap < KLD_MAX_TEXT ? LLM_ENOMEM : LLM_ERANGE;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            rc = ferror(f) ? LLM_EIO : LLM_OK;
            break;
        }
    }
    fclose(f);
    if (rc != LLM_OK) {
        free(b);
        return rc;
    }
    *buf = b;
    *len = n;
    return LLM_OK;
}

/* side_open loads a model and its one-token scratch; the cache is made per window. */
static int
side_open(const char *path, int threads, kld_side *s, char *err, size_t err_len)
{
    model_load_opts lo = {.willneed = true};
    int rc = model_load(path, &lo, &s->m, err, err_len);
    if (rc != LLM_OK)
        return rc;
    model_shard shard = model_full_shard(s->m);
    if ((rc = model_state_new(s->m, &shard, 1, threads, &s->st)) != LLM_OK ||
        !(s->logits = malloc(sizeof(float) * (size_t)model_get_config(s->m)->vocab_size))) {
        llm_errf(err, err_len, "allocating the run state: %s",
                 llm_strerror(rc != LLM_OK ? rc : LLM_ENOMEM));
        return rc != LLM_OK ? rc : LLM_ENOMEM;
    }
    return LLM_OK;
}

static void
side_close(kld_side *s)
{
    free(s->logits);
    model_kv_free(s->kv);
    model_state_free(s->st);
    model_free(s->m);
}

/* log_softmax turns n logits into log-probabilities (double) in out; returns argmax. */
static int
log_softmax(const float *x, double *out, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    double mx = x[best], sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    double lse = mx + log(sum);
    for (int i = 0; i < n; i++)
        out[i] = (double)x[i] - lse;
    return best;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
    kld_opts o = {0};
    int code = parse_args(argc, argv, &o);
    if (code != 0)
        return code < 0 ? 0 : code;

    char err[512] = "";
    kld_side base = {0}, quant = {0};
    pool *p = NULL;
    char *text = NULL;
    size_t text_len = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    double *lp = NULL, *lq = NULL, *kls = NULL;
    int rc;

    if ((rc = read_text(o.text_path, &text, &text_len)) != LLM_OK) {
        code = args_die("llm-kld", 1, "reading %s: %s", o.text_path, llm_strerror(rc));
        goto out;
    }
    if ((rc = side_open(o.base_path, o.threads, &base, err, sizeof(err))) != LLM_OK) {
        code = args_die("llm-kld", 1, "model %s: %s", o.base_path, err);
        goto out;
    }
    if ((rc = side_open(o.model_path, o.threads, &quant, err, sizeof(err))) != LLM_OK) {
        code = args_die("llm-kld", 1, "model %s: %s", o.model_path, err);
        goto out;
    }
    int n_vocab = model_get_config(base.m)->vocab_size;
    if (model_get_config(quant.m)->vocab_size != n_vocab) {
        code = args_die("llm-kld", 1, "the models' vocabularies differ (%d and %d tokens)", n_vocab,
                        model_get_config(quant.m)->vocab_size);
        goto out;
    }
    const tok_vocab *v = model_get_vocab(base.m);
    if ((rc = tok_encode(v, text, text_len, false, &ids, &n_ids)) != LLM_OK) {
        code = args_die("llm-kld", 1, "tokenizing %s: %s", o.text_path, llm_strerror(rc));
        goto out;
    }
    // Each window feeds [BOS] t[a] .. t[b-1] and scores every t[j] that has a predecessor
    // in the window: with BOS all of them, else all but the first.
    int32_t bos = tok_add_bos(v) ? tok_bos(v) : -1;
    int ctx = model_get_config(base.m)->ctx_len;
    if (model_get_config(quant.m)->ctx_len < ctx)
        ctx = model_get_config(quant.m)->ctx_len;
    int window = ctx < KLD_WINDOW ? ctx : KLD_WINDOW;
    int per_window = bos >= 0 ? window - 1 : window; // text tokens per window
    size_t max_scored = o.max_tokens ? (size_t)o.max_tokens : n_ids;
    if (per_window < 2 || n_ids < 2) {
        code = args_die("llm-kld", 1, "%s has too few tokens (%zu) to score", o.text_path, n_ids);
        goto out;
    }
    lp = malloc(sizeof(double) * (size_t)n_vocab);
    lq = malloc(sizeof(double) * (size_t)n_vocab);
    kls = malloc(sizeof(double) * (n_ids + 1));
    if (!lp || !lq || !kls || (rc = pool_new(o.threads, &p)) != LLM_OK) {
        code = args_die("llm-kld", 1, "out of memory");
        goto out;
    }
    LOG_INFO("event=kld_start base=%s model=%s text_tokens=%zu window=%d bos=%d threads=%d",
             o.base_path, o.model_path, n_ids, window, bos, o.threads);

    size_t n_scored = 0, n_agree = 0, n_windows = 0;
    double kl_sum = 0, nll_base = 0, nll_quant = 0;
    uint64_t t0 = llm_now_ns();
    // Without BOS, consecutive windows overlap by one token (the previous window's last
    // one starts the next as context), so every token after the first is scored once.
    size_t step = (size_t)(bos >= 0 ? per_window : per_window - 1);
    for (size_t a = 0; a + (bos < 0) < n_ids && n_scored < max_scored; a += step) {
        size_t b = a + (size_t)per_window < n_ids ? a + (size_t)per_window : n_ids;
        // The fed sequence is seq[0..len): BOS (if any) then t[a..b). Position k's logits
        // predict seq[k + 1]; the last token's prediction has no target and is not run.
        int len = (int)(b - a) + (bos >= 0);
        model_kv_free(base.kv);
        model_kv_free(quant.kv);
        base.kv = quant.kv = NULL;
        model_shard sb = model_full_shard(base.m), sq = model_full_shard(quant.m);
        if ((rc = model_kv_new(base.m, &sb, window, &base.kv)) != LLM_OK ||
            (rc = model_kv_new(quant.m, &sq, window, &quant.kv)) != LLM_OK) {
            code = args_die("llm-kld", 1, "allocating the cache: %s", llm_strerror(rc));
            goto out;
        }
        n_windows++;
        for (int k = 0; k + 1 < len && n_scored < max_scored; k++) {
            int32_t tok = bos >= 0 ? (k == 0 ? bos : ids[a + (size_t)k - 1]) : ids[a + (size_t)k];
            int32_t next = bos >= 0 ? ids[a + (size_t)k] : ids[a + (size_t)k + 1];
            if ((rc = model_forward(base.m, base.st, base.kv, &tok, 1, k, p, NULL, NULL,
                                    base.logits)) != LLM_OK ||
                (rc = model_forward(quant.m, quant.st, quant.kv, &tok, 1, k, p, NULL, NULL,
                                    quant.logits)) != LLM_OK) {
                code = args_die("llm-kld", 1, "forward step failed: %s", llm_strerror(rc));
                goto out;
            }
            int top_p = log_softmax(base.logits, lp, n_vocab);
            int top_q = log_softmax(quant.logits, lq, n_vocab);
            double kl = 0;
            for (int i = 0; i < n_vocab; i++)
                kl += exp(lp[i]) * (lp[i] - lq[i]);
            kl = kl < 0 ? 0 : kl; // rounding can make an exact match a hair negative
            kls[n_scored++] = kl;
            kl_sum += kl;
            n_agree += top_p == top_q;
            nll_base -= lp[next];
            nll_quant -= lq[next];
        }
    }
    double secs = (double)(llm_now_ns() - t0) / 1e9;
    qsort(kls, n_scored, sizeof(double), cmp_double);
    size_t i99 = (size_t)ceil(0.99 * (double)n_scored); // nearest-rank percentile
    double n = (double)n_scored;
    printf("tokens %zu\n", n_scored);
    printf("windows %zu\n", n_windows);
    printf("kl_mean %.6g\n", kl_sum / n);
    printf("kl_p99 %.6g\n", kls[i99 > 0 ? i99 - 1 : 0]);
    printf("kl_max %.6g\n", kls[n_scored - 1]);
    printf("top1_agree %.6f\n", (double)n_agree / n);
    printf("ppl_base %.6g\n", exp(nll_base / n));
    printf("ppl_model %.6g\n", exp(nll_quant / n));
    fflush(stdout);
    LOG_INFO("event=kld_done tokens=%zu seconds=%.2f tok_s=%.1f", n_scored, secs,
             secs > 0 ? n / secs : 0.0);
out:
    free(lp);
    free(lq);
    free(kls);
    free(ids);
    free(text);
    pool_free(p);
    side_close(&quant);
    side_close(&base);
    return code;
}
