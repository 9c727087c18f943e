/*
 * The status store: PostgreSQL through libpq. Two tables, `distribution`
 * (one row per eventId) and `channel_status` (one row per eventId and
 * channel); every key starts with event_id so the store can be sharded by
 * it (Citus). Writes are idempotent upserts that never move a status
 * backwards (dw_chstatus_may_replace, dw_overall_may_replace). Each batch
 * call is one transaction sent in pipeline mode: one network round trip for
 * many requests. All SQL is parameterised.
 *
 * A dw_store is one connection and belongs to one thread at a time.
 */
#ifndef DW_STORE_H
#define DW_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/log.h"
#include "dw/status.h"

struct dw_request;
struct dw_store;

/* One channel of one event, as stored. */
struct dw_channel_state {
    bool present; /* a row exists */
    enum dw_chstatus status;
    int attempts;
    enum dw_errcode error; /* DW_EC_NONE when none */
    char error_message[DW_ERRMSG_MAX];
    char external_id[DW_EXTERNAL_ID_MAX];
    char url[DW_URL_MAX];
    int64_t updated_at_ms; /* wall clock */
    /* When an automatic re-drive will call this channel again (wall
     * clock), 0 when none is planned. Filled by dw_store_read only. */
    int64_t next_attempt_ms;
    /* What the first step of a two-step channel answered (Instagram's
     * container id), stored before the next step was sent; "" when none.
     * Kept after the channel ends. */
    char step_id[DW_EXTERNAL_ID_MAX];
    int64_t step_id_at_ms; /* wall clock, when it was stored */
};

/* One event, as stored. */
struct dw_status {
    char event_id[72];
    enum dw_overall overall;
    int total_channels;
    int success_count;
    int failure_count;
    int64_t started_at_ms;                              /* wall clock */
    int64_t completed_at_ms;                            /* 0 while not final */
    struct dw_channel_state channels[DW_CHANNEL_COUNT]; /* indexed by enum dw_channel_id */
};

/* The password(s) a DSN carries, as a NULL-ended array of new strings
 * (parsed by libpq, and also found by shape, raw and percent-decoded, so a
 * malformed DSN that libpq cannot parse yields its password too). For
 * dw_log_add_secret before anything can log libpq's error text, which
 * quotes the bad part of a DSN. Free with dw_store_passwords_free. */
char **dw_store_dsn_passwords(const char *dsn);
void dw_store_passwords_free(char **passwords);

/* True when a connection made with dsn may fall back to plain text
 * (sslmode disable, allow, prefer, or unset and PGSSLMODE unset: libpq's
 * prefer), with the reason in why. False for a Unix socket and for a DSN
 * libpq cannot parse. */
bool dw_store_dsn_plaintext_possible(const char *dsn, char *why, size_t whylen);

/* Connects (does not migrate). log may be NULL. The caller destroys. A
 * connection failure returns DW_ERR_DB with libpq's message in errbuf. */
enum dw_err dw_store_create(const char *dsn, struct dw_log *log, struct dw_store **out,
                            char *errbuf, size_t errlen) DW_MUST_CHECK;
void dw_store_destroy(struct dw_store *store);

/* Creates or migrates the schema, idempotently and safely when several
 * workers start at once (advisory lock). */
enum dw_err dw_store_migrate(struct dw_store *store, char *errbuf, size_t errlen) DW_MUST_CHECK;

/* False once the connection is known broken. Cheap. */
bool dw_store_connected(struct dw_store *store);

/* A store with no connection yet, for a caller that must not fail at
 * start: the first dw_store_reconnect connects. NULL when dsn is NULL. */
struct dw_store *dw_store_create_offline(const char *dsn, struct dw_log *log);

/*
 * Tries once to (re)establish the connection, when the store's reconnect
 * policy allows: a failed call or attempt makes the next wait 100 ms,
 * doubling up to 5 s, each wait shortened at random by up to a quarter; a
 * connection lost while it worked may be re-made at once, once; a call
 * that works starts over. While the policy says wait it returns DW_ERR_DB
 * at once without trying (dw_store_retry_at says until when). A session
 * that was set up (prepared statements) is set up again.
 */
enum dw_err dw_store_reconnect(struct dw_store *store) DW_MUST_CHECK;

/* When dw_store_reconnect will try again (dw_now_ms clock); at or before
 * now: at once. For callers that sleep until then. */
int64_t dw_store_retry_at(const struct dw_store *store);

/*
 * Starts drives of requests. For each item: the distribution row is
 * inserted IN_PROGRESS (or, when it exists and is not final, set
 * IN_PROGRESS; a final one is left as it is) with total_channels of this
 * request; a PENDING channel row is inserted for each requested channel
 * that has none; then item->status is filled with everything stored for the
 * event (all channel rows, requested or not). One transaction.
 */
struct dw_store_begin {
    const struct dw_request *req; /* in, borrowed */
    struct dw_status status;      /* out */
    /* The event's re-drive schedule, claimed in the same transaction for
     * this store's owner (dw_store_set_owner) unless another owner's claim
     * is still running: then redrive_busy, and the drive must not go on
     * (it waits and begins again). */
    bool redrive_row;  /* out: a schedule row exists */
    bool redrive_busy; /* out: claimed by another owner */
    int redrive_tier;  /* out: its tier when redrive_row */
};
enum dw_err dw_store_begin(struct dw_store *store, struct dw_store_begin *items,
                           size_t n) DW_MUST_CHECK;

/*
 * Saves final (or IN_PROGRESS) channel results. A row moves only as
 * dw_chstatus_may_replace allows; attempts are added to the stored count.
 * Strings may be NULL or "" (stored as NULL). One transaction.
 */
struct dw_store_result {
    const char *event_id;
    enum dw_channel_id channel;
    enum dw_chstatus status;
    int attempts; /* calls made in this drive */
    enum dw_errcode error;
    const char *error_message;
    const char *external_id;
    const char *url;
};
enum dw_err dw_store_save_results(struct dw_store *store, const struct dw_store_result *items,
                                  size_t n) DW_MUST_CHECK;

/*
 * Finishes drives: writes each overall status (only as
 * dw_overall_may_replace allows; completed_at set when it becomes final),
 * then fills item->status with what is stored afterwards. One transaction.
 */
enum dw_store_redrive {
    DW_STORE_REDRIVE_KEEP,     /* leave the schedule as it is (there is none) */
    DW_STORE_REDRIVE_SCHEDULE, /* write (or replace) the schedule, unclaimed */
    DW_STORE_REDRIVE_CLEAR,    /* delete the schedule */
};

struct dw_store_finish {
    const char *event_id; /* in */
    /* in: the event's automatic re-drive after this drive (CONTRACT 2.4);
     * with SCHEDULE, the rest says when, which channels and what to send. */
    enum dw_store_redrive redrive;
    int64_t next_at_ms;        /* wall clock */
    int tier;                  /* the schedule's tier (dw_redrive_next) */
    unsigned redrive_channels; /* bit (1u << enum dw_channel_id) per channel to re-drive */
    const char *request_json;  /* the request, as dw_request_encode gives it; borrowed */
    enum dw_overall overall;   /* in */
    int total_channels;        /* in */
    int success_count;         /* in */
    int failure_count;         /* in */
    struct dw_status status;   /* out */
};
enum dw_err dw_store_finish(struct dw_store *store, struct dw_store_finish *items,
                            size_t n) DW_MUST_CHECK;

/*
 * Both of the above in one transaction and one round trip: the results
 * first, then the finishes (whose counts may depend on them). Either batch
 * may be empty. dw_store_save_results and dw_store_finish are this with
 * one side empty.
 */
enum dw_err dw_store_save_and_finish(struct dw_store *store, const struct dw_store_result *results,
                                     size_t nres, struct dw_store_finish *finishes,
                                     size_t nfin) DW_MUST_CHECK;

/* Stores what a first step answered (dw_channel_state.step_id) for each
 * (event, channel), before the next step may be sent: on the row
 * dw_store_begin made (were it gone, it comes back PENDING). Items of one
 * key in one batch: the last one's id. One transaction, one round trip. */
struct dw_store_step {
    const char *event_id;
    enum dw_channel_id channel;
    const char *step_id;
};
enum dw_err dw_store_save_steps(struct dw_store *store, const struct dw_store_step *items,
                                size_t n) DW_MUST_CHECK;

/* Who this store's drives are, in the redrive table's claims (up to 127
 * bytes; unique per process), and how long a claim lasts. Call once before
 * any begin; the default ("", 600000) suits tests of other things. */
void dw_store_set_owner(struct dw_store *store, const char *owner, int lease_ms);

/* One due re-drive claimed by dw_store_redrive_claim. */
struct dw_store_claimed {
    char event_id[72];
    int tier;
    char *request_json; /* owned by the array; dw_store_claimed_free frees */
};

/*
 * The one scan of the schedule: claims up to limit due, unclaimed events
 * (next_at reached, no live claim) for this store's owner, oldest first,
 * skipping rows other workers are claiming (FOR UPDATE SKIP LOCKED) and
 * events that would re-drive a channel in `blocked` (bit per channel).
 * Also counts what is due and unclaimed after the claim, and how long the
 * oldest of those has been due. One round trip. *out (may be NULL when
 * *n is 0) is freed with dw_store_claimed_free.
 */
enum dw_err dw_store_redrive_claim(struct dw_store *store, unsigned blocked, int limit,
                                   struct dw_store_claimed **out, size_t *n, int64_t *due,
                                   int64_t *oldest_due_ms) DW_MUST_CHECK;
void dw_store_claimed_free(struct dw_store_claimed *items, size_t n);

/* Reads one event. DW_ERR_NOT_FOUND when there is no row. */
enum dw_err dw_store_read(struct dw_store *store, const char *event_id,
                          struct dw_status *out) DW_MUST_CHECK;

/* One round trip (SELECT 1): tells whether the server still answers, so an
 * idle worker notices an outage. DW_ERR_DB when it does not. */
enum dw_err dw_store_ping(struct dw_store *store) DW_MUST_CHECK;

/* Bounds each later call on the client side: when the server has not
 * answered within timeout_ms (0: no limit, the default) the call fails with
 * DW_ERR_DB, the connection is closed and dw_store_timed_out says so. For
 * readers that must not hang with a server that stops answering. */
void dw_store_set_timeout(struct dw_store *store, int timeout_ms);
bool dw_store_timed_out(const struct dw_store *store);

/* Network round trips made so far (for the benchmark's figures). */
uint64_t dw_store_round_trips(const struct dw_store *store);

#endif /* DW_STORE_H */
