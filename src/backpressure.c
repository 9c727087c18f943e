/*
 * Back-pressure decisions (see backpressure.h). Counts and bytes share one
 * rule, so a limit in bytes behaves like the limit in requests operators
 * already know.
 */
#include "dw/backpressure.h"

static bool over(size_t value, size_t max)
{
    return value >= max;
}

static bool well_under(size_t value, size_t max)
{
    return value <= max - max / 4;
}

bool dw_backpressure_pause(bool paused, const struct dw_backpressure_load *load,
                           size_t max_requests, size_t max_bytes)
{
    if (!paused)
        return !load->store_ok || over(load->requests, max_requests) ||
               over(load->bytes, max_bytes) || load->queue_ratio > DW_BACKPRESSURE_QUEUE_PAUSE;
    return !(load->store_ok && well_under(load->requests, max_requests) &&
             well_under(load->bytes, max_bytes) &&
             load->queue_ratio <= DW_BACKPRESSURE_QUEUE_RESUME);
}
