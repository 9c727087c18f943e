/*
 * UTF-8 as RFC 3629 defines it: no overlong forms, no surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF. The one validator of the tree:
 * request decoding, the store's array encoder and the channel simulator
 * all use it. Pure functions, any thread.
 */
#ifndef DW_UTF8_H
#define DW_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* The length (1 to 4) of the well-formed sequence at s, of at most avail
 * bytes, or 0 when there is none (avail 0 included). Reads past s[0] only
 * while the bytes are continuation bytes, so it never reads past a NUL. A
 * NUL byte itself is a one-byte sequence: callers that refuse NUL say so. */
size_t dw_utf8_seq_len(const char *s, size_t avail);

/* Code points in s[0..len), or SIZE_MAX when it is not well-formed. */
size_t dw_utf8_count(const char *s, size_t len);

/* Whether the NUL-terminated s is well-formed. */
bool dw_utf8_valid(const char *s);

/* The byte length of the longest prefix of the UTF-8 text s holding at most
 * max_chars code points; never ends inside a multi-byte sequence. */
size_t dw_utf8_prefix(const char *s, size_t max_chars);

#endif /* DW_UTF8_H */
