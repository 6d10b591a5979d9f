/*
 * kern_kquants.h - internal: the 5-bit and K-quant types (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K,
 * Q8_K). Scalar decoders and reference quantizers (kern_kquants.c) that kern_types.c puts
 * in the traits table, and the AVX2 decoders (kern_kquants_avx2.c) that kern_ops.c
 * registers. Not part of the interface: callers go through kern_type() and kern_matmul().
 *
 * Every function here takes n, the element count, as a whole number of blocks (32 for
 * Q5_0 / Q5_1, QK_K = 256 for the K-quants); the GGUF loader guarantees it for tensors.
 */
#ifndef LLM_KERNELS_KERN_KQUANTS_H
#define LLM_KERNELS_KERN_KQUANTS_H

#include <stdint.h>

#include "kern.h"

/* Decoders (kern_to_float_fn): src holds n / blck blocks, dst receives n floats.
 * Each computes exactly what gguf.quants.dequantize does, in the same float32 order, so
 * results match it bit for bit. */
void kern__q5_0_to_float(const void *src, float *dst, int64_t n);
void kern__q5_1_to_float(const void *src, float *dst, int64_t n);
void kern__q4_k_to_float(const void *src, float *dst, int64_t n);
void kern__q5_k_to_float(const void *src, float *dst, int64_t n);
void kern__q6_k_to_float(const void *src, float *dst, int64_t n);
void kern__q8_k_to_float(const void *src, float *dst, int64_t n);

/* Unpacks the eight 6-bit scales and minimums of a Q4_K / Q5_K super-block. */
void kern__k_scales_unpack(const uint8_t s[K_SCALE_SIZE], uint8_t sc[8], uint8_t m[8]);

/* Reference quantizers (kern_from_float_fn): n floats into n / blck blocks. Q5_0 / Q5_1
 * round as ggml's *_ref do; Q6_K and Q8_K round to nearest from each block's signed
 * extreme (simpler than the scale search ggml does for Q6_K). Q4_K and
 * Q5_K fit each sub-block's scale and minimum by weighted least squares over a few
 * candidate scales, then round the fitted 6-bit scales, the method of ggml's make_qkx2.
 * Slow (Q4_K: about 0.1 us per element): for llm-quantize and tests, not a hot path. */
void kern__q5_0_from_float(const float *src, void *dst, int64_t n);
void kern__q5_1_from_float(const float *src, void *dst, int64_t n);
void kern__q4_k_from_float(const float *src, void *dst, int64_t n);
void kern__q5_k_from_float(const float *src, void *dst, int64_t n);
void kern__q6_k_from_float(const float *src, void *dst, int64_t n);
void kern__q8_k_from_float(const float *src, void *dst, int64_t n);

/* AVX2 + FMA + F16C decoders (kern_to_float_fn; kern_kquants_avx2.c, x86-64 only): the
 * SIMD level's definition of each weight as a float, which every kern_matmul path uses.
 * They may differ from the scalar decoders above in the last bit (one rounding of
 * q * d + m instead of two). Call only after kern__cpu_has_avx2() said yes. */
void kern__q5_0_to_float_avx2(const void *src, float *dst, int64_t n);
void kern__q5_1_to_float_avx2(const void *src, float *dst, int64_t n);
void kern__q4_k_to_float_avx2(const void *src, float *dst, int64_t n);
void kern__q5_k_to_float_avx2(const void *src, float *dst, int64_t n);
void kern__q6_k_to_float_avx2(const void *src, float *dst, int64_t n);
void kern__q8_k_to_float_avx2(const void *src, float *dst, int64_t n);

#endif
