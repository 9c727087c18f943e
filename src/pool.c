/*
 * The channel-call pool: threads, queues and timers. What to ask before,
 * during and after a try is the guards' (src/resilience/guard.c: deadline,
 * 429 pause, rate limiter, breaker, the bulkhead that follows the adaptive
 * concurrency limit, retry and budget); how a call runs is the transfer
 * loop's (src/transfer.c: libcurl multi on epoll). This file moves jobs
 * between them.
 *
 * Threads: dw_pool_start starts opts->threads worker threads. Each owns one
 * transfer loop, its ready list, its timer heap and its running list; no
 * other thread touches them. Shared between threads:
 * - each worker's inbox (new jobs) and grant list (parked jobs that were
 *   handed a bulkhead slot), both guarded by the worker's mutex and
 *   followed by dw_xfer_wake, which interrupts the worker's wait;
 * - per channel, one struct dw_guard, thread-safe on its own.
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
 * - A worker runs at most max_running calls; the rest wait in ready,
 *   those that hold a slot at its front.
 * - The done callback is called exactly once per job that ends, on the
 *   worker thread, and never after dw_pool_stop has begun.
 */
#include "dw/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dw/channel.h"
#include "dw/guard.h"
#include "dw/heap.h"
#include "dw/list.h"
#include "dw/pace.h"
#include "dw/request.h"
#include "dw/transfer.h"
#include "dw/transport.h"

#define RESPONSE_CAP (64 * 1024) /* a channel answer larger than this is BAD_RESPONSE */
#define IDLE_WAIT_MS 200
/* How often a worker brings its connection cache's size to the limits. */
#define CONN_CAP_EVERY_MS         100
#define BREAKER_SNAPSHOT_EVERY_MS 1000

enum job_wait {
    WAIT_NONE,    /* inbox, ready, running */
    WAIT_RETRY,   /* on the heap until due_ms, then a new try (back-off, 429 pause, rate) */
    WAIT_CONNECT, /* in its worker's connect queue of its origin, holding its slot */
    WAIT_SLOT,    /* on the heap and in the bulkhead's queue until a slot or due_ms */
    WAIT_GRANTED, /* its timer fired after a slot was handed over: in the grant list */
};

struct job {
    struct dw_list_node queue; /* in the inbox or the ready list */
    struct worker *worker;
    const struct dw_request *req;
    enum dw_channel_id channel;
    void *opaque;

    int step;
    int last_step;   /* the job ends after this step (dw_pool_submit_steps) */
    int shed_tries;  /* tries the channel shed (dw_guard_shed): no attempt used up */
    bool new_try;    /* the next start begins a new try (asks the guards, counts an attempt) */
    bool connect_ok; /* its connect pace was waited for: start the call at once */
    int attempts;
    char prev_id[DW_EXTERNAL_ID_MAX];
    enum dw_errcode last_error;
    char *last_message; /* the last failure, for the final message; NULL until one */

    enum job_wait wait;
    struct dw_heap_node timer; /* on the timer heap; key: due_ms, when it is due */

    struct dw_guard_ticket ticket; /* what it holds of its channel's guards */
    int64_t try_started_us;
    struct dw_list_node grant; /* in the worker's grant list (under its lock) */

    /* While running: linked in the worker's running list. */
    struct dw_list_node run;
    bool running;
    int inflight_at_start; /* the channel's calls under way when it started, itself included */
    struct dw_http_call call;
};

struct worker {
    struct dw_pool *pool;
    pthread_t thread;
    bool thread_started;
    struct dw_xfer_loop *loop;

    pthread_mutex_t lock; /* guards inbox and the grant list */
    struct dw_list inbox;
    struct dw_list granted;

    /* Owned by the worker thread alone. */
    struct dw_list ready;
    struct dw_heap timers;       /* parked jobs, by when they are due */
    struct dw_list running_jobs; /* jobs with a call in the loop */
    int running;
    int max_running;
    uint64_t rnd;
    int64_t conn_cap_ms; /* when the connection cache was last sized */
    int64_t snapshot_ms; /* worker 0: when the breakers were last snapshot */
    /* Per channel, on this worker's loop: connections its calls opened
     * and that are still open, and its calls running. A call whose
     * channel has no spare connection opens one, at the channel's pace. */
    int conns[DW_CHANNEL_COUNT];
    int calls[DW_CHANNEL_COUNT];
    /* Per origin: its last call ran over HTTP/2, so calls share a
     * connection (libcurl's PIPEWAIT makes them wait for one being made)
     * and only the first needs a new one. */
    bool multiplexed[DW_CHANNEL_COUNT];
    /* Per origin: jobs that hold a slot and need a new connection, which
     * the origin's pace has no token for yet. The first starts when a
     * connection there frees up or a token comes, whichever is first. */
    struct dw_list connq[DW_CHANNEL_COUNT]; /* of job.queue; zeroed is empty */
    int64_t connq_due_ms; /* the next token of a non-empty queue; INT64_MAX: none */
};

/* What a breaker's observer needs to put its snapshots in the metrics. */
struct breaker_observer {
    struct dw_pool *pool;
    enum dw_channel_id channel;
};

struct dw_pool {
    struct dw_pool_options opts;
    struct breaker_observer observers[DW_CHANNEL_COUNT];
    struct worker *workers;
    int nworkers;
    atomic_uint next_worker;
    atomic_bool stopping;
    struct dw_guard *guards[DW_CHANNEL_COUNT];
    /* Per channel, the header lines that are the same on every call.
     * Read-only once the threads run. */
    struct dw_xfer_headers *headers[DW_CHANNEL_COUNT];
    struct dw_transport *transport;       /* TLS and HTTP version per channel */
    _Atomic int limits[DW_CHANNEL_COUNT]; /* the last limit published to metrics */
    /* Per channel, the lowest channel with the same origin (scheme, host
     * and port): libcurl reuses a connection for any call to its origin,
     * whichever channel opened it. Read-only once the threads run. */
    int origin[DW_CHANNEL_COUNT];
    bool paces_ready; /* origins_init ran: the locks below exist */
    /* Per origin (indexed by its lowest channel), the pace of new
     * connections: the server's accept queue is the origin's, whichever
     * channel connects. */
    struct origin_pace {
        pthread_mutex_t lock;
        struct dw_pace pace;
    } paces[DW_CHANNEL_COUNT];
};

/* ---- lists and the timer heap ----
 *
 * A job that already holds its slot (the next step of a try, a parked job
 * handed a slot, a job past its connect pace) goes to the front of the
 * ready list: at the back it would hold the slot while thousands of new
 * jobs start first, and keep its request, which waits on it, in flight
 * that much longer. */

static struct job *queued_job(struct dw_list_node *node)
{
    return node ? DW_CONTAINER_OF(node, struct job, queue) : NULL;
}

static struct job *timer_job(struct dw_heap_node *node)
{
    return DW_CONTAINER_OF(node, struct job, timer);
}

/* Puts job on the heap until due_ms, waiting for `wait`. */
static void park(struct worker *w, struct job *job, enum job_wait wait, int64_t due_ms)
{
    job->wait = wait;
    job->timer.key = due_ms;
    dw_heap_push(&w->timers, &job->timer);
}

static void job_free(struct job *job)
{
    if (!job)
        return;
    dw_http_call_cleanup(&job->call);
    free(job->last_message);
    free(job);
}

/* ---- reporting what the guards did ---- */

static void on_breaker_change(void *opaque, const struct dw_breaker_snapshot *snap)
{
    struct breaker_observer *o = opaque;
    dw_metrics_breaker(o->pool->opts.metrics, o->channel, snap);
}

static void rate_text(double rate, char *buf, size_t len)
{
    if (rate < 0)
        dw_snprintf(buf, len, "n/a");
    else
        dw_snprintf(buf, len, "%.1f%%", rate);
}

/* Logs and counts a breaker transition, once, on the thread that caused it. */
static void report(struct dw_pool *pool, enum dw_channel_id ch,
                   const struct dw_breaker_transition *t)
{
    char fr[16], sr[16];
    const char *name = dw_channel_get(ch)->name;

    if (t->from == t->to)
        return;
    rate_text(t->failure_rate, fr, sizeof(fr));
    rate_text(t->slow_call_rate, sr, sizeof(sr));
    dw_log_write(pool->opts.log, t->to == DW_BREAKER_OPEN ? DW_LOG_WARN : DW_LOG_INFO,
                 (struct dw_log_ctx){NULL, name, -1, -1},
                 "circuit breaker of %s: %s -> %s (failure rate %s, slow-call rate %s)", name,
                 dw_breaker_state_name(t->from), dw_breaker_state_name(t->to), fr, sr);
    dw_metrics_breaker_transition(pool->opts.metrics, ch, t->from, t->to);
}

/* The channel's limit and jobs waiting, to metrics. */
static void publish_flow(struct dw_pool *pool, enum dw_channel_id ch, int limit)
{
    struct dw_metrics *m = pool->opts.metrics;
    int old = atomic_exchange(&pool->limits[ch], limit);
    if (old != limit)
        dw_metrics_channel_limit(m, ch, old, limit);
    dw_metrics_channel_gauge_set(m, ch, DW_CHGAUGE_WAITING, dw_guard_waiting(pool->guards[ch]));
}

/* ---- slots handed over ---- */

static struct job *job_of_waiter(struct dw_bulkhead_waiter *waiter)
{
    return (struct job *)((char *)waiter - offsetof(struct job, ticket.waiter));
}

/* A parked job was handed a slot: tell its worker (any thread may call). */
static void deliver_grant(struct dw_bulkhead_waiter *waiter)
{
    struct job *job = job_of_waiter(waiter);
    struct worker *w = job->worker;
    pthread_mutex_lock(&w->lock);
    dw_list_push_back(&w->granted, &job->grant);
    pthread_mutex_unlock(&w->lock);
    dw_xfer_wake(w->loop);
}

/* A slot was given back: to the job it was handed to, or free. */
static void slot_back(struct dw_pool *pool, enum dw_channel_id ch,
                      struct dw_bulkhead_waiter *handed)
{
    if (handed)
        deliver_grant(handed);
    else
        dw_metrics_bulkhead_change(pool->opts.metrics, ch, -1, 0);
}

/* The limit may have grown: hand what it frees to parked jobs. */
static void grant_free_slots(struct dw_pool *pool, enum dw_channel_id ch)
{
    struct dw_bulkhead_waiter *waiter;
    while ((waiter = dw_guard_grant(pool->guards[ch]))) {
        dw_metrics_bulkhead_change(pool->opts.metrics, ch, 1, 0);
        deliver_grant(waiter);
    }
}

/* Gives back whatever the job holds, without an outcome. */
static void give_back(struct dw_pool *pool, struct job *job)
{
    bool had_slot = job->ticket.has_slot;
    struct dw_bulkhead_waiter *handed = dw_guard_release(pool->guards[job->channel], &job->ticket);
    if (had_slot)
        slot_back(pool, job->channel, handed);
}

/* ---- ending a job ---- */

static void running_link(struct worker *w, struct job *job)
{
    dw_list_push_front(&w->running_jobs, &job->run);
    job->running = true;
    w->running++;
    w->calls[job->channel]++;
    dw_metrics_gauge_add(w->pool->opts.metrics, DW_GAUGE_CALLS_IN_FLIGHT, 1);
    dw_metrics_channel_gauge_add(w->pool->opts.metrics, job->channel, DW_CHGAUGE_IN_FLIGHT, 1);
}

static void running_unlink(struct worker *w, struct job *job)
{
    if (!job->running)
        return;
    dw_list_remove(&w->running_jobs, &job->run);
    job->running = false;
    w->running--;
    w->calls[job->channel]--;
    dw_metrics_gauge_add(w->pool->opts.metrics, DW_GAUGE_CALLS_IN_FLIGHT, -1);
    dw_metrics_channel_gauge_add(w->pool->opts.metrics, job->channel, DW_CHGAUGE_IN_FLIGHT, -1);
}

static void finish(struct worker *w, struct job *job, enum dw_errcode error, const char *message,
                   const struct dw_channel_reply *reply)
{
    struct dw_pool *pool = w->pool;
    struct dw_call_result res;

    give_back(pool, job);
    dw_metrics_gauge_add(pool->opts.metrics, DW_GAUGE_CHANNEL_JOBS, -1);
    memset(&res, 0, sizeof(res));
    res.channel = job->channel;
    res.status = error == DW_EC_NONE ? DW_CH_SUCCESS : DW_CH_FAILED;
    res.error = error;
    res.attempts = job->attempts;
    res.step = job->step;
    if (message)
        dw_strlcpy(res.error_message, message, sizeof(res.error_message));
    if (reply) {
        dw_strlcpy(res.external_id, reply->external_id, sizeof(res.external_id));
        dw_strlcpy(res.url, reply->url, sizeof(res.url));
    }
    /* Resilience4j's split: a success by whether it was retried, a failure
     * by whether its last error was retryable (failedCallsWithRetryAttempt
     * counts a retryable error even with maxAttempts = 1). */
    bool with_retry = error == DW_EC_NONE
                          ? job->attempts > 1
                          : dw_errcode_transient(error) || error == DW_EC_RETRIES_EXHAUSTED;
    dw_metrics_retry_call(pool->opts.metrics, job->channel, error == DW_EC_NONE, with_retry);
    pool->opts.done(job->opaque, &res);
    job_free(job);
}

/* A guard refused the next try (code: CIRCUIT_OPEN, BULKHEAD_FULL or
 * TIMEOUT for the deadline). Before any call that is the channel's code
 * (CONTRACT 2.3); after failed tries the channel ran out of retries, with
 * the last cause in the message. */
static void refuse(struct worker *w, struct job *job, enum dw_errcode code, const char *why)
{
    char msg[DW_ERRMSG_MAX];

    if (job->attempts == 0) {
        finish(w, job, code, why, NULL);
        return;
    }
    dw_snprintf(msg, sizeof(msg), "%d attempt%s; last: %s %s; then %s", job->attempts,
                job->attempts == 1 ? "" : "s", dw_errcode_name(job->last_error),
                job->last_message ? job->last_message : "", why);
    finish(w, job, DW_EC_RETRIES_EXHAUSTED, msg, NULL);
}

/* ---- starting a try and a call ---- */

/* Asks the guards for a new try: true when it may go ahead, false when
 * the job was parked or ended. */
static bool begin_try(struct worker *w, struct job *job, int64_t now_ms)
{
    struct dw_pool *pool = w->pool;
    struct dw_metrics *m = pool->opts.metrics;
    struct dw_guard_verdict v;

    dw_guard_begin(pool->guards[job->channel], &job->ticket, now_ms, &v);
    report(pool, job->channel, &v.transition);
    switch (v.step) {
    case DW_GUARD_GO:
        break;
    case DW_GUARD_WAIT:
        park(w, job, WAIT_RETRY, v.until_ms);
        return false;
    case DW_GUARD_QUEUED:
        dw_metrics_bulkhead_change(m, job->channel, 0, 1);
        park(w, job, WAIT_SLOT, v.until_ms);
        return false;
    case DW_GUARD_REFUSED:
        if (v.breaker_refused)
            dw_metrics_breaker_not_permitted(m, job->channel);
        if (v.bulkhead_full)
            dw_metrics_bulkhead_rejected(m, job->channel);
        refuse(w, job, v.code, v.why);
        return false;
    }
    if (v.slot_taken)
        dw_metrics_bulkhead_change(m, job->channel, 1, 0);
    job->attempts++;
    job->new_try = false;
    job->try_started_us = 0; /* set when its first call starts */
    dw_metrics_retry_attempt(m, job->channel, job->attempts > 1);
    return true;
}

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

static void start(struct worker *w, struct job *job);

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

/* Starts the queued jobs that can go now, per origin in order: each on a
 * connection that freed up or with a new token. Notes when to look again. */
static void start_connq(struct worker *w, int64_t now)
{
    w->connq_due_ms = INT64_MAX;
    for (int o = 0; o < DW_CHANNEL_COUNT; o++) {
        struct job *job;
        while ((job = queued_job(w->connq[o].head))) {
            int64_t wait = connection_wait(w, job->channel, now);
            if (wait > 0) {
                if (now + wait < w->connq_due_ms)
                    w->connq_due_ms = now + wait;
                break;
            }
            dw_list_remove(&w->connq[o], &job->queue);
            job->wait = WAIT_NONE;
            job->connect_ok = true;
            start(w, job);
        }
    }
}

/* The length of url's origin: "https://host:port" without the path. */
static size_t origin_len(const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    return (size_t)(p - url) + strcspn(p, "/?#");
}

/* Channels of one origin share its pace, at the largest
 * max_connects_per_second among them. */
static void origins_init(struct dw_pool *pool)
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

/* Copies the parts into out, one after the other, cut to fit: a header
 * line or URL without a vsnprintf per call. */
static void join(char *out, size_t cap, const char *const *parts, size_t n)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(parts[i]);
        if (len > cap - 1 - at)
            len = cap - 1 - at;
        memcpy(out + at, parts[i], len);
        at += len;
    }
    out[at] = '\0';
}

static void start(struct worker *w, struct job *job)
{
    struct dw_pool *pool = w->pool;
    const struct dw_pool_options *o = &pool->opts;
    const struct dw_channel_type *type = dw_channel_get(job->channel);
    const struct dw_channel_config *cc = &o->cfg->channels[job->channel];
    struct dw_guard *g = pool->guards[job->channel];
    int64_t now = dw_now_ms();

    if (job->new_try && !begin_try(w, job, now))
        return;
    /* The connect pace, holding the slot: only a job the limit lets call
     * waits for a connection, so a burst queues no more than the limit has
     * slots. The wait is not part of the try (try_started_us is set when
     * its first call starts), or the breaker would see a slow call. */
    if (!job->connect_ok) {
        int o = pool->origin[job->channel];
        int64_t wait = connection_wait(w, job->channel, now);
        if (wait > 0) {
            job->wait = WAIT_CONNECT;
            dw_list_push_back(&w->connq[o], &job->queue);
            if (now + wait < w->connq_due_ms)
                w->connq_due_ms = now + wait;
            return;
        }
    }
    if (!job->try_started_us)
        job->try_started_us = dw_now_us();
    job->connect_ok = false;
    if (type->build(job->req, job->step, job->step ? job->prev_id : NULL, &job->call) != DW_OK) {
        finish(w, job, DW_EC_BAD_RESPONSE, "could not build the channel request", NULL);
        return;
    }

    char url[DW_URL_MAX + 128], idem[DW_XFER_LINE_MAX], ctype[DW_XFER_LINE_MAX];
    join(url, sizeof(url), (const char *const[]){cc->url, job->call.path}, 2);
    join(idem, sizeof(idem),
         (const char *const[]){"Idempotency-Key: ", job->req->event_id, ":", type->name,
                               job->call.idempotency_suffix ? job->call.idempotency_suffix : ""},
         5);
    join(ctype, sizeof(ctype), (const char *const[]){"Content-Type: ", job->call.content_type}, 2);

    /* The whole call, cut short by the job's deadline. */
    long timeout = cc->timeout_ms;
    if (job->ticket.deadline_ms) {
        int64_t left = job->ticket.deadline_ms - now;
        if (left < timeout)
            timeout = left < 1 ? 1 : (long)left;
    }
    struct dw_xfer_request xr = {
        .tag = (int)job->channel,
        .url = url,
        .body = job->call.body,
        .body_len = job->call.body_len,
        .lines = {idem, ctype},
        .headers = pool->headers[job->channel],
        .connect_timeout_ms = cc->connect_timeout_ms,
        .timeout_ms = timeout,
        .opaque = job,
    };
    if (dw_xfer_start(w->loop, &xr) != DW_OK) {
        dw_http_call_cleanup(&job->call);
        finish(w, job, DW_EC_CONNECTION, "libcurl could not start the call", NULL);
        return;
    }
    job->inflight_at_start = dw_guard_call_started(g);
    running_link(w, job);
}

/* ---- a call ended ---- */

/* The try ended (its last step answered, or a step failed): its outcome
 * to the breaker and the budget, its slot back. */
static void end_try(struct worker *w, struct job *job, enum dw_errcode error,
                    int64_t retry_after_ms, bool shed)
{
    struct dw_pool *pool = w->pool;
    struct dw_guard *g = pool->guards[job->channel];
    int64_t took_us = dw_now_us() - job->try_started_us;
    bool had_slot = job->ticket.has_slot;
    struct dw_breaker_transition t;

    struct dw_bulkhead_waiter *handed =
        dw_guard_end(g, &job->ticket, error, took_us / 1000, dw_now_ms(), retry_after_ms, shed, &t);
    report(pool, job->channel, &t);
    dw_metrics_breaker_call(pool->opts.metrics, job->channel,
                            error == DW_EC_NONE                    ? DW_BREAKER_SUCCESS
                            : shed || !dw_errcode_transient(error) ? DW_BREAKER_IGNORED
                                                                   : DW_BREAKER_FAILURE,
                            took_us);
    dw_metrics_retry_budget(pool->opts.metrics, job->channel, dw_guard_budget_tokens(g), false);
    if (had_slot)
        slot_back(pool, job->channel, handed);
}

static void retry_or_fail(struct worker *w, struct job *job, enum dw_errcode error,
                          const char *message, int64_t retry_after_ms, bool shed)
{
    struct dw_guard *g = w->pool->guards[job->channel];
    struct dw_retry_verdict v;
    int64_t now = dw_now_ms();

    job->last_error = error;
    free(job->last_message);
    job->last_message = dw_xstrdup(message);
    /* Shed load (a 503 while the limit probed above what the channel
     * takes, a SYN dropped by a full accept queue) does not use up an
     * attempt: the limit or the pace shrinks on it and the job tries again
     * within its deadline. A channel that is down sheds nothing (see
     * dw_guard_shed): the breaker or the attempts end the job. */
    if (shed)
        job->shed_tries++;
    dw_guard_after_failure(g, &job->ticket, job->attempts, job->shed_tries, error, message,
                           retry_after_ms, now, dw_retry_random(&w->rnd), &v);
    if (!v.retry) {
        if (v.stop == DW_RETRY_STOP_BUDGET)
            dw_metrics_retry_budget(w->pool->opts.metrics, job->channel, dw_guard_budget_tokens(g),
                                    true);
        finish(w, job, v.error, v.message, NULL);
        return;
    }
    job->new_try = true;
    /* now is the clock truncated to the millisecond, up to 1 ms behind
     * the real moment: one more keeps "at least Retry-After" true. */
    park(w, job, WAIT_RETRY, now + v.wait_ms + 1);
}

static void on_call_done(void *owner, const struct dw_xfer_result *r)
{
    struct worker *w = owner;
    struct dw_pool *pool = w->pool;
    struct job *job = r->opaque;
    const struct dw_channel_type *type = dw_channel_get(job->channel);
    char message[DW_ERRMSG_MAX] = "";
    enum dw_errcode error;

    running_unlink(w, job);
    if (r->outcome == DW_XFER_ANSWERED)
        w->multiplexed[pool->origin[job->channel]] = r->multiplexed;
    if (r->new_connection || r->connect_timed_out) {
        struct origin_pace *op = &pool->paces[pool->origin[job->channel]];
        pthread_mutex_lock(&op->lock);
        if (r->connect_timed_out)
            dw_pace_failed(&op->pace, dw_now_ms());
        else
            dw_pace_connected(&op->pace, dw_now_ms());
        pthread_mutex_unlock(&op->lock);
    }
    switch (r->outcome) {
    case DW_XFER_ANSWERED:
        error = dw_channel_classify_http(r->status);
        if (error != DW_EC_NONE)
            dw_snprintf(message, sizeof(message), "HTTP %ld from %s", r->status, job->call.path);
        break;
    case DW_XFER_TIMEOUT:
        error = DW_EC_TIMEOUT;
        break;
    case DW_XFER_TOO_LARGE:
        error = DW_EC_BAD_RESPONSE;
        dw_snprintf(message, sizeof(message), "answer from %s larger than %d bytes", job->call.path,
                    RESPONSE_CAP);
        break;
    default:
        error = DW_EC_CONNECTION;
        break;
    }
    if (r->outcome == DW_XFER_TIMEOUT || r->outcome == DW_XFER_CONNECT)
        dw_strlcpy(message, r->error, sizeof(message));

    /* Every call's latency and outcome to the channel's limit. */
    struct dw_guard *g = pool->guards[job->channel];
    int limit = dw_guard_call_ended(g, dw_now_us(), r->took_us, job->inflight_at_start,
                                    dw_guard_signal(error, r->status));
    publish_flow(pool, job->channel, limit);
    grant_free_slots(pool, job->channel);

    struct dw_channel_reply reply;
    reply.external_id[0] = reply.url[0] = '\0';
    if (error == DW_EC_NONE) {
        char why[DW_ERRMSG_MAX] = "";
        error = type->parse(job->step, r->body, r->body_len, &reply, why, sizeof(why));
        if (error != DW_EC_NONE)
            dw_snprintf(message, sizeof(message), "HTTP %ld from %s: %s", r->status, job->call.path,
                        why);
    }
    dw_metrics_channel_call(pool->opts.metrics, job->channel, error, r->took_us);
    dw_http_call_cleanup(&job->call);

    if (error == DW_EC_NONE && job->step < job->last_step) {
        /* The next step of the same try (Instagram's publish), under the
         * same permit and slot. */
        dw_strlcpy(job->prev_id, reply.external_id, sizeof(job->prev_id));
        job->step++;
        dw_list_push_front(&w->ready, &job->queue);
        return;
    }
    int64_t retry_after_ms = 0;
    if (r->outcome == DW_XFER_ANSWERED && r->retry_after_s > 0)
        retry_after_ms =
            r->retry_after_s > INT64_MAX / 1000 / 2 ? INT64_MAX / 2 : r->retry_after_s * 1000;
    bool shed = dw_guard_shed(g, error, r->status, r->connect_timed_out, dw_now_ms());
    end_try(w, job, error, error == DW_EC_RATE_LIMITED ? retry_after_ms : 0, shed);
    if (error != DW_EC_NONE) {
        retry_or_fail(w, job, error, message, retry_after_ms, shed);
        return;
    }
    finish(w, job, DW_EC_NONE, NULL, &reply);
}

/* A connection of channel `tag` opened or closed on this worker's loop. */
static void on_conn(void *owner, int tag, int delta)
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

/* ---- timers and grants ---- */

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
    refuse(w, job, DW_EC_BULKHEAD_FULL, why);
}

/* Parked jobs that were handed a slot: to the front of ready, holding it,
 * in the order the slots were handed over. */
static void take_grants(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    struct dw_list granted = w->granted;
    dw_list_init(&w->granted);
    pthread_mutex_unlock(&w->lock);
    struct dw_list got = {0};
    struct dw_list_node *node;
    while ((node = dw_list_pop_front(&granted))) {
        struct job *job = DW_CONTAINER_OF(node, struct job, grant);
        if (job->wait == WAIT_SLOT)
            dw_heap_remove(&w->timers, &job->timer);
        job->wait = WAIT_NONE;
        dw_guard_granted(w->pool->guards[job->channel], &job->ticket);
        dw_metrics_bulkhead_change(w->pool->opts.metrics, job->channel, 0, -1);
        dw_list_push_back(&got, &job->queue);
    }
    /* got, then what was ready: the granted jobs go first. */
    dw_list_splice_back(&got, &w->ready);
    w->ready = got;
}

/* ---- the worker thread ---- */

/* Worker 0, about once a second: each breaker's snapshot to the metrics,
 * so a HALF_OPEN past half_open_max_wait_ms shows OPEN even when no call
 * comes to move it (the snapshot makes that transition). */
static void snapshot_breakers(struct worker *w, int64_t now)
{
    struct dw_pool *pool = w->pool;
    if (w != &pool->workers[0] || now - w->snapshot_ms < BREAKER_SNAPSHOT_EVERY_MS)
        return;
    w->snapshot_ms = now;
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        struct dw_breaker_snapshot snap;
        dw_guard_breaker_snapshot(pool->guards[c], now, &snap);
        dw_metrics_breaker(pool->opts.metrics, (enum dw_channel_id)c, &snap);
    }
}

/* Keeps the loop's connection cache near what the limits use: busy
 * connections are at most the calls the limits allow, and idle ones beyond
 * them are closed oldest first. */
static void size_connection_cache(struct worker *w, int64_t now)
{
    if (now - w->conn_cap_ms < CONN_CAP_EVERY_MS)
        return;
    w->conn_cap_ms = now;
    long sum = 0;
    for (int c = 0; c < DW_CHANNEL_COUNT; c++)
        sum += dw_guard_limit(w->pool->guards[c]);
    if (sum > w->max_running)
        sum = w->max_running;
    dw_xfer_set_max_connections(w->loop, sum + 8);
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
        take_grants(w);

        int64_t now = dw_now_ms();
        struct dw_heap_node *top;
        while ((top = dw_heap_top(&w->timers)) && top->key <= now)
            timer_fired(w, timer_job(dw_heap_pop(&w->timers)));
        start_connq(w, now);

        while (!dw_list_empty(&w->ready) && w->running < w->max_running)
            start(w, queued_job(dw_list_pop_front(&w->ready)));

        dw_xfer_run_due(w->loop, dw_now_ms());
        if (!dw_list_empty(&w->ready) && w->running < w->max_running)
            continue; /* a finished step or retry is ready to go now */

        now = dw_now_ms();
        size_connection_cache(w, now);
        snapshot_breakers(w, now);
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

static void guards_init(struct dw_pool *pool)
{
    int64_t now = dw_now_ms();
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const struct dw_channel_config *cc = &pool->opts.cfg->channels[c];
        enum dw_channel_id ch = (enum dw_channel_id)c;
        pool->observers[c] = (struct breaker_observer){pool, ch};
        pool->guards[c] = dw_guard_create(ch, cc, on_breaker_change, &pool->observers[c], now);
        int limit = dw_guard_limit(pool->guards[c]);
        atomic_store(&pool->limits[c], limit);
        dw_metrics_bulkhead_init(pool->opts.metrics, ch, limit);
        dw_metrics_channel_limit(pool->opts.metrics, ch, limit, limit);
        dw_metrics_retry_budget(pool->opts.metrics, ch, dw_guard_budget_tokens(pool->guards[c]),
                                false);
        const char *name = dw_channel_get(ch)->name;
        if (cc->breaker.mode != DW_BREAKER_MODE_NORMAL) {
            dw_log_write(
                pool->opts.log, DW_LOG_WARN, (struct dw_log_ctx){NULL, name, -1, -1},
                "circuit breaker of %s is %s by configuration%s", name,
                cc->breaker.mode == DW_BREAKER_MODE_FORCED_OPEN ? "FORCED_OPEN" : "DISABLED",
                cc->breaker.mode == DW_BREAKER_MODE_FORCED_OPEN ? ": every call fails CIRCUIT_OPEN"
                                                                : ": it never opens");
        }
    }
}

/* The constant header lines of each channel. False when out of memory. */
static bool headers_init(struct dw_pool *pool)
{
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const struct dw_channel_config *cc = &pool->opts.cfg->channels[c];
        const char *token = cc->token ? cc->token : "";
        size_t len = strlen("Authorization: Bearer ") + strlen(token) + 1;
        char *auth = dw_xmalloc(len);
        join(auth, len, (const char *const[]){"Authorization: Bearer ", token}, 2);
        const char *const lines[] = {
            auth,
            "Accept: application/json",
            /* No "Expect: 100-continue" round trip before a body. */
            "Expect:",
            "User-Agent: distribution-worker",
        };
        pool->headers[c] = dw_xfer_headers_new(lines, DW_ARRAY_LEN(lines));
        free(auth);
        if (!pool->headers[c])
            return false;
    }
    return true;
}

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
    guards_init(pool);
    origins_init(pool);
    if (!headers_init(pool)) {
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
        w->max_running = opts->max_calls / opts->threads;
        w->rnd = (seed + (uint64_t)i * 0x2545F4914F6CDD1DULL) | 1;
        w->conn_cap_ms = INT64_MIN / 2;
        w->connq_due_ms = INT64_MAX;
        pthread_mutex_init(&w->lock, NULL);
        struct dw_xfer_options xo = {
            .max_calls = w->max_running,
            .response_cap = RESPONSE_CAP,
            .env_proxy = env_proxy,
            .transport = pool->transport,
            .max_host_connections = opts->cfg->max_host_connections,
            .done = on_call_done,
            .conn = on_conn,
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
    if (prev_id)
        dw_strlcpy(job->prev_id, prev_id, sizeof(job->prev_id));
    job->new_try = true;
    dw_guard_want(pool->guards[channel], &job->ticket);

    unsigned i = atomic_fetch_add(&pool->next_worker, 1) % (unsigned)pool->nworkers;
    struct worker *w = &pool->workers[i];
    job->worker = w;
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

bool dw_pool_congested(struct dw_pool *pool, double factor)
{
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        publish_flow(pool, (enum dw_channel_id)c, dw_guard_limit(pool->guards[c]));
        if (dw_guard_congested(pool->guards[c], factor))
            return true;
    }
    return false;
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
    give_back(pool, job);
    job_free(job);
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
            struct job *job = timer_job(w->timers.nodes[k]);
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
            running_unlink(w, job);
            abandon(pool, job);
        }
        while ((job = queued_job(dw_list_pop_front(&w->inbox))))
            abandon(pool, job);
        while ((job = queued_job(dw_list_pop_front(&w->ready))))
            abandon(pool, job);
        for (int o = 0; o < DW_CHANNEL_COUNT; o++) {
            while ((job = queued_job(dw_list_pop_front(&w->connq[o]))))
                abandon(pool, job);
        }
        for (size_t k = 0; k < w->timers.len; k++) {
            struct job *job = timer_job(w->timers.nodes[k]);
            if (job->wait != WAIT_GRANTED)
                abandon(pool, job);
        }
        w->timers.len = 0;
        struct dw_list_node *node;
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
        if (pool->paces_ready)
            pthread_mutex_destroy(&pool->paces[c].lock);
    }
    free(pool);
}
