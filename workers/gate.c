/* gate.c - the worker's start gate in PostgreSQL: a statement decides start /
 * expired / skip for each task and marks it running, so that a cancel made
 * durable before it is seen by every worker (docs/scheduling.md). The tasks
 * of a loop turn share one statement (pgbatch.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate.h"
#include "log.h"
#include "pg.h"
#include "pgbatch.h"

struct gt_gate {
    gt_pg_t *pg;
    gt_pgbatch_t *claims; /* sql_claim_many */
    int closing;          /* gt_gate_free runs: what is answered now is CLOSED */
};

typedef struct gate_req {
    gt_gate_t *g;
    gt_gate_cb cb;
    gt_gate_cancelled_cb ccb;
    void *arg;
    char *task_id, *request_id, *msg_id; /* a claim's, kept for sql_claim alone */
    char limit[24];
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

/* sql_claim for the tasks of many claims ($1: rows i, task_id, request_id,
 * lim, msg; pgbatch.h), each answered as sql_claim would: one row per claim,
 * i, handled, verdict. A task named by an earlier row of the same statement
 * (a second copy) is not handled here: sql_claim alone, after this statement
 * committed, sees the first copy's mark. Tasks are locked in task_id order
 * first, as the dispatcher's statements of many tasks lock them, so that two
 * such statements never deadlock. Each claim's rows are looked up by index
 * (LATERAL, OFFSET 0): json_to_recordset is estimated at 100 rows, and a join
 * planned on that read all of jobs by a seq scan (9 ms at 20,000 jobs). */
static const char sql_claim_many[] =
    "WITH u AS (SELECT * FROM json_to_recordset($1::json)"
    "       AS u(i int, task_id text, request_id text, lim bigint, msg text)),"
    " first AS (SELECT DISTINCT ON (task_id, request_id) * FROM u ORDER BY task_id, request_id, i),"
    " cur AS ("
    "  SELECT f.i, x.task_id, x.request_id, f.msg, x.status,"
    "         (f.lim > 0 AND x.started_at IS NULL"
    "          AND x.created_at < now() - f.lim * interval '1 millisecond') AS late,"
    "         (x.cancelled_at IS NOT NULL OR EXISTS (SELECT 1 FROM job_cancels c"
    "           WHERE c.request_id = x.request_id)) AS cancelled,"
    "         (x.status = 'running' AND f.msg IS NOT NULL AND x.started_msg IS NOT NULL"
    "          AND x.started_msg <> f.msg) AS dup"
    "  FROM first f CROSS JOIN LATERAL ("
    "   SELECT t.task_id, t.request_id, t.status, t.started_at, t.started_msg, j.created_at,"
    "          j.cancelled_at"
    "   FROM tasks t JOIN jobs j ON j.request_id = t.request_id"
    "   WHERE t.task_id = f.task_id AND t.request_id = f.request_id OFFSET 0) x),"
    " go AS (SELECT * FROM cur WHERE NOT dup AND NOT late AND NOT cancelled),"
    " lk AS ("
    "  SELECT t.task_id FROM tasks t JOIN go ON go.task_id = t.task_id"
    "   AND go.request_id = t.request_id"
    "  WHERE t.status IN ('pending', 'queued', 'running') ORDER BY t.task_id FOR UPDATE OF t),"
    " upd AS ("
    "  UPDATE tasks t SET status = 'running',"
    "         started_at = coalesce(t.started_at, clock_timestamp()),"
    "         started_msg = coalesce(go.msg, t.started_msg)"
    "  FROM go WHERE t.task_id = go.task_id AND t.request_id = go.request_id"
    "   AND t.status IN ('pending', 'queued', 'running')"
    "   AND t.task_id = ANY(ARRAY(SELECT task_id FROM lk))"
    "  RETURNING go.i)"
    " SELECT u.i, f.i IS NOT NULL,"
    "  CASE WHEN f.i IS NULL THEN NULL"
    "  WHEN c.i IS NULL OR EXISTS (SELECT 1 FROM upd WHERE upd.i = u.i) THEN 'start'"
    "  WHEN c.dup THEN 'skip'"
    "  WHEN c.cancelled AND c.status IN ('pending', 'queued', 'running') THEN 'cancelled'"
    "  WHEN c.late AND c.status IN ('pending', 'queued') THEN 'expired' ELSE 'skip' END"
    " FROM u LEFT JOIN first f ON f.i = u.i LEFT JOIN cur c ON c.i = u.i ORDER BY u.i";

/* = ANY(ARRAY(...)): an index lookup per running job. IN (SELECT ...) let the
 * generic plan read every cancelled job (3.3 ms a poll in bench/closedloop). */
static const char sql_cancelled[] =
    "SELECT coalesce(json_agg(request_id), '[]') FROM jobs"
    " WHERE cancelled_at IS NOT NULL"
    "  AND request_id = ANY(ARRAY(SELECT json_array_elements_text($1::json)))";

static void on_claimed_many(void *item, const PGresult *res, int row, const char *err);

gt_gate_t *gt_gate_new(uv_loop_t *loop, const gt_config_t *cfg)
{
    if (!cfg->pg_conninfo)
        return NULL;
    gt_gate_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    if (!(g->pg = gt_pg_new(loop, cfg->pg_conninfo)) ||
        !(g->claims = gt_pgbatch_new_rows(&g->pg, sql_claim_many, on_claimed_many))) {
        gt_pg_free(g->pg);
        free(g);
        return NULL;
    }
    return g;
}

static void req_free(gate_req_t *r)
{
    free(r->task_id);
    free(r->request_id);
    free(r->msg_id);
    free(r);
}

/* Answers r with the verdict text s (NULL: START) or err, and frees it. */
static void claim_answer(gate_req_t *r, const char *s, const char *err)
{
    gt_gate_verdict_t v = GT_GATE_START;
    if (r->g->closing || (err && strcmp(err, "closed") == 0)) {
        v = GT_GATE_CLOSED;
    } else if (err) {
        gt_warn("start gate: %s; the task starts ungated", err);
    } else if (s) {
        v = strcmp(s, "expired") == 0     ? GT_GATE_EXPIRED
            : strcmp(s, "cancelled") == 0 ? GT_GATE_CANCELLED
            : strcmp(s, "skip") == 0      ? GT_GATE_SKIP
                                          : GT_GATE_START;
    }
    r->cb(v, r->arg);
    req_free(r);
}

static void on_claim(const PGresult *res, const char *err, void *arg)
{
    claim_answer(arg, !err && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : NULL, err);
}

/* sql_claim for r alone. */
static void claim_one(gate_req_t *r)
{
    const char *params[] = {r->task_id, r->request_id, r->limit, r->msg_id};
    if (gt_pg_query(r->g->pg, sql_claim, 4, params, on_claim, r) != 0)
        claim_answer(r, NULL, r->g->closing ? "closed" : "cannot send query");
}

/* sql_claim_many's answer for r: not handled there (a second copy in the
 * statement), or the statement failed: sql_claim alone. */
static void on_claimed_many(void *item, const PGresult *res, int row, const char *err)
{
    gate_req_t *r = item;
    if (!err && row >= 0 && strcmp(PQgetvalue(res, row, 1), "t") == 0)
        claim_answer(r, PQgetvalue(res, row, 2), NULL);
    else if (r->g->closing || (err && strcmp(err, "closed") == 0))
        claim_answer(r, NULL, "closed");
    else
        claim_one(r);
}

int gt_gate_claim(gt_gate_t *g, const char *task_id, const char *request_id, int64_t max_queue_ms,
                  const char *msg_id, gt_gate_cb cb, void *arg)
{
    gate_req_t *r = calloc(1, sizeof(*r));
    json_t *rows = NULL;
    if (!r || !(r->task_id = strdup(task_id)) || !(r->request_id = strdup(request_id)) ||
        (msg_id && !(r->msg_id = strdup(msg_id))))
        goto fail;
    r->g = g;
    r->cb = cb;
    r->arg = arg;
    snprintf(r->limit, sizeof(r->limit), "%lld", (long long)(max_queue_ms > 0 ? max_queue_ms : 0));
    rows = json_pack("[{s:s, s:s, s:I, s:s?}]", "task_id", task_id, "request_id", request_id, "lim",
                     (json_int_t)(max_queue_ms > 0 ? max_queue_ms : 0), "msg", msg_id);
    if (gt_pgbatch_add(g->claims, r, rows) != 0) /* it took rows either way */
        goto fail;
    return 0;
fail:
    if (r)
        req_free(r);
    return -1;
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
    g->closing = 1;
    gt_pg_t *pg = g->pg;
    g->pg = NULL; /* the batch's later sends fail, answered CLOSED */
    gt_pg_free(pg);
    gt_pgbatch_free(g->claims);
    free(g);
}
