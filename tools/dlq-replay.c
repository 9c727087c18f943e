/*
 * dlq-replay: sends dead-lettered requests back to the request topic, only
 * the ones chosen and only those that pass the worker's own validation now
 * (docs/operations.md, section 7).
 *
 *   dlq-replay -b BROKERS [-X name=value]... [--dlq TOPIC] [--to TOPIC]
 *              [--code CODE]... [--ids FILE] [--partition N] [--from OFFSET]
 *              [--until OFFSET] [--dry-run]
 *
 * It reads the DLQ from its start (or --from) to the end it has when the
 * run begins, never waiting for more. A record is chosen when it matches
 * every filter given: its x-error-code header is one of the --code values,
 * its eventId is a line of the --ids file, it lies in --partition and
 * between --from and --until (inclusive). A chosen record is decoded with
 * dw_request_decode, the worker's validation: one that still breaks a rule
 * is skipped with its reason (it would only come back to the DLQ); one that
 * passes is produced to the request topic with its value unchanged, byte
 * for byte (a JSON document written over several lines stays one record),
 * keyed by its original key (or its eventId when it had none), with a
 * header x-replayed-from: <dlq topic>/<partition>/<offset>.
 *
 * One line per chosen record on stdout (partition, offset, eventId, what
 * happened), a summary on stderr. SASL credentials can come from
 * DIST_KAFKA_SASL_USERNAME / DIST_KAFKA_SASL_PASSWORD (the worker's
 * variables), so a connection string need not be on the command line.
 * Exit 0: done; 1: a record could not be sent or the DLQ not read; 2: bad
 * arguments.
 *
 * --dlq may name the request topic itself, with --ids, to re-send chosen
 * requests for a re-drive (docs/operations.md, section 6); it reads only up
 * to the end it found, so what it sends is not read again.
 *
 * Threads: main only (librdkafka runs its own).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <librdkafka/rdkafka.h>

#include "dw/common.h"
#include "dw/request.h"

#define MAX_CODES  8
#define MAX_IDS    100000
#define WAIT_MS    30000
#define ANY_OFFSET -1

struct options {
    const char *brokers;
    const char *dlq;
    const char *to;
    const char *codes[MAX_CODES];
    int code_count;
    char **ids; /* sorted, for bsearch; NULL: any */
    size_t id_count;
    int32_t partition; /* -1: any */
    int64_t from, until;
    bool dry_run;
    const char *props[64];
    int prop_count;
};

struct tally {
    int read, chosen, sent, invalid, failed;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dlq-replay -b BROKERS [-X name=value]... [--dlq TOPIC] [--to TOPIC]\n"
            "                  [--code CODE]... [--ids FILE] [--partition N] [--from OFFSET]\n"
            "                  [--until OFFSET] [--dry-run]\n"
            "Re-sends the chosen DLQ records that pass validation now, unchanged, keyed as\n"
            "before. Defaults: --dlq distribution-requests.dlq, --to distribution-requests.\n");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One eventId a line; blank lines and surrounding white space ignored. */
static bool read_ids(const char *path, struct options *o)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "dlq-replay: --ids %s: %s\n", path, strerror(errno));
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    o->ids = dw_xcalloc(MAX_IDS, sizeof(*o->ids));
    while ((len = getline(&line, &cap, f)) > 0) {
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t n = strcspn(s, " \t\r\n");
        if (n == 0)
            continue;
        if (o->id_count == MAX_IDS) {
            fprintf(stderr, "dlq-replay: --ids %s: more than %d ids\n", path, MAX_IDS);
            free(line);
            fclose(f);
            return false;
        }
        o->ids[o->id_count++] = dw_xstrndup(s, n);
    }
    free(line);
    fclose(f);
    qsort(o->ids, o->id_count, sizeof(*o->ids), cmp_str);
    return true;
}

static bool parse_offset(const char *flag, const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "dlq-replay: %s: '%s' is not an offset\n", flag, s);
        return false;
    }
    *out = v;
    return true;
}

/* The value of header name of m as a new string, or NULL. */
static char *header(const rd_kafka_message_t *m, const char *name)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *v = NULL;
    size_t len = 0;
    if (rd_kafka_message_headers(m, &hdrs) || rd_kafka_header_get_last(hdrs, name, &v, &len))
        return NULL;
    return v ? dw_xstrndup(v, len) : NULL;
}

/* The eventId of a value that is a JSON object with a string eventId, or
 * NULL (also for a value that is not JSON at all). Caller frees. */
static char *event_id_of(const rd_kafka_message_t *m)
{
    if (!m->payload || m->len == 0 || m->len > DW_REQUEST_MAX_BYTES)
        return NULL;
    struct json_tokener *tok = json_tokener_new();
    struct json_object *doc = json_tokener_parse_ex(tok, m->payload, (int)m->len);
    json_tokener_free(tok);
    struct json_object *id;
    char *out = NULL;
    if (doc && json_object_object_get_ex(doc, "eventId", &id) &&
        json_object_is_type(id, json_type_string))
        out = dw_xstrdup(json_object_get_string(id));
    json_object_put(doc);
    return out;
}

static bool chosen(const struct options *o, const rd_kafka_message_t *m, const char *code,
                   const char *event_id)
{
    if (o->partition >= 0 && m->partition != o->partition)
        return false;
    if (o->from != ANY_OFFSET && m->offset < o->from)
        return false;
    if (o->until != ANY_OFFSET && m->offset > o->until)
        return false;
    if (o->code_count > 0) {
        bool match = false;
        for (int i = 0; i < o->code_count && !match; i++)
            match = code && strcmp(code, o->codes[i]) == 0;
        if (!match)
            return false;
    }
    if (o->ids)
        return event_id && bsearch(&event_id, o->ids, o->id_count, sizeof(*o->ids), cmp_str);
    return true;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct tally *t = opaque;
    if (m->err) {
        fprintf(stderr, "dlq-replay: delivery of the record from offset %" PRId64 " failed: %s\n",
                (int64_t)(intptr_t)m->_private, rd_kafka_err2str(m->err));
        t->failed++;
        t->sent--;
    }
}

/* A client configuration: brokers, -X properties, the SASL variables. */
static rd_kafka_conf_t *client_conf(const struct options *o)
{
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *user = getenv("DIST_KAFKA_SASL_USERNAME");
    const char *pass = getenv("DIST_KAFKA_SASL_PASSWORD");
    bool ok = rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, why, sizeof(why)) == 0;
    for (int i = 0; ok && i < o->prop_count; i++) {
        char *name = dw_xstrdup(o->props[i]);
        char *eq = strchr(name, '=');
        if (!eq || eq == name) {
            snprintf(why, sizeof(why), "-X %s: expected name=value", o->props[i]);
            ok = false;
        } else {
            *eq = '\0';
            ok = rd_kafka_conf_set(conf, name, eq + 1, why, sizeof(why)) == 0;
        }
        free(name);
    }
    if (ok && user && *user)
        ok = rd_kafka_conf_set(conf, "sasl.username", user, why, sizeof(why)) == 0;
    if (ok && pass && *pass)
        ok = rd_kafka_conf_set(conf, "sasl.password", pass, why, sizeof(why)) == 0;
    if (!ok) {
        fprintf(stderr, "dlq-replay: %s\n", why);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

/* Assigns every partition of the DLQ (or --partition) from its start, or
 * --from, and fills end[] with each one's end offset now. Returns the
 * number of partitions still to read, or -1. */
static int assign_dlq(rd_kafka_t *rk, const struct options *o, int64_t *end, int max)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->dlq, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, WAIT_MS);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "dlq-replay: no metadata for %s: %s\n", o->dlq,
                rd_kafka_err2str(err ? err : md->topics[0].err));
        if (md)
            rd_kafka_metadata_destroy(md);
        return -1;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
    int open = 0;
    for (int i = 0; i < md->topics[0].partition_cnt && i < max; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        int64_t low = 0, high = 0;
        end[p] = -1;
        if (o->partition >= 0 && p != o->partition)
            continue;
        err = rd_kafka_query_watermark_offsets(rk, o->dlq, p, &low, &high, WAIT_MS);
        if (err) {
            fprintf(stderr, "dlq-replay: offsets of %s/%d: %s\n", o->dlq, (int)p,
                    rd_kafka_err2str(err));
            open = -1;
            break;
        }
        int64_t start = o->from != ANY_OFFSET && o->from > low ? o->from : low;
        if (start >= high)
            continue; /* nothing to read there */
        end[p] = high;
        rd_kafka_topic_partition_list_add(parts, o->dlq, p)->offset = start;
        open++;
    }
    rd_kafka_metadata_destroy(md);
    if (open > 0)
        rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return open;
}

static void replay_one(rd_kafka_t *producer, const struct options *o, rd_kafka_message_t *m,
                       struct tally *t)
{
    char *code = header(m, "x-error-code");
    char *event_id = event_id_of(m);
    struct dw_request *req = NULL;
    char why[512] = "";
    if (!chosen(o, m, code, event_id))
        goto out;
    t->chosen++;
    enum dw_dlq_code now = dw_request_decode(m->payload, m->len, &req, why, sizeof(why));
    printf("%s/%" PRId32 "/%" PRId64 " %s (%s): ", o->dlq, m->partition, m->offset,
           event_id ? event_id : "-", code ? code : "no code");
    if (now != DW_DLQ_NONE) {
        printf("skipped, still %s: %s\n", dw_dlq_name(now), why);
        t->invalid++;
        goto out;
    }
    const void *key = m->key_len ? m->key : req->event_id;
    size_t key_len = m->key_len ? m->key_len : strlen(req->event_id);
    if (o->dry_run) {
        printf("would be sent to %s\n", o->to);
        t->sent++;
        goto out;
    }
    char from[512];
    snprintf(from, sizeof(from), "%s/%" PRId32 "/%" PRId64, o->dlq, m->partition, m->offset);
    rd_kafka_resp_err_t err =
        rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(o->to),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY | RD_KAFKA_MSG_F_BLOCK),
                          RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
                          RD_KAFKA_V_HEADER("x-replayed-from", from, -1),
                          RD_KAFKA_V_OPAQUE((void *)(intptr_t)m->offset), RD_KAFKA_V_END);
    if (err) {
        printf("not sent: %s\n", rd_kafka_err2str(err));
        t->failed++;
    } else {
        printf("sent to %s\n", o->to);
        t->sent++;
    }
    rd_kafka_poll(producer, 0);
out:
    dw_request_destroy(req);
    free(code);
    free(event_id);
}

static int run(const struct options *o)
{
    struct tally t = {0};
    char why[512];
    int status = 1;
    rd_kafka_t *consumer = NULL, *producer = NULL;
    int64_t end[1024];

    rd_kafka_conf_t *conf = client_conf(o);
    if (!conf)
        return 2;
    /* Reads by assignment: the group is never joined nor committed to. */
    if (rd_kafka_conf_set(conf, "group.id", "dlq-replay", why, sizeof(why)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof(why)) ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", why, sizeof(why)) ||
        !(consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why)))) {
        fprintf(stderr, "dlq-replay: consumer: %s\n", why);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    if (!(conf = client_conf(o)))
        goto out;
    rd_kafka_conf_set_opaque(conf, &t);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if (rd_kafka_conf_set(conf, "enable.idempotence", "true", why, sizeof(why)) ||
        !(producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why)))) {
        fprintf(stderr, "dlq-replay: producer: %s\n", why);
        rd_kafka_conf_destroy(conf);
        goto out;
    }

    int open = assign_dlq(consumer, o, end, (int)DW_ARRAY_LEN(end));
    if (open < 0)
        goto out;
    int64_t idle_since = dw_now_ms();
    while (open > 0) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 200);
        if (!m) {
            if (dw_now_ms() - idle_since > WAIT_MS) {
                fprintf(stderr, "dlq-replay: nothing from %s for %d s; stopping\n", o->dlq,
                        WAIT_MS / 1000);
                goto out;
            }
            continue;
        }
        idle_since = dw_now_ms();
        int32_t p = m->partition;
        bool last = false;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            last = true;
        } else if (m->err) {
            fprintf(stderr, "dlq-replay: reading %s: %s\n", o->dlq, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            goto out;
        } else if (p >= 0 && p < (int32_t)DW_ARRAY_LEN(end) && end[p] >= 0 && m->offset < end[p]) {
            t.read++;
            replay_one(producer, o, m, &t);
            last = m->offset + 1 >= end[p];
        }
        if (last && p >= 0 && p < (int32_t)DW_ARRAY_LEN(end) && end[p] >= 0) {
            end[p] = -1; /* done: later records are not this run's */
            open--;
        }
        rd_kafka_message_destroy(m);
    }
    status = 0;
out:
    if (producer) {
        rd_kafka_flush(producer, WAIT_MS);
        if (rd_kafka_outq_len(producer) > 0) {
            fprintf(stderr, "dlq-replay: %d record(s) not acknowledged\n",
                    rd_kafka_outq_len(producer));
            t.failed += rd_kafka_outq_len(producer);
        }
        rd_kafka_destroy(producer);
    }
    if (consumer) {
        rd_kafka_consumer_close(consumer);
        rd_kafka_destroy(consumer);
    }
    fprintf(stderr, "dlq-replay: %d read, %d chosen, %d %s, %d still invalid, %d failed\n", t.read,
            t.chosen, t.sent, o->dry_run ? "would be sent" : "sent", t.invalid, t.failed);
    return t.failed ? 1 : status;
}

int main(int argc, char **argv)
{
    struct options o = {.brokers = NULL,
                        .dlq = "distribution-requests.dlq",
                        .to = "distribution-requests",
                        .partition = -1,
                        .from = ANY_OFFSET,
                        .until = ANY_OFFSET};
    static const struct option longs[] = {{"dlq", required_argument, NULL, 'd'},
                                          {"to", required_argument, NULL, 't'},
                                          {"code", required_argument, NULL, 'c'},
                                          {"ids", required_argument, NULL, 'i'},
                                          {"partition", required_argument, NULL, 'p'},
                                          {"from", required_argument, NULL, 'f'},
                                          {"until", required_argument, NULL, 'u'},
                                          {"dry-run", no_argument, NULL, 'n'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    const char *ids = NULL;
    int c, status = 2;
    int64_t partition;
    while ((c = getopt_long(argc, argv, "b:X:h", longs, NULL)) != -1) {
        switch (c) {
        case 'b':
            o.brokers = optarg;
            break;
        case 'X':
            if (o.prop_count == (int)DW_ARRAY_LEN(o.props)) {
                fprintf(stderr, "dlq-replay: too many -X\n");
                return 2;
            }
            o.props[o.prop_count++] = optarg;
            break;
        case 'd':
            o.dlq = optarg;
            break;
        case 't':
            o.to = optarg;
            break;
        case 'c':
            if (o.code_count == MAX_CODES) {
                fprintf(stderr, "dlq-replay: too many --code\n");
                return 2;
            }
            o.codes[o.code_count++] = optarg;
            break;
        case 'i':
            ids = optarg;
            break;
        case 'p':
            if (!parse_offset("--partition", optarg, &partition) || partition > INT32_MAX)
                return 2;
            o.partition = (int32_t)partition;
            break;
        case 'f':
            if (!parse_offset("--from", optarg, &o.from))
                return 2;
            break;
        case 'u':
            if (!parse_offset("--until", optarg, &o.until))
                return 2;
            break;
        case 'n':
            o.dry_run = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!o.brokers || optind < argc) {
        usage(stderr);
        return 2;
    }
    if ((o.from != ANY_OFFSET || o.until != ANY_OFFSET) && o.partition < 0) {
        fprintf(stderr, "dlq-replay: --from and --until need --partition (offsets are per "
                        "partition)\n");
        return 2;
    }
    /* Re-sending chosen requests of the request topic itself (a re-drive)
     * is fine; the whole of a topic into itself is a mistake. */
    if (strcmp(o.dlq, o.to) == 0 && !ids) {
        fprintf(stderr, "dlq-replay: --to is the topic read (--dlq): give --ids to choose what "
                        "to re-send\n");
        return 2;
    }
    for (int i = 0; i < o.code_count; i++) {
        static const char *const known[] = {"INVALID_JSON", "TOO_LARGE", "INVALID_EVENT_ID",
                                            "INVALID_FIELD", "INVALID_CHANNELS"};
        bool ok = false;
        for (size_t k = 0; k < DW_ARRAY_LEN(known) && !ok; k++)
            ok = strcmp(o.codes[i], known[k]) == 0;
        if (!ok) {
            fprintf(stderr,
                    "dlq-replay: --code %s: not a DLQ code (INVALID_JSON, TOO_LARGE, "
                    "INVALID_EVENT_ID, INVALID_FIELD, INVALID_CHANNELS)\n",
                    o.codes[i]);
            return 2;
        }
    }
    if (ids && !read_ids(ids, &o))
        goto out;
    status = run(&o);
out:
    for (size_t i = 0; i < o.id_count; i++)
        free(o.ids[i]);
    free(o.ids);
    return status;
}
