/* guard_result.c - the guard's result stage, at the coordinator: restores
 * masked tokens and moderates the output as the job's job_guardrails row says,
 * then deletes the row once the result is durable. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"
#include "guard_stage.h"
#include "log.h"
#include "moderation.h"
#include "scrub.h"

typedef struct gres {
    gt_dispatcher_t *d;
    char *request_id, *tenant_id;
    json_t *result; /* borrowed from the coordinator */
    json_t *decision;
    void (*done)(const char *err, void *);
    void *arg;
} gres_t;

static const char sql_select_guard[] =
    "SELECT decision, mask, restore, moderate_output, tenant_id FROM job_guardrails"
    " WHERE request_id = $1";

static void gres_finish(gres_t *g)
{
    json_object_set(g->result, "guardrails", g->decision);
    g->done(NULL, g->arg);
    json_decref(g->decision);
    free(g->request_id);
    free(g->tenant_id);
    free(g);
}

/* The output(s) of a result: "output" or each "outputs"[i].output. */
static void each_output(json_t *result, json_t *(*fn)(json_t *out, void *ctx), void *ctx)
{
    json_t *outs = json_object_get(result, "outputs");
    if (!outs) {
        json_t *o = fn(json_object_get(result, "output"), ctx);
        if (o)
            json_object_set_new(result, "output", o);
        return;
    }
    size_t i;
    json_t *item;
    json_array_foreach (outs, i, item) {
        json_t *o = fn(json_object_get(item, "output"), ctx);
        if (o)
            json_object_set_new(item, "output", o);
    }
}

static json_t *restore_one(json_t *out, void *ctx)
{
    return out && !json_is_null(out) ? gt_scrub_restore_json(ctx, out) : NULL;
}

static json_t *collect_one(json_t *out, void *ctx)
{
    void **b = ctx;
    gt_guard_collect_text(out, (char **)b[0], b[1], b[2]);
    return NULL;
}

static json_t *null_one(json_t *out, void *ctx)
{
    (void)out, (void)ctx;
    return json_null();
}

static void on_output_moderated(const gt_mod_verdict_t *v, void *arg)
{
    void **pair = arg;
    gres_t *g = pair[0];
    json_t *mask = pair[1];
    free(pair);
    const gt_tenant_t *t = gt_config_tenant(g->d->cfg, g->tenant_id);
    const struct gt_guardrails *gr = t && t->guard.has_guardrails ? &t->guard : NULL;
    double th[GT_MOD_NCATEGORIES];
    for (int k = 0; k < GT_MOD_NCATEGORIES; k++)
        th[k] = gr ? gr->thresholds[k] : 0.5;
    int cat = gt_moderation_flagged(v, th);
    if (strcmp(v->source, "skipped") != 0)
        json_object_set_new(g->decision, "output_moderation",
                            json_pack("{s:s, s:b}", "source", v->source, "flagged", cat >= 0));
    if (cat >= 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "output blocked by moderation: %s",
                 gt_moderation_category_name(cat));
        json_t *details = json_pack("{s:s, s:s, s:f, s:s}", "stage", "output", "category",
                                    gt_moderation_category_name(cat), "score", v->scores[cat],
                                    "source", v->source);
        json_object_set_new(g->decision, "blocked", json_deep_copy(details));
        each_output(g->result, null_one, NULL);
        json_object_set_new(g->result, "status", json_string("blocked"));
        json_object_set_new(g->result, "error",
                            json_pack("{s:s, s:s}", "code", "blocked", "message", msg));
        gt_guard_emit(g->d, "guardrail.blocked", g->request_id, g->tenant_id, details);
    } else if (mask) {
        /* Moderated while masked, so no personal data reached the moderation
         * endpoint; restored only now. */
        each_output(g->result, restore_one, mask);
        gt_guard_emit(g->d, "guardrail.restored", g->request_id, g->tenant_id,
                      json_pack("{s:I}", "tokens", (json_int_t)json_object_size(mask)));
    }
    json_decref(mask);
    gres_finish(g);
}

static void on_guard_loaded(const PGresult *res, const char *err, void *arg)
{
    gres_t *g = arg;
    if (err || PQntuples(res) != 1) {
        /* No row: a job without guardrails, untouched. An error never lets
         * the result out without its moderation and PII restore. */
        if (err)
            gt_log(GT_LOG_ERROR, &(gt_log_ctx_t){.request_id = g->request_id},
                   "reading the guard decision failed, result held: %s", err);
        g->done(err, g->arg);
        free(g->request_id);
        free(g);
        return;
    }
    g->decision = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    if (!g->decision)
        g->decision = json_object();
    json_t *mask = NULL;
    if (!PQgetisnull(res, 0, 1) && strcmp(PQgetvalue(res, 0, 2), "t") == 0)
        mask = json_loads(PQgetvalue(res, 0, 1), 0, NULL);
    int moderate = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    g->tenant_id = strdup(PQgetvalue(res, 0, 4));
    const char *st = json_string_value(json_object_get(g->result, "status"));
    void **pair = malloc(2 * sizeof(void *));
    if (!pair) { /* held, not published unrestored */
        json_decref(mask);
        json_decref(g->decision);
        g->done("out of memory", g->arg);
        free(g->request_id);
        free(g->tenant_id);
        free(g);
        return;
    }
    pair[0] = g;
    pair[1] = mask;
    if (!moderate || !g->d->moderation || !st || strcmp(st, "succeeded") != 0) {
        gt_mod_verdict_t none = {.source = "skipped"}; /* nothing to moderate: restore only */
        on_output_moderated(&none, pair);
        return;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    void *ctx[3] = {&text, &len, &cap};
    each_output(g->result, collect_one, ctx);
    if (gt_moderation_check(g->d->moderation, text ? text : "", len, on_output_moderated, pair) !=
        0) {
        gt_mod_verdict_t none = {.source = "skipped"};
        on_output_moderated(&none, pair);
    }
    free(text);
}

void gt_guard_result(gt_dispatcher_t *d, const char *request_id, json_t *result,
                     void (*done)(const char *err, void *arg), void *arg)
{
    gres_t *g = calloc(1, sizeof(*g));
    if (!g) {
        done("out of memory", arg);
        return;
    }
    g->d = d;
    g->request_id = strdup(request_id);
    g->result = result;
    g->done = done;
    g->arg = arg;
    const char *params[] = {request_id};
    if (gt_pg_query(d->pg_coord, sql_select_guard, 1, params, on_guard_loaded, g) != 0)
        on_guard_loaded(NULL, "cannot send query", g);
}

static void on_forgotten(const PGresult *res, const char *err, void *arg)
{
    (void)res, (void)arg;
    if (err)
        gt_log(GT_LOG_WARN, NULL, "deleting a guard row failed: %s", err);
}

void gt_guard_forget(gt_dispatcher_t *d, const char *request_id)
{
    const char *params[] = {request_id};
    gt_pg_query(d->pg_coord, "DELETE FROM job_guardrails WHERE request_id = $1", 1, params,
                on_forgotten, NULL);
}
