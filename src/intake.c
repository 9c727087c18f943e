/*
 * Intake: decode each consumed record, route it to the DLQ or to dispatch,
 * and pause or resume the partitions (include/dw/intake.h).
 *
 * Threads: the poll thread only. Stateless: the pause state is the
 * consumer's, the load is dispatch's; this file only decides.
 *
 * Invariants:
 * - A record is either produced to the DLQ, submitted, or left with its
 *   offset pending (a failed DLQ produce, a stopping dispatch): never
 *   dropped, so it is never committed unhandled.
 * - Pausing follows dw_backpressure_pause (hysteresis): the partitions
 *   flip only when its answer differs from the consumer's state.
 */
#include "dw/intake.h"

#include "dw/request.h"

void dw_intake_record(const struct dw_intake *in, const struct dw_record *rec)
{
    char why[512] = "";
    struct dw_request *req = NULL;
    struct dw_log_ctx ctx = {NULL, NULL, rec->partition, rec->offset};
    enum dw_dlq_code code = dw_request_decode(rec->value, rec->value_len, &req, why, sizeof(why));
    if (code != DW_DLQ_NONE) {
        dw_log_write(in->log, DW_LOG_WARN, ctx, "to the DLQ as %s: %s", dw_dlq_name(code), why);
        dw_metrics_dlq(in->metrics, code);
        struct dw_dlq_record dlq = {.source = rec, .code = code, .message = why};
        /* On failure the offset stays pending: never committed unsent. */
        if (in->calls.send_dlq(in->calls.opaque, &dlq) != DW_OK)
            dw_log_write(in->log, DW_LOG_ERROR, ctx, "DLQ produce failed; offset not committed");
        return;
    }
    ctx.event_id = req->event_id;
    /* End-to-end latency runs from the record's timestamp when there is one
     * (a re-sent old request would make requestedAt misleading). */
    req->enqueued_at_ms = rec->timestamp_ms > 0 ? rec->timestamp_ms : req->requested_at_ms;
    dw_log_write(in->log, DW_LOG_DEBUG, ctx, "request with %d channel(s)", req->channel_count);
    if (in->calls.submit(in->calls.opaque, req, rec->partition, rec->offset) != DW_OK)
        dw_log_write(in->log, DW_LOG_WARN, ctx, "stopping; request left for redelivery");
}

bool dw_intake_backpressure(const struct dw_intake *in)
{
    struct dw_backpressure_load load = {0};
    in->calls.load(in->calls.opaque, &load);
    bool paused = in->calls.paused(in->calls.opaque);
    bool pause = dw_backpressure_pause(paused, &load, (size_t)in->cfg->max_in_flight_requests,
                                       (size_t)in->cfg->max_in_flight_bytes);
    if (pause != paused)
        in->calls.set_paused(in->calls.opaque, pause);
    return pause;
}
