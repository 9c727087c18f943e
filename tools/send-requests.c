/*
 * send-requests: produces distribution requests to Kafka, one per input
 * line (a JSON document), keyed by its eventId. Used by scripts/run for the
 * sample requests and handy by hand:
 *
 *   send-requests -b 127.0.0.1:9092 [-t distribution-requests] < requests.jsonl
 *
 * Each line is sent as it is (even if broken, so the DLQ can be shown);
 * the key is the eventId when the line has one. Waits until the broker has
 * acknowledged every record; exits 1 if any failed.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <librdkafka/rdkafka.h>

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    int *failed = opaque;
    if (m->err) {
        fprintf(stderr, "send-requests: delivery failed: %s\n", rd_kafka_err2str(m->err));
        (*failed)++;
    }
}

int main(int argc, char **argv)
{
    const char *brokers = "localhost:9092", *topic = "distribution-requests";
    int c;
    while ((c = getopt(argc, argv, "b:t:h")) != -1) {
        switch (c) {
        case 'b':
            brokers = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        default:
            fprintf(stderr, "usage: send-requests [-b BROKERS] [-t TOPIC] < lines.jsonl\n");
            return c == 'h' ? 0 : 2;
        }
    }
    char errstr[512];
    int failed = 0, sent = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr))) {
        fprintf(stderr, "send-requests: %s\n", errstr);
        return 2;
    }
    rd_kafka_conf_set_opaque(conf, &failed);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "send-requests: %s\n", errstr);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        const char *key = NULL;
        struct json_object *doc = json_tokener_parse(line), *id;
        if (doc && json_object_object_get_ex(doc, "eventId", &id) &&
            json_object_is_type(id, json_type_string))
            key = json_object_get_string(id);
        rd_kafka_resp_err_t err =
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY | RD_KAFKA_MSG_F_BLOCK),
                              RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
                              RD_KAFKA_V_VALUE(line, (size_t)len), RD_KAFKA_V_END);
        json_object_put(doc);
        if (err) {
            fprintf(stderr, "send-requests: %s\n", rd_kafka_err2str(err));
            failed++;
            continue;
        }
        sent++;
        rd_kafka_poll(rk, 0);
    }
    free(line);
    rd_kafka_flush(rk, 30000);
    if (rd_kafka_outq_len(rk) > 0) {
        fprintf(stderr, "send-requests: %d record(s) not acknowledged\n", rd_kafka_outq_len(rk));
        failed++;
    }
    rd_kafka_destroy(rk);
    fprintf(stderr, "send-requests: %d sent, %d failed\n", sent, failed);
    return failed ? 1 : 0;
}
