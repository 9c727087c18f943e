/*
 * Intake: what the poll loop does with each consumed record and, after
 * each poll, whether to pause. A record is decoded; a broken one goes to
 * the dead-letter topic with its reason code (CONTRACT 2.2), a valid one to
 * dispatch. The partitions are paused while dispatch holds too much (in
 * requests or bytes), the database is away or a channel is congested, and
 * resumed with hysteresis (dw_backpressure_pause).
 *
 * Kafka-free: main.c turns an rd_kafka_message_t into a struct
 * dw_intake_record and wires the calls below to the producer, the dispatch
 * and the consumer; tests/unit/test_intake.c wires fakes.
 *
 * Threads: the poll thread only; it owns nothing but what it is given.
 */
#ifndef DW_INTAKE_H
#define DW_INTAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dw/backpressure.h"
#include "dw/common.h"
#include "dw/config.h"
#include "dw/log.h"
#include "dw/metrics.h"
#include "dw/producer.h"
#include "dw/record.h"

struct dw_request;

/* Where intake's decisions go (main.c: producer, dispatch, consumer). */
struct dw_intake_calls {
    void *opaque;
    /* dw_producer_send_dlq. On failure the offset stays pending. */
    enum dw_err (*send_dlq)(void *opaque, const struct dw_dlq_record *rec);
    /* dw_dispatch_submit: takes ownership of req, even on failure. */
    enum dw_err (*submit)(void *opaque, struct dw_request *req, int32_t partition, int64_t offset);
    /* What dispatch holds now (dw_dispatch_in_flight, ..._bytes,
     * ..._store_ok, ..._queue_ratio). */
    void (*load)(void *opaque, struct dw_backpressure_load *out);
    bool (*paused)(void *opaque);                  /* dw_consumer_paused */
    void (*set_paused)(void *opaque, bool paused); /* dw_consumer_set_paused */
};

struct dw_intake {
    const struct dw_config *cfg; /* max_in_flight_requests, max_in_flight_bytes */
    struct dw_log *log;          /* may be NULL */
    struct dw_metrics *metrics;  /* may be NULL */
    struct dw_intake_calls calls;
};

/* Decodes rec and sends it to the DLQ or to dispatch. Nothing is lost: a
 * record neither sent nor submitted keeps its offset pending. */
void dw_intake_record(const struct dw_intake *in, const struct dw_record *rec);

/* Pauses or resumes the partitions as the load asks; true when they are
 * paused afterwards. */
bool dw_intake_backpressure(const struct dw_intake *in);

#endif /* DW_INTAKE_H */
