/*
 * A circuit breaker for one channel, with Resilience4j's semantics where it
 * names a thing: states CLOSED, OPEN, HALF_OPEN, plus FORCED_OPEN and
 * DISABLED set by an operator; a count-based (last window_size calls) or
 * time-based (last window_seconds) sliding window; failure-rate and
 * slow-call-rate thresholds; a fixed number of half-open trial calls.
 *
 * Pure logic: no I/O, no sleeping, no clock of its own. Every function that
 * depends on time takes now_ms (a monotonic clock in milliseconds), so
 * tests drive it with a fake clock. Thread-safe: one mutex per breaker;
 * the pool's threads share one breaker per channel.
 *
 * A call goes: dw_breaker_acquire (a permit, or a refusal) -> the call ->
 * dw_breaker_record with its outcome, or dw_breaker_release when it was
 * cancelled before it said anything (the permit is given back, nothing is
 * counted). A permit belongs to the state it was given in: an outcome that
 * arrives after the breaker moved on (a call started while CLOSED that ends
 * after the breaker opened) is dropped, so late reports never skew a new
 * state.
 */
#ifndef DW_BREAKER_H
#define DW_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "dw/channel_id.h"
#include "dw/common.h"

/* The order is the value of the dw_breaker_state gauge (docs/metrics.md). */
enum dw_breaker_state {
    DW_BREAKER_CLOSED,
    DW_BREAKER_HALF_OPEN,
    DW_BREAKER_OPEN,
    DW_BREAKER_FORCED_OPEN, /* set by an operator: rejects everything */
    DW_BREAKER_DISABLED,    /* set by an operator: permits everything, counts nothing */
    DW_BREAKER_STATE_COUNT
};

/* The configured starting state ("normal", "forced_open", "disabled"). */
enum dw_breaker_mode {
    DW_BREAKER_MODE_NORMAL,
    DW_BREAKER_MODE_FORCED_OPEN,
    DW_BREAKER_MODE_DISABLED,
};

enum dw_breaker_window {
    DW_BREAKER_WINDOW_COUNT, /* the last window_size calls */
    DW_BREAKER_WINDOW_TIME,  /* the calls of the last window_seconds */
};

/* How a permitted call ended, for the breaker. */
enum dw_breaker_outcome {
    DW_BREAKER_SUCCESS,
    DW_BREAKER_FAILURE, /* a transient outcome (CONTRACT 3): 5xx, 408, 429, timeout, connection */
    DW_BREAKER_IGNORED, /* counted neither way (a permanent 4xx): the permit is given back */
};

/* Settings (channels.<NAME>.breaker_* in the configuration). */
struct dw_breaker_options {
    enum dw_breaker_mode mode;
    enum dw_breaker_window window_type;
    int window_size;               /* count window: calls, >= 1 */
    int window_seconds;            /* time window: seconds, >= 1 */
    int minimum_calls;             /* no rate (and no opening) below this many calls in the window;
                                    * a count window caps it at window_size */
    double failure_rate_threshold; /* percent, (0, 100]; a rate equal to it opens */
    double slow_call_rate_threshold; /* percent, (0, 100] */
    int slow_call_duration_ms;       /* a call strictly longer than this is slow */
    int open_wait_ms;                /* OPEN rejects this long, then HALF_OPEN */
    int half_open_calls;             /* trial calls let through in HALF_OPEN, >= 1 */
    int half_open_max_wait_ms;       /* HALF_OPEN longer than this reopens; 0: no limit */
};

/* A permit to make one call. Caller-allocated (embed it in the job); only
 * the breaker reads or writes its fields. */
struct dw_breaker_permit {
    uint64_t generation; /* the state it was given in */
    bool held;           /* given and not yet recorded or released */
    bool trial;          /* one of HALF_OPEN's trial calls */
};

/* What the window says now. Rates are percentages, -1 while fewer than
 * minimum_calls were recorded (Resilience4j's convention). In HALF_OPEN
 * they describe the trial calls, in OPEN the window that opened it. */
struct dw_breaker_snapshot {
    enum dw_breaker_state state;
    double failure_rate;
    double slow_call_rate;
    int calls;             /* recorded calls in the window */
    int failed_calls;      /* of which failures */
    int slow_calls;        /* of which slow (successes and failures) */
    int slow_failed_calls; /* of which slow failures */
};

/* A state change; from == to when nothing changed. */
struct dw_breaker_transition {
    enum dw_breaker_state from;
    enum dw_breaker_state to;
    double failure_rate; /* the snapshot's rates at the change */
    double slow_call_rate;
};

/* Called under the breaker's lock after every change of state or window,
 * with the new snapshot; so successive calls never cross. It must be quick
 * and must not call into the breaker (the pool stores gauges with it). */
typedef void (*dw_breaker_observer_cb)(void *opaque, const struct dw_breaker_snapshot *snap);

/* A breaker in the state o->mode says (CLOSED for normal). o is copied;
 * its values must be in the ranges above (the configuration checks them).
 * observer may be NULL. It is called once from here with the first
 * snapshot. Destroy with dw_breaker_destroy; NULL is a no-op there. */
struct dw_breaker *dw_breaker_create(const struct dw_breaker_options *o,
                                     dw_breaker_observer_cb observer, void *opaque);
void dw_breaker_destroy(struct dw_breaker *b);

/*
 * Asks to make a call at now_ms. True: *permit is held and must reach
 * dw_breaker_record or dw_breaker_release exactly once. False: the call must
 * not be made (CIRCUIT_OPEN); *permit is not held.
 * OPEN turns HALF_OPEN here once open_wait_ms have passed; HALF_OPEN older
 * than half_open_max_wait_ms turns OPEN here (its trials never reported).
 * *t tells whether either happened.
 */
bool dw_breaker_acquire(struct dw_breaker *b, int64_t now_ms, struct dw_breaker_permit *permit,
                        struct dw_breaker_transition *t);

/* The permitted call ended at now_ms after duration_ms. Thresholds are
 * checked after every recorded call; HALF_OPEN decides once
 * min(minimum_calls, half_open_calls) trials are in (Resilience4j's
 * forHalfOpen), closing or reopening. An outcome arriving when HALF_OPEN
 * is past half_open_max_wait_ms is ignored and the breaker reopens. *t
 * tells whether the state changed. A permit that is not held, or from an
 * earlier state, changes nothing. */
void dw_breaker_record(struct dw_breaker *b, struct dw_breaker_permit *permit,
                       enum dw_breaker_outcome outcome, int64_t duration_ms, int64_t now_ms,
                       struct dw_breaker_transition *t);

/* Gives a permit back without an outcome (the call was never made, or was
 * abandoned): a HALF_OPEN trial slot becomes free again. No-op when the
 * permit is not held. */
void dw_breaker_release(struct dw_breaker *b, struct dw_breaker_permit *permit);

/* Moves to state at once, as an operator would (Resilience4j's
 * transitionTo...State): CLOSED clears the window; OPEN starts open_wait_ms
 * from now_ms; HALF_OPEN starts the trials. Moving to the current state
 * enters it again (the same resets), as Resilience4j does. Permits given
 * earlier become stale. False, and nothing changes, for what Resilience4j
 * refuses (CLOSED to HALF_OPEN) and for an unknown state. */
bool dw_breaker_transition_to(struct dw_breaker *b, enum dw_breaker_state state, int64_t now_ms,
                              struct dw_breaker_transition *t);

/* How many calls the breaker would let through at now_ms without changing
 * anything: -1 for any number (CLOSED, DISABLED); the free trial slots in
 * HALF_OPEN (0 once it is stuck past half_open_max_wait_ms); in OPEN 0
 * while open_wait_ms runs, then half_open_calls (the next acquire turns it
 * HALF_OPEN); 0 when FORCED_OPEN. Lets a caller with optional work (the
 * automatic re-drive) hold it back instead of spending it on refusals. */
int dw_breaker_free_permits(struct dw_breaker *b, int64_t now_ms);

/* The state and window as of now_ms (a time window drops calls that
 * are too old). The one transition that happens here: HALF_OPEN past
 * half_open_max_wait_ms turns OPEN (and the observer hears it), so the
 * state gauge never shows HALF_OPEN past its limit once anyone looks. */
void dw_breaker_snapshot(struct dw_breaker *b, int64_t now_ms, struct dw_breaker_snapshot *snap);

/* "CLOSED", "OPEN", "HALF_OPEN", "FORCED_OPEN", "DISABLED"; never NULL. */
const char *dw_breaker_state_name(enum dw_breaker_state state);

/*
 * The breaker's numbers pushed into the metrics (dw/metrics.h is a leaf
 * that knows no breaker; these translate into its words). They keep the
 * names the pool calls them by; src/resilience/breaker_metrics.c.
 */
struct dw_metrics;
/* The snapshot's state and window; call it from the breaker's observer. */
void dw_metrics_breaker(struct dw_metrics *m, enum dw_channel_id ch,
                        const struct dw_breaker_snapshot *snap);
/* A state change; only the four automatic transitions are counted. */
void dw_metrics_breaker_transition(struct dw_metrics *m, enum dw_channel_id ch,
                                   enum dw_breaker_state from, enum dw_breaker_state to);
/* A permitted call ended with outcome after duration_us. */
void dw_metrics_breaker_call(struct dw_metrics *m, enum dw_channel_id ch,
                             enum dw_breaker_outcome outcome, int64_t duration_us);

#endif /* DW_BREAKER_H */
