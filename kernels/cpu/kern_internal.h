/*
 * kern_internal.h - declarations shared between the kernel files and nothing else:
 * the SIMD variants that kern_ops.c dispatches to. Not part of the interface.
 */
#ifndef LLM_KERNELS_KERN_INTERNAL_H
#define LLM_KERNELS_KERN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

/* Scalar reference implementations (kern_ops.c). */
float kern__dot_f32_scalar(const float *a, const float *b, int64_t n);

/* AVX2 + FMA variants (kern_avx2.c, built with -mavx2 -mfma on x86-64 only). */
bool kern__cpu_has_avx2(void);
float kern__dot_f32_avx2(const float *a, const float *b, int64_t n);

#endif
