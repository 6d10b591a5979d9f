/*
 * relay.h - the coordinator's client RPC: requests in, routed to workers, streams out,
 * failed over when a worker dies (DESIGN.md, "Protocol" and "Failover").
 *
 * Clients speak the worker protocol to the coordinator (Generate, Next long poll with an
 * after_seq cursor, Cancel, Health, Stats) plus ListModels, ClusterStatus and Drain.
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
 * Thread: relay_tick on one thread (the health loop); the rest runs on NNG's threads.
 */
#ifndef LLM_COORD_RELAY_H
#define LLM_COORD_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "ctok.h"
#include "metrics.h"
#include "registry.h"

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
} relay_opts;

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

/* relay_handle answers one message without a socket (fuzzing, tests): the reply bytes
 * in *out (free()). Requests that would wait (Generate, Next) are answered at once
 * with what is there. */
int relay_handle(relay *rl, const uint8_t *msg, size_t len, uint8_t **out, size_t *out_len);

#endif
