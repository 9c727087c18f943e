/*
 * The transfer loop of one pool thread: HTTP calls run through one libcurl
 * multi handle driven by curl_multi_socket_action on an epoll set, on
 * kept-alive connections. It knows no guard, no retry, no channel: the
 * caller (src/pool.c) says what to send and when, and hears how each call
 * ended. A call carries an integer tag (the pool's channel id) so that the
 * connections it opens are counted per tag.
 *
 * Threads: a loop belongs to the thread that runs dw_xfer_wait; every
 * function but dw_xfer_wake must be called on it. Callbacks run on it,
 * from inside dw_xfer_run_due and dw_xfer_wait.
 */
#ifndef DW_TRANSFER_H
#define DW_TRANSFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dw/common.h"

struct dw_xfer_loop;

/* Header lines sent on every call of one kind (a channel's Authorization,
 * Accept, ...), built once and shared read-only by every loop. */
struct dw_xfer_headers;

/* NULL when out of memory. */
struct dw_xfer_headers *dw_xfer_headers_new(const char *const *lines, size_t n);
void dw_xfer_headers_free(struct dw_xfer_headers *h);

/* One call. url and lines are copied; body and headers are borrowed until
 * the done callback for it. */
struct dw_xfer_request {
    int tag;         /* 0 <= tag < DW_XFER_MAX_TAGS: whose connections these are */
    const char *url; /* whole URL */
    const char *body;
    size_t body_len;
    const char *lines[2]; /* the call's own header lines (NULL: none), sent first;
                           * copied, cut to DW_XFER_LINE_MAX - 1 bytes */
    const struct dw_xfer_headers *headers;
    long connect_timeout_ms; /* counts from the call's start: the loop never queues a call */
    long timeout_ms;         /* the whole call */
    void *opaque;            /* handed back at the end */
};

#define DW_XFER_MAX_TAGS 16
#define DW_XFER_LINE_MAX 192

enum dw_xfer_outcome {
    DW_XFER_ANSWERED,  /* an HTTP answer came: see status */
    DW_XFER_TIMEOUT,   /* timeout_ms passed, or connect_timeout_ms before connecting */
    DW_XFER_CONNECT,   /* no connection (refused, reset, DNS, TLS) */
    DW_XFER_TOO_LARGE, /* the answer's body passed response_cap */
};

struct dw_xfer_result {
    void *opaque;
    int tag;
    enum dw_xfer_outcome outcome;
    long status;           /* ANSWERED: the HTTP status */
    int64_t retry_after_s; /* ANSWERED: the Retry-After header in seconds; 0: none */
    const char *body;      /* ANSWERED: the body, NUL-terminated; valid during the callback */
    size_t body_len;
    const char *error;      /* otherwise: libcurl's words */
    int64_t took_us;        /* from dw_xfer_start to the end */
    bool multiplexed;       /* it ran over HTTP/2: calls share connections */
    bool connect_timed_out; /* the connect (or TLS handshake) timed out */
};

typedef void (*dw_xfer_done_fn)(void *owner, const struct dw_xfer_result *result);
/* A connection of tag opened (+1) or closed (-1). */
typedef void (*dw_xfer_conn_fn)(void *owner, int tag, int delta);

/* What became of a connect a call began: for the connect pace
 * (include/dw/pace.h), which needs to know how many are under way. */
enum dw_xfer_connect_event {
    DW_XFER_CONNECT_BEGAN,     /* the call opened a connection's socket */
    DW_XFER_CONNECT_MADE,      /* connected (and the TLS handshake done): it may send */
    DW_XFER_CONNECT_TIMED_OUT, /* the call timed out before it was made */
    DW_XFER_CONNECT_GAVE_UP,   /* refused, reset, a TLS error, or the call ended */
};
/* Each BEGAN is followed by exactly one of the other three, on the same
 * tag (at the latest in dw_xfer_loop_destroy). */
typedef void (*dw_xfer_connect_fn)(void *owner, int tag, enum dw_xfer_connect_event ev);

struct dw_transport;

struct dw_xfer_options {
    int max_calls; /* calls at once; also the easy handles kept for reuse */
    /* How each tag's server is reached (TLS, HTTP version, session cache:
     * include/dw/transport.h, where a tag is a channel); NULL: libcurl's
     * defaults. Outlives the loop. */
    const struct dw_transport *transport;
    int max_host_connections; /* dw_transport_multi_setup's cap; 0: none */
    size_t response_cap;      /* an answer body larger than this ends TOO_LARGE */
    bool env_proxy;           /* a proxy variable is set: let libcurl read it */
    dw_xfer_done_fn done;
    dw_xfer_conn_fn conn;       /* may be NULL */
    dw_xfer_connect_fn connect; /* may be NULL */
    void *owner;                /* the callbacks' first argument */
};

enum dw_err dw_xfer_loop_create(const struct dw_xfer_options *opts, struct dw_xfer_loop **out,
                                char *errbuf, size_t errlen) DW_MUST_CHECK;

/* Ends every call in flight without a callback and closes every
 * connection (dw_xfer_conn_fn is still called for each). NULL: no-op. */
void dw_xfer_loop_destroy(struct dw_xfer_loop *loop);

/* Starts a call. DW_ERR_HTTP when libcurl cannot take it (no callback
 * follows). */
enum dw_err dw_xfer_start(struct dw_xfer_loop *loop,
                          const struct dw_xfer_request *req) DW_MUST_CHECK;

/* Calls running now. */
int dw_xfer_running(const struct dw_xfer_loop *loop);

/* Connections the loop may keep open, busy or idle (libcurl closes the
 * oldest idle one beyond it). */
void dw_xfer_set_max_connections(struct dw_xfer_loop *loop, long n);

/* When libcurl wants dw_xfer_run_due called (monotonic ms), -1: never. */
int64_t dw_xfer_due_ms(const struct dw_xfer_loop *loop);

/* Handles libcurl's timeouts that are due at now_ms and reports the calls
 * that ended. */
void dw_xfer_run_due(struct dw_xfer_loop *loop, int64_t now_ms);

/* Waits up to wait_ms for socket events or dw_xfer_wake, handles them and
 * reports the calls that ended. */
void dw_xfer_wait(struct dw_xfer_loop *loop, int wait_ms);

/* Any thread: interrupts dw_xfer_wait. */
void dw_xfer_wake(struct dw_xfer_loop *loop);

#endif /* DW_TRANSFER_H */
