/*
 * kern.h - CPU kernels: tensor element types and the math of a transformer step.
 *
 * Types are described by one traits table (ggml style) indexed by llm_dtype, whose
 * values are GGUF's, append-only. Every op has a portable scalar version; SIMD variants
 * (kern_avx2.c) are chosen once at run time from CPU features and tested against it.
 * Kernels never allocate, never log and never fail: callers validate shapes first.
 *
 * Layout convention: a matrix is row-major with rows of `n_cols` elements, as GGUF
 * stores them (ne[0] = n_cols). y = W x means y[r] = dot(W[r, :], x).
 *
 * Thread: all functions are reentrant; a matmul is split across threads by rows.
 */
#ifndef LLM_KERNELS_KERN_H
#define LLM_KERNELS_KERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kern_blocks.h"

/* Element types, numbered as GGUF (ggml_type) numbers them. */
typedef enum {
    LLM_DTYPE_F32 = 0,
    LLM_DTYPE_F16 = 1,
    LLM_DTYPE_Q4_0 = 2,
    LLM_DTYPE_Q4_1 = 3,
    LLM_DTYPE_Q5_0 = 6,
    LLM_DTYPE_Q5_1 = 7,
    LLM_DTYPE_Q8_0 = 8,
    LLM_DTYPE_Q8_1 = 9,
    LLM_DTYPE_Q2_K = 10,
    LLM_DTYPE_Q3_K = 11,
    LLM_DTYPE_Q4_K = 12,
    LLM_DTYPE_Q5_K = 13,
    LLM_DTYPE_Q6_K = 14,
    LLM_DTYPE_Q8_K = 15,
    LLM_DTYPE_IQ2_XXS = 16,
    LLM_DTYPE_IQ2_XS = 17,
    LLM_DTYPE_IQ3_XXS = 18,
    LLM_DTYPE_IQ1_S = 19,
    LLM_DTYPE_IQ4_NL = 20,
    LLM_DTYPE_IQ3_S = 21,
    LLM_DTYPE_IQ2_S = 22,
    LLM_DTYPE_IQ4_XS = 23,
    LLM_DTYPE_I8 = 24,
    LLM_DTYPE_I16 = 25,
    LLM_DTYPE_I32 = 26,
    LLM_DTYPE_I64 = 27,
    LLM_DTYPE_F64 = 28,
    LLM_DTYPE_IQ1_M = 29,
    LLM_DTYPE_BF16 = 30,
    LLM_DTYPE_COUNT = 40, // bound for table sizes; values >= this are unknown
} llm_dtype;

typedef void (*kern_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*kern_from_float_fn)(const float *src, void *dst, int64_t n);

/* Traits of one element type. `blck` elements take `size` bytes. For types we know
 * by name but cannot compute with, to_float is NULL (kern_type_supported is false). */
typedef struct {
    const char *name;
    int blck;
    size_t size;
    kern_to_float_fn to_float;     // decode n elements (n % blck == 0)
    kern_from_float_fn from_float; // encode n elements (reference quantizer)
} kern_type_traits;

/* kern_type returns the traits of t, or NULL when t is not a known GGUF type. */
const kern_type_traits *kern_type(int t);

/* kern_type_name returns "Q4_1", or "unknown" for values kern_type() rejects. */
const char *kern_type_name(int t);

/* kern_type_supported: known and computable (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
 * Q5_1, Q4_K, Q5_K, Q6_K, Q8_K). */
bool kern_type_supported(int t);

/* kern_row_size returns the bytes of n elements of t; n must be a multiple of blck. */
size_t kern_row_size(llm_dtype t, int64_t n);

/* Half / bfloat16 conversions (round to nearest even, like the hardware). */
float kern_half_to_float(kern_half h);
kern_half kern_float_to_half(float f);
float kern_bf16_to_float(kern_bf16 h);
kern_bf16 kern_float_to_bf16(float f);

/* --- matrices ----------------------------------------------------------------------- */

/* A borrowed view of a row-major matrix in any supported type. */
typedef struct {
    llm_dtype type;
    const void *data; // [n_rows][row_bytes]
    int64_t n_cols;   // elements per row (GGUF ne[0])
    int64_t n_rows;   // GGUF ne[1]
    size_t row_bytes; // kern_row_size(type, n_cols)
    bool packed;      // rows in groups of 8 (kern_pack), not as GGUF stores them
} kern_mat;

/* kern_matmul computes, for each of n_tok activation rows x_t and each weight row r in
 * [row0, row1):  y[t*y_stride + r - row0] = sum_{c < n_in} W[r][col0 + c] * x[t*x_stride + c].
 * The column window [col0, col0 + n_in) lets a tensor-parallel rank use its slice of
 * an input dimension; col0 must be a multiple of the type's block size. Each weight row
 * is decoded once and used for all n_tok rows (weights are read once per step).
 * Unpacked matrices multiply exact float activations; packed ones (kern_pack) 16-bit
 * integer activations, each token's 32-element blocks scaled on their own.
 * Batch invariant: y[t][r] is the same float whatever n_tok, t and [row0, row1) are.
 * scratch: at least KERN_MATMUL_SCRATCH(n_in) floats, private to the calling thread. */
#define KERN_MATMUL_SCRATCH(n_in) (24 * (n_in)) // 4 decoded rows, or ~40 quantized tokens
void kern_matmul(const kern_mat *w, int64_t col0, int64_t n_in, const float *x, int64_t x_stride,
                 float *y, int64_t y_stride, int n_tok, int64_t row0, int64_t row1, float *scratch);

/* kern_matmul in two steps, for a caller that multiplies one input by several matrices
 * or row ranges (a thread taking rows chunk by chunk): the activations n_tok rows of x
 * are quantized for packed matrices once, on the first kern_matmul_act that needs them,
 * into buf (KERN_ACT_BYTES(n_in, n_tok) bytes, float-aligned; x and buf must outlive the
 * uses), instead of once per call. y is kern_matmul's, bit for bit. One kern_act per
 * thread. */
typedef struct {
    const float *x;
    int64_t x_stride, n_in;
    int n_tok;
    void *buf;
    bool quantized; // buf holds x quantized
} kern_act;
#define KERN_ACT_BYTES(n_in, n_tok)                                                                \
    ((size_t)(n_tok) * (2 * (size_t)(n_in) + 8 * (size_t)((n_in) / 32) + 8 * sizeof(float)))
void kern_act_init(kern_act *a, const float *x, int64_t x_stride, int64_t n_in, int n_tok,
                   void *buf);
/* kern_matmul(w, col0, a->n_in, a->x, a->x_stride, y, y_stride, a->n_tok, row0, row1,
 * scratch), with a's quantized rows for a packed w. */
void kern_matmul_act(const kern_mat *w, int64_t col0, kern_act *a, float *y, int64_t y_stride,
                     int64_t row0, int64_t row1, float *scratch);

/* kern_get_row decodes row r of w into out[0..n_cols) (the same floats packed or not). */
void kern_get_row(const kern_mat *w, int64_t r, float *out);

/* --- packed matrices (kern_pack.c) --------------------------------------------------- */

/* Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 matrices with rows % 8 == 0 and columns % 32 == 0, and
 * Q4_K, Q5_K and Q6_K ones with columns % 256 == 0, can be packed:
 * the same bytes permuted so that eight rows share each vector (see kern_pack.c).
 * kern_matmul multiplies a packed matrix with 16-bit integer activations (each
 * token's 32-element blocks scaled on their own), several times faster than decoding
 * the weights to floats, within ~1e-4 of the float result, and batch invariant. */
bool kern_pack_supported(llm_dtype t, int64_t n_rows, int64_t n_cols);
/* Bytes of the packed matrix: exactly those of the original. */
size_t kern_pack_bytes(llm_dtype t, int64_t n_rows, int64_t n_cols);
/* kern_pack writes src (supported, not packed) into dst (kern_pack_bytes) and describes
 * the result in out: src with data = dst and packed set. */
void kern_pack(const kern_mat *src, void *dst, kern_mat *out);
/* kern_pack_unpack_block rebuilds the GGUF block of row `lane` (0..7) of one chunk. */
void kern_pack_unpack_block(llm_dtype t, const void *chunk, int lane, void *blk);

/* kern_pack_wanted says whether loaders should pack: yes unless $LLM_ACT=f32 asks for
 * float activations everywhere (the exact reference path). */
bool kern_pack_wanted(void);

/* --- vector ops ---------------------------------------------------------------------- */

/* dot product of two float vectors. */
float kern_dot_f32(const float *a, const float *b, int64_t n);
/* y += a * x */
void kern_axpy_f32(float *y, float a, const float *x, int64_t n);
/* out = x / rms(x) * w, rms(x) = sqrt(mean(x^2) + eps). out may equal x. */
void kern_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);
/* Rotates adjacent pairs (x[2i], x[2i+1]) of each of n_heads heads of head_dim floats
 * by angle pos * theta^(-2i/head_dim) (GGUF llama "normal" RoPE). */
void kern_rope(float *x, int n_heads, int head_dim, int pos, float theta);
/* The same in two halves, so a step computes each position's angles once for all
 * layers: kern_rope_table fills cs[2i], cs[2i+1] = cos, sin of pair i's angle
 * (head_dim floats), kern_rope_apply rotates with them. */
void kern_rope_table(float *cs, int head_dim, int pos, float theta);
void kern_rope_apply(float *x, int n_heads, int head_dim, const float *cs);
/* Attention scores against one block of KERN_KV_BLOCK cached keys stored transposed:
 * element d of key p at k[d * KERN_KV_BLOCK + p], as floats or (f16) IEEE halves. For
 * each of nq (1..KERN_ATT_QUERIES) queries, att[i][p] = scale * dot(q[i][0..hd), key p)
 * for all p < KERN_KV_BLOCK (the caller ignores the keys a query does not reach); hd
 * even. The queries share each load of the block, and each score is the same float
 * whichever queries share the call: even and odd d are summed in two chains, in order
 * of d, then added. */
#define KERN_KV_BLOCK 16
#define KERN_ATT_QUERIES 3
void kern_attn_scores(float *const *att, const float *const *q, int nq, const void *k, bool f16,
                      int hd, float scale);
/* out[0..hd) += sum over p < n_pos of att[p] * v[p * v_stride + 0..hd): the
 * attention-weighted sum of value vectors, added to out (each block of a paged cache in
 * turn; out starts at zero), in one chain per element starting from out. */
void kern_attn_values(float *out, const float *att, const float *v, int64_t v_stride, int n_pos,
                      int hd);
/* The same over a float16 cache (values stored as IEEE half): each row is widened to
 * floats as it is read, and the sums are taken as above. */
void kern_attn_values_f16(float *out, const float *att, const kern_half *v, int64_t v_stride,
                          int n_pos, int hd);
/* y[i] = x[i] rounded to half (to nearest even, as kern_float_to_half). */
void kern_f32_to_f16(const float *x, kern_half *y, int64_t n);
/* In-place softmax over n floats (max-subtracted). */
void kern_softmax(float *x, int64_t n);
/* y[i] = e^x[i] (y may equal x): the vector exp on AVX2 (within 2 ulp; 0 below -87),
 * expf otherwise. */
void kern_exp(const float *x, float *y, int64_t n);
/* y[i] = e^((x[i] - shift) * scale), the difference and product rounded to float first:
 * kern_exp of those floats, element for element (the sampler's weights). */
void kern_exp_scaled(const float *x, float shift, float scale, float *y, int64_t n);
/* kern_argmax returns the index of the first largest number in x[0..n) (n >= 1): NaNs are
 * passed over (0 when all are NaN), and of equal maxima (-0 and +0 included) the first
 * wins. */
int64_t kern_argmax(const float *x, int64_t n);
/* kern_select_ge writes the indices i of x[0..n) with x[i] >= thr (NaN never), in
 * increasing order, to idx and returns how many there are. */
int64_t kern_select_ge(const float *x, int64_t n, float thr, int32_t *idx);
/* kern_weight_sum returns the sum of trunc(x[i] * scale) over the i with 1 <= x[i] * scale
 * < 2^31 (NaN never): integers, so exact, whatever the order (the sampler's total). */
uint64_t kern_weight_sum(const float *x, int64_t n, float scale);
/* kern_read_sum returns the wrapping sum of the 64-bit words of p[0..n_words): a pass
 * that only reads, in the widest loads the CPU has, for measuring the memory bandwidth
 * a weight stream sees (llm-engine-bench). */
uint64_t kern_read_sum(const uint64_t *p, int64_t n_words);
/* gate[i] = silu(gate[i]) * up[i] */
void kern_swiglu(float *gate, const float *up, int64_t n);

/* kern_simd_name says which implementations the kernels use: "avx2", or "scalar" when
 * the CPU lacks AVX2/FMA/F16C or $LLM_SIMD=scalar asked for the reference code. */
const char *kern_simd_name(void);

/* kern_act_name says which activations the matmuls of a loaded model use: "i16" (the
 * default: Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and K-quant (Q4_K/Q5_K/Q6_K) matrices packed, 16-bit integer
 * activations; float for the other types) or "f32" ($LLM_ACT=f32: nothing packed, float activations
 * only). */
const char *kern_act_name(void);

#endif
