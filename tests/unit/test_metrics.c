/*
 * test_metrics.c - metric values, exact Prometheus text, label handling, registration
 * conflicts, NULL safety, and exact totals under concurrent updates.
 */
#include "metrics.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
t_assert_render(metrics *r, const char *want)
{
    char *got = metrics_render(r);
    ck_assert_ptr_nonnull(got);
    ck_assert_str_eq(got, want);
    free(got);
}

// ---- values and text -------------------------------------------------------------------

START_TEST(test_counter_gauge_histogram_values)
{
    metrics *r = metrics_new();
    ck_assert_ptr_nonnull(r);
    metric_counter *c = metrics_counter(r, "c_total", "c", NULL);
    metric_gauge *g = metrics_gauge(r, "g", "g", NULL);
    metric_histogram *h = metrics_histogram(r, "h", "h", NULL, (const double[]){1, 2}, 2);
    ck_assert(c && g && h);
    ck_assert_uint_eq(metric_counter_value(c), 0);
    metric_counter_add(c, 1);
    metric_counter_add(c, 41);
    metric_counter_add(c, 0);
    ck_assert_uint_eq(metric_counter_value(c), 42);
    metric_gauge_set(g, 3.5);
    metric_gauge_add(g, -1.25);
    ck_assert(metric_gauge_value(g) == 2.25);
    metric_histogram_observe(h, 0.5);
    metric_histogram_observe(h, 4);
    metric_histogram_observe(h, NAN); // ignored
    ck_assert_uint_eq(metric_histogram_count(h), 2);
    ck_assert(metric_histogram_sum(h) == 4.5);
    metrics_free(r);
}
END_TEST

START_TEST(test_render_small_registry_exactly)
{
    metrics *r = metrics_new();
    // Registered out of order: the text is sorted by family name.
    metric_histogram *h = metrics_histogram(r, "llm_ttft_seconds", "Time to first token.", NULL,
                                            (const double[]){0.5, 1}, 2);
    metric_gauge *g = metrics_gauge(r, "llm_running", "Sequences running.", NULL);
    metric_counter *hi =
        metrics_counter(r, "llm_requests_total", "Requests received.", "tier=\"high\"");
    metric_counter *lo =
        metrics_counter(r, "llm_requests_total", "Requests received.", "tier=\"low\"");
    metric_counter *bare = metrics_counter(r, "aaa_total", NULL, NULL);
    ck_assert(h && g && hi && lo && bare);
    metric_counter_add(hi, 3);
    metric_counter_add(lo, 1);
    metric_gauge_set(g, 2.5);
    metric_histogram_observe(h, 0.25);
    metric_histogram_observe(h, 0.5); // on a bound: that bucket (le is inclusive)
    metric_histogram_observe(h, 0.75);
    metric_histogram_observe(h, 8);
    t_assert_render(r, "# TYPE aaa_total counter\n"
                       "aaa_total 0\n"
                       "# HELP llm_requests_total Requests received.\n"
                       "# TYPE llm_requests_total counter\n"
                       "llm_requests_total{tier=\"high\"} 3\n"
                       "llm_requests_total{tier=\"low\"} 1\n"
                       "# HELP llm_running Sequences running.\n"
                       "# TYPE llm_running gauge\n"
                       "llm_running 2.5\n"
                       "# HELP llm_ttft_seconds Time to first token.\n"
                       "# TYPE llm_ttft_seconds histogram\n"
                       "llm_ttft_seconds_bucket{le=\"0.5\"} 2\n"
                       "llm_ttft_seconds_bucket{le=\"1\"} 3\n"
                       "llm_ttft_seconds_bucket{le=\"+Inf\"} 4\n"
                       "llm_ttft_seconds_sum 9.5\n"
                       "llm_ttft_seconds_count 4\n");
    metrics_free(r);
}
END_TEST

START_TEST(test_empty_registry_renders_empty_text)
{
    metrics *r = metrics_new();
    t_assert_render(r, "");
    metrics_free(r);
    ck_assert_ptr_null(metrics_render(NULL));
    metrics_free(NULL);
}
END_TEST

START_TEST(test_gauge_values_use_prometheus_float_text)
{
    metrics *r = metrics_new();
    metric_gauge *a = metrics_gauge(r, "g", "g", "k=\"a\"");
    metric_gauge *b = metrics_gauge(r, "g", "g", "k=\"b\"");
    metric_gauge *c = metrics_gauge(r, "g", "g", "k=\"c\"");
    metric_gauge *d = metrics_gauge(r, "g", "g", "k=\"d\"");
    metric_gauge_set(a, 0.1);
    metric_gauge_set(b, INFINITY);
    metric_gauge_set(c, -INFINITY);
    metric_gauge_set(d, NAN);
    t_assert_render(r, "# HELP g g\n# TYPE g gauge\n"
                       "g{k=\"a\"} 0.1\ng{k=\"b\"} +Inf\ng{k=\"c\"} -Inf\ng{k=\"d\"} NaN\n");
    metrics_free(r);
}
END_TEST

// ---- families and labels ---------------------------------------------------------------

START_TEST(test_family_groups_label_sets_and_finds_existing)
{
    metrics *r = metrics_new();
    metric_histogram *h1 = metrics_histogram(r, "lat", "latency", "tier=\"high\",worker=\"w1\"",
                                             (const double[]){1}, 1);
    // Same set in another order and spacing: the same series.
    metric_histogram *h1b = metrics_histogram(
        r, "lat", "latency", " worker = \"w1\" , tier=\"high\",", (const double[]){1}, 1);
    metric_histogram *h2 =
        metrics_histogram(r, "lat", "latency", "tier=\"low\"", (const double[]){1}, 1);
    ck_assert_ptr_nonnull(h1);
    ck_assert_ptr_eq(h1, h1b);
    ck_assert_ptr_nonnull(h2);
    ck_assert_ptr_ne(h1, h2);
    metric_counter *c = metrics_counter(r, "n", "n", "");
    ck_assert_ptr_eq(c, metrics_counter(r, "n", "n", NULL)); // "" and NULL: no labels
    metric_histogram_observe(h1, 2);
    metric_histogram_observe(h2, 0);
    t_assert_render(r, "# HELP lat latency\n"
                       "# TYPE lat histogram\n"
                       "lat_bucket{tier=\"high\",worker=\"w1\",le=\"1\"} 0\n"
                       "lat_bucket{tier=\"high\",worker=\"w1\",le=\"+Inf\"} 1\n"
                       "lat_sum{tier=\"high\",worker=\"w1\"} 2\n"
                       "lat_count{tier=\"high\",worker=\"w1\"} 1\n"
                       "lat_bucket{tier=\"low\",le=\"1\"} 1\n"
                       "lat_bucket{tier=\"low\",le=\"+Inf\"} 1\n"
                       "lat_sum{tier=\"low\"} 0\n"
                       "lat_count{tier=\"low\"} 1\n"
                       "# HELP n n\n"
                       "# TYPE n counter\n"
                       "n 0\n");
    metrics_free(r);
}
END_TEST

START_TEST(test_label_values_and_help_are_escaped)
{
    metrics *r = metrics_new();
    // Input in label-set syntax: \\ \" \n escapes, and a raw newline.
    metric_counter *a = metrics_counter(r, "m", "one\\two\nthree", "p=\"a\\\\b\\\"c\\nd\"");
    metric_counter *b = metrics_counter(r, "m", "one\\two\nthree", "p=\"x\ny\"");
    ck_assert(a && b);
    t_assert_render(r, "# HELP m one\\\\two\\nthree\n"
                       "# TYPE m counter\n"
                       "m{p=\"a\\\\b\\\"c\\nd\"} 0\n"
                       "m{p=\"x\\ny\"} 0\n");
    metrics_free(r);

    char buf[32];
    ck_assert_uint_eq(metrics_label_escape(buf, sizeof(buf), "a\\b\"c\nd"), 10);
    ck_assert_str_eq(buf, "a\\\\b\\\"c\\nd");
    ck_assert_uint_eq(metrics_label_escape(buf, 4, "\"\"\""), 6); // truncated, still terminated
    ck_assert_str_eq(buf, "\\\"\\");
}
END_TEST

// ---- histograms ------------------------------------------------------------------------

START_TEST(test_histogram_buckets_are_cumulative_and_inf_is_count)
{
    metrics *r = metrics_new();
    metric_histogram *h =
        metrics_histogram(r, "t", "t", NULL, metrics_latency_bounds, metrics_latency_n);
    ck_assert_ptr_nonnull(h);
    // One observation on every bound, one just above each, one beyond the last.
    for (int i = 0; i < metrics_latency_n; i++) {
        metric_histogram_observe(h, metrics_latency_bounds[i]);
        metric_histogram_observe(h, metrics_latency_bounds[i] * 1.0001);
    }
    metric_histogram_observe(h, 1e9);
    metric_histogram_observe(h, -1); // below every bound: the first bucket
    char *text = metrics_render(r);
    ck_assert_ptr_nonnull(text);
    unsigned long long prev = 0, inf = 0, count = 0;
    int n_buckets = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned long long v;
        char le[32];
        if (sscanf(line, "t_bucket{le=\"%31[^\"]\"} %llu", le, &v) == 2) {
            ck_assert_uint_ge(v, prev); // cumulative
            if (n_buckets < metrics_latency_n)
                ck_assert_uint_eq(v, 2 + 2 * (unsigned long long)n_buckets);
            prev = v;
            n_buckets++;
            if (strcmp(le, "+Inf") == 0)
                inf = v;
        } else if (sscanf(line, "t_count %llu", &v) == 1) {
            count = v;
        }
    }
    free(text);
    ck_assert_int_eq(n_buckets, metrics_latency_n + 1);
    ck_assert_uint_eq(inf, 2 * (unsigned long long)metrics_latency_n + 2);
    ck_assert_uint_eq(inf, count);
    ck_assert_uint_eq(metric_histogram_count(h), count);
    metrics_free(r);
}
END_TEST

START_TEST(test_latency_bounds_are_ascending_1ms_to_60s)
{
    ck_assert(metrics_latency_bounds[0] == 0.001);
    ck_assert(metrics_latency_bounds[metrics_latency_n - 1] == 60);
    for (int i = 1; i < metrics_latency_n; i++) {
        double ratio = metrics_latency_bounds[i] / metrics_latency_bounds[i - 1];
        ck_assert(ratio >= 2 && ratio <= 2.5);
    }
}
END_TEST

START_TEST(test_histogram_without_bounds_has_only_inf)
{
    metrics *r = metrics_new();
    metric_histogram *h = metrics_histogram(r, "z", NULL, NULL, NULL, 0);
    metric_histogram_observe(h, 3);
    t_assert_render(r, "# TYPE z histogram\nz_bucket{le=\"+Inf\"} 1\nz_sum 3\nz_count 1\n");
    metrics_free(r);
}
END_TEST

// ---- concurrency -----------------------------------------------------------------------

/* 4 threads x 1M updates of each kind. The brief's 100k finished before the next thread
 * started on the 2-core build VM, so a deliberately racy add still passed; 1M overlaps. */
#define T_ADDS 1000000

typedef struct {
    metric_counter *c;
    metric_gauge *g;
    metric_histogram *h;
    pthread_barrier_t start; // all threads begin together, so their updates overlap
} t_targets;

static void *
t_hammer(void *arg)
{
    t_targets *t = arg;
    pthread_barrier_wait(&t->start);
    for (int i = 0; i < T_ADDS; i++) {
        metric_counter_add(t->c, 1);
        metric_gauge_add(t->g, 1);
        metric_histogram_observe(t->h, (i & 1) ? 0.5 : 2);
    }
    return NULL;
}

START_TEST(test_concurrent_updates_lose_nothing)
{
    metrics *r = metrics_new();
    t_targets t = {
        .c = metrics_counter(r, "c", "c", NULL),
        .g = metrics_gauge(r, "g", "g", NULL),
        .h = metrics_histogram(r, "h", "h", NULL, (const double[]){1}, 1),
    };
    ck_assert_int_eq(pthread_barrier_init(&t.start, NULL, 4), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, t_hammer, &t), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&t.start);
    ck_assert_uint_eq(metric_counter_value(t.c), 4 * T_ADDS);
    ck_assert(metric_gauge_value(t.g) == 4.0 * T_ADDS);
    ck_assert_uint_eq(metric_histogram_count(t.h), 4 * T_ADDS);
    ck_assert(metric_histogram_sum(t.h) == 2 * T_ADDS * 0.5 + 2 * T_ADDS * 2.0);
    char *text = metrics_render(r);
    char want[80];
    snprintf(want, sizeof(want), "h_bucket{le=\"1\"} %d\nh_bucket{le=\"+Inf\"} %d\n", 2 * T_ADDS,
             4 * T_ADDS);
    ck_assert_ptr_nonnull(strstr(text, want));
    free(text);
    metrics_free(r);
}
END_TEST

// ---- bad input -------------------------------------------------------------------------

START_TEST(test_bad_names_and_labels_give_null)
{
    metrics *r = metrics_new();
    const char *bad_names[] = {NULL, "", "1abc", "a-b", "a b", "é"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
        ck_assert_ptr_null(metrics_counter(r, bad_names[i], "h", NULL));
    ck_assert_ptr_nonnull(metrics_counter(r, "ok:name_1", "h", NULL));
    ck_assert_ptr_nonnull(metrics_counter(r, "_x", "h", NULL));
    const char *bad_labels[] = {
        "1a=\"x\"",        // name starts with a digit
        "a=x",             // unquoted
        "a=\"x",           // unterminated
        "a=\"x\",a=\"y\"", // duplicate
        "__a=\"x\"",       // reserved
        "a=\"x\"b=\"y\"",  // no comma
        "a-b=\"x\"",       // bad character
        "=\"x\"",          // no name
        ",",               // no pair
    };
    for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++)
        ck_assert_msg(!metrics_gauge(r, "g", "h", bad_labels[i]), "accepted %s", bad_labels[i]);
    ck_assert_ptr_null(metrics_histogram(r, "h", "h", "le=\"1\"", NULL, 0));
    ck_assert_ptr_null(metrics_histogram(r, "h", "h", NULL, (const double[]){2, 1}, 2));
    ck_assert_ptr_null(metrics_histogram(r, "h", "h", NULL, (const double[]){1, 1}, 2));
    ck_assert_ptr_null(metrics_histogram(r, "h", "h", NULL, (const double[]){NAN}, 1));
    ck_assert_ptr_null(metrics_histogram(r, "h", "h", NULL, (const double[]){INFINITY}, 1));
    ck_assert_ptr_null(metrics_histogram(r, "h", "h", NULL, NULL, 2));
    ck_assert_ptr_null(metrics_histogram(r, "h", "h", NULL, NULL, -1));
    ck_assert_ptr_null(metrics_counter(NULL, "x", "h", NULL));
    // Nothing half-registered shows up.
    t_assert_render(r, "# HELP _x h\n# TYPE _x counter\n_x 0\n"
                       "# HELP ok:name_1 h\n# TYPE ok:name_1 counter\nok:name_1 0\n");
    metrics_free(r);
}
END_TEST

START_TEST(test_conflicting_registrations_give_null)
{
    metrics *r = metrics_new();
    ck_assert_ptr_nonnull(metrics_counter(r, "x", "help", NULL));
    ck_assert_ptr_null(metrics_gauge(r, "x", "help", NULL));              // another type
    ck_assert_ptr_null(metrics_counter(r, "x", "other help", "a=\"1\"")); // another help
    ck_assert_ptr_nonnull(metrics_histogram(r, "lat", "l", NULL, (const double[]){1, 2}, 2));
    ck_assert_ptr_null(metrics_histogram(r, "lat", "l", "a=\"1\"", (const double[]){1, 3}, 2));
    ck_assert_ptr_null(metrics_histogram(r, "lat", "l", "a=\"1\"", (const double[]){1}, 1));
    ck_assert_ptr_null(metrics_counter(r, "lat_count", "c", NULL)); // the histogram renders it
    ck_assert_ptr_null(metrics_gauge(r, "lat_bucket", "c", NULL));
    ck_assert_ptr_nonnull(metrics_counter(r, "y_sum", "c", NULL));
    ck_assert_ptr_null(metrics_histogram(r, "y", "c", NULL, NULL, 0));
    metrics_free(r);
}
END_TEST

START_TEST(test_null_metrics_are_no_ops)
{
    metric_counter_add(NULL, 1);
    metric_gauge_set(NULL, 1);
    metric_gauge_add(NULL, 1);
    metric_histogram_observe(NULL, 1);
    ck_assert_uint_eq(metric_counter_value(NULL), 0);
    ck_assert(metric_gauge_value(NULL) == 0);
    ck_assert_uint_eq(metric_histogram_count(NULL), 0);
    ck_assert(metric_histogram_sum(NULL) == 0);
}
END_TEST

Suite *metrics_suite(void);

Suite *
metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("values");
    tcase_add_test(tc, test_counter_gauge_histogram_values);
    tcase_add_test(tc, test_render_small_registry_exactly);
    tcase_add_test(tc, test_empty_registry_renders_empty_text);
    tcase_add_test(tc, test_gauge_values_use_prometheus_float_text);
    suite_add_tcase(s, tc);
    tc = tcase_create("labels");
    tcase_add_test(tc, test_family_groups_label_sets_and_finds_existing);
    tcase_add_test(tc, test_label_values_and_help_are_escaped);
    suite_add_tcase(s, tc);
    tc = tcase_create("histogram");
    tcase_add_test(tc, test_histogram_buckets_are_cumulative_and_inf_is_count);
    tcase_add_test(tc, test_latency_bounds_are_ascending_1ms_to_60s);
    tcase_add_test(tc, test_histogram_without_bounds_has_only_inf);
    suite_add_tcase(s, tc);
    tc = tcase_create("concurrency");
    tcase_set_timeout(tc, 60); // 4 threads on 2 cores under ASan: slow but bounded
    tcase_add_test(tc, test_concurrent_updates_lose_nothing);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_bad_names_and_labels_give_null);
    tcase_add_test(tc, test_conflicting_registrations_give_null);
    tcase_add_test(tc, test_null_metrics_are_no_ops);
    suite_add_tcase(s, tc);
    return s;
}
