/* test_e2e_reload.c - SIGHUP reloads the configuration file: a tenant's new
 * budget rejects its next request with budget_exceeded, log.level debug makes
 * debug lines appear, a change that needs a restart is reported as such; a
 * broken file leaves both processes running with the configuration in force. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster.h"

static th_cluster_t cl;
static long want_results;

static int results_in(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= want_results;
}

typedef struct wait_log {
    const char *name, *needle;
    long at_least;
} wait_log_t;

static int log_reached(void *arg)
{
    wait_log_t *w = arg;
    return th_log_count(&cl, w->name, w->needle) >= w->at_least;
}

/* Rewrites the cluster's configuration file in place (the processes reload
 * the path they were started with): tenant acme's hard limit and the level;
 * tenant other is declared so that it is served once tenants are configured. */
static void write_config(long hard_limit, const char *level, int worker_in_flight)
{
    json_t *cfg = json_load_file(cl.config, 0, NULL);
    CU_ASSERT_FATAL(cfg != NULL);
    json_object_set_new(cfg, "tenants",
                        json_pack("{s:{s:{s:s, s:I, s:I, s:I}}, s:{}}", "acme", "budget",
                                  "currency", "USD", "monthly_micros", (json_int_t)1000000000,
                                  "hard_limit_micros", (json_int_t)hard_limit,
                                  "reserve_micros_per_task", (json_int_t)1000, "other"));
    json_object_set_new(json_object_get(cfg, "log"), "level", json_string(level));
    json_object_set_new(json_object_get(cfg, "worker"), "max_in_flight",
                        json_integer(worker_in_flight));
    CU_ASSERT_FATAL(json_dump_file(cfg, cl.config, JSON_INDENT(1)) == 0);
    json_decref(cfg);
}

static void submit(const char *tenant, const char *prefix, int n)
{
    char text[4096];
    size_t off = 0;
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(text + off, sizeof(text) - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"%s-%d\","
                                "\"tenant_id\":\"%s\",\"kind\":\"generate\","
                                "\"model\":\"small\",\"input\":\"hello %d\"}\n",
                                prefix, i, tenant, i);
    CU_ASSERT_FATAL(th_cluster_submit(&cl, th_tmpfile(".jsonl", text)) == 0);
    want_results += n;
    CU_ASSERT_FATAL(th_poll(results_in, NULL, 60000));
}

/* "status/code" of the request's result, e.g. "rejected/budget_exceeded". */
static void result_of(const char *request_id, char *out, size_t len)
{
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results");
    size_t i;
    json_t *m;
    snprintf(out, len, "none");
    json_array_foreach (all, i, m) {
        if (strcmp(json_string_value(json_object_get(m, "key")), request_id) != 0)
            continue;
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *code = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
        snprintf(out, len, "%s/%s", json_string_value(json_object_get(r, "status")),
                 code ? code : "");
        json_decref(r);
    }
    json_decref(all);
}

static int running(th_proc_t *p)
{
    return !p->exited && waitpid(p->pid, &p->status, WNOHANG) == 0;
}

static void sighup_all(void)
{
    kill(cl.dispatcher.pid, SIGHUP);
    kill(cl.workers[0].pid, SIGHUP);
}

static void test_reload(void)
{
    /* A worker with 2 in flight pauses its consumer often: a debug line each time. */
    th_cluster_opts_t o = {.workers = 1, .worker_in_flight = 2, .latency = "20-40"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    /* The processes started with no tenant; this is their first reload. */
    char res[128];
    submit("acme", "before", 5);
    result_of("before-4", res, sizeof(res));
    TH_EQ_STR(res, "succeeded/");
    TH_EQ_INT(th_log_count(&cl, "worker-0.log", "\"level\":\"debug\""), 0);

    /* A budget that admits nothing more, debug logs, and a change that
     * cannot apply while running. */
    write_config(1, "debug", 3);
    sighup_all();
    wait_log_t wd = {"dispatcher.log", "reloaded ", 1}, ww = {"worker-0.log", "reloaded ", 1};
    CU_ASSERT_FATAL(th_poll(log_reached, &wd, 10000));
    CU_ASSERT_FATAL(th_poll(log_reached, &ww, 10000));
    TH_EQ_INT(th_log_count(&cl, "dispatcher.log", "reload: tenants.acme changed: applied"), 1);
    TH_EQ_INT(th_log_count(&cl, "dispatcher.log", "reload: log.level changed: applied"), 1);
    TH_EQ_INT(th_log_count(&cl, "worker-0.log",
                           "reload: worker.max_in_flight changed: needs a restart to take effect"),
              1);
    submit("acme", "after", 1);
    result_of("after-0", res, sizeof(res));
    TH_EQ_STR(res, "rejected/budget_exceeded");
    submit("other", "debug", 5);
    long debug = th_log_count(&cl, "worker-0.log", "\"level\":\"debug\"");
    fprintf(stderr, "  %ld debug line(s) in the worker's log after the reload\n", debug);
    CU_ASSERT(debug > 0);

    /* Broken files: not JSON, then a bad value. Both are refused; the
     * processes keep running with what is in force (the budget still rejects). */
    /* The processes keep reloading this path; the tools (gantry submit) get
     * a copy of the good file. */
    char live[256];
    snprintf(live, sizeof(live), "%s", cl.config);
    json_t *good = json_load_file(live, 0, NULL);
    char *good_text = json_dumps(good, 0);
    snprintf(cl.config, sizeof(cl.config), "%s", th_tmpfile(".json", good_text));
    free(good_text);
    json_decref(good);
    FILE *f = fopen(live, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("{\"kafka\": ", f);
    fclose(f);
    sighup_all();
    wd = (wait_log_t){"dispatcher.log", "failed: the configuration in force is unchanged", 1};
    ww = (wait_log_t){"worker-0.log", "failed: the configuration in force is unchanged", 1};
    CU_ASSERT_FATAL(th_poll(log_reached, &wd, 10000));
    CU_ASSERT_FATAL(th_poll(log_reached, &ww, 10000));
    CU_ASSERT(th_log_count(&cl, "dispatcher.log", "invalid JSON") >= 1);
    CU_ASSERT(running(&cl.dispatcher));
    CU_ASSERT(running(&cl.workers[0]));

    json_t *bad = json_pack("{s:{s:s}, s:{s:s}, s:{s:{s:{s:I}}}}", "kafka", "bootstrap_servers",
                            cl.bootstrap, "postgres", "x", "y", "tenants", "acme", "budget",
                            "hard_limit_micros", (json_int_t)-5);
    CU_ASSERT_FATAL(json_dump_file(bad, live, 0) == 0);
    json_decref(bad);
    kill(cl.dispatcher.pid, SIGHUP);
    wd.at_least = 2;
    CU_ASSERT_FATAL(th_poll(log_reached, &wd, 10000));
    CU_ASSERT(
        th_log_count(&cl, "dispatcher.log", "reload: tenants.acme.budget.hard_limit_micros") >= 1);
    CU_ASSERT(running(&cl.dispatcher));
    submit("acme", "broken", 1);
    result_of("broken-0", res, sizeof(res));
    TH_EQ_STR(res, "rejected/budget_exceeded");

    th_cluster_stop(&cl);
    TH_EQ_INT(cl.workers[0].status, 0);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {{"SIGHUP reloads tenants and log level", test_reload},
                                      {NULL, NULL}};
    return th_run("e2e reload", tests);
}
