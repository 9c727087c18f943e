/*
 * Dispatch: one request becomes channel jobs, their results become stored
 * status, and a finished request becomes a completion event. It owns the
 * channel-call pool and the writer's PostgreSQL connection.
 *
 * For each request (a "drive"): begin (store the request IN_PROGRESS and
 * read what is stored) -> call every requested channel not yet SUCCESS ->
 * store each channel's result as it arrives -> when all are final, store
 * the overall status -> produce the completion, whose delivery report lets
 * the consumer commit the request's offset. Store writes of many requests
 * go to PostgreSQL together, one transaction per step (group commit).
 *
 * Two requests for the same eventId never run at once in one process: the
 * later one waits for the earlier, then re-drives only what is not SUCCESS.
 * Across processes the event's row in the redrive table is the lock.
 *
 * Automatic re-drive (CONTRACT 2.4): the dispatch also claims due events
 * from the schedule and drives them itself, with no Kafka record (their
 * completions carry partition and offset -1 and commit nothing).
 *
 * Threads: one dispatch thread owns every request's state and the store
 * connection; the pool's threads hand results back through a queue.
 * dw_dispatch_submit and the getters may be called from any thread.
 */
#ifndef DW_DISPATCH_H
#define DW_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dw/common.h"
#include "dw/config.h"
#include "dw/log.h"
#include "dw/metrics.h"
#include "dw/producer.h"

struct dw_dispatch;
struct dw_request;

struct dw_dispatch_options {
    const struct dw_config *cfg;
    struct dw_log *log;
    struct dw_metrics *metrics;
    struct dw_producer *producer; /* outlives the dispatch */
};

/* Connects to PostgreSQL (the schema must exist), starts the pool and the
 * dispatch thread. */
enum dw_err dw_dispatch_start(const struct dw_dispatch_options *opts, struct dw_dispatch **out,
                              char *errbuf, size_t errlen) DW_MUST_CHECK;

/* Takes ownership of req. The completion will carry (partition, offset).
 * DW_ERR_STOPPED (req freed) once stopping. */
enum dw_err dw_dispatch_submit(struct dw_dispatch *d, struct dw_request *req, int32_t partition,
                               int64_t offset) DW_MUST_CHECK;

/* Requests accepted whose completion is not yet produced. */
size_t dw_dispatch_in_flight(const struct dw_dispatch *d);
/* The dw_request.bytes of those, summed (the byte budget's measure). */
size_t dw_dispatch_in_flight_bytes(const struct dw_dispatch *d);

/* True while some channel has more jobs waiting to start than factor times
 * its concurrency limit (dw_pool_congested). Any thread. */
bool dw_dispatch_congested(const struct dw_dispatch *d, double factor);

/* False while the store connection is broken (being retried). */
bool dw_dispatch_store_ok(const struct dw_dispatch *d);

/* Starts no more automatic re-drives (the worker is draining); those
 * running go on. Thread-safe. */
void dw_dispatch_drain(struct dw_dispatch *d);

/* Stops: abandons unfinished requests (their offsets stay uncommitted and
 * are redelivered), joins the threads, frees. NULL: no-op. */
void dw_dispatch_stop(struct dw_dispatch *d);

#endif /* DW_DISPATCH_H */
