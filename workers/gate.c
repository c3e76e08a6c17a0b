/* gate.c - the worker's start gate in PostgreSQL: one statement per task
 * decides start / expired / skip and marks the task running, so that a cancel
 * made durable before it is seen by every worker (docs/scheduling.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate.h"
#include "log.h"
#include "pg.h"

struct gt_gate {
    gt_pg_t *pg;
};

typedef struct gate_req {
    gt_gate_cb cb;
    gt_gate_cancelled_cb ccb;
    void *arg;
} gate_req_t;

/* $1 task_id, $2 request_id, $3 queue limit in ms (0: none), $4 the Kafka
 * message ("partition:offset", NULL: unknown). A second copy of a task (a
 * release published again after a crash: dispatcher/release.c) finds the task
 * running under another message and is skipped; the same message again (a
 * redelivery after its worker died) starts it again. A task of a
 * cancelled job that the cancel did not mark (the cancel came before the job
 * was stored: job_cancels; or the task was running on a worker that died)
 * answers 'cancelled': reported, never run. Under READ
 * COMMITTED the UPDATE re-reads a row a concurrent cancel changed, so a task
 * the cancel reached first is never marked running. A task already running
 * (redelivered after its worker died) starts again. A task not in the table
 * starts: it is not the scheduler's (sent to the lane by hand). */
static const char sql_claim[] =
    "WITH cur AS ("
    "  SELECT t.status, ($3::bigint > 0 AND t.started_at IS NULL"
    "          AND j.created_at < now() - $3::bigint * interval '1 millisecond') AS late,"
    "         (j.cancelled_at IS NOT NULL OR EXISTS (SELECT 1 FROM job_cancels c"
    "           WHERE c.request_id = t.request_id)) AS cancelled,"
    "         (t.status = 'running' AND $4::text IS NOT NULL AND t.started_msg IS NOT NULL"
    "          AND t.started_msg <> $4) AS dup"
    "  FROM tasks t JOIN jobs j ON j.request_id = t.request_id"
    "  WHERE t.task_id = $1 AND t.request_id = $2),"
    " upd AS ("
    "  UPDATE tasks SET status = 'running', started_at = coalesce(started_at, clock_timestamp()),"
    "         started_msg = coalesce($4, started_msg)"
    "  WHERE task_id = $1 AND request_id = $2 AND status IN ('pending', 'queued', 'running')"
    "   AND NOT coalesce((SELECT dup FROM cur), false)"
    "   AND NOT coalesce((SELECT late FROM cur), false)"
    "   AND NOT coalesce((SELECT cancelled FROM cur), false)"
    "  RETURNING 1)"
    " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM cur) OR EXISTS (SELECT 1 FROM upd) THEN 'start'"
    "  WHEN (SELECT dup FROM cur) THEN 'skip'"
    "  WHEN (SELECT cancelled FROM cur) AND (SELECT status FROM cur)"
    "   IN ('pending', 'queued', 'running') THEN 'cancelled'"
    "  WHEN (SELECT late FROM cur) AND (SELECT status FROM cur) IN ('pending', 'queued')"
    "   THEN 'expired' ELSE 'skip' END";

/* = ANY(ARRAY(...)): an index lookup per running job. IN (SELECT ...) let the
 * generic plan read every cancelled job (3.3 ms a poll in bench/closedloop). */
static const char sql_cancelled[] =
    "SELECT coalesce(json_agg(request_id), '[]') FROM jobs"
    " WHERE cancelled_at IS NOT NULL"
    "  AND request_id = ANY(ARRAY(SELECT json_array_elements_text($1::json)))";

gt_gate_t *gt_gate_new(uv_loop_t *loop, const gt_config_t *cfg)
{
    if (!cfg->pg_conninfo)
        return NULL;
    gt_gate_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    if (!(g->pg = gt_pg_new(loop, cfg->pg_conninfo))) {
        free(g);
        return NULL;
    }
    return g;
}

static void on_claim(const PGresult *res, const char *err, void *arg)
{
    gate_req_t *r = arg;
    gt_gate_verdict_t v = GT_GATE_START;
    if (err && strcmp(err, "closed") == 0) {
        v = GT_GATE_CLOSED;
    } else if (err) {
        gt_warn("start gate: %s; the task starts ungated", err);
    } else if (PQntuples(res) == 1) {
        const char *s = PQgetvalue(res, 0, 0);
        v = strcmp(s, "expired") == 0     ? GT_GATE_EXPIRED
            : strcmp(s, "cancelled") == 0 ? GT_GATE_CANCELLED
            : strcmp(s, "skip") == 0      ? GT_GATE_SKIP
                                          : GT_GATE_START;
    }
    r->cb(v, r->arg);
    free(r);
}

int gt_gate_claim(gt_gate_t *g, const char *task_id, const char *request_id, int64_t max_queue_ms,
                  const char *msg_id, gt_gate_cb cb, void *arg)
{
    gate_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return -1;
    r->cb = cb;
    r->arg = arg;
    char limit[24];
    snprintf(limit, sizeof(limit), "%lld", (long long)(max_queue_ms > 0 ? max_queue_ms : 0));
    const char *params[] = {task_id, request_id, limit, msg_id};
    if (gt_pg_query(g->pg, sql_claim, 4, params, on_claim, r) != 0) {
        free(r);
        return -1;
    }
    return 0;
}

static void on_cancelled(const PGresult *res, const char *err, void *arg)
{
    gate_req_t *r = arg;
    json_t *ids = NULL;
    if (err && strcmp(err, "closed") != 0)
        gt_warn("looking for cancelled jobs: %s", err);
    if (!err && PQntuples(res) == 1)
        ids = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    if (!ids)
        ids = json_array();
    r->ccb(ids, r->arg);
    json_decref(ids);
    free(r);
}

int gt_gate_cancelled(gt_gate_t *g, const json_t *request_ids, gt_gate_cancelled_cb cb, void *arg)
{
    gate_req_t *r = calloc(1, sizeof(*r));
    char *text = json_dumps(request_ids, JSON_COMPACT);
    int rc = -1;
    if (!r || !text)
        goto out;
    r->ccb = cb;
    r->arg = arg;
    const char *params[] = {text};
    if (gt_pg_query(g->pg, sql_cancelled, 1, params, on_cancelled, r) != 0)
        goto out;
    r = NULL;
    rc = 0;
out:
    free(r);
    free(text);
    return rc;
}

void gt_gate_free(gt_gate_t *g)
{
    if (!g)
        return;
    gt_pg_free(g->pg);
    free(g);
}
