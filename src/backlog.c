/*
 * The backlog prober (see include/dw/backlog.h for why it exists).
 *
 * Threads: one thread of its own, started and joined by its owner (the
 * consumer). It touches only the librdkafka handle (whose calls are
 * thread-safe), the metrics (atomics) and the log; its own state is the
 * stop flag under `lock`.
 *
 * Each round: rd_kafka_assignment (which partitions are ours now),
 * rd_kafka_committed (one OffsetFetch for all of them), then
 * rd_kafka_query_watermark_offsets per partition (a ListOffsets round trip
 * each, which works for paused partitions too). A query that fails leaves
 * that partition's figures as they were; the next round tries again.
 */
#include "dw/backlog.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One broker query's timeout: a stop waits at most about this long. */
#define QUERY_TIMEOUT_MS 2000

struct dw_backlog {
    rd_kafka_t *rk;
    char *topic;
    struct dw_metrics *metrics;
    struct dw_log *log;
    int interval_ms;
    pthread_t thread;
    pthread_mutex_t lock; /* guards stopping */
    pthread_cond_t wake;
    bool stopping;
};

static void probe(struct dw_backlog *b)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(b->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || !parts)
        return;
    rd_kafka_topic_partition_list_t *ours = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++)
        if (strcmp(parts->elems[i].topic, b->topic) == 0)
            rd_kafka_topic_partition_list_add(ours, b->topic, parts->elems[i].partition);
    rd_kafka_topic_partition_list_destroy(parts);

    rd_kafka_resp_err_t err = ours->cnt > 0 ? rd_kafka_committed(b->rk, ours, QUERY_TIMEOUT_MS) : 0;
    if (err) {
        dw_log_debug(b->log, "backlog: committed offsets: %s", rd_kafka_err2str(err));
        goto out;
    }
    for (int i = 0; i < ours->cnt; i++) {
        int32_t partition = ours->elems[i].partition;
        int64_t low = -1, high = -1;
        err = rd_kafka_query_watermark_offsets(b->rk, b->topic, partition, &low, &high,
                                               QUERY_TIMEOUT_MS);
        if (err) {
            dw_log_debug(b->log, "backlog: offsets of partition %d: %s", (int)partition,
                         rd_kafka_err2str(err));
            continue;
        }
        /* No committed offset: a new group starts at the log start
         * (auto.offset.reset=earliest); a committed offset that retention
         * has passed starts there too. */
        int64_t start = ours->elems[i].err ? -1 : ours->elems[i].offset;
        if (start < low)
            start = low;
        dw_metrics_backlog_offsets(b->metrics, partition, start, high);
    }
out:
    rd_kafka_topic_partition_list_destroy(ours);
}

static void *run(void *arg)
{
    struct dw_backlog *b = arg;
    pthread_mutex_lock(&b->lock);
    while (!b->stopping) {
        pthread_mutex_unlock(&b->lock);
        probe(b);
        pthread_mutex_lock(&b->lock);
        struct timespec ts = dw_deadline_in(b->interval_ms);
        while (!b->stopping && pthread_cond_timedwait(&b->wake, &b->lock, &ts) == 0)
            ;
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

enum dw_err dw_backlog_start(rd_kafka_t *rk, const char *topic, struct dw_metrics *metrics,
                             struct dw_log *log, int interval_ms, struct dw_backlog **out,
                             char *errbuf, size_t errlen)
{
    struct dw_backlog *b = dw_xcalloc(1, sizeof(*b));
    b->rk = rk;
    b->topic = dw_xstrdup(topic);
    b->metrics = metrics;
    b->log = log;
    b->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    pthread_mutex_init(&b->lock, NULL);
    dw_cond_init_monotonic(&b->wake);
    if (pthread_create(&b->thread, NULL, run, b) != 0) {
        dw_snprintf(errbuf, errlen, "backlog prober: cannot start its thread");
        pthread_cond_destroy(&b->wake);
        pthread_mutex_destroy(&b->lock);
        free(b->topic);
        free(b);
        return DW_ERR_IO;
    }
    *out = b;
    return DW_OK;
}

void dw_backlog_stop(struct dw_backlog *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    b->stopping = true;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->lock);
    free(b->topic);
    free(b);
}
