/*
 * Builds a librdkafka configuration from our settings: the pass-through
 * properties of the config file (kafka.properties, then the client's own
 * list) on top of the values the worker needs. Shared by the consumer and
 * the producer so they read settings the same way.
 */
#ifndef DW_KAFKA_CONF_H
#define DW_KAFKA_CONF_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "dw/common.h"
#include "dw/config.h"
#include "dw/log.h"

struct dw_kafka_setting {
    const char *name;
    const char *value;
};

/*
 * A new rd_kafka_conf_t: first `base` (n_base pairs; the worker's own
 * defaults), then cfg->kafka_props, then `extra` (consumer or producer
 * props), then `forced` (values correctness depends on; the user cannot
 * override them). On error returns NULL with the property named in errbuf.
 */
rd_kafka_conf_t *dw_kafka_conf_new(const struct dw_config *cfg, const struct dw_kafka_setting *base,
                                   size_t n_base, const struct dw_kafka_prop *extra, size_t n_extra,
                                   const struct dw_kafka_setting *forced, size_t n_forced,
                                   char *errbuf, size_t errlen);

/*
 * Checks a configuration the way librdkafka checks it at rd_kafka_new (for
 * --check-config), without contacting any broker. Takes ownership of conf.
 * On error returns DW_ERR_CONFIG with librdkafka's reason, naming client
 * ("consumer", "producer"), in errbuf.
 */
enum dw_err dw_kafka_conf_check(rd_kafka_conf_t *conf, rd_kafka_type_t type, const char *client,
                                char *errbuf, size_t errlen) DW_MUST_CHECK;

/* Writes one librdkafka log line (syslog level: <= 3 error, <= 5 warn, else
 * debug) to log, naming the client ("consumer", "producer"). Called from a
 * client's log callback, on any librdkafka thread. */
void dw_kafka_log(struct dw_log *log, const char *client, int level, const char *fac,
                  const char *buf);

#endif /* DW_KAFKA_CONF_H */
