/* test_e2e_budget.c - budget admission with two dispatchers: a tenant with a
 * hard limit sends 1,000 requests; its billed total stays within the limit
 * plus the work in flight, every request past it is answered
 * rejected/budget_exceeded, and each soft threshold is announced once. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define REQUESTS 1000
#define TASK_MICROS 1000   /* the price: 1000 micro-USD per request, nothing else */
#define HARD_MICROS 100000 /* room for 100 requests */
#define IN_FLIGHT 64       /* the worker's slots: the most work that can be running */

static th_cluster_t cl;
static th_proc_t second;

static int results_in(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= REQUESTS;
}

static long succeeded;

static int usage_caught_up(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE tenant_id = 'budgeted'") >=
               succeeded &&
           th_sql_long(cl.conninfo,
                       "SELECT count(*) FROM jobs WHERE status IN ('running', 'completing')") == 0;
}

/* The cluster's configuration plus the tenant's budget. */
static const char *budget_config(void)
{
    json_t *cfg = json_load_file(cl.config, 0, NULL);
    CU_ASSERT_FATAL(cfg != NULL);
    json_object_set_new(cfg, "tenants",
                        json_pack("{s:{s:{s:s, s:I, s:I, s:[i, i], s:I}}}", "budgeted", "budget",
                                  "currency", "USD", "monthly_micros", (json_int_t)HARD_MICROS,
                                  "hard_limit_micros", (json_int_t)HARD_MICROS,
                                  "soft_thresholds_pct", 50, 80, "reserve_micros_per_task",
                                  (json_int_t)TASK_MICROS));
    char *text = json_dumps(cfg, JSON_INDENT(1));
    const char *path = th_tmpfile(".json", text);
    free(text);
    json_decref(cfg);
    return path;
}

static const char *requests_file(void)
{
    size_t cap = REQUESTS * 160, off = 0;
    char *text = malloc(cap);
    for (int i = 0; i < REQUESTS; i++)
        off += (size_t)snprintf(text + off, cap - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"bud-%04d\","
                                "\"tenant_id\":\"budgeted\",\"kind\":\"generate\","
                                "\"model\":\"small\",\"input\":\"hello %d\"}\n",
                                i, i);
    const char *path = th_tmpfile(".jsonl", text);
    free(text);
    return path;
}

static void test_hard_limit_two_dispatchers(void)
{
    th_cluster_opts_t o = {.workers = 1, .worker_in_flight = IN_FLIGHT, .latency = "5-20"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    /* replace the cluster's dispatcher by two that know the budget */
    th_proc_stop(&cl.dispatcher, SIGTERM, 30000);
    memset(&cl.dispatcher, 0, sizeof(cl.dispatcher));
    TH_EQ_INT(th_sql_long(cl.conninfo,
                          "SELECT count(*) FROM (SELECT billing_load_price('{\"provider\":"
                          "\"hostedai\",\"model\":\"small\",\"currency\":\"USD\","
                          "\"effective_from\":\"2020-01-01T00:00:00Z\",\"request_micros\":1000}',"
                          " 'e2e')) x"),
              1);
    const char *cfg = budget_config();
    char log1[512], log2[512];
    snprintf(log1, sizeof(log1), "%s/dispatcher-1.log", cl.logdir);
    snprintf(log2, sizeof(log2), "%s/dispatcher-2.log", cl.logdir);
    const char *d1[] = {th_bin("dispatcher/gantry-dispatcher"),
                        "--config",
                        cfg,
                        "--id",
                        "dispatcher-budget-1",
                        NULL};
    const char *d2[] = {th_bin("dispatcher/gantry-dispatcher"),
                        "--config",
                        cfg,
                        "--id",
                        "dispatcher-budget-2",
                        NULL};
    CU_ASSERT_FATAL(th_proc_start(&cl.dispatcher, d1, log1) == 0);
    CU_ASSERT_FATAL(th_proc_start(&second, d2, log2) == 0);

    CU_ASSERT_FATAL(th_cluster_submit(&cl, requests_file()) == 0);
    CU_ASSERT_FATAL(th_poll(results_in, NULL, 240000));

    json_t *results = th_kafka_read_all(cl.bootstrap, "gantry.results");
    json_t *seen = json_object();
    long rejected = 0, other = 0;
    size_t i;
    json_t *m;
    json_array_foreach (results, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *status = json_string_value(json_object_get(r, "status"));
        const char *code = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
        json_object_set_new(seen, json_string_value(json_object_get(r, "request_id")), json_true());
        if (status && strcmp(status, "succeeded") == 0)
            succeeded++;
        else if (status && strcmp(status, "rejected") == 0 && code &&
                 strcmp(code, "budget_exceeded") == 0)
            rejected++;
        else {
            other++;
            fprintf(stderr, "  unexpected result: %s\n",
                    json_string_value(json_object_get(m, "value")));
        }
        json_decref(r);
    }
    fprintf(stderr, "  %ld succeeded, %ld rejected (budget_exceeded), %ld other\n", succeeded,
            rejected, other);
    TH_EQ_INT(json_object_size(seen), REQUESTS);   /* every request answered */
    TH_EQ_INT(json_array_size(results), REQUESTS); /* once */
    TH_EQ_INT(other, 0);
    CU_ASSERT(succeeded >= HARD_MICROS / TASK_MICROS / 2);
    CU_ASSERT(rejected >= REQUESTS - (HARD_MICROS / TASK_MICROS + IN_FLIGHT));

    CU_ASSERT(th_poll(usage_caught_up, NULL, 60000));
    long billed = th_sql_long(cl.conninfo, "SELECT coalesce(sum(cost_micros), 0) FROM usage"
                                           " WHERE tenant_id = 'budgeted'");
    long spent = th_sql_long(cl.conninfo, "SELECT spent_micros FROM budget_periods"
                                          " WHERE tenant_id = 'budgeted'");
    fprintf(stderr, "  billed %ld micros for a hard limit of %d (+%d in flight allowed)\n", billed,
            HARD_MICROS, IN_FLIGHT * TASK_MICROS);
    TH_EQ_INT(billed, succeeded * TASK_MICROS);
    TH_EQ_INT(spent, billed);
    CU_ASSERT(billed <= HARD_MICROS + IN_FLIGHT * TASK_MICROS);
    /* nothing stays reserved once every job ended */
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT reserved_micros FROM budget_periods"
                                       " WHERE tenant_id = 'budgeted'"),
              0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT rejected FROM budget_periods"
                                       " WHERE tenant_id = 'budgeted'"),
              rejected);

    /* each soft threshold announced once, though two dispatchers saw it */
    json_t *events = th_kafka_read_all(cl.bootstrap, "gantry.events");
    long warnings = 0;
    json_array_foreach (events, i, m) {
        json_t *e = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *type = json_string_value(json_object_get(e, "type"));
        warnings += type && strcmp(type, "budget.warning") == 0;
        json_decref(e);
    }
    TH_EQ_INT(warnings, 2);
    json_decref(events);
    json_decref(results);
    json_decref(seen);
    th_proc_stop(&second, SIGTERM, 30000);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"hard limit holds across two dispatchers", test_hard_limit_two_dispatchers},
        {NULL, NULL},
    };
    return th_run("e2e_budget", tests);
}
