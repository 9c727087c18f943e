/*
 * What the files of the metrics module share, and nobody else includes:
 * the table of metrics (metrics_table.c), the registry of their values
 * (metrics.c) and the rendering (metrics_render.c). The public interface
 * is dw/metrics.h.
 *
 * Threads and invariants: those of metrics.c.
 */
#ifndef DW_METRICS_INTERNAL_H
#define DW_METRICS_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "dw/metrics.h"

/* TYPE_GAUGE_FLOAT holds a double's bits in its int64 slot. */
enum metric_type { TYPE_COUNTER, TYPE_GAUGE, TYPE_HISTOGRAM, TYPE_GAUGE_FLOAT };

/* Their names in # TYPE lines, in enum metric_type order. */
extern const char *const dw_metric_type_names[4];
/* A label and its closed set of values. */
enum dim {
    DIM_NONE,
    DIM_STATUS,
    DIM_DLQ_CODE,
    DIM_CHANNEL,
    DIM_OUTCOME,
    DIM_VERSION,
    /* Resilience4j's labels (docs/resilience.md): name=<channel> and kind/state. */
    DIM_NAME,
    DIM_CB_STATE,
    DIM_CB_CALL_KIND,
    DIM_CB_BUFFERED_KIND,
    DIM_CB_NOT_PERMITTED,
    DIM_CB_TRANSITION,
    DIM_RETRY_KIND,
    DIM_ATTEMPT_KIND,
    DIM_REDRIVE_OUTCOME,
    DIM_COUNT
};

/* The automatic transitions, as Resilience4j's StateTransition names them. */
enum cb_transition {
    CB_CLOSED_TO_OPEN,
    CB_OPEN_TO_HALF_OPEN,
    CB_HALF_OPEN_TO_CLOSED,
    CB_HALF_OPEN_TO_OPEN,
    CB_TRANSITION_COUNT
};

/* A label and its closed set of values: value(i) for i in [0, count). */
struct dw_metric_dim {
    const char *label;
    int count;
    const char *(*value)(int i);
};
extern const struct dw_metric_dim dw_metric_dims[DIM_COUNT];

/* Histogram buckets of the call durations: upper bounds, inclusive. */
#define BUCKET_COUNT 12
struct dw_metric_bucket {
    int64_t le_us;
    const char *le; /* as rendered */
};
extern const struct dw_metric_bucket dw_metric_buckets[BUCKET_COUNT];
/* Per histogram series: each bucket, +Inf, then the sum in microseconds. */
#define HISTOGRAM_SLOTS (BUCKET_COUNT + 2)

/* Ids: the public counters and gauges keep their enum order; the labelled
 * metrics follow. */
#define M_COUNTER(c) (c)
#define M_GAUGE(g)   (DW_COUNTER_COUNT + (g))
enum metric_id {
    M_REQUESTS_COMPLETED = DW_COUNTER_COUNT + DW_GAUGE_COUNT,
    M_DLQ,
    M_CHANNEL_CALLS,
    M_CHANNEL_CALL_DURATION,
    M_BUILD_INFO,
    M_REQUEST_LATENCY,
    M_CB_STATE,
    M_CB_CALLS,
    M_CB_NOT_PERMITTED,
    M_CB_FAILURE_RATE,
    M_CB_SLOW_CALL_RATE,
    M_CB_BUFFERED_CALLS,
    M_CB_SLOW_CALLS,
    M_CB_TRANSITIONS,
    M_BREAKER_STATE,
    M_RETRY_CALLS,
    M_RETRY_ATTEMPTS,
    M_RETRY_BUDGET_REJECTED,
    M_RETRY_BUDGET_TOKENS,
    M_BULKHEAD_AVAILABLE,
    M_BULKHEAD_MAX,
    M_BULKHEAD_QUEUED,
    M_BULKHEAD_REJECTED,
    M_CHANNEL_LIMIT,
    M_CHANNEL_GAUGE_FIRST, /* DW_CHGAUGE_* in order */
    M_CHANNEL_CONNECTIONS_OPENED = M_CHANNEL_GAUGE_FIRST + DW_CHGAUGE_COUNT,
    M_REDRIVE_CALLS,
    M_REDRIVE_DUE,
    M_REDRIVE_OLDEST_DUE,
    M_COUNT
};
#define MAX_DIMS 2

/* One metric: its line of the table. */
struct dw_metric_def {
    const char *name;
    enum metric_type type;
    enum dim dims[MAX_DIMS]; /* DIM_NONE where unused */
    const char *help;
};
extern const struct dw_metric_def dw_metric_defs[M_COUNT];

struct dw_metrics {
    size_t offset[M_COUNT]; /* first slot of each metric in values */
    size_t slots;
    _Atomic int64_t *values; /* counters wrap as unsigned; gauges are signed */
    /* Consumer lag per partition; -1: no series (not assigned). Outside the
     * table because the set of partitions is not known in advance. */
    _Atomic int64_t partition_lag[DW_METRICS_MAX_PARTITIONS];
    /* The backlog per partition (dw_consumer_backlog), from three figures
     * written by two threads: the poll thread owns `assigned` and
     * `handed_out` (one past the last record handed to the worker; -1:
     * none yet in this assignment), the backlog prober owns `start` (where
     * hand-out begins when nothing was handed out: the committed offset,
     * else the log start) and `end` (the log end offset). -1: unknown. */
    _Atomic bool backlog_assigned[DW_METRICS_MAX_PARTITIONS];
    _Atomic int64_t backlog_handed_out[DW_METRICS_MAX_PARTITIONS];
    _Atomic int64_t backlog_start[DW_METRICS_MAX_PARTITIONS];
    _Atomic int64_t backlog_end[DW_METRICS_MAX_PARTITIONS];
};
/* Series of a metric: the product of its dimensions' sizes. */
static inline int dw_metric_series_count(const struct dw_metric_def *def)
{
    int n = 1;
    for (int d = 0; d < MAX_DIMS; d++)
        n *= dw_metric_dims[def->dims[d]].count;
    return n;
}

static inline int dw_metric_slots_per_series(const struct dw_metric_def *def)
{
    return def->type == TYPE_HISTOGRAM ? HISTOGRAM_SLOTS : 1;
}

#endif /* DW_METRICS_INTERNAL_H */
