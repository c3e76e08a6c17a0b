/* test_http.c - unit tests of the async HTTP client (lib/http.c) against the mock HostedAI. */
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "harness.h"
#include "http.h"

#define KEY "test-key-http"
#define AUTH "Authorization: Bearer " KEY

static const char *const auth_headers[] = {AUTH, "Content-Type: application/json", NULL};

typedef struct mock {
    th_proc_t proc;
    char base[96];
} mock_t;

/* One finished request, copied out of the callback. */
typedef struct call {
    int done;
    long status;
    int curl_code;
    int timed_out;
    int64_t retry_after_ms;
    size_t request_bytes;
    char *body;
} call_t;

static void call_clear(call_t *c)
{
    free(c->body);
    c->body = NULL;
}

/* Starts the mock on a free port with extra flags (NULL-terminated). */
static int mock_start(mock_t *m, const char *const *extra)
{
    return th_mock_hostedai_start(&m->proc, KEY, extra, m->base, sizeof(m->base));
}

static void mock_stop(mock_t *m)
{
    int st = th_proc_stop(&m->proc, SIGTERM, 10000);

    TH_EQ_INT(st, 0); /* exited 0 */
}

static const char *url(const mock_t *m, const char *path)
{
    static char buf[4][256];
    static int i;
    char *b = buf[i++ % 4];

    snprintf(b, 256, "%s%s", m->base, path);
    return b;
}

static void on_call(const gt_http_response_t *resp, void *arg)
{
    call_t *c = arg;

    c->done++;
    c->status = resp->status;
    c->curl_code = resp->curl_code;
    c->timed_out = resp->timed_out;
    c->retry_after_ms = resp->retry_after_ms;
    c->request_bytes = resp->request_bytes;
    CU_ASSERT(resp->body != NULL && strlen(resp->body) == resp->body_len);
    free(c->body);
    c->body = strdup(resp->body ? resp->body : "");
}

/* Runs one request to completion on loop. Returns 0 or -1 if it never finished. */
static int run_call(uv_loop_t *loop, gt_http_t *h, const char *method, const char *u,
                    const char *const *hdrs, const char *body, int64_t timeout_ms, call_t *c)
{
    int64_t deadline = th_now_ms() + 15000;

    call_clear(c); /* callers reuse c: zero-initialised before first use */
    memset(c, 0, sizeof(*c));
    if (gt_http_request(h, method, u, hdrs, body, body ? strlen(body) : 0, timeout_ms, on_call,
                        c) != 0)
        return -1;
    while (!c->done && th_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    return c->done == 1 ? 0 : -1;
}

/* Frees h and runs the loop until its handles are closed. */
static void http_close(uv_loop_t *loop, gt_http_t *h)
{
    gt_http_free(h);
    uv_run(loop, UV_RUN_DEFAULT);
    TH_EQ_INT(uv_loop_close(loop), 0); /* nothing left open */
}

static json_t *json_of(const call_t *c)
{
    return json_loads(c->body ? c->body : "", 0, NULL);
}

static int64_t stat_of(uv_loop_t *loop, gt_http_t *h, const mock_t *m, const char *key)
{
    call_t c = {0};
    json_t *j;
    int64_t v = -1;

    if (run_call(loop, h, "GET", url(m, "/v1/stats"), auth_headers, NULL, 5000, &c) == 0 &&
        (j = json_of(&c))) {
        v = json_integer_value(json_object_get(j, key));
        json_decref(j);
    }
    call_clear(&c);
    return v;
}

static void test_round_trip(void)
{
    uv_loop_t loop;
    gt_http_t *h;
    mock_t m;
    call_t c = {0};
    json_t *j;
    char id[64] = "", body[256], path[128];

    if (mock_start(&m, NULL) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    uv_loop_init(&loop);
    h = gt_http_new(&loop);
    CU_ASSERT_FATAL(h != NULL);

    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/allocate"), auth_headers,
                       "{\"pool_id\":\"p1\",\"requirements\":{\"tflops\":10,\"vram_mb\":1000,"
                       "\"model\":\"llama\"},\"overcommit\":false,"
                       "\"labels\":{\"holder\":\"w1\",\"task_id\":\"t1\"}}",
                       5000, &c) == 0);
    TH_EQ_INT(c.status, 201);
    TH_EQ_INT(c.curl_code, 0);
    TH_EQ_INT(c.retry_after_ms, -1);
    CU_ASSERT(c.request_bytes > 100);
    j = json_of(&c);
    CU_ASSERT_FATAL(j != NULL);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "allocation_id")));
    CU_ASSERT(strncmp(id, "alloc-", 6) == 0);
    TH_EQ_STR(json_string_value(json_object_get(j, "pool_id")), "p1");
    json_decref(j);

    snprintf(body, sizeof(body),
             "{\"allocation_id\":\"%s\",\"prompt\":\"hello there world\",\"temperature\":0.2,"
             "\"max_tokens\":5}",
             id);
    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/inference"), auth_headers, body, 5000, &c) ==
              0);
    TH_EQ_INT(c.status, 200);
    j = json_of(&c);
    CU_ASSERT_FATAL(j != NULL);
    CU_ASSERT(strncmp(json_string_value(json_object_get(j, "text")), "gantry-mock: ", 13) == 0);
    CU_ASSERT(strstr(json_string_value(json_object_get(j, "text")), "hello there world") != NULL);
    TH_EQ_STR(json_string_value(json_object_get(j, "allocation_id")), id);
    TH_EQ_STR(json_string_value(json_object_get(j, "model")), "llama");
    /* 17 bytes -> ceil(17/4) = 5 prompt tokens; completion capped by max_tokens. */
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")), 5);
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")),
              5);
    json_decref(j);

    snprintf(path, sizeof(path), "/v1/allocate/%s", id);
    CU_ASSERT(run_call(&loop, h, "DELETE", url(&m, path), auth_headers, NULL, 5000, &c) == 0);
    TH_EQ_INT(c.status, 204);
    TH_EQ_INT(c.body ? strlen(c.body) : 99, 0);
    CU_ASSERT(run_call(&loop, h, "DELETE", url(&m, path), auth_headers, NULL, 5000, &c) == 0);
    TH_EQ_INT(c.status, 404);
    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/inference"), auth_headers, body, 5000, &c) ==
              0);
    TH_EQ_INT(c.status, 404);
    TH_EQ_INT(stat_of(&loop, h, &m, "outstanding_allocations"), 0);
    /* Sequential requests on one client share one kept-alive connection. */
    TH_EQ_INT(stat_of(&loop, h, &m, "connections_total"), 1);
    call_clear(&c);

    http_close(&loop, h);
    mock_stop(&m);
}

static void test_unauthorized(void)
{
    static const char *const wrong[] = {"Authorization: Bearer nope", NULL};
    uv_loop_t loop;
    gt_http_t *h;
    mock_t m;
    call_t c = {0};
    json_t *j;

    if (mock_start(&m, NULL) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    uv_loop_init(&loop);
    h = gt_http_new(&loop);
    CU_ASSERT_FATAL(h != NULL);

    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/allocate"), NULL,
                       "{\"pool_id\":\"p\",\"requirements\":{}}", 5000, &c) == 0);
    TH_EQ_INT(c.status, 401);
    j = json_of(&c);
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
              "unauthorized");
    json_decref(j);
    CU_ASSERT(run_call(&loop, h, "GET", url(&m, "/v1/stats"), wrong, NULL, 5000, &c) == 0);
    TH_EQ_INT(c.status, 401);
    TH_EQ_INT(stat_of(&loop, h, &m, "allocations_total"), 0);
    call_clear(&c);

    http_close(&loop, h);
    mock_stop(&m);
}

typedef struct fanout {
    int done, ok, not_found, other, max_in_flight;
    gt_http_t *h;
} fanout_t;

typedef struct fan_req {
    fanout_t *f;
    int expect;
} fan_req_t;

static void on_fan(const gt_http_response_t *resp, void *arg)
{
    fan_req_t *r = arg;
    fanout_t *f = r->f;

    f->done++;
    if (resp->status == r->expect && resp->status == 200)
        f->ok++;
    else if (resp->status == r->expect && resp->status == 404)
        f->not_found++;
    else {
        if (f->other++ < 5)
            fprintf(stderr, "  unexpected: status %ld curl %d %s\n", resp->status, resp->curl_code,
                    resp->error ? resp->error : "");
    }
}

/* Thousands of descriptors: one socket per request in flight. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void test_concurrent(void)
{
    static const char *const extra[] = {"--latency-ms", "50-150", NULL};
    const char *env = getenv("GT_HTTP_TEST_N");
    int n = env ? atoi(env) : 1000;
    uv_loop_t loop;
    gt_http_t *h;
    mock_t m;
    call_t c = {0};
    json_t *j;
    char id[64], good[160], bad[160], path[96];
    fanout_t f;
    fan_req_t *reqs;
    int64_t deadline;

    raise_fd_limit();
    if (mock_start(&m, extra) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    uv_loop_init(&loop);
    h = gt_http_new(&loop);
    CU_ASSERT_FATAL(h != NULL);
    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/allocate"), auth_headers,
                       "{\"pool_id\":\"p\",\"requirements\":{\"tflops\":1,\"vram_mb\":1}}", 5000,
                       &c) == 0);
    TH_EQ_INT(c.status, 201);
    j = json_of(&c);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "allocation_id")));
    json_decref(j);
    snprintf(good, sizeof(good), "{\"allocation_id\":\"%s\",\"prompt\":\"p\"}", id);
    snprintf(bad, sizeof(bad), "{\"allocation_id\":\"alloc-none\",\"prompt\":\"p\"}");

    memset(&f, 0, sizeof(f));
    reqs = calloc((size_t)n, sizeof(*reqs));
    CU_ASSERT_FATAL(reqs != NULL);
    for (int i = 0; i < n; i++) {
        const char *b = i % 10 == 9 ? bad : good;

        reqs[i].f = &f;
        reqs[i].expect = i % 10 == 9 ? 404 : 200;
        TH_EQ_INT(gt_http_request(h, "POST", url(&m, "/v1/inference"), auth_headers, b, strlen(b),
                                  30000, on_fan, &reqs[i]),
                  0);
    }
    TH_EQ_INT(gt_http_in_flight(h), n);
    deadline = th_now_ms() + 60000;
    while (f.done < n && th_now_ms() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    TH_EQ_INT(f.done, n);
    TH_EQ_INT(f.ok, n - n / 10);
    TH_EQ_INT(f.not_found, n / 10);
    TH_EQ_INT(f.other, 0);
    TH_EQ_INT(gt_http_in_flight(h), 0);
    /* The mock held many of them at once: its latency overlaps them. */
    {
        int64_t peak = stat_of(&loop, h, &m, "peak_concurrent_requests");

        if (peak < n / 4)
            fprintf(stderr, "  peak_concurrent_requests %lld < %d\n", (long long)peak, n / 4);
        CU_ASSERT(peak >= n / 4);
    }
    snprintf(path, sizeof(path), "/v1/allocate/%s", id);
    CU_ASSERT(run_call(&loop, h, "DELETE", url(&m, path), auth_headers, NULL, 5000, &c) == 0);
    TH_EQ_INT(c.status, 204);
    TH_EQ_INT(stat_of(&loop, h, &m, "outstanding_allocations"), 0);
    call_clear(&c);
    free(reqs);

    http_close(&loop, h);
    mock_stop(&m);
}

static void test_timeout(void)
{
    static const char *const extra[] = {"--latency-ms", "200-200", NULL};
    uv_loop_t loop;
    gt_http_t *h;
    mock_t m;
    call_t c = {0};
    json_t *j;
    char body[160], path[96], id[64];
    int64_t t0;

    if (mock_start(&m, extra) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    uv_loop_init(&loop);
    h = gt_http_new(&loop);
    CU_ASSERT_FATAL(h != NULL);
    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/allocate"), auth_headers,
                       "{\"pool_id\":\"p\",\"requirements\":{\"tflops\":1}}", 5000, &c) == 0);
    TH_EQ_INT(c.status, 201);
    j = json_of(&c);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "allocation_id")));
    json_decref(j);

    snprintf(body, sizeof(body), "{\"allocation_id\":\"%s\",\"prompt\":\"slow\"}", id);
    t0 = th_now_ms();
    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/inference"), auth_headers, body, 50, &c) ==
              0);
    TH_EQ_INT(c.timed_out, 1);
    TH_EQ_INT(c.status, 0);
    TH_EQ_INT(c.curl_code, CURLE_OPERATION_TIMEDOUT);
    CU_ASSERT(th_now_ms() - t0 < 200);
    /* The same call with room to finish succeeds. */
    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/inference"), auth_headers, body, 5000, &c) ==
              0);
    TH_EQ_INT(c.status, 200);
    TH_EQ_INT(c.timed_out, 0);

    snprintf(path, sizeof(path), "/v1/allocate/%s", id);
    CU_ASSERT(run_call(&loop, h, "DELETE", url(&m, path), auth_headers, NULL, 5000, &c) == 0);
    TH_EQ_INT(c.status, 204);
    call_clear(&c);
    http_close(&loop, h);
    mock_stop(&m);
}

static void test_retry_after(void)
{
    static const char *const extra[] = {"--capacity-tflops", "1", NULL};
    static const char one[] = "{\"pool_id\":\"p\",\"requirements\":{\"tflops\":1}}";
    uv_loop_t loop;
    gt_http_t *h;
    mock_t m;
    call_t c = {0};
    json_t *j;
    char path[96];

    if (mock_start(&m, extra) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    uv_loop_init(&loop);
    h = gt_http_new(&loop);
    CU_ASSERT_FATAL(h != NULL);
    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/allocate"), auth_headers, one, 5000, &c) ==
              0);
    TH_EQ_INT(c.status, 201);
    j = json_of(&c);
    snprintf(path, sizeof(path), "/v1/allocate/%s",
             json_string_value(json_object_get(j, "allocation_id")));
    json_decref(j);

    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/allocate"), auth_headers, one, 5000, &c) ==
              0);
    TH_EQ_INT(c.status, 429);
    TH_EQ_INT(c.retry_after_ms, 1000);
    j = json_of(&c);
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
              "pool_exhausted");
    json_decref(j);

    CU_ASSERT(run_call(&loop, h, "DELETE", url(&m, path), auth_headers, NULL, 5000, &c) == 0);
    TH_EQ_INT(c.status, 204);
    TH_EQ_INT(c.retry_after_ms, -1);
    call_clear(&c);
    http_close(&loop, h);
    mock_stop(&m);
}

typedef struct abort_state {
    int done, aborted, ok;
    gt_http_t *h;
    int free_from_cb; /* the first completion frees the client */
} abort_state_t;

static void on_abort(const gt_http_response_t *resp, void *arg)
{
    abort_state_t *s = arg;

    s->done++;
    if (resp->curl_code == CURLE_ABORTED_BY_CALLBACK) {
        s->aborted++;
        CU_ASSERT(resp->error != NULL);
        TH_EQ_INT(resp->status, 0);
    } else if (resp->status == 200) {
        s->ok++;
        if (s->free_from_cb) {
            s->free_from_cb = 0;
            gt_http_free(s->h);
            /* Refused once closing: the callback would never run. */
            TH_EQ_INT(gt_http_request(s->h, "GET", "http://127.0.0.1:1/", NULL, NULL, 0, 100,
                                      on_abort, s),
                      -1);
        }
    }
}

static void on_free_timer(uv_timer_t *t)
{
    abort_state_t *s = t->data;

    TH_EQ_INT(gt_http_in_flight(s->h), 50);
    gt_http_free(s->h);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_free_in_flight(void)
{
    static const char *const extra[] = {"--latency-ms", "300-300", NULL};
    uv_loop_t loop;
    uv_timer_t timer;
    gt_http_t *h;
    mock_t m;
    call_t c = {0};
    json_t *j;
    char body[160], id[64];
    abort_state_t s;

    if (mock_start(&m, extra) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    uv_loop_init(&loop);
    h = gt_http_new(&loop);
    CU_ASSERT_FATAL(h != NULL);
    CU_ASSERT(run_call(&loop, h, "POST", url(&m, "/v1/allocate"), auth_headers,
                       "{\"pool_id\":\"p\",\"requirements\":{\"tflops\":1}}", 5000, &c) == 0);
    j = json_of(&c);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "allocation_id")));
    json_decref(j);
    call_clear(&c);
    snprintf(body, sizeof(body), "{\"allocation_id\":\"%s\",\"prompt\":\"x\"}", id);

    /* 50 slow requests; the client is freed 100 ms in, while they wait. */
    memset(&s, 0, sizeof(s));
    s.h = h;
    for (int i = 0; i < 50; i++)
        TH_EQ_INT(gt_http_request(h, "POST", url(&m, "/v1/inference"), auth_headers, body,
                                  strlen(body), 10000, on_abort, &s),
                  0);
    uv_timer_init(&loop, &timer);
    timer.data = &s;
    uv_timer_start(&timer, on_free_timer, 100, 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once every handle is closed */
    TH_EQ_INT(s.done, 50);
    TH_EQ_INT(s.aborted, 50);
    TH_EQ_INT(uv_loop_close(&loop), 0);

    /* Freed from inside a completion: one fast request, 20 slow ones. */
    uv_loop_init(&loop);
    h = gt_http_new(&loop);
    CU_ASSERT_FATAL(h != NULL);
    memset(&s, 0, sizeof(s));
    s.h = h;
    s.free_from_cb = 1;
    for (int i = 0; i < 20; i++)
        TH_EQ_INT(gt_http_request(h, "POST", url(&m, "/v1/inference"), auth_headers, body,
                                  strlen(body), 10000, on_abort, &s),
                  0);
    TH_EQ_INT(
        gt_http_request(h, "GET", url(&m, "/v1/stats"), auth_headers, NULL, 0, 10000, on_abort, &s),
        0);
    uv_run(&loop, UV_RUN_DEFAULT);
    TH_EQ_INT(s.done, 21);
    TH_EQ_INT(s.ok, 1);
    TH_EQ_INT(s.aborted, 20);
    TH_EQ_INT(uv_loop_close(&loop), 0);

    /* A request to nowhere fails with a transport error, not a status. */
    uv_loop_init(&loop);
    h = gt_http_new(&loop);
    CU_ASSERT_FATAL(h != NULL);
    {
        char u[64];

        snprintf(u, sizeof(u), "http://127.0.0.1:%d/", th_free_port());
        CU_ASSERT(run_call(&loop, h, "GET", u, NULL, NULL, 5000, &c) == 0);
        TH_EQ_INT(c.status, 0);
        TH_EQ_INT(c.curl_code, CURLE_COULDNT_CONNECT);
        TH_EQ_INT(c.timed_out, 0);
        call_clear(&c);
    }
    http_close(&loop, h);
    mock_stop(&m);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"round_trip", test_round_trip},
        {"unauthorized", test_unauthorized},
        {"concurrent", test_concurrent},
        {"timeout", test_timeout},
        {"retry_after", test_retry_after},
        {"free_in_flight", test_free_in_flight},
        {NULL, NULL},
    };
    return th_run("http", tests);
}
