/*
 * The SQL of the status store's prepared statements, and the session set-up
 * that prepares them on each new connection. The queries that use them are
 * in store.c; the tables they touch are made by schema.c (docs/schema.md).
 *
 * Threads: the table is constant; dw_store_prepare_session runs on the
 * store's thread.
 *
 * Invariants:
 * - Every statement names its event_id(s): the store can be sharded by it.
 * - The WHERE clauses of the upserts call the SQL functions of migration 1,
 *   which encode dw_chstatus_may_replace and dw_overall_may_replace exactly.
 * - Values only ever travel as parameters, never inside SQL text.
 */
#include "store_internal.h"

/* Applied on connect unless the DSN, role or database already set one. */
#define STATEMENT_TIMEOUT "30s"

#define LOAD_COLUMNS                                                                               \
    "SELECT d.event_id, d.overall_status, d.total_channels, d.success_count, d.failure_count,\n"   \
    "       floor(extract(epoch FROM d.started_at) * 1000)::int8,\n"                               \
    "       floor(extract(epoch FROM d.completed_at) * 1000)::int8,\n"                             \
    "       c.channel, c.status, c.attempts, c.error_code, c.error_message, c.external_id,\n"      \
    "       c.distribution_url, floor(extract(epoch FROM c.updated_at) * 1000)::int8,\n"           \
    "       c.step_id, floor(extract(epoch FROM c.step_id_at) * 1000)::int8\n"                     \
    "  FROM distribution d\n"                                                                      \
    "  LEFT JOIN channel_status c ON c.event_id = d.event_id\n"

const struct dw_store_statement dw_store_statements[DW_STMT_COUNT] = {
    [DW_STMT_BEGIN_DISTRIBUTION] =
        {"dw_begin_distribution",
         "INSERT INTO distribution AS d\n"
         "       (event_id, overall_status, total_channels, started_at, updated_at)\n"
         "SELECT r.event_id, 'IN_PROGRESS', r.total_channels, now(), now()\n"
         "  FROM unnest($1::text[], $2::int[]) AS r(event_id, total_channels)\n"
         "ON CONFLICT (event_id) DO UPDATE\n"
         "   SET overall_status = 'IN_PROGRESS', total_channels = EXCLUDED.total_channels,\n"
         "       updated_at = EXCLUDED.updated_at\n"
         " WHERE dw_overall_may_replace(d.overall_status, 'IN_PROGRESS')"},
    [DW_STMT_BEGIN_CHANNELS] = {"dw_begin_channels",
                                "INSERT INTO channel_status (event_id, channel, status, attempts, "
                                "updated_at)\n"
                                "SELECT r.event_id, r.channel, 'PENDING', 0, now()\n"
                                "  FROM unnest($1::text[], $2::text[]) AS r(event_id, channel)\n"
                                "ON CONFLICT (event_id, channel) DO NOTHING"},
    [DW_STMT_SAVE_RESULTS] =
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
    [DW_STMT_FINISH] =
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
    [DW_STMT_LOAD_MANY] =
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
    [DW_STMT_LOAD_ONE] = {"dw_load_one", LOAD_COLUMNS " WHERE d.event_id = $1"},
    /* A begin takes the events' schedule rows for its owner ($2), unless
     * another owner's claim still runs; the read-back says which. Rows a
     * concurrent claim has locked are waited for, then re-checked. */
    [DW_STMT_REDRIVE_LOCK] =
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
    [DW_STMT_REDRIVE_SCHEDULE] =
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
    [DW_STMT_REDRIVE_CLEAR] = {"dw_redrive_clear",
                               "DELETE FROM redrive WHERE event_id = ANY($1::text[])"},
    /* The one scan: due rows oldest first, like a queue. */
    [DW_STMT_REDRIVE_CLAIM] =
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
    [DW_STMT_REDRIVE_DUE] =
        {"dw_redrive_due",
         "SELECT count(*),\n"
         "       coalesce(floor(extract(epoch FROM now() - min(next_at)) * 1000)::int8, 0)\n"
         "  FROM redrive\n"
         " WHERE next_at <= now() AND (claimed_until IS NULL OR claimed_until < now())"},
    [DW_STMT_REDRIVE_READ] =
        {"dw_redrive_read",
         "SELECT floor(extract(epoch FROM next_at) * 1000)::int8, channels::text[]\n"
         "  FROM redrive WHERE event_id = $1"},
    /* An upsert, not UPDATE ... FROM unnest(...): that is a join, and the
     * generic plan a session makes while channel_status is empty (a young
     * database, before autoanalyze) hash-joins a scan of the whole table,
     * kept for every later call: 12 ms a call, 60 % of PostgreSQL's time
     * in a 20,000-request bench. An upsert finds each row through the
     * primary key (its arbiter) whatever the plan. Begin made the row
     * (PENDING); were it gone, the PENDING row begin would make is what
     * comes back. updated_at stays: this is no status change. */
    [DW_STMT_SAVE_STEPS] =
        {"dw_save_steps",
         "INSERT INTO channel_status AS c\n"
         "       (event_id, channel, status, attempts, step_id, step_id_at, updated_at)\n"
         "SELECT r.event_id, r.channel, 'PENDING', 0, r.step_id, now(), now()\n"
         "  FROM unnest($1::text[], $2::text[], $3::text[]) AS r(event_id, channel, step_id)\n"
         "ON CONFLICT (event_id, channel) DO UPDATE\n"
         "   SET step_id = EXCLUDED.step_id, step_id_at = EXCLUDED.step_id_at"},
};

enum dw_err dw_store_prepare_session(struct dw_store *store, const char *what)
{
    if (!store->conn)
        return dw_pg_fail(store, what, "not connected", false);
    if (store->prepared)
        return DW_OK;

    struct dw_pg_step steps[2 + DW_STMT_COUNT];
    size_t n = 0;
    /* A half-done earlier attempt may have left some statements behind. */
    steps[n++] = dw_pg_sql_step("DEALLOCATE ALL");
    steps[n] = dw_pg_sql_step("SELECT set_config('statement_timeout', $1, false)"
                              " WHERE current_setting('statement_timeout') IN ('0', '0ms')");
    steps[n].nparams = 1;
    steps[n++].values[0] = STATEMENT_TIMEOUT;
    for (int i = 0; i < DW_STMT_COUNT; i++)
        steps[n++] = (struct dw_pg_step){.kind = DW_PG_STEP_PREPARE,
                                         .name = dw_store_statements[i].name,
                                         .sql = dw_store_statements[i].sql};

    enum dw_err err = dw_pg_run_pipeline(store, "preparing statements", steps, n);
    dw_pg_clear_results(steps, n);
    if (!err)
        store->prepared = store->had_session = true;
    return err;
}