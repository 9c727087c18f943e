/*
 * The one UTF-8 validator (RFC 3629): every boundary of every sequence
 * length, overlong forms, surrogates, code points above U+10FFFF, sequences
 * cut short, and that a NUL stops reading.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dw/utf8.h"

static size_t seq(const char *s)
{
    return dw_utf8_seq_len(s, strlen(s));
}

static void test_lengths_at_the_boundaries(void **state)
{
    (void)state;
    assert_int_equal(seq("A"), 1);
    assert_int_equal(seq("\x7F"), 1);
    assert_int_equal(seq("\xC2\x80"), 2);         /* U+0080 */
    assert_int_equal(seq("\xDF\xBF"), 2);         /* U+07FF */
    assert_int_equal(seq("\xE0\xA0\x80"), 3);     /* U+0800 */
    assert_int_equal(seq("\xED\x9F\xBF"), 3);     /* U+D7FF */
    assert_int_equal(seq("\xEE\x80\x80"), 3);     /* U+E000 */
    assert_int_equal(seq("\xEF\xBF\xBF"), 3);     /* U+FFFF */
    assert_int_equal(seq("\xF0\x90\x80\x80"), 4); /* U+10000 */
    assert_int_equal(seq("\xF4\x8F\xBF\xBF"), 4); /* U+10FFFF */
}

static void test_ill_formed(void **state)
{
    (void)state;
    assert_int_equal(seq("\x80"), 0);             /* a lone continuation byte */
    assert_int_equal(seq("\xC0\x80"), 0);         /* overlong NUL */
    assert_int_equal(seq("\xC1\xBF"), 0);         /* overlong 2-byte */
    assert_int_equal(seq("\xE0\x9F\xBF"), 0);     /* overlong 3-byte */
    assert_int_equal(seq("\xED\xA0\x80"), 0);     /* U+D800, a surrogate */
    assert_int_equal(seq("\xED\xBF\xBF"), 0);     /* U+DFFF */
    assert_int_equal(seq("\xF0\x8F\xBF\xBF"), 0); /* overlong 4-byte */
    assert_int_equal(seq("\xF4\x90\x80\x80"), 0); /* U+110000 */
    assert_int_equal(seq("\xF5\x80\x80\x80"), 0);
    assert_int_equal(seq("\xFF"), 0);
    assert_int_equal(seq("\xE2\x82"), 0);                    /* cut short by the NUL */
    assert_int_equal(seq("\xE2\x28\xA1"), 0);                /* a bad third byte... */
    assert_int_equal(seq("\xF0\x90\x80\x28"), 0);            /* ...and fourth */
    assert_int_equal(dw_utf8_seq_len("\xE2\x82\xAC", 2), 0); /* cut by avail */
    assert_int_equal(dw_utf8_seq_len("A", 0), 0);
}

static void test_count_and_valid(void **state)
{
    (void)state;
    assert_int_equal(dw_utf8_count("", 0), 0);
    assert_int_equal(dw_utf8_count("h\xC3\xA9llo \xE2\x82\xAC\xF0\x9F\x98\x80", 14), 8);
    assert_int_equal(dw_utf8_count("a\0b", 3), 3); /* NUL is a code point here */
    assert_int_equal(dw_utf8_count("ok\xED\xA0\x80", 5), SIZE_MAX);
    assert_int_equal(dw_utf8_count("\xE2\x82\xAC", 2), SIZE_MAX);
    assert_true(dw_utf8_valid("caf\xC3\xA9"));
    assert_true(dw_utf8_valid(""));
    assert_false(dw_utf8_valid("caf\xC3"));
    assert_false(dw_utf8_valid("\xC0\xAF"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths_at_the_boundaries),
        cmocka_unit_test(test_ill_formed),
        cmocka_unit_test(test_count_and_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
