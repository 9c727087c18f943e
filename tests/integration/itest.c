/*
 * Integration-test helpers: the parts' addresses, the worker process,
 * HTTP, the simulator's controls and small Kafka clients. Test code only:
 * failures abort the test with a message rather than return.
 */
#include "itest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libpq-fe.h>

static char values[32][1024];
static int used;

/* Workers started and not yet stopped through itest_worker_stop. A case
 * that fails mid-way returns before its stop; its worker must not outlive
 * this test binary, or it stays in the consumer group and takes
 * partitions from the next binary's workers. */
static pid_t live_workers[64];

static void kill_live_workers(void)
{
    for (size_t i = 0; i < sizeof(live_workers) / sizeof(live_workers[0]); i++) {
        pid_t pid = live_workers[i];
        /* Still our unreaped child: a pid reaped elsewhere is not touched. */
        if (pid > 0 && waitpid(pid, NULL, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
}

static void live_add(pid_t pid)
{
    static bool registered;
    if (!registered) {
        atexit(kill_live_workers);
        registered = true;
    }
    for (size_t i = 0; i < sizeof(live_workers) / sizeof(live_workers[0]); i++) {
        if (live_workers[i] <= 0) {
            live_workers[i] = pid;
            return;
        }
    }
}

static void live_remove(pid_t pid)
{
    for (size_t i = 0; i < sizeof(live_workers) / sizeof(live_workers[0]); i++)
        if (live_workers[i] == pid)
            live_workers[i] = 0;
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "integration test: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

const char *itest_env(const char *name)
{
    char var[128];
    snprintf(var, sizeof(var), "DW_TEST_%s", name);
    const char *v = getenv(var);
    if (v && *v)
        return v;
    for (int i = 0; i < used; i++) {
        size_t n = strlen(name);
        if (strncmp(values[i], name, n) == 0 && values[i][n] == '=')
            return values[i] + n + 1;
    }
    const char *dir = getenv("DW_ITEST_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/parts.env", dir ? dir : ".");
    FILE *f = fopen(path, "r");
    if (f) {
        char line[1024];
        size_t nlen = strlen(name);
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, name, nlen) == 0 && line[nlen] == '=' && used < 32) {
                line[strcspn(line, "\n")] = '\0';
                snprintf(values[used], sizeof(values[used]), "%s", line);
                fclose(f);
                return values[used++] + nlen + 1;
            }
        }
        fclose(f);
    }
    fail("%s is not known: set %s or start the parts (%s)", name, var, path);
    return NULL;
}

const char *itest_run_id(void)
{
    static char id[64];
    if (!id[0])
        snprintf(id, sizeof(id), "r%ld-%d", (long)time(NULL), (int)getpid());
    return id;
}

/* ---- HTTP ---- */

struct sink {
    char *data;
    size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *userp)
{
    struct sink *s = userp;
    size_t add = size * n;
    char *grown = realloc(s->data, s->len + add + 1);
    if (!grown)
        return 0;
    s->data = grown;
    memcpy(s->data + s->len, p, add);
    s->len += add;
    s->data[s->len] = '\0';
    return add;
}

long itest_http(const char *method, const char *url, const char *body, char **out)
{
    CURL *c = curl_easy_init();
    struct sink s = {0};
    long status = 0;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (out)
        *out = s.data;
    else
        free(s.data);
    return status;
}

struct json_object *itest_http_json(const char *url, long *status)
{
    char *body = NULL;
    long st = itest_http("GET", url, NULL, &body);
    if (status)
        *status = st;
    struct json_object *j = st == 200 && body ? json_tokener_parse(body) : NULL;
    free(body);
    return j;
}

void itest_sim(const char *path, const char *json)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", itest_env("SIM_URL"), path);
    long st = itest_http("POST", url, json ? json : "{}", NULL);
    if (st != 200)
        fail("simulator %s answered %ld", path, st);
}

struct json_object *itest_sim_stats(void)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/_sim/stats", itest_env("SIM_URL"));
    struct json_object *j = itest_http_json(url, NULL);
    if (!j)
        fail("simulator stats unavailable");
    return j;
}

int64_t itest_json_int(struct json_object *obj, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    struct json_object *cur = obj;
    char *save = NULL;
    for (char *part = strtok_r(buf, ".", &save); part; part = strtok_r(NULL, ".", &save)) {
        if (!json_object_object_get_ex(cur, part, &cur))
            fail("no %s in %s", path, json_object_to_json_string(obj));
    }
    return json_object_get_int64(cur);
}

/* ---- the worker ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        fail("no free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

void itest_worker_log_tail(const struct itest_worker *w, int lines)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "tail -n %d '%s' >&2", lines, w->log_path);
    if (system(cmd) != 0)
        fprintf(stderr, "(no log at %s)\n", w->log_path);
}

/* True when the worker's log says its listener found its port taken: the
 * free port this process picked went to another socket (another test's
 * connection) before the worker bound it. */
static bool lost_port_race(const struct itest_worker *w)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "tail -n 20 '%s' | grep -q 'Address already in use'", w->log_path);
    return system(cmd) == 0;
}

static bool worker_try_start(struct itest_worker *w, const char *name, const char *const *extra_env,
                             bool last_try);

void itest_worker_start(struct itest_worker *w, const char *name, const char *const *extra_env)
{
    for (int attempt = 1; attempt <= 3; attempt++) {
        if (worker_try_start(w, name, extra_env, attempt == 3))
            return;
        fprintf(stderr, "worker %s: its port was taken meanwhile; starting it again\n", name);
    }
}

/* Starts the worker and waits until it is ready. False (and no worker)
 * when it lost the race for its port and this is not the last try. */
static bool worker_try_start(struct itest_worker *w, const char *name, const char *const *extra_env,
                             bool last_try)
{
    const char *dir = getenv("DW_ITEST_DIR");
    memset(w, 0, sizeof(*w));
    w->http_port = free_port();
    snprintf(w->log_path, sizeof(w->log_path), "%s/worker-%s.log", dir ? dir : "/tmp", name);
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/tests/integration/worker-test.conf", itest_env("SOURCE_DIR"));
    const char *bin = itest_env("WORKER_BIN");

    char env[24][600];
    int n = 0;
    snprintf(env[n++], sizeof(env[0]), "DIST_KAFKA_BROKERS=%s", itest_env("BROKERS"));
    snprintf(env[n++], sizeof(env[0]), "DIST_PG_DSN=%s", itest_env("PG_DSN"));
    snprintf(env[n++], sizeof(env[0]), "DIST_HTTP_PORT=%d", w->http_port);
    static const char *const channels[] = {"URIDONGNETV", "GINITV", "RINGOBIZ",
                                           "INSTAGRAM",   "NAVER",  "KAKAO"};
    for (int i = 0; i < 6; i++)
        snprintf(env[n++], sizeof(env[0]), "DIST_CHANNEL_%s_URL=%s", channels[i],
                 itest_env("SIM_URL"));

    pid_t pid = fork();
    if (pid < 0)
        fail("fork: %s", strerror(errno));
    if (pid == 0) {
        for (int i = 0; i < n; i++)
            putenv(env[i]);
        for (int i = 0; extra_env && extra_env[i]; i++)
            putenv((char *)extra_env[i]);
        int fd = open(w->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execl(bin, bin, "-c", conf, (char *)NULL);
        _exit(127);
    }
    w->pid = pid;
    live_add(pid);

    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", w->http_port);
    for (int i = 0; i < 600; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            live_remove(pid);
            if (!last_try && lost_port_race(w))
                return false;
            itest_worker_log_tail(w, 30);
            fail("worker %s exited during start-up (status %d)", name, st);
        }
        if (itest_http("GET", url, NULL, NULL) == 200)
            return true;
        usleep(100 * 1000);
    }
    itest_worker_log_tail(w, 30);
    fail("worker %s not ready after 60 s", name);
    return false;
}

int itest_worker_stop(struct itest_worker *w, int sig, int timeout_ms)
{
    if (w->pid <= 0)
        return -1;
    live_remove(w->pid);
    kill(w->pid, sig);
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        int st;
        if (waitpid(w->pid, &st, WNOHANG) == w->pid) {
            w->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(20 * 1000);
    }
    kill(w->pid, SIGKILL);
    waitpid(w->pid, NULL, 0);
    w->pid = 0;
    return -1;
}

/* ---- Kafka ---- */

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        fail("test producer delivery failed: %s", rd_kafka_err2str(m->err));
}

rd_kafka_t *itest_producer(void)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", itest_env("BROKERS"), err, sizeof(err));
    rd_kafka_conf_set(conf, "linger.ms", "1", err, sizeof(err));
    rd_kafka_conf_set(conf, "message.max.bytes", "4000000", err, sizeof(err));
    rd_kafka_conf_set_dr_msg_cb(conf, on_dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk)
        fail("producer: %s", err);
    return rk;
}

void itest_produce(rd_kafka_t *p, const char *topic, const char *key, const void *value, size_t len)
{
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY | RD_KAFKA_MSG_F_BLOCK),
        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_VALUE((void *)value, len),
        RD_KAFKA_V_END);
    if (err)
        fail("produce: %s", rd_kafka_err2str(err));
    rd_kafka_poll(p, 0);
}

void itest_flush(rd_kafka_t *p)
{
    if (rd_kafka_flush(p, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail("flush timed out");
}

rd_kafka_t *itest_reader(const char *topic)
{
    char err[512];
    char group[128];
    static int n;
    snprintf(group, sizeof(group), "itest-reader-%s-%d", itest_run_id(), n++);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", itest_env("BROKERS"), err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk)
        fail("reader: %s", err);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1 ||
        md->topics[0].partition_cnt == 0)
        fail("no metadata for %s", topic);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

rd_kafka_message_t *itest_read(rd_kafka_t *r, int timeout_ms)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r, timeout_ms);
    if (m && m->err) {
        rd_kafka_message_destroy(m);
        return NULL;
    }
    return m;
}

char *itest_header(const rd_kafka_message_t *m, const char *name)
{
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t len;
    if (rd_kafka_message_headers(m, &h) || rd_kafka_header_get_last(h, name, &v, &len))
        return NULL;
    char *s = malloc(len + 1);
    memcpy(s, v, len);
    s[len] = '\0';
    return s;
}

int64_t itest_uncommitted(const char *group, const char *topic)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", itest_env("BROKERS"), err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk)
        fail("committed reader: %s", err);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1)
        fail("no metadata for %s", topic);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    if (rd_kafka_committed(rk, parts, 10000))
        fail("committed offsets unavailable");
    int64_t behind = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(rk, topic, parts->elems[i].partition, &lo, &hi, 10000))
            fail("watermarks unavailable");
        int64_t committed = parts->elems[i].offset < 0 ? lo : parts->elems[i].offset;
        behind += hi - committed;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);
    return behind;
}

char *itest_request_json(const char *event_id)
{
    char *out = NULL;
    int n = asprintf(
        &out,
        "{\"eventId\":\"%s\",\"title\":\"Grand opening: 20%% off all coffee\","
        "\"content\":\"Visit us this weekend\",\"imageUrl\":\"https://cdn.example.com/e/1.png\","
        "\"channels\":[\"URIDONGNETV\",\"GINITV\",\"RINGOBIZ\",\"INSTAGRAM\",\"NAVER\",\"KAKAO\"],"
        "\"channelSettings\":{\"URIDONGNETV\":{\"radius\":\"1km\"},\"GINITV\":{\"region\":"
        "\"Seoul/Gangnam\"},\"RINGOBIZ\":{\"phoneNumber\":\"02-1234-5678\"}},"
        "\"requestedAt\":\"2025-10-29T15:13:01+09:00\"}",
        event_id);
    if (n < 0)
        fail("asprintf");
    return out;
}

void itest_parts(const char *action)
{
    char cmd[2048];
    const char *dir = getenv("DW_ITEST_DIR");
    const char *build = getenv("DW_BUILD_DIR");
    snprintf(cmd, sizeof(cmd), "bash '%s/tests/integration/parts.sh' %s '%s' '%s' >&2",
             itest_env("SOURCE_DIR"), action, dir ? dir : ".", build ? build : ".");
    if (system(cmd) != 0)
        fail("parts.sh %s failed", action);
}

void itest_broker_signal(int sig)
{
    pid_t pid = (pid_t)strtol(itest_env("BROKER_PID"), NULL, 10);
    if (pid <= 0 || kill(pid, sig) != 0)
        fail("cannot signal the dev broker (pid %d)", (int)pid);
}

double itest_metric(const struct itest_worker *w, const char *name)
{
    char url[128], *body = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", w->http_port);
    if (itest_http("GET", url, NULL, &body) != 200) {
        free(body);
        return -1;
    }
    double sum = 0;
    size_t nlen = strlen(name);
    for (char *line = body; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, name, nlen) == 0 && (line[nlen] == ' ' || line[nlen] == '{')) {
            char *sp = strrchr(line, ' ');
            if (sp)
                sum += strtod(sp + 1, NULL);
        }
        line = next;
    }
    free(body);
    return sum;
}

long itest_peak_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

int64_t itest_pg_scalar(const char *sql, const char *param)
{
    PGconn *pg = PQconnectdb(itest_env("PG_DSN"));
    if (PQstatus(pg) != CONNECTION_OK)
        fail("PostgreSQL: %s", PQerrorMessage(pg));
    const char *params[1] = {param};
    PGresult *r = PQexecParams(pg, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        fail("%s: %s", sql, PQerrorMessage(pg));
    int64_t v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(pg);
    return v;
}

struct itest_completions {
    rd_kafka_t *reader;
    char prefix[128];
    struct json_object *seen; /* eventId -> array of completion documents */
};

struct itest_completions *itest_completions_new(const char *topic, const char *prefix)
{
    struct itest_completions *c = calloc(1, sizeof(*c));
    c->reader = itest_reader(topic);
    snprintf(c->prefix, sizeof(c->prefix), "%s", prefix);
    c->seen = json_object_new_object();
    return c;
}

void itest_completions_free(struct itest_completions *c)
{
    if (!c)
        return;
    rd_kafka_destroy(c->reader);
    json_object_put(c->seen);
    free(c);
}

static int count_of(struct itest_completions *c, const char *id)
{
    struct json_object *list;
    return json_object_object_get_ex(c->seen, id, &list) ? (int)json_object_array_length(list) : 0;
}

/* Takes one record: checks its key, keeps it when its eventId is ours. */
static void keep(struct itest_completions *c, const rd_kafka_message_t *m)
{
    struct json_object *doc = m->payload ? json_tokener_parse((const char *)m->payload) : NULL, *id;
    if (!doc || !json_object_object_get_ex(doc, "eventId", &id))
        fail("a completion that is not JSON with an eventId");
    const char *event_id = json_object_get_string(id);
    if (m->key_len != strlen(event_id) || memcmp(m->key, event_id, m->key_len) != 0)
        fail("completion of %s is keyed by something else", event_id);
    if (strncmp(event_id, c->prefix, strlen(c->prefix)) == 0) {
        struct json_object *list;
        if (!json_object_object_get_ex(c->seen, event_id, &list)) {
            list = json_object_new_array();
            json_object_object_add(c->seen, event_id, list);
        }
        json_object_array_add(list, json_object_get(doc));
    }
    json_object_put(doc);
}

int itest_completions_await(struct itest_completions *c, char *const *ids, int n, int times,
                            int timeout_ms)
{
    int64_t until = (int64_t)time(NULL) * 1000 + timeout_ms;
    for (;;) {
        int enough = 0;
        for (int i = 0; i < n; i++)
            enough += count_of(c, ids[i]) >= times;
        if (enough == n || (int64_t)time(NULL) * 1000 > until)
            return enough;
        rd_kafka_message_t *m = itest_read(c->reader, 100);
        if (m) {
            keep(c, m);
            rd_kafka_message_destroy(m);
        }
    }
}

struct json_object *itest_completion(struct itest_completions *c, const char *id, int nth)
{
    struct json_object *list;
    if (!json_object_object_get_ex(c->seen, id, &list))
        return NULL;
    return json_object_array_get_idx(list, (size_t)nth);
}
