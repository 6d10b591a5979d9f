/*
 * bench_stats.h - the arithmetic of llm-bench: percentiles, means, time per output
 * token and goodput against per-tier SLOs, with the definitions vLLM's serving benchmark
 * uses, so that figures from both tools can be put side by side.
 *
 * Pure functions on arrays of doubles and request records: no clock, no I/O, no
 * allocation except the sorted copy in bstats_summarize. An empty input gives NaN (the
 * caller writes it as JSON null), never 0, so "no data" cannot pass for "instant".
 * It deliberately does not: measure anything, know about HTTP or RPC, or keep
 * histograms (exact percentiles over every sample are cheap at benchmark sizes).
 */
#ifndef LLM_CLIENT_BENCH_STATS_H
#define LLM_CLIENT_BENCH_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Tiers are indexed as llmc_tier (normal 0, critical 1, high 2, low 3, background 4). */
#define BSTATS_N_TIERS 5

/* A target below 0 is not checked (the SLO does not name it). */
#define BSTATS_NO_TARGET (-1.0)

/* The targets of one tier; a request meets it when each set target holds (<=). */
typedef struct {
    double ttft_ms, tpot_ms, e2e_ms; // BSTATS_NO_TARGET: not checked
} bstats_slo;

/* One measured request as goodput sees it. */
typedef struct {
    int tier;       // 0 .. BSTATS_N_TIERS-1
    bool ok;        // it completed (a 2xx / a normal finish)
    double ttft_ms; // NaN when no token came
    double tpot_ms; // NaN when fewer than 2 output tokens (then a tpot target is not checked)
    double e2e_ms;
} bstats_req;

/* Mean and percentiles of one metric; every field NaN when n is 0. */
typedef struct {
    int n;
    double mean, p50, p90, p99, min, max;
} bstats_summary;

/* Goodput of a set of requests: good ones per second and as a fraction of all of them
 * (failed ones included: a failure is never good). fraction is NaN with no requests. */
typedef struct {
    int requests, completed, good;
    double req_per_s, fraction;
} bstats_goodput;

/* bstats_percentile returns the p-th percentile (0 <= p <= 100) of sorted[0..n) (ascending)
 * by linear interpolation between the closest ranks, numpy's default: rank = p/100*(n-1),
 * x[floor] + (x[ceil] - x[floor]) * frac. NaN when n is 0. Thread: any. */
double bstats_percentile(const double *sorted, int n, double p);

/* bstats_mean returns the arithmetic mean of x[0..n), NaN when n is 0. */
double bstats_mean(const double *x, int n);

/* bstats_summarize fills *out with the mean, p50, p90, p99, min and max of x[0..n) (any
 * order; x is not modified). LLM_OK, or LLM_ENOMEM (then *out is all NaN, n 0). */
int bstats_summarize(const double *x, int n, bstats_summary *out);

/* bstats_tpot_ms returns a request's time per output token after the first, as vLLM:
 * (e2e - ttft) / (output_tokens - 1); NaN when output_tokens < 2 or ttft is NaN. */
double bstats_tpot_ms(double e2e_ms, double ttft_ms, int64_t output_tokens);

/* bstats_slo_none returns an SLO that checks nothing. */
bstats_slo bstats_slo_none(void);

/* bstats_req_good tells whether r completed and meets every target slo sets (slo NULL:
 * every completed request is good). A tpot target is met by a request without a TPOT
 * (fewer than 2 tokens); a ttft target is missed by one without a TTFT. */
bool bstats_req_good(const bstats_req *r, const bstats_slo *slo);

/* bstats_goodput_compute counts good requests of reqs[0..n) against slo_by_tier (an array
 * of BSTATS_N_TIERS; a tier's SLO is used for that tier's requests; NULL: no targets) over
 * duration_s (req_per_s 0 when duration_s <= 0). Fills *overall and, when by_tier is
 * not NULL, by_tier[0..BSTATS_N_TIERS). Requests with a tier out of range are counted
 * overall under the normal tier's SLO. Thread: any. */
void bstats_goodput_compute(const bstats_req *reqs, int n, const bstats_slo *slo_by_tier,
                            double duration_s, bstats_goodput *overall, bstats_goodput *by_tier);

#endif
