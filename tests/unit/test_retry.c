/*
 * Retry: the back-off's bounds for each attempt, full jitter staying in
 * range (a seeded random source, so the run is the same every time),
 * Retry-After respected and capped, permanent errors not retried, attempts
 * running out with the last cause, the deadline, and the retry budget
 * (gRPC's token bucket), also under many threads (run under TSan by the
 * test command).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "dw/retry.h"

static const struct dw_retry_policy policy = {
    .max_attempts = 3,
    .initial_backoff_ms = 100,
    .multiplier = 2.0,
    .max_backoff_ms = 1000,
    .max_retry_after_ms = 5000,
};

static void backoff_bounds_for_each_attempt(void **state)
{
    (void)state;
    /* The ceilings: 100, 200, 400, 800, then capped at 1000. */
    static const int64_t ceiling[] = {0, 100, 200, 400, 800, 1000, 1000, 1000};
    for (int a = 1; a < 8; a++) {
        assert_int_equal(dw_retry_backoff_ms(&policy, a, 0.0), 0);
        assert_int_equal(dw_retry_backoff_ms(&policy, a, 0.5), ceiling[a] / 2);
        assert_int_equal(dw_retry_backoff_ms(&policy, a, 0.999999), ceiling[a] - 1);
    }
    /* Huge attempt numbers do not overflow past the cap. */
    assert_int_equal(dw_retry_backoff_ms(&policy, 100000, 0.5), 500);
    /* multiplier 1: constant ceilings. */
    struct dw_retry_policy flat = policy;
    flat.multiplier = 1.0;
    assert_int_equal(dw_retry_backoff_ms(&flat, 7, 0.5), 50);
    /* A random number outside [0, 1) is treated as 0 rather than trusted. */
    assert_int_equal(dw_retry_backoff_ms(&policy, 1, 1.5), 0);
    assert_int_equal(dw_retry_backoff_ms(&policy, 1, -0.5), 0);
}

static void jitter_stays_in_range_and_spreads(void **state)
{
    (void)state;
    uint64_t rnd = 42;
    for (int a = 1; a <= 6; a++) {
        int64_t ceiling = a == 5 || a == 6 ? 1000 : 100 << (a - 1);
        int64_t lo = ceiling, hi = -1;
        for (int i = 0; i < 10000; i++) {
            int64_t wait = dw_retry_backoff_ms(&policy, a, dw_retry_random(&rnd));
            assert_true(wait >= 0 && wait < ceiling);
            lo = wait < lo ? wait : lo;
            hi = wait > hi ? wait : hi;
        }
        /* Full jitter uses the whole range. */
        assert_true(lo < ceiling / 20);
        assert_true(hi > ceiling - ceiling / 20);
    }
    /* The same seed gives the same numbers. */
    uint64_t a = 7, b = 7;
    for (int i = 0; i < 100; i++) {
        double x = dw_retry_random(&a);
        assert_true(x >= 0.0 && x < 1.0);
        assert_true(x == dw_retry_random(&b));
    }
}

static struct dw_retry_input failed(int attempts, enum dw_errcode error)
{
    return (struct dw_retry_input){
        .attempts = attempts,
        .error = error,
        .message = "HTTP 503 from /api/v1/ads",
        .retry_after_ms = -1,
        .now_ms = 1000,
        .deadline_ms = 0,
        .budget_allows = true,
        .rnd = 0.5,
    };
}

static void transient_errors_are_retried_after_the_backoff(void **state)
{
    (void)state;
    static const enum dw_errcode transient[] = {DW_EC_TIMEOUT, DW_EC_HTTP_5XX, DW_EC_RATE_LIMITED,
                                                DW_EC_CONNECTION};
    struct dw_retry_verdict v;
    for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++) {
        struct dw_retry_input in = failed(2, transient[i]);
        dw_retry_decide(&policy, &in, &v);
        assert_true(v.retry);
        assert_int_equal(v.wait_ms, 100); /* 0.5 * 200 */
        assert_int_equal(v.stop, DW_RETRY_STOP_NONE);
    }
}

static void permanent_errors_are_not_retried(void **state)
{
    (void)state;
    struct dw_retry_verdict v;
    struct dw_retry_input in = failed(1, DW_EC_HTTP_4XX);
    in.message = "HTTP 422 from /v1/media";
    dw_retry_decide(&policy, &in, &v);
    assert_false(v.retry);
    assert_int_equal(v.stop, DW_RETRY_STOP_PERMANENT);
    assert_int_equal(v.error, DW_EC_HTTP_4XX);
    assert_string_equal(v.message, "HTTP 422 from /v1/media");
    in.error = DW_EC_BAD_RESPONSE;
    dw_retry_decide(&policy, &in, &v);
    assert_false(v.retry);
    assert_int_equal(v.error, DW_EC_BAD_RESPONSE);
}

static void retry_after_is_respected_and_capped(void **state)
{
    (void)state;
    struct dw_retry_verdict v;
    struct dw_retry_input in = failed(1, DW_EC_RATE_LIMITED);
    in.retry_after_ms = 1000; /* longer than the jittered back-off (50) */
    dw_retry_decide(&policy, &in, &v);
    assert_true(v.retry);
    assert_int_equal(v.wait_ms, 1000);
    /* A back-off longer than the Retry-After wins. */
    struct dw_retry_policy slow = policy;
    slow.initial_backoff_ms = slow.max_backoff_ms = 4000;
    dw_retry_decide(&slow, &in, &v);
    assert_int_equal(v.wait_ms, 2000);
    /* Exactly the cap is waited for; past it the channel gives up. */
    in.retry_after_ms = 5000;
    dw_retry_decide(&policy, &in, &v);
    assert_true(v.retry);
    assert_int_equal(v.wait_ms, 5000);
    in.retry_after_ms = 30000;
    dw_retry_decide(&policy, &in, &v);
    assert_false(v.retry);
    assert_int_equal(v.stop, DW_RETRY_STOP_RETRY_AFTER);
    assert_int_equal(v.error, DW_EC_RATE_LIMITED);
    assert_non_null(strstr(v.message, "Retry-After 30s exceeds the 5000ms cap"));
    /* Retry-After on another status means nothing. */
    in = failed(1, DW_EC_HTTP_5XX);
    in.retry_after_ms = 3000;
    dw_retry_decide(&policy, &in, &v);
    assert_int_equal(v.wait_ms, 50);
}

static void attempts_run_out_with_the_last_cause(void **state)
{
    (void)state;
    struct dw_retry_verdict v;
    struct dw_retry_input in = failed(3, DW_EC_HTTP_5XX);
    dw_retry_decide(&policy, &in, &v);
    assert_false(v.retry);
    assert_int_equal(v.stop, DW_RETRY_STOP_ATTEMPTS);
    assert_int_equal(v.error, DW_EC_RETRIES_EXHAUSTED);
    assert_string_equal(v.message, "3 attempts; last: HTTP_5XX HTTP 503 from /api/v1/ads");
    struct dw_retry_policy once = policy;
    once.max_attempts = 1;
    in = failed(1, DW_EC_TIMEOUT);
    in.message = "Operation timed out";
    dw_retry_decide(&once, &in, &v);
    assert_string_equal(v.message, "1 attempt; last: TIMEOUT Operation timed out");
}

static void the_deadline_stops_retries(void **state)
{
    (void)state;
    struct dw_retry_verdict v;
    struct dw_retry_input in = failed(1, DW_EC_HTTP_5XX);
    in.deadline_ms = 1051; /* the next try would start at 1050: just in time */
    dw_retry_decide(&policy, &in, &v);
    assert_true(v.retry);
    in.deadline_ms = 1050;
    dw_retry_decide(&policy, &in, &v);
    assert_false(v.retry);
    assert_int_equal(v.stop, DW_RETRY_STOP_DEADLINE);
    assert_int_equal(v.error, DW_EC_RETRIES_EXHAUSTED);
    assert_non_null(strstr(v.message, "deadline reached after 1 attempt; last: HTTP_5XX"));
}

static void budget_exhaustion(void **state)
{
    (void)state;
    struct dw_retry_budget *b = dw_retry_budget_create(10, 0.1);
    assert_true(dw_retry_budget_allows(b));
    assert_true(dw_retry_budget_tokens(b) == 10);
    for (int i = 0; i < 4; i++)
        dw_retry_budget_on_failure(b);
    assert_true(dw_retry_budget_allows(b)); /* 6 > 5 */
    dw_retry_budget_on_failure(b);
    assert_false(dw_retry_budget_allows(b)); /* 5 is not more than half */
    assert_true(dw_retry_budget_tokens(b) == 5);
    dw_retry_budget_on_success(b); /* 5.1 */
    assert_true(dw_retry_budget_allows(b));
    for (int i = 0; i < 100; i++)
        dw_retry_budget_on_failure(b);
    assert_true(dw_retry_budget_tokens(b) == 0); /* never below 0 */
    for (int i = 0; i < 50; i++)
        dw_retry_budget_on_success(b);
    assert_false(dw_retry_budget_allows(b)); /* 50 successes: back to 5.0 */
    assert_true(dw_retry_budget_tokens(b) == 5);
    dw_retry_budget_on_success(b);
    assert_true(dw_retry_budget_allows(b)); /* 5.1: retries again */
    for (int i = 0; i < 1000; i++)
        dw_retry_budget_on_success(b);
    assert_true(dw_retry_budget_tokens(b) == 10); /* never above max_tokens */
    dw_retry_budget_destroy(b);

    /* What the decision does with a spent budget: fail fast. */
    struct dw_retry_verdict v;
    struct dw_retry_input in = failed(1, DW_EC_CONNECTION);
    in.message = "Empty reply from server";
    in.budget_allows = false;
    dw_retry_decide(&policy, &in, &v);
    assert_false(v.retry);
    assert_int_equal(v.stop, DW_RETRY_STOP_BUDGET);
    assert_int_equal(v.error, DW_EC_RETRIES_EXHAUSTED);
    assert_string_equal(v.message,
                        "retry budget spent after 1 attempt; last: CONNECTION Empty reply from "
                        "server");

    /* max_tokens 0: no budget at all. */
    b = dw_retry_budget_create(0, 0.1);
    for (int i = 0; i < 1000; i++)
        dw_retry_budget_on_failure(b);
    assert_true(dw_retry_budget_allows(b));
    dw_retry_budget_destroy(b);
}

/* ---- many threads on one budget ---- */

#define THREADS 8

static void *fail_many(void *arg)
{
    struct dw_retry_budget *b = arg;
    for (int i = 0; i < 1000; i++) {
        dw_retry_budget_on_failure(b);
        dw_retry_budget_on_success(b);
        (void)dw_retry_budget_allows(b);
    }
    return NULL;
}

static void budget_is_exact_under_many_threads(void **state)
{
    (void)state;
    /* Far from both bounds, every update counts: -1 + 0.25 per round. */
    struct dw_retry_budget *b = dw_retry_budget_create(100000, 0.25);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, fail_many, b);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    assert_true(dw_retry_budget_tokens(b) == 100000 - THREADS * 1000 * 0.75);
    dw_retry_budget_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_bounds_for_each_attempt),
        cmocka_unit_test(jitter_stays_in_range_and_spreads),
        cmocka_unit_test(transient_errors_are_retried_after_the_backoff),
        cmocka_unit_test(permanent_errors_are_not_retried),
        cmocka_unit_test(retry_after_is_respected_and_capped),
        cmocka_unit_test(attempts_run_out_with_the_last_cause),
        cmocka_unit_test(the_deadline_stops_retries),
        cmocka_unit_test(budget_exhaustion),
        cmocka_unit_test(budget_is_exact_under_many_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
