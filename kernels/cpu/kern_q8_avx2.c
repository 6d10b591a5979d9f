/*
 * kern_q8_avx2.c - AVX2 kernels of the 8-bit activation path (kern_q8.c): the activation
 * quantizer and the integer-dot GEMM for Q4_0, Q4_1 and Q8_0 weights. Built with
 * -mavx2 -mfma -mf16c and used only after kern__cpu_has_avx2() said yes.
 *
 * The quantizer writes the same bytes as kern__quantize_act_scalar (the same float
 * operations; rounding half to even). The order per (row, token) element: for each
 * block in order, the exact integer dot in 8 int32 lanes (maddubs + madd) is converted
 * to floats and added by one FMA with d_w * d_x into one 8-lane accumulator, then
 * hsum_ps; for Q4_0 / Q4_1 the sum over blocks of m_w * s_x (msum, a fixed 8-lane order)
 * is added. One token decodes each block in registers; more tokens unpack four rows once
 * (quants as bytes, d_w and m_w as floats) and run a 4-row x 4-token tile over them. The
 * integers are the same either way, so every path gives the same float.
 */
#include "kern_internal.h"

#include "kern_avx2_util.h"

#include <assert.h>
#include <immintrin.h>

void
kern__quantize_act_avx2(const float *x, int64_t n, void *out)
{
    assert(n % 32 == 0);
    int8_t *qs = out;
    float *d_out = (float *)(qs + n), *s_out = d_out + n / 32;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / 32; b++) {
        __m256 v[4], a[4];
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 32 * b + 8 * k);
            a[k] = _mm256_andnot_ps(sign, v[k]);
        }
        __m256 m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++)
            q[k] = _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(v[k], vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        // int32 -> int8 keeping element order: the packs interleave 128-bit lanes, the
        // permutation puts the 4-byte groups back.
        __m256i p =
            _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(qs + 32 * b), p);
        d_out[b] = d;
        s_out[b] = d * (float)_mm_cvtsi128_si32(s4);
    }
}

enum { KIND_Q4_0, KIND_Q4_1, KIND_Q8_0 };

/* Block b of a row: its 32 quants in element order (Q4: nibbles as bytes 0..15), d_w and
 * m_w (Q4_0 is affine with m_w = -8 d_w; Q8_0 has none). */
static inline __attribute__((always_inline)) __m256i
load_block(const int kind, const char *row, int64_t b, float *dw, float *mw)
{
    if (kind == KIND_Q8_0) {
        const blk_q8_0 *q = (const blk_q8_0 *)row + b;
        *dw = _cvtsh_ss(q->d);
        *mw = 0.0f;
        return _mm256_loadu_si256((const __m256i *)q->qs);
    }
    const uint8_t *qs;
    if (kind == KIND_Q4_0) {
        const blk_q4_0 *q = (const blk_q4_0 *)row + b;
        *dw = _cvtsh_ss(q->d);
        *mw = -8.0f * *dw;
        qs = q->qs;
    } else {
        const blk_q4_1 *q = (const blk_q4_1 *)row + b;
        *dw = _cvtsh_ss(q->d);
        *mw = _cvtsh_ss(q->m);
        qs = q->qs;
    }
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}

/* The 8 int32 lane sums of w * x over a block, as floats: maddubs multiplies unsigned by
 * signed bytes, so Q8_0 passes |w| and moves w's sign onto x. */
static inline __attribute__((always_inline)) __m256
block_dot(const int kind, __m256i wa, __m256i wq, __m256i xq)
{
    __m256i xs = kind == KIND_Q8_0 ? _mm256_sign_epi8(xq, wq) : xq;
    return _mm256_cvtepi32_ps(
        _mm256_madd_epi16(_mm256_maddubs_epi16(wa, xs), _mm256_set1_epi16(1)));
}

/* sum_b m[b] * s[b] over nb blocks: 8 lanes (lane j takes blocks j, j + 8, ...; a masked
 * tail), multiply then add, then hsum_ps. */
static float
msum(const float *m, const float *s, int64_t nb)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(m + b), _mm256_loadu_ps(s + b)));
    if (b < nb) {
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(nb - b)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        acc = _mm256_add_ps(
            acc, _mm256_mul_ps(_mm256_maskload_ps(m + b, mask), _mm256_maskload_ps(s + b, mask)));
    }
    return hsum_ps(acc);
}

/* The unpacked form of R rows: quants as bytes, then d_w[nb], then m_w[nb] per row,
 * KERN__Q8X_BYTES(n) bytes apart (the layout of a quantized token). */
static inline __attribute__((always_inline)) void
unpack_rows(const int kind, int R, const char *w, size_t rb, int64_t n, char *u)
{
    size_t ub = KERN__Q8X_BYTES(n);
    for (int r = 0; r < R; r++) {
        int8_t *qs = (int8_t *)(u + (size_t)r * ub);
        float *dw = (float *)(qs + n), *mw = dw + n / 32;
        for (int64_t b = 0; b < n / 32; b++)
            _mm256_storeu_si256((__m256i *)(qs + 32 * b),
                                load_block(kind, w + (size_t)r * rb, b, &dw[b], &mw[b]));
    }
}

/* One token against R rows (4 or 1) decoded in registers; their m_w go to mw_out. */
static inline __attribute__((always_inline)) void
tile_direct(const int kind, const int R, const char *w, size_t rb, kern__q8x x, int64_t n, float *y,
            float *mw_out)
{
    __m256 acc[4];
    for (int r = 0; r < R; r++)
        acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++) {
        __m256i xq = _mm256_loadu_si256((const __m256i *)(x.qs + 32 * b));
        __m256 xd = _mm256_broadcast_ss(&x.d[b]);
        for (int r = 0; r < R; r++) {
            float dw;
            __m256i wq = load_block(kind, w + (size_t)r * rb, b, &dw, &mw_out[r * (n / 32) + b]);
            __m256i wa = kind == KIND_Q8_0 ? _mm256_sign_epi8(wq, wq) : wq;
            __m256 p = block_dot(kind, wa, wq, xq);
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(dw), xd), p, acc[r]);
        }
    }
    for (int r = 0; r < R; r++) {
        y[r] = hsum_ps(acc[r]);
        if (kind != KIND_Q8_0)
            y[r] += msum(mw_out + r * (n / 32), x.s, n / 32);
    }
}

/* T tokens (at xa, KERN__Q8X_BYTES(n) apart) against R unpacked rows: y[t * ys + r]. */
static inline __attribute__((always_inline)) void
tile_unpacked(const int kind, const int R, const int T, const char *u, const char *xa, int64_t n,
              float *y, int64_t ys)
{
    size_t xb = KERN__Q8X_BYTES(n);
    int64_t nb = n / 32;
    kern__q8x xt[4], wr[4];
    for (int t = 0; t < T; t++)
        xt[t] = kern__q8x_at(xa + (size_t)t * xb, n);
    for (int r = 0; r < R; r++)
        wr[r] = kern__q8x_at(u + (size_t)r * xb, n);
    __m256 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i xq[4];
        for (int t = 0; t < T; t++)
            xq[t] = _mm256_loadu_si256((const __m256i *)(xt[t].qs + 32 * b));
        for (int r = 0; r < R; r++) {
            __m256i wq = _mm256_loadu_si256((const __m256i *)(wr[r].qs + 32 * b));
            __m256i wa = kind == KIND_Q8_0 ? _mm256_sign_epi8(wq, wq) : wq;
            __m256 dwv = _mm256_broadcast_ss(&wr[r].d[b]);
            for (int t = 0; t < T; t++) {
                __m256 p = block_dot(kind, wa, wq, xq[t]);
                __m256 dd = _mm256_mul_ps(dwv, _mm256_broadcast_ss(&xt[t].d[b]));
                acc[r][t] = _mm256_fmadd_ps(dd, p, acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            float v = hsum_ps(acc[r][t]);
            if (kind != KIND_Q8_0)
                v += msum(wr[r].s, xt[t].s, nb); // the unpacked row's m_w sit where s would
            y[t * ys + r] = v;
        }
}

// Tokens per unpacked tile: 4 x 4 measured fastest of 4x1..4x4, 2x3, 2x4 (the sums
// spill, but the loop is bound by the 5 vector operations per block and pair).
#define TILE_TOKENS 4

static inline __attribute__((always_inline)) void
q8_gemm(const int kind, const char *w, size_t rb, int64_t n_rows, const char *xa, int64_t n,
        int n_tok, float *y, int64_t ys, char *work)
{
    size_t xb = KERN__Q8X_BYTES(n);
    for (int64_t r = 0; r < n_rows;) {
        const char *wr = w + (size_t)r * rb;
        bool four = n_rows - r >= 4;
        if (n_tok == 1) {
            float *mw = (float *)work; // 4 rows x nb
            if (four)
                tile_direct(kind, 4, wr, rb, kern__q8x_at(xa, n), n, y + r, mw);
            else
                tile_direct(kind, 1, wr, rb, kern__q8x_at(xa, n), n, y + r, mw);
        } else if (four) {
            unpack_rows(kind, 4, wr, rb, n, work);
            int t = 0;
            for (; t + TILE_TOKENS <= n_tok; t += TILE_TOKENS)
                tile_unpacked(kind, 4, TILE_TOKENS, work, xa + (size_t)t * xb, n, y + t * ys + r,
                              ys);
            for (; t < n_tok; t++)
                tile_unpacked(kind, 4, 1, work, xa + (size_t)t * xb, n, y + t * ys + r, ys);
        } else {
            unpack_rows(kind, 1, wr, rb, n, work);
            for (int t = 0; t < n_tok; t++)
                tile_unpacked(kind, 1, 1, work, xa + (size_t)t * xb, n, y + t * ys + r, ys);
        }
        r += four ? 4 : 1;
    }
}

void
kern__q8_gemm_avx2(llm_dtype t, const char *w, size_t row_bytes, int64_t n_rows, const char *xa,
                   int64_t n, int n_tok, float *y, int64_t y_stride, void *work)
{
    switch (t) {
    case LLM_DTYPE_Q4_0:
        q8_gemm(KIND_Q4_0, w, row_bytes, n_rows, xa, n, n_tok, y, y_stride, work);
        break;
    case LLM_DTYPE_Q4_1:
        q8_gemm(KIND_Q4_1, w, row_bytes, n_rows, xa, n, n_tok, y, y_stride, work);
        break;
    case LLM_DTYPE_Q8_0:
        q8_gemm(KIND_Q8_0, w, row_bytes, n_rows, xa, n, n_tok, y, y_stride, work);
        break;
    default: assert(!"kern__q8_gemm_avx2: unsupported type"); break;
    }
}
