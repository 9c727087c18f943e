/*
 * What the dispatch files share (src/dispatch.c: the inbox, the loop and
 * the runs' lifecycle; src/dispatch_store.c: the store steps, batched, and
 * their retry). Only they include this header; the interface is
 * include/dw/dispatch.h.
 *
 * Threads: everything here but the inbox (lock, wake, inbox, results,
 * stopping) and the atomics belongs to the dispatch thread (or, with
 * opts.manual, to the caller of dw_dispatch_pass).
 *
 * Invariants: see src/dispatch.c.
 */
#ifndef DW_DISPATCH_INTERNAL_H
#define DW_DISPATCH_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dw/dispatch.h"
#include "dw/list.h"
#include "dw/request.h"

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
    struct dw_list_node hold_node; /* in the dispatch's hold list while holding */
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
    /* What it calls: the injected ones, or the real ones below. */
    struct dw_dispatch_store store;
    struct dw_dispatch_calls calls;
    struct dw_dispatch_completions completions;
    struct dw_dispatch_clock clock;
    struct dw_pool *own_pool;   /* NULL when injected */
    struct dw_store *own_store; /* NULL when injected */
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
    int64_t now;         /* the monotonic clock, read once per pass (dw_dispatch_tick) */
    int64_t wall;        /* the wall clock, read with it */
    struct run **active; /* eventId -> run being driven */
    size_t active_buckets;
    struct list begin_q, finish_q, produce_q;
    struct result_msg *save_q;
    size_t save_len;
    struct result_msg *step_q; /* first steps answered, their ids to store before the next */
    struct dw_list hold;       /* runs holding results (hold_node), by hold_until, earliest first */
    int64_t reconnect_at;
    int64_t last_store_ok; /* when a store call last worked */
    uint64_t round_trips_seen;
    struct list blocked_q; /* runs whose event another worker drives; by begin_again_at */
    int64_t next_claim_at;
    int redrive_runs; /* re-drive runs not yet retired */
    atomic_bool draining;
    char owner[128]; /* this worker in the redrive table's claims */
};

/* ---- shared by the dispatch files (dispatch thread only) ---- */

static inline void dw_dispatch_push(struct list *l, struct run *r)
{
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->len++;
}

static inline struct run *dw_dispatch_pop(struct list *l)
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

static inline struct dw_log_ctx dw_dispatch_ctx(const struct run *r, const char *channel)
{
    return (struct dw_log_ctx){r->req->event_id, channel, r->partition, r->offset};
}

/* Reads the clocks into d->now and d->wall: once per pass, and again after
 * a store round trip (the one call that may block for long). */
void dw_dispatch_tick(struct dw_dispatch *d);

/* dispatch.c: a run is finished with; new runs join the active table. */
void dw_dispatch_retire(struct dw_dispatch *d, struct run *r);
void dw_dispatch_accept(struct dw_dispatch *d, struct list *in);

/* dispatch_store.c: the store steps of a pass, each a no-op when it has
 * nothing to do or the store is being retried. */
bool dw_dispatch_has_store_work(const struct dw_dispatch *d);
void dw_dispatch_do_begin(struct dw_dispatch *d);
void dw_dispatch_do_steps(struct dw_dispatch *d);
void dw_dispatch_do_write(struct dw_dispatch *d);
void dw_dispatch_do_claim(struct dw_dispatch *d);
void dw_dispatch_idle_ping(struct dw_dispatch *d);
/* dispatch_store.c: the real store on its own connection (opts.store NULL). */
enum dw_err dw_dispatch_store_open(struct dw_dispatch *d, char *errbuf, size_t errlen);

#endif /* DW_DISPATCH_INTERNAL_H */
