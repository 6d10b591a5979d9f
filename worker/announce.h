/*
 * announce.h - the worker's side of membership: Register on start, a Heartbeat with
 * the load figures every interval, Deregister on drain (DESIGN.md, "Protocol").
 *
 * A background thread talks to the coordinator over its own req0 socket. A coordinator
 * that is down or restarts costs nothing but log lines: a failed heartbeat makes the
 * next message a Register again.
 *
 * Thread: announce_start/announce_stop from one thread.
 */
#ifndef LLM_WORKER_ANNOUNCE_H
#define LLM_WORKER_ANNOUNCE_H

#include "engine.h"
#include "sched.h"

typedef struct announcer announcer;

typedef struct {
    const char *coordinator; // NNG URL of the coordinator's registration endpoint
    const char *worker_id;
    const char *address; // where the coordinator reaches this worker
    const char *model_name;
    int interval_ms; // heartbeat period
    int tp_size;
    int summary_max; // prefix hashes per heartbeat at most
} announce_opts;

int announce_start(sched *s, engine *e, const announce_opts *o, announcer **out, char *err,
                   size_t err_len);
/* announce_stop ends the thread; with deregister it first tells the coordinator. */
void announce_stop(announcer *a, bool deregister);

#endif
