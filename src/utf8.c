/*
 * UTF-8 validation (RFC 3629), table-free: the first byte decides the
 * length and narrows the range of the second byte, which is where overlong
 * forms, surrogates and code points above U+10FFFF show (RFC 3629 section 4,
 * "UTF8-3" and "UTF8-4"). Pure functions, any thread.
 */
#include "dw/utf8.h"

#include <stdint.h>
#include <string.h>

size_t dw_utf8_seq_len(const char *s, size_t avail)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;

    if (avail == 0)
        return 0;
    if (p[0] < 0x80)
        return 1;
    if (p[0] < 0xC2) /* a continuation byte, or an overlong 2-byte form */
        return 0;
    if (p[0] < 0xE0) {
        n = 2;
    } else if (p[0] < 0xF0) {
        n = 3;
        if (p[0] == 0xE0)
            lo = 0xA0; /* overlong */
        else if (p[0] == 0xED)
            hi = 0x9F; /* U+D800..U+DFFF */
    } else if (p[0] < 0xF5) {
        n = 4;
        if (p[0] == 0xF0)
            lo = 0x90; /* overlong */
        else if (p[0] == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    }
    return n;
}

size_t dw_utf8_count(const char *s, size_t len)
{
    size_t count = 0;
    for (size_t i = 0; i < len; count++) {
        size_t n = dw_utf8_seq_len(s + i, len - i);
        if (n == 0)
            return SIZE_MAX;
        i += n;
    }
    return count;
}

bool dw_utf8_valid(const char *s)
{
    return dw_utf8_count(s, strlen(s)) != SIZE_MAX;
}

size_t dw_utf8_prefix(const char *s, size_t max_chars)
{
    size_t chars = 0;
    size_t i = 0;
    for (; s[i] != '\0'; i++) {
        /* A code point starts at every byte that is not a continuation
         * byte (10xxxxxx); stop at the start of the one past the limit. */
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (chars == max_chars)
                break;
            chars++;
        }
    }
    return i;
}
