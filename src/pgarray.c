/*
 * PostgreSQL array literals in text format: dw/pgarray.h.
 *
 * Threads: an array belongs to its builder's thread.
 *
 * Invariants: the buffer always holds a well-formed prefix of the literal;
 * once full, nothing more is appended and dw_pgarray_end returns NULL.
 */
#include "dw/pgarray.h"

#include <string.h>

#include "dw/utf8.h"

/* Largest array parameter we build (a batch of thousands of rows is far below). */
#define ARRAY_CAP (64u * 1024 * 1024)

static void put(struct dw_pgarray *a, const char *p, size_t len)
{
    if (!a->full && dw_buf_append(&a->buf, p, len) != DW_OK)
        a->full = true;
}

void dw_pgarray_init(struct dw_pgarray *a)
{
    dw_buf_init(&a->buf, ARRAY_CAP);
    a->count = 0;
    a->full = false;
    put(a, "{", 1);
}

/* Closes the literal; NULL when it outgrew its cap. */
const char *dw_pgarray_end(struct dw_pgarray *a)
{
    put(a, "}", 1);
    return a->full ? NULL : a->buf.data;
}

void dw_pgarray_cleanup(struct dw_pgarray *a)
{
    dw_buf_cleanup(&a->buf);
}

/*
 * Appends one element: NULL for a NULL or empty string, else the string
 * quoted, with '"' and '\' escaped. Invalid UTF-8 (say, from a channel's
 * error text) becomes '?': one bad byte must not fail a whole batch forever.
 */
void dw_pgarray_add_text(struct dw_pgarray *a, const char *s)
{
    if (a->count++)
        put(a, ",", 1);
    if (!s || !*s) {
        put(a, "NULL", 4);
        return;
    }
    put(a, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + strlen(s);
    while (*p) {
        /* Plain ASCII goes in one piece: these texts are mostly ids and
         * URLs, and a put per byte was most of the cost of a batch. */
        const unsigned char *run = p;
        while (*p && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            put(a, (const char *)run, (size_t)(p - run));
        if (!*p)
            break;
        size_t n = dw_utf8_seq_len((const char *)p, (size_t)(end - p));
        if (!n)
            put(a, "?", 1);
        else if (*p == '"' || *p == '\\') {
            put(a, "\\", 1);
            put(a, (const char *)p, 1);
        } else
            put(a, (const char *)p, n);
        p += n ? n : 1;
    }
    put(a, "\"", 1);
}

void dw_pgarray_add_int(struct dw_pgarray *a, int v)
{
    char text[16];
    dw_snprintf(text, sizeof(text), "%d", v);
    if (a->count++)
        put(a, ",", 1);
    put(a, text, strlen(text));
}

void dw_pgarray_add_i64(struct dw_pgarray *a, int64_t v)
{
    char text[24];
    dw_snprintf(text, sizeof(text), "%lld", (long long)v);
    if (a->count++)
        put(a, ",", 1);
    put(a, text, strlen(text));
}
