/*
 * Reports: the JSON documents other systems read, built from a stored
 * status. The completion event (CONTRACT 2.2) leaves absent optional fields
 * out; the status endpoint's answer (CONTRACT 4) shows them as null.
 *
 * Threads: pure functions of their arguments; any thread.
 * Invariants: channels appear in registry order (enum dw_channel_id); the
 * completion's counts are computed over the drive's channels only, never
 * taken from the stored counters, so a re-drive of a subset reports itself.
 */
#include "dw/report.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/status.h"

/* Slashes stay unescaped: URLs read as URLs. */
#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Every key below is a string literal added once per object, so json-c may
 * keep the pointer instead of copying the key, and need not look for an
 * earlier value under it: the copies, their frees and the lookups were a
 * good part of a completion's cost. */
#define ADD_FLAGS (JSON_C_OBJECT_ADD_KEY_IS_NEW | JSON_C_OBJECT_ADD_CONSTANT_KEY)

/* key must be a string literal not yet in obj. value may be NULL (JSON null). */
static void add(struct json_object *obj, const char *key, struct json_object *value)
{
    json_object_object_add_ex(obj, key, value, ADD_FLAGS);
}

/* A string; NULL (a value out of range) becomes JSON null. */
static void add_string(struct json_object *obj, const char *key, const char *value)
{
    add(obj, key, value ? json_object_new_string(value) : NULL);
}

static void add_int(struct json_object *obj, const char *key, int value)
{
    add(obj, key, json_object_new_int(value));
}

/* A string, or JSON null when value is NULL or empty. */
static void add_string_or_null(struct json_object *obj, const char *key, const char *value)
{
    add(obj, key, value && *value ? json_object_new_string(value) : NULL);
}

/* A timestamp, or JSON null when wall_ms is 0 (not set). */
static void add_time_or_null(struct json_object *obj, const char *key, int64_t wall_ms)
{
    char text[32];
    if (wall_ms == 0) {
        add(obj, key, NULL);
        return;
    }
    dw_format_time(wall_ms, text);
    add_string(obj, key, text);
}

static char *finish(struct json_object *root)
{
    /* The length comes with the text, so the copy needs no strlen. */
    size_t len = 0;
    const char *json = json_object_to_json_string_length(root, JSON_FLAGS, &len);
    if (!json)
        abort(); /* json-c fails only when an allocation does */
    char *text = dw_xmalloc(len + 1);
    memcpy(text, json, len + 1);
    json_object_put(root);
    return text;
}

static struct json_object *completion_channel(enum dw_channel_id id,
                                              const struct dw_channel_state *cs)
{
    struct json_object *obj = json_object_new_object();

    add_string(obj, "channel", dw_channel_name(id));
    add_string(obj, "channelType", dw_channel_kind(id));
    add_string(obj, "status", dw_chstatus_name(cs->status));
    if (cs->external_id[0])
        add_string(obj, "externalId", cs->external_id);
    if (cs->url[0])
        add_string(obj, "distributionUrl", cs->url);
    if (cs->status == DW_CH_FAILED && dw_errcode_name(cs->error)) {
        add_string(obj, "errorCode", dw_errcode_name(cs->error));
        if (cs->error_message[0])
            add_string(obj, "errorMessage", cs->error_message);
    }
    add_int(obj, "attempts", cs->attempts);
    return obj;
}

char *dw_report_completion(const struct dw_status *st, unsigned channel_mask,
                           int64_t completed_at_ms)
{
    struct json_object *root = json_object_new_object();
    /* Sized for the most it can hold, not json-c's default of 32. */
    struct json_object *channels = json_object_new_array_ext(DW_CHANNEL_COUNT);
    int total = 0;
    int success = 0;
    int failure = 0;

    for (int id = 0; id < DW_CHANNEL_COUNT; id++) {
        if (!(channel_mask & (1u << id)))
            continue;
        const struct dw_channel_state *cs = &st->channels[id];
        total++;
        if (cs->status == DW_CH_SUCCESS)
            success++;
        else if (cs->status == DW_CH_FAILED)
            failure++;
        json_object_array_add(channels, completion_channel((enum dw_channel_id)id, cs));
    }

    char completed_at[32];
    dw_format_time(completed_at_ms, completed_at);

    add_string(root, "eventId", st->event_id);
    add_string(root, "status", dw_overall_name(st->overall));
    add_int(root, "totalChannels", total);
    add_int(root, "successCount", success);
    add_int(root, "failureCount", failure);
    add(root, "distributedChannels", channels);
    add_string(root, "completedAt", completed_at);
    return finish(root);
}

static struct json_object *status_channel(enum dw_channel_id id, const struct dw_channel_state *cs)
{
    struct json_object *obj = json_object_new_object();

    add_string(obj, "channel", dw_channel_name(id));
    add_string(obj, "channelType", dw_channel_kind(id));
    add_string(obj, "status", dw_chstatus_name(cs->status));
    add_int(obj, "attempts", cs->attempts);
    add_string_or_null(obj, "externalId", cs->external_id);
    add_string_or_null(obj, "distributionUrl", cs->url);
    add_string_or_null(obj, "errorCode", dw_errcode_name(cs->error));
    add_string_or_null(obj, "errorMessage", cs->error_message);
    add_time_or_null(obj, "nextAttemptAt", cs->next_attempt_ms);
    add_time_or_null(obj, "updatedAt", cs->updated_at_ms);
    return obj;
}

char *dw_report_status(const struct dw_status *st)
{
    struct json_object *root = json_object_new_object();
    struct json_object *channels = json_object_new_array_ext(DW_CHANNEL_COUNT);

    for (int id = 0; id < DW_CHANNEL_COUNT; id++) {
        if (st->channels[id].present)
            json_object_array_add(channels,
                                  status_channel((enum dw_channel_id)id, &st->channels[id]));
    }

    add_string(root, "eventId", st->event_id);
    add_string(root, "overallStatus", dw_overall_name(st->overall));
    add_int(root, "totalChannels", st->total_channels);
    add_int(root, "successCount", st->success_count);
    add_int(root, "failureCount", st->failure_count);
    add_time_or_null(root, "startedAt", st->started_at_ms);
    add_time_or_null(root, "completedAt", st->completed_at_ms);
    add(root, "channels", channels);
    return finish(root);
}
