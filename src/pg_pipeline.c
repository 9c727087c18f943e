/*
 * The status store's connection to PostgreSQL: connecting, the pipeline of
 * libpq messages every batch call is sent as (one network round trip), the
 * client-side time limit, and the public calls about the connection
 * (dw_store_create, _destroy, _connected, _reconnect, _ping, _set_timeout).
 * What to send is store.c's and schema.c's business.
 *
 * Threads: a dw_store is used by one thread at a time (the caller
 * serialises); stores share nothing.
 *
 * Invariants:
 * - Between calls the connection is either gone (conn NULL, after a failure
 *   that could not be cleaned up; dw_store_connected is false) or idle: out
 *   of pipeline mode and outside any transaction.
 * - A failed pipeline rolls its transaction back (one more round trip) or
 *   closes the connection; nothing half-done survives a call.
 * - round_trips counts every message exchange with the server.
 * - The store owns its reconnect policy (dw/backoff.h): a failed call or
 *   connection attempt makes dw_store_reconnect wait (100 ms doubling to
 *   5 s, with jitter); a connection lost while it worked may be re-made at
 *   once, once; a call that works resets it. Callers keep no wait of their
 *   own: they read dw_store_retry_at.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "store_internal.h"

/* The reconnect policy (dw/backoff.h). */
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 5000

/* ---- errors and the connection ---------------------------------------- */

/* Copies a libpq message without its trailing newline. */
void dw_pg_copy_message(char *dst, size_t dstlen, const char *msg)
{
    if (!dstlen)
        return;
    dw_strlcpy(dst, msg && *msg ? msg : "unknown error", dstlen);
    size_t len = strlen(dst);
    while (len && (dst[len - 1] == '\n' || dst[len - 1] == '\r'))
        dst[--len] = '\0';
}

/* "message (detail) [SQLSTATE]" of a failed result, on one line. */
void dw_pg_describe_error(const PGresult *res, PGconn *conn, char *dst, size_t dstlen)
{
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!primary) {
        dw_pg_copy_message(dst, dstlen,
                           PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res)
                                                        : PQerrorMessage(conn));
        return;
    }
    dw_snprintf(dst, dstlen, "%s%s%s%s [%s]", primary, detail ? " (" : "", detail ? detail : "",
                detail ? ")" : "", state ? state : "no SQLSTATE");
}

void dw_pg_close(struct dw_store *store)
{
    if (store->conn)
        PQfinish(store->conn);
    store->conn = NULL;
    store->prepared = false;
}

/* Logs a failure and, when the connection cannot be trusted any more, closes
 * it so that no call ever finds it mid-pipeline or mid-transaction. */
void dw_pg_note_failure(struct dw_store *store, bool lost)
{
    int64_t now = dw_now_ms();
    if (lost)
        dw_backoff_lost(&store->reconnect, now);
    else
        dw_backoff_failed(&store->reconnect, now);
}

enum dw_err dw_pg_fail(struct dw_store *store, const char *what, const char *msg, bool close)
{
    char text[DW_PG_ERRTEXT_MAX];
    dw_pg_copy_message(text, sizeof(text), msg);
    dw_log_write(store->log, DW_LOG_ERROR, DW_LOG_NOCTX, "store: %s failed: %s%s", what, text,
                 close ? " (connection closed)" : "");
    /* Without a connection nothing was tried; else the policy hears it. */
    if (store->conn)
        dw_pg_note_failure(store, close && !store->timed_out);
    if (close)
        dw_pg_close(store);
    return DW_ERR_DB;
}

static void on_notice(void *arg, const char *message)
{
    struct dw_store *store = arg;
    char text[DW_PG_ERRTEXT_MAX];
    dw_pg_copy_message(text, sizeof(text), message);
    dw_log_write(store->log, DW_LOG_DEBUG, DW_LOG_NOCTX, "store: server notice: %s", text);
}

enum dw_err dw_pg_connect(struct dw_store *store, char *errbuf, size_t errlen)
{
    /* Keywords before dbname are defaults the DSN may override; the one after
     * it is ours to fix (all strings we send are UTF-8). */
    static const char *const keywords[] = {"connect_timeout",
                                           "application_name",
                                           "keepalives_idle",
                                           "keepalives_interval",
                                           "keepalives_count",
                                           "tcp_user_timeout",
                                           "dbname",
                                           "client_encoding",
                                           NULL};
    const char *values[] = {
        "5", "distribution-worker", "30", "10", "3", "60000", store->dsn, "UTF8", NULL};

    dw_pg_close(store);
    PGconn *conn = PQconnectdbParams(keywords, values, 1);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        char text[DW_PG_ERRTEXT_MAX];
        dw_pg_copy_message(text, sizeof(text), conn ? PQerrorMessage(conn) : "out of memory");
        if (errbuf)
            dw_snprintf(errbuf, errlen, "cannot connect to PostgreSQL: %s", text);
        dw_log_write(store->log, DW_LOG_ERROR, DW_LOG_NOCTX,
                     "store: cannot connect to PostgreSQL: %s", text);
        PQfinish(conn);
        return DW_ERR_DB;
    }
    PQsetNoticeProcessor(conn, on_notice, store);
    store->conn = conn;
    return DW_OK;
}

/* ---- the pipeline ----------------------------------------------------- */

struct dw_pg_step dw_pg_sql_step(const char *sql)
{
    return (struct dw_pg_step){.kind = DW_PG_STEP_SQL, .sql = sql};
}

void dw_pg_clear_results(struct dw_pg_step *steps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PQclear(steps[i].result);
        steps[i].result = NULL;
    }
}

static bool send_step(PGconn *conn, const struct dw_pg_step *s)
{
    switch (s->kind) {
    case DW_PG_STEP_SQL:
        return PQsendQueryParams(conn, s->sql, s->nparams, NULL, s->values, NULL, NULL, 0);
    case DW_PG_STEP_PREPARE:
        return PQsendPrepare(conn, s->name, s->sql, 0, NULL);
    case DW_PG_STEP_EXEC:
        return PQsendQueryPrepared(conn, s->name, s->nparams, s->values, NULL, NULL, 0);
    }
    return false;
}

/* With a time limit: waits until the next result can be read without
 * blocking. False when the deadline passes first: a server that stops
 * answering (a hung or SIGSTOPped process) is not noticed by TCP, and
 * statement_timeout runs on the server, so only the client can bound it. */
static bool wait_input(struct dw_store *store, int64_t deadline_ms)
{
    PGconn *conn = store->conn;
    if (!store->timeout_ms)
        return true;
    while (PQisBusy(conn)) {
        int64_t left = deadline_ms - dw_now_ms();
        if (left <= 0)
            return false;
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
        int rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno != EINTR)
            return true; /* PQgetResult reports the broken connection */
        if (rc > 0 && !PQconsumeInput(conn))
            return true;
    }
    return true;
}

/*
 * Sends all steps, one Sync, and reads every result: one round trip. On
 * failure rolls back an open transaction (one more round trip) or closes a
 * connection that is broken or in a state we cannot vouch for.
 */
enum dw_err dw_pg_run_pipeline(struct dw_store *store, const char *what, struct dw_pg_step *steps,
                               size_t n)
{
    PGconn *conn = store->conn;
    char first_error[DW_PG_ERRTEXT_MAX] = "";
    bool failed = false;
    int64_t deadline_ms = dw_now_ms() + store->timeout_ms;

    store->timed_out = false;
    if (!conn)
        return dw_pg_fail(store, what, "not connected", false);
    if (PQstatus(conn) != CONNECTION_OK)
        return dw_pg_fail(store, what, PQerrorMessage(conn), true);
    if (!PQenterPipelineMode(conn))
        return dw_pg_fail(store, what, PQerrorMessage(conn), true);

    store->round_trips++;
    for (size_t i = 0; i < n; i++) {
        if (!send_step(conn, &steps[i]))
            return dw_pg_fail(store, what, PQerrorMessage(conn), true);
    }
    if (!PQpipelineSync(conn))
        return dw_pg_fail(store, what, PQerrorMessage(conn), true);

    for (size_t i = 0; i < n; i++) {
        if (!wait_input(store, deadline_ms)) {
            dw_pg_clear_results(steps, n);
            store->timed_out = true;
            return dw_pg_fail(store, what, "no answer within the time limit", true);
        }
        PGresult *res = PQgetResult(conn);
        if (!res || PQstatus(conn) != CONNECTION_OK) {
            PQclear(res);
            dw_pg_clear_results(steps, n);
            return dw_pg_fail(store, what, first_error[0] ? first_error : PQerrorMessage(conn),
                              true);
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_TUPLES_OK) {
            steps[i].result = res;
        } else if (st == PGRES_COMMAND_OK) {
            PQclear(res);
        } else {
            if (!failed && st != PGRES_PIPELINE_ABORTED)
                dw_pg_describe_error(res, conn, first_error, sizeof(first_error));
            failed = true;
            PQclear(res);
        }
        /* Each statement's results end with a NULL. */
        res = PQgetResult(conn);
        if (res) {
            PQclear(res);
            dw_pg_clear_results(steps, n);
            return dw_pg_fail(store, what, "unexpected extra result", true);
        }
    }
    PGresult *sync = PQgetResult(conn);
    bool synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced || !PQexitPipelineMode(conn)) {
        dw_pg_clear_results(steps, n);
        return dw_pg_fail(store, what, first_error[0] ? first_error : PQerrorMessage(conn), true);
    }
    if (!failed) {
        dw_backoff_succeeded(&store->reconnect);
        return DW_OK;
    }

    dw_pg_clear_results(steps, n);
    PGTransactionStatusType ts = PQtransactionStatus(conn);
    if (ts == PQTRANS_INERROR || ts == PQTRANS_INTRANS) {
        store->round_trips++;
        PGresult *res = PQexec(conn, "ROLLBACK");
        bool rolled_back = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!rolled_back)
            return dw_pg_fail(store, what, first_error, true);
    } else if (ts != PQTRANS_IDLE) {
        return dw_pg_fail(store, what, first_error, true);
    }
    return dw_pg_fail(store, what, first_error, false);
}

/* ---- the public calls --------------------------------------------------- */

static struct dw_store *new_store(const char *dsn, struct dw_log *log)
{
    struct dw_store *store = dw_xcalloc(1, sizeof(*store));
    store->dsn = dw_xstrdup(dsn);
    dw_store_set_owner(store, "", 600000);
    store->log = log;
    /* Seeded per store and process, so workers that lost PostgreSQL
     * together do not all come back in the same millisecond. */
    dw_backoff_init(&store->reconnect, RECONNECT_MIN_MS, RECONNECT_MAX_MS,
                    (uint64_t)(uintptr_t)store ^ ((uint64_t)getpid() << 32) ^
                        (uint64_t)dw_now_ms());
    return store;
}

enum dw_err dw_store_create(const char *dsn, struct dw_log *log, struct dw_store **out,
                            char *errbuf, size_t errlen)
{
    *out = NULL;
    if (!dsn) {
        if (errbuf)
            dw_snprintf(errbuf, errlen, "no PostgreSQL DSN");
        return DW_ERR_INVALID;
    }
    struct dw_store *store = new_store(dsn, log);
    enum dw_err err = dw_pg_connect(store, errbuf, errlen);
    if (err) {
        dw_store_destroy(store);
        return err;
    }
    store->ever_connected = true;
    *out = store;
    return DW_OK;
}

struct dw_store *dw_store_create_offline(const char *dsn, struct dw_log *log)
{
    return dsn ? new_store(dsn, log) : NULL;
}

void dw_store_destroy(struct dw_store *store)
{
    if (!store)
        return;
    dw_pg_close(store);
    free(store->dsn);
    free(store);
}

bool dw_store_connected(struct dw_store *store)
{
    return store && store->conn && PQstatus(store->conn) == CONNECTION_OK;
}

enum dw_err dw_store_reconnect(struct dw_store *store)
{
    if (!dw_backoff_due(&store->reconnect, dw_now_ms()))
        return DW_ERR_DB; /* waiting out the policy: no attempt */
    enum dw_err err = dw_pg_connect(store, NULL, 0);
    if (err) {
        dw_pg_note_failure(store, false); /* timed from the attempt's end */
        return err;
    }
    dw_log_write(store->log, DW_LOG_INFO, DW_LOG_NOCTX, "store: %s to PostgreSQL",
                 store->ever_connected ? "reconnected" : "connected");
    store->ever_connected = true;
    /* A session that was set up is set up again at once, so the next call
     * is one round trip; a new store's is set up by its first call (or by
     * dw_store_migrate, before which the statements cannot be prepared). */
    if (!store->had_session)
        return DW_OK;
    return dw_store_prepare_session(store, "preparing statements");
}

int64_t dw_store_retry_at(const struct dw_store *store)
{
    return store ? dw_backoff_next_at(&store->reconnect) : 0;
}

enum dw_err dw_store_ping(struct dw_store *store)
{
    struct dw_pg_step step = dw_pg_sql_step("SELECT 1");
    enum dw_err err = dw_pg_run_pipeline(store, "ping", &step, 1);
    dw_pg_clear_results(&step, 1);
    return err;
}

void dw_store_set_timeout(struct dw_store *store, int timeout_ms)
{
    store->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
}

bool dw_store_timed_out(const struct dw_store *store)
{
    return store && store->timed_out;
}

uint64_t dw_store_round_trips(const struct dw_store *store)
{
    return store ? store->round_trips : 0;
}
