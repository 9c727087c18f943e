/*
 * JSON-lines logging on a file descriptor (stderr in production).
 * Thread-safe: each line is formatted on its own and written with one
 * writev(2), which POSIX keeps whole for pipes up to PIPE_BUF and which in
 * practice does not interleave on stderr. The level is fixed at creation.
 *
 * Secrets: every message is scrubbed before it is written (redact()), first
 * of the values registered with dw_log_add_secret, then of anything shaped
 * like a secret (a URI's password, password=..., Bearer ...), and only then
 * cut to MESSAGE_MAX, so no secret loses its tail to the cut. Messages are
 * formatted by callers from outside input, so this is the one place that
 * can promise no token, password or DSN secret reaches a log.
 */
#include "dw/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

#include <json-c/json.h>

#define REDACTED    "***"
#define MESSAGE_MAX 2048         /* a line's message is cut to this (after masking) */
#define RAW_MAX     (256 * 1024) /* longest message masked whole */
#define MIN_SECRET  4

struct dw_log {
    int fd;
    enum dw_log_level level;
    char **secrets; /* dw_log_add_secret; written before threads start */
    size_t *secret_lens;
    size_t secret_count;
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
    if (!log)
        return;
    for (size_t i = 0; i < log->secret_count; i++)
        free(log->secrets[i]);
    free(log->secrets);
    free(log->secret_lens);
    free(log);
}

void dw_log_add_secret(struct dw_log *log, const char *value)
{
    if (!log || !value || strlen(value) < MIN_SECRET)
        return;
    log->secrets = dw_xrealloc(log->secrets, (log->secret_count + 1) * sizeof(*log->secrets));
    log->secret_lens =
        dw_xrealloc(log->secret_lens, (log->secret_count + 1) * sizeof(*log->secret_lens));
    log->secret_lens[log->secret_count] = strlen(value);
    log->secrets[log->secret_count++] = dw_xstrdup(value);
}

/* ---- redaction ---- */

/* Key names whose value is a secret, matched case-insensitively at the end
 * of a name ("sasl.password", "PGPASSWORD", "SharedAccessKey"). */
static const char *const secret_keys[] = {"password",        "passwd",  "secret", "token",
                                          "sharedaccesskey", "api_key", "apikey"};

/* Output of fixed capacity (cap includes the NUL); excess is dropped. */
struct text {
    char *data;
    size_t len, cap;
};

static void put(struct text *t, const char *s, size_t n)
{
    if (t->len + 1 >= t->cap)
        return;
    if (n > t->cap - 1 - t->len)
        n = t->cap - 1 - t->len;
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static size_t prefix_ci(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncasecmp(s, prefix, n) == 0 ? n : 0;
}

/* The end of a value starting at s: the closing quote when quoted, else
 * the first white space or separator. */
static const char *value_end(const char *s, char quote)
{
    if (quote) {
        const char *q = strchr(s, quote);
        return q ? q : s + strlen(s);
    }
    while (*s && !isspace((unsigned char)*s) && !strchr(";&,\"'})", *s))
        s++;
    return s;
}

/* At s: "://user:PASSWORD@" gives the length of "://user:" in *keep and
 * where the password ends (at '@'); NULL when s is not that. */
static const char *uri_password(const char *s, size_t *keep)
{
    if (strncmp(s, "://", 3) != 0)
        return NULL;
    const char *end = s + 3;
    while (*end && !strchr("/?#@ \t\"'<>", *end))
        end++;
    if (*end != '@')
        return NULL;
    const char *colon = memchr(s + 3, ':', (size_t)(end - (s + 3)));
    if (!colon)
        return NULL;
    *keep = (size_t)(colon + 1 - s);
    return end;
}

/* At s: a secret key followed by = (or, when quoted, ":"), or "Bearer ".
 * Gives the length up to the value in *keep and returns the value's end;
 * NULL when s is not that. */
static const char *keyed_value(const char *s, size_t *keep)
{
    size_t n = prefix_ci(s, "bearer ");
    if (n) {
        const char *end = value_end(s + n, 0);
        *keep = n;
        return end > s + n ? end : NULL;
    }
    for (size_t k = 0; k < DW_ARRAY_LEN(secret_keys); k++) {
        const char *p = s + prefix_ci(s, secret_keys[k]);
        if (p == s)
            continue;
        bool quoted = *p == '"';
        if (quoted)
            p++;
        while (*p == ' ')
            p++;
        if (*p != '=' && !(quoted && *p == ':'))
            continue;
        p++;
        while (*p == ' ')
            p++;
        char quote = (*p == '"' || *p == '\'') ? *p : 0;
        if (quote)
            p++;
        *keep = (size_t)(p - s);
        return value_end(p, quote);
    }
    return NULL;
}

/* Whether a shaped secret can start with c: "://", "Bearer " or a key of
 * secret_keys, in either case. Most characters cannot, and are copied
 * without trying every pattern (a line is logged for every request). */
static bool may_start_shaped(unsigned char c)
{
    int l = tolower(c);
    if (l == ':' || l == 'b')
        return true;
    for (size_t k = 0; k < DW_ARRAY_LEN(secret_keys); k++) {
        if (l == secret_keys[k][0])
            return true;
    }
    return false;
}

/* The length of the registered secret that starts at p, or 0. */
static size_t registered_at(const struct dw_log *log, const char *p)
{
    for (size_t i = 0; i < log->secret_count; i++) {
        if (*p == log->secrets[i][0] && strncmp(p, log->secrets[i], log->secret_lens[i]) == 0)
            return log->secret_lens[i];
    }
    return 0;
}

/* Copies in (its whole length) to out with every secret replaced by
 * REDACTED; out is cut to outlen only after that, so a secret across the
 * cut cannot leave its first part behind. Text between secrets is copied a
 * run at a time. */
static void redact(const struct dw_log *log, const char *in, char *out, size_t outlen)
{
    /* Masking never makes text longer than the input plus a few bytes per
     * shaped secret ("password=a" -> "password=***"). */
    size_t inlen = strlen(in);
    size_t pass1_cap = inlen + inlen / 2 + 16;
    char small[MESSAGE_MAX * 2];
    char *pass1 = pass1_cap <= sizeof(small) ? small : dw_xmalloc(pass1_cap);
    struct text t = {pass1, 0, pass1_cap};
    pass1[0] = '\0';

    /* Registered values first: they may have any shape. */
    const char *run = in;
    for (const char *p = in; log && *p;) {
        size_t hit = registered_at(log, p);
        if (hit) {
            put(&t, run, (size_t)(p - run));
            put(&t, REDACTED, strlen(REDACTED));
            p += hit;
            run = p;
        } else {
            p++;
        }
    }
    put(&t, run, strlen(run));

    t = (struct text){out, 0, outlen};
    out[0] = '\0';
    run = pass1;
    for (const char *p = pass1; *p;) {
        size_t keep = 0;
        const char *end = NULL;
        if (may_start_shaped((unsigned char)*p)) {
            end = uri_password(p, &keep);
            if (!end)
                end = keyed_value(p, &keep);
        }
        if (end) {
            put(&t, run, (size_t)(p - run) + keep);
            put(&t, REDACTED, strlen(REDACTED));
            p = end;
            run = p;
        } else {
            p++;
        }
    }
    put(&t, run, strlen(run));
    if (pass1 != small)
        free(pass1);
}

void dw_log_redact(const struct dw_log *log, const char *in, char *out, size_t outlen)
{
    if (outlen)
        redact(log, in, out, outlen);
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

static void add(struct json_object *obj, const char *key, struct json_object *value)
{
    json_object_object_add_ex(obj, key, value,
                              JSON_C_OBJECT_ADD_KEY_IS_NEW | JSON_C_OBJECT_ADD_CONSTANT_KEY);
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

    /* The whole message first (mask, then cut): a longer one than the
     * stack buffer is formatted again on the heap, up to RAW_MAX. */
    char small[MESSAGE_MAX];
    char *raw = small;
    char message[MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(small)) {
        size_t cap = (size_t)n < RAW_MAX ? (size_t)n + 1 : RAW_MAX;
        raw = dw_xmalloc(cap);
        va_start(ap, fmt);
        vsnprintf(raw, cap, fmt, ap);
        va_end(ap);
    }
    redact(log, raw, message, sizeof(message));
    if (raw != small)
        free(raw);

    char when[32];
    dw_format_time(dw_wall_ms(), when);

    /* json-c escapes the message and context, which may hold anything. The
     * keys are literals, each added once: json-c need not copy or look them
     * up (a line is written for every request, so this is a hot path). */
    struct json_object *line = json_object_new_object();
    add(line, "time", json_object_new_string(when));
    add(line, "level", json_object_new_string(dw_log_level_name(level)));
    add(line, "message", json_object_new_string(message));
    if (ctx.event_id)
        add(line, "eventId", json_object_new_string(ctx.event_id));
    if (ctx.channel)
        add(line, "channel", json_object_new_string(ctx.channel));
    if (ctx.partition >= 0)
        add(line, "partition", json_object_new_int(ctx.partition));
    if (ctx.offset >= 0)
        add(line, "offset", json_object_new_int64(ctx.offset));

    size_t len;
    const char *text = json_object_to_json_string_length(
        line, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    if (text) {
        /* The line and its newline in one system call, without a copy;
         * writev is as atomic as write. */
        struct iovec iov[2] = {{(void *)text, len}, {"\n", 1}};
        ssize_t n = writev(log->fd, iov, 2);
        (void)n; /* nowhere left to report a failed log write */
    }
    json_object_put(line);
}
