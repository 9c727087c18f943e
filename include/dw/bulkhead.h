/*
 * A bulkhead for one channel (Resilience4j's semaphore bulkhead): at most
 * max_concurrent calls hold a slot at once. A call that finds it full may
 * queue; a slot given back while calls are queued goes straight to the
 * oldest of them (first come, first served), so nobody can jump the queue
 * but a continuation (waiter.first): the next step of work a slot already
 * served (Instagram's publish after its container) goes ahead of calls
 * that would start new work, behind earlier continuations. Finishing what
 * was started first keeps a request's time in the worker to its own calls
 * instead of two waits through the whole queue; continuations come only
 * from first steps that ended, so they cannot starve the others.
 *
 * Pure logic: nothing here blocks, sleeps or reads a clock. Waiting is the
 * caller's business: it parks the call (the pool puts the job on its timer
 * heap), learns from dw_bulkhead_release which waiter was handed a slot and
 * wakes it, and gives up after its own max_wait_ms with dw_bulkhead_cancel.
 * Thread-safe: one mutex per bulkhead; the pool's threads share one per
 * channel.
 *
 * The size can move (dw_bulkhead_set_max): the pool makes it follow the
 * channel's adaptive concurrency limit (include/dw/limit.h). A smaller
 * size takes effect as calls end; a larger one through dw_bulkhead_grant.
 *
 * Invariants: in_use <= max except while a lowered max drains; a waiter
 * is queued only while in_use >= max; continuations are served before the
 * others, each kind in order.
 */
#ifndef DW_BULKHEAD_H
#define DW_BULKHEAD_H

#include <stdbool.h>

#include "dw/common.h"
#include "dw/list.h"

/* A place in the queue. Caller-allocated (embed it in the job); the caller
 * sets `first` before it first queues it and leaves it alone after, and
 * only the bulkhead touches the rest, under its lock. */
struct dw_bulkhead_waiter {
    bool first; /* a continuation: served before the others (the caller's) */
    bool queued;
    struct dw_list_node node; /* in one of the bulkhead's FIFOs while queued */
};

enum dw_bulkhead_result {
    DW_BULKHEAD_GRANTED,  /* the caller holds a slot */
    DW_BULKHEAD_QUEUED,   /* full: waiter is queued for the next free slot */
    DW_BULKHEAD_REJECTED, /* full and the caller would not wait: BULKHEAD_FULL */
};

/* max_concurrent >= 1. Destroy with dw_bulkhead_destroy; NULL is a no-op
 * there. */
struct dw_bulkhead *dw_bulkhead_create(int max_concurrent);
void dw_bulkhead_destroy(struct dw_bulkhead *b);

/* Takes a slot if one is free. Otherwise queues waiter (when not NULL) or
 * refuses. A queued waiter later either comes back from
 * dw_bulkhead_release (it then holds a slot) or is taken out with
 * dw_bulkhead_cancel; until then its memory must stay valid. */
enum dw_bulkhead_result dw_bulkhead_acquire(struct dw_bulkhead *b,
                                            struct dw_bulkhead_waiter *waiter) DW_MUST_CHECK;

/* Gives a slot back. When calls are queued (and the size was not lowered
 * below the slots in use) the slot passes to the oldest one (the oldest
 * continuation, if any), which is returned (now holding the slot; the
 * caller must wake it); otherwise NULL. */
struct dw_bulkhead_waiter *dw_bulkhead_release(struct dw_bulkhead *b) DW_MUST_CHECK;

/* A new size (>= 1; smaller values count as 1). Nobody is woken here: call
 * dw_bulkhead_grant until it returns NULL to hand out what a larger size
 * frees. */
void dw_bulkhead_set_max(struct dw_bulkhead *b, int max_concurrent);

/* Hands a free slot to the oldest queued waiter (continuations first) and
 * returns it (the caller must wake it); NULL when no slot is free or nobody
 * waits. */
struct dw_bulkhead_waiter *dw_bulkhead_grant(struct dw_bulkhead *b) DW_MUST_CHECK;

/* Takes a queued waiter out (it gave up waiting). True: it was queued and
 * now holds nothing. False: it was not queued, because a release already
 * handed it a slot, which the caller now owns (use it or release it). */
bool dw_bulkhead_cancel(struct dw_bulkhead *b, struct dw_bulkhead_waiter *waiter) DW_MUST_CHECK;

/* Snapshots, for metrics and tests. */
int dw_bulkhead_max(struct dw_bulkhead *b);
int dw_bulkhead_in_use(struct dw_bulkhead *b);
int dw_bulkhead_queued(struct dw_bulkhead *b);

#endif /* DW_BULKHEAD_H */
