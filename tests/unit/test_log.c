/*
 * Log: one JSON object per line with the context fields, level filtering,
 * and redaction: no token, password or DSN secret ever reaches a line,
 * whether it is a registered value or merely shaped like a secret, and
 * also when it arrives through the worker's own error paths (a store that
 * cannot connect, a configuration that carries credentials).
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "channel_env.h"
#include "dw/common.h"
#include "dw/config.h"
#include "dw/log.h"
#include "dw/store.h"

struct capture {
    int fds[2]; /* a pipe: the log writes [1], the test reads [0] */
    struct dw_log *log;
};

static int setup(void **state)
{
    struct capture *c = dw_xcalloc(1, sizeof(*c));
    assert_int_equal(pipe(c->fds), 0);
    assert_int_equal(fcntl(c->fds[0], F_SETFL, O_NONBLOCK), 0);
    c->log = dw_log_create(c->fds[1], DW_LOG_DEBUG);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct capture *c = *state;
    dw_log_destroy(c->log);
    close(c->fds[0]);
    close(c->fds[1]);
    free(c);
    return 0;
}

/* Everything written since the last call, as a new string. */
static char *drain(struct capture *c)
{
    struct dw_buf buf;
    char chunk[4096];
    ssize_t n;
    dw_buf_init(&buf, 1024 * 1024);
    while ((n = read(c->fds[0], chunk, sizeof(chunk))) > 0)
        assert_int_equal(dw_buf_append(&buf, chunk, (size_t)n), DW_OK);
    return dw_buf_detach(&buf, NULL);
}

/* The one line written since the last call, parsed; its "message" goes to
 * *message (a new string). */
static struct json_object *one_line(struct capture *c, char **message)
{
    char *text = drain(c);
    size_t len = strlen(text);
    assert_true(len > 0);
    assert_int_equal(text[len - 1], '\n');
    assert_true(strchr(text, '\n') == text + len - 1); /* exactly one line */
    struct json_object *line = json_tokener_parse(text);
    assert_non_null(line);
    struct json_object *m;
    assert_true(json_object_object_get_ex(line, "message", &m));
    if (message)
        *message = dw_xstrdup(json_object_get_string(m));
    free(text);
    return line;
}

/* Logs text as a message and returns what the line says. */
static char *logged(struct capture *c, const char *text)
{
    char *message;
    dw_log_write(c->log, DW_LOG_INFO, DW_LOG_NOCTX, "%s", text);
    json_object_put(one_line(c, &message));
    return message;
}

static void assert_redacted(struct capture *c, const char *text, const char *expected)
{
    char *got = logged(c, text);
    if (strcmp(got, expected) != 0)
        fail_msg("logged \"%s\"\n  as   \"%s\"\nwanted \"%s\"", text, got, expected);
    free(got);
}

static void test_json_line_with_context(void **state)
{
    struct capture *c = *state;
    struct dw_log_ctx ctx = {"evt-1", "KAKAO", 3, 42};
    dw_log_write(c->log, DW_LOG_WARN, ctx, "call failed: %s \"%d\"", "HTTP_5XX", 503);
    char *message;
    struct json_object *line = one_line(c, &message);
    struct json_object *v;
    assert_string_equal(message, "call failed: HTTP_5XX \"503\"");
    assert_true(json_object_object_get_ex(line, "time", &v));
    assert_int_equal(strlen(json_object_get_string(v)), 24); /* 2025-10-29T06:13:04.123Z */
    assert_true(json_object_object_get_ex(line, "level", &v));
    assert_string_equal(json_object_get_string(v), "warn");
    assert_true(json_object_object_get_ex(line, "eventId", &v));
    assert_string_equal(json_object_get_string(v), "evt-1");
    assert_true(json_object_object_get_ex(line, "channel", &v));
    assert_string_equal(json_object_get_string(v), "KAKAO");
    assert_true(json_object_object_get_ex(line, "partition", &v));
    assert_int_equal(json_object_get_int(v), 3);
    assert_true(json_object_object_get_ex(line, "offset", &v));
    assert_int_equal(json_object_get_int64(v), 42);
    json_object_put(line);
    free(message);

    /* Without context the fields are left out, not null. */
    dw_log_info(c->log, "plain");
    line = one_line(c, NULL);
    assert_false(json_object_object_get_ex(line, "eventId", NULL));
    assert_false(json_object_object_get_ex(line, "partition", NULL));
    json_object_put(line);
}

static void test_level_filter_and_names(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    struct dw_log *log = dw_log_create(fds[1], DW_LOG_WARN);
    dw_log_debug(log, "no");
    dw_log_info(log, "no");
    dw_log_warn(log, "yes");
    dw_log_error(log, "yes");
    char buf[4096];
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    int lines = 0;
    for (char *p = buf; (p = strchr(p, '\n')); p++)
        lines++;
    assert_int_equal(lines, 2);
    assert_null(strstr(buf, "\"no\""));
    dw_log_destroy(log);
    close(fds[0]);
    close(fds[1]);

    enum dw_log_level level;
    assert_true(dw_log_level_parse("debug", &level));
    assert_int_equal(level, DW_LOG_DEBUG);
    assert_true(dw_log_level_parse("error", &level));
    assert_int_equal(level, DW_LOG_ERROR);
    assert_false(dw_log_level_parse("verbose", &level));
    assert_false(dw_log_level_parse(NULL, &level));
    assert_string_equal(dw_log_level_name(DW_LOG_WARN), "warn");

    /* A NULL log writes nothing and does not crash. */
    dw_log_info(NULL, "nothing");
    dw_log_add_secret(NULL, "secret-value");
    dw_log_destroy(NULL);
}

static void test_dsn_secrets_are_redacted(void **state)
{
    struct capture *c = *state;
    assert_redacted(c, "connecting to postgresql://user:secret@host/db",
                    "connecting to postgresql://user:***@host/db");
    assert_redacted(c, "postgres://app:p%40ss:w0rd@db.example.com:5432/d?sslmode=require",
                    "postgres://app:***@db.example.com:5432/d?sslmode=require");
    assert_redacted(c, "host=db user=app password=secret dbname=distribution",
                    "host=db user=app password=*** dbname=distribution");
    assert_redacted(c, "host=db password='sec ret' dbname=x", "host=db password='***' dbname=x");
    assert_redacted(c, "PGPASSWORD=secret psql", "PGPASSWORD=*** psql");
    /* Without a password there is nothing to hide. */
    assert_redacted(c, "postgresql://postgres@127.0.0.1:5432/distribution",
                    "postgresql://postgres@127.0.0.1:5432/distribution");
    assert_redacted(c, "https://user:pw@channel.example.com/api",
                    "https://user:***@channel.example.com/api");
}

static void test_kafka_and_token_secrets_are_redacted(void **state)
{
    struct capture *c = *state;
    assert_redacted(c, "kafka.properties \"sasl.password=hunter2\": rejected",
                    "kafka.properties \"sasl.password=***\": rejected");
    assert_redacted(c,
                    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;"
                    "SharedAccessKey=AbC+d/e=",
                    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;"
                    "SharedAccessKey=***");
    assert_redacted(c, "Authorization: Bearer itest-token-kakao", "Authorization: Bearer ***");
    assert_redacted(c, "{\"token\": \"abc\", \"client_secret\":\"xyz\"}",
                    "{\"token\": \"***\", \"client_secret\":\"***\"}");
    assert_redacted(c, "token=abc&x=1", "token=***&x=1");
    /* Words that only look alike stay. */
    assert_redacted(c, "DIST_CHANNEL_KAKAO_TOKEN: contains a control character",
                    "DIST_CHANNEL_KAKAO_TOKEN: contains a control character");
    assert_redacted(c, "tokens=5 secrets=none", "tokens=5 secrets=none");
    assert_redacted(c, "itest-token-kakao", "itest-token-kakao");
}

static void test_registered_secrets_are_redacted(void **state)
{
    struct capture *c = *state;
    dw_log_add_secret(c->log, "tok-XYZ-1");
    dw_log_add_secret(c->log, "abc"); /* too short: ignored */
    dw_log_add_secret(c->log, "");
    dw_log_add_secret(c->log, NULL);
    assert_redacted(c, "sent tok-XYZ-1 twice: tok-XYZ-1.", "sent *** twice: ***.");
    assert_redacted(c, "abc stays", "abc stays");

    /* Secrets across the size limit (a message is cut to 2,047 bytes):
     * masked before the cut, so not even their first part survives. Each
     * starts a few bytes before the cut, at every position across it. */
    for (int start = 2040; start <= 2046; start++) {
        char big[3000];
        memset(big, 'a', sizeof(big));
        memcpy(big + start, "tok-XYZ-1", 9);
        big[sizeof(big) - 1] = '\0';
        char *got = logged(c, big);
        assert_null(strstr(got, "tok-"));
        assert_true(strlen(got) < 2048);
        free(got);

        /* And a URI's password, found by its shape. */
        memset(big, 'a', sizeof(big));
        memcpy(big + start - 18, " postgresql://app:pg-pass-99@db/x", 33);
        big[sizeof(big) - 1] = '\0';
        got = logged(c, big);
        assert_null(strstr(got, "pg-pa"));
        free(got);
    }
}

/* The store's connection errors, logged as main logs them, with DSNs whose
 * password libpq quotes in its message (a malformed percent escape) or that
 * only the shape finds: the password is registered from the DSN first (as
 * main does), so no part of it is in any line. */
static void test_store_error_path(void **state)
{
    struct capture *c = *state;
    static const char *const dsns[] = {
        "postgresql://app:Pa%zzHunter22@127.0.0.1:1/distribution?connect_timeout=2",
        "postgresql://app@127.0.0.1:1/distribution?connect_timeout=2&password=Hunter33%zz",
    };
    for (size_t i = 0; i < DW_ARRAY_LEN(dsns); i++) {
        char **passwords = dw_store_dsn_passwords(dsns[i]);
        assert_non_null(passwords[0]);
        for (size_t p = 0; passwords[p]; p++)
            dw_log_add_secret(c->log, passwords[p]);
        dw_store_passwords_free(passwords);

        char why[512] = "";
        struct dw_store *store = NULL;
        enum dw_err err = dw_store_create(dsns[i], c->log, &store, why, sizeof(why));
        dw_store_destroy(store);
        assert_int_not_equal(err, DW_OK);
        assert_non_null(strstr(why, "Hunter")); /* libpq does quote it */
        dw_log_error(c->log, "PostgreSQL not ready (%s); retrying in %d ms", why, 200);
        char *all = drain(c);
        assert_non_null(strstr(all, "PostgreSQL not ready"));
        if (strstr(all, "Hunter"))
            fail_msg("a password reached the log: %s", all);
        free(all);
    }
}

/* Credentials taken from the environment, then every string of the loaded
 * configuration logged: no secret survives. */
static void test_config_secrets_path(void **state)
{
    struct capture *c = *state;
    char *const env[] = {
        DW_TEST_CHANNEL_URLS,
        "DIST_CHANNEL_KAKAO_TOKEN=kakao-secret-token",
        "DIST_CHANNEL_URIDONGNETV_TOKEN=tu",
        "DIST_CHANNEL_GINITV_TOKEN=tg",
        "DIST_CHANNEL_RINGOBIZ_TOKEN=tr",
        "DIST_CHANNEL_INSTAGRAM_TOKEN=ti",
        "DIST_CHANNEL_NAVER_TOKEN=tn",
        "DIST_PG_DSN=postgresql://app:pg-secret-2@db/distribution",
        "DIST_PG_SSLMODE=verify-full",
        "DIST_KAFKA_SASL_USERNAME=$ConnectionString",
        "DIST_KAFKA_SASL_PASSWORD=Endpoint=sb://ns/;SharedAccessKeyName=a;SharedAccessKey=k-3",
        NULL,
    };
    struct dw_config *cfg = NULL;
    char err[512];
    assert_int_equal(dw_config_create(NULL, env, &cfg, err, sizeof(err)), DW_OK);
    assert_string_equal(cfg->pg_dsn,
                        "postgresql://app:pg-secret-2@db/distribution?sslmode=verify-full");

    dw_log_add_secret(c->log, cfg->channels[DW_CHANNEL_KAKAO].token);
    dw_log_add_secret(c->log, cfg->kafka_sasl_password);
    dw_log_info(c->log, "dsn %s", cfg->pg_dsn);
    for (size_t i = 0; i < cfg->kafka_prop_count; i++)
        dw_log_info(c->log, "kafka %s=%s", cfg->kafka_props[i].name, cfg->kafka_props[i].value);
    dw_log_info(c->log, "token %s", cfg->channels[DW_CHANNEL_KAKAO].token);
    char *all = drain(c);
    assert_null(strstr(all, "pg-secret-2"));
    assert_null(strstr(all, "k-3"));
    assert_null(strstr(all, "kakao-secret-token"));
    assert_non_null(strstr(all, "sasl.username=$ConnectionString"));
    free(all);
    dw_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_json_line_with_context, setup, teardown),
        cmocka_unit_test(test_level_filter_and_names),
        cmocka_unit_test_setup_teardown(test_dsn_secrets_are_redacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kafka_and_token_secrets_are_redacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registered_secrets_are_redacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_error_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_secrets_path, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
