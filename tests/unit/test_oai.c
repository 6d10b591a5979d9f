/*
 * test_oai.c - the OpenAI JSON layer: every request field with its default, null and
 * bounds; every refusal with its status, param and code (and its error JSON read back);
 * hostile bodies (truncated, trailing bytes, bad UTF-8 raw and escaped, NUL escapes,
 * 100000 nested brackets); and the response, chunk, model and error objects, read back
 * with cJSON field by field, with the stream chunks also compared byte for byte.
 */
#include "llm_err.h"
#include "oai.h"
#include "utf8.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers -------------------------------------------------------------------------- */

/* q returns a malloc'd copy of s with every ' turned into ", so bodies read as JSON. */
static char *
q(const char *s)
{
    char *c = strdup(s);
    ck_assert_ptr_nonnull(c);
    for (char *p = c; *p; p++)
        if (*p == '\'')
            *p = '"';
    return c;
}

static int
parse_q(oai_kind kind, const char *body, oai_request *r, oai_error *e)
{
    char *b = q(body);
    int rc = oai_parse(b, strlen(b), kind, r, e);
    free(b);
    return rc;
}

/* ok_q parses a body that must be accepted. */
static void
ok_q(oai_kind kind, const char *body, oai_request *r)
{
    oai_error e;
    int rc = parse_q(kind, body, r, &e);
    ck_assert_msg(rc == LLM_OK, "refused %s: %s", body, e.message);
}

static bool
is_zeroed(const oai_request *r)
{
    static const oai_request zero;
    return memcmp(r, &zero, sizeof(zero)) == 0;
}

/* parse_back parses (and frees) formatter output, which must be valid JSON in UTF-8. */
static cJSON *
parse_back(char *s)
{
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(utf8_valid(s, strlen(s), NULL), "output is not UTF-8: %s", s);
    cJSON *j = cJSON_Parse(s);
    ck_assert_msg(j != NULL, "output is not JSON: %s", s);
    free(s);
    return j;
}

static const cJSON *
jget(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(v != NULL, "no member '%s'", k);
    return v;
}

static const char *
jstr(const cJSON *o, const char *k)
{
    const cJSON *v = jget(o, k);
    ck_assert_msg(cJSON_IsString(v), "'%s' is not a string", k);
    return v->valuestring;
}

static double
jnum(const cJSON *o, const char *k)
{
    const cJSON *v = jget(o, k);
    ck_assert_msg(cJSON_IsNumber(v), "'%s' is not a number", k);
    return v->valuedouble;
}

static void
jnull(const cJSON *o, const char *k)
{
    ck_assert_msg(cJSON_IsNull(jget(o, k)), "'%s' is not null", k);
}

/* refused checks one refusal of raw body[0..len): the code, status 400, type, param,
 * the error code and a piece of the message; *out left zeroed; the error JSON reads
 * back with the same fields. */
static void
refused_raw(oai_kind kind, const char *body, size_t len, int want_rc, const char *param,
            const char *code, const char *msg_part)
{
    oai_request r;
    oai_error e;
    memset(&r, 0x5a, sizeof(r));
    int rc = oai_parse(body, len, kind, &r, &e);
    ck_assert_msg(rc == want_rc, "%.200s: rc %d, want %d (%s)", body, rc, want_rc, e.message);
    ck_assert(is_zeroed(&r));
    ck_assert_int_eq(e.status, 400);
    ck_assert_str_eq(e.type, "invalid_request_error");
    ck_assert_msg(strcmp(e.param, param) == 0, "%.200s: param '%s', want '%s'", body, e.param,
                  param);
    if (code)
        ck_assert_msg(e.code && strcmp(e.code, code) == 0, "%.200s: code %s, want %s", body,
                      e.code ? e.code : "NULL", code);
    else
        ck_assert_ptr_null(e.code);
    ck_assert_msg(strstr(e.message, msg_part) != NULL, "%.200s: message '%s' lacks '%s'", body,
                  e.message, msg_part);
    ck_assert(utf8_valid(e.message, strlen(e.message), NULL));
    ck_assert(utf8_valid(e.param, strlen(e.param), NULL));

    cJSON *j = parse_back(oai_error_json(&e));
    const cJSON *err = jget(j, "error");
    ck_assert_str_eq(jstr(err, "message"), e.message);
    ck_assert_str_eq(jstr(err, "type"), "invalid_request_error");
    if (param[0])
        ck_assert_str_eq(jstr(err, "param"), param);
    else
        jnull(err, "param");
    if (code)
        ck_assert_str_eq(jstr(err, "code"), code);
    else
        jnull(err, "code");
    cJSON_Delete(j);
}

/* refused: refused_raw on a body written with ' for ". */
static void
refused(oai_kind kind, const char *body, int want_rc, const char *param, const char *code,
        const char *msg_part)
{
    char *b = q(body);
    refused_raw(kind, b, strlen(b), want_rc, param, code, msg_part);
    free(b);
}

#define CMPL OAI_COMPLETIONS
#define CHAT OAI_CHAT

/* ---- parse ---------------------------------------------------------------------------- */

START_TEST(test_completion_with_only_model_and_prompt_gets_defaults)
{
    oai_request r;
    ok_q(CMPL, "{'model':'m','prompt':'hello'}", &r);
    ck_assert_int_eq(r.kind, CMPL);
    ck_assert_str_eq(r.model, "m");
    ck_assert_str_eq(r.prompt, "hello");
    ck_assert_ptr_null(r.prompt_ids);
    ck_assert_uint_eq(r.n_prompt_ids, 0);
    ck_assert_uint_eq(r.n_messages, 0);
    ck_assert_int_eq(r.max_tokens, 0);
    ck_assert(r.temperature == 1.0);
    ck_assert(r.top_p == 1.0);
    ck_assert_int_eq(r.top_k, 0);
    ck_assert(!r.has_seed);
    ck_assert_int_eq(r.n_stop, 0);
    ck_assert(!r.stream);
    ck_assert(!r.include_usage);
    ck_assert_ptr_null(r.user);
    ck_assert_str_eq(r.priority, "");
    oai_request_fini(&r);
    ck_assert(is_zeroed(&r));
}
END_TEST

START_TEST(test_completion_reads_every_field)
{
    oai_request r;
    ok_q(CMPL,
         "{'model':'llama-3','prompt':'Once','max_tokens':16,'temperature':0.5,'top_p':0.9,"
         "'top_k':40,'seed':-7,'stop':['\\n','END'],'stream':true,"
         "'stream_options':{'include_usage':true},'user':'u-1','priority':'high','n':1,"
         "'presence_penalty':0,'frequency_penalty':0.0,'logit_bias':{},'logprobs':0,"
         "'echo':false,'best_of':1,'suffix':''}",
         &r);
    ck_assert_str_eq(r.model, "llama-3");
    ck_assert_str_eq(r.prompt, "Once");
    ck_assert_int_eq(r.max_tokens, 16);
    ck_assert(r.temperature == 0.5);
    ck_assert(r.top_p == 0.9);
    ck_assert_int_eq(r.top_k, 40);
    ck_assert(r.has_seed);
    ck_assert_int_eq(r.seed, -7);
    ck_assert_int_eq(r.n_stop, 2);
    ck_assert_str_eq(r.stop[0], "\n");
    ck_assert_str_eq(r.stop[1], "END");
    ck_assert(r.stream);
    ck_assert(r.include_usage);
    ck_assert_str_eq(r.user, "u-1");
    ck_assert_str_eq(r.priority, "high");
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_every_priority_tier_is_accepted)
{
    const char *tiers[] = {"critical", "high", "normal", "low", "background"};
    for (int i = 0; i < 5; i++) {
        char body[128];
        oai_request r;
        snprintf(body, sizeof(body), "{'model':'m','prompt':'x','priority':'%s'}", tiers[i]);
        ok_q(CMPL, body, &r);
        ck_assert_str_eq(r.priority, tiers[i]);
        oai_request_fini(&r);
    }
}
END_TEST

START_TEST(test_prompt_may_be_one_string_in_an_array)
{
    oai_request r;
    ok_q(CMPL, "{'model':'m','prompt':['just one']}", &r);
    ck_assert_str_eq(r.prompt, "just one");
    ck_assert_ptr_null(r.prompt_ids);
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_prompt_may_be_token_ids_at_their_bounds)
{
    oai_request r;
    ok_q(CMPL, "{'model':'m','prompt':[0,1,2147483647]}", &r);
    ck_assert_ptr_null(r.prompt);
    ck_assert_uint_eq(r.n_prompt_ids, 3);
    ck_assert_int_eq(r.prompt_ids[0], 0);
    ck_assert_int_eq(r.prompt_ids[1], 1);
    ck_assert_int_eq(r.prompt_ids[2], 2147483647);
    oai_request_fini(&r);
    ok_q(CMPL, "{'model':'m','prompt':[[5,6]]}", &r);
    ck_assert_uint_eq(r.n_prompt_ids, 2);
    ck_assert_int_eq(r.prompt_ids[1], 6);
    oai_request_fini(&r);
}
END_TEST

/* ids_body: a completions body with n token ids (malloc'd). */
static char *
ids_body(size_t n)
{
    char *b = malloc(64 + 2 * n);
    ck_assert_ptr_nonnull(b);
    size_t o = (size_t)sprintf(b, "{\"model\":\"m\",\"prompt\":[");
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(b + o, i ? ",7" : "7");
    strcpy(b + o, "]}");
    return b;
}

START_TEST(test_prompt_ids_are_accepted_up_to_the_limit_and_refused_past_it)
{
    char *b = ids_body(OAI_MAX_PROMPT_IDS);
    oai_request r;
    oai_error e;
    ck_assert_int_eq(oai_parse(b, strlen(b), CMPL, &r, &e), LLM_OK);
    ck_assert_uint_eq(r.n_prompt_ids, OAI_MAX_PROMPT_IDS);
    oai_request_fini(&r);
    free(b);
    b = ids_body(OAI_MAX_PROMPT_IDS + 1);
    refused_raw(CMPL, b, strlen(b), LLM_EINVAL, "prompt", "array_above_max_length", "too long");
    free(b);
}
END_TEST

START_TEST(test_chat_reads_roles_and_concatenates_text_parts)
{
    oai_request r;
    ok_q(CHAT,
         "{'model':'m','messages':["
         "{'role':'system','content':'Be brief.'},"
         "{'role':'developer','content':'Dev.'},"
         "{'role':'user','name':'ann','content':[{'type':'text','text':'Hel'},"
         "{'type':'text','text':'lo'}]},"
         "{'role':'assistant','content':null,'tool_calls':[],'refusal':null},"
         "{'role':'assistant'},"
         "{'role':'user','content':''}]}",
         &r);
    ck_assert_uint_eq(r.n_messages, 6);
    const char *roles[] = {"system", "system", "user", "assistant", "assistant", "user"};
    const char *contents[] = {"Be brief.", "Dev.", "Hello", "", "", ""};
    for (int i = 0; i < 6; i++) {
        ck_assert_str_eq(r.roles[i], roles[i]);
        ck_assert_str_eq(r.contents[i], contents[i]);
    }
    ck_assert_ptr_null(r.prompt);
    ck_assert_ptr_null(r.prompt_ids);
    oai_request_fini(&r);
    ck_assert(is_zeroed(&r));
}
END_TEST

START_TEST(test_chat_max_completion_tokens_wins_over_max_tokens)
{
    oai_request r;
    ok_q(CHAT,
         "{'model':'m','messages':[{'role':'user','content':'x'}],'max_tokens':5,"
         "'max_completion_tokens':9}",
         &r);
    ck_assert_int_eq(r.max_tokens, 9);
    oai_request_fini(&r);
    ok_q(CHAT, "{'model':'m','messages':[{'role':'user','content':'x'}],'max_tokens':5}", &r);
    ck_assert_int_eq(r.max_tokens, 5);
    oai_request_fini(&r);
    ok_q(CHAT,
         "{'model':'m','messages':[{'role':'user','content':'x'}],'max_completion_tokens':1000000}",
         &r);
    ck_assert_int_eq(r.max_tokens, 1000000);
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_json_null_means_not_given)
{
    oai_request r;
    ok_q(CMPL,
         "{'model':'m','prompt':'p','max_tokens':null,'temperature':null,'top_p':null,"
         "'top_k':null,'seed':null,'stop':null,'stream':null,'stream_options':null,"
         "'user':null,'priority':null,'n':null,'presence_penalty':null,"
         "'frequency_penalty':null,'logit_bias':null,'logprobs':null,'echo':null,"
         "'best_of':null,'suffix':null}",
         &r);
    ck_assert_int_eq(r.max_tokens, 0);
    ck_assert(r.temperature == 1.0 && r.top_p == 1.0);
    ck_assert(!r.has_seed && r.n_stop == 0 && !r.stream && !r.user && !r.priority[0]);
    oai_request_fini(&r);
    ok_q(CHAT,
         "{'model':'m','messages':[{'role':'user','content':'x'}],"
         "'max_completion_tokens':null,'top_logprobs':null,'response_format':null,"
         "'tools':null,'functions':null,'tool_choice':null,'function_call':null,"
         "'parallel_tool_calls':null,'metadata':null,'store':null,'service_tier':null,"
         "'reasoning_effort':null,'prediction':null,'audio':null,'modalities':null}",
         &r);
    ck_assert_int_eq(r.max_tokens, 0);
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_chat_accepts_neutral_values_of_unsupported_features)
{
    oai_request r;
    ok_q(CHAT,
         "{'model':'m','messages':[{'role':'user','content':'x'}],'logprobs':false,"
         "'top_logprobs':0,'response_format':{'type':'text'},'tools':[],'functions':[],"
         "'tool_choice':'none','function_call':'none','parallel_tool_calls':true,"
         "'metadata':{'k':'v'},'store':false,'service_tier':'auto',"
         "'reasoning_effort':'low','modalities':['text'],'presence_penalty':0,"
         "'frequency_penalty':0,'logit_bias':{},'n':1,"
         "'stream':true,'stream_options':{'include_usage':false,'include_obfuscation':true}}",
         &r);
    ck_assert(r.stream);
    ck_assert(!r.include_usage);
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_stop_may_be_one_string_or_an_empty_array)
{
    oai_request r;
    ok_q(CMPL, "{'model':'m','prompt':'p','stop':'###'}", &r);
    ck_assert_int_eq(r.n_stop, 1);
    ck_assert_str_eq(r.stop[0], "###");
    oai_request_fini(&r);
    ok_q(CMPL, "{'model':'m','prompt':'p','stop':[]}", &r);
    ck_assert_int_eq(r.n_stop, 0);
    oai_request_fini(&r);
    ok_q(CMPL, "{'model':'m','prompt':'p','stop':['a','b','c','d']}", &r);
    ck_assert_int_eq(r.n_stop, 4);
    ck_assert_str_eq(r.stop[3], "d");
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_numbers_at_their_bounds_are_accepted)
{
    oai_request r;
    ok_q(CMPL,
         "{'model':'m','prompt':'p','max_tokens':1,'temperature':0,'top_p':0,'top_k':0,"
         "'seed':0}",
         &r);
    ck_assert_int_eq(r.max_tokens, 1);
    ck_assert(r.temperature == 0.0 && r.top_p == 0.0);
    ck_assert(r.has_seed && r.seed == 0);
    oai_request_fini(&r);
    ok_q(CMPL,
         "{'model':'m','prompt':'p','max_tokens':1000000,'temperature':2,'top_p':1,"
         "'top_k':100000,'seed':9007199254740991}",
         &r);
    ck_assert_int_eq(r.max_tokens, 1000000);
    ck_assert(r.temperature == 2.0 && r.top_p == 1.0);
    ck_assert_int_eq(r.top_k, 100000);
    ck_assert(r.seed == 9007199254740991LL);
    oai_request_fini(&r);
    ok_q(CMPL, "{'model':'m','prompt':'p','max_tokens':16.0,'seed':-9007199254740991}", &r);
    ck_assert_int_eq(r.max_tokens, 16);
    ck_assert(r.seed == -9007199254740991LL);
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_the_last_of_a_duplicated_key_wins)
{
    oai_request r;
    ok_q(CMPL, "{'model':'a','prompt':'p','model':'b','max_tokens':3,'max_tokens':4}", &r);
    ck_assert_str_eq(r.model, "b");
    ck_assert_int_eq(r.max_tokens, 4);
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_body_is_read_only_up_to_len_and_needs_no_nul)
{
    const char *buf = "{\"model\":\"m\",\"prompt\":\"p\"}GARBAGE";
    size_t n = strlen(buf) - strlen("GARBAGE");
    oai_request r;
    oai_error e;
    ck_assert_int_eq(oai_parse(buf, n, CMPL, &r, &e), LLM_OK);
    ck_assert_str_eq(r.prompt, "p");
    oai_request_fini(&r);
    char *exact = malloc(n); // no NUL anywhere: ASan would see a read past it
    memcpy(exact, buf, n);
    ck_assert_int_eq(oai_parse(exact, n, CMPL, &r, &e), LLM_OK);
    oai_request_fini(&r);
    free(exact);
    ok_q(CMPL, " \r\n\t{'model':'m','prompt':'p'}\n\t \r", &r);
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_escapes_and_non_ascii_text_arrive_decoded)
{
    oai_request r;
    ok_q(CHAT,
         "{'model':'m','messages':[{'role':'user','content':'q\\'\\\\\\n\\t\\u00e9\\ud83d\\ude00"
         "\xe6\x97\xa5'}],'stop':['\\u2028']}",
         &r);
    ck_assert_str_eq(r.contents[0], "q\"\\\n\t\xc3\xa9\xf0\x9f\x98\x80\xe6\x97\xa5");
    ck_assert_str_eq(r.stop[0], "\xe2\x80\xa8");
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_fini_accepts_null_a_zeroed_struct_and_a_second_call)
{
    oai_request_fini(NULL);
    oai_request r = {0};
    oai_request_fini(&r);
    ok_q(CMPL, "{'model':'m','prompt':'p','user':'x','stop':'s'}", &r);
    oai_request_fini(&r);
    oai_request_fini(&r);
    ck_assert(is_zeroed(&r));
}
END_TEST

/* ---- refuse --------------------------------------------------------------------------- */

START_TEST(test_refuses_every_truncation_of_a_valid_body)
{
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                       "\"max_tokens\":12,\"stop\":[\"x\"],\"stream\":true}";
    size_t n = strlen(body);
    for (size_t len = 0; len < n; len++) {
        char *cut = malloc(len + 1); // exactly len bytes matter; no NUL is read
        memcpy(cut, body, len);
        refused_raw(CHAT, cut, len, LLM_EINVAL, "", NULL, "We could not parse the JSON body");
        free(cut);
    }
    refused_raw(CHAT, NULL, 0, LLM_EINVAL, "", NULL, "We could not parse");
}
END_TEST

START_TEST(test_refuses_bytes_after_the_object)
{
    refused(CMPL, "{'model':'m','prompt':'p'} x", LLM_EINVAL, "", NULL, "could not parse");
    refused(CMPL, "{'model':'m','prompt':'p'}{}", LLM_EINVAL, "", NULL, "could not parse");
    const char nul_after[] = "{\"model\":\"m\",\"prompt\":\"p\"}\0";
    refused_raw(CMPL, nul_after, sizeof(nul_after) - 1, LLM_EINVAL, "", NULL, "could not parse");
}
END_TEST

START_TEST(test_refuses_bodies_that_are_not_objects)
{
    const char *bodies[] = {"[]", "'x'", "1", "null", "true", "[{'model':'m'}]"};
    for (int i = 0; i < 6; i++)
        refused(CMPL, bodies[i], LLM_EINVAL, "", NULL, "must be an object");
    refused(CMPL, "not json", LLM_EINVAL, "", NULL, "could not parse");
    refused(CMPL, "{'model':'m',}", LLM_EINVAL, "", NULL, "could not parse");
}
END_TEST

START_TEST(test_survives_a_hundred_thousand_nested_brackets)
{
    size_t n = 100000;
    char *b = malloc(2 * n + 64);
    memset(b, '[', n);
    refused_raw(CMPL, b, n, LLM_EINVAL, "", NULL, "could not parse");
    memset(b + n, ']', n);
    refused_raw(CMPL, b, 2 * n, LLM_EINVAL, "", NULL, "could not parse");
    // Within cJSON's nesting limit the type check answers.
    int depth = 900;
    int o = sprintf(b, "{\"model\":\"m\",\"prompt\":\"p\",\"stop\":");
    memset(b + o, '[', (size_t)depth);
    memset(b + o + depth, ']', (size_t)depth);
    strcpy(b + o + 2 * depth, "}");
    refused_raw(CMPL, b, strlen(b), LLM_EINVAL, "stop[0]", "invalid_type", "expected a string");
    free(b);
}
END_TEST

START_TEST(test_refuses_unrecognized_arguments)
{
    refused(CMPL, "{'model':'m','prompt':'p','foo':1}", LLM_EINVAL, "foo", NULL,
            "Unrecognized request argument supplied: foo");
    refused(CMPL, "{'model':'m','prompt':'p','messages':[]}", LLM_EINVAL, "messages", NULL,
            "Unrecognized request argument supplied: messages");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':'x'}],'prompt':'p'}",
            LLM_EINVAL, "prompt", NULL, "supplied: prompt");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':'x'}],'echo':false}",
            LLM_EINVAL, "echo", NULL, "supplied: echo");
    refused(CMPL, "{'model':'m','prompt':'p','max_completion_tokens':5}", LLM_EINVAL,
            "max_completion_tokens", NULL, "supplied: max_completion_tokens");
    refused(CMPL, "{'Model':'m','prompt':'p'}", LLM_EINVAL, "Model", NULL, "supplied: Model");
    refused(CMPL, "{'model':'m','prompt':'p','stream':true,'stream_options':{'x':1}}", LLM_EINVAL,
            "stream_options.x", NULL, "stream_options argument");
}
END_TEST

START_TEST(test_refuses_missing_required_arguments)
{
    refused(CMPL, "{'prompt':'p'}", LLM_EINVAL, "model", "missing_required_parameter",
            "Missing required parameter: 'model'.");
    refused(CMPL, "{'model':null,'prompt':'p'}", LLM_EINVAL, "model", "missing_required_parameter",
            "'model'");
    refused(CMPL, "{'model':'m'}", LLM_EINVAL, "prompt", "missing_required_parameter", "'prompt'");
    refused(CHAT, "{'model':'m'}", LLM_EINVAL, "messages", "missing_required_parameter",
            "Missing required parameter: 'messages'.");
    refused(CHAT, "{'model':'m','messages':null}", LLM_EINVAL, "messages",
            "missing_required_parameter", "'messages'");
    refused(CHAT, "{}", LLM_EINVAL, "model", "missing_required_parameter", "'model'");
}
END_TEST

START_TEST(test_refuses_wrong_json_types_naming_the_param)
{
    static const struct {
        const char *extra, *param, *msg;
    } cases[] = {
        {"'max_tokens':'5'", "max_tokens",
         "Invalid type for 'max_tokens': expected an integer, but got a string instead."},
        {"'max_tokens':true", "max_tokens", "but got a boolean instead"},
        {"'max_tokens':1.5", "max_tokens", "but got a decimal instead"},
        {"'max_tokens':[]", "max_tokens", "but got an array instead"},
        {"'temperature':'1'", "temperature", "expected a number, but got a string"},
        {"'temperature':false", "temperature", "expected a number, but got a boolean"},
        {"'top_p':{}", "top_p", "but got an object instead"},
        {"'top_k':true", "top_k", "expected an integer"},
        {"'top_k':2.5", "top_k", "but got a decimal"},
        {"'seed':'1'", "seed", "expected an integer"},
        {"'seed':0.5", "seed", "but got a decimal"},
        {"'stop':5", "stop", "expected a string or an array of strings"},
        {"'stop':[5]", "stop[0]", "expected a string, but got an integer"},
        {"'stream':1", "stream", "expected a boolean, but got an integer"},
        {"'stream':'true'", "stream", "expected a boolean"},
        {"'stream':true,'stream_options':[]", "stream_options", "expected an object"},
        {"'stream':true,'stream_options':{'include_usage':1}", "stream_options.include_usage",
         "expected a boolean"},
        {"'user':1", "user", "expected a string"},
        {"'priority':1", "priority", "expected a string"},
        {"'n':'1'", "n", "expected an integer"},
        {"'presence_penalty':'0'", "presence_penalty", "expected a number"},
        {"'logit_bias':[]", "logit_bias", "expected an object"},
        {"'logprobs':true", "logprobs", "expected an integer"},
        {"'echo':0", "echo", "expected a boolean"},
        {"'suffix':0", "suffix", "expected a string"},
        {"'best_of':'1'", "best_of", "expected an integer"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{'model':'m','prompt':'p',%s}", cases[i].extra);
        refused(CMPL, body, LLM_EINVAL, cases[i].param, "invalid_type", cases[i].msg);
    }
    refused(CMPL, "{'model':5,'prompt':'p'}", LLM_EINVAL, "model", "invalid_type",
            "expected a string, but got an integer");
    refused(CMPL, "{'model':'m','prompt':{}}", LLM_EINVAL, "prompt", "invalid_type",
            "expected a string or an array of integers");
    refused(CMPL, "{'model':'m','prompt':[true]}", LLM_EINVAL, "prompt[0]", "invalid_type",
            "but got a boolean");
    refused(CHAT, "{'model':'m','messages':{}}", LLM_EINVAL, "messages", "invalid_type",
            "expected an array, but got an object");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':'x'}],'logprobs':0}",
            LLM_EINVAL, "logprobs", "invalid_type", "expected a boolean");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':'x'}],'tools':{}}", LLM_EINVAL,
            "tools", "invalid_type", "expected an array");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':'x'}],'metadata':1}",
            LLM_EINVAL, "metadata", "invalid_type", "expected an object");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':'x'}],'store':'no'}",
            LLM_EINVAL, "store", "invalid_type", "expected a boolean");
}
END_TEST

START_TEST(test_refuses_integers_out_of_range)
{
    static const struct {
        const char *extra, *param, *code, *msg;
    } cases[] = {
        {"'max_tokens':0", "max_tokens", "integer_below_min_value",
         "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 "
         "instead."},
        {"'max_tokens':-1", "max_tokens", "integer_below_min_value", "got -1 instead"},
        {"'max_tokens':1000001", "max_tokens", "integer_above_max_value",
         "Expected a value <= 1000000, but got 1000001 instead."},
        {"'max_tokens':1e999", "max_tokens", "integer_above_max_value", "above maximum"},
        {"'max_tokens':-1e999", "max_tokens", "integer_below_min_value", "below minimum"},
        {"'max_tokens':1e30", "max_tokens", "integer_above_max_value", "above maximum"},
        {"'top_k':-1", "top_k", "integer_below_min_value", ">= 0"},
        {"'top_k':100001", "top_k", "integer_above_max_value", "<= 100000"},
        {"'seed':1e19", "seed", "integer_above_max_value", "above maximum"},
        // Past 2^53 a double cannot tell neighbouring integers apart.
        {"'seed':9007199254740992", "seed", "integer_above_max_value", "<= 9007199254740991"},
        {"'seed':-9007199254740992", "seed", "integer_below_min_value", ">= -9007199254740991"},
        {"'seed':9223372036854775807", "seed", "integer_above_max_value", "above maximum"},
        {"'n':0", "n", "integer_below_min_value", ">= 1"},
        {"'n':129", "n", "integer_above_max_value", "<= 128"},
        {"'logprobs':6", "logprobs", "integer_above_max_value", "<= 5"},
        {"'best_of':0", "best_of", "integer_below_min_value", ">= 1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{'model':'m','prompt':'p',%s}", cases[i].extra);
        refused(CMPL, body, LLM_EINVAL, cases[i].param, cases[i].code, cases[i].msg);
    }
    refused(CHAT,
            "{'model':'m','messages':[{'role':'user','content':'x'}],'max_completion_tokens':0}",
            LLM_EINVAL, "max_completion_tokens", "integer_below_min_value", ">= 1");
}
END_TEST

START_TEST(test_refuses_decimals_out_of_range)
{
    static const struct {
        const char *extra, *param, *code, *msg;
    } cases[] = {
        {"'temperature':-0.1", "temperature", "decimal_below_min_value",
         "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got "
         "-0.1 instead."},
        {"'temperature':2.01", "temperature", "decimal_above_max_value",
         "Expected a value <= 2, but got 2.01 instead."},
        {"'temperature':1e999", "temperature", "decimal_above_max_value", "above maximum"},
        {"'top_p':1.5", "top_p", "decimal_above_max_value", "<= 1"},
        {"'top_p':-1", "top_p", "decimal_below_min_value", ">= 0"},
        {"'presence_penalty':2.5", "presence_penalty", "decimal_above_max_value", "<= 2"},
        {"'frequency_penalty':-3", "frequency_penalty", "decimal_below_min_value", ">= -2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{'model':'m','prompt':'p',%s}", cases[i].extra);
        refused(CMPL, body, LLM_EINVAL, cases[i].param, cases[i].code, cases[i].msg);
    }
}
END_TEST

START_TEST(test_refuses_n_above_one_as_unsupported)
{
    refused(CMPL, "{'model':'m','prompt':'p','n':2}", LLM_ENOTSUP, "n", "unsupported_parameter",
            "n > 1 is not supported");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':'x'}],'n':128}", LLM_ENOTSUP,
            "n", "unsupported_parameter", "n > 1 is not supported");
}
END_TEST

START_TEST(test_refuses_unsupported_features_away_from_their_neutral_value)
{
    static const struct {
        oai_kind kind;
        const char *extra, *param;
    } cases[] = {
        {CMPL, "'presence_penalty':0.5", "presence_penalty"},
        {CHAT, "'frequency_penalty':-1", "frequency_penalty"},
        {CMPL, "'logit_bias':{'50256':-100}", "logit_bias"},
        {CMPL, "'logprobs':1", "logprobs"},
        {CHAT, "'logprobs':true", "logprobs"},
        {CHAT, "'top_logprobs':2", "top_logprobs"},
        {CMPL, "'echo':true", "echo"},
        {CMPL, "'best_of':2", "best_of"},
        {CMPL, "'suffix':'tail'", "suffix"},
        {CHAT, "'response_format':{'type':'json_object'}", "response_format"},
        {CHAT, "'response_format':{'type':'json_schema','json_schema':{}}", "response_format"},
        {CHAT, "'tools':[{'type':'function','function':{'name':'f'}}]", "tools"},
        {CHAT, "'functions':[{'name':'f'}]", "functions"},
        {CHAT, "'tool_choice':'auto'", "tool_choice"},
        {CHAT, "'tool_choice':{'type':'function','function':{'name':'f'}}", "tool_choice"},
        {CHAT, "'function_call':'auto'", "function_call"},
        {CHAT, "'prediction':{'type':'content','content':'x'}", "prediction"},
        {CHAT, "'audio':{'voice':'alloy','format':'mp3'}", "audio"},
        {CHAT, "'modalities':['text','audio']", "modalities"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 cases[i].kind == CHAT
                     ? "{'model':'m','messages':[{'role':'user','content':'x'}],%s}"
                     : "{'model':'m','prompt':'p',%s}",
                 cases[i].extra);
        refused(cases[i].kind, body, LLM_ENOTSUP, cases[i].param, "unsupported_parameter",
                cases[i].param);
    }
    refused(CHAT,
            "{'model':'m','messages':[{'role':'user','content':'x'}],"
            "'response_format':{'type':'yaml'}}",
            LLM_EINVAL, "response_format.type", "invalid_value", "'yaml'");
    refused(CHAT,
            "{'model':'m','messages':[{'role':'user','content':'x'}],"
            "'response_format':{}}",
            LLM_EINVAL, "response_format.type", "missing_required_parameter", "type");
}
END_TEST

START_TEST(test_refuses_bad_prompts)
{
    refused(CMPL, "{'model':'m','prompt':''}", LLM_EINVAL, "prompt", "empty_string",
            "empty string");
    refused(CMPL, "{'model':'m','prompt':['']}", LLM_EINVAL, "prompt[0]", "empty_string",
            "empty string");
    refused(CMPL, "{'model':'m','prompt':[]}", LLM_EINVAL, "prompt", "empty_array", "empty array");
    refused(CMPL, "{'model':'m','prompt':[[]]}", LLM_EINVAL, "prompt[0]", "empty_array",
            "empty array");
    refused(CMPL, "{'model':'m','prompt':['a','b']}", LLM_ENOTSUP, "prompt",
            "unsupported_parameter", "Batched prompts");
    refused(CMPL, "{'model':'m','prompt':[[1],[2]]}", LLM_ENOTSUP, "prompt",
            "unsupported_parameter", "Batched prompts");
    refused(CMPL, "{'model':'m','prompt':[1,-1]}", LLM_EINVAL, "prompt[1]",
            "integer_below_min_value", ">= 0");
    refused(CMPL, "{'model':'m','prompt':[2147483648]}", LLM_EINVAL, "prompt[0]",
            "integer_above_max_value", "<= 2147483647");
    refused(CMPL, "{'model':'m','prompt':[1,2.5]}", LLM_EINVAL, "prompt[1]", "invalid_type",
            "decimal");
    refused(CMPL, "{'model':'m','prompt':[1,'a']}", LLM_EINVAL, "prompt[1]", "invalid_type",
            "string");
    refused(CMPL, "{'model':'m','prompt':[[1,'a']]}", LLM_EINVAL, "prompt[0][1]", "invalid_type",
            "string");
}
END_TEST

/* chat_body: a chat body with n copies of a user message (malloc'd). */
static char *
chat_body(size_t n)
{
    const char *msg = "{\"role\":\"user\",\"content\":\"x\"}";
    char *b = malloc(64 + n * (strlen(msg) + 1));
    size_t o = (size_t)sprintf(b, "{\"model\":\"m\",\"messages\":[");
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(b + o, "%s%s", i ? "," : "", msg);
    strcpy(b + o, "]}");
    return b;
}

START_TEST(test_refuses_bad_messages)
{
    char *b = chat_body(OAI_MAX_MESSAGES);
    oai_request r;
    oai_error e;
    ck_assert_int_eq(oai_parse(b, strlen(b), CHAT, &r, &e), LLM_OK);
    ck_assert_uint_eq(r.n_messages, OAI_MAX_MESSAGES);
    oai_request_fini(&r);
    free(b);
    b = chat_body(OAI_MAX_MESSAGES + 1);
    refused_raw(CHAT, b, strlen(b), LLM_EINVAL, "messages", "array_above_max_length", "too long");
    free(b);

    refused(CHAT, "{'model':'m','messages':[]}", LLM_EINVAL, "messages", "empty_array",
            "Invalid 'messages': empty array.");
    refused(CHAT, "{'model':'m','messages':['hi']}", LLM_EINVAL, "messages[0]", "invalid_type",
            "expected an object, but got a string");
    refused(CHAT, "{'model':'m','messages':[{'content':'x'}]}", LLM_EINVAL, "messages[0].role",
            "missing_required_parameter", "'messages[0].role'");
    refused(CHAT, "{'model':'m','messages':[{'role':1,'content':'x'}]}", LLM_EINVAL,
            "messages[0].role", "invalid_type", "expected a string");
    refused(CHAT,
            "{'model':'m','messages':[{'role':'user','content':'x'},{'role':'bot',"
            "'content':'x'}]}",
            LLM_EINVAL, "messages[1].role", "invalid_value",
            "Invalid value: 'bot'. Supported values are:");
    refused(CHAT, "{'model':'m','messages':[{'role':'tool','content':'x','tool_call_id':'c'}]}",
            LLM_EINVAL, "messages[0]", NULL, "'tool_call_id' was unexpected");
    refused(CHAT, "{'model':'m','messages':[{'role':'tool','content':'x'}]}", LLM_ENOTSUP,
            "messages[0].role", "unsupported_parameter", "role 'tool'");
    refused(CHAT, "{'model':'m','messages':[{'role':'function','content':'x'}]}", LLM_ENOTSUP,
            "messages[0].role", "unsupported_parameter", "role 'function'");
    refused(CHAT, "{'model':'m','messages':[{'role':'user'}]}", LLM_EINVAL, "messages[0].content",
            "missing_required_parameter", "content");
    refused(CHAT, "{'model':'m','messages':[{'role':'system','content':null}]}", LLM_EINVAL,
            "messages[0].content", "missing_required_parameter", "content");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':5}]}", LLM_EINVAL,
            "messages[0].content", "invalid_type", "an array of content parts");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':[]}]}", LLM_EINVAL,
            "messages[0].content", "empty_array", "empty array");
    refused(CHAT,
            "{'model':'m','messages':[{'role':'user','content':[{'type':'text','text':'a'},"
            "{'type':'image_url','image_url':{'url':'http://x'}}]}]}",
            LLM_ENOTSUP, "messages[0].content[1].type", "unsupported_parameter", "'image_url'");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':[{'text':'a'}]}]}", LLM_EINVAL,
            "messages[0].content[0].type", "missing_required_parameter", "type");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':[{'type':'text'}]}]}",
            LLM_EINVAL, "messages[0].content[0].text", "missing_required_parameter", "text");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':[{'type':'text','text':1}]}]}",
            LLM_EINVAL, "messages[0].content[0].text", "invalid_type", "expected a string");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':['a']}]}", LLM_EINVAL,
            "messages[0].content[0]", "invalid_type", "expected an object");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':'x','foo':1}]}", LLM_EINVAL,
            "messages[0]", NULL,
            "Additional properties are not allowed ('foo' was unexpected) - 'messages.0'");
    refused(CHAT,
            "{'model':'m','messages':[{'role':'assistant','content':'x','tool_calls':[{'id':'c'}]"
            "}]}",
            LLM_ENOTSUP, "messages[0].tool_calls", "unsupported_parameter", "tool calls");
    refused(CHAT,
            "{'model':'m','messages':[{'role':'assistant','content':'x','function_call':{}}]}",
            LLM_ENOTSUP, "messages[0].function_call", "unsupported_parameter", "function");
    refused(CHAT, "{'model':'m','messages':[{'role':'user','content':'x','name':5}]}", LLM_EINVAL,
            "messages[0].name", "invalid_type", "expected a string");
}
END_TEST

START_TEST(test_refuses_bad_stop_sequences)
{
    refused(CMPL, "{'model':'m','prompt':'p','stop':['a','b','c','d','e']}", LLM_EINVAL, "stop",
            "array_above_max_length", "maximum length 4");
    refused(CMPL, "{'model':'m','prompt':'p','stop':''}", LLM_EINVAL, "stop", "empty_string",
            "empty string");
    refused(CMPL, "{'model':'m','prompt':'p','stop':['a','']}", LLM_EINVAL, "stop[1]",
            "empty_string", "empty string");
    char body[700], s[300];
    memset(s, 'x', 256);
    s[256] = '\0';
    snprintf(body, sizeof(body), "{'model':'m','prompt':'p','stop':['%s']}", s);
    oai_request r;
    ok_q(CMPL, body, &r);
    ck_assert_uint_eq(strlen(r.stop[0]), 256);
    oai_request_fini(&r);
    strcat(s, "x");
    snprintf(body, sizeof(body), "{'model':'m','prompt':'p','stop':['%s']}", s);
    refused(CMPL, body, LLM_EINVAL, "stop[0]", "string_above_max_length",
            "maximum length 256, but got a string with length 257");
}
END_TEST

START_TEST(test_refuses_empty_or_long_model_and_long_user)
{
    char body[1000], s[300];
    memset(s, 'm', 255);
    s[255] = '\0';
    snprintf(body, sizeof(body), "{'model':'%s','prompt':'p'}", s);
    oai_request r;
    ok_q(CMPL, body, &r);
    oai_request_fini(&r);
    strcat(s, "m");
    snprintf(body, sizeof(body), "{'model':'%s','prompt':'p'}", s);
    refused(CMPL, body, LLM_EINVAL, "model", "string_above_max_length", "maximum length 255");
    refused(CMPL, "{'model':'','prompt':'p'}", LLM_EINVAL, "model", "empty_string", "empty string");
    snprintf(body, sizeof(body), "{'model':'m','prompt':'p','user':'%s'}", s); // 256: fine
    ok_q(CMPL, body, &r);
    oai_request_fini(&r);
    strcat(s, "u");
    snprintf(body, sizeof(body), "{'model':'m','prompt':'p','user':'%s'}", s);
    refused(CMPL, body, LLM_EINVAL, "user", "string_above_max_length", "maximum length 256");
}
END_TEST

START_TEST(test_refuses_an_unknown_priority)
{
    refused(CMPL, "{'model':'m','prompt':'p','priority':'urgent'}", LLM_EINVAL, "priority",
            "invalid_value", "Invalid value: 'urgent'.");
    refused(CMPL, "{'model':'m','prompt':'p','priority':'HIGH'}", LLM_EINVAL, "priority",
            "invalid_value", "'HIGH'");
    refused(CMPL, "{'model':'m','prompt':'p','priority':''}", LLM_EINVAL, "priority",
            "invalid_value", "''");
}
END_TEST

START_TEST(test_refuses_stream_options_unless_streaming)
{
    const char *msg = "The 'stream_options' parameter is only allowed when 'stream' is enabled.";
    refused(CMPL, "{'model':'m','prompt':'p','stream_options':{'include_usage':true}}", LLM_EINVAL,
            "stream_options", "invalid_value", msg);
    refused(CHAT,
            "{'model':'m','messages':[{'role':'user','content':'x'}],'stream':false,"
            "'stream_options':{}}",
            LLM_EINVAL, "stream_options", "invalid_value", msg);
}
END_TEST

START_TEST(test_refuses_raw_bytes_that_are_not_utf8)
{
    static const struct {
        oai_kind kind;
        const char *fmt, *param;
    } cases[] = {
        {CMPL, "{'model':'%s','prompt':'p'}", "model"},
        {CMPL, "{'model':'m','prompt':'%s'}", "prompt"},
        {CMPL, "{'model':'m','prompt':['%s']}", "prompt[0]"},
        {CMPL, "{'model':'m','prompt':'p','stop':['%s']}", "stop[0]"},
        {CMPL, "{'model':'m','prompt':'p','stop':'%s'}", "stop"},
        {CMPL, "{'model':'m','prompt':'p','user':'%s'}", "user"},
        {CHAT, "{'model':'m','messages':[{'role':'user','content':'%s'}]}", "messages[0].content"},
        {CHAT, "{'model':'m','messages':[{'role':'user','content':[{'type':'text','text':'%s'}]}]}",
         "messages[0].content[0].text"},
    };
    // A stray continuation byte, an overlong '/', a CESU-8 surrogate, a cut sequence, 0xff.
    const char *bad[] = {"a\x80", "\xc0\xaf", "\xed\xa0\x80", "ok\xe6\x97", "\xff"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int k = 0; k < 5; k++) {
            char body[256];
            snprintf(body, sizeof(body), cases[i].fmt, bad[k]);
            refused(cases[i].kind, body, LLM_EINVAL, cases[i].param, "invalid_value",
                    "is not valid UTF-8");
        }
    }
}
END_TEST

START_TEST(test_refuses_lone_surrogate_escapes)
{
    const char *bodies[] = {
        "{'model':'m','prompt':'\\ud800'}",        "{'model':'m','prompt':'\\udc00'}",
        "{'model':'m','prompt':'a\\ud83dz'}",      "{'model':'m','prompt':'\\ud800\\u0041'}",
        "{'model':'m','prompt':'\\ude00\\ud83d'}",
    };
    for (int i = 0; i < 5; i++)
        refused(CMPL, bodies[i], LLM_EINVAL, "", NULL, "could not parse");
}
END_TEST

START_TEST(test_refuses_nul_escapes_anywhere)
{
    const char *nul = "NUL character";
    refused(CMPL, "{'model':'m','prompt':'a\\u0000b'}", LLM_EINVAL, "", "invalid_value", nul);
    refused(CMPL, "{'model':'m\\u0000','prompt':'p'}", LLM_EINVAL, "", "invalid_value", nul);
    refused(CMPL, "{'model':'m','prompt':'p','max_tokens\\u0000x':1}", LLM_EINVAL, "",
            "invalid_value", nul);
    refused(CHAT, "{'model':'m','messages':[{'role':'user\\u0000','content':'x'}]}", LLM_EINVAL, "",
            "invalid_value", nul);
    // cJSON reads a malformed \u as 0, so it is refused too, as bad JSON.
    refused(CMPL, "{'model':'m','prompt':'a\\u00zzb'}", LLM_EINVAL, "", NULL, "could not parse");
    refused(CMPL, "{'model':'m','prompt':'a\\u12'}", LLM_EINVAL, "", NULL, "could not parse");
    // An escaped backslash before u0000 is plain text.
    oai_request r;
    ok_q(CMPL, "{'model':'m','prompt':'a\\\\u0000b'}", &r);
    ck_assert_str_eq(r.prompt, "a\\u0000b");
    oai_request_fini(&r);
}
END_TEST

START_TEST(test_refuses_raw_control_bytes_inside_strings)
{
    refused(CMPL, "{'model':'m','prompt':'line\nbreak'}", LLM_EINVAL, "", NULL, "could not parse");
    refused(CMPL, "{'model':'m','prompt':'tab\there'}", LLM_EINVAL, "", NULL, "could not parse");
    const char raw_nul[] = "{\"model\":\"m\",\"prompt\":\"a\0b\"}";
    refused_raw(CMPL, raw_nul, sizeof(raw_nul) - 1, LLM_EINVAL, "", NULL, "could not parse");
}
END_TEST

START_TEST(test_error_text_stays_utf8_when_the_request_is_not)
{
    // The bad key is echoed with '?' for the bytes that are not UTF-8.
    refused(CMPL, "{'model':'m','prompt':'p','k\xff\xc3':1}", LLM_EINVAL, "k??", NULL,
            "supplied: k??");
    // A long key is cut at a character boundary, never inside one.
    char body[1200], key[700] = "";
    for (int i = 0; i < 200; i++)
        strcat(key, "\xe6\x97\xa5"); // 600 bytes of 3-byte characters
    snprintf(body, sizeof(body), "{\"model\":\"m\",\"prompt\":\"p\",\"%s\":1}", key);
    oai_request r;
    oai_error e;
    ck_assert_int_eq(oai_parse(body, strlen(body), CMPL, &r, &e), LLM_EINVAL);
    ck_assert(utf8_valid(e.message, strlen(e.message), NULL));
    ck_assert(utf8_valid(e.param, strlen(e.param), NULL));
    ck_assert_uint_eq(strlen(e.param), 63);
    cJSON_Delete(parse_back(oai_error_json(&e)));
}
END_TEST

/* ---- format --------------------------------------------------------------------------- */

START_TEST(test_error_json_has_openai_shape)
{
    oai_error e = {.status = 400, .type = "invalid_request_error"};
    snprintf(e.message, sizeof(e.message), "Say \"no\"\n");
    char *s = oai_error_json(&e);
    ck_assert_str_eq(s, "{\"error\":{\"message\":\"Say \\\"no\\\"\\n\",\"type\":"
                        "\"invalid_request_error\",\"param\":null,\"code\":null}}");
    free(s);
    e = (oai_error){.status = 404, .type = "invalid_request_error", .code = "model_not_found"};
    snprintf(e.message, sizeof(e.message), "The model 'x' does not exist");
    snprintf(e.param, sizeof(e.param), "model");
    cJSON *j = parse_back(oai_error_json(&e));
    const cJSON *err = jget(j, "error");
    ck_assert_str_eq(jstr(err, "message"), "The model 'x' does not exist");
    ck_assert_str_eq(jstr(err, "param"), "model");
    ck_assert_str_eq(jstr(err, "code"), "model_not_found");
    cJSON_Delete(j);
    // A NULL type is the request error; a message filled to the brim is still ended.
    e = (oai_error){.status = 500};
    memset(e.message, 'a', sizeof(e.message));
    memset(e.param, 'b', sizeof(e.param));
    j = parse_back(oai_error_json(&e));
    err = jget(j, "error");
    ck_assert_str_eq(jstr(err, "type"), "invalid_request_error");
    ck_assert_uint_eq(strlen(jstr(err, "message")), sizeof(e.message) - 1);
    ck_assert_uint_eq(strlen(jstr(err, "param")), sizeof(e.param) - 1);
    cJSON_Delete(j);
}
END_TEST

static void
check_usage(const cJSON *root, double prompt, double completion, double cached)
{
    const cJSON *u = jget(root, "usage");
    ck_assert(jnum(u, "prompt_tokens") == prompt);
    ck_assert(jnum(u, "completion_tokens") == completion);
    ck_assert(jnum(u, "total_tokens") == prompt + completion);
    ck_assert(jnum(jget(u, "prompt_tokens_details"), "cached_tokens") == cached);
}

START_TEST(test_completion_response_has_every_field)
{
    oai_result res = {.id = "cmpl-1",
                      .created = 1700000000,
                      .model = "m",
                      .text = " world",
                      .finish_reason = "length",
                      .prompt_tokens = 3,
                      .completion_tokens = 4,
                      .cached_tokens = 2};
    char *s = oai_response_json(CMPL, &res);
    ck_assert_str_eq(s, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,"
                        "\"model\":\"m\",\"choices\":[{\"text\":\" world\",\"index\":0,"
                        "\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":{"
                        "\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7,"
                        "\"prompt_tokens_details\":{\"cached_tokens\":2}}}");
    cJSON *j = parse_back(s);
    check_usage(j, 3, 4, 2);
    cJSON_Delete(j);
    // The largest counts still add up.
    res.prompt_tokens = UINT32_MAX;
    res.completion_tokens = UINT32_MAX;
    j = parse_back(oai_response_json(CMPL, &res));
    check_usage(j, UINT32_MAX, UINT32_MAX, 2);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_chat_response_has_every_field)
{
    oai_result res = {.id = "chatcmpl-9",
                      .created = 1700000001,
                      .model = "llama",
                      .text = "Hi!",
                      .finish_reason = "stop",
                      .prompt_tokens = 10,
                      .completion_tokens = 2};
    cJSON *j = parse_back(oai_response_json(CHAT, &res));
    ck_assert_str_eq(jstr(j, "id"), "chatcmpl-9");
    ck_assert_str_eq(jstr(j, "object"), "chat.completion");
    ck_assert(jnum(j, "created") == 1700000001);
    ck_assert_str_eq(jstr(j, "model"), "llama");
    jnull(j, "system_fingerprint");
    const cJSON *choices = jget(j, "choices");
    ck_assert_int_eq(cJSON_GetArraySize(choices), 1);
    const cJSON *c = cJSON_GetArrayItem(choices, 0);
    ck_assert(jnum(c, "index") == 0);
    ck_assert_str_eq(jstr(jget(c, "message"), "role"), "assistant");
    ck_assert_str_eq(jstr(jget(c, "message"), "content"), "Hi!");
    jnull(c, "logprobs");
    ck_assert_str_eq(jstr(c, "finish_reason"), "stop");
    check_usage(j, 10, 2, 0);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_null_strings_are_written_as_empty_or_null)
{
    oai_result res = {0};
    cJSON *j = parse_back(oai_response_json(CHAT, &res));
    ck_assert_str_eq(jstr(j, "id"), "");
    ck_assert_str_eq(jstr(j, "model"), "");
    const cJSON *c = cJSON_GetArrayItem(jget(j, "choices"), 0);
    ck_assert_str_eq(jstr(jget(c, "message"), "content"), "");
    jnull(c, "finish_reason");
    cJSON_Delete(j);
    j = parse_back(oai_response_json(CMPL, &res));
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(jget(j, "choices"), 0), "text"), "");
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_chat_chunks_follow_openai_stream_format)
{
    oai_chunk c = {.id = "chatcmpl-1", .created = 5, .model = "m", .role = true};
    const char *pre = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":5,"
                      "\"model\":\"m\",\"system_fingerprint\":null,\"choices\":[{\"index\":0,"
                      "\"delta\":";
    char want[512];
    char *s = oai_chunk_json(CHAT, &c);
    snprintf(want, sizeof(want),
             "%s{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
             "\"finish_reason\":null}]}",
             pre);
    ck_assert_str_eq(s, want);
    free(s);
    c = (oai_chunk){.id = "chatcmpl-1", .created = 5, .model = "m", .text = "Hel"};
    s = oai_chunk_json(CHAT, &c);
    snprintf(want, sizeof(want),
             "%s{\"content\":\"Hel\"},\"logprobs\":null,\"finish_reason\":null}]}", pre);
    ck_assert_str_eq(s, want);
    free(s);
    c = (oai_chunk){.id = "chatcmpl-1", .created = 5, .model = "m", .finish_reason = "stop"};
    s = oai_chunk_json(CHAT, &c);
    snprintf(want, sizeof(want), "%s{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}", pre);
    ck_assert_str_eq(s, want);
    free(s);
    // With include_usage every chunk carries "usage":null, and the last one only usage.
    c.include_usage = true;
    s = oai_chunk_json(CHAT, &c);
    snprintf(want, sizeof(want),
             "%s{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}", pre);
    ck_assert_str_eq(s, want);
    free(s);
    c = (oai_chunk){.id = "chatcmpl-1",
                    .created = 5,
                    .model = "m",
                    .include_usage = true,
                    .usage_only = true,
                    .prompt_tokens = 7,
                    .completion_tokens = 3,
                    .cached_tokens = 4};
    s = oai_chunk_json(CHAT, &c);
    ck_assert_str_eq(s, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":"
                        "5,\"model\":\"m\",\"system_fingerprint\":null,\"choices\":[],\"usage\":{"
                        "\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10,"
                        "\"prompt_tokens_details\":{\"cached_tokens\":4}}}");
    free(s);
    // A first chunk may carry text too.
    c = (oai_chunk){.id = "x", .model = "m", .role = true, .text = "A"};
    cJSON *j = parse_back(oai_chunk_json(CHAT, &c));
    const cJSON *d = jget(cJSON_GetArrayItem(jget(j, "choices"), 0), "delta");
    ck_assert_str_eq(jstr(d, "role"), "assistant");
    ck_assert_str_eq(jstr(d, "content"), "A");
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_completion_chunks_follow_openai_stream_format)
{
    oai_chunk c = {.id = "cmpl-2", .created = 6, .model = "m", .text = "tok"};
    char *s = oai_chunk_json(CMPL, &c);
    ck_assert_str_eq(s, "{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"created\":6,"
                        "\"model\":\"m\",\"choices\":[{\"text\":\"tok\",\"index\":0,"
                        "\"logprobs\":null,\"finish_reason\":null}]}");
    free(s);
    c = (oai_chunk){.id = "cmpl-2",
                    .created = 6,
                    .model = "m",
                    .finish_reason = "length",
                    .include_usage = true};
    s = oai_chunk_json(CMPL, &c);
    ck_assert_str_eq(s, "{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"created\":6,"
                        "\"model\":\"m\",\"choices\":[{\"text\":\"\",\"index\":0,"
                        "\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":null}");
    free(s);
    c = (oai_chunk){.id = "cmpl-2",
                    .created = 6,
                    .model = "m",
                    .include_usage = true,
                    .usage_only = true,
                    .prompt_tokens = 1,
                    .completion_tokens = 2};
    cJSON *j = parse_back(oai_chunk_json(CMPL, &c));
    ck_assert_int_eq(cJSON_GetArraySize(jget(j, "choices")), 0);
    check_usage(j, 1, 2, 0);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "system_fingerprint"));
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_text_with_quotes_controls_and_non_ascii_round_trips)
{
    const char *text = "say \"hi\" \\ back\nslash\ttab\r\x01\x1f\x7f caf\xc3\xa9 "
                       "\xf0\x9f\x98\x80 \xe2\x80\xa8 </script>";
    oai_result res = {.id = "i", .model = "m", .text = text, .finish_reason = "stop"};
    char *s = oai_response_json(CMPL, &res);
    ck_assert_ptr_nonnull(strstr(s, "say \\\"hi\\\" \\\\ back\\nslash\\ttab\\r\\u0001\\u001f"));
    for (const char *p = s; *p; p++)
        ck_assert_msg((unsigned char)*p >= 0x20, "raw control byte in %s", s);
    cJSON *j = parse_back(s);
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(jget(j, "choices"), 0), "text"), text);
    cJSON_Delete(j);
    oai_chunk c = {.id = "i", .model = "m\"q", .text = text};
    j = parse_back(oai_chunk_json(CHAT, &c));
    ck_assert_str_eq(jstr(j, "model"), "m\"q");
    ck_assert_str_eq(jstr(jget(cJSON_GetArrayItem(jget(j, "choices"), 0), "delta"), "content"),
                     text);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_text_that_is_not_utf8_is_repaired_per_bad_byte)
{
    // A token cut inside a character, then a stray 0xff.
    oai_chunk c = {.id = "i",
                   .model = "m",
                   .text = "a\xe6\x97"
                           "b\xff"};
    cJSON *j = parse_back(oai_chunk_json(CMPL, &c));
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(jget(j, "choices"), 0), "text"),
                     "a\xef\xbf\xbd\xef\xbf\xbd"
                     "b\xef\xbf\xbd");
    cJSON_Delete(j);
    oai_result res = {.id = "\xc0", .model = "m", .text = "\xed\xa0\x80"};
    j = parse_back(oai_response_json(CHAT, &res));
    ck_assert_str_eq(jstr(j, "id"), "\xef\xbf\xbd");
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_models_list_and_one_model)
{
    char *s = oai_models_json(NULL, 0, 1);
    ck_assert_str_eq(s, "{\"object\":\"list\",\"data\":[]}");
    free(s);
    const char *names[] = {"llama", "smol\"lm"};
    s = oai_models_json(names, 2, 1700000000);
    ck_assert_str_eq(s, "{\"object\":\"list\",\"data\":[{\"id\":\"llama\",\"object\":\"model\","
                        "\"created\":1700000000,\"owned_by\":\"llmcluster\"},{\"id\":"
                        "\"smol\\\"lm\",\"object\":\"model\",\"created\":1700000000,"
                        "\"owned_by\":\"llmcluster\"}]}");
    free(s);
    s = oai_model_json("llama", 42);
    ck_assert_str_eq(s, "{\"id\":\"llama\",\"object\":\"model\",\"created\":42,"
                        "\"owned_by\":\"llmcluster\"}");
    free(s);
}
END_TEST

Suite *oai_suite(void);

Suite *
oai_suite(void)
{
    Suite *s = suite_create("oai");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_completion_with_only_model_and_prompt_gets_defaults);
    tcase_add_test(tc, test_completion_reads_every_field);
    tcase_add_test(tc, test_every_priority_tier_is_accepted);
    tcase_add_test(tc, test_prompt_may_be_one_string_in_an_array);
    tcase_add_test(tc, test_prompt_may_be_token_ids_at_their_bounds);
    tcase_add_test(tc, test_prompt_ids_are_accepted_up_to_the_limit_and_refused_past_it);
    tcase_add_test(tc, test_chat_reads_roles_and_concatenates_text_parts);
    tcase_add_test(tc, test_chat_max_completion_tokens_wins_over_max_tokens);
    tcase_add_test(tc, test_json_null_means_not_given);
    tcase_add_test(tc, test_chat_accepts_neutral_values_of_unsupported_features);
    tcase_add_test(tc, test_stop_may_be_one_string_or_an_empty_array);
    tcase_add_test(tc, test_numbers_at_their_bounds_are_accepted);
    tcase_add_test(tc, test_the_last_of_a_duplicated_key_wins);
    tcase_add_test(tc, test_body_is_read_only_up_to_len_and_needs_no_nul);
    tcase_add_test(tc, test_escapes_and_non_ascii_text_arrive_decoded);
    tcase_add_test(tc, test_fini_accepts_null_a_zeroed_struct_and_a_second_call);
    suite_add_tcase(s, tc);

    tc = tcase_create("refuse");
    tcase_add_test(tc, test_refuses_every_truncation_of_a_valid_body);
    tcase_add_test(tc, test_refuses_bytes_after_the_object);
    tcase_add_test(tc, test_refuses_bodies_that_are_not_objects);
    tcase_add_test(tc, test_survives_a_hundred_thousand_nested_brackets);
    tcase_add_test(tc, test_refuses_unrecognized_arguments);
    tcase_add_test(tc, test_refuses_missing_required_arguments);
    tcase_add_test(tc, test_refuses_wrong_json_types_naming_the_param);
    tcase_add_test(tc, test_refuses_integers_out_of_range);
    tcase_add_test(tc, test_refuses_decimals_out_of_range);
    tcase_add_test(tc, test_refuses_n_above_one_as_unsupported);
    tcase_add_test(tc, test_refuses_unsupported_features_away_from_their_neutral_value);
    tcase_add_test(tc, test_refuses_bad_prompts);
    tcase_add_test(tc, test_refuses_bad_messages);
    tcase_add_test(tc, test_refuses_bad_stop_sequences);
    tcase_add_test(tc, test_refuses_empty_or_long_model_and_long_user);
    tcase_add_test(tc, test_refuses_an_unknown_priority);
    tcase_add_test(tc, test_refuses_stream_options_unless_streaming);
    tcase_add_test(tc, test_refuses_raw_bytes_that_are_not_utf8);
    tcase_add_test(tc, test_refuses_lone_surrogate_escapes);
    tcase_add_test(tc, test_refuses_nul_escapes_anywhere);
    tcase_add_test(tc, test_refuses_raw_control_bytes_inside_strings);
    tcase_add_test(tc, test_error_text_stays_utf8_when_the_request_is_not);
    suite_add_tcase(s, tc);

    tc = tcase_create("format");
    tcase_add_test(tc, test_error_json_has_openai_shape);
    tcase_add_test(tc, test_completion_response_has_every_field);
    tcase_add_test(tc, test_chat_response_has_every_field);
    tcase_add_test(tc, test_null_strings_are_written_as_empty_or_null);
    tcase_add_test(tc, test_chat_chunks_follow_openai_stream_format);
    tcase_add_test(tc, test_completion_chunks_follow_openai_stream_format);
    tcase_add_test(tc, test_text_with_quotes_controls_and_non_ascii_round_trips);
    tcase_add_test(tc, test_text_that_is_not_utf8_is_repaired_per_bad_byte);
    tcase_add_test(tc, test_models_list_and_one_model);
    suite_add_tcase(s, tc);
    return s;
}
