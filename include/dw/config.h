/*
 * Configuration: the libconfig file, then the environment of CONTRACT
 * section 5 on top, validated once at start-up into an immutable struct.
 * The struct is open because every module reads it; nobody writes it after
 * dw_config_create returns. Keys, types, defaults and ranges live in one
 * table in config.c; conf/distribution-worker.conf documents each.
 */
#ifndef DW_CONFIG_H
#define DW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "dw/breaker.h"
#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/limit.h"
#include "dw/log.h"
#include "dw/redrive.h"

/* A librdkafka property passed through unchanged ("fetch.wait.max.ms"="50"). */
struct dw_kafka_prop {
    char *name;
    char *value;
};

/* channels.<NAME>.http_version, in the order of its names in config.c. */
enum dw_http_version {
    DW_HTTP_AUTO, /* "auto": HTTP/2 where TLS (ALPN) offers it, else HTTP/1.1 */
    DW_HTTP_1_1,  /* "1.1": HTTP/1.1 only */
    DW_HTTP_H2C,  /* "h2c": HTTP/2 with prior knowledge over plain http:// */
};

struct dw_channel_config {
    char *url;   /* base URL, no trailing slash; required */
    char *token; /* bearer token; may be "" */
    /* PEM bundle the server's certificate is verified against instead of
     * the system's CA store; NULL or "": the system's. Checked readable and
     * holding a certificate at load. */
    char *ca_file;
    enum dw_http_version http_version;
    int connect_timeout_ms;
    int timeout_ms;   /* one whole HTTP call */
    int max_attempts; /* first try included, >= 1 */
    int initial_backoff_ms;
    double multiplier; /* >= 1.0 */
    int max_backoff_ms;
    int max_retry_after_ms; /* a longer Retry-After gives up as RATE_LIMITED */
    int max_concurrent;     /* calls in flight to this channel: the hard cap (bulkhead) */

    /* Flow control (docs/resilience.md). limit.max is unused: the ceiling is
     * max_concurrent. */
    struct dw_limit_config limit; /* limit, limit_* keys */
    int limit_for_period;         /* rate limiter: calls per period; 0: off */
    int limit_refresh_period_ms;  /* rate limiter: the period */
    int max_connects_per_second;  /* new connections opened per second; 0: unbounded */

    /* The rest of the guards (docs/resilience.md). */
    int bulkhead_max_wait_ms;          /* a call finding the bulkhead full waits this long */
    int budget_max_tokens;             /* retry budget (gRPC retry throttling); 0: none */
    double budget_token_ratio;         /* tokens a success gives back */
    int deadline_ms;                   /* one channel job, every attempt and wait; 0: none */
    struct dw_breaker_options breaker; /* breaker_* keys */
};

struct dw_config {
    /* kafka */
    char *kafka_brokers;
    char *kafka_group;
    char *request_topic;
    char *completed_topic;
    char *dlq_topic;
    struct dw_kafka_prop *kafka_props; /* both clients */
    size_t kafka_prop_count;
    struct dw_kafka_prop *consumer_props; /* consumer only */
    size_t consumer_prop_count;
    struct dw_kafka_prop *producer_props; /* producer only */
    size_t producer_prop_count;
    /* SASL credentials (kafka.sasl_username / sasl_password, normally from
     * DIST_KAFKA_SASL_*); NULL when unset. When set they are also appended
     * to kafka_props as sasl.username / sasl.password, so they win over the
     * same properties in the file. Secret: never log them. */
    char *kafka_sasl_username;
    char *kafka_sasl_password;
    /* How often finished offsets are committed (ms); at least 250 on Event
     * Hubs, which throttles commits at 4 per second per partition. */
    int commit_interval_ms;

    /* postgres */
    char *pg_dsn;
    /* postgres.sslmode / sslrootcert; NULL when unset. When set they are
     * also appended to pg_dsn (libpq takes the last value of a parameter),
     * so pg_dsn is all a client needs. pg_dsn may hold a password: never
     * log it. */
    char *pg_sslmode;
    char *pg_sslrootcert;

    /* http */
    int http_port; /* 0 turns the listener off */
    char *http_bind;
    int http_management_port;            /* 0: none; else probes and metrics also here */
    int http_max_connections;            /* per port */
    int http_max_connections_per_client; /* per port and client address */
    int http_idle_timeout_s;

    /* log */
    enum dw_log_level log_level;

    /* worker */
    int pool_threads;           /* HTTP engine threads, each driving many transfers */
    int max_in_flight_requests; /* partitions pause above this */
    int max_in_flight_bytes;    /* or above this many bytes of requests (dw_request.bytes) */
    int max_in_flight_calls;    /* channel calls the engine runs at once, all channels */
    int drain_timeout_ms;
    int store_batch_max; /* status writes per database round trip */
    int result_hold_ms;  /* how long a request's channel results may wait for the rest */
    /* Connections one engine thread keeps to one host:port; 0: no cap
     * (src/transport.c, dw_transport_multi_setup). */
    int max_host_connections;

    /* redrive (CONTRACT 2.4) */
    char *redrive_delays_ms;          /* as set; parsed into redrive */
    int redrive_max_age_ms;           /* copied into redrive */
    int redrive_mode;                 /* enum dw_redrive_mode */
    int redrive_lease_ms;             /* how long a claim keeps other workers off an event */
    struct dw_redrive_policy redrive; /* tiers = 0: off */

    /* channels.allow_insecure_http: http:// channel URLs are refused at
     * load unless this is true (development and tests only). */
    bool allow_insecure_http;
    struct dw_channel_config channels[DW_CHANNEL_COUNT];
};

/* redrive.mode: "paused" keeps scheduling but runs nothing. */
enum dw_redrive_mode { DW_REDRIVE_ACTIVE, DW_REDRIVE_PAUSED };

/*
 * Loads path (NULL: built-in defaults only, which still need channel URLs
 * from the environment) and applies the environment from envp (NULL-ended
 * "NAME=value" strings, normally `environ`; tests pass their own).
 * On error returns DW_ERR_CONFIG and writes into errbuf a message that names
 * the setting: the environment variable when the value came from one, else
 * the setting's path in the file with its line ("channels.KAKAO.url"
 * (line 42): missing). On DW_OK the caller owns *out; free with
 * dw_config_destroy.
 */
enum dw_err dw_config_create(const char *path, char *const *envp, struct dw_config **out,
                             char *errbuf, size_t errlen) DW_MUST_CHECK;

void dw_config_destroy(struct dw_config *cfg);

#endif /* DW_CONFIG_H */
