/*
 * ctok.h - the coordinator's tokenizer for one model.
 *
 * The coordinator turns prompts into token ids itself, for two reasons: prefix routing
 * needs the prompt's KV block hashes, which are hashes of token ids (kvcache.h), and a
 * stream resumed on another worker after a failure must start from exactly the ids the
 * first worker saw. Workers then get prompt_ids and skip their own tokenization.
 * A ctok reads only the tokenizer from a GGUF file (the weights stay unmapped pages),
 * or mimics the synthetic engine's byte vocabulary.
 *
 * Thread: immutable after ctok_new; any thread may call ctok_encode concurrently.
 */
#ifndef LLM_COORD_CTOK_H
#define LLM_COORD_CTOK_H

#include <stddef.h>
#include <stdint.h>

#include "tok.h"

typedef struct ctok ctok;

/* ctok_new loads the tokenizer named by spec: a GGUF path, or "synthetic". LLM_OK,
 * LLM_ENOMEM, or the GGUF loader's error with a reason in err. Free with ctok_free. */
int ctok_new(const char *spec, ctok **out, char *err, size_t err_len);
void ctok_free(ctok *t);

/* ctok_encode builds the prompt ids exactly as a worker would (chat template, BOS):
 * msgs when not NULL, else text. *ids is malloc'ed (free()). LLM_OK, LLM_ENOMEM, or
 * LLM_ENOTSUP for a chat template the tokenizer does not know. */
int ctok_encode(const ctok *t, const char *text, const tok_chat_msg *msgs, size_t n_msgs,
                int32_t **ids, size_t *n_ids, char *err, size_t err_len);

#endif
