/* test_hostedai.c - the HostedAI runtime (workers/hostedai.c) in process, against the mock
 * HostedAI over loopback: each way an allocation could leak, capacity waits and the breaker.
 *
 * Every case runs gt_hai calls on a libuv loop with a real gt_http client and
 * ends with the mock reporting 0 outstanding allocations. */
#include <curl/curl.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "clock.h"
#include "harness.h"
#include "hostedai.h"
#include "worker_config.h"

#define KEY "test-key-hai"
#define MAX_CALLS 16

typedef struct outcome {
    int done;
    gt_task_status_t status;
    char code[64];
    int64_t capacity_wait_ms;
    size_t attempts;
    char first_error[64];
} outcome_t;

typedef struct rig {
    th_proc_t mock;
    char addr[64];
    uv_loop_t loop;
    gt_http_t *http;
    gt_config_t *cfg;
    gt_hai_env_t env;
    gt_task_spec_t spec[MAX_CALLS];
    char ids[MAX_CALLS][32];
    gt_hai_call_t *call[MAX_CALLS];
    outcome_t out[MAX_CALLS];
    json_t *input;
    json_t *events; /* type -> count */
} rig_t;

/* ---- helpers ------------------------------------------------------------- */

static long long stat_of(rig_t *r, const char *key)
{
    char url[128], *body = NULL;
    struct curl_slist *hdrs = curl_slist_append(NULL, "Authorization: Bearer " KEY);
    CURL *c = curl_easy_init();
    long long v = -1;
    snprintf(url, sizeof(url), "http://%s/v1/stats", r->addr);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, th_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    if (curl_easy_perform(c) == CURLE_OK && body) {
        json_t *doc = json_loads(body, 0, NULL);
        if (json_is_integer(json_object_get(doc, key)))
            v = json_integer_value(json_object_get(doc, key));
        json_decref(doc);
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    free(body);
    return v;
}

static void on_emit(const char *type, json_t *data, void *arg)
{
    rig_t *r = arg;
    json_object_set_new(r->events, type,
                        json_integer(json_integer_value(json_object_get(r->events, type)) + 1));
    json_decref(data);
}

static int events_of(rig_t *r, const char *type)
{
    return (int)json_integer_value(json_object_get(r->events, type));
}

static void on_done(gt_rt_call_t *call, const gt_task_outcome_t *out, void *arg)
{
    outcome_t *o = arg;
    (void)call;
    o->done++;
    o->status = out->status;
    snprintf(o->code, sizeof(o->code), "%s", out->error_code ? out->error_code : "");
    o->capacity_wait_ms = out->capacity_wait_ms;
    o->attempts = json_array_size(out->attempts);
    json_t *first = json_array_get(out->attempts, 0);
    const char *e = json_string_value(json_object_get(first, "error"));
    snprintf(o->first_error, sizeof(o->first_error), "%s", e ? e : "");
}

/* Starts the mock with extra arguments and a configuration around it (worker
 * part given in JSON, e.g. "\"retry\": {...}"; endpoint NULL: the mock). */
static int rig_up(rig_t *r, const char *const extra[], const char *worker, const char *breaker,
                  const char *endpoint, double tflops)
{
    const char *argv[24] = {th_bin("tools/gantry-mock-hostedai"), "--port", "0", "--api-key", KEY};
    int n = 5;
    char text[4096], err[2048], url[128];
    memset(r, 0, sizeof(*r));
    for (int i = 0; extra && extra[i] && n < 23; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    if (th_proc_start(&r->mock, argv, NULL) != 0 ||
        th_proc_wait_line(&r->mock, "listening=", r->addr, sizeof(r->addr), 10000) != 0)
        return -1;
    snprintf(url, sizeof(url), "http://%s", r->addr);
    snprintf(text, sizeof(text),
             "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:1\"},"
             " \"pools\": {\"p\": {\"endpoint\": \"%s\", \"api_key\": \"%s\"%s%s}},"
             " \"models\": {\"m\": {\"pool\": \"p\", \"lane\": \"small\","
             "   \"requirements\": {\"tflops\": %g, \"vram_mb\": 100}}},"
             " \"worker\": {%s}}",
             endpoint ? endpoint : url, KEY, breaker ? ", " : "", breaker ? breaker : "", tflops,
             worker);
    r->cfg = gt_config_parse(text, NULL, err, sizeof(err));
    if (!r->cfg) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    uv_loop_init(&r->loop);
    r->http = gt_http_new(&r->loop);
    r->events = json_object();
    r->input = json_string("say something");
    r->env.loop = &r->loop;
    r->env.http = r->http;
    r->env.cfg = r->cfg;
    r->env.worker_id = "worker-hai-test";
    r->env.incarnation = "0123456789abcdef0123456789abcdef";
    r->env.emit = on_emit;
    r->env.emit_arg = r;
    r->env.state = gt_hai_state_new(&r->env);
    return r->http && r->env.state ? 0 : -1;
}

static gt_hai_call_t *start_call(rig_t *r, int i)
{
    const char *code = NULL;
    snprintf(r->ids[i], sizeof(r->ids[i]), "task-%d", i);
    gt_task_spec_t *s = &r->spec[i];
    s->task_id = s->request_id = r->ids[i];
    s->tenant_id = "acme";
    s->kind = "generate";
    s->input = r->input;
    s->model = gt_config_model(r->cfg, "m");
    s->deadline_mono_ms = INT64_MAX;
    r->call[i] = gt_hai_start(&r->env, s, on_done, &r->out[i], &code);
    return r->call[i];
}

static int all_done(void *arg)
{
    rig_t *r = arg;
    for (int i = 0; i < MAX_CALLS; i++)
        if (r->call[i] && !r->out[i].done)
            return 0;
    return 1;
}

/* Nothing outstanding at the mock, nothing owed by the process. */
static int settled(void *arg)
{
    rig_t *r = arg;
    if (!all_done(r) || gt_hai_state_pending(r->env.state) != 0)
        return 0;
    json_t *held = gt_hai_state_held(r->env.state);
    size_t n = json_array_size(held);
    json_decref(held);
    return n == 0 && stat_of(r, "outstanding_allocations") == 0;
}

static void rig_down(rig_t *r)
{
    gt_hai_state_close(r->env.state);
    gt_http_free(r->http);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    gt_hai_state_free(r->env.state);
    TH_EQ_INT(uv_loop_close(&r->loop), 0);
    gt_config_free(r->cfg);
    json_decref(r->events);
    json_decref(r->input);
    th_proc_stop(&r->mock, SIGTERM, 10000);
}

/* ---- tests --------------------------------------------------------------- */

/* Allocate slower than the worker's timeout: the mock allocates on arrival and
 * answers after the client gave up. The worker finds both attempts by their
 * labels and releases them. */
static void test_allocate_timeout_found_by_labels(void)
{
    rig_t r;
    const char *extra[] = {"--alloc-latency-ms", "800-800", NULL};
    CU_ASSERT_FATAL(rig_up(&r, extra,
                           "\"retry\": {\"max_retries\": 1, \"base_ms\": 10},"
                           " \"timeouts\": {\"allocate_ms\": 200}",
                           NULL, NULL, 1) == 0);
    CU_ASSERT_FATAL(start_call(&r, 0) != NULL);
    CU_ASSERT(th_loop_until(&r.loop, settled, &r, 15000));
    TH_EQ_INT(r.out[0].done, 1);
    TH_EQ_STR(r.out[0].code, "hostedai_timeout");
    TH_EQ_INT(r.out[0].attempts, 2);
    TH_EQ_INT(stat_of(&r, "allocations_total"), 2);
    TH_EQ_INT(stat_of(&r, "releases_total"), 2);
    /* Found by their labels: reported as acquired, then released. */
    TH_EQ_INT(events_of(&r, "allocation.acquired"), 2);
    TH_EQ_INT(events_of(&r, "allocation.released"), 2);
    rig_down(&r);
}

/* Allocates answered after the call was cancelled, and a cancel while holding. */
static void test_answered_after_cancel(void)
{
    rig_t r;
    const char *extra[] = {"--alloc-latency-ms", "300-300", "--latency-ms", "3000-3000", NULL};
    CU_ASSERT_FATAL(rig_up(&r, extra, "\"timeouts\": {\"allocate_ms\": 5000}", NULL, NULL, 1) == 0);
    CU_ASSERT_FATAL(start_call(&r, 0) != NULL);
    CU_ASSERT_FATAL(start_call(&r, 1) != NULL);
    th_loop_until(&r.loop, all_done, &r, 50); /* both allocates are on their way */
    gt_hai_cancel(r.call[0]);
    /* The second one gets its allocation, then is cancelled during inference. */
    int held = 0;
    for (int64_t end = th_now_ms() + 5000; th_now_ms() < end && held < 1;) {
        uv_run(&r.loop, UV_RUN_ONCE);
        json_t *h = gt_hai_state_held(r.env.state);
        held = (int)json_array_size(h);
        json_decref(h);
    }
    CU_ASSERT(held >= 1); /* call 1's (and maybe call 0's, owed since its late answer) */
    gt_hai_cancel(r.call[1]);
    r.call[0] = r.call[1] = NULL; /* cb will not run */
    CU_ASSERT(th_loop_until(&r.loop, settled, &r, 10000));
    TH_EQ_INT(r.out[0].done + r.out[1].done, 0);
    TH_EQ_INT(stat_of(&r, "allocations_total"), 2);
    TH_EQ_INT(stat_of(&r, "releases_total"), 2);
    rig_down(&r);
}

/* Attempts superseded by a retry (some allocates answer in time, some not). */
static void test_superseded_by_retry(void)
{
    rig_t r;
    const char *extra[] = {"--alloc-latency-ms", "0-400", "--seed", "3", NULL};
    CU_ASSERT_FATAL(rig_up(&r, extra,
                           "\"retry\": {\"max_retries\": 3, \"base_ms\": 10},"
                           " \"timeouts\": {\"allocate_ms\": 200}",
                           "\"breaker\": {\"failures\": 1000}", NULL, 1) == 0);
    for (int i = 0; i < 8; i++)
        CU_ASSERT_FATAL(start_call(&r, i) != NULL);
    CU_ASSERT(th_loop_until(&r.loop, settled, &r, 20000));
    int timeouts = 0;
    for (int i = 0; i < 8; i++)
        timeouts += strcmp(r.out[i].first_error, "timeout") == 0;
    CU_ASSERT(timeouts > 0);
    long long total = stat_of(&r, "allocations_total");
    CU_ASSERT(total > 8); /* superseded ones were made too */
    TH_EQ_INT(stat_of(&r, "releases_total"), total);
    TH_EQ_INT(events_of(&r, "allocation.acquired"), total);
    TH_EQ_INT(events_of(&r, "allocation.released"), total);
    rig_down(&r);
}

/* A release that fails past its retries is owed and retried until HostedAI recovers. */
static void test_release_fails_for_a_while(void)
{
    rig_t r;
    const char *extra[] = {"--release-fail-ms", "2500", "--latency-ms", "5-5", NULL};
    CU_ASSERT_FATAL(rig_up(&r, extra,
                           "\"retry\": {\"max_retries\": 0, \"base_ms\": 10},"
                           " \"timeouts\": {\"release_ms\": 500}",
                           NULL, NULL, 1) == 0);
    CU_ASSERT_FATAL(start_call(&r, 0) != NULL);
    CU_ASSERT(th_loop_until(&r.loop, all_done, &r, 2000));
    TH_EQ_INT(r.out[0].status, GT_TASK_SUCCEEDED); /* the result does not wait for it */
    TH_EQ_INT(gt_hai_state_pending(r.env.state), 1);
    TH_EQ_INT(stat_of(&r, "outstanding_allocations"), 1);
    TH_EQ_INT(events_of(&r, "allocation.release_failed"), 1);
    CU_ASSERT(th_loop_until(&r.loop, settled, &r, 15000));
    CU_ASSERT(stat_of(&r, "releases_refused") > GT_HAI_RELEASE_EXTRA_RETRIES);
    TH_EQ_INT(events_of(&r, "allocation.released"), 1);
    rig_down(&r);
}

/* A pool with room for one: the others wait (Retry-After), use up no retries,
 * and the breaker does not count capacity answers. */
static void test_capacity_waits(void)
{
    rig_t r;
    const char *extra[] = {"--capacity-tflops", "1", "--latency-ms", "200-200", NULL};
    CU_ASSERT_FATAL(rig_up(&r, extra, "\"retry\": {\"max_retries\": 0, \"base_ms\": 50}",
                           "\"breaker\": {\"failures\": 1}", NULL, 1) == 0);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_FATAL(start_call(&r, i) != NULL);
    CU_ASSERT(th_loop_until(&r.loop, settled, &r, 20000));
    int waited = 0;
    for (int i = 0; i < 3; i++) {
        TH_EQ_INT(r.out[i].status, GT_TASK_SUCCEEDED);
        if (r.out[i].capacity_wait_ms > 0)
            waited++;
    }
    CU_ASSERT(waited >= 2);
    CU_ASSERT(stat_of(&r, "rejected_pool_full") >= 2);
    TH_EQ_INT(events_of(&r, "breaker.opened"), 0);
    rig_down(&r);
}

/* The wait ends at worker.capacity_wait_ms with hostedai_capacity. */
static void test_capacity_wait_ends(void)
{
    rig_t r;
    const char *extra[] = {"--capacity-tflops", "1", "--latency-ms", "3000-3000", NULL};
    CU_ASSERT_FATAL(
        rig_up(&r, extra,
               "\"capacity_wait_ms\": 300, \"retry\": {\"base_ms\": 50, \"max_ms\": 100}", NULL,
               NULL, 1) == 0);
    CU_ASSERT_FATAL(start_call(&r, 0) != NULL);
    th_loop_until(&r.loop, all_done, &r, 300); /* the first holds the whole pool */
    int64_t t0 = th_now_ms();
    CU_ASSERT_FATAL(start_call(&r, 1) != NULL);
    while (!r.out[1].done && th_now_ms() < t0 + 5000)
        uv_run(&r.loop, UV_RUN_ONCE);
    TH_EQ_INT(r.out[1].done, 1);
    TH_EQ_INT(r.out[1].status, GT_TASK_FAILED);
    TH_EQ_STR(r.out[1].code, "hostedai_capacity");
    CU_ASSERT(r.out[1].attempts >= 2);
    CU_ASSERT(r.out[1].capacity_wait_ms > 0 && r.out[1].capacity_wait_ms <= 300);
    CU_ASSERT(th_loop_until(&r.loop, settled, &r, 10000));
    rig_down(&r);
}

/* A pool that refuses connections: 2 failures open its breaker, then allocates fail at once. */
static void test_breaker_opens(void)
{
    rig_t r;
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", th_free_port());
    CU_ASSERT_FATAL(rig_up(&r, NULL, "\"retry\": {\"max_retries\": 0}",
                           "\"breaker\": {\"failures\": 2, \"recovery_ms\": 60000}", dead, 1) == 0);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_FATAL(start_call(&r, i) != NULL);
        CU_ASSERT(th_loop_until(&r.loop, all_done, &r, 5000));
        TH_EQ_STR(r.out[i].code, "hostedai_unavailable");
    }
    TH_EQ_INT(events_of(&r, "breaker.opened"), 1);
    CU_ASSERT_FATAL(start_call(&r, 2) != NULL);
    CU_ASSERT(th_loop_until(&r.loop, all_done, &r, 5000));
    TH_EQ_STR(r.out[2].code, "hostedai_unavailable");
    TH_EQ_STR(r.out[2].first_error, "circuit breaker open");
    /* Refused connections allocated nothing: no search is owed. */
    TH_EQ_INT(gt_hai_state_pending(r.env.state), 0);
    rig_down(&r);
}

/* A half-open breaker refuses calls while its trial is out. */
static int breaker_half_open(void *arg)
{
    rig_t *r = arg;
    return !gt_runtime_ops_hostedai.unavailable(&r->env, gt_config_model(r->cfg, "m"));
}

/* The pool's breaker (pools.p.breaker) on the shared engine: 5 failures open
 * it, the next call fails at once; after recovery_ms it is half-open and lets
 * exactly one trial go (a second call then is refused); the trial's success
 * closes it. The pool's port refuses connections until the mock is started on
 * it after the breaker opened. */
static void test_breaker_half_open_trial(void)
{
    rig_t r;
    char dead[64], port[16];
    /* A bound socket that does not listen refuses connections and keeps the
     * port from anyone else (a parallel test's mock) until the pool comes up. */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof(sa);
    int hold = socket(AF_INET, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(hold >= 0);
    CU_ASSERT_FATAL(bind(hold, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CU_ASSERT_FATAL(getsockname(hold, (struct sockaddr *)&sa, &salen) == 0);
    int p = ntohs(sa.sin_port);
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", p);
    snprintf(port, sizeof(port), "%d", p);
    CU_ASSERT_FATAL(rig_up(&r, NULL, "\"retry\": {\"max_retries\": 0}",
                           "\"breaker\": {\"failures\": 5, \"recovery_ms\": 300}", dead, 1) == 0);
    for (int i = 0; i < 5; i++) {
        TH_EQ_INT(events_of(&r, "breaker.opened"), 0);
        CU_ASSERT_FATAL(start_call(&r, i) != NULL);
        CU_ASSERT_FATAL(th_loop_until(&r.loop, all_done, &r, 5000));
        TH_EQ_STR(r.out[i].code, "hostedai_unavailable");
        CU_ASSERT(strcmp(r.out[i].first_error, "circuit breaker open") != 0);
    }
    TH_EQ_INT(events_of(&r, "breaker.opened"), 1);
    CU_ASSERT(!breaker_half_open(&r));
    CU_ASSERT_FATAL(start_call(&r, 5) != NULL);
    CU_ASSERT_FATAL(th_loop_until(&r.loop, all_done, &r, 5000));
    TH_EQ_STR(r.out[5].code, "hostedai_unavailable");
    TH_EQ_STR(r.out[5].first_error, "circuit breaker open");
    TH_EQ_INT(r.out[5].attempts, 1);

    /* The pool comes up on its port. */
    th_proc_stop(&r.mock, SIGTERM, 10000);
    close(hold);
    const char *argv[] = {
        th_bin("tools/gantry-mock-hostedai"), "--port", port, "--api-key", KEY, NULL};
    CU_ASSERT_FATAL(th_proc_start(&r.mock, argv, NULL) == 0);
    CU_ASSERT_FATAL(th_proc_wait_line(&r.mock, "listening=", r.addr, sizeof(r.addr), 10000) == 0);

    CU_ASSERT_FATAL(th_loop_until(&r.loop, breaker_half_open, &r, 5000));
    /* Both start in the same loop turn: the first takes the trial. */
    CU_ASSERT_FATAL(start_call(&r, 6) != NULL);
    CU_ASSERT_FATAL(start_call(&r, 7) != NULL);
    CU_ASSERT_FATAL(th_loop_until(&r.loop, all_done, &r, 10000));
    TH_EQ_INT(events_of(&r, "breaker.half_open"), 1);
    TH_EQ_INT(r.out[6].status, GT_TASK_SUCCEEDED);
    TH_EQ_STR(r.out[7].code, "hostedai_unavailable");
    TH_EQ_STR(r.out[7].first_error, "circuit breaker open");
    TH_EQ_INT(events_of(&r, "breaker.closed"), 1);
    TH_EQ_INT(events_of(&r, "breaker.opened"), 1);

    /* Closed again: calls go. */
    CU_ASSERT_FATAL(start_call(&r, 8) != NULL);
    CU_ASSERT_FATAL(th_loop_until(&r.loop, all_done, &r, 10000));
    TH_EQ_INT(r.out[8].status, GT_TASK_SUCCEEDED);
    CU_ASSERT(th_loop_until(&r.loop, settled, &r, 10000));
    rig_down(&r);
}

int main(void)
{
    gt_worker_config_register();
    static const th_test_t tests[] = {
        {"allocate slower than the timeout: found by labels",
         test_allocate_timeout_found_by_labels},
        {"allocate answered after cancel; cancel while holding", test_answered_after_cancel},
        {"attempts superseded by a retry", test_superseded_by_retry},
        {"release failing for a while", test_release_fails_for_a_while},
        {"capacity waits without retries or breaker", test_capacity_waits},
        {"capacity wait ends", test_capacity_wait_ends},
        {"breaker opens", test_breaker_opens},
        {"breaker: 5 failures open it, half-open lets one trial", test_breaker_half_open_trial},
        {NULL, NULL}};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = th_run("hostedai", tests);
    curl_global_cleanup();
    return rc;
}
