/*
 * Unit tests of config: built-in defaults, file values, per-channel
 * overrides, environment precedence, every validation error (with the
 * setting's path and line, or the variable's name), and the reference file
 * conf/distribution-worker.conf. Each case writes its own temporary file and
 * passes its own environment array; the process environment is never read.
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

#include "channel_env.h"
#include "dw/config.h"

/* Every channel's URL and token, so a case about something else loads. */
#define ALL_URLS      ALL_URLS_ONLY, ALL_TOKENS
#define ALL_URLS_ONLY DW_TEST_CHANNEL_URLS
/* Every channel needs a non-empty token. */
#define ALL_TOKENS DW_TEST_CHANNEL_TOKENS

/* A channels group giving every channel a URL, for cases without env URLs. */
#define FILE_URLS                                                                                  \
    "channels = {\n"                                                                               \
    "  URIDONGNETV = { url = \"https://u\"; token = \"tu\"; };\n"                                  \
    "  GINITV = { url = \"https://g\"; token = \"tg\"; };\n"                                       \
    "  RINGOBIZ = { url = \"https://r\"; token = \"tr\"; };\n"                                     \
    "  INSTAGRAM = { url = \"https://i\"; token = \"ti\"; };\n"                                    \
    "  NAVER = { url = \"https://n\"; token = \"tn\"; };\n"                                        \
    "  KAKAO = { url = \"https://k\"; token = \"tk\"; };\n"                                        \
    "};\n"

static char *const url_env[] = {ALL_URLS, NULL};

struct tmpconf {
    char path[64];
};

static void write_conf(struct tmpconf *t, const char *text)
{
    dw_strlcpy(t->path, "/tmp/dw-test-config-XXXXXX", sizeof(t->path));
    int fd = mkstemp(t->path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

/* Loads text (NULL: no file) with env; asserts the outcome. */
static struct dw_config *load_ok(const char *text, char *const *env)
{
    struct tmpconf t;
    struct dw_config *cfg = NULL;
    char err[512];

    if (text)
        write_conf(&t, text);
    enum dw_err rc = dw_config_create(text ? t.path : NULL, env, &cfg, err, sizeof(err));
    if (text)
        unlink(t.path);
    if (rc != DW_OK)
        fail_msg("load failed: %s", err);
    assert_non_null(cfg);
    return cfg;
}

/*
 * Loads text with env, expects DW_ERR_CONFIG and every NULL-ended extra
 * argument in the message. "@FILE" stands for the temporary file's path.
 */
static void load_bad(const char *text, char *const *env, ...)
{
    struct tmpconf t;
    struct dw_config *cfg = (struct dw_config *)1;
    char err[512];
    va_list ap;

    if (text)
        write_conf(&t, text);
    enum dw_err rc = dw_config_create(text ? t.path : NULL, env, &cfg, err, sizeof(err));
    if (text)
        unlink(t.path);
    if (rc == DW_OK)
        dw_config_destroy(cfg);
    assert_int_equal(rc, DW_ERR_CONFIG);
    assert_null(cfg);

    va_start(ap, env);
    for (const char *want = va_arg(ap, const char *); want; want = va_arg(ap, const char *)) {
        const char *needle = strcmp(want, "@FILE") == 0 ? t.path : want;
        if (!strstr(err, needle)) {
            va_end(ap);
            fail_msg("message \"%s\" lacks \"%s\"", err, needle);
        }
    }
    va_end(ap);
}

static void test_defaults(void **state)
{
    (void)state;
    struct dw_config *cfg = load_ok("# nothing but URLs\n" FILE_URLS, NULL);

    assert_string_equal(cfg->kafka_brokers, "localhost:9092");
    assert_string_equal(cfg->kafka_group, "distribution-worker");
    assert_string_equal(cfg->request_topic, "distribution-requests");
    assert_string_equal(cfg->completed_topic, "distribution-completed");
    assert_string_equal(cfg->dlq_topic, "distribution-requests.dlq");
    assert_int_equal(cfg->kafka_prop_count, 0);
    assert_int_equal(cfg->consumer_prop_count, 0);
    assert_int_equal(cfg->producer_prop_count, 0);
    assert_string_equal(cfg->pg_dsn, "postgresql://localhost/distribution");
    assert_int_equal(cfg->http_port, 8080);
    assert_string_equal(cfg->http_bind, "0.0.0.0");
    assert_int_equal(cfg->log_level, DW_LOG_INFO);
    assert_int_equal(cfg->pool_threads, 2);
    assert_int_equal(cfg->max_in_flight_requests, 2000);
    assert_int_equal(cfg->max_in_flight_calls, 4000);
    assert_int_equal(cfg->drain_timeout_ms, 30000);
    assert_int_equal(cfg->store_batch_max, 256);
    assert_int_equal(cfg->result_hold_ms, 1000);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const struct dw_channel_config *ch = &cfg->channels[c];
        assert_non_null(ch->url);
        assert_true(ch->token[0] != '\0');
        assert_int_equal(ch->connect_timeout_ms, 2000);
        assert_int_equal(ch->timeout_ms, 10000);
        assert_int_equal(ch->max_attempts, 3);
        assert_int_equal(ch->initial_backoff_ms, 200);
        assert_true(ch->multiplier == 2.0);
        assert_int_equal(ch->max_backoff_ms, 5000);
        assert_int_equal(ch->max_retry_after_ms, 30000);
        assert_int_equal(ch->max_concurrent, 500);
    }
    assert_string_equal(cfg->channels[DW_CHANNEL_KAKAO].url, "https://k");
    assert_string_equal(cfg->channels[DW_CHANNEL_URIDONGNETV].url, "https://u");
    dw_config_destroy(cfg);
}

static void test_no_file_env_only(void **state)
{
    (void)state;
    struct dw_config *cfg = load_ok(NULL, url_env);
    assert_string_equal(cfg->channels[DW_CHANNEL_NAVER].url, "https://n");
    assert_int_equal(cfg->http_port, 8080);
    dw_config_destroy(cfg);

    /* Without a file or variables, the first channel's URL is missing. */
    load_bad(NULL, NULL, "channels.URIDONGNETV.url: missing", "DIST_CHANNEL_URIDONGNETV_URL", NULL);
}

static void test_file_values(void **state)
{
    (void)state;
    struct dw_config *cfg = load_ok("kafka = { brokers = \"b1:9092,b2:9092\"; group = \"g\";\n"
                                    "  request_topic = \"req\"; completed_topic = \"done\";\n"
                                    "  dlq_topic = \"req.dlq\"; };\n"
                                    "postgres = { dsn = \"host=db dbname=x\"; };\n"
                                    "http = { port = 0; bind_address = \"::1\"; };\n"
                                    "log = { level = \"warn\"; };\n"
                                    "worker = { threads = 64; max_in_flight_requests = 1;\n"
                                    "  max_in_flight_calls = 1000000; drain_timeout_ms = 0;\n"
                                    "  store_batch_max = 10000; result_hold_ms = 0; };\n" FILE_URLS,
                                    NULL);
    assert_string_equal(cfg->kafka_brokers, "b1:9092,b2:9092");
    assert_string_equal(cfg->kafka_group, "g");
    assert_string_equal(cfg->request_topic, "req");
    assert_string_equal(cfg->completed_topic, "done");
    assert_string_equal(cfg->dlq_topic, "req.dlq");
    assert_string_equal(cfg->pg_dsn, "host=db dbname=x");
    assert_int_equal(cfg->http_port, 0);
    assert_string_equal(cfg->http_bind, "::1");
    assert_int_equal(cfg->log_level, DW_LOG_WARN);
    assert_int_equal(cfg->pool_threads, 64);
    assert_int_equal(cfg->max_in_flight_requests, 1);
    assert_int_equal(cfg->max_in_flight_calls, 1000000);
    assert_int_equal(cfg->drain_timeout_ms, 0);
    assert_int_equal(cfg->store_batch_max, 10000);
    assert_int_equal(cfg->result_hold_ms, 0);
    dw_config_destroy(cfg);

    /* 64-bit literals and integers for a double are fine when in range. */
    cfg = load_ok("worker = { threads = 5L; };\n"
                  "channels = { defaults = { multiplier = 3; }; };\n",
                  url_env);
    assert_int_equal(cfg->pool_threads, 5);
    assert_true(cfg->channels[DW_CHANNEL_GINITV].multiplier == 3.0);
    dw_config_destroy(cfg);
}

static void test_channel_overrides(void **state)
{
    (void)state;
    /* Defaults after a channel in the file still lose to the channel's own keys. */
    struct dw_config *cfg = load_ok("channels = {\n"
                                    "  KAKAO = { url = \"https://kapi.example.com/\";\n"
                                    "            token = \"kt\"; timeout_ms = 7000;\n"
                                    "            multiplier = 1.5; max_attempts = 5; };\n"
                                    "  defaults = { timeout_ms = 5000; max_attempts = 2;\n"
                                    "               connect_timeout_ms = 100;\n"
                                    "               initial_backoff_ms = 10; max_backoff_ms = 20;\n"
                                    "               max_retry_after_ms = 0; max_concurrent = 7;\n"
                                    "               multiplier = 1.0; };\n"
                                    "  URIDONGNETV = { url = \"https://u\"; token = \"tu\"; };\n"
                                    "  GINITV = { url = \"https://g\"; token = \"tg\";\n"
                                    "             max_concurrent = 9; };\n"
                                    "  RINGOBIZ = { url = \"https://r\"; token = \"tr\"; };\n"
                                    "  INSTAGRAM = { url = \"https://i\"; token = \"ti\"; };\n"
                                    "  NAVER = { url = \"https://n\"; token = \"tn\"; };\n"
                                    "};\n",
                                    NULL);
    const struct dw_channel_config *kakao = &cfg->channels[DW_CHANNEL_KAKAO];
    const struct dw_channel_config *naver = &cfg->channels[DW_CHANNEL_NAVER];
    const struct dw_channel_config *ginitv = &cfg->channels[DW_CHANNEL_GINITV];

    assert_string_equal(kakao->url, "https://kapi.example.com");
    assert_string_equal(kakao->token, "kt");
    assert_int_equal(kakao->timeout_ms, 7000);
    assert_int_equal(kakao->max_attempts, 5);
    assert_true(kakao->multiplier == 1.5);
    assert_int_equal(kakao->connect_timeout_ms, 100);
    assert_int_equal(kakao->max_concurrent, 7);

    assert_string_equal(naver->token, "tn");
    assert_int_equal(naver->timeout_ms, 5000);
    assert_int_equal(naver->max_attempts, 2);
    assert_true(naver->multiplier == 1.0);
    assert_int_equal(naver->initial_backoff_ms, 10);
    assert_int_equal(naver->max_backoff_ms, 20);
    assert_int_equal(naver->max_retry_after_ms, 0);
    assert_int_equal(naver->max_concurrent, 7);
    assert_int_equal(ginitv->max_concurrent, 9);
    dw_config_destroy(cfg);
}

static void test_env_wins(void **state)
{
    (void)state;
    static char *const env[] = {
        "PATH=/usr/bin",
        "DIST_KAFKA_BROKERS_X=ignored",
        "DIST_KAFKA_BROKERS=env-broker:9093",
        "DIST_KAFKA_GROUP=env-group",
        "DIST_REQUEST_TOPIC=env-req",
        "DIST_COMPLETED_TOPIC=env-done",
        "DIST_DLQ_TOPIC=env-dlq",
        "DIST_PG_DSN=postgresql://env/db",
        "DIST_HTTP_PORT=0",
        "DIST_LOG_LEVEL=DEBUG",
        "DIST_CHANNEL_URIDONGNETV_URL=https://env-u/",
        "DIST_CHANNEL_GINITV_URL=https://env-g",
        "DIST_CHANNEL_RINGOBIZ_URL=https://env-r",
        "DIST_CHANNEL_INSTAGRAM_URL=https://env-i",
        "DIST_CHANNEL_NAVER_URL=https://env-n",
        "DIST_CHANNEL_KAKAO_URL=https://env-k:8443/base//",
        "DIST_CHANNEL_URIDONGNETV_TOKEN=tu",
        "DIST_CHANNEL_GINITV_TOKEN=tg",
        "DIST_CHANNEL_RINGOBIZ_TOKEN=tr",
        "DIST_CHANNEL_INSTAGRAM_TOKEN=ti",
        "DIST_CHANNEL_NAVER_TOKEN=tn",
        "DIST_CHANNEL_KAKAO_TOKEN=tk",
        NULL,
    };
    static const char *const urls[DW_CHANNEL_COUNT] = {
        [DW_CHANNEL_URIDONGNETV] = "https://env-u", [DW_CHANNEL_GINITV] = "https://env-g",
        [DW_CHANNEL_RINGOBIZ] = "https://env-r",    [DW_CHANNEL_INSTAGRAM] = "https://env-i",
        [DW_CHANNEL_NAVER] = "https://env-n",       [DW_CHANNEL_KAKAO] = "https://env-k:8443/base",
    };
    static const char *const tokens[DW_CHANNEL_COUNT] = {
        [DW_CHANNEL_URIDONGNETV] = "tu", [DW_CHANNEL_GINITV] = "tg", [DW_CHANNEL_RINGOBIZ] = "tr",
        [DW_CHANNEL_INSTAGRAM] = "ti",   [DW_CHANNEL_NAVER] = "tn",  [DW_CHANNEL_KAKAO] = "tk",
    };
    struct dw_config *cfg =
        load_ok("kafka = { brokers = \"file:9092\"; group = \"fg\"; request_topic = \"freq\";\n"
                "  completed_topic = \"fdone\"; dlq_topic = \"fdlq\"; };\n"
                "postgres = { dsn = \"postgresql://file/db\"; };\n"
                "http = { port = 9000; };\n"
                "log = { level = \"error\"; };\n"
                "channels = {\n"
                "  URIDONGNETV = { url = \"https://f\"; token = \"f\"; };\n"
                "  GINITV = { url = \"https://f\"; token = \"f\"; };\n"
                "  RINGOBIZ = { url = \"https://f\"; token = \"f\"; };\n"
                "  INSTAGRAM = { url = \"https://f\"; token = \"f\"; };\n"
                "  NAVER = { url = \"https://f\"; token = \"f\"; };\n"
                "  KAKAO = { url = \"https://f\"; token = \"f\"; };\n"
                "};\n",
                env);

    assert_string_equal(cfg->kafka_brokers, "env-broker:9093");
    assert_string_equal(cfg->kafka_group, "env-group");
    assert_string_equal(cfg->request_topic, "env-req");
    assert_string_equal(cfg->completed_topic, "env-done");
    assert_string_equal(cfg->dlq_topic, "env-dlq");
    assert_string_equal(cfg->pg_dsn, "postgresql://env/db");
    assert_int_equal(cfg->http_port, 0);
    assert_int_equal(cfg->log_level, DW_LOG_DEBUG);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        assert_string_equal(cfg->channels[c].url, urls[c]);
        assert_string_equal(cfg->channels[c].token, tokens[c]);
    }
    dw_config_destroy(cfg);

    /* A port from the environment, with a sign, and the levels by name. */
    static char *const env2[] = {ALL_URLS, "DIST_HTTP_PORT=+65535", "DIST_LOG_LEVEL=warn", NULL};
    cfg = load_ok(NULL, env2);
    assert_int_equal(cfg->http_port, 65535);
    assert_int_equal(cfg->log_level, DW_LOG_WARN);
    dw_config_destroy(cfg);
}

static void test_kafka_properties(void **state)
{
    (void)state;
    struct dw_config *cfg = load_ok(
        "kafka = {\n"
        "  properties = [ \"fetch.wait.max.ms=50\", \"sasl.password=Endpoint=sb://x/;K=v=\",\n"
        "                 \"client.id=\" ];\n"
        "  consumer_properties = ( \"session.timeout.ms=45000\" );\n"
        "  producer_properties = [ ];\n"
        "};\n",
        url_env);
    assert_int_equal(cfg->kafka_prop_count, 3);
    assert_string_equal(cfg->kafka_props[0].name, "fetch.wait.max.ms");
    assert_string_equal(cfg->kafka_props[0].value, "50");
    assert_string_equal(cfg->kafka_props[1].name, "sasl.password");
    assert_string_equal(cfg->kafka_props[1].value, "Endpoint=sb://x/;K=v=");
    assert_string_equal(cfg->kafka_props[2].name, "client.id");
    assert_string_equal(cfg->kafka_props[2].value, "");
    assert_int_equal(cfg->consumer_prop_count, 1);
    assert_string_equal(cfg->consumer_props[0].name, "session.timeout.ms");
    assert_string_equal(cfg->consumer_props[0].value, "45000");
    assert_int_equal(cfg->producer_prop_count, 0);
    dw_config_destroy(cfg);
}

static void test_trailing_slash(void **state)
{
    (void)state;
    static char *const env[] = {
        "DIST_CHANNEL_URIDONGNETV_URL=http://u/",     "DIST_CHANNEL_GINITV_URL=http://g:80/a/b/",
        "DIST_CHANNEL_RINGOBIZ_URL=HTTPS://r",        "DIST_CHANNEL_INSTAGRAM_URL=http://i///",
        "DIST_CHANNEL_NAVER_URL=https://n.example/x", ALL_TOKENS,
        "DIST_CHANNELS_ALLOW_INSECURE_HTTP=true",     NULL,
    };
    struct dw_config *cfg =
        load_ok("channels = { KAKAO = { url = \"http://127.0.0.1:8090/\"; }; };\n", env);
    assert_string_equal(cfg->channels[DW_CHANNEL_KAKAO].url, "http://127.0.0.1:8090");
    assert_string_equal(cfg->channels[DW_CHANNEL_URIDONGNETV].url, "http://u");
    assert_string_equal(cfg->channels[DW_CHANNEL_GINITV].url, "http://g:80/a/b");
    assert_string_equal(cfg->channels[DW_CHANNEL_RINGOBIZ].url, "HTTPS://r");
    assert_string_equal(cfg->channels[DW_CHANNEL_INSTAGRAM].url, "http://i");
    assert_string_equal(cfg->channels[DW_CHANNEL_NAVER].url, "https://n.example/x");
    dw_config_destroy(cfg);
}

/* Without a token every call would fail as a permanent 401: a missing or
 * empty token stops start-up, naming where it should come from. */
static void test_missing_token(void **state)
{
    (void)state;
    static char *const no_kakao[] = {ALL_URLS_ONLY,
                                     "DIST_CHANNEL_URIDONGNETV_TOKEN=tu",
                                     "DIST_CHANNEL_GINITV_TOKEN=tg",
                                     "DIST_CHANNEL_RINGOBIZ_TOKEN=tr",
                                     "DIST_CHANNEL_INSTAGRAM_TOKEN=ti",
                                     "DIST_CHANNEL_NAVER_TOKEN=tn",
                                     NULL};
    load_bad(NULL, no_kakao, "channels.KAKAO.token: missing", "DIST_CHANNEL_KAKAO_TOKEN", NULL);
    load_bad("channels = { KAKAO = { token = \"\"; }; };\n", no_kakao,
             "channels.KAKAO.token (line 1)", "missing or empty", NULL);
    static char *const empty_env[] = {ALL_URLS_ONLY, "DIST_CHANNEL_URIDONGNETV_TOKEN=", NULL};
    load_bad(NULL, empty_env, "DIST_CHANNEL_URIDONGNETV_TOKEN: missing or empty", NULL);
}

/* A DSN libpq cannot parse stops start-up and names the setting; libpq's
 * message quotes the bad part, but never the password. */
static void test_bad_dsn_is_refused_without_its_password(void **state)
{
    (void)state;
    static char *const uri_env[] = {ALL_URLS, "DIST_PG_DSN=postgresql://app:Pa%zzHunter22@db/x",
                                    NULL};
    struct dw_config *cfg = NULL;
    char err[512];
    assert_int_equal(dw_config_create(NULL, uri_env, &cfg, err, sizeof(err)), DW_ERR_CONFIG);
    assert_non_null(strstr(err, "DIST_PG_DSN: not a libpq connection string"));
    assert_null(strstr(err, "Hunter22"));
    assert_null(strstr(err, "Pa%zz"));

    load_bad("postgres = { dsn = \"host=db password='Hunter22 dbname=x\"; };\n", url_env,
             "postgres.dsn (line 1): not a libpq connection string", NULL);
    static char *const kw_env[] = {ALL_URLS, "DIST_PG_DSN=host=db password='Hunter22 x", NULL};
    assert_int_equal(dw_config_create(NULL, kw_env, &cfg, err, sizeof(err)), DW_ERR_CONFIG);
    assert_null(strstr(err, "Hunter22"));
}

static void test_management_port_must_differ(void **state)
{
    (void)state;
    static char *const env[] = {ALL_URLS, "DIST_HTTP_PORT=9000", "DIST_HTTP_MANAGEMENT_PORT=9000",
                                NULL};
    load_bad(NULL, env, "DIST_HTTP_MANAGEMENT_PORT: 9000 is also http.port", NULL);
    load_bad("http = { port = 8080; management_port = 8080; };\n", url_env,
             "http.management_port (line 1): 8080 is also http.port", NULL);
    struct dw_config *cfg = load_ok("http = { management_port = 8081; };\n", url_env);
    assert_int_equal(cfg->http_management_port, 8081);
    assert_int_equal(cfg->http_max_connections, 256);
    assert_int_equal(cfg->http_max_connections_per_client, 16);
    assert_int_equal(cfg->http_idle_timeout_s, 10);
    assert_int_equal(cfg->max_in_flight_bytes, 268435456);
    dw_config_destroy(cfg);
}

/* Errors quote what they refuse; a secret in it is masked. */
static void test_errors_mask_secrets(void **state)
{
    (void)state;
    struct dw_config *cfg = NULL;
    char err[512];
    struct tmpconf t;
    write_conf(&t, "kafka = { properties = [ \"sasl.password =Hunter22\" ]; };\n");
    assert_int_equal(dw_config_create(t.path, url_env, &cfg, err, sizeof(err)), DW_ERR_CONFIG);
    unlink(t.path);
    assert_non_null(strstr(err, "kafka.properties"));
    assert_null(strstr(err, "Hunter22"));
}

static void test_bad_file_syntax(void **state)
{
    (void)state;
    load_bad("kafka = {\n  brokers = ;\n};\n", url_env, "@FILE", ":2: syntax error", NULL);
    load_bad("worker = { threads = 1; threads = 2; };\n", url_env, "@FILE",
             ":1:", "duplicate setting", NULL);
    load_bad("@include \"/nonexistent/dw-secret.conf\"\n", url_env, "@FILE", ":1:", NULL);

    struct dw_config *cfg = (struct dw_config *)1;
    char err[256];
    assert_int_equal(dw_config_create("/nonexistent/dw.conf", url_env, &cfg, err, sizeof(err)),
                     DW_ERR_CONFIG);
    assert_null(cfg);
    assert_non_null(strstr(err, "/nonexistent/dw.conf: cannot open"));
}

static void test_bad_names(void **state)
{
    (void)state;
    load_bad("\nkafkaa = { brokers = \"x\"; };\n", url_env, "kafkaa (line 2): unknown setting",
             "kafka, postgres, http, log, worker, redrive, channels", NULL);
    load_bad("threads = 4;\n", url_env, "threads (line 1): unknown setting", NULL);
    load_bad("kafka = \"x\";\n", url_env, "kafka (line 1): expected a group", NULL);
    load_bad("worker = {\n"
             "  threads = 2;\n"
             "  threadz = 4;\n"
             "};\n",
             url_env, "worker.threadz (line 3): unknown setting", "known: threads,", NULL);
    load_bad(
        "channels = {\n  KAKAO = { url = \"https://k\"; };\n  FACEBOOK = { url = \"https://f\"; "
        "};\n};\n",
        url_env, "channels.FACEBOOK (line 3): unknown channel",
        "URIDONGNETV, GINITV, RINGOBIZ, INSTAGRAM, NAVER, KAKAO", NULL);
    load_bad("channels = { kakao = { url = \"https://k\"; }; };\n", url_env,
             "channels.kakao (line 1): unknown channel", NULL);
    load_bad("channels = { KAKAO = \"https://k\"; };\n", url_env,
             "channels.KAKAO (line 1): expected a group", NULL);
    load_bad("channels = { KAKAO = { url = \"https://k\"; timeoutms = 1; }; };\n", url_env,
             "channels.KAKAO.timeoutms (line 1): unknown setting", "timeout_ms", NULL);
    load_bad("channels = {\n defaults = {\n  url = \"https://all\"; }; };\n", url_env,
             "channels.defaults.url (line 3): unknown setting", "per channel", NULL);
    load_bad("channels = { defaults = { token = \"t\"; }; };\n", url_env,
             "channels.defaults.token (line 1): unknown setting", NULL);
}

static void test_bad_urls(void **state)
{
    (void)state;
    /* KAKAO missing, from the file's point of view. */
    load_bad("channels = {\n"
             "  URIDONGNETV = { url = \"https://u\"; token = \"tu\"; };\n"
             "  GINITV = { url = \"https://g\"; token = \"tg\"; };\n"
             "  RINGOBIZ = { url = \"https://r\"; token = \"tr\"; };\n"
             "  INSTAGRAM = { url = \"https://i\"; token = \"ti\"; };\n"
             "  NAVER = { url = \"https://n\"; token = \"tn\"; };\n"
             "  KAKAO = { token = \"only a token\"; };\n"
             "};\n",
             NULL, "channels.KAKAO.url: missing (set it in the file or DIST_CHANNEL_KAKAO_URL)",
             NULL);
    load_bad("channels = {\n KAKAO = {\n  url = \"ftp://k\"; }; };\n", url_env,
             "channels.KAKAO.url (line 3)", "\"ftp://k\" is not an http:// or https:// URL", NULL);
    load_bad("channels = { KAKAO = { url = \"\"; }; };\n", url_env,
             "channels.KAKAO.url (line 1): must not be empty", NULL);
    load_bad("channels = { KAKAO = { url = 8080; }; };\n", url_env,
             "channels.KAKAO.url (line 1): expected a string", NULL);
    load_bad("channels = { NAVER = { url = \"https://\"; }; };\n", url_env,
             "channels.NAVER.url (line 1)", "not an http", NULL);
    load_bad("channels = { NAVER = { url = \"https://a b\"; }; };\n", url_env,
             "channels.NAVER.url (line 1)", NULL);

    static char *const env_ftp[] = {ALL_URLS, "DIST_CHANNEL_GINITV_URL=ftp://g", NULL};
    /* env_lookup takes the first match, so put the bad one first. */
    static char *const env_bad_first[] = {"DIST_CHANNEL_GINITV_URL=ftp://g", ALL_URLS, NULL};
    struct dw_config *cfg = load_ok(NULL, env_ftp);
    dw_config_destroy(cfg);
    load_bad(NULL, env_bad_first, "DIST_CHANNEL_GINITV_URL: \"ftp://g\" is not an http", NULL);
    load_bad("channels = { GINITV = { url = \"https://g\"; }; };\n", env_bad_first,
             "DIST_CHANNEL_GINITV_URL:", NULL);

    static char *const env_ctl[] = {"DIST_CHANNEL_KAKAO_TOKEN=abc\r\nX-Evil: 1", ALL_URLS, NULL};
    load_bad(NULL, env_ctl, "DIST_CHANNEL_KAKAO_TOKEN: contains a control character", NULL);
}

static void test_bad_types_and_ranges(void **state)
{
    (void)state;
    load_bad("\n\n\n\nhttp = {\n  port = \"8080\"; };\n", url_env,
             "http.port (line 6): expected an integer", NULL);
    load_bad("http = { port = 80.0; };\n", url_env, "http.port (line 1): expected an integer",
             NULL);
    load_bad("http = { port = 65536; };\n", url_env,
             "http.port (line 1): 65536 is out of range 0..65535", NULL);
    load_bad("worker = {\n threads = -1; };\n", url_env,
             "worker.threads (line 2): -1 is out of range 1..64", NULL);
    load_bad("worker = { threads = 65; };\n", url_env,
             "worker.threads (line 1): 65 is out of range", NULL);
    load_bad("worker = { threads = 100000000000L; };\n", url_env,
             "worker.threads (line 1): 100000000000 is out of range 1..64", NULL);
    load_bad("worker = { max_in_flight_requests = 0; };\n", url_env,
             "worker.max_in_flight_requests (line 1): 0 is out of range 1..1000000", NULL);
    load_bad("worker = { max_in_flight_calls = 1000001; };\n", url_env,
             "worker.max_in_flight_calls (line 1)", NULL);
    load_bad("worker = { drain_timeout_ms = -5; };\n", url_env,
             "worker.drain_timeout_ms (line 1): -5 is out of range 0..3600000", NULL);
    load_bad("worker = { store_batch_max = 0; };\n", url_env, "worker.store_batch_max (line 1)",
             NULL);
    load_bad("worker = { result_hold_ms = 60001; };\n", url_env,
             "worker.result_hold_ms (line 1): 60001 is out of range 0..60000", NULL);
    load_bad("worker = { threads = true; };\n", url_env,
             "worker.threads (line 1): expected an integer", NULL);
    load_bad("channels = { defaults = {\n timeout_ms = 0; }; };\n", url_env,
             "channels.defaults.timeout_ms (line 2): 0 is out of range 1..3600000", NULL);
    load_bad("channels = { KAKAO = { connect_timeout_ms = 3600001; }; };\n", url_env,
             "channels.KAKAO.connect_timeout_ms (line 1)", "out of range", NULL);
    load_bad("channels = { KAKAO = { max_attempts = 21; }; };\n", url_env,
             "channels.KAKAO.max_attempts (line 1): 21 is out of range 1..20", NULL);
    load_bad("channels = { KAKAO = { max_attempts = 0; }; };\n", url_env,
             "channels.KAKAO.max_attempts (line 1): 0 is out of range 1..20", NULL);
    load_bad("channels = { NAVER = { multiplier = 0.5; }; };\n", url_env,
             "channels.NAVER.multiplier (line 1): 0.5 is out of range 1..10", NULL);
    load_bad("channels = { NAVER = { multiplier = 10.5; }; };\n", url_env,
             "channels.NAVER.multiplier (line 1)", NULL);
    load_bad("channels = { NAVER = { multiplier = \"2\"; }; };\n", url_env,
             "channels.NAVER.multiplier (line 1): expected a number", NULL);
    load_bad("channels = { RINGOBIZ = { max_concurrent = 0; }; };\n", url_env,
             "channels.RINGOBIZ.max_concurrent (line 1)", NULL);
    load_bad("channels = { RINGOBIZ = { max_retry_after_ms = -1; }; };\n", url_env,
             "channels.RINGOBIZ.max_retry_after_ms (line 1)", NULL);
    load_bad("channels = { RINGOBIZ = { initial_backoff_ms = 6000; }; };\n", url_env,
             "channels.RINGOBIZ.initial_backoff_ms (line 1): 6000 is more than max_backoff_ms",
             NULL);
    load_bad("channels = { RINGOBIZ = { token = 5; }; };\n", url_env,
             "channels.RINGOBIZ.token (line 1): expected a string", NULL);
    load_bad("kafka = { brokers = \"\"; };\n", url_env, "kafka.brokers (line 1): must not be empty",
             NULL);
    load_bad("kafka = { brokers = [ \"a\" ]; };\n", url_env,
             "kafka.brokers (line 1): expected a string", NULL);
    load_bad("kafka = { request_topic = \"bad topic\"; };\n", url_env,
             "kafka.request_topic (line 1): \"bad topic\" is not a topic name", NULL);
    load_bad("kafka = {\n dlq_topic = \"distribution-requests\"; };\n", url_env,
             "kafka.dlq_topic (line 2)", "kafka.request_topic", "must differ", NULL);
    load_bad("http = { bind_address = \"localhost\"; };\n", url_env,
             "http.bind_address (line 1): \"localhost\" is not an IPv4 or IPv6 address", NULL);
    load_bad("postgres = { dsn = 5; };\n", url_env, "postgres.dsn (line 1): expected a string",
             NULL);
    load_bad("log = {\n level = \"verbose\"; };\n", url_env,
             "log.level (line 2): \"verbose\" is not a log level", NULL);
    load_bad("log = { level = 1; };\n", url_env, "log.level (line 1): expected a string", NULL);
}

static void test_bad_kafka_properties(void **state)
{
    (void)state;
    load_bad("kafka = {\n properties = [\n \"a=b\",\n \"fetch.wait.max.ms\" ]; };\n", url_env,
             "kafka.properties[1] (line 4): \"fetch.wait.max.ms\" is not name=value", NULL);
    load_bad("kafka = { consumer_properties = [ \"=50\" ]; };\n", url_env,
             "kafka.consumer_properties[0] (line 1)", "is not name=value", NULL);
    load_bad("kafka = { producer_properties = [ \"linger.ms = 5\" ]; };\n", url_env,
             "kafka.producer_properties[0] (line 1)", NULL);
    load_bad("kafka = { properties = \"a=b\"; };\n", url_env,
             "kafka.properties (line 1): expected a list", NULL);
    load_bad("kafka = { properties = ( \"a=b\", 5 ); };\n", url_env,
             "kafka.properties[1] (line 1): expected a \"name=value\" string", NULL);
    load_bad("kafka = { properties = [ \"bootstrap.servers=x:1\" ]; };\n", url_env,
             "kafka.properties[0] (line 1)", "kafka.brokers", NULL);
    load_bad("kafka = { consumer_properties = [ \"group.id=x\" ]; };\n", url_env,
             "kafka.consumer_properties[0] (line 1)", "kafka.group", NULL);
}

static void test_bad_env(void **state)
{
    (void)state;
    static const char *const ports[] = {
        "abc", "", " 80", "80x", "65536", "-1", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
        char var[64];
        char want[96];
        dw_snprintf(var, sizeof(var), "DIST_HTTP_PORT=%s", ports[i]);
        dw_snprintf(want, sizeof(want), "DIST_HTTP_PORT: \"%s\" is not a port number 0..65535",
                    ports[i]);
        char *const env[] = {var, ALL_URLS, NULL};
        /* The file's valid port loses to the bad variable, which is named. */
        load_bad("http = { port = 8080; };\n", env, want, NULL);
    }

    static char *const level[] = {"DIST_LOG_LEVEL=loud", ALL_URLS, NULL};
    load_bad("log = { level = \"info\"; };\n", level, "DIST_LOG_LEVEL: \"loud\" is not a log level",
             NULL);
    static char *const brokers[] = {"DIST_KAFKA_BROKERS=", ALL_URLS, NULL};
    load_bad(NULL, brokers, "DIST_KAFKA_BROKERS: must not be empty", NULL);
    static char *const group[] = {"DIST_KAFKA_GROUP=", ALL_URLS, NULL};
    load_bad(NULL, group, "DIST_KAFKA_GROUP: must not be empty", NULL);
    static char *const topic[] = {"DIST_REQUEST_TOPIC=a/b", ALL_URLS, NULL};
    load_bad(NULL, topic, "DIST_REQUEST_TOPIC: \"a/b\" is not a topic name", NULL);
    static char *const same[] = {"DIST_DLQ_TOPIC=distribution-completed", ALL_URLS, NULL};
    load_bad(NULL, same, "DIST_DLQ_TOPIC:", "kafka.completed_topic", NULL);
    static char *const completed[] = {"DIST_COMPLETED_TOPIC=", ALL_URLS, NULL};
    load_bad(NULL, completed, "DIST_COMPLETED_TOPIC: must not be empty", NULL);
    static char *const dsn[] = {"DIST_PG_DSN=", ALL_URLS, NULL};
    load_bad(NULL, dsn, "DIST_PG_DSN: must not be empty", NULL);
    static char *const url[] = {"DIST_CHANNEL_NAVER_URL=naver.example", ALL_URLS, NULL};
    load_bad(NULL, url, "DIST_CHANNEL_NAVER_URL: \"naver.example\" is not an http", NULL);
}

static void test_small_errbuf(void **state)
{
    (void)state;
    struct dw_config *cfg = NULL;
    char err[8];
    static char *const bad[] = {"DIST_HTTP_PORT=x", ALL_URLS, NULL};

    assert_int_equal(dw_config_create(NULL, bad, &cfg, err, sizeof(err)), DW_ERR_CONFIG);
    assert_int_equal(strlen(err), sizeof(err) - 1);
    assert_int_equal(dw_config_create(NULL, bad, &cfg, NULL, 0), DW_ERR_CONFIG);
    assert_null(cfg);
    dw_config_destroy(NULL);
}

static void test_include(void **state)
{
    (void)state;
    char dir[] = "/tmp/dw-test-config-dir-XXXXXX";
    char main_path[128];
    char secret_path[128];
    char err[512];
    struct dw_config *cfg = NULL;
    FILE *fp;

    assert_non_null(mkdtemp(dir));
    dw_snprintf(main_path, sizeof(main_path), "%s/main.conf", dir);
    dw_snprintf(secret_path, sizeof(secret_path), "%s/secret.conf", dir);
    assert_non_null(fp = fopen(secret_path, "w"));
    fputs(
        "channels = {\n  KAKAO = { token = \"secret\"; };\n  NAVER = { max_attempts = 99; };\n};\n",
        fp);
    fclose(fp);
    assert_non_null(fp = fopen(main_path, "w"));
    fputs("# tokens live next door\n@include \"secret.conf\"\n", fp);
    fclose(fp);

    /* Every channel's URL and token but KAKAO's token, which the file gives. */
    static char *const env[] = {
        ALL_URLS_ONLY,
        "DIST_CHANNEL_URIDONGNETV_TOKEN=tu",
        "DIST_CHANNEL_GINITV_TOKEN=tg",
        "DIST_CHANNEL_RINGOBIZ_TOKEN=tr",
        "DIST_CHANNEL_INSTAGRAM_TOKEN=ti",
        "DIST_CHANNEL_NAVER_TOKEN=tn",
        NULL,
    };
    /* Relative to the main file's directory, whatever the working directory. */
    assert_int_equal(dw_config_create(main_path, env, &cfg, err, sizeof(err)), DW_ERR_CONFIG);
    assert_null(cfg);
    assert_non_null(strstr(err, "channels.NAVER.max_attempts (line 3 of "));
    assert_non_null(strstr(err, "secret.conf)"));

    assert_non_null(fp = fopen(secret_path, "w"));
    fputs("channels = { KAKAO = { token = \"secret\"; }; };\n", fp);
    fclose(fp);
    assert_int_equal(dw_config_create(main_path, env, &cfg, err, sizeof(err)), DW_OK);
    assert_string_equal(cfg->channels[DW_CHANNEL_KAKAO].token, "secret");
    dw_config_destroy(cfg);

    unlink(secret_path);
    unlink(main_path);
    rmdir(dir);
}

/* The reference file of the repository. */
static bool find_reference_conf(char *path, size_t len)
{
    const char *src = getenv("DW_SOURCE_DIR");
    static const char *const tries[] = {"../conf/distribution-worker.conf",
                                        "conf/distribution-worker.conf"};

    if (src && src[0]) {
        dw_snprintf(path, len, "%s/conf/distribution-worker.conf", src);
        return access(path, R_OK) == 0;
    }
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        if (access(tries[i], R_OK) == 0) {
            dw_strlcpy(path, tries[i], len);
            return true;
        }
    }
    return false;
}

static void check_props_with_librdkafka(const struct dw_kafka_prop *props, size_t count)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char why[512];

    for (size_t i = 0; i < count; i++) {
        if (rd_kafka_conf_set(conf, props[i].name, props[i].value, why, sizeof(why)) !=
            RD_KAFKA_CONF_OK)
            fail_msg("librdkafka refuses %s=%s: %s", props[i].name, props[i].value, why);
    }
    rd_kafka_conf_destroy(conf);
}

static void test_reference_conf(void **state)
{
    (void)state;
    char path[1024];
    char err[512];
    struct dw_config *cfg = NULL;
    static char *const no_env[] = {NULL};

    if (!find_reference_conf(path, sizeof(path)))
        fail_msg("conf/distribution-worker.conf not found (set DW_SOURCE_DIR)");
    if (dw_config_create(path, no_env, &cfg, err, sizeof(err)) != DW_OK)
        fail_msg("%s does not load: %s", path, err);

    /* The developer defaults scripts/run relies on. */
    assert_string_equal(cfg->kafka_brokers, "localhost:9092");
    assert_string_equal(cfg->request_topic, "distribution-requests");
    assert_string_equal(cfg->completed_topic, "distribution-completed");
    assert_string_equal(cfg->dlq_topic, "distribution-requests.dlq");
    assert_int_equal(cfg->http_port, 8080);
    assert_int_equal(cfg->log_level, DW_LOG_INFO);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        char token[64];
        char lower[32];
        const char *name = dw_channel_name((enum dw_channel_id)c);
        size_t i;
        for (i = 0; name[i] && i + 1 < sizeof(lower); i++)
            lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
        lower[i] = '\0';
        dw_snprintf(token, sizeof(token), "dev-token-%s", lower);
        /* Production-like: https:// placeholders, verified with the system's store. */
        assert_true(strncmp(cfg->channels[c].url, "https://", 8) == 0);
        assert_null(cfg->channels[c].ca_file);
        assert_int_equal(cfg->channels[c].http_version, DW_HTTP_AUTO);
        assert_string_equal(cfg->channels[c].token, token);
        assert_int_equal(cfg->channels[c].max_attempts, 3);
    }
    assert_false(cfg->allow_insecure_http);
    assert_true(cfg->kafka_prop_count > 0);
    assert_true(cfg->consumer_prop_count > 0);
    assert_true(cfg->producer_prop_count > 0);
    check_props_with_librdkafka(cfg->kafka_props, cfg->kafka_prop_count);
    check_props_with_librdkafka(cfg->consumer_props, cfg->consumer_prop_count);
    check_props_with_librdkafka(cfg->producer_props, cfg->producer_prop_count);
    dw_config_destroy(cfg);

    /* And the scripts' overrides still win over it. */
    static char *const env[] = {"DIST_CHANNEL_KAKAO_URL=http://127.0.0.1:39999", "DIST_HTTP_PORT=0",
                                "DIST_CHANNELS_ALLOW_INSECURE_HTTP=true", NULL};
    assert_int_equal(dw_config_create(path, env, &cfg, err, sizeof(err)), DW_OK);
    assert_string_equal(cfg->channels[DW_CHANNEL_KAKAO].url, "http://127.0.0.1:39999");
    assert_int_equal(cfg->http_port, 0);
    dw_config_destroy(cfg);
}

/* Flow control (docs/resilience.md): the adaptive limit is on by default,
 * starting at 8; "fixed" and every limit key can be set per channel from
 * the file or DIST_CHANNEL_<NAME>_<KEY>; a floor above max_concurrent is
 * refused naming both settings. */
static void test_flow_settings(void **state)
{
    (void)state;
    struct dw_config *cfg = load_ok(FILE_URLS, NULL);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const struct dw_channel_config *ch = &cfg->channels[c];
        assert_int_equal(ch->limit.mode, DW_LIMIT_ADAPTIVE);
        assert_int_equal(ch->limit.initial, 8);
        assert_int_equal(ch->limit.min, 1);
        assert_true(ch->limit.tolerance == 2.0);
        assert_true(ch->limit.backoff == 0.9);
        assert_int_equal(ch->limit_for_period, 0);
        assert_int_equal(ch->limit_refresh_period_ms, 1000);
        assert_int_equal(ch->max_connects_per_second, 2000);
    }
    dw_config_destroy(cfg);

    static char *const env[] = {ALL_URLS, "DIST_CHANNEL_KAKAO_LIMIT=fixed",
                                "DIST_CHANNEL_NAVER_LIMIT_FOR_PERIOD=5", NULL};
    cfg = load_ok("channels = {\n"
                  "  defaults = { limit_initial = 4; limit_tolerance = 1.5; };\n"
                  "  NAVER = { limit_refresh_period_ms = 200; max_connects_per_second = 0; };\n"
                  "};\n",
                  env);
    assert_int_equal(cfg->channels[DW_CHANNEL_KAKAO].limit.mode, DW_LIMIT_FIXED);
    assert_int_equal(cfg->channels[DW_CHANNEL_GINITV].limit.mode, DW_LIMIT_ADAPTIVE);
    assert_int_equal(cfg->channels[DW_CHANNEL_GINITV].limit.initial, 4);
    assert_true(cfg->channels[DW_CHANNEL_GINITV].limit.tolerance == 1.5);
    assert_int_equal(cfg->channels[DW_CHANNEL_NAVER].limit_for_period, 5);
    assert_int_equal(cfg->channels[DW_CHANNEL_NAVER].limit_refresh_period_ms, 200);
    assert_int_equal(cfg->channels[DW_CHANNEL_NAVER].max_connects_per_second, 0);
    dw_config_destroy(cfg);

    static char *const bad_mode[] = {"DIST_CHANNEL_KAKAO_LIMIT=vegas", ALL_URLS, NULL};
    load_bad(NULL, bad_mode, "DIST_CHANNEL_KAKAO_LIMIT: \"vegas\" is not one of fixed, adaptive",
             NULL);
    load_bad("channels = { KAKAO = { limit_backoff = 1.0; }; };\n", url_env,
             "channels.KAKAO.limit_backoff (line 1)", "out of range", NULL);
    load_bad("channels = { KAKAO = { limit_min = 50; max_concurrent = 10; }; };\n", url_env,
             "channels.KAKAO.limit_min (line 1): 50 is more than max_concurrent 10",
             "channels.KAKAO.max_concurrent (line 1)", NULL);
}

/* The resilience settings (docs/resilience.md): defaults, file values
 * with per-channel overrides, DIST_CHANNEL_<NAME>_BREAKER and the generic
 * DIST_CHANNEL_<NAME>_<KEY> variables, and their validation. */
static void test_resilience_settings(void **state)
{
    (void)state;
    struct dw_config *cfg = load_ok(FILE_URLS, NULL);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const struct dw_channel_config *ch = &cfg->channels[c];
        assert_int_equal(ch->bulkhead_max_wait_ms, 60000);
        assert_int_equal(ch->budget_max_tokens, 100);
        assert_true(ch->budget_token_ratio == 0.1);
        assert_int_equal(ch->deadline_ms, 60000);
        assert_int_equal(ch->breaker.mode, DW_BREAKER_MODE_NORMAL);
        assert_int_equal(ch->breaker.window_type, DW_BREAKER_WINDOW_COUNT);
        assert_int_equal(ch->breaker.window_size, 100);
        assert_int_equal(ch->breaker.window_seconds, 60);
        assert_int_equal(ch->breaker.minimum_calls, 20);
        assert_true(ch->breaker.failure_rate_threshold == 50);
        assert_true(ch->breaker.slow_call_rate_threshold == 100);
        assert_int_equal(ch->breaker.slow_call_duration_ms, 5000);
        assert_int_equal(ch->breaker.open_wait_ms, 30000);
        assert_int_equal(ch->breaker.half_open_calls, 5);
        assert_int_equal(ch->breaker.half_open_max_wait_ms, 60000);
    }
    dw_config_destroy(cfg);

    static char *const env[] = {
        ALL_URLS,
        "DIST_CHANNEL_KAKAO_BREAKER=FORCED_OPEN",
        "DIST_CHANNEL_NAVER_BREAKER_MINIMUM_CALLS=7",
        "DIST_CHANNEL_NAVER_BREAKER_FAILURE_RATE_THRESHOLD=33.5",
        "DIST_CHANNEL_NAVER_MAX_CONCURRENT=3",
        "DIST_CHANNEL_NAVER_TIMEOUT_MS=700",
        NULL,
    };
    cfg = load_ok("channels = {\n"
                  "  defaults = { breaker_window_type = \"time\"; breaker_window_seconds = 30;\n"
                  "               breaker_open_wait_ms = 1000; bulkhead_max_wait_ms = 0;\n"
                  "               budget_max_tokens = 0; budget_token_ratio = 0.5;\n"
                  "               deadline_ms = 0; breaker_slow_call_rate_threshold = 80.0; };\n"
                  "  GINITV = { breaker_state = \"disabled\"; breaker_half_open_calls = 2;\n"
                  "             breaker_half_open_max_wait_ms = 0; };\n"
                  "  KAKAO = { breaker_state = \"normal\"; };\n"
                  "};\n",
                  env);
    const struct dw_channel_config *ginitv = &cfg->channels[DW_CHANNEL_GINITV];
    const struct dw_channel_config *kakao = &cfg->channels[DW_CHANNEL_KAKAO];
    const struct dw_channel_config *naver = &cfg->channels[DW_CHANNEL_NAVER];
    assert_int_equal(ginitv->breaker.mode, DW_BREAKER_MODE_DISABLED);
    assert_int_equal(ginitv->breaker.half_open_calls, 2);
    assert_int_equal(ginitv->breaker.half_open_max_wait_ms, 0);
    assert_int_equal(ginitv->breaker.window_type, DW_BREAKER_WINDOW_TIME);
    assert_int_equal(ginitv->breaker.window_seconds, 30);
    assert_int_equal(ginitv->bulkhead_max_wait_ms, 0);
    assert_int_equal(ginitv->budget_max_tokens, 0);
    assert_true(ginitv->budget_token_ratio == 0.5);
    assert_int_equal(ginitv->deadline_ms, 0);
    assert_true(ginitv->breaker.slow_call_rate_threshold == 80);
    assert_int_equal(kakao->breaker.mode, DW_BREAKER_MODE_FORCED_OPEN); /* the env wins */
    assert_int_equal(kakao->breaker.open_wait_ms, 1000);
    assert_int_equal(naver->breaker.mode, DW_BREAKER_MODE_NORMAL);
    assert_int_equal(naver->breaker.minimum_calls, 7);
    assert_true(naver->breaker.failure_rate_threshold == 33.5);
    assert_int_equal(naver->max_concurrent, 3);
    assert_int_equal(naver->timeout_ms, 700);
    assert_int_equal(cfg->channels[DW_CHANNEL_RINGOBIZ].max_concurrent, 500);
    dw_config_destroy(cfg);

    load_bad("channels = { KAKAO = { breaker_state = \"off\"; }; };\n", url_env,
             "channels.KAKAO.breaker_state (line 1): \"off\" is not one of normal, forced_open, "
             "disabled",
             NULL);
    load_bad("channels = { KAKAO = { breaker_state = 1; }; };\n", url_env,
             "channels.KAKAO.breaker_state (line 1): expected a string", NULL);
    load_bad("channels = { defaults = { breaker_window_type = \"sliding\"; }; };\n", url_env,
             "channels.defaults.breaker_window_type (line 1)", "count, time", NULL);
    load_bad("channels = { KAKAO = { breaker_failure_rate_threshold = 0.5; }; };\n", url_env,
             "channels.KAKAO.breaker_failure_rate_threshold (line 1): 0.5 is out of range 1..100",
             NULL);
    load_bad("channels = { KAKAO = { breaker_window_size = 0; }; };\n", url_env,
             "channels.KAKAO.breaker_window_size (line 1): 0 is out of range 1..10000", NULL);
    load_bad("channels = { KAKAO = { breaker_half_open_calls = 0; }; };\n", url_env,
             "channels.KAKAO.breaker_half_open_calls (line 1)", NULL);
    load_bad("channels = { KAKAO = { budget_token_ratio = 0; }; };\n", url_env,
             "channels.KAKAO.budget_token_ratio (line 1)", "out of range", NULL);
    load_bad("channels = { KAKAO = { deadline_ms = -1; }; };\n", url_env,
             "channels.KAKAO.deadline_ms (line 1)", NULL);
    static char *const bad_state[] = {"DIST_CHANNEL_RINGOBIZ_BREAKER=closed", ALL_URLS, NULL};
    load_bad(NULL, bad_state,
             "DIST_CHANNEL_RINGOBIZ_BREAKER: \"closed\" is not one of normal, forced_open, "
             "disabled",
             NULL);
    static char *const bad_double[] = {"DIST_CHANNEL_NAVER_BUDGET_TOKEN_RATIO=lots", ALL_URLS,
                                       NULL};
    load_bad(NULL, bad_double,
             "DIST_CHANNEL_NAVER_BUDGET_TOKEN_RATIO: \"lots\" is not a number in 0.001..100", NULL);
    static char *const bad_int[] = {"DIST_CHANNEL_NAVER_MAX_CONCURRENT=0", ALL_URLS, NULL};
    load_bad(NULL, bad_int,
             "DIST_CHANNEL_NAVER_MAX_CONCURRENT: \"0\" is not an integer in 1..100000", NULL);
    /* The list of known keys in an error still fits. */
    load_bad("channels = { KAKAO = { breaker_windowsize = 1; }; };\n", url_env,
             "channels.KAKAO.breaker_windowsize (line 1): unknown setting", "breaker_window_size",
             NULL);
}

/* Kafka SASL credentials become librdkafka properties after the file's (so
 * they win); sslmode and sslrootcert become DSN parameters, in the DSN's own
 * form; a bad sslmode is refused with the variable's name. */
static void test_security_settings(void **state)
{
    (void)state;
    char *const env[] = {ALL_URLS,
                         "DIST_KAFKA_SASL_USERNAME=$ConnectionString",
                         "DIST_KAFKA_SASL_PASSWORD=Endpoint=sb://ns/;SharedAccessKey=k=",
                         "DIST_PG_DSN=host=db user=u",
                         "DIST_PG_SSLMODE=verify-full",
                         "DIST_PG_SSLROOTCERT=/etc/ca dir/it's.crt",
                         NULL};
    struct dw_config *cfg = load_ok("kafka = { properties = [ \"sasl.username=old\" ]; };\n", env);
    assert_int_equal(cfg->kafka_prop_count, 3);
    assert_string_equal(cfg->kafka_props[1].name, "sasl.username");
    assert_string_equal(cfg->kafka_props[1].value, "$ConnectionString");
    assert_string_equal(cfg->kafka_props[2].name, "sasl.password");
    assert_string_equal(cfg->kafka_props[2].value, "Endpoint=sb://ns/;SharedAccessKey=k=");
    assert_string_equal(
        cfg->pg_dsn, "host=db user=u sslmode='verify-full' sslrootcert='/etc/ca dir/it\\'s.crt'");
    dw_config_destroy(cfg);

    cfg = load_ok("postgres = { dsn = \"postgresql://u@db/x?connect_timeout=5\"; sslmode = "
                  "\"require\"; sslrootcert = \"/a b/c.crt\"; };\n",
                  url_env);
    assert_string_equal(
        cfg->pg_dsn,
        "postgresql://u@db/x?connect_timeout=5&sslmode=require&sslrootcert=/a%20b/c.crt");
    assert_int_equal(cfg->kafka_prop_count, 0);
    dw_config_destroy(cfg);

    char *const bad[] = {ALL_URLS, "DIST_PG_SSLMODE=on", NULL};
    load_bad(NULL, bad, "DIST_PG_SSLMODE", "\"on\" is not an sslmode", NULL);
    load_bad("postgres = { sslmode = \"yes\"; };\n", url_env, "postgres.sslmode (line 1)", NULL);
}

/* kafka.commit_interval_ms: default, file, environment, range; on Event
 * Hubs at least 250 ms, and message.max.bytes below its request limit. */
static void test_commit_interval_and_event_hubs(void **state)
{
    (void)state;
    struct dw_config *cfg = load_ok(NULL, url_env);
    assert_int_equal(cfg->commit_interval_ms, 1000);
    dw_config_destroy(cfg);
    cfg = load_ok("kafka = { commit_interval_ms = 100; };\n", url_env);
    assert_int_equal(cfg->commit_interval_ms, 100);
    dw_config_destroy(cfg);
    char *const env[] = {ALL_URLS, "DIST_KAFKA_COMMIT_INTERVAL_MS=250", NULL};
    cfg = load_ok("kafka = { commit_interval_ms = 100; };\n", env);
    assert_int_equal(cfg->commit_interval_ms, 250);
    dw_config_destroy(cfg);
    load_bad("kafka = { commit_interval_ms = 5; };\n", url_env, "kafka.commit_interval_ms (line 1)",
             "5 is out of range 10..60000", NULL);
    char *const zero[] = {ALL_URLS, "DIST_KAFKA_COMMIT_INTERVAL_MS=0", NULL};
    load_bad(NULL, zero, "DIST_KAFKA_COMMIT_INTERVAL_MS", NULL);

    /* Event Hubs: the brokers say so. */
    const char *eh = "kafka = { brokers = \"myns.servicebus.windows.net:9093\";\n"
                     "  commit_interval_ms = 100; };\n";
    load_bad(eh, url_env, "kafka.commit_interval_ms (line 2)", "100 is below 250", "Event Hubs",
             NULL);
    char *const eh_env[] = {ALL_URLS, "DIST_KAFKA_BROKERS=ns.servicebus.windows.net:9093",
                            "DIST_KAFKA_COMMIT_INTERVAL_MS=200", NULL};
    load_bad(NULL, eh_env, "DIST_KAFKA_COMMIT_INTERVAL_MS", "DIST_KAFKA_BROKERS is", NULL);
    cfg = load_ok("kafka = { brokers = \"ns.servicebus.windows.net:9093\";\n"
                  "  producer_properties = [ \"message.max.bytes=1046527\" ]; };\n",
                  url_env);
    assert_int_equal(cfg->commit_interval_ms, 1000);
    dw_config_destroy(cfg);
    load_bad("kafka = { brokers = \"ns.servicebus.windows.net:9093\";\n"
             "  producer_properties = [ \"linger.ms=5\",\n \"message.max.bytes=2097152\" ]; };\n",
             url_env, "kafka.producer_properties (line 2)", "message.max.bytes=2097152", NULL);
    load_bad("kafka = { brokers = \"ns.servicebus.windows.net:9093\";\n"
             "  properties = [ \"message.max.bytes=1046528\" ]; };\n",
             url_env, "kafka.properties (line 2)", NULL);
    /* Elsewhere a broker may allow more, and 100 ms commits. */
    cfg = load_ok("kafka = { commit_interval_ms = 100;\n"
                  "  producer_properties = [ \"message.max.bytes=2097152\" ]; };\n",
                  url_env);
    dw_config_destroy(cfg);
}

/* The re-drive settings: defaults of CONTRACT 2.4, file and environment,
 * the empty list that turns it off, and bad values named. */
static void test_redrive_settings(void **state)
{
    (void)state;
    struct dw_config *cfg = load_ok(NULL, url_env);
    assert_int_equal(cfg->redrive.tiers, 5);
    assert_int_equal(cfg->redrive.delays_ms[0], 60000);
    assert_int_equal(cfg->redrive.delays_ms[4], 21600000);
    assert_int_equal(cfg->redrive.max_age_ms, 86400000);
    assert_int_equal(cfg->redrive_mode, DW_REDRIVE_ACTIVE);
    assert_int_equal(cfg->redrive_lease_ms, 600000);
    dw_config_destroy(cfg);

    cfg = load_ok("redrive = { delays_ms = \"100, 200\"; max_age_ms = 5000; mode = \"paused\";"
                  " lease_ms = 2000; };\n" FILE_URLS,
                  NULL);
    assert_int_equal(cfg->redrive.tiers, 2);
    assert_int_equal(cfg->redrive.delays_ms[1], 200);
    assert_int_equal(cfg->redrive.max_age_ms, 5000);
    assert_int_equal(cfg->redrive_mode, DW_REDRIVE_PAUSED);
    assert_int_equal(cfg->redrive_lease_ms, 2000);
    dw_config_destroy(cfg);

    char *const env_off[] = {ALL_URLS, "DIST_REDRIVE_DELAYS_MS=", "DIST_REDRIVE_MAX_AGE_MS=1000",
                             "DIST_REDRIVE_MODE=PAUSED", NULL};
    cfg = load_ok("redrive = { delays_ms = \"100\"; };\n", env_off);
    assert_int_equal(cfg->redrive.tiers, 0);
    assert_int_equal(cfg->redrive.max_age_ms, 1000);
    assert_int_equal(cfg->redrive_mode, DW_REDRIVE_PAUSED);
    dw_config_destroy(cfg);

    char *const env_bad[] = {ALL_URLS, "DIST_REDRIVE_DELAYS_MS=60000,soon", NULL};
    load_bad(NULL, env_bad, "DIST_REDRIVE_DELAYS_MS", "soon", NULL);
    char *const env_zero[] = {ALL_URLS, "DIST_REDRIVE_DELAYS_MS=0", NULL};
    load_bad(NULL, env_zero, "DIST_REDRIVE_DELAYS_MS", NULL);
    char *const env_age[] = {ALL_URLS, "DIST_REDRIVE_MAX_AGE_MS=0", NULL};
    load_bad(NULL, env_age, "DIST_REDRIVE_MAX_AGE_MS", NULL);
    char *const env_mode[] = {ALL_URLS, "DIST_REDRIVE_MODE=off", NULL};
    load_bad(NULL, env_mode, "DIST_REDRIVE_MODE", "active, paused", NULL);
    load_bad(FILE_URLS "redrive = {\n  delays_ms = \"1,,2\";\n};\n", NULL, "redrive.delays_ms",
             "line 10", NULL);
}

/* http:// channel URLs are refused unless allowed, naming the URL's
 * setting; channels.allow_insecure_http from the file or the environment
 * allows them, the environment winning; anything but true or false is
 * refused. */
static void test_insecure_http_policy(void **state)
{
    (void)state;
    char *const one_plain[] = {ALL_URLS, "DIST_CHANNEL_NAVER_URL=http://n", NULL};
    char *const plain_allowed[] = {"DIST_CHANNEL_NAVER_URL=http://n", ALL_URLS,
                                   "DIST_CHANNELS_ALLOW_INSECURE_HTTP=TRUE", NULL};
    char *const plain_denied[] = {"DIST_CHANNEL_NAVER_URL=http://n", ALL_URLS,
                                  "DIST_CHANNELS_ALLOW_INSECURE_HTTP=false", NULL};
    char *const bad_bool[] = {ALL_URLS, "DIST_CHANNELS_ALLOW_INSECURE_HTTP=yes", NULL};

    /* env_lookup takes the first match: one_plain's NAVER is https. */
    struct dw_config *cfg = load_ok(NULL, one_plain);
    assert_false(cfg->allow_insecure_http);
    dw_config_destroy(cfg);

    char *const others[] = {"DIST_CHANNEL_URIDONGNETV_URL=https://u",
                            "DIST_CHANNEL_GINITV_URL=https://g",
                            "DIST_CHANNEL_RINGOBIZ_URL=https://r",
                            "DIST_CHANNEL_INSTAGRAM_URL=https://i",
                            "DIST_CHANNEL_NAVER_URL=https://n",
                            ALL_TOKENS,
                            NULL};
    load_bad("channels = {\n KAKAO = {\n  url = \"http://k\"; }; };\n", others,
             "channels.KAKAO.url (line 3)", "\"http://k\" is plain HTTP, refused",
             "channels.allow_insecure_http", "DIST_CHANNELS_ALLOW_INSECURE_HTTP", NULL);
    load_bad(NULL, plain_denied, "DIST_CHANNEL_NAVER_URL: \"http://n\" is plain HTTP", NULL);
    load_bad("channels = { allow_insecure_http = true; };\n", plain_denied,
             "DIST_CHANNEL_NAVER_URL: \"http://n\" is plain HTTP", NULL);

    cfg = load_ok(NULL, plain_allowed);
    assert_true(cfg->allow_insecure_http);
    assert_string_equal(cfg->channels[DW_CHANNEL_NAVER].url, "http://n");
    dw_config_destroy(cfg);
    cfg = load_ok("channels = {\n  allow_insecure_http = true;\n"
                  "  KAKAO = { url = \"http://k\"; };\n};\n",
                  others);
    assert_true(cfg->allow_insecure_http);
    assert_string_equal(cfg->channels[DW_CHANNEL_KAKAO].url, "http://k");
    dw_config_destroy(cfg);

    load_bad(NULL, bad_bool, "DIST_CHANNELS_ALLOW_INSECURE_HTTP: \"yes\" is not true or false",
             NULL);
    load_bad("channels = {\n  allow_insecure_http = 1;\n};\n", url_env,
             "channels.allow_insecure_http (line 2): expected true or false", NULL);
}

/* A CA file that is there and holds a certificate. */
static void write_pem(char *path, size_t len, const char *text)
{
    dw_strlcpy(path, "/tmp/dw-test-ca-XXXXXX", len);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(close(fd), 0);
}

/* ca_file: from defaults, a channel or DIST_CHANNEL_<CHANNEL>_CA_FILE;
 * missing, unreadable or certificate-less files stop the load naming the
 * setting; "" from the environment is the system's store again. */
static void test_ca_file(void **state)
{
    (void)state;
    char pem[64], junk[64], conf[256], env_ca[128], env_junk[128];
    write_pem(pem, sizeof(pem),
              "# a bundle\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    write_pem(junk, sizeof(junk), "not a certificate\n");

    dw_snprintf(conf, sizeof(conf), "channels = { defaults = { ca_file = \"%s\"; }; };\n", pem);
    struct dw_config *cfg = load_ok(conf, url_env);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++)
        assert_string_equal(cfg->channels[c].ca_file, pem);
    dw_config_destroy(cfg);

    cfg = load_ok(FILE_URLS, NULL);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++)
        assert_null(cfg->channels[c].ca_file);
    dw_config_destroy(cfg);

    dw_snprintf(env_ca, sizeof(env_ca), "DIST_CHANNEL_KAKAO_CA_FILE=%s", pem);
    char *const env_one[] = {ALL_URLS, env_ca, NULL};
    cfg = load_ok(NULL, env_one);
    assert_string_equal(cfg->channels[DW_CHANNEL_KAKAO].ca_file, pem);
    assert_null(cfg->channels[DW_CHANNEL_NAVER].ca_file);
    dw_config_destroy(cfg);

    char *const env_reset[] = {ALL_URLS, "DIST_CHANNEL_KAKAO_CA_FILE=", NULL};
    cfg = load_ok(conf, env_reset);
    assert_string_equal(cfg->channels[DW_CHANNEL_KAKAO].ca_file, "");
    assert_string_equal(cfg->channels[DW_CHANNEL_NAVER].ca_file, pem);
    dw_config_destroy(cfg);

    char *const env_missing[] = {ALL_URLS, "DIST_CHANNEL_KAKAO_CA_FILE=/nonexistent/ca.pem", NULL};
    load_bad(NULL, env_missing,
             "DIST_CHANNEL_KAKAO_CA_FILE: cannot open \"/nonexistent/ca.pem\": No such file", NULL);
    load_bad("channels = {\n  GINITV = {\n    ca_file = \"/nonexistent/ca.pem\";\n  };\n};\n",
             url_env, "channels.GINITV.ca_file (line 3): cannot open", NULL);
    /* A directory opens, and then cannot be read. */
    char *const env_dir[] = {ALL_URLS, "DIST_CHANNEL_KAKAO_CA_FILE=/tmp", NULL};
    load_bad(NULL, env_dir, "DIST_CHANNEL_KAKAO_CA_FILE: cannot read \"/tmp\"", NULL);
    dw_snprintf(env_junk, sizeof(env_junk), "DIST_CHANNEL_KAKAO_CA_FILE=%s", junk);
    char *const env_nocert[] = {ALL_URLS, env_junk, NULL};
    load_bad(NULL, env_nocert, "DIST_CHANNEL_KAKAO_CA_FILE:", "holds no PEM certificate", NULL);

    unlink(pem);
    unlink(junk);
}

/* http_version: auto by default; 1.1 and h2c by name from the file or the
 * environment; h2c on an https:// URL is refused naming http_version. */
static void test_http_version(void **state)
{
    (void)state;
    struct dw_config *cfg = load_ok(FILE_URLS, NULL);
    for (int c = 0; c < DW_CHANNEL_COUNT; c++)
        assert_int_equal(cfg->channels[c].http_version, DW_HTTP_AUTO);
    dw_config_destroy(cfg);

    char *const env[] = {ALL_URLS, "DIST_CHANNEL_KAKAO_HTTP_VERSION=1.1", NULL};
    cfg = load_ok("channels = { NAVER = { http_version = \"auto\"; }; };\n", env);
    assert_int_equal(cfg->channels[DW_CHANNEL_KAKAO].http_version, DW_HTTP_1_1);
    assert_int_equal(cfg->channels[DW_CHANNEL_NAVER].http_version, DW_HTTP_AUTO);
    dw_config_destroy(cfg);

    char *const h2c_env[] = {"DIST_CHANNEL_KAKAO_URL=http://k", ALL_URLS,
                             "DIST_CHANNELS_ALLOW_INSECURE_HTTP=true",
                             "DIST_CHANNEL_KAKAO_HTTP_VERSION=H2C", NULL};
    cfg = load_ok(NULL, h2c_env);
    assert_int_equal(cfg->channels[DW_CHANNEL_KAKAO].http_version, DW_HTTP_H2C);
    dw_config_destroy(cfg);

    load_bad("channels = {\n defaults = {\n  http_version = \"h2c\"; }; };\n", url_env,
             "channels.defaults.http_version (line 3)", "h2c is HTTP/2 over plain http://", NULL);
    char *const bad[] = {ALL_URLS, "DIST_CHANNEL_NAVER_HTTP_VERSION=2", NULL};
    load_bad(NULL, bad, "DIST_CHANNEL_NAVER_HTTP_VERSION: \"2\" is not one of auto, 1.1, h2c",
             NULL);

    /* worker.max_host_connections: 0 (no cap) unless set, from the file or
     * DIST_WORKER_MAX_HOST_CONNECTIONS. */
    cfg = load_ok(FILE_URLS, NULL);
    assert_int_equal(cfg->max_host_connections, 0);
    dw_config_destroy(cfg);
    char *const conns[] = {ALL_URLS, "DIST_WORKER_MAX_HOST_CONNECTIONS=8", NULL};
    cfg = load_ok("worker = { max_host_connections = 2; };\n", conns);
    assert_int_equal(cfg->max_host_connections, 8);
    dw_config_destroy(cfg);
    char *const bad_conns[] = {ALL_URLS, "DIST_WORKER_MAX_HOST_CONNECTIONS=-1", NULL};
    load_bad(NULL, bad_conns,
             "DIST_WORKER_MAX_HOST_CONNECTIONS: \"-1\" is not an integer in 0..100000", NULL);
}

/* A DIST_CHANNEL_* variable that names no setting or no channel stops the
 * load naming it, as an unknown key in the file does. */
static void test_unknown_channel_env(void **state)
{
    (void)state;
    char *const typo[] = {ALL_URLS, "DIST_CHANNEL_KAKAO_CAFILE=/etc/ca.pem", NULL};
    load_bad(NULL, typo, "DIST_CHANNEL_KAKAO_CAFILE: unknown setting",
             "DIST_CHANNEL_KAKAO_ takes: URL, TOKEN, CA_FILE, HTTP_VERSION", "BREAKER,", NULL);
    /* The breaker's variable is DIST_CHANNEL_<CHANNEL>_BREAKER, not _STATE. */
    char *const long_name[] = {ALL_URLS, "DIST_CHANNEL_NAVER_BREAKER_STATE=disabled", NULL};
    load_bad(NULL, long_name, "DIST_CHANNEL_NAVER_BREAKER_STATE: unknown setting", NULL);
    char *const channel[] = {ALL_URLS, "DIST_CHANNEL_FACEBOOK_URL=https://f", NULL};
    load_bad(NULL, channel, "DIST_CHANNEL_FACEBOOK_URL: unknown channel; known: URIDONGNETV", NULL);
    char *const bare[] = {ALL_URLS, "DIST_CHANNEL_KAKAO=1", NULL};
    load_bad(NULL, bare, "DIST_CHANNEL_KAKAO: unknown channel", NULL);
    load_bad("channels = { KAKAO = { ca_fil = \"/x\"; }; };\n", url_env,
             "channels.KAKAO.ca_fil (line 1): unknown setting", "ca_file", "http_version", NULL);

    /* Every known one still loads. */
    char *const known[] = {ALL_URLS, "DIST_CHANNEL_KAKAO_BREAKER=normal",
                           "DIST_CHANNEL_KAKAO_TIMEOUT_MS=500",
                           "DIST_CHANNELS_ALLOW_INSECURE_HTTP=false", NULL};
    struct dw_config *cfg = load_ok(NULL, known);
    assert_int_equal(cfg->channels[DW_CHANNEL_KAKAO].timeout_ms, 500);
    dw_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_no_file_env_only),
        cmocka_unit_test(test_file_values),
        cmocka_unit_test(test_channel_overrides),
        cmocka_unit_test(test_env_wins),
        cmocka_unit_test(test_kafka_properties),
        cmocka_unit_test(test_trailing_slash),
        cmocka_unit_test(test_missing_token),
        cmocka_unit_test(test_bad_dsn_is_refused_without_its_password),
        cmocka_unit_test(test_errors_mask_secrets),
        cmocka_unit_test(test_management_port_must_differ),
        cmocka_unit_test(test_bad_file_syntax),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_bad_types_and_ranges),
        cmocka_unit_test(test_bad_kafka_properties),
        cmocka_unit_test(test_bad_env),
        cmocka_unit_test(test_small_errbuf),
        cmocka_unit_test(test_include),
        cmocka_unit_test(test_reference_conf),
        cmocka_unit_test(test_resilience_settings),
        cmocka_unit_test(test_flow_settings),
        cmocka_unit_test(test_security_settings),
        cmocka_unit_test(test_commit_interval_and_event_hubs),
        cmocka_unit_test(test_redrive_settings),
        cmocka_unit_test(test_insecure_http_policy),
        cmocka_unit_test(test_ca_file),
        cmocka_unit_test(test_http_version),
        cmocka_unit_test(test_unknown_channel_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
