/*
 * Metrics, the registry: every metric the worker exports is one line of
 * the table in metrics_table.c (name, type, label dimensions, help); its
 * values are C11 atomics in one array, laid out here at creation, and
 * updated by the functions of metrics.h. metrics_render.c walks the table
 * and writes Prometheus text exposition format 0.0.4.
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
 * metrics.h and one line in metrics_table.c; a labelled one is one line there (plus a
 * dimension line when it needs a new label) and its update function.
 */
#include "dw/metrics.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_internal.h"

struct dw_metrics *dw_metrics_create(void)
{
    struct dw_metrics *m = dw_xcalloc(1, sizeof(*m));
    for (int i = 0; i < M_COUNT; i++) {
        /* A public enum value without its table line is a programming error. */
        if (!dw_metric_defs[i].name)
            abort();
        m->offset[i] = m->slots;
        m->slots += (size_t)(dw_metric_series_count(&dw_metric_defs[i]) *
                             dw_metric_slots_per_series(&dw_metric_defs[i]));
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
    while (b < BUCKET_COUNT && us > dw_metric_buckets[b].le_us)
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

void dw_metrics_cb_window(struct dw_metrics *m, enum dw_channel_id ch,
                          const struct dw_metrics_cb_window *w)
{
    if (!valid_channel(m, ch) || (unsigned)w->state >= DW_METRICS_CB_STATE_COUNT)
        return;
    size_t c = (size_t)ch;
    for (size_t st = 0; st < DW_METRICS_CB_STATE_COUNT; st++)
        store(m, m->offset[M_CB_STATE] + c * DW_METRICS_CB_STATE_COUNT + st, st == w->state);
    store(m, m->offset[M_BREAKER_STATE] + c, w->state);
    store_double(m, m->offset[M_CB_FAILURE_RATE] + c, w->failure_rate);
    store_double(m, m->offset[M_CB_SLOW_CALL_RATE] + c, w->slow_call_rate);
    store(m, m->offset[M_CB_BUFFERED_CALLS] + c * 2, w->calls - w->failed_calls);
    store(m, m->offset[M_CB_BUFFERED_CALLS] + c * 2 + 1, w->failed_calls);
    store(m, m->offset[M_CB_SLOW_CALLS] + c * 2, w->slow_calls - w->slow_failed_calls);
    store(m, m->offset[M_CB_SLOW_CALLS] + c * 2 + 1, w->slow_failed_calls);
}

void dw_metrics_cb_transition(struct dw_metrics *m, enum dw_channel_id ch,
                              enum dw_metrics_cb_state from, enum dw_metrics_cb_state to)
{
    int kind = -1;
    if (from == DW_METRICS_CB_CLOSED && to == DW_METRICS_CB_OPEN)
        kind = CB_CLOSED_TO_OPEN;
    else if (from == DW_METRICS_CB_OPEN && to == DW_METRICS_CB_HALF_OPEN)
        kind = CB_OPEN_TO_HALF_OPEN;
    else if (from == DW_METRICS_CB_HALF_OPEN && to == DW_METRICS_CB_CLOSED)
        kind = CB_HALF_OPEN_TO_CLOSED;
    else if (from == DW_METRICS_CB_HALF_OPEN && to == DW_METRICS_CB_OPEN)
        kind = CB_HALF_OPEN_TO_OPEN;
    if (!valid_channel(m, ch) || kind < 0)
        return;
    add(m, m->offset[M_CB_TRANSITIONS] + (size_t)ch * CB_TRANSITION_COUNT + (size_t)kind, 1);
}

void dw_metrics_cb_call(struct dw_metrics *m, enum dw_channel_id ch, enum dw_metrics_cb_call kind,
                        int64_t duration_us)
{
    if (!valid_channel(m, ch) || (unsigned)kind >= DW_METRICS_CB_CALL_COUNT)
        return;
    observe(m, m->offset[M_CB_CALLS] + ((size_t)ch * 3 + (size_t)kind) * HISTOGRAM_SLOTS,
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
