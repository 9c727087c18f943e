/*
 * The eventId rule (CONTRACT 2.1): 1 to 64 of A-Z a-z 0-9 . _ -.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dw/event_id.h"

static bool valid(const char *s)
{
    return dw_event_id_valid(s, strlen(s));
}

static void test_characters(void **state)
{
    (void)state;
    assert_true(valid("A-Za-z0-9._"));
    assert_true(valid("evt-2025.10_29"));
    const char *bad = " /:@[`{~\x7F\xC3\xA9+,";
    for (const char *c = bad; *c; c++) {
        char id[4] = {'a', *c, 'b', '\0'};
        assert_false(valid(id));
        assert_false(dw_event_id_char(*c));
    }
    assert_false(dw_event_id_valid("a\0b", 3));
}

static void test_length(void **state)
{
    (void)state;
    char id[DW_EVENT_ID_MAX + 2];
    memset(id, 'x', sizeof(id));
    assert_false(dw_event_id_valid(id, 0));
    assert_true(dw_event_id_valid(id, 1));
    assert_true(dw_event_id_valid(id, DW_EVENT_ID_MAX));
    assert_false(dw_event_id_valid(id, DW_EVENT_ID_MAX + 1));
    assert_int_equal(DW_EVENT_ID_MAX, 64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_characters),
        cmocka_unit_test(test_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
