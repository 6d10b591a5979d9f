/*
 * kern_avx2.c - AVX2 + FMA + F16C variants, compiled with -mavx2 -mfma -mf16c and called
 * only after kern__cpu_has_avx2() said yes, so a CPU without them never runs one (no
 * SIGILL; kern_simd_name() then says "scalar").
 */
#include "kern_internal.h"

#include "kern_avx2_util.h"

#include <immintrin.h>

bool
kern__cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

float
kern__dot_f32_avx2(const float *a, const float *b, int64_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    int64_t i = 0;
    // Four accumulators hide the FMA latency (4 cycles, 2 per cycle on Zen 3).
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float r = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        r += a[i] * b[i];
    return r;
}

/* Sum over blocks of d * dot(q, x) [+ m * sum(x)]: the per-block scale multiplies the
 * block's partial dot, held in a vector accumulator until the end of the row. */
static inline void
q4_block(const uint8_t *qs, const float *x, __m256 d, __m256 *acc, __m256 *xsum)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));                    // elements 0..15
    __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0f)); // 16..31
    __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
    __m256 x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
    __m256 p = _mm256_mul_ps(u8x8_to_ps(lo), x0);
    p = _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(lo, 8)), x1, p);
    p = _mm256_fmadd_ps(u8x8_to_ps(hi), x2, p);
    p = _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(hi, 8)), x3, p);
    *acc = _mm256_fmadd_ps(d, p, *acc);
    *xsum = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
}

float
kern__row_dot_q4_0_avx2(const void *w, const float *x, int64_t n)
{
    const blk_q4_0 *b = w;
    __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK4_0; i++) {
        float d = _cvtsh_ss(b[i].d);
        __m256 xs;
        q4_block(b[i].qs, x + i * QK4_0, _mm256_set1_ps(d), &acc, &xs);
        off = _mm256_fmadd_ps(_mm256_set1_ps(-8.0f * d), xs, off); // the -8 of each quant
    }
    return hsum_ps(_mm256_add_ps(acc, off));
}

float
kern__row_dot_q4_1_avx2(const void *w, const float *x, int64_t n)
{
    const blk_q4_1 *b = w;
    __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK4_1; i++) {
        __m256 xs;
        q4_block(b[i].qs, x + i * QK4_1, _mm256_set1_ps(_cvtsh_ss(b[i].d)), &acc, &xs);
        off = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].m)), xs, off);
    }
    return hsum_ps(_mm256_add_ps(acc, off));
}

float
kern__row_dot_q8_0_avx2(const void *w, const float *x, int64_t n)
{
    const blk_q8_0 *b = w;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *xb = x + i * QK8_0;
        __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i q1 = _mm_loadu_si128((const __m128i *)(b[i].qs + 16));
        __m256 p = _mm256_mul_ps(i8x8_to_ps(q0), _mm256_loadu_ps(xb));
        p = _mm256_fmadd_ps(i8x8_to_ps(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(xb + 8), p);
        p = _mm256_fmadd_ps(i8x8_to_ps(q1), _mm256_loadu_ps(xb + 16), p);
        p = _mm256_fmadd_ps(i8x8_to_ps(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(xb + 24), p);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), p, acc);
    }
    return hsum_ps(acc);
}

/* A 4-row x 3-token block of dot products over float rows: each weight vector loaded
 * is used for three tokens and each activation vector for four rows, so the loop does
 * 12 FMAs per 7 loads instead of 1 per 2 (16 ymm registers: 12 sums, 3 x, 1 w). */
void
kern__gemm_4x3_f32_avx2(const float *w, int64_t w_stride, const float *x, int64_t x_stride,
                        int64_t n, float *y, int64_t y_stride)
{
    __m256 acc[4][3];
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 3; t++)
            acc[r][t] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 x0 = _mm256_loadu_ps(x + k);
        __m256 x1 = _mm256_loadu_ps(x + x_stride + k);
        __m256 x2 = _mm256_loadu_ps(x + 2 * x_stride + k);
        for (int r = 0; r < 4; r++) {
            __m256 wv = _mm256_loadu_ps(w + r * w_stride + k);
            acc[r][0] = _mm256_fmadd_ps(wv, x0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(wv, x1, acc[r][1]);
            acc[r][2] = _mm256_fmadd_ps(wv, x2, acc[r][2]);
        }
    }
    for (int r = 0; r < 4; r++) {
        for (int t = 0; t < 3; t++) {
            float s = hsum_ps(acc[r][t]);
            for (int64_t j = k; j < n; j++)
                s += w[r * w_stride + j] * x[t * x_stride + j];
            y[t * y_stride + r] = s;
        }
    }
}

/* out[0..hd) = sum_p att[p] * v[p * v_stride + 0..hd): the attention-weighted sum of
 * values, with out held in registers 64 floats at a time across all positions. */
void
kern__attn_values_avx2(float *out, const float *att, const float *v, int64_t v_stride, int n_pos,
                       int hd)
{
    int c = 0;
    for (; c + 64 <= hd; c += 64) {
        __m256 o[8];
        for (int i = 0; i < 8; i++)
            o[i] = _mm256_setzero_ps();
        for (int p = 0; p < n_pos; p++) {
            __m256 a = _mm256_broadcast_ss(att + p);
            const float *vp = v + (int64_t)p * v_stride + c;
            for (int i = 0; i < 8; i++)
                o[i] = _mm256_fmadd_ps(a, _mm256_loadu_ps(vp + 8 * i), o[i]);
        }
        for (int i = 0; i < 8; i++)
            _mm256_storeu_ps(out + c + 8 * i, o[i]);
    }
    for (; c < hd; c++) {
        float s = 0.0f;
        for (int p = 0; p < n_pos; p++)
            s += att[p] * v[(int64_t)p * v_stride + c];
        out[c] = s;
    }
}

/* att[p] = scale * dot(q, k[p * k_stride ..]) for p < n_pos. Eight positions at a time
 * share each load of q, and their eight sums are reduced together by one transposing
 * add tree instead of eight separate horizontal sums. */
void
kern__attn_scores_avx2(float *att, const float *q, const float *k, int64_t k_stride, int n_pos,
                       int hd, float scale)
{
    int p = 0;
    if (hd % 8 == 0) {
        for (; p + 8 <= n_pos; p += 8) {
            __m256 a[8];
            for (int j = 0; j < 8; j++)
                a[j] = _mm256_setzero_ps();
            for (int c = 0; c < hd; c += 8) {
                __m256 qv = _mm256_loadu_ps(q + c);
                for (int j = 0; j < 8; j++)
                    a[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + (int64_t)(p + j) * k_stride + c),
                                           a[j]);
            }
            __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
            __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
            __m256 sum = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                       _mm256_permute2f128_ps(u0, u1, 0x31));
            _mm256_storeu_ps(att + p, _mm256_mul_ps(sum, _mm256_set1_ps(scale)));
        }
    }
    for (; p < n_pos; p++)
        att[p] = scale * kern__dot_f32_avx2(q, k + (int64_t)p * k_stride, hd);
}

/* Decoders: the same widening as the row dots, stored instead of multiplied, for the
 * multi-token path that decodes a row once and reuses it for every token. */
static inline void
q4_decode_block(const uint8_t *qs, __m256 d, __m256 m, float *y)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
    __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0f));
    _mm256_storeu_ps(y, _mm256_fmadd_ps(d, u8x8_to_ps(lo), m));
    _mm256_storeu_ps(y + 8, _mm256_fmadd_ps(d, u8x8_to_ps(_mm_srli_si128(lo, 8)), m));
    _mm256_storeu_ps(y + 16, _mm256_fmadd_ps(d, u8x8_to_ps(hi), m));
    _mm256_storeu_ps(y + 24, _mm256_fmadd_ps(d, u8x8_to_ps(_mm_srli_si128(hi, 8)), m));
}

void
kern__q4_0_to_float_avx2(const void *src, float *dst, int64_t n)
{
    const blk_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        float d = _cvtsh_ss(b[i].d);
        q4_decode_block(b[i].qs, _mm256_set1_ps(d), _mm256_set1_ps(-8.0f * d), dst + i * QK4_0);
    }
}

void
kern__q4_1_to_float_avx2(const void *src, float *dst, int64_t n)
{
    const blk_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK4_1; i++)
        q4_decode_block(b[i].qs, _mm256_set1_ps(_cvtsh_ss(b[i].d)),
                        _mm256_set1_ps(_cvtsh_ss(b[i].m)), dst + i * QK4_1);
}

void
kern__q8_0_to_float_avx2(const void *src, float *dst, int64_t n)
{
    const blk_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
        __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i q1 = _mm_loadu_si128((const __m128i *)(b[i].qs + 16));
        float *y = dst + i * QK8_0;
        _mm256_storeu_ps(y, _mm256_mul_ps(d, i8x8_to_ps(q0)));
        _mm256_storeu_ps(y + 8, _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(q0, 8))));
        _mm256_storeu_ps(y + 16, _mm256_mul_ps(d, i8x8_to_ps(q1)));
        _mm256_storeu_ps(y + 24, _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(q1, 8))));
    }
}

void
kern__f16_to_float_avx2(const void *src, float *dst, int64_t n)
{
    const kern_half *s = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    for (; i < n; i++)
        dst[i] = _cvtsh_ss(s[i]);
}
