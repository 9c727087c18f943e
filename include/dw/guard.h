/*
 * The guards of one channel, composed: what the pool asks before a try,
 * after each HTTP call and after a try, in the order of docs/resilience.md:
 *
 *   Retry( pause-on-429( RateLimiter( CircuitBreaker( Bulkhead/limit( call )))))
 *
 * - the job's deadline (counted from its first try, never from time spent
 *   queued behind the channel's limit);
 * - a channel-wide pause after a 429 with Retry-After: no new call to the
 *   channel until then, for every job, which waits instead of failing;
 * - the rate limiter (Resilience4j RateLimiter; off by default);
 * - the circuit breaker;
 * - the bulkhead, whose size follows the adaptive concurrency limit
 *   (include/dw/limit.h) between limit_min and max_concurrent;
 * - after a failed try, the retry policy and the retry budget.
 * The pace of new connections is per origin, not per channel
 * (include/dw/pace.h); the pool keeps it.
 *
 * Pure logic in the sense of STYLE.md: no I/O, no clock, no curl, no
 * threads of its own; time is passed in. Thread-safe: the pool's threads
 * share one dw_guard per channel. The breaker, bulkhead and budget lock
 * themselves; the limit and the rate limiter share one mutex.
 * Nothing here logs or counts metrics: the verdicts say what happened and
 * the pool reports it.
 */
#ifndef DW_GUARD_H
#define DW_GUARD_H

#include <stdbool.h>
#include <stdint.h>

#include "dw/breaker.h"
#include "dw/bulkhead.h"
#include "dw/common.h"
#include "dw/config.h"
#include "dw/limit.h"
#include "dw/retry.h"
#include "dw/status.h"

struct dw_guard;

/* One job's hold on its channel's guards. Embed it in the job, zeroed. */
struct dw_guard_ticket {
    struct dw_breaker_permit permit;
    struct dw_bulkhead_waiter waiter;
    bool has_slot;       /* holds a bulkhead slot (one unit of the limit) */
    bool has_rate;       /* holds a rate-limiter permit for its next try */
    bool waiting;        /* counted in the channel's jobs waiting to start */
    bool started;        /* has begun a try: its deadline runs */
    int64_t deadline_ms; /* 0: none yet, or none configured */
};

/* What dw_guard_begin decided. */
enum dw_guard_step {
    DW_GUARD_GO,      /* make the try now */
    DW_GUARD_WAIT,    /* ask again at until_ms (a 429 pause or the rate limiter) */
    DW_GUARD_QUEUED,  /* parked for a bulkhead slot: wait for a grant, give up at until_ms */
    DW_GUARD_REFUSED, /* the job ends: code and why */
};

struct dw_guard_verdict {
    enum dw_guard_step step;
    int64_t until_ms;
    enum dw_errcode code;
    char why[DW_ERRMSG_MAX];
    struct dw_breaker_transition transition; /* from == to: none */
    bool breaker_refused;                    /* REFUSED by the breaker (CIRCUIT_OPEN) */
    bool bulkhead_full;                      /* REFUSED by the bulkhead (BULKHEAD_FULL) */
    bool slot_taken;                         /* this call took a bulkhead slot (GO) */
    bool queued;                             /* this call queued the job for a slot (QUEUED) */
};

/* ch: the channel (names in messages); cc outlives the guard. The breaker
 * observer is called on every breaker state change (metrics). */
struct dw_guard *dw_guard_create(enum dw_channel_id ch, const struct dw_channel_config *cc,
                                 dw_breaker_observer_cb observer, void *observer_opaque,
                                 int64_t now_ms);
void dw_guard_destroy(struct dw_guard *g);

/* A job wants to start (submitted, or back from a retry wait): counts it
 * as waiting, until its try starts or it ends. */
void dw_guard_want(struct dw_guard *g, struct dw_guard_ticket *t);

/* Before a try: the deadline, the 429 pause, the rate limiter, the
 * breaker and the bulkhead, in that order. On GO the ticket holds a
 * permit and a slot. On QUEUED it holds neither (a half-open trial stays
 * free for others); when a slot reaches it (dw_guard_end, dw_guard_grant)
 * the pool calls dw_guard_begin again, which then asks the breaker. */
void dw_guard_begin(struct dw_guard *g, struct dw_guard_ticket *t, int64_t now_ms,
                    struct dw_guard_verdict *v);

/* A parked job was handed a slot (its waiter came back from dw_guard_end
 * or dw_guard_grant). */
void dw_guard_granted(struct dw_guard *g, struct dw_guard_ticket *t);

/* A parked job gave up at its until_ms: true when it was still queued
 * (it holds nothing), false when a slot reached it first (the grant is on
 * its way: dw_guard_granted when it arrives). */
bool dw_guard_cancel_wait(struct dw_guard *g, struct dw_guard_ticket *t);

/* How a call's answer speaks of the channel's load. */
enum dw_limit_signal dw_guard_signal(enum dw_errcode error, long http_status);

/* An HTTP call starts: returns the channel's calls under way, itself
 * included, which its dw_guard_call_ended reports as inflight. These, not
 * the slots held, are the load the channel sees: a slot may be held by a
 * job waiting for its connect pace or for the next free transfer, and a
 * limit that counted those as used would grow past what it has tried. */
int dw_guard_call_started(struct dw_guard *g);

/* One HTTP call ended after rtt_us; inflight: what dw_guard_call_started
 * returned for it. Feeds the adaptive limit. Returns the limit. */
int dw_guard_call_ended(struct dw_guard *g, int64_t now_us, int64_t rtt_us, int inflight,
                        enum dw_limit_signal signal);

/* A channel that served a try this recently is up: its overload answers
 * are load it sheds, not a fault (dw_guard_shed). */
#define DW_GUARD_SERVING_MS 10000

/*
 * Whether a failed call (error, http_status; connect_timed_out: no
 * connection was made in connect_timeout_ms) was the channel shedding load
 * the worker put on it, rather than the channel failing. The one rule for
 * every overload exemption: shed load is the limit's and the pace's to
 * answer (they shrink on it), so it is no breaker failure, takes no retry
 * budget token and uses up no attempt (the deadline still bounds it).
 *
 * Shed only while the channel serves: a try succeeded within
 * DW_GUARD_SERVING_MS. A channel that answers nothing but 503, or whose
 * connects all time out, is down, and the breaker sees every failure.
 * Then: a connect timeout is shed when the connect pace is on (a full
 * accept queue dropped our SYN; the pace halves on it); an overload
 * answer (dw_guard_signal's DROP: 503, 429, 408, a timeout) when the
 * limit is adaptive.
 */
bool dw_guard_shed(struct dw_guard *g, enum dw_errcode error, long http_status,
                   bool connect_timed_out, int64_t now_ms);
/* The try ended with error (DW_EC_NONE: success) after took_ms: the
 * outcome to the breaker (transition filled in; shed load, dw_guard_shed,
 * is ignored) and the budget (shed load takes no token); a 429's
 * retry_after_ms (> 0) pauses the whole channel; the slot goes back. The
 * waiter returned (if not NULL) was handed the slot: wake its job. */
struct dw_bulkhead_waiter *dw_guard_end(struct dw_guard *g, struct dw_guard_ticket *t,
                                        enum dw_errcode error, int64_t took_ms, int64_t now_ms,
                                        int64_t retry_after_ms, bool shed,
                                        struct dw_breaker_transition *transition) DW_MUST_CHECK;

/* A queued job the limit now has room for (it grew), or NULL. Call until
 * NULL after dw_guard_call_ended raised the limit; wake each one. */
struct dw_bulkhead_waiter *dw_guard_grant(struct dw_guard *g) DW_MUST_CHECK;

/* After a failed try: retry (v->retry, v->wait_ms) or stop (v->error,
 * v->message). free_tries: tries that do not count against max_attempts
 * (shed load, dw_guard_shed; the deadline still bounds them). */
void dw_guard_after_failure(struct dw_guard *g, struct dw_guard_ticket *t, int attempts,
                            int free_tries, enum dw_errcode error, const char *message,
                            int64_t retry_after_ms, int64_t now_ms, double rnd,
                            struct dw_retry_verdict *v);

/* Gives back whatever the ticket holds, without an outcome (a job ends
 * or is abandoned). The waiter returned (if not NULL) was handed the slot. */
struct dw_bulkhead_waiter *dw_guard_release(struct dw_guard *g,
                                            struct dw_guard_ticket *t) DW_MUST_CHECK;

/* The breaker's state and window as of now_ms (dw_breaker_snapshot: a
 * HALF_OPEN past its maximum wait turns OPEN here). */
void dw_guard_breaker_snapshot(struct dw_guard *g, int64_t now_ms,
                               struct dw_breaker_snapshot *snap);

/* How many calls the breaker would let through now without changing it
 * (dw_breaker_free_permits: -1 any number, 0 none). */
int dw_guard_free_permits(struct dw_guard *g, int64_t now_ms);

/* Snapshots, for the pool's decisions, metrics and tests. */
int dw_guard_limit(struct dw_guard *g);
int dw_guard_in_use(struct dw_guard *g);
int dw_guard_waiting(struct dw_guard *g);
double dw_guard_budget_tokens(struct dw_guard *g);

#endif /* DW_GUARD_H */
