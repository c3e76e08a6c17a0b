/* test_e2e_dlq_replay.c - the DLQ runbook on real processes: a request for a model the
 * configuration lacks lands in the DLQ; the operator adds the model, restarts, and replays
 * it with `gantry dlq replay` twice. The request gets exactly one result, one job and one
 * usage row (the dispatcher dedupes by request_id), and no allocation stays outstanding. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cluster.h"

#define RID "replay-e2e-1"

static th_cluster_t cl;

static const char *request_line(void)
{
    return "{\"schema\": \"gantry.request.v1\", \"request_id\": \"" RID "\", \"tenant_id\": \"t1\","
           " \"kind\": \"generate\", \"model\": \"tiny\", \"input\": \"hello again\"}\n";
}

static int dlq_has_entry(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.dlq") >= 1;
}

static int usage_written(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id = '" RID "'") >= 1;
}

static int has_result(void *arg)
{
    (void)arg;
    return th_results_for(&cl, RID, NULL) >= 1;
}

/* The dispatcher's group has committed every message now on the requests topic:
 * both replays were read and acted on. */
static int intake_caught_up(void *arg)
{
    (void)arg;
    return th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.requests");
}

/* Adds models.tiny to the cluster's configuration file, as the operator's fix. */
static int add_tiny_model(void)
{
    json_error_t e;
    json_t *cfg = json_load_file(cl.config, 0, &e);
    json_t *models = json_object_get(cfg, "models");
    if (!models)
        return -1;
    json_object_set_new(models, "tiny",
                        json_pack("{s:s, s:s, s:{s:i, s:i}}", "pool", "pool-a", "lane", "small",
                                  "requirements", "tflops", 1, "vram_mb", 100));
    int rc = json_dump_file(cfg, cl.config, JSON_INDENT(1));
    json_decref(cfg);
    return rc;
}

static int run_gantry(const char *const *args)
{
    const char *argv[16];
    size_t n = 0;
    argv[n++] = th_bin("tools/gantry");
    for (size_t i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    th_proc_t p;
    if (th_proc_start(&p, argv, NULL) != 0)
        return -1;
    char line[512];
    while (th_proc_wait_line(&p, "", line, sizeof(line), 60000) == 0)
        fprintf(stderr, "  | %s\n", line);
    int st = th_proc_stop(&p, 0, 60000);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_replay_after_fix(void)
{
    th_cluster_opts_t o = {.workers = 1, .latency = "5-20"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    const char *req = th_tmpfile(".jsonl", request_line());
    CU_ASSERT_FATAL(th_cluster_submit(&cl, req) == 0);
    CU_ASSERT_FATAL(th_poll(dlq_has_entry, NULL, 60000));
    TH_EQ_INT(th_results_for(&cl, RID, NULL), 0);

    /* The fix: declare the model, restart what reads the configuration. */
    TH_EQ_INT(th_proc_stop(&cl.workers[0], SIGTERM, 30000) >= 0, 1);
    TH_EQ_INT(th_proc_stop(&cl.dispatcher, SIGTERM, 30000) >= 0, 1);
    CU_ASSERT_FATAL(add_tiny_model() == 0);
    char log[512];
    snprintf(log, sizeof(log), "%s/dispatcher-2.log", cl.logdir);
    const char *dargv[] = {th_bin("dispatcher/gantry-dispatcher"),
                           "--config",
                           cl.config,
                           "--id",
                           "dispatcher-e2e-2",
                           NULL};
    CU_ASSERT_FATAL(th_proc_start(&cl.dispatcher, dargv, log) == 0);
    CU_ASSERT_FATAL(th_cluster_add_worker(&cl) >= 0);

    /* Replayed twice: one job, one result, one usage row. */
    const char *replay[] = {"dlq",    "replay",        "--config", cl.config,
                            "--code", "unknown_model", NULL};
    TH_EQ_INT(run_gantry(replay), 0);
    TH_EQ_INT(run_gantry(replay), 0);
    CU_ASSERT_FATAL(th_poll(has_result, NULL, 120000));
    CU_ASSERT(th_poll(intake_caught_up, NULL, 60000));
    CU_ASSERT(th_poll(usage_written, NULL, 60000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));
    const char *status = NULL;
    TH_EQ_INT(th_results_for(&cl, RID, &status), 1);
    TH_EQ_STR(status, "succeeded");
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id = '" RID "'"),
              1);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id = '" RID "'"),
              1);
    /* The DLQ keeps the entry: replay does not consume it. */
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 1);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
    TH_EQ_INT(cl.workers[1].status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"a dead letter replayed twice after the fix runs once", test_replay_after_fix},
        {NULL, NULL},
    };
    int rc = th_run("e2e_dlq_replay", tests);
    th_cluster_stop(&cl);
    return rc;
}
