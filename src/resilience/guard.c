/*
 * One channel's guards composed (include/dw/guard.h).
 *
 * Threads: any. The breaker, bulkhead and retry budget lock themselves;
 * `lock` guards the adaptive limit and the rate limiter, each held for a
 * few instructions. pause_until_ms and waiting are
 * atomics: read on every begin and by the poll thread's intake check.
 *
 * Invariants: the bulkhead's size is the limit's current value (set under
 * `lock` after every sample); a ticket's `waiting` flag is set exactly
 * while it is counted in `waiting`.
 */
#include "dw/guard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "dw/channel_id.h"
#include "dw/ratelimit.h"

struct dw_guard {
    enum dw_channel_id channel;
    const struct dw_channel_config *cc;
    struct dw_retry_policy policy;
    struct dw_breaker *breaker;
    struct dw_bulkhead *bulkhead;
    struct dw_retry_budget *budget;
    atomic_int_least64_t pause_until_ms; /* a 429's Retry-After: no new call before it */
    atomic_int waiting;                  /* jobs that want to start a try */
    atomic_int calls;                    /* HTTP calls under way */
    atomic_int_least64_t served_ms;      /* the last try that succeeded; INT64_MIN: none yet */

    pthread_mutex_t lock; /* the two below */
    struct dw_limit *limit;
    struct dw_ratelimit *rate; /* NULL: off */
};

struct dw_guard *dw_guard_create(enum dw_channel_id ch, const struct dw_channel_config *cc,
                                 dw_breaker_observer_cb observer, void *observer_opaque,
                                 int64_t now_ms)
{
    struct dw_guard *g = dw_xcalloc(1, sizeof(*g));
    g->channel = ch;
    g->cc = cc;
    g->policy = (struct dw_retry_policy){
        .max_attempts = cc->max_attempts,
        .initial_backoff_ms = cc->initial_backoff_ms,
        .multiplier = cc->multiplier,
        .max_backoff_ms = cc->max_backoff_ms,
        .max_retry_after_ms = cc->max_retry_after_ms,
    };
    g->breaker = dw_breaker_create(&cc->breaker, observer, observer_opaque);
    /* The limit moves within [limit_min, max_concurrent]: max_concurrent
     * is the one ceiling, whatever the limit's own settings say. */
    struct dw_limit_config lc = cc->limit;
    lc.max = cc->max_concurrent < 1 ? 1 : cc->max_concurrent;
    lc.min = lc.min < 1 ? 1 : lc.min > lc.max ? lc.max : lc.min;
    lc.initial = lc.initial < lc.min ? lc.min : lc.initial > lc.max ? lc.max : lc.initial;
    if (lc.tolerance <= 1.0)
        lc.tolerance = 2.0;
    if (lc.backoff <= 0.0 || lc.backoff >= 1.0)
        lc.backoff = 0.9;
    g->limit = dw_limit_create(&lc);
    g->bulkhead = dw_bulkhead_create(dw_limit_get(g->limit));
    g->budget = dw_retry_budget_create(cc->budget_max_tokens, cc->budget_token_ratio);
    if (cc->limit_for_period > 0) {
        struct dw_ratelimit_config rc = {cc->limit_for_period, cc->limit_refresh_period_ms};
        g->rate = dw_ratelimit_create(&rc, now_ms);
    }
    atomic_init(&g->served_ms, INT64_MIN);
    pthread_mutex_init(&g->lock, NULL);
    return g;
}

void dw_guard_destroy(struct dw_guard *g)
{
    if (!g)
        return;
    dw_breaker_destroy(g->breaker);
    dw_bulkhead_destroy(g->bulkhead);
    dw_retry_budget_destroy(g->budget);
    dw_limit_destroy(g->limit);
    dw_ratelimit_destroy(g->rate);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static void set_waiting(struct dw_guard *g, struct dw_guard_ticket *t, bool waiting)
{
    if (t->waiting == waiting)
        return;
    t->waiting = waiting;
    atomic_fetch_add(&g->waiting, waiting ? 1 : -1);
}

void dw_guard_want(struct dw_guard *g, struct dw_guard_ticket *t)
{
    set_waiting(g, t, true);
}

static void refuse(struct dw_guard_verdict *v, enum dw_errcode code)
{
    v->step = DW_GUARD_REFUSED;
    v->code = code;
}

void dw_guard_begin(struct dw_guard *g, struct dw_guard_ticket *t, int64_t now_ms,
                    struct dw_guard_verdict *v)
{
    const struct dw_channel_config *cc = g->cc;
    const char *name = dw_channel_name(g->channel);

    *v = (struct dw_guard_verdict){.step = DW_GUARD_GO};
    if (t->deadline_ms && now_ms >= t->deadline_ms) {
        dw_snprintf(v->why, sizeof(v->why), "deadline of %dms passed before the call",
                    cc->deadline_ms);
        refuse(v, DW_EC_TIMEOUT);
        return;
    }
    /* A 429 asked the whole channel to wait: nobody calls before then. A
     * job that started already waits no longer than its deadline, and is
     * refused there by the check above. */
    int64_t pause = atomic_load(&g->pause_until_ms);
    if (now_ms < pause) {
        v->step = DW_GUARD_WAIT;
        v->until_ms = t->deadline_ms && t->deadline_ms < pause ? t->deadline_ms : pause;
        return;
    }
    if (g->rate && !t->has_rate) {
        pthread_mutex_lock(&g->lock);
        int64_t wait = dw_ratelimit_reserve(g->rate, now_ms);
        pthread_mutex_unlock(&g->lock);
        t->has_rate = true;
        if (wait > 0) {
            v->step = DW_GUARD_WAIT;
            v->until_ms = now_ms + wait;
            return;
        }
    }
    if (!t->permit.held) {
        bool ok = dw_breaker_acquire(g->breaker, now_ms, &t->permit, &v->transition);
        if (!ok) {
            dw_snprintf(v->why, sizeof(v->why), "circuit breaker of %s is %s", name,
                        dw_breaker_state_name(v->transition.to));
            v->breaker_refused = true;
            refuse(v, DW_EC_CIRCUIT_OPEN);
            return;
        }
    }
    if (!t->has_slot) {
        bool may_wait = cc->bulkhead_max_wait_ms > 0;
        switch (dw_bulkhead_acquire(g->bulkhead, may_wait ? &t->waiter : NULL)) {
        case DW_BULKHEAD_GRANTED:
            t->has_slot = true;
            v->slot_taken = true;
            break;
        case DW_BULKHEAD_QUEUED:
            dw_breaker_release(g->breaker, &t->permit);
            v->step = DW_GUARD_QUEUED;
            v->queued = true;
            v->until_ms = now_ms + cc->bulkhead_max_wait_ms;
            if (t->deadline_ms && t->deadline_ms < v->until_ms)
                v->until_ms = t->deadline_ms;
            return;
        case DW_BULKHEAD_REJECTED:
            dw_breaker_release(g->breaker, &t->permit);
            dw_snprintf(v->why, sizeof(v->why), "bulkhead of %s full (%d calls in flight)", name,
                        dw_bulkhead_max(g->bulkhead));
            v->bulkhead_full = true;
            refuse(v, DW_EC_BULKHEAD_FULL);
            return;
        }
    }
    /* The try starts: its deadline runs from the first one. */
    t->has_rate = false;
    if (!t->started) {
        t->started = true;
        if (cc->deadline_ms > 0)
            t->deadline_ms = now_ms + cc->deadline_ms;
    }
    set_waiting(g, t, false);
}

void dw_guard_granted(struct dw_guard *g, struct dw_guard_ticket *t)
{
    (void)g;
    t->has_slot = true;
}

bool dw_guard_cancel_wait(struct dw_guard *g, struct dw_guard_ticket *t)
{
    return dw_bulkhead_cancel(g->bulkhead, &t->waiter);
}

enum dw_limit_signal dw_guard_signal(enum dw_errcode error, long http_status)
{
    switch (error) {
    case DW_EC_NONE:
    case DW_EC_HTTP_4XX:
        return DW_LIMIT_OK; /* the server answered as it normally does */
    case DW_EC_TIMEOUT:
    case DW_EC_CONNECTION:
    case DW_EC_RATE_LIMITED:
        return DW_LIMIT_DROP;
    case DW_EC_HTTP_5XX:
        /* 503 is how a full server sheds load; a 500 says nothing of it. */
        return http_status == 503 || http_status == 429 || http_status == 408 ? DW_LIMIT_DROP
                                                                              : DW_LIMIT_IGNORE;
    default:
        return http_status == 429 || http_status == 408 ? DW_LIMIT_DROP : DW_LIMIT_IGNORE;
    }
}

/* Under g->lock: the bulkhead follows the limit. */
static int apply_limit(struct dw_guard *g)
{
    int n = dw_limit_get(g->limit);
    dw_bulkhead_set_max(g->bulkhead, n);
    return n;
}

int dw_guard_call_started(struct dw_guard *g)
{
    return atomic_fetch_add(&g->calls, 1) + 1;
}

int dw_guard_call_ended(struct dw_guard *g, int64_t now_us, int64_t rtt_us, int inflight,
                        enum dw_limit_signal signal)
{
    atomic_fetch_sub(&g->calls, 1);
    pthread_mutex_lock(&g->lock);
    dw_limit_sample(g->limit, now_us, rtt_us, inflight, signal);
    int n = apply_limit(g);
    pthread_mutex_unlock(&g->lock);
    return n;
}

bool dw_guard_shed(struct dw_guard *g, enum dw_errcode error, long http_status,
                   bool connect_timed_out, int64_t now_ms)
{
    if (error == DW_EC_NONE)
        return false;
    int64_t served = atomic_load(&g->served_ms);
    if (served == INT64_MIN || now_ms - served > DW_GUARD_SERVING_MS)
        return false; /* not serving: whatever failed is the breaker's */
    if (connect_timed_out)
        return g->cc->max_connects_per_second > 0;
    return g->cc->limit.mode == DW_LIMIT_ADAPTIVE &&
           dw_guard_signal(error, http_status) == DW_LIMIT_DROP;
}

struct dw_bulkhead_waiter *dw_guard_end(struct dw_guard *g, struct dw_guard_ticket *t,
                                        enum dw_errcode error, int64_t took_ms, int64_t now_ms,
                                        int64_t retry_after_ms, bool shed,
                                        struct dw_breaker_transition *transition)
{
    enum dw_breaker_outcome outcome = error == DW_EC_NONE                    ? DW_BREAKER_SUCCESS
                                      : shed || !dw_errcode_transient(error) ? DW_BREAKER_IGNORED
                                                                             : DW_BREAKER_FAILURE;
    dw_breaker_record(g->breaker, &t->permit, outcome, took_ms, now_ms, transition);
    /* Shed load takes no budget token either: the limit and the pace
     * already bound how many calls, retries included, go out, and shrink
     * on it; the budget is for storms they do not see (500s, bad
     * gateways). Found when a latency step's brief burst of 503s spent
     * the budget and failed jobs at once. */
    if (outcome == DW_BREAKER_SUCCESS) {
        dw_retry_budget_on_success(g->budget);
        int64_t have = atomic_load(&g->served_ms);
        while (have < now_ms && !atomic_compare_exchange_weak(&g->served_ms, &have, now_ms))
            ;
    } else if (outcome == DW_BREAKER_FAILURE) {
        dw_retry_budget_on_failure(g->budget);
    }
    if (retry_after_ms > 0) {
        /* Clamped like the retry's own wait: a longer one ends that job
         * RATE_LIMITED, and must not stop the channel for longer. */
        int64_t until =
            now_ms + (retry_after_ms < g->cc->max_retry_after_ms ? retry_after_ms
                                                                 : g->cc->max_retry_after_ms);
        int64_t have = atomic_load(&g->pause_until_ms);
        while (have < until && !atomic_compare_exchange_weak(&g->pause_until_ms, &have, until))
            ;
    }
    if (!t->has_slot)
        return NULL;
    t->has_slot = false;
    return dw_bulkhead_release(g->bulkhead);
}

struct dw_bulkhead_waiter *dw_guard_grant(struct dw_guard *g)
{
    return dw_bulkhead_grant(g->bulkhead);
}

void dw_guard_after_failure(struct dw_guard *g, struct dw_guard_ticket *t, int attempts,
                            int free_tries, enum dw_errcode error, const char *message,
                            int64_t retry_after_ms, int64_t now_ms, double rnd,
                            struct dw_retry_verdict *v)
{
    struct dw_retry_policy policy = g->policy;
    policy.max_attempts += free_tries > 0 ? free_tries : 0;
    struct dw_retry_input in = {
        .attempts = attempts,
        .error = error,
        .message = message,
        .retry_after_ms = retry_after_ms > 0 ? retry_after_ms : -1,
        .now_ms = now_ms,
        .deadline_ms = t->deadline_ms,
        .budget_allows = dw_retry_budget_allows(g->budget),
        .rnd = rnd,
    };
    dw_retry_decide(&policy, &in, v);
}

struct dw_bulkhead_waiter *dw_guard_release(struct dw_guard *g, struct dw_guard_ticket *t)
{
    set_waiting(g, t, false);
    dw_breaker_release(g->breaker, &t->permit);
    if (!t->has_slot)
        return NULL;
    t->has_slot = false;
    return dw_bulkhead_release(g->bulkhead);
}

void dw_guard_breaker_snapshot(struct dw_guard *g, int64_t now_ms, struct dw_breaker_snapshot *snap)
{
    dw_breaker_snapshot(g->breaker, now_ms, snap);
}

int dw_guard_free_permits(struct dw_guard *g, int64_t now_ms)
{
    return dw_breaker_free_permits(g->breaker, now_ms);
}

int dw_guard_limit(struct dw_guard *g)
{
    pthread_mutex_lock(&g->lock);
    int n = dw_limit_get(g->limit);
    pthread_mutex_unlock(&g->lock);
    return n;
}

int dw_guard_in_use(struct dw_guard *g)
{
    return dw_bulkhead_in_use(g->bulkhead);
}

int dw_guard_waiting(struct dw_guard *g)
{
    return atomic_load(&g->waiting);
}

double dw_guard_budget_tokens(struct dw_guard *g)
{
    return dw_retry_budget_tokens(g->budget);
}
