/*
 * loadgen: the benchmark's load generator and completion reader.
 *
 *   loadgen -b BROKERS [--requests N] [--rate R] [--run-id ID] [--timeout S]
 *           [--stall S] [--request-topic T] [--completed-topic T] [--quiet]
 *           [--warmup S] [--latencies FILE]
 *
 * The producer (main thread) writes N distribution requests of all six
 * channels to the request topic, as fast as librdkafka takes them or at R
 * requests per second, each with a unique eventId of the form
 * "lg-<run>-<index>-<produce time in us>": the produce timestamp travels
 * inside the eventId, and so comes back in the completion's key and body.
 * The reader (its own thread) was assigned every partition of the
 * completed topic at its high watermark before the first request went out,
 * so it sees every completion of this run and nothing older; it matches
 * completions to requests by the index and computes the end-to-end latency
 * (produce call to completion receipt, one monotonic clock).
 *
 * On stderr: a progress line per second. On stdout, at the end, one
 * machine-readable line:
 *   RESULT requests=N completed=N missing=N duplicates=N ok=N partial=N failed=N
 *          other=N delivery_errors=N produce_s=S duration_s=S req_per_s=R
 *          chan_per_s=R p50_ms=.. p95_ms=.. p99_ms=.. max_ms=.. mean_ms=.. cpu_s=..
 *          warm_n=N steady_p50_ms=.. steady_p95_ms=.. steady_p99_ms=..
 * ok/partial/failed count overall statuses (other: anything else);
 * produce_s runs from the first produce call until the broker acknowledged
 * the last request; duration_s from the first produce call to the last
 * completion; chan_per_s is six channel calls per request; cpu_s is
 * loadgen's own CPU time. The steady_ percentiles leave out the warm_n
 * requests produced in the first --warmup seconds (default 0: none): a
 * worker that starts cold finds each channel's concurrency limit in its
 * first second or so, and that start-up is the whole tail of a run at a
 * steady offered rate; the two figures tell it from the steady state.
 * --latencies FILE writes one line per completed request,
 * "produced_s,latency_ms" (produce time from the first produce), for a plot
 * of latency over the run. Exit 0 when every request completed, 1 when some
 * did not within --timeout (after the last produce) or nothing completed
 * for --stall seconds (the first 20 missing eventIds go to stderr), 2 bad
 * usage.
 *
 * Threads: main (producer, progress) and the reader. They share only the
 * atomics of struct shared; the reader owns `seen` and `latency_us` until
 * it is joined.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <librdkafka/rdkafka.h>

#include "dw/event_id.h"

#define MAX_REQUESTS  10000000L
#define MAX_PARTS     1024
#define REQUEST_MAX   2048
#define CHANNELS      6
#define MISSING_SHOWN 20

struct options {
    const char *brokers;
    const char *request_topic;
    const char *completed_topic;
    const char *run_id;
    long requests;
    double rate; /* 0: as fast as possible */
    int timeout_s;
    int stall_s;
    double warmup_s;
    const char *latencies; /* NULL: none written */
    bool quiet;
};

struct shared {
    atomic_long produced;
    atomic_long completed; /* distinct requests completed */
    atomic_long duplicates;
    atomic_long ok, partial, failed, other;
    atomic_long delivery_errors;
    atomic_int_least64_t last_completion_us;
    atomic_bool stop_reader;
};

struct reader {
    const struct options *opts;
    struct shared *sh;
    rd_kafka_t *rk;
    unsigned char *seen;  /* per request index: completions received */
    int64_t *latency_us;  /* per request index: of the first completion */
    int64_t *produced_us; /* per request index: its produce time (mono) */
    char prefix[48];      /* "lg-<run>-" */
    size_t prefix_len;
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_us(int64_t us)
{
    if (us <= 0)
        return;
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void die_usage(const char *msg, const char *arg)
{
    fprintf(stderr, "loadgen: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr,
            "usage: loadgen -b BROKERS [--requests N] [--rate R] [--run-id ID]\n"
            "               [--timeout S] [--stall S] [--request-topic T] [--completed-topic T]\n"
            "               [--quiet] [--warmup S] [--latencies FILE]\n");
    exit(2);
}

static long parse_long(const char *flag, const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        die_usage("not a number in range", flag);
    return v;
}

static double parse_double(const char *flag, const char *s, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < min || v > max)
        die_usage("not a number in range", flag);
    return v;
}

static bool valid_run_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 16)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

/* ---- the request ---- */

static int build_request(char *out, size_t cap, const char *event_id, long index)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char date[32], requested_at[48];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(requested_at, sizeof(requested_at), "%s.%03dZ", date, (int)(now.tv_nsec / 1000000));
    return snprintf(out, cap,
                    "{\"eventId\":\"%s\","
                    "\"title\":\"Benchmark event %ld: 20%% off all coffee\","
                    "\"content\":\"Visit us this weekend. Fresh beans, new menu, live music on "
                    "Saturday evening.\","
                    "\"imageUrl\":\"https://cdn.example.com/bench/%ld.png\","
                    "\"channels\":[\"URIDONGNETV\",\"GINITV\",\"RINGOBIZ\",\"INSTAGRAM\","
                    "\"NAVER\",\"KAKAO\"],"
                    "\"channelSettings\":{\"URIDONGNETV\":{\"radius\":\"1km\"},"
                    "\"GINITV\":{\"region\":\"Seoul/Gangnam\"},"
                    "\"RINGOBIZ\":{\"phoneNumber\":\"02-1234-5678\"}},"
                    "\"requestedAt\":\"%s\"}",
                    event_id, index, index, requested_at);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct shared *sh = opaque;
    if (m->err) {
        if (atomic_fetch_add(&sh->delivery_errors, 1) < 5)
            fprintf(stderr, "loadgen: delivery failed: %s\n", rd_kafka_err2str(m->err));
    }
}

/* ---- the reader ---- */

/* Parses "<index>-<produce us>" after the run prefix; false if not ours. */
static bool parse_event_id(const struct reader *rd, const char *key, size_t len, long *index,
                           int64_t *produced_us)
{
    if (len <= rd->prefix_len || len > DW_EVENT_ID_MAX ||
        memcmp(key, rd->prefix, rd->prefix_len) != 0)
        return false;
    char buf[DW_EVENT_ID_MAX + 1];
    memcpy(buf, key + rd->prefix_len, len - rd->prefix_len);
    buf[len - rd->prefix_len] = '\0';
    char *end;
    errno = 0;
    long i = strtol(buf, &end, 10);
    if (errno || end == buf || *end != '-' || i < 0 || i >= rd->opts->requests)
        return false;
    char *ts = end + 1;
    long long us = strtoll(ts, &end, 10);
    if (errno || end == ts || *end)
        return false;
    *index = i;
    *produced_us = (int64_t)us;
    return true;
}

static void count_status(struct shared *sh, const void *value, size_t len)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *doc = json_tokener_parse_ex(tok, value, (int)len);
    json_tokener_free(tok);
    struct json_object *st = NULL;
    const char *s =
        doc && json_object_object_get_ex(doc, "status", &st) ? json_object_get_string(st) : "";
    if (strcmp(s, "COMPLETED") == 0)
        atomic_fetch_add(&sh->ok, 1);
    else if (strcmp(s, "PARTIAL_FAILURE") == 0)
        atomic_fetch_add(&sh->partial, 1);
    else if (strcmp(s, "FAILED") == 0)
        atomic_fetch_add(&sh->failed, 1);
    else
        atomic_fetch_add(&sh->other, 1);
    json_object_put(doc);
}

static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    struct shared *sh = rd->sh;
    while (!atomic_load(&sh->stop_reader)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rd->rk, 50);
        if (!m)
            continue;
        int64_t now = mono_us();
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "loadgen: consume: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        long index;
        int64_t produced_us;
        if (m->key && parse_event_id(rd, m->key, m->key_len, &index, &produced_us)) {
            if (rd->seen[index]++ == 0) {
                rd->latency_us[index] = now - produced_us;
                rd->produced_us[index] = produced_us;
                count_status(sh, m->payload, m->len);
                atomic_store(&sh->last_completion_us, now);
                atomic_fetch_add(&sh->completed, 1);
            } else {
                atomic_fetch_add(&sh->duplicates, 1);
            }
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

/* Assigns every partition of the completed topic at its high watermark. */
static int assign_at_end(rd_kafka_t *rk, const char *topic)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int tries = 0; tries < 50; tries++) {
        err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
        if (!err && md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0)
            break;
        if (!err)
            rd_kafka_metadata_destroy(md);
        md = NULL;
        sleep_us(100000);
    }
    rd_kafka_topic_destroy(rkt);
    if (!md) {
        fprintf(stderr, "loadgen: no metadata for %s: %s\n", topic, rd_kafka_err2str(err));
        return -1;
    }
    int parts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    if (parts > MAX_PARTS)
        parts = MAX_PARTS;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++) {
        int64_t lo = 0, hi = 0;
        err = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000);
        if (err) {
            fprintf(stderr, "loadgen: watermarks of %s/%d: %s\n", topic, p, rd_kafka_err2str(err));
            rd_kafka_topic_partition_list_destroy(list);
            return -1;
        }
        rd_kafka_topic_partition_list_add(list, topic, p)->offset = hi;
    }
    err = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (err) {
        fprintf(stderr, "loadgen: assign: %s\n", rd_kafka_err2str(err));
        return -1;
    }
    return parts;
}

static void warm_up(rd_kafka_t *prod, const char *topic)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(prod, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(prod, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
}

static rd_kafka_t *new_client(rd_kafka_type_t type, const char *brokers, const char *const *props,
                              size_t nprops, struct shared *sh)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)))
        goto bad;
    for (size_t i = 0; i < nprops; i += 2)
        if (rd_kafka_conf_set(conf, props[i], props[i + 1], errstr, sizeof(errstr)))
            goto bad;
    if (type == RD_KAFKA_PRODUCER) {
        rd_kafka_conf_set_opaque(conf, sh);
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (rk)
        return rk;
    fprintf(stderr, "loadgen: %s\n", errstr);
    return NULL;
bad:
    fprintf(stderr, "loadgen: %s\n", errstr);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* ---- the summary ---- */

static double own_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values, in ms. */
static double pct_ms(const int64_t *sorted, long n, double p)
{
    if (n == 0)
        return 0;
    long rank = (long)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1000.0;
}

static void progress(const struct shared *sh, long total, int64_t t0)
{
    long produced = atomic_load(&sh->produced), done = atomic_load(&sh->completed);
    fprintf(stderr, "loadgen: %6.1fs produced %ld/%ld completed %ld in flight %ld\n",
            (double)(mono_us() - t0) / 1e6, produced, total, done, produced - done);
}

int main(int argc, char **argv)
{
    struct options o = {
        .brokers = "localhost:9092",
        .request_topic = "distribution-requests",
        .completed_topic = "distribution-completed",
        .run_id = NULL,
        .requests = 1000,
        .rate = 0,
        .timeout_s = 120,
        .stall_s = 30,
    };
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"requests", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'r'},
        {"run-id", required_argument, NULL, 'i'},
        {"timeout", required_argument, NULL, 'T'},
        {"stall", required_argument, NULL, 'S'},
        {"request-topic", required_argument, NULL, 't'},
        {"completed-topic", required_argument, NULL, 'c'},
        {"quiet", no_argument, NULL, 'q'},
        {"warmup", required_argument, NULL, 'w'},
        {"latencies", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "b:n:r:i:T:S:t:c:qw:L:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            o.brokers = optarg;
            break;
        case 'n':
            o.requests = parse_long("--requests", optarg, 1, MAX_REQUESTS);
            break;
        case 'r':
            o.rate = parse_double("--rate", optarg, 0, 1e7);
            break;
        case 'i':
            if (!valid_run_id(optarg))
                die_usage("--run-id must be 1 to 16 letters or digits", optarg);
            o.run_id = optarg;
            break;
        case 'T':
            o.timeout_s = (int)parse_long("--timeout", optarg, 1, 86400);
            break;
        case 'S':
            o.stall_s = (int)parse_long("--stall", optarg, 1, 86400);
            break;
        case 't':
            o.request_topic = optarg;
            break;
        case 'c':
            o.completed_topic = optarg;
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'w':
            o.warmup_s = parse_double("--warmup", optarg, 0, 86400);
            break;
        case 'L':
            o.latencies = optarg;
            break;
        case 'h':
            die_usage("help", NULL);
            break;
        default:
            die_usage("bad option", NULL);
        }
    }
    char run_buf[24];
    if (!o.run_id) {
        snprintf(run_buf, sizeof(run_buf), "%lx",
                 (unsigned long)time(NULL) ^ (unsigned long)getpid());
        o.run_id = run_buf;
    }

    static struct shared sh; /* zero: the atomics start at 0 */
    struct reader rd = {.opts = &o, .sh = &sh};
    rd.prefix_len = (size_t)snprintf(rd.prefix, sizeof(rd.prefix), "lg-%s-", o.run_id);
    rd.seen = calloc((size_t)o.requests, 1);
    rd.latency_us = calloc((size_t)o.requests, sizeof(*rd.latency_us));
    rd.produced_us = calloc((size_t)o.requests, sizeof(*rd.produced_us));
    if (!rd.seen || !rd.latency_us || !rd.produced_us) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }

    /* The mock cluster holds an empty fetch for the whole fetch.wait.max.ms. */
    static const char *const consumer_props[] = {
        "group.id",
        "loadgen-reader",
        "enable.auto.commit",
        "false",
        "fetch.wait.max.ms",
        "10",
        "enable.partition.eof",
        "false",
        "log_level",
        "3",
    };
    static const char *const producer_props[] = {
        "linger.ms",
        "2",
        "batch.num.messages",
        "10000",
        "queue.buffering.max.messages",
        "1000000",
        "queue.buffering.max.kbytes",
        "1048576",
        "enable.idempotence",
        "true",
        "log_level",
        "3",
    };
    rd.rk = new_client(RD_KAFKA_CONSUMER, o.brokers, consumer_props,
                       sizeof(consumer_props) / sizeof(*consumer_props), &sh);
    rd_kafka_t *prod = new_client(RD_KAFKA_PRODUCER, o.brokers, producer_props,
                                  sizeof(producer_props) / sizeof(*producer_props), &sh);
    if (!rd.rk || !prod)
        return 1;
    rd_kafka_poll_set_consumer(rd.rk);
    int parts = assign_at_end(rd.rk, o.completed_topic);
    if (parts < 0)
        return 1;
    pthread_t reader_thread;
    if (pthread_create(&reader_thread, NULL, reader_main, &rd) != 0) {
        fprintf(stderr, "loadgen: could not start the reader\n");
        return 1;
    }
    /* Warm the producer up (connections, the request topic's metadata)
     * and let the reader's fetchers start at the assigned offsets, so the
     * first requests do not pay for client start-up. */
    warm_up(prod, o.request_topic);
    sleep_us(200000);
    if (!o.quiet) {
        char pace[48] = "as fast as possible";
        if (o.rate > 0)
            snprintf(pace, sizeof(pace), "at %.0f/s", o.rate);
        fprintf(stderr, "loadgen: run %s: %ld requests %s, reading %d partition(s) of %s\n",
                o.run_id, o.requests, pace, parts, o.completed_topic);
    }

    int64_t t0 = mono_us(), next_progress = t0 + 1000000;
    char event_id[128], value[REQUEST_MAX];
    for (long i = 0; i < o.requests; i++) {
        if (o.rate > 0) {
            /* Due time of request i, so no drift; produce any backlog at once. */
            int64_t due = t0 + (int64_t)((double)i * 1e6 / o.rate);
            int64_t now = mono_us();
            if (due > now) {
                rd_kafka_poll(prod, 0);
                sleep_us(due - now);
            }
        }
        int64_t now = mono_us();
        snprintf(event_id, sizeof(event_id), "%s%ld-%" PRId64, rd.prefix, i, now);
        int len = build_request(value, sizeof(value), event_id, i);
        rd_kafka_resp_err_t err =
            rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(o.request_topic),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY | RD_KAFKA_MSG_F_BLOCK),
                              RD_KAFKA_V_KEY(event_id, strlen(event_id)),
                              RD_KAFKA_V_VALUE(value, (size_t)len), RD_KAFKA_V_END);
        if (err) {
            fprintf(stderr, "loadgen: produce: %s\n", rd_kafka_err2str(err));
            return 1;
        }
        atomic_fetch_add(&sh.produced, 1);
        if ((i & 255) == 0)
            rd_kafka_poll(prod, 0);
        if (!o.quiet && now >= next_progress) {
            progress(&sh, o.requests, t0);
            next_progress += 1000000;
        }
    }
    /* Produced means acknowledged by the broker. */
    rd_kafka_flush(prod, 60000);
    int64_t t_produced = mono_us();

    /* Wait for the completions: until all are in, the timeout passes, or
     * nothing has completed for stall_s seconds. */
    int64_t deadline = t_produced + (int64_t)o.timeout_s * 1000000;
    long last_done = -1;
    int64_t last_change = mono_us();
    const char *why_stopped = NULL;
    for (;;) {
        long done = atomic_load(&sh.completed);
        int64_t now = mono_us();
        if (done >= o.requests)
            break;
        if (done != last_done) {
            last_done = done;
            last_change = now;
        }
        if (now >= deadline) {
            why_stopped = "timeout";
            break;
        }
        if (now - last_change >= (int64_t)o.stall_s * 1000000) {
            why_stopped = "stalled (no completion for --stall seconds)";
            break;
        }
        if (!o.quiet && now >= next_progress) {
            progress(&sh, o.requests, t0);
            next_progress += 1000000;
        }
        rd_kafka_poll(prod, 0);
        sleep_us(5000);
    }
    /* A short grace period to notice duplicates of the last completions. */
    sleep_us(why_stopped ? 0 : 100000);
    atomic_store(&sh.stop_reader, true);
    pthread_join(reader_thread, NULL);
    if (!o.quiet)
        progress(&sh, o.requests, t0);

    long completed = atomic_load(&sh.completed);
    long missing = o.requests - completed;
    if (missing > 0) {
        fprintf(stderr, "loadgen: %s: %ld of %ld request(s) never completed; first ones:\n",
                why_stopped ? why_stopped : "incomplete", missing, o.requests);
        int shown = 0;
        for (long i = 0; i < o.requests && shown < MISSING_SHOWN; i++) {
            if (!rd.seen[i]) {
                fprintf(stderr, "  index %ld (eventId %s%ld-...)\n", i, rd.prefix, i);
                shown++;
            }
        }
    }

    /* All completed requests' latencies, then those produced after the
     * warm-up (steady); each sorted for its percentiles. */
    int64_t *lat = malloc(sizeof(*lat) * (size_t)(completed ? completed : 1));
    int64_t *steady = malloc(sizeof(*steady) * (size_t)(completed ? completed : 1));
    FILE *lf = o.latencies ? fopen(o.latencies, "w") : NULL;
    if (o.latencies && !lf)
        fprintf(stderr, "loadgen: %s: %s\n", o.latencies, strerror(errno));
    long n = 0, ns = 0;
    double sum = 0;
    int64_t warm_end = t0 + (int64_t)(o.warmup_s * 1e6);
    for (long i = 0; i < o.requests; i++) {
        if (!rd.seen[i])
            continue;
        lat[n++] = rd.latency_us[i];
        sum += (double)rd.latency_us[i];
        if (rd.produced_us[i] >= warm_end)
            steady[ns++] = rd.latency_us[i];
        if (lf)
            fprintf(lf, "%.3f,%.1f\n", (double)(rd.produced_us[i] - t0) / 1e6,
                    (double)rd.latency_us[i] / 1000.0);
    }
    if (lf)
        fclose(lf);
    qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
    qsort(steady, (size_t)ns, sizeof(*steady), cmp_i64);
    int64_t t_last = atomic_load(&sh.last_completion_us);
    double duration = completed ? (double)(t_last - t0) / 1e6 : 0;
    double rps = duration > 0 ? (double)completed / duration : 0;
    printf("RESULT requests=%ld completed=%ld missing=%ld duplicates=%ld ok=%ld partial=%ld "
           "failed=%ld other=%ld delivery_errors=%ld produce_s=%.3f duration_s=%.3f "
           "req_per_s=%.1f chan_per_s=%.1f p50_ms=%.1f p95_ms=%.1f p99_ms=%.1f max_ms=%.1f "
           "mean_ms=%.1f cpu_s=%.2f warm_n=%ld steady_p50_ms=%.1f steady_p95_ms=%.1f "
           "steady_p99_ms=%.1f\n",
           o.requests, completed, missing, atomic_load(&sh.duplicates), atomic_load(&sh.ok),
           atomic_load(&sh.partial), atomic_load(&sh.failed), atomic_load(&sh.other),
           atomic_load(&sh.delivery_errors), (double)(t_produced - t0) / 1e6, duration, rps,
           rps * CHANNELS, pct_ms(lat, n, 50), pct_ms(lat, n, 95), pct_ms(lat, n, 99),
           n ? (double)lat[n - 1] / 1000.0 : 0, n ? sum / (double)n / 1000.0 : 0, own_cpu_s(),
           n - ns, pct_ms(steady, ns, 50), pct_ms(steady, ns, 95), pct_ms(steady, ns, 99));
    fflush(stdout);

    free(lat);
    free(steady);
    free(rd.produced_us);
    free(rd.seen);
    free(rd.latency_us);
    rd_kafka_consumer_close(rd.rk);
    rd_kafka_destroy(rd.rk);
    rd_kafka_destroy(prod);
    return missing > 0 ? 1 : 0;
}
