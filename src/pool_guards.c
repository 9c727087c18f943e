/*
 * The pool's side of the channel guards (src/resilience/guard.c): it
 * creates them, hands bulkhead slots over to parked jobs, and publishes
 * what the guards do to the log and the metrics (breaker transitions and
 * snapshots, the limit, the jobs waiting, the bulkhead, the retry budget).
 *
 * Threads: the guards are made before the workers start and destroyed
 * after they are gone. In between any worker calls in here, and so does
 * dw_pool_queue_ratio's caller (dw_pool_publish_flow). A slot given back on
 * one worker may reach a job parked on another: that job goes on its own
 * worker's grant list, under that worker's lock, and dw_xfer_wake
 * interrupts its wait; only the owning worker takes it from there
 * (dw_pool_take_grants). A slot a worker hands to a job of its own goes on
 * its granted_here list, without the lock or a wake-up (an eventfd write
 * and read; measured, about four grants in five under a burst): its loop
 * looks there before it waits. The guards lock themselves; pool->limits is
 * exchanged atomically.
 *
 * Invariants:
 * - The bulkhead metrics follow every slot: a slot given back is either
 *   free (one fewer in use) or handed to a parked job (still in use); a
 *   parked job leaves the queue count once, when its worker takes the
 *   grant (or when its timer gives up, in pool.c).
 * - A breaker transition is logged and counted once, by the thread whose
 *   call or try caused it.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "dw/channel.h"
#include "dw/guard.h"
#include "dw/heap.h"
#include "dw/list.h"
#include "dw/log.h"
#include "dw/metrics.h"
#include "dw/transfer.h"
#include "pool_internal.h"

#define BREAKER_SNAPSHOT_EVERY_MS 1000

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
void dw_pool_report(struct dw_pool *pool, enum dw_channel_id ch,
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
void dw_pool_publish_flow(struct dw_pool *pool, enum dw_channel_id ch, int limit)
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

/* A parked job was handed a slot: tell its worker (any thread may call;
 * self is the caller's worker, or NULL). */
static void deliver_grant(struct dw_pool *pool, struct worker *self,
                          struct dw_bulkhead_waiter *waiter)
{
    struct job *job = job_of_waiter(waiter);
    struct worker *w = dw_pool_worker_of(pool, job->channel);
    if (w == self) {
        dw_list_push_back(&w->granted_here, &job->grant);
        return;
    }
    pthread_mutex_lock(&w->lock);
    dw_list_push_back(&w->granted, &job->grant);
    pthread_mutex_unlock(&w->lock);
    dw_xfer_wake(w->loop);
}

/* A slot was given back: to the job it was handed to, or free. */
void dw_pool_slot_back(struct dw_pool *pool, struct worker *self, enum dw_channel_id ch,
                       struct dw_bulkhead_waiter *handed)
{
    if (handed)
        deliver_grant(pool, self, handed);
    else
        dw_metrics_bulkhead_change(pool->opts.metrics, ch, -1, 0);
}

/* The limit may have grown: hand what it frees to parked jobs. */
void dw_pool_grant_free_slots(struct dw_pool *pool, struct worker *self, enum dw_channel_id ch)
{
    struct dw_bulkhead_waiter *waiter;
    while ((waiter = dw_guard_grant(pool->guards[ch]))) {
        dw_metrics_bulkhead_change(pool->opts.metrics, ch, 1, 0);
        deliver_grant(pool, self, waiter);
    }
}

/* Gives back whatever the job holds, without an outcome. */
void dw_pool_give_back(struct dw_pool *pool, struct worker *self, struct job *job)
{
    bool had_slot = job->ticket.has_slot;
    struct dw_bulkhead_waiter *handed = dw_guard_release(pool->guards[job->channel], &job->ticket);
    if (had_slot)
        dw_pool_slot_back(pool, self, job->channel, handed);
}

/* ---- on the worker thread ---- */

/* Parked jobs that were handed a slot: to the front of ready, holding it,
 * in the order the slots were handed over. */
void dw_pool_take_grants(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    struct dw_list granted = w->granted;
    dw_list_init(&w->granted);
    pthread_mutex_unlock(&w->lock);
    dw_list_splice_back(&granted, &w->granted_here);
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

/* Worker 0, about once a second: each breaker's snapshot to the metrics,
 * so a HALF_OPEN past half_open_max_wait_ms shows OPEN even when no call
 * comes to move it (the snapshot makes that transition). */
void dw_pool_snapshot_breakers(struct worker *w, int64_t now)
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

/* ---- creating the guards ---- */

void dw_pool_guards_init(struct dw_pool *pool)
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
