/*
 * Unit tests of request.c: every rule of CONTRACT 2.1 with its DLQ code and
 * its boundaries, and a replay of tests/fuzz/request_corpus/ (found through
 * DW_SOURCE_DIR, or relative to the working directory; a corpus that cannot
 * be found fails the run).
 *
 * Each value is decoded from an exact-size heap copy so that ASan catches a
 * read past its end (Kafka values are not NUL-terminated).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/request.h"
#include "dw/status.h"

/* The channel settings the registered types declare. */
#define RADIUS(req)       dw_request_setting((req), DW_CHANNEL_URIDONGNETV, "radius")
#define REGION(req)       dw_request_setting((req), DW_CHANNEL_GINITV, "region")
#define PHONE_NUMBER(req) dw_request_setting((req), DW_CHANNEL_RINGOBIZ, "phoneNumber")

/* The example of CONTRACT 2.1, verbatim. */
static const char full_example[] =
    "{\n"
    "  \"eventId\": \"evt-20251029-0001\",\n"
    "  \"title\": \"Grand opening: 20% off all coffee\",\n"
    "  \"content\": \"Visit us this weekend ...\",\n"
    "  \"imageUrl\": \"https://cdn.example.com/e/0001.png\",\n"
    "  \"channels\": [\"URIDONGNETV\", \"GINITV\", \"RINGOBIZ\", \"INSTAGRAM\", \"NAVER\", "
    "\"KAKAO\"],\n"
    "  \"channelSettings\": {\n"
    "    \"URIDONGNETV\": { \"radius\": \"1km\" },\n"
    "    \"GINITV\": { \"region\": \"Seoul/Gangnam\" },\n"
    "    \"RINGOBIZ\": { \"phoneNumber\": \"02-1234-5678\" }\n"
    "  },\n"
    "  \"requestedAt\": \"2025-10-29T15:13:01+09:00\"\n"
    "}\n";

/* The least a valid request needs. */
static const char minimal[] = "{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"NAVER\"]}";

static char last_err[512];

static const char *code_name(enum dw_dlq_code code)
{
    const char *name = dw_dlq_name(code);
    return name ? name : "NONE";
}

#define assert_code(got, want) assert_string_equal(code_name(got), code_name(want))

/*
 * Decodes an exact-size copy of value (NULL stays NULL) and checks the
 * contract of the call itself: on success a request and an empty errbuf, on
 * failure no request and a message. Returns the request on success (the
 * caller destroys it) through keep, or destroys it when keep is NULL.
 */
static enum dw_dlq_code decode_keep(const char *value, size_t len, struct dw_request **keep)
{
    struct dw_request *req = (struct dw_request *)&req; /* must be overwritten */
    char *copy = NULL;
    enum dw_dlq_code code;

    if (value) {
        copy = malloc(len ? len : 1);
        assert_non_null(copy);
        memcpy(copy, value, len);
    }
    memset(last_err, 'x', sizeof(last_err) - 1);
    last_err[sizeof(last_err) - 1] = '\0';
    code = dw_request_decode(copy, len, &req, last_err, sizeof(last_err));
    free(copy);
    assert_true((unsigned)code < DW_DLQ_COUNT);
    if (code == DW_DLQ_NONE) {
        assert_non_null(req);
        assert_string_equal(last_err, "");
    } else {
        assert_null(req);
        assert_true(last_err[0] != '\0' && last_err[0] != 'x');
    }
    if (keep)
        *keep = req;
    else
        dw_request_destroy(req);
    return code;
}

static enum dw_dlq_code decode_len(const char *value, size_t len)
{
    return decode_keep(value, len, NULL);
}

static enum dw_dlq_code decode_text(const char *text)
{
    return decode_len(text, strlen(text));
}

static struct dw_request *decode_ok(const char *text)
{
    struct dw_request *req = NULL;
    enum dw_dlq_code code = decode_keep(text, strlen(text), &req);
    if (code != DW_DLQ_NONE)
        print_error("unexpected %s: %s\n", code_name(code), last_err);
    assert_code(code, DW_DLQ_NONE);
    return req;
}

/*
 * The full example with one member changed: path is dotted
 * ("channelSettings.RINGOBIZ.phoneNumber"), missing objects on the way are
 * created. val is taken over (NULL sets JSON null); remove drops the member.
 * Returns malloc'd JSON text.
 */
static char *variant_of(const char *base, const char *path, struct json_object *val, bool remove)
{
    struct json_object *root = json_tokener_parse(base);
    struct json_object *obj = root;
    char key[128];
    const char *p = path, *dot;
    char *text;

    assert_non_null(root);
    while ((dot = strchr(p, '.')) != NULL) {
        struct json_object *next;
        assert_true((size_t)(dot - p) < sizeof(key));
        memcpy(key, p, (size_t)(dot - p));
        key[dot - p] = '\0';
        if (!json_object_object_get_ex(obj, key, &next) ||
            !json_object_is_type(next, json_type_object)) {
            next = json_object_new_object();
            json_object_object_add(obj, key, next);
        }
        obj = next;
        p = dot + 1;
    }
    if (remove)
        json_object_object_del(obj, p);
    else
        json_object_object_add(obj, p, val);
    text = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE));
    assert_non_null(text);
    json_object_put(root);
    return text;
}

/* Decodes the full example with path set to the JSON text json (which may be
 * "null"). */
static enum dw_dlq_code decode_with(const char *path, const char *json)
{
    struct json_object *val = NULL;
    if (strcmp(json, "null") != 0) {
        val = json_tokener_parse(json);
        assert_non_null(val);
    }
    char *text = variant_of(full_example, path, val, false);
    enum dw_dlq_code code = decode_text(text);
    free(text);
    return code;
}

/* Decodes the full example with path set to the string s. */
static enum dw_dlq_code decode_with_string(const char *path, const char *s)
{
    char *text = variant_of(full_example, path, json_object_new_string(s), false);
    enum dw_dlq_code code = decode_text(text);
    free(text);
    return code;
}

static enum dw_dlq_code decode_without(const char *path)
{
    char *text = variant_of(full_example, path, NULL, true);
    enum dw_dlq_code code = decode_text(text);
    free(text);
    return code;
}

/* Decodes base with path set to the string s, keeping the request. */
static struct dw_request *ok_with_string(const char *base, const char *path, const char *s)
{
    char *text = variant_of(base, path, json_object_new_string(s), false);
    struct dw_request *req = decode_ok(text);
    free(text);
    return req;
}

/* Decodes the full example with a raw member (JSON text, not re-encoded)
 * put in front of the others. */
static enum dw_dlq_code decode_with_raw_member(const char *member)
{
    struct dw_buf buf;
    enum dw_dlq_code code;

    dw_buf_init(&buf, 1 << 20);
    assert_int_equal(dw_buf_printf(&buf, "{%s,%s", member, full_example + 1), DW_OK);
    code = decode_len(buf.data, buf.len);
    dw_buf_cleanup(&buf);
    return code;
}

/* n copies of the UTF-8 text unit, malloc'd. */
static char *repeat(const char *unit, size_t n)
{
    size_t len = strlen(unit);
    char *s = malloc(len * n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * len, unit, len);
    s[len * n] = '\0';
    return s;
}

/* ---- the valid example ------------------------------------------------ */

static void test_full_example_every_field(void **state)
{
    (void)state;
    struct dw_request *req = decode_ok(full_example);

    assert_string_equal(req->event_id, "evt-20251029-0001");
    assert_string_equal(req->title, "Grand opening: 20% off all coffee");
    assert_string_equal(req->content, "Visit us this weekend ...");
    assert_string_equal(req->image_url, "https://cdn.example.com/e/0001.png");
    assert_string_equal(req->requested_at, "2025-10-29T15:13:01+09:00");
    assert_true(req->requested_at_ms == INT64_C(1761718381000)); /* 06:13:01Z */
    assert_int_equal(req->channels, (1u << DW_CHANNEL_COUNT) - 1);
    assert_int_equal(req->channel_count, 6);
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++)
        assert_true(dw_request_has(req, (enum dw_channel_id)ch));
    assert_string_equal(RADIUS(req), "1km");
    assert_string_equal(REGION(req), "Seoul/Gangnam");
    assert_string_equal(PHONE_NUMBER(req), "02-1234-5678");
    dw_request_destroy(req);
}

static void test_minimal_request(void **state)
{
    (void)state;
    struct dw_request *req = decode_ok(minimal);

    assert_string_equal(req->event_id, "e1");
    assert_string_equal(req->title, "t");
    assert_null(req->content);
    assert_null(req->image_url);
    assert_null(req->requested_at);
    assert_true(req->requested_at_ms == 0);
    assert_int_equal(req->channels, 1u << DW_CHANNEL_NAVER);
    assert_int_equal(req->channel_count, 1);
    assert_false(dw_request_has(req, DW_CHANNEL_KAKAO));
    assert_null(RADIUS(req));
    assert_null(REGION(req));
    assert_null(PHONE_NUMBER(req));
    dw_request_destroy(req);
}

static void test_errbuf_optional(void **state)
{
    (void)state;
    struct dw_request *req = NULL;
    char tiny[8];

    assert_code(dw_request_decode("[]", 2, &req, NULL, 0), DW_DLQ_INVALID_JSON);
    assert_null(req);
    assert_code(dw_request_decode("[]", 2, &req, tiny, 0), DW_DLQ_INVALID_JSON);
    assert_code(dw_request_decode("[]", 2, &req, tiny, sizeof(tiny)), DW_DLQ_INVALID_JSON);
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1); /* truncated, terminated */
    assert_code(dw_request_decode(minimal, strlen(minimal), &req, NULL, 0), DW_DLQ_NONE);
    assert_non_null(req);
    dw_request_destroy(req);
}

/* ---- size and bytes ---------------------------------------------------- */

static void test_too_large_whatever_the_bytes(void **state)
{
    (void)state;
    size_t len = DW_REQUEST_MAX_BYTES + 1;
    char *garbage = malloc(len);
    assert_non_null(garbage);
    memset(garbage, 0xFF, len);
    assert_code(decode_len(garbage, len), DW_DLQ_TOO_LARGE);
    assert_string_equal(last_err, "value: 1048577 bytes, at most 1048576 allowed");
    free(garbage);

    /* Even a missing value: the size comes first. */
    struct dw_request *req = NULL;
    assert_code(dw_request_decode(NULL, len, &req, NULL, 0), DW_DLQ_TOO_LARGE);
    assert_null(req);
}

static void test_exactly_max_bytes_is_not_too_large(void **state)
{
    (void)state;
    size_t len = DW_REQUEST_MAX_BYTES;
    char *value = malloc(len + 1);
    assert_non_null(value);

    /* A valid request padded with white space to exactly 1 MiB is fine. */
    memset(value, ' ', len + 1);
    memcpy(value, minimal, strlen(minimal));
    assert_code(decode_len(value, len), DW_DLQ_NONE);
    /* One byte more is too large. */
    assert_code(decode_len(value, len + 1), DW_DLQ_TOO_LARGE);
    /* Exactly 1 MiB of garbage is judged by its bytes, not its size. */
    memset(value, 0xFF, len);
    assert_code(decode_len(value, len), DW_DLQ_INVALID_JSON);
    free(value);
}

static void test_null_value(void **state)
{
    (void)state;
    assert_code(decode_len(NULL, 0), DW_DLQ_INVALID_JSON);
    assert_code(decode_len(NULL, 17), DW_DLQ_INVALID_JSON);
}

static void test_empty_value(void **state)
{
    (void)state;
    assert_code(decode_len("", 0), DW_DLQ_INVALID_JSON);
    assert_code(decode_text("  \n "), DW_DLQ_INVALID_JSON);
}

static void test_invalid_utf8_in_string(void **state)
{
    (void)state;
    assert_code(decode_with_raw_member("\"x\":\"\xC3\x28\""), DW_DLQ_INVALID_JSON);
    assert_code(
        decode_text("{\"eventId\":\"e1\",\"title\":\"caf\xC3\x28\",\"channels\":[\"NAVER\"]}"),
        DW_DLQ_INVALID_JSON);
    /* A lone continuation byte, a sequence cut by the quote, 0xFF. */
    assert_code(decode_with_raw_member("\"x\":\"\x80\""), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":\"\xE2\x82\""), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":\"\xFF\""), DW_DLQ_INVALID_JSON);
    /* Cut at the very end of the value. */
    assert_code(decode_len("{\"x\":\"\xE2\x82", 8), DW_DLQ_INVALID_JSON);
    /* In a key. */
    assert_code(decode_with_raw_member("\"\xC3\x28\":1"), DW_DLQ_INVALID_JSON);
}

static void test_overlong_and_non_characters(void **state)
{
    (void)state;
    assert_code(decode_with_raw_member("\"x\":\"\xC0\xAF\""), DW_DLQ_INVALID_JSON); /* '/' */
    assert_code(decode_with_raw_member("\"x\":\"\xC1\xBF\""), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":\"\xE0\x80\xAF\""), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":\"\xF0\x80\x80\xAF\""), DW_DLQ_INVALID_JSON);
    /* A UTF-16 surrogate encoded as UTF-8 (CESU-8). */
    assert_code(decode_with_raw_member("\"x\":\"\xED\xA0\x80\""), DW_DLQ_INVALID_JSON);
    /* Above U+10FFFF. */
    assert_code(decode_with_raw_member("\"x\":\"\xF4\x90\x80\x80\""), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":\"\xF5\x80\x80\x80\""), DW_DLQ_INVALID_JSON);
    /* The edges that are valid: U+0080, U+07FF, U+0800, U+D7FF, U+E000,
     * U+FFFF, U+10000, U+10FFFF. */
    assert_code(decode_with_raw_member("\"x\":\"\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80"
                                       "\x80\xEF\xBF\xBF\xF0\x90\x80\x80\xF4\x8F\xBF\xBF\""),
                DW_DLQ_NONE);
}

static void test_embedded_nul_byte(void **state)
{
    (void)state;
    static const char in_string[] =
        "{\"eventId\":\"e1\",\"title\":\"a\0b\",\"channels\":[\"NAVER\"]}";
    static const char after[] = "{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"NAVER\"]}\0";

    assert_code(decode_len(in_string, sizeof(in_string) - 1), DW_DLQ_INVALID_JSON);
    assert_code(decode_len(after, sizeof(after) - 1), DW_DLQ_INVALID_JSON);
}

static void test_trailing_garbage(void **state)
{
    (void)state;
    char text[256];

    dw_snprintf(text, sizeof(text), "%s x", minimal);
    assert_code(decode_text(text), DW_DLQ_INVALID_JSON);
    dw_snprintf(text, sizeof(text), "%s{}", minimal);
    assert_code(decode_text(text), DW_DLQ_INVALID_JSON);
    dw_snprintf(text, sizeof(text), "%s,", minimal);
    assert_code(decode_text(text), DW_DLQ_INVALID_JSON);
    /* White space around the object is fine. */
    dw_snprintf(text, sizeof(text), " \r\n\t%s \r\n\t", minimal);
    assert_code(decode_text(text), DW_DLQ_NONE);
    /* But not white space JSON does not know. */
    dw_snprintf(text, sizeof(text), "%s\f", minimal);
    assert_code(decode_text(text), DW_DLQ_INVALID_JSON);
}

static void test_not_an_object(void **state)
{
    (void)state;
    char text[256];

    dw_snprintf(text, sizeof(text), "[%s]", minimal);
    assert_code(decode_text(text), DW_DLQ_INVALID_JSON);
    assert_code(decode_text("[]"), DW_DLQ_INVALID_JSON);
    assert_code(decode_text("42"), DW_DLQ_INVALID_JSON);
    assert_code(decode_text("42 "), DW_DLQ_INVALID_JSON);
    assert_code(decode_text("\"evt\""), DW_DLQ_INVALID_JSON);
    assert_code(decode_text("null"), DW_DLQ_INVALID_JSON);
    assert_code(decode_text("true"), DW_DLQ_INVALID_JSON);
    assert_code(decode_text("{\"eventId\":\"e1\""), DW_DLQ_INVALID_JSON); /* truncated */
}

/* json-c 0.16 takes these even in strict mode; JSON (RFC 8259) does not. */
static void test_not_json_even_if_json_c_would_take_it(void **state)
{
    (void)state;
    assert_code(decode_with_raw_member("\"x\":'single'"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("'x':1"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":NaN"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":Infinity"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":-Infinity"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":1."), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":-01"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":01"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":.5"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":+1"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":1e"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":\"tab\there\""), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":\"line\nbreak\""), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\x01\":1"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":1/*c*/"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("x:1"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":True"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":[1,]"), DW_DLQ_INVALID_JSON);
    assert_code(decode_with_raw_member("\"x\":\"\\x41\""), DW_DLQ_INVALID_JSON);
    /* A byte order mark is not part of JSON text. */
    char text[256];
    dw_snprintf(text, sizeof(text), "\xEF\xBB\xBF%s", minimal);
    assert_code(decode_text(text), DW_DLQ_INVALID_JSON);
}

static void test_json_numbers_and_literals_accepted(void **state)
{
    (void)state;
    assert_code(decode_with_raw_member("\"x\":[0,-0,1,-1,0.5,-0.0,1e5,1E+5,1.5e-3,10]"),
                DW_DLQ_NONE);
    assert_code(decode_with_raw_member("\"x\":123456789012345678901234567890"), DW_DLQ_NONE);
    assert_code(decode_with_raw_member("\"x\":-123456789012345678901234567890.5"), DW_DLQ_NONE);
    assert_code(decode_with_raw_member("\"x\":1e999"), DW_DLQ_NONE);
    assert_code(decode_with_raw_member("\"x\":-1e-999"), DW_DLQ_NONE);
    assert_code(decode_with_raw_member("\"x\":[true,false,null,{},[],\"\"]"), DW_DLQ_NONE);
    assert_code(decode_with_raw_member("\"x\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\""), DW_DLQ_NONE);
    assert_code(decode_with_raw_member("\"\":1"), DW_DLQ_NONE);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    struct dw_buf buf;

    /* 60 levels inside the root's 1 (and the member's) stay within 64. */
    dw_buf_init(&buf, 1 << 20);
    assert_int_equal(dw_buf_printf(&buf, "{\"x\":"), DW_OK);
    for (int i = 0; i < 60; i++)
        assert_int_equal(dw_buf_append(&buf, "[", 1), DW_OK);
    for (int i = 0; i < 60; i++)
        assert_int_equal(dw_buf_append(&buf, "]", 1), DW_OK);
    assert_int_equal(dw_buf_printf(&buf, ",%s", minimal + 1), DW_OK);
    assert_code(decode_len(buf.data, buf.len), DW_DLQ_NONE);

    dw_buf_reset(&buf);
    assert_int_equal(dw_buf_printf(&buf, "{\"x\":"), DW_OK);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(dw_buf_append(&buf, "[", 1), DW_OK);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(dw_buf_append(&buf, "]", 1), DW_OK);
    assert_int_equal(dw_buf_printf(&buf, ",%s", minimal + 1), DW_OK);
    assert_code(decode_len(buf.data, buf.len), DW_DLQ_INVALID_JSON);
    assert_non_null(strstr(last_err, "deeper"));
    dw_buf_cleanup(&buf);
}

static void test_unicode_escapes(void **state)
{
    (void)state;
    struct dw_request *req;

    /* A surrogate pair decodes to one 4-byte code point. */
    req = decode_ok("{\"eventId\":\"e1\",\"title\":\"\\ud83d\\ude00 \\uAC00\","
                    "\"channels\":[\"NAVER\"]}");
    assert_string_equal(req->title, "\xF0\x9F\x98\x80 \xEA\xB0\x80");
    dw_request_destroy(req);

    /* A lone surrogate escape is valid JSON text; json-c turns it into
     * U+FFFD, so what we hand on is still valid UTF-8. */
    req = decode_ok("{\"eventId\":\"e1\",\"title\":\"a\\ud800b\\udc00\","
                    "\"channels\":[\"NAVER\"]}");
    assert_string_equal(req->title, "a\xEF\xBF\xBD"
                                    "b\xEF\xBF\xBD");
    dw_request_destroy(req);

    /* 200 code points written as escaped surrogate pairs are 200, not 400. */
    char *pairs = repeat("\\ud83d\\ude00", 200);
    struct dw_buf buf;
    dw_buf_init(&buf, 1 << 20);
    assert_int_equal(dw_buf_printf(&buf,
                                   "{\"eventId\":\"e1\",\"title\":\"%s\","
                                   "\"channels\":[\"NAVER\"]}",
                                   pairs),
                     DW_OK);
    assert_code(decode_len(buf.data, buf.len), DW_DLQ_NONE);
    dw_buf_cleanup(&buf);
    free(pairs);
}

/* "\u0000" is valid JSON, but the strings we hand out are C strings. */
static void test_nul_escape_makes_field_invalid(void **state)
{
    (void)state;
    assert_code(
        decode_text("{\"eventId\":\"e1\",\"title\":\"a\\u0000b\",\"channels\":[\"NAVER\"]}"),
        DW_DLQ_INVALID_FIELD);
    assert_code(decode_text("{\"eventId\":\"e1\\u0000\",\"title\":\"t\",\"channels\":[\"NAVER\"]}"),
                DW_DLQ_INVALID_EVENT_ID);
    assert_code(
        decode_text("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"NAVER\\u0000x\"]}"),
        DW_DLQ_INVALID_CHANNELS);
    assert_code(decode_text("{\"eventId\":\"e1\",\"title\":\"t\",\"content\":\"\\u0000\","
                            "\"channels\":[\"NAVER\"]}"),
                DW_DLQ_INVALID_FIELD);
    assert_code(decode_text("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"RINGOBIZ\"],"
                            "\"channelSettings\":{\"RINGOBIZ\":{\"phoneNumber\":\"1\\u00002\"}}}"),
                DW_DLQ_INVALID_FIELD);
    /* In an unknown field it does not matter. */
    assert_code(decode_with_raw_member("\"x\":\"\\u0000\""), DW_DLQ_NONE);
}

/* ---- eventId ------------------------------------------------------------ */

static void test_event_id_required(void **state)
{
    (void)state;
    assert_code(decode_without("eventId"), DW_DLQ_INVALID_EVENT_ID);
    assert_string_equal(last_err, "eventId: required");
    assert_code(decode_with("eventId", "null"), DW_DLQ_INVALID_EVENT_ID);
    assert_code(decode_with_string("eventId", ""), DW_DLQ_INVALID_EVENT_ID);
}

static void test_event_id_not_a_string(void **state)
{
    (void)state;
    assert_code(decode_with("eventId", "12345"), DW_DLQ_INVALID_EVENT_ID);
    assert_code(decode_with("eventId", "[\"e1\"]"), DW_DLQ_INVALID_EVENT_ID);
    assert_code(decode_with("eventId", "{}"), DW_DLQ_INVALID_EVENT_ID);
    assert_code(decode_with("eventId", "true"), DW_DLQ_INVALID_EVENT_ID);
}

static void test_event_id_length(void **state)
{
    (void)state;
    char *id64 = repeat("a", 64), *id65 = repeat("a", 65);
    struct dw_request *req = ok_with_string(full_example, "eventId", id64);

    assert_string_equal(req->event_id, id64);
    dw_request_destroy(req);
    assert_code(decode_with_string("eventId", id65), DW_DLQ_INVALID_EVENT_ID);
    assert_string_equal(last_err, "eventId: 65 characters, at most 64 allowed");
    req = ok_with_string(full_example, "eventId", "a");
    dw_request_destroy(req);
    free(id64);
    free(id65);
}

static void test_event_id_characters(void **state)
{
    (void)state;
    struct dw_request *req =
        ok_with_string(full_example, "eventId", "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-_");
    dw_request_destroy(req);
    req = ok_with_string(full_example, "eventId", "abcdefghijklmnopqrstuvwxyz0123456789");
    dw_request_destroy(req);
    static const char *const bad[] = {"evt 1",       "evt/1", "evt+1", "evt:1", "evt@1",
                                      "caf\xC3\xA9", " evt",  "evt\n", "evt#1", "evt%201"};
    for (size_t i = 0; i < DW_ARRAY_LEN(bad); i++)
        assert_code(decode_with_string("eventId", bad[i]), DW_DLQ_INVALID_EVENT_ID);
}

/* ---- title, content, imageUrl ------------------------------------------- */

static void test_title_required(void **state)
{
    (void)state;
    assert_code(decode_without("title"), DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err, "title: required");
    assert_code(decode_with("title", "null"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with_string("title", ""), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("title", "42"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("title", "[\"t\"]"), DW_DLQ_INVALID_FIELD);
}

static void test_title_length_counts_code_points(void **state)
{
    (void)state;
    /* Hangul syllables are 3 bytes, the emoji 4: 600 and 800 bytes. */
    static const char *const units[] = {"a", "\xEA\xB0\x80", "\xF0\x9F\x98\x80"};

    for (size_t u = 0; u < DW_ARRAY_LEN(units); u++) {
        char *t200 = repeat(units[u], 200), *t201 = repeat(units[u], 201);
        struct dw_request *req = ok_with_string(full_example, "title", t200);
        assert_string_equal(req->title, t200);
        dw_request_destroy(req);
        assert_code(decode_with_string("title", t201), DW_DLQ_INVALID_FIELD);
        assert_string_equal(last_err, "title: 201 characters, at most 200 allowed");
        free(t200);
        free(t201);
    }
}

static void test_content_length(void **state)
{
    (void)state;
    char *c10000 = repeat("\xEA\xB0\x80", 10000), *c10001 = repeat("\xEA\xB0\x80", 10001);
    struct dw_request *req = ok_with_string(full_example, "content", c10000);

    assert_string_equal(req->content, c10000);
    dw_request_destroy(req);
    assert_code(decode_with_string("content", c10001), DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err, "content: 10001 characters, at most 10000 allowed");
    assert_code(decode_with("content", "7"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("content", "{}"), DW_DLQ_INVALID_FIELD);
    free(c10000);
    free(c10001);
}

static void test_null_or_empty_content_is_absent(void **state)
{
    (void)state;
    struct json_object *null_value = NULL;
    char *text = variant_of(full_example, "content", null_value, false);
    struct dw_request *req = decode_ok(text);
    assert_null(req->content);
    dw_request_destroy(req);
    free(text);

    req = ok_with_string(full_example, "content", "");
    assert_null(req->content);
    dw_request_destroy(req);

    text = variant_of(full_example, "content", NULL, true);
    req = decode_ok(text);
    assert_null(req->content);
    dw_request_destroy(req);
    free(text);
}

static void test_image_url(void **state)
{
    (void)state;
    static const char *const good[] = {"http://x", "https://cdn.example.com/a.png",
                                       "HTTPS://CDN.EXAMPLE.COM/A.PNG", "Http://x/y?z=1"};
    static const char *const bad[] = {"",           "http://",
                                      "https://",   "ftp://x/y",
                                      "https:/x",   "//cdn.example.com/a.png",
                                      "cdn.x/a",    " https://x/y",
                                      "httpss://x", "data:image/png;base64,AAAA"};

    for (size_t i = 0; i < DW_ARRAY_LEN(good); i++) {
        struct dw_request *req = ok_with_string(full_example, "imageUrl", good[i]);
        assert_string_equal(req->image_url, good[i]);
        dw_request_destroy(req);
    }
    for (size_t i = 0; i < DW_ARRAY_LEN(bad); i++)
        assert_code(decode_with_string("imageUrl", bad[i]), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("imageUrl", "1"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("imageUrl", "[\"https://x\"]"), DW_DLQ_INVALID_FIELD);
}

/* CONTRACT 2.1: imageUrl at most 2,048 characters (code points, not bytes). */
static void test_image_url_length(void **state)
{
    (void)state;
    static const char *const units[] = {"a", "\xEA\xB0\x80"};
    for (size_t u = 0; u < DW_ARRAY_LEN(units); u++) {
        size_t prefix = strlen("https://x/"); /* 10 characters */
        char *tail = repeat(units[u], 2048 - prefix), *longer = repeat(units[u], 2049 - prefix);
        char url[16384], url2[16384];
        dw_snprintf(url, sizeof(url), "https://x/%s", tail);
        dw_snprintf(url2, sizeof(url2), "https://x/%s", longer);
        struct dw_request *req = ok_with_string(full_example, "imageUrl", url);
        assert_string_equal(req->image_url, url);
        dw_request_destroy(req);
        assert_code(decode_with_string("imageUrl", url2), DW_DLQ_INVALID_FIELD);
        assert_string_equal(last_err, "imageUrl: 2049 characters, at most 2048 allowed");
        free(tail);
        free(longer);
    }
}

/* CONTRACT 2.1: each channelSettings value at most 200 characters, for
 * channels requested or not. */
static void test_settings_length(void **state)
{
    (void)state;
    static const char *const paths[] = {"channelSettings.URIDONGNETV.radius",
                                        "channelSettings.GINITV.region",
                                        "channelSettings.RINGOBIZ.phoneNumber"};
    char *v200 = repeat("\xEA\xB0\x80", 200), *v201 = repeat("\xEA\xB0\x80", 201);
    for (size_t i = 0; i < DW_ARRAY_LEN(paths); i++) {
        struct dw_request *req = ok_with_string(full_example, paths[i], v200);
        dw_request_destroy(req);
        assert_code(decode_with_string(paths[i], v201), DW_DLQ_INVALID_FIELD);
        char want[128];
        dw_snprintf(want, sizeof(want), "%s: 201 characters, at most 200 allowed", paths[i]);
        assert_string_equal(last_err, want);
    }
    free(v200);
    free(v201);
}

/* The byte estimate grows with what the request holds and with the number
 * of channels that carry it. */
static void test_request_bytes(void **state)
{
    (void)state;
    struct dw_request *small = decode_ok(minimal);
    assert_true(small->bytes >= sizeof(*small));
    char *c10000 = repeat("\xEA\xB0\x80", 10000);
    struct dw_request *big = ok_with_string(full_example, "content", c10000);
    /* Six channels, each carrying the 30,000-byte content, plus the request. */
    assert_true(big->bytes >= 7 * 30000);
    assert_true(big->bytes < 7 * 30000 + 7 * 1024 + sizeof(*big));
    free(c10000);
    dw_request_destroy(small);
    dw_request_destroy(big);
}

static void test_image_url_optional_without_instagram(void **state)
{
    (void)state;
    struct dw_request *req = decode_ok(minimal);
    assert_null(req->image_url);
    dw_request_destroy(req);
    req = decode_ok(
        "{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"KAKAO\"],\"imageUrl\":null}");
    assert_null(req->image_url);
    dw_request_destroy(req);
}

/* ---- channels ----------------------------------------------------------- */

static void test_channels_each_name(void **state)
{
    (void)state;
    static const char *const names[] = {"URIDONGNETV", "GINITV", "RINGOBIZ",
                                        "INSTAGRAM",   "NAVER",  "KAKAO"};
    for (int i = 0; i < DW_CHANNEL_COUNT; i++) {
        char text[512];
        dw_snprintf(text, sizeof(text),
                    "{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"%s\"],"
                    "\"imageUrl\":\"https://x/y\","
                    "\"channelSettings\":{\"RINGOBIZ\":{\"phoneNumber\":\"1\"}}}",
                    names[i]);
        struct dw_request *req = decode_ok(text);
        assert_int_equal(req->channels, 1u << i);
        assert_int_equal(req->channel_count, 1);
        dw_request_destroy(req);
    }
    struct dw_request *req =
        decode_ok("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"KAKAO\",\"GINITV\"]}");
    assert_int_equal(req->channels, (1u << DW_CHANNEL_KAKAO) | (1u << DW_CHANNEL_GINITV));
    assert_int_equal(req->channel_count, 2);
    dw_request_destroy(req);
}

static void test_channels_required(void **state)
{
    (void)state;
    assert_code(decode_without("channels"), DW_DLQ_INVALID_CHANNELS);
    assert_string_equal(last_err, "channels: required");
    assert_code(decode_with("channels", "null"), DW_DLQ_INVALID_CHANNELS);
}

static void test_channels_empty(void **state)
{
    (void)state;
    assert_code(decode_with("channels", "[]"), DW_DLQ_INVALID_CHANNELS);
}

static void test_channels_not_an_array_of_strings(void **state)
{
    (void)state;
    assert_code(decode_with("channels", "\"KAKAO\""), DW_DLQ_INVALID_CHANNELS);
    assert_code(decode_with("channels", "{\"KAKAO\":true}"), DW_DLQ_INVALID_CHANNELS);
    assert_code(decode_with("channels", "[\"KAKAO\",3]"), DW_DLQ_INVALID_CHANNELS);
    assert_code(decode_with("channels", "[null]"), DW_DLQ_INVALID_CHANNELS);
    assert_code(decode_with("channels", "[[\"KAKAO\"]]"), DW_DLQ_INVALID_CHANNELS);
}

static void test_channels_unknown(void **state)
{
    (void)state;
    assert_code(decode_with("channels", "[\"KAKAO\",\"TWITTER\"]"), DW_DLQ_INVALID_CHANNELS);
    assert_string_equal(last_err,
                        "channels[1]: \"TWITTER\" is not a channel name (names are upper case)");
    assert_code(decode_with("channels", "[\"kakao\"]"), DW_DLQ_INVALID_CHANNELS);
    assert_code(decode_with("channels", "[\"Kakao\"]"), DW_DLQ_INVALID_CHANNELS);
    assert_code(decode_with("channels", "[\" KAKAO\"]"), DW_DLQ_INVALID_CHANNELS);
    assert_code(decode_with("channels", "[\"\"]"), DW_DLQ_INVALID_CHANNELS);
}

static void test_channels_duplicate(void **state)
{
    (void)state;
    assert_code(decode_with("channels", "[\"NAVER\",\"KAKAO\",\"NAVER\"]"),
                DW_DLQ_INVALID_CHANNELS);
    assert_string_equal(last_err, "channels[2]: NAVER is listed twice");
}

/* ---- channelSettings ----------------------------------------------------- */

static void test_settings_optional(void **state)
{
    (void)state;
    struct dw_request *req =
        decode_ok("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"KAKAO\"],"
                  "\"channelSettings\":null}");
    assert_null(RADIUS(req));
    dw_request_destroy(req);
    req = decode_ok("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"KAKAO\"],"
                    "\"channelSettings\":{}}");
    dw_request_destroy(req);
}

static void test_settings_not_an_object(void **state)
{
    (void)state;
    assert_code(decode_with("channelSettings", "[]"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("channelSettings", "\"radius=1km\""), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("channelSettings.URIDONGNETV", "\"1km\""), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("channelSettings.GINITV", "[]"), DW_DLQ_INVALID_FIELD);
}

static void test_settings_values_must_be_strings(void **state)
{
    (void)state;
    assert_code(decode_with("channelSettings.URIDONGNETV.radius", "1000"), DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err, "channelSettings.URIDONGNETV.radius: must be a string, not int");
    assert_code(decode_with("channelSettings.GINITV.region", "[\"Seoul\"]"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("channelSettings.RINGOBIZ.phoneNumber", "212345678"),
                DW_DLQ_INVALID_FIELD);
}

static void test_settings_empty_or_null_are_absent(void **state)
{
    (void)state;
    struct dw_request *req = ok_with_string(full_example, "channelSettings.URIDONGNETV.radius", "");
    assert_null(RADIUS(req));
    dw_request_destroy(req);

    char *text = variant_of(full_example, "channelSettings.GINITV.region", NULL, false);
    req = decode_ok(text);
    assert_null(REGION(req));
    assert_string_equal(RADIUS(req), "1km");
    dw_request_destroy(req);
    free(text);

    text = variant_of(full_example, "channelSettings.GINITV", NULL, false);
    req = decode_ok(text);
    assert_null(REGION(req));
    dw_request_destroy(req);
    free(text);
}

static void test_settings_of_channels_not_requested(void **state)
{
    (void)state;
    char *text = variant_of(full_example, "channels", json_tokener_parse("[\"KAKAO\"]"), false);
    struct dw_request *req = decode_ok(text);
    /* Read and kept; the adapters of the requested channels ignore them. */
    assert_string_equal(RADIUS(req), "1km");
    assert_string_equal(PHONE_NUMBER(req), "02-1234-5678");
    assert_int_equal(req->channels, 1u << DW_CHANNEL_KAKAO);
    dw_request_destroy(req);
    free(text);
}

static void test_ringobiz_needs_phone_number(void **state)
{
    (void)state;
    assert_code(decode_without("channelSettings.RINGOBIZ.phoneNumber"), DW_DLQ_INVALID_FIELD);
    assert_string_equal(
        last_err, "channelSettings.RINGOBIZ.phoneNumber: required when RINGOBIZ is requested");
    assert_code(decode_without("channelSettings.RINGOBIZ"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_without("channelSettings"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with_string("channelSettings.RINGOBIZ.phoneNumber", ""),
                DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("channelSettings.RINGOBIZ.phoneNumber", "null"), DW_DLQ_INVALID_FIELD);
    /* Without RINGOBIZ there is nothing to require. */
    assert_code(decode_text("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"NAVER\"],"
                            "\"channelSettings\":{\"RINGOBIZ\":{}}}"),
                DW_DLQ_NONE);
}

static void test_instagram_needs_image_url(void **state)
{
    (void)state;
    assert_code(decode_without("imageUrl"), DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err, "imageUrl: required when INSTAGRAM is requested (Instagram posts "
                                  "need an image)");
    assert_code(decode_with("imageUrl", "null"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_text("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"INSTAGRAM\"]}"),
                DW_DLQ_INVALID_FIELD);
    struct dw_request *req = decode_ok("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":"
                                       "[\"INSTAGRAM\"],\"imageUrl\":\"https://x/y.png\"}");
    dw_request_destroy(req);
}

/* ---- requestedAt ---------------------------------------------------------- */

static void test_requested_at_good(void **state)
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
        struct dw_request *req = ok_with_string(full_example, "requestedAt", good[i].text);
        assert_string_equal(req->requested_at, good[i].text);
        if (req->requested_at_ms != good[i].ms)
            print_error("%s: got %lld, want %lld\n", good[i].text, (long long)req->requested_at_ms,
                        (long long)good[i].ms);
        assert_true(req->requested_at_ms == good[i].ms);
        dw_request_destroy(req);
    }
}

static void test_requested_at_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "2025-02-29T00:00:00Z", /* not a leap year */
        "1900-02-29T00:00:00Z", /* centuries are not, unless by 400 */
        "2025-02-30T00:00:00Z",
        "2025-04-31T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-00-10T00:00:00Z",
        "2025-10-00T00:00:00Z",
        "2025-10-32T00:00:00Z",
        "2025-10-29T24:00:00Z",
        "2025-10-29T23:60:00Z",
        "2025-10-29T12:00:60Z", /* 60 only where a leap second can be */
        "2025-10-29T23:59:61Z",
        "2025-10-29T15:13:01", /* no offset */
        "2025-10-29 15:13:01Z",
        "2025-10-29T15:13:01+0900",
        "2025-10-29T15:13:01+09",
        "2025-10-29T15:13:01+24:00",
        "2025-10-29T15:13:01+09:60",
        "2025-10-29T15:13:01.Z",
        "2025-10-29T15:13Z",
        "2025-10-29",
        "25-10-29T15:13:01Z",
        "2025-1-29T15:13:01Z",
        " 2025-10-29T15:13:01Z",
        "2025-10-29T15:13:01Z ",
        "2025-10-29T15:13:01ZZ",
        "2025-10-29T15:13:01UTC",
        "２025-10-29T15:13:01Z",
        "now",
        "",
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(bad); i++) {
        enum dw_dlq_code code = decode_with_string("requestedAt", bad[i]);
        if (code != DW_DLQ_INVALID_FIELD)
            print_error("accepted \"%s\"\n", bad[i]);
        assert_code(code, DW_DLQ_INVALID_FIELD);
        assert_true(strncmp(last_err, "requestedAt: ", 13) == 0);
    }
    assert_code(decode_with("requestedAt", "1761718381000"), DW_DLQ_INVALID_FIELD);
    assert_code(decode_with("requestedAt", "{}"), DW_DLQ_INVALID_FIELD);
}

static void test_requested_at_optional(void **state)
{
    (void)state;
    char *text = variant_of(full_example, "requestedAt", NULL, false);
    struct dw_request *req = decode_ok(text);
    assert_null(req->requested_at);
    assert_true(req->requested_at_ms == 0);
    dw_request_destroy(req);
    free(text);
    assert_code(decode_without("requestedAt"), DW_DLQ_NONE);
}

/* ---- the rest -------------------------------------------------------------- */

static void test_unknown_fields_ignored(void **state)
{
    (void)state;
    struct dw_request *req = decode_ok(
        "{\"schemaVersion\":2,\"eventId\":\"e1\",\"extra\":{\"deep\":[1,{\"x\":null}]},"
        "\"title\":\"t\",\"tags\":[\"a\",\"b\"],\"channels\":[\"NAVER\"],\"flag\":true,"
        "\"channelSettings\":{\"NAVER\":{\"blogId\":\"b\"},\"URIDONGNETV\":{\"radius\":\"2km\","
        "\"unit\":\"km\"},\"TWITTER\":7},\"price\":1.5e3,\"nothing\":null,\"Title\":7}");
    assert_string_equal(req->event_id, "e1");
    assert_string_equal(req->title, "t");
    assert_string_equal(RADIUS(req), "2km");
    dw_request_destroy(req);
}

/* The first broken rule decides: eventId before title before channels. */
static void test_rule_order(void **state)
{
    (void)state;
    assert_code(decode_text("{\"eventId\":\"a b\",\"title\":\"\",\"channels\":[]}"),
                DW_DLQ_INVALID_EVENT_ID);
    assert_code(decode_text("{\"eventId\":\"ab\",\"title\":\"\",\"channels\":[]}"),
                DW_DLQ_INVALID_FIELD);
    assert_code(decode_text("{\"eventId\":\"ab\",\"title\":\"t\",\"channels\":[],"
                            "\"requestedAt\":\"x\"}"),
                DW_DLQ_INVALID_CHANNELS);
    assert_code(decode_text("{\"eventId\":\"ab\",\"title\":\"t\",\"channels\":[\"RINGOBIZ\"],"
                            "\"requestedAt\":\"x\"}"),
                DW_DLQ_INVALID_FIELD);
    assert_string_equal(
        last_err, "channelSettings.RINGOBIZ.phoneNumber: required when RINGOBIZ is requested");
}

/* json-c keeps the last of repeated keys; so do we. */
static void test_repeated_key_last_wins(void **state)
{
    (void)state;
    struct dw_request *req =
        decode_ok("{\"eventId\":\"first\",\"title\":\"t\",\"channels\":[\"NAVER\"],"
                  "\"eventId\":\"second\"}");
    assert_string_equal(req->event_id, "second");
    dw_request_destroy(req);
}

/* ---- the fuzz corpus ------------------------------------------------------- */

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Finds tests/fuzz/request_corpus: under $DW_SOURCE_DIR, or from the usual
 * working directories (the source root, build-dir, build-dir/tests/unit). */
static bool find_corpus(char *out, size_t outlen)
{
    static const char *const rel[] = {
        "tests/fuzz/request_corpus",
        "../tests/fuzz/request_corpus",
        "../../tests/fuzz/request_corpus",
        "../../../tests/fuzz/request_corpus",
        "../../../../tests/fuzz/request_corpus",
    };
    const char *src = getenv("DW_SOURCE_DIR");

    if (src && *src) {
        dw_snprintf(out, outlen, "%s/tests/fuzz/request_corpus", src);
        return is_dir(out); /* when it is set, it is meant */
    }
    for (size_t i = 0; i < DW_ARRAY_LEN(rel); i++) {
        if (is_dir(rel[i])) {
            dw_strlcpy(out, rel[i], outlen);
            return true;
        }
    }
    return false;
}

/* Reads a whole file into an exact-size buffer. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *data;

    assert_non_null(f);
    assert_int_equal(fstat(fileno(f), &st), 0);
    *len = (size_t)st.st_size;
    data = malloc(*len ? *len : 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, *len, f), *len);
    fclose(f);
    return data;
}

/* The expected code of each corpus file, from request_corpus.expected
 * ("name CODE" lines; # starts a comment). */
struct expectation {
    char name[256];
    char code[32];
    bool seen;
};

static size_t read_expectations(const char *dir, struct expectation *out, size_t max)
{
    char path[8192], line[512];
    size_t n = 0;
    dw_snprintf(path, sizeof(path), "%s.expected", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("%s: cannot open", path);
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        assert_true(n < max);
        if (sscanf(line, "%255s %31s", out[n].name, out[n].code) != 2)
            fail_msg("%s: bad line: %s", path, line);
        out[n].seen = false;
        n++;
    }
    fclose(f);
    return n;
}

/* Every corpus file decodes to the code its expectation names: a change in
 * the decoder's verdict on a corpus file fails here, not silently. */
static void test_fuzz_corpus_replays(void **state)
{
    (void)state;
    char dir[4096], path[8192];
    struct dirent *ent;
    DIR *d;
    int files = 0;
    static struct expectation want[256];

    if (!find_corpus(dir, sizeof(dir)))
        fail_msg("tests/fuzz/request_corpus not found: set DW_SOURCE_DIR to the source tree");
    size_t nwant = read_expectations(dir, want, DW_ARRAY_LEN(want));
    d = opendir(dir);
    assert_non_null(d);
    while ((ent = readdir(d)) != NULL) {
        struct dw_request *req;
        size_t len;
        char *data;

        if (ent->d_name[0] == '.')
            continue;
        dw_snprintf(path, sizeof(path), "%s/%s", dir, ent->d_name);
        data = read_file(path, &len);
        enum dw_dlq_code code = decode_keep(data, len, &req);
        free(data);
        print_message("  %-32s %s %s\n", ent->d_name, code_name(code), last_err);
        /* A valid request has every field a request must have. */
        if (code == DW_DLQ_NONE) {
            assert_non_null(req);
            assert_non_null(req->event_id);
            assert_non_null(req->title);
            assert_true(req->channel_count > 0);
        } else {
            assert_null(req);
        }
        dw_request_destroy(req);
        struct expectation *e = NULL;
        for (size_t i = 0; i < nwant && !e; i++)
            if (strcmp(want[i].name, ent->d_name) == 0)
                e = &want[i];
        if (!e)
            fail_msg("%s has no line in request_corpus.expected", ent->d_name);
        if (strcmp(e->code, code_name(code)) != 0)
            fail_msg("%s: decoded as %s, expected %s", ent->d_name, code_name(code), e->code);
        e->seen = true;
        files++;
    }
    closedir(d);
    if (files == 0)
        fail_msg("%s holds no files", dir);
    for (size_t i = 0; i < nwant; i++)
        if (!want[i].seen)
            fail_msg("request_corpus.expected names %s, which is not in the corpus", want[i].name);
}

/* Two requests hold the same values. */
static void assert_same_request(const struct dw_request *a, const struct dw_request *b)
{
#define SAME_STR(f)                                                                                \
    do {                                                                                           \
        if (a->f || b->f) {                                                                        \
            assert_non_null(a->f);                                                                 \
            assert_non_null(b->f);                                                                 \
            assert_string_equal(a->f, b->f);                                                       \
        }                                                                                          \
    } while (0)
    SAME_STR(event_id);
    SAME_STR(title);
    SAME_STR(content);
    SAME_STR(image_url);
    SAME_STR(requested_at);
#undef SAME_STR
    assert_int_equal(a->setting_count, b->setting_count);
    for (int i = 0; i < a->setting_count; i++) {
        assert_int_equal(a->settings[i].channel, b->settings[i].channel);
        assert_string_equal(a->settings[i].key, b->settings[i].key);
        assert_string_equal(a->settings[i].value, b->settings[i].value);
    }
    assert_true(a->requested_at_ms == b->requested_at_ms);
    assert_int_equal(a->channels, b->channels);
    assert_int_equal(a->channel_count, b->channel_count);
}

/* What the re-drive schedule keeps decodes back to the same request. */
static void test_encode_round_trip(void **state)
{
    (void)state;
    static const char *const texts[] = {
        full_example,
        minimal,
        "{\"eventId\":\"e-2\",\"title\":\"q\\\"uote \\\\ back \\u00e9 "
        "\\ud83d\\ude00\",\"content\":\"a\\nb\",\"channels\":[\"KAKAO\",\"GINITV\"],"
        "\"channelSettings\":{\"GINITV\":{\"region\":\"x/"
        "y\"},\"NAVER\":{\"a\":\"b\"}},\"unknown\":1}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct dw_request *req = decode_ok(texts[i]);
        char *json = dw_request_encode(req);
        struct dw_request *again = decode_ok(json);
        assert_same_request(req, again);
        /* Stable: encoding the decoded copy gives the same text. */
        char *json2 = dw_request_encode(again);
        assert_string_equal(json, json2);
        free(json2);
        free(json);
        dw_request_destroy(again);
        dw_request_destroy(req);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_example_every_field),
        cmocka_unit_test(test_minimal_request),
        cmocka_unit_test(test_encode_round_trip),
        cmocka_unit_test(test_errbuf_optional),
        cmocka_unit_test(test_too_large_whatever_the_bytes),
        cmocka_unit_test(test_exactly_max_bytes_is_not_too_large),
        cmocka_unit_test(test_null_value),
        cmocka_unit_test(test_empty_value),
        cmocka_unit_test(test_invalid_utf8_in_string),
        cmocka_unit_test(test_overlong_and_non_characters),
        cmocka_unit_test(test_embedded_nul_byte),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_not_json_even_if_json_c_would_take_it),
        cmocka_unit_test(test_json_numbers_and_literals_accepted),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_unicode_escapes),
        cmocka_unit_test(test_nul_escape_makes_field_invalid),
        cmocka_unit_test(test_event_id_required),
        cmocka_unit_test(test_event_id_not_a_string),
        cmocka_unit_test(test_event_id_length),
        cmocka_unit_test(test_event_id_characters),
        cmocka_unit_test(test_title_required),
        cmocka_unit_test(test_title_length_counts_code_points),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_null_or_empty_content_is_absent),
        cmocka_unit_test(test_image_url),
        cmocka_unit_test(test_image_url_optional_without_instagram),
        cmocka_unit_test(test_image_url_length),
        cmocka_unit_test(test_settings_length),
        cmocka_unit_test(test_request_bytes),
        cmocka_unit_test(test_channels_each_name),
        cmocka_unit_test(test_channels_required),
        cmocka_unit_test(test_channels_empty),
        cmocka_unit_test(test_channels_not_an_array_of_strings),
        cmocka_unit_test(test_channels_unknown),
        cmocka_unit_test(test_channels_duplicate),
        cmocka_unit_test(test_settings_optional),
        cmocka_unit_test(test_settings_not_an_object),
        cmocka_unit_test(test_settings_values_must_be_strings),
        cmocka_unit_test(test_settings_empty_or_null_are_absent),
        cmocka_unit_test(test_settings_of_channels_not_requested),
        cmocka_unit_test(test_ringobiz_needs_phone_number),
        cmocka_unit_test(test_instagram_needs_image_url),
        cmocka_unit_test(test_requested_at_good),
        cmocka_unit_test(test_requested_at_bad),
        cmocka_unit_test(test_requested_at_optional),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_rule_order),
        cmocka_unit_test(test_repeated_key_last_wins),
        cmocka_unit_test(test_fuzz_corpus_replays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
