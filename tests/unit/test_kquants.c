/*
 * test_kquants.c - Q5_0, Q5_1 and the K-quants (Q4_K, Q5_K, Q6_K, Q8_K): block layouts,
 * decoding of handcrafted blocks against values computed by gguf.quants.dequantize,
 * quantize-then-decode error bounds, and kern_matmul (the selected SIMD decoders and dot
 * order) against the scalar decoders and a double-precision dot.
 */
#include "kern.h"
#include "kern_internal.h"
#include "kern_kquants.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const llm_dtype kq_types[] = {LLM_DTYPE_Q5_0, LLM_DTYPE_Q5_1, LLM_DTYPE_Q4_K,
                                     LLM_DTYPE_Q5_K, LLM_DTYPE_Q6_K, LLM_DTYPE_Q8_K};
#define N_KQ (int)(sizeof(kq_types) / sizeof(kq_types[0]))

static float
frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* Roughly normal (sum of three uniforms), as trained weights are. */
static float
grand(unsigned *s)
{
    return (frand(s) + frand(s) + frand(s)) * 0.6f;
}

static void *
quantize(llm_dtype t, const float *x, int64_t n)
{
    void *q = malloc(kern_row_size(t, n));
    ck_assert_ptr_nonnull(q);
    kern_type(t)->from_float(x, q, n);
    return q;
}

// --- layout ---------------------------------------------------------------------------

START_TEST(test_block_sizes_match_ggml)
{
    ck_assert_uint_eq(sizeof(blk_q5_0), 22);
    ck_assert_uint_eq(sizeof(blk_q5_1), 24);
    ck_assert_uint_eq(sizeof(blk_q4_k), 144);
    ck_assert_uint_eq(sizeof(blk_q5_k), 176);
    ck_assert_uint_eq(sizeof(blk_q6_k), 210);
    ck_assert_uint_eq(sizeof(blk_q8_k), 292);
    const int blck[N_KQ] = {32, 32, 256, 256, 256, 256};
    const size_t size[N_KQ] = {22, 24, 144, 176, 210, 292};
    for (int i = 0; i < N_KQ; i++) {
        const kern_type_traits *tr = kern_type(kq_types[i]);
        ck_assert_ptr_nonnull(tr);
        ck_assert(kern_type_supported(kq_types[i]));
        ck_assert_int_eq(tr->blck, blck[i]);
        ck_assert_uint_eq(tr->size, size[i]);
        ck_assert_ptr_nonnull(tr->from_float);
    }
    ck_assert_uint_eq(kern_row_size(LLM_DTYPE_Q4_K, 512), 288);
    ck_assert_uint_eq(kern_row_size(LLM_DTYPE_Q5_0, 96), 66);
    ck_assert(!kern_type_supported(LLM_DTYPE_Q2_K)); // still known by name only
}
END_TEST

/* Byte k of a handcrafted block's payload is (37k + 11) mod 256: every nibble and bit
 * pattern occurs, in no aligned order. */
static void
fill_pattern(uint8_t *p, size_t n)
{
    for (size_t k = 0; k < n; k++)
        p[k] = (uint8_t)(k * 37 + 11);
}

typedef struct {
    int i;
    float v;
} elem;

/*
 * The expected values were computed once with gguf 0.19 (gguf.quants.dequantize, the
 * ggml Python port) on the same bytes, and pasted here:
 *   pat = bytes((k * 37 + 11) & 0xff for k in range(n)); h = struct.pack('<e', f)
 *   Q5_0: h(0.5) + pat(20)            Q5_1: h(0.25) + h(-1.5) + pat(20)
 *   Q4_K: h(0.125) + h(0.0625) + pat(140)
 *   Q5_K: h(0.125) + h(0.0625) + pat(172)     Q6_K: pat(208) + h(0.03125)
 * "sum" is the float64 sum of all decoded elements; every value is a short binary
 * fraction, so each element and the sum are exact and compared with ==.
 */
static void
check_decoded(llm_dtype t, const void *blk, int n, const elem *want, int n_want, double sum)
{
    float y[QK_K];
    kern_type(t)->to_float(blk, y, n);
    double s = 0;
    for (int k = 0; k < n; k++)
        s += y[k];
    for (int k = 0; k < n_want; k++)
        ck_assert_msg(y[want[k].i] == want[k].v, "%s[%d] = %g, want %g", kern_type_name(t),
                      want[k].i, (double)y[want[k].i], (double)want[k].v);
    ck_assert_msg(s == sum, "%s sum %.9g, want %.9g", kern_type_name(t), s, sum);
}

START_TEST(test_handcrafted_blocks_decode_to_gguf_values)
{
    blk_q5_0 a;
    a.d = kern_float_to_half(0.5f);
    fill_pattern((uint8_t *)&a + 2, sizeof(a) - 2);
    const elem q5_0[] = {{0, 7.5f},  {1, 2.0f},   {7, -7.0f}, {15, -3.0f},
                         {16, 4.5f}, {17, -2.0f}, {30, 5.0f}, {31, -2.0f}};
    check_decoded(LLM_DTYPE_Q5_0, &a, 32, q5_0, 8, -21.5);

    blk_q5_1 b;
    b.d = kern_float_to_half(0.25f);
    b.m = kern_float_to_half(-1.5f);
    fill_pattern((uint8_t *)&b + 4, sizeof(b) - 4);
    const elem q5_1[] = {{0, 6.25f},  {1, 3.5f},  {7, -1.0f}, {15, 1.0f},
                         {16, 4.75f}, {17, 1.5f}, {30, 5.0f}, {31, 1.5f}};
    check_decoded(LLM_DTYPE_Q5_1, &b, 32, q5_1, 8, 69.25);

    blk_q4_k c;
    c.d = kern_float_to_half(0.125f);
    c.dmin = kern_float_to_half(0.0625f);
    fill_pattern((uint8_t *)&c + 4, sizeof(c) - 4);
    const elem q4_k[] = {{0, 7.6875f},    {1, 14.5625f},   {31, 0.8125f},   {32, 71.75f},
                         {33, 83.75f},    {63, 23.75f},    {64, 15.8125f},  {95, 2.6875f},
                         {96, 42.625f},   {127, 100.625f}, {128, 0.4375f},  {129, 2.3125f},
                         {160, -3.3125f}, {191, 4.6875f},  {192, 21.9375f}, {200, 50.9375f},
                         {224, 21.875f},  {255, 3.875f}};
    check_decoded(LLM_DTYPE_Q4_K, &c, 256, q4_k, 18, 5563.0);

    blk_q5_k e;
    e.d = kern_float_to_half(0.125f);
    e.dmin = kern_float_to_half(0.0625f);
    fill_pattern((uint8_t *)&e + 4, sizeof(e) - 4);
    const elem q5_k[] = {{0, 29.6875f},  {1, 14.5625f},   {31, 0.8125f},   {32, 131.75f},
                         {33, 47.75f},   {63, 179.75f},   {64, 57.8125f},  {95, 2.6875f},
                         {96, -0.875f},  {127, 57.125f},  {128, 0.4375f},  {129, 2.3125f},
                         {160, 6.6875f}, {191, -1.3125f}, {192, 79.9375f}, {200, 108.9375f},
                         {224, 44.375f}, {255, 26.375f}};
    check_decoded(LLM_DTYPE_Q5_K, &e, 256, q5_k, 18, 11541.0);

    blk_q6_k f;
    fill_pattern((uint8_t *)&f, sizeof(f) - 2);
    f.d = kern_float_to_half(0.03125f);
    const elem q6_k[] = {{0, -44.71875f},  {1, 53.0f},      {31, -3.0f},       {32, 7.21875f},
                         {33, -21.0f},     {63, -18.125f},  {64, -95.0f},      {95, 93.0f},
                         {96, -27.1875f},  {127, 46.875f},  {128, -10.96875f}, {129, 13.0f},
                         {160, 20.96875f}, {191, -30.625f}, {192, -15.125f},   {200, 34.03125f},
                         {224, 26.4375f},  {255, -1.875f}};
    check_decoded(LLM_DTYPE_Q6_K, &f, 256, q6_k, 18, 144.125);

    // Q8_K (which gguf 0.19 cannot decode) is x = d * q with a float d: plain arithmetic.
    blk_q8_k g;
    memset(&g, 0, sizeof(g));
    g.d = 0.5f;
    fill_pattern((uint8_t *)g.qs, sizeof(g.qs));
    float y[QK_K];
    kern__q8_k_to_float(&g, y, QK_K);
    for (int k = 0; k < QK_K; k++)
        ck_assert(y[k] == 0.5f * (float)(int8_t)(k * 37 + 11));
}
END_TEST

// --- quantizers -----------------------------------------------------------------------

/* A row with the shapes that stress a quantizer: sub-blocks of very different scale (the
 * 6-bit K-quant scales), an all-positive one (min clamps to 0), all zero, constant, and
 * an outlier. */
static void
make_row(float *x, int n, unsigned seed)
{
    unsigned s = seed;
    for (int i = 0; i < n; i++) {
        int sub = (i / 32) % 8;
        x[i] = grand(&s) * (0.02f + 0.3f * (float)sub);
    }
    for (int i = 32; i < 64 && i < n; i++)
        x[i] = fabsf(x[i]) + 0.5f; // all positive
    if (n >= 256) {
        for (int i = 64; i < 96; i++)
            x[i] = 0.0f;
        for (int i = 96; i < 112; i++)
            x[i] = -0.75f;
        x[200] = 9.0f;
    }
}

static float
half_err(float x)
{
    return fabsf(kern_half_to_float(kern_float_to_half(x)) - x);
}

START_TEST(test_5bit_quantizers_stay_within_a_step)
{
    enum { N = 512 };
    float x[N], y[N];
    make_row(x, N, 5);
    for (int t = 0; t < 2; t++) {
        llm_dtype ty = t == 0 ? LLM_DTYPE_Q5_0 : LLM_DTYPE_Q5_1;
        void *q = quantize(ty, x, N);
        kern_type(ty)->to_float(q, y, N);
        for (int b = 0; b < N / 32; b++) {
            float lo = x[b * 32], hi = x[b * 32], amax = 0;
            for (int j = 0; j < 32; j++) {
                lo = fminf(lo, x[b * 32 + j]);
                hi = fmaxf(hi, x[b * 32 + j]);
                amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            }
            // Q5_0: -16..15 from the signed extreme, so the far side can clip a whole
            // step; Q5_1: half a step. Plus what the half-precision d (and m) cost.
            float step = ty == LLM_DTYPE_Q5_0 ? amax / 16 : (hi - lo) / 31;
            float tol = ty == LLM_DTYPE_Q5_0 ? step * 1.001f : step * 0.5f * 1.001f;
            tol += 32.0f * half_err(step) + half_err(lo) + 1e-9f;
            for (int j = 0; j < 32; j++)
                ck_assert_msg(fabsf(y[b * 32 + j] - x[b * 32 + j]) <= tol,
                              "%s block %d elem %d: %g vs %g (tol %g)", kern_type_name(ty), b, j,
                              (double)y[b * 32 + j], (double)x[b * 32 + j], (double)tol);
        }
        free(q);
    }
}
END_TEST

static double
rms_err(const float *a, const float *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / n);
}

/*
 * K-quants, per sub-block: rounding and the fit's clipping of an extreme cost up to a
 * step, (max - min(0, min)) / nmax; storing the sub-block's scale and minimum in 6 bits
 * against the super-block's largest (R = largest step, M = largest -min) adds up to half
 * a 6-bit unit of each, nmax * R / 126 + M / 126. Measured worst over 199 seeds of this
 * row: 0.97 of that sum; the test allows 1.25. Q6_K: -32..31 from the signed extreme (a
 * step of clipping on the far side) plus the 8-bit scale's rounding, half of d = (largest
 * sub-block scale) / 128, times 32 levels. Quality: Q4_K's RMS error must not exceed plain
 * min/max rounding with the same 32-element blocks (Q4_1, which keeps full half-precision
 * scales) by more than 5% (measured: 8% better), and each extra bit must buy 1.7x (Q5_K
 * vs Q4_K measured 1.95x, Q6_K vs Q5_K 1.87x).
 */
START_TEST(test_k_quantizers_bound_the_error_per_sub_block)
{
    enum { N = 1024 };
    float x[N], y[N], y41[N];
    make_row(x, N, 9);
    double rms[3];
    const llm_dtype ks[3] = {LLM_DTYPE_Q4_K, LLM_DTYPE_Q5_K, LLM_DTYPE_Q6_K};
    for (int t = 0; t < 3; t++) {
        void *q = quantize(ks[t], x, N);
        kern_type(ks[t])->to_float(q, y, N);
        int sub = ks[t] == LLM_DTYPE_Q6_K ? 16 : 32;
        float nmax = ks[t] == LLM_DTYPE_Q4_K ? 15.0f : 31.0f;
        float big_step = 0, big_min = 0, big_amax = 0; // of the current super-block
        for (int b = 0; b < N / sub; b++) {
            const float *xs = x + b * sub;
            if (b * sub % QK_K == 0) {
                big_step = big_min = big_amax = 0;
                for (int j = 0; j < QK_K; j += 32) {
                    float lo = 0, hi = xs[j];
                    for (int l = 0; l < 32; l++) {
                        lo = fminf(lo, xs[j + l]);
                        hi = fmaxf(hi, xs[j + l]);
                        big_amax = fmaxf(big_amax, fabsf(xs[j + l]));
                    }
                    big_step = fmaxf(big_step, (hi - lo) / nmax);
                    big_min = fmaxf(big_min, -lo);
                }
            }
            float lo = 0, hi = xs[0], amax = 0;
            for (int j = 0; j < sub; j++) {
                lo = fminf(lo, xs[j]);
                hi = fmaxf(hi, xs[j]);
                amax = fmaxf(amax, fabsf(xs[j]));
            }
            float tol = ks[t] == LLM_DTYPE_Q6_K
                            ? 1.001f * amax / 32 + 32 * 0.6f * (big_amax / 32 / 128)
                            : 1.25f * ((hi - lo) / nmax + (nmax * big_step + big_min) / 126);
            tol += 1e-6f;
            for (int j = 0; j < sub; j++)
                ck_assert_msg(fabsf(y[b * sub + j] - xs[j]) <= tol,
                              "%s sub-block %d elem %d: %g vs %g (tol %g)", kern_type_name(ks[t]),
                              b, j, (double)y[b * sub + j], (double)xs[j], (double)tol);
        }
        rms[t] = rms_err(x, y, N);
        free(q);
    }
    void *q = quantize(LLM_DTYPE_Q4_1, x, N);
    kern_type(LLM_DTYPE_Q4_1)->to_float(q, y41, N);
    free(q);
    double rms41 = rms_err(x, y41, N);
    ck_assert_msg(rms[0] <= 1.05 * rms41, "Q4_K rms %g vs Q4_1 %g", rms[0], rms41);
    ck_assert_msg(rms[1] * 1.7 <= rms[0], "Q5_K rms %g vs Q4_K %g", rms[1], rms[0]);
    ck_assert_msg(rms[2] * 1.7 <= rms[1], "Q6_K rms %g vs Q5_K %g", rms[2], rms[1]);
}
END_TEST

START_TEST(test_zero_rows_quantize_to_zero)
{
    float x[QK_K] = {0}, y[QK_K];
    for (int t = 0; t < N_KQ; t++) {
        void *q = quantize(kq_types[t], x, QK_K);
        for (int k = 0; k < QK_K; k++)
            y[k] = 1.0f;
        kern_type(kq_types[t])->to_float(q, y, QK_K);
        for (int k = 0; k < QK_K; k++)
            ck_assert_msg(y[k] == 0.0f, "%s[%d] = %g", kern_type_name(kq_types[t]), k,
                          (double)y[k]);
        free(q);
    }
}
END_TEST

START_TEST(test_q8_k_bsums_are_sums_of_sixteen_quants)
{
    float x[2 * QK_K];
    make_row(x, 2 * QK_K, 13);
    blk_q8_k b[2];
    kern__q8_k_from_float(x, b, 2 * QK_K);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += b[i].qs[16 * j + l];
            ck_assert_int_eq(b[i].bsums[j], s);
        }
}
END_TEST

// --- row dots and matmul ----------------------------------------------------------------

/*
 * Every one-token matmul (the selected decoder, then this SIMD level's dot order)
 * against the double-precision dot of the scalar-decoded row, within float rounding:
 * 1e-5 of sum |w x| (a float sum of n terms in 8 lanes errs by about (n / 8) * 6e-8 of
 * it; the decoded weight w = d*q + off may round once more).
 */
START_TEST(test_one_token_dots_match_the_scalar_reference)
{
    enum { NMAX = 1536 };
    static float w[NMAX], x[NMAX], wd[NMAX], scratch[KERN_MATMUL_SCRATCH(NMAX)];
    make_row(w, NMAX, 17);
    unsigned s = 19;
    for (int i = 0; i < NMAX; i++)
        x[i] = grand(&s);
    const int64_t lens[] = {32, 96, 256, 512, 1536};
    int checked = 0;
    for (int t = 0; t < N_KQ; t++) {
        llm_dtype ty = kq_types[t];
        for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
            int64_t n = lens[li];
            if (n % kern_type(ty)->blck != 0)
                continue;
            void *q = quantize(ty, w, n);
            kern_type(ty)->to_float(q, wd, n);
            double dd = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                dd += (double)wd[i] * x[i];
                mag += fabs((double)wd[i] * x[i]);
            }
            double tol = 1e-5 * mag + 1e-6;
            float ref = kern__dot_f32_scalar(wd, x, n);
            ck_assert_msg(fabs(ref - dd) <= tol, "%s n=%d scalar %g vs %g", kern_type_name(ty),
                          (int)n, (double)ref, dd);
            if (kern_type(ty)->blck == 32) {
                // kern__row_dot_ref decodes 32 elements at a time, so only for 32-blocks
                float r32 = kern__row_dot_ref(ty, q, x, n);
                ck_assert_msg(fabs(r32 - dd) <= tol, "%s n=%d row_dot_ref %g vs %g",
                              kern_type_name(ty), (int)n, (double)r32, dd);
            }
            kern_mat m = {ty, q, n, 1, kern_row_size(ty, n), false};
            float f;
            kern_matmul(&m, 0, n, x, n, &f, 1, 1, 0, 1, scratch);
            ck_assert_msg(fabs(f - dd) <= tol, "%s n=%d matmul %g vs %g (tol %g)",
                          kern_type_name(ty), (int)n, (double)f, dd, tol);
            checked++;
            free(q);
        }
    }
    ck_assert_int_eq(checked, 2 * 5 + 4 * 3);
}
END_TEST

/* kern_matmul on a column window, one token and five, against double dots of the
 * decoded rows. */
START_TEST(test_matmul_matches_reference_on_both_paths)
{
    enum { COLS = 768, ROWS = 12, TOKMAX = 5 };
    static float w[ROWS * COLS], x[TOKMAX * COLS], wd[COLS], scratch[KERN_MATMUL_SCRATCH(COLS)];
    for (int r = 0; r < ROWS; r++)
        make_row(w + r * COLS, COLS, 100 + r);
    unsigned s = 23;
    for (int i = 0; i < TOKMAX * COLS; i++)
        x[i] = grand(&s);
    for (int t = 0; t < N_KQ; t++) {
        llm_dtype ty = kq_types[t];
        int blck = kern_type(ty)->blck;
        size_t rb = kern_row_size(ty, COLS);
        char *q = malloc(rb * ROWS);
        ck_assert_ptr_nonnull(q);
        for (int r = 0; r < ROWS; r++)
            kern_type(ty)->from_float(w + r * COLS, q + r * rb, COLS);
        kern_mat m = {ty, q, COLS, ROWS, rb, false};
        // a tensor-parallel style slice: columns [blck, blck + n_in), rows [3, 11)
        int64_t col0 = blck, n_in = blck == 32 ? 96 : 512;
        for (int n_tok = 1; n_tok <= TOKMAX; n_tok += TOKMAX - 1) {
            float y[TOKMAX * ROWS];
            kern_matmul(&m, col0, n_in, x, n_in, y, ROWS, n_tok, 3, 11, scratch);
            for (int r = 3; r < 11; r++) {
                kern_get_row(&m, r, wd);
                for (int k = 0; k < n_tok; k++) {
                    double ref = 0, mag = 0;
                    for (int64_t c = 0; c < n_in; c++) {
                        ref += (double)wd[col0 + c] * x[k * n_in + c];
                        mag += fabs((double)wd[col0 + c] * x[k * n_in + c]);
                    }
                    float got = y[k * ROWS + r - 3];
                    ck_assert_msg(fabs(got - ref) <= 1e-5 * mag + 1e-6,
                                  "%s n_tok=%d row %d tok %d: %g vs %g", kern_type_name(ty), n_tok,
                                  r, k, (double)got, ref);
                }
            }
        }
        free(q);
    }
}
END_TEST

Suite *kquants_suite(void);

Suite *
kquants_suite(void)
{
    Suite *s = suite_create("kquants");
    TCase *tc = tcase_create("layout");
    tcase_add_test(tc, test_block_sizes_match_ggml);
    tcase_add_test(tc, test_handcrafted_blocks_decode_to_gguf_values);
    suite_add_tcase(s, tc);
    tc = tcase_create("quantize");
    tcase_add_test(tc, test_5bit_quantizers_stay_within_a_step);
    tcase_add_test(tc, test_k_quantizers_bound_the_error_per_sub_block);
    tcase_add_test(tc, test_zero_rows_quantize_to_zero);
    tcase_add_test(tc, test_q8_k_bsums_are_sums_of_sixteen_quants);
    suite_add_tcase(s, tc);
    tc = tcase_create("dot");
    tcase_add_test(tc, test_one_token_dots_match_the_scalar_reference);
    tcase_add_test(tc, test_matmul_matches_reference_on_both_paths);
    suite_add_tcase(s, tc);
    return s;
}
