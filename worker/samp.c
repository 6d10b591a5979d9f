/*
 * samp.c - greedy / temperature / top-k / top-p sampling with position-keyed draws.
 *
 * The definition: each token's weight is w = trunc(e * 2^30), e = exp((logit - max) /
 * temperature) (kern_exp); a token of weight 0 (e < 2^-30 of the best's) is never drawn.
 * Candidates are ordered by logit descending, then id ascending. Top-k keeps the first k
 * of them; top-p then the shortest prefix whose weight reaches ceil(top_p * its total).
 * The draw u = trunc(uniform(seed, pos) * total) picks the first candidate at which the
 * running weight exceeds u. Weights are integers, so every sum is exact and the result
 * does not depend on the order anything is added in.
 *
 * That lets a draw skip sorting: candidates are bucketed by logit into 2,048 buckets of
 * equal width below the best (which keeps their order: a bucket's candidates all come
 * before the next bucket's), and only the bucket in which the running count or weight
 * crosses its target is looked into, split the same way over its own range, until what
 * is left is a few candidates, sorted outright, or equal logits (in id order). Only the
 * prefix of candidates with e >= 2^-20 is bucketed up front; the rest, a sliver of the
 * mass in all but the flattest distributions, when a search goes past the prefix. A
 * draw costs a few passes over the candidates whatever their distribution; sorting them
 * cost ~5 ms when a flat distribution made them most of the vocabulary.
 */
#include "samp.h"

#include "kern.h"
#include "llm_err.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define W_SCALE 0x1p30f     // weights in units of 2^-30 of the best token's
#define PREFIX_MIN 0x1p-20f // candidates bucketed up front: e at least this
#define N_BUCKETS 2048
#define SMALL 32 // a bucket this small is sorted outright

typedef struct {
    uint32_t n[N_BUCKETS]; // candidates per bucket
    uint64_t w[N_BUCKETS]; // their weight
} hist;

struct samp_ctx {
    int n_vocab;
    float *e;          // [n_vocab] exp((logit - max) / temperature), by id
    int32_t *ix;       // [n_vocab] the prefix (e >= PREFIX_MIN), ids ascending
    uint16_t *b;       // [n_vocab] each one's bucket below the best
    int n_prefix;      // how many
    uint64_t w_prefix; // their weight
    int32_t *bkt[2];   // [n_vocab] each: one bucket's candidates, ids ascending
    uint16_t *sub_b;   // [n_vocab] their buckets one level down
    hist top;          // the prefix by bucket (shared by a draw's searches)
    hist sub;          // one bucket's candidates, one level down
};

samp_params
samp_params_default(void)
{
    samp_params p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 0};
    return p;
}

int
samp_params_validate(const samp_params *p, char *err, size_t err_len)
{
    const char *why = NULL;
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        why = "temperature must be a number in [0, 100]";
    else if (p->top_k < 0)
        why = "top_k must be >= 0 (0 disables it)";
    else if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        why = "top_p must be in (0, 1]";
    if (!why)
        return LLM_OK;
    llm_errf(err, err_len, "%s", why);
    return LLM_EINVAL;
}

int
samp_ctx_new(int n_vocab, samp_ctx **out)
{
    if (n_vocab < 1)
        return LLM_EINVAL;
    samp_ctx *s = calloc(1, sizeof(*s));
    if (!s)
        return LLM_ENOMEM;
    s->n_vocab = n_vocab;
    s->e = malloc(sizeof(float) * (size_t)n_vocab);
    s->ix = malloc(sizeof(int32_t) * (size_t)n_vocab);
    s->b = malloc(sizeof(uint16_t) * (size_t)n_vocab);
    s->sub_b = malloc(sizeof(uint16_t) * (size_t)n_vocab);
    for (int i = 0; i < 2; i++)
        s->bkt[i] = malloc(sizeof(int32_t) * (size_t)n_vocab);
    if (!s->e || !s->ix || !s->b || !s->sub_b || !s->bkt[0] || !s->bkt[1]) {
        samp_ctx_free(s);
        return LLM_ENOMEM;
    }
    *out = s;
    return LLM_OK;
}

void
samp_ctx_free(samp_ctx *s)
{
    if (!s)
        return;
    free(s->e);
    free(s->ix);
    free(s->b);
    free(s->sub_b);
    free(s->bkt[0]);
    free(s->bkt[1]);
    free(s);
}

static uint64_t
splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

double
samp_uniform(uint64_t seed, int64_t pos)
{
    uint64_t r = splitmix64(seed ^ splitmix64((uint64_t)pos));
    return (double)(r >> 11) * (1.0 / 9007199254740992.0); // 53 random bits
}

static uint64_t
weight(const samp_ctx *s, int32_t id)
{
    return (uint64_t)(s->e[id] * W_SCALE);
}

/* Candidate order: descending logit, then ascending id (-0 and +0 are equal). */
static bool
before(const float *logits, int32_t x, int32_t y)
{
    return logits[x] > logits[y] || (logits[x] == logits[y] && x < y);
}

/* The bucket of a logit at or below hi: (hi - logit) * scale, truncated, clamped to the
 * last bucket. Monotone in the logit (subtraction and multiplication round
 * monotonically), so buckets keep the order; equal logits share one. The scale is a
 * double, finite even for a range of denormals, and with scale = N_BUCKETS / (hi - lo)
 * hi and lo land in the first and the last bucket: each level leaves fewer candidates. */
static uint16_t
bucket(float logit, float hi, double scale)
{
    double d = (double)(hi - logit) * scale;
    return d < N_BUCKETS - 1 ? (uint16_t)d : N_BUCKETS - 1;
}

/* Counts and weights by bucket of ids[0..n), each one's bucket into b. */
static void
bucket_pass(const samp_ctx *s, const float *logits, const int32_t *ids, int n, float hi,
            double scale, uint16_t *b, hist *h)
{
    memset(h, 0, sizeof(*h));
    for (int i = 0; i < n; i++) {
        b[i] = bucket(logits[ids[i]], hi, scale);
        h->n[b[i]]++;
        h->w[b[i]] += weight(s, ids[i]);
    }
}

/* A search's target: the first candidate at which the running count (by_weight false)
 * or weight exceeds `above`; `through` gets the weight of every candidate up to and
 * including it. */
typedef struct {
    bool by_weight;
    uint64_t above;
    uint64_t through;
} target;

/* The bucket in which t is reached (the last non-empty one if it is not: targets lie
 * below their candidates' totals, so that does not happen), what comes before it
 * taken off t. */
static int
crossing(const hist *h, target *t)
{
    int last = 0;
    for (int d = 0; d < N_BUCKETS; d++) {
        if (!h->n[d])
            continue;
        uint64_t v = t->by_weight ? h->w[d] : h->n[d];
        if (v > t->above)
            return d;
        t->above -= v;
        t->through += h->w[d];
        last = d;
    }
    return last;
}

/* The candidate of t among ids[0..n), all of one bucket (or equal logits, in id order):
 * sorted (an insertion sort: n is small, or the ids are in order already), then walked. */
static int32_t
walk(const samp_ctx *s, const float *logits, int32_t *ids, int n, target *t)
{
    for (int i = 1; i < n; i++) {
        int32_t x = ids[i];
        int j = i;
        for (; j > 0 && before(logits, x, ids[j - 1]); j--)
            ids[j] = ids[j - 1];
        ids[j] = x;
    }
    for (int i = 0; i < n; i++) {
        uint64_t w = weight(s, ids[i]), v = t->by_weight ? w : 1;
        t->through += w;
        if (v > t->above || i == n - 1)
            return ids[i];
        t->above -= v;
    }
    return ids[0]; // n is never 0: a crossing bucket holds a candidate
}

/* descend returns t's candidate among ids[0..n), ids ascending, logits in [lo, hi]: it
 * buckets them over their range and keeps the crossing bucket's, level by level. ids is
 * not s->bkt[0]. */
static int32_t
descend(samp_ctx *s, const float *logits, const int32_t *ids, int n, float lo, float hi, target *t)
{
    for (int level = 0;; level++) {
        if (n <= SMALL || lo == hi)
            return walk(s, logits, (int32_t *)ids, n, t);
        bucket_pass(s, logits, ids, n, hi, N_BUCKETS / (double)(hi - lo), s->sub_b, &s->sub);
        uint16_t d = (uint16_t)crossing(&s->sub, t);
        int32_t *out = s->bkt[level % 2];
        int m = 0;
        lo = INFINITY;
        hi = -INFINITY;
        for (int i = 0; i < n; i++) {
            if (s->sub_b[i] != d)
                continue;
            float l = logits[ids[i]];
            lo = l < lo ? l : lo;
            hi = l > hi ? l : hi;
            out[m++] = ids[i];
        }
        ids = out;
        n = m;
    }
}

/* find returns t's candidate: in the prefix's crossing bucket, or, past the prefix, in
 * the rest (1 <= weight, e < PREFIX_MIN: all after the prefix in the order), gathered
 * only then. */
static int32_t
find(samp_ctx *s, const float *logits, target *t)
{
    int32_t *first = s->bkt[1];
    int m = 0;
    float lo = INFINITY, hi = -INFINITY;
    uint64_t in_prefix = t->by_weight ? s->w_prefix : (uint64_t)s->n_prefix;
    if (t->above < in_prefix) {
        uint16_t d = (uint16_t)crossing(&s->top, t);
        for (int i = 0; i < s->n_prefix; i++) {
            if (s->b[i] != d)
                continue;
            float l = logits[s->ix[i]];
            lo = l < lo ? l : lo;
            hi = l > hi ? l : hi;
            first[m++] = s->ix[i];
        }
    } else {
        t->above -= in_prefix;
        t->through += s->w_prefix;
        for (int i = 0; i < s->n_vocab; i++) {
            if (!(s->e[i] >= 1.0f / W_SCALE && s->e[i] < PREFIX_MIN))
                continue;
            lo = logits[i] < lo ? logits[i] : lo;
            hi = logits[i] > hi ? logits[i] : hi;
            first[m++] = i;
        }
        if (m == 0) // a target past every candidate: not made by samp_sample
            return s->ix[s->n_prefix - 1];
    }
    return descend(s, logits, first, m, lo, hi, t);
}

int32_t
samp_sample(samp_ctx *s, const samp_params *p, const float *logits, int64_t pos)
{
    int n = s->n_vocab;
    int32_t best = (int32_t)kern_argmax(logits, n);
    if (p->temperature == 0.0f)
        return best;
    float max = logits[best];
    kern_exp_scaled(logits, max, 1.0f / p->temperature, s->e, n);
    uint64_t total = kern_weight_sum(s->e, n, W_SCALE);
    if (total == 0)
        return best; // only with infinite logits: no weight is a number
    s->n_prefix = (int)kern_select_ge(s->e, n, PREFIX_MIN, s->ix); // the best's e is 1
    // Candidates lie within ~20.8 T of the best (e >= 2^-30); any range keeps the order.
    bucket_pass(s, logits, s->ix, s->n_prefix, max, N_BUCKETS / (21.0 * p->temperature), s->b,
                &s->top);
    s->w_prefix = 0;
    for (int d = 0; d < N_BUCKETS; d++)
        s->w_prefix += s->top.w[d];
    if (p->top_k > 0 && p->top_k < n) {
        target t = {false, (uint64_t)p->top_k - 1, 0};
        find(s, logits, &t);
        total = t.through;
    }
    if (p->top_p < 1.0f) {
        uint64_t reach = (uint64_t)ceil((double)p->top_p * (double)total);
        target t = {true, reach > 0 ? reach - 1 : 0, 0};
        find(s, logits, &t);
        total = t.through;
    }
    // uniform < 1, but its product with a large total can round up to the total.
    uint64_t u = (uint64_t)(samp_uniform(p->seed, pos) * (double)total);
    target t = {true, u < total ? u : total - 1, 0};
    return find(s, logits, &t);
}
