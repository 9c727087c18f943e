/*
 * The DLQ replay tool (tools/dlq-replay, docs/operations.md section 7)
 * against the dev broker: of the records in the DLQ it re-sends only those
 * chosen (by code and eventId) that pass the worker's validation now, each
 * with its value unchanged byte for byte (a request written over several
 * lines stays one record) and keyed by its original key, or its eventId
 * when it had none; a chosen record that is still invalid is not sent. The
 * replayed records go to a topic of this run, so no worker of a later test
 * picks them up; the evidence is what arrives there, read back from the
 * broker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "itest.h"

#define DLQ_TOPIC "distribution-requests.dlq"

static void produce_dlq(rd_kafka_t *p, const char *key, const char *value, const char *code)
{
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p, RD_KAFKA_V_TOPIC(DLQ_TOPIC),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY | RD_KAFKA_MSG_F_BLOCK),
        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_VALUE((void *)value, strlen(value)),
        RD_KAFKA_V_HEADER("x-error-code", code, -1), RD_KAFKA_V_END);
    assert_int_equal(err, RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Runs the tool with args; returns its exit status; its stdout in out. */
static int replay(const char *args, char *out, size_t outlen)
{
    char cmd[2048];
    assert_non_null(getenv("DW_BUILD_DIR"));
    snprintf(cmd, sizeof(cmd), "'%s/tools/dlq-replay' -b '%s' %s 2>&1", getenv("DW_BUILD_DIR"),
             itest_env("BROKERS"), args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, outlen - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    printf("%s", out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void replays_only_chosen_valid_records(void **state)
{
    (void)state;
    char p[64], ids_path[512], to[128], out[8192];
    snprintf(p, sizeof(p), "replay-%s", itest_run_id());
    snprintf(to, sizeof(to), "replayed-%s", itest_run_id());

    char a[1024], c[256], d[256], e[256], a_key[96], b[256];
    /* a: valid, written over several lines, rejected by a (supposed) bug. */
    snprintf(a_key, sizeof(a_key), "%s-a", p);
    snprintf(a, sizeof(a),
             "{\n  \"eventId\": \"%s-a\",\n  \"title\": \"Grand opening\",\n"
             "  \"content\": \"line one\\nline two\",\n  \"channels\": [\n    \"KAKAO\",\n"
             "    \"NAVER\"\n  ]\n}\n",
             p);
    /* b: not JSON at all: has no eventId to be chosen by. */
    snprintf(b, sizeof(b), "{\"eventId\": \"%s-b\", \"title\": ", p);
    /* c: chosen, but still invalid (no title). */
    snprintf(c, sizeof(c), "{\"eventId\":\"%s-c\",\"channels\":[\"KAKAO\"]}", p);
    /* d: valid, no key: keyed by its eventId. */
    snprintf(d, sizeof(d), "{\"eventId\":\"%s-d\",\"title\":\"t\",\"channels\":[\"KAKAO\"]}", p);
    /* e: valid, but another code than the one asked for. */
    snprintf(e, sizeof(e), "{\"eventId\":\"%s-e\",\"title\":\"t\",\"channels\":[\"GINITV\"]}", p);

    rd_kafka_t *producer = itest_producer();
    produce_dlq(producer, a_key, a, "INVALID_FIELD");
    produce_dlq(producer, NULL, b, "INVALID_JSON");
    produce_dlq(producer, "k-c", c, "INVALID_FIELD");
    produce_dlq(producer, NULL, d, "INVALID_FIELD");
    produce_dlq(producer, "k-e", e, "INVALID_CHANNELS");
    itest_flush(producer);

    snprintf(ids_path, sizeof(ids_path), "%s/replay-ids-%s.txt", getenv("DW_ITEST_DIR"),
             itest_run_id());
    FILE *f = fopen(ids_path, "w");
    assert_non_null(f);
    fprintf(f, "%s-a\n  %s-b\n%s-c\n\n%s-d\n%s-e\n", p, p, p, p, p);
    fclose(f);

    /* A dry run sends nothing; unknown codes are refused. */
    char args[1024];
    snprintf(args, sizeof(args), "--to %s --code BOGUS", to);
    assert_int_equal(replay(args, out, sizeof(out)), 2);
    snprintf(args, sizeof(args), "--to %s --code INVALID_FIELD --ids '%s' --dry-run", to, ids_path);
    assert_int_equal(replay(args, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "would be sent"));
    snprintf(args, sizeof(args), "--to %s --code INVALID_FIELD --ids '%s'", to, ids_path);
    assert_int_equal(replay(args, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "skipped, still INVALID_FIELD"));
    assert_non_null(strstr(out, "2 sent, 1 still invalid, 0 failed"));

    /* What arrived: a and d, nothing else, values unchanged. */
    rd_kafka_t *reader = itest_reader(to);
    int got = 0, got_a = 0, got_d = 0;
    rd_kafka_message_t *m;
    while ((m = itest_read(reader, 3000))) {
        got++;
        char key[128] = "";
        snprintf(key, sizeof(key), "%.*s", (int)m->key_len, (const char *)m->key);
        char *from = itest_header(m, "x-replayed-from");
        printf("  arrived: key %s, %zu bytes, from %s\n", key, m->len, from ? from : "?");
        assert_non_null(from);
        assert_non_null(strstr(from, DLQ_TOPIC "/"));
        free(from);
        if (strcmp(key, a_key) == 0) {
            got_a++;
            assert_int_equal(m->len, strlen(a));
            assert_memory_equal(m->payload, a, m->len);
        } else {
            char d_key[96];
            snprintf(d_key, sizeof(d_key), "%s-d", p);
            assert_string_equal(key, d_key);
            got_d++;
            assert_int_equal(m->len, strlen(d));
            assert_memory_equal(m->payload, d, m->len);
        }
        rd_kafka_message_destroy(m);
    }
    assert_int_equal(got_a, 1);
    assert_int_equal(got_d, 1);
    assert_int_equal(got, 2);
    rd_kafka_destroy(reader);
    rd_kafka_destroy(producer);
    unlink(ids_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replays_only_chosen_valid_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
