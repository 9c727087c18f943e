/*
 * Metrics: one table of counters, gauges and histograms held in atomics,
 * rendered as Prometheus text exposition format 0.0.4. Any thread may
 * update; rendering reads a consistent-enough snapshot without locks.
 */
#ifndef DW_METRICS_H
#define DW_METRICS_H

#include <stdint.h>

#include "dw/channel.h"
#include "dw/common.h"
#include "dw/status.h"

struct dw_metrics;

enum dw_gauge {
    DW_GAUGE_REQUESTS_IN_FLIGHT,
    DW_GAUGE_CALLS_IN_FLIGHT,
    DW_GAUGE_PARTITIONS_PAUSED,
    DW_GAUGE_PARTITIONS_ASSIGNED,
    DW_GAUGE_COUNT
};

enum dw_counter {
    DW_COUNTER_REQUESTS_CONSUMED,
    DW_COUNTER_COMPLETIONS_PRODUCED,
    DW_COUNTER_OFFSETS_COMMITTED,
    DW_COUNTER_DB_ERRORS,
    DW_COUNTER_KAFKA_ERRORS,
    DW_COUNTER_DB_ROUND_TRIPS,
    DW_COUNTER_COUNT
};

struct dw_metrics *dw_metrics_create(void);
void dw_metrics_destroy(struct dw_metrics *m);

void dw_metrics_count(struct dw_metrics *m, enum dw_counter c, uint64_t n);
void dw_metrics_gauge_set(struct dw_metrics *m, enum dw_gauge g, int64_t value);
void dw_metrics_gauge_add(struct dw_metrics *m, enum dw_gauge g, int64_t delta);
/* A request reached its final overall status. */
void dw_metrics_request_done(struct dw_metrics *m, enum dw_overall status);
/* A message went to the DLQ with code. */
void dw_metrics_dlq(struct dw_metrics *m, enum dw_dlq_code code);
/* One HTTP call to a channel ended with outcome (DW_EC_NONE: success). */
void dw_metrics_channel_call(struct dw_metrics *m, enum dw_channel_id ch, enum dw_errcode outcome,
                             int64_t duration_us);

/* Appends the exposition text to out. */
enum dw_err dw_metrics_render(struct dw_metrics *m, struct dw_buf *out) DW_MUST_CHECK;

#endif /* DW_METRICS_H */
