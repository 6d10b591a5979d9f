/*
 * sha256.c - SHA-256 from FIPS 180-4 section 6.2: eight 32-bit working variables, a
 * 64-word message schedule per 64-byte block, then the length-padded tail (a 0x80 byte,
 * zeros, and the bit length as a big-endian 64-bit integer) in one or two more blocks.
 * Words are assembled from bytes in big-endian order, never through a cast pointer, so
 * alignment and host byte order do not matter. Written for clarity over speed: callers
 * hash one short token per HTTP request, so there is no SHA-NI or SIMD variant.
 */
#include "sha256.h"

#include <assert.h>
#include <string.h>

// FIPS 180-4 4.2.2: the first 32 bits of the fractional parts of the cube roots of the
// first 64 primes.
static const uint32_t SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

// FIPS 180-4 5.3.3: the first 32 bits of the fractional parts of the square roots of the
// first 8 primes.
static const uint32_t SHA256_H0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

static uint32_t
sha256_rotr(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static uint32_t
sha256_read32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void
sha256_write32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

// One 64-byte block into the running state h[8] (FIPS 180-4 6.2.2, steps 1-4).
static void
sha256_block(uint32_t h[8], const uint8_t *block)
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = sha256_read32(block + 4 * t);
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = sha256_rotr(w[t - 15], 7) ^ sha256_rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = sha256_rotr(w[t - 2], 17) ^ sha256_rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }

    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    uint32_t e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t big_s1 = sha256_rotr(e, 6) ^ sha256_rotr(e, 11) ^ sha256_rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = k + big_s1 + ch + SHA256_K[t] + w[t];
        uint32_t big_s0 = sha256_rotr(a, 2) ^ sha256_rotr(a, 13) ^ sha256_rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = big_s0 + maj;
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

void
sha256(const void *data, size_t len, uint8_t out[32])
{
    assert(data != NULL || len == 0);
    assert(out != NULL);
    const uint8_t *p = data;
    uint32_t h[8];
    memcpy(h, SHA256_H0, sizeof h);

    size_t n_full = len / 64;
    for (size_t i = 0; i < n_full; i++)
        sha256_block(h, p + 64 * i);

    // The tail (0..63 bytes), 0x80, zeros, then the 64-bit bit length: one block when the
    // tail leaves room for the 9 bytes of marker and length (tail <= 55), else two.
    uint8_t tail[128] = {0};
    size_t rest = len - 64 * n_full;
    if (rest > 0)
        memcpy(tail, p + 64 * n_full, rest);
    tail[rest] = 0x80;
    size_t tail_len = rest <= 55 ? 64 : 128;
    uint64_t n_bits = (uint64_t)len * 8; // FIPS limits messages to 2^64 bits; wraps beyond
    for (int i = 0; i < 8; i++)
        tail[tail_len - 1 - i] = (uint8_t)(n_bits >> (8 * i));
    sha256_block(h, tail);
    if (tail_len == 128)
        sha256_block(h, tail + 64);

    for (int i = 0; i < 8; i++)
        sha256_write32(out + 4 * i, h[i]);
}

void
sha256_hex(const void *data, size_t len, char out[65])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t d[32];
    sha256(data, len, d);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 0xf];
    }
    out[64] = '\0';
}
