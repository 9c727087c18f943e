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

#include "dw/breaker.h"
#include "dw/channel_id.h"
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
        const char *name = dw_channel_name((enum dw_channel_id)ch);
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

static void test_request_latency_histogram(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();
    char *text = render(m);
    assert_line(text, "# TYPE dw_request_latency_seconds histogram");
    assert_line(text, "dw_request_latency_seconds_bucket{le=\"+Inf\"} 0");
    assert_line(text, "dw_request_latency_seconds_count 0");
    free(text);

    dw_metrics_request_latency(m, 80000);    /* 0.08 s */
    dw_metrics_request_latency(m, 2000000);  /* 2 s */
    dw_metrics_request_latency(m, 90000000); /* 90 s: +Inf */
    dw_metrics_request_latency(m, -1000);    /* clock skew: 0 */
    dw_metrics_request_latency(NULL, 1);
    text = render(m);
    assert_line(text, "dw_request_latency_seconds_bucket{le=\"0.005\"} 1");
    assert_line(text, "dw_request_latency_seconds_bucket{le=\"0.1\"} 2");
    assert_line(text, "dw_request_latency_seconds_bucket{le=\"2.5\"} 3");
    assert_line(text, "dw_request_latency_seconds_bucket{le=\"30\"} 3");
    assert_line(text, "dw_request_latency_seconds_bucket{le=\"+Inf\"} 4");
    assert_line(text, "dw_request_latency_seconds_sum 92.080000");
    assert_line(text, "dw_request_latency_seconds_count 4");
    free(text);
    dw_metrics_destroy(m);
}

static void test_partition_lag_series(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();
    char *text = render(m);
    /* Announced, but no series before a partition is assigned. */
    assert_line(text, "# TYPE dw_consumer_lag gauge");
    assert_int_equal(count_lines_starting(text, "dw_consumer_lag{"), 0);
    free(text);

    dw_metrics_partition_lag(m, 0, 12);
    dw_metrics_partition_lag(m, 5, 0);
    dw_metrics_partition_lag(m, 3, 7);
    dw_metrics_partition_lag(m, 3, 9);                         /* replaces */
    dw_metrics_partition_lag(m, -1, 4);                        /* ignored */
    dw_metrics_partition_lag(m, DW_METRICS_MAX_PARTITIONS, 4); /* ignored */
    dw_metrics_partition_lag(NULL, 1, 1);
    text = render(m);
    assert_line(text, "dw_consumer_lag{partition=\"0\"} 12");
    assert_line(text, "dw_consumer_lag{partition=\"3\"} 9");
    assert_line(text, "dw_consumer_lag{partition=\"5\"} 0");
    assert_int_equal(count_lines_starting(text, "dw_consumer_lag{"), 3);
    /* In partition order. */
    assert_true(strstr(text, "partition=\"0\"") < strstr(text, "partition=\"3\""));
    free(text);

    dw_metrics_partition_lag(m, 0, -1); /* no longer assigned */
    text = render(m);
    assert_int_equal(count_lines_starting(text, "dw_consumer_lag{"), 2);
    free(text);

    dw_metrics_partition_lag_clear(m);
    dw_metrics_partition_lag_clear(NULL);
    text = render(m);
    assert_int_equal(count_lines_starting(text, "dw_consumer_lag{"), 0);
    free(text);
    dw_metrics_destroy(m);
}

/* The backlog counts from the next offset handed out, or, before any, from
 * where hand-out starts; records handed out and not committed are not in
 * it (that is the lag). */
static void test_backlog_series(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();
    char *text = render(m);
    assert_line(text, "# TYPE dw_consumer_backlog gauge");
    assert_int_equal(count_lines_starting(text, "dw_consumer_backlog{"), 0);
    free(text);

    /* Offsets known before the assignment are not ours: no series. */
    dw_metrics_backlog_offsets(m, 1, 10, 50);
    assert_int_equal(dw_metrics_backlog(m, 1), -1);

    dw_metrics_backlog_assign(m, 1);
    dw_metrics_backlog_assign(m, 2);
    assert_int_equal(dw_metrics_backlog(m, 1), -1); /* assignment starts unknown */
    dw_metrics_backlog_offsets(m, 1, 10, 50);
    assert_int_equal(dw_metrics_backlog(m, 1), 40); /* nothing handed out: end - start */
    dw_metrics_backlog_handed_out(m, 1, 31);
    assert_int_equal(dw_metrics_backlog(m, 1), 19); /* end - next handed out */
    dw_metrics_backlog_handed_out(m, 1, 55);
    assert_int_equal(dw_metrics_backlog(m, 1), 0); /* past a stale end: nothing waits */
    dw_metrics_backlog_handed_out(m, 2, 7);
    assert_int_equal(dw_metrics_backlog(m, 2), -1); /* end not known yet */
    dw_metrics_backlog_offsets(m, 2, 0, 9);
    assert_int_equal(dw_metrics_backlog(m, 2), 2);
    dw_metrics_backlog_assign(m, -1); /* ignored */
    dw_metrics_backlog_offsets(m, DW_METRICS_MAX_PARTITIONS, 0, 1);
    assert_int_equal(dw_metrics_backlog(m, DW_METRICS_MAX_PARTITIONS), -1);
    text = render(m);
    assert_line(text, "dw_consumer_backlog{partition=\"1\"} 0");
    assert_line(text, "dw_consumer_backlog{partition=\"2\"} 2");
    assert_int_equal(count_lines_starting(text, "dw_consumer_backlog{"), 2);
    free(text);

    /* Assigned again: the old figures are forgotten. */
    dw_metrics_backlog_assign(m, 2);
    assert_int_equal(dw_metrics_backlog(m, 2), -1);
    dw_metrics_backlog_clear(m);
    dw_metrics_backlog_clear(NULL);
    text = render(m);
    assert_int_equal(count_lines_starting(text, "dw_consumer_backlog{"), 0);
    free(text);
    dw_metrics_destroy(m);
}

/* The value of the unlabelled sample name in text; fails when absent. */
static double sample(const char *text, const char *name)
{
    char head[128];
    dw_snprintf(head, sizeof(head), "\n%s ", name);
    const char *p = strstr(text, head);
    if (!p)
        fail_msg("no sample %s", name);
    return strtod(p + strlen(head), NULL);
}

static void test_process_metrics_from_proc(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();
    /* Burn a little CPU and touch some memory so both are clearly above 0. */
    size_t size = 8 * 1024 * 1024;
    volatile char *mem = malloc(size);
    for (size_t i = 0; i < size; i += 4096)
        mem[i] = (char)i;
    char *text = render(m);
    assert_line(text, "# TYPE process_cpu_seconds_total counter");
    assert_line(text, "# TYPE process_resident_memory_bytes gauge");
    assert_true(sample(text, "process_resident_memory_bytes") > 8.0 * 1024 * 1024);
    assert_true(sample(text, "process_virtual_memory_bytes") >=
                sample(text, "process_resident_memory_bytes"));
    assert_true(sample(text, "process_cpu_seconds_total") >= 0.0);
    assert_true(sample(text, "process_open_fds") >= 3.0); /* stdin, stdout, stderr */
    assert_true(sample(text, "process_max_fds") >= sample(text, "process_open_fds"));
    /* Started after 2020-01-01 and not in the future. */
    double start = sample(text, "process_start_time_seconds");
    assert_true(start > 1577836800.0);
    assert_true(start <= (double)dw_wall_ms() / 1000.0 + 1.0);
    assert_int_equal(count_lines_starting(text, "# HELP "), count_lines_starting(text, "# TYPE "));
    free(text);
    free((void *)mem);
    dw_metrics_destroy(m);
}

/* The resilience metrics under Resilience4j's names: the breaker's state
 * one-hot plus dw_breaker_state, float rates (-1 below the minimum),
 * the transition and call counters, retry kinds, the bulkhead gauges. */
static void test_resilience_metrics(void **state)
{
    (void)state;
    struct dw_metrics *m = dw_metrics_create();
    struct dw_breaker_snapshot snap = {
        .state = DW_BREAKER_OPEN,
        .failure_rate = 62.5,
        .slow_call_rate = -1,
        .calls = 8,
        .failed_calls = 5,
        .slow_calls = 3,
        .slow_failed_calls = 1,
    };
    dw_metrics_breaker(m, DW_CHANNEL_NAVER, &snap);
    dw_metrics_breaker_transition(m, DW_CHANNEL_NAVER, DW_BREAKER_CLOSED, DW_BREAKER_OPEN);
    dw_metrics_breaker_transition(m, DW_CHANNEL_NAVER, DW_BREAKER_CLOSED, DW_BREAKER_DISABLED);
    dw_metrics_breaker_call(m, DW_CHANNEL_NAVER, DW_BREAKER_FAILURE, 1500000);
    dw_metrics_breaker_not_permitted(m, DW_CHANNEL_NAVER);
    dw_metrics_retry_call(m, DW_CHANNEL_KAKAO, true, true);
    dw_metrics_retry_call(m, DW_CHANNEL_KAKAO, false, false);
    dw_metrics_retry_attempt(m, DW_CHANNEL_KAKAO, true);
    dw_metrics_retry_budget(m, DW_CHANNEL_KAKAO, 49.9, true);
    dw_metrics_bulkhead_init(m, DW_CHANNEL_KAKAO, 10);
    dw_metrics_bulkhead_change(m, DW_CHANNEL_KAKAO, 3, 2);
    dw_metrics_bulkhead_rejected(m, DW_CHANNEL_KAKAO);
    dw_metrics_breaker(NULL, DW_CHANNEL_KAKAO, &snap); /* no-ops */
    dw_metrics_bulkhead_rejected(m, DW_CHANNEL_COUNT);

    char *text = render(m);
    assert_line(text, "resilience4j_circuitbreaker_state{name=\"NAVER\",state=\"open\"} 1");
    assert_line(text, "resilience4j_circuitbreaker_state{name=\"NAVER\",state=\"closed\"} 0");
    assert_line(text, "dw_breaker_state{channel=\"NAVER\"} 2");
    assert_line(text, "# TYPE resilience4j_circuitbreaker_failure_rate gauge");
    assert_line(text, "resilience4j_circuitbreaker_failure_rate{name=\"NAVER\"} 62.5");
    assert_line(text, "resilience4j_circuitbreaker_slow_call_rate{name=\"NAVER\"} -1");
    assert_line(text, "resilience4j_circuitbreaker_failure_rate{name=\"KAKAO\"} 0");
    assert_line(text,
                "resilience4j_circuitbreaker_buffered_calls{name=\"NAVER\",kind=\"successful\"} 3");
    assert_line(text,
                "resilience4j_circuitbreaker_buffered_calls{name=\"NAVER\",kind=\"failed\"} 5");
    assert_line(text, "resilience4j_circuitbreaker_slow_calls{name=\"NAVER\",kind=\"failed\"} 1");
    assert_line(text, "resilience4j_circuitbreaker_transitions_total{name=\"NAVER\",kind=\"closed_"
                      "to_open\"} 1");
    assert_line(text, "resilience4j_circuitbreaker_calls_seconds_bucket{name=\"NAVER\",kind="
                      "\"failed\",le=\"2.5\"} 1");
    assert_line(text,
                "resilience4j_circuitbreaker_calls_seconds_sum{name=\"NAVER\",kind=\"failed\"} "
                "1.500000");
    assert_line(text, "resilience4j_circuitbreaker_not_permitted_calls_total{name=\"NAVER\",kind="
                      "\"not_permitted\"} 1");
    assert_line(text,
                "resilience4j_retry_calls_total{name=\"KAKAO\",kind=\"successful_with_retry\"} 1");
    assert_line(text,
                "resilience4j_retry_calls_total{name=\"KAKAO\",kind=\"failed_without_retry\"} 1");
    assert_line(text, "resilience4j_retry_attempts_total{name=\"KAKAO\",kind=\"retry\"} 1");
    assert_line(text, "resilience4j_retry_budget_tokens{name=\"KAKAO\"} 49.9");
    assert_line(text, "resilience4j_retry_budget_rejected_calls_total{name=\"KAKAO\"} 1");
    assert_line(text, "resilience4j_bulkhead_max_allowed_concurrent_calls{name=\"KAKAO\"} 10");
    assert_line(text, "resilience4j_bulkhead_available_concurrent_calls{name=\"KAKAO\"} 7");
    assert_line(text, "resilience4j_bulkhead_queued_calls{name=\"KAKAO\"} 2");
    assert_line(text, "resilience4j_bulkhead_rejected_calls_total{name=\"KAKAO\"} 1");
    /* One series per channel and state, from the start. */
    assert_int_equal(count_lines_starting(text, "resilience4j_circuitbreaker_state{"),
                     DW_CHANNEL_COUNT * DW_BREAKER_STATE_COUNT);
    free(text);
    dw_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_has_every_series_at_zero),
        cmocka_unit_test(test_counters_and_gauges),
        cmocka_unit_test(test_histogram_buckets_are_cumulative),
        cmocka_unit_test(test_concurrent_updates_sum_exactly),
        cmocka_unit_test(test_render_respects_the_buffer_cap),
        cmocka_unit_test(test_request_latency_histogram),
        cmocka_unit_test(test_partition_lag_series),
        cmocka_unit_test(test_backlog_series),
        cmocka_unit_test(test_process_metrics_from_proc),
        cmocka_unit_test(test_resilience_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
