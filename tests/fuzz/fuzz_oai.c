/*
 * fuzz_oai.c - libFuzzer target: bytes as an OpenAI request body into oai_parse, as a
 * completions request and as a chat request.
 *
 * An accepted request must keep oai.h's promises (an input set, counts in range, every
 * string non-NULL where promised and valid UTF-8); its fields then feed every formatter
 * (response, the chunks of a stream, the model list), whose output must be valid UTF-8
 * JSON that cJSON reads back. A refused one must leave the request zeroed and carry a
 * 400 error whose JSON reads back. The raw input, cut at its first NUL, is also
 * formatted as text, which exercises the repair of bytes that are not UTF-8. Everything
 * is freed, so a leak shows up as one. Built with clang -fsanitize=fuzzer by
 * scripts/fuzz.sh (seeds: tests/fuzz/seeds/oai, dictionary tests/fuzz/oai.dict), and
 * with fuzz_driver.c as a plain program that ctest runs on those seeds and mutations.
 */
#include "llm_err.h"
#include "oai.h"
#include "utf8.h"

#include <cjson/cJSON.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_oai: %s: %.300s\n", what, detail ? detail : "");
    abort();
}

static void
check_text(const char *s, const char *what)
{
    if (!s || !utf8_valid(s, strlen(s), NULL))
        fail("a string is NULL or not UTF-8", what);
}

/* check_json takes formatter output: non-NULL, UTF-8, and JSON that cJSON reads. */
static void
check_json(char *s, const char *what)
{
    if (!s)
        fail("formatter returned NULL", what);
    check_text(s, what);
    cJSON *j = cJSON_Parse(s);
    if (!j)
        fail("formatter output is not JSON", s);
    cJSON_Delete(j);
    free(s);
}

static void
check_request(const oai_request *r, oai_kind kind)
{
    check_text(r->model, "model");
    if (!r->model[0] || strlen(r->model) > OAI_MAX_MODEL_BYTES)
        fail("model length", r->model);
    if (kind == OAI_COMPLETIONS) {
        if (!r->prompt == !r->prompt_ids || r->n_messages)
            fail("completions input", NULL);
        if (r->prompt && !r->prompt[0])
            fail("empty prompt", NULL);
        if (r->prompt)
            check_text(r->prompt, "prompt");
        if (r->prompt_ids && (r->n_prompt_ids < 1 || r->n_prompt_ids > OAI_MAX_PROMPT_IDS))
            fail("prompt id count", NULL);
        for (size_t i = 0; i < r->n_prompt_ids; i++)
            if (r->prompt_ids[i] < 0)
                fail("negative prompt id", NULL);
    } else {
        if (r->prompt || r->prompt_ids || r->n_messages < 1 || r->n_messages > OAI_MAX_MESSAGES)
            fail("chat input", NULL);
        for (size_t i = 0; i < r->n_messages; i++) {
            const char *role = r->roles[i];
            if (!role ||
                (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")))
                fail("role", role);
            check_text(r->contents[i], "content");
        }
    }
    if (r->max_tokens < 0 || r->max_tokens > OAI_MAX_TOKENS_LIMIT)
        fail("max_tokens", NULL);
    if (!(r->temperature >= 0 && r->temperature <= 2) || !(r->top_p >= 0 && r->top_p <= 1))
        fail("temperature or top_p", NULL);
    if (r->top_k < 0 || r->top_k > OAI_MAX_TOP_K)
        fail("top_k", NULL);
    if (r->n_stop < 0 || r->n_stop > OAI_MAX_STOP)
        fail("n_stop", NULL);
    for (int i = 0; i < r->n_stop; i++) {
        check_text(r->stop[i], "stop");
        if (!r->stop[i][0] || strlen(r->stop[i]) > OAI_MAX_STOP_BYTES)
            fail("stop length", r->stop[i]);
    }
    if (r->include_usage && !r->stream)
        fail("include_usage without stream", NULL);
    if (r->user && strlen(r->user) > OAI_MAX_USER_BYTES)
        fail("user length", r->user);
    if (r->user)
        check_text(r->user, "user");
    if (memchr(r->priority, '\0', sizeof(r->priority)) == NULL)
        fail("priority not terminated", NULL);
}

/* format_all runs every formatter on text and names taken from the request. */
static void
format_all(oai_kind kind, const char *id, const char *model, const char *text, const char *finish,
           bool include_usage)
{
    oai_result res = {.id = id,
                      .created = 1700000000,
                      .model = model,
                      .text = text,
                      .finish_reason = finish,
                      .prompt_tokens = UINT32_MAX,
                      .completion_tokens = 7,
                      .cached_tokens = 3};
    check_json(oai_response_json(kind, &res), "response");
    oai_chunk c = {
        .id = id, .created = -1, .model = model, .role = true, .include_usage = include_usage};
    check_json(oai_chunk_json(kind, &c), "first chunk");
    c.role = false;
    c.text = text;
    check_json(oai_chunk_json(kind, &c), "text chunk");
    c.text = NULL;
    c.finish_reason = finish;
    check_json(oai_chunk_json(kind, &c), "last chunk");
    c.usage_only = true;
    c.prompt_tokens = 1;
    check_json(oai_chunk_json(kind, &c), "usage chunk");
    const char *names[] = {model, text, id};
    check_json(oai_models_json(names, 3, 0), "models");
    check_json(oai_model_json(text, INT64_MAX), "model");
}

static void
one_kind(const uint8_t *data, size_t size, oai_kind kind)
{
    oai_request r;
    oai_error e;
    int rc = oai_parse((const char *)data, size, kind, &r, &e);
    if (rc == LLM_OK) {
        check_request(&r, kind);
        const char *text = kind == OAI_CHAT ? r.contents[r.n_messages - 1]
                           : r.prompt       ? r.prompt
                                            : "";
        format_all(kind, r.user ? r.user : "id", r.model, text, r.n_stop ? r.stop[0] : "stop",
                   r.include_usage);
    } else {
        static const oai_request zero;
        if (rc != LLM_EINVAL && rc != LLM_ENOTSUP)
            fail("unexpected error code", llm_strerror(rc));
        if (memcmp(&r, &zero, sizeof(r)) != 0)
            fail("a refused request is not zeroed", NULL);
        if (e.status != 400 || !e.type || !e.message[0])
            fail("refusal without a 400 error", e.message);
        check_text(e.message, "error message");
        check_text(e.param, "error param");
        check_json(oai_error_json(&e), "error");
    }
    oai_request_fini(&r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one_kind(data, size, OAI_COMPLETIONS);
    one_kind(data, size, OAI_CHAT);
    // The raw bytes as generated text: control bytes, quotes, invalid UTF-8.
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    format_all(size & 1 ? OAI_CHAT : OAI_COMPLETIONS, text, text, text, NULL, size & 2);
    oai_error e = {.status = 400, .type = NULL, .code = size & 4 ? "x" : NULL};
    snprintf(e.message, sizeof(e.message), "%s", text);
    snprintf(e.param, sizeof(e.param), "%s", text);
    check_json(oai_error_json(&e), "raw error");
    free(text);
    return 0;
}
