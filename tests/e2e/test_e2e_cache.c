/* test_e2e_cache.c - the response cache end to end (docs/routing.md): 1,000
 * identical requests make one provider call and 999 results with cached:true,
 * billed per the price book (zero: the ('cache', '*') list price); the same
 * input from another tenant is a miss; an expired entry is a miss; a failed
 * call is not cached; a hit whose dispatcher died between storing and
 * publishing it is published by the claim sweep with its charge; `gantry
 * cache purge` empties a tenant's entries; while
 * the cache table cannot be read, requests wait (no provider call, no result,
 * no dead letter) and all complete once it can. */
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define IDENTICAL 1000

static th_cluster_t cl;
static long want_results;

static const char extra[] =
    "{\"models\": {\"small\": {\"cache\": {\"ttl_ms\": 600000}},"
    "             \"brief\": {\"pool\": \"pool-a\", \"lane\": \"small\","
    "                         \"requirements\": {\"tflops\": 10, \"vram_mb\": 8000},"
    "                         \"cache\": {\"ttl_ms\": 300}},"
    "             \"broken\": {\"pool\": \"pool-down\", \"lane\": \"small\","
    "                          \"cache\": {\"ttl_ms\": 600000}}},"
    " \"pools\": {\"pool-down\": {\"endpoint\": \"http://127.0.0.1:1\", \"api_key\": \"k\"}},"
    " \"worker\": {\"retry\": {\"max_retries\": 1, \"base_ms\": 10}},"
    " \"tenants\": {\"t1\": {\"cache\": {\"models\": [\"*\"], \"default\": true}},"
    "               \"t2\": {\"cache\": {\"models\": [\"small\"], \"default\": true}},"
    "               \"t3\": {\"cache\": {\"models\": [\"small\"]}}}}";

static long inferences(void)
{
    return th_mock_stat(&cl, "inference_ok") + th_mock_stat(&cl, "inference_failed");
}

static int results_in(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= want_results;
}

/* Submits n requests (ids prefix-0000..) of tenant with input, model. */
static void submit(const char *prefix, int n, const char *tenant, const char *model,
                   const char *input, const char *policy)
{
    size_t cap = (size_t)n * 400 + 1, off = 0;
    char *text = malloc(cap);
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(text + off, cap - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"%s-%04d\","
                                "\"tenant_id\":\"%s\",\"kind\":\"generate\",\"model\":\"%s\","
                                "\"input\":\"%s\"%s%s}\n",
                                prefix, i, tenant, model, input, policy ? ",\"policy\":" : "",
                                policy ? policy : "");
    want_results += n;
    CU_ASSERT_FATAL(th_cluster_submit(&cl, th_tmpfile(".jsonl", text)) == 0);
    free(text);
    CU_ASSERT_FATAL(th_poll(results_in, NULL, 240000));
}

/* Results whose request_id starts with prefix: how many, cached ones, succeeded ones. */
static void count_results(const char *prefix, long *n, long *cached, long *succeeded)
{
    *n = *cached = *succeeded = 0;
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results");
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        json_t *r = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *rid = json_string_value(json_object_get(r, "request_id"));
        if (rid && strncmp(rid, prefix, strlen(prefix)) == 0 && rid[strlen(prefix)] == '-') {
            (*n)++;
            *cached += json_is_true(json_object_get(r, "cached"));
            *succeeded += strcmp(json_string_value(json_object_get(r, "status")), "succeeded") == 0;
        }
        json_decref(r);
    }
    json_decref(all);
}

static long usage_rows_sql(const char *where)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM usage WHERE %s", where);
    return th_sql_long(cl.conninfo, sql);
}

static long usage_want;
static int usage_in(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM usage") >= usage_want;
}

static void test_start(void)
{
    th_cluster_opts_t o = {
        .workers = 1, .worker_in_flight = 64, .latency = "20-40", .extra_config = extra};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
}

static void test_identical_one_call(void)
{
    long before = inferences();
    submit("same", IDENTICAL, "t1", "small", "cache me please", NULL);
    long n, cached, ok;
    count_results("same", &n, &cached, &ok);
    fprintf(stderr, "  %ld results, %ld cached, %ld succeeded, %ld provider call(s)\n", n, cached,
            ok, inferences() - before);
    TH_EQ_INT(n, IDENTICAL);
    TH_EQ_INT(ok, IDENTICAL);
    TH_EQ_INT(cached, IDENTICAL - 1);
    TH_EQ_INT(inferences() - before, 1);
    /* billed per the price book: 999 rows under provider 'cache', priced at zero */
    usage_want = IDENTICAL;
    CU_ASSERT_FATAL(th_poll(usage_in, NULL, 60000));
    TH_EQ_INT(usage_rows_sql("request_id LIKE 'same-%' AND provider = 'cache'"), IDENTICAL - 1);
    TH_EQ_INT(usage_rows_sql("request_id LIKE 'same-%' AND provider = 'cache'"
                             " AND price_id IS NOT NULL AND cost_micros = 0"),
              IDENTICAL - 1);
    TH_EQ_INT(usage_rows_sql("request_id LIKE 'same-%' AND provider = 'hostedai'"), 1);
    TH_EQ_INT(
        th_sql_long(cl.conninfo, "SELECT count(*) FROM response_cache WHERE tenant_id = 't1'"), 1);
}

static int swept(void *arg)
{
    (void)arg;
    return th_results_for(&cl, "swept-0000", NULL) >= 1 &&
           usage_rows_sql("request_id = 'swept-0000'") >= 1;
}

/* Intake stores a hit as the job's answer with its usage event, then
 * publishes both. A dispatcher that dies in between leaves a stale claim:
 * the sweep publishes the stored answer, and its charge with it. */
static void test_swept_hit_is_billed(void)
{
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id LIKE 'same-%'"
                                       " AND answer_usage->>'provider' = 'cache'"),
              IDENTICAL - 1);
    /* A hit as a dead dispatcher left it: stored, claimed, never published. */
    TH_EQ_INT(
        th_sql_long(cl.conninfo,
                    "CREATE TEMP TABLE dead AS SELECT * FROM jobs WHERE request_id LIKE 'same-%'"
                    "  AND answer_usage IS NOT NULL LIMIT 1;"
                    " UPDATE dead SET request_id = 'swept-0000', status = 'completing',"
                    "  claimed_by = 'dispatcher-dead', claimed_incarnation = 'dead',"
                    "  claimed_at = now() - interval '1 hour', result_stored_at = now(),"
                    "  completed_at = NULL, source_offset = NULL,"
                    "  result = jsonb_set(result, '{request_id}', '\"swept-0000\"'),"
                    "  answer_usage = answer_usage || '{\"request_id\": \"swept-0000\","
                    "   \"task_id\": \"swept-0000/0\", \"event_id\": \"swept-0000/0:usage\"}';"
                    " INSERT INTO jobs SELECT * FROM dead;"
                    " SELECT count(*) FROM jobs WHERE request_id = 'swept-0000'"),
        1);
    CU_ASSERT_FATAL(th_poll(swept, NULL, 60000));
    const char *status = NULL;
    TH_EQ_INT(th_results_for(&cl, "swept-0000", &status), 1);
    TH_EQ_STR(status, "succeeded");
    TH_EQ_INT(usage_rows_sql("request_id = 'swept-0000' AND provider = 'cache'"), 1);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id = 'swept-0000'"
                                       " AND status = 'succeeded'"),
              1);
    want_results++;
    usage_want++;
}

static void test_other_tenant_misses(void)
{
    long before = inferences();
    submit("other", 1, "t2", "small", "cache me please", NULL);
    long n, cached, ok;
    count_results("other", &n, &cached, &ok);
    TH_EQ_INT(n, 1);
    TH_EQ_INT(ok, 1);
    TH_EQ_INT(cached, 0);
    TH_EQ_INT(inferences() - before, 1);
    /* t3 opts in per request only: without policy.cache it is never cached */
    before = inferences();
    submit("t3no", 2, "t3", "small", "t3 input", NULL);
    count_results("t3no", &n, &cached, &ok);
    TH_EQ_INT(cached, 0);
    TH_EQ_INT(inferences() - before, 2);
    submit("t3yes", 1, "t3", "small", "t3 input", "{\"cache\": true}");
    submit("t3yes2", 1, "t3", "small", "t3 input", "{\"cache\": true}");
    count_results("t3yes2", &n, &cached, &ok);
    TH_EQ_INT(cached, 1);
}

static int brief_expired(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo, "SELECT count(*) FROM response_cache WHERE model = 'brief'"
                                    " AND expires_at <= now()") == 1;
}

static void test_expired_misses(void)
{
    long before = inferences();
    submit("brief1", 1, "t1", "brief", "short lived", NULL);
    CU_ASSERT_FATAL(th_poll(brief_expired, NULL, 30000));
    submit("brief2", 1, "t1", "brief", "short lived", NULL);
    long n, cached, ok;
    count_results("brief2", &n, &cached, &ok);
    TH_EQ_INT(n, 1);
    TH_EQ_INT(ok, 1);
    TH_EQ_INT(cached, 0);
    TH_EQ_INT(inferences() - before, 2);
}

static void test_failure_not_cached(void)
{
    submit("broken1", 1, "t1", "broken", "never works", NULL);
    submit("broken2", 1, "t1", "broken", "never works", NULL);
    long n, cached, ok;
    count_results("broken2", &n, &cached, &ok);
    TH_EQ_INT(n, 1);
    TH_EQ_INT(ok, 0);
    TH_EQ_INT(cached, 0);
    TH_EQ_INT(
        th_sql_long(cl.conninfo, "SELECT count(*) FROM response_cache WHERE model = 'broken'"), 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE request_id LIKE 'broken%'"
                                       " AND status = 'failed'"),
              2);
}

static void test_purge(void)
{
    TH_EQ_INT(
        th_sql_long(cl.conninfo, "SELECT count(*) FROM response_cache WHERE tenant_id = 't2'"), 1);
    th_proc_t p;
    char log[512];
    snprintf(log, sizeof(log), "%s/purge.log", cl.logdir);
    const char *argv[] = {th_bin("tools/gantry"),
                          "cache",
                          "purge",
                          "--config",
                          cl.config,
                          "--tenant",
                          "t1",
                          "--model",
                          "small",
                          NULL};
    CU_ASSERT_FATAL(th_proc_start(&p, argv, log) == 0);
    char line[256];
    CU_ASSERT_FATAL(th_proc_wait_line(&p, "purged ", line, sizeof(line), 30000) == 0);
    TH_EQ_INT(th_proc_stop(&p, 0, 30000), 0);
    fprintf(stderr, "  purged %s\n", line);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM response_cache WHERE tenant_id = 't1'"
                                       " AND model = 'small'"),
              0);
    TH_EQ_INT(
        th_sql_long(cl.conninfo, "SELECT count(*) FROM response_cache WHERE tenant_id = 't2'"), 1);
    long before = inferences();
    submit("afterpurge", 1, "t1", "small", "cache me please", NULL);
    long n, cached, ok;
    count_results("afterpurge", &n, &cached, &ok);
    TH_EQ_INT(cached, 0);
    TH_EQ_INT(inferences() - before, 1);
}

static int lookup_blocked(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo,
                       "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                       " AND query LIKE '%FROM response_cache WHERE tenant_id%'") >= 1;
}

static int locked_results_in(void *arg)
{
    (void)arg;
    long n, cached, ok;
    count_results("locked", &n, &cached, &ok);
    return n >= 20;
}

/* The cache table cannot be read (held by an ACCESS EXCLUSIVE lock, as
 * during a long migration or a stalled server): lookups wait, nothing runs
 * unchecked, nothing is lost; all answered once it can be read. */
static void test_lookup_waits(void)
{
    PGconn *hold = PQconnectdb(cl.conninfo);
    CU_ASSERT_FATAL(PQstatus(hold) == CONNECTION_OK);
    PQclear(PQexec(hold, "BEGIN"));
    PGresult *r = PQexec(hold, "LOCK TABLE response_cache IN ACCESS EXCLUSIVE MODE");
    CU_ASSERT_FATAL(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    long before = inferences(), dlq = th_topic_count(cl.bootstrap, "gantry.dlq");
    size_t cap = 20 * 300, off = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 20; i++)
        off += (size_t)snprintf(text + off, cap - off,
                                "{\"schema\":\"gantry.request.v1\",\"request_id\":\"locked-%04d\","
                                "\"tenant_id\":\"t1\",\"kind\":\"generate\",\"model\":\"small\","
                                "\"input\":\"while locked\"}\n",
                                i);
    CU_ASSERT_FATAL(th_cluster_submit(&cl, th_tmpfile(".jsonl", text)) == 0);
    free(text);
    CU_ASSERT_FATAL(th_poll(lookup_blocked, NULL, 30000));
    long n, cached, ok;
    count_results("locked", &n, &cached, &ok);
    TH_EQ_INT(n, 0);                     /* nobody answered unchecked */
    TH_EQ_INT(inferences() - before, 0); /* nothing failed open to the provider */
    PQclear(PQexec(hold, "COMMIT"));
    PQfinish(hold);
    CU_ASSERT_FATAL(th_poll(locked_results_in, NULL, 120000));
    count_results("locked", &n, &cached, &ok);
    TH_EQ_INT(n, 20);
    TH_EQ_INT(ok, 20);
    TH_EQ_INT(cached, 19);
    TH_EQ_INT(inferences() - before, 1);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), dlq);
    want_results += 20;
    TH_EQ_INT(th_check_one_result_each(&cl, want_results), 0);
}

static void test_stop(void)
{
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"start", test_start},
        {"1,000 identical requests make one provider call", test_identical_one_call},
        {"a hit the claim sweep publishes is billed", test_swept_hit_is_billed},
        {"another tenant's identical input is a miss", test_other_tenant_misses},
        {"an expired entry is a miss", test_expired_misses},
        {"a failed call is not cached", test_failure_not_cached},
        {"cache purge empties a tenant's entries", test_purge},
        {"lookups wait while the cache table cannot be read", test_lookup_waits},
        {"stop", test_stop},
        {NULL, NULL},
    };
    return th_run("e2e_cache", tests);
}
