/*
 * kern_ops.c - scalar reference ops, the row-split matmul, and run-time selection of
 * SIMD variants. The scalar code here is the reference the SIMD code is tested against.
 */
#include "kern.h"

#include "kern_internal.h"
#include "kern_kquants.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef float (*dot_fn)(const float *, const float *, int64_t);

typedef void (*gemm_fn)(const float *, int64_t, int, const float *, int64_t, int, int64_t, float *,
                        int64_t);
typedef void (*attn_values_fn)(float *, const float *, const float *, int64_t, int, int);
typedef void (*attn_scores_fn)(float *const *, const float *const *, int, const void *, bool, int,
                               float);

static dot_fn dot_impl = kern__dot_f32_scalar;
static gemm_fn gemm_impl; // NULL: the scalar path (a decoded row, then plain dots)
static attn_values_fn attn_values_impl = kern__attn_values_scalar;
static attn_scores_fn attn_scores_impl = kern__attn_scores_scalar;
static void softmax_scalar(float *x, int64_t n);
static void swiglu_scalar(float *gate, const float *up, int64_t n);
static void exp_scalar(const float *x, float *y, int64_t n);
static void attn_values_f16_scalar(float *out, const float *att, const kern_half *v,
                                   int64_t v_stride, int n_pos, int hd);
static void f32_to_f16_scalar(const float *x, kern_half *y, int64_t n);
static void (*softmax_impl)(float *, int64_t) = softmax_scalar;
static void (*swiglu_impl)(float *, const float *, int64_t) = swiglu_scalar;
static void (*exp_impl)(const float *, float *, int64_t) = exp_scalar;
static void exp_scaled_scalar(const float *x, float shift, float scale, float *y, int64_t n);
static int64_t select_ge_scalar(const float *x, int64_t n, float thr, int32_t *idx);
static uint64_t weight_sum_scalar(const float *x, int64_t n, float scale);
static void (*exp_scaled_impl)(const float *, float, float, float *, int64_t) = exp_scaled_scalar;
static int64_t (*argmax_impl)(const float *, int64_t) = kern__argmax_scalar;
static int64_t (*select_ge_impl)(const float *, int64_t, float, int32_t *) = select_ge_scalar;
static uint64_t (*weight_sum_impl)(const float *, int64_t, float) = weight_sum_scalar;
static uint64_t read_sum_scalar(const uint64_t *p, int64_t n_words);
static uint64_t (*read_sum_impl)(const uint64_t *, int64_t) = read_sum_scalar;
static void (*values_f16_impl)(float *, const float *, const kern_half *, int64_t, int,
                               int) = attn_values_f16_scalar;
static void (*to_f16_impl)(const float *, kern_half *, int64_t) = f32_to_f16_scalar;
static kern_to_float_fn decode_impl[LLM_DTYPE_COUNT]; // SIMD decoder, NULL = the traits' one
static kern_rows1_fn rows1_impl[LLM_DTYPE_COUNT];     // fused one-token kernel, NULL = none
static kern__p8_impl p8_impl = {kern__quantize_i16_scalar, kern__p8_gemm_scalar};
static const char *simd_name = "scalar";
static pthread_once_t simd_once = PTHREAD_ONCE_INIT;

/* $LLM_SIMD=scalar forces the scalar reference everywhere: how the tests run the whole
 * engine on the fallback path that a CPU without AVX2 would take. */
static bool
simd_allowed(void)
{
    const char *v = getenv("LLM_SIMD");
    return !(v && strcmp(v, "scalar") == 0);
}

static void
simd_select(void)
{
#if defined(LLM_KERN_HAVE_AVX2)
    if (simd_allowed() && kern__cpu_has_avx2()) {
        dot_impl = kern__dot_f32_avx2;
        gemm_impl = kern__gemm_f32_avx2;
        attn_values_impl = kern__attn_values_avx2;
        softmax_impl = kern__softmax_avx2;
        swiglu_impl = kern__swiglu_avx2;
        exp_impl = kern__exp_avx2;
        exp_scaled_impl = kern__exp_scaled_avx2;
        argmax_impl = kern__argmax_avx2;
        select_ge_impl = kern__select_ge_avx2;
        weight_sum_impl = kern__weight_sum_avx2;
        read_sum_impl = kern__read_sum_avx2;
        values_f16_impl = kern__attn_values_f16_avx2;
        to_f16_impl = kern__f32_to_f16_avx2;
        attn_scores_impl = kern__attn_scores_avx2;
        decode_impl[LLM_DTYPE_F16] = kern__f16_to_float_avx2;
        decode_impl[LLM_DTYPE_BF16] = kern__bf16_to_float_avx2;
        decode_impl[LLM_DTYPE_Q4_0] = kern__q4_0_to_float_avx2;
        decode_impl[LLM_DTYPE_Q4_1] = kern__q4_1_to_float_avx2;
        decode_impl[LLM_DTYPE_Q8_0] = kern__q8_0_to_float_avx2;
        decode_impl[LLM_DTYPE_Q5_0] = kern__q5_0_to_float_avx2;
        decode_impl[LLM_DTYPE_Q5_1] = kern__q5_1_to_float_avx2;
        decode_impl[LLM_DTYPE_Q4_K] = kern__q4_k_to_float_avx2;
        decode_impl[LLM_DTYPE_Q5_K] = kern__q5_k_to_float_avx2;
        decode_impl[LLM_DTYPE_Q6_K] = kern__q6_k_to_float_avx2;
        decode_impl[LLM_DTYPE_Q8_K] = kern__q8_k_to_float_avx2;
        p8_impl.quantize = kern__quantize_i16_avx2;
        p8_impl.gemm = kern__p8_gemm_avx2;
        rows1_impl[LLM_DTYPE_F16] = kern__rows1_f16_avx2;
        rows1_impl[LLM_DTYPE_Q4_0] = kern__rows1_q4_0_avx2;
        rows1_impl[LLM_DTYPE_Q4_1] = kern__rows1_q4_1_avx2;
        rows1_impl[LLM_DTYPE_Q8_0] = kern__rows1_q8_0_avx2;
        simd_name = "avx2";
    }
#endif
}

kern_to_float_fn
kern__decoder(llm_dtype t)
{
    pthread_once(&simd_once, simd_select);
    const kern_type_traits *tr = kern_type((int)t);
    if (!tr)
        return NULL;
    return decode_impl[t] ? decode_impl[t] : tr->to_float;
}

float
kern__row_dot_ref(llm_dtype t, const void *w, const float *x, int64_t n)
{
    // Chunks of one block, or of 32 elements for types with smaller blocks.
    const kern_type_traits *tr = kern_type((int)t);
    int chunk = tr->blck > 32 ? tr->blck : 32;
    size_t chunk_bytes = (size_t)(chunk / tr->blck) * tr->size;
    float buf[QK_K], sum = 0.0f;
    assert(chunk <= QK_K);
    for (int64_t i = 0; i < n; i += chunk) {
        tr->to_float((const char *)w + (size_t)(i / chunk) * chunk_bytes, buf, chunk);
        sum += kern__dot_f32_scalar(buf, x + i, chunk);
    }
    return sum;
}

const char *
kern_simd_name(void)
{
    pthread_once(&simd_once, simd_select);
    return simd_name;
}

const char *
kern_act_name(void)
{
    pthread_once(&simd_once, simd_select);
    return kern_pack_wanted() ? "i16" : "f32";
}

float
kern__dot_f32_scalar(const float *a, const float *b, int64_t n)
{
    // Four partial sums: a fixed, documented summation order for the reference.
    float s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++)
            s[k] += a[i + k] * b[i + k];
    for (; i < n; i++)
        s[0] += a[i] * b[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

float
kern_dot_f32(const float *a, const float *b, int64_t n)
{
    pthread_once(&simd_once, simd_select);
    return dot_impl(a, b, n);
}

void
kern_axpy_f32(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

void
kern_get_row(const kern_mat *w, int64_t r, float *out)
{
    const kern_type_traits *tr = kern_type((int)w->type);
    if (!w->packed) {
        tr->to_float((const char *)w->data + (size_t)r * w->row_bytes, out, w->n_cols);
        return;
    }
    // Rebuild each GGUF block of the row and decode it as above: the same floats.
    size_t chunk = kern__pack_chunk_bytes(w->type);
    int64_t cc = kern__pack_chunk_cols(w->type), nb = w->n_cols / cc;
    const char *g = (const char *)w->data + (size_t)(r / 8) * (size_t)nb * chunk;
    for (int64_t b = 0; b < nb; b++) {
        union {
            blk_q4_0 q4_0;
            blk_q4_1 q4_1;
            blk_q5_0 q5_0;
            blk_q5_1 q5_1;
            blk_q8_0 q8_0;
            blk_q4_k q4_k;
            blk_q5_k q5_k;
            blk_q6_k q6_k;
        } blk;
        kern_pack_unpack_block(w->type, g + (size_t)b * chunk, (int)(r % 8), &blk);
        tr->to_float(&blk, out + cc * b, cc);
    }
}

bool
kern_pack_wanted(void)
{
    const char *v = getenv("LLM_ACT");
    return !(v && strcmp(v, "f32") == 0);
}

/*
 * Batch invariance: y[t][r] is the same float, bit for bit, whatever n_tok, the token's
 * place t in the batch and the row range [row0, row1) are, so a request gives the same
 * tokens alone or batched and under any thread split. Each SIMD level has one order per
 * element and every path follows it:
 *  - scalar: the row decoded by the traits' decoder, then kern__dot_f32_scalar;
 *  - AVX2: the row decoded by the AVX2 decoder (kern__decoder), then the tile's order
 *    (one 8-lane FMA accumulator over the row's 8-float chunks, then hsum_ps; see
 *    kern__gemm_f32_avx2). Rows go four at a time (one at a time for the last 0..3) and
 *    tokens three at a time (then 1 or 2), and every tile shape has that order.
 * One token on the hot types (F16, Q4_0, Q4_1, Q8_0) decodes in registers instead
 * (kern_rows1_fn) with the same floats and order. The fused kernels this replaced summed
 * d * sum(q x) + m * sum(x) per block, a different expression from the multi-token path.
 */
void
kern_matmul(const kern_mat *w, int64_t col0, int64_t n_in, const float *x, int64_t x_stride,
            float *y, int64_t y_stride, int n_tok, int64_t row0, int64_t row1, float *scratch)
{
    const kern_type_traits *tr = kern_type((int)w->type);
    size_t col_off = (size_t)(col0 / tr->blck) * tr->size;
    pthread_once(&simd_once, simd_select);
    if (w->packed) {
        kern__matmul_p8(&p8_impl, w, col0, n_in, x, x_stride, y, y_stride, n_tok, row0, row1,
                        scratch);
        return;
    }
    kern_to_float_fn decode = decode_impl[w->type] ? decode_impl[w->type] : tr->to_float;
    bool in_place = w->type == LLM_DTYPE_F32; // rows usable as they are: no decode
    kern_rows1_fn rows1 = rows1_impl[w->type];
    if (rows1 && n_tok == 1 && n_in % 32 == 0) {
        // One token: decode in registers (same floats, same order as below).
        for (int64_t r = row0; r < row1;) {
            int nr = row1 - r >= 4 ? 4 : 1;
            rows1((const char *)w->data + (size_t)r * w->row_bytes + col_off, w->row_bytes, nr, x,
                  n_in, y + (r - row0));
            r += nr;
        }
        return;
    }
    if (gemm_impl) {
        for (int64_t r = row0; r < row1;) {
            int nr = row1 - r >= 4 ? 4 : 1;
            const char *row = (const char *)w->data + (size_t)r * w->row_bytes + col_off;
            const float *wr = scratch;
            int64_t ws = n_in;
            if (in_place) {
                wr = (const float *)row;
                ws = (int64_t)(w->row_bytes / sizeof(float));
            } else {
                for (int k = 0; k < nr; k++)
                    decode(row + (size_t)k * w->row_bytes, scratch + k * n_in, n_in);
            }
            for (int t = 0; t < n_tok; t += 3) {
                int nt = n_tok - t >= 3 ? 3 : n_tok - t;
                gemm_impl(wr, ws, nr, x + t * x_stride, x_stride, nt, n_in,
                          y + t * y_stride + (r - row0), y_stride);
            }
            r += nr;
        }
        return;
    }
    for (int64_t r = row0; r < row1; r++) {
        const char *row = (const char *)w->data + (size_t)r * w->row_bytes + col_off;
        const float *wr = (const float *)row;
        if (!in_place) {
            decode(row, scratch, n_in);
            wr = scratch;
        }
        for (int t = 0; t < n_tok; t++)
            y[t * y_stride + (r - row0)] = kern__dot_f32_scalar(wr, x + t * x_stride, n_in);
    }
}

void
kern_act_init(kern_act *a, const float *x, int64_t x_stride, int64_t n_in, int n_tok, void *buf)
{
    *a = (kern_act){x, x_stride, n_in, n_tok, buf, false};
}

void
kern_matmul_act(const kern_mat *w, int64_t col0, kern_act *a, float *y, int64_t y_stride,
                int64_t row0, int64_t row1, float *scratch)
{
    if (!w->packed) {
        kern_matmul(w, col0, a->n_in, a->x, a->x_stride, y, y_stride, a->n_tok, row0, row1,
                    scratch);
        return;
    }
    pthread_once(&simd_once, simd_select);
    if (!a->quantized) {
        kern__p8_quantize(&p8_impl, a->x, a->x_stride, a->n_in, a->n_tok, a->buf);
        a->quantized = true;
    }
    // The tokens' rows, then 8 floats per token for a partial group (kern__p8_rows).
    float *edge = (float *)((char *)a->buf + (size_t)a->n_tok * KERN__I16X_BYTES(a->n_in));
    kern__p8_rows(&p8_impl, w, col0, a->n_in, a->buf, a->n_tok, y, y_stride, row0, row1, edge);
}

void
kern__attn_scores_scalar(float *const *att, const float *const *q, int nq, const void *k, bool f16,
                         int hd, float scale)
{
    const float *kf = k;
    const kern_half *kh = k;
    for (int i = 0; i < nq; i++)
        for (int p = 0; p < KERN_KV_BLOCK; p++) {
            float even = 0.0f, odd = 0.0f;
            for (int d = 0; d < hd; d += 2) {
                int e = d * KERN_KV_BLOCK + p, o = e + KERN_KV_BLOCK;
                even += q[i][d] * (f16 ? kern_half_to_float(kh[e]) : kf[e]);
                odd += q[i][d + 1] * (f16 ? kern_half_to_float(kh[o]) : kf[o]);
            }
            att[i][p] = scale * (even + odd);
        }
}

void
kern_attn_scores(float *const *att, const float *const *q, int nq, const void *k, bool f16, int hd,
                 float scale)
{
    assert(nq >= 1 && nq <= KERN_ATT_QUERIES && hd % 2 == 0);
    pthread_once(&simd_once, simd_select);
    attn_scores_impl(att, q, nq, k, f16, hd, scale);
}

void
kern__attn_values_scalar(float *out, const float *att, const float *v, int64_t v_stride, int n_pos,
                         int hd)
{
    for (int p = 0; p < n_pos; p++)
        kern_axpy_f32(out, att[p], v + (int64_t)p * v_stride, hd);
}

void
kern_attn_values(float *out, const float *att, const float *v, int64_t v_stride, int n_pos, int hd)
{
    pthread_once(&simd_once, simd_select);
    attn_values_impl(out, att, v, v_stride, n_pos, hd);
}

void
kern_attn_values_f16(float *out, const float *att, const kern_half *v, int64_t v_stride, int n_pos,
                     int hd)
{
    pthread_once(&simd_once, simd_select);
    values_f16_impl(out, att, v, v_stride, n_pos, hd);
}

static void
attn_values_f16_scalar(float *out, const float *att, const kern_half *v, int64_t v_stride,
                       int n_pos, int hd)
{
    for (int p = 0; p < n_pos; p++)
        for (int c = 0; c < hd; c++)
            out[c] += att[p] * kern_half_to_float(v[(int64_t)p * v_stride + c]);
}

void
kern_f32_to_f16(const float *x, kern_half *y, int64_t n)
{
    pthread_once(&simd_once, simd_select);
    to_f16_impl(x, y, n);
}

static void
f32_to_f16_scalar(const float *x, kern_half *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = kern_float_to_half(x[i]);
}

void
kern_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps)
{
    double ss = 0.0; // double: the sum of squares of a few thousand floats loses digits
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

void
kern_rope_table(float *cs, int head_dim, int pos, float theta)
{
    for (int i = 0; i < head_dim / 2; i++) {
        double ang = (double)pos * pow((double)theta, -2.0 * i / head_dim);
        cs[2 * i] = (float)cos(ang);
        cs[2 * i + 1] = (float)sin(ang);
    }
}

void
kern_rope_apply(float *x, int n_heads, int head_dim, const float *cs)
{
    for (int h = 0; h < n_heads; h++) {
        float *p = x + h * head_dim;
        for (int i = 0; i < head_dim / 2; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1], x0 = p[2 * i], x1 = p[2 * i + 1];
            p[2 * i] = x0 * c - x1 * s;
            p[2 * i + 1] = x0 * s + x1 * c;
        }
    }
}

void
kern_rope(float *x, int n_heads, int head_dim, int pos, float theta)
{
    float cs[512];
    assert(head_dim <= 512);
    kern_rope_table(cs, head_dim, pos, theta);
    kern_rope_apply(x, n_heads, head_dim, cs);
}

void
kern_softmax(float *x, int64_t n)
{
    pthread_once(&simd_once, simd_select);
    softmax_impl(x, n);
}

static void
softmax_scalar(float *x, int64_t n)
{
    // A comparison, not fmaxf: fmaxf is a libm call here (no -ffinite-math), and it was
    // 3% of a 512-token prefill. Same result for the finite scores this sees.
    float max = x[0];
    for (int64_t i = 1; i < n; i++)
        max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

void
kern_exp(const float *x, float *y, int64_t n)
{
    pthread_once(&simd_once, simd_select);
    exp_impl(x, y, n);
}

static void
exp_scalar(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = expf(x[i]);
}

void
kern_exp_scaled(const float *x, float shift, float scale, float *y, int64_t n)
{
    pthread_once(&simd_once, simd_select);
    exp_scaled_impl(x, shift, scale, y, n);
}

static void
exp_scaled_scalar(const float *x, float shift, float scale, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float z = (x[i] - shift) * scale;
        y[i] = expf(z);
    }
}

int64_t
kern_argmax(const float *x, int64_t n)
{
    pthread_once(&simd_once, simd_select);
    return argmax_impl(x, n);
}

int64_t
kern__argmax_scalar(const float *x, int64_t n)
{
    int64_t best = -1; // the first number, then the first larger one: NaNs are passed over
    for (int64_t i = 0; i < n; i++)
        if (x[i] == x[i] && (best < 0 || x[i] > x[best]))
            best = i;
    return best < 0 ? 0 : best;
}

int64_t
kern_select_ge(const float *x, int64_t n, float thr, int32_t *idx)
{
    pthread_once(&simd_once, simd_select);
    return select_ge_impl(x, n, thr, idx);
}

static int64_t
select_ge_scalar(const float *x, int64_t n, float thr, int32_t *idx)
{
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (x[i] >= thr)
            idx[m++] = (int32_t)i;
    return m;
}

static uint64_t
read_sum_scalar(const uint64_t *p, int64_t n_words)
{
    uint64_t s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n_words; i += 4)
        for (int k = 0; k < 4; k++)
            s[k] += p[i + k];
    for (; i < n_words; i++)
        s[0] += p[i];
    return s[0] + s[1] + s[2] + s[3];
}

uint64_t
kern_read_sum(const uint64_t *p, int64_t n_words)
{
    pthread_once(&simd_once, simd_select);
    return read_sum_impl(p, n_words);
}

uint64_t
kern_weight_sum(const float *x, int64_t n, float scale)
{
    pthread_once(&simd_once, simd_select);
    return weight_sum_impl(x, n, scale);
}

static uint64_t
weight_sum_scalar(const float *x, int64_t n, float scale)
{
    uint64_t sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] * scale;
        if (v >= 1.0f && v < 0x1p31f)
            sum += (uint64_t)v;
    }
    return sum;
}

void
kern_swiglu(float *gate, const float *up, int64_t n)
{
    pthread_once(&simd_once, simd_select);
    swiglu_impl(gate, up, n);
}

static void
swiglu_scalar(float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
