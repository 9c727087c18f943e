/*
 * JSON-lines logging on a file descriptor (stderr in production).
 * Thread-safe: each line is formatted into a local buffer and written with
 * one write(2), which POSIX keeps whole for pipes up to PIPE_BUF and which
 * in practice does not interleave on stderr. The level is fixed at creation.
 */
#include "dw/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

struct dw_log {
    int fd;
    enum dw_log_level level;
};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

struct dw_log *dw_log_create(int fd, enum dw_log_level level)
{
    struct dw_log *log = dw_xcalloc(1, sizeof(*log));
    log->fd = fd;
    log->level = level;
    return log;
}

void dw_log_destroy(struct dw_log *log)
{
    free(log);
}

bool dw_log_level_parse(const char *name, enum dw_log_level *out)
{
    for (size_t i = 0; i < DW_ARRAY_LEN(level_names); i++) {
        if (name && strcmp(name, level_names[i]) == 0) {
            *out = (enum dw_log_level)i;
            return true;
        }
    }
    return false;
}

const char *dw_log_level_name(enum dw_log_level level)
{
    return (unsigned)level < DW_ARRAY_LEN(level_names) ? level_names[level] : "info";
}

void dw_log_write(struct dw_log *log, enum dw_log_level level, struct dw_log_ctx ctx,
                  const char *fmt, ...)
{
    if (!log || level < log->level)
        return;

    char message[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    char when[32];
    dw_format_time(dw_wall_ms(), when);

    /* json-c escapes the message and context, which may hold anything. */
    struct json_object *line = json_object_new_object();
    json_object_object_add(line, "time", json_object_new_string(when));
    json_object_object_add(line, "level", json_object_new_string(dw_log_level_name(level)));
    json_object_object_add(line, "message", json_object_new_string(message));
    if (ctx.event_id)
        json_object_object_add(line, "eventId", json_object_new_string(ctx.event_id));
    if (ctx.channel)
        json_object_object_add(line, "channel", json_object_new_string(ctx.channel));
    if (ctx.partition >= 0)
        json_object_object_add(line, "partition", json_object_new_int(ctx.partition));
    if (ctx.offset >= 0)
        json_object_object_add(line, "offset", json_object_new_int64(ctx.offset));

    size_t len;
    const char *text = json_object_to_json_string_length(
        line, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    struct dw_buf buf;
    dw_buf_init(&buf, len + 2);
    if (dw_buf_append(&buf, text, len) == DW_OK && dw_buf_append(&buf, "\n", 1) == DW_OK) {
        ssize_t n = write(log->fd, buf.data, buf.len);
        (void)n; /* nowhere left to report a failed log write */
    }
    dw_buf_cleanup(&buf);
    json_object_put(line);
}
