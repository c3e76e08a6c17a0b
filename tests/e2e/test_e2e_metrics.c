/* test_e2e_metrics.c - /metrics of a running system against what was sent:
 * 400 requests (some malformed) through a dispatcher and two workers with a
 * mock HostedAI failing 10% of calls; every scrape, during and after the run,
 * must parse under the strict text-format rules, and the counters must equal
 * the results, dead letters, usage rows and allocations seen elsewhere. */
#include <curl/curl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "prom.h"

static th_cluster_t cl;
static char admin_d[64], admin_w[2][64];
static long expected_results;
static prom_t P;
static int scrapes_during_run, bad_scrapes;

/* Scrapes host:port/metrics and checks the text; returns it (caller frees). */
static char *scrape(const char *hostport)
{
    char url[128];
    prom_body_t b = {0};
    snprintf(url, sizeof(url), "http://%s/metrics", hostport);
    long code = prom_get(url, &b);
    TH_EQ_INT(code, 200);
    if (!b.data) /* nothing registered yet: an empty exposition */
        b.data = strdup("");
    if (prom_parse(&P, b.data) < 0) {
        fprintf(stderr, "  %s: unparseable scrape: %s\n", hostport, P.err);
        bad_scrapes++;
    }
    return b.data;
}

static int results_complete(void *arg)
{
    (void)arg;
    /* Scrape the dispatcher and a worker while the run goes on. */
    free(scrape(admin_d));
    free(scrape(admin_w[scrapes_during_run % 2]));
    scrapes_during_run++;
    return th_topic_count(cl.bootstrap, "gantry.results") >= expected_results;
}

static int settled(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM usage") >=
               th_mock_stat(&cl, "inference_ok") &&
           th_sql_long(cl.conninfo,
                       "SELECT count(*) FROM jobs WHERE status IN ('running','completing')") == 0 &&
           th_cluster_released_all(&cl);
}

/* The workers' counters catch up with the tasks' ends a moment after the
 * results: their sum must reach the task results on Kafka. */
static int worker_counts_caught_up(void *arg)
{
    long want = *(long *)arg;
    double n = 0;
    for (int i = 0; i < 2; i++) {
        char *t = scrape(admin_w[i]);
        n += prom_sum(t, "gantry_task_duration_seconds_count", NULL);
        free(t);
    }
    return (long)n >= want;
}

static void test_metrics_match_the_run(void)
{
    th_cluster_opts_t o = {.fail_rate = 0.1,
                           .latency = "5-20",
                           .workers = 2,
                           .extra_config = "{\"admin\": {\"port\": 0}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    CU_ASSERT_EQUAL_FATAL(
        th_proc_wait_line(&cl.dispatcher, "admin=", admin_d, sizeof(admin_d), 30000), 0);
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(
            th_proc_wait_line(&cl.workers[i], "admin=", admin_w[i], sizeof(admin_w[i]), 30000), 0);

    /* Ready: Kafka answers and PostgreSQL is connected (polled: both connect
     * in the background). */
    char url[128];
    prom_body_t b = {0};
    snprintf(url, sizeof(url), "http://%s/ready", admin_d);
    int64_t deadline = th_now_ms() + 30000;
    while (prom_get(url, &b) != 200 && th_now_ms() < deadline)
        ;
    CU_ASSERT(b.data && strstr(b.data, "\"kafka\":{\"ok\":true") &&
              strstr(b.data, "\"postgres\":{\"ok\":true"));
    snprintf(url, sizeof(url), "http://%s/health", admin_w[0]);
    TH_EQ_INT(prom_get(url, &b), 200);
    free(b.data);

    char cmd[1024], path[512];
    snprintf(path, sizeof(path), "%s/requests.jsonl", cl.logdir);
    snprintf(cmd, sizeof(cmd), "%s --count 400 --bad 20 --dup 0 --batch 0 --seed 11 > %s",
             th_bin("tools/gantry-loadgen"), path);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    expected_results = 380;
    CU_ASSERT_EQUAL_FATAL(th_cluster_submit(&cl, path), 0);
    CU_ASSERT_FATAL(th_poll(results_complete, NULL, 180000));
    CU_ASSERT(th_poll(settled, NULL, 60000));

    /* Results by status, from the topic. */
    json_t *results = th_kafka_read_all(cl.bootstrap, "gantry.results");
    json_t *by_status = json_object();
    size_t i;
    json_t *m;
    json_array_foreach (results, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *st = json_string_value(json_object_get(r, "status"));
        json_t *n = json_object_get(by_status, st ? st : "?");
        json_object_set_new(by_status, st ? st : "?",
                            json_integer(n ? json_integer_value(n) + 1 : 1));
        json_decref(r);
    }
    TH_EQ_INT(json_array_size(results), expected_results);
    /* Dead letters by code, from the topic. */
    json_t *dlq = th_kafka_read_all(cl.bootstrap, "gantry.dlq");
    json_t *by_code = json_object();
    json_array_foreach (dlq, i, m) {
        json_t *e = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *code = json_string_value(json_object_get(json_object_get(e, "error"), "code"));
        json_t *n = json_object_get(by_code, code ? code : "?");
        json_object_set_new(by_code, code ? code : "?",
                            json_integer(n ? json_integer_value(n) + 1 : 1));
        json_decref(e);
    }
    TH_EQ_INT(json_array_size(dlq), 20);

    char *d = scrape(admin_d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    const char *k;
    json_t *v;
    json_object_foreach (by_status, k, v) {
        char match[64];
        snprintf(match, sizeof(match), "status=\"%s\"", k);
        double got = prom_sum(d, "gantry_requests_total", match);
        fprintf(stderr, "  requests %s: %lld on Kafka, %.0f in /metrics\n", k,
                (long long)json_integer_value(v), got);
        TH_EQ_INT((long)got, json_integer_value(v));
    }
    TH_EQ_INT((long)prom_sum(d, "gantry_requests_total", NULL), expected_results);
    json_object_foreach (by_code, k, v) {
        char match[64];
        snprintf(match, sizeof(match), "code=\"%s\"", k);
        TH_EQ_INT((long)prom_sum(d, "gantry_dlq_entries_total", match), json_integer_value(v));
    }
    TH_EQ_INT((long)prom_sum(d, "gantry_dlq_entries_total", NULL), 20);
    long rows = th_sql_long(cl.conninfo, "SELECT count(*) FROM usage");
    TH_EQ_INT((long)prom_sum(d, "gantry_usage_rows_written_total", NULL), rows);
    CU_ASSERT(prom_sum(d, "gantry_ledger_batch_duration_seconds_count", NULL) > 0);
    free(d);

    /* Workers: tasks ended equal task results published; allocations equal the
     * mock's; nothing held or in flight at the end. */
    long task_results = th_topic_count(cl.bootstrap, "gantry.task-results");
    CU_ASSERT(th_poll(worker_counts_caught_up, &task_results, 30000));
    double tasks = 0, allocs = 0, outstanding = 0, in_flight = 0, inference = 0, errors = 0,
           retries = 0;
    for (int w = 0; w < 2; w++) {
        char *t = scrape(admin_w[w]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        tasks += prom_sum(t, "gantry_task_duration_seconds_count", NULL);
        allocs += prom_sum(t, "hosted_ai_allocations_total", NULL);
        outstanding += prom_sum(t, "hosted_ai_allocations_outstanding", NULL);
        in_flight += prom_sum(t, "gantry_tasks_in_flight", NULL);
        inference += prom_sum(t, "hosted_ai_inference_duration_seconds_count", NULL);
        errors += prom_sum(t, "hosted_ai_errors_total", NULL);
        retries += prom_sum(t, "gantry_retries_total", NULL);
        free(t);
    }
    fprintf(stderr,
            "  tasks %.0f (task results %ld), allocations %.0f (mock %ld), %d scrapes "
            "during the run\n",
            tasks, task_results, allocs, th_mock_stat(&cl, "allocations_total"),
            scrapes_during_run);
    TH_EQ_INT((long)tasks, task_results);
    TH_EQ_INT((long)allocs, th_mock_stat(&cl, "allocations_total"));
    TH_EQ_INT((long)inference, th_mock_stat(&cl, "inference_ok"));
    TH_EQ_INT((long)outstanding, 0);
    /* 10% injected faults: failed calls counted, and retried. */
    CU_ASSERT(errors > 0);
    CU_ASSERT(retries > 0);
    TH_EQ_INT((long)in_flight, 0);
    CU_ASSERT(scrapes_during_run > 0);
    TH_EQ_INT(bad_scrapes, 0);

    json_decref(results);
    json_decref(by_status);
    json_decref(dlq);
    json_decref(by_code);
    th_cluster_stop(&cl);
}

typedef struct ready_want {
    const char *hostport;
    long code;
    const char *needle; /* in the body, or NULL */
} ready_want_t;

static int ready_is(void *arg)
{
    const ready_want_t *w = arg;
    char url[128];
    prom_body_t b = {0};
    snprintf(url, sizeof(url), "http://%s/ready", w->hostport);
    long code = prom_get(url, &b);
    int ok = code == w->code && (!w->needle || (b.data && strstr(b.data, w->needle)));
    free(b.data);
    return ok;
}

/* /ready of the dispatcher and a worker through a Kafka outage: 503 naming
 * kafka while it is down (/health stays 200: the process is alive), 200 once
 * a Kafka is back on the same bootstrap address. */
static void test_ready_follows_kafka(void)
{
    int port = th_free_port();
    th_cluster_opts_t o = {
        .workers = 1, .kafka_port = port, .extra_config = "{\"admin\": {\"port\": 0}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    char admin[2][64];
    CU_ASSERT_EQUAL_FATAL(th_proc_wait_line(&cl.dispatcher, "admin=", admin[0], 64, 30000), 0);
    CU_ASSERT_EQUAL_FATAL(th_proc_wait_line(&cl.workers[0], "admin=", admin[1], 64, 30000), 0);
    for (int i = 0; i < 2; i++) {
        ready_want_t up = {admin[i], 200, "\"kafka\":{\"ok\":true"};
        CU_ASSERT(th_poll(ready_is, &up, 30000));
    }

    TH_EQ_INT(th_proc_stop(&cl.kafka, SIGTERM, 10000), 0);
    for (int i = 0; i < 2; i++) {
        ready_want_t down = {admin[i], 503, "\"kafka\":{\"ok\":false"};
        CU_ASSERT(th_poll(ready_is, &down, 30000));
        char url[160];
        prom_body_t b = {0};
        snprintf(url, sizeof(url), "http://%s/health", admin[i]);
        TH_EQ_INT(prom_get(url, &b), 200);
        free(b.data);
    }
    /* The dispatcher's PostgreSQL is fine all along: only kafka fails. */
    ready_want_t pg_ok = {admin[0], 503, "\"postgres\":{\"ok\":true"};
    CU_ASSERT(ready_is(&pg_ok));

    CU_ASSERT_EQUAL_FATAL(th_cluster_start_kafka(&cl, port), 0);
    for (int i = 0; i < 2; i++) {
        ready_want_t up = {admin[i], 200, "\"kafka\":{\"ok\":true"};
        CU_ASSERT(th_poll(ready_is, &up, 60000));
    }
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
    TH_EQ_INT(cl.workers[0].status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"/metrics counters equal what the run did", test_metrics_match_the_run},
        {"/ready follows Kafka down and back", test_ready_follows_kafka},
        {NULL, NULL},
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = th_run("e2e_metrics", tests);
    curl_global_cleanup();
    return rc;
}
