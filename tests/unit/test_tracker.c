/* The per-partition commit tracker: out-of-order completion, gaps,
 * rewinds, revoked partitions, and a randomised model check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "dw/tracker.h"

static void in_order(void **state)
{
    (void)state;
    struct dw_tracker *t = dw_tracker_create();
    for (int64_t o = 10; o < 13; o++)
        dw_tracker_add(t, 0, o);
    assert_int_equal(dw_tracker_committable(t, 0), -1);
    assert_true(dw_tracker_done(t, 0, 10));
    assert_int_equal(dw_tracker_committable(t, 0), 11);
    assert_int_equal(dw_tracker_committable(t, 0), -1); /* nothing new */
    assert_int_equal(dw_tracker_next_offset(t, 0), 13);
    assert_int_equal(dw_tracker_next_offset(t, 9), -1);
    assert_true(dw_tracker_done(t, 0, 11));
    assert_true(dw_tracker_done(t, 0, 12));
    assert_int_equal(dw_tracker_committable(t, 0), 13);
    assert_int_equal(dw_tracker_pending(t, 0), 0);
    dw_tracker_destroy(t);
}

/* A commit that did not land is handed out again, with no new work. */
static void failed_commit_is_committed_again(void **state)
{
    (void)state;
    struct dw_tracker *t = dw_tracker_create();
    dw_tracker_add(t, 0, 10);
    dw_tracker_add(t, 0, 11);
    assert_true(dw_tracker_done(t, 0, 10));
    assert_int_equal(dw_tracker_committable(t, 0), 11);
    assert_int_equal(dw_tracker_committable(t, 0), -1);
    dw_tracker_commit_failed(t, 0);
    assert_int_equal(dw_tracker_committable(t, 0), 11);
    assert_int_equal(dw_tracker_committable(t, 0), -1);
    /* Nothing held, nothing to commit again. */
    dw_tracker_commit_failed(t, 5);
    assert_int_equal(dw_tracker_committable(t, 5), -1);
    dw_tracker_destroy(t);
}

static void out_of_order_waits_for_lowest(void **state)
{
    (void)state;
    struct dw_tracker *t = dw_tracker_create();
    for (int64_t o = 0; o < 5; o++)
        dw_tracker_add(t, 3, o);
    assert_true(dw_tracker_done(t, 3, 4));
    assert_true(dw_tracker_done(t, 3, 2));
    assert_true(dw_tracker_done(t, 3, 1));
    assert_int_equal(dw_tracker_committable(t, 3), -1); /* 0 still running */
    assert_int_equal(dw_tracker_pending(t, 3), 5);
    assert_true(dw_tracker_done(t, 3, 0));
    assert_int_equal(dw_tracker_committable(t, 3), 3); /* 3 still running */
    assert_int_equal(dw_tracker_position(t, 3), 3);    /* asked again: still 3 */
    assert_true(dw_tracker_done(t, 3, 3));
    assert_int_equal(dw_tracker_committable(t, 3), 5);
    dw_tracker_destroy(t);
}

static void gaps_in_offsets(void **state)
{
    (void)state;
    /* Compacted topics and transaction markers leave gaps. */
    struct dw_tracker *t = dw_tracker_create();
    dw_tracker_add(t, 1, 100);
    dw_tracker_add(t, 1, 105);
    dw_tracker_add(t, 1, 230);
    assert_false(dw_tracker_done(t, 1, 101)); /* never handed out */
    assert_true(dw_tracker_done(t, 1, 105));
    assert_int_equal(dw_tracker_committable(t, 1), -1);
    assert_true(dw_tracker_done(t, 1, 100));
    assert_int_equal(dw_tracker_committable(t, 1), 106);
    dw_tracker_destroy(t);
}

static void partitions_are_independent(void **state)
{
    (void)state;
    struct dw_tracker *t = dw_tracker_create();
    dw_tracker_add(t, 0, 7);
    dw_tracker_add(t, 1, 7);
    assert_true(dw_tracker_done(t, 1, 7));
    assert_int_equal(dw_tracker_committable(t, 0), -1);
    assert_int_equal(dw_tracker_committable(t, 1), 8);
    int32_t ids[4];
    assert_int_equal(dw_tracker_partitions(t, ids, 4), 2);
    dw_tracker_destroy(t);
}

static void forgotten_partition_ignores_late_results(void **state)
{
    (void)state;
    struct dw_tracker *t = dw_tracker_create();
    dw_tracker_add(t, 2, 50);
    dw_tracker_forget(t, 2);
    assert_false(dw_tracker_done(t, 2, 50));
    assert_int_equal(dw_tracker_committable(t, 2), -1);
    int32_t ids[4];
    assert_int_equal(dw_tracker_partitions(t, ids, 4), 0);
    assert_int_equal(dw_tracker_next_offset(t, 2), -1); /* no stale position */
    /* Re-assigned later: starts clean. */
    dw_tracker_add(t, 2, 40);
    assert_true(dw_tracker_done(t, 2, 40));
    assert_int_equal(dw_tracker_committable(t, 2), 41);
    dw_tracker_destroy(t);
}

static void rewind_restarts_partition(void **state)
{
    (void)state;
    struct dw_tracker *t = dw_tracker_create();
    dw_tracker_add(t, 0, 10);
    dw_tracker_add(t, 0, 11);
    dw_tracker_add(t, 0, 10); /* redelivered from 10 */
    assert_int_equal(dw_tracker_pending(t, 0), 1);
    dw_tracker_add(t, 0, 11);
    assert_true(dw_tracker_done(t, 0, 11));
    assert_int_equal(dw_tracker_committable(t, 0), -1);
    assert_true(dw_tracker_done(t, 0, 10));
    assert_int_equal(dw_tracker_committable(t, 0), 12);
    dw_tracker_destroy(t);
}

/* Random completion order over many offsets, checked against a model: the
 * committed offset is always one past the longest done prefix, never more. */
static void random_order_matches_model(void **state)
{
    (void)state;
    enum { N = 5000 };
    static int64_t order[N];
    static bool done[N];
    srand(12345);
    struct dw_tracker *t = dw_tracker_create();
    for (int i = 0; i < N; i++) {
        dw_tracker_add(t, 0, i);
        order[i] = i;
        done[i] = false;
    }
    for (int i = N - 1; i > 0; i--) {
        int j = rand() % (i + 1);
        int64_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    int64_t committed = 0;
    for (int i = 0; i < N; i++) {
        assert_true(dw_tracker_done(t, 0, order[i]));
        done[order[i]] = true;
        int64_t prefix = committed;
        while (prefix < N && done[prefix])
            prefix++;
        int64_t c = dw_tracker_committable(t, 0);
        if (prefix > committed) {
            assert_int_equal(c, prefix);
            committed = prefix;
        } else {
            assert_int_equal(c, -1);
        }
    }
    assert_int_equal(committed, N);
    dw_tracker_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(in_order),
        cmocka_unit_test(failed_commit_is_committed_again),
        cmocka_unit_test(out_of_order_waits_for_lowest),
        cmocka_unit_test(gaps_in_offsets),
        cmocka_unit_test(partitions_are_independent),
        cmocka_unit_test(forgotten_partition_ignores_late_results),
        cmocka_unit_test(rewind_restarts_partition),
        cmocka_unit_test(random_order_matches_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
