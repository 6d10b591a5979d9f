/*
 * kern_kquants_avx2.c - AVX2 + FMA + F16C decoders for Q5_0, Q5_1 and the K-quants,
 * built with -mavx2 -mfma -mf16c and registered by kern_ops.c only after
 * kern__cpu_has_avx2() said yes.
 *
 * Each turns the quants of 8 elements into floats with one multiply(-add) by the block's
 * scale (and minimum) and stores them; kern_matmul decodes a few rows this way into a
 * small L1-resident buffer and runs the float GEMM tile over it, so every weight type
 * shares one accumulation order (see kern_matmul). A fused multiply-add rounds once where
 * the scalar decoders round twice, so results differ from them in the last bit at most.
 * What it does not do: quantize the activations for integer dot products as ggml does.
 */
#include "kern_kquants.h"

#include "kern_avx2_util.h"

#include <assert.h>
#include <immintrin.h>
#include <string.h>

/* y[0..16) = q * d + off for 16 unsigned byte quants q. */
static inline void
store16_u8(__m128i q, __m256 d, __m256 off, float *y)
{
    _mm256_storeu_ps(y, _mm256_fmadd_ps(u8x8_to_ps(q), d, off));
    _mm256_storeu_ps(y + 8, _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(q, 8)), d, off));
}

/* y[0..16) = q * d for 16 signed byte quants q. */
static inline void
store16_i8(__m128i q, __m256 d, float *y)
{
    _mm256_storeu_ps(y, _mm256_mul_ps(i8x8_to_ps(q), d));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(i8x8_to_ps(_mm_srli_si128(q, 8)), d));
}

/* The 32 five-bit quants of a Q5_0 / Q5_1 block: q_lo holds elements 0..15, q_hi
 * 16..31. Bit j of qh goes to bit 4 of element j: broadcast the qh byte that holds it to
 * each element's lane, test the element's bit, and turn a hit into 0x10. */
static inline void
q5_unpack(const uint8_t qs[16], const uint8_t qh_bytes[4], __m128i *q_lo, __m128i *q_hi)
{
    uint32_t qh;
    memcpy(&qh, qh_bytes, sizeof(qh)); // little-endian, unaligned at offset 2 or 4
    const __m128i bit = _mm_set_epi8((char)0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01,
                                     (char)0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01);
    const __m128i m4 = _mm_set1_epi8(0x0f), b4 = _mm_set1_epi8(0x10);
    __m128i h = _mm_set1_epi32((int)qh);
    __m128i h_lo =
        _mm_shuffle_epi8(h, _mm_set_epi8(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0));
    __m128i h_hi =
        _mm_shuffle_epi8(h, _mm_set_epi8(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2));
    h_lo = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h_lo, bit), bit), b4);
    h_hi = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h_hi, bit), bit), b4);
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    *q_lo = _mm_or_si128(_mm_and_si128(q, m4), h_lo);
    *q_hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q, 4), m4), h_hi);
}

void
kern__q5_0_to_float_avx2(const void *src, float *dst, int64_t n)
{
    assert(n % QK5_0 == 0);
    const blk_q5_0 *b = src;
    const __m128i b16 = _mm_set1_epi8(16);
    for (int64_t i = 0; i < n / QK5_0; i++) {
        __m128i lo, hi;
        q5_unpack(b[i].qs, b[i].qh, &lo, &hi);
        __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d));
        store16_i8(_mm_sub_epi8(lo, b16), d, dst + i * QK5_0);
        store16_i8(_mm_sub_epi8(hi, b16), d, dst + i * QK5_0 + 16);
    }
}

void
kern__q5_1_to_float_avx2(const void *src, float *dst, int64_t n)
{
    assert(n % QK5_1 == 0);
    const blk_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        __m128i lo, hi;
        q5_unpack(b[i].qs, b[i].qh, &lo, &hi);
        __m256 d = _mm256_set1_ps(_cvtsh_ss(b[i].d)), m = _mm256_set1_ps(_cvtsh_ss(b[i].m));
        store16_u8(lo, d, m, dst + i * QK5_1);
        store16_u8(hi, d, m, dst + i * QK5_1 + 16);
    }
}

/* The eight (d * sc[j], -dmin * m[j]) pairs of a Q4_K / Q5_K super-block (see blk_q4_k
 * for the 6-bit packing). */
static inline void
k_scales(const uint8_t s[K_SCALE_SIZE], float d, float dmin, float dl[8], float ml[8])
{
    for (int j = 0; j < 4; j++) {
        dl[j] = d * (float)(s[j] & 63);
        ml[j] = -dmin * (float)(s[j + 4] & 63);
        dl[j + 4] = d * (float)((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
        ml[j + 4] = -dmin * (float)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

void
kern__q4_k_to_float_avx2(const void *src, float *dst, int64_t n)
{
    assert(n % QK_K == 0);
    const blk_q4_k *b = src;
    const __m128i m4 = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < n / QK_K; i++) {
        float dl[8], ml[8];
        k_scales(b[i].scales, _cvtsh_ss(b[i].d), _cvtsh_ss(b[i].dmin), dl, ml);
        for (int j = 0; j < QK_K / 64; j++) {
            // 32 bytes: low nibbles are sub-block 2j, high nibbles sub-block 2j + 1
            float *y = dst + i * QK_K + 64 * j;
            __m128i q0 = _mm_loadu_si128((const __m128i *)(b[i].qs + 32 * j));
            __m128i q1 = _mm_loadu_si128((const __m128i *)(b[i].qs + 32 * j + 16));
            __m256 d0 = _mm256_set1_ps(dl[2 * j]), o0 = _mm256_set1_ps(ml[2 * j]);
            __m256 d1 = _mm256_set1_ps(dl[2 * j + 1]), o1 = _mm256_set1_ps(ml[2 * j + 1]);
            store16_u8(_mm_and_si128(q0, m4), d0, o0, y);
            store16_u8(_mm_and_si128(q1, m4), d0, o0, y + 16);
            store16_u8(_mm_and_si128(_mm_srli_epi16(q0, 4), m4), d1, o1, y + 32);
            store16_u8(_mm_and_si128(_mm_srli_epi16(q1, 4), m4), d1, o1, y + 48);
        }
    }
}

void
kern__q5_k_to_float_avx2(const void *src, float *dst, int64_t n)
{
    assert(n % QK_K == 0);
    const blk_q5_k *b = src;
    const __m128i m4 = _mm_set1_epi8(0x0f), b4 = _mm_set1_epi8(0x10);
    for (int64_t i = 0; i < n / QK_K; i++) {
        float dl[8], ml[8];
        k_scales(b[i].scales, _cvtsh_ss(b[i].d), _cvtsh_ss(b[i].dmin), dl, ml);
        // qh[l] bit 2j is bit 4 of element 64j + l, bit 2j + 1 of element 64j + 32 + l.
        // Shifting the 16-bit lanes right by 2 per step brings bits 2j, 2j + 1 of each
        // byte down to bits 0, 1; what crosses from the neighbour byte lands above them.
        __m128i h0 = _mm_loadu_si128((const __m128i *)b[i].qh);
        __m128i h1 = _mm_loadu_si128((const __m128i *)(b[i].qh + 16));
        for (int j = 0; j < QK_K / 64; j++) {
            float *y = dst + i * QK_K + 64 * j;
            __m128i q0 = _mm_loadu_si128((const __m128i *)(b[i].qs + 32 * j));
            __m128i q1 = _mm_loadu_si128((const __m128i *)(b[i].qs + 32 * j + 16));
            __m128i a0 = _mm_or_si128(_mm_and_si128(q0, m4),
                                      _mm_and_si128(_mm_slli_epi16(h0, 4), b4)); // bit 0 -> 4
            __m128i a1 =
                _mm_or_si128(_mm_and_si128(q1, m4), _mm_and_si128(_mm_slli_epi16(h1, 4), b4));
            __m128i c0 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q0, 4), m4),
                                      _mm_and_si128(_mm_slli_epi16(h0, 3), b4)); // bit 1 -> 4
            __m128i c1 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q1, 4), m4),
                                      _mm_and_si128(_mm_slli_epi16(h1, 3), b4));
            __m256 d0 = _mm256_set1_ps(dl[2 * j]), o0 = _mm256_set1_ps(ml[2 * j]);
            __m256 d1 = _mm256_set1_ps(dl[2 * j + 1]), o1 = _mm256_set1_ps(ml[2 * j + 1]);
            store16_u8(a0, d0, o0, y);
            store16_u8(a1, d0, o0, y + 16);
            store16_u8(c0, d1, o1, y + 32);
            store16_u8(c1, d1, o1, y + 48);
            h0 = _mm_srli_epi16(h0, 2);
            h1 = _mm_srli_epi16(h1, 2);
        }
    }
}

void
kern__q6_k_to_float_avx2(const void *src, float *dst, int64_t n)
{
    assert(n % QK_K == 0);
    const blk_q6_k *b = src;
    const __m128i m4 = _mm_set1_epi8(0x0f), m30 = _mm_set1_epi8(0x30), b32 = _mm_set1_epi8(32);
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = _cvtsh_ss(b[i].d);
        for (int h = 0; h < QK_K / 128; h++) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            for (int l = 0; l < 32; l += 16) {
                // 16 elements of each of the four quarters of this half (see blk_q6_k);
                // the high two bits move to bits 4..5 by shifts that keep them in-byte.
                float *y = dst + i * QK_K + 128 * h + l;
                __m128i a = _mm_loadu_si128((const __m128i *)(ql + l));
                __m128i c = _mm_loadu_si128((const __m128i *)(ql + 32 + l));
                __m128i hh = _mm_loadu_si128((const __m128i *)(qh + l));
                __m128i q0 =
                    _mm_or_si128(_mm_and_si128(a, m4), _mm_and_si128(_mm_slli_epi16(hh, 4), m30));
                __m128i q1 =
                    _mm_or_si128(_mm_and_si128(c, m4), _mm_and_si128(_mm_slli_epi16(hh, 2), m30));
                __m128i q2 =
                    _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), m4), _mm_and_si128(hh, m30));
                __m128i q3 = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(c, 4), m4),
                                          _mm_and_si128(_mm_srli_epi16(hh, 2), m30));
                int is = l / 16;
                store16_i8(_mm_sub_epi8(q0, b32), _mm256_set1_ps(d * (float)sc[is]), y);
                store16_i8(_mm_sub_epi8(q1, b32), _mm256_set1_ps(d * (float)sc[is + 2]), y + 32);
                store16_i8(_mm_sub_epi8(q2, b32), _mm256_set1_ps(d * (float)sc[is + 4]), y + 64);
                store16_i8(_mm_sub_epi8(q3, b32), _mm256_set1_ps(d * (float)sc[is + 6]), y + 96);
            }
        }
    }
}

void
kern__q8_k_to_float_avx2(const void *src, float *dst, int64_t n)
{
    assert(n % QK_K == 0);
    const blk_q8_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256 d = _mm256_set1_ps(b[i].d);
        for (int j = 0; j < QK_K; j += 16)
            store16_i8(_mm_loadu_si128((const __m128i *)(b[i].qs + j)), d, dst + i * QK_K + j);
    }
}
