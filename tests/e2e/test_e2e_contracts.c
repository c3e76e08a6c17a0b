/* test_e2e_contracts.c - intake's contracts on real processes: a re-sent request_id with a
 * different body is dead-lettered once as duplicate_conflict (the first body wins), an exact
 * re-send (keys reordered) is dropped and counted; with tenants configured an unknown
 * tenant is answered rejected/unknown_tenant, neither stored nor billed, unless
 * dispatcher.allow_unknown_tenants. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "prom.h"

static th_cluster_t cl;
static char admin_d[64];

static const char first_body[] =
    "{\"schema\": \"gantry.request.v1\", \"request_id\": \"dup-1\", \"tenant_id\": \"t1\","
    " \"kind\": \"generate\", \"model\": \"small\", \"input\": \"first body\"}";
/* The same request, keys in another order and other spacing: identical. */
static const char same_body[] =
    "{\"input\":\"first body\",\"model\":\"small\",\"kind\":\"generate\",\"tenant_id\":\"t1\","
    "\"request_id\":\"dup-1\",\"schema\":\"gantry.request.v1\"}";
static const char other_body[] =
    "{\"schema\": \"gantry.request.v1\", \"request_id\": \"dup-1\", \"tenant_id\": \"t1\","
    " \"kind\": \"generate\", \"model\": \"small\", \"input\": \"another body\"}";
static const char stranger[] =
    "{\"schema\": \"gantry.request.v1\", \"request_id\": \"unk-1\", \"tenant_id\": \"stranger\","
    " \"kind\": \"generate\", \"model\": \"small\", \"input\": \"who am I\"}";
/* After the others on the same partition (same key): once it is answered, they were read. */
static const char last_body[] =
    "{\"schema\": \"gantry.request.v1\", \"request_id\": \"dup-1-after\", \"tenant_id\": \"t1\","
    " \"kind\": \"generate\", \"model\": \"small\", \"input\": \"after\"}";

static int answered(void *arg)
{
    return th_results_for(&cl, arg, NULL) >= 1;
}

static int intake_caught_up(void *arg)
{
    (void)arg;
    return th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.requests");
}

static int dlq_has(void *arg)
{
    return th_topic_count(cl.bootstrap, "gantry.dlq") >= *(long *)arg;
}

/* The parsed message on topic whose request_id is rid (the last one), or NULL. */
static json_t *find(const char *topic, const char *rid)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, topic), *found = NULL;
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        json_t *v = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *r = json_string_value(json_object_get(v, "request_id"));
        if (r && strcmp(r, rid) == 0) {
            json_decref(found);
            found = v;
        } else {
            json_decref(v);
        }
    }
    json_decref(all);
    return found;
}

static double metric(const char *name, const char *match)
{
    char url[128];
    prom_body_t b = {0};
    snprintf(url, sizeof(url), "http://%s/metrics", admin_d);
    TH_EQ_INT(prom_get(url, &b), 200);
    double v = b.data ? prom_sum(b.data, name, match) : 0;
    free(b.data);
    return v;
}

static void test_duplicates_and_unknown_tenant(void)
{
    th_cluster_opts_t o = {.workers = 1,
                           .latency = "5-20",
                           .extra_config = "{\"admin\": {\"port\": 0}, \"tenants\": {\"t1\": {}}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    CU_ASSERT_EQUAL_FATAL(
        th_proc_wait_line(&cl.dispatcher, "admin=", admin_d, sizeof(admin_d), 30000), 0);

    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", "dup-1", first_body) == 0);
    CU_ASSERT_FATAL(th_poll(answered, "dup-1", 60000));
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", "dup-1", other_body) == 0);
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", "dup-1", same_body) == 0);
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", "unk-1", stranger) == 0);
    /* Its copy (as a redelivery would be) finds the answer stored: no second one. */
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", "unk-1", stranger) == 0);
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", "dup-1", last_body) == 0);
    CU_ASSERT_FATAL(th_poll(answered, "dup-1-after", 60000));
    CU_ASSERT_FATAL(th_poll(answered, "unk-1", 60000));
    long one = 1;
    CU_ASSERT(th_poll(dlq_has, &one, 30000));
    CU_ASSERT(th_poll(intake_caught_up, NULL, 30000));

    /* dup-1: one result, one job with the first body, one DLQ entry for the other body. */
    const char *status = NULL;
    TH_EQ_INT(th_results_for(&cl, "dup-1", &status), 1);
    TH_EQ_STR(status, "succeeded");
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id = 'dup-1'"
                                       " AND request->>'input' = 'first body'"),
              1);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 1);
    json_t *dlq = find("gantry.dlq", "dup-1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(dlq);
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(dlq, "error"), "code")),
              "duplicate_conflict");
    json_decref(dlq);
    TH_EQ_INT((long)metric("gantry_requests_duplicate_total", "outcome=\"conflict\""), 1);
    TH_EQ_INT((long)metric("gantry_requests_duplicate_total", "outcome=\"identical\""), 2);

    /* unk-1: answered rejected/unknown_tenant once (its answer stored as a job with no
     * tasks), no usage, no DLQ entry. */
    TH_EQ_INT(th_results_for(&cl, "unk-1", &status), 1);
    TH_EQ_STR(status, "rejected");
    json_t *res = find("gantry.results", "unk-1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(res);
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(res, "error"), "code")),
              "unknown_tenant");
    json_decref(res);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id = 'unk-1'"
                                       " AND task_count = 0"),
              1);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id = 'unk-1'"), 0);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

static int usage_of_stranger(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id = 'unk-1'") >= 1;
}

static void test_unknown_tenant_allowed(void)
{
    th_cluster_opts_t o = {.workers = 1,
                           .latency = "5-20",
                           .extra_config = "{\"tenants\": {\"t1\": {}}, \"dispatcher\":"
                                           " {\"allow_unknown_tenants\": true}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", "unk-1", stranger) == 0);
    /* Its copy (as a redelivery would be) finds the answer stored: no second one. */
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.requests", "unk-1", stranger) == 0);
    CU_ASSERT_FATAL(th_poll(answered, "unk-1", 60000));
    const char *status = NULL;
    TH_EQ_INT(th_results_for(&cl, "unk-1", &status), 1);
    TH_EQ_STR(status, "succeeded");
    CU_ASSERT(th_poll(usage_of_stranger, NULL, 30000));
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id = 'unk-1'"), 1);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"duplicate_conflict once, identical counted, unknown tenant rejected",
         test_duplicates_and_unknown_tenant},
        {"dispatcher.allow_unknown_tenants serves an unknown tenant", test_unknown_tenant_allowed},
        {NULL, NULL},
    };
    int rc = th_run("e2e_contracts", tests);
    th_cluster_stop(&cl);
    return rc;
}
