/*
 * The status store: one libpq connection, its prepared statements, the
 * schema migrations, and the batch upserts and reads of store.h. The schema,
 * the status rules in SQL and the round-trip budget are described in
 * docs/schema.md.
 *
 * Threads: a dw_store is used by one thread at a time (the caller
 * serialises); stores share nothing, so each thread may own one.
 *
 * Invariants:
 * - Between calls the connection is either gone (conn NULL, after a failure
 *   that could not be cleaned up; dw_store_connected is false) or idle: out
 *   of pipeline mode and outside any transaction.
 * - Each batch call is one pipeline: BEGIN, set-based statements (one per
 *   table, all rows as arrays), the read-back, COMMIT, Sync. That is one
 *   network round trip. Any failure rolls the whole batch back and returns
 *   DW_ERR_DB; the caller retries the batch.
 * - Rows of one batch that hit the same key are merged here first, applying
 *   the same rules in the same order the database would (ON CONFLICT DO
 *   UPDATE may not touch a row twice in one statement), and rows are sent
 *   sorted by key so concurrent batches lock rows in the same order.
 * - The WHERE clauses of the upserts call the SQL functions of migration 1,
 *   which encode dw_chstatus_may_replace and dw_overall_may_replace exactly.
 * - Values only ever travel as parameters (array literals in text format),
 *   never inside SQL text.
 */
#include "dw/store.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "dw/request.h"
#include "dw/utf8.h"

/* Largest array parameter we build (a batch of thousands of rows is far below). */
#define ARRAY_CAP (64u * 1024 * 1024)

/* pg_advisory_xact_lock key of the migrations: "dwschema" in ASCII. */
#define MIGRATION_LOCK_KEY "7239381135834490221"

/* Applied on connect unless the DSN, role or database already set one. */
#define STATEMENT_TIMEOUT "30s"

#define ERRTEXT_MAX 512

struct dw_store {
    char *dsn;
    struct dw_log *log; /* borrowed, may be NULL */
    PGconn *conn;       /* NULL after a failure that closed it */
    bool prepared;      /* session set up: statement_timeout and statements */
    int timeout_ms;     /* client-side limit of one call's round trip; 0: none */
    bool timed_out;     /* the last call failed by passing timeout_ms */
    uint64_t round_trips;
    char owner[128];   /* claimed_by of this store's re-drive claims */
    char lease_ms[16]; /* a claim's length, as a parameter */
};

/*
 * Migrations, applied in order, each once, each in its own transaction
 * under the advisory lock. Version = index + 1. Never edit one that has
 * shipped: append a new one (docs/schema.md says how).
 */
struct migration {
    const char *description;
    const char *sql;
};

static const struct migration migrations[] = {
    {"status rules, distribution and channel_status",
     /* The rank functions mirror status.c; test_store.c checks every pair. */
     "CREATE FUNCTION dw_chstatus_rank(status text) RETURNS int\n"
     "    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$\n"
     "    SELECT CASE status WHEN 'PENDING' THEN 0 WHEN 'IN_PROGRESS' THEN 1\n"
     "                       WHEN 'FAILED' THEN 2 WHEN 'SUCCESS' THEN 3 END $$;\n"
     "CREATE FUNCTION dw_chstatus_may_replace(stored text, incoming text) RETURNS boolean\n"
     "    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$\n"
     "    SELECT stored <> 'SUCCESS'\n"
     "       AND dw_chstatus_rank(incoming) >= dw_chstatus_rank(stored) $$;\n"
     "CREATE FUNCTION dw_overall_final_rank(status text) RETURNS int\n"
     "    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$\n"
     "    SELECT CASE status WHEN 'FAILED' THEN 1 WHEN 'PARTIAL_FAILURE' THEN 2\n"
     "                       WHEN 'COMPLETED' THEN 3 ELSE 0 END $$;\n"
     "CREATE FUNCTION dw_overall_is_final(status text) RETURNS boolean\n"
     "    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$\n"
     "    SELECT dw_overall_final_rank(status) > 0 $$;\n"
     "CREATE FUNCTION dw_overall_may_replace(stored text, incoming text) RETURNS boolean\n"
     "    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$\n"
     "    SELECT CASE WHEN incoming = 'PENDING' THEN stored = 'PENDING'\n"
     "                WHEN dw_overall_final_rank(stored) = 0 THEN true\n"
     "                ELSE dw_overall_final_rank(incoming) > dw_overall_final_rank(stored)\n"
     "           END $$;\n"
     "CREATE TABLE distribution (\n"
     "    event_id       text        NOT NULL,\n"
     "    overall_status text        NOT NULL CHECK (overall_status IN\n"
     "        ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'PARTIAL_FAILURE', 'FAILED')),\n"
     "    total_channels int         NOT NULL DEFAULT 0 CHECK (total_channels >= 0),\n"
     "    success_count  int         NOT NULL DEFAULT 0 CHECK (success_count >= 0),\n"
     "    failure_count  int         NOT NULL DEFAULT 0 CHECK (failure_count >= 0),\n"
     "    started_at     timestamptz NOT NULL DEFAULT now(),\n"
     "    completed_at   timestamptz,\n"
     "    updated_at     timestamptz NOT NULL DEFAULT now(),\n"
     "    PRIMARY KEY (event_id),\n"
     "    CONSTRAINT distribution_completed_when_final CHECK\n"
     "        ((completed_at IS NULL) = (overall_status IN ('PENDING', 'IN_PROGRESS')))\n"
     ");\n"
     "CREATE TABLE channel_status (\n"
     "    event_id         text        NOT NULL,\n"
     "    channel          text        NOT NULL,\n"
     "    status           text        NOT NULL CHECK (status IN\n"
     "        ('PENDING', 'IN_PROGRESS', 'SUCCESS', 'FAILED')),\n"
     "    attempts         int         NOT NULL DEFAULT 0 CHECK (attempts >= 0),\n"
     "    error_code       text,\n"
     "    error_message    text,\n"
     "    external_id      text,\n"
     "    distribution_url text,\n"
     "    updated_at       timestamptz NOT NULL DEFAULT now(),\n"
     "    PRIMARY KEY (event_id, channel)\n"
     ");\n"},
    {"redrive: the automatic re-drive schedule",
     /* One row per event with a planned re-drive (CONTRACT 2.4), keyed by
      * event_id alone so it shards with the rest. The request is kept as
      * JSON (dw_request_encode) so a re-drive needs no Kafka record. */
     "CREATE TABLE redrive (\n"
     "    event_id      text        NOT NULL,\n"
     "    next_at       timestamptz NOT NULL,\n"
     "    tier          int         NOT NULL CHECK (tier >= 0),\n"
     "    channels      text[]      NOT NULL,\n"
     "    request       text        NOT NULL,\n"
     "    claimed_by    text,\n"
     "    claimed_until timestamptz,\n"
     "    scheduled_at  timestamptz NOT NULL DEFAULT now(),\n"
     "    PRIMARY KEY (event_id)\n"
     ");\n"
     "CREATE INDEX redrive_next_at ON redrive (next_at);\n"},
    {"channel_status: the id a first step returned (Instagram's container)",
     /* Stored before the next step is sent, so any later attempt (a retry,
      * a re-drive, after a crash) can go on from it (docs/schema.md). */
     "ALTER TABLE channel_status ADD COLUMN step_id text,\n"
     "                           ADD COLUMN step_id_at timestamptz;\n"},
};

/* The prepared statements; every one names its event_id(s). */
enum stmt_id {
    STMT_BEGIN_DISTRIBUTION,
    STMT_BEGIN_CHANNELS,
    STMT_SAVE_RESULTS,
    STMT_FINISH,
    STMT_LOAD_MANY,
    STMT_LOAD_ONE,
    STMT_REDRIVE_LOCK,
    STMT_REDRIVE_SCHEDULE,
    STMT_REDRIVE_CLEAR,
    STMT_REDRIVE_CLAIM,
    STMT_REDRIVE_DUE,
    STMT_REDRIVE_READ,
    STMT_SAVE_STEPS,
    STMT_COUNT
};

/* Columns of the load statements (LOAD_COLUMNS below). */
enum load_col {
    COL_EVENT_ID,
    COL_OVERALL,
    COL_TOTAL,
    COL_SUCCESS,
    COL_FAILURE,
    COL_STARTED,
    COL_COMPLETED,
    COL_CHANNEL,
    COL_STATUS,
    COL_ATTEMPTS,
    COL_ERROR_CODE,
    COL_ERROR_MESSAGE,
    COL_EXTERNAL_ID,
    COL_URL,
    COL_UPDATED,
    COL_STEP_ID,
    COL_STEP_AT,
};

#define LOAD_COLUMNS                                                                               \
    "SELECT d.event_id, d.overall_status, d.total_channels, d.success_count, d.failure_count,\n"   \
    "       floor(extract(epoch FROM d.started_at) * 1000)::int8,\n"                               \
    "       floor(extract(epoch FROM d.completed_at) * 1000)::int8,\n"                             \
    "       c.channel, c.status, c.attempts, c.error_code, c.error_message, c.external_id,\n"      \
    "       c.distribution_url, floor(extract(epoch FROM c.updated_at) * 1000)::int8,\n"           \
    "       c.step_id, floor(extract(epoch FROM c.step_id_at) * 1000)::int8\n"                     \
    "  FROM distribution d\n"                                                                      \
    "  LEFT JOIN channel_status c ON c.event_id = d.event_id\n"

static const struct {
    const char *name;
    const char *sql;
} statements[STMT_COUNT] = {
    [STMT_BEGIN_DISTRIBUTION] =
        {"dw_begin_distribution",
         "INSERT INTO distribution AS d\n"
         "       (event_id, overall_status, total_channels, started_at, updated_at)\n"
         "SELECT r.event_id, 'IN_PROGRESS', r.total_channels, now(), now()\n"
         "  FROM unnest($1::text[], $2::int[]) AS r(event_id, total_channels)\n"
         "ON CONFLICT (event_id) DO UPDATE\n"
         "   SET overall_status = 'IN_PROGRESS', total_channels = EXCLUDED.total_channels,\n"
         "       updated_at = EXCLUDED.updated_at\n"
         " WHERE dw_overall_may_replace(d.overall_status, 'IN_PROGRESS')"},
    [STMT_BEGIN_CHANNELS] = {"dw_begin_channels",
                             "INSERT INTO channel_status (event_id, channel, status, attempts, "
                             "updated_at)\n"
                             "SELECT r.event_id, r.channel, 'PENDING', 0, now()\n"
                             "  FROM unnest($1::text[], $2::text[]) AS r(event_id, channel)\n"
                             "ON CONFLICT (event_id, channel) DO NOTHING"},
    [STMT_SAVE_RESULTS] =
        {"dw_save_results",
         "INSERT INTO channel_status AS c\n"
         "       (event_id, channel, status, attempts, error_code, error_message, external_id,\n"
         "        distribution_url, updated_at)\n"
         "SELECT r.event_id, r.channel, r.status, r.attempts, r.error_code, r.error_message,\n"
         "       r.external_id, r.distribution_url, now()\n"
         "  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],\n"
         "              $7::text[], $8::text[])\n"
         "       AS r(event_id, channel, status, attempts, error_code, error_message,\n"
         "            external_id, distribution_url)\n"
         "ON CONFLICT (event_id, channel) DO UPDATE\n"
         "   SET status = EXCLUDED.status, attempts = c.attempts + EXCLUDED.attempts,\n"
         "       error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,\n"
         "       external_id = EXCLUDED.external_id,\n"
         "       distribution_url = EXCLUDED.distribution_url, updated_at = EXCLUDED.updated_at\n"
         " WHERE dw_chstatus_may_replace(c.status, EXCLUDED.status)"},
    [STMT_FINISH] =
        {"dw_finish",
         "INSERT INTO distribution AS d\n"
         "       (event_id, overall_status, total_channels, success_count, failure_count,\n"
         "        started_at, completed_at, updated_at)\n"
         "SELECT r.event_id, r.overall_status, r.total_channels, r.success_count,\n"
         "       r.failure_count, now(),\n"
         "       CASE WHEN dw_overall_is_final(r.overall_status) THEN now() END, now()\n"
         "  FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[])\n"
         "       AS r(event_id, overall_status, total_channels, success_count, failure_count)\n"
         "ON CONFLICT (event_id) DO UPDATE\n"
         "   SET overall_status = EXCLUDED.overall_status,\n"
         "       total_channels = EXCLUDED.total_channels,\n"
         "       success_count = EXCLUDED.success_count, failure_count = EXCLUDED.failure_count,\n"
         "       completed_at = EXCLUDED.completed_at, updated_at = EXCLUDED.updated_at\n"
         " WHERE dw_overall_may_replace(d.overall_status, EXCLUDED.overall_status)"},
    /* Driven from the batch's ids, one primary-key lookup each: the
     * OFFSET 0 fences keep the planner from turning the lookups into scans
     * of whole tables, which a generic plan made on a young database (no
     * statistics yet) would otherwise keep until autoanalyze runs. */
    [STMT_LOAD_MANY] =
        {"dw_load_many",
         "SELECT d.event_id, d.overall_status, d.total_channels, d.success_count,\n"
         "       d.failure_count, floor(extract(epoch FROM d.started_at) * 1000)::int8,\n"
         "       floor(extract(epoch FROM d.completed_at) * 1000)::int8,\n"
         "       c.channel, c.status, c.attempts, c.error_code, c.error_message, c.external_id,\n"
         "       c.distribution_url, floor(extract(epoch FROM c.updated_at) * 1000)::int8,\n"
         "       c.step_id, floor(extract(epoch FROM c.step_id_at) * 1000)::int8\n"
         "  FROM unnest($1::text[]) AS k(event_id)\n"
         "  CROSS JOIN LATERAL (SELECT * FROM distribution\n"
         "                       WHERE event_id = k.event_id OFFSET 0) d\n"
         "  LEFT JOIN LATERAL (SELECT * FROM channel_status\n"
         "                      WHERE event_id = k.event_id OFFSET 0) c ON true"},
    [STMT_LOAD_ONE] = {"dw_load_one", LOAD_COLUMNS " WHERE d.event_id = $1"},
    /* A begin takes the events' schedule rows for its owner ($2), unless
     * another owner's claim still runs; the read-back says which. Rows a
     * concurrent claim has locked are waited for, then re-checked. */
    [STMT_REDRIVE_LOCK] =
        {"dw_redrive_lock",
         "WITH locked AS (\n"
         "  UPDATE redrive r\n"
         "     SET claimed_by = $2, claimed_until = now() + $3::int8 * interval '1 millisecond'\n"
         "   WHERE r.event_id = ANY($1::text[])\n"
         "     AND (r.claimed_until IS NULL OR r.claimed_until < now() OR r.claimed_by = $2)\n"
         "  RETURNING r.event_id)\n"
         "SELECT r.event_id, l.event_id IS NOT NULL, r.tier\n"
         "  FROM redrive r LEFT JOIN locked l ON l.event_id = r.event_id\n"
         " WHERE r.event_id = ANY($1::text[])"},
    [STMT_REDRIVE_SCHEDULE] =
        {"dw_redrive_schedule",
         "INSERT INTO redrive AS d\n"
         "       (event_id, next_at, tier, channels, request, claimed_by, claimed_until,\n"
         "        scheduled_at)\n"
         "SELECT r.event_id, to_timestamp(r.next_at_ms / 1000.0), r.tier,\n"
         "       string_to_array(r.channels, ','), r.request, NULL, NULL, now()\n"
         "  FROM unnest($1::text[], $2::int8[], $3::int[], $4::text[], $5::text[])\n"
         "       AS r(event_id, next_at_ms, tier, channels, request)\n"
         "ON CONFLICT (event_id) DO UPDATE\n"
         "   SET next_at = EXCLUDED.next_at, tier = EXCLUDED.tier, channels = EXCLUDED.channels,\n"
         "       request = EXCLUDED.request, claimed_by = NULL, claimed_until = NULL,\n"
         "       scheduled_at = EXCLUDED.scheduled_at"},
    [STMT_REDRIVE_CLEAR] = {"dw_redrive_clear",
                            "DELETE FROM redrive WHERE event_id = ANY($1::text[])"},
    /* The one scan: due rows oldest first, like a queue. */
    [STMT_REDRIVE_CLAIM] =
        {"dw_redrive_claim",
         "UPDATE redrive r\n"
         "   SET claimed_by = $1, claimed_until = now() + $2::int8 * interval '1 millisecond'\n"
         "  FROM (SELECT event_id FROM redrive\n"
         "         WHERE next_at <= now()\n"
         "           AND (claimed_until IS NULL OR claimed_until < now())\n"
         "           AND NOT (channels && $3::text[])\n"
         "         ORDER BY next_at LIMIT $4::int\n"
         "           FOR UPDATE SKIP LOCKED) c\n"
         " WHERE r.event_id = c.event_id\n"
         "RETURNING r.event_id, r.tier, r.request"},
    [STMT_REDRIVE_DUE] =
        {"dw_redrive_due",
         "SELECT count(*),\n"
         "       coalesce(floor(extract(epoch FROM now() - min(next_at)) * 1000)::int8, 0)\n"
         "  FROM redrive\n"
         " WHERE next_at <= now() AND (claimed_until IS NULL OR claimed_until < now())"},
    [STMT_REDRIVE_READ] =
        {"dw_redrive_read",
         "SELECT floor(extract(epoch FROM next_at) * 1000)::int8, channels::text[]\n"
         "  FROM redrive WHERE event_id = $1"},
    [STMT_SAVE_STEPS] =
        {"dw_save_steps",
         "UPDATE channel_status c SET step_id = r.step_id, step_id_at = now()\n"
         "  FROM unnest($1::text[], $2::text[], $3::text[]) AS r(event_id, channel, step_id)\n"
         " WHERE c.event_id = r.event_id AND c.channel = r.channel"},
};

/* ---- errors and the connection ---------------------------------------- */

/* Copies a libpq message without its trailing newline. */
static void copy_message(char *dst, size_t dstlen, const char *msg)
{
    if (!dstlen)
        return;
    dw_strlcpy(dst, msg && *msg ? msg : "unknown error", dstlen);
    size_t len = strlen(dst);
    while (len && (dst[len - 1] == '\n' || dst[len - 1] == '\r'))
        dst[--len] = '\0';
}

/* "message (detail) [SQLSTATE]" of a failed result, on one line. */
static void describe_error(const PGresult *res, PGconn *conn, char *dst, size_t dstlen)
{
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!primary) {
        copy_message(dst, dstlen,
                     PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res)
                                                  : PQerrorMessage(conn));
        return;
    }
    dw_snprintf(dst, dstlen, "%s%s%s%s [%s]", primary, detail ? " (" : "", detail ? detail : "",
                detail ? ")" : "", state ? state : "no SQLSTATE");
}

static void close_conn(struct dw_store *store)
{
    if (store->conn)
        PQfinish(store->conn);
    store->conn = NULL;
    store->prepared = false;
}

/* Logs a failure and, when the connection cannot be trusted any more, closes
 * it so that no call ever finds it mid-pipeline or mid-transaction. */
static enum dw_err fail(struct dw_store *store, const char *what, const char *msg, bool close)
{
    char text[ERRTEXT_MAX];
    copy_message(text, sizeof(text), msg);
    dw_log_write(store->log, DW_LOG_ERROR, DW_LOG_NOCTX, "store: %s failed: %s%s", what, text,
                 close ? " (connection closed)" : "");
    if (close)
        close_conn(store);
    return DW_ERR_DB;
}

static void on_notice(void *arg, const char *message)
{
    struct dw_store *store = arg;
    char text[ERRTEXT_MAX];
    copy_message(text, sizeof(text), message);
    dw_log_write(store->log, DW_LOG_DEBUG, DW_LOG_NOCTX, "store: server notice: %s", text);
}

static enum dw_err connect_db(struct dw_store *store, char *errbuf, size_t errlen)
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

    close_conn(store);
    PGconn *conn = PQconnectdbParams(keywords, values, 1);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        char text[ERRTEXT_MAX];
        copy_message(text, sizeof(text), conn ? PQerrorMessage(conn) : "out of memory");
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

enum step_kind { STEP_SQL, STEP_PREPARE, STEP_EXEC };

/* One message of a pipeline. */
struct step {
    enum step_kind kind;
    const char *sql;  /* STEP_SQL, STEP_PREPARE */
    const char *name; /* STEP_PREPARE, STEP_EXEC: statement name */
    int nparams;
    const char *values[8];
    PGresult *result; /* out: rows of a statement that returns rows; caller clears */
};

static struct step sql_step(const char *sql)
{
    return (struct step){.kind = STEP_SQL, .sql = sql};
}

static struct step exec_step(enum stmt_id id)
{
    return (struct step){.kind = STEP_EXEC, .name = statements[id].name};
}

static void clear_results(struct step *steps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PQclear(steps[i].result);
        steps[i].result = NULL;
    }
}

static bool send_step(PGconn *conn, const struct step *s)
{
    switch (s->kind) {
    case STEP_SQL:
        return PQsendQueryParams(conn, s->sql, s->nparams, NULL, s->values, NULL, NULL, 0);
    case STEP_PREPARE:
        return PQsendPrepare(conn, s->name, s->sql, 0, NULL);
    case STEP_EXEC:
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
static enum dw_err run_pipeline(struct dw_store *store, const char *what, struct step *steps,
                                size_t n)
{
    PGconn *conn = store->conn;
    char first_error[ERRTEXT_MAX] = "";
    bool failed = false;
    int64_t deadline_ms = dw_now_ms() + store->timeout_ms;

    store->timed_out = false;
    if (!conn)
        return fail(store, what, "not connected", false);
    if (PQstatus(conn) != CONNECTION_OK)
        return fail(store, what, PQerrorMessage(conn), true);
    if (!PQenterPipelineMode(conn))
        return fail(store, what, PQerrorMessage(conn), true);

    store->round_trips++;
    for (size_t i = 0; i < n; i++) {
        if (!send_step(conn, &steps[i]))
            return fail(store, what, PQerrorMessage(conn), true);
    }
    if (!PQpipelineSync(conn))
        return fail(store, what, PQerrorMessage(conn), true);

    for (size_t i = 0; i < n; i++) {
        if (!wait_input(store, deadline_ms)) {
            clear_results(steps, n);
            store->timed_out = true;
            return fail(store, what, "no answer within the time limit", true);
        }
        PGresult *res = PQgetResult(conn);
        if (!res || PQstatus(conn) != CONNECTION_OK) {
            PQclear(res);
            clear_results(steps, n);
            return fail(store, what, first_error[0] ? first_error : PQerrorMessage(conn), true);
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_TUPLES_OK) {
            steps[i].result = res;
        } else if (st == PGRES_COMMAND_OK) {
            PQclear(res);
        } else {
            if (!failed && st != PGRES_PIPELINE_ABORTED)
                describe_error(res, conn, first_error, sizeof(first_error));
            failed = true;
            PQclear(res);
        }
        /* Each statement's results end with a NULL. */
        res = PQgetResult(conn);
        if (res) {
            PQclear(res);
            clear_results(steps, n);
            return fail(store, what, "unexpected extra result", true);
        }
    }
    PGresult *sync = PQgetResult(conn);
    bool synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced || !PQexitPipelineMode(conn)) {
        clear_results(steps, n);
        return fail(store, what, first_error[0] ? first_error : PQerrorMessage(conn), true);
    }
    if (!failed)
        return DW_OK;

    clear_results(steps, n);
    PGTransactionStatusType ts = PQtransactionStatus(conn);
    if (ts == PQTRANS_INERROR || ts == PQTRANS_INTRANS) {
        store->round_trips++;
        PGresult *res = PQexec(conn, "ROLLBACK");
        bool rolled_back = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!rolled_back)
            return fail(store, what, first_error, true);
    } else if (ts != PQTRANS_IDLE) {
        return fail(store, what, first_error, true);
    }
    return fail(store, what, first_error, false);
}

/* Sets the session up once per connection: statement_timeout (unless one is
 * configured already) and the prepared statements. One round trip. */
static enum dw_err ensure_session(struct dw_store *store, const char *what)
{
    if (!store->conn)
        return fail(store, what, "not connected", false);
    if (store->prepared)
        return DW_OK;

    struct step steps[2 + STMT_COUNT];
    size_t n = 0;
    /* A half-done earlier attempt may have left some statements behind. */
    steps[n++] = sql_step("DEALLOCATE ALL");
    steps[n] = sql_step("SELECT set_config('statement_timeout', $1, false)"
                        " WHERE current_setting('statement_timeout') IN ('0', '0ms')");
    steps[n].nparams = 1;
    steps[n++].values[0] = STATEMENT_TIMEOUT;
    for (int i = 0; i < STMT_COUNT; i++)
        steps[n++] = (struct step){
            .kind = STEP_PREPARE, .name = statements[i].name, .sql = statements[i].sql};

    enum dw_err err = run_pipeline(store, "preparing statements", steps, n);
    clear_results(steps, n);
    if (!err)
        store->prepared = true;
    return err;
}

/* ---- parameters --------------------------------------------------------- */

/* A PostgreSQL array literal in text format, built with a sticky error. */
struct pgarray {
    struct dw_buf buf;
    size_t count;
    bool full;
};

static void put(struct pgarray *a, const char *p, size_t len)
{
    if (!a->full && dw_buf_append(&a->buf, p, len) != DW_OK)
        a->full = true;
}

static void array_init(struct pgarray *a)
{
    dw_buf_init(&a->buf, ARRAY_CAP);
    a->count = 0;
    a->full = false;
    put(a, "{", 1);
}

/* Closes the literal; NULL when it outgrew its cap. */
static const char *array_end(struct pgarray *a)
{
    put(a, "}", 1);
    return a->full ? NULL : a->buf.data;
}

static void array_cleanup(struct pgarray *a)
{
    dw_buf_cleanup(&a->buf);
}

/*
 * Appends one element: NULL for a NULL or empty string, else the string
 * quoted, with '"' and '\' escaped. Invalid UTF-8 (say, from a channel's
 * error text) becomes '?': one bad byte must not fail a whole batch forever.
 */
static void array_add_text(struct pgarray *a, const char *s)
{
    if (a->count++)
        put(a, ",", 1);
    if (!s || !*s) {
        put(a, "NULL", 4);
        return;
    }
    put(a, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + strlen(s);
    while (*p) {
        /* Plain ASCII goes in one piece: these texts are mostly ids and
         * URLs, and a put per byte was most of the cost of a batch. */
        const unsigned char *run = p;
        while (*p && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            put(a, (const char *)run, (size_t)(p - run));
        if (!*p)
            break;
        size_t n = dw_utf8_seq_len((const char *)p, (size_t)(end - p));
        if (!n)
            put(a, "?", 1);
        else if (*p == '"' || *p == '\\') {
            put(a, "\\", 1);
            put(a, (const char *)p, 1);
        } else
            put(a, (const char *)p, n);
        p += n ? n : 1;
    }
    put(a, "\"", 1);
}

static void array_add_int(struct pgarray *a, int v)
{
    char text[16];
    dw_snprintf(text, sizeof(text), "%d", v);
    if (a->count++)
        put(a, ",", 1);
    put(a, text, strlen(text));
}

static void array_add_i64(struct pgarray *a, int64_t v)
{
    char text[24];
    dw_snprintf(text, sizeof(text), "%lld", (long long)v);
    if (a->count++)
        put(a, ",", 1);
    put(a, text, strlen(text));
}

/* "KAKAO,NAVER": the wire names of the channels in mask, in enum order. */
static void channel_list(unsigned mask, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        if (!(mask & (1u << ch)))
            continue;
        const char *name = dw_channel_name((enum dw_channel_id)ch);
        dw_snprintf(buf + used, len - used, "%s%s", used ? "," : "", name);
        used += strlen(buf + used);
    }
}

static bool event_id_ok(const char *event_id)
{
    return event_id && *event_id && dw_utf8_valid(event_id);
}

/* ---- merging a batch by key -------------------------------------------- */

/* One input row: its key and where it came from. */
struct key {
    const char *event_id;
    int channel; /* 0 where the key is the event alone */
    size_t index;
};

static int compare_keys(const void *a, const void *b)
{
    const struct key *x = a, *y = b;
    int c = strcmp(x->event_id, y->event_id);
    if (c)
        return c;
    if (x->channel != y->channel)
        return x->channel < y->channel ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Keys sorted, and the start of each run of equal keys (plus an end mark). */
struct groups {
    struct key *keys;
    size_t *start;
    size_t count;
};

static void groups_build(struct groups *g, struct key *keys, size_t n)
{
    qsort(keys, n, sizeof(*keys), compare_keys);
    g->keys = keys;
    g->start = dw_xcalloc(n + 1, sizeof(*g->start));
    g->count = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(keys[i].event_id, keys[i - 1].event_id) != 0 ||
            keys[i].channel != keys[i - 1].channel)
            g->start[g->count++] = i;
    }
    g->start[g->count] = n;
}

static void groups_cleanup(struct groups *g)
{
    free(g->start);
    g->start = NULL;
}

/* The group of an event (event-only keys), or -1. */
static long groups_find(const struct groups *g, const char *event_id)
{
    size_t lo = 0, hi = g->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(event_id, g->keys[g->start[mid]].event_id);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

/* ---- reading rows back -------------------------------------------------- */

static int64_t get_i64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static int get_int(const PGresult *res, int row, int col)
{
    int64_t v = get_i64(res, row, col);
    return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int)v;
}

static void get_text(const PGresult *res, int row, int col, char *dst, size_t dstlen)
{
    dw_strlcpy(dst, PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col), dstlen);
}

/* Fills st from one row of a load statement (distribution columns, and the
 * channel columns when the row has a channel). */
static void fill_row(struct dw_store *store, struct dw_status *st, const PGresult *res, int row)
{
    if (!dw_overall_parse(PQgetvalue(res, row, COL_OVERALL), &st->overall))
        st->overall = DW_OVERALL_PENDING;
    st->total_channels = get_int(res, row, COL_TOTAL);
    st->success_count = get_int(res, row, COL_SUCCESS);
    st->failure_count = get_int(res, row, COL_FAILURE);
    st->started_at_ms = get_i64(res, row, COL_STARTED);
    st->completed_at_ms = get_i64(res, row, COL_COMPLETED);
    if (PQgetisnull(res, row, COL_CHANNEL))
        return;

    const char *name = PQgetvalue(res, row, COL_CHANNEL);
    int id = dw_channel_from_name(name);
    if (id < 0 || id >= DW_CHANNEL_COUNT) {
        struct dw_log_ctx ctx = {st->event_id, name, -1, -1};
        dw_log_write(store->log, DW_LOG_WARN, ctx, "store: unknown channel in channel_status");
        return;
    }
    struct dw_channel_state *cs = &st->channels[id];
    cs->present = true;
    if (!dw_chstatus_parse(PQgetvalue(res, row, COL_STATUS), &cs->status))
        cs->status = DW_CH_PENDING;
    cs->attempts = get_int(res, row, COL_ATTEMPTS);
    cs->error = DW_EC_NONE;
    if (!PQgetisnull(res, row, COL_ERROR_CODE) &&
        !dw_errcode_parse(PQgetvalue(res, row, COL_ERROR_CODE), &cs->error))
        cs->error = DW_EC_NONE;
    get_text(res, row, COL_ERROR_MESSAGE, cs->error_message, sizeof(cs->error_message));
    get_text(res, row, COL_EXTERNAL_ID, cs->external_id, sizeof(cs->external_id));
    get_text(res, row, COL_URL, cs->url, sizeof(cs->url));
    cs->updated_at_ms = get_i64(res, row, COL_UPDATED);
    get_text(res, row, COL_STEP_ID, cs->step_id, sizeof(cs->step_id));
    cs->step_id_at_ms = get_i64(res, row, COL_STEP_AT);
}

/*
 * Fills targets[i] (by original item index) for every item from the rows of
 * a load statement: each group's first item from the rows, the others
 * copied from it.
 */
static void fill_statuses(struct dw_store *store, const struct groups *g, const PGresult *res,
                          struct dw_status *const *targets)
{
    for (size_t i = 0; i < g->count; i++) {
        struct dw_status *st = targets[g->keys[g->start[i]].index];
        memset(st, 0, sizeof(*st));
        dw_strlcpy(st->event_id, g->keys[g->start[i]].event_id, sizeof(st->event_id));
    }
    bool *seen = dw_xcalloc(g->count, sizeof(*seen));
    for (int row = 0; row < PQntuples(res); row++) {
        long i = groups_find(g, PQgetvalue(res, row, COL_EVENT_ID));
        if (i < 0)
            continue;
        seen[i] = true;
        fill_row(store, targets[g->keys[g->start[i]].index], res, row);
    }
    for (size_t i = 0; i < g->count; i++) {
        const struct dw_status *first = targets[g->keys[g->start[i]].index];
        if (!seen[i]) {
            struct dw_log_ctx ctx = {first->event_id, NULL, -1, -1};
            dw_log_write(store->log, DW_LOG_WARN, ctx, "store: no distribution row after write");
        }
        for (size_t k = g->start[i] + 1; k < g->start[i + 1]; k++)
            *targets[g->keys[k].index] = *first;
    }
    free(seen);
}

/* ---- the public calls --------------------------------------------------- */

enum dw_err dw_store_create(const char *dsn, struct dw_log *log, struct dw_store **out,
                            char *errbuf, size_t errlen)
{
    *out = NULL;
    if (!dsn) {
        if (errbuf)
            dw_snprintf(errbuf, errlen, "no PostgreSQL DSN");
        return DW_ERR_INVALID;
    }
    struct dw_store *store = dw_xcalloc(1, sizeof(*store));
    store->dsn = dw_xstrdup(dsn);
    dw_store_set_owner(store, "", 600000);
    store->log = log;
    enum dw_err err = connect_db(store, errbuf, errlen);
    if (err) {
        dw_store_destroy(store);
        return err;
    }
    *out = store;
    return DW_OK;
}

void dw_store_destroy(struct dw_store *store)
{
    if (!store)
        return;
    close_conn(store);
    free(store->dsn);
    free(store);
}

bool dw_store_connected(struct dw_store *store)
{
    return store && store->conn && PQstatus(store->conn) == CONNECTION_OK;
}

enum dw_err dw_store_reconnect(struct dw_store *store)
{
    enum dw_err err = connect_db(store, NULL, 0);
    if (err)
        return err;
    dw_log_write(store->log, DW_LOG_INFO, DW_LOG_NOCTX, "store: reconnected to PostgreSQL");
    return ensure_session(store, "preparing statements");
}

enum dw_err dw_store_ping(struct dw_store *store)
{
    struct step step = sql_step("SELECT 1");
    enum dw_err err = run_pipeline(store, "ping", &step, 1);
    clear_results(&step, 1);
    return err;
}

/* ---- the DSN, before any connection ------------------------------------ */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Adds text[0..len) and, when it holds valid %XX escapes, its decoded form. */
static void add_password(char ***out, size_t *n, const char *text, size_t len)
{
    if (!len)
        return;
    *out = dw_xrealloc(*out, (*n + 3) * sizeof(**out));
    char *raw = dw_xmalloc(len + 1);
    memcpy(raw, text, len);
    raw[len] = '\0';
    (*out)[(*n)++] = raw;
    if (memchr(raw, '%', len)) {
        char *dec = dw_xmalloc(len + 1);
        size_t j = 0;
        bool ok = true;
        for (size_t i = 0; i < len && ok; i++) {
            if (raw[i] != '%') {
                dec[j++] = raw[i];
            } else if (i + 2 < len && hex_digit(raw[i + 1]) >= 0 && hex_digit(raw[i + 2]) >= 0) {
                dec[j++] = (char)(hex_digit(raw[i + 1]) * 16 + hex_digit(raw[i + 2]));
                i += 2;
            } else {
                ok = false;
            }
        }
        dec[j] = '\0';
        if (ok && j)
            (*out)[(*n)++] = dec;
        else
            free(dec);
    }
    (*out)[*n] = NULL;
}

/* A DSN libpq cannot parse: the password found by its shape, so that
 * libpq's own error text (which quotes the bad part) cannot carry it. */
static void password_by_shape(const char *dsn, char ***out, size_t *n)
{
    const char *scheme = strstr(dsn, "://");
    if (scheme) {
        const char *user = scheme + 3;
        const char *end = user + strcspn(user, "/?#");
        const char *at = NULL;
        for (const char *p = user; p < end; p++)
            if (*p == '@')
                at = p; /* the last '@' before the host */
        const char *colon = at ? memchr(user, ':', (size_t)(at - user)) : NULL;
        if (colon)
            add_password(out, n, colon + 1, (size_t)(at - colon - 1));
    }
    /* password=... as a keyword or a URI parameter. */
    const char *stop = scheme ? " \t&#" : " \t";
    for (const char *p = strstr(dsn, "password"); p; p = strstr(p + 1, "password")) {
        const char *v = p + 8;
        while (*v == ' ')
            v++;
        if (*v != '=')
            continue;
        v++;
        while (*v == ' ')
            v++;
        if (*v == '\'' && !scheme) {
            const char *q = strchr(v + 1, '\'');
            add_password(out, n, v + 1, q ? (size_t)(q - v - 1) : strlen(v + 1));
        } else {
            add_password(out, n, v, strcspn(v, stop));
        }
    }
}

char **dw_store_dsn_passwords(const char *dsn)
{
    char **out = dw_xcalloc(1, sizeof(*out));
    size_t n = 0;
    if (!dsn)
        return out;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &err);
    if (opts) {
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (strcmp(o->keyword, "password") == 0 && o->val)
                add_password(&out, &n, o->val, strlen(o->val));
        }
        PQconninfoFree(opts);
    } else {
        PQfreemem(err); /* it may quote the password: never shown */
    }
    /* Also by shape: the parsed value is decoded, the raw form may be in
     * an error text too. */
    password_by_shape(dsn, &out, &n);
    return out;
}

void dw_store_passwords_free(char **passwords)
{
    for (size_t i = 0; passwords && passwords[i]; i++)
        free(passwords[i]);
    free(passwords);
}

bool dw_store_dsn_plaintext_possible(const char *dsn, char *why, size_t whylen)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &err);
    if (!opts) {
        PQfreemem(err);
        return false; /* the connection will fail and say why */
    }
    const char *sslmode = NULL;
    const char *host = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "sslmode") == 0)
            sslmode = o->val;
        else if (strcmp(o->keyword, "host") == 0)
            host = o->val;
    }
    if (!sslmode || !*sslmode)
        sslmode = getenv("PGSSLMODE"); /* libpq's fallback */
    bool weak = !sslmode || !*sslmode || strcmp(sslmode, "disable") == 0 ||
                strcmp(sslmode, "allow") == 0 || strcmp(sslmode, "prefer") == 0;
    /* A Unix socket never goes over a network. */
    bool local = host && host[0] == '/';
    if (weak && !local)
        dw_snprintf(why, whylen, "sslmode is %s%s", sslmode && *sslmode ? sslmode : "not set",
                    sslmode && *sslmode ? "" : " (libpq's default: prefer)");
    PQconninfoFree(opts);
    return weak && !local;
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

/* One simple-protocol command of a migration; fills errbuf on failure. */
static bool migrate_exec(struct dw_store *store, const char *sql, int nparams,
                         const char *const *values, PGresult **rows, char *errbuf, size_t errlen)
{
    store->round_trips++;
    PGresult *res = nparams ? PQexecParams(store->conn, sql, nparams, NULL, values, NULL, NULL, 0)
                            : PQexec(store->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (rows)
            *rows = res;
        else
            PQclear(res);
        return true;
    }
    char text[ERRTEXT_MAX];
    if (res)
        describe_error(res, store->conn, text, sizeof(text));
    else
        copy_message(text, sizeof(text), PQerrorMessage(store->conn));
    dw_snprintf(errbuf, errlen, "schema migration failed: %s", text);
    PQclear(res);
    return false;
}

/* Applies migration `version` unless it is recorded; one transaction under
 * the advisory lock, so concurrent workers apply it exactly once. */
static enum dw_err apply_migration(struct dw_store *store, int version, char *errbuf, size_t errlen)
{
    const struct migration *m = &migrations[version - 1];
    char version_text[16];
    dw_snprintf(version_text, sizeof(version_text), "%d", version);
    const char *lock[] = {MIGRATION_LOCK_KEY};
    const char *which[] = {version_text};
    const char *record[] = {version_text, m->description};
    PGresult *rows = NULL;
    enum dw_err err = DW_ERR_DB;

    if (!migrate_exec(store, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL, errbuf, errlen))
        goto out;
    if (!migrate_exec(store, "SELECT pg_advisory_xact_lock($1::int8)", 1, lock, NULL, errbuf,
                      errlen))
        goto out;
    if (!migrate_exec(store,
                      "CREATE TABLE IF NOT EXISTS schema_version (\n"
                      "    version     int         PRIMARY KEY,\n"
                      "    description text        NOT NULL,\n"
                      "    applied_at  timestamptz NOT NULL DEFAULT now()\n"
                      ")",
                      0, NULL, NULL, errbuf, errlen))
        goto out;
    if (!migrate_exec(store, "SELECT 1 FROM schema_version WHERE version = $1::int", 1, which,
                      &rows, errbuf, errlen))
        goto out;
    if (PQntuples(rows) == 0) {
        if (!migrate_exec(store, m->sql, 0, NULL, NULL, errbuf, errlen))
            goto out;
        if (!migrate_exec(store,
                          "INSERT INTO schema_version (version, description) VALUES ($1::int, $2)",
                          2, record, NULL, errbuf, errlen))
            goto out;
        dw_log_write(store->log, DW_LOG_INFO, DW_LOG_NOCTX,
                     "store: applied schema migration %d (%s)", version, m->description);
    }
    if (!migrate_exec(store, "COMMIT", 0, NULL, NULL, errbuf, errlen))
        goto out;
    err = DW_OK;
out:
    PQclear(rows);
    if (err) {
        dw_log_write(store->log, DW_LOG_ERROR, DW_LOG_NOCTX, "store: %s", errbuf ? errbuf : "");
        if (PQstatus(store->conn) != CONNECTION_OK) {
            close_conn(store);
        } else if (PQtransactionStatus(store->conn) != PQTRANS_IDLE) {
            store->round_trips++;
            PGresult *res = PQexec(store->conn, "ROLLBACK");
            if (PQresultStatus(res) != PGRES_COMMAND_OK)
                close_conn(store);
            PQclear(res);
        }
    }
    return err;
}

enum dw_err dw_store_migrate(struct dw_store *store, char *errbuf, size_t errlen)
{
    char scratch[ERRTEXT_MAX];
    if (!errbuf) {
        errbuf = scratch;
        errlen = sizeof(scratch);
    }
    if (!store->conn || PQstatus(store->conn) != CONNECTION_OK) {
        dw_snprintf(errbuf, errlen, "schema migration failed: not connected to PostgreSQL");
        return fail(store, "schema migration", "not connected", store->conn != NULL);
    }
    for (size_t i = 0; i < DW_ARRAY_LEN(migrations); i++) {
        enum dw_err err = apply_migration(store, (int)i + 1, errbuf, errlen);
        if (err)
            return err;
    }
    /* Statements prepared before the migration may refer to old tables. */
    store->prepared = false;
    enum dw_err err = ensure_session(store, "preparing statements");
    if (err)
        dw_snprintf(errbuf, errlen, "preparing statements failed after the schema migration");
    return err;
}

/* The begin's schedule rows (STMT_REDRIVE_LOCK: event_id, mine, tier)
 * into every item of their event. */
static void fill_locks(const struct groups *g, const PGresult *res, struct dw_store_begin *items)
{
    for (size_t i = 0; i < g->count; i++) {
        for (size_t k = g->start[i]; k < g->start[i + 1]; k++) {
            struct dw_store_begin *item = &items[g->keys[k].index];
            item->redrive_row = item->redrive_busy = false;
            item->redrive_tier = 0;
        }
    }
    for (int row = 0; res && row < PQntuples(res); row++) {
        long i = groups_find(g, PQgetvalue(res, row, 0));
        if (i < 0)
            continue;
        for (size_t k = g->start[i]; k < g->start[i + 1]; k++) {
            struct dw_store_begin *item = &items[g->keys[k].index];
            item->redrive_row = true;
            item->redrive_busy = PQgetvalue(res, row, 1)[0] != 't';
            item->redrive_tier = get_int(res, row, 2);
        }
    }
}

enum dw_err dw_store_begin(struct dw_store *store, struct dw_store_begin *items, size_t n)
{
    if (n == 0)
        return DW_OK;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].req || !event_id_ok(items[i].req->event_id))
            return DW_ERR_INVALID;
    }

    struct key *keys = dw_xcalloc(n, sizeof(*keys));
    struct dw_status **targets = dw_xcalloc(n, sizeof(*targets));
    for (size_t i = 0; i < n; i++) {
        keys[i] = (struct key){items[i].req->event_id, 0, i};
        targets[i] = &items[i].status;
    }
    struct groups g;
    groups_build(&g, keys, n);

    /* One distribution row per event (the last request's channel count); a
     * channel row for every channel any of its requests asked for. */
    struct pgarray events, totals, channel_events, channels;
    array_init(&events);
    array_init(&totals);
    array_init(&channel_events);
    array_init(&channels);
    for (size_t i = 0; i < g.count; i++) {
        const char *event_id = keys[g.start[i]].event_id;
        const struct dw_request *last = items[keys[g.start[i + 1] - 1].index].req;
        unsigned wanted = 0;
        for (size_t k = g.start[i]; k < g.start[i + 1]; k++)
            wanted |= items[keys[k].index].req->channels;
        array_add_text(&events, event_id);
        array_add_int(&totals, last->channel_count);
        for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
            if (wanted & (1u << ch)) {
                array_add_text(&channel_events, event_id);
                array_add_text(&channels, dw_channel_name((enum dw_channel_id)ch));
            }
        }
    }

    enum dw_err err = DW_ERR_NOMEM;
    struct step steps[6];
    steps[0] = sql_step("BEGIN ISOLATION LEVEL READ COMMITTED");
    steps[1] = exec_step(STMT_BEGIN_DISTRIBUTION);
    steps[1].nparams = 2;
    steps[1].values[0] = array_end(&events);
    steps[1].values[1] = array_end(&totals);
    steps[2] = exec_step(STMT_BEGIN_CHANNELS);
    steps[2].nparams = 2;
    steps[2].values[0] = array_end(&channel_events);
    steps[2].values[1] = array_end(&channels);
    steps[3] = exec_step(STMT_LOAD_MANY);
    steps[3].nparams = 1;
    steps[3].values[0] = steps[1].values[0];
    steps[4] = exec_step(STMT_REDRIVE_LOCK);
    steps[4].nparams = 3;
    steps[4].values[0] = steps[1].values[0];
    steps[4].values[1] = store->owner;
    steps[4].values[2] = store->lease_ms;
    steps[5] = sql_step("COMMIT");
    if (!steps[1].values[0] || !steps[1].values[1] || !steps[2].values[0] || !steps[2].values[1])
        goto out;

    err = ensure_session(store, "begin");
    if (err)
        goto out;
    err = run_pipeline(store, "begin", steps, DW_ARRAY_LEN(steps));
    if (err)
        goto out;
    fill_statuses(store, &g, steps[3].result, targets);
    fill_locks(&g, steps[4].result, items);
    clear_results(steps, DW_ARRAY_LEN(steps));
out:
    array_cleanup(&channels);
    array_cleanup(&channel_events);
    array_cleanup(&totals);
    array_cleanup(&events);
    groups_cleanup(&g);
    free(targets);
    free(keys);
    return err;
}

/* One batch of results merged by key into the SAVE_RESULTS columns. */
struct save_batch {
    struct key *keys;
    struct groups g;
    struct pgarray cols[8];
};

/* One batch of finishes merged by event into the FINISH columns. */
struct finish_batch {
    struct key *keys;
    struct dw_status **targets;
    struct groups g;
    struct pgarray cols[5];
    struct pgarray schedule[5]; /* STMT_REDRIVE_SCHEDULE's columns */
    struct pgarray clear;       /* STMT_REDRIVE_CLEAR's event ids */
    size_t nschedule, nclear;
};

static void save_batch_build(struct save_batch *b, const struct dw_store_result *items, size_t n)
{
    b->keys = dw_xcalloc(n ? n : 1, sizeof(*b->keys));
    for (size_t i = 0; i < n; i++)
        b->keys[i] = (struct key){items[i].event_id, (int)items[i].channel, i};
    groups_build(&b->g, b->keys, n);
    for (size_t c = 0; c < DW_ARRAY_LEN(b->cols); c++)
        array_init(&b->cols[c]);
    for (size_t i = 0; i < b->g.count; i++) {
        /* Results for one key within the batch are applied in order, as the
         * database would apply them across batches: a refused one drops out,
         * an accepted one replaces the row and adds its attempts. */
        const struct dw_store_result *row = &items[b->keys[b->g.start[i]].index];
        int attempts = row->attempts;
        for (size_t k = b->g.start[i] + 1; k < b->g.start[i + 1]; k++) {
            const struct dw_store_result *next = &items[b->keys[k].index];
            if (dw_chstatus_may_replace(row->status, next->status)) {
                row = next;
                attempts += next->attempts;
            }
        }
        array_add_text(&b->cols[0], row->event_id);
        array_add_text(&b->cols[1], dw_channel_name(row->channel));
        array_add_text(&b->cols[2], dw_chstatus_name(row->status));
        array_add_int(&b->cols[3], attempts);
        array_add_text(&b->cols[4], dw_errcode_name(row->error));
        array_add_text(&b->cols[5], row->error_message);
        array_add_text(&b->cols[6], row->external_id);
        array_add_text(&b->cols[7], row->url);
    }
}

static void save_batch_cleanup(struct save_batch *b)
{
    for (size_t c = DW_ARRAY_LEN(b->cols); c-- > 0;)
        array_cleanup(&b->cols[c]);
    groups_cleanup(&b->g);
    free(b->keys);
}

static void finish_batch_build(struct finish_batch *b, struct dw_store_finish *items, size_t n)
{
    b->keys = dw_xcalloc(n ? n : 1, sizeof(*b->keys));
    b->targets = dw_xcalloc(n ? n : 1, sizeof(*b->targets));
    for (size_t i = 0; i < n; i++) {
        b->keys[i] = (struct key){items[i].event_id, 0, i};
        b->targets[i] = &items[i].status;
    }
    groups_build(&b->g, b->keys, n);
    for (size_t c = 0; c < DW_ARRAY_LEN(b->cols); c++)
        array_init(&b->cols[c]);
    for (size_t c = 0; c < DW_ARRAY_LEN(b->schedule); c++)
        array_init(&b->schedule[c]);
    array_init(&b->clear);
    b->nschedule = b->nclear = 0;
    for (size_t i = 0; i < b->g.count; i++) {
        /* The schedule follows the event's latest drive. */
        const struct dw_store_finish *last = &items[b->keys[b->g.start[i + 1] - 1].index];
        if (last->redrive == DW_STORE_REDRIVE_SCHEDULE) {
            char names[128];
            channel_list(last->redrive_channels, names, sizeof(names));
            array_add_text(&b->schedule[0], last->event_id);
            array_add_i64(&b->schedule[1], last->next_at_ms);
            array_add_int(&b->schedule[2], last->tier);
            array_add_text(&b->schedule[3], names);
            array_add_text(&b->schedule[4], last->request_json ? last->request_json : "{}");
            b->nschedule++;
        } else if (last->redrive == DW_STORE_REDRIVE_CLEAR) {
            array_add_text(&b->clear, last->event_id);
            b->nclear++;
        }
    }
    for (size_t i = 0; i < b->g.count; i++) {
        /* As for results: apply one event's finishes in order. */
        const struct dw_store_finish *row = &items[b->keys[b->g.start[i]].index];
        for (size_t k = b->g.start[i] + 1; k < b->g.start[i + 1]; k++) {
            const struct dw_store_finish *next = &items[b->keys[k].index];
            if (dw_overall_may_replace(row->overall, next->overall))
                row = next;
        }
        array_add_text(&b->cols[0], row->event_id);
        array_add_text(&b->cols[1], dw_overall_name(row->overall));
        array_add_int(&b->cols[2], row->total_channels);
        array_add_int(&b->cols[3], row->success_count);
        array_add_int(&b->cols[4], row->failure_count);
    }
}

static void finish_batch_cleanup(struct finish_batch *b)
{
    array_cleanup(&b->clear);
    for (size_t c = DW_ARRAY_LEN(b->schedule); c-- > 0;)
        array_cleanup(&b->schedule[c]);
    for (size_t c = DW_ARRAY_LEN(b->cols); c-- > 0;)
        array_cleanup(&b->cols[c]);
    groups_cleanup(&b->g);
    free(b->targets);
    free(b->keys);
}

/* Sets step's parameters to the finished array literals; false when one
 * could not be made (out of memory). */
static bool set_columns(struct step *step, struct pgarray *cols, size_t ncols)
{
    step->nparams = (int)ncols;
    for (size_t c = 0; c < ncols; c++) {
        step->values[c] = array_end(&cols[c]);
        if (!step->values[c])
            return false;
    }
    return true;
}

enum dw_err dw_store_save_and_finish(struct dw_store *store, const struct dw_store_result *results,
                                     size_t nres, struct dw_store_finish *finishes, size_t nfin)
{
    if (nres == 0 && nfin == 0)
        return DW_OK;
    for (size_t i = 0; i < nres; i++) {
        const struct dw_store_result *r = &results[i];
        if (!event_id_ok(r->event_id) || (unsigned)r->channel >= DW_CHANNEL_COUNT ||
            (unsigned)r->status >= DW_CHSTATUS_COUNT || (unsigned)r->error >= DW_EC_COUNT)
            return DW_ERR_INVALID;
    }
    for (size_t i = 0; i < nfin; i++) {
        if (!event_id_ok(finishes[i].event_id) || (unsigned)finishes[i].overall >= DW_OVERALL_COUNT)
            return DW_ERR_INVALID;
    }

    struct save_batch save;
    struct finish_batch fin;
    save_batch_build(&save, results, nres);
    finish_batch_build(&fin, finishes, nfin);

    /* BEGIN, the results, then the overall statuses (which count the
     * results just written) and the read-back, COMMIT: one round trip. */
    const char *what = nfin ? "finish" : "saving results";
    enum dw_err err = DW_ERR_NOMEM;
    struct step steps[7];
    size_t n = 0, load = 0;
    steps[n++] = sql_step("BEGIN ISOLATION LEVEL READ COMMITTED");
    if (nres) {
        steps[n] = exec_step(STMT_SAVE_RESULTS);
        if (!set_columns(&steps[n++], save.cols, DW_ARRAY_LEN(save.cols)))
            goto out;
    }
    if (nfin) {
        steps[n] = exec_step(STMT_FINISH);
        if (!set_columns(&steps[n], fin.cols, DW_ARRAY_LEN(fin.cols)))
            goto out;
        const char *event_ids = steps[n++].values[0];
        load = n;
        steps[n] = exec_step(STMT_LOAD_MANY);
        steps[n].nparams = 1;
        steps[n++].values[0] = event_ids;
        if (fin.nschedule) {
            steps[n] = exec_step(STMT_REDRIVE_SCHEDULE);
            if (!set_columns(&steps[n++], fin.schedule, DW_ARRAY_LEN(fin.schedule)))
                goto out;
        }
        if (fin.nclear) {
            steps[n] = exec_step(STMT_REDRIVE_CLEAR);
            if (!set_columns(&steps[n++], &fin.clear, 1))
                goto out;
        }
    }
    steps[n++] = sql_step("COMMIT");

    err = ensure_session(store, what);
    if (err)
        goto out;
    err = run_pipeline(store, what, steps, n);
    if (err)
        goto out;
    if (nfin)
        fill_statuses(store, &fin.g, steps[load].result, fin.targets);
    clear_results(steps, n);
out:
    finish_batch_cleanup(&fin);
    save_batch_cleanup(&save);
    return err;
}

enum dw_err dw_store_save_results(struct dw_store *store, const struct dw_store_result *items,
                                  size_t n)
{
    return dw_store_save_and_finish(store, items, n, NULL, 0);
}

enum dw_err dw_store_finish(struct dw_store *store, struct dw_store_finish *items, size_t n)
{
    return dw_store_save_and_finish(store, NULL, 0, items, n);
}

/* The schedule row (next_at ms, channels as a text[] literal) gives each
 * listed channel not yet SUCCESS its next attempt. */
static void fill_next_attempt(struct dw_status *st, const PGresult *res)
{
    int64_t next_at = get_i64(res, 0, 0);
    const char *list = PQgetvalue(res, 0, 1); /* "{KAKAO,NAVER}" */
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        struct dw_channel_state *cs = &st->channels[ch];
        const char *name = dw_channel_name((enum dw_channel_id)ch);
        size_t len = strlen(name);
        bool listed = false;
        for (const char *p = strstr(list, name); p && !listed; p = strstr(p + 1, name))
            listed = (p[-1] == '{' || p[-1] == ',') && (p[len] == '}' || p[len] == ',');
        if (listed && cs->present && cs->status != DW_CH_SUCCESS)
            cs->next_attempt_ms = next_at;
    }
}

enum dw_err dw_store_save_steps(struct dw_store *store, const struct dw_store_step *items, size_t n)
{
    if (n == 0)
        return DW_OK;
    struct pgarray cols[3];
    for (size_t c = 0; c < DW_ARRAY_LEN(cols); c++)
        array_init(&cols[c]);
    enum dw_err err = DW_ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        if (!event_id_ok(items[i].event_id) || (unsigned)items[i].channel >= DW_CHANNEL_COUNT ||
            !items[i].step_id || !*items[i].step_id)
            goto out;
        array_add_text(&cols[0], items[i].event_id);
        array_add_text(&cols[1], dw_channel_name(items[i].channel));
        array_add_text(&cols[2], items[i].step_id);
    }
    struct step steps[3];
    steps[0] = sql_step("BEGIN ISOLATION LEVEL READ COMMITTED");
    steps[1] = exec_step(STMT_SAVE_STEPS);
    steps[2] = sql_step("COMMIT");
    err = DW_ERR_NOMEM;
    if (!set_columns(&steps[1], cols, DW_ARRAY_LEN(cols)))
        goto out;
    err = ensure_session(store, "saving step ids");
    if (err)
        goto out;
    err = run_pipeline(store, "saving step ids", steps, DW_ARRAY_LEN(steps));
    if (!err)
        clear_results(steps, DW_ARRAY_LEN(steps));
out:
    for (size_t c = DW_ARRAY_LEN(cols); c-- > 0;)
        array_cleanup(&cols[c]);
    return err;
}

void dw_store_set_owner(struct dw_store *store, const char *owner, int lease_ms)
{
    dw_strlcpy(store->owner, owner ? owner : "", sizeof(store->owner));
    dw_snprintf(store->lease_ms, sizeof(store->lease_ms), "%d", lease_ms);
}

void dw_store_claimed_free(struct dw_store_claimed *items, size_t n)
{
    for (size_t i = 0; items && i < n; i++)
        free(items[i].request_json);
    free(items);
}

enum dw_err dw_store_redrive_claim(struct dw_store *store, unsigned blocked, int limit,
                                   struct dw_store_claimed **out, size_t *n, int64_t *due,
                                   int64_t *oldest_due_ms)
{
    *out = NULL;
    *n = 0;
    struct pgarray names;
    array_init(&names);
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        if (blocked & (1u << ch))
            array_add_text(&names, dw_channel_name((enum dw_channel_id)ch));
    }
    char limit_text[16];
    dw_snprintf(limit_text, sizeof(limit_text), "%d", limit > 0 ? limit : 0);

    /* The claim commits before the count, so the count leaves out what
     * was just claimed. */
    struct step steps[4];
    steps[0] = sql_step("BEGIN ISOLATION LEVEL READ COMMITTED");
    steps[1] = exec_step(STMT_REDRIVE_CLAIM);
    steps[1].nparams = 4;
    steps[1].values[0] = store->owner;
    steps[1].values[1] = store->lease_ms;
    steps[1].values[2] = array_end(&names);
    steps[1].values[3] = limit_text;
    steps[2] = sql_step("COMMIT");
    steps[3] = exec_step(STMT_REDRIVE_DUE);

    enum dw_err err = DW_ERR_NOMEM;
    if (!steps[1].values[2])
        goto out;
    err = ensure_session(store, "claiming re-drives");
    if (err)
        goto out;
    err = run_pipeline(store, "claiming re-drives", steps, DW_ARRAY_LEN(steps));
    if (err)
        goto out;
    int rows = PQntuples(steps[1].result);
    if (rows > 0) {
        *out = dw_xcalloc((size_t)rows, sizeof(**out));
        for (int row = 0; row < rows; row++) {
            struct dw_store_claimed *c = &(*out)[row];
            get_text(steps[1].result, row, 0, c->event_id, sizeof(c->event_id));
            c->tier = get_int(steps[1].result, row, 1);
            c->request_json = dw_xstrdup(PQgetvalue(steps[1].result, row, 2));
        }
        *n = (size_t)rows;
    }
    *due = get_i64(steps[3].result, 0, 0);
    *oldest_due_ms = get_i64(steps[3].result, 0, 1);
    clear_results(steps, DW_ARRAY_LEN(steps));
out:
    array_cleanup(&names);
    return err;
}

enum dw_err dw_store_read(struct dw_store *store, const char *event_id, struct dw_status *out)
{
    if (!event_id_ok(event_id))
        return DW_ERR_INVALID;

    /* One snapshot for both statements, so a schedule and the statuses it
     * belongs to are read together. */
    struct step steps[4];
    steps[0] = sql_step("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    steps[1] = exec_step(STMT_LOAD_ONE);
    steps[1].nparams = 1;
    steps[1].values[0] = event_id;
    steps[2] = exec_step(STMT_REDRIVE_READ);
    steps[2].nparams = 1;
    steps[2].values[0] = event_id;
    steps[3] = sql_step("COMMIT");

    enum dw_err err = ensure_session(store, "reading status");
    if (err)
        return err;
    err = run_pipeline(store, "reading status", steps, DW_ARRAY_LEN(steps));
    if (err)
        return err;
    if (PQntuples(steps[1].result) == 0) {
        err = DW_ERR_NOT_FOUND;
    } else {
        struct key key = {event_id, 0, 0};
        size_t start[2] = {0, 1};
        struct groups g = {&key, start, 1};
        struct dw_status *targets[1] = {out};
        fill_statuses(store, &g, steps[1].result, targets);
        if (steps[2].result && PQntuples(steps[2].result) == 1)
            fill_next_attempt(out, steps[2].result);
    }
    clear_results(steps, DW_ARRAY_LEN(steps));
    return err;
}
