/*
 * Names of statuses and codes and the never-go-backwards rules. The store
 * encodes the same rules in SQL (see store.c); test_status.c checks both
 * agree on every pair.
 */
#include "dw/status.h"

#include <stddef.h>
#include <string.h>

static const char *const overall_names[] = {"PENDING", "IN_PROGRESS", "COMPLETED",
                                            "PARTIAL_FAILURE", "FAILED"};
static const char *const chstatus_names[] = {"PENDING", "IN_PROGRESS", "SUCCESS", "FAILED"};
static const char *const errcode_names[] = {
    NULL,         "TIMEOUT",      "HTTP_5XX",          "HTTP_4XX",     "RATE_LIMITED",
    "CONNECTION", "BAD_RESPONSE", "RETRIES_EXHAUSTED", "CIRCUIT_OPEN", "BULKHEAD_FULL"};
static const char *const dlq_names[] = {
    NULL, "INVALID_JSON", "TOO_LARGE", "INVALID_EVENT_ID", "INVALID_FIELD", "INVALID_CHANNELS"};

const char *dw_overall_name(enum dw_overall s)
{
    return (unsigned)s < DW_OVERALL_COUNT ? overall_names[s] : NULL;
}

const char *dw_chstatus_name(enum dw_chstatus s)
{
    return (unsigned)s < DW_CHSTATUS_COUNT ? chstatus_names[s] : NULL;
}

const char *dw_errcode_name(enum dw_errcode c)
{
    return (unsigned)c < DW_EC_COUNT ? errcode_names[c] : NULL;
}

const char *dw_dlq_name(enum dw_dlq_code c)
{
    return (unsigned)c < DW_DLQ_COUNT ? dlq_names[c] : NULL;
}

static bool lookup(const char *const *names, int n, const char *name, int *out)
{
    for (int i = 0; i < n; i++) {
        if (names[i] && name && strcmp(names[i], name) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

bool dw_overall_parse(const char *name, enum dw_overall *out)
{
    int i;
    if (!lookup(overall_names, DW_OVERALL_COUNT, name, &i))
        return false;
    *out = (enum dw_overall)i;
    return true;
}

bool dw_chstatus_parse(const char *name, enum dw_chstatus *out)
{
    int i;
    if (!lookup(chstatus_names, DW_CHSTATUS_COUNT, name, &i))
        return false;
    *out = (enum dw_chstatus)i;
    return true;
}

bool dw_errcode_parse(const char *name, enum dw_errcode *out)
{
    int i;
    if (!lookup(errcode_names, DW_EC_COUNT, name, &i))
        return false;
    *out = (enum dw_errcode)i;
    return true;
}

bool dw_errcode_transient(enum dw_errcode c)
{
    return c == DW_EC_TIMEOUT || c == DW_EC_HTTP_5XX || c == DW_EC_RATE_LIMITED ||
           c == DW_EC_CONNECTION;
}

enum dw_overall dw_overall_aggregate(int success_count, int failure_count)
{
    if (failure_count == 0)
        return DW_OVERALL_COMPLETED;
    if (success_count == 0)
        return DW_OVERALL_FAILED;
    return DW_OVERALL_PARTIAL_FAILURE;
}

static int chstatus_rank(enum dw_chstatus s)
{
    switch (s) {
    case DW_CH_PENDING:
        return 0;
    case DW_CH_IN_PROGRESS:
        return 1;
    case DW_CH_FAILED:
        return 2;
    case DW_CH_SUCCESS:
        return 3;
    }
    return 0;
}

bool dw_chstatus_may_replace(enum dw_chstatus from, enum dw_chstatus to)
{
    if (from == DW_CH_SUCCESS)
        return false;
    return chstatus_rank(to) >= chstatus_rank(from);
}

bool dw_overall_is_final(enum dw_overall s)
{
    return s == DW_OVERALL_COMPLETED || s == DW_OVERALL_PARTIAL_FAILURE || s == DW_OVERALL_FAILED;
}

static int final_rank(enum dw_overall s)
{
    switch (s) {
    case DW_OVERALL_FAILED:
        return 1;
    case DW_OVERALL_PARTIAL_FAILURE:
        return 2;
    case DW_OVERALL_COMPLETED:
        return 3;
    default:
        return 0;
    }
}

bool dw_overall_may_replace(enum dw_overall from, enum dw_overall to)
{
    if (to == DW_OVERALL_PENDING)
        return from == DW_OVERALL_PENDING;
    if (!dw_overall_is_final(from))
        return true;
    return dw_overall_is_final(to) && final_rank(to) > final_rank(from);
}
