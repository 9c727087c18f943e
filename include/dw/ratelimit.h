/*
 * A rate limiter for one channel with Resilience4j RateLimiter semantics
 * (its AtomicRateLimiter): limit_for_period permits per cycle of
 * limit_refresh_period_ms. Cycles are counted from the limiter's creation
 * (cycle = (now - created) / period), so they do not drift with the calls.
 * At the start of a cycle the permits are refilled to limit_for_period;
 * unused permits do not carry over.
 *
 * Reservation: a caller that finds no permit left is not refused; a permit
 * in a future cycle is reserved for it and it learns how long to wait
 * (Resilience4j's reservePermission). Permits can therefore go negative:
 * -n means n permits of coming cycles are already promised, and a refill
 * pays that debt first. Waiters are served in the order they asked, and
 * only limit_for_period of them are due per cycle, so they do not all wake
 * at once. A caller that would have to wait longer than it is willing
 * (dw_ratelimit_reserve_within) reserves nothing.
 *
 * No cancel, as in Resilience4j: a reserved permit that its caller no
 * longer uses (its job gave up) stays spent. Giving it back could only
 * serve a newcomer, never a waiter behind it (their waits are already
 * computed), and the channel's quota is the thing we must not exceed, so
 * erring on the side of one unused permit is the safe side.
 *
 * Pure logic: no clock (now_ms is a monotonic clock in milliseconds), no
 * threads, no locks: the caller serialises calls on one limiter with its
 * own lock (the pool's channel lock).
 */
#ifndef DW_RATELIMIT_H
#define DW_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

/* Defaults for the settings (channels.<NAME>.limit_for_period, ...). */
#define DW_RATELIMIT_DEFAULT_LIMIT_FOR_PERIOD 0 /* off */
#define DW_RATELIMIT_DEFAULT_REFRESH_MS       1000

struct dw_ratelimit_config {
    int limit_for_period;            /* permits per cycle; <= 0: off, every call goes at once */
    int64_t limit_refresh_period_ms; /* the cycle, ms; < 1 is taken as 1 */
};

/* A limiter whose first cycle starts at now_ms. cfg is copied. Never NULL
 * (allocation failure aborts). Destroy with dw_ratelimit_destroy; NULL is a
 * no-op there. */
struct dw_ratelimit *dw_ratelimit_create(const struct dw_ratelimit_config *cfg, int64_t now_ms);
void dw_ratelimit_destroy(struct dw_ratelimit *r);

/* True unless limit_for_period <= 0. */
bool dw_ratelimit_enabled(const struct dw_ratelimit *r);

/* Takes a permit for one call at now_ms. Returns 0: go now; or the ms to
 * wait until the permit reserved for this caller is due (then go without
 * asking again). Off: always 0. */
int64_t dw_ratelimit_reserve(struct dw_ratelimit *r, int64_t now_ms);

/* As dw_ratelimit_reserve, but only when the wait is at most max_wait_ms
 * (Resilience4j's timeoutDuration); otherwise nothing is reserved and -1 is
 * returned. max_wait_ms = 0 takes a permit only if one is free now. */
int64_t dw_ratelimit_reserve_within(struct dw_ratelimit *r, int64_t now_ms, int64_t max_wait_ms);

/* Permits left in the cycle of now_ms; negative: that many are reserved in
 * cycles to come (Resilience4j's availablePermissions). Off: 0. */
int64_t dw_ratelimit_available(struct dw_ratelimit *r, int64_t now_ms);

#endif /* DW_RATELIMIT_H */
