/*
 * Reports: the completion event (CONTRACT 2.2) and the status answer
 * (CONTRACT 4), parsed back with json-c and checked field by field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/report.h"
#include "dw/status.h"
#include "dw/store.h"

#define ALL_CHANNELS ((1u << DW_CHANNEL_COUNT) - 1)
/* 2025-10-29T06:13:04.123Z */
#define COMPLETED_AT 1761718384123LL
#define STARTED_AT   1761718381000LL

static void set_success(struct dw_status *st, enum dw_channel_id ch, const char *external_id,
                        const char *url, int attempts)
{
    struct dw_channel_state *cs = &st->channels[ch];
    cs->present = true;
    cs->status = DW_CH_SUCCESS;
    cs->attempts = attempts;
    dw_strlcpy(cs->external_id, external_id, sizeof(cs->external_id));
    dw_strlcpy(cs->url, url, sizeof(cs->url));
    cs->updated_at_ms = STARTED_AT + 1000;
}

static void set_failed(struct dw_status *st, enum dw_channel_id ch, enum dw_errcode code,
                       const char *message, int attempts)
{
    struct dw_channel_state *cs = &st->channels[ch];
    cs->present = true;
    cs->status = DW_CH_FAILED;
    cs->attempts = attempts;
    cs->error = code;
    dw_strlcpy(cs->error_message, message, sizeof(cs->error_message));
    cs->external_id[0] = '\0';
    cs->url[0] = '\0';
    cs->updated_at_ms = STARTED_AT + 2000;
}

static struct dw_status *all_success(void)
{
    struct dw_status *st = dw_xcalloc(1, sizeof(*st));
    dw_strlcpy(st->event_id, "evt-20251029-0001", sizeof(st->event_id));
    st->overall = DW_OVERALL_COMPLETED;
    st->total_channels = 6;
    st->success_count = 6;
    st->started_at_ms = STARTED_AT;
    st->completed_at_ms = COMPLETED_AT;
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        char id[32];
        char url[64];
        dw_snprintf(id, sizeof(id), "ext-%d", ch);
        dw_snprintf(url, sizeof(url), "https://ch%d.example.com/p/%d", ch, ch);
        set_success(st, (enum dw_channel_id)ch, id, ch == DW_CHANNEL_RINGOBIZ ? "" : url,
                    1); /* RINGOBIZ gives no url */
    }
    return st;
}

static struct json_object *parse(char *text)
{
    assert_non_null(text);
    struct json_object *obj = json_tokener_parse(text);
    assert_non_null(obj);
    assert_true(json_object_is_type(obj, json_type_object));
    free(text);
    return obj;
}

static struct json_object *get(struct json_object *obj, const char *key)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v))
        fail_msg("missing key %s", key);
    return v;
}

static bool has(struct json_object *obj, const char *key)
{
    return json_object_object_get_ex(obj, key, NULL);
}

static void assert_str(struct json_object *obj, const char *key, const char *want)
{
    struct json_object *v = get(obj, key);
    assert_true(json_object_is_type(v, json_type_string));
    assert_string_equal(json_object_get_string(v), want);
}

static void assert_int(struct json_object *obj, const char *key, int want)
{
    struct json_object *v = get(obj, key);
    assert_true(json_object_is_type(v, json_type_int));
    assert_int_equal(json_object_get_int(v), want);
}

/* The key is there, with the value JSON null. */
static void assert_json_null(struct json_object *obj, const char *key)
{
    assert_true(has(obj, key));
    assert_true(get(obj, key) == NULL);
}

static void test_completion_all_success(void **state)
{
    (void)state;
    struct dw_status *st = all_success();
    struct json_object *root = parse(dw_report_completion(st, ALL_CHANNELS, COMPLETED_AT));

    assert_str(root, "eventId", "evt-20251029-0001");
    assert_str(root, "status", "COMPLETED");
    assert_int(root, "totalChannels", 6);
    assert_int(root, "successCount", 6);
    assert_int(root, "failureCount", 0);
    assert_str(root, "completedAt", "2025-10-29T06:13:04.123Z");
    assert_int_equal(json_object_object_length(root), 7);

    struct json_object *list = get(root, "distributedChannels");
    assert_int_equal(json_object_array_length(list), 6);
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        struct json_object *c = json_object_array_get_idx(list, (size_t)ch);
        assert_str(c, "channel", dw_channel_name((enum dw_channel_id)ch)); /* registry order */
        assert_str(c, "channelType", dw_channel_kind((enum dw_channel_id)ch));
        assert_str(c, "status", "SUCCESS");
        assert_int(c, "attempts", 1);
        char id[32];
        dw_snprintf(id, sizeof(id), "ext-%d", ch);
        assert_str(c, "externalId", id);
        if (ch == DW_CHANNEL_RINGOBIZ)
            assert_false(has(c, "distributionUrl"));
        else
            assert_true(has(c, "distributionUrl"));
        assert_false(has(c, "errorCode"));
        assert_false(has(c, "errorMessage"));
    }
    assert_str(json_object_array_get_idx(list, DW_CHANNEL_KAKAO), "distributionUrl",
               "https://ch5.example.com/p/5");
    assert_str(json_object_array_get_idx(list, DW_CHANNEL_RINGOBIZ), "channelType", "CALL");
    assert_str(json_object_array_get_idx(list, DW_CHANNEL_GINITV), "channelType", "TV");
    assert_str(json_object_array_get_idx(list, DW_CHANNEL_NAVER), "channelType", "SNS");

    json_object_put(root);
    free(st);
}

static void test_completion_partial_failure(void **state)
{
    (void)state;
    struct dw_status *st = all_success();
    st->overall = DW_OVERALL_PARTIAL_FAILURE;
    /* RINGOBIZ was rejected by its breaker; KAKAO ran out of retries. */
    set_failed(st, DW_CHANNEL_RINGOBIZ, DW_EC_CIRCUIT_OPEN, "", 0);
    set_failed(st, DW_CHANNEL_KAKAO, DW_EC_RETRIES_EXHAUSTED, "HTTP 503 \"busy\"", 3);
    /* NAVER succeeded in an earlier drive and was skipped: stored figures. */
    set_success(st, DW_CHANNEL_NAVER, "np-77", "https://blog.naver.com/p/77", 2);

    struct json_object *root = parse(dw_report_completion(st, ALL_CHANNELS, COMPLETED_AT));
    assert_str(root, "status", "PARTIAL_FAILURE");
    assert_int(root, "totalChannels", 6);
    assert_int(root, "successCount", 4);
    assert_int(root, "failureCount", 2);

    struct json_object *list = get(root, "distributedChannels");
    struct json_object *ringo = json_object_array_get_idx(list, DW_CHANNEL_RINGOBIZ);
    assert_str(ringo, "status", "FAILED");
    assert_str(ringo, "errorCode", "CIRCUIT_OPEN");
    assert_false(has(ringo, "errorMessage")); /* none stored */
    assert_false(has(ringo, "externalId"));
    assert_false(has(ringo, "distributionUrl"));
    assert_int(ringo, "attempts", 0);

    struct json_object *kakao = json_object_array_get_idx(list, DW_CHANNEL_KAKAO);
    assert_str(kakao, "errorCode", "RETRIES_EXHAUSTED");
    assert_str(kakao, "errorMessage", "HTTP 503 \"busy\"");
    assert_int(kakao, "attempts", 3);

    struct json_object *naver = json_object_array_get_idx(list, DW_CHANNEL_NAVER);
    assert_str(naver, "status", "SUCCESS");
    assert_str(naver, "externalId", "np-77");
    assert_str(naver, "distributionUrl", "https://blog.naver.com/p/77");
    assert_int(naver, "attempts", 2);

    json_object_put(root);
    free(st);
}

static void test_completion_counts_only_masked_channels(void **state)
{
    (void)state;
    struct dw_status *st = all_success();
    /* Stored counters describe another drive; the report must not use them. */
    st->total_channels = 6;
    st->success_count = 5;
    st->failure_count = 1;
    st->overall = DW_OVERALL_FAILED;
    set_failed(st, DW_CHANNEL_GINITV, DW_EC_HTTP_4XX, "HTTP 400", 1);
    unsigned mask = (1u << DW_CHANNEL_GINITV) | (1u << DW_CHANNEL_INSTAGRAM);

    struct json_object *root = parse(dw_report_completion(st, mask, COMPLETED_AT));
    assert_str(root, "status", "FAILED");
    assert_int(root, "totalChannels", 2);
    assert_int(root, "successCount", 1);
    assert_int(root, "failureCount", 1);
    struct json_object *list = get(root, "distributedChannels");
    assert_int_equal(json_object_array_length(list), 2);
    assert_str(json_object_array_get_idx(list, 0), "channel", "GINITV");
    assert_str(json_object_array_get_idx(list, 0), "errorCode", "HTTP_4XX");
    assert_str(json_object_array_get_idx(list, 1), "channel", "INSTAGRAM");

    json_object_put(root);

    /* An empty mask: no channels, zero counts, still a valid document. */
    root = parse(dw_report_completion(st, 0, COMPLETED_AT));
    assert_int(root, "totalChannels", 0);
    assert_int_equal(json_object_array_length(get(root, "distributedChannels")), 0);
    json_object_put(root);
    free(st);
}

static void test_completion_keeps_urls_readable(void **state)
{
    (void)state;
    struct dw_status *st = all_success();
    char *text = dw_report_completion(st, 1u << DW_CHANNEL_KAKAO, COMPLETED_AT);
    assert_non_null(strstr(text, "\"distributionUrl\":\"https://ch5.example.com/p/5\""));
    free(text);
    free(st);
}

static void test_status_shows_absent_fields_as_null(void **state)
{
    (void)state;
    struct dw_status *st = dw_xcalloc(1, sizeof(*st));
    dw_strlcpy(st->event_id, "evt-2", sizeof(st->event_id));
    st->overall = DW_OVERALL_IN_PROGRESS;
    st->total_channels = 3;
    st->success_count = 1;
    st->failure_count = 1;
    st->started_at_ms = STARTED_AT;
    set_success(st, DW_CHANNEL_KAKAO, "kp-91823", "https://pf.kakao.com/p/1", 1);
    set_success(st, DW_CHANNEL_RINGOBIZ, "rb-1", "", 1);
    set_failed(st, DW_CHANNEL_NAVER, DW_EC_HTTP_4XX, "HTTP 401", 1);
    st->channels[DW_CHANNEL_GINITV].present = true; /* PENDING, nothing yet */
    st->channels[DW_CHANNEL_GINITV].status = DW_CH_PENDING;
    /* NAVER's automatic re-drive is planned (CONTRACT 2.4). */
    st->channels[DW_CHANNEL_NAVER].next_attempt_ms = STARTED_AT + 60000;

    struct json_object *root = parse(dw_report_status(st));
    assert_str(root, "eventId", "evt-2");
    assert_str(root, "overallStatus", "IN_PROGRESS");
    assert_int(root, "totalChannels", 3);
    assert_int(root, "successCount", 1);
    assert_int(root, "failureCount", 1);
    assert_str(root, "startedAt", "2025-10-29T06:13:01.000Z");
    assert_json_null(root, "completedAt");

    struct json_object *list = get(root, "channels");
    assert_int_equal(json_object_array_length(list), 4); /* present rows only */
    const char *order[] = {"GINITV", "RINGOBIZ", "NAVER", "KAKAO"};
    for (size_t i = 0; i < DW_ARRAY_LEN(order); i++) {
        struct json_object *c = json_object_array_get_idx(list, i);
        assert_str(c, "channel", order[i]);
        assert_int_equal(json_object_object_length(c), 10);
    }

    struct json_object *ginitv = json_object_array_get_idx(list, 0);
    assert_str(ginitv, "status", "PENDING");
    assert_str(ginitv, "channelType", "TV");
    assert_int(ginitv, "attempts", 0);
    assert_json_null(ginitv, "externalId");
    assert_json_null(ginitv, "distributionUrl");
    assert_json_null(ginitv, "errorCode");
    assert_json_null(ginitv, "errorMessage");
    assert_json_null(ginitv, "updatedAt");
    assert_json_null(ginitv, "nextAttemptAt");

    struct json_object *ringo = json_object_array_get_idx(list, 1);
    assert_str(ringo, "externalId", "rb-1");
    assert_json_null(ringo, "distributionUrl");

    struct json_object *naver = json_object_array_get_idx(list, 2);
    assert_str(naver, "status", "FAILED");
    assert_str(naver, "errorCode", "HTTP_4XX");
    assert_str(naver, "errorMessage", "HTTP 401");
    assert_str(naver, "updatedAt", "2025-10-29T06:13:03.000Z");
    assert_str(naver, "nextAttemptAt", "2025-10-29T06:14:01.000Z");

    struct json_object *kakao = json_object_array_get_idx(list, 3);
    assert_str(kakao, "status", "SUCCESS");
    assert_str(kakao, "channelType", "SNS");
    assert_str(kakao, "externalId", "kp-91823");
    assert_str(kakao, "distributionUrl", "https://pf.kakao.com/p/1");
    assert_json_null(kakao, "errorCode");
    assert_str(kakao, "updatedAt", "2025-10-29T06:13:02.000Z");
    assert_json_null(kakao, "nextAttemptAt");

    json_object_put(root);
    free(st);
}

static void test_status_final(void **state)
{
    (void)state;
    struct dw_status *st = all_success();
    struct json_object *root = parse(dw_report_status(st));
    assert_str(root, "overallStatus", "COMPLETED");
    assert_str(root, "completedAt", "2025-10-29T06:13:04.123Z");
    assert_int_equal(json_object_array_length(get(root, "channels")), 6);
    json_object_put(root);
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_completion_all_success),
        cmocka_unit_test(test_completion_partial_failure),
        cmocka_unit_test(test_completion_counts_only_masked_channels),
        cmocka_unit_test(test_completion_keeps_urls_readable),
        cmocka_unit_test(test_status_shows_absent_fields_as_null),
        cmocka_unit_test(test_status_final),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
