/*
 * test_auth.c - the API key table: spec parsing and every refusal, bearer header
 * parsing and lookup, the two token buckets at their boundaries with an injected clock
 * (burst, exact retry waits, fractional rates, both-or-neither, refunds, a clock that
 * goes back), and concurrent admits on one key.
 */
#include "auth.h"
#include "llm_err.h"
#include "sha256.h"

#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

// spec_for writes "NAME sha256=<digest of secret> <rest>" to buf and returns buf.
static const char *
spec_for(char *buf, size_t n, const char *name, const char *secret, const char *rest)
{
    char hex[65];
    sha256_hex(secret, strlen(secret), hex);
    snprintf(buf, n, "%s sha256=%s %s", name, hex, rest);
    return buf;
}

// one_key builds a table of one key "k" with secret "sk-k" and the given settings.
static auth *
one_key(const char *rest)
{
    char spec[256];
    const char *specs[1] = {spec_for(spec, sizeof spec, "k", "sk-k", rest)};
    auth *a = NULL;
    char err[256] = "";
    ck_assert_msg(auth_new(specs, 1, &a, err, sizeof err) == LLM_OK, "%s", err);
    return a;
}

// admit at now_ms and check the code and retry_after_ms.
static void
check_admit(auth *a, int64_t now_ms, uint32_t tokens, int want_rc, int want_retry)
{
    int retry = -7;
    int rc = auth_admit(a, 0, now_ms, tokens, &retry);
    ck_assert_msg(rc == want_rc, "now_ms=%lld tokens=%u: rc %s, want %s", (long long)now_ms, tokens,
                  llm_strerror(rc), llm_strerror(want_rc));
    ck_assert_msg(retry == want_retry, "now_ms=%lld tokens=%u: retry %d, want %d",
                  (long long)now_ms, tokens, retry, want_retry);
}

/* --- specs -------------------------------------------------------------------------- */

START_TEST(test_good_specs_parse_with_their_settings_and_defaults)
{
    char s0[256], s1[256], s2[256], s3[256];
    char long_name[AUTH_NAME_MAX + 1];
    memset(long_name, 'n', AUTH_NAME_MAX);
    long_name[AUTH_NAME_MAX] = '\0';
    const char *specs[4] = {
        spec_for(s0, sizeof s0, "ops-team_1.prod", "sk-a", "role=admin"),
        spec_for(s1, sizeof s1, "alice", "sk-b", "role=user rps=0.5 tpm=6000"),
        spec_for(s2, sizeof s2, "batch", "sk-c", "\t role=user   max_tier=BackGround rps=0  "),
        spec_for(s3, sizeof s3, long_name, "sk-d", "max_tier=high role=admin tpm=0"),
    };
    auth *a = NULL;
    char err[256] = "";
    ck_assert_msg(auth_new(specs, 4, &a, err, sizeof err) == LLM_OK, "%s", err);
    ck_assert_int_eq(auth_n_keys(a), 4);
    ck_assert_str_eq(auth_key_name(a, 0), "ops-team_1.prod");
    ck_assert_str_eq(auth_key_name(a, 3), long_name);
    ck_assert_int_eq(auth_key_role(a, 0), AUTH_ADMIN);
    ck_assert_int_eq(auth_key_role(a, 1), AUTH_USER);
    ck_assert_int_eq(auth_key_role(a, 2), AUTH_USER);
    ck_assert_int_eq(auth_key_role(a, 3), AUTH_ADMIN);
    ck_assert_int_eq(auth_key_max_tier(a, 0), AUTH_TIER_CRITICAL); // admin default
    ck_assert_int_eq(auth_key_max_tier(a, 1), AUTH_TIER_NORMAL);   // user default
    ck_assert_int_eq(auth_key_max_tier(a, 2), AUTH_TIER_BACKGROUND);
    ck_assert_int_eq(auth_key_max_tier(a, 3), AUTH_TIER_HIGH);
    auth_free(a);
}
END_TEST

START_TEST(test_no_specs_give_an_empty_table)
{
    auth *a = NULL;
    ck_assert_int_eq(auth_new(NULL, 0, &a, NULL, 0), LLM_OK);
    ck_assert_int_eq(auth_n_keys(a), 0);
    int key = -1;
    ck_assert_int_eq(auth_lookup(a, "Bearer anything", &key), LLM_ENOENT);
    ck_assert_int_eq(key, -1);
    auth_free(a);
    auth_free(NULL);
}
END_TEST

START_TEST(test_a_digest_from_sha256sum_in_upper_case_matches_its_key)
{
    // printf %s "sk-ops-0123456789" | sha256sum, upper-cased.
    const char *specs[1] = {"ops sha256=C939C68F1674BB47729699E8AE6DF3E395926A89292FE2962129C7108"
                            "9B3052D role=admin"};
    auth *a = NULL;
    ck_assert_int_eq(auth_new(specs, 1, &a, NULL, 0), LLM_OK);
    int key = -1;
    ck_assert_int_eq(auth_lookup(a, "Bearer sk-ops-0123456789", &key), LLM_OK);
    ck_assert_int_eq(key, 0);
    auth_free(a);
}
END_TEST

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const struct {
    const char *spec;
    const char *problem; // a substring the message must hold
} BAD_SPECS[] = {
    {"k sha256=" HEX64 " role=admin colour=red", "unknown setting \"colour\""},
    {"k sha256=" HEX64 " role=admin admin", "unknown setting \"admin\""},
    {"k sha256=" HEX64 " role=admin Rps=1", "unknown setting \"Rps\""},
    {"k role=admin", "missing sha256"},
    {"k sha256=" HEX64, "missing role"},
    {"k sha256=" HEX64 "0 role=user", "65 characters"},
    {"k sha256=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde role=user",
     "63 characters"},
    {"k sha256= role=user", "0 characters"},
    {"k sha256=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg role=user",
     "not a hex digit at position 63"},
    {"k sha256=" HEX64 " role=root", "role=root"},
    {"k sha256=" HEX64 " role=", "want admin or user"},
    {"k sha256=" HEX64 " role=user max_tier=urgent", "max_tier=urgent"},
    {"k sha256=" HEX64 " role=user max_tier=", "max_tier="},
    {"k sha256=" HEX64 " role=user max_tier=backgroundbackground", "max_tier="},
    {"k sha256=" HEX64 " role=user rps=-1", "rps=-1"},
    {"k sha256=" HEX64 " role=user rps=-0", "rps=-0"},
    {"k sha256=" HEX64 " role=user rps=abc", "rps=abc"},
    {"k sha256=" HEX64 " role=user rps=1x", "rps=1x"},
    {"k sha256=" HEX64 " role=user rps=", "rps="},
    {"k sha256=" HEX64 " role=user rps=inf", "rps=inf"},
    {"k sha256=" HEX64 " role=user rps=nan", "rps=nan"},
    {"k sha256=" HEX64 " role=user rps=1e999", "rps=1e999"},
    {"k sha256=" HEX64 " role=user rps=1e-400", "rps=1e-400: too small"},
    {"k sha256=" HEX64 " role=user tpm=-5", "tpm=-5"},
    {"k sha256=" HEX64 " role=user tpm=1.5", "tpm=1.5"},
    {"k sha256=" HEX64 " role=user tpm=lots", "tpm=lots"},
    {"k sha256=" HEX64 " role=user tpm=", "tpm="},
    {"k sha256=" HEX64 " role=user rps=1 rps=2", "rps given twice"},
    {"k sha256=" HEX64 " role=user role=admin", "role given twice"},
    {"", "empty name"},
    {"  \t ", "empty name"},
    {"al!ce sha256=" HEX64 " role=user", "name \"al!ce\""},
    {"sha256=" HEX64 " role=user", "name \"sha256="},
    {"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn sha256=" HEX64 " role=user",
     "longer than 63"},
    {NULL, "no spec"},
};

START_TEST(test_each_bad_spec_is_refused_with_a_message_naming_it)
{
    char good[256];
    // The bad spec comes second, after a good one, so the message must name index 1.
    const char *specs[2] = {spec_for(good, sizeof good, "first", "sk-first", "role=user"),
                            BAD_SPECS[_i].spec};
    auth *a = (auth *)&good; // must stay untouched on failure
    char err[512] = "";
    ck_assert_int_eq(auth_new(specs, 2, &a, err, sizeof err), LLM_EINVAL);
    ck_assert_ptr_eq(a, (auth *)&good);
    ck_assert_msg(strstr(err, "api_keys[1]") != NULL, "spec %d: %s", _i, err);
    ck_assert_msg(strstr(err, BAD_SPECS[_i].problem) != NULL, "spec %d: \"%s\" lacks \"%s\"", _i,
                  err, BAD_SPECS[_i].problem);
}
END_TEST

START_TEST(test_a_refusal_names_a_good_name_and_never_needs_an_err_buffer)
{
    const char *specs[1] = {"alice sha256=" HEX64 " role=superuser"};
    auth *a = NULL;
    char err[256] = "";
    ck_assert_int_eq(auth_new(specs, 1, &a, err, sizeof err), LLM_EINVAL);
    ck_assert_str_eq(err, "api_keys[0] (alice): role=superuser: want admin or user");
    ck_assert_int_eq(auth_new(specs, 1, &a, NULL, 0), LLM_EINVAL);
    ck_assert_ptr_null(a);
}
END_TEST

START_TEST(test_duplicate_names_and_digests_are_refused)
{
    char s0[256], s1[256], s2[256];
    auth *a = NULL;
    char err[256] = "";
    const char *dup_name[2] = {spec_for(s0, sizeof s0, "alice", "sk-1", "role=user"),
                               spec_for(s1, sizeof s1, "alice", "sk-2", "role=admin")};
    ck_assert_int_eq(auth_new(dup_name, 2, &a, err, sizeof err), LLM_EINVAL);
    ck_assert_msg(strstr(err, "api_keys[1] (alice): duplicate name") != NULL, "%s", err);

    // The same secret under two names, one digest in upper case: still the same digest.
    char hex[65];
    sha256_hex("sk-1", 4, hex);
    for (char *p = hex; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    snprintf(s2, sizeof s2, "bob sha256=%s role=user", hex);
    const char *dup_hash[2] = {s0, s2};
    ck_assert_int_eq(auth_new(dup_hash, 2, &a, err, sizeof err), LLM_EINVAL);
    ck_assert_msg(strstr(err, "api_keys[1] (bob): duplicate sha256") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "alice") != NULL, "%s", err);
    ck_assert_ptr_null(a);
}
END_TEST

START_TEST(test_tier_names_parse_case_insensitively_and_round_trip)
{
    const char *names[AUTH_N_TIERS] = {"critical", "high", "normal", "low", "background"};
    for (int r = 0; r < AUTH_N_TIERS; r++) {
        int got = -1;
        ck_assert_int_eq(auth_tier_parse(names[r], &got), LLM_OK);
        ck_assert_int_eq(got, r);
        ck_assert_str_eq(auth_tier_name(r), names[r]);
    }
    int rank = 99;
    ck_assert_int_eq(auth_tier_parse("CRITICAL", &rank), LLM_OK);
    ck_assert_int_eq(rank, AUTH_TIER_CRITICAL);
    ck_assert_int_eq(auth_tier_parse("Low", &rank), LLM_OK);
    ck_assert_int_eq(rank, AUTH_TIER_LOW);
    rank = 99;
    ck_assert_int_eq(auth_tier_parse("", &rank), LLM_EINVAL);
    ck_assert_int_eq(auth_tier_parse("norm", &rank), LLM_EINVAL);
    ck_assert_int_eq(auth_tier_parse("normal ", &rank), LLM_EINVAL);
    ck_assert_int_eq(auth_tier_parse("lowest", &rank), LLM_EINVAL);
    ck_assert_int_eq(auth_tier_parse(NULL, &rank), LLM_EINVAL);
    ck_assert_int_eq(rank, 99);
    ck_assert_str_eq(auth_tier_name(-1), "unknown");
    ck_assert_str_eq(auth_tier_name(AUTH_N_TIERS), "unknown");
}
END_TEST

/* --- lookup ------------------------------------------------------------------------- */

static auth *
two_keys(void)
{
    char s0[256], s1[256];
    const char *specs[2] = {spec_for(s0, sizeof s0, "root", "sk-admin-secret", "role=admin"),
                            spec_for(s1, sizeof s1, "alice", "sk-user-secret", "role=user")};
    auth *a = NULL;
    ck_assert_int_eq(auth_new(specs, 2, &a, NULL, 0), LLM_OK);
    return a;
}

START_TEST(test_right_key_is_found_and_wrong_key_is_enoent)
{
    auth *a = two_keys();
    int key = -1;
    ck_assert_int_eq(auth_lookup(a, "Bearer sk-user-secret", &key), LLM_OK);
    ck_assert_int_eq(key, 1);
    key = -1;
    ck_assert_int_eq(auth_lookup(a, "Bearer sk-wrong", &key), LLM_ENOENT);
    ck_assert_int_eq(auth_lookup(a, "Bearer sk-user-secre", &key), LLM_ENOENT); // a prefix
    ck_assert_int_eq(auth_lookup(a, "Bearer sk-user-secret2", &key), LLM_ENOENT);
    ck_assert_int_eq(auth_lookup(a, "Bearer SK-USER-SECRET", &key), LLM_ENOENT); // tokens are exact
    ck_assert_int_eq(key, -1);
    auth_free(a);
}
END_TEST

START_TEST(test_two_keys_with_different_roles_are_told_apart)
{
    auth *a = two_keys();
    int k_admin = -1, k_user = -1;
    ck_assert_int_eq(auth_lookup(a, "Bearer sk-admin-secret", &k_admin), LLM_OK);
    ck_assert_int_eq(auth_lookup(a, "Bearer sk-user-secret", &k_user), LLM_OK);
    ck_assert_int_eq(k_admin, 0);
    ck_assert_int_eq(k_user, 1);
    ck_assert_int_eq(auth_key_role(a, k_admin), AUTH_ADMIN);
    ck_assert_int_eq(auth_key_role(a, k_user), AUTH_USER);
    ck_assert_str_eq(auth_key_name(a, k_admin), "root");
    ck_assert_str_eq(auth_key_name(a, k_user), "alice");
    auth_free(a);
}
END_TEST

START_TEST(test_missing_or_malformed_headers_are_einval)
{
    auth *a = two_keys();
    const char *bad[] = {
        NULL,
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "Bearer \t ",
        "Basic abc",
        "Basic sk-user-secret",
        "BearerKEY",
        "Bearersk-user-secret",
        "Bearer sk-user-secret extra",
        "Bear sk-user-secret",
        "Bearer\nsk-user-secret",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int key = -1;
        ck_assert_msg(auth_lookup(a, bad[i], &key) == LLM_EINVAL, "header %zu", i);
        ck_assert_int_eq(key, -1);
    }
    auth_free(a);
}
END_TEST

START_TEST(test_scheme_is_case_insensitive_and_whitespace_is_ignored)
{
    auth *a = two_keys();
    const char *good[] = {
        "bearer   sk-user-secret  ",  "BEARER sk-user-secret", "\tBearer\tsk-user-secret\t",
        " Bearer \t sk-user-secret ", "bEaReR sk-user-secret",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int key = -1;
        ck_assert_msg(auth_lookup(a, good[i], &key) == LLM_OK, "header %zu", i);
        ck_assert_int_eq(key, 1);
    }
    auth_free(a);
}
END_TEST

START_TEST(test_many_keys_each_find_themselves)
{
    enum { N = 40 };
    char bufs[N][160];
    const char *specs[N];
    for (int i = 0; i < N; i++) {
        char name[16], secret[32];
        snprintf(name, sizeof name, "key%d", i);
        snprintf(secret, sizeof secret, "sk-%d", i);
        specs[i] = spec_for(bufs[i], sizeof bufs[i], name, secret, "role=user");
    }
    auth *a = NULL;
    ck_assert_int_eq(auth_new(specs, N, &a, NULL, 0), LLM_OK);
    for (int i = 0; i < N; i++) {
        char header[48];
        snprintf(header, sizeof header, "Bearer sk-%d", i);
        int key = -1;
        ck_assert_int_eq(auth_lookup(a, header, &key), LLM_OK);
        ck_assert_int_eq(key, i);
    }
    auth_free(a);
}
END_TEST

/* --- buckets ------------------------------------------------------------------------ */

START_TEST(test_a_burst_of_capacity_passes_then_ebusy_until_the_exact_wait)
{
    auth *a = one_key("role=user rps=5");
    for (int i = 0; i < 5; i++)
        check_admit(a, 1000, 0, LLM_OK, 0);
    check_admit(a, 1000, 0, LLM_EBUSY, 200);
    check_admit(a, 1100, 0, LLM_EBUSY, 100);
    check_admit(a, 1199, 0, LLM_EBUSY, 1);
    check_admit(a, 1200, 0, LLM_OK, 0);
    check_admit(a, 1200, 0, LLM_EBUSY, 200);
    auth_free(a);
}
END_TEST

START_TEST(test_fractional_rps_of_half_waits_two_seconds)
{
    auth *a = one_key("role=user rps=0.5");
    check_admit(a, 0, 0, LLM_OK, 0); // capacity max(1, 0.5) = 1
    check_admit(a, 0, 0, LLM_EBUSY, 2000);
    check_admit(a, 1000, 0, LLM_EBUSY, 1000);
    check_admit(a, 1999, 0, LLM_EBUSY, 1);
    check_admit(a, 2000, 0, LLM_OK, 0);
    check_admit(a, 2000, 0, LLM_EBUSY, 2000);
    auth_free(a);
}
END_TEST

START_TEST(test_fractional_capacity_above_one_refills_the_fraction)
{
    auth *a = one_key("role=user rps=2.5");
    check_admit(a, 0, 0, LLM_OK, 0);
    check_admit(a, 0, 0, LLM_OK, 0);
    check_admit(a, 0, 0, LLM_EBUSY, 200); // 0.5 left, 0.5 more at 2.5/s
    check_admit(a, 200, 0, LLM_OK, 0);
    check_admit(a, 200, 0, LLM_EBUSY, 400);
    auth_free(a);
}
END_TEST

START_TEST(test_a_long_idle_refills_only_to_capacity)
{
    auth *a = one_key("role=user rps=2 tpm=600");
    check_admit(a, 0, 600, LLM_OK, 0);
    check_admit(a, 0, 0, LLM_OK, 0);
    check_admit(a, 10 * 60 * 1000, 0, LLM_OK, 0);
    check_admit(a, 10 * 60 * 1000, 600, LLM_OK, 0);
    check_admit(a, 10 * 60 * 1000, 0, LLM_EBUSY, 500);
    auth_free(a);
}
END_TEST

START_TEST(test_a_request_short_on_tokens_takes_no_request_token)
{
    auth *a = one_key("role=user rps=2 tpm=600"); // 10 tokens per second
    check_admit(a, 0, 500, LLM_OK, 0);            // 1 request, 100 tokens left
    check_admit(a, 0, 200, LLM_EBUSY, 10000);     // 100 more tokens take 10 s
    check_admit(a, 0, 200, LLM_EBUSY, 10000);
    check_admit(a, 0, 100, LLM_OK, 0); // the request token is still there
    check_admit(a, 0, 0, LLM_EBUSY, 500);
    auth_free(a);
}
END_TEST

START_TEST(test_a_request_short_on_requests_takes_no_tokens)
{
    auth *a = one_key("role=user rps=1 tpm=600");
    check_admit(a, 0, 100, LLM_OK, 0);
    check_admit(a, 0, 100, LLM_EBUSY, 1000);
    check_admit(a, 500, 100, LLM_EBUSY, 500);
    // 500 left + 10 refilled in the second: all 510 pass only if the refusals took none.
    check_admit(a, 1000, 510, LLM_OK, 0);
    auth_free(a);
}
END_TEST

START_TEST(test_the_wait_is_the_longer_of_the_two_buckets)
{
    auth *a = one_key("role=user rps=1 tpm=60"); // 1 token per second
    check_admit(a, 0, 60, LLM_OK, 0);
    check_admit(a, 0, 30, LLM_EBUSY, 30000);
    check_admit(a, 0, 0, LLM_EBUSY, 1000);
    check_admit(a, 29999, 30, LLM_EBUSY, 1);
    check_admit(a, 30000, 30, LLM_OK, 0);
    auth_free(a);
}
END_TEST

START_TEST(test_more_tokens_than_tpm_is_erange_and_takes_nothing)
{
    auth *a = one_key("role=user rps=1 tpm=100");
    check_admit(a, 0, 101, LLM_ERANGE, 0);
    check_admit(a, 0, UINT32_MAX, LLM_ERANGE, 0);
    check_admit(a, 0, 100, LLM_OK, 0); // both buckets were still full
    check_admit(a, 0, 101, LLM_ERANGE, 0);
    auth_free(a);
}
END_TEST

START_TEST(test_a_refund_puts_tokens_back_up_to_capacity)
{
    auth *a = one_key("role=user tpm=100");
    check_admit(a, 0, 80, LLM_OK, 0);
    auth_refund(a, 0, 50);
    check_admit(a, 0, 70, LLM_OK, 0);
    check_admit(a, 0, 1, LLM_EBUSY, 600);
    auth_refund(a, 0, 1000000);
    check_admit(a, 0, 100, LLM_OK, 0);
    check_admit(a, 0, 1, LLM_EBUSY, 600);
    auth_refund(a, 0, UINT32_MAX);
    check_admit(a, 0, 100, LLM_OK, 0);
    auth_free(a);
}
END_TEST

START_TEST(test_unlimited_keys_always_pass)
{
    const char *rests[] = {"role=user", "role=admin rps=0 tpm=0", "role=user rps=0 tpm=100",
                           "role=user rps=3 tpm=0"};
    for (size_t r = 0; r < sizeof rests / sizeof rests[0]; r++) {
        auth *a = one_key(rests[r]);
        bool rps_unlimited = strstr(rests[r], "rps=3") == NULL;
        bool tpm_unlimited = strstr(rests[r], "tpm=100") == NULL;
        for (int i = 0; i < 1000; i++) {
            int retry = -1;
            int rc = auth_admit(a, 0, 42, tpm_unlimited ? UINT32_MAX : 0, &retry);
            if (rps_unlimited || i < 3)
                ck_assert_int_eq(rc, LLM_OK);
            else
                ck_assert_int_eq(rc, LLM_EBUSY);
        }
        auth_refund(a, 0, 12345); // a no-op on an unlimited bucket
        auth_free(a);
    }
}
END_TEST

START_TEST(test_a_clock_going_backwards_adds_nothing_and_does_not_crash)
{
    auth *a = one_key("role=user rps=1 tpm=60");
    check_admit(a, 10000, 60, LLM_OK, 0);
    check_admit(a, 5000, 0, LLM_EBUSY, 1000);
    check_admit(a, INT64_MIN, 0, LLM_EBUSY, 1000);
    check_admit(a, -1, 1, LLM_EBUSY, 1000);
    // Back on the old clock: the refill counts from 10000, the latest time credited.
    check_admit(a, 10999, 0, LLM_EBUSY, 1);
    check_admit(a, 11000, 0, LLM_OK, 0);
    check_admit(a, INT64_MAX, 60, LLM_OK, 0); // a jump far ahead refills to capacity only
    check_admit(a, INT64_MAX, 1, LLM_EBUSY, 1000);
    auth_free(a);
}
END_TEST

START_TEST(test_buckets_start_full_whatever_the_first_time)
{
    const int64_t firsts[] = {INT64_MIN, -5, 0, 123456789, INT64_MAX};
    for (size_t i = 0; i < sizeof firsts / sizeof firsts[0]; i++) {
        auth *a = one_key("role=user rps=2 tpm=100");
        check_admit(a, firsts[i], 50, LLM_OK, 0);
        check_admit(a, firsts[i], 50, LLM_OK, 0);
        check_admit(a, firsts[i], 0, LLM_EBUSY, 500);
        auth_free(a);
    }
}
END_TEST

START_TEST(test_huge_rates_are_capped_and_tiny_ones_saturate_the_wait)
{
    auth *a = one_key("role=user rps=1e300 tpm=99999999999999999999999999");
    for (int i = 0; i < 1000; i++)
        check_admit(a, 0, 1000000, LLM_OK, 0);
    check_admit(a, 0, (uint32_t)AUTH_RATE_MAX + 1, LLM_ERANGE, 0);
    auth_free(a);

    a = one_key("role=user rps=1e-12");
    check_admit(a, 0, 0, LLM_OK, 0);
    check_admit(a, 0, 0, LLM_EBUSY, INT_MAX);
    auth_free(a);
}
END_TEST

START_TEST(test_keys_have_their_own_buckets_and_retry_may_be_null)
{
    char s0[256], s1[256];
    const char *specs[2] = {spec_for(s0, sizeof s0, "a", "sk-a", "role=user rps=1"),
                            spec_for(s1, sizeof s1, "b", "sk-b", "role=user rps=1")};
    auth *a = NULL;
    ck_assert_int_eq(auth_new(specs, 2, &a, NULL, 0), LLM_OK);
    ck_assert_int_eq(auth_admit(a, 0, 0, 0, NULL), LLM_OK);
    ck_assert_int_eq(auth_admit(a, 0, 0, 0, NULL), LLM_EBUSY);
    ck_assert_int_eq(auth_admit(a, 1, 0, 0, NULL), LLM_OK);
    ck_assert_int_eq(auth_admit(a, 1, 0, 0, NULL), LLM_EBUSY);
    auth_free(a);
}
END_TEST

/* --- threads ------------------------------------------------------------------------ */

enum { THREADS = 4, ADMITS_PER_THREAD = 20000, THREAD_RPS = 250 };

typedef struct {
    auth *a;
    int admitted;
    int busy;
} admit_worker;

static void *
admit_worker_run(void *arg)
{
    admit_worker *w = arg;
    for (int i = 0; i < ADMITS_PER_THREAD; i++) {
        int retry = 0;
        int rc = auth_admit(w->a, 0, 777, 1, &retry);
        if (rc == LLM_OK)
            w->admitted++;
        else if (rc == LLM_EBUSY && retry >= 1)
            w->busy++;
    }
    return NULL;
}

START_TEST(test_concurrent_admits_at_one_instant_pass_exactly_capacity)
{
    auth *a = one_key("role=user rps=250");
    pthread_t t[THREADS];
    admit_worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (admit_worker){.a = a};
        ck_assert_int_eq(pthread_create(&t[i], NULL, admit_worker_run, &w[i]), 0);
    }
    int admitted = 0, busy = 0;
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
        admitted += w[i].admitted;
        busy += w[i].busy;
    }
    ck_assert_int_eq(admitted, THREAD_RPS);
    ck_assert_int_eq(busy, THREADS * ADMITS_PER_THREAD - THREAD_RPS);
    auth_free(a);
}
END_TEST

Suite *auth_suite(void);

Suite *
auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("specs");
    tcase_add_test(tc, test_good_specs_parse_with_their_settings_and_defaults);
    tcase_add_test(tc, test_no_specs_give_an_empty_table);
    tcase_add_test(tc, test_a_digest_from_sha256sum_in_upper_case_matches_its_key);
    tcase_add_loop_test(tc, test_each_bad_spec_is_refused_with_a_message_naming_it, 0,
                        (int)(sizeof BAD_SPECS / sizeof BAD_SPECS[0]));
    tcase_add_test(tc, test_a_refusal_names_a_good_name_and_never_needs_an_err_buffer);
    tcase_add_test(tc, test_duplicate_names_and_digests_are_refused);
    tcase_add_test(tc, test_tier_names_parse_case_insensitively_and_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("lookup");
    tcase_add_test(tc, test_right_key_is_found_and_wrong_key_is_enoent);
    tcase_add_test(tc, test_two_keys_with_different_roles_are_told_apart);
    tcase_add_test(tc, test_missing_or_malformed_headers_are_einval);
    tcase_add_test(tc, test_scheme_is_case_insensitive_and_whitespace_is_ignored);
    tcase_add_test(tc, test_many_keys_each_find_themselves);
    suite_add_tcase(s, tc);

    tc = tcase_create("buckets");
    tcase_add_test(tc, test_a_burst_of_capacity_passes_then_ebusy_until_the_exact_wait);
    tcase_add_test(tc, test_fractional_rps_of_half_waits_two_seconds);
    tcase_add_test(tc, test_fractional_capacity_above_one_refills_the_fraction);
    tcase_add_test(tc, test_a_long_idle_refills_only_to_capacity);
    tcase_add_test(tc, test_a_request_short_on_tokens_takes_no_request_token);
    tcase_add_test(tc, test_a_request_short_on_requests_takes_no_tokens);
    tcase_add_test(tc, test_the_wait_is_the_longer_of_the_two_buckets);
    tcase_add_test(tc, test_more_tokens_than_tpm_is_erange_and_takes_nothing);
    tcase_add_test(tc, test_a_refund_puts_tokens_back_up_to_capacity);
    tcase_add_test(tc, test_unlimited_keys_always_pass);
    tcase_add_test(tc, test_a_clock_going_backwards_adds_nothing_and_does_not_crash);
    tcase_add_test(tc, test_buckets_start_full_whatever_the_first_time);
    tcase_add_test(tc, test_huge_rates_are_capped_and_tiny_ones_saturate_the_wait);
    tcase_add_test(tc, test_keys_have_their_own_buckets_and_retry_may_be_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_add_test(tc, test_concurrent_admits_at_one_instant_pass_exactly_capacity);
    suite_add_tcase(s, tc);
    return s;
}
