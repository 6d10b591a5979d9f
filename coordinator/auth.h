/*
 * auth.h - API keys for the coordinator's HTTP front door: who is calling, what they may
 * do (role), how fast (per-key rate limits) and how urgently (the highest SLA tier).
 *
 * Keys come from the config's `api_keys` string list, one spec per key:
 *
 *   "NAME sha256=<64 hex> role=admin|user [rps=R] [tpm=T] [max_tier=critical|...|background]"
 *
 *   NAME      1..63 of [A-Za-z0-9_.-], unique; what logs and metrics call the key
 *   sha256    SHA-256 of the secret (`printf %s "$KEY" | sha256sum`), either case, unique
 *   role      admin or user
 *   rps       requests per second, a finite number >= 0, may be fractional; 0 or absent:
 *             unlimited. Burst (bucket capacity) max(1, rps).
 *   tpm       tokens per minute, an integer >= 0; 0 or absent: unlimited. Burst tpm.
 *   max_tier  the most urgent tier the key may ask for; default critical for admin,
 *             normal for user
 *
 * rps and tpm above AUTH_RATE_MAX are taken as AUTH_RATE_MAX, so bucket arithmetic in
 * doubles never overflows or loses whole tokens.
 *
 * The secret itself is never stored or logged: the table holds digests only, and a
 * presented bearer token is hashed once and compared against every digest in constant
 * time. This module does not speak HTTP (the server maps the return codes to 401 / 429),
 * does not log (the caller logs once, with the key's NAME), does not read the config
 * file (the caller hands the strings over), and does not reload keys at run time.
 *
 * Thread: after auth_new the key table is immutable, so auth_lookup and the accessors
 * need no lock; auth_admit and auth_refund take the one internal mutex. Any thread.
 */
#ifndef LLM_COORD_AUTH_H
#define LLM_COORD_AUTH_H

#include <stddef.h>
#include <stdint.h>

typedef struct auth auth;

typedef enum { AUTH_USER = 0, AUTH_ADMIN = 1 } auth_role;

/* SLA tier ranks: smaller is more urgent. */
enum {
    AUTH_TIER_CRITICAL = 0,
    AUTH_TIER_HIGH = 1,
    AUTH_TIER_NORMAL = 2,
    AUTH_TIER_LOW = 3,
    AUTH_TIER_BACKGROUND = 4,
    AUTH_N_TIERS = 5
};

#define AUTH_NAME_MAX 63  // bytes of a key NAME, without the NUL
#define AUTH_RATE_MAX 1e9 // rps and tpm are capped here

/* auth_tier_parse: "critical" | "high" | "normal" | "low" | "background", ASCII
 * case-insensitive, to its rank in *rank. LLM_OK, or LLM_EINVAL for anything else or
 * NULL, with *rank unchanged. Any thread. */
int auth_tier_parse(const char *name, int *rank);
/* auth_tier_name: the lowercase name of a rank; "unknown" out of range. Static storage. */
const char *auth_tier_name(int rank);

/* auth_new parses specs[0..n_specs) (the syntax above) into a new key table in *out,
 * with every rate bucket full. n_specs 0 gives a table with no keys (every lookup is
 * LLM_ENOENT). LLM_OK; LLM_EINVAL for any bad spec (unknown or repeated setting, missing
 * sha256 or role, bad hex or length, bad role, bad tier, a negative, non-numeric,
 * infinite or NaN rate, a bad, empty or duplicate NAME, a duplicate digest) with a
 * message naming the spec (its index and NAME, never more than the spec's text) and
 * the problem in err (may be NULL); LLM_ENOMEM. *out is set only on LLM_OK; free it with
 * auth_free. The specs are not kept. */
int auth_new(const char *const *specs, int n_specs, auth **out, char *err, size_t err_len);
/* auth_free releases a. NULL is fine. No call on a may be in progress or follow. */
void auth_free(auth *a);

/* auth_n_keys: how many keys a holds (key indexes are 0..n-1, in spec order). */
int auth_n_keys(const auth *a);

/* auth_lookup finds the key presented by an HTTP Authorization header value
 * (`authorization`, NULL when the header is absent). It must be "Bearer <token>": the
 * scheme ASCII case-insensitive, then one or more spaces or tabs, then a token without
 * spaces or tabs; whitespace around the whole is ignored. LLM_OK with *key the key's
 * index; LLM_EINVAL when the header is absent or not a Bearer token (HTTP: 401 "missing
 * API key"); LLM_ENOENT when no key's digest matches the token's (401 "invalid API
 * key"). *key is set only on LLM_OK. The token is hashed once and compared with every
 * digest, without early exit, so timing does not tell which digest came close. */
int auth_lookup(const auth *a, const char *authorization, int *key);

/* auth_key_name: key's NAME; borrowed, valid until auth_free. key in [0, auth_n_keys). */
const char *auth_key_name(const auth *a, int key);
/* auth_key_role: key's role. key in [0, auth_n_keys). */
auth_role auth_key_role(const auth *a, int key);
/* auth_key_max_tier: the rank of the most urgent tier key may use. key in
 * [0, auth_n_keys). */
int auth_key_max_tier(const auth *a, int key);

/* auth_admit charges one request of `tokens` tokens (the HTTP layer passes prompt tokens
 * + max_tokens) to key at now_ms (any monotonic millisecond clock, the same for every
 * call on a). It takes 1 from the key's request bucket and `tokens` from its token
 * bucket, both or neither. The request bucket holds max(1, rps) and refills rps per
 * second; the token bucket holds tpm and refills tpm / 60000 per ms; an unlimited one
 * always has enough. A now_ms earlier than one already seen adds nothing.
 * LLM_OK (*retry_after_ms = 0); LLM_EBUSY when a bucket is short, with *retry_after_ms
 * the smallest whole number of ms (>= 1, at most INT_MAX) after which both would have
 * enough if nothing else were charged; LLM_ERANGE when tokens > tpm, which can never
 * pass (*retry_after_ms = 0, nothing taken). retry_after_ms may be NULL. */
int auth_admit(auth *a, int key, int64_t now_ms, uint32_t tokens, int *retry_after_ms);
/* auth_refund puts back tokens that key's admitted request did not use (it generated
 * fewer than max_tokens); the token bucket never rises above its capacity. Nothing for
 * an unlimited bucket. */
void auth_refund(auth *a, int key, uint32_t tokens);

#endif
