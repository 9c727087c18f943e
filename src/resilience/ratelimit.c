/*
 * The rate limiter of one channel (include/dw/ratelimit.h).
 *
 * DESIGN
 * Resilience4j's AtomicRateLimiter state without the atomics (the caller
 * holds a lock): the cycle the state describes and the permits of that
 * cycle, negative when permits of later cycles are already reserved.
 * Every call first brings the state up to the cycle of now_ms, then
 * computes the wait for one permit, then reserves it if the caller will
 * wait that long.
 *
 * Threads: none of its own; the caller serialises calls on one limiter.
 * Invariants:
 * - permissions <= limit_for_period.
 * - A permit is taken only by a reserve that returned >= 0.
 */
#include "dw/ratelimit.h"

#include <stdlib.h>

#include "dw/common.h"

struct dw_ratelimit {
    struct dw_ratelimit_config cfg;
    int64_t created_ms;
    int64_t cycle;       /* the cycle the permits below belong to */
    int64_t permissions; /* left in that cycle; negative: reserved ahead */
};

struct dw_ratelimit *dw_ratelimit_create(const struct dw_ratelimit_config *cfg, int64_t now_ms)
{
    struct dw_ratelimit *r = dw_xcalloc(1, sizeof(*r));
    r->cfg = *cfg;
    if (r->cfg.limit_refresh_period_ms < 1)
        r->cfg.limit_refresh_period_ms = 1;
    r->created_ms = now_ms;
    r->cycle = 0;
    r->permissions = r->cfg.limit_for_period > 0 ? r->cfg.limit_for_period : 0;
    return r;
}

void dw_ratelimit_destroy(struct dw_ratelimit *r)
{
    free(r);
}

bool dw_ratelimit_enabled(const struct dw_ratelimit *r)
{
    return r->cfg.limit_for_period > 0;
}

/* Brings the state to the cycle of now_ms: each elapsed cycle adds
 * limit_for_period (paying reserved permits first), capped at
 * limit_for_period, so nothing unused carries over. A clock that went back
 * leaves the state as it is. */
static void refresh(struct dw_ratelimit *r, int64_t now_ms)
{
    int64_t elapsed = now_ms - r->created_ms;
    int64_t cycle = elapsed > 0 ? elapsed / r->cfg.limit_refresh_period_ms : 0;
    if (cycle <= r->cycle)
        return;
    int64_t limit = r->cfg.limit_for_period;
    int64_t cycles = cycle - r->cycle;
    int64_t missing = limit - r->permissions; /* >= 0 */
    /* cycles x limit could overflow after a very long idle time. */
    if (cycles >= (missing + limit - 1) / limit)
        r->permissions = limit;
    else
        r->permissions += cycles * limit;
    r->cycle = cycle;
}

/* How long a caller at now_ms waits for one permit (state refreshed). */
static int64_t wait_ms(const struct dw_ratelimit *r, int64_t now_ms)
{
    if (r->permissions >= 1)
        return 0;
    int64_t limit = r->cfg.limit_for_period;
    int64_t period = r->cfg.limit_refresh_period_ms;
    int64_t next_cycle_ms = r->created_ms + (r->cycle + 1) * period;
    /* Permits promised beyond the next cycle's refill: whole cycles more. */
    int64_t short_by = 1 - (r->permissions + limit);
    int64_t more_cycles = short_by > 0 ? (short_by + limit - 1) / limit : 0;
    return more_cycles * period + (next_cycle_ms - now_ms);
}

int64_t dw_ratelimit_reserve_within(struct dw_ratelimit *r, int64_t now_ms, int64_t max_wait_ms)
{
    if (r->cfg.limit_for_period <= 0)
        return 0;
    refresh(r, now_ms);
    int64_t wait = wait_ms(r, now_ms);
    if (wait > max_wait_ms)
        return -1;
    r->permissions--;
    return wait;
}

int64_t dw_ratelimit_reserve(struct dw_ratelimit *r, int64_t now_ms)
{
    return dw_ratelimit_reserve_within(r, now_ms, INT64_MAX);
}

int64_t dw_ratelimit_available(struct dw_ratelimit *r, int64_t now_ms)
{
    if (r->cfg.limit_for_period <= 0)
        return 0;
    refresh(r, now_ms);
    return r->permissions;
}
