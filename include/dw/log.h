/*
 * Logging: one JSON object per line on stderr, with explicit context
 * (eventId, channel, partition/offset where they apply). A log handle is
 * created by main and passed to every module; lines from several threads
 * never interleave (one write(2) per line).
 */
#ifndef DW_LOG_H
#define DW_LOG_H

#include <stdint.h>

#include "dw/common.h"

enum dw_log_level { DW_LOG_DEBUG, DW_LOG_INFO, DW_LOG_WARN, DW_LOG_ERROR };

struct dw_log;

/* Context of a line; any field may be NULL / -1 when it does not apply. */
struct dw_log_ctx {
    const char *event_id;
    const char *channel;
    int32_t partition; /* -1: none */
    int64_t offset;    /* -1: none */
};

#define DW_LOG_NOCTX ((struct dw_log_ctx){NULL, NULL, -1, -1})

/* Writes to fd (2 for stderr). Caller destroys. */
struct dw_log *dw_log_create(int fd, enum dw_log_level level);
void dw_log_destroy(struct dw_log *log);

/* "debug", "info", "warn", "error"; false when unknown. */
bool dw_log_level_parse(const char *name, enum dw_log_level *out);
const char *dw_log_level_name(enum dw_log_level level);

/*
 * Adds a value that must never appear in a line (a channel token, a SASL
 * password); each later line has every occurrence replaced by "***".
 * Values shorter than 4 bytes, NULL and "" are ignored (too likely to hit
 * innocent text). Copies value. Not thread-safe: call at start-up, before
 * another thread logs.
 *
 * Independently of these, every line is scrubbed of secrets by their shape:
 * the password of a URI's user info ("postgresql://user:***@host/db"), the
 * value after password=, passwd=, secret=, token=, SharedAccessKey= and
 * api_key= (any case, also as "key": "value"), and after "Bearer ".
 */
void dw_log_add_secret(struct dw_log *log, const char *value);

/* Copies in to out (cut to outlen) with every secret replaced by "***":
 * the registered values of log (log may be NULL: shapes only) and the
 * shapes above. For text that is not a log line, such as a configuration
 * error printed before the log exists. Thread-safe. */
void dw_log_redact(const struct dw_log *log, const char *in, char *out, size_t outlen);

/* Thread-safe. A NULL log writes nothing (handy in tests). The message is
 * scrubbed of secrets (see dw_log_add_secret) before it is written. */
void dw_log_write(struct dw_log *log, enum dw_log_level level, struct dw_log_ctx ctx,
                  const char *fmt, ...) DW_PRINTF(4, 5);

#define dw_log_debug(log, ...) dw_log_write((log), DW_LOG_DEBUG, DW_LOG_NOCTX, __VA_ARGS__)
#define dw_log_info(log, ...)  dw_log_write((log), DW_LOG_INFO, DW_LOG_NOCTX, __VA_ARGS__)
#define dw_log_warn(log, ...)  dw_log_write((log), DW_LOG_WARN, DW_LOG_NOCTX, __VA_ARGS__)
#define dw_log_error(log, ...) dw_log_write((log), DW_LOG_ERROR, DW_LOG_NOCTX, __VA_ARGS__)

#endif /* DW_LOG_H */
