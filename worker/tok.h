/*
 * tok.h - tokenizer built from a GGUF file's tokenizer.* metadata.
 *
 * Two vocabulary kinds: byte-level BPE ("gpt2": GPT-2 byte-to-unicode mapping, merges
 * ranked by their order, a regex-style pre-tokenizer chosen by tokenizer.ggml.pre,
 * e.g. "smollm" = single digits + the GPT-2 split) and SentencePiece-style ("llama":
 * scores, "▁" for spaces, <0xNN> byte fallback). Special (control / user-defined)
 * tokens such as <|im_start|> are matched in the text only when parse_special is set.
 * Invariant: tok_decode(tok_encode(s, parse_special=false)) == s byte for byte, for any
 * byte string s (invalid UTF-8 included) on vocabularies with byte coverage.
 * What it does not do: sampling, streaming text assembly (gen.c), Jinja templates
 * (tok_chat_apply knows the formats we ship, detected from tokenizer.chat_template).
 *
 * Thread: immutable after tok_vocab_load(); any thread may use it concurrently.
 */
#ifndef LLM_WORKER_TOK_H
#define LLM_WORKER_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct tok_vocab tok_vocab;

typedef enum {
    TOK_KIND_BPE = 1, // tokenizer.ggml.model = "gpt2"
    TOK_KIND_SPM = 2, // tokenizer.ggml.model = "llama"
} tok_kind;

typedef struct {
    const char *role;    // "system", "user", "assistant"
    const char *content; // UTF-8
} tok_chat_msg;

/* tok_vocab_load reads tokenizer.ggml.{model,pre,tokens,token_type,scores,merges,
 * bos_token_id,eos_token_id,...} and tokenizer.chat_template. Returns LLM_OK,
 * LLM_ENOMEM, LLM_EINVAL (missing or malformed key; err names it) or LLM_ENOTSUP
 * (unknown tokenizer model or pre-tokenizer). Free with tok_vocab_free(). The vocab
 * copies what it needs; f may be closed afterwards. */
int tok_vocab_load(const gguf_file *f, tok_vocab **out, char *err, size_t err_len);
void tok_vocab_free(tok_vocab *v);

tok_kind tok_vocab_kind(const tok_vocab *v);
int32_t tok_n_vocab(const tok_vocab *v);
int32_t tok_bos(const tok_vocab *v);  // -1 if none
int32_t tok_eos(const tok_vocab *v);  // -1 if none
bool tok_add_bos(const tok_vocab *v); // tokenizer.ggml.add_bos_token
/* tok_is_eog: true for tokens that end a generation (eos, eot, <|im_end|>, ...). */
bool tok_is_eog(const tok_vocab *v, int32_t id);
/* tok_find returns the id of the token whose text is exactly s, or -1. */
int32_t tok_find(const tok_vocab *v, const char *s);

/* tok_encode tokenizes len bytes of text (any bytes). No BOS is added here.
 * *ids is malloc'ed (free with free()); LLM_OK or LLM_ENOMEM. */
int tok_encode(const tok_vocab *v, const char *text, size_t len, bool parse_special, int32_t **ids,
               size_t *n_ids);

/* tok_token_bytes gives the bytes token id decodes to (a control token gives its text
 * only if render_special). The bytes may be a partial UTF-8 sequence. *len is set even
 * when cap is too small (then LLM_ERANGE and nothing useful in buf). LLM_EINVAL for an
 * id out of range. For SPM, a leading space marker is kept as a space. */
int tok_token_bytes(const tok_vocab *v, int32_t id, bool render_special, char *buf, size_t cap,
                    size_t *len);

/* tok_decode concatenates the bytes of ids (SPM: drops the one space the encoder put in
 * front when add_space_prefix is on). *out is malloc'ed and NUL-terminated (free()),
 * *len excludes the NUL. LLM_EINVAL for an id out of range. */
int tok_decode(const tok_vocab *v, const int32_t *ids, size_t n_ids, bool render_special,
               char **out, size_t *len);

/* tok_chat_apply renders messages in the model's chat format (ChatML for SmolLM2,
 * with the template's default system prompt when the first message is not a system
 * one), ending with the assistant header when add_assistant. *out is malloc'ed and
 * NUL-terminated. LLM_ENOTSUP if the model's template is not one we know. */
int tok_chat_apply(const tok_vocab *v, const tok_chat_msg *msgs, size_t n_msgs, bool add_assistant,
                   char **out);

/* tok_prompt makes the ids a generation starts from: msgs (if not NULL) rendered by
 * tok_chat_apply with the assistant header and encoded with special tokens parsed, or
 * else text encoded as plain bytes; then BOS in front when the vocabulary asks for it.
 * *ids is malloc'ed (free()). LLM_OK, LLM_ENOMEM or tok_chat_apply's LLM_ENOTSUP. */
int tok_prompt(const tok_vocab *v, const char *text, const tok_chat_msg *msgs, size_t n_msgs,
               int32_t **ids, size_t *n_ids);

#endif
