/*
 * The status store's queries: the batch upserts and reads of store.h, built
 * from the prepared statements of store_sql.c and sent through the pipeline
 * of pg_pipeline.c (the connection); schema.c migrates. The schema, the
 * status rules in SQL and the round-trip budget are described in
 * docs/schema.md.
 *
 * Threads: a dw_store is used by one thread at a time (the caller
 * serialises); stores share nothing, so each thread may own one.
 *
 * Invariants:
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

#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "dw/pgarray.h"
#include "dw/request.h"
#include "dw/utf8.h"
#include "store_internal.h"

/* ---- parameters --------------------------------------------------------- */

static struct dw_pg_step exec_step(enum dw_stmt_id id)
{
    return (struct dw_pg_step){.kind = DW_PG_STEP_EXEC, .name = dw_store_statements[id].name};
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

/* Not the eventId rule of the contract (dw/event_id.h, enforced where
 * requests and status reads come in): the store keeps any text key that
 * PostgreSQL can hold, and refuses only what it cannot (empty, or not
 * UTF-8), so its own tests can store hostile keys verbatim. */
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
    if (!dw_overall_parse(PQgetvalue(res, row, DW_COL_OVERALL), &st->overall))
        st->overall = DW_OVERALL_PENDING;
    st->total_channels = get_int(res, row, DW_COL_TOTAL);
    st->success_count = get_int(res, row, DW_COL_SUCCESS);
    st->failure_count = get_int(res, row, DW_COL_FAILURE);
    st->started_at_ms = get_i64(res, row, DW_COL_STARTED);
    st->completed_at_ms = get_i64(res, row, DW_COL_COMPLETED);
    if (PQgetisnull(res, row, DW_COL_CHANNEL))
        return;

    const char *name = PQgetvalue(res, row, DW_COL_CHANNEL);
    int id = dw_channel_from_name(name);
    if (id < 0 || id >= DW_CHANNEL_COUNT) {
        struct dw_log_ctx ctx = {st->event_id, name, -1, -1};
        dw_log_write(store->log, DW_LOG_WARN, ctx, "store: unknown channel in channel_status");
        return;
    }
    struct dw_channel_state *cs = &st->channels[id];
    cs->present = true;
    if (!dw_chstatus_parse(PQgetvalue(res, row, DW_COL_STATUS), &cs->status))
        cs->status = DW_CH_PENDING;
    cs->attempts = get_int(res, row, DW_COL_ATTEMPTS);
    cs->error = DW_EC_NONE;
    if (!PQgetisnull(res, row, DW_COL_ERROR_CODE) &&
        !dw_errcode_parse(PQgetvalue(res, row, DW_COL_ERROR_CODE), &cs->error))
        cs->error = DW_EC_NONE;
    get_text(res, row, DW_COL_ERROR_MESSAGE, cs->error_message, sizeof(cs->error_message));
    get_text(res, row, DW_COL_EXTERNAL_ID, cs->external_id, sizeof(cs->external_id));
    get_text(res, row, DW_COL_URL, cs->url, sizeof(cs->url));
    cs->updated_at_ms = get_i64(res, row, DW_COL_UPDATED);
    get_text(res, row, DW_COL_STEP_ID, cs->step_id, sizeof(cs->step_id));
    cs->step_id_at_ms = get_i64(res, row, DW_COL_STEP_AT);
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
        long i = groups_find(g, PQgetvalue(res, row, DW_COL_EVENT_ID));
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

/* The begin's schedule rows (DW_STMT_REDRIVE_LOCK: event_id, mine, tier)
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
    struct dw_pgarray events, totals, channel_events, channels;
    dw_pgarray_init(&events);
    dw_pgarray_init(&totals);
    dw_pgarray_init(&channel_events);
    dw_pgarray_init(&channels);
    for (size_t i = 0; i < g.count; i++) {
        const char *event_id = keys[g.start[i]].event_id;
        const struct dw_request *last = items[keys[g.start[i + 1] - 1].index].req;
        unsigned wanted = 0;
        for (size_t k = g.start[i]; k < g.start[i + 1]; k++)
            wanted |= items[keys[k].index].req->channels;
        dw_pgarray_add_text(&events, event_id);
        dw_pgarray_add_int(&totals, last->channel_count);
        for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
            if (wanted & (1u << ch)) {
                dw_pgarray_add_text(&channel_events, event_id);
                dw_pgarray_add_text(&channels, dw_channel_name((enum dw_channel_id)ch));
            }
        }
    }

    enum dw_err err = DW_ERR_NOMEM;
    struct dw_pg_step steps[6];
    steps[0] = dw_pg_sql_step("BEGIN ISOLATION LEVEL READ COMMITTED");
    steps[1] = exec_step(DW_STMT_BEGIN_DISTRIBUTION);
    steps[1].nparams = 2;
    steps[1].values[0] = dw_pgarray_end(&events);
    steps[1].values[1] = dw_pgarray_end(&totals);
    steps[2] = exec_step(DW_STMT_BEGIN_CHANNELS);
    steps[2].nparams = 2;
    steps[2].values[0] = dw_pgarray_end(&channel_events);
    steps[2].values[1] = dw_pgarray_end(&channels);
    steps[3] = exec_step(DW_STMT_LOAD_MANY);
    steps[3].nparams = 1;
    steps[3].values[0] = steps[1].values[0];
    steps[4] = exec_step(DW_STMT_REDRIVE_LOCK);
    steps[4].nparams = 3;
    steps[4].values[0] = steps[1].values[0];
    steps[4].values[1] = store->owner;
    steps[4].values[2] = store->lease_ms;
    steps[5] = dw_pg_sql_step("COMMIT");
    if (!steps[1].values[0] || !steps[1].values[1] || !steps[2].values[0] || !steps[2].values[1])
        goto out;

    err = dw_store_prepare_session(store, "begin");
    if (err)
        goto out;
    err = dw_pg_run_pipeline(store, "begin", steps, DW_ARRAY_LEN(steps));
    if (err)
        goto out;
    fill_statuses(store, &g, steps[3].result, targets);
    fill_locks(&g, steps[4].result, items);
    dw_pg_clear_results(steps, DW_ARRAY_LEN(steps));
out:
    dw_pgarray_cleanup(&channels);
    dw_pgarray_cleanup(&channel_events);
    dw_pgarray_cleanup(&totals);
    dw_pgarray_cleanup(&events);
    groups_cleanup(&g);
    free(targets);
    free(keys);
    return err;
}

/* One batch of results merged by key into the SAVE_RESULTS columns. */
struct save_batch {
    struct key *keys;
    struct groups g;
    struct dw_pgarray cols[8];
};

/* One batch of finishes merged by event into the FINISH columns. */
struct finish_batch {
    struct key *keys;
    struct dw_status **targets;
    struct groups g;
    struct dw_pgarray cols[5];
    struct dw_pgarray schedule[5]; /* DW_STMT_REDRIVE_SCHEDULE's columns */
    struct dw_pgarray clear;       /* DW_STMT_REDRIVE_CLEAR's event ids */
    size_t nschedule, nclear;
};

static void save_batch_build(struct save_batch *b, const struct dw_store_result *items, size_t n)
{
    b->keys = dw_xcalloc(n ? n : 1, sizeof(*b->keys));
    for (size_t i = 0; i < n; i++)
        b->keys[i] = (struct key){items[i].event_id, (int)items[i].channel, i};
    groups_build(&b->g, b->keys, n);
    for (size_t c = 0; c < DW_ARRAY_LEN(b->cols); c++)
        dw_pgarray_init(&b->cols[c]);
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
        dw_pgarray_add_text(&b->cols[0], row->event_id);
        dw_pgarray_add_text(&b->cols[1], dw_channel_name(row->channel));
        dw_pgarray_add_text(&b->cols[2], dw_chstatus_name(row->status));
        dw_pgarray_add_int(&b->cols[3], attempts);
        dw_pgarray_add_text(&b->cols[4], dw_errcode_name(row->error));
        dw_pgarray_add_text(&b->cols[5], row->error_message);
        dw_pgarray_add_text(&b->cols[6], row->external_id);
        dw_pgarray_add_text(&b->cols[7], row->url);
    }
}

static void save_batch_cleanup(struct save_batch *b)
{
    for (size_t c = DW_ARRAY_LEN(b->cols); c-- > 0;)
        dw_pgarray_cleanup(&b->cols[c]);
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
        dw_pgarray_init(&b->cols[c]);
    for (size_t c = 0; c < DW_ARRAY_LEN(b->schedule); c++)
        dw_pgarray_init(&b->schedule[c]);
    dw_pgarray_init(&b->clear);
    b->nschedule = b->nclear = 0;
    for (size_t i = 0; i < b->g.count; i++) {
        /* The schedule follows the event's latest drive. */
        const struct dw_store_finish *last = &items[b->keys[b->g.start[i + 1] - 1].index];
        if (last->redrive == DW_STORE_REDRIVE_SCHEDULE) {
            char names[128];
            channel_list(last->redrive_channels, names, sizeof(names));
            dw_pgarray_add_text(&b->schedule[0], last->event_id);
            dw_pgarray_add_i64(&b->schedule[1], last->next_at_ms);
            dw_pgarray_add_int(&b->schedule[2], last->tier);
            dw_pgarray_add_text(&b->schedule[3], names);
            dw_pgarray_add_text(&b->schedule[4], last->request_json ? last->request_json : "{}");
            b->nschedule++;
        } else if (last->redrive == DW_STORE_REDRIVE_CLEAR) {
            dw_pgarray_add_text(&b->clear, last->event_id);
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
        dw_pgarray_add_text(&b->cols[0], row->event_id);
        dw_pgarray_add_text(&b->cols[1], dw_overall_name(row->overall));
        dw_pgarray_add_int(&b->cols[2], row->total_channels);
        dw_pgarray_add_int(&b->cols[3], row->success_count);
        dw_pgarray_add_int(&b->cols[4], row->failure_count);
    }
}

static void finish_batch_cleanup(struct finish_batch *b)
{
    dw_pgarray_cleanup(&b->clear);
    for (size_t c = DW_ARRAY_LEN(b->schedule); c-- > 0;)
        dw_pgarray_cleanup(&b->schedule[c]);
    for (size_t c = DW_ARRAY_LEN(b->cols); c-- > 0;)
        dw_pgarray_cleanup(&b->cols[c]);
    groups_cleanup(&b->g);
    free(b->targets);
    free(b->keys);
}

/* Sets step's parameters to the finished array literals; false when one
 * could not be made (out of memory). */
static bool set_columns(struct dw_pg_step *step, struct dw_pgarray *cols, size_t ncols)
{
    step->nparams = (int)ncols;
    for (size_t c = 0; c < ncols; c++) {
        step->values[c] = dw_pgarray_end(&cols[c]);
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
    struct dw_pg_step steps[7];
    size_t n = 0, load = 0;
    steps[n++] = dw_pg_sql_step("BEGIN ISOLATION LEVEL READ COMMITTED");
    if (nres) {
        steps[n] = exec_step(DW_STMT_SAVE_RESULTS);
        if (!set_columns(&steps[n++], save.cols, DW_ARRAY_LEN(save.cols)))
            goto out;
    }
    if (nfin) {
        steps[n] = exec_step(DW_STMT_FINISH);
        if (!set_columns(&steps[n], fin.cols, DW_ARRAY_LEN(fin.cols)))
            goto out;
        const char *event_ids = steps[n++].values[0];
        load = n;
        steps[n] = exec_step(DW_STMT_LOAD_MANY);
        steps[n].nparams = 1;
        steps[n++].values[0] = event_ids;
        if (fin.nschedule) {
            steps[n] = exec_step(DW_STMT_REDRIVE_SCHEDULE);
            if (!set_columns(&steps[n++], fin.schedule, DW_ARRAY_LEN(fin.schedule)))
                goto out;
        }
        if (fin.nclear) {
            steps[n] = exec_step(DW_STMT_REDRIVE_CLEAR);
            if (!set_columns(&steps[n++], &fin.clear, 1))
                goto out;
        }
    }
    steps[n++] = dw_pg_sql_step("COMMIT");

    err = dw_store_prepare_session(store, what);
    if (err)
        goto out;
    err = dw_pg_run_pipeline(store, what, steps, n);
    if (err)
        goto out;
    if (nfin)
        fill_statuses(store, &fin.g, steps[load].result, fin.targets);
    dw_pg_clear_results(steps, n);
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
    struct dw_pgarray cols[3];
    for (size_t c = 0; c < DW_ARRAY_LEN(cols); c++)
        dw_pgarray_init(&cols[c]);
    struct key *keys = dw_xcalloc(n, sizeof(*keys));
    struct groups g = {0};
    enum dw_err err = DW_ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        if (!event_id_ok(items[i].event_id) || (unsigned)items[i].channel >= DW_CHANNEL_COUNT ||
            !items[i].step_id || !*items[i].step_id)
            goto out;
        keys[i] = (struct key){items[i].event_id, (int)items[i].channel, i};
    }
    /* One row per key (an upsert may not touch a row twice): the last id
     * given for it, as separate calls in that order would leave. */
    groups_build(&g, keys, n);
    for (size_t i = 0; i < g.count; i++) {
        const struct dw_store_step *last = &items[keys[g.start[i + 1] - 1].index];
        dw_pgarray_add_text(&cols[0], last->event_id);
        dw_pgarray_add_text(&cols[1], dw_channel_name(last->channel));
        dw_pgarray_add_text(&cols[2], last->step_id);
    }
    struct dw_pg_step steps[3];
    steps[0] = dw_pg_sql_step("BEGIN ISOLATION LEVEL READ COMMITTED");
    steps[1] = exec_step(DW_STMT_SAVE_STEPS);
    steps[2] = dw_pg_sql_step("COMMIT");
    err = DW_ERR_NOMEM;
    if (!set_columns(&steps[1], cols, DW_ARRAY_LEN(cols)))
        goto out;
    err = dw_store_prepare_session(store, "saving step ids");
    if (err)
        goto out;
    err = dw_pg_run_pipeline(store, "saving step ids", steps, DW_ARRAY_LEN(steps));
    if (!err)
        dw_pg_clear_results(steps, DW_ARRAY_LEN(steps));
out:
    for (size_t c = DW_ARRAY_LEN(cols); c-- > 0;)
        dw_pgarray_cleanup(&cols[c]);
    groups_cleanup(&g);
    free(keys);
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
    struct dw_pgarray names;
    dw_pgarray_init(&names);
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        if (blocked & (1u << ch))
            dw_pgarray_add_text(&names, dw_channel_name((enum dw_channel_id)ch));
    }
    char limit_text[16];
    dw_snprintf(limit_text, sizeof(limit_text), "%d", limit > 0 ? limit : 0);

    /* The claim commits before the count, so the count leaves out what
     * was just claimed. */
    struct dw_pg_step steps[4];
    steps[0] = dw_pg_sql_step("BEGIN ISOLATION LEVEL READ COMMITTED");
    steps[1] = exec_step(DW_STMT_REDRIVE_CLAIM);
    steps[1].nparams = 4;
    steps[1].values[0] = store->owner;
    steps[1].values[1] = store->lease_ms;
    steps[1].values[2] = dw_pgarray_end(&names);
    steps[1].values[3] = limit_text;
    steps[2] = dw_pg_sql_step("COMMIT");
    steps[3] = exec_step(DW_STMT_REDRIVE_DUE);

    enum dw_err err = DW_ERR_NOMEM;
    if (!steps[1].values[2])
        goto out;
    err = dw_store_prepare_session(store, "claiming re-drives");
    if (err)
        goto out;
    err = dw_pg_run_pipeline(store, "claiming re-drives", steps, DW_ARRAY_LEN(steps));
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
    dw_pg_clear_results(steps, DW_ARRAY_LEN(steps));
out:
    dw_pgarray_cleanup(&names);
    return err;
}

enum dw_err dw_store_read(struct dw_store *store, const char *event_id, struct dw_status *out)
{
    if (!event_id_ok(event_id))
        return DW_ERR_INVALID;

    /* One snapshot for both statements, so a schedule and the statuses it
     * belongs to are read together. */
    struct dw_pg_step steps[4];
    steps[0] = dw_pg_sql_step("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    steps[1] = exec_step(DW_STMT_LOAD_ONE);
    steps[1].nparams = 1;
    steps[1].values[0] = event_id;
    steps[2] = exec_step(DW_STMT_REDRIVE_READ);
    steps[2].nparams = 1;
    steps[2].values[0] = event_id;
    steps[3] = dw_pg_sql_step("COMMIT");

    enum dw_err err = dw_store_prepare_session(store, "reading status");
    if (err)
        return err;
    err = dw_pg_run_pipeline(store, "reading status", steps, DW_ARRAY_LEN(steps));
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
    dw_pg_clear_results(steps, DW_ARRAY_LEN(steps));
    return err;
}
