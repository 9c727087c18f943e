/*
 * The status store's DSN, read before any connection: the passwords it
 * carries (so the log can mask them before libpq quotes the DSN in an error)
 * and whether a connection made with it may fall back to plain text.
 *
 * Threads: pure functions of their arguments (and PGSSLMODE); any thread.
 *
 * Invariants: a DSN libpq cannot parse still yields its passwords (found by
 * shape), since libpq's error text quotes the bad part.
 */
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "dw/store.h"

/* Adds text[0..len) and, when it holds valid %XX escapes, its decoded form. */
static void add_password(char ***out, size_t *n, const char *text, size_t len)
{
    if (!len)
        return;
    *out = dw_xrealloc(*out, (*n + 3) * sizeof(**out));
    char *raw = dw_xmalloc(len + 1);
    memcpy(raw, text, len);
    raw[len] = '\0';
    (*out)[(*n)++] = raw;
    if (memchr(raw, '%', len)) {
        char *dec = dw_xmalloc(len + 1);
        size_t j = 0;
        bool ok = true;
        for (size_t i = 0; i < len && ok; i++) {
            if (raw[i] != '%') {
                dec[j++] = raw[i];
            } else if (i + 2 < len && dw_hex_digit(raw[i + 1]) >= 0 &&
                       dw_hex_digit(raw[i + 2]) >= 0) {
                dec[j++] = (char)(dw_hex_digit(raw[i + 1]) * 16 + dw_hex_digit(raw[i + 2]));
                i += 2;
            } else {
                ok = false;
            }
        }
        dec[j] = '\0';
        if (ok && j)
            (*out)[(*n)++] = dec;
        else
            free(dec);
    }
    (*out)[*n] = NULL;
}

/* A DSN libpq cannot parse: the password found by its shape, so that
 * libpq's own error text (which quotes the bad part) cannot carry it. */
static void password_by_shape(const char *dsn, char ***out, size_t *n)
{
    const char *scheme = strstr(dsn, "://");
    if (scheme) {
        const char *user = scheme + 3;
        const char *end = user + strcspn(user, "/?#");
        const char *at = NULL;
        for (const char *p = user; p < end; p++)
            if (*p == '@')
                at = p; /* the last '@' before the host */
        const char *colon = at ? memchr(user, ':', (size_t)(at - user)) : NULL;
        if (colon)
            add_password(out, n, colon + 1, (size_t)(at - colon - 1));
    }
    /* password=... as a keyword or a URI parameter. */
    const char *stop = scheme ? " \t&#" : " \t";
    for (const char *p = strstr(dsn, "password"); p; p = strstr(p + 1, "password")) {
        const char *v = p + 8;
        while (*v == ' ')
            v++;
        if (*v != '=')
            continue;
        v++;
        while (*v == ' ')
            v++;
        if (*v == '\'' && !scheme) {
            const char *q = strchr(v + 1, '\'');
            add_password(out, n, v + 1, q ? (size_t)(q - v - 1) : strlen(v + 1));
        } else {
            add_password(out, n, v, strcspn(v, stop));
        }
    }
}

char **dw_store_dsn_passwords(const char *dsn)
{
    char **out = dw_xcalloc(1, sizeof(*out));
    size_t n = 0;
    if (!dsn)
        return out;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &err);
    if (opts) {
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (strcmp(o->keyword, "password") == 0 && o->val)
                add_password(&out, &n, o->val, strlen(o->val));
        }
        PQconninfoFree(opts);
    } else {
        PQfreemem(err); /* it may quote the password: never shown */
    }
    /* Also by shape: the parsed value is decoded, the raw form may be in
     * an error text too. */
    password_by_shape(dsn, &out, &n);
    return out;
}

void dw_store_passwords_free(char **passwords)
{
    for (size_t i = 0; passwords && passwords[i]; i++)
        free(passwords[i]);
    free(passwords);
}

bool dw_store_dsn_plaintext_possible(const char *dsn, char *why, size_t whylen)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &err);
    if (!opts) {
        PQfreemem(err);
        return false; /* the connection will fail and say why */
    }
    const char *sslmode = NULL;
    const char *host = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "sslmode") == 0)
            sslmode = o->val;
        else if (strcmp(o->keyword, "host") == 0)
            host = o->val;
    }
    if (!sslmode || !*sslmode)
        sslmode = getenv("PGSSLMODE"); /* libpq's fallback */
    bool weak = !sslmode || !*sslmode || strcmp(sslmode, "disable") == 0 ||
                strcmp(sslmode, "allow") == 0 || strcmp(sslmode, "prefer") == 0;
    /* A Unix socket never goes over a network. */
    bool local = host && host[0] == '/';
    if (weak && !local)
        dw_snprintf(why, whylen, "sslmode is %s%s", sslmode && *sslmode ? sslmode : "not set",
                    sslmode && *sslmode ? "" : " (libpq's default: prefer)");
    PQconninfoFree(opts);
    return weak && !local;
}
