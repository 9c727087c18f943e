/*
 * A channel job's life in the pool: a try begun with the guards, each of
 * its calls (Instagram has two steps) built by the channel's adapter and
 * started on the worker's transfer loop, each answer classified into the
 * codes of CONTRACT 2.3 and fed to the channel's limit, the try ended
 * (outcome to the breaker and the budget, the slot back), then a retry on
 * a timer or the end of the job through the done callback.
 *
 * Threads: a job's life runs on its worker thread (the transfer loop's
 * callbacks too); dw_pool_headers_init runs before the workers start, and
 * dw_pool_running_unlink and dw_pool_job_free also at dw_pool_stop, once
 * they are gone. The guards lock themselves; a slot given back reaches a
 * job on another worker only through pool_guards.c.
 *
 * Invariants:
 * - A job holds a breaker permit and a slot only between the start of a
 *   try and its end (or while it waits for its connect pace), and gives
 *   both back on every path: the try's end, a refusal, finish.
 * - The done callback is called exactly once per job that ends, and the
 *   job is freed right after it.
 * - A running job is on its worker's running list and counted in
 *   w->calls[its channel] and pool->calls; it leaves them when its call
 *   ends.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dw/channel.h"
#include "dw/guard.h"
#include "dw/heap.h"
#include "dw/list.h"
#include "dw/metrics.h"
#include "dw/request.h"
#include "dw/transfer.h"
#include "pool_internal.h"

void dw_pool_job_free(struct job *job)
{
    if (!job)
        return;
    dw_http_call_cleanup(&job->call);
    free(job->last_message);
    free(job);
}

/* ---- ending a job ---- */

static void running_link(struct worker *w, struct job *job)
{
    dw_list_push_front(&w->running_jobs, &job->run);
    job->running = true;
    atomic_fetch_add_explicit(&w->pool->calls, 1, memory_order_relaxed);
    w->calls[job->channel]++;
    dw_metrics_gauge_add(w->pool->opts.metrics, DW_GAUGE_CALLS_IN_FLIGHT, 1);
    dw_metrics_channel_gauge_add(w->pool->opts.metrics, job->channel, DW_CHGAUGE_IN_FLIGHT, 1);
}

/* One call fewer under way. If the workers were at the cap, one of the
 * others may have calls ready that waited for this one to end: wake them.
 * Rare (only at the cap), and a wake of a worker with nothing ready costs
 * one turn of its loop. Not while stopping: the loops may be gone. */
static void call_ended(struct worker *w)
{
    struct dw_pool *pool = w->pool;
    if (atomic_fetch_sub_explicit(&pool->calls, 1, memory_order_relaxed) != pool->opts.max_calls ||
        atomic_load(&pool->stopping))
        return;
    for (int i = 0; i < pool->nworkers; i++)
        if (&pool->workers[i] != w)
            dw_xfer_wake(pool->workers[i].loop);
}

void dw_pool_running_unlink(struct worker *w, struct job *job)
{
    if (!job->running)
        return;
    dw_list_remove(&w->running_jobs, &job->run);
    job->running = false;
    call_ended(w);
    w->calls[job->channel]--;
    dw_metrics_gauge_add(w->pool->opts.metrics, DW_GAUGE_CALLS_IN_FLIGHT, -1);
    dw_metrics_channel_gauge_add(w->pool->opts.metrics, job->channel, DW_CHGAUGE_IN_FLIGHT, -1);
}

static void finish(struct worker *w, struct job *job, enum dw_errcode error, const char *message,
                   const struct dw_channel_reply *reply)
{
    struct dw_pool *pool = w->pool;
    struct dw_call_result res;

    dw_pool_give_back(pool, w, job);
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
    dw_pool_job_free(job);
}

/* A guard refused the next try (code: CIRCUIT_OPEN, BULKHEAD_FULL or
 * TIMEOUT for the deadline). Before any call that is the channel's code
 * (CONTRACT 2.3); after failed tries the channel ran out of retries, with
 * the last cause in the message. */
void dw_pool_job_refuse(struct worker *w, struct job *job, enum dw_errcode code, const char *why)
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
    dw_pool_report(pool, job->channel, &v.transition);
    switch (v.step) {
    case DW_GUARD_GO:
        break;
    case DW_GUARD_WAIT:
        dw_pool_park(w, job, WAIT_RETRY, v.until_ms);
        return false;
    case DW_GUARD_QUEUED:
        dw_metrics_bulkhead_change(m, job->channel, 0, 1);
        dw_pool_park(w, job, WAIT_SLOT, v.until_ms);
        return false;
    case DW_GUARD_REFUSED:
        if (v.breaker_refused)
            dw_metrics_breaker_not_permitted(m, job->channel);
        if (v.bulkhead_full)
            dw_metrics_bulkhead_rejected(m, job->channel);
        dw_pool_job_refuse(w, job, v.code, v.why);
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

void dw_pool_job_start(struct worker *w, struct job *job)
{
    int64_t now = dw_now_ms();

    if (job->new_try && !begin_try(w, job, now))
        return;
    if (!dw_pool_connect_ready(w, job, now))
        return;
    dw_pool_job_call(w, job, now);
}

void dw_pool_job_call(struct worker *w, struct job *job, int64_t now)
{
    struct dw_pool *pool = w->pool;
    const struct dw_pool_options *o = &pool->opts;
    const struct dw_channel_type *type = dw_channel_get(job->channel);
    const struct dw_channel_config *cc = &o->cfg->channels[job->channel];
    struct dw_guard *g = pool->guards[job->channel];

    if (!job->try_started_us)
        job->try_started_us = dw_now_us();
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
    dw_pool_report(pool, job->channel, &t);
    dw_metrics_breaker_call(pool->opts.metrics, job->channel,
                            error == DW_EC_NONE                    ? DW_BREAKER_SUCCESS
                            : shed || !dw_errcode_transient(error) ? DW_BREAKER_IGNORED
                                                                   : DW_BREAKER_FAILURE,
                            took_us);
    dw_metrics_retry_budget(pool->opts.metrics, job->channel, dw_guard_budget_tokens(g), false);
    if (had_slot)
        dw_pool_slot_back(pool, w, job->channel, handed);
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
    dw_pool_park(w, job, WAIT_RETRY, now + v.wait_ms + 1);
}

void dw_pool_on_call_done(void *owner, const struct dw_xfer_result *r)
{
    struct worker *w = owner;
    struct dw_pool *pool = w->pool;
    struct job *job = r->opaque;
    const struct dw_channel_type *type = dw_channel_get(job->channel);
    char message[DW_ERRMSG_MAX] = "";
    enum dw_errcode error;

    dw_pool_running_unlink(w, job);
    dw_pool_connect_result(w, job->channel, r);
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
                    DW_POOL_RESPONSE_CAP);
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
    dw_pool_publish_flow(pool, job->channel, limit);
    dw_pool_grant_free_slots(pool, w, job->channel);

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

/* ---- the constant header lines ---- */

/* The constant header lines of each channel. False when out of memory. */
bool dw_pool_headers_init(struct dw_pool *pool)
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
