/*
 * The backlog metric (dw_consumer_backlog) against records nobody has
 * taken: with PostgreSQL stopped the worker pauses every partition and
 * takes nothing, so every request produced meanwhile is backlog, and the
 * metric must show exactly that many (the count the test produced, and
 * the group's uncommitted records read from the broker). librdkafka's
 * statistics stop refreshing a paused partition's high watermark, so a
 * backlog built on them would stay at 0 here. Once PostgreSQL is back the
 * requests complete and the backlog returns to 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <signal.h>

#include "itest.h"

#define REQUEST_TOPIC   "distribution-requests"
#define COMPLETED_TOPIC "distribution-completed"
#define GROUP           "distribution-worker"
#define PARTITIONS      6
#define N               60

/* Kept for the teardown, which runs even when an assertion fails: the
 * worker must not outlive the test, nor PostgreSQL stay stopped for the
 * tests after it. */
static struct itest_worker worker;
static int pg_stopped;

static int teardown(void **state)
{
    (void)state;
    if (worker.pid > 0)
        itest_worker_stop(&worker, SIGTERM, 20000);
    if (pg_stopped) {
        itest_parts("pg-start");
        pg_stopped = 0;
    }
    return 0;
}

/* Series of dw_consumer_backlog on the worker's /metrics (-1: no answer). */
static int backlog_series(const struct itest_worker *w)
{
    char url[128], *body = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", w->http_port);
    if (itest_http("GET", url, NULL, &body) != 200) {
        free(body);
        return -1;
    }
    int n = 0;
    for (const char *p = body; (p = strstr(p, "\ndw_consumer_backlog{")); p++)
        n++;
    free(body);
    return n;
}

/* Polls the metric name (summed) until it equals want or timeout_ms
 * passes; returns the last value seen. */
static double await_metric(const struct itest_worker *w, const char *name, double want,
                           int timeout_ms)
{
    double v = -1;
    for (int waited = 0; waited <= timeout_ms; waited += 200) {
        v = itest_metric(w, name);
        if (v == want)
            break;
        usleep(200 * 1000);
    }
    return v;
}

static void backlog_counts_untaken_records(void **state)
{
    (void)state;
    char prefix[96];
    snprintf(prefix, sizeof(prefix), "backlog-%s-", itest_run_id());
    struct itest_completions *completions = itest_completions_new(COMPLETED_TOPIC, prefix);
    rd_kafka_t *producer = itest_producer();
    struct itest_worker *wp = &worker;
    itest_worker_start(wp, "backlog-metric", NULL);

    /* Caught up: every partition assigned, each with a backlog series. */
    assert_int_equal(await_metric(wp, "dw_partitions_assigned", PARTITIONS, 60000), PARTITIONS);
    int series = 0;
    for (int i = 0; i < 150 && (series = backlog_series(wp)) != PARTITIONS; i++)
        usleep(200 * 1000);
    assert_int_equal(series, PARTITIONS);
    assert_int_equal(await_metric(wp, "dw_consumer_backlog", 0, 60000), 0);

    /* PostgreSQL away: every partition paused, nothing taken. */
    itest_parts("pg-stop");
    pg_stopped = 1;
    assert_int_equal(await_metric(wp, "dw_partitions_paused", PARTITIONS, 30000), PARTITIONS);
    double consumed = itest_metric(wp, "dw_requests_consumed_total");

    char *ids[N];
    for (int i = 0; i < N; i++) {
        char id[128];
        snprintf(id, sizeof(id), "%s%03d", prefix, i);
        ids[i] = strdup(id);
        char *json = itest_request_json(id);
        itest_produce(producer, REQUEST_TOPIC, id, json, strlen(json));
        free(json);
    }
    double backlog = await_metric(wp, "dw_consumer_backlog", N, 30000);
    int64_t uncommitted = itest_uncommitted(GROUP, REQUEST_TOPIC);
    double taken = itest_metric(wp, "dw_requests_consumed_total") - consumed;
    printf("  PostgreSQL down, %d produced: backlog %.0f, uncommitted %lld, taken %.0f\n", N,
           backlog, (long long)uncommitted, taken);
    assert_int_equal(taken, 0);
    assert_int_equal(uncommitted, N);
    assert_int_equal(backlog, N);
    assert_int_equal(backlog_series(wp), PARTITIONS);

    /* Back: the requests are taken and finish; nothing waits any more. */
    itest_parts("pg-start");
    pg_stopped = 0;
    assert_int_equal(itest_completions_await(completions, ids, N, 1, 90000), N);
    assert_int_equal(await_metric(wp, "dw_consumer_backlog", 0, 30000), 0);
    assert_int_equal(itest_worker_stop(wp, SIGTERM, 20000), 0);

    for (int i = 0; i < N; i++)
        free(ids[i]);
    rd_kafka_destroy(producer);
    itest_completions_free(completions);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(backlog_counts_untaken_records, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
