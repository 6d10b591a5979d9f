/*
 * llmclient.h - libllmclient: the C client of the cluster's protobuf RPC over NNG.
 *
 * It speaks the streaming long poll of DESIGN.md ("Protocol"): Generate, then Next with
 * a cursor until the final chunk, calling back for every chunk of tokens. The same calls
 * work against a coordinator or straight against a worker. One client may be used from
 * many threads at once (every call runs on its own NNG context).
 */
#ifndef LLM_CLIENT_LLMCLIENT_H
#define LLM_CLIENT_LLMCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct llmc llmc;

/* llmc_open dials url (e.g. tcp://127.0.0.1:7070). timeout_ms bounds each round trip. */
int llmc_open(const char *url, int timeout_ms, llmc **out, char *err, size_t err_len);
void llmc_close(llmc *c);

typedef struct {
    const char *role, *content;
} llmc_msg;

typedef enum {
    LLMC_TIER_NORMAL = 0,
    LLMC_TIER_CRITICAL = 1,
    LLMC_TIER_HIGH = 2,
    LLMC_TIER_LOW = 3,
    LLMC_TIER_BACKGROUND = 4,
} llmc_tier;

typedef struct {
    uint64_t request_id; // 0: the server picks one
    const char *model;   // NULL or "": the server's
    const char *prompt;  // one of prompt, messages, prompt_ids
    const llmc_msg *messages;
    int n_messages;
    const int32_t *prompt_ids;
    int n_prompt_ids;
    float temperature, top_p; // top_p 0 = unset
    int top_k;
    uint64_t seed;
    int max_tokens;
    const char *const *stop;
    int n_stop;
    llmc_tier tier;
    uint64_t deadline_unix_ms;
    const char *traceparent;
    uint32_t resume_from_seq;
    // Failover: the tokens already delivered for this request; the worker takes them as
    // its own first outputs and the stream (and callbacks) go on from seq n_resume_ids.
    const int32_t *resume_ids;
    int n_resume_ids;
    int poll_wait_ms; // long poll length (default 10000)
} llmc_request;

/* Called for every chunk with tokens or text; return non-zero to cancel the request. */
typedef int (*llmc_chunk_fn)(void *ctx, uint32_t seq, const int32_t *ids, int n_ids,
                             const char *text, size_t text_len);

typedef struct {
    uint64_t request_id;
    int finish; // an llm FinishReason value (1 stop, 2 length, 3 canceled, 4 deadline, 5 error)
    uint32_t prompt_tokens, completion_tokens, cached_tokens;
    int error_code; // an llm_err from an Error reply, 0 if none
} llmc_result;

/* llmc_generate runs one request to its end. LLM_OK when the stream ended (see
 * out->finish); an llm_err with err filled when the server refused it (out->error_code)
 * or the transport failed. */
int llmc_generate(llmc *c, const llmc_request *r, llmc_chunk_fn cb, void *ctx, llmc_result *out,
                  char *err, size_t err_len);

int llmc_cancel(llmc *c, uint64_t request_id, char *err, size_t err_len);
int llmc_health(llmc *c, bool *ready, char *state, size_t state_len, char *err, size_t err_len);
/* llmc_stats returns the Prometheus text of the peer's metrics (malloc'ed, free()). */
int llmc_stats(llmc *c, char **text, char *err, size_t err_len);

/* llmc_call_raw sends bytes as they are and returns the reply's bytes (malloc'ed):
 * for protocol tests. */
int llmc_call_raw(llmc *c, const void *buf, size_t len, void **reply, size_t *reply_len, char *err,
                  size_t err_len);

const char *llmc_finish_name(int finish);

/* ---- coordinator RPC: models, cluster status, drain ------------------------------------- */

/* One model the coordinator serves (ListModels, ClusterStatus). Plain data; the strings
 * belong to the struct and are freed with it. */
typedef struct {
    char *name;
    char *policy; // routing policy: round_robin | least_loaded | p2c | latency | prefix
    uint32_t workers_ready, workers_total;
} llmc_model_info;

/* One worker as the coordinator sees it (ClusterStatus, Drain). Plain data; the strings
 * belong to the struct. The load figures are those of the worker's last heartbeat. */
typedef struct {
    char *worker_id, *address, *model;
    char *state;   // starting | ready | draining | down
    char *breaker; // closed | open | half_open
    uint32_t running, waiting;
    uint32_t kv_blocks_used, kv_blocks_cached, kv_blocks_total;
    float step_ms_ewma;
    uint32_t tp_size;
    uint32_t n_prefix_hashes;  // size of the prefix summary it advertises
    uint32_t inflight;         // requests the coordinator has on it now
    uint64_t heartbeat_age_ms; // 0: no heartbeat yet
    uint64_t routed, failures;
    bool is_static; // listed in the coordinator's config rather than registered
} llmc_worker_status;

/* A coordinator's ClusterStatus reply as plain data, from llmc_cluster_status(); freed
 * with llmc_cluster_info_free(). */
typedef struct {
    llmc_worker_status *workers;
    int n_workers;
    llmc_model_info *models;
    int n_models;
    uint64_t requests_active;
} llmc_cluster_info;

/* llmc_list_models asks a coordinator for the models it serves. On LLM_OK *models is an
 * array of *n_models entries (NULL when there are none), freed with llmc_models_free().
 * Otherwise an llm_err with err filled: the transport failed, or the peer answered with
 * an Error (a worker does not speak ListModels) or an unexpected body (LLM_EPROTO).
 * Thread: any; the client may be shared. */
int llmc_list_models(llmc *c, llmc_model_info **models, int *n_models, char *err, size_t err_len);

/* llmc_models_free frees what llmc_list_models returned. NULL is fine. */
void llmc_models_free(llmc_model_info *models, int n_models);

/* llmc_cluster_status asks a coordinator for its registry: every worker it knows (down
 * ones too, while it remembers them), every model, the requests in flight. On LLM_OK *out is freed
 * with llmc_cluster_info_free(). Errors as llmc_list_models. Thread: any. */
int llmc_cluster_status(llmc *c, llmc_cluster_info **out, char *err, size_t err_len);

/* llmc_cluster_info_free frees a status and everything in it. NULL is fine. */
void llmc_cluster_info_free(llmc_cluster_info *s);

/* llmc_drain asks a coordinator to drain worker_id: it routes no new requests there, lets
 * the in-flight ones finish, and tells the worker to exit. On LLM_OK *out (caller's memory)
 * holds the worker's status after the call (state "draining"); release its strings with
 * llmc_worker_status_fini(). LLM_ENOENT when the coordinator knows no such worker; other
 * errors as llmc_list_models. On failure *out is zeroed. Thread: any. */
int llmc_drain(llmc *c, const char *worker_id, llmc_worker_status *out, char *err, size_t err_len);

/* llmc_worker_status_fini frees the strings of one status and zeroes it. NULL and a zeroed
 * struct are fine. */
void llmc_worker_status_fini(llmc_worker_status *w);

#endif
