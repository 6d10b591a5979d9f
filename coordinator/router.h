/*
 * router.h - routing policies: which worker serves a request (DESIGN.md, "Router").
 *
 * Pure decision code over a snapshot of candidates the registry builds under its lock:
 * no I/O, no allocation, no locks, a few microseconds for hundreds of workers. The
 * registry owns the per-model router_state and serializes calls on it.
 *
 *   round_robin   the next candidate after the last one picked (index modulo n, so the
 *                 candidate order must be stable: registry order)
 *   least_loaded  the smallest load (ties: fewest inflight, then turns: each decision
 *                 starts its scan one candidate further, so idle workers share the work)
 *   p2c           two distinct candidates drawn at random (xorshift64 on st->rng), the
 *                 less loaded of the two (ties: fewer inflight, then the first drawn)
 *   latency       the smallest expected completion time
 *                   (queue_ms + tpot_ms * min(max_tokens, latency_tokens_cap)) * (1 + load)
 *                 where a worker not yet observed uses its heartbeat step_ms as tpot, and
 *                 one with no data at all the best tpot known among the others (tried,
 *                 not flooded); ties: lower load, then lower index
 *   prefix        the highest  matched_blocks - prefix_load_penalty * load  among the
 *                 workers whose load is at most the least loaded's + prefix_imbalance_cap
 *                 (ties: lower load, then lower index); when the winner holds no block
 *                 (no match anywhere, or every match outweighed by load) it is least_loaded
 *
 * Every policy is deterministic given (router_state, inputs); router.c has the details.
 * Thread: router_pick is reentrant; a router_state is used by one caller at a time.
 */
#ifndef LLM_COORD_ROUTER_H
#define LLM_COORD_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    ROUTE_ROUND_ROBIN,
    ROUTE_LEAST_LOADED,
    ROUTE_P2C,
    ROUTE_LATENCY,
    ROUTE_PREFIX,
    ROUTE_N_POLICIES
} route_policy;

/* route_policy_parse: "round_robin" | "least_loaded" | "p2c" | "latency" | "prefix"
 * (exact, case-sensitive). LLM_OK, or LLM_EINVAL for anything else or NULL, with *out
 * left unchanged. */
int route_policy_parse(const char *name, route_policy *out);
/* route_policy_name: the name route_policy_parse accepts for p; "unknown" out of range.
 * Static storage. */
const char *route_policy_name(route_policy p);

/* One worker that may take the request (ready, breaker closed, right model). */
typedef struct {
    int load;        // requests on it: this coordinator's inflight + others' (heartbeats)
    int inflight;    // requests this coordinator has on it
    double step_ms;  // the worker's heartbeat EWMA of step time (0: unknown)
    double queue_ms; // EWMA of queue wait + prefill seen by this coordinator (0: none yet)
    double tpot_ms;  // EWMA of time per output token seen by this coordinator (0: none yet)
    const uint64_t *prefix_sorted; // the worker's cached prefix block hashes, ascending
    int n_prefix;
} route_cand;

/* What the router knows of the request. */
typedef struct {
    const uint64_t *block_hashes; // the prompt's full blocks, in order (chained hashes)
    int n_blocks;
    int max_tokens;
} route_req;

typedef struct {
    double prefix_load_penalty; // blocks of prefix match one unit of load is worth (default 2)
    int prefix_imbalance_cap;   // prefix may pick a worker at most this much busier (default 8)
    int latency_tokens_cap;     // latency counts at most this many output tokens (default 256)
} route_opts;

/* route_opts_default: penalty 2.0, imbalance cap 8, latency tokens cap 256. */
route_opts route_opts_default(void);

typedef struct {
    uint64_t rr_next; // round_robin position
    uint64_t rng;     // p2c draws (xorshift state; any seed, 0 is replaced by a constant)
} router_state;

/* route_prefix_match: how many of q's leading blocks the sorted set holds (stops at the
 * first block it lacks). sorted must be ascending (duplicates allowed); a NULL array
 * counts as empty. O(result * log n_sorted). */
int route_prefix_match(const uint64_t *sorted, int n_sorted, const uint64_t *blocks, int n_blocks);

/* router_pick returns the index in c[0..n) of the chosen worker, or -1 when n is 0.
 * *matched_blocks (may be NULL) receives the prefix blocks the choice already holds,
 * whatever the policy (0 when n is 0 or q is NULL). st is updated by round_robin and p2c
 * only (it may be NULL for the others); o NULL means route_opts_default(); q NULL means
 * no blocks and max_tokens unset (latency then counts latency_tokens_cap tokens). */
int router_pick(router_state *st, route_policy p, const route_opts *o, const route_cand *c, int n,
                const route_req *q, int *matched_blocks);

#endif
