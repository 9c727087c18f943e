/*
 * RFC 3339 date-times: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM),
 * 't' and 'z' taken too, into milliseconds since the epoch (the fraction
 * truncated to ms). Second 60 is taken only where a leap second can be,
 * 23:59:60 UTC, and counts as the next second (as POSIX time does).
 */
#ifndef DW_RFC3339_H
#define DW_RFC3339_H

#include <stddef.h>
#include <stdint.h>

#include "dw/common.h"

/* Parses s[0..len) (no NUL needed). DW_OK with *ms_out set, or
 * DW_ERR_INVALID with a static English reason in *why (why may be NULL). */
enum dw_err dw_rfc3339_parse(const char *s, size_t len, int64_t *ms_out,
                             const char **why) DW_MUST_CHECK;

#endif /* DW_RFC3339_H */
