/*
 * What the channel files share, kept once in channel.c: building a JSON body
 * from request fields, and reading the id and url out of a JSON reply. Only
 * src/channels/ includes this header; nothing here is part of the public
 * interface (include/dw/channel.h).
 */
#ifndef DW_CHANNEL_INTERNAL_H
#define DW_CHANNEL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "dw/channel.h"

struct dw_request;
struct json_object;

#define DW_CHANNEL_JSON "application/json"
#define DW_CHANNEL_FORM "application/x-www-form-urlencoded"

/* True when an optional request field is there: not NULL and not "". An
 * absent field is left out of a channel's body, never sent as null or "". */
static inline bool dw_channel_present(const char *value)
{
    return value && value[0] != '\0';
}

/* One body field taken verbatim from a request string field, or from one
 * of the channel's settings: DW_CHANNEL_FIELD("title", title),
 * DW_CHANNEL_SETTING("phoneNumber", "phoneNumber"). */
struct dw_channel_field {
    const char *key;
    size_t offset;       /* of a `char *` member of struct dw_request */
    const char *setting; /* or, when not NULL, this setting's key */
};

#define DW_CHANNEL_FIELD(key, member)                                                              \
    {                                                                                              \
        (key), offsetof(struct dw_request, member), NULL                                           \
    }
#define DW_CHANNEL_SETTING(key, setting)                                                           \
    {                                                                                              \
        (key), 0, (setting)                                                                        \
    }

/* A new empty JSON object; the caller holds its one reference. */
struct json_object *dw_channel_json_new(void);

/* A new JSON object (the caller holds its one reference) with one string
 * member per field whose request value is present, in table order; settings
 * are channel's. */
struct json_object *dw_channel_json_from_fields(const struct dw_request *req,
                                                enum dw_channel_id channel,
                                                const struct dw_channel_field *fields,
                                                size_t count);

/* Adds key: the first len bytes of value, unless value is absent. key must
 * outlive obj (a string literal): json-c keeps the pointer. */
void dw_channel_json_put(struct json_object *obj, const char *key, const char *value, size_t len);

/* Serializes obj into an owned body and fills call as a JSON POST to path.
 * Takes obj's reference (it is released here). path and suffix are static. */
void dw_channel_json_call(struct json_object *obj, const char *path, const char *suffix,
                          struct dw_http_call *call);

/*
 * Reads a 2xx reply: body (len bytes, not necessarily NUL-terminated) must be
 * a JSON object; nest is a NULL-terminated list of keys of nested objects to
 * descend into first (NULL for none); id_key names the id, a non-empty string
 * or an integer (copied as its decimal text); url_key names the url (NULL when
 * the API gives none). A missing or unusable url leaves reply->url "".
 * Returns DW_EC_NONE, or DW_EC_BAD_RESPONSE with a reason in errbuf.
 */
enum dw_errcode dw_channel_parse_reply(const char *body, size_t len, const char *const *nest,
                                       const char *id_key, const char *url_key,
                                       struct dw_channel_reply *reply, char *errbuf, size_t errlen);

#endif /* DW_CHANNEL_INTERNAL_H */
