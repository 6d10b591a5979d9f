/*
 * samp.c - greedy / temperature / top-k / top-p sampling with position-keyed draws.
 */
#include "samp.h"

#include "kern.h"
#include "llm_err.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The radix sort of a large prefix (radix_sort). */
#define RADIX_MIN 2048
#define RADIX_BITS 11
#define RADIX_PASSES 3 // 33 bits >= the key's 32

typedef struct {
    float logit;
    int32_t id;
} cand;

struct samp_ctx {
    int n_vocab;
    cand *c;                           // [n_vocab]
    float *e;                          // [n_vocab] exp((logit - max) / temperature), by id
    int32_t *ix;                       // [n_vocab] the prefix's ids
    cand *tmp;                         // [n_vocab] radix sort's second buffer
    uint32_t (*hist)[1 << RADIX_BITS]; // [RADIX_PASSES] its digit counts
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
    s->c = malloc(sizeof(cand) * (size_t)n_vocab);
    s->e = malloc(sizeof(float) * (size_t)n_vocab);
    s->ix = malloc(sizeof(int32_t) * (size_t)n_vocab);
    s->tmp = malloc(sizeof(cand) * (size_t)n_vocab);
    s->hist = malloc(sizeof(*s->hist) * RADIX_PASSES);
    if (!s->c || !s->e || !s->ix || !s->tmp || !s->hist) {
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
    free(s->c);
    free(s->e);
    free(s->ix);
    free(s->tmp);
    free(s->hist);
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

/* Candidate order: descending logit, then ascending id - a total order, so the result
 * never depends on sort stability. */
static bool
before(const cand *x, const cand *y)
{
    return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

static void
sift_down(cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, best = i;
        if (l < n && before(&h[l], &h[best]))
            best = l;
        if (l + 1 < n && before(&h[l + 1], &h[best]))
            best = l + 1;
        if (best == i)
            return;
        cand t = h[i];
        h[i] = h[best];
        h[best] = t;
        i = best;
    }
}

/* Candidates in descending order, produced only as far as top-p and the draw need
 * them: first a sorted prefix (the k best for a small top-k, or every candidate whose
 * weight is at least PREFIX_MIN of the best one, which holds all but a sliver of the
 * mass), then, only if a walk goes past it, the rest from a max-heap one at a time
 * (the i-th best at c[n - 1 - i], as in heapsort). Sorting the whole vocabulary cost
 * milliseconds per token; heapifying it a third of a millisecond. The rest is gathered
 * only then too: the order is total, so the heap yields it the same whatever order it
 * was gathered in. */
#define PREFIX_MIN 1e-6f

typedef struct {
    cand *c;
    const float *logits, *e; // for gathering the rest (e NULL: c already holds it)
    int n, n_sorted, heap_n;
    bool heaped; // c[n_sorted..n) is a heap (built on first use)
} ranked;

static const cand *
nth(ranked *r, int i)
{
    if (i < r->n_sorted)
        return &r->c[i];
    cand *h = r->c + r->n_sorted;
    int n = r->n - r->n_sorted;
    if (!r->heaped) {
        if (r->e)
            for (int j = 0, m = 0; j < r->n; j++)
                if (!(r->e[j] >= PREFIX_MIN))
                    h[m++] = (cand){r->logits[j], j};
        for (int j = n / 2 - 1; j >= 0; j--)
            sift_down(h, n, j);
        r->heap_n = n;
        r->heaped = true;
    }
    while (n - r->heap_n <= i - r->n_sorted) {
        cand t = h[0];
        h[0] = h[r->heap_n - 1];
        h[r->heap_n - 1] = t;
        r->heap_n--;
        sift_down(h, r->heap_n, 0);
    }
    return &h[n - 1 - (i - r->n_sorted)];
}

static int
cand_cmp(const void *a, const void *b)
{
    return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

/* A flat distribution (a high temperature, a small model unsure of itself) puts tens
 * of thousands of candidates in the prefix, where qsort cost ~5 ms a draw; a radix sort
 * of them, a fraction of that. Below RADIX_MIN qsort is faster (the histograms' fixed
 * cost). Both give the one total order. */

/* The key whose ascending order is descending logit: the float's bits made to compare
 * as unsigned integers (negatives flipped whole, positives with the sign bit set), then
 * inverted. -0 becomes +0 first, since the candidate order has them equal. */
static uint32_t
desc_key(float logit)
{
    union {
        float f;
        uint32_t u;
    } v = {logit + 0.0f};
    uint32_t asc = v.u & 0x80000000u ? ~v.u : v.u | 0x80000000u;
    return ~asc;
}

/* radix_sort orders c[0..n) by (logit descending, id ascending) given c in ascending id
 * order: LSD passes are stable, so equal logits keep their ids' order. Passes whose
 * digit all keys share are skipped. The result is in c. */
static void
radix_sort(cand *c, cand *tmp, uint32_t (*hist)[1 << RADIX_BITS], int n)
{
    enum { B = 1 << RADIX_BITS };
    memset(hist, 0, sizeof(*hist) * RADIX_PASSES);
    for (int i = 0; i < n; i++) {
        uint32_t k = desc_key(c[i].logit);
        for (int p = 0; p < RADIX_PASSES; p++)
            hist[p][(k >> (p * RADIX_BITS)) & (B - 1)]++;
    }
    cand *src = c, *dst = tmp;
    for (int p = 0; p < RADIX_PASSES; p++) {
        uint32_t *h = hist[p], at = 0;
        if (h[(desc_key(src[0].logit) >> (p * RADIX_BITS)) & (B - 1)] == (uint32_t)n)
            continue; // one digit for all: this pass would copy them in order
        for (int d = 0; d < B; d++) {
            uint32_t cnt = h[d];
            h[d] = at;
            at += cnt;
        }
        for (int i = 0; i < n; i++)
            dst[h[(desc_key(src[i].logit) >> (p * RADIX_BITS)) & (B - 1)]++] = src[i];
        cand *t = src;
        src = dst;
        dst = t;
    }
    if (src != c)
        memcpy(c, src, sizeof(cand) * (size_t)n);
}

/* keep_top moves the k best candidates to the front, sorted (partial selection via a
 * bounded insertion into the first k slots: O(n k) for the small k used in practice,
 * a full sort otherwise). */
static void
keep_top(cand *c, int n, int k)
{
    if (k >= n || k > 256) {
        qsort(c, (size_t)n, sizeof(cand), cand_cmp);
        return;
    }
    qsort(c, (size_t)k, sizeof(cand), cand_cmp);
    for (int i = k; i < n; i++) {
        if (cand_cmp(&c[i], &c[k - 1]) >= 0)
            continue;
        int j = k - 1;
        cand x = c[i];
        while (j > 0 && cand_cmp(&x, &c[j - 1]) < 0) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
}

/* The weights' double sum in four chains (id i into chain i % 4, each in id order),
 * added as (0 + 1) + (2 + 3): a quarter of one chain's add latency over the vocabulary,
 * and the same value every time. */
static double
id_sum(const float *e, int n)
{
    double c[4] = {0.0, 0.0, 0.0, 0.0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++)
            c[k] += e[i + k];
    for (; i < n; i++)
        c[i % 4] += e[i];
    return (c[0] + c[1]) + (c[2] + c[3]);
}

int32_t
samp_sample(samp_ctx *s, const samp_params *p, const float *logits, int64_t pos)
{
    int n = s->n_vocab;
    if (p->temperature == 0.0f)
        return (int32_t)kern_argmax(logits, n);
    float max = logits[kern_argmax(logits, n)], inv_t = 1.0f / p->temperature;
    // Unnormalized probabilities at the temperature (max first: stable), by id, with
    // the vector exp; every sum below adds these same floats in double (the total of
    // all of them by id_sum).
    kern_exp_scaled(logits, max, inv_t, s->e, n);
    int k = p->top_k > 0 && p->top_k < n ? p->top_k : n, m = 0;
    if (k <= 256) {
        for (int i = 0; i < n; i++)
            s->c[i] = (cand){logits[i], i};
        keep_top(s->c, n, k); // O(n k) beats the heap for the small k used in practice
        m = k;
    } else {
        // The prefix (ids in order); nth gathers the rest after it if a walk needs it.
        m = (int)kern_select_ge(s->e, n, PREFIX_MIN, s->ix);
        for (int i = 0; i < m; i++)
            s->c[i] = (cand){logits[s->ix[i]], s->ix[i]};
        if (m >= RADIX_MIN)
            radix_sort(s->c, s->tmp, s->hist, m);
        else
            qsort(s->c, (size_t)m, sizeof(cand), cand_cmp);
    }
    ranked r = {s->c, logits, k <= 256 ? NULL : s->e, n, m, 0, false};
    double sum = 0.0;
    if (k < n) {
        for (int i = 0; i < k; i++)
            sum += s->e[nth(&r, i)->id];
    } else {
        sum = id_sum(s->e, n);
    }
    // Top-p: the smallest prefix whose mass reaches top_p.
    int lim = k;
    if (p->top_p < 1.0f) {
        double acc = 0.0;
        for (int i = 0; i < k; i++) {
            acc += s->e[nth(&r, i)->id];
            if (acc >= p->top_p * sum) {
                lim = i + 1;
                break;
            }
        }
        sum = acc;
    }
    double u = samp_uniform(p->seed, pos) * sum, acc = 0.0;
    for (int i = 0; i < lim; i++) {
        const cand *c = nth(&r, i);
        acc += s->e[c->id];
        if (u < acc)
            return c->id;
    }
    return nth(&r, lim - 1)->id;
}
