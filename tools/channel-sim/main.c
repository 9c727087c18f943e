/*
 * channel-sim: a development and test stand-in for the six channel APIs of
 * CONTRACT section 3, all served on one loopback port.
 *
 * What it owns
 *   - the route table of the six APIs (plus an optional "/<channel>" prefix
 *     so per-channel base URLs may differ) and the strict checks a real API
 *     would make on each call (auth, Idempotency-Key, body format, fields);
 *   - the idempotency table: per Idempotency-Key, how many calls arrived,
 *     when, and whether a post happened (so a re-sent success is answered
 *     with the same body and counted in duplicatePosts, never posted again);
 *   - fault injection per channel (errors, 429, latency, hang, down, bad
 *     bodies, a capacity of concurrent calls, latency that grows with load),
 *     set at run time through /_sim/faults;
 *   - counters per channel, read through /_sim/stats, and connection
 *     counters (per channel by the first call on each connection);
 *   - optionally a slow listener (--backlog, --accept-rate): an acceptor
 *     thread takes connections from a small kernel queue at a bounded rate
 *     and hands them to libmicrohttpd, so a burst of connects overflows
 *     the queue as it would at a busy server.
 *
 * Threads
 *   - main(): arguments, start, waits for SIGTERM/SIGINT, stops in reverse.
 *   - libmicrohttpd's epoll thread pool (--threads, default: one per CPU)
 *     runs every callback below except the timer's.
 *   - with --accept-rate, one acceptor thread owns the listening socket.
 *   - one timer thread owns a min-heap of wake-up times. A delayed answer or
 *     a hung call suspends its connection (MHD_ALLOW_SUSPEND_RESUME) and
 *     pushes an entry; the timer resumes the connection when it is due, so
 *     no thread ever sleeps on behalf of a call and thousands of delayed
 *     calls cost only memory.
 *
 * Invariants
 *   - A suspended connection is referenced by exactly one heap entry, and
 *     only the timer thread resumes it; after MHD_resume_connection() the
 *     timer never touches that request again (the daemon may free it).
 *   - Suspending and pushing happen under the timer lock after checking
 *     `stopping`, so at shutdown every suspended connection is resumed
 *     before MHD_stop_daemon() (which libmicrohttpd requires).
 *   - A request is counted in inFlight from the moment its body is complete
 *     until libmicrohttpd reports it finished (NOTIFY_COMPLETED), so delayed
 *     and hung calls are in flight too.
 *   - Per key, at most one post ever happens while the key is remembered:
 *     the check and the post are one critical section of the key's shard.
 *   - The key table is bounded (--max-keys): the least recently used key is
 *     evicted, so memory does not grow over millions of keys. An evicted key
 *     that comes back is treated as new.
 *   - Locks are leaves and held for a few instructions: a key-table shard
 *     (64 of them), the fault table, the timer heap. No lock is held while
 *     calling into libmicrohttpd except MHD_suspend_connection() under the
 *     timer lock, and the timer resumes connections with no lock held.
 *
 * Everything mutable lives in `struct sim`, owned by main() and passed to
 * every callback; the only global is the signal flag.
 */
#include "sim.h"

static volatile sig_atomic_t stop_signal;
/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* A uniform double in [0, 1). One atomic add per draw keeps it lock-free and
 * free of per-thread state. */
static double sim_random(struct sim *sim)
{
    uint64_t x = atomic_fetch_add_explicit(&sim->rng_state, 1, memory_order_relaxed);
    return (double)(splitmix64(x) >> 11) * 0x1.0p-53;
}

uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then mixed for the shard bits */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return splitmix64(h);
}

void counter_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t counter_get(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Whether s[0..n) is text a channel takes: well-formed UTF-8 without NUL. */
bool text_ok(const char *s, size_t n)
{
    return dw_utf8_count(s, n) != SIZE_MAX && memchr(s, '\0', n) == NULL;
}

/* Appends s to out as the inside of a JSON string: printable ASCII only,
 * so text echoed from a request can never break the answer; at most max
 * source bytes. */
size_t json_escape_into(char *out, size_t outlen, const char *s, size_t n, size_t max)
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < max && o + 3 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7F) {
            out[o++] = (char)c;
        } else {
            out[o++] = '?';
        }
    }
    if (n > max && o + 4 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return o;
}

/* ------------------------------------------------------------------------ */
/* Answers                                                                  */
/* ------------------------------------------------------------------------ */

static void answer_set(struct answer *a, unsigned status, const char *body)
{
    a->status = status;
    a->retry_after = -1;
    size_t n = strlen(body);
    if (n >= sizeof(a->body))
        n = sizeof(a->body) - 1;
    memcpy(a->body, body, n);
    a->body[n] = '\0';
    a->len = n;
}

/* {"error":code,"message":text[ name]}; name comes from the request and is
 * escaped. */
void answer_error(struct answer *a, unsigned status, const char *code, const char *text,
                  const char *name, size_t name_len)
{
    char esc[160];
    esc[0] = '\0';
    if (name != NULL)
        json_escape_into(esc, sizeof(esc), name, name_len, 64);
    int n = snprintf(a->body, sizeof(a->body), "{\"error\":\"%s\",\"message\":\"%s%s%s\"}", code,
                     text, name != NULL ? ": " : "", esc);
    a->status = status;
    a->retry_after = -1;
    a->len = n < 0 ? 0 : ((size_t)n < sizeof(a->body) ? (size_t)n : sizeof(a->body) - 1);
}

static void media_id_format(struct sim *sim, uint64_t seq, char *out, size_t outlen)
{
    uint32_t tag = (uint32_t)splitmix64(seq ^ sim->id_secret);
    snprintf(out, outlen, "igm-%" PRIu64 "-%08" PRIx32, seq, tag);
}

/* True when id is a media id this process handed out: the tag is a keyed
 * hash of the sequence, so no table is needed and nothing grows. */
bool media_id_valid(struct sim *sim, const char *id, size_t len)
{
    char expect[64];
    if (len < 6 || len >= sizeof(expect) || strncmp(id, "igm-", 4) != 0)
        return false;
    char *end;
    errno = 0;
    unsigned long long seq = strtoull(id + 4, &end, 10);
    if (errno != 0 || end == id + 4 || *end != '-' || seq == 0)
        return false;
    media_id_format(sim, (uint64_t)seq, expect, sizeof(expect));
    return strlen(expect) == len && memcmp(expect, id, len) == 0;
}

static void answer_success(struct sim *sim, const struct endpoint *ep, uint64_t seq,
                           struct answer *a)
{
    char media[64];
    int n = 0;
    a->status = ep->success_status;
    a->retry_after = -1;
    switch (ep->id) {
    case EP_URIDONGNETV_ADS:
        n = snprintf(a->body, sizeof(a->body),
                     "{\"adId\":\"ud-%" PRIu64
                     "\",\"url\":\"https://tv.uridongne.example/ads/ud-%" PRIu64 "\"}",
                     seq, seq);
        break;
    case EP_GINITV_CAMPAIGNS:
        n = snprintf(a->body, sizeof(a->body),
                     "{\"campaignId\":\"gn-%" PRIu64
                     "\",\"url\":\"https://ginitv.example/campaigns/gn-%" PRIu64 "\"}",
                     seq, seq);
        break;
    case EP_RINGOBIZ_RINGBACK:
        n = snprintf(a->body, sizeof(a->body), "{\"ringbackId\":\"rb-%" PRIu64 "\"}", seq);
        break;
    case EP_INSTAGRAM_MEDIA:
        media_id_format(sim, seq, media, sizeof(media));
        n = snprintf(a->body, sizeof(a->body), "{\"id\":\"%s\"}", media);
        break;
    case EP_INSTAGRAM_PUBLISH:
        n = snprintf(a->body, sizeof(a->body),
                     "{\"id\":\"ig-%" PRIu64
                     "\",\"permalink\":\"https://instagram.example/p/ig-%" PRIu64 "/\"}",
                     seq, seq);
        break;
    case EP_NAVER_WRITE:
        n = snprintf(a->body, sizeof(a->body),
                     "{\"message\":{\"result\":{\"postId\":\"nv-%" PRIu64
                     "\",\"url\":\"https://blog.naver.example/sim/nv-%" PRIu64 "\"}}}",
                     seq, seq);
        break;
    case EP_KAKAO_POSTS:
        n = snprintf(a->body, sizeof(a->body),
                     "{\"postId\":\"kp-%" PRIu64
                     "\",\"url\":\"https://pf.kakao.example/sim/kp-%" PRIu64 "\"}",
                     seq, seq);
        break;
    }
    a->len = n < 0 ? 0 : (size_t)n;
}

/* A 2xx whose body lacks the id the worker needs (it must say BAD_RESPONSE). */
static void answer_bad_response(const struct endpoint *ep, struct answer *a)
{
    switch (ep->id) {
    case EP_URIDONGNETV_ADS:
        answer_set(a, 200, "{\"url\":\"https://tv.uridongne.example/ads/\"}");
        break;
    case EP_GINITV_CAMPAIGNS:
        answer_set(a, 200, "{\"url\":\"https://ginitv.example/campaigns/\"}");
        break;
    case EP_INSTAGRAM_PUBLISH:
        answer_set(a, 200, "{\"permalink\":\"https://instagram.example/p/\"}");
        break;
    case EP_NAVER_WRITE:
        answer_set(a, 200,
                   "{\"message\":{\"result\":{\"url\":\"https://blog.naver.example/sim/\"}}}");
        break;
    case EP_KAKAO_POSTS:
        answer_set(a, 200, "{\"url\":\"https://pf.kakao.example/sim/\"}");
        break;
    default:
        answer_set(a, 200, "{\"status\":\"accepted\"}");
        break;
    }
}

/* ------------------------------------------------------------------------ */
/* Counters                                                                 */
/* ------------------------------------------------------------------------ */

/* Raises the peak *max to now if now is higher. */
static void peak_raise(atomic_int_fast64_t *max, int_fast64_t now)
{
    int_fast64_t seen = atomic_load_explicit(max, memory_order_relaxed);
    while (now > seen && !atomic_compare_exchange_weak_explicit(
                             max, &seen, now, memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* Adds one to the gauge *g and raises its peak. */
static void gauge_up(atomic_int_fast64_t *g, atomic_int_fast64_t *max)
{
    peak_raise(max, atomic_fetch_add_explicit(g, 1, memory_order_relaxed) + 1);
}

static void gauge_down(atomic_int_fast64_t *g)
{
    atomic_fetch_sub_explicit(g, 1, memory_order_relaxed);
}

static void stats_enter(struct channel_stats *st)
{
    counter_add(&st->calls, 1);
    gauge_up(&st->in_flight, &st->max_in_flight);
}

/*
 * Takes one of the channel's capacity slots for a call. Every admitted
 * call counts in `serving`, limit or not, so maxServing is always the peak.
 * Returns false, having taken nothing, when capacity (> 0) calls are being
 * served already; otherwise *now_serving is the count with this call. Two
 * calls racing for the last slot may both be refused, never both admitted.
 */
static bool serving_enter(struct channel_stats *st, int capacity, int_fast64_t *now_serving)
{
    int_fast64_t now = atomic_fetch_add_explicit(&st->serving, 1, memory_order_relaxed) + 1;
    if (capacity > 0 && now > capacity) {
        gauge_down(&st->serving);
        return false;
    }
    peak_raise(&st->max_serving, now);
    *now_serving = now;
    return true;
}

/* Records how a call ended. A bad response is a 2xx on the wire but an
 * error for the worker, so it counts in status2xx and in errors. */
static void stats_finish(struct channel_stats *st, unsigned status, enum answer_kind kind)
{
    if (status >= 200 && status < 300)
        counter_add(&st->status2xx, 1);
    else if (status == 429)
        counter_add(&st->status429, 1);
    else if (status >= 400 && status < 500)
        counter_add(&st->status4xx, 1);
    else if (status >= 500)
        counter_add(&st->status5xx, 1);
    if (kind == ANS_SUCCESS) {
        counter_add(&st->success, 1);
    } else {
        counter_add(&st->errors, 1);
        if (kind == ANS_BAD_RESPONSE)
            counter_add(&st->bad_responses, 1);
    }
}

static void stats_drop(struct channel_stats *st)
{
    counter_add(&st->dropped, 1);
    counter_add(&st->errors, 1);
}

static void stats_reset(struct sim *sim)
{
    for (int c = 0; c < CH_COUNT; c++) {
        struct channel_stats *st = &sim->stats[c];
        atomic_uint_fast64_t *all[] = {&st->calls,        &st->success,         &st->errors,
                                       &st->posts,        &st->duplicate_posts, &st->status2xx,
                                       &st->status4xx,    &st->status5xx,       &st->status429,
                                       &st->dropped,      &st->bad_responses,   &st->over_capacity,
                                       &st->conns_opened, &st->served,          &st->served_us};
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
            atomic_store_explicit(all[i], 0, memory_order_relaxed);
        /* Gauges are live, not tallies: their peaks restart from them. */
        atomic_int_fast64_t *gauges[][2] = {{&st->in_flight, &st->max_in_flight},
                                            {&st->serving, &st->max_serving},
                                            {&st->conns_open, &st->max_conns_open}};
        for (size_t i = 0; i < sizeof(gauges) / sizeof(gauges[0]); i++)
            atomic_store_explicit(gauges[i][1],
                                  atomic_load_explicit(gauges[i][0], memory_order_relaxed),
                                  memory_order_relaxed);
    }
    atomic_store_explicit(&sim->conns.accepted, 0, memory_order_relaxed);
    atomic_store_explicit(&sim->conns.max_open,
                          atomic_load_explicit(&sim->conns.open, memory_order_relaxed),
                          memory_order_relaxed);
}

static json_object *gauge_json(atomic_int_fast64_t *g)
{
    return json_object_new_int64(atomic_load_explicit(g, memory_order_relaxed));
}

static json_object *stats_to_json(struct sim *sim)
{
    uint64_t calls = 0, posts = 0, dups = 0;
    json_object *channels = json_object_new_object();
    for (int c = 0; c < CH_COUNT; c++) {
        struct channel_stats *st = &sim->stats[c];
        json_object *o = json_object_new_object();
        uint64_t ch_calls = counter_get(&st->calls);
        uint64_t ch_posts = counter_get(&st->posts);
        uint64_t ch_dups = counter_get(&st->duplicate_posts);
        calls += ch_calls;
        posts += ch_posts;
        dups += ch_dups;
        json_object_object_add(o, "calls", json_object_new_int64((int64_t)ch_calls));
        json_object_object_add(o, "success",
                               json_object_new_int64((int64_t)counter_get(&st->success)));
        json_object_object_add(o, "errors",
                               json_object_new_int64((int64_t)counter_get(&st->errors)));
        json_object_object_add(o, "posts", json_object_new_int64((int64_t)ch_posts));
        json_object_object_add(o, "duplicatePosts", json_object_new_int64((int64_t)ch_dups));
        json_object_object_add(
            o, "inFlight",
            json_object_new_int64(atomic_load_explicit(&st->in_flight, memory_order_relaxed)));
        json_object_object_add(
            o, "maxInFlight",
            json_object_new_int64(atomic_load_explicit(&st->max_in_flight, memory_order_relaxed)));
        json_object_object_add(o, "status2xx",
                               json_object_new_int64((int64_t)counter_get(&st->status2xx)));
        json_object_object_add(o, "status4xx",
                               json_object_new_int64((int64_t)counter_get(&st->status4xx)));
        json_object_object_add(o, "status5xx",
                               json_object_new_int64((int64_t)counter_get(&st->status5xx)));
        json_object_object_add(o, "status429",
                               json_object_new_int64((int64_t)counter_get(&st->status429)));
        json_object_object_add(o, "dropped",
                               json_object_new_int64((int64_t)counter_get(&st->dropped)));
        json_object_object_add(o, "badResponses",
                               json_object_new_int64((int64_t)counter_get(&st->bad_responses)));
        json_object_object_add(o, "overCapacity",
                               json_object_new_int64((int64_t)counter_get(&st->over_capacity)));
        json_object_object_add(o, "serving", gauge_json(&st->serving));
        json_object_object_add(o, "maxServing", gauge_json(&st->max_serving));
        json_object_object_add(o, "served",
                               json_object_new_int64((int64_t)counter_get(&st->served)));
        json_object_object_add(o, "servedMicros",
                               json_object_new_int64((int64_t)counter_get(&st->served_us)));
        json_object_object_add(o, "connectionsOpened",
                               json_object_new_int64((int64_t)counter_get(&st->conns_opened)));
        json_object_object_add(o, "connectionsOpen", gauge_json(&st->conns_open));
        json_object_object_add(o, "maxConnectionsOpen", gauge_json(&st->max_conns_open));
        json_object_object_add(channels, channel_names[c], o);
    }
    json_object *root = json_object_new_object();
    json_object_object_add(root, "calls", json_object_new_int64((int64_t)calls));
    json_object_object_add(root, "posts", json_object_new_int64((int64_t)posts));
    json_object_object_add(root, "duplicatePosts", json_object_new_int64((int64_t)dups));
    json_object_object_add(root, "keys",
                           json_object_new_int64((int64_t)key_table_count(&sim->keys)));
    json_object_object_add(root, "evictedKeys",
                           json_object_new_int64((int64_t)counter_get(&sim->keys.evicted)));
    json_object_object_add(root, "connectionsAccepted",
                           json_object_new_int64((int64_t)counter_get(&sim->conns.accepted)));
    json_object_object_add(root, "connectionsOpen", gauge_json(&sim->conns.open));
    json_object_object_add(root, "maxConnectionsOpen", gauge_json(&sim->conns.max_open));
    json_object_object_add(root, "channels", channels);
    return root;
}

/* ------------------------------------------------------------------------ */
/* Sending                                                                  */
/* ------------------------------------------------------------------------ */

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, const char *body,
                                 size_t len, int retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (retry_after >= 0) {
        char v[16];
        snprintf(v, sizeof(v), "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json_object(struct MHD_Connection *conn, unsigned status,
                                        json_object *o)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    enum MHD_Result ret = send_json(conn, status, s, len, -1);
    json_object_put(o);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status, const char *code,
                                  const char *text)
{
    struct answer a;
    answer_error(&a, status, code, text, NULL, 0);
    return send_json(conn, status, a.body, a.len, -1);
}

/* Sends the decided answer of a channel call and counts it. */
static enum MHD_Result send_answer(struct sim_request *req)
{
    struct answer *a = &req->answer;
    stats_finish(&req->sim->stats[req->ep->channel], a->status, req->kind);
    req->finished = true;
    return send_json(req->conn, a->status, a->body, a->len, a->retry_after);
}

/* ------------------------------------------------------------------------ */
/* Channel calls                                                            */
/* ------------------------------------------------------------------------ */

/* Counts req's connection under ch if this is its first channel call. The
 * worker may share one connection between channels (one base host), so a
 * connection stays with the channel that opened it. */
static void conn_attribute(struct sim *sim, struct MHD_Connection *conn, enum channel ch)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_ctx *cc = ci ? ci->socket_context : NULL;
    if (cc == NULL || cc->channel >= 0)
        return;
    cc->channel = (int)ch;
    counter_add(&sim->stats[ch].conns_opened, 1);
    gauge_up(&sim->stats[ch].conns_open, &sim->stats[ch].max_conns_open);
}

/* The injected delay of an admitted call, given the calls the channel
 * serves now (this one included): latencyMs, plus jitter, grown linearly
 * past the knee: latencyMs * (1 + (serving - knee) / knee). */
static int64_t call_delay_ms(struct sim *sim, const struct channel_faults *f, int64_t serving)
{
    int64_t delay_ms = f->latency_ms;
    if (f->latency_knee > 0 && serving > f->latency_knee)
        delay_ms += (int64_t)f->latency_ms * (serving - f->latency_knee) / f->latency_knee;
    if (f->latency_jitter_ms > 0)
        delay_ms += (int64_t)(sim_random(sim) * (f->latency_jitter_ms + 1));
    return delay_ms < SIM_MAX_LATENCY_MS ? delay_ms : SIM_MAX_LATENCY_MS;
}

/* Decides the answer of a channel call whose body is complete, then sends
 * it now or parks the connection for the injected latency. */
static enum MHD_Result handle_channel_call(struct sim *sim, struct sim_request *req,
                                           const char *method)
{
    const struct endpoint *ep = req->ep;
    struct channel_stats *st = &sim->stats[ep->channel];
    struct channel_faults f;
    struct answer *a = &req->answer;

    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
        struct MHD_Response *r = MHD_create_response_from_buffer(
            sizeof("{\"error\":\"METHOD_NOT_ALLOWED\"}") - 1, "{\"error\":\"METHOD_NOT_ALLOWED\"}",
            MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "POST");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        enum MHD_Result ret = MHD_queue_response(req->conn, 405, r);
        MHD_destroy_response(r);
        return ret;
    }

    stats_enter(st);
    req->counted = true;
    faults_get(sim, ep->channel, &f);
    conn_attribute(sim, req->conn, ep->channel);

    /* Capacity is a gateway's limit: a call beyond it is refused at once,
     * before any other check, and holds no slot. `down` closes before. */
    int_fast64_t serving = 0;
    bool over = false;
    if (!f.down) {
        req->serving = serving_enter(st, f.capacity, &serving);
        over = !req->serving;
        if (req->serving)
            req->serving_since_us = dw_now_us();
    }
    bool hang = f.hang && !over;

    const char *key = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Idempotency-Key");
    size_t key_len = key ? strlen(key) : 0;
    bool key_usable = key_len > 0 && key_len <= SIM_MAX_KEY_LEN;
    const char *event_id = key;
    size_t event_id_len = 0;
    size_t suffix_len = strlen(ep->key_suffix);
    bool key_well_formed = false;
    if (key_usable && key_len > suffix_len &&
        memcmp(key + key_len - suffix_len, ep->key_suffix, suffix_len) == 0) {
        event_id_len = key_len - suffix_len;
        key_well_formed = dw_event_id_valid(key, event_id_len);
    }

    /* One draw decides the injected outcome, so the rates are shares of the
     * calls: [0, rate429) 429, then errorRate, then badResponseRate. */
    double u = sim_random(sim);
    bool want_post = false;
    req->kind = ANS_OTHER;

    if (f.down || hang) {
        /* Not answered; the key still saw the call arrive. */
    } else if (over) {
        answer_error(a, (unsigned)f.capacity_status, "OVER_CAPACITY",
                     "the channel is serving as many calls as it can", NULL, 0);
        a->retry_after = f.capacity_retry_after;
        counter_add(&st->over_capacity, 1);
    } else if (u < f.rate429) {
        answer_error(a, 429, "RATE_LIMITED", "injected rate limit", NULL, 0);
        a->retry_after = f.retry_after;
    } else if (u < f.rate429 + f.error_rate) {
        answer_error(a, (unsigned)f.error_status, "INJECTED_ERROR", "injected failure", NULL, 0);
    } else if (!bearer_present(MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                           MHD_HTTP_HEADER_AUTHORIZATION))) {
        answer_error(a, 401, "UNAUTHORIZED", "Authorization: Bearer <token> required", NULL, 0);
    } else if (key == NULL || key_len == 0) {
        answer_error(a, 400, "MISSING_IDEMPOTENCY_KEY", "Idempotency-Key header required", NULL, 0);
    } else if (!key_usable) {
        answer_error(a, 400, "BAD_IDEMPOTENCY_KEY", "Idempotency-Key is too long", NULL, 0);
    } else if (!key_well_formed) {
        char text[96];
        snprintf(text, sizeof(text), "Idempotency-Key must be <eventId>%s", ep->key_suffix);
        answer_error(a, 400, "BAD_IDEMPOTENCY_KEY", text, NULL, 0);
    } else if (req->too_large) {
        answer_error(a, 413, "BODY_TOO_LARGE", "body is over 1 MiB", NULL, 0);
    } else if (check_body(sim, req, event_id, event_id_len, a)) {
        if (u < f.rate429 + f.error_rate + f.bad_response_rate) {
            answer_bad_response(ep, a);
            req->kind = ANS_BAD_RESPONSE;
        } else {
            want_post = true;
        }
    }

    if (key_usable) {
        struct key_outcome ko;
        key_table_record(sim, key, key_len, ep->channel, req->arrival_wall_ms, want_post, &ko);
        if (ko.was_succeeded)
            counter_add(&st->duplicate_posts, 1);
        if (ko.posted)
            counter_add(&st->posts, 1);
        if (want_post) {
            answer_success(sim, ep, ko.seq, a);
            req->kind = ANS_SUCCESS;
        }
    }

    if (f.down) {
        /* Closing without a response: the client sees the connection end. */
        stats_drop(st);
        req->finished = true;
        return MHD_NO;
    }
    if (hang) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        req->fd = ci ? ci->connect_fd : -1;
        req->hang_since_us = dw_now_us();
        req->state = ST_HANGING;
        if (timer_park(sim, req, req->hang_since_us + SIM_HANG_CHECK_MS * 1000))
            return MHD_YES;
        return MHD_NO; /* stopping: close it like a hang that ended */
    }

    int64_t delay_ms = over ? 0 : call_delay_ms(sim, &f, serving);
    if (delay_ms > 0) {
        req->state = ST_DELAYED;
        if (timer_park(sim, req, dw_now_us() + delay_ms * 1000))
            return MHD_YES;
    }
    return send_answer(req);
}

/* ------------------------------------------------------------------------ */
/* Control endpoints: /_sim/...                                             */
/* ------------------------------------------------------------------------ */

static enum MHD_Result handle_control(struct sim *sim, struct sim_request *req, const char *url,
                                      const char *method)
{
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    const char *what = url + strlen("/_sim/");

    if (strcmp(what, "stats") == 0 && get)
        return send_json_object(req->conn, 200, stats_to_json(sim));
    if (strcmp(what, "faults") == 0 && get)
        return send_json_object(req->conn, 200, faults_to_json(sim));
    if (strcmp(what, "faults") == 0 && post) {
        char err[200];
        if (req->too_large)
            return send_error(req->conn, 413, "BODY_TOO_LARGE", "body is over 1 MiB");
        json_tokener *tok = json_tokener_new();
        json_object *body =
            json_tokener_parse_ex(tok, req->body ? req->body : "", (int)req->body_len);
        bool parsed = json_tokener_get_error(tok) == json_tokener_success;
        json_tokener_free(tok);
        if (!parsed || body == NULL) {
            json_object_put(body);
            return send_error(req->conn, 400, "INVALID_BODY", "the body must be a JSON object");
        }
        bool ok = faults_apply(sim, body, err, sizeof(err));
        json_object_put(body);
        if (!ok)
            return send_error(req->conn, 400, "INVALID_FAULT", err);
        return send_json_object(req->conn, 200, faults_to_json(sim));
    }
    if (strcmp(what, "reset") == 0 && post) {
        faults_reset(sim);
        stats_reset(sim);
        key_table_clear(&sim->keys);
        return send_json(req->conn, 200, "{\"reset\":true}", 14, -1);
    }
    if (strcmp(what, "reset-counters") == 0 && post) {
        stats_reset(sim);
        return send_json(req->conn, 200, "{\"reset\":true}", 14, -1);
    }
    if (strncmp(what, "keys/", 5) == 0 && get) {
        json_object *o = key_table_describe(sim, what + 5);
        if (o == NULL)
            return send_error(req->conn, 404, "NOT_FOUND", "unknown Idempotency-Key");
        return send_json_object(req->conn, 200, o);
    }
    if (strcmp(what, "duplicates") == 0 && get)
        return send_json_object(req->conn, 200, key_table_duplicates(sim));
    bool known = strcmp(what, "stats") == 0 || strcmp(what, "faults") == 0 ||
                 strcmp(what, "reset") == 0 || strcmp(what, "reset-counters") == 0 ||
                 strncmp(what, "keys/", 5) == 0 || strcmp(what, "duplicates") == 0;
    if (known)
        return send_error(req->conn, 405, "METHOD_NOT_ALLOWED", "wrong method for this path");
    return send_error(req->conn, 404, "NOT_FOUND", "unknown control path");
}

/* ------------------------------------------------------------------------ */
/* libmicrohttpd callbacks                                                  */
/* ------------------------------------------------------------------------ */

static const struct endpoint *route(const char *url)
{
    for (size_t i = 0; i < endpoint_count; i++) {
        const struct endpoint *ep = &endpoints[i];
        if (strcmp(url, ep->path) == 0)
            return ep;
        const char *prefix = channel_prefixes[ep->channel];
        size_t pl = strlen(prefix);
        if (strncmp(url, prefix, pl) == 0 && strcmp(url + pl, ep->path) == 0)
            return ep;
    }
    return NULL;
}

static void body_append(struct sim_request *req, const char *data, size_t len)
{
    if (req->too_large)
        return;
    if (req->body_len + len > SIM_MAX_BODY) {
        req->too_large = true; /* keep reading so the connection stays usable */
        return;
    }
    if (req->body_len + len + 1 > req->body_alloc) {
        size_t want = req->body_alloc ? req->body_alloc : 512;
        while (want < req->body_len + len + 1)
            want *= 2;
        req->body = dw_xrealloc(req->body, want);
        req->body_alloc = want;
    }
    memcpy(req->body + req->body_len, data, len);
    req->body_len += len;
    req->body[req->body_len] = '\0';
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct sim *sim = cls;
    struct sim_request *req = *con_cls;
    (void)version;

    if (req == NULL) {
        /* Headers are in: the call has arrived. */
        req = dw_xcalloc(1, sizeof(*req));
        req->sim = sim;
        req->conn = conn;
        req->fd = -1;
        req->ep = route(url);
        req->state = ST_READING;
        req->arrival_wall_ms = dw_wall_ms();
        *con_cls = req;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        body_append(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }

    switch (req->state) {
    case ST_DELAYED:
        return send_answer(req); /* resumed by the timer */
    case ST_HANGING:
        return MHD_NO; /* resumed to be closed: client gone, fault lifted or stopping */
    case ST_READING:
        break;
    }
    if (req->ep != NULL)
        return handle_channel_call(sim, req, method);
    if (strncmp(url, "/_sim/", 6) == 0)
        return handle_control(sim, req, url, method);
    return send_error(conn, 404, "NOT_FOUND", "no such API path");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct sim *sim = cls;
    struct sim_request *req = *con_cls;
    (void)conn;
    (void)toe;
    if (req == NULL)
        return;
    if (req->counted) {
        struct channel_stats *st = &sim->stats[req->ep->channel];
        if (!req->finished)
            stats_drop(st); /* a hang that ended, or a call cut off at shutdown */
        if (req->serving) {
            gauge_down(&st->serving);
            counter_add(&st->served, 1);
            counter_add(&st->served_us, (uint64_t)(dw_now_us() - req->serving_since_us));
        }
        gauge_down(&st->in_flight);
    }
    free(req->body);
    free(req);
    *con_cls = NULL;
}

/* Counts connections: every one accepted, and those open now overall and
 * per channel (see conn_attribute). Runs on the connection's thread. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct sim *sim = cls;
    (void)conn;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn_ctx *cc = dw_xmalloc(sizeof(*cc));
        cc->channel = -1;
        *socket_context = cc;
        counter_add(&sim->conns.accepted, 1);
        gauge_up(&sim->conns.open, &sim->conns.max_open);
        return;
    }
    struct conn_ctx *cc = *socket_context;
    if (cc != NULL) {
        if (cc->channel >= 0)
            gauge_down(&sim->stats[cc->channel].conns_open);
        free(cc);
        *socket_context = NULL;
    }
    gauge_down(&sim->conns.open);
}

/* ------------------------------------------------------------------------ */
/* The slow listener (--accept-rate)                                        */
/* ------------------------------------------------------------------------ */

/* Accepts one connection at a time, at most `rate` per second, and hands
 * each to libmicrohttpd. What it has not accepted waits in the kernel's
 * queue of --backlog; past that, Linux drops the client's SYN, and the
 * client retries it after a second, as with any busy server. */
static void *acceptor_main(void *arg)
{
    struct sim *sim = arg;
    struct acceptor *ac = &sim->acceptor;
    int64_t interval_us = 1000000 / ac->rate;
    int64_t next_us = dw_now_us();

    while (!atomic_load(&ac->stopping)) {
        int64_t now = dw_now_us();
        if (now < next_us) {
            int64_t wait = next_us - now;
            usleep((useconds_t)(wait < 100000 ? wait : 100000)); /* stays responsive to stop */
            continue;
        }
        struct pollfd pfd = {.fd = ac->fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        struct sockaddr_storage addr;
        socklen_t len = sizeof(addr);
        int fd = accept4(ac->fd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        /* It closes fd itself when it cannot take it. */
        (void)MHD_add_connection(sim->daemon, fd, (struct sockaddr *)&addr, len);
        now = dw_now_us();
        next_us = (next_us > now ? next_us : now) + interval_us;
    }
    return NULL;
}

/* Opens the listening socket of the slow listener; returns the fd or -1
 * with errno set. */
static int listen_socket(const struct sockaddr_storage *ss, bool ipv6, int backlog)
{
    int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    socklen_t len = ipv6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

/* libmicrohttpd's log, minus the line it writes each time a handler
 * returns MHD_NO: that is how "down" and ended hangs close a connection, so
 * it is expected and would drown real errors. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    if (strstr(line, "Application reported internal error") != NULL)
        return;
    fprintf(stderr, "channel-sim: libmicrohttpd: %s%s", line,
            line[0] && line[strlen(line) - 1] == '\n' ? "" : "\n");
}

/* Total calls in flight over all channels. */
static int64_t in_flight_total(struct sim *sim)
{
    int64_t n = 0;
    for (int c = 0; c < CH_COUNT; c++)
        n += atomic_load_explicit(&sim->stats[c].in_flight, memory_order_relaxed);
    return n;
}

static void on_signal(int sig)
{
    (void)sig;
    if (stop_signal)
        _exit(1); /* a second signal: stop at once */
    stop_signal = 1;
}

static void usage(FILE *out)
{
    fputs("usage: channel-sim [--port N] [--bind ADDR] [--threads T] [--max-keys N]\n"
          "                   [--backlog N] [--accept-rate R]\n"
          "  --port N         TCP port, 0 (default) picks a free one\n"
          "  --bind ADDR      IPv4 or IPv6 address to listen on (default 127.0.0.1)\n"
          "  --threads T      libmicrohttpd threads (default: number of CPUs)\n"
          "  --max-keys N     Idempotency-Keys remembered, least recently used evicted\n"
          "                   (default 1000000)\n"
          "  --backlog N      listen() backlog, 1 to 65535 (default 4096)\n"
          "  --accept-rate R  accept at most R connections per second (default: no limit)\n"
          "Prints \"listening on ADDR:PORT\" once ready; SIGTERM or SIGINT stops it.\n"
          "See docs/simulator.md.\n",
          out);
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    long port = 0, threads = sysconf(_SC_NPROCESSORS_ONLN), max_keys = SIM_DEFAULT_MAX_KEYS;
    long backlog = SIM_DEFAULT_BACKLOG, accept_rate = 0;
    const char *bind_addr = "127.0.0.1";
    struct sim *sim;
    struct sockaddr_storage ss;
    unsigned flags;
    MHD_socket listen_fd = MHD_INVALID_SOCKET;
    int rc = 1;

    /* Every option takes one value, so arguments come in pairs. */
    for (int i = 1; i < argc; i += 2) {
        const char *arg = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(arg, "--port") != 0 && strcmp(arg, "--bind") != 0 &&
            strcmp(arg, "--threads") != 0 && strcmp(arg, "--max-keys") != 0 &&
            strcmp(arg, "--backlog") != 0 && strcmp(arg, "--accept-rate") != 0) {
            fprintf(stderr, "channel-sim: unknown argument '%s'\n", arg);
            usage(stderr);
            return 2;
        }
        if (val == NULL) {
            fprintf(stderr, "channel-sim: %s needs a value\n", arg);
            usage(stderr);
            return 2;
        }
        if (strcmp(arg, "--port") == 0) {
            if (!parse_long(val, 0, 65535, &port)) {
                fprintf(stderr, "channel-sim: --port must be 0 to 65535, not '%s'\n", val);
                return 2;
            }
        } else if (strcmp(arg, "--bind") == 0) {
            bind_addr = val;
        } else if (strcmp(arg, "--threads") == 0) {
            if (!parse_long(val, 1, 256, &threads)) {
                fprintf(stderr, "channel-sim: --threads must be 1 to 256, not '%s'\n", val);
                return 2;
            }
        } else if (strcmp(arg, "--max-keys") == 0) {
            if (!parse_long(val, SIM_KEY_SHARDS, 100000000, &max_keys)) {
                fprintf(stderr, "channel-sim: --max-keys must be 64 to 100000000, not '%s'\n", val);
                return 2;
            }
        } else if (strcmp(arg, "--backlog") == 0) {
            if (!parse_long(val, 1, 65535, &backlog)) {
                fprintf(stderr, "channel-sim: --backlog must be 1 to 65535, not '%s'\n", val);
                return 2;
            }
        } else if (strcmp(arg, "--accept-rate") == 0) {
            if (!parse_long(val, 1, 1000000, &accept_rate)) {
                fprintf(stderr, "channel-sim: --accept-rate must be 1 to 1000000, not '%s'\n", val);
                return 2;
            }
        }
    }
    if (threads < 1)
        threads = 1;

    memset(&ss, 0, sizeof(ss));
    bool ipv6 = strchr(bind_addr, ':') != NULL;
    if (ipv6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, bind_addr, &sin6->sin6_addr) != 1) {
            fprintf(stderr, "channel-sim: --bind: '%s' is not an IP address\n", bind_addr);
            return 2;
        }
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, bind_addr, &sin->sin_addr) != 1) {
            fprintf(stderr, "channel-sim: --bind: '%s' is not an IP address\n", bind_addr);
            return 2;
        }
    }

    /* Thousands of keep-alive and parked connections need descriptors. */
    struct rlimit rl;
    unsigned conn_limit = 4000;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur > 200)
            conn_limit = rl.rlim_cur > 60000 ? 60000 : (unsigned)(rl.rlim_cur - 100);
    }

    sim = dw_xcalloc(1, sizeof(*sim));
    sim->acceptor.fd = -1;
    sim->acceptor.rate = accept_rate;
    atomic_init(&sim->acceptor.stopping, false);
    atomic_init(&sim->conns.open, 0);
    atomic_init(&sim->conns.max_open, 0);
    pthread_mutex_init(&sim->faults_lock, NULL);
    for (int c = 0; c < CH_COUNT; c++) {
        faults_default(&sim->faults[c]);
        struct channel_stats *st = &sim->stats[c];
        atomic_int_fast64_t *gauges[] = {&st->in_flight,   &st->max_in_flight, &st->serving,
                                         &st->max_serving, &st->conns_open,    &st->max_conns_open};
        for (size_t i = 0; i < sizeof(gauges) / sizeof(gauges[0]); i++)
            atomic_init(gauges[i], 0);
    }
    stats_reset(sim);
    key_table_init(&sim->keys, (size_t)max_keys);
    atomic_init(&sim->next_seq, 1);
    uint64_t seed = (uint64_t)dw_now_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)dw_wall_ms();
    atomic_init(&sim->rng_state, splitmix64(seed));
    sim->id_secret = splitmix64(seed ^ 0x5eed);

    /* Signals go to main() only: blocked here, before any thread exists, so
     * every thread inherits the mask; main() unblocks them in sigsuspend. */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (timer_start(sim) != 0) {
        fputs("channel-sim: cannot start the timer thread\n", stderr);
        goto out_keys;
    }

    flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
            MHD_USE_TURBO;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    if (accept_rate > 0) {
        /* The slow listener: our socket, our accept loop. */
        sim->acceptor.fd = listen_socket(&ss, ipv6, (int)backlog);
        if (sim->acceptor.fd < 0) {
            fprintf(stderr, "channel-sim: cannot listen on %s:%ld: %s\n", bind_addr, port,
                    strerror(errno));
            goto out_timer;
        }
        flags |= MHD_USE_NO_LISTEN_SOCKET;
    }
    /* A pool of one is no pool: libmicrohttpd warns about it, so the
     * option is left out (an array that starts with END is empty). */
    struct MHD_OptionItem pool[] = {
        {threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    /* The logger must come first so that it sees every message. */
    sim->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_access, sim, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, sim, MHD_OPTION_NOTIFY_CONNECTION, on_connection, sim, MHD_OPTION_ARRAY, pool,
        MHD_OPTION_CONNECTION_LIMIT, conn_limit, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)backlog, MHD_OPTION_END);
    if (sim->daemon == NULL) {
        fprintf(stderr, "channel-sim: cannot listen on %s:%ld\n", bind_addr, port);
        goto out_timer;
    }
    unsigned bound = (unsigned)port;
    if (sim->acceptor.fd >= 0) {
        struct sockaddr_storage got;
        socklen_t got_len = sizeof(got);
        if (getsockname(sim->acceptor.fd, (struct sockaddr *)&got, &got_len) == 0)
            bound = ntohs(ipv6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                               : ((struct sockaddr_in *)&got)->sin_port);
        if (pthread_create(&sim->acceptor.thread, NULL, acceptor_main, sim) != 0) {
            fputs("channel-sim: cannot start the acceptor thread\n", stderr);
            goto out_timer;
        }
    } else {
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(sim->daemon, MHD_DAEMON_INFO_BIND_PORT);
        if (info != NULL)
            bound = info->port;
    }
    if (ipv6)
        printf("listening on [%s]:%u\n", bind_addr, bound);
    else
        printf("listening on %s:%u\n", bind_addr, bound);
    fflush(stdout);

    while (!stop_signal)
        sigsuspend(&waitmask);
    rc = 0;

    /* Stop in reverse. New connections are refused first; then the timer
     * resumes every parked connection (libmicrohttpd must not be stopped
     * while one is suspended): delayed calls get their answer at once and
     * hung ones are closed. A short grace lets those answers go out. */
    if (sim->acceptor.fd >= 0) {
        atomic_store(&sim->acceptor.stopping, true);
        pthread_join(sim->acceptor.thread, NULL);
    } else {
        listen_fd = MHD_quiesce_daemon(sim->daemon);
    }
out_timer:
    if (sim->acceptor.fd >= 0) {
        close(sim->acceptor.fd); /* refuses new connections from here on */
        sim->acceptor.fd = -1;
    }
    timer_stop(sim);
    if (sim->daemon != NULL) {
        int64_t grace_end = dw_now_us() + 500 * 1000;
        while (in_flight_total(sim) > 0 && dw_now_us() < grace_end)
            usleep(5000);
        MHD_stop_daemon(sim->daemon);
        if (listen_fd != MHD_INVALID_SOCKET)
            close(listen_fd);
    }
    timer_cleanup(sim);
out_keys:
    key_table_cleanup(&sim->keys);
    pthread_mutex_destroy(&sim->faults_lock);
    free(sim);
    return rc;
}
