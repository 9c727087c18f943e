/*
 * Decoding and validation of a distribution request (CONTRACT 2.1): Kafka
 * message bytes in, a struct dw_request or the DLQ code out.
 *
 * Threads: any. Nothing here keeps state; each call owns its json-c tokener
 * and tree, and frees both before it returns.
 *
 * Invariants:
 * - The rules run in a fixed order and the first broken one decides the code:
 *   size, null value, the bytes (UTF-8 and strict JSON), eventId, title,
 *   content, imageUrl, channels, channelSettings, what a requested channel
 *   needs (its required settings, then the optional fields its type names:
 *   RINGOBIZ a phoneNumber, INSTAGRAM an imageUrl), requestedAt.
 * - What is per channel (names, settings, needs) comes from the channel
 *   types (include/dw/channel.h), walked in registry order; nothing here
 *   names a channel.
 * - The bytes are parsed as strict JSON by json_scan.c (json-c alone is
 *   lenient) and requestedAt by rfc3339.c; the rules are all here.
 * - A request handed out holds no empty strings: an optional field that is
 *   missing, JSON null or "" (content and the channel settings) is NULL.
 * - Every string handed out is valid UTF-8 without NUL: a "\u0000" escape
 *   makes its field invalid rather than silently cutting it short.
 * - The json-c tree has exactly one reference, the root's, dropped at `out:`;
 *   values read from it are copied before that.
 */
#include "dw/request.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "dw/channel.h"
#include "dw/common.h"
#include "dw/event_id.h"
#include "dw/json_scan.h"
#include "dw/rfc3339.h"
#include "dw/status.h"
#include "dw/utf8.h"

#define TITLE_MAX     200
#define CONTENT_MAX   10000
#define IMAGE_URL_MAX 2048 /* code points (CONTRACT 2.1) */
/* Nesting accepted; the request itself needs 3 levels, the rest is room
 * for unknown fields. Deeper input is INVALID_JSON. */
#define JSON_DEPTH_MAX 64
/* Channel names longer than this are not echoed in error messages. */
#define ECHO_MAX 32

/* A request holds its channels as bits of an unsigned. */
_Static_assert(DW_CHANNEL_COUNT <= 32, "dw_request.channels has a bit per channel");

/* The channel types decoding reads (types[i]->id == i), and where a
 * human-readable reason goes; errbuf may be NULL or errlen 0. */
struct decode {
    const struct dw_channel_type *const *types;
    int count;
    char *errbuf;
    size_t errlen;
};

/* The optional request fields a channel type may need (enum
 * dw_channel_need), in the order they are checked. */
static const struct need {
    unsigned bit;
    const char *field;
    size_t offset; /* of the char * in struct dw_request */
} needs[] = {
    {DW_CHANNEL_NEEDS_CONTENT, "content", offsetof(struct dw_request, content)},
    {DW_CHANNEL_NEEDS_IMAGE_URL, "imageUrl", offsetof(struct dw_request, image_url)},
};

static enum dw_dlq_code fail(struct decode *d, enum dw_dlq_code code, const char *fmt, ...)
    DW_PRINTF(3, 4);

static enum dw_dlq_code fail(struct decode *d, enum dw_dlq_code code, const char *fmt, ...)
{
    if (d->errbuf && d->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->errbuf, d->errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* obj[key], or NULL when it is missing or JSON null (both mean absent). */
static struct json_object *member(struct json_object *obj, const char *key)
{
    struct json_object *v = NULL;

    if (!json_object_object_get_ex(obj, key, &v))
        return NULL;
    return v;
}

/*
 * Reads obj[key] as a string; *s is NULL when absent. `field` names it in
 * messages. Not a string, or a string holding U+0000, gives `code`.
 */
static enum dw_dlq_code get_string(struct json_object *obj, const char *key, const char *field,
                                   enum dw_dlq_code code, const char **s, size_t *len,
                                   struct decode *d)
{
    struct json_object *v = member(obj, key);

    *s = NULL;
    *len = 0;
    if (!v)
        return DW_DLQ_NONE;
    if (!json_object_is_type(v, json_type_string))
        return fail(d, code, "%s: must be a string, not %s", field,
                    json_type_to_name(json_object_get_type(v)));
    *s = json_object_get_string(v);
    *len = (size_t)json_object_get_string_len(v);
    if (strlen(*s) != *len)
        return fail(d, code, "%s: contains a NUL character (\\u0000)", field);
    return DW_DLQ_NONE;
}

/* Code points of a string json-c decoded; the bytes were checked, and its
 * escapes give well-formed UTF-8 (a lone surrogate becomes U+FFFD), so
 * SIZE_MAX here would be a json-c fault: still reported, as bad UTF-8. */
static enum dw_dlq_code count_chars(const char *field, const char *s, size_t len, size_t *count,
                                    struct decode *d)
{
    *count = dw_utf8_count(s, len);
    if (*count == SIZE_MAX)
        return fail(d, DW_DLQ_INVALID_JSON, "%s: invalid UTF-8", field);
    return DW_DLQ_NONE;
}

static enum dw_dlq_code read_event_id(struct json_object *root, struct dw_request *req,
                                      struct decode *d)
{
    const char *s;
    size_t len;
    enum dw_dlq_code code;

    code = get_string(root, "eventId", "eventId", DW_DLQ_INVALID_EVENT_ID, &s, &len, d);
    if (code)
        return code;
    if (!s)
        return fail(d, DW_DLQ_INVALID_EVENT_ID, "eventId: required");
    if (len == 0)
        return fail(d, DW_DLQ_INVALID_EVENT_ID, "eventId: empty, 1 to %d characters required",
                    DW_EVENT_ID_MAX);
    for (size_t i = 0; i < len; i++) {
        if (!dw_event_id_char(s[i]))
            return fail(d, DW_DLQ_INVALID_EVENT_ID,
                        "eventId: byte %zu is not one of A-Z a-z 0-9 . _ -", i);
    }
    if (len > DW_EVENT_ID_MAX)
        return fail(d, DW_DLQ_INVALID_EVENT_ID, "eventId: %zu characters, at most %d allowed", len,
                    DW_EVENT_ID_MAX);
    req->event_id = dw_xstrndup(s, len);
    return DW_DLQ_NONE;
}

static enum dw_dlq_code read_title(struct json_object *root, struct dw_request *req,
                                   struct decode *d)
{
    const char *s;
    size_t len, count;
    enum dw_dlq_code code;

    code = get_string(root, "title", "title", DW_DLQ_INVALID_FIELD, &s, &len, d);
    if (code)
        return code;
    if (!s)
        return fail(d, DW_DLQ_INVALID_FIELD, "title: required");
    code = count_chars("title", s, len, &count, d);
    if (code)
        return code;
    if (count == 0)
        return fail(d, DW_DLQ_INVALID_FIELD, "title: empty, 1 to %d characters required",
                    TITLE_MAX);
    if (count > TITLE_MAX)
        return fail(d, DW_DLQ_INVALID_FIELD, "title: %zu characters, at most %d allowed", count,
                    TITLE_MAX);
    req->title = dw_xstrndup(s, len);
    return DW_DLQ_NONE;
}

static enum dw_dlq_code read_content(struct json_object *root, struct dw_request *req,
                                     struct decode *d)
{
    const char *s;
    size_t len, count;
    enum dw_dlq_code code;

    code = get_string(root, "content", "content", DW_DLQ_INVALID_FIELD, &s, &len, d);
    if (code || !s || len == 0) /* "" is absent: channels never get empty strings */
        return code;
    code = count_chars("content", s, len, &count, d);
    if (code)
        return code;
    if (count > CONTENT_MAX)
        return fail(d, DW_DLQ_INVALID_FIELD, "content: %zu characters, at most %d allowed", count,
                    CONTENT_MAX);
    req->content = dw_xstrndup(s, len);
    return DW_DLQ_NONE;
}

/* Does s start with the ASCII prefix, in any case? */
static bool has_prefix_nocase(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);

    if (len < n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != prefix[i])
            return false;
    }
    return true;
}

static enum dw_dlq_code read_image_url(struct json_object *root, struct dw_request *req,
                                       struct decode *d)
{
    const char *s;
    size_t len;
    enum dw_dlq_code code;

    code = get_string(root, "imageUrl", "imageUrl", DW_DLQ_INVALID_FIELD, &s, &len, d);
    if (code || !s)
        return code;
    if (!(has_prefix_nocase(s, len, "http://") && len > strlen("http://")) &&
        !(has_prefix_nocase(s, len, "https://") && len > strlen("https://")))
        return fail(d, DW_DLQ_INVALID_FIELD,
                    "imageUrl: must be an http:// or https:// URL with a host after the scheme");
    size_t count;
    code = count_chars("imageUrl", s, len, &count, d);
    if (code)
        return code;
    if (count > IMAGE_URL_MAX)
        return fail(d, DW_DLQ_INVALID_FIELD, "imageUrl: %zu characters, at most %d allowed", count,
                    IMAGE_URL_MAX);
    req->image_url = dw_xstrndup(s, len);
    return DW_DLQ_NONE;
}

/* Short printable ASCII is safe to quote in a message; anything else is not
 * echoed (the message goes into a Kafka header and logs). */
static bool echoable(const char *s, size_t len)
{
    if (len > ECHO_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] > 0x7E || s[i] == '"' || s[i] == '\\')
            return false;
    }
    return true;
}

/* The id of the type named name, or -1. */
static int type_of(const struct decode *d, const char *name)
{
    for (int i = 0; i < d->count; i++) {
        if (strcmp(d->types[i]->name, name) == 0)
            return i;
    }
    return -1;
}

static enum dw_dlq_code read_channels(struct json_object *root, struct dw_request *req,
                                      struct decode *d)
{
    struct json_object *array = member(root, "channels");
    size_t n;

    if (!array)
        return fail(d, DW_DLQ_INVALID_CHANNELS, "channels: required");
    if (!json_object_is_type(array, json_type_array))
        return fail(d, DW_DLQ_INVALID_CHANNELS, "channels: must be an array of names, not %s",
                    json_type_to_name(json_object_get_type(array)));
    n = json_object_array_length(array);
    if (n == 0)
        return fail(d, DW_DLQ_INVALID_CHANNELS, "channels: empty, at least one channel required");
    for (size_t i = 0; i < n; i++) {
        struct json_object *v = json_object_array_get_idx(array, i);
        const char *name;
        size_t len;
        int id;

        if (!json_object_is_type(v, json_type_string))
            return fail(d, DW_DLQ_INVALID_CHANNELS, "channels[%zu]: must be a string, not %s", i,
                        json_type_to_name(json_object_get_type(v)));
        name = json_object_get_string(v);
        len = (size_t)json_object_get_string_len(v);
        /* A name cut short by "\u0000" is no name. */
        id = strlen(name) == len ? type_of(d, name) : -1;
        if (id < 0) {
            if (echoable(name, len))
                return fail(d, DW_DLQ_INVALID_CHANNELS,
                            "channels[%zu]: \"%s\" is not a channel name (names are upper case)", i,
                            name);
            return fail(d, DW_DLQ_INVALID_CHANNELS, "channels[%zu]: not a channel name", i);
        }
        if (req->channels & (1u << id))
            return fail(d, DW_DLQ_INVALID_CHANNELS, "channels[%zu]: %s is listed twice", i, name);
        req->channels |= 1u << id;
        req->channel_count++;
    }
    return DW_DLQ_NONE;
}

/* Keeps a present setting value (an owned copy). */
static void keep_setting(struct dw_request *req, int channel, const char *key, const char *s,
                         size_t len, int capacity)
{
    if (!req->settings)
        req->settings = dw_xcalloc((size_t)capacity, sizeof(*req->settings));
    struct dw_request_setting *one = &req->settings[req->setting_count++];
    one->channel = channel;
    one->key = key;
    one->value = dw_xstrndup(s, len);
}

/* A setting's cap: the type's, never more than the contract's. */
static int setting_cap(const struct dw_channel_setting *st)
{
    return st->max_chars > 0 && st->max_chars < DW_CHANNEL_SETTING_MAX_CHARS
               ? st->max_chars
               : DW_CHANNEL_SETTING_MAX_CHARS;
}

static enum dw_dlq_code read_settings(struct json_object *root, struct dw_request *req,
                                      struct decode *d)
{
    struct json_object *all = member(root, "channelSettings");
    int capacity = 0;

    if (!all)
        return DW_DLQ_NONE;
    if (!json_object_is_type(all, json_type_object))
        return fail(d, DW_DLQ_INVALID_FIELD, "channelSettings: must be an object, not %s",
                    json_type_to_name(json_object_get_type(all)));
    for (int ch = 0; ch < d->count; ch++)
        capacity += d->types[ch]->setting_count;
    /* Settings of channels not requested are read and checked the same way:
     * a request is valid or not whatever its channel list. Channels that
     * declare no settings are not looked at. */
    for (int ch = 0; ch < d->count; ch++) {
        const struct dw_channel_type *type = d->types[ch];
        struct json_object *one;

        if (type->setting_count == 0 || !(one = member(all, type->name)))
            continue;
        if (!json_object_is_type(one, json_type_object))
            return fail(d, DW_DLQ_INVALID_FIELD, "channelSettings.%s: must be an object, not %s",
                        type->name, json_type_to_name(json_object_get_type(one)));
        for (int i = 0; i < type->setting_count; i++) {
            const struct dw_channel_setting *st = &type->settings[i];
            char field[128];
            const char *s;
            size_t len, count = 0;
            enum dw_dlq_code code;

            dw_snprintf(field, sizeof(field), "channelSettings.%s.%s", type->name, st->key);
            code = get_string(one, st->key, field, DW_DLQ_INVALID_FIELD, &s, &len, d);
            if (code)
                return code;
            if (s && (code = count_chars(field, s, len, &count, d)) != DW_DLQ_NONE)
                return code;
            if (count > (size_t)setting_cap(st))
                return fail(d, DW_DLQ_INVALID_FIELD, "%s: %zu characters, at most %d allowed",
                            field, count, setting_cap(st));
            if (s && len > 0) /* "" is absent */
                keep_setting(req, ch, st->key, s, len, capacity);
        }
    }
    return DW_DLQ_NONE;
}

/* Per requested channel, in registry order: its required settings, then the
 * optional fields it needs. */
static enum dw_dlq_code check_channel_needs(const struct dw_request *req, struct decode *d)
{
    for (int ch = 0; ch < d->count; ch++) {
        const struct dw_channel_type *type = d->types[ch];

        if (!dw_request_has(req, ch))
            continue;
        for (int i = 0; i < type->setting_count; i++) {
            const struct dw_channel_setting *st = &type->settings[i];
            if (st->required && !dw_request_setting(req, ch, st->key))
                return fail(d, DW_DLQ_INVALID_FIELD,
                            "channelSettings.%s.%s: required when %s is requested", type->name,
                            st->key, type->name);
        }
        for (size_t i = 0; i < DW_ARRAY_LEN(needs); i++) {
            if (!(type->needs & needs[i].bit) ||
                *(char *const *)((const char *)req + needs[i].offset))
                continue;
            if (type->needs_why)
                return fail(d, DW_DLQ_INVALID_FIELD, "%s: required when %s is requested (%s)",
                            needs[i].field, type->name, type->needs_why);
            return fail(d, DW_DLQ_INVALID_FIELD, "%s: required when %s is requested",
                        needs[i].field, type->name);
        }
    }
    return DW_DLQ_NONE;
}

static enum dw_dlq_code read_requested_at(struct json_object *root, struct dw_request *req,
                                          struct decode *d)
{
    const char *s, *why;
    size_t len;
    int64_t ms = 0;
    enum dw_dlq_code code;

    code = get_string(root, "requestedAt", "requestedAt", DW_DLQ_INVALID_FIELD, &s, &len, d);
    if (code || !s)
        return code;
    if (dw_rfc3339_parse(s, len, &ms, &why) != DW_OK)
        return fail(d, DW_DLQ_INVALID_FIELD, "requestedAt: %s", why);
    req->requested_at = dw_xstrndup(s, len);
    req->requested_at_ms = ms;
    return DW_DLQ_NONE;
}

static size_t str_bytes(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static size_t footprint(const struct dw_request *req)
{
    size_t strings = str_bytes(req->event_id) + str_bytes(req->title) + str_bytes(req->content) +
                     str_bytes(req->image_url) + str_bytes(req->requested_at);
    for (int i = 0; i < req->setting_count; i++)
        strings += str_bytes(req->settings[i].value);
    return sizeof(*req) + (size_t)req->setting_count * sizeof(*req->settings) +
           strings * (1 + (size_t)req->channel_count);
}

enum dw_dlq_code dw_request_decode(const char *value, size_t len, struct dw_request **out,
                                   char *errbuf, size_t errlen)
{
    return dw_request_decode_types(dw_channel_registry(), DW_CHANNEL_COUNT, value, len, out, errbuf,
                                   errlen);
}

enum dw_dlq_code dw_request_decode_types(const struct dw_channel_type *const *types, int count,
                                         const char *value, size_t len, struct dw_request **out,
                                         char *errbuf, size_t errlen)
{
    struct decode d = {types, count, errbuf, errlen};
    struct json_object *root = NULL;
    struct dw_request *req = NULL;
    enum dw_dlq_code code;

    *out = NULL;
    if (errbuf && errlen)
        errbuf[0] = '\0';

    if (len > DW_REQUEST_MAX_BYTES) {
        code = fail(&d, DW_DLQ_TOO_LARGE, "value: %zu bytes, at most %d allowed", len,
                    DW_REQUEST_MAX_BYTES);
        goto out;
    }
    if (!value) {
        code = fail(&d, DW_DLQ_INVALID_JSON, "value: missing (a null message value)");
        goto out;
    }
    char why[160];
    if (dw_json_parse(value, len, JSON_DEPTH_MAX, &root, why, sizeof(why)) != DW_OK) {
        code = fail(&d, DW_DLQ_INVALID_JSON, "value: %s", why);
        goto out;
    }
    if (!json_object_is_type(root, json_type_object)) {
        code = fail(&d, DW_DLQ_INVALID_JSON, "value: must be a JSON object, not %s",
                    json_type_to_name(json_object_get_type(root)));
        goto out;
    }

    req = dw_xcalloc(1, sizeof(*req));
    if ((code = read_event_id(root, req, &d)) || (code = read_title(root, req, &d)) ||
        (code = read_content(root, req, &d)) || (code = read_image_url(root, req, &d)) ||
        (code = read_channels(root, req, &d)) || (code = read_settings(root, req, &d)) ||
        (code = check_channel_needs(req, &d)) || (code = read_requested_at(root, req, &d)))
        goto out;
    req->bytes = footprint(req);

    *out = req;
    req = NULL;
out:
    dw_request_destroy(req);
    json_object_put(root);
    return code;
}

static void put_string(struct json_object *obj, const char *key, const char *value)
{
    if (value)
        json_object_object_add(obj, key, json_object_new_string(value));
}

char *dw_request_encode(const struct dw_request *req)
{
    return dw_request_encode_types(dw_channel_registry(), DW_CHANNEL_COUNT, req);
}

char *dw_request_encode_types(const struct dw_channel_type *const *types, int count,
                              const struct dw_request *req)
{
    struct json_object *root = json_object_new_object();
    struct json_object *channels = json_object_new_array();
    struct json_object *settings = json_object_new_object();

    put_string(root, "eventId", req->event_id);
    put_string(root, "title", req->title);
    put_string(root, "content", req->content);
    put_string(root, "imageUrl", req->image_url);
    for (int ch = 0; ch < count; ch++) {
        if (dw_request_has(req, ch))
            json_object_array_add(channels, json_object_new_string(types[ch]->name));
    }
    json_object_object_add(root, "channels", channels);
    /* req->settings is in registry order: one object per channel. */
    struct json_object *one = NULL;
    for (int i = 0; i < req->setting_count; i++) {
        const struct dw_request_setting *st = &req->settings[i];
        if (i == 0 || st->channel != req->settings[i - 1].channel) {
            one = json_object_new_object();
            json_object_object_add(settings, types[st->channel]->name, one);
        }
        put_string(one, st->key, st->value);
    }
    json_object_object_add(root, "channelSettings", settings);
    put_string(root, "requestedAt", req->requested_at);

    char *text = dw_xstrdup(json_object_to_json_string_ext(
        root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    return text;
}

const char *dw_request_setting(const struct dw_request *req, int channel, const char *key)
{
    for (int i = 0; i < req->setting_count; i++) {
        if (req->settings[i].channel == channel && strcmp(req->settings[i].key, key) == 0)
            return req->settings[i].value;
    }
    return NULL;
}

void dw_request_destroy(struct dw_request *req)
{
    if (!req)
        return;
    free(req->event_id);
    free(req->title);
    free(req->content);
    free(req->image_url);
    free(req->requested_at);
    for (int i = 0; i < req->setting_count; i++)
        free(req->settings[i].value);
    free(req->settings);
    free(req);
}
