/*
 * Allocation wrappers, clocks, error names and the capped buffer.
 * Thread-safe: nothing here keeps state.
 */
#define _POSIX_C_SOURCE 200809L
#include "dw/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *dw_strerror(enum dw_err err)
{
    switch (err) {
    case DW_OK:
        return "success";
    case DW_ERR_NOMEM:
        return "buffer limit reached";
    case DW_ERR_CONFIG:
        return "bad configuration";
    case DW_ERR_IO:
        return "input/output error";
    case DW_ERR_DB:
        return "database error";
    case DW_ERR_KAFKA:
        return "Kafka error";
    case DW_ERR_HTTP:
        return "HTTP error";
    case DW_ERR_INVALID:
        return "invalid input";
    case DW_ERR_NOT_FOUND:
        return "not found";
    case DW_ERR_FULL:
        return "full";
    case DW_ERR_STOPPED:
        return "stopped";
    }
    return "unknown error";
}

static void oom(size_t size)
{
    fprintf(stderr, "{\"level\":\"error\",\"message\":\"out of memory allocating %zu bytes\"}\n",
            size);
    abort();
}

void *dw_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

void *dw_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *dw_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

char *dw_xstrdup(const char *s)
{
    return dw_xstrndup(s, strlen(s));
}

char *dw_xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = dw_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

int dw_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t dw_strlcpy(char *dst, const char *src, size_t dstlen)
{
    size_t len = strlen(src);
    if (dstlen) {
        size_t n = len < dstlen - 1 ? len : dstlen - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}

void dw_snprintf(char *dst, size_t dstlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, dstlen, fmt, ap);
    va_end(ap);
}

int64_t dw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dw_cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

struct timespec dw_deadline_in(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (ms % 1000) * 1000000;
    ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}

int64_t dw_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t dw_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dw_format_time(int64_t wall_ms, char out[32])
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(wall_ms % 1000));
}

void dw_buf_init(struct dw_buf *buf, size_t cap)
{
    buf->data = NULL;
    buf->len = 0;
    buf->alloc = 0;
    buf->cap = cap;
}

void dw_buf_cleanup(struct dw_buf *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->alloc = 0;
}

void dw_buf_reset(struct dw_buf *buf)
{
    buf->len = 0;
    if (buf->data)
        buf->data[0] = '\0';
}

static enum dw_err reserve(struct dw_buf *buf, size_t extra)
{
    if (extra > buf->cap || buf->len + extra > buf->cap)
        return DW_ERR_NOMEM;
    size_t need = buf->len + extra + 1;
    if (need <= buf->alloc)
        return DW_OK;
    size_t alloc = buf->alloc ? buf->alloc : 256;
    while (alloc < need)
        alloc *= 2;
    if (alloc > buf->cap + 1)
        alloc = buf->cap + 1;
    buf->data = dw_xrealloc(buf->data, alloc);
    buf->alloc = alloc;
    return DW_OK;
}

enum dw_err dw_buf_append(struct dw_buf *buf, const void *data, size_t len)
{
    enum dw_err err = reserve(buf, len);
    if (err)
        return err;
    if (len)
        memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    return DW_OK;
}

enum dw_err dw_buf_printf(struct dw_buf *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return DW_ERR_INVALID;
    enum dw_err err = reserve(buf, (size_t)n);
    if (err)
        return err;
    va_start(ap, fmt);
    vsnprintf(buf->data + buf->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)n;
    return DW_OK;
}

char *dw_buf_detach(struct dw_buf *buf, size_t *len)
{
    char *data = buf->data;
    if (!data)
        data = dw_xstrdup("");
    if (len)
        *len = buf->len;
    dw_buf_init(buf, buf->cap);
    return data;
}
