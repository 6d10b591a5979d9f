/*
 * tiny_model.h - writes small random-weight llama models for tests.
 *
 * The model is a real llama GGUF (2 layers, dim 64, 4 heads / 2 KV heads, FFN 128,
 * context 256; dim 256 and FFN 512 for types with 256-element blocks) with a byte-level BPE
 * vocabulary (3 ChatML special tokens, the 256 GPT-2 byte symbols and a few dozen merges) and a
 * ChatML chat template, so every part of the engine can be exercised in milliseconds. Weights are a
 * deterministic function of the seed.
 */
#ifndef LLM_WORKER_TINY_MODEL_H
#define LLM_WORKER_TINY_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kern.h"

typedef struct {
    llm_dtype type; // type of every matrix (norms stay F32); must be supported
    uint64_t seed;
    bool untied; // write a separate output.weight instead of tying to token_embd
} tiny_model_opts;

/* tiny_model_write writes the model to path. LLM_EINVAL (unsupported type), LLM_ENOMEM
 * or LLM_EIO. */
int tiny_model_write(const char *path, const tiny_model_opts *opts);

#endif
