/*
 * The pace of new connections (src/resilience/pace.c) with a fake clock:
 * the burst, then one token per 1/rate; waiters reserve tokens in turn; a
 * failed connect halves the rate once per overload; connects that work
 * bring it back; 0 is unpaced.
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
    /* Waiters reserve tokens in turn: 5, 10, 15 ms. */
    int64_t w1 = dw_pace_take(&p, 1000);
    int64_t w2 = dw_pace_take(&p, 1000);
    int64_t w3 = dw_pace_take(&p, 1000);
    assert_in_range(w1, 5, 6);
    assert_in_range(w2, 10, 11);
    assert_in_range(w3, 15, 16);
    /* 100 ms later the debt is paid and a burst is back, no bigger. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(dw_pace_take(&p, 1115), 0);
    assert_true(dw_pace_take(&p, 1115) > 0);
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
    assert_true(n < 40);        /* a twentieth at a time: fast, not one by one */
    dw_pace_connected(&p, 10000);
    assert_true(p.rate == 200);
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
        cmocka_unit_test(zero_is_unpaced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
