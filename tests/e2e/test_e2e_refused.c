/* test_e2e_refused.c - a task result the coordinator cannot apply as sent
 * still ends its task. One that fails its schema, and one whose statement
 * PostgreSQL refuses for good (a trigger the test installs raises), each fail
 * their task with the reason and go to the DLQ; the job ends in its one
 * result, the partition is not left stuck, and a redelivery changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define RID "refused-e2e-1"
#define TASKS "FROM tasks WHERE request_id = '" RID "' AND kind = 'inference'"
#define TR_HEAD "{\"schema\": \"gantry.task-result.v1\", \"request_id\": \"" RID "\","

static th_cluster_t cl;

static int tasks_queued(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) " TASKS " AND status = 'queued'") == 3;
}

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

/* DLQ entries with error code and request_id RID. */
static long dlq_entries(const char *code)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.dlq");
    long n = 0;
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        json_t *v = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *c = json_string_value(json_object_get(json_object_get(v, "error"), "code"));
        const char *r = json_string_value(json_object_get(v, "request_id"));
        n += c && strcmp(c, code) == 0 && r && strcmp(r, RID) == 0;
        json_decref(v);
    }
    json_decref(all);
    return n;
}

static void test_refused_results_end_their_tasks(void)
{
    /* No worker: the test plays the worker's part on gantry.task-results. */
    th_cluster_opts_t o = {.workers = 0};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    const char *req = th_tmpfile(
        ".jsonl", "{\"schema\": \"gantry.request.v1\", \"request_id\": \"" RID
                  "\", \"tenant_id\": \"t1\", \"kind\": \"generate\", \"model\": \"small\","
                  " \"batch\": [\"a\", \"b\", \"c\"]}\n");
    CU_ASSERT_FATAL(th_cluster_submit(&cl, req) == 0);
    CU_ASSERT_FATAL(th_poll(tasks_queued, NULL, 60000));

    const char *bad_schema = TR_HEAD " \"task_id\": \"" RID "/0\", \"tenant_id\": \"t1\","
                                     " \"index\": 0, \"status\": \"exploded\"}";
    /* A failed SQL statement: PostgreSQL raises on this task's update, for good. */
    TH_EQ_INT(th_sql_long(cl.conninfo,
                          "CREATE FUNCTION refuse_task() RETURNS trigger LANGUAGE plpgsql AS $$"
                          " BEGIN IF NEW.provider = 'explode' THEN"
                          " RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$;"
                          " CREATE TRIGGER refuse_task BEFORE UPDATE ON tasks FOR EACH ROW"
                          " EXECUTE FUNCTION refuse_task(); SELECT 1"),
              1);
    const char *refused_by_pg =
        TR_HEAD " \"task_id\": \"" RID "/1\", \"tenant_id\": \"t1\","
                " \"index\": 1, \"status\": \"succeeded\","
                " \"provider\": \"explode\", \"output\": {\"text\": \"x\"}}";
    const char *good = TR_HEAD " \"task_id\": \"" RID "/2\", \"tenant_id\": \"t1\","
                               " \"index\": 2, \"status\": \"succeeded\","
                               " \"output\": {\"text\": \"fine\"}}";
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.task-results", RID, bad_schema) == 0);
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.task-results", RID, refused_by_pg) == 0);
    /* Not JSON at all: it names no task, so it can only be dead-lettered. */
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.task-results", RID, "{not json") == 0);
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.task-results", RID, good) == 0);

    CU_ASSERT_FATAL(th_poll(has_result, NULL, 30000));
    CU_ASSERT(th_poll(results_read, NULL, 30000));
    const char *status = NULL;
    TH_EQ_INT(th_results_for(&cl, RID, &status), 1);
    TH_EQ_STR(status, "failed");
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) " TASKS " AND idx = 0 AND status = 'failed'"
                                       " AND error_code = 'invalid_task_result'"),
              1);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) " TASKS " AND idx = 1 AND status = 'failed'"
                                       " AND error_code = 'persist_failed'"),
              1);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) " TASKS " AND idx = 2"
                                       " AND status = 'succeeded'"),
              1);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id = '" RID
                                       "' AND status = 'failed'"),
              1);
    TH_EQ_INT(dlq_entries("invalid_task_result"), 1);
    TH_EQ_INT(dlq_entries("persist_failed"), 1);
    TH_EQ_INT(th_log_count(&cl, "dispatcher.log", "the task fails in its stead"), 2);

    /* Redelivered (a worker's re-send): the task stays as it is, the entry
     * goes to the DLQ again, no second result. */
    CU_ASSERT_FATAL(th_kafka_produce(cl.bootstrap, "gantry.task-results", RID, bad_schema) == 0);
    CU_ASSERT(th_poll(results_read, NULL, 30000));
    TH_EQ_INT(dlq_entries("invalid_task_result"), 2);
    TH_EQ_INT(th_results_for(&cl, RID, NULL), 1);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) " TASKS " AND status = 'failed'"), 2);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"a refused task result fails its task, the job ends once",
         test_refused_results_end_their_tasks},
        {NULL, NULL},
    };
    int rc = th_run("e2e_refused", tests);
    th_cluster_stop(&cl);
    return rc;
}
