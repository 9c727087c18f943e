/*
 * The transport against a real TLS server: nginx (started by the fixture,
 * parts.sh, with a CA made for this run) in front of the channel
 * simulator. The pipeline runs over HTTPS with HTTP/2, over HTTPS with
 * HTTP/1.1 only, and over h2c; a channel whose server the worker cannot
 * trust (no ca_file) or whose certificate does not name the host called
 * makes no call and ends FAILED with the reason, while the other channels
 * of the same worker, on the same server, succeed.
 *
 * Which protocol carried the calls, and over how many connections, comes
 * from nginx's access log (port, protocol, connection number per call);
 * whether a call reached the API comes from the simulator's counters: both
 * independent of the worker's own word.
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

static const char *const channels[] = {"URIDONGNETV", "GINITV", "RINGOBIZ",
                                       "INSTAGRAM",   "NAVER",  "KAKAO"};

static rd_kafka_t *producer;
static struct itest_completions *completions;
/* The worker of the running case; stopped by its teardown even when the
 * case fails, so it cannot take the next case's requests. */
static struct itest_worker worker;

static int stop_left_worker(void **state)
{
    (void)state;
    if (worker.pid > 0)
        itest_worker_stop(&worker, SIGKILL, 5000);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    producer = itest_producer();
    completions = itest_completions_new(COMPLETED_TOPIC, "");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    itest_completions_free(completions);
    rd_kafka_destroy(producer);
    return 0;
}

/* ---- the environment of one worker ---- */

struct env {
    char vars[24][512];
    const char *list[25];
    int n;
};

static void env_add(struct env *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->vars[e->n], sizeof(e->vars[0]), fmt, ap);
    va_end(ap);
    e->list[e->n] = e->vars[e->n];
    e->n++;
    e->list[e->n] = NULL;
}

/* Every channel at base_url, verified against the run's CA when with_ca. */
static void env_all(struct env *e, const char *base_url, bool with_ca)
{
    for (int i = 0; i < 6; i++) {
        env_add(e, "DIST_CHANNEL_%s_URL=%s", channels[i], base_url);
        if (with_ca)
            env_add(e, "DIST_CHANNEL_%s_CA_FILE=%s", channels[i], itest_env("TLS_CA_FILE"));
    }
}

/* ---- nginx's access log ---- */

struct calls_seen {
    int total;     /* lines for the port */
    int http2;     /* of them, HTTP/2.0 */
    int http11;    /* of them, HTTP/1.1 */
    int ok;        /* of them, status 2xx */
    int conns;     /* distinct connections */
    long conn[64]; /* their numbers (the first 64) */
};

static void event_id(char *buf, size_t len, const char *kind, int i)
{
    snprintf(buf, len, "tls-%s-%s-%04d", kind, itest_run_id(), i);
}

/* The calls nginx logged on port for the requests of kind (their
 * Idempotency-Keys start with the kind's eventId prefix). */
static void read_calls(const char *kind, const char *port, struct calls_seen *seen)
{
    char prefix[128];
    event_id(prefix, sizeof(prefix), kind, 0);
    prefix[strlen(prefix) - 4] = '\0'; /* without the number */
    memset(seen, 0, sizeof(*seen));
    FILE *f = fopen(itest_env("TLS_ACCESS_LOG"), "r");
    if (!f)
        fail_msg("no nginx access log at %s", itest_env("TLS_ACCESS_LOG"));
    char line[512], p[32], proto[32], key[256];
    long conn, reqs;
    int status;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%31s %31s %ld %ld %d %255s", p, proto, &conn, &reqs, &status, key) != 6 ||
            strcmp(p, port) != 0 || strncmp(key, prefix, strlen(prefix)) != 0)
            continue;
        seen->total++;
        seen->http2 += strcmp(proto, "HTTP/2.0") == 0;
        seen->http11 += strcmp(proto, "HTTP/1.1") == 0;
        seen->ok += status >= 200 && status < 300;
        bool known = false;
        for (int i = 0; i < seen->conns && i < 64; i++)
            known = known || seen->conn[i] == conn;
        if (!known) {
            if (seen->conns < 64)
                seen->conn[seen->conns] = conn;
            seen->conns++;
        }
    }
    fclose(f);
}

/* nginx writes its log in buffers, flushed every second: waits until at
 * least `want` calls on port are there (or 10 s). */
static void await_calls(const char *kind, const char *port, int want, struct calls_seen *seen)
{
    for (int i = 0; i < 100; i++) {
        read_calls(kind, port, seen);
        if (seen->total >= want)
            return;
        usleep(100 * 1000);
    }
}

/* ---- requests and their completions ---- */

static void send_and_await(struct itest_worker *w, const char *kind, int n)
{
    char **ids = calloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++) {
        ids[i] = malloc(128);
        event_id(ids[i], 128, kind, i);
        char *json = itest_request_json(ids[i]);
        itest_produce(producer, REQUEST_TOPIC, ids[i], json, strlen(json));
        free(json);
    }
    itest_flush(producer);
    int enough = itest_completions_await(completions, ids, n, 1, 90000);
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    if (enough < n) {
        itest_worker_log_tail(w, 30);
        fail_msg("%d of %d %s requests completed within 90 s", enough, n, kind);
    }
}

static const char *str(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

/* The completion's entry for channel. */
static struct json_object *channel_of(struct json_object *doc, const char *channel)
{
    struct json_object *chans;
    assert_true(json_object_object_get_ex(doc, "distributedChannels", &chans));
    for (size_t i = 0; i < json_object_array_length(chans); i++) {
        struct json_object *c = json_object_array_get_idx(chans, i);
        if (strcmp(str(c, "channel"), channel) == 0)
            return c;
    }
    fail_msg("no %s in %s", channel, json_object_to_json_string(doc));
    return NULL;
}

static void check_all_succeeded(const char *kind, int n)
{
    for (int i = 0; i < n; i++) {
        char id[128];
        event_id(id, sizeof(id), kind, i);
        struct json_object *doc = itest_completion(completions, id, 0);
        assert_non_null(doc);
        if (strcmp(str(doc, "status"), "COMPLETED") != 0)
            fail_msg("%s: %s", id, json_object_to_json_string(doc));
    }
}

static void stop_worker(struct itest_worker *w)
{
    int rc = itest_worker_stop(w, SIGTERM, 20000);
    if (rc != 0) {
        itest_worker_log_tail(w, 40);
        fail_msg("worker exit status %d after SIGTERM, expected 0", rc);
    }
}

/* Runs n requests of all six channels through a worker with env, checks
 * that all complete, and returns what nginx saw on port. Every call of a
 * request is one line (Instagram: two), so 7 per request. */
static void run_all_succeed(const char *kind, int n, struct env *e, const char *port,
                            struct calls_seen *seen)
{
    itest_worker_start(&worker, kind, e->list);
    send_and_await(&worker, kind, n);
    check_all_succeeded(kind, n);
    stop_worker(&worker);
    await_calls(kind, port, n * 7, seen);
    printf("  %s: %d calls on port %s: %d HTTP/2.0, %d HTTP/1.1, %d 2xx, over %d connection(s)\n",
           kind, seen->total, port, seen->http2, seen->http11, seen->ok, seen->conns);
}

/* ---- the cases ---- */

/* HTTPS where the server offers HTTP/2: every call is HTTP/2, verified
 * against the run's CA, and the calls share one multiplexed connection per
 * engine thread instead of one each (20 requests put about 60 calls in
 * flight at once on each of the 2 threads; over HTTP/1.1 the same burst
 * opens about 120 connections). Calls wait for the first connection's
 * ALPN answer (PIPEWAIT) rather than open their own. The burst stays under
 * the server's stream limit: past that, see https_http2_burst_capped. */
static void https_http2_multiplexed(void **state)
{
    (void)state;
    enum { N = 20 };
    struct env e = {0};
    char url[128];
    struct calls_seen seen;
    snprintf(url, sizeof(url), "https://localhost:%s", itest_env("TLS_H2_PORT"));
    env_all(&e, url, true);
    run_all_succeed("h2", N, &e, itest_env("TLS_H2_PORT"), &seen);
    assert_int_equal(seen.total, N * 7);
    assert_int_equal(seen.http2, N * 7);
    assert_int_equal(seen.ok, N * 7);
    /* Two engine threads, each its own connection, and one spare. */
    if (seen.conns > 3)
        fail_msg("%d connections for %d calls", seen.conns, seen.total);
}

/* A burst past the server's stream limit (nginx here allows 256 streams
 * per connection; every call is answered after 300 ms, so 120 requests
 * keep about 360 calls in flight per engine thread):
 * with worker.max_host_connections = 2 the calls wait for a free stream on
 * at most 2 connections per thread, where without a cap libcurl opens a
 * connection per call past the limit (docs/performance.md). */
static void https_http2_burst_capped(void **state)
{
    (void)state;
    enum { N = 120 };
    struct env e = {0};
    char url[128];
    struct calls_seen seen;
    snprintf(url, sizeof(url), "https://localhost:%s", itest_env("TLS_H2_PORT"));
    env_all(&e, url, true);
    env_add(&e, "DIST_WORKER_MAX_HOST_CONNECTIONS=2");
    itest_sim("/_sim/faults", "{\"channel\":\"*\",\"latencyMs\":300}");
    run_all_succeed("h2cap", N, &e, itest_env("TLS_H2_PORT"), &seen);
    itest_sim("/_sim/reset", NULL);
    assert_int_equal(seen.total, N * 7);
    assert_int_equal(seen.http2, N * 7);
    if (seen.conns > 2 * 2)
        fail_msg("%d connections for %d calls", seen.conns, seen.total);
}

/* HTTPS where the server offers only HTTP/1.1: the same pipeline, every
 * call HTTP/1.1. */
static void https_http1_only(void **state)
{
    (void)state;
    enum { N = 20 };
    struct env e = {0};
    char url[128];
    struct calls_seen seen;
    snprintf(url, sizeof(url), "https://localhost:%s", itest_env("TLS_H1_PORT"));
    env_all(&e, url, true);
    run_all_succeed("h1", N, &e, itest_env("TLS_H1_PORT"), &seen);
    assert_int_equal(seen.total, N * 7);
    assert_int_equal(seen.http11, N * 7);
    assert_int_equal(seen.ok, N * 7);
}

/* http_version = "h2c": HTTP/2 with prior knowledge over plain HTTP. On
 * libcurl 7.88, which fails the second request on an h2c connection, each
 * call has a connection of its own (src/transport.c), and they all work. */
static void h2c_prior_knowledge(void **state)
{
    (void)state;
    enum { N = 20 };
    struct env e = {0};
    char url[128];
    struct calls_seen seen;
    snprintf(url, sizeof(url), "http://127.0.0.1:%s", itest_env("H2C_PORT"));
    env_all(&e, url, false);
    for (int i = 0; i < 6; i++)
        env_add(&e, "DIST_CHANNEL_%s_HTTP_VERSION=h2c", channels[i]);
    run_all_succeed("h2c", N, &e, itest_env("H2C_PORT"), &seen);
    assert_int_equal(seen.total, N * 7);
    assert_int_equal(seen.http2, N * 7);
    assert_int_equal(seen.ok, N * 7);
}

/* One worker, one server. KAKAO has no ca_file, so the server's
 * certificate (from the run's CA) is checked against the system's store
 * and refused; NAVER calls 127.0.0.1, a name the certificate does not
 * carry. Neither channel's call reaches the API (the simulator counts
 * none, nginx logs no request), both end FAILED with the TLS reason, and
 * the four others succeed on the same server: a connection verified for
 * one channel is never lent to another that would not verify it. */
static void untrusted_and_wrong_host_fail(void **state)
{
    (void)state;
    enum { N = 5 };
    struct env e = {0};
    char good[128], wrong_host[128];
    const char *port = itest_env("TLS_H2_PORT");
    snprintf(good, sizeof(good), "https://localhost:%s", port);
    snprintf(wrong_host, sizeof(wrong_host), "https://127.0.0.1:%s", port);
    for (int i = 0; i < 6; i++) {
        bool naver = strcmp(channels[i], "NAVER") == 0;
        env_add(&e, "DIST_CHANNEL_%s_URL=%s", channels[i], naver ? wrong_host : good);
        if (strcmp(channels[i], "KAKAO") != 0)
            env_add(&e, "DIST_CHANNEL_%s_CA_FILE=%s", channels[i], itest_env("TLS_CA_FILE"));
    }
    itest_sim("/_sim/reset", NULL);
    itest_worker_start(&worker, "tls-refused", e.list);
    send_and_await(&worker, "refused", N);
    stop_worker(&worker);

    for (int i = 0; i < N; i++) {
        char id[128];
        event_id(id, sizeof(id), "refused", i);
        struct json_object *doc = itest_completion(completions, id, 0);
        assert_non_null(doc);
        assert_string_equal(str(doc, "status"), "PARTIAL_FAILURE");
        for (int c = 0; c < 6; c++) {
            struct json_object *ch = channel_of(doc, channels[c]);
            const char *msg = str(ch, "errorMessage");
            if (strcmp(channels[c], "KAKAO") == 0) {
                assert_string_equal(str(ch, "status"), "FAILED");
                if (!msg || !strstr(msg, "SSL certificate problem"))
                    fail_msg("KAKAO: %s", json_object_to_json_string(ch));
            } else if (strcmp(channels[c], "NAVER") == 0) {
                assert_string_equal(str(ch, "status"), "FAILED");
                if (!msg || !strstr(msg, "no alternative certificate subject name matches"))
                    fail_msg("NAVER: %s", json_object_to_json_string(ch));
            } else {
                assert_string_equal(str(ch, "status"), "SUCCESS");
            }
        }
        if (i == 0) {
            printf("  KAKAO: %s \"%s\"\n", str(channel_of(doc, "KAKAO"), "errorCode"),
                   str(channel_of(doc, "KAKAO"), "errorMessage"));
            printf("  NAVER: %s \"%s\"\n", str(channel_of(doc, "NAVER"), "errorCode"),
                   str(channel_of(doc, "NAVER"), "errorMessage"));
        }
    }
    struct json_object *stats = itest_sim_stats();
    assert_int_equal(itest_json_int(stats, "channels.KAKAO.calls"), 0);
    assert_int_equal(itest_json_int(stats, "channels.NAVER.calls"), 0);
    assert_int_equal(itest_json_int(stats, "channels.GINITV.calls"), N);
    json_object_put(stats);
    /* nginx logged the 4 channels' calls (Instagram: 2) and nothing else. */
    struct calls_seen seen;
    await_calls("refused", port, N * 5, &seen);
    usleep(1500 * 1000); /* one more flush, in case a refused call were logged late */
    read_calls("refused", port, &seen);
    assert_int_equal(seen.total, N * 5);
    assert_int_equal(seen.ok, N * 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(https_http2_multiplexed, stop_left_worker),
        cmocka_unit_test_teardown(https_http2_burst_capped, stop_left_worker),
        cmocka_unit_test_teardown(https_http1_only, stop_left_worker),
        cmocka_unit_test_teardown(h2c_prior_knowledge, stop_left_worker),
        cmocka_unit_test_teardown(untrusted_and_wrong_host_fail, stop_left_worker),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
