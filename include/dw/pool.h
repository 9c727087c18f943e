/*
 * The channel-call pool: a few threads, each driving many HTTP transfers at
 * once through one libcurl multi handle (connections reused from the
 * multi's cache). A job is "post this request to this channel": every step
 * of the channel's API (Instagram has two), guarded per channel as
 * Retry(CircuitBreaker(Bulkhead(call))) with a retry budget and a deadline
 * (docs/resilience.md, src/resilience/), and classified into the error
 * codes of CONTRACT 2.3. Every wait (a back-off, a Retry-After, a full
 * bulkhead) is a timer: no thread sleeps. When a job ends its result goes
 * to the done callback.
 */
#ifndef DW_POOL_H
#define DW_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/config.h"
#include "dw/log.h"
#include "dw/metrics.h"
#include "dw/status.h"

struct dw_pool;
struct dw_request;

/* How a channel job ended. */
struct dw_call_result {
    enum dw_channel_id channel;
    enum dw_chstatus status; /* DW_CH_SUCCESS or DW_CH_FAILED */
    enum dw_errcode error;   /* DW_EC_NONE on success */
    int attempts;            /* tries made (a try may be several HTTP calls); 0 when a
                              * guard refused before any (CIRCUIT_OPEN, BULKHEAD_FULL) */
    char error_message[DW_ERRMSG_MAX];
    char external_id[DW_EXTERNAL_ID_MAX];
    char url[DW_URL_MAX];
    int step; /* the last step the job ran (dw_pool_submit_steps) */
};

/* Called on a pool thread when a job ends; must be quick and thread-safe
 * (hand the result to another thread through a queue). result is only valid
 * during the call. */
typedef void (*dw_pool_done_cb)(void *opaque, const struct dw_call_result *result);

struct dw_pool_options {
    int threads;                 /* >= 1 */
    int max_calls;               /* transfers in flight over all threads */
    const struct dw_config *cfg; /* channel URLs, tokens, timeouts, guards; outlives the pool */
    struct dw_log *log;          /* breaker transitions; may be NULL */
    struct dw_metrics *metrics;  /* may be NULL */
    dw_pool_done_cb done;
    uint64_t seed; /* jitter's random source; 0: from the clock */
};

enum dw_err dw_pool_start(const struct dw_pool_options *opts, struct dw_pool **out, char *errbuf,
                          size_t errlen) DW_MUST_CHECK;

/* Queues a job. req is borrowed: it must stay valid until the done callback
 * for this job has returned (or dw_pool_stop returned). Thread-safe.
 * DW_ERR_STOPPED once stopping. */
enum dw_err dw_pool_submit(struct dw_pool *pool, const struct dw_request *req,
                           enum dw_channel_id channel, void *opaque) DW_MUST_CHECK;

/* The highest, over the channels, of the jobs waiting to start per slot of
 * the concurrency limit (dw_backpressure_pause decides on it). Publishes
 * each channel's flow to the metrics on the way. Any thread. */
double dw_pool_queue_ratio(struct dw_pool *pool);

/* One channel's flow now, for tests and the operator. */
struct dw_pool_flow {
    int limit;   /* the concurrency limit */
    int in_use;  /* slots of it held by tries */
    int waiting; /* jobs that want to start a try */
};
void dw_pool_channel_flow(struct dw_pool *pool, enum dw_channel_id ch, struct dw_pool_flow *out);
/* Like dw_pool_submit, for part of a channel of several steps (Instagram):
 * the job starts at step `from` (prev_id: what the step before answered;
 * NULL when from is 0), and ends after step `to`; on success the result's
 * external_id is what step `to` answered. The caller stores what a step
 * gave before asking for the next, so a later attempt can go on from it. */
enum dw_err dw_pool_submit_steps(struct dw_pool *pool, const struct dw_request *req,
                                 enum dw_channel_id channel, void *opaque, int from,
                                 const char *prev_id, int to) DW_MUST_CHECK;

/* How many calls channel's breaker would let through now without changing
 * it (dw_breaker_free_permits: -1 any number, 0 none). Thread-safe; for
 * work that can wait (the automatic re-drive). */
int dw_pool_free_permits(struct dw_pool *pool, enum dw_channel_id channel);

/* Stops the threads. Jobs not finished are abandoned without a callback
 * (the caller knows them as the ones it never heard back about); the
 * breaker permits and bulkhead slots they held are given back first.
 * NULL: no-op. */
void dw_pool_stop(struct dw_pool *pool);

#endif /* DW_POOL_H */
