/*
 * The re-drive schedule with a fake clock: the tiers in turn, the last
 * one repeating, nothing at or past the maximum age, the transient and
 * permanent split of CONTRACT 2.4, the age's origin, and the delay list's
 * parser (good lists, the empty list that turns it off, and bad ones).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "dw/redrive.h"

#define MIN  (60LL * 1000)
#define HOUR (60 * MIN)

static struct dw_redrive_policy reference(void)
{
    struct dw_redrive_policy p = {.max_age_ms = 24 * HOUR};
    char err[256];
    assert_int_equal(
        dw_redrive_parse_delays("60000,300000,1800000,7200000,21600000", &p, err, sizeof(err)),
        DW_OK);
    return p;
}

static void tiers_in_turn_then_the_last_repeats(void **state)
{
    (void)state;
    struct dw_redrive_policy p = reference();
    int64_t born = 1000000, now = born, at = 0;
    static const int64_t want[] = {1 * MIN, 5 * MIN, 30 * MIN, 2 * HOUR, 6 * HOUR, 6 * HOUR};
    for (int tier = 0; tier < 6; tier++) {
        assert_true(dw_redrive_next(&p, tier, born, now, &at));
        assert_int_equal(at - now, want[tier]);
        now = at + 1234; /* the re-drive took a while */
    }
    /* Far beyond the list: still the last delay. */
    assert_true(dw_redrive_next(&p, 1000, born, born, &at));
    assert_int_equal(at - born, 6 * HOUR);
    /* A negative tier is treated as the first. */
    assert_true(dw_redrive_next(&p, -3, born, born, &at));
    assert_int_equal(at - born, 1 * MIN);
}

static void nothing_at_or_past_the_maximum_age(void **state)
{
    (void)state;
    struct dw_redrive_policy p = reference();
    int64_t born = 5000, at = 0;
    assert_int_equal(dw_redrive_expires_at(&p, born), born + 24 * HOUR);
    /* The last attempt that still comes before the age runs out. */
    int64_t now = born + 24 * HOUR - 6 * HOUR - 1;
    assert_true(dw_redrive_next(&p, 4, born, now, &at));
    assert_int_equal(at, born + 24 * HOUR - 1);
    /* One ms later it would land exactly at the limit: none. */
    assert_false(dw_redrive_next(&p, 4, born, now + 1, &at));
    /* A short first tier still fits when a long one does not. */
    assert_true(dw_redrive_next(&p, 0, born, now + 1, &at));
    /* A request already too old gets nothing, whatever the tier. */
    assert_false(dw_redrive_next(&p, 0, born, born + 24 * HOUR, &at));
    assert_false(dw_redrive_next(&p, 0, born, born + 48 * HOUR, &at));
    /* Driving all the tiers from the start, the schedule stops by itself. */
    int64_t t = born;
    int drives = 0;
    for (int tier = 0; dw_redrive_next(&p, tier, born, t, &at); tier++) {
        assert_true(at > t && at < born + 24 * HOUR);
        t = at;
        drives++;
    }
    /* 1+5+30+120+360 min = 8.6 h, then 6 h twice more fit in 24 h. */
    assert_int_equal(drives, 7);
}

static void off_when_there_are_no_tiers(void **state)
{
    (void)state;
    struct dw_redrive_policy p = reference();
    char err[256];
    assert_int_equal(dw_redrive_parse_delays("", &p, err, sizeof(err)), DW_OK);
    assert_int_equal(p.tiers, 0);
    int64_t at = 77;
    assert_false(dw_redrive_next(&p, 0, 0, 0, &at));
    assert_int_equal(at, 77);
    assert_int_equal(dw_redrive_parse_delays("   ", &p, err, sizeof(err)), DW_OK);
    assert_int_equal(p.tiers, 0);
    assert_int_equal(dw_redrive_parse_delays(NULL, &p, err, sizeof(err)), DW_OK);
    assert_int_equal(p.tiers, 0);
}

static void transient_and_permanent(void **state)
{
    (void)state;
    static const enum dw_errcode transient[] = {
        DW_EC_TIMEOUT,           DW_EC_HTTP_5XX,     DW_EC_RATE_LIMITED,  DW_EC_CONNECTION,
        DW_EC_RETRIES_EXHAUSTED, DW_EC_CIRCUIT_OPEN, DW_EC_BULKHEAD_FULL,
    };
    int count = 0;
    for (int c = 0; c < DW_EC_COUNT; c++) {
        bool want = false;
        for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++)
            want = want || transient[i] == (enum dw_errcode)c;
        assert_int_equal(dw_redrive_transient((enum dw_errcode)c), want);
        count += want;
    }
    assert_int_equal(count, 7);
    assert_false(dw_redrive_transient(DW_EC_HTTP_4XX));
    assert_false(dw_redrive_transient(DW_EC_BAD_RESPONSE));
    assert_false(dw_redrive_transient(DW_EC_NONE));
    assert_false(dw_redrive_transient(DW_EC_COUNT));
}

static void age_counts_from_the_earlier_time(void **state)
{
    (void)state;
    assert_int_equal(dw_redrive_born_ms(0, 5000), 5000);
    assert_int_equal(dw_redrive_born_ms(4000, 5000), 4000);
    /* A requestedAt in the future does not stretch the window. */
    assert_int_equal(dw_redrive_born_ms(9000, 5000), 5000);
    assert_int_equal(dw_redrive_born_ms(9000, 0), 9000);
}

/* "1,1,...,1" with n ones into buf (big enough for 100). */
static void ones(char *buf, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (i)
            buf[len++] = ',';
        buf[len++] = '1';
    }
    buf[len] = '\0';
}

static void parses_good_lists(void **state)
{
    (void)state;
    struct dw_redrive_policy p = {0};
    char err[256];
    assert_int_equal(dw_redrive_parse_delays(" 500 , 1000,2000 ", &p, err, sizeof(err)), DW_OK);
    assert_int_equal(p.tiers, 3);
    assert_int_equal(p.delays_ms[0], 500);
    assert_int_equal(p.delays_ms[1], 1000);
    assert_int_equal(p.delays_ms[2], 2000);
    assert_int_equal(dw_redrive_parse_delays("2592000000", &p, err, sizeof(err)), DW_OK);
    assert_int_equal(p.tiers, 1);
    char many[400];
    ones(many, DW_REDRIVE_TIERS_MAX);
    assert_int_equal(dw_redrive_parse_delays(many, &p, err, sizeof(err)), DW_OK);
    assert_int_equal(p.tiers, DW_REDRIVE_TIERS_MAX);
}

static void refuses_bad_lists_and_keeps_the_old_one(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "abc",
        "60000,",
        ",60000",
        "60000,,1",
        "0",
        "-5",
        "1.5",
        "60000 300000",
        "60000;1",
        "2592000001",
        "99999999999999999999999",
        "1e3",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct dw_redrive_policy p = reference();
        char err[256] = "";
        assert_int_equal(dw_redrive_parse_delays(bad[i], &p, err, sizeof(err)), DW_ERR_CONFIG);
        assert_true(strlen(err) > 0);
        assert_int_equal(p.tiers, 5);
        assert_int_equal(p.delays_ms[0], 60000);
    }
    char many[400];
    ones(many, DW_REDRIVE_TIERS_MAX + 1);
    struct dw_redrive_policy p = reference();
    char err[256];
    assert_int_equal(dw_redrive_parse_delays(many, &p, err, sizeof(err)), DW_ERR_CONFIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tiers_in_turn_then_the_last_repeats),
        cmocka_unit_test(nothing_at_or_past_the_maximum_age),
        cmocka_unit_test(off_when_there_are_no_tiers),
        cmocka_unit_test(transient_and_permanent),
        cmocka_unit_test(age_counts_from_the_earlier_time),
        cmocka_unit_test(parses_good_lists),
        cmocka_unit_test(refuses_bad_lists_and_keeps_the_old_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
