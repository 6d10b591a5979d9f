/*
 * engine.c - the model engine and the synthetic engine behind engine.h.
 */
#define _DEFAULT_SOURCE // usleep

#include "engine.h"

#include "hash.h"
#include "llm_err.h"
#include "log.h"
#include "pool.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- model engine ------------------------------------------------------------------- */

typedef struct {
    engine e;
    model *m;
    model_state *st;
    pool *p;
} model_engine;

/* The fingerprint covers what makes two files compute different KV: every tensor's
 * name, type and shape, and a sample of its bytes (first and last 4 KiB), plus the
 * hyperparameters. Reading the whole file would take a second per GB at start-up for
 * no gain in practice. */
static uint64_t
model_fingerprint(const model *m)
{
    const gguf_file *f = model_get_gguf(m);
    const model_config *c = model_get_config(m);
    uint64_t h = llm_hash64(c, sizeof(*c), 0x6c6c6d636c757374ull);
    for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        h = llm_hash64(t->name.ptr, (size_t)t->name.len, h);
        h = llm_hash64(t->ne, sizeof(t->ne), h ^ (uint64_t)t->type);
        size_t n = t->n_bytes < 4096 ? (size_t)t->n_bytes : 4096;
        h = llm_hash64(t->data, n, h);
        h = llm_hash64((const char *)t->data + t->n_bytes - n, n, h);
    }
    return h;
}

static int
model_encode(const engine *e, const char *text, const tok_chat_msg *msgs, size_t n_msgs,
             int32_t **ids, size_t *n_ids, char *err, size_t err_len)
{
    int rc =
        tok_prompt(model_get_vocab(((const model_engine *)e)->m), text, msgs, n_msgs, ids, n_ids);
    if (rc == LLM_ENOTSUP)
        llm_errf(err, err_len, "the model's chat template is not supported");
    return rc;
}

static int
model_token_bytes(const engine *e, int32_t id, char *buf, size_t cap, size_t *len)
{
    return tok_token_bytes(model_get_vocab(((const model_engine *)e)->m), id, false, buf, cap, len);
}

static bool
model_is_eog(const engine *e, int32_t id)
{
    return tok_is_eog(model_get_vocab(((const model_engine *)e)->m), id);
}

static int
model_engine_forward(engine *e, const model_batch *b)
{
    model_engine *me = (model_engine *)e;
    return model_forward_batch(me->m, me->st, b, me->p, NULL, NULL);
}

static void
model_engine_destroy(engine *e)
{
    model_engine *me = (model_engine *)e;
    model_kvpool_free(e->kvpool);
    model_state_free(me->st);
    pool_free(me->p);
    model_free(me->m);
    free(me);
}

int
engine_model_new(const engine_model_opts *o, engine **out, char *err, size_t err_len)
{
    model_engine *me = calloc(1, sizeof(*me));
    if (!me)
        return LLM_ENOMEM;
    model_load_opts lo = {.mlock = o->mlock, .willneed = true, .kv_f32 = o->kv_f32};
    int rc = model_load(o->path, &lo, &me->m, err, err_len);
    if (rc != LLM_OK) {
        free(me);
        return rc;
    }
    model_shard shard = model_full_shard(me->m);
    size_t block_bytes = model_kv_block_bytes(me->m, &shard);
    uint64_t n_blocks = o->kv_memory_bytes / block_bytes;
    if (n_blocks < 1 || n_blocks > INT32_MAX / 2) {
        llm_errf(err, err_len, "kv memory budget of %llu bytes holds %llu blocks of %zu bytes",
                 (unsigned long long)o->kv_memory_bytes, (unsigned long long)n_blocks, block_bytes);
        model_free(me->m);
        free(me);
        return LLM_EINVAL;
    }
    engine *e = &me->e;
    e->kind = "model";
    e->n_blocks = (int)n_blocks;
    e->max_step_tokens = o->max_step_tokens;
    e->n_vocab = model_get_config(me->m)->vocab_size;
    e->ctx_len = model_get_config(me->m)->ctx_len;
    e->fingerprint = model_fingerprint(me->m);
    e->encode = model_encode;
    e->token_bytes = model_token_bytes;
    e->is_eog = model_is_eog;
    e->forward = model_engine_forward;
    e->destroy = model_engine_destroy;
    if ((rc = pool_new(o->threads, &me->p)) != LLM_OK ||
        (rc = model_state_new(me->m, &shard, o->max_step_tokens, o->threads, &me->st)) != LLM_OK ||
        (rc = model_kvpool_new(me->m, &shard, e->n_blocks, &e->kvpool)) != LLM_OK) {
        llm_errf(err, err_len, "cannot allocate the engine (%s)", llm_strerror(rc));
        model_engine_destroy(e);
        return rc;
    }
    e->pool = me->p;
    if (o->pin && pool_pin(me->p) != LLM_OK)
        LOG_WARN("event=pin_failed threads=%d detail=\"the threads run unpinned\"", o->threads);
    LOG_INFO("event=engine_ready kind=model path=%s kv_blocks=%d kv_mb=%.1f step_tokens=%d "
             "fingerprint=%016llx",
             o->path, e->n_blocks, (double)e->n_blocks * (double)block_bytes / 1048576.0,
             e->max_step_tokens, (unsigned long long)e->fingerprint);
    *out = e;
    return LLM_OK;
}

/* ---- synthetic engine --------------------------------------------------------------- */

typedef struct {
    engine e;
    engine_synth_opts o;
} synth_engine;

static int
synth_encode(const engine *e, const char *text, const tok_chat_msg *msgs, size_t n_msgs,
             int32_t **ids, size_t *n_ids, char *err, size_t err_len)
{
    size_t n = 0;
    if (msgs) {
        for (size_t i = 0; i < n_msgs; i++)
            n += strlen(msgs[i].role) + 2 + strlen(msgs[i].content) + 1;
    } else {
        n = strlen(text);
    }
    int32_t *out = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!out)
        return LLM_ENOMEM;
    size_t k = 0;
    if (msgs) {
        for (size_t i = 0; i < n_msgs; i++) {
            for (const char *s = msgs[i].role; *s; s++)
                out[k++] = (unsigned char)*s;
            out[k++] = ':';
            out[k++] = ' ';
            for (const char *s = msgs[i].content; *s; s++)
                out[k++] = (unsigned char)*s;
            out[k++] = '\n';
        }
    } else {
        for (size_t i = 0; i < n; i++)
            out[k++] = (unsigned char)text[i];
    }
    *ids = out;
    *n_ids = k;
    return LLM_OK;
}

static int
synth_token_bytes(const engine *e, int32_t id, char *buf, size_t cap, size_t *len)
{
    if (id < 0 || id > SYNTH_EOG)
        return LLM_EINVAL;
    *len = id == SYNTH_EOG ? 0 : 1;
    if (cap < *len)
        return LLM_ERANGE;
    if (*len)
        buf[0] = (char)id;
    return LLM_OK;
}

static bool
synth_is_eog(const engine *e, int32_t id)
{
    return id == SYNTH_EOG;
}

static void
sleep_us(long us)
{
    if (us <= 0)
        return;
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int
synth_forward(engine *e, const model_batch *b)
{
    synth_engine *se = (synth_engine *)e;
    int n_logits = 0, n_prefill = 0;
    for (int i = 0; i < b->n_tok; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= e->n_vocab || b->pos[i] < 0 ||
            b->pos[i] >= e->ctx_len)
            return LLM_EINVAL;
        bool want = b->want_logits && b->want_logits[i];
        if (!want) {
            n_prefill++;
            continue;
        }
        // Next token: a letter picked by (position, input token); one-hot logits so the
        // real sampler (greedy or seeded) picks it.
        uint64_t key[2] = {(uint64_t)b->pos[i] + 1, (uint64_t)b->tokens[i]};
        int32_t next = 'a' + (int32_t)(llm_hash64(key, sizeof(key), 0x73796e74) % 26);
        float *lg = b->logits + (size_t)n_logits++ * (size_t)e->n_vocab;
        memset(lg, 0, sizeof(float) * (size_t)e->n_vocab);
        lg[next] = 30.0f;
    }
    sleep_us((long)se->o.step_delay_us + (long)se->o.prefill_us_per_tok * n_prefill);
    return LLM_OK;
}

static void
synth_destroy(engine *e)
{
    free(e);
}

int
engine_synthetic_new(const engine_synth_opts *o, engine **out, char *err, size_t err_len)
{
    if (o->ctx_len < 1 || o->n_blocks < 1 || o->max_step_tokens < 1 || o->step_delay_us < 0 ||
        o->prefill_us_per_tok < 0) {
        llm_errf(err, err_len,
                 "synthetic engine: context, blocks and step tokens must be "
                 "positive and delays non-negative");
        return LLM_EINVAL;
    }
    synth_engine *se = calloc(1, sizeof(*se));
    if (!se)
        return LLM_ENOMEM;
    se->o = *o;
    engine *e = &se->e;
    e->kind = "synthetic";
    e->n_vocab = SYNTH_EOG + 1;
    e->ctx_len = o->ctx_len;
    e->max_step_tokens = o->max_step_tokens;
    e->n_blocks = o->n_blocks;
    e->fingerprint = 0x73796e7468657469ull; // "synthetic": one fixed vocabulary and "model"
    e->encode = synth_encode;
    e->token_bytes = synth_token_bytes;
    e->is_eog = synth_is_eog;
    e->forward = synth_forward;
    e->destroy = synth_destroy;
    *out = e;
    return LLM_OK;
}

void
engine_free(engine *e)
{
    if (e)
        e->destroy(e);
}
