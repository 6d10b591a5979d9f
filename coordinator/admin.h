/*
 * admin.h - the coordinator's cluster-wide admin operations, answered from the registry:
 * ListModels, ClusterStatus and Drain as protobuf replies for the RPC port, and Drain
 * itself for the HTTP front door (which renders its own JSON).
 *
 * It does not route, hold streams or keep state: every answer is a copy of what the
 * registry holds at the moment of the call.
 *
 * Thread: any (the registry has its own lock). admin_drain blocks for one round trip to
 * the worker, bounded by timeout_ms: an admin operation, rare.
 */
#ifndef LLM_COORD_ADMIN_H
#define LLM_COORD_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "registry.h"

/* admin_list_models packs Envelope{id, ListModelsReply} into *buf (free()). LLM_OK or
 * LLM_ENOMEM. */
int admin_list_models(registry *reg, uint64_t id, uint8_t **buf, size_t *len);
/* admin_cluster_status packs Envelope{id, ClusterStatusReply} (every worker, every model,
 * requests_active) into *buf (free()). LLM_OK or LLM_ENOMEM. */
int admin_cluster_status(registry *reg, uint64_t requests_active, uint64_t id, uint8_t **buf,
                         size_t *len);
/* admin_drain stops routing to worker_id and tells the worker to drain (it finishes what
 * it runs, deregisters and exits 0). Routing stops even when the worker cannot be reached
 * within timeout_ms (logged). *out is the registry's record afterwards. LLM_ENOENT (with
 * a reason in err) for an unknown worker. */
int admin_drain(registry *reg, const char *worker_id, int timeout_ms, reg_worker_info *out,
                char *err, size_t err_len);
/* admin_drain_reply is admin_drain answered as Envelope{id, WorkerStatus} in *buf (free()). */
int admin_drain_reply(registry *reg, const char *worker_id, int timeout_ms, uint64_t id,
                      uint8_t **buf, size_t *len, char *err, size_t err_len);

#endif
