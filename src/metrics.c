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

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>

#ifndef DW_VERSION
#define DW_VERSION "dev" /* when the build does not define it */
#endif

enum metric_type { TYPE_COUNTER, TYPE_GAUGE, TYPE_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* A label and its closed set of values. */
enum dim { DIM_NONE, DIM_STATUS, DIM_DLQ_CODE, DIM_CHANNEL, DIM_OUTCOME, DIM_VERSION, DIM_COUNT };

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
    return dw_channel_get((enum dw_channel_id)i)->name;
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
    [M_GAUGE(DW_GAUGE_REQUESTS_IN_FLIGHT)] = {"dw_requests_in_flight", TYPE_GAUGE, {0},
        "Requests taken from Kafka and not yet finished."},
    [M_GAUGE(DW_GAUGE_CALLS_IN_FLIGHT)] = {"dw_channel_calls_in_flight", TYPE_GAUGE, {0},
        "Channel HTTP calls under way."},
    [M_GAUGE(DW_GAUGE_PARTITIONS_PAUSED)] = {"dw_partitions_paused", TYPE_GAUGE, {0},
        "Assigned partitions paused for back-pressure."},
    [M_GAUGE(DW_GAUGE_PARTITIONS_ASSIGNED)] = {"dw_partitions_assigned", TYPE_GAUGE, {0},
        "Partitions assigned to this worker."},
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
    /* clang-format on */
};

struct dw_metrics {
    size_t offset[M_COUNT]; /* first slot of each metric in values */
    size_t slots;
    _Atomic int64_t *values; /* counters wrap as unsigned; gauges are signed */
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

    if (duration_us < 0)
        duration_us = 0;
    size_t base = m->offset[M_CHANNEL_CALL_DURATION] + (size_t)ch * HISTOGRAM_SLOTS;
    int b = 0;
    while (b < BUCKET_COUNT && duration_us > buckets[b].le_us)
        b++; /* b == BUCKET_COUNT: the +Inf bucket */
    add(m, base + (size_t)b, 1);
    add(m, base + BUCKET_COUNT + 1, duration_us);
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
        if (def->type == TYPE_COUNTER)
            err = dw_buf_printf(out, " %" PRIu64 "\n", (uint64_t)v);
        else
            err = dw_buf_printf(out, " %" PRId64 "\n", v);
    }
    return err;
}

enum dw_err dw_metrics_render(struct dw_metrics *m, struct dw_buf *out)
{
    enum dw_err err = DW_OK;
    if (!m)
        return DW_OK;
    for (int id = 0; id < M_COUNT && !err; id++)
        err = render_metric(m, out, id);
    return err;
}
