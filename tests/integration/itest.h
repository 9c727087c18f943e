/*
 * Helpers shared by the integration tests: where the real parts run, and
 * small clients for them. The ctest fixture (parts.sh) starts PostgreSQL,
 * the dev broker and the channel simulator and writes their addresses to
 * $DW_ITEST_DIR/parts.env; an environment variable DW_TEST_<NAME> wins. A
 * part that is not there fails the test loudly: it is never skipped.
 *
 * Every helper aborts the test (exit 1 with a message) on an unexpected
 * failure, so tests read as straight-line stories.
 */
#ifndef DW_ITEST_H
#define DW_ITEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>
#include <librdkafka/rdkafka.h>

/* The value of NAME (PG_DSN, BROKERS, SIM_URL, WORKER_BIN, SOURCE_DIR...);
 * aborts the test when it is unknown. */
const char *itest_env(const char *name);

/* A string unique to this test run, for eventIds ("r1732412345-1234"). */
const char *itest_run_id(void);

/* ---- the worker process ---- */

struct itest_worker {
    pid_t pid;
    int http_port;
    char log_path[512];
};

/* Starts build/distribution-worker with tests/integration/worker-test.conf
 * and the parts' addresses in DIST_*; extra_env (NULL-ended "K=V", may be
 * NULL) is added. Waits until /readyz answers 200 (or aborts after 60 s,
 * printing the log's tail). */
void itest_worker_start(struct itest_worker *w, const char *name, const char *const *extra_env);

/* Sends sig and waits (up to timeout_ms) for the exit; returns the exit
 * status (128+signal when killed), or -1 on timeout (then SIGKILLs). */
int itest_worker_stop(struct itest_worker *w, int sig, int timeout_ms);

/* Prints the last lines of the worker's log to stderr. */
void itest_worker_log_tail(const struct itest_worker *w, int lines);

/* ---- HTTP ---- */

/* GET or POST (body non-NULL) url; returns the status, *body (malloc'd,
 * caller frees; may be NULL when not wanted). 0 when no connection. */
long itest_http(const char *method, const char *url, const char *body, char **out);

/* GET url and parse JSON; NULL on a non-200 or bad JSON. Caller puts. */
struct json_object *itest_http_json(const char *url, long *status);

/* POST a JSON body to the simulator's control path ("/_sim/reset"). */
void itest_sim(const char *path, const char *json);

/* The simulator's /_sim/stats. Caller puts. */
struct json_object *itest_sim_stats(void);

/* An integer at a dotted path in a JSON object ("channels.KAKAO.calls"). */
int64_t itest_json_int(struct json_object *obj, const char *path);

/* ---- Kafka ---- */

rd_kafka_t *itest_producer(void);
/* Produces value (len bytes; NULL: a null value) with key (may be NULL)
 * and waits for the acknowledgement. */
void itest_produce(rd_kafka_t *p, const char *topic, const char *key, const void *value,
                   size_t len);
void itest_flush(rd_kafka_t *p);

/* A reader of every partition of topic from the beginning (no group, so no
 * join delay). */
rd_kafka_t *itest_reader(const char *topic);
/* Next message within timeout_ms or NULL; caller destroys. */
rd_kafka_message_t *itest_read(rd_kafka_t *r, int timeout_ms);

/* The value of header name of m as a new string, or NULL. Caller frees. */
char *itest_header(const rd_kafka_message_t *m, const char *name);

/* Sum over partitions of (high watermark - committed offset) of group on
 * topic: 0 when everything consumed was committed. */
int64_t itest_uncommitted(const char *group, const char *topic);

/* A distribution request JSON with all six channels. Caller frees. */
char *itest_request_json(const char *event_id);

#endif

/* The integer in the first column of the first row of sql (one text
 * parameter $1) run against the fixture's PostgreSQL; aborts on an error. */
int64_t itest_pg_scalar(const char *sql, const char *param);

/* Runs tests/integration/parts.sh ACTION (pg-stop, pg-start) on this run's
 * parts; aborts on failure. */
void itest_parts(const char *action);

/* Sends sig to the dev broker (SIGUSR1: brokers down, SIGUSR2: up). */
void itest_broker_signal(int sig);

/* A number from the worker's /metrics: the sum of every series of name
 * (with any labels). -1 when the worker does not answer. */
double itest_metric(const struct itest_worker *w, const char *name);

/* Peak resident memory (VmHWM) of pid in KiB, 0 when unknown. */
long itest_peak_rss_kib(pid_t pid);

/* ---- completions ---- */

/* Completions read from a topic (distribution-completed), every one kept
 * per eventId in arrival order, for eventIds starting with prefix. Each
 * record's key is checked to be its eventId (the test aborts otherwise). */
struct itest_completions;

struct itest_completions *itest_completions_new(const char *topic, const char *prefix);
void itest_completions_free(struct itest_completions *c);

/* Reads until each of the n ids has at least `times` completions, or until
 * timeout_ms passes; returns how many of the ids have enough. */
int itest_completions_await(struct itest_completions *c, char *const *ids, int n, int times,
                            int timeout_ms);

/* The nth completion of id (borrowed from c), or NULL. */
struct json_object *itest_completion(struct itest_completions *c, const char *id, int nth);
