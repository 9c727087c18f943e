/*
 * Metrics, the rendering: Prometheus text exposition format 0.0.4 of the
 * table (metrics_table.c) and the registry's values (metrics.c), then what
 * is collected at render time (per-partition lag and backlog, the process).
 *
 * Threads: the HTTP thread renders while any thread updates; each value is
 * read once with a relaxed load, so a scrape may see one update and not a
 * concurrent one, but never a torn value.
 *
 * Invariants: a histogram's buckets are accumulated here, and `_count` is
 * taken from the same pass as the `+Inf` bucket so the two always agree.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dw/metrics.h"
#include "metrics_internal.h"

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
                                      const struct dw_metric_def *def, int series,
                                      const char *extra_label, const char *extra_value)
{
    enum dw_err err = dw_buf_printf(out, "%s%s", name, suffix);
    if (err)
        return err;

    int index[MAX_DIMS] = {0};
    int rest = series;
    for (int d = MAX_DIMS - 1; d >= 0; d--) {
        int count = dw_metric_dims[def->dims[d]].count;
        index[d] = rest % count;
        rest /= count;
    }

    bool open = false;
    for (int d = 0; d < MAX_DIMS + 1 && !err; d++) {
        const char *label;
        const char *value;
        if (d < MAX_DIMS) {
            const struct dw_metric_dim *dim = &dw_metric_dims[def->dims[d]];
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
                                           const struct dw_metric_def *def, int series, size_t base)
{
    enum dw_err err = DW_OK;
    uint64_t cumulative = 0;
    for (int b = 0; b <= BUCKET_COUNT && !err; b++) {
        cumulative += (uint64_t)load(m, base + (size_t)b);
        err = append_series_name(out, def->name, "_bucket", def, series, "le",
                                 b < BUCKET_COUNT ? dw_metric_buckets[b].le : "+Inf");
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
    const struct dw_metric_def *def = &dw_metric_defs[id];
    enum dw_err err = dw_buf_printf(out, "# HELP %s ", def->name);
    if (!err)
        err = append_escaped(out, def->help, false);
    if (!err)
        err = dw_buf_printf(out, "\n# TYPE %s %s\n", def->name, dw_metric_type_names[def->type]);

    int series = dw_metric_series_count(def);
    for (int s = 0; s < series && !err; s++) {
        size_t base = m->offset[id] + (size_t)(s * dw_metric_slots_per_series(def));
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
