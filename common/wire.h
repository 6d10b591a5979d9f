/*
 * wire.h - the one framing layer: every NNG message is exactly one protobuf Envelope
 * (DESIGN.md, "Protocol").
 *
 * wire_decode is the only way bytes from the network become an Envelope: it checks the
 * version, that a body is present, and the fields every body needs (protobuf-c happily
 * unpacks many corrupted buffers, so presence is checked here, not trusted).
 * Handlers still validate the values (ranges, sizes) that only they understand.
 *
 * Thread: stateless; any thread.
 */
#ifndef LLM_COMMON_WIRE_H
#define LLM_COMMON_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#include "llm.pb-c.h"

#define WIRE_VERSION 1u
#define WIRE_MAX_MESSAGE (8u << 20) // bytes; NNG's receive limit is set to this too

/* wire_pack sets env->version and packs env into a malloc'ed buffer (free()).
 * LLM_OK or LLM_ENOMEM. */
int wire_pack(Llm__Envelope *env, uint8_t **buf, size_t *len);

/* wire_decode unpacks and validates len bytes. On LLM_OK *out is freed with wire_free.
 * LLM_EPROTO (with a one-line reason in err) for bytes that are not an Envelope, a
 * version other than WIRE_VERSION, no body, or a body missing a required sub-message;
 * LLM_ERANGE for a message larger than WIRE_MAX_MESSAGE. */
int wire_decode(const uint8_t *buf, size_t len, Llm__Envelope **out, char *err, size_t err_len);
void wire_free(Llm__Envelope *env);

/* wire_error_reply packs Envelope{request_id, Error{code, message, retry_after_ms}}. */
int wire_error_reply(uint64_t request_id, int code, const char *message, uint32_t retry_after_ms,
                     uint8_t **buf, size_t *len);

/* wire_nng_err translates an NNG error into the llm_err vocabulary. */
int wire_nng_err(int nng_rv);

/* wire_call sends req on a req0 socket and waits for the reply (the socket's send and
 * receive timeouts apply). A reply that is an Error envelope is returned as LLM_OK with
 * *reply set; the caller looks at body_case. */
int wire_call(nng_socket sock, Llm__Envelope *req, Llm__Envelope **reply, char *err,
              size_t err_len);

/* wire_check_text_input validates a Generate's text input before anyone tokenizes it:
 * a prompt or chat messages (roles system | user | assistant, UTF-8 content) of at most
 * max_bytes (a message counts its content + 16). LLM_OK (also for inputs that are not
 * text), LLM_EINVAL or LLM_ERANGE with a one-line reason. Workers and the coordinator
 * both tokenize, so both check with this. */
int wire_check_text_input(const Llm__GenerateRequest *g, size_t max_bytes, char *err,
                          size_t err_len);

/* wire_body_name: "generate", "next", ... for logs; "none" for an unset body. */
const char *wire_body_name(Llm__Envelope__BodyCase c);

#endif
