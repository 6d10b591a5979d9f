/*
 * sha256.h - SHA-256 (FIPS 180-4) of a byte string, one shot.
 *
 * The coordinator stores API keys only as SHA-256 digests and hashes each presented
 * bearer token once to compare against them; operators compute the same digest with
 * `printf %s "$KEY" | sha256sum`. Written here from the standard rather than vendored.
 * It does not stream (no init/update/final: every caller holds the whole input), it is
 * not an HMAC or a password hash (no salt, no work factor: API keys are long random
 * strings, not passwords), and it makes no constant-time promise beyond having no
 * data-dependent branches or table lookups.
 */
#ifndef LLM_COMMON_SHA256_H
#define LLM_COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* sha256 writes the 32-byte SHA-256 digest of data[0..len) to out. data may be NULL only
 * when len is 0. Pure function; any thread. */
void sha256(const void *data, size_t len, uint8_t out[32]);

/* sha256_hex writes the digest of data[0..len) as 64 lowercase hex digits and a NUL to
 * out (65 bytes). data may be NULL only when len is 0. Pure function; any thread. */
void sha256_hex(const void *data, size_t len, char out[65]);

#endif
