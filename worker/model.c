/*
 * model.c - llama forward pass over GGUF weights.
 *
 * One step processes n_tok tokens of one sequence. Per layer it issues four parallel
 * jobs (QKV projection, attention, output projection, FFN gate/up + SwiGLU), with the
 * FFN down projection folded into a fifth; norms and residual adds are cheap and run on
 * the calling thread between jobs. Matrix jobs split weight rows across threads and
 * read each row once for all tokens of the step; Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K matrices
 * are packed at load (kern_pack) unless $LLM_ACT=f32.
 *
 * The KV cache is paged: a pool of blocks of MODEL_KV_BLOCK positions, each block one
 * contiguous [K, V][layer][row][kv_dim] range of float16 (or, with kv_f32, float32)
 * elements, and per sequence a table of block ids.
 * Attention walks the table block by block. Its arithmetic is chunked by logical block
 * (positions 16i .. 16i + 15), never by storage, so where the blocks lie changes only
 * addresses: a sequence gives bitwise the same logits through any table.
 */
#define _DEFAULT_SOURCE // madvise(MADV_HUGEPAGE)
#include "model.h"

#include "llm_err.h"
#include "log.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MODEL_MAX_LAYERS 1024
#define MODEL_MAX_DIM 65536
#define ATT_TILE 4 // tokens of one sequence whose queries share each K/V block read

struct model {
    gguf_file *gguf;
    model_config cfg;
    model_weights w;
    float *norms; // owned F32 copies of all norm vectors (any stored type)
    void *packed; // the packed copies of the matrices that have one (kern_pack)
    bool kv_f16;  // caches hold float16 (the default) rather than float32
    tok_vocab *vocab;
};

struct model_kvpool {
    int n_blocks;
    int n_layers;
    int kv_head0, kv_head1; // the shard's KV heads, which fix what a block holds
    int kv_dim;             // local KV heads * head_dim
    bool f16;               // elements are kern_half, else float
    size_t elem;            // bytes per element: 2 or 4
    size_t block_elems;     // 2 * v_off
    size_t v_off;           // n_layers * MODEL_KV_BLOCK * kv_dim: V after K in a block
    char *data;             // [n_blocks][2][n_layers][MODEL_KV_BLOCK][kv_dim] elements
    size_t bytes;           // of the mapping that holds data
};

/* What model_kv_new makes: the public view first, so model_kv_free can convert back. */
typedef struct {
    model_kv kv;
    int32_t *table; // [n_blocks] the identity 0 .. n_blocks - 1
} kv_private;

struct model_state {
    model_shard shard;
    int max_tokens;
    int n_threads;
    float *x;          // [max_tokens][dim] residual stream
    float *xb;         // [max_tokens][dim] normed input of a block
    float *q;          // [max_tokens][q_dim_local]
    float *k;          // [max_tokens][kv_dim_local]
    float *v;          // [max_tokens][kv_dim_local]
    float *att_out;    // [max_tokens][q_dim_local]
    float *proj;       // [max_tokens][dim] output of wo / w_down (partial on a TP rank)
    float *rope;       // [max_tokens][head_dim] cos/sin of each position's RoPE angles
    int32_t *one_pos;  // [max_tokens] model_forward's batch: positions,
    model_kv **one_kv; // [max_tokens] the one cache,
    bool *one_want;    // [max_tokens] and logits for the last token only
    int *tile0;        // [max_tokens + 1] first token of each attention tile (att_run)
    float *hb;         // [max_tokens][ffn_local] gate, then SwiGLU output
    float *hb2;        // [max_tokens][ffn_local] up
    float *scratch;    // [n_threads][scratch_len] decoded weight rows and the quantized
                       // input from act_off, or an attention tile's scores
    size_t scratch_len, act_off;
    pool_split *split; // a matmul job's row chunks among the threads
};

// --- loading -------------------------------------------------------------------------

typedef struct {
    const gguf_file *f;
    const char *arch;
    char *err;
    size_t err_len;
    int rc;
} loader;

static uint32_t
hparam(loader *ld, const char *name, bool required, uint32_t def, uint32_t lo, uint32_t hi)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", ld->arch, name);
    uint32_t v = def;
    int rc = gguf_get_u32(ld->f, key, &v);
    if (ld->rc != LLM_OK)
        return def;
    if (rc == LLM_ENOENT && !required)
        return def;
    if (rc == LLM_ENOENT) {
        ld->rc = LLM_EINVAL;
        llm_errf(ld->err, ld->err_len, "missing hyperparameter '%s'", key);
    } else if (rc != LLM_OK || v < lo || v > hi) {
        ld->rc = LLM_EINVAL;
        llm_errf(ld->err, ld->err_len, "hyperparameter '%s' must be an integer in [%u, %u]", key,
                 lo, hi);
    }
    return v;
}

static float
hparam_f(loader *ld, const char *name, float def, float lo, float hi)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", ld->arch, name);
    float v = def;
    int rc = gguf_get_f32(ld->f, key, &v);
    if (ld->rc != LLM_OK || rc == LLM_ENOENT)
        return def;
    if (rc != LLM_OK || !(v >= lo && v <= hi)) {
        ld->rc = LLM_EINVAL;
        llm_errf(ld->err, ld->err_len, "hyperparameter '%s' must be a float in [%g, %g]", key,
                 (double)lo, (double)hi);
    }
    return v;
}

/* get_mat finds name and checks it is a 2-D [rows][cols] matrix (GGUF ne = {cols, rows}). */
static void
get_mat(loader *ld, const char *name, int64_t cols, int64_t rows, kern_mat *out)
{
    if (ld->rc != LLM_OK)
        return;
    const gguf_tensor *t = gguf_find_tensor(ld->f, name);
    if (!t) {
        ld->rc = LLM_EINVAL;
        llm_errf(ld->err, ld->err_len, "missing tensor '%s'", name);
        return;
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1) {
        ld->rc = LLM_EINVAL;
        llm_errf(ld->err, ld->err_len,
                 "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
                 (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                 (long long)cols, (long long)rows);
        return;
    }
    out->type = t->type;
    out->data = t->data;
    out->n_cols = cols;
    out->n_rows = rows;
    out->row_bytes = kern_row_size(t->type, cols);
}

/* get_norm decodes a [dim] vector of any supported type into dst. */
static const float *
get_norm(loader *ld, const char *name, int dim, float *dst)
{
    kern_mat m = {0};
    if (ld->rc != LLM_OK)
        return dst;
    const gguf_tensor *t = gguf_find_tensor(ld->f, name);
    if (t && t->n_dims == 1 && t->ne[0] == dim) {
        m.type = t->type;
        m.data = t->data;
        m.n_cols = dim;
        m.n_rows = 1;
        m.row_bytes = kern_row_size(t->type, dim);
        kern_get_row(&m, 0, dst);
    } else {
        ld->rc = LLM_EINVAL;
        llm_errf(ld->err, ld->err_len,
                 t ? "tensor '%s' must be a vector of %d" : "missing tensor '%s'", name, dim);
    }
    return dst;
}

static void
load_config(loader *ld, model_config *c)
{
    c->n_layers = (int)hparam(ld, "block_count", true, 0, 1, MODEL_MAX_LAYERS);
    c->dim = (int)hparam(ld, "embedding_length", true, 0, 1, MODEL_MAX_DIM);
    c->hidden_dim = (int)hparam(ld, "feed_forward_length", true, 0, 1, 8 * MODEL_MAX_DIM);
    c->n_heads = (int)hparam(ld, "attention.head_count", true, 0, 1, 4096);
    c->n_kv_heads =
        (int)hparam(ld, "attention.head_count_kv", false, (uint32_t)c->n_heads, 1, 4096);
    c->ctx_len = (int)hparam(ld, "context_length", false, 2048, 1, 1u << 24);
    c->rope_theta = hparam_f(ld, "rope.freq_base", 10000.0f, 1.0f, 1e12f);
    c->norm_eps = hparam_f(ld, "attention.layer_norm_rms_epsilon", 1e-5f, 0.0f, 1.0f);
    if (ld->rc != LLM_OK)
        return;
    if (c->dim % c->n_heads != 0 || c->n_heads % c->n_kv_heads != 0 ||
        (c->dim / c->n_heads) % 2 != 0) {
        ld->rc = LLM_EINVAL;
        llm_errf(ld->err, ld->err_len,
                 "inconsistent heads: dim %d, %d heads, %d KV heads (need dim %% heads == 0, "
                 "heads %% kv_heads == 0, even head size)",
                 c->dim, c->n_heads, c->n_kv_heads);
        return;
    }
    c->head_dim = c->dim / c->n_heads;
    uint32_t rope_dim =
        hparam(ld, "rope.dimension_count", false, (uint32_t)c->head_dim, 1, MODEL_MAX_DIM);
    if (ld->rc == LLM_OK && (int)rope_dim != c->head_dim) {
        ld->rc = LLM_ENOTSUP;
        llm_errf(ld->err, ld->err_len, "partial rotary embedding (%u of %d) is not supported",
                 rope_dim, c->head_dim);
    }
}

static void
load_weights(loader *ld, model *m)
{
    const model_config *c = &m->cfg;
    model_weights *w = &m->w;
    const gguf_tensor *emb = gguf_find_tensor(ld->f, "token_embd.weight");
    if (!emb || emb->n_dims != 2 || emb->ne[0] != c->dim || emb->ne[1] > (1 << 24)) {
        ld->rc = LLM_EINVAL;
        llm_errf(ld->err, ld->err_len,
                 emb ? "tensor 'token_embd.weight' must be [%d, vocab]"
                     : "missing tensor 'token_embd.weight'",
                 c->dim);
        return;
    }
    m->cfg.vocab_size = (int)emb->ne[1];
    get_mat(ld, "token_embd.weight", c->dim, c->vocab_size, &w->tok_embd);
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    m->norms = malloc(sizeof(float) * (size_t)c->dim * (2 * (size_t)c->n_layers + 1));
    w->layers = calloc((size_t)c->n_layers, sizeof(model_layer));
    if (!m->norms || !w->layers) {
        ld->rc = LLM_ENOMEM;
        llm_errf(ld->err, ld->err_len, "out of memory");
        return;
    }
    char name[96];
    for (int l = 0; l < c->n_layers && ld->rc == LLM_OK; l++) {
        model_layer *L = &w->layers[l];
        float *norms = m->norms + (size_t)2 * l * c->dim;
#define LAYER_TENSOR(suffix) (snprintf(name, sizeof(name), "blk.%d.%s.weight", l, suffix), name)
        L->attn_norm = get_norm(ld, LAYER_TENSOR("attn_norm"), c->dim, norms);
        L->ffn_norm = get_norm(ld, LAYER_TENSOR("ffn_norm"), c->dim, norms + c->dim);
        get_mat(ld, LAYER_TENSOR("attn_q"), c->dim, q_dim, &L->wq);
        get_mat(ld, LAYER_TENSOR("attn_k"), c->dim, kv_dim, &L->wk);
        get_mat(ld, LAYER_TENSOR("attn_v"), c->dim, kv_dim, &L->wv);
        get_mat(ld, LAYER_TENSOR("attn_output"), q_dim, c->dim, &L->wo);
        get_mat(ld, LAYER_TENSOR("ffn_gate"), c->dim, c->hidden_dim, &L->w_gate);
        get_mat(ld, LAYER_TENSOR("ffn_up"), c->dim, c->hidden_dim, &L->w_up);
        get_mat(ld, LAYER_TENSOR("ffn_down"), c->hidden_dim, c->dim, &L->w_down);
#undef LAYER_TENSOR
    }
    w->out_norm =
        get_norm(ld, "output_norm.weight", c->dim, m->norms + (size_t)2 * c->n_layers * c->dim);
    if (gguf_find_tensor(ld->f, "output.weight"))
        get_mat(ld, "output.weight", c->dim, c->vocab_size, &w->output);
    else
        w->output = w->tok_embd; // tied embeddings
}

/* pack_weights gives every matrix kern_pack supports its packed copy (one allocation
 * for all; the bytes are the original's, permuted), then drops the mapped pages it
 * read, so resident memory stays the size of the model. Tied embeddings are packed
 * once. */
#define HUGE_PAGE ((size_t)2 << 20)

static int
pack_weights(model *m, char *err, size_t err_len)
{
    model_weights *w = &m->w;
    int n_layers = m->cfg.n_layers, n = 0;
    bool tied = w->output.data == w->tok_embd.data;
    kern_mat **mats = malloc(sizeof(*mats) * (7 * (size_t)n_layers + 2));
    if (!mats) {
        llm_errf(err, err_len, "out of memory");
        return LLM_ENOMEM;
    }
    mats[n++] = &w->tok_embd;
    if (!tied)
        mats[n++] = &w->output;
    for (int l = 0; l < n_layers; l++) {
        model_layer *L = &w->layers[l];
        kern_mat *layer[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++)
            mats[n++] = layer[i];
    }
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (kern_pack_supported(mats[i]->type, mats[i]->n_rows, mats[i]->n_cols))
            total +=
                (kern_pack_bytes(mats[i]->type, mats[i]->n_rows, mats[i]->n_cols) + 63) / 64 * 64;
    // In 2 MiB pages where the kernel allows it: decode streams every weight once per
    // token, and with 4 KiB pages that is a TLB miss (a page walk) every 4 KiB.
    total = (total + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (total > 0 && posix_memalign(&m->packed, HUGE_PAGE, total) != 0) {
        m->packed = NULL;
        free(mats);
        llm_errf(err, err_len, "out of memory packing %zu bytes of weights", total);
        return LLM_ENOMEM;
    }
    if (total > 0)
        madvise(m->packed, total, MADV_HUGEPAGE); // advice: a failure only costs speed
    char *dst = m->packed;
    for (int i = 0; i < n; i++) {
        kern_mat *mt = mats[i];
        if (!kern_pack_supported(mt->type, mt->n_rows, mt->n_cols))
            continue;
        size_t bytes = kern_pack_bytes(mt->type, mt->n_rows, mt->n_cols);
        kern_mat src = *mt;
        kern_pack(&src, dst, mt);
        gguf_release(m->gguf, src.data, bytes);
        dst += (bytes + 63) / 64 * 64;
    }
    if (tied)
        w->output = w->tok_embd;
    free(mats);
    return LLM_OK;
}

int
model_load(const char *path, const model_load_opts *opts, model **out, char *err, size_t err_len)
{
    model *m = calloc(1, sizeof(*m));
    if (!m) {
        llm_errf(err, err_len, "out of memory");
        return LLM_ENOMEM;
    }
    gguf_open_opts gopts = {.mlock = opts && opts->mlock, .willneed = opts && opts->willneed};
    m->kv_f16 = !(opts && opts->kv_f32);
    int rc = gguf_open(path, &gopts, &m->gguf, err, err_len);
    if (rc != LLM_OK)
        goto fail;
    loader ld = {.f = m->gguf, .err = err, .err_len = err_len, .rc = LLM_OK};
    gguf_str arch;
    rc = gguf_get_str(m->gguf, "general.architecture", &arch);
    if (rc != LLM_OK) {
        rc = LLM_EINVAL;
        llm_errf(err, err_len, "missing or malformed 'general.architecture'");
        goto fail;
    }
    if (!gguf_str_eq(arch, "llama")) {
        rc = LLM_ENOTSUP;
        llm_errf(err, err_len, "architecture '%.*s' is not supported (llama is)",
                 (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
        goto fail;
    }
    ld.arch = "llama";
    load_config(&ld, &m->cfg);
    if (ld.rc == LLM_OK)
        load_weights(&ld, m);
    if ((rc = ld.rc) != LLM_OK)
        goto fail;
    const char *act = getenv("LLM_ACT");
    if (act && strcmp(act, "f32") != 0 && strcmp(act, "i16") != 0)
        LOG_WARN("event=unknown_llm_act value=\"%.32s\" using=i16 known=\"f32|i16\"", act);
    if (kern_pack_wanted() && (rc = pack_weights(m, err, err_len)) != LLM_OK)
        goto fail;
    if ((rc = tok_vocab_load(m->gguf, &m->vocab, err, err_len)) != LLM_OK)
        goto fail;
    if (tok_n_vocab(m->vocab) > m->cfg.vocab_size) {
        rc = LLM_EINVAL;
        llm_errf(err, err_len, "tokenizer has %d tokens but token_embd.weight has %d rows",
                 tok_n_vocab(m->vocab), m->cfg.vocab_size);
        goto fail;
    }
    *out = m;
    return LLM_OK;
fail:
    model_free(m);
    return rc;
}

void
model_free(model *m)
{
    if (!m)
        return;
    tok_vocab_free(m->vocab);
    free(m->w.layers);
    free(m->norms);
    free(m->packed);
    gguf_close(m->gguf);
    free(m);
}

const model_config *
model_get_config(const model *m)
{
    return &m->cfg;
}

const model_weights *
model_get_weights(const model *m)
{
    return &m->w;
}

const tok_vocab *
model_get_vocab(const model *m)
{
    return m->vocab;
}

const gguf_file *
model_get_gguf(const model *m)
{
    return m->gguf;
}

model_shard
model_full_shard(const model *m)
{
    model_shard s = {0, m->cfg.n_kv_heads, 0, m->cfg.hidden_dim};
    return s;
}

uint64_t
model_weight_bytes(const model *m)
{
    const model_config *c = &m->cfg;
    uint64_t total = m->w.tok_embd.row_bytes + m->w.output.row_bytes * (uint64_t)c->vocab_size;
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer *L = &m->w.layers[l];
        const kern_mat *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof(mats) / sizeof(mats[0]); i++)
            total += mats[i]->row_bytes * (uint64_t)mats[i]->n_rows;
        total += 2 * sizeof(float) * (uint64_t)c->dim;
    }
    return total;
}

// --- state and cache -----------------------------------------------------------------

/* blocks_align: a rank's first input column of w must start a quantization block,
 * since rows are read from there (K-quants: multiples of 256). */
static bool
blocks_align(const kern_mat *w, int64_t col0)
{
    return col0 % kern_type((int)w->type)->blck == 0;
}

static bool
shard_valid(const model *m, const model_shard *s)
{
    const model_config *c = &m->cfg;
    if (!(s->kv_head0 >= 0 && s->kv_head0 < s->kv_head1 && s->kv_head1 <= c->n_kv_heads &&
          s->ffn0 >= 0 && s->ffn0 < s->ffn1 && s->ffn1 <= c->hidden_dim))
        return false;
    int64_t q_col0 = (int64_t)s->kv_head0 * (c->n_heads / c->n_kv_heads) * c->head_dim;
    for (int l = 0; l < c->n_layers; l++)
        if (!blocks_align(&m->w.layers[l].wo, q_col0) ||
            !blocks_align(&m->w.layers[l].w_down, s->ffn0))
            return false;
    return true;
}

static int
kv_dim_of(const model *m, const model_shard *shard)
{
    return (shard->kv_head1 - shard->kv_head0) * m->cfg.head_dim;
}

size_t
model_kv_block_bytes(const model *m, const model_shard *shard)
{
    if (!shard_valid(m, shard))
        return 0;
    return (m->kv_f16 ? sizeof(kern_half) : sizeof(float)) * 2 * (size_t)m->cfg.n_layers *
           MODEL_KV_BLOCK * (size_t)kv_dim_of(m, shard);
}

int
model_kvpool_new(const model *m, const model_shard *shard, int n_blocks, model_kvpool **out)
{
    if (n_blocks < 1 || !shard_valid(m, shard))
        return LLM_EINVAL;
    model_kvpool *p = calloc(1, sizeof(*p));
    if (!p)
        return LLM_ENOMEM;
    p->n_blocks = n_blocks;
    p->n_layers = m->cfg.n_layers;
    p->kv_head0 = shard->kv_head0;
    p->kv_head1 = shard->kv_head1;
    p->kv_dim = kv_dim_of(m, shard);
    p->f16 = m->kv_f16;
    p->elem = p->f16 ? sizeof(kern_half) : sizeof(float);
    p->v_off = (size_t)p->n_layers * MODEL_KV_BLOCK * (size_t)p->kv_dim;
    p->block_elems = 2 * p->v_off;
    // An anonymous mapping: a block copied out before it is full holds zeros past its
    // last row rather than stale bytes, and pages no sequence has touched yet cost no
    // memory. In 2 MiB pages where the kernel allows it: attention reads each layer's
    // slice of every block, a TLB miss per block and layer with 4 KiB pages.
    p->bytes = (size_t)n_blocks * p->elem * p->block_elems;
    void *map = mmap(NULL, p->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        model_kvpool_free(p);
        return LLM_ENOMEM;
    }
    p->data = map;
    madvise(map, p->bytes, MADV_HUGEPAGE); // advice: a failure only costs speed
    *out = p;
    return LLM_OK;
}

void
model_kvpool_free(model_kvpool *p)
{
    if (!p)
        return;
    if (p->data)
        munmap(p->data, p->bytes);
    free(p);
}

int
model_kvpool_n_blocks(const model_kvpool *p)
{
    assert(p);
    return p->n_blocks;
}

void *
model_kvpool_block(model_kvpool *p, int32_t block)
{
    assert(p);
    if (block < 0 || block >= p->n_blocks)
        return NULL;
    return p->data + (size_t)block * p->block_elems * p->elem;
}

/* Layer l's keys in block b, as bytes: transposed, element e (head * head_dim + d) of
 * the key at position p of the block at e * MODEL_KV_BLOCK + p, so that attention reads
 * each element of the block's 16 keys as one vector (kern_attn_scores). Its values are
 * p->v_off elements on, a row per position. */
_Static_assert(MODEL_KV_BLOCK == KERN_KV_BLOCK, "the attention kernels' block is the cache's");

static inline char *
block_keys(const model_kvpool *p, int32_t b, int l)
{
    return p->data +
           ((size_t)b * p->block_elems + (size_t)l * MODEL_KV_BLOCK * (size_t)p->kv_dim) * p->elem;
}

int
model_kv_new(const model *m, const model_shard *shard, int n_ctx, model_kv **out)
{
    if (n_ctx < 1)
        return LLM_EINVAL;
    int n_blocks = (int)(((int64_t)n_ctx + MODEL_KV_BLOCK - 1) / MODEL_KV_BLOCK);
    kv_private *kp = calloc(1, sizeof(*kp));
    if (!kp)
        return LLM_ENOMEM;
    int rc = model_kvpool_new(m, shard, n_blocks, &kp->kv.pool);
    if (rc == LLM_OK && !(kp->table = malloc(sizeof(int32_t) * (size_t)n_blocks)))
        rc = LLM_ENOMEM;
    if (rc != LLM_OK) {
        model_kv_free(&kp->kv);
        return rc;
    }
    for (int i = 0; i < n_blocks; i++)
        kp->table[i] = i;
    kp->kv.blocks = kp->table;
    kp->kv.n_blocks = n_blocks;
    *out = &kp->kv;
    return LLM_OK;
}

void
model_kv_free(model_kv *kv)
{
    if (!kv)
        return;
    kv_private *kp = (kv_private *)kv; // only model_kv_new's caches come here
    model_kvpool_free(kp->kv.pool);
    free(kp->table);
    free(kp);
}

int
model_kv_capacity(const model_kv *kv)
{
    assert(kv);
    int64_t cap = (int64_t)kv->n_blocks * MODEL_KV_BLOCK;
    return cap > INT32_MAX ? INT32_MAX : (int)cap;
}

/* Floats per query in an attention tile's scores: the context in whole KV blocks. */
static size_t
att_row(const model_config *c)
{
    return ((size_t)c->ctx_len + MODEL_KV_BLOCK - 1) / MODEL_KV_BLOCK * MODEL_KV_BLOCK;
}

int
model_state_new(const model *m, const model_shard *shard, int max_tokens, int n_threads,
                model_state **out)
{
    if (max_tokens < 1 || n_threads < 1 || !shard_valid(m, shard))
        return LLM_EINVAL;
    const model_config *c = &m->cfg;
    model_state *s = calloc(1, sizeof(*s));
    if (!s)
        return LLM_ENOMEM;
    s->shard = *shard;
    s->max_tokens = max_tokens;
    s->n_threads = n_threads;
    size_t T = (size_t)max_tokens;
    int n_kv = shard->kv_head1 - shard->kv_head0;
    int q_dim = n_kv * (c->n_heads / c->n_kv_heads) * c->head_dim;
    int kv_dim = n_kv * c->head_dim;
    int ffn = shard->ffn1 - shard->ffn0;
    // Scratch holds the decoded weight rows of a matmul (inputs are at most
    // max(dim, hidden, q_dim) wide) or one head's attention scores (up to the model's
    // context length) of each query of an attention tile.
    int in = c->dim > c->hidden_dim ? c->dim : c->hidden_dim;
    in = in > q_dim ? in : q_dim;
    // A matmul job's thread also holds its quantized input (kern_act) after that.
    s->act_off = (KERN_MATMUL_SCRATCH(in) + 15) / 16 * 16;
    size_t sl = s->act_off + (KERN_ACT_BYTES(in, max_tokens) + sizeof(float) - 1) / sizeof(float);
    size_t att_len = (size_t)ATT_TILE * (c->n_heads / c->n_kv_heads) * att_row(c);
    sl = sl > att_len ? sl : att_len;
    s->scratch_len = (sl + 15) / 16 * 16; // whole cache lines per thread: no false sharing
    s->x = malloc(sizeof(float) * T * (size_t)c->dim);
    s->xb = malloc(sizeof(float) * T * (size_t)c->dim);
    s->q = malloc(sizeof(float) * T * (size_t)q_dim);
    s->k = malloc(sizeof(float) * T * (size_t)kv_dim);
    s->v = malloc(sizeof(float) * T * (size_t)kv_dim);
    s->att_out = malloc(sizeof(float) * T * (size_t)q_dim);
    s->proj = malloc(sizeof(float) * T * (size_t)c->dim);
    s->rope = malloc(sizeof(float) * T * (size_t)c->head_dim);
    s->one_pos = malloc(sizeof(int32_t) * T);
    s->one_kv = malloc(sizeof(model_kv *) * T);
    s->one_want = malloc(sizeof(bool) * T);
    s->tile0 = malloc(sizeof(int) * (T + 1));
    s->hb = malloc(sizeof(float) * T * (size_t)ffn);
    s->hb2 = malloc(sizeof(float) * T * (size_t)ffn);
    s->scratch = malloc(sizeof(float) * (size_t)n_threads * (size_t)s->scratch_len);
    s->split = pool_split_new(n_threads);
    if (!s->x || !s->xb || !s->q || !s->k || !s->v || !s->att_out || !s->proj || !s->rope ||
        !s->one_pos || !s->one_kv || !s->one_want || !s->tile0 || !s->hb || !s->hb2 ||
        !s->scratch || !s->split) {
        model_state_free(s);
        return LLM_ENOMEM;
    }
    *out = s;
    return LLM_OK;
}

void
model_state_free(model_state *s)
{
    if (!s)
        return;
    free(s->x);
    free(s->xb);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att_out);
    free(s->proj);
    free(s->rope);
    free(s->one_pos);
    free(s->one_kv);
    free(s->one_want);
    free(s->tile0);
    free(s->hb);
    free(s->hb2);
    free(s->scratch);
    pool_split_free(s->split);
    free(s);
}

// --- parallel jobs -------------------------------------------------------------------

#define MM_MAX 3

/* Up to three matrices sharing one input, their rows concatenated. Threads take rows in
 * chunks (pool_split): each its own contiguous run first, in order, so that it streams
 * through its part of the weights (decode reads every weight once per token, and one
 * long run per thread keeps the prefetcher going where one chunk in every nth did not:
 * 233-245 -> 259-275 tok/s), then chunks from the back of the others' runs, so a thread
 * that runs slower (a busy neighbour on its core, the serial work thread 0 does between
 * jobs) does less. A row's value does not depend on who computes it (kern_matmul is
 * split invariant), so the results do not either. Each thread quantizes the input once
 * per job (kern_act) for all its chunks. For the FFN (gate_up_run) a chunk is the same
 * rows of the gate and up matrices, so SwiGLU needs no barrier. */
typedef struct {
    int n;
    const kern_mat *w[MM_MAX];
    int64_t row0[MM_MAX], n_rows[MM_MAX];
    float *y[MM_MAX];
    int64_t y_stride[MM_MAX];
    const float *x;
    int64_t x_stride, col0, n_in;
    int n_tok;
    model_state *s;
    int64_t total, size; // rows in all (gate_up_run: of each matrix), rows per chunk
} mm_job;

/* About 16 chunks per thread, in whole cache lines of outputs (16 floats), at least 32
 * rows (four 8-row groups of a packed matrix). */
static int64_t
chunk_rows(int64_t total, int nth)
{
    int64_t c = (total / (16 * (int64_t)nth) + 15) / 16 * 16;
    return c < 32 ? 32 : c;
}

/* Thread ith's next chunk [*g0, *g1) of the job's rows, or false when none is left. */
static bool
next_chunk(mm_job *j, int ith, int64_t *g0, int64_t *g1)
{
    int64_t c;
    if (!pool_split_next(j->s->split, ith, &c))
        return false;
    *g0 = c * j->size;
    *g1 = *g0 + j->size < j->total ? *g0 + j->size : j->total;
    return true;
}

/* Thread ith's scratch and its quantized copy of the job's input. */
static float *
mm_thread(mm_job *j, int ith, kern_act *a)
{
    float *scratch = j->s->scratch + (size_t)ith * j->s->scratch_len;
    kern_act_init(a, j->x, j->x_stride, j->n_in, j->n_tok, scratch + j->s->act_off);
    return scratch;
}

static void
mm_run(void *ctx, int ith, int nth)
{
    (void)nth;
    mm_job *j = ctx;
    int64_t g0, g1;
    kern_act a;
    float *scratch = mm_thread(j, ith, &a);
    while (next_chunk(j, ith, &g0, &g1)) {
        int64_t base = 0;
        for (int i = 0; i < j->n; i++) {
            int64_t lo = g0 > base ? g0 - base : 0;
            int64_t hi = g1 - base < j->n_rows[i] ? g1 - base : j->n_rows[i];
            if (lo < hi)
                kern_matmul_act(j->w[i], j->col0, &a, j->y[i] + lo, j->y_stride[i], j->row0[i] + lo,
                                j->row0[i] + hi, scratch);
            base += j->n_rows[i];
        }
    }
}

/* gate_up_run: j->w[0] is the gate, j->w[1] up, with equal row ranges. */
static void
gate_up_run(void *ctx, int ith, int nth)
{
    (void)nth;
    mm_job *j = ctx;
    int64_t g0, g1;
    kern_act a;
    float *scratch = mm_thread(j, ith, &a);
    while (next_chunk(j, ith, &g0, &g1)) {
        for (int i = 0; i < 2; i++)
            kern_matmul_act(j->w[i], j->col0, &a, j->y[i] + g0, j->y_stride[i], j->row0[i] + g0,
                            j->row0[i] + g1, scratch);
        for (int t = 0; t < j->n_tok; t++)
            kern_swiglu(j->y[0] + t * j->y_stride[0] + g0, j->y[1] + t * j->y_stride[1] + g0,
                        g1 - g0);
    }
}

/* Runs fn (mm_run, gate_up_run) over the job's rows on the pool. */
static void
mm_go(pool *p, pool_fn fn, mm_job *j)
{
    j->total = 0; // gate_up_run's chunks are rows of both its matrices
    for (int i = 0; i < (fn == gate_up_run ? 1 : j->n); i++)
        j->total += j->n_rows[i];
    int nth = pool_n_threads(p);
    j->size = chunk_rows(j->total, nth);
    pool_split_reset(j->s->split, nth, (j->total + j->size - 1) / j->size);
    pool_run(p, fn, j);
}

typedef struct {
    const model_config *c;
    model_state *s;
    const model_batch *b;
    int layer, n_q_local, n_kv_local;
    int n_tiles, per_tile; // units: tiles x ranges of each tile's pairs
    atomic_int next;       // the next unit to take
} att_job;

/* Causal attention for each (token, local query head) pair, split across threads.
 * Each pair reads keys/values of positions 0..pos through its own sequence's block table:
 * scores block by block into one array, one softmax over all of them, then each block's
 * weighted values added to the output in block order (kern_attn_values accumulates).
 *
 * A tile is up to ATT_TILE consecutive tokens of one sequence; its pairs are numbered KV
 * head by KV head, within one by token then query head (f = g * per_g + qi). A call
 * takes pairs [f0, f1) of one tile together, block by block, so each block's keys and
 * values come from memory once for all of them and from L1 for the rest (a prefill
 * chunk's queries otherwise read the whole cache once per token, from L3 at a few
 * hundred positions); a range that spans KV heads reads each block's slices of those
 * heads one after the other, which lie side by side. The arithmetic of each pair is
 * unchanged by this order, and so by the thread count and the batch. */
/* Pair f of a tile starting at token t0 (per_g pairs per KV head): its KV head, token
 * and query head. */
typedef struct {
    int g, t, h;
} att_pair;

static att_pair
pair_at(int f, int per_g, int group, int t0)
{
    int qi = f % per_g;
    att_pair pr = {f / per_g, t0 + qi / group, f / per_g * group + qi % group};
    return pr;
}

static void
att_queries(att_job *j, int t0, int f0, int f1, int per_g, float *att)
{
    const model_config *c = j->c;
    model_state *s = j->s;
    const model_batch *b = j->b;
    int hd = c->head_dim, group = c->n_heads / c->n_kv_heads, nq = j->n_q_local;
    int q_dim = nq * hd, kv_dim = j->n_kv_local * hd;
    float scale = 1.0f / sqrtf((float)hd);
    size_t row = att_row(c);
    const model_kv *kv = b->kv[t0];
    const model_kvpool *kp = kv->pool;
    int n_blk = 0;
    for (int f = f0; f < f1; f++) {
        int nb = (b->pos[pair_at(f, per_g, group, t0).t] + MODEL_KV_BLOCK) / MODEL_KV_BLOCK;
        n_blk = nb > n_blk ? nb : n_blk;
    }
    for (int i = 0; i < n_blk; i++) {
        int p0 = i * MODEL_KV_BLOCK;
        const char *blk = block_keys(kp, kv->blocks[i], j->layer);
        // The range's pairs that reach this block, KERN_ATT_QUERIES of one KV head to a
        // call; each gets the block's 16 scores (rows are whole blocks long) and reads its
        // own positions.
        float *a[KERN_ATT_QUERIES];
        const float *qv[KERN_ATT_QUERIES];
        int na = 0, g_na = -1;
        for (int f = f0; f < f1; f++) {
            att_pair pr = pair_at(f, per_g, group, t0);
            if (b->pos[pr.t] < p0)
                continue;
            if (na > 0 && (pr.g != g_na || na == KERN_ATT_QUERIES)) {
                kern_attn_scores(a, qv, na, blk + (size_t)g_na * hd * MODEL_KV_BLOCK * kp->elem,
                                 kp->f16, hd, scale);
                na = 0;
            }
            g_na = pr.g;
            a[na] = att + (size_t)(f - f0) * row + p0;
            qv[na++] = s->q + (size_t)pr.t * q_dim + (size_t)pr.h * hd;
        }
        if (na > 0)
            kern_attn_scores(a, qv, na, blk + (size_t)g_na * hd * MODEL_KV_BLOCK * kp->elem,
                             kp->f16, hd, scale);
    }
    for (int f = f0; f < f1; f++) {
        att_pair pr = pair_at(f, per_g, group, t0);
        kern_softmax(att + (size_t)(f - f0) * row, b->pos[pr.t] + 1);
        memset(s->att_out + (size_t)pr.t * q_dim + (size_t)pr.h * hd, 0,
               sizeof(float) * (size_t)hd);
    }
    for (int i = 0; i < n_blk; i++) {
        int p0 = i * MODEL_KV_BLOCK;
        const char *vals = block_keys(kp, kv->blocks[i], j->layer) + kp->v_off * kp->elem;
        for (int f = f0; f < f1; f++) {
            att_pair pr = pair_at(f, per_g, group, t0);
            int n_pos = b->pos[pr.t] + 1;
            if (n_pos <= p0)
                continue;
            float *out = s->att_out + (size_t)pr.t * q_dim + (size_t)pr.h * hd;
            const float *a = att + (size_t)(f - f0) * row + p0;
            const char *vc = vals + (size_t)pr.g * hd * kp->elem;
            int n = n_pos - p0 < MODEL_KV_BLOCK ? n_pos - p0 : MODEL_KV_BLOCK;
            if (kp->f16)
                kern_attn_values_f16(out, a, (const kern_half *)vc, kv_dim, n, hd);
            else
                kern_attn_values(out, a, (const float *)vc, kv_dim, n, hd);
        }
    }
}

/* Threads take units from a shared counter: each tile's pairs in per_tile equal ranges
 * (att_units), so causal prefill, whose later tokens attend to more positions, and
 * sequences of different lengths still end together. */
static void
att_run(void *ctx, int ith, int nth)
{
    (void)nth;
    att_job *j = ctx;
    const int *tile0 = j->s->tile0;
    int group = j->c->n_heads / j->c->n_kv_heads, n_kv = j->n_kv_local, per_tile = j->per_tile;
    float *att = j->s->scratch + (size_t)ith * j->s->scratch_len; // [pairs][att_row]
    for (int u; (u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) <
                j->n_tiles * per_tile;) {
        int k = u % per_tile, ti = u / per_tile;
        int per_g = (tile0[ti + 1] - tile0[ti]) * group; // pairs of one KV head in the tile
        int f0 = n_kv * per_g * k / per_tile, f1 = n_kv * per_g * (k + 1) / per_tile;
        assert(f1 - f0 <= ATT_TILE * group); // what the scratch holds
        if (f0 < f1)
            att_queries(j, tile0[ti], f0, f1, per_g, att);
    }
}

/* Units per tile: one per KV head while that gives two units a thread or more. With
 * fewer, a decode step's one-token tiles are cut into one range per thread, across KV
 * heads (a one-token step on 3 KV heads and 2 threads: 4 and 5 pairs; cut in two per
 * head instead, both threads read every head's cache: 176 vs 183 tok/s at 512-639
 * positions, five interleaved rounds), and longer tiles into pieces of each head's
 * pairs, enough for two units a thread (a range is at most one head's pairs, which
 * the scratch holds). */
static int
att_units(int n_tiles, int n_tok, int n_kv, int group, int nth)
{
    if (n_tiles * n_kv >= 2 * nth)
        return n_kv;
    if (n_tiles == n_tok) // ranges of at most 2 x group pairs (n_tiles * n_kv < 2 * nth)
        return (nth + n_tiles - 1) / n_tiles;
    int parts = (2 * nth + n_tiles * n_kv - 1) / (n_tiles * n_kv);
    return n_kv * (parts < ATT_TILE * group ? parts : ATT_TILE * group);
}

/* The per-token work between the matmul and attention jobs: the residual add and the
 * next RMSNorm, or RoPE and the K/V writes. Split by tokens across the pool when a step
 * carries enough tokens to pay for the extra join (prefill chunks, big batches); done
 * by the calling thread otherwise. */
#define TOK_PARALLEL 8

typedef struct {
    const model_config *c;
    model_state *s;
    const model_batch *b;
    int layer;
    bool add_proj;       // x += proj (the residual of a block's output)
    const float *norm_w; // then xb = rmsnorm(x) * norm_w (NULL: no norm)
    bool rope_kv;        // RoPE on q and k, k and v into the cache
} tok_job;

static void
tok_one(const tok_job *j, int t)
{
    const model_config *c = j->c;
    model_state *s = j->s;
    const model_shard *sh = &s->shard;
    int dim = c->dim, hd = c->head_dim, n_kv = sh->kv_head1 - sh->kv_head0;
    int n_q = n_kv * (c->n_heads / c->n_kv_heads), q_dim = n_q * hd, kv_dim = n_kv * hd;
    float *x = s->x + (size_t)t * dim;
    if (j->add_proj)
        for (int i = 0; i < dim; i++)
            x[i] += s->proj[(size_t)t * dim + i];
    if (j->norm_w)
        kern_rmsnorm(s->xb + (size_t)t * dim, x, j->norm_w, dim, c->norm_eps);
    if (!j->rope_kv)
        return;
    // RoPE, then K and V into the block at their position (and nowhere else, which is
    // what makes shared prefix blocks safe), all before attention reads them. Keys go
    // in transposed (block_keys), element by element.
    const float *cs = s->rope + (size_t)t * hd;
    const model_kv *kv = j->b->kv[t];
    int pos = j->b->pos[t], slot = pos % MODEL_KV_BLOCK;
    const model_kvpool *kp = kv->pool;
    char *kb = block_keys(kp, kv->blocks[pos / MODEL_KV_BLOCK], j->layer);
    char *vr = kb + (kp->v_off + (size_t)slot * kv_dim) * kp->elem;
    kern_rope_apply(s->q + (size_t)t * q_dim, n_q, hd, cs);
    kern_rope_apply(s->k + (size_t)t * kv_dim, n_kv, hd, cs);
    const float *kt = s->k + (size_t)t * kv_dim, *vt = s->v + (size_t)t * kv_dim;
    if (kp->f16) {
        kern_half *kh = (kern_half *)kb + slot, h[64];
        for (int e0 = 0; e0 < kv_dim; e0 += 64) { // rounded 64 at a time, then spread
            int m = kv_dim - e0 < 64 ? kv_dim - e0 : 64;
            kern_f32_to_f16(kt + e0, h, m);
            for (int e = 0; e < m; e++)
                kh[(size_t)(e0 + e) * MODEL_KV_BLOCK] = h[e];
        }
        kern_f32_to_f16(vt, (kern_half *)vr, kv_dim);
    } else {
        float *kf = (float *)kb + slot;
        for (int e = 0; e < kv_dim; e++)
            kf[(size_t)e * MODEL_KV_BLOCK] = kt[e];
        memcpy(vr, vt, sizeof(float) * (size_t)kv_dim);
    }
}

static void
tok_run(void *ctx, int ith, int nth)
{
    tok_job *j = ctx;
    int n = j->b->n_tok;
    for (int t = n * ith / nth; t < n * (ith + 1) / nth; t++)
        tok_one(j, t);
}

static void
tok_step(pool *p, tok_job *j)
{
    if (j->b->n_tok >= TOK_PARALLEL)
        pool_run(p, tok_run, j);
    else
        tok_run(j, 0, 1);
}

static void
mm1(mm_job *j, const kern_mat *w, int64_t row0, int64_t n_rows, float *y, int64_t y_stride)
{
    int i = j->n++;
    j->w[i] = w;
    j->row0[i] = row0;
    j->n_rows[i] = n_rows;
    j->y[i] = y;
    j->y_stride[i] = y_stride;
}

int
model_forward(const model *m, model_state *s, model_kv *kv, const int32_t *tokens, int n_tok,
              int pos0, pool *p, model_allreduce_fn allreduce, void *ar_ctx, float *logits)
{
    if (n_tok < 1 || n_tok > s->max_tokens || !kv)
        return LLM_EINVAL;
    if (pos0 < 0 || pos0 > model_kv_capacity(kv) - n_tok)
        return LLM_ERANGE;
    // The batch description lives in the state: no allocation per step.
    for (int t = 0; t < n_tok; t++) {
        s->one_pos[t] = pos0 + t;
        s->one_kv[t] = kv;
        s->one_want[t] = t == n_tok - 1 && logits != NULL;
    }
    model_batch b = {n_tok, tokens, s->one_pos, s->one_kv, s->one_want, logits};
    return model_forward_batch(m, s, &b, p, allreduce, ar_ctx);
}

/* view_check: kv is a usable view for this state's shard with capacity for pos; then
 * the block ids of positions 0..pos must lie in the pool. */
static int
view_check(const model *m, const model_state *s, const model_kv *kv, int pos)
{
    const model_kvpool *kp = kv ? kv->pool : NULL;
    if (!kp || kp->kv_head0 != s->shard.kv_head0 || kp->kv_head1 != s->shard.kv_head1 ||
        kp->n_layers != m->cfg.n_layers || kp->kv_dim != kv_dim_of(m, &s->shard) ||
        kv->n_blocks < 0 || (kv->n_blocks > 0 && !kv->blocks))
        return LLM_EINVAL;
    if (pos < 0 || pos >= model_kv_capacity(kv) || pos >= m->cfg.ctx_len)
        return LLM_ERANGE;
    return LLM_OK;
}

static int
batch_check(const model *m, const model_state *s, const model_batch *b, pool *p)
{
    const model_config *c = &m->cfg;
    if (b->n_tok < 1 || b->n_tok > s->max_tokens || pool_n_threads(p) > s->n_threads)
        return LLM_EINVAL;
    // Block ids are checked once per run of tokens with the same view (a prefill chunk),
    // up to the highest block seen so far: O(blocks) rather than O(tokens * blocks).
    const model_kv *seen = NULL;
    int seen_upto = -1;
    for (int t = 0; t < b->n_tok; t++) {
        const model_kv *kv = b->kv[t];
        if (b->tokens[t] < 0 || b->tokens[t] >= c->vocab_size)
            return LLM_EINVAL;
        int rc = view_check(m, s, kv, b->pos[t]);
        if (rc != LLM_OK)
            return rc;
        if (kv != seen) {
            seen = kv;
            seen_upto = -1;
        }
        for (int i = seen_upto + 1; i <= b->pos[t] / MODEL_KV_BLOCK; i++)
            if (kv->blocks[i] < 0 || kv->blocks[i] >= kv->pool->n_blocks)
                return LLM_EINVAL;
        if (b->pos[t] / MODEL_KV_BLOCK > seen_upto)
            seen_upto = b->pos[t] / MODEL_KV_BLOCK;
    }
    return LLM_OK;
}

int
model_forward_batch(const model *m, model_state *s, const model_batch *b, pool *p,
                    model_allreduce_fn allreduce, void *ar_ctx)
{
    const model_config *c = &m->cfg;
    const model_weights *w = &m->w;
    int rc = batch_check(m, s, b, p);
    if (rc != LLM_OK)
        return rc;

    const model_shard *sh = &s->shard;
    int n_tok = b->n_tok;
    int hd = c->head_dim, group = c->n_heads / c->n_kv_heads, dim = c->dim;
    int n_kv = sh->kv_head1 - sh->kv_head0, n_q = n_kv * group;
    int q_dim = n_q * hd, kv_dim = n_kv * hd, ffn = sh->ffn1 - sh->ffn0;

    for (int t = 0; t < n_tok; t++) {
        kern_get_row(&w->tok_embd, b->tokens[t], s->x + (size_t)t * dim);
        kern_rope_table(s->rope + (size_t)t * hd, hd, b->pos[t], c->rope_theta); // all layers
    }
    // Attention tiles: up to ATT_TILE consecutive tokens of one sequence (att_queries),
    // each cut into att_units ranges of its (token, query head) pairs.
    int n_tiles = 0;
    for (int t0 = 0, t1; t0 < n_tok; t0 = t1) {
        for (t1 = t0 + 1; t1 < n_tok && t1 - t0 < ATT_TILE && b->kv[t1] == b->kv[t0];)
            t1++;
        s->tile0[n_tiles++] = t0;
    }
    s->tile0[n_tiles] = n_tok;
    int att_per_tile = att_units(n_tiles, n_tok, n_kv, group, pool_n_threads(p));
    tok_job norm0 = {c, s, b, 0, false, w->layers[0].attn_norm, false};
    tok_step(p, &norm0);
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer *L = &w->layers[l];
        // Q, K, V of this rank's heads in one job.
        mm_job qkv = {.x = s->xb, .x_stride = dim, .col0 = 0, .n_in = dim, .n_tok = n_tok, .s = s};
        mm1(&qkv, &L->wq, (int64_t)sh->kv_head0 * group * hd, q_dim, s->q, q_dim);
        mm1(&qkv, &L->wk, (int64_t)sh->kv_head0 * hd, kv_dim, s->k, kv_dim);
        mm1(&qkv, &L->wv, (int64_t)sh->kv_head0 * hd, kv_dim, s->v, kv_dim);
        mm_go(p, mm_run, &qkv);
        tok_job rope = {c, s, b, l, false, NULL, true};
        tok_step(p, &rope);
        att_job aj = {c, s, b, l, n_q, n_kv, n_tiles, att_per_tile, 0};
        pool_run(p, att_run, &aj);

        // Output projection over this rank's columns of wo; ranks' partials are summed.
        mm_job wo = {.x = s->att_out,
                     .x_stride = q_dim,
                     .col0 = (int64_t)sh->kv_head0 * group * hd,
                     .n_in = q_dim,
                     .n_tok = n_tok,
                     .s = s};
        mm1(&wo, &L->wo, 0, dim, s->proj, dim);
        mm_go(p, mm_run, &wo);
        if (allreduce && (rc = allreduce(ar_ctx, s->proj, (size_t)n_tok * dim)) != LLM_OK)
            return rc;
        tok_job ffn_in = {c, s, b, l, true, L->ffn_norm, false};
        tok_step(p, &ffn_in);

        mm_job gu = {.x = s->xb, .x_stride = dim, .col0 = 0, .n_in = dim, .n_tok = n_tok, .s = s};
        mm1(&gu, &L->w_gate, sh->ffn0, ffn, s->hb, ffn);
        mm1(&gu, &L->w_up, sh->ffn0, ffn, s->hb2, ffn);
        mm_go(p, gate_up_run, &gu);

        mm_job down = {
            .x = s->hb, .x_stride = ffn, .col0 = sh->ffn0, .n_in = ffn, .n_tok = n_tok, .s = s};
        mm1(&down, &L->w_down, 0, dim, s->proj, dim);
        mm_go(p, mm_run, &down);
        if (allreduce && (rc = allreduce(ar_ctx, s->proj, (size_t)n_tok * dim)) != LLM_OK)
            return rc;
        // The residual, and the next layer's input norm with it.
        tok_job next = {
            c, s, b, l, true, l + 1 < c->n_layers ? w->layers[l + 1].attn_norm : NULL, false};
        tok_step(p, &next);
    }

    // Final norm of the tokens that want logits, gathered into xb, then one matmul.
    int n_out = 0;
    for (int t = 0; t < n_tok; t++)
        if (b->want_logits && b->want_logits[t])
            kern_rmsnorm(s->xb + (size_t)n_out++ * dim, s->x + (size_t)t * dim, w->out_norm, dim,
                         c->norm_eps);
    if (n_out > 0) {
        mm_job out = {.x = s->xb, .x_stride = dim, .col0 = 0, .n_in = dim, .n_tok = n_out, .s = s};
        mm1(&out, &w->output, 0, c->vocab_size, b->logits, c->vocab_size);
        mm_go(p, mm_run, &out);
    }
    return LLM_OK;
}
