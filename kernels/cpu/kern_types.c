/*
 * kern_types.c - the element-type traits table: block sizes, decoders and the
 * reference quantizers for every supported type, plus half/bfloat16 conversion.
 *
 * The quantizers are the plain round-to-nearest references (as ggml's *_ref): they
 * make test models and will seed llm-quantize; they are not tuned for speed.
 * Types known by name but not computable keep to_float NULL, so callers can name them
 * in an error ("tensor type Q2_K is not supported") instead of guessing.
 */
#include "kern.h"

#include "kern_internal.h"
#include "kern_kquants.h"

#include <math.h>
#include <string.h>

static uint32_t
f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float
bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float
kern_half_to_float(kern_half h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        // zero or subnormal: value = mant * 2^-24, exact in float
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000 | (mant << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

kern_half
kern_float_to_half(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x > 0x7f800000)
        return sign | 0x7e00; // NaN stays NaN
    if (x >= 0x477ff000)
        return sign | 0x7c00; // >= 65520 rounds to infinity
    uint32_t e = x >> 23;
    if (e < 113) {
        // result is subnormal (or zero): q = round(m * 2^(e - 126)) in units of 2^-24
        if (e < 102)
            return sign;
        uint32_t m = (x & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return (kern_half)(sign | q);
    }
    uint32_t h = ((e - 112) << 10) | ((x >> 13) & 0x3ff);
    uint32_t rem = x & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; // a carry into the exponent is the correct rounding
    return (kern_half)(sign | h);
}

float
kern_bf16_to_float(kern_bf16 h)
{
    return bits_f32((uint32_t)h << 16);
}

kern_bf16
kern_float_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000)
        return (kern_bf16)((x >> 16) | 0x40); // quiet NaN
    return (kern_bf16)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

// --- decoders ---------------------------------------------------------------------

static void
f32_to_float(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void
f16_to_float(const void *src, float *dst, int64_t n)
{
    const kern_half *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = kern_half_to_float(s[i]);
}

static void
bf16_to_float(const void *src, float *dst, int64_t n)
{
    const kern_bf16 *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = kern_bf16_to_float(s[i]);
}

static void
q8_0_to_float(const void *src, float *dst, int64_t n)
{
    const blk_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float d = kern_half_to_float(b[i].d);
        for (int j = 0; j < QK8_0; j++)
            dst[i * QK8_0 + j] = d * (float)b[i].qs[j];
    }
}

static void
q4_0_to_float(const void *src, float *dst, int64_t n)
{
    const blk_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        float d = kern_half_to_float(b[i].d);
        float *y = dst + i * QK4_0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
            y[j + QK4_0 / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

static void
q4_1_to_float(const void *src, float *dst, int64_t n)
{
    const blk_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        float d = kern_half_to_float(b[i].d), m = kern_half_to_float(b[i].m);
        float *y = dst + i * QK4_1;
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j] = d * (float)(b[i].qs[j] & 0x0f) + m;
            y[j + QK4_1 / 2] = d * (float)(b[i].qs[j] >> 4) + m;
        }
    }
}

// --- reference quantizers -----------------------------------------------------------

float
kern__signed_extreme(const float *x, int64_t n)
{
    float amax = 0.0f, max = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void
f32_from_float(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void
f16_from_float(const float *src, void *dst, int64_t n)
{
    kern_half *d = dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = kern_float_to_half(src[i]);
}

static void
bf16_from_float(const float *src, void *dst, int64_t n)
{
    kern_bf16 *d = dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = kern_float_to_bf16(src[i]);
}

static void
q8_0_from_float(const float *src, void *dst, int64_t n)
{
    blk_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *x = src + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = kern_float_to_half(d);
        for (int j = 0; j < QK8_0; j++)
            b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void
q4_0_from_float(const float *src, void *dst, int64_t n)
{
    blk_q4_0 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        const float *x = src + i * QK4_0;
        // The signed value of largest magnitude maps to -8, so the other side gets +7.
        float d = kern__signed_extreme(x, QK4_0) / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = kern_float_to_half(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int lo = (int)fminf(15.0f, x[j] * id + 8.5f);
            int hi = (int)fminf(15.0f, x[j + QK4_0 / 2] * id + 8.5f);
            b[i].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void
kern__quantize_affine(const float *x, int n, int levels, uint8_t *q, float *d_out, float *min_out)
{
    float min = x[0], max = x[0];
    for (int j = 1; j < n; j++) {
        min = fminf(min, x[j]);
        max = fmaxf(max, x[j]);
    }
    float d = (max - min) / (float)levels, id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < n; j++)
        q[j] = (uint8_t)fminf((float)levels, (x[j] - min) * id + 0.5f);
    *d_out = d;
    *min_out = min;
}

static void
q4_1_from_float(const float *src, void *dst, int64_t n)
{
    blk_q4_1 *b = dst;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        uint8_t q[QK4_1];
        float d, min;
        kern__quantize_affine(src + i * QK4_1, QK4_1, 15, q, &d, &min);
        b[i].d = kern_float_to_half(d);
        b[i].m = kern_float_to_half(min);
        for (int j = 0; j < QK4_1 / 2; j++)
            b[i].qs[j] = (uint8_t)(q[j] | (q[j + QK4_1 / 2] << 4));
    }
}

// --- the table ----------------------------------------------------------------------

static const kern_type_traits type_traits[LLM_DTYPE_COUNT] = {
    [LLM_DTYPE_F32] = {"F32", 1, 4, f32_to_float, f32_from_float},
    [LLM_DTYPE_F16] = {"F16", 1, 2, f16_to_float, f16_from_float},
    [LLM_DTYPE_Q4_0] = {"Q4_0", QK4_0, sizeof(blk_q4_0), q4_0_to_float, q4_0_from_float},
    [LLM_DTYPE_Q4_1] = {"Q4_1", QK4_1, sizeof(blk_q4_1), q4_1_to_float, q4_1_from_float},
    [LLM_DTYPE_Q5_0] = {"Q5_0", QK5_0, sizeof(blk_q5_0), kern__q5_0_to_float,
                        kern__q5_0_from_float},
    [LLM_DTYPE_Q5_1] = {"Q5_1", QK5_1, sizeof(blk_q5_1), kern__q5_1_to_float,
                        kern__q5_1_from_float},
    [LLM_DTYPE_Q8_0] = {"Q8_0", QK8_0, sizeof(blk_q8_0), q8_0_to_float, q8_0_from_float},
    [LLM_DTYPE_Q8_1] = {"Q8_1", 32, 36, NULL, NULL},
    [LLM_DTYPE_Q2_K] = {"Q2_K", 256, 84, NULL, NULL},
    [LLM_DTYPE_Q3_K] = {"Q3_K", 256, 110, NULL, NULL},
    [LLM_DTYPE_Q4_K] = {"Q4_K", QK_K, sizeof(blk_q4_k), kern__q4_k_to_float, kern__q4_k_from_float},
    [LLM_DTYPE_Q5_K] = {"Q5_K", QK_K, sizeof(blk_q5_k), kern__q5_k_to_float, kern__q5_k_from_float},
    [LLM_DTYPE_Q6_K] = {"Q6_K", QK_K, sizeof(blk_q6_k), kern__q6_k_to_float, kern__q6_k_from_float},
    [LLM_DTYPE_Q8_K] = {"Q8_K", QK_K, sizeof(blk_q8_k), kern__q8_k_to_float, kern__q8_k_from_float},
    [LLM_DTYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66, NULL, NULL},
    [LLM_DTYPE_IQ2_XS] = {"IQ2_XS", 256, 74, NULL, NULL},
    [LLM_DTYPE_IQ3_XXS] = {"IQ3_XXS", 256, 98, NULL, NULL},
    [LLM_DTYPE_IQ1_S] = {"IQ1_S", 256, 50, NULL, NULL},
    [LLM_DTYPE_IQ4_NL] = {"IQ4_NL", 32, 18, NULL, NULL},
    [LLM_DTYPE_IQ3_S] = {"IQ3_S", 256, 110, NULL, NULL},
    [LLM_DTYPE_IQ2_S] = {"IQ2_S", 256, 82, NULL, NULL},
    [LLM_DTYPE_IQ4_XS] = {"IQ4_XS", 256, 136, NULL, NULL},
    [LLM_DTYPE_I8] = {"I8", 1, 1, NULL, NULL},
    [LLM_DTYPE_I16] = {"I16", 1, 2, NULL, NULL},
    [LLM_DTYPE_I32] = {"I32", 1, 4, NULL, NULL},
    [LLM_DTYPE_I64] = {"I64", 1, 8, NULL, NULL},
    [LLM_DTYPE_F64] = {"F64", 1, 8, NULL, NULL},
    [LLM_DTYPE_IQ1_M] = {"IQ1_M", 256, 56, NULL, NULL},
    [LLM_DTYPE_BF16] = {"BF16", 1, 2, bf16_to_float, bf16_from_float},
};

const kern_type_traits *
kern_type(int t)
{
    if (t < 0 || t >= LLM_DTYPE_COUNT || !type_traits[t].name)
        return NULL;
    return &type_traits[t];
}

const char *
kern_type_name(int t)
{
    const kern_type_traits *tr = kern_type(t);
    return tr ? tr->name : "unknown";
}

bool
kern_type_supported(int t)
{
    const kern_type_traits *tr = kern_type(t);
    return tr && tr->to_float;
}

size_t
kern_row_size(llm_dtype t, int64_t n)
{
    const kern_type_traits *tr = kern_type((int)t);
    return tr ? (size_t)(n / tr->blck) * tr->size : 0;
}
