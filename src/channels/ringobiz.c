/*
 * RINGOBIZ, Ringo Biz (ringback-tone ads): one JSON POST of the message a
 * caller hears on the advertiser's phone number (CONTRACT section 3). The
 * message is the title cut to MESSAGE_MAX_CHARS code points, never inside a
 * UTF-8 sequence. The reply has an id and no url. Stateless; any thread.
 */
#include <stddef.h>

#include "channel_internal.h"
#include "dw/utf8.h"
#include "dw/request.h"

#define MESSAGE_MAX_CHARS 60

/* channelSettings.RINGOBIZ.phoneNumber, required when RINGOBIZ is requested. */
static const struct dw_channel_setting settings[] = {
    {"phoneNumber", true, DW_CHANNEL_SETTING_MAX_CHARS},
};

static const struct dw_channel_field fields[] = {
    DW_CHANNEL_FIELD("campaignId", event_id),
    DW_CHANNEL_SETTING("phoneNumber", "phoneNumber"),
};

static enum dw_err build(const struct dw_request *req, int step, const char *prev_id,
                         struct dw_http_call *call)
{
    (void)prev_id;
    if (step != 0)
        return DW_ERR_INVALID;
    struct json_object *body =
        dw_channel_json_from_fields(req, DW_CHANNEL_RINGOBIZ, fields, DW_ARRAY_LEN(fields));
    dw_channel_json_put(body, "message", req->title, dw_utf8_prefix(req->title, MESSAGE_MAX_CHARS));
    dw_channel_json_call(body, "/api/v1/ringback", "", call);
    return DW_OK;
}

static enum dw_errcode parse(int step, const char *body, size_t len, struct dw_channel_reply *reply,
                             char *errbuf, size_t errlen)
{
    (void)step;
    return dw_channel_parse_reply(body, len, NULL, "ringbackId", NULL, reply, errbuf, errlen);
}

const struct dw_channel_type dw_channel_ringobiz = {
    .id = DW_CHANNEL_RINGOBIZ,
    .name = "RINGOBIZ",
    .steps = 1,
    .settings = settings,
    .setting_count = (int)DW_ARRAY_LEN(settings),
    .build = build,
    .parse = parse,
};
