/*
 * kern_bench.c - llm-kern-bench: one matmul, timed alone.
 *
 *   llm-kern-bench [--type Q4_1] [--rows 1536] [--cols 576] [--tokens 1,4,16,64]
 *                  [--reps 50] [--float]
 *
 * Builds a pseudo-random matrix of the type, packs it unless --float (or the type cannot
 * be packed), and times kern_matmul over all rows on one thread for each token count:
 * best of --reps, as nanoseconds per weight per token and multiply-adds per
 * nanosecond. The best of many short runs is what a noisy machine lets one compare:
 * kernel changes are judged here before the whole engine.
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
    bool use_float = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--float") == 0) {
            use_float = true;
            continue;
        }
        if (!v)
            return args_die(prog, 2,
                            "usage: llm-kern-bench [--type T] [--rows R] [--cols C] "
                            "[--tokens 1,4,16] [--reps N] [--float]");
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
        uint64_t best = UINT64_MAX;
        for (int64_t r = 0; r < reps; r++) {
            uint64_t t0 = llm_now_ns();
            kern_matmul(&m, 0, cols, x, cols, y, rows, (int)n_tok, 0, rows, scratch);
            uint64_t dt = llm_now_ns() - t0;
            best = dt < best ? dt : best;
        }
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
