/* guard_policy.c - the guard's policy, pure: which providers may receive a
 * tenant's data raw or scrubbed, reroutes, and the size and token limits. */
#include <stdio.h>
#include <string.h>

#include "guard.h"
#include "scrub.h"

const char *gt_guard_provider_of(const gt_model_t *m, char *buf, size_t len)
{
    if (m->provider && strcmp(m->runtime ? m->runtime : "hostedai", "hostedai") != 0)
        snprintf(buf, len, "%s", m->provider);
    else
        snprintf(buf, len, "hostedai/%s", m->pool ? m->pool : "");
    return buf;
}

static int listed(char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

static int access_of(const struct gt_guardrails *gr, const char *name)
{
    /* The strictest list that names the provider wins. */
    if (listed(gr->denied, gr->n_denied, name))
        return GT_ACCESS_NONE;
    if (listed(gr->scrubbed, gr->n_scrubbed, name))
        return GT_ACCESS_SCRUBBED;
    if (listed(gr->raw, gr->n_raw, name))
        return GT_ACCESS_RAW;
    return -1;
}

gt_access_t gt_guard_access(const struct gt_guardrails *gr, const gt_model_t *m)
{
    char name[256];
    gt_guard_provider_of(m, name, sizeof(name));
    int a = access_of(gr, name);
    if (a < 0 && strncmp(name, "hostedai/", 9) == 0)
        a = access_of(gr, "hostedai"); /* the pool inherits the HostedAI entry */
    return a < 0 ? (gt_access_t)gr->default_access : (gt_access_t)a;
}

long long gt_guard_input_tokens(const gt_route_t *route)
{
    return (route->input_chars + 3) / 4;
}

static int policy_scrub(const json_t *req)
{
    return json_is_true(
        json_object_get(json_object_get(json_object_get(req, "policy"), "pii"), "scrub"));
}

static const struct gt_guardrails *defaults(void)
{
    static struct gt_guardrails d = {
        .has_guardrails = 1,
        .pii_mode = GT_SCRUB_MASK,
        .pii_types = GT_PII_ALL,
        .pii_min_confidence = 0.5,
        .pii_restore = 1,
        .hash_chars = 16,
        .default_access = GT_ACCESS_RAW,
    };
    return &d;
}

const struct gt_guardrails *gt_guard_rules(const gt_config_t *cfg, const json_t *req)
{
    const gt_tenant_t *t =
        gt_config_tenant(cfg, json_string_value(json_object_get(req, "tenant_id")));
    if (t && t->guard.has_guardrails)
        return &t->guard;
    return policy_scrub(req) ? defaults() : NULL;
}

/* The first fallback of m whose provider may receive data at least as
 * permissive as want (RAW before SCRUBBED). */
static const gt_model_t *fallback_with(const gt_config_t *cfg, const struct gt_guardrails *gr,
                                       const gt_model_t *m, gt_access_t want)
{
    for (size_t i = 0; i < m->n_fallbacks; i++) {
        const gt_model_t *f = gt_config_model(cfg, m->fallbacks[i]);
        if (f && gt_guard_access(gr, f) <= want)
            return f;
    }
    return NULL;
}

static long long token_limit(const struct gt_guardrails *gr, const char *model)
{
    long long any = 0;
    for (size_t i = 0; i < gr->n_max_input_tokens; i++) {
        if (strcmp(gr->max_input_tokens[i].model, model) == 0)
            return gr->max_input_tokens[i].tokens;
        if (strcmp(gr->max_input_tokens[i].model, "*") == 0)
            any = gr->max_input_tokens[i].tokens;
    }
    return any;
}

int gt_guard_plan(const gt_config_t *cfg, const struct gt_guardrails *gr, const json_t *req,
                  size_t req_bytes, gt_guard_plan_t *plan)
{
    memset(plan, 0, sizeof(*plan));
    gt_route_t route;
    const char *code;
    char err[256];
    if (gt_classify(cfg, req, &route, &code, err, sizeof(err)) != 0)
        return -1;
    plan->model = route.model;
    if (gr->max_request_bytes && (int64_t)req_bytes > gr->max_request_bytes) {
        plan->reject_code = "too_large";
        snprintf(plan->reason, sizeof(plan->reason),
                 "request of %zu bytes exceeds the limit of %lld", req_bytes,
                 (long long)gr->max_request_bytes);
        return 0;
    }
    size_t batch = json_array_size(json_object_get(req, "batch"));
    if (gr->max_batch && batch > (size_t)gr->max_batch) {
        plan->reject_code = "batch_too_large";
        snprintf(plan->reason, sizeof(plan->reason), "batch of %zu inputs exceeds the limit of %d",
                 batch, gr->max_batch);
        return 0;
    }
    gt_access_t a = gt_guard_access(gr, route.model);
    const gt_model_t *to = NULL;
    if (a == GT_ACCESS_NONE) {
        to = fallback_with(cfg, gr, route.model, GT_ACCESS_SCRUBBED);
        if (!to) {
            plan->reject_code = "provider_not_permitted";
            snprintf(plan->reason, sizeof(plan->reason),
                     "model %s: its provider may not receive this tenant's data and no fallback "
                     "may",
                     route.model->name);
            return 0;
        }
        snprintf(plan->reason, sizeof(plan->reason),
                 "provider of %s may not receive this "
                 "tenant's data",
                 route.model->name);
    } else if (a == GT_ACCESS_SCRUBBED && gr->prefer_reroute) {
        to = fallback_with(cfg, gr, route.model, GT_ACCESS_RAW);
        if (to)
            snprintf(plan->reason, sizeof(plan->reason),
                     "provider of %s receives scrubbed data "
                     "only; rerouted to keep the input whole",
                     route.model->name);
    }
    if (to) {
        plan->from = route.model;
        plan->model = to;
        a = gt_guard_access(gr, to);
    }
    plan->access = a;
    plan->scrub = a == GT_ACCESS_SCRUBBED || gr->pii_always || policy_scrub(req);
    long long limit = token_limit(gr, plan->model->name);
    long long tokens = gt_guard_input_tokens(&route);
    if (limit && tokens > limit) {
        plan->reject_code = "input_tokens_exceeded";
        snprintf(plan->reason, sizeof(plan->reason),
                 "input of about %lld tokens exceeds the limit of %lld for model %s", tokens, limit,
                 plan->model->name);
    }
    return 0;
}

int gt_guard_fallback_ok(const gt_config_t *cfg, const json_t *req, const gt_model_t *from,
                         const gt_model_t *to)
{
    const struct gt_guardrails *gr = gt_guard_rules(cfg, req);
    if (!gr)
        return 1;
    gt_access_t a = gt_guard_access(gr, to);
    int scrubbed =
        gt_guard_access(gr, from) == GT_ACCESS_SCRUBBED || gr->pii_always || policy_scrub(req);
    return a == GT_ACCESS_RAW || (a == GT_ACCESS_SCRUBBED && scrubbed);
}
