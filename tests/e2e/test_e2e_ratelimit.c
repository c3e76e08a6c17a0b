/* test_e2e_ratelimit.c - per-tenant rate limits with two dispatchers: a
 * tenant limited to 600 requests a minute is served at that rate (within
 * 5 % over a full minute) with no request lost, while another tenant on the
 * same partitions is not held behind it; the reject mode answers
 * rejected/rate_limited, stored as the job's answer; the backlog gauges rise
 * while a slow mock holds tasks and fall back to 0. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "prom.h"

#define LIMITED 680 /* 600 a minute: the burst, a full minute, and 5 s more */
#define FREE 100
#define RPM 600
/* Released requests on their way back count against the burst, so the
 * burst bounds what is in transit: 30 keeps 600 a minute up while a hand-back
 * takes up to 3 s (an ASan build on a slow moment took over 1 s). */
#define BURST 30

static th_cluster_t cl;
static th_proc_t second;

/* n requests of tenant with ids prefix-NNNN, into a JSONL file. */
static void requests(char **text, size_t *off, size_t *cap, const char *prefix, const char *tenant,
                     int n)
{
    for (int i = 0; i < n; i++) {
        if (*cap - *off < 512) {
            *cap = *cap * 2 + 4096;
            *text = realloc(*text, *cap);
        }
        *off += (size_t)snprintf(*text + *off, *cap - *off,
                                 "{\"schema\":\"gantry.request.v1\",\"request_id\":\"%s-%04d\","
                                 "\"tenant_id\":\"%s\",\"kind\":\"generate\",\"model\":\"small\","
                                 "\"input\":\"hello %d\"}\n",
                                 prefix, i, tenant, i);
    }
}

static const char *requests_file(const char *prefix, const char *tenant, int n, const char *prefix2,
                                 const char *tenant2, int n2)
{
    size_t cap = 0, off = 0;
    char *text = NULL;
    requests(&text, &off, &cap, prefix, tenant, n);
    if (n2)
        requests(&text, &off, &cap, prefix2, tenant2, n2);
    const char *path = th_tmpfile(".jsonl", text);
    free(text);
    return path;
}

static long results_of(const char *tenant_like)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM jobs WHERE request_id LIKE '%s-%%' AND completed_at IS NOT NULL",
             tenant_like);
    return th_sql_long(cl.conninfo, sql);
}

static int free_done(void *arg)
{
    (void)arg;
    return results_of("free") >= FREE;
}

static int limited_done(void *arg)
{
    (void)arg;
    return results_of("lim") >= LIMITED &&
           th_topic_count(cl.bootstrap, "gantry.results") >= LIMITED + FREE;
}

static char *scrape(const char *admin)
{
    char url[128];
    prom_body_t b = {0};
    snprintf(url, sizeof(url), "http://%s/metrics", admin);
    if (prom_get(url, &b) != 200) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

static char admin_d[64];

static double gauge(const char *name, const char *match)
{
    char *t = scrape(admin_d);
    double v = t ? prom_sum(t, name, match) : -1;
    free(t);
    return v;
}

static int held_seen(void *arg)
{
    (void)arg;
    return gauge("gantry_rate_limit_held", "tenant=\"lim\"") > 100;
}

static void test_600_rpm_two_dispatchers(void)
{
    th_cluster_opts_t o = {.workers = 2,
                           .worker_in_flight = 32,
                           .latency = "5-20",
                           .kafka_partitions = 4,
                           .extra_config =
                               "{\"admin\": {\"port\": 0}, \"dispatcher\": {\"backlog_ms\": 200,"
                               " \"rate_limits\": {\"release_ms\": 100, \"tenants\": {\"lim\":"
                               " {\"requests_per_minute\": 600, \"burst_requests\": 30}}}}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    TH_EQ_INT(th_proc_wait_line(&cl.dispatcher, "admin=", admin_d, sizeof(admin_d), 30000), 0);
    CU_ASSERT_FATAL(th_cluster_start_dispatcher(&cl, &second, "dispatcher-rate-2") == 0);

    /* The limited tenant's 680 first, then 100 of a tenant without a limit,
     * on the same partitions. */
    int64_t t0 = th_now_ms();
    CU_ASSERT_FATAL(
        th_cluster_submit(&cl, requests_file("lim", "lim", LIMITED, "free", "free", FREE)) == 0);
    /* The other tenant is served at once, not behind the held requests. */
    CU_ASSERT_FATAL(th_poll(free_done, NULL, 30000));
    int64_t free_ms = th_now_ms() - t0;
    long held = th_sql_long(cl.conninfo, "SELECT count(*) FROM rate_holds"
                                         " WHERE released_at IS NULL");
    fprintf(stderr, "  tenant free: %d results in %lld ms; %ld of lim's requests held then\n", FREE,
            (long long)free_ms, held);
    CU_ASSERT(held > 300);
    CU_ASSERT(th_poll(held_seen, NULL, 5000));

    CU_ASSERT_FATAL(th_poll(limited_done, NULL, 180000));
    /* Admission times: the job rows' creation. */
    long in_minute =
        th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs, (SELECT min(created_at) AS t FROM jobs"
                                 " WHERE tenant_id = 'lim') f WHERE tenant_id = 'lim'"
                                 " AND created_at < f.t + interval '60 s'");
    long span_ms = th_sql_long(cl.conninfo, "SELECT (extract(epoch FROM max(created_at) -"
                                            " min(created_at)) * 1000)::bigint FROM jobs"
                                            " WHERE tenant_id = 'lim'");
    double rate = (double)(LIMITED - BURST) * 60000.0 / (double)span_ms;
    fprintf(stderr,
            "  tenant lim: %ld admitted in the first 60 s (600 a minute + %d burst), %d over "
            "%ld ms: %.1f a minute after the burst\n",
            in_minute, BURST, LIMITED, span_ms, rate);
    CU_ASSERT(in_minute >= RPM + BURST - 30 && in_minute <= RPM + BURST + 30);
    CU_ASSERT(rate >= RPM * 0.95 && rate <= RPM * 1.05);
    /* No request lost, none answered twice, nothing still held. */
    TH_EQ_INT(th_check_one_result_each(&cl, LIMITED + FREE), 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE status <> 'succeeded'"), 0);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM rate_holds"), 0);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 0);
    /* Both dispatchers released held requests. */
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE tenant_id = 'lim'"),
              LIMITED);
    /* Both dispatchers admitted the limited tenant's requests: one limit for both. */
    char admin_2[64];
    TH_EQ_INT(th_proc_wait_line(&second, "admin=", admin_2, sizeof(admin_2), 1000), 0);
    char *t1 = scrape(admin_d), *t2 = scrape(admin_2);
    CU_ASSERT_FATAL(t1 && t2);
    double a1 = prom_sum(t1, "gantry_rate_limit_decisions_total", "verdict=\"admitted\""),
           a2 = prom_sum(t2, "gantry_rate_limit_decisions_total", "verdict=\"admitted\"");
    double r1 = prom_sum(t1, "gantry_rate_limit_decisions_total", "verdict=\"released\""),
           r2 = prom_sum(t2, "gantry_rate_limit_decisions_total", "verdict=\"released\"");
    fprintf(stderr, "  admitted %.0f + %.0f, released %.0f + %.0f by the two dispatchers\n", a1, a2,
            r1, r2);
    CU_ASSERT(a1 > 0 && a2 > 0);
    CU_ASSERT(a1 + a2 >= LIMITED);
    free(t1);
    free(t2);
    th_proc_stop(&second, SIGTERM, 30000);
    th_cluster_stop(&cl);
}

static int backlog_waiting(void *arg)
{
    (void)arg;
    return gauge("gantry_backlog_tasks", "tenant=\"slow\",state=\"waiting\"") >= 5 &&
           gauge("gantry_backlog_tasks", "tenant=\"slow\",state=\"running\"") >= 1 &&
           gauge("gantry_backlog_oldest_waiting_seconds", "tenant=\"slow\"") > 0;
}

static int backlog_empty(void *arg)
{
    (void)arg;
    return gauge("gantry_backlog_tasks", "tenant=\"slow\"") == 0 &&
           gauge("gantry_backlog_oldest_waiting_seconds", "tenant=\"slow\"") == 0;
}

static int all_answered(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= 30;
}

static void test_reject_and_backlog(void)
{
    th_cluster_opts_t o = {.workers = 1,
                           .worker_in_flight = 2,
                           .latency = "300-400",
                           .extra_config =
                               "{\"admin\": {\"port\": 0}, \"dispatcher\": {\"backlog_ms\": 200,"
                               " \"rate_limits\": {\"on_limit\": \"reject\", \"tenants\": {\"rej\":"
                               " {\"requests_per_minute\": 6, \"burst_requests\": 3}}}}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    TH_EQ_INT(th_proc_wait_line(&cl.dispatcher, "admin=", admin_d, sizeof(admin_d), 30000), 0);
    const char *rej = requests_file("rej", "rej", 10, NULL, NULL, 0);
    CU_ASSERT_FATAL(th_cluster_submit(&cl, requests_file("slow", "slow", 20, NULL, NULL, 0)) == 0);
    CU_ASSERT_FATAL(th_cluster_submit(&cl, rej) == 0);
    /* Two slots, 20 calls of 300-400 ms: tasks wait, and the gauges say so. */
    CU_ASSERT(th_poll(backlog_waiting, NULL, 20000));
    CU_ASSERT_FATAL(th_poll(all_answered, NULL, 60000));
    CU_ASSERT(th_poll(backlog_empty, NULL, 10000));

    /* The burst went through; the rest were answered rejected/rate_limited,
     * each stored as its job's answer. */
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE tenant_id = 'rej'"
                                       " AND status = 'succeeded'"),
              3);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE tenant_id = 'rej'"
                                       " AND status = 'rejected'"
                                       " AND result->'error'->>'code' = 'rate_limited'"),
              7);
    /* Sent again: answered by the stored answers, nothing new, nothing charged. */
    long buckets = th_sql_long(cl.conninfo, "SELECT (req_level * 1000)::bigint FROM rate_buckets");
    CU_ASSERT_FATAL(th_cluster_submit(&cl, rej) == 0);
    char why[256];
    int64_t deadline = th_now_ms() + 30000;
    while (th_group_lag(cl.bootstrap, "gantry-dispatcher", "gantry.requests", why, sizeof(why)) !=
               0 &&
           th_now_ms() < deadline)
        th_poll(all_answered, NULL, 100);
    TH_EQ_INT(th_group_lag(cl.bootstrap, "gantry-dispatcher", "gantry.requests", why, sizeof(why)),
              0);
    TH_EQ_INT(th_check_one_result_each(&cl, 30), 0);
    CU_ASSERT(th_sql_long(cl.conninfo, "SELECT (req_level * 1000)::bigint FROM rate_buckets") >=
              buckets);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"600 rpm over a full minute with two dispatchers", test_600_rpm_two_dispatchers},
        {"reject mode; backlog gauges rise and fall", test_reject_and_backlog},
        {NULL, NULL},
    };
    return th_run("e2e_ratelimit", tests);
}
