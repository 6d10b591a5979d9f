/*
 * wcall.h - one asynchronous request/reply call on an NNG req socket.
 *
 * NNG 1.5 gives contexts send and receive as two separate aio operations; a wcall
 * chains them (open a context, send, receive, close) and calls back once with the
 * outcome. Every call of the coordinator to a worker (Generate, Next, Cancel, Health,
 * Drain) is one of these, so a worker that dies, hangs or closes its connection shows
 * up in exactly one place: the callback's rc.
 *
 * Thread: the callback runs on an NNG thread and must not block. A wcall carries one
 * call at a time; it may be started again from its own callback.
 */
#ifndef LLM_COORD_WCALL_H
#define LLM_COORD_WCALL_H

#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#include "llm.pb-c.h"

typedef struct wcall wcall;

/* done: rc is LLM_OK with reply set (an Envelope, possibly an Error body; the callback
 * owns it: wire_free), or the transport's llm_err (LLM_ETIMEDOUT, LLM_ECLOSED,
 * LLM_EPROTO for a reply that is not an Envelope, ...) with reply NULL. */
typedef void (*wcall_fn)(void *arg, int rc, Llm__Envelope *reply);

/* wcall_new: LLM_OK or LLM_ENOMEM. Free with wcall_free (waits for a call in flight). */
int wcall_new(wcall_fn done, void *arg, wcall **out);
void wcall_free(wcall *c);

/* wcall_start packs env (borrowed) and sends it on sock; done runs exactly once, on an
 * NNG thread, never inside wcall_start (also when the call cannot start). timeout_ms
 * bounds the send and the receive each. */
void wcall_start(wcall *c, nng_socket sock, Llm__Envelope *env, int timeout_ms);

/* wcall_close_socket closes a socket that wcalls use (nng_close, never while a context
 * call of any wcall is inside NNG: NNG 1.5.2 does not survive that race; such calls made
 * meanwhile are held back and run right after). Calls in flight on it end with
 * LLM_ECLOSED. It waits for context calls in progress, so not from a wcall callback. */
void wcall_close_socket(nng_socket s);

/* wcall_abort makes a call in flight end at once with LLM_ECANCELED. */
void wcall_abort(wcall *c);

#endif
