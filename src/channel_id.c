/*
 * The channel vocabulary (include/dw/channel_id.h): one const table in enum
 * order. Threads: any; nothing here changes. Invariant: words[i] describes
 * id i, and an adapter's dw_channel_type.name equals dw_channel_name(id)
 * (tests/unit/test_channels.c checks both).
 */
#include "dw/channel_id.h"

#include <stddef.h>
#include <string.h>

static const struct {
    const char *name;
    const char *kind;
    const char *display_name;
} words[] = {
    [DW_CHANNEL_URIDONGNETV] = {"URIDONGNETV", "TV", "Uri-dongne TV"},
    [DW_CHANNEL_GINITV] = {"GINITV", "TV", "Genie TV"},
    [DW_CHANNEL_RINGOBIZ] = {"RINGOBIZ", "CALL", "Ringo Biz"},
    [DW_CHANNEL_INSTAGRAM] = {"INSTAGRAM", "SNS", "Instagram"},
    [DW_CHANNEL_NAVER] = {"NAVER", "SNS", "Naver Blog"},
    [DW_CHANNEL_KAKAO] = {"KAKAO", "SNS", "Kakao Channel"},
};

_Static_assert(sizeof(words) / sizeof(words[0]) == DW_CHANNEL_COUNT, "one entry per channel id");

const char *dw_channel_name(enum dw_channel_id id)
{
    return words[id].name;
}

const char *dw_channel_kind(enum dw_channel_id id)
{
    return words[id].kind;
}

const char *dw_channel_display_name(enum dw_channel_id id)
{
    return words[id].display_name;
}

int dw_channel_from_name(const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < DW_CHANNEL_COUNT; i++) {
        if (strcmp(words[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}
