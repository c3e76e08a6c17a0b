/* test_config.c - configuration loading: defaults, ${ENV}, *_file secrets, key-path errors. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dispatcher_config.h"
#include "harness.h"
#include "worker_config.h"

static const char *good =
    "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9092\", \"properties\": {\"linger.ms\": "
    "\"2\"}},"
    " \"postgres\": {\"conninfo\": \"host=127.0.0.1 dbname=gantry\", \"password\": "
    "\"${GT_TEST_PW}\"},"
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

/* scheduling: the smallest queue limit set applies; topics.control defaults. */
static void test_scheduling(void)
{
    const char *keyfile = th_tmpfile(".key", "k\n");
    char text[8192], err[1024], base[4096];
    snprintf(base, sizeof(base), good, keyfile);
    base[strlen(base) - 1] = '\0'; /* drop the closing brace */
    snprintf(text, sizeof(text),
             "%s, \"scheduling\": {\"max_queue_ms\": 60000, \"cancel_poll_ms\": 100,"
             " \"lanes\": {\"small\": {\"max_queue_ms\": 5000}},"
             " \"tenants\": {\"acme\": {\"max_queue_ms\": 2000}}}}",
             base);
    setenv("GT_TEST_PW", "x", 1);
    gt_config_t *cfg = gt_config_parse(text, "/", err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "%s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    TH_EQ_STR(cfg->topics.control, "gantry.control");
    TH_EQ_INT(cfg->cancel_poll_ms, 100);
    TH_EQ_INT(gt_worker_config_max_queue_ms(cfg, "large", "other"), 60000);
    TH_EQ_INT(gt_worker_config_max_queue_ms(cfg, "small", "other"), 5000);
    TH_EQ_INT(gt_worker_config_max_queue_ms(cfg, "small", "acme"), 2000);
    TH_EQ_INT(gt_worker_config_max_queue_ms(cfg, NULL, NULL), 60000);
    gt_config_free(cfg);
    snprintf(text, sizeof(text),
             "%s, \"scheduling\": {\"lanes\": {\"nowhere\": {\"max_queue_ms\": 5}},"
             " \"cancel_poll_ms\": 1}}",
             base);
    CU_ASSERT_PTR_NULL(gt_config_parse(text, "/", err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "scheduling.lanes.nowhere"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "scheduling.cancel_poll_ms"));
    snprintf(text, sizeof(text), "%s}", base);
    cfg = gt_config_parse(text, "/", err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    TH_EQ_INT(gt_worker_config_max_queue_ms(cfg, "small", "acme"), 0);
    TH_EQ_INT(cfg->cancel_poll_ms, 250);
    gt_config_free(cfg);
}

static void test_every_problem_reported(void)
{
    char err[2048];
    unsetenv("GT_TEST_MISSING");
    gt_config_t *cfg = gt_config_parse(
        "{\"kafka\": {}, \"pools\": {\"p\": {\"endpoint\": \"ftp://x\", \"api_key\": "
        "\"${GT_TEST_MISSING}\"}},"
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

static void test_providers(void)
{
    const char *keyfile = th_tmpfile(".key", "sk-provider\n");
    char text[4096], err[2048];
    snprintf(
        text, sizeof(text),
        "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9092\"},"
        " \"pools\": {\"gpu\": {\"endpoint\": \"http://127.0.0.1:1\", \"api_key\": \"k\"}},"
        " \"providers\": {\"oa\": {\"runtime\": \"openai\", \"endpoint\": \"http://127.0.0.1:2/\","
        "    \"api_key_file\": \"%s\", \"max_in_flight\": 8, \"rpm\": 600, \"tpm\": 90000,"
        "    \"tenants\": {\"acme\": {\"max_in_flight\": 2}},"
        "    \"breaker\": {\"failures\": 3, \"recovery_ms\": 500},"
        "    \"retry\": {\"max_retries\": 1}, \"timeouts\": {\"inference_ms\": 2000}}},"
        " \"models\": {\"gpt\": {\"provider\": \"oa\", \"provider_model\": \"gpt-4o-mini\","
        "                        \"fallbacks\": [\"local\"]},"
        "              \"local\": {\"pool\": \"gpu\"}},"
        " \"worker\": {\"retry\": {\"base_ms\": 50}}}",
        keyfile);
    gt_config_t *cfg = gt_config_parse(text, "/", err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "%s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    const gt_provider_t *p = gt_config_provider(cfg, "oa");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    TH_EQ_STR(p->endpoint, "http://127.0.0.1:2");
    TH_EQ_STR(p->api_key, "sk-provider");
    TH_EQ_INT(p->limits.max_in_flight, 8);
    TH_EQ_INT(p->limits.rpm, 600);
    TH_EQ_INT(p->limits.tpm, 90000);
    TH_EQ_INT(p->breaker_failures, 3);
    TH_EQ_INT(p->breaker_recovery_ms, 500);
    TH_EQ_INT(p->retry.max_retries, 1);
    TH_EQ_INT(p->retry.base_ms, 50); /* from worker.retry */
    TH_EQ_INT(p->inference_timeout_ms, 2000);
    TH_EQ_INT(p->slot_timeout_ms, 30000);
    const gt_provider_limits_t *tl = gt_provider_tenant_limits(p, "acme");
    CU_ASSERT_PTR_NOT_NULL_FATAL(tl);
    TH_EQ_INT(tl->max_in_flight, 2);
    CU_ASSERT_PTR_NULL(gt_provider_tenant_limits(p, "other"));
    const gt_model_t *m = gt_config_model(cfg, "gpt");
    TH_EQ_STR(m->runtime, "openai");
    TH_EQ_STR(m->provider, "oa");
    TH_EQ_STR(m->provider_model, "gpt-4o-mini");
    TH_EQ_INT(m->n_fallbacks, 1);
    TH_EQ_STR(m->fallbacks[0], "local");
    TH_EQ_STR(gt_config_model(cfg, "local")->provider_model, "local");
    gt_config_free(cfg);

    /* Defaults: breaker 5 failures / 60 s, no limits. */
    cfg = gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"x\"}, \"providers\": {\"v\":"
                          " {\"runtime\": \"openai\", \"endpoint\": \"https://api.example\"}},"
                          " \"models\": {\"m\": {\"provider\": \"v\"}}}",
                          NULL, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    TH_EQ_INT(cfg->providers[0].breaker_failures, 5);
    TH_EQ_INT(cfg->providers[0].breaker_recovery_ms, 60000);
    TH_EQ_INT(cfg->providers[0].limits.max_in_flight, 0);
    TH_EQ_INT(cfg->providers[0].retry.max_retries, 3);
    TH_EQ_INT(cfg->providers[0].inference_timeout_ms, 300000);
    gt_config_free(cfg);
}

static void test_provider_problems(void)
{
    char err[4096];
    gt_config_t *cfg =
        gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"x\"},"
                        " \"providers\": {\"a\": {\"runtime\": \"grpc\", \"colour\": 1},"
                        "   \"o\": {\"runtime\": \"openai\", \"breaker\": {\"failures\": 0}},"
                        "   \"b\": {\"runtime\": \"bedrock_anthropic\"},"
                        "   \"g\": {\"runtime\": \"vertex_gemini\", \"project\": \"p\"}},"
                        " \"models\": {\"m1\": {\"provider\": \"zz\", \"runtime\": \"openai\"},"
                        "   \"m2\": {\"runtime\": \"openai\"},"
                        "   \"m3\": {\"provider\": \"o\", \"fallbacks\": [\"m4\", \"nope\"]},"
                        "   \"m4\": {\"provider\": \"o\", \"fallbacks\": [\"m5\"]},"
                        "   \"m5\": {\"provider\": \"o\", \"fallbacks\": [\"m3\"]},"
                        "   \"m6\": {\"provider\": \"o\", \"runtime\": \"hf_endpoint\"}}}",
                        NULL, err, sizeof(err));
    CU_ASSERT_PTR_NULL(cfg);
    const char *expected[] = {
        "providers.a.colour: unknown key",
        "providers.a: runtime \"grpc\" is not a provider runtime",
        "providers.o: endpoint is required for runtime openai",
        "providers.o.breaker.failures: must be an integer in [1, 1000000]",
        "providers.b: region is required for runtime bedrock_anthropic",
        "providers.b: access_key_id and secret_access_key",
        "providers.g: credentials_file is required for runtime vertex_gemini",
        "providers.g: project and location are required",
        "models.m1: provider \"zz\" is not declared in providers",
        "models.m2: provider is required for runtime openai",
        "models.m3.fallbacks: model \"nope\" is not declared in models",
        "leads back to", /* m3 -> m4 -> m5 -> m3 */
        "models.m6: runtime \"hf_endpoint\" differs from provider o's runtime \"openai\"",
        NULL};
    for (int i = 0; expected[i]; i++) {
        if (!strstr(err, expected[i]))
            fprintf(stderr, "  missing \"%s\" in:\n%s\n", expected[i], err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, expected[i]));
    }
    /* A model may not fall back to itself either. */
    cfg = gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"x\"}, \"pools\": {\"p\":"
                          " {\"endpoint\": \"http://h\", \"api_key\": \"k\"}},"
                          " \"models\": {\"m\": {\"pool\": \"p\", \"fallbacks\": [\"m\"]}}}",
                          NULL, err, sizeof(err));
    CU_ASSERT_PTR_NULL(cfg);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "models.m.fallbacks: fallback \"m\" leads back to \"m\""));
}

/* A lease TTL that a consumer session can outlast is refused, with where the session comes from. */
static void test_lease_against_session(void)
{
    char err[2048], text[1024];
    const char *base = "{\"kafka\": {\"bootstrap_servers\": \"h:1\"%s},"
                       " \"reaper\": {\"lease_ttl_ms\": %d}}";
    /* Defaults: 10 s lease, 10 s session. */
    gt_config_t *cfg =
        gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"h:1\"}}", NULL, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    TH_EQ_INT(cfg->lease_ttl_ms, GT_KAFKA_SESSION_TIMEOUT_MS);
    TH_EQ_INT(cfg->capacity_wait_ms, 600000);
    TH_EQ_INT(cfg->pools == NULL || cfg->n_pools == 0, 1);
    gt_config_free(cfg);

    snprintf(text, sizeof(text), base, "", 5000);
    CU_ASSERT_PTR_NULL(gt_config_parse(text, NULL, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "reaper.lease_ttl_ms: must be at least the Kafka consumer "
                                       "session timeout (session.timeout.ms 10000, the default)"));

    snprintf(text, sizeof(text), base,
             ", \"consumer_properties\": {\"session.timeout.ms\": \"45000\"}", 30000);
    CU_ASSERT_PTR_NULL(gt_config_parse(text, NULL, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "session.timeout.ms 45000 in kafka.consumer_properties"));

    snprintf(text, sizeof(text), base, ", \"properties\": {\"session.timeout.ms\": \"6000\"}",
             6000);
    cfg = gt_config_parse(text, NULL, err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "%s\n", err);
    CU_ASSERT_PTR_NOT_NULL(cfg);
    gt_config_free(cfg);
}

/* Tenants configured (the section exists, even empty) restrict who is served,
 * unless dispatcher.allow_unknown_tenants; a non-boolean switch is refused. */
static void test_unknown_tenants_switch(void)
{
    char err[2048];
    gt_config_t *cfg =
        gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"h:1\"}}", NULL, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    TH_EQ_INT(gt_config_tenants_configured(cfg), 0);
    TH_EQ_INT(cfg->allow_unknown_tenants, 0);
    gt_config_free(cfg);
    cfg = gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"h:1\"}, \"tenants\": {}}", NULL,
                          err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    TH_EQ_INT(gt_config_tenants_configured(cfg), 1);
    CU_ASSERT_PTR_NULL(gt_config_tenant(cfg, "anyone"));
    gt_config_free(cfg);
    cfg = gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"h:1\"}, \"tenants\": {\"a\": {}},"
                          " \"dispatcher\": {\"allow_unknown_tenants\": true}}",
                          NULL, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    TH_EQ_INT(gt_config_tenants_configured(cfg), 1);
    TH_EQ_INT(cfg->allow_unknown_tenants, 1);
    CU_ASSERT_PTR_NOT_NULL(gt_config_tenant(cfg, "a"));
    gt_config_free(cfg);
    CU_ASSERT_PTR_NULL(gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"h:1\"},"
                                       " \"dispatcher\": {\"allow_unknown_tenants\": 1}}",
                                       NULL, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "dispatcher.allow_unknown_tenants: must be true or false"));
}

/* A pool's breaker defaults to DESIGN.md's 5 failures and 60 s, and can be set. */
static void test_pool_breaker(void)
{
    char err[2048];
    gt_config_t *cfg =
        gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"h:1\"},"
                        " \"pools\": {\"a\": {\"endpoint\": \"http://h\", \"api_key\": \"k\"},"
                        "           \"b\": {\"endpoint\": \"http://h\", \"api_key\": \"k\","
                        "                   \"breaker\": {\"failures\": 2, \"recovery_ms\": 500}}},"
                        " \"worker\": {\"capacity_wait_ms\": 1234}}",
                        NULL, err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "%s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    const gt_pool_t *a = gt_config_pool(cfg, "a"), *b = gt_config_pool(cfg, "b");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    TH_EQ_INT(a->breaker_failures, 5);
    TH_EQ_INT(a->breaker_recovery_ms, 60000);
    TH_EQ_INT(b->breaker_failures, 2);
    TH_EQ_INT(b->breaker_recovery_ms, 500);
    TH_EQ_INT(cfg->capacity_wait_ms, 1234);
    gt_config_free(cfg);
}

int main(void)
{
    gt_dispatcher_config_register();
    gt_worker_config_register();
    static const th_test_t tests[] = {
        {"loads a good file", test_load_good},
        {"reports every problem", test_every_problem_reported},
        {"scheduling section", test_scheduling},
        {"invalid json", test_invalid_json},
        {"providers, limits, fallbacks", test_providers},
        {"provider problems and fallback cycles", test_provider_problems},
        {"lease TTL against session timeout", test_lease_against_session},
        {"tenants configured and dispatcher.allow_unknown_tenants", test_unknown_tenants_switch},
        {"pool breaker and capacity wait", test_pool_breaker},
        {NULL, NULL}};
    return th_run("config", tests);
}
