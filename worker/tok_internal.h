/*
 * tok_internal.h - what the tok module's files share: the vocabulary's layout and its
 * lookups. tok.c loads, decodes and renders chat prompts; tok_encode.c splits and merges.
 * Nothing outside the tok module includes this (hence the tok__ prefix).
 *
 * Thread: a tok_vocab is immutable after tok_vocab_load(); the lookups only read it.
 */
#ifndef LLM_WORKER_TOK_INTERNAL_H
#define LLM_WORKER_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tok.h"

/* Token types as tokenizer.ggml.token_type numbers them (llama.cpp's llama_token_type). */
enum {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

/* Pre-tokenizers: how a BPE fragment is cut into words before merging. */
typedef enum {
    TOK_PRE_GPT2,   // GPT-2's regex
    TOK_PRE_SMOLLM, // every \p{N} alone, then GPT-2's regex on the rest
    TOK_PRE_LLAMA3, // the llama-3 regex; a word that is a token skips merging
} tok_pre;

typedef enum {
    TOK_CHAT_NONE,   // unknown template: tok_chat_apply says LLM_ENOTSUP
    TOK_CHAT_CHATML, // <|im_start|>role\n...<|im_end|>\n
    TOK_CHAT_LLAMA3, // <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
    TOK_CHAT_LLAMA2, // [INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST]
} tok_chat_fmt;

#define TOK_MAX_EOG 8
#define TOK_CP_INVALID 0xFFFFFFFFu
#define TOK_SPM_SPACE "\xE2\x96\x81" // U+2581, SentencePiece's visible space
#define TOK_SPM_SPACE_CP 0x2581u

/* One BPE merge: the pair (left, right) of token ids becomes token id, with priority
 * rank (its index in tokenizer.ggml.merges; lower merges first). id < 0: empty slot. */
typedef struct {
    int32_t left, right;
    int32_t rank;
    int32_t id;
} tok_merge;

/* A special token as the matcher sees it; text points into tok_vocab.text. */
typedef struct {
    const char *text;
    size_t len;
    int32_t id;
} tok_special;

struct tok_vocab {
    tok_kind kind;
    tok_pre pre;
    bool add_bos;
    bool add_space_prefix; // SPM only: a U+2581 in front of the text
    int32_t n_vocab;
    int32_t bos, eos, unk; // -1 when absent

    char *text;       // token texts as stored, back to back
    size_t *text_off; // [n_vocab + 1]: token i is text[text_off[i] .. text_off[i + 1])
    char *dec;        // what each token decodes to (byte mapping undone, U+2581 -> ' ')
    size_t *dec_off;  // [n_vocab + 1], as text_off
    uint8_t *type;    // [n_vocab] TOK_TYPE_*
    float *score;     // [n_vocab] SPM merge priority (higher first); NULL for BPE

    int32_t *by_text; // open addressing: token ids keyed by text, -1 empty
    size_t by_text_mask;
    tok_merge *merges; // open addressing: BPE merges keyed by (left, right)
    size_t merges_mask;
    int32_t byte_tok[256];   // BPE: token of the byte's GPT-2 character; SPM: <0xNN>; or -1
    uint32_t byte_char[256]; // GPT-2 bytes_to_unicode: the code point standing for a byte

    tok_special *special; // control and user-defined tokens, longest text first
    size_t n_special;
    uint8_t special_first[256]; // 1 if some special token starts with this byte

    int32_t eog[TOK_MAX_EOG];
    size_t n_eog;

    tok_chat_fmt chat;
    char *chat_system; // ChatML: the template's default system prompt, or NULL
};

/* tok__lookup_text returns the id of the token whose text is s[0..n), or -1. The lowest
 * id wins when a text repeats. */
int32_t tok__lookup_text(const tok_vocab *v, const char *s, size_t n);

/* tok__lookup_merge returns the merge of the pair (left, right), or NULL. Borrowed from v. */
const tok_merge *tok__lookup_merge(const tok_vocab *v, int32_t left, int32_t right);

/* tok__utf8_decode reads one code point from s[0..n), n >= 1, and returns its length. A
 * byte that does not start a well-formed sequence (stray continuation, overlong form,
 * surrogate, above U+10FFFF, truncated) stands alone with *cp = TOK_CP_INVALID. */
size_t tok__utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* tok__utf8_encode writes cp (<= U+10FFFF) to out (4 bytes of room); returns the length. */
size_t tok__utf8_encode(uint32_t cp, char *out);

#endif
