/*
 * test_sched.c - the continuous-batching scheduler on the synthetic engine (and on a tiny
 * real model): tokens independent of batching, tier order, preemption under a tiny KV
 * pool, cancel and deadlines, prefix reuse, cursor reads, drain, bad requests; resume
 * (failover) at every token, on both engines, through stop strings and max_tokens.
 */
#include "engine.h"
#include "llm_err.h"
#include "llm_time.h"
#include "metrics.h"
#include "sched.h"
#include "test_helpers.h"
#include "utf8.h"

#include <check.h>
#include <string.h>
#include <time.h>

static engine *
synth(int n_blocks, int step_us)
{
    engine *e = NULL;
    char err[128];
    engine_synth_opts o = {.step_delay_us = step_us,
                           .prefill_us_per_tok = 0,
                           .ctx_len = 512,
                           .n_blocks = n_blocks,
                           .max_step_tokens = 64};
    ck_assert_int_eq(engine_synthetic_new(&o, &e, err, sizeof(err)), LLM_OK);
    return e;
}

static sched *
start(engine *e, int max_running, metrics *reg)
{
    sched *s = NULL;
    sched_opts o = {.max_running = max_running,
                    .prefill_chunk = 16,
                    .max_waiting = 100,
                    .finished_ttl_ms = 5000,
                    .max_stop = SCHED_MAX_STOP};
    ck_assert_int_eq(sched_new(e, &o, reg, &s), LLM_OK);
    ck_assert_int_eq(sched_start(s), LLM_OK);
    return s;
}

static sched_req
req_of(const int32_t *prompt, int n, int max_tokens)
{
    sched_req r = {0};
    r.prompt = prompt;
    r.n_prompt = n;
    r.samp = samp_params_default();
    r.max_tokens = max_tokens;
    r.tier = SCHED_TIER_NORMAL;
    return r;
}

/* wait_done_at polls until id ends; returns the stream from cursor at as one chunk. */
static sched_chunk
wait_done_at(sched *s, uint64_t id, uint32_t at)
{
    sched_chunk c;
    bool ready;
    for (int i = 0; i < 20000; i++) {
        ck_assert_int_eq(sched_read(s, id, at, &c, &ready), LLM_OK);
        if (c.finish != SCHED_FINISH_NONE)
            return c;
        sched_chunk_fini(&c);
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    ck_abort_msg("request %llu never finished", (unsigned long long)id);
    return c;
}

static sched_chunk
wait_done(sched *s, uint64_t id)
{
    return wait_done_at(s, id, 0);
}

static void
fill_prompt(int32_t *p, int n, int salt)
{
    for (int i = 0; i < n; i++)
        p[i] = 'a' + (i * 7 + salt * 3) % 26;
}

START_TEST(test_batched_streams_equal_their_runs_alone_even_when_preempted)
{
    enum { N = 12, LEN = 40, GEN = 50 };
    int32_t prompts[N][LEN];
    int32_t alone[N][GEN];
    for (int i = 0; i < N; i++)
        fill_prompt(prompts[i], LEN, i);
    // Alone, with a roomy pool.
    engine *e = synth(256, 0);
    sched *s = start(e, 16, NULL);
    for (int i = 0; i < N; i++) {
        sched_req r = req_of(prompts[i], LEN, GEN);
        r.samp.temperature = i % 2 ? 0.8f : 0.0f;
        r.samp.seed = (uint64_t)i;
        ck_assert_int_eq(sched_submit(s, (uint64_t)i + 1, &r, NULL, 0), LLM_OK);
        sched_chunk c = wait_done(s, (uint64_t)i + 1);
        ck_assert_int_eq(c.n_ids, GEN);
        memcpy(alone[i], c.ids, sizeof(alone[i]));
        sched_chunk_fini(&c);
    }
    sched_free(s);
    engine_free(e);

    // Together, in a pool of 20 blocks where they need 6 each: preemption must happen.
    metrics *reg = metrics_new();
    e = synth(20, 0);
    s = start(e, 8, reg);
    for (int i = 0; i < N; i++) {
        sched_req r = req_of(prompts[i], LEN, GEN);
        r.samp.temperature = i % 2 ? 0.8f : 0.0f;
        r.samp.seed = (uint64_t)i;
        ck_assert_int_eq(sched_submit(s, (uint64_t)i + 1, &r, NULL, 0), LLM_OK);
    }
    for (int i = 0; i < N; i++) {
        sched_chunk c = wait_done(s, (uint64_t)i + 1);
        ck_assert_int_eq(c.finish, SCHED_FINISH_LENGTH);
        ck_assert_int_eq(c.n_ids, GEN);
        ck_assert_msg(memcmp(c.ids, alone[i], sizeof(alone[i])) == 0, "stream %d differs", i);
        sched_chunk_fini(&c);
    }
    char *text = metrics_render(reg);
    ck_assert_ptr_nonnull(strstr(text, "llm_worker_preemptions_total"));
    ck_assert_ptr_null(strstr(text, "llm_worker_preemptions_total 0\n"));
    free(text);
    sched_load ld;
    sched_get_load(s, &ld);
    ck_assert_int_eq(ld.kv_blocks_used, 0);
    sched_free(s);
    engine_free(e);
    metrics_free(reg);
}
END_TEST

START_TEST(test_higher_tier_is_admitted_first)
{
    // One sequence at a time, a slow step: the critical request submitted last must
    // finish before the background one submitted before it.
    int32_t p[8];
    fill_prompt(p, 8, 1);
    engine *e = synth(64, 2000);
    sched *s = start(e, 1, NULL);
    sched_req blocker = req_of(p, 8, 20);
    ck_assert_int_eq(sched_submit(s, 1, &blocker, NULL, 0), LLM_OK);
    sched_req bg = req_of(p, 8, 5);
    bg.tier = SCHED_TIER_BACKGROUND;
    sched_req crit = req_of(p, 8, 5);
    crit.tier = SCHED_TIER_CRITICAL;
    ck_assert_int_eq(sched_submit(s, 2, &bg, NULL, 0), LLM_OK);
    ck_assert_int_eq(sched_submit(s, 3, &crit, NULL, 0), LLM_OK);
    sched_chunk c = wait_done(s, 3);
    sched_chunk_fini(&c);
    bool ready;
    ck_assert_int_eq(sched_read(s, 2, 0, &c, &ready), LLM_OK);
    ck_assert_int_eq(c.finish, SCHED_FINISH_NONE); // background still waits or runs
    sched_chunk_fini(&c);
    c = wait_done(s, 2);
    sched_chunk_fini(&c);
    sched_free(s);
    engine_free(e);
}
END_TEST

START_TEST(test_cancel_and_deadline_end_streams_and_free_blocks)
{
    int32_t p[40];
    fill_prompt(p, 40, 2);
    engine *e = synth(64, 1000);
    sched *s = start(e, 4, NULL);
    sched_req r = req_of(p, 40, 400);
    ck_assert_int_eq(sched_submit(s, 1, &r, NULL, 0), LLM_OK);
    r.deadline_ns = (int64_t)llm_now_ns() + 30 * 1000000;
    ck_assert_int_eq(sched_submit(s, 2, &r, NULL, 0), LLM_OK);
    struct timespec ts = {0, 10 * 1000000};
    nanosleep(&ts, NULL);
    ck_assert_int_eq(sched_cancel(s, 1), LLM_OK);
    ck_assert_int_eq(sched_cancel(s, 99), LLM_ENOENT);
    sched_chunk c = wait_done(s, 1);
    ck_assert_int_eq(c.finish, SCHED_FINISH_CANCELED);
    ck_assert_int_lt(c.n_ids, 400);
    sched_chunk_fini(&c);
    c = wait_done(s, 2);
    ck_assert_int_eq(c.finish, SCHED_FINISH_DEADLINE);
    sched_chunk_fini(&c);
    sched_load ld;
    sched_get_load(s, &ld);
    ck_assert_int_eq(ld.kv_blocks_used, 0);
    ck_assert_int_gt(ld.kv_blocks_cached, 0); // their full blocks stay for reuse
    sched_free(s);
    engine_free(e);
}
END_TEST

START_TEST(test_shared_prefix_is_reused_and_reported)
{
    int32_t a[100], b[100];
    fill_prompt(a, 100, 3);
    memcpy(b, a, sizeof(a));
    b[90] = 'z'; // diverges in the sixth block
    engine *e = synth(64, 0);
    sched *s = start(e, 4, NULL);
    sched_req r = req_of(a, 100, 4);
    ck_assert_int_eq(sched_submit(s, 1, &r, NULL, 0), LLM_OK);
    sched_chunk c = wait_done(s, 1);
    ck_assert_uint_eq(c.usage.cached_tokens, 0);
    ck_assert_uint_eq(c.usage.prompt_tokens, 100);
    sched_chunk_fini(&c);
    r.prompt = b;
    ck_assert_int_eq(sched_submit(s, 2, &r, NULL, 0), LLM_OK);
    c = wait_done(s, 2);
    ck_assert_uint_eq(c.usage.cached_tokens, 80); // blocks 0..4 are shared
    sched_chunk_fini(&c);
    // The whole prompt cached: the last token is still computed (for its logits).
    r.prompt = a;
    r.n_prompt = 96;
    ck_assert_int_eq(sched_submit(s, 3, &r, NULL, 0), LLM_OK);
    c = wait_done(s, 3);
    ck_assert_uint_eq(c.usage.cached_tokens, 80);
    sched_chunk_fini(&c);
    uint64_t h[16];
    ck_assert_int_gt(sched_prefix_summary(s, h, 16), 5);
    sched_free(s);
    engine_free(e);
}
END_TEST

START_TEST(test_reads_follow_the_cursor)
{
    int32_t p[4] = {'a', 'b', 'c', 'd'};
    engine *e = synth(16, 0);
    sched *s = start(e, 2, NULL);
    sched_req r = req_of(p, 4, 10);
    r.seq_base = 5; // a resumed stream: its cursor starts at 5
    ck_assert_int_eq(sched_submit(s, 7, &r, NULL, 0), LLM_OK);
    sched_chunk all = wait_done_at(s, 7, 5);
    ck_assert_uint_eq(all.seq, 5);
    sched_chunk_fini(&all);
    sched_chunk c;
    bool ready;
    ck_assert_int_eq(sched_read(s, 7, 0, &c, &ready), LLM_EINVAL); // before the start
    ck_assert_int_eq(sched_read(s, 7, 5, &c, &ready), LLM_OK);
    ck_assert_int_eq(c.n_ids, 10);
    ck_assert_uint_eq(c.text_len, 10);
    int32_t first4[4];
    memcpy(first4, c.ids, sizeof(first4));
    sched_chunk_fini(&c);
    ck_assert_int_eq(sched_read(s, 7, 11, &c, &ready), LLM_OK);
    ck_assert_int_eq(c.n_ids, 4);
    ck_assert_uint_eq(c.seq, 11);
    ck_assert_int_eq(c.finish, SCHED_FINISH_LENGTH);
    sched_chunk_fini(&c);
    ck_assert_int_eq(sched_read(s, 7, 16, &c, &ready), LLM_EINVAL); // past the end
    ck_assert_int_eq(sched_read(s, 8, 0, &c, &ready), LLM_ENOENT);
    sched_free(s);
    engine_free(e);
}
END_TEST

START_TEST(test_bad_requests_are_refused_with_a_reason)
{
    int32_t p[4] = {1, 2, 3, 4};
    char err[256];
    engine *e = synth(8, 0);
    sched *s = start(e, 2, NULL);
    sched_req r = req_of(p, 4, 4);
    ck_assert_int_eq(sched_submit(s, 0, &r, err, sizeof(err)), LLM_EINVAL);
    r.max_tokens = 0;
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "max_tokens"));
    r.max_tokens = 200; // 204 positions need 13 blocks; the pool has 8
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "KV blocks"));
    r.max_tokens = 600;
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "context"));
    r.max_tokens = 4;
    r.samp.top_p = 0.0f;
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_EINVAL);
    r.samp.top_p = 1.0f;
    int32_t bad[2] = {1, 5000};
    r.prompt = bad;
    r.n_prompt = 2;
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_EINVAL);
    r.prompt = p;
    r.n_prompt = 4;
    const char *stops[] = {""};
    r.stop = stops;
    r.n_stop = 1;
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_EINVAL);
    r.n_stop = 0;
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_OK);
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_EINVAL); // duplicate
    sched_drain(s);
    ck_assert_int_eq(sched_submit(s, 2, &r, err, sizeof(err)), LLM_EBUSY);
    sched_chunk c = wait_done(s, 1);
    sched_chunk_fini(&c);
    sched_free(s);
    engine_free(e);
}
END_TEST

START_TEST(test_stop_strings_end_the_stream_without_their_text)
{
    // The synthetic stream for this prompt is deterministic: find its text, then stop
    // on a piece of it.
    int32_t p[6] = {'h', 'e', 'l', 'l', 'o', ' '};
    engine *e = synth(16, 0);
    sched *s = start(e, 2, NULL);
    sched_req r = req_of(p, 6, 20);
    ck_assert_int_eq(sched_submit(s, 1, &r, NULL, 0), LLM_OK);
    sched_chunk full = wait_done(s, 1);
    ck_assert_uint_eq(full.text_len, 20);
    char stop[3] = {full.text[8], full.text[9], 0};
    const char *stops[] = {stop};
    r.stop = stops;
    r.n_stop = 1;
    ck_assert_int_eq(sched_submit(s, 2, &r, NULL, 0), LLM_OK);
    sched_chunk c = wait_done(s, 2);
    ck_assert_int_eq(c.finish, SCHED_FINISH_STOP);
    ck_assert_ptr_null(strstr(c.text, stop));
    ck_assert_int_eq(strncmp(c.text, full.text, c.text_len), 0);
    ck_assert_uint_le(c.text_len, 8);
    sched_chunk_fini(&c);
    sched_chunk_fini(&full);
    sched_free(s);
    engine_free(e);
}
END_TEST

static int wakes;
static void
count_wake(sched_waiter *w)
{
    wakes++;
}

START_TEST(test_parked_readers_are_woken)
{
    int32_t p[4] = {'w', 'a', 'k', 'e'};
    engine *e = synth(16, 50000); // 50 ms steps: nothing is ready right after submit
    sched *s = start(e, 2, NULL);
    sched_req r = req_of(p, 4, 3);
    ck_assert_int_eq(sched_submit(s, 1, &r, NULL, 0), LLM_OK);
    sched_waiter w = {.id = 1, .after_seq = 0, .wake = count_wake};
    w.deadline_ns = (int64_t)llm_now_ns() + 5000000000LL;
    sched_chunk c;
    bool ready, parked;
    wakes = 0;
    ck_assert_int_eq(sched_read_or_park(s, &w, &c, &ready, &parked), LLM_OK);
    ck_assert(parked);
    sched_chunk_fini(&c);
    c = wait_done(s, 1);
    sched_chunk_fini(&c);
    for (int i = 0; i < 1000 && wakes == 0; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    ck_assert_int_eq(wakes, 1);
    // A waiter whose deadline passes is woken with nothing new.
    sched_waiter w2 = {.id = 1, .after_seq = 3, .wake = count_wake};
    ck_assert_int_eq(sched_read_or_park(s, &w2, &c, &ready, &parked), LLM_OK);
    ck_assert(ready && !parked); // finished: answered at once
    sched_chunk_fini(&c);
    sched_free(s);
    engine_free(e);
}
END_TEST

START_TEST(test_model_engine_streams_equal_alone)
{
    // The real forward pass over paged KV on a tiny model: four greedy streams at once
    // give the tokens each gives alone.
    char path[256], err[256];
    ck_assert_int_eq(test_tiny_model(path, sizeof(path), LLM_DTYPE_Q4_1, 3, false), LLM_OK);
    engine *e = NULL;
    engine_model_opts mo = {
        .path = path, .threads = 2, .max_step_tokens = 64, .kv_memory_bytes = 4u << 20};
    ck_assert_int_eq(engine_model_new(&mo, &e, err, sizeof(err)), LLM_OK);
    enum { N = 4, LEN = 21, GEN = 12 };
    int32_t prompts[N][LEN];
    for (int i = 0; i < N; i++)
        for (int k = 0; k < LEN; k++)
            prompts[i][k] = (k * 13 + i * 5 + 1) % e->n_vocab;
    int32_t alone[N][GEN];
    sched *s = start(e, 8, NULL);
    for (int i = 0; i < N; i++) {
        sched_req r = req_of(prompts[i], LEN, GEN);
        ck_assert_int_eq(sched_submit(s, (uint64_t)i + 1, &r, NULL, 0), LLM_OK);
        sched_chunk c = wait_done(s, (uint64_t)i + 1);
        ck_assert_int_gt(c.n_ids, 0);
        memset(alone[i], 0xff, sizeof(alone[i]));
        memcpy(alone[i], c.ids, sizeof(int32_t) * (size_t)c.n_ids);
        sched_chunk_fini(&c);
    }
    for (int i = 0; i < N; i++) {
        sched_req r = req_of(prompts[i], LEN, GEN);
        ck_assert_int_eq(sched_submit(s, (uint64_t)i + 11, &r, NULL, 0), LLM_OK);
    }
    for (int i = 0; i < N; i++) {
        sched_chunk c = wait_done(s, (uint64_t)i + 11);
        ck_assert_msg(memcmp(c.ids, alone[i], sizeof(int32_t) * (size_t)c.n_ids) == 0,
                      "stream %d differs in a batch", i);
        sched_chunk_fini(&c);
    }
    sched_free(s);
    engine_free(e);
    unlink(path);
}
END_TEST

/* ---- resume (failover) ------------------------------------------------------------------ */

enum { MAX_GEN = 64 };

/* A finished stream and what a reader gets from each cursor k in [0, n]. */
typedef struct {
    int32_t ids[MAX_GEN];
    int n;
    sched_finish finish;
    char *text_from[MAX_GEN + 1];
    size_t len_from[MAX_GEN + 1];
} stream;

static void
stream_fini(stream *o)
{
    for (int k = 0; k <= MAX_GEN; k++)
        free(o->text_from[k]);
    memset(o, 0, sizeof(*o));
}

/* run_original runs r to its end and reads its stream from every cursor (at once: a
 * finished stream whose final chunk was read expires a second later). */
static void
run_original(sched *s, uint64_t id, const sched_req *r, stream *o)
{
    memset(o, 0, sizeof(*o));
    char err[256] = "";
    ck_assert_msg(sched_submit(s, id, r, err, sizeof(err)) == LLM_OK, "%s", err);
    sched_chunk c = wait_done(s, id);
    ck_assert_int_le(c.n_ids, MAX_GEN);
    o->n = c.n_ids;
    o->finish = c.finish;
    memcpy(o->ids, c.ids, sizeof(int32_t) * (size_t)c.n_ids);
    sched_chunk_fini(&c);
    for (int k = 0; k <= o->n; k++) {
        bool ready;
        ck_assert_int_eq(sched_read(s, id, (uint32_t)k, &c, &ready), LLM_OK);
        ck_assert(ready);
        o->text_from[k] = c.text;
        o->len_from[k] = c.text_len;
        c.text = NULL;
        sched_chunk_fini(&c);
    }
}

/* follow reads id from cursor at to the end the way a client does, chunk by chunk. */
static sched_chunk
follow(sched *s, uint64_t id, uint32_t at)
{
    sched_chunk all = {.seq = at};
    all.ids = malloc(sizeof(int32_t) * MAX_GEN);
    all.text = calloc(1, 4 * 256 * MAX_GEN + 1);
    ck_assert(all.ids && all.text);
    for (int i = 0; i < 20000; i++) {
        sched_chunk c;
        bool ready;
        ck_assert_int_eq(sched_read(s, id, at, &c, &ready), LLM_OK);
        ck_assert_uint_eq(c.seq, at);
        ck_assert_int_le(all.n_ids + c.n_ids, MAX_GEN);
        if (ready) { // else the chunk is empty, its buffers NULL
            memcpy(all.ids + all.n_ids, c.ids, sizeof(int32_t) * (size_t)c.n_ids);
            memcpy(all.text + all.text_len, c.text, c.text_len);
        }
        all.n_ids += c.n_ids;
        all.text_len += c.text_len;
        at += (uint32_t)c.n_ids;
        all.finish = c.finish;
        all.usage = c.usage;
        sched_chunk_fini(&c);
        if (all.finish != SCHED_FINISH_NONE)
            return all;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    ck_abort_msg("request %llu never finished", (unsigned long long)id);
    return all;
}

/* check_same: what a reader got from cursor at is what the original stream gave there. */
static void
check_same(const sched_chunk *c, const stream *o, int at, int k)
{
    ck_assert_msg(c->n_ids == o->n - at, "k=%d cursor=%d: %d tokens, want %d", k, at, c->n_ids,
                  o->n - at);
    ck_assert_msg(memcmp(c->ids, o->ids + at, sizeof(int32_t) * (size_t)c->n_ids) == 0,
                  "k=%d cursor=%d: the tokens differ", k, at);
    ck_assert_msg(c->text_len == o->len_from[at] &&
                      memcmp(c->text, o->text_from[at], c->text_len) == 0,
                  "k=%d cursor=%d: the text differs (%zu bytes, want %zu)", k, at, c->text_len,
                  o->len_from[at]);
    ck_assert_msg(c->finish == o->finish, "k=%d cursor=%d: finish %s, want %s", k, at,
                  sched_finish_name(c->finish), sched_finish_name(o->finish));
    ck_assert_uint_eq(c->usage.completion_tokens, (uint32_t)o->n);
    ck_assert_uint_le(c->usage.cached_tokens, c->usage.prompt_tokens);
}

/* check_resume submits r again with o's first k tokens as resumed output: read from
 * cursor k as it streams, and then from an earlier cursor, it must be o, byte for byte. */
static void
check_resume(sched *s, uint64_t id, sched_req r, const stream *o, int k)
{
    r.resume = o->ids;
    r.n_resume = k;
    char err[256] = "";
    ck_assert_msg(sched_submit(s, id, &r, err, sizeof(err)) == LLM_OK, "k=%d: %s", k, err);
    sched_chunk c = follow(s, id, (uint32_t)k);
    check_same(&c, o, k, k);
    sched_chunk_fini(&c);
    bool ready;
    ck_assert_int_eq(sched_read(s, id, (uint32_t)(k / 2), &c, &ready), LLM_OK);
    check_same(&c, o, k / 2, k);
    sched_chunk_fini(&c);
}

START_TEST(test_resume_at_any_token_continues_the_stream_exactly)
{
    // Synthetic engine, greedy and seeded sampling: resumed at every k from 0 to n.
    int32_t p[10];
    fill_prompt(p, 10, 5);
    engine *e = synth(64, 0);
    sched *s = start(e, 4, NULL);
    uint64_t id = 1;
    for (int v = 0; v < 2; v++) {
        sched_req r = req_of(p, 10, 30);
        if (v == 1) {
            r.samp.temperature = 0.8f;
            r.samp.top_p = 0.9f;
            r.samp.seed = 42;
        }
        stream o;
        run_original(s, id++, &r, &o);
        ck_assert_int_eq(o.n, 30);
        ck_assert_int_eq(o.finish, SCHED_FINISH_LENGTH);
        for (int k = 0; k <= o.n; k++)
            check_resume(s, id++, r, &o, k);
        stream_fini(&o);
    }
    sched_free(s);
    engine_free(e);
}
END_TEST

/* splits_a_character: the stream's bytes b[0..n) cut at byte `at` fall inside a valid
 * multi-byte character. There the scheduler holds the character's first bytes back (as
 * gen.c's incomplete-tail rule says) and releases it whole with a later token. */
static bool
splits_a_character(const char *b, size_t n, size_t at)
{
    for (size_t back = 1; back <= 3 && back <= at; back++) {
        unsigned char c = (unsigned char)b[at - back];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        size_t lead = at - back;
        return need > back && lead + need <= n && utf8_valid(b + lead, need, NULL);
    }
    return false;
}

START_TEST(test_resume_on_a_tiny_model_continues_exactly_even_mid_character)
{
    // The real forward pass: the resumed tokens are prefilled where the original decoded
    // them one by one, and the continuation must still be the same, greedy and seeded.
    // On this random model (seed 13) greedy and top-p 0.9 settle on one token, while
    // temperatures 1.0 and 1.5 give varied streams whose continuation depends on every
    // draw being keyed by the absolute position. Its raw byte tokens put some resume
    // points inside a multi-byte character, one of them a valid one; that must happen,
    // or this test covers less than it says.
    char path[256], err[256];
    ck_assert_int_eq(test_tiny_model(path, sizeof(path), LLM_DTYPE_Q4_1, 13, false), LLM_OK);
    engine *e = NULL;
    engine_model_opts mo = {
        .path = path, .threads = 2, .max_step_tokens = 64, .kv_memory_bytes = 4u << 20};
    ck_assert_int_eq(engine_model_new(&mo, &e, err, sizeof(err)), LLM_OK);
    enum { LEN = 21, GEN = 24 };
    int32_t p[LEN];
    for (int k = 0; k < LEN; k++)
        p[k] = (k * 13 + 7) % e->n_vocab;
    sched *s = start(e, 8, NULL);
    uint64_t id = 1;
    static const float temps[] = {0.0f, 0.8f, 1.0f, 1.5f};
    int splits = 0;
    for (int v = 0; v < 4; v++) {
        sched_req r = req_of(p, LEN, GEN);
        r.samp.temperature = temps[v];
        r.samp.top_p = v == 1 ? 0.9f : 1.0f;
        r.samp.seed = 42;
        stream o;
        run_original(s, id++, &r, &o);
        ck_assert_int_gt(o.n, 2);
        char bytes[MAX_GEN * 256];
        size_t cut[MAX_GEN + 1] = {0}; // bytes of tokens [0, k)
        for (int k = 0; k < o.n; k++) {
            size_t len = 0;
            if (!e->is_eog(e, o.ids[k]))
                ck_assert_int_eq(e->token_bytes(e, o.ids[k], bytes + cut[k], 256, &len), LLM_OK);
            cut[k + 1] = cut[k] + len;
        }
        for (int k = 0; k <= o.n; k++) {
            check_resume(s, id++, r, &o, k);
            splits += splits_a_character(bytes, cut[o.n], cut[k]);
        }
        stream_fini(&o);
    }
    ck_assert_msg(splits > 0, "no resume point fell inside a valid UTF-8 character");
    sched_free(s);
    engine_free(e);
    unlink(path);
}
END_TEST

START_TEST(test_resume_ends_where_the_original_ended)
{
    int32_t p[6] = {'h', 'e', 'l', 'l', 'o', ' '};
    engine *e = synth(16, 0);
    sched *s = start(e, 2, NULL);
    sched_req r = req_of(p, 6, 20);
    stream full;
    run_original(s, 1, &r, &full);

    // A stop string of three tokens: resumed anywhere, including inside it (it started
    // in resumed text and completes in new text) and right after it (the resumed tokens
    // complete it: finished at once).
    char stop[4] = {full.text_from[0][8], full.text_from[0][9], full.text_from[0][10], 0};
    const char *stops[] = {stop};
    r.stop = stops;
    r.n_stop = 1;
    stream o;
    run_original(s, 2, &r, &o);
    ck_assert_int_eq(o.finish, SCHED_FINISH_STOP);
    ck_assert_int_le(o.n, 11);
    ck_assert_ptr_null(strstr(o.text_from[0], stop));
    uint64_t id = 10;
    for (int k = 0; k <= o.n; k++)
        check_resume(s, id++, r, &o, k);
    // One token past the stop: that stream never existed.
    sched_req bad = r;
    bad.resume = full.ids;
    bad.n_resume = o.n + 1;
    char err[256] = "";
    ck_assert_int_eq(sched_submit(s, id++, &bad, err, sizeof(err)), LLM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "ended"));
    stream_fini(&o);

    // max_tokens: all of it resumed ends at once with length.
    r.n_stop = 0;
    r.max_tokens = 10;
    run_original(s, id++, &r, &o);
    ck_assert_int_eq(o.finish, SCHED_FINISH_LENGTH);
    for (int k = 0; k <= o.n; k++)
        check_resume(s, id++, r, &o, k);
    stream_fini(&o);

    // End of generation as the last resumed token: stop at once; before the last: refused.
    int32_t eog[6];
    memcpy(eog, full.ids, sizeof(eog));
    eog[5] = SYNTH_EOG;
    r.max_tokens = 20;
    r.resume = eog;
    r.n_resume = 6;
    ck_assert_int_eq(sched_submit(s, id, &r, err, sizeof(err)), LLM_OK);
    sched_chunk c = wait_done_at(s, id, 6);
    ck_assert_int_eq(c.finish, SCHED_FINISH_STOP);
    ck_assert_int_eq(c.n_ids, 0);
    ck_assert_uint_eq(c.usage.completion_tokens, 6);
    sched_chunk_fini(&c);
    c = wait_done_at(s, id++, 0);
    ck_assert_int_eq(c.n_ids, 6);
    ck_assert_uint_eq(c.text_len, 5);
    ck_assert_int_eq(memcmp(c.text, full.text_from[0], 5), 0);
    sched_chunk_fini(&c);
    eog[5] = full.ids[5];
    eog[2] = SYNTH_EOG;
    ck_assert_int_eq(sched_submit(s, id++, &r, err, sizeof(err)), LLM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "ended"));
    stream_fini(&full);
    sched_free(s);
    engine_free(e);
}
END_TEST

START_TEST(test_bad_resume_is_refused_with_a_reason)
{
    int32_t p[4] = {'a', 'b', 'c', 'd'};
    int32_t ids[8] = {'x', 'y', 'z', 'x', 'y', 'z', 'x', 'y'};
    char err[256];
    engine *e = synth(16, 0);
    sched *s = start(e, 2, NULL);
    sched_req r = req_of(p, 4, 4);
    r.resume = ids;
    r.n_resume = 5; // more than max_tokens: they count toward it
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "max_tokens"));
    r.n_resume = -1;
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_ERANGE);
    r.n_resume = 3;
    ids[1] = 5000;
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "vocabulary"));
    ids[1] = -1;
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "vocabulary"));
    ids[1] = 'y';
    r.seq_base = 3; // the older form of resume: not with resume ids
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "seq_base"));
    r.seq_base = 0;
    // The worker still serves, and the good request streams from seq 3.
    ck_assert_int_eq(sched_submit(s, 1, &r, err, sizeof(err)), LLM_OK);
    sched_chunk c = wait_done_at(s, 1, 3);
    ck_assert_uint_eq(c.seq, 3);
    ck_assert_int_eq(c.n_ids, 1);
    ck_assert_int_eq(c.finish, SCHED_FINISH_LENGTH);
    sched_chunk_fini(&c);
    sched_free(s);
    engine_free(e);
}
END_TEST

Suite *sched_suite(void);

Suite *
sched_suite(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("sched");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_batched_streams_equal_their_runs_alone_even_when_preempted);
    tcase_add_test(tc, test_higher_tier_is_admitted_first);
    tcase_add_test(tc, test_cancel_and_deadline_end_streams_and_free_blocks);
    tcase_add_test(tc, test_shared_prefix_is_reused_and_reported);
    tcase_add_test(tc, test_reads_follow_the_cursor);
    tcase_add_test(tc, test_bad_requests_are_refused_with_a_reason);
    tcase_add_test(tc, test_stop_strings_end_the_stream_without_their_text);
    tcase_add_test(tc, test_parked_readers_are_woken);
    tcase_add_test(tc, test_model_engine_streams_equal_alone);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("resume");
    tcase_set_timeout(tr, 120);
    tcase_add_test(tr, test_resume_at_any_token_continues_the_stream_exactly);
    tcase_add_test(tr, test_resume_on_a_tiny_model_continues_exactly_even_mid_character);
    tcase_add_test(tr, test_resume_ends_where_the_original_ended);
    tcase_add_test(tr, test_bad_resume_is_refused_with_a_reason);
    suite_add_tcase(s, tr);
    return s;
}
