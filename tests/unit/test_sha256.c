/*
 * test_sha256.c - SHA-256 against the FIPS 180-4 example vectors and against digests
 * computed with Python's hashlib for lengths at the padding edges (55 bytes: the last
 * one-block tail; 56: the first that needs a second padding block; 63, 64, 65: around a
 * full block; 119, 120, 128: the same edges one block further).
 */
#include "sha256.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
check_hex(const void *data, size_t len, const char *want)
{
    char got[65];
    memset(got, 'Z', sizeof got);
    sha256_hex(data, len, got);
    ck_assert_str_eq(got, want);
}

// Bytes (i * 7 + 3) mod 256: every byte differs from its neighbours, so a word read from
// the wrong offset or in the wrong byte order changes the digest.
static uint8_t *
pattern(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + 3);
    return p;
}

/* --- FIPS 180-4 examples ------------------------------------------------------------ */

START_TEST(test_empty_string_matches_fips)
{
    check_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_hex(NULL, 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
END_TEST

START_TEST(test_abc_matches_fips)
{
    check_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
END_TEST

START_TEST(test_448_bit_message_matches_fips)
{
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ck_assert_uint_eq(strlen(m), 56);
    check_hex(m, strlen(m), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}
END_TEST

START_TEST(test_one_million_a_matches_fips)
{
    size_t n = 1000000;
    char *m = malloc(n);
    ck_assert_ptr_nonnull(m);
    memset(m, 'a', n);
    check_hex(m, n, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(m);
}
END_TEST

/* --- padding edges (expected digests from hashlib) ---------------------------------- */

static const struct {
    size_t len;
    const char *hex;
} PADDING_CASES[] = {
    {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
    {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
    {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
    {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
    {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
    {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
    {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
    {128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"},
};

START_TEST(test_lengths_around_the_padding_edges_match_hashlib)
{
    const size_t n_cases = sizeof PADDING_CASES / sizeof PADDING_CASES[0];
    ck_assert_int_lt(_i, (int)n_cases);
    uint8_t *m = pattern(PADDING_CASES[_i].len);
    check_hex(m, PADDING_CASES[_i].len, PADDING_CASES[_i].hex);
    free(m);
}
END_TEST

START_TEST(test_repeated_byte_at_55_56_63_64_65_matches_hashlib)
{
    static const struct {
        size_t len;
        const char *hex;
    } cases[] = {
        {55, "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072"},
        {56, "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e"},
        {63, "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2"},
        {64, "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c"},
        {65, "9537c5fdf120482f7d58d25e9ed583f52c02b4e304ea814db1633ad565aed7e9"},
    };
    char m[65];
    memset(m, 'x', sizeof m);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        check_hex(m, cases[k].len, cases[k].hex);
}
END_TEST

/* --- the two entry points ----------------------------------------------------------- */

START_TEST(test_hex_is_the_lowercase_spelling_of_the_binary_digest)
{
    uint8_t *m = pattern(200);
    for (size_t len = 0; len <= 200; len++) {
        uint8_t d[32];
        char hex[65], want[65];
        sha256(m, len, d);
        sha256_hex(m, len, hex);
        for (int i = 0; i < 32; i++)
            snprintf(want + 2 * i, 3, "%02x", d[i]);
        ck_assert_str_eq(hex, want);
        ck_assert_uint_eq(strlen(hex), 64);
    }
    free(m);
}
END_TEST

START_TEST(test_unaligned_input_hashes_the_same)
{
    uint8_t *m = pattern(130);
    uint8_t *shifted = malloc(131);
    ck_assert_ptr_nonnull(shifted);
    memcpy(shifted + 1, m, 130);
    uint8_t a[32], b[32];
    sha256(m, 130, a);
    sha256(shifted + 1, 130, b);
    ck_assert_mem_eq(a, b, 32);
    free(shifted);
    free(m);
}
END_TEST

START_TEST(test_one_flipped_bit_changes_the_digest)
{
    uint8_t *m = pattern(64);
    uint8_t a[32], b[32];
    sha256(m, 64, a);
    m[63] ^= 1;
    sha256(m, 64, b);
    ck_assert_int_ne(memcmp(a, b, 32), 0);
    free(m);
}
END_TEST

Suite *sha256_suite(void);

Suite *
sha256_suite(void)
{
    Suite *s = suite_create("sha256");
    TCase *tc = tcase_create("fips");
    tcase_add_test(tc, test_empty_string_matches_fips);
    tcase_add_test(tc, test_abc_matches_fips);
    tcase_add_test(tc, test_448_bit_message_matches_fips);
    tcase_add_test(tc, test_one_million_a_matches_fips);
    suite_add_tcase(s, tc);

    tc = tcase_create("padding");
    tcase_add_loop_test(tc, test_lengths_around_the_padding_edges_match_hashlib, 0,
                        (int)(sizeof PADDING_CASES / sizeof PADDING_CASES[0]));
    tcase_add_test(tc, test_repeated_byte_at_55_56_63_64_65_matches_hashlib);
    suite_add_tcase(s, tc);

    tc = tcase_create("api");
    tcase_add_test(tc, test_hex_is_the_lowercase_spelling_of_the_binary_digest);
    tcase_add_test(tc, test_unaligned_input_hashes_the_same);
    tcase_add_test(tc, test_one_flipped_bit_changes_the_digest);
    suite_add_tcase(s, tc);
    return s;
}
