/* test_e2e_rebalance.c - 5,000 requests while the groups change under load:
 * a second worker and a second dispatcher join, then the first worker and the
 * first dispatcher leave on SIGTERM (exit 0), then a third worker joins. Every
 * request gets exactly one result, every succeeded task exactly one usage row,
 * and no allocation is left at HostedAI. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cluster.h"

#define REQUESTS 5000

static th_cluster_t cl;
static long milestone;

static int jobs_ended(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo,
                       "SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')") >=
           milestone;
}

static int all_results(void *arg)
{
    (void)arg;
    milestone = REQUESTS;
    return jobs_ended(NULL) && th_topic_count(cl.bootstrap, "gantry.results") >= REQUESTS;
}

/* The second worker ran tasks and the second dispatcher got partitions: the
 * joins are done. */
static int joined(void *arg)
{
    const char *log = arg;
    if (th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE worker_id = 'worker-e2e-1'"
                                 " AND status = 'succeeded'") < 20)
        return 0;
    FILE *f = fopen(log, "r");
    if (!f)
        return 0;
    char line[8192];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, "kafka consumer: assigned") && !strstr(line, "assigned 0 ");
    fclose(f);
    return found;
}

static void wait_for(long ended)
{
    milestone = ended < REQUESTS ? ended : REQUESTS;
    CU_ASSERT_FATAL(th_poll(jobs_ended, NULL, 120000));
}

static void test_rebalance(void)
{
    /* Workers are the bottleneck (10 in flight, 40-80 ms each, about 170
     * tasks/s each), so the run lasts long enough for the groups to change. */
    th_cluster_opts_t o = {.latency = "40-80", .workers = 1, .worker_in_flight = 10};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    char cmd[1024], path[512];
    snprintf(path, sizeof(path), "%s/requests.jsonl", cl.logdir);
    snprintf(cmd, sizeof(cmd), "%s --count %d --seed 7 > %s 2>/dev/null",
             th_bin("tools/gantry-loadgen"), REQUESTS, path);
    CU_ASSERT_FATAL(system(cmd) == 0);
    int64_t t0 = th_now_ms();
    CU_ASSERT_FATAL(th_cluster_submit(&cl, path) == 0);

    /* Joins: the groups rebalance while work is in flight. */
    wait_for(REQUESTS / 10);
    fprintf(stderr, "  %lld ms: a second worker and a second dispatcher join\n",
            (long long)(th_now_ms() - t0));
    CU_ASSERT_FATAL(th_cluster_add_worker(&cl) == 1);
    th_proc_t d2;
    char log2[512];
    snprintf(log2, sizeof(log2), "%s/dispatcher-2.log", cl.logdir);
    const char *dargv[] = {th_bin("dispatcher/gantry-dispatcher"),
                           "--config",
                           cl.config,
                           "--id",
                           "dispatcher-e2e-2",
                           NULL};
    CU_ASSERT_FATAL(th_proc_start(&d2, dargv, log2) == 0);

    /* Leaves: SIGTERM drains and exits 0; the others take the partitions. */
    CU_ASSERT_FATAL(th_poll(joined, log2, 120000));
    fprintf(stderr, "  %lld ms: worker 0 and the first dispatcher get SIGTERM\n",
            (long long)(th_now_ms() - t0));
    /* Worker 0 gets SIGTERM twice (here and from th_proc_stop), as from an
     * impatient supervisor: the second one aborts the drain or is ignored
     * during the final commit, and it still exits 0. */
    kill(cl.workers[0].pid, SIGTERM);
    int st_d1 = th_proc_stop(&cl.dispatcher, SIGTERM, 60000);
    int st_w0 = th_proc_stop(&cl.workers[0], SIGTERM, 60000);
    fprintf(stderr, "  worker 0: %s %d, first dispatcher: %s %d\n",
            WIFSIGNALED(st_w0) ? "signal" : "exit",
            WIFSIGNALED(st_w0) ? WTERMSIG(st_w0) : WEXITSTATUS(st_w0),
            WIFSIGNALED(st_d1) ? "signal" : "exit",
            WIFSIGNALED(st_d1) ? WTERMSIG(st_d1) : WEXITSTATUS(st_d1));
    CU_ASSERT(st_w0 != -1 && WIFEXITED(st_w0) && WEXITSTATUS(st_w0) == 0);
    CU_ASSERT(st_d1 != -1 && WIFEXITED(st_d1) && WEXITSTATUS(st_d1) == 0);
    cl.dispatcher = d2; /* th_cluster_stop stops this one */

    wait_for(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status IN"
                                      " ('succeeded', 'failed')") +
             REQUESTS / 5);
    fprintf(stderr, "  %lld ms: a third worker joins\n", (long long)(th_now_ms() - t0));
    CU_ASSERT_FATAL(th_cluster_add_worker(&cl) == 2);

    CU_ASSERT_FATAL(th_poll(all_results, NULL, 240000));
    fprintf(stderr, "  %lld ms: %d results\n", (long long)(th_now_ms() - t0), REQUESTS);
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 60000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));

    /* Exactly one result per request; billed once: one usage row per
     * succeeded task, none for a task that did not succeed. */
    th_check_one_result_each(&cl, REQUESTS);
    long rows = th_check_billed_once(&cl);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage u LEFT JOIN tasks t"
                                       " ON t.task_id = u.task_id WHERE t.task_id IS NULL"
                                       " OR t.status <> 'succeeded'"),
              0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs"), REQUESTS);
    fprintf(stderr, "  %ld usage rows, %ld inference calls; tasks per worker:", rows,
            th_mock_stat(&cl, "inference_ok"));
    for (int w = 0; w < 3; w++) {
        char sql[160];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM tasks WHERE worker_id = 'worker-e2e-%d'",
                 w);
        fprintf(stderr, " %ld", th_sql_long(cl.conninfo, sql));
    }
    fprintf(stderr, "\n");
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.workers[1].status, 0);
    TH_EQ_INT(cl.workers[2].status, 0);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"workers and dispatchers join and leave under load", test_rebalance}, {NULL, NULL}};
    return th_run("e2e rebalance", tests);
}
