/* guard.h - the guard stage of a job's graph, run by the dispatcher (the
 * trusted side): limits, input moderation, privacy-aware routing and PII
 * scrubbing before any task is published; restore and output moderation
 * before the result is. The mask mapping lives only in PostgreSQL
 * (job_guardrails, migration 004), never on Kafka, in a log or an event.
 * The policy is guard_policy.c (pure); the stages are guard_intake.c and
 * guard_result.c, and guard_sweep.c deletes rows that outlived their job. */
#ifndef GT_GUARD_H
#define GT_GUARD_H

#include <jansson.h>

#include "classify.h"
#include "config.h"
#include "dispatcher.h"

/* What the policy decides for one request, before moderation. */
typedef struct gt_guard_plan {
    const gt_model_t *model; /* the model to run (after any reroute) */
    const gt_model_t *from;  /* the classified model when rerouted, else NULL */
    gt_access_t access;      /* what the chosen model's provider may receive */
    int scrub;               /* inputs are scrubbed before publishing */
    const char *reject_code; /* non-NULL: answer "rejected" with this code */
    char reason[256];        /* why (reroute or rejection) */
} gt_guard_plan_t;

/* The provider name a policy is keyed by: model->provider, or "hostedai/<pool>"
 * for a HostedAI model (the policy also matches plain "hostedai"). */
const char *gt_guard_provider_of(const gt_model_t *m, char *buf, size_t len);
/* What gr lets the provider of m receive. */
gt_access_t gt_guard_access(const struct gt_guardrails *gr, const gt_model_t *m);
/* Estimated input tokens of a request: the largest input's characters / 4,
 * rounded up (a tokenizer-free bound, documented in docs/guardrails.md). */
long long gt_guard_input_tokens(const gt_route_t *route);

/* Decides for req (valid request.v1 of req_bytes bytes) under gr. Returns 0;
 * -1 when the request does not classify (intake reports that itself). */
int gt_guard_plan(const gt_config_t *cfg, const struct gt_guardrails *gr, const json_t *req,
                  size_t req_bytes, gt_guard_plan_t *plan);

/* Whether a request guarded for model from may go to model to instead (a
 * health fallback chosen after the guard): to's provider may receive what
 * the guard produced (raw, or scrubbed input). 1 when no guardrails apply. */
int gt_guard_fallback_ok(const gt_config_t *cfg, const json_t *req, const gt_model_t *from,
                         const gt_model_t *to);

/* Guardrails in force for a request: the tenant's, or defaults when the
 * request's policy.pii.scrub asks for scrubbing; NULL: none. */
const struct gt_guardrails *gt_guard_rules(const gt_config_t *cfg, const json_t *req);

/* Intake: runs the guard on req (owned by the guard from here). Either calls
 * next(d, msg, guarded_req) (ownership passes on) or answers the request
 * itself with a blocked or rejected result, emits the event and marks msg
 * done. The caller has put request_id in d->intake_active; the guard removes
 * it only when it answers itself. */
typedef void (*gt_guard_next)(gt_dispatcher_t *d, gt_msg_t *msg, json_t *req);
void gt_guard_intake(gt_dispatcher_t *d, gt_msg_t *msg, json_t *req, gt_guard_next next);

/* Coordinator: applies the job's guard row to its result (restores masked
 * tokens when asked, moderates the output, records the decisions under
 * "guardrails"), then calls done(NULL, arg). A job without a row is
 * untouched. When the row cannot be read (a permanent SQL error, SQLSTATE
 * first, "closed" while stopping, out of memory) it calls done(err, arg) and
 * the result must not be published: it would go out unmoderated and masked. */
void gt_guard_result(gt_dispatcher_t *d, const char *request_id, json_t *result,
                     void (*done)(const char *err, void *arg), void *arg);
/* Deletes the job's guard row (the mask) once its result is durable. */
void gt_guard_forget(gt_dispatcher_t *d, const char *request_id);

#endif
