/* dispatcher_config.c - the dispatcher's sections of gantry.json: routing,
 * tenants.<id>.guardrails and .cache, moderation, dispatcher and ledger (lib/config.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_section.h"
#include "dispatcher_config.h"
#include "pii.h"
#include "ratelimit.h"
#include "scrub.h"

static void load_routing(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const keys[] = {"rules", "default", NULL};
    static const char *const rkeys[] = {"hint",  "kind", "max_input_chars", "min_input_chars",
                                        "model", NULL};
    json_t *r = gt_cfg_obj(c, cfg->root, "routing", "", 0);
    if (!r)
        return;
    gt_cfg_check_keys(c, r, "routing", keys);
    cfg->default_model = gt_cfg_str(c, r, "default", "routing", NULL, 0);
    if (cfg->default_model && !gt_config_model(cfg, cfg->default_model))
        gt_cfg_problem(c, "routing.default", "model \"%s\" is not declared in models",
                       cfg->default_model);
    json_t *rules = json_object_get(r, "rules");
    if (!rules)
        return;
    if (!json_is_array(rules)) {
        gt_cfg_problem(c, "routing.rules", "must be an array");
        return;
    }
    cfg->routes = calloc(json_array_size(rules) + 1, sizeof(gt_route_rule_t));
    size_t i;
    json_t *rule;
    json_array_foreach (rules, i, rule) {
        char path[64];
        snprintf(path, sizeof(path), "routing.rules[%zu]", i);
        if (!json_is_object(rule)) {
            gt_cfg_problem(c, path, "must be an object");
            continue;
        }
        gt_cfg_check_keys(c, rule, path, rkeys);
        gt_route_rule_t *rr = &cfg->routes[cfg->n_routes++];
        rr->hint = gt_cfg_str(c, rule, "hint", path, NULL, 0);
        rr->kind = gt_cfg_str(c, rule, "kind", path, NULL, 0);
        rr->max_input_chars = gt_cfg_int(c, rule, "max_input_chars", path, 0, 0, INT64_MAX);
        rr->min_input_chars = gt_cfg_int(c, rule, "min_input_chars", path, 0, 0, INT64_MAX);
        rr->model = gt_cfg_str(c, rule, "model", path, NULL, 1);
        if (rr->model && !gt_config_model(cfg, rr->model))
            gt_cfg_problem(c, path, "model \"%s\" is not declared in models", rr->model);
    }
}

/* A provider name a guardrail list may use: a declared provider, "hostedai",
 * or "hostedai/<pool>". */
static int guard_provider_known(const gt_config_t *cfg, const char *name)
{
    if (strcmp(name, "hostedai") == 0)
        return 1;
    if (strncmp(name, "hostedai/", 9) == 0)
        return gt_config_pool(cfg, name + 9) != NULL;
    return gt_config_provider(cfg, name) != NULL;
}

static void load_guard_pii(gt_cfg_ctx_t *c, struct gt_guardrails *gr, json_t *p, const char *path)
{
    static const char *const keys[] = {"mode",     "types",      "min_confidence", "restore",
                                       "hash_key", "hash_chars", "always",         NULL};
    gr->pii_mode = GT_SCRUB_MASK;
    gr->pii_types = GT_PII_ALL;
    gr->pii_min_confidence = 0.5;
    gr->pii_restore = 1;
    gr->hash_chars = 16;
    if (!p)
        return;
    gt_cfg_check_keys(c, p, path, keys);
    char *mode = gt_cfg_str(c, p, "mode", path, "mask", 0);
    char *sub = gt_cfg_join(path, "mode");
    if (strcmp(mode, "mask") == 0)
        gr->pii_mode = GT_SCRUB_MASK;
    else if (strcmp(mode, "hash") == 0)
        gr->pii_mode = GT_SCRUB_HASH;
    else if (strcmp(mode, "remove") == 0)
        gr->pii_mode = GT_SCRUB_REMOVE;
    else
        gt_cfg_problem(c, sub, "must be one of mask, hash, remove");
    free(sub);
    free(mode);
    size_t n = 0;
    char **types = gt_cfg_str_list(c, p, "types", path, &n);
    if (types) {
        gr->pii_types = 0;
        sub = gt_cfg_join(path, "types");
        for (size_t i = 0; i < n; i++) {
            int ty = gt_pii_type_parse(types[i]);
            if (ty < 0)
                gt_cfg_problem(c, sub,
                               "unknown type \"%s\" (email, phone, ssn, card, ipv4, ipv6, "
                               "iban, dob)",
                               types[i]);
            else
                gr->pii_types |= 1u << ty;
            free(types[i]);
        }
        free(types);
        free(sub);
    }
    gr->pii_min_confidence = gt_cfg_num(c, p, "min_confidence", path, 0.5, 0.05, 1.0);
    gr->pii_restore = gt_cfg_bool(c, p, "restore", path, 1);
    gr->pii_always = gt_cfg_bool(c, p, "always", path, 0);
    gr->hash_chars = (int)gt_cfg_int(c, p, "hash_chars", path, 16, 8, 64);
    gr->hash_key = gt_cfg_str(c, p, "hash_key", path, NULL, gr->pii_mode == GT_SCRUB_HASH);
}

static void load_guard_providers(gt_cfg_ctx_t *c, const gt_config_t *cfg, struct gt_guardrails *gr,
                                 json_t *p, const char *path)
{
    static const char *const keys[] = {"raw", "scrubbed", "none", "default", "prefer", NULL};
    gr->default_access = GT_ACCESS_RAW;
    if (!p)
        return;
    gt_cfg_check_keys(c, p, path, keys);
    gr->raw = gt_cfg_str_list(c, p, "raw", path, &gr->n_raw);
    gr->scrubbed = gt_cfg_str_list(c, p, "scrubbed", path, &gr->n_scrubbed);
    gr->denied = gt_cfg_str_list(c, p, "none", path, &gr->n_denied);
    char **lists[] = {gr->raw, gr->scrubbed, gr->denied};
    size_t ns[] = {gr->n_raw, gr->n_scrubbed, gr->n_denied};
    const char *names[] = {"raw", "scrubbed", "none"};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < ns[l]; i++)
            if (!guard_provider_known(cfg, lists[l][i])) {
                char *sub = gt_cfg_join(path, names[l]);
                gt_cfg_problem(c, sub,
                               "\"%s\" is not a declared provider, \"hostedai\" or "
                               "\"hostedai/<pool>\"",
                               lists[l][i]);
                free(sub);
            }
    char *def = gt_cfg_str(c, p, "default", path, "scrubbed", 0);
    char *prefer = gt_cfg_str(c, p, "prefer", path, "scrub", 0);
    char *sub = gt_cfg_join(path, "default");
    if (strcmp(def, "raw") == 0)
        gr->default_access = GT_ACCESS_RAW;
    else if (strcmp(def, "scrubbed") == 0)
        gr->default_access = GT_ACCESS_SCRUBBED;
    else if (strcmp(def, "none") == 0)
        gr->default_access = GT_ACCESS_NONE;
    else
        gt_cfg_problem(c, sub, "must be one of raw, scrubbed, none");
    free(sub);
    sub = gt_cfg_join(path, "prefer");
    if (strcmp(prefer, "scrub") != 0 && strcmp(prefer, "reroute") != 0)
        gt_cfg_problem(c, sub, "must be scrub or reroute");
    gr->prefer_reroute = strcmp(prefer, "reroute") == 0;
    free(sub);
    free(def);
    free(prefer);
}

static const char *const mod_names[GT_MOD_NCATEGORIES] = {"harassment", "hate", "violence",
                                                          "sexual", "self-harm"};

static void load_guard_moderation(gt_cfg_ctx_t *c, struct gt_guardrails *gr, json_t *m,
                                  const char *path)
{
    static const char *const keys[] = {"input", "output", "thresholds", NULL};
    for (int k = 0; k < GT_MOD_NCATEGORIES; k++)
        gr->thresholds[k] = 0.5;
    gr->moderate_input = gr->moderate_output = 1;
    if (!m)
        return;
    gt_cfg_check_keys(c, m, path, keys);
    gr->moderate_input = gt_cfg_bool(c, m, "input", path, 1);
    gr->moderate_output = gt_cfg_bool(c, m, "output", path, 1);
    char *sub = gt_cfg_join(path, "thresholds");
    json_t *th = gt_cfg_obj(c, m, "thresholds", path, 0);
    if (th) {
        gt_cfg_check_keys(c, th, sub, mod_names);
        for (int k = 0; k < GT_MOD_NCATEGORIES; k++)
            gr->thresholds[k] = gt_cfg_num(c, th, mod_names[k], sub, 0.5, 0.0, 1.0);
    }
    free(sub);
}

static void load_guard_limits(gt_cfg_ctx_t *c, const gt_config_t *cfg, struct gt_guardrails *gr,
                              json_t *l, const char *path)
{
    static const char *const keys[] = {"max_request_bytes", "max_batch", "max_input_tokens", NULL};
    if (!l)
        return;
    gt_cfg_check_keys(c, l, path, keys);
    gr->max_request_bytes = gt_cfg_int(c, l, "max_request_bytes", path, 0, 0, INT64_MAX);
    gr->max_batch = (int)gt_cfg_int(c, l, "max_batch", path, 0, 0, 1000000);
    json_t *mt = gt_cfg_obj(c, l, "max_input_tokens", path, 0);
    if (!mt)
        return;
    char *sub = gt_cfg_join(path, "max_input_tokens");
    gr->max_input_tokens = calloc(json_object_size(mt) + 1, sizeof(*gr->max_input_tokens));
    const char *model;
    json_t *v;
    json_object_foreach (mt, model, v) {
        if (strcmp(model, "*") != 0 && !gt_config_model(cfg, model)) {
            char *msub = gt_cfg_join(sub, model);
            gt_cfg_problem(c, msub, "model \"%s\" is not declared in models", model);
            free(msub);
            continue;
        }
        struct gt_token_limit *tl = &gr->max_input_tokens[gr->n_max_input_tokens++];
        tl->model = strdup(model);
        tl->tokens = gt_cfg_int(c, mt, model, sub, 0, 1, INT64_MAX);
    }
    free(sub);
}

static void load_tenant_guardrails(gt_cfg_ctx_t *c, const gt_config_t *cfg, gt_tenant_t *t,
                                   json_t *g, const char *path)
{
    static const char *const keys[] = {"pii", "providers", "moderation", "limits", NULL};
    struct gt_guardrails *gr = &t->guard;
    gt_cfg_check_keys(c, g, path, keys);
    char *sub = gt_cfg_join(path, "pii");
    load_guard_pii(c, gr, gt_cfg_obj(c, g, "pii", path, 0), sub);
    free(sub);
    sub = gt_cfg_join(path, "providers");
    load_guard_providers(c, cfg, gr, gt_cfg_obj(c, g, "providers", path, 0), sub);
    free(sub);
    sub = gt_cfg_join(path, "moderation");
    load_guard_moderation(c, gr, gt_cfg_obj(c, g, "moderation", path, 0), sub);
    free(sub);
    sub = gt_cfg_join(path, "limits");
    load_guard_limits(c, cfg, gr, gt_cfg_obj(c, g, "limits", path, 0), sub);
    free(sub);
    gr->has_guardrails = 1;
}

static void free_guardrails(struct gt_guardrails *gr)
{
    free(gr->hash_key);
    gt_cfg_free_str_list(gr->raw, gr->n_raw);
    gt_cfg_free_str_list(gr->scrubbed, gr->n_scrubbed);
    gt_cfg_free_str_list(gr->denied, gr->n_denied);
    for (size_t i = 0; i < gr->n_max_input_tokens; i++)
        free(gr->max_input_tokens[i].model);
    free(gr->max_input_tokens);
}

static void load_moderation(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const keys[] = {"endpoint", "api_key", "model", "timeout_ms", NULL};
    json_t *m = gt_cfg_obj(c, cfg->root, "moderation", "", 0);
    if (m)
        gt_cfg_check_keys(c, m, "moderation", keys);
    cfg->moderation_endpoint = gt_cfg_str(c, m, "endpoint", "moderation", NULL, 0);
    cfg->moderation_api_key = gt_cfg_str(c, m, "api_key", "moderation", NULL, 0);
    cfg->moderation_model = gt_cfg_str(c, m, "model", "moderation", "omni-moderation-latest", 0);
    cfg->moderation_timeout_ms = gt_cfg_int(c, m, "timeout_ms", "moderation", 2000, 1, 600000);
    size_t n = cfg->moderation_endpoint ? strlen(cfg->moderation_endpoint) : 0;
    while (n > 0 && cfg->moderation_endpoint[n - 1] == '/')
        cfg->moderation_endpoint[--n] = 0;
}

static void load_dispatcher(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const dkeys[] = {
        "max_in_flight",         "max_batch",   "drain_ms",   "claim_timeout_ms",
        "allow_unknown_tenants", "rate_limits", "backlog_ms", NULL};
    json_t *d = gt_cfg_obj(c, cfg->root, "dispatcher", "", 0);
    if (d)
        gt_cfg_check_keys(c, d, "dispatcher", dkeys);
    cfg->dispatcher_max_in_flight =
        (int)gt_cfg_int(c, d, "max_in_flight", "dispatcher", 1024, 1, 1000000);
    cfg->max_batch = (int)gt_cfg_int(c, d, "max_batch", "dispatcher", 1000, 1, 100000);
    cfg->dispatcher_drain_ms = gt_cfg_int(c, d, "drain_ms", "dispatcher", 30000, 0, 3600000);
    cfg->claim_timeout_ms = gt_cfg_int(c, d, "claim_timeout_ms", "dispatcher", 30000, 100, 3600000);
    cfg->allow_unknown_tenants = gt_cfg_bool(c, d, "allow_unknown_tenants", "dispatcher", 0);
    gt_cfg_int(c, d, "backlog_ms", "dispatcher", 5000, 0, 3600000); /* read by backlog.c */
    gt_ratelimit_config_check(c, d);
}

static void load_ledger(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const lkeys[] = {"batch_size", "flush_ms", "connections", NULL};
    json_t *l = gt_cfg_obj(c, cfg->root, "ledger", "", 0);
    if (l)
        gt_cfg_check_keys(c, l, "ledger", lkeys);
    cfg->ledger_batch_size = (int)gt_cfg_int(c, l, "batch_size", "ledger", 500, 1, 100000);
    cfg->ledger_flush_ms = gt_cfg_int(c, l, "flush_ms", "ledger", 50, 1, 60000);
    cfg->ledger_connections = (int)gt_cfg_int(c, l, "connections", "ledger", 2, 1, 16);
}

/* tenants.<id>.cache: the response cache (docs/routing.md, dispatcher/cache.h). */
static void load_tenant_cache(gt_cfg_ctx_t *c, const gt_config_t *cfg, gt_tenant_t *t, json_t *cj,
                              const char *sub)
{
    static const char *const ckeys[] = {"models", "max_bytes", "default", NULL};
    t->cache.max_bytes = 16 << 20;
    if (!cj)
        return;
    gt_cfg_check_keys(c, cj, sub, ckeys);
    t->cache.models = gt_cfg_str_list(c, cj, "models", sub, &t->cache.n_models);
    t->cache.max_bytes = gt_cfg_int(c, cj, "max_bytes", sub, 16 << 20, 1, INT64_MAX);
    t->cache.by_default = gt_cfg_bool(c, cj, "default", sub, 0);
    for (size_t i = 0; i < t->cache.n_models; i++) {
        const gt_model_t *cm = gt_config_model(cfg, t->cache.models[i]);
        if (strcmp(t->cache.models[i], "*") != 0 && (!cm || !cm->cache_ttl_ms))
            gt_cfg_problem(c, sub, "model \"%s\" is not a model with a cache section",
                           t->cache.models[i]);
    }
}

/* tenants.<id>.guardrails and .cache of each tenant lib/config.c declared. */
static void load_tenants_parts(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    json_t *tenants = json_object_get(cfg->root, "tenants");
    for (size_t i = 0; i < cfg->n_tenants; i++) {
        gt_tenant_t *t = &cfg->tenants[i];
        json_t *tj = json_object_get(tenants, t->id);
        char path[512], sub[600];
        snprintf(path, sizeof(path), "tenants.%s", t->id);
        snprintf(sub, sizeof(sub), "%s.guardrails", path);
        json_t *g = gt_cfg_obj(c, tj, "guardrails", path, 0);
        if (g)
            load_tenant_guardrails(c, cfg, t, g, sub);
        snprintf(sub, sizeof(sub), "%s.cache", path);
        load_tenant_cache(c, cfg, t, gt_cfg_obj(c, tj, "cache", path, 0), sub);
    }
}

static void load_sections(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    load_routing(c, cfg);
    load_tenants_parts(c, cfg);
    load_moderation(c, cfg);
    load_dispatcher(c, cfg);
    load_ledger(c, cfg);
}

static void free_sections(gt_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_routes; i++) {
        free(cfg->routes[i].hint);
        free(cfg->routes[i].kind);
        free(cfg->routes[i].model);
    }
    free(cfg->routes);
    free(cfg->default_model);
    for (size_t i = 0; i < cfg->n_tenants; i++) {
        free_guardrails(&cfg->tenants[i].guard);
        gt_cfg_free_str_list(cfg->tenants[i].cache.models, cfg->tenants[i].cache.n_models);
    }
    free(cfg->moderation_endpoint);
    free(cfg->moderation_api_key);
    free(cfg->moderation_model);
}

static const gt_config_section_t dispatcher_sections = {
    .name = "dispatcher", .load = load_sections, .free = free_sections};

int gt_dispatcher_config_register(void)
{
    return gt_config_add_section(&dispatcher_sections);
}
