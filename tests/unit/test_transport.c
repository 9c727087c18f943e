/*
 * Unit tests of transport: the libcurl options each channel's configuration
 * asks for (pure), the one warning per plain-HTTP channel, and that easy
 * handles on several threads can take a channel's shared TLS session cache
 * at once and move from channel to channel. The TLS calls themselves are
 * proved against nginx in tests/integration/test_tls.c.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dw/transport.h"

static void test_choose(void **state)
{
    (void)state;
    struct dw_channel_config cc = {.url = "https://api.example.com"};
    struct dw_transport_choice c;

    cc.http_version = DW_HTTP_AUTO;
    c = dw_transport_choose(&cc, 0x080000);
    assert_true(c.tls);
    assert_int_equal(c.http_version, CURL_HTTP_VERSION_2TLS);
    assert_true(c.pipewait);

    cc.http_version = DW_HTTP_1_1;
    c = dw_transport_choose(&cc, 0x080000);
    assert_true(c.tls);
    assert_int_equal(c.http_version, CURL_HTTP_VERSION_1_1);
    assert_false(c.pipewait);

    /* "auto" over plain HTTP is HTTP/1.1: no connection to wait for. */
    cc.url = "HTTP://127.0.0.1:8090";
    cc.http_version = DW_HTTP_AUTO;
    c = dw_transport_choose(&cc, 0x080000);
    assert_false(c.tls);
    assert_int_equal(c.http_version, CURL_HTTP_VERSION_2TLS);
    assert_false(c.pipewait);

    cc.http_version = DW_HTTP_H2C;
    c = dw_transport_choose(&cc, 0x080000);
    assert_false(c.tls);
    assert_int_equal(c.http_version, CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
    assert_true(c.pipewait);
    assert_false(c.forbid_reuse);

    /* libcurl 7.88.1 breaks reused h2c connections: one per call there. */
    c = dw_transport_choose(&cc, 0x075801);
    assert_int_equal(c.http_version, CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
    assert_true(c.forbid_reuse);
    assert_false(c.pipewait);
    cc.url = "https://api.example.com";
    cc.http_version = DW_HTTP_AUTO;
    assert_false(dw_transport_choose(&cc, 0x075801).forbid_reuse);
}

static struct dw_config *config_with(const char *kakao_url, const char *naver_url)
{
    struct dw_config *cfg = dw_xcalloc(1, sizeof(*cfg));
    for (int c = 0; c < DW_CHANNEL_COUNT; c++)
        cfg->channels[c].url = dw_xstrdup("https://channel.example.com");
    free(cfg->channels[DW_CHANNEL_KAKAO].url);
    cfg->channels[DW_CHANNEL_KAKAO].url = dw_xstrdup(kakao_url);
    free(cfg->channels[DW_CHANNEL_NAVER].url);
    cfg->channels[DW_CHANNEL_NAVER].url = dw_xstrdup(naver_url);
    cfg->channels[DW_CHANNEL_NAVER].ca_file = dw_xstrdup("/etc/ssl/certs/ca-certificates.crt");
    return cfg;
}

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* One warning per plain-HTTP channel, naming it; none for https://. */
static void test_warns_per_plain_channel(void **state)
{
    (void)state;
    struct dw_config *cfg = config_with("http://127.0.0.1:8090", "https://naver.example.com");
    int fds[2];
    char out[8192] = "";
    struct dw_transport *t = NULL;
    char err[256];

    assert_int_equal(pipe(fds), 0);
    struct dw_log *log = dw_log_create(fds[1], DW_LOG_INFO);
    assert_int_equal(dw_transport_create(cfg, log, &t, err, sizeof(err)), DW_OK);
    dw_log_destroy(log);
    close(fds[1]);
    ssize_t n = read(fds[0], out, sizeof(out) - 1);
    close(fds[0]);
    out[n > 0 ? n : 0] = '\0';
    assert_int_equal(count(out, "uses plain HTTP"), 1);
    assert_non_null(strstr(out, "channel KAKAO uses plain HTTP (http://127.0.0.1:8090)"));
    dw_transport_destroy(t);
    dw_transport_destroy(NULL);
    dw_config_destroy(cfg);
}

struct applier {
    struct dw_transport *transport;
    int rounds;
    int failures;
};

/* Moves one easy handle between channels, as the engine's slots do. */
static void *apply_many(void *arg)
{
    struct applier *a = arg;
    CURL *easy = curl_easy_init();
    for (int i = 0; i < a->rounds; i++) {
        enum dw_channel_id ch = (enum dw_channel_id)(i % DW_CHANNEL_COUNT);
        if (dw_transport_apply(a->transport, easy, ch) != DW_OK)
            a->failures++;
    }
    curl_easy_cleanup(easy);
    return NULL;
}

/* Several threads take the channels' session caches at once; every handle
 * lets go of them before the transport is destroyed (ASan would report the
 * shares leaked, as curl_share_cleanup refuses a share in use). */
static void test_apply_from_threads(void **state)
{
    (void)state;
    struct dw_config *cfg = config_with("http://127.0.0.1:8090", "https://naver.example.com");
    struct dw_transport *t = NULL;
    char err[256];
    pthread_t threads[4];
    struct applier a[4];
    CURLM *multi = curl_multi_init();

    assert_int_equal(dw_transport_create(cfg, NULL, &t, err, sizeof(err)), DW_OK);
    assert_int_equal(dw_transport_multi_setup(multi, 4), DW_OK);
    curl_multi_cleanup(multi);
    for (int i = 0; i < 4; i++) {
        a[i] = (struct applier){.transport = t, .rounds = 600};
        assert_int_equal(pthread_create(&threads[i], NULL, apply_many, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(a[i].failures, 0);
    }
    dw_transport_destroy(t);
    dw_config_destroy(cfg);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choose),
        cmocka_unit_test(test_warns_per_plain_channel),
        cmocka_unit_test(test_apply_from_threads),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
