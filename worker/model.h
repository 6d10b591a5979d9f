/*
 * model.h - a llama-architecture transformer: load from GGUF, run forward steps.
 *
 * Kept apart, as in llama2.c: model_config (hyperparameters), model_weights (borrowed
 * views into the mmapped GGUF, one shape comment each), model_state (per-step scratch,
 * one per caller) and the paged KV cache: a model_kvpool of fixed-size blocks shared by all
 * sequences, and a model_kv per sequence that lists its blocks. Attention heads and FFN
 * columns are indexed by range (model_shard), and the two places where a tensor-parallel
 * rank's partial sums must be joined call an all-reduce hook, so a rank can run its
 * slice with this same forward pass. Which blocks a sequence gets, their sharing and
 * their eviction are the block manager's business (kv_), not this module's.
 *
 * Thread: a model is immutable after load and may be shared; a model_state belongs to one
 * caller at a time. A pool may be shared by steps on several threads only when no block one
 * step writes is read or written by another. model_forward uses the given pool.
 */
#ifndef LLM_WORKER_MODEL_H
#define LLM_WORKER_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "kern.h"
#include "pool.h"
#include "tok.h"

typedef struct model model;
typedef struct model_state model_state;
typedef struct model_kvpool model_kvpool; /* opaque: K and V storage for n_blocks blocks */
typedef struct model_kv model_kv;

#define MODEL_KV_BLOCK 16 /* positions per KV block */

typedef struct {
    int n_layers;
    int dim;        // residual stream width
    int hidden_dim; // FFN inner width
    int n_heads;    // query heads
    int n_kv_heads; // key/value heads (grouped-query attention)
    int head_dim;   // dim / n_heads
    int vocab_size;
    int ctx_len; // trained context length
    float rope_theta;
    float norm_eps;
} model_config;

typedef struct {
    const float *attn_norm; // [dim]
    kern_mat wq;            // [n_heads * head_dim][dim]
    kern_mat wk;            // [n_kv_heads * head_dim][dim]
    kern_mat wv;            // [n_kv_heads * head_dim][dim]
    kern_mat wo;            // [dim][n_heads * head_dim]
    const float *ffn_norm;  // [dim]
    kern_mat w_gate;        // [hidden_dim][dim]
    kern_mat w_up;          // [hidden_dim][dim]
    kern_mat w_down;        // [dim][hidden_dim]
} model_layer;

typedef struct {
    kern_mat tok_embd;     // [vocab_size][dim]
    model_layer *layers;   // [n_layers]
    const float *out_norm; // [dim]
    kern_mat output;       // [vocab_size][dim]; tok_embd when the file ties them
} model_weights;

/* The slice of the model one tensor-parallel rank computes. A rank owns whole KV
 * heads (and the query heads that share them) and a contiguous range of FFN columns.
 * Its first columns of attn_output and ffn_down must start a quantization block of
 * those matrices (32 elements, or 256 for K-quants); model_state_new and model_kv_new
 * refuse a shard that does not. */
typedef struct {
    int kv_head0, kv_head1; // KV heads [kv_head0, kv_head1)
    int ffn0, ffn1;         // FFN columns [ffn0, ffn1); multiples of the block size
} model_shard;

/* Joins a rank's partial outputs: buf[0..n) becomes the sum over ranks, in place. */
typedef int (*model_allreduce_fn)(void *ctx, float *buf, size_t n);

typedef struct {
    bool mlock;
    bool willneed;
    bool kv_f32; // caches hold float32 (exact) instead of float16 (half the memory)
} model_load_opts;

/* model_load opens path, validates architecture, hyperparameters and every tensor's
 * type and shape, and builds the tokenizer. Returns LLM_OK, LLM_EIO, LLM_EINVAL,
 * LLM_ENOTSUP or LLM_ENOMEM with one line in err. Free with model_free(). */
int model_load(const char *path, const model_load_opts *opts, model **out, char *err,
               size_t err_len);
void model_free(model *m);

/* Borrowed, valid until model_free(). */
const model_config *model_get_config(const model *m);
const model_weights *model_get_weights(const model *m);
const tok_vocab *model_get_vocab(const model *m);
const gguf_file *model_get_gguf(const model *m);

/* model_full_shard is the whole model (single rank). */
model_shard model_full_shard(const model *m);

/* A sequence's cache: a view of pool blocks. Position p lives in block blocks[p / MODEL_KV_BLOCK]
 * at row p % MODEL_KV_BLOCK; capacity is n_blocks * MODEL_KV_BLOCK positions. The caller owns
 * the table and may grow it between steps. Two views may list the same block (a shared
 * prefix): a step writes only the rows of its tokens' own positions, so a block stays
 * read-only for as long as no token of a step falls in it. */
struct model_kv {
    model_kvpool *pool;    // borrowed
    const int32_t *blocks; // [n_blocks] block ids in 0 .. model_kvpool_n_blocks(pool) - 1
    int n_blocks;
};

/* model_kvpool_new allocates n_blocks blocks for the shard (every layer, K and V), zeroed.
 * LLM_EINVAL if n_blocks < 1 or the shard is invalid, LLM_ENOMEM. Free with
 * model_kvpool_free(). */
int model_kvpool_new(const model *m, const model_shard *shard, int n_blocks, model_kvpool **out);
void model_kvpool_free(model_kvpool *p);
int model_kvpool_n_blocks(const model_kvpool *p);
/* Bytes of one block (K and V, all layers) for the shard: sizes a pool from a memory budget.
 * 0 for an invalid shard. */
size_t model_kv_block_bytes(const model *m, const model_shard *shard);
/* One block's storage as one contiguous byte range of model_kv_block_bytes() bytes (for
 * copying blocks to and from a cache tier), laid out [K, V][n_layers][MODEL_KV_BLOCK]
 * [local KV heads * head_dim] elements: IEEE halves, or floats with kv_f32. Borrowed, valid until
 * model_kvpool_free(); NULL if block is outside 0 .. n_blocks - 1. */
void *model_kvpool_block(model_kvpool *p, int32_t block);

/* model_kv_new makes the cache of one sequence for single-sequence callers (CLI, tests): a
 * private pool of ceil(n_ctx / MODEL_KV_BLOCK) blocks and the identity table over it.
 * LLM_EINVAL if n_ctx < 1 or the shard is invalid, LLM_ENOMEM. Free with model_kv_free(),
 * which takes only caches made here: a view a caller built is never passed to it. */
int model_kv_new(const model *m, const model_shard *shard, int n_ctx, model_kv **out);
void model_kv_free(model_kv *kv);
/* Positions the view holds: n_blocks * MODEL_KV_BLOCK, so model_kv_new's n_ctx rounded up
 * to whole blocks. A step refuses positions from here on with LLM_ERANGE. */
int model_kv_capacity(const model_kv *kv);

/* model_state_new allocates scratch for steps of up to max_tokens tokens run on up to
 * n_threads threads. Free with model_state_free(). */
int model_state_new(const model *m, const model_shard *shard, int max_tokens, int n_threads,
                    model_state **out);
void model_state_free(model_state *s);

/* model_forward (one sequence; a wrapper over model_forward_batch) runs n_tok tokens at
 * positions pos0 .. pos0 + n_tok - 1 of the sequence whose cache is kv, writing their keys and
 * values into it. When logits is not NULL it receives the vocab_size logits of the last token.
 * allreduce may be NULL (one rank). Returns LLM_OK, LLM_EINVAL (n_tok outside 1..max_tokens, a
 * token id out of range, a bad view as model_forward_batch says) or LLM_ERANGE (positions past
 * the cache), or what allreduce returned. */
int model_forward(const model *m, model_state *s, model_kv *kv, const int32_t *tokens, int n_tok,
                  int pos0, pool *p, model_allreduce_fn allreduce, void *ar_ctx, float *logits);

/* One step over tokens of any number of sequences: token i sits at position pos[i] of the
 * sequence whose cache is kv[i]. Tokens of one sequence must have distinct positions, and
 * every earlier position of that sequence must already be in its cache or in this step
 * (continuous batching: prefill chunks and decode tokens of many sequences together). */
typedef struct {
    int n_tok;
    const int32_t *tokens;   // [n_tok]
    const int32_t *pos;      // [n_tok]
    model_kv *const *kv;     // [n_tok]
    const bool *want_logits; // [n_tok], or NULL for none
    float *logits;           // [number of want_logits][vocab_size], in token order
} model_batch;

/* model_forward_batch runs one step over b: writes each token's keys and values into the
 * row of its position and attends over positions 0 .. pos of its view. A token's attention is
 * bitwise the same whatever else is in the step and whichever blocks hold its positions
 * (the matmul kernels may still round differently for steps of different sizes). Returns LLM_OK,
 * LLM_EINVAL (n_tok outside 1..max_tokens, a token id out of range, a NULL view or pool, a pool of
 * another shard, a block id of one of positions 0 .. pos outside the pool), LLM_ERANGE (a position
 * outside its view's capacity or the model's context) or what allreduce returned. Nothing is
 * written unless every token is valid. */
int model_forward_batch(const model *m, model_state *s, const model_batch *b, pool *p,
                        model_allreduce_fn allreduce, void *ar_ctx);

/* model_weight_bytes is the bytes of weights read per decoded token (all matrices, one
 * embedding row, norms): the numerator of the memory-bandwidth bound. */
uint64_t model_weight_bytes(const model *m);

#endif
