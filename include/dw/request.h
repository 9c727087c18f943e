/*
 * A distribution request (CONTRACT 2.1): decoding and validation. Pure; no
 * I/O, no globals; safe from any thread.
 */
#ifndef DW_REQUEST_H
#define DW_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "dw/channel_id.h"
#include "dw/status.h"

#define DW_REQUEST_MAX_BYTES (1024 * 1024)

struct dw_channel_type;

/* One channelSettings value a channel's type declares, present in the
 * request (include/dw/channel.h, struct dw_channel_setting). */
struct dw_request_setting {
    int channel;     /* enum dw_channel_id of the channel it belongs to */
    const char *key; /* the type's key, static: "phoneNumber" */
    char *value;     /* owned, non-empty UTF-8 */
};

/* A valid request. All strings are owned, NUL-terminated UTF-8. */
struct dw_request {
    char *event_id;          /* 1..64 of [A-Za-z0-9._-] */
    char *title;             /* 1..200 code points */
    char *content;           /* NULL when absent; at most 10,000 code points */
    char *image_url;         /* NULL when absent; http:// or https:// */
    char *requested_at;      /* NULL when absent; as sent (RFC 3339) */
    int64_t requested_at_ms; /* parsed requestedAt, ms since epoch; 0 when absent */
    int64_t enqueued_at_ms;  /* the Kafka record's timestamp; 0 when unknown (set by the
                                consumer's caller, not by decoding) */
    unsigned channels;       /* bit (1u << enum dw_channel_id) per requested channel */
    int channel_count;
    /* The present channelSettings values the channel types declare, in
     * registry order, then each type's order; read with dw_request_setting. */
    struct dw_request_setting *settings;
    int setting_count;
    /* An estimate of the memory the request holds while in flight: the
     * struct and its strings, once for the request and once more per
     * requested channel (each channel's call body carries them). For the
     * byte budget of back-pressure (worker.max_in_flight_bytes). */
    size_t bytes;
};

/*
 * Decodes and validates the value of a Kafka message. value may be NULL (a
 * null value: DW_DLQ_INVALID_JSON). On DW_DLQ_NONE *out is a new request the
 * caller frees with dw_request_destroy; otherwise *out is NULL and errbuf
 * says, for a human, which rule failed. Rules and their order: CONTRACT 2.1.
 */
enum dw_dlq_code dw_request_decode(const char *value, size_t len, struct dw_request **out,
                                   char *errbuf, size_t errlen);

/*
 * dw_request_decode against a given table of channel types instead of the
 * registry (dw_channel_registry): the channel names, the settings and the
 * needs are the table's. types[i]->id == i; 1 <= count <= 32 (the width of
 * dw_request.channels). dw_request_decode is this with the registry; tests
 * use it to show that a new type is all a new channel needs.
 */
enum dw_dlq_code dw_request_decode_types(const struct dw_channel_type *const *types, int count,
                                         const char *value, size_t len, struct dw_request **out,
                                         char *errbuf, size_t errlen);

/* The request as JSON that dw_request_decode reads back to an equal
 * request (the schedule of an automatic re-drive keeps it so). Only what
 * decoding keeps is written: unknown fields and unused settings are gone.
 * The caller frees the string. */
char *dw_request_encode(const struct dw_request *req);

/* dw_request_encode for a request decoded with dw_request_decode_types. */
char *dw_request_encode_types(const struct dw_channel_type *const *types, int count,
                              const struct dw_request *req);

/* The value of channelSettings.<channel's name>.<key>, or NULL when absent. */
const char *dw_request_setting(const struct dw_request *req, int channel, const char *key);

void dw_request_destroy(struct dw_request *req);

static inline int dw_request_has(const struct dw_request *req, int ch)
{
    return (req->channels >> ch) & 1u;
}

#endif /* DW_REQUEST_H */
