/*
 * test_bench_stats.c - llm-bench's arithmetic against hand-computed figures: numpy's
 * linear percentiles (n = 0, 1, 2, ties, p0 and p100, numpy's documented examples), the
 * mean, TPOT as vLLM defines it, and goodput with mixed tiers, missing targets, failures
 * and one-token answers.
 */
#include "bench_stats.h"
#include "llm_err.h"

#include <check.h>
#include <math.h>

#define EPS 1e-9

/* ---- percentiles ---------------------------------------------------------------------- */

START_TEST(test_percentile_of_nothing_is_nan)
{
    ck_assert(isnan(bstats_percentile(NULL, 0, 50)));
    ck_assert(isnan(bstats_mean(NULL, 0)));
    bstats_summary s;
    ck_assert_int_eq(bstats_summarize(NULL, 0, &s), LLM_OK);
    ck_assert_int_eq(s.n, 0);
    ck_assert(isnan(s.mean) && isnan(s.p50) && isnan(s.p90) && isnan(s.p99));
    ck_assert(isnan(s.min) && isnan(s.max));
}
END_TEST

START_TEST(test_percentile_of_one_value_is_that_value)
{
    double x[] = {42.5};
    for (int p = 0; p <= 100; p += 10)
        ck_assert_double_eq_tol(bstats_percentile(x, 1, p), 42.5, EPS);
    ck_assert_double_eq_tol(bstats_mean(x, 1), 42.5, EPS);
}
END_TEST

START_TEST(test_percentile_of_two_values_interpolates)
{
    // np.percentile([1, 2], [0, 50, 90, 99, 100]) = [1, 1.5, 1.9, 1.99, 2]
    double x[] = {1, 2};
    ck_assert_double_eq_tol(bstats_percentile(x, 2, 0), 1.0, EPS);
    ck_assert_double_eq_tol(bstats_percentile(x, 2, 50), 1.5, EPS);
    ck_assert_double_eq_tol(bstats_percentile(x, 2, 90), 1.9, EPS);
    ck_assert_double_eq_tol(bstats_percentile(x, 2, 99), 1.99, EPS);
    ck_assert_double_eq_tol(bstats_percentile(x, 2, 100), 2.0, EPS);
}
END_TEST

START_TEST(test_percentile_matches_numpy_examples)
{
    // np.percentile([15, 20, 35, 40, 50], p)
    double a[] = {15, 20, 35, 40, 50};
    double p[] = {0, 5, 30, 40, 50, 90, 99, 100};
    double want[] = {15, 16, 23, 29, 35, 46, 49.6, 50};
    for (int i = 0; i < 8; i++)
        ck_assert_double_eq_tol(bstats_percentile(a, 5, p[i]), want[i], EPS);
    // numpy's docs: a = [[10, 7, 4], [3, 2, 1]], np.percentile(a, 50) = 3.5; 90 -> 8.5
    double b[] = {1, 2, 3, 4, 7, 10};
    ck_assert_double_eq_tol(bstats_percentile(b, 6, 50), 3.5, EPS);
    ck_assert_double_eq_tol(bstats_percentile(b, 6, 90), 8.5, EPS);
    ck_assert_double_eq_tol(bstats_percentile(b, 6, 99), 9.85, EPS);
}
END_TEST

START_TEST(test_percentile_with_ties_stays_on_the_tie)
{
    // np.percentile([3, 3, 3, 7], [50, 90, 99]) = [3, 5.8, 6.88]
    double x[] = {3, 3, 3, 7};
    ck_assert_double_eq(bstats_percentile(x, 4, 0), 3.0);
    ck_assert_double_eq(bstats_percentile(x, 4, 50), 3.0);
    ck_assert_double_eq_tol(bstats_percentile(x, 4, 90), 5.8, EPS);
    ck_assert_double_eq_tol(bstats_percentile(x, 4, 99), 6.88, EPS);
    ck_assert_double_eq(bstats_percentile(x, 4, 100), 7.0);
}
END_TEST

START_TEST(test_summarize_sorts_a_copy_and_orders_percentiles)
{
    double x[] = {50, 15, 40, 20, 35};
    bstats_summary s;
    ck_assert_int_eq(bstats_summarize(x, 5, &s), LLM_OK);
    ck_assert_int_eq(s.n, 5);
    ck_assert_double_eq_tol(s.mean, 32.0, EPS);
    ck_assert_double_eq_tol(s.p50, 35.0, EPS);
    ck_assert_double_eq_tol(s.p90, 46.0, EPS);
    ck_assert_double_eq_tol(s.p99, 49.6, EPS);
    ck_assert_double_eq(s.min, 15.0);
    ck_assert_double_eq(s.max, 50.0);
    ck_assert_double_eq(x[0], 50.0); // the input is left as it was
    ck_assert(s.p50 <= s.p90 && s.p90 <= s.p99);
}
END_TEST

/* ---- TPOT ----------------------------------------------------------------------------- */

START_TEST(test_tpot_needs_two_output_tokens)
{
    ck_assert(isnan(bstats_tpot_ms(100, 10, 0)));
    ck_assert(isnan(bstats_tpot_ms(100, 10, 1)));
    ck_assert_double_eq_tol(bstats_tpot_ms(100, 10, 2), 90.0, EPS);
    ck_assert_double_eq_tol(bstats_tpot_ms(100, 10, 10), 10.0, EPS);
    ck_assert(isnan(bstats_tpot_ms(100, NAN, 10)));
}
END_TEST

/* ---- goodput -------------------------------------------------------------------------- */

START_TEST(test_goodput_without_slo_counts_completed_requests)
{
    bstats_req r[] = {{0, true, 5, 1, 50}, {0, false, NAN, NAN, 3}, {1, true, 9, 2, 70}};
    bstats_goodput g, t[BSTATS_N_TIERS];
    bstats_goodput_compute(r, 3, NULL, 2.0, &g, t);
    ck_assert_int_eq(g.requests, 3);
    ck_assert_int_eq(g.completed, 2);
    ck_assert_int_eq(g.good, 2);
    ck_assert_double_eq_tol(g.req_per_s, 1.0, EPS);
    ck_assert_double_eq_tol(g.fraction, 2.0 / 3.0, EPS);
    ck_assert_int_eq(t[0].requests, 2);
    ck_assert_int_eq(t[0].good, 1);
    ck_assert_double_eq_tol(t[0].fraction, 0.5, EPS);
    ck_assert_int_eq(t[1].good, 1);
    ck_assert_double_eq_tol(t[1].fraction, 1.0, EPS);
    ck_assert_int_eq(t[4].requests, 0);
    ck_assert(isnan(t[4].fraction));
    ck_assert_double_eq(t[4].req_per_s, 0.0);
}
END_TEST

START_TEST(test_goodput_checks_each_tier_against_its_own_targets)
{
    bstats_slo slo[BSTATS_N_TIERS];
    for (int i = 0; i < BSTATS_N_TIERS; i++)
        slo[i] = bstats_slo_none();
    slo[0].ttft_ms = 100; // normal: ttft only
    slo[1].ttft_ms = 10;  // critical: ttft and tpot
    slo[1].tpot_ms = 2;   //
    slo[3].e2e_ms = 1000; // low: e2e only
    bstats_req r[] = {
        {0, true, 99, 50, 5000},  // normal, good: only ttft is checked
        {0, true, 100, 0, 0},     // normal, good: the target is inclusive
        {0, true, 101, 0, 0},     // normal, ttft missed
        {1, true, 9, 2, 30},      // critical, good
        {1, true, 9, 2.5, 30},    // critical, tpot missed
        {1, true, 9, NAN, 9},     // critical, one token: no tpot to miss
        {1, false, 1, 1, 1},      // critical, failed: never good
        {3, true, NAN, NAN, 999}, // low: no ttft target, e2e met
        {3, true, 1, 1, 1001},    // low: e2e missed
        {4, true, 1e6, 1e6, 1e6}, // background: no SLO at all
    };
    bstats_goodput g, t[BSTATS_N_TIERS];
    bstats_goodput_compute(r, 10, slo, 4.0, &g, t);
    ck_assert_int_eq(g.requests, 10);
    ck_assert_int_eq(g.completed, 9);
    ck_assert_int_eq(g.good, 6);
    ck_assert_double_eq_tol(g.req_per_s, 1.5, EPS);
    ck_assert_double_eq_tol(g.fraction, 0.6, EPS);
    ck_assert_int_eq(t[0].good, 2);
    ck_assert_int_eq(t[0].requests, 3);
    ck_assert_int_eq(t[1].good, 2);
    ck_assert_int_eq(t[1].completed, 3);
    ck_assert_int_eq(t[1].requests, 4);
    ck_assert_double_eq_tol(t[1].fraction, 0.5, EPS);
    ck_assert_int_eq(t[3].good, 1);
    ck_assert_int_eq(t[4].good, 1);
    ck_assert_double_eq_tol(t[4].req_per_s, 0.25, EPS);
    ck_assert_int_eq(t[2].requests, 0);
}
END_TEST

START_TEST(test_goodput_with_an_impossible_target_is_zero)
{
    bstats_slo slo[BSTATS_N_TIERS];
    for (int i = 0; i < BSTATS_N_TIERS; i++) {
        slo[i] = bstats_slo_none();
        slo[i].ttft_ms = 0.001;
    }
    bstats_req r[] = {{0, true, 0.5, 1, 2}, {2, true, 0.0011, 1, 2}, {2, true, NAN, NAN, 2}};
    bstats_goodput g;
    bstats_goodput_compute(r, 3, slo, 1.0, &g, NULL);
    ck_assert_int_eq(g.good, 0);
    ck_assert_double_eq(g.fraction, 0.0);
    ck_assert_double_eq(g.req_per_s, 0.0);
}
END_TEST

START_TEST(test_goodput_of_nothing_has_no_fraction)
{
    bstats_goodput g;
    bstats_goodput_compute(NULL, 0, NULL, 0, &g, NULL);
    ck_assert_int_eq(g.requests, 0);
    ck_assert(isnan(g.fraction));
    ck_assert_double_eq(g.req_per_s, 0.0);
}
END_TEST

Suite *bench_stats_suite(void);

Suite *
bench_stats_suite(void)
{
    Suite *s = suite_create("bench_stats");
    TCase *tc = tcase_create("percentile");
    tcase_add_test(tc, test_percentile_of_nothing_is_nan);
    tcase_add_test(tc, test_percentile_of_one_value_is_that_value);
    tcase_add_test(tc, test_percentile_of_two_values_interpolates);
    tcase_add_test(tc, test_percentile_matches_numpy_examples);
    tcase_add_test(tc, test_percentile_with_ties_stays_on_the_tie);
    tcase_add_test(tc, test_summarize_sorts_a_copy_and_orders_percentiles);
    suite_add_tcase(s, tc);
    tc = tcase_create("tpot");
    tcase_add_test(tc, test_tpot_needs_two_output_tokens);
    suite_add_tcase(s, tc);
    tc = tcase_create("goodput");
    tcase_add_test(tc, test_goodput_without_slo_counts_completed_requests);
    tcase_add_test(tc, test_goodput_checks_each_tier_against_its_own_targets);
    tcase_add_test(tc, test_goodput_with_an_impossible_target_is_zero);
    tcase_add_test(tc, test_goodput_of_nothing_has_no_fraction);
    suite_add_tcase(s, tc);
    return s;
}
