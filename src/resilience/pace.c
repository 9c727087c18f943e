/*
 * The pace of new connections (include/dw/pace.h): a token bucket with an
 * AIMD rate.
 *
 * Invariants: DW_PACE_MIN_RATE <= rate <= max_rate when paced; tokens <=
 * the burst (rate / 20, at least 1).
 */
#include "dw/pace.h"

static double burst_of(const struct dw_pace *p)
{
    double b = p->rate / 20.0;
    return b < 1.0 ? 1.0 : b;
}

void dw_pace_init(struct dw_pace *p, double max_per_s, int64_t now_ms)
{
    p->max_rate = max_per_s;
    p->rate = max_per_s;
    p->tokens = max_per_s > 0 ? burst_of(p) : 0;
    p->refill_ms = now_ms;
    p->cut_ms = INT64_MIN;
}

static void refill(struct dw_pace *p, int64_t now_ms)
{
    if (now_ms <= p->refill_ms)
        return;
    p->tokens += (double)(now_ms - p->refill_ms) * p->rate / 1000.0;
    if (p->tokens > burst_of(p))
        p->tokens = burst_of(p);
    p->refill_ms = now_ms;
}

int64_t dw_pace_take(struct dw_pace *p, int64_t now_ms)
{
    if (p->max_rate <= 0)
        return 0;
    refill(p, now_ms);
    /* Reserved even when none is left: each waiter waits for its own
     * token, so a crowd is let through at the pace, not all at once when
     * the first token comes back. */
    p->tokens -= 1.0;
    if (p->tokens >= 0)
        return 0;
    return (int64_t)(-p->tokens * 1000.0 / p->rate) + 1;
}

void dw_pace_connected(struct dw_pace *p, int64_t now_ms)
{
    if (p->max_rate <= 0)
        return;
    refill(p, now_ms);
    p->rate += p->rate / 20.0 < 1.0 ? 1.0 : p->rate / 20.0;
    if (p->rate > p->max_rate)
        p->rate = p->max_rate;
}

void dw_pace_failed(struct dw_pace *p, int64_t now_ms)
{
    if (p->max_rate <= 0)
        return;
    if (p->cut_ms != INT64_MIN && now_ms - p->cut_ms < DW_PACE_CUT_MS)
        return;
    refill(p, now_ms);
    p->cut_ms = now_ms;
    p->rate /= 2.0;
    if (p->rate < DW_PACE_MIN_RATE)
        p->rate = DW_PACE_MIN_RATE;
    /* Promises made at the old rate stand; no new burst until they are
     * kept. */
    if (p->tokens > 0)
        p->tokens = 0;
}
