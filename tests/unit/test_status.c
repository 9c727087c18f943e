/* Status names, aggregation and the never-go-backwards rules (CONTRACT 2.3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dw/status.h"

static void aggregation(void **state)
{
    (void)state;
    assert_int_equal(dw_overall_aggregate(6, 0), DW_OVERALL_COMPLETED);
    assert_int_equal(dw_overall_aggregate(1, 0), DW_OVERALL_COMPLETED);
    assert_int_equal(dw_overall_aggregate(5, 1), DW_OVERALL_PARTIAL_FAILURE);
    assert_int_equal(dw_overall_aggregate(1, 5), DW_OVERALL_PARTIAL_FAILURE);
    assert_int_equal(dw_overall_aggregate(0, 6), DW_OVERALL_FAILED);
    assert_int_equal(dw_overall_aggregate(0, 1), DW_OVERALL_FAILED);
}

static void names_round_trip(void **state)
{
    (void)state;
    for (int s = 0; s < DW_OVERALL_COUNT; s++) {
        enum dw_overall back;
        assert_true(dw_overall_parse(dw_overall_name((enum dw_overall)s), &back));
        assert_int_equal(back, s);
    }
    for (int s = 0; s < DW_CHSTATUS_COUNT; s++) {
        enum dw_chstatus back;
        assert_true(dw_chstatus_parse(dw_chstatus_name((enum dw_chstatus)s), &back));
        assert_int_equal(back, s);
    }
    for (int c = 1; c < DW_EC_COUNT; c++) {
        enum dw_errcode back;
        assert_true(dw_errcode_parse(dw_errcode_name((enum dw_errcode)c), &back));
        assert_int_equal(back, c);
    }
    assert_null(dw_errcode_name(DW_EC_NONE));
    assert_null(dw_dlq_name(DW_DLQ_NONE));
    assert_string_equal(dw_dlq_name(DW_DLQ_TOO_LARGE), "TOO_LARGE");
    assert_string_equal(dw_overall_name(DW_OVERALL_PARTIAL_FAILURE), "PARTIAL_FAILURE");
    enum dw_overall o;
    assert_false(dw_overall_parse("completed", &o));
    assert_false(dw_overall_parse(NULL, &o));
}

static void transient_codes(void **state)
{
    (void)state;
    assert_true(dw_errcode_transient(DW_EC_TIMEOUT));
    assert_true(dw_errcode_transient(DW_EC_HTTP_5XX));
    assert_true(dw_errcode_transient(DW_EC_RATE_LIMITED));
    assert_true(dw_errcode_transient(DW_EC_CONNECTION));
    assert_false(dw_errcode_transient(DW_EC_HTTP_4XX));
    assert_false(dw_errcode_transient(DW_EC_BAD_RESPONSE));
    assert_false(dw_errcode_transient(DW_EC_NONE));
    assert_false(dw_errcode_transient(DW_EC_CIRCUIT_OPEN));
}

/* The whole table of channel transitions, written out so a change to the
 * rule shows up here as a deliberate edit. Rows: from; columns: to
 * (PENDING, IN_PROGRESS, SUCCESS, FAILED). */
static void channel_transitions(void **state)
{
    (void)state;
    static const bool allowed[4][4] = {
        /* PENDING     */ {true, true, true, true},
        /* IN_PROGRESS */ {false, true, true, true},
        /* SUCCESS     */ {false, false, false, false},
        /* FAILED      */ {false, false, true, true},
    };
    for (int from = 0; from < 4; from++)
        for (int to = 0; to < 4; to++)
            assert_int_equal(dw_chstatus_may_replace((enum dw_chstatus)from, (enum dw_chstatus)to),
                             allowed[from][to]);
}

/* Rows: from; columns: to (PENDING, IN_PROGRESS, COMPLETED, PARTIAL_FAILURE,
 * FAILED). A final status changes only when a re-drive improves it. */
static void overall_transitions(void **state)
{
    (void)state;
    static const bool allowed[5][5] = {
        /* PENDING         */ {true, true, true, true, true},
        /* IN_PROGRESS     */ {false, true, true, true, true},
        /* COMPLETED       */ {false, false, false, false, false},
        /* PARTIAL_FAILURE */ {false, false, true, false, false},
        /* FAILED          */ {false, false, true, true, false},
    };
    for (int from = 0; from < 5; from++)
        for (int to = 0; to < 5; to++)
            assert_int_equal(dw_overall_may_replace((enum dw_overall)from, (enum dw_overall)to),
                             allowed[from][to]);
    assert_true(dw_overall_is_final(DW_OVERALL_FAILED));
    assert_false(dw_overall_is_final(DW_OVERALL_IN_PROGRESS));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(aggregation),         cmocka_unit_test(names_round_trip),
        cmocka_unit_test(transient_codes),     cmocka_unit_test(channel_transitions),
        cmocka_unit_test(overall_transitions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
