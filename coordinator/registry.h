/*
 * registry.h - the coordinator's view of its workers (DESIGN.md, "Registry and health").
 *
 * A worker is known by id: from a Register message, or listed statically in the config.
 * Records are never removed while the coordinator runs (a worker that leaves is `down`
 * and may come back under the same id), so a worker's index is a stable handle.
 *
 * States: starting (known, not yet connected) -> ready (our req socket to it is
 * connected and it is not draining) -> draining (it said so in a heartbeat, or an admin
 * drained it: no new requests, in-flight ones finish) -> down (its connection closed,
 * 3 heartbeats missed, or it deregistered). A down worker's socket is closed, which
 * fails every call in flight on it at once: that is what starts failover. A heartbeat or
 * Register from a down worker, or a static worker's next probe, connects again.
 *
 * Circuit breaker, per worker, fed by calls and probes: closed -> open after
 * breaker_failures consecutive failures (no requests routed) -> half_open after a
 * backoff (one probe; success closes it, failure reopens it with twice the backoff).
 *
 * The registry owns each worker's NNG req socket; reg_route hands out the socket of the
 * chosen worker. It does no network I/O under its lock: opening and closing sockets is
 * done by reg_tick, on the health thread, outside the lock.
 *
 * Thread: every function may be called from any thread (one internal mutex).
 */
#ifndef LLM_COORD_REGISTRY_H
#define LLM_COORD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#include "metrics.h"
#include "router.h"

typedef struct registry registry;

typedef enum { REG_STARTING, REG_READY, REG_DRAINING, REG_DOWN, REG_N_STATES } reg_state;
typedef enum { REG_BRK_CLOSED, REG_BRK_OPEN, REG_BRK_HALF_OPEN } reg_breaker;

#define REG_MAX_ID 128      // bytes of a worker id, model name
#define REG_MAX_ADDRESS 256 // bytes of an NNG URL
#define REG_MAX_HASHES 4096 // prefix hashes kept per worker

typedef struct {
    int max_workers;
    int heartbeat_timeout_ms;   // registered workers: down after this long without one
    int breaker_failures;       // consecutive failures that open the breaker
    int breaker_backoff_ms;     // first open period (doubles per failed half-open probe)
    int breaker_backoff_max_ms; // cap of that doubling
    int call_timeout_ms;        // send/receive timeout of the req sockets
    route_opts route;
} reg_opts;

/* A heartbeat's figures (borrowed by the calls below). */
typedef struct {
    int running, waiting;
    int kv_used, kv_total, kv_cached;
    double step_ms;
    const char *model;
    uint64_t fingerprint;
    int tp_size, block_tokens;
    bool draining;
    const uint64_t *hashes;
    int n_hashes;
} reg_load;

/* What ClusterStatus shows of one worker (a copy). */
typedef struct {
    char id[REG_MAX_ID], address[REG_MAX_ADDRESS], model[REG_MAX_ID];
    reg_state state;
    reg_breaker breaker;
    bool is_static, connected;
    int inflight;
    int running, waiting, kv_used, kv_total, kv_cached, tp_size, block_tokens, n_hashes;
    double step_ms, queue_ms, tpot_ms;
    uint64_t fingerprint, routed, failures;
    int64_t heartbeat_age_ms; // -1: none yet
} reg_worker_info;

typedef struct {
    char name[REG_MAX_ID];
    route_policy policy;
    uint64_t fingerprint; // 0 until the first worker of the model registers
    int workers_ready, workers_total;
} reg_model_info;

/* reg_new: LLM_OK, LLM_EINVAL (bad opts) or LLM_ENOMEM. reg may be NULL (no metrics). */
int reg_new(const reg_opts *o, metrics *reg, registry **out);
/* reg_free closes every socket; no call may be in flight on them any more. */
void reg_free(registry *r);

/* reg_add_model declares a model the cluster serves; returns its index (>= 0) or a
 * negative llm_err (-LLM_EINVAL for a duplicate or empty name). */
int reg_add_model(registry *r, const char *name, route_policy policy);
/* reg_find_model: the model's index, or -1. "" finds the only model when there is one. */
int reg_find_model(registry *r, const char *name);
int reg_n_models(registry *r);
int reg_get_model(registry *r, int model, reg_model_info *out);
/* reg_workers_ready: workers in state ready, over every model (what health reports). */
int reg_workers_ready(registry *r);

/* reg_add_static lists a worker that does not register: it is connected and probed,
 * and never times out for lack of heartbeats. LLM_EINVAL (unknown model, duplicate id,
 * bad sizes) with a reason, LLM_EBUSY when max_workers are known. */
int reg_add_static(registry *r, const char *id, const char *address, const char *model, char *err,
                   size_t err_len);

/* Membership messages. now_ms is llm_now_ns() / 1e6. LLM_EINVAL with a reason for an
 * empty or oversized id/address, a model the coordinator does not serve, or a weights
 * fingerprint that differs from the one the model's other workers report (a worker
 * that lies about its model); LLM_ENOENT for a heartbeat from an id never registered
 * (the worker should Register again); LLM_EBUSY when max_workers are known. A second
 * Register of a known id (a restarted worker) replaces its address and connects anew. */
int reg_register(registry *r, const char *id, const char *address, const reg_load *l,
                 int64_t now_ms, char *err, size_t err_len);
int reg_heartbeat(registry *r, const char *id, const reg_load *l, int64_t now_ms, char *err,
                  size_t err_len);
int reg_deregister(registry *r, const char *id, char *err, size_t err_len);

/* reg_drain marks id draining (admin); its address is copied to address[REG_MAX_ADDRESS]
 * so the caller can tell the worker. LLM_ENOENT for an unknown id. */
int reg_drain(registry *r, const char *id, char *address);

/* reg_route picks a worker for a request of model among the routable ones (ready,
 * connected, breaker closed), skipping the indices in exclude[0..n_exclude), and counts
 * the request as in flight on it. On LLM_OK: *worker (index), *sock (its req socket),
 * *matched (prefix blocks it holds; may be NULL). LLM_EUNAVAIL when none can take it. */
int reg_route(registry *r, int model, const route_req *q, const int *exclude, int n_exclude,
              int *worker, nng_socket *sock, int *matched);

/* reg_ttft_estimate_ms: the shortest time to first token (EWMA) among the model's
 * routable workers, for admission's deadline check; 0 when none has been measured yet,
 * -1 when no worker can take a request now. */
double reg_ttft_estimate_ms(registry *r, int model);
/* reg_done ends one in-flight request on worker. ok: the worker answered every call (a
 * breaker success; failures are reported as they happen, by reg_call_failed).
 * queue_ms / tpot_ms > 0 are this request's observed time to first token and time per
 * token, for `latency`. */
void reg_done(registry *r, int worker, bool ok, double queue_ms, double tpot_ms);

/* reg_call_failed reports a failed call on worker (breaker failure) without ending the
 * request, and marks the worker down when the failure says its connection is gone. */
void reg_call_failed(registry *r, int worker, int llm_rc);

/* reg_tick is the health thread's work, every few milliseconds: connect workers that
 * need a socket, close the sockets of workers gone down, time out silent workers, move
 * breakers to half_open and probe workers whose probe is due (asynchronously: results
 * come back through the probe callbacks). now_ms as above. */
void reg_tick(registry *r, int64_t now_ms, int probe_interval_ms);

int reg_n_workers(registry *r);
/* reg_worker_info copies worker i; LLM_ENOENT past the end. */
int reg_get_worker(registry *r, int i, reg_worker_info *out);
/* reg_find_worker: the index of id, or -1. */
int reg_find_worker(registry *r, const char *id);

const char *reg_state_name(reg_state s);
const char *reg_breaker_name(reg_breaker b);

#endif
