/*
 * server.h - the worker's NNG endpoint: protobuf Envelopes in, scheduler calls out.
 *
 * One rep0 socket with many contexts, so many requests are in flight at once on one
 * connection (DESIGN.md, "Protocol"). Generate submits and may wait a few milliseconds
 * to carry the first chunk in its Accepted reply; Next is a long poll on the stream
 * cursor (the context parks in the scheduler and is woken when tokens exist); Cancel,
 * Health and Stats answer at once. Drain puts the scheduler into draining and answers
 * with this worker's status; the process's main loop (serve.c) sees the scheduler
 * draining and finishes the drain exactly as on SIGTERM. Every malformed or invalid
 * message gets an Error reply with an llm_err code and a one-line reason, and is counted.
 *
 * Thread: NNG's callbacks and the scheduler thread drive the contexts; wserver_handle
 * may be called from any thread (the fuzz target calls it directly).
 */
#ifndef LLM_WORKER_SERVER_H
#define LLM_WORKER_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "metrics.h"
#include "sched.h"

typedef struct wserver wserver;

typedef struct {
    const char *listen;      // NNG URL, e.g. tcp://127.0.0.1:7071
    const char *model_name;  // the name requests must use ("" or that name)
    int contexts;            // requests in flight on the socket at once
    int first_chunk_wait_ms; // Generate waits this long for a first chunk to carry
    int max_wait_ms;         // the longest Next long poll
    int max_prompt_bytes;    // prompt text (or all messages) at most
    const char *worker_id;   // this worker's registry id, for Drain (NULL: "")
    const char *address;     // where the coordinator reaches it, for Drain's reply (NULL: listen)
} wserver_opts;

int wserver_new(sched *s, engine *e, metrics *reg, const wserver_opts *o, wserver **out, char *err,
                size_t err_len);
/* wserver_listen binds the socket and starts every context receiving. */
int wserver_listen(wserver *w, char *err, size_t err_len);
/* wserver_close stops receiving and closes the socket (parked contexts are answered
 * by sched_stop first: call it before). */
void wserver_close(wserver *w);
void wserver_free(wserver *w);

/* wserver_handle answers one request message synchronously, never parking: the reply
 * is packed into *reply (malloc'ed, free()). Used by tests and the fuzz target. */
int wserver_handle(wserver *w, const uint8_t *msg, size_t len, uint8_t **reply, size_t *reply_len);

#endif
