/*
 * test_kern.c - type traits, half/bf16 conversion, quantizers, matmul and vector ops,
 * each against a plain double-precision reference; SIMD against scalar.
 */
#include "kern.h"
#include "kern_internal.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const llm_dtype supported[] = {LLM_DTYPE_F32,  LLM_DTYPE_F16,  LLM_DTYPE_BF16,
                                      LLM_DTYPE_Q8_0, LLM_DTYPE_Q4_0, LLM_DTYPE_Q4_1};
#define N_SUPPORTED (int)(sizeof(supported) / sizeof(supported[0]))

static float
frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

START_TEST(test_traits_name_known_types_and_reject_others)
{
    ck_assert_str_eq(kern_type_name(LLM_DTYPE_Q4_1), "Q4_1");
    ck_assert_str_eq(kern_type_name(LLM_DTYPE_Q4_K), "Q4_K");
    ck_assert_str_eq(kern_type_name(LLM_DTYPE_Q2_K), "Q2_K");
    ck_assert(!kern_type_supported(LLM_DTYPE_Q2_K)); // known by name, not computable
    ck_assert(kern_type(99) == NULL);
    ck_assert(kern_type(-1) == NULL);
    ck_assert(kern_type(4) == NULL); // a hole in GGUF's numbering
    ck_assert_str_eq(kern_type_name(99), "unknown");
    for (int i = 0; i < N_SUPPORTED; i++)
        ck_assert(kern_type_supported(supported[i]));
    ck_assert_uint_eq(kern_row_size(LLM_DTYPE_Q4_1, 64), 2 * sizeof(blk_q4_1));
    ck_assert_uint_eq(kern_row_size(LLM_DTYPE_F16, 3), 6);
}
END_TEST

START_TEST(test_half_round_trips_every_value)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = kern_half_to_float((kern_half)h);
        if (isnan(f))
            ck_assert(isnan(kern_half_to_float(kern_float_to_half(f))));
        else
            ck_assert_uint_eq(kern_float_to_half(f), h);
    }
}
END_TEST

START_TEST(test_half_rounds_to_nearest_even)
{
    ck_assert_uint_eq(kern_float_to_half(1.0f), 0x3c00);
    // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0)
    ck_assert_uint_eq(kern_float_to_half(1.0f + ldexpf(1, -11)), 0x3c00);
    // 1 + 3 * 2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9: rounds up to even
    ck_assert_uint_eq(kern_float_to_half(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
    ck_assert_uint_eq(kern_float_to_half(65504.0f), 0x7bff);
    ck_assert_uint_eq(kern_float_to_half(65520.0f), 0x7c00);
    ck_assert_uint_eq(kern_float_to_half(ldexpf(1, -24)), 0x0001);
    ck_assert_uint_eq(kern_float_to_half(ldexpf(1, -25)), 0x0000); // tie to even zero
    ck_assert_uint_eq(kern_float_to_half(-0.0f), 0x8000);
    ck_assert_uint_eq(kern_bf16_to_float(kern_float_to_bf16(1.5f)) == 1.5f, 1);
    ck_assert(isnan(kern_bf16_to_float(kern_float_to_bf16(NAN))));
}
END_TEST

/* Quantize then decode: the error per element is bounded by half a quantization step. */
static float
half_err(float x)
{
    return fabsf(kern_half_to_float(kern_float_to_half(x)) - x);
}

START_TEST(test_quantizers_stay_within_half_a_step)
{
    enum { N = 256 };
    float x[N], y[N];
    unsigned s = 7;
    for (int i = 0; i < N; i++)
        x[i] = frand(&s) * (i < 32 ? 0.001f : 3.0f); // one block of tiny values
    for (int t = 0; t < N_SUPPORTED; t++) {
        const kern_type_traits *tr = kern_type(supported[t]);
        void *q = malloc(kern_row_size(supported[t], N));
        tr->from_float(x, q, N);
        tr->to_float(q, y, N);
        for (int b = 0; b < N / 32; b++) {
            float lo = x[b * 32], hi = x[b * 32], amax = 0;
            for (int j = 0; j < 32; j++) {
                lo = fminf(lo, x[b * 32 + j]);
                hi = fmaxf(hi, x[b * 32 + j]);
                amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            }
            float step;
            switch (supported[t]) {
            case LLM_DTYPE_Q8_0: step = amax / 127; break;
            case LLM_DTYPE_Q4_0: step = amax / 8; break;
            case LLM_DTYPE_Q4_1: step = (hi - lo) / 15; break;
            case LLM_DTYPE_F16: step = amax * ldexpf(1, -10); break;
            case LLM_DTYPE_BF16: step = amax * ldexpf(1, -7); break;
            default: step = 0; break;
            }
            // Half a step, plus what storing the scale (and Q4_1's minimum) in half
            // precision costs: up to |q| times the scale's rounding error.
            float tol = step * 0.5f * 1.001f;
            if (supported[t] == LLM_DTYPE_Q4_0)
                tol = step * 1.001f; // -8..7: the side opposite the extreme clips at 7/8
            if (supported[t] == LLM_DTYPE_Q8_0 || supported[t] == LLM_DTYPE_Q4_0 ||
                supported[t] == LLM_DTYPE_Q4_1)
                tol += 127.0f * half_err(step) + half_err(lo) + 1e-9f;
            for (int j = 0; j < 32; j++)
                ck_assert_msg(fabsf(y[b * 32 + j] - x[b * 32 + j]) <= tol,
                              "%s block %d elem %d: %g vs %g (tol %g)", tr->name, b, j,
                              (double)y[b * 32 + j], (double)x[b * 32 + j], (double)tol);
        }
        free(q);
    }
}
END_TEST

/* Token counts 1, 3 and 7 and 33 rows take every tile shape: 4 or 1 rows by 1, 2 or 3
 * tokens. */
START_TEST(test_matmul_matches_reference_with_column_window)
{
    enum { COLS = 128, ROWS = 40, TOK = 7 };
    unsigned s = 3;
    float w[ROWS * COLS], x[TOK * 96], wd[COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        w[i] = frand(&s);
    for (int i = 0; i < TOK * 96; i++)
        x[i] = frand(&s);
    const int toks[] = {1, 3, 7};
    for (int t = 0; t < N_SUPPORTED; t++) {
        llm_dtype ty = supported[t];
        size_t rb = kern_row_size(ty, COLS);
        void *q = malloc(rb * ROWS);
        for (int r = 0; r < ROWS; r++)
            kern_type(ty)->from_float(w + r * COLS, (char *)q + r * rb, COLS);
        kern_mat m = {ty, q, COLS, ROWS, rb, false};
        for (int ti = 0; ti < 3; ti++) {
            int n_tok = toks[ti];
            float y[TOK * ROWS], scratch[KERN_MATMUL_SCRATCH(COLS)];
            // rows [5, 38), columns [32, 128): a tensor-parallel style slice
            // unpacked: float activations (packed matrices: test_kern_pack.c)
            kern_matmul(&m, 32, 96, x, 96, y, ROWS, n_tok, 5, 38, scratch);
            for (int r = 5; r < 38; r++) {
                kern_get_row(&m, r, wd);
                for (int k = 0; k < n_tok; k++) {
                    double ref = 0;
                    for (int c = 0; c < 96; c++)
                        ref += (double)wd[32 + c] * x[k * 96 + c];
                    ck_assert_msg(fabs(y[k * ROWS + r - 5] - ref) < 1e-4,
                                  "%s n_tok %d row %d tok %d: %g vs %g", kern_type_name(ty), n_tok,
                                  r, k, (double)y[k * ROWS + r - 5], ref);
                }
            }
        }
        free(q);
    }
}
END_TEST

/*
 * Batch invariance: every y[t][r] must be the same float, bit for bit, whatever the
 * number of tokens in the call, the token's place among them and the row range a
 * thread was given. The oracle is the one-token, one-row call. Every computable type,
 * widths from the real model (576, 1536), an odd F32 width (a tail of 4 after the last
 * 8), row splits that cut tiles anywhere (unpacked matrices; packed: test_kern_pack.c).
 */
START_TEST(test_matmul_is_batch_invariant_for_every_type)
{
    enum { ROWS = 11, TOKMAX = 10, NMAX = 1536 };
    static const llm_dtype all[] = {LLM_DTYPE_F32,  LLM_DTYPE_F16,  LLM_DTYPE_BF16, LLM_DTYPE_Q8_0,
                                    LLM_DTYPE_Q4_0, LLM_DTYPE_Q4_1, LLM_DTYPE_Q5_0, LLM_DTYPE_Q5_1,
                                    LLM_DTYPE_Q4_K, LLM_DTYPE_Q5_K, LLM_DTYPE_Q6_K, LLM_DTYPE_Q8_K};
    static const int64_t widths[] = {100, 96, 256, 576, 768, 1536};
    static float w[ROWS * NMAX], x[TOKMAX * NMAX], ref[TOKMAX * ROWS], y[TOKMAX * ROWS];
    static float scratch[KERN_MATMUL_SCRATCH(NMAX)];
    unsigned s = 41;
    for (int i = 0; i < ROWS * NMAX; i++)
        w[i] = frand(&s) * (1.0f + (float)(i % 7));
    for (int i = 0; i < TOKMAX * NMAX; i++)
        x[i] = frand(&s);
    // [0, ROWS) whole, then pieces that start and end inside every tile shape
    static const int64_t cuts[][5] = {{0, ROWS, -1}, {0, 3, 7, ROWS, -1}, {0, 1, 6, 10, ROWS}};
    int checked = 0;
    for (int ai = 0; ai < (int)(sizeof(all) / sizeof(all[0])); ai++) {
        llm_dtype ty = all[ai];
        const kern_type_traits *tr = kern_type(ty);
        for (size_t wi = 0; wi < sizeof(widths) / sizeof(widths[0]); wi++) {
            int64_t n = widths[wi];
            int64_t unit = tr->blck == 1 ? 1 : tr->blck > 32 ? tr->blck : 32;
            if (n % unit != 0)
                continue;
            size_t rb = kern_row_size(ty, n);
            char *q = malloc(rb * ROWS);
            ck_assert_ptr_nonnull(q);
            for (int r = 0; r < ROWS; r++)
                tr->from_float(w + r * n, q + r * rb, n);
            kern_mat m = {ty, q, n, ROWS, rb, false};
            for (int t = 0; t < TOKMAX; t++)
                for (int r = 0; r < ROWS; r++)
                    kern_matmul(&m, 0, n, x + t * n, n, ref + t * ROWS + r, 1, 1, r, r + 1,
                                scratch);
            for (int n_tok = 1; n_tok <= TOKMAX; n_tok++) {
                for (size_t ci = 0; ci < sizeof(cuts) / sizeof(cuts[0]); ci++) {
                    memset(y, 0xff, sizeof(y));
                    for (int k = 0; k < 4 && cuts[ci][k + 1] > 0; k++) {
                        int64_t a = cuts[ci][k], b = cuts[ci][k + 1];
                        kern_matmul(&m, 0, n, x, n, y + a, ROWS, n_tok, a, b, scratch);
                    }
                    for (int t = 0; t < n_tok; t++)
                        for (int r = 0; r < ROWS; r++)
                            ck_assert_msg(
                                memcmp(&y[t * ROWS + r], &ref[t * ROWS + r], sizeof(float)) == 0,
                                "%s n_in %d n_tok %d split %d tok %d row %d: %.9g vs "
                                "%.9g alone",
                                tr->name, (int)n, n_tok, (int)ci, t, r, (double)y[t * ROWS + r],
                                (double)ref[t * ROWS + r]);
                    checked++;
                }
            }
            free(q);
        }
    }
    // 3 float types x 6 widths, 5 32-block types x 5, 4 K-quants x 3
    ck_assert_int_eq(checked, (3 * 6 + 5 * 5 + 4 * 3) * TOKMAX * 3);
}
END_TEST

START_TEST(test_attention_scores_and_values_match_the_scalar_sums)
{
    enum { HD = 80, POS = 37, STRIDE = 200 };
    static float v[POS * STRIDE];
    float att[POS], out[HD], ref[HD];
    unsigned s = 9;
    for (int i = 0; i < POS * STRIDE; i++)
        v[i] = frand(&s);
    for (int p = 0; p < POS; p++)
        att[p] = (frand(&s) + 1.0f) / POS;
    const int n_pos[] = {1, 2, POS};
    // Scores: three queries against a block of keys stored transposed (key p's element
    // c at kt[c * KERN_KV_BLOCK + p]).
    static float kt[HD * KERN_KV_BLOCK];
    float qs[KERN_ATT_QUERIES][HD], sc[KERN_ATT_QUERIES][KERN_KV_BLOCK],
        sr[KERN_ATT_QUERIES][KERN_KV_BLOCK];
    for (int i = 0; i < HD * KERN_KV_BLOCK; i++)
        kt[i] = frand(&s);
    for (int i = 0; i < KERN_ATT_QUERIES; i++)
        for (int c = 0; c < HD; c++)
            qs[i][c] = frand(&s);
    float *a[] = {sc[0], sc[1], sc[2]}, *ar[] = {sr[0], sr[1], sr[2]};
    const float *qp[] = {qs[0], qs[1], qs[2]};
    for (int nq = 1; nq <= KERN_ATT_QUERIES; nq++) {
        kern_attn_scores(a, qp, nq, kt, false, HD, 0.5f);
        kern__attn_scores_scalar(ar, qp, nq, kt, false, HD, 0.5f);
        for (int i = 0; i < nq; i++)
            for (int p = 0; p < KERN_KV_BLOCK; p++) {
                double want = 0;
                for (int c = 0; c < HD; c++)
                    want += (double)qs[i][c] * kt[c * KERN_KV_BLOCK + p];
                ck_assert(fabs(sc[i][p] - 0.5 * want) < 1e-5 && fabs(sr[i][p] - 0.5 * want) < 1e-5);
            }
    }
    for (int i = 0; i < 3; i++) {
        // The values are added to what out holds.
        for (int c = 0; c < HD; c++)
            out[c] = ref[c] = (float)c / HD;
        kern_attn_values(out, att, v + 16, STRIDE, n_pos[i], HD);
        kern__attn_values_scalar(ref, att, v + 16, STRIDE, n_pos[i], HD);
        for (int c = 0; c < HD; c++) {
            double want = (double)c / HD;
            for (int p = 0; p < n_pos[i]; p++)
                want += (double)att[p] * v[16 + p * STRIDE + c];
            ck_assert(fabs(out[c] - want) < 1e-5 && fabs(ref[c] - want) < 1e-5);
        }
    }
}
END_TEST

/* The float16 cache's kernels: keys and values that are halves give the float kernels'
 * results (the same sums over the same widened values); the vector rounding to half is
 * kern_float_to_half's. A query's scores are the same floats whichever queries share
 * the call. */
START_TEST(test_half_cache_attention_matches_the_float_kernels)
{
    enum { HD = 64, NPOS = 21, STRIDE = 3 * HD, KT = HD * KERN_KV_BLOCK };
    static float q[KERN_ATT_QUERIES][HD], kf[KT], vf[NPOS * STRIDE], att[NPOS], o[HD], o16[HD];
    static float s32[KERN_ATT_QUERIES][KERN_KV_BLOCK], s16[KERN_ATT_QUERIES][KERN_KV_BLOCK],
        one[KERN_KV_BLOCK];
    static kern_half kh[KT], vh[NPOS * STRIDE], back[NPOS * STRIDE];
    unsigned s = 5;
    for (int i = 0; i < KERN_ATT_QUERIES; i++)
        for (int c = 0; c < HD; c++)
            q[i][c] = frand(&s);
    for (int i = 0; i < KT; i++)
        kf[i] = 3.0f * frand(&s);
    for (int i = 0; i < NPOS * STRIDE; i++)
        vf[i] = frand(&s);
    kern_f32_to_f16(kf, kh, KT);
    kern_f32_to_f16(vf, vh, NPOS * STRIDE);
    for (int i = 0; i < KT; i++) {
        ck_assert_uint_eq(kh[i], kern_float_to_half(kf[i]));
        kf[i] = kern_half_to_float(kh[i]); // the floats the half cache holds
    }
    for (int i = 0; i < NPOS * STRIDE; i++) {
        back[i] = kern_float_to_half(vf[i]);
        ck_assert_uint_eq(vh[i], back[i]);
        vf[i] = kern_half_to_float(vh[i]);
    }
    float *a32[] = {s32[0], s32[1], s32[2]}, *a16[] = {s16[0], s16[1], s16[2]};
    const float *qp[] = {q[0], q[1], q[2]};
    for (int nq = 1; nq <= KERN_ATT_QUERIES; nq++) {
        kern_attn_scores(a32, qp, nq, kf, false, HD, 0.125f);
        kern_attn_scores(a16, qp, nq, kh, true, HD, 0.125f);
        for (int i = 0; i < nq; i++) {
            ck_assert_msg(memcmp(s32[i], s16[i], sizeof(s32[i])) == 0,
                          "%d queries, query %d: half and float scores differ", nq, i);
            kern_attn_scores((float *const[]){one}, &qp[i], 1, kh, true, HD, 0.125f);
            ck_assert_msg(memcmp(one, s16[i], sizeof(one)) == 0,
                          "%d queries, query %d: alone and with others differ", nq, i);
        }
    }
    for (int n = 1; n <= NPOS; n++) {
        for (int p = 0; p < n; p++)
            att[p] = frand(&s) + 1.5f;
        kern_softmax(att, n);
        memset(o, 0, sizeof(o));
        memset(o16, 0, sizeof(o16));
        kern_attn_values(o, att, vf, STRIDE, n, HD);
        kern_attn_values_f16(o16, att, vh, STRIDE, n, HD);
        for (int c = 0; c < HD; c++)
            ck_assert_msg(fabsf(o[c] - o16[c]) <= 1e-6f * (1.0f + fabsf(o[c])),
                          "n %d value %d: %g vs %g", n, c, (double)o[c], (double)o16[c]);
    }
}
END_TEST

START_TEST(test_simd_dot_matches_scalar_at_every_length)
{
    float a[1100], b[1100];
    unsigned s = 11;
    for (int i = 0; i < 1100; i++) {
        a[i] = frand(&s);
        b[i] = frand(&s);
    }
    const int64_t lens[] = {0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 1000, 1099};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        double ref = 0;
        for (int64_t k = 0; k < lens[i]; k++)
            ref += (double)a[k] * b[k];
        ck_assert(fabs(kern__dot_f32_scalar(a, b, lens[i]) - ref) < 1e-3);
        ck_assert(fabs(kern_dot_f32(a, b, lens[i]) - ref) < 1e-3);
#if defined(LLM_KERN_HAVE_AVX2)
        if (kern__cpu_has_avx2())
            ck_assert(fabs(kern__dot_f32_avx2(a, b, lens[i]) - ref) < 1e-3);
#endif
    }
}
END_TEST

/* One token through kern_matmul (whatever this CPU selected) against the reference
 * definition of a row dot. */
START_TEST(test_one_token_matmul_matches_the_reference_row_dot)
{
    enum { N = 576 };
    float w[N], x[N];
    unsigned s = 21;
    for (int i = 0; i < N; i++) {
        w[i] = frand(&s) * 2.0f;
        x[i] = frand(&s);
    }
    for (int t = 0; t < N_SUPPORTED; t++) {
        llm_dtype ty = supported[t];
        void *q = malloc(kern_row_size(ty, N));
        kern_type(ty)->from_float(w, q, N);
        float ref = kern__row_dot_ref(ty, q, x, N);
        kern_mat m = {ty, q, N, 1, kern_row_size(ty, N), false};
        float y, scratch[KERN_MATMUL_SCRATCH(N)];
        kern_matmul(&m, 0, N, x, N, &y, 1, 1, 0, 1, scratch);
        ck_assert_msg(fabsf(y - ref) <= 1e-4f * (1 + fabsf(ref)), "%s: %g vs %g",
                      kern_type_name(ty), (double)y, (double)ref);
        free(q);
    }
}
END_TEST

/* The decoders kern_matmul uses on this CPU against the traits' scalar ones (an FMA may
 * round the last bit differently from a multiply then add); under LLM_SIMD=scalar they
 * must be the scalar ones. */
START_TEST(test_selected_decoders_match_the_scalar_ones)
{
    enum { N = 512 };
    static const llm_dtype all[] = {LLM_DTYPE_F32,  LLM_DTYPE_F16,  LLM_DTYPE_BF16, LLM_DTYPE_Q8_0,
                                    LLM_DTYPE_Q4_0, LLM_DTYPE_Q4_1, LLM_DTYPE_Q5_0, LLM_DTYPE_Q5_1,
                                    LLM_DTYPE_Q4_K, LLM_DTYPE_Q5_K, LLM_DTYPE_Q6_K, LLM_DTYPE_Q8_K};
    float w[N], a[N], b[N];
    unsigned s = 5;
    for (int i = 0; i < N; i++)
        w[i] = frand(&s) * 4.0f;
    bool simd = strcmp(kern_simd_name(), "scalar") != 0;
    for (size_t c = 0; c < sizeof(all) / sizeof(all[0]); c++) {
        const kern_type_traits *tr = kern_type(all[c]);
        kern_to_float_fn dec = kern__decoder(all[c]);
        ck_assert_ptr_nonnull(dec);
        if (!simd)
            ck_assert_ptr_eq(dec, tr->to_float);
        else if (all[c] != LLM_DTYPE_F32)
            ck_assert_ptr_ne(dec, tr->to_float); // every type has its SIMD decoder
        void *q = malloc(kern_row_size(all[c], N));
        tr->from_float(w, q, N);
        tr->to_float(q, a, N);
        dec(q, b, N);
        for (int i = 0; i < N; i++)
            ck_assert_msg(fabsf(a[i] - b[i]) <= 1e-6f * fmaxf(1.0f, fabsf(a[i])), "%s elem %d",
                          tr->name, i);
        free(q);
    }
    ck_assert_ptr_null(kern__decoder((llm_dtype)99));
}
END_TEST

START_TEST(test_rmsnorm_softmax_rope_swiglu)
{
    float x[8] = {1, -2, 3, -4, 5, -6, 7, -8}, w[8], out[8];
    for (int i = 0; i < 8; i++)
        w[i] = 1.0f + i;
    kern_rmsnorm(out, x, w, 8, 0.0f);
    double ms = 0;
    for (int i = 0; i < 8; i++)
        ms += x[i] * x[i] / 8.0;
    for (int i = 0; i < 8; i++)
        ck_assert(fabs(out[i] - x[i] / sqrt(ms) * w[i]) < 1e-5);

    float p[5] = {1000, 1001, 999, -1e30f, 1000};
    kern_softmax(p, 5);
    double sum = 0;
    for (int i = 0; i < 5; i++)
        sum += p[i];
    ck_assert(fabs(sum - 1.0) < 1e-6);
    ck_assert(p[1] > p[0] && p[3] == 0.0f);

    // RoPE: position 0 is the identity; any position preserves each pair's norm, and
    // pair i of a head turns by pos * theta^(-2i/d).
    float h[8] = {1, 2, 3, 4, 5, 6, 7, 8}, h0[8];
    memcpy(h0, h, sizeof(h));
    kern_rope(h, 2, 4, 0, 10000.0f);
    ck_assert(memcmp(h, h0, sizeof(h)) == 0);
    float h2[8], cs[4];
    memcpy(h2, h, sizeof(h));
    kern_rope(h, 2, 4, 3, 10000.0f);
    kern_rope_table(cs, 4, 3, 10000.0f);
    kern_rope_apply(h2, 2, 4, cs);
    ck_assert(memcmp(h, h2, sizeof(h)) == 0);
    ck_assert(fabs(h[0] - (cos(3.0) * 1 - sin(3.0) * 2)) < 1e-5);
    double ang = 3.0 * pow(10000.0, -0.5);
    ck_assert(fabs(h[7] - (sin(ang) * 7 + cos(ang) * 8)) < 1e-5);

    float g[3] = {0, 1, -1}, u[3] = {2, 2, 2};
    kern_swiglu(g, u, 3);
    ck_assert(fabs(g[0]) < 1e-7);
    ck_assert(fabs(g[1] - 2.0 / (1 + exp(-1.0))) < 1e-6);
    ck_assert(fabs(g[2] - (-2.0) / (1 + exp(1.0))) < 1e-6);

    // Longer arrays (vector body and tail), against double precision: softmax of scores
    // spanning the exp range, SwiGLU of gates from -100 to 100.
    enum { N = 203 };
    static float sc[N], gg[N], uu[N], g0[N];
    for (int i = 0; i < N; i++) {
        sc[i] = -100.0f + 0.5f * (float)i;
        gg[i] = g0[i] = -100.0f + (float)i;
        uu[i] = 0.5f + 0.01f * (float)i;
    }
    double z = 0;
    for (int i = 0; i < N; i++)
        z += exp((double)sc[i] - sc[N - 1]);
    kern_softmax(sc, N);
    for (int i = 0; i < N; i++) {
        double want = exp(0.5 * (i - (N - 1))) / z; // scores are 0.5 apart, the last the max
        ck_assert_msg(fabs(sc[i] - want) <= 1e-6 * want + 1e-30, "softmax[%d] %g vs %g", i,
                      (double)sc[i], want);
    }
    kern_swiglu(gg, uu, N);
    for (int i = 0; i < N; i++) {
        double want = (double)g0[i] / (1.0 + exp(-(double)g0[i])) * uu[i];
        ck_assert_msg(fabs(gg[i] - want) <= 1e-6 * fabs(want) + 1e-30, "swiglu[%d] %g vs %g", i,
                      (double)gg[i], want);
    }
}
END_TEST

#if defined(LLM_KERN_HAVE_AVX2)
/* The vector exp against double precision over the whole float range it serves. */
START_TEST(test_vector_exp_is_within_two_ulp)
{
    if (!kern__cpu_has_avx2())
        return;
    enum { N = 20001 };
    static float x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = -87.0f + 175.0f * (float)i / (N - 1);
    kern__exp_avx2(x, y, N);
    for (int i = 0; i < N; i++) {
        double want = exp((double)x[i]);
        ck_assert_msg(fabs(y[i] - want) <= 2.5 * 1.1920929e-7 * want, "exp(%.9g) = %.9g vs %.9g",
                      (double)x[i], (double)y[i], want);
    }
    float lo[3] = {-87.5f, -1e30f, -INFINITY}, out[3];
    kern__exp_avx2(lo, out, 3);
    ck_assert(out[0] == 0.0f && out[1] == 0.0f && out[2] == 0.0f);
}
END_TEST
#endif

/* kern_read_sum (the bandwidth probe): the wrapping sum of the words, every tail length,
 * on this CPU's path and, where it has AVX2, that path directly. */
START_TEST(test_read_sum_is_the_wrapping_sum)
{
    enum { N = 300 };
    static uint64_t w[N];
    uint64_t x = 99;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = x; // large: the sum wraps
    }
    for (int off = 0; off < 3; off++)
        for (int n = 0; n + off <= N; n += n < 40 ? 1 : 37) {
            uint64_t want = 0;
            for (int i = 0; i < n; i++)
                want += w[off + i];
            ck_assert_msg(kern_read_sum(w + off, n) == want, "n %d off %d", n, off);
#if defined(LLM_KERN_HAVE_AVX2)
            if (kern__cpu_has_avx2())
                ck_assert(kern__read_sum_avx2(w + off, n) == want);
#endif
        }
}
END_TEST

/* The sampler's vector passes: kern_exp_scaled is kern_exp of the scaled floats, bit
 * for bit; kern_argmax, kern_select_ge and kern_weight_sum give the plain loops' answers, NaNs,
 * ties, signed zeros and every tail length included (unit_kern_scalar runs them scalar). */
START_TEST(test_sampler_passes_match_the_plain_loops)
{
    enum { N = 1000 };
    static float x[N], z[N], y[N], w[N];
    static int32_t idx[N];
    unsigned s = 77;
    for (int i = 0; i < N; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = (float)((s >> 8) & 0xffff) / 2048.0f - 16.0f;
    }
    for (int n = 1; n <= N; n += n < 40 ? 1 : 97) {
        float shift = 3.25f, scale = 1.0f / 0.7f;
        for (int i = 0; i < n; i++)
            z[i] = (x[i] - shift) * scale;
        kern_exp(z, y, n);
        kern_exp_scaled(x, shift, scale, w, n);
        ck_assert_msg(memcmp(y, w, sizeof(float) * (size_t)n) == 0, "exp_scaled n %d", n);
        for (int variant = 0; variant < 6; variant++) {
            memcpy(z, x, sizeof(float) * (size_t)n);
            if (variant == 1) // ties: the first of them wins
                z[n / 3] = z[n - 1] = 100.0f;
            if (variant == 2) // a NaN first, then one inside
                z[0] = NAN, z[n / 2] = NAN;
            if (variant == 3) // all zeros, signed: the first wins
                for (int i = 0; i < n; i++)
                    z[i] = i % 2 ? 0.0f : -0.0f;
            if (variant == 4) // a NaN late, the maximum before it
                z[n - 1] = NAN, z[n / 4] = 50.0f;
            if (variant == 5) // nothing but NaNs
                for (int i = 0; i < n; i++)
                    z[i] = NAN;
            int64_t want = -1, m = 0; // the first of the largest numbers (0: all NaN)
            for (int i = 0; i < n; i++)
                if (!isnan(z[i]) && (want < 0 || z[i] > z[want]))
                    want = i;
            want = want < 0 ? 0 : want;
            ck_assert_msg(kern_argmax(z, n) == want, "argmax n %d variant %d: %lld vs %lld", n,
                          variant, (long long)kern_argmax(z, n), (long long)want);
            float thr = variant == 3 ? 0.0f : z[n / 2] == z[n / 2] ? z[n / 2] : 1.0f;
            int64_t got = kern_select_ge(z, n, thr, idx);
            for (int i = 0; i < n; i++)
                if (z[i] >= thr) {
                    ck_assert_msg(m < got && idx[m] == i, "select n %d variant %d at %d", n,
                                  variant, i);
                    m++;
                }
            ck_assert_int_eq(m, got);
            // weights: z's own values (negatives, NaNs, zeros) and, scaled up, ones past 2^31
            for (int k = 0; k < 3; k++) {
                float wscale = k == 0 ? 0x1p20f : k == 1 ? 0x1p27f : 1.0f;
                uint64_t want_w = 0;
                for (int i = 0; i < n; i++) {
                    float v = z[i] * wscale;
                    if (v >= 1.0f && v < 0x1p31f)
                        want_w += (uint64_t)v;
                }
                ck_assert_msg(kern_weight_sum(z, n, wscale) == want_w, "weight_sum n %d variant %d",
                              n, variant);
            }
        }
    }
}
END_TEST

Suite *kern_suite(void);

Suite *
kern_suite(void)
{
    Suite *s = suite_create("kern");
    TCase *tc = tcase_create("types");
    tcase_add_test(tc, test_traits_name_known_types_and_reject_others);
    tcase_add_test(tc, test_half_round_trips_every_value);
    tcase_add_test(tc, test_half_rounds_to_nearest_even);
    tcase_add_test(tc, test_quantizers_stay_within_half_a_step);
    suite_add_tcase(s, tc);
    tc = tcase_create("ops");
    tcase_add_test(tc, test_matmul_matches_reference_with_column_window);
    tcase_add_test(tc, test_matmul_is_batch_invariant_for_every_type);
    tcase_add_test(tc, test_simd_dot_matches_scalar_at_every_length);
    tcase_add_test(tc, test_half_cache_attention_matches_the_float_kernels);
    tcase_add_test(tc, test_one_token_matmul_matches_the_reference_row_dot);
    tcase_add_test(tc, test_selected_decoders_match_the_scalar_ones);
    tcase_add_test(tc, test_attention_scores_and_values_match_the_scalar_sums);
    tcase_add_test(tc, test_rmsnorm_softmax_rope_swiglu);
    tcase_add_test(tc, test_sampler_passes_match_the_plain_loops);
    tcase_add_test(tc, test_read_sum_is_the_wrapping_sum);
#if defined(LLM_KERN_HAVE_AVX2)
    tcase_add_test(tc, test_vector_exp_is_within_two_ulp);
#endif
    suite_add_tcase(s, tc);
    return s;
}
