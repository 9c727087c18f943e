/*
 * The consumer's pause across rebalances, against librdkafka's mock cluster
 * (in this process) and a second group member made here.
 *
 * librdkafka 2.0.2 keeps a partition's application pause across a revoke.
 * A worker whose intake was full when its partitions were revoked, and had
 * room again by the time the group gave them back, used to keep them
 * paused for good: assigned, lag growing, nothing consumed and nothing
 * logged (seen in integration.test_healing's two-worker cases). Both
 * directions are checked: a partition assigned while intake has room is
 * fetched whatever its past; one assigned while intake is full is not,
 * until intake resumes. DW_TEST_LOG=1 shows the consumer's log.
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
#include "dw/consumer.h"
#include "dw/log.h"
#include "dw/metrics.h"
#include "dw/producer.h"
#include "kafka_config.h"

#define TOPIC      "req"
#define PARTITIONS 2
/* A group join in the mock cluster takes about 3 s; a rebalance a few. */
#define WAIT_MS 20000

struct fixture {
    rd_kafka_t *owner; /* owns the mock cluster */
    rd_kafka_mock_cluster_t *mc;
    struct dw_config *cfg;
    struct dw_metrics *metrics;
    struct dw_log *log;           /* DW_TEST_LOG set: the consumer's log on stderr */
    struct dw_producer *producer; /* the consumer takes its acks */
    struct dw_consumer *consumer;
    rd_kafka_t *other;  /* the second group member */
    rd_kafka_t *writer; /* produces the records */
};

static rd_kafka_t *plain_client(rd_kafka_type_t type, const char *brokers, bool member)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
    if (member) {
        rd_kafka_conf_set(conf, "group.id", "dw-test-consumer", errstr, sizeof(errstr));
        rd_kafka_conf_set(conf, "session.timeout.ms", "4000", errstr, sizeof(errstr));
        rd_kafka_conf_set(conf, "heartbeat.interval.ms", "100", errstr, sizeof(errstr));
        rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", errstr, sizeof(errstr));
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr));
        /* It commits nothing: if a slow rebalance hands it our partition
         * for a while (seen under ASan), our consumer still reads every
         * record of it from the start. */
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr));
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    assert_non_null(rk);
    return rk;
}

static int setup(void **state)
{
    struct fixture *f = dw_xcalloc(1, sizeof(*f));
    f->owner = plain_client(RD_KAFKA_PRODUCER, "", false);
    f->mc = rd_kafka_mock_cluster_new(f->owner, 1);
    assert_non_null(f->mc);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, TOPIC, PARTITIONS, 1), 0);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "done", 1, 1), 0);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, "req.dlq", 1, 1), 0);
    const char *brokers = rd_kafka_mock_cluster_bootstraps(f->mc);

    f->cfg = dw_test_kafka_config(
        "request_topic = \"" TOPIC "\"; completed_topic = \"done\"; dlq_topic = \"req.dlq\";\n"
        "group = \"dw-test-consumer\";\n"
        "consumer_properties = [ \"session.timeout.ms=4000\", \"heartbeat.interval.ms=100\",\n"
        "  \"fetch.wait.max.ms=10\", \"auto.offset.reset=earliest\", \"log_level=0\" ];\n"
        "producer_properties = [ \"log_level=0\" ];",
        brokers);
    char err[512];
    f->metrics = dw_metrics_create();
    if (getenv("DW_TEST_LOG"))
        f->log = dw_log_create(2, DW_LOG_DEBUG);
    assert_int_equal(dw_producer_create(f->cfg, NULL, f->metrics, &f->producer, err, sizeof(err)),
                     DW_OK);
    assert_int_equal(
        dw_consumer_create(f->cfg, f->log, f->metrics, f->producer, &f->consumer, err, sizeof(err)),
        DW_OK);
    f->writer = plain_client(RD_KAFKA_PRODUCER, brokers, false);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->other) {
        rd_kafka_consumer_close(f->other);
        rd_kafka_destroy(f->other);
    }
    dw_consumer_close(f->consumer);
    dw_consumer_destroy(f->consumer);
    dw_producer_destroy(f->producer, 2000);
    rd_kafka_destroy(f->writer);
    dw_metrics_destroy(f->metrics);
    dw_log_destroy(f->log);
    dw_config_destroy(f->cfg);
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->owner);
    free(f);
    return 0;
}

/* n records on every partition of the topic. */
static void produce(struct fixture *f, int n)
{
    for (int32_t p = 0; p < PARTITIONS; p++)
        for (int i = 0; i < n; i++)
            assert_int_equal(rd_kafka_producev(f->writer, RD_KAFKA_V_TOPIC(TOPIC),
                                               RD_KAFKA_V_PARTITION(p), RD_KAFKA_V_VALUE("{}", 2),
                                               RD_KAFKA_V_END),
                             RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_flush(f->writer, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* One round: our consumer polled (its records counted and dropped) and the
 * other member too, so that both take part in rebalances. */
static int poll_both(struct fixture *f)
{
    int got = 0;
    rd_kafka_message_t *m = dw_consumer_poll(f->consumer, 20);
    if (m) {
        got += m->err == RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_message_destroy(m);
    }
    if (f->other) {
        rd_kafka_message_t *o = rd_kafka_consumer_poll(f->other, 10);
        if (o)
            rd_kafka_message_destroy(o);
    }
    return got;
}

/* Polls until our consumer holds `want` partitions. Returns the records it
 * got meanwhile. When unpause_between is set, intake "gets room" at the
 * moment the revoke left it with none: the case that used to stick. */
static int await_assigned(struct fixture *f, int want, bool unpause_between)
{
    int got = 0;
    bool seen_none = false;
    int64_t until = dw_now_ms() + WAIT_MS;
    while (dw_now_ms() < until) {
        got += poll_both(f);
        int assigned = dw_consumer_assigned(f->consumer);
        if (assigned == 0 && !seen_none && unpause_between) {
            seen_none = true;
            dw_consumer_set_paused(f->consumer, false);
        }
        if (assigned == want && (seen_none || !unpause_between))
            return got;
    }
    fail_msg("never assigned %d partition(s) (now %d)", want, dw_consumer_assigned(f->consumer));
    return got;
}

/* Polls for ms, or until our consumer got `enough` records (0: the whole
 * time); returns how many it got. */
static int consume_until(struct fixture *f, int enough, int ms)
{
    int got = 0;
    int64_t until = dw_now_ms() + ms;
    while (dw_now_ms() < until && (enough == 0 || got < enough))
        got += poll_both(f);
    return got;
}

static int consume_for(struct fixture *f, int ms)
{
    return consume_until(f, 0, ms);
}

static void join_the_other_member(struct fixture *f)
{
    f->other = plain_client(RD_KAFKA_CONSUMER, rd_kafka_mock_cluster_bootstraps(f->mc), true);
    rd_kafka_poll_set_consumer(f->other);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, TOPIC, RD_KAFKA_PARTITION_UA);
    assert_int_equal(rd_kafka_subscribe(f->other, topics), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(topics);
}

/* Paused while assigned, revoked, then intake has room before the group
 * assigns again: what is assigned now must be fetched. */
static void a_pause_does_not_outlive_a_revoke(void **state)
{
    struct fixture *f = *state;
    dw_consumer_set_paused(f->consumer, true);
    await_assigned(f, PARTITIONS, false);
    /* Paused: nothing comes, though records wait. */
    produce(f, 5);
    assert_int_equal(consume_for(f, 1500), 0);

    join_the_other_member(f);
    int got = await_assigned(f, 1, true);
    assert_false(dw_consumer_paused(f->consumer));
    /* Whichever partition we hold now was paused at the revoke; it has 5
     * records, and 5 more come. Nobody commits any, so all 10 come to us
     * (more if a slow rebalance gave us both partitions for a while). */
    produce(f, 5);
    if (got < 10)
        got += consume_until(f, 10 - got, WAIT_MS);
    assert_true(got >= 10);
}

/* Intake full when the group assigns: nothing comes until it has room. */
static void a_partition_assigned_while_full_waits(void **state)
{
    struct fixture *f = *state;
    await_assigned(f, PARTITIONS, false);
    produce(f, 3);
    assert_int_equal(consume_until(f, 2 * 3, WAIT_MS), 2 * 3);

    dw_consumer_set_paused(f->consumer, true);
    join_the_other_member(f);
    await_assigned(f, 1, false);
    produce(f, 4);
    assert_int_equal(consume_for(f, 1500), 0);

    /* Then the partition's 3 earlier records again (taken before, never
     * done, so never committed: at least once) and the 4 new ones. */
    dw_consumer_set_paused(f->consumer, false);
    assert_true(consume_until(f, 3 + 4, WAIT_MS) >= 3 + 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_pause_does_not_outlive_a_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(a_partition_assigned_while_full_waits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
