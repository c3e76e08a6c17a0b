/* test_e2e_sizes.c - sizes handled before anything is stored, on real processes: a 2 MB
 * request (its task could never be produced under the 1,000,000-byte limit) is answered
 * once rejected/too_large, with a DLQ entry that fits and carries the original's size,
 * SHA-256 and a prefix; no job is stored, nothing jams (the next request runs), and a
 * result goes to gantry.results and to the request's reply_topic. */
#include <librdkafka/rdkafka.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "cluster.h"
#include "message.h"

#define BIG "size-e2e-big"
#define SMALL "size-e2e-small"
#define REPLY "e2e.replies"
#define BIG_INPUT 2000000

static th_cluster_t cl;

/* The test's own producer: it may send what the dispatcher could not. */
static int produce_big(const char *value, size_t len)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", cl.bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "message.max.bytes", "4000000", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk)
        return -1;
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("gantry.requests"), RD_KAFKA_V_KEY(BIG, strlen(BIG)),
                          RD_KAFKA_V_VALUE((void *)value, len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    int left = rd_kafka_flush(rk, 20000) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : 1;
    rd_kafka_destroy(rk);
    return e == RD_KAFKA_RESP_ERR_NO_ERROR && !left ? 0 : -1;
}

static int answered(void *arg)
{
    return th_results_for(&cl, arg, NULL) >= 1;
}

static int intake_caught_up(void *arg)
{
    (void)arg;
    return th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.requests");
}

static int reply_arrived(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, REPLY) >= 1;
}

/* The message on topic whose value names request_id rid (parsed), or NULL. */
static json_t *find(const char *topic, const char *rid, size_t *len)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, topic), *found = NULL;
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        json_t *v = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        if (v && json_is_string(json_object_get(v, "request_id")) &&
            strcmp(json_string_value(json_object_get(v, "request_id")), rid) == 0) {
            json_decref(found);
            found = v;
            if (len)
                *len = json_string_length(json_object_get(m, "value"));
        } else {
            json_decref(v);
        }
    }
    json_decref(all);
    return found;
}

static void test_big_request_rejected_once(void)
{
    th_cluster_opts_t o = {.workers = 1, .latency = "5-20"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);

    const char *head = "{\"schema\": \"gantry.request.v1\", \"request_id\": \"" BIG "\","
                       " \"tenant_id\": \"t1\", \"kind\": \"generate\", \"model\": \"small\","
                       " \"input\": \"";
    size_t hl = strlen(head), len = hl + BIG_INPUT + 2;
    char *req = malloc(len + 1);
    memcpy(req, head, hl);
    memset(req + hl, 'a', BIG_INPUT);
    memcpy(req + hl + BIG_INPUT, "\"}", 3);
    CU_ASSERT_FATAL(produce_big(req, len) == 0);

    /* A small one after it, with a reply topic: it runs, the partition is not jammed. */
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", SMALL,
                                     "{\"schema\": \"gantry.request.v1\", \"request_id\": \"" SMALL
                                     "\", \"tenant_id\": \"t1\", \"kind\": \"generate\","
                                     " \"model\": \"small\", \"input\": \"hi\","
                                     " \"reply_topic\": \"" REPLY "\"}") == 0);
    CU_ASSERT_FATAL(th_poll(answered, BIG, 60000));
    CU_ASSERT_FATAL(th_poll(answered, SMALL, 60000));
    CU_ASSERT(th_poll(intake_caught_up, NULL, 30000));

    const char *status = NULL;
    TH_EQ_INT(th_results_for(&cl, BIG, &status), 1);
    TH_EQ_STR(status, "rejected");
    json_t *res = find("gantry.results", BIG, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(res);
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(res, "error"), "code")),
              "too_large");
    json_decref(res);
    /* Its answer is stored (a job with no tasks), its body is not. */
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id = '" BIG "'"
                                       " AND task_count = 0 AND request = '{}'::jsonb"),
              1);

    /* Its DLQ entry fits and describes the whole. */
    size_t dlen = 0;
    json_t *dlq = find("gantry.dlq", BIG, &dlen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dlq);
    fprintf(stderr, "  request %zu bytes, DLQ entry %zu bytes\n", len, dlen);
    CU_ASSERT(dlen > 0 && dlen < 1000000);
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(dlq, "error"), "code")),
              "too_large");
    CU_ASSERT(json_is_true(json_object_get(dlq, "original_truncated")));
    TH_EQ_INT((long)json_integer_value(json_object_get(dlq, "original_size")), (long)len);
    unsigned char md[32];
    unsigned int md_len = 0;
    char hex[65];
    CU_ASSERT_FATAL(EVP_Digest(req, len, md, &md_len, EVP_sha256(), NULL) == 1);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    TH_EQ_STR(json_string_value(json_object_get(dlq, "original_sha256")), hex);
    size_t plen = 0;
    unsigned char *prefix =
        gt_base64_decode(json_string_value(json_object_get(dlq, "original")), &plen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(prefix);
    CU_ASSERT(plen > 1000 && plen < len);
    CU_ASSERT(memcmp(prefix, req, plen) == 0);
    free(prefix);
    json_decref(dlq);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 1);

    /* The small one: its result on gantry.results and on its reply topic. */
    TH_EQ_INT(th_results_for(&cl, SMALL, &status), 1);
    TH_EQ_STR(status, "succeeded");
    CU_ASSERT(th_poll(reply_arrived, NULL, 30000));
    json_t *reply = find(REPLY, SMALL, NULL);
    CU_ASSERT_PTR_NOT_NULL(reply);
    TH_EQ_STR(json_string_value(json_object_get(reply, "status")), "succeeded");
    json_decref(reply);
    TH_EQ_INT(th_topic_count(cl.bootstrap, REPLY), 1);
    free(req);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"a 2 MB request is answered once too_large, its DLQ entry fits",
         test_big_request_rejected_once},
        {NULL, NULL},
    };
    int rc = th_run("e2e_sizes", tests);
    th_cluster_stop(&cl);
    return rc;
}
