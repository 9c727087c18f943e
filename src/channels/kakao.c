/*
 * KAKAO, Kakao Channel: one JSON POST of a channel post (CONTRACT section
 * 3). Stateless; any thread.
 */
#include <stddef.h>

#include "channel_internal.h"
#include "dw/request.h"

static const struct dw_channel_field fields[] = {
    DW_CHANNEL_FIELD("title", title),
    DW_CHANNEL_FIELD("content", content),
    DW_CHANNEL_FIELD("imageUrl", image_url),
};

static enum dw_err build(const struct dw_request *req, int step, const char *prev_id,
                         struct dw_http_call *call)
{
    (void)prev_id;
    if (step != 0)
        return DW_ERR_INVALID;
    dw_channel_json_call(
        dw_channel_json_from_fields(req, DW_CHANNEL_KAKAO, fields, DW_ARRAY_LEN(fields)),
        "/v1/api/talk/channels/posts", "", call);
    return DW_OK;
}

static enum dw_errcode parse(int step, const char *body, size_t len, struct dw_channel_reply *reply,
                             char *errbuf, size_t errlen)
{
    (void)step;
    return dw_channel_parse_reply(body, len, NULL, "postId", "url", reply, errbuf, errlen);
}

const struct dw_channel_type dw_channel_kakao = {
    .id = DW_CHANNEL_KAKAO,
    .name = "KAKAO",
    .steps = 1,
    .build = build,
    .parse = parse,
};
