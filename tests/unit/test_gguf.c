/*
 * test_gguf.c - the GGUF reader and writer: round trip, typed getters, and every
 * truncation and a sweep of byte corruptions of a real file (must never crash).
 */
#include "gguf.h"
#include "gguf_write.h"
#include "llm_err.h"
#include "test_helpers.h"

#include <check.h>

static gguf_file *
write_and_open(gguf_writer *w, char *path, size_t n)
{
    test_tmp_path(path, n, "w.gguf");
    ck_assert_int_eq(gguf_writer_write(w, path), LLM_OK);
    gguf_file *f = NULL;
    char err[256];
    ck_assert_msg(gguf_open(path, NULL, &f, err, sizeof(err)) == LLM_OK, "%s", err);
    return f;
}

START_TEST(test_writer_round_trips_metadata_and_tensors)
{
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_new(&w), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_u32(w, "a.u32", 7), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_i32(w, "a.neg", -5), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_f32(w, "a.f", 2.5f), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_bool(w, "a.b", true), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_str(w, "a.s", "hello"), LLM_OK);
    const char *strs[] = {"x", "", "z\xc3\xa9"};
    ck_assert_int_eq(gguf_writer_set_arr_str(w, "a.strs", strs, NULL, 3), LLM_OK);
    int32_t ints[] = {1, -2, 3};
    ck_assert_int_eq(gguf_writer_set_arr_i32(w, "a.ints", ints, 3), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_u32(w, "a.u32", 8), LLM_EINVAL); // duplicate
    float data[64];
    for (int i = 0; i < 64; i++)
        data[i] = (float)i;
    int64_t ne[2] = {32, 2};
    ck_assert_int_eq(gguf_writer_add_tensor(w, "t", LLM_DTYPE_F32, 2, ne, data, sizeof(data)),
                     LLM_OK);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "bad", LLM_DTYPE_F32, 2, ne, data, 8), LLM_EINVAL);
    char path[256];
    gguf_file *f = write_and_open(w, path, sizeof(path));
    gguf_writer_free(w);

    uint32_t u;
    int64_t i64;
    float fl;
    bool b;
    gguf_str s;
    ck_assert_int_eq(gguf_get_u32(f, "a.u32", &u), LLM_OK);
    ck_assert_uint_eq(u, 7);
    ck_assert_int_eq(gguf_get_u32(f, "a.neg", &u), LLM_EINVAL); // negative does not fit
    ck_assert_int_eq(gguf_get_i64(f, "a.neg", &i64), LLM_OK);
    ck_assert_int_eq(i64, -5);
    ck_assert_int_eq(gguf_get_f32(f, "a.f", &fl), LLM_OK);
    ck_assert(fl == 2.5f);
    ck_assert_int_eq(gguf_get_f32(f, "a.s", &fl), LLM_EINVAL);
    ck_assert_int_eq(gguf_get_bool(f, "a.b", &b), LLM_OK);
    ck_assert(b);
    ck_assert_int_eq(gguf_get_str(f, "a.s", &s), LLM_OK);
    ck_assert(gguf_str_eq(s, "hello"));
    ck_assert_int_eq(gguf_get_str(f, "missing", &s), LLM_ENOENT);
    ck_assert_int_eq(gguf_get_arr_str(f, "a.strs", 2, &s), LLM_OK);
    ck_assert(gguf_str_eq(s, "z\xc3\xa9"));
    ck_assert_int_eq(gguf_get_arr_str(f, "a.strs", 1, &s), LLM_OK);
    ck_assert_uint_eq(s.len, 0);
    ck_assert_int_eq(gguf_get_arr_str(f, "a.strs", 3, &s), LLM_ERANGE);
    int32_t back[3];
    ck_assert_int_eq(gguf_get_arr_i32(f, "a.ints", back, 3), LLM_OK);
    ck_assert_int_eq(back[1], -2);
    ck_assert_int_eq(gguf_get_arr_i32(f, "a.strs", back, 3), LLM_EINVAL);
    ck_assert_int_eq(gguf_get_arr_i32(f, "a.ints", back, 4), LLM_ERANGE);

    ck_assert_uint_eq(gguf_tensor_count(f), 1);
    const gguf_tensor *t = gguf_find_tensor(f, "t");
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_null(gguf_find_tensor(f, "nope"));
    ck_assert_int_eq(t->ne[0], 32);
    ck_assert_int_eq(t->ne[1], 2);
    ck_assert_uint_eq((uintptr_t)t->data % 32, 0);
    ck_assert(memcmp(t->data, data, sizeof(data)) == 0);
    gguf_close(f);
    unlink(path);
}
END_TEST

START_TEST(test_open_reports_missing_and_tiny_files)
{
    gguf_file *f = NULL;
    char err[256] = "";
    ck_assert_int_eq(gguf_open("/nonexistent/x.gguf", NULL, &f, err, sizeof(err)), LLM_EIO);
    ck_assert(strstr(err, "cannot open") != NULL);
    ck_assert_int_eq(gguf_open_memory("GGUF", 4, &f, err, sizeof(err)), LLM_EINVAL);
    ck_assert(strstr(err, "truncated") != NULL);
    ck_assert_int_eq(gguf_open_memory("GGML\x03\0\0\0\0\0\0\0", 12, &f, err, sizeof(err)),
                     LLM_EINVAL);
    ck_assert(strstr(err, "magic") != NULL);
}
END_TEST

/* Every prefix of a valid model must be rejected cleanly, never read out of bounds. */
START_TEST(test_every_truncation_is_an_error)
{
    char path[256];
    ck_assert_int_eq(test_tiny_model(path, sizeof(path), LLM_DTYPE_Q4_1, 1, false), LLM_OK);
    size_t len = 0;
    uint8_t *buf = test_read_file(path, &len);
    ck_assert_ptr_nonnull(buf);
    gguf_file *f = NULL;
    char err[256];
    ck_assert_int_eq(gguf_open_memory(buf, len, &f, err, sizeof(err)), LLM_OK);
    gguf_close(f);
    for (size_t n = 0; n < len; n += (n < 20000 ? 1 : 97)) {
        // Exact-size copies so ASan catches any read past the end.
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, buf, n);
        f = NULL;
        int rc = gguf_open_memory(cut, n, &f, err, sizeof(err));
        ck_assert_msg(rc != LLM_OK, "truncated to %zu of %zu bytes but opened", n, len);
        ck_assert(strlen(err) > 0);
        free(cut);
    }
    free(buf);
    unlink(path);
}
END_TEST

/* Flip bytes all over the header: the reader may accept or reject, but must not crash
 * or read out of bounds, and whatever it accepts must have tensors inside the buffer. */
START_TEST(test_corrupted_headers_never_crash)
{
    char path[256];
    ck_assert_int_eq(test_tiny_model(path, sizeof(path), LLM_DTYPE_Q8_0, 2, false), LLM_OK);
    size_t len = 0;
    uint8_t *buf = test_read_file(path, &len);
    unsigned s = 1;
    int accepted = 0, rejected = 0;
    for (int iter = 0; iter < 3000; iter++) {
        uint8_t *c = malloc(len);
        memcpy(c, buf, len);
        for (int k = 0; k < 1 + iter % 4; k++) {
            s = s * 1103515245u + 12345u;
            size_t at = (s >> 4) % 12000; // the metadata and tensor table
            s = s * 1103515245u + 12345u;
            c[at] = (uint8_t)(s >> 16);
        }
        gguf_file *f = NULL;
        char err[256];
        if (gguf_open_memory(c, len, &f, err, sizeof(err)) == LLM_OK) {
            accepted++;
            for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
                const gguf_tensor *t = gguf_tensor_at(f, i);
                ck_assert((const uint8_t *)t->data >= c);
                ck_assert((const uint8_t *)t->data + t->n_bytes <= c + len);
            }
            gguf_close(f);
        } else {
            rejected++;
        }
        free(c);
    }
    ck_assert(accepted > 0 && rejected > 0);
    free(buf);
    unlink(path);
}
END_TEST

START_TEST(test_unsupported_tensor_type_is_named)
{
    // IQ2_XXS: a type GGUF knows and the kernels cannot compute (Q4_K was, until the
    // K-quants arrived).
    ck_assert(!kern_type_supported(LLM_DTYPE_IQ2_XXS));
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_new(&w), LLM_OK);
    uint8_t blk[66] = {0};
    int64_t ne[1] = {256};
    ck_assert_int_eq(gguf_writer_add_tensor(w, "k", LLM_DTYPE_IQ2_XXS, 1, ne, blk, sizeof(blk)),
                     LLM_OK);
    char path[256];
    test_tmp_path(path, sizeof(path), "iq2.gguf");
    ck_assert_int_eq(gguf_writer_write(w, path), LLM_OK);
    gguf_writer_free(w);
    gguf_file *f = NULL;
    char err[256] = "";
    ck_assert_int_eq(gguf_open(path, NULL, &f, err, sizeof(err)), LLM_ENOTSUP);
    ck_assert_msg(strstr(err, "IQ2_XXS") != NULL, "%s", err);
    unlink(path);
}
END_TEST

/* Keys of every type, copied as raw GGUF bytes, read back with the reader's getters. */
START_TEST(test_raw_keys_of_every_type_round_trip)
{
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_new(&w), LLM_OK);
    uint8_t u8 = 200;
    ck_assert_int_eq(gguf_writer_set_raw(w, "r.u8", GGUF_TYPE_UINT8, &u8, 1), LLM_OK);
    int64_t big = -((int64_t)1 << 40);
    ck_assert_int_eq(gguf_writer_set_raw(w, "r.i64", GGUF_TYPE_INT64, &big, 8), LLM_OK);
    double d = 0.1;
    ck_assert_int_eq(gguf_writer_set_raw(w, "r.f64", GGUF_TYPE_FLOAT64, &d, 8), LLM_OK);
    uint8_t str[8 + 3] = {3, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', 'c'};
    ck_assert_int_eq(gguf_writer_set_raw(w, "r.s", GGUF_TYPE_STRING, str, sizeof(str)), LLM_OK);
    // array of 2 strings: u32 type 8, u64 count 2, "x", ""
    uint8_t sarr[4 + 8 + 9 + 8] = {8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 'x'};
    ck_assert_int_eq(gguf_writer_set_raw(w, "r.sarr", GGUF_TYPE_ARRAY, sarr, sizeof(sarr)), LLM_OK);
    // array of 3 int16
    uint8_t iarr[4 + 8 + 6] = {3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xfe, 0xff, 7, 0};
    ck_assert_int_eq(gguf_writer_set_raw(w, "r.iarr", GGUF_TYPE_ARRAY, iarr, sizeof(iarr)), LLM_OK);
    // Malformed values are refused: wrong scalar size, string longer than its bytes,
    // short array, an array of arrays, an unknown type, a duplicate key.
    ck_assert_int_eq(gguf_writer_set_raw(w, "bad.1", GGUF_TYPE_UINT32, &u8, 1), LLM_EINVAL);
    ck_assert_int_eq(gguf_writer_set_raw(w, "bad.2", GGUF_TYPE_STRING, str, sizeof(str) - 1),
                     LLM_EINVAL);
    ck_assert_int_eq(gguf_writer_set_raw(w, "bad.3", GGUF_TYPE_ARRAY, iarr, sizeof(iarr) - 2),
                     LLM_EINVAL);
    ck_assert_int_eq(gguf_writer_set_raw(w, "bad.4", GGUF_TYPE_ARRAY, iarr, sizeof(iarr) + 1),
                     LLM_EINVAL); // trailing byte
    uint8_t nested[12] = {9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    ck_assert_int_eq(gguf_writer_set_raw(w, "bad.5", GGUF_TYPE_ARRAY, nested, sizeof(nested)),
                     LLM_EINVAL);
    ck_assert_int_eq(gguf_writer_set_raw(w, "bad.6", (gguf_type)77, &u8, 1), LLM_EINVAL);
    ck_assert_int_eq(gguf_writer_set_raw(w, "r.u8", GGUF_TYPE_UINT8, &u8, 1), LLM_EINVAL);
    char path[256];
    gguf_file *f = write_and_open(w, path, sizeof(path));
    gguf_writer_free(w);

    ck_assert_uint_eq(gguf_kv_count(f), 6);
    uint32_t u;
    int64_t i64;
    float fl;
    gguf_str s;
    ck_assert_int_eq(gguf_get_u32(f, "r.u8", &u), LLM_OK);
    ck_assert_uint_eq(u, 200);
    ck_assert_int_eq(gguf_get_i64(f, "r.i64", &i64), LLM_OK);
    ck_assert(i64 == big);
    ck_assert_int_eq(gguf_get_f32(f, "r.f64", &fl), LLM_OK);
    ck_assert(fl == 0.1f);
    ck_assert_int_eq(gguf_get_str(f, "r.s", &s), LLM_OK);
    ck_assert(gguf_str_eq(s, "abc"));
    ck_assert_int_eq(gguf_get_arr_str(f, "r.sarr", 0, &s), LLM_OK);
    ck_assert(gguf_str_eq(s, "x"));
    ck_assert_int_eq(gguf_get_arr_str(f, "r.sarr", 1, &s), LLM_OK);
    ck_assert_uint_eq(s.len, 0);
    int32_t back[3];
    ck_assert_int_eq(gguf_get_arr_i32(f, "r.iarr", back, 3), LLM_OK);
    ck_assert_int_eq(back[0], 1);
    ck_assert_int_eq(back[1], -2);
    ck_assert_int_eq(back[2], 7);
    gguf_close(f);
    unlink(path);
}
END_TEST

/* A fill callback for streamed tensors: tensor i is n floats of value i + k/1000,
 * written in chunks of `chunk` floats; `extra` floats more (or fewer, if negative),
 * or fail with `fail_rc` at tensor `fail_at`. */
typedef struct {
    int chunk, extra;
    uint64_t fail_at;
    int fail_rc;
    int64_t n[4];
    int calls;
} fill_spec;

static int
fill_floats(void *ctx, uint64_t idx, gguf_sink *sink)
{
    fill_spec *fs = ctx;
    fs->calls++;
    if (idx == fs->fail_at && fs->fail_rc != LLM_OK)
        return fs->fail_rc;
    int64_t n = fs->n[idx] + fs->extra;
    float buf[64];
    for (int64_t k = 0; k < n;) {
        int m = 0;
        for (; m < fs->chunk && k < n; m++, k++)
            buf[m] = (float)idx + (float)k / 1000.0f;
        int rc = gguf_sink_write(sink, buf, sizeof(float) * (size_t)m);
        if (rc != LLM_OK)
            return rc;
    }
    return LLM_OK;
}

static bool
tmp_left(const char *path)
{
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
    return access(tmp, F_OK) == 0;
}

START_TEST(test_streamed_tensors_are_written_in_order_between_copied_ones)
{
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_new(&w), LLM_OK);
    ck_assert_int_eq(gguf_writer_set_str(w, "general.architecture", "x"), LLM_OK);
    fill_spec fs = {.chunk = 7, .fail_at = UINT64_MAX, .n = {33 * 3, 64, 5, 1}};
    int64_t ne0[2] = {33, 3}, ne2[1] = {5}, ne3[1] = {1};
    float fixed[64];
    for (int k = 0; k < 64; k++)
        fixed[k] = -1.0f - (float)k;
    int64_t ne1[1] = {64};
    ck_assert_int_eq(gguf_writer_add_tensor_info(w, "s0", LLM_DTYPE_F32, 2, ne0), LLM_OK);
    ck_assert_int_eq(gguf_writer_add_tensor(w, "c1", LLM_DTYPE_F32, 1, ne1, fixed, sizeof(fixed)),
                     LLM_OK);
    ck_assert_int_eq(gguf_writer_add_tensor_info(w, "s2", LLM_DTYPE_F32, 1, ne2), LLM_OK);
    ck_assert_int_eq(gguf_writer_add_tensor_info(w, "s3", LLM_DTYPE_F32, 1, ne3), LLM_OK);
    // Shapes are checked as add_tensor checks them: rows must fill whole blocks.
    int64_t odd[2] = {33, 2};
    ck_assert_int_eq(gguf_writer_add_tensor_info(w, "q", LLM_DTYPE_Q8_0, 2, odd), LLM_EINVAL);
    int64_t zero[1] = {0};
    ck_assert_int_eq(gguf_writer_add_tensor_info(w, "z", LLM_DTYPE_F32, 1, zero), LLM_EINVAL);

    char path[256];
    test_tmp_path(path, sizeof(path), "stream.gguf");
    // gguf_writer_write cannot produce declared-only tensors.
    ck_assert_int_eq(gguf_writer_write(w, path), LLM_EINVAL);
    ck_assert_int_eq(access(path, F_OK), -1);
    char err[256] = "";
    ck_assert_int_eq(gguf_writer_write_stream(w, path, fill_floats, &fs, err, sizeof(err)), LLM_OK);
    ck_assert_int_eq(fs.calls, 3); // c1 came from its copy
    ck_assert(!tmp_left(path));
    size_t len = 0;
    void *buf = test_read_file(path, &len);
    ck_assert_uint_eq(len, gguf_writer_size(w));
    free(buf);
    gguf_writer_free(w);

    gguf_file *f = NULL;
    ck_assert_msg(gguf_open(path, NULL, &f, err, sizeof(err)) == LLM_OK, "%s", err);
    ck_assert_uint_eq(gguf_tensor_count(f), 4);
    const gguf_tensor *t = gguf_find_tensor(f, "s0");
    ck_assert_int_eq(t->ne[1], 3);
    const float *v = t->data;
    ck_assert(v[0] == 0.0f && v[98] == 0.098f);
    v = gguf_find_tensor(f, "c1")->data;
    ck_assert(v[0] == -1.0f && v[63] == -64.0f);
    v = gguf_find_tensor(f, "s2")->data;
    ck_assert(v[0] == 2.0f && v[4] == 2.004f);
    v = gguf_find_tensor(f, "s3")->data;
    ck_assert(v[0] == 3.0f);
    gguf_close(f);
    unlink(path);
}
END_TEST

/* Every way a fill can go wrong fails the write and leaves neither the file nor the
 * temporary one: too few bytes, too many, an error of its own; and an unwritable path. */
START_TEST(test_failed_stream_leaves_no_file)
{
    int64_t ne[1] = {40};
    struct {
        int extra;
        int fail_rc;
        int want;
    } cases[] = {
        {-1, LLM_OK, LLM_EINVAL},
        {1, LLM_OK, LLM_EINVAL},
        {0, LLM_ENOMEM, LLM_ENOMEM},
        {0, LLM_ECANCELED, LLM_ECANCELED},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        gguf_writer *w = NULL;
        ck_assert_int_eq(gguf_writer_new(&w), LLM_OK);
        ck_assert_int_eq(gguf_writer_add_tensor_info(w, "a", LLM_DTYPE_F32, 1, ne), LLM_OK);
        ck_assert_int_eq(gguf_writer_add_tensor_info(w, "b", LLM_DTYPE_F32, 1, ne), LLM_OK);
        fill_spec fs = {.chunk = 64,
                        .extra = cases[c].extra,
                        .fail_at = 1,
                        .fail_rc = cases[c].fail_rc,
                        .n = {40, 40}};
        char path[256], err[256] = "";
        test_tmp_path(path, sizeof(path), "fail.gguf");
        int rc = gguf_writer_write_stream(w, path, fill_floats, &fs, err, sizeof(err));
        ck_assert_msg(rc == cases[c].want, "case %zu: rc %d (%s)", c, rc, err);
        ck_assert(strlen(err) > 0);
        ck_assert_int_eq(access(path, F_OK), -1);
        ck_assert(!tmp_left(path));
        gguf_writer_free(w);
    }
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_new(&w), LLM_OK);
    char err[256] = "";
    ck_assert_int_eq(
        gguf_writer_write_stream(w, "/nonexistent-dir/x.gguf", NULL, NULL, err, sizeof(err)),
        LLM_EIO);
    ck_assert_msg(strstr(err, "cannot create") != NULL, "%s", err);
    gguf_writer_free(w);
}
END_TEST

Suite *gguf_suite(void);

Suite *
gguf_suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("roundtrip");
    tcase_add_test(tc, test_writer_round_trips_metadata_and_tensors);
    tcase_add_test(tc, test_unsupported_tensor_type_is_named);
    tcase_add_test(tc, test_raw_keys_of_every_type_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("stream");
    tcase_add_test(tc, test_streamed_tensors_are_written_in_order_between_copied_ones);
    tcase_add_test(tc, test_failed_stream_leaves_no_file);
    suite_add_tcase(s, tc);
    tc = tcase_create("hostile");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_open_reports_missing_and_tiny_files);
    tcase_add_test(tc, test_every_truncation_is_an_error);
    tcase_add_test(tc, test_corrupted_headers_never_crash);
    suite_add_tcase(s, tc);
    return s;
}
