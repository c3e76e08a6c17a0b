/* guard_sweep.c - deletes job_guardrails rows (masks) that outlived their
 * job: none may keep a mask for long. */
#include <stdint.h>
#include <stdlib.h>

#include "clock.h"
#include "guard_stage.h"
#include "log.h"

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

void gt_guard_sweep_maybe(gt_dispatcher_t *d)
{
    static int64_t last;
    int64_t now = gt_clock_wall_ms();
    if (now - last < 60000)
        return;
    last = now;
    gt_pg_query(d->pg, sql_sweep, 0, NULL, on_swept, NULL);
}
