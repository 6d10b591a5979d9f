/*
 * test_wire.c - the framing layer: what wire_decode accepts and refuses, error replies,
 * and the NNG error translation.
 */
#include "llm_err.h"
#include "wire.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *
pack_health(uint32_t version, size_t *len)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__HealthRequest h = LLM__HEALTH_REQUEST__INIT;
    env.body_case = LLM__ENVELOPE__BODY_HEALTH;
    env.health = &h;
    env.request_id = 42;
    uint8_t *buf;
    ck_assert_int_eq(wire_pack(&env, &buf, len), LLM_OK);
    if (version != WIRE_VERSION) { // re-encode the version field by hand: byte 1
        ck_assert_uint_eq(buf[0], 0x08);
        buf[1] = (uint8_t)version;
    }
    return buf;
}

START_TEST(test_round_trip_sets_the_version)
{
    size_t len;
    uint8_t *buf = pack_health(WIRE_VERSION, &len);
    Llm__Envelope *e = NULL;
    char err[128];
    ck_assert_int_eq(wire_decode(buf, len, &e, err, sizeof(err)), LLM_OK);
    ck_assert_uint_eq(e->version, WIRE_VERSION);
    ck_assert_uint_eq(e->request_id, 42);
    ck_assert_int_eq(e->body_case, LLM__ENVELOPE__BODY_HEALTH);
    ck_assert_str_eq(wire_body_name(e->body_case), "health");
    wire_free(e);
    free(buf);
}
END_TEST

START_TEST(test_refuses_wrong_version_no_body_garbage_and_oversize)
{
    size_t len;
    uint8_t *buf = pack_health(2, &len);
    Llm__Envelope *e = NULL;
    char err[128];
    ck_assert_int_eq(wire_decode(buf, len, &e, err, sizeof(err)), LLM_EPROTO);
    ck_assert_ptr_null(e);
    ck_assert_ptr_nonnull(strstr(err, "version 2"));
    free(buf);
    const uint8_t nobody[] = {0x08, 0x01, 0x10, 0x05};
    ck_assert_int_eq(wire_decode(nobody, sizeof(nobody), &e, err, sizeof(err)), LLM_EPROTO);
    ck_assert_ptr_nonnull(strstr(err, "no body"));
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0x13, 0x37};
    ck_assert_int_eq(wire_decode(junk, sizeof(junk), &e, err, sizeof(err)), LLM_EPROTO);
    ck_assert_int_eq(wire_decode(junk, (size_t)WIRE_MAX_MESSAGE + 1, &e, err, sizeof(err)),
                     LLM_ERANGE);
    ck_assert_int_eq(wire_decode(NULL, 0, &e, NULL, 0), LLM_EPROTO); // empty: version 0
}
END_TEST

START_TEST(test_error_reply_carries_code_message_and_retry)
{
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(wire_error_reply(9, LLM_EBUSY, "queue full", 100, &buf, &len), LLM_OK);
    Llm__Envelope *e = NULL;
    ck_assert_int_eq(wire_decode(buf, len, &e, NULL, 0), LLM_OK);
    ck_assert_int_eq(e->body_case, LLM__ENVELOPE__BODY_ERROR);
    ck_assert_uint_eq(e->request_id, 9);
    ck_assert_uint_eq(e->error->code, LLM_EBUSY);
    ck_assert_str_eq(e->error->message, "queue full");
    ck_assert_uint_eq(e->error->retry_after_ms, 100);
    wire_free(e);
    free(buf);
    ck_assert_int_eq(wire_error_reply(1, LLM_ENOENT, NULL, 0, &buf, &len), LLM_OK);
    ck_assert_int_eq(wire_decode(buf, len, &e, NULL, 0), LLM_OK);
    ck_assert_str_eq(e->error->message, llm_strerror(LLM_ENOENT));
    wire_free(e);
    free(buf);
}
END_TEST

START_TEST(test_nng_errors_translate)
{
    ck_assert_int_eq(wire_nng_err(0), LLM_OK);
    ck_assert_int_eq(wire_nng_err(NNG_ETIMEDOUT), LLM_ETIMEDOUT);
    ck_assert_int_eq(wire_nng_err(NNG_ECLOSED), LLM_ECLOSED);
    ck_assert_int_eq(wire_nng_err(NNG_ECONNREFUSED), LLM_EIO);
    ck_assert_int_eq(wire_nng_err(NNG_EMSGSIZE), LLM_ERANGE);
}
END_TEST

Suite *wire_suite(void);

Suite *
wire_suite(void)
{
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("wire");
    tcase_add_test(tc, test_round_trip_sets_the_version);
    tcase_add_test(tc, test_refuses_wrong_version_no_body_garbage_and_oversize);
    tcase_add_test(tc, test_error_reply_carries_code_message_and_retry);
    tcase_add_test(tc, test_nng_errors_translate);
    suite_add_tcase(s, tc);
    return s;
}
