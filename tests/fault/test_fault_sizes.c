/* test_fault_sizes.c - requests of 800 KB and 2 MB (produced with a raised
 * client limit: the mock broker takes any size, as a topic with a raised
 * max.message.bytes would) against the default 1,000,000-byte message limit,
 * to a model with max_input_chars and to one without: each answered once
 * `rejected` / `too_large`, its DLQ entry under 1,000,000 bytes with the
 * original's size and SHA-256, nothing jams, and a dispatcher restart changes
 * nothing. A 20 MB request is refused to its producer, as Kafka's default
 * limits refuse it: librdkafka 2.0.2's mock broker stores one but serves no
 * consumer the partition holding it (kcat included), so it cannot be offered. */
#include <openssl/sha.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#define NORMAL 200
#define LIMIT 1000000

static th_cluster_t cl;

static const struct {
    const char *id, *model;
    size_t chars;
} big[] = {
    {"big-800k-small", "small", 800 * 1000},
    {"big-2m-small", "small", 2 * 1000 * 1000},
    {"big-2m-large", "large", 2 * 1000 * 1000},
};
#define N_BIG (sizeof(big) / sizeof(big[0]))
static char *bodies[N_BIG];

static char *make_body(const char *id, const char *model, size_t chars)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "{\"schema\":\"gantry.request.v1\",\"request_id\":\"%s\",\"tenant_id\":"
                     "\"tenant-0\",\"kind\":\"generate\",\"model\":\"%s\",\"input\":\"",
                     id, model);
    char *b = malloc((size_t)n + chars + 3);
    memcpy(b, head, (size_t)n);
    for (size_t i = 0; i < chars; i++)
        b[n + i] = "abcdefgh "[i % 9];
    memcpy(b + n + chars, "\"}", 3);
    return b;
}

/* Any key naming a size / a SHA-256 anywhere in the entry: the names are the
 * DLQ fix's to choose (original_size / original_sha256 expected). */
static int find_key(json_t *j, const char *part, json_t **out)
{
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_object(j)) {
        json_object_foreach (j, k, v) {
            if (strstr(k, part) && !json_is_object(v)) {
                *out = v;
                return 1;
            }
            if (find_key(v, part, out))
                return 1;
        }
    } else if (json_is_array(j)) {
        json_array_foreach (j, i, v)
            if (find_key(v, part, out))
                return 1;
    }
    return 0;
}

static long results_now(void)
{
    return th_topic_count(cl.bootstrap, "gantry.results");
}

static void check_big(json_t *by, json_t *dlq)
{
    for (size_t b = 0; b < N_BIG; b++) {
        json_t *list = json_object_get(by, big[b].id);
        TH_EQ_INT(json_array_size(list), 1);
        json_t *r = json_array_get(list, 0);
        const char *code = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
        fprintf(stderr, "  %s: status %s, code %s\n", big[b].id,
                json_string_value(json_object_get(r, "status")), code ? code : "(none)");
        TH_EQ_STR(json_string_value(json_object_get(r, "status")), "rejected");
        TH_EQ_STR(code, "too_large");

        size_t len = strlen(bodies[b]), found = 0, i;
        unsigned char md[SHA256_DIGEST_LENGTH];
        char hex[65];
        SHA256((const unsigned char *)bodies[b], len, md);
        for (int k = 0; k < SHA256_DIGEST_LENGTH; k++)
            snprintf(hex + 2 * k, 3, "%02x", md[k]);
        json_t *d;
        json_array_foreach (dlq, i, d) {
            json_t *e = json_object_get(d, "entry");
            const char *rid = json_string_value(json_object_get(e, "request_id"));
            if (!rid || strcmp(rid, big[b].id) != 0)
                continue;
            found++;
            long bytes = (long)json_integer_value(json_object_get(d, "bytes"));
            json_t *size = NULL, *sha = NULL;
            fprintf(stderr, "  %s: DLQ entry of %ld bytes, code %s\n", big[b].id, bytes,
                    json_string_value(json_object_get(json_object_get(e, "error"), "code")));
            CU_ASSERT(bytes < LIMIT);
            TH_EQ_STR(json_string_value(json_object_get(json_object_get(e, "error"), "code")),
                      "too_large");
            CU_ASSERT(find_key(e, "size", &size));
            CU_ASSERT(find_key(e, "sha256", &sha));
            if (size)
                TH_EQ_INT(json_integer_value(size), len);
            if (sha)
                TH_EQ_STR(json_string_value(sha), hex);
        }
        TH_EQ_INT(found, 1);
    }
}

static void test_sizes(void)
{
    char path[512];
    th_cluster_opts_t o = {.latency = "5-20",
                           .workers = 2,
                           .worker_in_flight = 64,
                           .extra_config =
                               "{\"models\": {\"small\": {\"max_input_chars\": 100000}}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    json_t *ids = th_fault_requests(&cl, "requests.jsonl", NORMAL, 47, path, sizeof(path));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    /* 20 MB under Kafka's default limit: the producer is told, nothing is stored. */
    char *huge = make_body("big-20m-large", "large", 20 * 1000 * 1000);
    CU_ASSERT(
        th_fault_produce(&cl, "gantry.requests", "big-20m-large", huge, strlen(huge), LIMIT) != 0);
    free(huge);
    for (size_t b = 0; b < N_BIG; b++) {
        bodies[b] = make_body(big[b].id, big[b].model, big[b].chars);
        /* Over the test client's default 1,000,000 bytes too: produced with a
         * raised limit, which the mock broker accepts. */
        TH_EQ_INT(th_fault_produce(&cl, "gantry.requests", big[b].id, bodies[b], strlen(bodies[b]),
                                   100 * 1000 * 1000),
                  0);
        json_array_append_new(ids, json_string(big[b].id));
    }
    /* More normal requests behind the large ones, on the same partitions. */
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s --count %d --seed 53 --prefix after > %s/after.jsonl",
             th_bin("tools/gantry-loadgen"), NORMAL, cl.logdir);
    CU_ASSERT_FATAL(system(cmd) == 0);
    snprintf(path, sizeof(path), "%s/after.jsonl", cl.logdir);
    json_t *after = th_fault_ids_of(path);
    json_array_extend(ids, after);
    json_decref(after);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);

    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 1, .timeout_ms = 60000};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    json_t *by = th_fault_results(&cl), *dlq = th_fault_dlq(&cl);
    check_big(by, dlq);
    long results = results_now(), dlqs = (long)json_array_size(dlq);
    json_decref(by);
    json_decref(dlq);

    /* A restart of the dispatcher changes nothing: no second result, no
     * second DLQ entry, and it serves a new request. */
    TH_EQ_INT(th_proc_stop(&cl.dispatcher, SIGTERM, 30000), 0);
    CU_ASSERT_EQUAL_FATAL(th_cluster_start_dispatcher(&cl, &cl.dispatcher, "dispatcher-e2e"), 0);
    const char *one = "{\"schema\":\"gantry.request.v1\",\"request_id\":\"after-restart\","
                      "\"tenant_id\":\"tenant-0\",\"kind\":\"generate\",\"model\":\"small\","
                      "\"input\":\"hello\"}";
    CU_ASSERT_EQUAL_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", "after-restart", one),
                          0);
    json_array_append_new(ids, json_string("after-restart"));
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    TH_EQ_INT(results_now(), results + 1);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), dlqs);
    for (size_t b = 0; b < N_BIG; b++)
        free(bodies[b]);
    json_decref(ids);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {{"800 KB and 2 MB requests; 20 MB refused", test_sizes},
                                      {NULL, NULL}};
    return th_run("fault sizes", tests);
}
