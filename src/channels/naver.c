/*
 * NAVER, Naver Blog: one form-urlencoded POST, title=...&contents=... (the
 * contents pair only when the request has content), each value
 * percent-encoded by libcurl (CONTRACT section 3). The reply nests the id
 * and url under message.result. Stateless; any thread (curl_easy_escape
 * without a handle keeps no state).
 */
#include <limits.h>
#include <string.h>

#include <curl/curl.h>

#include "channel_internal.h"
#include "dw/request.h"

/* Far above any valid request (a few hundred KiB once escaped). */
#define FORM_MAX_BYTES (16u * 1024 * 1024)

static enum dw_err append_pair(struct dw_buf *form, const char *key, const char *value)
{
    size_t len = strlen(value);
    if (len > INT_MAX)
        return DW_ERR_INVALID;
    char *escaped = curl_easy_escape(NULL, value, (int)len);
    if (!escaped)
        return DW_ERR_NOMEM;
    enum dw_err err = dw_buf_printf(form, "%s%s=%s", form->len ? "&" : "", key, escaped);
    curl_free(escaped);
    return err;
}

static enum dw_err build(const struct dw_request *req, int step, const char *prev_id,
                         struct dw_http_call *call)
{
    (void)prev_id;
    if (step != 0)
        return DW_ERR_INVALID;

    struct dw_buf form;
    dw_buf_init(&form, FORM_MAX_BYTES);
    enum dw_err err = append_pair(&form, "title", req->title);
    if (!err && dw_channel_present(req->content))
        err = append_pair(&form, "contents", req->content);
    if (err)
        goto out;

    call->path = "/blog/writePost.json";
    call->content_type = DW_CHANNEL_FORM;
    call->idempotency_suffix = "";
    call->body = dw_buf_detach(&form, &call->body_len);
out:
    dw_buf_cleanup(&form);
    return err;
}

static enum dw_errcode parse(int step, const char *body, size_t len, struct dw_channel_reply *reply,
                             char *errbuf, size_t errlen)
{
    static const char *const nest[] = {"message", "result", NULL};
    (void)step;
    return dw_channel_parse_reply(body, len, nest, "postId", "url", reply, errbuf, errlen);
}

const struct dw_channel_type dw_channel_naver = {
    .id = DW_CHANNEL_NAVER,
    .name = "NAVER",
    .steps = 1,
    .build = build,
    .parse = parse,
};
