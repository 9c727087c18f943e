/*
 * The bulkhead of one channel (include/dw/bulkhead.h): a counting
 * semaphore with two FIFOs of waiters (continuations, then the rest), and
 * direct hand-over of a released slot to the oldest waiter of the first
 * non-empty one.
 *
 * Threads: any; one mutex guards the count and the queue, held for a few
 * instructions. Nothing blocks: a queued caller is told later, through the
 * return value of the release that serves it, on the releasing thread.
 *
 * Invariants (under the lock): 0 <= in_use; in_use <= max except just
 * after dw_bulkhead_set_max lowered max (releases then drain in_use down
 * to it before handing anything over); the queue is non-empty only while
 * in_use >= max (a release with waiters and in_use <= max keeps in_use and
 * hands the slot over); a waiter is queued iff waiter->queued, in firsts
 * iff waiter->first.
 */
#include "dw/bulkhead.h"

#include <pthread.h>
#include <stdlib.h>

struct dw_bulkhead {
    pthread_mutex_t lock;
    int max;
    int in_use;
    struct dw_list firsts;  /* FIFO of continuations: served first */
    struct dw_list waiters; /* FIFO of the rest */
};

struct dw_bulkhead *dw_bulkhead_create(int max_concurrent)
{
    struct dw_bulkhead *b = dw_xcalloc(1, sizeof(*b));
    pthread_mutex_init(&b->lock, NULL);
    b->max = max_concurrent < 1 ? 1 : max_concurrent;
    return b;
}

void dw_bulkhead_destroy(struct dw_bulkhead *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static struct dw_list *queue_of(struct dw_bulkhead *b, const struct dw_bulkhead_waiter *w)
{
    return w->first ? &b->firsts : &b->waiters;
}

static void unlink_waiter(struct dw_bulkhead *b, struct dw_bulkhead_waiter *w)
{
    dw_list_remove(queue_of(b, w), &w->node);
    w->queued = false;
}

/* The next to serve: the oldest continuation, else the oldest other. */
static struct dw_bulkhead_waiter *oldest(const struct dw_bulkhead *b)
{
    const struct dw_list *q = b->firsts.head ? &b->firsts : &b->waiters;
    return q->head ? DW_CONTAINER_OF(q->head, struct dw_bulkhead_waiter, node) : NULL;
}

enum dw_bulkhead_result dw_bulkhead_acquire(struct dw_bulkhead *b,
                                            struct dw_bulkhead_waiter *waiter)
{
    enum dw_bulkhead_result res;

    pthread_mutex_lock(&b->lock);
    if (b->in_use < b->max) {
        b->in_use++;
        res = DW_BULKHEAD_GRANTED;
    } else if (waiter) {
        dw_list_push_back(queue_of(b, waiter), &waiter->node);
        waiter->queued = true;
        res = DW_BULKHEAD_QUEUED;
    } else {
        res = DW_BULKHEAD_REJECTED;
    }
    pthread_mutex_unlock(&b->lock);
    return res;
}

struct dw_bulkhead_waiter *dw_bulkhead_release(struct dw_bulkhead *b)
{
    struct dw_bulkhead_waiter *next;

    pthread_mutex_lock(&b->lock);
    next = b->in_use <= b->max ? oldest(b) : NULL;
    if (next)
        unlink_waiter(b, next); /* the slot passes over; in_use stays */
    else if (b->in_use > 0)
        b->in_use--;
    pthread_mutex_unlock(&b->lock);
    return next;
}

void dw_bulkhead_set_max(struct dw_bulkhead *b, int max_concurrent)
{
    pthread_mutex_lock(&b->lock);
    b->max = max_concurrent < 1 ? 1 : max_concurrent;
    pthread_mutex_unlock(&b->lock);
}

struct dw_bulkhead_waiter *dw_bulkhead_grant(struct dw_bulkhead *b)
{
    struct dw_bulkhead_waiter *next = NULL;

    pthread_mutex_lock(&b->lock);
    if (b->in_use < b->max && (next = oldest(b))) {
        unlink_waiter(b, next);
        b->in_use++;
    }
    pthread_mutex_unlock(&b->lock);
    return next;
}

bool dw_bulkhead_cancel(struct dw_bulkhead *b, struct dw_bulkhead_waiter *waiter)
{
    bool was_queued;

    pthread_mutex_lock(&b->lock);
    was_queued = waiter->queued;
    if (was_queued)
        unlink_waiter(b, waiter);
    pthread_mutex_unlock(&b->lock);
    return was_queued;
}

int dw_bulkhead_max(struct dw_bulkhead *b)
{
    pthread_mutex_lock(&b->lock);
    int n = b->max;
    pthread_mutex_unlock(&b->lock);
    return n;
}

int dw_bulkhead_in_use(struct dw_bulkhead *b)
{
    pthread_mutex_lock(&b->lock);
    int n = b->in_use;
    pthread_mutex_unlock(&b->lock);
    return n;
}

int dw_bulkhead_queued(struct dw_bulkhead *b)
{
    pthread_mutex_lock(&b->lock);
    int n = (int)(b->firsts.len + b->waiters.len);
    pthread_mutex_unlock(&b->lock);
    return n;
}
