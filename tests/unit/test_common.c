/*
 * common.c's monotonic timed waits: a deadline from dw_deadline_in is on
 * the clock of a condition variable made by dw_cond_init_monotonic, so a
 * wait lasts as long as asked (on CLOCK_REALTIME the same deadline, a
 * small uptime-based number, would lie decades in the past and the wait
 * would end at once).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "dw/common.h"

static void test_deadline_is_normalized(void **state)
{
    (void)state;
    for (int64_t ms = 0; ms < 3000; ms += 137) {
        struct timespec before, ts, after;
        clock_gettime(CLOCK_MONOTONIC, &before);
        ts = dw_deadline_in(ms);
        clock_gettime(CLOCK_MONOTONIC, &after);
        assert_true(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
        int64_t lo = (int64_t)before.tv_sec * 1000000000 + before.tv_nsec + ms * 1000000;
        int64_t hi = (int64_t)after.tv_sec * 1000000000 + after.tv_nsec + ms * 1000000;
        int64_t got = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        assert_true(got >= lo && got <= hi);
    }
}

/* Only a lower bound: the wait must not end before its deadline. */
static void test_timed_wait_lasts_until_the_deadline(void **state)
{
    (void)state;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond;
    dw_cond_init_monotonic(&cond);
    pthread_mutex_lock(&lock);
    int64_t start = dw_now_ms();
    struct timespec until = dw_deadline_in(200);
    int rc = 0;
    while (rc == 0)
        rc = pthread_cond_timedwait(&cond, &lock, &until); /* 0: a spurious wake-up */
    pthread_mutex_unlock(&lock);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(dw_now_ms() - start >= 199);
    pthread_cond_destroy(&cond);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline_is_normalized),
        cmocka_unit_test(test_timed_wait_lasts_until_the_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
