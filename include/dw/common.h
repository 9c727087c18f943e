/*
 * Shared basics: the error enum every fallible function returns, the
 * allocation wrappers that abort on out-of-memory (a daemon, not a library),
 * clocks, and a capped growable byte buffer for data that comes from outside.
 */
#ifndef DW_COMMON_H
#define DW_COMMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define DW_MUST_CHECK   __attribute__((warn_unused_result))
#define DW_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define DW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* The struct of type that embeds *ptr as its member (intrusive lists and
 * heaps); ptr must not be NULL. */
#define DW_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

enum dw_err {
    DW_OK = 0,
    DW_ERR_NOMEM,     /* only from capped buffers; allocation failure aborts */
    DW_ERR_CONFIG,    /* a setting is missing or wrong */
    DW_ERR_IO,        /* a file or socket failed */
    DW_ERR_DB,        /* PostgreSQL failed; the connection may be gone */
    DW_ERR_KAFKA,     /* librdkafka refused */
    DW_ERR_HTTP,      /* an HTTP library failed */
    DW_ERR_INVALID,   /* an argument or input was malformed */
    DW_ERR_NOT_FOUND, /* the thing asked for does not exist */
    DW_ERR_FULL,      /* a bounded queue or buffer is full */
    DW_ERR_STOPPED,   /* the component is stopping and takes no more work */
};

/* A static English text for err; never NULL. */
const char *dw_strerror(enum dw_err err);

/* Allocation that never returns NULL: it aborts the process instead. */
void *dw_xmalloc(size_t size);
void *dw_xcalloc(size_t n, size_t size);
void *dw_xrealloc(void *ptr, size_t size);
char *dw_xstrdup(const char *s);
char *dw_xstrndup(const char *s, size_t n);

/* Copies src into dst of size dstlen, always NUL-terminated, truncating.
 * Returns strlen(src) so callers can detect truncation. */
size_t dw_strlcpy(char *dst, const char *src, size_t dstlen);

/* The value of the hexadecimal digit c (0-9, a-f, A-F), or -1. */
int dw_hex_digit(char c);

/* Formats into dst (always terminated, truncated when too long). */
void dw_snprintf(char *dst, size_t dstlen, const char *fmt, ...) DW_PRINTF(3, 4);

/* Monotonic clock in milliseconds and microseconds; for durations only. */
int64_t dw_now_ms(void);
int64_t dw_now_us(void);
/* Wall clock in milliseconds since the Unix epoch; for timestamps. */
int64_t dw_wall_ms(void);
/* Every deadline is on the monotonic clock, so is every timed wait: a
 * condition variable made with dw_cond_init_monotonic, waited on with
 * pthread_cond_timedwait until dw_deadline_in(ms). A wall-clock jump then
 * neither stretches nor cuts a wait. */
void dw_cond_init_monotonic(pthread_cond_t *cond);
struct timespec dw_deadline_in(int64_t ms);
/* Formats a wall-clock time as RFC 3339 UTC with milliseconds,
 * "2025-10-29T06:13:04.123Z"; out needs 25 bytes. */
void dw_format_time(int64_t wall_ms, char out[32]);

/*
 * A growable byte buffer with a hard cap (curl's dynbuf): appends past the
 * cap fail with DW_ERR_FULL and leave the buffer as it was. Caller-allocated;
 * dw_buf_init / dw_buf_cleanup. The data is always NUL-terminated.
 */
struct dw_buf {
    char *data;
    size_t len;
    size_t alloc;
    size_t cap;
};

void dw_buf_init(struct dw_buf *buf, size_t cap);
void dw_buf_cleanup(struct dw_buf *buf);
void dw_buf_reset(struct dw_buf *buf);
enum dw_err dw_buf_append(struct dw_buf *buf, const void *data, size_t len) DW_MUST_CHECK;
enum dw_err dw_buf_printf(struct dw_buf *buf, const char *fmt, ...) DW_PRINTF(2, 3) DW_MUST_CHECK;
/* Hands the data over to the caller (free() it) and re-initialises buf. */
char *dw_buf_detach(struct dw_buf *buf, size_t *len);

#endif /* DW_COMMON_H */
