/*
 * The per-channel guards end to end (docs/resilience.md), against the real
 * parts: requests go in on Kafka to one worker process whose channels are
 * tuned through DIST_CHANNEL_<NAME>_<KEY> variables, the channel simulator
 * injects the faults, and completions, the simulator's counters and call
 * times, /metrics and the worker's log are checked.
 *
 * Each case uses its own channel, so the cases do not disturb one another:
 *   NAVER       down: its breaker opens, then recovers through HALF_OPEN,
 *               and a re-drive posts only what failed;
 *   RINGOBIZ    hangs: its calls time out, the others are not held up;
 *   KAKAO       a bulkhead of 3 behind 200 ms of latency;
 *   GINITV      429 with Retry-After: 1 (its breaker disabled by env);
 *   INSTAGRAM   switched off with DIST_CHANNEL_INSTAGRAM_BREAKER=forced_open;
 *   URIDONGNETV healthy throughout, in every request.
 * Each case prints its figures; the simulator is reset after every case,
 * pass or fail, so no fault leaks into the next one or another file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <signal.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"

#define REQUEST_TOPIC   "distribution-requests"
#define COMPLETED_TOPIC "distribution-completed"

/* NAVER's breaker: opens after 10 calls at 50 % failures, stays open 4 s,
 * then lets 2 trials through. */
#define NAVER_OPEN_WAIT_MS 4000

static const char *const worker_env[] = {
    "DIST_CHANNEL_NAVER_BREAKER_WINDOW_SIZE=20",
    "DIST_CHANNEL_NAVER_BREAKER_MINIMUM_CALLS=10",
    "DIST_CHANNEL_NAVER_BREAKER_OPEN_WAIT_MS=4000",
    "DIST_CHANNEL_NAVER_BREAKER_HALF_OPEN_CALLS=2",
    "DIST_CHANNEL_RINGOBIZ_TIMEOUT_MS=1000",
    "DIST_CHANNEL_RINGOBIZ_MAX_ATTEMPTS=2",
    /* The hanging-channel case is about timeouts bounding a job: a fixed
     * limit keeps every job calling at once. How the adaptive limit meets
     * timeouts (it shrinks) is test_flow's and test_limit's. */
    "DIST_CHANNEL_RINGOBIZ_LIMIT=fixed",
    "DIST_CHANNEL_KAKAO_MAX_CONCURRENT=3",
    "DIST_CHANNEL_KAKAO_BULKHEAD_MAX_WAIT_MS=30000",
    "DIST_CHANNEL_GINITV_BREAKER=disabled",
    "DIST_CHANNEL_INSTAGRAM_BREAKER=forced_open",
    NULL,
};

static struct itest_worker worker;
static rd_kafka_t *producer;
static struct itest_completions *completions;

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- requests and completions ---- */

static void event_id(char *buf, size_t len, const char *kind, int i)
{
    snprintf(buf, len, "res-%s-%s-%04d", kind, itest_run_id(), i);
}

/* A valid request for the given channels ("\"NAVER\",\"KAKAO\""). */
static char *request_json(const char *id, const char *channels)
{
    char *out = NULL;
    if (asprintf(&out,
                 "{\"eventId\":\"%s\",\"title\":\"Grand opening\",\"content\":\"Visit us\","
                 "\"imageUrl\":\"https://cdn.example.com/e/1.png\",\"channels\":[%s],"
                 "\"channelSettings\":{\"URIDONGNETV\":{\"radius\":\"1km\"},\"GINITV\":{"
                 "\"region\":\"Seoul\"},\"RINGOBIZ\":{\"phoneNumber\":\"02-1234-5678\"}}}",
                 id, channels) < 0)
        fail_msg("asprintf");
    return out;
}

static void send_batch(const char *kind, int from, int to, const char *channels)
{
    for (int i = from; i < to; i++) {
        char id[128];
        event_id(id, sizeof(id), kind, i);
        char *json = request_json(id, channels);
        itest_produce(producer, REQUEST_TOPIC, id, json, strlen(json));
        free(json);
    }
    itest_flush(producer);
}

/* Reads completions until ids kind-0..n-1 have `times` each (60 s at most). */
static void await_batch(const char *kind, int n, int times)
{
    char **ids = calloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++) {
        ids[i] = malloc(128);
        event_id(ids[i], 128, kind, i);
    }
    int enough = itest_completions_await(completions, ids, n, times, 60000);
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    if (enough < n) {
        itest_worker_log_tail(&worker, 30);
        fail_msg("%d of %d %s requests completed %d time(s) within 60 s", enough, n, kind, times);
    }
}

static struct json_object *completion(const char *kind, int i, int nth)
{
    char id[128];
    event_id(id, sizeof(id), kind, i);
    struct json_object *doc = itest_completion(completions, id, nth);
    assert_non_null(doc);
    return doc;
}

static const char *str(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static int num(struct json_object *o, const char *key)
{
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, key, &v));
    return json_object_get_int(v);
}

static struct json_object *channel_of(struct json_object *doc, const char *name)
{
    struct json_object *chans;
    assert_true(json_object_object_get_ex(doc, "distributedChannels", &chans));
    for (size_t i = 0; i < json_object_array_length(chans); i++) {
        struct json_object *c = json_object_array_get_idx(chans, i);
        if (strcmp(str(c, "channel"), name) == 0)
            return c;
    }
    fail_msg("no %s in the completion", name);
    return NULL;
}

/* Every channel in names succeeded with one attempt in each completion. */
static void others_succeeded(const char *kind, int n, const char *const *names, int count)
{
    for (int i = 0; i < n; i++) {
        struct json_object *doc = completion(kind, i, 0);
        for (int c = 0; c < count; c++) {
            struct json_object *ch = channel_of(doc, names[c]);
            assert_string_equal(str(ch, "status"), "SUCCESS");
            assert_int_equal(num(ch, "attempts"), 1);
        }
    }
}

/* Counts the error codes of channel name over a batch's completions;
 * returns the number of FAILED ones. */
struct codes {
    int success, retries_exhausted, circuit_open, bulkhead_full, other;
    int attempts_zero;
};

static struct codes count_codes(const char *kind, int n, const char *name)
{
    struct codes k = {0};
    for (int i = 0; i < n; i++) {
        struct json_object *ch = channel_of(completion(kind, i, 0), name);
        const char *code = str(ch, "errorCode");
        if (num(ch, "attempts") == 0)
            k.attempts_zero++;
        if (strcmp(str(ch, "status"), "SUCCESS") == 0)
            k.success++;
        else if (code && strcmp(code, "RETRIES_EXHAUSTED") == 0)
            k.retries_exhausted++;
        else if (code && strcmp(code, "CIRCUIT_OPEN") == 0)
            k.circuit_open++;
        else if (code && strcmp(code, "BULKHEAD_FULL") == 0)
            k.bulkhead_full++;
        else
            k.other++;
    }
    return k;
}

/* ---- the worker's metrics and log ---- */

/* The value of one exact series on /metrics; -1 when it is missing. */
static double metric(const char *series)
{
    char url[128], *body = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", worker.http_port);
    assert_int_equal(itest_http("GET", url, NULL, &body), 200);
    double value = -1;
    size_t len = strlen(series);
    for (char *line = body; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, series, len) == 0 && line[len] == ' ')
            value = strtod(line + len + 1, NULL);
        line = next;
    }
    free(body);
    return value;
}

/* Lines of the worker's log that contain text. */
static int log_lines(const char *text)
{
    FILE *f = fopen(worker.log_path, "r");
    char line[4096];
    int n = 0;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        n += strstr(line, text) != NULL;
    fclose(f);
    return n;
}

static int64_t sim_int(const char *path)
{
    struct json_object *stats = itest_sim_stats();
    int64_t v = itest_json_int(stats, path);
    json_object_put(stats);
    return v;
}

/* The simulator's arrival times of an Idempotency-Key. Caller puts. */
static struct json_object *sim_call_times(const char *key)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/_sim/keys/%s", itest_env("SIM_URL"), key);
    struct json_object *k = itest_http_json(url, NULL);
    struct json_object *times;
    assert_non_null(k);
    assert_true(json_object_object_get_ex(k, "callTimesMs", &times));
    json_object_get(times);
    json_object_put(k);
    return times;
}

/* ---- the cases ---- */

#define DOWN_FIRST 20
#define DOWN_MORE  200

/* NAVER closes every connection. Its breaker opens after the first few
 * failures; from then on NAVER fails at once as CIRCUIT_OPEN (attempts 0),
 * so the simulator sees far fewer calls than requests x attempts, while
 * the other channels of the same requests succeed with one attempt. */
static void down_channel_opens_its_breaker(void **state)
{
    (void)state;
    static const char *const others[] = {"URIDONGNETV", "GINITV", "RINGOBIZ"};
    const char *channels = "\"URIDONGNETV\",\"GINITV\",\"RINGOBIZ\",\"NAVER\"";
    itest_sim("/_sim/reset-counters", NULL);
    itest_sim("/_sim/faults", "{\"channel\":\"NAVER\",\"down\":true}");

    int64_t t0 = wall_ms();
    send_batch("down", 0, DOWN_FIRST, channels);
    await_batch("down", DOWN_FIRST, 1);
    int64_t t1 = wall_ms();
    assert_int_equal(metric("resilience4j_circuitbreaker_state{name=\"NAVER\",state=\"open\"}"), 1);
    send_batch("down", DOWN_FIRST, DOWN_FIRST + DOWN_MORE, channels);
    await_batch("down", DOWN_FIRST + DOWN_MORE, 1);
    int64_t t2 = wall_ms();

    int n = DOWN_FIRST + DOWN_MORE;
    int64_t naver_calls = sim_int("channels.NAVER.calls");
    int64_t possible = (int64_t)n * 3;
    struct codes k = count_codes("down", n, "NAVER");
    printf("  NAVER down: %d requests x 3 attempts = %lld possible calls; the simulator saw "
           "%lld\n",
           n, (long long)possible, (long long)naver_calls);
    printf("  NAVER results: %d RETRIES_EXHAUSTED, %d CIRCUIT_OPEN (%d with attempts 0), %d "
           "other\n",
           k.retries_exhausted, k.circuit_open, k.attempts_zero, k.other);
    printf("  first %d requests in %lld ms, next %d in %lld ms; URIDONGNETV/GINITV/RINGOBIZ "
           "calls %lld/%lld/%lld\n",
           DOWN_FIRST, (long long)(t1 - t0), DOWN_MORE, (long long)(t2 - t1),
           (long long)sim_int("channels.URIDONGNETV.calls"),
           (long long)sim_int("channels.GINITV.calls"),
           (long long)sim_int("channels.RINGOBIZ.calls"));
    printf("  breaker: closed_to_open %g, not permitted %g, failure rate %g%%\n",
           metric("resilience4j_circuitbreaker_transitions_total{name=\"NAVER\",kind=\"closed_to_"
                  "open\"}"),
           metric("resilience4j_circuitbreaker_not_permitted_calls_total{name=\"NAVER\",kind="
                  "\"not_permitted\"}"),
           metric("resilience4j_circuitbreaker_failure_rate{name=\"NAVER\"}"));

    assert_int_equal(k.success, 0);
    assert_int_equal(k.other, 0);
    assert_true(naver_calls * 4 < possible);
    assert_true(k.circuit_open >= DOWN_MORE * 9 / 10);
    /* The other channels: every one succeeded, first time, one call each. */
    others_succeeded("down", n, others, 3);
    for (int i = 0; i < n; i++)
        assert_string_equal(str(completion("down", i, 0), "status"), "PARTIAL_FAILURE");
    assert_int_equal(sim_int("channels.URIDONGNETV.calls"), n);
    assert_int_equal(sim_int("channels.GINITV.calls"), n);
    /* Each transition is logged once. */
    double opened =
        metric("resilience4j_circuitbreaker_transitions_total{name=\"NAVER\",kind=\"closed_to_"
               "open\"}");
    assert_true(opened >= 1);
    assert_int_equal(log_lines("circuit breaker of NAVER: CLOSED -> OPEN"), (int)opened);
    assert_true(metric("resilience4j_circuitbreaker_not_permitted_calls_total{name=\"NAVER\","
                       "kind=\"not_permitted\"}") >= k.circuit_open);
    /* The status endpoint has the reason. */
    char id[128], url[256];
    event_id(id, sizeof(id), "down", n - 1);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/%s/status", worker.http_port, id);
    struct json_object *st = itest_http_json(url, NULL);
    assert_non_null(st);
    struct json_object *chans, *naver = NULL;
    assert_true(json_object_object_get_ex(st, "channels", &chans));
    for (size_t i = 0; i < json_object_array_length(chans); i++)
        if (strcmp(str(json_object_array_get_idx(chans, i), "channel"), "NAVER") == 0)
            naver = json_object_array_get_idx(chans, i);
    assert_non_null(naver);
    printf("  status of the last one: NAVER %s %s \"%s\"\n", str(naver, "status"),
           str(naver, "errorCode"), str(naver, "errorMessage"));
    json_object_put(st);
}

/* NAVER comes back (the previous case's fault was cleared with the
 * simulator's reset; its breaker is still open). After open_wait_ms the breaker lets two trials
 * through (HALF_OPEN); they succeed and it closes. Re-sending the requests
 * that failed NAVER re-drives NAVER alone. */
static void cleared_fault_recovers_through_half_open(void **state)
{
    (void)state;
    const char *channels = "\"URIDONGNETV\",\"NAVER\"";

    /* Probe with small batches until NAVER succeeds again. */
    int64_t t0 = wall_ms();
    int probes = 0, recovered = 0;
    while (!recovered && wall_ms() - t0 < NAVER_OPEN_WAIT_MS * 3) {
        char kind[32];
        snprintf(kind, sizeof(kind), "probe%d", probes++);
        send_batch(kind, 0, 5, channels);
        await_batch(kind, 5, 1);
        struct codes k = count_codes(kind, 5, "NAVER");
        recovered = k.success == 5;
        if (!recovered)
            usleep(500 * 1000);
    }
    printf("  NAVER back after %lld ms and %d probe batch(es) of 5\n", (long long)(wall_ms() - t0),
           probes);
    assert_true(recovered);

    send_batch("after", 0, 20, channels);
    await_batch("after", 20, 1);
    struct codes k = count_codes("after", 20, "NAVER");
    double to_half = metric(
        "resilience4j_circuitbreaker_transitions_total{name=\"NAVER\",kind=\"open_to_half_open\"}");
    double to_closed = metric("resilience4j_circuitbreaker_transitions_total{name=\"NAVER\","
                              "kind=\"half_open_to_closed\"}");
    printf("  then 20 requests: NAVER %d SUCCESS; transitions open->half_open %g, "
           "half_open->closed %g; log lines for HALF_OPEN -> CLOSED: %d\n",
           k.success, to_half, to_closed,
           log_lines("circuit breaker of NAVER: HALF_OPEN -> CLOSED"));
    assert_int_equal(k.success, 20);
    assert_true(to_half >= 1);
    assert_int_equal(to_closed, 1);
    assert_int_equal(log_lines("circuit breaker of NAVER: OPEN -> HALF_OPEN"), (int)to_half);
    assert_int_equal(log_lines("circuit breaker of NAVER: HALF_OPEN -> CLOSED"), 1);
    assert_int_equal(metric("resilience4j_circuitbreaker_state{name=\"NAVER\",state=\"closed\"}"),
                     1);
    assert_int_equal(metric("dw_breaker_state{channel=\"NAVER\"}"), 0);

    /* The operator's re-drive: the same requests again. Only NAVER is
     * called; the rest had succeeded and is not posted twice. */
    itest_sim("/_sim/reset-counters", NULL);
    int before[DOWN_FIRST];
    for (int i = 0; i < DOWN_FIRST; i++)
        before[i] = num(channel_of(completion("down", i, 0), "NAVER"), "attempts");
    send_batch("down", 0, DOWN_FIRST, "\"URIDONGNETV\",\"GINITV\",\"RINGOBIZ\",\"NAVER\"");
    await_batch("down", DOWN_FIRST, 2);
    for (int i = 0; i < DOWN_FIRST; i++) {
        struct json_object *doc = completion("down", i, 1);
        assert_string_equal(str(doc, "status"), "COMPLETED");
        assert_int_equal(num(channel_of(doc, "NAVER"), "attempts"), before[i] + 1);
        assert_int_equal(num(channel_of(doc, "URIDONGNETV"), "attempts"), 1);
    }
    printf("  re-drive of %d requests: NAVER calls %lld, URIDONGNETV calls %lld, "
           "duplicate posts %lld\n",
           DOWN_FIRST, (long long)sim_int("channels.NAVER.calls"),
           (long long)sim_int("channels.URIDONGNETV.calls"), (long long)sim_int("duplicatePosts"));
    assert_int_equal(sim_int("channels.NAVER.calls"), DOWN_FIRST);
    assert_int_equal(sim_int("channels.URIDONGNETV.calls"), 0);
    assert_int_equal(sim_int("duplicatePosts"), 0);
}

/* RINGOBIZ never answers. Its calls time out after 1 s (2 attempts), and
 * the other channels of the same requests are called at once: before any
 * RINGOBIZ call could have timed out. */
static void hanging_channel_times_out_without_blocking_others(void **state)
{
    (void)state;
    static const char *const others[] = {"URIDONGNETV", "GINITV"};
    enum { N = 30 };
    itest_sim("/_sim/faults", "{\"channel\":\"RINGOBIZ\",\"hang\":true}");
    int64_t t0 = wall_ms();
    send_batch("hang", 0, N, "\"URIDONGNETV\",\"GINITV\",\"RINGOBIZ\"");
    await_batch("hang", N, 1);
    int64_t took = wall_ms() - t0;

    struct codes k = count_codes("hang", N, "RINGOBIZ");
    /* When did the simulator see the other channels' calls? */
    int64_t worst = 0;
    for (int i = 0; i < N; i++) {
        char id[128], key[160];
        event_id(id, sizeof(id), "hang", i);
        snprintf(key, sizeof(key), "%s:URIDONGNETV", id);
        struct json_object *times = sim_call_times(key);
        int64_t first = json_object_get_int64(json_object_array_get_idx(times, 0));
        if (first - t0 > worst)
            worst = first - t0;
        json_object_put(times);
    }
    printf("  RINGOBIZ hangs: %d requests done in %lld ms; RINGOBIZ %d RETRIES_EXHAUSTED "
           "(timeouts), %d CIRCUIT_OPEN; URIDONGNETV called at most %lld ms after sending\n",
           N, (long long)took, k.retries_exhausted, k.circuit_open, (long long)worst);
    printf("  RINGOBIZ breaker: %s, failure rate %g%%\n",
           metric("dw_breaker_state{channel=\"RINGOBIZ\"}") == 2 ? "OPEN" : "not open",
           metric("resilience4j_circuitbreaker_failure_rate{name=\"RINGOBIZ\"}"));
    assert_int_equal(k.success, 0);
    assert_int_equal(k.other, 0);
    assert_int_equal(k.retries_exhausted + k.circuit_open, N);
    for (int i = 0; i < N; i++) {
        struct json_object *ch = channel_of(completion("hang", i, 0), "RINGOBIZ");
        assert_true(num(ch, "attempts") <= 2);
    }
    others_succeeded("hang", N, others, 2);
    /* Two 1 s attempts bound each RINGOBIZ job, and nobody waited for a
     * hung call. */
    assert_true(took < 10000);
    assert_true(worst < 1000);
}

/* KAKAO's bulkhead is 3 and every call takes 200 ms: 30 requests queue for
 * slots (bulkhead_max_wait_ms 30000) and all succeed, and the simulator
 * never has more than 3 KAKAO calls in flight. */
static void bulkhead_caps_concurrent_calls(void **state)
{
    (void)state;
    enum { N = 30 };
    itest_sim("/_sim/faults", "{\"channel\":\"KAKAO\",\"latencyMs\":200}");
    itest_sim("/_sim/reset-counters", NULL);
    int64_t t0 = wall_ms();
    send_batch("bulk", 0, N, "\"URIDONGNETV\",\"KAKAO\"");
    await_batch("bulk", N, 1);
    int64_t took = wall_ms() - t0;
    int64_t max_in_flight = sim_int("channels.KAKAO.maxInFlight");
    struct codes k = count_codes("bulk", N, "KAKAO");
    printf("  KAKAO bulkhead 3, 200 ms per call: %d requests in %lld ms, %d SUCCESS, "
           "simulator maxInFlight %lld, worker max_allowed %g\n",
           N, (long long)took, k.success, (long long)max_in_flight,
           metric("resilience4j_bulkhead_max_allowed_concurrent_calls{name=\"KAKAO\"}"));
    assert_int_equal(k.success, N);
    assert_true(max_in_flight >= 1 && max_in_flight <= 3);
    /* 30 calls of 200 ms, 3 at a time: at least 10 rounds. */
    assert_true(took >= 1900);
    assert_int_equal(metric("resilience4j_bulkhead_available_concurrent_calls{name=\"KAKAO\"}"), 3);
    assert_int_equal(metric("resilience4j_bulkhead_queued_calls{name=\"KAKAO\"}"), 0);
}

/* GINITV answers every call 429 with Retry-After: 1. Each retry comes no
 * sooner than 1 s after the call before it; after 3 attempts the channel
 * ends RETRIES_EXHAUSTED with RATE_LIMITED as the last cause. */
static void retry_after_is_respected(void **state)
{
    (void)state;
    enum { N = 5 };
    itest_sim("/_sim/faults", "{\"channel\":\"GINITV\",\"rate429\":1,\"retryAfter\":1}");
    send_batch("r429", 0, N, "\"URIDONGNETV\",\"GINITV\"");
    await_batch("r429", N, 1);
    int64_t min_gap = INT64_MAX;
    int gaps = 0;
    for (int i = 0; i < N; i++) {
        char id[128], key[160];
        event_id(id, sizeof(id), "r429", i);
        snprintf(key, sizeof(key), "%s:GINITV", id);
        struct json_object *times = sim_call_times(key);
        size_t n = json_object_array_length(times);
        assert_int_equal(n, 3);
        for (size_t c = 1; c < n; c++) {
            int64_t gap = json_object_get_int64(json_object_array_get_idx(times, c)) -
                          json_object_get_int64(json_object_array_get_idx(times, c - 1));
            min_gap = gap < min_gap ? gap : min_gap;
            gaps++;
        }
        json_object_put(times);
        struct json_object *ch = channel_of(completion("r429", i, 0), "GINITV");
        assert_string_equal(str(ch, "errorCode"), "RETRIES_EXHAUSTED");
        assert_int_equal(num(ch, "attempts"), 3);
    }
    char id[128], url[256];
    event_id(id, sizeof(id), "r429", 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/distribution/%s/status", worker.http_port, id);
    char *body = NULL;
    assert_int_equal(itest_http("GET", url, NULL, &body), 200);
    printf("  429 + Retry-After: 1: %d gaps between calls of one key, the shortest %lld ms\n", gaps,
           (long long)min_gap);
    assert_non_null(strstr(body, "RATE_LIMITED"));
    free(body);
    assert_true(min_gap >= 1000);
}

/* DIST_CHANNEL_INSTAGRAM_BREAKER=forced_open: an SRE switched the channel
 * off without a deploy. It fails CIRCUIT_OPEN with no call; the others run. */
static void forced_open_switches_a_channel_off(void **state)
{
    (void)state;
    enum { N = 5 };
    itest_sim("/_sim/reset-counters", NULL);
    send_batch("off", 0, N, "\"URIDONGNETV\",\"INSTAGRAM\"");
    await_batch("off", N, 1);
    struct codes k = count_codes("off", N, "INSTAGRAM");
    printf("  INSTAGRAM forced open: %d CIRCUIT_OPEN with attempts 0 of %d; simulator calls %lld; "
           "dw_breaker_state %g\n",
           k.attempts_zero, N, (long long)sim_int("channels.INSTAGRAM.calls"),
           metric("dw_breaker_state{channel=\"INSTAGRAM\"}"));
    assert_int_equal(k.circuit_open, N);
    assert_int_equal(k.attempts_zero, N);
    assert_int_equal(sim_int("channels.INSTAGRAM.calls"), 0);
    assert_int_equal(sim_int("channels.URIDONGNETV.calls"), N);
    assert_int_equal(metric("dw_breaker_state{channel=\"INSTAGRAM\"}"), 3);
    assert_int_equal(
        metric("resilience4j_circuitbreaker_state{name=\"INSTAGRAM\",state=\"forced_open\"}"), 1);
    assert_int_equal(log_lines("circuit breaker of INSTAGRAM is FORCED_OPEN by configuration"), 1);
}

/* After every case, pass or fail: no fault may leak into the next case
 * or another test file. */
static int reset_sim(void **state)
{
    (void)state;
    itest_sim("/_sim/reset", NULL);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    itest_sim("/_sim/reset", NULL);
    /* A log of this run alone (itest appends to a worker's log file), so
     * its lines can be counted. */
    char name[96];
    snprintf(name, sizeof(name), "resilience-%s", itest_run_id());
    itest_worker_start(&worker, name, worker_env);
    producer = itest_producer();
    completions = itest_completions_new(COMPLETED_TOPIC, "res-");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    itest_sim("/_sim/reset", NULL);
    int rc = itest_worker_stop(&worker, SIGTERM, 20000);
    itest_completions_free(completions);
    rd_kafka_destroy(producer);
    if (rc != 0) {
        itest_worker_log_tail(&worker, 40);
        fprintf(stderr, "worker exit status %d after SIGTERM, expected 0\n", rc);
        return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(down_channel_opens_its_breaker, reset_sim),
        cmocka_unit_test_teardown(cleared_fault_recovers_through_half_open, reset_sim),
        cmocka_unit_test_teardown(hanging_channel_times_out_without_blocking_others, reset_sim),
        cmocka_unit_test_teardown(bulkhead_caps_concurrent_calls, reset_sim),
        cmocka_unit_test_teardown(retry_after_is_respected, reset_sim),
        cmocka_unit_test_teardown(forced_open_switches_a_channel_off, reset_sim),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
