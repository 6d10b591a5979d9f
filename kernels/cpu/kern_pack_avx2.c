/*
 * kern_pack_avx2.c - AVX2 kernels of the packed path (kern_pack.c): the 16-bit
 * activation quantizer and the packed GEMM. Built with -mavx2 -mfma -mf16c and used
 * only after kern__cpu_has_avx2() said yes.
 *
 * Lane i of every vector is row i of an 8-row group. Per block, each quad of the chunk
 * is split into column pairs as 16-bit integers (Q4: mask and shift; Q8_0: sign
 * extension) and multiplied with the token's activation pair by vpmaddwd, whose two
 * products per lane land in the row's int32 sum; the sum is exact, so the order of
 * the multiply-adds is free. Then the float steps of kern_pack.c's element, lane-wise.
 * A tile of up to four tokens shares each unpacked quad.
 */
#include "kern_internal.h"

#include <assert.h>
#include <immintrin.h>
#include <string.h>

void
kern__quantize_i16_avx2(const float *x, int64_t n, void *out)
{
    assert(n % 32 == 0);
    kern__i16x a = kern__i16x_at(out, n);
    int16_t *qs = (int16_t *)a.qs;
    float *d_out = (float *)a.d, *s_out = (float *)a.s;
    const __m256 sign = _mm256_set1_ps(-0.0f), hi = _mm256_set1_ps(32767.0f),
                 lo = _mm256_set1_ps(-32767.0f);
    for (int64_t b = 0; b < n / 32; b++) {
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 32 * b + 8 * k);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), m);
        }
        // The lanes' maximum; max is exact, so the reduction order does not matter.
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 32767.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 s = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(v[k], vid), hi), lo);
            q[k] = _mm256_cvtps_epi32(
                _mm256_round_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        // int32 -> int16 in element order: packs interleaves the 128-bit lanes.
        for (int k = 0; k < 4; k += 2) {
            __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[k], q[k + 1]), 0xd8);
            _mm256_storeu_si256((__m256i *)(qs + 32 * b + 8 * k), p);
        }
        d_out[b] = d;
        s_out[b] = d * (float)_mm_cvtsi128_si32(s4);
    }
}

enum { KIND_Q4_0, KIND_Q4_1, KIND_Q5_0, KIND_Q5_1, KIND_Q4_K, KIND_Q5_K, KIND_Q6_K, KIND_Q8_0 };

/* The activation pair (q[j], q[j + 1]) in every 32-bit lane. */
static inline __attribute__((always_inline)) __m256i
pair(const int16_t *q, int j)
{
    int32_t v;
    memcpy(&v, q + j, sizeof(v));
    return _mm256_set1_epi32(v);
}

/* The block of a 4-token tile, written out by hand: gcc schedules the intrinsics
 * version below with the four sums and sixteen broadcasts in flight at once and spills,
 * and re-associates the sums into trees; here each column pair is unpacked once into
 * ymm10 and goes through broadcast, vpmaddwd and vpaddd per token in order, the sums
 * stay in registers, and the integer results are the same (exact) sums: Q4_1 49 -> 55,
 * Q8_0 53 -> 56.5 MACs/ns in llm-kern-bench at 4+ tokens. Quad K's 32 bytes sit at
 * byte 32K of the quants; its column pair j uses the activation pair at int16 8K + 2j
 * (byte 16K + 4j). */
// clang-format off
#define Q4_MADD(OFF, T)                                                                            \
    "vpbroadcastd " #OFF "(%[x" #T "]), %%ymm11\n\t"                                               \
    "vpmaddwd %%ymm11, %%ymm10, %%ymm11\n\t"                                                       \
    "vpaddd %%ymm11, %[s" #T "], %[s" #T "]\n\t"
#define Q4_MADD4(OFF) Q4_MADD(OFF, 0) Q4_MADD(OFF, 1) Q4_MADD(OFF, 2) Q4_MADD(OFF, 3)
#define Q4_QUAD(K, O0, O1, O2, O3)                                                                 \
    "vmovdqu " #K "(%[qp]), %%ymm9\n\t"                                                            \
    "vpand %[nib], %%ymm9, %%ymm10\n\t"                                                            \
    Q4_MADD4(O0)                                                                                   \
    "vpsrlw $4, %%ymm9, %%ymm10\n\t"                                                               \
    "vpand %[nib], %%ymm10, %%ymm10\n\t"                                                           \
    Q4_MADD4(O1)                                                                                   \
    "vpsrlw $8, %%ymm9, %%ymm10\n\t"                                                               \
    "vpand %[nib], %%ymm10, %%ymm10\n\t"                                                           \
    Q4_MADD4(O2)                                                                                   \
    "vpsrlw $12, %%ymm9, %%ymm10\n\t"                                                              \
    Q4_MADD4(O3)

/* Q8_0: quad K's low bytes (sign-extended) pair with the activations at int16 4K, its
 * high bytes with those at 4K + 2 (bytes 8K and 8K + 4). */
#define Q8_QUAD(K, O0, O1)                                                                         \
    "vmovdqu " #K "(%[qp]), %%ymm9\n\t"                                                            \
    "vpsllw $8, %%ymm9, %%ymm10\n\t"                                                               \
    "vpsraw $8, %%ymm10, %%ymm10\n\t"                                                              \
    Q4_MADD4(O0)                                                                                   \
    "vpsraw $8, %%ymm9, %%ymm10\n\t"                                                               \
    Q4_MADD4(O1)

/* Q5: quad K's nibbles as Q4's, each ORed with its fifth bits: the block's high-bit
 * vector shifted so that column pair (K, j)'s bits (bit 4K + j of each 16-bit half) land
 * on bit 4, then masked with 0x10 (kern_pack.c). HI is the shift, left or right. */
#define Q5_HI(HI) HI "vpand %[m16], %%ymm12, %%ymm12\n\t" "vpor %%ymm12, %%ymm10, %%ymm10\n\t"
#define HL(N) "vpsllw $" #N ", %[hi], %%ymm12\n\t"
#define HR(N) "vpsrlw $" #N ", %[hi], %%ymm12\n\t"
#define H0 "vmovdqa %[hi], %%ymm12\n\t"
#define Q5_QUAD(K, O0, O1, O2, O3, H_0, H_1, H_2, H_3)                                             \
    "vmovdqu " #K "(%[qp]), %%ymm9\n\t"                                                            \
    "vpand %[nib], %%ymm9, %%ymm10\n\t"                                                            \
    Q5_HI(H_0)                                                                                     \
    Q4_MADD4(O0)                                                                                   \
    "vpsrlw $4, %%ymm9, %%ymm10\n\t"                                                               \
    "vpand %[nib], %%ymm10, %%ymm10\n\t"                                                           \
    Q5_HI(H_1)                                                                                     \
    Q4_MADD4(O1)                                                                                   \
    "vpsrlw $8, %%ymm9, %%ymm10\n\t"                                                               \
    "vpand %[nib], %%ymm10, %%ymm10\n\t"                                                           \
    Q5_HI(H_2)                                                                                     \
    Q4_MADD4(O2)                                                                                   \
    "vpsrlw $12, %%ymm9, %%ymm10\n\t"                                                              \
    Q5_HI(H_3)                                                                                     \
    Q4_MADD4(O3)

/* Q6_K: the nibbles ORed with bit 4 from the [hi] vector and bit 5 from [hb] (each
 * shifted into place as Q5's fifth bit), minus 32: q - 32 as a signed 16-bit pair.
 * [m32] is both the bit-5 mask and the 32 subtracted. */
#define BL(N) "vpsllw $" #N ", %[hb], %%ymm12\n\t"
#define BR(N) "vpsrlw $" #N ", %[hb], %%ymm12\n\t"
#define B0 "vmovdqa %[hb], %%ymm12\n\t"
#define Q6_BITS(HA, HB)                                                                            \
    Q5_HI(HA) HB "vpand %[m32], %%ymm12, %%ymm12\n\t" "vpor %%ymm12, %%ymm10, %%ymm10\n\t"          \
                 "vpsubw %[m32], %%ymm10, %%ymm10\n\t"
#define Q6_QUAD(K, O0, O1, O2, O3, A0, A1, A2, A3, B_0, B_1, B_2, B_3)                              \
    "vmovdqu " #K "(%[qp]), %%ymm9\n\t"                                                            \
    "vpand %[nib], %%ymm9, %%ymm10\n\t"                                                            \
    Q6_BITS(A0, B_0)                                                                               \
    Q4_MADD4(O0)                                                                                   \
    "vpsrlw $4, %%ymm9, %%ymm10\n\t"                                                               \
    "vpand %[nib], %%ymm10, %%ymm10\n\t"                                                           \
    Q6_BITS(A1, B_1)                                                                               \
    Q4_MADD4(O1)                                                                                   \
    "vpsrlw $8, %%ymm9, %%ymm10\n\t"                                                               \
    "vpand %[nib], %%ymm10, %%ymm10\n\t"                                                           \
    Q6_BITS(A2, B_2)                                                                               \
    Q4_MADD4(O2)                                                                                   \
    "vpsrlw $12, %%ymm9, %%ymm10\n\t"                                                              \
    Q6_BITS(A3, B_3)                                                                               \
    Q4_MADD4(O3)
// clang-format on

/* The two 16-column halves of a Q6_K block (quads 0-1, 2-3) for a 4-token tile, into
 * lo and hi: the halves have their own scales. */
static inline __attribute__((always_inline)) void
block_tile4_q6(const char *qp, const int16_t *x0, const int16_t *x1, const int16_t *x2,
               const int16_t *x3, __m256i ha, __m256i hb, __m256i lo[4], __m256i hi[4])
{
    const __m256i nib = _mm256_set1_epi16(0x000f), m16 = _mm256_set1_epi16(0x0010),
                  m32 = _mm256_set1_epi16(0x0020);
    __m256i s0 = lo[0], s1 = lo[1], s2 = lo[2], s3 = lo[3];
    __asm__(Q6_QUAD(0, 0, 4, 8, 12, HL(4), HL(3), HL(2), HL(1), BL(5), BL(4), BL(3), BL(2))
                Q6_QUAD(32, 16, 20, 24, 28, H0, HR(1), HR(2), HR(3), BL(1), B0, BR(1), BR(2))
            : [s0] "+x"(s0), [s1] "+x"(s1), [s2] "+x"(s2), [s3] "+x"(s3)
            : [qp] "r"(qp), [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3), [nib] "x"(nib),
              [m16] "x"(m16), [m32] "x"(m32), [hi] "x"(ha), [hb] "x"(hb)
            : "xmm9", "xmm10", "xmm11", "xmm12", "memory");
    lo[0] = s0, lo[1] = s1, lo[2] = s2, lo[3] = s3;
    s0 = hi[0], s1 = hi[1], s2 = hi[2], s3 = hi[3];
    __asm__(
        Q6_QUAD(64, 32, 36, 40, 44, HR(4), HR(5), HR(6), HR(7), BR(3), BR(4), BR(5), BR(6))
            Q6_QUAD(96, 48, 52, 56, 60, HR(8), HR(9), HR(10), HR(11), BR(7), BR(8), BR(9), BR(10))
        : [s0] "+x"(s0), [s1] "+x"(s1), [s2] "+x"(s2), [s3] "+x"(s3)
        : [qp] "r"(qp), [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3), [nib] "x"(nib),
          [m16] "x"(m16), [m32] "x"(m32), [hi] "x"(ha), [hb] "x"(hb)
        : "xmm9", "xmm10", "xmm11", "xmm12", "memory");
    hi[0] = s0, hi[1] = s1, hi[2] = s2, hi[3] = s3;
}

/* One block of a 4-token tile into the tokens' sums: the Q4 kinds' four quads or
 * Q8_0's eight, token t's activations of the block at x[t]. */
static inline __attribute__((always_inline)) void
block_tile4(const int kind, const char *qp, const int16_t *x0, const int16_t *x1, const int16_t *x2,
            const int16_t *x3, __m256i hi, __m256i isum[4])
{
    __m256i s0 = isum[0], s1 = isum[1], s2 = isum[2], s3 = isum[3];
    if (kind == KIND_Q5_0 || kind == KIND_Q5_1 || kind == KIND_Q5_K)
        __asm__(Q5_QUAD(0, 0, 4, 8, 12, HL(4), HL(3), HL(2), HL(1))
                    Q5_QUAD(32, 16, 20, 24, 28, H0, HR(1), HR(2), HR(3))
                        Q5_QUAD(64, 32, 36, 40, 44, HR(4), HR(5), HR(6), HR(7))
                            Q5_QUAD(96, 48, 52, 56, 60, HR(8), HR(9), HR(10), HR(11))
                : [s0] "+x"(s0), [s1] "+x"(s1), [s2] "+x"(s2), [s3] "+x"(s3)
                : [qp] "r"(qp), [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3),
                  [nib] "x"(_mm256_set1_epi16(0x000f)), [m16] "x"(_mm256_set1_epi16(0x0010)),
                  [hi] "x"(hi)
                : "xmm9", "xmm10", "xmm11", "xmm12", "memory");
    else if (kind == KIND_Q8_0)
        __asm__(Q8_QUAD(0, 0, 4) Q8_QUAD(32, 8, 12) Q8_QUAD(64, 16, 20) Q8_QUAD(96, 24, 28)
                    Q8_QUAD(128, 32, 36) Q8_QUAD(160, 40, 44) Q8_QUAD(192, 48, 52)
                        Q8_QUAD(224, 56, 60)
                : [s0] "+x"(s0), [s1] "+x"(s1), [s2] "+x"(s2), [s3] "+x"(s3)
                : [qp] "r"(qp), [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3)
                : "xmm9", "xmm10", "xmm11", "memory");
    else
        __asm__(Q4_QUAD(0, 0, 4, 8, 12) Q4_QUAD(32, 16, 20, 24, 28) Q4_QUAD(64, 32, 36, 40, 44)
                    Q4_QUAD(96, 48, 52, 56, 60)
                : [s0] "+x"(s0), [s1] "+x"(s1), [s2] "+x"(s2), [s3] "+x"(s3)
                : [qp] "r"(qp), [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3),
                  [nib] "x"(_mm256_set1_epi16(0x000f))
                : "xmm9", "xmm10", "xmm11", "memory");
    isum[0] = s0;
    isum[1] = s1;
    isum[2] = s2;
    isum[3] = s3;
}

/* Bits of a fifth-bit vector h (kern_pack.c) shifted by sh (left when negative) and
 * masked: how the 1-3 token loops move a column pair's high bits under its nibbles. */
static inline __attribute__((always_inline)) __m256i
hi_bits(__m256i h, int sh, __m256i mask)
{
    return _mm256_and_si256(sh >= 0 ? _mm256_srli_epi16(h, sh) : _mm256_slli_epi16(h, -sh), mask);
}

/* A Q4_K super-block chunk's 6-bit scale (or, with is_min, minimum) of sub-block j
 * for its eight rows, from the transposed scale bytes s (kern_pack.c), as floats. */
static inline __attribute__((always_inline)) __m256
q4k_six(const char *s, int j, int is_min)
{
#define SB(i) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(s + 8 * (i))))
    __m256i v;
    if (j < 4) {
        v = _mm256_and_si256(SB(j + 4 * is_min), _mm256_set1_epi32(63));
    } else {
        __m256i lo = SB(j + 4), top = _mm256_srli_epi32(SB(j - 4 + 4 * is_min), 6);
        lo = is_min ? _mm256_srli_epi32(lo, 4) : _mm256_and_si256(lo, _mm256_set1_epi32(15));
        v = _mm256_or_si256(lo, _mm256_slli_epi32(top, 4));
    }
#undef SB
    return _mm256_cvtepi32_ps(v);
}

static inline __attribute__((always_inline)) bool
is_k(const int kind)
{
    return kind == KIND_Q4_K || kind == KIND_Q5_K;
}

/* Block b's chunk: for K-quants the super-block holding it (b / 8), else block b's own. */
static inline __attribute__((always_inline)) const char *
block_chunk(const int kind, const char *w, int64_t b)
{
    const size_t chunk = 8 * (kind == KIND_Q4_0   ? sizeof(blk_q4_0)
                              : kind == KIND_Q4_1 ? sizeof(blk_q4_1)
                              : kind == KIND_Q5_0 ? sizeof(blk_q5_0)
                              : kind == KIND_Q5_1 ? sizeof(blk_q5_1)
                              : kind == KIND_Q4_K ? sizeof(blk_q4_k)
                              : kind == KIND_Q5_K ? sizeof(blk_q5_k)
                                                  : sizeof(blk_q8_0));
    return is_k(kind) ? w + (size_t)(b / 8) * chunk : w + (size_t)b * chunk;
}

/* Block b's quads (32 columns of eight rows). */
static inline __attribute__((always_inline)) const char *
block_quads(const int kind, const char *w, int64_t b)
{
    const char *c = block_chunk(kind, w, b);
    switch (kind) {
    case KIND_Q4_1: return c + 32;
    case KIND_Q5_0: return c + 48;
    case KIND_Q5_1: return c + 64;
    case KIND_Q4_K: return c + KERN__PK_Q4K_QUADS + 128 * (b % 8);
    case KIND_Q5_K: return c + KERN__PK_Q5K_QUADS + 128 * (b % 8);
    default: return c + 16;
    }
}

/* Block b's fifth bits (Q5 kinds): the vector before Q5_0's / Q5_1's quads, Q5_K's
 * eight after the scale bytes. */
static inline __attribute__((always_inline)) __m256i
block_hi(const int kind, const char *w, int64_t b)
{
    const char *p = kind == KIND_Q5_K ? block_chunk(kind, w, b) + KERN__PK_Q5K_HI + 32 * (b % 8)
                                      : block_quads(kind, w, b) - 32;
    return _mm256_loadu_si256((const __m256i *)p);
}

/* Block b's eight row scales d_w. */
static inline __attribute__((always_inline)) __m256
block_dw(const int kind, const char *w, int64_t b)
{
    const char *c = block_chunk(kind, w, b);
    __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)c));
    return is_k(kind) ? _mm256_mul_ps(d, q4k_six(c + KERN__PK_K_SCALES, (int)(b % 8), 0)) : d;
}

/* Block b's eight row minimums m_w (the element's minimum term is m_w * s_x). */
static inline __attribute__((always_inline)) __m256
block_mw(const int kind, const char *w, int64_t b)
{
    const char *c = block_chunk(kind, w, b);
    __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)c));
    switch (kind) {
    case KIND_Q4_1:
    case KIND_Q5_1: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(c + 16)));
    case KIND_Q5_0: return _mm256_mul_ps(d, _mm256_set1_ps(-16.0f));
    case KIND_Q4_K:
    case KIND_Q5_K: { // -(dmin * m): the negation is exact
        __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(c + KERN__PK_DMIN)));
        return _mm256_xor_ps(_mm256_mul_ps(dmin, q4k_six(c + KERN__PK_K_SCALES, (int)(b % 8), 1)),
                             _mm256_set1_ps(-0.0f));
    }
    default: return _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
    }
}

/* group_tile for Q6_K: per 32-column block, two halves with their own scales
 * (kern_pack.c), no minimum term. */
static inline __attribute__((always_inline)) void
group_tile_q6(const int T, const char *w, int64_t nb, const char *xa, size_t xb, int64_t n,
              float *y, int64_t y_stride)
{
    const __m256i nib = _mm256_set1_epi16(0x000f), m16 = _mm256_set1_epi16(0x0010),
                  m32 = _mm256_set1_epi16(0x0020);
    kern__i16x x[4];
    __m256 acc[4];
    for (int t = 0; t < T; t++) {
        x[t] = kern__i16x_at(xa + (size_t)t * xb, n);
        acc[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const char *c = w + (size_t)(b / 8) * 8 * sizeof(blk_q6_k);
        int j = (int)(b % 8);
        const char *qp = c + KERN__PK_Q6K_QUADS + 128 * j;
        __m256i ha = _mm256_loadu_si256((const __m256i *)(c + KERN__PK_Q6K_BITS + 64 * j));
        __m256i hb = _mm256_loadu_si256((const __m256i *)(c + KERN__PK_Q6K_BITS + 64 * j + 32));
        __m256i isum[2][4];
        for (int t = 0; t < T; t++)
            isum[0][t] = isum[1][t] = _mm256_setzero_si256();
        if (T == 4) {
            block_tile4_q6(qp, x[0].qs + 32 * b, x[1].qs + 32 * b, x[2].qs + 32 * b,
                           x[3].qs + 32 * b, ha, hb, isum[0], isum[1]);
        } else {
            for (int k = 0; k < 4; k++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(qp + 32 * k));
                for (int jj = 0; jj < 4; jj++) {
                    int sa = 4 * k + jj - 4, sb = sa - 1;
                    __m256i wj = jj == 3 ? _mm256_srli_epi16(v, 12)
                                         : _mm256_and_si256(_mm256_srli_epi16(v, 4 * jj), nib);
                    wj = _mm256_or_si256(wj, hi_bits(ha, sa, m16));
                    wj = _mm256_or_si256(wj, hi_bits(hb, sb, m32));
                    wj = _mm256_sub_epi16(wj, m32);
                    for (int t = 0; t < T; t++)
                        isum[k / 2][t] = _mm256_add_epi32(
                            isum[k / 2][t],
                            _mm256_madd_epi16(wj, pair(x[t].qs + 32 * b + 8 * k, 2 * jj)));
                }
            }
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)c));
        for (int h = 0; h < 2; h++) {
            __m128i sc =
                _mm_loadl_epi64((const __m128i *)(c + KERN__PK_Q6K_SCALES + 8 * (2 * j + h)));
            __m256 dw = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)));
            for (int t = 0; t < T; t++)
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[h][t]),
                                         _mm256_mul_ps(dw, _mm256_set1_ps(x[t].d[b])), acc[t]);
        }
    }
    for (int t = 0; t < T; t++)
        _mm256_storeu_ps(y + t * y_stride, acc[t]);
}

/* T tokens (1..4) against one 8-row group: y[t * y_stride + i] for lanes i < 8. */
static inline __attribute__((always_inline)) void
group_tile(const int kind, const int T, const char *w, int64_t nb, const char *xa, size_t xb,
           int64_t n, float *y, int64_t y_stride)
{
    if (kind == KIND_Q6_K) {
        group_tile_q6(T, w, nb, xa, xb, n, y, y_stride);
        return;
    }
    const bool q5 = kind == KIND_Q5_0 || kind == KIND_Q5_1 || kind == KIND_Q5_K;
    const __m256i m16 = _mm256_set1_epi16(0x0010);
    kern__i16x x[4];
    __m256 acc[4], macc[4];
    for (int t = 0; t < T; t++) {
        x[t] = kern__i16x_at(xa + (size_t)t * xb, n);
        acc[t] = _mm256_setzero_ps();
        macc[t] = _mm256_setzero_ps();
    }
    const __m256i nib = _mm256_set1_epi16(0x000f);
    for (int64_t b = 0; b < nb; b++) {
        const char *qp = block_quads(kind, w, b);
        __m256i isum[4];
        for (int t = 0; t < T; t++)
            isum[t] = _mm256_setzero_si256();
        __m256i hi = q5 ? block_hi(kind, w, b) : _mm256_setzero_si256(); // unused otherwise
        if (T == 4) {
            block_tile4(kind, qp, x[0].qs + 32 * b, x[1].qs + 32 * b, x[2].qs + 32 * b,
                        x[3].qs + 32 * b, hi, isum);
        } else if (kind == KIND_Q8_0) {
            // 1-3 tokens. Unrolled fully, gcc interleaves all eight quads and spills
            // the sums: two at a time kept them in registers (38 -> 52 MACs/ns for the
            // 4-token tile before block_tile4 took it over).
#pragma GCC unroll 2
            for (int k = 0; k < 8; k++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(qp + 32 * k));
                __m256i w0 = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
                __m256i w1 = _mm256_srai_epi16(v, 8);
                for (int t = 0; t < T; t++) {
                    const int16_t *q = x[t].qs + 32 * b + 4 * k;
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(w0, pair(q, 0)));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(w1, pair(q, 2)));
                }
            }
        } else {
            for (int k = 0; k < 4; k++) {
                // 1-3 tokens: one column pair at a time for all of them (few live
                // registers; the 4-token tile is block_tile4's).
                __m256i v = _mm256_loadu_si256((const __m256i *)(qp + 32 * k));
                for (int j = 0; j < 4; j++) {
                    __m256i wj = j == 3 ? _mm256_srli_epi16(v, 12)
                                        : _mm256_and_si256(_mm256_srli_epi16(v, 4 * j), nib);
                    if (q5) // fifth bits of pair (k, j) are bit 4k + j of each half
                        wj = _mm256_or_si256(wj, hi_bits(hi, 4 * k + j - 4, m16));
                    for (int t = 0; t < T; t++)
                        isum[t] = _mm256_add_epi32(
                            isum[t], _mm256_madd_epi16(wj, pair(x[t].qs + 32 * b + 8 * k, 2 * j)));
                }
            }
        }
        __m256 dw = block_dw(kind, w, b);
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]),
                                     _mm256_mul_ps(dw, _mm256_set1_ps(x[t].d[b])), acc[t]);
    }
    if (kind != KIND_Q8_0) // the minimum term, its own chain (kern_pack.c's macc)
        for (int64_t b = 0; b < nb; b++) {
            __m256 mw = block_mw(kind, w, b);
            for (int t = 0; t < T; t++)
                macc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x[t].s[b]), macc[t]);
        }
    for (int t = 0; t < T; t++)
        _mm256_storeu_ps(y + t * y_stride, _mm256_add_ps(acc[t], macc[t]));
}

/* One token, the Q4 kinds (Q4_0, Q4_1, Q4_K) against one 8-row group: decode's whole
 * cost, where no other token shares the unpacking. Column pair j of a quad sits at bits
 * 4j..4j+3 of each 16-bit half; pairs 1 and 2 are masked in place (0x00f0, 0x0f00)
 * instead of shifted down, so their products are 16 and 256 times too large and go to
 * sums of their own, shifted back exactly (every term is a multiple) before the block's
 * float step; pair 3 is shifted down, as its top bit would read as a sign. Four vector
 * ops per quad instead of seven, the same integer sums, the two float chains (acc, macc)
 * in group_tile's order, and no arrays for gcc to keep on the stack. Range: a 256x term
 * is at most 256 * 15 * 32767, two per vpmaddwd, four per block: 1.0e9 < 2^31. */
static inline __attribute__((always_inline)) void
group_q4_t1(const int kind, const char *w, int64_t nb, const char *xa, int64_t n, float *y)
{
    const __m256i m0 = _mm256_set1_epi16(0x000f), m1 = _mm256_set1_epi16(0x00f0),
                  m2 = _mm256_set1_epi16(0x0f00);
    kern__i16x x = kern__i16x_at(xa, n);
    __m256 acc = _mm256_setzero_ps(), macc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const char *qp = block_quads(kind, w, b);
        const int16_t *xq = x.qs + 32 * b;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        for (int k = 0; k < 4; k++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(qp + 32 * k));
            const int16_t *q = xq + 8 * k;
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_and_si256(v, m0), pair(q, 0)));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_and_si256(v, m1), pair(q, 2)));
            s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(_mm256_and_si256(v, m2), pair(q, 4)));
            s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(_mm256_srli_epi16(v, 12), pair(q, 6)));
        }
        __m256i isum =
            _mm256_add_epi32(_mm256_add_epi32(s0, s3),
                             _mm256_add_epi32(_mm256_srai_epi32(s1, 4), _mm256_srai_epi32(s2, 8)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                              _mm256_mul_ps(block_dw(kind, w, b), _mm256_set1_ps(x.d[b])), acc);
        macc = _mm256_fmadd_ps(block_mw(kind, w, b), _mm256_set1_ps(x.s[b]), macc);
    }
    _mm256_storeu_ps(y, _mm256_add_ps(acc, macc));
}

static inline __attribute__((always_inline)) void
gemm_kind(const int kind, const char *w, size_t group_bytes, int64_t n_groups, const char *xa,
          int64_t n, int n_tok, float *y, int64_t y_stride)
{
    size_t xb = KERN__I16X_BYTES(n);
    int64_t nb = n / 32;
    for (int64_t g = 0; g < n_groups; g++) {
        const char *wg = w + (size_t)g * group_bytes;
        int t = 0;
        for (; t + 4 <= n_tok; t += 4)
            group_tile(kind, 4, wg, nb, xa + (size_t)t * xb, xb, n, y + t * y_stride + 8 * g,
                       y_stride);
        const char *xt = xa + (size_t)t * xb;
        float *yt = y + t * y_stride + 8 * g;
        switch (n_tok - t) {
        case 3: group_tile(kind, 3, wg, nb, xt, xb, n, yt, y_stride); break;
        case 2: group_tile(kind, 2, wg, nb, xt, xb, n, yt, y_stride); break;
        case 1:
            if (kind == KIND_Q4_0 || kind == KIND_Q4_1 || kind == KIND_Q4_K)
                group_q4_t1(kind, wg, nb, xt, n, yt);
            else
                group_tile(kind, 1, wg, nb, xt, xb, n, yt, y_stride);
            break;
        default: break;
        }
    }
}

void
kern__p8_gemm_avx2(llm_dtype t, const char *w, size_t group_bytes, int64_t n_groups, const char *xa,
                   int64_t n, int n_tok, float *y, int64_t y_stride)
{
    switch (t) {
    case LLM_DTYPE_Q4_0:
        gemm_kind(KIND_Q4_0, w, group_bytes, n_groups, xa, n, n_tok, y, y_stride);
        break;
    case LLM_DTYPE_Q4_1:
        gemm_kind(KIND_Q4_1, w, group_bytes, n_groups, xa, n, n_tok, y, y_stride);
        break;
    case LLM_DTYPE_Q5_0:
        gemm_kind(KIND_Q5_0, w, group_bytes, n_groups, xa, n, n_tok, y, y_stride);
        break;
    case LLM_DTYPE_Q5_1:
        gemm_kind(KIND_Q5_1, w, group_bytes, n_groups, xa, n, n_tok, y, y_stride);
        break;
    case LLM_DTYPE_Q4_K:
        gemm_kind(KIND_Q4_K, w, group_bytes, n_groups, xa, n, n_tok, y, y_stride);
        break;
    case LLM_DTYPE_Q5_K:
        gemm_kind(KIND_Q5_K, w, group_bytes, n_groups, xa, n, n_tok, y, y_stride);
        break;
    case LLM_DTYPE_Q6_K:
        gemm_kind(KIND_Q6_K, w, group_bytes, n_groups, xa, n, n_tok, y, y_stride);
        break;
    default:
        assert(t == LLM_DTYPE_Q8_0);
        gemm_kind(KIND_Q8_0, w, group_bytes, n_groups, xa, n, n_tok, y, y_stride);
        break;
    }
}
