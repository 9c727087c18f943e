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
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dw/common.h"
#include "dw/event_id.h"
#include "dw/heap.h"
#include "dw/utf8.h"

/* ------------------------------------------------------------------------ */
/* Limits and defaults                                                      */
/* ------------------------------------------------------------------------ */

#define SIM_MAX_BODY         (1024 * 1024) /* larger bodies get 413 */
#define SIM_MAX_KEY_LEN      256           /* longer Idempotency-Keys get 400 */
#define SIM_DEFAULT_MAX_KEYS 1000000
#define SIM_KEY_SHARDS       64           /* power of two; spreads lock contention */
#define SIM_KEY_TIMES_MAX    64           /* arrival times kept per key */
#define SIM_HANG_CHECK_MS    250          /* how often a hung call checks its client */
#define SIM_HANG_MAX_MS      (600 * 1000) /* a hang never outlives this */
#define SIM_TIMER_BATCH      512          /* resumes per timer pass, lock released between */
#define SIM_MAX_LATENCY_MS   (600 * 1000)
#define SIM_RINGOBIZ_MAX_CP  60
#define SIM_DEFAULT_BACKLOG  4096    /* listen() backlog unless --backlog */
#define SIM_MAX_CAPACITY     1000000 /* bound of the capacity and latencyKnee faults */

/* ------------------------------------------------------------------------ */
/* Channels and their endpoints                                             */
/* ------------------------------------------------------------------------ */

enum channel { CH_URIDONGNETV, CH_GINITV, CH_RINGOBIZ, CH_INSTAGRAM, CH_NAVER, CH_KAKAO, CH_COUNT };

static const char *const channel_names[CH_COUNT] = {
    "URIDONGNETV", "GINITV", "RINGOBIZ", "INSTAGRAM", "NAVER", "KAKAO",
};

/* The optional path prefix of each channel, e.g. "/kakao/v1/api/...". */
static const char *const channel_prefixes[CH_COUNT] = {
    "/uridongnetv", "/ginitv", "/ringobiz", "/instagram", "/naver", "/kakao",
};

enum endpoint_id {
    EP_URIDONGNETV_ADS,
    EP_GINITV_CAMPAIGNS,
    EP_RINGOBIZ_RINGBACK,
    EP_INSTAGRAM_MEDIA,
    EP_INSTAGRAM_PUBLISH,
    EP_NAVER_WRITE,
    EP_KAKAO_POSTS,
};

enum body_format { FMT_JSON, FMT_FORM };

/* One row per API call of CONTRACT section 3: the table drives routing,
 * the field checks and the shape of the answer. */
struct endpoint {
    enum endpoint_id id;
    enum channel channel;
    const char *path;
    enum body_format format;
    const char *key_suffix;      /* what the Idempotency-Key must end with */
    const char *const *allowed;  /* every field the contract sends, NULL-ended */
    const char *const *required; /* NULL-ended */
    unsigned success_status;
};

static const char *const uridongnetv_allowed[] = {"campaignId", "title",  "content",
                                                  "imageUrl",   "radius", NULL};
static const char *const ginitv_allowed[] = {"campaignId", "title",  "content",
                                             "imageUrl",   "region", NULL};
static const char *const tv_required[] = {"campaignId", "title", NULL};
static const char *const ringobiz_fields[] = {"campaignId", "phoneNumber", "message", NULL};
static const char *const ig_media_fields[] = {"image_url", "caption", NULL};
static const char *const ig_publish_fields[] = {"creation_id", NULL};
static const char *const naver_allowed[] = {"title", "contents", NULL};
static const char *const kakao_allowed[] = {"title", "content", "imageUrl", NULL};
static const char *const title_required[] = {"title", NULL};

/* GINITV answers 201 Created so the worker's "2xx is success" is exercised
 * with something other than 200. */
static const struct endpoint endpoints[] = {
    {EP_URIDONGNETV_ADS, CH_URIDONGNETV, "/api/v1/ads", FMT_JSON, ":URIDONGNETV",
     uridongnetv_allowed, tv_required, 200},
    {EP_GINITV_CAMPAIGNS, CH_GINITV, "/api/v1/campaigns", FMT_JSON, ":GINITV", ginitv_allowed,
     tv_required, 201},
    {EP_RINGOBIZ_RINGBACK, CH_RINGOBIZ, "/api/v1/ringback", FMT_JSON, ":RINGOBIZ", ringobiz_fields,
     ringobiz_fields, 200},
    {EP_INSTAGRAM_MEDIA, CH_INSTAGRAM, "/v1/media", FMT_JSON, ":INSTAGRAM", ig_media_fields,
     ig_media_fields, 200},
    {EP_INSTAGRAM_PUBLISH, CH_INSTAGRAM, "/v1/media_publish", FMT_JSON, ":INSTAGRAM:publish",
     ig_publish_fields, ig_publish_fields, 200},
    {EP_NAVER_WRITE, CH_NAVER, "/blog/writePost.json", FMT_FORM, ":NAVER", naver_allowed,
     title_required, 200},
    {EP_KAKAO_POSTS, CH_KAKAO, "/v1/api/talk/channels/posts", FMT_JSON, ":KAKAO", kakao_allowed,
     title_required, 200},
};

#define ENDPOINT_COUNT (sizeof(endpoints) / sizeof(endpoints[0]))

/* ------------------------------------------------------------------------ */
/* State                                                                    */
/* ------------------------------------------------------------------------ */

/* Faults of one channel; a plain value copied out under sim->faults_lock. */
struct channel_faults {
    double error_rate;
    int error_status;
    double rate429;
    int retry_after;
    int latency_ms;
    int latency_jitter_ms;
    bool hang;
    bool down;
    double bad_response_rate;
    int capacity;             /* calls served at once; 0: no limit */
    int capacity_status;      /* the answer to a call beyond capacity */
    int capacity_retry_after; /* its Retry-After in seconds; < 0: none */
    int latency_knee;         /* calls served at once before latency grows; 0: never */
};

/* Counters of one channel. Relaxed atomics: each is a tally, nothing is
 * ordered by them. Aligned so two channels never share a cache line. */
struct channel_stats {
    _Alignas(64) atomic_uint_fast64_t calls;
    atomic_uint_fast64_t success;
    atomic_uint_fast64_t errors;
    atomic_uint_fast64_t posts;
    atomic_uint_fast64_t duplicate_posts;
    atomic_uint_fast64_t status2xx;
    atomic_uint_fast64_t status4xx;
    atomic_uint_fast64_t status5xx;
    atomic_uint_fast64_t status429;
    atomic_uint_fast64_t dropped;
    atomic_uint_fast64_t bad_responses;
    atomic_uint_fast64_t over_capacity; /* answered capacity_status: over capacity */
    atomic_uint_fast64_t conns_opened;  /* connections whose first call was ours */
    atomic_int_fast64_t in_flight;
    atomic_int_fast64_t max_in_flight;
    atomic_int_fast64_t serving; /* calls admitted (not over capacity) and not finished */
    atomic_int_fast64_t max_serving;
    atomic_int_fast64_t conns_open;
    atomic_int_fast64_t max_conns_open;
};

/* Connections over all channels (and control calls). */
struct conn_stats {
    atomic_uint_fast64_t accepted;
    atomic_int_fast64_t open;
    atomic_int_fast64_t max_open;
};

/* The socket context of one connection: which channel it is counted
 * under, from its first channel call on. Touched only by the thread that
 * serves the connection. */
struct conn_ctx {
    int channel; /* -1 until the first channel call */
};

/* The slow listener of --accept-rate: the simulator owns the listening
 * socket (its backlog is --backlog) and accepts at most `rate` per second. */
struct acceptor {
    int fd;
    long rate;
    atomic_bool stopping;
    pthread_t thread;
};

/* What one Idempotency-Key has seen. Arrival times are a ring that starts
 * inline (most keys are called once or twice) and grows to
 * SIM_KEY_TIMES_MAX on the heap. */
struct key_entry {
    struct key_entry *chain;         /* next in the same bucket */
    struct key_entry *older, *newer; /* the shard's LRU list */
    uint64_t hash;
    uint64_t seq; /* id sequence of the post; 0 while nothing was posted */
    int64_t *times;
    int64_t inline_times[2];
    uint32_t calls;
    uint32_t posts;
    uint8_t channel;
    uint8_t ntimes;
    uint8_t times_cap;
    uint8_t times_head;
    uint16_t keylen;
    char key[];
};

struct key_shard {
    _Alignas(64) pthread_mutex_t lock;
    struct key_entry **buckets;
    size_t bucket_mask;
    struct key_entry *oldest, *newest;
    size_t count;
    size_t cap;
};

struct key_table {
    struct key_shard shards[SIM_KEY_SHARDS];
    atomic_uint_fast64_t evicted;
};

struct timer {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct dw_heap heap; /* parked requests; key: when due, monotonic us */
    bool stopping;
    pthread_t thread;
};

struct sim {
    struct MHD_Daemon *daemon;
    struct timer timer;
    struct key_table keys;
    pthread_mutex_t faults_lock;
    struct channel_faults faults[CH_COUNT];
    struct channel_stats stats[CH_COUNT];
    struct conn_stats conns;
    struct acceptor acceptor;       /* fd < 0: libmicrohttpd listens itself */
    atomic_uint_fast64_t next_seq;  /* ids handed out, unique per process */
    atomic_uint_fast64_t rng_state; /* splitmix64 counter shared by all threads */
    uint64_t id_secret;             /* signs Instagram media ids; set once at start */
};

/* The answer decided for one call, kept until it is sent (after a delay). */
struct answer {
    unsigned status;
    int retry_after; /* < 0: no Retry-After header */
    size_t len;
    char body[640];
};

enum req_state {
    ST_READING, /* headers or body still arriving */
    ST_DELAYED, /* answer decided, connection suspended until the delay ends */
    ST_HANGING, /* never answered; the connection is closed when released */
};

enum answer_kind { ANS_OTHER, ANS_SUCCESS, ANS_BAD_RESPONSE };

struct sim_request {
    struct sim *sim;
    struct MHD_Connection *conn;
    struct dw_heap_node wake;  /* on the timer heap while its connection is suspended */
    const struct endpoint *ep; /* NULL: control or unknown path */
    enum req_state state;
    enum answer_kind kind;
    bool counted;  /* in_flight was raised for it */
    bool serving;  /* holds one of the channel's capacity slots */
    bool finished; /* its outcome is in the status counters */
    bool too_large;
    int fd; /* for the hang check only */
    int64_t arrival_wall_ms;
    int64_t hang_since_us;
    char *body;
    size_t body_len;
    size_t body_alloc;
    struct answer answer;
};

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

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then mixed for the shard bits */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return splitmix64(h);
}

static void counter_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t counter_get(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Whether s[0..n) is text a channel takes: well-formed UTF-8 without NUL. */
static bool text_ok(const char *s, size_t n)
{
    return dw_utf8_count(s, n) != SIZE_MAX && memchr(s, '\0', n) == NULL;
}

/* Appends s to out as the inside of a JSON string: printable ASCII only,
 * so text echoed from a request can never break the answer; at most max
 * source bytes. */
static size_t json_escape_into(char *out, size_t outlen, const char *s, size_t n, size_t max)
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
static void answer_error(struct answer *a, unsigned status, const char *code, const char *text,
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
static bool media_id_valid(struct sim *sim, const char *id, size_t len)
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
/* Key table: sharded hash table with an LRU list per shard                 */
/* ------------------------------------------------------------------------ */

static void key_table_init(struct key_table *kt, size_t max_keys)
{
    size_t per_shard = (max_keys + SIM_KEY_SHARDS - 1) / SIM_KEY_SHARDS;
    if (per_shard < 1)
        per_shard = 1;
    size_t nb = 16;
    while (nb < per_shard)
        nb <<= 1;
    for (size_t i = 0; i < SIM_KEY_SHARDS; i++) {
        struct key_shard *s = &kt->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->buckets = dw_xcalloc(nb, sizeof(*s->buckets));
        s->bucket_mask = nb - 1;
        s->oldest = s->newest = NULL;
        s->count = 0;
        s->cap = per_shard;
    }
    atomic_init(&kt->evicted, 0);
}

static void key_entry_free(struct key_entry *e)
{
    if (e->times != e->inline_times)
        free(e->times);
    free(e);
}

static void shard_clear_locked(struct key_shard *s)
{
    struct key_entry *e = s->oldest;
    while (e != NULL) {
        struct key_entry *next = e->newer;
        key_entry_free(e);
        e = next;
    }
    memset(s->buckets, 0, (s->bucket_mask + 1) * sizeof(*s->buckets));
    s->oldest = s->newest = NULL;
    s->count = 0;
}

static void key_table_clear(struct key_table *kt)
{
    for (size_t i = 0; i < SIM_KEY_SHARDS; i++) {
        struct key_shard *s = &kt->shards[i];
        pthread_mutex_lock(&s->lock);
        shard_clear_locked(s);
        pthread_mutex_unlock(&s->lock);
    }
    atomic_store(&kt->evicted, 0);
}

static void key_table_cleanup(struct key_table *kt)
{
    for (size_t i = 0; i < SIM_KEY_SHARDS; i++) {
        struct key_shard *s = &kt->shards[i];
        shard_clear_locked(s);
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
}

static size_t key_table_count(struct key_table *kt)
{
    size_t n = 0;
    for (size_t i = 0; i < SIM_KEY_SHARDS; i++) {
        struct key_shard *s = &kt->shards[i];
        pthread_mutex_lock(&s->lock);
        n += s->count;
        pthread_mutex_unlock(&s->lock);
    }
    return n;
}

static struct key_shard *shard_of(struct key_table *kt, uint64_t hash)
{
    return &kt->shards[hash >> 58]; /* top 6 bits: SIM_KEY_SHARDS == 64 */
}

static void lru_unlink(struct key_shard *s, struct key_entry *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    e->older = e->newer = NULL;
}

static void lru_push_newest(struct key_shard *s, struct key_entry *e)
{
    e->older = s->newest;
    e->newer = NULL;
    if (s->newest)
        s->newest->newer = e;
    else
        s->oldest = e;
    s->newest = e;
}

static struct key_entry *shard_find_locked(struct key_shard *s, uint64_t hash, const char *key,
                                           size_t len)
{
    for (struct key_entry *e = s->buckets[hash & s->bucket_mask]; e != NULL; e = e->chain) {
        if (e->hash == hash && e->keylen == len && memcmp(e->key, key, len) == 0)
            return e;
    }
    return NULL;
}

static void shard_evict_oldest_locked(struct key_table *kt, struct key_shard *s)
{
    struct key_entry *victim = s->oldest;
    if (victim == NULL)
        return;
    struct key_entry **pp = &s->buckets[victim->hash & s->bucket_mask];
    while (*pp != victim)
        pp = &(*pp)->chain;
    *pp = victim->chain;
    lru_unlink(s, victim);
    s->count--;
    key_entry_free(victim);
    counter_add(&kt->evicted, 1);
}

static void key_entry_add_time(struct key_entry *e, int64_t t)
{
    if (e->ntimes < e->times_cap) {
        e->times[(e->times_head + e->ntimes) % e->times_cap] = t;
        e->ntimes++;
        return;
    }
    if (e->times_cap < SIM_KEY_TIMES_MAX) {
        /* Grow and linearise so the ring starts at 0 again. */
        uint8_t cap =
            (uint8_t)(e->times_cap * 2 > SIM_KEY_TIMES_MAX ? SIM_KEY_TIMES_MAX : e->times_cap * 2);
        int64_t *grown = dw_xmalloc(cap * sizeof(*grown));
        for (uint8_t i = 0; i < e->ntimes; i++)
            grown[i] = e->times[(e->times_head + i) % e->times_cap];
        if (e->times != e->inline_times)
            free(e->times);
        e->times = grown;
        e->times_cap = cap;
        e->times_head = 0;
        e->times[e->ntimes++] = t;
        return;
    }
    /* Full: the oldest arrival gives way. */
    e->times[e->times_head] = t;
    e->times_head = (uint8_t)((e->times_head + 1) % e->times_cap);
}

/* What one call did to its key, filled by key_table_record(). */
struct key_outcome {
    bool was_succeeded; /* the key had already been answered 2xx: a duplicate */
    uint64_t seq;       /* the id to answer with (post or replay); 0 if none */
    bool posted;        /* this call made the post */
};

/*
 * Records one arrival for key and, when want_post, posts (hands out a new
 * id) unless the key already has one, in which case that id is replayed.
 * One critical section, so two concurrent calls with one key never both post.
 */
static void key_table_record(struct sim *sim, const char *key, size_t len, enum channel ch,
                             int64_t arrival_ms, bool want_post, struct key_outcome *out)
{
    struct key_table *kt = &sim->keys;
    uint64_t hash = hash_bytes(key, len);
    struct key_shard *s = shard_of(kt, hash);
    struct key_entry *fresh = NULL;

    /* Allocate outside the lock; most keys are new, and a spare is freed
     * when another thread won the race. */
    fresh = dw_xmalloc(sizeof(*fresh) + len + 1);

    pthread_mutex_lock(&s->lock);
    struct key_entry *e = shard_find_locked(s, hash, key, len);
    if (e == NULL) {
        if (s->count >= s->cap)
            shard_evict_oldest_locked(kt, s);
        e = fresh;
        fresh = NULL;
        memset(e, 0, sizeof(*e));
        e->hash = hash;
        e->channel = (uint8_t)ch;
        e->keylen = (uint16_t)len;
        memcpy(e->key, key, len);
        e->key[len] = '\0';
        e->times = e->inline_times;
        e->times_cap = 2;
        e->chain = s->buckets[hash & s->bucket_mask];
        s->buckets[hash & s->bucket_mask] = e;
        s->count++;
    } else {
        lru_unlink(s, e);
    }
    lru_push_newest(s, e);
    e->calls++;
    key_entry_add_time(e, arrival_ms);
    out->was_succeeded = e->seq != 0;
    out->posted = false;
    if (want_post && e->seq == 0) {
        e->seq = atomic_fetch_add_explicit(&sim->next_seq, 1, memory_order_relaxed);
        e->posts++;
        out->posted = true;
    }
    out->seq = e->seq;
    pthread_mutex_unlock(&s->lock);

    free(fresh);
}

/* Builds the /_sim/keys answer for key; NULL when the key is unknown. */
static json_object *key_table_describe(struct sim *sim, const char *key)
{
    struct key_table *kt = &sim->keys;
    size_t len = strlen(key);
    uint64_t hash = hash_bytes(key, len);
    struct key_shard *s = shard_of(kt, hash);
    int64_t times[SIM_KEY_TIMES_MAX];
    uint32_t calls, posts, ntimes;
    uint64_t seq;
    enum channel ch;

    pthread_mutex_lock(&s->lock);
    struct key_entry *e = shard_find_locked(s, hash, key, len);
    if (e == NULL) {
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    calls = e->calls;
    posts = e->posts;
    seq = e->seq;
    ch = (enum channel)e->channel;
    ntimes = e->ntimes;
    for (uint32_t i = 0; i < ntimes; i++)
        times[i] = e->times[(e->times_head + i) % e->times_cap];
    pthread_mutex_unlock(&s->lock);

    json_object *o = json_object_new_object();
    json_object_object_add(o, "key", json_object_new_string(key));
    json_object_object_add(o, "channel", json_object_new_string(channel_names[ch]));
    json_object_object_add(o, "calls", json_object_new_int64(calls));
    json_object_object_add(o, "posts", json_object_new_int64(posts));
    json_object_object_add(o, "succeeded", json_object_new_boolean(seq != 0));
    json_object *arr = json_object_new_array();
    for (uint32_t i = 0; i < ntimes; i++)
        json_object_array_add(arr, json_object_new_int64(times[i]));
    json_object_object_add(o, "callTimesMs", arr);
    return o;
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
        atomic_uint_fast64_t *all[] = {&st->calls,       &st->success,         &st->errors,
                                       &st->posts,       &st->duplicate_posts, &st->status2xx,
                                       &st->status4xx,   &st->status5xx,       &st->status429,
                                       &st->dropped,     &st->bad_responses,   &st->over_capacity,
                                       &st->conns_opened};
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
/* Faults                                                                   */
/* ------------------------------------------------------------------------ */

static void faults_default(struct channel_faults *f)
{
    memset(f, 0, sizeof(*f));
    f->error_status = 503;
    f->retry_after = 1;
    f->capacity_status = 503;
    f->capacity_retry_after = -1;
}

static void faults_get(struct sim *sim, enum channel ch, struct channel_faults *out)
{
    pthread_mutex_lock(&sim->faults_lock);
    *out = sim->faults[ch];
    pthread_mutex_unlock(&sim->faults_lock);
}

static json_object *faults_to_json(struct sim *sim)
{
    struct channel_faults copy[CH_COUNT];
    pthread_mutex_lock(&sim->faults_lock);
    memcpy(copy, sim->faults, sizeof(copy));
    pthread_mutex_unlock(&sim->faults_lock);

    json_object *root = json_object_new_object();
    for (int c = 0; c < CH_COUNT; c++) {
        struct channel_faults *f = &copy[c];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "errorRate", json_object_new_double(f->error_rate));
        json_object_object_add(o, "errorStatus", json_object_new_int(f->error_status));
        json_object_object_add(o, "rate429", json_object_new_double(f->rate429));
        json_object_object_add(o, "retryAfter", json_object_new_int(f->retry_after));
        json_object_object_add(o, "latencyMs", json_object_new_int(f->latency_ms));
        json_object_object_add(o, "latencyJitterMs", json_object_new_int(f->latency_jitter_ms));
        json_object_object_add(o, "hang", json_object_new_boolean(f->hang));
        json_object_object_add(o, "down", json_object_new_boolean(f->down));
        json_object_object_add(o, "badResponseRate", json_object_new_double(f->bad_response_rate));
        json_object_object_add(o, "capacity", json_object_new_int(f->capacity));
        json_object_object_add(o, "capacityStatus", json_object_new_int(f->capacity_status));
        json_object_object_add(o, "capacityRetryAfter",
                               json_object_new_int(f->capacity_retry_after));
        json_object_object_add(o, "latencyKnee", json_object_new_int(f->latency_knee));
        json_object_object_add(root, channel_names[c], o);
    }
    return root;
}

static bool json_number(json_object *v, double *out)
{
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return false;
    *out = json_object_get_double(v);
    return true;
}

/*
 * Applies a /_sim/faults body: the fields given replace those of the
 * channel (or of all channels for "*"); absent fields keep their value.
 * Validates everything before changing anything. Fills err on failure.
 */
static bool faults_apply(struct sim *sim, json_object *body, char *err, size_t errlen)
{
    struct channel_faults patch;
    bool has_rate = false, has_status = false, has_429 = false, has_retry = false;
    bool has_lat = false, has_jit = false, has_hang = false, has_down = false, has_bad = false;
    bool has_cap = false, has_cap_status = false, has_cap_retry = false, has_knee = false;
    int target = -1; /* -1: all */
    double d;

    memset(&patch, 0, sizeof(patch));
    if (!json_object_is_type(body, json_type_object)) {
        snprintf(err, errlen, "the body must be a JSON object");
        return false;
    }
    json_object_object_foreach(body, name, v)
    {
        if (strcmp(name, "channel") == 0) {
            const char *s =
                json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
            if (s == NULL) {
                snprintf(err, errlen, "channel must be a channel name or \"*\"");
                return false;
            }
            if (strcmp(s, "*") == 0) {
                target = -1;
                continue;
            }
            target = -2;
            for (int c = 0; c < CH_COUNT; c++) {
                if (strcasecmp(s, channel_names[c]) == 0)
                    target = c;
            }
            if (target == -2) {
                snprintf(err, errlen, "unknown channel");
                return false;
            }
        } else if (strcmp(name, "errorRate") == 0 || strcmp(name, "rate429") == 0 ||
                   strcmp(name, "badResponseRate") == 0) {
            if (!json_number(v, &d) || d < 0.0 || d > 1.0) {
                snprintf(err, errlen, "%s must be a number from 0 to 1", name);
                return false;
            }
            if (name[0] == 'e') {
                patch.error_rate = d;
                has_rate = true;
            } else if (name[0] == 'r') {
                patch.rate429 = d;
                has_429 = true;
            } else {
                patch.bad_response_rate = d;
                has_bad = true;
            }
        } else if (strcmp(name, "errorStatus") == 0) {
            if (!json_number(v, &d) || d < 100 || d > 599 || d != (int)d) {
                snprintf(err, errlen, "errorStatus must be an HTTP status, 100 to 599");
                return false;
            }
            patch.error_status = (int)d;
            has_status = true;
        } else if (strcmp(name, "capacityStatus") == 0) {
            if (!json_number(v, &d) || d < 400 || d > 599 || d != (int)d) {
                snprintf(err, errlen, "capacityStatus must be an HTTP status, 400 to 599");
                return false;
            }
            patch.capacity_status = (int)d;
            has_cap_status = true;
        } else if (strcmp(name, "capacityRetryAfter") == 0) {
            if (!json_number(v, &d) || d < -1 || d > 86400 || d != (int)d) {
                snprintf(err, errlen,
                         "capacityRetryAfter must be whole seconds, 0 to 86400, or -1 for none");
                return false;
            }
            patch.capacity_retry_after = (int)d;
            has_cap_retry = true;
        } else if (strcmp(name, "capacity") == 0 || strcmp(name, "latencyKnee") == 0) {
            if (!json_number(v, &d) || d < 0 || d > SIM_MAX_CAPACITY || d != (int)d) {
                snprintf(err, errlen, "%s must be a whole number of calls, 0 to %d", name,
                         SIM_MAX_CAPACITY);
                return false;
            }
            if (name[0] == 'c') {
                patch.capacity = (int)d;
                has_cap = true;
            } else {
                patch.latency_knee = (int)d;
                has_knee = true;
            }
        } else if (strcmp(name, "retryAfter") == 0) {
            if (!json_number(v, &d) || d < 0 || d > 86400 || d != (int)d) {
                snprintf(err, errlen, "retryAfter must be whole seconds, 0 to 86400");
                return false;
            }
            patch.retry_after = (int)d;
            has_retry = true;
        } else if (strcmp(name, "latencyMs") == 0 || strcmp(name, "latencyJitterMs") == 0) {
            if (!json_number(v, &d) || d < 0 || d > SIM_MAX_LATENCY_MS || d != (int)d) {
                snprintf(err, errlen, "%s must be whole milliseconds, 0 to %d", name,
                         SIM_MAX_LATENCY_MS);
                return false;
            }
            if (strcmp(name, "latencyMs") == 0) {
                patch.latency_ms = (int)d;
                has_lat = true;
            } else {
                patch.latency_jitter_ms = (int)d;
                has_jit = true;
            }
        } else if (strcmp(name, "hang") == 0 || strcmp(name, "down") == 0) {
            if (!json_object_is_type(v, json_type_boolean)) {
                snprintf(err, errlen, "%s must be true or false", name);
                return false;
            }
            if (name[0] == 'h') {
                patch.hang = json_object_get_boolean(v);
                has_hang = true;
            } else {
                patch.down = json_object_get_boolean(v);
                has_down = true;
            }
        } else {
            char esc[80];
            json_escape_into(esc, sizeof(esc), name, strlen(name), 64);
            snprintf(err, errlen, "unknown field: %s", esc);
            return false;
        }
    }

    pthread_mutex_lock(&sim->faults_lock);
    for (int c = 0; c < CH_COUNT; c++) {
        if (target >= 0 && c != target)
            continue;
        struct channel_faults *f = &sim->faults[c];
        if (has_rate)
            f->error_rate = patch.error_rate;
        if (has_status)
            f->error_status = patch.error_status;
        if (has_429)
            f->rate429 = patch.rate429;
        if (has_retry)
            f->retry_after = patch.retry_after;
        if (has_lat)
            f->latency_ms = patch.latency_ms;
        if (has_jit)
            f->latency_jitter_ms = patch.latency_jitter_ms;
        if (has_hang)
            f->hang = patch.hang;
        if (has_down)
            f->down = patch.down;
        if (has_bad)
            f->bad_response_rate = patch.bad_response_rate;
        if (has_cap)
            f->capacity = patch.capacity;
        if (has_cap_status)
            f->capacity_status = patch.capacity_status;
        if (has_cap_retry)
            f->capacity_retry_after = patch.capacity_retry_after;
        if (has_knee)
            f->latency_knee = patch.latency_knee;
    }
    pthread_mutex_unlock(&sim->faults_lock);
    return true;
}

static void faults_reset(struct sim *sim)
{
    pthread_mutex_lock(&sim->faults_lock);
    for (int c = 0; c < CH_COUNT; c++)
        faults_default(&sim->faults[c]);
    pthread_mutex_unlock(&sim->faults_lock);
}

/* ------------------------------------------------------------------------ */
/* Timer: a min-heap of wake-ups, one thread                                */
/* ------------------------------------------------------------------------ */

/* A request is on the heap at most once: only while suspended. */
static void heap_push_locked(struct timer *t, int64_t due_us, struct sim_request *req)
{
    req->wake.key = due_us;
    dw_heap_push(&t->heap, &req->wake);
}

static struct sim_request *heap_pop_locked(struct timer *t)
{
    return DW_CONTAINER_OF(dw_heap_pop(&t->heap), struct sim_request, wake);
}

/*
 * Suspends req's connection and wakes it at due_us. Must be called from the
 * access handler (libmicrohttpd's rule for suspending). Returns false when
 * the simulator is stopping: the caller then answers at once.
 */
static bool timer_park(struct sim *sim, struct sim_request *req, int64_t due_us)
{
    struct timer *t = &sim->timer;
    pthread_mutex_lock(&t->lock);
    if (t->stopping) {
        pthread_mutex_unlock(&t->lock);
        return false;
    }
    MHD_suspend_connection(req->conn);
    bool earliest = t->heap.len == 0 || due_us < dw_heap_top(&t->heap)->key;
    heap_push_locked(t, due_us, req);
    if (earliest)
        pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return true;
}

/* True when a hung call should end now: its client went away, the hang
 * fault was lifted, or it has hung for SIM_HANG_MAX_MS. Runs on the timer
 * thread while the connection is suspended, so the fd is not in use. */
static bool hang_should_end(struct sim *sim, struct sim_request *req, int64_t now)
{
    struct channel_faults f;
    char c;
    faults_get(sim, req->ep->channel, &f);
    if (!f.hang || now - req->hang_since_us >= (int64_t)SIM_HANG_MAX_MS * 1000)
        return true;
    if (req->fd < 0)
        return false;
    ssize_t n = recv(req->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return true; /* orderly close by the client */
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return true; /* reset */
    return false;
}

static void *timer_main(void *arg)
{
    struct sim *sim = arg;
    struct timer *t = &sim->timer;
    struct sim_request *batch[SIM_TIMER_BATCH];

    pthread_mutex_lock(&t->lock);
    for (;;) {
        if (t->stopping)
            break;
        if (t->heap.len == 0) {
            pthread_cond_wait(&t->cond, &t->lock);
            continue;
        }
        int64_t now = dw_now_us();
        if (dw_heap_top(&t->heap)->key > now) {
            struct timespec ts;
            int64_t due = dw_heap_top(&t->heap)->key;
            ts.tv_sec = (time_t)(due / 1000000);
            ts.tv_nsec = (long)(due % 1000000) * 1000;
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
            continue;
        }
        size_t n = 0;
        while (n < SIM_TIMER_BATCH && t->heap.len > 0 && dw_heap_top(&t->heap)->key <= now)
            batch[n++] = heap_pop_locked(t);
        pthread_mutex_unlock(&t->lock);

        /* Resume with no lock held: resuming takes libmicrohttpd's own lock,
         * which a handler may hold while it waits for ours in timer_park. */
        for (size_t i = 0; i < n; i++) {
            struct sim_request *req = batch[i];
            if (req->state == ST_HANGING && !hang_should_end(sim, req, now)) {
                pthread_mutex_lock(&t->lock);
                heap_push_locked(t, now + SIM_HANG_CHECK_MS * 1000, req);
                pthread_mutex_unlock(&t->lock);
                continue;
            }
            MHD_resume_connection(req->conn);
        }
        pthread_mutex_lock(&t->lock);
    }
    /* Stopping: every parked connection must be resumed before
     * MHD_stop_daemon(); delayed ones get their answer, hung ones close. */
    while (t->heap.len > 0)
        MHD_resume_connection(heap_pop_locked(t)->conn);
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static int timer_start(struct sim *sim)
{
    struct timer *t = &sim->timer;
    pthread_mutex_init(&t->lock, NULL);
    dw_cond_init_monotonic(&t->cond);
    dw_heap_init(&t->heap);
    t->stopping = false;
    return pthread_create(&t->thread, NULL, timer_main, sim);
}

static void timer_stop(struct sim *sim)
{
    struct timer *t = &sim->timer;
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
}

static void timer_cleanup(struct sim *sim)
{
    struct timer *t = &sim->timer;
    dw_heap_cleanup(&t->heap);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
}

/* ------------------------------------------------------------------------ */
/* Request checks                                                           */
/* ------------------------------------------------------------------------ */

static bool bearer_present(const char *h)
{
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ' || *h == '\t')
        h++;
    return *h != '\0';
}

static bool media_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (ct == NULL || strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* One field of a request body, whichever the format. */
struct field {
    const char *name;
    size_t name_len;
    const char *value; /* NULL for JSON null or a non-string */
    size_t value_len;
    bool is_null;
    bool is_string;
};

#define MAX_FIELDS 16

static bool name_in(const char *const *list, const char *name, size_t len)
{
    for (; *list != NULL; list++) {
        if (strlen(*list) == len && memcmp(*list, name, len) == 0)
            return true;
    }
    return false;
}

static const struct field *field_find(const struct field *f, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        if (f[i].name_len == len && memcmp(f[i].name, name, len) == 0)
            return &f[i];
    }
    return NULL;
}

/* Checks fields against the endpoint: only the contract's fields, each a
 * non-empty string, every required one present, plus the per-API rules.
 * event_id is the Idempotency-Key without its suffix. */
static bool check_fields(struct sim *sim, const struct endpoint *ep, const struct field *f,
                         size_t n, const char *event_id, size_t event_id_len, struct answer *a)
{
    for (size_t i = 0; i < n; i++) {
        if (!name_in(ep->allowed, f[i].name, f[i].name_len)) {
            answer_error(a, 400, "UNKNOWN_FIELD", "field not accepted by this API", f[i].name,
                         f[i].name_len);
            return false;
        }
        if (f[i].is_null) {
            answer_error(a, 400, "NULL_FIELD", "field is null (leave absent fields out)", f[i].name,
                         f[i].name_len);
            return false;
        }
        if (!f[i].is_string) {
            answer_error(a, 400, "WRONG_TYPE", "field must be a string", f[i].name, f[i].name_len);
            return false;
        }
        if (f[i].value_len == 0) {
            answer_error(a, 400, "EMPTY_FIELD", "field is empty (leave absent fields out)",
                         f[i].name, f[i].name_len);
            return false;
        }
    }
    for (const char *const *r = ep->required; *r != NULL; r++) {
        if (field_find(f, n, *r) == NULL) {
            answer_error(a, 400, "MISSING_FIELD", "required field missing", *r, strlen(*r));
            return false;
        }
    }

    const struct field *x;
    if ((x = field_find(f, n, "campaignId")) != NULL &&
        (x->value_len != event_id_len || memcmp(x->value, event_id, event_id_len) != 0)) {
        answer_error(a, 400, "CAMPAIGN_ID_MISMATCH",
                     "campaignId must be the eventId of the Idempotency-Key", x->value,
                     x->value_len);
        return false;
    }
    if ((x = field_find(f, n, "imageUrl")) != NULL || (x = field_find(f, n, "image_url")) != NULL) {
        if (!(x->value_len > 7 && strncmp(x->value, "http://", 7) == 0) &&
            !(x->value_len > 8 && strncmp(x->value, "https://", 8) == 0)) {
            answer_error(a, 400, "INVALID_FIELD", "image URL must be http:// or https://", x->name,
                         x->name_len);
            return false;
        }
    }
    if (ep->id == EP_RINGOBIZ_RINGBACK) {
        x = field_find(f, n, "message");
        size_t cp = dw_utf8_count(x->value, x->value_len);
        if (cp != SIZE_MAX && cp > SIM_RINGOBIZ_MAX_CP) {
            answer_error(a, 400, "FIELD_TOO_LONG", "message is over 60 characters", "message", 7);
            return false;
        }
    }
    if (ep->id == EP_INSTAGRAM_PUBLISH) {
        x = field_find(f, n, "creation_id");
        if (!media_id_valid(sim, x->value, x->value_len)) {
            answer_error(a, 400, "UNKNOWN_CREATION_ID",
                         "creation_id was not created by POST /v1/media", x->value, x->value_len);
            return false;
        }
    }
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes %XX and '+' in place; returns the new length or -1 when malformed
 * (a bad escape or a NUL byte). */
static long form_decode(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            s[o++] = ' ';
        } else if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hex_value(s[i + 1]);
            int lo = hex_value(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            s[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            s[o++] = c;
        }
    }
    return (long)o;
}

/* Validates the body of a channel call (already known complete). On failure
 * fills a with the 4xx to send. */
static bool check_body(struct sim *sim, struct sim_request *req, const char *event_id,
                       size_t event_id_len, struct answer *a)
{
    const struct endpoint *ep = req->ep;
    struct field fields[MAX_FIELDS];
    size_t n = 0;
    const char *ct =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);

    if (req->body_len == 0) {
        answer_error(a, 400, "INVALID_BODY", "empty body", NULL, 0);
        return false;
    }
    if (ep->format == FMT_FORM) {
        if (!media_type_is(ct, "application/x-www-form-urlencoded")) {
            answer_error(a, 400, "INVALID_CONTENT_TYPE",
                         "Content-Type must be application/x-www-form-urlencoded", NULL, 0);
            return false;
        }
        /* Split in place: the body buffer is ours. */
        char *p = req->body;
        char *end = req->body + req->body_len;
        while (p <= end) {
            char *amp = memchr(p, '&', (size_t)(end - p));
            char *seg_end = amp ? amp : end;
            if (seg_end == p) {
                answer_error(a, 400, "INVALID_BODY", "empty form field", NULL, 0);
                return false;
            }
            char *eq = memchr(p, '=', (size_t)(seg_end - p));
            char *name_end = eq ? eq : seg_end;
            long nl = form_decode(p, (size_t)(name_end - p));
            long vl = 0;
            char *val = eq ? eq + 1 : seg_end;
            if (eq)
                vl = form_decode(val, (size_t)(seg_end - val));
            if (nl < 0 || vl < 0 || !text_ok(p, (size_t)nl) || !text_ok(val, (size_t)vl)) {
                answer_error(a, 400, "INVALID_BODY", "malformed form encoding or UTF-8", NULL, 0);
                return false;
            }
            if (n == MAX_FIELDS) {
                answer_error(a, 400, "INVALID_BODY", "too many fields", NULL, 0);
                return false;
            }
            for (size_t i = 0; i < n; i++) {
                if (fields[i].name_len == (size_t)nl &&
                    memcmp(fields[i].name, p, (size_t)nl) == 0) {
                    answer_error(a, 400, "INVALID_BODY", "field given twice", p, (size_t)nl);
                    return false;
                }
            }
            fields[n].name = p;
            fields[n].name_len = (size_t)nl;
            fields[n].value = val;
            fields[n].value_len = (size_t)vl;
            fields[n].is_null = false;
            fields[n].is_string = true;
            n++;
            if (amp == NULL)
                break;
            p = amp + 1;
        }
        return check_fields(sim, ep, fields, n, event_id, event_id_len, a);
    }

    if (!media_type_is(ct, "application/json")) {
        answer_error(a, 400, "INVALID_CONTENT_TYPE", "Content-Type must be application/json", NULL,
                     0);
        return false;
    }
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *root = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
    bool ok = json_tokener_get_error(tok) == json_tokener_success && root != NULL;
    if (ok) {
        for (size_t i = json_tokener_get_parse_end(tok); i < req->body_len; i++) {
            char c = req->body[i];
            if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
                ok = false;
        }
    }
    json_tokener_free(tok);
    if (!ok || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        answer_error(a, 400, "INVALID_BODY", "body is not a JSON object", NULL, 0);
        return false;
    }
    bool too_many = false;
    json_object_object_foreach(root, name, v)
    {
        if (n == MAX_FIELDS) {
            too_many = true;
            break;
        }
        fields[n].name = name;
        fields[n].name_len = strlen(name);
        fields[n].is_null = v == NULL;
        fields[n].is_string = json_object_is_type(v, json_type_string);
        fields[n].value = fields[n].is_string ? json_object_get_string(v) : NULL;
        fields[n].value_len = fields[n].is_string ? (size_t)json_object_get_string_len(v) : 0;
        n++;
    }
    if (too_many) {
        json_object_put(root);
        answer_error(a, 400, "INVALID_BODY", "too many fields", NULL, 0);
        return false;
    }
    ok = check_fields(sim, ep, fields, n, event_id, event_id_len, a);
    json_object_put(root); /* fields point into root: released last */
    return ok;
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
    bool known = strcmp(what, "stats") == 0 || strcmp(what, "faults") == 0 ||
                 strcmp(what, "reset") == 0 || strcmp(what, "reset-counters") == 0 ||
                 strncmp(what, "keys/", 5) == 0;
    if (known)
        return send_error(req->conn, 405, "METHOD_NOT_ALLOWED", "wrong method for this path");
    return send_error(req->conn, 404, "NOT_FOUND", "unknown control path");
}

/* ------------------------------------------------------------------------ */
/* libmicrohttpd callbacks                                                  */
/* ------------------------------------------------------------------------ */

static const struct endpoint *route(const char *url)
{
    for (size_t i = 0; i < ENDPOINT_COUNT; i++) {
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
        if (req->serving)
            gauge_down(&st->serving);
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
