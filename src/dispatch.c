/*
 * Dispatch: drives requests through begin -> channel calls -> stored
 * results -> stored overall status -> completion.
 *
 * Threads: the dispatch thread owns every `struct run`, the active-event
 * table and the store connection. Other threads only touch the inbox
 * (mutex + condition variable): dw_dispatch_submit adds new runs, pool
 * threads add channel results (redis bio.c style: results come back through
 * a queue plus a wake-up).
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
 *   retried after reconnecting (writes are idempotent).
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
#include <unistd.h>

#include "dw/channel.h"
#include "dw/pool.h"
#include "dw/redrive.h"
#include "dw/report.h"
#include "dw/request.h"
#include "dw/store.h"

#define RECONNECT_MIN_MS 100
/* An idle dispatch pings the database this often, so readiness and the
 * consumer's pause follow an outage even when no request is flowing. */
#define IDLE_PING_MS 1000
/* How often due re-drives are looked for, and how many one worker runs at
 * once (fewer while a breaker is HALF_OPEN: its free trial calls). */
#define CLAIM_EVERY_MS   500
#define REDRIVE_RUNS_MAX 200
/* A begin that found another worker's claim on its event tries again. */
#define BLOCKED_RETRY_MS 500

struct run {
    struct dw_dispatch *d;
    struct run *next;    /* in whichever list holds it */
    struct run *waiting; /* later requests for the same eventId */
    struct run *hnext;   /* active-table chain */
    struct dw_request *req;
    char *completion; /* JSON, while waiting to be produced */
    int64_t offset;
    int32_t partition;
    /* Bit (1u << enum dw_channel_id) per channel. A requested channel not
     * called was stored SUCCESS when the drive began. */
    unsigned called;    /* called in this drive */
    unsigned succeeded; /* called, and its result is SUCCESS */
    int outstanding;    /* channel results not yet stored */
    /* Results that arrived and wait for the rest of the run's (or for
     * hold_until), linked in the dispatch's hold list meanwhile. */
    struct result_msg *held;
    int arrived;
    bool holding;
    int64_t hold_until;
    struct run *hold_prev, *hold_next;
    int in_batch; /* scratch: results of this run in the store batch being written */
    /* Automatic re-drive. */
    bool redrive;           /* run by the worker itself: no Kafka record behind it */
    bool scheduled;         /* the event had a schedule row at begin (now ours) */
    int tier;               /* that row's tier */
    int64_t born_ms;        /* when the request's age counts from (wall clock) */
    unsigned kept_failed;   /* not called by a re-drive: stored FAILED for good (4xx...) */
    unsigned transient;     /* called and FAILED for a transient cause */
    int64_t begin_again_at; /* in blocked_q: when to begin again */
    /* Tries of a channel's first step (Instagram's media) that belong to
     * the try its next step continues; added to that step's attempts. */
    int step_carry;
};

/* One channel result, from a pool thread until it is stored. The three
 * strings are copied into text[] at their own length: the pool's fixed
 * arrays are about 900 bytes, and with the database down every running
 * request's results wait here. */
struct result_msg {
    struct result_msg *next;
    struct run *run;
    enum dw_channel_id channel;
    enum dw_chstatus status;
    enum dw_errcode error;
    int attempts;
    int step;                  /* the last step its job ran */
    const char *error_message; /* each points into text; "" when none */
    const char *external_id;
    const char *url;
    char text[];
};

struct list {
    struct run *head, *tail;
    size_t len;
};

struct dw_dispatch {
    struct dw_dispatch_options opts;
    struct dw_pool *pool;
    struct dw_store *store;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t lock; /* guards inbox, results, stopping */
    pthread_cond_t wake;
    struct list inbox;
    struct result_msg *results;
    bool stopping;

    atomic_size_t in_flight;
    atomic_size_t in_flight_bytes; /* sum of dw_request.bytes of those */
    atomic_bool store_ok;

    /* Dispatch thread only. */
    struct run **active; /* eventId -> run being driven */
    size_t active_buckets;
    struct list begin_q, finish_q, produce_q;
    struct result_msg *save_q;
    size_t save_len;
    struct result_msg *step_q; /* first steps answered, their ids to store before the next */
    struct run *hold_head, *hold_tail; /* by hold_until, earliest first */
    int64_t reconnect_at;
    int64_t last_store_ok; /* when a store call last worked */
    uint64_t round_trips_seen;
    struct list blocked_q; /* runs whose event another worker drives; by begin_again_at */
    int64_t next_claim_at;
    int redrive_runs; /* re-drive runs not yet retired */
    atomic_bool draining;
    char owner[128]; /* this worker in the redrive table's claims */
};

/* ---- lists and the active table ---- */

static void push(struct list *l, struct run *r)
{
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->len++;
}

static struct run *pop(struct list *l)
{
    struct run *r = l->head;
    if (r) {
        l->head = r->next;
        if (!l->head)
            l->tail = NULL;
        r->next = NULL;
        l->len--;
    }
    return r;
}

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
static void on_channel_done(void *opaque, const struct dw_call_result *result)
{
    struct run *run = opaque;
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
    push(&d->inbox, r);
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

bool dw_dispatch_congested(const struct dw_dispatch *d, double factor)
{
    return d->pool && dw_pool_congested(d->pool, factor);
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

static struct dw_log_ctx ctx_of(const struct run *r, const char *channel)
{
    return (struct dw_log_ctx){r->req->event_id, channel, r->partition, r->offset};
}

static void count_round_trips(struct dw_dispatch *d)
{
    uint64_t now = dw_store_round_trips(d->store);
    dw_metrics_count(d->opts.metrics, DW_COUNTER_DB_ROUND_TRIPS, now - d->round_trips_seen);
    d->round_trips_seen = now;
}

/* A store call failed: note it, and retry when the store's reconnect
 * policy says. */
static void store_failed(struct dw_dispatch *d, const char *what)
{
    dw_metrics_count(d->opts.metrics, DW_COUNTER_DB_ERRORS, 1);
    if (!dw_store_connected(d->store) && atomic_exchange(&d->store_ok, false))
        dw_log_error(d->opts.log,
                     "PostgreSQL connection lost during %s; taking no new work "
                     "until it is back",
                     what);
    else
        dw_log_warn(d->opts.log, "PostgreSQL %s failed; retrying", what);
    d->reconnect_at = dw_store_retry_at(d->store); /* the store's policy */
}

static void store_worked(struct dw_dispatch *d)
{
    count_round_trips(d);
    d->last_store_ok = dw_now_ms();
    if (!atomic_exchange(&d->store_ok, true))
        dw_log_info(d->opts.log, "PostgreSQL is back");
}

/* True when the store may be used now (reconnecting first if needed). */
static bool store_usable(struct dw_dispatch *d)
{
    if (dw_now_ms() < d->reconnect_at)
        return false;
    if (dw_store_connected(d->store))
        return true;
    if (dw_store_reconnect(d->store) == DW_OK)
        return true;
    store_failed(d, "reconnect");
    return false;
}

/* A run is finished with (completion acknowledged or abandoned): let the
 * next request for the same event begin. */
static void retire(struct dw_dispatch *d, struct run *r)
{
    active_remove(d, r);
    struct run *next = r->waiting;
    if (next) {
        next->waiting = next->next; /* the rest wait behind the next one */
        next->next = NULL;
        active_add(d, next);
        push(&d->begin_q, next);
    }
    atomic_fetch_sub(&d->in_flight_bytes, r->req->bytes);
    if (r->redrive)
        d->redrive_runs--;
    run_free(r);
    atomic_fetch_sub(&d->in_flight, 1);
    dw_metrics_gauge_add(d->opts.metrics, DW_GAUGE_REQUESTS_IN_FLIGHT, -1);
}

static void accept_new(struct dw_dispatch *d, struct list *in)
{
    struct run *r;
    while ((r = pop(in))) {
        struct run *busy = active_find(d, r->req->event_id);
        if (!busy) {
            active_add(d, r);
            push(&d->begin_q, r);
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

/*
 * Starts a channel's job. A channel of several steps whose first step's
 * answer may be kept (Instagram's container, step_id_ttl_ms) runs one step
 * per job: its first step alone, whose answer is stored before the next
 * is asked for (take_results, do_steps), or, when an answer young enough
 * is stored already, straight from the last step with it. So a retry, a
 * re-drive or a drive after a crash publishes the same container.
 */
static enum dw_err submit(struct dw_dispatch *d, struct run *r, enum dw_channel_id ch,
                          const struct dw_channel_state *st)
{
    const struct dw_channel_type *type = dw_channel_get(ch);
    int last = type->steps - 1;
    if (last == 0 || type->step_id_ttl_ms <= 0)
        return dw_pool_submit(d->pool, r->req, ch, r);
    if (st->present && st->step_id[0] && dw_wall_ms() - st->step_id_at_ms < type->step_id_ttl_ms) {
        dw_log_write(d->opts.log, DW_LOG_DEBUG, ctx_of(r, type->name),
                     "going on from the stored step id %s", st->step_id);
        return dw_pool_submit_steps(d->pool, r->req, ch, r, last, st->step_id, last);
    }
    return dw_pool_submit_steps(d->pool, r->req, ch, r, 0, NULL, 0);
}

static void do_begin(struct dw_dispatch *d)
{
    size_t n = d->begin_q.len;
    if (n == 0 || !store_usable(d))
        return;
    size_t max = (size_t)d->opts.cfg->store_batch_max;
    if (n > max)
        n = max;
    struct dw_store_begin *items = dw_xcalloc(n, sizeof(*items));
    struct run *r = d->begin_q.head;
    for (size_t i = 0; i < n; i++, r = r->next)
        items[i].req = r->req;
    if (dw_store_begin(d->store, items, n) != DW_OK) {
        store_failed(d, "begin");
        free(items);
        return;
    }
    store_worked(d);
    for (size_t i = 0; i < n; i++) {
        r = pop(&d->begin_q);
        if (items[i].redrive_busy) {
            /* Another worker runs a re-drive of this event: wait for it. */
            dw_log_write(d->opts.log, DW_LOG_DEBUG, ctx_of(r, NULL),
                         "another worker is re-driving this event; waiting");
            r->begin_again_at = dw_now_ms() + BLOCKED_RETRY_MS;
            push(&d->blocked_q, r);
            continue;
        }
        r->scheduled = items[i].redrive_row;
        r->tier = items[i].redrive_tier;
        r->born_ms = dw_redrive_born_ms(r->req->requested_at_ms, items[i].status.started_at_ms);
        if (r->redrive && !r->scheduled) {
            /* The schedule went while this waited (the event was driven to
             * the end elsewhere, or an operator gave up on it). */
            dw_log_write(d->opts.log, DW_LOG_DEBUG, ctx_of(r, NULL),
                         "re-drive no longer scheduled; dropped");
            retire(d, r);
            continue;
        }
        for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
            if (!dw_request_has(r->req, (enum dw_channel_id)ch))
                continue;
            const struct dw_channel_state *st = &items[i].status.channels[ch];
            if (st->present && st->status == DW_CH_SUCCESS) {
                dw_log_write(d->opts.log, DW_LOG_DEBUG, ctx_of(r, dw_channel_get(ch)->name),
                             "already SUCCESS; not called again");
                continue;
            }
            if (r->redrive && st->present && st->status == DW_CH_FAILED &&
                !dw_redrive_transient(st->error)) {
                /* Permanent (4xx, bad response): only a new request retries it. */
                r->kept_failed |= 1u << ch;
                continue;
            }
            r->called |= 1u << ch;
            r->outstanding++;
        }
        if (r->outstanding == 0) {
            push(&d->finish_q, r);
            continue;
        }
        for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
            if (!(r->called & (1u << ch)))
                continue;
            if (submit(d, r, (enum dw_channel_id)ch, &items[i].status.channels[ch]) != DW_OK) {
                /* Stopping: the run is abandoned with the pool. */
                break;
            }
        }
    }
    free(items);
}

/* ---- holding results ---- */

static void hold_link(struct dw_dispatch *d, struct run *r)
{
    r->holding = true;
    r->hold_next = NULL;
    r->hold_prev = d->hold_tail;
    if (d->hold_tail)
        d->hold_tail->hold_next = r;
    else
        d->hold_head = r;
    d->hold_tail = r;
}

static void hold_unlink(struct dw_dispatch *d, struct run *r)
{
    if (!r->holding)
        return;
    if (r->hold_prev)
        r->hold_prev->hold_next = r->hold_next;
    else
        d->hold_head = r->hold_next;
    if (r->hold_next)
        r->hold_next->hold_prev = r->hold_prev;
    else
        d->hold_tail = r->hold_prev;
    r->hold_prev = r->hold_next = NULL;
    r->holding = false;
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

/* Stores the ids first steps answered, then asks for the next steps. */
static void do_steps(struct dw_dispatch *d)
{
    if (!d->step_q || !store_usable(d))
        return;
    size_t n = 0;
    for (struct result_msg *m = d->step_q; m; m = m->next)
        n++;
    struct dw_store_step *items = dw_xcalloc(n, sizeof(*items));
    size_t i = 0;
    for (struct result_msg *m = d->step_q; m; m = m->next, i++)
        items[i] = (struct dw_store_step){m->run->req->event_id, m->channel, m->external_id};
    enum dw_err err = dw_store_save_steps(d->store, items, n);
    free(items);
    if (err != DW_OK) {
        store_failed(d, "saving step ids");
        return;
    }
    store_worked(d);
    struct result_msg *m;
    while ((m = d->step_q)) {
        d->step_q = m->next;
        struct run *r = m->run;
        int last = dw_channel_get(m->channel)->steps - 1;
        /* The first step's successful try goes on as the next step's. */
        r->step_carry = m->attempts - 1;
        if (dw_pool_submit_steps(d->pool, r->req, m->channel, r, m->step + 1, m->external_id,
                                 last) != DW_OK)
            dw_log_write(d->opts.log, DW_LOG_DEBUG, ctx_of(r, dw_channel_get(m->channel)->name),
                         "stopping; next step not started");
        free(m);
    }
}

/* Runs whose results have waited result_hold_ms: store what they have.
 * Every run holds for the same time, so the list is in deadline order. */
static void release_due(struct dw_dispatch *d)
{
    int64_t now = dw_now_ms();
    while (d->hold_head && d->hold_head->hold_until <= now)
        release_held(d, d->hold_head);
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
        struct dw_log_ctx ctx = ctx_of(r, dw_channel_get(m->channel)->name);
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
            r->hold_until = dw_now_ms() + d->opts.cfg->result_hold_ms;
            hold_link(d, r);
        }
    }
}

/* Whether a requested channel ends this drive SUCCESS: its result when
 * called; one not called was skipped for being stored SUCCESS already. */
static bool final_success(const struct run *r, int ch)
{
    if (r->called & (1u << ch))
        return (r->succeeded >> ch) & 1u;
    return !(r->kept_failed & (1u << ch));
}

/*
 * The event's schedule after this drive: the next tier while transient
 * failures are left and the request is young enough, else none (the row,
 * if there was one, is deleted). *json gets the request text a schedule
 * keeps, which the caller frees after the store call.
 */
static void plan_redrive(struct dw_dispatch *d, const struct run *r, struct dw_store_finish *f,
                         char **json)
{
    const struct dw_redrive_policy *policy = &d->opts.cfg->redrive;
    unsigned left = r->transient & ~r->succeeded;
    f->redrive = r->scheduled ? DW_STORE_REDRIVE_CLEAR : DW_STORE_REDRIVE_KEEP;
    if (!left || policy->tiers == 0)
        return;
    int tier = r->scheduled ? r->tier + 1 : 0;
    int64_t at;
    if (!dw_redrive_next(policy, tier, r->born_ms, dw_wall_ms(), &at)) {
        dw_log_write(d->opts.log, DW_LOG_WARN, ctx_of(r, NULL),
                     "not re-driven again: the request is older than redrive.max_age_ms "
                     "(%lld ms) at its next attempt",
                     (long long)policy->max_age_ms);
        return;
    }
    *json = dw_request_encode(r->req);
    f->redrive = DW_STORE_REDRIVE_SCHEDULE;
    f->next_at_ms = at;
    f->tier = tier;
    f->redrive_channels = left;
    f->request_json = *json;
}

static struct dw_store_finish finish_of(const struct run *r)
{
    int ok = 0, failed = 0;
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        if (!dw_request_has(r->req, (enum dw_channel_id)ch))
            continue;
        if (final_success(r, ch))
            ok++;
        else
            failed++;
    }
    return (struct dw_store_finish){
        .event_id = r->req->event_id,
        .overall = dw_overall_aggregate(ok, failed),
        .total_channels = r->req->channel_count,
        .success_count = ok,
        .failure_count = failed,
    };
}

/* The overall status is stored: build the completion and queue it. */
static void finished(struct dw_dispatch *d, struct run *r, const struct dw_store_finish *item,
                     int64_t now)
{
    r->completion = dw_report_completion(&item->status, r->req->channels, now);
    dw_metrics_request_done(d->opts.metrics, item->overall);
    if (r->req->enqueued_at_ms > 0 && now >= r->req->enqueued_at_ms)
        dw_metrics_request_latency(d->opts.metrics, (now - r->req->enqueued_at_ms) * 1000);
    dw_log_write(d->opts.log, DW_LOG_INFO, ctx_of(r, NULL), "%s: %d of %d channel(s) succeeded",
                 dw_overall_name(item->overall), item->success_count, item->total_channels);
    push(&d->produce_q, r);
}

/*
 * One store write: up to store_batch_max results, the finishes of the runs
 * those results complete, and finishes already queued (runs that called
 * no channel), in one transaction and one round trip.
 */
static void do_write(struct dw_dispatch *d)
{
    if ((!d->save_q && !d->finish_q.len) || !store_usable(d))
        return;
    size_t max = (size_t)d->opts.cfg->store_batch_max;
    size_t nres = d->save_len < max ? d->save_len : max;

    /* Count each run's results in the batch: a run whose count reaches its
     * outstanding results completes with this write. Counted first because
     * a finish item holds a whole status (5.6 KiB): the arrays are sized to
     * what is used. */
    size_t ncomplete = 0;
    struct result_msg *m = d->save_q;
    for (size_t i = 0; i < nres; i++, m = m->next) {
        if (++m->run->in_batch == m->run->outstanding)
            ncomplete++;
    }
    size_t room = max > ncomplete ? max - ncomplete : 0;
    size_t nqueued = d->finish_q.len < room ? d->finish_q.len : room;
    size_t cap = ncomplete + nqueued ? ncomplete + nqueued : 1;

    struct dw_store_result *results = dw_xcalloc(nres ? nres : 1, sizeof(*results));
    struct dw_store_finish *fins = dw_xcalloc(cap, sizeof(*fins));
    struct run **fruns = dw_xcalloc(cap, sizeof(*fruns));
    char **jsons = dw_xcalloc(cap, sizeof(*jsons));
    size_t nfin = 0;
    m = d->save_q;
    for (size_t i = 0; i < nres; i++, m = m->next) {
        results[i] = (struct dw_store_result){
            .event_id = m->run->req->event_id,
            .channel = m->channel,
            .status = m->status,
            .attempts = m->attempts,
            .error = m->error,
            .error_message = m->error_message,
            .external_id = m->external_id,
            .url = m->url,
        };
        if (m->run->in_batch == m->run->outstanding) {
            fruns[nfin] = m->run;
            fins[nfin] = finish_of(m->run);
            plan_redrive(d, m->run, &fins[nfin], &jsons[nfin]);
            nfin++;
            m->run->in_batch = -1; /* listed once */
        }
    }
    struct run *q = d->finish_q.head;
    for (size_t i = 0; i < nqueued; i++, q = q->next) {
        fruns[nfin] = q;
        fins[nfin] = finish_of(q);
        plan_redrive(d, q, &fins[nfin], &jsons[nfin]);
        nfin++;
    }

    enum dw_err err = dw_store_save_and_finish(d->store, results, nres, fins, nfin);
    m = d->save_q;
    for (size_t i = 0; i < nres; i++, m = m->next)
        m->run->in_batch = 0;
    if (err != DW_OK) {
        store_failed(d, nfin ? "finishing requests" : "saving channel results");
        goto out;
    }
    store_worked(d);
    for (size_t i = 0; i < nres; i++) {
        m = d->save_q;
        d->save_q = m->next;
        d->save_len--;
        m->run->outstanding--;
        free(m);
    }
    for (size_t i = 0; i < nqueued; i++)
        pop(&d->finish_q);
    int64_t now = dw_wall_ms();
    for (size_t i = 0; i < nfin; i++) {
        if (fins[i].redrive == DW_STORE_REDRIVE_SCHEDULE) {
            dw_metrics_count(d->opts.metrics, DW_COUNTER_REDRIVES_SCHEDULED, 1);
            dw_log_write(d->opts.log, DW_LOG_INFO, ctx_of(fruns[i], NULL),
                         "automatic re-drive %d planned in %lld ms", fins[i].tier + 1,
                         (long long)(fins[i].next_at_ms - now));
        }
        finished(d, fruns[i], &fins[i], now);
    }
out:
    for (size_t i = 0; i < nfin; i++)
        free(jsons[i]);
    free(jsons);
    free(fruns);
    free(fins);
    free(results);
}

static void do_produce(struct dw_dispatch *d)
{
    struct run *r;
    while ((r = d->produce_q.head)) {
        if (dw_producer_send_completion(d->opts.producer, r->req->event_id, r->completion,
                                        r->partition, r->offset) != DW_OK) {
            /* Kept and retried on the next round; its offset stays pending. */
            d->reconnect_at = dw_now_ms() + RECONNECT_MIN_MS;
            return;
        }
        pop(&d->produce_q);
        retire(d, r);
    }
}

/* Runs whose event was busy elsewhere begin again once their wait is over
 * (all wait equally long, so the list is in deadline order). */
static void release_blocked(struct dw_dispatch *d)
{
    int64_t now = dw_now_ms();
    while (d->blocked_q.head && d->blocked_q.head->begin_again_at <= now)
        push(&d->begin_q, pop(&d->blocked_q));
}

/*
 * Claims due re-drives and starts them as runs. Held back by the flow
 * control (max_in_flight_requests, REDRIVE_RUNS_MAX) and by the breakers:
 * an event that would call a channel whose breaker lets nothing through is
 * left for later, and while one is HALF_OPEN at most its free trial calls
 * are claimed per round, so a recovering channel is not stampeded.
 */
static void do_claim(struct dw_dispatch *d)
{
    const struct dw_config *cfg = d->opts.cfg;
    int64_t now = dw_now_ms();
    if (now < d->next_claim_at || cfg->redrive.tiers == 0 || atomic_load(&d->draining))
        return;
    d->next_claim_at = now + CLAIM_EVERY_MS;
    /* Not held back by other store work: under steady load there always
     * is some, and a round trip every half second costs nothing. */
    if (!store_usable(d))
        return;

    long limit = REDRIVE_RUNS_MAX - d->redrive_runs;
    long room = (long)cfg->max_in_flight_requests - (long)atomic_load(&d->in_flight);
    if (room < limit)
        limit = room;
    unsigned blocked = 0;
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        int free_permits = dw_pool_free_permits(d->pool, (enum dw_channel_id)ch);
        if (free_permits == 0)
            blocked |= 1u << ch;
        else if (free_permits > 0 && free_permits < limit)
            limit = free_permits;
    }
    if (cfg->redrive_mode == DW_REDRIVE_PAUSED || limit < 0)
        limit = 0; /* still counts what is due, for the metrics */

    struct dw_store_claimed *claimed = NULL;
    size_t n = 0;
    int64_t due = 0, oldest = 0;
    if (dw_store_redrive_claim(d->store, blocked, (int)limit, &claimed, &n, &due, &oldest) !=
        DW_OK) {
        store_failed(d, "claiming re-drives");
        return;
    }
    store_worked(d);
    dw_metrics_redrive_due(d->opts.metrics, due, oldest);

    struct list in = {0};
    for (size_t i = 0; i < n; i++) {
        struct dw_log_ctx ctx = {claimed[i].event_id, NULL, -1, -1};
        struct dw_request *req = NULL;
        char why[256] = "";
        const char *json = claimed[i].request_json;
        if (dw_request_decode(json, strlen(json), &req, why, sizeof(why)) != DW_DLQ_NONE) {
            /* Written by this code, so this is a bug or a hand edit: leave
             * the row claimed (it comes back after the lease) and say so. */
            dw_log_write(d->opts.log, DW_LOG_ERROR, ctx, "scheduled request unreadable: %s", why);
            continue;
        }
        dw_log_write(d->opts.log, DW_LOG_INFO, ctx, "automatic re-drive %d starting",
                     claimed[i].tier + 1);
        struct run *r = dw_xcalloc(1, sizeof(*r));
        r->d = d;
        r->req = req;
        r->partition = -1;
        r->offset = -1;
        r->redrive = true;
        d->redrive_runs++;
        atomic_fetch_add(&d->in_flight, 1);
        dw_metrics_gauge_add(d->opts.metrics, DW_GAUGE_REQUESTS_IN_FLIGHT, 1);
        push(&in, r);
    }
    dw_store_claimed_free(claimed, n);
    accept_new(d, &in);
}

static bool has_store_work(const struct dw_dispatch *d)
{
    return d->begin_q.len || d->save_q || d->finish_q.len || d->step_q;
}

/* With nothing else to do, check that the database still answers. */
static void idle_ping(struct dw_dispatch *d)
{
    if (has_store_work(d) || dw_now_ms() - d->last_store_ok < IDLE_PING_MS || !store_usable(d))
        return;
    if (dw_store_ping(d->store) == DW_OK)
        store_worked(d);
    else
        store_failed(d, "ping");
}

static void *dispatch_main(void *arg)
{
    struct dw_dispatch *d = arg;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        for (;;) {
            if (d->stopping || d->inbox.head || d->results)
                break;
            bool busy = has_store_work(d) || d->produce_q.len;
            if (busy && dw_now_ms() >= d->reconnect_at)
                break;
            if (!busy && dw_now_ms() - d->last_store_ok >= IDLE_PING_MS &&
                dw_now_ms() >= d->reconnect_at)
                break; /* time for an idle ping */
            if (d->hold_head && dw_now_ms() >= d->hold_head->hold_until)
                break; /* held results are due */
            if (d->blocked_q.head && dw_now_ms() >= d->blocked_q.head->begin_again_at)
                break; /* a blocked begin may go again */
            bool claiming = d->opts.cfg->redrive.tiers > 0 && !atomic_load(&d->draining);
            if (claiming && dw_now_ms() >= d->next_claim_at)
                break; /* time to look for due re-drives */
            /* Sleep until woken, or until the next retry, ping or held
             * results are due. */
            int64_t wait_ms = busy ? d->reconnect_at - dw_now_ms() : IDLE_PING_MS;
            if (d->hold_head && d->hold_head->hold_until - dw_now_ms() < wait_ms)
                wait_ms = d->hold_head->hold_until - dw_now_ms();
            if (d->blocked_q.head && d->blocked_q.head->begin_again_at - dw_now_ms() < wait_ms)
                wait_ms = d->blocked_q.head->begin_again_at - dw_now_ms();
            if (claiming && d->next_claim_at - dw_now_ms() < wait_ms)
                wait_ms = d->next_claim_at - dw_now_ms();
            if (wait_ms < 1)
                wait_ms = 1;
            struct timespec ts = dw_deadline_in(wait_ms);
            pthread_cond_timedwait(&d->wake, &d->lock, &ts);
        }
        bool stopping = d->stopping;
        struct list in = d->inbox;
        memset(&d->inbox, 0, sizeof(d->inbox));
        struct result_msg *results = d->results;
        d->results = NULL;
        pthread_mutex_unlock(&d->lock);
        if (stopping) {
            /* Hand what we took back to the inbox for dw_dispatch_stop to free. */
            pthread_mutex_lock(&d->lock);
            d->inbox = in;
            d->results = results;
            pthread_mutex_unlock(&d->lock);
            break;
        }

        accept_new(d, &in);
        take_results(d, results);
        release_due(d);
        release_blocked(d);
        /* Write results and finishes before begins: finishing work first
         * keeps the in-flight count (and so memory) down under load. */
        do_steps(d);
        do_write(d);
        do_produce(d);
        do_begin(d);
        do_claim(d);
        do_begin(d); /* what was just claimed */
        idle_ping(d);
    }
    return NULL;
}

/* ---- lifecycle ---- */

enum dw_err dw_dispatch_start(const struct dw_dispatch_options *opts, struct dw_dispatch **out,
                              char *errbuf, size_t errlen)
{
    enum dw_err err;
    struct dw_dispatch *d = dw_xcalloc(1, sizeof(*d));
    d->opts = *opts;
    pthread_mutex_init(&d->lock, NULL);
    dw_cond_init_monotonic(&d->wake);
    d->active_buckets = 1024;
    while (d->active_buckets < (size_t)opts->cfg->max_in_flight_requests * 2)
        d->active_buckets *= 2;
    d->active = dw_xcalloc(d->active_buckets, sizeof(*d->active));

    err = dw_store_create(opts->cfg->pg_dsn, opts->log, &d->store, errbuf, errlen);
    if (err)
        goto out;
    /* Unique per process: host, pid and the start time. */
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) != 0)
        dw_strlcpy(host, "unknown", sizeof(host));
    dw_snprintf(d->owner, sizeof(d->owner), "%s:%ld:%lld", host, (long)getpid(),
                (long long)dw_wall_ms());
    dw_store_set_owner(d->store, d->owner, opts->cfg->redrive_lease_ms);
    atomic_store(&d->store_ok, true);
    d->last_store_ok = dw_now_ms();
    d->round_trips_seen = dw_store_round_trips(d->store);

    struct dw_pool_options po = {
        .threads = opts->cfg->pool_threads,
        .max_calls = opts->cfg->max_in_flight_calls,
        .cfg = opts->cfg,
        .log = opts->log,
        .metrics = opts->metrics,
        .done = on_channel_done,
    };
    err = dw_pool_start(&po, &d->pool, errbuf, errlen);
    if (err)
        goto out;
    if (pthread_create(&d->thread, NULL, dispatch_main, d) != 0) {
        dw_snprintf(errbuf, errlen, "dispatch: could not start its thread");
        err = DW_ERR_IO;
        goto out;
    }
    d->thread_started = true;
    *out = d;
out:
    if (err)
        dw_dispatch_stop(d);
    return err;
}

static void free_list(struct list *l)
{
    struct run *r;
    while ((r = pop(l)))
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
    dw_pool_stop(d->pool);

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
    dw_store_destroy(d->store);
    pthread_cond_destroy(&d->wake);
    pthread_mutex_destroy(&d->lock);
    free(d);
}
