/*
 * The transport of the channel calls: how libcurl talks to each channel's
 * server, kept apart from the engine that drives the calls (src/pool.c).
 * Per channel: certificate verification always on, against the channel's
 * ca_file or the system's CA store; HTTP/2 where TLS (ALPN) offers it,
 * HTTP/1.1 otherwise, or HTTP/2 with prior knowledge (h2c) where the
 * configuration says so; new calls wait to share a multiplexed connection
 * rather than open one each; TLS sessions shared by every connection to the
 * channel, so a new connection resumes instead of a full handshake.
 *
 * One dw_transport serves every engine thread: its per-channel session
 * caches are libcurl shares with a lock callback. Everything else in it is
 * read-only once created.
 */
#ifndef DW_TRANSPORT_H
#define DW_TRANSPORT_H

#include <stdbool.h>

#include <curl/curl.h>

#include "dw/channel_id.h"
#include "dw/common.h"
#include "dw/config.h"
#include "dw/log.h"

struct dw_transport;

/* What one channel's calls ask of libcurl; pure, from its configuration. */
struct dw_transport_choice {
    bool tls;          /* an https:// URL: verified, sessions shared */
    long http_version; /* CURLOPT_HTTP_VERSION */
    bool pipewait;     /* CURLOPT_PIPEWAIT: wait to multiplex on a connection being made */
    bool forbid_reuse; /* CURLOPT_FORBID_REUSE: h2c on a libcurl that breaks reused ones */
};

/* curl_version_num: libcurl's LIBCURL_VERSION_NUM (0x075801 for 7.88.1). */
struct dw_transport_choice dw_transport_choose(const struct dw_channel_config *cc,
                                               unsigned curl_version_num);

/*
 * Builds the per-channel transport of cfg (which must outlive it) and logs,
 * to log (may be NULL), one warning per channel whose URL is plain http://.
 * On DW_OK the caller owns *out; free with dw_transport_destroy after every
 * easy handle that dw_transport_apply touched is cleaned up. On error
 * (libcurl could not make a share) fills errbuf.
 */
enum dw_err dw_transport_create(const struct dw_config *cfg, struct dw_log *log,
                                struct dw_transport **out, char *errbuf,
                                size_t errlen) DW_MUST_CHECK;

/* NULL: no-op. */
void dw_transport_destroy(struct dw_transport *transport);

/*
 * Sets on easy everything of channel's transport: CA bundle, verification,
 * HTTP version, PIPEWAIT, the channel's TLS session cache. Every option is
 * set every time, so an easy handle may move from channel to channel. Call
 * it on an easy handle that is not in a multi; it need only be called again
 * when the handle's channel changes. Any thread. DW_ERR_HTTP when libcurl
 * refuses an option (it lacks TLS or HTTP/2).
 */
enum dw_err dw_transport_apply(const struct dw_transport *transport, CURL *easy,
                               enum dw_channel_id channel) DW_MUST_CHECK;

/* Sets on a new multi handle what the transport needs of it: multiplexing,
 * libcurl's stream limit above the server's, and at most
 * max_host_connections connections to one host:port (worker.
 * max_host_connections; 0: no cap). DW_ERR_HTTP when libcurl refuses. */
enum dw_err dw_transport_multi_setup(CURLM *multi, int max_host_connections) DW_MUST_CHECK;

#endif /* DW_TRANSPORT_H */
