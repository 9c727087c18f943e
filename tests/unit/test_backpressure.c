/*
 * Back-pressure decisions: memory is bounded in requests and in bytes, and
 * partitions resume only below three quarters of both.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dw/backpressure.h"

#define MAX_REQ   2000
#define MAX_BYTES (256u * 1024 * 1024)

static bool decide(bool paused, size_t requests, size_t bytes, bool store_ok)
{
    struct dw_backpressure_load load = {.requests = requests, .bytes = bytes, .store_ok = store_ok};
    return dw_backpressure_pause(paused, &load, MAX_REQ, MAX_BYTES);
}

static void test_requests_limit(void **state)
{
    (void)state;
    assert_false(decide(false, MAX_REQ - 1, 0, true));
    assert_true(decide(false, MAX_REQ, 0, true));
    /* Hysteresis: stays paused until three quarters. */
    assert_true(decide(true, MAX_REQ - 1, 0, true));
    assert_true(decide(true, MAX_REQ * 3 / 4 + 1, 0, true));
    assert_false(decide(true, MAX_REQ * 3 / 4, 0, true));
}

/* A few large requests (each well under the request cap) fill the byte
 * budget long before the request count: the partitions pause. */
static void test_bytes_limit(void **state)
{
    (void)state;
    size_t large = 2u * 1024 * 1024; /* 2 MiB each */
    assert_false(decide(false, 127, 127 * large, true));
    assert_true(decide(false, 128, 128 * large, true));
    assert_true(decide(true, 100, 100 * large, true));
    assert_false(decide(true, 96, 96 * large, true)); /* 192 MiB: three quarters */
    /* Both must be low to resume. */
    assert_true(decide(true, MAX_REQ, 0, true));
    assert_true(decide(true, 0, MAX_BYTES, true));
}

static void test_store_away(void **state)
{
    (void)state;
    assert_true(decide(false, 0, 0, false));
    assert_true(decide(true, 0, 0, false));
    assert_false(decide(true, 0, 0, true));
}

/* Intake follows the channels: pause while one has more than twice its
 * limit waiting, resume only once none has more than its limit. */
static void test_channel_queues(void **state)
{
    (void)state;
    struct dw_backpressure_load load = {.store_ok = true, .queue_ratio = 2.0};
    assert_false(dw_backpressure_pause(false, &load, MAX_REQ, MAX_BYTES)); /* 2x: not yet */
    load.queue_ratio = 2.01;
    assert_true(dw_backpressure_pause(false, &load, MAX_REQ, MAX_BYTES));
    load.queue_ratio = 1.5; /* between 1x and 2x: stay as we are */
    assert_false(dw_backpressure_pause(false, &load, MAX_REQ, MAX_BYTES));
    assert_true(dw_backpressure_pause(true, &load, MAX_REQ, MAX_BYTES));
    load.queue_ratio = 1.01;
    assert_true(dw_backpressure_pause(true, &load, MAX_REQ, MAX_BYTES));
    load.queue_ratio = 1.0;
    assert_false(dw_backpressure_pause(true, &load, MAX_REQ, MAX_BYTES));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_channel_queues),
        cmocka_unit_test(test_requests_limit),
        cmocka_unit_test(test_bytes_limit),
        cmocka_unit_test(test_store_away),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
