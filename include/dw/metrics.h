/*
 * Metrics: one table of counters, gauges and histograms held in atomics,
 * rendered as Prometheus text exposition format 0.0.4. Any thread may
 * update; rendering reads a consistent-enough snapshot without locks.
 */
#ifndef DW_METRICS_H
#define DW_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/status.h"

struct dw_metrics;

enum dw_gauge {
    DW_GAUGE_REQUESTS_IN_FLIGHT,
    DW_GAUGE_CALLS_IN_FLIGHT,
    DW_GAUGE_PARTITIONS_PAUSED,
    DW_GAUGE_PARTITIONS_ASSIGNED,
    DW_GAUGE_CHANNEL_JOBS, /* held by the pool: running or waiting */
    DW_GAUGE_COUNT
};

enum dw_counter {
    DW_COUNTER_REQUESTS_CONSUMED,
    DW_COUNTER_COMPLETIONS_PRODUCED,
    DW_COUNTER_OFFSETS_COMMITTED,
    DW_COUNTER_DB_ERRORS,
    DW_COUNTER_KAFKA_ERRORS,
    DW_COUNTER_DB_ROUND_TRIPS,
    DW_COUNTER_RECORDS_DROPPED,    /* completion or DLQ records Kafka refused for good */
    DW_COUNTER_REDRIVES_SCHEDULED, /* automatic re-drives planned (CONTRACT 2.4) */
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

/* A request's drive reached its final status, latency_us after it was
 * requested (requestedAt, else the Kafka record's timestamp). Feeds the
 * end-to-end latency histogram; a negative latency (clock skew) counts
 * as 0. */
void dw_metrics_request_latency(struct dw_metrics *m, int64_t latency_us);

/*
 * Resilience (docs/resilience.md), named as Resilience4j's Prometheus
 * metrics with the label name=<channel>, so Resilience4j dashboards work.
 */
/* The circuit breaker in the metrics' own words, so that the metrics
 * include no guard: the breaker pushes its numbers (its adapter,
 * dw_metrics_breaker and friends in dw/breaker.h, translates). States in
 * Resilience4j's order, the values of dw_breaker_state's gauge. */
enum dw_metrics_cb_state {
    DW_METRICS_CB_CLOSED,
    DW_METRICS_CB_HALF_OPEN,
    DW_METRICS_CB_OPEN,
    DW_METRICS_CB_FORCED_OPEN,
    DW_METRICS_CB_DISABLED,
    DW_METRICS_CB_STATE_COUNT
};

/* How a permitted call ended: resilience4j_circuitbreaker_calls_seconds{kind}. */
enum dw_metrics_cb_call {
    DW_METRICS_CB_SUCCESSFUL,
    DW_METRICS_CB_FAILED,
    DW_METRICS_CB_IGNORED,
    DW_METRICS_CB_CALL_COUNT
};

/* The breaker's state and window now. */
struct dw_metrics_cb_window {
    enum dw_metrics_cb_state state;
    double failure_rate;   /* percent; -1 below minimum_calls */
    double slow_call_rate; /* percent; -1 below minimum_calls */
    int calls;             /* recorded calls in the window */
    int failed_calls;      /* of which failures */
    int slow_calls;        /* of which slow (successes and failures) */
    int slow_failed_calls; /* of which slow failures */
};

/* The window (resilience4j_circuitbreaker_state, _failure_rate,
 * _slow_call_rate, _buffered_calls, _slow_calls and dw_breaker_state).
 * Call it from the breaker's observer, so windows land in the order they
 * were taken. */
void dw_metrics_cb_window(struct dw_metrics *m, enum dw_channel_id ch,
                          const struct dw_metrics_cb_window *w);
/* The breaker moved (resilience4j_circuitbreaker_transitions_total); only
 * the four automatic transitions are counted. */
void dw_metrics_cb_transition(struct dw_metrics *m, enum dw_channel_id ch,
                              enum dw_metrics_cb_state from, enum dw_metrics_cb_state to);
/* A call the breaker permitted ended after duration_us
 * (resilience4j_circuitbreaker_calls_seconds{kind}). */
void dw_metrics_cb_call(struct dw_metrics *m, enum dw_channel_id ch, enum dw_metrics_cb_call kind,
                        int64_t duration_us);
/* A call the breaker refused (resilience4j_circuitbreaker_not_permitted_calls_total). */
void dw_metrics_breaker_not_permitted(struct dw_metrics *m, enum dw_channel_id ch);
/* A channel job ended (resilience4j_retry_calls_total{kind}). */
void dw_metrics_retry_call(struct dw_metrics *m, enum dw_channel_id ch, bool success, bool retried);
/* A try started (resilience4j_retry_attempts_total{kind="first"|"retry"}). */
void dw_metrics_retry_attempt(struct dw_metrics *m, enum dw_channel_id ch, bool retry);
/* The retry budget's tokens now, and whether it just refused a retry. */
void dw_metrics_retry_budget(struct dw_metrics *m, enum dw_channel_id ch, double tokens,
                             bool rejected);
/* The bulkhead's size (at start), then changes of its slots in use and of
 * its queue, and refusals (resilience4j_bulkhead_*). */
void dw_metrics_bulkhead_init(struct dw_metrics *m, enum dw_channel_id ch, int max_concurrent);
void dw_metrics_bulkhead_change(struct dw_metrics *m, enum dw_channel_id ch, int in_use_delta,
                                int queued_delta);
void dw_metrics_bulkhead_rejected(struct dw_metrics *m, enum dw_channel_id ch);

/*
 * Flow control per channel (docs/resilience.md): the concurrency limit
 * (dw_channel_limit; it is also the bulkhead's size, so
 * resilience4j_bulkhead_max_allowed_concurrent_calls and _available_ move
 * with it), calls in flight, jobs waiting to start, connections open, and
 * connections opened.
 */
enum dw_channel_gauge {
    DW_CHGAUGE_IN_FLIGHT,
    DW_CHGAUGE_WAITING,
    DW_CHGAUGE_CONNECTIONS,
    DW_CHGAUGE_COUNT
};
void dw_metrics_channel_limit(struct dw_metrics *m, enum dw_channel_id ch, int old_limit,
                              int limit);
void dw_metrics_channel_gauge_set(struct dw_metrics *m, enum dw_channel_id ch,
                                  enum dw_channel_gauge g, int64_t value);
void dw_metrics_channel_gauge_add(struct dw_metrics *m, enum dw_channel_id ch,
                                  enum dw_channel_gauge g, int64_t delta);
void dw_metrics_channel_connection_opened(struct dw_metrics *m, enum dw_channel_id ch);
/* Automatic re-drive (CONTRACT 2.4). A re-driven channel's job ended
 * (dw_redrive_channel_results_total{channel,outcome}). */
void dw_metrics_redrive_call(struct dw_metrics *m, enum dw_channel_id ch, bool success);
/* What the last claim round saw in the shared schedule: events due and not
 * claimed (dw_redrive_due), and how long the oldest of them has been due
 * (dw_redrive_oldest_due_seconds; 0 when none). */
void dw_metrics_redrive_due(struct dw_metrics *m, int64_t due, int64_t oldest_due_ms);

/* Partitions whose consumer lag is tracked; higher partition ids are
 * ignored. */
#define DW_METRICS_MAX_PARTITIONS 1024

/* The consumer lag of an assigned partition of the request topic (records
 * between the committed offset and the high watermark). A negative lag
 * removes the partition's series (no longer assigned, or unknown). */
void dw_metrics_partition_lag(struct dw_metrics *m, int32_t partition, int64_t lag);
/* Removes every partition's lag series (all partitions revoked). */
void dw_metrics_partition_lag_clear(struct dw_metrics *m);

/*
 * The backlog of each assigned partition (dw_consumer_backlog): records
 * nobody has taken yet, the log end offset less the next offset this
 * worker hands out. Unlike the lag, it does not count records handed out
 * and not yet committed (a slow channel job, a paused partition's work in
 * flight), so it is what autoscaling should follow.
 *
 * Poll thread: dw_metrics_backlog_assign when a partition is assigned (its
 * figures start unknown), dw_metrics_backlog_clear when all are revoked,
 * dw_metrics_backlog_handed_out with one past each record handed out.
 * Backlog prober thread: dw_metrics_backlog_offsets with the log end
 * offset and where hand-out starts when nothing was handed out yet (the
 * committed offset, else the log start). A figure of -1 is unknown.
 */
void dw_metrics_backlog_assign(struct dw_metrics *m, int32_t partition);
void dw_metrics_backlog_clear(struct dw_metrics *m);
void dw_metrics_backlog_handed_out(struct dw_metrics *m, int32_t partition, int64_t next);
void dw_metrics_backlog_offsets(struct dw_metrics *m, int32_t partition, int64_t start,
                                int64_t end);
/* The backlog of partition now; -1 when not assigned or not known yet
 * (then it has no series). */
int64_t dw_metrics_backlog(struct dw_metrics *m, int32_t partition);

/* Appends the exposition text to out. Besides the table's metrics it
 * renders dw_consumer_lag per tracked partition and the process metrics
 * (process_cpu_seconds_total, process_resident_memory_bytes, ...) read
 * from /proc at that moment. */
enum dw_err dw_metrics_render(struct dw_metrics *m, struct dw_buf *out) DW_MUST_CHECK;

#endif /* DW_METRICS_H */
