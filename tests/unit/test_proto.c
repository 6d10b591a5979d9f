/*
 * test_proto.c - the generated protobuf-c code: an Envelope round trip, and garbage
 * bytes either fail to unpack or unpack into something that can be freed safely.
 */
#include "llm.pb-c.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_envelope_round_trips_a_generate_request)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__GenerateRequest gen = LLM__GENERATE_REQUEST__INIT;
    Llm__Sampling samp = LLM__SAMPLING__INIT;
    char *stops[] = {"\n\n", "END"};
    samp.temperature = 0.7f;
    samp.max_tokens = 64;
    samp.seed = 42;
    samp.n_stop = 2;
    samp.stop = stops;
    gen.model = "smollm2";
    gen.input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT;
    gen.prompt = "Hello";
    gen.sampling = &samp;
    gen.tier = LLM__SLA_TIER__TIER_HIGH;
    env.version = 1;
    env.request_id = 77;
    env.body_case = LLM__ENVELOPE__BODY_GENERATE;
    env.generate = &gen;

    size_t n = llm__envelope__get_packed_size(&env);
    uint8_t *buf = malloc(n);
    ck_assert_uint_eq(llm__envelope__pack(&env, buf), n);
    Llm__Envelope *back = llm__envelope__unpack(NULL, n, buf);
    ck_assert_ptr_nonnull(back);
    ck_assert_uint_eq(back->request_id, 77);
    ck_assert_int_eq(back->body_case, LLM__ENVELOPE__BODY_GENERATE);
    ck_assert_str_eq(back->generate->prompt, "Hello");
    ck_assert_uint_eq(back->generate->sampling->n_stop, 2);
    ck_assert_str_eq(back->generate->sampling->stop[1], "END");
    ck_assert_int_eq(back->generate->tier, LLM__SLA_TIER__TIER_HIGH);
    llm__envelope__free_unpacked(back, NULL);

    // Every truncation either fails or yields a message that frees cleanly.
    for (size_t k = 0; k < n; k++) {
        Llm__Envelope *e = llm__envelope__unpack(NULL, k, buf);
        if (e)
            llm__envelope__free_unpacked(e, NULL);
    }
    free(buf);
}
END_TEST

START_TEST(test_random_bytes_never_crash_the_decoder)
{
    unsigned s = 5;
    uint8_t buf[64];
    int ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(iter % 64);
        for (size_t i = 0; i < n; i++) {
            s = s * 1103515245u + 12345u;
            buf[i] = (uint8_t)(s >> 16);
        }
        Llm__Envelope *e = llm__envelope__unpack(NULL, n, buf);
        if (e) {
            ok++;
            llm__envelope__free_unpacked(e, NULL);
        }
    }
    ck_assert(ok > 0); // the empty message at least is valid
}
END_TEST

Suite *proto_suite(void);

Suite *
proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("envelope");
    tcase_add_test(tc, test_envelope_round_trips_a_generate_request);
    tcase_add_test(tc, test_random_bytes_never_crash_the_decoder);
    suite_add_tcase(s, tc);
    return s;
}
