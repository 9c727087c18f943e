/*
 * The small HTTP listener (libmicrohttpd): status reads, /healthz, /readyz,
 * /metrics; every route in one table (CONTRACT section 4). Optionally a
 * second, management port that serves only the probes and /metrics, so
 * that whatever the status port suffers cannot starve them.
 *
 * Nothing that can wait runs on a listener's thread: readiness is computed
 * on a background thread and cached, status reads run on a reader thread
 * with its own PostgreSQL connection and a client-side time limit.
 */
#ifndef DW_HTTP_H
#define DW_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "dw/common.h"
#include "dw/log.h"
#include "dw/metrics.h"

struct dw_http;

/* A probe's check: true when fine; otherwise false with a short reason in
 * why. */
typedef bool (*dw_http_check_cb)(void *opaque, char *why, size_t whylen);

struct dw_http_options {
    const char *bind_address; /* NULL or "0.0.0.0": all */
    int port;                 /* > 0 */
    int management_port;      /* 0: none; else /healthz, /readyz, /metrics only */
    const char *pg_dsn;       /* for status reads */
    struct dw_log *log;
    struct dw_metrics *metrics;
    /* Liveness (/healthz): must be cheap and never block; it runs on the
     * listener's thread. NULL: always alive. */
    dw_http_check_cb live;
    void *live_opaque;
    /* Readiness (/readyz): may block; runs on a background thread every
     * ready_interval_ms and /readyz answers the last result. */
    dw_http_check_cb ready;
    void *ready_opaque;
    int ready_interval_ms;          /* 0: 1000 */
    int status_read_timeout_ms;     /* a status read's limit, queueing included; 0: 2000 */
    int max_connections;            /* per port; 0: 256 */
    int max_connections_per_client; /* per port and client address; 0: 16 */
    int idle_timeout_s;             /* a connection idle this long is closed; 0: 10 */
};

/* Starts listening. The options' pointers must outlive the listener. */
enum dw_err dw_http_start(const struct dw_http_options *opts, struct dw_http **out, char *errbuf,
                          size_t errlen) DW_MUST_CHECK;
/* Stops and frees; NULL is a no-op. */
void dw_http_stop(struct dw_http *http);

#endif /* DW_HTTP_H */
