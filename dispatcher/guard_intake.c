/* guard_intake.c - the guard's intake stage: limits, input moderation,
 * privacy-aware routing and PII scrubbing before any task is published; the
 * decision and the mask are stored in job_guardrails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "guard.h"
#include "guard_stage.h"
#include "log.h"
#include "message.h"
#include "moderation.h"
#include "scrub.h"
#include "trace.h"

static const char *mode_name(int mode)
{
    return mode == GT_SCRUB_HASH ? "hash" : mode == GT_SCRUB_REMOVE ? "remove" : "mask";
}

static const char *access_name(gt_access_t a)
{
    return a == GT_ACCESS_RAW ? "raw" : a == GT_ACCESS_SCRUBBED ? "scrubbed" : "none";
}

typedef struct gjob {
    gt_dispatcher_t *d;
    gt_msg_t *msg;
    json_t *req;
    gt_guard_next next;
    const struct gt_guardrails *gr;
    gt_guard_plan_t plan;
    char *request_id, *tenant_id;
    json_t *result;   /* terminal answer being published */
    json_t *decision; /* what the guard did (no values) */
    char *mod_source;
    char traceparent[128]; /* the request's header as received, for log lines */
} gjob_t;

/* Log context of a request in the guard stage. */
#define J_CTX(j)                                                                                   \
    (&(gt_log_ctx_t){                                                                              \
        .request_id = (j)->request_id, .tenant_id = (j)->tenant_id, .trace_id = (j)->traceparent})

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
        snprintf(why, sizeof(why), "the guard result cannot be produced to %s: %s", topic, reason);
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
    int has_tp =
        gt_trace_adopt(gt_msg_header(j->msg, "traceparent", tp, sizeof(tp)), &tc, NULL) == 0;
    if (has_tp)
        gt_trace_format(&tc, tp);
    gt_effect_t *e = gt_effect_new(j->d->effects, on_terminal_delivered, on_terminal_failed, j);
    if (!e ||
        gt_result_add(e, j->d->cfg, reply, j->request_id, j->result, &h, has_tp ? 1 : 0) != 0) {
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
    j->result =
        json_pack("{s:s, s:s, s:s, s:s, s:n, s:{s:i, s:i}, s:{s:s, s:s}, s:O, s:s}", "schema",
                  "gantry.result.v1", "request_id", j->request_id, "tenant_id", j->tenant_id,
                  "status", status, "output", "usage", "prompt_tokens", 0, "completion_tokens", 0,
                  "error", "code", code, "message", message, "guardrails", j->decision,
                  "completed_at", gt_clock_fmt(gt_clock_wall_ms(), at, sizeof(at)));
    gt_log(GT_LOG_INFO, J_CTX(j), "guard: %s (%s)", status, code);
    gt_guard_emit(j->d, strcmp(status, "blocked") == 0 ? "guardrail.blocked" : "guardrail.rejected",
                  j->request_id, j->tenant_id, json_deep_copy(j->decision));
    send_terminal(j);
}

static const char sql_insert_guard[] =
    "INSERT INTO job_guardrails (request_id, tenant_id, decision, mask, restore, moderate_output)"
    " VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6) ON CONFLICT (request_id) DO NOTHING";

static void on_guard_stored(const PGresult *res, const char *err, void *arg)
{
    gjob_t *j = arg;
    (void)res;
    if (err) {
        /* Without its row the job could not be restored or show its decision:
         * leave the request undone; it is redelivered and guarded again. */
        gt_log(GT_LOG_ERROR, J_CTX(j), "storing the guard decision failed: %s", err);
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
        json_t *rr =
            json_pack("{s:s, s:s, s:s}", "from_model", p->from->name, "from_provider",
                      gt_guard_provider_of(p->from, from, sizeof(from)), "reason", p->reason);
        json_object_set_new(rr, "to_model", json_string(p->model->name));
        json_object_set_new(j->decision, "rerouted", rr);
        gt_guard_emit(j->d, "guardrail.rerouted", j->request_id, j->tenant_id, json_deep_copy(rr));
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
        gt_guard_emit(j->d, "guardrail.scrubbed", j->request_id, j->tenant_id, ev);
        json_decref(pii);
        gt_scrub_free(s);
    }
    char *dtext = json_dumps(j->decision, JSON_COMPACT);
    char *mtext = mask ? json_dumps(mask, JSON_COMPACT) : NULL;
    json_decref(mask);
    const char *params[] = {j->request_id,
                            j->tenant_id,
                            dtext,
                            mtext,
                            restore ? "true" : "false",
                            gr->moderate_output ? "true" : "false"};
    gt_guard_sweep_maybe(j->d);
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
    gt_guard_collect_text(json_object_get(req, "input"), &text, &len, &cap);
    gt_guard_collect_text(json_object_get(req, "batch"), &text, &len, &cap);
    if (gt_moderation_check(d->moderation, text ? text : "", len, on_input_moderated, j) != 0)
        apply(j); /* out of memory: the keyword list could not even run */
    free(text);
}
