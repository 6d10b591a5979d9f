/*
 * registry.c - workers, their states, breakers, sockets and probes.
 *
 * One mutex guards every record. Socket work (open, dial, close) and probe sends happen
 * in reg_tick outside that mutex: NNG calls back into the registry from its own threads
 * (pipe events, probe replies), and those callbacks take the mutex.
 */
#include "registry.h"

#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "wcall.h"
#include "wire.h"

#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rworker rworker;

static void on_probe(void *arg, int rc, Llm__Envelope *reply);

struct rworker {
    registry *r;
    int idx;
    char id[REG_MAX_ID], address[REG_MAX_ADDRESS], model_name[REG_MAX_ID];
    int model; // index into r->models
    reg_state state;
    bool is_static, admin_drain, said_draining;

    // Connection. want_close: the socket must be closed by the next tick (it is down).
    nng_socket sock;
    bool sock_open, connected, want_close;
    uint32_t gen;       // bumped for every socket opened, so stale events are ignored
    int64_t retry_ms;   // a down static worker is dialled again at this time
    int64_t last_hb_ms; // 0: none yet

    // The last heartbeat's figures.
    int running, waiting, kv_used, kv_total, kv_cached, tp_size, block_tokens;
    int foreign; // heartbeat running + waiting beyond what we had in flight: other clients'
    double step_ms;
    uint64_t fingerprint;
    uint64_t *hashes; // sorted ascending, n_hashes of REG_MAX_HASHES
    int n_hashes;

    // Breaker.
    reg_breaker brk;
    int consec_fail, backoff_ms;
    int64_t open_until_ms;

    // Probes.
    wcall *probe;
    bool probe_busy;
    int64_t next_probe_ms;

    // What this coordinator saw.
    int inflight;
    uint64_t routed, failures;
    double queue_ms, tpot_ms; // EWMAs
    metric_counter *routed_ctr;
    metric_gauge *inflight_g;
};

typedef struct {
    char name[REG_MAX_ID];
    route_policy policy;
    uint64_t fingerprint;
    router_state rs;
} rmodel;

enum { ACT_CLOSE, ACT_OPEN, ACT_PROBE };

typedef struct action {
    int kind;
    rworker *w;
    nng_socket sock;
    uint32_t gen;
    char address[REG_MAX_ADDRESS];
} action;

#define REG_MAX_MODELS 64

struct registry {
    reg_opts o;
    metrics *reg;
    pthread_mutex_t mu;
    rworker **w;
    int n_w;
    rmodel models[REG_MAX_MODELS];
    int n_models;
    route_cand *cands; // reg_route scratch, under mu
    int *cand_idx;
    struct action *acts; // reg_tick scratch (the health thread only)
    metric_counter *state_changes[REG_N_STATES];
    metric_gauge *state_gauge[REG_N_STATES];
    metric_counter *breaker_opened;
};

static const char *const state_names[REG_N_STATES] = {"starting", "ready", "draining", "down"};

const char *
reg_state_name(reg_state s)
{
    return s >= 0 && s < REG_N_STATES ? state_names[s] : "unknown";
}

const char *
reg_breaker_name(reg_breaker b)
{
    switch (b) {
    case REG_BRK_CLOSED: return "closed";
    case REG_BRK_OPEN: return "open";
    case REG_BRK_HALF_OPEN: return "half_open";
    default: return "unknown";
    }
}

/* ---- lifecycle ----------------------------------------------------------------------- */

int
reg_new(const reg_opts *o, metrics *reg, registry **out)
{
    if (o->max_workers < 1 || o->heartbeat_timeout_ms < 1 || o->breaker_failures < 1 ||
        o->breaker_backoff_ms < 1 || o->breaker_backoff_max_ms < o->breaker_backoff_ms ||
        o->call_timeout_ms < 1)
        return LLM_EINVAL;
    registry *r = calloc(1, sizeof(*r));
    if (!r)
        return LLM_ENOMEM;
    r->o = *o;
    r->reg = reg;
    r->w = calloc((size_t)o->max_workers, sizeof(*r->w));
    r->cands = calloc((size_t)o->max_workers, sizeof(*r->cands));
    r->cand_idx = calloc((size_t)o->max_workers, sizeof(*r->cand_idx));
    // Per tick a worker needs at most: close, open, probe.
    r->acts = calloc(3 * (size_t)o->max_workers, sizeof(*r->acts));
    if (!r->w || !r->cands || !r->cand_idx || !r->acts) {
        reg_free(r);
        return LLM_ENOMEM;
    }
    pthread_mutex_init(&r->mu, NULL);
    if (reg) {
        for (int s = 0; s < REG_N_STATES; s++) {
            char lb[48];
            snprintf(lb, sizeof(lb), "to=\"%s\"", state_names[s]);
            r->state_changes[s] = metrics_counter(reg, "llm_coord_worker_state_changes_total",
                                                  "Worker state transitions.", lb);
            snprintf(lb, sizeof(lb), "state=\"%s\"", state_names[s]);
            r->state_gauge[s] = metrics_gauge(reg, "llm_coord_workers", "Workers by state.", lb);
        }
        r->breaker_opened = metrics_counter(reg, "llm_coord_breaker_opened_total",
                                            "Circuit breakers opened.", NULL);
    }
    *out = r;
    return LLM_OK;
}

void
reg_free(registry *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_w; i++) {
        rworker *w = r->w[i];
        // The probe first: its call must not be in flight while its socket closes.
        wcall_free(w->probe);
        if (w->sock_open)
            wcall_close_socket(w->sock);
        free(w->hashes);
        free(w);
    }
    if (r->w)
        pthread_mutex_destroy(&r->mu);
    free(r->w);
    free(r->cands);
    free(r->cand_idx);
    free(r->acts);
    free(r);
}

/* ---- models ------------------------------------------------------------------------- */

int
reg_add_model(registry *r, const char *name, route_policy policy)
{
    if (!name[0] || strlen(name) >= REG_MAX_ID)
        return -LLM_EINVAL;
    pthread_mutex_lock(&r->mu);
    int rc = r->n_models;
    for (int i = 0; i < r->n_models; i++)
        if (strcmp(r->models[i].name, name) == 0)
            rc = -LLM_EINVAL;
    if (rc >= REG_MAX_MODELS)
        rc = -LLM_EBUSY;
    if (rc >= 0) {
        rmodel *m = &r->models[r->n_models++];
        snprintf(m->name, sizeof(m->name), "%s", name);
        m->policy = policy;
        m->rs.rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)rc;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static int
find_model_locked(registry *r, const char *name)
{
    if (!name[0])
        return r->n_models == 1 ? 0 : -1;
    for (int i = 0; i < r->n_models; i++)
        if (strcmp(r->models[i].name, name) == 0)
            return i;
    return -1;
}

int
reg_find_model(registry *r, const char *name)
{
    pthread_mutex_lock(&r->mu);
    int i = find_model_locked(r, name);
    pthread_mutex_unlock(&r->mu);
    return i;
}

int
reg_n_models(registry *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->n_models;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int
reg_workers_ready(registry *r)
{
    pthread_mutex_lock(&r->mu);
    int n = 0;
    for (int i = 0; i < r->n_w; i++)
        n += r->w[i]->state == REG_READY;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int
reg_get_model(registry *r, int model, reg_model_info *out)
{
    pthread_mutex_lock(&r->mu);
    if (model < 0 || model >= r->n_models) {
        pthread_mutex_unlock(&r->mu);
        return LLM_ENOENT;
    }
    const rmodel *m = &r->models[model];
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", m->name);
    out->policy = m->policy;
    out->fingerprint = m->fingerprint;
    for (int i = 0; i < r->n_w; i++) {
        if (r->w[i]->model != model)
            continue;
        out->workers_total++;
        out->workers_ready += r->w[i]->state == REG_READY;
    }
    pthread_mutex_unlock(&r->mu);
    return LLM_OK;
}

/* ---- states ---------------------------------------------------------------------------- */

static void
set_state(registry *r, rworker *w, reg_state s, const char *why)
{
    if (w->state == s)
        return;
    LOG_INFO("event=worker_state worker=%s from=%s to=%s why=%s", w->id, state_names[w->state],
             state_names[s], why);
    if (r->reg) {
        metric_gauge_add(r->state_gauge[w->state], -1);
        metric_gauge_add(r->state_gauge[s], 1);
        metric_counter_add(r->state_changes[s], 1);
    }
    w->state = s;
    if (s == REG_DOWN) {
        w->connected = false;
        w->want_close = w->sock_open;
    }
}

/* settle moves a live worker between starting, ready and draining from what is known. */
static void
settle(registry *r, rworker *w)
{
    if (w->state == REG_DOWN)
        return;
    if (w->admin_drain || w->said_draining)
        set_state(r, w, REG_DRAINING, w->admin_drain ? "admin_drain" : "worker_draining");
    else if (w->connected)
        set_state(r, w, REG_READY, "connected");
    else
        set_state(r, w, REG_STARTING, "connecting");
}

static rworker *
find_worker_locked(registry *r, const char *id)
{
    for (int i = 0; i < r->n_w; i++)
        if (strcmp(r->w[i]->id, id) == 0)
            return r->w[i];
    return NULL;
}

int
reg_find_worker(registry *r, const char *id)
{
    pthread_mutex_lock(&r->mu);
    rworker *w = find_worker_locked(r, id);
    int i = w ? w->idx : -1;
    pthread_mutex_unlock(&r->mu);
    return i;
}

static int
check_names(const char *id, const char *address, char *err, size_t err_len)
{
    if (!id[0] || strlen(id) >= REG_MAX_ID) {
        llm_errf(err, err_len, "worker id must be 1..%d bytes", REG_MAX_ID - 1);
        return LLM_EINVAL;
    }
    if (!address[0] || strlen(address) >= REG_MAX_ADDRESS || !strstr(address, "://")) {
        llm_errf(err, err_len, "worker %s: address '%.64s' is not an NNG URL", id, address);
        return LLM_EINVAL;
    }
    return LLM_OK;
}

static rworker *
add_worker_locked(registry *r, const char *id, int model, char *err, size_t err_len)
{
    if (r->n_w >= r->o.max_workers) {
        llm_errf(err, err_len, "the registry is full (%d workers)", r->o.max_workers);
        return NULL;
    }
    rworker *w = calloc(1, sizeof(*w));
    if (w)
        w->hashes = malloc(sizeof(uint64_t) * REG_MAX_HASHES);
    if (!w || !w->hashes || wcall_new(on_probe, w, &w->probe) != LLM_OK) {
        if (w)
            free(w->hashes);
        free(w);
        llm_errf(err, err_len, "out of memory");
        return NULL;
    }
    w->r = r;
    w->idx = r->n_w;
    w->model = model;
    w->backoff_ms = r->o.breaker_backoff_ms;
    snprintf(w->id, sizeof(w->id), "%s", id);
    snprintf(w->model_name, sizeof(w->model_name), "%s", r->models[model].name);
    w->state = REG_STARTING;
    if (r->reg) {
        metric_gauge_add(r->state_gauge[REG_STARTING], 1);
        char lb[REG_MAX_ID * 2 + 64], esc[REG_MAX_ID * 2];
        metrics_label_escape(esc, sizeof(esc), id);
        snprintf(lb, sizeof(lb), "policy=\"%s\",worker=\"%s\"",
                 route_policy_name(r->models[model].policy), esc);
        w->routed_ctr = metrics_counter(r->reg, "llm_coord_routed_total", "Routing decisions.", lb);
        snprintf(lb, sizeof(lb), "worker=\"%s\"", esc);
        w->inflight_g = metrics_gauge(r->reg, "llm_coord_worker_inflight",
                                      "Requests the coordinator has on a worker now.", lb);
    }
    r->w[r->n_w++] = w;
    return w;
}

int
reg_add_static(registry *r, const char *id, const char *address, const char *model, char *err,
               size_t err_len)
{
    int rc = check_names(id, address, err, err_len);
    if (rc != LLM_OK)
        return rc;
    pthread_mutex_lock(&r->mu);
    int m = find_model_locked(r, model);
    rworker *w = NULL;
    if (m < 0) {
        llm_errf(err, err_len, "worker %s: unknown model '%s'", id, model);
        rc = LLM_EINVAL;
    } else if (find_worker_locked(r, id)) {
        llm_errf(err, err_len, "worker %s is listed twice", id);
        rc = LLM_EINVAL;
    } else if (!(w = add_worker_locked(r, id, m, err, err_len))) {
        rc = LLM_EBUSY;
    } else {
        w->is_static = true;
        snprintf(w->address, sizeof(w->address), "%s", address);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* take_load copies a heartbeat's figures into w. */
static void
take_load(rworker *w, const reg_load *l, int64_t now_ms)
{
    w->running = l->running;
    w->waiting = l->waiting;
    // What the worker carries for others (direct clients, other coordinators). Ours is
    // counted exactly by inflight; the heartbeat's own view of it is up to a second old.
    // (64-bit: the figures come from the network; capped so load sums cannot overflow.)
    int64_t theirs = (int64_t)l->running + l->waiting - w->inflight;
    w->foreign = theirs <= 0 ? 0 : theirs > (1 << 28) ? (1 << 28) : (int)theirs;
    w->kv_used = l->kv_used;
    w->kv_total = l->kv_total;
    w->kv_cached = l->kv_cached;
    w->tp_size = l->tp_size;
    w->block_tokens = l->block_tokens;
    w->step_ms = l->step_ms;
    w->fingerprint = l->fingerprint;
    w->said_draining = l->draining;
    int n = l->n_hashes < REG_MAX_HASHES ? l->n_hashes : REG_MAX_HASHES;
    if (n < 0 || !l->hashes)
        n = 0;
    if (n > 0)
        memcpy(w->hashes, l->hashes, sizeof(uint64_t) * (size_t)n);
    w->n_hashes = n;
    // Sorted for route_prefix_match's binary search. Insertion sort: n <= a few hundred,
    // once a second per worker.
    for (int i = 1; i < w->n_hashes; i++) {
        uint64_t v = w->hashes[i];
        int j = i - 1;
        for (; j >= 0 && w->hashes[j] > v; j--)
            w->hashes[j + 1] = w->hashes[j];
        w->hashes[j + 1] = v;
    }
    w->last_hb_ms = now_ms;
}

/* check_model verifies what a worker says it serves against what we know. */
static int
check_model(registry *r, const char *id, const reg_load *l, int *model, char *err, size_t err_len)
{
    if (!l || !l->model) {
        llm_errf(err, err_len, "worker %s sent no load figures", id);
        return LLM_EINVAL;
    }
    int m = find_model_locked(r, l->model);
    if (m < 0 || !l->model[0]) {
        llm_errf(err, err_len, "worker %s serves '%.64s', which this coordinator does not route",
                 id, l->model);
        return LLM_EINVAL;
    }
    const rmodel *rm = &r->models[m];
    if (rm->fingerprint && l->fingerprint != rm->fingerprint) {
        llm_errf(err, err_len,
                 "worker %s says it serves '%s' but its weights fingerprint %016llx differs "
                 "from the model's %016llx",
                 id, rm->name, (unsigned long long)l->fingerprint,
                 (unsigned long long)rm->fingerprint);
        return LLM_EINVAL;
    }
    if (l->running < 0 || l->waiting < 0 || l->n_hashes < 0) {
        llm_errf(err, err_len, "worker %s sent negative load figures", id);
        return LLM_EINVAL;
    }
    *model = m;
    return LLM_OK;
}

/* learn_fingerprint: the first accepted worker of a model fixes its fingerprint (only
 * after every check passed: a refused Register must not decide who is honest). */
static void
learn_fingerprint(registry *r, int model, uint64_t fp)
{
    if (!r->models[model].fingerprint)
        r->models[model].fingerprint = fp;
}

int
reg_register(registry *r, const char *id, const char *address, const reg_load *l, int64_t now_ms,
             char *err, size_t err_len)
{
    int rc = check_names(id, address, err, err_len);
    if (rc != LLM_OK)
        return rc;
    pthread_mutex_lock(&r->mu);
    int m = -1;
    rworker *w = find_worker_locked(r, id);
    if ((rc = check_model(r, id, l, &m, err, err_len)) != LLM_OK)
        goto out;
    if (w && w->is_static) {
        llm_errf(err, err_len, "worker %s is listed statically in the config", id);
        rc = LLM_EINVAL;
        goto out;
    }
    if (w && w->model != m) {
        llm_errf(err, err_len, "worker %s registered before with model '%s', now '%s'", id,
                 w->model_name, r->models[m].name);
        rc = LLM_EINVAL;
        goto out;
    }
    if (!w && !(w = add_worker_locked(r, id, m, err, err_len))) {
        rc = LLM_EBUSY;
        goto out;
    }
    // A Register from a known worker is a restart (or a lost heartbeat reply): its old
    // connection, if any, is stale. Close it and dial again. But an id whose worker is
    // alive and connected elsewhere is taken: a second process must not steal it.
    bool moved = strcmp(w->address, address) != 0;
    if (moved && w->state != REG_DOWN && w->connected) {
        llm_errf(err, err_len, "worker id %s is in use by a live worker at %s", id, w->address);
        rc = LLM_EINVAL;
        goto out;
    }
    learn_fingerprint(r, m, l->fingerprint);
    snprintf(w->address, sizeof(w->address), "%s", address);
    take_load(w, l, now_ms);
    w->admin_drain = false;
    if (w->state != REG_DOWN && (moved || !w->connected)) {
        w->want_close = w->sock_open;
        w->connected = false;
    }
    if (w->state == REG_DOWN)
        set_state(r, w, REG_STARTING, "registered");
    settle(r, w);
    LOG_INFO("event=worker_registered worker=%s address=%s model=%s", id, address, w->model_name);
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int
reg_heartbeat(registry *r, const char *id, const reg_load *l, int64_t now_ms, char *err,
              size_t err_len)
{
    pthread_mutex_lock(&r->mu);
    int m = -1, rc = LLM_OK;
    rworker *w = find_worker_locked(r, id);
    if (!w || w->is_static) {
        llm_errf(err, err_len, "worker '%.64s' is not registered: send Register first", id);
        rc = LLM_ENOENT;
    } else if ((rc = check_model(r, id, l, &m, err, err_len)) == LLM_OK && m != w->model) {
        llm_errf(err, err_len, "worker %s registered with model '%s', its heartbeat says '%s'", id,
                 w->model_name, r->models[m].name);
        rc = LLM_EINVAL;
    }
    if (rc == LLM_OK) {
        learn_fingerprint(r, m, l->fingerprint);
        take_load(w, l, now_ms);
        // A heartbeat from a worker we gave up on: it lives, so connect again.
        if (w->state == REG_DOWN)
            set_state(r, w, REG_STARTING, "heartbeat");
        settle(r, w);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int
reg_deregister(registry *r, const char *id, char *err, size_t err_len)
{
    pthread_mutex_lock(&r->mu);
    rworker *w = find_worker_locked(r, id);
    int rc = LLM_OK;
    if (!w || w->is_static) {
        llm_errf(err, err_len, "worker '%.64s' is not registered", id);
        rc = LLM_ENOENT;
    } else {
        set_state(r, w, REG_DOWN, "deregistered");
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int
reg_drain(registry *r, const char *id, char *address)
{
    pthread_mutex_lock(&r->mu);
    rworker *w = find_worker_locked(r, id);
    if (w) {
        w->admin_drain = true;
        settle(r, w);
        snprintf(address, REG_MAX_ADDRESS, "%s", w->address);
    }
    pthread_mutex_unlock(&r->mu);
    return w ? LLM_OK : LLM_ENOENT;
}

/* ---- routing and outcomes -------------------------------------------------------------- */

/* routable: w may be given a request now. Under mu. */
static bool
routable(const rworker *w)
{
    return w->state == REG_READY && w->connected && w->sock_open && !w->want_close &&
           w->brk == REG_BRK_CLOSED;
}

int
reg_route(registry *r, int model, const route_req *q, const int *exclude, int n_exclude,
          int *worker, nng_socket *sock, int *matched)
{
    pthread_mutex_lock(&r->mu);
    int n = 0;
    for (int i = 0; i < r->n_w; i++) {
        rworker *w = r->w[i];
        if (w->model != model || !routable(w))
            continue;
        bool skip = false;
        for (int k = 0; k < n_exclude && !skip; k++)
            skip = exclude[k] == i;
        if (skip)
            continue;
        r->cands[n] = (route_cand){
            .load = w->inflight + w->foreign,
            .inflight = w->inflight,
            .step_ms = w->step_ms,
            .queue_ms = w->queue_ms,
            .tpot_ms = w->tpot_ms,
            .prefix_sorted = w->hashes,
            .n_prefix = w->n_hashes,
        };
        r->cand_idx[n++] = i;
    }
    int pick = -1;
    if (model >= 0 && model < r->n_models) {
        rmodel *m = &r->models[model];
        pick = router_pick(&m->rs, m->policy, &r->o.route, r->cands, n, q, matched);
    }
    if (pick >= 0) {
        rworker *w = r->w[r->cand_idx[pick]];
        w->inflight++;
        metric_gauge_set(w->inflight_g, w->inflight);
        w->routed++;
        if (w->routed_ctr)
            metric_counter_add(w->routed_ctr, 1);
        *worker = w->idx;
        *sock = w->sock;
    }
    pthread_mutex_unlock(&r->mu);
    return pick >= 0 ? LLM_OK : LLM_EUNAVAIL;
}

double
reg_ttft_estimate_ms(registry *r, int model)
{
    double best = -1;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n_w; i++) {
        rworker *w = r->w[i];
        if (w->model != model || !routable(w))
            continue;
        if (best < 0 || w->queue_ms < best)
            best = w->queue_ms;
    }
    pthread_mutex_unlock(&r->mu);
    return best;
}

/* breaker_result feeds one call or probe outcome to w's breaker. Under mu. */
static void
breaker_result(registry *r, rworker *w, bool ok, int64_t now_ms)
{
    if (ok) {
        if (w->brk != REG_BRK_CLOSED)
            LOG_INFO("event=breaker_closed worker=%s", w->id);
        w->consec_fail = 0;
        w->brk = REG_BRK_CLOSED;
        w->backoff_ms = r->o.breaker_backoff_ms;
        return;
    }
    w->failures++;
    w->consec_fail++;
    if (w->brk == REG_BRK_HALF_OPEN) {
        w->backoff_ms = w->backoff_ms * 2 < r->o.breaker_backoff_max_ms
                            ? w->backoff_ms * 2
                            : r->o.breaker_backoff_max_ms;
    } else if (w->brk == REG_BRK_OPEN || w->consec_fail < r->o.breaker_failures) {
        return;
    }
    w->brk = REG_BRK_OPEN;
    w->open_until_ms = now_ms + w->backoff_ms;
    if (r->breaker_opened)
        metric_counter_add(r->breaker_opened, 1);
    LOG_WARN("event=breaker_open worker=%s failures=%d backoff_ms=%d", w->id, w->consec_fail,
             w->backoff_ms);
}

static double
ewma(double old, double v)
{
    return old > 0 ? 0.8 * old + 0.2 * v : v;
}

void
reg_done(registry *r, int worker, bool ok, double queue_ms, double tpot_ms)
{
    pthread_mutex_lock(&r->mu);
    if (worker >= 0 && worker < r->n_w) {
        rworker *w = r->w[worker];
        if (w->inflight > 0)
            w->inflight--;
        metric_gauge_set(w->inflight_g, w->inflight);
        if (queue_ms > 0)
            w->queue_ms = ewma(w->queue_ms, queue_ms);
        if (tpot_ms > 0)
            w->tpot_ms = ewma(w->tpot_ms, tpot_ms);
        if (ok && w->brk == REG_BRK_CLOSED)
            w->consec_fail = 0; // failures were reported by reg_call_failed
    }
    pthread_mutex_unlock(&r->mu);
}

void
reg_call_failed(registry *r, int worker, int llm_rc)
{
    pthread_mutex_lock(&r->mu);
    if (worker >= 0 && worker < r->n_w) {
        rworker *w = r->w[worker];
        breaker_result(r, w, false, llm_now_ms());
        if (llm_rc == LLM_ECLOSED)
            set_state(r, w, REG_DOWN, "connection_closed");
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---- connections and probes ------------------------------------------------------------ */

static void
on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    rworker *w = arg;
    registry *r = w->r;
    pthread_mutex_lock(&r->mu);
    // Events of a socket we already replaced or closed are stale.
    if (w->sock_open && !w->want_close &&
        nng_socket_id(nng_pipe_socket(p)) == nng_socket_id(w->sock)) {
        if (ev == NNG_PIPE_EV_ADD_POST) {
            w->connected = true;
            settle(r, w);
        } else if (ev == NNG_PIPE_EV_REM_POST) {
            // The worker's process or host is gone (or the network is): fail over now,
            // not after missed heartbeats.
            set_state(r, w, REG_DOWN, "connection_closed");
        }
    }
    pthread_mutex_unlock(&r->mu);
}

static void
on_probe(void *arg, int rc, Llm__Envelope *reply)
{
    rworker *w = arg;
    registry *r = w->r;
    bool ok = rc == LLM_OK && reply->body_case == LLM__ENVELOPE__BODY_HEALTH_REPLY;
    bool draining = ok && !reply->health_reply->ready;
    wire_free(reply);
    pthread_mutex_lock(&r->mu);
    w->probe_busy = false;
    // A success from a probe sent before the breaker opened does not cut its backoff
    // short: only the half-open probe closes an open breaker.
    if (w->state != REG_DOWN && !(ok && w->brk == REG_BRK_OPEN)) {
        breaker_result(r, w, ok, llm_now_ms());
        if (!ok)
            LOG_INFO("event=probe_failed worker=%s err=%s", w->id, llm_strerror(rc));
        if (ok && w->is_static) {
            w->said_draining = draining;
            settle(r, w);
        }
    }
    pthread_mutex_unlock(&r->mu);
}

/* open_socket makes w's req socket; dial_socket connects it later, once the registry
 * has recorded it: the pipe callback recognises events by the recorded socket, and a
 * connection could otherwise come up before the record exists and be missed. */
static int
open_socket(rworker *w, int timeout_ms, nng_socket *out)
{
    nng_socket s;
    int rv = nng_req0_open(&s);
    if (rv != 0)
        return wire_nng_err(rv);
    nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, WIRE_MAX_MESSAGE);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms);
    nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, 1000);
    // A request whose pipe closes is not resent on the next pipe: the coordinator fails
    // it over itself, with the tokens it has (a resend would restart the stream).
    nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, on_pipe, w);
    nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, on_pipe, w);
    *out = s;
    return LLM_OK;
}

void
reg_tick(registry *r, int64_t now_ms, int probe_interval_ms)
{
    // Decide under the lock, act outside it, record the results under it again.
    int n = 0;
    action *acts = r->acts;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n_w; i++) {
        rworker *w = r->w[i];
        if (!w->is_static && w->state != REG_DOWN && w->last_hb_ms > 0 &&
            now_ms - w->last_hb_ms > r->o.heartbeat_timeout_ms)
            set_state(r, w, REG_DOWN, "heartbeats_missed");
        if (w->want_close) {
            acts[n++] = (action){.kind = ACT_CLOSE, .w = w, .sock = w->sock};
            w->want_close = w->sock_open = w->connected = false;
            w->retry_ms = now_ms + probe_interval_ms;
        }
        if (w->is_static && w->state == REG_DOWN && now_ms >= w->retry_ms)
            set_state(r, w, REG_STARTING, "retry");
        if (w->state != REG_DOWN && !w->sock_open) {
            acts[n] = (action){.kind = ACT_OPEN, .w = w, .gen = ++w->gen};
            snprintf(acts[n++].address, REG_MAX_ADDRESS, "%s", w->address);
        }
        if (w->brk == REG_BRK_OPEN && now_ms >= w->open_until_ms) {
            w->brk = REG_BRK_HALF_OPEN;
            w->next_probe_ms = now_ms; // the half-open probe
        }
        // An open breaker waits out its backoff: only its half-open probe goes through.
        if (w->sock_open && w->connected && !w->probe_busy && now_ms >= w->next_probe_ms &&
            w->brk != REG_BRK_OPEN) {
            w->probe_busy = true;
            w->next_probe_ms = now_ms + probe_interval_ms;
            acts[n++] = (action){.kind = ACT_PROBE, .w = w, .sock = w->sock};
        }
    }
    pthread_mutex_unlock(&r->mu);

    for (int i = 0; i < n; i++) {
        action *a = &acts[i];
        if (a->kind == ACT_CLOSE) {
            wcall_close_socket(a->sock); // every call in flight on it fails: failover starts
        } else if (a->kind == ACT_PROBE) {
            Llm__Envelope env = LLM__ENVELOPE__INIT;
            Llm__HealthRequest hr = LLM__HEALTH_REQUEST__INIT;
            env.body_case = LLM__ENVELOPE__BODY_HEALTH;
            env.health = &hr;
            wcall_start(a->w->probe, a->sock, &env, r->o.call_timeout_ms);
        } else {
            nng_socket s;
            int rc = open_socket(a->w, r->o.call_timeout_ms, &s);
            pthread_mutex_lock(&r->mu);
            rworker *w = a->w;
            bool keep = rc == LLM_OK && w->gen == a->gen && w->state != REG_DOWN && !w->sock_open;
            if (keep) {
                w->sock = s;
                w->sock_open = true;
                w->next_probe_ms = 0; // a new connection is probed as soon as it is up
            }
            pthread_mutex_unlock(&r->mu);
            if (rc == LLM_OK && !keep) {
                nng_close(s);
                continue;
            }
            // Non-blocking: NNG keeps trying until the worker listens.
            int rv = rc == LLM_OK ? nng_dial(s, a->address, NULL, NNG_FLAG_NONBLOCK) : 0;
            if (rc != LLM_OK || rv != 0) {
                rc = rc != LLM_OK ? rc : wire_nng_err(rv);
                LOG_WARN("event=dial_failed worker=%s address=%s err=%s", w->id, a->address,
                         llm_strerror(rc));
                pthread_mutex_lock(&r->mu);
                if (w->gen == a->gen)
                    set_state(r, w, REG_DOWN, "dial_failed");
                pthread_mutex_unlock(&r->mu);
            }
        }
    }
}

/* ---- accessors ------------------------------------------------------------------------- */

int
reg_n_workers(registry *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->n_w;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int
reg_get_worker(registry *r, int i, reg_worker_info *out)
{
    pthread_mutex_lock(&r->mu);
    if (i < 0 || i >= r->n_w) {
        pthread_mutex_unlock(&r->mu);
        return LLM_ENOENT;
    }
    const rworker *w = r->w[i];
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", w->id);
    snprintf(out->address, sizeof(out->address), "%s", w->address);
    snprintf(out->model, sizeof(out->model), "%s", w->model_name);
    out->state = w->state;
    out->breaker = w->brk;
    out->is_static = w->is_static;
    out->connected = w->connected;
    out->inflight = w->inflight;
    out->running = w->running;
    out->waiting = w->waiting;
    out->kv_used = w->kv_used;
    out->kv_total = w->kv_total;
    out->kv_cached = w->kv_cached;
    out->tp_size = w->tp_size;
    out->block_tokens = w->block_tokens;
    out->n_hashes = w->n_hashes;
    out->step_ms = w->step_ms;
    out->queue_ms = w->queue_ms;
    out->tpot_ms = w->tpot_ms;
    out->fingerprint = w->fingerprint;
    out->routed = w->routed;
    out->failures = w->failures;
    out->heartbeat_age_ms = w->last_hb_ms ? llm_now_ms() - w->last_hb_ms : -1;
    pthread_mutex_unlock(&r->mu);
    return LLM_OK;
}
