/*
 * test_model.c - the forward pass on tiny random models of every type: batched steps
 * equal single-token steps, thread counts do not change results, two tensor-parallel
 * shards joined by an all-reduce equal the whole model, and bad calls are refused.
 */
#include "gen.h"
#include "gguf_write.h"
#include "llm_err.h"
#include "model.h"
#include "test_helpers.h"

#include <check.h>
#include <math.h>
#include <pthread.h>

static const llm_dtype all_types[] = {LLM_DTYPE_F32,  LLM_DTYPE_F16,  LLM_DTYPE_BF16,
                                      LLM_DTYPE_Q8_0, LLM_DTYPE_Q4_0, LLM_DTYPE_Q4_1};
#define N_TYPES (int)(sizeof(all_types) / sizeof(all_types[0]))

static model *
load_tiny(llm_dtype t, bool untied, char *path, size_t n)
{
    ck_assert_int_eq(test_tiny_model(path, n, t, 5, untied), LLM_OK);
    model *m = NULL;
    char err[256];
    ck_assert_msg(model_load(path, NULL, &m, err, sizeof(err)) == LLM_OK, "%s", err);
    return m;
}

/* Runs tokens through the model in steps of `step` tokens; returns last logits. */
static void
run(const model *m, const int32_t *toks, int n, int step, int threads, float *logits)
{
    model_shard sh = model_full_shard(m);
    model_state *s = NULL;
    model_kv *kv = NULL;
    pool *p = NULL;
    ck_assert_int_eq(model_state_new(m, &sh, step, threads, &s), LLM_OK);
    ck_assert_int_eq(model_kv_new(m, &sh, 64, &kv), LLM_OK);
    ck_assert_int_eq(pool_new(threads, &p), LLM_OK);
    for (int pos = 0; pos < n; pos += step) {
        int k = n - pos < step ? n - pos : step;
        ck_assert_int_eq(model_forward(m, s, kv, toks + pos, k, pos, p, NULL, NULL,
                                       pos + k == n ? logits : NULL),
                         LLM_OK);
    }
    pool_free(p);
    model_kv_free(kv);
    model_state_free(s);
}

static const int32_t toks[] = {1, 40, 77, 290, 15, 3, 200, 201, 9, 2, 100, 120, 33};
#define N_TOKS (int)(sizeof(toks) / sizeof(toks[0]))

START_TEST(test_loads_every_type_with_its_config)
{
    for (int i = 0; i < N_TYPES; i++) {
        char path[256];
        model *m = load_tiny(all_types[i], i % 2, path, sizeof(path));
        const model_config *c = model_get_config(m);
        ck_assert_int_eq(c->n_layers, 2);
        ck_assert_int_eq(c->dim, 64);
        ck_assert_int_eq(c->n_heads, 4);
        ck_assert_int_eq(c->n_kv_heads, 2);
        ck_assert_int_eq(c->head_dim, 16);
        ck_assert_int_eq(c->vocab_size, tok_n_vocab(model_get_vocab(m)));
        ck_assert_int_eq(model_get_weights(m)->layers[1].wq.type, all_types[i]);
        ck_assert(model_weight_bytes(m) > 0);
        model_free(m);
        unlink(path);
    }
}
END_TEST

START_TEST(test_batched_steps_equal_single_token_steps)
{
    for (int i = 0; i < N_TYPES; i++) {
        char path[256];
        model *m = load_tiny(all_types[i], false, path, sizeof(path));
        int V = model_get_config(m)->vocab_size;
        float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
        run(m, toks, N_TOKS, 1, 1, a);
        run(m, toks, N_TOKS, 5, 1, b); // steps of 5, 5, 3
        float max = 0;
        for (int k = 0; k < V; k++)
            max = fmaxf(max, fabsf(a[k]));
        for (int k = 0; k < V; k++)
            ck_assert_msg(fabsf(a[k] - b[k]) <= 1e-5f * fmaxf(1, max), "%s logit %d: %g vs %g",
                          kern_type_name(all_types[i]), k, (double)a[k], (double)b[k]);
        free(a);
        free(b);
        model_free(m);
        unlink(path);
    }
}
END_TEST

START_TEST(test_thread_count_does_not_change_logits)
{
    char path[256];
    model *m = load_tiny(LLM_DTYPE_Q4_1, true, path, sizeof(path));
    int V = model_get_config(m)->vocab_size;
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    run(m, toks, N_TOKS, 4, 1, a);
    run(m, toks, N_TOKS, 4, 3, b);
    // Rows are split across threads, never the sum inside a row: bitwise equal.
    ck_assert(memcmp(a, b, sizeof(float) * V) == 0);
    free(a);
    free(b);
    model_free(m);
    unlink(path);
}
END_TEST

/* --- tensor parallel: two ranks as two threads with a barrier-based all-reduce ------ */

typedef struct {
    pthread_barrier_t bar;
    float *parts[2];
} tp_group;

typedef struct {
    tp_group *g;
    int rank;
    const model *m;
    model_shard shard;
    float *logits;
    int rc;
} tp_rank;

static int
tp_allreduce(void *ctx, float *buf, size_t n)
{
    tp_rank *r = ctx;
    r->g->parts[r->rank] = buf;
    pthread_barrier_wait(&r->g->bar);
    // Both ranks compute the same sum from both buffers, then wait before either
    // overwrites its own buffer.
    float *tmp = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        tmp[i] = r->g->parts[0][i] + r->g->parts[1][i];
    pthread_barrier_wait(&r->g->bar);
    memcpy(buf, tmp, sizeof(float) * n);
    free(tmp);
    pthread_barrier_wait(&r->g->bar);
    return LLM_OK;
}

static void *
tp_main(void *arg)
{
    tp_rank *r = arg;
    model_state *s = NULL;
    model_kv *kv = NULL;
    r->rc = model_state_new(r->m, &r->shard, 8, 1, &s);
    if (r->rc == LLM_OK)
        r->rc = model_kv_new(r->m, &r->shard, 32, &kv);
    if (r->rc == LLM_OK)
        r->rc = model_forward(r->m, s, kv, toks, 8, 0, NULL, tp_allreduce, r, NULL);
    if (r->rc == LLM_OK)
        r->rc = model_forward(r->m, s, kv, toks + 8, 1, 8, NULL, tp_allreduce, r, r->logits);
    model_kv_free(kv);
    model_state_free(s);
    return NULL;
}

START_TEST(test_two_shards_with_allreduce_equal_the_whole_model)
{
    char path[256];
    model *m = load_tiny(LLM_DTYPE_Q8_0, false, path, sizeof(path));
    int V = model_get_config(m)->vocab_size;
    float *full = malloc(sizeof(float) * V);
    run(m, toks, 9, 8, 1, full);
    tp_group g;
    pthread_barrier_init(&g.bar, NULL, 2);
    tp_rank ranks[2] = {
        {&g, 0, m, {0, 1, 0, 64}, malloc(sizeof(float) * V), 0},
        {&g, 1, m, {1, 2, 64, 128}, malloc(sizeof(float) * V), 0},
    };
    pthread_t th[2];
    for (int r = 0; r < 2; r++)
        pthread_create(&th[r], NULL, tp_main, &ranks[r]);
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    for (int r = 0; r < 2; r++) {
        ck_assert_int_eq(ranks[r].rc, LLM_OK);
        for (int k = 0; k < V; k++)
            ck_assert_msg(fabsf(ranks[r].logits[k] - full[k]) < 1e-4f, "rank %d logit %d", r, k);
        free(ranks[r].logits);
    }
    pthread_barrier_destroy(&g.bar);
    free(full);
    model_free(m);
    unlink(path);
}
END_TEST

/* Three sequences in one batch — one prefilling 5 tokens, two decoding — give the same
 * logits as each run on its own: continuous batching does not change results. */
START_TEST(test_batch_of_sequences_equals_separate_runs)
{
    char path[256];
    model *m = load_tiny(LLM_DTYPE_Q4_1, false, path, sizeof(path));
    const model_config *c = model_get_config(m);
    int V = c->vocab_size;
    model_shard sh = model_full_shard(m);
    model_state *s = NULL;
    model_kv *kv[3];
    ck_assert_int_eq(model_state_new(m, &sh, 16, 2, &s), LLM_OK);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(model_kv_new(m, &sh, 32, &kv[i]), LLM_OK);
    pool *p = NULL;
    ck_assert_int_eq(pool_new(2, &p), LLM_OK);
    // Sequences 1 and 2 have 4 and 7 tokens of history already.
    ck_assert_int_eq(model_forward(m, s, kv[1], toks, 4, 0, p, NULL, NULL, NULL), LLM_OK);
    ck_assert_int_eq(model_forward(m, s, kv[2], toks + 3, 7, 0, p, NULL, NULL, NULL), LLM_OK);
    int32_t tk[7] = {toks[0], toks[1], toks[2], toks[3], toks[4], toks[4], toks[10]};
    int32_t pos[7] = {0, 1, 2, 3, 4, 4, 7};
    model_kv *kvs[7] = {kv[0], kv[0], kv[0], kv[0], kv[0], kv[1], kv[2]};
    bool want[7] = {false, false, false, false, true, true, true};
    float *got = malloc(sizeof(float) * 3 * V), *want_l = malloc(sizeof(float) * V);
    model_batch b = {7, tk, pos, kvs, want, got};
    ck_assert_int_eq(model_forward_batch(m, s, &b, p, NULL, NULL), LLM_OK);
    // References: each sequence alone.
    int32_t seq1[5] = {toks[0], toks[1], toks[2], toks[3], toks[4]};
    int32_t seq2[8] = {toks[3], toks[4], toks[5], toks[6], toks[7], toks[8], toks[9], toks[10]};
    const int32_t *refs[3] = {toks, seq1, seq2};
    int lens[3] = {5, 5, 8};
    for (int i = 0; i < 3; i++) {
        run(m, refs[i], lens[i], 1, 1, want_l);
        for (int k = 0; k < V; k++)
            ck_assert_msg(fabsf(got[i * V + k] - want_l[k]) < 1e-4f, "seq %d logit %d", i, k);
    }
    // A cache of another shape, a NULL cache and a position past the cache are refused.
    model_kv *bad[7] = {kv[0], kv[0], kv[0], kv[0], kv[0], NULL, kv[2]};
    b.kv = bad;
    ck_assert_int_eq(model_forward_batch(m, s, &b, p, NULL, NULL), LLM_EINVAL);
    b.kv = kvs;
    pos[6] = 32;
    ck_assert_int_eq(model_forward_batch(m, s, &b, p, NULL, NULL), LLM_ERANGE);
    free(got);
    free(want_l);
    pool_free(p);
    for (int i = 0; i < 3; i++)
        model_kv_free(kv[i]);
    model_state_free(s);
    model_free(m);
    unlink(path);
}
END_TEST

START_TEST(test_forward_refuses_bad_calls)
{
    char path[256];
    model *m = load_tiny(LLM_DTYPE_F16, false, path, sizeof(path));
    model_shard sh = model_full_shard(m);
    model_state *s = NULL;
    model_kv *kv = NULL;
    ck_assert_int_eq(model_state_new(m, &sh, 4, 1, &s), LLM_OK);
    ck_assert_int_eq(model_kv_new(m, &sh, 8, &kv), LLM_OK);
    int32_t bad[] = {1, 99999};
    ck_assert_int_eq(model_forward(m, s, kv, toks, 0, 0, NULL, NULL, NULL, NULL), LLM_EINVAL);
    ck_assert_int_eq(model_forward(m, s, kv, toks, 5, 0, NULL, NULL, NULL, NULL), LLM_EINVAL);
    ck_assert_int_eq(model_forward(m, s, kv, bad, 2, 0, NULL, NULL, NULL, NULL), LLM_EINVAL);
    ck_assert_int_eq(model_forward(m, s, kv, toks, 2, 7, NULL, NULL, NULL, NULL), LLM_ERANGE);
    ck_assert_int_eq(model_forward(m, s, kv, toks, 1, -1, NULL, NULL, NULL, NULL), LLM_ERANGE);
    ck_assert_int_eq(model_forward(m, s, kv, toks, 1, 7, NULL, NULL, NULL, NULL), LLM_OK);
    model_shard bad_shard = {1, 1, 0, 128};
    model_state *s2 = NULL;
    ck_assert_int_eq(model_state_new(m, &bad_shard, 4, 1, &s2), LLM_EINVAL);
    ck_assert_int_eq(model_kv_new(m, &sh, 0, &kv), LLM_EINVAL);
    model_kv_free(kv);
    model_state_free(s);
    model_free(m);
    unlink(path);
}
END_TEST

START_TEST(test_generation_respects_max_tokens_and_context)
{
    char path[256];
    model *m = load_tiny(LLM_DTYPE_Q4_0, false, path, sizeof(path));
    const model_config *c = model_get_config(m);
    model_shard sh = model_full_shard(m);
    model_state *s = NULL;
    model_kv *kv = NULL;
    samp_ctx *sc = NULL;
    ck_assert_int_eq(model_state_new(m, &sh, 4, 1, &s), LLM_OK);
    ck_assert_int_eq(model_kv_new(m, &sh, 16, &kv), LLM_OK);
    ck_assert_int_eq(samp_ctx_new(c->vocab_size, &sc), LLM_OK);
    gen_params gp = {.max_tokens = 3, .samp = samp_params_default()};
    gen_result r;
    ck_assert_int_eq(gen_run(m, s, kv, NULL, sc, toks, 5, 4, &gp, NULL, NULL, NULL, &r), LLM_OK);
    ck_assert(r.n_ids <= 3);
    ck_assert(r.finish == GEN_FINISH_LENGTH || r.finish == GEN_FINISH_STOP);
    gen_result_fini(&r);
    ck_assert_int_eq(gen_run(m, s, kv, NULL, sc, toks, 13, 4, &gp, NULL, NULL, NULL, &r), LLM_OK);
    gen_result_fini(&r);
    // a prompt longer than the cache is refused up front
    int32_t long_prompt[20] = {0};
    ck_assert_int_eq(gen_run(m, s, kv, NULL, sc, long_prompt, 20, 4, &gp, NULL, NULL, NULL, &r),
                     LLM_ERANGE);
    // the context bounds the generation: 14 prompt tokens + at most 2 more
    gp.max_tokens = 100;
    gp.samp.temperature = 1.0f; // sampling, so an end token is unlikely to cut it short
    ck_assert_int_eq(gen_run(m, s, kv, NULL, sc, long_prompt, 14, 4, &gp, NULL, NULL, NULL, &r),
                     LLM_OK);
    ck_assert(r.n_ids <= 2);
    gen_result_fini(&r);
    samp_ctx_free(sc);
    model_kv_free(kv);
    model_state_free(s);
    model_free(m);
    unlink(path);
}
END_TEST

START_TEST(test_load_names_what_is_wrong)
{
    model *m = NULL;
    char err[256] = "";
    ck_assert_int_eq(model_load("/nonexistent.gguf", NULL, &m, err, sizeof(err)), LLM_EIO);
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_new(&w), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_str(w, "general.architecture", "gpt2"), LLM_OK);
    char path[256];
    test_tmp_path(path, sizeof(path), "arch.gguf");
    ck_assert_int_eq(gguf_writer_write(w, path), LLM_OK);
    gguf_writer_free(w);
    ck_assert_int_eq(model_load(path, NULL, &m, err, sizeof(err)), LLM_ENOTSUP);
    ck_assert_msg(strstr(err, "gpt2") != NULL, "%s", err);
    unlink(path);

    ck_assert_int_eq(gguf_writer_new(&w), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_str(w, "general.architecture", "llama"), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_u32(w, "llama.embedding_length", 64), LLM_OK);
    ck_assert_int_eq(gguf_writer_write(w, path), LLM_OK);
    gguf_writer_free(w);
    ck_assert_int_eq(model_load(path, NULL, &m, err, sizeof(err)), LLM_EINVAL);
    ck_assert_msg(strstr(err, "llama.block_count") != NULL, "%s", err);
    unlink(path);
}
END_TEST

Suite *model_suite(void);

Suite *
model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("forward");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_loads_every_type_with_its_config);
    tcase_add_test(tc, test_batched_steps_equal_single_token_steps);
    tcase_add_test(tc, test_thread_count_does_not_change_logits);
    tcase_add_test(tc, test_two_shards_with_allreduce_equal_the_whole_model);
    tcase_add_test(tc, test_batch_of_sequences_equals_separate_runs);
    tcase_add_test(tc, test_forward_refuses_bad_calls);
    tcase_add_test(tc, test_generation_respects_max_tokens_and_context);
    tcase_add_test(tc, test_load_names_what_is_wrong);
    suite_add_tcase(s, tc);
    return s;
}
