/*
 * Unit tests of the channel registry and the six channel types: the exact
 * body, path, content type and idempotency suffix each builds (CONTRACT
 * section 3), how each reads its success reply, and the HTTP status
 * classification. Requests are built by hand; bodies are compared as parsed
 * JSON, member by member, with absent members checked absent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "dw/channel.h"
#include "dw/request.h"

#define TITLE   "Grand opening: 20% off all coffee"
#define CONTENT "Visit us this weekend \"now\" at https://x.example/a/b"
#define IMAGE   "https://cdn.example.com/e/0001.png"

/* The channel settings of a full request. */
static struct dw_request_setting full_settings[] = {
    {DW_CHANNEL_URIDONGNETV, "radius", "1km"},
    {DW_CHANNEL_GINITV, "region", "Seoul/Gangnam"},
    {DW_CHANNEL_RINGOBIZ, "phoneNumber", "02-1234-5678"},
};

/* A request with every optional field present. */
static struct dw_request full_request(void)
{
    struct dw_request req = {
        .event_id = "evt-20251029-0001",
        .title = TITLE,
        .content = CONTENT,
        .image_url = IMAGE,
        .settings = full_settings,
        .setting_count = (int)DW_ARRAY_LEN(full_settings),
        .channels = (1u << DW_CHANNEL_COUNT) - 1,
        .channel_count = DW_CHANNEL_COUNT,
    };
    return req;
}

/* A request with only the required fields. */
static struct dw_request bare_request(void)
{
    struct dw_request req = {
        .event_id = "evt-2",
        .title = "Hello",
        .channels = (1u << DW_CHANNEL_COUNT) - 1,
        .channel_count = DW_CHANNEL_COUNT,
    };
    return req;
}

static struct dw_http_call build_ok(enum dw_channel_id id, const struct dw_request *req, int step,
                                    const char *prev_id)
{
    struct dw_http_call call;
    memset(&call, 0, sizeof(call));
    assert_int_equal(dw_channel_get(id)->build(req, step, prev_id, &call), DW_OK);
    assert_non_null(call.body);
    assert_int_equal(strlen(call.body), call.body_len);
    return call;
}

/* Parses a JSON call body; checks path, content type and suffix on the way. */
static struct json_object *json_body(const struct dw_http_call *call, const char *path,
                                     const char *suffix)
{
    assert_string_equal(call->path, path);
    assert_string_equal(call->content_type, "application/json");
    assert_string_equal(call->idempotency_suffix, suffix);
    struct json_object *obj = json_tokener_parse(call->body);
    assert_non_null(obj);
    assert_true(json_object_is_type(obj, json_type_object));
    return obj;
}

static void assert_member(struct json_object *obj, const char *key, const char *expected)
{
    struct json_object *value;
    assert_true(json_object_object_get_ex(obj, key, &value));
    assert_true(json_object_is_type(value, json_type_string));
    assert_string_equal(json_object_get_string(value), expected);
}

static void assert_absent(struct json_object *obj, const char *key)
{
    assert_false(json_object_object_get_ex(obj, key, NULL));
}

/* Builds a single-step JSON call and checks it member by member: members
 * lists the expected key/value pairs, absent the keys that must not be
 * there; nothing else may be in the body. */
struct expect {
    const char *key;
    const char *value; /* NULL: must be absent */
};

static void check_json_call(enum dw_channel_id id, const struct dw_request *req, const char *path,
                            const struct expect *expect, size_t count)
{
    struct dw_http_call call = build_ok(id, req, 0, NULL);
    struct json_object *obj = json_body(&call, path, "");
    int present = 0;
    for (size_t i = 0; i < count; i++) {
        if (expect[i].value) {
            assert_member(obj, expect[i].key, expect[i].value);
            present++;
        } else {
            assert_absent(obj, expect[i].key);
        }
    }
    assert_int_equal(json_object_object_length(obj), present);
    json_object_put(obj);
    dw_http_call_cleanup(&call);
    assert_null(call.body);
}

/* ---- request bodies ---- */

static void test_uridongnetv_body(void **state)
{
    (void)state;
    struct dw_request full = full_request();
    const struct expect full_expect[] = {
        {"campaignId", "evt-20251029-0001"},
        {"title", TITLE},
        {"content", CONTENT},
        {"imageUrl", IMAGE},
        {"radius", "1km"},
    };
    check_json_call(DW_CHANNEL_URIDONGNETV, &full, "/api/v1/ads", full_expect,
                    DW_ARRAY_LEN(full_expect));

    struct dw_request bare = bare_request();
    const struct expect bare_expect[] = {
        {"campaignId", "evt-2"}, {"title", "Hello"}, {"content", NULL},
        {"imageUrl", NULL},      {"radius", NULL},
    };
    check_json_call(DW_CHANNEL_URIDONGNETV, &bare, "/api/v1/ads", bare_expect,
                    DW_ARRAY_LEN(bare_expect));
}

static void test_ginitv_body(void **state)
{
    (void)state;
    struct dw_request full = full_request();
    const struct expect full_expect[] = {
        {"campaignId", "evt-20251029-0001"},
        {"title", TITLE},
        {"content", CONTENT},
        {"imageUrl", IMAGE},
        {"region", "Seoul/Gangnam"},
    };
    check_json_call(DW_CHANNEL_GINITV, &full, "/api/v1/campaigns", full_expect,
                    DW_ARRAY_LEN(full_expect));

    struct dw_request bare = bare_request();
    const struct expect bare_expect[] = {
        {"campaignId", "evt-2"}, {"title", "Hello"}, {"content", NULL},
        {"imageUrl", NULL},      {"region", NULL},
    };
    check_json_call(DW_CHANNEL_GINITV, &bare, "/api/v1/campaigns", bare_expect,
                    DW_ARRAY_LEN(bare_expect));
}

static void test_kakao_body(void **state)
{
    (void)state;
    struct dw_request full = full_request();
    const struct expect full_expect[] = {
        {"title", TITLE},
        {"content", CONTENT},
        {"imageUrl", IMAGE},
        {"campaignId", NULL},
    };
    check_json_call(DW_CHANNEL_KAKAO, &full, "/v1/api/talk/channels/posts", full_expect,
                    DW_ARRAY_LEN(full_expect));

    struct dw_request bare = bare_request();
    const struct expect bare_expect[] = {
        {"title", "Hello"},
        {"content", NULL},
        {"imageUrl", NULL},
    };
    check_json_call(DW_CHANNEL_KAKAO, &bare, "/v1/api/talk/channels/posts", bare_expect,
                    DW_ARRAY_LEN(bare_expect));
}

static void test_ringobiz_body(void **state)
{
    (void)state;
    struct dw_request full = full_request();
    const struct expect full_expect[] = {
        {"campaignId", "evt-20251029-0001"},
        {"phoneNumber", "02-1234-5678"},
        {"message", TITLE},
        {"title", NULL},
        {"content", NULL},
        {"imageUrl", NULL},
    };
    check_json_call(DW_CHANNEL_RINGOBIZ, &full, "/api/v1/ringback", full_expect,
                    DW_ARRAY_LEN(full_expect));

    struct dw_request bare = bare_request();
    const struct expect bare_expect[] = {
        {"campaignId", "evt-2"},
        {"message", "Hello"},
        {"phoneNumber", NULL},
    };
    check_json_call(DW_CHANNEL_RINGOBIZ, &bare, "/api/v1/ringback", bare_expect,
                    DW_ARRAY_LEN(bare_expect));
}

/* An empty optional string is absent too: never sent as "". */
static void test_empty_optional_left_out(void **state)
{
    (void)state;
    struct dw_request req = bare_request();
    req.content = "";
    req.image_url = "";
    struct dw_request_setting radius = {DW_CHANNEL_URIDONGNETV, "radius", ""};
    req.settings = &radius;
    req.setting_count = 1;
    const struct expect expect[] = {
        {"campaignId", "evt-2"}, {"title", "Hello"}, {"content", NULL},
        {"imageUrl", NULL},      {"radius", NULL},
    };
    check_json_call(DW_CHANNEL_URIDONGNETV, &req, "/api/v1/ads", expect, DW_ARRAY_LEN(expect));

    struct dw_http_call call = build_ok(DW_CHANNEL_NAVER, &req, 0, NULL);
    assert_string_equal(call.body, "title=Hello");
    dw_http_call_cleanup(&call);
}

/* n copies of unit, then tail. */
static char *repeat(const char *unit, int n, const char *tail)
{
    size_t ulen = strlen(unit), tlen = strlen(tail);
    char *s = malloc(ulen * (size_t)n + tlen + 1);
    assert_non_null(s);
    for (int i = 0; i < n; i++)
        memcpy(s + ulen * (size_t)i, unit, ulen);
    memcpy(s + ulen * (size_t)n, tail, tlen + 1);
    return s;
}

static void check_ringobiz_message(const char *title, const char *expected)
{
    struct dw_request req = bare_request();
    req.title = (char *)title;
    struct dw_http_call call = build_ok(DW_CHANNEL_RINGOBIZ, &req, 0, NULL);
    struct json_object *obj = json_body(&call, "/api/v1/ringback", "");
    assert_member(obj, "message", expected);
    json_object_put(obj);
    dw_http_call_cleanup(&call);
}

static void test_ringobiz_message_cut(void **state)
{
    (void)state;
    /* Three-byte Hangul: 59 and 60 pass whole, 61 loses its last one. */
    char *t59 = repeat("가", 59, "");
    char *t60 = repeat("가", 60, "");
    char *t61 = repeat("가", 61, "");
    check_ringobiz_message(t59, t59);
    check_ringobiz_message(t60, t60);
    check_ringobiz_message(t61, t60);
    assert_int_equal(strlen(t60), 180);

    /* Mixed widths: the 60th code point is a four-byte emoji kept whole,
     * the 61st (two-byte é, then ASCII) cut. */
    char *mixed = repeat("a", 59, "😀éz");
    char *mixed_cut = repeat("a", 59, "😀");
    check_ringobiz_message(mixed, mixed_cut);

    /* 61 emoji: the cut lands on a sequence boundary at 240 bytes. */
    char *emoji61 = repeat("😀", 61, "");
    char *emoji60 = repeat("😀", 60, "");
    check_ringobiz_message(emoji61, emoji60);

    /* A short title passes unchanged. */
    check_ringobiz_message("x", "x");

    free(t59);
    free(t60);
    free(t61);
    free(mixed);
    free(mixed_cut);
    free(emoji61);
    free(emoji60);
}

static void test_instagram_caption(void **state)
{
    (void)state;
    struct dw_request full = full_request();
    const struct expect full_expect[] = {
        {"image_url", IMAGE}, {"caption", TITLE "\n\n" CONTENT}, {"title", NULL}, {"content", NULL},
        {"imageUrl", NULL},
    };
    check_json_call(DW_CHANNEL_INSTAGRAM, &full, "/v1/media", full_expect,
                    DW_ARRAY_LEN(full_expect));

    /* No content: the caption is the title alone, no blank line. */
    struct dw_request no_content = full_request();
    no_content.content = NULL;
    const struct expect no_content_expect[] = {
        {"image_url", IMAGE},
        {"caption", TITLE},
    };
    check_json_call(DW_CHANNEL_INSTAGRAM, &no_content, "/v1/media", no_content_expect,
                    DW_ARRAY_LEN(no_content_expect));

    /* Every optional field absent (validation would refuse a missing image
     * for Instagram; the adapter still leaves it out rather than send null). */
    struct dw_request bare = bare_request();
    const struct expect bare_expect[] = {
        {"caption", "Hello"},
        {"image_url", NULL},
    };
    check_json_call(DW_CHANNEL_INSTAGRAM, &bare, "/v1/media", bare_expect,
                    DW_ARRAY_LEN(bare_expect));
}

static void test_instagram_two_steps(void **state)
{
    (void)state;
    const struct dw_channel_type *ig = dw_channel_get(DW_CHANNEL_INSTAGRAM);
    assert_int_equal(ig->steps, 2);
    struct dw_request req = full_request();
    char errbuf[DW_ERRMSG_MAX];

    struct dw_http_call media = build_ok(DW_CHANNEL_INSTAGRAM, &req, 0, NULL);
    struct json_object *obj = json_body(&media, "/v1/media", "");
    json_object_put(obj);
    dw_http_call_cleanup(&media);

    struct dw_channel_reply created;
    const char *created_body = "{\"id\":\"17895695668004550\"}";
    assert_int_equal(
        ig->parse(0, created_body, strlen(created_body), &created, errbuf, sizeof(errbuf)),
        DW_EC_NONE);
    assert_string_equal(created.external_id, "17895695668004550");
    assert_string_equal(created.url, "");

    struct dw_http_call publish = build_ok(DW_CHANNEL_INSTAGRAM, &req, 1, created.external_id);
    obj = json_body(&publish, "/v1/media_publish", ":publish");
    assert_member(obj, "creation_id", "17895695668004550");
    assert_int_equal(json_object_object_length(obj), 1);
    json_object_put(obj);
    dw_http_call_cleanup(&publish);

    struct dw_channel_reply published;
    const char *published_body =
        "{\"id\":\"90010\",\"permalink\":\"https://www.instagram.com/p/Abc123/\"}";
    assert_int_equal(
        ig->parse(1, published_body, strlen(published_body), &published, errbuf, sizeof(errbuf)),
        DW_EC_NONE);
    assert_string_equal(published.external_id, "90010");
    assert_string_equal(published.url, "https://www.instagram.com/p/Abc123/");

    /* Publishing needs the creation id; there is no third step. */
    struct dw_http_call call;
    memset(&call, 0, sizeof(call));
    assert_int_equal(ig->build(&req, 1, NULL, &call), DW_ERR_INVALID);
    assert_int_equal(ig->build(&req, 1, "", &call), DW_ERR_INVALID);
    assert_int_equal(ig->build(&req, 2, "x", &call), DW_ERR_INVALID);
    assert_null(call.body);
}

static void test_naver_form(void **state)
{
    (void)state;
    struct dw_request req = full_request();
    req.title = "Grand opening: 20% off & more = fun 커피";
    req.content = "첫 줄\n둘째 줄 a+b=c&d ~x_y.z-";
    struct dw_http_call call = build_ok(DW_CHANNEL_NAVER, &req, 0, NULL);
    assert_string_equal(call.path, "/blog/writePost.json");
    assert_string_equal(call.content_type, "application/x-www-form-urlencoded");
    assert_string_equal(call.idempotency_suffix, "");
    assert_string_equal(call.body,
                        "title=Grand%20opening%3A%2020%25%20off%20%26%20more%20%3D%20fun%20"
                        "%EC%BB%A4%ED%94%BC"
                        "&contents=%EC%B2%AB%20%EC%A4%84%0A%EB%91%98%EC%A7%B8%20%EC%A4%84%20"
                        "a%2Bb%3Dc%26d%20~x_y.z-");
    dw_http_call_cleanup(&call);

    /* No content: no contents pair, and nothing else (no image, no id). */
    struct dw_request bare = bare_request();
    call = build_ok(DW_CHANNEL_NAVER, &bare, 0, NULL);
    assert_string_equal(call.body, "title=Hello");
    dw_http_call_cleanup(&call);
}

static void test_single_step_channels_refuse_other_steps(void **state)
{
    (void)state;
    struct dw_request req = full_request();
    for (int i = 0; i < DW_CHANNEL_COUNT; i++) {
        const struct dw_channel_type *ch = dw_channel_get((enum dw_channel_id)i);
        struct dw_http_call call;
        memset(&call, 0, sizeof(call));
        assert_int_equal(ch->build(&req, ch->steps, "x", &call), DW_ERR_INVALID);
        assert_int_equal(ch->build(&req, -1, "x", &call), DW_ERR_INVALID);
        assert_null(call.body);
    }
}

static void test_call_cleanup(void **state)
{
    (void)state;
    dw_http_call_cleanup(NULL);
    struct dw_http_call call;
    memset(&call, 0, sizeof(call));
    dw_http_call_cleanup(&call);
    struct dw_request req = bare_request();
    call = build_ok(DW_CHANNEL_KAKAO, &req, 0, NULL);
    dw_http_call_cleanup(&call);
    assert_null(call.body);
    assert_int_equal(call.body_len, 0);
    dw_http_call_cleanup(&call); /* twice is harmless */
}

/* ---- replies ---- */

struct reply_case {
    enum dw_channel_id channel;
    int step;
    const char *body;
    const char *external_id;
    const char *url;
};

static void test_parse_success(void **state)
{
    (void)state;
    static const struct reply_case cases[] = {
        {DW_CHANNEL_URIDONGNETV, 0, "{\"adId\":\"ad-1\",\"url\":\"https://u.tv/ad-1\"}", "ad-1",
         "https://u.tv/ad-1"},
        {DW_CHANNEL_URIDONGNETV, 0, "{\"adId\":42,\"url\":\"https://u.tv/42\"}", "42",
         "https://u.tv/42"},
        {DW_CHANNEL_GINITV, 0, "{\"campaignId\":\"gc-9\",\"url\":\"https://g.tv/gc-9\"}", "gc-9",
         "https://g.tv/gc-9"},
        {DW_CHANNEL_GINITV, 0, "{\"campaignId\":9007199254740993}", "9007199254740993", ""},
        {DW_CHANNEL_RINGOBIZ, 0, "{\"ringbackId\":\"rb-7\"}", "rb-7", ""},
        {DW_CHANNEL_RINGOBIZ, 0, "{\"ringbackId\":7,\"url\":\"https://ignored\"}", "7", ""},
        {DW_CHANNEL_INSTAGRAM, 0, "{\"id\":\"178\"}", "178", ""},
        {DW_CHANNEL_INSTAGRAM, 0, "{\"id\":178,\"permalink\":\"https://ignored\"}", "178", ""},
        {DW_CHANNEL_INSTAGRAM, 1, "{\"id\":\"m-1\",\"permalink\":\"https://ig/p/1\"}", "m-1",
         "https://ig/p/1"},
        {DW_CHANNEL_INSTAGRAM, 1, "{\"id\":18446744073709551614}", "18446744073709551614", ""},
        {DW_CHANNEL_NAVER, 0,
         "{\"message\":{\"result\":{\"postId\":\"223\",\"url\":\"https://blog.naver.com/x/223\"}}}",
         "223", "https://blog.naver.com/x/223"},
        {DW_CHANNEL_NAVER, 0, "{\"message\":{\"result\":{\"postId\":223}},\"postId\":\"no\"}",
         "223", ""},
        {DW_CHANNEL_KAKAO, 0, " {\"postId\":\"kp-91823\",\"url\":\"https://k/p\"}\r\n", "kp-91823",
         "https://k/p"},
        {DW_CHANNEL_KAKAO, 0, "{\"postId\":-5,\"url\":17}", "-5", ""},
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(cases); i++) {
        const struct reply_case *c = &cases[i];
        struct dw_channel_reply reply;
        char errbuf[DW_ERRMSG_MAX] = "";
        enum dw_errcode ec =
            dw_channel_get(c->channel)
                ->parse(c->step, c->body, strlen(c->body), &reply, errbuf, sizeof(errbuf));
        if (ec != DW_EC_NONE)
            fail_msg("case %zu (%s): %s", i, c->body, errbuf);
        assert_string_equal(reply.external_id, c->external_id);
        assert_string_equal(reply.url, c->url);
    }
}

/* The body is a length, not a C string: bytes after it are not read. */
static void test_parse_unterminated(void **state)
{
    (void)state;
    static const char buf[] = "{\"postId\":\"kp-1\"}{garbage";
    struct dw_channel_reply reply;
    char errbuf[DW_ERRMSG_MAX];
    size_t len = strlen("{\"postId\":\"kp-1\"}");
    assert_int_equal(
        dw_channel_get(DW_CHANNEL_KAKAO)->parse(0, buf, len, &reply, errbuf, sizeof(errbuf)),
        DW_EC_NONE);
    assert_string_equal(reply.external_id, "kp-1");

    char *heap = malloc(len);
    assert_non_null(heap);
    memcpy(heap, buf, len); /* no NUL anywhere: ASan checks the bounds */
    assert_int_equal(
        dw_channel_get(DW_CHANNEL_KAKAO)->parse(0, heap, len, &reply, errbuf, sizeof(errbuf)),
        DW_EC_NONE);
    assert_string_equal(reply.external_id, "kp-1");
    free(heap);
}

static void check_bad(enum dw_channel_id id, int step, const char *body, size_t len)
{
    struct dw_channel_reply reply;
    memset(&reply, 'x', sizeof(reply));
    char errbuf[DW_ERRMSG_MAX] = "";
    enum dw_errcode ec = dw_channel_get(id)->parse(step, body, len, &reply, errbuf, sizeof(errbuf));
    if (ec != DW_EC_BAD_RESPONSE)
        fail_msg("%s step %d accepted %.*s", dw_channel_get(id)->name, step, (int)len,
                 body ? body : "");
    assert_true(errbuf[0] != '\0');
    assert_string_equal(reply.external_id, "");
    assert_string_equal(reply.url, "");
}

static void check_bad_str(enum dw_channel_id id, int step, const char *body)
{
    check_bad(id, step, body, strlen(body));
}

static void test_parse_missing_id(void **state)
{
    (void)state;
    check_bad_str(DW_CHANNEL_URIDONGNETV, 0, "{\"url\":\"https://u\"}");
    check_bad_str(DW_CHANNEL_URIDONGNETV, 0, "{\"campaignId\":\"wrong key\"}");
    check_bad_str(DW_CHANNEL_GINITV, 0, "{\"adId\":\"wrong key\",\"url\":\"https://g\"}");
    check_bad_str(DW_CHANNEL_RINGOBIZ, 0, "{}");
    check_bad_str(DW_CHANNEL_INSTAGRAM, 0, "{\"creation_id\":\"1\"}");
    check_bad_str(DW_CHANNEL_INSTAGRAM, 1, "{\"permalink\":\"https://ig/p/1\"}");
    check_bad_str(DW_CHANNEL_NAVER, 0, "{\"message\":{\"result\":{\"url\":\"https://b\"}}}");
    check_bad_str(DW_CHANNEL_KAKAO, 0, "{\"id\":\"kp-1\"}");
}

static void test_parse_unusable_id(void **state)
{
    (void)state;
    check_bad_str(DW_CHANNEL_KAKAO, 0, "{\"postId\":\"\"}");
    check_bad_str(DW_CHANNEL_KAKAO, 0, "{\"postId\":null}");
    check_bad_str(DW_CHANNEL_KAKAO, 0, "{\"postId\":1.5}");
    check_bad_str(DW_CHANNEL_KAKAO, 0, "{\"postId\":true}");
    check_bad_str(DW_CHANNEL_KAKAO, 0, "{\"postId\":{\"v\":\"1\"}}");
    check_bad_str(DW_CHANNEL_KAKAO, 0, "{\"postId\":[\"1\"]}");
    check_bad_str(DW_CHANNEL_KAKAO, 0, "{\"postId\":\"a\\u0000b\"}");
    /* Beyond uint64: json-c would clamp it into another id. */
    check_bad_str(DW_CHANNEL_KAKAO, 0, "{\"postId\":99999999999999999999999}");

    /* The longest id that fits is 127 bytes; 128 does not. */
    char *fits = repeat("i", DW_EXTERNAL_ID_MAX - 1, "");
    char *too_long = repeat("i", DW_EXTERNAL_ID_MAX, "");
    char body[512];
    struct dw_channel_reply reply;
    char errbuf[DW_ERRMSG_MAX];
    snprintf(body, sizeof(body), "{\"postId\":\"%s\"}", fits);
    assert_int_equal(dw_channel_get(DW_CHANNEL_KAKAO)
                         ->parse(0, body, strlen(body), &reply, errbuf, sizeof(errbuf)),
                     DW_EC_NONE);
    assert_string_equal(reply.external_id, fits);
    snprintf(body, sizeof(body), "{\"postId\":\"%s\"}", too_long);
    check_bad_str(DW_CHANNEL_KAKAO, 0, body);
    free(fits);
    free(too_long);
}

static void test_parse_url_optional(void **state)
{
    (void)state;
    struct dw_channel_reply reply;
    char errbuf[DW_ERRMSG_MAX];
    /* A url too long for the buffer is dropped; the post still succeeded. */
    char *long_url = repeat("u", DW_URL_MAX, "");
    char *body = malloc(DW_URL_MAX + 64);
    assert_non_null(body);
    snprintf(body, DW_URL_MAX + 64, "{\"adId\":\"a\",\"url\":\"%s\"}", long_url);
    assert_int_equal(dw_channel_get(DW_CHANNEL_URIDONGNETV)
                         ->parse(0, body, strlen(body), &reply, errbuf, sizeof(errbuf)),
                     DW_EC_NONE);
    assert_string_equal(reply.external_id, "a");
    assert_string_equal(reply.url, "");
    free(body);
    free(long_url);

    const char *no_url = "{\"adId\":\"a\"}";
    assert_int_equal(dw_channel_get(DW_CHANNEL_URIDONGNETV)
                         ->parse(0, no_url, strlen(no_url), &reply, errbuf, sizeof(errbuf)),
                     DW_EC_NONE);
    assert_string_equal(reply.url, "");
}

static void test_parse_naver_nesting(void **state)
{
    (void)state;
    check_bad_str(DW_CHANNEL_NAVER, 0, "{\"postId\":\"223\",\"url\":\"https://b\"}");
    check_bad_str(DW_CHANNEL_NAVER, 0, "{\"result\":{\"postId\":\"223\"}}");
    check_bad_str(DW_CHANNEL_NAVER, 0, "{\"message\":\"ok\"}");
    check_bad_str(DW_CHANNEL_NAVER, 0, "{\"message\":{}}");
    check_bad_str(DW_CHANNEL_NAVER, 0, "{\"message\":{\"postId\":\"223\"}}");
    check_bad_str(DW_CHANNEL_NAVER, 0, "{\"message\":{\"result\":null}}");
    check_bad_str(DW_CHANNEL_NAVER, 0, "{\"message\":{\"result\":[{\"postId\":\"223\"}]}}");
    check_bad_str(DW_CHANNEL_NAVER, 0, "{\"message\":{\"result\":{}}}");
}

static void test_parse_not_an_object(void **state)
{
    (void)state;
    for (int i = 0; i < DW_CHANNEL_COUNT; i++) {
        for (int step = 0; step < dw_channel_get((enum dw_channel_id)i)->steps; step++) {
            check_bad_str((enum dw_channel_id)i, step, "not json");
            check_bad_str((enum dw_channel_id)i, step, "<html>502</html>");
            check_bad_str((enum dw_channel_id)i, step, "[{\"id\":\"1\"}]");
            check_bad_str((enum dw_channel_id)i, step, "[]");
            check_bad_str((enum dw_channel_id)i, step, "\"id\"");
            check_bad_str((enum dw_channel_id)i, step, "42");
            check_bad_str((enum dw_channel_id)i, step, "null");
            check_bad_str((enum dw_channel_id)i, step, "{\"id\":\"1\"");
            check_bad_str((enum dw_channel_id)i, step, "{\"id\":\"1\"} trailing");
            check_bad_str((enum dw_channel_id)i, step, "{'id':'1'}");
            check_bad_str((enum dw_channel_id)i, step, "");
            check_bad((enum dw_channel_id)i, step, NULL, 0);
            check_bad((enum dw_channel_id)i, step, "{\"id\":\"\xff\"}", 10);
        }
    }
}

/* ---- classification, names, registry ---- */

static void test_classify_http(void **state)
{
    (void)state;
    static const struct {
        long status;
        enum dw_errcode ec;
    } cases[] = {
        {200, DW_EC_NONE},     {201, DW_EC_NONE},         {204, DW_EC_NONE},
        {299, DW_EC_NONE},     {100, DW_EC_HTTP_4XX},     {301, DW_EC_HTTP_4XX},
        {304, DW_EC_HTTP_4XX}, {400, DW_EC_HTTP_4XX},     {401, DW_EC_HTTP_4XX},
        {404, DW_EC_HTTP_4XX}, {408, DW_EC_TIMEOUT},      {409, DW_EC_HTTP_4XX},
        {422, DW_EC_HTTP_4XX}, {429, DW_EC_RATE_LIMITED}, {500, DW_EC_HTTP_5XX},
        {502, DW_EC_HTTP_5XX}, {503, DW_EC_HTTP_5XX},     {599, DW_EC_HTTP_5XX},
        {600, DW_EC_HTTP_4XX}, {0, DW_EC_HTTP_4XX},
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(cases); i++) {
        if (dw_channel_classify_http(cases[i].status) != cases[i].ec)
            fail_msg("status %ld", cases[i].status);
    }
}

static void test_from_name(void **state)
{
    (void)state;
    assert_int_equal(dw_channel_from_name("URIDONGNETV"), DW_CHANNEL_URIDONGNETV);
    assert_int_equal(dw_channel_from_name("GINITV"), DW_CHANNEL_GINITV);
    assert_int_equal(dw_channel_from_name("RINGOBIZ"), DW_CHANNEL_RINGOBIZ);
    assert_int_equal(dw_channel_from_name("INSTAGRAM"), DW_CHANNEL_INSTAGRAM);
    assert_int_equal(dw_channel_from_name("NAVER"), DW_CHANNEL_NAVER);
    assert_int_equal(dw_channel_from_name("KAKAO"), DW_CHANNEL_KAKAO);
    assert_int_equal(dw_channel_from_name("kakao"), -1);
    assert_int_equal(dw_channel_from_name("Naver"), -1);
    assert_int_equal(dw_channel_from_name("FACEBOOK"), -1);
    assert_int_equal(dw_channel_from_name("KAKAO "), -1);
    assert_int_equal(dw_channel_from_name(""), -1);
    assert_int_equal(dw_channel_from_name(NULL), -1);
}

static void test_registry(void **state)
{
    (void)state;
    static const char *const names[] = {"URIDONGNETV", "GINITV", "RINGOBIZ",
                                        "INSTAGRAM",   "NAVER",  "KAKAO"};
    static const char *const kinds[] = {"TV", "TV", "CALL", "SNS", "SNS", "SNS"};
    static const int steps[] = {1, 1, 1, 2, 1, 1};
    assert_int_equal(DW_ARRAY_LEN(names), DW_CHANNEL_COUNT);
    for (int i = 0; i < DW_CHANNEL_COUNT; i++) {
        const struct dw_channel_type *ch = dw_channel_get((enum dw_channel_id)i);
        assert_non_null(ch);
        assert_int_equal(ch->id, i);
        assert_string_equal(ch->name, names[i]);
        /* The adapter's name is the vocabulary's (include/dw/channel_id.h). */
        assert_string_equal(dw_channel_name((enum dw_channel_id)i), names[i]);
        assert_string_equal(dw_channel_kind((enum dw_channel_id)i), kinds[i]);
        assert_int_equal(ch->steps, steps[i]);
        assert_non_null(dw_channel_display_name((enum dw_channel_id)i));
        assert_true(dw_channel_display_name((enum dw_channel_id)i)[0] != '\0');
        assert_non_null(ch->build);
        assert_non_null(ch->parse);
        assert_int_equal(dw_channel_from_name(ch->name), i);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uridongnetv_body),
        cmocka_unit_test(test_ginitv_body),
        cmocka_unit_test(test_kakao_body),
        cmocka_unit_test(test_ringobiz_body),
        cmocka_unit_test(test_empty_optional_left_out),
        cmocka_unit_test(test_ringobiz_message_cut),
        cmocka_unit_test(test_instagram_caption),
        cmocka_unit_test(test_instagram_two_steps),
        cmocka_unit_test(test_naver_form),
        cmocka_unit_test(test_single_step_channels_refuse_other_steps),
        cmocka_unit_test(test_call_cleanup),
        cmocka_unit_test(test_parse_success),
        cmocka_unit_test(test_parse_unterminated),
        cmocka_unit_test(test_parse_missing_id),
        cmocka_unit_test(test_parse_unusable_id),
        cmocka_unit_test(test_parse_url_optional),
        cmocka_unit_test(test_parse_naver_nesting),
        cmocka_unit_test(test_parse_not_an_object),
        cmocka_unit_test(test_classify_http),
        cmocka_unit_test(test_from_name),
        cmocka_unit_test(test_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
