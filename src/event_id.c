/*
 * The eventId rule of CONTRACT 2.1. Plain ASCII tests, not <ctype.h>,
 * whose answers depend on the locale. Pure functions, any thread.
 */
#include "dw/event_id.h"

bool dw_event_id_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

bool dw_event_id_valid(const char *s, size_t len)
{
    if (len < 1 || len > DW_EVENT_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!dw_event_id_char(s[i]))
            return false;
    }
    return true;
}
