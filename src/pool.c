/*
 * The channel-call pool: threads, queues and timers. What to ask before,
 * during and after a try is the guards' (src/resilience/guard.c: deadline,
 * 429 pause, rate limiter, breaker, the bulkhead that follows the adaptive
 * concurrency limit, retry and budget); how a call runs is the transfer
 * loop's (src/transfer.c: libcurl multi on epoll). The pool moves jobs
 * between them, in four files (src/pool_internal.h: what they share):
 * - pool.c (this file): the worker threads, their inboxes, ready lists and
 *   timer heaps; start, submit and stop;
 * - pool_job.c: a job's life: begin a try, build and start its calls,
 *   classify their answers, end the try, retry or finish;
 * - pool_connect.c: origins, their connect pace and connect queues;
 * - pool_guards.c: the guards created, bulkhead slots handed over, and
 *   what the guards do published to the log and the metrics.
 *
 * Threads: dw_pool_start starts opts->threads worker threads. Each owns one
 * transfer loop, its ready list, its timer heap and its running list; no
 * other thread touches them. A channel's jobs all run on one worker
 * (channel % threads): its connections then sit in one connection cache,
 * where every call of the channel can reuse them (spread over the workers,
 * a channel kept up to one connection per worker for each call it could
 * make at once: 659 to 723 open for a limit of 500 at 100 ms), and a
 * bulkhead slot it gives back goes to a job of the same worker, which
 * wakes nobody. Shared between threads:
 * - each worker's inbox (new jobs) and grant list (parked jobs that were
 *   handed a bulkhead slot), both guarded by the worker's mutex and
 *   followed by dw_xfer_wake, which interrupts the worker's wait;
 * - per channel, one struct dw_guard, thread-safe on its own;
 * - the count of calls under way on all workers, which opts->max_calls
 *   caps (an atomic; a worker that finds it full is woken when a call
 *   ends on another).
 *
 * A try: the guards say GO (the job holds a breaker permit and a slot of
 * the channel's limit), WAIT (a 429 pause or the rate limiter: a timer),
 * QUEUED (the limit is full: parked on the timer heap until a slot is
 * handed over) or REFUSED (the job ends). A call that would open a new
 * connection also waits for the channel's connect pace. The try makes its
 * HTTP call(s) (Instagram has two); each call's latency and outcome feed
 * the limit; the try's end gives the outcome to the breaker and the
 * budget, the slot back (maybe to a parked job, through that job's
 * worker's grant list), and asks the retry policy what next.
 * Nothing here sleeps; every wait is a timer.
 *
 * Invariants:
 * - A job is in exactly one of: the inbox, the ready list, the timer heap
 *   (wait RETRY, or SLOT: also queued in the bulkhead), a connect queue
 *   (wait CONNECT, holding its slot), running (a call in the transfer
 *   loop), or the grant list. The one overlap: a
 *   parked job handed a slot is on the heap and in the grant list until
 *   its worker takes it from both (or, if its timer fired first, only in
 *   the list, wait GRANTED).
 * - A job holds a breaker permit and a slot only between the start of a
 *   try and its end (or while it waits for its connect pace), and gives
 *   both back on every path: the try's end, a refusal, finish, and
 *   dw_pool_stop.
 * - The workers run about opts->max_calls calls at most, together (one
 *   more per other worker that checked at the same moment, and the jobs
 *   of a connect queue, which hold a slot); the rest wait in ready, those
 *   that hold a slot at its front.
 * - The done callback is called exactly once per job that ends, on the
 *   worker thread, and never after dw_pool_stop has begun.
 */
#include "dw/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "dw/channel.h"
#include "dw/guard.h"
#include "dw/heap.h"
#include "dw/list.h"
#include "dw/metrics.h"
#include "dw/transfer.h"
#include "dw/transport.h"
#include "pool_internal.h"

#define IDLE_WAIT_MS 200
/* How often a worker brings its connection cache's size to the limits. */
#define CONN_CAP_EVERY_MS 100
/* The cache holds what the limits allowed at their highest of this long:
 * a limit that dips for a few round trips (a 503, a connect timeout) and
 * climbs back finds its connections still open, where closing them would
 * send it back through the server's accept queue. */
#define CONN_KEEP_MS 30000

/* ---- timers ---- */

static void timer_fired(struct worker *w, struct job *job)
{
    struct dw_pool *pool = w->pool;
    const struct dw_channel_config *cc = &pool->opts.cfg->channels[job->channel];
    char why[DW_ERRMSG_MAX];

    if (job->wait == WAIT_RETRY) {
        job->wait = WAIT_NONE;
        dw_guard_want(pool->guards[job->channel], &job->ticket);
        dw_list_push_back(&w->ready, &job->queue);
        return;
    }
    /* WAIT_SLOT: no slot came in time. */
    if (!dw_guard_cancel_wait(pool->guards[job->channel], &job->ticket)) {
        /* A release handed it one just now; the grant is on its way. */
        job->wait = WAIT_GRANTED;
        return;
    }
    job->wait = WAIT_NONE;
    dw_metrics_bulkhead_change(pool->opts.metrics, job->channel, 0, -1);
    if (job->ticket.deadline_ms && job->timer.key >= job->ticket.deadline_ms)
        dw_snprintf(why, sizeof(why), "bulkhead of %s full until the %dms deadline",
                    dw_channel_get(job->channel)->name, cc->deadline_ms);
    else
        dw_snprintf(why, sizeof(why), "bulkhead of %s full (%d calls in flight) for %dms",
                    dw_channel_get(job->channel)->name, dw_guard_limit(pool->guards[job->channel]),
                    cc->bulkhead_max_wait_ms);
    dw_metrics_bulkhead_rejected(pool->opts.metrics, job->channel);
    dw_pool_job_refuse(w, job, DW_EC_BULKHEAD_FULL, why);
}

/* ---- the worker thread ---- */

/* Keeps the loop's connection cache near what the limits use: busy
 * connections are at most the calls the limits allow, and idle ones beyond
 * what they allowed at their highest of the last CONN_KEEP_MS are closed,
 * oldest first. Not capped at the calls this thread may run at once: each
 * channel is its own origin, whose connections serve no other, so the
 * connections worth keeping are what each channel used, which add up to
 * more than the calls under way at any one moment when the channels peak
 * in turn (a cap there closed one channel's idle connections to open
 * another's, and back). The sum is over every channel, not only this
 * worker's own, for the same reason: summed over its own channels alone,
 * a 5,000 burst at 100 ms on six origins opened 3,859 and 3,943
 * connections for a peak of 1,970 and 2,043 open (6 % more worker CPU),
 * against 2,106 and 1,955 opened for peaks of 2,102 and 1,954; the
 * other channels' limits are headroom that costs only idle connections.
 * Only connections that served a call are kept, so this never opens more
 * than the channels used. */
static void size_connection_cache(struct worker *w, int64_t now)
{
    if (now - w->conn_cap_ms < CONN_CAP_EVERY_MS)
        return;
    w->conn_cap_ms = now;
    long sum = 0;
    for (int c = 0; c < DW_CHANNEL_COUNT; c++)
        sum += dw_guard_limit(w->pool->guards[c]);
    long keep = dw_peak_update(&w->conn_peak, now, sum);
    dw_xfer_set_max_connections(w->loop, keep + 8);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct dw_pool *pool = w->pool;

    while (!atomic_load(&pool->stopping)) {
        pthread_mutex_lock(&w->lock);
        struct dw_list in = w->inbox;
        dw_list_init(&w->inbox);
        pthread_mutex_unlock(&w->lock);
        dw_list_splice_back(&w->ready, &in);
        dw_pool_take_grants(w);

        int64_t now = dw_now_ms();
        struct dw_heap_node *top;
        while ((top = dw_heap_top(&w->timers)) && top->key <= now)
            timer_fired(w, dw_pool_timer_job(dw_heap_pop(&w->timers)));
        dw_pool_connq_run(w, now);

        while (!dw_list_empty(&w->ready) && dw_pool_room_for_calls(pool))
            dw_pool_job_start(w, dw_pool_queued_job(dw_list_pop_front(&w->ready)));

        dw_xfer_run_due(w->loop, dw_now_ms());
        if ((!dw_list_empty(&w->ready) || !dw_list_empty(&w->granted_here)) &&
            dw_pool_room_for_calls(pool))
            continue; /* a finished step, retry or granted job is ready to go now */

        now = dw_now_ms();
        size_connection_cache(w, now);
        dw_pool_snapshot_breakers(w, now);
        int64_t wait = IDLE_WAIT_MS;
        int64_t curl_due = dw_xfer_due_ms(w->loop);
        if ((top = dw_heap_top(&w->timers)) && top->key - now < wait)
            wait = top->key - now;
        if (curl_due >= 0 && curl_due - now < wait)
            wait = curl_due - now;
        if (w->connq_due_ms - now < wait)
            wait = w->connq_due_ms - now;
        /* Grants and new jobs interrupt the wait through dw_xfer_wake. */
        dw_xfer_wait(w->loop, wait < 0 ? 0 : (int)wait);
    }
    return NULL;
}

/* ---- lifecycle ---- */

enum dw_err dw_pool_start(const struct dw_pool_options *opts, struct dw_pool **out, char *errbuf,
                          size_t errlen)
{
    enum dw_err err = DW_OK;
    struct dw_pool *pool = dw_xcalloc(1, sizeof(*pool));
    pool->opts = *opts;
    if (opts->threads < 1 || opts->max_calls < opts->threads || !opts->done || !opts->cfg) {
        dw_snprintf(errbuf, errlen, "pool: needs threads >= 1, max_calls >= threads, a callback");
        err = DW_ERR_CONFIG;
        goto out;
    }
    dw_pool_guards_init(pool);
    dw_pool_origins_init(pool);
    if (!dw_pool_headers_init(pool)) {
        dw_snprintf(errbuf, errlen, "pool: out of memory building header lists");
        err = DW_ERR_HTTP;
        goto out;
    }
    err = dw_transport_create(opts->cfg, opts->log, &pool->transport, errbuf, errlen);
    if (err)
        goto out;
    /* The variables libcurl reads for a proxy (it ignores HTTP_PROXY in
     * capitals on purpose). */
    static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                             "all_proxy", "ALL_PROXY"};
    bool env_proxy = false;
    for (size_t i = 0; i < DW_ARRAY_LEN(proxy_vars); i++)
        env_proxy = env_proxy || getenv(proxy_vars[i]);
    uint64_t seed = opts->seed ? opts->seed : (uint64_t)dw_now_us() * 0x9E3779B97F4A7C15ULL;
    pool->nworkers = opts->threads;
    pool->workers = dw_xcalloc((size_t)pool->nworkers, sizeof(*pool->workers));
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        w->pool = pool;
        w->rnd = (seed + (uint64_t)i * 0x2545F4914F6CDD1DULL) | 1;
        w->conn_cap_ms = INT64_MIN / 2;
        dw_peak_init(&w->conn_peak, CONN_KEEP_MS);
        w->connq_due_ms = INT64_MAX;
        pthread_mutex_init(&w->lock, NULL);
        struct dw_xfer_options xo = {
            .max_calls = opts->max_calls,
            .response_cap = DW_POOL_RESPONSE_CAP,
            .env_proxy = env_proxy,
            .transport = pool->transport,
            .max_host_connections = opts->cfg->max_host_connections,
            .done = dw_pool_on_call_done,
            .conn = dw_pool_on_conn,
            .connect = dw_pool_on_connect,
            .owner = w,
        };
        err = dw_xfer_loop_create(&xo, &w->loop, errbuf, errlen);
        if (err)
            goto out;
    }
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            dw_snprintf(errbuf, errlen, "pool: could not start thread %d", i);
            err = DW_ERR_IO;
            goto out;
        }
        w->thread_started = true;
    }
    *out = pool;
out:
    if (err)
        dw_pool_stop(pool);
    return err;
}

enum dw_err dw_pool_submit(struct dw_pool *pool, const struct dw_request *req,
                           enum dw_channel_id channel, void *opaque)
{
    return dw_pool_submit_steps(pool, req, channel, opaque, 0, NULL,
                                dw_channel_get(channel)->steps - 1);
}

enum dw_err dw_pool_submit_steps(struct dw_pool *pool, const struct dw_request *req,
                                 enum dw_channel_id channel, void *opaque, int from,
                                 const char *prev_id, int to)
{
    if (atomic_load(&pool->stopping))
        return DW_ERR_STOPPED;
    int last = dw_channel_get(channel)->steps - 1;
    if (from < 0 || to > last || from > to || (from > 0 && !(prev_id && *prev_id)))
        return DW_ERR_INVALID;
    struct job *job = dw_xcalloc(1, sizeof(*job));
    job->req = req;
    job->channel = channel;
    job->opaque = opaque;
    job->step = from;
    job->last_step = to;
    /* A later step continues work a slot already served: it waits for a
     * slot ahead of jobs that would start new work (bulkhead.h). */
    job->ticket.waiter.first = from > 0;
    if (prev_id)
        dw_strlcpy(job->prev_id, prev_id, sizeof(job->prev_id));
    job->new_try = true;
    dw_guard_want(pool->guards[channel], &job->ticket);

    struct worker *w = dw_pool_worker_of(pool, channel);
    pthread_mutex_lock(&w->lock);
    /* A non-empty inbox has a wake-up on its way already: the worker takes
     * the whole inbox at once, after the wake that its first job sent. */
    bool was_empty = dw_list_empty(&w->inbox);
    dw_list_push_back(&w->inbox, &job->queue);
    dw_metrics_gauge_add(pool->opts.metrics, DW_GAUGE_CHANNEL_JOBS, 1);
    pthread_mutex_unlock(&w->lock);
    if (was_empty)
        dw_xfer_wake(w->loop);
    return DW_OK;
}

double dw_pool_queue_ratio(struct dw_pool *pool)
{
    double highest = 0.0;
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        /* The limit is read once (under the guard's lock) for both. */
        int limit = dw_guard_limit(pool->guards[c]);
        dw_pool_publish_flow(pool, (enum dw_channel_id)c, limit);
        double ratio = (double)dw_guard_waiting(pool->guards[c]) / (limit > 0 ? limit : 1);
        if (ratio > highest)
            highest = ratio;
    }
    return highest;
}

void dw_pool_channel_flow(struct dw_pool *pool, enum dw_channel_id ch, struct dw_pool_flow *out)
{
    struct dw_guard *g = pool->guards[ch];
    out->limit = dw_guard_limit(g);
    out->in_use = dw_guard_in_use(g);
    out->waiting = dw_guard_waiting(g);
}

/* At stop: gives back what the job holds and frees it, without a callback. */
static void abandon(struct dw_pool *pool, struct job *job)
{
    dw_metrics_gauge_add(pool->opts.metrics, DW_GAUGE_CHANNEL_JOBS, -1);
    dw_pool_give_back(pool, NULL, job);
    dw_pool_job_free(job);
}

int dw_pool_free_permits(struct dw_pool *pool, enum dw_channel_id channel)
{
    return dw_guard_free_permits(pool->guards[channel], dw_now_ms());
}

void dw_pool_stop(struct dw_pool *pool)
{
    if (!pool)
        return;
    atomic_store(&pool->stopping, true);
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        if (w->thread_started) {
            dw_xfer_wake(w->loop);
            pthread_join(w->thread, NULL);
        }
    }
    /* Every thread is gone. First take every parked job out of its
     * bulkhead's queue, so no slot given back below is handed to a job
     * about to be freed; a job a slot already reached is in a grant list
     * and is freed from there. */
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        for (size_t k = 0; k < w->timers.len; k++) {
            struct job *job = dw_pool_timer_job(w->timers.nodes[k]);
            if (job->wait == WAIT_SLOT &&
                !dw_guard_cancel_wait(pool->guards[job->channel], &job->ticket))
                job->wait = WAIT_GRANTED;
        }
    }
    /* The loops next: their calls end without callbacks, so the bodies the
     * jobs lent them may go. */
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        dw_xfer_loop_destroy(w->loop);
        w->loop = NULL;
    }
    /* Then abandon every job, giving back its permit and slot. */
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        struct job *job;
        while (!dw_list_empty(&w->running_jobs)) {
            job = DW_CONTAINER_OF(w->running_jobs.head, struct job, run);
            dw_pool_running_unlink(w, job);
            abandon(pool, job);
        }
        while ((job = dw_pool_queued_job(dw_list_pop_front(&w->inbox))))
            abandon(pool, job);
        while ((job = dw_pool_queued_job(dw_list_pop_front(&w->ready))))
            abandon(pool, job);
        for (int o = 0; o < DW_CHANNEL_COUNT; o++) {
            while ((job = dw_pool_queued_job(dw_list_pop_front(&w->connq[o]))))
                abandon(pool, job);
        }
        for (size_t k = 0; k < w->timers.len; k++) {
            struct job *job = dw_pool_timer_job(w->timers.nodes[k]);
            if (job->wait != WAIT_GRANTED)
                abandon(pool, job);
        }
        w->timers.len = 0;
        struct dw_list_node *node;
        dw_list_splice_back(&w->granted, &w->granted_here);
        while ((node = dw_list_pop_front(&w->granted))) {
            job = DW_CONTAINER_OF(node, struct job, grant);
            job->ticket.has_slot = true;
            abandon(pool, job);
        }
    }
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        dw_heap_cleanup(&w->timers);
        pthread_mutex_destroy(&w->lock);
    }
    free(pool->workers);
    /* After the loops: every easy handle that used its session caches is
     * gone. */
    dw_transport_destroy(pool->transport);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        dw_xfer_headers_free(pool->headers[c]);
        dw_guard_destroy(pool->guards[c]);
    }
    dw_pool_origins_cleanup(pool);
    free(pool);
}
