/*
 * The per-partition commit tracker. Requests of one partition finish out of
 * order; Kafka commits one offset per partition meaning "everything before
 * this is done". The tracker remembers each handed-out offset and tells the
 * highest offset that is safe to commit: one past the longest done prefix.
 *
 * Single-threaded: the consumer's poll thread owns it.
 */
#ifndef DW_TRACKER_H
#define DW_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dw_tracker;

struct dw_tracker *dw_tracker_create(void);
void dw_tracker_destroy(struct dw_tracker *t);

/* Records that offset was handed out. Offsets of one partition must arrive
 * in increasing order (as the consumer returns them); an offset not above
 * the last one (a rewind after a rebalance) restarts that partition. */
void dw_tracker_add(struct dw_tracker *t, int32_t partition, int64_t offset);

/* Marks offset done. False when the tracker does not know it (its partition
 * was revoked since, or it was never added): the caller then does nothing. */
bool dw_tracker_done(struct dw_tracker *t, int32_t partition, int64_t offset);

/* The offset to commit for partition (one past the done prefix), or -1 when
 * nothing new became committable since the last call. */
int64_t dw_tracker_committable(struct dw_tracker *t, int32_t partition);

/* A commit of partition's offset (taken from dw_tracker_committable) did
 * not land (an outage, a refused asynchronous commit): the next
 * dw_tracker_committable returns the partition's offset again, even if no
 * more work is done on it. Ignored for a partition not held. */
void dw_tracker_commit_failed(struct dw_tracker *t, int32_t partition);

/* The offset safe to commit for partition now (one past the done prefix,
 * whether or not reported before), or -1 when nothing is done yet. */
int64_t dw_tracker_position(const struct dw_tracker *t, int32_t partition);

/* One past the last offset handed out for partition since it was added or
 * forgotten (where its fetch should continue), or -1 when none was. */
int64_t dw_tracker_next_offset(const struct dw_tracker *t, int32_t partition);

/* Offsets of partition handed out and not yet done. */
size_t dw_tracker_pending(const struct dw_tracker *t, int32_t partition);

/* Forgets partition entirely (revoked or lost). */
void dw_tracker_forget(struct dw_tracker *t, int32_t partition);

/* The partitions the tracker knows, for iteration: fills at most max ids,
 * returns how many there are. */
size_t dw_tracker_partitions(const struct dw_tracker *t, int32_t *out, size_t max);

#endif /* DW_TRACKER_H */
