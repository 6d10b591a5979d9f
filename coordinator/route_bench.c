/*
 * route_bench.c - llm-route-bench: nanoseconds per routing decision.
 *
 *   llm-route-bench [--reps 5]
 *
 * For 32, 128 and 1024 candidates, each holding 256 sorted prefix block hashes, and a
 * 64-block request, it times router_pick for every policy and prints a Markdown table of
 * ns per decision, best of --reps runs. Candidate i holds the request's first (7 i mod 65)
 * blocks plus unrelated hashes, and carries a pseudo-random load, so prefix does real
 * binary searches and every policy sees ties and spreads. A benchmark, not a test: it
 * checks nothing beyond the picks being in range.
 */
#include "hash.h"
#include "llm_err.h"
#include "llm_time.h"
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_PREFIX 256
#define N_BLOCKS 64
#define DECISIONS_PER_RUN 200000 // spread over n: fewer decisions for more candidates

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void
build(route_cand *c, uint64_t *hashes, int n, const uint64_t *blocks, uint64_t *seed)
{
    for (int i = 0; i < n; i++) {
        uint64_t *h = hashes + (size_t)i * N_PREFIX;
        int held = (7 * i) % (N_BLOCKS + 1);
        for (int j = 0; j < N_PREFIX; j++)
            h[j] = j < held ? blocks[j] : llm_splitmix64(seed);
        qsort(h, N_PREFIX, sizeof(*h), cmp_u64);
        int load = (int)(llm_splitmix64(seed) % 16);
        c[i] = (route_cand){.load = load,
                            .inflight = load / 2,
                            .step_ms = 20 + (double)(llm_splitmix64(seed) % 20),
                            .queue_ms = (i % 4) ? 50 + (double)(llm_splitmix64(seed) % 100) : 0,
                            .tpot_ms = (i % 4) ? 15 + (double)(llm_splitmix64(seed) % 30) : 0,
                            .prefix_sorted = h,
                            .n_prefix = N_PREFIX};
    }
}

static double
bench_ns(route_policy p, const route_opts *o, const route_cand *c, int n, const route_req *q,
         int reps)
{
    router_state st = {.rr_next = 0, .rng = 42};
    int iters = DECISIONS_PER_RUN / n < 200 ? 200 : DECISIONS_PER_RUN / n;
    double best = 0;
    volatile long sink = 0; // keeps the picks observable
    for (int r = 0; r < reps; r++) {
        long sum = 0;
        uint64_t t0 = llm_now_ns();
        for (int k = 0; k < iters; k++) {
            int matched;
            sum += router_pick(&st, p, o, c, n, q, &matched) + matched;
        }
        double ns = (double)(llm_now_ns() - t0) / iters;
        sink += sum;
        if (r == 0 || ns < best)
            best = ns;
    }
    (void)sink;
    return best;
}

int
main(int argc, char **argv)
{
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
            return EXIT_FAILURE;
        }
    }
    if (reps < 1)
        reps = 1;

    static const int sizes[] = {32, 128, 1024};
    enum { N_SIZES = sizeof(sizes) / sizeof(sizes[0]) };
    const int max_n = sizes[N_SIZES - 1];
    route_cand *c = malloc(sizeof(*c) * (size_t)max_n);
    uint64_t *hashes = malloc(sizeof(*hashes) * (size_t)max_n * N_PREFIX);
    if (!c || !hashes) {
        fprintf(stderr, "llm-route-bench: %s\n", llm_strerror(LLM_ENOMEM));
        free(c);
        free(hashes);
        return EXIT_FAILURE;
    }
    uint64_t seed = 1, blocks[N_BLOCKS];
    for (int j = 0; j < N_BLOCKS; j++)
        blocks[j] = llm_splitmix64(&seed);
    route_req q = {.block_hashes = blocks, .n_blocks = N_BLOCKS, .max_tokens = 128};
    route_opts o = route_opts_default();

    double ns[ROUTE_N_POLICIES][N_SIZES];
    for (int s = 0; s < N_SIZES; s++) {
        build(c, hashes, sizes[s], blocks, &seed);
        for (int p = 0; p < ROUTE_N_POLICIES; p++)
            ns[p][s] = bench_ns((route_policy)p, &o, c, sizes[s], &q, reps);
    }

    printf("| policy | ns/decision, n=%d | n=%d | n=%d |\n", sizes[0], sizes[1], sizes[2]);
    printf("|---|---:|---:|---:|\n");
    for (int p = 0; p < ROUTE_N_POLICIES; p++)
        printf("| %s | %.0f | %.0f | %.0f |\n", route_policy_name((route_policy)p), ns[p][0],
               ns[p][1], ns[p][2]);
    printf("\n%d prefix hashes per candidate, %d-block request, matched_blocks asked for on "
           "every call, best of %d runs\n",
           N_PREFIX, N_BLOCKS, reps);
    free(c);
    free(hashes);
    return EXIT_SUCCESS;
}
