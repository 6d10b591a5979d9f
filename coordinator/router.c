/*
 * router.c - the five routing policies over a snapshot of candidates (router.h).
 *
 * Each policy is one linear pass (two for latency) over c[0..n); prefix adds a binary
 * search per matched block, so a decision is O(n * matched * log m) with m the largest
 * prefix set, and the whole thing touches no heap, no lock and no clock. Given the same
 * router_state and inputs the choice is the same: the only randomness is p2c's xorshift
 * state, which the caller owns. What this file does not do: keep the EWMAs, build the
 * prefix sets, or decide which workers are candidates - the registry does all three.
 */
#include "router.h"

#include "llm_err.h"

#include <assert.h>
#include <string.h>

static const char *const policy_names[ROUTE_N_POLICIES] = {
    [ROUTE_ROUND_ROBIN] = "round_robin",
    [ROUTE_LEAST_LOADED] = "least_loaded",
    [ROUTE_P2C] = "p2c",
    [ROUTE_LATENCY] = "latency",
    [ROUTE_PREFIX] = "prefix",
};

// Used when a router_state's rng is zero (a zeroed struct): xorshift never leaves 0.
#define ROUTE_RNG_SEED 0x9e3779b97f4a7c15ull

int
route_policy_parse(const char *name, route_policy *out)
{
    assert(out != NULL);
    if (name == NULL)
        return LLM_EINVAL;
    for (int p = 0; p < ROUTE_N_POLICIES; p++) {
        if (strcmp(name, policy_names[p]) == 0) {
            *out = (route_policy)p;
            return LLM_OK;
        }
    }
    return LLM_EINVAL;
}

const char *
route_policy_name(route_policy p)
{
    if ((int)p < 0 || p >= ROUTE_N_POLICIES)
        return "unknown";
    return policy_names[p];
}

route_opts
route_opts_default(void)
{
    return (route_opts){
        .prefix_load_penalty = 2.0, .prefix_imbalance_cap = 8, .latency_tokens_cap = 256};
}

static bool
sorted_has(const uint64_t *sorted, int n, uint64_t key)
{
    // Branchless lower search (the condition compiles to a conditional move): the hashes
    // are random, so a branchy search mispredicts half its steps, which was most of the
    // cost of a prefix decision.
    if (n <= 0)
        return false;
    const uint64_t *base = sorted; // invariant: key, if present, is in base[0..len)
    int len = n;
    while (len > 1) {
        int half = len / 2;
        base = base[half] <= key ? base + half : base;
        len -= half;
    }
    return *base == key;
}

int
route_prefix_match(const uint64_t *sorted, int n_sorted, const uint64_t *blocks, int n_blocks)
{
    // Block i's hash chains over every token before it, so holding block i without block
    // i-1 cannot happen for a real cached prefix, and if it does (a hash collision, a
    // summary cut short) the worker could not reuse it anyway: stop at the first miss.
    if (sorted == NULL || blocks == NULL)
        return 0;
    int i = 0;
    while (i < n_blocks && sorted_has(sorted, n_sorted, blocks[i]))
        i++;
    return i;
}

static int
pick_round_robin(router_state *st, int n)
{
    // rr_next is stored as the position after the pick (not a running count), so a
    // candidate list that grows or shrinks resumes where it left off, modulo the new n.
    int i = (int)(st->rr_next % (uint64_t)n);
    st->rr_next = (uint64_t)i + 1;
    return i;
}

// lighter reports whether a is a better least_loaded choice than b (fewer requests, then
// fewer of ours); the index tie-break comes from scanning in order with a strict test.
// The scans compare with bitwise operators, not && and ||: loads are noisy, and as
// branches the comparisons mispredicted enough to make a 1024-candidate scan 4x slower.
static bool
lighter(const route_cand *a, const route_cand *b)
{
    return (a->load < b->load) | ((a->load == b->load) & (a->inflight < b->inflight));
}

/* pick_least_loaded scans from start (wrapping), so equal candidates take turns: with a
 * fixed scan order the lowest index would win every tie, and idle workers are all tied. */
static int
pick_least_loaded(const route_cand *c, int n, int start)
{
    // The best's keys are kept in locals, not re-read through c[best]: that load depends on
    // the previous iteration's choice and serialized the loop.
    int best = start, best_load = c[start].load, best_inflight = c[start].inflight;
    for (int k = 1; k < n; k++) {
        int i = start + k < n ? start + k : start + k - n;
        int load = c[i].load, inflight = c[i].inflight;
        bool better = (load < best_load) | ((load == best_load) & (inflight < best_inflight));
        best = better ? i : best;
        best_load = better ? load : best_load;
        best_inflight = better ? inflight : best_inflight;
    }
    return best;
}

/* tie_start: where the next least_loaded scan starts (it advances every decision). */
static int
tie_start(router_state *st, int n)
{
    if (!st)
        return 0;
    return (int)(st->rr_next++ % (uint64_t)n);
}

static uint64_t
xorshift64(uint64_t *s)
{
    uint64_t x = *s ? *s : ROUTE_RNG_SEED;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static int
pick_p2c(router_state *st, const route_cand *c, int n)
{
    if (n == 1)
        return 0;
    // The second draw is over the n-1 others, shifted past the first: distinct, and each
    // ordered pair equally likely (up to the modulo bias of 2^64 / n, negligible).
    int a = (int)(xorshift64(&st->rng) % (uint64_t)n);
    int b = (int)(xorshift64(&st->rng) % (uint64_t)(n - 1));
    if (b >= a)
        b++;
    return lighter(&c[b], &c[a]) ? b : a;
}

/*
 * latency: expected_ms = (queue + tpot * tokens) * (1 + load), the smallest wins.
 *
 *   tokens  min(max_tokens, latency_tokens_cap); max_tokens <= 0 (unset) counts as the cap
 *   queue   queue_ms (0 until this coordinator has seen a first token there)
 *   tpot    tpot_ms if observed, else the heartbeat's step_ms (one step makes one token
 *           per running sequence), else the smallest tpot known among the candidates
 *
 * The (1 + load) factor is the worker's share of its batch: the EWMAs were measured at
 * some past load, and every request already there competes for the same steps. A worker
 * with no data at all is scored as if it were as fast as the best known, so a new worker
 * is tried at once, and as its load rises it stops winning: tried, not flooded. With no
 * data anywhere every score is 0 and the tie-breaks make it least_loaded (minus inflight).
 */
static double
cand_tpot_ms(const route_cand *c)
{
    double step = c->step_ms > 0 ? c->step_ms : 0;
    return c->tpot_ms > 0 ? c->tpot_ms : step;
}

// latency_ms is one candidate's expected completion time (the formula above).
static double
latency_ms(const route_cand *c, int tokens, double best_known_tpot)
{
    double known = cand_tpot_ms(c);
    double tpot = known > 0 ? known : best_known_tpot;
    double queue = c->queue_ms > 0 ? c->queue_ms : 0;
    double load = c->load > 0 ? (double)c->load : 0;
    return (queue + tpot * (double)tokens) * (1.0 + load);
}

static int
pick_latency(const route_opts *o, const route_cand *c, int n, const route_req *q)
{
    int tokens = q && q->max_tokens > 0 ? q->max_tokens : o->latency_tokens_cap;
    if (o->latency_tokens_cap > 0 && tokens > o->latency_tokens_cap)
        tokens = o->latency_tokens_cap;
    if (tokens < 1)
        tokens = 1;

    double best_known = 0; // smallest known tpot; 0 while none is known
    for (int i = 0; i < n; i++) {
        double t = cand_tpot_ms(&c[i]);
        best_known = (t > 0) & ((best_known == 0) | (t < best_known)) ? t : best_known;
    }

    // Branch-free updates, as in least_loaded: the scores are noisy.
    int best = 0, best_load = c[0].load;
    double best_ms = latency_ms(&c[0], tokens, best_known);
    for (int i = 1; i < n; i++) {
        double ms = latency_ms(&c[i], tokens, best_known);
        bool better = (ms < best_ms) | ((ms == best_ms) & (c[i].load < best_load));
        best = better ? i : best;
        best_ms = better ? ms : best_ms;
        best_load = better ? c[i].load : best_load;
    }
    return best;
}

/*
 * prefix: score = matched_blocks - prefix_load_penalty * load, the highest wins among the
 * candidates whose load is at most min_load + prefix_imbalance_cap (ties: lower load, then
 * lower index).
 *
 * The penalty is the number of cached blocks one queued request is worth: with 2, a
 * worker holding 10 more blocks wins until it carries 5 more requests. The cap bounds what
 * any match can buy, so a hot prefix cannot pile everything on one worker. When the winner
 * holds nothing (no candidate matches, or every match is outweighed by its load) the
 * decision is purely about load and is least_loaded's, inflight tie-break included.
 */
static int
pick_prefix(router_state *st, const route_opts *o, const route_cand *c, int n, const route_req *q,
            int *matched)
{
    int min_load = c[0].load;
    for (int i = 1; i < n; i++)
        if (c[i].load < min_load)
            min_load = c[i].load;
    // In 64 bits so that a huge cap (INT_MAX: "no cap") cannot overflow.
    int64_t max_load =
        (int64_t)min_load + (o->prefix_imbalance_cap > 0 ? o->prefix_imbalance_cap : 0);

    int best = -1, best_matched = 0;
    double best_score = 0;
    for (int i = 0; i < n; i++) {
        if (c[i].load > max_load)
            continue;
        // Skip the searches when even a full match could not beat the best so far (the
        // same comparison as below, on an upper bound of the score).
        int most = c[i].n_prefix < q->n_blocks ? c[i].n_prefix : q->n_blocks;
        double bound = (double)most - o->prefix_load_penalty * (double)c[i].load;
        if (best >= 0 && (bound < best_score || (bound == best_score && c[i].load >= c[best].load)))
            continue;
        int m = route_prefix_match(c[i].prefix_sorted, c[i].n_prefix, q->block_hashes, q->n_blocks);
        double score = (double)m - o->prefix_load_penalty * (double)c[i].load;
        if (best < 0 || score > best_score || (score == best_score && c[i].load < c[best].load)) {
            best = i;
            best_score = score;
            best_matched = m;
        }
    }
    assert(best >= 0); // the least loaded candidate is never skipped
    if (best_matched == 0)
        return pick_least_loaded(c, n, tie_start(st, n));
    *matched = best_matched;
    return best;
}

int
router_pick(router_state *st, route_policy p, const route_opts *o, const route_cand *c, int n,
            const route_req *q, int *matched_blocks)
{
    assert(n >= 0);
    assert(n == 0 || c != NULL);
    if (matched_blocks)
        *matched_blocks = 0;
    if (n == 0)
        return -1;
    route_opts def = route_opts_default();
    if (o == NULL)
        o = &def;
    assert(o->prefix_load_penalty >= 0);

    int pick = -1, matched = -1; // -1: not computed by the policy
    switch (p) {
    case ROUTE_ROUND_ROBIN:
        assert(st != NULL);
        pick = pick_round_robin(st, n);
        break;
    case ROUTE_LEAST_LOADED: pick = pick_least_loaded(c, n, tie_start(st, n)); break;
    case ROUTE_P2C:
        assert(st != NULL);
        pick = pick_p2c(st, c, n);
        break;
    case ROUTE_LATENCY: pick = pick_latency(o, c, n, q); break;
    case ROUTE_PREFIX:
        if (q != NULL && q->n_blocks > 0)
            pick = pick_prefix(st, o, c, n, q, &matched);
        else
            pick = pick_least_loaded(c, n, tie_start(st, n));
        break;
    default: assert(!"unknown route_policy"); pick = pick_least_loaded(c, n, 0);
    }

    if (matched_blocks) {
        if (matched < 0 && q != NULL)
            matched = route_prefix_match(c[pick].prefix_sorted, c[pick].n_prefix, q->block_hashes,
                                         q->n_blocks);
        *matched_blocks = matched > 0 ? matched : 0;
    }
    return pick;
}
