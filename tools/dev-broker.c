/*
 * dev-broker: a Kafka broker for developers, tests and the benchmark, built
 * from librdkafka's mock cluster. It speaks the real Kafka protocol on
 * loopback TCP (consumer groups included) but keeps everything in memory,
 * has no TLS/SASL and no real transactions.
 *
 * It prints one line "bootstrap HOST:PORT[,...]" on stdout, creates the
 * three topics of CONTRACT section 1, and runs until SIGTERM/SIGINT.
 * Fault control for tests: SIGUSR1 takes every broker down, SIGUSR2 brings
 * them back up.
 *
 * Threads: main only (the mock cluster runs its own thread). The mock
 * cluster must be destroyed before the handle that owns it, or librdkafka
 * asserts.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t want_down;
static volatile sig_atomic_t want_up;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void on_down(int sig)
{
    (void)sig;
    want_down = 1;
}

static void on_up(int sig)
{
    (void)sig;
    want_up = 1;
}

static long parse_num(const char *flag, const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        fprintf(stderr, "dev-broker: %s: '%s' is not a number %ld..%ld\n", flag, s, min, max);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: dev-broker [--brokers N] [--partitions N] [--topic NAME]...\n"
                    "  default topics: distribution-requests distribution-completed "
                    "distribution-requests.dlq\n");
}

int main(int argc, char **argv)
{
    int brokers = 1, partitions = 6;
    const char *topics[16];
    int ntopics = 0;
    static const struct option opts[] = {{"brokers", required_argument, NULL, 'b'},
                                         {"partitions", required_argument, NULL, 'p'},
                                         {"topic", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "b:p:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            brokers = (int)parse_num("--brokers", optarg, 1, 9);
            break;
        case 'p':
            partitions = (int)parse_num("--partitions", optarg, 1, 1000);
            break;
        case 't':
            if (ntopics < 16)
                topics[ntopics++] = optarg;
            break;
        default:
            usage();
            return c == 'h' ? 0 : 2;
        }
    }
    if (ntopics == 0) {
        topics[ntopics++] = "distribution-requests";
        topics[ntopics++] = "distribution-completed";
        topics[ntopics++] = "distribution-requests.dlq";
    }

    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* A bare producer handle owns the mock cluster; it sends nothing. */
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "dev-broker: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "dev-broker: could not create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (int i = 0; i < ntopics; i++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, topics[i], partitions, 1);
        if (err) {
            fprintf(stderr, "dev-broker: topic %s: %s\n", topics[i], rd_kafka_err2str(err));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_down;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_up;
    sigaction(SIGUSR2, &sa, NULL);

    printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    while (!stop_requested) {
        if (want_down || want_up) {
            int down = want_down;
            want_down = want_up = 0;
            for (int b = 1; b <= brokers; b++) {
                if (down)
                    rd_kafka_mock_broker_set_down(mc, b);
                else
                    rd_kafka_mock_broker_set_up(mc, b);
            }
            fprintf(stderr, "dev-broker: brokers %s\n", down ? "down" : "up");
        }
        usleep(50 * 1000);
    }

    rd_kafka_mock_cluster_destroy(mc); /* before its owning handle */
    rd_kafka_destroy(rk);
    return 0;
}
