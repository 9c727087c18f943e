/*
 * The pace of new connections to one origin (scheme, host, port). A server
 * accepts connections at a finite rate from a finite accept queue (Node.js:
 * 511; Linux somaxconn: 4096); SYNs beyond it are dropped and the client's
 * connect hangs until the SYN retry, 1 s and then 3 s later. Two bounds:
 *
 * - A window: at most DW_PACE_WINDOW connects under way at once (socket
 *   opened, connection and TLS handshake not yet made). Connects to a
 *   server with room in its accept queue are made in a network round trip
 *   and leave the window at once; to a server whose queue is full they
 *   hang, the window fills, and no further SYN goes out until one is made
 *   or gives up. It clocks itself: no rate to guess.
 * - A rate: a token bucket from DW_PACE_START_RATE a second, raised by a
 *   tenth per connect made, up to max_per_s, in bursts of a twentieth (at
 *   most DW_PACE_MAX_BURST); a connect that times out halves the rate, at
 *   most once per DW_PACE_CUT_MS. The window already keeps a full server
 *   from being flooded, so the rate climbs fast (a cold start against
 *   six channels of 100 ms needs hundreds of connections in its first
 *   second) and is there to spread the first SYNs (no thousand in one
 *   millisecond) and to cap the rate at the setting.
 *
 * Pure logic: no clock (now_ms is monotonic, passed in), no threads, no
 * locks: the caller serialises calls on one pace (the pool's lock per
 * origin). Caller-allocated.
 */
#ifndef DW_PACE_H
#define DW_PACE_H

#include <stdint.h>

/* A pace starts here (or at max_per_s when lower) and climbs by a tenth
 * per connect made: at max_per_s after a few dozen. */
#define DW_PACE_START_RATE 200.0
/* Connects under way at once, per origin: fewer SYNs than the smallest
 * common accept backlog (Node.js 511, many servers 128) can be lost at
 * once, and at a 20 ms network round trip plus a TLS handshake still
 * about 500 connections a second. */
#define DW_PACE_WINDOW 32
/* How soon to ask again when the window is full: a connect on loopback is
 * made in well under this, and one to a full server takes a second. */
#define DW_PACE_WINDOW_POLL_MS 2
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
    int connecting; /* connects under way (dw_pace_connecting, not yet ended) */
};

void dw_pace_init(struct dw_pace *p, double max_per_s, int64_t now_ms);

/* Takes a token for one new connection: 0, open it now; else nothing is
 * taken and the result is the ms until a token is there, or until the
 * window is worth asking about again (ask again then; the caller keeps
 * such calls queued, so a connection that frees up meanwhile serves one
 * without a new connect). A token does not enter the window: the connect
 * does, when its socket opens (the call may find a connection free by
 * then and open none). */
int64_t dw_pace_take(struct dw_pace *p, int64_t now_ms);

/* A connect began (its socket opened): it is in the window until one of
 * the three below ends it. */
void dw_pace_connecting(struct dw_pace *p);

/* A connect was made (TCP and, over TLS, the handshake). */
void dw_pace_connected(struct dw_pace *p, int64_t now_ms);

/* A connect timed out before it was made (the server's accept queue
 * dropped the SYN). */
void dw_pace_failed(struct dw_pace *p, int64_t now_ms);

/* A connect ended otherwise: refused, reset, a TLS error, or its call
 * ended first. The rate stays: nothing listens there, or the fault is not
 * the accept queue, and a slower pace would only slow the origin's other
 * channels. */
void dw_pace_abandoned(struct dw_pace *p);

#endif /* DW_PACE_H */
