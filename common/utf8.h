/*
 * utf8.h - UTF-8 validation for text arriving from users (flags, JSON, RPC).
 */
#ifndef LLM_COMMON_UTF8_H
#define LLM_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* utf8_valid: true when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates,
 * nothing above U+10FFFF). When false and bad_at is not NULL, *bad_at is the offset of
 * the first byte of the bad sequence. */
bool utf8_valid(const char *s, size_t n, size_t *bad_at);

#endif
