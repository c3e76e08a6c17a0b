/* cancel.c - cancellation from the control topic (gantry.control.v1, type
 * cancel): the job's tasks not started are marked cancelled in PostgreSQL
 * (workers' start gate then never starts them), running ones are aborted by
 * their workers, and the job's result is `cancelled` with what finished
 * (docs/scheduling.md). Every cancel is answered by a cancel.* event. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatcher.h"
#include "json_text.h"
#include "log.h"
#include "message.h"

typedef struct cancel {
    gt_dispatcher_t *d;
    gt_msg_t *msg;
    char *request_id;
    char *reason;
    PGresult *job; /* the job's row for gt_coordinator_finish, when nothing is left open */
} cancel_t;

/* $1 request_id, $2 reason. Marks the job cancelled (once: a redelivered
 * cancel changes nothing) and its inference tasks that have not started
 * cancelled, each with the task result the gather step reads. Row locks
 * order it against the workers' start gate (workers/gate.c): a task the gate
 * marked running first stays running (its worker aborts it); one the cancel
 * reached first never starts. Returns the job's status before, and how many
 * tasks it cancelled; no row for an unknown request, which is kept in
 * job_cancels: a job stored later under it is cancelled by the start gate. */
static const char sql_cancel[] =
    "WITH j AS (SELECT request_id, status FROM jobs WHERE request_id = $1 FOR UPDATE),"
    " c AS ("
    "  UPDATE jobs SET cancelled_at = coalesce(cancelled_at, clock_timestamp()),"
    "         cancel_reason = coalesce(cancel_reason, $2)"
    "  WHERE request_id = $1 AND status = 'running' RETURNING request_id),"
    " t AS ("
    "  UPDATE tasks SET status = 'cancelled', completed_at = now(), error_code = 'cancelled',"
    "         error_message = 'cancelled before it started',"
    "         result = jsonb_build_object('schema', 'gantry.task-result.v1', 'task_id', task_id,"
    "           'request_id', request_id, 'index', idx, 'status', 'cancelled', 'output', NULL,"
    "           'error', jsonb_build_object('code', 'cancelled',"
    "             'message', 'cancelled before it started'), 'attempts', '[]'::jsonb)"
    "  WHERE request_id IN (SELECT request_id FROM c) AND kind = 'inference'"
    "   AND status IN ('pending', 'queued') RETURNING 1),"
    " e AS (INSERT INTO job_cancels (request_id, reason) SELECT $1, $2"
    "  WHERE NOT EXISTS (SELECT 1 FROM j) ON CONFLICT (request_id) DO NOTHING)"
    " SELECT j.status, (SELECT count(*) FROM t) FROM j";

/* After the cancel committed (a new snapshot): the job's open tasks and its
 * columns as gt_coordinator_finish reads them. */
static const char sql_open[] =
    "SELECT (SELECT count(*) FROM tasks t WHERE t.request_id = j.request_id"
    "         AND t.kind = 'inference' AND t.status IN ('pending', 'queued', 'running')),"
    "       request_id, tenant_id, batch, reply_topic,"
    "       (extract(epoch FROM created_at) * 1000)::bigint, traceparent, status"
    " FROM jobs j WHERE request_id = $1";

static void cancel_free(cancel_t *k)
{
    if (k->job)
        PQclear(k->job);
    free(k->request_id);
    free(k->reason);
    free(k);
}

/* The answer is durable: finish the job now if nothing of it runs any more
 * (else its last running task's result finishes it). */
static void on_event_durable(void *arg)
{
    cancel_t *k = arg;
    if (k->job) {
        gt_coordinator_finish(k->d, k->msg, k->job, 0, 1); /* marks msg done */
    } else {
        gt_consumer_done(k->d->consumer, k->msg);
    }
    cancel_free(k);
}

/* err 0: stopping, the cancel is redelivered (it is idempotent). */
static void on_event_failed(const char *topic, int err, const char *reason, void *arg)
{
    cancel_t *k = arg;
    if (err)
        gt_dispatcher_dead_letter(k->d, k->d->consumer, k->msg, "control.answer", "publish_failed",
                                  reason, k->request_id);
    (void)topic;
    cancel_free(k);
}

/* Publishes the cancel.<type> event (data stolen), then on_event_durable. */
static void answer(cancel_t *k, const char *type, json_t *data)
{
    char event_id[512];
    /* Deterministic: a redelivered cancel answers with the same event_id. */
    snprintf(event_id, sizeof(event_id), "%s:%.300s:%d:%lld", type, k->request_id,
             (int)k->msg->partition, (long long)k->msg->offset);
    json_object_set_new(data, "request_id", json_string(k->request_id));
    if (k->reason)
        json_object_set_new(data, "reason", json_string(k->reason));
    json_t *ev = gt_event_build(type, k->d->id, event_id, data);
    gt_effect_t *e = gt_effect_new(k->d->effects, on_event_durable, on_event_failed, k);
    if (!ev || !e ||
        gt_effect_add_json(e, k->d->cfg->topics.events, k->request_id, ev, NULL, 0) != 0) {
        gt_log(GT_LOG_ERROR, &(gt_log_ctx_t){.request_id = k->request_id},
               "out of memory answering a cancel: left undone");
        if (e)
            gt_effect_abandon(e);
        json_decref(ev);
        cancel_free(k);
        return;
    }
    json_decref(ev);
    gt_effect_seal(e);
}

static void on_open(const PGresult *res, const char *err, void *arg)
{
    cancel_t *k = arg;
    if (err || PQntuples(res) != 1) {
        gt_dispatcher_dead_letter(k->d, k->d->consumer, k->msg, "control.cancel", "persist_failed",
                                  err ? err : "the job vanished", k->request_id);
        cancel_free(k);
        return;
    }
    long open = atol(PQgetvalue(res, 0, 0));
    json_t *data = json_pack("{s:I}", "tasks_open", (json_int_t)open);
    if (open == 0 && strcmp(PQgetvalue(res, 0, 7), "running") == 0)
        k->job = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    gt_log(GT_LOG_INFO, &(gt_log_ctx_t){.request_id = k->request_id},
           "cancel accepted: %ld task(s) still running are being aborted", open);
    answer(k, "cancel.accepted", data);
}

static void on_cancelled(const PGresult *res, const char *err, void *arg)
{
    cancel_t *k = arg;
    gt_log_ctx_t ctx = {.request_id = k->request_id};
    if (err) { /* permanent (transient ones were retried), or stopping: never a loop */
        gt_dispatcher_dead_letter(k->d, k->d->consumer, k->msg, "control.cancel", "persist_failed",
                                  err, k->request_id);
        cancel_free(k);
        return;
    }
    if (PQntuples(res) == 0) {
        gt_log(GT_LOG_WARN, &ctx, "cancel of an unknown request");
        answer(k, "cancel.unknown",
               json_pack("{s:s, s:b}", "message",
                         "no job with this request_id (yet): a job taken in later under it is "
                         "cancelled before it runs",
                         "held", 1));
        return;
    }
    const char *status = PQgetvalue(res, 0, 0);
    if (strcmp(status, "running") != 0) {
        gt_log(GT_LOG_INFO, &ctx, "cancel of a job already %s: nothing to do", status);
        answer(k, "cancel.finished",
               json_pack("{s:s, s:s}", "status", status, "message",
                         "the job has finished (or is publishing its result)"));
        return;
    }
    const char *params[] = {k->request_id};
    gt_log(GT_LOG_INFO, &ctx, "cancel: %s task(s) will never start", PQgetvalue(res, 0, 1));
    if (gt_pg_query(k->d->pg_coord, sql_open, 1, params, on_open, k) != 0)
        on_open(NULL, "cannot send query", k);
}

void gt_cancel_handle(gt_dispatcher_t *d, gt_msg_t *msg)
{
    char err[512];
    const char *code = NULL;
    json_t *m = gt_message_parse(msg, d->control_schema, &code, err, sizeof(err));
    if (!m) {
        json_t *loose = msg->value ? gt_json_parse(msg->value, msg->len, 0, NULL) : NULL;
        gt_dispatcher_dead_letter(d, d->consumer, msg, "control.parse",
                                  code ? code : "invalid_json", err,
                                  json_string_value(json_object_get(loose, "request_id")));
        json_decref(loose);
        return;
    }
    cancel_t *k = calloc(1, sizeof(*k));
    const char *reason = json_string_value(json_object_get(m, "reason"));
    if (!k || !(k->request_id = strdup(json_string_value(json_object_get(m, "request_id")))) ||
        (reason && !(k->reason = strdup(reason)))) {
        gt_error("out of memory handling a cancel: left undone");
        if (k)
            cancel_free(k);
        json_decref(m);
        return;
    }
    json_decref(m);
    k->d = d;
    k->msg = msg;
    const char *params[] = {k->request_id, k->reason};
    if (gt_pg_query(d->pg_coord, sql_cancel, 2, params, on_cancelled, k) != 0)
        on_cancelled(NULL, "cannot send query", k);
}
