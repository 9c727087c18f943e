/*
 * librdkafka configuration assembly: our defaults, then the user's
 * pass-through properties, then the settings correctness depends on.
 * Pure apart from librdkafka's conf object; any thread.
 */
#include "dw/kafka_conf.h"

static bool set(rd_kafka_conf_t *conf, const char *name, const char *value, const char *origin,
                char *errbuf, size_t errlen)
{
    char why[512];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        dw_snprintf(errbuf, errlen, "%s \"%s=%s\": %s", origin, name, value, why);
        return false;
    }
    return true;
}

rd_kafka_conf_t *dw_kafka_conf_new(const struct dw_config *cfg, const struct dw_kafka_setting *base,
                                   size_t n_base, const struct dw_kafka_prop *extra, size_t n_extra,
                                   const struct dw_kafka_setting *forced, size_t n_forced,
                                   char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!set(conf, "bootstrap.servers", cfg->kafka_brokers, "kafka.brokers", errbuf, errlen))
        goto fail;
    for (size_t i = 0; i < n_base; i++)
        if (!set(conf, base[i].name, base[i].value, "built-in default", errbuf, errlen))
            goto fail;
    for (size_t i = 0; i < cfg->kafka_prop_count; i++)
        if (!set(conf, cfg->kafka_props[i].name, cfg->kafka_props[i].value, "kafka.properties",
                 errbuf, errlen))
            goto fail;
    for (size_t i = 0; i < n_extra; i++)
        if (!set(conf, extra[i].name, extra[i].value, "kafka client properties", errbuf, errlen))
            goto fail;
    for (size_t i = 0; i < n_forced; i++)
        if (!set(conf, forced[i].name, forced[i].value, "required setting", errbuf, errlen))
            goto fail;
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

enum dw_err dw_kafka_conf_check(rd_kafka_conf_t *conf, rd_kafka_type_t type, const char *client,
                                char *errbuf, size_t errlen)
{
    char why[512];
    /* No brokers: the client validates everything it would at start-up
     * (SASL and TLS settings, CA files, conflicting properties) and
     * connects nowhere, so a check needs no network and ends at once. */
    if (rd_kafka_conf_set(conf, "bootstrap.servers", "", why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        dw_snprintf(errbuf, errlen, "kafka %s: %s", client, why);
        return DW_ERR_CONFIG;
    }
    /* Its log lines would only say "no bootstrap.servers", or that a
     * property of kafka.properties is meant for the other client. */
    rd_kafka_conf_set_log_cb(conf, NULL);
    rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        dw_snprintf(errbuf, errlen, "kafka %s: %s", client, why);
        return DW_ERR_CONFIG;
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return DW_OK;
}

void dw_kafka_log(struct dw_log *log, const char *client, int level, const char *fac,
                  const char *buf)
{
    enum dw_log_level ours = level <= 3 ? DW_LOG_ERROR : level <= 5 ? DW_LOG_WARN : DW_LOG_DEBUG;
    dw_log_write(log, ours, DW_LOG_NOCTX, "librdkafka %s %s: %s", client, fac, buf);
}
