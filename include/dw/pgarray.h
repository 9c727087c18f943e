/*
 * PostgreSQL array literals in text format ("{\"a\",NULL,3}"), the way the
 * store sends a whole batch of rows as one parameter per column. Built
 * with a sticky error: appending past the cap only marks the array full,
 * and dw_pgarray_end then says so.
 */
#ifndef DW_PGARRAY_H
#define DW_PGARRAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dw/common.h"

/* A PostgreSQL array literal in text format, built with a sticky error. */
struct dw_pgarray {
    struct dw_buf buf;
    size_t count;
    bool full;
};

void dw_pgarray_init(struct dw_pgarray *a);
/* Closes the literal; NULL when it outgrew its cap (64 MiB). */
const char *dw_pgarray_end(struct dw_pgarray *a);
void dw_pgarray_cleanup(struct dw_pgarray *a);

/* One element: NULL for a NULL or empty string, else the string quoted,
 * with '"' and '\\' escaped; invalid UTF-8 becomes '?'. */
void dw_pgarray_add_text(struct dw_pgarray *a, const char *s);
void dw_pgarray_add_int(struct dw_pgarray *a, int v);
void dw_pgarray_add_i64(struct dw_pgarray *a, int64_t v);

#endif /* DW_PGARRAY_H */
