/*
 * URIDONGNETV, Uri-dongne TV (local-area TV ads): one JSON POST of the
 * campaign with its broadcast radius (CONTRACT section 3). Stateless; any
 * thread.
 */
#include <stddef.h>

#include "channel_internal.h"
#include "dw/request.h"

static const struct dw_channel_field fields[] = {
    {"campaignId", offsetof(struct dw_request, event_id)},
    {"title", offsetof(struct dw_request, title)},
    {"content", offsetof(struct dw_request, content)},
    {"imageUrl", offsetof(struct dw_request, image_url)},
    {"radius", offsetof(struct dw_request, radius)},
};

static enum dw_err build(const struct dw_request *req, int step, const char *prev_id,
                         struct dw_http_call *call)
{
    (void)prev_id;
    if (step != 0)
        return DW_ERR_INVALID;
    dw_channel_json_call(dw_channel_json_from_fields(req, fields, DW_ARRAY_LEN(fields)),
                         "/api/v1/ads", "", call);
    return DW_OK;
}

static enum dw_errcode parse(int step, const char *body, size_t len, struct dw_channel_reply *reply,
                             char *errbuf, size_t errlen)
{
    (void)step;
    return dw_channel_parse_reply(body, len, NULL, "adId", "url", reply, errbuf, errlen);
}

const struct dw_channel_type dw_channel_uridongnetv = {
    .id = DW_CHANNEL_URIDONGNETV,
    .name = "URIDONGNETV",
    .steps = 1,
    .build = build,
    .parse = parse,
};
