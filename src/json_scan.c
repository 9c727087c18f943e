/*
 * Strict JSON: dw/json_scan.h. json-c 0.16 is lenient even in strict mode
 * (it takes overlong UTF-8, encoded surrogates, raw control characters in
 * strings, 'single quotes', NaN, Infinity, "1." and "-01"), so the bytes
 * are checked here first and json-c only builds the tree.
 *
 * Threads: any; each call owns its tokener and frees it before it returns.
 *
 * Invariants:
 * - Nothing outside text[0..len) is read; no NUL terminator is needed.
 * - On failure no tree is left behind (*root is NULL).
 */
#include "dw/json_scan.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dw/utf8.h"

static enum dw_err fail(char *why, size_t whylen, const char *fmt, ...) DW_PRINTF(3, 4);

static enum dw_err fail(char *why, size_t whylen, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return DW_ERR_INVALID;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_json_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_number_char(unsigned char c)
{
    return is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* Bytes that may stand outside strings and numbers: white space,
 * punctuation and the letters of true, false and null. */
static bool is_structural_char(unsigned char c)
{
    return c != '\0' && strchr(" \t\n\r{}[],:truefalsn", c) != NULL;
}

/* The length of the RFC 8259 number at p, or 0 when it is malformed. */
static size_t number_len(const unsigned char *p, size_t avail)
{
    size_t k = 0, start;

    if (k < avail && p[k] == '-')
        k++;
    if (k < avail && p[k] == '0') {
        k++;
    } else if (k < avail && p[k] >= '1' && p[k] <= '9') {
        while (k < avail && is_digit(p[k]))
            k++;
    } else {
        return 0;
    }
    if (k < avail && p[k] == '.') {
        start = ++k;
        while (k < avail && is_digit(p[k]))
            k++;
        if (k == start)
            return 0;
    }
    if (k < avail && (p[k] == 'e' || p[k] == 'E')) {
        k++;
        if (k < avail && (p[k] == '+' || p[k] == '-'))
            k++;
        start = k;
        while (k < avail && is_digit(p[k]))
            k++;
        if (k == start)
            return 0;
    }
    if (k < avail && is_number_char(p[k]))
        return 0; /* "01", "1.2.3", "1e5e5" */
    return k;
}

/*
 * Checks the bytes for what json-c lets through: strict UTF-8 anywhere, no
 * NUL byte, no raw control character inside a string, outside strings only
 * JSON's own characters, numbers in RFC 8259's grammar. The structure
 * (brackets, commas, literals, escapes) is json-c's job.
 */
enum dw_err dw_json_scan(const char *text, size_t len, char *why, size_t whylen)
{
    const unsigned char *p = (const unsigned char *)text;
    bool in_string = false, escaped = false;
    size_t i = 0;

    while (i < len) {
        unsigned char c = p[i];

        if (c >= 0x80) {
            size_t n = dw_utf8_seq_len((const char *)p + i, len - i);
            if (n == 0)
                return fail(why, whylen, "invalid UTF-8 at byte %zu", i);
            if (!in_string)
                return fail(why, whylen, "not JSON: unexpected character at byte %zu", i);
            escaped = false;
            i += n;
            continue;
        }
        if (c == '\0')
            return fail(why, whylen, "NUL byte at byte %zu", i);
        if (in_string) {
            if (c < 0x20)
                return fail(why, whylen,
                            "not JSON: unescaped control character in a string at "
                            "byte %zu",
                            i);
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            i++;
        } else if (c == '"') {
            in_string = true;
            i++;
        } else if (c == '-' || is_digit(c)) {
            size_t n = number_len(p + i, len - i);
            if (n == 0)
                return fail(why, whylen, "not JSON: malformed number at byte %zu", i);
            i += n;
        } else if (is_structural_char(c)) {
            i++;
        } else {
            return fail(why, whylen, "not JSON: unexpected character at byte %zu", i);
        }
    }
    return DW_OK;
}

enum dw_err dw_json_parse(const char *text, size_t len, int depth_max, struct json_object **root,
                          char *why, size_t whylen)
{
    struct json_tokener *tok = NULL;
    enum json_tokener_error jerr;
    enum dw_err err;
    size_t end;

    *root = NULL;
    err = dw_json_scan(text, len, why, whylen);
    if (err)
        goto out;
    end = 0;
    while (end < len && is_json_space((unsigned char)text[end]))
        end++;
    if (end == len) {
        err = fail(why, whylen, "empty");
        goto out;
    }

    tok = json_tokener_new_ex(depth_max);
    if (!tok)
        abort(); /* out of memory: the daemon's policy (see dw_xmalloc) */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    if (len > INT_MAX) {
        err = fail(why, whylen, "too long for the JSON parser");
        goto out;
    }
    *root = json_tokener_parse_ex(tok, text, (int)len);
    jerr = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    if (!*root) {
        if (jerr == json_tokener_continue)
            err = fail(why, whylen, "not JSON: ends before the value is complete");
        else if (jerr == json_tokener_error_depth)
            err = fail(why, whylen, "JSON nested deeper than %d levels", depth_max);
        else
            err = fail(why, whylen, "not JSON: %s at byte %zu", json_tokener_error_desc(jerr), end);
        goto out;
    }
    while (end < len && is_json_space((unsigned char)text[end]))
        end++;
    if (end != len) {
        err = fail(why, whylen, "not JSON: trailing data at byte %zu", end);
        goto out;
    }
out:
    if (err) {
        json_object_put(*root);
        *root = NULL;
    }
    if (tok) /* json-c 0.16's free is not NULL-safe */
        json_tokener_free(tok);
    return err;
}
