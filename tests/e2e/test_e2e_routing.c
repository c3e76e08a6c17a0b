/* test_e2e_routing.c - a logical model with three deployments through the
 * whole pipeline (real Kafka, PostgreSQL, mock HostedAI): weighted 1:2:1
 * splits 400 requests within 5 %, each result names the logical model and
 * the deployment that served, and each usage row the deployment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define REQUESTS 400

static th_cluster_t cl;

static const char extra[] =
    "{\"models\": {"
    "  \"multi-a\": {\"pool\": \"pool-a\", \"lane\": \"small\"},"
    "  \"multi-b\": {\"pool\": \"pool-a\", \"lane\": \"small\"},"
    "  \"multi-c\": {\"pool\": \"pool-a\", \"lane\": \"small\"},"
    "  \"multi\": {\"strategy\": \"weighted\", \"deployments\": ["
    "    {\"model\": \"multi-a\", \"weight\": 1}, {\"model\": \"multi-b\", \"weight\": 2},"
    "    {\"model\": \"multi-c\", \"weight\": 1}]}}}";

static int results_in(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= REQUESTS;
}

static int usage_in(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM usage") >= REQUESTS;
}

static void test_weighted_pipeline(void)
{
    th_cluster_opts_t o = {.workers = 1, .worker_in_flight = 64, .extra_config = extra};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    size_t cap = REQUESTS * 200, off = 0;
    char *text = malloc(cap);
    for (int i = 0; i < REQUESTS; i++)
        off += (size_t)snprintf(text + off, cap - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"rt-%04d\","
                                "\"tenant_id\":\"t1\",\"kind\":\"generate\",\"model\":\"multi\","
                                "\"input\":\"route %d\"}\n",
                                i, i);
    CU_ASSERT_FATAL(th_cluster_submit(&cl, th_tmpfile(".jsonl", text)) == 0);
    free(text);
    CU_ASSERT_FATAL(th_poll(results_in, NULL, 240000));
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results");
    long by[3] = {0, 0, 0}, logical = 0;
    size_t i;
    json_t *m;
    json_array_foreach(all, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *dep = json_string_value(json_object_get(r, "deployment"));
        logical += json_string_value(json_object_get(r, "model")) &&
                   strcmp(json_string_value(json_object_get(r, "model")), "multi") == 0;
        if (dep && strncmp(dep, "multi-", 6) == 0 && dep[6] >= 'a' && dep[6] <= 'c')
            by[dep[6] - 'a']++;
        json_decref(r);
    }
    json_decref(all);
    fprintf(stderr, "  weighted over the pipeline: %ld / %ld / %ld\n", by[0], by[1], by[2]);
    TH_EQ_INT(logical, REQUESTS);
    CU_ASSERT(by[0] >= 95 && by[0] <= 105);
    CU_ASSERT(by[1] >= 190 && by[1] <= 210);
    CU_ASSERT(by[2] >= 95 && by[2] <= 105);
    CU_ASSERT_FATAL(th_poll(usage_in, NULL, 60000));
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE model LIKE 'multi-_'"),
              REQUESTS);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"weighted 1:2:1 through the pipeline", test_weighted_pipeline},
        {NULL, NULL},
    };
    return th_run("e2e_routing", tests);
}
