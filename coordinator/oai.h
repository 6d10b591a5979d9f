/*
 * oai.h - the OpenAI-compatible JSON layer of the coordinator's HTTP front door:
 * request bodies of POST /v1/completions and /v1/chat/completions in, plain C structs
 * out; results, stream chunks, errors and model lists in, JSON text out.
 *
 * Parsing follows what OpenAI's API accepts and refuses, with its error shapes, so the
 * official clients work unchanged: unknown arguments are refused by name, JSON null
 * means "not given", parameters we cannot honour (n > 1, penalties, logprobs, tools,
 * JSON mode) are accepted only at their neutral value and refused otherwise with code
 * "unsupported_parameter". Every string handed back is valid UTF-8 without embedded
 * NUL. docs/openapi.yaml describes the HTTP API these objects travel in.
 *
 * What this module does not do: HTTP (status lines, headers, SSE framing, body size
 * limits), tokenization, model lookup ("model_not_found" is the server's), or anything
 * with protobuf. It holds no state: every function is reentrant and thread-safe.
 */
#ifndef LLM_COORD_OAI_H
#define LLM_COORD_OAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { OAI_COMPLETIONS, OAI_CHAT } oai_kind;

#define OAI_MAX_STOP 4                  // stop sequences per request (OpenAI's limit)
#define OAI_MAX_STOP_BYTES 256          // bytes of one stop sequence
#define OAI_MAX_MODEL_BYTES 255         // bytes of a model name
#define OAI_MAX_USER_BYTES 256          // bytes of the "user" field
#define OAI_MAX_MESSAGES 1024           // chat messages per request
#define OAI_MAX_PROMPT_IDS 131072       // token ids of a completions prompt
#define OAI_MAX_TOKENS_LIMIT 1000000    // the largest max_tokens accepted
#define OAI_MAX_TOP_K 100000            // the largest top_k accepted
#define OAI_MAX_SEED 9007199254740991LL // |seed| at most: 2^53 - 1, exact in a double

/* A parsed request: a plain data carrier, owned by the caller, freed with
 * oai_request_fini(). Exactly one input is set: prompt or prompt_ids (completions), or
 * the messages (chat). */
typedef struct {
    oai_kind kind;
    char *model; // non-empty, <= OAI_MAX_MODEL_BYTES
    // completions: the prompt text (non-empty), or NULL when given as token ids
    char *prompt;
    int32_t *prompt_ids; // [n_prompt_ids] each 0..INT32_MAX; NULL when prompt is text
    size_t n_prompt_ids; // 1..OAI_MAX_PROMPT_IDS when prompt_ids is set
    // chat: n_messages (1..OAI_MAX_MESSAGES) pairs; roles are "system" (also for
    // "developer"), "user" or "assistant"; contents may be "" and are the text parts
    // concatenated as they are, without separators
    char **roles;    // [n_messages]
    char **contents; // [n_messages]
    size_t n_messages;
    int max_tokens;     // 0: not given; else 1..OAI_MAX_TOKENS_LIMIT (chat:
                        // max_completion_tokens wins over max_tokens)
    double temperature; // 0..2, default 1
    double top_p;       // 0..1, default 1
    int top_k;          // extension: 0 (off, the default)..OAI_MAX_TOP_K
    bool has_seed;
    int64_t seed;             // |seed| <= OAI_MAX_SEED
    char *stop[OAI_MAX_STOP]; // [n_stop] non-empty, <= OAI_MAX_STOP_BYTES each
    int n_stop;
    bool stream;
    bool include_usage; // stream_options.include_usage (only with stream)
    char *user;         // NULL when not given; <= OAI_MAX_USER_BYTES
    char priority[16];  // extension: critical|high|normal|low|background; "" if absent
} oai_request;

/* Why a request was refused, in OpenAI's error shape. type and code point to static
 * strings (code may be NULL); param "" stands for JSON null. message and param are
 * valid UTF-8 (bytes of the request echoed in them are sanitized). */
typedef struct {
    int status; // HTTP status: 400 for every parse error
    char message[256];
    char param[64];   // the offending parameter, e.g. "max_tokens", "messages[2].role"
    const char *type; // "invalid_request_error" for parse errors
    const char *code; // NULL, or e.g. "unsupported_parameter", "invalid_type"
} oai_error;

/* oai_parse reads the request body body[0..len) (need not be NUL-terminated) of the
 * given kind into *out, which it overwrites (it need not be initialized). Returns LLM_OK,
 * or on failure fills *e (status 400) and returns LLM_EINVAL (bad JSON, types, values,
 * unknown arguments), LLM_ENOTSUP (a known OpenAI feature we do not serve at a
 * non-neutral value: n > 1, penalties, logprobs, tools, JSON mode, image parts, tool
 * messages) or LLM_ENOMEM (then status 500, type "server_error"); *out is then zeroed
 * with nothing to free. Reentrant; body is only read. */
int oai_parse(const char *body, size_t len, oai_kind kind, oai_request *out, oai_error *e);

/* oai_request_fini frees what oai_parse allocated and zeroes *r. Accepts NULL and a
 * zeroed struct, and may be called twice. */
void oai_request_fini(oai_request *r);

/* oai_error_json: {"error":{"message","type","param","code"}} with param "" and a NULL
 * code written as null (a NULL type as "invalid_request_error"). Returns a malloc'd
 * NUL-terminated string, free with free(), or NULL when out of memory. */
char *oai_error_json(const oai_error *e);

/* The outcome of one finished request, for a non-streamed reply. Strings are borrowed
 * for the call; NULL id, model and text are written as "", a NULL finish_reason as
 * null. */
typedef struct {
    const char *id;
    int64_t created; // unix seconds
    const char *model;
    const char *text;
    const char *finish_reason; // "stop" | "length" | ...
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
} oai_result;

/* oai_response_json: the whole reply, an OpenAI "text_completion" (OAI_COMPLETIONS) or
 * "chat.completion" (OAI_CHAT) object with one choice and the usage. Text that is not
 * valid UTF-8 (a token cut inside a character) has each bad byte replaced by U+FFFD,
 * so the output is always valid JSON in UTF-8. Returns a malloc'd NUL-terminated
 * string, free with free(), or NULL when out of memory. */
char *oai_response_json(oai_kind kind, const oai_result *r);

/* One server-sent event of a streamed reply. Strings are borrowed for the call. */
typedef struct {
    const char *id;
    int64_t created;
    const char *model;
    const char *text;          // NULL: no content in this chunk
    bool role;                 // chat: the first chunk: delta {"role":"assistant",...}
    const char *finish_reason; // NULL while running
    bool include_usage;        // the stream asked for usage: other chunks carry "usage":null
    bool usage_only;           // the last chunk of such a stream: "choices":[] and usage
    uint32_t prompt_tokens, completion_tokens, cached_tokens; // read when usage_only
} oai_chunk;

/* oai_chunk_json: the JSON of one chunk (the "data:" payload, without SSE framing), in
 * OpenAI's streamed formats: chat "chat.completion.chunk" objects whose delta is
 * {"role":"assistant","content":TEXT or ""} when role is set, {"content":TEXT} when
 * text is set, {} otherwise; completions "text_completion" objects with "text" TEXT or
 * "". Invalid UTF-8 in text is replaced as in oai_response_json. Returns a malloc'd
 * NUL-terminated string, free with free(), or NULL when out of memory. */
char *oai_chunk_json(oai_kind kind, const oai_chunk *c);

/* oai_models_json: the GET /v1/models list of names[0..n) (n >= 0; names non-NULL),
 * each {"id","object":"model","created","owned_by":"llmcluster"}. Returns a malloc'd
 * NUL-terminated string, free with free(), or NULL when out of memory. */
char *oai_models_json(const char *const *names, int n, int64_t created);

/* oai_model_json: one model object (GET /v1/models/{model}); name non-NULL. Returns a
 * malloc'd NUL-terminated string, free with free(), or NULL when out of memory. */
char *oai_model_json(const char *name, int64_t created);

#endif
