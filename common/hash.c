/*
 * hash.c - XXH64 from the xxHash specification (doc/xxhash_spec.md upstream): four
 * 64-bit lanes over 32-byte stripes, then 8-, 4- and 1-byte tails, then an avalanche.
 * Written for clarity and portability over speed: words are assembled from bytes in
 * little-endian order (compilers turn that into one load on x86-64 and arm64). The
 * callers hash short inputs (a KV block key is 80 bytes), so no SIMD variant exists.
 */
#include "hash.h"

#include <assert.h>

#define H64_P1 0x9E3779B185EBCA87ULL
#define H64_P2 0xC2B2AE3D27D4EB4FULL
#define H64_P3 0x165667B19E3779F9ULL
#define H64_P4 0x85EBCA77C2B2AE63ULL
#define H64_P5 0x27D4EB2F165667C5ULL

static uint64_t
h64_rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t
h64_read64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t
h64_read32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
h64_round(uint64_t acc, uint64_t input)
{
    acc += input * H64_P2;
    acc = h64_rotl(acc, 31);
    return acc * H64_P1;
}

static uint64_t
h64_merge(uint64_t acc, uint64_t lane)
{
    acc ^= h64_round(0, lane);
    return acc * H64_P1 + H64_P4;
}

uint64_t
llm_hash64(const void *data, size_t len, uint64_t seed)
{
    assert(data != NULL || len == 0);
    const uint8_t *p = data;
    const uint8_t *end = p + len;
    uint64_t h;

    if (len >= 32) {
        uint64_t v1 = seed + H64_P1 + H64_P2;
        uint64_t v2 = seed + H64_P2;
        uint64_t v3 = seed;
        uint64_t v4 = seed - H64_P1;
        const uint8_t *last_stripe = end - 32;
        do {
            v1 = h64_round(v1, h64_read64(p));
            v2 = h64_round(v2, h64_read64(p + 8));
            v3 = h64_round(v3, h64_read64(p + 16));
            v4 = h64_round(v4, h64_read64(p + 24));
            p += 32;
        } while (p <= last_stripe);
        h = h64_rotl(v1, 1) + h64_rotl(v2, 7) + h64_rotl(v3, 12) + h64_rotl(v4, 18);
        h = h64_merge(h, v1);
        h = h64_merge(h, v2);
        h = h64_merge(h, v3);
        h = h64_merge(h, v4);
    } else {
        h = seed + H64_P5;
    }
    h += (uint64_t)len;

    for (; end - p >= 8; p += 8) {
        h ^= h64_round(0, h64_read64(p));
        h = h64_rotl(h, 27) * H64_P1 + H64_P4;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)h64_read32(p) * H64_P1;
        h = h64_rotl(h, 23) * H64_P2 + H64_P3;
        p += 4;
    }
    for (; p < end; p++) {
        h ^= (uint64_t)*p * H64_P5;
        h = h64_rotl(h, 11) * H64_P1;
    }

    h ^= h >> 33;
    h *= H64_P2;
    h ^= h >> 29;
    h *= H64_P3;
    h ^= h >> 32;
    return h;
}

uint64_t
llm_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
