/*
 * kern_internal.h - declarations shared between the kernel files and nothing else:
 * the SIMD variants that kern_ops.c dispatches to. Not part of the interface.
 */
#ifndef LLM_KERNELS_KERN_INTERNAL_H
#define LLM_KERNELS_KERN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kern.h"

/* Scalar reference implementations (kern_ops.c). */
float kern__dot_f32_scalar(const float *a, const float *b, int64_t n);
void kern__attn_scores_scalar(float *att, const float *q, const float *k, int64_t k_stride,
                              int n_pos, int hd, float scale);
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
void kern__attn_scores_avx2(float *att, const float *q, const float *k, int64_t k_stride, int n_pos,
                            int hd, float scale);
void kern__attn_values_avx2(float *out, const float *att, const float *v, int64_t v_stride,
                            int n_pos, int hd);

#endif
