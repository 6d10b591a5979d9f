/*
 * test_gen.c - the streaming detokenizer: stop strings split across tokens, UTF-8
 * characters split across tokens, hold-back release, and limits.
 */
#include "gen.h"
#include "llm_err.h"

#include <check.h>
#include <string.h>

typedef struct {
    char out[8192];
    size_t n;
    int calls;
    int cancel_after; // 0 = never
} sink;

static int
collect(void *ctx, const char *text, size_t len)
{
    sink *s = ctx;
    memcpy(s->out + s->n, text, len);
    s->n += len;
    s->out[s->n] = 0;
    s->calls++;
    return s->cancel_after && s->calls >= s->cancel_after;
}

static bool
push(gen_text *t, sink *s, const char *piece)
{
    bool stopped = false;
    ck_assert_int_eq(gen_text_push(t, piece, strlen(piece), collect, s, &stopped), LLM_OK);
    return stopped;
}

START_TEST(test_stop_string_split_across_tokens_is_not_emitted)
{
    const char *stop[] = {"\nUser:"};
    gen_text t;
    sink s = {0};
    ck_assert_int_eq(gen_text_init(&t, stop, 1), LLM_OK);
    ck_assert(!push(&t, &s, "Hello"));
    ck_assert_str_eq(s.out, "Hello");
    ck_assert(!push(&t, &s, " there\nUs"));
    ck_assert_str_eq(s.out, "Hello there"); // "\nUs" held: may be the stop string
    ck_assert(push(&t, &s, "er: more"));
    ck_assert_str_eq(s.out, "Hello there");
}
END_TEST

START_TEST(test_held_prefix_is_released_when_it_does_not_match)
{
    const char *stop[] = {"END", "###"};
    gen_text t;
    sink s = {0};
    ck_assert_int_eq(gen_text_init(&t, stop, 2), LLM_OK);
    ck_assert(!push(&t, &s, "a E"));
    ck_assert_str_eq(s.out, "a ");
    ck_assert(!push(&t, &s, "N"));
    ck_assert_str_eq(s.out, "a ");
    ck_assert(push(&t, &s, "D?")); // "END" is complete: stop, nothing more emitted
    ck_assert_str_eq(s.out, "a ");

    sink s2 = {0};
    ck_assert_int_eq(gen_text_init(&t, stop, 2), LLM_OK);
    ck_assert(!push(&t, &s2, "a E"));
    ck_assert(!push(&t, &s2, "Nx")); // "ENx" cannot become "END": released
    ck_assert_str_eq(s2.out, "a ENx");
    ck_assert(!push(&t, &s2, "##"));
    ck_assert_str_eq(s2.out, "a ENx");
}
END_TEST

START_TEST(test_earliest_stop_wins)
{
    const char *stop[] = {"world", "lo"};
    gen_text t;
    sink s = {0};
    ck_assert_int_eq(gen_text_init(&t, stop, 2), LLM_OK);
    ck_assert(push(&t, &s, "hello world"));
    ck_assert_str_eq(s.out, "hel");
}
END_TEST

START_TEST(test_utf8_character_split_across_tokens_is_held_whole)
{
    gen_text t;
    sink s = {0};
    ck_assert_int_eq(gen_text_init(&t, NULL, 0), LLM_OK);
    ck_assert(!push(&t, &s, "caf\xc3"));
    ck_assert_str_eq(s.out, "caf");
    ck_assert(!push(&t, &s, "\xa9 \xf0\x9f"));
    ck_assert_str_eq(s.out, "caf\xc3\xa9 ");
    ck_assert(!push(&t, &s, "\x98\x80!"));
    ck_assert_str_eq(s.out, "caf\xc3\xa9 \xf0\x9f\x98\x80!");
    // a dangling lead byte at the very end is flushed as U+FFFD
    ck_assert(!push(&t, &s, "\xe4"));
    ck_assert_int_eq(gen_text_flush(&t, collect, &s), LLM_OK);
    ck_assert_str_eq(s.out, "caf\xc3\xa9 \xf0\x9f\x98\x80!\xef\xbf\xbd");
}
END_TEST

START_TEST(test_bytes_that_cannot_form_text_become_replacement_characters)
{
    gen_text t;
    sink s = {0};
    ck_assert_int_eq(gen_text_init(&t, NULL, 0), LLM_OK);
    ck_assert(!push(&t, &s, "a\xe3"));
    ck_assert(!push(&t, &s,
                    "\xe3"
                    "b")); // the first lead never got its continuation
    ck_assert(!push(&t, &s,
                    "\xff\x80"
                    "c")); // never valid anywhere
    ck_assert_int_eq(gen_text_flush(&t, collect, &s), LLM_OK);
    ck_assert_str_eq(s.out, "a\xef\xbf\xbd\xef\xbf\xbd"
                            "b"
                            "\xef\xbf\xbd\xef\xbf\xbd"
                            "c");
}
END_TEST

START_TEST(test_flush_releases_a_held_stop_prefix)
{
    const char *stop[] = {"</s>"};
    gen_text t;
    sink s = {0};
    ck_assert_int_eq(gen_text_init(&t, stop, 1), LLM_OK);
    ck_assert(!push(&t, &s, "x </"));
    ck_assert_str_eq(s.out, "x ");
    ck_assert_int_eq(gen_text_flush(&t, collect, &s), LLM_OK);
    ck_assert_str_eq(s.out, "x </");
}
END_TEST

START_TEST(test_callback_can_cancel)
{
    gen_text t;
    sink s = {.cancel_after = 1};
    bool stopped;
    ck_assert_int_eq(gen_text_init(&t, NULL, 0), LLM_OK);
    ck_assert_int_eq(gen_text_push(&t, "a", 1, collect, &s, &stopped), LLM_ECANCELED);
}
END_TEST

START_TEST(test_init_rejects_bad_stop_lists)
{
    gen_text t;
    const char *empty[] = {""};
    ck_assert_int_eq(gen_text_init(&t, empty, 1), LLM_EINVAL);
    char big[GEN_MAX_STOP_LEN + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    const char *longs[] = {big};
    ck_assert_int_eq(gen_text_init(&t, longs, 1), LLM_EINVAL);
    const char *many[GEN_MAX_STOP + 1];
    for (int i = 0; i <= GEN_MAX_STOP; i++)
        many[i] = "x";
    ck_assert_int_eq(gen_text_init(&t, many, GEN_MAX_STOP + 1), LLM_EINVAL);
    // a long token larger than the buffer is streamed through in pieces
    const char *stop[] = {"zz"};
    ck_assert_int_eq(gen_text_init(&t, stop, 1), LLM_OK);
    static char huge[5000];
    memset(huge, 'a', sizeof(huge) - 1);
    sink s = {0};
    bool stopped;
    ck_assert_int_eq(gen_text_push(&t, huge, strlen(huge), collect, &s, &stopped), LLM_OK);
    ck_assert(!stopped);
    ck_assert_uint_eq(s.n, strlen(huge));
}
END_TEST

Suite *gen_suite(void);

Suite *
gen_suite(void)
{
    Suite *s = suite_create("gen");
    TCase *tc = tcase_create("text");
    tcase_add_test(tc, test_stop_string_split_across_tokens_is_not_emitted);
    tcase_add_test(tc, test_held_prefix_is_released_when_it_does_not_match);
    tcase_add_test(tc, test_earliest_stop_wins);
    tcase_add_test(tc, test_utf8_character_split_across_tokens_is_held_whole);
    tcase_add_test(tc, test_bytes_that_cannot_form_text_become_replacement_characters);
    tcase_add_test(tc, test_flush_releases_a_held_stop_prefix);
    tcase_add_test(tc, test_callback_can_cancel);
    tcase_add_test(tc, test_init_rejects_bad_stop_lists);
    suite_add_tcase(s, tc);
    return s;
}
