/*
 * channel-sim: Fault injection per channel, set through /_sim/faults and read by every
 * call under sim->faults_lock.
 */
#include "sim.h"

/* ------------------------------------------------------------------------ */
/* Faults                                                                   */
/* ------------------------------------------------------------------------ */

void faults_default(struct channel_faults *f)
{
    memset(f, 0, sizeof(*f));
    f->error_status = 503;
    f->retry_after = 1;
    f->capacity_status = 503;
    f->capacity_retry_after = -1;
}

void faults_get(struct sim *sim, enum channel ch, struct channel_faults *out)
{
    pthread_mutex_lock(&sim->faults_lock);
    *out = sim->faults[ch];
    pthread_mutex_unlock(&sim->faults_lock);
}

json_object *faults_to_json(struct sim *sim)
{
    struct channel_faults copy[CH_COUNT];
    pthread_mutex_lock(&sim->faults_lock);
    memcpy(copy, sim->faults, sizeof(copy));
    pthread_mutex_unlock(&sim->faults_lock);

    json_object *root = json_object_new_object();
    for (int c = 0; c < CH_COUNT; c++) {
        struct channel_faults *f = &copy[c];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "errorRate", json_object_new_double(f->error_rate));
        json_object_object_add(o, "errorStatus", json_object_new_int(f->error_status));
        json_object_object_add(o, "rate429", json_object_new_double(f->rate429));
        json_object_object_add(o, "retryAfter", json_object_new_int(f->retry_after));
        json_object_object_add(o, "latencyMs", json_object_new_int(f->latency_ms));
        json_object_object_add(o, "latencyJitterMs", json_object_new_int(f->latency_jitter_ms));
        json_object_object_add(o, "hang", json_object_new_boolean(f->hang));
        json_object_object_add(o, "down", json_object_new_boolean(f->down));
        json_object_object_add(o, "badResponseRate", json_object_new_double(f->bad_response_rate));
        json_object_object_add(o, "capacity", json_object_new_int(f->capacity));
        json_object_object_add(o, "capacityStatus", json_object_new_int(f->capacity_status));
        json_object_object_add(o, "capacityRetryAfter",
                               json_object_new_int(f->capacity_retry_after));
        json_object_object_add(o, "latencyKnee", json_object_new_int(f->latency_knee));
        json_object_object_add(root, channel_names[c], o);
    }
    return root;
}

static bool json_number(json_object *v, double *out)
{
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return false;
    *out = json_object_get_double(v);
    return true;
}

/*
 * Applies a /_sim/faults body: the fields given replace those of the
 * channel (or of all channels for "*"); absent fields keep their value.
 * Validates everything before changing anything. Fills err on failure.
 */
bool faults_apply(struct sim *sim, json_object *body, char *err, size_t errlen)
{
    struct channel_faults patch;
    bool has_rate = false, has_status = false, has_429 = false, has_retry = false;
    bool has_lat = false, has_jit = false, has_hang = false, has_down = false, has_bad = false;
    bool has_cap = false, has_cap_status = false, has_cap_retry = false, has_knee = false;
    int target = -1; /* -1: all */
    double d;

    memset(&patch, 0, sizeof(patch));
    if (!json_object_is_type(body, json_type_object)) {
        snprintf(err, errlen, "the body must be a JSON object");
        return false;
    }
    json_object_object_foreach(body, name, v)
    {
        if (strcmp(name, "channel") == 0) {
            const char *s =
                json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
            if (s == NULL) {
                snprintf(err, errlen, "channel must be a channel name or \"*\"");
                return false;
            }
            if (strcmp(s, "*") == 0) {
                target = -1;
                continue;
            }
            target = -2;
            for (int c = 0; c < CH_COUNT; c++) {
                if (strcasecmp(s, channel_names[c]) == 0)
                    target = c;
            }
            if (target == -2) {
                snprintf(err, errlen, "unknown channel");
                return false;
            }
        } else if (strcmp(name, "errorRate") == 0 || strcmp(name, "rate429") == 0 ||
                   strcmp(name, "badResponseRate") == 0) {
            if (!json_number(v, &d) || d < 0.0 || d > 1.0) {
                snprintf(err, errlen, "%s must be a number from 0 to 1", name);
                return false;
            }
            if (name[0] == 'e') {
                patch.error_rate = d;
                has_rate = true;
            } else if (name[0] == 'r') {
                patch.rate429 = d;
                has_429 = true;
            } else {
                patch.bad_response_rate = d;
                has_bad = true;
            }
        } else if (strcmp(name, "errorStatus") == 0) {
            if (!json_number(v, &d) || d < 100 || d > 599 || d != (int)d) {
                snprintf(err, errlen, "errorStatus must be an HTTP status, 100 to 599");
                return false;
            }
            patch.error_status = (int)d;
            has_status = true;
        } else if (strcmp(name, "capacityStatus") == 0) {
            if (!json_number(v, &d) || d < 400 || d > 599 || d != (int)d) {
                snprintf(err, errlen, "capacityStatus must be an HTTP status, 400 to 599");
                return false;
            }
            patch.capacity_status = (int)d;
            has_cap_status = true;
        } else if (strcmp(name, "capacityRetryAfter") == 0) {
            if (!json_number(v, &d) || d < -1 || d > 86400 || d != (int)d) {
                snprintf(err, errlen,
                         "capacityRetryAfter must be whole seconds, 0 to 86400, or -1 for none");
                return false;
            }
            patch.capacity_retry_after = (int)d;
            has_cap_retry = true;
        } else if (strcmp(name, "capacity") == 0 || strcmp(name, "latencyKnee") == 0) {
            if (!json_number(v, &d) || d < 0 || d > SIM_MAX_CAPACITY || d != (int)d) {
                snprintf(err, errlen, "%s must be a whole number of calls, 0 to %d", name,
                         SIM_MAX_CAPACITY);
                return false;
            }
            if (name[0] == 'c') {
                patch.capacity = (int)d;
                has_cap = true;
            } else {
                patch.latency_knee = (int)d;
                has_knee = true;
            }
        } else if (strcmp(name, "retryAfter") == 0) {
            if (!json_number(v, &d) || d < 0 || d > 86400 || d != (int)d) {
                snprintf(err, errlen, "retryAfter must be whole seconds, 0 to 86400");
                return false;
            }
            patch.retry_after = (int)d;
            has_retry = true;
        } else if (strcmp(name, "latencyMs") == 0 || strcmp(name, "latencyJitterMs") == 0) {
            if (!json_number(v, &d) || d < 0 || d > SIM_MAX_LATENCY_MS || d != (int)d) {
                snprintf(err, errlen, "%s must be whole milliseconds, 0 to %d", name,
                         SIM_MAX_LATENCY_MS);
                return false;
            }
            if (strcmp(name, "latencyMs") == 0) {
                patch.latency_ms = (int)d;
                has_lat = true;
            } else {
                patch.latency_jitter_ms = (int)d;
                has_jit = true;
            }
        } else if (strcmp(name, "hang") == 0 || strcmp(name, "down") == 0) {
            if (!json_object_is_type(v, json_type_boolean)) {
                snprintf(err, errlen, "%s must be true or false", name);
                return false;
            }
            if (name[0] == 'h') {
                patch.hang = json_object_get_boolean(v);
                has_hang = true;
            } else {
                patch.down = json_object_get_boolean(v);
                has_down = true;
            }
        } else {
            char esc[80];
            json_escape_into(esc, sizeof(esc), name, strlen(name), 64);
            snprintf(err, errlen, "unknown field: %s", esc);
            return false;
        }
    }

    pthread_mutex_lock(&sim->faults_lock);
    for (int c = 0; c < CH_COUNT; c++) {
        if (target >= 0 && c != target)
            continue;
        struct channel_faults *f = &sim->faults[c];
        if (has_rate)
            f->error_rate = patch.error_rate;
        if (has_status)
            f->error_status = patch.error_status;
        if (has_429)
            f->rate429 = patch.rate429;
        if (has_retry)
            f->retry_after = patch.retry_after;
        if (has_lat)
            f->latency_ms = patch.latency_ms;
        if (has_jit)
            f->latency_jitter_ms = patch.latency_jitter_ms;
        if (has_hang)
            f->hang = patch.hang;
        if (has_down)
            f->down = patch.down;
        if (has_bad)
            f->bad_response_rate = patch.bad_response_rate;
        if (has_cap)
            f->capacity = patch.capacity;
        if (has_cap_status)
            f->capacity_status = patch.capacity_status;
        if (has_cap_retry)
            f->capacity_retry_after = patch.capacity_retry_after;
        if (has_knee)
            f->latency_knee = patch.latency_knee;
    }
    pthread_mutex_unlock(&sim->faults_lock);
    return true;
}

void faults_reset(struct sim *sim)
{
    pthread_mutex_lock(&sim->faults_lock);
    for (int c = 0; c < CH_COUNT; c++)
        faults_default(&sim->faults[c]);
    pthread_mutex_unlock(&sim->faults_lock);
}
