/*
 * test_model.c - the forward pass on tiny random models of every type: batched steps
 * equal single-token steps, thread counts do not change results, two tensor-parallel
 * shards joined by an all-reduce equal the whole model, and bad calls are refused. The
 * paged KV cache: any block table, shared prefix blocks and blocks copied as bytes give
 * bitwise the logits of model_kv_new's identity cache, and bad views are refused.
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
    ck_assert_int_eq(model_kv_new(m, &sh, n > 64 ? n : 64, &kv), LLM_OK);
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

/* A long step (150 tokens: more than kern_matmul's scratch quantizes at a time, several
 * attention tiles) on 2 threads gives the logits of steps of 40 on one thread, bit for
 * bit: every matmul and attention value is batch and split invariant. */
START_TEST(test_a_long_step_equals_short_steps)
{
    enum { N = 150 };
    int32_t long_toks[N];
    for (int i = 0; i < N; i++)
        long_toks[i] = 3 + (i * 37) % 250; // inside the tiny vocabulary
    const llm_dtype types[] = {LLM_DTYPE_Q4_1, LLM_DTYPE_F32};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        char path[256];
        model *m = load_tiny(types[i], false, path, sizeof(path));
        int V = model_get_config(m)->vocab_size;
        float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
        run(m, long_toks, N, N, 2, a);
        run(m, long_toks, N, 40, 1, b);
        ck_assert_msg(memcmp(a, b, sizeof(float) * V) == 0, "%s", kern_type_name(types[i]));
        free(a);
        free(b);
        model_free(m);
        unlink(path);
    }
}
END_TEST

/* One-token steps on 2 and 3 threads, where attention splits each KV head's queries
 * into pieces and the matmuls deal rows in runs (pool_split), must give bit for bit the
 * logits of one thread and of one long step; the K-quant model's heads are 64 wide, the
 * others' 16. */
START_TEST(test_one_token_steps_on_more_threads_are_bitwise_the_same)
{
    enum { N = 150 };
    int32_t long_toks[N];
    for (int i = 0; i < N; i++)
        long_toks[i] = 3 + (i * 41) % 250;
    const llm_dtype types[] = {LLM_DTYPE_Q4_1, LLM_DTYPE_Q4_K};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        char path[256];
        model *m = load_tiny(types[i], false, path, sizeof(path));
        int V = model_get_config(m)->vocab_size;
        float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
        run(m, long_toks, N, 1, 1, a);
        for (int threads = 2; threads <= 3; threads++) {
            run(m, long_toks, N, 1, threads, b);
            ck_assert_msg(memcmp(a, b, sizeof(float) * V) == 0, "%s, %d threads",
                          kern_type_name(types[i]), threads);
        }
        run(m, long_toks, N, N, 2, b);
        ck_assert_msg(memcmp(a, b, sizeof(float) * V) == 0, "%s, one step",
                      kern_type_name(types[i]));
        free(a);
        free(b);
        model_free(m);
        unlink(path);
    }
}
END_TEST

/* The KV cache's element type: float16 by default, float32 with kv_f32 - twice the
 * bytes per block, logits that differ only by the rounding of keys and values. */
START_TEST(test_kv_type_float16_by_default_float32_on_request)
{
    char path[256];
    ck_assert_int_eq(test_tiny_model(path, sizeof(path), LLM_DTYPE_Q4_1, 5, true), LLM_OK);
    model *h = NULL, *f = NULL;
    char err[256];
    model_load_opts exact = {.kv_f32 = true};
    ck_assert_msg(model_load(path, NULL, &h, err, sizeof(err)) == LLM_OK, "%s", err);
    ck_assert_msg(model_load(path, &exact, &f, err, sizeof(err)) == LLM_OK, "%s", err);
    model_shard sh = model_full_shard(h);
    ck_assert_uint_eq(2 * model_kv_block_bytes(h, &sh), model_kv_block_bytes(f, &sh));
    int V = model_get_config(h)->vocab_size;
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    run(h, toks, N_TOKS, 4, 2, a);
    run(f, toks, N_TOKS, 4, 2, b);
    float scale = 1.0f, diff = 0.0f;
    for (int i = 0; i < V; i++) {
        scale = fabsf(b[i]) > scale ? fabsf(b[i]) : scale;
        diff = fabsf(a[i] - b[i]) > diff ? fabsf(a[i] - b[i]) : diff;
    }
    ck_assert_msg(diff > 0.0f && diff < 5e-3f * scale, "diff %g scale %g", (double)diff,
                  (double)scale);
    free(a);
    free(b);
    model_free(h);
    model_free(f);
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
    // A float32 cache: the ranks' partial sums round differently from the whole model's,
    // and a float16 cache would turn those last-bit differences into half-ulp steps.
    char path[256], err[256];
    ck_assert_int_eq(test_tiny_model(path, sizeof(path), LLM_DTYPE_Q8_0, 5, false), LLM_OK);
    model *m = NULL;
    model_load_opts exact = {.kv_f32 = true};
    ck_assert_msg(model_load(path, &exact, &m, err, sizeof(err)) == LLM_OK, "%s", err);
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
    // 8 positions round up to one whole block of 16.
    ck_assert_int_eq(model_kv_new(m, &sh, 8, &kv), LLM_OK);
    ck_assert_int_eq(model_kv_capacity(kv), MODEL_KV_BLOCK);
    int32_t bad[] = {1, 99999};
    ck_assert_int_eq(model_forward(m, s, kv, toks, 0, 0, NULL, NULL, NULL, NULL), LLM_EINVAL);
    ck_assert_int_eq(model_forward(m, s, kv, toks, 5, 0, NULL, NULL, NULL, NULL), LLM_EINVAL);
    ck_assert_int_eq(model_forward(m, s, kv, bad, 2, 0, NULL, NULL, NULL, NULL), LLM_EINVAL);
    ck_assert_int_eq(model_forward(m, s, kv, toks, 2, 15, NULL, NULL, NULL, NULL), LLM_ERANGE);
    ck_assert_int_eq(model_forward(m, s, kv, toks, 1, -1, NULL, NULL, NULL, NULL), LLM_ERANGE);
    ck_assert_int_eq(model_forward(m, s, kv, toks, 1, 15, NULL, NULL, NULL, NULL), LLM_OK);
    ck_assert_int_eq(model_forward(m, s, NULL, toks, 1, 0, NULL, NULL, NULL, NULL), LLM_EINVAL);
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

/* --- paged KV cache ------------------------------------------------------------------ */

#define PG_LEN 70 // four full blocks and part of a fifth

typedef struct {
    model *m;
    model_shard sh;
    model_state *s;
    pool *p;
    int V;
    int32_t toks[PG_LEN];
    char path[256];
} pg_fixture;

static void
pg_open(pg_fixture *f, llm_dtype t)
{
    f->m = load_tiny(t, false, f->path, sizeof(f->path));
    f->sh = model_full_shard(f->m);
    f->V = model_get_config(f->m)->vocab_size;
    ck_assert_int_eq(model_state_new(f->m, &f->sh, 16, 2, &f->s), LLM_OK);
    ck_assert_int_eq(pool_new(2, &f->p), LLM_OK);
    for (int i = 0; i < PG_LEN; i++)
        f->toks[i] = (int32_t)((i * 37 + 11) % f->V);
}

static void
pg_close(pg_fixture *f)
{
    pool_free(f->p);
    model_state_free(f->s);
    model_free(f->m);
    unlink(f->path);
}

/* Runs toks[from..n) at positions from..n-1 through kv in steps of `step` tokens; the
 * logits of each step's last token go to logits[pos][V] (calloc'ed, [n][V]). */
static float *
pg_run(pg_fixture *f, model_kv *kv, const int32_t *tk, int from, int n, int step)
{
    float *logits = calloc((size_t)n * (size_t)f->V, sizeof(float));
    for (int pos = from; pos < n; pos += step) {
        int k = n - pos < step ? n - pos : step;
        ck_assert_int_eq(model_forward(f->m, f->s, kv, tk + pos, k, pos, f->p, NULL, NULL,
                                       logits + (size_t)(pos + k - 1) * f->V),
                         LLM_OK);
    }
    return logits;
}

static void
pg_assert_same(const pg_fixture *f, const float *a, const float *b, int from, int n)
{
    for (int pos = from; pos < n; pos++)
        ck_assert_msg(memcmp(a + (size_t)pos * f->V, b + (size_t)pos * f->V,
                             sizeof(float) * (size_t)f->V) == 0,
                      "logits at position %d differ", pos);
}

START_TEST(test_scrambled_block_table_gives_bitwise_the_identity_cache_logits)
{
    const llm_dtype types[] = {LLM_DTYPE_F32, LLM_DTYPE_Q4_1};
    for (int ti = 0; ti < 2; ti++) {
        pg_fixture f;
        pg_open(&f, types[ti]);
        model_kv *ident = NULL;
        model_kvpool *kp = NULL;
        ck_assert_int_eq(model_kv_new(f.m, &f.sh, PG_LEN, &ident), LLM_OK);
        ck_assert_int_eq(model_kv_capacity(ident), 80);
        ck_assert_int_eq(model_kvpool_new(f.m, &f.sh, 9, &kp), LLM_OK);
        const int32_t table[5] = {6, 2, 8, 0, 4};
        model_kv view = {kp, table, 5};
        ck_assert_int_eq(model_kv_capacity(&view), 80);
        // One token per step, then prefill chunks of 7 that straddle block edges.
        const int steps[2] = {1, 7};
        for (int si = 0; si < 2; si++) {
            float *a = pg_run(&f, ident, f.toks, 0, PG_LEN, steps[si]);
            float *b = pg_run(&f, &view, f.toks, 0, PG_LEN, steps[si]);
            pg_assert_same(&f, a, b, 0, PG_LEN);
            free(a);
            free(b);
        }
        model_kvpool_free(kp);
        model_kv_free(ident);
        pg_close(&f);
    }
}
END_TEST

START_TEST(test_shared_prefix_blocks_give_the_logits_of_a_fresh_run)
{
    pg_fixture f;
    pg_open(&f, LLM_DTYPE_Q8_0);
    // B shares A's first 32 tokens (two full blocks) and then goes its own way.
    int32_t tb[PG_LEN];
    memcpy(tb, f.toks, sizeof(tb));
    for (int i = 32; i < PG_LEN; i++)
        tb[i] = (int32_t)((i * 53 + 5) % f.V);
    model_kvpool *kp = NULL;
    ck_assert_int_eq(model_kvpool_new(f.m, &f.sh, 12, &kp), LLM_OK);
    const int32_t ta[3] = {3, 9, 5};
    const int32_t tbl[5] = {3, 9, 1, 11, 7};
    model_kv a = {kp, ta, 3}, b = {kp, tbl, 5};
    // A prefills 40 tokens in chunks of 8; B computes only what follows the shared prefix.
    free(pg_run(&f, &a, f.toks, 0, 40, 8));
    size_t bb = model_kv_block_bytes(f.m, &f.sh);
    void *before = malloc(2 * bb);
    memcpy(before, model_kvpool_block(kp, 3), bb);
    memcpy((char *)before + bb, model_kvpool_block(kp, 9), bb);
    float *got = pg_run(&f, &b, tb, 32, PG_LEN, 1);
    // The shared blocks are as A left them: B wrote only its own positions.
    ck_assert(memcmp(before, model_kvpool_block(kp, 3), bb) == 0);
    ck_assert(memcmp((char *)before + bb, model_kvpool_block(kp, 9), bb) == 0);
    // From scratch, with the prefix in the same chunks as A's.
    model_kv *fresh = NULL;
    ck_assert_int_eq(model_kv_new(f.m, &f.sh, PG_LEN, &fresh), LLM_OK);
    free(pg_run(&f, fresh, tb, 0, 32, 8));
    float *want = pg_run(&f, fresh, tb, 32, PG_LEN, 1);
    pg_assert_same(&f, got, want, 32, PG_LEN);
    free(got);
    free(want);
    free(before);
    model_kv_free(fresh);
    model_kvpool_free(kp);
    pg_close(&f);
}
END_TEST

START_TEST(test_blocks_copied_as_bytes_continue_the_sequence)
{
    pg_fixture f;
    pg_open(&f, LLM_DTYPE_Q4_0);
    model_kvpool *src = NULL, *dst = NULL;
    ck_assert_int_eq(model_kvpool_new(f.m, &f.sh, 5, &src), LLM_OK);
    ck_assert_int_eq(model_kvpool_new(f.m, &f.sh, 7, &dst), LLM_OK);
    ck_assert_int_eq(model_kvpool_n_blocks(dst), 7);
    size_t bb = model_kv_block_bytes(f.m, &f.sh);
    // [K, V][2 layers][16 rows][2 KV heads * 16] halves, one range per block.
    ck_assert_uint_eq(bb, sizeof(kern_half) * 2 * 2 * MODEL_KV_BLOCK * 32);
    ck_assert_uint_eq(
        (size_t)((char *)model_kvpool_block(src, 1) - (char *)model_kvpool_block(src, 0)), bb);
    ck_assert_ptr_null(model_kvpool_block(src, 5));
    ck_assert_ptr_null(model_kvpool_block(src, -1));
    const int32_t ts[5] = {0, 1, 2, 3, 4}, td[5] = {6, 0, 5, 2, 3};
    model_kv a = {src, ts, 5}, b = {dst, td, 5};
    free(pg_run(&f, &a, f.toks, 0, 40, 8));
    // Copy the two full blocks and the partial third one, then both continue.
    for (int i = 0; i < 3; i++)
        memcpy(model_kvpool_block(dst, td[i]), model_kvpool_block(src, ts[i]), bb);
    float *x = pg_run(&f, &a, f.toks, 40, PG_LEN, 1);
    float *y = pg_run(&f, &b, f.toks, 40, PG_LEN, 1);
    pg_assert_same(&f, x, y, 40, PG_LEN);
    free(x);
    free(y);
    model_kvpool_free(src);
    model_kvpool_free(dst);
    pg_close(&f);
}
END_TEST

/* Runs the history of three sequences, then one step mixing a 7-token prefill chunk of
 * sequence 0 (across the block edge at 16) with decode tokens of 1 and 2 (2 starting its
 * third block); the step's three logit rows go to out[3][V]. */
static void
pg_mixed_step(pg_fixture *f, model_kv *const views[3], float *out)
{
    static const int hist[3] = {12, 20, 32};
    for (int i = 0; i < 3; i++)
        free(pg_run(f, views[i], f->toks + 3 * i, 0, hist[i], 8));
    int32_t tk[9], pos[9];
    model_kv *kvs[9];
    bool want[9];
    for (int t = 0; t < 7; t++) {
        tk[t] = f->toks[12 + t];
        pos[t] = 12 + t;
        kvs[t] = views[0];
        want[t] = t == 6;
    }
    for (int i = 1; i < 3; i++) {
        tk[6 + i] = f->toks[3 * i + hist[i]];
        pos[6 + i] = hist[i];
        kvs[6 + i] = views[i];
        want[6 + i] = true;
    }
    model_batch b = {9, tk, pos, kvs, want, out};
    ck_assert_int_eq(model_forward_batch(f->m, f->s, &b, f->p, NULL, NULL), LLM_OK);
}

START_TEST(test_batch_of_paged_sequences_equals_each_alone)
{
    pg_fixture f;
    pg_open(&f, LLM_DTYPE_Q4_1);
    int V = f.V;
    model_kvpool *kp = NULL;
    ck_assert_int_eq(model_kvpool_new(f.m, &f.sh, 16, &kp), LLM_OK);
    // The same three sequences through two different interleavings of one pool.
    const int32_t t1[3][3] = {{5, 0, 11}, {2, 9, 14}, {7, 3, 12}};
    const int32_t t2[3][3] = {{15, 1, 4}, {10, 6, 13}, {8, 0, 2}};
    model_kv v1[3], v2[3];
    model_kv *p1[3], *p2[3];
    for (int i = 0; i < 3; i++) {
        v1[i] = (model_kv){kp, t1[i], 3};
        v2[i] = (model_kv){kp, t2[i], 3};
        p1[i] = &v1[i];
        p2[i] = &v2[i];
    }
    float *g1 = malloc(sizeof(float) * 3 * V), *g2 = malloc(sizeof(float) * 3 * V);
    pg_mixed_step(&f, p1, g1);
    pg_mixed_step(&f, p2, g2);
    ck_assert(memcmp(g1, g2, sizeof(float) * 3 * V) == 0);
    // Each alone, through its own identity cache, in the same history chunks: bitwise the
    // same, since the matmul kernels compute every output in one order whatever the
    // number of tokens in the step (batch invariance) and attention is per token.
    static const int hist[3] = {12, 20, 32}, alone_step[3] = {7, 1, 1};
    for (int i = 0; i < 3; i++) {
        model_kv *kv = NULL;
        ck_assert_int_eq(model_kv_new(f.m, &f.sh, 48, &kv), LLM_OK);
        free(pg_run(&f, kv, f.toks + 3 * i, 0, hist[i], 8));
        int n = hist[i] + alone_step[i];
        float *want = pg_run(&f, kv, f.toks + 3 * i, hist[i], n, alone_step[i]);
        const float *w = want + (size_t)(n - 1) * V;
        ck_assert_msg(memcmp(g1 + i * V, w, sizeof(float) * V) == 0,
                      "seq %d: batched logits differ from its run alone", i);
        free(want);
        model_kv_free(kv);
    }
    free(g1);
    free(g2);
    model_kvpool_free(kp);
    pg_close(&f);
}
END_TEST

START_TEST(test_bad_views_are_refused)
{
    pg_fixture f;
    pg_open(&f, LLM_DTYPE_F16);
    model_kvpool *kp = NULL, *other = NULL;
    ck_assert_int_eq(model_kvpool_new(f.m, &f.sh, 0, &kp), LLM_EINVAL);
    model_shard bad_shard = {1, 1, 0, 128};
    ck_assert_int_eq(model_kvpool_new(f.m, &bad_shard, 4, &kp), LLM_EINVAL);
    ck_assert_uint_eq(model_kv_block_bytes(f.m, &bad_shard), 0);
    ck_assert_int_eq(model_kvpool_new(f.m, &f.sh, 4, &kp), LLM_OK);
    model_shard half = {0, 1, 0, 64};
    ck_assert_int_eq(model_kvpool_new(f.m, &half, 4, &other), LLM_OK);
    model_state *s = f.s;
    int32_t tk[1] = {f.toks[0]};
    int32_t pos[1] = {0};
    model_kv view = {kp, (const int32_t[2]){3, 1}, 2};
    model_kv *kvs[1] = {&view};
    model_batch b = {1, tk, pos, kvs, NULL, NULL};
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_OK);
    pos[0] = 31; // the last position of the capacity
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_OK);
    pos[0] = 32;
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_ERANGE);
    pos[0] = -1;
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_ERANGE);
    pos[0] = 5;
    view.pool = NULL;
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_EINVAL);
    view.pool = other; // blocks of another shard's width
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_EINVAL);
    view.pool = kp;
    view.blocks = NULL;
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_EINVAL);
    view.n_blocks = -1;
    view.blocks = (const int32_t[2]){3, 1};
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_EINVAL);
    view.n_blocks = 0;
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_ERANGE);
    // Block ids are checked for every position a token reads, 0 .. pos, and only those.
    view.n_blocks = 2;
    view.blocks = (const int32_t[2]){1, 4};
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_OK);
    pos[0] = 16;
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_EINVAL);
    view.blocks = (const int32_t[2]){-1, 2};
    ck_assert_int_eq(model_forward_batch(f.m, s, &b, f.p, NULL, NULL), LLM_EINVAL);
    // A refused step writes nothing, even for the valid tokens before the bad one.
    size_t bb = model_kv_block_bytes(f.m, &f.sh);
    void *before = malloc(bb);
    memcpy(before, model_kvpool_block(kp, 2), bb);
    model_kv good = {kp, (const int32_t[1]){2}, 1}, bad = {kp, (const int32_t[1]){7}, 1};
    int32_t tk2[2] = {f.toks[1], f.toks[2]}, pos2[2] = {3, 3};
    model_kv *kvs2[2] = {&good, &bad};
    model_batch b2 = {2, tk2, pos2, kvs2, NULL, NULL};
    ck_assert_int_eq(model_forward_batch(f.m, s, &b2, f.p, NULL, NULL), LLM_EINVAL);
    ck_assert(memcmp(before, model_kvpool_block(kp, 2), bb) == 0);
    free(before);
    model_kvpool_free(other);
    model_kvpool_free(kp);
    model_kvpool_free(NULL);
    model_kv_free(NULL);
    pg_close(&f);
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
    tcase_add_test(tc, test_a_long_step_equals_short_steps);
    tcase_add_test(tc, test_one_token_steps_on_more_threads_are_bitwise_the_same);
    tcase_add_test(tc, test_kv_type_float16_by_default_float32_on_request);
    tcase_add_test(tc, test_two_shards_with_allreduce_equal_the_whole_model);
    tcase_add_test(tc, test_batch_of_sequences_equals_separate_runs);
    tcase_add_test(tc, test_forward_refuses_bad_calls);
    tcase_add_test(tc, test_generation_respects_max_tokens_and_context);
    tcase_add_test(tc, test_load_names_what_is_wrong);
    suite_add_tcase(s, tc);
    TCase *pg = tcase_create("paged");
    tcase_set_timeout(pg, 60);
    tcase_add_test(pg, test_scrambled_block_table_gives_bitwise_the_identity_cache_logits);
    tcase_add_test(pg, test_shared_prefix_blocks_give_the_logits_of_a_fresh_run);
    tcase_add_test(pg, test_blocks_copied_as_bytes_continue_the_sequence);
    tcase_add_test(pg, test_batch_of_paged_sequences_equals_each_alone);
    tcase_add_test(pg, test_bad_views_are_refused);
    suite_add_tcase(s, pg);
    return s;
}
