/*
 * model.h - a llama-architecture transformer: load from GGUF, run forward steps.
 *
 * Kept apart, as in llama2.c: model_config (hyperparameters), model_weights (borrowed
 * views into the mmapped GGUF, one shape comment each), model_state (per-step scratch,
 * one per caller) and model_kv (the KV cache of one sequence). Attention heads and FFN
 * columns are indexed by range (model_shard), and the two places where a tensor-parallel
 * rank's partial sums must be joined call an all-reduce hook, so a rank can run its
 * slice with this same forward pass.
 *
 * Thread: a model is immutable after load and may be shared; a model_state and a
 * model_kv belong to one caller at a time. model_forward uses the given pool.
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
typedef struct model_kv model_kv;

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

/* model_kv_new allocates the KV cache of one sequence of up to n_ctx positions for
 * the shard. LLM_EINVAL if n_ctx < 1, LLM_ENOMEM. Free with model_kv_free(). */
int model_kv_new(const model *m, const model_shard *shard, int n_ctx, model_kv **out);
void model_kv_free(model_kv *kv);
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
 * token id out of range) or LLM_ERANGE (positions past the cache), or what allreduce returned. */
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

/* model_forward_batch runs one step over b. Returns LLM_OK, LLM_EINVAL (n_tok outside
 * 1..max_tokens, a token id out of range, a NULL or mismatched cache), LLM_ERANGE (a
 * position outside its cache or the model's context) or what allreduce returned. */
int model_forward_batch(const model *m, model_state *s, const model_batch *b, pool *p,
                        model_allreduce_fn allreduce, void *ar_ctx);

/* model_weight_bytes is the bytes of weights read per decoded token (all matrices, one
 * embedding row, norms): the numerator of the memory-bandwidth bound. */
uint64_t model_weight_bytes(const model *m);

#endif
