/*
 * The adaptive concurrency limit of one channel (include/dw/limit.h, which
 * explains the algorithm and why).
 *
 * DESIGN
 * A handful of numbers updated in O(1) per sample; no history is kept
 * (the baseline is a running minimum, the smoothed RTT an EWMA).
 *
 * Threads: none of its own; the caller serialises calls on one limit.
 * Invariants:
 * - cfg.min <= limit <= cfg.max (as reals); FIXED: limit == cfg.max.
 * - baseline_us > 0 once WARMUP answered calls were seen.
 * - latency_streak == 0 and interval_min_us == 0 whenever the last answered
 *   call was uncongested.
 */
#include "dw/limit.h"

#include <math.h>
#include <stdlib.h>

#include "dw/common.h"

/* The weight of a new answered call in the smoothed RTT (TCP's SRTT). */
#define SMOOTHING 0.125
/* Answered calls averaged before there is a baseline. */
#define WARMUP 8
/* Slow start ends, without a decrease, at an RTT this far into the
 * tolerance band (baseline x (1 + (tolerance - 1) x this)). */
#define SLOW_START_EXIT 0.25

struct dw_limit {
    struct dw_limit_config cfg;
    double limit;
    int64_t baseline_us;
    double smoothed_us;
    uint64_t samples; /* answered calls seen */
    bool slow_start;
    bool decreased;           /* last_decrease_us is set */
    int64_t last_decrease_us; /* when the limit was last decreased */
    int latency_streak;       /* paced latency decreases in a row */
    int64_t interval_min_us;  /* the lowest congested smoothed RTT since the last decrease */
    /* interval_min_us as it was at each of the streak's last K decreases,
     * by position in the streak % K. */
    int64_t streak_rtt_us[DW_LIMIT_REBASELINE_AFTER];
    uint64_t decreases;
    uint64_t rebaselines;
};

static double clamp(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

struct dw_limit *dw_limit_create(const struct dw_limit_config *cfg)
{
    struct dw_limit *l = dw_xcalloc(1, sizeof(*l));
    l->cfg = *cfg;
    if (l->cfg.min < 1)
        l->cfg.min = 1;
    if (l->cfg.max < l->cfg.min)
        l->cfg.max = l->cfg.min;
    if (!(l->cfg.tolerance > 1.0))
        l->cfg.tolerance = DW_LIMIT_DEFAULT_TOLERANCE;
    if (!(l->cfg.backoff > 0.0 && l->cfg.backoff < 1.0))
        l->cfg.backoff = DW_LIMIT_DEFAULT_BACKOFF;
    if (l->cfg.initial < l->cfg.min)
        l->cfg.initial = l->cfg.min;
    if (l->cfg.initial > l->cfg.max)
        l->cfg.initial = l->cfg.max;
    l->limit = l->cfg.mode == DW_LIMIT_FIXED ? l->cfg.max : l->cfg.initial;
    l->slow_start = l->cfg.mode == DW_LIMIT_ADAPTIVE;
    return l;
}

void dw_limit_destroy(struct dw_limit *l)
{
    free(l);
}

int dw_limit_get(const struct dw_limit *l)
{
    int v = (int)floor(l->limit);
    return v < l->cfg.min ? l->cfg.min : v > l->cfg.max ? l->cfg.max : v;
}

/* One overloaded moment counts once: the call saw the limit as it is now
 * (it started at or after the last decrease), or a smoothed RTT has passed
 * since the last decrease. */
static bool may_decrease(const struct dw_limit *l, int64_t now_us, int64_t rtt_us)
{
    if (!l->decreased)
        return true;
    if (now_us - rtt_us >= l->last_decrease_us)
        return true;
    return l->smoothed_us > 0 && (double)(now_us - l->last_decrease_us) >= l->smoothed_us;
}

static void decrease(struct dw_limit *l, int64_t now_us)
{
    l->limit = clamp(l->limit * l->cfg.backoff, l->cfg.min, l->cfg.max);
    l->slow_start = false;
    l->decreased = true;
    l->last_decrease_us = now_us;
    l->decreases++;
}

static void grow(struct dw_limit *l, int64_t now_us, int64_t rtt_us, int inflight)
{
    /* App-limited: a limit that is not used says nothing about the channel. */
    if ((double)inflight < l->limit / 2.0)
        return;
    /* A call that started before the last decrease reports on the limit
     * that was too high: it must not undo the decrease. */
    if (l->decreased && now_us - rtt_us < l->last_decrease_us)
        return;
    if (l->slow_start) {
        l->limit += 1.0;
    } else {
        double step = sqrt(l->limit);
        l->limit += (step < 1.0 ? 1.0 : step) / l->limit;
    }
    l->limit = clamp(l->limit, l->cfg.min, l->cfg.max);
}

/* Did the last K latency decreases in a row bring the RTT down? Compared
 * with the highest of the lowest RTTs between them, not with the oldest:
 * the answers that arrive right after a decrease still carry the queue of
 * the limit before it (and, while it overshoots, of a lower one), so only
 * the peak says how high the latency went. */
static bool helped(const struct dw_limit *l)
{
    int64_t peak = 0;
    for (int i = 0; i < DW_LIMIT_REBASELINE_AFTER; i++)
        if (l->streak_rtt_us[i] > peak)
            peak = l->streak_rtt_us[i];
    return (double)l->interval_min_us < DW_LIMIT_PROGRESS * (double)peak;
}

/* Shrinking did not bring the latency back: the rise is the channel's own.
 * Measure the baseline again and climb back to what it takes now. */
static void rebaseline(struct dw_limit *l)
{
    l->baseline_us = l->interval_min_us;
    l->latency_streak = 0;
    l->interval_min_us = 0;
    l->slow_start = true;
    l->rebaselines++;
}

/* Drops drove the limit to its floor: the channel is down, or as good as.
 * What was learnt of its latency may not hold when it answers again (a
 * restarted or failed-over backend), so start over as with a new channel:
 * warm up a fresh baseline and climb by slow start, as TCP does after a
 * timeout, instead of one call more per round trip (at 2 s a call, a
 * minute to reach 30). */
static void forget(struct dw_limit *l)
{
    l->samples = 0;
    l->smoothed_us = 0;
    l->baseline_us = 0;
    l->latency_streak = 0;
    l->interval_min_us = 0;
    l->slow_start = true;
}

int dw_limit_sample(struct dw_limit *l, int64_t now_us, int64_t rtt_us, int inflight,
                    enum dw_limit_signal sig)
{
    if (l->cfg.mode == DW_LIMIT_FIXED || sig == DW_LIMIT_IGNORE)
        return dw_limit_get(l);
    if (rtt_us < 0)
        rtt_us = 0;

    if (sig == DW_LIMIT_DROP) {
        /* Not a latency sample: a 503 answers fast, a timeout slow, and
         * neither says how long the work takes. */
        if (may_decrease(l, now_us, rtt_us)) {
            decrease(l, now_us);
            if (dw_limit_get(l) <= l->cfg.min)
                forget(l);
        }
        return dw_limit_get(l);
    }

    /* An answered call: a latency sample. The first WARMUP samples are
     * averaged (so one lucky first answer cannot set the baseline), then
     * an EWMA; the baseline is the lowest smoothed RTT after that. */
    if (rtt_us < 1)
        rtt_us = 1;
    l->samples++;
    double weight = l->samples < WARMUP ? 1.0 / (double)l->samples : SMOOTHING;
    l->smoothed_us += weight * ((double)rtt_us - l->smoothed_us);
    if (l->samples < WARMUP) {
        grow(l, now_us, rtt_us, inflight);
        return dw_limit_get(l);
    }
    double rtt = l->smoothed_us;
    if (l->baseline_us == 0 || rtt < (double)l->baseline_us)
        l->baseline_us = llround(rtt);

    double ratio = rtt / (double)l->baseline_us;
    /* A rise of a few milliseconds over a sub-millisecond baseline is the
     * client's own scheduling, not a queue at the server: it counts as
     * uncongested (DW_LIMIT_LATENCY_FLOOR_US). */
    if (rtt - (double)l->baseline_us <= DW_LIMIT_LATENCY_FLOOR_US)
        ratio = 1.0;
    if (l->slow_start && ratio > 1.0 + (l->cfg.tolerance - 1.0) * SLOW_START_EXIT)
        /* The latency starts to rise: slow start would overshoot by up to
         * one RTT of doubling before it reached the tolerance, so go on
         * gently from here (HyStart's delay-increase exit). */
        l->slow_start = false;
    if (ratio <= l->cfg.tolerance) {
        l->latency_streak = 0;
        l->interval_min_us = 0;
        grow(l, now_us, rtt_us, inflight);
        return dw_limit_get(l);
    }

    /* Congested. */
    if (l->interval_min_us == 0 || rtt < (double)l->interval_min_us)
        l->interval_min_us = llround(rtt);
    if (!may_decrease(l, now_us, rtt_us))
        return dw_limit_get(l);
    int slot = l->latency_streak % DW_LIMIT_REBASELINE_AFTER;
    if (l->latency_streak >= DW_LIMIT_REBASELINE_AFTER && !helped(l)) {
        rebaseline(l);
        return dw_limit_get(l);
    }
    l->streak_rtt_us[slot] = l->interval_min_us;
    l->interval_min_us = 0;
    decrease(l, now_us);
    l->latency_streak++;
    return dw_limit_get(l);
}

void dw_limit_snapshot(const struct dw_limit *l, struct dw_limit_snapshot *snap)
{
    snap->limit = dw_limit_get(l);
    snap->limit_exact = l->limit;
    snap->baseline_us = l->baseline_us;
    snap->smoothed_us = (int64_t)l->smoothed_us;
    snap->slow_start = l->slow_start;
    snap->latency_streak = l->latency_streak;
    snap->decreases = l->decreases;
    snap->rebaselines = l->rebaselines;
}
