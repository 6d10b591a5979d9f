/*
 * bench_stats.c - percentiles, means, TPOT and goodput for llm-bench (see bench_stats.h).
 */
#include "bench_stats.h"

#include "llm_err.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

double
bstats_percentile(const double *sorted, int n, double p)
{
    assert(n == 0 || sorted);
    assert(p >= 0 && p <= 100);
    if (n <= 0)
        return NAN;
    double rank = p / 100.0 * (double)(n - 1);
    int lo = (int)floor(rank);
    int hi = lo + 1 < n ? lo + 1 : n - 1;
    double frac = rank - (double)lo;
    // numpy's "linear" method; the difference form keeps ties exact (x + 0 * d == x).
    return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

double
bstats_mean(const double *x, int n)
{
    if (n <= 0)
        return NAN;
    double s = 0;
    for (int i = 0; i < n; i++)
        s += x[i];
    return s / (double)n;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int
bstats_summarize(const double *x, int n, bstats_summary *out)
{
    assert(out && (n == 0 || x));
    *out = (bstats_summary){0, NAN, NAN, NAN, NAN, NAN, NAN};
    if (n <= 0)
        return LLM_OK;
    double *s = malloc(sizeof(double) * (size_t)n);
    if (!s)
        return LLM_ENOMEM;
    memcpy(s, x, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    out->n = n;
    out->mean = bstats_mean(s, n);
    out->p50 = bstats_percentile(s, n, 50);
    out->p90 = bstats_percentile(s, n, 90);
    out->p99 = bstats_percentile(s, n, 99);
    out->min = s[0];
    out->max = s[n - 1];
    free(s);
    return LLM_OK;
}

double
bstats_tpot_ms(double e2e_ms, double ttft_ms, int64_t output_tokens)
{
    if (output_tokens < 2 || isnan(ttft_ms) || isnan(e2e_ms))
        return NAN;
    return (e2e_ms - ttft_ms) / (double)(output_tokens - 1);
}

bstats_slo
bstats_slo_none(void)
{
    return (bstats_slo){BSTATS_NO_TARGET, BSTATS_NO_TARGET, BSTATS_NO_TARGET};
}

bool
bstats_req_good(const bstats_req *r, const bstats_slo *slo)
{
    assert(r);
    if (!r->ok)
        return false;
    if (!slo)
        return true;
    if (slo->ttft_ms >= 0 && (isnan(r->ttft_ms) || r->ttft_ms > slo->ttft_ms))
        return false;
    // vLLM skips the TPOT check for one-token answers: there is no TPOT to miss.
    if (slo->tpot_ms >= 0 && !isnan(r->tpot_ms) && r->tpot_ms > slo->tpot_ms)
        return false;
    if (slo->e2e_ms >= 0 && (isnan(r->e2e_ms) || r->e2e_ms > slo->e2e_ms))
        return false;
    return true;
}

static void
goodput_finish(bstats_goodput *g, double duration_s)
{
    g->req_per_s = duration_s > 0 ? (double)g->good / duration_s : 0;
    g->fraction = g->requests > 0 ? (double)g->good / (double)g->requests : NAN;
}

void
bstats_goodput_compute(const bstats_req *reqs, int n, const bstats_slo *slo_by_tier,
                       double duration_s, bstats_goodput *overall, bstats_goodput *by_tier)
{
    assert(overall && (n == 0 || reqs));
    memset(overall, 0, sizeof(*overall));
    if (by_tier)
        memset(by_tier, 0, sizeof(*by_tier) * BSTATS_N_TIERS);
    for (int i = 0; i < n; i++) {
        const bstats_req *r = &reqs[i];
        bool in_range = r->tier >= 0 && r->tier < BSTATS_N_TIERS;
        int t = in_range ? r->tier : 0;
        bool good = bstats_req_good(r, slo_by_tier ? &slo_by_tier[t] : NULL);
        overall->requests++;
        overall->completed += r->ok;
        overall->good += good;
        if (by_tier && in_range) {
            by_tier[t].requests++;
            by_tier[t].completed += r->ok;
            by_tier[t].good += good;
        }
    }
    goodput_finish(overall, duration_s);
    for (int t = 0; by_tier && t < BSTATS_N_TIERS; t++)
        goodput_finish(&by_tier[t], duration_s);
}
