/*
 * The adaptive concurrency limit of one channel: how many calls may be in
 * flight to it now. It starts small, grows while the channel answers near
 * its lowest latency, and shrinks when latency rises or the channel says it
 * is overloaded (503, 429, 408, a timeout, a refused or timed-out connect),
 * always within [min, max]; max is the channel's max_concurrent.
 *
 * Pure logic: no clock, no threads, no locks. Time is passed in (a
 * monotonic clock in microseconds); the caller serialises calls on one
 * limit with its own lock (the pool's channel lock).
 *
 * THE ALGORITHM (ADAPTIVE)
 * The limit is a real number; dw_limit_get returns its floor. Only answered
 * calls (DW_LIMIT_OK) are latency samples. Their RTTs are smoothed: the
 * first 8 are averaged, then an EWMA of weight 1/8 (TCP's SRTT). The
 * baseline is the lowest smoothed RTT seen since the first 8. A sample is
 * uncongested while the smoothed RTT is <= tolerance x baseline (or within
 * DW_LIMIT_LATENCY_FLOOR_US of it), congested above. Smoothing first makes one slow (or one lucky)
 * answer count for little: with a +-50 % call-to-call jitter, single RTTs span 3 times their
 * minimum, more than a tolerance of 2, while the smoothed RTT stays within
 * a few percent of its mean.
 *
 * - Slow start: until the first decrease, every uncongested sample adds 1,
 *   so the limit doubles once per RTT from `initial`. Vegas grows by a
 *   constant per RTT (its log10 queue-size steps), which takes tens of RTTs
 *   to reach a limit of a few hundred; slow start reaches it in a handful.
 *   Because the latency of a call is known only one RTT after it started,
 *   doubling overshoots by up to one RTT's worth; so slow start also ends,
 *   without a decrease, as soon as the smoothed RTT is a quarter of the
 *   way into the tolerance band (HyStart's delay-increase exit).
 * - Congestion avoidance: after slow start every uncongested sample adds
 *   max(1, sqrt(limit)) / limit, about sqrt(limit) per RTT: a limit of 16
 *   grows by 4 per RTT, one of 400 by 20.
 * - App-limited: a sample grows the limit only when the call started with at
 *   least limit/2 calls in flight. A limit nobody uses proves nothing about
 *   the channel; without this an idle channel's limit would climb to max and
 *   the next burst would open max connections at once.
 * - Decrease: a DROP, or a congested sample, multiplies the limit by
 *   `backoff`. One overloaded moment counts once: a sample decreases only
 *   if its call started at or after the last decrease (so it saw the limit
 *   as it is now), or if a smoothed RTT has passed since the last decrease.
 *   The first rule lets a storm of fast 503s (each back within a
 *   millisecond) shrink the limit at once, while the answers of the calls
 *   that were already in flight when it shrank count nothing; the second
 *   keeps slow signals (timeouts of calls that started long before) at one
 *   decrease per smoothed RTT. Likewise a sample of a call that started
 *   before the last decrease does not grow the limit: it reports on the
 *   limit that was too high. Without that, growth would undo a decrease of
 *   0.9 within less than one RTT and the limit would sit above a channel's
 *   capacity for part of every RTT, drawing 503s. Never below min.
 * - Baseline: the lowest smoothed RTT, not a windowed minimum and not a
 *   moving average. Under modest sustained overload every sample carries
 *   queueing delay; a baseline averaged from samples (Gradient2) or a
 *   minimum over a recent window drifts up with it, the congested samples
 *   then look uncongested, and the limit creeps up without bound. An
 *   all-time minimum cannot drift.
 * - Re-baseline: the latency of a channel can also rise for reasons that
 *   are not ours (a slower backend, a failover). Paced latency decreases
 *   are counted; an uncongested sample resets the count. Once
 *   DW_LIMIT_REBASELINE_AFTER (K) of them in a row are behind us, the next
 *   paced congested sample asks whether they helped: is the lowest smoothed
 *   RTT since the last decrease below DW_LIMIT_PROGRESS x the highest of
 *   the lowest smoothed RTTs before each of the last K decreases? Queueing
 *   that we cause shrinks with the limit, so it keeps decreasing for as
 *   long as that is so. When it is not, the rise is not ours: the baseline
 *   becomes the lowest smoothed RTT since the last decrease and the limit
 *   re-enters slow start, climbing back in a few RTTs to what the channel
 *   takes at its new latency. This also heals a baseline that was set too
 *   low. Envoy's adaptive concurrency filter re-measures its minimum RTT by
 *   pinning the concurrency to a small value for a while, periodically,
 *   which cuts throughput every time; we never force concurrency down to
 *   measure.
 *
 * FIXED: the limit is max, always; samples change nothing.
 */
#ifndef DW_LIMIT_H
#define DW_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

/* Defaults for the settings (channels.<NAME>.limit_*). */
#define DW_LIMIT_DEFAULT_INITIAL   8
#define DW_LIMIT_DEFAULT_MIN       1
#define DW_LIMIT_DEFAULT_TOLERANCE 2.0
#define DW_LIMIT_DEFAULT_BACKOFF   0.9
/* Paced latency decreases in a row, without an uncongested sample, after
 * which the limit asks whether they helped (see Re-baseline above). */
#define DW_LIMIT_REBASELINE_AFTER 4
/* A smoothed RTT at most this much above the baseline is uncongested
 * whatever the ratio: for a channel that answers in a fraction of a
 * millisecond (a local simulator) a ratio of 2 is a few hundred
 * microseconds, which the client's own thread scheduling adds under load;
 * reacting to it would hold the limit far below what the channel takes.
 * Real channels answer in tens of milliseconds, where the ratio decides. */
#define DW_LIMIT_LATENCY_FLOOR_US 5000
/* Those K decreases "did not help" when the lowest congested RTT after them
 * is still at least this share of the lowest before them. */
#define DW_LIMIT_PROGRESS 0.9

enum dw_limit_mode {
    DW_LIMIT_FIXED,
    DW_LIMIT_ADAPTIVE,
};

/* Settings. dw_limit_create repairs values out of range rather than fail
 * (the configuration checks them and names the setting): min < 1 becomes 1,
 * max < min becomes min, initial is clamped into [min, max], a tolerance
 * <= 1 or a backoff outside (0, 1) becomes its default. */
struct dw_limit_config {
    enum dw_limit_mode mode;
    int initial;      /* starting limit (adaptive); clamped into [min, max] */
    int min;          /* >= 1 */
    int max;          /* the hard cap (the channel's max_concurrent); FIXED: the limit */
    double tolerance; /* a latency up to tolerance x baseline counts as uncongested; > 1 */
    double backoff;   /* multiplicative decrease factor in (0, 1) */
};

/* How a call ended, for the limit. */
enum dw_limit_signal {
    DW_LIMIT_OK,     /* the server answered (2xx, or a 4xx other than 408/429): a latency sample */
    DW_LIMIT_DROP,   /* overload: 503, 429, 408, timeout, connection refused / connect timeout */
    DW_LIMIT_IGNORE, /* says nothing about load (a 500, a bad body): no sample */
};

/* What the limit knows, for metrics, logs and tests. */
struct dw_limit_snapshot {
    int limit;            /* dw_limit_get */
    double limit_exact;   /* the real-valued limit */
    int64_t baseline_us;  /* lowest smoothed RTT; 0: fewer than 8 answered calls yet */
    int64_t smoothed_us;  /* the EWMA of answered calls' RTT; 0: none yet */
    bool slow_start;      /* growing by 1 per sample */
    int latency_streak;   /* paced latency decreases in a row */
    uint64_t decreases;   /* decreases so far */
    uint64_t rebaselines; /* re-baselines so far */
};

/* A limit with the settings cfg (copied). Never NULL (allocation failure
 * aborts). Destroy with dw_limit_destroy; NULL is a no-op there. */
struct dw_limit *dw_limit_create(const struct dw_limit_config *cfg);
void dw_limit_destroy(struct dw_limit *l);

/* The current limit, an int in [min, max]. */
int dw_limit_get(const struct dw_limit *l);

/*
 * A call ended. now_us: when it ended; rtt_us: how long it took (from the
 * start of the call, not of any queueing before it); inflight: the calls
 * in flight to this channel when it started, itself included. Returns the
 * new limit (dw_limit_get). FIXED ignores samples.
 */
int dw_limit_sample(struct dw_limit *l, int64_t now_us, int64_t rtt_us, int inflight,
                    enum dw_limit_signal sig);

void dw_limit_snapshot(const struct dw_limit *l, struct dw_limit_snapshot *snap);

#endif /* DW_LIMIT_H */
