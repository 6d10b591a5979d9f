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

/* The definition the sampler implements, by brute force: weights e = exp((l - max) / T)
 * (kern_exp, by id), their double sum (four chains by id % 4, each in id order, added
 * as (0 + 1) + (2 + 3)), u = uniform * sum, then the full
 * candidate order (logit descending, id ascending) walked until the running sum passes
 * u. The sampler sorts only a prefix and heaps the rest; a vocabulary where 8% of the
 * mass lies below the prefix cut makes ~8% of the draws walk into the heap. */
static const float *ref_logits;
static int
ref_cmp(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    float lx = ref_logits[x], ly = ref_logits[y];
    return lx > ly ? -1 : lx < ly ? 1 : (x > y) - (x < y);
}

/* Draws at T = 1 for positions 0..n_pos of logits l[0..V) whose maximum is 0, each
 * checked against the definition; returns how many drew a token of weight < 1e-6 (from
 * beyond the sorted prefix). */
static int
check_draws(const float *l, int V, uint64_t seed, int n_pos)
{
    float *e = malloc(sizeof(float) * (size_t)V);
    int *order = malloc(sizeof(int) * (size_t)V);
    ck_assert_ptr_nonnull(e);
    ck_assert_ptr_nonnull(order);
    samp_ctx *s = NULL;
    ck_assert_int_eq(samp_ctx_new(V, &s), LLM_OK);
    samp_params p = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = seed};
    for (int i = 0; i < V; i++)
        e[i] = l[i]; // max is 0, T is 1
    kern_exp(e, e, V);
    double c4[4] = {0, 0, 0, 0};
    for (int i = 0; i < V; i++)
        c4[i % 4] += e[i];
    double sum = (c4[0] + c4[1]) + (c4[2] + c4[3]);
    for (int i = 0; i < V; i++)
        order[i] = i;
    ref_logits = l;
    qsort(order, (size_t)V, sizeof(int), ref_cmp);
    int tail = 0;
    for (int pos = 0; pos < n_pos; pos++) {
        double u = samp_uniform(p.seed, pos) * sum, acc = 0;
        int want = order[V - 1];
        for (int i = 0; i < V; i++) {
            acc += e[order[i]];
            if (u < acc) {
                want = order[i];
                break;
            }
        }
        int got = samp_sample(s, &p, l, pos);
        ck_assert_msg(got == want, "pos %d: %d vs %d", pos, got, want);
        tail += e[got] < 1e-6f;
    }
    samp_ctx_free(s);
    free(order);
    free(e);
    return tail;
}

START_TEST(test_draw_walks_past_the_sorted_prefix_exactly)
{
    enum { V = 100000 };
    static float l[V];
    // token 0 carries weight 1, a hundred others 4.5e-5 (the sorted prefix), the rest
    // 8.7e-7 .. 7.9e-7 (below the cut, with ties): 8% of the mass
    for (int i = 1; i < V; i++)
        l[i] = i % 1000 == 0 ? -10.0f : -13.95f - (float)(i % 97) * 0.001f;
    l[0] = 0.0f;
    int tail = check_draws(l, V, 5, 300);
    ck_assert_msg(tail > 5, "only %d draws reached the heap", tail); // ~8% of them
}
END_TEST

/* A flat distribution: most of the vocabulary in the prefix (radix sorted), logits of
 * both signs spread over several binades, many ties (equal logits drawn in id order),
 * and +0 / -0, which the order has equal. */
START_TEST(test_flat_distribution_draws_exactly)
{
    enum { V = 49152 };
    static float l[V];
    uint64_t x = 7;
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int r = (int)(x >> 40) % 4096;
        l[i] = r < 64 ? (r % 2 ? -0.0f : 0.0f) : -(float)(r % 1500) * (r % 3 ? 1e-3f : 7e-3f);
    }
    l[12345] = 0.0f;
    ck_assert_int_eq(check_draws(l, V, 11, 400), 0);
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
    tcase_add_test(tc, test_draw_walks_past_the_sorted_prefix_exactly);
    tcase_add_test(tc, test_flat_distribution_draws_exactly);
    suite_add_tcase(s, tc);
    tc = tcase_create("params");
    tcase_add_test(tc, test_validate_rejects_bad_values);
    suite_add_tcase(s, tc);
    return s;
}
