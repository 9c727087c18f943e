/*
 * The channel registry and what every channel shares: the table of the six
 * channel types in enum order, the HTTP status classification
 * of CONTRACT section 3, and the JSON helpers the channel files build their
 * bodies and read their replies with (declared in channel_internal.h).
 *
 * Threads: any. Nothing here keeps mutable state; the registry is a const
 * table. Invariants: registry[i]->id == i for every i; a body built here is
 * always an owned, NUL-terminated copy; every json_object taken here is put
 * exactly once.
 */
#include "channel_internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "dw/request.h"

/* The channel files; each exports exactly one type. */
extern const struct dw_channel_type dw_channel_uridongnetv;
extern const struct dw_channel_type dw_channel_ginitv;
extern const struct dw_channel_type dw_channel_ringobiz;
extern const struct dw_channel_type dw_channel_instagram;
extern const struct dw_channel_type dw_channel_naver;
extern const struct dw_channel_type dw_channel_kakao;

/* Adding a channel: one line here, one enum value, one file. */
static const struct dw_channel_type *const registry[] = {
    [DW_CHANNEL_URIDONGNETV] = &dw_channel_uridongnetv,
    [DW_CHANNEL_GINITV] = &dw_channel_ginitv,
    [DW_CHANNEL_RINGOBIZ] = &dw_channel_ringobiz,
    [DW_CHANNEL_INSTAGRAM] = &dw_channel_instagram,
    [DW_CHANNEL_NAVER] = &dw_channel_naver,
    [DW_CHANNEL_KAKAO] = &dw_channel_kakao,
};

_Static_assert(DW_ARRAY_LEN(registry) == DW_CHANNEL_COUNT, "one registry entry per channel id");

const struct dw_channel_type *dw_channel_get(enum dw_channel_id id)
{
    return registry[id];
}

const struct dw_channel_type *const *dw_channel_registry(void)
{
    return registry;
}

enum dw_errcode dw_channel_classify_http(long status)
{
    if (status >= 200 && status <= 299)
        return DW_EC_NONE;
    if (status == 408)
        return DW_EC_TIMEOUT;
    if (status == 429)
        return DW_EC_RATE_LIMITED;
    if (status >= 500 && status <= 599)
        return DW_EC_HTTP_5XX;
    /* 1xx, 3xx (redirects are not followed) and every other 4xx are answers
     * that another attempt would not change. */
    return DW_EC_HTTP_4XX;
}

void dw_http_call_cleanup(struct dw_http_call *call)
{
    if (!call)
        return;
    free(call->body);
    call->body = NULL;
    call->body_len = 0;
}

/* json-c reports out-of-memory as NULL; like dw_xmalloc, we abort. */
static void need(const void *p)
{
    if (!p) {
        fputs("{\"level\":\"error\",\"message\":\"out of memory in json-c\"}\n", stderr);
        abort();
    }
}

void dw_channel_json_put(struct json_object *obj, const char *key, const char *value, size_t len)
{
    if (!dw_channel_present(value) || len == 0)
        return;
    /* Request strings come from a value of at most 1 MiB: len fits an int. */
    struct json_object *str = json_object_new_string_len(value, (int)len);
    need(str);
    /* Keys are literals: json-c keeps the pointer instead of a copy. */
    if (json_object_object_add_ex(obj, key, str, JSON_C_OBJECT_ADD_CONSTANT_KEY) != 0) {
        json_object_put(str); /* not taken over on failure */
        need(NULL);
    }
}

struct json_object *dw_channel_json_new(void)
{
    struct json_object *obj = json_object_new_object();
    need(obj);
    return obj;
}

struct json_object *dw_channel_json_from_fields(const struct dw_request *req,
                                                enum dw_channel_id channel,
                                                const struct dw_channel_field *fields, size_t count)
{
    struct json_object *obj = dw_channel_json_new();
    for (size_t i = 0; i < count; i++) {
        const char *value = fields[i].setting
                                ? dw_request_setting(req, channel, fields[i].setting)
                                : *(char *const *)((const char *)req + fields[i].offset);
        if (dw_channel_present(value))
            dw_channel_json_put(obj, fields[i].key, value, strlen(value));
    }
    return obj;
}

void dw_channel_json_call(struct json_object *obj, const char *path, const char *suffix,
                          struct dw_http_call *call)
{
    size_t len = 0;
    const char *text = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    need(text);

    call->path = path;
    call->content_type = DW_CHANNEL_JSON;
    call->idempotency_suffix = suffix;
    call->body = dw_xmalloc(len + 1);
    memcpy(call->body, text, len);
    call->body[len] = '\0';
    call->body_len = len;
    json_object_put(obj); /* text belonged to obj: copied first */
}

static enum dw_errcode bad_response(char *errbuf, size_t errlen, const char *fmt, ...)
    DW_PRINTF(3, 4);

static enum dw_errcode bad_response(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return DW_EC_BAD_RESPONSE;
}

/* Parses body as exactly one JSON object (trailing white space allowed). */
static enum dw_errcode parse_object(const char *body, size_t len, struct json_object **out,
                                    char *errbuf, size_t errlen)
{
    *out = NULL;
    if (!body || len == 0)
        return bad_response(errbuf, errlen, "empty reply body");
    if (len > INT_MAX)
        return bad_response(errbuf, errlen, "reply body of %zu bytes is too large", len);

    struct json_tokener *tok = json_tokener_new();
    need(tok);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *obj = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);

    if (jerr != json_tokener_success) {
        json_object_put(obj);
        return bad_response(errbuf, errlen, "reply is not JSON: %s",
                            jerr == json_tokener_continue ? "unexpected end of body"
                                                          : json_tokener_error_desc(jerr));
    }
    if (end < len) {
        /* Strict mode refuses trailing text; this catches a NUL in the body. */
        json_object_put(obj);
        return bad_response(errbuf, errlen, "reply has data after its JSON value");
    }
    if (!json_object_is_type(obj, json_type_object)) {
        const char *type = obj ? json_type_to_name(json_object_get_type(obj)) : "null";
        json_object_put(obj);
        return bad_response(errbuf, errlen, "reply is a JSON %s, not an object", type);
    }
    *out = obj;
    return DW_EC_NONE;
}

/* The text of a string or integer member, or NULL. */
static const char *id_text(struct json_object *value, char *digits, size_t digits_len, size_t *len)
{
    if (json_object_is_type(value, json_type_string)) {
        *len = (size_t)json_object_get_string_len(value);
        return json_object_get_string(value);
    }
    if (json_object_is_type(value, json_type_int)) {
        /* json-c clamps integers outside int64/uint64 to these bounds; a
         * clamped id would name another post, so it is refused. */
        int64_t s = json_object_get_int64(value);
        if (s < 0) {
            if (s == INT64_MIN)
                return NULL;
            dw_snprintf(digits, digits_len, "%" PRId64, s);
        } else {
            uint64_t u = json_object_get_uint64(value);
            if (u == UINT64_MAX)
                return NULL;
            dw_snprintf(digits, digits_len, "%" PRIu64, u);
        }
        *len = strlen(digits);
        return digits;
    }
    return NULL;
}

static enum dw_errcode copy_id(struct json_object *obj, const char *key, char *dst, size_t dstlen,
                               char *errbuf, size_t errlen)
{
    struct json_object *value;
    if (!json_object_object_get_ex(obj, key, &value) || !value)
        return bad_response(errbuf, errlen, "reply has no \"%s\"", key);

    char digits[32];
    size_t len = 0;
    const char *text = id_text(value, digits, sizeof(digits), &len);
    if (!text)
        return bad_response(errbuf, errlen, "reply \"%s\" is a JSON %s, not a string or an integer",
                            key, json_type_to_name(json_object_get_type(value)));
    if (len == 0)
        return bad_response(errbuf, errlen, "reply \"%s\" is empty", key);
    if (strlen(text) != len)
        return bad_response(errbuf, errlen, "reply \"%s\" holds a NUL character", key);
    if (len >= dstlen)
        return bad_response(errbuf, errlen, "reply \"%s\" is %zu bytes, longer than %zu", key, len,
                            dstlen - 1);
    memcpy(dst, text, len + 1);
    return DW_EC_NONE;
}

/* The url is a courtesy: one that is missing, not a string or does not fit
 * is left out rather than failing a post that did happen. */
static void copy_url(struct json_object *obj, const char *key, char *dst, size_t dstlen)
{
    struct json_object *value;
    dst[0] = '\0';
    if (!json_object_object_get_ex(obj, key, &value) ||
        !json_object_is_type(value, json_type_string))
        return;
    size_t len = (size_t)json_object_get_string_len(value);
    const char *text = json_object_get_string(value);
    if (len < dstlen && strlen(text) == len)
        memcpy(dst, text, len + 1);
}

enum dw_errcode dw_channel_parse_reply(const char *body, size_t len, const char *const *nest,
                                       const char *id_key, const char *url_key,
                                       struct dw_channel_reply *reply, char *errbuf, size_t errlen)
{
    reply->external_id[0] = '\0';
    reply->url[0] = '\0';

    struct json_object *root;
    enum dw_errcode ec = parse_object(body, len, &root, errbuf, errlen);
    if (ec)
        return ec;

    struct json_object *obj = root;
    for (; nest && *nest; nest++) {
        struct json_object *inner;
        if (!json_object_object_get_ex(obj, *nest, &inner) ||
            !json_object_is_type(inner, json_type_object)) {
            ec = bad_response(errbuf, errlen, "reply has no \"%s\" object", *nest);
            goto out;
        }
        obj = inner;
    }

    ec = copy_id(obj, id_key, reply->external_id, sizeof(reply->external_id), errbuf, errlen);
    if (ec)
        goto out;
    if (url_key)
        copy_url(obj, url_key, reply->url, sizeof(reply->url));
out:
    json_object_put(root);
    return ec;
}
