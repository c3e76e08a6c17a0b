/* test_e2e_claim.c - the coordinator's claim on a job it is finishing. A task
 * result that reaches a dispatcher while another holds the job's claim (its
 * partition moved mid-publish) publishes nothing; a claim whose holder died
 * is taken over by the sweep, which publishes the result with no message to
 * prompt it. */
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define RID "claim-e2e-1"
#define JOB "FROM jobs WHERE request_id = '" RID "'"

static th_cluster_t cl;

static int has_result(void *arg)
{
    (void)arg;
    return th_results_for(&cl, RID, NULL) >= 1;
}

static int results_read(void *arg)
{
    (void)arg;
    return th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.task-results");
}

static int taken_over(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) " JOB " AND status = 'succeeded'"
                                    " AND claimed_by = 'dispatcher-e2e'") == 1;
}

/* The task result the worker published for the request (caller frees). */
static char *task_result(void)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.task-results");
    char *out = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(all, i, m) {
        const char *v = json_string_value(json_object_get(m, "value"));
        if (!out && v && strstr(v, "\"" RID "\""))
            out = strdup(v);
    }
    json_decref(all);
    return out;
}

static void test_claims(void)
{
    th_cluster_opts_t o = {.workers = 1, .latency = "5-20",
                           .extra_config = "{\"dispatcher\": {\"claim_timeout_ms\": 2000}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    const char *req = th_tmpfile(".jsonl", "{\"schema\": \"gantry.request.v1\", \"request_id\": \"" RID
                                           "\", \"tenant_id\": \"t1\", \"kind\": \"generate\","
                                           " \"model\": \"small\", \"input\": \"claim me\"}\n");
    CU_ASSERT_FATAL(th_cluster_submit(&cl, req) == 0);
    CU_ASSERT_FATAL(th_poll(has_result, NULL, 60000));
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) " JOB " AND claimed_by = 'dispatcher-e2e'"),
              1);
    char *tr = task_result();
    CU_ASSERT_FATAL(tr != NULL);

    /* Another dispatcher holds a live claim (its clock says it claimed just
     * now): the re-run's duplicate task result is read and publishes nothing. */
    TH_EQ_INT(th_sql_long(cl.conninfo,
                          "WITH u AS (UPDATE jobs SET status = 'completing', claimed_by = 'dispatcher-other',"
                          " claimed_at = now() + interval '1 hour', result = NULL"
                          " WHERE request_id = '" RID "' RETURNING 1) SELECT count(*) FROM u"),
              1);
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.task-results", RID, tr) == 0);
    CU_ASSERT(th_poll(results_read, NULL, 30000));
    TH_EQ_INT(th_log_count(&cl, "dispatcher.log", "being finished by dispatcher-other"), 1);
    TH_EQ_INT(th_results_for(&cl, RID, NULL), 1);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) " JOB " AND status = 'completing'"
                                       " AND claimed_by = 'dispatcher-other'"),
              1);

    /* That dispatcher died before publishing: once its claim is older than
     * claim_timeout_ms the sweep finishes the job, with no message to prompt it. */
    TH_EQ_INT(th_sql_long(cl.conninfo,
                          "WITH u AS (UPDATE jobs SET claimed_at = now() - interval '1 second'"
                          " WHERE request_id = '" RID "' RETURNING 1) SELECT count(*) FROM u"),
              1);
    CU_ASSERT(th_poll(taken_over, NULL, 30000));
    const char *status = NULL;
    TH_EQ_INT(th_results_for(&cl, RID, &status), 2);
    TH_EQ_STR(status, "succeeded");
    TH_EQ_INT(th_log_count(&cl, "dispatcher.log", "stale claim"), 1);
    /* Billed once all along: the usage event is keyed by its task. */
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id = '" RID "'"),
              1);
    free(tr);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"a live claim is left alone; a stale one is taken over", test_claims},
        {NULL, NULL},
    };
    int rc = th_run("e2e_claim", tests);
    th_cluster_stop(&cl);
    return rc;
}
