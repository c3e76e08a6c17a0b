/* worker_config.c - the worker's sections of gantry.json: each provider's
 * runtime (one of the wire table, with what it needs), retry and timeouts
 * (providers.<name>.retry, .timeouts, defaulting to worker's), each model's
 * runtime. */
#include <stdio.h>
#include <string.h>

#include "config_section.h"
#include "provider.h"
#include "worker_config.h"

/* providers.<name>.runtime is in the wire table and has what it needs;
 * models.<name>.runtime is hostedai or in the table. */
static void check_runtimes(gt_cfg_ctx_t *c, const gt_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const gt_provider_t *p = &cfg->providers[i];
        char path[512];
        snprintf(path, sizeof(path), "providers.%s", p->name);
        if (!p->runtime)
            continue; /* required: the shared loader said so */
        const gt_runtime_t *rt = gt_runtime_find(p->runtime);
        if (!rt)
            gt_cfg_problem(c, path, "runtime \"%s\" is not a provider runtime (%s)", p->runtime,
                           gt_runtime_names());
        else if (rt->check)
            rt->check(c, p, path);
    }
    for (size_t i = 0; i < cfg->n_models; i++) {
        const gt_model_t *m = &cfg->models[i];
        char path[512];
        snprintf(path, sizeof(path), "models.%s", m->name);
        if (m->runtime && strcmp(m->runtime, "hostedai") != 0 && !gt_runtime_find(m->runtime))
            gt_cfg_problem(c, path, "runtime \"%s\" is not supported (supported: hostedai, %s)",
                           m->runtime, gt_runtime_names());
    }
}

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

static void load_worker_sections(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    check_runtimes(c, cfg);
    load_provider_policies(c, cfg);
}

static const gt_config_section_t worker_sections = {
    .name = "worker", .load = load_worker_sections, .free = NULL};

int gt_worker_config_register(void)
{
    return gt_config_add_section(&worker_sections);
}
