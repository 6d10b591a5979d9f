/*
 * oai.c - OpenAI request bodies to oai_request, results to OpenAI JSON (oai.h).
 *
 * Parsing is cJSON's tree walked through one table of known arguments, each with the
 * kinds (completions, chat) that accept it and a handler that checks its type and
 * value. Unknown keys are refused before any handler runs; a key given twice counts
 * once, with its last value (as Python's json, which OpenAI's servers use). JSON null is
 * "not given" for every argument, so the required ones are checked after the walk.
 *
 * cJSON 1.7.15 is lenient where OpenAI is not, so the raw body is scanned once more
 * after cJSON accepts it: raw control bytes inside strings are a parse error, and a
 * "\u0000" escape (or a malformed \u, which cJSON decodes as 0) would cut a C string
 * short, so both are refused. cJSON already refuses lone surrogate escapes; raw bytes
 * that are not UTF-8 reach the strings, so every string kept is checked with utf8_valid.
 * It also accepts trailing bytes after the value, which are refused here.
 *
 * Formatting builds a cJSON tree and prints it unformatted; cJSON escapes quotes,
 * backslashes and control characters and copies other bytes as they are, so text that
 * is not UTF-8 is repaired first (U+FFFD per bad byte). What this file does not do:
 * SSE framing, HTTP, model lookup, token counting.
 */
#include "oai.h"

#include "llm_err.h"
#include "utf8.h"

#include <cjson/cJSON.h>

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIND_CMPL 1u // accepted by /v1/completions
#define KIND_CHAT 2u // accepted by /v1/chat/completions
#define KIND_BOTH (KIND_CMPL | KIND_CHAT)

#define TYPE_INVALID "invalid_request_error"
#define CODE_UNSUPPORTED "unsupported_parameter"

/* The parse in progress. */
typedef struct {
    oai_request *r;
    oai_error *e;
    bool stream_options;     // stream_options was given (not null)
    bool include_usage;      // its include_usage
    bool has_max_tokens;     // max_tokens given
    int max_tokens;          // its value
    bool has_max_completion; // max_completion_tokens given (chat)
    int max_completion;
} pctx;

/* ---- errors ----------------------------------------------------------------------------- */

/* clip_utf8 copies src into dst[0..cap) as valid UTF-8: each byte that does not start a
 * well-formed character becomes '?', and a copy that does not fit is cut at a character
 * boundary. Reads at most 1024 bytes of src. */
static void
clip_utf8(char *dst, size_t cap, const char *src)
{
    assert(cap > 0);
    size_t n = strnlen(src, 1024), i = 0, o = 0;
    while (i < n && o < cap - 1) {
        size_t bad = n - i;
        size_t run = utf8_valid(src + i, n - i, &bad) ? n - i : bad;
        size_t take = run;
        if (take > cap - 1 - o) {
            take = cap - 1 - o;
            while (take > 0 && ((unsigned char)src[i + take] & 0xc0) == 0x80)
                take--; // do not cut a character
            memcpy(dst + o, src + i, take);
            o += take;
            break;
        }
        memcpy(dst + o, src + i, take);
        o += take;
        i += take;
        if (i < n && o < cap - 1) {
            dst[o++] = '?';
            i++;
        }
    }
    dst[o] = '\0';
}

static int err_set(pctx *p, int rc, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* err_set fills *p->e (status 400, or 500 for LLM_ENOMEM) and returns rc. */
/* shown: s as clip_utf8 leaves it in buf[0..cap), for echoing request bytes. */
static const char *
shown(char *buf, size_t cap, const char *s)
{
    clip_utf8(buf, cap, s);
    return buf;
}

static int
err_set(pctx *p, int rc, const char *param, const char *code, const char *fmt, ...)
{
    oai_error *e = p->e;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    clip_utf8(e->message, sizeof(e->message), msg);
    clip_utf8(e->param, sizeof(e->param), param ? param : "");
    e->status = rc == LLM_ENOMEM ? 500 : 400;
    e->type = rc == LLM_ENOMEM ? "server_error" : TYPE_INVALID;
    e->code = code;
    return rc;
}

static int
err_nomem(pctx *p)
{
    return err_set(p, LLM_ENOMEM, "", NULL, "The server ran out of memory.");
}

/* as_int64: true when d is an integer that fits int64_t. */
static bool
as_int64(double d, int64_t *out)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return false;
    int64_t i = (int64_t)d;
    if ((double)i != d)
        return false;
    *out = i;
    return true;
}

/* type_name: how OpenAI's messages name the JSON type of v. */
static const char *
type_name(const cJSON *v)
{
    int64_t i;
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsNumber(v))
        return as_int64(v->valuedouble, &i) ? "an integer" : "a decimal";
    return "an unknown type";
}

static int
err_type(pctx *p, const char *param, const char *expected, const cJSON *v)
{
    return err_set(p, LLM_EINVAL, param, "invalid_type",
                   "Invalid type for '%s': expected %s, but got %s instead.", param, expected,
                   type_name(v));
}

static int
err_missing(pctx *p, const char *param)
{
    return err_set(p, LLM_EINVAL, param, "missing_required_parameter",
                   "Missing required parameter: '%s'.", param);
}

static int
err_unsupported(pctx *p, const char *param, const char *why)
{
    return err_set(p, LLM_ENOTSUP, param, CODE_UNSUPPORTED, "Unsupported value for '%s': %s", param,
                   why);
}

/* ---- typed getters ------------------------------------------------------------------------ */

/* get_int: v must be an integral number in lo..hi. */
static int
get_int(pctx *p, const cJSON *v, const char *name, int64_t lo, int64_t hi, int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return err_type(p, name, "an integer", v);
    double d = v->valuedouble;
    int64_t i = 0;
    bool fits = as_int64(d, &i);
    if (!fits && isfinite(d) && d > -9223372036854775808.0 && d < 9223372036854775808.0)
        return err_type(p, name, "an integer", v); // a fraction
    if (!fits ? d < 0 : i < lo)
        return err_set(p, LLM_EINVAL, name, "integer_below_min_value",
                       "Invalid '%s': integer below minimum value. Expected a value >= %lld, "
                       "but got %.15g instead.",
                       name, (long long)lo, d);
    if (!fits || i > hi)
        return err_set(p, LLM_EINVAL, name, "integer_above_max_value",
                       "Invalid '%s': integer above maximum value. Expected a value <= %lld, "
                       "but got %.15g instead.",
                       name, (long long)hi, d);
    *out = i;
    return LLM_OK;
}

/* get_num: v must be a finite number in lo..hi. */
static int
get_num(pctx *p, const cJSON *v, const char *name, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(v))
        return err_type(p, name, "a number", v);
    double d = v->valuedouble;
    if (!(d >= lo))
        return err_set(p, LLM_EINVAL, name, "decimal_below_min_value",
                       "Invalid '%s': decimal below minimum value. Expected a value >= %g, but "
                       "got %.15g instead.",
                       name, lo, d);
    if (!(d <= hi))
        return err_set(p, LLM_EINVAL, name, "decimal_above_max_value",
                       "Invalid '%s': decimal above maximum value. Expected a value <= %g, but "
                       "got %.15g instead.",
                       name, hi, d);
    *out = d;
    return LLM_OK;
}

static int
get_bool(pctx *p, const cJSON *v, const char *name, bool *out)
{
    if (!cJSON_IsBool(v))
        return err_type(p, name, "a boolean", v);
    *out = cJSON_IsTrue(v);
    return LLM_OK;
}

/* check_text: s (a cJSON string: no NUL inside, the body scan saw to that) must be
 * valid UTF-8, and at most max_bytes long (0: no limit), and non-empty unless
 * allow_empty. */
static int
check_text(pctx *p, const char *s, const char *name, size_t max_bytes, bool allow_empty)
{
    size_t n = strlen(s);
    if (!utf8_valid(s, n, NULL))
        return err_set(p, LLM_EINVAL, name, "invalid_value",
                       "Invalid '%s': the string is not valid UTF-8.", name);
    if (n == 0 && !allow_empty)
        return err_set(p, LLM_EINVAL, name, "empty_string",
                       "Invalid '%s': empty string. Expected a string with minimum length 1, "
                       "but got an empty string instead.",
                       name);
    if (max_bytes && n > max_bytes)
        return err_set(p, LLM_EINVAL, name, "string_above_max_length",
                       "Invalid '%s': string too long. Expected a string with maximum length "
                       "%zu, but got a string with length %zu instead.",
                       name, max_bytes, n);
    return LLM_OK;
}

/* get_str: v must be a string that passes check_text; *out is a copy (free()). */
static int
get_str(pctx *p, const cJSON *v, const char *name, size_t max_bytes, bool allow_empty, char **out)
{
    if (!cJSON_IsString(v))
        return err_type(p, name, "a string", v);
    int rc = check_text(p, v->valuestring, name, max_bytes, allow_empty);
    if (rc != LLM_OK)
        return rc;
    if (!(*out = strdup(v->valuestring)))
        return err_nomem(p);
    return LLM_OK;
}

/* count_items counts v's elements, stopping past max (then max + 1). */
static size_t
count_items(const cJSON *v, size_t max)
{
    size_t n = 0;
    for (const cJSON *c = v->child; c && n <= max; c = c->next)
        n++;
    return n;
}

static int
err_array_len(pctx *p, const char *name, size_t n, size_t max)
{
    if (n == 0)
        return err_set(p, LLM_EINVAL, name, "empty_array",
                       "Invalid '%s': empty array. Expected an array with minimum length 1, but "
                       "got an empty array instead.",
                       name);
    return err_set(p, LLM_EINVAL, name, "array_above_max_length",
                   "Invalid '%s': array too long. Expected an array with maximum length %zu, "
                   "but got a longer one instead.",
                   name, max);
}

/* ---- arguments ---------------------------------------------------------------------------- */

static int
f_model(pctx *p, const cJSON *v, const char *name)
{
    return get_str(p, v, name, OAI_MAX_MODEL_BYTES, false, &p->r->model);
}

/* prompt_ids reads an array of token ids (known to be non-empty). */
static int
prompt_ids(pctx *p, const cJSON *arr, const char *name)
{
    size_t n = count_items(arr, OAI_MAX_PROMPT_IDS);
    if (n > OAI_MAX_PROMPT_IDS)
        return err_array_len(p, name, n, OAI_MAX_PROMPT_IDS);
    if (n == 0)
        return err_array_len(p, name, 0, OAI_MAX_PROMPT_IDS);
    int32_t *ids = malloc(n * sizeof(*ids));
    if (!ids)
        return err_nomem(p);
    size_t i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        char param[64];
        int64_t id = 0;
        snprintf(param, sizeof(param), "%s[%zu]", name, i);
        int rc = get_int(p, c, param, 0, INT32_MAX, &id);
        if (rc != LLM_OK) {
            free(ids);
            return rc;
        }
        ids[i] = (int32_t)id;
    }
    p->r->prompt_ids = ids;
    p->r->n_prompt_ids = n;
    return LLM_OK;
}

static int
f_prompt(pctx *p, const cJSON *v, const char *name)
{
    if (cJSON_IsString(v))
        return get_str(p, v, name, 0, false, &p->r->prompt);
    if (!cJSON_IsArray(v))
        return err_type(p, name, "a string or an array of integers", v);
    if (!v->child)
        return err_array_len(p, name, 0, OAI_MAX_PROMPT_IDS);
    const cJSON *first = v->child;
    if (cJSON_IsNumber(first))
        return prompt_ids(p, v, name);
    if (!cJSON_IsString(first) && !cJSON_IsArray(first))
        return err_type(p, "prompt[0]", "a string or an integer", first);
    if (first->next)
        return err_set(p, LLM_ENOTSUP, name, CODE_UNSUPPORTED,
                       "Batched prompts are not supported: 'prompt' must be one string or one "
                       "array of token ids.");
    if (cJSON_IsString(first))
        return get_str(p, first, "prompt[0]", 0, false, &p->r->prompt);
    return prompt_ids(p, first, "prompt[0]");
}

/* message_content sets *out to the text of a message's content (a string or an array of
 * text parts, concatenated). */
static int
message_content(pctx *p, const cJSON *v, size_t i, char **out)
{
    char param[64];
    snprintf(param, sizeof(param), "messages[%zu].content", i);
    if (cJSON_IsString(v))
        return get_str(p, v, param, 0, true, out);
    if (!cJSON_IsArray(v))
        return err_type(p, param, "a string or an array of content parts", v);
    if (!v->child)
        return err_array_len(p, param, 0, 0);
    size_t total = 0, k = 0;
    for (const cJSON *part = v->child; part; part = part->next, k++) {
        char pp[64], st[65];
        snprintf(pp, sizeof(pp), "messages[%zu].content[%zu]", i, k);
        if (!cJSON_IsObject(part))
            return err_type(p, pp, "an object", part);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        snprintf(pp, sizeof(pp), "messages[%zu].content[%zu].type", i, k);
        if (!type || cJSON_IsNull(type))
            return err_missing(p, pp);
        if (!cJSON_IsString(type))
            return err_type(p, pp, "a string", type);
        if (strcmp(type->valuestring, "text") != 0)
            return err_set(p, LLM_ENOTSUP, pp, CODE_UNSUPPORTED,
                           "Content parts of type '%s' are not supported; only 'text' is.",
                           shown(st, sizeof(st), type->valuestring));
        snprintf(pp, sizeof(pp), "messages[%zu].content[%zu].text", i, k);
        if (!text || cJSON_IsNull(text))
            return err_missing(p, pp);
        if (!cJSON_IsString(text))
            return err_type(p, pp, "a string", text);
        int rc = check_text(p, text->valuestring, pp, 0, true);
        if (rc != LLM_OK)
            return rc;
        total += strlen(text->valuestring);
    }
    char *s = malloc(total + 1);
    if (!s)
        return err_nomem(p);
    size_t o = 0;
    for (const cJSON *part = v->child; part; part = part->next) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(s + o, t, n);
        o += n;
    }
    s[o] = '\0';
    *out = s;
    return LLM_OK;
}

static int
message(pctx *p, const cJSON *m, size_t i)
{
    char param[64], sk[65];
    const cJSON *role = NULL, *content = NULL;
    snprintf(param, sizeof(param), "messages[%zu]", i);
    if (!cJSON_IsObject(m))
        return err_type(p, param, "an object", m);
    for (const cJSON *k = m->child; k; k = k->next) {
        const char *key = k->string;
        char kp[64], kname[33];
        snprintf(kp, sizeof(kp), "messages[%zu].%s", i, shown(kname, sizeof(kname), key));
        if (strcmp(key, "role") == 0) {
            role = k;
        } else if (strcmp(key, "content") == 0) {
            content = k;
        } else if (strcmp(key, "name") == 0 || strcmp(key, "refusal") == 0) {
            if (!cJSON_IsNull(k) && !cJSON_IsString(k))
                return err_type(p, kp, "a string", k);
        } else if (strcmp(key, "tool_calls") == 0) {
            if (cJSON_IsArray(k) && k->child)
                return err_unsupported(p, kp, "tool calls are not supported.");
            if (!cJSON_IsNull(k) && !cJSON_IsArray(k))
                return err_type(p, kp, "an array", k);
        } else if (strcmp(key, "function_call") == 0) {
            if (!cJSON_IsNull(k))
                return err_unsupported(p, kp, "function calls are not supported.");
        } else {
            return err_set(p, LLM_EINVAL, param, NULL,
                           "Additional properties are not allowed ('%s' was unexpected) - "
                           "'messages.%zu'",
                           kname, i);
        }
    }
    snprintf(param, sizeof(param), "messages[%zu].role", i);
    if (!role || cJSON_IsNull(role))
        return err_missing(p, param);
    if (!cJSON_IsString(role))
        return err_type(p, param, "a string", role);
    const char *r = role->valuestring, *name = NULL;
    if (strcmp(r, "system") == 0 || strcmp(r, "developer") == 0)
        name = "system";
    else if (strcmp(r, "user") == 0)
        name = "user";
    else if (strcmp(r, "assistant") == 0)
        name = "assistant";
    else if (strcmp(r, "tool") == 0 || strcmp(r, "function") == 0)
        return err_set(p, LLM_ENOTSUP, param, CODE_UNSUPPORTED,
                       "Messages with role '%s' are not supported (no tool calling).", r);
    else
        return err_set(p, LLM_EINVAL, param, "invalid_value",
                       "Invalid value: '%s'. Supported values are: 'system', 'developer', "
                       "'user', and 'assistant'.",
                       shown(sk, sizeof(sk), r));
    if (!(p->r->roles[i] = strdup(name)))
        return err_nomem(p);
    if (!content || cJSON_IsNull(content)) {
        if (strcmp(name, "assistant") != 0) {
            snprintf(param, sizeof(param), "messages[%zu].content", i);
            return err_missing(p, param);
        }
        if (!(p->r->contents[i] = strdup("")))
            return err_nomem(p);
        return LLM_OK;
    }
    return message_content(p, content, i, &p->r->contents[i]);
}

static int
f_messages(pctx *p, const cJSON *v, const char *name)
{
    if (!cJSON_IsArray(v))
        return err_type(p, name, "an array", v);
    size_t n = count_items(v, OAI_MAX_MESSAGES);
    if (n == 0 || n > OAI_MAX_MESSAGES)
        return err_array_len(p, name, n, OAI_MAX_MESSAGES);
    oai_request *r = p->r;
    r->roles = calloc(n, sizeof(*r->roles));
    r->contents = calloc(n, sizeof(*r->contents));
    if (!r->roles || !r->contents)
        return err_nomem(p);
    r->n_messages = n; // fini frees the entries set so far
    size_t i = 0;
    for (const cJSON *m = v->child; m; m = m->next, i++) {
        int rc = message(p, m, i);
        if (rc != LLM_OK)
            return rc;
    }
    return LLM_OK;
}

static int
f_max_tokens(pctx *p, const cJSON *v, const char *name)
{
    int64_t n = 0;
    int rc = get_int(p, v, name, 1, OAI_MAX_TOKENS_LIMIT, &n);
    if (rc != LLM_OK)
        return rc;
    if (strcmp(name, "max_tokens") == 0) {
        p->has_max_tokens = true;
        p->max_tokens = (int)n;
    } else {
        p->has_max_completion = true;
        p->max_completion = (int)n;
    }
    return LLM_OK;
}

static int
f_temperature(pctx *p, const cJSON *v, const char *name)
{
    return get_num(p, v, name, 0.0, 2.0, &p->r->temperature);
}

static int
f_top_p(pctx *p, const cJSON *v, const char *name)
{
    return get_num(p, v, name, 0.0, 1.0, &p->r->top_p);
}

static int
f_top_k(pctx *p, const cJSON *v, const char *name)
{
    int64_t k = 0;
    int rc = get_int(p, v, name, 0, OAI_MAX_TOP_K, &k);
    p->r->top_k = (int)k;
    return rc;
}

/* f_seed: JSON numbers arrive as doubles (cJSON keeps no digits), so only integers a
 * double holds exactly are taken: two different seeds must never become one. */
static int
f_seed(pctx *p, const cJSON *v, const char *name)
{
    int rc = get_int(p, v, name, -OAI_MAX_SEED, OAI_MAX_SEED, &p->r->seed);
    p->r->has_seed = rc == LLM_OK;
    return rc;
}

static int
f_stop(pctx *p, const cJSON *v, const char *name)
{
    oai_request *r = p->r;
    if (cJSON_IsString(v)) {
        int rc = get_str(p, v, name, OAI_MAX_STOP_BYTES, false, &r->stop[0]);
        r->n_stop = rc == LLM_OK;
        return rc;
    }
    if (!cJSON_IsArray(v))
        return err_type(p, name, "a string or an array of strings", v);
    size_t n = count_items(v, OAI_MAX_STOP);
    if (n > OAI_MAX_STOP)
        return err_array_len(p, name, n, OAI_MAX_STOP);
    for (const cJSON *c = v->child; c; c = c->next) {
        char param[32];
        snprintf(param, sizeof(param), "stop[%d]", r->n_stop);
        int rc = get_str(p, c, param, OAI_MAX_STOP_BYTES, false, &r->stop[r->n_stop]);
        if (rc != LLM_OK)
            return rc;
        r->n_stop++;
    }
    return LLM_OK;
}

static int
f_stream(pctx *p, const cJSON *v, const char *name)
{
    return get_bool(p, v, name, &p->r->stream);
}

static int
f_stream_options(pctx *p, const cJSON *v, const char *name)
{
    if (!cJSON_IsObject(v))
        return err_type(p, name, "an object", v);
    for (const cJSON *k = v->child; k; k = k->next) {
        char kp[64], sk[41];
        snprintf(kp, sizeof(kp), "stream_options.%s", shown(sk, sizeof(sk), k->string));
        bool b = false;
        if (strcmp(k->string, "include_usage") == 0) {
            if (!cJSON_IsNull(k) && get_bool(p, k, kp, &b) != LLM_OK)
                return LLM_EINVAL;
            p->include_usage = b;
        } else if (strcmp(k->string, "include_obfuscation") == 0) {
            if (!cJSON_IsNull(k) && get_bool(p, k, kp, &b) != LLM_OK)
                return LLM_EINVAL; // nothing to obfuscate: accepted and ignored
        } else {
            return err_set(p, LLM_EINVAL, kp, NULL,
                           "Unrecognized stream_options argument supplied: %s", sk);
        }
    }
    p->stream_options = true;
    return LLM_OK;
}

static int
f_user(pctx *p, const cJSON *v, const char *name)
{
    return get_str(p, v, name, OAI_MAX_USER_BYTES, true, &p->r->user);
}

static int
f_priority(pctx *p, const cJSON *v, const char *name)
{
    static const char *const tiers[] = {"critical", "high", "normal", "low", "background"};
    if (!cJSON_IsString(v))
        return err_type(p, name, "a string", v);
    for (size_t i = 0; i < sizeof(tiers) / sizeof(tiers[0]); i++) {
        if (strcmp(v->valuestring, tiers[i]) == 0) {
            snprintf(p->r->priority, sizeof(p->r->priority), "%s", tiers[i]);
            return LLM_OK;
        }
    }
    char sv[65];
    return err_set(p, LLM_EINVAL, name, "invalid_value",
                   "Invalid value: '%s'. Supported values are: 'critical', 'high', "
                   "'normal', 'low', and 'background'.",
                   shown(sv, sizeof(sv), v->valuestring));
}

static int
f_n(pctx *p, const cJSON *v, const char *name)
{
    int64_t n = 0;
    int rc = get_int(p, v, name, 1, 128, &n);
    if (rc != LLM_OK)
        return rc;
    if (n > 1)
        return err_set(p, LLM_ENOTSUP, name, CODE_UNSUPPORTED, "n > 1 is not supported.");
    return LLM_OK;
}

/* ---- accepted at their neutral value only ------------------------------------------------ */

static int
f_penalty(pctx *p, const cJSON *v, const char *name)
{
    double d = 0;
    int rc = get_num(p, v, name, -2.0, 2.0, &d);
    if (rc != LLM_OK)
        return rc;
    return d == 0.0 ? LLM_OK : err_unsupported(p, name, "penalties are not supported; use 0.");
}

static int
f_logit_bias(pctx *p, const cJSON *v, const char *name)
{
    if (!cJSON_IsObject(v))
        return err_type(p, name, "an object", v);
    return v->child ? err_unsupported(p, name, "logit_bias is not supported; use {}.") : LLM_OK;
}

static int
f_logprobs(pctx *p, const cJSON *v, const char *name)
{
    if (p->r->kind == OAI_CHAT) {
        bool b = false;
        int rc = get_bool(p, v, name, &b);
        if (rc != LLM_OK)
            return rc;
        return b ? err_unsupported(p, name, "logprobs are not supported; use false.") : LLM_OK;
    }
    int64_t n = 0;
    int rc = get_int(p, v, name, 0, 5, &n);
    if (rc != LLM_OK)
        return rc;
    return n ? err_unsupported(p, name, "logprobs are not supported; use 0 or null.") : LLM_OK;
}

static int
f_top_logprobs(pctx *p, const cJSON *v, const char *name)
{
    int64_t n = 0;
    int rc = get_int(p, v, name, 0, 20, &n);
    if (rc != LLM_OK)
        return rc;
    return n ? err_unsupported(p, name, "logprobs are not supported; use 0 or null.") : LLM_OK;
}

static int
f_echo(pctx *p, const cJSON *v, const char *name)
{
    bool b = false;
    int rc = get_bool(p, v, name, &b);
    if (rc != LLM_OK)
        return rc;
    return b ? err_unsupported(p, name, "echo is not supported; use false.") : LLM_OK;
}

static int
f_best_of(pctx *p, const cJSON *v, const char *name)
{
    int64_t n = 0;
    int rc = get_int(p, v, name, 1, 20, &n);
    if (rc != LLM_OK)
        return rc;
    return n > 1 ? err_unsupported(p, name, "best_of > 1 is not supported.") : LLM_OK;
}

static int
f_suffix(pctx *p, const cJSON *v, const char *name)
{
    if (!cJSON_IsString(v))
        return err_type(p, name, "a string", v);
    return v->valuestring[0] ? err_unsupported(p, name, "suffix is not supported.") : LLM_OK;
}

static int
f_response_format(pctx *p, const cJSON *v, const char *name)
{
    if (!cJSON_IsObject(v))
        return err_type(p, name, "an object", v);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
    if (!t || cJSON_IsNull(t))
        return err_missing(p, "response_format.type");
    if (!cJSON_IsString(t))
        return err_type(p, "response_format.type", "a string", t);
    if (strcmp(t->valuestring, "text") == 0)
        return LLM_OK;
    if (strcmp(t->valuestring, "json_object") == 0 || strcmp(t->valuestring, "json_schema") == 0)
        return err_unsupported(p, name, "JSON mode is not supported; use {\"type\": \"text\"}.");
    char sv[65];
    return err_set(p, LLM_EINVAL, "response_format.type", "invalid_value",
                   "Invalid value: '%s'. Supported values are: 'text', 'json_object', and "
                   "'json_schema'.",
                   shown(sv, sizeof(sv), t->valuestring));
}

static int
f_tools(pctx *p, const cJSON *v, const char *name)
{
    if (!cJSON_IsArray(v))
        return err_type(p, name, "an array", v);
    return v->child ? err_unsupported(p, name, "tool calling is not supported.") : LLM_OK;
}

static int
f_tool_choice(pctx *p, const cJSON *v, const char *name)
{
    if (cJSON_IsString(v) && strcmp(v->valuestring, "none") == 0)
        return LLM_OK;
    if (!cJSON_IsString(v) && !cJSON_IsObject(v))
        return err_type(p, name, "a string or an object", v);
    return err_unsupported(p, name, "tool calling is not supported; use \"none\".");
}

static int
f_parallel_tool_calls(pctx *p, const cJSON *v, const char *name)
{
    bool b = false;
    return get_bool(p, v, name, &b);
}

/* f_ignore_object, f_ignore_bool, f_ignore_string: harmless arguments, type-checked and
 * dropped (metadata, store, service_tier, reasoning_effort). */
static int
f_ignore_object(pctx *p, const cJSON *v, const char *name)
{
    return cJSON_IsObject(v) ? LLM_OK : err_type(p, name, "an object", v);
}

static int
f_ignore_bool(pctx *p, const cJSON *v, const char *name)
{
    bool b = false;
    return get_bool(p, v, name, &b);
}

static int
f_ignore_string(pctx *p, const cJSON *v, const char *name)
{
    return cJSON_IsString(v) ? LLM_OK : err_type(p, name, "a string", v);
}

/* f_only_null: prediction, audio: anything but null asks for what we do not do. */
static int
f_only_null(pctx *p, const cJSON *v, const char *name)
{
    (void)v;
    return err_unsupported(p, name, "this parameter is not supported; use null.");
}

static int
f_modalities(pctx *p, const cJSON *v, const char *name)
{
    if (!cJSON_IsArray(v))
        return err_type(p, name, "an array", v);
    for (const cJSON *c = v->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return err_type(p, name, "an array of strings", v);
        if (strcmp(c->valuestring, "text") != 0)
            return err_unsupported(p, name, "only the \"text\" modality is supported.");
    }
    return LLM_OK;
}

typedef int (*field_fn)(pctx *p, const cJSON *v, const char *name);

/* Every argument either endpoint knows. The handlers run in this order, and only for
 * values that are not null; required ones are checked afterwards. */
static const struct {
    const char *name;
    unsigned kinds;
    field_fn fn;
} fields[] = {
    {"model", KIND_BOTH, f_model},
    {"prompt", KIND_CMPL, f_prompt},
    {"messages", KIND_CHAT, f_messages},
    {"max_tokens", KIND_BOTH, f_max_tokens},
    {"max_completion_tokens", KIND_CHAT, f_max_tokens},
    {"temperature", KIND_BOTH, f_temperature},
    {"top_p", KIND_BOTH, f_top_p},
    {"top_k", KIND_BOTH, f_top_k},
    {"seed", KIND_BOTH, f_seed},
    {"stop", KIND_BOTH, f_stop},
    {"stream", KIND_BOTH, f_stream},
    {"stream_options", KIND_BOTH, f_stream_options},
    {"user", KIND_BOTH, f_user},
    {"priority", KIND_BOTH, f_priority},
    {"n", KIND_BOTH, f_n},
    {"presence_penalty", KIND_BOTH, f_penalty},
    {"frequency_penalty", KIND_BOTH, f_penalty},
    {"logit_bias", KIND_BOTH, f_logit_bias},
    {"logprobs", KIND_BOTH, f_logprobs},
    {"top_logprobs", KIND_CHAT, f_top_logprobs},
    {"echo", KIND_CMPL, f_echo},
    {"best_of", KIND_CMPL, f_best_of},
    {"suffix", KIND_CMPL, f_suffix},
    {"response_format", KIND_CHAT, f_response_format},
    {"tools", KIND_CHAT, f_tools},
    {"functions", KIND_CHAT, f_tools},
    {"tool_choice", KIND_CHAT, f_tool_choice},
    {"function_call", KIND_CHAT, f_tool_choice},
    {"parallel_tool_calls", KIND_CHAT, f_parallel_tool_calls},
    {"metadata", KIND_CHAT, f_ignore_object},
    {"store", KIND_CHAT, f_ignore_bool},
    {"service_tier", KIND_CHAT, f_ignore_string},
    {"reasoning_effort", KIND_CHAT, f_ignore_string},
    {"prediction", KIND_CHAT, f_only_null},
    {"audio", KIND_CHAT, f_only_null},
    {"modalities", KIND_CHAT, f_modalities},
};

#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

/* ---- the body --------------------------------------------------------------------------- */

static bool
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* scan_strings walks the string literals of a body cJSON accepted: LLM_OK, or
 * LLM_EINVAL with *nul set when a \u escape would decode to NUL ("\u0000") and clear for
 * a raw control byte or a malformed \u escape (both parse errors). */
static int
scan_strings(const char *s, size_t len, bool *nul)
{
    bool in = false;
    *nul = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!in) {
            in = c == '"';
            continue;
        }
        if (c == '"') {
            in = false;
        } else if (c < 0x20) {
            return LLM_EINVAL;
        } else if (c == '\\' && i + 1 < len) {
            i++;
            if (s[i] != 'u')
                continue;
            if (len - i < 5 || !is_hex(s[i + 1]) || !is_hex(s[i + 2]) || !is_hex(s[i + 3]) ||
                !is_hex(s[i + 4]))
                return LLM_EINVAL;
            if (memcmp(s + i + 1, "0000", 4) == 0) {
                *nul = true;
                return LLM_EINVAL;
            }
            i += 4;
        }
    }
    return LLM_OK;
}

/* last_item: the last member of obj named name (a key given twice counts once, with its
 * last value). */
static const cJSON *
last_item(const cJSON *obj, const char *name)
{
    const cJSON *found = NULL;
    for (const cJSON *c = obj->child; c; c = c->next)
        if (strcmp(c->string, name) == 0)
            found = c;
    return found;
}

int
oai_parse(const char *body, size_t len, oai_kind kind, oai_request *out, oai_error *e)
{
    assert(out != NULL && e != NULL);
    assert(body != NULL || len == 0);
    memset(out, 0, sizeof(*out));
    memset(e, 0, sizeof(*e));
    out->kind = kind;
    out->temperature = 1.0;
    out->top_p = 1.0;
    pctx p = {.r = out, .e = e};
    unsigned mask = kind == OAI_CHAT ? KIND_CHAT : KIND_CMPL;
    int rc = LLM_OK;
    const char *end = NULL;
    bool nul = false;

    cJSON *root = len ? cJSON_ParseWithLengthOpts(body, len, &end, 0) : NULL;
    if (root) {
        while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            end++;
        if (end != body + len || scan_strings(body, len, &nul) != LLM_OK) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (!root) {
        if (nul)
            rc = err_set(&p, LLM_EINVAL, "", "invalid_value",
                         "Invalid body: strings may not contain the NUL character (\\u0000).");
        else
            rc = err_set(&p, LLM_EINVAL, "", NULL,
                         "We could not parse the JSON body of your request.");
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        rc = err_set(&p, LLM_EINVAL, "", NULL,
                     "Invalid body: the JSON body of your request must be an object.");
        goto out;
    }
    for (const cJSON *c = root->child; c; c = c->next) {
        size_t f = 0;
        while (f < N_FIELDS &&
               !((fields[f].kinds & mask) && strcmp(fields[f].name, c->string) == 0))
            f++;
        if (f == N_FIELDS) {
            char sk[129];
            rc = err_set(&p, LLM_EINVAL, c->string, NULL,
                         "Unrecognized request argument supplied: %s",
                         shown(sk, sizeof(sk), c->string));
            goto out;
        }
    }
    for (size_t f = 0; f < N_FIELDS; f++) {
        if (!(fields[f].kinds & mask))
            continue;
        const cJSON *v = last_item(root, fields[f].name);
        if (v && !cJSON_IsNull(v) && (rc = fields[f].fn(&p, v, fields[f].name)) != LLM_OK)
            goto out;
    }
    if (!out->model) {
        rc = err_missing(&p, "model");
        goto out;
    }
    if (kind == OAI_COMPLETIONS && !out->prompt && !out->prompt_ids) {
        rc = err_missing(&p, "prompt");
        goto out;
    }
    if (kind == OAI_CHAT && !out->n_messages) {
        rc = err_missing(&p, "messages");
        goto out;
    }
    if (p.stream_options && !out->stream) {
        rc = err_set(&p, LLM_EINVAL, "stream_options", "invalid_value",
                     "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
        goto out;
    }
    out->include_usage = out->stream && p.include_usage;
    out->max_tokens = p.has_max_completion ? p.max_completion : p.has_max_tokens ? p.max_tokens : 0;

out:
    cJSON_Delete(root);
    if (rc != LLM_OK)
        oai_request_fini(out);
    return rc;
}

void
oai_request_fini(oai_request *r)
{
    if (!r)
        return;
    free(r->model);
    free(r->prompt);
    free(r->prompt_ids);
    for (size_t i = 0; i < r->n_messages; i++) {
        if (r->roles)
            free(r->roles[i]);
        if (r->contents)
            free(r->contents[i]);
    }
    free(r->roles);
    free(r->contents);
    for (int i = 0; i < OAI_MAX_STOP; i++)
        free(r->stop[i]);
    free(r->user);
    memset(r, 0, sizeof(*r));
}

/* ---- formatting --------------------------------------------------------------------------- */

/* utf8_repair: NULL when s[0..n) is valid UTF-8, else a malloc'd copy with each byte
 * that does not start a well-formed character replaced by U+FFFD (and *failed set when
 * that copy could not be allocated). */
static char *
utf8_repair(const char *s, size_t n, bool *failed)
{
    size_t bad = 0;
    *failed = false;
    if (utf8_valid(s, n, &bad))
        return NULL;
    char *out = malloc(3 * n + 1); // at worst every byte becomes 3
    if (!out) {
        *failed = true;
        return NULL;
    }
    size_t i = 0, o = 0;
    while (i < n) {
        size_t run = utf8_valid(s + i, n - i, &bad) ? n - i : bad;
        memcpy(out + o, s + i, run);
        o += run;
        i += run;
        if (i < n) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return out;
}

/* add_text adds key: s (NULL as "") to obj, repaired to UTF-8. false when out of memory. */
static bool
add_text(cJSON *obj, const char *key, const char *s)
{
    bool failed = false;
    if (!s)
        s = "";
    char *fixed = utf8_repair(s, strlen(s), &failed);
    if (failed)
        return false;
    bool ok = cJSON_AddStringToObject(obj, key, fixed ? fixed : s) != NULL;
    free(fixed);
    return ok;
}

/* add_text_or_null: as add_text, with NULL written as null. */
static bool
add_text_or_null(cJSON *obj, const char *key, const char *s)
{
    return s ? add_text(obj, key, s) : cJSON_AddNullToObject(obj, key) != NULL;
}

/* add_int adds an integer member. cJSON prints every number as a double ("%1.15g", then
 * sscanf to check the round trip): several microseconds a response, on the hot path. */
static cJSON *
add_int(cJSON *o, const char *name, int64_t v)
{
    char b[24];
    snprintf(b, sizeof(b), "%" PRId64, v);
    return cJSON_AddRawToObject(o, name, b);
}

static bool
add_usage(cJSON *obj, uint32_t prompt, uint32_t completion, uint32_t cached)
{
    cJSON *u = cJSON_AddObjectToObject(obj, "usage");
    cJSON *d = NULL;
    return u && add_int(u, "prompt_tokens", prompt) &&
           add_int(u, "completion_tokens", completion) &&
           add_int(u, "total_tokens", (int64_t)prompt + (int64_t)completion) &&
           (d = cJSON_AddObjectToObject(u, "prompt_tokens_details")) != NULL &&
           add_int(d, "cached_tokens", cached);
}

/* head adds the fields every reply object starts with. */
static bool
head(cJSON *obj, const char *id, const char *object, int64_t created, const char *model)
{
    return add_text(obj, "id", id) && cJSON_AddStringToObject(obj, "object", object) &&
           add_int(obj, "created", created) && add_text(obj, "model", model);
}

/* print_free prints obj unformatted (NULL when ok is false or out of memory) and
 * frees it. */
static char *
print_free(cJSON *obj, bool ok)
{
    char *s = ok && obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return s;
}

char *
oai_error_json(const oai_error *e)
{
    assert(e != NULL);
    cJSON *root = cJSON_CreateObject();
    cJSON *err = root ? cJSON_AddObjectToObject(root, "error") : NULL;
    char msg[sizeof(e->message)], param[sizeof(e->param)];
    // The struct's text may come from anywhere; both copies are NUL-terminated UTF-8.
    memcpy(msg, e->message, sizeof(msg));
    msg[sizeof(msg) - 1] = '\0';
    memcpy(param, e->param, sizeof(param));
    param[sizeof(param) - 1] = '\0';
    bool ok = err && add_text(err, "message", msg) &&
              cJSON_AddStringToObject(err, "type", e->type ? e->type : TYPE_INVALID) &&
              add_text_or_null(err, "param", param[0] ? param : NULL) &&
              add_text_or_null(err, "code", e->code);
    return print_free(root, ok);
}

char *
oai_response_json(oai_kind kind, const oai_result *r)
{
    assert(r != NULL);
    cJSON *root = cJSON_CreateObject();
    bool chat = kind == OAI_CHAT;
    bool ok = root &&
              head(root, r->id, chat ? "chat.completion" : "text_completion", r->created, r->model);
    cJSON *choices = ok ? cJSON_AddArrayToObject(root, "choices") : NULL;
    cJSON *ch = cJSON_CreateObject();
    if (!choices || !ch || !cJSON_AddItemToArray(choices, ch)) {
        cJSON_Delete(ch);
        return print_free(root, false);
    }
    if (chat) {
        cJSON *msg = cJSON_CreateObject();
        ok = add_int(ch, "index", 0) && msg && cJSON_AddItemToObject(ch, "message", msg);
        if (!ok)
            cJSON_Delete(msg);
        ok = ok && cJSON_AddStringToObject(msg, "role", "assistant") &&
             add_text(msg, "content", r->text);
    } else {
        ok = add_text(ch, "text", r->text) && add_int(ch, "index", 0);
    }
    ok = ok && cJSON_AddNullToObject(ch, "logprobs") &&
         add_text_or_null(ch, "finish_reason", r->finish_reason) &&
         add_usage(root, r->prompt_tokens, r->completion_tokens, r->cached_tokens) &&
         (!chat || cJSON_AddNullToObject(root, "system_fingerprint"));
    return print_free(root, ok);
}

char *
oai_chunk_json(oai_kind kind, const oai_chunk *c)
{
    assert(c != NULL);
    cJSON *root = cJSON_CreateObject();
    bool chat = kind == OAI_CHAT;
    bool ok = root &&
              head(root, c->id, chat ? "chat.completion.chunk" : "text_completion", c->created,
                   c->model) &&
              (!chat || cJSON_AddNullToObject(root, "system_fingerprint"));
    cJSON *choices = ok ? cJSON_AddArrayToObject(root, "choices") : NULL;
    if (!choices)
        return print_free(root, false);
    if (c->usage_only)
        return print_free(
            root, add_usage(root, c->prompt_tokens, c->completion_tokens, c->cached_tokens));
    cJSON *ch = cJSON_CreateObject();
    if (!ch || !cJSON_AddItemToArray(choices, ch)) {
        cJSON_Delete(ch);
        return print_free(root, false);
    }
    if (chat) {
        cJSON *delta = cJSON_CreateObject();
        ok = add_int(ch, "index", 0) && delta && cJSON_AddItemToObject(ch, "delta", delta);
        if (!ok)
            cJSON_Delete(delta);
        if (ok && c->role)
            ok = cJSON_AddStringToObject(delta, "role", "assistant") &&
                 add_text(delta, "content", c->text);
        else if (ok && c->text)
            ok = add_text(delta, "content", c->text);
    } else {
        ok = add_text(ch, "text", c->text) && add_int(ch, "index", 0);
    }
    ok = ok && cJSON_AddNullToObject(ch, "logprobs") &&
         add_text_or_null(ch, "finish_reason", c->finish_reason) &&
         (!c->include_usage || cJSON_AddNullToObject(root, "usage"));
    return print_free(root, ok);
}

/* model_object: {"id","object":"model","created","owned_by"}, NULL when out of memory. */
static cJSON *
model_object(const char *name, int64_t created)
{
    cJSON *m = cJSON_CreateObject();
    if (m && add_text(m, "id", name) && cJSON_AddStringToObject(m, "object", "model") &&
        add_int(m, "created", created) && cJSON_AddStringToObject(m, "owned_by", "llmcluster"))
        return m;
    cJSON_Delete(m);
    return NULL;
}

char *
oai_models_json(const char *const *names, int n, int64_t created)
{
    assert(n == 0 || names != NULL);
    cJSON *root = cJSON_CreateObject();
    cJSON *data = NULL;
    bool ok = root && cJSON_AddStringToObject(root, "object", "list") &&
              (data = cJSON_AddArrayToObject(root, "data")) != NULL;
    for (int i = 0; ok && i < n; i++) {
        assert(names[i] != NULL);
        cJSON *m = model_object(names[i], created);
        ok = m && cJSON_AddItemToArray(data, m);
        if (!ok)
            cJSON_Delete(m);
    }
    return print_free(root, ok);
}

char *
oai_model_json(const char *name, int64_t created)
{
    assert(name != NULL);
    return print_free(model_object(name, created), true);
}
