/*
 * router.h - routing policies: which worker serves a request (DESIGN.md, "Router").
 *
 * Pure decision code over a snapshot of candidates the registry builds under its lock:
 * no I/O, no allocation, no locks, a few microseconds for hundreds of workers. The
 * registry owns the per-model router_state and serializes calls on it.
 *
 *   round_robin   the next candidate after the last one picked
 *   least_loaded  the smallest load (ties: fewest inflight, then the lowest index)
 *   p2c           two distinct candidates drawn at random, the less loaded of the two
 *   latency       the smallest expected completion time: queue wait EWMA + time per
 *                 token EWMA x the tokens asked for (capped), scaled by the load
 *   prefix        the most leading prompt blocks already cached on the worker (from its
 *                 heartbeat summary) minus a load penalty; a worker whose load exceeds the
 *                 least loaded candidate's by more than the imbalance cap is skipped; with
 *                 no match anywhere it is least_loaded
 *
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

/* route_policy_parse: "round_robin" | "least_loaded" | "p2c" | "latency" | "prefix".
 * LLM_OK or LLM_EINVAL. */
int route_policy_parse(const char *name, route_policy *out);
const char *route_policy_name(route_policy p);

/* One worker that may take the request (ready, breaker closed, right model). */
typedef struct {
    int load;            // requests on it: max(coordinator's inflight, heartbeat running+waiting)
    int inflight;        // requests this coordinator has on it
    double step_ms;      // the worker's heartbeat EWMA of step time (0: unknown)
    double queue_ms;     // EWMA of queue wait + prefill seen by this coordinator (0: none yet)
    double tpot_ms;      // EWMA of time per output token seen by this coordinator (0: none yet)
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

route_opts route_opts_default(void);

typedef struct {
    uint64_t rr_next; // round_robin position
    uint64_t rng;     // p2c draws (xorshift state; any non-zero seed)
} router_state;

/* route_prefix_match: how many of q's leading blocks the sorted set holds (stops at the
 * first block it lacks). */
int route_prefix_match(const uint64_t *sorted, int n_sorted, const uint64_t *blocks, int n_blocks);

/* router_pick returns the index in c[0..n) of the chosen worker, or -1 when n is 0.
 * *matched_blocks (may be NULL) receives the prefix blocks the choice already holds. */
int router_pick(router_state *st, route_policy p, const route_opts *o, const route_cand *c, int n,
                const route_req *q, int *matched_blocks);

#endif
