/*
 * kern_q8.c - the 8-bit activation path of kern_matmul: activations quantized per
 * 32-element block (as ggml's Q8_1: a float scale d, s = d * sum(q), 32 int8 quants)
 * and integer dot products with Q4_0, Q4_1 and Q8_0 weights; the scalar reference of
 * both, and the driver that quantizes tokens in groups and runs the SIMD tiles.
 *
 * Opt-in ($LLM_ACT=q8). Why: a one-token float dot widens every weight to a float and
 * spends one FMA per 8 weights; the integer dot multiplies 32 byte pairs in two
 * instructions (maddubs, madd): one-token matmuls take about half the time. What it
 * costs: each activation is rounded to 1/254 of its block's largest magnitude. On
 * SmolLM2 that moves logits by up to ~5% of their scale (mean next-token KL 6e-3,
 * tests/integration/test_act_q8.py) and flips the greedy first token of the
 * known-answer prompt, whose float margin is 0.3%; and per block it needs 5 vector
 * operations (maddubs, madd, convert, scale, FMA) where the float tile over decoded rows
 * needs 4 FMAs, so from ~16 tokens per step it is 10-30% slower on AVX2 without VNNI.
 * Hence not the default. What it does not do: other weight types (they keep the float
 * path in either mode).
 *
 * Batch invariance holds as in the float path: each token's row is quantized on its
 * own, by the same function (scalar and AVX2 quantizers give the same bytes), and each
 * element's sums are taken in one order (see kern__q8_dot_scalar and the AVX2 tile).
 */
#include "kern_internal.h"

#include <assert.h>
#include <math.h>

void
kern__quantize_act_scalar(const float *x, int64_t n, void *out)
{
    assert(n % 32 == 0);
    int8_t *qs = out;
    float *d_out = (float *)(qs + n), *s_out = d_out + n / 32;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            // round half to even, as _mm256_round_ps does
            int q = (int)nearbyintf(xb[j] * id);
            qs[32 * b + j] = (int8_t)q;
            sum += q;
        }
        d_out[b] = d;
        s_out[b] = d * (float)sum;
    }
}

/*
 * The reference element: per block the exact integer dot isum, then
 * y = sum_b (d_w * d_x) * isum + sum_b m_w * s_x, each sum in block order. Q4_0 is an
 * affine type with m_w = -8 d_w (its weights are d (q - 8)); Q8_0 has no m_w term.
 */
float
kern__q8_dot_scalar(llm_dtype t, const void *w, kern__q8x x, int64_t n)
{
    float sd = 0.0f, sm = 0.0f;
    for (int64_t b = 0; b < n / 32; b++) {
        const int8_t *xq = x.qs + 32 * b;
        int isum = 0;
        float dw, mw = 0.0f;
        if (t == LLM_DTYPE_Q8_0) {
            const blk_q8_0 *q = (const blk_q8_0 *)w + b;
            for (int j = 0; j < 32; j++)
                isum += q->qs[j] * xq[j];
            dw = kern_half_to_float(q->d);
        } else {
            const uint8_t *qs;
            if (t == LLM_DTYPE_Q4_0) {
                const blk_q4_0 *q = (const blk_q4_0 *)w + b;
                qs = q->qs;
                dw = kern_half_to_float(q->d);
                mw = -8.0f * dw;
            } else {
                const blk_q4_1 *q = (const blk_q4_1 *)w + b;
                qs = q->qs;
                dw = kern_half_to_float(q->d);
                mw = kern_half_to_float(q->m);
            }
            for (int j = 0; j < 16; j++)
                isum += (qs[j] & 0x0f) * xq[j] + (qs[j] >> 4) * xq[j + 16];
        }
        sd += dw * x.d[b] * (float)isum;
        sm += mw * x.s[b];
    }
    return sd + sm;
}

bool
kern__q8_supported(llm_dtype t)
{
    return t == LLM_DTYPE_Q4_0 || t == LLM_DTYPE_Q4_1 || t == LLM_DTYPE_Q8_0;
}

void
kern__matmul_q8(const kern__q8_impl *impl, const kern_mat *w, int64_t col0, int64_t n_in,
                const float *x, int64_t x_stride, float *y, int64_t y_stride, int n_tok,
                int64_t row0, int64_t row1, float *scratch)
{
    assert(kern__q8_supported(w->type) && n_in % 32 == 0 && col0 % 32 == 0);
    const kern_type_traits *tr = kern_type((int)w->type);
    size_t col_off = (size_t)(col0 / 32) * tr->size, xb = KERN__Q8X_BYTES(n_in);
    // The caller's scratch holds the SIMD kernel's work area, then a group of quantized
    // tokens; the weights are read once per group (up to ~70 tokens).
    size_t scratch_bytes = (size_t)KERN_MATMUL_SCRATCH(n_in) * sizeof(float);
    char *work = (char *)scratch, *xa = work + KERN__Q8_WORK_BYTES(n_in);
    int group = (int)((scratch_bytes - KERN__Q8_WORK_BYTES(n_in)) / xb);
    assert(group >= 1);
    for (int t0 = 0; t0 < n_tok; t0 += group) {
        int nt = n_tok - t0 < group ? n_tok - t0 : group;
        for (int t = 0; t < nt; t++)
            impl->quantize(x + (int64_t)(t0 + t) * x_stride, n_in, xa + (size_t)t * xb);
        const char *wr = (const char *)w->data + (size_t)row0 * w->row_bytes + col_off;
        float *yg = y + (int64_t)t0 * y_stride;
        if (impl->gemm) {
            impl->gemm(w->type, wr, w->row_bytes, row1 - row0, xa, n_in, nt, yg, y_stride, work);
            continue;
        }
        for (int64_t r = 0; r < row1 - row0; r++)
            for (int t = 0; t < nt; t++)
                yg[t * y_stride + r] =
                    kern__q8_dot_scalar(w->type, wr + (size_t)r * w->row_bytes,
                                        kern__q8x_at(xa + (size_t)t * xb, n_in), n_in);
    }
}
