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
    gt_pgbatch_t *claims; /* sql_claim */
    int closing;          /* gt_gate_free runs: what is answered now is CLOSED */
};

typedef struct gate_req {
    gt_gate_t *g;
    gt_gate_cb cb;
    gt_gate_cancelled_cb ccb;
    void *arg;
} gate_req_t;

/* Claims tasks to start ($1: rows i, task_id, request_id, lim: queue limit
 * in ms (0: none), msg: the Kafka message "partition:offset" (NULL:
 * unknown); pgbatch.h); one row per claim: i, then the verdict. A second
 * copy of a task (a release published again after a crash:
 * dispatcher/release.c) finds the task running under another message and is
 * skipped; the same message again (a redelivery after its worker died)
 * starts it again. A task of a cancelled job that the cancel did not mark
 * (the cancel came before the job was stored: job_cancels; or the task was
 * running on a worker that died) answers 'cancelled': reported, never run.
 * A task not in the table starts: it is not the scheduler's (sent to the
 * lane by hand).
 *
 * A task named by an earlier row of the same statement gets no row: pgbatch
 * sends it again alone, after this statement committed, and it then sees the
 * first copy's mark. Tasks are locked in task_id order first, as the
 * dispatcher's statements of many tasks lock them, so that two such
 * statements never deadlock. Under READ COMMITTED the lock re-reads a row a
 * concurrent cancel changed and keeps it only if it is still open, so a task
 * the cancel reached first is never marked running; a held row cannot change
 * again, so the UPDATE names the locked rows and nothing else (with the
 * status test as well, PostgreSQL ANDed a bitmap of every open task:
 * tasks_unfinished, 2,000-2,900 entries a statement in bench/closedloop).
 * Each claim's rows are looked up by index (LATERAL, OFFSET 0):
 * json_to_recordset is estimated at 100 rows, and a join planned on that read
 * all of jobs by a seq scan (9 ms at 20,000 jobs). */
static const char sql_claim[] =
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
    "  FROM go WHERE t.task_id = ANY(ARRAY(SELECT task_id FROM lk))"
    "   AND t.task_id = go.task_id AND t.request_id = go.request_id"
    "  RETURNING go.i)"
    " SELECT f.i,"
    "  CASE WHEN c.i IS NULL OR EXISTS (SELECT 1 FROM upd WHERE upd.i = f.i) THEN 'start'"
    "  WHEN c.dup THEN 'skip'"
    "  WHEN c.cancelled AND c.status IN ('pending', 'queued', 'running') THEN 'cancelled'"
    "  WHEN c.late AND c.status IN ('pending', 'queued') THEN 'expired' ELSE 'skip' END"
    " FROM first f LEFT JOIN cur c ON c.i = f.i ORDER BY f.i";

/* = ANY(ARRAY(...)): an index lookup per running job. IN (SELECT ...) let the
 * generic plan read every cancelled job (3.3 ms a poll in bench/closedloop). */
static const char sql_cancelled[] =
    "SELECT coalesce(json_agg(request_id), '[]') FROM jobs"
    " WHERE cancelled_at IS NOT NULL"
    "  AND request_id = ANY(ARRAY(SELECT json_array_elements_text($1::json)))";

static void on_claimed(void *item, const PGresult *res, int row, const char *err);

gt_gate_t *gt_gate_new(uv_loop_t *loop, const gt_config_t *cfg)
{
    if (!cfg->pg_conninfo)
        return NULL;
    gt_gate_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    if (!(g->pg = gt_pg_new(loop, cfg->pg_conninfo)) ||
        !(g->claims = gt_pgbatch_new_rows(&g->pg, sql_claim, on_claimed))) {
        gt_pg_free(g->pg);
        free(g);
        return NULL;
    }
    return g;
}

/* The claim's answer: its verdict, or START ungated on an SQL error (the
 * gate fails open, loudly: gt_pg already retried what was transient), or
 * CLOSED while the gate stops. */
static void on_claimed(void *item, const PGresult *res, int row, const char *err)
{
    gate_req_t *r = item;
    gt_gate_verdict_t v = GT_GATE_START;
    const char *s = !err && row >= 0 ? PQgetvalue(res, row, 1) : NULL;
    if (r->g->closing || (err && strcmp(err, "closed") == 0)) {
        v = GT_GATE_CLOSED;
    } else if (!s) {
        gt_warn("start gate: %s; the task starts ungated", err ? err : "no verdict");
    } else {
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
    r->g = g;
    r->cb = cb;
    r->arg = arg;
    json_t *rows =
        json_pack("[{s:s, s:s, s:I, s:s?}]", "task_id", task_id, "request_id", request_id, "lim",
                  (json_int_t)(max_queue_ms > 0 ? max_queue_ms : 0), "msg", msg_id);
    if (gt_pgbatch_add(g->claims, r, rows) != 0) { /* it took rows either way */
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
    g->closing = 1;
    gt_pg_t *pg = g->pg;
    g->pg = NULL; /* the batch's later sends fail, answered CLOSED */
    gt_pg_free(pg);
    gt_pgbatch_free(g->claims);
    free(g);
}
