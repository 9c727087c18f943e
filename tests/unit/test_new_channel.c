/*
 * A new channel is one type: two fake channel types, a seventh and an
 * eighth, are appended to the six of the registry, and request decoding,
 * validation and encoding take them up from their declarations alone (name,
 * settings with required flag and cap, needed fields) with no line of
 * request.c or struct dw_request naming them. Decoding against the real
 * registry still refuses their names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dw/channel.h"
#include "dw/common.h"
#include "dw/request.h"
#include "dw/status.h"

enum { TELETEXT = DW_CHANNEL_COUNT, BILLBOARD, TYPE_COUNT };

static enum dw_err fake_build(const struct dw_request *req, int step, const char *prev_id,
                              struct dw_http_call *call)
{
    (void)req, (void)step, (void)prev_id, (void)call;
    return DW_ERR_INVALID;
}

static enum dw_errcode fake_parse(int step, const char *body, size_t len,
                                  struct dw_channel_reply *reply, char *errbuf, size_t errlen)
{
    (void)step, (void)body, (void)len, (void)reply, (void)errbuf, (void)errlen;
    return DW_EC_BAD_RESPONSE;
}

/* page is required and short; color is optional, its cap 0 means the
 * contract's 200. */
static const struct dw_channel_setting teletext_settings[] = {
    {"page", true, 3},
    {"color", false, 0},
};

static const struct dw_channel_type teletext = {
    .id = (enum dw_channel_id)TELETEXT,
    .name = "TELETEXT",
    .steps = 1,
    .settings = teletext_settings,
    .setting_count = (int)DW_ARRAY_LEN(teletext_settings),
    .needs = DW_CHANNEL_NEEDS_CONTENT,
    .build = fake_build,
    .parse = fake_parse,
};

static const struct dw_channel_type billboard = {
    .id = (enum dw_channel_id)BILLBOARD,
    .name = "BILLBOARD",
    .steps = 1,
    .needs = DW_CHANNEL_NEEDS_IMAGE_URL,
    .needs_why = "a billboard shows an image",
    .build = fake_build,
    .parse = fake_parse,
};

static const struct dw_channel_type *types[TYPE_COUNT];
static char last_err[256];

static int setup(void **state)
{
    (void)state;
    const struct dw_channel_type *const *registry = dw_channel_registry();
    for (int i = 0; i < DW_CHANNEL_COUNT; i++)
        types[i] = registry[i];
    types[TELETEXT] = &teletext;
    types[BILLBOARD] = &billboard;
    return 0;
}

static enum dw_dlq_code decode(const char *text, struct dw_request **out)
{
    struct dw_request *req = NULL;
    last_err[0] = '\0';
    enum dw_dlq_code code = dw_request_decode_types(types, TYPE_COUNT, text, strlen(text), &req,
                                                    last_err, sizeof(last_err));
    if (out)
        *out = req;
    else
        dw_request_destroy(req);
    return code;
}

static void test_registry_does_not_know_them(void **state)
{
    (void)state;
    static const char text[] =
        "{\"eventId\":\"e1\",\"title\":\"t\",\"imageUrl\":\"https://i/1.png\","
        "\"channels\":[\"BILLBOARD\"]}";
    struct dw_request *req = NULL;
    assert_int_equal(dw_request_decode(text, strlen(text), &req, last_err, sizeof(last_err)),
                     DW_DLQ_INVALID_CHANNELS);
    assert_null(req);
    assert_int_equal(decode(text, NULL), DW_DLQ_NONE);
}

static void test_declared_settings_are_read(void **state)
{
    (void)state;
    struct dw_request *req = NULL;
    assert_int_equal(
        decode("{\"eventId\":\"e1\",\"title\":\"t\",\"content\":\"c\",\"channels\":[\"KAKAO\","
               "\"TELETEXT\"],\"channelSettings\":{\"TELETEXT\":{\"page\":\"100\",\"color\":"
               "\"red\",\"font\":\"x\"},\"RINGOBIZ\":{\"phoneNumber\":\"02\"}}}",
               &req),
        DW_DLQ_NONE);
    assert_non_null(req);
    assert_int_equal(req->channels, (1u << DW_CHANNEL_KAKAO) | (1u << TELETEXT));
    assert_int_equal(req->channel_count, 2);
    assert_string_equal(dw_request_setting(req, TELETEXT, "page"), "100");
    assert_string_equal(dw_request_setting(req, TELETEXT, "color"), "red");
    assert_null(dw_request_setting(req, TELETEXT, "font")); /* not declared */
    assert_string_equal(dw_request_setting(req, DW_CHANNEL_RINGOBIZ, "phoneNumber"), "02");
    assert_null(dw_request_setting(req, DW_CHANNEL_RINGOBIZ, "page"));
    dw_request_destroy(req);
}

static void test_required_setting(void **state)
{
    (void)state;
    assert_int_equal(decode("{\"eventId\":\"e1\",\"title\":\"t\",\"content\":\"c\","
                            "\"channels\":[\"TELETEXT\"],\"channelSettings\":{\"TELETEXT\":{"
                            "\"color\":\"red\"}}}",
                            NULL),
                     DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err, "channelSettings.TELETEXT.page: required when TELETEXT is "
                                  "requested");
    /* "" is absent, so it is missing too. */
    assert_int_equal(decode("{\"eventId\":\"e1\",\"title\":\"t\",\"content\":\"c\","
                            "\"channels\":[\"TELETEXT\"],\"channelSettings\":{\"TELETEXT\":{"
                            "\"page\":\"\"}}}",
                            NULL),
                     DW_DLQ_INVALID_FIELD);
    /* Not requested: not required. */
    assert_int_equal(decode("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"KAKAO\"]}", NULL),
                     DW_DLQ_NONE);
}

static void test_setting_caps(void **state)
{
    (void)state;
    /* The type's own cap, counted in code points. */
    assert_int_equal(decode("{\"eventId\":\"e1\",\"title\":\"t\",\"content\":\"c\","
                            "\"channels\":[\"TELETEXT\"],\"channelSettings\":{\"TELETEXT\":{"
                            "\"page\":\"\xEA\xB0\x80\xEA\xB0\x80\xEA\xB0\x80\"}}}",
                            NULL),
                     DW_DLQ_NONE);
    assert_int_equal(decode("{\"eventId\":\"e1\",\"title\":\"t\",\"content\":\"c\","
                            "\"channels\":[\"TELETEXT\"],\"channelSettings\":{\"TELETEXT\":{"
                            "\"page\":\"1000\"}}}",
                            NULL),
                     DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err, "channelSettings.TELETEXT.page: 4 characters, at most 3 allowed");

    /* No cap of its own: the contract's 200, checked for a channel not
     * requested too. */
    char text[512], color[202];
    memset(color, 'c', 201);
    color[201] = '\0';
    snprintf(text, sizeof(text),
             "{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"KAKAO\"],"
             "\"channelSettings\":{\"TELETEXT\":{\"color\":\"%s\"}}}",
             color);
    assert_int_equal(decode(text, NULL), DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err,
                        "channelSettings.TELETEXT.color: 201 characters, at most 200 allowed");
    color[200] = '\0';
    snprintf(text, sizeof(text),
             "{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"KAKAO\"],"
             "\"channelSettings\":{\"TELETEXT\":{\"color\":\"%s\"}}}",
             color);
    assert_int_equal(decode(text, NULL), DW_DLQ_NONE);
}

static void test_needed_fields(void **state)
{
    (void)state;
    assert_int_equal(
        decode("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"BILLBOARD\"]}", NULL),
        DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err,
                        "imageUrl: required when BILLBOARD is requested (a billboard shows an "
                        "image)");
    assert_int_equal(decode("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"TELETEXT\"],"
                            "\"channelSettings\":{\"TELETEXT\":{\"page\":\"100\"}}}",
                            NULL),
                     DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err, "content: required when TELETEXT is requested");
    /* The registered channels keep their own rules in the longer table. */
    assert_int_equal(
        decode("{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"INSTAGRAM\"]}", NULL),
        DW_DLQ_INVALID_FIELD);
    assert_string_equal(last_err, "imageUrl: required when INSTAGRAM is requested (Instagram "
                                  "posts need an image)");
}

/* The encoding reads back to the same request, settings of new types too. */
static void test_encode_round_trip(void **state)
{
    (void)state;
    struct dw_request *req = NULL, *again = NULL;
    assert_int_equal(
        decode("{\"eventId\":\"e1\",\"title\":\"t\",\"content\":\"c\",\"imageUrl\":\"http://i/\","
               "\"channels\":[\"BILLBOARD\",\"TELETEXT\",\"GINITV\"],\"channelSettings\":{"
               "\"TELETEXT\":{\"color\":\"red\",\"page\":\"100\"},\"GINITV\":{\"region\":\"S\"}}}",
               &req),
        DW_DLQ_NONE);
    char *text = dw_request_encode_types(types, TYPE_COUNT, req);
    assert_non_null(strstr(text, "\"TELETEXT\":{\"page\":\"100\",\"color\":\"red\"}"));
    assert_int_equal(dw_request_decode_types(types, TYPE_COUNT, text, strlen(text), &again,
                                             last_err, sizeof(last_err)),
                     DW_DLQ_NONE);
    assert_int_equal(again->channels, req->channels);
    assert_int_equal(again->setting_count, 3);
    assert_string_equal(dw_request_setting(again, TELETEXT, "page"), "100");
    assert_string_equal(dw_request_setting(again, TELETEXT, "color"), "red");
    assert_string_equal(dw_request_setting(again, DW_CHANNEL_GINITV, "region"), "S");
    free(text);
    dw_request_destroy(again);
    dw_request_destroy(req);
}

/* What the six registered types declare stays within CONTRACT 2.1. */
static void test_registered_declarations(void **state)
{
    (void)state;
    const struct dw_channel_type *const *registry = dw_channel_registry();
    for (int i = 0; i < DW_CHANNEL_COUNT; i++) {
        assert_int_equal(registry[i]->id, i);
        assert_string_equal(registry[i]->name, dw_channel_name((enum dw_channel_id)i));
        assert_true(registry[i]->setting_count == 0 || registry[i]->settings);
        for (int s = 0; s < registry[i]->setting_count; s++)
            assert_in_range(registry[i]->settings[s].max_chars, 1, DW_CHANNEL_SETTING_MAX_CHARS);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_does_not_know_them),
        cmocka_unit_test(test_declared_settings_are_read),
        cmocka_unit_test(test_required_setting),
        cmocka_unit_test(test_setting_caps),
        cmocka_unit_test(test_needed_fields),
        cmocka_unit_test(test_encode_round_trip),
        cmocka_unit_test(test_registered_declarations),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
