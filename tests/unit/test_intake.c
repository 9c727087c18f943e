/*
 * Intake with fakes for the producer's DLQ, dispatch and the consumer's
 * pause: a valid record goes to dispatch with its partition, offset and
 * timestamp; a broken one to the DLQ with its reason code and the record as
 * it came; a failed DLQ produce submits nothing (the offset stays pending);
 * the partitions pause and resume with hysteresis.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dw/intake.h"
#include "dw/request.h"

struct fake {
    /* DLQ */
    enum dw_err dlq_answer;
    int dlq_calls;
    struct dw_dlq_record dlq;
    struct dw_record dlq_source; /* dlq.source points here */
    char dlq_message[512];       /* dlq.message points here: the original is the call's */
    /* dispatch */
    enum dw_err submit_answer;
    int submit_calls;
    char event_id[72];
    int32_t partition;
    int64_t offset;
    int64_t enqueued_at_ms;
    struct dw_backpressure_load load;
    /* consumer */
    bool paused;
    int set_paused_calls;
};

static enum dw_err fake_send_dlq(void *opaque, const struct dw_dlq_record *rec)
{
    struct fake *f = opaque;
    f->dlq_calls++;
    f->dlq = *rec;
    snprintf(f->dlq_message, sizeof(f->dlq_message), "%s", rec->message);
    f->dlq.message = f->dlq_message;
    f->dlq_source = *rec->source;
    f->dlq.source = &f->dlq_source;
    return f->dlq_answer;
}

static enum dw_err fake_submit(void *opaque, struct dw_request *req, int32_t partition,
                               int64_t offset)
{
    struct fake *f = opaque;
    f->submit_calls++;
    snprintf(f->event_id, sizeof(f->event_id), "%s", req->event_id);
    f->partition = partition;
    f->offset = offset;
    f->enqueued_at_ms = req->enqueued_at_ms;
    dw_request_destroy(req); /* ours, whatever the answer */
    return f->submit_answer;
}

static void fake_load(void *opaque, struct dw_backpressure_load *out)
{
    *out = ((struct fake *)opaque)->load;
}

static bool fake_paused(void *opaque)
{
    return ((struct fake *)opaque)->paused;
}

static void fake_set_paused(void *opaque, bool paused)
{
    struct fake *f = opaque;
    f->set_paused_calls++;
    f->paused = paused;
}

static struct dw_config cfg = {.max_in_flight_requests = 100, .max_in_flight_bytes = 1000000};

static struct dw_intake intake_of(struct fake *f)
{
    return (struct dw_intake){
        .cfg = &cfg,
        .calls = {f, fake_send_dlq, fake_submit, fake_load, fake_paused, fake_set_paused},
    };
}

static struct dw_record record(const char *value, int64_t timestamp_ms)
{
    return (struct dw_record){
        .key = "k1",
        .key_len = 2,
        .value = value,
        .value_len = strlen(value),
        .topic = "requests",
        .partition = 3,
        .offset = 42,
        .timestamp_ms = timestamp_ms,
    };
}

static const char valid[] = "{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[\"NAVER\"],"
                            "\"requestedAt\":\"2025-10-29T10:00:00Z\"}";

static void test_valid_goes_to_dispatch(void **state)
{
    (void)state;
    struct fake f = {0};
    struct dw_intake in = intake_of(&f);
    struct dw_record rec = record(valid, 1761732000500);
    dw_intake_record(&in, &rec);
    assert_int_equal(f.dlq_calls, 0);
    assert_int_equal(f.submit_calls, 1);
    assert_string_equal(f.event_id, "e1");
    assert_int_equal(f.partition, 3);
    assert_int_equal(f.offset, 42);
    /* Latency counts from the record's timestamp... */
    assert_int_equal(f.enqueued_at_ms, 1761732000500);
    /* ...or, without one, from requestedAt. */
    rec = record(valid, -1);
    dw_intake_record(&in, &rec);
    assert_int_equal(f.submit_calls, 2);
    assert_int_equal(f.enqueued_at_ms, 1761732000000);
}

static void test_stopping_dispatch_loses_nothing(void **state)
{
    (void)state;
    struct fake f = {.submit_answer = DW_ERR_STOPPED};
    struct dw_intake in = intake_of(&f);
    struct dw_record rec = record(valid, 0);
    dw_intake_record(&in, &rec); /* logged; the request was dispatch's to free */
    assert_int_equal(f.submit_calls, 1);
    assert_int_equal(f.dlq_calls, 0);
}

static void test_broken_goes_to_dlq(void **state)
{
    (void)state;
    struct fake f = {0};
    struct dw_intake in = intake_of(&f);
    static const char broken[] = "{\"eventId\":";
    struct dw_record rec = record(broken, 0);
    dw_intake_record(&in, &rec);
    assert_int_equal(f.submit_calls, 0);
    assert_int_equal(f.dlq_calls, 1);
    assert_int_equal(f.dlq.code, DW_DLQ_INVALID_JSON);
    assert_non_null(f.dlq.message);
    assert_true(f.dlq.message[0] != '\0');
    /* The record as it came, for the DLQ's headers and value. */
    assert_ptr_equal(f.dlq.source->value, broken);
    assert_int_equal(f.dlq.source->value_len, strlen(broken));
    assert_int_equal(f.dlq.source->key_len, 2);
    assert_memory_equal(f.dlq.source->key, "k1", 2);
    assert_string_equal(f.dlq.source->topic, "requests");
    assert_int_equal(f.dlq.source->partition, 3);
    assert_int_equal(f.dlq.source->offset, 42);

    /* Valid JSON breaking a rule: its own code. */
    static const char no_channels[] = "{\"eventId\":\"e1\",\"title\":\"t\",\"channels\":[]}";
    rec = record(no_channels, 0);
    dw_intake_record(&in, &rec);
    assert_int_equal(f.dlq_calls, 2);
    assert_int_not_equal(f.dlq.code, DW_DLQ_INVALID_JSON);
    assert_int_not_equal(f.dlq.code, DW_DLQ_NONE);
    assert_int_equal(f.submit_calls, 0);
}

/* A failed DLQ produce is not turned into anything else: the record is
 * neither submitted nor retried here (its offset stays pending). */
static void test_dlq_failure_submits_nothing(void **state)
{
    (void)state;
    struct fake f = {.dlq_answer = DW_ERR_IO};
    struct dw_intake in = intake_of(&f);
    struct dw_record rec = record("not json", 0);
    dw_intake_record(&in, &rec);
    assert_int_equal(f.dlq_calls, 1);
    assert_int_equal(f.submit_calls, 0);
}

/* Pause at the limit; stay paused above three quarters; resume at or
 * below them. The consumer is told only when the state changes. */
static void test_backpressure_on_and_off(void **state)
{
    (void)state;
    struct fake f = {.load = {.requests = 99, .store_ok = true}};
    struct dw_intake in = intake_of(&f);
    assert_false(dw_intake_backpressure(&in));
    assert_int_equal(f.set_paused_calls, 0);

    f.load.requests = 100;
    assert_true(dw_intake_backpressure(&in));
    assert_true(f.paused);
    assert_int_equal(f.set_paused_calls, 1);

    f.load.requests = 80; /* below the limit, above three quarters: still paused */
    assert_true(dw_intake_backpressure(&in));
    assert_true(f.paused);
    assert_int_equal(f.set_paused_calls, 1);

    f.load.requests = 75;
    assert_false(dw_intake_backpressure(&in));
    assert_false(f.paused);
    assert_int_equal(f.set_paused_calls, 2);
    f.load.requests = 80; /* running again: 80 does not pause */
    assert_false(dw_intake_backpressure(&in));
    assert_int_equal(f.set_paused_calls, 2);

    /* The database away pauses whatever the load; back, it resumes (once
     * the load is under three quarters too). */
    f.load.requests = 10;
    f.load.store_ok = false;
    assert_true(dw_intake_backpressure(&in));
    f.load.store_ok = true;
    assert_false(dw_intake_backpressure(&in));

    /* A congested channel pauses; it resumes only once no channel has more
     * than its limit waiting. */
    f.load.queue_ratio = 3.0;
    assert_true(dw_intake_backpressure(&in));
    f.load.queue_ratio = 1.5;
    assert_true(dw_intake_backpressure(&in));
    f.load.queue_ratio = 0.5;
    assert_false(dw_intake_backpressure(&in));
    assert_int_equal(f.set_paused_calls, 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_goes_to_dispatch),
        cmocka_unit_test(test_stopping_dispatch_loses_nothing),
        cmocka_unit_test(test_broken_goes_to_dlq),
        cmocka_unit_test(test_dlq_failure_submits_nothing),
        cmocka_unit_test(test_backpressure_on_and_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
