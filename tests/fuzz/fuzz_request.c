/*
 * libFuzzer target: the request decoder and validator. Any input must give
 * a valid DLQ code (or a request that satisfies the contract's rules),
 * never a crash, a leak or undefined behaviour. Run it with scripts/fuzz;
 * tests/fuzz/request_corpus holds the seeds, replayed by test_request.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dw/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[512];
    struct dw_request *req = NULL;
    /* A copy of exactly size bytes: Kafka values are not NUL-terminated. */
    char *value = malloc(size ? size : 1);
    if (!value)
        return 0;
    memcpy(value, data, size);
    enum dw_dlq_code code = dw_request_decode(value, size, &req, why, sizeof(why));
    if (code == DW_DLQ_NONE) {
        /* A request that passed must obey the rules it was checked for. */
        size_t id_len = strlen(req->event_id);
        if (id_len == 0 || id_len > 64 || req->channel_count < 1 ||
            req->channel_count > DW_CHANNEL_COUNT || !req->title[0])
            abort();
        if (dw_request_has(req, DW_CHANNEL_RINGOBIZ) &&
            !dw_request_setting(req, DW_CHANNEL_RINGOBIZ, "phoneNumber"))
            abort();
        if (dw_request_has(req, DW_CHANNEL_INSTAGRAM) && !req->image_url)
            abort();
        dw_request_destroy(req);
    } else if (req || code >= DW_DLQ_COUNT || !why[0]) {
        abort();
    }
    free(value);
    return 0;
}
