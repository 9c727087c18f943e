/*
 * The consumer of distribution requests.
 *
 * Assignor: eager ("range" by default, settable). Debian's librdkafka is
 * 2.0.2, whose cooperative-sticky assignor has bugs fixed only later, so we
 * use an eager protocol: on a rebalance every partition is revoked and
 * reassigned at once. On revoke we commit what is done (unless the
 * assignment was lost, when a commit would be refused or, worse, land on a
 * partition someone else now owns) and forget the partitions' pending
 * offsets; their in-flight work still finishes but commits nothing, and the
 * next owner re-drives it (requests are idempotent).
 *
 * Pausing is by our own flag, set on every partition of a new assignment
 * before it is assigned (pause_before_assign). librdkafka 2.0.2 keeps a
 * partition's application pause across a revoke, so a partition paused
 * when it was revoked and assigned again after intake resumed stayed
 * paused for good: assigned, lag growing, nothing consumed, no error. And
 * a pause sent right after rd_kafka_assign races the fetch start that the
 * assignment sends on librdkafka's main thread: an op with an older
 * version barrier is dropped as outdated, and the dropped fetch start
 * leaves the partition never fetched (librdkafka issues #2190, #5591).
 * pause and resume are synchronous, so both are done before the partition
 * is assigned and its fetch started.
 *
 * Consumer lag: librdkafka's statistics (every statistics.interval.ms,
 * 5 s unless set) give each partition's consumer_lag (high watermark less
 * the committed offset); on_stats copies it into the dw_consumer_lag gauge
 * of the partitions assigned to us and drops every other partition's.
 *
 * Backlog (what autoscaling follows): records nobody has taken yet, per
 * assigned partition. The poll thread records one past each record it
 * hands out; the backlog prober (src/backlog.c, its own thread) asks the
 * brokers for the log end offsets every BACKLOG_EVERY_MS, since the
 * statistics' high watermark stops moving while a partition is paused.
 *
 * Done offsets come from the producer: the consumer takes what it
 * acknowledged (dw_consumer_take_acks, and itself while a revoke waits), so
 * offsets flow one way and nobody calls back into the consumer.
 *
 * Threads: everything runs on the poll thread, including the rebalance,
 * commit and statistics callbacks (librdkafka calls them from
 * rd_kafka_consumer_poll), except the backlog prober's broker queries and
 * the heartbeat read by /healthz (an atomic).
 */
#include "dw/consumer.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "dw/backlog.h"
#include "dw/kafka_conf.h"
#include "dw/tracker.h"

/* How often the backlog prober asks for the log end offsets: a few times
 * per KEDA polling interval (15 s) and Prometheus scrape (30 s). */
#define BACKLOG_EVERY_MS 5000

struct dw_consumer {
    rd_kafka_t *rk;
    struct dw_log *log;
    struct dw_metrics *metrics;
    struct dw_tracker *tracker;
    struct dw_backlog *backlog; /* NULL once stopped */
    char *topic;
    bool paused;
    int assigned;
    bool closing;                 /* drained already: revoke waits no more */
    int revoke_wait_ms;           /* -1: none */
    struct dw_producer *producer; /* whose acknowledged offsets we take */
    _Atomic int64_t heartbeat_ms; /* the poll thread's last round */
};

static void beat(struct dw_consumer *c)
{
    atomic_store_explicit(&c->heartbeat_ms, dw_now_ms(), memory_order_relaxed);
}

/* Returns false when a commit was sent and refused (a synchronous one's
 * refusal is known here; an asynchronous one's comes to on_commit). */
static bool commit_partitions(struct dw_consumer *c, const rd_kafka_topic_partition_list_t *parts,
                              bool only_new, bool sync)
{
    bool ok = true;
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(8);
    int32_t ids[1024];
    size_t n;
    if (parts) {
        n = 0;
        for (int i = 0; i < parts->cnt && n < DW_ARRAY_LEN(ids); i++)
            ids[n++] = parts->elems[i].partition;
    } else {
        n = dw_tracker_partitions(c->tracker, ids, DW_ARRAY_LEN(ids));
        if (n > DW_ARRAY_LEN(ids))
            n = DW_ARRAY_LEN(ids);
    }
    for (size_t i = 0; i < n; i++) {
        int64_t off = only_new ? dw_tracker_committable(c->tracker, ids[i])
                               : dw_tracker_position(c->tracker, ids[i]);
        if (off >= 0)
            rd_kafka_topic_partition_list_add(offsets, c->topic, ids[i])->offset = off;
    }
    if (offsets->cnt > 0) {
        rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, offsets, sync ? 0 : 1);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
            dw_log_warn(c->log, "commit failed: %s", rd_kafka_err2str(err));
            ok = false;
        } else if (sync) {
            dw_metrics_count(c->metrics, DW_COUNTER_OFFSETS_COMMITTED, (uint64_t)offsets->cnt);
        }
    }
    rd_kafka_topic_partition_list_destroy(offsets);
    return ok;
}

/*
 * librdkafka 2.0.2 restarts the fetch of a resumed partition only on its
 * one-second timer, so after every resume the worker sat idle for up to a
 * second (measured: 600-720 ms each time under load). Seeking a resumed
 * partition to where its fetch would continue anyway starts it at once.
 * The offset comes from our tracker (one past the last message handed out in
 * the current assignment), never from rd_kafka_position(), which can be
 * stale from an earlier assignment of the same partition: a stale offset
 * could skip uncommitted messages. A partition with nothing handed out yet
 * is left to fetch as usual.
 */
static void restart_fetch(struct dw_consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++) {
        int64_t next = dw_tracker_next_offset(c->tracker, parts->elems[i].partition);
        if (next >= 0)
            rd_kafka_topic_partition_list_add(seek, parts->elems[i].topic,
                                              parts->elems[i].partition)
                ->offset = next;
    }
    if (seek->cnt > 0) {
        rd_kafka_error_t *error = rd_kafka_seek_partitions(c->rk, seek, 0 /* async */);
        if (error) {
            dw_log_debug(c->log, "seek after resume: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
    }
    rd_kafka_topic_partition_list_destroy(seek);
}

/* Applies our pause flag to the current assignment. `resumed`: the flag just
 * went from paused to running. */
static void apply_pause(struct dw_consumer *c, bool resumed)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || !parts)
        return;
    if (parts->cnt > 0) {
        if (c->paused) {
            rd_kafka_pause_partitions(c->rk, parts);
        } else if (resumed) {
            rd_kafka_resume_partitions(c->rk, parts);
            restart_fetch(c, parts);
        }
    }
    dw_metrics_gauge_set(c->metrics, DW_GAUGE_PARTITIONS_PAUSED, c->paused ? parts->cnt : 0);
    rd_kafka_topic_partition_list_destroy(parts);
}

/* Sets our pause state on a new assignment's partitions before they are
 * assigned (see the top of this file): paused, or resumed from a pause
 * that outlived their last revoke. Returns the partitions librdkafka did
 * not know yet, to pause once assigned (NULL: none, or not paused). */
static rd_kafka_topic_partition_list_t *
pause_before_assign(struct dw_consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
    if (parts->cnt == 0)
        return NULL;
    /* A copy: the call writes an error into each element. */
    rd_kafka_topic_partition_list_t *copy = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_topic_partition_list_t *unknown = NULL;
    if (c->paused)
        rd_kafka_pause_partitions(c->rk, copy);
    else
        rd_kafka_resume_partitions(c->rk, copy);
    for (int i = 0; i < copy->cnt && c->paused; i++) {
        if (copy->elems[i].err) {
            if (!unknown)
                unknown = rd_kafka_topic_partition_list_new(copy->cnt);
            rd_kafka_topic_partition_list_add(unknown, copy->elems[i].topic,
                                              copy->elems[i].partition);
        }
    }
    rd_kafka_topic_partition_list_destroy(copy);
    return unknown;
}

static size_t pending_in(const struct dw_consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
    size_t n = 0;
    for (int i = 0; i < parts->cnt; i++)
        n += dw_tracker_pending(c->tracker, parts->elems[i].partition);
    return n;
}

/* Gives the revoked partitions' in-flight requests a bounded time to finish,
 * so the next owner does not redo them. We are inside the rebalance
 * callback: no new message is taken meanwhile, so we serve the producer's
 * delivery reports ourselves. */
static void finish_revoked(struct dw_consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
    if (c->revoke_wait_ms < 0 || c->closing)
        return;
    size_t pending = pending_in(c, parts);
    if (pending == 0)
        return;
    int64_t start = dw_now_ms();
    while (pending > 0 && dw_now_ms() - start < c->revoke_wait_ms) {
        beat(c);
        dw_producer_poll(c->producer, 10);
        dw_consumer_take_acks(c);
        pending = pending_in(c, parts);
    }
    dw_log_write(c->log, pending ? DW_LOG_WARN : DW_LOG_INFO, DW_LOG_NOCTX,
                 "revoke: waited %lld ms for in-flight requests; %zu left for the next owner",
                 (long long)(dw_now_ms() - start), pending);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct dw_consumer *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_topic_partition_list_t *unknown = pause_before_assign(c, parts);
        rd_kafka_assign(rk, parts);
        if (unknown) {
            /* Not known before the assignment made them: the race above
             * is the lesser harm than fetching while paused for good. */
            rd_kafka_pause_partitions(rk, unknown);
            rd_kafka_topic_partition_list_destroy(unknown);
        }
        c->assigned = parts->cnt;
        for (int i = 0; i < parts->cnt; i++) {
            dw_tracker_forget(c->tracker, parts->elems[i].partition);
            dw_metrics_backlog_assign(c->metrics, parts->elems[i].partition);
        }
        dw_log_info(c->log, "assigned %d partition(s) of %s%s", parts->cnt, c->topic,
                    c->paused ? " (paused: intake is full)" : "");
        dw_metrics_gauge_set(c->metrics, DW_GAUGE_PARTITIONS_PAUSED, c->paused ? parts->cnt : 0);
    } else {
        bool lost = rd_kafka_assignment_lost(rk);
        dw_consumer_take_acks(c);
        if (!lost)
            finish_revoked(c, parts);
        /* A refused commit loses nothing: the next owner reads the done
         * work again and finds it stored. */
        bool committed = !lost && commit_partitions(c, parts, false, true);
        for (int i = 0; i < parts->cnt; i++)
            dw_tracker_forget(c->tracker, parts->elems[i].partition);
        dw_log_info(c->log, "%s %d partition(s); %s", lost ? "lost" : "revoked", parts->cnt,
                    lost        ? "nothing committed"
                    : committed ? "done work committed"
                                : "done work not committed: the next owner reads it again and "
                                  "finds it stored");
        rd_kafka_assign(rk, NULL);
        c->assigned = 0;
        dw_metrics_gauge_set(c->metrics, DW_GAUGE_PARTITIONS_PAUSED, 0);
        dw_metrics_partition_lag_clear(c->metrics);
        dw_metrics_backlog_clear(c->metrics);
    }
    dw_metrics_gauge_set(c->metrics, DW_GAUGE_PARTITIONS_ASSIGNED, c->assigned);
}

/*
 * The result of an asynchronous commit (served by rd_kafka_consumer_poll,
 * on the poll thread that owns the tracker). One that did not land marks
 * its partitions to be committed again at the next interval: the tracker
 * hands an offset out once, so without this a commit lost in a broker
 * outage stayed lost until more work finished on that partition, and an
 * idle partition kept its done work uncommitted (redelivered to the next
 * owner). Found by the fault suite's Kafka outage. A commit refused by a
 * rebalance is not sent again (see below).
 */
static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    struct dw_consumer *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET || !offsets)
        return;
    /* Refused because the group is rebalancing or moved on: the revoke
     * commits what is done synchronously, and the next generation's owner
     * starts from there; sending it again would only repeat the refusal
     * every interval while the rebalance lasts. */
    if (err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
        err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION || err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID)
        return;
    int failed = 0;
    for (int i = 0; i < offsets->cnt; i++) {
        if (err || offsets->elems[i].err) {
            dw_tracker_commit_failed(c->tracker, offsets->elems[i].partition);
            failed++;
        }
    }
    if (failed)
        dw_log_warn(c->log, "commit of %d partition(s) failed: %s; committing again", failed,
                    rd_kafka_err2str(err ? err : offsets->elems[0].err));
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    struct dw_consumer *c = opaque;
    dw_metrics_count(c->metrics, DW_COUNTER_KAFKA_ERRORS, 1);
    dw_log_warn(c->log, "consumer: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* librdkafka statistics (JSON, see its STATISTICS.md): consumer lag of each
 * partition of our topic that is assigned to us. Returns 0: librdkafka frees
 * the JSON. */
static int on_stats(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    struct dw_consumer *c = opaque;
    bool mine[DW_METRICS_MAX_PARTITIONS] = {false};
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(rk, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR && parts) {
        for (int i = 0; i < parts->cnt; i++) {
            int32_t p = parts->elems[i].partition;
            if (p >= 0 && p < DW_METRICS_MAX_PARTITIONS &&
                strcmp(parts->elems[i].topic, c->topic) == 0)
                mine[p] = true;
        }
        rd_kafka_topic_partition_list_destroy(parts);
    }

    struct json_tokener *tok = json_tokener_new();
    struct json_object *root = json_tokener_parse_ex(tok, json, (int)json_len);
    json_tokener_free(tok);
    struct json_object *topics, *topic, *stats = NULL;
    if (root && json_object_object_get_ex(root, "topics", &topics) &&
        json_object_object_get_ex(topics, c->topic, &topic))
        json_object_object_get_ex(topic, "partitions", &stats);

    for (int32_t p = 0; p < DW_METRICS_MAX_PARTITIONS; p++) {
        int64_t lag = -1;
        char key[16];
        struct json_object *part, *value;
        snprintf(key, sizeof(key), "%d", (int)p);
        if (mine[p] && stats && json_object_object_get_ex(stats, key, &part) &&
            json_object_object_get_ex(part, "consumer_lag", &value))
            lag = json_object_get_int64(value);
        dw_metrics_partition_lag(c->metrics, p, lag);
    }
    json_object_put(root);
    return 0;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct dw_consumer *c = rd_kafka_opaque(rk);
    if (c)
        dw_kafka_log(c->log, "consumer", level, fac, buf);
}

/* The consumer's librdkafka configuration: our defaults, the user's
 * properties, then what correctness needs. NULL with errbuf on error. */
static rd_kafka_conf_t *consumer_conf(const struct dw_config *cfg, char *errbuf, size_t errlen)
{
    static const struct dw_kafka_setting base[] = {
        /* Consumer lag per partition for /metrics (on_stats); 0 turns it off. */
        {"statistics.interval.ms", "5000"},
        {"auto.offset.reset", "earliest"},
        {"partition.assignment.strategy", "range"},
        {"socket.keepalive.enable", "true"},
    };
    struct dw_kafka_setting forced[] = {
        {"group.id", cfg->kafka_group},
        /* We commit ourselves, only what is safely stored. */
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "false"},
    };
    return dw_kafka_conf_new(cfg, base, DW_ARRAY_LEN(base), cfg->consumer_props,
                             cfg->consumer_prop_count, forced, DW_ARRAY_LEN(forced), errbuf,
                             errlen);
}

enum dw_err dw_consumer_check_config(const struct dw_config *cfg, char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = consumer_conf(cfg, errbuf, errlen);
    if (!conf)
        return DW_ERR_CONFIG;
    return dw_kafka_conf_check(conf, RD_KAFKA_CONSUMER, "consumer", errbuf, errlen);
}

enum dw_err dw_consumer_create(const struct dw_config *cfg, struct dw_log *log,
                               struct dw_metrics *metrics, struct dw_producer *producer,
                               struct dw_consumer **out, char *errbuf, size_t errlen)
{
    enum dw_err err = DW_OK;
    struct dw_consumer *c = dw_xcalloc(1, sizeof(*c));
    c->log = log;
    c->metrics = metrics;
    c->producer = producer;
    c->revoke_wait_ms = -1; /* no wait until dw_consumer_set_revoke_wait */
    beat(c);
    c->tracker = dw_tracker_create();
    c->topic = dw_xstrdup(cfg->request_topic);

    rd_kafka_conf_t *conf = consumer_conf(cfg, errbuf, errlen);
    if (!conf) {
        err = DW_ERR_CONFIG;
        goto out;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    char why[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!c->rk) {
        rd_kafka_conf_destroy(conf);
        dw_snprintf(errbuf, errlen, "kafka consumer: %s", why);
        err = DW_ERR_KAFKA;
        goto out;
    }
    rd_kafka_poll_set_consumer(c->rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, c->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr) {
        dw_snprintf(errbuf, errlen, "kafka subscribe to %s: %s", c->topic, rd_kafka_err2str(kerr));
        err = DW_ERR_KAFKA;
        goto out;
    }
    err = dw_backlog_start(c->rk, c->topic, metrics, log, BACKLOG_EVERY_MS, &c->backlog, errbuf,
                           errlen);
    if (err)
        goto out;
    *out = c;
out:
    if (err)
        dw_consumer_destroy(c);
    return err;
}

rd_kafka_message_t *dw_consumer_poll(struct dw_consumer *c, int timeout_ms)
{
    beat(c);
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    if (!m)
        return NULL;
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            dw_metrics_count(c->metrics, DW_COUNTER_KAFKA_ERRORS, 1);
            dw_log_warn(c->log, "consume: %s", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
        return NULL;
    }
    /* Tracked before anything else happens to it, so no later offset can be
     * committed past it even if it is never finished. */
    dw_tracker_add(c->tracker, m->partition, m->offset);
    dw_metrics_backlog_handed_out(c->metrics, m->partition, m->offset + 1);
    dw_metrics_count(c->metrics, DW_COUNTER_REQUESTS_CONSUMED, 1);
    return m;
}

void dw_consumer_take_acks(struct dw_consumer *c)
{
    struct dw_ack acks[256];
    size_t n;
    while ((n = dw_producer_take_acks(c->producer, acks, DW_ARRAY_LEN(acks))) > 0)
        for (size_t i = 0; i < n; i++)
            dw_tracker_done(c->tracker, acks[i].partition, acks[i].offset);
}

int64_t dw_consumer_heartbeat_ms(const struct dw_consumer *c)
{
    return atomic_load_explicit(&c->heartbeat_ms, memory_order_relaxed);
}

void dw_consumer_commit(struct dw_consumer *c, bool sync)
{
    commit_partitions(c, NULL, !sync, sync);
}

void dw_consumer_set_paused(struct dw_consumer *c, bool paused)
{
    if (c->paused == paused)
        return;
    c->paused = paused;
    apply_pause(c, !paused);
    dw_log_debug(c->log, "intake %s: %d assigned partition(s) %s", paused ? "full" : "has room",
                 c->assigned, paused ? "paused" : "resumed");
}

bool dw_consumer_paused(const struct dw_consumer *c)
{
    return c->paused;
}

int dw_consumer_assigned(const struct dw_consumer *c)
{
    return c->assigned;
}

size_t dw_consumer_pending(const struct dw_consumer *c)
{
    int32_t ids[1024];
    size_t n = dw_tracker_partitions(c->tracker, ids, DW_ARRAY_LEN(ids));
    size_t pending = 0;
    for (size_t i = 0; i < n && i < DW_ARRAY_LEN(ids); i++)
        pending += dw_tracker_pending(c->tracker, ids[i]);
    return pending;
}

void dw_consumer_set_revoke_wait(struct dw_consumer *c, int max_ms)
{
    c->revoke_wait_ms = max_ms;
}

void dw_consumer_close(struct dw_consumer *c)
{
    if (!c || !c->rk)
        return;
    c->closing = true;
    dw_backlog_stop(c->backlog);
    c->backlog = NULL;
    dw_consumer_take_acks(c);
    dw_consumer_commit(c, true);
    rd_kafka_consumer_close(c->rk);
}

void dw_consumer_destroy(struct dw_consumer *c)
{
    if (!c)
        return;
    dw_backlog_stop(c->backlog); /* before the handle it queries */
    if (c->rk)
        rd_kafka_destroy(c->rk);
    dw_tracker_destroy(c->tracker);
    free(c->topic);
    free(c);
}
