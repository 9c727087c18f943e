/*
 * The Kafka producer: completion events (CONTRACT 2.2) and DLQ records
 * (CONTRACT section 1), from one idempotent producer. Each record carries
 * the partition and offset of the request it finishes; when the broker
 * acknowledges it, that offset is handed back through dw_producer_take_acks
 * so the consumer may commit it. A record the broker refuses is sent again,
 * unless the error is about the record itself (too large, invalid): then it
 * is final (logged, counted in dw_kafka_records_dropped_total) and its
 * offset is handed back all the same, so one bad record never stops a
 * partition. The producer knows nothing of the consumer.
 *
 * Threads: send functions may be called from any thread. Delivery reports
 * run on the thread calling dw_producer_poll, which is the consumer's poll
 * thread; dw_producer_take_acks belongs to that thread too.
 */
#ifndef DW_PRODUCER_H
#define DW_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dw/common.h"
#include "dw/config.h"
#include "dw/log.h"
#include "dw/metrics.h"
#include "dw/record.h"
#include "dw/status.h"

struct dw_producer;

/* A request whose record the broker acknowledged (or refused for good):
 * its offset may be committed. */
struct dw_ack {
    int32_t partition;
    int64_t offset;
};

/* Builds the producer's librdkafka configuration and lets librdkafka
 * check it, without connecting (--check-config). DW_ERR_CONFIG with the
 * property or librdkafka's reason in errbuf. */
enum dw_err dw_producer_check_config(const struct dw_config *cfg, char *errbuf,
                                     size_t errlen) DW_MUST_CHECK;

/* Builds the producer; DW_ERR_CONFIG or DW_ERR_KAFKA with errbuf filled. */
enum dw_err dw_producer_create(const struct dw_config *cfg, struct dw_log *log,
                               struct dw_metrics *metrics, struct dw_producer **out, char *errbuf,
                               size_t errlen) DW_MUST_CHECK;

/* Queues the completion of the request at (partition, offset), keyed by
 * event_id. Copies what it needs. Blocks while the local queue is full. */
enum dw_err dw_producer_send_completion(struct dw_producer *p, const char *event_id,
                                        const char *json, int32_t partition,
                                        int64_t offset) DW_MUST_CHECK;

/* Queues a DLQ record: the original key and value, and the headers
 * x-error-code, x-error-message, x-original-topic, x-original-partition,
 * x-original-offset. A value too large for message.max.bytes (with key,
 * headers and some slack) is cut to fit and gets the header
 * x-value-truncated with its original length. Copies what it needs. */
struct dw_dlq_record {
    const struct dw_record *source; /* the request record, as consumed */
    enum dw_dlq_code code;
    const char *message;
};
enum dw_err dw_producer_send_dlq(struct dw_producer *p,
                                 const struct dw_dlq_record *dlq) DW_MUST_CHECK;

/* Serves delivery reports; call often from the poll thread. The offsets
 * of requests now done collect until dw_producer_take_acks. */
void dw_producer_poll(struct dw_producer *p, int timeout_ms);

/* Moves up to max offsets of done requests into out, in the order they were
 * done, and returns how many. A completion sent with partition -1 (an
 * automatic re-drive's) is never handed back. Poll thread only. */
size_t dw_producer_take_acks(struct dw_producer *p, struct dw_ack *out, size_t max);

/* Records queued or in flight, not yet acknowledged. */
int dw_producer_outstanding(struct dw_producer *p);

/* Asks a broker for metadata: true when one answered within timeout_ms.
 * Thread-safe (used by /readyz). */
bool dw_producer_ping(struct dw_producer *p, int timeout_ms);

/* True (with librdkafka's reason in why) once the idempotent producer hit
 * a fatal error: it can never deliver again and the process must restart.
 * Thread-safe (used by /healthz). */
bool dw_producer_fatal(struct dw_producer *p, char *why, size_t whylen);

/* Waits up to timeout_ms for every record to be acknowledged (serving
 * delivery reports on this thread), then frees; offsets not taken by then
 * are dropped (their requests are redelivered). NULL: no-op. */
void dw_producer_destroy(struct dw_producer *p, int timeout_ms);

#endif /* DW_PRODUCER_H */
