/*
 * Flow control (issue 10): a burst must never turn into failed posts.
 *
 * Each test starts a channel simulator of its own (build/tools/channel-sim,
 * so its start-up options and faults touch no other test), produces a
 * backlog of requests for all six channels onto the dev broker, and only
 * then starts a worker whose six channel URLs point at that simulator: the
 * worker meets the backlog as it does after an outage or a deploy. Then it
 * reads distribution-completed until every request has completed.
 *
 *   - burst_against_capacity: channels that serve 64 calls at once (503
 *     beyond) in 20 ms;
 *   - burst_against_slow_listener: a simulator that accepts 200 connections
 *     per second from a backlog of 16 (a busy ordinary server);
 *   - latency_step_mid_burst: capacity 64 at 20 ms, stepping to 200 ms once
 *     a tenth of the burst has completed.
 *
 * Every request must end COMPLETED (no channel FAILED), none may be lost,
 * and the simulator must see no duplicate post. What the simulator refused
 * (overCapacity) and the connections it saw are printed, not judged; no
 * timing is asserted.
 *
 * Sizes: DW_FLOW_REQUESTS (default 5000) for the two bursts and
 * DW_FLOW_STEP_REQUESTS (default 2000: at 200 ms a channel of capacity 64
 * serves 320 calls/s, and INSTAGRAM makes two per request) for the step.
 * DW_FLOW_WORKER_ENV ("K=V K=V", optional) adds settings to the worker's
 * environment, to try a setting against these bursts, e.g.
 * "DIST_CHANNEL_KAKAO_MAX_CONCURRENT=48".
 *
 * The clock of the printed rate starts once the worker holds all six
 * partitions (dw_partitions_assigned), so the group join is not in it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dw/common.h"
#include "itest.h"

#define REQUEST_TOPIC   "distribution-requests"
#define COMPLETED_TOPIC "distribution-completed"
#define CALLS_PER_REQ   7     /* six channels, INSTAGRAM in two steps */
#define STALL_MS        30000 /* no completion for this long: the rest is lost */
#define MAX_WAIT_MS     240000
#define MAX_CODES       16

static const char *const channel_names[6] = {"URIDONGNETV", "GINITV", "RINGOBIZ",
                                             "INSTAGRAM",   "NAVER",  "KAKAO"};

/* ---- a simulator of the test's own ---- */

struct flow_sim {
    pid_t pid;
    char url[160];
};

/* Starts build/tools/channel-sim --port 0 with args (NULL-ended) and reads
 * its "listening on ADDR:PORT" line. */
static void sim_start(struct flow_sim *s, const char *const *args)
{
    const char *build = getenv("DW_BUILD_DIR");
    char bin[1024];
    snprintf(bin, sizeof(bin), "%s/tools/channel-sim", build ? build : ".");
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[16] = {bin, "--port", "0"};
        int n = 3;
        for (int i = 0; args && args[i] && n < 15; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* a test that aborts takes it along */
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    char line[128] = "";
    if (!fgets(line, sizeof(line), f) || strncmp(line, "listening on ", 13) != 0) {
        fprintf(stderr, "channel-sim (%s) did not start\n", bin);
        fail();
    }
    fclose(f);
    line[strcspn(line, "\n")] = '\0';
    s->pid = pid;
    snprintf(s->url, sizeof(s->url), "http://%s", line + 13);
}

/* Stops the simulator; returns its exit status (0 when it stopped cleanly;
 * a sanitizer build reports through it). */
static int sim_stop(struct flow_sim *s)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    int st = 0;
    while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR) {
    }
    s->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void sim_faults(const struct flow_sim *s, const char *json)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/_sim/faults", s->url);
    long status = itest_http("POST", url, json, NULL);
    if (status != 200) {
        fprintf(stderr, "simulator refused faults %s (status %ld)\n", json, status);
        fail();
    }
}

static struct json_object *sim_stats(const struct flow_sim *s)
{
    char url[256];
    long status;
    snprintf(url, sizeof(url), "%s/_sim/stats", s->url);
    struct json_object *o = itest_http_json(url, &status);
    assert_non_null(o);
    return o;
}

/* ---- one burst ---- */

struct burst {
    const char *name;
    int n;
    const char *step_json; /* faults applied once a tenth has completed; NULL: none */
    char prefix[96];
    int *done;         /* completions per request */
    int completed;     /* requests with at least one completion */
    int not_completed; /* requests whose (first) completion is not COMPLETED */
    int failed_chans;  /* FAILED channels over those completions */
    int extra;         /* completions beyond the first */
    char codes[MAX_CODES][32];
    int code_count[MAX_CODES];
    int64_t ms; /* worker ready to last completion */
};

static int env_count(const char *name, int dflt)
{
    const char *v = getenv(name);
    long n = v && *v ? strtol(v, NULL, 10) : dflt;
    return n >= 1 && n <= 40000 ? (int)n : dflt;
}

static void note_code(struct burst *b, const char *code)
{
    for (int i = 0; i < MAX_CODES; i++) {
        if (b->code_count[i] == 0)
            snprintf(b->codes[i], sizeof(b->codes[i]), "%s", code);
        if (strcmp(b->codes[i], code) == 0) {
            b->code_count[i]++;
            return;
        }
    }
}

/* Counts one completion of ours: its status and its FAILED channels. */
static void note_completion(struct burst *b, int i, const rd_kafka_message_t *m)
{
    if (b->done[i]++ > 0) {
        b->extra++;
        return;
    }
    b->completed++;
    struct json_object *doc = json_tokener_parse((const char *)m->payload), *v, *chans;
    assert_non_null(doc);
    if (!json_object_object_get_ex(doc, "status", &v) ||
        strcmp(json_object_get_string(v), "COMPLETED") != 0)
        b->not_completed++;
    if (json_object_object_get_ex(doc, "distributedChannels", &chans)) {
        for (size_t c = 0; c < json_object_array_length(chans); c++) {
            struct json_object *ch = json_object_array_get_idx(chans, c), *st, *code;
            if (json_object_object_get_ex(ch, "status", &st) &&
                strcmp(json_object_get_string(st), "FAILED") == 0) {
                b->failed_chans++;
                note_code(b, json_object_object_get_ex(ch, "errorCode", &code)
                                 ? json_object_get_string(code)
                                 : "(none)");
            }
        }
    }
    json_object_put(doc);
}

static void produce_backlog(struct burst *b)
{
    rd_kafka_t *p = itest_producer();
    for (int i = 0; i < b->n; i++) {
        char id[128];
        snprintf(id, sizeof(id), "%s%05d", b->prefix, i);
        char *json = itest_request_json(id);
        itest_produce(p, REQUEST_TOPIC, id, json, strlen(json));
        free(json);
    }
    itest_flush(p);
    rd_kafka_destroy(p);
}

/*
 * The whole story of one test: the backlog, a worker on sim, completions
 * until every request has one (or nothing came for STALL_MS), the figures
 * printed, the simulator stopped, then the assertions.
 */
static void run_burst(struct burst *b, struct flow_sim *sim)
{
    snprintf(b->prefix, sizeof(b->prefix), "flow-%s-%s-", b->name, itest_run_id());
    b->done = calloc((size_t)b->n, sizeof(int));
    assert_non_null(b->done);
    rd_kafka_t *reader = itest_reader(COMPLETED_TOPIC);
    produce_backlog(b);

    static char env[6][300], user_env[2048];
    /* The reference configuration's flow control: worker-test.conf runs
     * the other integration tests with fixed limits and no connect pace. */
    static const char *const flow_env[] = {
        "DIST_CHANNEL_URIDONGNETV_LIMIT=adaptive",
        "DIST_CHANNEL_GINITV_LIMIT=adaptive",
        "DIST_CHANNEL_RINGOBIZ_LIMIT=adaptive",
        "DIST_CHANNEL_INSTAGRAM_LIMIT=adaptive",
        "DIST_CHANNEL_NAVER_LIMIT=adaptive",
        "DIST_CHANNEL_KAKAO_LIMIT=adaptive",
        "DIST_CHANNEL_URIDONGNETV_MAX_CONNECTS_PER_SECOND=2000",
        "DIST_CHANNEL_GINITV_MAX_CONNECTS_PER_SECOND=2000",
        "DIST_CHANNEL_RINGOBIZ_MAX_CONNECTS_PER_SECOND=2000",
        "DIST_CHANNEL_INSTAGRAM_MAX_CONNECTS_PER_SECOND=2000",
        "DIST_CHANNEL_NAVER_MAX_CONNECTS_PER_SECOND=2000",
        "DIST_CHANNEL_KAKAO_MAX_CONNECTS_PER_SECOND=2000",
    };
    const char *extra_env[7 + 12 + 32];
    for (int c = 0; c < 6; c++) {
        char lc[16];
        size_t k;
        for (k = 0; channel_names[c][k] && k < sizeof(lc) - 1; k++)
            lc[k] = (char)(channel_names[c][k] - 'A' + 'a');
        lc[k] = '\0';
        snprintf(env[c], sizeof(env[c]), "DIST_CHANNEL_%s_URL=%s/%s", channel_names[c], sim->url,
                 lc);
        extra_env[c] = env[c];
    }
    int n_env = 6;
    for (size_t i = 0; i < sizeof(flow_env) / sizeof(flow_env[0]); i++)
        extra_env[n_env++] = flow_env[i];
    const char *more = getenv("DW_FLOW_WORKER_ENV");
    snprintf(user_env, sizeof(user_env), "%s", more ? more : "");
    for (char *kv = user_env; *kv && n_env < 6 + 12 + 32;) {
        char *sp = strchr(kv, ' ');
        if (sp)
            *sp = '\0';
        if (*kv)
            extra_env[n_env++] = kv;
        if (!sp)
            break;
        kv = sp + 1;
    }
    extra_env[n_env] = NULL;
    struct itest_worker worker;
    itest_worker_start(&worker, b->name, extra_env);
    for (int i = 0; i < 300 && itest_metric(&worker, "dw_partitions_assigned") < 6; i++)
        usleep(20 * 1000);

    int64_t start = dw_now_ms(), last = start;
    size_t plen = strlen(b->prefix);
    bool stepped = b->step_json == NULL;
    while (b->completed < b->n && dw_now_ms() - last < STALL_MS &&
           dw_now_ms() - start < MAX_WAIT_MS) {
        if (!stepped && b->completed >= b->n / 10) {
            sim_faults(sim, b->step_json);
            printf("  %s: step %s after %d completions, %.1f s\n", b->name, b->step_json,
                   b->completed, (double)(dw_now_ms() - start) / 1000.0);
            stepped = true;
        }
        rd_kafka_message_t *m = itest_read(reader, 50);
        if (!m)
            continue;
        if (m->key_len == plen + 5 && memcmp(m->key, b->prefix, plen) == 0) {
            int i = (int)strtol((const char *)m->key + plen, NULL, 10);
            if (i >= 0 && i < b->n) {
                note_completion(b, i, m);
                last = dw_now_ms();
            }
        }
        rd_kafka_message_destroy(m);
    }
    b->ms = last - start;

    double limit = itest_metric(&worker, "dw_channel_limit");
    double opened = itest_metric(&worker, "dw_channel_connections_opened_total");
    int rc = itest_worker_stop(&worker, SIGTERM, 30000);
    rd_kafka_destroy(reader);

    struct json_object *st = sim_stats(sim);
    int64_t over = 0, max_serving = 0, conns_opened_max = 0, max_conns = 0;
    for (int c = 0; c < 6; c++) {
        char path[96];
        snprintf(path, sizeof(path), "channels.%s.overCapacity", channel_names[c]);
        over += itest_json_int(st, path);
        snprintf(path, sizeof(path), "channels.%s.maxServing", channel_names[c]);
        int64_t v = itest_json_int(st, path);
        max_serving = v > max_serving ? v : max_serving;
        snprintf(path, sizeof(path), "channels.%s.maxConnectionsOpen", channel_names[c]);
        v = itest_json_int(st, path);
        max_conns = v > max_conns ? v : max_conns;
        snprintf(path, sizeof(path), "channels.%s.connectionsOpened", channel_names[c]);
        v = itest_json_int(st, path);
        conns_opened_max = v > conns_opened_max ? v : conns_opened_max;
    }
    int64_t calls = itest_json_int(st, "calls"), posts = itest_json_int(st, "posts");
    int64_t dups = itest_json_int(st, "duplicatePosts");
    int64_t accepted = itest_json_int(st, "connectionsAccepted");
    int64_t peak_open = itest_json_int(st, "maxConnectionsOpen");
    json_object_put(st);
    int sim_rc = sim_stop(sim);

    int lost = b->n - b->completed;
    printf("  %s: %d requests; %d completed in %.1f s (%.0f requests/s), %d lost, "
           "%d not COMPLETED, %d FAILED channels, %d extra completions\n",
           b->name, b->n, b->completed, (double)b->ms / 1000.0,
           b->ms > 0 ? b->completed * 1000.0 / (double)b->ms : 0.0, lost, b->not_completed,
           b->failed_chans, b->extra);
    for (int i = 0; i < MAX_CODES && b->code_count[i] > 0; i++)
        printf("    FAILED with %s: %d\n", b->codes[i], b->code_count[i]);
    printf("  %s: simulator: %" PRId64 " calls, %" PRId64 " posts (%d expected), %" PRId64
           " duplicate posts, %" PRId64 " answered over capacity (%.1f %% of calls); peak "
           "calls served at once per channel %" PRId64 "\n",
           b->name, calls, posts, b->n * CALLS_PER_REQ, dups, over,
           calls > 0 ? 100.0 * (double)over / (double)calls : 0.0, max_serving);
    printf("  %s: connections: %" PRId64 " accepted, peak %" PRId64
           " open; per channel at most %" PRId64 " opened, peak %" PRId64 " open\n",
           b->name, accepted, peak_open, conns_opened_max, max_conns);
    if (limit > 0 || opened > 0)
        printf("  %s: worker: sum of concurrency limits %.0f at the end, %.0f connections "
               "opened\n",
               b->name, limit, opened);
    fflush(stdout);
    free(b->done); /* before the assertions, which leave at the first failure */
    b->done = NULL;

    if (rc != 0)
        itest_worker_log_tail(&worker, 40);
    assert_int_equal(rc, 0);
    assert_int_equal(sim_rc, 0);
    assert_int_equal(lost, 0);
    assert_int_equal(b->not_completed, 0);
    assert_int_equal(b->failed_chans, 0);
    assert_int_equal(dups, 0);
}

/* ---- the tests ---- */

static void burst_against_capacity(void **state)
{
    (void)state;
    struct flow_sim sim;
    sim_start(&sim, NULL);
    sim_faults(&sim, "{\"capacity\":64,\"latencyMs\":20}");
    struct burst b = {.name = "capacity64", .n = env_count("DW_FLOW_REQUESTS", 5000)};
    run_burst(&b, &sim);
}

static void burst_against_slow_listener(void **state)
{
    (void)state;
    static const char *const args[] = {"--backlog", "16", "--accept-rate", "200", NULL};
    struct flow_sim sim;
    sim_start(&sim, args);
    struct burst b = {.name = "slowaccept", .n = env_count("DW_FLOW_REQUESTS", 5000)};
    run_burst(&b, &sim);
}

static void latency_step_mid_burst(void **state)
{
    (void)state;
    struct flow_sim sim;
    sim_start(&sim, NULL);
    sim_faults(&sim, "{\"capacity\":64,\"latencyMs\":20}");
    struct burst b = {.name = "step",
                      .n = env_count("DW_FLOW_STEP_REQUESTS", 2000),
                      .step_json = "{\"latencyMs\":200}"};
    run_burst(&b, &sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_against_capacity),
        cmocka_unit_test(burst_against_slow_listener),
        cmocka_unit_test(latency_step_mid_burst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
