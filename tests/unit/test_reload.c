/* test_reload.c - gt_config_reload: the tenants and the log level are swapped
 * in, pointers to the old tenants stay valid, restart-only keys keep their
 * value, drain times load with defaults, and a broken file changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dispatcher_config.h"
#include "harness.h"
#include "reload.h"

static const char *base =
    "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9092\"},"
    " \"pools\": {\"gpu-a\": {\"endpoint\": \"http://127.0.0.1:8081\", \"api_key\": \"k\"}},"
    " \"models\": {\"small\": {\"pool\": \"gpu-a\", \"lane\": \"small\"}},"
    " \"worker\": {\"max_in_flight\": %d},"
    " \"log\": {\"level\": \"%s\"}%s}";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void test_drain_defaults(void)
{
    char text[2048], err[1024];
    snprintf(text, sizeof(text), base, 8, "info", "");
    gt_config_t *cfg = gt_config_parse(text, "/", err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    TH_EQ_INT(cfg->worker_drain_ms, 30000);
    TH_EQ_INT(cfg->dispatcher_drain_ms, 30000);
    gt_config_free(cfg);
    snprintf(text, sizeof(text), base, 8, "info", ", \"dispatcher\": {\"drain_ms\": -1}");
    CU_ASSERT_PTR_NULL(gt_config_parse(text, "/", err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "dispatcher.drain_ms"));
}

static void test_reload(void)
{
    char text[2048], err[1024];
    snprintf(text, sizeof(text), base, 8, "info",
             ", \"tenants\": {\"acme\": {\"budget\": {\"currency\": \"USD\","
             " \"monthly_micros\": 1000}}}");
    const char *path = th_tmpfile(".json", text);
    gt_config_t *cfg = gt_config_load(path, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    const gt_tenant_t *old = gt_config_tenant(cfg, "acme");
    CU_ASSERT_PTR_NOT_NULL_FATAL(old);
    TH_EQ_INT(old->budget.monthly_micros, 1000);

    /* Unchanged file: nothing to report. */
    TH_EQ_INT(gt_config_reload(cfg), 0);

    /* acme's budget changes, beta appears, the level and a restart-only key change. */
    snprintf(text, sizeof(text), base, 16, "debug",
             ", \"tenants\": {\"acme\": {\"budget\": {\"currency\": \"USD\","
             " \"monthly_micros\": 5}}, \"beta\": {}}");
    write_file(path, text);
    TH_EQ_INT(gt_config_reload(cfg),
              4); /* tenants.acme, tenants.beta, log.level, worker.max_in_flight */
    const gt_tenant_t *now = gt_config_tenant(cfg, "acme");
    CU_ASSERT_PTR_NOT_NULL_FATAL(now);
    TH_EQ_INT(now->budget.monthly_micros, 5);
    CU_ASSERT_PTR_NOT_NULL(gt_config_tenant(cfg, "beta"));
    TH_EQ_STR(cfg->log_level, "debug");
    TH_EQ_INT(cfg->worker_max_in_flight, 8);     /* needs a restart */
    TH_EQ_INT(old->budget.monthly_micros, 1000); /* still readable (ASan checks) */
    TH_EQ_STR(old->id, "acme");
    CU_ASSERT(gt_config_key_reloadable("tenants.acme"));
    CU_ASSERT(gt_config_key_reloadable("log.level"));
    CU_ASSERT(!gt_config_key_reloadable("tenantsx"));
    CU_ASSERT(!gt_config_key_reloadable("providers.openai"));

    /* The same file again: the applied sections are in force now; only the
     * restart-only key is still different. */
    TH_EQ_INT(gt_config_reload(cfg), 1);

    /* Broken: refused, nothing changes. */
    write_file(path, "{\"kafka\": ");
    TH_EQ_INT(gt_config_reload(cfg), -1);
    snprintf(text, sizeof(text), base, 8, "loud", "");
    write_file(path, text);
    TH_EQ_INT(gt_config_reload(cfg), -1);
    TH_EQ_STR(cfg->log_level, "debug");
    TH_EQ_INT(gt_config_tenant(cfg, "acme")->budget.monthly_micros, 5);

    /* Tenants removed. */
    snprintf(text, sizeof(text), base, 8, "info", "");
    write_file(path, text);
    TH_EQ_INT(gt_config_reload(cfg), 3); /* tenants.acme, tenants.beta, log.level */
    CU_ASSERT_PTR_NULL(gt_config_tenant(cfg, "acme"));
    TH_EQ_INT(cfg->n_tenants, 0);
    gt_config_free(cfg); /* frees the retired versions too (leak check) */
}

int main(void)
{
    gt_dispatcher_config_register();
    static const th_test_t tests[] = {{"drain_ms defaults and range", test_drain_defaults},
                                      {"reload swaps tenants and level", test_reload},
                                      {NULL, NULL}};
    return th_run("reload", tests);
}
