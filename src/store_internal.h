/*
 * What the files of the status store share, and nobody else includes:
 * the store's state (struct dw_store), the pipeline of libpq messages
 * (pg_pipeline.c), the prepared statements and session set-up
 * (store_sql.c). The public interface is dw/store.h.
 *
 *   pg_pipeline.c  the connection, its reconnect policy, run_pipeline
 *   store_sql.c    the prepared statements' SQL, the session set-up
 *   schema.c       the migrations (dw_store_migrate)
 *   store_dsn.c    the DSN read before any connection
 *   store.c        the batch upserts and reads
 *   pgarray.c      array literals, the parameters of every batch
 *
 * Threads and invariants: those of dw/store.h and store.c.
 */
#ifndef DW_STORE_INTERNAL_H
#define DW_STORE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "dw/backoff.h"
#include "dw/store.h"

/* Longest error text we keep from libpq or the server. */
#define DW_PG_ERRTEXT_MAX 512

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
    /* The reconnect policy: when dw_store_reconnect may try again. Every
     * call that reaches the server feeds it (pg_pipeline.c). */
    struct dw_backoff reconnect;
    bool ever_connected; /* a connection was made once (for the log) */
    bool had_session;    /* the session was set up once: reconnect redoes it */
};

/* ---- pg_pipeline.c ---- */

enum dw_pg_step_kind { DW_PG_STEP_SQL, DW_PG_STEP_PREPARE, DW_PG_STEP_EXEC };

/* One message of a pipeline. */
struct dw_pg_step {
    enum dw_pg_step_kind kind;
    const char *sql;  /* DW_PG_STEP_SQL, DW_PG_STEP_PREPARE */
    const char *name; /* DW_PG_STEP_PREPARE, DW_PG_STEP_EXEC: statement name */
    int nparams;
    const char *values[8];
    PGresult *result; /* out: rows of a statement that returns rows; caller clears */
};

struct dw_pg_step dw_pg_sql_step(const char *sql);
/* Clears the results steps[0..n) hold. */
void dw_pg_clear_results(struct dw_pg_step *steps, size_t n);

/* Copies a libpq message without its trailing newline. */
void dw_pg_copy_message(char *dst, size_t dstlen, const char *msg);
/* "message (detail) [SQLSTATE]" of a failed result, on one line. */
void dw_pg_describe_error(const PGresult *res, PGconn *conn, char *dst, size_t dstlen);
void dw_pg_close(struct dw_store *store);
/* Logs a failure of `what` and returns DW_ERR_DB; with close, closes the
 * connection so no call ever finds it mid-pipeline or mid-transaction. */
enum dw_err dw_pg_fail(struct dw_store *store, const char *what, const char *msg, bool close);
/* A call that reached the server (or tried to) failed: the reconnect
 * policy hears it. lost: a working connection broke (not by the time
 * limit). For failures outside dw_pg_fail (the migrations). */
void dw_pg_note_failure(struct dw_store *store, bool lost);
/* (Re)opens the connection; errbuf may be NULL. */
enum dw_err dw_pg_connect(struct dw_store *store, char *errbuf, size_t errlen);
/* Sends all steps and one Sync, reads every result: one round trip. On
 * failure rolls back or closes the connection, and returns DW_ERR_DB. */
enum dw_err dw_pg_run_pipeline(struct dw_store *store, const char *what, struct dw_pg_step *steps,
                               size_t n);

/* ---- store_sql.c ---- */

/* The prepared statements; every one names its event_id(s). */
enum dw_stmt_id {
    DW_STMT_BEGIN_DISTRIBUTION,
    DW_STMT_BEGIN_CHANNELS,
    DW_STMT_SAVE_RESULTS,
    DW_STMT_FINISH,
    DW_STMT_LOAD_MANY,
    DW_STMT_LOAD_ONE,
    DW_STMT_REDRIVE_LOCK,
    DW_STMT_REDRIVE_SCHEDULE,
    DW_STMT_REDRIVE_CLEAR,
    DW_STMT_REDRIVE_CLAIM,
    DW_STMT_REDRIVE_DUE,
    DW_STMT_REDRIVE_READ,
    DW_STMT_SAVE_STEPS,
    DW_STMT_COUNT
};

/* Columns of the load statements (LOAD_COLUMNS below). */
enum dw_load_col {
    DW_COL_EVENT_ID,
    DW_COL_OVERALL,
    DW_COL_TOTAL,
    DW_COL_SUCCESS,
    DW_COL_FAILURE,
    DW_COL_STARTED,
    DW_COL_COMPLETED,
    DW_COL_CHANNEL,
    DW_COL_STATUS,
    DW_COL_ATTEMPTS,
    DW_COL_ERROR_CODE,
    DW_COL_ERROR_MESSAGE,
    DW_COL_EXTERNAL_ID,
    DW_COL_URL,
    DW_COL_UPDATED,
    DW_COL_STEP_ID,
    DW_COL_STEP_AT,
};

struct dw_store_statement {
    const char *name;
    const char *sql;
};
extern const struct dw_store_statement dw_store_statements[DW_STMT_COUNT];

/* Sets the session up once per connection: statement_timeout (unless one
 * is configured already) and the prepared statements. One round trip. */
enum dw_err dw_store_prepare_session(struct dw_store *store, const char *what);

#endif /* DW_STORE_INTERNAL_H */
