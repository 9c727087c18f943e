/*
 * Automatic re-drive (CONTRACT 2.4) end to end, against the real parts:
 * workers with short delay tiers (DIST_REDRIVE_DELAYS_MS), the channel
 * simulator failing one channel, then healing it. What is checked comes
 * from independent evidence: the simulator's counters (posts, calls,
 * duplicate posts), the database (overall statuses, the redrive table) and
 * the completions on Kafka; the worker's own word (its metrics) only on
 * top.
 *
 *   heals_when_the_channel_comes_back  KAKAO down for 50 requests, then up:
 *       every request ends COMPLETED by the worker's own re-drives, KAKAO
 *       posted once per event, the other channels never called again; the
 *       status document shows nextAttemptAt while one is planned;
 *   survives_sigkill_between_failure_and_redrive  the same, with the worker
 *       killed after the failures and a new one doing the re-drives;
 *   two_workers_run_each_redrive_once  two workers share the schedule:
 *       KAKAO called exactly once per event after it heals;
 *   kafka_request_waits_for_a_redrive_elsewhere  the same requests sent
 *       again while their re-drives are calling: no second call;
 *   instagram_publishes_the_stored_container  a worker killed mid-publish:
 *       the next drive publishes the stored container, none is created;
 *   postgres_outage_during_redrives  the database stops while re-drives
 *       call: each KAKAO posted exactly once, none lost;
 *   permanent_4xx_is_never_redriven  KAKAO 400 is left alone while a
 *       NAVER outage in the same events is healed;
 *   expired_request_is_left_failed  a request older than
 *       DIST_REDRIVE_MAX_AGE_MS gets no re-drive and keeps its reason.
 *
 * Every case resets the simulator and deletes the schedule rows of other
 * tests first (worker-test.conf turns re-drive off for them, but their rows
 * may be there), so only this case's events are re-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <signal.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"

#define REQUEST_TOPIC   "distribution-requests"
#define COMPLETED_TOPIC "distribution-completed"

/* Short tiers, and breakers that recover within a second: the test is
 * about the schedule, not the breaker's patience. */
#define WORKER_ENV                                                                                 \
    "DIST_REDRIVE_DELAYS_MS=500,1000", "DIST_CHANNEL_KAKAO_BREAKER_OPEN_WAIT_MS=1000",             \
        "DIST_CHANNEL_NAVER_BREAKER_OPEN_WAIT_MS=1000",                                            \
        "DIST_CHANNEL_KAKAO_BREAKER_HALF_OPEN_CALLS=5", "DIST_CHANNEL_NAVER_MAX_ATTEMPTS=2",       \
        "DIST_CHANNEL_KAKAO_MAX_ATTEMPTS=2"

static const char *const worker_env[] = {WORKER_ENV, NULL};
/* A slower first tier, so a worker can be killed before it is due. */
static const char *const slow_env[] = {WORKER_ENV, "DIST_REDRIVE_DELAYS_MS=4000,1000", NULL};

static rd_kafka_t *producer;
static struct itest_completions *completions;

/* Copies of the workers a case started and has not stopped (copies: a
 * failing case's own stack is gone by its teardown), so a failing case
 * never leaves a worker running to re-drive into the next one. */
static struct itest_worker running[4];

static void start(struct itest_worker *w, const char *name, const char *const *env)
{
    itest_worker_start(w, name, env);
    for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++) {
        if (running[i].pid <= 0) {
            running[i] = *w;
            return;
        }
    }
    fail_msg("too many workers");
}

static int stop(struct itest_worker *w, int sig, int timeout_ms)
{
    for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++) {
        if (running[i].pid == w->pid)
            running[i].pid = 0;
    }
    return itest_worker_stop(w, sig, timeout_ms);
}

static int case_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++) {
        if (running[i].pid > 0)
            itest_worker_stop(&running[i], SIGKILL, 5000);
        running[i].pid = 0;
    }
    return 0;
}

/* ---- requests ---- */

static void event_id(char *buf, size_t len, const char *kind, int i)
{
    snprintf(buf, len, "rdv-%s-%s-%04d", kind, itest_run_id(), i);
}

/* Request of event kind-i for channels ("\"KAKAO\",\"NAVER\""); requested_at
 * may be NULL. */
static void send_one(const char *kind, int i, const char *channels, const char *requested_at)
{
    char id[128], *json = NULL;
    event_id(id, sizeof(id), kind, i);
    char at[96] = "";
    if (requested_at)
        snprintf(at, sizeof(at), ",\"requestedAt\":\"%s\"", requested_at);
    if (asprintf(&json,
                 "{\"eventId\":\"%s\",\"title\":\"Grand opening\",\"content\":\"Visit us\","
                 "\"imageUrl\":\"https://cdn.example.com/e/1.png\",\"channels\":[%s],"
                 "\"channelSettings\":{\"URIDONGNETV\":{\"radius\":\"1km\"}}%s}",
                 id, channels, at) < 0)
        fail_msg("asprintf");
    itest_produce(producer, REQUEST_TOPIC, id, json, strlen(json));
    free(json);
}

static void send_batch(const char *kind, int n, const char *channels, const char *requested_at)
{
    for (int i = 0; i < n; i++)
        send_one(kind, i, channels, requested_at);
    itest_flush(producer);
}

static char **ids_of(const char *kind, int n)
{
    char **ids = calloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++) {
        ids[i] = malloc(128);
        event_id(ids[i], 128, kind, i);
    }
    return ids;
}

static void ids_free(char **ids, int n)
{
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

static const char *str(struct json_object *o, const char *key)
{
    struct json_object *v;
    return o && json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static bool is_null(struct json_object *o, const char *key)
{
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, key, &v));
    return v == NULL;
}

/* The entry of channel in a document's array field. */
static struct json_object *channel_entry(struct json_object *doc, const char *field,
                                         const char *channel)
{
    struct json_object *list;
    if (!doc || !json_object_object_get_ex(doc, field, &list))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *c = json_object_array_get_idx(list, i);
        const char *name = str(c, "channel");
        if (name && strcmp(name, channel) == 0)
            return c;
    }
    return NULL;
}

/* Waits until every request has its first completion. */
static void await_first(const struct itest_worker *w, const char *kind, int n)
{
    char **ids = ids_of(kind, n);
    int enough = itest_completions_await(completions, ids, n, 1, 60000);
    ids_free(ids, n);
    if (enough < n) {
        if (w)
            itest_worker_log_tail(w, 30);
        fail_msg("%d of %d %s requests completed within 60 s", enough, n, kind);
    }
}

static int64_t count_sql(const char *sql, const char *kind)
{
    char like[160];
    snprintf(like, sizeof(like), "rdv-%s-%s-%%", kind, itest_run_id());
    return itest_pg_scalar(sql, like);
}

static int64_t completed_in_db(const char *kind)
{
    return count_sql("SELECT count(*) FROM distribution WHERE event_id LIKE $1"
                     " AND overall_status = 'COMPLETED'",
                     kind);
}

static int64_t scheduled_in_db(const char *kind)
{
    return count_sql("SELECT count(*) FROM redrive WHERE event_id LIKE $1", kind);
}

/* Waits until the database shows all n requests COMPLETED and no schedule
 * left, then until the last completion of each says COMPLETED. */
static void await_healed(const struct itest_worker *w, const char *kind, int n, int timeout_ms)
{
    int64_t until = (int64_t)time(NULL) * 1000 + timeout_ms;
    while (completed_in_db(kind) < n || scheduled_in_db(kind) > 0) {
        if ((int64_t)time(NULL) * 1000 > until) {
            if (w)
                itest_worker_log_tail(w, 40);
            fail_msg("%s: %lld of %d COMPLETED, %lld still scheduled after %d ms", kind,
                     (long long)completed_in_db(kind), n, (long long)scheduled_in_db(kind),
                     timeout_ms);
        }
        usleep(200 * 1000);
    }
    char **ids = ids_of(kind, n);
    int healed = 0;
    while ((int64_t)time(NULL) * 1000 <= until) {
        /* Reads what has arrived (no id ever has 1000 completions). */
        itest_completions_await(completions, ids, n, 1000, 300);
        healed = 0;
        for (int i = 0; i < n; i++) {
            struct json_object *last = NULL, *c;
            for (int k = 0; (c = itest_completion(completions, ids[i], k)); k++)
                last = c;
            healed += last && strcmp(str(last, "status"), "COMPLETED") == 0;
        }
        if (healed == n)
            break;
    }
    ids_free(ids, n);
    if (healed < n)
        fail_msg("%s: %d of %d last completions COMPLETED", kind, healed, n);
}

/* Drops the schedule rows of anything but this run's kind-prefix, so only
 * this case's events can be claimed. */
static void clean_schedule(void)
{
    char like[160];
    snprintf(like, sizeof(like), "rdv-%%-%s-%%", itest_run_id());
    /* On a fresh database the first worker has not made the table yet. */
    if (itest_pg_scalar("SELECT count(*) FROM pg_class WHERE relname = 'redrive'"
                        " AND relkind = 'r' AND $1 <> ''",
                        like) == 0)
        return;
    itest_pg_scalar("WITH gone AS (DELETE FROM redrive WHERE event_id NOT LIKE $1 RETURNING 1)"
                    " SELECT count(*) FROM gone",
                    like);
}

static int64_t sim_count(const char *path)
{
    struct json_object *stats = itest_sim_stats();
    int64_t v = itest_json_int(stats, path);
    json_object_put(stats);
    return v;
}

/* Two workers hold all six partitions between them. The mock cluster
 * keeps a departed member (an earlier case's SIGKILLed worker) in the group
 * until its session times out, and a rebalance meanwhile hands it
 * partitions; records sent before the group settles wait for that, which
 * the cases' 60 s waits are not about. */
static void await_group(const struct itest_worker *a, const struct itest_worker *b)
{
    double held = 0;
    for (int i = 0; i < 600; i++) {
        held =
            itest_metric(a, "dw_partitions_assigned") + itest_metric(b, "dw_partitions_assigned");
        if (held == 6)
            return;
        usleep(50 * 1000);
    }
    fail_msg("the two workers hold %.0f of 6 partitions after 30 s", held);
}

static void sim_reset(void)
{
    itest_sim("/_sim/reset", NULL);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
    (void)state;
    producer = itest_producer();
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "rdv-");
    completions = itest_completions_new(COMPLETED_TOPIC, prefix);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    itest_completions_free(completions);
    rd_kafka_destroy(producer);
    sim_reset();
    return 0;
}

/* ---- cases ---- */

static void heals_when_the_channel_comes_back(void **state)
{
    (void)state;
    enum { N = 50 };
    struct itest_worker w;
    sim_reset();
    clean_schedule();
    start(&w, "redrive-heal", worker_env);
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":true}");
    send_batch("heal", N, "\"KAKAO\",\"NAVER\",\"URIDONGNETV\"", NULL);
    await_first(&w, "heal", N);

    /* While KAKAO is down: every first completion is a PARTIAL_FAILURE
     * with KAKAO FAILED for a transient cause, and a re-drive is planned. */
    char **ids = ids_of("heal", N);
    for (int i = 0; i < N; i++) {
        struct json_object *first = itest_completion(completions, ids[i], 0);
        assert_string_equal(str(first, "status"), "PARTIAL_FAILURE");
        struct json_object *kakao = channel_entry(first, "distributedChannels", "KAKAO");
        assert_string_equal(str(kakao, "status"), "FAILED");
    }
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/%s/status", w.http_port, ids[0]);
    struct json_object *doc = NULL;
    for (int tries = 0; tries < 50; tries++) {
        json_object_put(doc);
        doc = itest_http_json(url, NULL);
        if (str(channel_entry(doc, "channels", "KAKAO"), "nextAttemptAt"))
            break;
        usleep(100 * 1000); /* between a re-drive's claim and its new schedule */
    }
    struct json_object *kakao = channel_entry(doc, "channels", "KAKAO");
    const char *next = str(kakao, "nextAttemptAt");
    assert_non_null(next);
    assert_int_equal(strlen(next), 24); /* 2025-10-29T06:13:04.123Z */
    assert_true(is_null(channel_entry(doc, "channels", "NAVER"), "nextAttemptAt"));
    assert_true(is_null(channel_entry(doc, "channels", "URIDONGNETV"), "nextAttemptAt"));
    json_object_put(doc);
    assert_true(scheduled_in_db("heal") > 0);

    /* Let a few re-drives fail too, then bring KAKAO back. */
    sleep(2);
    int64_t naver = sim_count("channels.NAVER.calls");
    int64_t uri = sim_count("channels.URIDONGNETV.calls");
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":false}");
    await_healed(&w, "heal", N, 60000);

    int64_t kakao_posts = sim_count("channels.KAKAO.posts");
    int64_t dups = sim_count("duplicatePosts");
    printf("  %d requests: KAKAO posts %lld, duplicate posts %lld, NAVER calls %lld, "
           "URIDONGNETV calls %lld, re-drive results %.0f\n",
           N, (long long)kakao_posts, (long long)dups, (long long)naver, (long long)uri,
           itest_metric(&w, "dw_redrive_channel_results_total"));
    assert_int_equal(kakao_posts, N);
    assert_int_equal(dups, 0);
    /* The healthy channels were called once per event, never again. */
    assert_int_equal(naver, N);
    assert_int_equal(uri, N);
    assert_int_equal(sim_count("channels.NAVER.calls"), N);
    assert_int_equal(sim_count("channels.URIDONGNETV.calls"), N);
    assert_true(itest_metric(&w, "dw_redrive_scheduled_total") >= N);
    /* Nothing re-driven commits an offset: every request offset is
     * committed once, by its first completion. */
    ids_free(ids, N);
    assert_int_equal(stop(&w, SIGTERM, 30000), 0);
}

static void survives_sigkill_between_failure_and_redrive(void **state)
{
    (void)state;
    enum { N = 20 };
    struct itest_worker w;
    sim_reset();
    clean_schedule();
    start(&w, "redrive-kill-1", slow_env);
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":true}");
    send_batch("kill", N, "\"KAKAO\",\"NAVER\"", NULL);
    await_first(&w, "kill", N);
    assert_int_equal(scheduled_in_db("kill"), N);
    /* Offsets committed, so the new worker gets no Kafka redelivery: what
     * heals the events can only be the schedule. */
    for (int i = 0; i < 100 && itest_uncommitted("distribution-worker", REQUEST_TOPIC) > 0; i++)
        usleep(100 * 1000);
    assert_int_equal(itest_uncommitted("distribution-worker", REQUEST_TOPIC), 0);
    assert_int_equal(stop(&w, SIGKILL, 5000), 128 + SIGKILL);
    assert_int_equal(sim_count("channels.KAKAO.posts"), 0);

    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":false}");
    start(&w, "redrive-kill-2", slow_env);
    await_healed(&w, "kill", N, 60000);
    int64_t kakao_posts = sim_count("channels.KAKAO.posts");
    printf("  after SIGKILL: KAKAO posts %lld, NAVER calls %lld, duplicate posts %lld\n",
           (long long)kakao_posts, (long long)sim_count("channels.NAVER.calls"),
           (long long)sim_count("duplicatePosts"));
    assert_int_equal(kakao_posts, N);
    assert_int_equal(sim_count("channels.NAVER.calls"), N);
    assert_int_equal(sim_count("duplicatePosts"), 0);
    assert_true(itest_metric(&w, "dw_redrive_channel_results_total") >= N);
    assert_int_equal(stop(&w, SIGTERM, 30000), 0);
}

static void two_workers_run_each_redrive_once(void **state)
{
    (void)state;
    enum { N = 40 };
    struct itest_worker a, b;
    sim_reset();
    clean_schedule();
    start(&a, "redrive-two-a", slow_env);
    start(&b, "redrive-two-b", slow_env);
    await_group(&a, &b);
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":true}");
    send_batch("two", N, "\"KAKAO\",\"NAVER\"", NULL);
    await_first(&a, "two", N);
    assert_int_equal(scheduled_in_db("two"), N);

    /* From here on every KAKAO call succeeds; a re-drive run twice would
     * call twice (the second a duplicate post). */
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":false}");
    itest_sim("/_sim/reset-counters", NULL);
    await_healed(&a, "two", N, 60000);
    double ra = itest_metric(&a, "dw_redrive_channel_results_total");
    double rb = itest_metric(&b, "dw_redrive_channel_results_total");
    printf("  two workers: KAKAO calls %lld, posts %lld, duplicate posts %lld; re-driven "
           "channels %.0f + %.0f\n",
           (long long)sim_count("channels.KAKAO.calls"),
           (long long)sim_count("channels.KAKAO.posts"), (long long)sim_count("duplicatePosts"), ra,
           rb);
    assert_int_equal(sim_count("channels.KAKAO.calls"), N);
    assert_int_equal(sim_count("channels.KAKAO.posts"), N);
    assert_int_equal(sim_count("duplicatePosts"), 0);
    assert_int_equal(sim_count("channels.NAVER.calls"), 0);
    assert_int_equal(stop(&a, SIGTERM, 30000), 0);
    assert_int_equal(stop(&b, SIGTERM, 30000), 0);
}

/* PostgreSQL stopped while re-drives are under way: nothing is lost, no
 * channel posted twice, and the re-drives finish once it is back. */
static void postgres_outage_during_redrives(void **state)
{
    (void)state;
    enum { N = 40 };
    struct itest_worker w;
    sim_reset();
    clean_schedule();
    start(&w, "redrive-pgdown", worker_env);
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":true}");
    send_batch("pgdown", N, "\"KAKAO\",\"NAVER\"", NULL);
    await_first(&w, "pgdown", N);
    /* KAKAO back but slow, so re-drives are calling when the database goes. */
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":false,\"latencyMs\":500}");
    itest_sim("/_sim/reset-counters", NULL);
    int64_t until = (int64_t)time(NULL) + 30;
    while (sim_count("channels.KAKAO.calls") < 1 && (int64_t)time(NULL) < until)
        usleep(20 * 1000);
    itest_parts("pg-stop");
    sleep(4);
    itest_parts("pg-start");
    await_healed(&w, "pgdown", N, 90000);
    printf("  PostgreSQL down during re-drives: KAKAO calls %lld, posts %lld, duplicate posts "
           "%lld, NAVER calls %lld\n",
           (long long)sim_count("channels.KAKAO.calls"),
           (long long)sim_count("channels.KAKAO.posts"), (long long)sim_count("duplicatePosts"),
           (long long)sim_count("channels.NAVER.calls"));
    /* Each KAKAO posted exactly once (none lost); a call whose result the
     * outage kept from being stored may be re-sent, answered from the
     * Idempotency-Key without a second post. */
    assert_int_equal(sim_count("channels.KAKAO.posts"), N);
    assert_int_equal(sim_count("channels.NAVER.calls"), 0);
    assert_int_equal(stop(&w, SIGTERM, 30000), 0);
}

/* A re-drive running on one worker and a Kafka request for the same event
 * on another never run at once: the request's begin finds the event
 * claimed, waits, and then finds KAKAO stored SUCCESS. Without that, the
 * request would call KAKAO while the re-drive's slow call is under way. */
/* Every re-drive must be calling KAKAO at once when the requests come
 * again: no breaker, and a fixed limit (an adaptive one comes back from
 * KAKAO's outage by slow start, a few calls at a time). */
static const char *const lock_env[] = {WORKER_ENV, "DIST_REDRIVE_DELAYS_MS=1000",
                                       "DIST_CHANNEL_KAKAO_BREAKER=disabled",
                                       "DIST_CHANNEL_KAKAO_LIMIT=fixed", NULL};

static void kafka_request_waits_for_a_redrive_elsewhere(void **state)
{
    (void)state;
    enum { N = 30 };
    struct itest_worker a, b;
    sim_reset();
    clean_schedule();
    start(&a, "redrive-lock-a", lock_env);
    start(&b, "redrive-lock-b", lock_env);
    await_group(&a, &b);
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":true}");
    send_batch("lock", N, "\"KAKAO\",\"NAVER\"", NULL);
    await_first(&a, "lock", N);

    /* KAKAO back, but slow: each re-drive's call takes 2 s. */
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"down\":false,\"latencyMs\":2000}");
    itest_sim("/_sim/reset-counters", NULL);
    int64_t until = (int64_t)time(NULL) + 30;
    while (sim_count("channels.KAKAO.inFlight") < N && (int64_t)time(NULL) < until)
        usleep(20 * 1000);
    assert_int_equal(sim_count("channels.KAKAO.inFlight"), N);
    /* Every re-drive is calling KAKAO now: send the requests again. Those
     * that land on the other worker must wait for the claim. */
    send_batch("lock", N, "\"KAKAO\",\"NAVER\"", NULL);
    await_healed(&a, "lock", N, 60000);
    char **ids = ids_of("lock", N);
    assert_int_equal(itest_completions_await(completions, ids, N, 3, 30000), N);
    ids_free(ids, N);
    printf("  re-drive and request at once: KAKAO calls %lld, posts %lld, duplicate posts "
           "%lld, NAVER calls %lld\n",
           (long long)sim_count("channels.KAKAO.calls"),
           (long long)sim_count("channels.KAKAO.posts"), (long long)sim_count("duplicatePosts"),
           (long long)sim_count("channels.NAVER.calls"));
    assert_int_equal(sim_count("channels.KAKAO.calls"), N);
    assert_int_equal(sim_count("duplicatePosts"), 0);
    assert_int_equal(sim_count("channels.NAVER.calls"), 0);
    assert_int_equal(stop(&a, SIGTERM, 30000), 0);
    assert_int_equal(stop(&b, SIGTERM, 30000), 0);
}

/* The simulator's counters of one Idempotency-Key: calls and posts; -1
 * when it has never seen the key. */
static void key_counts(const char *key, int64_t *calls, int64_t *posts)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/_sim/keys/%s", itest_env("SIM_URL"), key);
    long status = 0;
    struct json_object *doc = itest_http_json(url, &status);
    *calls = doc ? itest_json_int(doc, "calls") : -1;
    *posts = doc ? itest_json_int(doc, "posts") : -1;
    json_object_put(doc);
}

/* Instagram's container id is stored before publish: a worker killed while
 * its publish is under way leaves it, and the next drive publishes that
 * container instead of creating another one. */
static void instagram_publishes_the_stored_container(void **state)
{
    (void)state;
    struct itest_worker w;
    sim_reset();
    clean_schedule();
    start(&w, "redrive-ig-1", worker_env);
    itest_sim("/_sim/faults", "{\"channel\":\"INSTAGRAM\",\"latencyMs\":1500}");
    send_batch("ig", 1, "\"INSTAGRAM\"", NULL);
    char id[128], media[160], publish[192];
    event_id(id, sizeof(id), "ig", 0);
    snprintf(media, sizeof(media), "%s:INSTAGRAM", id);
    snprintf(publish, sizeof(publish), "%s:INSTAGRAM:publish", id);
    int64_t calls = -1, posts = -1;
    int64_t until = (int64_t)time(NULL) + 30;
    while (calls < 1 && (int64_t)time(NULL) < until) {
        usleep(20 * 1000);
        key_counts(publish, &calls, &posts);
    }
    assert_int_equal(calls, 1); /* the publish is on its way (answered in 1.5 s) */
    assert_int_equal(count_sql("SELECT count(*) FROM channel_status WHERE event_id LIKE $1"
                               " AND channel = 'INSTAGRAM' AND step_id IS NOT NULL",
                               "ig"),
                     1);
    assert_int_equal(stop(&w, SIGKILL, 5000), 128 + SIGKILL);

    /* The request was not committed: the next worker drives it again. */
    itest_sim("/_sim/faults", "{\"channel\":\"INSTAGRAM\",\"latencyMs\":0}");
    start(&w, "redrive-ig-2", worker_env);
    char *ids[] = {id};
    int n = itest_completions_await(completions, ids, 1, 1, 60000);
    if (n < 1)
        itest_worker_log_tail(&w, 30);
    assert_int_equal(n, 1);
    struct json_object *done = itest_completion(completions, id, 0);
    assert_string_equal(str(done, "status"), "COMPLETED");
    int64_t media_calls, media_posts, publish_calls, publish_posts;
    key_counts(media, &media_calls, &media_posts);
    key_counts(publish, &publish_calls, &publish_posts);
    printf("  Instagram after SIGKILL mid-publish: media calls %lld, publish calls %lld, "
           "publish posts %lld\n",
           (long long)media_calls, (long long)publish_calls, (long long)publish_posts);
    assert_int_equal(media_calls, 1); /* no second container */
    assert_int_equal(publish_calls, 2);
    assert_int_equal(publish_posts, 1);
    assert_int_equal(stop(&w, SIGTERM, 30000), 0);
}

static void permanent_4xx_is_never_redriven(void **state)
{
    (void)state;
    enum { N = 5 };
    struct itest_worker w;
    sim_reset();
    clean_schedule();
    start(&w, "redrive-4xx", worker_env);
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"errorRate\":1,\"errorStatus\":400}");
    itest_sim("/_sim/faults", "{\"channel\":\"NAVER\",\"down\":true}");
    send_batch("perm", N, "\"KAKAO\",\"NAVER\"", NULL);
    await_first(&w, "perm", N);

    char **ids = ids_of("perm", N);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/%s/status", w.http_port, ids[0]);
    struct json_object *doc = itest_http_json(url, NULL);
    struct json_object *kakao = channel_entry(doc, "channels", "KAKAO");
    assert_string_equal(str(kakao, "errorCode"), "HTTP_4XX");
    assert_true(is_null(kakao, "nextAttemptAt"));
    json_object_put(doc);
    int64_t kakao_calls = sim_count("channels.KAKAO.calls");
    assert_int_equal(kakao_calls, N); /* 4xx: not even retried */

    /* NAVER heals through re-drives; KAKAO is never called again. */
    sleep(2);
    itest_sim("/_sim/faults", "{\"channel\":\"NAVER\",\"down\":false}");
    int64_t until = (int64_t)time(NULL) + 60;
    while (scheduled_in_db("perm") > 0 && (int64_t)time(NULL) < until)
        usleep(200 * 1000);
    assert_int_equal(scheduled_in_db("perm"), 0);
    assert_int_equal(sim_count("channels.NAVER.posts"), N);
    assert_int_equal(sim_count("channels.KAKAO.calls"), N);
    assert_int_equal(count_sql("SELECT count(*) FROM distribution WHERE event_id LIKE $1"
                               " AND overall_status = 'PARTIAL_FAILURE'",
                               "perm"),
                     N);
    doc = itest_http_json(url, NULL);
    kakao = channel_entry(doc, "channels", "KAKAO");
    assert_string_equal(str(kakao, "status"), "FAILED");
    assert_string_equal(str(kakao, "errorCode"), "HTTP_4XX");
    assert_true(is_null(kakao, "nextAttemptAt"));
    assert_string_equal(str(channel_entry(doc, "channels", "NAVER"), "status"), "SUCCESS");
    json_object_put(doc);
    ids_free(ids, N);
    printf("  4xx: KAKAO calls %lld (one per event), NAVER posts %lld after healing\n",
           (long long)sim_count("channels.KAKAO.calls"),
           (long long)sim_count("channels.NAVER.posts"));
    assert_int_equal(stop(&w, SIGTERM, 30000), 0);
}

static void expired_request_is_left_failed(void **state)
{
    (void)state;
    enum { N = 3 };
    struct itest_worker w;
    sim_reset();
    clean_schedule();
    start(&w, "redrive-expired", worker_env);
    itest_sim("/_sim/faults", "{\"channel\":\"NAVER\",\"down\":true}");
    /* 25 hours old: past the default DIST_REDRIVE_MAX_AGE_MS of 24 h. */
    time_t old = time(NULL) - 25 * 3600;
    struct tm tm;
    gmtime_r(&old, &tm);
    char at[40];
    strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tm);
    send_batch("old", N, "\"NAVER\"", at);
    await_first(&w, "old", N);
    assert_int_equal(scheduled_in_db("old"), 0);
    int64_t calls = sim_count("channels.NAVER.calls");
    sleep(2); /* four claim rounds and both tiers */
    assert_int_equal(sim_count("channels.NAVER.calls"), calls);
    assert_int_equal(count_sql("SELECT count(*) FROM distribution WHERE event_id LIKE $1"
                               " AND overall_status = 'FAILED'",
                               "old"),
                     N);
    char id[128], url[256];
    event_id(id, sizeof(id), "old", 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/%s/status", w.http_port, id);
    struct json_object *doc = itest_http_json(url, NULL);
    struct json_object *naver = channel_entry(doc, "channels", "NAVER");
    assert_string_equal(str(naver, "status"), "FAILED");
    assert_non_null(str(naver, "errorCode")); /* its reason stays */
    assert_non_null(str(naver, "errorMessage"));
    assert_true(is_null(naver, "nextAttemptAt"));
    printf("  expired: NAVER %s (%s), no re-drive\n", str(naver, "errorCode"),
           str(naver, "errorMessage"));
    json_object_put(doc);
    assert_int_equal(stop(&w, SIGTERM, 30000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(heals_when_the_channel_comes_back, case_teardown),
        cmocka_unit_test_teardown(permanent_4xx_is_never_redriven, case_teardown),
        cmocka_unit_test_teardown(expired_request_is_left_failed, case_teardown),
        cmocka_unit_test_teardown(survives_sigkill_between_failure_and_redrive, case_teardown),
        cmocka_unit_test_teardown(two_workers_run_each_redrive_once, case_teardown),
        cmocka_unit_test_teardown(kafka_request_waits_for_a_redrive_elsewhere, case_teardown),
        cmocka_unit_test_teardown(instagram_publishes_the_stored_container, case_teardown),
        cmocka_unit_test_teardown(postgres_outage_during_redrives, case_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
