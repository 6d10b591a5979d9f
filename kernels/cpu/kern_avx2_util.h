/*
 * kern_avx2_util.h - small AVX2 helpers shared by the AVX2 translation units only
 * (kern_avx2.c, kern_kquants_avx2.c), which are the only files built with -mavx2.
 * Including it anywhere else would emit AVX2 code that a CPU without it would trap on.
 */
#ifndef LLM_KERNELS_KERN_AVX2_UTIL_H
#define LLM_KERNELS_KERN_AVX2_UTIL_H

#include <immintrin.h>

/* Eight unsigned / signed bytes widened to floats. */
static inline __m256
u8x8_to_ps(__m128i v)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
}

static inline __m256
i8x8_to_ps(__m128i v)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

/* The sum of the eight lanes. */
static inline float
hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif
