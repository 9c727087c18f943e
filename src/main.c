/*
 * distribution-worker: main owns the arguments, the start order, signals,
 * the poll loop and the stop in reverse order.
 *
 * Start order (stop is the reverse): config -> log -> metrics -> store
 * schema -> producer -> dispatch (store connection, pool threads) ->
 * consumer -> HTTP listener.
 *
 * The poll loop (this thread) never blocks on work: it polls Kafka briefly,
 * hands each record to intake (src/intake.c: broken ones to the DLQ, valid
 * ones to dispatch), serves the producer's delivery reports and lets the
 * consumer take the offsets they made done, commits, and pauses every
 * partition while dispatch holds too many requests or the database is
 * away (intake again, which decides; main only wires it).
 *
 * Exit codes (CONTRACT section 5): 0 clean stop, 2 bad configuration,
 * 1 anything else fatal.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "dw/backpressure.h"
#include "dw/config.h"
#include "dw/consumer.h"
#include "dw/dispatch.h"
#include "dw/http.h"
#include "dw/intake.h"
#include "dw/log.h"
#include "dw/metrics.h"
#include "dw/producer.h"
#include "dw/request.h"
#include "dw/store.h"

#ifndef DW_VERSION
#define DW_VERSION "dev"
#endif

#define POLL_MS            10
#define REVOKE_WAIT_MAX_MS 10000
/* /healthz fails when the poll loop has not come round for this long. The
 * loop comes round every POLL_MS; the longest legitimate gap (a revoke
 * waiting for in-flight work) beats too, inside the consumer. */
#define LIVENESS_STALL_MS 5000
/* Readiness pings PostgreSQL on its own connection; a server that stops
 * answering (hung, SIGSTOPped) fails the ping after this long. */
#define READY_PING_TIMEOUT_MS 1000

extern char **environ;

/* The one piece of global mutable state: set by signal handlers only. */
static volatile sig_atomic_t stop_signals;

static void on_signal(int sig)
{
    (void)sig;
    if (++stop_signals > 1)
        _exit(1); /* a second signal: stop at once */
}

struct app {
    struct dw_config *cfg;
    struct dw_log *log;
    struct dw_metrics *metrics;
    struct dw_producer *producer;
    struct dw_dispatch *dispatch;
    struct dw_consumer *consumer;
    struct dw_http *http;
    struct dw_store *ready_store; /* the readiness thread's own; NULL after a failure */
    struct dw_intake intake;      /* what the poll loop does with records */
};

/* Serves the producer's delivery reports; the consumer takes the offsets
 * they made done. Offsets flow one way: producer to consumer. */
static void serve_deliveries(struct app *app)
{
    dw_producer_poll(app->producer, 0);
    dw_consumer_take_acks(app->consumer);
}

/* Liveness means making progress: the poll loop comes round and the
 * producer has not hit a fatal error (an idempotent producer that did can
 * never deliver again). Kafka or PostgreSQL being away is readiness, not
 * liveness: a restart would not bring them back. Called on the listener's
 * thread: atomics and a thread-safe librdkafka call only. */
static bool live(void *opaque, char *why, size_t whylen)
{
    struct app *app = opaque;
    int64_t age = dw_now_ms() - dw_consumer_heartbeat_ms(app->consumer);
    if (age > LIVENESS_STALL_MS) {
        dw_snprintf(why, whylen, "poll loop stalled for %" PRId64 " ms", age);
        return false;
    }
    char fatal[256];
    if (dw_producer_fatal(app->producer, fatal, sizeof(fatal))) {
        dw_snprintf(why, whylen, "producer fatal error: %s", fatal);
        return false;
    }
    return true;
}

/* A round trip to PostgreSQL within READY_PING_TIMEOUT_MS. The writer's
 * state alone misses a server that hangs while the writer is idle.
 * Readiness thread only (it owns ready_store). */
static bool pg_answers(struct app *app)
{
    if (!app->ready_store) {
        if (dw_store_create(app->cfg->pg_dsn, NULL, &app->ready_store, NULL, 0) != DW_OK)
            return false;
        dw_store_set_timeout(app->ready_store, READY_PING_TIMEOUT_MS);
    }
    if (dw_store_ping(app->ready_store) == DW_OK)
        return true;
    dw_store_destroy(app->ready_store);
    app->ready_store = NULL;
    return false;
}

/* Called on the listener's readiness thread, about once a second. */
static bool ready(void *opaque, char *why, size_t whylen)
{
    struct app *app = opaque;
    if (!app->dispatch || !dw_dispatch_store_ok(app->dispatch) || !pg_answers(app)) {
        dw_snprintf(why, whylen, "PostgreSQL unreachable");
        return false;
    }
    if (!dw_producer_ping(app->producer, 1000)) {
        dw_snprintf(why, whylen, "Kafka unreachable");
        return false;
    }
    return true;
}

/* ---- intake's calls (src/intake.c decides, these act) ---- */

static enum dw_err intake_send_dlq(void *opaque, const struct dw_dlq_record *rec)
{
    struct app *app = opaque;
    return dw_producer_send_dlq(app->producer, rec);
}

static enum dw_err intake_submit(void *opaque, struct dw_request *req, int32_t partition,
                                 int64_t offset)
{
    struct app *app = opaque;
    return dw_dispatch_submit(app->dispatch, req, partition, offset);
}

static void intake_load(void *opaque, struct dw_backpressure_load *out)
{
    struct app *app = opaque;
    *out = (struct dw_backpressure_load){
        .requests = dw_dispatch_in_flight(app->dispatch),
        .bytes = dw_dispatch_in_flight_bytes(app->dispatch),
        .store_ok = dw_dispatch_store_ok(app->dispatch),
        .queue_ratio = dw_dispatch_queue_ratio(app->dispatch),
    };
}

static bool intake_paused(void *opaque)
{
    struct app *app = opaque;
    return dw_consumer_paused(app->consumer);
}

static void intake_set_paused(void *opaque, bool paused)
{
    struct app *app = opaque;
    dw_consumer_set_paused(app->consumer, paused);
}

static void handle_message(struct app *app, rd_kafka_message_t *m)
{
    rd_kafka_timestamp_type_t ts_type;
    struct dw_record rec = {
        .key = m->key,
        .key_len = m->key_len,
        .value = m->payload,
        .value_len = m->len,
        .topic = rd_kafka_topic_name(m->rkt),
        .partition = m->partition,
        .offset = m->offset,
        .timestamp_ms = rd_kafka_message_timestamp(m, &ts_type),
    };
    dw_intake_record(&app->intake, &rec);
}

static void run(struct app *app)
{
    int64_t next_commit = dw_now_ms() + app->cfg->commit_interval_ms;
    while (!stop_signals) {
        rd_kafka_message_t *m = dw_consumer_poll(app->consumer, POLL_MS);
        if (m) {
            handle_message(app, m);
            rd_kafka_message_destroy(m);
        }
        serve_deliveries(app);
        /* Pause while dispatch holds too many requests or bytes, the
         * database is away, or a channel has more jobs waiting than it can
         * start soon; resume with hysteresis. */
        (void)dw_intake_backpressure(&app->intake);
        if (dw_now_ms() >= next_commit) {
            dw_consumer_commit(app->consumer, false);
            next_commit = dw_now_ms() + app->cfg->commit_interval_ms;
        }
    }
}

/* SIGTERM: take nothing new, let in-flight work finish within the drain
 * timeout, commit what is done. Unfinished work stays uncommitted. */
static void drain(struct app *app)
{
    dw_log_info(app->log, "stopping: draining %zu request(s), up to %d ms",
                dw_dispatch_in_flight(app->dispatch), app->cfg->drain_timeout_ms);
    dw_consumer_set_paused(app->consumer, true);
    dw_dispatch_drain(app->dispatch);
    int64_t until = dw_now_ms() + app->cfg->drain_timeout_ms;
    while (dw_now_ms() < until && stop_signals < 2) {
        /* Keep polling: it serves the group's heartbeats and rebalances.
         * A message still arriving is tracked but never finished. */
        rd_kafka_message_t *m = dw_consumer_poll(app->consumer, POLL_MS);
        if (m)
            rd_kafka_message_destroy(m);
        serve_deliveries(app);
        if (dw_dispatch_in_flight(app->dispatch) == 0 &&
            dw_producer_outstanding(app->producer) == 0)
            break;
    }
    size_t left = dw_dispatch_in_flight(app->dispatch);
    if (left)
        dw_log_warn(app->log,
                    "drain timeout: %zu request(s) unfinished, left uncommitted for "
                    "redelivery",
                    left);
    dw_consumer_close(app->consumer);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: distribution-worker [-c FILE] [--check-config] [--version]\n"
                 "  -c, --config FILE   libconfig file (default: built-in defaults and "
                 "the environment)\n"
                 "      --check-config  load and validate the configuration (librdkafka's "
                 "properties included, no broker contacted), then exit\n"
                 "  -V, --version       print the version\n"
                 "Environment variables (DIST_*) override the file: see README.md.\n");
}

/* Connects and migrates, retrying while PostgreSQL is unreachable (when:
 * the store's reconnect policy): a broken dependency is waited for, not
 * skipped. */
static enum dw_err prepare_schema(struct app *app)
{
    struct dw_store *store = dw_store_create_offline(app->cfg->pg_dsn, app->log);
    for (;;) {
        char why[512] = "no connection (see the store's error above)";
        enum dw_err err = dw_store_reconnect(store);
        if (err == DW_OK)
            err = dw_store_migrate(store, why, sizeof(why));
        if (err == DW_OK)
            break;
        dw_log_error(app->log, "PostgreSQL not ready (%s); retrying in %lld ms", why,
                     (long long)(dw_store_retry_at(store) - dw_now_ms()));
        while (dw_now_ms() < dw_store_retry_at(store) && !stop_signals)
            usleep(50 * 1000);
        if (stop_signals) {
            dw_store_destroy(store);
            return DW_ERR_STOPPED;
        }
    }
    dw_store_destroy(store);
    return DW_OK;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    bool check_only = false;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check-config", no_argument, NULL, 'k'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'k':
            check_only = true;
            break;
        case 'V':
            printf("distribution-worker %s\n", DW_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }

    struct app app = {0};
    char errbuf[1024] = "";
    int status = 1;
    if (dw_config_create(config_path, environ, &app.cfg, errbuf, sizeof(errbuf)) != DW_OK) {
        fprintf(stderr, "distribution-worker: configuration error: %s\n", errbuf);
        return 2;
    }
    char plain_why[128] = "";
    bool plain = dw_store_dsn_plaintext_possible(app.cfg->pg_dsn, plain_why, sizeof(plain_why));
    if (check_only) {
        /* The librdkafka properties too: they are checked by librdkafka,
         * as at start-up, with no broker contacted. */
        if (dw_consumer_check_config(app.cfg, errbuf, sizeof(errbuf)) != DW_OK ||
            dw_producer_check_config(app.cfg, errbuf, sizeof(errbuf)) != DW_OK) {
            fprintf(stderr, "distribution-worker: configuration error: %s\n", errbuf);
            dw_config_destroy(app.cfg);
            return 2;
        }
        if (plain)
            fprintf(stderr,
                    "distribution-worker: warning: the PostgreSQL connection may fall back to "
                    "plain text: %s (set postgres.sslmode or DIST_PG_SSLMODE to require or "
                    "verify-full)\n",
                    plain_why);
        printf("configuration OK\n");
        dw_config_destroy(app.cfg);
        return 0;
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    app.log = dw_log_create(STDERR_FILENO, app.cfg->log_level);
    /* Values that must never reach a log line, whatever the message. */
    for (int c = 0; c < DW_CHANNEL_COUNT; c++)
        dw_log_add_secret(app.log, app.cfg->channels[c].token);
    dw_log_add_secret(app.log, app.cfg->kafka_sasl_password);
    /* libpq quotes the bad part of a DSN in its errors: the password must
     * be known as a secret before anything can log them. */
    char **pg_passwords = dw_store_dsn_passwords(app.cfg->pg_dsn);
    for (size_t i = 0; pg_passwords[i]; i++)
        dw_log_add_secret(app.log, pg_passwords[i]);
    dw_store_passwords_free(pg_passwords);
    if (plain)
        dw_log_warn(app.log,
                    "PostgreSQL connection may fall back to plain text: %s (set postgres.sslmode "
                    "or DIST_PG_SSLMODE to require or verify-full)",
                    plain_why);
    /* Once, before any thread starts (libcurl's rule). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        dw_log_error(app.log, "curl_global_init failed");
        goto out;
    }
    app.metrics = dw_metrics_create();
    dw_log_info(app.log, "distribution-worker %s starting; consuming %s as group %s from %s",
                DW_VERSION, app.cfg->request_topic, app.cfg->kafka_group, app.cfg->kafka_brokers);

    if (prepare_schema(&app) != DW_OK) {
        status = 0; /* stopped by a signal while waiting */
        goto out;
    }
    enum dw_err err =
        dw_producer_create(app.cfg, app.log, app.metrics, &app.producer, errbuf, sizeof(errbuf));
    if (err) {
        dw_log_error(app.log, "%s", errbuf);
        status = err == DW_ERR_CONFIG ? 2 : 1;
        goto out;
    }
    struct dw_dispatch_options dopts = {
        .cfg = app.cfg,
        .log = app.log,
        .metrics = app.metrics,
        .producer = app.producer,
    };
    if (dw_dispatch_start(&dopts, &app.dispatch, errbuf, sizeof(errbuf)) != DW_OK) {
        dw_log_error(app.log, "%s", errbuf);
        goto out;
    }
    err = dw_consumer_create(app.cfg, app.log, app.metrics, app.producer, &app.consumer, errbuf,
                             sizeof(errbuf));
    if (err) {
        dw_log_error(app.log, "%s", errbuf);
        status = err == DW_ERR_CONFIG ? 2 : 1;
        goto out;
    }
    app.intake = (struct dw_intake){
        .cfg = app.cfg,
        .log = app.log,
        .metrics = app.metrics,
        .calls = {&app, intake_send_dlq, intake_submit, intake_load, intake_paused,
                  intake_set_paused},
    };
    /* A rebalance should not hold the whole group for long: bounded wait. */
    dw_consumer_set_revoke_wait(app.consumer, app.cfg->drain_timeout_ms < REVOKE_WAIT_MAX_MS
                                                  ? app.cfg->drain_timeout_ms
                                                  : REVOKE_WAIT_MAX_MS);
    if (app.cfg->http_port > 0) {
        struct dw_http_options hopts = {
            .bind_address = app.cfg->http_bind,
            .port = app.cfg->http_port,
            .management_port = app.cfg->http_management_port,
            .pg_dsn = app.cfg->pg_dsn,
            .log = app.log,
            .metrics = app.metrics,
            .live = live,
            .live_opaque = &app,
            .ready = ready,
            .ready_opaque = &app,
            .max_connections = app.cfg->http_max_connections,
            .max_connections_per_client = app.cfg->http_max_connections_per_client,
            .idle_timeout_s = app.cfg->http_idle_timeout_s,
        };
        err = dw_http_start(&hopts, &app.http, errbuf, sizeof(errbuf));
        if (err) {
            dw_log_error(app.log, "%s", errbuf);
            status = err == DW_ERR_CONFIG ? 2 : 1;
            goto out;
        }
    }

    run(&app);
    drain(&app);
    status = 0;

out:
    /* Reverse order of start. The HTTP listener goes first so /readyz
     * stops answering 200 while the rest shuts down. The consumer (closed
     * by drain, which committed what was done) goes before dispatch, whose
     * last completions the producer still flushes: they commit nothing now
     * and are redelivered, as before. */
    dw_http_stop(app.http);
    dw_store_destroy(app.ready_store);
    dw_consumer_destroy(app.consumer);
    dw_dispatch_stop(app.dispatch);
    dw_producer_destroy(app.producer, 5000);
    dw_metrics_destroy(app.metrics);
    if (app.log)
        dw_log_info(app.log, "stopped");
    dw_log_destroy(app.log);
    curl_global_cleanup();
    dw_config_destroy(app.cfg);
    return status;
}
