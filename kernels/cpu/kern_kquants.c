/*
 * kern_kquants.c - scalar decoders and reference quantizers for Q5_0, Q5_1 and the
 * K-quants Q4_K, Q5_K, Q6_K, Q8_K (layouts in kern_blocks.h).
 *
 * The decoders are the reference the AVX2 row dots are tested against, and they match
 * gguf.quants.dequantize bit for bit: each element is computed with the same float32
 * operations in the same order ((d * sc) * q - dmin * m), with no fused multiply-add
 * (C11 mode leaves contraction off). The quantizers make test models and back
 * llm-quantize; they favour being plainly correct over speed. What this file does not do:
 * SIMD, and Q8_K's role as ggml's activation format for integer dots (we dot floats).
 */
#include "kern_kquants.h"

#include "kern_internal.h"

#include <math.h>
#include <string.h>

// --- shared helpers -----------------------------------------------------------------

static int
clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Round to nearest, ties to even (the FPU's default mode). */
static int
nearest(float f)
{
    return (int)lrintf(f);
}

void
kern__k_scales_unpack(const uint8_t s[K_SCALE_SIZE], uint8_t sc[8], uint8_t m[8])
{
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
        m[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

static void
k_scales_pack(uint8_t s[K_SCALE_SIZE], const uint8_t sc[8], const uint8_t m[8])
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4));
    }
}

/* Bit 4 of each of a 32-element block's quants, from its little-endian qh word. */
static uint32_t
load_qh(const uint8_t qh[4])
{
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

// --- decoders -----------------------------------------------------------------------

void
kern__q5_0_to_float(const void *src, float *dst, int64_t n)
{
    const blk_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        float d = kern_half_to_float(b[i].d);
        uint32_t qh = load_qh(b[i].qh);
        float *y = dst + i * QK5_0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            int lo = (b[i].qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            int hi = (b[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = d * (float)(lo - 16);
            y[j + QK5_0 / 2] = d * (float)(hi - 16);
        }
    }
}

void
kern__q5_1_to_float(const void *src, float *dst, int64_t n)
{
    const blk_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        float d = kern_half_to_float(b[i].d), m = kern_half_to_float(b[i].m);
        uint32_t qh = load_qh(b[i].qh);
        float *y = dst + i * QK5_1;
        for (int j = 0; j < QK5_1 / 2; j++) {
            int lo = (b[i].qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            int hi = (b[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = d * (float)lo + m;
            y[j + QK5_1 / 2] = d * (float)hi + m;
        }
    }
}

void
kern__q4_k_to_float(const void *src, float *dst, int64_t n)
{
    const blk_q4_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = kern_half_to_float(b[i].d), dmin = kern_half_to_float(b[i].dmin);
        uint8_t sc[8], m[8];
        kern__k_scales_unpack(b[i].scales, sc, m);
        float *y = dst + i * QK_K;
        for (int j = 0; j < QK_K / 64; j++) {
            const uint8_t *q = b[i].qs + 32 * j;
            float d0 = d * (float)sc[2 * j], m0 = dmin * (float)m[2 * j];
            float d1 = d * (float)sc[2 * j + 1], m1 = dmin * (float)m[2 * j + 1];
            for (int l = 0; l < 32; l++) {
                y[64 * j + l] = d0 * (float)(q[l] & 0x0f) - m0;
                y[64 * j + 32 + l] = d1 * (float)(q[l] >> 4) - m1;
            }
        }
    }
}

void
kern__q5_k_to_float(const void *src, float *dst, int64_t n)
{
    const blk_q5_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = kern_half_to_float(b[i].d), dmin = kern_half_to_float(b[i].dmin);
        uint8_t sc[8], m[8];
        kern__k_scales_unpack(b[i].scales, sc, m);
        float *y = dst + i * QK_K;
        for (int j = 0; j < QK_K / 64; j++) {
            const uint8_t *q = b[i].qs + 32 * j;
            float d0 = d * (float)sc[2 * j], m0 = dmin * (float)m[2 * j];
            float d1 = d * (float)sc[2 * j + 1], m1 = dmin * (float)m[2 * j + 1];
            for (int l = 0; l < 32; l++) {
                int lo = (q[l] & 0x0f) | ((b[i].qh[l] >> (2 * j)) & 1) << 4;
                int hi = (q[l] >> 4) | ((b[i].qh[l] >> (2 * j + 1)) & 1) << 4;
                y[64 * j + l] = d0 * (float)lo - m0;
                y[64 * j + 32 + l] = d1 * (float)hi - m1;
            }
        }
    }
}

void
kern__q6_k_to_float(const void *src, float *dst, int64_t n)
{
    const blk_q6_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = kern_half_to_float(b[i].d);
        for (int h = 0; h < QK_K / 128; h++) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            float *y = dst + i * QK_K + 128 * h;
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q0 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q1 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q2 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q3 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = (d * (float)sc[is]) * (float)q0;
                y[l + 32] = (d * (float)sc[is + 2]) * (float)q1;
                y[l + 64] = (d * (float)sc[is + 4]) * (float)q2;
                y[l + 96] = (d * (float)sc[is + 6]) * (float)q3;
            }
        }
    }
}

void
kern__q8_k_to_float(const void *src, float *dst, int64_t n)
{
    const blk_q8_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++)
        for (int j = 0; j < QK_K; j++)
            dst[i * QK_K + j] = b[i].d * (float)b[i].qs[j];
}

// --- reference quantizers -----------------------------------------------------------

/* Packs 32 five-bit quants: low nibbles as Q4_0, bit 4 of element j into bit j of qh. */
static void
pack_q5(const uint8_t q[32], uint8_t qs[16], uint8_t qh[4])
{
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] & 0x0f) << 4);
        h |= (uint32_t)(q[j] >> 4) << j | (uint32_t)(q[j + 16] >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; k++)
        qh[k] = (uint8_t)(h >> (8 * k));
}

void
kern__q5_0_from_float(const float *src, void *dst, int64_t n)
{
    blk_q5_0 *b = dst;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        const float *x = src + i * QK5_0;
        // As Q4_0: the signed extreme maps to -16, the other side clips at +15.
        float d = kern__signed_extreme(x, QK5_0) / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t q[QK5_0];
        for (int j = 0; j < QK5_0; j++)
            q[j] = (uint8_t)fminf(31.0f, x[j] * id + 16.5f);
        b[i].d = kern_float_to_half(d);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

void
kern__q5_1_from_float(const float *src, void *dst, int64_t n)
{
    blk_q5_1 *b = dst;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        uint8_t q[QK5_1];
        float d, min;
        kern__quantize_affine(src + i * QK5_1, QK5_1, 31, q, &d, &min);
        b[i].d = kern_float_to_half(d);
        b[i].m = kern_float_to_half(min);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

/*
 * Fits x[i] ~ scale * L[i] - neg_min with L[i] in [0, nmax] for one sub-block, minimizing
 * the error weighted by w. Plain min/max rounding wastes levels on outliers, so this
 * tries nstep + 1 inverse scales around nmax / (max - min) (offset by rmin + k * rdelta
 * levels), and for each rounding solves the 2x2 weighted least-squares problem for scale
 * and offset exactly, keeping the best. The offset is held <= 0 (a minimum >= 0 would need
 * a negative dmin). Returns scale (>= 0); neg_min gets the minimum's magnitude.
 */
static float
fit_scale_min(const float *x, const float *w, int n, int nmax, float rmin, float rdelta, int nstep,
              uint8_t *L, float *neg_min)
{
    float min = x[0], max = x[0], sum_w = 0.0f, sum_x = 0.0f;
    for (int i = 0; i < n; i++) {
        min = fminf(min, x[i]);
        max = fmaxf(max, x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    min = fminf(min, 0.0f);
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min), scale = 1.0f / iscale, best = 0.0f;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest(iscale * (x[i] - min)), 0, nmax);
        float e = scale * L[i] + min - x[i];
        best += w[i] * e * e;
    }
    uint8_t cand[QK_K];
    for (int k = 0; k <= nstep; k++) {
        iscale = (rmin + rdelta * (float)k + (float)nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest(iscale * (x[i] - min)), 0, nmax);
            cand[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)(l * l);
            sum_xl += w[i] * (float)l * x[i];
        }
        float det = sum_w * sum_l2 - sum_l * sum_l;
        if (det <= 0.0f)
            continue;
        float s = (sum_w * sum_xl - sum_x * sum_l) / det;
        float m = (sum_l2 * sum_x - sum_l * sum_xl) / det;
        if (m > 0.0f) {
            m = 0.0f;
            s = sum_xl / sum_l2;
        }
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            float e = s * cand[i] + m - x[i];
            err += w[i] * e * e;
        }
        if (err < best) {
            memcpy(L, cand, (size_t)n);
            best = err;
            scale = s;
            min = m;
        }
    }
    *neg_min = -min;
    return scale;
}

/*
 * The Q4_K / Q5_K super-block: fit each sub-block of 32 (weights favour large |x|, as
 * ggml's av_x + |x|), round the eight scales and minimums to 6 bits against the largest
 * of each, then requantize every element against the scales as they will be decoded, so
 * the rounding of d, dmin and the 6-bit values is not compounded by stale quants.
 * q receives 256 quants in [0, nmax].
 */
static void
k_quantize_block(const float *x, int nmax, float rmin, int nstep, kern_half *d_out,
                 kern_half *dmin_out, uint8_t scales[K_SCALE_SIZE], uint8_t q[QK_K])
{
    float sc_f[8], m_f[8], w[32], max_sc = 0.0f, max_m = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float ss = 0.0f;
        for (int l = 0; l < 32; l++)
            ss += xs[l] * xs[l];
        float av = sqrtf(ss / 32.0f);
        for (int l = 0; l < 32; l++)
            w[l] = av + fabsf(xs[l]);
        sc_f[j] = fit_scale_min(xs, w, 32, nmax, rmin, 0.1f, nstep, q + 32 * j, &m_f[j]);
        max_sc = fmaxf(max_sc, sc_f[j]);
        max_m = fmaxf(max_m, m_f[j]);
    }
    float inv_sc = max_sc > 0.0f ? 63.0f / max_sc : 0.0f;
    float inv_m = max_m > 0.0f ? 63.0f / max_m : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)clampi(nearest(inv_sc * sc_f[j]), 0, 63);
        lm[j] = (uint8_t)clampi(nearest(inv_m * m_f[j]), 0, 63);
    }
    k_scales_pack(scales, ls, lm);
    *d_out = kern_float_to_half(max_sc / 63.0f);
    *dmin_out = kern_float_to_half(max_m / 63.0f);
    float d = kern_half_to_float(*d_out), dmin = kern_half_to_float(*dmin_out);
    for (int j = 0; j < 8; j++) {
        float dl = d * (float)ls[j], ml = dmin * (float)lm[j];
        for (int l = 0; l < 32; l++) {
            // A zero scale decodes every element to -ml whatever q is: store 0.
            int v = dl != 0.0f ? nearest((x[32 * j + l] + ml) / dl) : 0;
            q[32 * j + l] = (uint8_t)clampi(v, 0, nmax);
        }
    }
}

void
kern__q4_k_from_float(const float *src, void *dst, int64_t n)
{
    blk_q4_k *b = dst;
    uint8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        k_quantize_block(src + i * QK_K, 15, -1.0f, 20, &b[i].d, &b[i].dmin, b[i].scales, q);
        for (int j = 0; j < QK_K / 64; j++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * j + l] = (uint8_t)(q[64 * j + l] | q[64 * j + 32 + l] << 4);
    }
}

void
kern__q5_k_from_float(const float *src, void *dst, int64_t n)
{
    blk_q5_k *b = dst;
    uint8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        k_quantize_block(src + i * QK_K, 31, -0.5f, 15, &b[i].d, &b[i].dmin, b[i].scales, q);
        memset(b[i].qh, 0, sizeof(b[i].qh));
        for (int j = 0; j < QK_K / 64; j++) {
            for (int l = 0; l < 32; l++) {
                int lo = q[64 * j + l], hi = q[64 * j + 32 + l];
                b[i].qs[32 * j + l] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
                b[i].qh[l] |= (uint8_t)((lo >> 4) << (2 * j) | (hi >> 4) << (2 * j + 1));
            }
        }
    }
}

void
kern__q6_k_from_float(const float *src, void *dst, int64_t n)
{
    blk_q6_k *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        // Per 16 elements, as Q4_0: the signed extreme maps to -32. The sixteen scales
        // then share d the same way, the largest in magnitude mapping to -128.
        float s[QK_K / 16], smax = 0.0f;
        for (int j = 0; j < QK_K / 16; j++) {
            s[j] = kern__signed_extreme(x + 16 * j, 16) / -32.0f;
            if (fabsf(s[j]) > fabsf(smax))
                smax = s[j];
        }
        uint8_t q[QK_K];
        if (smax == 0.0f) {
            memset(&b[i], 0, sizeof(b[i]));
            memset(q, 32, sizeof(q));
        } else {
            float iscale = -128.0f / smax;
            b[i].d = kern_float_to_half(1.0f / iscale);
            float d = kern_half_to_float(b[i].d);
            for (int j = 0; j < QK_K / 16; j++) {
                b[i].scales[j] = (int8_t)clampi(nearest(iscale * s[j]), -128, 127);
                float dl = d * (float)b[i].scales[j];
                for (int l = 0; l < 16; l++) {
                    int v = dl != 0.0f ? nearest(x[16 * j + l] / dl) : 0;
                    q[16 * j + l] = (uint8_t)(clampi(v, -32, 31) + 32);
                }
            }
        }
        for (int h = 0; h < QK_K / 128; h++) {
            uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const uint8_t *qq = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((qq[l] & 0x0f) | (qq[l + 64] & 0x0f) << 4);
                ql[l + 32] = (uint8_t)((qq[l + 32] & 0x0f) | (qq[l + 96] & 0x0f) << 4);
                qh[l] = (uint8_t)((qq[l] >> 4) | (qq[l + 32] >> 4) << 2 | (qq[l + 64] >> 4) << 4 |
                                  (qq[l + 96] >> 4) << 6);
            }
        }
    }
}

void
kern__q8_k_from_float(const float *src, void *dst, int64_t n)
{
    blk_q8_k *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        float max = kern__signed_extreme(x, QK_K);
        memset(&b[i], 0, sizeof(b[i]));
        if (max == 0.0f)
            continue;
        float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            b[i].qs[j] = (int8_t)clampi(nearest(iscale * x[j]), -127, 127);
            b[i].bsums[j / 16] = (int16_t)(b[i].bsums[j / 16] + b[i].qs[j]);
        }
        b[i].d = 1.0f / iscale;
    }
}
