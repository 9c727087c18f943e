/*
 * Test support: every channel's URL and token as environment entries, for
 * a unit test whose configuration must load but is about something else
 * (dw_config_create requires both for each channel).
 */
#ifndef DW_TEST_CHANNEL_ENV_H
#define DW_TEST_CHANNEL_ENV_H

#define DW_TEST_CHANNEL_URLS                                                                       \
    "DIST_CHANNEL_URIDONGNETV_URL=https://u", "DIST_CHANNEL_GINITV_URL=https://g",                 \
        "DIST_CHANNEL_RINGOBIZ_URL=https://r", "DIST_CHANNEL_INSTAGRAM_URL=https://i",             \
        "DIST_CHANNEL_NAVER_URL=https://n", "DIST_CHANNEL_KAKAO_URL=https://k"

#define DW_TEST_CHANNEL_TOKENS                                                                     \
    "DIST_CHANNEL_URIDONGNETV_TOKEN=tu", "DIST_CHANNEL_GINITV_TOKEN=tg",                           \
        "DIST_CHANNEL_RINGOBIZ_TOKEN=tr", "DIST_CHANNEL_INSTAGRAM_TOKEN=ti",                       \
        "DIST_CHANNEL_NAVER_TOKEN=tn", "DIST_CHANNEL_KAKAO_TOKEN=tk"

#endif /* DW_TEST_CHANNEL_ENV_H */
