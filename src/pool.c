/*
 * The channel-call pool, with the four guards of docs/resilience.md nested
 * as Retry(CircuitBreaker(Bulkhead(call))).
 *
 * Threads: dw_pool_start starts opts->threads worker threads. Each owns one
 * CURLM handle driven through curl_multi_socket_action and its own epoll
 * set (only sockets that are ready are looked at, so the cost of a pass does
 * not grow with the calls in flight, as curl_multi_perform's does), its
 * easy handles, its ready list and its timer heap; no other thread touches
 * them. Shared between threads:
 * - each worker's inbox (new jobs) and grant list (parked jobs that were
 *   handed a bulkhead slot), both guarded by the worker's mutex and
 *   followed by a write to the worker's eventfd, which wakes its epoll;
 * - per channel, one circuit breaker, one bulkhead and one retry budget
 *   (src/resilience/), each thread-safe on its own.
 *
 * A try: the breaker gives a permit (or the job ends CIRCUIT_OPEN), the
 * bulkhead a slot (or the job parks on the timer heap until a slot is
 * handed over or bulkhead_max_wait_ms passes, then ends BULKHEAD_FULL), the
 * try makes its HTTP call(s) (Instagram has two steps), and its end gives
 * the outcome to the breaker and the budget, the slot back to the bulkhead
 * (maybe to a parked job, through that job's worker's grant list), and asks
 * retry.c what next: finish, or wait on the timer heap and try again.
 * Nothing here sleeps; every wait is a timer.
 *
 * Invariants:
 * - A job is in exactly one of: the inbox, the ready list, the timer heap
 *   (wait RETRY, or SLOT: also queued in the bulkhead), running (its easy
 *   handle in the multi), or the grant list. The one overlap: a parked job
 *   handed a slot is on the heap and in the grant list until its worker
 *   takes it from both (or, if its timer fired first, only in the list,
 *   wait GRANTED).
 * - A job holds a breaker permit and a bulkhead slot only between the
 *   start of a try and its end, and gives both back on every path: the
 *   try's end, a refusal, finish, and dw_pool_stop. A parked job holds
 *   neither; it asks the breaker again once it has its slot.
 * - A worker runs at most max_running transfers; the rest wait in ready,
 *   those that hold a bulkhead slot at its front.
 * - The done callback is called exactly once per job that ends, on the
 *   worker thread, and never after dw_pool_stop has begun.
 */
#include "dw/pool.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "dw/breaker.h"
#include "dw/bulkhead.h"
#include "dw/request.h"
#include "dw/retry.h"

#define RESPONSE_CAP (1024 * 1024) /* a channel answer larger than this is BAD_RESPONSE */
#define IDLE_WAIT_MS 200
/* "Idempotency-Key: " + an eventId (at most 64) + ":" + a channel name +
 * a step suffix, with room to spare. */
#define IDEM_LINE_MAX 160

/* Bits of worker.fds beside the EPOLL* event bits. */
#define FD_IN_SET  (1u << 30)
#define FD_WATCHED (1u << 29)
#define FD_OWNED   (1u << 28) /* a connection socket, opened by on_open_socket */
#define FD_EVENTS  (EPOLLIN | EPOLLOUT)

enum job_wait {
    WAIT_NONE,    /* inbox, ready, running */
    WAIT_RETRY,   /* on the heap until due_ms, then the next try */
    WAIT_SLOT,    /* on the heap and in the bulkhead's queue until a slot or due_ms */
    WAIT_GRANTED, /* its timer fired after a slot was handed over: in the grant list */
};

struct job {
    struct job *next;
    struct worker *worker;
    const struct dw_request *req;
    enum dw_channel_id channel;
    void *opaque;

    int step;
    int last_step; /* the job ends after this step (dw_pool_submit_steps) */
    bool new_try;  /* the next start begins a new try (asks the guards, counts an attempt) */
    int attempts;
    char prev_id[DW_EXTERNAL_ID_MAX];
    enum dw_errcode last_error;
    char *last_message;  /* the last failure, for the final message; NULL until one */
    int64_t deadline_ms; /* 0: none */

    enum job_wait wait;
    int64_t due_ms;    /* on the timer heap */
    size_t heap_index; /* its place there */

    /* The guards, held from the start of a try to its end. */
    struct dw_breaker_permit permit;
    struct dw_bulkhead_waiter waiter;
    bool has_slot;
    int64_t try_started_us;
    struct job *grant_next; /* in the worker's grant list (under its lock) */

    /* While running: linked in the worker's running list. */
    struct job *run_prev, *run_next;
    struct slot *slot;
    struct dw_http_call call;
    int64_t started_us;
};

/*
 * One easy handle and what belongs to it for as long as it lives. Options
 * that never change are set once, when it is made; it is reused from call
 * to call without curl_easy_reset, so a call sets only what differs (URL,
 * body, the two header lines of its own, timeouts). The body buffer and the
 * header lines live here, not in the job, because only a running call needs
 * them and there are far fewer slots (max_calls) than jobs (6 per request).
 */
struct slot {
    CURL *easy;
    struct job *job; /* while running */
    char error[CURL_ERROR_SIZE];
    struct dw_buf body;
    /* The call's header list: these two lines, then the channel's constant
     * lines (pool->headers). libcurl only reads the list, during the call. */
    struct curl_slist idem_node, ctype_node;
    char idem_line[IDEM_LINE_MAX];
    char ctype_line[96];
};

/* A finished transfer, read off libcurl's message queue. */
struct done_msg {
    struct slot *slot;
    CURLcode result;
};

struct worker {
    struct dw_pool *pool;
    pthread_t thread;
    bool thread_started;
    CURLM *multi;
    int epfd;            /* the sockets libcurl asks us to watch, and wakefd */
    int wakefd;          /* eventfd: other threads wake the worker */
    int64_t curl_due_ms; /* when libcurl wants its timeout handled; -1: never */

    pthread_mutex_t lock; /* guards inbox and the grant list */
    struct job *inbox_head, *inbox_tail;
    struct job *granted_head, *granted_tail;

    /* Owned by the worker thread alone. */
    struct job *ready_head, *ready_tail;
    struct job **timers; /* min-heap on due_ms */
    size_t ntimers, timers_cap;
    struct job *running_head; /* jobs with a transfer in the multi */
    struct slot **idle;       /* slots kept for reuse */
    size_t nidle;
    struct done_msg *done; /* reap's scratch array */
    size_t done_cap;
    /* What the worker knows of each descriptor: FD_OWNED for a connection
     * socket libcurl opened; FD_IN_SET | the EPOLL* events while it is in
     * the epoll set; FD_WATCHED while libcurl wants it watched. 0: none of
     * these. See on_socket. */
    uint32_t *fds;
    size_t nfds;
    int running;
    int max_running;
    uint64_t rnd;
};

/* One channel's guards, shared by every worker. */
struct guard {
    enum dw_channel_id channel;
    struct dw_metrics *metrics;
    struct dw_retry_policy policy;
    struct dw_breaker *breaker;
    struct dw_bulkhead *bulkhead;
    struct dw_retry_budget *budget;
};

struct dw_pool {
    struct dw_pool_options opts;
    struct worker *workers;
    int nworkers;
    atomic_uint next_worker;
    atomic_bool stopping;
    struct guard guards[DW_CHANNEL_COUNT];
    /* Per channel, the header lines that are the same on every call; each
     * call's own two lines are chained in front (struct slot). Read-only
     * once the threads run. */
    struct curl_slist *headers[DW_CHANNEL_COUNT];
    bool env_proxy; /* a proxy variable was set at start: let libcurl use it */
};

/* ---- lists and the timer heap ---- */

/* Any thread: interrupts the worker's epoll_wait. */
static void wake(struct worker *w)
{
    uint64_t one = 1;
    ssize_t n = write(w->wakefd, &one, sizeof(one));
    (void)n; /* EAGAIN: the counter is already non-zero, a wake-up is pending */
}

/* Brings the epoll set's entry for s to `events` (0: out of the set) and
 * records it. ADD and MOD fall back to each other, so a table entry that
 * is wrong about the kernel's set corrects itself. */
static void fd_register(struct worker *w, curl_socket_t s, uint32_t events)
{
    uint32_t *entry = &w->fds[s];
    struct epoll_event ev = {.events = events, .data.fd = s};
    int op = *entry & FD_IN_SET ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(w->epfd, op, s, &ev) != 0)
        epoll_ctl(w->epfd, op == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s, &ev);
    *entry = (*entry & FD_OWNED) | FD_IN_SET | events;
}

/* Makes w->fds long enough to hold s. */
static void fds_reserve(struct worker *w, curl_socket_t s)
{
    if ((size_t)s < w->nfds)
        return;
    size_t n = w->nfds ? w->nfds : 64;
    while (n <= (size_t)s)
        n *= 2;
    w->fds = dw_xrealloc(w->fds, n * sizeof(*w->fds));
    memset(w->fds + w->nfds, 0, (n - w->nfds) * sizeof(*w->fds));
    w->nfds = n;
}

/*
 * libcurl's CURLMOPT_SOCKETFUNCTION: watch (or stop watching) a socket.
 * A kept-alive connection that goes back to libcurl's cache is REMOVEd,
 * and its next call wants EPOLLIN again, so dropping and re-adding it
 * would be two epoll_ctl calls per call for nothing. It stays in the set
 * for EPOLLIN instead, marked not watched; if it reports an event while
 * nobody watches it (the peer closed it), the loop drops it then. When
 * libcurl closes it, on_close_socket forgets it. Only connection sockets
 * (FD_OWNED) are kept so: libcurl closes others (the threaded resolver's
 * socketpair) without telling us, and a stale entry could later claim a
 * new socket of the same number is in the set when it is not.
 */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct worker *w = userp;
    if (s < 0)
        return 0;
    fds_reserve(w, s);
    uint32_t have = w->fds[s];
    if (what == CURL_POLL_REMOVE) {
        if (!(have & FD_OWNED)) {
            if (have & FD_IN_SET)
                epoll_ctl(w->epfd, EPOLL_CTL_DEL, s, NULL);
            w->fds[s] = 0;
            return 0;
        }
        /* Idle: keep EPOLLIN only; an always-ready EPOLLOUT would spin. */
        if ((have & FD_IN_SET) && (have & FD_EVENTS) != EPOLLIN)
            fd_register(w, s, EPOLLIN);
        w->fds[s] &= ~FD_WATCHED;
        return 0;
    }
    uint32_t want = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        want |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        want |= EPOLLOUT;
    if (!(have & FD_IN_SET) || (have & FD_EVENTS) != want)
        fd_register(w, s, want);
    w->fds[s] |= FD_WATCHED;
    return 0;
}

/* libcurl's CURLMOPT_TIMERFUNCTION: when to call it back for timeouts. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct worker *w = userp;
    w->curl_due_ms = timeout_ms < 0 ? -1 : dw_now_ms() + timeout_ms;
    return 0;
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

/* For a job that already holds its bulkhead slot (the next step of a try,
 * a parked job handed a slot): at the back of the ready list it would hold
 * the slot while thousands of new jobs start first, and keep its request,
 * which waits on it, in flight that much longer. */
static void list_push_front(struct job **head, struct job **tail, struct job *job)
{
    job->next = *head;
    *head = job;
    if (!*tail)
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

static void heap_place(struct worker *w, size_t i, struct job *job)
{
    w->timers[i] = job;
    job->heap_index = i;
}

static void heap_sift_up(struct worker *w, size_t i, struct job *job)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (w->timers[parent]->due_ms <= job->due_ms)
            break;
        heap_place(w, i, w->timers[parent]);
        i = parent;
    }
    heap_place(w, i, job);
}

static void heap_sift_down(struct worker *w, size_t i, struct job *job)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= w->ntimers)
            break;
        if (child + 1 < w->ntimers && w->timers[child + 1]->due_ms < w->timers[child]->due_ms)
            child++;
        if (job->due_ms <= w->timers[child]->due_ms)
            break;
        heap_place(w, i, w->timers[child]);
        i = child;
    }
    heap_place(w, i, job);
}

static void heap_push(struct worker *w, struct job *job)
{
    if (w->ntimers == w->timers_cap) {
        w->timers_cap = w->timers_cap ? w->timers_cap * 2 : 64;
        w->timers = dw_xrealloc(w->timers, w->timers_cap * sizeof(*w->timers));
    }
    heap_sift_up(w, w->ntimers++, job);
}

/* Takes job out of the heap, wherever it is. */
static void heap_remove(struct worker *w, struct job *job)
{
    size_t i = job->heap_index;
    struct job *last = w->timers[--w->ntimers];
    if (last == job)
        return;
    if (i > 0 && last->due_ms < w->timers[(i - 1) / 2]->due_ms)
        heap_sift_up(w, i, last);
    else
        heap_sift_down(w, i, last);
}

static struct job *heap_pop(struct worker *w)
{
    struct job *top = w->timers[0];
    heap_remove(w, top);
    return top;
}

static void job_free(struct job *job)
{
    if (!job)
        return;
    dw_http_call_cleanup(&job->call);
    free(job->last_message);
    free(job);
}

/* ---- the guards ---- */

static void on_breaker_change(void *opaque, const struct dw_breaker_snapshot *snap)
{
    struct guard *g = opaque;
    dw_metrics_breaker(g->metrics, g->channel, snap);
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

/* A parked job was handed a slot: tell its worker (any thread may call). */
static void deliver_grant(struct job *job)
{
    struct worker *w = job->worker;
    pthread_mutex_lock(&w->lock);
    job->grant_next = NULL;
    if (w->granted_tail)
        w->granted_tail->grant_next = job;
    else
        w->granted_head = job;
    w->granted_tail = job;
    pthread_mutex_unlock(&w->lock);
    wake(w);
}

static void slot_release(struct dw_pool *pool, struct job *job)
{
    struct guard *g = &pool->guards[job->channel];
    if (!job->has_slot)
        return;
    job->has_slot = false;
    struct dw_bulkhead_waiter *next = dw_bulkhead_release(g->bulkhead);
    if (next)
        deliver_grant((struct job *)((char *)next - offsetof(struct job, waiter)));
    else
        dw_metrics_bulkhead_change(pool->opts.metrics, job->channel, -1, 0);
}

/* Gives back whatever the job holds, without an outcome. */
static void give_back(struct dw_pool *pool, struct job *job)
{
    dw_breaker_release(pool->guards[job->channel].breaker, &job->permit);
    slot_release(pool, job);
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

static void slot_destroy(struct slot *slot)
{
    if (!slot)
        return;
    curl_easy_cleanup(slot->easy);
    dw_buf_cleanup(&slot->body);
    free(slot);
}

/* The slot back to the idle list (kept: its handle, buffer and options),
 * or freed when the list is full. */
static void slot_put(struct worker *w, struct slot *slot)
{
    slot->job = NULL;
    dw_buf_reset(&slot->body);
    if (w->nidle < (size_t)w->max_running)
        w->idle[w->nidle++] = slot;
    else
        slot_destroy(slot);
}

static void release_transfer(struct worker *w, struct job *job)
{
    if (!job->slot)
        return;
    running_unlink(w, job);
    curl_multi_remove_handle(w->multi, job->slot->easy);
    slot_put(w, job->slot);
    job->slot = NULL;
    dw_http_call_cleanup(&job->call);
    w->running--;
    dw_metrics_gauge_add(w->pool->opts.metrics, DW_GAUGE_CALLS_IN_FLIGHT, -1);
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
    dw_metrics_retry_call(pool->opts.metrics, job->channel, error == DW_EC_NONE, job->attempts > 1);
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

static void bulkhead_full(struct worker *w, struct job *job, const char *why)
{
    dw_metrics_bulkhead_rejected(w->pool->opts.metrics, job->channel);
    refuse(w, job, DW_EC_BULKHEAD_FULL, why);
}

/* ---- starting a try ---- */

/* Asks the guards for a new try: true when it may go ahead, false when
 * the job was parked or ended. */
static bool begin_try(struct worker *w, struct job *job)
{
    struct dw_pool *pool = w->pool;
    struct guard *g = &pool->guards[job->channel];
    const struct dw_channel_config *cc = &pool->opts.cfg->channels[job->channel];
    const char *name = dw_channel_get(job->channel)->name;
    int64_t now = dw_now_ms();
    char why[DW_ERRMSG_MAX];

    if (job->deadline_ms && now >= job->deadline_ms) {
        dw_snprintf(why, sizeof(why), "deadline of %dms passed before the call", cc->deadline_ms);
        refuse(w, job, DW_EC_TIMEOUT, why);
        return false;
    }
    if (!job->permit.held) {
        struct dw_breaker_transition t;
        bool ok = dw_breaker_acquire(g->breaker, now, &job->permit, &t);
        report(pool, job->channel, &t);
        if (!ok) {
            dw_metrics_breaker_not_permitted(pool->opts.metrics, job->channel);
            dw_snprintf(why, sizeof(why), "circuit breaker of %s is %s", name,
                        dw_breaker_state_name(t.to));
            refuse(w, job, DW_EC_CIRCUIT_OPEN, why);
            return false;
        }
    }
    if (!job->has_slot) {
        bool may_wait = cc->bulkhead_max_wait_ms > 0;
        switch (dw_bulkhead_acquire(g->bulkhead, may_wait ? &job->waiter : NULL)) {
        case DW_BULKHEAD_GRANTED:
            job->has_slot = true;
            dw_metrics_bulkhead_change(pool->opts.metrics, job->channel, 1, 0);
            break;
        case DW_BULKHEAD_QUEUED:
            /* Park without holding a permit (a half-open trial stays free
             * for others); the breaker is asked again once a slot comes. */
            dw_breaker_release(g->breaker, &job->permit);
            dw_metrics_bulkhead_change(pool->opts.metrics, job->channel, 0, 1);
            job->wait = WAIT_SLOT;
            job->due_ms = now + cc->bulkhead_max_wait_ms;
            if (job->deadline_ms && job->deadline_ms < job->due_ms)
                job->due_ms = job->deadline_ms;
            heap_push(w, job);
            return false;
        case DW_BULKHEAD_REJECTED:
            dw_snprintf(why, sizeof(why), "bulkhead of %s full (%d calls in flight)", name,
                        cc->max_concurrent);
            bulkhead_full(w, job, why);
            return false;
        }
    }
    job->attempts++;
    job->new_try = false;
    job->try_started_us = dw_now_us();
    dw_metrics_retry_attempt(pool->opts.metrics, job->channel, job->attempts > 1);
    return true;
}

/* ---- starting a transfer ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct slot *slot = userp;
    size_t n = size * nmemb;
    /* Returning less than n makes libcurl fail the transfer (CURLE_WRITE_ERROR). */
    return dw_buf_append(&slot->body, data, n) == DW_OK ? n : 0;
}

/* libcurl's CURLOPT_OPENSOCKETFUNCTION: opens the socket as libcurl would,
 * and marks a connection's socket as ours to keep in the epoll set while
 * idle (see on_socket). */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *address)
{
    struct worker *w = clientp;
    int fd = socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    if (purpose == CURLSOCKTYPE_IPCXN) {
        fds_reserve(w, fd);
        w->fds[fd] = FD_OWNED;
    }
    return fd;
}

/* libcurl's CURLOPT_CLOSESOCKETFUNCTION: the socket is going away, so is
 * its place in the epoll set (the kernel drops a closed descriptor by
 * itself; the table must forget it too, or a new socket that gets the same
 * number would be taken as registered). */
static int on_close_socket(void *clientp, curl_socket_t s)
{
    struct worker *w = clientp;
    if (s >= 0 && (size_t)s < w->nfds)
        w->fds[s] = 0;
    return close(s);
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

/* A new slot: an easy handle with every option that is the same for all
 * calls. NULL when libcurl cannot make one. */
static struct slot *slot_new(struct worker *w)
{
    struct slot *slot = dw_xcalloc(1, sizeof(*slot));
    slot->easy = curl_easy_init();
    if (!slot->easy) {
        free(slot);
        return NULL;
    }
    dw_buf_init(&slot->body, RESPONSE_CAP);
    CURL *easy = slot->easy;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, slot);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, slot);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, slot->error);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, w);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, w);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    /* The receive buffer, which libcurl 7.88 allocates for every transfer
     * (16 KiB by default): times 2,000 calls in flight it was the largest
     * part of our RSS. 1 KiB, libcurl's minimum, holds a channel's answer
     * (status, headers and a small JSON body) in one read; a larger one
     * takes more reads, nothing else. */
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 1024L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    /* No proxy variable was set when the pool started: say so once, rather
     * than have libcurl look through the environment on every call. */
    if (!w->pool->env_proxy)
        curl_easy_setopt(easy, CURLOPT_PROXY, "");
    return slot;
}

static void start(struct worker *w, struct job *job)
{
    struct dw_pool *pool = w->pool;
    const struct dw_pool_options *o = &pool->opts;
    const struct dw_channel_type *type = dw_channel_get(job->channel);
    const struct dw_channel_config *cc = &o->cfg->channels[job->channel];

    if (job->new_try && !begin_try(w, job))
        return;
    if (type->build(job->req, job->step, job->step ? job->prev_id : NULL, &job->call) != DW_OK) {
        finish(w, job, DW_EC_BAD_RESPONSE, "could not build the channel request", NULL);
        return;
    }
    struct slot *slot = w->nidle ? w->idle[--w->nidle] : slot_new(w);
    if (!slot) {
        dw_http_call_cleanup(&job->call);
        finish(w, job, DW_EC_CONNECTION, "curl_easy_init failed", NULL);
        return;
    }

    char url[DW_URL_MAX + 128];
    join(url, sizeof(url), (const char *const[]){cc->url, job->call.path}, 2);
    join(slot->idem_line, sizeof(slot->idem_line),
         (const char *const[]){"Idempotency-Key: ", job->req->event_id, ":", type->name,
                               job->call.idempotency_suffix ? job->call.idempotency_suffix : ""},
         5);
    join(slot->ctype_line, sizeof(slot->ctype_line),
         (const char *const[]){"Content-Type: ", job->call.content_type}, 2);
    slot->idem_node = (struct curl_slist){slot->idem_line, &slot->ctype_node};
    slot->ctype_node = (struct curl_slist){slot->ctype_line, pool->headers[job->channel]};

    /* The whole call, cut short by the job's deadline. */
    long timeout = cc->timeout_ms;
    if (job->deadline_ms) {
        int64_t left = job->deadline_ms - dw_now_ms();
        if (left < timeout)
            timeout = left < 1 ? 1 : (long)left;
    }

    CURL *easy = slot->easy;
    slot->job = job;
    slot->error[0] = '\0';
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job->call.body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->call.body_len);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, &slot->idem_node);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)cc->connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout);

    job->started_us = dw_now_us();
    if (curl_multi_add_handle(w->multi, easy) != CURLM_OK) {
        slot_destroy(slot);
        dw_http_call_cleanup(&job->call);
        finish(w, job, DW_EC_CONNECTION, "curl_multi_add_handle failed", NULL);
        return;
    }
    job->slot = slot;
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

/* The try ended (its last step answered, or a step failed): its outcome to
 * the breaker and the budget, its slot back to the bulkhead. */
static void end_try(struct worker *w, struct job *job, enum dw_errcode error)
{
    struct dw_pool *pool = w->pool;
    struct guard *g = &pool->guards[job->channel];
    int64_t took_us = dw_now_us() - job->try_started_us;
    enum dw_breaker_outcome outcome = error == DW_EC_NONE           ? DW_BREAKER_SUCCESS
                                      : dw_errcode_transient(error) ? DW_BREAKER_FAILURE
                                                                    : DW_BREAKER_IGNORED;
    struct dw_breaker_transition t;

    dw_breaker_record(g->breaker, &job->permit, outcome, took_us / 1000, dw_now_ms(), &t);
    report(pool, job->channel, &t);
    dw_metrics_breaker_call(pool->opts.metrics, job->channel, outcome, took_us);
    if (outcome == DW_BREAKER_SUCCESS)
        dw_retry_budget_on_success(g->budget);
    else if (outcome == DW_BREAKER_FAILURE)
        dw_retry_budget_on_failure(g->budget);
    dw_metrics_retry_budget(pool->opts.metrics, job->channel, dw_retry_budget_tokens(g->budget),
                            false);
    slot_release(pool, job);
}

static void retry_or_fail(struct worker *w, struct job *job, enum dw_errcode error,
                          const char *message, curl_off_t retry_after_s)
{
    struct guard *g = &w->pool->guards[job->channel];
    struct dw_retry_verdict v;
    struct dw_retry_input in = {
        .attempts = job->attempts,
        .error = error,
        .message = message,
        .retry_after_ms = retry_after_s > 0 ? (int64_t)retry_after_s * 1000 : -1,
        .now_ms = dw_now_ms(),
        .deadline_ms = job->deadline_ms,
        .budget_allows = dw_retry_budget_allows(g->budget),
        .rnd = dw_retry_random(&w->rnd),
    };

    job->last_error = error;
    free(job->last_message);
    job->last_message = dw_xstrdup(message);
    dw_retry_decide(&g->policy, &in, &v);
    if (!v.retry) {
        if (v.stop == DW_RETRY_STOP_BUDGET)
            dw_metrics_retry_budget(w->pool->opts.metrics, job->channel,
                                    dw_retry_budget_tokens(g->budget), true);
        finish(w, job, v.error, v.message, NULL);
        return;
    }
    job->new_try = true;
    job->wait = WAIT_RETRY;
    /* now_ms is the clock truncated to the millisecond, up to 1 ms behind
     * the real moment: one more keeps "at least Retry-After" true. */
    job->due_ms = in.now_ms + v.wait_ms + 1;
    heap_push(w, job);
}

static void transfer_done(struct worker *w, struct slot *slot, CURLcode rc)
{
    CURL *easy = slot->easy;
    struct job *job = slot->job;
    const struct dw_channel_type *type = dw_channel_get(job->channel);
    int64_t took_us = dw_now_us() - job->started_us;

    long status = 0;
    curl_off_t retry_after = 0;
    char message[DW_ERRMSG_MAX] = "";
    enum dw_errcode error;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        error = dw_channel_classify_http(status);
        if (error != DW_EC_NONE) {
            curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after);
            dw_snprintf(message, sizeof(message), "HTTP %ld from %s", status, job->call.path);
        }
    } else {
        error = classify_transport(rc);
        dw_strlcpy(message, slot->error[0] ? slot->error : curl_easy_strerror(rc), sizeof(message));
    }

    struct dw_channel_reply reply;
    reply.external_id[0] = reply.url[0] = '\0';
    if (error == DW_EC_NONE) {
        char why[DW_ERRMSG_MAX] = "";
        error = type->parse(job->step, slot->body.data ? slot->body.data : "", slot->body.len,
                            &reply, why, sizeof(why));
        if (error != DW_EC_NONE)
            dw_snprintf(message, sizeof(message), "HTTP %ld from %s: %s", status, job->call.path,
                        why);
    }
    dw_metrics_channel_call(w->pool->opts.metrics, job->channel, error, took_us);
    release_transfer(w, job);

    if (error == DW_EC_NONE && job->step < job->last_step) {
        /* The next step of the same try (Instagram's publish), under the
         * same permit and slot. */
        dw_strlcpy(job->prev_id, reply.external_id, sizeof(job->prev_id));
        job->step++;
        list_push_front(&w->ready_head, &w->ready_tail, job);
        return;
    }
    end_try(w, job, error);
    if (error != DW_EC_NONE) {
        retry_or_fail(w, job, error, message, retry_after);
        return;
    }
    finish(w, job, DW_EC_NONE, NULL, &reply);
}

/* ---- timers and grants ---- */

static void timer_fired(struct worker *w, struct job *job)
{
    struct dw_pool *pool = w->pool;
    struct guard *g = &pool->guards[job->channel];
    const struct dw_channel_config *cc = &pool->opts.cfg->channels[job->channel];
    char why[DW_ERRMSG_MAX];

    if (job->wait == WAIT_RETRY) {
        job->wait = WAIT_NONE;
        list_push(&w->ready_head, &w->ready_tail, job);
        return;
    }
    /* WAIT_SLOT: no slot came in time. */
    if (!dw_bulkhead_cancel(g->bulkhead, &job->waiter)) {
        /* A release handed it one just now; the grant is on its way. */
        job->wait = WAIT_GRANTED;
        return;
    }
    job->wait = WAIT_NONE;
    dw_metrics_bulkhead_change(pool->opts.metrics, job->channel, 0, -1);
    if (job->deadline_ms && job->due_ms >= job->deadline_ms)
        dw_snprintf(why, sizeof(why), "bulkhead of %s full until the %dms deadline",
                    dw_channel_get(job->channel)->name, cc->deadline_ms);
    else
        dw_snprintf(why, sizeof(why), "bulkhead of %s full (%d calls in flight) for %dms",
                    dw_channel_get(job->channel)->name, cc->max_concurrent,
                    cc->bulkhead_max_wait_ms);
    bulkhead_full(w, job, why);
}

/* Parked jobs that were handed a slot: to the front of ready, holding it,
 * in the order the slots were handed over. */
static void take_grants(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    struct job *job = w->granted_head;
    w->granted_head = w->granted_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    struct job *head = NULL, *tail = NULL;
    while (job) {
        struct job *next = job->grant_next;
        job->grant_next = NULL;
        if (job->wait == WAIT_SLOT)
            heap_remove(w, job);
        job->wait = WAIT_NONE;
        job->has_slot = true;
        dw_metrics_bulkhead_change(w->pool->opts.metrics, job->channel, 0, -1);
        list_push(&head, &tail, job);
        job = next;
    }
    if (head) {
        tail->next = w->ready_head;
        w->ready_head = head;
        if (!w->ready_tail)
            w->ready_tail = tail;
    }
}

/* ---- the worker thread ---- */

/* Hands every finished transfer to transfer_done. All messages are read
 * first: libcurl 7.88's curl_multi_remove_handle walks the queue of unread
 * messages, so removing handles while reading cost O(k^2) for k transfers
 * that ended together. */
static void reap(struct worker *w)
{
    CURLMsg *msg;
    int left;
    size_t n = 0;
    while ((msg = curl_multi_info_read(w->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        if (n == w->done_cap) {
            w->done_cap = w->done_cap ? w->done_cap * 2 : 64;
            w->done = dw_xrealloc(w->done, w->done_cap * sizeof(*w->done));
        }
        void *slot = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&slot);
        w->done[n++] = (struct done_msg){slot, msg->data.result};
    }
    for (size_t i = 0; i < n; i++)
        transfer_done(w, w->done[i].slot, w->done[i].result);
}

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
        take_grants(w);

        int64_t now = dw_now_ms();
        while (w->ntimers > 0 && w->timers[0]->due_ms <= now)
            timer_fired(w, heap_pop(w));

        while (w->ready_head && w->running < w->max_running)
            start(w, list_pop(&w->ready_head, &w->ready_tail));

        int still = 0;
        if (w->curl_due_ms >= 0 && dw_now_ms() >= w->curl_due_ms) {
            w->curl_due_ms = -1;
            curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &still);
        }
        reap(w);
        if (w->ready_head && w->running < w->max_running)
            continue; /* a finished step or retry is ready to go now */

        int64_t wait = IDLE_WAIT_MS;
        now = dw_now_ms();
        if (w->ntimers > 0 && w->timers[0]->due_ms - now < wait)
            wait = w->timers[0]->due_ms - now;
        if (w->curl_due_ms >= 0 && w->curl_due_ms - now < wait)
            wait = w->curl_due_ms - now;
        if (wait < 0)
            wait = 0;
        /* Grants and new jobs interrupt the wait through wake(w). */
        struct epoll_event events[256];
        int n = epoll_wait(w->epfd, events, (int)DW_ARRAY_LEN(events), (int)wait);
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd == w->wakefd) {
                uint64_t count;
                ssize_t r = read(w->wakefd, &count, sizeof(count));
                (void)r;
                continue;
            }
            int fd = events[i].data.fd;
            if ((size_t)fd >= w->nfds || !(w->fds[fd] & FD_WATCHED)) {
                /* An idle kept-alive connection spoke (its peer closed it):
                 * stop listening; libcurl finds it dead when it next looks. */
                epoll_ctl(w->epfd, EPOLL_CTL_DEL, fd, NULL);
                if ((size_t)fd < w->nfds)
                    w->fds[fd] &= FD_OWNED;
                continue;
            }
            int flags = 0;
            if (events[i].events & EPOLLIN)
                flags |= CURL_CSELECT_IN;
            if (events[i].events & EPOLLOUT)
                flags |= CURL_CSELECT_OUT;
            if (events[i].events & (EPOLLERR | EPOLLHUP))
                flags |= CURL_CSELECT_ERR;
            curl_multi_socket_action(w->multi, fd, flags, &still);
        }
        reap(w);
    }
    return NULL;
}

/* ---- lifecycle ---- */

static void guards_init(struct dw_pool *pool)
{
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const struct dw_channel_config *cc = &pool->opts.cfg->channels[c];
        struct guard *g = &pool->guards[c];
        g->channel = (enum dw_channel_id)c;
        g->metrics = pool->opts.metrics;
        g->policy = (struct dw_retry_policy){
            .max_attempts = cc->max_attempts,
            .initial_backoff_ms = cc->initial_backoff_ms,
            .multiplier = cc->multiplier,
            .max_backoff_ms = cc->max_backoff_ms,
            .max_retry_after_ms = cc->max_retry_after_ms,
        };
        g->breaker = dw_breaker_create(&cc->breaker, on_breaker_change, g);
        g->bulkhead = dw_bulkhead_create(cc->max_concurrent);
        g->budget = dw_retry_budget_create(cc->budget_max_tokens, cc->budget_token_ratio);
        dw_metrics_bulkhead_init(g->metrics, g->channel, cc->max_concurrent);
        dw_metrics_retry_budget(g->metrics, g->channel, dw_retry_budget_tokens(g->budget), false);
        if (cc->breaker.mode != DW_BREAKER_MODE_NORMAL) {
            const char *name = dw_channel_get(g->channel)->name;
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
        bool ok = true;
        for (size_t i = 0; ok && i < DW_ARRAY_LEN(lines); i++) {
            struct curl_slist *next = curl_slist_append(pool->headers[c], lines[i]);
            ok = next != NULL;
            if (ok)
                pool->headers[c] = next;
        }
        free(auth);
        if (!ok)
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
    if (!headers_init(pool)) {
        dw_snprintf(errbuf, errlen, "pool: out of memory building header lists");
        err = DW_ERR_HTTP;
        goto out;
    }
    /* The variables libcurl reads for a proxy (it ignores HTTP_PROXY in
     * capitals on purpose). */
    static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                             "all_proxy", "ALL_PROXY"};
    for (size_t i = 0; i < DW_ARRAY_LEN(proxy_vars); i++)
        pool->env_proxy = pool->env_proxy || getenv(proxy_vars[i]);
    uint64_t seed = opts->seed ? opts->seed : (uint64_t)dw_now_us() * 0x9E3779B97F4A7C15ULL;
    pool->nworkers = opts->threads;
    pool->workers = dw_xcalloc((size_t)pool->nworkers, sizeof(*pool->workers));
    /* Before anything can fail: a stop must not close descriptor 0. */
    for (int i = 0; i < pool->nworkers; i++)
        pool->workers[i].epfd = pool->workers[i].wakefd = -1;
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        w->pool = pool;
        w->max_running = opts->max_calls / opts->threads;
        w->rnd = (seed + (uint64_t)i * 0x2545F4914F6CDD1DULL) | 1;
        w->idle = dw_xcalloc((size_t)w->max_running, sizeof(*w->idle));
        pthread_mutex_init(&w->lock, NULL);
        w->curl_due_ms = -1;
        w->multi = curl_multi_init();
        if (!w->multi) {
            dw_snprintf(errbuf, errlen, "pool: curl_multi_init failed");
            err = DW_ERR_HTTP;
            goto out;
        }
        /* Keep a connection per possible transfer so none is closed and
         * reopened under load. */
        curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, (long)w->max_running + 16);
        curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
        curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
        curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event wev = {.events = EPOLLIN, .data.fd = w->wakefd};
        if (w->epfd < 0 || w->wakefd < 0 ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &wev) != 0) {
            dw_snprintf(errbuf, errlen, "pool: epoll/eventfd setup failed");
            err = DW_ERR_IO;
            goto out;
        }
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
    const struct dw_channel_config *cc = &pool->opts.cfg->channels[channel];
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
    job->deadline_ms = cc->deadline_ms > 0 ? dw_now_ms() + cc->deadline_ms : 0;

    unsigned i = atomic_fetch_add(&pool->next_worker, 1) % (unsigned)pool->nworkers;
    struct worker *w = &pool->workers[i];
    job->worker = w;
    pthread_mutex_lock(&w->lock);
    /* A non-empty inbox has a wake-up on its way already: the worker takes
     * the whole inbox at once, after the wake that its first job sent. */
    bool was_empty = !w->inbox_head;
    list_push(&w->inbox_head, &w->inbox_tail, job);
    dw_metrics_gauge_add(pool->opts.metrics, DW_GAUGE_CHANNEL_JOBS, 1);
    pthread_mutex_unlock(&w->lock);
    if (was_empty)
        wake(w);
    return DW_OK;
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
    return dw_breaker_free_permits(pool->guards[channel].breaker, dw_now_ms());
}

void dw_pool_stop(struct dw_pool *pool)
{
    if (!pool)
        return;
    atomic_store(&pool->stopping, true);
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        if (w->thread_started) {
            wake(w);
            pthread_join(w->thread, NULL);
        }
    }
    /* Every thread is gone. First take every parked job out of its
     * bulkhead's queue, so no slot given back below is handed to a job
     * about to be freed; a job a slot already reached is in a grant list
     * and is freed from there. */
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        for (size_t k = 0; k < w->ntimers; k++) {
            struct job *job = w->timers[k];
            if (job->wait == WAIT_SLOT &&
                !dw_bulkhead_cancel(pool->guards[job->channel].bulkhead, &job->waiter))
                job->wait = WAIT_GRANTED;
        }
    }
    /* Then abandon every job, giving back its permit and slot. */
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        struct job *job;
        while ((job = w->running_head)) {
            release_transfer(w, job);
            abandon(pool, job);
        }
        while ((job = list_pop(&w->inbox_head, &w->inbox_tail)))
            abandon(pool, job);
        while ((job = list_pop(&w->ready_head, &w->ready_tail)))
            abandon(pool, job);
        for (size_t k = 0; k < w->ntimers; k++) {
            if (w->timers[k]->wait != WAIT_GRANTED)
                abandon(pool, w->timers[k]);
        }
        w->ntimers = 0;
        while ((job = w->granted_head)) {
            w->granted_head = job->grant_next;
            job->has_slot = true;
            abandon(pool, job);
        }
        w->granted_tail = NULL;
    }
    for (int i = 0; i < pool->nworkers; i++) {
        struct worker *w = &pool->workers[i];
        free(w->timers);
        free(w->done);
        /* The multi first: closing its cached connections calls
         * on_close_socket, which still needs w->fds. */
        if (w->multi)
            curl_multi_cleanup(w->multi);
        for (size_t k = 0; k < w->nidle; k++)
            slot_destroy(w->idle[k]);
        free(w->idle);
        free(w->fds);
        if (w->epfd >= 0)
            close(w->epfd);
        if (w->wakefd >= 0)
            close(w->wakefd);
        pthread_mutex_destroy(&w->lock);
    }
    free(pool->workers);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        curl_slist_free_all(pool->headers[c]);
        dw_breaker_destroy(pool->guards[c].breaker);
        dw_bulkhead_destroy(pool->guards[c].bulkhead);
        dw_retry_budget_destroy(pool->guards[c].budget);
    }
    free(pool);
}
