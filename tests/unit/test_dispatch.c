/*
 * Dispatch with fakes: an in-memory store that can go down, a channel pool
 * whose jobs the test ends by hand, a completion sink and a fake clock,
 * driven pass by pass (opts.manual), so nothing here depends on timing.
 *
 * Covered: completions of one partition finishing out of order (the
 * commit position, fed from the completions as the consumer's tracker is,
 * moves only over finished offsets); a re-drive of a known eventId (what is
 * stored SUCCESS is not called again; a second request for a running event
 * waits for the first); the result hold; a store that fails and comes back
 * (work retried, never skipped, no completion for unstored work).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dw/dispatch.h"
#include "dw/request.h"
#include "dw/tracker.h"

#define MAX_EVENTS 16
#define MAX_JOBS   32
#define MAX_DONE   32

/* ---- the store: what is stored, per event and channel ---- */

struct fake_event {
    char id[72];
    bool present[DW_CHANNEL_COUNT];
    enum dw_chstatus status[DW_CHANNEL_COUNT];
    bool finished;
};

struct fake_store {
    bool down; /* every call fails and the connection is broken */
    bool connected;
    int begin_calls, write_calls, reconnect_calls;
    size_t begun;          /* begin items, over all calls */
    size_t results_stored; /* result items written */
    size_t last_nres, last_nfin;
    uint64_t round_trips;
    int64_t retry_at; /* what its reconnect policy says (dw_store_retry_at) */
    struct fake_event events[MAX_EVENTS];
    size_t nevents;
};

static struct fake_event *event_of(struct fake_store *s, const char *id)
{
    for (size_t i = 0; i < s->nevents; i++)
        if (strcmp(s->events[i].id, id) == 0)
            return &s->events[i];
    assert_true(s->nevents < MAX_EVENTS);
    struct fake_event *e = &s->events[s->nevents++];
    memset(e, 0, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "%s", id);
    return e;
}

static void fill_status(const struct fake_event *e, struct dw_status *st)
{
    snprintf(st->event_id, sizeof(st->event_id), "%s", e->id);
    for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
        st->channels[ch].present = e->present[ch];
        st->channels[ch].status = e->status[ch];
    }
}

/* A call to a store that is down: the connection breaks. */
static bool fails(struct fake_store *s)
{
    s->round_trips++;
    if (s->down)
        s->connected = false;
    return s->down;
}

static bool st_connected(void *opaque)
{
    return ((struct fake_store *)opaque)->connected;
}

static enum dw_err st_reconnect(void *opaque)
{
    struct fake_store *s = opaque;
    s->reconnect_calls++;
    if (s->down) {
        s->retry_at += 30000; /* a failed try moves the policy's next one on */
        return DW_ERR_DB;
    }
    s->connected = true;
    return DW_OK;
}

static int64_t st_retry_at(void *opaque)
{
    return ((struct fake_store *)opaque)->retry_at;
}

static enum dw_err st_ping(void *opaque)
{
    return fails(opaque) ? DW_ERR_DB : DW_OK;
}

static uint64_t st_round_trips(void *opaque)
{
    return ((struct fake_store *)opaque)->round_trips;
}

static enum dw_err st_begin(void *opaque, struct dw_store_begin *items, size_t n)
{
    struct fake_store *s = opaque;
    s->begin_calls++;
    if (fails(s))
        return DW_ERR_DB;
    s->begun += n;
    for (size_t i = 0; i < n; i++) {
        struct fake_event *e = event_of(s, items[i].req->event_id);
        for (int ch = 0; ch < DW_CHANNEL_COUNT; ch++) {
            if (dw_request_has(items[i].req, ch) && !e->present[ch]) {
                e->present[ch] = true;
                e->status[ch] = DW_CH_PENDING;
            }
        }
        fill_status(e, &items[i].status);
    }
    return DW_OK;
}

static enum dw_err st_save_and_finish(void *opaque, const struct dw_store_result *results,
                                      size_t nres, struct dw_store_finish *finishes, size_t nfin)
{
    struct fake_store *s = opaque;
    s->write_calls++;
    if (fails(s))
        return DW_ERR_DB;
    s->last_nres = nres;
    s->last_nfin = nfin;
    s->results_stored += nres;
    for (size_t i = 0; i < nres; i++) {
        struct fake_event *e = event_of(s, results[i].event_id);
        e->present[results[i].channel] = true;
        e->status[results[i].channel] = results[i].status;
    }
    for (size_t i = 0; i < nfin; i++) {
        struct fake_event *e = event_of(s, finishes[i].event_id);
        e->finished = true;
        fill_status(e, &finishes[i].status);
        finishes[i].status.overall = finishes[i].overall;
    }
    return DW_OK;
}

static enum dw_err st_save_steps(void *opaque, const struct dw_store_step *items, size_t n)
{
    (void)items;
    (void)n;
    return fails(opaque) ? DW_ERR_DB : DW_OK;
}

static enum dw_err st_claim(void *opaque, unsigned blocked, int limit,
                            struct dw_store_claimed **out, size_t *n, int64_t *due, int64_t *oldest)
{
    (void)blocked;
    (void)limit;
    *out = NULL;
    *n = 0;
    *due = *oldest = 0;
    return fails(opaque) ? DW_ERR_DB : DW_OK;
}

/* ---- the pool: jobs wait until the test ends them ---- */

struct fake_job {
    void *job;
    enum dw_channel_id channel;
    char event_id[72];
    bool ended;
};

struct fake_calls {
    struct fake_job jobs[MAX_JOBS];
    size_t njobs;
};

static enum dw_err calls_submit(void *opaque, const struct dw_request *req,
                                enum dw_channel_id channel, void *job, int from,
                                const char *prev_id, int to)
{
    (void)from;
    (void)prev_id;
    (void)to;
    struct fake_calls *c = opaque;
    assert_true(c->njobs < MAX_JOBS);
    struct fake_job *j = &c->jobs[c->njobs++];
    j->job = job;
    j->channel = channel;
    j->ended = false;
    snprintf(j->event_id, sizeof(j->event_id), "%s", req->event_id);
    return DW_OK;
}

static int calls_free_permits(void *opaque, enum dw_channel_id channel)
{
    (void)opaque;
    (void)channel;
    return -1;
}

static double calls_queue_ratio(void *opaque)
{
    (void)opaque;
    return 0.0;
}

/* ---- completions and the clock ---- */

struct done {
    char event_id[72];
    int32_t partition;
    int64_t offset;
};

struct sink {
    struct done done[MAX_DONE];
    size_t n;
};

static enum dw_err sink_send(void *opaque, const char *event_id, const char *json,
                             int32_t partition, int64_t offset)
{
    struct sink *k = opaque;
    assert_non_null(json);
    assert_true(k->n < MAX_DONE);
    struct done *d = &k->done[k->n++];
    snprintf(d->event_id, sizeof(d->event_id), "%s", event_id);
    d->partition = partition;
    d->offset = offset;
    return DW_OK;
}

struct fake_clock {
    int64_t now, wall;
};

static int64_t clock_now(void *opaque)
{
    return ((struct fake_clock *)opaque)->now;
}

static int64_t clock_wall(void *opaque)
{
    return ((struct fake_clock *)opaque)->wall;
}

/* ---- the fixture ---- */

struct fixture {
    struct dw_config cfg;
    struct fake_store store;
    struct fake_calls calls;
    struct sink sink;
    struct fake_clock clock;
    struct dw_dispatch_store store_if;
    struct dw_dispatch_calls calls_if;
    struct dw_dispatch_completions sink_if;
    struct dw_dispatch_clock clock_if;
    struct dw_dispatch *d;
};

static void start(struct fixture *f, int result_hold_ms)
{
    f->cfg.max_in_flight_requests = 100;
    f->cfg.store_batch_max = 64;
    f->cfg.result_hold_ms = result_hold_ms;
    f->cfg.redrive.tiers = 0; /* no automatic re-drive: no claims */
    f->store.connected = true;
    f->clock = (struct fake_clock){1000000, 1700000000000};
    f->store_if = (struct dw_dispatch_store){
        &f->store, st_connected,       st_reconnect,  st_ping,  st_round_trips,
        st_begin,  st_save_and_finish, st_save_steps, st_claim, st_retry_at,
    };
    f->calls_if =
        (struct dw_dispatch_calls){&f->calls, calls_submit, calls_free_permits, calls_queue_ratio};
    f->sink_if = (struct dw_dispatch_completions){&f->sink, sink_send};
    f->clock_if = (struct dw_dispatch_clock){&f->clock, clock_now, clock_wall};
    struct dw_dispatch_options opts = {
        .cfg = &f->cfg,
        .store = &f->store_if,
        .calls = &f->calls_if,
        .completions = &f->sink_if,
        .clock = &f->clock_if,
        .manual = true,
    };
    char err[256] = "";
    assert_int_equal(dw_dispatch_start(&opts, &f->d, err, sizeof(err)), DW_OK);
}

static int setup(void **state)
{
    *state = calloc(1, sizeof(struct fixture));
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dw_dispatch_stop(f->d);
    free(f);
    return 0;
}

/* Submits a request for event_id calling channels (a JSON array's inside). */
static void submit(struct fixture *f, const char *event_id, const char *channels, int64_t offset)
{
    char json[256];
    snprintf(json, sizeof(json), "{\"eventId\":\"%s\",\"title\":\"t\",\"channels\":[%s]}", event_id,
             channels);
    struct dw_request *req = NULL;
    char why[256] = "";
    assert_int_equal(dw_request_decode(json, strlen(json), &req, why, sizeof(why)), DW_DLQ_NONE);
    assert_int_equal(dw_dispatch_submit(f->d, req, 0, offset), DW_OK);
}

/* Ends the open job of event_id on channel with status. */
static void end_job(struct fixture *f, const char *event_id, enum dw_channel_id channel,
                    enum dw_chstatus status)
{
    for (size_t i = 0; i < f->calls.njobs; i++) {
        struct fake_job *j = &f->calls.jobs[i];
        if (j->ended || j->channel != channel || strcmp(j->event_id, event_id) != 0)
            continue;
        struct dw_call_result r = {
            .channel = channel,
            .status = status,
            .error = status == DW_CH_SUCCESS ? DW_EC_NONE : DW_EC_HTTP_5XX,
            .attempts = 1,
        };
        j->ended = true;
        dw_dispatch_channel_done(j->job, &r);
        return;
    }
    fail_msg("no open job of %s on channel %d", event_id, (int)channel);
}

static size_t jobs_of(const struct fixture *f, const char *event_id)
{
    size_t n = 0;
    for (size_t i = 0; i < f->calls.njobs; i++)
        n += strcmp(f->calls.jobs[i].event_id, event_id) == 0;
    return n;
}

/* ---- the tests ---- */

/* Requests of one partition finish out of order; a completion is produced
 * only for a finished request, so the commit position (the consumer's
 * tracker, fed with what was produced) moves only over finished offsets. */
static void test_out_of_order_completion(void **state)
{
    struct fixture *f = *state;
    start(f, 0);
    submit(f, "e10", "\"NAVER\"", 10);
    submit(f, "e11", "\"NAVER\"", 11);
    submit(f, "e12", "\"NAVER\"", 12);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.begun, 3);
    assert_int_equal(f->calls.njobs, 3);
    assert_int_equal(f->sink.n, 0);
    assert_int_equal(dw_dispatch_in_flight(f->d), 3);

    struct dw_tracker *t = dw_tracker_create();
    for (int64_t o = 10; o <= 12; o++)
        dw_tracker_add(t, 0, o);

    end_job(f, "e12", DW_CHANNEL_NAVER, DW_CH_SUCCESS);
    dw_dispatch_pass(f->d);
    end_job(f, "e10", DW_CHANNEL_NAVER, DW_CH_FAILED);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->sink.n, 2);
    assert_int_equal(f->sink.done[0].offset, 12);
    assert_int_equal(f->sink.done[1].offset, 10);
    for (size_t i = 0; i < f->sink.n; i++)
        assert_true(dw_tracker_done(t, f->sink.done[i].partition, f->sink.done[i].offset));
    /* 11 is still running: only 10 may be committed (position 11). */
    assert_int_equal(dw_tracker_position(t, 0), 11);
    assert_int_equal(dw_dispatch_in_flight(f->d), 1);

    end_job(f, "e11", DW_CHANNEL_NAVER, DW_CH_SUCCESS);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->sink.n, 3);
    assert_int_equal(f->sink.done[2].offset, 11);
    assert_true(dw_tracker_done(t, 0, 11));
    assert_int_equal(dw_tracker_position(t, 0), 13);
    assert_int_equal(dw_dispatch_in_flight(f->d), 0);
    dw_tracker_destroy(t);
}

/* A request for an event already partly delivered calls only what is not
 * stored SUCCESS; a second request for an event being driven waits for the
 * first, then re-drives only what is still not SUCCESS. */
static void test_redrive_known_event(void **state)
{
    struct fixture *f = *state;
    start(f, 0);
    struct fake_event *e = event_of(&f->store, "known");
    e->present[DW_CHANNEL_NAVER] = true;
    e->status[DW_CHANNEL_NAVER] = DW_CH_SUCCESS;
    e->present[DW_CHANNEL_KAKAO] = true;
    e->status[DW_CHANNEL_KAKAO] = DW_CH_FAILED;

    submit(f, "known", "\"NAVER\",\"KAKAO\"", 1);
    submit(f, "known", "\"NAVER\",\"KAKAO\"", 2); /* the same event again, at once */
    dw_dispatch_pass(f->d);
    /* One drive at a time, and it calls only KAKAO. */
    assert_int_equal(f->store.begun, 1);
    assert_int_equal(f->calls.njobs, 1);
    assert_int_equal(f->calls.jobs[0].channel, DW_CHANNEL_KAKAO);

    end_job(f, "known", DW_CHANNEL_KAKAO, DW_CH_SUCCESS);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->sink.n, 1);
    assert_int_equal(f->sink.done[0].offset, 1);
    /* The waiting request began once the first was done: everything is
     * SUCCESS now, so it calls nothing and finishes. */
    assert_int_equal(f->store.begun, 2);
    dw_dispatch_pass(f->d);
    assert_int_equal(jobs_of(f, "known"), 1);
    assert_int_equal(f->sink.n, 2);
    assert_int_equal(f->sink.done[1].offset, 2);
    assert_int_equal(dw_dispatch_in_flight(f->d), 0);
}

/* A request's results wait for the rest of its channels, up to
 * result_hold_ms, so that they and the overall status are one write. */
static void test_result_hold(void **state)
{
    struct fixture *f = *state;
    start(f, 1000);
    submit(f, "held", "\"NAVER\",\"KAKAO\"", 1);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->calls.njobs, 2);

    end_job(f, "held", DW_CHANNEL_NAVER, DW_CH_SUCCESS);
    dw_dispatch_pass(f->d);
    f->clock.now += 999;
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.write_calls, 0); /* held, not yet due */
    end_job(f, "held", DW_CHANNEL_KAKAO, DW_CH_SUCCESS);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.write_calls, 1); /* both results and the finish */
    assert_int_equal(f->store.last_nres, 2);
    assert_int_equal(f->store.last_nfin, 1);
    assert_int_equal(f->sink.n, 1);

    /* The hold runs out: what arrived is stored alone, the run goes on. */
    submit(f, "late", "\"NAVER\",\"KAKAO\"", 2);
    dw_dispatch_pass(f->d);
    end_job(f, "late", DW_CHANNEL_NAVER, DW_CH_SUCCESS);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.write_calls, 1);
    f->clock.now += 1000;
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.write_calls, 2);
    assert_int_equal(f->store.last_nres, 1);
    assert_int_equal(f->store.last_nfin, 0);
    assert_int_equal(f->sink.n, 1);
    end_job(f, "late", DW_CHANNEL_KAKAO, DW_CH_FAILED);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.last_nres, 1);
    assert_int_equal(f->store.last_nfin, 1);
    assert_int_equal(f->sink.n, 2);
}

/* The store fails and comes back: the begin and the write are retried
 * after a wait, nothing is skipped, and no completion (so no commit) is
 * made for work not stored. */
static void test_store_fails_and_comes_back(void **state)
{
    struct fixture *f = *state;
    start(f, 0);
    f->store.down = true;
    f->store.retry_at = f->clock.now + 30000; /* its reconnect policy's next try */
    submit(f, "e5", "\"NAVER\"", 5);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.begin_calls, 1);
    assert_false(dw_dispatch_store_ok(f->d));
    assert_int_equal(f->calls.njobs, 0);

    /* The retry waits for the store's reconnect policy, to the ms. */
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.begin_calls, 1);
    assert_int_equal(f->store.reconnect_calls, 0);
    f->clock.now = f->store.retry_at - 1;
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.reconnect_calls, 0);
    f->clock.now = f->store.retry_at;
    dw_dispatch_pass(f->d); /* still down: the reconnect fails */
    assert_int_equal(f->store.reconnect_calls, 1);
    assert_int_equal(f->store.begin_calls, 1);

    f->store.down = false;
    f->clock.now += 60000;
    dw_dispatch_pass(f->d);
    assert_true(dw_dispatch_store_ok(f->d));
    assert_int_equal(f->store.begun, 1);
    assert_int_equal(f->calls.njobs, 1);

    /* Down again while the result is to be written. */
    f->store.down = true;
    end_job(f, "e5", DW_CHANNEL_NAVER, DW_CH_SUCCESS);
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.write_calls, 1);
    assert_int_equal(f->store.results_stored, 0);
    f->clock.now += 60000;
    dw_dispatch_pass(f->d);
    f->clock.now += 60000;
    dw_dispatch_pass(f->d);
    assert_int_equal(f->sink.n, 0); /* nothing acknowledged unstored */
    assert_int_equal(dw_dispatch_in_flight(f->d), 1);

    f->store.down = false;
    f->clock.now += 60000;
    dw_dispatch_pass(f->d);
    assert_int_equal(f->store.results_stored, 1); /* the same result, not skipped */
    assert_true(event_of(&f->store, "e5")->finished);
    assert_int_equal(f->store.events[0].status[DW_CHANNEL_NAVER], DW_CH_SUCCESS);
    assert_int_equal(f->sink.n, 1);
    assert_int_equal(f->sink.done[0].offset, 5);
    assert_int_equal(dw_dispatch_in_flight(f->d), 0);
    assert_int_equal(f->calls.njobs, 1); /* the channel was called once */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_out_of_order_completion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redrive_known_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_hold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_fails_and_comes_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
