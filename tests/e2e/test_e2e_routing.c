/* test_e2e_routing.c - a logical model with three deployments through the
 * whole pipeline (real Kafka, PostgreSQL, mock HostedAI): weighted 1:2:1
 * splits 400 requests within 5 %, each result names the logical model and
 * the deployment that served, and each usage row the deployment; then three
 * mock HostedAI servers of 20, 50 and 200 ms: latency sends >= 80 % of 2,000
 * requests to the fastest; the fastest is killed mid-run (its traffic shifts,
 * through the worker's breaker.opened event, no request is lost: its
 * fallback serves) and started again on its port (it comes back); and
 * cost: three mock HostedAI pools priced 1, 2 and 3 with capacities 20, 40
 * and unbounded get a trickle all on the cheapest, then a burst that fills
 * the cheapest to its capacity (never past it) and spills in price order. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define REQUESTS 400

static th_cluster_t cl;

static const char extra[] =
    "{\"models\": {"
    "  \"multi-a\": {\"pool\": \"pool-a\", \"lane\": \"small\"},"
    "  \"multi-b\": {\"pool\": \"pool-a\", \"lane\": \"small\"},"
    "  \"multi-c\": {\"pool\": \"pool-a\", \"lane\": \"small\"},"
    "  \"multi\": {\"strategy\": \"weighted\", \"deployments\": ["
    "    {\"model\": \"multi-a\", \"weight\": 1}, {\"model\": \"multi-b\", \"weight\": 2},"
    "    {\"model\": \"multi-c\", \"weight\": 1}]}}}";

static int results_in(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= REQUESTS;
}

static int usage_in(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM usage") >= REQUESTS;
}

static void test_weighted_pipeline(void)
{
    th_cluster_opts_t o = {.workers = 1, .worker_in_flight = 64, .extra_config = extra};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    size_t cap = REQUESTS * 200, off = 0;
    char *text = malloc(cap);
    for (int i = 0; i < REQUESTS; i++)
        off += (size_t)snprintf(text + off, cap - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"rt-%04d\","
                                "\"tenant_id\":\"t1\",\"kind\":\"generate\",\"model\":\"multi\","
                                "\"input\":\"route %d\"}\n",
                                i, i);
    CU_ASSERT_FATAL(th_cluster_submit(&cl, th_tmpfile(".jsonl", text)) == 0);
    free(text);
    CU_ASSERT_FATAL(th_poll(results_in, NULL, 240000));
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results");
    long by[3] = {0, 0, 0}, logical = 0;
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *dep = json_string_value(json_object_get(r, "deployment"));
        logical += json_string_value(json_object_get(r, "model")) &&
                   strcmp(json_string_value(json_object_get(r, "model")), "multi") == 0;
        if (dep && strncmp(dep, "multi-", 6) == 0 && dep[6] >= 'a' && dep[6] <= 'c')
            by[dep[6] - 'a']++;
        json_decref(r);
    }
    json_decref(all);
    fprintf(stderr, "  weighted over the pipeline: %ld / %ld / %ld\n", by[0], by[1], by[2]);
    TH_EQ_INT(logical, REQUESTS);
    CU_ASSERT(by[0] >= 95 && by[0] <= 105);
    CU_ASSERT(by[1] >= 190 && by[1] <= 210);
    CU_ASSERT(by[2] >= 95 && by[2] <= 105);
    CU_ASSERT_FATAL(th_poll(usage_in, NULL, 60000));
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE model LIKE 'multi-_'"),
              REQUESTS);
    th_cluster_stop(&cl);
}

static th_proc_t fast, mid;
static char fast_port[16];
static long want;

static int start_mock(th_proc_t *p, const char *port, const char *latency, char *addr, size_t len)
{
    char log[512];
    snprintf(log, sizeof(log), "/tmp/gantry-routing-mock-%s.log", latency);
    const char *argv[] = {th_bin("tools/gantry-mock-hostedai"),
                          "--port",
                          port,
                          "--api-key",
                          "e2e-secret-key",
                          "--latency-ms",
                          latency,
                          "--capacity-tflops",
                          "1000000",
                          "--vram-mb",
                          "1000000000",
                          NULL};
    if (th_proc_start(p, argv, log) != 0)
        return -1;
    return th_proc_wait_line(p, "listening=", addr, len, 10000);
}

static int results_want(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= want;
}

/* Results of ids starting with prefix per deployment names[0..2], and the
 * ones that did not succeed. */
static void by_names(const char *prefix, const char *const names[3], long by[3], long *failed)
{
    by[0] = by[1] = by[2] = 0;
    *failed = 0;
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results");
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *rid = json_string_value(json_object_get(r, "request_id"));
        const char *dep = json_string_value(json_object_get(r, "deployment"));
        if (rid && strncmp(rid, prefix, strlen(prefix)) == 0) {
            if (strcmp(json_string_value(json_object_get(r, "status")), "succeeded") != 0)
                (*failed)++;
            else
                for (int k = 0; k < 3; k++)
                    by[k] += dep && strcmp(dep, names[k]) == 0;
        }
        json_decref(r);
    }
    json_decref(all);
}

/* Per deployment (0 fast, 1 mid, 2 slow). */
static void by_deployment(const char *prefix, long by[3], long *failed)
{
    static const char *const names[3] = {"lat-fast", "lat-mid", "lat-slow"};
    by_names(prefix, names, by, failed);
}

static void submit_model(const char *prefix, int n, const char *model)
{
    size_t cap = (size_t)n * 200, off = 0;
    char *text = malloc(cap);
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(text + off, cap - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"%s-%05d\","
                                "\"tenant_id\":\"t1\",\"kind\":\"generate\",\"model\":\"%s\","
                                "\"input\":\"%s %d\"}\n",
                                prefix, i, model, prefix, i);
    want += n;
    CU_ASSERT_FATAL(th_cluster_submit(&cl, th_tmpfile(".jsonl", text)) == 0);
    free(text);
}

static void submit_n(const char *prefix, int n)
{
    submit_model(prefix, n, "lat");
}

static void test_latency_and_failover(void)
{
    char fast_addr[128], mid_addr[128], extra2[2048];
    CU_ASSERT_FATAL(start_mock(&fast, "0", "20-20", fast_addr, sizeof(fast_addr)) == 0);
    CU_ASSERT_FATAL(start_mock(&mid, "0", "50-50", mid_addr, sizeof(mid_addr)) == 0);
    snprintf(fast_port, sizeof(fast_port), "%s", strrchr(fast_addr, ':') + 1);
    snprintf(
        extra2, sizeof(extra2),
        "{\"pools\": {\"pool-fast\": {\"endpoint\": \"http://%s\", \"api_key\": \"e2e-secret-key\","
        "   \"breaker\": {\"failures\": 3, \"recovery_ms\": 1500}},"
        "  \"pool-mid\": {\"endpoint\": \"http://%s\", \"api_key\": \"e2e-secret-key\"}},"
        " \"worker\": {\"retry\": {\"max_retries\": 1, \"base_ms\": 10}},"
        " \"models\": {"
        "  \"lat-fast\": {\"pool\": \"pool-fast\", \"lane\": \"small\", \"fallbacks\": "
        "[\"lat-mid\"]},"
        "  \"lat-mid\": {\"pool\": \"pool-mid\", \"lane\": \"small\"},"
        "  \"lat-slow\": {\"pool\": \"pool-a\", \"lane\": \"small\"},"
        "  \"lat\": {\"strategy\": \"latency\", \"deployments\": [{\"model\": \"lat-fast\"},"
        "    {\"model\": \"lat-mid\"}, {\"model\": \"lat-slow\"}]}}}",
        fast_addr, mid_addr);
    th_cluster_opts_t o = {
        .workers = 1, .worker_in_flight = 64, .latency = "200-200", .extra_config = extra2};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    want = 0;
    submit_n("lat", 2000);
    CU_ASSERT_FATAL(th_poll(results_want, NULL, 240000));
    long by[3], failed;
    by_deployment("lat-", by, &failed);
    fprintf(stderr, "  latency over the pipeline: fast %ld / mid %ld / slow %ld, failed %ld\n",
            by[0], by[1], by[2], failed);
    TH_EQ_INT(failed, 0);
    CU_ASSERT(by[0] >= 1600);

    /* The fastest dies mid-run: work keeps coming in batches of 50 (tasks are
     * routed at intake, so already-queued ones are served by its fallback). */
    th_proc_stop(&fast, SIGKILL, 10000);
    int64_t killed = th_now_ms(), shifted = -1, back = -1;
    long total_fast_after_shift = 0, total_after_shift = 0, lost = 0;
    char prefix[32];
    for (int b = 0; b < 40 && total_after_shift < 500; b++) {
        snprintf(prefix, sizeof(prefix), "die%02d", b);
        submit_n(prefix, 50);
        CU_ASSERT_FATAL(th_poll(results_want, NULL, 120000));
        by_deployment(prefix, by, &failed);
        lost += failed + (50 - (by[0] + by[1] + by[2] + failed));
        if (shifted < 0 && by[0] == 0)
            shifted = th_now_ms();
        else if (shifted >= 0) {
            total_fast_after_shift += by[0];
            total_after_shift += 50;
        }
    }
    fprintf(stderr,
            "  fastest killed: traffic shifted after %lld ms; then %ld of %ld to it;"
            " %ld lost\n",
            (long long)(shifted - killed), total_fast_after_shift, total_after_shift, lost);
    CU_ASSERT_FATAL(shifted >= 0);
    CU_ASSERT(shifted - killed < 10000);
    CU_ASSERT(total_fast_after_shift * 20 <= total_after_shift); /* it gets only probes */
    TH_EQ_INT(lost, 0);
    /* ... and comes back on its port: half-open, a probe, traffic again */
    char addr[128];
    CU_ASSERT_FATAL(start_mock(&fast, fast_port, "20-20", addr, sizeof(addr)) == 0);
    int64_t restarted = th_now_ms();
    for (int b = 0; b < 60 && back < 0; b++) {
        snprintf(prefix, sizeof(prefix), "back%02d", b);
        submit_n(prefix, 50);
        CU_ASSERT_FATAL(th_poll(results_want, NULL, 120000));
        by_deployment(prefix, by, &failed);
        TH_EQ_INT(failed, 0);
        if (by[0] >= 40)
            back = th_now_ms();
    }
    fprintf(stderr, "  restarted: most traffic back on it after %lld ms\n",
            (long long)(back - restarted));
    CU_ASSERT_FATAL(back >= 0);
    TH_EQ_INT(th_check_one_result_each(&cl, want), 0);
    th_cluster_stop(&cl);
    th_proc_stop(&fast, SIGTERM, 10000);
    th_proc_stop(&mid, SIGTERM, 10000);
}

/* Per deployment: cost-cheap, cost-mid, cost-dear. */
static void by_cost(const char *prefix, long by[3], long *failed)
{
    static const char *const names[3] = {"cost-cheap", "cost-mid", "cost-dear"};
    by_names(prefix, names, by, failed);
}

static long peak_of(const char *addr)
{
    char url[256];
    snprintf(url, sizeof(url), "http://%s/v1/stats", addr);
    json_t *doc = th_http_json(url, "e2e-secret-key");
    long v = doc ? (long)json_integer_value(json_object_get(doc, "peak_concurrent_requests")) : -1;
    json_decref(doc);
    return v;
}

static void test_cost_spill(void)
{
    th_proc_t cheap, midp;
    char cheap_addr[128], mid_addr[128], extra3[2048];
    CU_ASSERT_FATAL(start_mock(&cheap, "0", "200-200", cheap_addr, sizeof(cheap_addr)) == 0);
    CU_ASSERT_FATAL(start_mock(&midp, "0", "200-200", mid_addr, sizeof(mid_addr)) == 0);
    snprintf(extra3, sizeof(extra3),
             "{\"pools\": {\"pool-cheap\": {\"endpoint\": \"http://%s\", \"api_key\": "
             "\"e2e-secret-key\"},"
             "  \"pool-mid\": {\"endpoint\": \"http://%s\", \"api_key\": \"e2e-secret-key\"}},"
             " \"models\": {"
             "  \"cost-cheap\": {\"pool\": \"pool-cheap\", \"lane\": \"small\"},"
             "  \"cost-mid\": {\"pool\": \"pool-mid\", \"lane\": \"small\"},"
             "  \"cost-dear\": {\"pool\": \"pool-a\", \"lane\": \"small\"},"
             "  \"cost\": {\"strategy\": \"cost\", \"deployments\": ["
             "    {\"model\": \"cost-dear\", \"price_micros\": 3},"
             "    {\"model\": \"cost-cheap\", \"price_micros\": 1, \"max_in_flight\": 20},"
             "    {\"model\": \"cost-mid\", \"price_micros\": 2, \"max_in_flight\": 40}]}}}",
             cheap_addr, mid_addr);
    th_cluster_opts_t o = {
        .workers = 1, .worker_in_flight = 256, .latency = "200-200", .extra_config = extra3};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    want = 0;
    long by[3], failed;
    /* A trickle (never 20 at once): all on the cheapest. */
    submit_model("trickle", 10, "cost");
    CU_ASSERT_FATAL(th_poll(results_want, NULL, 60000));
    by_cost("trickle-", by, &failed);
    TH_EQ_INT(failed, 0);
    TH_EQ_INT(by[0], 10);
    /* A burst: the cheapest is filled to its capacity, then the next, then the dearest. */
    submit_model("burst", 600, "cost");
    CU_ASSERT_FATAL(th_poll(results_want, NULL, 240000));
    by_cost("burst-", by, &failed);
    long peak_cheap = peak_of(cheap_addr), peak_mid = peak_of(mid_addr);
    fprintf(stderr,
            "  cost burst: cheap %ld (peak %ld at the pool) / mid %ld (peak %ld) / dear %ld,"
            " failed %ld\n",
            by[0], peak_cheap, by[1], peak_mid, by[2], failed);
    TH_EQ_INT(failed, 0);
    TH_EQ_INT(by[0] + by[1] + by[2], 600);
    CU_ASSERT(by[0] >= 20 && by[1] >= 40 && by[2] > 0);
    /* Capacity is the router's tasks in flight: a release may overlap the next allocate. */
    CU_ASSERT(peak_cheap >= 1 && peak_cheap <= 24); /* >= 1: the stat is read */
    CU_ASSERT(peak_mid >= 1 && peak_mid <= 46);
    TH_EQ_INT(th_check_one_result_each(&cl, want), 0);
    th_cluster_stop(&cl);
    th_proc_stop(&cheap, SIGTERM, 10000);
    th_proc_stop(&midp, SIGTERM, 10000);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"weighted 1:2:1 through the pipeline", test_weighted_pipeline},
        {"latency, and a deployment killed and restarted", test_latency_and_failover},
        {"cost: the cheapest to its capacity, then spill in price order", test_cost_spill},
        {NULL, NULL},
    };
    return th_run("e2e_routing", tests);
}
