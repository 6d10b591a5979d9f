/*
 * test_router.c - the routing policies on hand-built candidates: each policy's defining
 * choice, its tie-breaks, the 0 and 1 candidate edges, prefix matching with gaps, and the
 * policy names.
 */
#include "llm_err.h"
#include "router.h"

#include <check.h>
#include <stdbool.h>
#include <stdlib.h>

static route_cand
cand(int load, int inflight)
{
    return (route_cand){.load = load, .inflight = inflight};
}

static int
pick(route_policy p, const route_cand *c, int n, const route_req *q)
{
    router_state st = {.rr_next = 0, .rng = 1};
    route_opts o = route_opts_default();
    return router_pick(&st, p, &o, c, n, q, NULL);
}

/* --- round_robin, least_loaded ---------------------------------------------------- */

START_TEST(test_round_robin_cycles_and_wraps)
{
    route_cand c[3] = {cand(5, 5), cand(0, 0), cand(9, 9)};
    router_state st = {0};
    int want[] = {0, 1, 2, 0, 1, 2, 0};
    for (int k = 0; k < 7; k++)
        ck_assert_int_eq(router_pick(&st, ROUTE_ROUND_ROBIN, NULL, c, 3, NULL, NULL), want[k]);
    // A shrunken list resumes modulo its new size.
    st.rr_next = 2;
    ck_assert_int_eq(router_pick(&st, ROUTE_ROUND_ROBIN, NULL, c, 2, NULL, NULL), 0);
    ck_assert_int_eq(router_pick(&st, ROUTE_ROUND_ROBIN, NULL, c, 2, NULL, NULL), 1);
}
END_TEST

START_TEST(test_least_loaded_avoids_the_long_queue)
{
    route_cand c[3] = {cand(12, 12), cand(1, 1), cand(3, 0)};
    ck_assert_int_eq(pick(ROUTE_LEAST_LOADED, c, 3, NULL), 1);
}
END_TEST

START_TEST(test_least_loaded_breaks_ties_by_inflight_then_index)
{
    route_cand c[4] = {cand(4, 0), cand(2, 2), cand(2, 1), cand(2, 1)};
    ck_assert_int_eq(pick(ROUTE_LEAST_LOADED, c, 4, NULL), 2);
}
END_TEST

/* --- p2c ---------------------------------------------------------------------------- */

START_TEST(test_p2c_with_two_picks_the_less_loaded)
{
    route_cand c[2] = {cand(3, 3), cand(1, 1)};
    router_state st = {.rng = 7};
    for (int k = 0; k < 100; k++)
        ck_assert_int_eq(router_pick(&st, ROUTE_P2C, NULL, c, 2, NULL, NULL), 1);
}
END_TEST

START_TEST(test_p2c_never_picks_the_most_loaded_of_three_when_two_are_idle)
{
    route_cand c[3] = {cand(0, 0), cand(20, 20), cand(0, 0)};
    router_state st = {.rng = 12345};
    int seen[3] = {0};
    for (int k = 0; k < 1000; k++)
        seen[router_pick(&st, ROUTE_P2C, NULL, c, 3, NULL, NULL)]++;
    ck_assert_int_eq(seen[1], 0);
    ck_assert_int_gt(seen[0], 0);
    ck_assert_int_gt(seen[2], 0);
}
END_TEST

START_TEST(test_p2c_spreads_evenly_over_equal_workers)
{
    enum { N = 32, DRAWS = 10000 };
    route_cand c[N];
    for (int i = 0; i < N; i++)
        c[i] = cand(4, 2);
    router_state st = {.rng = 0}; // a zeroed state works too
    int seen[N] = {0};
    for (int k = 0; k < DRAWS; k++) {
        int i = router_pick(&st, ROUTE_P2C, NULL, c, N, NULL, NULL);
        ck_assert(i >= 0 && i < N);
        seen[i]++;
    }
    // Expected 312.5 each, sd ~17.4: +-6 sd is a bound no fair draw misses.
    for (int i = 0; i < N; i++)
        ck_assert_msg(seen[i] > 208 && seen[i] < 417, "worker %d picked %d times", i, seen[i]);
}
END_TEST

START_TEST(test_p2c_is_deterministic_given_its_state)
{
    route_cand c[8];
    for (int i = 0; i < 8; i++)
        c[i] = cand(i % 3, 0);
    router_state a = {.rng = 99}, b = {.rng = 99};
    for (int k = 0; k < 200; k++)
        ck_assert_int_eq(router_pick(&a, ROUTE_P2C, NULL, c, 8, NULL, NULL),
                         router_pick(&b, ROUTE_P2C, NULL, c, 8, NULL, NULL));
}
END_TEST

/* --- latency ------------------------------------------------------------------------ */

START_TEST(test_latency_avoids_the_slow_worker)
{
    route_cand c[3] = {cand(1, 1), cand(1, 1), cand(1, 1)};
    c[0].queue_ms = 40, c[0].tpot_ms = 50; // slow tokens
    c[1].queue_ms = 40, c[1].tpot_ms = 10;
    c[2].queue_ms = 900, c[2].tpot_ms = 10; // long queue wait
    route_req q = {.max_tokens = 64};
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 3, &q), 1);
}
END_TEST

START_TEST(test_latency_weighs_speed_against_load)
{
    // 10 ms/token at load 3 (x4) loses to 25 ms/token idle (x1).
    route_cand c[2] = {cand(3, 3), cand(0, 0)};
    c[0].tpot_ms = 10;
    c[1].tpot_ms = 25;
    route_req q = {.max_tokens = 100};
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 2, &q), 1);
    c[0].load = 1; // x2 now: 20 < 25
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 2, &q), 0);
}
END_TEST

START_TEST(test_latency_explores_an_unobserved_worker_but_does_not_flood_it)
{
    route_cand c[3] = {cand(1, 1), cand(1, 1), cand(0, 0)};
    c[0].queue_ms = 30, c[0].tpot_ms = 12;
    c[1].queue_ms = 30, c[1].tpot_ms = 20;
    // c[2] is new: no observation and no heartbeat step time; scored as tpot 12, queue 0.
    route_req q = {.max_tokens = 32};
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 3, &q), 2);
    // Once it carries work its share-scaled estimate loses to the known-good worker.
    c[2].load = 2;
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 3, &q), 0);
}
END_TEST

START_TEST(test_latency_uses_the_heartbeat_step_before_observations)
{
    route_cand c[2] = {cand(0, 0), cand(0, 0)};
    c[0].step_ms = 40;
    c[1].step_ms = 15;
    route_req q = {.max_tokens = 16};
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 2, &q), 1);
    // A measured worker beats a heartbeat estimate that is slower.
    c[0].tpot_ms = 10, c[0].queue_ms = 20;
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 2, &q), 0);
}
END_TEST

START_TEST(test_latency_caps_the_tokens_counted)
{
    // Short queue but slower tokens vs long queue, fast tokens: at 256 tokens (the cap)
    // c[0] costs 10 + 2*256 = 522 and c[1] 300 + 1*256 = 556; uncapped at 10000 tokens
    // c[1] would win.
    route_cand c[2] = {cand(0, 0), cand(0, 0)};
    c[0].queue_ms = 10, c[0].tpot_ms = 2;
    c[1].queue_ms = 300, c[1].tpot_ms = 1;
    route_req q = {.max_tokens = 10000};
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 2, &q), 0);
    q.max_tokens = 0; // unset counts as the cap
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 2, &q), 0);
}
END_TEST

START_TEST(test_latency_without_data_is_least_loaded)
{
    route_cand c[3] = {cand(2, 2), cand(1, 1), cand(1, 0)};
    route_req q = {.max_tokens = 8};
    ck_assert_int_eq(pick(ROUTE_LATENCY, c, 3, &q), 1); // ties: lower load, then index
}
END_TEST

/* --- prefix ------------------------------------------------------------------------- */

// The request's chained block hashes; each worker holds a sorted subset plus noise.
static const uint64_t req_blocks[8] = {801, 112, 973, 404, 255, 666, 37, 518};

START_TEST(test_prefix_match_stops_at_the_first_gap)
{
    uint64_t held[] = {37, 112, 255, 404, 801, 973}; // lacks 666 (block 5)
    ck_assert_int_eq(route_prefix_match(held, 6, req_blocks, 8), 5);
    uint64_t gap[] = {112, 404, 973}; // lacks block 0: later blocks do not count
    ck_assert_int_eq(route_prefix_match(gap, 3, req_blocks, 8), 0);
    ck_assert_int_eq(route_prefix_match(held, 6, req_blocks, 0), 0);
    ck_assert_int_eq(route_prefix_match(NULL, 0, req_blocks, 8), 0);
    uint64_t all[] = {37, 112, 255, 404, 518, 666, 801, 973, 5000};
    ck_assert_int_eq(route_prefix_match(all, 9, req_blocks, 8), 8);
}
END_TEST

START_TEST(test_prefix_prefers_the_longest_held_prefix)
{
    uint64_t two[] = {112, 801, 9000};
    uint64_t four[] = {112, 404, 801, 973};
    uint64_t gapped[] = {112, 255, 404, 666, 973}; // blocks 1..5 without block 0
    route_cand c[3] = {cand(1, 1), cand(1, 1), cand(1, 1)};
    c[0].prefix_sorted = two, c[0].n_prefix = 3;
    c[1].prefix_sorted = gapped, c[1].n_prefix = 5;
    c[2].prefix_sorted = four, c[2].n_prefix = 4;
    route_req q = {.block_hashes = req_blocks, .n_blocks = 8};
    router_state st = {0};
    int matched = -1;
    ck_assert_int_eq(router_pick(&st, ROUTE_PREFIX, NULL, c, 3, &q, &matched), 2);
    ck_assert_int_eq(matched, 4);
}
END_TEST

START_TEST(test_prefix_trades_match_against_load)
{
    // score = matched - 2 * load: 4 held blocks are worth 2 requests.
    uint64_t four[] = {112, 404, 801, 973};
    route_cand c[2] = {cand(0, 0), cand(1, 1)};
    c[1].prefix_sorted = four, c[1].n_prefix = 4;
    route_req q = {.block_hashes = req_blocks, .n_blocks = 8};
    ck_assert_int_eq(pick(ROUTE_PREFIX, c, 2, &q), 1); // 4 - 2 = 2 beats 0 - 0
    c[1].load = 2;
    ck_assert_int_eq(pick(ROUTE_PREFIX, c, 2, &q), 0); // 4 - 4 = 0 ties 0: lower load
    c[1].load = 3;
    ck_assert_int_eq(pick(ROUTE_PREFIX, c, 2, &q), 0); // 4 - 6 = -2 loses
}
END_TEST

START_TEST(test_prefix_moves_off_the_holder_past_the_imbalance_cap)
{
    uint64_t all[] = {37, 112, 255, 404, 518, 666, 801, 973};
    route_cand c[3] = {cand(3, 3), cand(2, 2), cand(2, 1)};
    c[0].prefix_sorted = all, c[0].n_prefix = 8;
    route_req q = {.block_hashes = req_blocks, .n_blocks = 8};
    route_opts o = route_opts_default();
    o.prefix_load_penalty = 0.1; // the match dominates the load...
    o.prefix_imbalance_cap = 4;
    router_state st = {0};
    int matched = -1;
    c[0].load = 6; // min 2 + cap 4: still eligible
    ck_assert_int_eq(router_pick(&st, ROUTE_PREFIX, &o, c, 3, &q, &matched), 0);
    ck_assert_int_eq(matched, 8);
    c[0].load = 7; // ...until the holder is busier than the cap allows
    ck_assert_int_eq(router_pick(&st, ROUTE_PREFIX, &o, c, 3, &q, &matched), 2);
    ck_assert_int_eq(matched, 0);
}
END_TEST

START_TEST(test_prefix_without_a_match_is_least_loaded)
{
    uint64_t other[] = {1, 2, 3};
    route_cand c[3] = {cand(5, 5), cand(1, 1), cand(1, 0)};
    for (int i = 0; i < 3; i++)
        c[i].prefix_sorted = other, c[i].n_prefix = 3;
    route_req q = {.block_hashes = req_blocks, .n_blocks = 8};
    int want = pick(ROUTE_LEAST_LOADED, c, 3, &q);
    ck_assert_int_eq(want, 2);
    ck_assert_int_eq(pick(ROUTE_PREFIX, c, 3, &q), want);
    q.n_blocks = 0; // a prompt shorter than one block
    ck_assert_int_eq(pick(ROUTE_PREFIX, c, 3, &q), want);
    ck_assert_int_eq(pick(ROUTE_PREFIX, c, 3, NULL), want);
}
END_TEST

// ref_prefix is the prefix policy spelled out naively: linear membership, every candidate
// scored, the best by (score desc, load asc, index asc), least_loaded when it holds nothing.
static int
ref_prefix(const route_opts *o, const route_cand *c, int n, const route_req *q)
{
    int min_load = c[0].load;
    for (int i = 1; i < n; i++)
        min_load = c[i].load < min_load ? c[i].load : min_load;
    int best = -1, best_m = 0;
    double best_s = 0;
    for (int i = 0; i < n; i++) {
        if (c[i].load > min_load + o->prefix_imbalance_cap)
            continue;
        int m = 0;
        for (bool held = true; held && m < q->n_blocks; m += held) {
            held = false;
            for (int j = 0; j < c[i].n_prefix; j++)
                held |= c[i].prefix_sorted[j] == q->block_hashes[m];
        }
        double sc = m - o->prefix_load_penalty * c[i].load;
        if (best < 0 || sc > best_s || (sc == best_s && c[i].load < c[best].load))
            best = i, best_s = sc, best_m = m;
    }
    if (best_m > 0)
        return best;
    best = 0;
    for (int i = 1; i < n; i++)
        if (c[i].load < c[best].load ||
            (c[i].load == c[best].load && c[i].inflight < c[best].inflight))
            best = i;
    return best;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

START_TEST(test_prefix_agrees_with_a_naive_reference)
{
    enum { N = 12, M = 16, B = 10 };
    static const double penalties[] = {0, 0.5, 1, 2, 3};
    static const int caps[] = {0, 1, 3, 8};
    uint64_t held[N][M], blocks[B];
    route_cand c[N];
    unsigned seed = 7;
    for (int trial = 0; trial < 3000; trial++) {
        for (int b = 0; b < B; b++)
            blocks[b] = 100 + (uint64_t)b * 7;
        for (int i = 0; i < N; i++) {
            // A leading run of the request's blocks, sometimes with a hole, plus noise.
            int run = rand_r(&seed) % (B + 1), hole = rand_r(&seed) % (2 * B), k = 0;
            for (int b = 0; b < run && k < M; b++)
                if (b != hole)
                    held[i][k++] = blocks[b];
            while (k < M)
                held[i][k++] = 1000 + (uint64_t)(rand_r(&seed) % 50);
            qsort(held[i], M, sizeof(uint64_t), cmp_u64);
            c[i] = cand(rand_r(&seed) % 6, rand_r(&seed) % 3);
            c[i].prefix_sorted = held[i];
            c[i].n_prefix = rand_r(&seed) % (M + 1); // a prefix of the sorted set: still sorted
        }
        int n = 1 + rand_r(&seed) % N;
        route_opts o = route_opts_default();
        o.prefix_load_penalty = penalties[rand_r(&seed) % 5];
        o.prefix_imbalance_cap = caps[rand_r(&seed) % 4];
        route_req q = {.block_hashes = blocks, .n_blocks = 1 + rand_r(&seed) % B};
        router_state st = {0};
        ck_assert_int_eq(router_pick(&st, ROUTE_PREFIX, &o, c, n, &q, NULL),
                         ref_prefix(&o, c, n, &q));
    }
}
END_TEST

/* --- edges and names ---------------------------------------------------------------- */

START_TEST(test_no_candidates_is_minus_one_and_one_is_zero)
{
    uint64_t held[] = {112, 801};
    route_cand one = cand(50, 50);
    one.prefix_sorted = held, one.n_prefix = 2;
    route_req q = {.block_hashes = req_blocks, .n_blocks = 8, .max_tokens = 4};
    for (int p = 0; p < ROUTE_N_POLICIES; p++) {
        router_state st = {.rr_next = 5, .rng = 3};
        int matched = -1;
        ck_assert_int_eq(router_pick(&st, (route_policy)p, NULL, NULL, 0, &q, &matched), -1);
        ck_assert_int_eq(matched, 0);
        ck_assert_int_eq(router_pick(&st, (route_policy)p, NULL, &one, 1, &q, &matched), 0);
        ck_assert_int_eq(matched, 2); // reported whatever the policy
    }
}
END_TEST

START_TEST(test_policy_names_round_trip_and_bad_names_are_rejected)
{
    for (int p = 0; p < ROUTE_N_POLICIES; p++) {
        route_policy out = ROUTE_N_POLICIES;
        ck_assert_int_eq(route_policy_parse(route_policy_name((route_policy)p), &out), LLM_OK);
        ck_assert_int_eq(out, p);
    }
    ck_assert_str_eq(route_policy_name(ROUTE_P2C), "p2c");
    ck_assert_str_eq(route_policy_name(ROUTE_N_POLICIES), "unknown");
    const char *bad[] = {"", "Prefix", "round-robin", "p2c ", "random", "least"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        route_policy out = ROUTE_LATENCY;
        ck_assert_int_eq(route_policy_parse(bad[i], &out), LLM_EINVAL);
        ck_assert_int_eq(out, ROUTE_LATENCY);
    }
    route_policy out;
    ck_assert_int_eq(route_policy_parse(NULL, &out), LLM_EINVAL);
}
END_TEST

START_TEST(test_defaults_are_the_documented_ones)
{
    route_opts o = route_opts_default();
    ck_assert_double_eq(o.prefix_load_penalty, 2.0);
    ck_assert_int_eq(o.prefix_imbalance_cap, 8);
    ck_assert_int_eq(o.latency_tokens_cap, 256);
}
END_TEST

Suite *router_suite(void);

Suite *
router_suite(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("policies");
    tcase_add_test(tc, test_round_robin_cycles_and_wraps);
    tcase_add_test(tc, test_least_loaded_avoids_the_long_queue);
    tcase_add_test(tc, test_least_loaded_breaks_ties_by_inflight_then_index);
    tcase_add_test(tc, test_p2c_with_two_picks_the_less_loaded);
    tcase_add_test(tc, test_p2c_never_picks_the_most_loaded_of_three_when_two_are_idle);
    tcase_add_test(tc, test_p2c_spreads_evenly_over_equal_workers);
    tcase_add_test(tc, test_p2c_is_deterministic_given_its_state);
    suite_add_tcase(s, tc);

    tc = tcase_create("latency");
    tcase_add_test(tc, test_latency_avoids_the_slow_worker);
    tcase_add_test(tc, test_latency_weighs_speed_against_load);
    tcase_add_test(tc, test_latency_explores_an_unobserved_worker_but_does_not_flood_it);
    tcase_add_test(tc, test_latency_uses_the_heartbeat_step_before_observations);
    tcase_add_test(tc, test_latency_caps_the_tokens_counted);
    tcase_add_test(tc, test_latency_without_data_is_least_loaded);
    suite_add_tcase(s, tc);

    tc = tcase_create("prefix");
    tcase_add_test(tc, test_prefix_match_stops_at_the_first_gap);
    tcase_add_test(tc, test_prefix_prefers_the_longest_held_prefix);
    tcase_add_test(tc, test_prefix_trades_match_against_load);
    tcase_add_test(tc, test_prefix_moves_off_the_holder_past_the_imbalance_cap);
    tcase_add_test(tc, test_prefix_without_a_match_is_least_loaded);
    tcase_add_test(tc, test_prefix_agrees_with_a_naive_reference);
    suite_add_tcase(s, tc);

    tc = tcase_create("edges");
    tcase_add_test(tc, test_no_candidates_is_minus_one_and_one_is_zero);
    tcase_add_test(tc, test_policy_names_round_trip_and_bad_names_are_rejected);
    tcase_add_test(tc, test_defaults_are_the_documented_ones);
    suite_add_tcase(s, tc);
    return s;
}
