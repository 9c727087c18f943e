/*
 * RFC 3339 date-times (the request's requestedAt): dw/rfc3339.h.
 *
 * Threads: pure; any thread.
 *
 * Invariants: nothing outside s[0..len) is read; the calendar is the
 * proleptic Gregorian one, so any four-digit year converts exactly.
 */
#include "dw/rfc3339.h"

#include <stdbool.h>

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Reads n digits at *p (advancing it); false when one is not a digit. */
static bool take_digits(const char **p, const char *end, int n, int *out)
{
    int v = 0;

    if (end - *p < n)
        return false;
    for (int i = 0; i < n; i++) {
        if (!is_digit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool take_char(const char **p, const char *end, char a, char b)
{
    if (*p == end || (**p != a && **p != b))
        return false;
    (*p)++;
    return true;
}

static bool is_leap_year(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The date-time's reason to be refused, or NULL with *ms_out set. */
static const char *parse(const char *s, size_t len, int64_t *ms_out)
{
    static const char *const form =
        "not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.fraction] then Z or +HH:MM)";
    const char *p = s, *end = s + len;
    int year, month, day, hour, minute, second, off_h = 0, off_m = 0, off_sign = 0, ms = 0;

    if (!take_digits(&p, end, 4, &year) || !take_char(&p, end, '-', '-') ||
        !take_digits(&p, end, 2, &month) || !take_char(&p, end, '-', '-') ||
        !take_digits(&p, end, 2, &day) || !take_char(&p, end, 'T', 't') ||
        !take_digits(&p, end, 2, &hour) || !take_char(&p, end, ':', ':') ||
        !take_digits(&p, end, 2, &minute) || !take_char(&p, end, ':', ':') ||
        !take_digits(&p, end, 2, &second))
        return form;
    if (take_char(&p, end, '.', '.')) {
        int digits = 0;
        while (p < end && is_digit((unsigned char)*p)) {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return form;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    if (take_char(&p, end, 'Z', 'z')) {
        off_sign = 0;
    } else if (p < end && (*p == '+' || *p == '-')) {
        off_sign = *p == '-' ? -1 : 1;
        p++;
        if (!take_digits(&p, end, 2, &off_h) || !take_char(&p, end, ':', ':') ||
            !take_digits(&p, end, 2, &off_m))
            return form;
    } else {
        return form;
    }
    if (p != end)
        return form;

    if (month < 1 || month > 12)
        return "month out of range";
    if (day < 1 || day > days_in_month(year, month))
        return "day out of range for the month";
    if (hour > 23)
        return "hour out of range";
    if (minute > 59)
        return "minute out of range";
    if (off_h > 23 || off_m > 59)
        return "offset out of range";
    int offset_min = off_sign * (off_h * 60 + off_m);
    if (second > 60)
        return "second out of range";
    if (second == 60) {
        int utc_min = ((hour * 60 + minute - offset_min) % 1440 + 1440) % 1440;
        if (utc_min != 23 * 60 + 59)
            return "second 60 is only valid at 23:59 UTC (a leap second)";
    }

    int64_t secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second -
                   (int64_t)offset_min * 60;
    *ms_out = secs * 1000 + ms;
    return NULL;
}

enum dw_err dw_rfc3339_parse(const char *s, size_t len, int64_t *ms_out, const char **why)
{
    const char *reason = parse(s, len, ms_out);
    if (why)
        *why = reason;
    return reason ? DW_ERR_INVALID : DW_OK;
}
