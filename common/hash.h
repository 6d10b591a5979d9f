/*
 * hash.h - a stable, general-purpose 64-bit hash of a byte string, and the SplitMix64
 * sequence built on the same kind of mixing.
 *
 * llm_hash64 is XXH64 (Yann Collet's xxHash, 64-bit variant), written out here from the
 * public specification rather than vendored. Its value is part of the project's
 * persistent formats: KV block ids are chains of it, and those ids name blocks in Redis
 * and in worker heartbeats, so the same bytes must hash the same on every machine, build
 * and run. Inputs are read byte by byte as little-endian words, never through a cast
 * pointer, so alignment and host byte order do not matter. It is not a cryptographic
 * hash and not keyed against adversaries; callers that need that (API key storage)
 * use something else.
 */
#ifndef LLM_COMMON_HASH_H
#define LLM_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

/* llm_hash64 returns XXH64(data[0..len), seed). data may be NULL only when len is 0.
 * Pure function; any thread. */
uint64_t llm_hash64(const void *data, size_t len, uint64_t seed);

/* llm_splitmix64 advances *state and returns its next value (SplitMix64): a small,
 * deterministic stream for benchmarks, synthetic data and tests, where a run must repeat
 * from its seed. Not for anything that must be unpredictable. Thread: the caller's state. */
uint64_t llm_splitmix64(uint64_t *state);

#endif
