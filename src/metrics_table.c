/*
 * The table of metrics: every metric the worker exports is one line of
 * dw_metric_defs[] (name, type, label dimensions, help), every label one
 * line of dw_metric_dims[] with its closed set of values.
 *
 * Threads: constant data; any thread reads it.
 *
 * Invariants:
 * - Every enum value of metric_id (and so every public counter and gauge)
 *   has its line; dw_metrics_create aborts otherwise.
 * - Label values come from the vocabularies of the leaves (channel_id.h,
 *   status.h) and from metrics.h's own (the breaker's states and call
 *   kinds): the metrics include no domain module.
 *
 * Adding a metric: see metrics.c.
 */
#include "metrics_internal.h"

#include <stddef.h>

#ifndef DW_VERSION
#define DW_VERSION "dev" /* when the build does not define it */
#endif

const char *const dw_metric_type_names[4] = {"counter", "gauge", "histogram", "gauge"};

static const char *final_status_value(int i)
{
    return dw_overall_name((enum dw_overall)(DW_OVERALL_COMPLETED + i));
}

static const char *dlq_code_value(int i)
{
    return dw_dlq_name((enum dw_dlq_code)(i + 1));
}

static const char *channel_value(int i)
{
    return dw_channel_name((enum dw_channel_id)i);
}

/* Index 0 (DW_EC_NONE) is a success; the others are the error code names. */
static const char *outcome_value(int i)
{
    return i == DW_EC_NONE ? "success" : dw_errcode_name((enum dw_errcode)i);
}

static const char *version_value(int i)
{
    (void)i;
    return DW_VERSION;
}

/* Resilience4j's lower-case state names, in enum dw_metrics_cb_state order. */
static const char *cb_state_value(int i)
{
    static const char *const names[DW_METRICS_CB_STATE_COUNT] = {
        [DW_METRICS_CB_CLOSED] = "closed",     [DW_METRICS_CB_HALF_OPEN] = "half_open",
        [DW_METRICS_CB_OPEN] = "open",         [DW_METRICS_CB_FORCED_OPEN] = "forced_open",
        [DW_METRICS_CB_DISABLED] = "disabled",
    };
    return names[i];
}

/* In enum dw_metrics_cb_call order. */
static const char *cb_call_kind_value(int i)
{
    static const char *const names[] = {"successful", "failed", "ignored"};
    return names[i];
}

static const char *cb_buffered_kind_value(int i)
{
    return i == 0 ? "successful" : "failed";
}

static const char *cb_not_permitted_value(int i)
{
    (void)i;
    return "not_permitted";
}

static const char *cb_transition_value(int i)
{
    static const char *const names[CB_TRANSITION_COUNT] = {
        "closed_to_open", "open_to_half_open", "half_open_to_closed", "half_open_to_open"};
    return names[i];
}

/* Index: 2 * failed + retried. */
static const char *retry_kind_value(int i)
{
    static const char *const names[] = {"successful_without_retry", "successful_with_retry",
                                        "failed_without_retry", "failed_with_retry"};
    return names[i];
}

static const char *attempt_kind_value(int i)
{
    return i == 0 ? "first" : "retry";
}

static const char *redrive_outcome_value(int i)
{
    return i == 0 ? "success" : "failure";
}
const struct dw_metric_dim dw_metric_dims[DIM_COUNT] = {
    [DIM_NONE] = {NULL, 1, NULL},
    [DIM_STATUS] = {"status", 3, final_status_value}, /* COMPLETED, PARTIAL_FAILURE, FAILED */
    [DIM_DLQ_CODE] = {"code", DW_DLQ_COUNT - 1, dlq_code_value},
    [DIM_CHANNEL] = {"channel", DW_CHANNEL_COUNT, channel_value},
    [DIM_OUTCOME] = {"outcome", DW_EC_COUNT, outcome_value},
    [DIM_VERSION] = {"version", 1, version_value},
    [DIM_NAME] = {"name", DW_CHANNEL_COUNT, channel_value},
    [DIM_CB_STATE] = {"state", DW_METRICS_CB_STATE_COUNT, cb_state_value},
    [DIM_CB_CALL_KIND] = {"kind", 3, cb_call_kind_value},
    [DIM_CB_BUFFERED_KIND] = {"kind", 2, cb_buffered_kind_value},
    [DIM_CB_NOT_PERMITTED] = {"kind", 1, cb_not_permitted_value},
    [DIM_CB_TRANSITION] = {"kind", CB_TRANSITION_COUNT, cb_transition_value},
    [DIM_RETRY_KIND] = {"kind", 4, retry_kind_value},
    [DIM_ATTEMPT_KIND] = {"kind", 2, attempt_kind_value},
    [DIM_REDRIVE_OUTCOME] = {"outcome", 2, redrive_outcome_value},
};
const struct dw_metric_bucket dw_metric_buckets[BUCKET_COUNT] = {
    {5000, "0.005"},  {10000, "0.01"},  {25000, "0.025"}, {50000, "0.05"},
    {100000, "0.1"},  {250000, "0.25"}, {500000, "0.5"},  {1000000, "1"},
    {2500000, "2.5"}, {5000000, "5"},   {10000000, "10"}, {30000000, "30"},
};

/* The table: one entry per metric (kept out of clang-format so each entry
 * stays a line or two). Rendering follows the index order. */
const struct dw_metric_def dw_metric_defs[M_COUNT] = {
    /* clang-format off */
    [M_COUNTER(DW_COUNTER_REQUESTS_CONSUMED)] = {"dw_requests_consumed_total", TYPE_COUNTER, {0},
        "Request records read from Kafka, valid or not."},
    [M_COUNTER(DW_COUNTER_COMPLETIONS_PRODUCED)] = {"dw_completions_produced_total", TYPE_COUNTER,
        {0}, "Completion records acknowledged by Kafka."},
    [M_COUNTER(DW_COUNTER_OFFSETS_COMMITTED)] = {"dw_offsets_committed_total", TYPE_COUNTER, {0},
        "Offset commits that Kafka accepted."},
    [M_COUNTER(DW_COUNTER_DB_ERRORS)] = {"dw_db_errors_total", TYPE_COUNTER, {0},
        "PostgreSQL operations that failed."},
    [M_COUNTER(DW_COUNTER_KAFKA_ERRORS)] = {"dw_kafka_errors_total", TYPE_COUNTER, {0},
        "Errors reported by librdkafka."},
    [M_COUNTER(DW_COUNTER_DB_ROUND_TRIPS)] = {"dw_db_round_trips_total", TYPE_COUNTER, {0},
        "Network round trips to PostgreSQL."},
    [M_COUNTER(DW_COUNTER_RECORDS_DROPPED)] = {"dw_kafka_records_dropped_total", TYPE_COUNTER, {0},
        "Completion or DLQ records Kafka refused for good; their requests count as done."},
    [M_COUNTER(DW_COUNTER_REDRIVES_SCHEDULED)] = {"dw_redrive_scheduled_total", TYPE_COUNTER, {0},
        "Automatic re-drives planned: drives that left a transient failure and got a next attempt."},
    [M_GAUGE(DW_GAUGE_REQUESTS_IN_FLIGHT)] = {"dw_requests_in_flight", TYPE_GAUGE, {0},
        "Requests taken from Kafka and not yet finished."},
    [M_GAUGE(DW_GAUGE_CALLS_IN_FLIGHT)] = {"dw_channel_calls_in_flight", TYPE_GAUGE, {0},
        "Channel HTTP calls under way."},
    [M_GAUGE(DW_GAUGE_PARTITIONS_PAUSED)] = {"dw_partitions_paused", TYPE_GAUGE, {0},
        "Assigned partitions paused for back-pressure."},
    [M_GAUGE(DW_GAUGE_PARTITIONS_ASSIGNED)] = {"dw_partitions_assigned", TYPE_GAUGE, {0},
        "Partitions assigned to this worker."},
    [M_GAUGE(DW_GAUGE_CHANNEL_JOBS)] = {"dw_channel_jobs", TYPE_GAUGE, {0},
        "Channel jobs held by the pool: running, or waiting for a retry, a bulkhead slot or a "
        "transfer slot."},
    [M_REQUESTS_COMPLETED] = {"dw_requests_completed_total", TYPE_COUNTER, {DIM_STATUS},
        "Drives that reached a final overall status."},
    [M_DLQ] = {"dw_dlq_total", TYPE_COUNTER, {DIM_DLQ_CODE},
        "Request records sent to the dead-letter topic, by reason."},
    [M_CHANNEL_CALLS] = {"dw_channel_calls_total", TYPE_COUNTER, {DIM_CHANNEL, DIM_OUTCOME},
        "HTTP calls to channel APIs, by outcome."},
    [M_CHANNEL_CALL_DURATION] = {"dw_channel_call_duration_seconds", TYPE_HISTOGRAM,
        {DIM_CHANNEL}, "Duration of HTTP calls to channel APIs."},
    [M_BUILD_INFO] = {"dw_build_info", TYPE_GAUGE, {DIM_VERSION},
        "Always 1; the worker's version."},
    [M_REQUEST_LATENCY] = {"dw_request_latency_seconds", TYPE_HISTOGRAM, {0},
        "End to end: requestedAt (else the Kafka timestamp) to the drive's final status."},
    /* Resilience, named as Resilience4j's Prometheus metrics (docs/resilience.md). */
    [M_CB_STATE] = {"resilience4j_circuitbreaker_state", TYPE_GAUGE, {DIM_NAME, DIM_CB_STATE},
        "The states of the circuit breaker: 1 for the current one."},
    [M_CB_CALLS] = {"resilience4j_circuitbreaker_calls_seconds", TYPE_HISTOGRAM,
        {DIM_NAME, DIM_CB_CALL_KIND}, "Calls the circuit breaker permitted, by how they ended."},
    [M_CB_NOT_PERMITTED] = {"resilience4j_circuitbreaker_not_permitted_calls_total", TYPE_COUNTER,
        {DIM_NAME, DIM_CB_NOT_PERMITTED}, "Calls the circuit breaker refused (CIRCUIT_OPEN)."},
    [M_CB_FAILURE_RATE] = {"resilience4j_circuitbreaker_failure_rate", TYPE_GAUGE_FLOAT,
        {DIM_NAME}, "Failure rate of the breaker's window in percent; -1 below minimum_calls."},
    [M_CB_SLOW_CALL_RATE] = {"resilience4j_circuitbreaker_slow_call_rate", TYPE_GAUGE_FLOAT,
        {DIM_NAME}, "Slow-call rate of the breaker's window in percent; -1 below minimum_calls."},
    [M_CB_BUFFERED_CALLS] = {"resilience4j_circuitbreaker_buffered_calls", TYPE_GAUGE,
        {DIM_NAME, DIM_CB_BUFFERED_KIND}, "Calls in the breaker's window."},
    [M_CB_SLOW_CALLS] = {"resilience4j_circuitbreaker_slow_calls", TYPE_GAUGE,
        {DIM_NAME, DIM_CB_BUFFERED_KIND}, "Slow calls in the breaker's window."},
    [M_CB_TRANSITIONS] = {"resilience4j_circuitbreaker_transitions_total", TYPE_COUNTER,
        {DIM_NAME, DIM_CB_TRANSITION}, "Automatic state transitions of the circuit breaker."},
    [M_BREAKER_STATE] = {"dw_breaker_state", TYPE_GAUGE, {DIM_CHANNEL},
        "Breaker state as one number: 0 CLOSED, 1 HALF_OPEN, 2 OPEN, 3 FORCED_OPEN, 4 DISABLED."},
    [M_RETRY_CALLS] = {"resilience4j_retry_calls_total", TYPE_COUNTER, {DIM_NAME, DIM_RETRY_KIND},
        "Channel jobs that ended, by success and whether they retried."},
    [M_RETRY_ATTEMPTS] = {"resilience4j_retry_attempts_total", TYPE_COUNTER,
        {DIM_NAME, DIM_ATTEMPT_KIND}, "Tries started: first tries and retries."},
    [M_RETRY_BUDGET_REJECTED] = {"resilience4j_retry_budget_rejected_calls_total", TYPE_COUNTER,
        {DIM_NAME}, "Retries the retry budget refused (RETRIES_EXHAUSTED at once)."},
    [M_RETRY_BUDGET_TOKENS] = {"resilience4j_retry_budget_tokens", TYPE_GAUGE_FLOAT, {DIM_NAME},
        "Tokens left in the retry budget; retries stop at half of budget_max_tokens."},
    [M_BULKHEAD_AVAILABLE] = {"resilience4j_bulkhead_available_concurrent_calls", TYPE_GAUGE,
        {DIM_NAME}, "Free bulkhead slots."},
    [M_BULKHEAD_MAX] = {"resilience4j_bulkhead_max_allowed_concurrent_calls", TYPE_GAUGE,
        {DIM_NAME}, "Bulkhead size (max_concurrent)."},
    [M_BULKHEAD_QUEUED] = {"resilience4j_bulkhead_queued_calls", TYPE_GAUGE, {DIM_NAME},
        "Calls waiting for a bulkhead slot."},
    [M_BULKHEAD_REJECTED] = {"resilience4j_bulkhead_rejected_calls_total", TYPE_COUNTER,
        {DIM_NAME}, "Calls that found the bulkhead full past bulkhead_max_wait_ms (BULKHEAD_FULL)."},
    /* Flow control (docs/resilience.md). */
    [M_CHANNEL_LIMIT] = {"dw_channel_limit", TYPE_GAUGE, {DIM_CHANNEL},
        "The channel's concurrency limit now (adaptive, or max_concurrent when fixed)."},
    [M_CHANNEL_GAUGE_FIRST + DW_CHGAUGE_IN_FLIGHT] = {"dw_channel_in_flight", TYPE_GAUGE,
        {DIM_CHANNEL}, "HTTP calls to the channel under way."},
    [M_CHANNEL_GAUGE_FIRST + DW_CHGAUGE_WAITING] = {"dw_channel_waiting", TYPE_GAUGE,
        {DIM_CHANNEL}, "Channel jobs waiting to start a try (intake pauses above twice the limit)."},
    [M_CHANNEL_GAUGE_FIRST + DW_CHGAUGE_CONNECTIONS] = {"dw_channel_connections", TYPE_GAUGE,
        {DIM_CHANNEL}, "Connections open that the channel's calls opened, busy or idle."},
    [M_CHANNEL_CONNECTIONS_OPENED] = {"dw_channel_connections_opened_total", TYPE_COUNTER,
        {DIM_CHANNEL}, "Connections the channel's calls opened."},
    /* Automatic re-drive (CONTRACT 2.4, docs/operations.md). */
    [M_REDRIVE_CALLS] = {"dw_redrive_channel_results_total", TYPE_COUNTER,
        {DIM_CHANNEL, DIM_REDRIVE_OUTCOME}, "Channels driven again by an automatic re-drive, by result."},
    [M_REDRIVE_DUE] = {"dw_redrive_due", TYPE_GAUGE, {0},
        "Events whose automatic re-drive is due and not yet claimed (shared schedule, last look)."},
    [M_REDRIVE_OLDEST_DUE] = {"dw_redrive_oldest_due_seconds", TYPE_GAUGE_FLOAT, {0},
        "How long the oldest due, unclaimed re-drive has waited past its time; 0 when none."},
    /* clang-format on */
};
