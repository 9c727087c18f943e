/*
 * The circuit breaker's state machine with a fake clock (no test sleeps):
 * minimum calls, inclusive thresholds, slow calls, OPEN rejecting, exactly
 * half_open_calls trials, closing and reopening, FORCED_OPEN and DISABLED,
 * sliding count and time windows, ignored 4xx, stale and released permits,
 * the stuck-half-open guard, the observer; and many threads hammering one
 * breaker (run under TSan by the test command).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dw/breaker.h"

/* A breaker with small, readable settings; tests change what they need. */
static struct dw_breaker_options options(void)
{
    return (struct dw_breaker_options){
        .mode = DW_BREAKER_MODE_NORMAL,
        .window_type = DW_BREAKER_WINDOW_COUNT,
        .window_size = 10,
        .window_seconds = 10,
        .minimum_calls = 10,
        .failure_rate_threshold = 50,
        .slow_call_rate_threshold = 100,
        .slow_call_duration_ms = 100,
        .open_wait_ms = 1000,
        .half_open_calls = 3,
        .half_open_max_wait_ms = 0,
    };
}

static int64_t now; /* the fake clock, in ms */

static enum dw_breaker_state state_of(struct dw_breaker *b)
{
    struct dw_breaker_snapshot s;
    dw_breaker_snapshot(b, now, &s);
    return s.state;
}

/* One permitted call with outcome o that took ms; returns the transition. */
static struct dw_breaker_transition call(struct dw_breaker *b, enum dw_breaker_outcome o, int ms)
{
    struct dw_breaker_permit p;
    struct dw_breaker_transition t;
    assert_true(dw_breaker_acquire(b, now, &p, &t));
    assert_true(p.held);
    dw_breaker_record(b, &p, o, ms, now, &t);
    assert_false(p.held);
    return t;
}

static void calls(struct dw_breaker *b, int n, enum dw_breaker_outcome o)
{
    for (int i = 0; i < n; i++)
        call(b, o, 1);
}

static struct dw_breaker *opened(struct dw_breaker_options o)
{
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);
    calls(b, o.window_size, DW_BREAKER_FAILURE);
    assert_int_equal(state_of(b), DW_BREAKER_OPEN);
    return b;
}

static void fewer_than_minimum_calls_never_open(void **state)
{
    (void)state;
    struct dw_breaker_options o = options();
    o.window_size = 100;
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);
    calls(b, 9, DW_BREAKER_FAILURE); /* 100 % failures, but 9 < 10 */
    struct dw_breaker_snapshot s;
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.state, DW_BREAKER_CLOSED);
    assert_int_equal(s.calls, 9);
    assert_int_equal(s.failed_calls, 9);
    assert_true(s.failure_rate == -1); /* undefined below minimum_calls */
    /* The tenth failure reaches minimum_calls: now it opens. */
    struct dw_breaker_transition t = call(b, DW_BREAKER_FAILURE, 1);
    assert_int_equal(t.from, DW_BREAKER_CLOSED);
    assert_int_equal(t.to, DW_BREAKER_OPEN);
    assert_true(t.failure_rate == 100);
    dw_breaker_destroy(b);
}

static void rate_exactly_at_the_threshold_opens(void **state)
{
    (void)state;
    struct dw_breaker_options o = options();
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);
    calls(b, 5, DW_BREAKER_SUCCESS);
    calls(b, 4, DW_BREAKER_FAILURE);
    assert_int_equal(state_of(b), DW_BREAKER_CLOSED);
    struct dw_breaker_transition t = call(b, DW_BREAKER_FAILURE, 1); /* 5 of 10: 50 % */
    assert_int_equal(t.to, DW_BREAKER_OPEN);
    assert_true(t.failure_rate == 50);
    dw_breaker_destroy(b);

    /* Just below: 4 of 10 against 50 stays closed, and a rate is shown. */
    b = dw_breaker_create(&o, NULL, NULL);
    calls(b, 4, DW_BREAKER_FAILURE);
    calls(b, 6, DW_BREAKER_SUCCESS);
    struct dw_breaker_snapshot s;
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.state, DW_BREAKER_CLOSED);
    assert_true(s.failure_rate == 40);
    dw_breaker_destroy(b);
}

static void slow_calls_open(void **state)
{
    (void)state;
    struct dw_breaker_options o = options();
    o.slow_call_rate_threshold = 50;
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);
    /* Exactly the slow threshold is not slow: strictly longer is. */
    for (int i = 0; i < 5; i++)
        call(b, DW_BREAKER_SUCCESS, 100);
    for (int i = 0; i < 4; i++)
        call(b, DW_BREAKER_SUCCESS, 101);
    struct dw_breaker_snapshot s;
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.slow_calls, 4);
    assert_int_equal(s.state, DW_BREAKER_CLOSED);
    struct dw_breaker_transition t = call(b, DW_BREAKER_SUCCESS, 5000);
    assert_int_equal(t.to, DW_BREAKER_OPEN);
    assert_true(t.slow_call_rate == 50);
    assert_true(t.failure_rate == 0);
    dw_breaker_destroy(b);
}

static void open_rejects_until_open_wait_passes(void **state)
{
    (void)state;
    now = 5000;
    struct dw_breaker *b = opened(options());
    struct dw_breaker_permit p;
    struct dw_breaker_transition t;
    for (int i = 0; i < 100; i++) {
        assert_false(dw_breaker_acquire(b, now, &p, &t));
        assert_false(p.held);
    }
    now += 999;
    assert_false(dw_breaker_acquire(b, now, &p, &t));
    assert_int_equal(t.from, t.to);
    now += 1;
    assert_true(dw_breaker_acquire(b, now, &p, &t));
    assert_int_equal(t.from, DW_BREAKER_OPEN);
    assert_int_equal(t.to, DW_BREAKER_HALF_OPEN);
    assert_true(p.trial);
    dw_breaker_release(b, &p);
    dw_breaker_destroy(b);
}

static void half_open_lets_exactly_the_trials_through(void **state)
{
    (void)state;
    now = 0;
    struct dw_breaker *b = opened(options());
    now += 1000;
    struct dw_breaker_permit p[5];
    struct dw_breaker_transition t;
    for (int i = 0; i < 3; i++)
        assert_true(dw_breaker_acquire(b, now, &p[i], &t));
    for (int i = 0; i < 10; i++)
        assert_false(dw_breaker_acquire(b, now, &p[3], &t));
    assert_int_equal(state_of(b), DW_BREAKER_HALF_OPEN);
    /* A trial that is given back (cancelled) frees its slot for another. */
    dw_breaker_release(b, &p[1]);
    assert_false(p[1].held);
    assert_true(dw_breaker_acquire(b, now, &p[1], &t));
    assert_false(dw_breaker_acquire(b, now, &p[3], &t));
    /* So does an ignored outcome (a 4xx says nothing about health). */
    dw_breaker_record(b, &p[2], DW_BREAKER_IGNORED, 1, now, &t);
    assert_true(dw_breaker_acquire(b, now, &p[2], &t));
    for (int i = 0; i < 3; i++)
        dw_breaker_release(b, &p[i]);
    dw_breaker_destroy(b);
}

/* What the re-drive asks before claiming work: free permits in every
 * state, with no transition made by asking. */
static void free_permits_follow_the_state(void **state)
{
    (void)state;
    now = 0;
    struct dw_breaker_options o = options();
    o.half_open_max_wait_ms = 5000;
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);
    assert_int_equal(dw_breaker_free_permits(b, now), -1);
    calls(b, o.window_size, DW_BREAKER_FAILURE);
    assert_int_equal(dw_breaker_free_permits(b, now), 0);
    now += 999;
    assert_int_equal(dw_breaker_free_permits(b, now), 0);
    now += 1;
    /* Past open_wait: the next acquire would start the trials. Asking
     * does not move the breaker. */
    assert_int_equal(dw_breaker_free_permits(b, now), 3);
    assert_int_equal(state_of(b), DW_BREAKER_OPEN);
    struct dw_breaker_permit p[3];
    struct dw_breaker_transition t;
    assert_true(dw_breaker_acquire(b, now, &p[0], &t));
    assert_int_equal(dw_breaker_free_permits(b, now), 2);
    assert_true(dw_breaker_acquire(b, now, &p[1], &t));
    dw_breaker_record(b, &p[1], DW_BREAKER_SUCCESS, 1, now, &t);
    assert_int_equal(dw_breaker_free_permits(b, now), 1);
    /* A stuck HALF_OPEN lets nothing through until it reopens and waits. */
    now += 5000;
    assert_int_equal(dw_breaker_free_permits(b, now), 0);
    dw_breaker_release(b, &p[0]);
    dw_breaker_transition_to(b, DW_BREAKER_CLOSED, now, &t);
    assert_int_equal(dw_breaker_free_permits(b, now), -1);
    dw_breaker_transition_to(b, DW_BREAKER_FORCED_OPEN, now, &t);
    now += 100000;
    assert_int_equal(dw_breaker_free_permits(b, now), 0);
    dw_breaker_transition_to(b, DW_BREAKER_DISABLED, now, &t);
    assert_int_equal(dw_breaker_free_permits(b, now), -1);
    dw_breaker_destroy(b);
}

static void half_open_success_closes_and_clears_the_window(void **state)
{
    (void)state;
    now = 0;
    struct dw_breaker *b = opened(options());
    now += 1000;
    struct dw_breaker_permit p[3];
    struct dw_breaker_transition t;
    for (int i = 0; i < 3; i++)
        assert_true(dw_breaker_acquire(b, now, &p[i], &t));
    dw_breaker_record(b, &p[0], DW_BREAKER_SUCCESS, 1, now, &t);
    dw_breaker_record(b, &p[1], DW_BREAKER_SUCCESS, 1, now, &t);
    assert_int_equal(t.from, t.to); /* decided only when all three are in */
    dw_breaker_record(b, &p[2], DW_BREAKER_SUCCESS, 1, now, &t);
    assert_int_equal(t.from, DW_BREAKER_HALF_OPEN);
    assert_int_equal(t.to, DW_BREAKER_CLOSED);
    struct dw_breaker_snapshot s;
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.state, DW_BREAKER_CLOSED);
    assert_int_equal(s.calls, 0); /* the failures that opened it are gone */
    assert_true(s.failure_rate == -1);
    /* A fresh window: nine failures do not reopen it. */
    calls(b, 9, DW_BREAKER_FAILURE);
    assert_int_equal(state_of(b), DW_BREAKER_CLOSED);
    dw_breaker_destroy(b);
}

static void half_open_failure_reopens(void **state)
{
    (void)state;
    now = 0;
    struct dw_breaker *b = opened(options());
    now += 1000;
    struct dw_breaker_permit p[3];
    struct dw_breaker_transition t;
    for (int i = 0; i < 3; i++)
        assert_true(dw_breaker_acquire(b, now, &p[i], &t));
    dw_breaker_record(b, &p[0], DW_BREAKER_FAILURE, 1, now, &t);
    dw_breaker_record(b, &p[1], DW_BREAKER_FAILURE, 1, now, &t);
    dw_breaker_record(b, &p[2], DW_BREAKER_SUCCESS, 1, now, &t); /* 2 of 3 failed */
    assert_int_equal(t.from, DW_BREAKER_HALF_OPEN);
    assert_int_equal(t.to, DW_BREAKER_OPEN);
    assert_true(t.failure_rate > 66 && t.failure_rate < 67);
    /* open_wait_ms starts again from the reopening. */
    now += 999;
    assert_false(dw_breaker_acquire(b, now, &p[0], &t));
    now += 1;
    assert_true(dw_breaker_acquire(b, now, &p[0], &t));
    dw_breaker_release(b, &p[0]);
    dw_breaker_destroy(b);
}

static void forced_open_and_disabled(void **state)
{
    (void)state;
    struct dw_breaker_options o = options();
    struct dw_breaker_permit p;
    struct dw_breaker_transition t;

    o.mode = DW_BREAKER_MODE_FORCED_OPEN;
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);
    assert_int_equal(state_of(b), DW_BREAKER_FORCED_OPEN);
    for (now = 0; now < 1000000; now += 10007)
        assert_false(dw_breaker_acquire(b, now, &p, &t));
    assert_int_equal(t.to, DW_BREAKER_FORCED_OPEN); /* no open_wait ends it */
    /* An operator switches it back. */
    dw_breaker_transition_to(b, DW_BREAKER_CLOSED, now, &t);
    assert_int_equal(t.from, DW_BREAKER_FORCED_OPEN);
    assert_int_equal(t.to, DW_BREAKER_CLOSED);
    assert_true(dw_breaker_acquire(b, now, &p, &t));
    dw_breaker_release(b, &p);
    dw_breaker_destroy(b);

    o.mode = DW_BREAKER_MODE_DISABLED;
    b = dw_breaker_create(&o, NULL, NULL);
    calls(b, 1000, DW_BREAKER_FAILURE);
    struct dw_breaker_snapshot s;
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.state, DW_BREAKER_DISABLED);
    assert_int_equal(s.calls, 0); /* counts nothing */
    dw_breaker_transition_to(b, DW_BREAKER_FORCED_OPEN, now, &t);
    assert_false(dw_breaker_acquire(b, now, &p, &t));
    dw_breaker_destroy(b);
}

static void count_window_slides(void **state)
{
    (void)state;
    struct dw_breaker_options o = options();
    o.failure_rate_threshold = 60;
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);
    struct dw_breaker_snapshot s;
    calls(b, 5, DW_BREAKER_FAILURE);
    calls(b, 5, DW_BREAKER_SUCCESS); /* 50 % < 60 % */
    calls(b, 5, DW_BREAKER_SUCCESS); /* the five failures slide out */
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.calls, 10);
    assert_int_equal(s.failed_calls, 0);
    calls(b, 5, DW_BREAKER_FAILURE); /* 5 of the last 10, not 10 of 20 */
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.state, DW_BREAKER_CLOSED);
    assert_int_equal(s.failed_calls, 5);
    call(b, DW_BREAKER_FAILURE, 1); /* 6 of 10 */
    assert_int_equal(state_of(b), DW_BREAKER_OPEN);
    dw_breaker_destroy(b);
}

static void time_window_slides(void **state)
{
    (void)state;
    struct dw_breaker_options o = options();
    o.window_type = DW_BREAKER_WINDOW_TIME;
    o.window_seconds = 10;
    o.minimum_calls = 4;
    o.failure_rate_threshold = 80;
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);
    struct dw_breaker_snapshot s;
    now = 100000;
    calls(b, 3, DW_BREAKER_FAILURE); /* second 100 */
    now += 5000;
    calls(b, 3, DW_BREAKER_SUCCESS); /* second 105: 3 of 6 failed, under 80 % */
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.calls, 6);
    assert_true(s.failure_rate == 50);
    now += 5000; /* second 110: second 100 has left the last 10 seconds */
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.calls, 3);
    assert_int_equal(s.failed_calls, 0);
    assert_true(s.failure_rate == -1); /* 3 < minimum_calls */
    calls(b, 1, DW_BREAKER_FAILURE);
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.calls, 4);
    assert_true(s.failure_rate == 25);
    now += 60000; /* a long silence empties it */
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.calls, 0);
    calls(b, 3, DW_BREAKER_FAILURE);
    assert_int_equal(state_of(b), DW_BREAKER_CLOSED); /* 3 < minimum_calls */
    call(b, DW_BREAKER_FAILURE, 1);
    assert_int_equal(state_of(b), DW_BREAKER_OPEN); /* 4 of 4 in the new window */
    dw_breaker_destroy(b);
}

static void ignored_outcomes_are_not_counted(void **state)
{
    (void)state;
    struct dw_breaker *b = dw_breaker_create(&(struct dw_breaker_options){0}, NULL, NULL);
    dw_breaker_destroy(b); /* zeroed options are clamped, not a crash */

    struct dw_breaker_options o = options();
    b = dw_breaker_create(&o, NULL, NULL);
    calls(b, 100, DW_BREAKER_IGNORED);
    struct dw_breaker_snapshot s;
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.state, DW_BREAKER_CLOSED);
    assert_int_equal(s.calls, 0);
    dw_breaker_destroy(b);
}

static void late_outcomes_of_an_earlier_state_are_dropped(void **state)
{
    (void)state;
    now = 0;
    struct dw_breaker_options o = options();
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);
    struct dw_breaker_permit early;
    struct dw_breaker_transition t;
    assert_true(dw_breaker_acquire(b, now, &early, &t));
    calls(b, 10, DW_BREAKER_FAILURE); /* opens */
    now += 1000;
    struct dw_breaker_permit trial;
    assert_true(dw_breaker_acquire(b, now, &trial, &t)); /* HALF_OPEN */
    /* The call from CLOSED ends now: it must not count as a trial. */
    dw_breaker_record(b, &early, DW_BREAKER_FAILURE, 1, now, &t);
    assert_int_equal(t.from, t.to);
    assert_false(early.held);
    struct dw_breaker_snapshot s;
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.state, DW_BREAKER_HALF_OPEN);
    assert_int_equal(s.calls, 0);
    /* Recording or releasing twice does nothing either. */
    dw_breaker_record(b, &early, DW_BREAKER_FAILURE, 1, now, &t);
    dw_breaker_release(b, &early);
    dw_breaker_release(b, &trial);
    dw_breaker_destroy(b);
}

static void stuck_half_open_reopens(void **state)
{
    (void)state;
    now = 0;
    struct dw_breaker_options o = options();
    o.half_open_max_wait_ms = 5000;
    struct dw_breaker *b = opened(o);
    now += 1000;
    struct dw_breaker_permit p[3], q;
    struct dw_breaker_transition t;
    for (int i = 0; i < 3; i++)
        assert_true(dw_breaker_acquire(b, now, &p[i], &t));
    /* The trials never report. Until the limit, nothing else goes through. */
    now += 4999;
    assert_false(dw_breaker_acquire(b, now, &q, &t));
    assert_int_equal(t.to, DW_BREAKER_HALF_OPEN);
    now += 1;
    assert_false(dw_breaker_acquire(b, now, &q, &t));
    assert_int_equal(t.from, DW_BREAKER_HALF_OPEN);
    assert_int_equal(t.to, DW_BREAKER_OPEN);
    /* The lost trials report at last: stale, ignored. */
    for (int i = 0; i < 3; i++)
        dw_breaker_record(b, &p[i], DW_BREAKER_SUCCESS, 1, now, &t);
    assert_int_equal(state_of(b), DW_BREAKER_OPEN);
    /* And after open_wait_ms a new round of trials starts. */
    now += 1000;
    assert_true(dw_breaker_acquire(b, now, &q, &t));
    assert_int_equal(t.to, DW_BREAKER_HALF_OPEN);
    dw_breaker_release(b, &q);
    dw_breaker_destroy(b);
}

struct seen {
    int n;
    struct dw_breaker_snapshot last;
    enum dw_breaker_state states[64];
};

static void observe(void *opaque, const struct dw_breaker_snapshot *snap)
{
    struct seen *s = opaque;
    if (s->n < 64)
        s->states[s->n] = snap->state;
    s->n++;
    s->last = *snap;
}

/* Resilience4j parity (CircuitBreakerMetrics.forHalfOpen): HALF_OPEN
 * decides once min(minimum_calls, half_open_calls) trials are in. With
 * minimum_calls 2 and 4 trials, two failures reopen at once, two
 * successes close at once. */
static void half_open_decides_after_minimum_calls(void **state)
{
    (void)state;
    struct dw_breaker_options o = options();
    o.window_size = 2;
    o.minimum_calls = 2;
    o.half_open_calls = 4;
    struct dw_breaker_permit p[4];
    struct dw_breaker_transition t;
    for (int round = 0; round < 2; round++) {
        enum dw_breaker_outcome outcome = round == 0 ? DW_BREAKER_FAILURE : DW_BREAKER_SUCCESS;
        now = 0;
        struct dw_breaker *b = opened(o);
        now += 1000;
        for (int i = 0; i < 4; i++)
            assert_true(dw_breaker_acquire(b, now, &p[i], &t));
        dw_breaker_record(b, &p[0], outcome, 1, now, &t);
        assert_int_equal(t.to, DW_BREAKER_HALF_OPEN);
        dw_breaker_record(b, &p[1], outcome, 1, now, &t);
        assert_int_equal(t.from, DW_BREAKER_HALF_OPEN);
        assert_int_equal(t.to, round == 0 ? DW_BREAKER_OPEN : DW_BREAKER_CLOSED);
        /* The two trials still out are stale now. */
        dw_breaker_record(b, &p[2], DW_BREAKER_SUCCESS, 1, now, &t);
        dw_breaker_record(b, &p[3], DW_BREAKER_SUCCESS, 1, now, &t);
        assert_int_equal(state_of(b), round == 0 ? DW_BREAKER_OPEN : DW_BREAKER_CLOSED);
        dw_breaker_destroy(b);
    }
    /* minimum_calls above half_open_calls: all trials decide, as before. */
    o.window_size = 10;
    o.minimum_calls = 10;
    o.half_open_calls = 3;
    now = 0;
    struct dw_breaker *b = opened(o);
    now += 1000;
    for (int i = 0; i < 3; i++)
        assert_true(dw_breaker_acquire(b, now, &p[i], &t));
    dw_breaker_record(b, &p[0], DW_BREAKER_FAILURE, 1, now, &t);
    dw_breaker_record(b, &p[1], DW_BREAKER_FAILURE, 1, now, &t);
    assert_int_equal(t.to, DW_BREAKER_HALF_OPEN);
    dw_breaker_record(b, &p[2], DW_BREAKER_FAILURE, 1, now, &t);
    assert_int_equal(t.to, DW_BREAKER_OPEN);
    dw_breaker_destroy(b);
}

/* Trials that answer after half_open_max_wait_ms do not decide anything:
 * the breaker reopens (docs/resilience.md: "late answers are ignored"),
 * and the state gauge (the observer) never shows HALF_OPEN past the limit
 * once the breaker is looked at. */
static void late_trials_after_max_wait_are_ignored(void **state)
{
    (void)state;
    struct dw_breaker_options o = options();
    o.half_open_max_wait_ms = 5000;
    struct dw_breaker_permit p[3];
    struct dw_breaker_transition t;

    now = 0;
    struct dw_breaker *b = opened(o);
    now += 1000;
    for (int i = 0; i < 3; i++)
        assert_true(dw_breaker_acquire(b, now, &p[i], &t));
    now += 5000; /* the limit passes, then every trial succeeds */
    dw_breaker_record(b, &p[0], DW_BREAKER_SUCCESS, 1, now, &t);
    assert_int_equal(t.from, DW_BREAKER_HALF_OPEN);
    assert_int_equal(t.to, DW_BREAKER_OPEN);
    dw_breaker_record(b, &p[1], DW_BREAKER_SUCCESS, 1, now, &t);
    dw_breaker_record(b, &p[2], DW_BREAKER_SUCCESS, 1, now, &t);
    assert_int_equal(state_of(b), DW_BREAKER_OPEN);
    dw_breaker_destroy(b);

    struct seen *seen = calloc(1, sizeof(*seen));
    b = dw_breaker_create(&o, observe, seen);
    now = 0;
    calls(b, o.window_size, DW_BREAKER_FAILURE);
    now += 1000;
    assert_true(dw_breaker_acquire(b, now, &p[0], &t));
    assert_int_equal(seen->last.state, DW_BREAKER_HALF_OPEN);
    now += 5000;
    struct dw_breaker_snapshot snap;
    dw_breaker_snapshot(b, now, &snap);
    assert_int_equal(snap.state, DW_BREAKER_OPEN);
    assert_int_equal(seen->last.state, DW_BREAKER_OPEN);
    dw_breaker_record(b, &p[0], DW_BREAKER_SUCCESS, 1, now, &t); /* stale */
    assert_int_equal(state_of(b), DW_BREAKER_OPEN);
    dw_breaker_destroy(b);
    free(seen);
}

/* dw_breaker_transition_to follows Resilience4j's StateTransition table:
 * CLOSED to HALF_OPEN is refused; the same state is entered again. */
static void transition_to_follows_resilience4j(void **state)
{
    (void)state;
    struct dw_breaker_options o = options();
    struct dw_breaker_transition t;
    struct dw_breaker_permit p;
    struct dw_breaker_snapshot s;
    now = 0;
    struct dw_breaker *b = dw_breaker_create(&o, NULL, NULL);

    assert_false(dw_breaker_transition_to(b, DW_BREAKER_HALF_OPEN, now, &t));
    assert_int_equal(t.from, DW_BREAKER_CLOSED);
    assert_int_equal(t.to, DW_BREAKER_CLOSED);
    assert_int_equal(state_of(b), DW_BREAKER_CLOSED);
    assert_false(dw_breaker_transition_to(b, DW_BREAKER_STATE_COUNT, now, &t));

    /* CLOSED to CLOSED clears the window. */
    calls(b, 9, DW_BREAKER_FAILURE);
    assert_true(dw_breaker_transition_to(b, DW_BREAKER_CLOSED, now, &t));
    dw_breaker_snapshot(b, now, &s);
    assert_int_equal(s.calls, 0);
    calls(b, 9, DW_BREAKER_FAILURE); /* 9 of a fresh window: still closed */
    assert_int_equal(state_of(b), DW_BREAKER_CLOSED);

    /* OPEN to OPEN restarts open_wait_ms. */
    assert_true(dw_breaker_transition_to(b, DW_BREAKER_OPEN, now, &t));
    now += 900;
    assert_true(dw_breaker_transition_to(b, DW_BREAKER_OPEN, now, &t));
    assert_int_equal(t.from, DW_BREAKER_OPEN);
    assert_int_equal(t.to, DW_BREAKER_OPEN);
    now += 900; /* 1,800 ms after the first, 900 after the second */
    assert_false(dw_breaker_acquire(b, now, &p, &t));
    now += 100;
    assert_true(dw_breaker_acquire(b, now, &p, &t));
    assert_int_equal(t.to, DW_BREAKER_HALF_OPEN);

    /* HALF_OPEN to HALF_OPEN restarts the trials: the one out goes stale
     * and all three slots are free again. */
    assert_true(dw_breaker_transition_to(b, DW_BREAKER_HALF_OPEN, now, &t));
    struct dw_breaker_permit q[3];
    for (int i = 0; i < 3; i++)
        assert_true(dw_breaker_acquire(b, now, &q[i], &t));
    dw_breaker_record(b, &p, DW_BREAKER_FAILURE, 1, now, &t); /* stale */
    assert_int_equal(t.to, DW_BREAKER_HALF_OPEN);
    for (int i = 0; i < 3; i++)
        dw_breaker_release(b, &q[i]);
    /* Every other state reaches HALF_OPEN. */
    assert_true(dw_breaker_transition_to(b, DW_BREAKER_FORCED_OPEN, now, &t));
    assert_true(dw_breaker_transition_to(b, DW_BREAKER_HALF_OPEN, now, &t));
    assert_true(dw_breaker_transition_to(b, DW_BREAKER_DISABLED, now, &t));
    assert_true(dw_breaker_transition_to(b, DW_BREAKER_HALF_OPEN, now, &t));
    dw_breaker_destroy(b);
}

static void observer_sees_every_change_in_order(void **state)
{
    (void)state;
    now = 0;
    struct seen seen = {0};
    struct dw_breaker_options o = options();
    struct dw_breaker *b = dw_breaker_create(&o, observe, &seen);
    assert_int_equal(seen.n, 1); /* the first snapshot */
    assert_int_equal(seen.last.state, DW_BREAKER_CLOSED);
    calls(b, 10, DW_BREAKER_FAILURE);
    assert_int_equal(seen.n, 11); /* nine window changes, then the opening */
    assert_int_equal(seen.last.state, DW_BREAKER_OPEN);
    assert_true(seen.last.failure_rate == 100);
    assert_int_equal(seen.last.failed_calls, 10);
    now += 1000;
    calls(b, 3, DW_BREAKER_SUCCESS);
    assert_int_equal(seen.states[11], DW_BREAKER_HALF_OPEN);
    assert_int_equal(seen.last.state, DW_BREAKER_CLOSED);
    assert_string_equal(dw_breaker_state_name(DW_BREAKER_HALF_OPEN), "HALF_OPEN");
    assert_string_equal(dw_breaker_state_name(DW_BREAKER_FORCED_OPEN), "FORCED_OPEN");
    dw_breaker_destroy(b);
}

/* ---- many threads on one breaker ---- */

#define THREADS 8
#define ROUNDS  200

struct hammer {
    struct dw_breaker *b;
    pthread_barrier_t start, done;
    _Atomic int64_t clock;
    atomic_int granted; /* trial permits given this round */
    atomic_int held;    /* trial permits out right now */
    atomic_int max_held;
    atomic_int closed_calls; /* permits given while CLOSED, in the free-for-all */
};

/* Each round: every thread asks for a permit at once while the breaker is
 * half-open; exactly half_open_calls get one. The winners then fail, which
 * reopens it; the main thread moves the clock past open_wait_ms. */
static void *trial_thread(void *arg)
{
    struct hammer *h = arg;
    for (int r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&h->start);
        struct dw_breaker_permit p;
        struct dw_breaker_transition t;
        int64_t t_now = atomic_load(&h->clock);
        if (dw_breaker_acquire(h->b, t_now, &p, &t)) {
            atomic_fetch_add(&h->granted, 1);
            int held = atomic_fetch_add(&h->held, 1) + 1;
            int max = atomic_load(&h->max_held);
            while (held > max && !atomic_compare_exchange_weak(&h->max_held, &max, held))
                ;
        }
        pthread_barrier_wait(&h->done); /* everyone has asked */
        if (p.held) {
            atomic_fetch_sub(&h->held, 1);
            dw_breaker_record(h->b, &p, DW_BREAKER_FAILURE, 1, t_now, &t);
        }
        pthread_barrier_wait(&h->done); /* everyone has reported */
    }
    return NULL;
}

static void exact_trials_under_many_threads(void **state)
{
    (void)state;
    static struct hammer h;
    struct dw_breaker_options o = options();
    o.half_open_calls = 3;
    memset(&h, 0, sizeof(h));
    now = 0;
    h.b = opened(o);
    pthread_barrier_init(&h.start, NULL, THREADS + 1);
    pthread_barrier_init(&h.done, NULL, THREADS + 1);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, trial_thread, &h);
    int64_t clock = 0;
    for (int r = 0; r < ROUNDS; r++) {
        clock += 1000; /* open_wait_ms has passed: the next asks go half-open */
        atomic_store(&h.clock, clock);
        atomic_store(&h.granted, 0);
        pthread_barrier_wait(&h.start);
        pthread_barrier_wait(&h.done);
        assert_int_equal(atomic_load(&h.granted), 3);
        pthread_barrier_wait(&h.done);
        now = clock;
        assert_int_equal(state_of(h.b), DW_BREAKER_OPEN); /* 3 failed trials reopened it */
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&h.max_held), 3);
    pthread_barrier_destroy(&h.start);
    pthread_barrier_destroy(&h.done);
    dw_breaker_destroy(h.b);
}

/* A free-for-all: threads acquire, record random outcomes or release, and
 * the clock runs; trial permits out never exceed half_open_calls and every
 * permit comes back. */
static void *chaos_thread(void *arg)
{
    struct hammer *h = arg;
    uint64_t x = (uint64_t)(uintptr_t)&x | 1;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t t_now = atomic_fetch_add(&h->clock, (int64_t)(x % 3));
        struct dw_breaker_permit p;
        struct dw_breaker_transition t;
        if (!dw_breaker_acquire(h->b, t_now, &p, &t))
            continue;
        if (p.trial) {
            int held = atomic_fetch_add(&h->held, 1) + 1;
            int max = atomic_load(&h->max_held);
            while (held > max && !atomic_compare_exchange_weak(&h->max_held, &max, held))
                ;
        } else {
            atomic_fetch_add(&h->closed_calls, 1);
        }
        /* Count it back before the breaker may hand the slot on. */
        if (p.trial)
            atomic_fetch_sub(&h->held, 1);
        switch (x % 5) {
        case 0:
            dw_breaker_release(h->b, &p);
            break;
        case 1:
            dw_breaker_record(h->b, &p, DW_BREAKER_IGNORED, 1, t_now, &t);
            break;
        case 2:
        case 3:
            dw_breaker_record(h->b, &p, DW_BREAKER_FAILURE, (int)(x % 200), t_now, &t);
            break;
        default:
            dw_breaker_record(h->b, &p, DW_BREAKER_SUCCESS, (int)(x % 200), t_now, &t);
            break;
        }
    }
    return NULL;
}

static void random_use_under_many_threads(void **state)
{
    (void)state;
    static struct hammer h;
    struct dw_breaker_options o = options();
    o.open_wait_ms = 50;
    o.half_open_calls = 2;
    memset(&h, 0, sizeof(h));
    h.b = dw_breaker_create(&o, NULL, NULL);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, chaos_thread, &h);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    print_message("  %d closed-state permits, at most %d trials out at once\n",
                  atomic_load(&h.closed_calls), atomic_load(&h.max_held));
    assert_true(atomic_load(&h.max_held) <= 2);
    assert_int_equal(atomic_load(&h.held), 0);
    dw_breaker_destroy(h.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fewer_than_minimum_calls_never_open),
        cmocka_unit_test(rate_exactly_at_the_threshold_opens),
        cmocka_unit_test(slow_calls_open),
        cmocka_unit_test(open_rejects_until_open_wait_passes),
        cmocka_unit_test(half_open_lets_exactly_the_trials_through),
        cmocka_unit_test(free_permits_follow_the_state),
        cmocka_unit_test(half_open_success_closes_and_clears_the_window),
        cmocka_unit_test(half_open_failure_reopens),
        cmocka_unit_test(forced_open_and_disabled),
        cmocka_unit_test(count_window_slides),
        cmocka_unit_test(time_window_slides),
        cmocka_unit_test(ignored_outcomes_are_not_counted),
        cmocka_unit_test(late_outcomes_of_an_earlier_state_are_dropped),
        cmocka_unit_test(stuck_half_open_reopens),
        cmocka_unit_test(half_open_decides_after_minimum_calls),
        cmocka_unit_test(late_trials_after_max_wait_are_ignored),
        cmocka_unit_test(transition_to_follows_resilience4j),
        cmocka_unit_test(observer_sees_every_change_in_order),
        cmocka_unit_test(exact_trials_under_many_threads),
        cmocka_unit_test(random_use_under_many_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
