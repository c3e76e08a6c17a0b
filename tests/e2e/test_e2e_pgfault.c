/* test_e2e_pgfault.c - PostgreSQL errors on the dispatcher's paths, injected
 * with triggers that raise a chosen SQLSTATE: a transient one (57014, 40001,
 * 53100) holds the message undone (no DLQ entry, no result, no mark) until the
 * fault clears, then it completes exactly once; a permanent one dead-letters
 * the message as persist_failed with the SQLSTATE, and nothing is published.
 * Covers budget admission, the coordinator's claim, the guard row read,
 * intake's recovery lookup and the ledger. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

static th_cluster_t cl;

static int exec_sql(const char *sql)
{
    /* The faults' DDL takes the table's lock against the running dispatcher,
     * whose statements may lock the same tables in another order: a
     * deadlock (40P01) PostgreSQL resolves by failing the DDL is tried
     * again, for up to 10 s. */
    PGconn *c = PQconnectdb(cl.conninfo);
    int ok = 0;
    for (int64_t end = th_now_ms() + 10000;;) {
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int again = !ok && state && strcmp(state, "40P01") == 0 && th_now_ms() < end;
        if (!ok && !again)
            fprintf(stderr, "  %s: %s", sql, PQerrorMessage(c));
        PQclear(r);
        if (!again)
            break;
    }
    PQfinish(c);
    return ok ? 0 : -1;
}

/* A BEFORE trigger on table that raises sqlstate for rows matching when. */
static int fault_on(const char *table, const char *events, const char *when, const char *sqlstate)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "CREATE TRIGGER gt_fault BEFORE %s ON %s FOR EACH ROW WHEN (%s)"
             " EXECUTE FUNCTION gt_fault('%s')",
             events, table, when, sqlstate);
    return exec_sql(sql);
}

static int fault_off(const char *table)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP TRIGGER gt_fault ON %s", table);
    return exec_sql(sql);
}

static int submit(const char *rid)
{
    char line[512];
    snprintf(line, sizeof(line),
             "{\"schema\": \"gantry.request.v1\", \"request_id\": \"%s\", \"tenant_id\": \"t1\","
             " \"kind\": \"generate\", \"model\": \"small\", \"input\": \"fault %s\"}\n",
             rid, rid);
    return th_cluster_submit(&cl, th_tmpfile(".jsonl", line));
}

/* DLQ entries for rid; the last one's stage and error message into the buffers. */
static long dlq_for(const char *rid, char *stage, size_t slen, char *msg, size_t mlen)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.dlq");
    long n = 0;
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        json_t *v = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *r = json_string_value(json_object_get(v, "request_id"));
        if (r && strcmp(r, rid) == 0) {
            n++;
            if (stage)
                snprintf(stage, slen, "%s", json_string_value(json_object_get(v, "stage")));
            if (msg)
                snprintf(
                    msg, mlen, "%s %s",
                    json_string_value(json_object_get(json_object_get(v, "error"), "code")),
                    json_string_value(json_object_get(json_object_get(v, "error"), "message")));
        }
        json_decref(v);
    }
    json_decref(all);
    return n;
}

typedef struct logwait {
    const char *needle;
    long above;
} logwait_t;

/* The dispatcher logged needle more than `above` times: the fault is being retried. */
static int logged(void *arg)
{
    logwait_t *w = arg;
    return th_log_count(&cl, "dispatcher.log", w->needle) > w->above;
}

static int one_result(void *arg)
{
    return th_results_for(&cl, arg, NULL) >= 1;
}

static int dead_lettered(void *arg)
{
    return dlq_for(arg, NULL, 0, NULL, 0) >= 1;
}

static int requests_done(void *arg)
{
    (void)arg;
    return th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.requests");
}

static int results_read(void *arg)
{
    (void)arg;
    return th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.task-results");
}

static long job_count(const char *rid, const char *status)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM jobs WHERE request_id = '%s'%s%s%s", rid,
             status ? " AND status = '" : "", status ? status : "", status ? "'" : "");
    return th_sql_long(cl.conninfo, sql);
}

/* Waits for the retries of a transient fault, checks the message is held
 * (not done, not dead-lettered, nothing published unless `published`). */
static void check_held(const char *rid, const char *sqlstate, int (*done)(void *), int published)
{
    char needle[64];
    snprintf(needle, sizeof(needle), "transient error %s", sqlstate);
    logwait_t w = {needle, th_log_count(&cl, "dispatcher.log", needle) + 2};
    CU_ASSERT(th_poll(logged, &w, 30000));
    TH_EQ_INT(th_results_for(&cl, rid, NULL), published);
    TH_EQ_INT(dlq_for(rid, NULL, 0, NULL, 0), 0);
    if (done)
        TH_EQ_INT(done(NULL), 0);
}

static void test_faults(void)
{
    th_cluster_opts_t o = {
        .workers = 1,
        .latency = "5-20",
        .extra_config =
            "{\"dispatcher\": {\"claim_timeout_ms\": 60000},"
            " \"tenants\": {\"t1\": {\"budget\": {\"currency\": \"USD\","
            "   \"monthly_micros\": 1000000000000, \"hard_limit_micros\": 1000000000000,"
            "   \"soft_thresholds_pct\": [90], \"reserve_micros_per_task\": 1}}}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    CU_ASSERT_FATAL(exec_sql("CREATE FUNCTION gt_fault() RETURNS trigger LANGUAGE plpgsql AS $$"
                             " BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = TG_ARGV[0];"
                             " END $$") == 0);
    /* The guard row is read through a view that raises what gt_faults holds
     * (a SELECT fires no trigger). */
    CU_ASSERT_FATAL(exec_sql("CREATE TABLE gt_faults (state text);"
                             " CREATE FUNCTION gt_raise_if() RETURNS bool LANGUAGE plpgsql STABLE"
                             " AS $$ DECLARE s text; BEGIN SELECT state INTO s FROM gt_faults"
                             " LIMIT 1; IF s IS NOT NULL THEN RAISE EXCEPTION 'injected fault'"
                             " USING ERRCODE = s; END IF; RETURN true; END $$;"
                             " ALTER TABLE job_guardrails RENAME TO job_guardrails_t;"
                             " CREATE VIEW job_guardrails AS SELECT * FROM job_guardrails_t"
                             " WHERE gt_raise_if()") == 0);
    char stage[64], msg[512];

    /* Budget admission, statement timeout: held, then admitted once. */
    CU_ASSERT_FATAL(fault_on("budget_periods", "INSERT OR UPDATE", "true", "57014") == 0);
    CU_ASSERT_FATAL(submit("pf-budget-1") == 0);
    check_held("pf-budget-1", "57014", requests_done, 0);
    TH_EQ_INT(job_count("pf-budget-1", NULL), 0);
    CU_ASSERT_FATAL(fault_off("budget_periods") == 0);
    CU_ASSERT(th_poll(one_result, "pf-budget-1", 60000));
    /* Budget admission, permanent (a revoked privilege's SQLSTATE): DLQ, no job. */
    CU_ASSERT_FATAL(fault_on("budget_periods", "INSERT OR UPDATE", "true", "42501") == 0);
    CU_ASSERT_FATAL(submit("pf-budget-2") == 0);
    CU_ASSERT(th_poll(dead_lettered, "pf-budget-2", 30000));
    TH_EQ_INT(dlq_for("pf-budget-2", stage, sizeof(stage), msg, sizeof(msg)), 1);
    TH_EQ_STR(stage, "intake.budget");
    CU_ASSERT(strncmp(msg, "persist_failed 42501: injected fault", 36) == 0);
    TH_EQ_INT(job_count("pf-budget-2", NULL), 0);
    TH_EQ_INT(th_results_for(&cl, "pf-budget-2", NULL), 0);
    CU_ASSERT(th_poll(requests_done, NULL, 30000));
    CU_ASSERT_FATAL(fault_off("budget_periods") == 0);

    /* The claim, serialization failure: the job stays running, the task
     * result undone; once cleared, one result. */
    CU_ASSERT_FATAL(fault_on("jobs", "UPDATE",
                             "NEW.status = 'completing' AND NEW.request_id = 'pf-claim-1'",
                             "40001") == 0);
    CU_ASSERT_FATAL(submit("pf-claim-1") == 0);
    check_held("pf-claim-1", "40001", results_read, 0);
    TH_EQ_INT(job_count("pf-claim-1", "running"), 1);
    CU_ASSERT_FATAL(fault_off("jobs") == 0);
    CU_ASSERT(th_poll(one_result, "pf-claim-1", 60000));
    /* The claim, permanent: dead-lettered with its SQLSTATE, nothing published. */
    CU_ASSERT_FATAL(fault_on("jobs", "UPDATE",
                             "NEW.status = 'completing' AND NEW.request_id = 'pf-claim-2'",
                             "23514") == 0);
    CU_ASSERT_FATAL(submit("pf-claim-2") == 0);
    CU_ASSERT(th_poll(dead_lettered, "pf-claim-2", 60000));
    TH_EQ_INT(dlq_for("pf-claim-2", stage, sizeof(stage), msg, sizeof(msg)), 1);
    TH_EQ_STR(stage, "coordinator.claim");
    CU_ASSERT(strncmp(msg, "persist_failed 23514", 20) == 0);
    TH_EQ_INT(th_results_for(&cl, "pf-claim-2", NULL), 0);
    TH_EQ_INT(job_count("pf-claim-2", "running"), 1);
    CU_ASSERT_FATAL(fault_off("jobs") == 0);

    /* The ledger, disk full: no invalid_usage, the usage arrives once cleared. */
    CU_ASSERT_FATAL(fault_on("usage", "INSERT", "NEW.request_id = 'pf-ledger-1'", "53100") == 0);
    CU_ASSERT_FATAL(submit("pf-ledger-1") == 0);
    CU_ASSERT(th_poll(one_result, "pf-ledger-1", 60000));
    check_held("pf-ledger-1", "53100", NULL, 1);
    TH_EQ_INT(th_group_caught_up(cl.bootstrap, "gantry-ledger", "gantry.usage"), 0);
    TH_EQ_INT(
        th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id = 'pf-ledger-1'"), 0);
    CU_ASSERT_FATAL(fault_off("usage") == 0);
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 30000));
    TH_EQ_INT(
        th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id = 'pf-ledger-1'"), 1);

    /* The guard row read, statement timeout: the result is held (never
     * published unguarded), then published once. The row is first read by
     * the statement that applies the last task result and claims the job,
     * retried whole: the job stays running meanwhile. */
    CU_ASSERT_FATAL(exec_sql("INSERT INTO gt_faults VALUES ('57014')") == 0);
    CU_ASSERT_FATAL(submit("pf-guard-1") == 0);
    check_held("pf-guard-1", "57014", results_read, 0);
    TH_EQ_INT(job_count("pf-guard-1", "running"), 1);
    CU_ASSERT_FATAL(exec_sql("DELETE FROM gt_faults") == 0);
    CU_ASSERT(th_poll(one_result, "pf-guard-1", 60000));
    /* The guard row read, permanent: dead-lettered, nothing published. */
    CU_ASSERT_FATAL(exec_sql("INSERT INTO gt_faults VALUES ('XX000')") == 0);
    CU_ASSERT_FATAL(submit("pf-guard-2") == 0);
    CU_ASSERT(th_poll(dead_lettered, "pf-guard-2", 60000));
    TH_EQ_INT(dlq_for("pf-guard-2", stage, sizeof(stage), msg, sizeof(msg)), 1);
    TH_EQ_STR(stage, "coordinator.guard");
    CU_ASSERT(strncmp(msg, "persist_failed XX000: injected fault", 36) == 0);
    TH_EQ_INT(th_results_for(&cl, "pf-guard-2", NULL), 0);
    CU_ASSERT_FATAL(exec_sql("DELETE FROM gt_faults") == 0);

    /* The recovery lookup of a redelivered request: its array_to_json is
     * shadowed (search_path public first, on new sessions) by one that
     * raises what gt_faults holds. */
    CU_ASSERT_FATAL(submit("pf-recover-1") == 0);
    CU_ASSERT(th_poll(one_result, "pf-recover-1", 60000));
    CU_ASSERT(th_poll(requests_done, NULL, 30000));
    CU_ASSERT_FATAL(
        exec_sql("CREATE FUNCTION public.array_to_json(int[]) RETURNS json LANGUAGE plpgsql"
                 " SET search_path = pg_catalog AS $$ DECLARE s text; BEGIN SELECT state INTO s"
                 " FROM public.gt_faults LIMIT 1; IF s IS NOT NULL THEN RAISE EXCEPTION"
                 " 'injected fault' USING ERRCODE = s; END IF;"
                 " RETURN pg_catalog.array_to_json($1); END $$;"
                 " DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = public,"
                 " pg_catalog', current_database()); END $$") == 0);
    CU_ASSERT(th_sql_long(cl.conninfo, "SELECT count(pg_terminate_backend(pid)) FROM"
                                       " pg_stat_activity WHERE datname = current_database()"
                                       " AND pid <> pg_backend_pid()") >= 1);
    CU_ASSERT_FATAL(exec_sql("INSERT INTO gt_faults VALUES ('57014')") == 0);
    CU_ASSERT_FATAL(submit("pf-recover-1") == 0); /* the redelivered copy */
    check_held("pf-recover-1", "57014", requests_done, 1);
    CU_ASSERT_FATAL(exec_sql("DELETE FROM gt_faults") == 0);
    CU_ASSERT(th_poll(requests_done, NULL, 30000));
    CU_ASSERT_FATAL(exec_sql("INSERT INTO gt_faults VALUES ('XX000')") == 0);
    CU_ASSERT_FATAL(submit("pf-recover-1") == 0);
    CU_ASSERT(th_poll(dead_lettered, "pf-recover-1", 60000));
    TH_EQ_INT(dlq_for("pf-recover-1", stage, sizeof(stage), msg, sizeof(msg)), 1);
    TH_EQ_STR(stage, "intake.recover");
    CU_ASSERT(strncmp(msg, "persist_failed XX000: injected fault", 36) == 0);
    CU_ASSERT_FATAL(exec_sql("DELETE FROM gt_faults") == 0);
    TH_EQ_INT(th_results_for(&cl, "pf-recover-1", NULL), 1);

    /* Exactly once each, and only the four permanent faults dead-lettered. */
    const char *ok[] = {"pf-budget-1", "pf-claim-1", "pf-ledger-1", "pf-guard-1"};
    for (int i = 0; i < 4; i++) {
        const char *status = NULL;
        TH_EQ_INT(th_results_for(&cl, ok[i], &status), 1);
        TH_EQ_STR(status, "succeeded");
        TH_EQ_INT(dlq_for(ok[i], NULL, 0, NULL, 0), 0);
    }
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 4);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"transient SQL errors hold, permanent ones dead-letter (budget, claim, guard, recovery, "
         "ledger)",
         test_faults},
        {NULL, NULL},
    };
    int rc = th_run("e2e_pgfault", tests);
    th_cluster_stop(&cl);
    return rc;
}
