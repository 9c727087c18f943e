/*
 * Dispatch, the store side: the steps of a pass that talk to PostgreSQL,
 * each batched over many runs into one transaction and one round trip
 * (group commit): begin, the ids first steps answered, results with the
 * finishes they complete, the re-drive claim and the idle ping; and the
 * retry of them all while the connection is broken.
 *
 * Threads: the dispatch thread only (it owns the store connection and
 * every run); see src/dispatch.c.
 *
 * Invariants:
 * - A store failure leaves the queues as they were: the same batch is
 *   retried after a growing wait and a reconnect (writes are idempotent),
 *   so no work is skipped and nothing is acknowledged unstored.
 * - The overall status is stored in the transaction that stores a run's
 *   last results, or after them; only then is its completion queued.
 * - The store is reached through d->store (include/dw/dispatch.h), the
 *   real dw_store_* or a test's fake.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dispatch_internal.h"
#include "dw/channel.h"
#include "dw/redrive.h"
#include "dw/report.h"
#include "dw/request.h"
#include "dw/store.h"

static void count_round_trips(struct dw_dispatch *d)
{
    uint64_t now = d->store.round_trips(d->store.opaque);
    dw_metrics_count(d->opts.metrics, DW_COUNTER_DB_ROUND_TRIPS, now - d->round_trips_seen);
    d->round_trips_seen = now;
}

/* A store call failed: note it, and retry when the store's policy allows. */
static void store_failed(struct dw_dispatch *d, const char *what)
{
    dw_dispatch_tick(d);
    dw_metrics_count(d->opts.metrics, DW_COUNTER_DB_ERRORS, 1);
    if (!d->store.connected(d->store.opaque) && atomic_exchange(&d->store_ok, false))
        dw_log_error(d->opts.log,
                     "PostgreSQL connection lost during %s; taking no new work "
                     "until it is back",
                     what);
    else
        dw_log_warn(d->opts.log, "PostgreSQL %s failed; retrying", what);
    /* The store owns the reconnect policy (its back-off); the dispatch
     * only sleeps until it allows the next try. */
    d->reconnect_at =
        d->store.retry_at ? d->store.retry_at(d->store.opaque) : d->now + RECONNECT_MIN_MS;
}

static void store_worked(struct dw_dispatch *d)
{
    dw_dispatch_tick(d);
    count_round_trips(d);
    d->last_store_ok = d->now;
    if (!atomic_exchange(&d->store_ok, true))
        dw_log_info(d->opts.log, "PostgreSQL is back");
}

/* True when the store may be used now (reconnecting first if needed). */
static bool store_usable(struct dw_dispatch *d)
{
    if (d->now < d->reconnect_at)
        return false;
    if (d->store.connected(d->store.opaque))
        return true;
    if (d->store.reconnect(d->store.opaque) == DW_OK)
        return true;
    store_failed(d, "reconnect");
    return false;
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
        return d->calls.submit(d->calls.opaque, r->req, ch, r, 0, NULL, last);
    if (st->present && st->step_id[0] && d->wall - st->step_id_at_ms < type->step_id_ttl_ms) {
        dw_log_write(d->opts.log, DW_LOG_DEBUG, dw_dispatch_ctx(r, type->name),
                     "going on from the stored step id %s", st->step_id);
        return d->calls.submit(d->calls.opaque, r->req, ch, r, last, st->step_id, last);
    }
    return d->calls.submit(d->calls.opaque, r->req, ch, r, 0, NULL, 0);
}

void dw_dispatch_do_begin(struct dw_dispatch *d)
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
    if (d->store.begin(d->store.opaque, items, n) != DW_OK) {
        store_failed(d, "begin");
        free(items);
        return;
    }
    store_worked(d);
    for (size_t i = 0; i < n; i++) {
        r = dw_dispatch_pop(&d->begin_q);
        if (items[i].redrive_busy) {
            /* Another worker runs a re-drive of this event: wait for it. */
            dw_log_write(d->opts.log, DW_LOG_DEBUG, dw_dispatch_ctx(r, NULL),
                         "another worker is re-driving this event; waiting");
            r->begin_again_at = d->now + BLOCKED_RETRY_MS;
            dw_dispatch_push(&d->blocked_q, r);
            continue;
        }
        r->scheduled = items[i].redrive_row;
        r->tier = items[i].redrive_tier;
        r->born_ms = dw_redrive_born_ms(r->req->requested_at_ms, items[i].status.started_at_ms);
        if (r->redrive && !r->scheduled) {
            /* The schedule went while this waited (the event was driven to
             * the end elsewhere, or an operator gave up on it). */
            dw_log_write(d->opts.log, DW_LOG_DEBUG, dw_dispatch_ctx(r, NULL),
                         "re-drive no longer scheduled; dropped");
            dw_dispatch_retire(d, r);
            continue;
        }
        for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
            if (!dw_request_has(r->req, (enum dw_channel_id)ch))
                continue;
            const struct dw_channel_state *st = &items[i].status.channels[ch];
            if (st->present && st->status == DW_CH_SUCCESS) {
                dw_log_write(d->opts.log, DW_LOG_DEBUG,
                             dw_dispatch_ctx(r, dw_channel_get(ch)->name),
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
            dw_dispatch_push(&d->finish_q, r);
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

/* Stores the ids first steps answered, then asks for the next steps. */
void dw_dispatch_do_steps(struct dw_dispatch *d)
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
    enum dw_err err = d->store.save_steps(d->store.opaque, items, n);
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
        if (d->calls.submit(d->calls.opaque, r->req, m->channel, r, m->step + 1, m->external_id,
                            last) != DW_OK)
            dw_log_write(d->opts.log, DW_LOG_DEBUG,
                         dw_dispatch_ctx(r, dw_channel_get(m->channel)->name),
                         "stopping; next step not started");
        free(m);
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
    if (!dw_redrive_next(policy, tier, r->born_ms, d->wall, &at)) {
        dw_log_write(d->opts.log, DW_LOG_WARN, dw_dispatch_ctx(r, NULL),
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
    dw_log_write(d->opts.log, DW_LOG_INFO, dw_dispatch_ctx(r, NULL),
                 "%s: %d of %d channel(s) succeeded", dw_overall_name(item->overall),
                 item->success_count, item->total_channels);
    dw_dispatch_push(&d->produce_q, r);
}

/*
 * One store write: up to store_batch_max results, the finishes of the runs
 * those results complete, and finishes already queued (runs that called
 * no channel), in one transaction and one round trip.
 */
void dw_dispatch_do_write(struct dw_dispatch *d)
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

    enum dw_err err = d->store.save_and_finish(d->store.opaque, results, nres, fins, nfin);
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
        dw_dispatch_pop(&d->finish_q);
    int64_t now = d->wall; /* read after the round trip (store_worked) */
    for (size_t i = 0; i < nfin; i++) {
        if (fins[i].redrive == DW_STORE_REDRIVE_SCHEDULE) {
            dw_metrics_count(d->opts.metrics, DW_COUNTER_REDRIVES_SCHEDULED, 1);
            dw_log_write(d->opts.log, DW_LOG_INFO, dw_dispatch_ctx(fruns[i], NULL),
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

/*
 * Claims due re-drives and starts them as runs. Held back by the flow
 * control (max_in_flight_requests, REDRIVE_RUNS_MAX) and by the breakers:
 * an event that would call a channel whose breaker lets nothing through is
 * left for later, and while one is HALF_OPEN at most its free trial calls
 * are claimed per round, so a recovering channel is not stampeded.
 */
void dw_dispatch_do_claim(struct dw_dispatch *d)
{
    const struct dw_config *cfg = d->opts.cfg;
    int64_t now = d->now;
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
        int free_permits = d->calls.free_permits(d->calls.opaque, (enum dw_channel_id)ch);
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
    if (d->store.redrive_claim(d->store.opaque, blocked, (int)limit, &claimed, &n, &due, &oldest) !=
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
        dw_dispatch_push(&in, r);
    }
    dw_store_claimed_free(claimed, n);
    dw_dispatch_accept(d, &in);
}

bool dw_dispatch_has_store_work(const struct dw_dispatch *d)
{
    return d->begin_q.len || d->save_q || d->finish_q.len || d->step_q;
}

/* With nothing else to do, check that the database still answers. */
void dw_dispatch_idle_ping(struct dw_dispatch *d)
{
    if (dw_dispatch_has_store_work(d) || d->now - d->last_store_ok < IDLE_PING_MS ||
        !store_usable(d))
        return;
    if (d->store.ping(d->store.opaque) == DW_OK)
        store_worked(d);
    else
        store_failed(d, "ping");
}

/* ---- the real store: dw_store_* on its own connection ---- */

static bool real_connected(void *opaque)
{
    return dw_store_connected(opaque);
}

static enum dw_err real_reconnect(void *opaque)
{
    return dw_store_reconnect(opaque);
}

static int64_t real_retry_at(void *opaque)
{
    return dw_store_retry_at(opaque);
}

static enum dw_err real_ping(void *opaque)
{
    return dw_store_ping(opaque);
}

static uint64_t real_round_trips(void *opaque)
{
    return dw_store_round_trips(opaque);
}

static enum dw_err real_begin(void *opaque, struct dw_store_begin *items, size_t n)
{
    return dw_store_begin(opaque, items, n);
}

static enum dw_err real_save_and_finish(void *opaque, const struct dw_store_result *results,
                                        size_t nres, struct dw_store_finish *finishes, size_t nfin)
{
    return dw_store_save_and_finish(opaque, results, nres, finishes, nfin);
}

static enum dw_err real_save_steps(void *opaque, const struct dw_store_step *items, size_t n)
{
    return dw_store_save_steps(opaque, items, n);
}

static enum dw_err real_redrive_claim(void *opaque, unsigned blocked, int limit,
                                      struct dw_store_claimed **out, size_t *n, int64_t *due,
                                      int64_t *oldest_due_ms)
{
    return dw_store_redrive_claim(opaque, blocked, limit, out, n, due, oldest_due_ms);
}

enum dw_err dw_dispatch_store_open(struct dw_dispatch *d, char *errbuf, size_t errlen)
{
    enum dw_err err =
        dw_store_create(d->opts.cfg->pg_dsn, d->opts.log, &d->own_store, errbuf, errlen);
    if (err)
        return err;
    /* Unique per process: host, pid and the start time. */
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) != 0)
        dw_strlcpy(host, "unknown", sizeof(host));
    dw_snprintf(d->owner, sizeof(d->owner), "%s:%ld:%lld", host, (long)getpid(),
                (long long)d->wall);
    dw_store_set_owner(d->own_store, d->owner, d->opts.cfg->redrive_lease_ms);
    d->store = (struct dw_dispatch_store){
        .opaque = d->own_store,
        .connected = real_connected,
        .reconnect = real_reconnect,
        .ping = real_ping,
        .round_trips = real_round_trips,
        .begin = real_begin,
        .save_and_finish = real_save_and_finish,
        .save_steps = real_save_steps,
        .redrive_claim = real_redrive_claim,
        .retry_at = real_retry_at,
    };
    return DW_OK;
}
