/*
 * GINITV, Genie TV (IPTV): one JSON POST of the campaign with its target
 * region (CONTRACT section 3). Stateless; any thread.
 */
#include <stddef.h>

#include "channel_internal.h"
#include "dw/request.h"

/* channelSettings.GINITV.region. */
static const struct dw_channel_setting settings[] = {
    {"region", false, DW_CHANNEL_SETTING_MAX_CHARS},
};

static const struct dw_channel_field fields[] = {
    DW_CHANNEL_FIELD("campaignId", event_id), DW_CHANNEL_FIELD("title", title),
    DW_CHANNEL_FIELD("content", content),     DW_CHANNEL_FIELD("imageUrl", image_url),
    DW_CHANNEL_SETTING("region", "region"),
};

static enum dw_err build(const struct dw_request *req, int step, const char *prev_id,
                         struct dw_http_call *call)
{
    (void)prev_id;
    if (step != 0)
        return DW_ERR_INVALID;
    dw_channel_json_call(
        dw_channel_json_from_fields(req, DW_CHANNEL_GINITV, fields, DW_ARRAY_LEN(fields)),
        "/api/v1/campaigns", "", call);
    return DW_OK;
}

static enum dw_errcode parse(int step, const char *body, size_t len, struct dw_channel_reply *reply,
                             char *errbuf, size_t errlen)
{
    (void)step;
    return dw_channel_parse_reply(body, len, NULL, "campaignId", "url", reply, errbuf, errlen);
}

const struct dw_channel_type dw_channel_ginitv = {
    .id = DW_CHANNEL_GINITV,
    .name = "GINITV",
    .steps = 1,
    .settings = settings,
    .setting_count = (int)DW_ARRAY_LEN(settings),
    .build = build,
    .parse = parse,
};
