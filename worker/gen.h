/*
 * gen.h - one sequence's generation loop: prefill in chunks, decode token by token,
 * and turn tokens into text safely for streaming.
 *
 * Text is released to the callback only when it is final: never half a UTF-8
 * character, never the start of what may turn out to be a stop string, and always
 * valid UTF-8 (bytes that cannot form a character become U+FFFD). A stop string
 * ends the generation and is not emitted itself (OpenAI semantics).
 * What it does not do: batching across sequences (the serving scheduler will own the
 * batch and reuse gen_text for the text side).
 *
 * Thread: a gen call runs on the caller's thread and uses the given pool.
 */
#ifndef LLM_WORKER_GEN_H
#define LLM_WORKER_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "samp.h"

#define GEN_MAX_STOP 8
#define GEN_MAX_STOP_LEN 256

typedef enum {
    GEN_FINISH_NONE = 0,
    GEN_FINISH_STOP = 1,   // end-of-generation token or stop string
    GEN_FINISH_LENGTH = 2, // max_tokens or the context is full
} gen_finish;

/* Incremental detokenizer with stop-string and UTF-8 hold-back. */
typedef struct {
    char pending[4 * GEN_MAX_STOP_LEN + 64]; // text not yet released
    size_t n_pending;
    const char *stop[GEN_MAX_STOP];
    size_t stop_len[GEN_MAX_STOP];
    int n_stop;
} gen_text;

typedef int (*gen_text_fn)(void *ctx, const char *text, size_t len);

/* gen_text_init sets up the stop strings (borrowed; must outlive t). LLM_EINVAL if
 * more than GEN_MAX_STOP, or one is empty or longer than GEN_MAX_STOP_LEN bytes. */
int gen_text_init(gen_text *t, const char *const *stop, int n_stop);

/* gen_text_push appends the bytes of one token and releases what is final through cb.
 * *stopped is set when a stop string appeared (the text before it was released).
 * Returns LLM_OK, or LLM_ECANCELED when cb returned non-zero. */
int gen_text_push(gen_text *t, const char *bytes, size_t len, gen_text_fn cb, void *ctx,
                  bool *stopped);

/* gen_text_flush releases everything still held (at the end of a generation). */
int gen_text_flush(gen_text *t, gen_text_fn cb, void *ctx);

typedef struct {
    int max_tokens; // >= 0
    samp_params samp;
    const char *const *stop; // borrowed
    int n_stop;
} gen_params;

typedef struct {
    int32_t *ids; // generated ids (malloc'ed; free with gen_result_fini)
    int n_ids;
    gen_finish finish;
    uint64_t prefill_ns, decode_ns;
} gen_result;

void gen_result_fini(gen_result *r);

/* gen_run prefills prompt[0..n_prompt) into kv (which must be empty) in steps of up to
 * the state's max_tokens, then samples up to max_tokens tokens, streaming text to cb.
 * prompt_logits, if not NULL, receives the logits of the last prompt position.
 * Returns LLM_OK, LLM_EINVAL (empty prompt, bad params), LLM_ERANGE (the prompt does not
 * fit the cache), LLM_ECANCELED (cb asked to stop) or a model_forward error. */
int gen_run(const model *m, model_state *s, model_kv *kv, pool *p, samp_ctx *sc,
            const int32_t *prompt, int n_prompt, int max_step_tokens, const gen_params *gp,
            gen_text_fn cb, void *cb_ctx, float *prompt_logits, gen_result *out);

/* gen_finish_name: "stop", "length" or "none". */
const char *gen_finish_name(gen_finish f);

#endif
