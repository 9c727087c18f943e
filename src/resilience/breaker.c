/*
 * The circuit breaker of one channel (include/dw/breaker.h).
 *
 * DESIGN
 * One mutex guards everything; every operation is a few dozen instructions
 * under it, and the observer (metrics gauges) runs under it too so that
 * snapshots reach the gauges in the order they happened.
 *
 * The CLOSED state's window is either a ring of the last window_size
 * outcomes (two flag bits each) or window_seconds per-second buckets; both
 * keep running totals, so a record costs O(1) (a time window also clears
 * the buckets of the seconds it skipped, at most window_seconds of them).
 *
 * Every transition bumps a generation number. A permit remembers the
 * generation it was given in; records and releases of an older generation
 * are dropped. That makes HALF_OPEN's trial count exact (only the current
 * trials count) and lets a stuck HALF_OPEN reopen without waiting for its
 * lost trials.
 *
 * Threads: any; the pool's threads share one breaker per channel.
 * Invariants (under the lock):
 * - HALF_OPEN: trials_out + trials_done <= half_open_calls.
 * - calls, failed, slow, slow_failed are the sums over the window.
 */
#include "dw/breaker.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define FLAG_FAILED 1u
#define FLAG_SLOW   2u

struct bucket {
    int calls, failed, slow, slow_failed;
};

struct dw_breaker {
    pthread_mutex_t lock;
    struct dw_breaker_options o;
    dw_breaker_observer_cb observer;
    void *opaque;

    enum dw_breaker_state state;
    uint64_t generation;
    double failure_rate; /* as reported; -1: not enough calls */
    double slow_call_rate;

    /* CLOSED: the sliding window and its totals. */
    struct bucket total;
    uint8_t *ring; /* count window: flags of the last window_size calls */
    int ring_pos, ring_filled;
    struct bucket *buckets; /* time window: one per second, by second % window_seconds */
    int64_t head_sec;       /* the newest second the buckets hold */
    bool has_head;

    int64_t opened_at_ms; /* OPEN */

    /* HALF_OPEN */
    int64_t half_open_since_ms;
    int trials_out;  /* permits given and not yet back */
    int trials_done; /* outcomes recorded */
    struct bucket trial;
};

static const char *const state_names[DW_BREAKER_STATE_COUNT] = {
    [DW_BREAKER_CLOSED] = "CLOSED",     [DW_BREAKER_HALF_OPEN] = "HALF_OPEN",
    [DW_BREAKER_OPEN] = "OPEN",         [DW_BREAKER_FORCED_OPEN] = "FORCED_OPEN",
    [DW_BREAKER_DISABLED] = "DISABLED",
};

const char *dw_breaker_state_name(enum dw_breaker_state state)
{
    return (unsigned)state < DW_BREAKER_STATE_COUNT ? state_names[state] : "UNKNOWN";
}

/* ---- the window ---- */

static int64_t second_of(int64_t ms)
{
    return ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
}

static int slot_of(const struct dw_breaker *b, int64_t sec)
{
    int64_t n = b->o.window_seconds;
    return (int)(((sec % n) + n) % n);
}

static void bucket_add(struct bucket *to, const struct bucket *from, int sign)
{
    to->calls += sign * from->calls;
    to->failed += sign * from->failed;
    to->slow += sign * from->slow;
    to->slow_failed += sign * from->slow_failed;
}

static void window_clear(struct dw_breaker *b)
{
    memset(&b->total, 0, sizeof(b->total));
    b->ring_pos = b->ring_filled = 0;
    if (b->buckets)
        memset(b->buckets, 0, (size_t)b->o.window_seconds * sizeof(*b->buckets));
    b->has_head = false;
}

/* Moves a time window's newest second up to sec, dropping what falls out. */
static void window_advance(struct dw_breaker *b, int64_t sec)
{
    if (!b->has_head) {
        b->head_sec = sec;
        b->has_head = true;
        return;
    }
    if (sec <= b->head_sec)
        return;
    if (sec - b->head_sec >= b->o.window_seconds) {
        window_clear(b);
        b->head_sec = sec;
        b->has_head = true;
        return;
    }
    for (int64_t s = b->head_sec + 1; s <= sec; s++) {
        struct bucket *old = &b->buckets[slot_of(b, s)];
        bucket_add(&b->total, old, -1);
        memset(old, 0, sizeof(*old));
    }
    b->head_sec = sec;
}

static void window_add(struct dw_breaker *b, unsigned flags, int64_t now_ms)
{
    struct bucket one = {1, (flags & FLAG_FAILED) != 0, (flags & FLAG_SLOW) != 0,
                         (flags & FLAG_FAILED) && (flags & FLAG_SLOW)};

    if (b->o.window_type == DW_BREAKER_WINDOW_COUNT) {
        if (b->ring_filled == b->o.window_size) {
            unsigned old = b->ring[b->ring_pos];
            struct bucket gone = {1, (old & FLAG_FAILED) != 0, (old & FLAG_SLOW) != 0,
                                  (old & FLAG_FAILED) && (old & FLAG_SLOW)};
            bucket_add(&b->total, &gone, -1);
        } else {
            b->ring_filled++;
        }
        b->ring[b->ring_pos] = (uint8_t)flags;
        b->ring_pos = (b->ring_pos + 1) % b->o.window_size;
        bucket_add(&b->total, &one, 1);
        return;
    }
    int64_t sec = second_of(now_ms);
    window_advance(b, sec);
    /* Threads pass their own clock readings, so a call may report a
     * moment older than one already recorded; it still counts while its
     * second is inside the window. */
    if (sec <= b->head_sec - b->o.window_seconds)
        return;
    bucket_add(&b->buckets[slot_of(b, sec)], &one, 1);
    bucket_add(&b->total, &one, 1);
}

/* The window's totals as of now_ms without changing it. */
static struct bucket window_view(const struct dw_breaker *b, int64_t now_ms)
{
    struct bucket view = b->total;
    if (b->o.window_type == DW_BREAKER_WINDOW_COUNT || !b->has_head)
        return view;
    int64_t sec = second_of(now_ms);
    if (sec <= b->head_sec)
        return view;
    if (sec - b->head_sec >= b->o.window_seconds)
        return (struct bucket){0};
    for (int64_t s = b->head_sec + 1; s <= sec; s++)
        bucket_add(&view, &b->buckets[slot_of(b, s)], -1);
    return view;
}

static int minimum_calls(const struct dw_breaker *b)
{
    if (b->o.window_type == DW_BREAKER_WINDOW_COUNT && b->o.minimum_calls > b->o.window_size)
        return b->o.window_size; /* as Resilience4j does */
    return b->o.minimum_calls;
}

static void rates_of(const struct bucket *w, int minimum, double *failure, double *slow)
{
    if (w->calls < minimum || w->calls == 0) {
        *failure = *slow = -1;
        return;
    }
    *failure = w->failed * 100.0 / w->calls;
    *slow = w->slow * 100.0 / w->calls;
}

/* Inclusive: a rate equal to the threshold trips. Compared on counts so
 * that 5 of 10 against 50 is exact. */
static bool trips(const struct dw_breaker *b, const struct bucket *w)
{
    return w->failed * 100.0 >= b->o.failure_rate_threshold * w->calls ||
           w->slow * 100.0 >= b->o.slow_call_rate_threshold * w->calls;
}

/* ---- states ---- */

static void snapshot_locked(const struct dw_breaker *b, const struct bucket *w,
                            struct dw_breaker_snapshot *snap)
{
    memset(snap, 0, sizeof(*snap));
    snap->state = b->state;
    snap->failure_rate = b->failure_rate;
    snap->slow_call_rate = b->slow_call_rate;
    snap->calls = w->calls;
    snap->failed_calls = w->failed;
    snap->slow_calls = w->slow;
    snap->slow_failed_calls = w->slow_failed;
}

/* The window a snapshot describes: the trials in HALF_OPEN, else the
 * sliding window (frozen while OPEN). */
static const struct bucket *reported_window(const struct dw_breaker *b)
{
    return b->state == DW_BREAKER_HALF_OPEN ? &b->trial : &b->total;
}

static void notify(struct dw_breaker *b)
{
    if (!b->observer)
        return;
    struct dw_breaker_snapshot snap;
    snapshot_locked(b, reported_window(b), &snap);
    b->observer(b->opaque, &snap);
}

static void no_transition(const struct dw_breaker *b, struct dw_breaker_transition *t)
{
    if (!t)
        return;
    t->from = t->to = b->state;
    t->failure_rate = b->failure_rate;
    t->slow_call_rate = b->slow_call_rate;
}

static void set_state(struct dw_breaker *b, enum dw_breaker_state to, int64_t now_ms,
                      struct dw_breaker_transition *t)
{
    if (t) {
        t->from = b->state;
        t->to = to;
        t->failure_rate = b->failure_rate;
        t->slow_call_rate = b->slow_call_rate;
    }
    b->state = to;
    b->generation++;
    switch (to) {
    case DW_BREAKER_OPEN:
        /* The window stays as it was, so the rates that opened it show. */
        b->opened_at_ms = now_ms;
        break;
    case DW_BREAKER_HALF_OPEN:
        b->half_open_since_ms = now_ms;
        b->trials_out = b->trials_done = 0;
        memset(&b->trial, 0, sizeof(b->trial));
        b->failure_rate = b->slow_call_rate = -1;
        break;
    case DW_BREAKER_CLOSED:
    case DW_BREAKER_FORCED_OPEN:
    case DW_BREAKER_DISABLED:
    case DW_BREAKER_STATE_COUNT:
        window_clear(b);
        b->failure_rate = b->slow_call_rate = -1;
        break;
    }
    notify(b);
}

struct dw_breaker *dw_breaker_create(const struct dw_breaker_options *o,
                                     dw_breaker_observer_cb observer, void *opaque)
{
    struct dw_breaker *b = dw_xcalloc(1, sizeof(*b));
    pthread_mutex_init(&b->lock, NULL);
    b->o = *o;
    if (b->o.window_size < 1)
        b->o.window_size = 1;
    if (b->o.window_seconds < 1)
        b->o.window_seconds = 1;
    if (b->o.half_open_calls < 1)
        b->o.half_open_calls = 1;
    b->observer = observer;
    b->opaque = opaque;
    if (b->o.window_type == DW_BREAKER_WINDOW_COUNT)
        b->ring = dw_xcalloc((size_t)b->o.window_size, sizeof(*b->ring));
    else
        b->buckets = dw_xcalloc((size_t)b->o.window_seconds, sizeof(*b->buckets));
    b->failure_rate = b->slow_call_rate = -1;
    b->state = o->mode == DW_BREAKER_MODE_FORCED_OPEN ? DW_BREAKER_FORCED_OPEN
               : o->mode == DW_BREAKER_MODE_DISABLED  ? DW_BREAKER_DISABLED
                                                      : DW_BREAKER_CLOSED;
    pthread_mutex_lock(&b->lock);
    notify(b);
    pthread_mutex_unlock(&b->lock);
    return b;
}

void dw_breaker_destroy(struct dw_breaker *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b->ring);
    free(b->buckets);
    free(b);
}

/* HALF_OPEN past half_open_max_wait_ms: its trials never all reported. */
static bool half_open_expired(const struct dw_breaker *b, int64_t now_ms)
{
    return b->state == DW_BREAKER_HALF_OPEN && b->o.half_open_max_wait_ms > 0 &&
           now_ms - b->half_open_since_ms >= b->o.half_open_max_wait_ms;
}

/* Trials recorded before HALF_OPEN decides: Resilience4j's
 * CircuitBreakerMetrics.forHalfOpen takes min(minimumNumberOfCalls,
 * permittedNumberOfCallsInHalfOpenState). */
static int half_open_decides_at(const struct dw_breaker *b)
{
    int minimum = b->o.minimum_calls < 1 ? 1 : b->o.minimum_calls;
    return minimum < b->o.half_open_calls ? minimum : b->o.half_open_calls;
}

static void grant(struct dw_breaker *b, struct dw_breaker_permit *permit, bool trial)
{
    permit->generation = b->generation;
    permit->held = true;
    permit->trial = trial;
    if (trial)
        b->trials_out++;
}

bool dw_breaker_acquire(struct dw_breaker *b, int64_t now_ms, struct dw_breaker_permit *permit,
                        struct dw_breaker_transition *t)
{
    bool ok = false;

    permit->held = false;
    pthread_mutex_lock(&b->lock);
    no_transition(b, t);
    switch (b->state) {
    case DW_BREAKER_CLOSED:
    case DW_BREAKER_DISABLED:
        grant(b, permit, false);
        ok = true;
        break;
    case DW_BREAKER_FORCED_OPEN:
    case DW_BREAKER_STATE_COUNT:
        break;
    case DW_BREAKER_OPEN:
        if (now_ms - b->opened_at_ms < b->o.open_wait_ms)
            break;
        set_state(b, DW_BREAKER_HALF_OPEN, now_ms, t);
        grant(b, permit, true);
        ok = true;
        break;
    case DW_BREAKER_HALF_OPEN:
        if (half_open_expired(b, now_ms)) {
            /* The trials never all reported: open again rather than stay
             * half-open for ever. Their permits are now stale. */
            set_state(b, DW_BREAKER_OPEN, now_ms, t);
            break;
        }
        if (b->trials_out + b->trials_done < b->o.half_open_calls) {
            grant(b, permit, true);
            ok = true;
        }
        break;
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

int dw_breaker_free_permits(struct dw_breaker *b, int64_t now_ms)
{
    int n = 0;
    pthread_mutex_lock(&b->lock);
    switch (b->state) {
    case DW_BREAKER_CLOSED:
    case DW_BREAKER_DISABLED:
        n = -1;
        break;
    case DW_BREAKER_FORCED_OPEN:
    case DW_BREAKER_STATE_COUNT:
        break;
    case DW_BREAKER_OPEN:
        if (now_ms - b->opened_at_ms >= b->o.open_wait_ms)
            n = b->o.half_open_calls;
        break;
    case DW_BREAKER_HALF_OPEN:
        if (b->o.half_open_max_wait_ms > 0 &&
            now_ms - b->half_open_since_ms >= b->o.half_open_max_wait_ms)
            break;
        n = b->o.half_open_calls - b->trials_out - b->trials_done;
        if (n < 0)
            n = 0;
        break;
    }
    pthread_mutex_unlock(&b->lock);
    return n;
}

/* A permit of the current state that is still out: gives it back. */
static bool take_back(struct dw_breaker *b, struct dw_breaker_permit *permit)
{
    bool current = permit->held && permit->generation == b->generation;
    if (current && permit->trial && b->state == DW_BREAKER_HALF_OPEN)
        b->trials_out--;
    permit->held = false;
    return current;
}

void dw_breaker_record(struct dw_breaker *b, struct dw_breaker_permit *permit,
                       enum dw_breaker_outcome outcome, int64_t duration_ms, int64_t now_ms,
                       struct dw_breaker_transition *t)
{
    unsigned flags = (outcome == DW_BREAKER_FAILURE ? FLAG_FAILED : 0u) |
                     (duration_ms > b->o.slow_call_duration_ms ? FLAG_SLOW : 0u);

    pthread_mutex_lock(&b->lock);
    no_transition(b, t);
    if (half_open_expired(b, now_ms)) {
        /* Too late: docs/resilience.md promises late answers are ignored.
         * The trials' permits go stale with the reopening. */
        set_state(b, DW_BREAKER_OPEN, now_ms, t);
        permit->held = false;
        pthread_mutex_unlock(&b->lock);
        return;
    }
    if (!take_back(b, permit) || outcome == DW_BREAKER_IGNORED) {
        /* Stale, or a permanent answer that says nothing about health. */
        pthread_mutex_unlock(&b->lock);
        return;
    }
    if (b->state == DW_BREAKER_CLOSED) {
        window_add(b, flags, now_ms);
        rates_of(&b->total, minimum_calls(b), &b->failure_rate, &b->slow_call_rate);
        if (b->total.calls >= minimum_calls(b) && trips(b, &b->total))
            set_state(b, DW_BREAKER_OPEN, now_ms, t);
        else
            notify(b);
    } else if (b->state == DW_BREAKER_HALF_OPEN) {
        struct bucket one = {1, (flags & FLAG_FAILED) != 0, (flags & FLAG_SLOW) != 0,
                             (flags & FLAG_FAILED) && (flags & FLAG_SLOW)};
        bucket_add(&b->trial, &one, 1);
        b->trials_done++;
        if (b->trials_done >= half_open_decides_at(b)) {
            rates_of(&b->trial, 1, &b->failure_rate, &b->slow_call_rate);
            bool reopen = trips(b, &b->trial);
            if (reopen)
                b->total = b->trial; /* OPEN reports the trials that reopened it */
            set_state(b, reopen ? DW_BREAKER_OPEN : DW_BREAKER_CLOSED, now_ms, t);
        } else {
            notify(b);
        }
    }
    /* DISABLED counts nothing. */
    pthread_mutex_unlock(&b->lock);
}

void dw_breaker_release(struct dw_breaker *b, struct dw_breaker_permit *permit)
{
    if (!permit->held)
        return;
    pthread_mutex_lock(&b->lock);
    take_back(b, permit);
    pthread_mutex_unlock(&b->lock);
}

bool dw_breaker_transition_to(struct dw_breaker *b, enum dw_breaker_state state, int64_t now_ms,
                              struct dw_breaker_transition *t)
{
    pthread_mutex_lock(&b->lock);
    /* Resilience4j has no CLOSED_TO_HALF_OPEN transition. */
    bool ok = (unsigned)state < DW_BREAKER_STATE_COUNT &&
              !(b->state == DW_BREAKER_CLOSED && state == DW_BREAKER_HALF_OPEN);
    if (ok)
        /* The same state is entered again, as Resilience4j does: CLOSED
         * clears the window, OPEN restarts open_wait_ms, HALF_OPEN restarts
         * the trials. */
        set_state(b, state, now_ms, t);
    else
        no_transition(b, t);
    pthread_mutex_unlock(&b->lock);
    return ok;
}

void dw_breaker_snapshot(struct dw_breaker *b, int64_t now_ms, struct dw_breaker_snapshot *snap)
{
    pthread_mutex_lock(&b->lock);
    if (half_open_expired(b, now_ms))
        set_state(b, DW_BREAKER_OPEN, now_ms, NULL); /* the gauge must not show HALF_OPEN */
    if (b->state == DW_BREAKER_CLOSED) {
        struct bucket view = window_view(b, now_ms);
        snapshot_locked(b, &view, snap);
        rates_of(&view, minimum_calls(b), &snap->failure_rate, &snap->slow_call_rate);
    } else {
        snapshot_locked(b, reported_window(b), snap);
    }
    pthread_mutex_unlock(&b->lock);
}
