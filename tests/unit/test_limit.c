/*
 * The adaptive concurrency limit with a fake clock: FIXED ignores samples,
 * slow start doubles per RTT and ends at a latency rise, an unused limit
 * does not grow, one decrease
 * per overloaded moment however many drops it brings, the [min, max]
 * clamp, re-baselining after a latency step.
 *
 * Then a modelled server: a discrete-time simulation in 1 ms ticks of a
 * server that serves at most C calls at once (503 at once beyond that) with
 * service latency L, driven by a client that always has work and keeps
 * exactly `limit` calls in flight, feeding every completion to the limit.
 * It shows convergence near C, recovery after C doubles or halves, a
 * latency step followed, no creeping up against a server whose latency
 * grows with load (Gradient2's flaw), and growth to max against a server
 * without limits. The figures are printed for docs/resilience.md.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dw/limit.h"

#define MS 1000 /* microseconds */

static struct dw_limit_config adaptive(int initial, int min, int max)
{
    return (struct dw_limit_config){
        .mode = DW_LIMIT_ADAPTIVE,
        .initial = initial,
        .min = min,
        .max = max,
        .tolerance = DW_LIMIT_DEFAULT_TOLERANCE,
        .backoff = DW_LIMIT_DEFAULT_BACKOFF,
    };
}

/* One RTT's worth of answered calls: `limit` calls that all started with the
 * limit in use, all ending at `*now` + rtt. Returns the limit after them. */
static int one_round(struct dw_limit *l, int64_t *now, int64_t rtt_us)
{
    int n = dw_limit_get(l);
    *now += rtt_us;
    for (int i = 0; i < n; i++)
        dw_limit_sample(l, *now, rtt_us, n, DW_LIMIT_OK);
    return dw_limit_get(l);
}

static void fixed_ignores_samples(void **state)
{
    (void)state;
    struct dw_limit_config c = adaptive(8, 1, 50);
    c.mode = DW_LIMIT_FIXED;
    struct dw_limit *l = dw_limit_create(&c);
    assert_int_equal(dw_limit_get(l), 50);
    int64_t now = 0;
    for (int i = 0; i < 100; i++) {
        now += MS;
        assert_int_equal(dw_limit_sample(l, now, MS, 50, DW_LIMIT_DROP), 50);
        assert_int_equal(dw_limit_sample(l, now, 500 * MS, 50, DW_LIMIT_OK), 50);
    }
    assert_int_equal(dw_limit_get(l), 50);
    dw_limit_destroy(l);
    dw_limit_destroy(NULL);
}

static void slow_start_doubles_per_rtt(void **state)
{
    (void)state;
    struct dw_limit_config c = adaptive(8, 1, 1000);
    struct dw_limit *l = dw_limit_create(&c);
    int64_t now = 0;
    assert_int_equal(dw_limit_get(l), 8);
    assert_int_equal(one_round(l, &now, 20 * MS), 16);
    assert_int_equal(one_round(l, &now, 20 * MS), 32);
    assert_int_equal(one_round(l, &now, 20 * MS), 64);
    assert_int_equal(one_round(l, &now, 20 * MS), 128);
    struct dw_limit_snapshot s;
    dw_limit_snapshot(l, &s);
    assert_true(s.slow_start);
    assert_int_equal(s.baseline_us, 20 * MS);

    /* After a decrease: about sqrt(limit) per RTT, not doubling. */
    now += MS;
    dw_limit_sample(l, now, MS, 128, DW_LIMIT_DROP);
    int after_drop = dw_limit_get(l);
    assert_int_equal(after_drop, 115); /* 128 x 0.9 */
    int grown = one_round(l, &now, 20 * MS);
    assert_in_range(grown, after_drop + 9, after_drop + 12); /* sqrt(115) = 10.7 */
    dw_limit_destroy(l);
}

/* A latency rise a quarter into the tolerance band (here 1.4x) ends slow
 * start without a decrease: from there the limit grows by about
 * sqrt(limit) per RTT, even when the latency comes back down. Holding slow
 * start instead and doubling again once the latency came back (tried)
 * gained a cold start nothing the connect window had not already gained,
 * and cost throughput where latency only dips between slow answers
 * (docs/resilience.md, "Adaptive concurrency limit"). */
static void a_latency_rise_ends_slow_start(void **state)
{
    (void)state;
    struct dw_limit_config c = adaptive(8, 1, 100000);
    struct dw_limit *l = dw_limit_create(&c);
    int64_t now = 0;
    while (dw_limit_get(l) < 64)
        one_round(l, &now, 20 * MS);
    for (int r = 0; r < 3; r++)
        one_round(l, &now, 28 * MS);
    struct dw_limit_snapshot s;
    dw_limit_snapshot(l, &s);
    assert_false(s.slow_start);
    assert_int_equal(s.decreases, 0);
    int ended = dw_limit_get(l);
    int again = ended;
    for (int r = 0; r < 3; r++)
        again = one_round(l, &now, 20 * MS);
    assert_in_range(again, ended + 1, ended + ended / 2);
    dw_limit_destroy(l);
}

static void unused_limit_does_not_grow(void **state)
{
    (void)state;
    struct dw_limit_config c = adaptive(8, 1, 1000);
    struct dw_limit *l = dw_limit_create(&c);
    int64_t now = 0;
    /* Thousands of fast answers, but never more than 3 calls in flight: a
     * limit of 8 was never needed, so it must stay 8. */
    for (int i = 0; i < 5000; i++) {
        now += MS;
        dw_limit_sample(l, now, 10 * MS, 3, DW_LIMIT_OK);
    }
    assert_int_equal(dw_limit_get(l), 8);
    /* Half the limit in use is enough to grow. */
    now += MS;
    dw_limit_sample(l, now, 10 * MS, 4, DW_LIMIT_OK);
    assert_int_equal(dw_limit_get(l), 9);
    dw_limit_destroy(l);
}

/* After an outage drove the limit to its floor, a channel that answers
 * again (slowly: 2 s a call) gets its limit back by slow start: doubling
 * per round trip, 32 in five round trips, not one call more per trip. */
static void after_an_outage_slow_start_again(void **state)
{
    (void)state;
    struct dw_limit_config c = adaptive(8, 1, 500);
    struct dw_limit *l = dw_limit_create(&c);
    int64_t now = 0;
    for (int i = 0; i < 30; i++) { /* grow a little first, then the outage */
        now += 20 * MS;
        dw_limit_sample(l, now, 20 * MS, dw_limit_get(l), DW_LIMIT_OK);
    }
    for (int i = 0; i < 200 && dw_limit_get(l) > 1; i++) {
        now += 50 * MS;
        dw_limit_sample(l, now, 1 * MS, 1, DW_LIMIT_DROP);
    }
    assert_int_equal(dw_limit_get(l), 1);
    for (int round = 0; round < 5; round++)
        one_round(l, &now, 2000 * MS);
    assert_true(dw_limit_get(l) >= 32);
    dw_limit_destroy(l);
}

/* A channel that answers in 0.2 ms: latency rising to 3 ms (15 times the
 * baseline, but within DW_LIMIT_LATENCY_FLOOR_US) is the client's own
 * noise and the limit keeps growing; rising to 10 ms is a queue, and it
 * shrinks. */
static void sub_millisecond_noise_is_not_congestion(void **state)
{
    (void)state;
    struct dw_limit_config c = adaptive(100, 1, 1000);
    struct dw_limit *l = dw_limit_create(&c);
    int64_t now = 0;
    for (int i = 0; i < 50; i++) {
        now += MS;
        dw_limit_sample(l, now, 200, 1, DW_LIMIT_OK); /* baseline 0.2 ms, app-limited */
    }
    int before = dw_limit_get(l);
    for (int i = 0; i < 200; i++) {
        now += MS;
        dw_limit_sample(l, now, 3 * MS, 1000, DW_LIMIT_OK);
    }
    assert_true(dw_limit_get(l) > before);
    int grown = dw_limit_get(l), lowest = grown;
    for (int i = 0; i < 200; i++) {
        now += 20 * MS;
        dw_limit_sample(l, now, 10 * MS, 1000, DW_LIMIT_OK);
        lowest = dw_limit_get(l) < lowest ? dw_limit_get(l) : lowest;
    }
    /* It shrank (then, as shrinking did not bring the 10 ms down, took it
     * as the channel's new latency: re-baselining). */
    assert_true(lowest < grown);
    dw_limit_destroy(l);
}

static void drops_decrease_once_per_overloaded_moment(void **state)
{
    (void)state;
    struct dw_limit_config c = adaptive(100, 1, 1000);
    struct dw_limit *l = dw_limit_create(&c);
    int64_t now = 0;
    /* Establish a smoothed RTT of 20 ms without growing (app-limited). */
    for (int i = 0; i < 20; i++) {
        now += MS;
        dw_limit_sample(l, now, 20 * MS, 1, DW_LIMIT_OK);
    }
    assert_int_equal(dw_limit_get(l), 100);

    /* 100 calls started together at `start`; all are refused or time out.
     * Their answers arrive over the next 10 ms: one decrease. */
    int64_t start = now;
    for (int i = 0; i < 100; i++) {
        int64_t end = start + 2 * MS + (i % 10) * MS;
        dw_limit_sample(l, end, end - start, 100, DW_LIMIT_DROP);
    }
    assert_int_equal(dw_limit_get(l), 90);
    now = start + 12 * MS;

    /* Answers of calls that started before that decrease report on the
     * limit that was too high: they must not undo it either. */
    for (int i = 0; i < 50; i++)
        dw_limit_sample(l, now, 20 * MS, 100, DW_LIMIT_OK);
    assert_int_equal(dw_limit_get(l), 90);

    /* A call that started after that decrease and is refused again: it saw
     * the new limit, so it counts. */
    dw_limit_sample(l, now + 2 * MS, MS, 90, DW_LIMIT_DROP);
    assert_int_equal(dw_limit_get(l), 81);

    /* Timeouts of calls that began long before: at most one decrease per
     * smoothed RTT (20 ms), however many arrive. */
    int64_t t0 = now + 2 * MS;
    for (int ms = 1; ms <= 100; ms++)
        for (int i = 0; i < 5; i++)
            dw_limit_sample(l, t0 + ms * MS, 2000 * MS, 81, DW_LIMIT_DROP);
    struct dw_limit_snapshot s;
    dw_limit_snapshot(l, &s);
    assert_int_equal(s.decreases, 2 + 5); /* 100 ms / 20 ms */
    assert_false(s.slow_start);

    /* IGNORE changes nothing. */
    int before = dw_limit_get(l);
    for (int i = 0; i < 100; i++)
        dw_limit_sample(l, t0 + 200 * MS + i * MS, MS, 1000, DW_LIMIT_IGNORE);
    assert_int_equal(dw_limit_get(l), before);
    dw_limit_destroy(l);
}

static void clamped_to_min_and_max(void **state)
{
    (void)state;
    /* initial outside [min, max] is clamped. */
    struct dw_limit_config c = adaptive(1, 4, 20);
    struct dw_limit *l = dw_limit_create(&c);
    assert_int_equal(dw_limit_get(l), 4);
    int64_t now = 0;
    for (int i = 0; i < 200; i++) {
        now += 30 * MS;
        assert_true(dw_limit_sample(l, now, MS, 20, DW_LIMIT_DROP) >= 4);
    }
    assert_int_equal(dw_limit_get(l), 4);
    struct dw_limit_snapshot s;
    dw_limit_snapshot(l, &s);
    assert_true(s.limit_exact == 4.0); /* not below: one growth step counts */
    for (int i = 0; i < 500; i++) {
        now += MS;
        assert_true(dw_limit_sample(l, now, 10 * MS, 20, DW_LIMIT_OK) <= 20);
    }
    assert_int_equal(dw_limit_get(l), 20);
    dw_limit_snapshot(l, &s);
    assert_true(s.limit_exact == 20.0);
    dw_limit_destroy(l);

    c = adaptive(50, 4, 20);
    l = dw_limit_create(&c);
    assert_int_equal(dw_limit_get(l), 20);
    dw_limit_destroy(l);

    /* Nonsense settings are repaired, not trusted. */
    c = (struct dw_limit_config){.mode = DW_LIMIT_ADAPTIVE, .initial = 0, .min = 0, .max = 0};
    l = dw_limit_create(&c);
    assert_int_equal(dw_limit_get(l), 1);
    now = 0;
    for (int i = 0; i < 10; i++) {
        now += 30 * MS;
        assert_int_equal(dw_limit_sample(l, now, MS, 1, DW_LIMIT_DROP), 1);
    }
    dw_limit_destroy(l);
}

static void latency_step_rebaselines(void **state)
{
    (void)state;
    struct dw_limit_config c = adaptive(8, 1, 1000);
    struct dw_limit *l = dw_limit_create(&c);
    int64_t now = 0;
    /* Grow to 64 at 10 ms, then one drop ends slow start. */
    while (dw_limit_get(l) < 64)
        one_round(l, &now, 10 * MS);
    now += MS;
    dw_limit_sample(l, now, MS, 64, DW_LIMIT_DROP);
    int before = dw_limit_get(l);

    /* The channel now takes 100 ms, whatever we do. The first few rounds
     * decrease (once per round: one overloaded moment each)... */
    struct dw_limit_snapshot s;
    for (int k = 1; k <= DW_LIMIT_REBASELINE_AFTER; k++) {
        one_round(l, &now, 100 * MS);
        dw_limit_snapshot(l, &s);
        assert_int_equal(s.latency_streak, k);
        assert_int_equal(s.baseline_us, 10 * MS);
    }
    int lowest = dw_limit_get(l);
    assert_true(lowest < before * 0.7);
    /* ...then shrinking has visibly not helped: the baseline becomes 100 ms
     * and slow start climbs back. */
    one_round(l, &now, 100 * MS);
    dw_limit_snapshot(l, &s);
    assert_int_equal(s.baseline_us, 100 * MS);
    assert_int_equal(s.rebaselines, 1);
    assert_true(s.slow_start);
    int after = one_round(l, &now, 100 * MS);
    assert_true(after >= 2 * lowest - 1);
    dw_limit_destroy(l);
}

static void latency_that_comes_back_keeps_the_baseline(void **state)
{
    (void)state;
    struct dw_limit_config c = adaptive(64, 1, 1000);
    struct dw_limit *l = dw_limit_create(&c);
    int64_t now = 0;
    one_round(l, &now, 10 * MS);
    /* Congested rounds, each followed by answers back at the baseline: the
     * decreases do help, so the baseline must stay and nothing restarts. */
    for (int r = 0; r < 20; r++) {
        one_round(l, &now, 100 * MS);
        int n = dw_limit_get(l);
        for (int i = 0; i < 30; i++) {
            now += MS;
            dw_limit_sample(l, now, 10 * MS, n, DW_LIMIT_OK);
        }
    }
    struct dw_limit_snapshot s;
    dw_limit_snapshot(l, &s);
    assert_int_equal(s.baseline_us, 10 * MS);
    assert_int_equal(s.rebaselines, 0);
    assert_false(s.slow_start);
    dw_limit_destroy(l);
}

/* ---- the modelled server ---- */

struct call {
    int64_t start, end; /* ms */
    int inflight;       /* the client's calls in flight at the start, itself included */
    bool served;        /* false: answered 503 at once */
};

struct model {
    struct dw_limit *limit;
    int capacity;   /* calls served at once; 0: no limit */
    int latency_ms; /* service latency */
    int load_knee;  /* > 0: latency x (1 + max(0, busy - knee) / knee) */
    int jitter_pct; /* latency x (1 +- jitter_pct %), uniform, seeded */
    uint64_t seed;
    struct call *calls; /* the client's calls in flight */
    int n, cap;
    int busy;    /* calls the server is serving */
    int64_t now; /* ms */
};

/* What happened in a stretch of simulated time. */
struct stats {
    int64_t ticks;
    double limit_sum, inflight_sum;
    int64_t ok, dropped;
    int max_limit;
};

static void model_init(struct model *m, int max, int capacity, int latency_ms)
{
    memset(m, 0, sizeof(*m));
    struct dw_limit_config c = adaptive(DW_LIMIT_DEFAULT_INITIAL, DW_LIMIT_DEFAULT_MIN, max);
    m->limit = dw_limit_create(&c);
    m->capacity = capacity;
    m->latency_ms = latency_ms;
    m->cap = max + 1;
    m->calls = calloc((size_t)m->cap, sizeof(*m->calls));
    assert_non_null(m->calls);
}

static void model_cleanup(struct model *m)
{
    dw_limit_destroy(m->limit);
    free(m->calls);
}

/* A uniform number in [-1, 1] from a seeded generator (splitmix64). */
static double uniform(uint64_t *seed)
{
    uint64_t z = (*seed += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) / (double)(1ull << 52) - 1.0;
}

static int64_t service_ms(struct model *m)
{
    double f = 1.0;
    if (m->load_knee > 0 && m->busy > m->load_knee)
        f = 1.0 + (double)(m->busy - m->load_knee) / m->load_knee;
    if (m->jitter_pct > 0)
        f *= 1.0 + uniform(&m->seed) * m->jitter_pct / 100.0;
    int64_t ms = (int64_t)llround(m->latency_ms * f);
    return ms < 1 ? 1 : ms;
}

/* Runs for ms simulated milliseconds, adding to *st. */
static void model_run(struct model *m, int64_t ms, struct stats *st)
{
    for (int64_t end = m->now + ms; m->now < end; m->now++) {
        /* Calls that end now report to the limit. */
        for (int i = 0; i < m->n;) {
            struct call *c = &m->calls[i];
            if (c->end != m->now) {
                i++;
                continue;
            }
            if (c->served) {
                m->busy--;
                st->ok++;
            } else {
                st->dropped++;
            }
            dw_limit_sample(m->limit, m->now * MS, (c->end - c->start) * MS, c->inflight,
                            c->served ? DW_LIMIT_OK : DW_LIMIT_DROP);
            m->calls[i] = m->calls[--m->n];
        }
        /* The client always has work: it fills the limit. */
        int limit = dw_limit_get(m->limit);
        while (m->n < limit) {
            assert_true(m->n < m->cap);
            struct call *c = &m->calls[m->n++];
            c->start = m->now;
            c->inflight = m->n;
            if (m->capacity > 0 && m->busy >= m->capacity) {
                c->served = false;
                c->end = m->now + 1;
            } else {
                m->busy++;
                c->served = true;
                c->end = m->now + service_ms(m);
            }
        }
        st->ticks++;
        st->limit_sum += limit;
        st->inflight_sum += m->n;
        if (limit > st->max_limit)
            st->max_limit = limit;
    }
}

static double avg_limit(const struct stats *st)
{
    return st->limit_sum / (double)st->ticks;
}

static double avg_inflight(const struct stats *st)
{
    return st->inflight_sum / (double)st->ticks;
}

static double drop_share(const struct stats *st)
{
    int64_t all = st->ok + st->dropped;
    return all ? (double)st->dropped / (double)all : 0.0;
}

static double ok_per_s(const struct stats *st)
{
    return (double)st->ok * 1000.0 / (double)st->ticks;
}

/* Runs until the limit first reaches `target` or `within` ms pass; returns
 * the ms it took (within + 1 when it did not). */
static int64_t ms_until_limit_at_least(struct model *m, int target, int64_t within,
                                       struct stats *st)
{
    for (int64_t t = 0; t < within; t++) {
        if (dw_limit_get(m->limit) >= target)
            return t;
        model_run(m, 1, st);
    }
    return within + 1;
}

static void assert_near_capacity(const char *what, const struct stats *st, int c)
{
    print_message("%-28s limit %.1f, in flight %.1f, %.0f ok/s, 503 share %.2f %%\n", what,
                  avg_limit(st), avg_inflight(st), ok_per_s(st), 100.0 * drop_share(st));
    assert_true(avg_limit(st) >= 0.8 * c && avg_limit(st) <= 1.3 * c);
    assert_true(avg_inflight(st) >= 0.8 * c && avg_inflight(st) <= 1.3 * c);
    assert_true(drop_share(st) < 0.05);
}

static void model_converges_near_capacity(void **state)
{
    (void)state;
    struct model m;
    model_init(&m, 500, 64, 20);
    struct stats warm = {0}, st = {0};
    int64_t reach = ms_until_limit_at_least(&m, 51, 5000, &warm);
    print_message("C=64 L=20ms: limit reached 0.8C after %lld ms\n", (long long)reach);
    assert_true(reach <= 1000);
    model_run(&m, 10000 - m.now, &warm);
    model_run(&m, 10000, &st); /* the last 10 of 20 s */
    assert_near_capacity("C=64 L=20ms (10-20 s):", &st, 64);
    /* Throughput near the capacity bound C / L = 3,200 calls/s. */
    assert_true(ok_per_s(&st) >= 0.8 * 3200);
    model_cleanup(&m);

    /* The same with a latency that varies by +-50 % from call to call. */
    model_init(&m, 500, 64, 20);
    m.jitter_pct = 50;
    m.seed = 42;
    struct stats warm2 = {0}, st2 = {0};
    model_run(&m, 10000, &warm2);
    model_run(&m, 10000, &st2);
    assert_near_capacity("C=64 L=20ms+-50% (10-20 s):", &st2, 64);
    assert_true(ok_per_s(&st2) >= 0.8 * 3200);
    model_cleanup(&m);
}

static void model_follows_capacity_changes(void **state)
{
    (void)state;
    struct model m;
    model_init(&m, 500, 64, 20);
    struct stats warm = {0};
    model_run(&m, 10000, &warm);

    /* C doubles. */
    m.capacity = 128;
    struct stats up = {0}, st = {0};
    int64_t took = ms_until_limit_at_least(&m, (int)(0.8 * 128), 5000, &up);
    print_message("C 64->128: limit reached 0.8C after %lld ms\n", (long long)took);
    assert_true(took <= 3000);
    model_run(&m, 3000 - took, &up);
    model_run(&m, 3000, &st);
    assert_near_capacity("C=128 (3-6 s after):", &st, 128);

    /* C halves, from 64. */
    m.capacity = 64;
    struct stats back = {0};
    model_run(&m, 10000, &back);
    m.capacity = 32;
    struct stats down = {0}, st2 = {0};
    int64_t t = 0;
    while (t < 5000 && dw_limit_get(m.limit) > 1.3 * 32) {
        model_run(&m, 1, &down);
        t++;
    }
    print_message("C 64->32: limit below 1.3C after %lld ms\n", (long long)t);
    assert_true(t <= 1000);
    model_run(&m, 3000 - t, &down);
    model_run(&m, 3000, &st2);
    assert_near_capacity("C=32 (3-6 s after):", &st2, 32);
    model_cleanup(&m);
}

static void model_follows_a_latency_step(void **state)
{
    (void)state;
    struct model m;
    model_init(&m, 500, 64, 20);
    struct stats warm = {0};
    model_run(&m, 10000, &warm);

    m.latency_ms = 200;
    struct stats step = {0}, st = {0};
    model_run(&m, 5000, &step);
    model_run(&m, 5000, &st); /* 5 to 10 s after the step */
    struct dw_limit_snapshot s;
    dw_limit_snapshot(m.limit, &s);
    print_message("L 20->200ms, C=64: baseline now %lld ms, %llu re-baseline(s)\n",
                  (long long)(s.baseline_us / MS), (unsigned long long)s.rebaselines);
    assert_near_capacity("L=200ms (5-10 s after):", &st, 64);
    /* Throughput near C / L = 320 calls/s. */
    assert_true(ok_per_s(&st) >= 0.8 * 320);

    /* How soon: the limit is back near C within a few seconds. */
    struct model m2;
    model_init(&m2, 500, 64, 20);
    struct stats w2 = {0}, s2 = {0};
    model_run(&m2, 10000, &w2);
    m2.latency_ms = 200;
    int64_t t = 0, settled = -1;
    while (t < 10000) {
        model_run(&m2, 100, &s2);
        t += 100;
        if (dw_limit_get(m2.limit) >= 0.8 * 64 && settled < 0)
            settled = t;
        if (dw_limit_get(m2.limit) < 0.8 * 64)
            settled = -1;
    }
    print_message("L 20->200ms: limit back at >= 0.8C for good after %lld ms\n",
                  (long long)settled);
    assert_true(settled >= 0 && settled <= 3000);
    model_cleanup(&m2);
    model_cleanup(&m);
}

static void model_does_not_creep_when_latency_grows_with_load(void **state)
{
    (void)state;
    struct model m;
    model_init(&m, 500, 0, 20);
    m.load_knee = 64;
    struct stats first = {0}, last = {0};
    model_run(&m, 50000, &first);
    model_run(&m, 10000, &last);
    int max_limit = first.max_limit > last.max_limit ? first.max_limit : last.max_limit;
    print_message("latency grows past 64 in flight: limit %.1f (50-60 s), max %d over 60 s, "
                  "%.0f ok/s\n",
                  avg_limit(&last), max_limit, ok_per_s(&last));
    assert_true(max_limit < 3 * 64);
    /* And it does use the room before the knee. */
    assert_true(avg_limit(&last) >= 64);
    model_cleanup(&m);

    /* The server slows down under our load while the limit is high: its
     * knee falls from 400 to 64 with 500 calls in flight, which makes the
     * latency 7.8 times the baseline. Many more decreases than
     * DW_LIMIT_REBASELINE_AFTER are needed, but each of them helps, so
     * this must not be taken for a latency that is not ours. */
    model_init(&m, 500, 0, 20);
    m.load_knee = 400;
    struct stats high = {0}, fall = {0}, after = {0};
    model_run(&m, 10000, &high);
    assert_int_equal(dw_limit_get(m.limit), 500);
    m.load_knee = 64;
    model_run(&m, 5000, &fall);
    model_run(&m, 10000, &after);
    print_message("knee 400->64 at limit 500: limit %.1f, max %d (5-15 s after)\n",
                  avg_limit(&after), after.max_limit);
    assert_true(after.max_limit < 3 * 64);
    struct dw_limit_snapshot snap;
    dw_limit_snapshot(m.limit, &snap);
    assert_int_equal(snap.rebaselines, 0);
    assert_int_equal(snap.baseline_us, 20 * MS);
    model_cleanup(&m);
}

static void model_grows_to_max_without_limits(void **state)
{
    (void)state;
    struct model m;
    model_init(&m, 500, 0, 20);
    struct stats st = {0};
    int64_t t = ms_until_limit_at_least(&m, 500, 10000, &st);
    print_message("no server limit: limit reached max 500 after %lld ms\n", (long long)t);
    assert_true(t <= 1000);
    model_cleanup(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixed_ignores_samples),
        cmocka_unit_test(slow_start_doubles_per_rtt),
        cmocka_unit_test(a_latency_rise_ends_slow_start),
        cmocka_unit_test(unused_limit_does_not_grow),
        cmocka_unit_test(sub_millisecond_noise_is_not_congestion),
        cmocka_unit_test(after_an_outage_slow_start_again),
        cmocka_unit_test(drops_decrease_once_per_overloaded_moment),
        cmocka_unit_test(clamped_to_min_and_max),
        cmocka_unit_test(latency_step_rebaselines),
        cmocka_unit_test(latency_that_comes_back_keeps_the_baseline),
        cmocka_unit_test(model_converges_near_capacity),
        cmocka_unit_test(model_follows_capacity_changes),
        cmocka_unit_test(model_follows_a_latency_step),
        cmocka_unit_test(model_does_not_creep_when_latency_grows_with_load),
        cmocka_unit_test(model_grows_to_max_without_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
