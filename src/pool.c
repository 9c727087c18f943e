/*
 * The channel-call pool.
 *
 * Threads: dw_pool_start starts opts->threads worker threads. Each owns one
 * CURLM handle, its easy handles, its ready list and its retry-timer heap;
 * no other thread touches them. The only shared state is each worker's
 * inbox (a mutex-guarded list), filled by dw_pool_submit from any thread,
 * which then wakes the worker with curl_multi_wakeup.
 *
 * Invariants:
 * - A job is in exactly one place: the inbox, the ready list (waiting for a
 *   transfer slot), the timer heap (waiting to retry), or running (its easy
 *   handle added to the multi).
 * - A worker runs at most max_running transfers; the rest wait in ready.
 * - The done callback is called exactly once per job that ends, on the
 *   worker thread, and never after dw_pool_stop has begun.
 */
#include "dw/pool.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "dw/request.h"

#define RESPONSE_CAP (1024 * 1024) /* a channel answer larger than this is BAD_RESPONSE */
#define IDLE_WAIT_MS 200

struct job {
    struct job *next;
    struct worker *worker;
    const struct dw_request *req;
    enum dw_channel_id channel;
    void *opaque;

    int step;
    bool new_try; /* the next start begins a new try (counts an attempt) */
    int attempts;
    char prev_id[DW_EXTERNAL_ID_MAX];
    enum dw_errcode last_error;
    char last_message[DW_ERRMSG_MAX];
    int64_t due_ms; /* when on the timer heap */

    /* While running: linked in the worker's running list. */
    struct job *run_prev, *run_next;
    CURL *easy;
    struct curl_slist *headers;
    struct dw_http_call call;
    struct dw_buf body;
    char curl_error[CURL_ERROR_SIZE];
    int64_t started_us;
};

struct worker {
    struct dw_pool *pool;
    pthread_t thread;
    bool thread_started;
    CURLM *multi;

    pthread_mutex_t lock; /* guards inbox */
    struct job *inbox_head, *inbox_tail;

    /* Owned by the worker thread alone. */
    struct job *ready_head, *ready_tail;
    struct job **timers; /* min-heap on due_ms */
    size_t ntimers, timers_cap;
    struct job *running_head; /* jobs with a transfer in the multi */
    CURL **idle_easy; /* easy handles kept for reuse */
    size_t nidle;
    int running;
    int max_running;
    uint64_t rnd;
};

struct dw_pool {
    struct dw_pool_options opts;
    struct worker *workers;
    int nworkers;
    atomic_uint next_worker;
    atomic_bool stopping;
};

/* ---- small helpers ---- */

static double next_random(uint64_t *s)
{
    /* xorshift64*: fast, seeded per worker; jitter needs no more. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return (double)((x * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

int64_t dw_pool_backoff_ms(const struct dw_channel_config *cc, int attempt, double rnd)
{
    double ceiling = cc->initial_backoff_ms * pow(cc->multiplier, attempt > 1 ? attempt - 1 : 0);
    if (ceiling > cc->max_backoff_ms)
        ceiling = cc->max_backoff_ms;
    return (int64_t)(rnd * ceiling);
}

static void list_push(struct job **head, struct job **tail, struct job *job)
{
    job->next = NULL;
    if (*tail)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

static struct job *list_pop(struct job **head, struct job **tail)
{
    struct job *job = *head;
    if (job) {
        *head = job->next;
        if (!*head)
            *tail = NULL;
        job->next = NULL;
    }
    return job;
}

static void heap_push(struct worker *w, struct job *job)
{
    if (w->ntimers == w->timers_cap) {
        w->timers_cap = w->timers_cap ? w->timers_cap * 2 : 64;
        w->timers = dw_xrealloc(w->timers, w->timers_cap * sizeof(*w->timers));
    }
    size_t i = w->ntimers++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (w->timers[parent]->due_ms <= job->due_ms)
            break;
        w->timers[i] = w->timers[parent];
        i = parent;
    }
    w->timers[i] = job;
}

static struct job *heap_pop(struct worker *w)
{
    struct job *top = w->timers[0];
    struct job *last = w->timers[--w->ntimers];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= w->ntimers)
            break;
        if (child + 1 < w->ntimers && w->timers[child + 1]->due_ms < w->timers[child]->due_ms)
            child++;
        if (last->due_ms <= w->timers[child]->due_ms)
            break;
        w->timers[i] = w->timers[child];
        i = child;
    }
    if (w->ntimers > 0)
        w->timers[i] = last;
    return top;
}

static void job_free(struct job *job)
{
    if (!job)
        return;
    curl_slist_free_all(job->headers);
    dw_http_call_cleanup(&job->call);
    dw_buf_cleanup(&job->body);
    free(job);
}

/* ---- ending a job ---- */

static void running_link(struct worker *w, struct job *job)
{
    job->run_prev = NULL;
    job->run_next = w->running_head;
    if (w->running_head)
        w->running_head->run_prev = job;
    w->running_head = job;
}

static void running_unlink(struct worker *w, struct job *job)
{
    if (job->run_prev)
        job->run_prev->run_next = job->run_next;
    else
        w->running_head = job->run_next;
    if (job->run_next)
        job->run_next->run_prev = job->run_prev;
    job->run_prev = job->run_next = NULL;
}

static void release_transfer(struct worker *w, struct job *job)
{
    if (!job->easy)
        return;
    running_unlink(w, job);
    curl_multi_remove_handle(w->multi, job->easy);
    curl_easy_reset(job->easy);
    if (w->nidle < (size_t)w->max_running)
        w->idle_easy[w->nidle++] = job->easy;
    else
        curl_easy_cleanup(job->easy);
    job->easy = NULL;
    curl_slist_free_all(job->headers);
    job->headers = NULL;
    dw_http_call_cleanup(&job->call);
    dw_buf_reset(&job->body);
    w->running--;
    dw_metrics_gauge_add(w->pool->opts.metrics, DW_GAUGE_CALLS_IN_FLIGHT, -1);
}

static void finish(struct worker *w, struct job *job, enum dw_errcode error, const char *message,
                   const struct dw_channel_reply *reply)
{
    struct dw_call_result res;
    memset(&res, 0, sizeof(res));
    res.channel = job->channel;
    res.status = error == DW_EC_NONE ? DW_CH_SUCCESS : DW_CH_FAILED;
    res.error = error;
    res.attempts = job->attempts;
    if (message)
        dw_strlcpy(res.error_message, message, sizeof(res.error_message));
    if (reply) {
        dw_strlcpy(res.external_id, reply->external_id, sizeof(res.external_id));
        dw_strlcpy(res.url, reply->url, sizeof(res.url));
    }
    w->pool->opts.done(job->opaque, &res);
    job_free(job);
}

/* ---- starting a transfer ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct job *job = userp;
    size_t n = size * nmemb;
    /* Returning less than n makes libcurl fail the transfer (CURLE_WRITE_ERROR). */
    return dw_buf_append(&job->body, data, n) == DW_OK ? n : 0;
}

static bool add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *next = curl_slist_append(*list, line);
    if (!next)
        return false;
    *list = next;
    return true;
}

static void start(struct worker *w, struct job *job)
{
    const struct dw_pool_options *o = &w->pool->opts;
    const struct dw_channel_type *type = dw_channel_get(job->channel);
    const struct dw_channel_config *cc = &o->cfg->channels[job->channel];

    if (job->new_try) {
        job->attempts++;
        job->new_try = false;
    }
    if (type->build(job->req, job->step, job->step ? job->prev_id : NULL, &job->call) != DW_OK) {
        finish(w, job, DW_EC_BAD_RESPONSE, "could not build the channel request", NULL);
        return;
    }

    char url[DW_URL_MAX + 128];
    char line[1024];
    dw_snprintf(url, sizeof(url), "%s%s", cc->url, job->call.path);
    bool ok = true;
    dw_snprintf(line, sizeof(line), "Authorization: Bearer %s", cc->token ? cc->token : "");
    ok = ok && add_header(&job->headers, line);
    dw_snprintf(line, sizeof(line), "Idempotency-Key: %s:%s%s", job->req->event_id, type->name,
                job->call.idempotency_suffix ? job->call.idempotency_suffix : "");
    ok = ok && add_header(&job->headers, line);
    dw_snprintf(line, sizeof(line), "Content-Type: %s", job->call.content_type);
    ok = ok && add_header(&job->headers, line);
    ok = ok && add_header(&job->headers, "Accept: application/json");
    /* No "Expect: 100-continue" round trip before small bodies. */
    ok = ok && add_header(&job->headers, "Expect:");
    if (!ok) {
        dw_http_call_cleanup(&job->call);
        curl_slist_free_all(job->headers);
        job->headers = NULL;
        finish(w, job, DW_EC_CONNECTION, "out of memory building headers", NULL);
        return;
    }

    CURL *easy = w->nidle ? w->idle_easy[--w->nidle] : curl_easy_init();
    if (!easy) {
        dw_http_call_cleanup(&job->call);
        curl_slist_free_all(job->headers);
        job->headers = NULL;
        finish(w, job, DW_EC_CONNECTION, "curl_easy_init failed", NULL);
        return;
    }
    job->easy = easy;
    job->curl_error[0] = '\0';
    dw_buf_reset(&job->body);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job->call.body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->call.body_len);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, job->headers);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, job);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, job);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, job->curl_error);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)cc->connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)cc->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "distribution-worker");
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");

    job->started_us = dw_now_us();
    if (curl_multi_add_handle(w->multi, easy) != CURLM_OK) {
        curl_easy_cleanup(easy);
        job->easy = NULL;
        dw_http_call_cleanup(&job->call);
        curl_slist_free_all(job->headers);
        job->headers = NULL;
        finish(w, job, DW_EC_CONNECTION, "curl_multi_add_handle failed", NULL);
        return;
    }
    running_link(w, job);
    w->running++;
    dw_metrics_gauge_add(o->metrics, DW_GAUGE_CALLS_IN_FLIGHT, 1);
}

/* ---- a transfer ended ---- */

static enum dw_errcode classify_transport(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return DW_EC_TIMEOUT;
    case CURLE_WRITE_ERROR: /* the body passed RESPONSE_CAP */
        return DW_EC_BAD_RESPONSE;
    default:
        return DW_EC_CONNECTION;
    }
}

static void retry_or_fail(struct worker *w, struct job *job, enum dw_errcode error,
                          const char *message, curl_off_t retry_after_s)
{
    const struct dw_channel_config *cc = &w->pool->opts.cfg->channels[job->channel];
    job->last_error = error;
    dw_strlcpy(job->last_message, message, sizeof(job->last_message));

    if (!dw_errcode_transient(error)) {
        finish(w, job, error, message, NULL);
        return;
    }
    int64_t wait = dw_pool_backoff_ms(cc, job->attempts, next_random(&w->rnd));
    if (error == DW_EC_RATE_LIMITED && retry_after_s > 0) {
        int64_t asked = (int64_t)retry_after_s * 1000;
        if (asked > cc->max_retry_after_ms) {
            char msg[DW_ERRMSG_MAX];
            dw_snprintf(msg, sizeof(msg), "%s; Retry-After %llds exceeds the %dms cap", message,
                        (long long)retry_after_s, cc->max_retry_after_ms);
            finish(w, job, DW_EC_RATE_LIMITED, msg, NULL);
            return;
        }
        if (wait < asked)
            wait = asked;
    }
    if (job->attempts >= cc->max_attempts) {
        char msg[DW_ERRMSG_MAX];
        dw_snprintf(msg, sizeof(msg), "%d attempts; last: %s %s", job->attempts,
                    dw_errcode_name(error), message);
        finish(w, job, DW_EC_RETRIES_EXHAUSTED, msg, NULL);
        return;
    }
    job->new_try = true;
    job->due_ms = dw_now_ms() + wait;
    heap_push(w, job);
}

static void transfer_done(struct worker *w, CURL *easy, CURLcode rc)
{
    struct job *job = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&job);
    const struct dw_channel_type *type = dw_channel_get(job->channel);
    int64_t took_us = dw_now_us() - job->started_us;

    long status = 0;
    curl_off_t retry_after = 0;
    char message[DW_ERRMSG_MAX];
    enum dw_errcode error;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after);
        error = dw_channel_classify_http(status);
        dw_snprintf(message, sizeof(message), "HTTP %ld from %s", status, job->call.path);
    } else {
        error = classify_transport(rc);
        dw_snprintf(message, sizeof(message), "%s",
                    job->curl_error[0] ? job->curl_error : curl_easy_strerror(rc));
    }

    struct dw_channel_reply reply;
    memset(&reply, 0, sizeof(reply));
    if (error == DW_EC_NONE) {
        char why[DW_ERRMSG_MAX] = "";
        error = type->parse(job->step, job->body.data ? job->body.data : "", job->body.len, &reply,
                            why, sizeof(why));
        if (error != DW_EC_NONE)
            dw_snprintf(message, sizeof(message), "HTTP %ld from %s: %s", status, job->call.path,
                        why);
    }
    dw_metrics_channel_call(w->pool->opts.metrics, job->channel, error, took_us);
    release_transfer(w, job);

    if (error != DW_EC_NONE) {
        retry_or_fail(w, job, error, message, retry_after);
        return;
    }
    if (job->step + 1 < type->steps) {
        /* The next step of the same try (Instagram's publish). */
        dw_strlcpy(job->prev_id, reply.external_id, sizeof(job->prev_id));
        job->step++;
        list_push(&w->ready_head, &w->ready_tail, job);
        return;
    }
    finish(w, job, DW_EC_NONE, NULL, &reply);
}

/* ---- the worker thread ---- */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct dw_pool *pool = w->pool;

    while (!atomic_load(&pool->stopping)) {
        pthread_mutex_lock(&w->lock);
        struct job *in = w->inbox_head;
        struct job *in_tail = w->inbox_tail;
        w->inbox_head = w->inbox_tail = NULL;
        pthread_mutex_unlock(&w->lock);
        if (in) {
            if (w->ready_tail)
                w->ready_tail->next = in;
            else
                w->ready_head = in;
            w->ready_tail = in_tail;
        }

        int64_t now = dw_now_ms();
        while (w->ntimers > 0 && w->timers[0]->due_ms <= now)
            list_push(&w->ready_head, &w->ready_tail, heap_pop(w));

        while (w->ready_head && w->running < w->max_running)
            start(w, list_pop(&w->ready_head, &w->ready_tail));

        int still = 0;
        curl_multi_perform(w->multi, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(w->multi, &left))) {
            if (msg->msg == CURLMSG_DONE)
                transfer_done(w, msg->easy_handle, msg->data.result);
        }
        if (w->ready_head && w->running < w->max_running)
            continue; /* a finished step or retry is ready to go now */

        long wait = IDLE_WAIT_MS;
        if (w->ntimers > 0) {
            int64_t until = w->timers[0]->due_ms - dw_now_ms();
            if (until < wait)
                wait = until < 0 ? 0 : (long)until;
        }
        curl_multi_poll(w->multi, NULL, 0, (int)wait, NULL);
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
    uint64_t seed = opts->seed ? opts->seed : (uint64_t)dw_now_us() * 0x9E3779B97F4A7C15ULL;
    pool->nworkers = opts->threads;
    pool->workers = dw_xcalloc((size_t)pool->nworkers, sizeof(*pool->workers));
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        w->pool = pool;
        w->max_running = opts->max_calls / opts->threads;
        w->rnd = (seed + (uint64_t)i * 0x2545F4914F6CDD1DULL) | 1;
        w->idle_easy = dw_xcalloc((size_t)w->max_running, sizeof(CURL *));
        pthread_mutex_init(&w->lock, NULL);
        w->multi = curl_multi_init();
        if (!w->multi) {
            dw_snprintf(errbuf, errlen, "pool: curl_multi_init failed");
            err = DW_ERR_HTTP;
            goto out;
        }
        /* Keep a connection per possible transfer so none is closed and
         * reopened under load. */
        curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, (long)w->max_running + 16);
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
    if (atomic_load(&pool->stopping))
        return DW_ERR_STOPPED;
    struct job *job = dw_xcalloc(1, sizeof(*job));
    job->req = req;
    job->channel = channel;
    job->opaque = opaque;
    job->new_try = true;
    dw_buf_init(&job->body, RESPONSE_CAP);

    unsigned i = atomic_fetch_add(&pool->next_worker, 1) % (unsigned)pool->nworkers;
    struct worker *w = &pool->workers[i];
    job->worker = w;
    pthread_mutex_lock(&w->lock);
    list_push(&w->inbox_head, &w->inbox_tail, job);
    pthread_mutex_unlock(&w->lock);
    curl_multi_wakeup(w->multi);
    return DW_OK;
}

void dw_pool_stop(struct dw_pool *pool)
{
    if (!pool)
        return;
    atomic_store(&pool->stopping, true);
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        if (w->thread_started) {
            curl_multi_wakeup(w->multi);
            pthread_join(w->thread, NULL);
        }
    }
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        struct job *job;
        /* Abandon running transfers. */
        while ((job = w->running_head)) {
            release_transfer(w, job);
            job_free(job);
        }
        while ((job = list_pop(&w->inbox_head, &w->inbox_tail)))
            job_free(job);
        while ((job = list_pop(&w->ready_head, &w->ready_tail)))
            job_free(job);
        for (size_t k = 0; k < w->ntimers; k++)
            job_free(w->timers[k]);
        free(w->timers);
        for (size_t k = 0; k < w->nidle; k++)
            curl_easy_cleanup(w->idle_easy[k]);
        free(w->idle_easy);
        if (w->multi)
            curl_multi_cleanup(w->multi);
        pthread_mutex_destroy(&w->lock);
    }
    free(pool->workers);
    free(pool);
}
