/*
 * channel-sim: The idempotency key table: a sharded hash table with an LRU list per
 * shard, bounded by --max-keys. Any thread; one lock per shard.
 */
#include "sim.h"

/* ------------------------------------------------------------------------ */
/* Key table: sharded hash table with an LRU list per shard                 */
/* ------------------------------------------------------------------------ */

void key_table_init(struct key_table *kt, size_t max_keys)
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

void key_table_clear(struct key_table *kt)
{
    for (size_t i = 0; i < SIM_KEY_SHARDS; i++) {
        struct key_shard *s = &kt->shards[i];
        pthread_mutex_lock(&s->lock);
        shard_clear_locked(s);
        pthread_mutex_unlock(&s->lock);
    }
    atomic_store(&kt->evicted, 0);
}

void key_table_cleanup(struct key_table *kt)
{
    for (size_t i = 0; i < SIM_KEY_SHARDS; i++) {
        struct key_shard *s = &kt->shards[i];
        shard_clear_locked(s);
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
}

size_t key_table_count(struct key_table *kt)
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

/*
 * Records one arrival for key and, when want_post, posts (hands out a new
 * id) unless the key already has one, in which case that id is replayed.
 * One critical section, so two concurrent calls with one key never both post.
 */
void key_table_record(struct sim *sim, const char *key, size_t len, enum channel ch,
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
    if (e->calls++ == 0)
        e->first_ms = arrival_ms;
    key_entry_add_time(e, arrival_ms);
    out->was_succeeded = e->seq != 0;
    if (out->was_succeeded)
        e->duplicates++;
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
/* The two fields of a key that say whether and since when it was re-sent,
 * shared by the key's description and the duplicates list. */
static void add_resend_fields(json_object *o, int64_t first_ms, uint32_t duplicates)
{
    json_object_object_add(o, "firstCallMs", json_object_new_int64(first_ms));
    json_object_object_add(o, "duplicatePosts", json_object_new_int64(duplicates));
}

json_object *key_table_describe(struct sim *sim, const char *key)
{
    struct key_table *kt = &sim->keys;
    size_t len = strlen(key);
    uint64_t hash = hash_bytes(key, len);
    struct key_shard *s = shard_of(kt, hash);
    int64_t times[SIM_KEY_TIMES_MAX];
    uint32_t calls, posts, ntimes, duplicates;
    int64_t first_ms;
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
    duplicates = e->duplicates;
    first_ms = e->first_ms;
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
    add_resend_fields(o, first_ms, duplicates);
    json_object *arr = json_object_new_array();
    for (uint32_t i = 0; i < ntimes; i++)
        json_object_array_add(arr, json_object_new_int64(times[i]));
    json_object_object_add(o, "callTimesMs", arr);
    return o;
}

/* Builds the /_sim/duplicates answer: every key that was called again
 * after it had succeeded, with its first arrival, so that a test can tell
 * which fault each re-sent call can be laid to. */
json_object *key_table_duplicates(struct sim *sim)
{
    struct key_table *kt = &sim->keys;
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < SIM_KEY_SHARDS; i++) {
        struct key_shard *s = &kt->shards[i];
        pthread_mutex_lock(&s->lock);
        for (struct key_entry *e = s->oldest; e != NULL; e = e->newer) {
            if (e->duplicates == 0)
                continue;
            json_object *k = json_object_new_object();
            json_object_object_add(k, "key", json_object_new_string(e->key));
            add_resend_fields(k, e->first_ms, e->duplicates);
            json_object_array_add(arr, k);
        }
        pthread_mutex_unlock(&s->lock);
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "keys", arr);
    return o;
}
