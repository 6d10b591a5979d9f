/*
 * relay.h - the coordinator's client RPC: requests in, routed to workers, streams out,
 * failed over when a worker dies (DESIGN.md, "Protocol" and "Failover").
 *
 * Clients speak the worker protocol to the coordinator (Generate, Next long poll with an
 * after_seq cursor, Cancel, Health, Stats) plus ListModels, ClusterStatus and Drain
 * (answered from the registry by admin.c).
 *
 * Each request has a pump: one call at a time to its worker, first Generate, then Next
 * long polls, appending every chunk to the request's stream. Clients read that stream
 * with their own cursor, so the coordinator never loses a token it has seen. When a call
 * fails (the worker's connection closed, a timeout, an error that is not the request's
 * fault) the pump sends the request to another worker with prompt_ids = the prompt and
 * resume_ids = every token of the stream so far; the worker continues it exactly (the
 * sampler's draw at a position depends only on the seed and the position), and the
 * client's cursor goes on as if nothing happened. Attempts are bounded; with no worker
 * left the request ends with LLM_EUNAVAIL.
 *
 * The coordinator tokenizes prompts itself (ctok.h): prefix routing needs the prompt's
 * block hashes and resuming needs the exact prompt ids.
 *
 * Admission (DESIGN.md, "Admission"): each SLA tier has a bounded queue, the requests
 * admitted that have no token yet; past its bound a Generate is refused at once with
 * LLM_EBUSY (RPC: an Error with a retry hint; HTTP: 429), never queued without bound.
 * A request whose deadline has passed, or falls before the first token the best worker
 * is expected to give (its time-to-first-token EWMA), is refused with LLM_ETIMEDOUT.
 *
 * In-process readers (the HTTP front end) use relay_submit / relay_read / relay_release
 * instead of the socket: the same streams, failover and admission, without an NNG hop.
 *
 * Thread: relay_tick on one thread (the health loop); the rest runs on NNG's threads
 * and, for in-process readers, on theirs.
 */
#ifndef LLM_COORD_RELAY_H
#define LLM_COORD_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctok.h"
#include "metrics.h"
#include "llm.pb-c.h"
#include "registry.h"

#define RELAY_N_TIERS 5 // Llm__SlaTier values 0..4

typedef struct relay relay;

typedef struct {
    const char *listen;   // client RPC URL
    int contexts;         // client requests in flight on the socket
    int max_requests;     // streams the coordinator tracks at once (running or finished)
    int max_attempts;     // workers one request may be tried on
    int call_timeout_ms;  // Generate / Cancel / Drain round trips to a worker
    int poll_wait_ms;     // long poll length toward workers
    int max_wait_ms;      // longest client long poll
    int accept_wait_ms;   // a client's Generate waits this long for the worker's answer
    int finished_ttl_ms;  // a finished stream stays readable this long
    int max_prompt_bytes; // prompt text (or the sum of message contents) at most
    // Admission: requests of each tier (indexed by Llm__SlaTier) waiting for their first
    // token, at most; 0 = no bound.
    int queue_limit[RELAY_N_TIERS];
} relay_opts;

/* What an in-process reader gets of a stream past its cursor (relay_read). */
typedef struct {
    char *text;           // the text past text_off (malloc'd; free with relay_view_fini)
    uint32_t seq;         // the cursor read from: the index of the first new token
    uint32_t next_seq;    // the token cursor to read from next time
    size_t next_text_off; // the text cursor to read from next time
    bool accepted;        // a worker has taken the request
    bool ended;           // nothing will follow (finish or err_code)
    int finish;           // Llm__FinishReason; FINISH_NONE while running or after an error
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
    int err_code; // LLM_OK, or why the request ended without finishing
    char err_msg[200];
} relay_view;

/* Called under the relay's lock each time a subscribed stream is accepted, grows or
 * ends. It must not block or call into the relay: write an eventfd, signal a condvar. */
typedef void (*relay_notify_fn)(void *arg);

/* relay_new: toks[m] is the tokenizer of model m (registry order), borrowed for the
 * relay's life. LLM_OK, LLM_EINVAL (bad opts) or LLM_ENOMEM. */
int relay_new(registry *reg, ctok *const *toks, metrics *m, const relay_opts *o, relay **out,
              char *err, size_t err_len);
/* relay_listen opens the client socket and starts answering. */
int relay_listen(relay *rl, char *err, size_t err_len);
/* relay_tick answers client long polls whose wait is over and forgets finished streams
 * past their TTL. */
void relay_tick(relay *rl, int64_t now_ms);
/* relay_active: streams tracked now. */
int relay_active(relay *rl);
/* relay_close stops answering and aborts calls in flight; then relay_free. */
void relay_close(relay *rl);
void relay_free(relay *rl);

/* relay_submit admits a Generate from an in-process reader, as the client port would,
 * and subscribes fn(arg) to its stream. On LLM_OK *id names the stream until
 * relay_release. Errors: the Generate's own (LLM_EINVAL, LLM_ERANGE, LLM_ENOENT unknown
 * model, ...), LLM_EBUSY (its tier's queue is full, or too many streams), LLM_ETIMEDOUT
 * (its deadline cannot be met), each with a reason in err. fn may be called before
 * relay_submit returns. */
int relay_submit(relay *rl, const Llm__GenerateRequest *g, relay_notify_fn fn, void *arg,
                 uint64_t *id, char *err, size_t err_len);
/* relay_read copies what the stream has past a reader's cursor: tokens past after_seq,
 * text past byte text_off (a byte cursor, exact even for chunks that carry text and no
 * token). Never blocks. LLM_ENOENT for an unknown id, LLM_EINVAL for a cursor past the
 * stream, LLM_ENOMEM. */
int relay_read(relay *rl, uint64_t id, uint32_t after_seq, size_t text_off, relay_view *out);
void relay_view_fini(relay_view *v);
/* relay_release ends the reader's interest: unsubscribes (fn is not called once this
 * returns) and, when the stream is still running, cancels it on its worker. */
void relay_release(relay *rl, uint64_t id);

/* relay_handle answers one message without a socket (fuzzing, tests): the reply bytes
 * in *out (free()). Requests that would wait (Generate, Next) are answered at once
 * with what is there. */
int relay_handle(relay *rl, const uint8_t *msg, size_t len, uint8_t **out, size_t *out_len);

#endif
