/* test_provider_health.c - the dispatcher routes around a provider whose breaker
 * a worker reported open, to the model's first healthy fallback. */
#include <string.h>

#include "dispatcher.h"
#include "dispatcher_config.h"
#include "harness.h"

static void test_route_around_open_breaker(void)
{
    char err[1024];
    gt_config_t *cfg = gt_config_parse(
        "{\"kafka\": {\"bootstrap_servers\": \"x\"},"
        " \"pools\": {\"p\": {\"endpoint\": \"http://h\", \"api_key\": \"k\"}},"
        " \"providers\": {\"a\": {\"runtime\": \"openai\", \"endpoint\": \"http://a\"},"
        "                 \"b\": {\"runtime\": \"openai\", \"endpoint\": \"http://b\"}},"
        " \"models\": {\"ma\": {\"provider\": \"a\", \"fallbacks\": [\"mb\", \"local\"]},"
        "              \"mb\": {\"provider\": \"b\"}, \"local\": {\"pool\": \"p\"}}}",
        NULL, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    const gt_model_t *ma = gt_config_model(cfg, "ma");
    gt_provider_health_t *h = gt_provider_health_new();
    CU_ASSERT_PTR_EQUAL(gt_provider_health_route(h, cfg, ma), ma);
    CU_ASSERT_PTR_EQUAL(gt_provider_health_route(NULL, cfg, ma), ma);

    json_t *da = json_pack("{s:s, s:i}", "provider", "a", "recovery_ms", 60000);
    json_t *db = json_pack("{s:s, s:i}", "provider", "b", "recovery_ms", 60000);
    gt_provider_health_event(h, "breaker.opened", da);
    CU_ASSERT(gt_provider_health_down(h, "a"));
    TH_EQ_STR(gt_provider_health_route(h, cfg, ma)->name, "mb");
    gt_provider_health_event(h, "breaker.opened", db);
    TH_EQ_STR(gt_provider_health_route(h, cfg, ma)->name, "local");
    gt_provider_health_event(h, "breaker.half_open", da);
    TH_EQ_STR(gt_provider_health_route(h, cfg, ma)->name, "ma");
    gt_provider_health_event(h, "breaker.closed", db);
    CU_ASSERT(!gt_provider_health_down(h, "b"));

    /* Open with no recovery time left: healthy again (a trial needs traffic). */
    json_t *d0 = json_pack("{s:s, s:i}", "provider", "a", "recovery_ms", 0);
    gt_provider_health_event(h, "breaker.opened", d0);
    CU_ASSERT(!gt_provider_health_down(h, "a"));
    gt_provider_health_event(h, "breaker.opened", NULL); /* malformed: ignored */
    json_decref(da);
    json_decref(db);
    json_decref(d0);
    gt_provider_health_free(h);
    gt_config_free(cfg);
}

int main(void)
{
    gt_dispatcher_config_register();
    static const th_test_t tests[] = {
        {"routes around an open breaker", test_route_around_open_breaker},
        {NULL, NULL},
    };
    return th_run("provider_health", tests);
}
