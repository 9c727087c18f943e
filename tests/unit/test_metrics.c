/*
 * Metrics: exact exposition lines, complete label sets from the start,
 * cumulative histogram buckets, and exact sums under concurrent updates.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dw/channel.h"
#include "dw/common.h"
#include "dw/metrics.h"
#include "dw/status.h"

/* Renders m into a new string the caller frees. */
static char *render(struct dw_metrics *m)
{
    struct dw_buf buf;
    dw_buf_init(&buf, 4 * 1024 * 1024);
    assert_int_equal(dw_metrics_render(m, &buf), DW_OK);
    return dw_buf_detach(&buf, NULL);
}

/* The text holds `line` as a whole line. */
static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p; p = strstr(p + 1, line)) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    }
    fail_msg("line not found: %s", line);
}

static int count_lines_starting(const char *text, const char *prefix)
{
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, len) == 0)
            n++;
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        p = nl + 1;
    }
    return n;
}

static void test_fresh_has_every_series_at_zero(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();
    char *text = render(m);
    char line[256];

    assert_line(text, "# TYPE dw_requests_consumed_total counter");
    assert_non_null(strstr(text, "# HELP dw_requests_consumed_total "));
    assert_line(text, "dw_requests_consumed_total 0");

    const char *final[] = {"COMPLETED", "PARTIAL_FAILURE", "FAILED"};
    for (size_t i = 0; i < DW_ARRAY_LEN(final); i++) {
        dw_snprintf(line, sizeof(line), "dw_requests_completed_total{status=\"%s\"} 0", final[i]);
        assert_line(text, line);
    }
    assert_int_equal(count_lines_starting(text, "dw_requests_completed_total{"), 3);

    for (int c = DW_DLQ_NONE + 1; c < DW_DLQ_COUNT; c++) {
        dw_snprintf(line, sizeof(line), "dw_dlq_total{code=\"%s\"} 0",
                    dw_dlq_name((enum dw_dlq_code)c));
        assert_line(text, line);
    }
    assert_int_equal(count_lines_starting(text, "dw_dlq_total{"), 5);

    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        const char *name = dw_channel_get((enum dw_channel_id)ch)->name;
        for (int o = 0; o < DW_EC_COUNT; o++) {
            const char *outcome = o ? dw_errcode_name((enum dw_errcode)o) : "success";
            dw_snprintf(line, sizeof(line),
                        "dw_channel_calls_total{channel=\"%s\",outcome=\"%s\"} 0", name, outcome);
            assert_line(text, line);
        }
        dw_snprintf(line, sizeof(line),
                    "dw_channel_call_duration_seconds_bucket{channel=\"%s\",le=\"+Inf\"} 0", name);
        assert_line(text, line);
        dw_snprintf(line, sizeof(line), "dw_channel_call_duration_seconds_count{channel=\"%s\"} 0",
                    name);
        assert_line(text, line);
    }
    assert_int_equal(count_lines_starting(text, "dw_channel_calls_total{"), 6 * 10);
    assert_int_equal(count_lines_starting(text, "dw_channel_call_duration_seconds_bucket{"),
                     6 * 13);

    assert_line(text, "# TYPE dw_channel_call_duration_seconds histogram");
    assert_line(text, "# TYPE dw_requests_in_flight gauge");
    const char *zeros[] = {
        "dw_requests_in_flight 0",
        "dw_channel_calls_in_flight 0",
        "dw_partitions_paused 0",
        "dw_partitions_assigned 0",
        "dw_completions_produced_total 0",
        "dw_offsets_committed_total 0",
        "dw_db_errors_total 0",
        "dw_kafka_errors_total 0",
        "dw_db_round_trips_total 0",
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(zeros); i++)
        assert_line(text, zeros[i]);

    assert_line(text, "# TYPE dw_build_info gauge");
    const char *build = strstr(text, "\ndw_build_info{version=\"");
    assert_non_null(build);
    assert_non_null(strstr(build, "\"} 1\n"));

    /* Every sample line belongs to a family announced by HELP and TYPE. */
    assert_int_equal(count_lines_starting(text, "# HELP "), count_lines_starting(text, "# TYPE "));

    free(text);
    dw_metrics_destroy(m);
}

static void test_counters_and_gauges(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();

    dw_metrics_count(m, DW_COUNTER_REQUESTS_CONSUMED, 3);
    dw_metrics_count(m, DW_COUNTER_REQUESTS_CONSUMED, 2);
    dw_metrics_count(m, DW_COUNTER_DB_ROUND_TRIPS, 7);
    dw_metrics_gauge_set(m, DW_GAUGE_PARTITIONS_ASSIGNED, 12);
    dw_metrics_gauge_add(m, DW_GAUGE_REQUESTS_IN_FLIGHT, 4);
    dw_metrics_gauge_add(m, DW_GAUGE_REQUESTS_IN_FLIGHT, -1);
    dw_metrics_gauge_add(m, DW_GAUGE_CALLS_IN_FLIGHT, -2);
    dw_metrics_request_done(m, DW_OVERALL_PARTIAL_FAILURE);
    dw_metrics_request_done(m, DW_OVERALL_COMPLETED);
    dw_metrics_request_done(m, DW_OVERALL_COMPLETED);
    dw_metrics_request_done(m, DW_OVERALL_IN_PROGRESS); /* not final: ignored */
    dw_metrics_dlq(m, DW_DLQ_TOO_LARGE);
    dw_metrics_dlq(m, DW_DLQ_NONE); /* ignored */
    dw_metrics_channel_call(m, DW_CHANNEL_KAKAO, DW_EC_NONE, 1000);
    dw_metrics_channel_call(m, DW_CHANNEL_RINGOBIZ, DW_EC_CIRCUIT_OPEN, 0);
    dw_metrics_channel_call(m, DW_CHANNEL_RINGOBIZ, DW_EC_CIRCUIT_OPEN, 0);

    /* NULL handles and values out of range are ignored, never a crash. */
    dw_metrics_count(NULL, DW_COUNTER_REQUESTS_CONSUMED, 1);
    dw_metrics_count(m, DW_COUNTER_COUNT, 1);
    dw_metrics_gauge_set(m, DW_GAUGE_COUNT, 1);
    dw_metrics_channel_call(m, DW_CHANNEL_COUNT, DW_EC_NONE, 1);
    dw_metrics_channel_call(m, DW_CHANNEL_KAKAO, DW_EC_COUNT, 1);

    char *text = render(m);
    assert_line(text, "dw_requests_consumed_total 5");
    assert_line(text, "dw_db_round_trips_total 7");
    assert_line(text, "dw_partitions_assigned 12");
    assert_line(text, "dw_requests_in_flight 3");
    assert_line(text, "dw_channel_calls_in_flight -2");
    assert_line(text, "dw_requests_completed_total{status=\"COMPLETED\"} 2");
    assert_line(text, "dw_requests_completed_total{status=\"PARTIAL_FAILURE\"} 1");
    assert_line(text, "dw_requests_completed_total{status=\"FAILED\"} 0");
    assert_line(text, "dw_dlq_total{code=\"TOO_LARGE\"} 1");
    assert_line(text, "dw_dlq_total{code=\"INVALID_JSON\"} 0");
    assert_line(text, "dw_channel_calls_total{channel=\"KAKAO\",outcome=\"success\"} 1");
    assert_line(text, "dw_channel_calls_total{channel=\"RINGOBIZ\",outcome=\"CIRCUIT_OPEN\"} 2");
    assert_line(text, "dw_channel_calls_total{channel=\"RINGOBIZ\",outcome=\"success\"} 0");

    dw_metrics_gauge_set(m, DW_GAUGE_PARTITIONS_ASSIGNED, 0);
    free(text);
    text = render(m);
    assert_line(text, "dw_partitions_assigned 0");

    free(text);
    dw_metrics_destroy(m);
}

static void test_histogram_buckets_are_cumulative(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();

    dw_metrics_channel_call(m, DW_CHANNEL_NAVER, DW_EC_NONE, 3000);        /* 0.003 s */
    dw_metrics_channel_call(m, DW_CHANNEL_NAVER, DW_EC_NONE, 5000);        /* exactly 0.005 */
    dw_metrics_channel_call(m, DW_CHANNEL_NAVER, DW_EC_HTTP_5XX, 200000);  /* 0.2 s */
    dw_metrics_channel_call(m, DW_CHANNEL_NAVER, DW_EC_TIMEOUT, 40000000); /* 40 s: +Inf */
    dw_metrics_channel_call(m, DW_CHANNEL_NAVER, DW_EC_NONE, -5);          /* clamped to 0 */

    char *text = render(m);
    const char *expect[] = {
        "dw_channel_call_duration_seconds_bucket{channel=\"NAVER\",le=\"0.005\"} 3",
        "dw_channel_call_duration_seconds_bucket{channel=\"NAVER\",le=\"0.01\"} 3",
        "dw_channel_call_duration_seconds_bucket{channel=\"NAVER\",le=\"0.1\"} 3",
        "dw_channel_call_duration_seconds_bucket{channel=\"NAVER\",le=\"0.25\"} 4",
        "dw_channel_call_duration_seconds_bucket{channel=\"NAVER\",le=\"1\"} 4",
        "dw_channel_call_duration_seconds_bucket{channel=\"NAVER\",le=\"30\"} 4",
        "dw_channel_call_duration_seconds_bucket{channel=\"NAVER\",le=\"+Inf\"} 5",
        "dw_channel_call_duration_seconds_sum{channel=\"NAVER\"} 40.208000",
        "dw_channel_call_duration_seconds_count{channel=\"NAVER\"} 5",
        "dw_channel_call_duration_seconds_count{channel=\"KAKAO\"} 0",
        "dw_channel_call_duration_seconds_sum{channel=\"KAKAO\"} 0.000000",
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(expect); i++)
        assert_line(text, expect[i]);

    /* Buckets come in increasing order, each count at least the previous. */
    const char *p = strstr(text, "dw_channel_call_duration_seconds_bucket{channel=\"NAVER\"");
    assert_non_null(p);
    const char *les[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                         "1",     "2.5",  "5",     "10",   "30",  "+Inf"};
    long prev = -1;
    for (size_t i = 0; i < DW_ARRAY_LEN(les); i++) {
        char head[128];
        dw_snprintf(head, sizeof(head),
                    "dw_channel_call_duration_seconds_bucket{channel=\"NAVER\",le=\"%s\"} ",
                    les[i]);
        assert_memory_equal(p, head, strlen(head));
        char *end;
        long v = strtol(p + strlen(head), &end, 10);
        assert_true(*end == '\n');
        assert_true(v >= prev);
        prev = v;
        p = end + 1;
    }

    free(text);
    dw_metrics_destroy(m);
}

#define THREADS 4
#define ROUNDS  50000

static void *hammer(void *arg)
{
    struct dw_metrics *m = arg;
    for (int i = 0; i < ROUNDS; i++) {
        dw_metrics_count(m, DW_COUNTER_REQUESTS_CONSUMED, 1);
        dw_metrics_gauge_add(m, DW_GAUGE_CALLS_IN_FLIGHT, 1);
        dw_metrics_channel_call(m, DW_CHANNEL_GINITV, DW_EC_NONE, 2000);
        dw_metrics_gauge_add(m, DW_GAUGE_CALLS_IN_FLIGHT, -1);
        dw_metrics_gauge_add(m, DW_GAUGE_REQUESTS_IN_FLIGHT, 1);
        dw_metrics_dlq(m, DW_DLQ_INVALID_FIELD);
    }
    return NULL;
}

static void test_concurrent_updates_sum_exactly(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, hammer, m), 0);
    /* Rendering while others write must be safe. */
    char *during = render(m);
    free(during);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);

    char *text = render(m);
    char line[256];
    const int total = THREADS * ROUNDS;
    dw_snprintf(line, sizeof(line), "dw_requests_consumed_total %d", total);
    assert_line(text, line);
    dw_snprintf(line, sizeof(line), "dw_requests_in_flight %d", total);
    assert_line(text, line);
    assert_line(text, "dw_channel_calls_in_flight 0");
    dw_snprintf(line, sizeof(line),
                "dw_channel_calls_total{channel=\"GINITV\",outcome=\"success\"} %d", total);
    assert_line(text, line);
    dw_snprintf(line, sizeof(line), "dw_dlq_total{code=\"INVALID_FIELD\"} %d", total);
    assert_line(text, line);
    dw_snprintf(line, sizeof(line),
                "dw_channel_call_duration_seconds_bucket{channel=\"GINITV\",le=\"0.005\"} %d",
                total);
    assert_line(text, line);
    dw_snprintf(line, sizeof(line), "dw_channel_call_duration_seconds_count{channel=\"GINITV\"} %d",
                total);
    assert_line(text, line);
    /* 200,000 calls of 2 ms each: 400 s. */
    assert_line(text, "dw_channel_call_duration_seconds_sum{channel=\"GINITV\"} 400.000000");

    free(text);
    dw_metrics_destroy(m);
}

static void test_render_respects_the_buffer_cap(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();
    struct dw_buf buf;
    dw_buf_init(&buf, 64);
    assert_int_equal(dw_metrics_render(m, &buf), DW_ERR_NOMEM);
    dw_buf_cleanup(&buf);
    dw_metrics_destroy(m);
    dw_metrics_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_has_every_series_at_zero),
        cmocka_unit_test(test_counters_and_gauges),
        cmocka_unit_test(test_histogram_buckets_are_cumulative),
        cmocka_unit_test(test_concurrent_updates_sum_exactly),
        cmocka_unit_test(test_render_respects_the_buffer_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
