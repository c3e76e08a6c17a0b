/* coordinator.c - the dispatcher's coordinator: applies task results to the
 * graph in PostgreSQL and, when a job's last task ends, runs the gather step
 * and publishes the job's one result. A result message's offset is done only
 * once its task row is written (and, if it completed the job, the result is on
 * Kafka and the job is marked). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatcher.h"
#include "graph.h"
#include "guard.h"
#include "log.h"
#include "message.h"
#include "trace.h"

typedef struct coord {
    gt_dispatcher_t *d;
    gt_msg_t *msg;
    json_t *tr;            /* the task result */
    char *request_id;
    char *tenant_id;
    char *reply_topic;     /* NULL: cfg->topics.results */
    int batch;
    int64_t created_ms;
    char *status;          /* final job status */
    json_t *result;        /* final result */
    char traceparent[128]; /* the job's (stored at intake), else the task result's */
    gt_span_t span;        /* coordinator.result, while the result is published */
    int span_open;
} coord_t;

/* Log context of a task result (lines about it carry its ids and trace). */
#define C_CTX(c)                                                                      \
    (&(gt_log_ctx_t){.request_id = (c)->request_id, .tenant_id = (c)->tenant_id,     \
                     .task_id = json_string_value(json_object_get((c)->tr, "task_id")), \
                     .trace_id = (c)->traceparent})

/* Applies the task result (once: terminal rows are never rewritten) and reads
 * the job with how many of its other inference tasks are still open. The
 * CTE's update is invisible to the same statement's reads, hence the
 * task_id <> $1. */
static const char sql_apply[] =
    "WITH upd AS ("
    "  UPDATE tasks SET status = $2, result = $3::jsonb, output = $3::jsonb -> 'output',"
    "         error_code = $4, error_message = $5, attempts = $6, provider = $7, pool = $8,"
    "         worker_id = $9, completed_at = now()"
    "  WHERE task_id = $1 AND request_id = $10 AND status IN ('pending', 'queued')"
    "  RETURNING 1)"
    " SELECT j.status, j.tenant_id, j.batch, j.reply_topic,"
    "        (extract(epoch FROM j.created_at) * 1000)::bigint,"
    "        (SELECT count(*) FROM tasks t WHERE t.request_id = j.request_id"
    "          AND t.kind = 'inference' AND t.status IN ('pending', 'queued')"
    "          AND t.task_id <> $1),"
    "        EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = $1 AND t.request_id = $10),"
    "        (SELECT count(*) FROM upd), j.traceparent"
    " FROM jobs j WHERE j.request_id = $10";

static const char sql_claim[] =
    "WITH claim AS ("
    "  UPDATE jobs SET status = 'completing'"
    "  WHERE request_id = $1 AND status IN ('running', 'completing') RETURNING request_id)"
    " SELECT t.idx, t.result FROM claim c"
    "  JOIN tasks t ON t.request_id = c.request_id AND t.kind = 'inference'"
    " ORDER BY t.idx";

static const char sql_complete[] =
    "WITH g AS ("
    "  UPDATE tasks SET status = 'succeeded', completed_at = now()"
    "  WHERE request_id = $1 AND kind = 'gather' AND status = 'pending')"
    " UPDATE jobs SET status = $2, result = $3::jsonb, completed_at = now()"
    " WHERE request_id = $1 AND status = 'completing'";

static void coord_free(coord_t *c)
{
    if (c->span_open) {
        c->span_open = 0;
        gt_span_end(&c->span, c->status ? NULL : "result not published",
                    json_pack("{s:s, s:s, s:s}", "gantry.request_id", c->request_id,
                              "gantry.tenant_id", c->tenant_id ? c->tenant_id : "",
                              "gantry.status", c->status ? c->status : ""));
    }
    json_decref(c->tr);
    json_decref(c->result);
    free(c->request_id);
    free(c->tenant_id);
    free(c->reply_topic);
    free(c->status);
    free(c);
}

static void coord_finish(coord_t *c)
{
    gt_consumer_done(c->d->consumer, c->msg);
    coord_free(c);
}

static void on_completed(const PGresult *res, const char *err, void *arg)
{
    coord_t *c = arg;
    if (err) /* the result is on Kafka; a job left 'completing' is finished again on redelivery */
        gt_log(GT_LOG_ERROR, C_CTX(c),
               "marking job complete failed: %s", err);
    else if (json_object_get(c->result, "guardrails"))
        gt_guard_forget(c->d, c->request_id); /* the mask is no longer needed */
    json_object_del(c->d->finalizing, c->request_id);
    coord_finish(c);
}

static void send_result(coord_t *c);

static void on_result_delivered(int err, const char *errstr, void *opaque)
{
    coord_t *c = opaque;
    if (err) {
        gt_log(GT_LOG_ERROR, C_CTX(c),
               "result delivery failed, re-sending: %s", errstr);
        send_result(c);
        return;
    }
    c->d->results_published++;
    gt_stats_result(c->status);
    char *text = json_dumps(c->result, JSON_COMPACT);
    const char *params[] = {c->request_id, c->status, text};
    if (!text || gt_pg_query(c->d->pg, sql_complete, 3, params, on_completed, c) != 0)
        on_completed(NULL, "cannot send query", c);
    free(text);
}

static void send_result(coord_t *c)
{
    const char *topic = c->reply_topic ? c->reply_topic : c->d->cfg->topics.results;
    char tp[GT_TRACEPARENT_LEN + 1];
    gt_header_t h = {"traceparent", tp};
    gt_trace_ctx_t parent;
    if (!c->span_open && gt_trace_parse(c->traceparent, &parent) == 0)
        c->span_open =
            gt_span_start(&c->span, &parent, "coordinator.result", GT_SPAN_PRODUCER) == 0;
    int has_tp = c->span_open;
    if (has_tp)
        gt_trace_format(&c->span.ctx, tp);
    if (gt_message_send(c->d->producer, topic, c->request_id, c->result, &h, has_tp ? 1 : 0,
                        on_result_delivered, c) != 0) {
        gt_log(GT_LOG_ERROR, C_CTX(c),
               "cannot queue the result for Kafka; it is published on redelivery");
        json_object_del(c->d->finalizing, c->request_id);
        coord_free(c); /* offset stays undone */
    }
}

/* The guard stage restored or blocked the output and recorded its decisions. */
static void on_guarded(void *arg)
{
    coord_t *c = arg;
    c->status = strdup(json_string_value(json_object_get(c->result, "status")));
    gt_log(GT_LOG_INFO, C_CTX(c),
           "job %s", c->status);
    send_result(c);
}

static void on_claimed(const PGresult *res, const char *err, void *arg)
{
    coord_t *c = arg;
    int n = err ? 0 : PQntuples(res);
    if (err)
        gt_log(GT_LOG_ERROR, C_CTX(c),
               "claiming the job failed: %s", err);
    if (n == 0) { /* another pass finished the job meanwhile */
        json_object_del(c->d->finalizing, c->request_id);
        coord_finish(c);
        return;
    }
    json_t **results = calloc((size_t)n, sizeof(json_t *));
    for (int i = 0; i < n; i++)
        results[i] = PQgetisnull(res, i, 1) ? NULL : json_loads(PQgetvalue(res, i, 1), 0, NULL);
    c->result = gt_graph_result(c->request_id, c->tenant_id, c->batch, results, n, c->created_ms);
    for (int i = 0; i < n; i++)
        json_decref(results[i]);
    free(results);
    gt_guard_result(c->d, c->request_id, c->result, on_guarded, c);
}

static void on_applied(const PGresult *res, const char *err, void *arg)
{
    coord_t *c = arg;
    gt_dispatcher_t *d = c->d;
    if (err || PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 6), "t") != 0) {
        gt_dispatcher_dead_letter(d, d->consumer, c->msg, "coordinator.apply",
                                  err ? "persist_failed" : "unknown_task",
                                  err ? err : "no such task in this request", c->request_id);
        coord_free(c);
        return;
    }
    const char *job_status = PQgetvalue(res, 0, 0);
    c->tenant_id = strdup(PQgetvalue(res, 0, 1));
    c->batch = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    c->reply_topic = PQgetisnull(res, 0, 3) ? NULL : strdup(PQgetvalue(res, 0, 3));
    c->created_ms = atoll(PQgetvalue(res, 0, 4));
    if (!PQgetisnull(res, 0, 8))
        snprintf(c->traceparent, sizeof(c->traceparent), "%s", PQgetvalue(res, 0, 8));
    long open = atol(PQgetvalue(res, 0, 5));
    /* 'completing' left over from a crash is finished again; one in progress
     * here is not. Nor is a 'running' one: a duplicate task result (a task
     * re-run after a rebalance) read 'running' before the first one's claim
     * committed, and claiming again would publish a second result. */
    int finish = open == 0 && !json_object_get(d->finalizing, c->request_id) &&
                 (strcmp(job_status, "running") == 0 || strcmp(job_status, "completing") == 0);
    if (!finish) {
        coord_finish(c);
        return;
    }
    json_object_set_new(d->finalizing, c->request_id, json_true());
    const char *params[] = {c->request_id};
    if (gt_pg_query(d->pg, sql_claim, 1, params, on_claimed, c) != 0)
        on_claimed(NULL, "cannot send query", c);
}

void gt_coordinator_handle(gt_dispatcher_t *d, gt_msg_t *msg)
{
    char err[512];
    const char *code = NULL;
    json_t *tr = gt_message_parse(msg, d->task_result_schema, &code, err, sizeof(err));
    if (!tr) {
        gt_dispatcher_dead_letter(d, d->consumer, msg, "coordinator.parse",
                                  strcmp(code, "invalid_json") == 0 ? code : "invalid_task_result",
                                  err, NULL);
        return;
    }
    coord_t *c = calloc(1, sizeof(*c));
    c->d = d;
    c->msg = msg;
    c->tr = tr;
    c->request_id = strdup(json_string_value(json_object_get(tr, "request_id")));
    if (!gt_msg_header(msg, "traceparent", c->traceparent, sizeof(c->traceparent)))
        c->traceparent[0] = '\0';
    json_t *error = json_object_get(tr, "error");
    char attempts[16], *text = json_dumps(tr, JSON_COMPACT);
    snprintf(attempts, sizeof(attempts), "%zu", json_array_size(json_object_get(tr, "attempts")));
    const char *params[] = {
        json_string_value(json_object_get(tr, "task_id")),
        json_string_value(json_object_get(tr, "status")),
        text,
        json_string_value(json_object_get(error, "code")),
        json_string_value(json_object_get(error, "message")),
        attempts,
        json_string_value(json_object_get(tr, "provider")),
        json_string_value(json_object_get(tr, "pool")),
        json_string_value(json_object_get(tr, "worker_id")),
        c->request_id,
    };
    if (gt_pg_query(d->pg, sql_apply, 10, params, on_applied, c) != 0)
        on_applied(NULL, "cannot send query", c);
    free(text);
}
