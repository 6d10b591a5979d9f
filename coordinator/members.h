/*
 * members.h - the coordinator's membership port: workers send Register, Heartbeat and
 * Deregister here (DESIGN.md, "Protocol"), on an address of its own so that heartbeats
 * never queue behind client traffic.
 *
 * Each message is answered at once from the registry (no I/O under any lock): Accepted
 * on success, Error{code, message} when the registry refuses (unknown model, a
 * fingerprint that differs from the model's, a heartbeat from an unregistered id, ...).
 *
 * Thread: NNG's threads.
 */
#ifndef LLM_COORD_MEMBERS_H
#define LLM_COORD_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "registry.h"

typedef struct members members;

/* members_listen starts answering on url with n_ctxs contexts. reg may be NULL. */
int members_listen(registry *r, metrics *reg, const char *url, int n_ctxs, members **out, char *err,
                   size_t err_len);
/* members_handle answers one message without a socket (tests, fuzzing). */
int members_handle(members *m, const uint8_t *msg, size_t len, uint8_t **out, size_t *out_len);
void members_free(members *m);

#endif
