/*
 * kvcache.h - the KV block manager: which of the pool's block ids are free, in use, or
 * cached for prefix reuse.
 *
 * The paged KV cache is a fixed pool of n_blocks blocks of KVC_BLOCK_TOKENS positions;
 * the tensors live elsewhere, indexed by block id 0..n_blocks-1. This module is pure
 * bookkeeping: reference counts, a hash -> block table for prefix sharing, a free stack
 * and an LRU list of unreferenced blocks that still hold a published prefix. A full
 * block is named by kvcache_block_hash(parent, tokens, model_fp), so two sequences with
 * the same prefix compute the same chain of hashes and share the same blocks.
 *
 * Every block is in exactly one state:
 *   free    refcount 0, holds nothing, on the free stack;
 *   private refcount >= 1, not published (a sequence is writing it, or it lost a
 *           publish race), found by no lookup;
 *   shared  refcount >= 1, published under its hash (lookups take references);
 *   cached  refcount 0, still published, on the LRU list; evicted least recently
 *           released first when the free stack is empty.
 * kvc_stats.used counts private + shared blocks.
 *
 * All operations are O(1) except kvcache_summary and kvcache_match_prefix, which are
 * linear in their output. Nothing is allocated after kvcache_new (kvcache_check, a test
 * aid, aside). It does not touch tensors, talk to Redis, or decide whom to preempt:
 * LLM_ENOMEM from kvcache_alloc is the scheduler's cue.
 *
 * Thread: not thread-safe; callers serialize every call (the scheduler holds its lock
 * around each one, so heartbeats and Health may read stats from their own threads).
 */
#ifndef LLM_WORKER_KVCACHE_H
#define LLM_WORKER_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kvcache kvcache;

#define KVC_BLOCK_TOKENS 16
// The largest pool kvcache_new accepts: block ids are int32_t and the hash table holds
// a power of two >= 2 * n_blocks slots.
#define KVC_MAX_BLOCKS (1 << 28)

typedef struct {
    int total;          // blocks in the pool
    int free;           // on the free list (never used, or released unpublished; hold nothing)
    int cached;         // unreferenced but holding a full block's KV under a hash (LRU)
    int used;           // referenced by at least one sequence (total = free + cached + used)
    uint64_t hits;      // blocks reused through kvcache_lookup
    uint64_t misses;    // kvcache_lookup calls that found nothing
    uint64_t evictions; // cached blocks reclaimed for new allocations
} kvc_stats;

/* kvcache_new makes a pool of n_blocks free blocks (1 <= n_blocks <= KVC_MAX_BLOCKS).
 * Returns LLM_OK, LLM_EINVAL (n_blocks out of range, out NULL) or LLM_ENOMEM. *out is
 * freed with kvcache_free(). */
int kvcache_new(int n_blocks, kvcache **out);

/* kvcache_free frees the pool and everything in it. Accepts NULL. */
void kvcache_free(kvcache *c);

/* kvcache_block_hash returns the id of a full block: llm_hash64 (XXH64, seed 0) of the
 * 80 bytes parent (u64 LE) | tokens[0..16) (each i32 LE) | model_fp (u64 LE). parent is
 * the previous block's hash, 0 for the first block of a sequence; model_fp names the
 * model (and any per-tenant salt), so different models never share blocks. The value
 * is stable across runs, builds and machines: it names blocks in Redis and heartbeats.
 * Pure function; any thread. */
uint64_t kvcache_block_hash(uint64_t parent, const int32_t tokens[KVC_BLOCK_TOKENS],
                            uint64_t model_fp);

/* kvcache_alloc hands out a fresh private block (refcount 1) for a sequence to write
 * into: from the free stack, else by evicting the least recently released cached block
 * (its hash is forgotten; kvc_stats.evictions counts it). Referenced blocks are never
 * evicted. Returns LLM_OK with *block set, or LLM_ENOMEM when every block is in use. */
int kvcache_alloc(kvcache *c, int32_t *block);

/* kvcache_lookup takes a reference (refcount + 1) to the block published under hash,
 * whether it is shared or cached (a cached block leaves the LRU), and sets *block.
 * Returns LLM_OK (counted in hits), LLM_ENOENT (counted in misses) or LLM_ERANGE if the
 * block's refcount would overflow. */
int kvcache_lookup(kvcache *c, uint64_t hash, int32_t *block);

/* kvcache_ref takes one more reference to a block the caller already references (a
 * forked sequence sharing its parent's blocks). Returns LLM_OK, LLM_EINVAL (id out of
 * range or block not referenced) or LLM_ERANGE (refcount would overflow). */
int kvcache_ref(kvcache *c, int32_t block);

/* kvcache_publish: a sequence finished writing the full private block `block`; publish
 * it under hash so later lookups find it. If another block already holds hash (two
 * sequences computed the same prefix concurrently) that one stays the published copy and
 * this one stays private, to be freed normally on release: the call still returns
 * LLM_OK, and kvcache_is_published() tells the two cases apart. Publishing a block again
 * under the hash it already has is a no-op. Returns LLM_EINVAL for an id out of range,
 * a block that is not referenced, or a block already published under another hash (a
 * block's contents, hence its name, never change). */
int kvcache_publish(kvcache *c, int32_t block, uint64_t hash);

/* kvcache_release drops one reference. At refcount 0 a published block becomes cached
 * (most recently used end of the LRU); an unpublished one goes back to the free stack.
 * Releasing an id out of range or an unreferenced block is a caller bug that must not
 * take the worker down: it is a no-op logged as event=kvc_bad_release. */
void kvcache_release(kvcache *c, int32_t block);

/* kvcache_refcount returns the block's reference count, or -1 for an id out of range. */
int kvcache_refcount(const kvcache *c, int32_t block);

/* kvcache_is_published says whether the block is the published copy of some hash
 * (shared or cached); false for private, free and out-of-range blocks. If hash is not
 * NULL and the answer is true, *hash receives the block's hash. */
bool kvcache_is_published(const kvcache *c, int32_t block, uint64_t *hash);

/* kvcache_stats returns the counters; total == free + cached + used always holds. */
kvc_stats kvcache_stats(const kvcache *c);

/* kvcache_summary writes up to max hashes of published blocks, most recently used
 * first: shared blocks (in use now) ordered by their last publish, lookup or ref, then
 * cached blocks from the most recently released. It is the compact summary a worker
 * sends in its heartbeat for cache-aware routing. Returns the number written (0 when
 * max <= 0). O(number written). */
int kvcache_summary(const kvcache *c, uint64_t *hashes, int max);

/* kvcache_match_prefix walks tokens[0..n_tokens) block by block and returns how many
 * leading full blocks are found through kvcache_lookup, stopping at the first miss or
 * after max_blocks matches. Each found block is referenced (release it like any other)
 * and its id written to blocks[i]. A trailing partial block is never matched. hashes
 * (may be NULL) receives the chain hash of every full block of tokens, found or not:
 * n_tokens / KVC_BLOCK_TOKENS entries, which callers reuse when they publish later.
 * n_tokens <= 0 or max_blocks <= 0 match nothing. Hits and misses are counted as by
 * kvcache_lookup (one miss at most per call). O(n_tokens). */
int kvcache_match_prefix(kvcache *c, const int32_t *tokens, int n_tokens, uint64_t model_fp,
                         int max_blocks, int32_t *blocks, uint64_t *hashes);

/* kvcache_check walks every internal structure (free stack, both lists, hash table,
 * counters) and returns LLM_OK if they agree with each other, LLM_EPROTO with the first
 * broken invariant written to err (may be NULL), or LLM_ENOMEM. O(n_blocks) and it
 * allocates a scratch array: for tests and debugging, not the scheduler's path. */
int kvcache_check(const kvcache *c, char *err, size_t err_len);

#endif
