/*
 * The transport of the channel calls (include/dw/transport.h): the libcurl
 * options that say how a channel's server is reached, apart from the engine
 * that runs the calls.
 *
 * DESIGN
 * - Verification is never switched off: CURLOPT_SSL_VERIFYPEER and
 *   VERIFYHOST are set on every apply, so no other code path can leave a
 *   handle unverified. A channel's ca_file replaces the system's store
 *   (CAINFO = the file, CAPATH = none, or OpenSSL would still look in
 *   /etc/ssl/certs); a channel without one gets libcurl's built-in store
 *   back explicitly, because the engine moves easy handles between
 *   channels.
 * - HTTP version: "auto" asks for HTTP/2 over TLS (ALPN) and takes
 *   HTTP/1.1 where the server offers only that; "1.1" never asks for
 *   HTTP/2; "h2c" speaks HTTP/2 at once over plain TCP (prior knowledge).
 *   PIPEWAIT makes a call that finds a connection to its server still
 *   being set up wait for it, to share it once it is known to multiplex,
 *   instead of opening a connection of its own: without it a burst of N
 *   calls opens N connections before the first ALPN answer arrives.
 * - TLS sessions: one libcurl share per TLS channel holds its session
 *   cache, so a connection opened after the first (another engine thread,
 *   or after the server closed one) resumes the session: one round trip
 *   and no certificate chain, instead of a full handshake. A share used by
 *   several threads needs a lock; there is one mutex per kind of data.
 *   libcurl only resumes a session made with the same TLS settings (CA,
 *   verification), so resuming never skips a verification.
 *
 * Threads: created and destroyed on the main thread; dw_transport_apply
 * runs on the engine threads and reads only what create wrote, besides the
 * shares, which lock themselves.
 */
#include "dw/transport.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The first libcurl version not known to break reused h2c connections:
 * 7.88.1 is, and it is the only one this was measured on. */
#define H2C_REUSE_FIXED 0x080000u

/* One channel's TLS session cache. */
struct session_cache {
    CURLSH *share;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
    bool locks_ready;
};

struct dw_transport {
    const struct dw_config *cfg;
    struct dw_transport_choice choice[DW_CHANNEL_COUNT];
    struct session_cache sessions[DW_CHANNEL_COUNT]; /* share NULL: not a TLS channel */
    /* libcurl's built-in store, put back on a handle for a channel without
     * ca_file; NULL when libcurl was built without one. */
    char *default_cainfo;
    char *default_capath;
};

struct dw_transport_choice dw_transport_choose(const struct dw_channel_config *cc,
                                               unsigned curl_version_num)
{
    struct dw_transport_choice c = {0};

    c.tls = strncasecmp(cc->url, "https://", 8) == 0;
    switch (cc->http_version) {
    case DW_HTTP_1_1:
        c.http_version = CURL_HTTP_VERSION_1_1;
        break;
    case DW_HTTP_H2C:
        c.http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
        c.pipewait = true;
        /* libcurl 7.88 (Debian 12) fails the second request on an h2c
         * connection ("Error in the HTTP2 framing layer"; the curl tool
         * does the same): there, every h2c call gets a connection of its
         * own. Not seen with TLS, where HTTP/2 comes from ALPN. */
        if (curl_version_num < H2C_REUSE_FIXED) {
            c.forbid_reuse = true;
            c.pipewait = false;
        }
        break;
    case DW_HTTP_AUTO:
    default:
        c.http_version = CURL_HTTP_VERSION_2TLS;
        /* Over plain HTTP "auto" is HTTP/1.1: nothing to wait for. */
        c.pipewait = c.tls;
        break;
    }
    return c;
}

static void on_lock(CURL *easy, curl_lock_data data, curl_lock_access access, void *userp)
{
    struct session_cache *cache = userp;
    (void)easy;
    (void)access;
    pthread_mutex_lock(&cache->locks[data]);
}

static void on_unlock(CURL *easy, curl_lock_data data, void *userp)
{
    struct session_cache *cache = userp;
    (void)easy;
    pthread_mutex_unlock(&cache->locks[data]);
}

static bool session_cache_init(struct session_cache *cache)
{
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&cache->locks[i], NULL);
    cache->locks_ready = true;
    cache->share = curl_share_init();
    if (!cache->share)
        return false;
    return curl_share_setopt(cache->share, CURLSHOPT_LOCKFUNC, on_lock) == CURLSHE_OK &&
           curl_share_setopt(cache->share, CURLSHOPT_UNLOCKFUNC, on_unlock) == CURLSHE_OK &&
           curl_share_setopt(cache->share, CURLSHOPT_USERDATA, cache) == CURLSHE_OK &&
           curl_share_setopt(cache->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) ==
               CURLSHE_OK;
}

static void session_cache_cleanup(struct session_cache *cache)
{
    if (cache->share)
        curl_share_cleanup(cache->share);
    cache->share = NULL;
    if (cache->locks_ready) {
        for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
            pthread_mutex_destroy(&cache->locks[i]);
    }
    cache->locks_ready = false;
}

/* libcurl's built-in CA bundle and directory (CURLINFO_CAINFO, 7.84). */
static void read_defaults(struct dw_transport *t)
{
    CURL *probe = curl_easy_init();
    char *value = NULL;

    if (!probe)
        return;
    if (curl_easy_getinfo(probe, CURLINFO_CAINFO, &value) == CURLE_OK && value)
        t->default_cainfo = dw_xstrdup(value);
    value = NULL;
    if (curl_easy_getinfo(probe, CURLINFO_CAPATH, &value) == CURLE_OK && value)
        t->default_capath = dw_xstrdup(value);
    curl_easy_cleanup(probe);
}

enum dw_err dw_transport_create(const struct dw_config *cfg, struct dw_log *log,
                                struct dw_transport **out, char *errbuf, size_t errlen)
{
    struct dw_transport *t = dw_xcalloc(1, sizeof(*t));
    enum dw_err err = DW_OK;

    *out = NULL;
    t->cfg = cfg;
    read_defaults(t);
    unsigned version = curl_version_info(CURLVERSION_NOW)->version_num;
    for (int c = 0; c < DW_CHANNEL_COUNT; c++) {
        const struct dw_channel_config *cc = &cfg->channels[c];
        const char *name = dw_channel_name((enum dw_channel_id)c);

        t->choice[c] = dw_transport_choose(cc, version);
        if (t->choice[c].forbid_reuse)
            dw_log_write(log, DW_LOG_WARN, (struct dw_log_ctx){NULL, name, -1, -1},
                         "channel %s uses h2c, which libcurl %s cannot reuse a connection for: "
                         "each call opens its own",
                         name, curl_version_info(CURLVERSION_NOW)->version);
        if (!t->choice[c].tls) {
            dw_log_write(log, DW_LOG_WARN, (struct dw_log_ctx){NULL, name, -1, -1},
                         "channel %s uses plain HTTP (%s): its token and posts travel in clear "
                         "text; allowed by channels.allow_insecure_http, for development and "
                         "tests only",
                         name, cc->url);
            continue;
        }
        if (!session_cache_init(&t->sessions[c])) {
            dw_snprintf(errbuf, errlen, "transport: could not make the TLS session cache of %s",
                        name);
            err = DW_ERR_HTTP;
            goto out;
        }
    }
    *out = t;
    t = NULL;
out:
    dw_transport_destroy(t);
    return err;
}

void dw_transport_destroy(struct dw_transport *transport)
{
    if (!transport)
        return;
    for (int c = 0; c < DW_CHANNEL_COUNT; c++)
        session_cache_cleanup(&transport->sessions[c]);
    free(transport->default_cainfo);
    free(transport->default_capath);
    free(transport);
}

enum dw_err dw_transport_apply(const struct dw_transport *transport, CURL *easy,
                               enum dw_channel_id channel)
{
    const struct dw_channel_config *cc = &transport->cfg->channels[channel];
    const struct dw_transport_choice *choice = &transport->choice[channel];
    bool own_ca = cc->ca_file && cc->ca_file[0];
    CURLcode rc = CURLE_OK;

    /* Each step only if the last one worked: the first refusal is the answer. */
    rc = curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, choice->http_version);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(easy, CURLOPT_PIPEWAIT, choice->pipewait ? 1L : 0L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(easy, CURLOPT_CAINFO,
                              own_ca ? cc->ca_file : transport->default_cainfo);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(easy, CURLOPT_CAPATH, own_ca ? NULL : transport->default_capath);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(easy, CURLOPT_SHARE, transport->sessions[channel].share);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, choice->forbid_reuse ? 1L : 0L);
    /* ... and takes none that is already there, not even to multiplex. */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, choice->forbid_reuse ? 1L : 0L);
    return rc == CURLE_OK ? DW_OK : DW_ERR_HTTP;
}

enum dw_err dw_transport_multi_setup(CURLM *multi, int max_host_connections)
{
    /* Multiplexing is libcurl's default since 7.62; say so, it is relied on. */
    if (curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) != CURLM_OK)
        return DW_ERR_HTTP;
    /* Streams per HTTP/2 connection that libcurl allows itself: high, so
     * the server's SETTINGS_MAX_CONCURRENT_STREAMS is the limit (libcurl
     * takes the lower). Note: libcurl 7.88 opens a new connection for each
     * call that finds every connection to its server at that limit, so
     * the calls in flight to one server should stay below it times the
     * connections wanted: the per-channel concurrency limit's job. */
    if (curl_multi_setopt(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, 1000L) != CURLM_OK)
        return DW_ERR_HTTP;
    /* The cure for the note above, where every server speaks HTTP/2: with
     * at most this many connections to a server, a call that finds them
     * all at their stream limit waits in libcurl for a free stream. Over
     * HTTP/1.1 it caps the calls in flight to a server at this many. */
    if (curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_host_connections) !=
        CURLM_OK)
        return DW_ERR_HTTP;
    return DW_OK;
}
