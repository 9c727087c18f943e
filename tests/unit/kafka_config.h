/*
 * Test support for the unit tests that run against librdkafka's mock
 * cluster in their own process (test_producer, test_consumer): a worker
 * configuration whose kafka group is the test's, with every channel's URL
 * and token from the environment as dw_config_create requires, and the
 * brokers the mock cluster's. Include after <cmocka.h>.
 */
#ifndef DW_TEST_KAFKA_CONFIG_H
#define DW_TEST_KAFKA_CONFIG_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel_env.h"
#include "dw/common.h"
#include "dw/config.h"

/* kafka_body: what goes between "kafka = {" and "};". Fails the test on a
 * configuration error. */
static inline struct dw_config *dw_test_kafka_config(const char *kafka_body, const char *brokers)
{
    char path[] = "/tmp/dw-test-kafka-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char text[2048];
    int len = snprintf(text, sizeof(text), "kafka = { %s };\n", kafka_body);
    assert_true(len > 0 && (size_t)len < sizeof(text));
    assert_int_equal(write(fd, text, (size_t)len), (ssize_t)len);
    close(fd);
    char brokers_env[256];
    dw_snprintf(brokers_env, sizeof(brokers_env), "DIST_KAFKA_BROKERS=%s", brokers);
    char *const env[] = {
        brokers_env,
        DW_TEST_CHANNEL_URLS,
        DW_TEST_CHANNEL_TOKENS,
        NULL,
    };
    struct dw_config *cfg = NULL;
    char err[512];
    enum dw_err rc = dw_config_create(path, env, &cfg, err, sizeof(err));
    unlink(path);
    if (rc)
        fail_msg("config: %s", err);
    return cfg;
}

#endif /* DW_TEST_KAFKA_CONFIG_H */
