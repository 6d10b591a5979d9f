/*
 * samp.h - choose the next token from logits.
 *
 * Greedy (temperature 0), or temperature + top-k + top-p sampling. The random draw for
 * position p is a pure function of (seed, p): a stream resumed on another worker from
 * the same prompt and tokens continues exactly as it would have. Candidates are ordered
 * by logit with ties broken by token id, and weighed in integers (samp.c gives the whole
 * definition), so the result never depends on sort stability, summation order or
 * thread timing.
 * What it does not do: stop strings and max tokens (gen.c), logit bias.
 *
 * Thread: a samp_ctx belongs to one thread at a time.
 */
#ifndef LLM_WORKER_SAMP_H
#define LLM_WORKER_SAMP_H

#include <stddef.h>
#include <stdint.h>

typedef struct samp_ctx samp_ctx;

typedef struct {
    float temperature; // 0 = greedy; (0, 100]
    int top_k;         // 0 = off; else keep the k most likely
    float top_p;       // (0, 1]; 1 = off
    uint64_t seed;
} samp_params;

/* samp_params_default: greedy, top_k 0, top_p 1, seed 0. */
samp_params samp_params_default(void);

/* samp_params_validate returns LLM_OK or LLM_EINVAL with a one-line reason in err
 * (NaN, negative or huge temperature, top_p outside (0, 1], negative top_k). */
int samp_params_validate(const samp_params *p, char *err, size_t err_len);

/* samp_ctx_new allocates scratch for a vocabulary of n_vocab. Free with samp_ctx_free. */
int samp_ctx_new(int n_vocab, samp_ctx **out);
void samp_ctx_free(samp_ctx *s);

/* samp_sample returns the token for position pos (the index the token will occupy in
 * the sequence). logits[0..n_vocab) is read, not modified. p must be valid. */
int32_t samp_sample(samp_ctx *s, const samp_params *p, const float *logits, int64_t pos);

/* samp_uniform is the draw in [0, 1) used at position pos: exposed for tests. */
double samp_uniform(uint64_t seed, int64_t pos);

#endif
