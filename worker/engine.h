/*
 * engine.h - what the serving scheduler needs from a model, behind one small table of
 * functions: turn a prompt into token ids, turn a token into bytes, and run one batched
 * step over paged KV. Two engines implement it:
 *   model      the real forward pass (model.c) over a pool of KV blocks;
 *   synthetic  no weights: a fixed delay per step and deterministic tokens, so hundreds
 *              of workers fit on one machine to test the control plane at scale.
 * The scheduler, protocol and KV accounting are the same for both.
 *
 * Thread: the scheduler thread calls forward(); encode/token_bytes/is_eog are pure
 * and may be called from any thread.
 */
#ifndef LLM_WORKER_ENGINE_H
#define LLM_WORKER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "pool.h"
#include "tok.h"

typedef struct engine engine;

struct engine {
    const char *kind; // "model" or "synthetic"
    int n_vocab;
    int ctx_len;          // longest sequence (prompt + generated) served
    int max_step_tokens;  // tokens one forward step may carry
    uint64_t fingerprint; // identifies the weights: part of every KV block hash
    model_kvpool *kvpool; // KV storage (NULL for synthetic: accounting only)
    int n_blocks;         // KV blocks available
    pool *pool;           // the compute threads, free between steps (NULL: the caller only)

    /* encode builds prompt ids: chat messages through the model's template (special
     * tokens parsed), or raw text; BOS added when the vocabulary wants it. */
    int (*encode)(const engine *e, const char *text, const tok_chat_msg *msgs, size_t n_msgs,
                  int32_t **ids, size_t *n_ids, char *err, size_t err_len);
    int (*token_bytes)(const engine *e, int32_t id, char *buf, size_t cap, size_t *len);
    bool (*is_eog)(const engine *e, int32_t id);
    /* forward runs one step; the logits of want_logits tokens land in b->logits. */
    int (*forward)(engine *e, const model_batch *b);
    void (*destroy)(engine *e);
};

typedef struct {
    const char *path;
    int threads;
    int max_step_tokens;
    uint64_t kv_memory_bytes; // KV pool budget
    bool mlock;
    bool kv_f32; // float32 KV cache instead of float16
    bool pin;    // bind the compute threads to CPUs (pool_pin)
} engine_model_opts;

/* engine_model_new loads the model and sizes the KV pool from the memory budget
 * (LLM_EINVAL when the budget holds fewer blocks than one full-context sequence needs
 * is NOT an error: requests longer than the pool are refused at submit). */
int engine_model_new(const engine_model_opts *o, engine **out, char *err, size_t err_len);

typedef struct {
    int step_delay_us;      // fixed time of every step (a decode step of any batch size)
    int prefill_us_per_tok; // extra time per prompt token in a step
    int ctx_len;
    int n_blocks;
    int max_step_tokens;
} engine_synth_opts;

/* The synthetic vocabulary: ids 0..255 are bytes (prompts encode byte by byte, chat
 * messages as "role: content\n"), SYNTH_EOG ends a generation, and the token at
 * position p of a sequence is a lowercase letter chosen by a hash of (p, the previous
 * token): deterministic, and different for different prompts. */
#define SYNTH_EOG 256
int engine_synthetic_new(const engine_synth_opts *o, engine **out, char *err, size_t err_len);

void engine_free(engine *e);

#endif
