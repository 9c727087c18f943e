/*
 * Commit tracker: per partition, a ring of (offset, done) in hand-out
 * order. Because offsets arrive increasing, the ring is sorted and "done"
 * finds its entry by binary search; the done prefix is popped from the front
 * and the last popped offset + 1 is what may be committed.
 *
 * Single-threaded (the consumer's poll thread). Memory is bounded by the
 * number of messages in flight, which the consumer caps by pausing.
 */
#include "dw/tracker.h"

#include <stdlib.h>
#include <string.h>

#include "dw/common.h"

struct slot {
    int64_t offset;
    bool done;
};

struct partition {
    int32_t id;
    bool used;
    struct slot *ring;
    size_t cap;  /* power of two */
    size_t head; /* index of the oldest entry */
    size_t len;
    int64_t last_added;    /* -1: none */
    int64_t commit_offset; /* one past the done prefix; -1: none yet */
    bool commit_new;       /* commit_offset changed since last asked */
};

struct dw_tracker {
    struct partition *parts;
    size_t nparts;
};

struct dw_tracker *dw_tracker_create(void)
{
    return dw_xcalloc(1, sizeof(struct dw_tracker));
}

void dw_tracker_destroy(struct dw_tracker *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nparts; i++)
        free(t->parts[i].ring);
    free(t->parts);
    free(t);
}

static struct partition *find(const struct dw_tracker *t, int32_t id)
{
    for (size_t i = 0; i < t->nparts; i++)
        if (t->parts[i].used && t->parts[i].id == id)
            return &t->parts[i];
    return NULL;
}

static struct partition *find_or_add(struct dw_tracker *t, int32_t id)
{
    struct partition *p = find(t, id);
    if (p)
        return p;
    for (size_t i = 0; i < t->nparts; i++) {
        if (!t->parts[i].used) {
            p = &t->parts[i];
            break;
        }
    }
    if (!p) {
        t->parts = dw_xrealloc(t->parts, (t->nparts + 1) * sizeof(*t->parts));
        p = &t->parts[t->nparts++];
        memset(p, 0, sizeof(*p));
    }
    free(p->ring);
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->used = true;
    p->last_added = -1;
    p->commit_offset = -1;
    return p;
}

static struct slot *at(struct partition *p, size_t i)
{
    return &p->ring[(p->head + i) & (p->cap - 1)];
}

static void grow(struct partition *p)
{
    size_t cap = p->cap ? p->cap * 2 : 64;
    struct slot *ring = dw_xmalloc(cap * sizeof(*ring));
    for (size_t i = 0; i < p->len; i++)
        ring[i] = *at(p, i);
    free(p->ring);
    p->ring = ring;
    p->cap = cap;
    p->head = 0;
}

void dw_tracker_add(struct dw_tracker *t, int32_t partition, int64_t offset)
{
    struct partition *p = find_or_add(t, partition);
    if (p->last_added >= 0 && offset <= p->last_added) {
        /* A rewind (redelivery after a rebalance or seek): what was pending
         * will be handed out again, so start the partition afresh. */
        p->len = 0;
        p->head = 0;
        p->commit_offset = -1;
        p->commit_new = false;
    }
    if (p->len == p->cap)
        grow(p);
    *at(p, p->len) = (struct slot){offset, false};
    p->len++;
    p->last_added = offset;
}

bool dw_tracker_done(struct dw_tracker *t, int32_t partition, int64_t offset)
{
    struct partition *p = find(t, partition);
    if (!p || p->len == 0)
        return false;
    size_t lo = 0, hi = p->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (at(p, mid)->offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == p->len || at(p, lo)->offset != offset)
        return false;
    at(p, lo)->done = true;
    while (p->len > 0 && at(p, 0)->done) {
        p->commit_offset = at(p, 0)->offset + 1;
        p->commit_new = true;
        p->head = (p->head + 1) & (p->cap - 1);
        p->len--;
    }
    return true;
}

int64_t dw_tracker_committable(struct dw_tracker *t, int32_t partition)
{
    struct partition *p = find(t, partition);
    if (!p || !p->commit_new)
        return -1;
    p->commit_new = false;
    return p->commit_offset;
}

void dw_tracker_commit_failed(struct dw_tracker *t, int32_t partition)
{
    struct partition *p = find(t, partition);
    if (p && p->commit_offset >= 0)
        p->commit_new = true;
}

int64_t dw_tracker_position(const struct dw_tracker *t, int32_t partition)
{
    const struct partition *p = find(t, partition);
    return p ? p->commit_offset : -1;
}

int64_t dw_tracker_next_offset(const struct dw_tracker *t, int32_t partition)
{
    const struct partition *p = find(t, partition);
    return p && p->last_added >= 0 ? p->last_added + 1 : -1;
}

size_t dw_tracker_pending(const struct dw_tracker *t, int32_t partition)
{
    const struct partition *p = find(t, partition);
    return p ? p->len : 0;
}

void dw_tracker_forget(struct dw_tracker *t, int32_t partition)
{
    struct partition *p = find(t, partition);
    if (!p)
        return;
    free(p->ring);
    memset(p, 0, sizeof(*p));
}

size_t dw_tracker_partitions(const struct dw_tracker *t, int32_t *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nparts; i++) {
        if (!t->parts[i].used)
            continue;
        if (n < max)
            out[n] = t->parts[i].id;
        n++;
    }
    return n;
}
