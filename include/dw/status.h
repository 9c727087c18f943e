/*
 * The statuses and codes of CONTRACT section 2.3, their names on the wire,
 * and the rules that keep a status from going backwards. Pure functions.
 */
#ifndef DW_STATUS_H
#define DW_STATUS_H

#include <stdbool.h>

enum dw_overall {
    DW_OVERALL_PENDING,
    DW_OVERALL_IN_PROGRESS,
    DW_OVERALL_COMPLETED,       /* every channel succeeded */
    DW_OVERALL_PARTIAL_FAILURE, /* some succeeded */
    DW_OVERALL_FAILED,          /* none succeeded */
};

enum dw_chstatus {
    DW_CH_PENDING,
    DW_CH_IN_PROGRESS,
    DW_CH_SUCCESS,
    DW_CH_FAILED,
};

/* Why a channel failed. DW_EC_NONE means no error. */
enum dw_errcode {
    DW_EC_NONE,
    DW_EC_TIMEOUT,
    DW_EC_HTTP_5XX,
    DW_EC_HTTP_4XX,
    DW_EC_RATE_LIMITED,
    DW_EC_CONNECTION,
    DW_EC_BAD_RESPONSE,
    DW_EC_RETRIES_EXHAUSTED,
    DW_EC_CIRCUIT_OPEN,
    DW_EC_BULKHEAD_FULL,
    DW_EC_COUNT
};

/* Why a request went to the DLQ. DW_DLQ_NONE means it is valid. */
enum dw_dlq_code {
    DW_DLQ_NONE,
    DW_DLQ_INVALID_JSON,
    DW_DLQ_TOO_LARGE,
    DW_DLQ_INVALID_EVENT_ID,
    DW_DLQ_INVALID_FIELD,
    DW_DLQ_INVALID_CHANNELS,
    DW_DLQ_COUNT
};

#define DW_OVERALL_COUNT  5
#define DW_CHSTATUS_COUNT 4

/* Wire names ("COMPLETED", "SUCCESS", "HTTP_5XX", "INVALID_JSON"); the
 * *_NONE values give NULL. */
const char *dw_overall_name(enum dw_overall s);
const char *dw_chstatus_name(enum dw_chstatus s);
const char *dw_errcode_name(enum dw_errcode c);
const char *dw_dlq_name(enum dw_dlq_code c);

/* Parse a wire name; false when unknown. */
bool dw_overall_parse(const char *name, enum dw_overall *out);
bool dw_chstatus_parse(const char *name, enum dw_chstatus *out);
bool dw_errcode_parse(const char *name, enum dw_errcode *out);

/* True for outcomes worth another attempt and counted by a breaker:
 * TIMEOUT, HTTP_5XX, RATE_LIMITED, CONNECTION. */
bool dw_errcode_transient(enum dw_errcode c);

/* The overall status of a drive whose every channel is final. */
enum dw_overall dw_overall_aggregate(int success_count, int failure_count);

/* May a stored channel status `from` be replaced by `to`? SUCCESS is final;
 * otherwise a status may only move forward (PENDING < IN_PROGRESS < FAILED
 * < SUCCESS), and FAILED may be replaced by a newer FAILED. */
bool dw_chstatus_may_replace(enum dw_chstatus from, enum dw_chstatus to);

/* May a stored overall status `from` be replaced by `to`? Non-final
 * statuses may move to anything but PENDING; a final one only to a better
 * final one (FAILED < PARTIAL_FAILURE < COMPLETED). */
bool dw_overall_may_replace(enum dw_overall from, enum dw_overall to);

bool dw_overall_is_final(enum dw_overall s);

#endif /* DW_STATUS_H */
