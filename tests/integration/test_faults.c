/*
 * Nothing lost, nothing posted twice: every fault an AKS deployment meets,
 * injected for real against the dev broker, PostgreSQL and the simulator,
 * with workers as separate processes.
 *
 * Each case sends its own requests (eventIds with the case's prefix) and
 * checks:
 * - lost: a request without a completion, or without a final overall status
 *   in PostgreSQL, at the end;
 * - duplicate posts: a channel called again after its SUCCESS was stored.
 *   At every crash the stored successes are snapshotted with the
 *   simulator's call count per Idempotency-Key; any later call to one of
 *   those keys is a duplicate. (A call in flight at the crash, sent but not
 *   stored, may be re-sent with the same key and is deduplicated by the
 *   channel: the contract allows it, and it is reported as "re-sent".)
 * Each prints sent, completed, on DLQ, lost, duplicate posts, re-sent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dw/common.h"
#include "itest.h"

#define REQUEST_TOPIC   "distribution-requests"
#define COMPLETED_TOPIC "distribution-completed"
#define DLQ_TOPIC       "distribution-requests.dlq"
#define GROUP           "distribution-worker"

static rd_kafka_t *producer;
static rd_kafka_t *completions;

/* ---- a case's requests and their completions ---- */

struct ledger {
    char prefix[96];
    int n;
    int *done; /* completions seen per request */
};

#define MAX_LEDGERS 16
static struct ledger *ledgers[MAX_LEDGERS];
static int nledgers;

static struct ledger *ledger_new(const char *name, int n)
{
    struct ledger *l = calloc(1, sizeof(*l));
    snprintf(l->prefix, sizeof(l->prefix), "%s-%s-", name, itest_run_id());
    l->n = n;
    l->done = calloc((size_t)n, sizeof(int));
    assert_true(nledgers < MAX_LEDGERS);
    ledgers[nledgers++] = l;
    return l;
}

static void ledger_id(const struct ledger *l, int i, char *buf, size_t len)
{
    snprintf(buf, len, "%s%05d", l->prefix, i);
}

static void send_range(const struct ledger *l, int from, int to)
{
    for (int i = from; i < to; i++) {
        char id[128];
        ledger_id(l, i, id, sizeof(id));
        char *json = itest_request_json(id);
        itest_produce(producer, REQUEST_TOPIC, id, json, strlen(json));
        free(json);
    }
    itest_flush(producer);
}

/* Reads completions for up to ms, crediting them to their ledger. */
static void read_completions(int ms)
{
    for (int waited = 0; waited < ms;) {
        rd_kafka_message_t *m = itest_read(completions, 50);
        if (!m) {
            waited += 50;
            continue;
        }
        for (int k = 0; k < nledgers; k++) {
            struct ledger *l = ledgers[k];
            size_t plen = strlen(l->prefix);
            if (m->key_len == plen + 5 && memcmp(m->key, l->prefix, plen) == 0) {
                int i = (int)strtol((const char *)m->key + plen, NULL, 10);
                if (i >= 0 && i < l->n)
                    l->done[i]++;
            }
        }
        rd_kafka_message_destroy(m);
    }
}

static int completed(const struct ledger *l)
{
    int c = 0;
    for (int i = 0; i < l->n; i++)
        c += l->done[i] > 0;
    return c;
}

/* Waits until at least target of l's requests completed (or ms passed). */
static void wait_completed(const struct ledger *l, int target, int ms)
{
    for (int waited = 0; completed(l) < target && waited < ms; waited += 200)
        read_completions(200);
}

/* ---- stored successes at a crash, and later calls to them ---- */

struct snapshot {
    char (*keys)[128];
    int64_t *calls;
    size_t n;
};

static struct snapshot snaps[16];
static int nsnaps;

static int64_t sim_key_calls(const char *key)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/_sim/keys/%s", itest_env("SIM_URL"), key);
    long status;
    struct json_object *j = itest_http_json(url, &status);
    if (!j) {
        assert_int_equal(status, 404);
        return 0;
    }
    int64_t calls = itest_json_int(j, "calls");
    json_object_put(j);
    return calls;
}

/* Records every stored SUCCESS of l's requests with the simulator's call
 * count for its key(s), right after a crash. */
static void snapshot_successes(const struct ledger *l)
{
    PGconn *pg = PQconnectdb(itest_env("PG_DSN"));
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    char like[128];
    snprintf(like, sizeof(like), "%s%%", l->prefix);
    const char *params[1] = {like};
    PGresult *r = PQexecParams(pg,
                               "SELECT event_id, channel FROM channel_status WHERE event_id LIKE "
                               "$1 AND status = 'SUCCESS'",
                               1, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    int rows = PQntuples(r);
    assert_true(nsnaps < 16);
    struct snapshot *s = &snaps[nsnaps++];
    s->keys = calloc((size_t)rows * 2 + 1, sizeof(*s->keys));
    s->calls = calloc((size_t)rows * 2 + 1, sizeof(int64_t));
    for (int i = 0; i < rows; i++) {
        const char *ev = PQgetvalue(r, i, 0), *ch = PQgetvalue(r, i, 1);
        snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s:%s", ev, ch);
        s->calls[s->n] = sim_key_calls(s->keys[s->n]);
        s->n++;
        if (strcmp(ch, "INSTAGRAM") == 0) {
            snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s:%s:publish", ev, ch);
            s->calls[s->n] = sim_key_calls(s->keys[s->n]);
            s->n++;
        }
    }
    PQclear(r);
    PQfinish(pg);
}

/* Calls made, after their snapshot, to keys whose success was stored. */
static int64_t duplicate_posts(void)
{
    int64_t dup = 0;
    for (int k = 0; k < nsnaps; k++) {
        for (size_t i = 0; i < snaps[k].n; i++) {
            int64_t now = sim_key_calls(snaps[k].keys[i]);
            if (now != snaps[k].calls[i]) {
                fprintf(stderr, "  duplicate: %s called %lld time(s) after its stored success\n",
                        snaps[k].keys[i], (long long)(now - snaps[k].calls[i]));
                dup += now - snaps[k].calls[i];
            }
        }
        free(snaps[k].keys);
        free(snaps[k].calls);
    }
    nsnaps = 0;
    return dup;
}

/* Requests of l without a completion, or without a final status stored. */
static int lost(const struct ledger *l)
{
    char like[128];
    snprintf(like, sizeof(like), "%s%%", l->prefix);
    int64_t final = itest_pg_scalar("SELECT count(*) FROM distribution WHERE event_id LIKE $1 AND "
                                    "overall_status IN ('COMPLETED','PARTIAL_FAILURE','FAILED')",
                                    like);
    int missing = l->n - completed(l);
    int not_final = l->n - (int) final;
    return missing > not_final ? missing : not_final;
}

/* Prints the case's figures and asserts zero lost and zero duplicates. */
static void verdict(const char *name, const struct ledger *l, int dlq, int64_t resent_before)
{
    struct json_object *stats = itest_sim_stats();
    int64_t resent = itest_json_int(stats, "duplicatePosts") - resent_before;
    json_object_put(stats);
    int lost_n = lost(l);
    int64_t dup = duplicate_posts();
    printf("  %s: sent %d, completed %d, on DLQ %d, lost %d, duplicate posts %lld, re-sent "
           "in-flight calls %lld\n",
           name, l->n + dlq, completed(l), dlq, lost_n, (long long)dup, (long long)resent);
    fflush(stdout);
    assert_int_equal(lost_n, 0);
    assert_int_equal(dup, 0);
}

static int64_t sim_resent(void)
{
    struct json_object *stats = itest_sim_stats();
    int64_t v = itest_json_int(stats, "duplicatePosts");
    json_object_put(stats);
    return v;
}

static void everything_committed(void)
{
    int64_t behind = -1;
    for (int i = 0; i < 100 && behind != 0; i++) {
        behind = itest_uncommitted(GROUP, REQUEST_TOPIC);
        if (behind)
            read_completions(100);
    }
    assert_int_equal(behind, 0);
}

static int setup(void **state)
{
    (void)state;
    itest_sim("/_sim/reset", NULL);
    producer = itest_producer();
    completions = itest_reader(COMPLETED_TOPIC);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    itest_sim("/_sim/reset", NULL);
    rd_kafka_destroy(completions);
    rd_kafka_destroy(producer);
    for (int k = 0; k < nledgers; k++) {
        free(ledgers[k]->done);
        free(ledgers[k]);
    }
    return 0;
}

/* ---- the cases ---- */

/* SIGKILL in mid-load, then restart, five times in a row. Each round sends
 * a wave of requests and kills the worker while about half of that wave is
 * still in flight (channels answer in 300 ms). */
static void sigkill_mid_load_five_times(void **state)
{
    (void)state;
    enum { WAVE = 150, ROUNDS = 5, N = WAVE * ROUNDS };
    /* Answers spread over 0.1-1.5 s, so at a kill some channels of a request
     * are stored and others are still in flight. */
    itest_sim("/_sim/faults", "{\"channel\":\"*\",\"latencyMs\":100,\"latencyJitterMs\":1400}");
    struct ledger *l = ledger_new("kill", N);
    int64_t resent0 = sim_resent();
    struct itest_worker w;
    itest_worker_start(&w, "kill", NULL);
    for (int k = 1; k <= ROUNDS; k++) {
        int before = completed(l);
        send_range(l, (k - 1) * WAVE, k * WAVE);
        while (completed(l) < before + WAVE / 4)
            read_completions(20);
        double in_flight = itest_metric(&w, "dw_channel_calls_in_flight");
        assert_int_equal(itest_worker_stop(&w, SIGKILL, 5000), 128 + SIGKILL);
        snapshot_successes(l);
        printf("  kill %d: %d of %d sent completed, %.0f calls in flight, %zu stored successes\n",
               k, completed(l), k * WAVE, in_flight, snaps[nsnaps - 1].n);
        char name[32];
        snprintf(name, sizeof(name), "kill-%d", k);
        itest_worker_start(&w, name, NULL);
    }
    wait_completed(l, N, 120000);
    assert_int_equal(itest_worker_stop(&w, SIGTERM, 20000), 0);
    verdict("SIGKILL x5", l, 0, resent0);
    everything_committed();
    itest_sim("/_sim/reset", NULL);
}

/* Sum of dw_partitions_assigned over workers, waiting until it is 6 with
 * every listed worker holding some (the group has rebalanced). */
static void await_spread(struct itest_worker **ws, int n)
{
    for (int i = 0; i < 300; i++) {
        double sum = 0;
        int empty = 0;
        for (int k = 0; k < n; k++) {
            double p = itest_metric(ws[k], "dw_partitions_assigned");
            sum += p;
            empty += p <= 0;
        }
        if (sum == 6 && empty == 0)
            return;
        read_completions(100);
    }
    fail_msg("partitions did not spread over %d workers", n);
}

/* Three workers in one group; one killed and one added mid-load. */
static void rebalance_kill_one_add_one(void **state)
{
    (void)state;
    enum { N = 1500 };
    itest_sim("/_sim/faults", "{\"channel\":\"*\",\"latencyMs\":100,\"latencyJitterMs\":1400}");
    struct ledger *l = ledger_new("rebal", N);
    int64_t resent0 = sim_resent();
    struct itest_worker a, b, c, d;
    itest_worker_start(&a, "rebal-a", NULL);
    itest_worker_start(&b, "rebal-b", NULL);
    itest_worker_start(&c, "rebal-c", NULL);
    struct itest_worker *abc[] = {&a, &b, &c};
    await_spread(abc, 3);
    send_range(l, 0, N);
    while (completed(l) < N / 5)
        read_completions(20);
    assert_int_equal(itest_worker_stop(&a, SIGKILL, 5000), 128 + SIGKILL);
    snapshot_successes(l);
    printf("  killed a with %d of %d completed; adding d\n", completed(l), N);
    itest_worker_start(&d, "rebal-d", NULL);
    struct itest_worker *bcd[] = {&b, &c, &d};
    await_spread(bcd, 3);
    printf("  partitions after the rebalance: b %.0f, c %.0f, d %.0f; %d completed so far\n",
           itest_metric(&b, "dw_partitions_assigned"), itest_metric(&c, "dw_partitions_assigned"),
           itest_metric(&d, "dw_partitions_assigned"), completed(l));
    wait_completed(l, N, 120000);
    assert_int_equal(itest_worker_stop(&b, SIGTERM, 20000), 0);
    assert_int_equal(itest_worker_stop(&c, SIGTERM, 20000), 0);
    assert_int_equal(itest_worker_stop(&d, SIGTERM, 20000), 0);
    verdict("rebalance", l, 0, resent0);
    everything_committed();
    itest_sim("/_sim/reset", NULL);
}

/* SIGTERM mid-load: in-flight work finishes, the worker exits 0 within the
 * drain timeout, what is done is committed, the rest is redelivered. */
static void sigterm_drains(void **state)
{
    (void)state;
    enum { N = 900 }; /* more than the in-flight limit of 500 */
    itest_sim("/_sim/faults", "{\"channel\":\"*\",\"latencyMs\":200,\"latencyJitterMs\":1500}");
    struct ledger *l = ledger_new("drain", N);
    int64_t resent0 = sim_resent();
    struct itest_worker w;
    itest_worker_start(&w, "drain", NULL);
    send_range(l, 0, N);
    while (completed(l) < N / 10)
        read_completions(20);
    double in_flight = itest_metric(&w, "dw_requests_in_flight");
    int64_t t0 = dw_now_ms();
    int rc = itest_worker_stop(&w, SIGTERM, 15000);
    int64_t took = dw_now_ms() - t0;
    read_completions(500);
    int64_t behind = itest_uncommitted(GROUP, REQUEST_TOPIC);
    printf("  SIGTERM with %.0f in flight: exit %d after %lld ms; %d completed, %lld "
           "uncommitted\n",
           in_flight, rc, (long long)took, completed(l), (long long)behind);
    assert_int_equal(rc, 0);
    /* Every uncommitted offset is one of ours that did not complete. */
    assert_true(behind <= N - completed(l));
    itest_worker_start(&w, "drain-2", NULL);
    wait_completed(l, N, 90000);
    assert_int_equal(itest_worker_stop(&w, SIGTERM, 20000), 0);
    verdict("SIGTERM drain", l, 0, resent0);
    everything_committed();
    itest_sim("/_sim/reset", NULL);
}

/* PostgreSQL stopped for ~12 s mid-load: no crash, not ready meanwhile,
 * nothing committed for unsaved work, resumes by itself. */
static void postgres_outage(void **state)
{
    (void)state;
    enum { N = 400 };
    itest_sim("/_sim/faults", "{\"channel\":\"*\",\"latencyMs\":20}");
    struct ledger *l = ledger_new("pgdown", N);
    int64_t resent0 = sim_resent();
    struct itest_worker w;
    itest_worker_start(&w, "pgdown", NULL);
    send_range(l, 0, N / 2);
    wait_completed(l, N / 8, 30000);
    itest_parts("pg-stop");
    send_range(l, N / 2, N);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", w.http_port);
    long ready = 0;
    for (int i = 0; i < 100 && (ready = itest_http("GET", url, NULL, NULL)) != 503; i++)
        read_completions(100);
    int during = completed(l);
    read_completions(12000);
    int still = waitpid(w.pid, NULL, WNOHANG) == 0;
    printf("  PostgreSQL down: /readyz %ld, worker alive %d, completed %d -> %d while down\n",
           ready, still, during, completed(l));
    assert_int_equal(ready, 503);
    assert_true(still);
    itest_parts("pg-start");
    wait_completed(l, N, 90000);
    assert_int_equal(itest_http("GET", url, NULL, NULL), 200);
    assert_int_equal(itest_worker_stop(&w, SIGTERM, 20000), 0);
    verdict("PostgreSQL outage", l, 0, resent0);
    everything_committed();
    itest_sim("/_sim/reset", NULL);
}

/* The broker taken down for ~8 s mid-load and brought back. */
static void kafka_outage(void **state)
{
    (void)state;
    enum { N = 1200 };
    itest_sim("/_sim/faults", "{\"channel\":\"*\",\"latencyMs\":300}");
    struct ledger *l = ledger_new("kdown", N);
    int64_t resent0 = sim_resent();
    struct itest_worker w;
    itest_worker_start(&w, "kdown", NULL);
    send_range(l, 0, N);
    while (completed(l) < N / 8)
        read_completions(20);
    itest_broker_signal(SIGUSR1);
    /* Not ready while Kafka is unreachable (CONTRACT section 4). */
    char url[128], *why = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", w.http_port);
    long ready = 0;
    int64_t down_at = dw_now_ms();
    while (dw_now_ms() - down_at < 6000) {
        free(why);
        why = NULL;
        if ((ready = itest_http("GET", url, NULL, &why)) == 503)
            break;
        usleep(200 * 1000);
    }
    int64_t left = 8000 - (dw_now_ms() - down_at);
    if (left > 0)
        usleep((useconds_t)left * 1000);
    int still = waitpid(w.pid, NULL, WNOHANG) == 0;
    itest_broker_signal(SIGUSR2);
    printf("  brokers down 8 s: /readyz %ld %s, worker alive %d, completed %d so far\n", ready,
           why ? why : "", still, completed(l));
    assert_int_equal(ready, 503);
    assert_non_null(strstr(why, "Kafka"));
    free(why);
    assert_true(still);
    wait_completed(l, N, 120000);
    assert_int_equal(itest_worker_stop(&w, SIGTERM, 20000), 0);
    verdict("Kafka outage", l, 0, resent0);
    everything_committed();
    itest_sim("/_sim/reset", NULL);
}

/* A burst of poison messages never stops a partition. */
static void poison_burst(void **state)
{
    (void)state;
    enum { GOOD = 60, BAD = 300 };
    struct ledger *l = ledger_new("poison", GOOD);
    int64_t resent0 = sim_resent();
    struct itest_worker w;
    itest_worker_start(&w, "poison", NULL);
    static const char *const bad[] = {"{", "[]", "{\"eventId\":\"bad id\"}",
                                      "{\"eventId\":\"x\",\"title\":\"\",\"channels\":[\"KAKAO\"]}",
                                      "{\"eventId\":\"x\",\"title\":\"t\",\"channels\":[\"X\"]}"};
    char key[128];
    for (int i = 0, g = 0; i < BAD; i++) {
        snprintf(key, sizeof(key), "poison-bad-%s-%05d", itest_run_id(), i);
        itest_produce(producer, REQUEST_TOPIC, key, bad[i % 5], strlen(bad[i % 5]));
        if (i % (BAD / GOOD) == 0 && g < GOOD) {
            char id[128];
            ledger_id(l, g++, id, sizeof(id));
            char *json = itest_request_json(id);
            itest_produce(producer, REQUEST_TOPIC, id, json, strlen(json));
            free(json);
        }
    }
    itest_flush(producer);
    wait_completed(l, GOOD, 60000);
    rd_kafka_t *dlq = itest_reader(DLQ_TOPIC);
    int on_dlq = 0;
    char prefix[96];
    snprintf(prefix, sizeof(prefix), "poison-bad-%s-", itest_run_id());
    for (int waited = 0; on_dlq < BAD && waited < 30000;) {
        rd_kafka_message_t *m = itest_read(dlq, 100);
        if (!m) {
            waited += 100;
            continue;
        }
        if (m->key_len > strlen(prefix) && memcmp(m->key, prefix, strlen(prefix)) == 0)
            on_dlq++;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy(dlq);
    assert_int_equal(itest_worker_stop(&w, SIGTERM, 20000), 0);
    assert_int_equal(on_dlq, BAD);
    verdict("poison burst", l, on_dlq, resent0);
    everything_committed();
}

/* A backlog far larger than the in-flight limit: the limit holds (the
 * partitions pause), so memory stays bounded. */
static void backlog_stays_bounded(void **state)
{
    (void)state;
    enum { N = 3000, LIMIT = 500 }; /* worker.max_in_flight_requests in worker-test.conf */
    itest_sim("/_sim/faults", "{\"channel\":\"*\",\"latencyMs\":100}");
    struct ledger *l = ledger_new("backlog", N);
    int64_t resent0 = sim_resent();
    struct itest_worker w;
    itest_worker_start(&w, "backlog", NULL);
    send_range(l, 0, N);
    double peak = 0, paused_seen = 0;
    while (completed(l) < N) {
        double v = itest_metric(&w, "dw_requests_in_flight");
        double p = itest_metric(&w, "dw_partitions_paused");
        peak = v > peak ? v : peak;
        paused_seen = p > paused_seen ? p : paused_seen;
        read_completions(100);
    }
    long rss = itest_peak_rss_kib(w.pid);
    printf("  backlog %d: peak in flight %.0f (limit %d), partitions paused up to %.0f, peak RSS "
           "%ld KiB\n",
           N, peak, LIMIT, paused_seen, rss);
    assert_true(peak <= LIMIT + 1);
    assert_true(paused_seen > 0);
    assert_int_equal(itest_worker_stop(&w, SIGTERM, 20000), 0);
    verdict("backlog", l, 0, resent0);
    itest_sim("/_sim/reset", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(poison_burst),
        cmocka_unit_test(sigterm_drains),
        cmocka_unit_test(sigkill_mid_load_five_times),
        cmocka_unit_test(rebalance_kill_one_add_one),
        cmocka_unit_test(postgres_outage),
        cmocka_unit_test(kafka_outage),
        cmocka_unit_test(backlog_stays_bounded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
