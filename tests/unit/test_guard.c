/*
 * One channel's composed guards (src/resilience/guard.c) with a fake
 * clock: the one rule for load a channel sheds (dw_guard_shed) and what
 * it spares, the breaker, the retry budget and the attempts.
 *
 * Shed load is an overload answer (503, a connect that timed out on a full
 * accept queue) from a channel that served a try within
 * DW_GUARD_SERVING_MS. A channel that is down sheds nothing: its breaker
 * opens as it always did.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dw/guard.h"

static void channel_config(struct dw_channel_config *cc, enum dw_limit_mode mode, int pace)
{
    *cc = (struct dw_channel_config){
        .connect_timeout_ms = 1000,
        .timeout_ms = 2000,
        .max_attempts = 3,
        .initial_backoff_ms = 10,
        .multiplier = 2.0,
        .max_backoff_ms = 100,
        .max_retry_after_ms = 5000,
        .max_concurrent = 100,
        .budget_max_tokens = 10,
        .budget_token_ratio = 0.1,
        .deadline_ms = 60000,
        .max_connects_per_second = pace,
        .limit = {.mode = mode, .initial = 8, .min = 1, .tolerance = 2.0, .backoff = 0.9},
        .breaker =
            {
                .mode = DW_BREAKER_MODE_NORMAL,
                .window_type = DW_BREAKER_WINDOW_COUNT,
                .window_size = 20,
                .window_seconds = 60,
                .minimum_calls = 10,
                .failure_rate_threshold = 50,
                .slow_call_rate_threshold = 100,
                .slow_call_duration_ms = 60000,
                .open_wait_ms = 30000,
                .half_open_calls = 1,
            },
    };
}

/* One try through the guards at now_ms: begin, then end with error;
 * returns whether the guard called it shed. */
static bool one_try(struct dw_guard *g, int64_t now_ms, enum dw_errcode error, long status,
                    bool connect_timed_out)
{
    struct dw_guard_ticket t = {0};
    struct dw_guard_verdict v;
    dw_guard_want(g, &t);
    dw_guard_begin(g, &t, now_ms, &v);
    assert_int_equal(v.step, DW_GUARD_GO);
    bool shed = dw_guard_shed(g, error, status, connect_timed_out, now_ms);
    struct dw_breaker_transition tr;
    assert_null(dw_guard_end(g, &t, error, 5, now_ms, 0, shed, &tr));
    assert_null(dw_guard_release(g, &t));
    return shed;
}

static enum dw_breaker_state breaker_state(struct dw_guard *g, int64_t now_ms)
{
    struct dw_breaker_snapshot s;
    dw_guard_breaker_snapshot(g, now_ms, &s);
    return s.state;
}

static void a_serving_channel_sheds_503_without_opening_its_breaker(void **state)
{
    (void)state;
    struct dw_channel_config cc;
    channel_config(&cc, DW_LIMIT_ADAPTIVE, 0);
    struct dw_guard *g = dw_guard_create(DW_CHANNEL_KAKAO, &cc, NULL, NULL, 0);

    assert_false(one_try(g, 1000, DW_EC_NONE, 200, false));
    double tokens = dw_guard_budget_tokens(g);
    /* Fifty 503s in a row while it serves: shed, the breaker stays
     * CLOSED and the budget untouched. */
    for (int i = 0; i < 50; i++)
        assert_true(one_try(g, 1000 + i, DW_EC_HTTP_5XX, 503, false));
    assert_int_equal(breaker_state(g, 1100), DW_BREAKER_CLOSED);
    assert_true(dw_guard_budget_tokens(g) == tokens);
    /* What is not an overload answer is a failure, as before. */
    assert_false(dw_guard_shed(g, DW_EC_HTTP_5XX, 500, false, 1100));
    assert_false(dw_guard_shed(g, DW_EC_BAD_RESPONSE, 200, false, 1100));
    assert_false(dw_guard_shed(g, DW_EC_NONE, 200, false, 1100));
    dw_guard_destroy(g);
}

static void a_channel_that_stopped_serving_opens_its_breaker(void **state)
{
    (void)state;
    struct dw_channel_config cc;
    channel_config(&cc, DW_LIMIT_ADAPTIVE, 0);
    struct dw_guard *g = dw_guard_create(DW_CHANNEL_KAKAO, &cc, NULL, NULL, 0);

    /* Never served: every 503 is the breaker's. */
    assert_false(dw_guard_shed(g, DW_EC_HTTP_5XX, 503, false, 1000));
    assert_false(one_try(g, 1000, DW_EC_NONE, 200, false));
    assert_true(dw_guard_shed(g, DW_EC_HTTP_5XX, 503, false, 1000 + DW_GUARD_SERVING_MS));
    /* Past DW_GUARD_SERVING_MS without a success the channel is down. */
    int64_t later = 1001 + DW_GUARD_SERVING_MS;
    double tokens = dw_guard_budget_tokens(g);
    for (int i = 0; i < 9; i++) /* with the success: minimum_calls */
        assert_false(one_try(g, later + i, DW_EC_HTTP_5XX, 503, false));
    assert_int_equal(breaker_state(g, later + 10), DW_BREAKER_OPEN);
    assert_true(dw_guard_budget_tokens(g) < tokens);
    dw_guard_destroy(g);
}

static void a_fixed_limit_sheds_no_503(void **state)
{
    (void)state;
    struct dw_channel_config cc;
    channel_config(&cc, DW_LIMIT_FIXED, 0);
    struct dw_guard *g = dw_guard_create(DW_CHANNEL_KAKAO, &cc, NULL, NULL, 0);

    assert_false(one_try(g, 1000, DW_EC_NONE, 200, false));
    /* Nothing shrinks on a 503 under a fixed limit: it stays a failure. */
    for (int i = 0; i < 9; i++) /* with the success: minimum_calls */
        assert_false(one_try(g, 1001 + i, DW_EC_HTTP_5XX, 503, false));
    assert_int_equal(breaker_state(g, 1020), DW_BREAKER_OPEN);
    dw_guard_destroy(g);
}

static void a_connect_timeout_is_shed_only_under_a_connect_pace(void **state)
{
    (void)state;
    struct dw_channel_config paced, unpaced;
    channel_config(&paced, DW_LIMIT_FIXED, 200);
    channel_config(&unpaced, DW_LIMIT_ADAPTIVE, 0);
    struct dw_guard *g = dw_guard_create(DW_CHANNEL_NAVER, &paced, NULL, NULL, 0);
    struct dw_guard *u = dw_guard_create(DW_CHANNEL_NAVER, &unpaced, NULL, NULL, 0);

    assert_false(one_try(g, 1000, DW_EC_NONE, 200, false));
    assert_false(one_try(u, 1000, DW_EC_NONE, 200, false));
    /* A SYN a full accept queue dropped, while the listener serves: the
     * pace halves on it, the breaker stays CLOSED. */
    for (int i = 0; i < 30; i++)
        assert_true(one_try(g, 1001 + i, DW_EC_TIMEOUT, 0, true));
    assert_int_equal(breaker_state(g, 1100), DW_BREAKER_CLOSED);
    /* Unpaced, nothing would slow our connects: a connect timeout fails,
     * whatever the limit. */
    assert_false(dw_guard_shed(u, DW_EC_TIMEOUT, 0, true, 1001));
    /* A listener that stopped serving: its connect timeouts are failures. */
    int64_t later = 1001 + DW_GUARD_SERVING_MS;
    for (int i = 0; i < 9; i++) /* with the success: minimum_calls */
        assert_false(one_try(g, later + i, DW_EC_TIMEOUT, 0, true));
    assert_int_equal(breaker_state(g, later + 10), DW_BREAKER_OPEN);
    dw_guard_destroy(g);
    dw_guard_destroy(u);
}

static void shed_tries_do_not_use_up_attempts(void **state)
{
    (void)state;
    struct dw_channel_config cc;
    channel_config(&cc, DW_LIMIT_ADAPTIVE, 0);
    struct dw_guard *g = dw_guard_create(DW_CHANNEL_KAKAO, &cc, NULL, NULL, 0);
    struct dw_guard_ticket t = {0};
    struct dw_guard_verdict gv;
    struct dw_retry_verdict v;

    dw_guard_want(g, &t);
    dw_guard_begin(g, &t, 1000, &gv);
    assert_int_equal(gv.step, DW_GUARD_GO);
    /* The third attempt failed: with two of them shed it may go on ... */
    dw_guard_after_failure(g, &t, 3, 2, DW_EC_HTTP_5XX, "HTTP 503", 0, 1000, 0.5, &v);
    assert_true(v.retry);
    /* ... with none shed it is the last. */
    dw_guard_after_failure(g, &t, 3, 0, DW_EC_HTTP_5XX, "HTTP 503", 0, 1000, 0.5, &v);
    assert_false(v.retry);
    assert_int_equal(v.error, DW_EC_RETRIES_EXHAUSTED);
    assert_null(dw_guard_release(g, &t));
    dw_guard_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_serving_channel_sheds_503_without_opening_its_breaker),
        cmocka_unit_test(a_channel_that_stopped_serving_opens_its_breaker),
        cmocka_unit_test(a_fixed_limit_sheds_no_503),
        cmocka_unit_test(a_connect_timeout_is_shed_only_under_a_connect_pace),
        cmocka_unit_test(shed_tries_do_not_use_up_attempts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
