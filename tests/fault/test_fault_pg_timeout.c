/* test_fault_pg_timeout.c - a statement timeout of 1 ms injected on the
 * database for 15 s (new connections get it; the services' connections are
 * cut so that they reconnect into it): SQLSTATE 57014 is transient, so no DLQ
 * entry, every request answered, usage complete. */
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#define REQUESTS 1500
#define FAULT_MS 15000

static th_cluster_t cl;

static int some_progress(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'succeeded'") >= 100;
}

/* ALTER DATABASE ... SET applies to new sessions: end the others. Sent from
 * the postgres database, whose new sessions the setting does not touch. */
static int set_timeout(const char *value)
{
    char sql[512], db[128] = "", admin[600];
    const char *p = strstr(cl.conninfo, "dbname=");
    if (p)
        sscanf(p + 7, "%127[^ ]", db);
    snprintf(admin, sizeof(admin), "%.*sdbname=postgres%s", (int)(p ? p - cl.conninfo : 0),
             cl.conninfo, p ? p + 7 + strlen(db) : "");
    if (strcmp(value, "RESET") == 0)
        snprintf(sql, sizeof(sql), "ALTER DATABASE %s RESET statement_timeout", db);
    else
        snprintf(sql, sizeof(sql), "ALTER DATABASE %s SET statement_timeout = '%s'", db, value);
    if (th_fault_sql(admin, sql) != 0)
        return -1;
    snprintf(sql, sizeof(sql),
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE datname = '%s' AND pid <> pg_backend_pid()",
             db);
    return th_fault_sql(admin, sql);
}

static void test_pg_timeout(void)
{
    char path[512];
    th_cluster_opts_t o = {.latency = "50-150", .workers = 2, .worker_in_flight = 32};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    json_t *ids = th_fault_requests(&cl, "requests.jsonl", REQUESTS, 37, path, sizeof(path));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    CU_ASSERT_FATAL(th_poll(some_progress, NULL, 60000));

    CU_ASSERT_EQUAL_FATAL(set_timeout("1ms"), 0);
    fprintf(stderr, "  statement_timeout 1ms for %d s\n", FAULT_MS / 1000);
    th_fault_hold(FAULT_MS);
    CU_ASSERT_EQUAL_FATAL(set_timeout("RESET"), 0);
    TH_EQ_INT(cl.dispatcher.exited, 0);

    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 1};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    json_t *dlq = th_fault_dlq(&cl);
    if (json_array_size(dlq) > 0) {
        char *first = json_dumps(json_object_get(json_array_get(dlq, 0), "entry"), JSON_COMPACT);
        fprintf(stderr, "  %zu DLQ entries, first: %.300s\n", json_array_size(dlq), first);
        free(first);
    }
    TH_EQ_INT(json_array_size(dlq), 0);
    json_decref(dlq);
    json_decref(ids);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {{"statement timeout injected for 15 s", test_pg_timeout},
                                      {NULL, NULL}};
    return th_run("fault pg timeout", tests);
}
