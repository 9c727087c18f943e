/*
 * The pace of new connections to one origin (scheme, host, port): a token
 * bucket whose rate adapts. A server accepts connections at a finite rate
 * from a finite accept queue (Node.js: 511; Linux somaxconn: 4096); SYNs
 * beyond it are dropped and the client's connect times out after the SYN
 * retry, 1 s and then 3 s later. So new connections take a token: from
 * DW_PACE_START_RATE a second, raised by a hundredth per connect that
 * works, up to max_per_s, in bursts of a twentieth (at most
 * DW_PACE_MAX_BURST); a connect that times out halves the rate, at most
 * once per DW_PACE_CUT_MS.
 *
 * Pure logic: no clock (now_ms is monotonic, passed in), no threads, no
 * locks: the caller serialises calls on one pace (the pool's lock per
 * origin). Caller-allocated.
 */
#ifndef DW_PACE_H
#define DW_PACE_H

#include <stdint.h>

/* A pace starts here (or at max_per_s when lower) and climbs by a
 * hundredth per connect that works: a server that accepts fast is soon at
 * max_per_s, one that accepts slowly from a small backlog is not flooded
 * before the first timeout can say so (a second or more later). */
#define DW_PACE_START_RATE 200.0
/* Never more SYNs at once than this: Linux's default accept backlog is
 * 4096, Node.js's 511, but a busy server's may be a handful. */
#define DW_PACE_MAX_BURST 10.0
/* Failures closer together than this are one overload: one cut. */
#define DW_PACE_CUT_MS 500
/* The rate never falls below one connection a second. */
#define DW_PACE_MIN_RATE 1.0

struct dw_pace {
    double max_rate; /* per second; <= 0: unpaced */
    double rate;
    double tokens;
    int64_t refill_ms;
    int64_t cut_ms; /* the last cut; INT64_MIN: none */
};

void dw_pace_init(struct dw_pace *p, double max_per_s, int64_t now_ms);

/* Takes a token for one new connection: 0, open it now; else nothing is
 * taken and the result is the ms until a token is there (ask again then;
 * the caller keeps such calls queued, so a connection that frees up
 * meanwhile serves one without a new connect). */
int64_t dw_pace_take(struct dw_pace *p, int64_t now_ms);

/* A new connection was made. */
void dw_pace_connected(struct dw_pace *p, int64_t now_ms);

/* A new connection timed out before it was made (the server's accept
 * queue dropped the SYN). A refused connect is not reported: nothing
 * listens there, and a slower pace would only slow the origin's other
 * channels. */
void dw_pace_failed(struct dw_pace *p, int64_t now_ms);

#endif /* DW_PACE_H */
