/*
 * The status store against a real PostgreSQL (itest_env("PG_DSN")). Every
 * test uses its own eventIds (a per-run suffix), so runs and tests do not
 * interfere; tests that need to break the database (migrations from
 * scratch, a database that refuses connections, constraint failures) make
 * a throwaway database of their own and drop it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "dw/request.h"
#include "dw/status.h"
#include "dw/store.h"
#include "itest.h"
#include "store_internal.h" /* the statements' SQL, to plan them */

static char run_suffix[24];

/* Store log lines go to stderr when DW_TEST_STORE_LOG names a level. */
static struct dw_log *test_log;

/* ---- helpers ------------------------------------------------------------ */

static const char *pg_dsn(void)
{
    return itest_env("PG_DSN");
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *connect_admin(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK)
        fail_msg("cannot connect to %s: %s", conninfo, PQerrorMessage(conn));
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
}

/* Runs one statement (values as parameters) and returns its result. */
static PGresult *sql(PGconn *conn, const char *query, int nparams, const char *const *values)
{
    PGresult *res = PQexecParams(conn, query, nparams, NULL, values, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", query, PQresultErrorMessage(res));
    return res;
}

static void sql_do(PGconn *conn, const char *query)
{
    PQclear(sql(conn, query, 0, NULL));
}

static void make_id(char *out, size_t len, const char *tag)
{
    static int counter;
    snprintf(out, len, "%s-%s-%d", tag, run_suffix, ++counter);
}

/* A conninfo string for the server of PG_DSN with another dbname and an
 * application_name, so a test can find its store's backend. */
static void make_conninfo(PGconn *admin, const char *dbname, const char *appname, char *out,
                          size_t len)
{
    PQconninfoOption *opts = PQconninfo(admin);
    size_t used = 0;
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        const char *val = o->val;
        if (strcmp(o->keyword, "dbname") == 0)
            val = dbname;
        else if (strcmp(o->keyword, "application_name") == 0)
            val = appname;
        if (!val || !*val)
            continue;
        used += (size_t)snprintf(out + used, len - used, "%s%s='", used ? " " : "", o->keyword);
        for (const char *p = val; *p && used + 3 < len; p++) {
            if (*p == '\'' || *p == '\\')
                out[used++] = '\\';
            out[used++] = *p;
        }
        used += (size_t)snprintf(out + used, len - used, "'");
        assert_true(used < len);
    }
    PQconninfoFree(opts);
}

/* Creates database `name` (letters, digits, '_' only) on the PG_DSN server. */
static void create_database(PGconn *admin, const char *name)
{
    char query[256];
    snprintf(query, sizeof(query), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    sql_do(admin, query);
    snprintf(query, sizeof(query), "CREATE DATABASE %s", name);
    sql_do(admin, query);
}

static void drop_database(PGconn *admin, const char *name)
{
    char query[256];
    snprintf(query, sizeof(query), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    sql_do(admin, query);
}

static struct dw_store *open_store(const char *dsn)
{
    struct dw_store *store = NULL;
    char errbuf[512] = "";
    enum dw_err err = dw_store_create(dsn, test_log, &store, errbuf, sizeof(errbuf));
    if (err)
        fail_msg("dw_store_create: %s", errbuf);
    err = dw_store_migrate(store, errbuf, sizeof(errbuf));
    if (err)
        fail_msg("dw_store_migrate: %s", errbuf);
    return store;
}

static struct dw_request make_request(const char *event_id, unsigned channels)
{
    struct dw_request req = {0};
    req.event_id = (char *)event_id;
    req.channels = channels;
    req.channel_count = __builtin_popcount(channels);
    return req;
}

#define BIT(ch)      (1u << (ch))
#define ALL_CHANNELS ((1u << DW_CHANNEL_COUNT) - 1)

static void begin_one(struct dw_store *store, const char *event_id, unsigned channels,
                      struct dw_status *out)
{
    struct dw_request req = make_request(event_id, channels);
    struct dw_store_begin item = {.req = &req};
    assert_int_equal(dw_store_begin(store, &item, 1), DW_OK);
    if (out)
        *out = item.status;
}

static enum dw_err save_one(struct dw_store *store, const char *event_id, enum dw_channel_id ch,
                            enum dw_chstatus status, int attempts, enum dw_errcode error,
                            const char *message, const char *external_id, const char *url)
{
    struct dw_store_result r = {event_id, ch, status, attempts, error, message, external_id, url};
    return dw_store_save_results(store, &r, 1);
}

static struct dw_store_finish finish_item(const char *event_id, enum dw_overall overall, int total,
                                          int success, int failure)
{
    return (struct dw_store_finish){.event_id = event_id,
                                    .overall = overall,
                                    .total_channels = total,
                                    .success_count = success,
                                    .failure_count = failure};
}

static struct dw_status finish_one(struct dw_store *store, const char *event_id,
                                   enum dw_overall overall, int total, int success, int failure)
{
    struct dw_store_finish item = finish_item(event_id, overall, total, success, failure);
    assert_int_equal(dw_store_finish(store, &item, 1), DW_OK);
    return item.status;
}

static struct dw_status read_status(struct dw_store *store, const char *event_id)
{
    struct dw_status st;
    assert_int_equal(dw_store_read(store, event_id, &st), DW_OK);
    return st;
}

/* The shared store of the tests that need nothing special. */
static struct dw_store *shared;

static int setup_shared(void **state)
{
    (void)state;
    shared = open_store(pg_dsn());
    return 0;
}

static int teardown_shared(void **state)
{
    (void)state;
    dw_store_destroy(shared);
    shared = NULL;
    return 0;
}

/* ---- migrations --------------------------------------------------------- */

static long count_rows(PGconn *conn, const char *query)
{
    PGresult *res = sql(conn, query, 0, NULL);
    long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

static void test_migrate_twice(void **state)
{
    (void)state;
    PGconn *admin = connect_admin(pg_dsn());
    char errbuf[256];
    assert_int_equal(dw_store_migrate(shared, errbuf, sizeof(errbuf)), DW_OK);
    long versions = count_rows(admin, "SELECT count(*) FROM schema_version");
    assert_true(versions >= 1);
    assert_int_equal(dw_store_migrate(shared, errbuf, sizeof(errbuf)), DW_OK);
    assert_int_equal(count_rows(admin, "SELECT count(*) FROM schema_version"), versions);
    assert_int_equal(count_rows(admin, "SELECT max(version) FROM schema_version"), versions);
    assert_true(dw_store_connected(shared));
    PQfinish(admin);
}

#define MIGRATORS 4

struct migrator {
    const char *conninfo;
    pthread_barrier_t *barrier;
    enum dw_err open_err, migrate_err;
    char errbuf[256];
};

static void *run_migrator(void *arg)
{
    struct migrator *m = arg;
    struct dw_store *store = NULL;
    pthread_barrier_wait(m->barrier);
    m->open_err = dw_store_create(m->conninfo, NULL, &store, m->errbuf, sizeof(m->errbuf));
    if (!m->open_err)
        m->migrate_err = dw_store_migrate(store, m->errbuf, sizeof(m->errbuf));
    dw_store_destroy(store);
    return NULL;
}

static void test_migrate_concurrently_from_scratch(void **state)
{
    (void)state;
    PGconn *admin = connect_admin(pg_dsn());
    char dbname[64], conninfo[2048];
    snprintf(dbname, sizeof(dbname), "dwtest_migrate_%d", (int)getpid());
    create_database(admin, dbname);
    make_conninfo(admin, dbname, "dw-test-migrate", conninfo, sizeof(conninfo));

    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, MIGRATORS);
    struct migrator m[MIGRATORS];
    pthread_t threads[MIGRATORS];
    for (int i = 0; i < MIGRATORS; i++) {
        m[i] = (struct migrator){.conninfo = conninfo, .barrier = &barrier};
        assert_int_equal(pthread_create(&threads[i], NULL, run_migrator, &m[i]), 0);
    }
    for (int i = 0; i < MIGRATORS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < MIGRATORS; i++) {
        if (m[i].open_err || m[i].migrate_err)
            fail_msg("migrator %d: %s", i, m[i].errbuf);
    }

    PGconn *db = connect_admin(conninfo);
    long versions = count_rows(db, "SELECT count(*) FROM schema_version");
    assert_true(versions >= 1);
    assert_int_equal(count_rows(db, "SELECT max(version) FROM schema_version"), versions);
    assert_int_equal(count_rows(db, "SELECT count(*) FROM distribution"), 0);
    assert_int_equal(count_rows(db, "SELECT count(*) FROM channel_status"), 0);
    PQfinish(db);

    /* And once more on the migrated database. */
    struct dw_store *store = open_store(conninfo);
    struct dw_status st;
    char id[96];
    make_id(id, sizeof(id), "fresh");
    begin_one(store, id, BIT(DW_CHANNEL_KAKAO), &st);
    assert_int_equal(st.overall, DW_OVERALL_IN_PROGRESS);
    dw_store_destroy(store);

    drop_database(admin, dbname);
    PQfinish(admin);
}

/* The SQL rule functions agree with status.c on every pair. */
static void test_sql_rules_match_c(void **state)
{
    (void)state;
    PGconn *admin = connect_admin(pg_dsn());
    for (int from = 0; from < DW_CHSTATUS_COUNT; from++) {
        for (int to = 0; to < DW_CHSTATUS_COUNT; to++) {
            const char *v[] = {dw_chstatus_name(from), dw_chstatus_name(to)};
            PGresult *res = sql(admin, "SELECT dw_chstatus_may_replace($1, $2)", 2, v);
            bool db = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
            PQclear(res);
            if (db != dw_chstatus_may_replace(from, to))
                fail_msg("channel %s -> %s: SQL %d, C %d", v[0], v[1], db, !db);
        }
    }
    for (int from = 0; from < DW_OVERALL_COUNT; from++) {
        for (int to = 0; to < DW_OVERALL_COUNT; to++) {
            const char *v[] = {dw_overall_name(from), dw_overall_name(to)};
            PGresult *res =
                sql(admin, "SELECT dw_overall_may_replace($1, $2), dw_overall_is_final($2)", 2, v);
            bool db = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
            bool final = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
            PQclear(res);
            if (db != dw_overall_may_replace(from, to))
                fail_msg("overall %s -> %s: SQL %d, C %d", v[0], v[1], db, !db);
            assert_int_equal(final, dw_overall_is_final(to));
        }
    }
    PQfinish(admin);
}

/* ---- begin, save, finish ------------------------------------------------ */

static void test_begin_inserts_rows(void **state)
{
    (void)state;
    char id[96];
    make_id(id, sizeof(id), "begin");
    int64_t before = dw_wall_ms();
    struct dw_status st;
    begin_one(shared, id, BIT(DW_CHANNEL_KAKAO) | BIT(DW_CHANNEL_NAVER), &st);

    assert_string_equal(st.event_id, id);
    assert_int_equal(st.overall, DW_OVERALL_IN_PROGRESS);
    assert_int_equal(st.total_channels, 2);
    assert_int_equal(st.success_count, 0);
    assert_int_equal(st.failure_count, 0);
    assert_true(st.started_at_ms >= before - 5000 && st.started_at_ms <= dw_wall_ms() + 5000);
    assert_int_equal(st.completed_at_ms, 0);
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        const struct dw_channel_state *cs = &st.channels[ch];
        if (ch == DW_CHANNEL_KAKAO || ch == DW_CHANNEL_NAVER) {
            assert_true(cs->present);
            assert_int_equal(cs->status, DW_CH_PENDING);
            assert_int_equal(cs->attempts, 0);
            assert_int_equal(cs->error, DW_EC_NONE);
            assert_string_equal(cs->external_id, "");
            assert_true(cs->updated_at_ms > 0);
        } else {
            assert_false(cs->present);
        }
    }

    /* A second drive that asks for one more channel adds only its row. */
    assert_int_equal(save_one(shared, id, DW_CHANNEL_KAKAO, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL,
                              "kp-1", "https://kakao.example/kp-1"),
                     DW_OK);
    begin_one(shared, id, BIT(DW_CHANNEL_KAKAO) | BIT(DW_CHANNEL_NAVER) | BIT(DW_CHANNEL_GINITV),
              &st);
    assert_int_equal(st.overall, DW_OVERALL_IN_PROGRESS);
    assert_int_equal(st.total_channels, 3);
    assert_int_equal(st.channels[DW_CHANNEL_KAKAO].status, DW_CH_SUCCESS);
    assert_int_equal(st.channels[DW_CHANNEL_KAKAO].attempts, 1);
    assert_true(st.channels[DW_CHANNEL_GINITV].present);
    assert_int_equal(st.channels[DW_CHANNEL_GINITV].status, DW_CH_PENDING);

    struct dw_status again = read_status(shared, id);
    assert_memory_equal(&again, &st, sizeof(st));
}

static void test_success_is_final(void **state)
{
    (void)state;
    char id[96];
    make_id(id, sizeof(id), "success");
    begin_one(shared, id, BIT(DW_CHANNEL_KAKAO), NULL);
    assert_int_equal(
        save_one(shared, id, DW_CHANNEL_KAKAO, DW_CH_IN_PROGRESS, 0, DW_EC_NONE, NULL, NULL, NULL),
        DW_OK);
    assert_int_equal(read_status(shared, id).channels[DW_CHANNEL_KAKAO].status, DW_CH_IN_PROGRESS);
    assert_int_equal(save_one(shared, id, DW_CHANNEL_KAKAO, DW_CH_SUCCESS, 2, DW_EC_NONE, "",
                              "kp-91823", "https://kakao.example/p/91823"),
                     DW_OK);

    /* Replays and late results of every kind leave SUCCESS and its figures. */
    const enum dw_chstatus replays[] = {DW_CH_FAILED, DW_CH_IN_PROGRESS, DW_CH_PENDING,
                                        DW_CH_SUCCESS};
    for (size_t i = 0; i < DW_ARRAY_LEN(replays); i++) {
        assert_int_equal(save_one(shared, id, DW_CHANNEL_KAKAO, replays[i], 3,
                                  DW_EC_RETRIES_EXHAUSTED, "late", "other-id", "https://other"),
                         DW_OK);
        struct dw_status st = read_status(shared, id);
        const struct dw_channel_state *cs = &st.channels[DW_CHANNEL_KAKAO];
        assert_int_equal(cs->status, DW_CH_SUCCESS);
        assert_int_equal(cs->attempts, 2);
        assert_int_equal(cs->error, DW_EC_NONE);
        assert_string_equal(cs->error_message, "");
        assert_string_equal(cs->external_id, "kp-91823");
        assert_string_equal(cs->url, "https://kakao.example/p/91823");
    }
}

static void test_failed_then_success(void **state)
{
    (void)state;
    char id[96];
    make_id(id, sizeof(id), "redrive");
    begin_one(shared, id, BIT(DW_CHANNEL_NAVER), NULL);
    assert_int_equal(save_one(shared, id, DW_CHANNEL_NAVER, DW_CH_FAILED, 3,
                              DW_EC_RETRIES_EXHAUSTED, "HTTP 503 from naver", NULL, NULL),
                     DW_OK);
    struct dw_status st = read_status(shared, id);
    const struct dw_channel_state *cs = &st.channels[DW_CHANNEL_NAVER];
    assert_int_equal(cs->status, DW_CH_FAILED);
    assert_int_equal(cs->attempts, 3);
    assert_int_equal(cs->error, DW_EC_RETRIES_EXHAUSTED);
    assert_string_equal(cs->error_message, "HTTP 503 from naver");

    /* IN_PROGRESS and PENDING are behind FAILED: refused, attempts unchanged. */
    assert_int_equal(
        save_one(shared, id, DW_CHANNEL_NAVER, DW_CH_IN_PROGRESS, 1, DW_EC_NONE, NULL, NULL, NULL),
        DW_OK);
    assert_int_equal(
        save_one(shared, id, DW_CHANNEL_NAVER, DW_CH_PENDING, 1, DW_EC_NONE, NULL, NULL, NULL),
        DW_OK);
    st = read_status(shared, id);
    assert_int_equal(cs->status, DW_CH_FAILED);
    assert_int_equal(cs->attempts, 3);

    /* A newer FAILED replaces the older one and adds its attempts. */
    assert_int_equal(save_one(shared, id, DW_CHANNEL_NAVER, DW_CH_FAILED, 0, DW_EC_CIRCUIT_OPEN,
                              "circuit open", NULL, NULL),
                     DW_OK);
    st = read_status(shared, id);
    assert_int_equal(cs->error, DW_EC_CIRCUIT_OPEN);
    assert_int_equal(cs->attempts, 3);

    /* The re-drive succeeds: allowed, attempts summed, error cleared. */
    assert_int_equal(save_one(shared, id, DW_CHANNEL_NAVER, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL,
                              "post-7", "https://blog.naver.example/7"),
                     DW_OK);
    st = read_status(shared, id);
    assert_int_equal(cs->status, DW_CH_SUCCESS);
    assert_int_equal(cs->attempts, 4);
    assert_int_equal(cs->error, DW_EC_NONE);
    assert_string_equal(cs->error_message, "");
    assert_string_equal(cs->external_id, "post-7");
    assert_string_equal(cs->url, "https://blog.naver.example/7");
}

static void test_finish_rules(void **state)
{
    (void)state;
    char id[96];
    make_id(id, sizeof(id), "finish");
    begin_one(shared, id, BIT(DW_CHANNEL_KAKAO) | BIT(DW_CHANNEL_GINITV), NULL);
    int64_t before = dw_wall_ms();
    struct dw_status st = finish_one(shared, id, DW_OVERALL_COMPLETED, 2, 2, 0);
    assert_int_equal(st.overall, DW_OVERALL_COMPLETED);
    assert_int_equal(st.total_channels, 2);
    assert_int_equal(st.success_count, 2);
    assert_int_equal(st.failure_count, 0);
    assert_true(st.completed_at_ms >= before - 5000);
    assert_true(st.completed_at_ms >= st.started_at_ms);
    int64_t completed = st.completed_at_ms;

    /* A worse final, a non-final and PENDING are all refused. */
    st = finish_one(shared, id, DW_OVERALL_FAILED, 2, 0, 2);
    assert_int_equal(st.overall, DW_OVERALL_COMPLETED);
    assert_int_equal(st.success_count, 2);
    assert_int_equal(st.failure_count, 0);
    assert_int_equal(st.completed_at_ms, completed);
    st = finish_one(shared, id, DW_OVERALL_PARTIAL_FAILURE, 2, 1, 1);
    assert_int_equal(st.overall, DW_OVERALL_COMPLETED);
    st = finish_one(shared, id, DW_OVERALL_IN_PROGRESS, 2, 0, 0);
    assert_int_equal(st.overall, DW_OVERALL_COMPLETED);
    st = finish_one(shared, id, DW_OVERALL_PENDING, 2, 0, 0);
    assert_int_equal(st.overall, DW_OVERALL_COMPLETED);
    assert_int_equal(st.completed_at_ms, completed);

    /* begin on a final event leaves it final (and its counts). */
    begin_one(shared, id, BIT(DW_CHANNEL_KAKAO) | BIT(DW_CHANNEL_GINITV) | BIT(DW_CHANNEL_NAVER),
              &st);
    assert_int_equal(st.overall, DW_OVERALL_COMPLETED);
    assert_int_equal(st.total_channels, 2);
    assert_int_equal(st.success_count, 2);
    assert_int_equal(st.completed_at_ms, completed);
    assert_true(st.channels[DW_CHANNEL_NAVER].present);
}

static void test_partial_then_completed(void **state)
{
    (void)state;
    char id[96];
    make_id(id, sizeof(id), "partial");
    begin_one(shared, id, BIT(DW_CHANNEL_KAKAO) | BIT(DW_CHANNEL_RINGOBIZ), NULL);
    struct dw_status st = finish_one(shared, id, DW_OVERALL_PARTIAL_FAILURE, 2, 1, 1);
    assert_int_equal(st.overall, DW_OVERALL_PARTIAL_FAILURE);
    assert_true(st.completed_at_ms > 0);

    begin_one(shared, id, BIT(DW_CHANNEL_KAKAO) | BIT(DW_CHANNEL_RINGOBIZ), &st);
    assert_int_equal(st.overall, DW_OVERALL_PARTIAL_FAILURE);

    st = finish_one(shared, id, DW_OVERALL_FAILED, 2, 0, 2);
    assert_int_equal(st.overall, DW_OVERALL_PARTIAL_FAILURE);
    assert_int_equal(st.success_count, 1);

    st = finish_one(shared, id, DW_OVERALL_COMPLETED, 2, 2, 0);
    assert_int_equal(st.overall, DW_OVERALL_COMPLETED);
    assert_int_equal(st.success_count, 2);
    assert_int_equal(st.failure_count, 0);
    assert_true(st.completed_at_ms > 0);

    /* From IN_PROGRESS anything final goes, even FAILED. */
    make_id(id, sizeof(id), "failed");
    begin_one(shared, id, BIT(DW_CHANNEL_KAKAO), NULL);
    st = finish_one(shared, id, DW_OVERALL_FAILED, 1, 0, 1);
    assert_int_equal(st.overall, DW_OVERALL_FAILED);
}

static void test_same_key_twice_in_a_batch(void **state)
{
    (void)state;
    char a[96], b[96];
    make_id(a, sizeof(a), "dup-a");
    make_id(b, sizeof(b), "dup-b");
    struct dw_request r1 = make_request(a, BIT(DW_CHANNEL_KAKAO));
    struct dw_request r2 = make_request(b, BIT(DW_CHANNEL_GINITV));
    struct dw_request r3 = make_request(a, BIT(DW_CHANNEL_NAVER) | BIT(DW_CHANNEL_INSTAGRAM));
    struct dw_store_begin items[3] = {{.req = &r1}, {.req = &r2}, {.req = &r3}};
    uint64_t rt = dw_store_round_trips(shared);
    assert_int_equal(dw_store_begin(shared, items, 3), DW_OK);
    assert_int_equal(dw_store_round_trips(shared) - rt, 1);

    /* Both items of `a` see every channel either asked for; the last request
     * gives the total. */
    for (int i = 0; i < 3; i += 2) {
        const struct dw_status *st = &items[i].status;
        assert_string_equal(st->event_id, a);
        assert_int_equal(st->overall, DW_OVERALL_IN_PROGRESS);
        assert_int_equal(st->total_channels, 2);
        assert_true(st->channels[DW_CHANNEL_KAKAO].present);
        assert_true(st->channels[DW_CHANNEL_NAVER].present);
        assert_true(st->channels[DW_CHANNEL_INSTAGRAM].present);
        assert_false(st->channels[DW_CHANNEL_GINITV].present);
    }
    assert_string_equal(items[1].status.event_id, b);
    assert_true(items[1].status.channels[DW_CHANNEL_GINITV].present);
    assert_false(items[1].status.channels[DW_CHANNEL_KAKAO].present);

    /* Results for one key in one batch apply in order, as across batches. */
    struct dw_store_result results[] = {
        {a, DW_CHANNEL_KAKAO, DW_CH_FAILED, 2, DW_EC_TIMEOUT, "timeout", NULL, NULL},
        {b, DW_CHANNEL_GINITV, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL, "g-1", NULL},
        {a, DW_CHANNEL_KAKAO, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL, "kp-1", "https://k/1"},
        {a, DW_CHANNEL_KAKAO, DW_CH_FAILED, 5, DW_EC_HTTP_5XX, "late", NULL, NULL},
        {a, DW_CHANNEL_NAVER, DW_CH_FAILED, 1, DW_EC_HTTP_4XX, "rejected", NULL, NULL},
    };
    rt = dw_store_round_trips(shared);
    assert_int_equal(dw_store_save_results(shared, results, DW_ARRAY_LEN(results)), DW_OK);
    assert_int_equal(dw_store_round_trips(shared) - rt, 1);
    struct dw_status st = read_status(shared, a);
    assert_int_equal(st.channels[DW_CHANNEL_KAKAO].status, DW_CH_SUCCESS);
    assert_int_equal(st.channels[DW_CHANNEL_KAKAO].attempts, 3);
    assert_string_equal(st.channels[DW_CHANNEL_KAKAO].external_id, "kp-1");
    assert_int_equal(st.channels[DW_CHANNEL_NAVER].status, DW_CH_FAILED);
    assert_int_equal(st.channels[DW_CHANNEL_NAVER].error, DW_EC_HTTP_4XX);
    assert_int_equal(read_status(shared, b).channels[DW_CHANNEL_GINITV].status, DW_CH_SUCCESS);

    /* Finishes for one event in one batch: the better final wins. */
    struct dw_store_finish fin[] = {
        finish_item(a, DW_OVERALL_PARTIAL_FAILURE, 3, 1, 2),
        finish_item(b, DW_OVERALL_COMPLETED, 1, 1, 0),
        finish_item(a, DW_OVERALL_FAILED, 3, 0, 3),
    };
    assert_int_equal(dw_store_finish(shared, fin, DW_ARRAY_LEN(fin)), DW_OK);
    assert_int_equal(fin[0].status.overall, DW_OVERALL_PARTIAL_FAILURE);
    assert_int_equal(fin[0].status.success_count, 1);
    assert_memory_equal(&fin[0].status, &fin[2].status, sizeof(fin[0].status));
    assert_int_equal(fin[1].status.overall, DW_OVERALL_COMPLETED);
}

#define BATCH 500

static double ms_since(int64_t start_us)
{
    return (double)(dw_now_us() - start_us) / 1000.0;
}

static void test_batch_of_500_is_one_round_trip_per_call(void **state)
{
    (void)state;
    static char ids[BATCH][96];
    static struct dw_request reqs[BATCH];
    static struct dw_store_begin begins[BATCH];
    static struct dw_store_result results[BATCH * DW_CHANNEL_COUNT];
    static struct dw_store_finish finishes[BATCH];
    char tag[64];
    make_id(tag, sizeof(tag), "rt");
    for (int i = 0; i < BATCH; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%s-%03d", tag, i);
        reqs[i] = make_request(ids[i], ALL_CHANNELS);
        begins[i] = (struct dw_store_begin){.req = &reqs[i]};
        for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
            bool ok = ch != DW_CHANNEL_RINGOBIZ || i % 2 == 0;
            results[i * DW_CHANNEL_COUNT + ch] =
                (struct dw_store_result){ids[i],
                                         (enum dw_channel_id)ch,
                                         ok ? DW_CH_SUCCESS : DW_CH_FAILED,
                                         ok ? 1 : 3,
                                         ok ? DW_EC_NONE : DW_EC_RETRIES_EXHAUSTED,
                                         ok ? NULL : "HTTP 503",
                                         ok ? "ext" : NULL,
                                         ok ? "https://example.com/x" : NULL};
        }
        bool all = i % 2 == 0;
        finishes[i] = finish_item(ids[i], all ? DW_OVERALL_COMPLETED : DW_OVERALL_PARTIAL_FAILURE,
                                  DW_CHANNEL_COUNT, all ? DW_CHANNEL_COUNT : DW_CHANNEL_COUNT - 1,
                                  all ? 0 : 1);
    }

    uint64_t rt = dw_store_round_trips(shared);
    int64_t t = dw_now_us();
    assert_int_equal(dw_store_begin(shared, begins, BATCH), DW_OK);
    double begin_ms = ms_since(t);
    assert_int_equal(dw_store_round_trips(shared) - rt, 1);
    for (int i = 0; i < BATCH; i++) {
        assert_string_equal(begins[i].status.event_id, ids[i]);
        assert_int_equal(begins[i].status.overall, DW_OVERALL_IN_PROGRESS);
        for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++)
            assert_int_equal(begins[i].status.channels[ch].status, DW_CH_PENDING);
    }

    rt = dw_store_round_trips(shared);
    t = dw_now_us();
    assert_int_equal(dw_store_save_results(shared, results, DW_ARRAY_LEN(results)), DW_OK);
    double save_ms = ms_since(t);
    assert_int_equal(dw_store_round_trips(shared) - rt, 1);

    rt = dw_store_round_trips(shared);
    t = dw_now_us();
    assert_int_equal(dw_store_finish(shared, finishes, BATCH), DW_OK);
    double finish_ms = ms_since(t);
    assert_int_equal(dw_store_round_trips(shared) - rt, 1);
    for (int i = 0; i < BATCH; i++) {
        const struct dw_status *st = &finishes[i].status;
        assert_string_equal(st->event_id, ids[i]);
        assert_int_equal(st->overall, finishes[i].overall);
        assert_int_equal(st->channels[DW_CHANNEL_RINGOBIZ].status,
                         i % 2 == 0 ? DW_CH_SUCCESS : DW_CH_FAILED);
        assert_int_equal(st->channels[DW_CHANNEL_RINGOBIZ].attempts, i % 2 == 0 ? 1 : 3);
        assert_int_equal(st->channels[DW_CHANNEL_KAKAO].status, DW_CH_SUCCESS);
    }

    rt = dw_store_round_trips(shared);
    struct dw_status st = read_status(shared, ids[7]);
    assert_int_equal(dw_store_round_trips(shared) - rt, 1);
    assert_int_equal(st.overall, DW_OVERALL_PARTIAL_FAILURE);
    assert_int_equal(st.channels[DW_CHANNEL_RINGOBIZ].error, DW_EC_RETRIES_EXHAUSTED);
    assert_string_equal(st.channels[DW_CHANNEL_RINGOBIZ].error_message, "HTTP 503");

    printf("store: %d events, %d results: begin %.1f ms, save %.1f ms, finish %.1f ms, "
           "1 round trip each\n",
           BATCH, BATCH * DW_CHANNEL_COUNT, begin_ms, save_ms, finish_ms);
}

/* Results and finishes together: one transaction, one round trip, and the
 * finish sees the results written just before it. */
static void test_save_and_finish_in_one_round_trip(void **state)
{
    (void)state;
    char a[96], b[96];
    make_id(a, sizeof(a), "sf-a");
    make_id(b, sizeof(b), "sf-b");
    unsigned two = BIT(DW_CHANNEL_KAKAO) | BIT(DW_CHANNEL_NAVER);
    begin_one(shared, a, two, NULL);
    begin_one(shared, b, two, NULL);

    struct dw_store_result results[] = {
        {a, DW_CHANNEL_KAKAO, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL, "k-a", "https://k/a"},
        {a, DW_CHANNEL_NAVER, DW_CH_SUCCESS, 2, DW_EC_NONE, NULL, "n-a", NULL},
        {b, DW_CHANNEL_KAKAO, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL, "k-b", NULL},
    };
    struct dw_store_finish fin = finish_item(a, DW_OVERALL_COMPLETED, 2, 2, 0);
    uint64_t rt = dw_store_round_trips(shared);
    assert_int_equal(dw_store_save_and_finish(shared, results, 3, &fin, 1), DW_OK);
    assert_int_equal(dw_store_round_trips(shared) - rt, 1);

    assert_int_equal(fin.status.overall, DW_OVERALL_COMPLETED);
    assert_int_equal(fin.status.success_count, 2);
    assert_string_equal(fin.status.channels[DW_CHANNEL_KAKAO].external_id, "k-a");
    assert_string_equal(fin.status.channels[DW_CHANNEL_KAKAO].url, "https://k/a");
    assert_int_equal(fin.status.channels[DW_CHANNEL_NAVER].attempts, 2);

    struct dw_status st = read_status(shared, b);
    assert_int_equal(st.overall, DW_OVERALL_IN_PROGRESS);
    assert_int_equal(st.channels[DW_CHANNEL_KAKAO].status, DW_CH_SUCCESS);
    assert_int_equal(st.channels[DW_CHANNEL_NAVER].status, DW_CH_PENDING);

    /* Nothing to do costs nothing. */
    rt = dw_store_round_trips(shared);
    assert_int_equal(dw_store_save_and_finish(shared, NULL, 0, NULL, 0), DW_OK);
    assert_int_equal(dw_store_round_trips(shared), rt);
}

static void test_read_not_found(void **state)
{
    (void)state;
    char id[96];
    make_id(id, sizeof(id), "nobody");
    struct dw_status st;
    assert_int_equal(dw_store_read(shared, id, &st), DW_ERR_NOT_FOUND);
    assert_int_equal(dw_store_read(shared, "", &st), DW_ERR_INVALID);
    assert_true(dw_store_connected(shared));
}

static void test_hostile_strings_stored_verbatim(void **state)
{
    (void)state;
    char evil[96], quoted[96];
    snprintf(evil, sizeof(evil), "%s-x'; DROP TABLE distribution;--", run_suffix);
    snprintf(quoted, sizeof(quoted), "%s-\"q\\\"{a,b},NULL)é", run_suffix);

    const char *ids[] = {evil, quoted};
    for (size_t i = 0; i < DW_ARRAY_LEN(ids); i++) {
        struct dw_status st;
        begin_one(shared, ids[i], BIT(DW_CHANNEL_KAKAO), &st);
        assert_string_equal(st.event_id, ids[i]);
        assert_int_equal(save_one(shared, ids[i], DW_CHANNEL_KAKAO, DW_CH_FAILED, 1, DW_EC_HTTP_4XX,
                                  "bad 'quote' \"dq\" \\ {} , NULL \xff end",
                                  "id'); DELETE FROM channel_status;--", "https://x/?a='b'"),
                         DW_OK);
        st = finish_one(shared, ids[i], DW_OVERALL_FAILED, 1, 0, 1);
        assert_int_equal(st.overall, DW_OVERALL_FAILED);
        st = read_status(shared, ids[i]);
        assert_string_equal(st.event_id, ids[i]);
        const struct dw_channel_state *cs = &st.channels[DW_CHANNEL_KAKAO];
        /* The invalid UTF-8 byte became '?'; everything else is verbatim. */
        assert_string_equal(cs->error_message, "bad 'quote' \"dq\" \\ {} , NULL ? end");
        assert_string_equal(cs->external_id, "id'); DELETE FROM channel_status;--");
        assert_string_equal(cs->url, "https://x/?a='b'");
    }

    PGconn *admin = connect_admin(pg_dsn());
    const char *v[] = {evil};
    PGresult *res = sql(admin, "SELECT count(*) FROM distribution WHERE event_id = $1", 1, v);
    assert_string_equal(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    assert_true(count_rows(admin, "SELECT count(*) FROM channel_status") > 0);
    PQfinish(admin);
}

/* ---- failures ----------------------------------------------------------- */

static void test_unreachable_server(void **state)
{
    (void)state;
    struct dw_store *store = (struct dw_store *)1;
    char errbuf[256] = "";
    /* Port 1 on loopback: nobody listens, the connection is refused. */
    assert_int_equal(dw_store_create("postgresql://postgres@127.0.0.1:1/distribution", NULL, &store,
                                     errbuf, sizeof(errbuf)),
                     DW_ERR_DB);
    assert_null(store);
    assert_true(strlen(errbuf) > 0);
    assert_false(dw_store_connected(NULL));
    dw_store_destroy(NULL);
}

static void terminate_backends(PGconn *admin, const char *appname)
{
    const char *v[] = {appname};
    /* In the select list, so it runs only for the rows the WHERE keeps. */
    PGresult *res = sql(admin,
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                        " WHERE application_name = $1",
                        1, v);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
}

static void test_reconnect_after_backend_terminated(void **state)
{
    (void)state;
    PGconn *admin = connect_admin(pg_dsn());
    char appname[64], conninfo[2048];
    snprintf(appname, sizeof(appname), "dw-test-kill-%d", (int)getpid());
    make_conninfo(admin, PQdb(admin), appname, conninfo, sizeof(conninfo));
    struct dw_store *store = open_store(conninfo);
    char id[96];
    make_id(id, sizeof(id), "kill");
    begin_one(store, id, BIT(DW_CHANNEL_KAKAO), NULL);

    terminate_backends(admin, appname);
    struct dw_request req = make_request(id, BIT(DW_CHANNEL_KAKAO));
    struct dw_store_begin item = {.req = &req};
    assert_int_equal(dw_store_begin(store, &item, 1), DW_ERR_DB);
    assert_false(dw_store_connected(store));
    /* Further calls fail fast without crashing. */
    struct dw_status st;
    assert_int_equal(dw_store_read(store, id, &st), DW_ERR_DB);
    assert_int_equal(
        save_one(store, id, DW_CHANNEL_KAKAO, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL, "k", NULL),
        DW_ERR_DB);

    assert_int_equal(dw_store_reconnect(store), DW_OK);
    assert_true(dw_store_connected(store));
    uint64_t rt = dw_store_round_trips(store);
    assert_int_equal(
        save_one(store, id, DW_CHANNEL_KAKAO, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL, "k", NULL),
        DW_OK);
    assert_int_equal(dw_store_round_trips(store) - rt, 1); /* statements were re-prepared */
    assert_int_equal(read_status(store, id).channels[DW_CHANNEL_KAKAO].status, DW_CH_SUCCESS);

    /* Killed while idle in the middle of a session, once more. */
    terminate_backends(admin, appname);
    assert_int_equal(dw_store_read(store, id, &st), DW_ERR_DB);
    assert_false(dw_store_connected(store));
    assert_int_equal(dw_store_reconnect(store), DW_OK);
    assert_int_equal(read_status(store, id).channels[DW_CHANNEL_KAKAO].status, DW_CH_SUCCESS);

    dw_store_destroy(store);
    PQfinish(admin);
}

/* The database goes away (refuses connections) under an open store, then
 * comes back. */
static void test_database_down_and_back(void **state)
{
    (void)state;
    PGconn *admin = connect_admin(pg_dsn());
    char dbname[64], appname[64], conninfo[2048], query[256];
    snprintf(dbname, sizeof(dbname), "dwtest_down_%d", (int)getpid());
    snprintf(appname, sizeof(appname), "dw-test-down-%d", (int)getpid());
    create_database(admin, dbname);
    make_conninfo(admin, dbname, appname, conninfo, sizeof(conninfo));
    struct dw_store *store = open_store(conninfo);
    char id[96];
    make_id(id, sizeof(id), "down");
    begin_one(store, id, BIT(DW_CHANNEL_KAKAO), NULL);

    snprintf(query, sizeof(query), "ALTER DATABASE %s ALLOW_CONNECTIONS false", dbname);
    sql_do(admin, query);
    terminate_backends(admin, appname);

    struct dw_store_finish fin = finish_item(id, DW_OVERALL_COMPLETED, 1, 1, 0);
    assert_int_equal(dw_store_finish(store, &fin, 1), DW_ERR_DB);
    assert_false(dw_store_connected(store));
    /* The connection was lost while it worked: one attempt at once. */
    assert_true(dw_store_retry_at(store) <= dw_now_ms());
    assert_int_equal(dw_store_reconnect(store), DW_ERR_DB);
    assert_false(dw_store_connected(store));
    /* It failed: the store's policy waits 75..100 ms before the next. */
    int64_t retry_at = dw_store_retry_at(store);
    int64_t now = dw_now_ms();
    assert_true(retry_at > now && retry_at <= now + 100);
    struct dw_status st;
    assert_int_equal(dw_store_read(store, id, &st), DW_ERR_DB);
    assert_int_equal(dw_store_finish(store, &fin, 1), DW_ERR_DB);
    char errbuf[256];
    assert_int_equal(dw_store_migrate(store, errbuf, sizeof(errbuf)), DW_ERR_DB);

    snprintf(query, sizeof(query), "ALTER DATABASE %s ALLOW_CONNECTIONS true", dbname);
    sql_do(admin, query);
    /* Back, but the policy's wait is not over: no attempt is made. */
    if (dw_now_ms() < dw_store_retry_at(store)) {
        assert_int_equal(dw_store_reconnect(store), DW_ERR_DB);
        assert_false(dw_store_connected(store));
    }
    while (dw_now_ms() < dw_store_retry_at(store))
        usleep(10 * 1000);
    assert_int_equal(dw_store_reconnect(store), DW_OK);
    assert_true(dw_store_connected(store));
    assert_int_equal(dw_store_finish(store, &fin, 1), DW_OK);
    assert_true(dw_store_retry_at(store) == 0); /* a call worked: starts over */
    assert_int_equal(fin.status.overall, DW_OVERALL_COMPLETED);

    dw_store_destroy(store);
    drop_database(admin, dbname);
    PQfinish(admin);
}

/* A store made offline connects on its first reconnect, at once; one that
 * cannot connect waits out the policy between attempts. */
static void test_offline_store(void **state)
{
    (void)state;
    assert_null(dw_store_create_offline(NULL, test_log));

    struct dw_store *store = dw_store_create_offline(pg_dsn(), test_log);
    assert_non_null(store);
    assert_false(dw_store_connected(store));
    struct dw_status st;
    assert_int_equal(dw_store_read(store, "offline-none", &st), DW_ERR_DB);
    assert_true(dw_store_retry_at(store) <= dw_now_ms()); /* nothing was tried */
    assert_int_equal(dw_store_reconnect(store), DW_OK);
    assert_true(dw_store_connected(store));
    char errbuf[256];
    assert_int_equal(dw_store_migrate(store, errbuf, sizeof(errbuf)), DW_OK);
    assert_int_equal(dw_store_read(store, "offline-none", &st), DW_ERR_NOT_FOUND);
    dw_store_destroy(store);

    /* Nothing listens on port 1 of the loopback. */
    store = dw_store_create_offline("host=127.0.0.1 port=1 dbname=x connect_timeout=2", NULL);
    assert_int_equal(dw_store_reconnect(store), DW_ERR_DB);
    int64_t first = dw_store_retry_at(store);
    assert_true(first > dw_now_ms());
    assert_int_equal(dw_store_reconnect(store), DW_ERR_DB); /* no attempt: still waiting */
    assert_true(dw_store_retry_at(store) == first);
    while (dw_now_ms() < dw_store_retry_at(store))
        usleep(10 * 1000);
    int64_t before = dw_now_ms();
    assert_int_equal(dw_store_reconnect(store), DW_ERR_DB);
    /* The second failure waits longer: 150..200 ms. */
    assert_true(dw_store_retry_at(store) - before >= 150);
    dw_store_destroy(store);
}

/* The store's backend is idle: no transaction left open, nothing half-done. */
static void assert_backend_idle(PGconn *db, const char *appname)
{
    const char *v[] = {appname};
    PGresult *res = sql(db,
                        "SELECT state FROM pg_stat_activity WHERE application_name = $1"
                        " AND pid <> pg_backend_pid()",
                        1, v);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), "idle");
    PQclear(res);
}

/* A statement that fails inside a batch rolls the whole batch back and
 * leaves the connection usable (out of pipeline mode, no transaction). */
static void test_failed_batch_rolls_back(void **state)
{
    (void)state;
    PGconn *admin = connect_admin(pg_dsn());
    char dbname[64], conninfo[2048];
    snprintf(dbname, sizeof(dbname), "dwtest_rollback_%d", (int)getpid());
    create_database(admin, dbname);
    make_conninfo(admin, dbname, "dw-test-rollback", conninfo, sizeof(conninfo));
    struct dw_store *store = open_store(conninfo);
    PGconn *db = connect_admin(conninfo);
    sql_do(db, "ALTER TABLE distribution ADD CONSTRAINT test_reject"
               " CHECK (event_id NOT LIKE '%-reject' OR overall_status <> 'FAILED')");
    sql_do(db, "ALTER TABLE channel_status ADD CONSTRAINT test_reject"
               " CHECK (error_message IS DISTINCT FROM 'reject me')");

    struct dw_request good = make_request("e-good", BIT(DW_CHANNEL_KAKAO));
    struct dw_request bad = make_request("e-reject", BIT(DW_CHANNEL_KAKAO));
    struct dw_store_begin begins[] = {{.req = &good}, {.req = &bad}};
    assert_int_equal(dw_store_begin(store, begins, 2), DW_OK);

    struct dw_store_result results[] = {
        {"e-good", DW_CHANNEL_KAKAO, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL, "k", NULL},
        {"e-reject", DW_CHANNEL_KAKAO, DW_CH_FAILED, 1, DW_EC_HTTP_4XX, "reject me", NULL, NULL},
    };
    uint64_t rt = dw_store_round_trips(store);
    assert_int_equal(dw_store_save_results(store, results, 2), DW_ERR_DB);
    assert_int_equal(dw_store_round_trips(store) - rt, 2); /* the batch, then ROLLBACK */
    assert_true(dw_store_connected(store));
    assert_backend_idle(db, "dw-test-rollback");
    assert_int_equal(read_status(store, "e-good").channels[DW_CHANNEL_KAKAO].status, DW_CH_PENDING);

    struct dw_store_finish fin[] = {
        finish_item("e-good", DW_OVERALL_COMPLETED, 1, 1, 0),
        finish_item("e-reject", DW_OVERALL_FAILED, 1, 0, 1),
    };
    assert_int_equal(dw_store_finish(store, fin, 2), DW_ERR_DB);
    assert_true(dw_store_connected(store));
    assert_int_equal(read_status(store, "e-good").overall, DW_OVERALL_IN_PROGRESS);

    /* A bad result rolls back a good finish sent with it. */
    assert_int_equal(dw_store_save_and_finish(store, &results[1], 1, fin, 1), DW_ERR_DB);
    assert_true(dw_store_connected(store));
    assert_int_equal(read_status(store, "e-good").overall, DW_OVERALL_IN_PROGRESS);

    /* The same connection carries on; the caller retries without the bad row. */
    rt = dw_store_round_trips(store);
    assert_int_equal(dw_store_save_results(store, results, 1), DW_OK);
    assert_int_equal(dw_store_finish(store, fin, 1), DW_OK);
    assert_int_equal(dw_store_round_trips(store) - rt, 2);
    assert_int_equal(fin[0].status.overall, DW_OVERALL_COMPLETED);
    assert_int_equal(fin[0].status.channels[DW_CHANNEL_KAKAO].status, DW_CH_SUCCESS);

    assert_backend_idle(db, "dw-test-rollback");

    PQfinish(db);
    dw_store_destroy(store);
    drop_database(admin, dbname);
    PQfinish(admin);
}

/* A first step's id lands on the channel's row and changes nothing else;
 * of two ids for one key in one batch the later one stays. */
static void test_step_ids_stored(void **state)
{
    (void)state;
    char a[96], b[96];
    make_id(a, sizeof(a), "step-a");
    make_id(b, sizeof(b), "step-b");
    struct dw_status before;
    begin_one(shared, a, BIT(DW_CHANNEL_INSTAGRAM) | BIT(DW_CHANNEL_KAKAO), &before);
    begin_one(shared, b, BIT(DW_CHANNEL_INSTAGRAM), NULL);
    struct dw_store_step steps[] = {
        {a, DW_CHANNEL_INSTAGRAM, "container-1"},
        {b, DW_CHANNEL_INSTAGRAM, "container-b"},
        {a, DW_CHANNEL_INSTAGRAM, "container-2"},
    };
    uint64_t rt = dw_store_round_trips(shared);
    assert_int_equal(dw_store_save_steps(shared, steps, DW_ARRAY_LEN(steps)), DW_OK);
    assert_int_equal(dw_store_round_trips(shared) - rt, 1);

    struct dw_status st = read_status(shared, a);
    const struct dw_channel_state *ig = &st.channels[DW_CHANNEL_INSTAGRAM];
    assert_string_equal(ig->step_id, "container-2");
    assert_true(ig->step_id_at_ms > 0);
    assert_int_equal(ig->status, DW_CH_PENDING);
    assert_int_equal(ig->attempts, 0);
    assert_int_equal(ig->updated_at_ms, before.channels[DW_CHANNEL_INSTAGRAM].updated_at_ms);
    assert_string_equal(st.channels[DW_CHANNEL_KAKAO].step_id, "");
    assert_string_equal(read_status(shared, b).channels[DW_CHANNEL_INSTAGRAM].step_id,
                        "container-b");
}

/* The statements that name event ids, and the tables a plan of theirs must
 * not scan (the re-drive claim and its count scan the schedule by due time
 * on purpose: they name none). */
static const struct {
    enum dw_stmt_id id;
    const char *tables[3];
} keyed[] = {
    {DW_STMT_BEGIN_DISTRIBUTION, {"distribution"}},
    {DW_STMT_BEGIN_CHANNELS, {"channel_status"}},
    {DW_STMT_SAVE_RESULTS, {"channel_status"}},
    {DW_STMT_FINISH, {"distribution"}},
    {DW_STMT_LOAD_MANY, {"distribution", "channel_status"}},
    {DW_STMT_LOAD_ONE, {"distribution", "channel_status"}},
    {DW_STMT_SAVE_STEPS, {"channel_status"}},
    {DW_STMT_REDRIVE_LOCK, {"redrive"}},
    {DW_STMT_REDRIVE_SCHEDULE, {"redrive"}},
    {DW_STMT_REDRIVE_CLEAR, {"redrive"}},
    {DW_STMT_REDRIVE_READ, {"redrive"}},
};

/*
 * Every statement that names event ids finds their rows through a key,
 * even in the generic plan a session makes while the tables are empty: a
 * young database has no statistics until autoanalyze, and a session keeps
 * a cached plan. A statement planned as a scan then costs a whole table per
 * call as the tables grow; dw_save_steps, an UPDATE ... FROM unnest(...),
 * did (a hash join over a scan of channel_status: 12 ms a call at 120,000
 * rows, 60 % of PostgreSQL's time in a 20,000-request bench).
 */
static void test_keyed_statements_never_scan(void **state)
{
    (void)state;
    PGconn *admin = connect_admin(pg_dsn());
    char dbname[64], conninfo[2048];
    snprintf(dbname, sizeof(dbname), "dwtest_plans_%d", (int)getpid());
    create_database(admin, dbname);
    make_conninfo(admin, dbname, "dw-test-plans", conninfo, sizeof(conninfo));
    dw_store_destroy(open_store(conninfo)); /* the schema, tables empty */

    PGconn *db = connect_admin(conninfo);
    sql_do(db, "SET plan_cache_mode = force_generic_plan");
    for (size_t k = 0; k < DW_ARRAY_LEN(keyed); k++) {
        const struct dw_store_statement *st = &dw_store_statements[keyed[k].id];
        PGresult *res = PQprepare(db, st->name, st->sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            fail_msg("%s: %s", st->name, PQresultErrorMessage(res));
        PQclear(res);
        res = PQdescribePrepared(db, st->name);
        int nparams = PQnparams(res);
        PQclear(res);
        /* The values do not matter to a generic plan: NULL for each. */
        char query[512];
        int len = snprintf(query, sizeof(query), "EXPLAIN EXECUTE %s(", st->name);
        for (int p = 0; p < nparams; p++)
            len += snprintf(query + len, sizeof(query) - (size_t)len, "%sNULL", p ? ", " : "");
        snprintf(query + len, sizeof(query) - (size_t)len, ")");
        res = sql(db, query, 0, NULL);
        char plan[4096] = "";
        size_t used = 0;
        for (int row = 0; row < PQntuples(res) && used < sizeof(plan); row++)
            used +=
                (size_t)snprintf(plan + used, sizeof(plan) - used, "%s\n", PQgetvalue(res, row, 0));
        PQclear(res);
        for (int t = 0; t < 3 && keyed[k].tables[t]; t++) {
            char scan[64];
            snprintf(scan, sizeof(scan), "Seq Scan on %s", keyed[k].tables[t]);
            if (strstr(plan, scan))
                fail_msg("%s scans %s in its generic plan:\n%s", st->name, keyed[k].tables[t],
                         plan);
        }
    }
    PQfinish(db);
    drop_database(admin, dbname);
    PQfinish(admin);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    struct dw_store_result bad_channel = {
        "e", DW_CHANNEL_COUNT, DW_CH_SUCCESS, 1, DW_EC_NONE, NULL, NULL, NULL};
    assert_int_equal(dw_store_save_results(shared, &bad_channel, 1), DW_ERR_INVALID);
    struct dw_store_finish bad_event = finish_item("\xff\xfe", DW_OVERALL_COMPLETED, 1, 1, 0);
    assert_int_equal(dw_store_finish(shared, &bad_event, 1), DW_ERR_INVALID);
    uint64_t rt = dw_store_round_trips(shared);
    assert_int_equal(dw_store_begin(shared, NULL, 0), DW_OK);
    assert_int_equal(dw_store_round_trips(shared), rt);
    assert_true(dw_store_connected(shared));
}

int main(void)
{
    snprintf(run_suffix, sizeof(run_suffix), "%lx%x", (unsigned long)time(NULL),
             (unsigned)getpid());
    enum dw_log_level level;
    if (dw_log_level_parse(getenv("DW_TEST_STORE_LOG"), &level))
        test_log = dw_log_create(2, level);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_twice),
        cmocka_unit_test(test_migrate_concurrently_from_scratch),
        cmocka_unit_test(test_sql_rules_match_c),
        cmocka_unit_test(test_begin_inserts_rows),
        cmocka_unit_test(test_success_is_final),
        cmocka_unit_test(test_failed_then_success),
        cmocka_unit_test(test_finish_rules),
        cmocka_unit_test(test_partial_then_completed),
        cmocka_unit_test(test_same_key_twice_in_a_batch),
        cmocka_unit_test(test_batch_of_500_is_one_round_trip_per_call),
        cmocka_unit_test(test_save_and_finish_in_one_round_trip),
        cmocka_unit_test(test_read_not_found),
        cmocka_unit_test(test_hostile_strings_stored_verbatim),
        cmocka_unit_test(test_unreachable_server),
        cmocka_unit_test(test_reconnect_after_backend_terminated),
        cmocka_unit_test(test_database_down_and_back),
        cmocka_unit_test(test_offline_store),
        cmocka_unit_test(test_failed_batch_rolls_back),
        cmocka_unit_test(test_step_ids_stored),
        cmocka_unit_test(test_keyed_statements_never_scan),
        cmocka_unit_test(test_invalid_arguments),
    };
    int failed = cmocka_run_group_tests(tests, setup_shared, teardown_shared);
    dw_log_destroy(test_log);
    return failed;
}
