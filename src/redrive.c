/*
 * The re-drive schedule's rules (include/dw/redrive.h). Pure: safe from any
 * thread, no state. The durable schedule (the redrive table) is in store.c,
 * the loop that claims and runs due re-drives in dispatch.c; both call
 * these functions so the rules live in one place.
 */
#include "dw/redrive.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

enum dw_err dw_redrive_parse_delays(const char *text, struct dw_redrive_policy *p, char *errbuf,
                                    size_t errlen)
{
    int64_t delays[DW_REDRIVE_TIERS_MAX];
    int n = 0;
    const char *s = text ? text : "";

    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0') {
        p->tiers = 0;
        return DW_OK;
    }
    for (;;) {
        while (isspace((unsigned char)*s))
            s++;
        if (!isdigit((unsigned char)*s)) {
            dw_snprintf(errbuf, errlen,
                        "\"%s\": delay %d is not a number of milliseconds (expected e.g. "
                        "\"60000,300000\")",
                        text, n + 1);
            return DW_ERR_CONFIG;
        }
        errno = 0;
        char *end;
        long long v = strtoll(s, &end, 10);
        if (errno == ERANGE || v < 1 || v > DW_REDRIVE_DELAY_MAX_MS) {
            dw_snprintf(errbuf, errlen, "\"%s\": delay %d must be 1 to %lld ms", text, n + 1,
                        (long long)DW_REDRIVE_DELAY_MAX_MS);
            return DW_ERR_CONFIG;
        }
        if (n == DW_REDRIVE_TIERS_MAX) {
            dw_snprintf(errbuf, errlen, "\"%s\": more than %d delays", text, DW_REDRIVE_TIERS_MAX);
            return DW_ERR_CONFIG;
        }
        delays[n++] = v;
        s = end;
        while (isspace((unsigned char)*s))
            s++;
        if (*s == '\0')
            break;
        if (*s != ',') {
            dw_snprintf(errbuf, errlen, "\"%s\": unexpected '%c' after delay %d", text, *s, n);
            return DW_ERR_CONFIG;
        }
        s++;
    }
    for (int i = 0; i < n; i++)
        p->delays_ms[i] = delays[i];
    p->tiers = n;
    return DW_OK;
}

bool dw_redrive_transient(enum dw_errcode c)
{
    switch (c) {
    case DW_EC_TIMEOUT:
    case DW_EC_HTTP_5XX:
    case DW_EC_RATE_LIMITED:
    case DW_EC_CONNECTION:
    case DW_EC_RETRIES_EXHAUSTED:
    case DW_EC_CIRCUIT_OPEN:
    case DW_EC_BULKHEAD_FULL:
        return true;
    case DW_EC_NONE:
    case DW_EC_HTTP_4XX:
    case DW_EC_BAD_RESPONSE:
    case DW_EC_COUNT:
        break;
    }
    return false;
}

int64_t dw_redrive_expires_at(const struct dw_redrive_policy *p, int64_t born_ms)
{
    return born_ms + p->max_age_ms;
}

bool dw_redrive_next(const struct dw_redrive_policy *p, int tier, int64_t born_ms, int64_t now_ms,
                     int64_t *at_ms)
{
    if (p->tiers <= 0)
        return false;
    if (tier < 0)
        tier = 0;
    if (tier >= p->tiers)
        tier = p->tiers - 1; /* the last delay repeats until the request is too old */
    int64_t at = now_ms + p->delays_ms[tier];
    if (at >= dw_redrive_expires_at(p, born_ms))
        return false;
    *at_ms = at;
    return true;
}

int64_t dw_redrive_born_ms(int64_t requested_at_ms, int64_t started_at_ms)
{
    if (requested_at_ms > 0 && (started_at_ms <= 0 || requested_at_ms < started_at_ms))
        return requested_at_ms;
    return started_at_ms;
}
