/*
 * JSON documents built from a stored status: the distribution-completed
 * event (CONTRACT 2.2) and the status endpoint's answer (CONTRACT 4).
 * Pure; json-c underneath.
 */
#ifndef DW_REPORT_H
#define DW_REPORT_H

#include <stdint.h>

#include "dw/store.h"

/* The completion event of a drive over the channels in channel_mask (bit per
 * enum dw_channel_id), in registry order. Caller frees the string. */
char *dw_report_completion(const struct dw_status *st, unsigned channel_mask,
                           int64_t completed_at_ms);

/* The status endpoint's JSON: every stored channel row. Caller frees. */
char *dw_report_status(const struct dw_status *st);

#endif /* DW_REPORT_H */
