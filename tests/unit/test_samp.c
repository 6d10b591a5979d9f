/*
 * test_samp.c - sampler: greedy, determinism per (seed, position), top-k / top-p
 * limits, the distribution itself, and parameter validation.
 */
#include "kern.h"
#include "llm_err.h"
#include "samp.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_greedy_takes_argmax_and_lowest_id_on_ties)
{
    samp_ctx *s = NULL;
    ck_assert_int_eq(samp_ctx_new(5, &s), LLM_OK);
    samp_params p = samp_params_default();
    float l[5] = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f};
    ck_assert_int_eq(samp_sample(s, &p, l, 0), 1);
    samp_ctx_free(s);
}
END_TEST

START_TEST(test_draw_depends_only_on_seed_and_position)
{
    enum { V = 100 };
    samp_ctx *a = NULL, *b = NULL;
    ck_assert_int_eq(samp_ctx_new(V, &a), LLM_OK);
    ck_assert_int_eq(samp_ctx_new(V, &b), LLM_OK);
    float l[V];
    for (int i = 0; i < V; i++)
        l[i] = sinf((float)i);
    samp_params p = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 42};
    // Same (seed, pos) from a different context, in a different order: same token.
    int32_t fwd[50], rev[50];
    for (int pos = 0; pos < 50; pos++)
        fwd[pos] = samp_sample(a, &p, l, pos);
    for (int pos = 49; pos >= 0; pos--)
        rev[pos] = samp_sample(b, &p, l, pos);
    int differ = 0;
    for (int pos = 0; pos < 50; pos++) {
        ck_assert_int_eq(fwd[pos], rev[pos]);
        differ += pos > 0 && fwd[pos] != fwd[pos - 1];
    }
    ck_assert(differ > 10); // and the positions are not all the same draw
    p.seed = 43;
    int changed = 0;
    for (int pos = 0; pos < 50; pos++)
        changed += samp_sample(a, &p, l, pos) != fwd[pos];
    ck_assert(changed > 10);
    ck_assert(samp_uniform(1, 5) == samp_uniform(1, 5));
    ck_assert(samp_uniform(1, 5) >= 0.0 && samp_uniform(1, 5) < 1.0);
    samp_ctx_free(a);
    samp_ctx_free(b);
}
END_TEST

START_TEST(test_top_k_and_top_p_limit_the_candidates)
{
    enum { V = 10 };
    samp_ctx *s = NULL;
    ck_assert_int_eq(samp_ctx_new(V, &s), LLM_OK);
    float l[V] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    samp_params p = {.temperature = 5.0f, .top_k = 3, .top_p = 1.0f, .seed = 1};
    for (int pos = 0; pos < 500; pos++)
        ck_assert_int_ge(samp_sample(s, &p, l, pos), 7);
    p.top_k = 1;
    for (int pos = 0; pos < 50; pos++)
        ck_assert_int_eq(samp_sample(s, &p, l, pos), 9);
    p.top_k = 0;
    p.top_p = 1e-6f; // only the most likely token reaches the mass
    for (int pos = 0; pos < 50; pos++)
        ck_assert_int_eq(samp_sample(s, &p, l, pos), 9);
    samp_ctx_free(s);
}
END_TEST

/* Two tokens with logits 0 and ln 3: token 1 should come up 3/4 of the time. */
START_TEST(test_frequencies_follow_the_softmax)
{
    samp_ctx *s = NULL;
    ck_assert_int_eq(samp_ctx_new(2, &s), LLM_OK);
    float l[2] = {0.0f, logf(3.0f)};
    samp_params p = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 9};
    int ones = 0, n = 20000;
    for (int pos = 0; pos < n; pos++)
        ones += samp_sample(s, &p, l, pos);
    ck_assert_msg(fabs((double)ones / n - 0.75) < 0.015, "got %d of %d", ones, n);
    // temperature 2 flattens: p1 = 3^(1/2) / (1 + 3^(1/2))
    p.temperature = 2.0f;
    ones = 0;
    for (int pos = 0; pos < n; pos++)
        ones += samp_sample(s, &p, l, pos);
    double want = sqrt(3.0) / (1 + sqrt(3.0));
    ck_assert_msg(fabs((double)ones / n - want) < 0.015, "got %d of %d", ones, n);
    samp_ctx_free(s);
}
END_TEST

/* The definition the sampler implements, by brute force: weights w = trunc(e * 2^30), e
 * = kern_exp((l - max) / T), zero-weight tokens out; every candidate sorted (logit
 * descending, id ascending); the first top_k; the shortest prefix reaching ceil(top_p *
 * its total); u = trunc(uniform * total); the first candidate whose running weight
 * passes u. */
static const float *ref_logits;
static int
ref_cmp(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    float lx = ref_logits[x], ly = ref_logits[y];
    return lx > ly ? -1 : lx < ly ? 1 : (x > y) - (x < y);
}

/* The reference's sorted candidates for one (logits, temperature). */
typedef struct {
    const float *l;
    int V, n, best;
    float *e;   // [V]
    int *order; // [V] the candidates, sorted
} ref;

static void
ref_prepare(ref *r, const float *l, int V, float temperature)
{
    r->l = l;
    r->V = V;
    r->best = 0;
    for (int i = 1; i < V; i++)
        if (l[i] > l[r->best])
            r->best = i;
    float inv_t = 1.0f / temperature;
    for (int i = 0; i < V; i++)
        r->e[i] = (l[i] - l[r->best]) * inv_t;
    kern_exp(r->e, r->e, V);
    r->n = 0;
    for (int i = 0; i < V; i++)
        if (r->e[i] >= 0x1p-30f)
            r->order[r->n++] = i;
    ref_logits = l;
    qsort(r->order, (size_t)r->n, sizeof(int), ref_cmp);
}

static uint64_t
ref_w(const ref *r, int i)
{
    return (uint64_t)(r->e[r->order[i]] * 0x1p30f);
}

static int32_t
ref_draw(const ref *r, const samp_params *p, int64_t pos)
{
    if (r->n == 0)
        return r->best;
    int k = p->top_k > 0 && p->top_k < r->n ? p->top_k : r->n;
    uint64_t total = 0;
    for (int i = 0; i < k; i++)
        total += ref_w(r, i);
    if (p->top_p < 1.0f) {
        uint64_t reach = (uint64_t)ceil((double)p->top_p * (double)total), acc = 0;
        for (int i = 0; i < k; i++) {
            acc += ref_w(r, i);
            if (acc >= reach) {
                k = i + 1;
                break;
            }
        }
        total = acc;
    }
    uint64_t u = (uint64_t)(samp_uniform(p->seed, pos) * (double)total), acc = 0;
    if (u >= total)
        u = total - 1;
    for (int i = 0; i < k; i++) {
        acc += ref_w(r, i);
        if (acc > u)
            return r->order[i];
    }
    ck_abort_msg("the reference walked past its total");
    return -1;
}

/* n_pos draws of each of params[0..n_params) (one temperature) on l[0..V) against the
 * reference; returns how many drew a token of weight below 1e-6 of the best's. */
static int
check_draws(const float *l, int V, const samp_params *params, int n_params, int n_pos)
{
    ref r = {.e = malloc(sizeof(float) * (size_t)V), .order = malloc(sizeof(int) * (size_t)V)};
    ck_assert_ptr_nonnull(r.e);
    ck_assert_ptr_nonnull(r.order);
    ref_prepare(&r, l, V, params[0].temperature);
    samp_ctx *s = NULL;
    ck_assert_int_eq(samp_ctx_new(V, &s), LLM_OK);
    int tail = 0;
    for (int j = 0; j < n_params; j++) {
        const samp_params *p = &params[j];
        ck_assert(p->temperature == params[0].temperature);
        for (int pos = 0; pos < n_pos; pos++) {
            int32_t want = ref_draw(&r, p, pos), got = samp_sample(s, p, l, pos);
            ck_assert_msg(got == want, "T %g top_k %d top_p %g pos %d: %d vs %d",
                          (double)p->temperature, p->top_k, (double)p->top_p, pos, got, want);
            tail += r.e[got] < 1e-6f;
        }
    }
    samp_ctx_free(s);
    free(r.order);
    free(r.e);
    return tail;
}

/* Logits from a small LCG: `kind` 0 spreads them over several binades of both signs
 * with ties and +0 / -0 (equal in the order), 1 puts them on 64 levels only (buckets of
 * hundreds of equal keys, walked in id order), 2 is peaked (one clear favourite, a
 * long thin tail). */
static void
fill(float *l, int V, int kind, uint64_t x)
{
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int r = (int)(x >> 40) % 4096;
        if (kind == 0)
            l[i] = r < 64 ? (r % 2 ? -0.0f : 0.0f)
                          : -(float)(r % 1500) * (r % 3 ? 1e-3f : 7e-3f) * (r % 5 ? 1.0f : -0.5f);
        else if (kind == 1)
            l[i] = (float)(r % 64) * 0.25f - 8.0f;
        else
            l[i] = -12.0f - (float)(r % 2000) * 0.01f;
    }
    if (kind == 2)
        l[V / 3] = 3.0f;
}

START_TEST(test_draws_follow_the_definition)
{
    enum { V = 49152 };
    static float l[V];
    static const float temps[] = {0.3f, 1.0f, 2.5f};
    static const int top_ks[] = {0, 1, 7, 40, 1000};
    static const float top_ps[] = {1.0f, 0.95f, 0.5f, 1e-6f};
    enum { NK = sizeof(top_ks) / sizeof(top_ks[0]), NP = sizeof(top_ps) / sizeof(top_ps[0]) };
    samp_params ps[NK * NP];
    for (int kind = 0; kind < 3; kind++) {
        fill(l, V, kind, 7 + (uint64_t)kind);
        for (size_t a = 0; a < sizeof(temps) / sizeof(temps[0]); a++) {
            for (int b = 0; b < NK; b++)
                for (int c = 0; c < NP; c++)
                    ps[b * NP + c] = (samp_params){temps[a], top_ks[b], top_ps[c],
                                                   11 + a + 3 * (uint64_t)(b * NP + c)};
            check_draws(l, V, ps, NK * NP, 12);
        }
    }
}
END_TEST

START_TEST(test_draws_reach_the_thin_tail)
{
    enum { V = 100000 };
    static float l[V];
    // token 0 carries weight 1, a hundred others 4.5e-5, the rest 8.7e-7 .. 7.9e-7 (with
    // ties): 8% of the mass lies in tokens below 1e-6 of the best's
    for (int i = 1; i < V; i++)
        l[i] = i % 1000 == 0 ? -10.0f : -13.95f - (float)(i % 97) * 0.001f;
    l[0] = 0.0f;
    samp_params p = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 5};
    int tail = check_draws(l, V, &p, 1, 300);
    ck_assert_msg(tail > 5, "only %d of 300 draws reached the tail", tail); // ~8% of them
}
END_TEST

/* +inf makes every weight NaN or 0: the draw is the greedy token. NaNs are never drawn. */
START_TEST(test_non_finite_logits)
{
    enum { V = 64 };
    float l[V];
    for (int i = 0; i < V; i++)
        l[i] = (float)(i % 5);
    samp_ctx *s = NULL;
    ck_assert_int_eq(samp_ctx_new(V, &s), LLM_OK);
    samp_params p = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 3};
    l[17] = INFINITY;
    for (int pos = 0; pos < 20; pos++)
        ck_assert_int_eq(samp_sample(s, &p, l, pos), 17);
    l[17] = 1.0f;
    for (int i = 0; i < V; i += 2)
        l[i] = NAN;
    for (int pos = 0; pos < 200; pos++)
        ck_assert_int_eq(samp_sample(s, &p, l, pos) % 2, 1);
    samp_ctx_free(s);
}
END_TEST

START_TEST(test_validate_rejects_bad_values)
{
    char err[128];
    samp_params p = samp_params_default();
    ck_assert_int_eq(samp_params_validate(&p, err, sizeof(err)), LLM_OK);
    p.temperature = NAN;
    ck_assert_int_eq(samp_params_validate(&p, err, sizeof(err)), LLM_EINVAL);
    p.temperature = -0.5f;
    ck_assert_int_eq(samp_params_validate(&p, err, sizeof(err)), LLM_EINVAL);
    p.temperature = 1.0f;
    p.top_p = 0.0f;
    ck_assert_int_eq(samp_params_validate(&p, err, sizeof(err)), LLM_EINVAL);
    ck_assert(strstr(err, "top_p") != NULL);
    p.top_p = 1.5f;
    ck_assert_int_eq(samp_params_validate(&p, err, sizeof(err)), LLM_EINVAL);
    p.top_p = 0.9f;
    p.top_k = -1;
    ck_assert_int_eq(samp_params_validate(&p, err, sizeof(err)), LLM_EINVAL);
    samp_ctx *s = NULL;
    ck_assert_int_eq(samp_ctx_new(0, &s), LLM_EINVAL);
    samp_ctx_free(NULL);
}
END_TEST

Suite *samp_suite(void);

Suite *
samp_suite(void)
{
    Suite *s = suite_create("samp");
    TCase *tc = tcase_create("sample");
    tcase_set_timeout(tc, 60); // a 100,000-token vocabulary under the sanitizers
    tcase_add_test(tc, test_greedy_takes_argmax_and_lowest_id_on_ties);
    tcase_add_test(tc, test_draw_depends_only_on_seed_and_position);
    tcase_add_test(tc, test_top_k_and_top_p_limit_the_candidates);
    tcase_add_test(tc, test_frequencies_follow_the_softmax);
    tcase_add_test(tc, test_draws_follow_the_definition);
    tcase_add_test(tc, test_draws_reach_the_thin_tail);
    tcase_add_test(tc, test_non_finite_logits);
    suite_add_tcase(s, tc);
    tc = tcase_create("params");
    tcase_add_test(tc, test_validate_rejects_bad_values);
    suite_add_tcase(s, tc);
    return s;
}
