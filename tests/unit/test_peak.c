/*
 * The maximum over a sliding window (src/peak.c) with a fake clock: a
 * value counts for the window and then leaves, a lower value never hides
 * a higher one inside the window, and a long gap forgets everything.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dw/peak.h"

/* A window of 8 s in slots of 1 s. */
static void a_peak_stays_for_the_window(void **state)
{
    (void)state;
    struct dw_peak p;
    dw_peak_init(&p, 8000);
    assert_int_equal(dw_peak_update(&p, 1000, 10), 10);
    assert_int_equal(dw_peak_update(&p, 1500, 50), 50);
    /* Lower values later in the window: the peak holds. */
    assert_int_equal(dw_peak_update(&p, 2000, 20), 50);
    assert_int_equal(dw_peak_update(&p, 8999, 5), 50);
    /* The 50 was in slot 1 (1,000 to 1,999 ms): gone once slot 9 begins. */
    assert_int_equal(dw_peak_update(&p, 9000, 5), 20);
    assert_int_equal(dw_peak_update(&p, 10000, 5), 5);
    /* A higher value is the peak at once. */
    assert_int_equal(dw_peak_update(&p, 10001, 70), 70);
}

/* After a gap longer than the window nothing old counts, though the slots
 * that held it were never overwritten. */
static void a_long_gap_forgets(void **state)
{
    (void)state;
    struct dw_peak p;
    dw_peak_init(&p, 8000);
    for (int64_t t = 0; t < 8000; t += 1000)
        dw_peak_update(&p, t, 100 + t / 1000);
    assert_int_equal(dw_peak_update(&p, 7999, 1), 107);
    /* 23 s on: slots 0 to 7 were last written 16 or more slots ago. */
    assert_int_equal(dw_peak_update(&p, 31000, 3), 3);
}

/* Slots never written count for nothing, even against values below 0. */
static void empty_slots_are_not_zeros(void **state)
{
    (void)state;
    struct dw_peak p;
    dw_peak_init(&p, 8000);
    assert_int_equal(dw_peak_update(&p, 0, -5), -5);
    assert_int_equal(dw_peak_update(&p, 3000, -7), -5);
}

/* A window shorter than the slots still works (1 ms slots). */
static void a_tiny_window(void **state)
{
    (void)state;
    struct dw_peak p;
    dw_peak_init(&p, 2);
    assert_int_equal(dw_peak_update(&p, 0, 9), 9);
    assert_int_equal(dw_peak_update(&p, 7, 1), 9);
    assert_int_equal(dw_peak_update(&p, 8, 1), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_peak_stays_for_the_window),
        cmocka_unit_test(a_long_gap_forgets),
        cmocka_unit_test(empty_slots_are_not_zeros),
        cmocka_unit_test(a_tiny_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
