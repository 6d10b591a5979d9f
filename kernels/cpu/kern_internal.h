/*
 * kern_internal.h - declarations shared between the kernel files and nothing else:
 * the SIMD variants that kern_ops.c dispatches to. Not part of the interface.
 */
#ifndef LLM_KERNELS_KERN_INTERNAL_H
#define LLM_KERNELS_KERN_INTERNAL_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kern.h"

/* Scalar reference implementations (kern_ops.c). */
float kern__dot_f32_scalar(const float *a, const float *b, int64_t n);
void kern__attn_scores_scalar(float *const *att, const float *const *q, int nq, const void *k,
                              bool f16, int hd, float scale);
void kern__attn_values_scalar(float *out, const float *att, const float *v, int64_t v_stride,
                              int n_pos, int hd);
/* kern__signed_extreme returns the element of x[0..n) with the largest magnitude, sign
 * kept (the first one on ties; 0 for an all-zero x): the value symmetric quantizers map
 * to their most negative code. */
float kern__signed_extreme(const float *x, int64_t n);

/* kern__quantize_affine maps x[0..n) onto 0..levels with x ~= d * q + min, d = (max -
 * min) / levels, rounding to nearest: the reference for Q4_1 (15 levels) and Q5_1 (31). */
void kern__quantize_affine(const float *x, int n, int levels, uint8_t *q, float *d, float *min);

/* The definition of a row dot: decode a block (or 32 elements) at a time, then
 * multiply. Any supported type; n a multiple of max(32, block size). */
float kern__row_dot_ref(llm_dtype t, const void *w, const float *x, int64_t n);
/* The decoder kern_matmul uses for type t on this CPU: the SIMD one when there is one,
 * else the traits' scalar one. Weights are defined per SIMD level as what it returns. */
kern_to_float_fn kern__decoder(llm_dtype t);

/* --- packed matrices, 16-bit activations (kern_pack.c, kern_pack_avx2.c) ------------ */

/* One token's activations for the packed path, per 32-element block b:
 * x[32b + j] ~= d[b] * qs[32b + j], s[b] = d[b] * sum_j qs[32b + j]. Stored as qs[n]
 * int16, then d[n / 32], then s[n / 32] floats: KERN__I16X_BYTES(n) bytes (n % 32 == 0). */
#define KERN__I16X_BYTES(n) (2 * (size_t)(n) + 8 * (size_t)((n) / 32))
typedef struct {
    const int16_t *qs;
    const float *d, *s;
} kern__i16x;

static inline kern__i16x
kern__i16x_at(const void *base, int64_t n)
{
    const char *p = base;
    kern__i16x v = {(const int16_t *)p, (const float *)(p + 2 * n),
                    (const float *)(p + 2 * n) + n / 32};
    return v;
}

/* Quantizes x[0..n) into out (KERN__I16X_BYTES(n)): d = max|x| / 32767, q = x / d
 * clamped to +-32767 and rounded half to even. Scalar and AVX2 write the same bytes. */
typedef void (*kern__quantize_i16_fn)(const float *x, int64_t n, void *out);
void kern__quantize_i16_scalar(const float *x, int64_t n, void *out);
void kern__quantize_i16_avx2(const float *x, int64_t n, void *out);

/* y[t * y_stride + 8g + i] for groups g < n_groups, lanes i < 8, tokens t < n_tok: the
 * element (kern_pack.c) of row i of group g, whose chunks start at w + g * group_bytes
 * (chunk col0 / kern__pack_chunk_cols of the group), against token t at
 * xa + t * KERN__I16X_BYTES(n). */
typedef void (*kern__p8_gemm_fn)(llm_dtype t, const char *w, size_t group_bytes, int64_t n_groups,
                                 const char *xa, int64_t n, int n_tok, float *y, int64_t y_stride);
void kern__p8_gemm_scalar(llm_dtype t, const char *w, size_t group_bytes, int64_t n_groups,
                          const char *xa, int64_t n, int n_tok, float *y, int64_t y_stride);
void kern__p8_gemm_avx2(llm_dtype t, const char *w, size_t group_bytes, int64_t n_groups,
                        const char *xa, int64_t n, int n_tok, float *y, int64_t y_stride);

typedef struct {
    kern__quantize_i16_fn quantize;
    kern__p8_gemm_fn gemm;
} kern__p8_impl;

/* Byte offsets in a packed K-quant chunk (kern_pack.c's layout), shared by the packer
 * and the SIMD kernel. Q4_K / Q5_K: d[8], dmin[8], the 12 scale bytes transposed, for
 * Q5_K eight fifth-bit vectors, then the quads; Q6_K: d[8], 16 scales transposed, a
 * bit-4 and a bit-5 vector per sub-block, then the quads. */
enum {
    KERN__PK_DMIN = 16,
    KERN__PK_K_SCALES = 32,
    KERN__PK_Q4K_QUADS = KERN__PK_K_SCALES + 8 * K_SCALE_SIZE,
    KERN__PK_Q5K_HI = KERN__PK_Q4K_QUADS,
    KERN__PK_Q5K_QUADS = KERN__PK_Q5K_HI + 8 * 32,
    KERN__PK_Q6K_SCALES = 16,
    KERN__PK_Q6K_BITS = KERN__PK_Q6K_SCALES + 8 * 16,
    KERN__PK_Q6K_QUADS = KERN__PK_Q6K_BITS + 8 * 64,
};

/* Bytes and columns of one chunk (8 rows x one GGUF block: 32 columns, 256 for Q4_K). */
size_t kern__pack_chunk_bytes(llm_dtype t);
int64_t kern__pack_chunk_cols(llm_dtype t);

/* kern_matmul on a packed matrix. */
void kern__matmul_p8(const kern__p8_impl *impl, const kern_mat *w, int64_t col0, int64_t n_in,
                     const float *x, int64_t x_stride, float *y, int64_t y_stride, int n_tok,
                     int64_t row0, int64_t row1, float *scratch);
/* Quantizes n_tok rows of x (x_stride apart) into xa, KERN__I16X_BYTES(n_in) apart. */
void kern__p8_quantize(const kern__p8_impl *impl, const float *x, int64_t x_stride, int64_t n_in,
                       int n_tok, char *xa);
/* The same with the n_tok tokens already quantized at xa (KERN__I16X_BYTES(n_in) apart);
 * edge: 8 * n_tok floats of scratch for a partial 8-row group. */
void kern__p8_rows(const kern__p8_impl *impl, const kern_mat *w, int64_t col0, int64_t n_in,
                   const char *xa, int n_tok, float *y, int64_t y_stride, int64_t row0,
                   int64_t row1, float *edge);

/* AVX2 + FMA variants (kern_avx2.c, built with -mavx2 -mfma on x86-64 only). */
bool kern__cpu_has_avx2(void);
float kern__dot_f32_avx2(const float *a, const float *b, int64_t n);
/* The AVX2 matmul tile: y[t * y_stride + r] = dot(w[r * w_stride ..], x[t * x_stride ..])
 * over n floats, for r < n_rows (1..4) and t < n_tok (1..3), each element in the one
 * order kern_matmul promises (see there), whatever n_rows and n_tok are. */
void kern__gemm_f32_avx2(const float *w, int64_t w_stride, int n_rows, const float *x,
                         int64_t x_stride, int n_tok, int64_t n, float *y, int64_t y_stride);
/* One token against n_rows (1..4) rows of n elements, n % 32 == 0, rows row_bytes
 * apart, decoded in registers: y[r] = the same float the decoder + tile would give. */
typedef void (*kern_rows1_fn)(const void *w, size_t row_bytes, int n_rows, const float *x,
                              int64_t n, float *y);
void kern__rows1_q4_0_avx2(const void *w, size_t row_bytes, int n_rows, const float *x, int64_t n,
                           float *y);
void kern__rows1_q4_1_avx2(const void *w, size_t row_bytes, int n_rows, const float *x, int64_t n,
                           float *y);
void kern__rows1_q8_0_avx2(const void *w, size_t row_bytes, int n_rows, const float *x, int64_t n,
                           float *y);
void kern__rows1_f16_avx2(const void *w, size_t row_bytes, int n_rows, const float *x, int64_t n,
                          float *y);
void kern__q4_0_to_float_avx2(const void *src, float *dst, int64_t n);
void kern__q4_1_to_float_avx2(const void *src, float *dst, int64_t n);
void kern__q8_0_to_float_avx2(const void *src, float *dst, int64_t n);
void kern__f16_to_float_avx2(const void *src, float *dst, int64_t n);
void kern__bf16_to_float_avx2(const void *src, float *dst, int64_t n);
/* y[i] = e^x[i] (within 2 ulp of expf, x clamped to [-87, 88]); softmax and SwiGLU
 * built on it, each element the same float wherever it lies in the array. */
void kern__exp_avx2(const float *x, float *y, int64_t n);
void kern__exp_scaled_avx2(const float *x, float shift, float scale, float *y, int64_t n);
int64_t kern__argmax_scalar(const float *x, int64_t n);
int64_t kern__argmax_avx2(const float *x, int64_t n);
int64_t kern__select_ge_avx2(const float *x, int64_t n, float thr, int32_t *idx);
uint64_t kern__weight_sum_avx2(const float *x, int64_t n, float scale);
uint64_t kern__read_sum_avx2(const uint64_t *p, int64_t n_words);
void kern__softmax_avx2(float *x, int64_t n);
void kern__swiglu_avx2(float *gate, const float *up, int64_t n);
void kern__attn_values_f16_avx2(float *out, const float *att, const kern_half *v, int64_t v_stride,
                                int n_pos, int hd);
void kern__f32_to_f16_avx2(const float *x, kern_half *y, int64_t n);
void kern__attn_scores_avx2(float *const *att, const float *const *q, int nq, const void *k,
                            bool f16, int hd, float scale);
void kern__attn_values_avx2(float *out, const float *att, const float *v, int64_t v_stride,
                            int n_pos, int hd);

#endif
