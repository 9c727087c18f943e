/*
 * A retry policy: exponential backoff with jitter, and one free retry after
 * a loss. Pure logic: no clock of its own (every call takes now_ms, a
 * monotonic clock in milliseconds), no I/O, no threads; the owner
 * serialises. The status store reconnects by it (pg_pipeline.c).
 *
 * The rules:
 * - A failure (an attempt that did not work) makes the next attempt wait:
 *   min_ms, then doubling up to max_ms, each wait shortened at random by up
 *   to a quarter so that many clients that failed together do not come
 *   back together.
 * - A loss (something that worked broke) is forgiven once: the next attempt
 *   may be made at once, since a restarted server or a failover usually
 *   answers it. A second loss before a success counts as a failure.
 * - A success forgets everything.
 */
#ifndef DW_BACKOFF_H
#define DW_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

struct dw_backoff {
    int min_ms;
    int max_ms;
    int wait_ms;        /* the last wait before jitter; 0 after a success */
    int64_t next_at_ms; /* no attempt before this; 0: at once */
    bool loss_forgiven; /* the free retry after a loss is spent */
    uint64_t rng;       /* xorshift64 state, never 0 */
};

/* 0 < min_ms <= max_ms. seed may be anything (0 too). */
void dw_backoff_init(struct dw_backoff *b, int min_ms, int max_ms, uint64_t seed);

/* True when an attempt may be made at now_ms. */
bool dw_backoff_due(const struct dw_backoff *b, int64_t now_ms);

/* When the next attempt may be made (0: at once). */
int64_t dw_backoff_next_at(const struct dw_backoff *b);

/* An attempt at now_ms failed; returns the wait before the next. */
int dw_backoff_failed(struct dw_backoff *b, int64_t now_ms);

/* What worked broke at now_ms: at once the first time after a success,
 * else as dw_backoff_failed. Returns the wait. */
int dw_backoff_lost(struct dw_backoff *b, int64_t now_ms);

/* An attempt worked: the next failure starts again from min_ms. */
void dw_backoff_succeeded(struct dw_backoff *b);

#endif /* DW_BACKOFF_H */
