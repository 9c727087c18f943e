/*
 * Back-pressure: when the poll loop pauses its partitions and when it
 * resumes them. Memory is bounded in requests and in bytes (a few large
 * requests can hold as much as thousands of small ones). Pure; unit-tested.
 */
#ifndef DW_BACKPRESSURE_H
#define DW_BACKPRESSURE_H

#include <stdbool.h>
#include <stddef.h>

struct dw_backpressure_load {
    size_t requests; /* in flight */
    size_t bytes;    /* their dw_request.bytes, summed */
    bool store_ok;   /* the writer's PostgreSQL connection works */
    /* The highest, over the channels, of the jobs waiting to start per
     * slot of the concurrency limit (dw_pool_queue_ratio). */
    double queue_ratio;
};

/* A channel with more than this many jobs waiting per slot of its limit
 * cannot start them soon: pause, and leave the rest in Kafka. */
#define DW_BACKPRESSURE_QUEUE_PAUSE 2.0
/* Resume only once no channel has more than this many waiting per slot. */
#define DW_BACKPRESSURE_QUEUE_RESUME 1.0

/*
 * Whether the partitions should be paused now, given whether they are.
 * Pause at max_requests or max_bytes, while the store is away, or while a
 * channel has more than DW_BACKPRESSURE_QUEUE_PAUSE times its limit of jobs
 * waiting (what it cannot take yet stays in Kafka); resume only when the
 * store is back, both are at most three quarters of their limit and no
 * channel has more than DW_BACKPRESSURE_QUEUE_RESUME times its limit waiting
 * (hysteresis, so partitions do not flap).
 */
bool dw_backpressure_pause(bool paused, const struct dw_backpressure_load *load,
                           size_t max_requests, size_t max_bytes);

#endif /* DW_BACKPRESSURE_H */
