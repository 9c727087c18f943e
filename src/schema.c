/*
 * The status store's schema: the migrations, applied in order, each once,
 * and dw_store_migrate, which applies those not yet recorded in
 * schema_version. docs/schema.md describes the tables and how to add a
 * migration.
 *
 * Threads: runs on the store's thread; several workers may migrate at once:
 * each migration runs in its own transaction under an advisory lock, so it
 * is applied exactly once.
 *
 * Invariants:
 * - A migration that has shipped is never edited: a new one is appended.
 * - After a failure the connection is idle (rolled back) or closed.
 * - Migrations use the simple protocol, outside any pipeline.
 */
#include <stdlib.h>

#include <libpq-fe.h>

#include "store_internal.h"

/* pg_advisory_xact_lock key of the migrations: "dwschema" in ASCII. */
#define MIGRATION_LOCK_KEY "7239381135834490221"

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
    char text[DW_PG_ERRTEXT_MAX];
    if (res)
        dw_pg_describe_error(res, store->conn, text, sizeof(text));
    else
        dw_pg_copy_message(text, sizeof(text), PQerrorMessage(store->conn));
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
        dw_pg_note_failure(store, false);
        if (PQstatus(store->conn) != CONNECTION_OK) {
            dw_pg_close(store);
        } else if (PQtransactionStatus(store->conn) != PQTRANS_IDLE) {
            store->round_trips++;
            PGresult *res = PQexec(store->conn, "ROLLBACK");
            if (PQresultStatus(res) != PGRES_COMMAND_OK)
                dw_pg_close(store);
            PQclear(res);
        }
    }
    return err;
}

enum dw_err dw_store_migrate(struct dw_store *store, char *errbuf, size_t errlen)
{
    char scratch[DW_PG_ERRTEXT_MAX];
    if (!errbuf) {
        errbuf = scratch;
        errlen = sizeof(scratch);
    }
    if (!store->conn || PQstatus(store->conn) != CONNECTION_OK) {
        dw_snprintf(errbuf, errlen, "schema migration failed: not connected to PostgreSQL");
        return dw_pg_fail(store, "schema migration", "not connected", store->conn != NULL);
    }
    for (size_t i = 0; i < DW_ARRAY_LEN(migrations); i++) {
        enum dw_err err = apply_migration(store, (int)i + 1, errbuf, errlen);
        if (err)
            return err;
    }
    /* Statements prepared before the migration may refer to old tables. */
    store->prepared = false;
    enum dw_err err = dw_store_prepare_session(store, "preparing statements");
    if (err)
        dw_snprintf(errbuf, errlen, "preparing statements failed after the schema migration");
    return err;
}
