/*
 * test_common.c - pool (and pool_split), args, utf8, llm_err.
 */
#define _GNU_SOURCE // sched_getcpu, CPU_SET
#include "args.h"
#include "llm_err.h"
#include "pool.h"
#include "utf8.h"

#include <check.h>
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

typedef struct {
    atomic_int calls;
    atomic_int seen[8];
    long sum[8];
} pool_probe;

static void
probe_fn(void *ctx, int ith, int nth)
{
    pool_probe *p = ctx;
    atomic_fetch_add(&p->calls, 1);
    atomic_fetch_add(&p->seen[ith], 1);
    p->sum[ith] += nth; // each thread writes only its own slot
}

START_TEST(test_pool_runs_each_thread_once_per_job)
{
    for (int n = 1; n <= 4; n++) {
        pool *p = NULL;
        ck_assert_int_eq(pool_new(n, &p), LLM_OK);
        ck_assert_int_eq(pool_n_threads(p), n);
        pool_probe probe = {0};
        for (int job = 0; job < 1000; job++)
            pool_run(p, probe_fn, &probe);
        ck_assert_int_eq(atomic_load(&probe.calls), 1000 * n);
        for (int i = 0; i < n; i++) {
            ck_assert_int_eq(atomic_load(&probe.seen[i]), 1000);
            ck_assert_int_eq(probe.sum[i], 1000L * n);
        }
        pool_free(p);
    }
}
END_TEST

typedef struct {
    int cpu[8];
} cpu_probe;

static void
cpu_fn(void *ctx, int ith, int nth)
{
    (void)nth;
    ((cpu_probe *)ctx)->cpu[ith] = sched_getcpu();
}

/* pool_pin: thread i runs on the i-th CPU of the process's set (cycling), the caller
 * from its next pool_run on; jobs still run on every thread. */
START_TEST(test_pool_pin_binds_thread_i_to_the_ith_cpu)
{
    cpu_set_t set;
    ck_assert_int_eq(sched_getaffinity(0, sizeof(set), &set), 0);
    int cpus[CPU_SETSIZE], n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            cpus[n++] = c;
    ck_assert_int_gt(n, 0);
    for (int threads = 1; threads <= 3; threads++) {
        pool *p = NULL;
        ck_assert_int_eq(pool_new(threads, &p), LLM_OK);
        ck_assert_int_eq(pool_pin(p), LLM_OK);
        for (int job = 0; job < 50; job++) {
            cpu_probe probe = {0};
            pool_run(p, cpu_fn, &probe);
            for (int i = 0; i < threads; i++)
                ck_assert_int_eq(probe.cpu[i], cpus[i % n]);
        }
        pool_free(p);
    }
    // The caller stays where the last pool put it; give it its whole set back.
    ck_assert_int_eq(sched_setaffinity(0, sizeof(set), &set), 0);
    ck_assert_int_eq(pool_pin(NULL), LLM_EINVAL);
}
END_TEST

START_TEST(test_pool_null_runs_inline_and_rejects_bad_sizes)
{
    pool_probe probe = {0};
    pool_run(NULL, probe_fn, &probe);
    ck_assert_int_eq(atomic_load(&probe.seen[0]), 1);
    pool *p = NULL;
    ck_assert_int_eq(pool_new(0, &p), LLM_EINVAL);
    ck_assert_int_eq(pool_new(-3, &p), LLM_EINVAL);
    pool_free(NULL);
}
END_TEST

START_TEST(test_args_parse_strictly)
{
    int64_t v;
    double d;
    uint64_t u;
    ck_assert_int_eq(args_int("42", 0, 100, &v), LLM_OK);
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(args_int("-1", 0, 100, &v), LLM_EINVAL);
    ck_assert_int_eq(args_int("101", 0, 100, &v), LLM_EINVAL);
    ck_assert_int_eq(args_int("12abc", 0, 100, &v), LLM_EINVAL);
    ck_assert_int_eq(args_int("", 0, 100, &v), LLM_EINVAL);
    ck_assert_int_eq(args_int(" 1", 0, 100, &v), LLM_EINVAL);
    ck_assert_int_eq(args_int("99999999999999999999999", 0, INT64_MAX, &v), LLM_EINVAL);
    ck_assert_int_eq(args_float("0.5", 0, 1, &d), LLM_OK);
    ck_assert(fabs(d - 0.5) < 1e-12);
    ck_assert_int_eq(args_float("nan", 0, 1, &d), LLM_EINVAL);
    ck_assert_int_eq(args_float("inf", 0, 1e308, &d), LLM_EINVAL);
    ck_assert_int_eq(args_float("1.5", 0, 1, &d), LLM_EINVAL);
    ck_assert_int_eq(args_float("1e", 0, 1, &d), LLM_EINVAL);
    ck_assert_int_eq(args_u64("18446744073709551615", &u), LLM_OK);
    ck_assert(u == UINT64_MAX);
    ck_assert_int_eq(args_u64("-1", &u), LLM_EINVAL);
    ck_assert_int_eq(args_u64("18446744073709551616", &u), LLM_EINVAL);
}
END_TEST

START_TEST(test_utf8_accepts_valid_and_finds_first_bad_byte)
{
    const char *ok[] = {
        "", "a", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ck_assert(utf8_valid(ok[i], strlen(ok[i]), NULL));
    struct {
        const char *s;
        size_t at;
    } bad[] = {
        {"ab\xff", 2},
        {"\xc0\xaf", 0},         // overlong
        {"x\xed\xa0\x80", 1},    // surrogate
        {"\xf4\x90\x80\x80", 0}, // above U+10FFFF
        {"\xe4\xb8", 0},         // truncated
        {"\x80", 0},             // lone continuation
        {"ok\xf0\x9f\x98", 2},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t at = 99;
        ck_assert(!utf8_valid(bad[i].s, strlen(bad[i].s), &at));
        ck_assert_uint_eq(at, bad[i].at);
    }
}
END_TEST

START_TEST(test_strerror_names_every_code)
{
    for (int e = LLM_OK; e <= LLM_EUNAVAIL; e++)
        ck_assert_str_ne(llm_strerror(e), "unknown error");
    ck_assert_str_eq(llm_strerror(-1), "unknown error");
    ck_assert_str_eq(llm_strerror(1000), "unknown error");
}
END_TEST

/* pool_split: every chunk is taken once; each thread starts its own contiguous run at
 * its front and takes it in order; a thread held back finds its run taken by the others
 * from the back. */
#define SPLIT_MAX 200

typedef struct {
    pool_split *split;
    int64_t n_chunks;
    atomic_int taken[SPLIT_MAX];
    int64_t order[4][SPLIT_MAX]; // chunks in the order thread i got them
    int n_got[4];
    bool hold0;      // thread 0 starts only when the others are done
    atomic_int done; // threads past their last pool_split_next
} split_probe;

static void
split_fn(void *ctx, int ith, int nth)
{
    split_probe *p = ctx;
    if (p->hold0 && ith == 0)
        while (atomic_load(&p->done) < nth - 1)
            sched_yield();
    int64_t c;
    while (pool_split_next(p->split, ith, &c)) {
        ck_assert(c >= 0 && c < p->n_chunks);
        atomic_fetch_add(&p->taken[c], 1);
        p->order[ith][p->n_got[ith]++] = c;
    }
    atomic_fetch_add(&p->done, 1);
}

START_TEST(test_pool_split_deals_contiguous_runs_and_steals_from_the_back)
{
    static split_probe probe; // large: not on the stack
    for (int n = 1; n <= 4; n++) {
        pool *p = NULL;
        ck_assert_int_eq(pool_new(n, &p), LLM_OK);
        pool_split *split = pool_split_new(n);
        ck_assert_ptr_nonnull(split);
        const int64_t sizes[] = {0, 1, 3, 7, 64, SPLIT_MAX};
        for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
            for (int hold = 0; hold <= (n > 1); hold++) {
                memset(&probe, 0, sizeof(probe));
                probe.split = split;
                probe.n_chunks = sizes[si];
                probe.hold0 = hold;
                pool_split_reset(split, n, sizes[si]);
                pool_run(p, split_fn, &probe);
                for (int64_t c = 0; c < sizes[si]; c++)
                    ck_assert_int_eq(atomic_load(&probe.taken[c]), 1);
                for (int i = 0; i < n; i++) {
                    int64_t run0 = sizes[si] * i / n, run1 = sizes[si] * (i + 1) / n;
                    if (hold && i == 0) { // all taken by the others, from the back
                        ck_assert_int_eq(probe.n_got[0], 0);
                        continue;
                    }
                    // Its own run's chunks come first and in order (those the others did
                    // not take from its back); then only others' chunks.
                    int k = 0;
                    for (; k < probe.n_got[i] && probe.order[i][k] >= run0 &&
                           probe.order[i][k] < run1;
                         k++)
                        ck_assert_int_eq(probe.order[i][k], run0 + k);
                    for (; k < probe.n_got[i]; k++)
                        ck_assert(probe.order[i][k] < run0 || probe.order[i][k] >= run1);
                }
            }
        pool_split_free(split);
        pool_free(p);
    }
    ck_assert_ptr_null(pool_split_new(0));
    ck_assert_ptr_null(pool_split_new(2000));
    pool_split_free(NULL);
}
END_TEST

Suite *common_suite(void);

Suite *
common_suite(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 60); // 4 threads on 2 cores under ASan: slow but bounded
    tcase_add_test(tc, test_pool_runs_each_thread_once_per_job);
    tcase_add_test(tc, test_pool_null_runs_inline_and_rejects_bad_sizes);
    tcase_add_test(tc, test_pool_pin_binds_thread_i_to_the_ith_cpu);
    tcase_add_test(tc, test_pool_split_deals_contiguous_runs_and_steals_from_the_back);
    suite_add_tcase(s, tc);
    tc = tcase_create("args");
    tcase_add_test(tc, test_args_parse_strictly);
    suite_add_tcase(s, tc);
    tc = tcase_create("utf8");
    tcase_add_test(tc, test_utf8_accepts_valid_and_finds_first_bad_byte);
    tcase_add_test(tc, test_strerror_names_every_code);
    suite_add_tcase(s, tc);
    return s;
}
