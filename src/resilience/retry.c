/*
 * Retry (include/dw/retry.h): the back-off, the decision after a failed
 * try, the per-channel retry budget and the jitter's random source.
 *
 * Threads: dw_retry_backoff_ms, dw_retry_decide and dw_retry_random are
 * pure (the random state is the caller's). The budget is one atomic
 * integer of thousandths of a token, updated with compare-and-swap, so
 * the pool's threads share it without a lock.
 */
#include "dw/retry.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

int64_t dw_retry_backoff_ms(const struct dw_retry_policy *p, int attempt, double rnd)
{
    double ceiling = p->initial_backoff_ms * pow(p->multiplier, attempt > 1 ? attempt - 1 : 0);
    if (!(ceiling <= p->max_backoff_ms)) /* also catches an overflow to inf */
        ceiling = p->max_backoff_ms;
    if (ceiling < 0)
        ceiling = 0;
    if (!(rnd >= 0.0) || rnd >= 1.0)
        rnd = 0.0;
    return (int64_t)(rnd * ceiling);
}

static const char *plural(int n)
{
    return n == 1 ? "" : "s";
}

static void give_up(struct dw_retry_verdict *out, enum dw_retry_stop stop, enum dw_errcode error)
{
    out->retry = false;
    out->wait_ms = 0;
    out->stop = stop;
    out->error = error;
}

void dw_retry_decide(const struct dw_retry_policy *p, const struct dw_retry_input *in,
                     struct dw_retry_verdict *out)
{
    const char *msg = in->message ? in->message : "";
    const char *code = dw_errcode_name(in->error) ? dw_errcode_name(in->error) : "NONE";

    out->message[0] = '\0';
    if (!dw_errcode_transient(in->error)) {
        give_up(out, DW_RETRY_STOP_PERMANENT, in->error);
        dw_snprintf(out->message, sizeof(out->message), "%s", msg);
        return;
    }

    int64_t wait = dw_retry_backoff_ms(p, in->attempts, in->rnd);
    if (in->error == DW_EC_RATE_LIMITED && in->retry_after_ms >= 0) {
        if (in->retry_after_ms > p->max_retry_after_ms) {
            give_up(out, DW_RETRY_STOP_RETRY_AFTER, DW_EC_RATE_LIMITED);
            dw_snprintf(out->message, sizeof(out->message),
                        "%s; Retry-After %llds exceeds the %dms cap", msg,
                        (long long)(in->retry_after_ms / 1000), p->max_retry_after_ms);
            return;
        }
        if (wait < in->retry_after_ms)
            wait = in->retry_after_ms;
    }
    if (in->attempts >= p->max_attempts) {
        give_up(out, DW_RETRY_STOP_ATTEMPTS, DW_EC_RETRIES_EXHAUSTED);
        dw_snprintf(out->message, sizeof(out->message), "%d attempt%s; last: %s %s", in->attempts,
                    plural(in->attempts), code, msg);
        return;
    }
    if (!in->budget_allows) {
        give_up(out, DW_RETRY_STOP_BUDGET, DW_EC_RETRIES_EXHAUSTED);
        dw_snprintf(out->message, sizeof(out->message),
                    "retry budget spent after %d attempt%s; last: %s %s", in->attempts,
                    plural(in->attempts), code, msg);
        return;
    }
    if (in->deadline_ms > 0 && in->now_ms + wait >= in->deadline_ms) {
        give_up(out, DW_RETRY_STOP_DEADLINE, DW_EC_RETRIES_EXHAUSTED);
        dw_snprintf(out->message, sizeof(out->message),
                    "deadline reached after %d attempt%s; last: %s %s", in->attempts,
                    plural(in->attempts), code, msg);
        return;
    }
    out->retry = true;
    out->wait_ms = wait;
    out->stop = DW_RETRY_STOP_NONE;
    out->error = in->error;
}

/* ---- the budget ---- */

#define MILLI 1000

struct dw_retry_budget {
    int64_t max_milli; /* 0: no budget */
    int64_t ratio_milli;
    _Atomic int64_t milli;
};

struct dw_retry_budget *dw_retry_budget_create(int max_tokens, double token_ratio)
{
    struct dw_retry_budget *b = dw_xcalloc(1, sizeof(*b));
    b->max_milli = max_tokens > 0 ? (int64_t)max_tokens * MILLI : 0;
    b->ratio_milli = token_ratio > 0 ? (int64_t)llround(token_ratio * MILLI) : 0;
    atomic_init(&b->milli, b->max_milli);
    return b;
}

void dw_retry_budget_destroy(struct dw_retry_budget *b)
{
    free(b);
}

/* Adds delta, clamped to [0, max]. */
static void budget_add(struct dw_retry_budget *b, int64_t delta)
{
    int64_t cur = atomic_load(&b->milli);
    int64_t next;
    do {
        next = cur + delta;
        if (next < 0)
            next = 0;
        if (next > b->max_milli)
            next = b->max_milli;
    } while (next != cur && !atomic_compare_exchange_weak(&b->milli, &cur, next));
}

void dw_retry_budget_on_failure(struct dw_retry_budget *b)
{
    if (b->max_milli)
        budget_add(b, -MILLI);
}

void dw_retry_budget_on_success(struct dw_retry_budget *b)
{
    if (b->max_milli)
        budget_add(b, b->ratio_milli);
}

bool dw_retry_budget_allows(struct dw_retry_budget *b)
{
    return !b->max_milli || atomic_load(&b->milli) > b->max_milli / 2;
}

double dw_retry_budget_tokens(struct dw_retry_budget *b)
{
    return (double)atomic_load(&b->milli) / MILLI;
}

/* ---- the random source ---- */

double dw_retry_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (double)((x * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}
