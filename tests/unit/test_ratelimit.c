/*
 * The rate limiter with a fake clock: limit_for_period permits per cycle,
 * cycles aligned to the limiter's creation, no carry-over of unused
 * permits, reservations in later cycles with growing waits for successive
 * callers (and the refill paying them first), a bounded wait that reserves
 * nothing, and off when limit_for_period <= 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dw/ratelimit.h"

static struct dw_ratelimit *limiter(int per_period, int64_t period_ms, int64_t created_ms)
{
    struct dw_ratelimit_config c = {.limit_for_period = per_period,
                                    .limit_refresh_period_ms = period_ms};
    return dw_ratelimit_create(&c, created_ms);
}

static void permits_per_period(void **state)
{
    (void)state;
    struct dw_ratelimit *r = limiter(3, 1000, 0);
    assert_true(dw_ratelimit_enabled(r));
    assert_int_equal(dw_ratelimit_available(r, 0), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dw_ratelimit_reserve_within(r, 10 + i, 0), 0);
    /* The fourth in the same cycle is not let through now. */
    assert_int_equal(dw_ratelimit_reserve_within(r, 500, 0), -1);
    assert_int_equal(dw_ratelimit_available(r, 999), 0);
    /* A new cycle: three more, and no more. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(dw_ratelimit_reserve_within(r, 1000 + i, 0), 0);
    assert_int_equal(dw_ratelimit_reserve_within(r, 1999, 0), -1);
    dw_ratelimit_destroy(r);
    dw_ratelimit_destroy(NULL);
}

static void cycles_are_aligned_to_creation(void **state)
{
    (void)state;
    /* Created at 250: cycles are [250, 1250), [1250, 2250), ... */
    struct dw_ratelimit *r = limiter(1, 1000, 250);
    assert_int_equal(dw_ratelimit_reserve(r, 1200), 0); /* the first cycle's permit */
    /* None left: the wait runs to the next boundary, 1250, not to 1200 +
     * 1000 nor to 2000. */
    assert_int_equal(dw_ratelimit_reserve_within(r, 1240, 0), -1);
    assert_int_equal(dw_ratelimit_reserve(r, 1240), 10);
    /* That reservation was the 1250 cycle's permit: the next is 2250's. */
    assert_int_equal(dw_ratelimit_reserve(r, 1300), 950);
    assert_int_equal(dw_ratelimit_available(r, 1300), -1);
    dw_ratelimit_destroy(r);
}

static void unused_permits_do_not_carry_over(void **state)
{
    (void)state;
    struct dw_ratelimit *r = limiter(2, 100, 0);
    /* Idle for ten cycles, then a rush: still only 2 at once. */
    assert_int_equal(dw_ratelimit_available(r, 1050), 2);
    assert_int_equal(dw_ratelimit_reserve(r, 1050), 0);
    assert_int_equal(dw_ratelimit_reserve(r, 1050), 0);
    assert_int_equal(dw_ratelimit_reserve(r, 1050), 50);
    /* One permit left unused in a cycle does not make three in the next. */
    struct dw_ratelimit *r2 = limiter(2, 100, 0);
    assert_int_equal(dw_ratelimit_reserve(r2, 10), 0);
    assert_int_equal(dw_ratelimit_available(r2, 150), 2);
    /* And a very long idle time neither overflows nor carries over. */
    assert_int_equal(dw_ratelimit_available(r2, INT64_MAX / 2), 2);
    dw_ratelimit_destroy(r2);
    dw_ratelimit_destroy(r);
}

static void reservations_queue_into_later_cycles(void **state)
{
    (void)state;
    struct dw_ratelimit *r = limiter(2, 1000, 0);
    int64_t waits[9];
    for (int i = 0; i < 9; i++)
        waits[i] = dw_ratelimit_reserve(r, 100);
    /* Two per cycle, in the order they asked: 0 0 | 900 900 | 1900 1900 |
     * 2900 2900 | 3900. */
    const int64_t want[9] = {0, 0, 900, 900, 1900, 1900, 2900, 2900, 3900};
    for (int i = 0; i < 9; i++)
        assert_int_equal(waits[i], want[i]);
    assert_int_equal(dw_ratelimit_available(r, 100), -7);
    /* The refill pays the reservations first: at 1000 the two waiters of
     * cycle 1 hold its permits, so a newcomer queues behind the others. */
    assert_int_equal(dw_ratelimit_available(r, 1000), -5);
    assert_int_equal(dw_ratelimit_reserve(r, 1000), 3000); /* cycle 4, with the ninth */
    assert_int_equal(dw_ratelimit_available(r, 4999), 0);
    /* Cycle 5 owes nothing: a full set again. */
    assert_int_equal(dw_ratelimit_available(r, 5000), 2);
    dw_ratelimit_destroy(r);
}

static void bounded_wait_reserves_nothing(void **state)
{
    (void)state;
    struct dw_ratelimit *r = limiter(1, 1000, 0);
    assert_int_equal(dw_ratelimit_reserve_within(r, 0, 0), 0);
    assert_int_equal(dw_ratelimit_reserve_within(r, 0, 999), -1);
    assert_int_equal(dw_ratelimit_available(r, 0), 0); /* nothing was taken */
    assert_int_equal(dw_ratelimit_reserve_within(r, 0, 1000), 1000);
    assert_int_equal(dw_ratelimit_available(r, 0), -1);
    /* The next one would wait 2000: more than it will. */
    assert_int_equal(dw_ratelimit_reserve_within(r, 0, 1999), -1);
    assert_int_equal(dw_ratelimit_reserve_within(r, 0, 2000), 2000);
    dw_ratelimit_destroy(r);
}

static void off_when_limit_for_period_is_zero(void **state)
{
    (void)state;
    for (int per = -1; per <= 0; per++) {
        struct dw_ratelimit *r = limiter(per, 1000, 0);
        assert_false(dw_ratelimit_enabled(r));
        for (int i = 0; i < 10000; i++)
            assert_int_equal(dw_ratelimit_reserve(r, i / 10), 0);
        assert_int_equal(dw_ratelimit_reserve_within(r, 5, 0), 0);
        assert_int_equal(dw_ratelimit_available(r, 5), 0);
        dw_ratelimit_destroy(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(permits_per_period),
        cmocka_unit_test(cycles_are_aligned_to_creation),
        cmocka_unit_test(unused_permits_do_not_carry_over),
        cmocka_unit_test(reservations_queue_into_later_cycles),
        cmocka_unit_test(bounded_wait_reserves_nothing),
        cmocka_unit_test(off_when_limit_for_period_is_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
