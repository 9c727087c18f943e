/*
 * Metrics: every metric the worker exports is one line of `metric_defs[]`
 * below (name, type, label dimensions, help); its values are C11 atomics in
 * one array, laid out at creation. Rendering walks the table and writes
 * Prometheus text exposition format 0.0.4.
 *
 * Threads: any thread may update at any time; updates are single relaxed
 * atomic read-modify-writes, never a lock. Rendering (the HTTP thread) reads
 * each value once with a relaxed load, so a scrape may see one update and
 * not a concurrent one, but never a torn value.
 *
 * Invariants:
 * - Every series of every metric exists from creation, zeros included:
 *   each label dimension is a closed set of values (channels, codes,
 *   statuses), so series never appear or vanish between scrapes.
 * - A histogram keeps per-bucket (not cumulative) counts and its sum in
 *   microseconds; rendering accumulates, and takes `_count` from the same
 *   pass as the `+Inf` bucket so the two always agree.
 *
 * Adding a metric: an unlabelled counter or gauge is one enum value in
 * metrics.h and one line here; a labelled one is one line here (plus a
 * dimension line when it needs a new label) and its update function.
 */
#include "dw/metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef DW_VERSION
#define DW_VERSION "dev" /* when the build does not define it */
#endif

/* TYPE_GAUGE_FLOAT holds a double's bits in its int64 slot. */
enum metric_type { TYPE_COUNTER, TYPE_GAUGE, TYPE_HISTOGRAM, TYPE_GAUGE_FLOAT };

static const char *const type_names[] = {"counter", "gauge", "histogram", "gauge"};

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

/* Resilience4j's lower-case state names, in enum dw_breaker_state order. */
static const char *cb_state_value(int i)
{
    static const char *const names[DW_BREAKER_STATE_COUNT] = {
        [DW_BREAKER_CLOSED] = "closed",     [DW_BREAKER_HALF_OPEN] = "half_open",
        [DW_BREAKER_OPEN] = "open",         [DW_BREAKER_FORCED_OPEN] = "forced_open",
        [DW_BREAKER_DISABLED] = "disabled",
    };
    return names[i];
}

/* In enum dw_breaker_outcome order. */
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

/* The automatic transitions, as Resilience4j's StateTransition names them. */
enum cb_transition {
    CB_CLOSED_TO_OPEN,
    CB_OPEN_TO_HALF_OPEN,
    CB_HALF_OPEN_TO_CLOSED,
    CB_HALF_OPEN_TO_OPEN,
    CB_TRANSITION_COUNT
};

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

static const struct dim_def {
    const char *label;
    int count;
    const char *(*value)(int i);
} dim_defs[DIM_COUNT] = {
    [DIM_NONE] = {NULL, 1, NULL},
    [DIM_STATUS] = {"status", 3, final_status_value}, /* COMPLETED, PARTIAL_FAILURE, FAILED */
    [DIM_DLQ_CODE] = {"code", DW_DLQ_COUNT - 1, dlq_code_value},
    [DIM_CHANNEL] = {"channel", DW_CHANNEL_COUNT, channel_value},
    [DIM_OUTCOME] = {"outcome", DW_EC_COUNT, outcome_value},
    [DIM_VERSION] = {"version", 1, version_value},
    [DIM_NAME] = {"name", DW_CHANNEL_COUNT, channel_value},
    [DIM_CB_STATE] = {"state", DW_BREAKER_STATE_COUNT, cb_state_value},
    [DIM_CB_CALL_KIND] = {"kind", 3, cb_call_kind_value},
    [DIM_CB_BUFFERED_KIND] = {"kind", 2, cb_buffered_kind_value},
    [DIM_CB_NOT_PERMITTED] = {"kind", 1, cb_not_permitted_value},
    [DIM_CB_TRANSITION] = {"kind", CB_TRANSITION_COUNT, cb_transition_value},
    [DIM_RETRY_KIND] = {"kind", 4, retry_kind_value},
    [DIM_ATTEMPT_KIND] = {"kind", 2, attempt_kind_value},
    [DIM_REDRIVE_OUTCOME] = {"outcome", 2, redrive_outcome_value},
};

/* Histogram buckets of the call durations: upper bounds, inclusive. */
static const struct bucket {
    int64_t le_us;
    const char *le; /* as rendered */
} buckets[] = {
    {5000, "0.005"},  {10000, "0.01"},  {25000, "0.025"}, {50000, "0.05"},
    {100000, "0.1"},  {250000, "0.25"}, {500000, "0.5"},  {1000000, "1"},
    {2500000, "2.5"}, {5000000, "5"},   {10000000, "10"}, {30000000, "30"},
};
#define BUCKET_COUNT ((int)DW_ARRAY_LEN(buckets))
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

/* The table: one entry per metric (kept out of clang-format so each entry
 * stays a line or two). Rendering follows the index order. */
static const struct metric_def {
    const char *name;
    enum metric_type type;
    enum dim dims[MAX_DIMS]; /* DIM_NONE where unused */
    const char *help;
} metric_defs[M_COUNT] = {
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

static int series_count(const struct metric_def *def)
{
    int n = 1;
    for (int d = 0; d < MAX_DIMS; d++)
        n *= dim_defs[def->dims[d]].count;
    return n;
}

static int slots_per_series(const struct metric_def *def)
{
    return def->type == TYPE_HISTOGRAM ? HISTOGRAM_SLOTS : 1;
}

struct dw_metrics *dw_metrics_create(void)
{
    struct dw_metrics *m = dw_xcalloc(1, sizeof(*m));
    for (int i = 0; i < M_COUNT; i++) {
        /* A public enum value without its table line is a programming error. */
        if (!metric_defs[i].name)
            abort();
        m->offset[i] = m->slots;
        m->slots += (size_t)(series_count(&metric_defs[i]) * slots_per_series(&metric_defs[i]));
    }
    m->values = dw_xcalloc(m->slots, sizeof(*m->values));
    for (size_t i = 0; i < m->slots; i++)
        atomic_init(&m->values[i], 0);
    atomic_init(&m->values[m->offset[M_BUILD_INFO]], 1);
    for (size_t i = 0; i < DW_METRICS_MAX_PARTITIONS; i++) {
        atomic_init(&m->partition_lag[i], -1);
        atomic_init(&m->backlog_assigned[i], false);
        atomic_init(&m->backlog_handed_out[i], -1);
        atomic_init(&m->backlog_start[i], -1);
        atomic_init(&m->backlog_end[i], -1);
    }
    return m;
}

void dw_metrics_destroy(struct dw_metrics *m)
{
    if (!m)
        return;
    free(m->values);
    free(m);
}

static void add(struct dw_metrics *m, size_t slot, int64_t delta)
{
    atomic_fetch_add_explicit(&m->values[slot], delta, memory_order_relaxed);
}

/* One observation of a histogram series whose slots start at base. */
static void observe(struct dw_metrics *m, size_t base, int64_t us)
{
    if (us < 0)
        us = 0;
    int b = 0;
    while (b < BUCKET_COUNT && us > buckets[b].le_us)
        b++; /* b == BUCKET_COUNT: the +Inf bucket */
    add(m, base + (size_t)b, 1);
    add(m, base + BUCKET_COUNT + 1, us);
}

void dw_metrics_count(struct dw_metrics *m, enum dw_counter c, uint64_t n)
{
    if (!m || (unsigned)c >= DW_COUNTER_COUNT)
        return;
    add(m, m->offset[M_COUNTER(c)], (int64_t)n);
}

void dw_metrics_gauge_set(struct dw_metrics *m, enum dw_gauge g, int64_t value)
{
    if (!m || (unsigned)g >= DW_GAUGE_COUNT)
        return;
    atomic_store_explicit(&m->values[m->offset[M_GAUGE(g)]], value, memory_order_relaxed);
}

void dw_metrics_gauge_add(struct dw_metrics *m, enum dw_gauge g, int64_t delta)
{
    if (!m || (unsigned)g >= DW_GAUGE_COUNT)
        return;
    add(m, m->offset[M_GAUGE(g)], delta);
}

void dw_metrics_request_done(struct dw_metrics *m, enum dw_overall status)
{
    if (!m || !dw_overall_is_final(status))
        return;
    add(m, m->offset[M_REQUESTS_COMPLETED] + (size_t)(status - DW_OVERALL_COMPLETED), 1);
}

void dw_metrics_dlq(struct dw_metrics *m, enum dw_dlq_code code)
{
    if (!m || code <= DW_DLQ_NONE || code >= DW_DLQ_COUNT)
        return;
    add(m, m->offset[M_DLQ] + (size_t)(code - 1), 1);
}

void dw_metrics_channel_call(struct dw_metrics *m, enum dw_channel_id ch, enum dw_errcode outcome,
                             int64_t duration_us)
{
    if (!m || (unsigned)ch >= DW_CHANNEL_COUNT || (unsigned)outcome >= DW_EC_COUNT)
        return;
    add(m, m->offset[M_CHANNEL_CALLS] + (size_t)ch * DW_EC_COUNT + (size_t)outcome, 1);

    observe(m, m->offset[M_CHANNEL_CALL_DURATION] + (size_t)ch * HISTOGRAM_SLOTS, duration_us);
}

void dw_metrics_request_latency(struct dw_metrics *m, int64_t latency_us)
{
    if (!m)
        return;
    observe(m, m->offset[M_REQUEST_LATENCY], latency_us);
}

/* ---- resilience ---- */

static void store_double(struct dw_metrics *m, size_t slot, double v)
{
    int64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    atomic_store_explicit(&m->values[slot], bits, memory_order_relaxed);
}

static void store(struct dw_metrics *m, size_t slot, int64_t v)
{
    atomic_store_explicit(&m->values[slot], v, memory_order_relaxed);
}

static bool valid_channel(const struct dw_metrics *m, enum dw_channel_id ch)
{
    return m && (unsigned)ch < DW_CHANNEL_COUNT;
}

void dw_metrics_breaker(struct dw_metrics *m, enum dw_channel_id ch,
                        const struct dw_breaker_snapshot *snap)
{
    if (!valid_channel(m, ch) || (unsigned)snap->state >= DW_BREAKER_STATE_COUNT)
        return;
    size_t c = (size_t)ch;
    for (size_t st = 0; st < DW_BREAKER_STATE_COUNT; st++)
        store(m, m->offset[M_CB_STATE] + c * DW_BREAKER_STATE_COUNT + st, st == snap->state);
    store(m, m->offset[M_BREAKER_STATE] + c, snap->state);
    store_double(m, m->offset[M_CB_FAILURE_RATE] + c, snap->failure_rate);
    store_double(m, m->offset[M_CB_SLOW_CALL_RATE] + c, snap->slow_call_rate);
    store(m, m->offset[M_CB_BUFFERED_CALLS] + c * 2, snap->calls - snap->failed_calls);
    store(m, m->offset[M_CB_BUFFERED_CALLS] + c * 2 + 1, snap->failed_calls);
    store(m, m->offset[M_CB_SLOW_CALLS] + c * 2, snap->slow_calls - snap->slow_failed_calls);
    store(m, m->offset[M_CB_SLOW_CALLS] + c * 2 + 1, snap->slow_failed_calls);
}

void dw_metrics_breaker_transition(struct dw_metrics *m, enum dw_channel_id ch,
                                   enum dw_breaker_state from, enum dw_breaker_state to)
{
    int kind = -1;
    if (from == DW_BREAKER_CLOSED && to == DW_BREAKER_OPEN)
        kind = CB_CLOSED_TO_OPEN;
    else if (from == DW_BREAKER_OPEN && to == DW_BREAKER_HALF_OPEN)
        kind = CB_OPEN_TO_HALF_OPEN;
    else if (from == DW_BREAKER_HALF_OPEN && to == DW_BREAKER_CLOSED)
        kind = CB_HALF_OPEN_TO_CLOSED;
    else if (from == DW_BREAKER_HALF_OPEN && to == DW_BREAKER_OPEN)
        kind = CB_HALF_OPEN_TO_OPEN;
    if (!valid_channel(m, ch) || kind < 0)
        return;
    add(m, m->offset[M_CB_TRANSITIONS] + (size_t)ch * CB_TRANSITION_COUNT + (size_t)kind, 1);
}

void dw_metrics_breaker_call(struct dw_metrics *m, enum dw_channel_id ch,
                             enum dw_breaker_outcome outcome, int64_t duration_us)
{
    if (!valid_channel(m, ch) || (unsigned)outcome > DW_BREAKER_IGNORED)
        return;
    observe(m, m->offset[M_CB_CALLS] + ((size_t)ch * 3 + (size_t)outcome) * HISTOGRAM_SLOTS,
            duration_us);
}

void dw_metrics_breaker_not_permitted(struct dw_metrics *m, enum dw_channel_id ch)
{
    if (valid_channel(m, ch))
        add(m, m->offset[M_CB_NOT_PERMITTED] + (size_t)ch, 1);
}

void dw_metrics_retry_call(struct dw_metrics *m, enum dw_channel_id ch, bool success, bool retried)
{
    if (valid_channel(m, ch))
        add(m, m->offset[M_RETRY_CALLS] + (size_t)ch * 4 + (size_t)(2 * !success + retried), 1);
}

void dw_metrics_retry_attempt(struct dw_metrics *m, enum dw_channel_id ch, bool retry)
{
    if (valid_channel(m, ch))
        add(m, m->offset[M_RETRY_ATTEMPTS] + (size_t)ch * 2 + retry, 1);
}

void dw_metrics_retry_budget(struct dw_metrics *m, enum dw_channel_id ch, double tokens,
                             bool rejected)
{
    if (!valid_channel(m, ch))
        return;
    store_double(m, m->offset[M_RETRY_BUDGET_TOKENS] + (size_t)ch, tokens);
    if (rejected)
        add(m, m->offset[M_RETRY_BUDGET_REJECTED] + (size_t)ch, 1);
}

void dw_metrics_bulkhead_init(struct dw_metrics *m, enum dw_channel_id ch, int max_concurrent)
{
    if (!valid_channel(m, ch))
        return;
    store(m, m->offset[M_BULKHEAD_MAX] + (size_t)ch, max_concurrent);
    store(m, m->offset[M_BULKHEAD_AVAILABLE] + (size_t)ch, max_concurrent);
    store(m, m->offset[M_BULKHEAD_QUEUED] + (size_t)ch, 0);
}

void dw_metrics_bulkhead_change(struct dw_metrics *m, enum dw_channel_id ch, int in_use_delta,
                                int queued_delta)
{
    if (!valid_channel(m, ch))
        return;
    add(m, m->offset[M_BULKHEAD_AVAILABLE] + (size_t)ch, -in_use_delta);
    add(m, m->offset[M_BULKHEAD_QUEUED] + (size_t)ch, queued_delta);
}

void dw_metrics_bulkhead_rejected(struct dw_metrics *m, enum dw_channel_id ch)
{
    if (valid_channel(m, ch))
        add(m, m->offset[M_BULKHEAD_REJECTED] + (size_t)ch, 1);
}

void dw_metrics_channel_limit(struct dw_metrics *m, enum dw_channel_id ch, int old_limit, int limit)
{
    if (!valid_channel(m, ch))
        return;
    store(m, m->offset[M_CHANNEL_LIMIT] + (size_t)ch, limit);
    /* The bulkhead's size is the limit: its free slots move with it. */
    store(m, m->offset[M_BULKHEAD_MAX] + (size_t)ch, limit);
    add(m, m->offset[M_BULKHEAD_AVAILABLE] + (size_t)ch, (int64_t)limit - old_limit);
}

void dw_metrics_channel_gauge_set(struct dw_metrics *m, enum dw_channel_id ch,
                                  enum dw_channel_gauge g, int64_t value)
{
    if (valid_channel(m, ch) && g >= 0 && g < DW_CHGAUGE_COUNT)
        store(m, m->offset[M_CHANNEL_GAUGE_FIRST + g] + (size_t)ch, value);
}

void dw_metrics_channel_gauge_add(struct dw_metrics *m, enum dw_channel_id ch,
                                  enum dw_channel_gauge g, int64_t delta)
{
    if (valid_channel(m, ch) && g >= 0 && g < DW_CHGAUGE_COUNT)
        add(m, m->offset[M_CHANNEL_GAUGE_FIRST + g] + (size_t)ch, delta);
}

void dw_metrics_channel_connection_opened(struct dw_metrics *m, enum dw_channel_id ch)
{
    if (valid_channel(m, ch))
        add(m, m->offset[M_CHANNEL_CONNECTIONS_OPENED] + (size_t)ch, 1);
}

void dw_metrics_redrive_call(struct dw_metrics *m, enum dw_channel_id ch, bool success)
{
    if (valid_channel(m, ch))
        add(m, m->offset[M_REDRIVE_CALLS] + (size_t)ch * 2 + (success ? 0 : 1), 1);
}

void dw_metrics_redrive_due(struct dw_metrics *m, int64_t due, int64_t oldest_due_ms)
{
    if (!m)
        return;
    store(m, m->offset[M_REDRIVE_DUE], due);
    store_double(m, m->offset[M_REDRIVE_OLDEST_DUE],
                 oldest_due_ms > 0 ? oldest_due_ms / 1000.0 : 0);
}

void dw_metrics_partition_lag(struct dw_metrics *m, int32_t partition, int64_t lag)
{
    if (!m || partition < 0 || partition >= DW_METRICS_MAX_PARTITIONS)
        return;
    atomic_store_explicit(&m->partition_lag[partition], lag < 0 ? -1 : lag, memory_order_relaxed);
}

void dw_metrics_partition_lag_clear(struct dw_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < DW_METRICS_MAX_PARTITIONS; i++)
        atomic_store_explicit(&m->partition_lag[i], -1, memory_order_relaxed);
}

static bool valid_partition(const struct dw_metrics *m, int32_t partition)
{
    return m && partition >= 0 && partition < DW_METRICS_MAX_PARTITIONS;
}

void dw_metrics_backlog_assign(struct dw_metrics *m, int32_t partition)
{
    if (!valid_partition(m, partition))
        return;
    atomic_store_explicit(&m->backlog_handed_out[partition], -1, memory_order_relaxed);
    atomic_store_explicit(&m->backlog_start[partition], -1, memory_order_relaxed);
    atomic_store_explicit(&m->backlog_end[partition], -1, memory_order_relaxed);
    atomic_store_explicit(&m->backlog_assigned[partition], true, memory_order_relaxed);
}

void dw_metrics_backlog_clear(struct dw_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < DW_METRICS_MAX_PARTITIONS; i++)
        atomic_store_explicit(&m->backlog_assigned[i], false, memory_order_relaxed);
}

void dw_metrics_backlog_handed_out(struct dw_metrics *m, int32_t partition, int64_t next)
{
    if (valid_partition(m, partition))
        atomic_store_explicit(&m->backlog_handed_out[partition], next, memory_order_relaxed);
}

void dw_metrics_backlog_offsets(struct dw_metrics *m, int32_t partition, int64_t start, int64_t end)
{
    if (!valid_partition(m, partition))
        return;
    atomic_store_explicit(&m->backlog_start[partition], start, memory_order_relaxed);
    atomic_store_explicit(&m->backlog_end[partition], end, memory_order_relaxed);
}

int64_t dw_metrics_backlog(struct dw_metrics *m, int32_t partition)
{
    if (!valid_partition(m, partition) ||
        !atomic_load_explicit(&m->backlog_assigned[partition], memory_order_relaxed))
        return -1;
    int64_t end = atomic_load_explicit(&m->backlog_end[partition], memory_order_relaxed);
    int64_t next = atomic_load_explicit(&m->backlog_handed_out[partition], memory_order_relaxed);
    if (next < 0)
        next = atomic_load_explicit(&m->backlog_start[partition], memory_order_relaxed);
    if (end < 0 || next < 0)
        return -1;
    /* The end offset is a few seconds old: records handed out since may
     * pass it. Nothing is waiting then. */
    return end > next ? end - next : 0;
}

/* ---- rendering ---- */

static int64_t load(struct dw_metrics *m, size_t slot)
{
    return atomic_load_explicit(&m->values[slot], memory_order_relaxed);
}

/* Text with `\` and newline escaped (HELP), plus `"` for label values. */
static enum dw_err append_escaped(struct dw_buf *out, const char *s, bool quote)
{
    enum dw_err err = DW_OK;
    for (; *s && !err; s++) {
        if (*s == '\\')
            err = dw_buf_append(out, "\\\\", 2);
        else if (*s == '\n')
            err = dw_buf_append(out, "\\n", 2);
        else if (*s == '"' && quote)
            err = dw_buf_append(out, "\\\"", 2);
        else
            err = dw_buf_append(out, s, 1);
    }
    return err;
}

/* Appends `name{labels}` where labels are the series' own (series index
 * split over the dimensions, the last one varying fastest) followed by an
 * optional extra label (a histogram's `le`). */
static enum dw_err append_series_name(struct dw_buf *out, const char *name, const char *suffix,
                                      const struct metric_def *def, int series,
                                      const char *extra_label, const char *extra_value)
{
    enum dw_err err = dw_buf_printf(out, "%s%s", name, suffix);
    if (err)
        return err;

    int index[MAX_DIMS] = {0};
    int rest = series;
    for (int d = MAX_DIMS - 1; d >= 0; d--) {
        int count = dim_defs[def->dims[d]].count;
        index[d] = rest % count;
        rest /= count;
    }

    bool open = false;
    for (int d = 0; d < MAX_DIMS + 1 && !err; d++) {
        const char *label;
        const char *value;
        if (d < MAX_DIMS) {
            const struct dim_def *dim = &dim_defs[def->dims[d]];
            if (!dim->label)
                continue;
            label = dim->label;
            value = dim->value(index[d]);
        } else {
            if (!extra_label)
                continue;
            label = extra_label;
            value = extra_value;
        }
        err = dw_buf_printf(out, "%s%s=\"", open ? "," : "{", label);
        if (!err)
            err = append_escaped(out, value ? value : "", true);
        if (!err)
            err = dw_buf_append(out, "\"", 1);
        open = true;
    }
    if (!err && open)
        err = dw_buf_append(out, "}", 1);
    return err;
}

static enum dw_err render_histogram_series(struct dw_metrics *m, struct dw_buf *out,
                                           const struct metric_def *def, int series, size_t base)
{
    enum dw_err err = DW_OK;
    uint64_t cumulative = 0;
    for (int b = 0; b <= BUCKET_COUNT && !err; b++) {
        cumulative += (uint64_t)load(m, base + (size_t)b);
        err = append_series_name(out, def->name, "_bucket", def, series, "le",
                                 b < BUCKET_COUNT ? buckets[b].le : "+Inf");
        if (!err)
            err = dw_buf_printf(out, " %" PRIu64 "\n", cumulative);
    }
    uint64_t sum_us = (uint64_t)load(m, base + BUCKET_COUNT + 1);
    if (!err)
        err = append_series_name(out, def->name, "_sum", def, series, NULL, NULL);
    if (!err)
        err =
            dw_buf_printf(out, " %" PRIu64 ".%06" PRIu64 "\n", sum_us / 1000000, sum_us % 1000000);
    if (!err)
        err = append_series_name(out, def->name, "_count", def, series, NULL, NULL);
    if (!err)
        err = dw_buf_printf(out, " %" PRIu64 "\n", cumulative);
    return err;
}

static enum dw_err render_metric(struct dw_metrics *m, struct dw_buf *out, int id)
{
    const struct metric_def *def = &metric_defs[id];
    enum dw_err err = dw_buf_printf(out, "# HELP %s ", def->name);
    if (!err)
        err = append_escaped(out, def->help, false);
    if (!err)
        err = dw_buf_printf(out, "\n# TYPE %s %s\n", def->name, type_names[def->type]);

    int series = series_count(def);
    for (int s = 0; s < series && !err; s++) {
        size_t base = m->offset[id] + (size_t)(s * slots_per_series(def));
        if (def->type == TYPE_HISTOGRAM) {
            err = render_histogram_series(m, out, def, s, base);
            continue;
        }
        err = append_series_name(out, def->name, "", def, s, NULL, NULL);
        if (err)
            break;
        int64_t v = load(m, base);
        if (def->type == TYPE_COUNTER) {
            err = dw_buf_printf(out, " %" PRIu64 "\n", (uint64_t)v);
        } else if (def->type == TYPE_GAUGE_FLOAT) {
            double d;
            memcpy(&d, &v, sizeof(d));
            err = dw_buf_printf(out, " %.6g\n", d);
        } else {
            err = dw_buf_printf(out, " %" PRId64 "\n", v);
        }
    }
    return err;
}

/* ---- collected at render time: per-partition lag, the process ---- */

static enum dw_err render_partition_lag(struct dw_metrics *m, struct dw_buf *out)
{
    enum dw_err err = dw_buf_printf(
        out, "# HELP dw_consumer_lag Records of the request topic not yet committed, per "
             "partition assigned to this worker (librdkafka statistics).\n"
             "# TYPE dw_consumer_lag gauge\n");
    for (int p = 0; p < DW_METRICS_MAX_PARTITIONS && !err; p++) {
        int64_t lag = atomic_load_explicit(&m->partition_lag[p], memory_order_relaxed);
        if (lag >= 0)
            err = dw_buf_printf(out, "dw_consumer_lag{partition=\"%d\"} %" PRId64 "\n", p, lag);
    }
    return err;
}

static enum dw_err render_backlog(struct dw_metrics *m, struct dw_buf *out)
{
    enum dw_err err = dw_buf_printf(
        out, "# HELP dw_consumer_backlog Records of the request topic that no worker has taken "
             "yet (log end offset less the next offset handed out), per partition assigned to "
             "this worker.\n"
             "# TYPE dw_consumer_backlog gauge\n");
    for (int32_t p = 0; p < DW_METRICS_MAX_PARTITIONS && !err; p++) {
        int64_t backlog = dw_metrics_backlog(m, p);
        if (backlog >= 0)
            err = dw_buf_printf(out, "dw_consumer_backlog{partition=\"%d\"} %" PRId64 "\n", (int)p,
                                backlog);
    }
    return err;
}

/* What /proc says about this process; false when it cannot be read. */
struct process_sample {
    double cpu_seconds;
    double start_time_seconds; /* since the epoch */
    uint64_t virtual_bytes;
    uint64_t resident_bytes;
    long open_fds; /* -1: unknown */
    long max_fds;  /* -1: unknown */
};

static bool read_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

static bool sample_process(struct process_sample *s)
{
    char stat[1024];
    long tick = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (tick <= 0 || page <= 0 || !read_file("/proc/self/stat", stat, sizeof(stat)))
        return false;
    /* Fields after the command name, which is in parentheses and may hold
     * spaces: state is field 3, utime 14, stime 15, starttime 22, vsize 23,
     * rss 24 (pages). */
    const char *p = strrchr(stat, ')');
    if (!p)
        return false;
    unsigned long long field[25] = {0};
    int n = 3;
    for (p++; *p && n <= 24; n++) {
        while (*p == ' ')
            p++;
        field[n] = strtoull(p, NULL, 10);
        while (*p && *p != ' ')
            p++;
    }
    if (n <= 24)
        return false;
    s->cpu_seconds = (double)(field[14] + field[15]) / (double)tick;
    s->virtual_bytes = field[23];
    s->resident_bytes = field[24] * (uint64_t)page;

    /* The boot time, to turn starttime (ticks since boot) into a date. Its
     * line comes after the "intr" line, which can be very long. */
    s->start_time_seconds = 0;
    FILE *f = fopen("/proc/stat", "r");
    char *line = NULL;
    size_t cap = 0;
    while (f && getline(&line, &cap, f) > 0) {
        if (strncmp(line, "btime ", 6) == 0) {
            s->start_time_seconds =
                (double)strtoull(line + 6, NULL, 10) + (double)field[22] / (double)tick;
            break;
        }
    }
    free(line);
    if (f)
        fclose(f);

    s->open_fds = -1;
    DIR *dir = opendir("/proc/self/fd");
    if (dir) {
        long count = 0;
        for (struct dirent *e; (e = readdir(dir));)
            count += e->d_name[0] != '.';
        closedir(dir);
        s->open_fds = count - 1; /* less the one opendir holds */
    }
    struct rlimit rl;
    s->max_fds =
        getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : -1;
    return true;
}

static enum dw_err render_process(struct dw_buf *out)
{
    struct process_sample s;
    if (!sample_process(&s))
        return DW_OK; /* not Linux, or /proc not mounted: leave them out */
    enum dw_err err = dw_buf_printf(
        out,
        "# HELP process_cpu_seconds_total User and system CPU time of the process, in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total %.2f\n"
        "# HELP process_resident_memory_bytes Resident memory (RSS) of the process, in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes %" PRIu64 "\n"
        "# HELP process_virtual_memory_bytes Virtual memory of the process, in bytes.\n"
        "# TYPE process_virtual_memory_bytes gauge\n"
        "process_virtual_memory_bytes %" PRIu64 "\n",
        s.cpu_seconds, s.resident_bytes, s.virtual_bytes);
    if (!err && s.start_time_seconds > 0)
        err = dw_buf_printf(out,
                            "# HELP process_start_time_seconds Start time of the process since "
                            "the Unix epoch, in seconds.\n"
                            "# TYPE process_start_time_seconds gauge\n"
                            "process_start_time_seconds %.2f\n",
                            s.start_time_seconds);
    if (!err && s.open_fds >= 0)
        err = dw_buf_printf(out,
                            "# HELP process_open_fds Open file descriptors of the process.\n"
                            "# TYPE process_open_fds gauge\n"
                            "process_open_fds %ld\n",
                            s.open_fds);
    if (!err && s.max_fds >= 0)
        err = dw_buf_printf(out,
                            "# HELP process_max_fds Limit of open file descriptors.\n"
                            "# TYPE process_max_fds gauge\n"
                            "process_max_fds %ld\n",
                            s.max_fds);
    return err;
}

enum dw_err dw_metrics_render(struct dw_metrics *m, struct dw_buf *out)
{
    enum dw_err err = DW_OK;
    if (!m)
        return DW_OK;
    for (int id = 0; id < M_COUNT && !err; id++)
        err = render_metric(m, out, id);
    if (!err)
        err = render_partition_lag(m, out);
    if (!err)
        err = render_backlog(m, out);
    if (!err)
        err = render_process(out);
    return err;
}
