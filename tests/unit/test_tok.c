/*
 * test_tok.c - the tokenizer on small vocabularies written to GGUF files by the tests
 * themselves: byte-level BPE (256 byte tokens, a few merges, ChatML control tokens) and
 * SentencePiece (byte fallback, a few scored pieces). Covers splitting, merge order,
 * special tokens, exact round trips of random bytes, chat formats and the error for every
 * missing or malformed key. The "model" case checks a few encodings of the real SmolLM2
 * vocabulary (ids from HuggingFace tokenizers) when $LLM_SOURCE_DIR/models has it; the
 * full oracle comparison is tests/integration/test_tokenizer_oracle.py.
 */
#include "tok.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_write.h"
#include "llm_err.h"
#include "test_helpers.h"

/* ------------------------------------------------------------------------------------ */
/* test vocabularies                                                                     */

#define MAX_TOKENS 512
#define MAX_MERGES 64

/* A vocabulary definition that a test may edit before it is written. */
typedef struct {
    const char *model, *pre, *chat_template; // NULL: key omitted
    const char *tokens[MAX_TOKENS];
    size_t token_lens[MAX_TOKENS];
    int32_t types[MAX_TOKENS];
    float scores[MAX_TOKENS];
    size_t n;
    const char *merges[MAX_MERGES];
    size_t n_merges;
    int32_t bos, eos, eot; // -1: key omitted
    int add_space_prefix;  // -1: key omitted
    bool omit_tokens, omit_types, omit_scores, omit_merges;
    char store[MAX_TOKENS][32];
    int (*extra)(gguf_writer *w); // adds keys a test needs (wrong types ...)
} vdef;

/* BPE layout: 0..2 ChatML controls, 3..258 the bytes, then one token per merge, then
 * the extras below. Merges are written in GPT-2 byte-level characters (Ġ = ' ',
 * Ċ = '\n'; ä = "Ã ¤"; 😀 = "ð Ł ĺ Ģ"). */
static const char *const bpe_merges[] = {
    "h e",                               // 0  he
    "l l",                               // 1  ll
    "he ll",                             // 2  hell
    "hell o",                            // 3  hello
    "\xc4\xa0 w",                        // 4  Ġw
    "o r",                               // 5  or
    "\xc4\xa0w or",                      // 6  Ġwor
    "l d",                               // 7  ld
    "\xc4\xa0wor ld",                    // 8  Ġworld
    "' s",                               // 9  's
    "\xc4\xa0 \xc4\xa0",                 // 10 ĠĠ
    "1 2",                               // 11 12
    "\xc4\x8a \xc4\x8a",                 // 12 ĊĊ
    "a a",                               // 13 aa
    "\xc3\x83 \xc2\xa4",                 // 14 ä
    "\xc3\xb0 \xc5\x81",                 // 15 ðŁ
    "\xc4\xba \xc4\xa2",                 // 16 ĺĢ
    "\xc3\xb0\xc5\x81 \xc4\xba\xc4\xa2", // 17 😀
};
#define N_BPE_MERGES (sizeof(bpe_merges) / sizeof(bpe_merges[0]))
#define BT(b) (3 + (int32_t)(unsigned char)(b)) // the token of byte b
#define MT(i) (259 + (int32_t)(i))              // the token of merge i
#define X_IM (MT(N_BPE_MERGES) + 0)             // control "<|im", a prefix of <|im_start|>
#define X_TOOL (MT(N_BPE_MERGES) + 1)           // user-defined "<tool>"
#define X_XYZ (MT(N_BPE_MERGES) + 2)            // normal "xyz", reachable by no merge
#define X_EOT (MT(N_BPE_MERGES) + 3)            // control "<|end_turn|>", the eot id

static const char smollm_template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

// GPT-2's bytes_to_unicode, written out again so the test does not borrow tok.c's.
static uint32_t
byte_char(unsigned b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
        return b;
    uint32_t n = 0;
    for (unsigned k = 0; k < b; k++)
        n += !((k >= 0x21 && k <= 0x7E) || (k >= 0xA1 && k <= 0xAC) || k >= 0xAE);
    return 256 + n;
}

static void
put_utf8(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    }
}

static void
vdef_add(vdef *d, const char *text, int32_t type, float score)
{
    ck_assert_uint_lt(d->n, MAX_TOKENS);
    snprintf(d->store[d->n], sizeof(d->store[0]), "%s", text);
    d->tokens[d->n] = d->store[d->n];
    d->token_lens[d->n] = strlen(text);
    d->types[d->n] = type;
    d->scores[d->n] = score;
    d->n++;
}

static void
vdef_bpe(vdef *d, const char *pre)
{
    memset(d, 0, sizeof(*d));
    d->model = "gpt2";
    d->pre = pre;
    d->bos = 1;
    d->eos = 0;
    d->eot = -1;
    d->add_space_prefix = -1;
    d->chat_template = smollm_template;
    vdef_add(d, "<|endoftext|>", 3, 0);
    vdef_add(d, "<|im_start|>", 3, 0);
    vdef_add(d, "<|im_end|>", 3, 0);
    for (unsigned b = 0; b < 256; b++) {
        char s[4];
        put_utf8(byte_char(b), s);
        vdef_add(d, s, 1, 0);
    }
    for (size_t i = 0; i < N_BPE_MERGES; i++) {
        char joined[32];
        const char *sp = strchr(bpe_merges[i], ' ');
        snprintf(joined, sizeof(joined), "%.*s%s", (int)(sp - bpe_merges[i]), bpe_merges[i],
                 sp + 1);
        vdef_add(d, joined, 1, 0);
        d->merges[d->n_merges++] = bpe_merges[i];
    }
    vdef_add(d, "<|im", 3, 0);
    vdef_add(d, "<tool>", 4, 0);
    vdef_add(d, "xyz", 1, 0);
    vdef_add(d, "<|end_turn|>", 3, 0);
}

/* SPM layout: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then the pieces. */
#define SB(b) (3 + (int32_t)(unsigned char)(b))
enum {
    SP_SPACE = 259, // "▁"
    SP_H_,          // "▁h"
    SP_HE,          // "he"
    SP_LL,          // "ll"
    SP_HELL,        // "hell"
    SP__HELL,       // "▁hell"
    SP_O,           // "o"
    SP__HELLO,      // "▁hello"
    SP__W,          // "▁w"
    SP_OR,          // "or"
    SP_LD,          // "ld"
    SP__WOR,        // "▁wor"
    SP__WORLD,      // "▁world"
    SP_SPACE2,      // "▁▁"
    SP_A,           // "a"
    SP_B,           // "b"
    SP_C,           // "c"
    SP_AB,          // "ab"
    SP_BC,          // "bc"
    SP_H,
    SP_E,
    SP_L,
    SP_W,
    SP_R,
    SP_D,
    SP_IM_START, // control "<|im_start|>"
};

static void
vdef_spm(vdef *d, bool byte_fallback)
{
    static const struct {
        const char *text;
        float score;
    } pieces[] = {
        {"\xe2\x96\x81", -5},
        {"\xe2\x96\x81h", -3},
        {"he", -1},
        {"ll", -2},
        {"hell", -0.5f},
        {"\xe2\x96\x81hell", -0.3f},
        {"o", -4},
        {"\xe2\x96\x81hello", -0.1f},
        {"\xe2\x96\x81w", -3},
        {"or", -2},
        {"ld", -2},
        {"\xe2\x96\x81wor", -1},
        {"\xe2\x96\x81world", -0.2f},
        {"\xe2\x96\x81\xe2\x96\x81", -2.5f},
        {"a", -6},
        {"b", -6},
        {"c", -6},
        {"ab", -1},
        {"bc", -0.5f},
        {"h", -6},
        {"e", -6},
        {"l", -6},
        {"w", -6},
        {"r", -6},
        {"d", -6},
    };
    memset(d, 0, sizeof(*d));
    d->model = "llama";
    d->bos = 1;
    d->eos = 2;
    d->eot = -1;
    d->add_space_prefix = -1; // llama's default: on
    vdef_add(d, "<unk>", 2, 0);
    vdef_add(d, "<s>", 3, 0);
    vdef_add(d, "</s>", 3, 0);
    for (unsigned b = 0; b < 256; b++) {
        char s[16];
        // Without byte fallback the slots hold unused tokens, so ids stay the same.
        snprintf(s, sizeof(s), byte_fallback ? "<0x%02X>" : "<unused%02X>", b);
        vdef_add(d, s, byte_fallback ? 6 : 5, 0);
    }
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++)
        vdef_add(d, pieces[i].text, 1, pieces[i].score);
    vdef_add(d, "<|im_start|>", 3, 0);
}

static int
vdef_write(const vdef *d, const char *path)
{
    gguf_writer *w = NULL;
    int rc = gguf_writer_new(&w);
    if (rc == LLM_OK && d->model)
        rc = gguf_writer_set_str(w, "tokenizer.ggml.model", d->model);
    if (rc == LLM_OK && d->pre)
        rc = gguf_writer_set_str(w, "tokenizer.ggml.pre", d->pre);
    if (rc == LLM_OK && !d->omit_tokens)
        rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", d->tokens, d->token_lens, d->n);
    if (rc == LLM_OK && !d->omit_types)
        rc = gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", d->types, d->n);
    if (rc == LLM_OK && !d->omit_scores)
        rc = gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", d->scores, d->n);
    if (rc == LLM_OK && !d->omit_merges && strcmp(d->model ? d->model : "", "gpt2") == 0)
        rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", d->merges, NULL, d->n_merges);
    if (rc == LLM_OK && d->bos >= 0)
        rc = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)d->bos);
    if (rc == LLM_OK && d->eos >= 0)
        rc = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)d->eos);
    if (rc == LLM_OK && d->eot >= 0)
        rc = gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)d->eot);
    if (rc == LLM_OK && d->add_space_prefix >= 0)
        rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", d->add_space_prefix);
    if (rc == LLM_OK && d->chat_template)
        rc = gguf_writer_set_str(w, "tokenizer.chat_template", d->chat_template);
    if (rc == LLM_OK && d->extra)
        rc = d->extra(w);
    if (rc == LLM_OK)
        rc = gguf_writer_write(w, path);
    gguf_writer_free(w);
    return rc;
}

/* vdef_load writes d to a temporary file and loads it; returns tok_vocab_load's code
 * (err gets its message). The file is gone afterwards: the vocab copies what it needs. */
static int
vdef_load(const vdef *d, tok_vocab **v, char *err, size_t err_len)
{
    char path[256];
    gguf_file *f = NULL;
    test_tmp_path(path, sizeof(path), "tok.gguf");
    ck_assert_int_eq(vdef_write(d, path), LLM_OK);
    ck_assert_int_eq(gguf_open(path, NULL, &f, err, err_len), LLM_OK);
    err[0] = '\0';
    int rc = tok_vocab_load(f, v, err, err_len);
    gguf_close(f);
    unlink(path);
    return rc;
}

static tok_vocab *
load_ok(const vdef *d)
{
    char err[256];
    tok_vocab *v = NULL;
    int rc = vdef_load(d, &v, err, sizeof(err));
    ck_assert_msg(rc == LLM_OK, "tok_vocab_load: %s (%s)", err, llm_strerror(rc));
    return v;
}

static tok_vocab *
bpe_vocab(const char *pre)
{
    vdef d;
    vdef_bpe(&d, pre);
    return load_ok(&d);
}

static tok_vocab *
spm_vocab(void)
{
    vdef d;
    vdef_spm(&d, true);
    return load_ok(&d);
}

/* ------------------------------------------------------------------------------------ */
/* assertions                                                                            */

static void
format_ids(const int32_t *ids, size_t n, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && k + 16 < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? " %d" : "%d", (int)ids[i]);
}

/* expect_ids checks that text (len bytes) encodes to exactly want[0..n_want). */
static void
expect_ids(const tok_vocab *v, const char *text, size_t len, bool special, const int32_t *want,
           size_t n_want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    ck_assert_int_eq(tok_encode(v, text, len, special, &ids, &n), LLM_OK);
    char got_s[512], want_s[512];
    format_ids(ids, n, got_s, sizeof(got_s));
    format_ids(want, n_want, want_s, sizeof(want_s));
    ck_assert_msg(n == n_want && memcmp(ids, want, n * sizeof(int32_t)) == 0,
                  "encode(\"%.*s\"): got [%s], want [%s]", (int)len, text, got_s, want_s);
    free(ids);
}

#define EXPECT(v, text, special, ...)                                                              \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        expect_ids((v), (text), sizeof(text) - 1, (special), want_,                                \
                   sizeof(want_) / sizeof(want_[0]));                                              \
    } while (0)

/* expect_round_trip checks decode(encode(s)) == s byte for byte. */
static void
expect_round_trip(const tok_vocab *v, const char *s, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0, out_len = 0;
    char *out = NULL;
    ck_assert_int_eq(tok_encode(v, s, len, false, &ids, &n), LLM_OK);
    ck_assert_int_eq(tok_decode(v, ids, n, false, &out, &out_len), LLM_OK);
    ck_assert_msg(out_len == len && memcmp(out, s, len) == 0,
                  "round trip of %zu bytes gave %zu bytes", len, out_len);
    ck_assert_int_eq(out[out_len], '\0');
    free(ids);
    free(out);
}

static char *
decode_str(const tok_vocab *v, const int32_t *ids, size_t n, bool render_special)
{
    char *out = NULL;
    size_t len = 0;
    ck_assert_int_eq(tok_decode(v, ids, n, render_special, &out, &len), LLM_OK);
    ck_assert_uint_eq(strlen(out), len);
    return out;
}

/* ------------------------------------------------------------------------------------ */
/* bpe                                                                                   */

START_TEST(test_bpe_empty_text_gives_no_tokens)
{
    tok_vocab *v = bpe_vocab("smollm");
    int32_t *ids = NULL;
    size_t n = 99;
    ck_assert_int_eq(tok_encode(v, "", 0, false, &ids, &n), LLM_OK);
    ck_assert_uint_eq(n, 0);
    free(ids);
    ck_assert_int_eq(tok_encode(v, NULL, 0, true, &ids, &n), LLM_OK);
    ck_assert_uint_eq(n, 0);
    free(ids);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_one_byte_is_its_byte_token)
{
    tok_vocab *v = bpe_vocab("smollm");
    EXPECT(v, "x", false, BT('x'));
    EXPECT(v, " ", false, BT(' '));
    EXPECT(v, "\x00", false, BT(0));
    EXPECT(v, "\xff", false, BT(0xff));
    ck_assert_int_eq(tok_vocab_kind(v), TOK_KIND_BPE);
    ck_assert_int_eq(tok_n_vocab(v), X_EOT + 1);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_merges_apply_in_rank_order)
{
    tok_vocab *v = bpe_vocab("smollm");
    EXPECT(v, "hello", false, MT(3));
    EXPECT(v, " world", false, MT(8));
    EXPECT(v, "hello world", false, MT(3), MT(8));
    EXPECT(v, "hell", false, MT(2));
    EXPECT(v, "helo", false, MT(0), BT('l'), BT('o'));
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_equal_pairs_merge_leftmost_first)
{
    tok_vocab *v = bpe_vocab("smollm");
    EXPECT(v, "aaa", false, MT(13), BT('a'));
    EXPECT(v, "aaaa", false, MT(13), MT(13));
    EXPECT(v, "aaaaa", false, MT(13), MT(13), BT('a'));
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_smollm_splits_every_digit)
{
    tok_vocab *v = bpe_vocab("smollm");
    EXPECT(v, "12", false, BT('1'), BT('2'));
    EXPECT(v, " 12", false, BT(' '), BT('1'), BT('2'));
    // The digit split comes first, so "  " before a digit stays one word.
    EXPECT(v, "a  1", false, BT('a'), MT(10), BT('1'));
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_gpt2_keeps_digit_runs_together)
{
    tok_vocab *v = bpe_vocab("gpt2");
    EXPECT(v, "12", false, MT(11));
    EXPECT(v, " 12", false, BT(' '), MT(11));
    EXPECT(v, "a  1", false, BT('a'), BT(' '), BT(' '), BT('1'));
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_contractions_split_off)
{
    tok_vocab *v = bpe_vocab("smollm");
    EXPECT(v, "he's", false, MT(0), MT(9));
    // GPT-2's contractions are case-sensitive: "'S" is punctuation then a letter.
    EXPECT(v, "he'S", false, MT(0), BT('\''), BT('S'));
    EXPECT(v, "''s", false, BT('\''), BT('\''), BT('s'));
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_space_runs_leave_one_space_for_the_next_word)
{
    tok_vocab *v = bpe_vocab("smollm");
    EXPECT(v, "a   world", false, BT('a'), MT(10), MT(8));
    EXPECT(v, "a   ", false, BT('a'), MT(10), BT(' '));
    EXPECT(v, "\n\n\n", false, MT(12), BT('\n'));
    // "\n" is no word prefix: the run gives its last "\n" up as a word of its own.
    EXPECT(v, "a\n\nb", false, BT('a'), BT('\n'), BT('\n'), BT('b'));
    EXPECT(v, "a \tb", false, BT('a'), BT(' '), BT('\t'), BT('b'));
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_multibyte_utf8_merges_byte_level)
{
    tok_vocab *v = bpe_vocab("smollm");
    EXPECT(v, "\xc3\xa4", false, MT(14));                           // ä, 2 bytes
    EXPECT(v, "\xf0\x9f\x98\x80", false, MT(17));                   // 😀, 4 bytes
    EXPECT(v, "\xe6\x97\xa5", false, BT(0xe6), BT(0x97), BT(0xa5)); // 日, no merges
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_invalid_utf8_bytes_stand_alone)
{
    tok_vocab *v = bpe_vocab("smollm");
    // A stray byte is an "other" character: it separates the letters around it.
    EXPECT(v, "h\xffllo", false, BT('h'), BT(0xff), MT(1), BT('o'));
    // A truncated 4-byte sequence is three "other" characters, one word, merged byte-level.
    EXPECT(v, "\xf0\x9f\x98", false, MT(15), BT(0x98));
    EXPECT(v, "\xc0\xaf", false, BT(0xc0), BT(0xaf)); // overlong '/'
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_llama3_groups_three_digits_and_folds_contractions)
{
    tok_vocab *v = bpe_vocab("llama-bpe");
    EXPECT(v, "12345", false, MT(11), BT('3'), BT('4'), BT('5'));
    EXPECT(v, "he'S", false, MT(0), BT('\''), BT('S'));
    EXPECT(v, "xyz", false, X_XYZ); // a word that is a token skips merging
    EXPECT(v, "a\n\n b", false, BT('a'), MT(12), BT(' '), BT('b'));
    tok_vocab_free(v);
    v = bpe_vocab("smollm");
    EXPECT(v, "xyz", false, BT('x'), BT('y'), BT('z'));
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_bpe_long_inputs_encode_quickly)
{
    tok_vocab *v = bpe_vocab("smollm");
    size_t n = 200000;
    char *s = malloc(n);
    ck_assert_ptr_nonnull(s);
    // One 200 KB word of equal pairs: the heap keeps this O(n log n).
    memset(s, 'a', n);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    ck_assert_int_eq(tok_encode(v, s, n, false, &ids, &n_ids), LLM_OK);
    ck_assert_uint_eq(n_ids, n / 2);
    free(ids);
    memset(s, ' ', n);
    expect_round_trip(v, s, n);
    memset(s, '\n', n);
    expect_round_trip(v, s, n);
    free(s);
    tok_vocab_free(v);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* spm                                                                                   */

START_TEST(test_spm_merges_highest_score_first)
{
    tok_vocab *v = spm_vocab();
    ck_assert_int_eq(tok_vocab_kind(v), TOK_KIND_SPM);
    EXPECT(v, "hello", false, SP__HELLO);
    EXPECT(v, "hello world", false, SP__HELLO, SP__WORLD);
    // "bc" outscores "ab", and "abc" is no piece.
    EXPECT(v, "abc", false, SP_SPACE, SP_A, SP_BC);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_spm_unknown_characters_fall_back_to_bytes)
{
    tok_vocab *v = spm_vocab();
    EXPECT(v, "x", false, SP_SPACE, SB('x'));
    EXPECT(v, "\xc3\xa9", false, SP_SPACE, SB(0xc3), SB(0xa9));
    EXPECT(v, "a\nb", false, SP_SPACE, SP_A, SB('\n'), SP_B);
    EXPECT(v, "\xff", false, SP_SPACE, SB(0xff));
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_spm_spaces_become_the_marker)
{
    tok_vocab *v = spm_vocab();
    EXPECT(v, " hello", false, SP_SPACE, SP__HELLO);
    EXPECT(v, "a  b", false, SP_SPACE, SP_A, SP_SPACE2, SP_B);
    EXPECT(v, " ", false, SP_SPACE2);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_spm_literal_marker_stays_bytes)
{
    tok_vocab *v = spm_vocab();
    EXPECT(v,
           "a\xe2\x96\x81"
           "b",
           false, SP_SPACE, SP_A, SB(0xe2), SB(0x96), SB(0x81), SP_B);
    expect_round_trip(v, "\xe2\x96\x81hello", 8);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_spm_without_space_prefix)
{
    vdef d;
    vdef_spm(&d, true);
    d.add_space_prefix = 0;
    tok_vocab *v = load_ok(&d);
    EXPECT(v, "hello", false, SP_HELL, SP_O);
    expect_round_trip(v, " hello", 6);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_spm_decode_drops_only_the_prefix_space)
{
    tok_vocab *v = spm_vocab();
    const int32_t ids[] = {1, SP__HELLO, SP__WORLD};
    char *s = decode_str(v, ids, 3, false);
    ck_assert_str_eq(s, "hello world");
    free(s);
    s = decode_str(v, ids, 3, true);
    ck_assert_str_eq(s, "<s>hello world");
    free(s);
    s = decode_str(v, ids + 2, 1, false);
    ck_assert_str_eq(s, "world");
    free(s);
    const int32_t bytes_first[] = {SB('x'), SP__WORLD};
    s = decode_str(v, bytes_first, 2, false);
    ck_assert_str_eq(s, "x world");
    free(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_spm_without_byte_tokens_uses_unknown)
{
    vdef d;
    vdef_spm(&d, false);
    tok_vocab *v = load_ok(&d);
    EXPECT(v, "x", false, SP_SPACE, 0);
    EXPECT(v, "ax\xc3\xa9", false, SP_SPACE, SP_A, 0, 0);
    const int32_t ids[] = {SP_A, 0};
    char *s = decode_str(v, ids, 2, false);
    ck_assert_str_eq(s, "a \xe2\x81\x87 ");
    free(s);
    s = decode_str(v, ids, 2, true);
    ck_assert_str_eq(s, "a<unk>");
    free(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_spm_bos_defaults_on)
{
    tok_vocab *v = spm_vocab();
    ck_assert(tok_add_bos(v));
    ck_assert_int_eq(tok_bos(v), 1);
    ck_assert_int_eq(tok_eos(v), 2);
    ck_assert(tok_is_eog(v, 2));
    tok_vocab_free(v);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* special                                                                               */

START_TEST(test_special_tokens_match_only_when_asked)
{
    tok_vocab *v = bpe_vocab("smollm");
    EXPECT(v, "<|im_start|>hello<|im_end|>", true, 1, MT(3), 2);
    EXPECT(v, "a<|im_end|>b", true, BT('a'), 2, BT('b'));
    EXPECT(v, "<|im_start|><|im_end|>", true, 1, 2);
    EXPECT(v, "<|im_end|>", false, BT('<'), BT('|'), BT('i'), BT('m'), BT('_'), BT('e'), BT('n'),
           BT('d'), BT('|'), BT('>'));
    expect_round_trip(v, "<|im_start|>user\n<tool>", 23);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_special_longest_match_wins)
{
    tok_vocab *v = bpe_vocab("smollm");
    EXPECT(v, "<|im_start|>", true, 1);
    EXPECT(v, "<|im_sta", true, X_IM, BT('_'), BT('s'), BT('t'), BT('a'));
    EXPECT(v, "<|i", true, BT('<'), BT('|'), BT('i'));
    EXPECT(v, "<tool>he", true, X_TOOL, MT(0));
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_special_spm_text_after_a_special_gets_the_prefix)
{
    tok_vocab *v = spm_vocab();
    EXPECT(v, "<|im_start|>hello", true, SP_IM_START, SP__HELLO);
    EXPECT(v, "hello<|im_start|>", true, SP__HELLO, SP_IM_START);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_special_control_tokens_render_on_request)
{
    tok_vocab *v = bpe_vocab("smollm");
    const int32_t ids[] = {1, MT(3), 2, X_TOOL};
    char *s = decode_str(v, ids, 4, false);
    ck_assert_str_eq(s, "hello<tool>"); // user-defined tokens are text
    free(s);
    s = decode_str(v, ids, 4, true);
    ck_assert_str_eq(s, "<|im_start|>hello<|im_end|><tool>");
    free(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_special_eog_covers_eos_eot_and_known_names)
{
    vdef d;
    vdef_bpe(&d, "smollm");
    d.eot = X_EOT;
    tok_vocab *v = load_ok(&d);
    ck_assert(tok_is_eog(v, 0));     // eos, also <|endoftext|>
    ck_assert(tok_is_eog(v, 2));     // <|im_end|> by name
    ck_assert(tok_is_eog(v, X_EOT)); // eot_token_id
    ck_assert(!tok_is_eog(v, 1));
    ck_assert(!tok_is_eog(v, BT('a')));
    ck_assert(!tok_is_eog(v, -1));
    ck_assert_int_eq(tok_eos(v), 0);
    ck_assert_int_eq(tok_bos(v), 1);
    ck_assert(!tok_add_bos(v)); // BPE default
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_special_find_matches_whole_texts)
{
    tok_vocab *v = bpe_vocab("smollm");
    ck_assert_int_eq(tok_find(v, "<|im_start|>"), 1);
    ck_assert_int_eq(tok_find(v, "hello"), MT(3));
    ck_assert_int_eq(tok_find(v, "\xc4\xa0world"), MT(8));
    ck_assert_int_eq(tok_find(v, "hel"), -1);
    ck_assert_int_eq(tok_find(v, ""), -1);
    tok_vocab_free(v);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* roundtrip                                                                             */

static uint64_t
rng_next(uint64_t *s)
{
    // xorshift64*: fixed seed, same strings on every run and machine.
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* random_text fills buf with n bytes mixing raw random bytes, ASCII letters, digits,
 * white space, quotes and valid 2..4-byte UTF-8 sequences, so that every splitter
 * branch and every invalid-UTF-8 case gets exercised. */
static void
random_text(uint64_t *rng, char *buf, size_t n)
{
    static const char *const pieces[] = {
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "'s",
        "'",
        "he",
        "ll",
        "o",
        " world",
        "12",
        "a",
        "\xc3\xa4",
        "\xf0\x9f\x98\x80",
        "\xe2\x96\x81",
        "<|im_end|>",
        "\xe6\x97\xa5",
        "\xc2\xa0",
        "\xe3\x80\x80",
    };
    size_t k = 0;
    while (k < n) {
        uint64_t r = rng_next(rng);
        const char *p = pieces[r % (sizeof(pieces) / sizeof(pieces[0]))];
        size_t len = strlen(p);
        if ((r >> 32) % 3 == 0 || k + len > n) {
            buf[k++] = (char)(r >> 40); // any byte at all
        } else {
            memcpy(buf + k, p, len);
            k += len;
        }
    }
}

static void
round_trip_random(const tok_vocab *v, uint64_t seed, int count)
{
    uint64_t rng = seed;
    char buf[96];
    for (int i = 0; i < count; i++) {
        size_t n = rng_next(&rng) % sizeof(buf);
        random_text(&rng, buf, n);
        expect_round_trip(v, buf, n);
    }
}

START_TEST(test_roundtrip_bpe_random_bytes)
{
    tok_vocab *v = bpe_vocab("smollm");
    round_trip_random(v, 0x1234567u, 3000);
    tok_vocab_free(v);
    v = bpe_vocab("gpt2");
    round_trip_random(v, 0x7654321u, 1000);
    tok_vocab_free(v);
    v = bpe_vocab("llama-bpe");
    round_trip_random(v, 0xabcdefu, 1000);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_roundtrip_spm_random_bytes)
{
    tok_vocab *v = spm_vocab();
    round_trip_random(v, 0x5eed5eedu, 3000);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_roundtrip_every_single_byte_and_pair)
{
    tok_vocab *b = bpe_vocab("smollm"), *s = spm_vocab();
    for (unsigned i = 0; i < 256; i++) {
        char one[1] = {(char)i};
        expect_round_trip(b, one, 1);
        expect_round_trip(s, one, 1);
        for (unsigned j = 0; j < 256; j += 17) {
            char two[2] = {(char)i, (char)j};
            expect_round_trip(b, two, 2);
            expect_round_trip(s, two, 2);
        }
    }
    tok_vocab_free(b);
    tok_vocab_free(s);
}
END_TEST

START_TEST(test_roundtrip_whitespace_runs)
{
    tok_vocab *b = bpe_vocab("smollm"), *s = spm_vocab();
    const char *cases[] = {" ",      "    ",   "\n\n\n\n", " \n \n ",           "\t\t x \t",
                           "x     ", "     x", "\r\n\r\n", "\xc2\xa0\xc2\xa0 x"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_round_trip(b, cases[i], strlen(cases[i]));
        expect_round_trip(s, cases[i], strlen(cases[i]));
    }
    tok_vocab_free(b);
    tok_vocab_free(s);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* decode                                                                                */

START_TEST(test_decode_rejects_ids_out_of_range)
{
    tok_vocab *v = bpe_vocab("smollm");
    char *out = NULL;
    size_t len = 0;
    const int32_t bad_low[] = {BT('a'), -1};
    const int32_t bad_high[] = {tok_n_vocab(v)};
    ck_assert_int_eq(tok_decode(v, bad_low, 2, false, &out, &len), LLM_EINVAL);
    ck_assert_int_eq(tok_decode(v, bad_high, 1, false, &out, &len), LLM_EINVAL);
    ck_assert_ptr_null(out);
    char buf[8];
    ck_assert_int_eq(tok_token_bytes(v, -1, false, buf, sizeof(buf), &len), LLM_EINVAL);
    ck_assert_int_eq(tok_token_bytes(v, tok_n_vocab(v), false, buf, sizeof(buf), &len), LLM_EINVAL);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_decode_of_nothing_is_the_empty_string)
{
    tok_vocab *v = bpe_vocab("smollm");
    char *s = decode_str(v, NULL, 0, false);
    ck_assert_str_eq(s, "");
    free(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_token_bytes_reports_length_when_too_small)
{
    tok_vocab *v = bpe_vocab("smollm");
    char buf[16];
    size_t len = 0;
    ck_assert_int_eq(tok_token_bytes(v, MT(3), false, buf, 2, &len), LLM_ERANGE);
    ck_assert_uint_eq(len, 5);
    ck_assert_int_eq(tok_token_bytes(v, MT(3), false, buf, 5, &len), LLM_OK);
    ck_assert(memcmp(buf, "hello", 5) == 0);
    ck_assert_int_eq(tok_token_bytes(v, MT(8), false, buf, sizeof(buf), &len), LLM_OK);
    ck_assert_uint_eq(len, 6);
    ck_assert(memcmp(buf, " world", 6) == 0);
    // A partial UTF-8 sequence: the first byte of 😀.
    ck_assert_int_eq(tok_token_bytes(v, BT(0xf0), false, buf, sizeof(buf), &len), LLM_OK);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq((unsigned char)buf[0], 0xf0);
    ck_assert_int_eq(tok_token_bytes(v, 1, false, NULL, 0, &len), LLM_OK);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(tok_token_bytes(v, 1, true, buf, sizeof(buf), &len), LLM_OK);
    ck_assert_uint_eq(len, 12);
    tok_vocab_free(v);
    v = spm_vocab();
    ck_assert_int_eq(tok_token_bytes(v, SP__HELLO, false, buf, sizeof(buf), &len), LLM_OK);
    ck_assert_uint_eq(len, 6);
    ck_assert(memcmp(buf, " hello", 6) == 0); // the marker is kept as a space
    ck_assert_int_eq(tok_token_bytes(v, SB(0x0a), false, buf, sizeof(buf), &len), LLM_OK);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(buf[0], '\n');
    tok_vocab_free(v);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* chat                                                                                  */

static char *
chat(const tok_vocab *v, const tok_chat_msg *m, size_t n, bool add_assistant)
{
    char *out = NULL;
    ck_assert_int_eq(tok_chat_apply(v, m, n, add_assistant, &out), LLM_OK);
    return out;
}

static tok_vocab *
bpe_with_template(const char *tmpl)
{
    vdef d;
    vdef_bpe(&d, "smollm");
    d.chat_template = tmpl;
    return load_ok(&d);
}

START_TEST(test_chat_chatml_inserts_the_template_default_system_prompt)
{
    tok_vocab *v = bpe_vocab("smollm");
    const tok_chat_msg m[] = {{"user", "Hi"}};
    char *s = chat(v, m, 1, true);
    ck_assert_str_eq(s, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                        "trained by Hugging Face<|im_end|>\n"
                        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_chat_chatml_keeps_a_given_system_prompt)
{
    tok_vocab *v = bpe_vocab("smollm");
    const tok_chat_msg m[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}};
    char *s = chat(v, m, 3, false);
    ck_assert_str_eq(s, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"
                        "<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n");
    free(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_chat_chatml_default_prompt_with_escaped_newline)
{
    tok_vocab *v = bpe_with_template(
        "{% if messages[0]['role'] != 'system' %}{{ \"<|im_start|>system\\nYou are "
        "\\\"Bot\\\".<|im_end|>\\n\" }}{% endif %}{% for m in messages %}{{'<|im_start|>' + "
        "m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}");
    char *s = chat(v, NULL, 0, true);
    ck_assert_str_eq(s, "<|im_start|>system\nYou are \"Bot\".<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_chat_chatml_without_a_default_adds_no_system_prompt)
{
    const char *tmpls[] = {
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + "
        "'<|im_end|>' + '\n'}}{% endfor %}",
        // A system block that is an expression, not a literal default.
        "{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
        "{{ '<|im_start|>' }}",
    };
    for (size_t i = 0; i < 2; i++) {
        tok_vocab *v = bpe_with_template(tmpls[i]);
        const tok_chat_msg m[] = {{"user", "Hi"}};
        char *s = chat(v, m, 1, true);
        ck_assert_str_eq(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        free(s);
        tok_vocab_free(v);
    }
}
END_TEST

START_TEST(test_chat_without_template_uses_chatml_only_if_the_vocab_has_it)
{
    tok_vocab *v = bpe_with_template(NULL);
    const tok_chat_msg m[] = {{"user", "Hi"}};
    char *s = chat(v, m, 1, true);
    ck_assert_str_eq(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    tok_vocab_free(v);

    vdef d;
    vdef_spm(&d, true);
    d.tokens[d.n - 1] = "<|im_starts|>"; // no <|im_start|> any more
    d.token_lens[d.n - 1] = strlen(d.tokens[d.n - 1]);
    v = load_ok(&d);
    s = NULL;
    ck_assert_int_eq(tok_chat_apply(v, m, 1, true, &s), LLM_ENOTSUP);
    ck_assert_ptr_null(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_chat_llama3_format)
{
    tok_vocab *v =
        bpe_with_template("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + "
                          "message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + "
                          "'<|eot_id|>' }}{% endfor %}");
    const tok_chat_msg m[] = {{"system", "S"}, {"user", "  Hi \n"}};
    char *s = chat(v, m, 2, true);
    ck_assert_str_eq(s, "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_chat_llama2_format)
{
    tok_vocab *v = bpe_with_template("{{ bos_token + '[INST] ' + content + ' [/INST]' }}");
    const tok_chat_msg m[] = {{"system", "S"}, {"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}};
    char *s = chat(v, m, 4, true);
    ck_assert_str_eq(s, "[INST] <<SYS>>\nS\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST]");
    free(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_chat_unknown_template_is_not_supported)
{
    tok_vocab *v = bpe_with_template("{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}");
    const tok_chat_msg m[] = {{"user", "Hi"}};
    char *s = NULL;
    ck_assert_int_eq(tok_chat_apply(v, m, 1, true, &s), LLM_ENOTSUP);
    ck_assert_ptr_null(s);
    tok_vocab_free(v);
}
END_TEST

START_TEST(test_chat_output_tokenizes_with_special_tokens)
{
    tok_vocab *v = bpe_vocab("smollm");
    const tok_chat_msg m[] = {{"system", "he"}, {"user", "hello"}};
    char *s = chat(v, m, 2, false);
    int32_t *ids = NULL;
    size_t n = 0;
    ck_assert_int_eq(tok_encode(v, s, strlen(s), true, &ids, &n), LLM_OK);
    size_t n_start = 0, n_end = 0;
    for (size_t i = 0; i < n; i++) {
        n_start += ids[i] == 1;
        n_end += ids[i] == 2;
    }
    ck_assert_uint_eq(n_start, 2);
    ck_assert_uint_eq(n_end, 2);
    free(ids);
    free(s);
    tok_vocab_free(v);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* errors                                                                                */

/* expect_load_error loads d and checks the code and that err is one line naming what. */
static void
expect_load_error(const vdef *d, int want_rc, const char *what)
{
    char err[256];
    tok_vocab *v = NULL;
    int rc = vdef_load(d, &v, err, sizeof(err));
    ck_assert_msg(rc == want_rc, "got %s (%s), want %s", llm_strerror(rc), err,
                  llm_strerror(want_rc));
    ck_assert_ptr_null(v);
    ck_assert_msg(strstr(err, what) != NULL, "error '%s' does not name '%s'", err, what);
    ck_assert_ptr_null(strchr(err, '\n'));
}

START_TEST(test_errors_missing_or_unknown_model)
{
    vdef d;
    vdef_bpe(&d, "smollm");
    d.model = NULL;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.model");
    d.model = "bert";
    expect_load_error(&d, LLM_ENOTSUP, "bert");
}
END_TEST

START_TEST(test_errors_unknown_pre_tokenizer_is_named)
{
    vdef d;
    vdef_bpe(&d, "qwen-future");
    expect_load_error(&d, LLM_ENOTSUP, "qwen-future");
}
END_TEST

START_TEST(test_errors_missing_pre_means_gpt2)
{
    tok_vocab *v = bpe_vocab(NULL);
    EXPECT(v, "12", false, MT(11));
    tok_vocab_free(v);
}
END_TEST

static int
put_tokens_as_ints(gguf_writer *w)
{
    const int32_t x[] = {1, 2, 3};
    return gguf_writer_set_arr_i32(w, "tokenizer.ggml.tokens", x, 3);
}

static int
put_empty_tokens(gguf_writer *w)
{
    return gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", NULL, NULL, 0);
}

START_TEST(test_errors_missing_or_malformed_tokens)
{
    vdef d;
    vdef_bpe(&d, "smollm");
    d.omit_tokens = true;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.tokens");
    d.extra = put_tokens_as_ints;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.tokens");
    d.extra = put_empty_tokens;
    d.omit_types = d.omit_scores = true;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.tokens");
}
END_TEST

static int
put_types_as_strings(gguf_writer *w)
{
    const char *x[] = {"1"};
    return gguf_writer_set_arr_str(w, "tokenizer.ggml.token_type", x, NULL, 1);
}

START_TEST(test_errors_malformed_token_types)
{
    vdef d;
    vdef_bpe(&d, "smollm");
    d.types[5] = 9;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.token_type");
    d.types[5] = -1;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.token_type");
    d.types[5] = 1;
    d.omit_types = true;
    d.extra = put_types_as_strings;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.token_type");
    d.extra = NULL;
    tok_vocab *v = load_ok(&d); // absent types: all normal
    EXPECT(v, "<|im_end|>", true, BT('<'), BT('|'), BT('i'), BT('m'), BT('_'), BT('e'), BT('n'),
           BT('d'), BT('|'), BT('>'));
    tok_vocab_free(v);
}
END_TEST

static int
put_short_types(gguf_writer *w)
{
    const int32_t x[] = {1, 1};
    return gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", x, 2);
}

START_TEST(test_errors_array_lengths_must_match_the_tokens)
{
    vdef d;
    vdef_bpe(&d, "smollm");
    d.omit_types = true;
    d.extra = put_short_types;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.token_type");
    vdef_spm(&d, true);
    d.omit_scores = true;
    d.extra = NULL;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.scores");
}
END_TEST

START_TEST(test_errors_merges)
{
    vdef d;
    vdef_bpe(&d, "smollm");
    d.omit_merges = true;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.merges");
    d.omit_merges = false;
    d.merges[d.n_merges++] = "nospace";
    expect_load_error(&d, LLM_EINVAL, "nospace");
    // A merge naming tokens the vocabulary lacks can never apply: skipped.
    d.merges[d.n_merges - 1] = "\xe2\x82\xac zz";
    tok_vocab *v = load_ok(&d);
    EXPECT(v, "hello", false, MT(3));
    tok_vocab_free(v);
}
END_TEST

static int
put_eos_as_string(gguf_writer *w)
{
    return gguf_writer_set_str(w, "tokenizer.ggml.eos_token_id", "2");
}

static int
put_template_as_int(gguf_writer *w)
{
    return gguf_writer_set_u32(w, "tokenizer.chat_template", 5);
}

static int
put_bos_flag_as_int(gguf_writer *w)
{
    return gguf_writer_set_u32(w, "tokenizer.ggml.add_bos_token", 1);
}

START_TEST(test_errors_bad_special_ids_and_flags)
{
    vdef d;
    vdef_bpe(&d, "smollm");
    d.eos = (int32_t)d.n;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.eos_token_id");
    d.eos = -1;
    d.extra = put_eos_as_string;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.eos_token_id");
    d.extra = put_bos_flag_as_int;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.ggml.add_bos_token");
    d.chat_template = NULL;
    d.extra = put_template_as_int;
    expect_load_error(&d, LLM_EINVAL, "tokenizer.chat_template");
}
END_TEST

START_TEST(test_errors_free_accepts_null)
{
    tok_vocab_free(NULL);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* model: the real SmolLM2 vocabulary, when present                                      */

START_TEST(test_model_smollm2_known_encodings)
{
    const char *src = getenv("LLM_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf",
             src && *src ? src : ".");
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "test_model_smollm2_known_encodings: %s absent, nothing checked\n", path);
        return;
    }
    char err[256];
    gguf_file *f = NULL;
    tok_vocab *v = NULL;
    ck_assert_msg(gguf_open(path, NULL, &f, err, sizeof(err)) == LLM_OK, "%s", err);
    ck_assert_msg(tok_vocab_load(f, &v, err, sizeof(err)) == LLM_OK, "%s", err);
    gguf_close(f);
    ck_assert_int_eq(tok_n_vocab(v), 49152);
    // Expected ids from HuggingFace tokenizers (tests/integration/test_tokenizer_oracle.py).
    EXPECT(v, "Hello world!", false, 19556, 905, 17);
    EXPECT(v, "I'm 42 years old.", false, 57, 5248, 216, 36, 34, 929, 1573, 30);
    EXPECT(v, "def f(x):\n    return x**2\n", false, 1604, 275, 24, 104, 727, 472, 1003, 1792, 828,
           34, 198);
    EXPECT(v, "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80", false, 83, 1939,
           2756, 17097, 241, 115, 40993, 179, 120, 248, 40303, 218);
    EXPECT(v, "  two  spaces\n\n", false, 216, 827, 216, 5600, 1116);
    EXPECT(v, "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", true, 1, 4093, 198,
           26843, 665, 2, 198, 1, 520, 9531, 198);
    ck_assert(tok_is_eog(v, 2)); // <|im_end|>
    ck_assert(tok_is_eog(v, 0)); // <|endoftext|>
    ck_assert(!tok_add_bos(v));
    const tok_chat_msg m[] = {{"user", "Hi"}};
    char *s = chat(v, m, 1, true);
    ck_assert_str_eq(s, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                        "trained by Hugging Face<|im_end|>\n"
                        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    tok_vocab_free(v);
}
END_TEST

Suite *tok_suite(void);

Suite *
tok_suite(void)
{
    Suite *s = suite_create("tok");
    TCase *tc = tcase_create("bpe");
    tcase_add_test(tc, test_bpe_empty_text_gives_no_tokens);
    tcase_add_test(tc, test_bpe_one_byte_is_its_byte_token);
    tcase_add_test(tc, test_bpe_merges_apply_in_rank_order);
    tcase_add_test(tc, test_bpe_equal_pairs_merge_leftmost_first);
    tcase_add_test(tc, test_bpe_smollm_splits_every_digit);
    tcase_add_test(tc, test_bpe_gpt2_keeps_digit_runs_together);
    tcase_add_test(tc, test_bpe_contractions_split_off);
    tcase_add_test(tc, test_bpe_space_runs_leave_one_space_for_the_next_word);
    tcase_add_test(tc, test_bpe_multibyte_utf8_merges_byte_level);
    tcase_add_test(tc, test_bpe_invalid_utf8_bytes_stand_alone);
    tcase_add_test(tc, test_bpe_llama3_groups_three_digits_and_folds_contractions);
    tcase_add_test(tc, test_bpe_long_inputs_encode_quickly);
    suite_add_tcase(s, tc);

    tc = tcase_create("spm");
    tcase_add_test(tc, test_spm_merges_highest_score_first);
    tcase_add_test(tc, test_spm_unknown_characters_fall_back_to_bytes);
    tcase_add_test(tc, test_spm_spaces_become_the_marker);
    tcase_add_test(tc, test_spm_literal_marker_stays_bytes);
    tcase_add_test(tc, test_spm_without_space_prefix);
    tcase_add_test(tc, test_spm_decode_drops_only_the_prefix_space);
    tcase_add_test(tc, test_spm_without_byte_tokens_uses_unknown);
    tcase_add_test(tc, test_spm_bos_defaults_on);
    suite_add_tcase(s, tc);

    tc = tcase_create("special");
    tcase_add_test(tc, test_special_tokens_match_only_when_asked);
    tcase_add_test(tc, test_special_longest_match_wins);
    tcase_add_test(tc, test_special_spm_text_after_a_special_gets_the_prefix);
    tcase_add_test(tc, test_special_control_tokens_render_on_request);
    tcase_add_test(tc, test_special_eog_covers_eos_eot_and_known_names);
    tcase_add_test(tc, test_special_find_matches_whole_texts);
    suite_add_tcase(s, tc);

    tc = tcase_create("roundtrip");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_roundtrip_bpe_random_bytes);
    tcase_add_test(tc, test_roundtrip_spm_random_bytes);
    tcase_add_test(tc, test_roundtrip_every_single_byte_and_pair);
    tcase_add_test(tc, test_roundtrip_whitespace_runs);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode");
    tcase_add_test(tc, test_decode_rejects_ids_out_of_range);
    tcase_add_test(tc, test_decode_of_nothing_is_the_empty_string);
    tcase_add_test(tc, test_token_bytes_reports_length_when_too_small);
    suite_add_tcase(s, tc);

    tc = tcase_create("chat");
    tcase_add_test(tc, test_chat_chatml_inserts_the_template_default_system_prompt);
    tcase_add_test(tc, test_chat_chatml_keeps_a_given_system_prompt);
    tcase_add_test(tc, test_chat_chatml_default_prompt_with_escaped_newline);
    tcase_add_test(tc, test_chat_chatml_without_a_default_adds_no_system_prompt);
    tcase_add_test(tc, test_chat_without_template_uses_chatml_only_if_the_vocab_has_it);
    tcase_add_test(tc, test_chat_llama3_format);
    tcase_add_test(tc, test_chat_llama2_format);
    tcase_add_test(tc, test_chat_unknown_template_is_not_supported);
    tcase_add_test(tc, test_chat_output_tokenizes_with_special_tokens);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_errors_missing_or_unknown_model);
    tcase_add_test(tc, test_errors_unknown_pre_tokenizer_is_named);
    tcase_add_test(tc, test_errors_missing_pre_means_gpt2);
    tcase_add_test(tc, test_errors_missing_or_malformed_tokens);
    tcase_add_test(tc, test_errors_malformed_token_types);
    tcase_add_test(tc, test_errors_array_lengths_must_match_the_tokens);
    tcase_add_test(tc, test_errors_merges);
    tcase_add_test(tc, test_errors_bad_special_ids_and_flags);
    tcase_add_test(tc, test_errors_free_accepts_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_model_smollm2_known_encodings);
    suite_add_tcase(s, tc);
    return s;
}
