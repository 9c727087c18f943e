/*
 * A consumed Kafka record, borrowed for one call: where it came from and
 * what it held. Intake decodes it; a DLQ record carries it whole (its key,
 * value and origin become the DLQ message and its x-original-* headers).
 */
#ifndef DW_RECORD_H
#define DW_RECORD_H

#include <stddef.h>
#include <stdint.h>

struct dw_record {
    const void *key; /* may be NULL */
    size_t key_len;
    const void *value; /* may be NULL (a null value) */
    size_t value_len;
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* the record's timestamp; <= 0 when it has none */
};

#endif /* DW_RECORD_H */
