/* guard.c - the guard stage: limits, moderation, privacy-aware routing and
 * PII scrubbing at intake; restore and output moderation at the coordinator.
 * Decisions go on the result and on gantry.events as types and counts, never
 * values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "guard.h"
#include "log.h"
#include "message.h"
#include "moderation.h"
#include "scrub.h"
#include "trace.h"

/* ---- policy ----------------------------------------------------------------- */

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
    return json_is_true(json_object_get(json_object_get(json_object_get(req, "policy"), "pii"),
                                        "scrub"));
}

static const struct gt_guardrails *defaults(void)
{
    static struct gt_guardrails d = {
        .has_guardrails = 1, .pii_mode = GT_SCRUB_MASK, .pii_types = GT_PII_ALL,
        .pii_min_confidence = 0.5, .pii_restore = 1, .hash_chars = 16,
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
        snprintf(plan->reason, sizeof(plan->reason), "request of %zu bytes exceeds the limit of %lld",
                 req_bytes, (long long)gr->max_request_bytes);
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
                     "may", route.model->name);
            return 0;
        }
        snprintf(plan->reason, sizeof(plan->reason), "provider of %s may not receive this "
                 "tenant's data", route.model->name);
    } else if (a == GT_ACCESS_SCRUBBED && gr->prefer_reroute) {
        to = fallback_with(cfg, gr, route.model, GT_ACCESS_RAW);
        if (to)
            snprintf(plan->reason, sizeof(plan->reason), "provider of %s receives scrubbed data "
                     "only; rerouted to keep the input whole", route.model->name);
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
                 "input of about %lld tokens exceeds the limit of %lld for model %s", tokens,
                 limit, plan->model->name);
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
    int scrubbed = gt_guard_access(gr, from) == GT_ACCESS_SCRUBBED || gr->pii_always ||
                   policy_scrub(req);
    return a == GT_ACCESS_RAW || (a == GT_ACCESS_SCRUBBED && scrubbed);
}

/* ---- events ----------------------------------------------------------------- */

static void emit(gt_dispatcher_t *d, const char *type, const char *request_id,
                 const char *tenant_id, json_t *data)
{
    json_object_set_new(data, "request_id", json_string(request_id));
    json_object_set_new(data, "tenant_id", json_string(tenant_id));
    /* One decision of each type per request: a redelivered request repeats
     * its event under the same id, which consumers dedupe on. */
    char event_id[512];
    snprintf(event_id, sizeof(event_id), "%s:%s", request_id, type);
    json_t *ev = gt_event_build(type, d->id, event_id, data);
    if (!ev)
        return;
    /* Sent until acknowledged (a detached effect), like every produce. */
    if (gt_effect_send_json(d->effects, d->cfg->topics.events, request_id, ev, NULL, 0) != 0)
        gt_log(GT_LOG_WARN, &(gt_log_ctx_t){.request_id = request_id},
               "event %s not queued: out of memory", type);
    json_decref(ev);
}

/* All string values of v, newline-separated, for moderation. */
static void collect_text(const json_t *v, char **buf, size_t *len, size_t *cap)
{
    if (json_is_string(v)) {
        size_t n = json_string_length(v);
        if (*len + n + 2 > *cap) {
            size_t c = (*len + n + 2) * 2;
            char *p = realloc(*buf, c);
            if (!p)
                return;
            *buf = p;
            *cap = c;
        }
        memcpy(*buf + *len, json_string_value(v), n);
        *len += n;
        (*buf)[(*len)++] = '\n';
        (*buf)[*len] = 0;
        return;
    }
    size_t i;
    json_t *e;
    const char *k;
    if (json_is_array(v))
        json_array_foreach(v, i, e) collect_text(e, buf, len, cap);
    else if (json_is_object(v))
        json_object_foreach((json_t *)v, k, e) collect_text(e, buf, len, cap);
}

static const char *mode_name(int mode)
{
    return mode == GT_SCRUB_HASH ? "hash" : mode == GT_SCRUB_REMOVE ? "remove" : "mask";
}

static const char *access_name(gt_access_t a)
{
    return a == GT_ACCESS_RAW ? "raw" : a == GT_ACCESS_SCRUBBED ? "scrubbed" : "none";
}

/* ---- intake ----------------------------------------------------------------- */

typedef struct gjob {
    gt_dispatcher_t *d;
    gt_msg_t *msg;
    json_t *req;
    gt_guard_next next;
    const struct gt_guardrails *gr;
    gt_guard_plan_t plan;
    char *request_id, *tenant_id;
    json_t *result;      /* terminal answer being published */
    json_t *decision;    /* what the guard did (no values) */
    char *mod_source;
    char traceparent[128]; /* the request's header as received, for log lines */
} gjob_t;

/* Log context of a request in the guard stage. */
#define J_CTX(j)                                                                  \
    (&(gt_log_ctx_t){.request_id = (j)->request_id, .tenant_id = (j)->tenant_id, \
                     .trace_id = (j)->traceparent})

static void gjob_free(gjob_t *j)
{
    json_decref(j->req);
    json_decref(j->result);
    json_decref(j->decision);
    free(j->request_id);
    free(j->tenant_id);
    free(j->mod_source);
    free(j);
}

static void on_terminal_delivered(void *arg)
{
    gjob_t *j = arg;
    j->d->results_published++;
    gt_stats_result(json_string_value(json_object_get(j->result, "status")));
    json_object_del(j->d->intake_active, j->request_id);
    gt_consumer_done(j->d->consumer, j->msg);
    gjob_free(j);
}

/* err 0: stopping, answered on redelivery. Else its reply topic cannot take
 * it: the request goes to the DLQ. */
static void on_terminal_failed(const char *topic, int err, const char *reason, void *arg)
{
    gjob_t *j = arg;
    json_object_del(j->d->intake_active, j->request_id);
    if (err) {
        char why[512];
        snprintf(why, sizeof(why), "the guard result cannot be produced to %s: %s", topic,
                 reason);
        gt_dispatcher_dead_letter(j->d, j->d->consumer, j->msg, "guard.result", "publish_failed",
                                  why, j->request_id);
    }
    gjob_free(j);
}

/* The answer to gantry.results and the reply topic, one effect. */
static void send_terminal(gjob_t *j)
{
    const char *reply = json_string_value(json_object_get(j->req, "reply_topic"));
    char tp[128];
    gt_header_t h = {"traceparent", tp};
    /* The request's trace, or a new one when it came without a valid traceparent. */
    gt_trace_ctx_t tc;
    int has_tp = gt_trace_adopt(gt_msg_header(j->msg, "traceparent", tp, sizeof(tp)), &tc,
                                NULL) == 0;
    if (has_tp)
        gt_trace_format(&tc, tp);
    gt_effect_t *e = gt_effect_new(j->d->effects, on_terminal_delivered, on_terminal_failed, j);
    if (!e || gt_result_add(e, j->d->cfg, reply, j->request_id, j->result, &h, has_tp ? 1 : 0) !=
                  0) {
        gt_log(GT_LOG_ERROR, J_CTX(j),
               "out of memory queueing the guard result; it is answered on redelivery");
        if (e)
            gt_effect_abandon(e);
        json_object_del(j->d->intake_active, j->request_id);
        gjob_free(j); /* offset stays undone */
        return;
    }
    gt_effect_seal(e);
}

/* Answers the request without running it: blocked (moderation) or rejected
 * (limits, no permitted provider). No job row: a redelivered copy is checked
 * again and answered the same. */
static void terminal(gjob_t *j, const char *status, const char *code, const char *message,
                     json_t *details)
{
    char at[40];
    json_object_set_new(j->decision, status, details);
    j->result = json_pack("{s:s, s:s, s:s, s:s, s:n, s:{s:i, s:i}, s:{s:s, s:s}, s:O, s:s}",
                          "schema", "gantry.result.v1", "request_id", j->request_id, "tenant_id",
                          j->tenant_id, "status", status, "output", "usage", "prompt_tokens", 0,
                          "completion_tokens", 0, "error", "code", code, "message", message,
                          "guardrails", j->decision, "completed_at",
                          gt_clock_fmt(gt_clock_wall_ms(), at, sizeof(at)));
    gt_log(GT_LOG_INFO, J_CTX(j),
           "guard: %s (%s)", status, code);
    emit(j->d, strcmp(status, "blocked") == 0 ? "guardrail.blocked" : "guardrail.rejected",
         j->request_id, j->tenant_id, json_deep_copy(j->decision));
    send_terminal(j);
}

static const char sql_insert_guard[] =
    "INSERT INTO job_guardrails (request_id, tenant_id, decision, mask, restore, moderate_output)"
    " VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6) ON CONFLICT (request_id) DO NOTHING";

/* Rows whose job never came to be (dead-lettered or rejected after the
 * guard, e.g. by the budget) or finished without the coordinator deleting
 * the row: none may keep a mask for long. */
static const char sql_sweep[] =
    "DELETE FROM job_guardrails g WHERE g.created_at < now() - interval '10 minutes'"
    " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.request_id = g.request_id"
    "                 AND j.status IN ('running', 'completing'))";

static void on_swept(const PGresult *res, const char *err, void *arg)
{
    (void)arg;
    if (err)
        gt_log(GT_LOG_WARN, NULL, "sweeping old guard rows failed: %s", err);
    else if (atol(PQcmdTuples((PGresult *)res)) > 0)
        gt_log(GT_LOG_INFO, NULL, "swept %s guard rows of jobs that ended or never started",
               PQcmdTuples((PGresult *)res));
}

/* At most once a minute, driven by the requests that create rows. */
static void maybe_sweep(gt_dispatcher_t *d)
{
    static int64_t last;
    int64_t now = gt_clock_wall_ms();
    if (now - last < 60000)
        return;
    last = now;
    gt_pg_query(d->pg, sql_sweep, 0, NULL, on_swept, NULL);
}

static void on_guard_stored(const PGresult *res, const char *err, void *arg)
{
    gjob_t *j = arg;
    (void)res;
    if (err) {
        /* Without its row the job could not be restored or show its decision:
         * leave the request undone; it is redelivered and guarded again. */
        gt_log(GT_LOG_ERROR, J_CTX(j),
               "storing the guard decision failed: %s", err);
        json_object_del(j->d->intake_active, j->request_id);
        gjob_free(j);
        return;
    }
    json_t *req = j->req;
    j->req = NULL;
    gt_guard_next next = j->next;
    gt_dispatcher_t *d = j->d;
    gt_msg_t *msg = j->msg;
    gjob_free(j);
    next(d, msg, req);
}

/* Scrubs and reroutes as planned, stores the decision (and the mask), goes on. */
static void apply(gjob_t *j)
{
    const gt_guard_plan_t *p = &j->plan;
    const struct gt_guardrails *gr = j->gr;
    char prov[256];
    json_object_set_new(j->decision, "model", json_string(p->model->name));
    json_object_set_new(j->decision, "provider",
                        json_string(gt_guard_provider_of(p->model, prov, sizeof(prov))));
    json_object_set_new(j->decision, "access", json_string(access_name(p->access)));
    if (p->from) {
        char from[256];
        json_t *rr = json_pack("{s:s, s:s, s:s}", "from_model", p->from->name, "from_provider",
                               gt_guard_provider_of(p->from, from, sizeof(from)), "reason",
                               p->reason);
        json_object_set_new(rr, "to_model", json_string(p->model->name));
        json_object_set_new(j->decision, "rerouted", rr);
        emit(j->d, "guardrail.rerouted", j->request_id, j->tenant_id, json_deep_copy(rr));
        json_object_set_new(j->req, "model", json_string(p->model->name));
    }
    json_t *mask = NULL;
    int restore = 0;
    if (p->scrub) {
        gt_scrub_opts_t o = {.mode = (gt_scrub_mode_t)gr->pii_mode,
                             .types = gr->pii_types,
                             .min_confidence = gr->pii_min_confidence,
                             .key = (const unsigned char *)gr->hash_key,
                             .key_len = gr->hash_key ? strlen(gr->hash_key) : 0,
                             .hash_chars = gr->hash_chars};
        gt_scrub_t *s = gt_scrub_new(&o);
        if (!s) {
            terminal(j, "rejected", "scrub_failed", "the input could not be scrubbed",
                     json_object());
            return;
        }
        const char *fields[] = {"input", "batch"};
        for (int f = 0; f < 2; f++) {
            json_t *v = json_object_get(j->req, fields[f]);
            if (!v)
                continue;
            json_t *clean = gt_scrub_json(s, v);
            if (!clean) {
                gt_scrub_free(s);
                terminal(j, "rejected", "scrub_failed", "the input could not be scrubbed",
                         json_object());
                return;
            }
            json_object_set_new(j->req, fields[f], clean);
        }
        json_t *pii = json_pack("{s:s, s:o, s:I}", "mode", mode_name(gr->pii_mode), "counts",
                                gt_scrub_counts(s), "total", (json_int_t)gt_scrub_total(s));
        json_t *policy_pii = json_object_get(json_object_get(j->req, "policy"), "pii");
        json_t *want = json_object_get(policy_pii, "restore");
        restore = gr->pii_mode == GT_SCRUB_MASK && gt_scrub_total(s) > 0 &&
                  (want ? json_is_true(want) : gr->pii_restore);
        json_object_set_new(pii, "restore", json_boolean(restore));
        json_object_set(j->decision, "pii", pii);
        if (restore)
            mask = json_deep_copy(gt_scrub_mapping(s));
        json_t *ev = json_deep_copy(pii);
        json_object_set_new(ev, "provider", json_string(prov));
        json_object_set_new(ev, "model", json_string(p->model->name));
        emit(j->d, "guardrail.scrubbed", j->request_id, j->tenant_id, ev);
        json_decref(pii);
        gt_scrub_free(s);
    }
    char *dtext = json_dumps(j->decision, JSON_COMPACT);
    char *mtext = mask ? json_dumps(mask, JSON_COMPACT) : NULL;
    json_decref(mask);
    const char *params[] = {j->request_id, j->tenant_id, dtext, mtext,
                            restore ? "true" : "false", gr->moderate_output ? "true" : "false"};
    maybe_sweep(j->d);
    int rc = dtext ? gt_pg_query(j->d->pg, sql_insert_guard, 6, params, on_guard_stored, j) : -1;
    free(dtext);
    free(mtext); /* the only copy outside PostgreSQL; freed, never logged */
    if (rc != 0)
        on_guard_stored(NULL, "cannot send query", j);
}

static void on_input_moderated(const gt_mod_verdict_t *v, void *arg)
{
    gjob_t *j = arg;
    int cat = gt_moderation_flagged(v, j->gr->thresholds);
    json_object_set_new(j->decision, "input_moderation",
                        json_pack("{s:s, s:b}", "source", v->source, "flagged", cat >= 0));
    if (cat >= 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "input blocked by moderation: %s",
                 gt_moderation_category_name(cat));
        terminal(j, "blocked", "blocked", msg,
                 json_pack("{s:s, s:s, s:f, s:s}", "stage", "input", "category",
                           gt_moderation_category_name(cat), "score", v->scores[cat], "source",
                           v->source));
        return;
    }
    apply(j);
}

void gt_guard_intake(gt_dispatcher_t *d, gt_msg_t *msg, json_t *req, gt_guard_next next)
{
    const struct gt_guardrails *gr = gt_guard_rules(d->cfg, req);
    if (!gr) {
        next(d, msg, req);
        return;
    }
    gjob_t *j = calloc(1, sizeof(*j));
    if (!j) {
        next(d, msg, req);
        return;
    }
    j->d = d;
    j->msg = msg;
    if (!gt_msg_header(msg, "traceparent", j->traceparent, sizeof(j->traceparent)))
        j->traceparent[0] = '\0';
    j->req = req;
    j->next = next;
    j->gr = gr;
    j->request_id = strdup(json_string_value(json_object_get(req, "request_id")));
    j->tenant_id = strdup(json_string_value(json_object_get(req, "tenant_id")));
    j->decision = json_object();
    if (gt_guard_plan(d->cfg, gr, req, msg->len, &j->plan) != 0) {
        /* Does not classify: intake dead-letters it with the reason. */
        j->req = NULL;
        gjob_free(j);
        next(d, msg, req);
        return;
    }
    if (j->plan.reject_code) {
        terminal(j, "rejected", j->plan.reject_code, j->plan.reason,
                 json_pack("{s:s}", "code", j->plan.reject_code));
        return;
    }
    if (!gr->moderate_input || !d->moderation) {
        apply(j);
        return;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    collect_text(json_object_get(req, "input"), &text, &len, &cap);
    collect_text(json_object_get(req, "batch"), &text, &len, &cap);
    if (gt_moderation_check(d->moderation, text ? text : "", len, on_input_moderated, j) != 0)
        apply(j); /* out of memory: the keyword list could not even run */
    free(text);
}

/* ---- coordinator ------------------------------------------------------------- */

typedef struct gres {
    gt_dispatcher_t *d;
    char *request_id, *tenant_id;
    json_t *result;          /* borrowed from the coordinator */
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
    json_array_foreach(outs, i, item) {
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
    collect_text(out, (char **)b[0], b[1], b[2]);
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
        emit(g->d, "guardrail.blocked", g->request_id, g->tenant_id, details);
    } else if (mask) {
        /* Moderated while masked, so no personal data reached the moderation
         * endpoint; restored only now. */
        each_output(g->result, restore_one, mask);
        emit(g->d, "guardrail.restored", g->request_id, g->tenant_id,
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
