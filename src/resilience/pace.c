/*
 * The pace of new connections (include/dw/pace.h): a window of connects
 * under way, and a token bucket with an AIMD rate.
 *
 * Invariants: DW_PACE_MIN_RATE <= rate <= max_rate when paced;
 * 0 <= tokens <= the burst (rate / 20, between 1 and DW_PACE_MAX_BURST);
 * connecting >= 0 (an end without a begin is ignored).
 */
#include "dw/pace.h"

static double burst_of(const struct dw_pace *p)
{
    double b = p->rate / 20.0;
    return b < 1.0 ? 1.0 : b > DW_PACE_MAX_BURST ? DW_PACE_MAX_BURST : b;
}

void dw_pace_init(struct dw_pace *p, double max_per_s, int64_t now_ms)
{
    p->max_rate = max_per_s;
    p->rate = max_per_s < DW_PACE_START_RATE ? max_per_s : DW_PACE_START_RATE;
    p->tokens = max_per_s > 0 ? burst_of(p) : 0;
    p->refill_ms = now_ms;
    p->cut_ms = INT64_MIN;
    p->connecting = 0;
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
    if (p->connecting >= DW_PACE_WINDOW)
        return DW_PACE_WINDOW_POLL_MS;
    refill(p, now_ms);
    if (p->tokens >= 1.0) {
        p->tokens -= 1.0;
        return 0;
    }
    /* Nothing is reserved: the caller keeps its call queued and asks
     * again, and meanwhile a connection that frees up serves it instead. */
    return (int64_t)((1.0 - p->tokens) * 1000.0 / p->rate) + 1;
}

static void leave_window(struct dw_pace *p)
{
    if (p->connecting > 0)
        p->connecting--;
}

void dw_pace_connecting(struct dw_pace *p)
{
    p->connecting++;
}

void dw_pace_abandoned(struct dw_pace *p)
{
    leave_window(p);
}

void dw_pace_connected(struct dw_pace *p, int64_t now_ms)
{
    leave_window(p);
    if (p->max_rate <= 0)
        return;
    refill(p, now_ms);
    p->rate += p->rate / 10.0 < 1.0 ? 1.0 : p->rate / 10.0;
    if (p->rate > p->max_rate)
        p->rate = p->max_rate;
}

void dw_pace_failed(struct dw_pace *p, int64_t now_ms)
{
    leave_window(p);
    if (p->max_rate <= 0)
        return;
    if (p->cut_ms != INT64_MIN && now_ms - p->cut_ms < DW_PACE_CUT_MS)
        return;
    refill(p, now_ms);
    p->cut_ms = now_ms;
    p->rate /= 2.0;
    if (p->rate < DW_PACE_MIN_RATE)
        p->rate = DW_PACE_MIN_RATE;
    /* No new burst at the old rate. */
    p->tokens = 0;
}
