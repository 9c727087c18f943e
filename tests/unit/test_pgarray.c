/*
 * PostgreSQL array literals (dw/pgarray.h): quoting and escaping, NULL for
 * empty strings, numbers, invalid UTF-8 replaced, and the cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dw/pgarray.h"

static void test_empty(void **state)
{
    (void)state;
    struct dw_pgarray a;
    dw_pgarray_init(&a);
    assert_string_equal(dw_pgarray_end(&a), "{}");
    dw_pgarray_cleanup(&a);
}

static void test_text_quoted_and_escaped(void **state)
{
    (void)state;
    struct dw_pgarray a;
    dw_pgarray_init(&a);
    dw_pgarray_add_text(&a, "plain");
    dw_pgarray_add_text(&a, NULL);
    dw_pgarray_add_text(&a, "");
    dw_pgarray_add_text(&a, "say \"hi\" \\ bye,{x}");
    dw_pgarray_add_text(&a, "caf\xc3\xa9 \xe2\x82\xac");
    assert_string_equal(dw_pgarray_end(&a), "{\"plain\",NULL,NULL,\"say \\\"hi\\\" \\\\ bye,{x}\","
                                            "\"caf\xc3\xa9 \xe2\x82\xac\"}");
    dw_pgarray_cleanup(&a);
}

/* One bad byte must not fail a whole batch: it becomes '?'. */
static void test_invalid_utf8_replaced(void **state)
{
    (void)state;
    struct dw_pgarray a;
    dw_pgarray_init(&a);
    dw_pgarray_add_text(&a, "a\xff"
                            "b\xc3");
    dw_pgarray_add_text(&a, "\xed\xa0\x80"); /* a surrogate */
    assert_string_equal(dw_pgarray_end(&a), "{\"a?b?\",\"???\"}");
    dw_pgarray_cleanup(&a);
}

static void test_numbers(void **state)
{
    (void)state;
    struct dw_pgarray a;
    dw_pgarray_init(&a);
    dw_pgarray_add_int(&a, -7);
    dw_pgarray_add_int(&a, 0);
    dw_pgarray_add_i64(&a, INT64_C(1700000000123));
    dw_pgarray_add_i64(&a, INT64_MIN);
    assert_string_equal(dw_pgarray_end(&a), "{-7,0,1700000000123,-9223372036854775808}");
    dw_pgarray_cleanup(&a);
}

/* Past the cap (64 MiB) the array is full for good, never cut short. */
static void test_cap(void **state)
{
    (void)state;
    size_t len = 1024 * 1024;
    char *big = malloc(len + 1);
    memset(big, 'x', len);
    big[len] = '\0';
    struct dw_pgarray a;
    dw_pgarray_init(&a);
    for (int i = 0; i < 63; i++)
        dw_pgarray_add_text(&a, big);
    assert_false(a.full);
    for (int i = 0; i < 2; i++)
        dw_pgarray_add_text(&a, big);
    dw_pgarray_add_int(&a, 1);
    assert_null(dw_pgarray_end(&a));
    dw_pgarray_cleanup(&a);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_text_quoted_and_escaped),
        cmocka_unit_test(test_invalid_utf8_replaced),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
