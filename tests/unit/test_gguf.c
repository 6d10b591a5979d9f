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
    gguf_writer *w = NULL;
    ck_assert_int_eq(gguf_writer_new(&w), LLM_OK);
    uint8_t blk[144] = {0};
    int64_t ne[1] = {256};
    ck_assert_int_eq(gguf_writer_add_tensor(w, "k", LLM_DTYPE_Q4_K, 1, ne, blk, sizeof(blk)),
                     LLM_OK);
    char path[256];
    test_tmp_path(path, sizeof(path), "q4k.gguf");
    ck_assert_int_eq(gguf_writer_write(w, path), LLM_OK);
    gguf_writer_free(w);
    gguf_file *f = NULL;
    char err[256] = "";
    ck_assert_int_eq(gguf_open(path, NULL, &f, err, sizeof(err)), LLM_ENOTSUP);
    ck_assert_msg(strstr(err, "Q4_K") != NULL, "%s", err);
    unlink(path);
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
    suite_add_tcase(s, tc);
    tc = tcase_create("hostile");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_open_reports_missing_and_tiny_files);
    tcase_add_test(tc, test_every_truncation_is_an_error);
    tcase_add_test(tc, test_corrupted_headers_never_crash);
    suite_add_tcase(s, tc);
    return s;
}
