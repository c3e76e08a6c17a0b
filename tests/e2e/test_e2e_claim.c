/* test_e2e_claim.c - the coordinator's claim on a job it is finishing. A task
 * result that reaches a dispatcher while another holds the job's claim (its
 * partition moved mid-publish) publishes nothing; a claim whose holder died
 * is taken over by the sweep, with no message to prompt it. The taker looks
 * on Kafka first: a result its dead holder published is not published again
 * (the job is only marked), one it stored but never published is published,
 * the very body stored. A dispatcher restarted under its own id takes its
 * dead incarnation's claims over at once. */
#include <signal.h>
#include <stdio.h>
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

/* The result bodies published for rid, in order (up to max; caller frees
 * each). Returns how many. */
static int result_bodies(const char *rid, char **out, int max)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results");
    int n = 0;
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        const char *k = json_string_value(json_object_get(m, "key"));
        const char *v = json_string_value(json_object_get(m, "value"));
        if (k && v && strcmp(k, rid) == 0 && n < max)
            out[n++] = strdup(v);
    }
    json_decref(all);
    return n;
}

/* The task result the worker published for the request (caller frees). */
static char *task_result(void)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.task-results");
    char *out = NULL;
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        const char *v = json_string_value(json_object_get(m, "value"));
        if (!out && v && strstr(v, "\"" RID "\""))
            out = strdup(v);
    }
    json_decref(all);
    return out;
}

static void test_claims(void)
{
    th_cluster_opts_t o = {.workers = 1,
                           .latency = "5-20",
                           .extra_config = "{\"dispatcher\": {\"claim_timeout_ms\": 2000}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    const char *req =
        th_tmpfile(".jsonl", "{\"schema\": \"gantry.request.v1\", \"request_id\": \"" RID
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
    TH_EQ_INT(
        th_sql_long(
            cl.conninfo,
            "WITH u AS (UPDATE jobs SET status = 'completing', claimed_by = 'dispatcher-other',"
            " claimed_at = now() + interval '1 hour'"
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
    TH_EQ_INT(th_log_count(&cl, "dispatcher.log", "stale claim"), 1);
    /* Its holder had published the result before it died: the taker finds it
     * on gantry.results and only marks the job. One result, never two. */
    TH_EQ_INT(th_log_count(&cl, "dispatcher.log", "published its result before it died"), 1);
    TH_EQ_INT(th_results_for(&cl, RID, &status), 1);
    TH_EQ_STR(status, "succeeded");
    /* Billed once all along: the usage event is keyed by its task. */
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id = '" RID "'"),
              1);
    free(tr);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

#define RID2 "claim-e2e-2"
#define JOB2 "FROM jobs WHERE request_id = '" RID2 "'"

static int has_result2(void *arg)
{
    (void)arg;
    return th_results_for(&cl, RID2, NULL) >= 1;
}

#define RID3 "claim-e2e-3"
#define JOB3 "FROM jobs WHERE request_id = '" RID3 "'"

static int taken_over2(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id IN ('" RID2
                                    "', '" RID3 "') AND status = 'succeeded'") == 2 &&
           th_results_for(&cl, RID3, NULL) >= 1;
}

/* SIGKILLed with two jobs claimed and their results stored, one published
 * (RID2: killed between Kafka's acknowledgement and marking the job), one
 * not (RID3: killed before publishing): restarted under the same --id, the
 * dispatcher takes both claims over at once (claim_timeout_ms is a minute),
 * marks RID2 without publishing it again and publishes RID3's stored body. */
static void test_restart_same_id(void)
{
    th_cluster_opts_t o = {.workers = 1,
                           .latency = "5-20",
                           .extra_config = "{\"dispatcher\": {\"claim_timeout_ms\": 60000}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    const char *req =
        th_tmpfile(".jsonl", "{\"schema\": \"gantry.request.v1\", \"request_id\": \"" RID2
                             "\", \"tenant_id\": \"t1\", \"kind\": \"generate\","
                             " \"model\": \"small\", \"input\": \"claim me again\"}\n");
    CU_ASSERT_FATAL(th_cluster_submit(&cl, req) == 0);
    CU_ASSERT_FATAL(th_poll(has_result2, NULL, 60000));
    th_proc_stop(&cl.dispatcher, SIGKILL, 5000);
    /* The state a SIGKILL between publishing and marking leaves: completing,
     * the result stored, claimed by this id's previous incarnation just now. */
    TH_EQ_INT(th_sql_long(cl.conninfo,
                          "WITH u AS (UPDATE jobs SET status = 'completing', claimed_at = now(),"
                          " claimed_by = 'dispatcher-e2e', claimed_incarnation = 'dead'"
                          " WHERE request_id = '" RID2 "' AND result IS NOT NULL RETURNING 1)"
                          " SELECT count(*) FROM u"),
              1);
    /* RID3: a copy of RID2's job, tasks and stored result under a new id, so
     * that its stored result is on no topic. */
    TH_EQ_INT(th_sql_long(cl.conninfo,
                          "WITH j AS (INSERT INTO jobs SELECT (jsonb_populate_record(NULL::jobs,"
                          "   to_jsonb(j) || jsonb_build_object('request_id', '" RID3 "',"
                          "   'result', jsonb_set(j.result, '{request_id}', '\"" RID3 "\"')))).*"
                          "   FROM jobs j WHERE request_id = '" RID2 "' RETURNING 1),"
                          " t AS (INSERT INTO tasks SELECT (jsonb_populate_record(NULL::tasks,"
                          "   to_jsonb(t) || jsonb_build_object('request_id', '" RID3 "',"
                          "   'task_id', t.task_id || '-3'))).*"
                          "   FROM tasks t WHERE request_id = '" RID2 "' RETURNING 1)"
                          " SELECT (SELECT count(*) FROM j) * 100 + (SELECT count(*) FROM t) / "
                          "   greatest((SELECT count(*) FROM t), 1)"),
              101);
    char log[512];
    snprintf(log, sizeof(log), "%s/dispatcher-2.log", cl.logdir);
    const char *dargv[] = {th_bin("dispatcher/gantry-dispatcher"),
                           "--config",
                           cl.config,
                           "--id",
                           "dispatcher-e2e",
                           NULL};
    int64_t t0 = th_now_ms();
    CU_ASSERT_FATAL(th_proc_start(&cl.dispatcher, dargv, log) == 0);
    CU_ASSERT(th_poll(taken_over2, NULL, 30000));
    int64_t took = th_now_ms() - t0;
    fprintf(stderr, "  restarted dispatcher took its dead incarnation's claim over in %lld ms\n",
            (long long)took);
    CU_ASSERT(took < 20000); /* a third of claim_timeout_ms */
    TH_EQ_INT(th_log_count(&cl, "dispatcher-2.log", "publishing the result stored"), 2);
    TH_EQ_INT(th_log_count(&cl, "dispatcher-2.log", "published its result before it died"), 1);
    char *bodies[4];
    TH_EQ_INT(result_bodies(RID2, bodies, 4), 1); /* not published again */
    free(bodies[0]);
    /* RID3 published once, the very body that was stored. */
    int nb = result_bodies(RID3, bodies, 4);
    TH_EQ_INT(nb, 1);
    json_t *stored = th_sql_column(cl.conninfo, "SELECT result::text " JOB3);
    json_t *a = nb == 1 ? json_loads(bodies[0], 0, NULL) : NULL;
    json_t *b = json_loads(json_string_value(json_array_get(stored, 0)), 0, NULL);
    CU_ASSERT(a && b && json_equal(a, b));
    json_decref(a);
    json_decref(b);
    json_decref(stored);
    for (int i = 0; i < nb; i++)
        free(bodies[i]);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id IN ('" RID2
                                       "', '" RID3 "') AND claimed_incarnation <> 'dead'"),
              2);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"a live claim is left alone; a stale one is taken over", test_claims},
        {"restarted under the same id: its dead self's claim at once, the same body",
         test_restart_same_id},
        {NULL, NULL},
    };
    int rc = th_run("e2e_claim", tests);
    th_cluster_stop(&cl);
    return rc;
}
