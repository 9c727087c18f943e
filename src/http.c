/*
 * The HTTP listener (CONTRACT section 4): libmicrohttpd daemons and the
 * route table `routes[]` (pgbouncer's show_map): a path pattern, its
 * handler and whether the management port serves it. Adding an endpoint is
 * one handler and one line.
 *
 * Threads, and why the probes cannot be starved:
 * - Each port is one libmicrohttpd daemon with one internal polling thread
 *   (epoll). The status port and the management port are separate daemons,
 *   so connections held on one never delay the other.
 * - Handlers on a polling thread never wait: /healthz asks the `live`
 *   callback (atomics only); /readyz answers the result that the readiness
 *   thread computed last (every ready_interval_ms); /metrics renders from
 *   atomics.
 * - A status read suspends its connection and queues a job for the reader
 *   thread, which alone owns the status-read PostgreSQL connection (with a
 *   client-side time limit, so a server that stops answering costs at most
 *   that limit) and resumes the connection with the answer. The queue is
 *   bounded: a full queue answers 503 at once.
 * - Each daemon limits connections in total and per client address and
 *   closes idle ones after idle_timeout_s.
 *
 * Invariants:
 * - Every answer has a body and a Content-Type; libmicrohttpd leaves the
 *   body out for HEAD and keeps Content-Length.
 * - A path that matches a route but not with GET or HEAD is 405 with an
 *   Allow header; a path that matches none is 404 whatever the method.
 * - The URL is not percent-decoded (see keep_raw): an encoded character in
 *   an eventId makes it invalid rather than a different id.
 * - No connection is suspended when a daemon stops: the reader thread
 *   stops first and answers every job it still holds.
 */
#include "dw/http.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "dw/event_id.h"
#include "dw/report.h"
#include "dw/store.h"

#define METRICS_MAX_BYTES (4 * 1024 * 1024)
#define STATUS_QUEUE_MAX  64 /* status reads waiting for the reader */
#define LISTEN_BACKLOG    256
/* At most one warn line per kind this often; the rest are counted. */
#define WARN_EVERY_MS 10000

#define DEFAULT_READY_INTERVAL_MS 1000
#define DEFAULT_STATUS_TIMEOUT_MS 2000
#define DEFAULT_MAX_CONNECTIONS   256
#define DEFAULT_PER_CLIENT        16
#define DEFAULT_IDLE_TIMEOUT_S    10

#define CT_JSON    "application/json"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* What a handler answers. */
struct reply {
    unsigned status;
    const char *content_type;
    const char *body; /* static, or `owned` */
    char *owned;      /* malloc'ed body, freed by libmicrohttpd */
    size_t len;
    const char *allow; /* the Allow header of a 405 */
};

/* A status read waiting for, or answered by, the reader thread. */
struct status_job {
    struct status_job *next;
    struct MHD_Connection *conn; /* suspended while queued */
    char event_id[DW_EVENT_ID_MAX + 1];
    int64_t deadline_ms;
    bool done; /* reply filled; the connection was resumed */
    struct reply reply;
};

/* A rate-limited warn line (shared by the polling threads and the reader). */
struct warn_limit {
    _Atomic int64_t next_ms;
    atomic_ulong suppressed;
};

struct dw_http;

/* One listening port. */
struct port {
    struct dw_http *http;
    struct MHD_Daemon *daemon;
    bool management; /* serves only the routes marked for it */
    int number;
};

struct dw_http {
    struct dw_http_options opts; /* a copy; the pointers are borrowed; defaults filled */
    struct port status_port;
    struct port management_port; /* daemon NULL when none */
    struct warn_limit warn_5xx;  /* answers of 5xx */
    struct warn_limit warn_db;   /* the status reader's PostgreSQL trouble */
    struct warn_limit warn_mhd;  /* libmicrohttpd's own (aborted connections...) */

    /* Readiness: written by the readiness thread, read by handlers. */
    pthread_mutex_t ready_lock;
    pthread_cond_t ready_wake;
    bool ready_ok;
    char ready_why[256];
    bool ready_stop;
    pthread_t ready_thread;
    bool ready_started;

    /* Status reads. `jobs` and `reader_stop` under reader_lock. */
    pthread_mutex_t reader_lock;
    pthread_cond_t reader_wake;
    struct status_job *jobs_head, *jobs_tail;
    size_t jobs_count;
    bool reader_stop;
    pthread_t reader_thread;
    bool reader_started;
    /* Reader thread only. */
    struct dw_store *store; /* NULL until first needed; reconnects by its own policy */
};

static void warn_limited(struct dw_http *http, struct warn_limit *w, const char *fmt, ...)
    DW_PRINTF(3, 4);

static void warn_limited(struct dw_http *http, struct warn_limit *w, const char *fmt, ...)
{
    int64_t now = dw_now_ms();
    int64_t next = atomic_load(&w->next_ms);
    if (now < next || !atomic_compare_exchange_strong(&w->next_ms, &next, now + WARN_EVERY_MS)) {
        atomic_fetch_add(&w->suppressed, 1);
        return;
    }
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    unsigned long skipped = atomic_exchange(&w->suppressed, 0);
    if (skipped)
        dw_log_warn(http->opts.log, "%s (%lu similar line(s) in the last %d s not logged)", text,
                    skipped, WARN_EVERY_MS / 1000);
    else
        dw_log_warn(http->opts.log, "%s", text);
}

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

/* {"status": status, "reason": why} */
static void reply_reason(struct reply *r, unsigned code, const char *status, const char *why)
{
    struct json_object *root = json_object_new_object();
    json_object_object_add(root, "status", json_object_new_string(status));
    json_object_object_add(root, "reason", json_object_new_string(why[0] ? why : "unknown"));
    char *json = dw_xstrdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
    json_object_put(root);
    reply_owned(r, code, CT_JSON, json, strlen(json));
}

/* ---- readiness, on its own thread ---- */

static void *readiness_main(void *arg)
{
    struct dw_http *http = arg;
    pthread_mutex_lock(&http->ready_lock);
    while (!http->ready_stop) {
        pthread_mutex_unlock(&http->ready_lock);
        char why[sizeof(http->ready_why)] = "";
        bool ok = http->opts.ready(http->opts.ready_opaque, why, sizeof(why));
        pthread_mutex_lock(&http->ready_lock);
        http->ready_ok = ok;
        dw_strlcpy(http->ready_why, ok ? "" : why, sizeof(http->ready_why));

        struct timespec until = dw_deadline_in(http->opts.ready_interval_ms);
        while (!http->ready_stop &&
               pthread_cond_timedwait(&http->ready_wake, &http->ready_lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&http->ready_lock);
    return NULL;
}

/* ---- status reads, on the reader thread ---- */

/* Reads one event on the reader's own connection: made when first needed
 * and, when a read finds it broken, made again and the read repeated once.
 * When to try connecting is the store's reconnect policy: while it says
 * wait (after a failed attempt, or a read that passed the time limit, so
 * the next job does not wait the limit again) a read fails at once. */
static enum dw_err read_status(struct dw_http *http, const char *event_id, struct dw_status *st)
{
    enum dw_err err;

    if (!http->store) {
        http->store = dw_store_create_offline(http->opts.pg_dsn, http->opts.log);
        if (!http->store)
            return DW_ERR_DB;
        dw_store_set_timeout(http->store, http->opts.status_read_timeout_ms);
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!dw_store_connected(http->store)) {
            if (dw_now_ms() < dw_store_retry_at(http->store))
                return DW_ERR_DB;
            err = dw_store_reconnect(http->store);
            if (err) {
                dw_metrics_count(http->opts.metrics, DW_COUNTER_DB_ERRORS, 1);
                warn_limited(http, &http->warn_db,
                             "status read: PostgreSQL unavailable; next attempt in %lld ms",
                             (long long)(dw_store_retry_at(http->store) - dw_now_ms()));
                return err;
            }
        }
        err = dw_store_read(http->store, event_id, st);
        if (err != DW_ERR_DB)
            return err;
        dw_metrics_count(http->opts.metrics, DW_COUNTER_DB_ERRORS, 1);
        if (dw_store_connected(http->store) || dw_store_timed_out(http->store))
            return err; /* the query failed, or the time limit passed */
        warn_limited(http, &http->warn_db, "status read: PostgreSQL connection lost; reconnecting");
    }
    return DW_ERR_DB;
}

static void answer_job(struct dw_http *http, struct status_job *job)
{
    struct reply *r = &job->reply;
    if (dw_now_ms() >= job->deadline_ms) {
        reply_static(r, MHD_HTTP_SERVICE_UNAVAILABLE, "{\"error\":\"UNAVAILABLE\"}");
        return;
    }
    struct dw_status *st = dw_xcalloc(1, sizeof(*st));
    enum dw_err err = read_status(http, job->event_id, st);
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

static void *reader_main(void *arg)
{
    struct dw_http *http = arg;
    pthread_mutex_lock(&http->reader_lock);
    for (;;) {
        while (!http->jobs_head && !http->reader_stop)
            pthread_cond_wait(&http->reader_wake, &http->reader_lock);
        struct status_job *job = http->jobs_head;
        if (!job)
            break; /* stopping, nothing left */
        http->jobs_head = job->next;
        if (!http->jobs_head)
            http->jobs_tail = NULL;
        http->jobs_count--;
        bool stopping = http->reader_stop;
        pthread_mutex_unlock(&http->reader_lock);

        if (stopping)
            reply_static(&job->reply, MHD_HTTP_SERVICE_UNAVAILABLE, "{\"error\":\"UNAVAILABLE\"}");
        else
            answer_job(http, job);
        job->done = true;
        MHD_resume_connection(job->conn);

        pthread_mutex_lock(&http->reader_lock);
    }
    pthread_mutex_unlock(&http->reader_lock);
    return NULL;
}

/* Suspends the job's connection and queues the job; false (and nothing
 * done) when the queue is full or stopping. Suspending under the lock
 * means the reader cannot resume a connection not yet suspended. */
static bool enqueue_job(struct dw_http *http, struct status_job *job)
{
    bool queued = false;
    pthread_mutex_lock(&http->reader_lock);
    if (!http->reader_stop && http->jobs_count < STATUS_QUEUE_MAX) {
        MHD_suspend_connection(job->conn);
        if (http->jobs_tail)
            http->jobs_tail->next = job;
        else
            http->jobs_head = job;
        http->jobs_tail = job;
        http->jobs_count++;
        queued = true;
        pthread_cond_signal(&http->reader_wake);
    }
    pthread_mutex_unlock(&http->reader_lock);
    return queued;
}

/* ---- routes ---- */

/* A handler gets the path segment matched by `{...}` in its pattern (not
 * NUL-terminated; empty when the pattern has none). It either fills `r`,
 * or returns a status job to run on the reader thread. */
typedef struct status_job *(*route_fn)(struct dw_http *http, const char *param, size_t param_len,
                                       struct reply *r);

static struct status_job *route_status(struct dw_http *http, const char *param, size_t param_len,
                                       struct reply *r)
{
    if (!dw_event_id_valid(param, param_len)) {
        reply_static(r, MHD_HTTP_BAD_REQUEST, "{\"error\":\"INVALID_EVENT_ID\"}");
        return NULL;
    }
    struct status_job *job = dw_xcalloc(1, sizeof(*job));
    memcpy(job->event_id, param, param_len);
    job->event_id[param_len] = '\0';
    job->deadline_ms = dw_now_ms() + http->opts.status_read_timeout_ms;
    return job;
}

static struct status_job *route_healthz(struct dw_http *http, const char *param, size_t param_len,
                                        struct reply *r)
{
    (void)param;
    (void)param_len;
    char why[256] = "";
    if (!http->opts.live || http->opts.live(http->opts.live_opaque, why, sizeof(why)))
        reply_static(r, MHD_HTTP_OK, "{\"status\":\"UP\"}");
    else
        reply_reason(r, MHD_HTTP_SERVICE_UNAVAILABLE, "DOWN", why);
    return NULL;
}

static struct status_job *route_readyz(struct dw_http *http, const char *param, size_t param_len,
                                       struct reply *r)
{
    (void)param;
    (void)param_len;
    char why[sizeof(http->ready_why)];
    bool ok = true;
    if (http->opts.ready) {
        pthread_mutex_lock(&http->ready_lock);
        ok = http->ready_ok;
        dw_strlcpy(why, http->ready_why, sizeof(why));
        pthread_mutex_unlock(&http->ready_lock);
    }
    if (ok)
        reply_static(r, MHD_HTTP_OK, "{\"status\":\"READY\"}");
    else
        reply_reason(r, MHD_HTTP_SERVICE_UNAVAILABLE, "NOT_READY", why);
    return NULL;
}

static struct status_job *route_metrics(struct dw_http *http, const char *param, size_t param_len,
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
        return NULL;
    }
    size_t len;
    char *text = dw_buf_detach(&buf, &len);
    reply_owned(r, MHD_HTTP_OK, CT_METRICS, text, len);
    return NULL;
}

static const struct route {
    const char *pattern; /* "{name}" matches one path segment */
    route_fn handler;
    bool management; /* also served on the management port */
} routes[] = {
    {"/distribution/{eventId}/status", route_status, false},
    {"/healthz", route_healthz, true},
    {"/readyz", route_readyz, true},
    {"/metrics", route_metrics, true},
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

static struct status_job *dispatch(struct port *port, const char *method, const char *path,
                                   struct reply *r)
{
    bool readable =
        strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

    for (size_t i = 0; i < DW_ARRAY_LEN(routes); i++) {
        const char *param = "";
        size_t param_len = 0;
        if (port->management && !routes[i].management)
            continue;
        if (!match(routes[i].pattern, path, &param, &param_len))
            continue;
        if (!readable) {
            reply_static(r, MHD_HTTP_METHOD_NOT_ALLOWED, "{\"error\":\"METHOD_NOT_ALLOWED\"}");
            r->allow = "GET, HEAD";
            return NULL;
        }
        return routes[i].handler(port->http, param, param_len, r);
    }
    reply_static(r, MHD_HTTP_NOT_FOUND, "{\"error\":\"NOT_FOUND\"}");
    return NULL;
}

/* ---- libmicrohttpd glue ---- */

static enum MHD_Result send_reply(struct dw_http *http, struct MHD_Connection *conn,
                                  struct reply *r, const char *method, const char *url)
{
    if (r->status >= 500)
        warn_limited(http, &http->warn_5xx, "http: %s %s answered %u", method, url, r->status);
    else
        dw_log_debug(http->opts.log, "http: %s %s answered %u", method, url, r->status);

    struct MHD_Response *resp;
    if (r->owned)
        resp = MHD_create_response_from_buffer(r->len, r->owned, MHD_RESPMEM_MUST_FREE);
    else
        resp = MHD_create_response_from_buffer(r->len, (void *)r->body, MHD_RESPMEM_PERSISTENT);
    r->owned = NULL;
    if (!resp) {
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

/* *req_cls: NULL before the request is announced, the port once it is, a
 * status_job while one runs for it. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct port *port = cls;
    struct dw_http *http = port->http;
    (void)version;
    (void)upload_data;

    /* The first call only announces the request; a body (no route takes
     * one) is read and dropped; the answer goes with the last call. */
    if (!*req_cls) {
        *req_cls = port;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*req_cls != port) {
        /* Resumed by the reader thread with the answer. */
        struct status_job *job = *req_cls;
        *req_cls = port;
        enum MHD_Result ok = send_reply(http, conn, &job->reply, method, url);
        free(job);
        return ok;
    }

    struct reply r = {0};
    struct status_job *job = dispatch(port, method, url, &r);
    if (job) {
        job->conn = conn;
        *req_cls = job;
        if (enqueue_job(http, job))
            return MHD_YES;
        *req_cls = port;
        free(job);
        reply_static(&r, MHD_HTTP_SERVICE_UNAVAILABLE, "{\"error\":\"UNAVAILABLE\"}");
    }
    return send_reply(http, conn, &r, method, url);
}

/* A job whose connection closed before its answer went out. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct port *port = cls;
    (void)conn;
    (void)toe;
    if (*req_cls && *req_cls != port) {
        struct status_job *job = *req_cls;
        free(job->reply.owned);
        free(job);
    }
    *req_cls = NULL;
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
    warn_limited(http, &http->warn_mhd, "libmicrohttpd: %s", message);
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
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
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

static enum dw_err port_start(struct dw_http *http, struct port *port, int number, bool management,
                              char *errbuf, size_t errlen)
{
    if (number <= 0 || number > 65535) {
        dw_snprintf(errbuf, errlen, "http: port %d is out of range 1..65535", number);
        return DW_ERR_CONFIG;
    }
    int fd = listen_on(http->opts.bind_address, number, errbuf, errlen);
    if (fd < 0)
        return DW_ERR_IO;
    port->http = http;
    port->management = management;
    port->number = number;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (!management)
        flags |= MHD_ALLOW_SUSPEND_RESUME;
    port->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, port, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, http,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_UNESCAPE_CALLBACK, keep_raw, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, port, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)http->opts.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)http->opts.max_connections_per_client, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)http->opts.idle_timeout_s, MHD_OPTION_END);
    if (!port->daemon) {
        close(fd);
        dw_snprintf(errbuf, errlen, "http: cannot start the listener on port %d", number);
        return DW_ERR_HTTP;
    }
    dw_log_info(http->opts.log, "http: listening on %s port %d%s",
                http->opts.bind_address ? http->opts.bind_address : "0.0.0.0", number,
                management ? " (management: probes and metrics)" : "");
    return DW_OK;
}

static void fill_defaults(struct dw_http_options *o)
{
    if (o->ready_interval_ms <= 0)
        o->ready_interval_ms = DEFAULT_READY_INTERVAL_MS;
    if (o->status_read_timeout_ms <= 0)
        o->status_read_timeout_ms = DEFAULT_STATUS_TIMEOUT_MS;
    if (o->max_connections <= 0)
        o->max_connections = DEFAULT_MAX_CONNECTIONS;
    if (o->max_connections_per_client <= 0)
        o->max_connections_per_client = DEFAULT_PER_CLIENT;
    if (o->idle_timeout_s <= 0)
        o->idle_timeout_s = DEFAULT_IDLE_TIMEOUT_S;
}

/* Stops the reader (answering what it still holds), then the daemons. */
static void shut_down(struct dw_http *http)
{
    if (http->reader_started) {
        pthread_mutex_lock(&http->reader_lock);
        http->reader_stop = true;
        pthread_cond_signal(&http->reader_wake);
        pthread_mutex_unlock(&http->reader_lock);
        pthread_join(http->reader_thread, NULL);
    }
    if (http->management_port.daemon)
        MHD_stop_daemon(http->management_port.daemon);
    if (http->status_port.daemon)
        MHD_stop_daemon(http->status_port.daemon);
    if (http->ready_started) {
        pthread_mutex_lock(&http->ready_lock);
        http->ready_stop = true;
        pthread_cond_signal(&http->ready_wake);
        pthread_mutex_unlock(&http->ready_lock);
        pthread_join(http->ready_thread, NULL);
    }
    dw_store_destroy(http->store);
    pthread_cond_destroy(&http->reader_wake);
    pthread_mutex_destroy(&http->reader_lock);
    pthread_cond_destroy(&http->ready_wake);
    pthread_mutex_destroy(&http->ready_lock);
    free(http);
}

enum dw_err dw_http_start(const struct dw_http_options *opts, struct dw_http **out, char *errbuf,
                          size_t errlen)
{
    enum dw_err err = DW_OK;
    *out = NULL;
    if (opts->management_port && opts->management_port == opts->port) {
        dw_snprintf(errbuf, errlen, "http: the management port must differ from port %d",
                    opts->port);
        return DW_ERR_CONFIG;
    }

    struct dw_http *http = dw_xcalloc(1, sizeof(*http));
    http->opts = *opts;
    fill_defaults(&http->opts);
    pthread_mutex_init(&http->ready_lock, NULL);
    dw_cond_init_monotonic(&http->ready_wake);
    pthread_mutex_init(&http->reader_lock, NULL);
    pthread_cond_init(&http->reader_wake, NULL);
    /* Not ready until the first check says so. */
    dw_strlcpy(http->ready_why, "starting", sizeof(http->ready_why));

    if (opts->ready) {
        if (pthread_create(&http->ready_thread, NULL, readiness_main, http) != 0) {
            dw_snprintf(errbuf, errlen, "http: cannot start the readiness thread");
            err = DW_ERR_HTTP;
            goto out;
        }
        http->ready_started = true;
    }
    if (pthread_create(&http->reader_thread, NULL, reader_main, http) != 0) {
        dw_snprintf(errbuf, errlen, "http: cannot start the status reader thread");
        err = DW_ERR_HTTP;
        goto out;
    }
    http->reader_started = true;
    err = port_start(http, &http->status_port, opts->port, false, errbuf, errlen);
    if (err)
        goto out;
    if (opts->management_port) {
        err = port_start(http, &http->management_port, opts->management_port, true, errbuf, errlen);
        if (err)
            goto out;
    }
    *out = http;
    http = NULL;
out:
    if (http)
        shut_down(http);
    return err;
}

void dw_http_stop(struct dw_http *http)
{
    if (http)
        shut_down(http);
}
