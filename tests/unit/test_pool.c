/*
 * The channel-call pool against a scripted in-process HTTP server
 * (libmicrohttpd): headers, Instagram's two steps, retries with backoff,
 * Retry-After, permanent errors, timeouts, refused connections, and many
 * jobs at once across threads (also run under TSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "dw/pool.h"
#include "dw/request.h"

/* ---- the scripted server ---- */

struct reply {
    unsigned status;
    const char *body;
    const char *retry_after;
    int delay_ms;
};

#define MAX_SCRIPT 16
#define MAX_CALLS 4096

struct server {
    struct MHD_Daemon *mhd;
    int port;
    pthread_mutex_t lock;
    struct reply script[MAX_SCRIPT]; /* replies in order; the last repeats */
    int nscript;
    int calls;
    int64_t call_ms[MAX_CALLS];
    char last_auth[128];
    char keys[8][128];
    char bodies[8][512];
    char paths[8][64];
};

struct upload {
    char body[4096];
    size_t len;
};

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *data,
                              size_t *data_len, void **con_cls)
{
    (void)method;
    (void)version;
    struct server *s = cls;
    struct upload *up = *con_cls;
    if (!up) {
        *con_cls = calloc(1, sizeof(struct upload));
        return MHD_YES;
    }
    if (*data_len) {
        size_t n = *data_len;
        if (up->len + n < sizeof(up->body)) {
            memcpy(up->body + up->len, data, n);
            up->len += n;
        }
        *data_len = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&s->lock);
    int i = s->calls++;
    if (i < MAX_CALLS) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s->call_ms[i] = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key");
    snprintf(s->last_auth, sizeof(s->last_auth), "%s", auth ? auth : "");
    if (i < 8) {
        snprintf(s->keys[i], sizeof(s->keys[i]), "%s", key ? key : "");
        snprintf(s->bodies[i], sizeof(s->bodies[i]), "%.*s", (int)up->len, up->body);
        snprintf(s->paths[i], sizeof(s->paths[i]), "%s", url);
    }
    struct reply r = s->script[i < s->nscript ? i : s->nscript - 1];
    pthread_mutex_unlock(&s->lock);

    if (r.delay_ms)
        usleep((useconds_t)r.delay_ms * 1000);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(r.body), (void *)r.body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (r.retry_after)
        MHD_add_response_header(resp, "Retry-After", r.retry_after);
    enum MHD_Result ret = MHD_queue_response(conn, r.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode code)
{
    (void)cls;
    (void)conn;
    (void)code;
    free(*con_cls);
    *con_cls = NULL;
}

static void server_start(struct server *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                              NULL, NULL, handle, s, MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                              MHD_OPTION_END);
    assert_non_null(s->mhd);
    s->port = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT)->port;
}

static void server_stop(struct server *s)
{
    MHD_stop_daemon(s->mhd);
    pthread_mutex_destroy(&s->lock);
}

static void script(struct server *s, int n, const struct reply *replies)
{
    pthread_mutex_lock(&s->lock);
    memcpy(s->script, replies, (size_t)n * sizeof(*replies));
    s->nscript = n;
    s->calls = 0;
    pthread_mutex_unlock(&s->lock);
}

/* ---- results ---- */

struct results {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n;
    struct dw_call_result last;
    int success;
};

static void on_done(void *opaque, const struct dw_call_result *res)
{
    struct results *r = opaque;
    pthread_mutex_lock(&r->lock);
    r->last = *res;
    r->n++;
    if (res->status == DW_CH_SUCCESS)
        r->success++;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void wait_results(struct results *r, int n)
{
    pthread_mutex_lock(&r->lock);
    while (r->n < n) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 20;
        if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) != 0)
            break;
    }
    int got = r->n;
    pthread_mutex_unlock(&r->lock);
    assert_int_equal(got, n);
}

/* ---- fixtures ---- */

struct fixture {
    struct server server;
    struct dw_config cfg;
    struct results results;
    struct dw_pool *pool;
    struct dw_request *req;
    char url[64];
};

static void configure(struct fixture *f, const char *url)
{
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        struct dw_channel_config *cc = &f->cfg.channels[ch];
        cc->url = (char *)url;
        cc->token = "tok-123";
        cc->connect_timeout_ms = 1000;
        cc->timeout_ms = 2000;
        cc->max_attempts = 3;
        cc->initial_backoff_ms = 1;
        cc->multiplier = 2.0;
        cc->max_backoff_ms = 5;
        cc->max_retry_after_ms = 5000;
        cc->max_concurrent = 100;
    }
}

static void start_pool(struct fixture *f, int threads, int max_calls)
{
    struct dw_pool_options o = {
        .threads = threads, .max_calls = max_calls, .cfg = &f->cfg, .done = on_done, .seed = 42};
    char err[256];
    assert_int_equal(dw_pool_start(&o, &f->pool, err, sizeof(err)), DW_OK);
}

static struct dw_request *make_request(const char *event_id)
{
    struct dw_request *r = dw_xcalloc(1, sizeof(*r));
    r->event_id = dw_xstrdup(event_id);
    r->title = dw_xstrdup("Grand opening");
    r->content = dw_xstrdup("Visit us");
    r->image_url = dw_xstrdup("https://cdn.example.com/1.png");
    r->phone_number = dw_xstrdup("02-1234-5678");
    r->channels = (1u << DW_CHANNEL_COUNT) - 1;
    r->channel_count = DW_CHANNEL_COUNT;
    return r;
}

static int setup(void **state)
{
    struct fixture *f = dw_xcalloc(1, sizeof(*f));
    server_start(&f->server);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->server.port);
    configure(f, f->url);
    pthread_mutex_init(&f->results.lock, NULL);
    pthread_cond_init(&f->results.cond, NULL);
    f->req = make_request("evt-1");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dw_pool_stop(f->pool);
    server_stop(&f->server);
    dw_request_destroy(f->req);
    pthread_cond_destroy(&f->results.cond);
    pthread_mutex_destroy(&f->results.lock);
    free(f);
    return 0;
}

static void submit(struct fixture *f, enum dw_channel_id ch)
{
    assert_int_equal(dw_pool_submit(f->pool, f->req, ch, &f->results), DW_OK);
}

/* ---- tests ---- */

static void success_sends_headers_and_reads_ids(void **state)
{
    struct fixture *f = *state;
    struct reply ok[] = {{200, "{\"postId\":\"kp-1\",\"url\":\"https://k/1\"}", NULL, 0}};
    script(&f->server, 1, ok);
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_KAKAO);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.status, DW_CH_SUCCESS);
    assert_int_equal(f->results.last.attempts, 1);
    assert_string_equal(f->results.last.external_id, "kp-1");
    assert_string_equal(f->results.last.url, "https://k/1");
    assert_string_equal(f->server.last_auth, "Bearer tok-123");
    assert_string_equal(f->server.keys[0], "evt-1:KAKAO");
    assert_string_equal(f->server.paths[0], "/v1/api/talk/channels/posts");
}

static void instagram_makes_two_calls(void **state)
{
    struct fixture *f = *state;
    struct reply r[] = {{200, "{\"id\":\"c-77\"}", NULL, 0},
                        {200, "{\"id\":\"ig-9\",\"permalink\":\"https://ig/p/9\"}", NULL, 0}};
    script(&f->server, 2, r);
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_INSTAGRAM);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.status, DW_CH_SUCCESS);
    assert_int_equal(f->results.last.attempts, 1);
    assert_string_equal(f->results.last.external_id, "ig-9");
    assert_string_equal(f->results.last.url, "https://ig/p/9");
    assert_string_equal(f->server.paths[0], "/v1/media");
    assert_string_equal(f->server.paths[1], "/v1/media_publish");
    assert_string_equal(f->server.keys[0], "evt-1:INSTAGRAM");
    assert_string_equal(f->server.keys[1], "evt-1:INSTAGRAM:publish");
    assert_non_null(strstr(f->server.bodies[1], "\"creation_id\":\"c-77\""));
}

static void transient_errors_are_retried(void **state)
{
    struct fixture *f = *state;
    struct reply r[] = {{503, "{}", NULL, 0}, {502, "{}", NULL, 0},
                        {200, "{\"adId\":\"a-1\",\"url\":\"u\"}", NULL, 0}};
    script(&f->server, 3, r);
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_URIDONGNETV);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.status, DW_CH_SUCCESS);
    assert_int_equal(f->results.last.attempts, 3);
    assert_int_equal(f->server.calls, 3);
    /* The same Idempotency-Key on every attempt. */
    assert_string_equal(f->server.keys[0], f->server.keys[2]);
}

static void attempts_run_out(void **state)
{
    struct fixture *f = *state;
    struct reply r[] = {{500, "{}", NULL, 0}};
    script(&f->server, 1, r);
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_GINITV);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.status, DW_CH_FAILED);
    assert_int_equal(f->results.last.error, DW_EC_RETRIES_EXHAUSTED);
    assert_int_equal(f->results.last.attempts, 3);
    assert_non_null(strstr(f->results.last.error_message, "HTTP_5XX"));
    assert_int_equal(f->server.calls, 3);
}

static void permanent_4xx_is_not_retried(void **state)
{
    struct fixture *f = *state;
    struct reply r[] = {{422, "{\"error\":\"bad\"}", NULL, 0}};
    script(&f->server, 1, r);
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_KAKAO);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.error, DW_EC_HTTP_4XX);
    assert_int_equal(f->results.last.attempts, 1);
    assert_int_equal(f->server.calls, 1);
}

static void missing_id_is_bad_response(void **state)
{
    struct fixture *f = *state;
    struct reply r[] = {{200, "{\"url\":\"u\"}", NULL, 0}};
    script(&f->server, 1, r);
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_KAKAO);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.error, DW_EC_BAD_RESPONSE);
    assert_int_equal(f->server.calls, 1);
}

static void retry_after_is_respected(void **state)
{
    struct fixture *f = *state;
    struct reply r[] = {{429, "{}", "1", 0}, {200, "{\"ringbackId\":\"rb-1\"}", NULL, 0}};
    script(&f->server, 2, r);
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_RINGOBIZ);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.status, DW_CH_SUCCESS);
    assert_int_equal(f->results.last.attempts, 2);
    int64_t gap = f->server.call_ms[1] - f->server.call_ms[0];
    assert_true(gap >= 1000);
}

static void retry_after_over_the_cap_gives_up(void **state)
{
    struct fixture *f = *state;
    f->cfg.channels[DW_CHANNEL_RINGOBIZ].max_retry_after_ms = 500;
    struct reply r[] = {{429, "{}", "30", 0}};
    script(&f->server, 1, r);
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_RINGOBIZ);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.error, DW_EC_RATE_LIMITED);
    assert_int_equal(f->server.calls, 1);
}

static void slow_answer_times_out(void **state)
{
    struct fixture *f = *state;
    f->cfg.channels[DW_CHANNEL_NAVER].timeout_ms = 100;
    f->cfg.channels[DW_CHANNEL_NAVER].max_attempts = 2;
    struct reply r[] = {{200, "{\"message\":{\"result\":{\"postId\":\"n\"}}}", NULL, 600}};
    script(&f->server, 1, r);
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_NAVER);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.error, DW_EC_RETRIES_EXHAUSTED);
    assert_non_null(strstr(f->results.last.error_message, "TIMEOUT"));
    assert_int_equal(f->results.last.attempts, 2);
}

static void refused_connection_is_transient(void **state)
{
    struct fixture *f = *state;
    /* A port that was free a moment ago: nothing listens there. */
    configure(f, "http://127.0.0.1:1");
    start_pool(f, 1, 4);
    submit(f, DW_CHANNEL_KAKAO);
    wait_results(&f->results, 1);
    assert_int_equal(f->results.last.error, DW_EC_RETRIES_EXHAUSTED);
    assert_non_null(strstr(f->results.last.error_message, "CONNECTION"));
    assert_int_equal(f->results.last.attempts, 3);
}

static void many_jobs_across_threads(void **state)
{
    struct fixture *f = *state;
    struct reply r[] = {{200, "{\"postId\":\"kp\",\"url\":\"u\"}", NULL, 0}};
    script(&f->server, 1, r);
    start_pool(f, 2, 16);
    enum { N = 600 };
    for (int i = 0; i < N; i++)
        submit(f, DW_CHANNEL_KAKAO);
    wait_results(&f->results, N);
    assert_int_equal(f->results.success, N);
}

static void stop_abandons_unfinished_jobs(void **state)
{
    struct fixture *f = *state;
    struct reply r[] = {{200, "{\"postId\":\"kp\"}", NULL, 300}};
    script(&f->server, 1, r);
    start_pool(f, 2, 8);
    for (int i = 0; i < 20; i++)
        submit(f, DW_CHANNEL_KAKAO);
    dw_pool_stop(f->pool);
    f->pool = NULL;
    /* No callback after stop: fewer than all finished, and nothing leaks. */
    assert_true(f->results.n < 20);
}

static void backoff_has_full_jitter_and_a_cap(void **state)
{
    (void)state;
    struct dw_channel_config cc = {.initial_backoff_ms = 100, .multiplier = 2.0,
                                   .max_backoff_ms = 1000};
    assert_int_equal(dw_pool_backoff_ms(&cc, 1, 0.0), 0);
    assert_int_equal(dw_pool_backoff_ms(&cc, 1, 0.999999), 99);
    assert_int_equal(dw_pool_backoff_ms(&cc, 2, 0.5), 100);
    assert_int_equal(dw_pool_backoff_ms(&cc, 3, 0.5), 200);
    assert_int_equal(dw_pool_backoff_ms(&cc, 10, 0.5), 500); /* capped at 1000 */
    for (int a = 1; a < 12; a++)
        for (double x = 0; x < 1.0; x += 0.01)
            assert_true(dw_pool_backoff_ms(&cc, a, x) <= 1000);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(success_sends_headers_and_reads_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(instagram_makes_two_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(transient_errors_are_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(attempts_run_out, setup, teardown),
        cmocka_unit_test_setup_teardown(permanent_4xx_is_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_id_is_bad_response, setup, teardown),
        cmocka_unit_test_setup_teardown(retry_after_is_respected, setup, teardown),
        cmocka_unit_test_setup_teardown(retry_after_over_the_cap_gives_up, setup, teardown),
        cmocka_unit_test_setup_teardown(slow_answer_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(refused_connection_is_transient, setup, teardown),
        cmocka_unit_test_setup_teardown(many_jobs_across_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(stop_abandons_unfinished_jobs, setup, teardown),
        cmocka_unit_test(backoff_has_full_jitter_and_a_cap),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
