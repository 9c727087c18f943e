/*
 * The channel vocabulary: the ids of the six channels, their wire names,
 * kinds and display names, and the caps of the per-channel text fields the
 * store, the pool and the reports carry. A leaf: it includes nothing of the
 * domain, so a module that only names or counts channels (config, store,
 * metrics, guards, transport) does not depend on the adapters
 * (include/dw/channel.h).
 */
#ifndef DW_CHANNEL_ID_H
#define DW_CHANNEL_ID_H

enum dw_channel_id {
    DW_CHANNEL_URIDONGNETV,
    DW_CHANNEL_GINITV,
    DW_CHANNEL_RINGOBIZ,
    DW_CHANNEL_INSTAGRAM,
    DW_CHANNEL_NAVER,
    DW_CHANNEL_KAKAO,
    DW_CHANNEL_COUNT
};

#define DW_EXTERNAL_ID_MAX 128 /* bytes of a channel's post id, NUL included */
#define DW_URL_MAX         512 /* bytes of a post's url, NUL included */
#define DW_ERRMSG_MAX      256 /* bytes of a channel error message, NUL included */

/* The wire name, "KAKAO" (CONTRACT 2.1); id must be < DW_CHANNEL_COUNT. */
const char *dw_channel_name(enum dw_channel_id id);

/* "TV", "CALL" or "SNS" (CONTRACT 2.2 channelType); id < DW_CHANNEL_COUNT. */
const char *dw_channel_kind(enum dw_channel_id id);

/* "Kakao Channel"; id < DW_CHANNEL_COUNT. */
const char *dw_channel_display_name(enum dw_channel_id id);

/* The id of a wire name, or -1 when unknown (case-sensitive). */
int dw_channel_from_name(const char *name);

#endif /* DW_CHANNEL_ID_H */
