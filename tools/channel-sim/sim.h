/*
 * channel-sim's shared declarations: limits, the channel and endpoint
 * tables, the state every part works on (struct sim, struct sim_request)
 * and the functions one part calls in another. The files, one concern
 * each: main.c (arguments, the libmicrohttpd callbacks, answers, counters,
 * control endpoints, the slow listener, start and stop), routes.c (the
 * endpoint table), checks.c (the strict request checks), keys.c (the
 * idempotency key table), faults.c (fault injection), timer.c (the
 * wake-up heap). The design, threads and invariants: main.c's opening
 * comment.
 */
#ifndef SIM_H
#define SIM_H

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

extern const char *const channel_names[CH_COUNT];
/* The optional path prefix of each channel, e.g. "/kakao/v1/api/...". */
extern const char *const channel_prefixes[CH_COUNT];
extern const struct endpoint endpoints[];
extern const size_t endpoint_count;

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
    /* Calls that held a capacity slot, and the microseconds they held it
     * (admission to the answer's last byte written): how long a slot is
     * really held, which the set latency is a lower bound of. */
    atomic_uint_fast64_t served;
    atomic_uint_fast64_t served_us;
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
    int64_t first_ms; /* the first arrival (times keeps the last few only) */
    uint32_t calls;
    uint32_t posts;
    uint32_t duplicates; /* arrivals after the key had succeeded */
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
    int64_t serving_since_us; /* when it took its capacity slot */
    int64_t hang_since_us;
    char *body;
    size_t body_len;
    size_t body_alloc;
    struct answer answer;
};

/* What one call did to its key, filled by key_table_record(). */
struct key_outcome {
    bool was_succeeded; /* the key had already been answered 2xx: a duplicate */
    uint64_t seq;       /* the id to answer with (post or replay); 0 if none */
    bool posted;        /* this call made the post */
};

/* Defined in one part, used in another. */

/* checks.c: request checks */
bool bearer_present(const char *h);
bool check_body(struct sim *sim, struct sim_request *req, const char *event_id, size_t event_id_len,
                struct answer *a);

/* faults.c: fault injection */
bool faults_apply(struct sim *sim, json_object *body, char *err, size_t errlen);
json_object *faults_to_json(struct sim *sim);
void faults_default(struct channel_faults *f);
void faults_get(struct sim *sim, enum channel ch, struct channel_faults *out);
void faults_reset(struct sim *sim);

/* keys.c: the idempotency key table */
json_object *key_table_describe(struct sim *sim, const char *key);
json_object *key_table_duplicates(struct sim *sim);
size_t key_table_count(struct key_table *kt);
void key_table_cleanup(struct key_table *kt);
void key_table_clear(struct key_table *kt);
void key_table_init(struct key_table *kt, size_t max_keys);
void key_table_record(struct sim *sim, const char *key, size_t len, enum channel ch,
                      int64_t arrival_ms, bool want_post, struct key_outcome *out);

/* timer.c: the wake-up heap and its thread */
bool timer_park(struct sim *sim, struct sim_request *req, int64_t due_us);
int timer_start(struct sim *sim);
void timer_cleanup(struct sim *sim);
void timer_stop(struct sim *sim);

/* main.c: small helpers, answers and counters */
bool media_id_valid(struct sim *sim, const char *id, size_t len);
bool text_ok(const char *s, size_t n);
size_t json_escape_into(char *out, size_t outlen, const char *s, size_t n, size_t max);
uint64_t hash_bytes(const char *s, size_t n);
void answer_error(struct answer *a, unsigned status, const char *code, const char *text,
                  const char *name, size_t name_len);
void counter_add(atomic_uint_fast64_t *c, uint64_t n);

#endif /* SIM_H */
