/*
 * INSTAGRAM: two calls per post (CONTRACT section 3). Step 0 creates a media
 * container from the image and a caption (the title, then a blank line and
 * the content when there is content) and answers its creation id; step 1
 * publishes that container, with the idempotency suffix ":publish" so the
 * two calls carry different keys. Stateless; any thread: the creation id
 * travels through the caller (prev_id), not through this file.
 *
 * Publishing is made idempotent by construction: the dispatch stores the
 * creation id before it asks for the publish, and every later attempt
 * (a retry, a re-drive, a drive after a crash) publishes that container
 * while it is younger than step_id_ttl_ms, so one post can never become
 * two containers published. Instagram expires a container after 24 hours,
 * counted from its creation, a little before we store it: 23 hours leaves
 * a publish in flight room to finish.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "channel_internal.h"
#include "dw/request.h"

enum { STEP_MEDIA, STEP_PUBLISH };

static const struct dw_channel_field media_fields[] = {
    DW_CHANNEL_FIELD("image_url", image_url),
};

static void build_media(const struct dw_request *req, struct dw_http_call *call)
{
    struct json_object *body = dw_channel_json_from_fields(req, DW_CHANNEL_INSTAGRAM, media_fields,
                                                           DW_ARRAY_LEN(media_fields));
    if (dw_channel_present(req->content)) {
        size_t title_len = strlen(req->title);
        size_t content_len = strlen(req->content);
        size_t len = title_len + 2 + content_len;
        char *caption = dw_xmalloc(len + 1);
        memcpy(caption, req->title, title_len);
        memcpy(caption + title_len, "\n\n", 2);
        memcpy(caption + title_len + 2, req->content, content_len + 1);
        dw_channel_json_put(body, "caption", caption, len);
        free(caption);
    } else {
        dw_channel_json_put(body, "caption", req->title, strlen(req->title));
    }
    dw_channel_json_call(body, "/v1/media", "", call);
}

static enum dw_err build(const struct dw_request *req, int step, const char *prev_id,
                         struct dw_http_call *call)
{
    if (step == STEP_MEDIA) {
        build_media(req, call);
        return DW_OK;
    }
    if (step == STEP_PUBLISH && dw_channel_present(prev_id)) {
        struct json_object *body = dw_channel_json_new();
        dw_channel_json_put(body, "creation_id", prev_id, strlen(prev_id));
        dw_channel_json_call(body, "/v1/media_publish", ":publish", call);
        return DW_OK;
    }
    return DW_ERR_INVALID;
}

static enum dw_errcode parse(int step, const char *body, size_t len, struct dw_channel_reply *reply,
                             char *errbuf, size_t errlen)
{
    if (step == STEP_MEDIA)
        return dw_channel_parse_reply(body, len, NULL, "id", NULL, reply, errbuf, errlen);
    return dw_channel_parse_reply(body, len, NULL, "id", "permalink", reply, errbuf, errlen);
}

const struct dw_channel_type dw_channel_instagram = {
    .id = DW_CHANNEL_INSTAGRAM,
    .name = "INSTAGRAM",
    .steps = 2,
    .step_id_ttl_ms = 23LL * 3600 * 1000,
    .needs = DW_CHANNEL_NEEDS_IMAGE_URL,
    .needs_why = "Instagram posts need an image",
    .build = build,
    .parse = parse,
};
