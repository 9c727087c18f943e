/*
 * The pace of new connections, per origin. Channels whose URLs share
 * scheme, host and port are one origin: libcurl reuses a connection for
 * any call there, whichever channel opened it, and the server's accept
 * queue is the origin's. A call that needs a new connection (none of its
 * origin's is free on its worker) takes a token of the origin's pace
 * (src/resilience/pace.c: a window of connects under way, and a rate up
 * to max_connects_per_second, shrunk by connect timeouts); without one it
 * waits in its worker's connect queue of the origin, holding its slot,
 * until a connection frees up or a token comes. The transfer loops report
 * each connect's begin and end (dw_pool_on_connect) to the pace.
 *
 * Threads: the origins are found and the paces made before the workers
 * start (read-only after). Each pace is shared by every worker, under its
 * own lock. The connect queues, and the counts of connections, calls and
 * multiplexing they are judged by, are the worker thread's alone.
 *
 * Invariants:
 * - A job in a connect queue waits WAIT_CONNECT and holds its try's
 *   permit and slot; it leaves the queue only to start its call (or at
 *   dw_pool_stop).
 * - Per origin, the queue starts in order: a later job never takes a
 *   connection or token while an earlier one waits.
 * - w->connq_due_ms is no later than the next token any non-empty queue
 *   waits for (INT64_MAX when all are empty), so the worker's wait ends
 *   in time.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "dw/list.h"
#include "dw/metrics.h"
#include "dw/pace.h"
#include "dw/transfer.h"
#include "pool_internal.h"

/* ---- the origins and their paces (before the workers start) ---- */

/* The length of url's origin: "https://host:port" without the path. */
static size_t origin_len(const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    return (size_t)(p - url) + strcspn(p, "/?#");
}

/* Channels of one origin share its pace, at the largest
 * max_connects_per_second among them. */
void dw_pool_origins_init(struct dw_pool *pool)
{
    int64_t now = dw_now_ms();
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const char *url = pool->opts.cfg->channels[c].url ? pool->opts.cfg->channels[c].url : "";
        size_t len = origin_len(url);
        pool->origin[c] = c;
        for (int o = 0; o < c; o++) {
            const char *other =
                pool->opts.cfg->channels[o].url ? pool->opts.cfg->channels[o].url : "";
            if (origin_len(other) == len && strncasecmp(url, other, len) == 0) {
                pool->origin[c] = pool->origin[o];
                break;
            }
        }
    }
    for (int o = 0; o < DW_CHANNEL_COUNT; o++) {
        int rate = 0;
        for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
            int r = pool->opts.cfg->channels[c].max_connects_per_second;
            if (pool->origin[c] == o && r > rate)
                rate = r;
        }
        pthread_mutex_init(&pool->paces[o].lock, NULL);
        dw_pace_init(&pool->paces[o].pace, rate, now);
    }
    pool->paces_ready = true;
}

void dw_pool_origins_cleanup(struct dw_pool *pool)
{
    if (!pool->paces_ready)
        return;
    for (int o = 0; o < DW_CHANNEL_COUNT; o++)
        pthread_mutex_destroy(&pool->paces[o].lock);
    pool->paces_ready = false;
}

/* ---- on the worker thread ---- */

/* Would a call of channel ch on this worker need a new connection? Over
 * HTTP/1.1 every call under way to its origin holds one and a spare one
 * is reused; over HTTP/2 calls share the connections there are. */
static bool needs_connection(const struct worker *w, enum dw_channel_id ch)
{
    const int *origin = w->pool->origin;
    int calls = 0, conns = 0;
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        if (origin[c] == origin[ch]) {
            calls += w->calls[c];
            conns += w->conns[c];
        }
    }
    if (w->multiplexed[origin[ch]])
        return conns == 0;
    return calls >= conns;
}

/* 0 when a call of channel ch may start now on this worker: a connection
 * to its origin is free, or the origin's pace gives a token for a new one
 * (taken). Else the ms until the next token. */
static int64_t connection_wait(struct worker *w, enum dw_channel_id ch, int64_t now)
{
    if (!needs_connection(w, ch))
        return 0;
    struct origin_pace *op = &w->pool->paces[w->pool->origin[ch]];
    pthread_mutex_lock(&op->lock);
    int64_t wait = dw_pace_take(&op->pace, now);
    pthread_mutex_unlock(&op->lock);
    return wait;
}

/* The connect pace, holding the slot: only a job the limit lets call
 * waits for a connection, so a burst queues no more than the limit has
 * slots. The wait is not part of the try (try_started_us is set when its
 * first call starts), or the breaker would see a slow call. */
bool dw_pool_connect_ready(struct worker *w, struct job *job, int64_t now)
{
    int64_t wait = connection_wait(w, job->channel, now);
    if (wait <= 0)
        return true;
    job->wait = WAIT_CONNECT;
    dw_list_push_back(&w->connq[w->pool->origin[job->channel]], &job->queue);
    if (now + wait < w->connq_due_ms)
        w->connq_due_ms = now + wait;
    return false;
}

/* Per origin in order, each on a connection that freed up or with a new
 * token. */
void dw_pool_connq_run(struct worker *w, int64_t now)
{
    w->connq_due_ms = INT64_MAX;
    for (int o = 0; o < DW_CHANNEL_COUNT; o++) {
        struct job *job;
        while ((job = dw_pool_queued_job(w->connq[o].head))) {
            int64_t wait = connection_wait(w, job->channel, now);
            if (wait > 0) {
                if (now + wait < w->connq_due_ms)
                    w->connq_due_ms = now + wait;
                break;
            }
            dw_list_remove(&w->connq[o], &job->queue);
            job->wait = WAIT_NONE;
            dw_pool_job_call(w, job, dw_now_ms());
        }
    }
}

void dw_pool_connect_result(struct worker *w, enum dw_channel_id ch, const struct dw_xfer_result *r)
{
    if (r->outcome == DW_XFER_ANSWERED)
        w->multiplexed[w->pool->origin[ch]] = r->multiplexed;
}

/* A connect of channel `tag` began or ended on this worker's loop: the
 * origin's pace counts those under way, and learns from how they end. */
void dw_pool_on_connect(void *owner, int tag, enum dw_xfer_connect_event ev)
{
    struct worker *w = owner;
    if (tag < 0 || tag >= DW_CHANNEL_COUNT)
        return;
    struct origin_pace *op = &w->pool->paces[w->pool->origin[tag]];
    pthread_mutex_lock(&op->lock);
    switch (ev) {
    case DW_XFER_CONNECT_BEGAN:
        dw_pace_connecting(&op->pace);
        break;
    case DW_XFER_CONNECT_MADE:
        dw_pace_connected(&op->pace, dw_now_ms());
        break;
    case DW_XFER_CONNECT_TIMED_OUT:
        dw_pace_failed(&op->pace, dw_now_ms());
        break;
    case DW_XFER_CONNECT_GAVE_UP:
        dw_pace_abandoned(&op->pace);
        break;
    }
    pthread_mutex_unlock(&op->lock);
}

/* A connection of channel `tag` opened or closed on this worker's loop. */
void dw_pool_on_conn(void *owner, int tag, int delta)
{
    struct worker *w = owner;
    if (tag < 0 || tag >= DW_CHANNEL_COUNT)
        return;
    w->conns[tag] += delta;
    dw_metrics_channel_gauge_add(w->pool->opts.metrics, (enum dw_channel_id)tag,
                                 DW_CHGAUGE_CONNECTIONS, delta);
    if (delta > 0)
        dw_metrics_channel_connection_opened(w->pool->opts.metrics, (enum dw_channel_id)tag);
}
