/*
 * kern_avx2_util.h - small AVX2 helpers shared by the AVX2 translation units only
 * (kern_avx2.c, kern_kquants_avx2.c), which are the only files built with -mavx2.
 * Including it anywhere else would emit AVX2 code that a CPU without it would trap on.
 */
#ifndef LLM_KERNELS_KERN_AVX2_UTIL_H
#define LLM_KERNELS_KERN_AVX2_UTIL_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

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

/* dec32: the 32 floats of chunk c (elements 32c .. 32c + 31) of an encoded row, as four
 * vectors. It is each type's one definition of its weights at this SIMD level: the
 * decoder stores what it returns and the fused one-token kernel multiplies it in
 * registers, so both paths see the same floats. */
typedef void (*dec32_fn)(const void *row, int64_t c, __m256 w[4]);

static inline __attribute__((always_inline)) void
decode_rows_with(dec32_fn dec, const void *src, float *dst, int64_t n)
{
    for (int64_t c = 0; c < n / 32; c++) {
        __m256 w[4];
        dec(src, c, w);
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(dst + 32 * c + 8 * k, w[k]);
    }
}

/* One token against R rows (1..4) of n elements (n % 32 == 0), decoded in registers:
 * y[r] = dot(row r, x) with one 8-lane FMA accumulator per row taking the row's 8-float
 * chunks in order, then hsum_ps: exactly the order of the GEMM tile (kern_avx2.c), so
 * the result is the same float as decoding the rows and running the tile. The R rows
 * give R independent FMA chains. */
static inline __attribute__((always_inline)) void
rows1_with(dec32_fn dec, const int R, const char *w, size_t row_bytes, const float *x, int64_t n,
           float *y)
{
    __m256 acc[4];
    for (int r = 0; r < R; r++)
        acc[r] = _mm256_setzero_ps();
    for (int64_t c = 0; c < n / 32; c++) {
        __m256 xv[4];
        for (int k = 0; k < 4; k++)
            xv[k] = _mm256_loadu_ps(x + 32 * c + 8 * k);
        for (int r = 0; r < R; r++) {
            __m256 wv[4];
            // Four rows are four interleaved streams, which the hardware prefetcher
            // follows poorly from DRAM: Q8_0 one-token rows (the 49152-row output
            // matrix) ran at half speed without this; eight chunks ahead suffices.
            _mm_prefetch(w + (size_t)r * row_bytes + (size_t)(32 * (c + 8)) * row_bytes / (size_t)n,
                         _MM_HINT_T0);
            dec(w + (size_t)r * row_bytes, c, wv);
            for (int k = 0; k < 4; k++)
                acc[r] = _mm256_fmadd_ps(wv[k], xv[k], acc[r]);
        }
    }
    for (int r = 0; r < R; r++)
        y[r] = hsum_ps(acc[r]);
}

/* The exported one-token kernel for a type: 4 or 1 rows per call. */
static inline __attribute__((always_inline)) void
rows1_dispatch(dec32_fn dec, const void *w, size_t row_bytes, int n_rows, const float *x, int64_t n,
               float *y)
{
    if (n_rows == 4)
        rows1_with(dec, 4, w, row_bytes, x, n, y);
    else
        for (int r = 0; r < n_rows; r++)
            rows1_with(dec, 1, (const char *)w + (size_t)r * row_bytes, row_bytes, x, n, y + r);
}

#endif
