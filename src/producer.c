/*
 * The producer of completion and DLQ records.
 *
 * Every record's opaque is a `struct record` holding a copy of key, value
 * and headers plus the partition/offset of the request it finishes, so a
 * record the broker refuses can be produced again from the delivery report
 * (kcat frees its per-message buffer in dr_msg_cb; we do the same once the
 * broker has acknowledged). The producer is idempotent, so librdkafka's own
 * retries neither duplicate nor reorder.
 *
 * A permanent error (the record itself is refused: too large, invalid) is
 * final: logged, counted, and the request counts as done, so one bad record
 * cannot hold its partition's commits forever. A DLQ value that cannot fit
 * under message.max.bytes is truncated to fit, with a header saying so.
 *
 * A request is done once its record is acknowledged (or refused for good):
 * its offset goes on `acks`, which the consumer takes
 * (dw_producer_take_acks). The producer knows nothing of the consumer, so
 * offsets flow one way: consumer -> dispatch -> producer -> consumer's
 * commit tracker, pulled by the consumer.
 *
 * Threads: produce calls from any thread (librdkafka is thread-safe);
 * delivery reports on whoever calls dw_producer_poll. Records whose
 * re-produce failed wait in `retry`, and `acks` grows, touched only by the
 * polling thread. Records refused for good when produced (on any thread)
 * wait in `finished` (under `finished_lock`) until the polling thread
 * reports them done.
 */
#include "dw/producer.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "dw/kafka_conf.h"
#include "dw/list.h"

enum record_kind { RECORD_COMPLETION, RECORD_DLQ };

/* Room left in a DLQ record for what is not key, value or our headers: the
 * record's own framing in a batch and the truncation header. */
#define DLQ_SLACK_BYTES 1024

struct record {
    struct dw_list_node node; /* in the retry or the finished list */
    enum record_kind kind;
    char *topic;
    void *key;
    size_t key_len;
    void *value;
    size_t value_len;
    rd_kafka_headers_t *headers; /* DLQ only; our copy, never handed over */
    int32_t partition;           /* of the request this finishes */
    int64_t offset;
    rd_kafka_resp_err_t produce_err; /* why it waits in `finished` */
};

struct dw_producer {
    rd_kafka_t *rk;
    struct dw_log *log;
    struct dw_metrics *metrics;
    struct dw_list retry; /* poll thread only */
    struct dw_ack *acks;  /* poll thread only: done, not yet taken */
    size_t ack_count;
    size_t ack_cap;
    char *completed_topic;
    char *dlq_topic;
    size_t max_message_bytes; /* the producer's message.max.bytes */
    bool closing;             /* failed reports free, never resend */
    pthread_mutex_t finished_lock;
    struct dw_list finished; /* refused for good on produce; poll thread reports them */
};

static void record_free(struct record *r)
{
    if (!r)
        return;
    free(r->topic);
    free(r->key);
    free(r->value);
    if (r->headers)
        rd_kafka_headers_destroy(r->headers);
    free(r);
}

static rd_kafka_resp_err_t produce(struct dw_producer *p, struct record *r, bool block)
{
    rd_kafka_headers_t *hdrs = r->headers ? rd_kafka_headers_copy(r->headers) : NULL;
    int flags = RD_KAFKA_MSG_F_COPY | (block ? RD_KAFKA_MSG_F_BLOCK : 0);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(r->topic), RD_KAFKA_V_MSGFLAGS(flags),
        RD_KAFKA_V_KEY(r->key, r->key_len), RD_KAFKA_V_VALUE(r->value, r->value_len),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(r), RD_KAFKA_V_END);
    /* On success librdkafka owns the headers copy; on failure we do. */
    if (err && hdrs)
        rd_kafka_headers_destroy(hdrs);
    return err;
}

/* Errors about the record itself: sending it again cannot succeed. Errors
 * about the cluster (authorisation, unknown topic, timeouts) are not: they
 * are fixed outside and the record then goes through. */
static bool permanent(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return true;
    default:
        return false;
    }
}

/* The request r finishes is done: its offset waits for the consumer. An
 * automatic re-drive's completion (partition -1) has no offset. Poll
 * thread only. */
static void ack(struct dw_producer *p, const struct record *r)
{
    if (r->partition < 0)
        return;
    if (p->ack_count == p->ack_cap) {
        p->ack_cap = p->ack_cap ? 2 * p->ack_cap : 64;
        p->acks = dw_xrealloc(p->acks, p->ack_cap * sizeof(*p->acks));
    }
    p->acks[p->ack_count++] = (struct dw_ack){r->partition, r->offset};
}

/* A record refused for good: logged and counted; its request is done. Poll
 * thread only. */
static void give_up(struct dw_producer *p, struct record *r, rd_kafka_resp_err_t err)
{
    dw_metrics_count(p->metrics, DW_COUNTER_RECORDS_DROPPED, 1);
    dw_log_write(p->log, DW_LOG_ERROR, (struct dw_log_ctx){NULL, NULL, r->partition, r->offset},
                 "%s record of %zu bytes refused for good by %s: %s; dropped, request counted "
                 "as done",
                 r->kind == RECORD_DLQ ? "DLQ" : "completion", r->value_len, r->topic,
                 rd_kafka_err2str(err));
    ack(p, r);
    record_free(r);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct dw_producer *p = opaque;
    struct record *r = m->_private;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (r->kind == RECORD_COMPLETION)
            dw_metrics_count(p->metrics, DW_COUNTER_COMPLETIONS_PRODUCED, 1);
        ack(p, r);
        record_free(r);
        return;
    }
    if (p->closing) {
        record_free(r);
        return;
    }
    dw_metrics_count(p->metrics, DW_COUNTER_KAFKA_ERRORS, 1);
    if (permanent(m->err)) {
        give_up(p, r, m->err);
        return;
    }
    dw_log_write(p->log, DW_LOG_WARN, (struct dw_log_ctx){NULL, NULL, r->partition, r->offset},
                 "delivery to %s failed, sending again: %s", r->topic, rd_kafka_err2str(m->err));
    /* Producing from inside a delivery report is allowed, but never block
     * here: a full queue puts the record on the retry list instead. */
    if (produce(p, r, false) != RD_KAFKA_RESP_ERR_NO_ERROR)
        dw_list_push_back(&p->retry, &r->node);
}

static struct record *record_of(struct dw_list_node *node)
{
    return node ? DW_CONTAINER_OF(node, struct record, node) : NULL;
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct dw_producer *p = opaque;
    dw_metrics_count(p->metrics, DW_COUNTER_KAFKA_ERRORS, 1);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        dw_log_error(p->log, "producer fatal error: %s", why);
        return;
    }
    dw_log_warn(p->log, "producer: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct dw_producer *p = rd_kafka_opaque(rk);
    if (p)
        dw_kafka_log(p->log, "producer", level, fac, buf);
}

/* The producer's librdkafka configuration: our defaults, the user's
 * properties, then what correctness needs. NULL with errbuf on error. */
static rd_kafka_conf_t *producer_conf(const struct dw_config *cfg, char *errbuf, size_t errlen)
{
    static const struct dw_kafka_setting base[] = {
        /* Completions are small and many: let librdkafka batch them. */
        {"linger.ms", "5"},
        {"batch.num.messages", "10000"},
        {"queue.buffering.max.messages", "500000"},
        /* 0: never give up on a record; an outage only delays it. */
        {"message.timeout.ms", "0"},
        {"socket.keepalive.enable", "true"},
    };
    static const struct dw_kafka_setting forced[] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
    };
    return dw_kafka_conf_new(cfg, base, DW_ARRAY_LEN(base), cfg->producer_props,
                             cfg->producer_prop_count, forced, DW_ARRAY_LEN(forced), errbuf,
                             errlen);
}

enum dw_err dw_producer_check_config(const struct dw_config *cfg, char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = producer_conf(cfg, errbuf, errlen);
    if (!conf)
        return DW_ERR_CONFIG;
    return dw_kafka_conf_check(conf, RD_KAFKA_PRODUCER, "producer", errbuf, errlen);
}

enum dw_err dw_producer_create(const struct dw_config *cfg, struct dw_log *log,
                               struct dw_metrics *metrics, struct dw_producer **out, char *errbuf,
                               size_t errlen)
{
    enum dw_err err = DW_OK;
    struct dw_producer *p = dw_xcalloc(1, sizeof(*p));
    p->log = log;
    p->metrics = metrics;
    p->completed_topic = dw_xstrdup(cfg->completed_topic);
    p->dlq_topic = dw_xstrdup(cfg->dlq_topic);
    pthread_mutex_init(&p->finished_lock, NULL);

    rd_kafka_conf_t *conf = producer_conf(cfg, errbuf, errlen);
    if (!conf) {
        err = DW_ERR_CONFIG;
        goto out;
    }
    char size[32];
    size_t size_len = sizeof(size);
    p->max_message_bytes = 1000000; /* librdkafka's default */
    if (rd_kafka_conf_get(conf, "message.max.bytes", size, &size_len) == RD_KAFKA_CONF_OK)
        p->max_message_bytes = (size_t)strtoull(size, NULL, 10);
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    char why[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        dw_snprintf(errbuf, errlen, "kafka producer: %s", why);
        err = DW_ERR_KAFKA;
        goto out;
    }
    *out = p;
out:
    if (err)
        dw_producer_destroy(p, 0);
    return err;
}

static struct record *record_new(enum record_kind kind, const char *topic, const void *key,
                                 size_t key_len, const void *value, size_t value_len,
                                 int32_t partition, int64_t offset)
{
    struct record *r = dw_xcalloc(1, sizeof(*r));
    r->kind = kind;
    r->topic = dw_xstrdup(topic);
    if (key) {
        r->key = dw_xmalloc(key_len);
        memcpy(r->key, key, key_len);
        r->key_len = key_len;
    }
    if (value) {
        r->value = dw_xmalloc(value_len);
        memcpy(r->value, value, value_len);
        r->value_len = value_len;
    }
    r->partition = partition;
    r->offset = offset;
    return r;
}

static enum dw_err send_record(struct dw_producer *p, struct record *r)
{
    rd_kafka_resp_err_t err = produce(p, r, true);
    if (err && permanent(err)) {
        /* Final: reported done by the poll thread (dw_producer_poll). */
        dw_metrics_count(p->metrics, DW_COUNTER_KAFKA_ERRORS, 1);
        r->produce_err = err;
        pthread_mutex_lock(&p->finished_lock);
        dw_list_push_back(&p->finished, &r->node);
        pthread_mutex_unlock(&p->finished_lock);
        return DW_OK;
    }
    if (err) {
        dw_log_error(p->log, "produce to %s failed: %s", r->topic, rd_kafka_err2str(err));
        dw_metrics_count(p->metrics, DW_COUNTER_KAFKA_ERRORS, 1);
        record_free(r);
        return DW_ERR_KAFKA;
    }
    return DW_OK;
}

enum dw_err dw_producer_send_completion(struct dw_producer *p, const char *event_id,
                                        const char *json, int32_t partition, int64_t offset)
{
    struct record *r = record_new(RECORD_COMPLETION, p->completed_topic, event_id, strlen(event_id),
                                  json, strlen(json), partition, offset);
    return send_record(p, r);
}

enum dw_err dw_producer_send_dlq(struct dw_producer *p, const struct dw_dlq_record *dlq)
{
    const struct dw_record *rec = dlq->source;
    char partition[32], offset[32];
    const char *code = dw_dlq_name(dlq->code);
    const char *message = dlq->message ? dlq->message : "";
    dw_snprintf(partition, sizeof(partition), "%" PRId32, rec->partition);
    dw_snprintf(offset, sizeof(offset), "%" PRId64, rec->offset);
    const char *const headers[][2] = {
        {"x-error-code", code ? code : ""}, {"x-error-message", message},
        {"x-original-topic", rec->topic},   {"x-original-partition", partition},
        {"x-original-offset", offset},
    };

    /* A value that cannot fit under message.max.bytes (a request record
     * near the consumer's limit, plus our headers) would be refused for
     * good: keep its head, and say so. */
    size_t overhead = rec->key_len + DLQ_SLACK_BYTES;
    for (size_t i = 0; i < DW_ARRAY_LEN(headers); i++)
        overhead += strlen(headers[i][0]) + strlen(headers[i][1]);
    size_t value_len = rec->value_len;
    bool truncated = false;
    if (rec->value && overhead + value_len > p->max_message_bytes) {
        value_len = p->max_message_bytes > overhead ? p->max_message_bytes - overhead : 0;
        truncated = true;
    }

    struct record *r = record_new(RECORD_DLQ, p->dlq_topic, rec->key, rec->key_len, rec->value,
                                  value_len, rec->partition, rec->offset);
    r->headers = rd_kafka_headers_new(DW_ARRAY_LEN(headers) + 1);
    for (size_t i = 0; i < DW_ARRAY_LEN(headers); i++)
        rd_kafka_header_add(r->headers, headers[i][0], -1, headers[i][1], -1);
    if (truncated) {
        char original[32];
        dw_snprintf(original, sizeof(original), "%zu", rec->value_len);
        rd_kafka_header_add(r->headers, "x-value-truncated", -1, original, -1);
        dw_log_write(p->log, DW_LOG_WARN,
                     (struct dw_log_ctx){NULL, NULL, rec->partition, rec->offset},
                     "DLQ value of %zu bytes truncated to %zu to fit message.max.bytes %zu",
                     rec->value_len, value_len, p->max_message_bytes);
    }
    return send_record(p, r);
}

void dw_producer_poll(struct dw_producer *p, int timeout_ms)
{
    pthread_mutex_lock(&p->finished_lock);
    struct dw_list finished = p->finished;
    dw_list_init(&p->finished);
    pthread_mutex_unlock(&p->finished_lock);
    struct record *r;
    while ((r = record_of(dw_list_pop_front(&finished))))
        give_up(p, r, r->produce_err);

    struct dw_list retry = p->retry;
    dw_list_init(&p->retry);
    while ((r = record_of(dw_list_pop_front(&retry)))) {
        if (produce(p, r, false) != RD_KAFKA_RESP_ERR_NO_ERROR)
            dw_list_push_back(&p->retry, &r->node);
    }
    rd_kafka_poll(p->rk, timeout_ms);
}

size_t dw_producer_take_acks(struct dw_producer *p, struct dw_ack *out, size_t max)
{
    size_t n = p->ack_count < max ? p->ack_count : max;
    if (n == 0)
        return 0; /* acks may be NULL: memcpy must not see it, even for 0 bytes */
    memcpy(out, p->acks, n * sizeof(*out));
    memmove(p->acks, p->acks + n, (p->ack_count - n) * sizeof(*p->acks));
    p->ack_count -= n;
    return n;
}

int dw_producer_outstanding(struct dw_producer *p)
{
    int n = rd_kafka_outq_len(p->rk);
    n += (int)p->retry.len;
    pthread_mutex_lock(&p->finished_lock);
    n += (int)p->finished.len;
    pthread_mutex_unlock(&p->finished_lock);
    return n;
}

bool dw_producer_ping(struct dw_producer *p, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->rk, 0, NULL, &md, timeout_ms);
    if (md)
        rd_kafka_metadata_destroy(md);
    return err == RD_KAFKA_RESP_ERR_NO_ERROR;
}

bool dw_producer_fatal(struct dw_producer *p, char *why, size_t whylen)
{
    return p && rd_kafka_fatal_error(p->rk, why, whylen) != RD_KAFKA_RESP_ERR_NO_ERROR;
}

void dw_producer_destroy(struct dw_producer *p, int timeout_ms)
{
    if (!p)
        return;
    if (p->rk) {
        int64_t until = dw_now_ms() + timeout_ms;
        while (dw_producer_outstanding(p) > 0 && dw_now_ms() < until)
            dw_producer_poll(p, 50);
        if (dw_producer_outstanding(p) > 0)
            dw_log_warn(p->log,
                        "producer closing with %d records unacknowledged; their requests "
                        "stay uncommitted and will be redelivered",
                        dw_producer_outstanding(p));
        /* Records still queued are purged: their delivery reports (with an
         * error) free them without sending them again. */
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        p->closing = true;
        rd_kafka_poll(p->rk, 0);
    }
    struct record *r;
    while ((r = record_of(dw_list_pop_front(&p->retry))))
        record_free(r);
    while ((r = record_of(dw_list_pop_front(&p->finished))))
        record_free(r);
    pthread_mutex_destroy(&p->finished_lock);
    if (p->rk)
        rd_kafka_destroy(p->rk);
    free(p->acks);
    free(p->completed_topic);
    free(p->dlq_topic);
    free(p);
}
