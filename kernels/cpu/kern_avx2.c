/*
 * kern_avx2.c - AVX2 + FMA + F16C variants, compiled with -mavx2 -mfma -mf16c and called
 * only after kern__cpu_has_avx2() said yes, so a CPU without them never runs one (no
 * SIGILL; kern_simd_name() then says "scalar").
 */
#include "kern_internal.h"

#include "kern_avx2_util.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* CPUID directly rather than __builtin_cpu_supports: clang 14 does not know "f16c".
 * AVX also needs the OS to save the YMM registers (XCR0 bits 1 and 2). */
bool
kern__cpu_has_avx2(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28),
         f16c = c & (1u << 29);
    if (!(fma && osxsave && avx && f16c))
        return false;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 6u) != 6u || __get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 5)) != 0; // AVX2
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

/*
 * The matmul tile. Every (row, token) element has one 8-lane accumulator; chunk k of 8
 * floats (k = 0, 1, ...) is added to it by one FMA, in order; a last partial chunk is
 * loaded with zeros in the missing lanes and added the same way; then hsum_ps reduces the
 * lanes. That order depends only on n, so the float a row and a token produce does not
 * depend on the tile shape, the token's place in the batch or the rows around it. The
 * register blocking is across elements only (4 rows x 3 tokens: each weight vector
 * loaded is used three times and each activation vector four times, 12 FMAs per 7
 * loads, 16 ymm registers), never within one.
 */
static inline __attribute__((always_inline)) void
gemm_tile(const int R, const int T, const float *w, int64_t ws, const float *x, int64_t xs,
          int64_t n, float *y, int64_t ys)
{
    __m256 acc[4][3];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 xv[3];
        for (int t = 0; t < T; t++)
            xv[t] = _mm256_loadu_ps(x + t * xs + k);
        for (int r = 0; r < R; r++) {
            __m256 wv = _mm256_loadu_ps(w + r * ws + k);
            for (int t = 0; t < T; t++)
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    if (k < n) {
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - k)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 xv[3];
        for (int t = 0; t < T; t++)
            xv[t] = _mm256_maskload_ps(x + t * xs + k, mask);
        for (int r = 0; r < R; r++) {
            __m256 wv = _mm256_maskload_ps(w + r * ws + k, mask);
            for (int t = 0; t < T; t++)
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[t * ys + r] = hsum_ps(acc[r][t]);
}

void
kern__gemm_f32_avx2(const float *w, int64_t w_stride, int n_rows, const float *x, int64_t x_stride,
                    int n_tok, int64_t n, float *y, int64_t y_stride)
{
    // Each shape is its own fully unrolled copy; the order per element is the same.
    switch (n_rows * 4 + n_tok) {
    case 4 * 4 + 3: gemm_tile(4, 3, w, w_stride, x, x_stride, n, y, y_stride); break;
    case 4 * 4 + 2: gemm_tile(4, 2, w, w_stride, x, x_stride, n, y, y_stride); break;
    case 4 * 4 + 1: gemm_tile(4, 1, w, w_stride, x, x_stride, n, y, y_stride); break;
    case 1 * 4 + 3: gemm_tile(1, 3, w, w_stride, x, x_stride, n, y, y_stride); break;
    case 1 * 4 + 2: gemm_tile(1, 2, w, w_stride, x, x_stride, n, y, y_stride); break;
    case 1 * 4 + 1: gemm_tile(1, 1, w, w_stride, x, x_stride, n, y, y_stride); break;
    default:
        // other shapes as single rows: the same per-element order
        for (int r = 0; r < n_rows; r++)
            kern__gemm_f32_avx2(w + r * w_stride, w_stride, 1, x, x_stride, n_tok, n, y + r,
                                y_stride);
        break;
    }
}

/* A cache row's elements as floats: float32 (f16 = 0) or IEEE half (f16 = 1) storage,
 * widened by vcvtph2ps as they are loaded; the attention kernels below serve both. */
static inline __attribute__((always_inline)) __m256
kv_load8(const int f16, const void *base, int64_t i)
{
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const kern_half *)base + i)));
    return _mm256_loadu_ps((const float *)base + i);
}

static inline __attribute__((always_inline)) float
kv_get(const int f16, const void *base, int64_t i)
{
    return f16 ? _cvtsh_ss(((const kern_half *)base)[i]) : ((const float *)base)[i];
}

/* out[0..hd) += sum_p att[p] * v[p * v_stride + 0..hd): the attention-weighted sum of
 * values, with out held in registers 64 floats at a time across all positions. */
static inline __attribute__((always_inline)) void
attn_values_with(const int f16, float *out, const float *att, const void *v, int64_t v_stride,
                 int n_pos, int hd)
{
    int c = 0;
    for (; c + 64 <= hd; c += 64) {
        __m256 o[8];
        for (int i = 0; i < 8; i++)
            o[i] = _mm256_loadu_ps(out + c + 8 * i);
        for (int p = 0; p < n_pos; p++) {
            __m256 a = _mm256_broadcast_ss(att + p);
            for (int i = 0; i < 8; i++)
                o[i] =
                    _mm256_fmadd_ps(a, kv_load8(f16, v, (int64_t)p * v_stride + c + 8 * i), o[i]);
        }
        for (int i = 0; i < 8; i++)
            _mm256_storeu_ps(out + c + 8 * i, o[i]);
    }
    for (; c < hd; c++) {
        float s = out[c];
        for (int p = 0; p < n_pos; p++)
            s += att[p] * kv_get(f16, v, (int64_t)p * v_stride + c);
        out[c] = s;
    }
}

/* kern_attn_scores for nq queries: per query, two accumulators (even and odd d) for
 * each half of the block's 16 keys; each step of d loads the 16 keys' elements once
 * for all the queries and broadcasts each query's element: no horizontal sums. The
 * sums live in named registers (a struct per query, not an array indexed in loops:
 * gcc kept such an array in memory too and stored it every step). */
typedef struct {
    __m256 e0, e1, o0, o1; // even d: keys 0-7, 8-15; odd d: keys 0-7, 8-15
} score_acc;

static inline __attribute__((always_inline)) score_acc
score_step(score_acc a, const float *q, __m256 k0, __m256 k1, int odd)
{
    __m256 b = _mm256_broadcast_ss(q);
    if (odd) {
        a.o0 = _mm256_fmadd_ps(b, k0, a.o0);
        a.o1 = _mm256_fmadd_ps(b, k1, a.o1);
    } else {
        a.e0 = _mm256_fmadd_ps(b, k0, a.e0);
        a.e1 = _mm256_fmadd_ps(b, k1, a.e1);
    }
    return a;
}

static inline __attribute__((always_inline)) void
score_store(score_acc a, float *att, float scale)
{
    const __m256 vs = _mm256_set1_ps(scale);
    _mm256_storeu_ps(att, _mm256_mul_ps(vs, _mm256_add_ps(a.e0, a.o0)));
    _mm256_storeu_ps(att + 8, _mm256_mul_ps(vs, _mm256_add_ps(a.e1, a.o1)));
}

static inline __attribute__((always_inline)) void
scores_block(const int nq, const int f16, float *const *att, const float *const *q, const void *k,
             int hd, float scale)
{
    const __m256 z = _mm256_setzero_ps();
    score_acc a0 = {z, z, z, z}, a1 = a0, a2 = a0;
    for (int d = 0; d < hd; d += 2)
        for (int odd = 0; odd < 2; odd++) {
            int64_t e = (int64_t)(d + odd) * KERN_KV_BLOCK;
            __m256 k0 = kv_load8(f16, k, e), k1 = kv_load8(f16, k, e + 8);
            a0 = score_step(a0, q[0] + d + odd, k0, k1, odd);
            if (nq > 1)
                a1 = score_step(a1, q[1] + d + odd, k0, k1, odd);
            if (nq > 2)
                a2 = score_step(a2, q[2] + d + odd, k0, k1, odd);
        }
    score_store(a0, att[0], scale);
    if (nq > 1)
        score_store(a1, att[1], scale);
    if (nq > 2)
        score_store(a2, att[2], scale);
}

void
kern__attn_scores_avx2(float *const *att, const float *const *q, int nq, const void *k, bool f16,
                       int hd, float scale)
{
    switch (nq * 2 + (f16 ? 1 : 0)) {
    case 2: scores_block(1, 0, att, q, k, hd, scale); break;
    case 3: scores_block(1, 1, att, q, k, hd, scale); break;
    case 4: scores_block(2, 0, att, q, k, hd, scale); break;
    case 5: scores_block(2, 1, att, q, k, hd, scale); break;
    case 6: scores_block(3, 0, att, q, k, hd, scale); break;
    default: scores_block(3, 1, att, q, k, hd, scale); break;
    }
}

void
kern__attn_values_avx2(float *out, const float *att, const float *v, int64_t v_stride, int n_pos,
                       int hd)
{
    attn_values_with(0, out, att, v, v_stride, n_pos, hd);
}

void
kern__attn_values_f16_avx2(float *out, const float *att, const kern_half *v, int64_t v_stride,
                           int n_pos, int hd)
{
    attn_values_with(1, out, att, v, v_stride, n_pos, hd);
}

/* The weights of each type as this SIMD level defines them (see dec32_fn), a decoder
 * that stores them and a one-token kernel that multiplies them in registers. */
static inline void
q4_dec32(const uint8_t *qs, __m256 d, __m256 m, __m256 w[4])
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));                    // elements 0..15
    __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0f)); // 16..31
    w[0] = _mm256_fmadd_ps(d, u8x8_to_ps(lo), m);
    w[1] = _mm256_fmadd_ps(d, u8x8_to_ps(_mm_srli_si128(lo, 8)), m);
    w[2] = _mm256_fmadd_ps(d, u8x8_to_ps(hi), m);
    w[3] = _mm256_fmadd_ps(d, u8x8_to_ps(_mm_srli_si128(hi, 8)), m);
}

static inline void
q4_0_dec32(const void *row, int64_t c, __m256 w[4])
{
    const blk_q4_0 *b = (const blk_q4_0 *)row + c;
    float d = _cvtsh_ss(b->d);
    q4_dec32(b->qs, _mm256_set1_ps(d), _mm256_set1_ps(-8.0f * d), w);
}

static inline void
q4_1_dec32(const void *row, int64_t c, __m256 w[4])
{
    const blk_q4_1 *b = (const blk_q4_1 *)row + c;
    q4_dec32(b->qs, _mm256_set1_ps(_cvtsh_ss(b->d)), _mm256_set1_ps(_cvtsh_ss(b->m)), w);
}

static inline void
q8_0_dec32(const void *row, int64_t c, __m256 w[4])
{
    const blk_q8_0 *b = (const blk_q8_0 *)row + c;
    __m256 d = _mm256_set1_ps(_cvtsh_ss(b->d));
    __m128i q0 = _mm_loadu_si128((const __m128i *)b->qs);
    __m128i q1 = _mm_loadu_si128((const __m128i *)(b->qs + 16));
    w[0] = _mm256_mul_ps(d, i8x8_to_ps(q0));
    w[1] = _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(q0, 8)));
    w[2] = _mm256_mul_ps(d, i8x8_to_ps(q1));
    w[3] = _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(q1, 8)));
}

static inline void
f16_dec32(const void *row, int64_t c, __m256 w[4])
{
    const kern_half *h = (const kern_half *)row + 32 * c;
    for (int k = 0; k < 4; k++)
        w[k] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + 8 * k)));
}

void
kern__q4_0_to_float_avx2(const void *src, float *dst, int64_t n)
{
    decode_rows_with(q4_0_dec32, src, dst, n);
}

void
kern__q4_1_to_float_avx2(const void *src, float *dst, int64_t n)
{
    decode_rows_with(q4_1_dec32, src, dst, n);
}

void
kern__q8_0_to_float_avx2(const void *src, float *dst, int64_t n)
{
    decode_rows_with(q8_0_dec32, src, dst, n);
}

void
kern__rows1_q4_0_avx2(const void *w, size_t row_bytes, int n_rows, const float *x, int64_t n,
                      float *y)
{
    rows1_dispatch(q4_0_dec32, w, row_bytes, n_rows, x, n, y);
}

void
kern__rows1_q4_1_avx2(const void *w, size_t row_bytes, int n_rows, const float *x, int64_t n,
                      float *y)
{
    rows1_dispatch(q4_1_dec32, w, row_bytes, n_rows, x, n, y);
}

void
kern__rows1_q8_0_avx2(const void *w, size_t row_bytes, int n_rows, const float *x, int64_t n,
                      float *y)
{
    rows1_dispatch(q8_0_dec32, w, row_bytes, n_rows, x, n, y);
}

void
kern__rows1_f16_avx2(const void *w, size_t row_bytes, int n_rows, const float *x, int64_t n,
                     float *y)
{
    rows1_dispatch(f16_dec32, w, row_bytes, n_rows, x, n, y);
}

void
kern__bf16_to_float_avx2(const void *src, float *dst, int64_t n)
{
    const kern_bf16 *s = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
    for (; i < n; i++)
        dst[i] = kern_bf16_to_float(s[i]);
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

/* exp of eight floats: 2^n * e^r with n = round(x / ln 2) and r = x - n ln 2 (ln 2 in
 * two parts, so r is exact to a float) in [-ln2 / 2, ln2 / 2], e^r = 1 + r + r^2 P(r)
 * with Cephes' degree-5 P: within 2 ulp of expf. x is clamped to [-87, 88] so 2^n
 * stays a normal float; below -87 (e^-87 = 1.6e-38) the result is 0, as for -inf. */
static inline __m256
exp_ps(__m256 x0)
{
    __m256 x = _mm256_min_ps(_mm256_max_ps(x0, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 keep = _mm256_cmp_ps(x0, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

void
kern__exp_avx2(const float *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, exp_ps(_mm256_loadu_ps(x + i)));
    if (i < n) { // the tail through the same vector code: same value at any position
        float buf[8] = {0};
        memcpy(buf, x + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(buf, exp_ps(_mm256_loadu_ps(buf)));
        memcpy(y + i, buf, sizeof(float) * (size_t)(n - i));
    }
}

void
kern__exp_scaled_avx2(const float *x, float shift, float scale, float *y, int64_t n)
{
    const __m256 s = _mm256_set1_ps(shift), c = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, exp_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), s), c)));
    if (i < n) {
        float buf[8] = {0};
        for (int64_t j = i; j < n; j++)
            buf[j - i] = (x[j] - shift) * scale;
        _mm256_storeu_ps(buf, exp_ps(_mm256_loadu_ps(buf)));
        memcpy(y + i, buf, sizeof(float) * (size_t)(n - i));
    }
}

int64_t
kern__argmax_avx2(const float *x, int64_t n)
{
    // The maximum of eight lanes, NaNs noted; then the first index holding it. With a
    // NaN anywhere the plain loop decides, as it defines the answer for them.
    __m256 m = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        m = _mm256_max_ps(m, v);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float lanes[8], best = -INFINITY;
    _mm256_storeu_ps(lanes, m);
    bool has_nan = _mm256_movemask_ps(nan) != 0;
    for (int k = 0; k < 8; k++)
        best = lanes[k] > best ? lanes[k] : best;
    for (; i < n; i++) {
        has_nan = has_nan || x[i] != x[i];
        best = x[i] > best ? x[i] : best;
    }
    if (has_nan)
        return kern__argmax_scalar(x, n);
    int64_t at = 0;
    while (!(x[at] == best)) // present: best is one of the values
        at++;
    return at;
}

int64_t
kern__select_ge_avx2(const float *x, int64_t n, float thr, int32_t *idx)
{
    const __m256 t = _mm256_set1_ps(thr);
    int64_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        unsigned bits =
            (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), t, _CMP_GE_OQ));
        for (; bits; bits &= bits - 1)
            idx[m++] = (int32_t)(i + __builtin_ctz(bits));
    }
    for (; i < n; i++)
        if (x[i] >= thr)
            idx[m++] = (int32_t)i;
    return m;
}

uint64_t
kern__read_sum_avx2(const uint64_t *p, int64_t n_words)
{
    // 128 bytes (two cache lines) an iteration into four sums: loads, and little else.
    __m256i s[4];
    for (int k = 0; k < 4; k++)
        s[k] = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 16 <= n_words; i += 16)
        for (int k = 0; k < 4; k++)
            s[k] = _mm256_add_epi64(s[k], _mm256_loadu_si256((const __m256i *)(p + i + 4 * k)));
    __m256i t = _mm256_add_epi64(_mm256_add_epi64(s[0], s[1]), _mm256_add_epi64(s[2], s[3]));
    uint64_t lanes[4], sum = 0;
    _mm256_storeu_si256((__m256i *)lanes, t);
    for (int k = 0; k < 4; k++)
        sum += lanes[k];
    for (; i < n_words; i++)
        sum += p[i];
    return sum;
}

uint64_t
kern__weight_sum_avx2(const float *x, int64_t n, float scale)
{
    // Truncated to int32, lanes out of [1, 2^31) zeroed, widened to four 64-bit sums.
    const __m256 s = _mm256_set1_ps(scale), one = _mm256_set1_ps(1.0f),
                 lim = _mm256_set1_ps(0x1p31f);
    __m256i acc = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), s);
        __m256 ok =
            _mm256_and_ps(_mm256_cmp_ps(v, one, _CMP_GE_OQ), _mm256_cmp_ps(v, lim, _CMP_LT_OQ));
        __m256i q = _mm256_and_si256(_mm256_cvttps_epi32(v), _mm256_castps_si256(ok));
        acc = _mm256_add_epi64(acc, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(q)));
        acc = _mm256_add_epi64(acc, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(q, 1)));
    }
    uint64_t lane[4];
    _mm256_storeu_si256((__m256i *)lane, acc);
    uint64_t sum = lane[0] + lane[1] + lane[2] + lane[3];
    for (; i < n; i++) {
        float v = x[i] * scale;
        if (v >= 1.0f && v < 0x1p31f)
            sum += (uint64_t)v;
    }
    return sum;
}

void
kern__softmax_avx2(float *x, int64_t n)
{
    float max = x[0];
    for (int64_t i = 1; i < n; i++)
        max = x[i] > max ? x[i] : max;
    __m256 vmax = _mm256_set1_ps(max), sum = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float tail = 0.0f;
    if (i < n) {
        float buf[8];
        for (int k = 0; k < 8; k++)
            buf[k] = i + k < n ? x[i + k] - max : -INFINITY; // exp gives 0
        _mm256_storeu_ps(buf, exp_ps(_mm256_loadu_ps(buf)));
        for (int64_t k = 0; i + k < n; k++) {
            x[i + k] = buf[k];
            tail += buf[k];
        }
    }
    __m256 inv = _mm256_set1_ps(1.0f / (hsum_ps(sum) + tail));
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++)
        x[i] *= _mm256_cvtss_f32(inv);
}

void
kern__swiglu_avx2(float *gate, const float *up, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = exp_ps(_mm256_xor_ps(g, sign)); // exp(-g)
        __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    if (i < n) {
        float g[8] = {0}, u[8] = {0};
        memcpy(g, gate + i, sizeof(float) * (size_t)(n - i));
        memcpy(u, up + i, sizeof(float) * (size_t)(n - i));
        kern__swiglu_avx2(g, u, 8);
        memcpy(gate + i, g, sizeof(float) * (size_t)(n - i));
    }
}

void
kern__f32_to_f16_avx2(const float *x, kern_half *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}
