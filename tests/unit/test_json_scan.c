/*
 * Strict JSON (dw/json_scan.h): the byte check refuses what json-c 0.16
 * takes even in strict mode, says why and at which byte; the parser adds
 * the nesting limit, trailing data and emptiness, and leaves no tree behind
 * when it refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dw/common.h"
#include "dw/json_scan.h"

static enum dw_err scan(const char *text, char *why, size_t whylen)
{
    return dw_json_scan(text, strlen(text), why, whylen);
}

static enum dw_err parse(const char *text, int depth, char *why, size_t whylen)
{
    struct json_object *root = (struct json_object *)&root; /* not NULL */
    enum dw_err err = dw_json_parse(text, strlen(text), depth, &root, why, whylen);
    if (err)
        assert_null(root);
    else
        assert_non_null(root);
    json_object_put(root);
    return err;
}

/* json-c takes every one of these; RFC 8259 does not. */
static void test_lenient_inputs_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"x\":'single'}",
        "{'x':1}",
        "{\"x\":NaN}",
        "{\"x\":Infinity}",
        "{\"x\":-Infinity}",
        "{\"x\":1.}",
        "{\"x\":-01}",
        "{\"x\":01}",
        "{\"x\":.5}",
        "{\"x\":+1}",
        "{\"x\":1e}",
        "{\"x\":\"tab\there\"}",
        "{\"x\":\"a\nb\"}",
        "{\"x\x01\":1}",
        "{\"x\":1/*c*/}",
        "{x:1}",
        "{\"x\":True}",
        "\xEF\xBB\xBF{}",
        "{\"x\":\"\xC0\xAF\"}",         /* overlong '/' */
        "{\"x\":\"\xED\xA0\x80\"}",     /* an encoded surrogate */
        "{\"x\":\"\xF4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"x\":\"\xE2\x82\"}",         /* cut short */
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(bad); i++) {
        char why[128] = "";
        if (scan(bad[i], why, sizeof(why)) != DW_ERR_INVALID)
            print_error("scan accepted %s\n", bad[i]);
        assert_int_equal(scan(bad[i], why, sizeof(why)), DW_ERR_INVALID);
        assert_true(why[0] != '\0');
        assert_int_equal(parse(bad[i], 64, NULL, 0), DW_ERR_INVALID);
    }
}

static void test_reasons_name_the_byte(void **state)
{
    (void)state;
    char why[128];
    assert_int_equal(scan("{\"x\":\"\xFF\"}", why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "invalid UTF-8 at byte 6");
    assert_int_equal(scan("{\"x\":01}", why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "not JSON: malformed number at byte 5");
    assert_int_equal(scan("{\"x\":\"a\tb\"}", why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "not JSON: unescaped control character in a string at byte 7");
    assert_int_equal(scan("{\"x\":NaN}", why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "not JSON: unexpected character at byte 5");
    assert_int_equal(scan("{\"x\":\xC3\xA9}", why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "not JSON: unexpected character at byte 5");
    assert_int_equal(dw_json_scan("{}\0", 3, why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "NUL byte at byte 2");
    /* why may be NULL. */
    assert_int_equal(scan("{\"x\":01}", NULL, 0), DW_ERR_INVALID);
}

static void test_valid_json_accepted(void **state)
{
    (void)state;
    static const char *const good[] = {
        "{\"x\":[0,-0,1,-1,0.5,-0.0,1e5,1E+5,1.5e-3,10]}",
        "{\"x\":123456789012345678901234567890}",
        "{\"x\":-1e-999}",
        "{\"x\":[true,false,null,{},[],\"\"]}",
        "{\"x\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\"}",
        "{\"\":1}",
        "{\"x\":\"\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF\xF0\x90\x80\x80"
        "\xF4\x8F\xBF\xBF\"}",
        " \r\n\t{} \r\n\t",
        "[1,2]",
        "42 ", /* a bare number needs an end: see test_parse_refusals */
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(good); i++) {
        char why[128] = "";
        if (parse(good[i], 64, why, sizeof(why)) != DW_OK)
            print_error("refused %s: %s\n", good[i], why);
        assert_int_equal(scan(good[i], NULL, 0), DW_OK);
        assert_int_equal(parse(good[i], 64, why, sizeof(why)), DW_OK);
    }
}

static void test_parse_refusals(void **state)
{
    (void)state;
    char why[128];
    assert_int_equal(parse("", 64, why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "empty");
    assert_int_equal(parse(" \n ", 64, why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "empty");
    assert_int_equal(parse("{\"x\":1", 64, why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "not JSON: ends before the value is complete");
    /* json-c cannot tell a number at the very end is complete. */
    assert_int_equal(parse("42", 64, why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "not JSON: ends before the value is complete");
    assert_int_equal(parse("{} 1", 64, why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "not JSON: unexpected character at byte 3");
    assert_int_equal(parse("{}{}", 64, why, sizeof(why)), DW_ERR_INVALID);
    assert_int_equal(parse("{}\f", 64, why, sizeof(why)), DW_ERR_INVALID);
    assert_int_equal(parse("[1,]", 64, why, sizeof(why)), DW_ERR_INVALID);
    assert_non_null(strstr(why, "not JSON: "));
}

static void test_depth_limit(void **state)
{
    (void)state;
    char text[64], why[128];
    memset(text, 0, sizeof(text));
    memset(text, '[', 4);
    memset(text + 4, ']', 4); /* 4 levels */
    assert_int_equal(parse(text, 4, why, sizeof(why)), DW_OK);
    assert_int_equal(parse(text, 3, why, sizeof(why)), DW_ERR_INVALID);
    assert_string_equal(why, "JSON nested deeper than 3 levels");
}

/* Only text[0..len) is read: no NUL terminator needed. */
static void test_length_bounds_the_read(void **state)
{
    (void)state;
    static const char text[] = "{\"a\":1}garbage";
    struct json_object *root = NULL;
    assert_int_equal(dw_json_parse(text, 7, 64, &root, NULL, 0), DW_OK);
    assert_int_equal(json_object_get_int(json_object_object_get(root, "a")), 1);
    json_object_put(root);
    assert_int_equal(dw_json_parse(text, sizeof(text) - 1, 64, &root, NULL, 0), DW_ERR_INVALID);
    assert_null(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lenient_inputs_refused),
        cmocka_unit_test(test_reasons_name_the_byte),
        cmocka_unit_test(test_valid_json_accepted),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_length_bounds_the_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
