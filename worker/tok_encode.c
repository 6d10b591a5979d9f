/*
 * tok_encode.c - text to token ids (tok_encode from tok.h); the rest of the tok module is
 * in tok.c, the shared layout in tok_internal.h.
 *
 * Three stages. (1) With parse_special, the text is cut at control and user-defined token
 * texts (longest match first). (2) BPE: each remaining fragment is split into words by a
 * hand-written equivalent of the pre-tokenizer regex that tokenizer.ggml.pre names (no
 * regex library; Unicode classes from tok_unicode.c). SPM: spaces become U+2581 and the
 * fragment gets a U+2581 prefix. (3) Merging. BPE follows HuggingFace `tokenizers`
 * (Word::merge_all): a min-heap of (rank, position) over a linked list of symbols, with
 * pair -> rank in a hash table keyed by the two token ids, so a word of n bytes costs
 * O(n log n). SPM follows llama.cpp's llm_tokenizer_spm: a max-heap of adjacent pairs by
 * the merged piece's score, then <0xNN> byte fallback.
 *
 * Text that is not valid UTF-8 is never rejected: each invalid byte is a character of its
 * own, of class "other" (not a letter, number or space). SPM spells a literal U+2581 of
 * the input with byte-fallback tokens, so that it decodes back to U+2581, not to a space.
 * A byte whose token the vocabulary lacks is dropped (HuggingFace's behaviour for a BPE
 * model without an unknown token).
 *
 * What it does not do: Unicode normalization, case folding beyond ASCII in the llama-3
 * contractions, decoding (tok.c).
 */
#include "tok.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "llm_err.h"
#include "tok_internal.h"
#include "tok_unicode.h"

/* ------------------------------------------------------------------------------------ */
/* encoding state                                                                        */

/* A character of the text being split: where it is and which class it has. */
typedef struct {
    size_t off;  // byte offset in the fragment
    uint32_t cp; // code point, TOK_CP_INVALID for a stray byte
    uint8_t len; // bytes, 1..4
    uint8_t cls; // tok__uclass
} tok_char;

/* A symbol of the merge loops: a token (BPE) or a byte range (SPM) in a linked list. */
typedef struct {
    int32_t id;   // BPE: token id, -1 once merged into its left neighbour
    int32_t prev; // index of the previous live symbol, -1 at the start
    int32_t next; // index of the next live symbol, -1 at the end
    uint32_t n;   // SPM: byte length, 0 once merged into its left neighbour
    size_t off;   // SPM: byte offset in the escaped text
    bool pinned;  // SPM: a literal U+2581 that must stay bytes
} tok_sym;

/* A candidate merge. Smaller prio pops first, ties by smaller left position, which is
 * the order of both reference implementations: BPE prio = rank; SPM prio = -score (a
 * double holds any int32 rank and any float score exactly). */
typedef struct {
    double prio;
    int32_t left, right;
    uint32_t size; // SPM: byte length of the merged piece, to spot stale entries
} tok_cand;

typedef struct {
    const tok_vocab *v;
    int32_t *ids; // the output
    size_t n_ids, cap_ids;
    tok_char *chars;
    size_t cap_chars;
    tok_sym *syms;
    size_t cap_syms;
    tok_cand *heap;
    size_t n_heap, cap_heap;
    char *buf; // SPM escaped text; BPE llama-3 whole-word lookup
    size_t cap_buf;
    bool oom;
} enc_state;

// grow makes *p hold at least n elements of size sz; false (and st->oom) on failure.
static bool
grow(enc_state *st, void **p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return true;
    size_t c = *cap ? *cap : 16;
    while (c < n)
        c *= 2;
    void *q = realloc(*p, c * sz);
    if (q == NULL) {
        st->oom = true;
        return false;
    }
    *p = q;
    *cap = c;
    return true;
}

static void
emit(enc_state *st, int32_t id)
{
    if (!grow(st, (void **)&st->ids, &st->cap_ids, st->n_ids + 1, sizeof(int32_t)))
        return;
    st->ids[st->n_ids++] = id;
}

static bool
cand_less(const tok_cand *a, const tok_cand *b)
{
    return a->prio < b->prio || (a->prio == b->prio && a->left < b->left);
}

static void
heap_push(enc_state *st, tok_cand c)
{
    if (!grow(st, (void **)&st->heap, &st->cap_heap, st->n_heap + 1, sizeof(tok_cand)))
        return;
    size_t i = st->n_heap++;
    while (i > 0 && cand_less(&c, &st->heap[(i - 1) / 2])) {
        st->heap[i] = st->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    st->heap[i] = c;
}

static tok_cand
heap_pop(enc_state *st)
{
    assert(st->n_heap > 0);
    tok_cand top = st->heap[0], last = st->heap[--st->n_heap];
    size_t i = 0, n = st->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && cand_less(&st->heap[c + 1], &st->heap[c]))
            c++;
        if (!cand_less(&st->heap[c], &last))
            break;
        st->heap[i] = st->heap[c];
        i = c;
    }
    if (n > 0)
        st->heap[i] = last;
    return top;
}

/* ------------------------------------------------------------------------------------ */
/* BPE                                                                                   */

static void
bpe_push_pair(enc_state *st, int32_t left)
{
    const tok_sym *s = st->syms;
    if (left < 0 || s[left].next < 0)
        return;
    const tok_merge *m = tok__lookup_merge(st->v, s[left].id, s[s[left].next].id);
    if (m != NULL)
        heap_push(st, (tok_cand){.prio = m->rank, .left = left, .right = s[left].next});
}

/* bpe_word merges the bytes of one pre-tokenized word and emits its tokens. */
static void
bpe_word(enc_state *st, const unsigned char *p, size_t n)
{
    const tok_vocab *v = st->v;
    if (v->pre == TOK_PRE_LLAMA3) {
        // ignore_merges: a word that is a token as a whole is taken as it is.
        if (!grow(st, (void **)&st->buf, &st->cap_buf, 2 * n, 1))
            return;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += tok__utf8_encode(v->byte_char[p[i]], st->buf + k);
        int32_t id = tok__lookup_text(v, st->buf, k);
        if (id >= 0) {
            emit(st, id);
            return;
        }
    }
    if (!grow(st, (void **)&st->syms, &st->cap_syms, n, sizeof(tok_sym)))
        return;
    tok_sym *s = st->syms;
    int32_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = v->byte_tok[p[i]];
        if (id < 0)
            continue; // no token for this byte: dropped before merging, as HuggingFace does
        s[ns] = (tok_sym){.id = id, .prev = ns - 1, .next = ns + 1};
        ns++;
    }
    if (ns == 0)
        return;
    s[ns - 1].next = -1;
    st->n_heap = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        bpe_push_pair(st, i);
    while (st->n_heap > 0 && !st->oom) {
        tok_cand c = heap_pop(st);
        tok_sym *l = &s[c.left];
        // Stale if the left symbol was absorbed or its right neighbour changed since.
        if (l->id < 0 || l->next != c.right)
            continue;
        const tok_merge *m = tok__lookup_merge(v, l->id, s[c.right].id);
        if (m == NULL || m->rank != (int32_t)c.prio)
            continue;
        tok_sym *r = &s[c.right];
        l->id = m->id;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = c.left;
        r->id = -1;
        bpe_push_pair(st, l->prev);
        bpe_push_pair(st, c.left);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        emit(st, s[i].id);
}

/* ------------------------------------------------------------------------------------ */
/* pre-tokenizers: hand-written equivalents of the split regexes                         */

static size_t
run_end(const tok_char *c, size_t i, size_t end, uint8_t cls)
{
    while (i < end && c[i].cls == cls)
        i++;
    return i;
}

static bool
is_crlf(const tok_char *c)
{
    return c->cp == '\r' || c->cp == '\n';
}

static uint32_t
ascii_lower(uint32_t cp)
{
    return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
}

/* contraction_len matches 's|'t|'re|'ve|'m|'ll|'d at c[i] (ASCII case-insensitive when
 * fold, as llama-3's (?i:...) group); returns the match length in characters or 0. */
static size_t
contraction_len(const tok_char *c, size_t i, size_t end, bool fold)
{
    if (c[i].cp != '\'' || i + 1 >= end)
        return 0;
    uint32_t a = fold ? ascii_lower(c[i + 1].cp) : c[i + 1].cp;
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (i + 2 >= end)
        return 0;
    uint32_t b = fold ? ascii_lower(c[i + 2].cp) : c[i + 2].cp;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* space_run_end: `\s+(?!\S)|\s+` at c[i], a space. A run followed by a non-space
 * leaves its last space to prefix the next word (" word"), unless it is that space. */
static size_t
space_run_end(const tok_char *c, size_t i, size_t end)
{
    size_t e = run_end(c, i, end, TOK_UC_SPACE);
    return e < end && e - i >= 2 ? e - 1 : e;
}

/* gpt2_match returns the end of the match of GPT-2's regex at c[i]:
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t
gpt2_match(const tok_char *c, size_t i, size_t end)
{
    size_t n = contraction_len(c, i, end, false);
    if (n > 0)
        return i + n;
    size_t j = i;
    if (c[j].cp == ' ' && j + 1 < end && c[j + 1].cls != TOK_UC_SPACE)
        j++; // the optional leading space of the next three alternatives
    if (c[j].cls != TOK_UC_SPACE)
        return run_end(c, j, end, c[j].cls);
    return space_run_end(c, i, end);
}

/* llama3_match returns the end of the match of llama-3's regex at c[i]:
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t
llama3_match(const tok_char *c, size_t i, size_t end)
{
    size_t n = contraction_len(c, i, end, true);
    if (n > 0)
        return i + n;
    if (c[i].cls == TOK_UC_LETTER)
        return run_end(c, i, end, TOK_UC_LETTER);
    if (c[i].cls != TOK_UC_NUMBER && !is_crlf(&c[i]) && i + 1 < end &&
        c[i + 1].cls == TOK_UC_LETTER)
        return run_end(c, i + 1, end, TOK_UC_LETTER);
    if (c[i].cls == TOK_UC_NUMBER) {
        size_t e = run_end(c, i, end, TOK_UC_NUMBER);
        return e - i > 3 ? i + 3 : e;
    }
    size_t j = i;
    if (c[j].cp == ' ' && j + 1 < end && c[j + 1].cls == TOK_UC_OTHER)
        j++;
    if (c[j].cls == TOK_UC_OTHER) {
        size_t e = run_end(c, j, end, TOK_UC_OTHER);
        while (e < end && is_crlf(&c[e]))
            e++;
        return e;
    }
    // A space run: \s*[\r\n]+ takes it up to its last line break, if it has one.
    size_t e = run_end(c, i, end, TOK_UC_SPACE), last_nl = end;
    for (size_t k = i; k < e; k++)
        if (is_crlf(&c[k]))
            last_nl = k;
    if (last_nl != end)
        return last_nl + 1;
    return space_run_end(c, i, end);
}

/* split_words cuts chars [a, b) of a BPE fragment into words and merges each. */
static void
split_words(enc_state *st, const char *text, const tok_char *c, size_t a, size_t b)
{
    size_t (*match)(const tok_char *, size_t, size_t) =
        st->v->pre == TOK_PRE_LLAMA3 ? llama3_match : gpt2_match;
    for (size_t i = a; i < b && !st->oom;) {
        size_t e = match(c, i, b);
        assert(e > i && e <= b);
        size_t off = c[i].off, len = c[e - 1].off + c[e - 1].len - off;
        bpe_word(st, (const unsigned char *)text + off, len);
        i = e;
    }
}

static void
bpe_fragment(enc_state *st, const char *text, size_t len)
{
    if (!grow(st, (void **)&st->chars, &st->cap_chars, len, sizeof(tok_char)))
        return;
    tok_char *c = st->chars;
    size_t nc = 0;
    for (size_t off = 0; off < len; nc++) {
        uint32_t cp;
        size_t n = tok__utf8_decode((const unsigned char *)text + off, len - off, &cp);
        uint8_t cls = cp == TOK_CP_INVALID ? TOK_UC_OTHER : (uint8_t)tok__unicode_class(cp);
        c[nc] = (tok_char){.off = off, .cp = cp, .len = (uint8_t)n, .cls = cls};
        off += n;
    }
    if (st->v->pre != TOK_PRE_SMOLLM) {
        split_words(st, text, c, 0, nc);
        return;
    }
    // Digits(individual_digits=true) runs first: every \p{N} is a piece of its own, and
    // the GPT-2 regex then sees only the stretches between them (so its lookahead stops
    // at a digit: "a  1" splits as "a", "  ", "1").
    size_t start = 0;
    for (size_t i = 0; i <= nc && !st->oom; i++) {
        if (i < nc && c[i].cls != TOK_UC_NUMBER)
            continue;
        split_words(st, text, c, start, i);
        if (i < nc)
            bpe_word(st, (const unsigned char *)text + c[i].off, c[i].len);
        start = i + 1;
    }
}

/* ------------------------------------------------------------------------------------ */
/* SPM                                                                                   */

static void
spm_push_pair(enc_state *st, int32_t left, int32_t right)
{
    const tok_vocab *v = st->v;
    if (left < 0 || right < 0 || st->syms[left].pinned || st->syms[right].pinned)
        return;
    uint32_t size = st->syms[left].n + st->syms[right].n;
    int32_t id = tok__lookup_text(v, st->buf + st->syms[left].off, size);
    if (id < 0)
        return;
    tok_cand c = {.prio = -(double)v->score[id], .left = left, .right = right, .size = size};
    heap_push(st, c);
}

/* spm_emit_symbol emits the token of a final symbol, or its bytes as <0xNN> tokens,
 * or one unknown token when some byte has no token. */
static void
spm_emit_symbol(enc_state *st, const tok_sym *s)
{
    const tok_vocab *v = st->v;
    const unsigned char *p = (const unsigned char *)st->buf + s->off;
    int32_t id = s->pinned ? -1 : tok__lookup_text(v, (const char *)p, s->n);
    if (id >= 0) {
        emit(st, id);
        return;
    }
    bool all_bytes = true;
    for (uint32_t i = 0; i < s->n; i++)
        all_bytes = all_bytes && v->byte_tok[p[i]] >= 0;
    if (!all_bytes) {
        if (v->unk >= 0)
            emit(st, v->unk);
        return;
    }
    for (uint32_t i = 0; i < s->n; i++)
        emit(st, v->byte_tok[p[i]]);
}

/* spm_fragment escapes one fragment (spaces -> U+2581, plus the prefix) into st->buf,
 * one symbol per character, and merges the best-scoring adjacent pair until none is a
 * token (llama.cpp's llm_tokenizer_spm_session). */
static void
spm_fragment(enc_state *st, const char *text, size_t len, bool prefix)
{
    if (!grow(st, (void **)&st->buf, &st->cap_buf, 3 * len + 3, 1) ||
        !grow(st, (void **)&st->syms, &st->cap_syms, len + 1, sizeof(tok_sym)))
        return;
    tok_sym *s = st->syms;
    int32_t ns = 0;
    size_t k = 0;
    if (prefix) {
        memcpy(st->buf, TOK_SPM_SPACE, 3);
        s[ns++] = (tok_sym){.off = 0, .n = 3};
        k = 3;
    }
    for (size_t off = 0; off < len;) {
        uint32_t cp;
        size_t n = tok__utf8_decode((const unsigned char *)text + off, len - off, &cp);
        s[ns] = (tok_sym){.off = k, .n = (uint32_t)n, .pinned = cp == TOK_SPM_SPACE_CP};
        if (cp == ' ') {
            memcpy(st->buf + k, TOK_SPM_SPACE, 3);
            s[ns].n = 3;
        } else {
            memcpy(st->buf + k, text + off, n);
        }
        k += s[ns].n;
        off += n;
        ns++;
    }
    for (int32_t i = 0; i < ns; i++) {
        s[i].prev = i - 1;
        s[i].next = i + 1 < ns ? i + 1 : -1;
    }
    st->n_heap = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        spm_push_pair(st, i, i + 1);
    while (st->n_heap > 0 && !st->oom) {
        tok_cand c = heap_pop(st);
        tok_sym *l = &s[c.left], *r = &s[c.right];
        // Stale if either side has merged since: their lengths no longer add up.
        if (l->n == 0 || r->n == 0 || l->n + r->n != c.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = c.left;
        spm_push_pair(st, l->prev, c.left);
        spm_push_pair(st, c.left, l->next);
    }
    for (int32_t i = 0; ns > 0 && i >= 0; i = s[i].next)
        spm_emit_symbol(st, &s[i]);
}

/* ------------------------------------------------------------------------------------ */
/* encode                                                                                */

/* find_special finds the first special token text in text[from, len), longest first at
 * a given position (leftmost-longest, like HuggingFace's added-token matcher). */
static const tok_special *
find_special(const tok_vocab *v, const char *text, size_t from, size_t len, size_t *at)
{
    for (size_t i = from; i < len; i++) {
        if (!v->special_first[(unsigned char)text[i]])
            continue;
        for (size_t k = 0; k < v->n_special; k++) {
            const tok_special *s = &v->special[k];
            if (s->len <= len - i && memcmp(text + i, s->text, s->len) == 0) {
                *at = i;
                return s;
            }
        }
    }
    return NULL;
}

/* encode_fragment tokenizes text that holds no special token. A fragment always starts
 * the text or follows a special token, which is where llama.cpp puts the SPM prefix. */
static void
encode_fragment(enc_state *st, const char *text, size_t len)
{
    if (len == 0)
        return;
    if (st->v->kind == TOK_KIND_BPE)
        bpe_fragment(st, text, len);
    else
        spm_fragment(st, text, len, st->v->add_space_prefix);
}

int
tok_encode(const tok_vocab *v, const char *text, size_t len, bool parse_special, int32_t **ids,
           size_t *n_ids)
{
    assert(v != NULL && (text != NULL || len == 0) && ids != NULL && n_ids != NULL);
    enc_state st = {.v = v};
    size_t pos = 0;
    while (len > 0 && !st.oom) {
        size_t at = len;
        const tok_special *sp =
            parse_special && v->n_special > 0 ? find_special(v, text, pos, len, &at) : NULL;
        encode_fragment(&st, text + pos, at - pos);
        if (sp == NULL)
            break;
        emit(&st, sp->id);
        pos = at + sp->len;
    }
    free(st.chars);
    free(st.syms);
    free(st.heap);
    free(st.buf);
    if (st.oom) {
        free(st.ids);
        return LLM_ENOMEM;
    }
    if (st.ids == NULL && (st.ids = malloc(sizeof(int32_t))) == NULL)
        return LLM_ENOMEM; // callers may free(*ids) without checking n_ids
    *ids = st.ids;
    *n_ids = st.n_ids;
    return LLM_OK;
}
