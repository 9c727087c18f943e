/*
 * The transfer loop (include/dw/transfer.h): one libcurl multi handle
 * driven through curl_multi_socket_action on its own epoll set, so a pass
 * looks only at sockets that are ready and its cost does not grow with the
 * calls in flight (as curl_multi_perform's does).
 *
 * Threads: one, the owner's; dw_xfer_wake writes to an eventfd and may be
 * called from any thread.
 *
 * Invariants:
 * - An easy handle ("slot") is either running (in the multi, slot->opaque
 *   set) or idle (in loop->idle, kept with its options for the next call),
 *   never both; at most max_calls are kept.
 * - fds[s] says what the loop knows of descriptor s: FD_OWNED and the tag
 *   for a connection socket libcurl opened (on_open_socket); FD_IN_SET and
 *   the EPOLL* events while it is in the epoll set; FD_WATCHED while
 *   libcurl wants it watched. 0: none of these.
 * - Every connection socket counted +1 through opts.conn is counted -1
 *   when libcurl closes it (on_close_socket), at the latest in
 *   dw_xfer_loop_destroy.
 * - slot->connecting: the slot's call reported DW_XFER_CONNECT_BEGAN and
 *   not yet its end (on_prereq, transfer_done or dw_xfer_loop_destroy
 *   reports it and clears the flag).
 */
#include "dw/transfer.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "dw/list.h"
#include "dw/transport.h"

/* Bits of loop->fds beside the EPOLL* event bits. */
#define FD_IN_SET    (1u << 30)
#define FD_WATCHED   (1u << 29)
#define FD_OWNED     (1u << 28) /* a connection socket, opened by on_open_socket */
#define FD_TAG_SHIFT 20
#define FD_TAG_MASK  (0xFu << FD_TAG_SHIFT)
#define FD_EVENTS    (EPOLLIN | EPOLLOUT)

/* A body buffer that grew past this is freed when its slot goes idle, so
 * a few large answers do not stay with thousands of idle slots. */
#define BODY_KEEP 4096

struct dw_xfer_headers {
    struct curl_slist *list;
};

/*
 * One easy handle and what belongs to it for as long as it lives. Options
 * that never change are set once, when it is made; it is reused from call
 * to call without curl_easy_reset, so a call sets only what differs (URL,
 * body, the call's own header lines, timeouts).
 */
struct slot {
    struct dw_xfer_loop *loop;
    struct dw_list_node running; /* in loop->running while running */
    CURL *easy;
    void *opaque; /* while running */
    int tag;
    int transport_tag; /* the tag dw_transport_apply last set it up for; -1: none */
    int64_t started_us;
    bool connecting; /* a connect this call began is under way */
    char error[CURL_ERROR_SIZE];
    struct dw_buf body;
    /* The call's header list: its own lines (copied here), then the
     * constant ones. libcurl only reads the list, during the call. */
    struct curl_slist own[2];
    char own_text[2][DW_XFER_LINE_MAX];
};

/* A finished transfer, read off libcurl's message queue. */
struct done_msg {
    struct slot *slot;
    CURLcode result;
};

struct dw_xfer_loop {
    struct dw_xfer_options opts;
    CURLM *multi;
    int epfd;               /* the sockets libcurl asks us to watch, and wakefd */
    int wakefd;             /* eventfd: other threads wake the loop */
    int64_t curl_due_ms;    /* when libcurl wants its timeout handled; -1: never */
    struct dw_list running; /* slots with a call in the multi handle */
    struct slot **idle;     /* slots kept for reuse */
    size_t nidle;
    struct done_msg *done; /* reap's scratch array */
    size_t done_cap;
    uint32_t *fds;
    size_t nfds;
    long max_connections;
};

struct dw_xfer_headers *dw_xfer_headers_new(const char *const *lines, size_t n)
{
    struct dw_xfer_headers *h = dw_xcalloc(1, sizeof(*h));
    for (size_t i = 0; i < n; i++) {
        struct curl_slist *next = curl_slist_append(h->list, lines[i]);
        if (!next) {
            dw_xfer_headers_free(h);
            return NULL;
        }
        h->list = next;
    }
    return h;
}

void dw_xfer_headers_free(struct dw_xfer_headers *h)
{
    if (!h)
        return;
    curl_slist_free_all(h->list);
    free(h);
}

/* ---- sockets ---- */

void dw_xfer_wake(struct dw_xfer_loop *loop)
{
    uint64_t one = 1;
    ssize_t n = write(loop->wakefd, &one, sizeof(one));
    (void)n; /* EAGAIN: the counter is already non-zero, a wake-up is pending */
}

/* Brings the epoll set's entry for s to `events` and records it. ADD and
 * MOD fall back to each other, so a table entry that is wrong about the
 * kernel's set corrects itself. */
static void fd_register(struct dw_xfer_loop *loop, curl_socket_t s, uint32_t events)
{
    uint32_t *entry = &loop->fds[s];
    struct epoll_event ev = {.events = events, .data.fd = s};
    int op = *entry & FD_IN_SET ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(loop->epfd, op, s, &ev) != 0)
        epoll_ctl(loop->epfd, op == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s, &ev);
    *entry = (*entry & (FD_OWNED | FD_TAG_MASK)) | FD_IN_SET | events;
}

/* Makes loop->fds long enough to hold s. */
static void fds_reserve(struct dw_xfer_loop *loop, curl_socket_t s)
{
    if ((size_t)s < loop->nfds)
        return;
    size_t n = loop->nfds ? loop->nfds : 64;
    while (n <= (size_t)s)
        n *= 2;
    loop->fds = dw_xrealloc(loop->fds, n * sizeof(*loop->fds));
    memset(loop->fds + loop->nfds, 0, (n - loop->nfds) * sizeof(*loop->fds));
    loop->nfds = n;
}

/*
 * libcurl's CURLMOPT_SOCKETFUNCTION: watch (or stop watching) a socket.
 * A kept-alive connection that goes back to libcurl's cache is REMOVEd,
 * and its next call wants EPOLLIN again, so dropping and re-adding it
 * would be two epoll_ctl calls per call for nothing. It stays in the set
 * for EPOLLIN instead, marked not watched; if it reports an event while
 * nobody watches it (the peer closed it), the loop drops it then. When
 * libcurl closes it, on_close_socket forgets it. Only connection sockets
 * (FD_OWNED) are kept so: libcurl closes others (the threaded resolver's
 * socketpair) without telling us, and a stale entry could later claim a
 * new socket of the same number is in the set when it is not.
 */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct dw_xfer_loop *loop = userp;
    if (s < 0)
        return 0;
    fds_reserve(loop, s);
    uint32_t have = loop->fds[s];
    if (what == CURL_POLL_REMOVE) {
        if (!(have & FD_OWNED)) {
            if (have & FD_IN_SET)
                epoll_ctl(loop->epfd, EPOLL_CTL_DEL, s, NULL);
            loop->fds[s] = 0;
            return 0;
        }
        /* Idle: keep EPOLLIN only; an always-ready EPOLLOUT would spin. */
        if ((have & FD_IN_SET) && (have & FD_EVENTS) != EPOLLIN)
            fd_register(loop, s, EPOLLIN);
        loop->fds[s] &= ~FD_WATCHED;
        return 0;
    }
    uint32_t want = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        want |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        want |= EPOLLOUT;
    if (!(have & FD_IN_SET) || (have & FD_EVENTS) != want)
        fd_register(loop, s, want);
    loop->fds[s] |= FD_WATCHED;
    return 0;
}

/* libcurl's CURLMOPT_TIMERFUNCTION: when to call it back for timeouts. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct dw_xfer_loop *loop = userp;
    loop->curl_due_ms = timeout_ms < 0 ? -1 : dw_now_ms() + timeout_ms;
    return 0;
}

/* libcurl's CURLOPT_OPENSOCKETFUNCTION (clientp: the slot whose call
 * connects): opens the socket as libcurl would, marks a connection's
 * socket as ours to keep in the epoll set while idle (see on_socket) and
 * counts it for the call's tag. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *address)
{
    struct slot *slot = clientp;
    struct dw_xfer_loop *loop = slot->loop;
    int fd = socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    if (purpose == CURLSOCKTYPE_IPCXN) {
        fds_reserve(loop, fd);
        loop->fds[fd] = FD_OWNED | ((uint32_t)slot->tag << FD_TAG_SHIFT);
        if (loop->opts.conn)
            loop->opts.conn(loop->opts.owner, slot->tag, 1);
        /* One connect per call, however many sockets it tries (IPv4 and
         * IPv6 side by side count once). */
        if (!slot->connecting) {
            slot->connecting = true;
            if (loop->opts.connect)
                loop->opts.connect(loop->opts.owner, slot->tag, DW_XFER_CONNECT_BEGAN);
        }
    }
    return fd;
}

/* Ends the connect the slot's call began, if one is under way. */
static void connect_ended(struct slot *slot, enum dw_xfer_connect_event ev)
{
    if (!slot->connecting)
        return;
    slot->connecting = false;
    if (slot->loop->opts.connect)
        slot->loop->opts.connect(slot->loop->opts.owner, slot->tag, ev);
}

/* libcurl's CURLOPT_PREREQFUNCTION: the call's connection is made (the
 * TLS handshake too) and the request is about to go; on a reused
 * connection nothing was under way. */
static int on_prereq(void *clientp, char *conn_primary_ip, char *conn_local_ip,
                     int conn_primary_port, int conn_local_port)
{
    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    connect_ended(clientp, DW_XFER_CONNECT_MADE);
    return CURL_PREREQFUNC_OK;
}

/* libcurl's CURLOPT_CLOSESOCKETFUNCTION (clientp: the loop, which outlives
 * every connection; the slot that opened one may be gone): the socket is
 * going away, so is its place in the epoll set (the kernel drops a closed
 * descriptor by itself; the table must forget it too, or a new socket that
 * gets the same number would be taken as registered). */
static int on_close_socket(void *clientp, curl_socket_t s)
{
    struct dw_xfer_loop *loop = clientp;
    if (s >= 0 && (size_t)s < loop->nfds) {
        uint32_t have = loop->fds[s];
        if ((have & FD_OWNED) && loop->opts.conn)
            loop->opts.conn(loop->opts.owner, (int)((have & FD_TAG_MASK) >> FD_TAG_SHIFT), -1);
        loop->fds[s] = 0;
    }
    return close(s);
}

/* ---- slots ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct slot *slot = userp;
    size_t n = size * nmemb;
    /* Returning less than n makes libcurl fail the transfer (CURLE_WRITE_ERROR). */
    return dw_buf_append(&slot->body, data, n) == DW_OK ? n : 0;
}

/* A new slot: an easy handle with every option that is the same for all
 * calls. NULL when libcurl cannot make one. */
static struct slot *slot_new(struct dw_xfer_loop *loop)
{
    struct slot *slot = dw_xcalloc(1, sizeof(*slot));
    slot->loop = loop;
    slot->easy = curl_easy_init();
    if (!slot->easy) {
        free(slot);
        return NULL;
    }
    dw_buf_init(&slot->body, loop->opts.response_cap);
    slot->transport_tag = -1;
    CURL *easy = slot->easy;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, slot);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, slot);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, slot->error);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, slot);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, loop);
    curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(easy, CURLOPT_PREREQDATA, slot);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    /* The receive buffer, which libcurl 7.88 allocates for every transfer
     * (16 KiB by default): times 2,000 calls in flight it was the largest
     * part of our RSS. 1 KiB, libcurl's minimum, holds a channel's answer
     * (status, headers and a small JSON body) in one read; a larger one
     * takes more reads, nothing else. */
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 1024L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    /* No proxy variable was set when the pool started: say so once, rather
     * than have libcurl look through the environment on every call. */
    if (!loop->opts.env_proxy)
        curl_easy_setopt(easy, CURLOPT_PROXY, "");
    return slot;
}

static void slot_destroy(struct slot *slot)
{
    if (!slot)
        return;
    curl_easy_cleanup(slot->easy);
    dw_buf_cleanup(&slot->body);
    free(slot);
}

/* The slot back to the idle list (kept: its handle and options), or freed
 * when the list is full. */
static void slot_put(struct dw_xfer_loop *loop, struct slot *slot)
{
    slot->opaque = NULL;
    if (slot->body.alloc > BODY_KEEP)
        dw_buf_cleanup(&slot->body);
    dw_buf_reset(&slot->body);
    if (loop->nidle < (size_t)loop->opts.max_calls)
        loop->idle[loop->nidle++] = slot;
    else
        slot_destroy(slot);
}

/* ---- calls ---- */

enum dw_err dw_xfer_start(struct dw_xfer_loop *loop, const struct dw_xfer_request *req)
{
    struct slot *slot = loop->nidle ? loop->idle[--loop->nidle] : slot_new(loop);
    if (!slot)
        return DW_ERR_HTTP;
    /* Slots move between tags; their transport options follow (set only
     * on a change: most calls reuse a slot of the same channel). */
    if (loop->opts.transport && slot->transport_tag != req->tag) {
        if (dw_transport_apply(loop->opts.transport, slot->easy, (enum dw_channel_id)req->tag) !=
            DW_OK) {
            slot_destroy(slot);
            return DW_ERR_HTTP;
        }
        slot->transport_tag = req->tag;
    }

    /* The call's own lines in front of the shared constant ones. */
    struct curl_slist *list = req->headers ? req->headers->list : NULL;
    for (int i = 1; i >= 0; i--) {
        if (req->lines[i]) {
            dw_strlcpy(slot->own_text[i], req->lines[i], sizeof(slot->own_text[i]));
            slot->own[i] = (struct curl_slist){slot->own_text[i], list};
            list = &slot->own[i];
        }
    }
    CURL *easy = slot->easy;
    slot->opaque = req->opaque;
    slot->tag = req->tag;
    slot->error[0] = '\0';
    curl_easy_setopt(easy, CURLOPT_URL, req->url);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    slot->started_us = dw_now_us();
    if (curl_multi_add_handle(loop->multi, easy) != CURLM_OK) {
        slot_put(loop, slot);
        return DW_ERR_HTTP;
    }
    dw_list_push_front(&loop->running, &slot->running);
    return DW_OK;
}

int dw_xfer_running(const struct dw_xfer_loop *loop)
{
    return (int)loop->running.len;
}

void dw_xfer_set_max_connections(struct dw_xfer_loop *loop, long n)
{
    if (n == loop->max_connections)
        return;
    loop->max_connections = n;
    curl_multi_setopt(loop->multi, CURLMOPT_MAXCONNECTS, n);
}

static enum dw_xfer_outcome classify(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return DW_XFER_TIMEOUT;
    case CURLE_WRITE_ERROR: /* the body passed response_cap */
        return DW_XFER_TOO_LARGE;
    default:
        return DW_XFER_CONNECT;
    }
}

static void running_unlink(struct dw_xfer_loop *loop, struct slot *slot)
{
    dw_list_remove(&loop->running, &slot->running);
}

static void transfer_done(struct dw_xfer_loop *loop, struct slot *slot, CURLcode rc)
{
    CURL *easy = slot->easy;
    struct dw_xfer_result r = {
        .opaque = slot->opaque,
        .tag = slot->tag,
        .took_us = dw_now_us() - slot->started_us,
    };
    curl_off_t pretransfer_us = 0;
    curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us);
    /* A call that timed out before it could send (pretransfer 0) never got
     * through the connect (or the TLS handshake): the signature of a
     * server's accept queue dropping our SYN. A refused or reset connect
     * is not: nothing listens, and pacing would not help. */
    long version = 0;
    curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &version);
    r.multiplexed = version >= CURL_HTTP_VERSION_2_0;
    r.connect_timed_out = rc == CURLE_OPERATION_TIMEDOUT && pretransfer_us == 0;
    connect_ended(slot, r.connect_timed_out ? DW_XFER_CONNECT_TIMED_OUT : DW_XFER_CONNECT_GAVE_UP);
    if (rc == CURLE_OK) {
        curl_off_t retry_after = 0;
        r.outcome = DW_XFER_ANSWERED;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r.status);
        curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after);
        r.retry_after_s = retry_after > 0 ? (int64_t)retry_after : 0;
        r.body = slot->body.data ? slot->body.data : "";
        r.body_len = slot->body.len;
    } else {
        r.outcome = classify(rc);
        r.error = slot->error[0] ? slot->error : curl_easy_strerror(rc);
    }
    /* Off the multi before the callback, which may start the next call. */
    curl_multi_remove_handle(loop->multi, easy);
    running_unlink(loop, slot);
    loop->opts.done(loop->opts.owner, &r);
    slot_put(loop, slot);
}

/* Hands every finished transfer to transfer_done. All messages are read
 * first: libcurl 7.88's curl_multi_remove_handle walks the queue of unread
 * messages, so removing handles while reading cost O(k^2) for k transfers
 * that ended together. */
static void reap(struct dw_xfer_loop *loop)
{
    CURLMsg *msg;
    int left;
    size_t n = 0;
    while ((msg = curl_multi_info_read(loop->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        if (n == loop->done_cap) {
            loop->done_cap = loop->done_cap ? loop->done_cap * 2 : 64;
            loop->done = dw_xrealloc(loop->done, loop->done_cap * sizeof(*loop->done));
        }
        void *slot = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&slot);
        loop->done[n++] = (struct done_msg){slot, msg->data.result};
    }
    for (size_t i = 0; i < n; i++)
        transfer_done(loop, loop->done[i].slot, loop->done[i].result);
}

int64_t dw_xfer_due_ms(const struct dw_xfer_loop *loop)
{
    return loop->curl_due_ms;
}

void dw_xfer_run_due(struct dw_xfer_loop *loop, int64_t now_ms)
{
    int still = 0;
    if (loop->curl_due_ms >= 0 && now_ms >= loop->curl_due_ms) {
        loop->curl_due_ms = -1;
        curl_multi_socket_action(loop->multi, CURL_SOCKET_TIMEOUT, 0, &still);
    }
    reap(loop);
}

void dw_xfer_wait(struct dw_xfer_loop *loop, int wait_ms)
{
    struct epoll_event events[256];
    int still = 0;
    int n = epoll_wait(loop->epfd, events, (int)DW_ARRAY_LEN(events), wait_ms < 0 ? 0 : wait_ms);
    for (int i = 0; i < n; i++) {
        if (events[i].data.fd == loop->wakefd) {
            uint64_t count;
            ssize_t r = read(loop->wakefd, &count, sizeof(count));
            (void)r;
            continue;
        }
        int fd = events[i].data.fd;
        if ((size_t)fd >= loop->nfds || !(loop->fds[fd] & FD_WATCHED)) {
            /* An idle kept-alive connection spoke (its peer closed it):
             * stop listening; libcurl finds it dead when it next looks. */
            epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
            if ((size_t)fd < loop->nfds)
                loop->fds[fd] &= FD_OWNED | FD_TAG_MASK;
            continue;
        }
        int flags = 0;
        if (events[i].events & EPOLLIN)
            flags |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT)
            flags |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP))
            flags |= CURL_CSELECT_ERR;
        curl_multi_socket_action(loop->multi, fd, flags, &still);
    }
    reap(loop);
}

/* ---- lifecycle ---- */

enum dw_err dw_xfer_loop_create(const struct dw_xfer_options *opts, struct dw_xfer_loop **out,
                                char *errbuf, size_t errlen)
{
    enum dw_err err = DW_OK;
    struct dw_xfer_loop *loop = dw_xcalloc(1, sizeof(*loop));
    loop->opts = *opts;
    loop->epfd = loop->wakefd = -1;
    loop->curl_due_ms = -1;
    if (opts->max_calls < 1 || !opts->done) {
        dw_snprintf(errbuf, errlen, "transfer loop: needs max_calls >= 1 and a callback");
        err = DW_ERR_CONFIG;
        goto out;
    }
    loop->idle = dw_xcalloc((size_t)opts->max_calls, sizeof(*loop->idle));
    loop->multi = curl_multi_init();
    if (!loop->multi) {
        dw_snprintf(errbuf, errlen, "transfer loop: curl_multi_init failed");
        err = DW_ERR_HTTP;
        goto out;
    }
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETDATA, loop);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERDATA, loop);
    dw_xfer_set_max_connections(loop, (long)opts->max_calls + 16);
    if (dw_transport_multi_setup(loop->multi, opts->max_host_connections) != DW_OK) {
        dw_snprintf(errbuf, errlen, "transfer loop: libcurl refused HTTP/2 multiplexing");
        err = DW_ERR_HTTP;
        goto out;
    }
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event wev = {.events = EPOLLIN, .data.fd = loop->wakefd};
    if (loop->epfd < 0 || loop->wakefd < 0 ||
        epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &wev) != 0) {
        dw_snprintf(errbuf, errlen, "transfer loop: epoll/eventfd setup failed");
        err = DW_ERR_IO;
        goto out;
    }
    *out = loop;
out:
    if (err)
        dw_xfer_loop_destroy(loop);
    return err;
}

void dw_xfer_loop_destroy(struct dw_xfer_loop *loop)
{
    if (!loop)
        return;
    if (loop->multi) {
        /* Running calls: off the multi and freed, without a callback. */
        while (!dw_list_empty(&loop->running)) {
            struct slot *slot = DW_CONTAINER_OF(loop->running.head, struct slot, running);
            curl_multi_remove_handle(loop->multi, slot->easy);
            running_unlink(loop, slot);
            connect_ended(slot, DW_XFER_CONNECT_GAVE_UP);
            slot_destroy(slot);
        }
        /* The multi before the table: closing its cached connections
         * calls on_close_socket, which still needs loop->fds. */
        curl_multi_cleanup(loop->multi);
    }
    for (size_t k = 0; k < loop->nidle; k++)
        slot_destroy(loop->idle[k]);
    free(loop->idle);
    free(loop->done);
    free(loop->fds);
    if (loop->epfd >= 0)
        close(loop->epfd);
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    free(loop);
}
