/*
 * The channel interface and registry. A channel is one file in
 * src/channels/ exporting one `const struct dw_channel_type`; it knows how to
 * turn a request into the HTTP call(s) of its API (CONTRACT section 3) and
 * how to read a 2xx answer. It does no I/O: the pool makes the calls.
 * The vocabulary (ids, names, field caps) is include/dw/channel_id.h; a
 * module that only names channels includes that, not this.
 */
#ifndef DW_CHANNEL_H
#define DW_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/status.h"

struct dw_request;

/* One HTTP call a channel wants made: POST base_url + path. */
struct dw_http_call {
    const char *path;         /* static, e.g. "/api/v1/ads" */
    const char *content_type; /* static, "application/json" or form */
    char *body;               /* owned by the call; free with dw_http_call_cleanup */
    size_t body_len;
    const char *idempotency_suffix; /* static: "" or ":publish" (appended to eventId:CHANNEL) */
};

void dw_http_call_cleanup(struct dw_http_call *call);

/* What a 2xx answer said. For a step that is not the last, external_id holds
 * the id the next step needs (Instagram's creation id). */
struct dw_channel_reply {
    char external_id[DW_EXTERNAL_ID_MAX];
    char url[DW_URL_MAX]; /* "" when the API gives none */
};

/* CONTRACT 2.1: a channelSettings value holds at most 200 code points. */
#define DW_CHANNEL_SETTING_MAX_CHARS 200

/* One value a channel reads from channelSettings.<NAME>.<key>. Request
 * decoding reads and checks the settings of every registered type (a
 * request is valid or not whatever its channel list) and keeps the present
 * ones; "" counts as absent. */
struct dw_channel_setting {
    const char *key; /* "phoneNumber" */
    bool required;   /* a request naming the channel without it: INVALID_FIELD */
    int max_chars;   /* code points; the contract's 200 applies when larger or 0 */
};

/* Optional request fields a channel cannot post without. */
enum dw_channel_need {
    DW_CHANNEL_NEEDS_CONTENT = 1u << 0,
    DW_CHANNEL_NEEDS_IMAGE_URL = 1u << 1,
};

struct dw_channel_type {
    enum dw_channel_id id;
    /* The wire name, dw_channel_name(id) for a registered channel; here too
     * because request decoding reads the names of the types it is given. */
    const char *name;
    int steps; /* HTTP calls per post: 1, or 2 for Instagram */
    /* With several steps: how long what step 0 answered (stored before the
     * next step is sent) may be used by a later attempt instead of calling
     * step 0 again; 0: never. Instagram: its containers live 24 hours. */
    int64_t step_id_ttl_ms;

    /* What a request naming this channel must or may carry for it: its
     * settings (NULL when none) and the optional fields it needs (enum
     * dw_channel_need bits), with why for the DLQ message (NULL for none). */
    const struct dw_channel_setting *settings;
    int setting_count;
    unsigned needs;
    const char *needs_why;

    /* Builds call `step` (0-based) for req. prev_id is the external_id the
     * previous step returned (NULL at step 0). On DW_OK the caller owns
     * call->body. Optional fields absent from req are left out of the body. */
    enum dw_err (*build)(const struct dw_request *req, int step, const char *prev_id,
                         struct dw_http_call *call);

    /* Reads the 2xx body of step `step`. Returns DW_EC_NONE with reply filled,
     * or DW_EC_BAD_RESPONSE with a reason in errbuf when the id is missing or
     * the body is not the expected JSON. */
    enum dw_errcode (*parse)(int step, const char *body, size_t len, struct dw_channel_reply *reply,
                             char *errbuf, size_t errlen);
};

/* The registry; id must be < DW_CHANNEL_COUNT. Never NULL. */
const struct dw_channel_type *dw_channel_get(enum dw_channel_id id);

/* The whole registry: DW_CHANNEL_COUNT types, registry[i]->id == i. */
const struct dw_channel_type *const *dw_channel_registry(void);

/* Classifies an HTTP status: 2xx DW_EC_NONE; 408 DW_EC_TIMEOUT; 429
 * DW_EC_RATE_LIMITED; 5xx DW_EC_HTTP_5XX; any other status DW_EC_HTTP_4XX
 * (permanent, not retried). */
enum dw_errcode dw_channel_classify_http(long status);

#endif /* DW_CHANNEL_H */
