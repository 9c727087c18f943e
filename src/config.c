/*
 * Configuration: built-in defaults, then the libconfig file, then the
 * environment (CONTRACT section 5), validated into one struct dw_config.
 *
 * DESIGN
 * Two tables drive everything (redis static_configs[], pgbouncer
 * bouncer_params[]): config_keys[] for the top-level groups and
 * channel_keys[] for one channel. A row says where a value lands (offsetof),
 * its type, default, range, extra checks and environment variable. Loading,
 * validation, defaults, the list of known names in error messages and
 * dw_config_destroy all walk these tables; nothing about one key is written
 * anywhere else. Channel keys apply first from channels.defaults, then from
 * channels.<NAME>, then from DIST_CHANNEL_<NAME>_<SUFFIX>.
 *
 * Every stored value remembers where it came from (struct origin), so an
 * error names the environment variable when a variable set it, else the
 * setting's path with its line, else the bare path for a built-in default.
 *
 * Runs once on the main thread at start-up; the result is never written
 * again. Every error path frees what it took (one `out:` label).
 */
#include "dw/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libconfig.h>
#include <libpq-fe.h>

#include "dw/store.h"

enum key_type {
    KEY_STRING,
    KEY_INT,
    KEY_DOUBLE,
    KEY_LEVEL, /* a log level name, stored as enum dw_log_level */
    KEY_PROPS, /* a list of "name=value" strings, stored as dw_kafka_prop[] */
    /* One of the names in choices (any case), stored as its index (an enum). */
    KEY_CHOICE,
    KEY_BOOL, /* true or false; from the environment "true" or "false" (any case) */
};

/* Extra checks on a value, beyond its type and range. */
enum {
    KEY_NONEMPTY = 1u << 0,    /* "" is refused */
    KEY_URL = 1u << 1,         /* http:// or https://; trailing slashes removed */
    KEY_ADDRESS = 1u << 2,     /* an IPv4 or IPv6 literal */
    KEY_TOPIC = 1u << 3,       /* a legal Kafka topic name */
    KEY_PER_CHANNEL = 1u << 4, /* not allowed in channels.defaults */
    KEY_SSLMODE = 1u << 5,     /* one of libpq's sslmode values */
    KEY_DSN = 1u << 6,         /* a connection string libpq can parse */
    KEY_MS_LIST = 1u << 7,     /* re-drive delays: "60000,300000" (dw_redrive_parse_delays) */
};

struct key {
    const char *group; /* top-level group; NULL in channel_keys[] */
    const char *name;
    enum key_type type;
    unsigned flags;
    size_t offset;       /* of the field in struct dw_config or dw_channel_config */
    size_t count_offset; /* KEY_PROPS: of the size_t element count */
    const char *def_str; /* KEY_STRING, KEY_LEVEL; NULL: no default (required) */
    double def_num;      /* KEY_INT, KEY_DOUBLE */
    double min, max;     /* KEY_INT, KEY_DOUBLE; inclusive */
    /* The environment variable; in channel_keys[] the suffix after
     * DIST_CHANNEL_<NAME>_. NULL: none. */
    const char *env;
    const char *noun; /* KEY_INT from env: "a port number"; NULL: "an integer in" */
    /* KEY_CHOICE: the names, in enum order, NULL-ended. */
    const char *const *choices;
};

#define CFG_STR(grp, key, field, flg, def, envname)                                                \
    {                                                                                              \
        .group = grp, .name = key, .type = KEY_STRING, .flags = flg,                               \
        .offset = offsetof(struct dw_config, field), .def_str = def, .env = envname                \
    }
#define CFG_INT(grp, key, field, def, lo, hi, envname, what)                                       \
    {                                                                                              \
        .group = grp, .name = key, .type = KEY_INT, .offset = offsetof(struct dw_config, field),   \
        .def_num = def, .min = lo, .max = hi, .env = envname, .noun = what                         \
    }
#define CFG_LEVEL(grp, key, field, def, envname)                                                   \
    {                                                                                              \
        .group = grp, .name = key, .type = KEY_LEVEL, .offset = offsetof(struct dw_config, field), \
        .def_str = def, .env = envname                                                             \
    }
#define CFG_CHOICE(grp, key, field, def, names, envname)                                           \
    {                                                                                              \
        .group = grp, .name = key, .type = KEY_CHOICE,                                             \
        .offset = offsetof(struct dw_config, field), .def_str = def, .choices = names,             \
        .env = envname                                                                             \
    }
#define CFG_BOOL(grp, key, field, envname)                                                         \
    {                                                                                              \
        .group = grp, .name = key, .type = KEY_BOOL, .offset = offsetof(struct dw_config, field),  \
        .env = envname                                                                             \
    }
#define CFG_PROPS(grp, key, field, count)                                                          \
    {                                                                                              \
        .group = grp, .name = key, .type = KEY_PROPS, .offset = offsetof(struct dw_config, field), \
        .count_offset = offsetof(struct dw_config, count)                                          \
    }

/* enum dw_redrive_mode, in its order. */
static const char *const redrive_modes[] = {"active", "paused", NULL};

/* The top-level settings, in the order of conf/distribution-worker.conf. */
static const struct key config_keys[] = {
    CFG_STR("kafka", "brokers", kafka_brokers, KEY_NONEMPTY, "localhost:9092",
            "DIST_KAFKA_BROKERS"),
    CFG_STR("kafka", "group", kafka_group, KEY_NONEMPTY, "distribution-worker", "DIST_KAFKA_GROUP"),
    CFG_STR("kafka", "request_topic", request_topic, KEY_NONEMPTY | KEY_TOPIC,
            "distribution-requests", "DIST_REQUEST_TOPIC"),
    CFG_STR("kafka", "completed_topic", completed_topic, KEY_NONEMPTY | KEY_TOPIC,
            "distribution-completed", "DIST_COMPLETED_TOPIC"),
    CFG_STR("kafka", "dlq_topic", dlq_topic, KEY_NONEMPTY | KEY_TOPIC, "distribution-requests.dlq",
            "DIST_DLQ_TOPIC"),
    CFG_PROPS("kafka", "properties", kafka_props, kafka_prop_count),
    CFG_PROPS("kafka", "consumer_properties", consumer_props, consumer_prop_count),
    CFG_PROPS("kafka", "producer_properties", producer_props, producer_prop_count),
    CFG_STR("kafka", "sasl_username", kafka_sasl_username, 0, NULL, "DIST_KAFKA_SASL_USERNAME"),
    CFG_STR("kafka", "sasl_password", kafka_sasl_password, 0, NULL, "DIST_KAFKA_SASL_PASSWORD"),
    /* Event Hubs throttles commits at 4 per second per partition: at least
     * 250 there (check_final). */
    CFG_INT("kafka", "commit_interval_ms", commit_interval_ms, 1000, 10, 60000,
            "DIST_KAFKA_COMMIT_INTERVAL_MS", NULL),
    CFG_STR("postgres", "dsn", pg_dsn, KEY_NONEMPTY | KEY_DSN,
            "postgresql://localhost/distribution", "DIST_PG_DSN"),
    CFG_STR("postgres", "sslmode", pg_sslmode, KEY_SSLMODE, NULL, "DIST_PG_SSLMODE"),
    CFG_STR("postgres", "sslrootcert", pg_sslrootcert, 0, NULL, "DIST_PG_SSLROOTCERT"),
    CFG_INT("http", "port", http_port, 8080, 0, 65535, "DIST_HTTP_PORT", "a port number"),
    CFG_STR("http", "bind_address", http_bind, KEY_NONEMPTY | KEY_ADDRESS, "0.0.0.0", NULL),
    CFG_INT("http", "management_port", http_management_port, 0, 0, 65535,
            "DIST_HTTP_MANAGEMENT_PORT", "a port number"),
    CFG_INT("http", "max_connections", http_max_connections, 256, 1, 10000, NULL, NULL),
    CFG_INT("http", "max_connections_per_client", http_max_connections_per_client, 16, 1, 10000,
            NULL, NULL),
    CFG_INT("http", "idle_timeout_s", http_idle_timeout_s, 10, 1, 3600, NULL, NULL),
    CFG_LEVEL("log", "level", log_level, "info", "DIST_LOG_LEVEL"),
    CFG_INT("worker", "threads", pool_threads, 2, 1, 64, NULL, NULL),
    CFG_INT("worker", "max_in_flight_requests", max_in_flight_requests, 2000, 1, 1000000, NULL,
            NULL),
    CFG_INT("worker", "max_in_flight_bytes", max_in_flight_bytes, 268435456, 1048576, 2147483647,
            NULL, NULL),
    CFG_INT("worker", "max_in_flight_calls", max_in_flight_calls, 4000, 1, 1000000, NULL, NULL),
    CFG_INT("worker", "drain_timeout_ms", drain_timeout_ms, 30000, 0, 3600000, NULL, NULL),
    CFG_INT("worker", "store_batch_max", store_batch_max, 256, 1, 10000, NULL, NULL),
    CFG_INT("worker", "max_host_connections", max_host_connections, 0, 0, 100000,
            "DIST_WORKER_MAX_HOST_CONNECTIONS", NULL),
    CFG_INT("worker", "result_hold_ms", result_hold_ms, 1000, 0, 60000, NULL, NULL),
    /* Automatic re-drive (CONTRACT 2.4, docs/operations.md). */
    CFG_STR("redrive", "delays_ms", redrive_delays_ms, KEY_MS_LIST,
            "60000,300000,1800000,7200000,21600000", "DIST_REDRIVE_DELAYS_MS"),
    CFG_INT("redrive", "max_age_ms", redrive_max_age_ms, 86400000, 1, 2147483647,
            "DIST_REDRIVE_MAX_AGE_MS", NULL),
    CFG_CHOICE("redrive", "mode", redrive_mode, "active", redrive_modes, "DIST_REDRIVE_MODE"),
    CFG_INT("redrive", "lease_ms", redrive_lease_ms, 600000, 1000, 86400000, NULL, NULL),
    /* The one setting of the channels group itself, beside its groups. */
    CFG_BOOL("channels", "allow_insecure_http", allow_insecure_http,
             "DIST_CHANNELS_ALLOW_INSECURE_HTTP"),
};

#define CH_STR(key, field, flg, def, suffix)                                                       \
    {                                                                                              \
        .name = key, .type = KEY_STRING, .flags = flg,                                             \
        .offset = offsetof(struct dw_channel_config, field), .def_str = def, .env = suffix         \
    }
#define CH_INT(key, field, def, lo, hi)                                                            \
    {                                                                                              \
        .name = key, .type = KEY_INT, .offset = offsetof(struct dw_channel_config, field),         \
        .def_num = def, .min = lo, .max = hi                                                       \
    }
#define CH_DOUBLE(key, field, def, lo, hi)                                                         \
    {                                                                                              \
        .name = key, .type = KEY_DOUBLE, .offset = offsetof(struct dw_channel_config, field),      \
        .def_num = def, .min = lo, .max = hi                                                       \
    }

#define CH_CHOICE(key, field, def, names, suffix)                                                  \
    {                                                                                              \
        .name = key, .type = KEY_CHOICE, .offset = offsetof(struct dw_channel_config, field),      \
        .def_str = def, .choices = names, .env = suffix                                            \
    }

/* enum dw_breaker_mode and enum dw_breaker_window, in their order. */
static const char *const breaker_modes[] = {"normal", "forced_open", "disabled", NULL};
static const char *const window_types[] = {"count", "time", NULL};
/* enum dw_limit_mode, in its order. */
static const char *const limit_modes[] = {"fixed", "adaptive", NULL};
/* enum dw_http_version, in its order. */
static const char *const http_versions[] = {"auto", "1.1", "h2c", NULL};

/* The settings of one channel: channels.defaults, then channels.<NAME>.
 * Each can also be set for one channel from DIST_CHANNEL_<NAME>_<SUFFIX>,
 * where SUFFIX is .env or else the key's name in upper case. */
static const struct key channel_keys[] = {
    CH_STR("url", url, KEY_NONEMPTY | KEY_URL | KEY_PER_CHANNEL, NULL, "URL"),
    CH_STR("token", token, KEY_PER_CHANNEL, "", "TOKEN"),
    /* Transport (src/transport.c): the CA bundle and the HTTP version. */
    CH_STR("ca_file", ca_file, 0, NULL, "CA_FILE"),
    CH_CHOICE("http_version", http_version, "auto", http_versions, NULL),
    CH_INT("connect_timeout_ms", connect_timeout_ms, 2000, 1, 3600000),
    CH_INT("timeout_ms", timeout_ms, 10000, 1, 3600000),
    CH_INT("max_attempts", max_attempts, 3, 1, 20),
    CH_INT("initial_backoff_ms", initial_backoff_ms, 200, 0, 3600000),
    CH_DOUBLE("multiplier", multiplier, 2.0, 1.0, 10.0),
    CH_INT("max_backoff_ms", max_backoff_ms, 5000, 0, 3600000),
    CH_INT("max_retry_after_ms", max_retry_after_ms, 30000, 0, 3600000),
    CH_INT("max_concurrent", max_concurrent, 500, 1, 100000),
    /* Flow control (docs/resilience.md): the adaptive concurrency limit,
     * the rate limiter and the pace of new connections. */
    CH_CHOICE("limit", limit.mode, "adaptive", limit_modes, NULL),
    CH_INT("limit_initial", limit.initial, 8, 1, 100000),
    CH_INT("limit_min", limit.min, 1, 1, 100000),
    CH_DOUBLE("limit_tolerance", limit.tolerance, 2.0, 1.1, 100.0),
    CH_DOUBLE("limit_backoff", limit.backoff, 0.9, 0.1, 0.99),
    CH_INT("limit_for_period", limit_for_period, 0, 0, 1000000),
    CH_INT("limit_refresh_period_ms", limit_refresh_period_ms, 1000, 1, 86400000),
    CH_INT("max_connects_per_second", max_connects_per_second, 2000, 0, 1000000),
    /* Resilience (docs/resilience.md): bulkhead wait, retry budget, deadline, breaker. */
    CH_INT("bulkhead_max_wait_ms", bulkhead_max_wait_ms, 60000, 0, 3600000),
    CH_INT("budget_max_tokens", budget_max_tokens, 100, 0, 1000000),
    CH_DOUBLE("budget_token_ratio", budget_token_ratio, 0.1, 0.001, 100.0),
    CH_INT("deadline_ms", deadline_ms, 60000, 0, 86400000),
    CH_CHOICE("breaker_state", breaker.mode, "normal", breaker_modes, "BREAKER"),
    CH_CHOICE("breaker_window_type", breaker.window_type, "count", window_types, NULL),
    CH_INT("breaker_window_size", breaker.window_size, 100, 1, 10000),
    CH_INT("breaker_window_seconds", breaker.window_seconds, 60, 1, 3600),
    CH_INT("breaker_minimum_calls", breaker.minimum_calls, 20, 1, 10000),
    CH_DOUBLE("breaker_failure_rate_threshold", breaker.failure_rate_threshold, 50.0, 1.0, 100.0),
    CH_DOUBLE("breaker_slow_call_rate_threshold", breaker.slow_call_rate_threshold, 100.0, 1.0,
              100.0),
    CH_INT("breaker_slow_call_duration_ms", breaker.slow_call_duration_ms, 5000, 1, 3600000),
    CH_INT("breaker_open_wait_ms", breaker.open_wait_ms, 30000, 1, 3600000),
    CH_INT("breaker_half_open_calls", breaker.half_open_calls, 5, 1, 1000),
    CH_INT("breaker_half_open_max_wait_ms", breaker.half_open_max_wait_ms, 60000, 0, 3600000),
};

#define CONFIG_KEY_COUNT  DW_ARRAY_LEN(config_keys)
#define CHANNEL_KEY_COUNT DW_ARRAY_LEN(channel_keys)

/* librdkafka properties that have a setting of their own: one place only. */
static const struct {
    const char *property;
    const char *instead;
} owned_props[] = {
    {"bootstrap.servers", "kafka.brokers (DIST_KAFKA_BROKERS)"},
    {"metadata.broker.list", "kafka.brokers (DIST_KAFKA_BROKERS)"},
    {"group.id", "kafka.group (DIST_KAFKA_GROUP)"},
};

/* Where a value came from, for error messages. */
struct origin {
    char path[96];  /* "worker.threads", "channels.defaults.timeout_ms" */
    char env[64];   /* the variable that set it; "" when none did */
    char file[128]; /* an @include'd file other than the main one, or "" */
    unsigned line;  /* 0: not from the file */
};

struct loader {
    struct dw_config *cfg;
    const char *path;
    char *errbuf;
    size_t errlen;
    struct origin global[CONFIG_KEY_COUNT];
    struct origin channel[DW_CHANNEL_COUNT][CHANNEL_KEY_COUNT];
};

static void *field_of(void *base, const struct key *key)
{
    return (char *)base + key->offset;
}

static void describe(const struct origin *o, char *buf, size_t len)
{
    if (o->env[0])
        dw_snprintf(buf, len, "%s", o->env);
    else if (o->line && o->file[0])
        dw_snprintf(buf, len, "%s (line %u of %s)", o->path, o->line, o->file);
    else if (o->line)
        dw_snprintf(buf, len, "%s (line %u)", o->path, o->line);
    else
        dw_snprintf(buf, len, "%s", o->path);
}

/* Writes "<where the value came from>: <message>" and returns DW_ERR_CONFIG. */
static enum dw_err fail(struct loader *ld, const struct origin *o, const char *fmt, ...)
    DW_PRINTF(3, 4);
static enum dw_err fail(struct loader *ld, const struct origin *o, const char *fmt, ...)
{
    char who[256];
    char what[1024];
    va_list ap;

    describe(o, who, sizeof(who));
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    /* Errors quote values (a kafka.properties entry, a URL), and they are
     * printed where the log's own scrubbing does not run. */
    char clean[sizeof(what)];
    dw_log_redact(NULL, what, clean, sizeof(clean));
    if (ld->errbuf && ld->errlen)
        dw_snprintf(ld->errbuf, ld->errlen, "%s: %s", who, clean);
    return DW_ERR_CONFIG;
}

/* The origin of a setting read from the file at path. */
static void origin_from_setting(const struct loader *ld, const config_setting_t *setting,
                                const char *path, struct origin *o)
{
    const char *file = config_setting_source_file(setting);

    memset(o, 0, sizeof(*o));
    dw_strlcpy(o->path, path, sizeof(o->path));
    o->line = config_setting_source_line(setting);
    if (file && ld->path && strcmp(file, ld->path) != 0)
        dw_strlcpy(o->file, file, sizeof(o->file));
}

static void origin_from_env(const char *path, const char *env, struct origin *o)
{
    memset(o, 0, sizeof(*o));
    dw_strlcpy(o->path, path, sizeof(o->path));
    dw_strlcpy(o->env, env, sizeof(o->env));
}

/* The value of NAME in a NULL-ended "NAME=value" array, like getenv. */
static const char *env_lookup(char *const *envp, const char *name)
{
    size_t n = strlen(name);

    for (; envp && *envp; envp++) {
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    }
    return NULL;
}

static void free_props(struct dw_kafka_prop *props, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(props[i].name);
        free(props[i].value);
    }
    free(props);
}

/* Frees whatever a key holds in base and leaves it empty. */
static void clear_value(const struct key *key, void *base)
{
    if (key->type == KEY_STRING) {
        char **str = field_of(base, key);
        free(*str);
        *str = NULL;
    } else if (key->type == KEY_PROPS) {
        struct dw_kafka_prop **props = field_of(base, key);
        size_t *count = (size_t *)((char *)base + key->count_offset);
        free_props(*props, *count);
        *props = NULL;
        *count = 0;
    }
}

static bool is_topic_name(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (const char *p = s; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    }
    return true;
}

/* http:// or https://, a host, no white space or control characters. */
static bool is_http_url(const char *s)
{
    size_t scheme;

    if (strncasecmp(s, "http://", 7) == 0)
        scheme = 7;
    else if (strncasecmp(s, "https://", 8) == 0)
        scheme = 8;
    else
        return false;
    if (s[scheme] == '\0' || s[scheme] == '/')
        return false;
    for (const char *p = s; *p; p++) {
        if (isspace((unsigned char)*p))
            return false;
    }
    return true;
}

static const char *const sslmodes[] = {"disable", "allow",     "prefer",
                                       "require", "verify-ca", "verify-full"};

static bool is_sslmode(const char *s)
{
    for (size_t i = 0; i < DW_ARRAY_LEN(sslmodes); i++) {
        if (strcmp(s, sslmodes[i]) == 0)
            return true;
    }
    return false;
}

static bool is_ip_address(const char *s)
{
    unsigned char addr[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

static bool has_control_char(const char *s)
{
    for (const char *p = s; *p; p++) {
        if (iscntrl((unsigned char)*p))
            return true;
    }
    return false;
}

/* A DSN libpq cannot parse stops start-up here, not in a retry loop that
 * logs libpq's message (which quotes the bad part, password included):
 * the message is shown with the DSN's password masked. */
static enum dw_err check_dsn(struct loader *ld, const struct key *key, void *base,
                             const char *value, const struct origin *o)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(value, &err);
    if (opts) {
        PQconninfoFree(opts);
        char **field = field_of(base, key);
        free(*field);
        *field = dw_xstrdup(value);
        return DW_OK;
    }
    struct dw_log *masker = dw_log_create(-1, DW_LOG_ERROR);
    char **passwords = dw_store_dsn_passwords(value);
    for (size_t i = 0; passwords[i]; i++)
        dw_log_add_secret(masker, passwords[i]);
    char text[512];
    dw_strlcpy(text, err ? err : "out of memory", sizeof(text));
    text[strcspn(text, "\n")] = '\0';
    char clean[512];
    dw_log_redact(masker, text, clean, sizeof(clean));
    dw_store_passwords_free(passwords);
    dw_log_destroy(masker);
    PQfreemem(err);
    return fail(ld, o, "not a libpq connection string: %s", clean);
}

/* Checks value against key's flags and stores a copy in base. */
static enum dw_err set_string(struct loader *ld, const struct key *key, void *base,
                              const char *value, const struct origin *o)
{
    char **field = field_of(base, key);
    char *copy;

    if ((key->flags & KEY_NONEMPTY) && value[0] == '\0')
        return fail(ld, o, "must not be empty");
    /* Control characters would end up in HTTP headers, DSNs or log lines. */
    if (has_control_char(value))
        return fail(ld, o, "contains a control character");
    if ((key->flags & KEY_URL) && !is_http_url(value))
        return fail(ld, o, "\"%s\" is not an http:// or https:// URL", value);
    if ((key->flags & KEY_TOPIC) && !is_topic_name(value))
        return fail(ld, o, "\"%s\" is not a topic name (1 to 249 of A-Z a-z 0-9 . _ -)", value);
    if ((key->flags & KEY_ADDRESS) && !is_ip_address(value))
        return fail(ld, o, "\"%s\" is not an IPv4 or IPv6 address", value);
    if ((key->flags & KEY_SSLMODE) && value[0] && !is_sslmode(value))
        return fail(ld, o,
                    "\"%s\" is not an sslmode (disable, allow, prefer, require, verify-ca, "
                    "verify-full)",
                    value);

    if (key->flags & KEY_DSN)
        return check_dsn(ld, key, base, value, o);
    if (key->flags & KEY_MS_LIST) {
        struct dw_redrive_policy scratch;
        char why[256];
        if (dw_redrive_parse_delays(value, &scratch, why, sizeof(why)) != DW_OK)
            return fail(ld, o, "%s", why);
    }

    copy = dw_xstrdup(value);
    if (key->flags & KEY_URL) {
        /* Paths are appended to the base URL; "http://h/" + "/api" would double the slash. */
        size_t len = strlen(copy);
        while (len > 0 && copy[len - 1] == '/')
            copy[--len] = '\0';
    }
    free(*field);
    *field = copy;
    return DW_OK;
}

static enum dw_err set_level(struct loader *ld, const struct key *key, void *base,
                             const char *value, const struct origin *o)
{
    char lower[16];
    size_t len = strlen(value);
    enum dw_log_level level;

    if (len < sizeof(lower)) {
        for (size_t i = 0; i <= len; i++)
            lower[i] = (char)tolower((unsigned char)value[i]);
        if (dw_log_level_parse(lower, &level)) {
            *(enum dw_log_level *)field_of(base, key) = level;
            return DW_OK;
        }
    }
    if (has_control_char(value))
        return fail(ld, o, "not a log level (debug, info, warn, error)");
    return fail(ld, o, "\"%s\" is not a log level (debug, info, warn, error)", value);
}

/* "a, b, c" of a KEY_CHOICE key's names. */
static void list_choices(const struct key *key, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (const char *const *c = key->choices; *c && used < len; c++) {
        used += dw_strlcpy(buf + used, used ? ", " : "", len - used);
        if (used < len)
            used += dw_strlcpy(buf + used, *c, len - used);
    }
}

static enum dw_err set_choice(struct loader *ld, const struct key *key, void *base,
                              const char *value, const struct origin *o)
{
    char names[128];

    for (int i = 0; key->choices[i]; i++) {
        if (strcasecmp(value, key->choices[i]) == 0) {
            *(int *)field_of(base, key) = i;
            return DW_OK;
        }
    }
    list_choices(key, names, sizeof(names));
    if (has_control_char(value))
        return fail(ld, o, "not one of %s", names);
    return fail(ld, o, "\"%s\" is not one of %s", value, names);
}

static bool int_in_range(const struct key *key, long long v)
{
    return (double)v >= key->min && (double)v <= key->max;
}

static bool double_in_range(const struct key *key, double v)
{
    return v >= key->min && v <= key->max; /* false for NaN */
}

/* Parses the "name=value" strings of a list or array setting. */
static enum dw_err set_props(struct loader *ld, const struct key *key, void *base,
                             const config_setting_t *setting, const struct origin *o)
{
    struct dw_kafka_prop **field = field_of(base, key);
    size_t *field_count = (size_t *)((char *)base + key->count_offset);
    struct dw_kafka_prop *props = NULL;
    size_t count = 0;
    enum dw_err err = DW_OK;
    int type = config_setting_type(setting);

    if (type != CONFIG_TYPE_LIST && type != CONFIG_TYPE_ARRAY) {
        err = fail(ld, o, "expected a list of \"name=value\" strings");
        goto out;
    }

    int n = config_setting_length(setting);
    props = dw_xcalloc(n > 0 ? (size_t)n : 1, sizeof(*props));
    for (int i = 0; i < n; i++) {
        const config_setting_t *elem = config_setting_get_elem(setting, (unsigned)i);
        const char *text = config_setting_get_string(elem);
        struct origin eo;
        char path[sizeof(eo.path)];

        dw_snprintf(path, sizeof(path), "%s[%d]", o->path, i);
        origin_from_setting(ld, elem, path, &eo);
        if (!text) {
            err = fail(ld, &eo, "expected a \"name=value\" string");
            goto out;
        }
        const char *eq = strchr(text, '=');
        if (!eq || eq == text) {
            err = fail(ld, &eo, "\"%s\" is not name=value", text);
            goto out;
        }
        for (const char *p = text; p < eq; p++) {
            if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p)) {
                err = fail(ld, &eo, "\"%s\" is not name=value (no spaces around '=')", text);
                goto out;
            }
        }
        if (has_control_char(eq + 1)) {
            err = fail(ld, &eo, "the value of %.*s contains a control character", (int)(eq - text),
                       text);
            goto out;
        }
        for (size_t j = 0; j < DW_ARRAY_LEN(owned_props); j++) {
            const char *owned = owned_props[j].property;
            if (strlen(owned) == (size_t)(eq - text) && strncmp(text, owned, eq - text) == 0) {
                err = fail(ld, &eo, "set %s through %s, not here", owned, owned_props[j].instead);
                goto out;
            }
        }
        props[count].name = dw_xstrndup(text, (size_t)(eq - text));
        props[count].value = dw_xstrdup(eq + 1);
        count++;
    }

    clear_value(key, base);
    *field = props;
    *field_count = count;
    props = NULL;
    count = 0;
out:
    free_props(props, count);
    return err;
}

/* Reads one setting of the file into key's field in base. */
static enum dw_err set_from_setting(struct loader *ld, const struct key *key, void *base,
                                    const config_setting_t *setting, const struct origin *o)
{
    int type = config_setting_type(setting);

    switch (key->type) {
    case KEY_STRING:
        if (type != CONFIG_TYPE_STRING)
            return fail(ld, o, "expected a string");
        return set_string(ld, key, base, config_setting_get_string(setting), o);
    case KEY_LEVEL:
        if (type != CONFIG_TYPE_STRING)
            return fail(ld, o, "expected a string (debug, info, warn, error)");
        return set_level(ld, key, base, config_setting_get_string(setting), o);
    case KEY_INT: {
        if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
            return fail(ld, o, "expected an integer");
        long long v = config_setting_get_int64(setting);
        if (!int_in_range(key, v))
            return fail(ld, o, "%lld is out of range %lld..%lld", v, (long long)key->min,
                        (long long)key->max);
        *(int *)field_of(base, key) = (int)v;
        return DW_OK;
    }
    case KEY_DOUBLE: {
        double v;
        if (type == CONFIG_TYPE_FLOAT)
            v = config_setting_get_float(setting);
        else if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)
            v = (double)config_setting_get_int64(setting);
        else
            return fail(ld, o, "expected a number");
        if (!double_in_range(key, v))
            return fail(ld, o, "%g is out of range %g..%g", v, key->min, key->max);
        *(double *)field_of(base, key) = v;
        return DW_OK;
    }
    case KEY_PROPS:
        return set_props(ld, key, base, setting, o);
    case KEY_BOOL:
        if (type != CONFIG_TYPE_BOOL)
            return fail(ld, o, "expected true or false");
        *(bool *)field_of(base, key) = config_setting_get_bool(setting) != 0;
        return DW_OK;
    case KEY_CHOICE: {
        char names[128];
        list_choices(key, names, sizeof(names));
        if (type != CONFIG_TYPE_STRING)
            return fail(ld, o, "expected a string (%s)", names);
        return set_choice(ld, key, base, config_setting_get_string(setting), o);
    }
    }
    return fail(ld, o, "internal error: unknown key type");
}

/* Reads one environment variable's text into key's field in base. */
static enum dw_err set_from_env(struct loader *ld, const struct key *key, void *base,
                                const char *value, const struct origin *o)
{
    switch (key->type) {
    case KEY_STRING:
        return set_string(ld, key, base, value, o);
    case KEY_LEVEL:
        return set_level(ld, key, base, value, o);
    case KEY_INT: {
        char *end = NULL;
        long long v = 0;
        bool ok = false;

        /* strtoll skips leading space and accepts a bare sign; refuse both. */
        if (value[0] != '\0' && !isspace((unsigned char)value[0])) {
            errno = 0;
            v = strtoll(value, &end, 10);
            ok = errno == 0 && end != value && *end == '\0' && int_in_range(key, v);
        }
        if (!ok) {
            if (has_control_char(value))
                return fail(ld, o, "not %s %lld..%lld", key->noun ? key->noun : "an integer in",
                            (long long)key->min, (long long)key->max);
            return fail(ld, o, "\"%s\" is not %s %lld..%lld", value,
                        key->noun ? key->noun : "an integer in", (long long)key->min,
                        (long long)key->max);
        }
        *(int *)field_of(base, key) = (int)v;
        return DW_OK;
    }
    case KEY_CHOICE:
        return set_choice(ld, key, base, value, o);
    case KEY_BOOL:
        if (strcasecmp(value, "true") != 0 && strcasecmp(value, "false") != 0) {
            if (has_control_char(value))
                return fail(ld, o, "not true or false");
            return fail(ld, o, "\"%s\" is not true or false", value);
        }
        *(bool *)field_of(base, key) = strcasecmp(value, "true") == 0;
        return DW_OK;
    case KEY_DOUBLE: {
        char *end = NULL;
        double v = 0;
        bool ok = false;

        if (value[0] != '\0' && !isspace((unsigned char)value[0])) {
            errno = 0;
            v = strtod(value, &end);
            ok = errno == 0 && end != value && *end == '\0' && double_in_range(key, v);
        }
        if (!ok) {
            if (has_control_char(value))
                return fail(ld, o, "not a number in %g..%g", key->min, key->max);
            return fail(ld, o, "\"%s\" is not a number in %g..%g", value, key->min, key->max);
        }
        *(double *)field_of(base, key) = v;
        return DW_OK;
    }
    case KEY_PROPS:
        break;
    }
    return fail(ld, o, "cannot be set from the environment");
}

static void set_default(const struct key *key, void *base)
{
    switch (key->type) {
    case KEY_STRING:
        clear_value(key, base);
        if (key->def_str)
            *(char **)field_of(base, key) = dw_xstrdup(key->def_str);
        break;
    case KEY_LEVEL: {
        enum dw_log_level level = DW_LOG_INFO;
        (void)dw_log_level_parse(key->def_str, &level);
        *(enum dw_log_level *)field_of(base, key) = level;
        break;
    }
    case KEY_INT:
        *(int *)field_of(base, key) = (int)key->def_num;
        break;
    case KEY_DOUBLE:
        *(double *)field_of(base, key) = key->def_num;
        break;
    case KEY_BOOL:
        *(bool *)field_of(base, key) = false;
        break;
    case KEY_PROPS:
        clear_value(key, base);
        break;
    case KEY_CHOICE:
        *(int *)field_of(base, key) = 0;
        for (int i = 0; key->choices[i]; i++) {
            if (strcmp(key->def_str, key->choices[i]) == 0)
                *(int *)field_of(base, key) = i;
        }
        break;
    }
}

static void apply_defaults(struct loader *ld)
{
    for (size_t k = 0; k < CONFIG_KEY_COUNT; k++) {
        const struct key *key = &config_keys[k];
        set_default(key, ld->cfg);
        dw_snprintf(ld->global[k].path, sizeof(ld->global[k].path), "%s.%s", key->group, key->name);
    }
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const char *channel = dw_channel_name((enum dw_channel_id)c);
        for (size_t k = 0; k < CHANNEL_KEY_COUNT; k++) {
            struct origin *o = &ld->channel[c][k];
            set_default(&channel_keys[k], &ld->cfg->channels[c]);
            dw_snprintf(o->path, sizeof(o->path), "channels.%s.%s", channel, channel_keys[k].name);
        }
    }
}

/* "a, b, c" of the names in keys: those of group when it is not NULL, and
 * only those allowed in channels.defaults when defaults_only. */
static void list_key_names(const struct key *keys, size_t n, const char *group, bool defaults_only,
                           char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t k = 0; k < n; k++) {
        if (group && strcmp(keys[k].group, group) != 0)
            continue;
        if (defaults_only && (keys[k].flags & KEY_PER_CHANNEL))
            continue;
        used += dw_strlcpy(buf + used, used ? ", " : "", len - used);
        if (used >= len)
            return;
        used += dw_strlcpy(buf + used, keys[k].name, len - used);
        if (used >= len)
            return;
    }
}

static void list_groups(char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t k = 0; k < CONFIG_KEY_COUNT && used < len; k++) {
        if (k > 0 && strcmp(config_keys[k - 1].group, config_keys[k].group) == 0)
            continue;
        if (strcmp(config_keys[k].group, "channels") == 0)
            continue; /* named once, below */
        used += dw_strlcpy(buf + used, used ? ", " : "", len - used);
        if (used < len)
            used += dw_strlcpy(buf + used, config_keys[k].group, len - used);
    }
    if (used < len)
        dw_strlcpy(buf + used, ", channels", len - used);
}

static void list_channels(char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int c = 0; c < DW_CHANNEL_COUNT && used < len; c++) {
        used += dw_strlcpy(buf + used, used ? ", " : "", len - used);
        if (used < len)
            used += dw_strlcpy(buf + used, dw_channel_name((enum dw_channel_id)c), len - used);
    }
}

static const struct key *find_channel_key(const char *name, size_t *index)
{
    for (size_t k = 0; k < CHANNEL_KEY_COUNT; k++) {
        if (strcmp(channel_keys[k].name, name) == 0) {
            *index = k;
            return &channel_keys[k];
        }
    }
    return NULL;
}

/*
 * Applies the keys of one group under channels. section is "defaults"
 * (applies to every channel) or a channel's name (channel is its id).
 */
static enum dw_err load_channel_group(struct loader *ld, const config_setting_t *group,
                                      const char *section, int channel)
{
    bool defaults = channel < 0;
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *setting = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(setting);
        char path[96];
        struct origin o;
        size_t k;
        const struct key *key = find_channel_key(name, &k);

        dw_snprintf(path, sizeof(path), "channels.%s.%s", section, name);
        origin_from_setting(ld, setting, path, &o);
        if (!key || (defaults && (key->flags & KEY_PER_CHANNEL))) {
            char known[1024];
            list_key_names(channel_keys, CHANNEL_KEY_COUNT, NULL, defaults, known, sizeof(known));
            if (key)
                return fail(ld, &o, "unknown setting (%s is set per channel, not in defaults)",
                            name);
            return fail(ld, &o, "unknown setting; known: %s", known);
        }
        for (int c = defaults ? 0 : channel; c < (defaults ? DW_CHANNEL_COUNT : channel + 1); c++) {
            enum dw_err err = set_from_setting(ld, key, &ld->cfg->channels[c], setting, &o);
            if (err != DW_OK)
                return err;
            ld->channel[c][k] = o;
        }
    }
    return DW_OK;
}

/* The row of a setting of the channels group itself (allow_insecure_http),
 * or CONFIG_KEY_COUNT when name is none. */
static size_t channels_scalar_key(const char *name)
{
    size_t k;

    for (k = 0; k < CONFIG_KEY_COUNT; k++) {
        if (strcmp(config_keys[k].group, "channels") == 0 && strcmp(config_keys[k].name, name) == 0)
            break;
    }
    return k;
}

static enum dw_err load_channels(struct loader *ld, const config_setting_t *channels)
{
    int n = config_setting_length(channels);
    enum dw_err err;

    /* Every child must be a group with a known name; defaults go first
     * wherever they stand in the file, so a channel's own keys win. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            const config_setting_t *group = config_setting_get_elem(channels, (unsigned)i);
            const char *name = config_setting_name(group);
            bool is_defaults = strcmp(name, "defaults") == 0;
            int channel = is_defaults ? -1 : dw_channel_from_name(name);
            char path[96];
            struct origin o;

            dw_snprintf(path, sizeof(path), "channels.%s", name);
            origin_from_setting(ld, group, path, &o);
            size_t k = channels_scalar_key(name);
            if (k < CONFIG_KEY_COUNT) {
                if (pass == 0) {
                    if ((err = set_from_setting(ld, &config_keys[k], ld->cfg, group, &o)) != DW_OK)
                        return err;
                    ld->global[k] = o;
                }
                continue;
            }
            if (pass == 0) {
                if (!is_defaults && channel < 0) {
                    char known[256];
                    list_channels(known, sizeof(known));
                    return fail(ld, &o,
                                "unknown channel; known: %s (and defaults, allow_insecure_http)",
                                known);
                }
                if (!config_setting_is_group(group))
                    return fail(ld, &o, "expected a group { ... }");
                if (is_defaults && (err = load_channel_group(ld, group, name, -1)) != DW_OK)
                    return err;
            } else if (!is_defaults) {
                if ((err = load_channel_group(ld, group, name, channel)) != DW_OK)
                    return err;
            }
        }
    }
    return DW_OK;
}

static enum dw_err load_group(struct loader *ld, const config_setting_t *group,
                              const char *group_name)
{
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *setting = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(setting);
        char path[96];
        struct origin o;
        size_t k;

        dw_snprintf(path, sizeof(path), "%s.%s", group_name, name);
        origin_from_setting(ld, setting, path, &o);
        for (k = 0; k < CONFIG_KEY_COUNT; k++) {
            if (strcmp(config_keys[k].group, group_name) == 0 &&
                strcmp(config_keys[k].name, name) == 0)
                break;
        }
        if (k == CONFIG_KEY_COUNT) {
            char known[512];
            list_key_names(config_keys, CONFIG_KEY_COUNT, group_name, false, known, sizeof(known));
            return fail(ld, &o, "unknown setting; known: %s", known);
        }
        enum dw_err err = set_from_setting(ld, &config_keys[k], ld->cfg, setting, &o);
        if (err != DW_OK)
            return err;
        ld->global[k] = o;
    }
    return DW_OK;
}

static bool is_known_group(const char *name)
{
    for (size_t k = 0; k < CONFIG_KEY_COUNT; k++) {
        if (strcmp(config_keys[k].group, name) == 0)
            return true;
    }
    return false;
}

/* The directory part of path ("." when none), for @include. Caller frees. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        return dw_xstrdup(".");
    if (slash == path)
        return dw_xstrdup("/");
    return dw_xstrndup(path, (size_t)(slash - path));
}

static enum dw_err load_file(struct loader *ld, const char *path)
{
    config_t lc;
    char *dir = NULL;
    enum dw_err err = DW_OK;
    FILE *fp;

    /* libconfig says only "file I/O error"; find out why first. */
    fp = fopen(path, "r");
    if (!fp) {
        if (ld->errbuf && ld->errlen)
            dw_snprintf(ld->errbuf, ld->errlen, "%s: cannot open: %s", path, strerror(errno));
        return DW_ERR_CONFIG;
    }
    fclose(fp);

    config_init(&lc);
    dir = dir_of(path);
    config_set_include_dir(&lc, dir);
    if (config_read_file(&lc, path) != CONFIG_TRUE) {
        const char *file = config_error_file(&lc);
        if (ld->errbuf && ld->errlen)
            dw_snprintf(ld->errbuf, ld->errlen, "%s:%d: %s", file ? file : path,
                        config_error_line(&lc), config_error_text(&lc));
        err = DW_ERR_CONFIG;
        goto out;
    }

    const config_setting_t *root = config_root_setting(&lc);
    int n = config_setting_length(root);
    for (int i = 0; i < n; i++) {
        const config_setting_t *group = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(group);
        bool is_channels = strcmp(name, "channels") == 0;
        struct origin o;

        origin_from_setting(ld, group, name, &o);
        if (!is_channels && !is_known_group(name)) {
            char known[256];
            list_groups(known, sizeof(known));
            err = fail(ld, &o, "unknown setting; known groups: %s", known);
            goto out;
        }
        if (!config_setting_is_group(group)) {
            err = fail(ld, &o, "expected a group { ... }");
            goto out;
        }
        err = is_channels ? load_channels(ld, group) : load_group(ld, group, name);
        if (err != DW_OK)
            goto out;
    }
out:
    config_destroy(&lc);
    free(dir);
    return err;
}

/* DIST_CHANNEL_<CHANNEL>_<SUFFIX> of one channel key: SUFFIX is key->env,
 * else the key's name in upper case. */
static void channel_env_name(const char *channel, const struct key *key, char *name, size_t len)
{
    if (key->env) {
        dw_snprintf(name, len, "DIST_CHANNEL_%s_%s", channel, key->env);
        return;
    }
    size_t n = (size_t)snprintf(name, len, "DIST_CHANNEL_%s_", channel);
    for (const char *p = key->name; *p && n + 1 < len; p++)
        name[n++] = (char)toupper((unsigned char)*p);
    name[n < len ? n : len - 1] = '\0';
}

/* A DIST_CHANNEL_* variable that names no channel setting is a typo
 * (DIST_CHANNEL_KAKAO_CAFILE) that would otherwise be silently ignored. */
static enum dw_err check_env_names(struct loader *ld, char *const *envp)
{
    static const char prefix[] = "DIST_CHANNEL_";

    for (; envp && *envp; envp++) {
        const char *var = *envp;
        const char *eq = strchr(var, '=');
        char name[128];
        char suffixes[768];
        size_t used = 0;
        int channel = -1;
        struct origin o;

        if (strncmp(var, prefix, sizeof(prefix) - 1) != 0 || !eq)
            continue;
        dw_snprintf(name, sizeof(name), "%.*s", (int)(eq - var), var);
        for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
            const char *ch = dw_channel_name((enum dw_channel_id)c);
            size_t len = strlen(ch);
            if (strncmp(name + sizeof(prefix) - 1, ch, len) == 0 &&
                name[sizeof(prefix) - 1 + len] == '_')
                channel = c;
        }
        origin_from_env(name, name, &o);
        if (channel < 0) {
            char known[256];
            list_channels(known, sizeof(known));
            return fail(ld, &o, "unknown channel; known: %s", known);
        }
        const char *ch = dw_channel_name((enum dw_channel_id)channel);
        suffixes[0] = '\0';
        for (size_t k = 0; k < CHANNEL_KEY_COUNT; k++) {
            char known[128];
            channel_env_name(ch, &channel_keys[k], known, sizeof(known));
            if (strcmp(known, name) == 0)
                break;
            if (k + 1 == CHANNEL_KEY_COUNT) {
                for (size_t j = 0; j < CHANNEL_KEY_COUNT && used < sizeof(suffixes); j++) {
                    channel_env_name(ch, &channel_keys[j], known, sizeof(known));
                    used += dw_strlcpy(suffixes + used, j ? ", " : "", sizeof(suffixes) - used);
                    if (used < sizeof(suffixes))
                        used += dw_strlcpy(suffixes + used, known + strlen(prefix) + strlen(ch) + 1,
                                           sizeof(suffixes) - used);
                }
                return fail(ld, &o, "unknown setting; DIST_CHANNEL_%s_ takes: %s", ch, suffixes);
            }
        }
    }
    return DW_OK;
}

static enum dw_err load_env(struct loader *ld, char *const *envp)
{
    enum dw_err err;

    if ((err = check_env_names(ld, envp)) != DW_OK)
        return err;

    for (size_t k = 0; k < CONFIG_KEY_COUNT; k++) {
        const struct key *key = &config_keys[k];
        const char *value = key->env ? env_lookup(envp, key->env) : NULL;
        struct origin o;

        if (!value)
            continue;
        origin_from_env(ld->global[k].path, key->env, &o);
        if ((err = set_from_env(ld, key, ld->cfg, value, &o)) != DW_OK)
            return err;
        ld->global[k] = o;
    }
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const char *channel = dw_channel_name((enum dw_channel_id)c);
        for (size_t k = 0; k < CHANNEL_KEY_COUNT; k++) {
            const struct key *key = &channel_keys[k];
            char name[64];
            char path[96];
            const char *value;
            struct origin o;

            channel_env_name(channel, key, name, sizeof(name));
            if (!(value = env_lookup(envp, name)))
                continue;
            dw_snprintf(path, sizeof(path), "channels.%s.%s", channel, key->name);
            origin_from_env(path, name, &o);
            if ((err = set_from_env(ld, key, &ld->cfg->channels[c], value, &o)) != DW_OK)
                return err;
            ld->channel[c][k] = o;
        }
    }
    return DW_OK;
}

/* The row of a key that check_final names; it is always in the table. */
static size_t config_key_index(const char *group, const char *name)
{
    for (size_t k = 0; k < CONFIG_KEY_COUNT; k++) {
        if (strcmp(config_keys[k].group, group) == 0 && strcmp(config_keys[k].name, name) == 0)
            return k;
    }
    abort();
}

static size_t channel_key_index(const char *name)
{
    size_t k;

    if (!find_channel_key(name, &k))
        abort();
    return k;
}

/* Azure Event Hubs' Kafka endpoint: <namespace>.servicebus.windows.net
 * (and the sovereign clouds' .servicebus.chinacloudapi.cn,
 * .servicebus.usgovcloudapi.net). */
static bool is_event_hubs(const char *brokers)
{
    return strstr(brokers, ".servicebus.") != NULL;
}

/* Event Hubs closes the connection on a produce request of 1,046,528 bytes
 * or more, and librdkafka sends it again forever: message.max.bytes (a
 * record and a whole request) must stay below. */
#define EVENT_HUBS_MAX_REQUEST 1046528
#define EVENT_HUBS_MIN_COMMIT  250

static enum dw_err check_event_hubs(struct loader *ld)
{
    const struct dw_config *cfg = ld->cfg;
    const char *const lists[] = {"properties", "producer_properties"};
    const struct dw_kafka_prop *props[] = {cfg->kafka_props, cfg->producer_props};
    const size_t counts[] = {cfg->kafka_prop_count, cfg->producer_prop_count};
    size_t brokers_k = config_key_index("kafka", "brokers");
    char brokers[256];

    describe(&ld->global[brokers_k], brokers, sizeof(brokers));
    if (cfg->commit_interval_ms < EVENT_HUBS_MIN_COMMIT)
        return fail(ld, &ld->global[config_key_index("kafka", "commit_interval_ms")],
                    "%d is below %d: Event Hubs (%s is %s) throttles offset commits at 4 per "
                    "second per partition",
                    cfg->commit_interval_ms, EVENT_HUBS_MIN_COMMIT, brokers, cfg->kafka_brokers);
    for (size_t l = 0; l < DW_ARRAY_LEN(lists); l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            char *end = NULL;
            long long v;
            if (strcmp(props[l][i].name, "message.max.bytes") != 0)
                continue;
            errno = 0;
            v = strtoll(props[l][i].value, &end, 10);
            if (errno || end == props[l][i].value || *end || v < EVENT_HUBS_MAX_REQUEST)
                continue; /* librdkafka judges the rest */
            return fail(ld, &ld->global[config_key_index("kafka", lists[l])],
                        "message.max.bytes=%lld: Event Hubs (%s is %s) closes the connection on "
                        "a request of %d bytes or more; use 1000000",
                        v, brokers, cfg->kafka_brokers, EVENT_HUBS_MAX_REQUEST);
        }
    }
    return DW_OK;
}

/* ca_file must be a readable file with at least one PEM certificate:
 * found wrong here, it stops start-up; found wrong by libcurl, it would fail
 * every call of the channel. */
static enum dw_err check_ca_file(struct loader *ld, const char *path, const struct origin *o)
{
    static const char marker[] = "-----BEGIN CERTIFICATE-----";
    FILE *fp = fopen(path, "r");
    char line[512];
    bool found = false;
    enum dw_err err = DW_OK;

    if (!fp)
        return fail(ld, o, "cannot open \"%s\": %s", path, strerror(errno));
    while (!found && fgets(line, sizeof(line), fp))
        found = strncmp(line, marker, sizeof(marker) - 1) == 0;
    if (ferror(fp))
        err = fail(ld, o, "cannot read \"%s\": %s", path, strerror(errno));
    else if (!found)
        err = fail(ld, o, "\"%s\" holds no PEM certificate (%s)", path, marker);
    fclose(fp);
    return err;
}

/* Rules that span settings, checked once everything is in. */
static enum dw_err check_final(struct loader *ld)
{
    static const char *const topics[] = {"request_topic", "completed_topic", "dlq_topic"};
    const struct dw_config *cfg = ld->cfg;
    size_t url_k = channel_key_index("url");
    size_t token_k = channel_key_index("token");
    size_t init_k = channel_key_index("initial_backoff_ms");
    size_t max_k = channel_key_index("max_backoff_ms");
    size_t lmin_k = channel_key_index("limit_min");
    size_t cap_k = channel_key_index("max_concurrent");
    size_t ca_k = channel_key_index("ca_file");
    size_t version_k = channel_key_index("http_version");

    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const struct dw_channel_config *ch = &ld->cfg->channels[c];
        const char *channel = dw_channel_name((enum dw_channel_id)c);
        if (!ch->url)
            return fail(ld, &ld->channel[c][url_k],
                        "missing (set it in the file or DIST_CHANNEL_%s_URL)", channel);
        /* Without a token every call is a permanent 401: refuse to start. */
        if (!ch->token || !ch->token[0])
            return fail(ld, &ld->channel[c][token_k],
                        "missing or empty (set it in the file or DIST_CHANNEL_%s_TOKEN)", channel);
        if (ch->initial_backoff_ms > ch->max_backoff_ms) {
            char other[256];
            describe(&ld->channel[c][max_k], other, sizeof(other));
            return fail(ld, &ld->channel[c][init_k], "%d is more than max_backoff_ms %d from %s",
                        ch->initial_backoff_ms, ch->max_backoff_ms, other);
        }
        if (ch->limit.min > ch->max_concurrent) {
            char other[256];
            describe(&ld->channel[c][cap_k], other, sizeof(other));
            return fail(ld, &ld->channel[c][lmin_k], "%d is more than max_concurrent %d from %s",
                        ch->limit.min, ch->max_concurrent, other);
        }
        /* limit.max stays unset here: the guard takes max_concurrent as
         * the ceiling, and starts a limit_initial above it at it. */
    }
    /* The transport, once every channel has its URL. */
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const struct dw_channel_config *ch = &ld->cfg->channels[c];
        /* A bearer token must not leave in clear text by accident. */
        bool plain = strncasecmp(ch->url, "http://", 7) == 0;
        if (plain && !ld->cfg->allow_insecure_http)
            return fail(
                ld, &ld->channel[c][url_k],
                "\"%s\" is plain HTTP, refused: use https://, or set "
                "channels.allow_insecure_http = true (DIST_CHANNELS_ALLOW_INSECURE_HTTP=true)"
                " for development and tests only",
                ch->url);
        if (!plain && ch->http_version == DW_HTTP_H2C)
            return fail(ld, &ld->channel[c][version_k],
                        "h2c is HTTP/2 over plain http://, but the url is https:// (\"auto\" "
                        "gives HTTP/2 over TLS where the server offers it)");
        if (ch->ca_file && ch->ca_file[0]) {
            enum dw_err err = check_ca_file(ld, ch->ca_file, &ld->channel[c][ca_k]);
            if (err != DW_OK)
                return err;
        }
    }

    /* Two listeners cannot share a port. */
    if (cfg->http_management_port && cfg->http_management_port == cfg->http_port) {
        size_t k = config_key_index("http", "management_port");
        return fail(ld, &ld->global[k], "%d is also http.port; the ports must differ",
                    cfg->http_management_port);
    }

    /* A DLQ that is the request topic would feed bad records back forever. */
    for (size_t i = 0; i < DW_ARRAY_LEN(topics); i++) {
        for (size_t j = i + 1; j < DW_ARRAY_LEN(topics); j++) {
            size_t ki = config_key_index("kafka", topics[i]);
            size_t kj = config_key_index("kafka", topics[j]);
            const char *a = *(char *const *)field_of(ld->cfg, &config_keys[ki]);
            const char *b = *(char *const *)field_of(ld->cfg, &config_keys[kj]);
            if (strcmp(a, b) == 0) {
                char other[256];
                describe(&ld->global[ki], other, sizeof(other));
                return fail(ld, &ld->global[kj], "\"%s\" is also %s; the topics must differ", b,
                            other);
            }
        }
    }
    if (is_event_hubs(ld->cfg->kafka_brokers))
        return check_event_hubs(ld);
    return DW_OK;
}

static void append_prop(struct dw_kafka_prop **props, size_t *count, const char *name,
                        const char *value)
{
    *props = dw_xrealloc(*props, (*count + 1) * sizeof(**props));
    (*props)[*count].name = dw_xstrdup(name);
    (*props)[*count].value = dw_xstrdup(value);
    (*count)++;
}

/* Appends " name='value'" (keyword form) or "?name=value" / "&name=value"
 * (URI form, percent-encoded) to *dsn. */
static void append_dsn_param(char **dsn, const char *name, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    bool uri = strncmp(*dsn, "postgresql://", 13) == 0 || strncmp(*dsn, "postgres://", 11) == 0;
    struct dw_buf buf;
    enum dw_err err;

    dw_buf_init(&buf, 64 * 1024);
    err = dw_buf_printf(&buf, "%s%s%s=%s", *dsn, uri ? (strchr(*dsn, '?') ? "&" : "?") : " ", name,
                        uri ? "" : "'");
    for (const unsigned char *p = (const unsigned char *)value; *p && !err; p++) {
        if (uri && !isalnum(*p) && !strchr("-._~/", *p))
            err = dw_buf_printf(&buf, "%%%c%c", hex[*p >> 4], hex[*p & 15]);
        else if (!uri && (*p == '\\' || *p == '\''))
            err = dw_buf_printf(&buf, "\\%c", *p);
        else
            err = dw_buf_append(&buf, p, 1);
    }
    if (!err && !uri)
        err = dw_buf_append(&buf, "'", 1);
    if (!err) {
        free(*dsn);
        *dsn = dw_buf_detach(&buf, NULL);
    }
    dw_buf_cleanup(&buf);
}

/* Settings that land in another one, so each client reads one place:
 * the SASL credentials become librdkafka properties (after the file's, so
 * they win), sslmode and sslrootcert become DSN parameters (last wins in
 * libpq). An empty value counts as unset. */
static void fold_settings(struct dw_config *cfg)
{
    if (cfg->kafka_sasl_username && cfg->kafka_sasl_username[0])
        append_prop(&cfg->kafka_props, &cfg->kafka_prop_count, "sasl.username",
                    cfg->kafka_sasl_username);
    if (cfg->kafka_sasl_password && cfg->kafka_sasl_password[0])
        append_prop(&cfg->kafka_props, &cfg->kafka_prop_count, "sasl.password",
                    cfg->kafka_sasl_password);
    if (cfg->pg_sslmode && cfg->pg_sslmode[0])
        append_dsn_param(&cfg->pg_dsn, "sslmode", cfg->pg_sslmode);
    if (cfg->pg_sslrootcert && cfg->pg_sslrootcert[0])
        append_dsn_param(&cfg->pg_dsn, "sslrootcert", cfg->pg_sslrootcert);
    /* Checked when it was set, so it parses. */
    char why[256];
    if (dw_redrive_parse_delays(cfg->redrive_delays_ms, &cfg->redrive, why, sizeof(why)) != DW_OK)
        cfg->redrive.tiers = 0;
    cfg->redrive.max_age_ms = cfg->redrive_max_age_ms;
}

enum dw_err dw_config_create(const char *path, char *const *envp, struct dw_config **out,
                             char *errbuf, size_t errlen)
{
    struct loader *ld = dw_xcalloc(1, sizeof(*ld));
    enum dw_err err;

    *out = NULL;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    ld->cfg = dw_xcalloc(1, sizeof(*ld->cfg));
    ld->path = path;
    ld->errbuf = errbuf;
    ld->errlen = errlen;

    apply_defaults(ld);
    if (path && (err = load_file(ld, path)) != DW_OK)
        goto out;
    if ((err = load_env(ld, envp)) != DW_OK)
        goto out;
    if ((err = check_final(ld)) != DW_OK)
        goto out;
    fold_settings(ld->cfg);

    *out = ld->cfg;
    ld->cfg = NULL;
out:
    dw_config_destroy(ld->cfg);
    free(ld);
    return err;
}

void dw_config_destroy(struct dw_config *cfg)
{
    if (!cfg)
        return;
    for (size_t k = 0; k < CONFIG_KEY_COUNT; k++)
        clear_value(&config_keys[k], cfg);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        for (size_t k = 0; k < CHANNEL_KEY_COUNT; k++)
            clear_value(&channel_keys[k], &cfg->channels[c]);
    }
    free(cfg);
}
