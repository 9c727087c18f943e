/*
 * The retry policy (dw/backoff.h) with a fake clock: waits double from the
 * minimum to the cap, each shortened by at most a quarter; nothing is due
 * before its time; a success starts over; a loss is forgiven once; the
 * jitter spreads clients apart yet is reproducible from a seed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dw/backoff.h"

static void assert_wait_within(int wait, int nominal)
{
    if (wait < nominal - nominal / 4 || wait > nominal)
        print_error("wait %d not within [%d, %d]\n", wait, nominal - nominal / 4, nominal);
    assert_true(wait >= nominal - nominal / 4 && wait <= nominal);
}

static void test_doubles_to_the_cap(void **state)
{
    (void)state;
    static const int nominal[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
    struct dw_backoff b;
    dw_backoff_init(&b, 100, 5000, 42);
    int64_t now = 1000000;
    assert_true(dw_backoff_due(&b, now));
    for (size_t i = 0; i < sizeof(nominal) / sizeof(nominal[0]); i++) {
        int wait = dw_backoff_failed(&b, now);
        assert_wait_within(wait, nominal[i]);
        assert_true(dw_backoff_next_at(&b) == now + wait);
        assert_false(dw_backoff_due(&b, now));
        assert_false(dw_backoff_due(&b, now + wait - 1));
        assert_true(dw_backoff_due(&b, now + wait));
        now += wait;
    }
}

static void test_success_starts_over(void **state)
{
    (void)state;
    struct dw_backoff b;
    dw_backoff_init(&b, 100, 5000, 7);
    int64_t now = 50;
    for (int i = 0; i < 5; i++)
        now += dw_backoff_failed(&b, now);
    dw_backoff_succeeded(&b);
    assert_true(dw_backoff_due(&b, now));
    assert_true(dw_backoff_next_at(&b) == 0);
    assert_wait_within(dw_backoff_failed(&b, now), 100);
}

/* A loss after a success: one attempt at once; losing again before a
 * success waits as a failure does. */
static void test_loss_forgiven_once(void **state)
{
    (void)state;
    struct dw_backoff b;
    dw_backoff_init(&b, 100, 5000, 9);
    int64_t now = 10000;
    assert_int_equal(dw_backoff_lost(&b, now), 0);
    assert_true(dw_backoff_due(&b, now));
    assert_wait_within(dw_backoff_lost(&b, now), 100);
    assert_false(dw_backoff_due(&b, now));
    now += 100;
    assert_wait_within(dw_backoff_lost(&b, now), 200);
    /* After a success it is forgiven again. */
    dw_backoff_succeeded(&b);
    assert_int_equal(dw_backoff_lost(&b, now), 0);
    /* A failure after the free attempt goes on from the minimum. */
    assert_wait_within(dw_backoff_failed(&b, now), 100);
}

/* A loss while failures are being waited out is no reason to hurry. */
static void test_loss_while_failing_waits(void **state)
{
    (void)state;
    struct dw_backoff b;
    dw_backoff_init(&b, 100, 5000, 11);
    dw_backoff_failed(&b, 0);
    assert_wait_within(dw_backoff_lost(&b, 100), 200);
}

static void test_jitter_spreads_and_reproduces(void **state)
{
    (void)state;
    int a[8], c[8], d[8];
    struct dw_backoff x, y, z;
    dw_backoff_init(&x, 100, 5000, 1);
    dw_backoff_init(&y, 100, 5000, 1);
    dw_backoff_init(&z, 100, 5000, 2);
    for (int i = 0; i < 8; i++) {
        a[i] = dw_backoff_failed(&x, 0);
        c[i] = dw_backoff_failed(&y, 0);
        d[i] = dw_backoff_failed(&z, 0);
    }
    int differ = 0, jittered = 0;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(a[i], c[i]);
        differ += a[i] != d[i];
    }
    for (int i = 1; i < 8; i++)
        jittered += a[i] != 100 << i && a[i] != 5000;
    assert_true(differ > 0);
    assert_true(jittered > 0);
}

static void test_bounds(void **state)
{
    (void)state;
    struct dw_backoff b;
    dw_backoff_init(&b, 3, 3, 0); /* seed 0 works too */
    for (int i = 0; i < 4; i++)
        assert_wait_within(dw_backoff_failed(&b, 0), 3);
    dw_backoff_init(&b, 100, 50, 5); /* a cap below the minimum is the minimum */
    assert_wait_within(dw_backoff_failed(&b, 0), 100);
    assert_wait_within(dw_backoff_failed(&b, 0), 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles_to_the_cap),
        cmocka_unit_test(test_success_starts_over),
        cmocka_unit_test(test_loss_forgiven_once),
        cmocka_unit_test(test_loss_while_failing_waits),
        cmocka_unit_test(test_jitter_spreads_and_reproduces),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
