/*
 * Exponential backoff with jitter: dw/backoff.h.
 *
 * Threads: none of its own; a struct dw_backoff belongs to its owner's
 * thread.
 *
 * Invariants: wait_ms is 0 or within [min_ms, max_ms]; a wait handed out
 * is within [wait_ms - wait_ms / 4, wait_ms]; next_at_ms only moves on a
 * failure (forward) or a success (to 0).
 */
#include "dw/backoff.h"

/* xorshift64: enough to spread clients apart, and reproducible from a seed. */
static uint64_t next_random(struct dw_backoff *b)
{
    uint64_t x = b->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b->rng = x;
    return x;
}

void dw_backoff_init(struct dw_backoff *b, int min_ms, int max_ms, uint64_t seed)
{
    *b = (struct dw_backoff){
        .min_ms = min_ms,
        .max_ms = max_ms < min_ms ? min_ms : max_ms,
        .rng = seed ? seed : UINT64_C(0x9E3779B97F4A7C15),
    };
}

bool dw_backoff_due(const struct dw_backoff *b, int64_t now_ms)
{
    return now_ms >= b->next_at_ms;
}

int64_t dw_backoff_next_at(const struct dw_backoff *b)
{
    return b->next_at_ms;
}

int dw_backoff_failed(struct dw_backoff *b, int64_t now_ms)
{
    if (!b->wait_ms)
        b->wait_ms = b->min_ms;
    else
        b->wait_ms = b->wait_ms > b->max_ms / 2 ? b->max_ms : b->wait_ms * 2;
    int jitter = b->wait_ms / 4 ? (int)(next_random(b) % (uint64_t)(b->wait_ms / 4 + 1)) : 0;
    int wait = b->wait_ms - jitter;
    b->next_at_ms = now_ms + wait;
    return wait;
}

int dw_backoff_lost(struct dw_backoff *b, int64_t now_ms)
{
    if (!b->loss_forgiven && !b->wait_ms) {
        b->loss_forgiven = true;
        b->next_at_ms = now_ms;
        return 0;
    }
    return dw_backoff_failed(b, now_ms);
}

void dw_backoff_succeeded(struct dw_backoff *b)
{
    b->wait_ms = 0;
    b->next_at_ms = 0;
    b->loss_forgiven = false;
}
