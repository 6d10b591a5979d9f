/*
 * tok.c - tokenizer built from a GGUF file's tokenizer.* metadata (contract in tok.h):
 * loading the vocabulary, decoding, chat prompts. Encoding is in tok_encode.c; the
 * layout both share is in tok_internal.h.
 *
 * Loading copies the token texts into one buffer, indexes them (open addressing on the
 * text; BPE merges on the pair of ids) and precomputes the bytes each token decodes to,
 * so that decoding is a copy. Deliberate deviations from the reference tokenizers, all
 * for the exact round trip that tok.h promises:
 *  - user-defined tokens are matched in text only with parse_special (llama.cpp always
 *    matches them), so plain text never turns into a token that decodes differently;
 *  - SPM decoding drops only the one space the encoder put in front of the text.
 * A byte whose token the vocabulary lacks is dropped by the encoder, as HuggingFace does
 * when a BPE model has no unknown token (SmolLM2 has no token for 21 bytes, 0x04 and 0xF5
 * for example); there the round trip cannot hold and tok.h does not promise it.
 *
 * What it does not do: Jinja (tok_chat_apply recognizes the template families we ship
 * from marker strings in tokenizer.chat_template), Unicode normalization.
 */
#include "tok.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_err.h"
#include "tok_internal.h"

#define TOK_UNK_SURFACE " \xE2\x81\x87 " // " ⁇ ", SentencePiece's rendering of <unk>

static const struct {
    const char *name;
    tok_pre pre;
} pre_table[] = {
    {"default", TOK_PRE_GPT2},     {"gpt2", TOK_PRE_GPT2},     {"smollm", TOK_PRE_SMOLLM},
    {"llama-bpe", TOK_PRE_LLAMA3}, {"llama3", TOK_PRE_LLAMA3},
};

/* Token texts that end a generation whenever the vocabulary has them. */
static const char *const eog_names[] = {
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "</s>",
};

/* ------------------------------------------------------------------------------------ */
/* small helpers                                                                         */

// FNV-1a: short keys, no need for anything stronger; the table sizes are powers of two.
static uint64_t
hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static uint64_t
hash_pair(int32_t a, int32_t b)
{
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    k *= 0x9E3779B97F4A7C15ull; // Fibonacci hashing; the high bits are well mixed
    return k ^ (k >> 31);
}

static size_t
table_size_for(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) // load factor <= 1/2 keeps probe sequences short
        cap *= 2;
    return cap;
}

size_t
tok__utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = TOK_CP_INVALID;
        return 1;
    }
    if (len > n)
        goto invalid;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            goto invalid;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        goto invalid;
    *cp = v;
    return len;
invalid:
    *cp = TOK_CP_INVALID;
    return 1;
}

size_t
tok__utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves; the other 68
 * bytes get U+0100.. in byte order, so that every byte has a visible character. */
static void
gpt2_byte_map(uint32_t b2u[256])
{
    uint32_t next = 256;
    for (unsigned b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        b2u[b] = printable ? b : next++;
    }
}

/* A growable byte buffer whose allocation failure is sticky, so that a sequence of
 * appends needs one check at the end. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void
sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* ------------------------------------------------------------------------------------ */
/* lookups                                                                               */

int32_t
tok__lookup_text(const tok_vocab *v, const char *s, size_t n)
{
    for (size_t i = hash_bytes(s, n) & v->by_text_mask;; i = (i + 1) & v->by_text_mask) {
        int32_t id = v->by_text[i];
        if (id < 0)
            return -1;
        size_t len = v->text_off[id + 1] - v->text_off[id];
        if (len == n && memcmp(v->text + v->text_off[id], s, n) == 0)
            return id;
    }
}

const tok_merge *
tok__lookup_merge(const tok_vocab *v, int32_t left, int32_t right)
{
    for (size_t i = hash_pair(left, right) & v->merges_mask;; i = (i + 1) & v->merges_mask) {
        const tok_merge *m = &v->merges[i];
        if (m->id < 0)
            return NULL;
        if (m->left == left && m->right == right)
            return m;
    }
}

static bool
is_special_type(uint8_t type)
{
    return type == TOK_TYPE_CONTROL || type == TOK_TYPE_UNUSED || type == TOK_TYPE_UNKNOWN;
}

/* ------------------------------------------------------------------------------------ */
/* loading                                                                               */

/* get_opt_id reads an optional token id key: -1 when absent, LLM_EINVAL when it is not
 * an integer or not a valid id. */
static int
get_opt_id(const gguf_file *f, const char *key, int32_t n_vocab, int32_t *out, char *err,
           size_t err_len)
{
    uint32_t u;
    int rc = gguf_get_u32(f, key, &u);
    if (rc == LLM_ENOENT) {
        *out = -1;
        return LLM_OK;
    }
    if (rc != LLM_OK || u >= (uint32_t)n_vocab) {
        llm_errf(err, err_len, "%s: not a token id below n_vocab=%d", key, (int)n_vocab);
        return LLM_EINVAL;
    }
    *out = (int32_t)u;
    return LLM_OK;
}

static int
get_opt_bool(const gguf_file *f, const char *key, bool def, bool *out, char *err, size_t err_len)
{
    int rc = gguf_get_bool(f, key, out);
    if (rc == LLM_ENOENT) {
        *out = def;
        return LLM_OK;
    }
    if (rc != LLM_OK) {
        llm_errf(err, err_len, "%s: not a bool", key);
        return LLM_EINVAL;
    }
    return LLM_OK;
}

/* get_array checks that key is an array of n elements of an acceptable type (want:
 * GGUF_TYPE_STRING, or GGUF_TYPE_COUNT for any numeric type). n == 0 means "any
 * length"; *n_out (may be NULL) gets it. LLM_ENOENT (no message) when the key is absent. */
static int
get_array(const gguf_file *f, const char *key, gguf_type want, uint64_t n, uint64_t *n_out,
          char *err, size_t err_len)
{
    gguf_type et;
    uint64_t len;
    int rc = gguf_get_arr(f, key, &et, &len);
    if (rc == LLM_ENOENT)
        return LLM_ENOENT; // the caller knows whether the key is optional
    bool numeric = et <= GGUF_TYPE_FLOAT32 || (et >= GGUF_TYPE_UINT64 && et <= GGUF_TYPE_FLOAT64);
    bool type_ok = want == GGUF_TYPE_STRING ? et == GGUF_TYPE_STRING : numeric;
    if (rc != LLM_OK || !type_ok) {
        llm_errf(err, err_len, "%s: not an array of %s", key,
                 want == GGUF_TYPE_STRING ? "strings" : "numbers");
        return LLM_EINVAL;
    }
    if (n != 0 && len != n) {
        llm_errf(err, err_len, "%s: %llu entries for %llu tokens", key, (unsigned long long)len,
                 (unsigned long long)n);
        return LLM_EINVAL;
    }
    if (n_out != NULL)
        *n_out = len;
    return LLM_OK;
}

/* load_texts copies every token text into one buffer and indexes it by text. When a
 * text repeats, the lowest id keeps it (lookups find the first one inserted). */
static int
load_texts(tok_vocab *v, const gguf_file *f, char *err, size_t err_len)
{
    const char *key = "tokenizer.ggml.tokens";
    size_t n = (size_t)v->n_vocab, total = 0;
    gguf_str s;
    if ((v->text_off = malloc((n + 1) * sizeof(size_t))) == NULL)
        return LLM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (gguf_get_arr_str(f, key, i, &s) != LLM_OK) {
            llm_errf(err, err_len, "%s[%zu]: unreadable", key, i);
            return LLM_EINVAL;
        }
        v->text_off[i] = total;
        total += (size_t)s.len;
    }
    v->text_off[n] = total;
    if ((v->text = malloc(total + 1)) == NULL)
        return LLM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        gguf_get_arr_str(f, key, i, &s);
        memcpy(v->text + v->text_off[i], s.ptr, (size_t)s.len);
    }

    size_t cap = table_size_for(n);
    if ((v->by_text = malloc(cap * sizeof(int32_t))) == NULL)
        return LLM_ENOMEM;
    memset(v->by_text, 0xFF, cap * sizeof(int32_t)); // all -1
    v->by_text_mask = cap - 1;
    for (int32_t id = 0; id < v->n_vocab; id++) {
        const char *t = v->text + v->text_off[id];
        size_t len = v->text_off[id + 1] - v->text_off[id];
        if (len == 0 || tok__lookup_text(v, t, len) >= 0)
            continue;
        size_t i = hash_bytes(t, len) & v->by_text_mask;
        while (v->by_text[i] >= 0)
            i = (i + 1) & v->by_text_mask;
        v->by_text[i] = id;
    }
    return LLM_OK;
}

static int
load_types_scores(tok_vocab *v, const gguf_file *f, char *err, size_t err_len)
{
    size_t n = (size_t)v->n_vocab;
    int32_t *raw = NULL;
    int rc;
    if ((v->type = malloc(n)) == NULL)
        return LLM_ENOMEM;
    memset(v->type, TOK_TYPE_NORMAL, n);
    rc = get_array(f, "tokenizer.ggml.token_type", GGUF_TYPE_COUNT, n, NULL, err, err_len);
    if (rc == LLM_OK) {
        if ((raw = malloc(n * sizeof(int32_t))) == NULL)
            return LLM_ENOMEM;
        rc = gguf_get_arr_i32(f, "tokenizer.ggml.token_type", raw, n);
        for (size_t i = 0; i < n && rc == LLM_OK; i++) {
            if (raw[i] < TOK_TYPE_UNDEFINED || raw[i] > TOK_TYPE_BYTE)
                rc = LLM_EINVAL;
            else // undefined (0) is what old converters wrote for normal tokens
                v->type[i] = raw[i] == TOK_TYPE_UNDEFINED ? TOK_TYPE_NORMAL : (uint8_t)raw[i];
        }
        free(raw);
        if (rc != LLM_OK) {
            llm_errf(err, err_len, "tokenizer.ggml.token_type: a value is not a type 0..6");
            return LLM_EINVAL;
        }
    } else if (rc != LLM_ENOENT) {
        return rc; // absent means "all normal"; present and malformed is an error
    }

    if (v->kind != TOK_KIND_SPM)
        return LLM_OK; // BPE ranks come from the merges, not from scores
    rc = get_array(f, "tokenizer.ggml.scores", GGUF_TYPE_COUNT, n, NULL, err, err_len);
    if (rc == LLM_ENOENT) {
        llm_errf(err, err_len, "missing tokenizer.ggml.scores (needed by llama vocabularies)");
        return LLM_EINVAL;
    }
    if (rc != LLM_OK)
        return rc;
    if ((v->score = malloc(n * sizeof(float))) == NULL)
        return LLM_ENOMEM;
    if (gguf_get_arr_f32(f, "tokenizer.ggml.scores", v->score, n) != LLM_OK) {
        llm_errf(err, err_len, "tokenizer.ggml.scores: unreadable");
        return LLM_EINVAL;
    }
    return LLM_OK;
}

/* load_merges reads "left right" strings. A merge naming a token the vocabulary lacks
 * is skipped, as llama.cpp does (it can never apply); a string with no separating
 * space is malformed. The space is searched from index 1 so a left part may be " ". */
static int
load_merges(tok_vocab *v, const gguf_file *f, char *err, size_t err_len)
{
    const char *key = "tokenizer.ggml.merges";
    uint64_t n;
    int rc = get_array(f, key, GGUF_TYPE_STRING, 0, &n, err, err_len);
    if (rc == LLM_ENOENT) {
        llm_errf(err, err_len, "missing %s (needed by gpt2 vocabularies)", key);
        return LLM_EINVAL;
    }
    if (rc != LLM_OK)
        return rc;
    if (n > INT32_MAX) {
        llm_errf(err, err_len, "%s: too many entries", key);
        return LLM_EINVAL;
    }
    size_t cap = table_size_for((size_t)n);
    if ((v->merges = malloc(cap * sizeof(tok_merge))) == NULL)
        return LLM_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        v->merges[i].id = -1;
    v->merges_mask = cap - 1;

    char *joined = NULL;
    size_t joined_cap = 0;
    for (uint64_t r = 0; r < n; r++) {
        gguf_str s;
        if (gguf_get_arr_str(f, key, r, &s) != LLM_OK) {
            llm_errf(err, err_len, "%s[%llu]: unreadable", key, (unsigned long long)r);
            rc = LLM_EINVAL;
            goto out;
        }
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', (size_t)s.len - 1) : NULL;
        if (sp == NULL) {
            llm_errf(err, err_len, "%s[%llu]: '%.*s' is not 'left right'", key,
                     (unsigned long long)r, (int)(s.len > 40 ? 40 : s.len), s.ptr);
            rc = LLM_EINVAL;
            goto out;
        }
        size_t ln = (size_t)(sp - s.ptr), rn = (size_t)s.len - ln - 1;
        if (ln + rn > joined_cap) {
            char *p = realloc(joined, ln + rn);
            if (p == NULL) {
                rc = LLM_ENOMEM;
                goto out;
            }
            joined = p;
            joined_cap = ln + rn;
        }
        memcpy(joined, s.ptr, ln);
        memcpy(joined + ln, sp + 1, rn);
        int32_t left = tok__lookup_text(v, s.ptr, ln), right = tok__lookup_text(v, sp + 1, rn);
        int32_t id = tok__lookup_text(v, joined, ln + rn);
        if (left < 0 || right < 0 || id < 0 || tok__lookup_merge(v, left, right) != NULL)
            continue; // unusable, or a repeat of a higher-priority merge
        size_t i = hash_pair(left, right) & v->merges_mask;
        while (v->merges[i].id >= 0)
            i = (i + 1) & v->merges_mask;
        v->merges[i] = (tok_merge){.left = left, .right = right, .rank = (int32_t)r, .id = id};
    }
out:
    free(joined);
    return rc;
}

static int
hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* byte_token_value returns NN for a token text "<0xNN>", else -1. */
static int
byte_token_value(const unsigned char *t, size_t len)
{
    if (len != 6 || memcmp(t, "<0x", 3) != 0 || t[5] != '>')
        return -1;
    int hi = hex_digit(t[3]), lo = hex_digit(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* build_decoded fills dec/dec_off with the bytes each token stands for.
 * BPE: the GPT-2 byte mapping undone, all or nothing per token as HuggingFace's
 * ByteLevel decoder does (a token with a character outside the mapping keeps its text).
 * SPM: U+2581 -> ' ', <0xNN> byte tokens -> the byte. Either: user-defined tokens keep
 * their text; control and unused tokens decode to nothing (their text is shown only on
 * request); unknown tokens decode to SentencePiece's " ⁇ ". Decoded bytes are never
 * longer than the text, except the unknown surface. */
static int
build_decoded(tok_vocab *v)
{
    uint32_t b2u[256];
    int16_t u2b[512];
    gpt2_byte_map(b2u);
    memset(u2b, 0xFF, sizeof(u2b)); // all -1
    for (unsigned b = 0; b < 256; b++)
        u2b[b2u[b]] = (int16_t)b;

    size_t n = (size_t)v->n_vocab, unk_len = strlen(TOK_UNK_SURFACE), n_unk = 0;
    for (size_t id = 0; id < n; id++)
        n_unk += v->type[id] == TOK_TYPE_UNKNOWN;
    size_t cap = v->text_off[n] + n_unk * unk_len + 1;
    if ((v->dec_off = malloc((n + 1) * sizeof(size_t))) == NULL || (v->dec = malloc(cap)) == NULL)
        return LLM_ENOMEM;
    size_t pos = 0;
    for (size_t id = 0; id < n; id++) {
        const unsigned char *t = (const unsigned char *)v->text + v->text_off[id];
        size_t len = v->text_off[id + 1] - v->text_off[id];
        char *o = v->dec + pos;
        size_t k = 0;
        v->dec_off[id] = pos;
        if (v->type[id] == TOK_TYPE_CONTROL || v->type[id] == TOK_TYPE_UNUSED) {
            continue;
        } else if (v->type[id] == TOK_TYPE_UNKNOWN) {
            memcpy(o, TOK_UNK_SURFACE, unk_len);
            k = unk_len;
        } else if (v->type[id] == TOK_TYPE_USER_DEFINED) {
            memcpy(o, t, len);
            k = len;
        } else if (v->kind == TOK_KIND_BPE) {
            for (size_t i = 0; i < len;) {
                uint32_t cp;
                i += tok__utf8_decode(t + i, len - i, &cp);
                if (cp >= 512 || u2b[cp] < 0) {
                    k = len; // not byte-level text: keep it as it is
                    memcpy(o, t, len);
                    break;
                }
                o[k++] = (char)u2b[cp];
            }
        } else if (v->type[id] == TOK_TYPE_BYTE && byte_token_value(t, len) >= 0) {
            o[k++] = (char)byte_token_value(t, len);
        } else {
            for (size_t i = 0; i < len;) {
                if (len - i >= 3 && memcmp(t + i, TOK_SPM_SPACE, 3) == 0) {
                    o[k++] = ' ';
                    i += 3;
                } else {
                    o[k++] = (char)t[i++];
                }
            }
        }
        pos += k;
    }
    v->dec_off[n] = pos;
    return LLM_OK;
}

/* find_byte_tokens fills byte_char and byte_tok: the token each raw byte falls back to. */
static void
find_byte_tokens(tok_vocab *v)
{
    gpt2_byte_map(v->byte_char);
    for (unsigned b = 0; b < 256; b++) {
        char s[8];
        size_t n;
        if (v->kind == TOK_KIND_BPE)
            n = tok__utf8_encode(v->byte_char[b], s);
        else
            n = (size_t)snprintf(s, sizeof(s), "<0x%02X>", b);
        v->byte_tok[b] = tok__lookup_text(v, s, n);
    }
}

static int
cmp_special(const void *a, const void *b)
{
    const tok_special *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? 1 : -1; // longest first: "<|im_start|>" before "<|im"
    return x->id < y->id ? -1 : x->id > y->id;
}

static int
load_specials(tok_vocab *v)
{
    size_t n = 0;
    for (int32_t id = 0; id < v->n_vocab; id++)
        n += (v->type[id] == TOK_TYPE_CONTROL || v->type[id] == TOK_TYPE_USER_DEFINED) &&
             v->text_off[id + 1] > v->text_off[id];
    if (n == 0)
        return LLM_OK;
    if ((v->special = malloc(n * sizeof(tok_special))) == NULL)
        return LLM_ENOMEM;
    for (int32_t id = 0; id < v->n_vocab; id++) {
        size_t len = v->text_off[id + 1] - v->text_off[id];
        if ((v->type[id] != TOK_TYPE_CONTROL && v->type[id] != TOK_TYPE_USER_DEFINED) || len == 0)
            continue;
        tok_special *s = &v->special[v->n_special++];
        *s = (tok_special){.text = v->text + v->text_off[id], .len = len, .id = id};
        v->special_first[(unsigned char)s->text[0]] = 1;
    }
    qsort(v->special, v->n_special, sizeof(tok_special), cmp_special);
    return LLM_OK;
}

static void
add_eog(tok_vocab *v, int32_t id)
{
    if (id < 0)
        return;
    for (size_t i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id)
            return;
    if (v->n_eog < TOK_MAX_EOG)
        v->eog[v->n_eog++] = id;
}

static int
load_special_ids(tok_vocab *v, const gguf_file *f, char *err, size_t err_len)
{
    int32_t eot = -1, eom = -1;
    const struct {
        const char *key;
        int32_t *out;
    } ids[] = {
        {"tokenizer.ggml.bos_token_id", &v->bos},     {"tokenizer.ggml.eos_token_id", &v->eos},
        {"tokenizer.ggml.unknown_token_id", &v->unk}, {"tokenizer.ggml.eot_token_id", &eot},
        {"tokenizer.ggml.eom_token_id", &eom},
    };
    int rc;
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        if ((rc = get_opt_id(f, ids[i].key, v->n_vocab, ids[i].out, err, err_len)) != LLM_OK)
            return rc;
    add_eog(v, v->eos);
    add_eog(v, eot);
    add_eog(v, eom);
    for (size_t i = 0; i < sizeof(eog_names) / sizeof(eog_names[0]); i++)
        add_eog(v, tok__lookup_text(v, eog_names[i], strlen(eog_names[i])));
    if (v->kind == TOK_KIND_SPM && v->unk < 0) {
        for (int32_t id = 0; id < v->n_vocab && v->unk < 0; id++)
            if (v->type[id] == TOK_TYPE_UNKNOWN)
                v->unk = id;
    }
    // Unknown-token fallback is an SPM notion; BPE drops a byte it has no token for,
    // as HuggingFace does (SmolLM2's unknown_token_id is <|endoftext|>, an end marker).
    if (v->kind == TOK_KIND_BPE)
        v->unk = -1;
    bool is_spm = v->kind == TOK_KIND_SPM;
    rc = get_opt_bool(f, "tokenizer.ggml.add_bos_token", is_spm, &v->add_bos, err, err_len);
    if (rc != LLM_OK)
        return rc;
    // ByteLevel(add_prefix_space=false) in every BPE model we know: the key is SPM's.
    rc = get_opt_bool(f, "tokenizer.ggml.add_space_prefix", is_spm, &v->add_space_prefix, err,
                      err_len);
    v->add_space_prefix = v->add_space_prefix && is_spm;
    return rc;
}

static const char *
find_mem(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

/* chatml_default_system extracts the system prompt a ChatML template inserts when the
 * conversation has none: a string literal '<|im_start|>system\n...<|im_end|>' in the
 * template, as SmolLM2's and Qwen2's templates have. A block whose literal ends before
 * <|im_end|> ('<|im_start|>system\n' + messages[0]['content'] + ...) is an expression,
 * not a default, and is skipped. Jinja escapes inside the literal are undone. */
static int
chatml_default_system(const char *t, size_t n, char **out)
{
    static const char head[] = "<|im_start|>system";
    static const char tail[] = "<|im_end|>";
    *out = NULL;
    for (const char *p = t; (p = find_mem(p, n - (size_t)(p - t), head)) != NULL; p++) {
        char quote = p > t ? p[-1] : 0;
        const char *s = p + strlen(head), *end = t + n;
        if (quote != '\'' && quote != '"')
            continue;
        if (s < end && *s == '\n')
            s++;
        else if (end - s >= 2 && s[0] == '\\' && s[1] == 'n')
            s += 2;
        else
            continue;
        sbuf b = {0};
        bool literal = false;
        while (s < end) {
            if ((size_t)(end - s) >= strlen(tail) && memcmp(s, tail, strlen(tail)) == 0) {
                literal = true;
                break;
            }
            if (*s == quote)
                break;
            char c = *s++;
            if (c == '\\' && s < end) {
                c = *s++;
                c = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
            }
            sb_put(&b, &c, 1);
        }
        sb_put(&b, "", 0); // an empty default prompt is still a default: never NULL
        if (b.oom) {
            free(b.p);
            return LLM_ENOMEM;
        }
        if (literal) {
            *out = b.p;
            return LLM_OK;
        }
        free(b.p);
    }
    return LLM_OK;
}

static int
load_chat(tok_vocab *v, const gguf_file *f, char *err, size_t err_len)
{
    gguf_str t;
    int rc = gguf_get_str(f, "tokenizer.chat_template", &t);
    if (rc == LLM_ENOENT) {
        // No template: ChatML is the only format a vocabulary announces by itself.
        v->chat = tok_find(v, "<|im_start|>") >= 0 ? TOK_CHAT_CHATML : TOK_CHAT_NONE;
        return LLM_OK;
    }
    if (rc != LLM_OK) {
        llm_errf(err, err_len, "tokenizer.chat_template: not a string");
        return LLM_EINVAL;
    }
    size_t n = (size_t)t.len;
    if (find_mem(t.ptr, n, "<|im_start|>") != NULL) {
        v->chat = TOK_CHAT_CHATML;
        return chatml_default_system(t.ptr, n, &v->chat_system);
    }
    if (find_mem(t.ptr, n, "<|start_header_id|>") != NULL)
        v->chat = TOK_CHAT_LLAMA3;
    else if (find_mem(t.ptr, n, "[INST]") != NULL)
        v->chat = TOK_CHAT_LLAMA2;
    else
        v->chat = TOK_CHAT_NONE; // an error only when someone asks for a chat prompt
    return LLM_OK;
}

static int
load_kind(tok_vocab *v, const gguf_file *f, char *err, size_t err_len)
{
    gguf_str s;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &s);
    if (rc != LLM_OK) {
        llm_errf(err, err_len,
                 rc == LLM_ENOENT ? "missing tokenizer.ggml.model"
                                  : "tokenizer.ggml.model: not a string");
        return LLM_EINVAL;
    }
    if (gguf_str_eq(s, "gpt2")) {
        v->kind = TOK_KIND_BPE;
    } else if (gguf_str_eq(s, "llama")) {
        v->kind = TOK_KIND_SPM;
    } else {
        llm_errf(err, err_len, "tokenizer.ggml.model '%.*s' not supported (gpt2, llama)",
                 (int)(s.len > 40 ? 40 : s.len), s.ptr);
        return LLM_ENOTSUP;
    }
    if (v->kind != TOK_KIND_BPE)
        return LLM_OK;
    rc = gguf_get_str(f, "tokenizer.ggml.pre", &s);
    if (rc == LLM_ENOENT) {
        v->pre = TOK_PRE_GPT2; // llama.cpp's choice for old files without the key
        return LLM_OK;
    }
    if (rc != LLM_OK) {
        llm_errf(err, err_len, "tokenizer.ggml.pre: not a string");
        return LLM_EINVAL;
    }
    for (size_t i = 0; i < sizeof(pre_table) / sizeof(pre_table[0]); i++) {
        if (gguf_str_eq(s, pre_table[i].name)) {
            v->pre = pre_table[i].pre;
            return LLM_OK;
        }
    }
    llm_errf(err, err_len, "tokenizer.ggml.pre '%.*s' not supported",
             (int)(s.len > 40 ? 40 : s.len), s.ptr);
    return LLM_ENOTSUP;
}

int
tok_vocab_load(const gguf_file *f, tok_vocab **out, char *err, size_t err_len)
{
    assert(f != NULL && out != NULL);
    int rc;
    uint64_t n;
    tok_vocab *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return LLM_ENOMEM;
    v->bos = v->eos = v->unk = -1;

    if ((rc = load_kind(v, f, err, err_len)) != LLM_OK)
        goto out;
    rc = get_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, 0, &n, err, err_len);
    if (rc == LLM_ENOENT) {
        llm_errf(err, err_len, "missing tokenizer.ggml.tokens");
        rc = LLM_EINVAL;
    }
    if (rc != LLM_OK)
        goto out;
    if (n == 0 || n > INT32_MAX) {
        llm_errf(err, err_len, "tokenizer.ggml.tokens: %llu tokens", (unsigned long long)n);
        rc = LLM_EINVAL;
        goto out;
    }
    v->n_vocab = (int32_t)n;
    if ((rc = load_texts(v, f, err, err_len)) != LLM_OK ||
        (rc = load_types_scores(v, f, err, err_len)) != LLM_OK)
        goto out;
    if (v->kind == TOK_KIND_BPE && (rc = load_merges(v, f, err, err_len)) != LLM_OK)
        goto out;
    find_byte_tokens(v);
    if ((rc = build_decoded(v)) != LLM_OK || (rc = load_specials(v)) != LLM_OK ||
        (rc = load_special_ids(v, f, err, err_len)) != LLM_OK ||
        (rc = load_chat(v, f, err, err_len)) != LLM_OK)
        goto out;
out:
    if (rc == LLM_ENOMEM)
        llm_errf(err, err_len, "out of memory loading the vocabulary");
    if (rc != LLM_OK) {
        tok_vocab_free(v);
        return rc;
    }
    *out = v;
    return LLM_OK;
}

void
tok_vocab_free(tok_vocab *v)
{
    if (v == NULL)
        return;
    free(v->text);
    free(v->text_off);
    free(v->dec);
    free(v->dec_off);
    free(v->type);
    free(v->score);
    free(v->by_text);
    free(v->merges);
    free(v->special);
    free(v->chat_system);
    free(v);
}

/* ------------------------------------------------------------------------------------ */
/* accessors                                                                             */

tok_kind
tok_vocab_kind(const tok_vocab *v)
{
    return v->kind;
}

int32_t
tok_n_vocab(const tok_vocab *v)
{
    return v->n_vocab;
}

int32_t
tok_bos(const tok_vocab *v)
{
    return v->bos;
}

int32_t
tok_eos(const tok_vocab *v)
{
    return v->eos;
}

bool
tok_add_bos(const tok_vocab *v)
{
    return v->add_bos && v->bos >= 0;
}

bool
tok_is_eog(const tok_vocab *v, int32_t id)
{
    for (size_t i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id)
            return true;
    return false;
}

int32_t
tok_find(const tok_vocab *v, const char *s)
{
    assert(s != NULL);
    size_t n = strlen(s);
    return n == 0 ? -1 : tok__lookup_text(v, s, n);
}

/* ------------------------------------------------------------------------------------ */
/* decode                                                                                */

/* token_piece points at the bytes id renders to. */
static void
token_piece(const tok_vocab *v, int32_t id, bool render_special, const char **p, size_t *n)
{
    if (render_special && is_special_type(v->type[id])) {
        *p = v->text + v->text_off[id];
        *n = v->text_off[id + 1] - v->text_off[id];
    } else {
        *p = v->dec + v->dec_off[id];
        *n = v->dec_off[id + 1] - v->dec_off[id];
    }
}

int
tok_token_bytes(const tok_vocab *v, int32_t id, bool render_special, char *buf, size_t cap,
                size_t *len)
{
    assert(v != NULL && len != NULL && (buf != NULL || cap == 0));
    if (id < 0 || id >= v->n_vocab)
        return LLM_EINVAL;
    const char *p;
    size_t n;
    token_piece(v, id, render_special, &p, &n);
    *len = n;
    if (n > cap)
        return LLM_ERANGE;
    if (n > 0) // buf may be NULL when cap is 0
        memcpy(buf, p, n);
    return LLM_OK;
}

int
tok_decode(const tok_vocab *v, const int32_t *ids, size_t n_ids, bool render_special, char **out,
           size_t *len)
{
    assert(v != NULL && (ids != NULL || n_ids == 0) && out != NULL && len != NULL);
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= v->n_vocab)
            return LLM_EINVAL;
        total += v->text_off[ids[i] + 1] - v->text_off[ids[i]] + v->dec_off[ids[i] + 1] -
                 v->dec_off[ids[i]];
    }
    char *o = malloc(total + 1);
    if (o == NULL)
        return LLM_ENOMEM;
    size_t k = 0;
    // SPM: the first token with text of its own (control tokens such as <s> may come
    // first) loses the space that add_space_prefix put in front of the text.
    bool strip = v->kind == TOK_KIND_SPM && v->add_space_prefix;
    for (size_t i = 0; i < n_ids; i++) {
        const char *p;
        size_t n;
        token_piece(v, ids[i], render_special, &p, &n);
        if (strip && !is_special_type(v->type[ids[i]])) {
            if (v->type[ids[i]] == TOK_TYPE_NORMAL && n > 0 && p[0] == ' ')
                p++, n--;
            strip = false;
        }
        memcpy(o + k, p, n);
        k += n;
    }
    o[k] = '\0';
    *out = o;
    *len = k;
    return LLM_OK;
}

/* ------------------------------------------------------------------------------------ */
/* chat formats                                                                          */

// trimmed gives s without leading and trailing ASCII white space, as Jinja's |trim.
static void
trimmed(const char *s, const char **p, size_t *n)
{
    size_t a = 0, b = strlen(s);
    while (a < b && strchr(" \t\r\n\v\f", s[a]) != NULL)
        a++;
    while (b > a && strchr(" \t\r\n\v\f", s[b - 1]) != NULL)
        b--;
    *p = s + a;
    *n = b - a;
}

static void
chat_chatml(const tok_vocab *v, const tok_chat_msg *msgs, size_t n_msgs, bool add_assistant,
            sbuf *b)
{
    if (v->chat_system != NULL && (n_msgs == 0 || strcmp(msgs[0].role, "system") != 0)) {
        sb_puts(b, "<|im_start|>system\n");
        sb_puts(b, v->chat_system);
        sb_puts(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n_msgs; i++) {
        sb_puts(b, "<|im_start|>");
        sb_puts(b, msgs[i].role);
        sb_puts(b, "\n");
        sb_puts(b, msgs[i].content);
        sb_puts(b, "<|im_end|>\n");
    }
    if (add_assistant)
        sb_puts(b, "<|im_start|>assistant\n");
}

/* Llama 3: the template's {{ bos_token }} is left to the encoder (tok_add_bos). */
static void
chat_llama3(const tok_chat_msg *msgs, size_t n_msgs, bool add_assistant, sbuf *b)
{
    for (size_t i = 0; i < n_msgs; i++) {
        const char *p;
        size_t n;
        trimmed(msgs[i].content, &p, &n);
        sb_puts(b, "<|start_header_id|>");
        sb_puts(b, msgs[i].role);
        sb_puts(b, "<|end_header_id|>\n\n");
        sb_put(b, p, n);
        sb_puts(b, "<|eot_id|>");
    }
    if (add_assistant)
        sb_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Llama 2, as Meta's template renders it (system prompt folded into the first turn;
 * "[INST] q [/INST] a </s><s>[INST] ..."): the first <s> is the encoder's BOS, the later
 * ones are text for parse_special. The format has no assistant header, so add_assistant
 * changes nothing. */
static void
chat_llama2(const tok_chat_msg *msgs, size_t n_msgs, sbuf *b)
{
    bool in_turn = true;
    sb_puts(b, "[INST] ");
    for (size_t i = 0; i < n_msgs; i++) {
        const char *p;
        size_t n;
        trimmed(msgs[i].content, &p, &n);
        if (!in_turn) {
            sb_puts(b, "<s>[INST] ");
            in_turn = true;
        }
        if (strcmp(msgs[i].role, "system") == 0) {
            sb_puts(b, "<<SYS>>\n");
            sb_put(b, p, n);
            sb_puts(b, "\n<</SYS>>\n\n");
        } else if (strcmp(msgs[i].role, "user") == 0) {
            sb_put(b, p, n);
            sb_puts(b, " [/INST]");
        } else {
            sb_puts(b, " ");
            sb_put(b, p, n);
            sb_puts(b, " </s>");
            in_turn = false;
        }
    }
}

int
tok_chat_apply(const tok_vocab *v, const tok_chat_msg *msgs, size_t n_msgs, bool add_assistant,
               char **out)
{
    assert(v != NULL && (msgs != NULL || n_msgs == 0) && out != NULL);
    for (size_t i = 0; i < n_msgs; i++)
        assert(msgs[i].role != NULL && msgs[i].content != NULL);
    sbuf b = {0};
    switch (v->chat) {
    case TOK_CHAT_CHATML: chat_chatml(v, msgs, n_msgs, add_assistant, &b); break;
    case TOK_CHAT_LLAMA3: chat_llama3(msgs, n_msgs, add_assistant, &b); break;
    case TOK_CHAT_LLAMA2: chat_llama2(msgs, n_msgs, &b); break;
    case TOK_CHAT_NONE: return LLM_ENOTSUP;
    }
    sb_put(&b, "", 0); // an empty conversation still gets a string
    if (b.oom) {
        free(b.p);
        return LLM_ENOMEM;
    }
    *out = b.p;
    return LLM_OK;
}

int
tok_prompt(const tok_vocab *v, const char *text, const tok_chat_msg *msgs, size_t n_msgs,
           int32_t **ids, size_t *n_ids)
{
    char *chat = NULL;
    int rc;
    if (msgs) {
        if ((rc = tok_chat_apply(v, msgs, n_msgs, true, &chat)) != LLM_OK)
            return rc;
        text = chat;
    }
    int32_t *body = NULL;
    size_t n_body = 0;
    rc = tok_encode(v, text, strlen(text), msgs != NULL, &body, &n_body);
    free(chat);
    if (rc != LLM_OK)
        return rc;
    bool bos = tok_add_bos(v) && tok_bos(v) >= 0;
    int32_t *out = malloc(sizeof(int32_t) * (n_body + 1));
    if (!out) {
        free(body);
        return LLM_ENOMEM;
    }
    if (bos)
        out[0] = tok_bos(v);
    if (n_body)
        memcpy(out + bos, body, sizeof(int32_t) * n_body);
    free(body);
    *ids = out;
    *n_ids = n_body + bos;
    return LLM_OK;
}
