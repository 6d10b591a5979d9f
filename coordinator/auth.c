/*
 * auth.c - the API key table: spec parsing, constant-time bearer lookup, and two token
 * buckets per key (requests, tokens) under one mutex.
 *
 * A bucket is {level, cap, rate, period_ms}: it gains rate * elapsed / period_ms (1000
 * for rps, 60000 for tpm) up to cap. Keeping the rate in the unit it was configured in,
 * rather than a per-ms fraction such as 1/60000, keeps the common cases exact in
 * doubles: a 1 rps bucket is back to 1.0 after exactly 1000 ms. Refill is lazy, at each
 * admit, from the key's last_ms; last_ms only moves forward, so a clock that steps back
 * adds nothing, and when it comes forward again the refill counts from the latest time
 * already credited. The wait reported with LLM_EBUSY is computed by the same arithmetic
 * as the refill (bucket_wait_ms), so waiting exactly that long always suffices.
 *
 * Not here: per-tier or global limits, fairness between keys (the scheduler's job),
 * persistence of bucket levels across restarts (they start full).
 */
#include "auth.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_err.h"
#include "sha256.h"

// Slack when comparing a bucket level with what a request needs: a level that is short by
// rounding error only (1e-9 of a token) counts as enough.
#define AUTH_LEVEL_EPS 1e-9

typedef struct {
    double level;     // tokens in the bucket now (as of the key's last_ms)
    double cap;       // capacity; 0 = unlimited (never short)
    double rate;      // tokens gained per period_ms
    double period_ms; // 1000 (per second) or 60000 (per minute)
} auth_bucket;

typedef struct {
    char name[AUTH_NAME_MAX + 1];
    uint8_t digest[32]; // SHA-256 of the secret; the secret is never held
    auth_role role;
    int max_tier;
    // Under auth.mu:
    auth_bucket req; // requests
    auth_bucket tok; // tokens
    int64_t last_ms; // the latest now_ms credited to the buckets (INT64_MIN: none yet)
} auth_key;

struct auth {
    pthread_mutex_t mu; // guards every key's req, tok, last_ms
    int n_keys;
    auth_key *keys; // [n_keys], spec order
};

static const char *const AUTH_TIER_NAMES[AUTH_N_TIERS] = {
    [AUTH_TIER_CRITICAL] = "critical",     [AUTH_TIER_HIGH] = "high",
    [AUTH_TIER_NORMAL] = "normal",         [AUTH_TIER_LOW] = "low",
    [AUTH_TIER_BACKGROUND] = "background",
};

/* --- small helpers ------------------------------------------------------------------ */

static int
auth_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

// ASCII case-insensitive equality of a[0..n) with the NUL-terminated b.
static bool
auth_ieq(const char *a, size_t n, const char *b)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] == '\0' || auth_lower((unsigned char)a[i]) != auth_lower((unsigned char)b[i]))
            return false;
    return b[n] == '\0';
}

static bool
auth_is_space(char c)
{
    return c == ' ' || c == '\t';
}

static bool
auth_is_name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static int
auth_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* --- tiers -------------------------------------------------------------------------- */

int
auth_tier_parse(const char *name, int *rank)
{
    assert(rank != NULL);
    if (name == NULL)
        return LLM_EINVAL;
    for (int r = 0; r < AUTH_N_TIERS; r++) {
        if (auth_ieq(name, strlen(name), AUTH_TIER_NAMES[r])) {
            *rank = r;
            return LLM_OK;
        }
    }
    return LLM_EINVAL;
}

const char *
auth_tier_name(int rank)
{
    return rank >= 0 && rank < AUTH_N_TIERS ? AUTH_TIER_NAMES[rank] : "unknown";
}

/* --- spec parsing ------------------------------------------------------------------- */

// One spec being parsed: where it is, for messages.
typedef struct {
    int index;
    const char *text;
    const char *name; // the NAME once it is known valid, else NULL
    char *err;
    size_t err_len;
} auth_spec_ctx;

// Writes "api_keys[i] (NAME): <problem>" (or the spec's text when its NAME is not known
// good) to the caller's err and returns LLM_EINVAL.
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
auth_spec_fail(const auth_spec_ctx *c, const char *fmt, ...)
{
    char problem[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    if (c->name != NULL)
        llm_errf(c->err, c->err_len, "api_keys[%d] (%s): %s", c->index, c->name, problem);
    else
        llm_errf(c->err, c->err_len, "api_keys[%d] \"%.80s\": %s", c->index,
                 c->text ? c->text : "(null)", problem);
    return LLM_EINVAL;
}

// rps: a finite number >= 0 (fractions allowed), capped at AUTH_RATE_MAX.
static int
auth_parse_rps(const auth_spec_ctx *c, const char *v, size_t n, double *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return auth_spec_fail(c, "rps=%.*s: want a finite number >= 0", (int)(n < 32 ? n : 32), v);
    memcpy(buf, v, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    double x = strtod(buf, &end);
    if (end != buf + n || buf[0] == '-' || buf[0] == '+' || !isfinite(x) || x < 0)
        return auth_spec_fail(c, "rps=%s: want a finite number >= 0", buf);
    // Underflow may come back as 0, which would read as "unlimited": refuse it instead.
    if (errno == ERANGE && x < 1)
        return auth_spec_fail(c, "rps=%s: too small", buf);
    *out = x > AUTH_RATE_MAX ? AUTH_RATE_MAX : x;
    return LLM_OK;
}

// tpm: decimal digits only, capped at AUTH_RATE_MAX (so a long string of digits is a
// large limit, not an overflow).
static int
auth_parse_tpm(const auth_spec_ctx *c, const char *v, size_t n, double *out)
{
    if (n == 0)
        return auth_spec_fail(c, "tpm=: want an integer >= 0");
    double x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return auth_spec_fail(c, "tpm=%.*s: want an integer >= 0", (int)(n < 32 ? n : 32), v);
        if (x <= AUTH_RATE_MAX)
            x = x * 10 + (v[i] - '0');
    }
    *out = x > AUTH_RATE_MAX ? AUTH_RATE_MAX : x;
    return LLM_OK;
}

static void
auth_bucket_init(auth_bucket *b, double rate, double period_ms, double cap)
{
    b->rate = rate;
    b->period_ms = period_ms;
    b->cap = rate > 0 ? cap : 0;
    b->level = b->cap;
}

// Parses spec text into k (NAME, digest, role, tier, buckets). LLM_OK or LLM_EINVAL.
static int
auth_parse_spec(auth_spec_ctx *c, auth_key *k)
{
    const char *s = c->text;
    if (s == NULL)
        return auth_spec_fail(c, "empty name (no spec)");
    while (auth_is_space(*s))
        s++;

    // NAME: the first word.
    const char *name = s;
    while (*s != '\0' && !auth_is_space(*s))
        s++;
    size_t name_len = (size_t)(s - name);
    if (name_len == 0)
        return auth_spec_fail(c, "empty name");
    for (size_t i = 0; i < name_len; i++)
        if (!auth_is_name_char(name[i]))
            return auth_spec_fail(c, "name \"%.*s\": want only A-Z a-z 0-9 _ . -",
                                  (int)(name_len < 80 ? name_len : 80), name);
    if (name_len > AUTH_NAME_MAX)
        return auth_spec_fail(c, "name longer than %d characters", AUTH_NAME_MAX);
    memcpy(k->name, name, name_len);
    k->name[name_len] = '\0';
    c->name = k->name;

    bool have_hash = false, have_role = false, have_rps = false, have_tpm = false;
    bool have_tier = false;
    double rps = 0, tpm = 0;
    for (;;) {
        while (auth_is_space(*s))
            s++;
        if (*s == '\0')
            break;
        const char *word = s;
        while (*s != '\0' && !auth_is_space(*s))
            s++;
        size_t word_len = (size_t)(s - word);
        const char *eq = memchr(word, '=', word_len);
        if (eq == NULL)
            return auth_spec_fail(c, "unknown setting \"%.*s\" (want key=value)",
                                  (int)(word_len < 32 ? word_len : 32), word);
        size_t key_len = (size_t)(eq - word);
        const char *v = eq + 1;
        size_t v_len = word_len - key_len - 1;
        int rc;

        if (key_len == 6 && memcmp(word, "sha256", 6) == 0) {
            if (have_hash)
                return auth_spec_fail(c, "sha256 given twice");
            if (v_len != 64)
                return auth_spec_fail(c, "sha256: want 64 hex digits, got %zu characters", v_len);
            for (int i = 0; i < 32; i++) {
                int hi = auth_hex_value(v[2 * i]), lo = auth_hex_value(v[2 * i + 1]);
                if (hi < 0 || lo < 0)
                    return auth_spec_fail(c, "sha256: not a hex digit at position %d",
                                          hi < 0 ? 2 * i : 2 * i + 1);
                k->digest[i] = (uint8_t)(hi << 4 | lo);
            }
            have_hash = true;
        } else if (key_len == 4 && memcmp(word, "role", 4) == 0) {
            if (have_role)
                return auth_spec_fail(c, "role given twice");
            if (auth_ieq(v, v_len, "admin"))
                k->role = AUTH_ADMIN;
            else if (auth_ieq(v, v_len, "user"))
                k->role = AUTH_USER;
            else
                return auth_spec_fail(c, "role=%.*s: want admin or user",
                                      (int)(v_len < 32 ? v_len : 32), v);
            have_role = true;
        } else if (key_len == 3 && memcmp(word, "rps", 3) == 0) {
            if (have_rps)
                return auth_spec_fail(c, "rps given twice");
            if ((rc = auth_parse_rps(c, v, v_len, &rps)) != LLM_OK)
                return rc;
            have_rps = true;
        } else if (key_len == 3 && memcmp(word, "tpm", 3) == 0) {
            if (have_tpm)
                return auth_spec_fail(c, "tpm given twice");
            if ((rc = auth_parse_tpm(c, v, v_len, &tpm)) != LLM_OK)
                return rc;
            have_tpm = true;
        } else if (key_len == 8 && memcmp(word, "max_tier", 8) == 0) {
            if (have_tier)
                return auth_spec_fail(c, "max_tier given twice");
            char buf[16];
            if (v_len >= sizeof buf)
                return auth_spec_fail(c,
                                      "max_tier=%.*s: want critical, high, normal, low or "
                                      "background",
                                      16, v);
            memcpy(buf, v, v_len);
            buf[v_len] = '\0';
            if (auth_tier_parse(buf, &k->max_tier) != LLM_OK)
                return auth_spec_fail(c,
                                      "max_tier=%s: want critical, high, normal, low or "
                                      "background",
                                      buf);
            have_tier = true;
        } else {
            return auth_spec_fail(c, "unknown setting \"%.*s\"", (int)(key_len < 32 ? key_len : 32),
                                  word);
        }
    }
    if (!have_hash)
        return auth_spec_fail(c, "missing sha256=");
    if (!have_role)
        return auth_spec_fail(c, "missing role=");
    if (!have_tier)
        k->max_tier = k->role == AUTH_ADMIN ? AUTH_TIER_CRITICAL : AUTH_TIER_NORMAL;
    auth_bucket_init(&k->req, rps, 1000.0, rps > 1 ? rps : 1);
    auth_bucket_init(&k->tok, tpm, 60000.0, tpm);
    k->last_ms = INT64_MIN;
    return LLM_OK;
}

/* --- lifecycle ---------------------------------------------------------------------- */

int
auth_new(const char *const *specs, int n_specs, auth **out, char *err, size_t err_len)
{
    assert(out != NULL);
    assert(n_specs == 0 || specs != NULL);
    int rc = LLM_OK;
    auth *a = NULL;
    if (n_specs < 0) {
        llm_errf(err, err_len, "api_keys: negative count %d", n_specs);
        rc = LLM_EINVAL;
        goto out;
    }
    a = calloc(1, sizeof *a);
    if (a == NULL) {
        rc = LLM_ENOMEM;
        goto out;
    }
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        free(a);
        a = NULL;
        rc = LLM_ENOMEM;
        goto out;
    }
    if (n_specs > 0) {
        a->keys = calloc((size_t)n_specs, sizeof *a->keys);
        if (a->keys == NULL) {
            rc = LLM_ENOMEM;
            goto out;
        }
    }
    for (int i = 0; i < n_specs; i++) {
        auth_spec_ctx c = {.index = i, .text = specs[i], .err = err, .err_len = err_len};
        auth_key *k = &a->keys[i];
        if ((rc = auth_parse_spec(&c, k)) != LLM_OK)
            goto out;
        for (int j = 0; j < i; j++) {
            if (strcmp(a->keys[j].name, k->name) == 0) {
                rc = auth_spec_fail(&c, "duplicate name (api_keys[%d] has it too)", j);
                goto out;
            }
            // Digests are not secrets, so an ordinary comparison is fine here.
            if (memcmp(a->keys[j].digest, k->digest, sizeof k->digest) == 0) {
                rc = auth_spec_fail(&c, "duplicate sha256 (api_keys[%d] (%s) has it too)", j,
                                    a->keys[j].name);
                goto out;
            }
        }
        a->n_keys = i + 1;
    }

out:
    if (rc != LLM_OK) {
        auth_free(a);
        return rc;
    }
    *out = a;
    return LLM_OK;
}

void
auth_free(auth *a)
{
    if (a == NULL)
        return;
    pthread_mutex_destroy(&a->mu);
    free(a->keys);
    free(a);
}

int
auth_n_keys(const auth *a)
{
    assert(a != NULL);
    return a->n_keys;
}

/* --- lookup ------------------------------------------------------------------------- */

int
auth_lookup(const auth *a, const char *authorization, int *key)
{
    assert(a != NULL && key != NULL);
    if (authorization == NULL)
        return LLM_EINVAL;
    const char *s = authorization;
    while (auth_is_space(*s))
        s++;
    // "Bearer" then at least one space or tab.
    static const char scheme[] = "bearer";
    for (size_t i = 0; i < sizeof scheme - 1; i++)
        if (auth_lower((unsigned char)s[i]) != scheme[i])
            return LLM_EINVAL; // also stops at the NUL of a short header
    s += sizeof scheme - 1;
    if (!auth_is_space(*s))
        return LLM_EINVAL;
    while (auth_is_space(*s))
        s++;
    const char *token = s;
    while (*s != '\0' && !auth_is_space(*s))
        s++;
    size_t token_len = (size_t)(s - token);
    while (auth_is_space(*s))
        s++;
    if (token_len == 0 || *s != '\0')
        return LLM_EINVAL;

    uint8_t d[32];
    sha256(token, token_len, d);
    // Every key is compared in full, and the match is picked with masks rather than a
    // branch, so the time taken depends on the number of keys only.
    uint32_t found = UINT32_MAX; // no key
    for (int i = 0; i < a->n_keys; i++) {
        uint32_t diff = 0;
        for (int b = 0; b < 32; b++)
            diff |= (uint32_t)(d[b] ^ a->keys[i].digest[b]);
        uint32_t match = (diff - 1) >> 31;   // 1 when diff == 0 (diff < 256), else 0
        uint32_t mask = (uint32_t)0 - match; // all ones when it matched
        found = (found & ~mask) | ((uint32_t)i & mask);
    }
    memset(d, 0, sizeof d);
    if (found == UINT32_MAX)
        return LLM_ENOENT;
    *key = (int)found;
    return LLM_OK;
}

/* --- accessors ---------------------------------------------------------------------- */

const char *
auth_key_name(const auth *a, int key)
{
    assert(a != NULL && key >= 0 && key < a->n_keys);
    return a->keys[key].name;
}

auth_role
auth_key_role(const auth *a, int key)
{
    assert(a != NULL && key >= 0 && key < a->n_keys);
    return a->keys[key].role;
}

int
auth_key_max_tier(const auth *a, int key)
{
    assert(a != NULL && key >= 0 && key < a->n_keys);
    return a->keys[key].max_tier;
}

/* --- buckets ------------------------------------------------------------------------ */

static bool
bucket_unlimited(const auth_bucket *b)
{
    return b->cap == 0;
}

static double
bucket_level_after(const auth_bucket *b, double elapsed_ms)
{
    double level = b->level + b->rate * elapsed_ms / b->period_ms;
    return level < b->cap ? level : b->cap;
}

static bool
bucket_enough(const auth_bucket *b, double level, double need)
{
    return bucket_unlimited(b) || level + AUTH_LEVEL_EPS >= need;
}

// The smallest whole ms after which b holds need (need <= cap), by the arithmetic of
// bucket_level_after, saturated at INT_MAX. 0 when it already does.
static int64_t
bucket_wait_ms(const auth_bucket *b, double need)
{
    if (bucket_enough(b, b->level, need))
        return 0;
    double w = ceil((need - b->level) * b->period_ms / b->rate);
    if (!(w < (double)INT_MAX))
        return INT_MAX;
    int64_t ms = (int64_t)w;
    // The estimate can be one off either way from rounding; settle it against the refill.
    while (ms > 1 && bucket_enough(b, bucket_level_after(b, (double)(ms - 1)), need))
        ms--;
    while (ms < INT_MAX && !bucket_enough(b, bucket_level_after(b, (double)ms), need))
        ms++;
    return ms < 1 ? 1 : ms;
}

int
auth_admit(auth *a, int key, int64_t now_ms, uint32_t tokens, int *retry_after_ms)
{
    assert(a != NULL && key >= 0 && key < a->n_keys);
    int retry = 0;
    int rc = LLM_OK;
    int64_t w_req, w_tok; // ms until each bucket has enough
    auth_key *k = &a->keys[key];

    pthread_mutex_lock(&a->mu);
    if (!bucket_unlimited(&k->tok) && (double)tokens > k->tok.cap) {
        rc = LLM_ERANGE;
        goto out;
    }
    // Credit the time since last_ms; a clock that went back credits nothing.
    if (now_ms > k->last_ms) {
        if (k->last_ms != INT64_MIN) {
            double elapsed = (double)((uint64_t)now_ms - (uint64_t)k->last_ms);
            k->req.level = bucket_level_after(&k->req, elapsed);
            k->tok.level = bucket_level_after(&k->tok, elapsed);
        }
        k->last_ms = now_ms;
    }
    if (bucket_enough(&k->req, k->req.level, 1) && bucket_enough(&k->tok, k->tok.level, tokens)) {
        if (!bucket_unlimited(&k->req))
            k->req.level -= 1;
        if (!bucket_unlimited(&k->tok))
            k->tok.level -= tokens;
        goto out;
    }
    w_req = bucket_unlimited(&k->req) ? 0 : bucket_wait_ms(&k->req, 1);
    w_tok = bucket_unlimited(&k->tok) ? 0 : bucket_wait_ms(&k->tok, tokens);
    retry = (int)(w_req > w_tok ? w_req : w_tok);
    if (retry < 1)
        retry = 1;
    rc = LLM_EBUSY;

out:
    pthread_mutex_unlock(&a->mu);
    if (retry_after_ms != NULL)
        *retry_after_ms = retry;
    return rc;
}

void
auth_refund(auth *a, int key, uint32_t tokens)
{
    assert(a != NULL && key >= 0 && key < a->n_keys);
    auth_key *k = &a->keys[key];
    pthread_mutex_lock(&a->mu);
    if (!bucket_unlimited(&k->tok)) {
        k->tok.level += tokens;
        if (k->tok.level > k->tok.cap)
            k->tok.level = k->tok.cap;
    }
    pthread_mutex_unlock(&a->mu);
}
