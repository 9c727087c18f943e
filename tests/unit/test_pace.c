/*
 * The pace of new connections (src/resilience/pace.c) with a fake clock:
 * the burst, then one token per 1/rate, nothing reserved by asking; a
 * failed connect halves the rate once per overload; connects that work
 * bring it back; the window of connects under way; 0 is unpaced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dw/pace.h"

static void burst_then_the_rate(void **state)
{
    (void)state;
    struct dw_pace p;
    dw_pace_init(&p, 200, 1000); /* a burst of 10, then one per 5 ms */
    for (int i = 0; i < 10; i++)
        assert_int_equal(dw_pace_take(&p, 1000), 0);
    /* Empty: the next token in 5 ms, and asking again takes nothing. */
    assert_in_range(dw_pace_take(&p, 1000), 5, 6);
    assert_in_range(dw_pace_take(&p, 1000), 5, 6);
    assert_int_equal(dw_pace_take(&p, 1005), 0);
    assert_true(dw_pace_take(&p, 1005) > 0);
    /* One token per 5 ms: 20 in the next 100 ms, never more. */
    int got = 0;
    for (int64_t t = 1006; t <= 1105; t++)
        while (dw_pace_take(&p, t) == 0)
            got++;
    assert_in_range(got, 19, 20);
    /* Idle, the bucket fills up to the burst, no more. */
    int burst = 0;
    while (dw_pace_take(&p, 5000) == 0)
        burst++;
    assert_int_equal(burst, 10);
}

static void a_failed_connect_halves_the_rate_once_per_overload(void **state)
{
    (void)state;
    struct dw_pace p;
    dw_pace_init(&p, 200, 0);
    dw_pace_failed(&p, 100);
    assert_true(p.rate == 100);
    dw_pace_failed(&p, 300); /* the same overload: no second cut */
    assert_true(p.rate == 100);
    dw_pace_failed(&p, 100 + DW_PACE_CUT_MS);
    assert_true(p.rate == 50);
    for (int i = 1; i <= 10; i++)
        dw_pace_failed(&p, 100 + (int64_t)i * DW_PACE_CUT_MS * 2);
    assert_true(p.rate == DW_PACE_MIN_RATE);
    /* At 1 a second the next connect after the burst waits about 1 s. */
    assert_int_equal(dw_pace_take(&p, 30000), 0);
    int64_t w = dw_pace_take(&p, 30000);
    assert_in_range(w, 900, 1001);
}

static void connects_that_work_bring_the_rate_back(void **state)
{
    (void)state;
    struct dw_pace p;
    dw_pace_init(&p, 200, 0);
    dw_pace_failed(&p, 0);
    dw_pace_failed(&p, DW_PACE_CUT_MS);
    assert_true(p.rate == 50);
    int n = 0;
    while (p.rate < 200 && n < 1000) {
        dw_pace_connected(&p, 10000);
        n++;
    }
    assert_true(p.rate == 200); /* never above the setting */
    assert_in_range(n, 14, 16); /* a tenth at a time: 1.1^14.5 = 4 */
    dw_pace_connected(&p, 10000);
    assert_true(p.rate == 200);
}

/* A pace of 2000 starts at 200 with a burst of 10, and climbs to 2000 as
 * connects work (about 25 of them); the burst never passes 10. */
static void starts_low_and_climbs(void **state)
{
    (void)state;
    struct dw_pace p;
    dw_pace_init(&p, 2000, 0);
    assert_true(p.rate == DW_PACE_START_RATE);
    int burst = 0;
    while (dw_pace_take(&p, 0) == 0)
        burst++;
    assert_int_equal(burst, 10);
    int n = 0;
    while (p.rate < 2000 && n < 1000) {
        dw_pace_connected(&p, 0);
        n++;
    }
    assert_true(p.rate == 2000);
    assert_in_range(n, 24, 26);
    burst = 0;
    while (dw_pace_take(&p, 60000) == 0)
        burst++;
    assert_int_equal(burst, (int)DW_PACE_MAX_BURST);
}

/* At most DW_PACE_WINDOW connects under way: with tokens to spare, a full
 * window still says "ask again soon" and takes nothing; each way a
 * connect ends frees its place; an end without a begin frees nothing. */
static void the_window_of_connects_under_way(void **state)
{
    (void)state;
    struct dw_pace p;
    dw_pace_init(&p, 1000000, 0);
    p.rate = 1000000; /* tokens are never short here */
    for (int i = 0; i < DW_PACE_WINDOW; i++) {
        assert_int_equal(dw_pace_take(&p, 1000 + i), 0);
        dw_pace_connecting(&p);
    }
    assert_int_equal(dw_pace_take(&p, 5000), DW_PACE_WINDOW_POLL_MS);
    assert_int_equal(dw_pace_take(&p, 9000), DW_PACE_WINDOW_POLL_MS);
    dw_pace_connected(&p, 9000);
    assert_int_equal(dw_pace_take(&p, 9000), 0);
    dw_pace_connecting(&p);
    assert_int_equal(dw_pace_take(&p, 9001), DW_PACE_WINDOW_POLL_MS);
    dw_pace_abandoned(&p);
    assert_int_equal(dw_pace_take(&p, 9002), 0);
    dw_pace_connecting(&p);
    dw_pace_failed(&p, 9003);
    assert_int_equal(dw_pace_take(&p, 20000), 0);
    dw_pace_connecting(&p);
    assert_int_equal(p.connecting, DW_PACE_WINDOW);
    /* All end; more ends than begins leave the count at 0, not below. */
    for (int i = 0; i < 2 * DW_PACE_WINDOW; i++)
        dw_pace_abandoned(&p);
    assert_int_equal(p.connecting, 0);
    dw_pace_connecting(&p);
    assert_int_equal(p.connecting, 1);
}

static void zero_is_unpaced(void **state)
{
    (void)state;
    struct dw_pace p;
    dw_pace_init(&p, 0, 0);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(dw_pace_take(&p, 0), 0);
    dw_pace_failed(&p, 0);
    assert_int_equal(dw_pace_take(&p, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_the_rate),
        cmocka_unit_test(a_failed_connect_halves_the_rate_once_per_overload),
        cmocka_unit_test(connects_that_work_bring_the_rate_back),
        cmocka_unit_test(starts_low_and_climbs),
        cmocka_unit_test(the_window_of_connects_under_way),
        cmocka_unit_test(zero_is_unpaced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
