/*
 * The one small HTTP listener (libmicrohttpd): status reads, /healthz,
 * /readyz, /metrics; every route in one table (CONTRACT section 4). It runs
 * on libmicrohttpd's own thread and opens its own PostgreSQL connection for
 * status reads, so it never touches the writer's.
 */
#ifndef DW_HTTP_H
#define DW_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "dw/common.h"
#include "dw/log.h"
#include "dw/metrics.h"

struct dw_http;

/* Readiness: true when Kafka and PostgreSQL are reachable; otherwise false
 * with a short reason in why. Called on the listener's thread. */
typedef bool (*dw_http_ready_cb)(void *opaque, char *why, size_t whylen);

struct dw_http_options {
    const char *bind_address; /* NULL or "0.0.0.0": all */
    int port;                 /* > 0 */
    const char *pg_dsn;       /* for status reads */
    struct dw_log *log;
    struct dw_metrics *metrics;
    dw_http_ready_cb ready;
    void *ready_opaque;
};

/* Starts listening. The options' pointers must outlive the listener. */
enum dw_err dw_http_start(const struct dw_http_options *opts, struct dw_http **out, char *errbuf,
                          size_t errlen) DW_MUST_CHECK;
/* Stops and frees; NULL is a no-op. */
void dw_http_stop(struct dw_http *http);

#endif /* DW_HTTP_H */
