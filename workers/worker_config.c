/* worker_config.c - the worker's sections of gantry.json: each provider's
 * retry and timeouts (providers.<name>.retry, .timeouts), defaulting to worker's. */
#include <stdio.h>

#include "config_section.h"
#include "worker_config.h"

/* providers.<name>.retry and .timeouts, defaulting to worker.retry/timeouts. */
static void load_provider_policies(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const retry_keys[] = {"max_retries", "base_ms", "max_ms", "jitter", NULL};
    static const char *const tkeys[] = {"inference_ms", "slot_ms", NULL};
    json_t *provs = json_object_get(cfg->root, "providers");
    for (size_t i = 0; i < cfg->n_providers; i++) {
        gt_provider_t *p = &cfg->providers[i];
        json_t *pj = json_object_get(provs, p->name);
        char ppath[512], path[600];
        snprintf(ppath, sizeof(ppath), "providers.%s", p->name);
        json_t *r = gt_cfg_obj(c, pj, "retry", ppath, 0);
        snprintf(path, sizeof(path), "%s.retry", ppath);
        if (r)
            gt_cfg_check_keys(c, r, path, retry_keys);
        p->retry = cfg->retry;
        p->retry.max_retries =
            (int)gt_cfg_int(c, r, "max_retries", path, p->retry.max_retries, 0, 100);
        p->retry.base_ms = gt_cfg_int(c, r, "base_ms", path, p->retry.base_ms, 1, 3600000);
        p->retry.max_ms = gt_cfg_int(c, r, "max_ms", path, p->retry.max_ms, 1, 3600000);
        p->retry.jitter = gt_cfg_num(c, r, "jitter", path, p->retry.jitter, 0, 1);
        json_t *t = gt_cfg_obj(c, pj, "timeouts", ppath, 0);
        snprintf(path, sizeof(path), "%s.timeouts", ppath);
        if (t)
            gt_cfg_check_keys(c, t, path, tkeys);
        p->inference_timeout_ms =
            gt_cfg_int(c, t, "inference_ms", path, cfg->inference_timeout_ms, 1, 86400000);
        p->slot_timeout_ms =
            gt_cfg_int(c, t, "slot_ms", path, cfg->allocate_timeout_ms, 1, 86400000);
    }
}

static const gt_config_section_t worker_sections = {
    .name = "worker", .load = load_provider_policies, .free = NULL};

int gt_worker_config_register(void)
{
    return gt_config_add_section(&worker_sections);
}
