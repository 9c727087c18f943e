/*
 * channel-sim: The route table: the six channels and one row per API call of CONTRACT
 * section 3, which drives routing, the field checks and the answers.
 */
#include "sim.h"

const char *const channel_names[CH_COUNT] = {
    "URIDONGNETV", "GINITV", "RINGOBIZ", "INSTAGRAM", "NAVER", "KAKAO",
};

/* The optional path prefix of each channel, e.g. "/kakao/v1/api/...". */
const char *const channel_prefixes[CH_COUNT] = {
    "/uridongnetv", "/ginitv", "/ringobiz", "/instagram", "/naver", "/kakao",
};

static const char *const uridongnetv_allowed[] = {"campaignId", "title",  "content",
                                                  "imageUrl",   "radius", NULL};
static const char *const ginitv_allowed[] = {"campaignId", "title",  "content",
                                             "imageUrl",   "region", NULL};
static const char *const tv_required[] = {"campaignId", "title", NULL};
static const char *const ringobiz_fields[] = {"campaignId", "phoneNumber", "message", NULL};
static const char *const ig_media_fields[] = {"image_url", "caption", NULL};
static const char *const ig_publish_fields[] = {"creation_id", NULL};
static const char *const naver_allowed[] = {"title", "contents", NULL};
static const char *const kakao_allowed[] = {"title", "content", "imageUrl", NULL};
static const char *const title_required[] = {"title", NULL};

/* GINITV answers 201 Created so the worker's "2xx is success" is exercised
 * with something other than 200. */
const struct endpoint endpoints[] = {
    {EP_URIDONGNETV_ADS, CH_URIDONGNETV, "/api/v1/ads", FMT_JSON, ":URIDONGNETV",
     uridongnetv_allowed, tv_required, 200},
    {EP_GINITV_CAMPAIGNS, CH_GINITV, "/api/v1/campaigns", FMT_JSON, ":GINITV", ginitv_allowed,
     tv_required, 201},
    {EP_RINGOBIZ_RINGBACK, CH_RINGOBIZ, "/api/v1/ringback", FMT_JSON, ":RINGOBIZ", ringobiz_fields,
     ringobiz_fields, 200},
    {EP_INSTAGRAM_MEDIA, CH_INSTAGRAM, "/v1/media", FMT_JSON, ":INSTAGRAM", ig_media_fields,
     ig_media_fields, 200},
    {EP_INSTAGRAM_PUBLISH, CH_INSTAGRAM, "/v1/media_publish", FMT_JSON, ":INSTAGRAM:publish",
     ig_publish_fields, ig_publish_fields, 200},
    {EP_NAVER_WRITE, CH_NAVER, "/blog/writePost.json", FMT_FORM, ":NAVER", naver_allowed,
     title_required, 200},
    {EP_KAKAO_POSTS, CH_KAKAO, "/v1/api/talk/channels/posts", FMT_JSON, ":KAKAO", kakao_allowed,
     title_required, 200},
};

const size_t endpoint_count = sizeof(endpoints) / sizeof(endpoints[0]);
