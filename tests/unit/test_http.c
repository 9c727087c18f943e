/*
 * The HTTP listener, over real sockets with libcurl: every route of
 * CONTRACT 4 apart from a status read that finds a row (the integration
 * tests run that one against PostgreSQL). The database here is a closed
 * port on 127.0.0.1, so status reads fail at once with 503. The probes are
 * also checked while the status port is held by idle and slow clients, a
 * status read hangs, and the readiness check hangs: PROBE_TIMEOUT_MS is
 * the patience of a client, not a speed figure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <json-c/json.h>

#include "dw/common.h"
#include "dw/http.h"
#include "dw/log.h"
#include "dw/metrics.h"

/* A probe that gets no answer within this is starved. */
#define PROBE_TIMEOUT_MS 1500

struct fixture {
    atomic_bool ready;
    atomic_bool live;
    atomic_bool ready_hangs; /* the readiness check blocks while set */
    int ready_calls;
    struct dw_metrics *metrics;
    struct dw_http *http;
    char dsn[128];
    int port;
    int management_port;
};

/* Called on the readiness thread. */
static bool fake_ready(void *opaque, char *why, size_t whylen)
{
    struct fixture *f = opaque;
    while (atomic_load(&f->ready_hangs))
        usleep(10 * 1000);
    if (atomic_load(&f->ready))
        return true;
    dw_strlcpy(why, "kafka: broker \"b1\" unreachable", whylen);
    return false;
}

/* Called on the listener's thread. */
static bool fake_live(void *opaque, char *why, size_t whylen)
{
    struct fixture *f = opaque;
    if (atomic_load(&f->live))
        return true;
    dw_strlcpy(why, "poll loop stalled for 9000 ms", whylen);
    return false;
}

/* A port nobody listens on right now: bind to 0, read it, close. */
static int unused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

static struct dw_http_options options(struct fixture *f, int port)
{
    struct dw_http_options opts = {
        .bind_address = "127.0.0.1",
        .port = port,
        .pg_dsn = f->dsn,
        .log = NULL,
        .metrics = f->metrics,
        .live = fake_live,
        .live_opaque = f,
        .ready = fake_ready,
        .ready_opaque = f,
        .ready_interval_ms = 20,
    };
    return opts;
}

static int setup(void **state)
{
    struct fixture *f = dw_xcalloc(1, sizeof(*f));
    atomic_init(&f->ready, true);
    atomic_init(&f->live, true);
    atomic_init(&f->ready_hangs, false);
    f->metrics = dw_metrics_create();
    dw_snprintf(f->dsn, sizeof(f->dsn), "host=127.0.0.1 port=%d dbname=dw connect_timeout=2",
                unused_port());

    char errbuf[256];
    enum dw_err err = DW_ERR_IO;
    /* Another process may take the port between our probe and the bind. */
    for (int attempt = 0; attempt < 10 && err == DW_ERR_IO; attempt++) {
        f->port = unused_port();
        /* Two probes in a row can be handed the same free port. */
        do
            f->management_port = unused_port();
        while (f->management_port == f->port);
        struct dw_http_options opts = options(f, f->port);
        opts.management_port = f->management_port;
        err = dw_http_start(&opts, &f->http, errbuf, sizeof(errbuf));
    }
    if (err) {
        fprintf(stderr, "cannot start the listener: %s\n", errbuf);
        dw_metrics_destroy(f->metrics);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (!f)
        return 0; /* setup failed and said why */
    dw_http_stop(f->http);
    dw_metrics_destroy(f->metrics);
    free(f);
    return 0;
}

/* One answer as libcurl saw it. */
struct answer {
    long status;
    char content_type[128];
    struct dw_buf headers;
    struct dw_buf body;
};

static size_t collect(char *data, size_t size, size_t n, void *userdata)
{
    struct dw_buf *buf = userdata;
    return dw_buf_append(buf, data, size * n) == DW_OK ? size * n : 0;
}

/* One request to port with a total time limit; false when it got no answer. */
static bool try_fetch_on(int port, const char *method, const char *path, long timeout_ms,
                         struct answer *a, char *why, size_t whylen)
{
    char url[512];
    dw_snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    memset(a, 0, sizeof(*a));
    dw_buf_init(&a->headers, 64 * 1024);
    dw_buf_init(&a->body, 1024 * 1024);

    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &a->body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &a->headers);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "a=1&b=2");
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK)
        dw_snprintf(why, whylen, "%s %s on port %d: %s", method, path, port,
                    curl_easy_strerror(rc));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &a->status);
    char *ct = NULL;
    curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ct);
    dw_strlcpy(a->content_type, ct ? ct : "", sizeof(a->content_type));
    curl_easy_cleanup(curl);
    return rc == CURLE_OK;
}

static void fetch_on(int port, const char *method, const char *path, long timeout_ms,
                     struct answer *a)
{
    char why[256];
    if (!try_fetch_on(port, method, path, timeout_ms, a, why, sizeof(why)))
        fail_msg("%s", why);
}

static void fetch(struct fixture *f, const char *method, const char *path, struct answer *a)
{
    fetch_on(f->port, method, path, 10000, a);
}

static void answer_cleanup(struct answer *a)
{
    dw_buf_cleanup(&a->headers);
    dw_buf_cleanup(&a->body);
}

static void assert_json_answer(struct answer *a, long status, const char *body)
{
    assert_int_equal(a->status, status);
    assert_string_equal(a->content_type, "application/json");
    assert_non_null(a->body.data);
    assert_string_equal(a->body.data, body);
}

static void check(struct fixture *f, const char *method, const char *path, long status,
                  const char *body)
{
    struct answer a;
    fetch(f, method, path, &a);
    assert_json_answer(&a, status, body);
    answer_cleanup(&a);
}

static void test_healthz(void **state)
{
    check(*state, "GET", "/healthz", 200, "{\"status\":\"UP\"}");
    /* A query string does not change the route. */
    check(*state, "GET", "/healthz?verbose=1", 200, "{\"status\":\"UP\"}");
}

/* Readiness is cached: waits (bounded) until port's /readyz answers status. */
static void wait_readyz(int port, long status)
{
    int64_t until = dw_now_ms() + 5000;
    for (;;) {
        struct answer a;
        fetch_on(port, "GET", "/readyz", 10000, &a);
        long got = a.status;
        answer_cleanup(&a);
        if (got == status)
            return;
        if (dw_now_ms() > until)
            fail_msg("/readyz stays %ld, expected %ld", got, status);
        usleep(10 * 1000);
    }
}

static void assert_reason(struct answer *a, long status, const char *word, const char *reason)
{
    assert_int_equal(a->status, status);
    assert_string_equal(a->content_type, "application/json");
    struct json_object *root = json_tokener_parse(a->body.data);
    assert_non_null(root);
    struct json_object *v;
    assert_true(json_object_object_get_ex(root, "status", &v));
    assert_string_equal(json_object_get_string(v), word);
    assert_true(json_object_object_get_ex(root, "reason", &v));
    assert_string_equal(json_object_get_string(v), reason);
    json_object_put(root);
}

static void test_readyz_follows_the_callback(void **state)
{
    struct fixture *f = *state;
    wait_readyz(f->port, 200);
    check(f, "GET", "/readyz", 200, "{\"status\":\"READY\"}");

    atomic_store(&f->ready, false);
    wait_readyz(f->port, 503);
    struct answer a;
    fetch(f, "GET", "/readyz", &a);
    assert_reason(&a, 503, "NOT_READY", "kafka: broker \"b1\" unreachable");
    answer_cleanup(&a);
    /* The management port answers the same. */
    fetch_on(f->management_port, "GET", "/readyz", 10000, &a);
    assert_reason(&a, 503, "NOT_READY", "kafka: broker \"b1\" unreachable");
    answer_cleanup(&a);

    atomic_store(&f->ready, true);
    wait_readyz(f->port, 200);
    check(f, "GET", "/readyz", 200, "{\"status\":\"READY\"}");
}

/* A readiness check that hangs (a Kafka metadata call, a database that does
 * not answer) must not hold /readyz: it answers the last result. */
static void test_readyz_does_not_wait_for_the_check(void **state)
{
    struct fixture *f = *state;
    wait_readyz(f->port, 200);
    atomic_store(&f->ready_hangs, true);
    usleep(100 * 1000); /* the readiness thread is now inside the check */
    for (int i = 0; i < 3; i++) {
        struct answer a;
        fetch_on(f->port, "GET", "/readyz", PROBE_TIMEOUT_MS, &a);
        assert_json_answer(&a, 200, "{\"status\":\"READY\"}");
        answer_cleanup(&a);
        fetch_on(f->management_port, "GET", "/healthz", PROBE_TIMEOUT_MS, &a);
        assert_json_answer(&a, 200, "{\"status\":\"UP\"}");
        answer_cleanup(&a);
    }
    atomic_store(&f->ready_hangs, false);
}

static void test_healthz_follows_the_live_callback(void **state)
{
    struct fixture *f = *state;
    atomic_store(&f->live, false);
    struct answer a;
    fetch(f, "GET", "/healthz", &a);
    assert_reason(&a, 503, "DOWN", "poll loop stalled for 9000 ms");
    answer_cleanup(&a);
    fetch_on(f->management_port, "GET", "/healthz", 10000, &a);
    assert_reason(&a, 503, "DOWN", "poll loop stalled for 9000 ms");
    answer_cleanup(&a);
    atomic_store(&f->live, true);
    check(f, "GET", "/healthz", 200, "{\"status\":\"UP\"}");
}

/* The management port serves the probes and /metrics, nothing else. */
static void test_management_port_routes(void **state)
{
    struct fixture *f = *state;
    struct answer a;
    fetch_on(f->management_port, "GET", "/distribution/evt-1/status", 10000, &a);
    assert_json_answer(&a, 404, "{\"error\":\"NOT_FOUND\"}");
    answer_cleanup(&a);
    fetch_on(f->management_port, "GET", "/metrics", 10000, &a);
    assert_int_equal(a.status, 200);
    answer_cleanup(&a);
    fetch_on(f->management_port, "POST", "/healthz", 10000, &a);
    assert_json_answer(&a, 405, "{\"error\":\"METHOD_NOT_ALLOWED\"}");
    answer_cleanup(&a);

    struct dw_http_options opts = options(f, f->port + 0);
    opts.management_port = opts.port;
    struct dw_http *second = NULL;
    char errbuf[256] = "";
    assert_int_equal(dw_http_start(&opts, &second, errbuf, sizeof(errbuf)), DW_ERR_CONFIG);
    assert_null(second);
    assert_non_null(strstr(errbuf, "management port"));
}

/* A TCP connection from `source` (a loopback address) to port on
 * 127.0.0.1; -1 when refused. */
static int connect_from(const char *source, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
    assert_int_equal(inet_pton(AF_INET, source, &src.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof(src)), 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* True when the server closed fd within a second. */
static bool closed_by_server(int fd)
{
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* 150 idle and 40 slow clients (one header line at a time, never done) on
 * the status port: each client address gets at most its share, and the
 * probes keep answering on both ports. */
static void test_probes_answer_while_the_status_port_is_held(void **state)
{
    struct fixture *f = *state;
    enum { IDLE = 150, SLOW = 40 };
    static const char *const idle_sources[] = {"127.0.0.2",  "127.0.0.3", "127.0.0.4", "127.0.0.5",
                                               "127.0.0.6",  "127.0.0.7", "127.0.0.8", "127.0.0.9",
                                               "127.0.0.10", "127.0.0.11"};
    int idle[IDLE];
    int slow[SLOW];
    for (int i = 0; i < IDLE; i++)
        idle[i] = connect_from(idle_sources[i % DW_ARRAY_LEN(idle_sources)], f->port);
    for (int i = 0; i < SLOW; i++) {
        slow[i] = connect_from(i < 20 ? "127.0.0.20" : "127.0.0.21", f->port);
        const char *line = "GET /healthz HTTP/1.1\r\nX-Slow: 1\r\n";
        if (slow[i] >= 0)
            (void)send(slow[i], line, strlen(line), MSG_NOSIGNAL);
    }

    /* One more from a client that already has its share is turned away. */
    int extra = connect_from("127.0.0.20", f->port);
    if (extra >= 0) {
        assert_true(closed_by_server(extra));
        close(extra);
    }

    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < SLOW; i++) {
            if (slow[i] >= 0)
                (void)send(slow[i], "X-More: 1\r\n", 11, MSG_NOSIGNAL);
        }
        const int ports[] = {f->management_port, f->port};
        for (size_t p = 0; p < DW_ARRAY_LEN(ports); p++) {
            struct answer a;
            char why[256] = "";
            bool ok =
                try_fetch_on(ports[p], "GET", "/healthz", PROBE_TIMEOUT_MS, &a, why, sizeof(why));
            if (ok)
                ok = a.status == 200;
            answer_cleanup(&a);
            if (ok)
                ok = try_fetch_on(ports[p], "GET", "/readyz", PROBE_TIMEOUT_MS, &a, why,
                                  sizeof(why)) &&
                     a.status == 200;
            answer_cleanup(&a);
            if (!ok)
                fail_msg("probe starved (round %d): %s", round, why);
        }
    }
    for (int i = 0; i < IDLE; i++)
        if (idle[i] >= 0)
            close(idle[i]);
    for (int i = 0; i < SLOW; i++)
        if (slow[i] >= 0)
            close(slow[i]);
}

/* Every 5xx wrote a warn line: a client asking for statuses during an
 * outage could fill the log. At most one line per kind per 10 s now, with
 * the count of the rest. */
static void test_5xx_warn_lines_are_rate_limited(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    struct dw_log *log = dw_log_create(fds[1], DW_LOG_WARN);
    struct fixture g = {0};
    atomic_init(&g.ready, true);
    atomic_init(&g.live, true);
    atomic_init(&g.ready_hangs, false);
    g.metrics = dw_metrics_create();
    dw_snprintf(g.dsn, sizeof(g.dsn), "host=127.0.0.1 port=%d dbname=dw connect_timeout=2",
                unused_port());
    char errbuf[256];
    struct dw_http *http = NULL;
    enum dw_err err = DW_ERR_IO;
    for (int attempt = 0; attempt < 10 && err == DW_ERR_IO; attempt++) {
        g.port = unused_port();
        struct dw_http_options opts = options(&g, g.port);
        opts.log = log;
        err = dw_http_start(&opts, &http, errbuf, sizeof(errbuf));
    }
    assert_int_equal(err, DW_OK);
    for (int i = 0; i < 30; i++) {
        struct answer a;
        fetch_on(g.port, "GET", "/distribution/evt-1/status", 10000, &a);
        assert_int_equal(a.status, 503);
        answer_cleanup(&a);
    }
    dw_http_stop(http);
    char text[65536];
    ssize_t n = read(fds[0], text, sizeof(text) - 1);
    text[n > 0 ? n : 0] = '\0';
    int warn_lines = 0;
    for (const char *p = text; (p = strstr(p, "\"level\":\"warn\"")) != NULL; p++)
        warn_lines++;
    if (warn_lines > 4)
        fail_msg("%d warn lines for 30 failed status reads:\n%s", warn_lines, text);
    assert_non_null(strstr(text, "answered 503"));
    dw_log_destroy(log);
    dw_metrics_destroy(g.metrics);
    close(fds[0]);
    close(fds[1]);
}

struct hanging_read {
    int port;
    long status;
};

static void *read_status_thread(void *arg)
{
    struct hanging_read *h = arg;
    struct answer a;
    char why[256];
    h->status =
        try_fetch_on(h->port, "GET", "/distribution/evt-1/status", 20000, &a, why, sizeof(why))
            ? a.status
            : -1;
    answer_cleanup(&a);
    return NULL;
}

/* A database that accepts connections and never answers: status reads wait
 * on the reader thread, not on the listener's, and end with 503. */
static void test_probes_answer_while_a_status_read_hangs(void **state)
{
    struct fixture *f = *state;
    /* A listening socket that never accepts: the kernel completes the
     * handshake, nobody answers libpq's start-up packet. */
    int db = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(db >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(db, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(db, 16), 0);
    socklen_t len = sizeof(addr);
    assert_int_equal(getsockname(db, (struct sockaddr *)&addr, &len), 0);

    struct fixture g = {0};
    atomic_init(&g.ready, true);
    atomic_init(&g.live, true);
    atomic_init(&g.ready_hangs, false);
    g.metrics = f->metrics;
    dw_snprintf(g.dsn, sizeof(g.dsn), "host=127.0.0.1 port=%d dbname=dw connect_timeout=4",
                ntohs(addr.sin_port));
    char errbuf[256];
    struct dw_http *http = NULL;
    enum dw_err err = DW_ERR_IO;
    for (int attempt = 0; attempt < 10 && err == DW_ERR_IO; attempt++) {
        g.port = unused_port();
        struct dw_http_options opts = options(&g, g.port);
        err = dw_http_start(&opts, &http, errbuf, sizeof(errbuf));
    }
    assert_int_equal(err, DW_OK);

    struct hanging_read h = {.port = g.port};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_status_thread, &h), 0);
    usleep(300 * 1000); /* the read is now waiting for the database */
    for (int i = 0; i < 3; i++) {
        struct answer a;
        fetch_on(g.port, "GET", "/healthz", PROBE_TIMEOUT_MS, &a);
        assert_json_answer(&a, 200, "{\"status\":\"UP\"}");
        answer_cleanup(&a);
        fetch_on(g.port, "GET", "/readyz", PROBE_TIMEOUT_MS, &a);
        assert_int_equal(a.status, 200);
        answer_cleanup(&a);
    }
    pthread_join(t, NULL);
    assert_int_equal(h.status, 503);
    dw_http_stop(http);
    close(db);
}

static void test_metrics_endpoint(void **state)
{
    struct fixture *f = *state;
    dw_metrics_count(f->metrics, DW_COUNTER_REQUESTS_CONSUMED, 42);
    struct answer a;
    fetch(f, "GET", "/metrics", &a);
    assert_int_equal(a.status, 200);
    assert_memory_equal(a.content_type, "text/plain; version=0.0.4",
                        strlen("text/plain; version=0.0.4"));
    assert_non_null(strstr(a.body.data, "# TYPE dw_requests_consumed_total counter\n"));
    assert_non_null(strstr(a.body.data, "\ndw_requests_consumed_total 42\n"));
    assert_non_null(strstr(a.body.data, "dw_channel_calls_total{channel=\"KAKAO\",outcome="));
    answer_cleanup(&a);
}

static void test_status_rejects_bad_event_ids(void **state)
{
    const char *bad = "{\"error\":\"INVALID_EVENT_ID\"}";
    check(*state, "GET", "/distribution/bad!id/status", 400, bad);
    /* Encoded characters are not decoded: %2F is not a slash but invalid. */
    check(*state, "GET", "/distribution/a%2Fb/status", 400, bad);
    check(*state, "GET", "/distribution/evt%2D1/status", 400, bad);
    check(*state, "GET", "/distribution//status", 400, bad);
    char path[160];
    char id[66];
    memset(id, 'a', 65);
    id[65] = '\0';
    dw_snprintf(path, sizeof(path), "/distribution/%s/status", id);
    check(*state, "GET", path, 400, bad);
}

static void test_status_without_database_is_unavailable(void **state)
{
    struct fixture *f = *state;
    const char *unavailable = "{\"error\":\"UNAVAILABLE\"}";
    /* 64 characters is the longest valid id. */
    char path[160];
    char id[65];
    memset(id, 'b', 64);
    id[64] = '\0';
    dw_snprintf(path, sizeof(path), "/distribution/%s/status", id);

    int64_t start = dw_now_ms();
    check(f, "GET", "/distribution/evt-1/status", 503, unavailable);
    check(f, "GET", "/distribution/evt_2.x-Y/status", 503, unavailable);
    check(f, "GET", path, 503, unavailable);
    assert_true(dw_now_ms() - start < 5000);

    /* The listener stays healthy meanwhile. */
    check(f, "GET", "/healthz", 200, "{\"status\":\"UP\"}");

    struct answer a;
    fetch(f, "GET", "/metrics", &a);
    assert_null(strstr(a.body.data, "\ndw_db_errors_total 0\n"));
    answer_cleanup(&a);
}

static void test_unknown_paths_are_not_found(void **state)
{
    const char *nf = "{\"error\":\"NOT_FOUND\"}";
    check(*state, "GET", "/nope", 404, nf);
    check(*state, "POST", "/nope", 404, nf);
    check(*state, "DELETE", "/", 404, nf);
    check(*state, "GET", "/healthz/", 404, nf);
    check(*state, "GET", "/distribution/evt-1", 404, nf);
    check(*state, "GET", "/distribution/evt-1/status/x", 404, nf);
    check(*state, "GET", "/distribution/a/b/status", 404, nf);
}

static void test_other_methods_are_not_allowed(void **state)
{
    struct fixture *f = *state;
    const char *paths[] = {"/healthz", "/readyz", "/metrics", "/distribution/evt-1/status"};
    const char *methods[] = {"POST", "PUT", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < DW_ARRAY_LEN(paths); i++) {
        for (size_t j = 0; j < DW_ARRAY_LEN(methods); j++) {
            struct answer a;
            fetch(f, methods[j], paths[i], &a);
            assert_json_answer(&a, 405, "{\"error\":\"METHOD_NOT_ALLOWED\"}");
            assert_non_null(strcasestr(a.headers.data, "\r\nAllow: GET, HEAD\r\n"));
            answer_cleanup(&a);
        }
    }
}

/* HEAD over a raw socket, to see that no body follows the headers. */
static void test_head_has_headers_and_no_body(void **state)
{
    struct fixture *f = *state;
    struct answer a;
    fetch(f, "HEAD", "/healthz", &a);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.content_type, "application/json");
    answer_cleanup(&a);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    const char *req = "HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    char raw[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(raw) - 1 && (n = read(fd, raw + len, sizeof(raw) - 1 - len)) > 0)
        len += (size_t)n;
    raw[len] = '\0';
    close(fd);

    assert_memory_equal(raw, "HTTP/1.1 200", 12);
    assert_non_null(strcasestr(raw, "\r\nContent-Length: 15\r\n"));
    const char *end = strstr(raw, "\r\n\r\n");
    assert_non_null(end);
    assert_int_equal(end + 4 - raw, (ptrdiff_t)len); /* nothing after the headers */

    check(f, "GET", "/healthz", 200, "{\"status\":\"UP\"}");
}

static void test_port_in_use(void **state)
{
    struct fixture *f = *state;
    struct dw_http_options opts = options(f, f->port);
    struct dw_http *second = NULL;
    char errbuf[256] = "";
    assert_int_equal(dw_http_start(&opts, &second, errbuf, sizeof(errbuf)), DW_ERR_IO);
    assert_null(second);
    char port[16];
    dw_snprintf(port, sizeof(port), "%d", f->port);
    assert_non_null(strstr(errbuf, port));

    opts.port = 0;
    assert_int_equal(dw_http_start(&opts, &second, errbuf, sizeof(errbuf)), DW_ERR_CONFIG);
    assert_null(second);

    dw_http_stop(NULL);
    /* The first listener is unharmed. */
    check(f, "GET", "/healthz", 200, "{\"status\":\"UP\"}");
}

static void test_stop_frees_the_port(void **state)
{
    (void)state;
    struct fixture g = {0};
    atomic_init(&g.ready, true);
    dw_strlcpy(g.dsn, "host=127.0.0.1 port=1", sizeof(g.dsn));
    char errbuf[256];
    struct dw_http_options opts;
    struct dw_http *http = NULL;
    enum dw_err err = DW_ERR_IO;
    for (int attempt = 0; attempt < 10 && err == DW_ERR_IO; attempt++) {
        opts = options(&g, unused_port());
        err = dw_http_start(&opts, &http, errbuf, sizeof(errbuf));
    }
    assert_int_equal(err, DW_OK);
    dw_http_stop(http);
    /* Restarting on the same port works at once. */
    assert_int_equal(dw_http_start(&opts, &http, errbuf, sizeof(errbuf)), DW_OK);
    dw_http_stop(http);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz),
        cmocka_unit_test(test_readyz_follows_the_callback),
        cmocka_unit_test(test_readyz_does_not_wait_for_the_check),
        cmocka_unit_test(test_healthz_follows_the_live_callback),
        cmocka_unit_test(test_management_port_routes),
        cmocka_unit_test(test_probes_answer_while_the_status_port_is_held),
        cmocka_unit_test(test_probes_answer_while_a_status_read_hangs),
        cmocka_unit_test(test_5xx_warn_lines_are_rate_limited),
        cmocka_unit_test(test_metrics_endpoint),
        cmocka_unit_test(test_status_rejects_bad_event_ids),
        cmocka_unit_test(test_status_without_database_is_unavailable),
        cmocka_unit_test(test_unknown_paths_are_not_found),
        cmocka_unit_test(test_other_methods_are_not_allowed),
        cmocka_unit_test(test_head_has_headers_and_no_body),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_stop_frees_the_port),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return failed;
}
