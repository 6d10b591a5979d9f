/*
 * test_kvcache.c - KV block manager: the block hash (pinned values, sensitivity, chains),
 * alloc / release / refcounts, publish and lookup, LRU eviction, duplicate publishes,
 * prefix matching, the heartbeat summary, bad input, and a randomized check of 100k
 * operations against a plain-array reference model.
 */
#include "hash.h"
#include "kvcache.h"
#include "llm_err.h"
#include "log.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Every test funnels its cache through here after each step: the counters add up and
 * the internal structures agree with each other. */
static void
assert_consistent(const kvcache *c)
{
    char err[160] = "";
    kvc_stats s = kvcache_stats(c);
    ck_assert_int_eq(s.total, s.free + s.cached + s.used);
    ck_assert_int_ge(s.free, 0);
    ck_assert_int_ge(s.cached, 0);
    ck_assert_int_ge(s.used, 0);
    ck_assert_msg(kvcache_check(c, err, sizeof(err)) == LLM_OK, "kvcache_check: %s", err);
}

static void
fill_tokens(int32_t *t, int n, int32_t base)
{
    for (int i = 0; i < n; i++)
        t[i] = base + i;
}

// --- hash -------------------------------------------------------------------------------

/* XXH64 reference values (the published "" and "abc" ones, the rest from the system's
 * libxxhash 0.8.1): the short path, the 32-byte stripe loop and its boundary, and the
 * 8/4/1-byte tails. */
START_TEST(test_hash64_matches_xxh64_reference_values)
{
    ck_assert_uint_eq(llm_hash64(NULL, 0, 0), 0xef46db3751d8e999ULL);
    ck_assert_uint_eq(llm_hash64("abc", 3, 0), 0x44bc2cf5ad770999ULL);
    char a100[100];
    memset(a100, 'a', sizeof(a100));
    ck_assert_uint_eq(llm_hash64(a100, sizeof(a100), 1), 0x65af8ded6639a61aULL);
    uint8_t b[64];
    for (int i = 0; i < 64; i++)
        b[i] = (uint8_t)i;
    ck_assert_uint_eq(llm_hash64(b, 47, 0x9E3779B97F4A7C15ULL), 0x6ca09f82bde16801ULL);
    // Exact multiples of the 32-byte stripe: the loop's last-stripe boundary.
    ck_assert_uint_eq(llm_hash64(b, 32, 0), 0xcbf59c5116ff32b4ULL);
    ck_assert_uint_eq(llm_hash64(b, 64, 0), 0xf7c67301db6713f0ULL);
}
END_TEST

/* Block ids name blocks in Redis and heartbeats: a change of the function or of the
 * byte layout must be noticed. Values computed once and pinned (the first one was also
 * checked against libxxhash over struct.pack('<Q16iQ', 0, 0..15, 0)). */
START_TEST(test_block_hash_values_are_pinned)
{
    int32_t t[KVC_BLOCK_TOKENS];
    fill_tokens(t, KVC_BLOCK_TOKENS, 0);
    ck_assert_uint_eq(kvcache_block_hash(0, t, 0), 0x75c9ee8d92dea961ULL);
    uint64_t fp = 0x536d6f6c4c4d32ULL;
    uint64_t h1 = kvcache_block_hash(0, t, fp);
    ck_assert_uint_eq(h1, 0x94b1ad827150fe0dULL);
    int32_t u[KVC_BLOCK_TOKENS];
    for (int i = 0; i < KVC_BLOCK_TOKENS; i++)
        u[i] = (i % 2) ? -1 - i : 49151 - i; // negative ids too: the layout is two's complement
    ck_assert_uint_eq(kvcache_block_hash(h1, u, fp), 0x928fcd2bdfd9c72eULL);
}
END_TEST

START_TEST(test_block_hash_layout_is_little_endian_parent_tokens_fingerprint)
{
    int32_t t[KVC_BLOCK_TOKENS];
    for (int i = 0; i < KVC_BLOCK_TOKENS; i++)
        t[i] = (int32_t)(0x01020304u * (uint32_t)(i + 1));
    uint64_t parent = 0x1122334455667788ULL, fp = 0x99aabbccddeeff00ULL;
    uint8_t buf[80], *p = buf;
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(parent >> (8 * i));
    for (int k = 0; k < KVC_BLOCK_TOKENS; k++)
        for (int i = 0; i < 4; i++)
            *p++ = (uint8_t)((uint32_t)t[k] >> (8 * i));
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(fp >> (8 * i));
    ck_assert_uint_eq(kvcache_block_hash(parent, t, fp), llm_hash64(buf, sizeof(buf), 0));
}
END_TEST

START_TEST(test_block_hash_depends_on_parent_every_token_and_fingerprint)
{
    enum { N = 2 + KVC_BLOCK_TOKENS + 2 };
    int32_t t[KVC_BLOCK_TOKENS];
    fill_tokens(t, KVC_BLOCK_TOKENS, 100);
    uint64_t h[N];
    int n = 0;
    h[n++] = kvcache_block_hash(0, t, 7);
    h[n++] = kvcache_block_hash(1, t, 7);
    for (int i = 0; i < KVC_BLOCK_TOKENS; i++) {
        t[i] ^= 1;
        h[n++] = kvcache_block_hash(0, t, 7);
        t[i] ^= 1;
    }
    h[n++] = kvcache_block_hash(0, t, 8);
    // Swapping parent and fingerprint must not collide either.
    h[n++] = kvcache_block_hash(7, t, 0);
    ck_assert_int_eq(n, N);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            ck_assert_msg(h[i] != h[j], "hash %d == hash %d", i, j);
}
END_TEST

START_TEST(test_equal_prefixes_give_equal_chains)
{
    enum { B = 4 };
    int32_t a[B * KVC_BLOCK_TOKENS], b[B * KVC_BLOCK_TOKENS];
    fill_tokens(a, B * KVC_BLOCK_TOKENS, 0);
    memcpy(b, a, sizeof(a));
    b[2 * KVC_BLOCK_TOKENS + 5] = -7; // differ from block 2 on
    uint64_t pa = 0, pb = 0;
    for (int i = 0; i < B; i++) {
        pa = kvcache_block_hash(pa, a + i * KVC_BLOCK_TOKENS, 42);
        pb = kvcache_block_hash(pb, b + i * KVC_BLOCK_TOKENS, 42);
        if (i < 2)
            ck_assert_uint_eq(pa, pb);
        else
            ck_assert_uint_ne(pa, pb);
    }
    // Block 3's tokens are equal, but its parent differs: the chain stays apart.
    ck_assert(memcmp(a + 3 * KVC_BLOCK_TOKENS, b + 3 * KVC_BLOCK_TOKENS,
                     KVC_BLOCK_TOKENS * sizeof(int32_t)) == 0);
}
END_TEST

// --- alloc ------------------------------------------------------------------------------

START_TEST(test_new_rejects_bad_sizes)
{
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(0, &c), LLM_EINVAL);
    ck_assert_int_eq(kvcache_new(-1, &c), LLM_EINVAL);
    ck_assert_int_eq(kvcache_new(KVC_MAX_BLOCKS + 1, &c), LLM_EINVAL);
    ck_assert_int_eq(kvcache_new(4, NULL), LLM_EINVAL);
    ck_assert_ptr_null(c);
    kvcache_free(NULL);
    ck_assert_int_eq(kvcache_new(1, &c), LLM_OK);
    kvc_stats s = kvcache_stats(c);
    ck_assert_int_eq(s.total, 1);
    ck_assert_int_eq(s.free, 1);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

START_TEST(test_alloc_until_exhausted_then_enomem)
{
    enum { N = 8 };
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(N, &c), LLM_OK);
    bool seen[N] = {false};
    for (int i = 0; i < N; i++) {
        int32_t b = -1;
        ck_assert_int_eq(kvcache_alloc(c, &b), LLM_OK);
        ck_assert_int_ge(b, 0);
        ck_assert_int_lt(b, N);
        ck_assert(!seen[b]);
        seen[b] = true;
        ck_assert_int_eq(kvcache_refcount(c, b), 1);
        kvc_stats s = kvcache_stats(c);
        ck_assert_int_eq(s.used, i + 1);
        ck_assert_int_eq(s.free, N - i - 1);
        assert_consistent(c);
    }
    int32_t b = -1;
    ck_assert_int_eq(kvcache_alloc(c, &b), LLM_ENOMEM);
    ck_assert_int_eq(b, -1); // untouched on failure
    ck_assert_int_eq(kvcache_stats(c).evictions, 0);
    kvcache_release(c, 5);
    ck_assert_int_eq(kvcache_refcount(c, 5), 0);
    ck_assert_int_eq(kvcache_stats(c).free, 1);
    assert_consistent(c);
    ck_assert_int_eq(kvcache_alloc(c, &b), LLM_OK);
    ck_assert_int_eq(b, 5);
    ck_assert_int_eq(kvcache_alloc(c, &b), LLM_ENOMEM);
    for (int i = 0; i < N; i++)
        kvcache_release(c, i);
    kvc_stats s = kvcache_stats(c);
    ck_assert_int_eq(s.free, N);
    ck_assert_int_eq(s.used, 0);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

START_TEST(test_ref_shares_a_block_until_the_last_release)
{
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(2, &c), LLM_OK);
    int32_t b;
    ck_assert_int_eq(kvcache_alloc(c, &b), LLM_OK);
    ck_assert_int_eq(kvcache_ref(c, b), LLM_OK);
    ck_assert_int_eq(kvcache_refcount(c, b), 2);
    kvcache_release(c, b);
    ck_assert_int_eq(kvcache_refcount(c, b), 1);
    ck_assert_int_eq(kvcache_stats(c).used, 1);
    kvcache_release(c, b);
    ck_assert_int_eq(kvcache_stats(c).free, 2);
    ck_assert_int_eq(kvcache_ref(c, b), LLM_EINVAL); // not referenced any more
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

// --- cache ------------------------------------------------------------------------------

START_TEST(test_publish_then_release_caches_the_block)
{
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(4, &c), LLM_OK);
    int32_t b;
    ck_assert_int_eq(kvcache_alloc(c, &b), LLM_OK);
    ck_assert(!kvcache_is_published(c, b, NULL));
    ck_assert_int_eq(kvcache_publish(c, b, 0xabc), LLM_OK);
    uint64_t h = 0;
    ck_assert(kvcache_is_published(c, b, &h));
    ck_assert_uint_eq(h, 0xabc);
    ck_assert_int_eq(kvcache_publish(c, b, 0xabc), LLM_OK); // again: no-op
    ck_assert_int_eq(kvcache_stats(c).used, 1);
    kvcache_release(c, b);
    kvc_stats s = kvcache_stats(c);
    ck_assert_int_eq(s.cached, 1);
    ck_assert_int_eq(s.used, 0);
    ck_assert_int_eq(s.free, 3);
    ck_assert(kvcache_is_published(c, b, NULL));
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

START_TEST(test_lookup_hits_and_takes_the_block_off_the_lru)
{
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(4, &c), LLM_OK);
    int32_t b, got = -1;
    ck_assert_int_eq(kvcache_lookup(c, 0xabc, &got), LLM_ENOENT);
    ck_assert_int_eq(got, -1);
    ck_assert_int_eq(kvcache_stats(c).misses, 1);
    ck_assert_int_eq(kvcache_alloc(c, &b), LLM_OK);
    ck_assert_int_eq(kvcache_publish(c, b, 0xabc), LLM_OK);
    // Shared while its writer still holds it.
    ck_assert_int_eq(kvcache_lookup(c, 0xabc, &got), LLM_OK);
    ck_assert_int_eq(got, b);
    ck_assert_int_eq(kvcache_refcount(c, b), 2);
    kvcache_release(c, b);
    kvcache_release(c, b);
    ck_assert_int_eq(kvcache_stats(c).cached, 1);
    // From the cache: referenced again, no longer cached (so not evictable).
    ck_assert_int_eq(kvcache_lookup(c, 0xabc, &got), LLM_OK);
    ck_assert_int_eq(got, b);
    kvc_stats s = kvcache_stats(c);
    ck_assert_int_eq(s.cached, 0);
    ck_assert_int_eq(s.used, 1);
    ck_assert_uint_eq(s.hits, 2);
    ck_assert_uint_eq(s.misses, 1);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

/* Fill a pool of 3 with published blocks A, B, C released in that order; with no free
 * block left, allocations evict A, then B, then C, and each evicted hash is forgotten. */
START_TEST(test_evict_order_is_lru)
{
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(3, &c), LLM_OK);
    int32_t blk[3];
    uint64_t hs[3] = {0xa, 0xb, 0xc};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(kvcache_alloc(c, &blk[i]), LLM_OK);
        ck_assert_int_eq(kvcache_publish(c, blk[i], hs[i]), LLM_OK);
    }
    // Release in the order B, A, C and then touch B through a lookup + release: LRU is
    // by release, so the order of eviction becomes A, C, B.
    kvcache_release(c, blk[1]);
    kvcache_release(c, blk[0]);
    kvcache_release(c, blk[2]);
    int32_t got;
    ck_assert_int_eq(kvcache_lookup(c, 0xb, &got), LLM_OK);
    kvcache_release(c, got);
    ck_assert_int_eq(kvcache_stats(c).cached, 3);
    int want_order[3] = {0, 2, 1};
    for (int k = 0; k < 3; k++) {
        int i = want_order[k];
        int32_t b;
        ck_assert_int_eq(kvcache_alloc(c, &b), LLM_OK);
        ck_assert_int_eq(b, blk[i]);
        ck_assert(!kvcache_is_published(c, b, NULL));
        ck_assert_int_eq(kvcache_lookup(c, hs[i], &got), LLM_ENOENT);
        ck_assert_uint_eq(kvcache_stats(c).evictions, (uint64_t)k + 1);
        for (int k2 = k + 1; k2 < 3; k2++) // the others are still there
            ck_assert(kvcache_is_published(c, blk[want_order[k2]], NULL));
        assert_consistent(c);
    }
    kvcache_free(c);
}
END_TEST

START_TEST(test_evict_skips_referenced_blocks)
{
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(2, &c), LLM_OK);
    int32_t a, b, x;
    ck_assert_int_eq(kvcache_alloc(c, &a), LLM_OK);
    ck_assert_int_eq(kvcache_publish(c, a, 1), LLM_OK);
    ck_assert_int_eq(kvcache_alloc(c, &b), LLM_OK);
    ck_assert_int_eq(kvcache_publish(c, b, 2), LLM_OK);
    kvcache_release(c, a); // a cached (released first: the LRU victim)
    kvcache_release(c, b); // b cached
    int32_t got;
    ck_assert_int_eq(kvcache_lookup(c, 1, &got), LLM_OK); // a referenced again
    ck_assert_int_eq(kvcache_alloc(c, &x), LLM_OK);       // must take b, not a
    ck_assert_int_eq(x, b);
    ck_assert(kvcache_is_published(c, a, NULL));
    ck_assert_int_eq(kvcache_alloc(c, &x), LLM_ENOMEM); // a is in use: never evicted
    ck_assert_int_eq(kvcache_refcount(c, a), 1);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

START_TEST(test_duplicate_publish_keeps_the_first)
{
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(4, &c), LLM_OK);
    int32_t first, second, got;
    ck_assert_int_eq(kvcache_alloc(c, &first), LLM_OK);
    ck_assert_int_eq(kvcache_alloc(c, &second), LLM_OK);
    ck_assert_int_eq(kvcache_publish(c, first, 0x77), LLM_OK);
    ck_assert_int_eq(kvcache_publish(c, second, 0x77), LLM_OK);
    ck_assert(kvcache_is_published(c, first, NULL));
    ck_assert(!kvcache_is_published(c, second, NULL));
    ck_assert_int_eq(kvcache_lookup(c, 0x77, &got), LLM_OK);
    ck_assert_int_eq(got, first);
    kvcache_release(c, got);
    // The loser goes back to the free list; the winner to the cache.
    kvcache_release(c, second);
    kvc_stats s = kvcache_stats(c);
    ck_assert_int_eq(s.free, 3);
    ck_assert_int_eq(s.used, 1);
    kvcache_release(c, first);
    s = kvcache_stats(c);
    ck_assert_int_eq(s.free, 3);
    ck_assert_int_eq(s.cached, 1);
    // Also when the published copy is merely cached at the time of the second publish.
    ck_assert_int_eq(kvcache_alloc(c, &second), LLM_OK);
    ck_assert_int_eq(kvcache_publish(c, second, 0x77), LLM_OK);
    ck_assert(!kvcache_is_published(c, second, NULL));
    kvcache_release(c, second);
    ck_assert_int_eq(kvcache_stats(c).free, 3);
    ck_assert_int_eq(kvcache_lookup(c, 0x77, &got), LLM_OK);
    ck_assert_int_eq(got, first);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

START_TEST(test_publish_rejects_bad_blocks)
{
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(4, &c), LLM_OK);
    int32_t b;
    ck_assert_int_eq(kvcache_publish(c, -1, 1), LLM_EINVAL);
    ck_assert_int_eq(kvcache_publish(c, 4, 1), LLM_EINVAL);
    ck_assert_int_eq(kvcache_publish(c, INT32_MAX, 1), LLM_EINVAL);
    ck_assert_int_eq(kvcache_publish(c, 0, 1), LLM_EINVAL); // free, not referenced
    ck_assert_int_eq(kvcache_alloc(c, &b), LLM_OK);
    ck_assert_int_eq(kvcache_publish(c, b, 1), LLM_OK);
    ck_assert_int_eq(kvcache_publish(c, b, 2), LLM_EINVAL); // a block's name never changes
    uint64_t h;
    ck_assert(kvcache_is_published(c, b, &h));
    ck_assert_uint_eq(h, 1);
    kvcache_release(c, b);
    ck_assert_int_eq(kvcache_publish(c, b, 1), LLM_EINVAL); // cached, not referenced
    ck_assert_int_eq(kvcache_lookup(c, 2, &b), LLM_ENOENT);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

/* Release and the accessors are the calls a buggy caller reaches with a stale id: they
 * must leave the cache as it was, not crash or corrupt it. */
START_TEST(test_bad_ids_are_rejected_without_damage)
{
    log_set_level(LOG_LEVEL_ERROR); // the bad releases below log a warning each
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(3, &c), LLM_OK);
    int32_t b;
    ck_assert_int_eq(kvcache_alloc(c, &b), LLM_OK);
    kvc_stats before = kvcache_stats(c);
    int32_t bad[] = {-1, 3, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kvcache_release(c, bad[i]);
        ck_assert_int_eq(kvcache_refcount(c, bad[i]), -1);
        ck_assert_int_eq(kvcache_ref(c, bad[i]), LLM_EINVAL);
        ck_assert_int_eq(kvcache_publish(c, bad[i], 9), LLM_EINVAL);
        ck_assert(!kvcache_is_published(c, bad[i], NULL));
    }
    kvcache_release(c, 1); // free: double release
    kvcache_release(c, 2);
    kvc_stats after = kvcache_stats(c);
    ck_assert(memcmp(&before, &after, sizeof(before)) == 0);
    ck_assert_int_eq(kvcache_refcount(c, b), 1);
    kvcache_release(c, b);
    kvcache_release(c, b); // once too often
    ck_assert_int_eq(kvcache_stats(c).free, 3);
    uint64_t hs[2];
    ck_assert_int_eq(kvcache_summary(c, hs, 0), 0);
    ck_assert_int_eq(kvcache_summary(c, hs, -5), 0);
    ck_assert_int_eq(kvcache_summary(c, hs, 2), 0);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

// --- prefix -----------------------------------------------------------------------------

/* Computes, publishes and releases the chain of full blocks of tokens (the way a
 * sequence does after prefill), leaving them cached. Returns the number published. */
static int
prefill_and_cache(kvcache *c, const int32_t *tokens, int n_tokens, uint64_t fp)
{
    enum { MAXB = 16 };
    uint64_t hs[MAXB];
    int32_t blocks[MAXB];
    int n_full = n_tokens / KVC_BLOCK_TOKENS;
    ck_assert_int_le(n_full, MAXB);
    int hit = kvcache_match_prefix(c, tokens, n_tokens, fp, MAXB, blocks, hs);
    for (int i = hit; i < n_full; i++) {
        ck_assert_int_eq(kvcache_alloc(c, &blocks[i]), LLM_OK);
        ck_assert_int_eq(kvcache_publish(c, blocks[i], hs[i]), LLM_OK);
    }
    for (int i = 0; i < n_full; i++)
        kvcache_release(c, blocks[i]);
    return n_full;
}

START_TEST(test_match_prefix_shares_none_some_all)
{
    enum { B = 4, T = B * KVC_BLOCK_TOKENS };
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(32, &c), LLM_OK);
    int32_t a[T], other[T], some[T];
    fill_tokens(a, T, 0);
    fill_tokens(other, T, 5000);
    memcpy(some, a, sizeof(a));
    some[2 * KVC_BLOCK_TOKENS] = -1; // shares blocks 0 and 1
    ck_assert_int_eq(prefill_and_cache(c, a, T, 1), B);
    ck_assert_int_eq(kvcache_stats(c).cached, B);

    int32_t blocks[B];
    uint64_t hs[B], ha[B];
    memset(blocks, 0xff, sizeof(blocks));
    kvc_stats s0 = kvcache_stats(c);
    ck_assert_int_eq(kvcache_match_prefix(c, other, T, 1, B, blocks, hs), 0);
    ck_assert_int_eq(blocks[0], -1);
    ck_assert_uint_eq(kvcache_stats(c).misses, s0.misses + 1);
    ck_assert_int_eq(kvcache_match_prefix(c, a, T, 2, B, blocks, hs), 0); // other model

    ck_assert_int_eq(kvcache_match_prefix(c, a, T, 1, B, blocks, ha), B);
    for (int i = 0; i < B; i++) {
        ck_assert_int_eq(kvcache_refcount(c, blocks[i]), 1);
        uint64_t h;
        ck_assert(kvcache_is_published(c, blocks[i], &h));
        ck_assert_uint_eq(h, ha[i]);
    }
    ck_assert_int_eq(kvcache_stats(c).cached, 0);
    int32_t blocks2[B];
    ck_assert_int_eq(kvcache_match_prefix(c, some, T, 1, B, blocks2, hs), 2);
    ck_assert_int_eq(blocks2[0], blocks[0]);
    ck_assert_int_eq(blocks2[1], blocks[1]);
    ck_assert_int_eq(kvcache_refcount(c, blocks[0]), 2);
    ck_assert_int_eq(kvcache_refcount(c, blocks[2]), 1);
    // hashes[] covers every full block, found or not, and equals the explicit chain.
    uint64_t p = 0;
    for (int i = 0; i < B; i++) {
        p = kvcache_block_hash(p, some + i * KVC_BLOCK_TOKENS, 1);
        ck_assert_uint_eq(hs[i], p);
    }
    ck_assert_uint_eq(hs[1], ha[1]);
    ck_assert_uint_ne(hs[2], ha[2]);
    for (int i = 0; i < B; i++)
        kvcache_release(c, blocks[i]);
    kvcache_release(c, blocks2[0]);
    kvcache_release(c, blocks2[1]);
    ck_assert_int_eq(kvcache_stats(c).cached, B);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

START_TEST(test_match_prefix_honours_max_blocks)
{
    enum { B = 4, T = B * KVC_BLOCK_TOKENS };
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(8, &c), LLM_OK);
    int32_t a[T];
    fill_tokens(a, T, 0);
    prefill_and_cache(c, a, T, 1);
    int32_t blocks[B + 1] = {-1, -1, -1, -1, -1};
    uint64_t hs[B], want[B], p = 0;
    for (int i = 0; i < B; i++)
        want[i] = p = kvcache_block_hash(p, a + i * KVC_BLOCK_TOKENS, 1);
    kvc_stats s0 = kvcache_stats(c);
    // max_blocks 0: nothing referenced, but the hashes of every full block come back.
    memset(hs, 0, sizeof(hs));
    ck_assert_int_eq(kvcache_match_prefix(c, a, T, 1, 0, NULL, hs), 0);
    ck_assert(memcmp(hs, want, sizeof(hs)) == 0);
    ck_assert_uint_eq(kvcache_stats(c).hits, s0.hits);
    ck_assert_uint_eq(kvcache_stats(c).misses, s0.misses); // stopping early is no miss
    ck_assert_int_eq(kvcache_stats(c).cached, B);
    memset(hs, 0, sizeof(hs));
    ck_assert_int_eq(kvcache_match_prefix(c, a, T, 1, 2, blocks, hs), 2);
    ck_assert_int_eq(blocks[2], -1);
    ck_assert_int_eq(kvcache_stats(c).cached, B - 2);
    ck_assert_uint_eq(kvcache_stats(c).hits, s0.hits + 2);
    ck_assert_uint_eq(kvcache_stats(c).misses, s0.misses);
    ck_assert(memcmp(hs, want, sizeof(hs)) == 0);
    kvcache_release(c, blocks[0]);
    kvcache_release(c, blocks[1]);
    ck_assert_int_eq(kvcache_match_prefix(c, a, T, 1, B + 1, blocks, NULL), B);
    ck_assert_int_eq(blocks[B], -1);
    for (int i = 0; i < B; i++)
        kvcache_release(c, blocks[i]);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

START_TEST(test_match_prefix_never_matches_a_partial_block)
{
    enum { T = 3 * KVC_BLOCK_TOKENS };
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(8, &c), LLM_OK);
    int32_t a[T];
    fill_tokens(a, T, 0);
    prefill_and_cache(c, a, T, 1);
    int32_t blocks[3];
    uint64_t hs[3] = {0, 0, 0};
    // 0, 1, 15 tokens: no full block; 16: one; 47 (seq_len - 1): two, the third partial.
    int n_tok[] = {-1, 0, 1, KVC_BLOCK_TOKENS - 1, KVC_BLOCK_TOKENS, T - 1, T};
    int want[] = {0, 0, 0, 0, 1, 2, 3};
    for (size_t i = 0; i < sizeof(n_tok) / sizeof(n_tok[0]); i++) {
        int got = kvcache_match_prefix(c, a, n_tok[i], 1, 3, blocks, hs);
        ck_assert_msg(got == want[i], "n_tokens=%d matched %d", n_tok[i], got);
        for (int k = 0; k < got; k++)
            kvcache_release(c, blocks[k]);
        assert_consistent(c);
    }
    // With T - 1 tokens only two hashes are written.
    hs[2] = 0x5a5a;
    kvcache_match_prefix(c, a, T - 1, 1, 0, NULL, hs);
    ck_assert_uint_eq(hs[2], 0x5a5a);
    kvcache_free(c);
}
END_TEST

START_TEST(test_summary_is_mru_first_and_bounded)
{
    kvcache *c = NULL;
    ck_assert_int_eq(kvcache_new(8, &c), LLM_OK);
    int32_t b[5];
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(kvcache_alloc(c, &b[i]), LLM_OK);
        ck_assert_int_eq(kvcache_publish(c, b[i], 100 + (uint64_t)i), LLM_OK);
    }
    int32_t priv;
    ck_assert_int_eq(kvcache_alloc(c, &priv), LLM_OK); // private: never in the summary
    // b0, b1 cached (b1 released last); b2..b4 shared, b2 touched last by a lookup.
    kvcache_release(c, b[0]);
    kvcache_release(c, b[1]);
    int32_t got;
    ck_assert_int_eq(kvcache_lookup(c, 102, &got), LLM_OK);
    uint64_t want[5] = {102, 104, 103, 101, 100};
    uint64_t hs[8];
    ck_assert_int_eq(kvcache_summary(c, hs, 8), 5);
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(hs[i], want[i]);
    hs[2] = 0;
    ck_assert_int_eq(kvcache_summary(c, hs, 2), 2);
    ck_assert_uint_eq(hs[0], 102);
    ck_assert_uint_eq(hs[1], 104);
    ck_assert_uint_eq(hs[2], 0); // nothing past max
    ck_assert_int_eq(kvcache_summary(c, hs, 1), 1);
    // Evicting b0 drops it from the summary.
    int32_t x;
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(kvcache_alloc(c, &x), LLM_OK);
    ck_assert_int_eq(kvcache_alloc(c, &x), LLM_OK);
    ck_assert_int_eq(x, b[0]);
    ck_assert_int_eq(kvcache_summary(c, hs, 8), 4);
    ck_assert_uint_eq(hs[3], 101);
    assert_consistent(c);
    kvcache_free(c);
}
END_TEST

// --- randomized model check -------------------------------------------------------------

/* Check records the location of every passing ck_assert (a write to a pipe in fork
 * mode), which made millions of them take most of a minute; the model check calls into
 * Check only when something is wrong. */
#define MODEL_REQUIRE(expr)                                                                        \
    do {                                                                                           \
        if (!(expr))                                                                               \
            ck_abort_msg("model check failed: %s", #expr);                                         \
    } while (0)

/* The reference model: plain arrays and O(N) scans, written from the header's contract
 * rather than from kvcache.c. Recency is a logical clock: `touch` for shared blocks
 * (publish, lookup, ref), `released` for cached ones. */
enum {
    M_MAX = 64,
    M_FAMILY = 6,
    M_FAMILY_BLOCKS = 4,
    M_FAMILY_TOKENS = M_FAMILY_BLOCKS * KVC_BLOCK_TOKENS + 5
};

typedef struct {
    int n;
    int rc[M_MAX];
    bool pub[M_MAX];
    uint64_t hash[M_MAX];
    uint64_t touch[M_MAX];
    uint64_t released[M_MAX];
    uint64_t clock;
    uint64_t hits, misses, evictions;
} ref_model;

static int
rng_below(uint64_t *s, int n)
{
    return (int)(llm_splitmix64(s) % (uint64_t)n);
}

static int
ref_find(const ref_model *m, uint64_t h)
{
    for (int i = 0; i < m->n; i++)
        if (m->pub[i] && m->hash[i] == h)
            return i;
    return -1;
}

static bool
ref_valid(const ref_model *m, int32_t b)
{
    return b >= 0 && b < m->n;
}

static void
ref_take(ref_model *m, int b)
{
    if (m->pub[b])
        m->touch[b] = ++m->clock;
    m->rc[b]++;
}

static void
ref_release(ref_model *m, int32_t b)
{
    if (!ref_valid(m, b) || m->rc[b] == 0)
        return;
    if (--m->rc[b] == 0 && m->pub[b])
        m->released[b] = ++m->clock;
}

static void
check_alloc(kvcache *c, ref_model *m)
{
    int32_t b = -1;
    int rc = kvcache_alloc(c, &b);
    bool any_free = false;
    int victim = -1;
    for (int i = 0; i < m->n; i++) {
        any_free |= m->rc[i] == 0 && !m->pub[i];
        if (m->rc[i] == 0 && m->pub[i] && (victim < 0 || m->released[i] < m->released[victim]))
            victim = i;
    }
    if (!any_free && victim < 0) {
        MODEL_REQUIRE(rc == LLM_ENOMEM);
        return;
    }
    MODEL_REQUIRE(rc == LLM_OK);
    MODEL_REQUIRE(ref_valid(m, b));
    if (any_free) {
        MODEL_REQUIRE(m->rc[b] == 0 && !m->pub[b]); // took a free block
    } else {
        MODEL_REQUIRE(b == victim); // evicted the least recently released
        m->pub[b] = false;
        m->evictions++;
    }
    m->rc[b] = 1;
}

static void
check_lookup(kvcache *c, ref_model *m, uint64_t h)
{
    int32_t b = -1;
    int rc = kvcache_lookup(c, h, &b);
    int want = ref_find(m, h);
    if (want < 0) {
        MODEL_REQUIRE(rc == LLM_ENOENT);
        m->misses++;
        return;
    }
    MODEL_REQUIRE(rc == LLM_OK);
    MODEL_REQUIRE(b == want);
    ref_take(m, want);
    m->hits++;
}

static void
check_publish(kvcache *c, ref_model *m, int32_t b, uint64_t h)
{
    int rc = kvcache_publish(c, b, h);
    if (!ref_valid(m, b) || m->rc[b] == 0) {
        MODEL_REQUIRE(rc == LLM_EINVAL);
    } else if (m->pub[b]) {
        MODEL_REQUIRE(rc == (m->hash[b] == h ? LLM_OK : LLM_EINVAL));
    } else {
        MODEL_REQUIRE(rc == LLM_OK);
        if (ref_find(m, h) < 0) {
            m->pub[b] = true;
            m->hash[b] = h;
            m->touch[b] = ++m->clock;
        }
    }
}

static void
check_ref(kvcache *c, ref_model *m, int32_t b)
{
    int rc = kvcache_ref(c, b);
    if (!ref_valid(m, b) || m->rc[b] == 0) {
        MODEL_REQUIRE(rc == LLM_EINVAL);
        return;
    }
    MODEL_REQUIRE(rc == LLM_OK);
    ref_take(m, b);
}

static void
check_match(kvcache *c, ref_model *m, const int32_t *tokens, int n_tokens, int max_blocks)
{
    int32_t blocks[M_FAMILY_BLOCKS + 1];
    uint64_t hs[M_FAMILY_BLOCKS + 1];
    int got = kvcache_match_prefix(c, tokens, n_tokens, 77, max_blocks, blocks, hs);
    int n_full = n_tokens > 0 ? n_tokens / KVC_BLOCK_TOKENS : 0;
    uint64_t p = 0;
    int want = 0;
    bool matching = max_blocks > 0;
    for (int i = 0; i < n_full; i++) {
        p = kvcache_block_hash(p, tokens + i * KVC_BLOCK_TOKENS, 77);
        MODEL_REQUIRE(hs[i] == p);
        if (!matching)
            continue;
        int b = ref_find(m, p);
        if (b < 0) {
            m->misses++;
            matching = false;
            continue;
        }
        MODEL_REQUIRE(want < got);
        MODEL_REQUIRE(blocks[want] == b);
        ref_take(m, b);
        m->hits++;
        if (++want == max_blocks)
            matching = false;
    }
    MODEL_REQUIRE(got == want);
}

static int
cmp_desc_u64(uint64_t a, uint64_t b)
{
    return a < b ? 1 : a > b ? -1 : 0;
}

static void
check_summary(const kvcache *c, const ref_model *m, int max)
{
    // Expected order: shared by touch desc, then cached by release desc (insertion sort
    // over at most M_MAX keys; the clock makes every key distinct).
    uint64_t key[M_MAX], want[M_MAX];
    bool is_shared[M_MAX];
    int n = 0;
    for (int i = 0; i < m->n; i++) {
        if (!m->pub[i])
            continue;
        bool sh = m->rc[i] > 0;
        uint64_t k = sh ? m->touch[i] : m->released[i];
        int j = n++;
        while (j > 0 && (is_shared[j - 1] < sh ||
                         (is_shared[j - 1] == sh && cmp_desc_u64(key[j - 1], k) > 0))) {
            key[j] = key[j - 1];
            want[j] = want[j - 1];
            is_shared[j] = is_shared[j - 1];
            j--;
        }
        key[j] = k;
        want[j] = m->hash[i];
        is_shared[j] = sh;
    }
    uint64_t got[M_MAX];
    int wn = max < n ? (max < 0 ? 0 : max) : n;
    MODEL_REQUIRE(kvcache_summary(c, got, max) == wn);
    for (int i = 0; i < wn; i++)
        MODEL_REQUIRE(got[i] == want[i]);
}

static void
check_state(const kvcache *c, const ref_model *m)
{
    char err[160] = "";
    if (kvcache_check(c, err, sizeof(err)) != LLM_OK)
        ck_abort_msg("kvcache_check: %s", err);
    kvc_stats s = kvcache_stats(c);
    int n_free = 0, n_cached = 0, n_used = 0;
    for (int i = 0; i < m->n; i++) {
        n_free += m->rc[i] == 0 && !m->pub[i];
        n_cached += m->rc[i] == 0 && m->pub[i];
        n_used += m->rc[i] > 0;
        MODEL_REQUIRE(kvcache_refcount(c, i) == m->rc[i]);
        uint64_t h = 0;
        bool pub = kvcache_is_published(c, i, &h);
        MODEL_REQUIRE(pub == m->pub[i]);
        if (pub)
            MODEL_REQUIRE(h == m->hash[i]);
    }
    MODEL_REQUIRE(s.total == m->n);
    MODEL_REQUIRE(s.free == n_free);
    MODEL_REQUIRE(s.cached == n_cached);
    MODEL_REQUIRE(s.used == n_used);
    MODEL_REQUIRE(s.hits == m->hits);
    MODEL_REQUIRE(s.misses == m->misses);
    MODEL_REQUIRE(s.evictions == m->evictions);
}

// A random id biased to referenced blocks, sometimes any id, sometimes out of range.
static int32_t
pick_block(uint64_t *rng, const ref_model *m)
{
    int r = rng_below(rng, 20);
    if (r == 0)
        return (int32_t)rng_below(rng, m->n + 4) - 2;
    if (r == 1)
        return (int32_t)rng_below(rng, m->n);
    int held[M_MAX], n = 0;
    for (int i = 0; i < m->n; i++)
        if (m->rc[i] > 0)
            held[n++] = i;
    return n ? held[rng_below(rng, n)] : (int32_t)rng_below(rng, m->n);
}

static void
run_model(int n_blocks, int n_ops, uint64_t seed)
{
    enum { POOL = 3 * M_MAX + M_FAMILY * M_FAMILY_BLOCKS };
    uint64_t rng = seed;
    kvcache *c = NULL;
    MODEL_REQUIRE(kvcache_new(n_blocks, &c) == LLM_OK);
    ref_model m = {.n = n_blocks};

    // Token sequences sharing 0..4 leading blocks with family[0], and the hash pool:
    // small integers (clustered table slots, and 0), random values, and every chain hash
    // of the family, so publishes make later prefix matches hit.
    int32_t family[M_FAMILY][M_FAMILY_TOKENS];
    const int shared_blocks[M_FAMILY] = {4, 0, 1, 2, 3, 4};
    uint64_t pool[POOL];
    int n_pool = 0;
    for (int f = 0; f < M_FAMILY; f++) {
        for (int i = 0; i < M_FAMILY_TOKENS; i++)
            family[f][i] = i < shared_blocks[f] * KVC_BLOCK_TOKENS ? i : 1000 * f + i;
        uint64_t p = 0;
        for (int k = 0; k < M_FAMILY_BLOCKS; k++)
            pool[n_pool++] = p = kvcache_block_hash(p, family[f] + k * KVC_BLOCK_TOKENS, 77);
    }
    for (int i = 0; i < M_MAX; i++)
        pool[n_pool++] = (uint64_t)i;
    while (n_pool < POOL)
        pool[n_pool++] = llm_splitmix64(&rng);
    // Draw from a prefix of the pool scaled to the cache, so small pools still see hits.
    int n_use = M_FAMILY * M_FAMILY_BLOCKS + 2 * n_blocks + 2;

    for (int op = 0; op < n_ops; op++) {
        int r = rng_below(&rng, 100);
        if (r < 25) {
            check_alloc(c, &m);
        } else if (r < 43) {
            check_lookup(c, &m, pool[rng_below(&rng, n_use)]);
        } else if (r < 58) {
            check_publish(c, &m, pick_block(&rng, &m), pool[rng_below(&rng, n_use)]);
        } else if (r < 85) {
            int32_t b = pick_block(&rng, &m);
            kvcache_release(c, b);
            ref_release(&m, b);
        } else if (r < 90) {
            check_ref(c, &m, pick_block(&rng, &m));
        } else if (r < 96) {
            const int32_t *t = family[rng_below(&rng, M_FAMILY)];
            check_match(c, &m, t, rng_below(&rng, M_FAMILY_TOKENS + 2) - 1,
                        rng_below(&rng, M_FAMILY_BLOCKS + 2));
        } else {
            check_summary(c, &m, rng_below(&rng, m.n + 3) - 1);
        }
        check_state(c, &m);
    }
    // Drain: release every reference; all blocks end free or cached.
    for (int i = 0; i < m.n; i++)
        while (m.rc[i] > 0) {
            kvcache_release(c, i);
            ref_release(&m, i);
        }
    check_state(c, &m);
    MODEL_REQUIRE(kvcache_stats(c).used == 0);
    kvcache_free(c);
}

START_TEST(test_random_ops_agree_with_the_reference_model)
{
    log_set_level(LOG_LEVEL_ERROR); // bad releases are part of the mix
    run_model(M_MAX, 100000, 0x6b76636163686521ULL);
}
END_TEST

/* The boundaries: a pool of one block (table of 2 slots), and an odd size. */
START_TEST(test_random_ops_on_tiny_pools)
{
    log_set_level(LOG_LEVEL_ERROR);
    run_model(1, 20000, 1);
    run_model(2, 20000, 2);
    run_model(7, 20000, 3);
}
END_TEST

Suite *kvcache_suite(void);

Suite *
kvcache_suite(void)
{
    Suite *s = suite_create("kvcache");
    TCase *tc = tcase_create("hash");
    tcase_add_test(tc, test_hash64_matches_xxh64_reference_values);
    tcase_add_test(tc, test_block_hash_values_are_pinned);
    tcase_add_test(tc, test_block_hash_layout_is_little_endian_parent_tokens_fingerprint);
    tcase_add_test(tc, test_block_hash_depends_on_parent_every_token_and_fingerprint);
    tcase_add_test(tc, test_equal_prefixes_give_equal_chains);
    suite_add_tcase(s, tc);

    tc = tcase_create("alloc");
    tcase_add_test(tc, test_new_rejects_bad_sizes);
    tcase_add_test(tc, test_alloc_until_exhausted_then_enomem);
    tcase_add_test(tc, test_ref_shares_a_block_until_the_last_release);
    tcase_add_test(tc, test_bad_ids_are_rejected_without_damage);
    suite_add_tcase(s, tc);

    tc = tcase_create("cache");
    tcase_add_test(tc, test_publish_then_release_caches_the_block);
    tcase_add_test(tc, test_lookup_hits_and_takes_the_block_off_the_lru);
    tcase_add_test(tc, test_evict_order_is_lru);
    tcase_add_test(tc, test_evict_skips_referenced_blocks);
    tcase_add_test(tc, test_duplicate_publish_keeps_the_first);
    tcase_add_test(tc, test_publish_rejects_bad_blocks);
    suite_add_tcase(s, tc);

    tc = tcase_create("prefix");
    tcase_add_test(tc, test_match_prefix_shares_none_some_all);
    tcase_add_test(tc, test_match_prefix_honours_max_blocks);
    tcase_add_test(tc, test_match_prefix_never_matches_a_partial_block);
    tcase_add_test(tc, test_summary_is_mru_first_and_bounded);
    suite_add_tcase(s, tc);

    tc = tcase_create("model");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_random_ops_agree_with_the_reference_model);
    tcase_add_test(tc, test_random_ops_on_tiny_pools);
    suite_add_tcase(s, tc);
    return s;
}
