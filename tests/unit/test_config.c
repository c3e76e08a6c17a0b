/* test_config.c - configuration loading: defaults, ${ENV}, *_file secrets, key-path errors. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "harness.h"

static const char *good =
    "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9092\", \"properties\": {\"linger.ms\": \"2\"}},"
    " \"postgres\": {\"conninfo\": \"host=127.0.0.1 dbname=gantry\", \"password\": \"${GT_TEST_PW}\"},"
    " \"pools\": {\"gpu-a\": {\"endpoint\": \"http://127.0.0.1:8081/\", \"api_key_file\": \"%s\"}},"
    " \"models\": {\"small-8b\": {\"pool\": \"gpu-a\", \"lane\": \"small\","
    "                  \"requirements\": {\"tflops\": 10, \"vram_mb\": 16000}},"
    "              \"large-70b\": {\"pool\": \"gpu-a\", \"lane\": \"large\"}},"
    " \"routing\": {\"rules\": [{\"hint\": \"simple\", \"model\": \"small-8b\"}],"
    "             \"default\": \"large-70b\"}}";

static void test_load_good(void)
{
    const char *keyfile = th_tmpfile(".key", "s3cret-key\n");
    char text[4096], err[1024];
    snprintf(text, sizeof(text), good, keyfile);
    setenv("GT_TEST_PW", "it's", 1);
    gt_config_t *cfg = gt_config_parse(text, "/", err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "%s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    TH_EQ_STR(cfg->bootstrap_servers, "127.0.0.1:9092");
    TH_EQ_STR(cfg->pools[0].api_key, "s3cret-key");
    TH_EQ_STR(cfg->pools[0].endpoint, "http://127.0.0.1:8081");
    TH_EQ_STR(cfg->pg_conninfo, "host=127.0.0.1 dbname=gantry password='it\\'s'");
    TH_EQ_INT(cfg->n_models, 2);
    TH_EQ_INT(cfg->n_lanes, 2);
    TH_EQ_INT(cfg->n_worker_lanes, 2);
    TH_EQ_INT(cfg->retry.max_retries, 3);
    TH_EQ_INT(cfg->retry.base_ms, 100);
    TH_EQ_INT(cfg->allocate_timeout_ms, 30000);
    TH_EQ_INT(cfg->inference_timeout_ms, 300000);
    TH_EQ_STR(cfg->topics.requests, "gantry.requests");
    char topic[128];
    TH_EQ_STR(gt_config_lane_topic(cfg, "small", topic, sizeof(topic)), "gantry.tasks.small");
    const gt_model_t *m = gt_config_model(cfg, "small-8b");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    TH_EQ_INT(m->vram_mb, 16000);
    CU_ASSERT_DOUBLE_EQUAL(m->tflops, 10.0, 1e-9);
    CU_ASSERT_PTR_NULL(gt_config_model(cfg, "nope"));
    TH_EQ_STR(cfg->default_model, "large-70b");
    gt_config_free(cfg);
}

static void test_every_problem_reported(void)
{
    char err[2048];
    unsetenv("GT_TEST_MISSING");
    gt_config_t *cfg = gt_config_parse(
        "{\"kafka\": {}, \"pools\": {\"p\": {\"endpoint\": \"ftp://x\", \"api_key\": \"${GT_TEST_MISSING}\"}},"
        " \"models\": {\"m\": {\"pool\": \"q\", \"runtime\": \"hostedai\", \"colour\": 1}},"
        " \"worker\": {\"max_in_flight\": 0}, \"routing\": {\"rules\": [{\"model\": \"zz\"}]}}",
        NULL, err, sizeof(err));
    CU_ASSERT_PTR_NULL(cfg);
    const char *expected[] = {"kafka.bootstrap_servers: is required",
                              "pools.p.api_key: environment variable GT_TEST_MISSING is not set",
                              "pools.p: endpoint must be an http:// or https:// URL",
                              "models.m.colour: unknown key",
                              "models.m: pool \"q\" is not declared in pools",
                              "worker.max_in_flight: must be an integer in [1, 100000]",
                              "routing.rules[0]: model \"zz\" is not declared in models",
                              NULL};
    for (int i = 0; expected[i]; i++) {
        if (!strstr(err, expected[i]))
            fprintf(stderr, "  missing \"%s\" in:\n%s\n", expected[i], err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, expected[i]));
    }
}

static void test_invalid_json(void)
{
    char err[256];
    CU_ASSERT_PTR_NULL(gt_config_parse("{\"kafka\": ", NULL, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "invalid JSON at line 1"));
    CU_ASSERT_PTR_NULL(gt_config_load("/nonexistent/gantry.json", err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot open"));
}

int main(void)
{
    static const th_test_t tests[] = {{"loads a good file", test_load_good},
                                      {"reports every problem", test_every_problem_reported},
                                      {"invalid json", test_invalid_json},
                                      {NULL, NULL}};
    return th_run("config", tests);
}
