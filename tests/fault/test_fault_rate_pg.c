/* test_fault_rate_pg.c - faults while a rate limited tenant's requests wait
 * for their bucket: PostgreSQL (a private server) stopped for 10 s, and the
 * dispatcher SIGKILLed. The requests wait, then are served, each once; and no
 * one-second window ever took in more than two bursts plus the rate (the
 * bucket's burst and at most a burst of released requests on their way back:
 * nothing went through unchecked, not while the database was down nor in a
 * rush after it came back). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"

#define REQUESTS 40
#define OUTAGE_MS 10000
#define RPM 120 /* 2 a second */
#define BURST 2

static th_cluster_t cl;

static int waiting(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs") >= 6 &&
           th_sql_long(cl.conninfo, "SELECT count(*) FROM rate_holds WHERE released_at IS NULL") >=
               20;
}

/* REQUESTS requests of tenant lim into a file; their ids. */
static json_t *lim_requests(const char **path)
{
    size_t cap = REQUESTS * 200, off = 0;
    char *text = malloc(cap);
    for (int i = 0; i < REQUESTS; i++)
        off += (size_t)snprintf(text + off, cap - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"lim-%02d\","
                                "\"tenant_id\":\"lim\",\"kind\":\"generate\",\"model\":\"small\","
                                "\"input\":\"hello %d\"}\n",
                                i, i);
    *path = th_tmpfile(".jsonl", text);
    free(text);
    return th_fault_ids_of(*path);
}

/* The most jobs created in any one second (admissions). */
static long most_in_a_second(void)
{
    return th_sql_long(cl.conninfo,
                       "SELECT max(n) FROM (SELECT count(*) OVER (ORDER BY created_at RANGE"
                       " BETWEEN interval '1 s' PRECEDING AND CURRENT ROW) AS n FROM jobs) x");
}

static const char *const limited =
    "{\"dispatcher\": {\"backlog_ms\": 500, \"rate_limits\": {\"release_ms\":"
    " 100, \"tenants\": {\"lim\": {\"requests_per_minute\": 120,"
    " \"burst_requests\": 2}}}}}";

static void test_pg_down_while_waiting(void)
{
    char pgdir[128];
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_private(pgdir, sizeof(pgdir)), 0);
    th_cluster_opts_t o = {
        .latency = "5-20", .workers = 1, .worker_in_flight = 16, .extra_config = limited};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    const char *path;
    json_t *ids = lim_requests(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    CU_ASSERT_FATAL(th_poll(waiting, NULL, 30000));

    CU_ASSERT_EQUAL_FATAL(th_fault_pg_ctl(pgdir, "stop"), 0);
    fprintf(stderr, "  PostgreSQL stopped with requests held; down for %d s\n", OUTAGE_MS / 1000);
    th_fault_hold(OUTAGE_MS);
    CU_ASSERT_EQUAL_FATAL(th_fault_pg_ctl(pgdir, "start"), 0);
    TH_EQ_INT(cl.dispatcher.exited, 0);

    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 1, .timeout_ms = 120000};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status = 'succeeded'"),
              REQUESTS);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM rate_holds"), 0);
    /* The most admitted in any one second (job rows' creation). */
    long most = most_in_a_second();
    long gap = th_sql_long(cl.conninfo, "SELECT (extract(epoch FROM max(d)) * 1000)::bigint FROM"
                                        " (SELECT created_at - lag(created_at) OVER (ORDER BY"
                                        " created_at) AS d FROM jobs) x");
    fprintf(stderr,
            "  at most %ld admitted in a second (bound: 2 x burst %d + %d a second); longest pause "
            "%ld ms (the outage)\n",
            most, BURST, RPM / 60, gap);
    /* Charged at the rate; a released request reaches intake a little later, so
     * a second can see the burst in the bucket plus a burst on its way back. */
    CU_ASSERT(most <= 2 * BURST + RPM / 60);
    CU_ASSERT(gap >= OUTAGE_MS / 2); /* admissions stopped while the database was down */
    json_t *dlq = th_fault_dlq(&cl);
    TH_EQ_INT(json_array_size(dlq), 0);
    json_decref(dlq);
    json_decref(ids);
    th_cluster_stop(&cl);
    th_fault_pg_ctl(pgdir, "stop");
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pgdir);
    CU_ASSERT(system(cmd) == 0);
}

/* The dispatcher SIGKILLed while requests are held: the holds are rows, so
 * its restart serves them; released holds whose produce died with it are
 * released again once stale. */
static void test_dispatcher_killed_while_waiting(void)
{
    th_cluster_opts_t o = {
        .latency = "5-20", .workers = 1, .worker_in_flight = 16, .extra_config = limited};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    const char *path;
    json_t *ids = lim_requests(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_EQUAL_FATAL(th_fault_submit(&cl, path), 0);
    CU_ASSERT_FATAL(th_poll(waiting, NULL, 30000));
    kill(cl.dispatcher.pid, SIGKILL);
    th_proc_stop(&cl.dispatcher, SIGKILL, 5000);
    long held = th_sql_long(cl.conninfo, "SELECT count(*) FROM rate_holds");
    fprintf(stderr, "  dispatcher SIGKILLed with %ld requests held\n", held);
    CU_ASSERT(held >= 20);
    th_fault_hold(2000); /* restarted as systemd would */
    CU_ASSERT_EQUAL_FATAL(th_cluster_start_dispatcher(&cl, &cl.dispatcher, "dispatcher-e2e"), 0);

    th_fault_expect_t e = {.request_ids = ids, .max_usage_events = 0, .timeout_ms = 150000};
    TH_EQ_INT(th_fault_check(&cl, &e), 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status = 'succeeded'"),
              REQUESTS);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM rate_holds"), 0);
    long most = most_in_a_second();
    fprintf(stderr, "  at most %ld admitted in a second (bound: 2 x burst %d + %d a second)\n",
            most, BURST, RPM / 60);
    /* Charged at the rate; a released request reaches intake a little later, so
     * a second can see the burst in the bucket plus a burst on its way back. */
    CU_ASSERT(most <= 2 * BURST + RPM / 60);
    json_t *dlq = th_fault_dlq(&cl);
    TH_EQ_INT(json_array_size(dlq), 0);
    json_decref(dlq);
    json_decref(ids);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"dispatcher SIGKILLed while requests wait on their rate limit",
         test_dispatcher_killed_while_waiting},
        /* last: it points GANTRY_TEST_PGHOST at its own server, then removes it */
        {"PostgreSQL down while requests wait on their rate limit", test_pg_down_while_waiting},
        {NULL, NULL}};
    return th_run("fault rate pg", tests);
}
