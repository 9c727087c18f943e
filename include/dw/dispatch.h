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
 *
 * What it calls outside itself (the store, the channel-call pool, the
 * completion producer, the clocks) comes through the options, so a unit
 * test drives it with fakes (tests/unit/test_dispatch.c); left NULL, the
 * real ones are used.
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
#include "dw/pool.h"
#include "dw/producer.h"
#include "dw/store.h"

struct dw_dispatch;
struct dw_request;

/* The store calls a dispatch makes: the dw_store_* of the same names, on
 * one connection that only the dispatch thread uses. */
struct dw_dispatch_store {
    void *opaque;
    bool (*connected)(void *opaque);
    enum dw_err (*reconnect)(void *opaque);
    enum dw_err (*ping)(void *opaque);
    uint64_t (*round_trips)(void *opaque);
    enum dw_err (*begin)(void *opaque, struct dw_store_begin *items, size_t n);
    enum dw_err (*save_and_finish)(void *opaque, const struct dw_store_result *results, size_t nres,
                                   struct dw_store_finish *finishes, size_t nfin);
    enum dw_err (*save_steps)(void *opaque, const struct dw_store_step *items, size_t n);
    /* *out is freed by the dispatch with dw_store_claimed_free. */
    enum dw_err (*redrive_claim)(void *opaque, unsigned blocked, int limit,
                                 struct dw_store_claimed **out, size_t *n, int64_t *due,
                                 int64_t *oldest_due_ms);
    /* When reconnect will try again (dw_store_retry_at: the store owns
     * the reconnect policy, on the clock's now_ms). NULL: 100 ms on. */
    int64_t (*retry_at)(void *opaque);
};

/* The channel calls a dispatch makes: dw_pool_submit_steps, and the
 * pool's flow for the re-drive claim and for back-pressure. Each job ends
 * with one dw_dispatch_channel_done(job, result), from any thread, and
 * none once dw_dispatch_stop has been called. */
struct dw_dispatch_calls {
    void *opaque;
    enum dw_err (*submit)(void *opaque, const struct dw_request *req, enum dw_channel_id channel,
                          void *job, int from, const char *prev_id, int to);
    int (*free_permits)(void *opaque, enum dw_channel_id channel);
    double (*queue_ratio)(void *opaque);
};

/* Where completions go: dw_producer_send_completion. */
struct dw_dispatch_completions {
    void *opaque;
    enum dw_err (*send)(void *opaque, const char *event_id, const char *json, int32_t partition,
                        int64_t offset);
};

/* The clocks: dw_now_ms (monotonic: waits, deadlines) and dw_wall_ms
 * (timestamps that are stored or sent). The dispatch thread reads them
 * once per pass of its loop and after each store round trip (which may
 * block), and passes that time down (pgbouncer's cached time). */
struct dw_dispatch_clock {
    void *opaque;
    int64_t (*now_ms)(void *opaque);
    int64_t (*wall_ms)(void *opaque);
};

struct dw_dispatch_options {
    const struct dw_config *cfg;
    struct dw_log *log;
    struct dw_metrics *metrics;
    struct dw_producer *producer; /* outlives the dispatch; unused when completions is set */
    /* Injected (tests): each borrowed, outliving the dispatch. NULL: the
     * real one (its own store connection to cfg->pg_dsn, its own pool,
     * producer, the system clocks), owned by the dispatch. */
    const struct dw_dispatch_store *store;
    const struct dw_dispatch_calls *calls;
    const struct dw_dispatch_completions *completions;
    const struct dw_dispatch_clock *clock;
    /* No dispatch thread: the caller runs each pass of its loop with
     * dw_dispatch_pass (unit tests, which then need no timing). */
    bool manual;
};

/* Connects to PostgreSQL (the schema must exist), starts the pool and the
 * dispatch thread (each unless injected, see the options). */
enum dw_err dw_dispatch_start(const struct dw_dispatch_options *opts, struct dw_dispatch **out,
                              char *errbuf, size_t errlen) DW_MUST_CHECK;

/* Takes ownership of req. The completion will carry (partition, offset).
 * DW_ERR_STOPPED (req freed) once stopping. */
enum dw_err dw_dispatch_submit(struct dw_dispatch *d, struct dw_request *req, int32_t partition,
                               int64_t offset) DW_MUST_CHECK;

/* The pool's done callback: hands a channel job's result (job: the opaque
 * the job was submitted with) to the dispatch thread. Any thread. */
void dw_dispatch_channel_done(void *job, const struct dw_call_result *result);

/* With opts.manual: one pass of the dispatch loop on the caller's thread
 * (take what was submitted and the results that came back, then store,
 * produce, begin and claim what is due at the clock's time). */
void dw_dispatch_pass(struct dw_dispatch *d);

/* Requests accepted whose completion is not yet produced. */
size_t dw_dispatch_in_flight(const struct dw_dispatch *d);
/* The dw_request.bytes of those, summed (the byte budget's measure). */
size_t dw_dispatch_in_flight_bytes(const struct dw_dispatch *d);

/* The highest, over the channels, of the jobs waiting to start per slot of
 * the concurrency limit (dw_pool_queue_ratio); 0 without one. Any thread. */
double dw_dispatch_queue_ratio(const struct dw_dispatch *d);

/* False while the store connection is broken (being retried). */
bool dw_dispatch_store_ok(const struct dw_dispatch *d);

/* Starts no more automatic re-drives (the worker is draining); those
 * running go on. Thread-safe. */
void dw_dispatch_drain(struct dw_dispatch *d);

/* Stops: abandons unfinished requests (their offsets stay uncommitted and
 * are redelivered), joins the threads, frees. NULL: no-op. */
void dw_dispatch_stop(struct dw_dispatch *d);

#endif /* DW_DISPATCH_H */
