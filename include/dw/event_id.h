/*
 * The eventId rule (CONTRACT 2.1): 1 to DW_EVENT_ID_MAX characters, each
 * one of A-Z a-z 0-9 . _ -. One definition for request decoding, the status
 * endpoint, the tools and the channel simulator. Pure functions, any thread.
 */
#ifndef DW_EVENT_ID_H
#define DW_EVENT_ID_H

#include <stdbool.h>
#include <stddef.h>

#define DW_EVENT_ID_MAX 64

/* Whether c may appear in an eventId. */
bool dw_event_id_char(char c);

/* Whether s[0..len) is an eventId by the rule above. */
bool dw_event_id_valid(const char *s, size_t len);

#endif /* DW_EVENT_ID_H */
