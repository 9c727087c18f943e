/*
 * Dispatch: drives requests through begin -> channel calls -> stored
 * results -> stored overall status -> completion. This file holds the
 * inbox, the loop and the runs' lifecycle (the active-event table, the
 * result hold, producing completions); src/dispatch_store.c the store
 * steps, batched, and their retry.
 *
 * Threads: the dispatch thread owns every `struct run`, the active-event
 * table and the store connection. Other threads only touch the inbox
 * (mutex + condition variable): dw_dispatch_submit adds new runs, pool
 * threads add channel results (redis bio.c style: results come back through
 * a queue plus a wake-up). With opts.manual there is no dispatch thread:
 * the caller runs each pass (dw_dispatch_pass), as the unit tests do.
 *
 * Time: each pass reads the injected clock once (dw_dispatch_tick, again
 * after a store round trip) and everything in it uses that time.
 *
 * Invariants:
 * - A run is in exactly one of: the inbox, a waiting list behind an active
 *   run of the same eventId, the begin queue, "calling" (channel jobs out),
 *   the finish queue, the produce queue.
 * - A channel result is stored before its run can finish, and the overall
 *   status is stored before the completion is produced, so nothing is
 *   acknowledged (and committed) ahead of the database. A run's results
 *   are held until all have arrived or result_hold_ms passed, then stored,
 *   together with its overall status when they were the last.
 * - A store failure leaves the queues as they were; the same batch is
 *   retried after reconnecting (writes are idempotent; dispatch_store.c).
 *
 * Automatic re-drive (CONTRACT 2.4, docs/design.md): every CLAIM_EVERY_MS
 * the dispatch thread claims due events from the redrive table (store.c)
 * and drives each like a request with no Kafka record (partition and
 * offset -1: its completion commits nothing). A run's begin also takes the
 * event's schedule row for this worker, so a Kafka request and a re-drive
 * of one eventId never run at once across workers either: a begin that
 * finds another worker's live claim waits (blocked_q) and begins again.
 * A finish writes the event's next schedule (transient failures left and
 * still young enough) or deletes it, in the same transaction.
 *
 * Memory: a run keeps only what its drive decides with (which channels it
 * called, which of them succeeded), not the stored state read at begin nor
 * the results' strings: up to max_in_flight_requests runs are held, and the
 * completion is built from what the store reads back when finishing. A
 * channel result carries its strings, sized to their content, only until
 * it is stored.
 */
#include "dw/dispatch.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dispatch_internal.h"
#include "dw/channel.h"
#include "dw/pool.h"
#include "dw/request.h"

/* ---- lists and the active table ---- */

static size_t bucket_of(const struct dw_dispatch *d, const char *event_id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)event_id; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h & (d->active_buckets - 1));
}

static struct run *active_find(struct dw_dispatch *d, const char *event_id)
{
    for (struct run *r = d->active[bucket_of(d, event_id)]; r; r = r->hnext)
        if (strcmp(r->req->event_id, event_id) == 0)
            return r;
    return NULL;
}

static void active_add(struct dw_dispatch *d, struct run *r)
{
    size_t b = bucket_of(d, r->req->event_id);
    r->hnext = d->active[b];
    d->active[b] = r;
}

static void active_remove(struct dw_dispatch *d, struct run *r)
{
    struct run **pp = &d->active[bucket_of(d, r->req->event_id)];
    while (*pp && *pp != r)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = r->hnext;
    r->hnext = NULL;
}

static void run_free(struct run *r)
{
    if (!r)
        return;
    while (r->held) {
        struct result_msg *m = r->held;
        r->held = m->next;
        free(m);
    }
    dw_request_destroy(r->req);
    free(r->completion);
    free(r);
}

/* ---- callbacks from other threads ---- */

/* Copies len bytes of s and a terminating NUL to *pos, moving *pos past
 * them; returns the copy. */
static const char *put_text(char **pos, const char *s, size_t len)
{
    char *copy = *pos;
    memcpy(copy, s, len);
    copy[len] = '\0';
    *pos += len + 1;
    return copy;
}

/* On a pool thread: hand the result to the dispatch thread. */
void dw_dispatch_channel_done(void *job, const struct dw_call_result *result)
{
    struct run *run = job;
    struct dw_dispatch *d = run->d;
    /* Bounded by the arrays, so even an unterminated one is safe to copy. */
    size_t message_len = strnlen(result->error_message, sizeof(result->error_message));
    size_t id_len = strnlen(result->external_id, sizeof(result->external_id));
    size_t url_len = strnlen(result->url, sizeof(result->url));
    struct result_msg *m = dw_xmalloc(sizeof(*m) + message_len + id_len + url_len + 3);
    m->run = run;
    m->channel = result->channel;
    m->status = result->status;
    m->error = result->error;
    m->attempts = result->attempts;
    m->step = result->step;
    char *pos = m->text;
    m->error_message = put_text(&pos, result->error_message, message_len);
    m->external_id = put_text(&pos, result->external_id, id_len);
    m->url = put_text(&pos, result->url, url_len);
    pthread_mutex_lock(&d->lock);
    m->next = d->results;
    d->results = m;
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
}

enum dw_err dw_dispatch_submit(struct dw_dispatch *d, struct dw_request *req, int32_t partition,
                               int64_t offset)
{
    struct run *r = dw_xcalloc(1, sizeof(*r));
    r->d = d;
    r->req = req;
    r->partition = partition;
    r->offset = offset;
    pthread_mutex_lock(&d->lock);
    if (d->stopping) {
        pthread_mutex_unlock(&d->lock);
        run_free(r);
        return DW_ERR_STOPPED;
    }
    dw_dispatch_push(&d->inbox, r);
    atomic_fetch_add(&d->in_flight, 1);
    atomic_fetch_add(&d->in_flight_bytes, req->bytes);
    dw_metrics_gauge_add(d->opts.metrics, DW_GAUGE_REQUESTS_IN_FLIGHT, 1);
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
    return DW_OK;
}

size_t dw_dispatch_in_flight(const struct dw_dispatch *d)
{
    return atomic_load(&d->in_flight);
}

double dw_dispatch_queue_ratio(const struct dw_dispatch *d)
{
    return d->calls.queue_ratio ? d->calls.queue_ratio(d->calls.opaque) : 0.0;
}

size_t dw_dispatch_in_flight_bytes(const struct dw_dispatch *d)
{
    return atomic_load(&d->in_flight_bytes);
}

bool dw_dispatch_store_ok(const struct dw_dispatch *d)
{
    return atomic_load(&d->store_ok);
}

void dw_dispatch_drain(struct dw_dispatch *d)
{
    atomic_store(&d->draining, true);
}

/* ---- the dispatch thread ---- */

/* A run is finished with (completion acknowledged or abandoned): let the
 * next request for the same event begin. */
void dw_dispatch_retire(struct dw_dispatch *d, struct run *r)
{
    active_remove(d, r);
    struct run *next = r->waiting;
    if (next) {
        next->waiting = next->next; /* the rest wait behind the next one */
        next->next = NULL;
        active_add(d, next);
        dw_dispatch_push(&d->begin_q, next);
    }
    atomic_fetch_sub(&d->in_flight_bytes, r->req->bytes);
    if (r->redrive)
        d->redrive_runs--;
    run_free(r);
    atomic_fetch_sub(&d->in_flight, 1);
    dw_metrics_gauge_add(d->opts.metrics, DW_GAUGE_REQUESTS_IN_FLIGHT, -1);
}

void dw_dispatch_accept(struct dw_dispatch *d, struct list *in)
{
    struct run *r;
    while ((r = dw_dispatch_pop(in))) {
        struct run *busy = active_find(d, r->req->event_id);
        if (!busy) {
            active_add(d, r);
            dw_dispatch_push(&d->begin_q, r);
            continue;
        }
        /* Wait behind the active run; its waiters form a list via next. */
        if (!busy->waiting) {
            busy->waiting = r;
        } else {
            struct run *w = busy->waiting;
            while (w->next)
                w = w->next;
            w->next = r;
        }
    }
}

/* ---- holding results ---- */

static void hold_link(struct dw_dispatch *d, struct run *r)
{
    r->holding = true;
    dw_list_push_back(&d->hold, &r->hold_node);
}

static void hold_unlink(struct dw_dispatch *d, struct run *r)
{
    if (!r->holding)
        return;
    dw_list_remove(&d->hold, &r->hold_node);
    r->holding = false;
}

/* The run holding longest, or NULL. */
static struct run *hold_first(const struct dw_dispatch *d)
{
    return d->hold.head ? DW_CONTAINER_OF(d->hold.head, struct run, hold_node) : NULL;
}

/* The run's held results go to the store queue. */
static void release_held(struct dw_dispatch *d, struct run *r)
{
    hold_unlink(d, r);
    while (r->held) {
        struct result_msg *m = r->held;
        r->held = m->next;
        m->next = d->save_q;
        d->save_q = m;
        d->save_len++;
    }
}
/* Runs whose results have waited result_hold_ms: store what they have.
 * Every run holds for the same time, so the list is in deadline order. */
static void release_due(struct dw_dispatch *d)
{
    struct run *r;
    while ((r = hold_first(d)) && r->hold_until <= d->now)
        release_held(d, r);
}

/*
 * A request's results are held until all its channels have answered (or
 * result_hold_ms passed), so that they and its overall status go to the
 * database in one round trip: with the begin, two per request even when
 * nothing else is there to batch with.
 */
static void take_results(struct dw_dispatch *d, struct result_msg *in)
{
    while (in) {
        struct result_msg *m = in;
        in = m->next;
        struct run *r = m->run;
        struct dw_log_ctx ctx = dw_dispatch_ctx(r, dw_channel_get(m->channel)->name);
        if (m->status == DW_CH_SUCCESS && m->step < dw_channel_get(m->channel)->steps - 1) {
            /* A first step answered: its id is stored before the next. */
            m->next = d->step_q;
            d->step_q = m;
            continue;
        }
        if (m->step > 0 && r->step_carry) {
            m->attempts += r->step_carry;
            r->step_carry = 0;
        }
        if (r->redrive)
            dw_metrics_redrive_call(d->opts.metrics, m->channel, m->status == DW_CH_SUCCESS);
        if (m->status != DW_CH_SUCCESS && dw_redrive_transient(m->error))
            r->transient |= 1u << m->channel;
        if (m->status == DW_CH_SUCCESS) {
            r->succeeded |= 1u << m->channel;
            dw_log_write(d->opts.log, DW_LOG_DEBUG, ctx, "SUCCESS after %d attempt(s)",
                         m->attempts);
        } else { /* the message already says how many attempts where that matters */
            dw_log_write(d->opts.log, DW_LOG_WARN, ctx, "FAILED %s (attempts %d): %s",
                         dw_errcode_name(m->error), m->attempts, m->error_message);
        }
        m->next = r->held;
        r->held = m;
        r->arrived++;
        if (r->arrived == __builtin_popcount(r->called) || d->opts.cfg->result_hold_ms == 0) {
            release_held(d, r);
        } else if (!r->holding) {
            r->hold_until = d->now + d->opts.cfg->result_hold_ms;
            hold_link(d, r);
        }
    }
}

static void do_produce(struct dw_dispatch *d)
{
    struct run *r;
    while ((r = d->produce_q.head)) {
        if (d->completions.send(d->completions.opaque, r->req->event_id, r->completion,
                                r->partition, r->offset) != DW_OK) {
            /* Kept and retried on the next round; its offset stays pending. */
            d->reconnect_at = d->now + RECONNECT_MIN_MS;
            return;
        }
        dw_dispatch_pop(&d->produce_q);
        dw_dispatch_retire(d, r);
    }
}

/* Runs whose event was busy elsewhere begin again once their wait is over
 * (all wait equally long, so the list is in deadline order). */
static void release_blocked(struct dw_dispatch *d)
{
    while (d->blocked_q.head && d->blocked_q.head->begin_again_at <= d->now)
        dw_dispatch_push(&d->begin_q, dw_dispatch_pop(&d->blocked_q));
}

void dw_dispatch_tick(struct dw_dispatch *d)
{
    d->now = d->clock.now_ms(d->clock.opaque);
    d->wall = d->clock.wall_ms(d->clock.opaque);
}

/* How long the loop may sleep at time now before something is due: 0 when
 * something is due already (a retry, an idle ping, held results, a blocked
 * begin, the re-drive claim), else until the earliest of them. */
static int64_t due_in(const struct dw_dispatch *d, int64_t now)
{
    bool busy = dw_dispatch_has_store_work(d) || d->produce_q.len;
    if (busy && now >= d->reconnect_at)
        return 0;
    if (!busy && now - d->last_store_ok >= IDLE_PING_MS && now >= d->reconnect_at)
        return 0; /* time for an idle ping */
    if (hold_first(d) && now >= hold_first(d)->hold_until)
        return 0; /* held results are due */
    if (d->blocked_q.head && now >= d->blocked_q.head->begin_again_at)
        return 0; /* a blocked begin may go again */
    bool claiming = d->opts.cfg->redrive.tiers > 0 && !atomic_load(&d->draining);
    if (claiming && now >= d->next_claim_at)
        return 0; /* time to look for due re-drives */
    int64_t wait_ms = busy ? d->reconnect_at - now : IDLE_PING_MS;
    if (hold_first(d) && hold_first(d)->hold_until - now < wait_ms)
        wait_ms = hold_first(d)->hold_until - now;
    if (d->blocked_q.head && d->blocked_q.head->begin_again_at - now < wait_ms)
        wait_ms = d->blocked_q.head->begin_again_at - now;
    if (claiming && d->next_claim_at - now < wait_ms)
        wait_ms = d->next_claim_at - now;
    return wait_ms < 1 ? 1 : wait_ms;
}

void dw_dispatch_pass(struct dw_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    struct list in = d->inbox;
    memset(&d->inbox, 0, sizeof(d->inbox));
    struct result_msg *results = d->results;
    d->results = NULL;
    pthread_mutex_unlock(&d->lock);

    dw_dispatch_tick(d);
    dw_dispatch_accept(d, &in);
    take_results(d, results);
    release_due(d);
    release_blocked(d);
    /* Write results and finishes before begins: finishing work first
     * keeps the in-flight count (and so memory) down under load. */
    dw_dispatch_do_steps(d);
    dw_dispatch_do_write(d);
    do_produce(d);
    dw_dispatch_do_begin(d);
    dw_dispatch_do_claim(d);
    dw_dispatch_do_begin(d); /* what was just claimed */
    dw_dispatch_idle_ping(d);
}

static void *dispatch_main(void *arg)
{
    struct dw_dispatch *d = arg;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        while (!d->stopping && !d->inbox.head && !d->results) {
            /* Sleep until woken, or until the next retry, ping or held
             * results are due. */
            int64_t wait_ms = due_in(d, d->clock.now_ms(d->clock.opaque));
            if (wait_ms == 0)
                break;
            struct timespec ts = dw_deadline_in(wait_ms);
            pthread_cond_timedwait(&d->wake, &d->lock, &ts);
        }
        bool stopping = d->stopping;
        pthread_mutex_unlock(&d->lock);
        if (stopping)
            break; /* what the inbox holds, dw_dispatch_stop frees */
        dw_dispatch_pass(d);
    }
    return NULL;
}

/* ---- lifecycle ---- */

static int64_t system_now_ms(void *opaque)
{
    (void)opaque;
    return dw_now_ms();
}

static int64_t system_wall_ms(void *opaque)
{
    (void)opaque;
    return dw_wall_ms();
}

static enum dw_err real_send(void *opaque, const char *event_id, const char *json,
                             int32_t partition, int64_t offset)
{
    return dw_producer_send_completion(opaque, event_id, json, partition, offset);
}

static enum dw_err real_submit(void *opaque, const struct dw_request *req,
                               enum dw_channel_id channel, void *job, int from, const char *prev_id,
                               int to)
{
    return dw_pool_submit_steps(opaque, req, channel, job, from, prev_id, to);
}

static int real_free_permits(void *opaque, enum dw_channel_id channel)
{
    return dw_pool_free_permits(opaque, channel);
}

static double real_queue_ratio(void *opaque)
{
    return dw_pool_queue_ratio(opaque);
}

/* The channel-call pool, unless one was injected. */
static enum dw_err calls_open(struct dw_dispatch *d, char *errbuf, size_t errlen)
{
    const struct dw_config *cfg = d->opts.cfg;
    if (d->opts.calls) {
        d->calls = *d->opts.calls;
        return DW_OK;
    }
    struct dw_pool_options po = {
        .threads = cfg->pool_threads,
        .max_calls = cfg->max_in_flight_calls,
        .cfg = cfg,
        .log = d->opts.log,
        .metrics = d->opts.metrics,
        .done = dw_dispatch_channel_done,
    };
    enum dw_err err = dw_pool_start(&po, &d->own_pool, errbuf, errlen);
    if (err)
        return err;
    d->calls = (struct dw_dispatch_calls){
        .opaque = d->own_pool,
        .submit = real_submit,
        .free_permits = real_free_permits,
        .queue_ratio = real_queue_ratio,
    };
    return DW_OK;
}

enum dw_err dw_dispatch_start(const struct dw_dispatch_options *opts, struct dw_dispatch **out,
                              char *errbuf, size_t errlen)
{
    enum dw_err err = DW_OK;
    struct dw_dispatch *d = dw_xcalloc(1, sizeof(*d));
    d->opts = *opts;
    pthread_mutex_init(&d->lock, NULL);
    dw_cond_init_monotonic(&d->wake);
    d->active_buckets = 1024;
    while (d->active_buckets < (size_t)opts->cfg->max_in_flight_requests * 2)
        d->active_buckets *= 2;
    d->active = dw_xcalloc(d->active_buckets, sizeof(*d->active));
    d->clock = opts->clock ? *opts->clock
                           : (struct dw_dispatch_clock){NULL, system_now_ms, system_wall_ms};
    d->completions = opts->completions
                         ? *opts->completions
                         : (struct dw_dispatch_completions){opts->producer, real_send};
    dw_dispatch_tick(d);

    if (opts->store)
        d->store = *opts->store;
    else
        err = dw_dispatch_store_open(d, errbuf, errlen);
    if (err)
        goto out;
    atomic_store(&d->store_ok, true);
    d->last_store_ok = d->now;
    d->round_trips_seen = d->store.round_trips(d->store.opaque);

    err = calls_open(d, errbuf, errlen);
    if (err)
        goto out;
    if (!opts->manual) {
        if (pthread_create(&d->thread, NULL, dispatch_main, d) != 0) {
            dw_snprintf(errbuf, errlen, "dispatch: could not start its thread");
            err = DW_ERR_IO;
            goto out;
        }
        d->thread_started = true;
    }
    *out = d;
out:
    if (err)
        dw_dispatch_stop(d);
    return err;
}

static void free_list(struct list *l)
{
    struct run *r;
    while ((r = dw_dispatch_pop(l)))
        run_free(r);
}

void dw_dispatch_stop(struct dw_dispatch *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
    if (d->thread_started)
        pthread_join(d->thread, NULL);
    /* No more callbacks after this returns, so what the pool still held
     * (borrowed pointers into our runs) is gone before the runs are. */
    dw_pool_stop(d->own_pool);

    /* Every run is in the active table (with its waiters chained behind
     * it) or, if it never began, in the inbox. Queues hold runs that are
     * also active, so free through the table only. */
    for (size_t b = 0; d->active && b < d->active_buckets; b++) {
        struct run *r = d->active[b];
        while (r) {
            struct run *hnext = r->hnext;
            struct run *w = r->waiting;
            while (w) {
                struct run *wn = w->next;
                run_free(w);
                w = wn;
            }
            run_free(r);
            r = hnext;
        }
    }
    free_list(&d->inbox);
    while (d->results) {
        struct result_msg *m = d->results;
        d->results = m->next;
        free(m);
    }
    while (d->save_q) {
        struct result_msg *m = d->save_q;
        d->save_q = m->next;
        free(m);
    }
    while (d->step_q) {
        struct result_msg *m = d->step_q;
        d->step_q = m->next;
        free(m);
    }
    free(d->active);
    dw_store_destroy(d->own_store);
    pthread_cond_destroy(&d->wake);
    pthread_mutex_destroy(&d->lock);
    free(d);
}
