/*
 * rpcsrv.h - the one req/rep server of the project: an NNG rep socket with n contexts,
 * each receiving a message, handing it to a handler and sending the handler's reply.
 *
 * A handler answers at once (fills *reply) or parks the context: it keeps the context
 * somewhere and calls rpcsrv_reply later, from any thread (a long poll that waits for
 * tokens). Parking is how one socket carries thousands of waiting requests without a
 * thread each. Every context carries ctx_size bytes of the caller's own state.
 *
 * It does no decoding: bytes in, bytes out (wire.h does the Envelope).
 *
 * Thread: handlers run on NNG's threads, several at once (one per busy context).
 */
#ifndef LLM_COMMON_RPCSRV_H
#define LLM_COMMON_RPCSRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rpcsrv rpcsrv;
typedef struct rpcsrv_ctx rpcsrv_ctx;

/* The handler answers msg[0..len). To answer now: set *reply to malloc'ed bytes (the
 * server sends and frees them; NULL drops the message: the client times out) and return
 * false. To park: arrange for rpcsrv_reply(c, ...) and return true; the reply may come
 * before the handler returns. */
typedef bool (*rpcsrv_fn)(void *arg, rpcsrv_ctx *c, const uint8_t *msg, size_t len, uint8_t **reply,
                          size_t *reply_len);

/* rpcsrv_listen opens a rep socket on url (messages up to WIRE_MAX_MESSAGE), with n_ctxs
 * contexts of ctx_size zeroed bytes of caller state each, and starts receiving.
 * LLM_OK, or an llm_err with a reason in err. Free with rpcsrv_free. */
int rpcsrv_listen(const char *url, int n_ctxs, size_t ctx_size, rpcsrv_fn fn, void *arg,
                  rpcsrv **out, char *err, size_t err_len);

/* rpcsrv_reply sends the reply of a parked context (takes buf: malloc'ed; NULL drops
 * the message) and lets the context receive again. Exactly once per park. From any
 * thread until rpcsrv_free; once rpcsrv_close has begun it only frees buf. */
void rpcsrv_reply(rpcsrv_ctx *c, uint8_t *buf, size_t len);

/* rpcsrv_close stops every context (waits for handlers in flight) and closes the
 * socket; a parked context is never answered. rpcsrv_free closes, then frees.
 * Both accept NULL. */
void rpcsrv_close(rpcsrv *s);
void rpcsrv_free(rpcsrv *s);

/* The caller's state of a context, its context back from that state, and the i-th
 * context (0 <= i < n_ctxs), for scans such as long-poll expiry. */
void *rpcsrv_ctx_data(rpcsrv_ctx *c);
rpcsrv_ctx *rpcsrv_ctx_of(void *data);
int rpcsrv_n_ctxs(const rpcsrv *s);
rpcsrv_ctx *rpcsrv_ctx_at(rpcsrv *s, int i);

#endif
