/*
 * The core pipeline end to end, against the real parts: the dev broker,
 * PostgreSQL and the channel simulator, with the worker as a separate
 * process. Requests go in on Kafka; completions, DLQ records, the status
 * endpoint, the simulator's counters, the database and the group's
 * committed offsets are checked.
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

#define N_REQUESTS      200
#define REQUEST_TOPIC   "distribution-requests"
#define COMPLETED_TOPIC "distribution-completed"
#define DLQ_TOPIC       "distribution-requests.dlq"

static struct itest_worker worker;
static rd_kafka_t *producer;
static struct itest_completions *completions;

static int start(void **state)
{
    (void)state;
    itest_sim("/_sim/reset", NULL);
    itest_worker_start(&worker, "pipeline", NULL);
    producer = itest_producer();
    completions = itest_completions_new(COMPLETED_TOPIC, "");
    return 0;
}

static int stop(void **state)
{
    (void)state;
    int rc = itest_worker_stop(&worker, SIGTERM, 20000);
    itest_completions_free(completions);
    rd_kafka_destroy(producer);
    if (rc != 0) {
        itest_worker_log_tail(&worker, 40);
        fprintf(stderr, "worker exit status %d after SIGTERM, expected 0\n", rc);
        return -1;
    }
    return 0;
}

static void event_id(char *buf, size_t len, const char *kind, int i)
{
    snprintf(buf, len, "%s-%s-%04d", kind, itest_run_id(), i);
}

/* Produces requests of all six channels for ids kind-0..n-1 and waits for
 * the broker's acknowledgements. */
static void send_requests(const char *kind, int n)
{
    for (int i = 0; i < n; i++) {
        char id[128];
        event_id(id, sizeof(id), kind, i);
        char *json = itest_request_json(id);
        itest_produce(producer, REQUEST_TOPIC, id, json, strlen(json));
        free(json);
    }
    itest_flush(producer);
}

/* Reads completions until every id of kind 0..n-1 has at least `times`
 * completions, or fails after 90 s. */
static void await_completions(const char *kind, int n, int times)
{
    char **ids = calloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++) {
        ids[i] = malloc(128);
        event_id(ids[i], 128, kind, i);
    }
    int enough = itest_completions_await(completions, ids, n, times, 90000);
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    if (enough < n) {
        itest_worker_log_tail(&worker, 30);
        fail_msg("%d of %d %s requests completed %d time(s) within 90 s", enough, n, kind, times);
    }
}

static struct json_object *completion(const char *id, int nth)
{
    struct json_object *doc = itest_completion(completions, id, nth);
    assert_non_null(doc);
    return doc;
}

static const char *str(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static int num(struct json_object *o, const char *key)
{
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, key, &v));
    return json_object_get_int(v);
}

static void check_all_succeeded(struct json_object *doc, int attempts)
{
    assert_string_equal(str(doc, "status"), "COMPLETED");
    assert_int_equal(num(doc, "totalChannels"), 6);
    assert_int_equal(num(doc, "successCount"), 6);
    assert_int_equal(num(doc, "failureCount"), 0);
    assert_non_null(str(doc, "completedAt"));
    struct json_object *chans;
    assert_true(json_object_object_get_ex(doc, "distributedChannels", &chans));
    assert_int_equal(json_object_array_length(chans), 6);
    for (size_t i = 0; i < 6; i++) {
        struct json_object *c = json_object_array_get_idx(chans, i);
        assert_string_equal(str(c, "status"), "SUCCESS");
        assert_int_equal(num(c, "attempts"), attempts);
        assert_non_null(str(c, "externalId"));
        assert_null(str(c, "errorCode"));
    }
}

/* 200 requests of all six channels: each completes once with six SUCCESS,
 * the status endpoint and the database agree, nothing is posted twice and
 * every offset is committed. */
static void requests_complete_on_all_six_channels(void **state)
{
    (void)state;
    struct json_object *before = itest_sim_stats();
    send_requests("pipe", N_REQUESTS);
    await_completions("pipe", N_REQUESTS, 1);

    for (int i = 0; i < N_REQUESTS; i++) {
        char id[128], url[256];
        event_id(id, sizeof(id), "pipe", i);
        check_all_succeeded(completion(id, 0), 1);

        snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/%s/status", worker.http_port,
                 id);
        long status;
        struct json_object *st = itest_http_json(url, &status);
        assert_int_equal(status, 200);
        assert_string_equal(str(st, "eventId"), id);
        assert_string_equal(str(st, "overallStatus"), "COMPLETED");
        assert_int_equal(num(st, "successCount"), 6);
        struct json_object *chans;
        assert_true(json_object_object_get_ex(st, "channels", &chans));
        assert_int_equal(json_object_array_length(chans), 6);
        for (size_t c = 0; c < 6; c++)
            assert_string_equal(str(json_object_array_get_idx(chans, c), "status"), "SUCCESS");
        json_object_put(st);
    }

    char like[128];
    snprintf(like, sizeof(like), "pipe-%s-%%", itest_run_id());
    assert_int_equal(
        itest_pg_scalar("SELECT count(*) FROM channel_status WHERE event_id LIKE $1 AND "
                        "status = 'SUCCESS' AND attempts = 1",
                        like),
        N_REQUESTS * 6);
    assert_int_equal(itest_pg_scalar("SELECT count(*) FROM distribution WHERE event_id LIKE $1 AND "
                                     "overall_status = 'COMPLETED' AND completed_at IS NOT NULL",
                                     like),
                     N_REQUESTS);

    struct json_object *after = itest_sim_stats();
    static const char *const names[] = {"URIDONGNETV", "GINITV", "RINGOBIZ", "NAVER", "KAKAO"};
    for (size_t c = 0; c < 5; c++) {
        char path[128];
        snprintf(path, sizeof(path), "channels.%s.posts", names[c]);
        printf("  %s posts: %lld\n", names[c],
               (long long)(itest_json_int(after, path) - itest_json_int(before, path)));
        assert_int_equal(itest_json_int(after, path) - itest_json_int(before, path), N_REQUESTS);
    }
    assert_int_equal(itest_json_int(after, "duplicatePosts"), 0);
    json_object_put(before);
    json_object_put(after);

    /* Every consumed offset is committed once its completion is acknowledged. */
    int64_t behind = -1;
    for (int i = 0; i < 50 && behind != 0; i++) {
        behind = itest_uncommitted("distribution-worker", REQUEST_TOPIC);
        if (behind)
            rd_kafka_poll(producer, 100);
    }
    printf("  requests: %d sent, %d completed, uncommitted offsets %lld\n", N_REQUESTS, N_REQUESTS,
           (long long)behind);
    assert_int_equal(behind, 0);
}

/* Re-sending completed requests re-drives nothing: no channel is called,
 * and each gets a second completion showing the stored figures. */
static void resending_completed_requests_posts_nothing(void **state)
{
    (void)state;
    struct json_object *before = itest_sim_stats();
    send_requests("pipe", N_REQUESTS);
    await_completions("pipe", N_REQUESTS, 2);
    for (int i = 0; i < N_REQUESTS; i++) {
        char id[128];
        event_id(id, sizeof(id), "pipe", i);
        check_all_succeeded(completion(id, 1), 1);
    }
    struct json_object *after = itest_sim_stats();
    printf("  simulator calls during re-send: %lld\n",
           (long long)(itest_json_int(after, "calls") - itest_json_int(before, "calls")));
    assert_int_equal(itest_json_int(after, "calls"), itest_json_int(before, "calls"));
    assert_int_equal(itest_json_int(after, "duplicatePosts"), 0);
    json_object_put(before);
    json_object_put(after);
}

static struct json_object *channel_entry(struct json_object *doc, const char *list,
                                         const char *name)
{
    struct json_object *chans;
    assert_true(json_object_object_get_ex(doc, list, &chans));
    for (size_t i = 0; i < json_object_array_length(chans); i++) {
        struct json_object *c = json_object_array_get_idx(chans, i);
        if (strcmp(str(c, "channel"), name) == 0)
            return c;
    }
    fail_msg("no %s in %s", name, list);
    return NULL;
}

/* A channel that refuses (HTTP 400, permanent) fails alone: the request
 * completes PARTIAL_FAILURE with the reason stored. Re-sending the request
 * after the channel recovers calls only that channel, and the request
 * becomes COMPLETED with the attempts of both drives counted. */
static void failed_channel_is_redriven_alone(void **state)
{
    (void)state;
    enum { N = 5 };
    itest_sim("/_sim/reset", NULL);
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"errorRate\":1,\"errorStatus\":400}");
    send_requests("partial", N);
    await_completions("partial", N, 1);
    for (int i = 0; i < N; i++) {
        char id[128], url[256];
        event_id(id, sizeof(id), "partial", i);
        struct json_object *doc = completion(id, 0);
        assert_string_equal(str(doc, "status"), "PARTIAL_FAILURE");
        assert_int_equal(num(doc, "successCount"), 5);
        assert_int_equal(num(doc, "failureCount"), 1);
        struct json_object *kakao = channel_entry(doc, "distributedChannels", "KAKAO");
        assert_string_equal(str(kakao, "status"), "FAILED");
        assert_string_equal(str(kakao, "errorCode"), "HTTP_4XX");
        assert_int_equal(num(kakao, "attempts"), 1);

        snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/%s/status", worker.http_port,
                 id);
        struct json_object *st = itest_http_json(url, NULL);
        assert_non_null(st);
        assert_string_equal(str(st, "overallStatus"), "PARTIAL_FAILURE");
        kakao = channel_entry(st, "channels", "KAKAO");
        assert_string_equal(str(kakao, "errorCode"), "HTTP_4XX");
        assert_non_null(str(kakao, "errorMessage"));
        json_object_put(st);
    }

    itest_sim("/_sim/reset", NULL);
    send_requests("partial", N);
    await_completions("partial", N, 2);
    for (int i = 0; i < N; i++) {
        char id[128];
        event_id(id, sizeof(id), "partial", i);
        struct json_object *doc = completion(id, 1);
        assert_string_equal(str(doc, "status"), "COMPLETED");
        assert_int_equal(num(channel_entry(doc, "distributedChannels", "KAKAO"), "attempts"), 2);
        assert_int_equal(num(channel_entry(doc, "distributedChannels", "NAVER"), "attempts"), 1);
    }
    struct json_object *stats = itest_sim_stats();
    printf("  re-drive: %lld call(s), %lld to KAKAO\n", (long long)itest_json_int(stats, "calls"),
           (long long)itest_json_int(stats, "channels.KAKAO.calls"));
    assert_int_equal(itest_json_int(stats, "calls"), N);
    assert_int_equal(itest_json_int(stats, "channels.KAKAO.calls"), N);
    json_object_put(stats);
}

/* The status of one channel on the status endpoint, or "" when unread. */
static void channel_status_of(const char *id, const char *channel, char *out, size_t len)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/%s/status", worker.http_port, id);
    struct json_object *st = itest_http_json(url, NULL);
    snprintf(out, len, "%s", st ? str(channel_entry(st, "channels", channel), "status") : "");
    json_object_put(st);
}

/* At low load, with nothing to batch with, a request costs three database
 * round trips: its begin, Instagram's container id (stored before the
 * publish step is sent), then its results and overall status together.
 * KAKAO answers 80 ms after the others, so the results come in two waves
 * (stored one wave at a time, that was four round trips plus the
 * container). */
static void one_request_at_a_time_costs_two_round_trips(void **state)
{
    (void)state;
    enum { N = 10 };
    itest_sim("/_sim/reset", NULL);
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"latencyMs\":80}");
    double before = itest_metric(&worker, "dw_db_round_trips_total");
    for (int i = 0; i < N; i++) {
        char id[128];
        event_id(id, sizeof(id), "lowload", i);
        char *json = itest_request_json(id);
        itest_produce(producer, REQUEST_TOPIC, id, json, strlen(json));
        free(json);
        itest_flush(producer);
        char *ids[] = {id};
        assert_int_equal(itest_completions_await(completions, ids, 1, 1, 30000), 1);
        assert_string_equal(str(completion(id, 0), "status"), "COMPLETED");
    }
    double used = itest_metric(&worker, "dw_db_round_trips_total") - before;
    printf("  %d requests one at a time: %.0f round trips\n", N, used);
    /* Three each, and room for one idle ping. */
    assert_true(used <= 3 * N + 1);
    itest_sim("/_sim/reset", NULL);
}

/* Held results are stored once result_hold_ms (1 s here) has passed, even
 * while another channel of the request is still running: the status
 * endpoint shows progress. */
static void held_results_are_stored_after_the_hold(void **state)
{
    (void)state;
    itest_sim("/_sim/reset", NULL);
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"latencyMs\":2500}");
    char id[128];
    event_id(id, sizeof(id), "hold", 0);
    char *json = itest_request_json(id);
    itest_produce(producer, REQUEST_TOPIC, id, json, strlen(json));
    free(json);
    itest_flush(producer);

    char naver[32] = "", kakao[32] = "";
    for (int waited = 0; waited < 2000 && strcmp(naver, "SUCCESS") != 0; waited += 50) {
        usleep(50 * 1000);
        channel_status_of(id, "NAVER", naver, sizeof(naver));
    }
    channel_status_of(id, "KAKAO", kakao, sizeof(kakao));
    printf("  before KAKAO answers: NAVER %s, KAKAO %s\n", naver, kakao);
    assert_string_equal(naver, "SUCCESS");
    assert_string_not_equal(kakao, "SUCCESS");

    char *ids[] = {id};
    assert_int_equal(itest_completions_await(completions, ids, 1, 1, 30000), 1);
    assert_string_equal(str(completion(id, 0), "status"), "COMPLETED");
    itest_sim("/_sim/reset", NULL);
}

struct broken {
    const char *name;
    const char *code;
    char *value; /* NULL: a null value */
    size_t len;
};

/* Broken messages between good ones: each broken one reaches the DLQ with
 * its original bytes, key and the CONTRACT headers; each good one
 * completes; the partition keeps moving. */
static void broken_messages_go_to_the_dlq(void **state)
{
    (void)state;
    struct broken cases[] = {
        {"not-json", "INVALID_JSON", strdup("{not json"), 0},
        {"null-value", "INVALID_JSON", NULL, 0},
        {"bad-utf8", "INVALID_JSON", strdup("{\"eventId\":\"x\",\"title\":\"\xC3\x28\"}"), 0},
        {"too-large", "TOO_LARGE", NULL, 0},
        {"bad-id", "INVALID_EVENT_ID",
         strdup("{\"eventId\":\"has space\",\"title\":\"t\",\"channels\":[\"KAKAO\"]}"), 0},
        {"no-title", "INVALID_FIELD", strdup("{\"eventId\":\"e1\",\"channels\":[\"KAKAO\"]}"), 0},
        {"no-phone", "INVALID_FIELD",
         strdup("{\"eventId\":\"e2\",\"title\":\"t\",\"channels\":[\"RINGOBIZ\"]}"), 0},
        {"bad-channel", "INVALID_CHANNELS",
         strdup("{\"eventId\":\"e3\",\"title\":\"t\",\"channels\":[\"FACEBOOK\"]}"), 0},
        {"no-channels", "INVALID_CHANNELS",
         strdup("{\"eventId\":\"e4\",\"title\":\"t\",\"channels\":[]}"), 0},
    };
    size_t ncases = sizeof(cases) / sizeof(cases[0]);
    for (size_t i = 0; i < ncases; i++) {
        if (strcmp(cases[i].name, "too-large") == 0) {
            cases[i].len = 1024 * 1024 + 1;
            cases[i].value = malloc(cases[i].len);
            memset(cases[i].value, 'x', cases[i].len);
        } else if (cases[i].value) {
            cases[i].len = strlen(cases[i].value);
        }
    }

    for (size_t i = 0; i < ncases; i++) {
        char key[128], id[128];
        snprintf(key, sizeof(key), "dlq-%s-%s", itest_run_id(), cases[i].name);
        itest_produce(producer, REQUEST_TOPIC, key, cases[i].value, cases[i].len);
        event_id(id, sizeof(id), "mixed", (int)i);
        char *json = itest_request_json(id);
        itest_produce(producer, REQUEST_TOPIC, id, json, strlen(json));
        free(json);
    }
    itest_flush(producer);
    await_completions("mixed", (int)ncases, 1);
    for (size_t i = 0; i < ncases; i++) {
        char id[128];
        event_id(id, sizeof(id), "mixed", (int)i);
        check_all_succeeded(completion(id, 0), 1);
    }

    rd_kafka_t *dlq = itest_reader(DLQ_TOPIC);
    size_t found = 0;
    for (int waited = 0; found < ncases && waited < 30000;) {
        rd_kafka_message_t *m = itest_read(dlq, 200);
        if (!m) {
            waited += 200;
            continue;
        }
        for (size_t i = 0; i < ncases; i++) {
            char key[128];
            snprintf(key, sizeof(key), "dlq-%s-%s", itest_run_id(), cases[i].name);
            if (m->key_len != strlen(key) || memcmp(m->key, key, m->key_len) != 0)
                continue;
            char *code = itest_header(m, "x-error-code");
            char *msg = itest_header(m, "x-error-message");
            char *topic = itest_header(m, "x-original-topic");
            char *part = itest_header(m, "x-original-partition");
            char *off = itest_header(m, "x-original-offset");
            printf("  DLQ %-12s %-17s %s\n", cases[i].name, code ? code : "(none)", msg ? msg : "");
            assert_non_null(code);
            assert_string_equal(code, cases[i].code);
            assert_non_null(msg);
            assert_true(strlen(msg) > 0);
            assert_string_equal(topic, REQUEST_TOPIC);
            assert_non_null(part);
            assert_non_null(off);
            /* The original bytes, unchanged (a null value stays null). */
            assert_int_equal(m->len, cases[i].len);
            if (cases[i].value)
                assert_memory_equal(m->payload, cases[i].value, m->len);
            else
                assert_null(m->payload);
            free(code);
            free(msg);
            free(topic);
            free(part);
            free(off);
            found++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy(dlq);
    printf("  broken: %zu sent, %zu on the DLQ; good: %zu sent, %zu completed\n", ncases, found,
           ncases, ncases);
    assert_int_equal(found, ncases);
    for (size_t i = 0; i < ncases; i++)
        free(cases[i].value);

    int64_t behind = -1;
    for (int i = 0; i < 50 && behind != 0; i++) {
        behind = itest_uncommitted("distribution-worker", REQUEST_TOPIC);
        if (behind)
            rd_kafka_poll(producer, 100);
    }
    assert_int_equal(behind, 0);
}

/* The status endpoint's error answers, against the live database. */
static void status_endpoint_errors(void **state)
{
    (void)state;
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/never-seen-%s/status",
             worker.http_port, itest_run_id());
    char *body = NULL;
    assert_int_equal(itest_http("GET", url, NULL, &body), 404);
    assert_non_null(strstr(body, "NOT_FOUND"));
    free(body);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/bad%%20id/status",
             worker.http_port);
    assert_int_equal(itest_http("GET", url, NULL, NULL), 400);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", worker.http_port);
    assert_int_equal(itest_http("GET", url, NULL, &body), 200);
    assert_non_null(strstr(body, "dw_requests_consumed_total"));
    assert_non_null(strstr(body, "dw_dlq_total{code=\"TOO_LARGE\"} 1"));
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(requests_complete_on_all_six_channels),
        cmocka_unit_test(resending_completed_requests_posts_nothing),
        cmocka_unit_test(broken_messages_go_to_the_dlq),
        cmocka_unit_test(failed_channel_is_redriven_alone),
        cmocka_unit_test(one_request_at_a_time_costs_two_round_trips),
        cmocka_unit_test(held_results_are_stored_after_the_hold),
        cmocka_unit_test(status_endpoint_errors),
    };
    return cmocka_run_group_tests(tests, start, stop);
}
