/*
 * What the files of the channel-call pool share: the job, the worker and
 * the pool itself, and the functions one file calls in another. Only
 * src/pool*.c include this header; nothing here is part of the public
 * interface (include/dw/pool.h).
 *
 * The pool is four files, one concern each:
 * - pool.c: the threads, their inboxes, ready lists and timer heaps; start,
 *   submit and stop;
 * - pool_job.c: a job's life: a try begun with the guards, its calls built
 *   and started on the transfer loop, their answers classified, the try
 *   ended, a retry or the end of the job;
 * - pool_connect.c: the origins (channels that share scheme, host and
 *   port), their connect pace and each worker's per-origin connect queues;
 * - pool_guards.c: the pool's side of the channel guards: creating them,
 *   handing bulkhead slots over to parked jobs, and publishing what the
 *   guards do to the log and the metrics.
 *
 * Threads and invariants: see the comment at the top of pool.c.
 */
#ifndef DW_POOL_INTERNAL_H
#define DW_POOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "dw/channel.h"
#include "dw/guard.h"
#include "dw/heap.h"
#include "dw/list.h"
#include "dw/pace.h"
#include "dw/peak.h"
#include "dw/pool.h"
#include "dw/transfer.h"

#define DW_POOL_RESPONSE_CAP (64 * 1024) /* a channel answer larger than this is BAD_RESPONSE */

enum job_wait {
    WAIT_NONE,    /* inbox, ready, running */
    WAIT_RETRY,   /* on the heap until due_ms, then a new try (back-off, 429 pause, rate) */
    WAIT_CONNECT, /* in its worker's connect queue of its origin, holding its slot */
    WAIT_SLOT,    /* on the heap and in the bulkhead's queue until a slot or due_ms */
    WAIT_GRANTED, /* its timer fired after a slot was handed over: in the grant list */
};

struct job {
    struct dw_list_node queue; /* in the inbox, the ready list or a connect queue */
    const struct dw_request *req;
    enum dw_channel_id channel;
    void *opaque;

    int step;
    int last_step;  /* the job ends after this step (dw_pool_submit_steps) */
    int shed_tries; /* tries the channel shed (dw_guard_shed): no attempt used up */
    bool new_try;   /* the next start begins a new try (asks the guards, counts an attempt) */
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
    struct dw_list granted_here; /* slots this thread handed to its own parked jobs */
    struct dw_list ready;
    struct dw_heap timers;       /* parked jobs, by when they are due */
    struct dw_list running_jobs; /* jobs with a call in the loop */
    uint64_t rnd;
    int64_t conn_cap_ms;      /* when the connection cache was last sized */
    struct dw_peak conn_peak; /* the limits' sum, at its highest of late */
    int64_t snapshot_ms;      /* worker 0: when the breakers were last snapshot */
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
    atomic_int calls; /* calls under way on all workers; opts.max_calls caps it */
    atomic_bool stopping;
    struct dw_guard *guards[DW_CHANNEL_COUNT];
    /* Per channel, the header lines that are the same on every call.
     * Read-only once the threads run. */
    struct dw_xfer_headers *headers[DW_CHANNEL_COUNT];
    struct dw_transport *transport; /* TLS and HTTP version per channel */
    /* Per channel, the limit last published to metrics: whichever thread
     * sees it change exchanges it, so each change moves the metrics'
     * free-slot gauge by its difference exactly once. */
    _Atomic int limits[DW_CHANNEL_COUNT];
    /* Per channel, the lowest channel with the same origin (scheme, host
     * and port): libcurl reuses a connection for any call to its origin,
     * whichever channel opened it. Read-only once the threads run. */
    int origin[DW_CHANNEL_COUNT];
    bool paces_ready; /* dw_pool_origins_init ran: the locks below exist */
    /* Per origin (indexed by its lowest channel), the pace of new
     * connections: the server's accept queue is the origin's, whichever
     * channel connects. */
    struct origin_pace {
        pthread_mutex_t lock;
        struct dw_pace pace;
    } paces[DW_CHANNEL_COUNT];
};

/* ---- lists and the timer heap (pool.c owns them) ----
 *
 * A job that already holds its slot (the next step of a try, a parked job
 * handed a slot, a job past its connect pace) goes to the front of the
 * ready list: at the back it would hold the slot while thousands of new
 * jobs start first, and keep its request, which waits on it, in flight
 * that much longer. */

static inline struct job *dw_pool_queued_job(struct dw_list_node *node)
{
    return node ? DW_CONTAINER_OF(node, struct job, queue) : NULL;
}

static inline struct job *dw_pool_timer_job(struct dw_heap_node *node)
{
    return DW_CONTAINER_OF(node, struct job, timer);
}

/* Puts job on its worker's heap until due_ms, waiting for `wait`. */
static inline void dw_pool_park(struct worker *w, struct job *job, enum job_wait wait,
                                int64_t due_ms)
{
    job->wait = wait;
    job->timer.key = due_ms;
    dw_heap_push(&w->timers, &job->timer);
}

/* The worker that runs every job of channel ch (pool.c says why one). */
static inline struct worker *dw_pool_worker_of(struct dw_pool *pool, enum dw_channel_id ch)
{
    return &pool->workers[(int)ch % pool->nworkers];
}

/* Whether the workers together run fewer calls than opts.max_calls. */
static inline bool dw_pool_room_for_calls(struct dw_pool *pool)
{
    return atomic_load_explicit(&pool->calls, memory_order_relaxed) < pool->opts.max_calls;
}

/* ---- pool_job.c: a job's life ---- */

/* The constant header lines of each channel. False when out of memory. */
bool dw_pool_headers_init(struct dw_pool *pool);

/* Starts the job's next step: a new try asks the guards first, and a
 * call that needs a new connection waits for its origin's pace. The job
 * may end up parked, queued for a connection, running, or ended. */
void dw_pool_job_start(struct worker *w, struct job *job);

/* Starts the job's call now: its try holds a slot and its connection is
 * there or paced. now: the clock in ms, for the call's deadline. */
void dw_pool_job_call(struct worker *w, struct job *job, int64_t now);

/* A guard refused the job's next try: the job ends with code (or
 * RETRIES_EXHAUSTED after tries), why in its message. */
void dw_pool_job_refuse(struct worker *w, struct job *job, enum dw_errcode code, const char *why);

/* The transfer loop's done callback (owner: the worker). */
void dw_pool_on_call_done(void *owner, const struct dw_xfer_result *r);

/* Takes a running job off its worker's running list; no-op when it is
 * not running. */
void dw_pool_running_unlink(struct worker *w, struct job *job);

/* Frees a job that is on no list. NULL: no-op. */
void dw_pool_job_free(struct job *job);

/* ---- pool_connect.c: origins and their connect pace ---- */

/* Finds each channel's origin and makes each origin's pace, at the
 * largest max_connects_per_second of its channels. */
void dw_pool_origins_init(struct dw_pool *pool);
void dw_pool_origins_cleanup(struct dw_pool *pool);

/* Before a call that holds its slot: true when it may start now (a
 * connection to its origin is free, or a token was taken for a new one);
 * false when the job went into its origin's connect queue. */
bool dw_pool_connect_ready(struct worker *w, struct job *job, int64_t now);

/* Starts the queued jobs that can go now, and sets w->connq_due_ms to
 * when to look again. */
void dw_pool_connq_run(struct worker *w, int64_t now);

/* What a finished call says about its origin: whether it multiplexes. */
void dw_pool_connect_result(struct worker *w, enum dw_channel_id ch,
                            const struct dw_xfer_result *r);

/* The transfer loop's callbacks (owner: the worker): a connection opened
 * or closed; a connect began or ended. */
void dw_pool_on_conn(void *owner, int tag, int delta);
void dw_pool_on_connect(void *owner, int tag, enum dw_xfer_connect_event ev);

/* ---- pool_guards.c: the guards' side ---- */

/* Creates each channel's guards and publishes their first numbers. */
void dw_pool_guards_init(struct dw_pool *pool);

/* Logs and counts a breaker transition (none when from == to). */
void dw_pool_report(struct dw_pool *pool, enum dw_channel_id ch,
                    const struct dw_breaker_transition *t);

/* The channel's limit and its jobs waiting, to metrics. */
void dw_pool_publish_flow(struct dw_pool *pool, enum dw_channel_id ch, int limit);

/* In these three, self is the worker whose thread calls, or NULL from any
 * other thread: a slot handed to a job of self's own needs no wake-up. */

/* A slot was given back: to the job it was handed to, or free. */
void dw_pool_slot_back(struct dw_pool *pool, struct worker *self, enum dw_channel_id ch,
                       struct dw_bulkhead_waiter *handed);

/* The limit may have grown: hand what it frees to parked jobs. */
void dw_pool_grant_free_slots(struct dw_pool *pool, struct worker *self, enum dw_channel_id ch);

/* Gives back whatever the job holds, without an outcome. */
void dw_pool_give_back(struct dw_pool *pool, struct worker *self, struct job *job);

/* On the worker thread: parked jobs that were handed a slot go to the
 * front of its ready list, holding it. */
void dw_pool_take_grants(struct worker *w);

/* Worker 0, about once a second: each breaker's snapshot to the metrics. */
void dw_pool_snapshot_breakers(struct worker *w, int64_t now);

#endif /* DW_POOL_INTERNAL_H */
