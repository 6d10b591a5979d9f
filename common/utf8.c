/*
 * utf8.c - a strict UTF-8 validator (RFC 3629 table 3-7 ranges).
 */
#include "utf8.h"

#include <stdint.h>

bool
utf8_valid(const char *s, size_t n, size_t *bad_at)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t len;
        uint8_t lo = 0x80, hi = 0xbf; // allowed range of the second byte
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0; // no overlongs
            if (c == 0xed)
                hi = 0x9f; // no surrogates
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90;
            if (c == 0xf4)
                hi = 0x8f; // <= U+10FFFF
        } else {
            goto bad;
        }
        if (n - i < len || p[i + 1] < lo || p[i + 1] > hi)
            goto bad;
        for (size_t k = 2; k < len; k++)
            if ((p[i + k] & 0xc0) != 0x80)
                goto bad;
        i += len;
    }
    return true;
bad:
    if (bad_at)
        *bad_at = i;
    return false;
}
