/*
 * tiny_model.c - random tiny llama models in every supported tensor type.
 *
 * Dimensions are 64 (FFN 128), except for types whose blocks are 256 elements (the
 * K-quants), which cannot encode a 64-element row: those get dim 256 and FFN 512, with
 * the same 4 heads (of 64) / 2 KV heads, layers, vocabulary and context.
 */
#include "hash.h"
#include "tiny_model.h"

#include "gguf_write.h"
#include "llm_err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    TINY_DIM = 64,
    TINY_FFN = 128,
    TINY_DIM_K = 256, // for 256-element blocks
    TINY_FFN_K = 512,
    TINY_LAYERS = 2,
    TINY_HEADS = 4,
    TINY_KV_HEADS = 2,
    TINY_CTX = 256
};

// Merges over GPT-2 byte symbols ("Ġ" is the space byte); each result is a new token.
static const char *const tiny_merges[] = {
    "Ġ t",  "h e",  "Ġ a", "i n", "e r", "o n", "Ġt he", "r e", "a n", "Ġ s", "e n", "a t",
    "o r",  "Ġ w",  "Ġ c", "i s", "i t", "Ġ o", "e s",   "a l", "Ġ b", "Ġ f", "Ġ p", "Ġ m",
    "in g", "Ġ in", "Ġ d", "e d", "Ġ h", "o u", "Ġ is",  "Ġ l", "Ġ y", "l l", "a r", "Ġa n",
};

static const char tiny_template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

static float
rng_uniform(uint64_t *s) // [-1, 1)
{
    return (float)((double)(llm_splitmix64(s) >> 11) / 4503599627370496.0 - 1.0);
}

/* GPT-2's printable stand-in for byte b, UTF-8 encoded into out (NUL-terminated). */
static void
byte_symbol(int b, char *out)
{
    unsigned cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
        cp = (unsigned)b;
    } else {
        // the remaining bytes take code points 256, 257, ... in byte order
        unsigned n = 0;
        for (int i = 0; i < b; i++)
            if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255)))
                n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

static int
add_matrix(gguf_writer *w, const char *name, llm_dtype type, int64_t cols, int64_t rows,
           float scale, uint64_t *rng)
{
    size_t n = (size_t)(cols * rows);
    float *f = malloc(n * sizeof(float));
    size_t bytes = kern_row_size(type, cols) * (size_t)rows;
    void *q = malloc(bytes);
    int rc = LLM_ENOMEM;
    if (f && q) {
        for (size_t i = 0; i < n; i++)
            f[i] = rng_uniform(rng) * scale;
        kern_type(type)->from_float(f, q, (int64_t)n);
        int64_t ne[2] = {cols, rows};
        rc = gguf_writer_add_tensor(w, name, type, rows > 1 ? 2 : 1, ne, q, bytes);
    }
    free(f);
    free(q);
    return rc;
}

static int
add_vocab(gguf_writer *w)
{
    enum { N_SPECIAL = 3, N_MERGES = sizeof(tiny_merges) / sizeof(tiny_merges[0]) };
    enum { N_TOKENS = N_SPECIAL + 256 + N_MERGES };
    static char sym[256][4];
    static char merged[N_MERGES][16];
    const char *tokens[N_TOKENS];
    int32_t types[N_TOKENS];
    tokens[0] = "<|endoftext|>";
    tokens[1] = "<|im_start|>";
    tokens[2] = "<|im_end|>";
    for (int i = 0; i < N_SPECIAL; i++)
        types[i] = 3; // control
    for (int b = 0; b < 256; b++) {
        byte_symbol(b, sym[b]);
        tokens[N_SPECIAL + b] = sym[b];
        types[N_SPECIAL + b] = 1;
    }
    for (int i = 0; i < N_MERGES; i++) {
        const char *sp = strchr(tiny_merges[i], ' ');
        snprintf(merged[i], sizeof(merged[i]), "%.*s%s", (int)(sp - tiny_merges[i]), tiny_merges[i],
                 sp + 1);
        tokens[N_SPECIAL + 256 + i] = merged[i];
        types[N_SPECIAL + 256 + i] = 1;
    }
    int rc = gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (rc == LLM_OK)
        rc = gguf_writer_set_str(w, "tokenizer.ggml.pre", "smollm");
    if (rc == LLM_OK)
        rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, NULL, N_TOKENS);
    if (rc == LLM_OK)
        rc = gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, N_TOKENS);
    if (rc == LLM_OK)
        rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", tiny_merges, NULL, N_MERGES);
    if (rc == LLM_OK)
        rc = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    if (rc == LLM_OK)
        rc = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (rc == LLM_OK)
        rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    if (rc == LLM_OK)
        rc = gguf_writer_set_str(w, "tokenizer.chat_template", tiny_template);
    return rc;
}

int
tiny_model_write(const char *path, const tiny_model_opts *opts)
{
    if (!kern_type_supported((int)opts->type))
        return LLM_EINVAL;
    gguf_writer *w = NULL;
    int rc = gguf_writer_new(&w);
    if (rc != LLM_OK)
        return rc;
    uint64_t rng = opts->seed;
    const int dim = kern_type((int)opts->type)->blck > TINY_DIM ? TINY_DIM_K : TINY_DIM;
    const int ffn = dim == TINY_DIM ? TINY_FFN : TINY_FFN_K;
    const int hd = dim / TINY_HEADS,
              n_vocab = 3 + 256 + (int)(sizeof(tiny_merges) / sizeof(tiny_merges[0]));
    if (rc == LLM_OK)
        rc = gguf_writer_set_str(w, "general.architecture", "llama");
    if (rc == LLM_OK)
        rc = gguf_writer_set_str(w, "general.name", "tiny-random-llama");
    if (rc == LLM_OK)
        rc = gguf_writer_set_u32(w, "llama.block_count", TINY_LAYERS);
    if (rc == LLM_OK)
        rc = gguf_writer_set_u32(w, "llama.context_length", TINY_CTX);
    if (rc == LLM_OK)
        rc = gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)dim);
    if (rc == LLM_OK)
        rc = gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)ffn);
    if (rc == LLM_OK)
        rc = gguf_writer_set_u32(w, "llama.attention.head_count", TINY_HEADS);
    if (rc == LLM_OK)
        rc = gguf_writer_set_u32(w, "llama.attention.head_count_kv", TINY_KV_HEADS);
    if (rc == LLM_OK)
        rc = gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f);
    if (rc == LLM_OK)
        rc = gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    if (rc == LLM_OK)
        rc = gguf_writer_set_u32(w, "llama.rope.dimension_count", hd);
    if (rc == LLM_OK)
        rc = add_vocab(w);

    llm_dtype t = opts->type;
    if (rc == LLM_OK)
        rc = add_matrix(w, "token_embd.weight", t, dim, n_vocab, 1.0f, &rng);
    char name[64];
    for (int l = 0; l < TINY_LAYERS && rc == LLM_OK; l++) {
        struct {
            const char *n;
            int64_t cols, rows;
            float scale;
            bool norm;
        } ts[] = {
            {"attn_norm", dim, 1, 0, true},
            {"attn_q", dim, dim, 0.25f, false},
            {"attn_k", dim, TINY_KV_HEADS * hd, 0.25f, false},
            {"attn_v", dim, TINY_KV_HEADS * hd, 0.25f, false},
            {"attn_output", dim, dim, 0.25f, false},
            {"ffn_norm", dim, 1, 0, true},
            {"ffn_gate", dim, ffn, 0.25f, false},
            {"ffn_up", dim, ffn, 0.25f, false},
            {"ffn_down", ffn, dim, 0.18f, false},
        };
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]) && rc == LLM_OK; i++) {
            snprintf(name, sizeof(name), "blk.%d.%s.weight", l, ts[i].n);
            if (ts[i].norm) {
                float v[TINY_DIM_K];
                for (int k = 0; k < dim; k++)
                    v[k] = 1.0f + 0.1f * rng_uniform(&rng);
                int64_t ne[1] = {dim};
                rc = gguf_writer_add_tensor(w, name, LLM_DTYPE_F32, 1, ne, v,
                                            (size_t)dim * sizeof(float));
            } else {
                rc = add_matrix(w, name, t, ts[i].cols, ts[i].rows, ts[i].scale, &rng);
            }
        }
    }
    if (rc == LLM_OK) {
        float v[TINY_DIM_K];
        for (int k = 0; k < dim; k++)
            v[k] = 1.0f + 0.1f * rng_uniform(&rng);
        int64_t ne[1] = {dim};
        rc = gguf_writer_add_tensor(w, "output_norm.weight", LLM_DTYPE_F32, 1, ne, v,
                                    (size_t)dim * sizeof(float));
    }
    if (rc == LLM_OK && opts->untied)
        rc = add_matrix(w, "output.weight", t, dim, n_vocab, 0.5f, &rng);
    if (rc == LLM_OK)
        rc = gguf_writer_write(w, path);
    gguf_writer_free(w);
    return rc;
}
