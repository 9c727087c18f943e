/*
 * The producer against librdkafka's mock cluster (in this process): one bad
 * record must not stop a partition. A DLQ value too large for
 * message.max.bytes is truncated to fit (header x-value-truncated) and
 * delivered; a record the broker refuses for good (a permanent error) is
 * dropped, counted, and its request still reported done. Done offsets are
 * handed back through dw_producer_take_acks, in order, a re-drive's
 * (partition -1) never.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "dw/common.h"
#include "dw/config.h"
#include "dw/metrics.h"
#include "dw/producer.h"
#include "kafka_config.h"

#define MAX_MESSAGE_BYTES 20000
/* How long a test waits for a delivery report before it calls it lost. */
#define WAIT_MS 8000
/* Kafka protocol ApiKey of Produce (librdkafka keeps its own enum private). */
#define API_PRODUCE          0
#define API_INIT_PRODUCER_ID 22

struct fixture {
    rd_kafka_t *owner; /* owns the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    struct dw_config *cfg;
    struct dw_metrics *metrics;
    struct dw_producer *producer;
    int delivered;
    int32_t last_partition;
    int64_t last_offset;
    rd_kafka_t *reader; /* read_back's consumer, destroyed at teardown */
};

static int setup(void **state)
{
    struct fixture *f = dw_xcalloc(1, sizeof(*f));
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
    f->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(f->owner);
    f->mc = rd_kafka_mock_cluster_new(f->owner, 1);
    assert_non_null(f->mc);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "req", 1, 1), 0);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "done", 1, 1), 0);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "req.dlq", 1, 1), 0);

    char kafka[256];
    dw_snprintf(kafka, sizeof(kafka),
                "request_topic = \"req\"; completed_topic = \"done\"; dlq_topic = \"req.dlq\";\n"
                "producer_properties = [ \"message.max.bytes=%d\", \"log_level=0\" ];",
                MAX_MESSAGE_BYTES);
    f->cfg = dw_test_kafka_config(kafka, rd_kafka_mock_cluster_bootstraps(f->mc));
    char err[512];
    f->metrics = dw_metrics_create();
    assert_int_equal(dw_producer_create(f->cfg, NULL, f->metrics, &f->producer, err, sizeof(err)),
                     DW_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->reader)
        rd_kafka_destroy(f->reader);
    dw_producer_destroy(f->producer, 2000);
    dw_metrics_destroy(f->metrics);
    dw_config_destroy(f->cfg);
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->owner);
    free(f);
    return 0;
}

/* Takes what the producer handed back (one at a time, to see the order). */
static void take_acks(struct fixture *f)
{
    struct dw_ack ack;
    while (dw_producer_take_acks(f->producer, &ack, 1) == 1) {
        f->delivered++;
        f->last_partition = ack.partition;
        f->last_offset = ack.offset;
    }
}

/* Serves delivery reports until `count` requests are done or WAIT_MS. */
static void wait_delivered(struct fixture *f, int count)
{
    int64_t until = dw_now_ms() + WAIT_MS;
    while (f->delivered < count && dw_now_ms() < until) {
        dw_producer_poll(f->producer, 50);
        take_acks(f);
    }
    if (f->delivered < count)
        fail_msg("%d of %d request(s) reported done; %d record(s) outstanding", f->delivered, count,
                 dw_producer_outstanding(f->producer));
}

static double metric(struct fixture *f, const char *name)
{
    struct dw_buf buf;
    dw_buf_init(&buf, 4 * 1024 * 1024);
    assert_int_equal(dw_metrics_render(f->metrics, &buf), DW_OK);
    char key[128];
    dw_snprintf(key, sizeof(key), "\n%s ", name);
    const char *at = strstr(buf.data, key);
    double v = at ? strtod(at + strlen(key), NULL) : -1;
    dw_buf_cleanup(&buf);
    return v;
}

/* Reads the one record of topic's partition 0 (a simple consumer: no
 * group, so nothing to leave when done). */
static rd_kafka_message_t *read_back(struct fixture *f, const char *topic)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(f->mc), errstr,
                      sizeof(errstr));
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    assert_non_null(c);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c, topic, NULL);
    assert_int_equal(rd_kafka_consume_start(rkt, 0, RD_KAFKA_OFFSET_BEGINNING), 0);
    rd_kafka_message_t *got = NULL;
    int64_t until = dw_now_ms() + WAIT_MS;
    while (!got && dw_now_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consume(rkt, 0, 100);
        if (m && !m->err)
            got = m;
        else if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_consume_stop(rkt, 0);
    rd_kafka_topic_destroy(rkt);
    assert_non_null(got);
    /* The message keeps its handle alive: destroy both after use. */
    f->reader = c;
    return got;
}

static const char *header(rd_kafka_message_t *m, const char *name)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *value = NULL;
    size_t size = 0;
    if (rd_kafka_message_headers(m, &hdrs) || rd_kafka_header_get_last(hdrs, name, &value, &size))
        return NULL;
    static char text[64];
    dw_snprintf(text, sizeof(text), "%.*s", (int)size, (const char *)value);
    return text;
}

/* A request record far over message.max.bytes goes to the DLQ cut to fit,
 * saying so; its request is done. */
static void test_oversized_dlq_value_is_truncated(void **state)
{
    struct fixture *f = *state;
    size_t len = 5 * MAX_MESSAGE_BYTES;
    char *value = dw_xmalloc(len);
    memset(value, 'x', len);
    struct dw_record source = {
        .key = "k1",
        .key_len = 2,
        .value = value,
        .value_len = len,
        .topic = "req",
        .partition = 0,
        .offset = 42,
    };
    struct dw_dlq_record rec = {
        .source = &source, .code = DW_DLQ_TOO_LARGE, .message = "too large"};
    assert_int_equal(dw_producer_send_dlq(f->producer, &rec), DW_OK);
    free(value);
    wait_delivered(f, 1);
    assert_int_equal(f->last_offset, 42);

    rd_kafka_message_t *m = read_back(f, "req.dlq");
    assert_true(m->len > 0 && m->len < MAX_MESSAGE_BYTES);
    assert_memory_equal(m->payload, "xxxxxxxx", 8);
    assert_string_equal(header(m, "x-value-truncated"), "100000");
    assert_string_equal(header(m, "x-error-code"), "TOO_LARGE");
    rd_kafka_message_destroy(m);
    assert_true(metric(f, "dw_kafka_records_dropped_total") == 0);
}

/* A small DLQ value is sent whole, without the truncation header. */
static void test_small_dlq_value_is_whole(void **state)
{
    struct fixture *f = *state;
    struct dw_record source = {
        .key = "k2",
        .key_len = 2,
        .value = "{oops",
        .value_len = 5,
        .topic = "req",
        .partition = 0,
        .offset = 7,
    };
    struct dw_dlq_record rec = {.source = &source, .code = DW_DLQ_INVALID_JSON, .message = "bad"};
    assert_int_equal(dw_producer_send_dlq(f->producer, &rec), DW_OK);
    wait_delivered(f, 1);
    rd_kafka_message_t *m = read_back(f, "req.dlq");
    assert_int_equal(m->len, 5);
    assert_memory_equal(m->payload, "{oops", 5);
    assert_null(header(m, "x-value-truncated"));
    rd_kafka_message_destroy(m);
}

/* The broker refuses a completion for good (as Event Hubs does with a
 * record over its limit): the record is dropped and counted, and the
 * request is reported done instead of being sent again forever. */
static void test_permanent_delivery_error_is_final(void **state)
{
    struct fixture *f = *state;
    /* Every produce request fails the same way while this test runs. */
    static rd_kafka_resp_err_t errors[1000];
    for (size_t i = 0; i < DW_ARRAY_LEN(errors); i++)
        errors[i] = RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
    rd_kafka_mock_push_request_errors_array(f->mc, API_PRODUCE, DW_ARRAY_LEN(errors), errors);
    assert_int_equal(
        dw_producer_send_completion(f->producer, "evt-1", "{\"eventId\":\"evt-1\"}", 0, 9), DW_OK);
    wait_delivered(f, 1);
    assert_int_equal(f->last_offset, 9);
    assert_true(metric(f, "dw_kafka_records_dropped_total") == 1);
    assert_true(metric(f, "dw_completions_produced_total") == 0);
    rd_kafka_mock_clear_request_errors(f->mc, API_PRODUCE);
}

/* A fatal error of the idempotent producer (here: the cluster refuses it
 * a producer id) is what /healthz reports; before it, none. */
static void test_fatal_error_is_reported(void **state)
{
    struct fixture *f = *state;
    char why[256] = "";
    assert_false(dw_producer_fatal(f->producer, why, sizeof(why)));
    dw_producer_destroy(f->producer, 0);
    f->producer = NULL;

    rd_kafka_mock_push_request_errors(f->mc, API_INIT_PRODUCER_ID, 1,
                                      RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED);
    char err[512];
    assert_int_equal(dw_producer_create(f->cfg, NULL, f->metrics, &f->producer, err, sizeof(err)),
                     DW_OK);
    int64_t until = dw_now_ms() + WAIT_MS;
    while (!dw_producer_fatal(f->producer, why, sizeof(why)) && dw_now_ms() < until)
        dw_producer_poll(f->producer, 50);
    assert_true(dw_producer_fatal(f->producer, why, sizeof(why)));
    assert_true(why[0] != '\0');
}

/* Completions come back as done offsets in the order they were acked; an
 * automatic re-drive's completion (partition -1) is delivered but hands
 * back nothing, since it has no offset to commit. */
static void test_acks_are_handed_back_once(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(dw_producer_send_completion(f->producer, "e1", "{}", 0, 3), DW_OK);
    assert_int_equal(dw_producer_send_completion(f->producer, "e2", "{}", -1, -1), DW_OK);
    assert_int_equal(dw_producer_send_completion(f->producer, "e3", "{}", 0, 4), DW_OK);
    int64_t until = dw_now_ms() + WAIT_MS;
    while (dw_producer_outstanding(f->producer) > 0 && dw_now_ms() < until)
        dw_producer_poll(f->producer, 50);
    assert_int_equal(dw_producer_outstanding(f->producer), 0);
    struct dw_ack acks[4];
    assert_int_equal(dw_producer_take_acks(f->producer, acks, DW_ARRAY_LEN(acks)), 2);
    assert_int_equal(acks[0].partition, 0);
    assert_int_equal(acks[0].offset, 3);
    assert_int_equal(acks[1].offset, 4);
    /* Taken means gone. */
    assert_int_equal(dw_producer_take_acks(f->producer, acks, DW_ARRAY_LEN(acks)), 0);
    assert_true(metric(f, "dw_completions_produced_total") == 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_oversized_dlq_value_is_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_dlq_value_is_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_delivery_error_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fatal_error_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acks_are_handed_back_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
