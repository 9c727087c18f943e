/*
 * channel-sim: The strict checks a real channel API makes on each call: auth,
 * Idempotency-Key, body format and fields.
 */
#include "sim.h"

/* ------------------------------------------------------------------------ */
/* Request checks                                                           */
/* ------------------------------------------------------------------------ */

bool bearer_present(const char *h)
{
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ' || *h == '\t')
        h++;
    return *h != '\0';
}

static bool media_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (ct == NULL || strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* One field of a request body, whichever the format. */
struct field {
    const char *name;
    size_t name_len;
    const char *value; /* NULL for JSON null or a non-string */
    size_t value_len;
    bool is_null;
    bool is_string;
};

#define MAX_FIELDS 16

static bool name_in(const char *const *list, const char *name, size_t len)
{
    for (; *list != NULL; list++) {
        if (strlen(*list) == len && memcmp(*list, name, len) == 0)
            return true;
    }
    return false;
}

static const struct field *field_find(const struct field *f, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        if (f[i].name_len == len && memcmp(f[i].name, name, len) == 0)
            return &f[i];
    }
    return NULL;
}

/* Checks fields against the endpoint: only the contract's fields, each a
 * non-empty string, every required one present, plus the per-API rules.
 * event_id is the Idempotency-Key without its suffix. */
static bool check_fields(struct sim *sim, const struct endpoint *ep, const struct field *f,
                         size_t n, const char *event_id, size_t event_id_len, struct answer *a)
{
    for (size_t i = 0; i < n; i++) {
        if (!name_in(ep->allowed, f[i].name, f[i].name_len)) {
            answer_error(a, 400, "UNKNOWN_FIELD", "field not accepted by this API", f[i].name,
                         f[i].name_len);
            return false;
        }
        if (f[i].is_null) {
            answer_error(a, 400, "NULL_FIELD", "field is null (leave absent fields out)", f[i].name,
                         f[i].name_len);
            return false;
        }
        if (!f[i].is_string) {
            answer_error(a, 400, "WRONG_TYPE", "field must be a string", f[i].name, f[i].name_len);
            return false;
        }
        if (f[i].value_len == 0) {
            answer_error(a, 400, "EMPTY_FIELD", "field is empty (leave absent fields out)",
                         f[i].name, f[i].name_len);
            return false;
        }
    }
    for (const char *const *r = ep->required; *r != NULL; r++) {
        if (field_find(f, n, *r) == NULL) {
            answer_error(a, 400, "MISSING_FIELD", "required field missing", *r, strlen(*r));
            return false;
        }
    }

    const struct field *x;
    if ((x = field_find(f, n, "campaignId")) != NULL &&
        (x->value_len != event_id_len || memcmp(x->value, event_id, event_id_len) != 0)) {
        answer_error(a, 400, "CAMPAIGN_ID_MISMATCH",
                     "campaignId must be the eventId of the Idempotency-Key", x->value,
                     x->value_len);
        return false;
    }
    if ((x = field_find(f, n, "imageUrl")) != NULL || (x = field_find(f, n, "image_url")) != NULL) {
        if (!(x->value_len > 7 && strncmp(x->value, "http://", 7) == 0) &&
            !(x->value_len > 8 && strncmp(x->value, "https://", 8) == 0)) {
            answer_error(a, 400, "INVALID_FIELD", "image URL must be http:// or https://", x->name,
                         x->name_len);
            return false;
        }
    }
    if (ep->id == EP_RINGOBIZ_RINGBACK) {
        x = field_find(f, n, "message");
        size_t cp = dw_utf8_count(x->value, x->value_len);
        if (cp != SIZE_MAX && cp > SIM_RINGOBIZ_MAX_CP) {
            answer_error(a, 400, "FIELD_TOO_LONG", "message is over 60 characters", "message", 7);
            return false;
        }
    }
    if (ep->id == EP_INSTAGRAM_PUBLISH) {
        x = field_find(f, n, "creation_id");
        if (!media_id_valid(sim, x->value, x->value_len)) {
            answer_error(a, 400, "UNKNOWN_CREATION_ID",
                         "creation_id was not created by POST /v1/media", x->value, x->value_len);
            return false;
        }
    }
    return true;
}

/* Decodes %XX and '+' in place; returns the new length or -1 when malformed
 * (a bad escape or a NUL byte). */
static long form_decode(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            s[o++] = ' ';
        } else if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = dw_hex_digit(s[i + 1]);
            int lo = dw_hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            s[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            s[o++] = c;
        }
    }
    return (long)o;
}

/* Validates the body of a channel call (already known complete). On failure
 * fills a with the 4xx to send. */
bool check_body(struct sim *sim, struct sim_request *req, const char *event_id, size_t event_id_len,
                struct answer *a)
{
    const struct endpoint *ep = req->ep;
    struct field fields[MAX_FIELDS];
    size_t n = 0;
    const char *ct =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);

    if (req->body_len == 0) {
        answer_error(a, 400, "INVALID_BODY", "empty body", NULL, 0);
        return false;
    }
    if (ep->format == FMT_FORM) {
        if (!media_type_is(ct, "application/x-www-form-urlencoded")) {
            answer_error(a, 400, "INVALID_CONTENT_TYPE",
                         "Content-Type must be application/x-www-form-urlencoded", NULL, 0);
            return false;
        }
        /* Split in place: the body buffer is ours. */
        char *p = req->body;
        char *end = req->body + req->body_len;
        while (p <= end) {
            char *amp = memchr(p, '&', (size_t)(end - p));
            char *seg_end = amp ? amp : end;
            if (seg_end == p) {
                answer_error(a, 400, "INVALID_BODY", "empty form field", NULL, 0);
                return false;
            }
            char *eq = memchr(p, '=', (size_t)(seg_end - p));
            char *name_end = eq ? eq : seg_end;
            long nl = form_decode(p, (size_t)(name_end - p));
            long vl = 0;
            char *val = eq ? eq + 1 : seg_end;
            if (eq)
                vl = form_decode(val, (size_t)(seg_end - val));
            if (nl < 0 || vl < 0 || !text_ok(p, (size_t)nl) || !text_ok(val, (size_t)vl)) {
                answer_error(a, 400, "INVALID_BODY", "malformed form encoding or UTF-8", NULL, 0);
                return false;
            }
            if (n == MAX_FIELDS) {
                answer_error(a, 400, "INVALID_BODY", "too many fields", NULL, 0);
                return false;
            }
            for (size_t i = 0; i < n; i++) {
                if (fields[i].name_len == (size_t)nl &&
                    memcmp(fields[i].name, p, (size_t)nl) == 0) {
                    answer_error(a, 400, "INVALID_BODY", "field given twice", p, (size_t)nl);
                    return false;
                }
            }
            fields[n].name = p;
            fields[n].name_len = (size_t)nl;
            fields[n].value = val;
            fields[n].value_len = (size_t)vl;
            fields[n].is_null = false;
            fields[n].is_string = true;
            n++;
            if (amp == NULL)
                break;
            p = amp + 1;
        }
        return check_fields(sim, ep, fields, n, event_id, event_id_len, a);
    }

    if (!media_type_is(ct, "application/json")) {
        answer_error(a, 400, "INVALID_CONTENT_TYPE", "Content-Type must be application/json", NULL,
                     0);
        return false;
    }
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *root = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
    bool ok = json_tokener_get_error(tok) == json_tokener_success && root != NULL;
    if (ok) {
        for (size_t i = json_tokener_get_parse_end(tok); i < req->body_len; i++) {
            char c = req->body[i];
            if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
                ok = false;
        }
    }
    json_tokener_free(tok);
    if (!ok || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        answer_error(a, 400, "INVALID_BODY", "body is not a JSON object", NULL, 0);
        return false;
    }
    bool too_many = false;
    json_object_object_foreach(root, name, v)
    {
        if (n == MAX_FIELDS) {
            too_many = true;
            break;
        }
        fields[n].name = name;
        fields[n].name_len = strlen(name);
        fields[n].is_null = v == NULL;
        fields[n].is_string = json_object_is_type(v, json_type_string);
        fields[n].value = fields[n].is_string ? json_object_get_string(v) : NULL;
        fields[n].value_len = fields[n].is_string ? (size_t)json_object_get_string_len(v) : 0;
        n++;
    }
    if (too_many) {
        json_object_put(root);
        answer_error(a, 400, "INVALID_BODY", "too many fields", NULL, 0);
        return false;
    }
    ok = check_fields(sim, ep, fields, n, event_id, event_id_len, a);
    json_object_put(root); /* fields point into root: released last */
    return ok;
}
