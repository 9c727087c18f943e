/*
 * The breaker's numbers in the metrics' words: dw/metrics.h is a leaf and
 * includes no guard, so the breaker side translates its states, outcomes
 * and snapshots (declared in dw/breaker.h).
 *
 * Threads: any; these only store into atomics (see metrics.c).
 *
 * Invariants: dw_metrics_cb_state and dw_metrics_cb_call list the same
 * values in the same order as dw_breaker_state and dw_breaker_outcome (the
 * value of the dw_breaker_state gauge is the breaker's enum); the asserts
 * below keep it so.
 */
#include "dw/breaker.h"

#include "dw/metrics.h"

_Static_assert((int)DW_METRICS_CB_CLOSED == (int)DW_BREAKER_CLOSED &&
                   (int)DW_METRICS_CB_HALF_OPEN == (int)DW_BREAKER_HALF_OPEN &&
                   (int)DW_METRICS_CB_OPEN == (int)DW_BREAKER_OPEN &&
                   (int)DW_METRICS_CB_FORCED_OPEN == (int)DW_BREAKER_FORCED_OPEN &&
                   (int)DW_METRICS_CB_DISABLED == (int)DW_BREAKER_DISABLED &&
                   (int)DW_METRICS_CB_STATE_COUNT == (int)DW_BREAKER_STATE_COUNT,
               "the metrics' breaker states are the breaker's");
_Static_assert((int)DW_METRICS_CB_SUCCESSFUL == (int)DW_BREAKER_SUCCESS &&
                   (int)DW_METRICS_CB_FAILED == (int)DW_BREAKER_FAILURE &&
                   (int)DW_METRICS_CB_IGNORED == (int)DW_BREAKER_IGNORED,
               "the metrics' call kinds are the breaker's outcomes");

void dw_metrics_breaker(struct dw_metrics *m, enum dw_channel_id ch,
                        const struct dw_breaker_snapshot *snap)
{
    struct dw_metrics_cb_window w = {
        .state = (enum dw_metrics_cb_state)snap->state,
        .failure_rate = snap->failure_rate,
        .slow_call_rate = snap->slow_call_rate,
        .calls = snap->calls,
        .failed_calls = snap->failed_calls,
        .slow_calls = snap->slow_calls,
        .slow_failed_calls = snap->slow_failed_calls,
    };
    dw_metrics_cb_window(m, ch, &w);
}

void dw_metrics_breaker_transition(struct dw_metrics *m, enum dw_channel_id ch,
                                   enum dw_breaker_state from, enum dw_breaker_state to)
{
    dw_metrics_cb_transition(m, ch, (enum dw_metrics_cb_state)from, (enum dw_metrics_cb_state)to);
}

void dw_metrics_breaker_call(struct dw_metrics *m, enum dw_channel_id ch,
                             enum dw_breaker_outcome outcome, int64_t duration_us)
{
    dw_metrics_cb_call(m, ch, (enum dw_metrics_cb_call)outcome, duration_us);
}
