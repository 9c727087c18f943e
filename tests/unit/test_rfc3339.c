/*
 * RFC 3339 date-times (dw/rfc3339.h): offsets, fractions, the calendar
 * (leap years, month lengths), the leap second only at 23:59:60 UTC, the
 * reasons given, and that nothing past len is read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dw/common.h"
#include "dw/rfc3339.h"

static void test_good(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t ms;
    } good[] = {
        {"2025-10-29T15:13:01+09:00", INT64_C(1761718381000)},
        {"2025-10-29T06:13:01Z", INT64_C(1761718381000)},
        {"2025-10-29t06:13:01z", INT64_C(1761718381000)},
        {"2025-10-29T00:43:01-05:30", INT64_C(1761718381000)},
        {"2025-10-29T06:13:01-00:00", INT64_C(1761718381000)},
        {"2025-10-29T06:13:01.5Z", INT64_C(1761718381500)},
        {"2025-10-29T06:13:01.123456789Z", INT64_C(1761718381123)},
        {"2025-10-29T06:13:01.07+00:00", INT64_C(1761718381070)},
        {"2024-02-29T00:00:00Z", INT64_C(1709164800000)}, /* leap year */
        {"2000-02-29T12:00:00Z", INT64_C(951825600000)},  /* 400-year leap */
        {"1970-01-01T00:00:00Z", 0},
        {"1969-12-31T23:59:59.999Z", -1},
        {"0001-01-01T00:00:00Z", INT64_C(-62135596800000)},
        {"9999-12-31T23:59:59Z", INT64_C(253402300799000)},
        {"2016-12-31T23:59:60Z", INT64_C(1483228800000)},      /* a leap second */
        {"2017-01-01T08:59:60+09:00", INT64_C(1483228800000)}, /* the same one */
        {"2025-10-29T23:59:59+23:59", INT64_C(1761696059000)},
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(good); i++) {
        int64_t ms = 42;
        const char *why = "unset";
        enum dw_err err = dw_rfc3339_parse(good[i].text, strlen(good[i].text), &ms, &why);
        if (err != DW_OK || ms != good[i].ms)
            print_error("%s: err %d (%s), got %lld, want %lld\n", good[i].text, (int)err,
                        why ? why : "", (long long)ms, (long long)good[i].ms);
        assert_int_equal(err, DW_OK);
        assert_null(why);
        assert_true(ms == good[i].ms);
    }
}

static void test_bad(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *why; /* NULL: the form */
    } bad[] = {
        {"2025-02-29T00:00:00Z", "day out of range for the month"}, /* not a leap year */
        {"1900-02-29T00:00:00Z", "day out of range for the month"}, /* not by 400 */
        {"2025-02-30T00:00:00Z", "day out of range for the month"},
        {"2025-04-31T00:00:00Z", "day out of range for the month"},
        {"2025-13-01T00:00:00Z", "month out of range"},
        {"2025-00-10T00:00:00Z", "month out of range"},
        {"2025-10-00T00:00:00Z", "day out of range for the month"},
        {"2025-10-32T00:00:00Z", "day out of range for the month"},
        {"2025-10-29T24:00:00Z", "hour out of range"},
        {"2025-10-29T23:60:00Z", "minute out of range"},
        {"2025-10-29T12:00:60Z", "second 60 is only valid at 23:59 UTC (a leap second)"},
        {"2016-12-31T23:59:60+01:00", "second 60 is only valid at 23:59 UTC (a leap second)"},
        {"2025-10-29T23:59:61Z", "second out of range"},
        {"2025-10-29T15:13:01+24:00", "offset out of range"},
        {"2025-10-29T15:13:01+09:60", "offset out of range"},
        {"2025-10-29T15:13:01", NULL}, /* no offset */
        {"2025-10-29 15:13:01Z", NULL},
        {"2025-10-29T15:13:01+0900", NULL},
        {"2025-10-29T15:13:01+09", NULL},
        {"2025-10-29T15:13:01.Z", NULL},
        {"2025-10-29T15:13Z", NULL},
        {"2025-10-29", NULL},
        {"25-10-29T15:13:01Z", NULL},
        {"2025-1-29T15:13:01Z", NULL},
        {" 2025-10-29T15:13:01Z", NULL},
        {"2025-10-29T15:13:01Z ", NULL},
        {"2025-10-29T15:13:01ZZ", NULL},
        {"2025-10-29T15:13:01UTC", NULL},
        {"\xef\xbc\x92"
         "025-10-29T15:13:01Z",
         NULL}, /* a fullwidth digit */
        {"now", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(bad); i++) {
        int64_t ms = 42;
        const char *why = NULL;
        enum dw_err err = dw_rfc3339_parse(bad[i].text, strlen(bad[i].text), &ms, &why);
        if (err != DW_ERR_INVALID)
            print_error("accepted \"%s\"\n", bad[i].text);
        assert_int_equal(err, DW_ERR_INVALID);
        assert_non_null(why);
        if (bad[i].why)
            assert_string_equal(why, bad[i].why);
        else
            assert_non_null(strstr(why, "not an RFC 3339 date-time"));
    }
    /* why may be NULL. */
    int64_t ms;
    assert_int_equal(dw_rfc3339_parse("now", 3, &ms, NULL), DW_ERR_INVALID);
}

/* Only s[0..len) is read: a valid prefix of a longer text is judged alone. */
static void test_length_bounds_the_read(void **state)
{
    (void)state;
    static const char text[] = "2025-10-29T06:13:01Zjunk";
    int64_t ms = 0;
    assert_int_equal(dw_rfc3339_parse(text, 20, &ms, NULL), DW_OK);
    assert_true(ms == INT64_C(1761718381000));
    assert_int_equal(dw_rfc3339_parse(text, 19, &ms, NULL), DW_ERR_INVALID);
    assert_int_equal(dw_rfc3339_parse(text, sizeof(text) - 1, &ms, NULL), DW_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_length_bounds_the_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
