/*
 * test_kern_pack.c - packed matrices and 16-bit activations: packing is an exact
 * permutation, the quantizers agree, the SIMD GEMM equals the scalar definition bit for
 * bit, results are batch and split invariant and stay near the float path.
 */
#include "kern.h"
#include "kern_internal.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const llm_dtype packable[] = {LLM_DTYPE_Q4_0, LLM_DTYPE_Q4_1, LLM_DTYPE_Q5_0,
                                     LLM_DTYPE_Q5_1, LLM_DTYPE_Q8_0, LLM_DTYPE_Q4_K,
                                     LLM_DTYPE_Q5_K, LLM_DTYPE_Q6_K};
#define N_PACKABLE 8

static float
frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* A quantized [rows][cols] matrix of type ty from pseudo-random floats. */
static kern_mat
make_mat(llm_dtype ty, int64_t rows, int64_t cols, unsigned seed)
{
    size_t rb = kern_row_size(ty, cols);
    char *q = malloc(rb * (size_t)rows);
    float *w = malloc(sizeof(float) * (size_t)cols);
    ck_assert(q && w);
    unsigned s = seed;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++)
            w[c] = frand(&s) * (1.0f + (float)((r + c) % 5));
        kern_type(ty)->from_float(w, q + (size_t)r * rb, cols);
    }
    free(w);
    kern_mat m = {ty, q, cols, rows, rb, false};
    return m;
}

static kern_mat
packed_copy(const kern_mat *m)
{
    kern_mat p;
    void *buf = malloc(kern_pack_bytes(m->type, m->n_rows, m->n_cols));
    ck_assert_ptr_nonnull(buf);
    kern_pack(m, buf, &p);
    return p;
}

START_TEST(test_packing_is_an_exact_permutation)
{
    ck_assert(kern_pack_supported(LLM_DTYPE_Q4_1, 16, 64));
    ck_assert(!kern_pack_supported(LLM_DTYPE_Q4_1, 12, 64)); // rows not a multiple of 8
    ck_assert(kern_pack_supported(LLM_DTYPE_Q4_K, 16, 256));
    ck_assert(!kern_pack_supported(LLM_DTYPE_Q4_K, 16, 288)); // not whole super-blocks
    ck_assert(!kern_pack_supported(LLM_DTYPE_Q8_K, 16, 256));
    ck_assert(!kern_pack_supported(LLM_DTYPE_F16, 16, 64));
    for (int ti = 0; ti < N_PACKABLE; ti++) {
        llm_dtype ty = packable[ti];
        int cols = 3 * kern_type(ty)->blck; // three chunks a row
        kern_mat m = make_mat(ty, 24, cols, 5 + (unsigned)ti);
        // Raw random bytes too: every nibble and byte value, hostile scales included.
        unsigned s = 99;
        for (size_t i = 0; i < m.row_bytes * 8; i++)
            ((unsigned char *)m.data)[i] = (unsigned char)(frand(&s) * 128.0f + 128.0f);
        ck_assert_uint_eq(kern_pack_bytes(ty, 24, cols), m.row_bytes * 24);
        kern_mat p = packed_copy(&m);
        ck_assert(p.packed && p.n_rows == 24 && p.n_cols == cols && p.type == ty);
        size_t chunk = 8 * kern_type(ty)->size, bsz = kern_type(ty)->size;
        float a[768], b[768];
        for (int r = 0; r < 24; r++) {
            for (int blk = 0; blk < 3; blk++) {
                unsigned char out[sizeof(blk_q6_k)];
                kern_pack_unpack_block(ty, (const char *)p.data + (size_t)(r / 8 * 3 + blk) * chunk,
                                       r % 8, out);
                ck_assert_msg(
                    memcmp(out, (const char *)m.data + r * m.row_bytes + blk * bsz, bsz) == 0,
                    "%s row %d block %d", kern_type_name(ty), r, blk);
            }
            kern_get_row(&m, r, a);
            kern_get_row(&p, r, b);
            ck_assert(memcmp(a, b, sizeof(float) * (size_t)cols) == 0);
        }
        free((void *)m.data);
        free((void *)p.data);
    }
}
END_TEST

/* The AVX2 quantizer writes the scalar one's bytes; each element is within half a step;
 * s = d * sum(q); non-finite inputs are clamped, never undefined. */
START_TEST(test_i16_quantizers_agree_and_round_to_nearest)
{
    enum { N = 1536 };
    static float x[N];
    static char a[KERN__I16X_BYTES(N)], b[KERN__I16X_BYTES(N)];
    unsigned s = 77;
    for (int i = 0; i < N; i++)
        x[i] = frand(&s) * (1.0f + (float)(i % 97)) * (i / 32 == 5 ? 0.0f : 1.0f);
    x[40] = 1e-30f;
    x[64] = -3000.0f;
    kern__quantize_i16_scalar(x, N, a);
    kern__i16x q = kern__i16x_at(a, N);
    for (int k = 0; k < N / 32; k++) {
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            float xj = x[32 * k + j];
            ck_assert(fabsf(xj - q.d[k] * q.qs[32 * k + j]) <= 0.5f * q.d[k] * 1.0001f);
            ck_assert(q.qs[32 * k + j] >= -32767 && q.qs[32 * k + j] <= 32767);
            sum += q.qs[32 * k + j];
        }
        ck_assert(q.s[k] == q.d[k] * (float)sum);
        ck_assert(k != 5 || (q.d[k] == 0.0f && q.s[k] == 0.0f));
    }
#if defined(LLM_KERN_HAVE_AVX2)
    if (kern__cpu_has_avx2()) {
        kern__quantize_i16_avx2(x, N, b);
        ck_assert(memcmp(a, b, sizeof(a)) == 0);
        x[100] = NAN;
        x[300] = INFINITY;
        kern__quantize_i16_avx2(x, N, b);
        kern__quantize_i16_scalar(x, N, a); // must not trap (UBSan) or write out of range
        for (int i = 0; i < N; i++)
            ck_assert(q.qs[i] >= -32767 && q.qs[i] <= 32767);
    }
#endif
    (void)b;
}
END_TEST

/*
 * This CPU's packed GEMM against the scalar definition, bit for bit, for each type,
 * width, token count (tiles of 4 and every remainder) and column window; and against a
 * double-precision dot of the decoded weights with the float activations, within the
 * bound 16-bit activation rounding allows (sum over blocks of sum |w| * d_x / 2).
 */
START_TEST(test_packed_gemm_matches_its_definition_and_stays_near_float)
{
    enum { ROWS = 16, TOK = 7, NMAX = 1536 };
    static float x[TOK * NMAX], wd[NMAX], y[TOK * ROWS], yr[TOK * ROWS];
    static char xa[TOK * KERN__I16X_BYTES(NMAX)];
    static const int64_t widths[] = {32, 576, 1536}, widths_k[] = {256, 512, 1536};
    unsigned s = 13;
    for (int i = 0; i < TOK * NMAX; i++)
        x[i] = frand(&s) * (i % 64 == 3 ? 20.0f : 1.0f); // outliers, as activations have
    for (int ti = 0; ti < N_PACKABLE; ti++)
        for (int wi = 0; wi < 3; wi++) {
            llm_dtype ty = packable[ti];
            int64_t u = kern_type(ty)->blck, n = u == 32 ? widths[wi] : widths_k[wi];
            kern_mat m = make_mat(ty, ROWS, n, 17 + (unsigned)wi);
            kern_mat p = packed_copy(&m);
            size_t xb = KERN__I16X_BYTES(n), group = (size_t)(n / u) * 8 * kern_type(ty)->size;
            for (int t = 0; t < TOK; t++)
                kern__quantize_i16_scalar(x + t * n, n, xa + t * xb);
            for (int nt = 1; nt <= TOK; nt++) {
                kern__p8_gemm_scalar(ty, p.data, group, ROWS / 8, xa, n, nt, yr, ROWS);
                float scratch[KERN_MATMUL_SCRATCH(NMAX)];
                kern_matmul(&p, 0, n, x, n, y, ROWS, nt, 0, ROWS, scratch);
                ck_assert_msg(memcmp(y, yr, sizeof(float) * (size_t)nt * ROWS) == 0,
                              "%s n %d n_tok %d", kern_type_name(ty), (int)n, nt);
            }
            for (int r = 0; r < ROWS; r++) {
                kern_get_row(&m, r, wd);
                for (int t = 0; t < TOK; t++) {
                    kern__i16x q = kern__i16x_at(xa + t * xb, n);
                    double ref = 0, bound = 0, mag = 0;
                    for (int64_t k = 0; k < n / 32; k++)
                        for (int j = 0; j < 32; j++) {
                            ref += (double)wd[32 * k + j] * x[t * n + 32 * k + j];
                            mag += fabs((double)wd[32 * k + j] * x[t * n + 32 * k + j]);
                            bound += fabs((double)wd[32 * k + j]) * q.d[k] * 0.5;
                        }
                    ck_assert_msg(fabs(yr[t * ROWS + r] - ref) <= bound * 1.001 + 2e-6 * mag,
                                  "%s n %d row %d tok %d: %g vs %g", kern_type_name(ty), (int)n, r,
                                  t, (double)yr[t * ROWS + r], ref);
                }
            }
            // A column window (a tensor-parallel rank's slice) is the same computation
            // on the window's blocks: from the third chunk, all but three chunks.
            if (n >= 576 && n >= 4 * u) {
                float scratch[KERN_MATMUL_SCRATCH(NMAX)];
                kern_matmul(&p, 2 * u, n - 3 * u, x + 2 * u, n, y, ROWS, 3, 0, ROWS, scratch);
                for (int t = 0; t < 3; t++)
                    kern__quantize_i16_scalar(x + t * n + 2 * u, n - 3 * u,
                                              xa + t * KERN__I16X_BYTES(n - 3 * u));
                kern__p8_gemm_scalar(ty, (const char *)p.data + 2 * 8 * kern_type(ty)->size, group,
                                     ROWS / 8, xa, n - 3 * u, 3, yr, ROWS);
                ck_assert(memcmp(y, yr, sizeof(float) * 3 * ROWS) == 0);
            }
            free((void *)m.data);
            free((void *)p.data);
        }
}
END_TEST

/* Batch and split invariance: every y[t][r] is the same float whatever the token count,
 * the token's place and the row range (ranges that cut 8-row groups anywhere). */
START_TEST(test_packed_matmul_is_batch_and_split_invariant)
{
    enum { ROWS = 40, TOKMAX = 10, N = 768 }; // whole Q4_K super-blocks
    static float x[TOKMAX * N], ref[TOKMAX * ROWS], y[TOKMAX * ROWS];
    static float scratch[KERN_MATMUL_SCRATCH(N)];
    static const int64_t cuts[][5] = {{0, ROWS, -1}, {0, 3, 13, ROWS, -1}, {0, 16, 21, 32, ROWS}};
    unsigned s = 3;
    for (int i = 0; i < TOKMAX * N; i++)
        x[i] = frand(&s);
    for (int ti = 0; ti < N_PACKABLE; ti++) {
        kern_mat m = make_mat(packable[ti], ROWS, N, 23);
        kern_mat p = packed_copy(&m);
        for (int t = 0; t < TOKMAX; t++)
            for (int r = 0; r < ROWS; r++)
                kern_matmul(&p, 0, N, x + t * N, N, ref + t * ROWS + r, 1, 1, r, r + 1, scratch);
        for (int n_tok = 1; n_tok <= TOKMAX; n_tok++)
            for (size_t ci = 0; ci < sizeof(cuts) / sizeof(cuts[0]); ci++) {
                memset(y, 0xff, sizeof(y));
                for (int k = 0; k < 4 && cuts[ci][k + 1] > 0; k++) {
                    int64_t a = cuts[ci][k], b = cuts[ci][k + 1];
                    kern_matmul(&p, 0, N, x, N, y + a, ROWS, n_tok, a, b, scratch);
                }
                for (int t = 0; t < n_tok; t++)
                    for (int r = 0; r < ROWS; r++)
                        ck_assert_msg(memcmp(&y[t * ROWS + r], &ref[t * ROWS + r], 4) == 0,
                                      "%s n_tok %d split %d tok %d row %d",
                                      kern_type_name(packable[ti]), n_tok, (int)ci, t, r);
            }
        free((void *)m.data);
        free((void *)p.data);
    }
}
END_TEST

/* kern_matmul_act gives kern_matmul's floats, bit for bit: one input quantized once and
 * used for several matrices (packed or not) and row ranges cutting 8-row groups, more
 * tokens than kern_matmul's scratch holds at a time, and a column window. */
START_TEST(test_matmul_act_equals_matmul)
{
    enum { ROWS = 40, TOK = 64, N = 768, COL0 = 256, NIN = 512 }; // Q4_K: 256-blocks
    static float x[TOK * NIN], ref[TOK * ROWS], y[TOK * ROWS];
    static float scratch[KERN_MATMUL_SCRATCH(NIN)];
    static float buf[KERN_ACT_BYTES(NIN, TOK) / sizeof(float) + 1];
    static const int64_t cuts[] = {0, 3, 13, 32, 37, ROWS};
    const llm_dtype types[] = {LLM_DTYPE_Q4_0, LLM_DTYPE_Q4_1, LLM_DTYPE_Q8_0,
                               LLM_DTYPE_Q4_K, LLM_DTYPE_Q6_K, LLM_DTYPE_F16}; // F16: not packed
    unsigned s = 9;
    for (int i = 0; i < TOK * NIN; i++)
        x[i] = frand(&s);
    for (int n_tok = 1; n_tok <= TOK; n_tok += 21) {
        kern_act a;
        kern_act_init(&a, x, NIN, NIN, n_tok, buf);
        for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
            kern_mat m = make_mat(types[ti], ROWS, N, 31 + (unsigned)ti);
            kern_mat p = kern_pack_supported(m.type, ROWS, N) ? packed_copy(&m) : m;
            kern_matmul(&p, COL0, NIN, x, NIN, ref, ROWS, n_tok, 0, ROWS, scratch);
            memset(y, 0xff, sizeof(y));
            for (size_t k = 0; k + 1 < sizeof(cuts) / sizeof(cuts[0]); k++)
                kern_matmul_act(&p, COL0, &a, y + cuts[k], ROWS, cuts[k], cuts[k + 1], scratch);
            ck_assert_msg(memcmp(y, ref, sizeof(float) * (size_t)n_tok * ROWS) == 0, "%s n_tok %d",
                          kern_type_name(types[ti]), n_tok);
            if (p.data != m.data)
                free((void *)p.data);
            free((void *)m.data);
        }
    }
}
END_TEST

Suite *kern_pack_suite(void);

Suite *
kern_pack_suite(void)
{
    Suite *s = suite_create("kern_pack");
    TCase *tc = tcase_create("pack");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_packing_is_an_exact_permutation);
    tcase_add_test(tc, test_i16_quantizers_agree_and_round_to_nearest);
    tcase_add_test(tc, test_packed_gemm_matches_its_definition_and_stays_near_float);
    tcase_add_test(tc, test_packed_matmul_is_batch_and_split_invariant);
    tcase_add_test(tc, test_matmul_act_equals_matmul);
    suite_add_tcase(s, tc);
    return s;
}
