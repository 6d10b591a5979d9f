/*
 * kern_bench.c - llm-kern-bench: one matmul, timed alone.
 *
 *   llm-kern-bench [--type Q4_1] [--rows 1536] [--cols 576] [--tokens 1,4,16,64]
 *                  [--reps 50] [--float]
 *   llm-kern-bench --attn [--reps 50]
 *
 * Builds a pseudo-random matrix of the type, packs it unless --float (or the type cannot
 * be packed), and times kern_matmul over all rows on one thread for each token count:
 * best of --reps, as nanoseconds per weight per token and multiply-adds per
 * nanosecond. The best of many short runs is what a noisy machine lets one compare:
 * kernel changes are judged here before the whole engine.
 * --attn times the attention kernels instead, on one float16 cache block of 16
 * positions with 64-float heads (in L1): scores of 1, 2 and 3 queries sharing the block
 * (kern_attn_scores) and one query's weighted values (kern_attn_values_f16).
 */
#include "args.h"
#include "kern.h"
#include "llm_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float
frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* Best of reps calls of fn(ctx), in ns. */
static uint64_t
best_ns(int64_t reps, int inner, void (*fn)(void *), void *ctx)
{
    uint64_t best = UINT64_MAX;
    for (int64_t r = 0; r < reps; r++) {
        uint64_t t0 = llm_now_ns();
        for (int i = 0; i < inner; i++)
            fn(ctx);
        uint64_t dt = llm_now_ns() - t0;
        best = dt < best ? dt : best;
    }
    return best;
}

enum { HD = 64, INNER = 1000 };

typedef struct {
    float q[KERN_ATT_QUERIES][HD], att[KERN_ATT_QUERIES][KERN_KV_BLOCK], out[HD];
    kern_half k[HD * KERN_KV_BLOCK], v[KERN_KV_BLOCK * HD];
    int nq;
} attn_ctx;

static void
scores_once(void *ctx)
{
    attn_ctx *a = ctx;
    float *att[] = {a->att[0], a->att[1], a->att[2]};
    const float *q[] = {a->q[0], a->q[1], a->q[2]};
    kern_attn_scores(att, q, a->nq, a->k, true, HD, 0.125f);
}

static void
values_once(void *ctx)
{
    attn_ctx *a = ctx;
    kern_attn_values_f16(a->out, a->att[0], a->v, HD, KERN_KV_BLOCK, HD);
}

static int
bench_attn(int64_t reps)
{
    static attn_ctx a;
    unsigned s = 3;
    for (int i = 0; i < HD * KERN_KV_BLOCK; i++) {
        a.k[i] = kern_float_to_half(frand(&s));
        a.v[i] = kern_float_to_half(frand(&s));
    }
    for (int i = 0; i < KERN_ATT_QUERIES; i++)
        for (int d = 0; d < HD; d++)
            a.q[i][d] = frand(&s);
    for (int p = 0; p < KERN_KV_BLOCK; p++)
        a.att[0][p] = 1.0f / KERN_KV_BLOCK;
    printf("attention, one float16 block of %d positions, head size %d, simd %s\n\n"
           "| kernel | ns / call | MACs / ns |\n|---|---|---|\n",
           KERN_KV_BLOCK, HD, kern_simd_name());
    for (a.nq = 1; a.nq <= KERN_ATT_QUERIES; a.nq++) {
        double ns = (double)best_ns(reps, INNER, scores_once, &a) / INNER;
        printf("| scores, %d quer%s | %.1f | %.2f |\n", a.nq, a.nq == 1 ? "y" : "ies", ns,
               (double)(a.nq * KERN_KV_BLOCK * HD) / ns);
    }
    double ns = (double)best_ns(reps, INNER, values_once, &a) / INNER;
    printf("| values, 1 query | %.1f | %.2f |\n", ns, (double)(KERN_KV_BLOCK * HD) / ns);
    return 0;
}

/* One kern_matmul of the benchmark's matrix, for best_ns. */
typedef struct {
    const kern_mat *m;
    const float *x;
    float *y, *scratch;
    int64_t cols, rows;
    int n_tok;
} matmul_ctx;

static void
matmul_once(void *ctx)
{
    matmul_ctx *c = ctx;
    kern_matmul(c->m, 0, c->cols, c->x, c->cols, c->y, c->rows, c->n_tok, 0, c->rows, c->scratch);
}

static llm_dtype
type_named(const char *name)
{
    for (int t = 0; t < LLM_DTYPE_COUNT; t++)
        if (kern_type_supported(t) && strcmp(kern_type_name(t), name) == 0)
            return (llm_dtype)t;
    return LLM_DTYPE_COUNT;
}

int
main(int argc, char **argv)
{
    const char *prog = "llm-kern-bench", *type_name = "Q4_1", *tokens = "1,4,16,64";
    int64_t rows = 1536, cols = 576, reps = 50;
    bool use_float = false, attn = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--float") == 0) {
            use_float = true;
            continue;
        }
        if (strcmp(a, "--attn") == 0) {
            attn = true;
            continue;
        }
        if (!v)
            return args_die(prog, 2,
                            "usage: llm-kern-bench [--type T] [--rows R] [--cols C] "
                            "[--tokens 1,4,16] [--reps N] [--float] | --attn [--reps N]");
        i++;
        if (strcmp(a, "--type") == 0)
            type_name = v;
        else if (strcmp(a, "--rows") == 0)
            rows = args_need_int(prog, a, v, 8, 1 << 20);
        else if (strcmp(a, "--cols") == 0)
            cols = args_need_int(prog, a, v, 32, 1 << 16);
        else if (strcmp(a, "--tokens") == 0)
            tokens = v;
        else if (strcmp(a, "--reps") == 0)
            reps = args_need_int(prog, a, v, 1, 100000);
        else
            return args_die(prog, 2, "unknown flag %s", a);
    }
    if (attn)
        return bench_attn(reps);
    llm_dtype t = type_named(type_name);
    if (t == LLM_DTYPE_COUNT)
        return args_die(prog, 2, "unknown or unsupported type '%s'", type_name);
    const kern_type_traits *tr = kern_type(t);
    int64_t unit = tr->blck > 32 ? tr->blck : 32;
    if (cols % unit != 0)
        return args_die(prog, 2, "--cols must be a multiple of %lld for %s", (long long)unit,
                        type_name);
    size_t rb = kern_row_size(t, cols);
    char *q = malloc(rb * (size_t)rows);
    float *w = malloc(sizeof(float) * (size_t)cols), *x = malloc(sizeof(float) * 64 * cols);
    float *y = malloc(sizeof(float) * 64 * (size_t)rows);
    float *scratch = malloc(sizeof(float) * KERN_MATMUL_SCRATCH(cols));
    void *packed = NULL;
    if (!q || !w || !x || !y || !scratch)
        return args_die(prog, 1, "out of memory");
    unsigned s = 7;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++)
            w[c] = frand(&s);
        tr->from_float(w, q + (size_t)r * rb, cols);
    }
    for (int64_t i = 0; i < 64 * cols; i++)
        x[i] = frand(&s);
    kern_mat m = {t, q, cols, rows, rb, false};
    if (!use_float && kern_pack_supported(t, rows, cols)) {
        packed = malloc(kern_pack_bytes(t, rows, cols));
        if (!packed)
            return args_die(prog, 1, "out of memory");
        kern_pack(&m, packed, &m);
    }
    printf("%s %lld x %lld, %s, simd %s\n\n| tokens | ns / weight / token | MACs / ns |\n"
           "|---|---|---|\n",
           type_name, (long long)rows, (long long)cols,
           m.packed ? "packed, 16-bit activations" : "float activations", kern_simd_name());
    for (const char *p = tokens; *p;) {
        char *end;
        long n_tok = strtol(p, &end, 10);
        if (end == p || n_tok < 1 || n_tok > 64)
            return args_die(prog, 2, "--tokens: a comma-separated list of counts in 1..64");
        p = *end == ',' ? end + 1 : end;
        matmul_ctx mc = {&m, x, y, scratch, cols, rows, (int)n_tok};
        uint64_t best = best_ns(reps, 1, matmul_once, &mc);
        double macs = (double)rows * (double)cols * (double)n_tok;
        printf("| %ld | %.4f | %.2f |\n", n_tok, (double)best / macs, macs / (double)best);
    }
    free(packed);
    free(q);
    free(w);
    free(x);
    free(y);
    free(scratch);
    return 0;
}
