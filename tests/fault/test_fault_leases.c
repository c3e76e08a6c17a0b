/* test_fault_leases.c - leases and capacity under faults, on real processes (tests/e2e/cluster):
 * slow allocates, a pool too small for the load, workers SIGKILLed and restarted under
 * their own --id, a dispatcher restarted under its own id, releases failing for a while.
 * Every case ends with: every request exactly one result, zero allocations outstanding. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../e2e/cluster.h"

#define MOCK_KEY "e2e-secret-key" /* tests/e2e/cluster.c's */

static th_cluster_t cl;
static long want_results;

static int all_results(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= want_results;
}

static int results_at_least(void *arg)
{
    return th_topic_count(cl.bootstrap, "gantry.results") >= *(long *)arg;
}

/* Writes n loadgen requests and submits them. */
static int submit(long n, int seed, const char *prefix)
{
    char cmd[1024], path[512];
    snprintf(path, sizeof(path), "%s/requests-%s.jsonl", cl.logdir, prefix);
    snprintf(cmd, sizeof(cmd), "%s --count %ld --seed %d --prefix %s > %s",
             th_bin("tools/gantry-loadgen"), n, seed, prefix, path);
    if (system(cmd) != 0)
        return -1;
    return th_cluster_submit(&cl, path);
}

/* Allocations of worker-e2e-0 whose incarnation is not in dead (an object used
 * as a set); with add, their incarnations join dead. */
static long held_by_live_worker0(json_t *dead, int add)
{
    char url[512];
    snprintf(url, sizeof(url), "%s/v1/allocations?label.holder=worker-e2e-0", cl.mock_url);
    json_t *doc = th_http_json(url, MOCK_KEY), *a, *seen = json_object();
    size_t i;
    long n = 0;
    json_array_foreach (json_object_get(doc, "allocations"), i, a) {
        const char *inc =
            json_string_value(json_object_get(json_object_get(a, "labels"), "incarnation"));
        if (!inc || json_object_get(dead, inc))
            continue;
        n++;
        json_object_set_new(seen, inc, json_true());
    }
    if (add)
        json_object_update(dead, seen);
    json_decref(seen);
    json_decref(doc);
    return n;
}

/* The live incarnation holds a fair share of its 32 slots. */
static int live_worker0_holds(void *dead)
{
    return held_by_live_worker0(dead, 0) >= 8;
}

/* A fixed pause that is part of a scenario (never a wait for a condition). */
static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int many_held(void *arg)
{
    (void)arg;
    return th_mock_stat(&cl, "outstanding_allocations") >= 40;
}

/* Restarts the worker of slot under its own --id (a new incarnation). */
static int restart_worker(int slot)
{
    char id[32], log[512];
    static int run;
    snprintf(id, sizeof(id), "worker-e2e-%d", slot);
    snprintf(log, sizeof(log), "%s/worker-%d-run%d.log", cl.logdir, slot, ++run);
    const char *argv[] = {th_bin("workers/gantry-worker"), "--config", cl.config, "--id", id, NULL};
    return th_proc_start(&cl.workers[slot], argv, log);
}

static void end_invariants(long requests)
{
    want_results = requests;
    CU_ASSERT(th_poll(all_results, NULL, 240000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 60000));
    TH_EQ_INT(th_check_one_result_each(&cl, requests), 0);
    TH_EQ_INT(th_mock_stat(&cl, "outstanding_allocations"), 0);
    fprintf(stderr, "  %ld requests, %ld allocations, %ld releases at the mock\n", requests,
            th_mock_stat(&cl, "allocations_total"), th_mock_stat(&cl, "releases_total"));
}

/* (a) Allocate slower than the worker's timeout: late allocations are found by
 * their labels (or reaped) and released. */
static void test_slow_allocate(void)
{
    const char *margs[] = {"--alloc-latency-ms", "0-900", "--seed", "5", NULL};
    th_cluster_opts_t o = {.latency = "5-20",
                           .workers = 2,
                           .worker_in_flight = 64,
                           .mock_args = margs,
                           /* The breaker would (rightly) call this pool broken and end
                            * the point of the case: timeouts only here. */
                           .extra_config = "{\"worker\": {\"timeouts\": {\"allocate_ms\": 400},"
                                           " \"retry\": {\"max_retries\": 6}},"
                                           " \"pools\": {\"pool-a\": {\"breaker\":"
                                           " {\"failures\": 100000}}}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    CU_ASSERT_EQUAL_FATAL(submit(300, 21, "slow"), 0);
    end_invariants(300);
    long late = th_log_count(&cl, "worker-0.log", "timed out here but succeeded") +
                th_log_count(&cl, "worker-1.log", "timed out here but succeeded");
    long ok = th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status = 'succeeded'");
    fprintf(stderr, "  %ld late allocations found by their labels; %ld tasks succeeded\n", late,
            ok);
    CU_ASSERT(late > 0);
    CU_ASSERT(ok >= 270); /* 7 attempts at ~45%% each: nearly all get through */
    th_cluster_stop(&cl);
}

/* (b) A pool with room for ~50 tasks at a time: every request succeeds, none fails for capacity. */
static void test_small_pool(void)
{
    const long n = 1500; /* 3,000 takes ~2 min on 2 shared cores: half keeps the point */
    th_cluster_opts_t o = {.latency = "20-60",
                           .workers = 2,
                           .worker_in_flight = 128,
                           .capacity_tflops = "500", /* 50 small (10) or 12 large (40) */
                           .extra_config = "{\"worker\": {\"retry\": {\"max_ms\": 1000}}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    CU_ASSERT_EQUAL_FATAL(submit(n, 22, "cap"), 0);
    end_invariants(n);
    long failed =
        th_sql_long(cl.conninfo, "SELECT count(*) FROM tasks WHERE status <> 'succeeded'");
    long full = th_mock_stat(&cl, "rejected_pool_full");
    fprintf(stderr, "  %ld capacity answers, %ld tasks not succeeded, peak %ld requests\n", full,
            failed, th_mock_stat(&cl, "peak_concurrent_requests"));
    CU_ASSERT(full > 0);
    TH_EQ_INT(failed, 0);
    th_cluster_stop(&cl);
}

/* (c) 10 SIGKILLs of a worker holding allocations, each restarted a second
 * later under the same --id: its dead incarnations' allocations are reaped. */
static void test_kill_restart_same_id(void)
{
    th_cluster_opts_t o = {.latency = "300-800", .workers = 2, .worker_in_flight = 32};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    /* Logs are appended across cases: count this case's reaps only. */
    long reaped_before = th_log_count(&cl, "dispatcher.log", "reaped allocation");
    /* Enough work that the other worker cannot finish it all during the
     * ten kills and restarts (800 ran out after six once tasks flowed
     * faster: the restarted worker then had nothing left to hold). */
    CU_ASSERT_EQUAL_FATAL(submit(2000, 23, "kill"), 0);
    long held_total = 0;
    json_t *dead = json_object();
    int kills = 0;
    for (int k = 0; k < 10; k++) {
        /* Wait for the live incarnation itself to hold something (not its dead predecessors). */
        if (!th_poll(live_worker0_holds, dead, 30000))
            break;
        kill(cl.workers[0].pid, SIGKILL);
        th_proc_stop(&cl.workers[0], SIGKILL, 5000);
        long held = held_by_live_worker0(dead, 1);
        held_total += held;
        kills++;
        pause_ms(1000); /* the scenario: restarted a second later */
        CU_ASSERT_EQUAL_FATAL(restart_worker(0), 0);
        fprintf(stderr, "  kill %d: worker-e2e-0 held %ld allocation(s)\n", k + 1, held);
    }
    TH_EQ_INT(kills, 10);
    TH_EQ_INT(json_object_size(dead), 10);
    json_decref(dead);
    end_invariants(2000);
    long reaped = th_log_count(&cl, "dispatcher.log", "reaped allocation") - reaped_before;
    fprintf(stderr, "  %ld allocations held by 10 dead incarnations, %ld reaped\n", held_total,
            reaped);
    /* The reaper released them: no one else knew them (an allocate answered
     * after the kill adds to the reaped ones; a DELETE the dead process had
     * already sent may still land, hence the 5%). */
    CU_ASSERT(held_total >= 80);
    CU_ASSERT(reaped >= held_total * 95 / 100);
    th_cluster_stop(&cl);
}

/* (d) The dispatcher SIGKILLed and restarted under its id, default lease and
 * session, while workers run long tasks: nothing of a live worker is reaped. */
static void test_dispatcher_restart(void)
{
    th_cluster_opts_t o = {.latency = "30000-30000",
                           .workers = 2,
                           .worker_in_flight = 64,
                           .extra_config = "{\"kafka\": {\"consumer_properties\":"
                                           " {\"session.timeout.ms\": \"10000\"}},"
                                           " \"reaper\": {\"lease_ttl_ms\": 10000}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    CU_ASSERT_EQUAL_FATAL(submit(60, 24, "long"), 0);
    CU_ASSERT_FATAL(th_poll(many_held, NULL, 60000));
    long before = th_mock_stat(&cl, "outstanding_allocations");
    kill(cl.dispatcher.pid, SIGKILL);
    th_proc_stop(&cl.dispatcher, SIGKILL, 5000);
    char log[512];
    snprintf(log, sizeof(log), "%s/dispatcher-run2.log", cl.logdir);
    const char *argv[] = {th_bin("dispatcher/gantry-dispatcher"),
                          "--config",
                          cl.config,
                          "--id",
                          "dispatcher-e2e",
                          NULL};
    CU_ASSERT_EQUAL_FATAL(th_proc_start(&cl.dispatcher, argv, log), 0);
    fprintf(stderr, "  dispatcher restarted with %ld allocations of live workers out\n", before);
    end_invariants(60);
    long reaped = th_log_count(&cl, "dispatcher-run2.log", "reaped allocation");
    long lost = th_log_count(&cl, "worker-0.log", "allocation not found") +
                th_log_count(&cl, "worker-1.log", "allocation not found");
    /* It did judge leases while the tasks ran (30 s: 10 s session + 10 s hearing). */
    CU_ASSERT(th_log_count(&cl, "dispatcher-run2.log", "judging leases in") > 0);
    TH_EQ_INT(reaped, 0);
    TH_EQ_INT(lost, 0);
    th_cluster_stop(&cl);
}

/* (e) HostedAI fails every release for 8 s: each allocation is released once it recovers. */
static void test_release_failing(void)
{
    const char *margs[] = {"--release-fail-ms", "8000", NULL};
    th_cluster_opts_t o = {.latency = "5-20",
                           .workers = 2,
                           .worker_in_flight = 64,
                           .mock_args = margs,
                           .extra_config = "{\"worker\": {\"timeouts\": {\"release_ms\": 1000}}}"};
    CU_ASSERT_EQUAL_FATAL(th_cluster_start(&cl, &o), 0);
    CU_ASSERT_EQUAL_FATAL(submit(200, 25, "rel"), 0);
    long some = 50;
    CU_ASSERT(th_poll(results_at_least, &some, 60000));
    end_invariants(200);
    long refused = th_mock_stat(&cl, "releases_refused");
    fprintf(stderr, "  %ld releases refused while HostedAI failed them\n", refused);
    CU_ASSERT(refused > 0);
    th_cluster_stop(&cl);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"(a) allocate slower than the worker's timeout", test_slow_allocate},
        {"(b) a pool too small for the load", test_small_pool},
        {"(c) 10 SIGKILLs, restarted under the same --id", test_kill_restart_same_id},
        {"(d) dispatcher restarted under its id, default lease", test_dispatcher_restart},
        {"(e) releases failing for a while", test_release_failing},
        {NULL, NULL}};
    return th_run("fault leases", tests);
}
