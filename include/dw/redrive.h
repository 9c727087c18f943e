/*
 * The automatic re-drive schedule (CONTRACT 2.4): which failures are worth
 * driving again without a new request, and when. Pure functions: no I/O, no
 * clock of their own (every time is passed in, milliseconds of the wall
 * clock, because the schedule is stored and compared across processes).
 *
 * A failed drive of an event that leaves a channel FAILED for a transient
 * cause gets a next attempt after delays[tier], where tier counts the
 * failed drives before it that were already scheduled (0 for the first);
 * past the end of the list the last delay repeats. No attempt is planned at
 * or after born + max_age (born: when the request was made).
 */
#ifndef DW_REDRIVE_H
#define DW_REDRIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dw/common.h"
#include "dw/status.h"

#define DW_REDRIVE_TIERS_MAX 32
/* Longest delay one tier may have: 30 days. */
#define DW_REDRIVE_DELAY_MAX_MS (30LL * 24 * 3600 * 1000)

struct dw_redrive_policy {
    int64_t delays_ms[DW_REDRIVE_TIERS_MAX];
    int tiers; /* 0: automatic re-drive is off */
    int64_t max_age_ms;
};

/*
 * Parses "60000,300000,..." (milliseconds, comma separated, spaces around
 * the numbers allowed) into p->delays_ms and p->tiers. "" (or only spaces)
 * gives tiers = 0 (off). Each delay must be 1 .. DW_REDRIVE_DELAY_MAX_MS,
 * at most DW_REDRIVE_TIERS_MAX of them. On an error returns DW_ERR_CONFIG
 * with the reason in errbuf (without the setting's name, which the caller
 * knows) and leaves p unchanged.
 */
enum dw_err dw_redrive_parse_delays(const char *text, struct dw_redrive_policy *p, char *errbuf,
                                    size_t errlen) DW_MUST_CHECK;

/* True for a failure worth an automatic re-drive: TIMEOUT, HTTP_5XX,
 * RATE_LIMITED, CONNECTION, RETRIES_EXHAUSTED, CIRCUIT_OPEN, BULKHEAD_FULL.
 * False for the permanent HTTP_4XX and BAD_RESPONSE, and for NONE. */
bool dw_redrive_transient(enum dw_errcode c);

/* When a request made at born_ms stops being re-driven (born + max_age). */
int64_t dw_redrive_expires_at(const struct dw_redrive_policy *p, int64_t born_ms);

/*
 * The next attempt after a drive that ended at now_ms with a transient
 * failure, tier being the number of schedules already used for this event
 * (0 for the first failure). True with *at_ms set when one is planned;
 * false when re-drive is off or the attempt would not come before
 * dw_redrive_expires_at.
 */
bool dw_redrive_next(const struct dw_redrive_policy *p, int tier, int64_t born_ms, int64_t now_ms,
                     int64_t *at_ms);

/* When the request's age counts from: the earlier of its requestedAt
 * (0 when absent) and when the worker first stored it (a requestedAt in
 * the future does not stretch the window). */
int64_t dw_redrive_born_ms(int64_t requested_at_ms, int64_t started_at_ms);

#endif /* DW_REDRIVE_H */
