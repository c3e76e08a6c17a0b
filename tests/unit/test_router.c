/* test_router.c - the deployment strategies over three deployments of one
 * model with latencies 20, 50 and 200 ms and different prices, driven by a
 * discrete-event simulation (virtual clock, 32 tasks in flight, 2,000
 * requests): latency sends >= 80 % to the fastest, cost fills the cheapest to
 * its capacity then spills, weighted 1:2:1 splits within 5 %, least_busy
 * keeps in-flight counts close; a deployment that starts failing is cooled
 * down, its traffic shifts, it returns half-open after it recovers, and every
 * request still succeeds (a failed task is routed again). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "router.h"

#define REQUESTS 2000
#define CONCURRENCY 32
#define MAXF 64

static const int latency_ms[3] = {20, 50, 200};
static const char *const names[3] = {"d-fast", "d-mid", "d-slow"};

static gt_config_t *config(const char *strategy, const char *fast_extra)
{
    char text[4096], err[2048];
    snprintf(
        text, sizeof(text),
        "{\"kafka\": {\"bootstrap_servers\": \"x\"},"
        " \"pools\": {\"p1\": {\"endpoint\": \"http://h1\", \"api_key\": \"k\","
        "                      \"breaker\": {\"failures\": 5, \"recovery_ms\": 2000}},"
        "           \"p2\": {\"endpoint\": \"http://h2\", \"api_key\": \"k\"},"
        "           \"p3\": {\"endpoint\": \"http://h3\", \"api_key\": \"k\"}},"
        " \"models\": {\"d-fast\": {\"pool\": \"p1\"}, \"d-mid\": {\"pool\": \"p2\"},"
        "   \"d-slow\": {\"pool\": \"p3\"},"
        "   \"m\": {\"strategy\": \"%s\", \"deployments\": ["
        "     {\"model\": \"d-fast\", \"weight\": 1, \"price_micros\": 300 %s},"
        "     {\"model\": \"d-mid\", \"weight\": 2, \"price_micros\": 100, \"max_in_flight\": 10},"
        "     {\"model\": \"d-slow\", \"weight\": 1, \"price_micros\": 200, \"max_in_flight\": "
        "10}]}}}",
        strategy, fast_extra ? fast_extra : "");
    gt_config_t *cfg = gt_config_parse(text, NULL, err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "  %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    return cfg;
}

typedef struct sim {
    long picks[3], ok[3], failed;
    int max_spread;     /* least_busy: largest in-flight max-min right after a pick */
    int cost_violation; /* cost: a pick not the cheapest with capacity */
    long fast_after_fail, total_after_fail; /* picks in (fail_from + 1 s, fail_to) */
    long fast_after_back, total_after_back; /* picks after fail_to + recovery + 1 s */
} sim_t;

static int idx(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

/* Runs REQUESTS requests; the fast deployment fails in [fail_from, fail_to) ms. */
static void run(const char *strategy, long requests, int64_t fail_from, int64_t fail_to, sim_t *s)
{
    gt_config_t *cfg = config(strategy, NULL);
    const gt_model_t *m = gt_config_model(cfg, "m");
    gt_router_t *r = gt_router_new(42);
    struct {
        int dep;
        int64_t end;
    } fl[MAXF];
    int nf = 0;
    long started = 0, done = 0, retry = 0;
    int64_t now = 0;
    memset(s, 0, sizeof(*s));
    while (done < requests) {
        while (nf < CONCURRENCY && (started < requests || retry > 0)) {
            const char *why;
            /* the cheapest with capacity: d-mid (100), d-slow (200), d-fast (300) */
            int want = gt_router_in_flight(r, "d-mid") < 10    ? 1
                       : gt_router_in_flight(r, "d-slow") < 10 ? 2
                                                               : 0;
            const gt_model_t *dep = gt_router_pick(r, cfg, m, now, &why);
            int i = idx(dep->name);
            CU_ASSERT_FATAL(i >= 0);
            if (i < 0) /* not reached: the assertion ends the test */
                return;
            if (strcmp(strategy, "cost") == 0) {
                if (i != want && strcmp(why, "all_full") != 0)
                    s->cost_violation++;
                if (i != 0 && gt_router_in_flight(r, names[i]) > 10)
                    s->cost_violation++;
            }
            if (strcmp(strategy, "least_busy") == 0) {
                int lo = 1 << 30, hi = 0;
                for (int k = 0; k < 3; k++) {
                    int f = gt_router_in_flight(r, names[k]);
                    lo = f < lo ? f : lo;
                    hi = f > hi ? f : hi;
                }
                s->max_spread = hi - lo > s->max_spread ? hi - lo : s->max_spread;
            }
            s->picks[i]++;
            if (fail_to > 0 && now >= fail_from + 1000 && now < fail_to) {
                s->total_after_fail++;
                s->fast_after_fail += i == 0;
            }
            if (fail_to > 0 && now >= fail_to + 2000 + 1000) {
                s->total_after_back++;
                s->fast_after_back += i == 0;
            }
            fl[nf].dep = i;
            fl[nf].end = now + latency_ms[i];
            nf++;
            if (retry > 0)
                retry--;
            else
                started++;
        }
        int e = 0;
        for (int k = 1; k < nf; k++)
            if (fl[k].end < fl[e].end)
                e = k;
        now = fl[e].end;
        int i = fl[e].dep;
        fl[e] = fl[--nf];
        int ok = !(i == 0 && now >= fail_from && now < fail_to);
        gt_router_result(r, cfg, names[i], ok, latency_ms[i], now);
        if (ok) {
            s->ok[i]++;
            done++;
        } else {
            s->failed++;
            retry++; /* routed again: nothing lost */
        }
    }
    gt_router_free(r);
    gt_config_free(cfg);
}

static void test_latency(void)
{
    sim_t s;
    run("latency", REQUESTS, 0, 0, &s);
    fprintf(stderr, "  latency: %ld / %ld / %ld\n", s.picks[0], s.picks[1], s.picks[2]);
    CU_ASSERT(s.picks[0] >= REQUESTS * 8 / 10);
    CU_ASSERT(s.picks[1] > 0 && s.picks[2] > 0); /* explored */
}

static void test_cost(void)
{
    sim_t s;
    run("cost", REQUESTS, 0, 0, &s);
    fprintf(stderr,
            "  cost: fast(300) %ld / mid(100, cap 10) %ld / slow(200, cap 10) %ld,"
            " %d violations\n",
            s.picks[0], s.picks[1], s.picks[2], s.cost_violation);
    TH_EQ_INT(s.cost_violation, 0);
    CU_ASSERT(s.picks[1] > s.picks[2] && s.picks[2] > 0 && s.picks[0] > 0);
}

static void test_weighted(void)
{
    sim_t s;
    run("weighted", REQUESTS, 0, 0, &s);
    fprintf(stderr, "  weighted: %ld / %ld / %ld\n", s.picks[0], s.picks[1], s.picks[2]);
    CU_ASSERT(s.picks[0] >= 475 && s.picks[0] <= 525);
    CU_ASSERT(s.picks[1] >= 950 && s.picks[1] <= 1050);
    CU_ASSERT(s.picks[2] >= 475 && s.picks[2] <= 525);
}

static void test_least_busy(void)
{
    sim_t s;
    run("least_busy", REQUESTS, 0, 0, &s);
    fprintf(stderr, "  least_busy: %ld / %ld / %ld, largest in-flight spread %d\n", s.picks[0],
            s.picks[1], s.picks[2], s.max_spread);
    CU_ASSERT(s.max_spread <= 2);
}

static void test_failing_deployment(void)
{
    sim_t s;
    run("latency", 10 * REQUESTS, 3000, 6000, &s); /* the fast one fails for 3 s of ~13 s */
    fprintf(stderr,
            "  failing: %ld failed tasks re-routed; fast got %ld of %ld picks while"
            " failing, %ld of %ld after recovery\n",
            s.failed, s.fast_after_fail, s.total_after_fail, s.fast_after_back, s.total_after_back);
    CU_ASSERT(s.failed > 0);
    CU_ASSERT(s.total_after_fail > 0 && s.fast_after_fail * 10 < s.total_after_fail);
    CU_ASSERT(s.total_after_back > 0 && s.fast_after_back * 10 >= s.total_after_back * 8);
    TH_EQ_INT(s.ok[0] + s.ok[1] + s.ok[2], 10 * REQUESTS);
}

/* What another dispatcher or a worker saw: a breaker.opened event on
 * gantry.events cools the deployment here too; it returns by a probe. */
static void test_event_cools(void)
{
    gt_config_t *cfg = config("least_busy", NULL);
    const gt_model_t *m = gt_config_model(cfg, "m");
    gt_router_t *r = gt_router_new(7);
    json_t *data =
        json_pack("{s:s, s:s, s:i}", "provider", "hostedai", "pool", "p1", "recovery_ms", 1500);
    gt_router_event(r, cfg, "breaker.opened", data, 1000);
    const char *why;
    for (int i = 0; i < 30; i++) {
        CU_ASSERT(strcmp(gt_router_pick(r, cfg, m, 1000 + i, &why)->name, "d-fast") != 0);
    }
    TH_EQ_STR(gt_router_pick(r, cfg, m, 2500, &why)->name, "d-fast");
    TH_EQ_STR(why, "half_open");
    gt_router_result(r, cfg, "d-fast", 1, 20, 2520);
    CU_ASSERT(strcmp(gt_router_pick(r, cfg, m, 2521, &why)->name, "d-fast") == 0);
    TH_EQ_STR(why, "least_busy");
    json_decref(data);
    gt_router_free(r);
    gt_config_free(cfg);
}

/* Two dispatchers share capacity: A's in-flight snapshot (sent with its
 * reaper's probe) fills the cheapest deployment for B, which then spills
 * without having routed anything itself; once A's snapshot is stale, B
 * sees the capacity free again. */
static void test_peer_capacity(void)
{
    gt_config_t *cfg = config("cost", NULL);
    const gt_model_t *m = gt_config_model(cfg, "m");
    gt_router_t *a = gt_router_new(1), *b = gt_router_new(2);
    const char *why;
    for (int i = 0; i < 10; i++) /* d-mid: the cheapest, capacity 10 */
        TH_EQ_STR(gt_router_pick(a, cfg, m, 1000, &why)->name, "d-mid");
    json_t *snap = gt_router_snapshot(a);
    TH_EQ_INT(json_integer_value(json_object_get(snap, "d-mid")), 10);
    TH_EQ_STR(gt_router_pick(b, cfg, m, 1000, &why)->name, "d-mid"); /* not told yet */
    gt_router_release(b, "d-mid");
    gt_router_peer(b, "dispatcher-a", snap, 1000, 6000);
    TH_EQ_STR(gt_router_pick(b, cfg, m, 1001, &why)->name, "d-slow");
    TH_EQ_STR(why, "cost_spill");
    gt_router_release(b, "d-slow");
    gt_router_peer(b, NULL, NULL, 8000, 6000); /* A went silent: its share is free */
    TH_EQ_STR(gt_router_pick(b, cfg, m, 8001, &why)->name, "d-mid");
    json_decref(snap);
    gt_router_free(a);
    gt_router_free(b);
    gt_config_free(cfg);
}

static void test_config_refused(void)
{
    char err[1024];
    CU_ASSERT_PTR_NULL(gt_config_parse(
        "{\"kafka\": {\"bootstrap_servers\": \"x\"}, \"models\": {\"m\": {\"strategy\": \"rnd\","
        " \"deployments\": [{\"model\": \"nope\"}]}}}",
        NULL, err, sizeof(err)));
    CU_ASSERT(strstr(err, "models.m: strategy") != NULL);
    CU_ASSERT(strstr(err, "models.m.deployments[0].model: model \"nope\" is not declared") != NULL);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"latency sends most to the fastest", test_latency},
        {"cost fills the cheapest, then spills", test_cost},
        {"weighted 1:2:1", test_weighted},
        {"least_busy keeps in-flight close", test_least_busy},
        {"a failing deployment cools down and returns", test_failing_deployment},
        {"a breaker.opened event cools a deployment", test_event_cools},
        {"capacity counts the other dispatchers' tasks", test_peer_capacity},
        {"bad deployments are refused", test_config_refused},
        {NULL, NULL},
    };
    return th_run("router", tests);
}
