/*
 * The HTTP listener (CONTRACT section 4): one libmicrohttpd daemon and the
 * route table `routes[]` (pgbouncer's show_map): a path pattern and its
 * handler per line. Adding an endpoint is one handler and one line.
 *
 * Threads: libmicrohttpd runs one internal polling thread
 * (MHD_USE_INTERNAL_POLLING_THREAD, no thread pool, no thread per
 * connection), so every handler runs on that one thread, one at a time.
 * That thread alone owns the status-read connection (`store`) and its retry
 * time, so they need no lock. The price: a slow status read delays the
 * other answers; a database that cannot be reached fails at once after a
 * failed attempt (STORE_RETRY_MS) instead of making every request wait.
 * The ready callback and the metrics are called on that thread too.
 *
 * Invariants:
 * - Every answer has a body and a Content-Type; libmicrohttpd leaves the
 *   body out for HEAD and keeps Content-Length.
 * - A path that matches a route but not with GET or HEAD is 405 with an
 *   Allow header; a path that matches none is 404 whatever the method.
 * - The URL is not percent-decoded (see keep_raw): an encoded character in
 *   an eventId makes it invalid rather than a different id.
 */
#include "dw/http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "dw/report.h"
#include "dw/store.h"

#define EVENT_ID_MAX         64
#define METRICS_MAX_BYTES    (4 * 1024 * 1024)
#define STORE_RETRY_MS       1000
#define CONNECTION_LIMIT     64
#define CONNECTION_TIMEOUT_S 30

#define CT_JSON    "application/json"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

struct dw_http {
    struct dw_http_options opts; /* a copy; the pointers are borrowed */
    struct MHD_Daemon *daemon;
    /* Listener thread only. */
    struct dw_store *store;    /* NULL until first needed or after a failure */
    int64_t store_retry_at_ms; /* no new connection attempt before this */
};

/* What a handler answers. */
struct reply {
    unsigned status;
    const char *content_type;
    const char *body; /* static, or `owned` */
    char *owned;      /* malloc'ed body, freed by libmicrohttpd */
    size_t len;
    const char *allow; /* the Allow header of a 405 */
};

static void reply_static(struct reply *r, unsigned status, const char *body)
{
    r->status = status;
    r->content_type = CT_JSON;
    r->body = body;
    r->len = strlen(body);
}

static void reply_owned(struct reply *r, unsigned status, const char *content_type, char *body,
                        size_t len)
{
    r->status = status;
    r->content_type = content_type;
    r->owned = body;
    r->len = len;
}

/* ---- routes ---- */

static bool valid_event_id(const char *s, size_t len)
{
    if (len < 1 || len > EVENT_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* Reads one event on the listener's own connection: opens it when there is
 * none (at most once per STORE_RETRY_MS after a failure) and, when a read
 * finds the connection broken, reconnects once and reads again. */
static enum dw_err read_status(struct dw_http *http, const char *event_id, struct dw_status *st)
{
    char errbuf[256] = "";
    enum dw_err err;

    for (int attempt = 0; attempt < 2; attempt++) {
        if (!http->store) {
            if (dw_now_ms() < http->store_retry_at_ms)
                return DW_ERR_DB;
            err = dw_store_open(http->opts.pg_dsn, http->opts.log, &http->store, errbuf,
                                sizeof(errbuf));
            if (err) {
                http->store = NULL;
                http->store_retry_at_ms = dw_now_ms() + STORE_RETRY_MS;
                dw_metrics_count(http->opts.metrics, DW_COUNTER_DB_ERRORS, 1);
                dw_log_warn(http->opts.log,
                            "status read: PostgreSQL unavailable (%s); next attempt in %d ms",
                            errbuf, STORE_RETRY_MS);
                return err;
            }
        }
        err = dw_store_read(http->store, event_id, st);
        if (err != DW_ERR_DB)
            return err;
        dw_metrics_count(http->opts.metrics, DW_COUNTER_DB_ERRORS, 1);
        if (dw_store_connected(http->store))
            return err; /* the query failed, not the connection */
        dw_log_warn(http->opts.log, "status read: PostgreSQL connection lost; reconnecting");
        dw_store_destroy(http->store);
        http->store = NULL;
    }
    return DW_ERR_DB;
}

static void route_status(struct dw_http *http, const char *param, size_t param_len, struct reply *r)
{
    if (!valid_event_id(param, param_len)) {
        reply_static(r, MHD_HTTP_BAD_REQUEST, "{\"error\":\"INVALID_EVENT_ID\"}");
        return;
    }
    char event_id[EVENT_ID_MAX + 1];
    memcpy(event_id, param, param_len);
    event_id[param_len] = '\0';

    struct dw_status *st = dw_xcalloc(1, sizeof(*st));
    enum dw_err err = read_status(http, event_id, st);
    if (err == DW_OK) {
        char *json = dw_report_status(st);
        reply_owned(r, MHD_HTTP_OK, CT_JSON, json, strlen(json));
    } else if (err == DW_ERR_NOT_FOUND) {
        reply_static(r, MHD_HTTP_NOT_FOUND, "{\"error\":\"NOT_FOUND\"}");
    } else if (err == DW_ERR_INVALID) {
        reply_static(r, MHD_HTTP_BAD_REQUEST, "{\"error\":\"INVALID_EVENT_ID\"}");
    } else {
        reply_static(r, MHD_HTTP_SERVICE_UNAVAILABLE, "{\"error\":\"UNAVAILABLE\"}");
    }
    free(st);
}

static void route_healthz(struct dw_http *http, const char *param, size_t param_len,
                          struct reply *r)
{
    (void)http;
    (void)param;
    (void)param_len;
    reply_static(r, MHD_HTTP_OK, "{\"status\":\"UP\"}");
}

static void route_readyz(struct dw_http *http, const char *param, size_t param_len, struct reply *r)
{
    (void)param;
    (void)param_len;
    char why[256] = "";
    if (!http->opts.ready || http->opts.ready(http->opts.ready_opaque, why, sizeof(why))) {
        reply_static(r, MHD_HTTP_OK, "{\"status\":\"READY\"}");
        return;
    }
    struct json_object *root = json_object_new_object();
    json_object_object_add(root, "status", json_object_new_string("NOT_READY"));
    json_object_object_add(root, "reason", json_object_new_string(why[0] ? why : "unknown"));
    char *json = dw_xstrdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
    json_object_put(root);
    reply_owned(r, MHD_HTTP_SERVICE_UNAVAILABLE, CT_JSON, json, strlen(json));
}

static void route_metrics(struct dw_http *http, const char *param, size_t param_len,
                          struct reply *r)
{
    (void)param;
    (void)param_len;
    struct dw_buf buf;
    dw_buf_init(&buf, METRICS_MAX_BYTES);
    enum dw_err err = dw_metrics_render(http->opts.metrics, &buf);
    if (err) {
        dw_log_error(http->opts.log, "metrics: cannot render: %s", dw_strerror(err));
        dw_buf_cleanup(&buf);
        reply_static(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "{\"error\":\"INTERNAL\"}");
        return;
    }
    size_t len;
    char *text = dw_buf_detach(&buf, &len);
    reply_owned(r, MHD_HTTP_OK, CT_METRICS, text, len);
}

/* A handler gets the path segment matched by `{...}` in its pattern
 * (not NUL-terminated; empty when the pattern has none). */
typedef void (*route_fn)(struct dw_http *http, const char *param, size_t param_len,
                         struct reply *r);

static const struct route {
    const char *pattern; /* "{name}" matches one path segment */
    route_fn handler;
} routes[] = {
    {"/distribution/{eventId}/status", route_status},
    {"/healthz", route_healthz},
    {"/readyz", route_readyz},
    {"/metrics", route_metrics},
};

static bool match(const char *pattern, const char *path, const char **param, size_t *param_len)
{
    while (*pattern) {
        if (*pattern == '{') {
            const char *close = strchr(pattern, '}');
            size_t n = strcspn(path, "/");
            *param = path;
            *param_len = n;
            path += n;
            pattern = close + 1;
            continue;
        }
        if (*pattern != *path)
            return false;
        pattern++;
        path++;
    }
    return *path == '\0';
}

static void dispatch(struct dw_http *http, const char *method, const char *path, struct reply *r)
{
    bool readable =
        strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

    for (size_t i = 0; i < DW_ARRAY_LEN(routes); i++) {
        const char *param = "";
        size_t param_len = 0;
        if (!match(routes[i].pattern, path, &param, &param_len))
            continue;
        if (!readable) {
            reply_static(r, MHD_HTTP_METHOD_NOT_ALLOWED, "{\"error\":\"METHOD_NOT_ALLOWED\"}");
            r->allow = "GET, HEAD";
            return;
        }
        routes[i].handler(http, param, param_len, r);
        return;
    }
    reply_static(r, MHD_HTTP_NOT_FOUND, "{\"error\":\"NOT_FOUND\"}");
}

/* ---- libmicrohttpd glue ---- */

static enum MHD_Result send_reply(struct dw_http *http, struct MHD_Connection *conn,
                                  struct reply *r)
{
    struct MHD_Response *resp;
    if (r->owned)
        resp = MHD_create_response_from_buffer(r->len, r->owned, MHD_RESPMEM_MUST_FREE);
    else
        resp = MHD_create_response_from_buffer(r->len, (void *)r->body, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(r->owned);
        dw_log_error(http->opts.log, "http: cannot create a response");
        return MHD_NO;
    }
    enum MHD_Result ok =
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    if (ok == MHD_YES && r->allow)
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (ok == MHD_YES)
        ok = MHD_queue_response(conn, r->status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct dw_http *http = cls;
    (void)version;
    (void)upload_data;

    /* The first call only announces the request; a body (no route takes
     * one) is read and dropped; the answer goes with the last call. */
    if (!*req_cls) {
        *req_cls = http;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }

    struct reply r = {0};
    dispatch(http, method, url, &r);
    if (r.status >= 500)
        dw_log_warn(http->opts.log, "http: %s %s answered %u", method, url, r.status);
    else
        dw_log_debug(http->opts.log, "http: %s %s answered %u", method, url, r.status);
    return send_reply(http, conn, &r);
}

/* Leaves the URL as sent: libmicrohttpd would otherwise percent-decode it. */
static size_t keep_raw(void *cls, struct MHD_Connection *conn, char *uri)
{
    (void)cls;
    (void)conn;
    return strlen(uri);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct dw_http *http = cls;
    char message[512];
    vsnprintf(message, sizeof(message), fmt, ap);
    message[strcspn(message, "\n")] = '\0';
    dw_log_warn(http->opts.log, "libmicrohttpd: %s", message);
}

/* Binds and listens ourselves, so that a port in use is reported as such
 * (libmicrohttpd only says it failed). Returns the socket or -1. */
static int listen_on(const char *address, int port, char *errbuf, size_t errlen)
{
    struct addrinfo hints = {0};
    struct addrinfo *ai = NULL;
    char service[16];
    int fd = -1;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    dw_snprintf(service, sizeof(service), "%d", port);
    if (address && strcmp(address, "0.0.0.0") == 0)
        address = NULL;
    if (!address)
        hints.ai_family = AF_INET;

    int rc = getaddrinfo(address, service, &hints, &ai);
    if (rc) {
        dw_snprintf(errbuf, errlen, "http: bad bind address '%s': %s", address ? address : "",
                    gai_strerror(rc));
        goto out;
    }
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        dw_snprintf(errbuf, errlen, "http: socket: %s", strerror(errno));
        goto out;
    }
    int one = 1;
    /* SO_REUSEADDR only skips TIME_WAIT leftovers; a live listener still
     * makes bind fail with EADDRINUSE. */
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        dw_snprintf(errbuf, errlen, "http: cannot listen on %s port %d: %s",
                    address ? address : "0.0.0.0", port, strerror(errno));
        close(fd);
        fd = -1;
        goto out;
    }
out:
    if (ai)
        freeaddrinfo(ai);
    return fd;
}

enum dw_err dw_http_start(const struct dw_http_options *opts, struct dw_http **out, char *errbuf,
                          size_t errlen)
{
    enum dw_err err = DW_OK;
    struct dw_http *http = NULL;
    int fd = -1;

    *out = NULL;
    if (opts->port <= 0 || opts->port > 65535) {
        dw_snprintf(errbuf, errlen, "http: port %d is out of range 1..65535", opts->port);
        err = DW_ERR_CONFIG;
        goto out;
    }
    fd = listen_on(opts->bind_address, opts->port, errbuf, errlen);
    if (fd < 0) {
        err = DW_ERR_IO;
        goto out;
    }

    http = dw_xcalloc(1, sizeof(*http));
    http->opts = *opts;
    http->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, http, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, http, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)fd, MHD_OPTION_UNESCAPE_CALLBACK, keep_raw, NULL, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
        MHD_OPTION_END);
    if (!http->daemon) {
        dw_snprintf(errbuf, errlen, "http: cannot start the listener on port %d", opts->port);
        err = DW_ERR_HTTP;
        goto out;
    }
    fd = -1; /* the daemon owns it now and closes it when it stops */
    dw_log_info(opts->log, "http: listening on %s port %d",
                opts->bind_address ? opts->bind_address : "0.0.0.0", opts->port);
    *out = http;
    http = NULL;
out:
    if (fd >= 0)
        close(fd);
    free(http);
    return err;
}

void dw_http_stop(struct dw_http *http)
{
    if (!http)
        return;
    MHD_stop_daemon(http->daemon);
    dw_store_destroy(http->store);
    free(http);
}
