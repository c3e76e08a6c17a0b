/* test_mock_hostedai.c - tests of the mock HostedAI server (tools/mock_hostedai.c). */
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

#define KEY "test-key-mock"
#define BIN "tools/gantry-mock-hostedai"

typedef struct mock {
    th_proc_t proc;
    char base[96];
    CURL *easy; /* one handle: its connection is reused across calls */
} mock_t;

typedef struct reply {
    long status;
    long retry_after; /* seconds, -1 when absent */
    json_t *json;     /* parsed body or NULL */
} reply_t;

static int mock_start(mock_t *m, const char *const *extra)
{
    memset(m, 0, sizeof(*m));
    if (th_mock_hostedai_start(&m->proc, KEY, extra, m->base, sizeof(m->base)) != 0)
        return -1;
    m->easy = curl_easy_init();
    return m->easy ? 0 : -1;
}

static void mock_stop(mock_t *m)
{
    curl_easy_cleanup(m->easy);
    TH_EQ_INT(th_proc_stop(&m->proc, SIGTERM, 10000), 0);
}

static size_t on_header(char *d, size_t sz, size_t nm, void *arg)
{
    reply_t *r = arg;

    if (sz * nm > 12 && strncasecmp(d, "Retry-After:", 12) == 0)
        r->retry_after = strtol(d + 12, NULL, 10);
    return sz * nm;
}

/* A blocking call; key NULL sends no Authorization. Returns the reply
 * (status 0 on a transport error); free with reply_free. */
static reply_t call(mock_t *m, const char *method, const char *path, const char *body,
                    const char *key)
{
    reply_t r = {0, -1, NULL};
    char *b = NULL;
    struct curl_slist *h = NULL;
    char url[256], auth[128];

    snprintf(url, sizeof(url), "%s%s", m->base, path);
    curl_easy_reset(m->easy);
    curl_easy_setopt(m->easy, CURLOPT_URL, url);
    curl_easy_setopt(m->easy, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(m->easy, CURLOPT_POSTFIELDS, body);
        h = curl_slist_append(h, "Content-Type: application/json");
    }
    if (key) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(m->easy, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(m->easy, CURLOPT_WRITEFUNCTION, th_collect);
    curl_easy_setopt(m->easy, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(m->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(m->easy, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(m->easy, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(m->easy, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(m->easy) == CURLE_OK)
        curl_easy_getinfo(m->easy, CURLINFO_RESPONSE_CODE, &r.status);
    if (b)
        r.json = json_loads(b, 0, NULL);
    curl_slist_free_all(h);
    free(b);
    return r;
}

static void reply_free(reply_t *r)
{
    json_decref(r->json);
    r->json = NULL;
}

static const char *err_code(const reply_t *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
}

static json_int_t stat(mock_t *m, const char *key)
{
    reply_t r = call(m, "GET", "/v1/stats", NULL, KEY);
    json_int_t v = json_integer_value(json_object_get(r.json, key));

    reply_free(&r);
    return v;
}

static double stat_real(mock_t *m, const char *key)
{
    reply_t r = call(m, "GET", "/v1/stats", NULL, KEY);
    double v = json_number_value(json_object_get(r.json, key));

    reply_free(&r);
    return v;
}

/* Allocates; returns the status and copies the id into id (when 201). */
static long allocate(mock_t *m, double tflops, long vram, int overcommit, char *id, size_t len,
                     long *retry_after)
{
    char body[256];
    reply_t r;
    long st;

    snprintf(body, sizeof(body),
             "{\"pool_id\":\"pool-a\",\"requirements\":{\"tflops\":%g,\"vram_mb\":%ld,"
             "\"model\":\"m1\"},\"overcommit\":%s,\"labels\":{\"holder\":\"worker-7\","
             "\"task_id\":\"task-%g-%ld\"}}",
             tflops, vram, overcommit ? "true" : "false", tflops, vram);
    r = call(m, "POST", "/v1/allocate", body, KEY);
    st = r.status;
    if (retry_after)
        *retry_after = r.retry_after;
    if (id && st == 201)
        snprintf(id, len, "%s", json_string_value(json_object_get(r.json, "allocation_id")));
    reply_free(&r);
    return st;
}

static long release(mock_t *m, const char *id)
{
    char path[128];
    reply_t r;
    long st;

    snprintf(path, sizeof(path), "/v1/allocate/%.100s", id); /* ids are short */
    r = call(m, "DELETE", path, NULL, KEY);
    st = r.status;
    reply_free(&r);
    return st;
}

static void test_capacity(void)
{
    static const char *const extra[] = {"--capacity-tflops", "10", "--vram-mb", "1000", NULL};
    mock_t m;
    char a[64], b[64], c[64];
    long ra;

    if (mock_start(&m, extra) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    TH_EQ_INT(allocate(&m, 6, 100, 0, a, sizeof(a), &ra), 201);
    TH_EQ_INT(ra, -1);
    /* Fits the pool but not what is left: full, come back later. */
    TH_EQ_INT(allocate(&m, 6, 100, 0, NULL, 0, &ra), 429);
    TH_EQ_INT(ra, 1);
    TH_EQ_INT(allocate(&m, 1, 950, 0, NULL, 0, &ra), 429);
    /* Larger than the whole pool: never fits. */
    TH_EQ_INT(allocate(&m, 10.5, 100, 0, NULL, 0, &ra), 409);
    TH_EQ_INT(ra, -1);
    TH_EQ_INT(allocate(&m, 1, 1001, 1, NULL, 0, NULL), 409);
    {
        reply_t r = call(&m, "POST", "/v1/allocate",
                         "{\"pool_id\":\"p\",\"requirements\":{\"tflops\":11}}", KEY);

        TH_EQ_INT(r.status, 409);
        TH_EQ_STR(err_code(&r), "insufficient_capacity");
        reply_free(&r);
    }
    /* Overcommit goes past what is left. */
    TH_EQ_INT(allocate(&m, 6, 100, 1, b, sizeof(b), NULL), 201);
    TH_EQ_INT(allocate(&m, 4, 800, 1, c, sizeof(c), NULL), 201);
    CU_ASSERT(stat_real(&m, "used_tflops") > 15.99 && stat_real(&m, "used_tflops") < 16.01);
    TH_EQ_INT(stat(&m, "used_vram_mb"), 1000);
    TH_EQ_INT(stat(&m, "outstanding_allocations"), 3);
    TH_EQ_INT(stat(&m, "rejected_capacity"), 5);
    TH_EQ_INT(stat(&m, "allocations_total"), 3);
    TH_EQ_INT(stat(&m, "capacity_vram_mb"), 1000);

    TH_EQ_INT(release(&m, a), 204);
    TH_EQ_INT(release(&m, a), 404);
    TH_EQ_INT(release(&m, "alloc-999"), 404);
    TH_EQ_INT(release(&m, b), 204);
    /* Room again for a non-overcommitted 6 (4 in use). */
    TH_EQ_INT(allocate(&m, 6, 100, 0, a, sizeof(a), NULL), 201);
    TH_EQ_INT(release(&m, a), 204);
    TH_EQ_INT(release(&m, c), 204);
    TH_EQ_INT(stat(&m, "outstanding_allocations"), 0);
    TH_EQ_INT(stat(&m, "used_vram_mb"), 0);
    CU_ASSERT(stat_real(&m, "used_tflops") == 0);
    TH_EQ_INT(stat(&m, "releases_total"), 4);
    mock_stop(&m);
}

static void test_bad_requests(void)
{
    static const char *const bodies[] = {
        "not json",
        "[1,2]",
        "{\"requirements\":{\"tflops\":1}}",
        "{\"pool_id\":\"p\"}",
        "{\"pool_id\":\"p\",\"requirements\":{\"tflops\":\"lots\"}}",
        "{\"pool_id\":\"p\",\"requirements\":{\"vram_mb\":-1}}",
        "{\"pool_id\":\"p\",\"requirements\":{},\"overcommit\":\"yes\"}",
        "{\"pool_id\":\"p\",\"requirements\":{},\"labels\":{\"holder\":1}}",
    };
    mock_t m;
    reply_t r;

    if (mock_start(&m, NULL) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        r = call(&m, "POST", "/v1/allocate", bodies[i], KEY);
        if (r.status != 400)
            fprintf(stderr, "  body %s\n", bodies[i]);
        TH_EQ_INT(r.status, 400);
        TH_EQ_STR(err_code(&r), "invalid_request");
        reply_free(&r);
    }
    r = call(&m, "POST", "/v1/inference", "{\"prompt\":\"x\"}", KEY);
    TH_EQ_INT(r.status, 400);
    reply_free(&r);
    r = call(&m, "POST", "/v1/inference", "{\"allocation_id\":\"alloc-1\",\"prompt\":\"x\"}", KEY);
    TH_EQ_INT(r.status, 404);
    TH_EQ_STR(err_code(&r), "allocation_not_found");
    reply_free(&r);
    r = call(&m, "GET", "/v1/nope", NULL, KEY);
    TH_EQ_INT(r.status, 404);
    reply_free(&r);
    r = call(&m, "GET", "/v1/allocate", NULL, KEY);
    TH_EQ_INT(r.status, 405);
    reply_free(&r);
    /* Authorization comes first, everywhere. */
    r = call(&m, "GET", "/v1/stats", NULL, NULL);
    TH_EQ_INT(r.status, 401);
    TH_EQ_STR(err_code(&r), "unauthorized");
    reply_free(&r);
    r = call(&m, "GET", "/v1/allocations", NULL, "wrong");
    TH_EQ_INT(r.status, 401);
    reply_free(&r);
    TH_EQ_INT(stat(&m, "unauthorized"), 2);
    TH_EQ_INT(stat(&m, "allocations_total"), 0);
    TH_EQ_INT(stat(&m, "inference_failed"), 2);
    mock_stop(&m);
}

static void test_inference(void)
{
    static const char *const extra[] = {"--latency-ms", "0-0", NULL};
    mock_t m;
    char id[64], body[512];
    reply_t r1, r2;
    json_t *u;

    if (mock_start(&m, extra) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    TH_EQ_INT(allocate(&m, 1, 1, 0, id, sizeof(id), NULL), 201);

    /* Deterministic: the same prompt gives the same text and usage. */
    snprintf(body, sizeof(body),
             "{\"allocation_id\":\"%s\",\"prompt\":\"one two three four five six seven eight "
             "nine ten\",\"temperature\":0.7}",
             id);
    r1 = call(&m, "POST", "/v1/inference", body, KEY);
    r2 = call(&m, "POST", "/v1/inference", body, KEY);
    TH_EQ_INT(r1.status, 200);
    TH_EQ_STR(json_string_value(json_object_get(r1.json, "text")),
              json_string_value(json_object_get(r2.json, "text")));
    CU_ASSERT(strstr(json_string_value(json_object_get(r1.json, "text")),
                     " one two three four five six seven eight") != NULL);
    CU_ASSERT(strstr(json_string_value(json_object_get(r1.json, "text")), "nine") == NULL);
    TH_EQ_STR(json_string_value(json_object_get(r1.json, "model")), "m1");
    u = json_object_get(r1.json, "usage");
    TH_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")), 12); /* 48 bytes */
    CU_ASSERT(json_integer_value(json_object_get(u, "completion_tokens")) >= 8 &&
              json_integer_value(json_object_get(u, "completion_tokens")) <= 63);
    reply_free(&r1);
    reply_free(&r2);

    /* Empty prompt still costs a token; max_tokens caps the completion. */
    snprintf(body, sizeof(body), "{\"allocation_id\":\"%s\",\"prompt\":\"\",\"max_tokens\":3}", id);
    r1 = call(&m, "POST", "/v1/inference", body, KEY);
    TH_EQ_INT(r1.status, 200);
    u = json_object_get(r1.json, "usage");
    TH_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")), 1);
    TH_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")), 3);
    reply_free(&r1);

    /* Chat messages and embedding input. */
    snprintf(body, sizeof(body),
             "{\"allocation_id\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
             id);
    r1 = call(&m, "POST", "/v1/inference", body, KEY);
    TH_EQ_INT(r1.status, 200);
    CU_ASSERT(json_is_string(json_object_get(r1.json, "text")));
    reply_free(&r1);
    snprintf(body, sizeof(body), "{\"allocation_id\":\"%s\",\"input\":[\"a\",\"b c\"]}", id);
    r1 = call(&m, "POST", "/v1/inference", body, KEY);
    TH_EQ_INT(r1.status, 200);
    TH_EQ_INT(json_array_size(json_object_get(r1.json, "embeddings")), 2);
    TH_EQ_INT(json_array_size(json_array_get(json_object_get(r1.json, "embeddings"), 0)), 8);
    reply_free(&r1);

    TH_EQ_INT(stat(&m, "inference_ok"), 5);
    TH_EQ_INT(release(&m, id), 204);
    r1 = call(&m, "POST", "/v1/inference", body, KEY);
    TH_EQ_INT(r1.status, 404);
    reply_free(&r1);
    TH_EQ_INT(stat(&m, "inference_failed"), 1);
    mock_stop(&m);
}

static void test_allocations_list(void)
{
    mock_t m;
    char a[64], b[64];
    reply_t r;
    json_t *list, *e;
    size_t i;
    int seen = 0;

    if (mock_start(&m, NULL) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    TH_EQ_INT(allocate(&m, 2, 20, 0, a, sizeof(a), NULL), 201);
    TH_EQ_INT(allocate(&m, 3, 30, 0, b, sizeof(b), NULL), 201);
    r = call(&m, "GET", "/v1/allocations", NULL, KEY);
    TH_EQ_INT(r.status, 200);
    list = json_object_get(r.json, "allocations");
    TH_EQ_INT(json_array_size(list), 2);
    json_array_foreach (list, i, e) {
        const char *id = json_string_value(json_object_get(e, "allocation_id"));
        json_t *labels = json_object_get(e, "labels");

        CU_ASSERT_FATAL(id != NULL);
        TH_EQ_STR(json_string_value(json_object_get(e, "pool_id")), "pool-a");
        TH_EQ_STR(json_string_value(json_object_get(labels, "holder")), "worker-7");
        CU_ASSERT(json_integer_value(json_object_get(e, "age_ms")) >= 0);
        if (strcmp(id, a) == 0) {
            seen |= 1;
            TH_EQ_STR(json_string_value(json_object_get(labels, "task_id")), "task-2-20");
            TH_EQ_INT(json_integer_value(json_object_get(e, "vram_mb")), 20);
        } else if (strcmp(id, b) == 0) {
            seen |= 2;
            TH_EQ_STR(json_string_value(json_object_get(labels, "task_id")), "task-3-30");
        }
        CU_ASSERT(json_object_get(e, "_t0") == NULL); /* private fields stay private */
    }
    TH_EQ_INT(seen, 3);
    reply_free(&r);
    TH_EQ_INT(release(&m, a), 204);
    TH_EQ_INT(release(&m, b), 204);
    r = call(&m, "GET", "/v1/allocations", NULL, KEY);
    TH_EQ_INT(json_array_size(json_object_get(r.json, "allocations")), 0);
    reply_free(&r);
    mock_stop(&m);
}

/* GET /v1/allocations?label.K=V filters by labels (ANDed). */
static void test_allocations_by_label(void)
{
    mock_t m;
    char a[64], b[64];
    reply_t r;

    if (mock_start(&m, NULL) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    TH_EQ_INT(allocate(&m, 2, 20, 0, a, sizeof(a), NULL), 201);
    TH_EQ_INT(allocate(&m, 3, 30, 0, b, sizeof(b), NULL), 201);
    r = call(&m, "GET", "/v1/allocations?label.task_id=task-3-30", NULL, KEY);
    TH_EQ_INT(r.status, 200);
    TH_EQ_INT(json_array_size(json_object_get(r.json, "allocations")), 1);
    TH_EQ_STR(json_string_value(json_object_get(
                  json_array_get(json_object_get(r.json, "allocations"), 0), "allocation_id")),
              b);
    reply_free(&r);
    r = call(&m, "GET", "/v1/allocations?label.holder=worker-7&label.task_id=task-2-20", NULL, KEY);
    TH_EQ_INT(json_array_size(json_object_get(r.json, "allocations")), 1);
    reply_free(&r);
    r = call(&m, "GET", "/v1/allocations?label.holder=worker-8", NULL, KEY);
    TH_EQ_INT(json_array_size(json_object_get(r.json, "allocations")), 0);
    reply_free(&r);
    r = call(&m, "GET", "/v1/allocations?label.attempt=x", NULL, KEY); /* no such label */
    TH_EQ_INT(json_array_size(json_object_get(r.json, "allocations")), 0);
    reply_free(&r);
    TH_EQ_INT(release(&m, a), 204);
    TH_EQ_INT(release(&m, b), 204);
    mock_stop(&m);
}

/* --release-fail-ms: releases answer 503 for that long from the first one,
 * then work; the allocation stays outstanding (exactly) until then. */
static void test_release_fail_ms(void)
{
    static const char *const extra[] = {"--release-fail-ms", "700", NULL};
    mock_t m;
    char a[64];
    int64_t t0 = th_now_ms();

    if (mock_start(&m, extra) != 0) {
        CU_FAIL("mock did not start");
        return;
    }
    TH_EQ_INT(allocate(&m, 1, 10, 0, a, sizeof(a), NULL), 201);
    long st = release(&m, a);
    TH_EQ_INT(st, 503); /* the first release opens the window */
    TH_EQ_INT(stat(&m, "outstanding_allocations"), 1);
    while (st == 503 && th_now_ms() - t0 < 5000)
        st = release(&m, a);
    TH_EQ_INT(st, 204);
    CU_ASSERT(th_now_ms() - t0 >= 700);
    CU_ASSERT(stat(&m, "releases_refused") >= 1);
    TH_EQ_INT(stat(&m, "outstanding_allocations"), 0);
    TH_EQ_INT(stat(&m, "releases_total"), 1);
    mock_stop(&m);
}

static int is_fault(long st)
{
    return st == 500 || st == 503 || st == 429;
}

static const char *const fault_flags[] = {"--fail-rate",  "0.2", "--seed", "7",
                                          "--latency-ms", "0-0", NULL};

/* The mock's faults_injected.<endpoint> counter. */
static long faults_of(mock_t *m, const char *endpoint)
{
    reply_t s = call(m, "GET", "/v1/stats", NULL, KEY);
    long n = (long)json_integer_value(
        json_object_get(json_object_get(s.json, "faults_injected"), endpoint));
    reply_free(&s);
    return n;
}

/* About a fifth of allocations meet an injected 500/503/429 (a 429 with
 * Retry-After 0 or 1), and a faulted allocation allocates nothing. */
static void test_fault_rate_allocate(void)
{
    enum { N = 2000 };
    mock_t m;
    char id[32];
    int nids = 0, faults = 0;

    CU_ASSERT_FATAL(mock_start(&m, fault_flags) == 0);
    for (int i = 0; i < N; i++) {
        long ra = -1;
        long st = allocate(&m, 0.1, 1, 0, id, sizeof(id), &ra);

        if (st == 201)
            nids++;
        else if (is_fault(st)) {
            faults++;
            if (st == 429)
                CU_ASSERT(ra == 0 || ra == 1);
        } else
            TH_EQ_INT(st, 201);
    }
    /* 20% of 2000 = 400; sigma ~18, so these bounds never flake. */
    if (faults < 300 || faults > 500)
        fprintf(stderr, "  allocate faults %d of %d\n", faults, N);
    CU_ASSERT(faults >= 300 && faults <= 500);
    TH_EQ_INT(nids + faults, N);
    TH_EQ_INT(faults_of(&m, "allocate"), faults);
    TH_EQ_INT(stat(&m, "outstanding_allocations"), nids);
    TH_EQ_INT(stat(&m, "allocations_total"), nids);
    mock_stop(&m);
}

/* Inference and release meet injected faults too; a failed release has
 * released nothing, so retrying it releases exactly once. */
static void test_fault_rate_inference_release(void)
{
    enum { N = 100 };
    mock_t m;
    char ids[N][32];
    int alloc_faults = 0, inf_faults = 0, rel_faults = 0;
    reply_t r;

    CU_ASSERT_FATAL(mock_start(&m, fault_flags) == 0);
    for (int i = 0; i < N; i++) {
        long st, ra;
        while (is_fault(st = allocate(&m, 0.1, 1, 0, ids[i], sizeof(ids[i]), &ra)) &&
               alloc_faults < 10 * N)
            alloc_faults++;
        TH_EQ_INT(st, 201);
    }
    for (int i = 0; i < 200; i++) {
        char body[128];

        snprintf(body, sizeof(body), "{\"allocation_id\":\"%s\",\"prompt\":\"x\"}", ids[0]);
        r = call(&m, "POST", "/v1/inference", body, KEY);
        if (is_fault(r.status)) {
            inf_faults++;
            TH_EQ_STR(err_code(&r), "injected_fault");
        } else
            TH_EQ_INT(r.status, 200);
        reply_free(&r);
    }
    CU_ASSERT(inf_faults >= 15 && inf_faults <= 70);
    for (int i = 0; i < N; i++) {
        long st;

        while (is_fault(st = release(&m, ids[i])) && rel_faults < 10 * N)
            rel_faults++;
        TH_EQ_INT(st, 204);
    }
    CU_ASSERT(rel_faults > 0);
    TH_EQ_INT(faults_of(&m, "inference"), inf_faults);
    TH_EQ_INT(faults_of(&m, "release"), rel_faults);
    TH_EQ_INT(faults_of(&m, "total"), alloc_faults + inf_faults + rel_faults);
    TH_EQ_INT(stat(&m, "outstanding_allocations"), 0);
    TH_EQ_INT(stat(&m, "releases_total"), N);
    TH_EQ_INT(stat(&m, "used_vram_mb"), 0);
    mock_stop(&m);
}

/* Stats never fail, and reset clears the counters, not the state. */
static void test_stats_reset(void)
{
    mock_t m;
    char id[32];
    long ra;

    CU_ASSERT_FATAL(mock_start(&m, NULL) == 0);
    TH_EQ_INT(allocate(&m, 0.1, 1, 0, id, sizeof(id), &ra), 201);
    TH_EQ_INT(stat(&m, "allocations_total"), 1);
    reply_t r = call(&m, "POST", "/v1/stats/reset", "", KEY);
    TH_EQ_INT(r.status, 204);
    reply_free(&r);
    TH_EQ_INT(stat(&m, "allocations_total"), 0);
    TH_EQ_INT(stat(&m, "outstanding_allocations"), 1);
    mock_stop(&m);
}

/* Runs the binary with args and returns its exit status (or -1). */
static int run_exit(const char *const *args)
{
    const char *argv[16];
    th_proc_t p;
    char line[256];
    int n = 0, st;

    argv[n++] = th_bin(BIN);
    for (; *args && n < 15; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    if (th_proc_start(&p, argv, "/dev/null") != 0)
        return -1;
    /* EOF on stdout means it exited: wait for it without sleeping. */
    while (th_proc_wait_line(&p, "", line, sizeof(line), 5000) == 0)
        ;
    st = th_proc_stop(&p, SIGKILL, 5000);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void)
{
    static const char *const help[] = {"--help", NULL};
    static const char *const nokey[] = {"--port", "0", NULL};
    static const char *const noport[] = {"--api-key", "k", NULL};
    static const char *const badport[] = {"--port", "x", "--api-key", "k", NULL};
    static const char *const badrate[] = {"--port",      "0", "--api-key", "k",
                                          "--fail-rate", "2", NULL};
    static const char *const badlat[] = {"--port",       "0",   "--api-key", "k",
                                         "--latency-ms", "9-3", NULL};
    static const char *const unknown[] = {"--port", "0", "--api-key", "k", "--bogus", NULL};
    static const char *const noval[] = {"--port", NULL};
    mock_t m;
    static const char *const env_key[] = {NULL};

    unsetenv("GANTRY_MOCK_API_KEY");
    TH_EQ_INT(run_exit(help), 0);
    TH_EQ_INT(run_exit(nokey), 2);
    TH_EQ_INT(run_exit(noport), 2);
    TH_EQ_INT(run_exit(badport), 2);
    TH_EQ_INT(run_exit(badrate), 2);
    TH_EQ_INT(run_exit(badlat), 2);
    TH_EQ_INT(run_exit(unknown), 2);
    TH_EQ_INT(run_exit(noval), 2);

    /* The key from the environment works as well as the flag. */
    setenv("GANTRY_MOCK_API_KEY", "env-key", 1);
    if (mock_start(&m, env_key) != 0) {
        CU_FAIL("mock did not start");
    } else {
        reply_t r = call(&m, "GET", "/v1/stats", NULL, "env-key");

        /* --api-key on the command line wins over the environment. */
        TH_EQ_INT(r.status, 401);
        reply_free(&r);
        r = call(&m, "GET", "/v1/stats", NULL, KEY);
        TH_EQ_INT(r.status, 200);
        reply_free(&r);
        mock_stop(&m);
    }
    unsetenv("GANTRY_MOCK_API_KEY");
}

static void test_cli_env_key(void)
{
    const char *argv[] = {th_bin(BIN), "--port", "0", NULL};
    mock_t m;
    char addr[64];

    memset(&m, 0, sizeof(m));
    setenv("GANTRY_MOCK_API_KEY", "env-key", 1);
    CU_ASSERT_FATAL(th_proc_start(&m.proc, argv, NULL) == 0);
    unsetenv("GANTRY_MOCK_API_KEY");
    if (th_proc_wait_line(&m.proc, "listening=", addr, sizeof(addr), 10000) != 0) {
        CU_FAIL("mock did not start");
        th_proc_stop(&m.proc, SIGKILL, 1000);
        return;
    }
    snprintf(m.base, sizeof(m.base), "http://%s", addr);
    m.easy = curl_easy_init();
    {
        reply_t r = call(&m, "GET", "/v1/stats", NULL, "env-key");

        TH_EQ_INT(r.status, 200);
        reply_free(&r);
    }
    mock_stop(&m);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"capacity", test_capacity},
        {"bad_requests", test_bad_requests},
        {"inference", test_inference},
        {"allocations_list", test_allocations_list},
        {"allocations_by_label", test_allocations_by_label},
        {"release_fail_ms", test_release_fail_ms},
        {"fault_rate allocate", test_fault_rate_allocate},
        {"fault_rate inference and release", test_fault_rate_inference_release},
        {"stats reset", test_stats_reset},
        {"cli", test_cli},
        {"cli_env_key", test_cli_env_key},
        {NULL, NULL},
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = th_run("mock_hostedai", tests);
    curl_global_cleanup();
    return rc;
}
