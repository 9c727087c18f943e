/*
 * The backlog prober: a thread that asks the brokers, every interval, for
 * the log end offset of each partition of the request topic assigned to
 * the consumer, and where hand-out starts on a partition nothing was
 * handed out of yet (the group's committed offset, else the log start),
 * and stores them in the metrics (dw_metrics_backlog_offsets), which turn
 * them into dw_consumer_backlog.
 *
 * Why a thread of its own: librdkafka's statistics stop refreshing a
 * partition's high watermark while it is paused (librdkafka issue #4996),
 * which is exactly when the backlog grows (a PostgreSQL outage, a full
 * worker), and the broker queries block for a round trip, which the poll
 * loop must never do.
 */
#ifndef DW_BACKLOG_H
#define DW_BACKLOG_H

#include <librdkafka/rdkafka.h>

#include "dw/common.h"
#include "dw/log.h"
#include "dw/metrics.h"

struct dw_backlog;

/*
 * Starts the thread. rk is the consumer's handle (borrowed: stop the
 * prober before destroying it); topic is copied. interval_ms > 0.
 */
enum dw_err dw_backlog_start(rd_kafka_t *rk, const char *topic, struct dw_metrics *metrics,
                             struct dw_log *log, int interval_ms, struct dw_backlog **out,
                             char *errbuf, size_t errlen) DW_MUST_CHECK;

/* Stops and joins the thread (waits at most for one broker query's
 * timeout) and frees; NULL is a no-op. */
void dw_backlog_stop(struct dw_backlog *b);

#endif /* DW_BACKLOG_H */
