/*
 * Retry for one channel job: exponential back-off with full jitter, the
 * 429 Retry-After rule, a per-job deadline, and a per-channel retry budget
 * (gRPC's retry throttling: a token bucket that stops retries while the
 * channel fails a lot, so retries cannot turn an outage into a storm).
 *
 * Pure logic: no I/O, no sleeping, no clock or random source of its own.
 * The caller passes now_ms and a uniform random number, and schedules the
 * wait itself (the pool puts the job on a timer; no thread sleeps).
 * dw_retry_decide is a pure function; the budget is thread-safe (atomics),
 * shared by the pool's threads, one per channel.
 */
#ifndef DW_RETRY_H
#define DW_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/status.h"

/* Settings (channels.<NAME>.* in the configuration). */
struct dw_retry_policy {
    int max_attempts;       /* first try included, >= 1 */
    int initial_backoff_ms; /* the ceiling of the first wait */
    double multiplier;      /* >= 1.0: each ceiling this many times the one before */
    int max_backoff_ms;     /* ceilings never exceed it */
    int max_retry_after_ms; /* a longer Retry-After gives up as RATE_LIMITED */
};

/* The wait before retry number `attempt` (1: the wait after the first try):
 * full jitter, rnd * min(max_backoff, initial * multiplier^(attempt-1)),
 * where rnd is uniform in [0, 1). Never negative, never above
 * max_backoff_ms. */
int64_t dw_retry_backoff_ms(const struct dw_retry_policy *p, int attempt, double rnd);

/* Why a job stops (or DW_RETRY_STOP_NONE: it goes on). */
enum dw_retry_stop {
    DW_RETRY_STOP_NONE,
    DW_RETRY_STOP_PERMANENT,   /* HTTP_4XX, BAD_RESPONSE: never retried */
    DW_RETRY_STOP_RETRY_AFTER, /* a 429's Retry-After is past max_retry_after_ms */
    DW_RETRY_STOP_ATTEMPTS,    /* max_attempts made */
    DW_RETRY_STOP_BUDGET,      /* the channel's retry budget is spent */
    DW_RETRY_STOP_DEADLINE,    /* the next attempt could not start before the deadline */
};

/* The end of one try that failed. */
struct dw_retry_input {
    int attempts;           /* tries made so far, this one included (>= 1) */
    enum dw_errcode error;  /* how it ended; not DW_EC_NONE */
    const char *message;    /* what went wrong, for the final message */
    int64_t retry_after_ms; /* a 429's Retry-After; < 0: none */
    int64_t now_ms;
    int64_t deadline_ms; /* the job's deadline; 0: none */
    bool budget_allows;  /* dw_retry_budget_allows after this failure was counted */
    double rnd;          /* uniform in [0, 1), for the jitter */
};

struct dw_retry_verdict {
    bool retry; /* true: try again after wait_ms */
    int64_t wait_ms;
    enum dw_retry_stop stop; /* why not, when !retry */
    enum dw_errcode error;   /* when !retry: the channel's final code (CONTRACT 2.3) */
    char message[DW_ERRMSG_MAX];
};

/*
 * Decides what follows a failed try, in this order: a permanent error ends
 * the job with that error; a Retry-After over the cap ends it RATE_LIMITED;
 * max_attempts, an exhausted budget or the deadline end it
 * RETRIES_EXHAUSTED with the last cause in the message ("3 attempts; last:
 * HTTP_5XX HTTP 503 from /api/v1/ads"); otherwise the next try waits the
 * jittered back-off, or the Retry-After when that is longer.
 */
void dw_retry_decide(const struct dw_retry_policy *p, const struct dw_retry_input *in,
                     struct dw_retry_verdict *out);

/*
 * The retry budget of one channel. Starts full with max_tokens tokens;
 * every failed attempt (a transient outcome) takes one, every successful
 * attempt gives back token_ratio (never above max_tokens); retries are
 * allowed only while more than max_tokens / 2 remain. Tokens are kept in
 * thousandths, as gRPC does. max_tokens 0: no budget, retries always
 * allowed. Thread-safe (lock-free).
 */
struct dw_retry_budget *dw_retry_budget_create(int max_tokens, double token_ratio);
void dw_retry_budget_destroy(struct dw_retry_budget *b);
void dw_retry_budget_on_failure(struct dw_retry_budget *b);
void dw_retry_budget_on_success(struct dw_retry_budget *b);
bool dw_retry_budget_allows(struct dw_retry_budget *b);
/* The tokens left; 0 when there is no budget. */
double dw_retry_budget_tokens(struct dw_retry_budget *b);

/* A seeded random source for the jitter (xorshift64*): returns a uniform
 * number in [0, 1) and advances *state. *state must not be 0. */
double dw_retry_random(uint64_t *state);

#endif /* DW_RETRY_H */
