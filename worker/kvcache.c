/*
 * kvcache.c - KV block bookkeeping over arrays sized once in kvcache_new.
 *
 * Per block: refcount, hash, published flag, and prev/next links for the one list the
 * block is on. Published blocks are on exactly one of two intrusive doubly linked lists:
 * `shared` (refcount >= 1, head = most recently touched) or `lru` (refcount 0, head =
 * most recently released, tail = next victim). Private and free blocks are on neither;
 * free ones sit on a stack. Keeping the in-use published blocks on their own list is what
 * makes eviction O(1) (the LRU tail is always evictable) while still letting
 * kvcache_summary report them in recency order.
 *
 * The hash -> block table is open addressing with linear probing and backward-shift
 * deletion (no tombstones, so probe lengths do not degrade over a long-running worker's
 * millions of evictions). It has a power of two >= 2 * n_blocks slots and holds at most
 * n_blocks entries, so the load factor never exceeds 1/2. Slots index by Fibonacci
 * hashing of the key, so weak keys (tests use 1, 2, 3) still spread.
 */
#include "kvcache.h"

#include "hash.h"
#include "llm_err.h"
#include "log.h"

#include <assert.h>
#include <stdlib.h>

#ifndef NDEBUG
#endif

#define KVC_NIL (-1)

typedef struct {
    int32_t head; // KVC_NIL when empty
    int32_t tail;
} kvc_list;

struct kvcache {
    int n_blocks;
    int32_t *refcount;   // [n_blocks]
    uint64_t *hash;      // [n_blocks] meaningful only where published[i]
    uint8_t *published;  // [n_blocks] 1: this block is the table's entry for hash[i]
    int32_t *prev;       // [n_blocks] links on `shared` or `lru`, KVC_NIL at the ends
    int32_t *next;       // [n_blocks]
    int32_t *free_stack; // [n_blocks] ids of free blocks in [0, n_free)
    int n_free;
    int n_cached; // length of lru
    kvc_list shared;
    kvc_list lru;

    uint64_t *tab_key; // [tab_mask + 1]
    int32_t *tab_id;   // [tab_mask + 1] block id, KVC_NIL for an empty slot
    uint32_t tab_mask;
    int tab_shift; // 64 - log2(slots), for Fibonacci hashing

    uint64_t hits;
    uint64_t misses;
    uint64_t evictions;
};

// --- intrusive lists --------------------------------------------------------------------

static void
kvc_list_push_head(kvcache *c, kvc_list *l, int32_t b)
{
    c->prev[b] = KVC_NIL;
    c->next[b] = l->head;
    if (l->head != KVC_NIL)
        c->prev[l->head] = b;
    else
        l->tail = b;
    l->head = b;
}

static void
kvc_list_remove(kvcache *c, kvc_list *l, int32_t b)
{
    if (c->prev[b] != KVC_NIL)
        c->next[c->prev[b]] = c->next[b];
    else
        l->head = c->next[b];
    if (c->next[b] != KVC_NIL)
        c->prev[c->next[b]] = c->prev[b];
    else
        l->tail = c->prev[b];
    c->prev[b] = c->next[b] = KVC_NIL;
}

// --- hash table -------------------------------------------------------------------------

static uint32_t
kvc_slot(const kvcache *c, uint64_t key)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> c->tab_shift) & c->tab_mask;
}

// The slot holding key, or KVC_NIL. Terminates because the table is never full.
static int32_t
kvc_tab_find(const kvcache *c, uint64_t key)
{
    for (uint32_t i = kvc_slot(c, key);; i = (i + 1) & c->tab_mask) {
        if (c->tab_id[i] == KVC_NIL)
            return KVC_NIL;
        if (c->tab_key[i] == key)
            return (int32_t)i;
    }
}

static void
kvc_tab_insert(kvcache *c, uint64_t key, int32_t b)
{
    uint32_t i = kvc_slot(c, key);
    while (c->tab_id[i] != KVC_NIL)
        i = (i + 1) & c->tab_mask;
    c->tab_key[i] = key;
    c->tab_id[i] = b;
}

// Backward-shift deletion: walk the cluster after the hole and move back every entry
// whose home slot is not cyclically inside (hole, j], so no probe sequence is broken.
static void
kvc_tab_delete(kvcache *c, uint32_t hole)
{
    uint32_t j = hole;
    for (;;) {
        j = (j + 1) & c->tab_mask;
        if (c->tab_id[j] == KVC_NIL)
            break;
        uint32_t home = kvc_slot(c, c->tab_key[j]);
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays)
            continue;
        c->tab_key[hole] = c->tab_key[j];
        c->tab_id[hole] = c->tab_id[j];
        hole = j;
    }
    c->tab_id[hole] = KVC_NIL;
}

// --- lifecycle --------------------------------------------------------------------------

int
kvcache_new(int n_blocks, kvcache **out)
{
    if (out == NULL || n_blocks < 1 || n_blocks > KVC_MAX_BLOCKS)
        return LLM_EINVAL;
    *out = NULL;
    kvcache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return LLM_ENOMEM;
    size_t n = (size_t)n_blocks;
    uint32_t slots = 2;
    int bits = 1;
    while (slots < 2 * n) {
        slots <<= 1;
        bits++;
    }
    c->n_blocks = n_blocks;
    c->refcount = calloc(n, sizeof(*c->refcount));
    c->hash = calloc(n, sizeof(*c->hash));
    c->published = calloc(n, sizeof(*c->published));
    c->prev = malloc(n * sizeof(*c->prev));
    c->next = malloc(n * sizeof(*c->next));
    c->free_stack = malloc(n * sizeof(*c->free_stack));
    c->tab_key = calloc(slots, sizeof(*c->tab_key));
    c->tab_id = malloc(slots * sizeof(*c->tab_id));
    if (!c->refcount || !c->hash || !c->published || !c->prev || !c->next || !c->free_stack ||
        !c->tab_key || !c->tab_id) {
        kvcache_free(c);
        return LLM_ENOMEM;
    }
    c->tab_mask = slots - 1;
    c->tab_shift = 64 - bits;
    for (uint32_t i = 0; i < slots; i++)
        c->tab_id[i] = KVC_NIL;
    // Stack top is the end: fill it backwards so a fresh pool hands out 0, 1, 2, ...
    for (int i = 0; i < n_blocks; i++) {
        c->prev[i] = c->next[i] = KVC_NIL;
        c->free_stack[i] = n_blocks - 1 - i;
    }
    c->n_free = n_blocks;
    c->shared.head = c->shared.tail = KVC_NIL;
    c->lru.head = c->lru.tail = KVC_NIL;
    *out = c;
    return LLM_OK;
}

void
kvcache_free(kvcache *c)
{
    if (c == NULL)
        return;
    free(c->refcount);
    free(c->hash);
    free(c->published);
    free(c->prev);
    free(c->next);
    free(c->free_stack);
    free(c->tab_key);
    free(c->tab_id);
    free(c);
}

// --- operations -------------------------------------------------------------------------

uint64_t
kvcache_block_hash(uint64_t parent, const int32_t tokens[KVC_BLOCK_TOKENS], uint64_t model_fp)
{
    // The layout is part of the block id's definition: fixed little-endian, no padding.
    uint8_t buf[8 + 4 * KVC_BLOCK_TOKENS + 8];
    uint8_t *p = buf;
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(parent >> (8 * i));
    for (int t = 0; t < KVC_BLOCK_TOKENS; t++) {
        uint32_t v = (uint32_t)tokens[t];
        for (int i = 0; i < 4; i++)
            *p++ = (uint8_t)(v >> (8 * i));
    }
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(model_fp >> (8 * i));
    return llm_hash64(buf, sizeof(buf), 0);
}

static bool
kvc_valid_id(const kvcache *c, int32_t b)
{
    return b >= 0 && b < c->n_blocks;
}

int
kvcache_alloc(kvcache *c, int32_t *block)
{
    assert(c != NULL && block != NULL);
    int32_t b;
    if (c->n_free > 0) {
        b = c->free_stack[--c->n_free];
    } else if (c->lru.tail != KVC_NIL) {
        b = c->lru.tail;
        kvc_list_remove(c, &c->lru, b);
        c->n_cached--;
        int32_t slot = kvc_tab_find(c, c->hash[b]);
        assert(slot != KVC_NIL && c->tab_id[slot] == b);
        kvc_tab_delete(c, (uint32_t)slot);
        c->published[b] = 0;
        c->hash[b] = 0;
        c->evictions++;
        LOG_DEBUG("event=kvc_evict block=%d", (int)b);
    } else {
        return LLM_ENOMEM;
    }
    assert(c->refcount[b] == 0 && !c->published[b]);
    c->refcount[b] = 1;
    *block = b;
    return LLM_OK;
}

// Adds a reference to a referenced or cached block b and marks it most recently used.
static int
kvc_take_ref(kvcache *c, int32_t b)
{
    if (c->refcount[b] == INT32_MAX)
        return LLM_ERANGE;
    if (c->published[b]) {
        if (c->refcount[b] == 0) {
            kvc_list_remove(c, &c->lru, b);
            c->n_cached--;
        } else {
            kvc_list_remove(c, &c->shared, b);
        }
        kvc_list_push_head(c, &c->shared, b);
    }
    c->refcount[b]++;
    return LLM_OK;
}

int
kvcache_lookup(kvcache *c, uint64_t hash, int32_t *block)
{
    assert(c != NULL && block != NULL);
    int32_t slot = kvc_tab_find(c, hash);
    if (slot == KVC_NIL) {
        c->misses++;
        return LLM_ENOENT;
    }
    int32_t b = c->tab_id[slot];
    int rc = kvc_take_ref(c, b);
    if (rc != LLM_OK)
        return rc;
    c->hits++;
    *block = b;
    return LLM_OK;
}

int
kvcache_ref(kvcache *c, int32_t block)
{
    assert(c != NULL);
    if (!kvc_valid_id(c, block) || c->refcount[block] == 0)
        return LLM_EINVAL;
    return kvc_take_ref(c, block);
}

int
kvcache_publish(kvcache *c, int32_t block, uint64_t hash)
{
    assert(c != NULL);
    if (!kvc_valid_id(c, block) || c->refcount[block] == 0)
        return LLM_EINVAL;
    if (c->published[block])
        return c->hash[block] == hash ? LLM_OK : LLM_EINVAL;
    if (kvc_tab_find(c, hash) != KVC_NIL)
        return LLM_OK; // lost the race: the existing copy stays published, ours private
    kvc_tab_insert(c, hash, block);
    c->hash[block] = hash;
    c->published[block] = 1;
    kvc_list_push_head(c, &c->shared, block);
    return LLM_OK;
}

void
kvcache_release(kvcache *c, int32_t block)
{
    assert(c != NULL);
    if (!kvc_valid_id(c, block) || c->refcount[block] == 0) {
        LOG_WARN("event=kvc_bad_release block=%d n_blocks=%d refcount=%d", (int)block, c->n_blocks,
                 kvc_valid_id(c, block) ? (int)c->refcount[block] : -1);
        return;
    }
    if (--c->refcount[block] > 0)
        return;
    if (c->published[block]) {
        kvc_list_remove(c, &c->shared, block);
        kvc_list_push_head(c, &c->lru, block);
        c->n_cached++;
    } else {
        c->free_stack[c->n_free++] = block;
    }
}

// --- accessors --------------------------------------------------------------------------

int
kvcache_refcount(const kvcache *c, int32_t block)
{
    assert(c != NULL);
    return kvc_valid_id(c, block) ? (int)c->refcount[block] : -1;
}

bool
kvcache_is_published(const kvcache *c, int32_t block, uint64_t *hash)
{
    assert(c != NULL);
    if (!kvc_valid_id(c, block) || !c->published[block])
        return false;
    if (hash != NULL)
        *hash = c->hash[block];
    return true;
}

kvc_stats
kvcache_stats(const kvcache *c)
{
    assert(c != NULL);
    kvc_stats s = {
        .total = c->n_blocks,
        .free = c->n_free,
        .cached = c->n_cached,
        .used = c->n_blocks - c->n_free - c->n_cached,
        .hits = c->hits,
        .misses = c->misses,
        .evictions = c->evictions,
    };
    return s;
}

int
kvcache_summary(const kvcache *c, uint64_t *hashes, int max)
{
    assert(c != NULL);
    int n = 0;
    if (max <= 0)
        return 0;
    assert(hashes != NULL);
    for (int32_t b = c->shared.head; b != KVC_NIL && n < max; b = c->next[b])
        hashes[n++] = c->hash[b];
    for (int32_t b = c->lru.head; b != KVC_NIL && n < max; b = c->next[b])
        hashes[n++] = c->hash[b];
    return n;
}

int
kvcache_match_prefix(kvcache *c, const int32_t *tokens, int n_tokens, uint64_t model_fp,
                     int max_blocks, int32_t *blocks, uint64_t *hashes)
{
    assert(c != NULL);
    if (n_tokens <= 0)
        return 0;
    assert(tokens != NULL);
    assert(max_blocks <= 0 || blocks != NULL);
    int n_full = n_tokens / KVC_BLOCK_TOKENS;
    int matched = 0;
    bool matching = max_blocks > 0;
    uint64_t parent = 0;
    for (int i = 0; i < n_full; i++) {
        uint64_t h = kvcache_block_hash(parent, tokens + (size_t)i * KVC_BLOCK_TOKENS, model_fp);
        if (hashes != NULL)
            hashes[i] = h;
        if (matching) {
            if (kvcache_lookup(c, h, &blocks[matched]) == LLM_OK)
                matched++;
            else
                matching = false;
            if (matched == max_blocks)
                matching = false;
        }
        if (!matching && hashes == NULL)
            break;
        parent = h;
    }
    return matched;
}

// --- self-check -------------------------------------------------------------------------

// Walks list l, checking links, membership and length; marks each member in seen.
static bool
kvc_check_list(const kvcache *c, const kvc_list *l, bool want_ref, uint8_t *seen, int *len,
               char *err, size_t err_len)
{
    int n = 0;
    int32_t prev = KVC_NIL;
    for (int32_t b = l->head; b != KVC_NIL; b = c->next[b]) {
        if (!kvc_valid_id(c, b) || seen[b] || n >= c->n_blocks) {
            llm_errf(err, err_len, "list: bad or repeated block %d", (int)b);
            return false;
        }
        seen[b] = 1;
        if (c->prev[b] != prev || !c->published[b] || (c->refcount[b] > 0) != want_ref) {
            llm_errf(err, err_len, "list: block %d prev=%d published=%d refcount=%d", (int)b,
                     (int)c->prev[b], c->published[b], (int)c->refcount[b]);
            return false;
        }
        prev = b;
        n++;
    }
    if (l->tail != prev) {
        llm_errf(err, err_len, "list: tail %d, last %d", (int)l->tail, (int)prev);
        return false;
    }
    *len = n;
    return true;
}

int
kvcache_check(const kvcache *c, char *err, size_t err_len)
{
    assert(c != NULL);
    // seen[b]: b is on the free stack or a list. The check is the one function that
    // allocates after kvcache_new; it runs in tests, never on the scheduler's path.
    uint8_t *seen = calloc((size_t)c->n_blocks, 1);
    if (seen == NULL)
        return LLM_ENOMEM;
    int rc = LLM_EPROTO;
    int n_shared = 0, n_lru = 0, n_tab = 0;
    if (c->n_free < 0 || c->n_free > c->n_blocks) {
        llm_errf(err, err_len, "n_free %d", c->n_free);
        goto out;
    }
    for (int i = 0; i < c->n_free; i++) {
        int32_t b = c->free_stack[i];
        if (!kvc_valid_id(c, b) || seen[b] || c->refcount[b] != 0 || c->published[b]) {
            llm_errf(err, err_len, "free stack: block %d", (int)b);
            goto out;
        }
        seen[b] = 1;
    }
    if (!kvc_check_list(c, &c->shared, true, seen, &n_shared, err, err_len) ||
        !kvc_check_list(c, &c->lru, false, seen, &n_lru, err, err_len))
        goto out;
    if (n_lru != c->n_cached) {
        llm_errf(err, err_len, "n_cached %d, lru holds %d", c->n_cached, n_lru);
        goto out;
    }
    for (int b = 0; b < c->n_blocks; b++) {
        if (c->refcount[b] < 0 || (!seen[b] && (c->refcount[b] == 0 || c->published[b]))) {
            llm_errf(err, err_len, "block %d: refcount=%d published=%d on no list", b,
                     (int)c->refcount[b], c->published[b]);
            goto out;
        }
        if (c->published[b]) {
            int32_t slot = kvc_tab_find(c, c->hash[b]);
            if (slot == KVC_NIL || c->tab_id[slot] != b) {
                llm_errf(err, err_len, "block %d: hash %016llx not found in table", b,
                         (unsigned long long)c->hash[b]);
                goto out;
            }
        }
    }
    for (uint32_t i = 0; i <= c->tab_mask; i++) {
        int32_t b = c->tab_id[i];
        if (b == KVC_NIL)
            continue;
        n_tab++;
        if (!kvc_valid_id(c, b) || !c->published[b] || c->hash[b] != c->tab_key[i]) {
            llm_errf(err, err_len, "table slot %u: block %d", (unsigned)i, (int)b);
            goto out;
        }
    }
    if (n_tab != n_shared + n_lru) {
        llm_errf(err, err_len, "table holds %d, published %d", n_tab, n_shared + n_lru);
        goto out;
    }
    rc = LLM_OK;
out:
    free(seen);
    return rc;
}
