/* test_cli_ops.c - the operator commands on real processes: `gantry config check` (and the
 * daemons refusing the same file), `gantry allocations` against the mock HostedAI, and
 * `gantry dlq list|replay` against gantry-kafka-dev. */
#include <curl/curl.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e/cluster.h"
#include "base64.h"
#include "harness.h"
#include "message.h"

#define RUN_TIMEOUT_MS 60000
#define MOCK_KEY "ops-test-key"

typedef struct run {
    int code; /* exit code, or -1 when it did not exit in time */
    char out[32768];
    char err[16384];
} run_t;

static th_proc_t kafka, mock;
static char bootstrap[256], mock_url[192];
static int started;

static void read_file_into(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, len - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

/* Runs a built binary (rel to the build dir) with args, collecting stdout,
 * stderr and the exit code. */
static void run_bin(run_t *r, const char *rel, const char *const *args)
{
    const char *argv[40];
    size_t n = 0;
    argv[n++] = th_bin(rel);
    for (size_t i = 0; args[i] && n < 39; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char errpath[] = "/tmp/gantry-cli-ops-err-XXXXXX";
    int efd = mkstemp(errpath);
    close(efd);
    memset(r, 0, sizeof(*r));
    r->code = -1;
    th_proc_t p;
    CU_ASSERT_FATAL(th_proc_start(&p, argv, errpath) == 0);
    int64_t deadline = th_now_ms() + RUN_TIMEOUT_MS;
    size_t used = 0;
    for (;;) {
        int left = (int)(deadline - th_now_ms());
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = p.out_fd, .events = POLLIN};
        if (poll(&pfd, 1, left) <= 0)
            continue;
        char tmp[4096];
        ssize_t got = read(p.out_fd, tmp, sizeof(tmp));
        if (got <= 0)
            break;
        size_t room = sizeof(r->out) - 1 - used;
        size_t take = (size_t)got < room ? (size_t)got : room;
        memcpy(r->out + used, tmp, take);
        used += take;
    }
    r->out[used] = '\0';
    int left = (int)(deadline - th_now_ms());
    int st = th_proc_stop(&p, 0, left > 0 ? left : 1);
    if (st >= 0 && WIFEXITED(st))
        r->code = WEXITSTATUS(st);
    read_file_into(errpath, r->err, sizeof(r->err));
    unlink(errpath);
}

static void run_gantry(run_t *r, const char *const *args)
{
    run_bin(r, "tools/gantry", args);
}

static int start_services(void)
{
    if (started)
        return 0;
    const char *kargv[] = {th_bin("tools/gantry-kafka-dev"), "--brokers", "1", NULL};
    if (th_proc_start(&kafka, kargv, "/dev/null") != 0 ||
        th_proc_wait_line(&kafka, "bootstrap=", bootstrap, sizeof(bootstrap), 20000) != 0)
        return -1;
    const char *margv[] = {
        th_bin("tools/gantry-mock-hostedai"), "--port", "0", "--api-key", MOCK_KEY, NULL};
    char addr[128];
    if (th_proc_start(&mock, margv, "/dev/null") != 0 ||
        th_proc_wait_line(&mock, "listening=", addr, sizeof(addr), 10000) != 0)
        return -1;
    snprintf(mock_url, sizeof(mock_url), "http://%s", addr);
    started = 1;
    return 0;
}

/* A configuration naming the services; extra_pool adds a pool nobody serves. */
static const char *ops_config(int extra_pool)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"kafka\": {\"bootstrap_servers\": \"%s\"},"
             " \"pools\": {\"pool-a\": {\"endpoint\": \"%s\", \"api_key\": \"%s\"}%s},"
             " \"models\": {\"m\": {\"pool\": \"pool-a\","
             "   \"requirements\": {\"tflops\": 1, \"vram_mb\": 10}}}}",
             bootstrap, mock_url, MOCK_KEY,
             extra_pool ? ", \"gone\": {\"endpoint\": \"http://127.0.0.1:1\", \"api_key\": \"x\"}"
                        : "");
    return th_tmpfile(".json", text);
}

/* ---- config check ------------------------------------------------------ */

static const char *bad_config =
    "{\"kafka\": {},"
    " \"pools\": {\"p\": {\"endpoint\": \"ftp://x\", \"api_key\": \"k\"}},"
    " \"models\": {\"m\": {\"pool\": \"nope\"}},"
    " \"worker\": {\"max_in_flight\": 0, \"colour\": \"red\"},"
    " \"reaper\": {\"lease_ttl_ms\": 1000}}";

static void test_config_check_reports_every_problem(void)
{
    const char *path = th_tmpfile(".json", bad_config);
    run_t r;
    run_gantry(&r, (const char *[]){"config", "check", "--config", path, NULL});
    TH_EQ_INT(r.code, 1);
    const char *expect[] = {"kafka.bootstrap_servers: is required",
                            "pools.p: endpoint must be an http:// or https:// URL",
                            "models.m: pool \"nope\" is not declared in pools",
                            "worker.max_in_flight: must be an integer in [1, 100000]",
                            "worker.colour: unknown key",
                            "reaper.lease_ttl_ms: must exceed twice worker.heartbeat_ms",
                            "reaper.lease_ttl_ms: must be at least the Kafka consumer session "
                            "timeout (session.timeout.ms 10000, the default)",
                            "7 problem(s)",
                            NULL};
    for (const char **e = expect; *e; e++) {
        if (!strstr(r.err, *e))
            fprintf(stderr, "  missing \"%s\" in:\n%s\n", *e, r.err);
        CU_ASSERT(strstr(r.err, *e) != NULL);
    }
    /* Each line names the file. */
    char *line = strtok(r.err, "\n");
    for (; line; line = strtok(NULL, "\n"))
        CU_ASSERT(strncmp(line, path, strlen(path)) == 0);
    CU_ASSERT(r.out[0] == '\0');
}

static void test_daemons_refuse_the_same_file(void)
{
    const char *path = th_tmpfile(".json", bad_config);
    const char *bins[] = {"dispatcher/gantry-dispatcher", "workers/gantry-worker"};
    for (int i = 0; i < 2; i++) {
        run_t r;
        run_bin(&r, bins[i], (const char *[]){"--config", path, NULL});
        if (r.code == 0 || !strstr(r.err, "worker.colour"))
            fprintf(stderr, "  %s: exit %d, stderr:\n%s\n", bins[i], r.code, r.err);
        CU_ASSERT(r.code != 0 && r.code != -1);
        CU_ASSERT(strstr(r.err, "worker.colour: unknown key") != NULL);
        CU_ASSERT(strstr(r.err, "models.m: pool \"nope\"") != NULL);
    }
}

static void test_config_check_ok_and_secrets(void)
{
    const char *secret = th_tmpfile(".key", "s3cr3t-from-file\n");
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9\"},"
             " \"postgres\": {\"conninfo\": \"host=db\", \"password_file\": \"%s\"},"
             " \"pools\": {\"a\": {\"endpoint\": \"http://h\", \"api_key_file\": \"%s\"}},"
             " \"models\": {\"m1\": {\"pool\": \"a\", \"lane\": \"fast\"}}}",
             secret, secret);
    const char *path = th_tmpfile(".json", text);
    run_t r;
    run_gantry(&r, (const char *[]){"config", "check", "--config", path, NULL});
    TH_EQ_INT(r.code, 0);
    CU_ASSERT(strstr(r.out, ": ok") != NULL);
    CU_ASSERT(strstr(r.out, "models     1: m1") != NULL);
    CU_ASSERT(strstr(r.out, "lanes      1: fast") != NULL);
    CU_ASSERT(strstr(r.out, "s3cr3t") == NULL && strstr(r.err, "s3cr3t") == NULL);

    run_gantry(&r, (const char *[]){"config", "check", "--config", path, "--quiet", NULL});
    TH_EQ_INT(r.code, 0);
    TH_EQ_STR(r.out, "");
    run_gantry(&r, (const char *[]){"config", "frobnicate", NULL});
    TH_EQ_INT(r.code, 2);
    run_gantry(&r, (const char *[]){"config", "check", "--config", "/nonexistent.json", NULL});
    TH_EQ_INT(r.code, 1);
    CU_ASSERT(strstr(r.err, "/nonexistent.json: cannot open") != NULL);
}

/* ---- allocations ------------------------------------------------------- */

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p, (void)u;
    return s * n;
}

static long mock_call(const char *method, const char *path, const char *body)
{
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof(url), "%s%s", mock_url, path);
    struct curl_slist *h = curl_slist_append(NULL, "Authorization: Bearer " MOCK_KEY);
    h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

static int count_lines_with(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void test_allocations_lists_holders_and_ages(void)
{
    CU_ASSERT_FATAL(start_services() == 0);
    const char *cfg = ops_config(0);
    run_t r;
    run_gantry(&r, (const char *[]){"allocations", "--config", cfg, NULL});
    TH_EQ_INT(r.code, 0);
    CU_ASSERT(strstr(r.out, "# pool pool-a: 0 outstanding") != NULL);

    for (int i = 0; i < 3; i++) {
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"pool_id\": \"pool-a\", \"requirements\": {\"tflops\": 1, \"vram_mb\": 10,"
                 " \"model\": \"m\"}, \"labels\": {\"holder\": \"worker-%d\", \"task_id\":"
                 " \"task-%d\"}}",
                 i % 2, i);
        TH_EQ_INT(mock_call("POST", "/v1/allocate", body), 201);
    }
    run_gantry(&r, (const char *[]){"allocations", "--config", cfg, "--json", NULL});
    TH_EQ_INT(r.code, 0);
    json_t *ids = json_array();
    int n = 0, holders0 = 0;
    for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n"), n++) {
        json_t *a = json_loads(line, 0, NULL);
        CU_ASSERT_FATAL(a != NULL);
        TH_EQ_STR(json_string_value(json_object_get(a, "pool")), "pool-a");
        TH_EQ_STR(json_string_value(json_object_get(a, "model")), "m");
        const char *holder = json_string_value(json_object_get(a, "holder"));
        const char *task = json_string_value(json_object_get(a, "task_id"));
        CU_ASSERT(holder && task && strncmp(task, "task-", 5) == 0);
        holders0 += holder && strcmp(holder, "worker-0") == 0;
        CU_ASSERT(json_integer_value(json_object_get(a, "age_ms")) >= 0);
        json_array_append(ids, json_object_get(a, "allocation_id"));
        json_decref(a);
    }
    TH_EQ_INT(n, 3);
    TH_EQ_INT(holders0, 2);

    /* Released ones disappear; the table names holder and task. */
    char path[256];
    snprintf(path, sizeof(path), "/v1/allocate/%s", json_string_value(json_array_get(ids, 0)));
    long st = mock_call("DELETE", path, NULL);
    CU_ASSERT(st == 200 || st == 204);
    run_gantry(&r, (const char *[]){"allocations", "--config", cfg, NULL});
    TH_EQ_INT(r.code, 0);
    CU_ASSERT(strstr(r.out, "# pool pool-a: 2 outstanding") != NULL);
    CU_ASSERT(strstr(r.out, "HOLDER") && strstr(r.out, "TASK") && strstr(r.out, "AGE"));
    TH_EQ_INT(count_lines_with(r.out, "pool-a       alloc"), 2);
    CU_ASSERT(strstr(r.out, MOCK_KEY) == NULL && strstr(r.err, MOCK_KEY) == NULL);

    /* --min-age-ms filters young ones out. */
    run_gantry(&r,
               (const char *[]){"allocations", "--config", cfg, "--min-age-ms", "3600000", NULL});
    TH_EQ_INT(r.code, 0);
    CU_ASSERT(strstr(r.out, "# total: 0 shown") != NULL);

    /* A pool that cannot be listed: the others are still printed, exit 1. */
    run_gantry(&r, (const char *[]){"allocations", "--config", ops_config(1), NULL});
    TH_EQ_INT(r.code, 1);
    CU_ASSERT(strstr(r.out, "# pool pool-a: 2 outstanding") != NULL);
    CU_ASSERT(strstr(r.err, "pool gone") != NULL);

    for (size_t i = 1; i < json_array_size(ids); i++) {
        snprintf(path, sizeof(path), "/v1/allocate/%s", json_string_value(json_array_get(ids, i)));
        mock_call("DELETE", path, NULL);
    }
    json_decref(ids);
}

/* ---- dlq --------------------------------------------------------------- */

static void dr_count(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    if (!m->err)
        ++*(int *)opaque;
}

/* Produces DLQ entries as the stages write them (gantry.dlq.v1). */
static void produce_dlq(const char *const *originals, const char *const *keys,
                        const char *const *codes, int n)
{
    char err[256];
    int delivered = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    rd_kafka_conf_set_dr_msg_cb(conf, dr_count);
    rd_kafka_conf_set_opaque(conf, &delivered);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    CU_ASSERT_FATAL(rk != NULL);
    for (int i = 0; i < n; i++) {
        char *orig = gt_base64_encode(originals[i], strlen(originals[i]));
        char *key = keys[i] ? gt_base64_encode(keys[i], strlen(keys[i])) : NULL;
        json_t *e =
            json_pack("{s:s, s:{s:s, s:i, s:i}, s:s, s:{s:s, s:s}, s:s, s:o, s:s, s:o}", "schema",
                      "gantry.dlq.v1", "source", "topic", "gantry.requests", "partition", 0,
                      "offset", 100 + i, "stage", "intake.classify", "error", "code", codes[i],
                      "message", "test\nreason", "original", orig, "original_key",
                      key ? json_string(key) : json_null(), "failed_at", "2026-01-01T00:00:00Z",
                      "request_id", keys[i] ? json_string(keys[i]) : json_null());
        char *s = json_dumps(e, JSON_COMPACT);
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("gantry.dlq"), RD_KAFKA_V_VALUE(s, strlen(s)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        free(s);
        json_decref(e);
        free(orig);
        free(key);
    }
    rd_kafka_flush(rk, 20000);
    rd_kafka_destroy(rk);
    TH_EQ_INT(delivered, n);
}

static void test_dlq_list_and_replay(void)
{
    CU_ASSERT_FATAL(start_services() == 0);
    const char *cfg = ops_config(0);
    run_t r;
    /* No DLQ topic yet: nothing ever failed. */
    run_gantry(&r, (const char *[]){"dlq", "list", "--config", cfg, NULL});
    TH_EQ_INT(r.code, 0);
    CU_ASSERT(strstr(r.out, "# 0 entries") != NULL);

    const char *originals[] = {
        "{\"request_id\": \"r-0\", \"model\": \"nope\"}", "{not json at all",
        "{\"request_id\": \"r-2\", \"model\": \"nope\", \"x\": \"\\u00e9\"}"};
    const char *keys[] = {"r-0", NULL, "r-2"};
    const char *codes[] = {"unknown_model", "invalid_json", "unknown_model"};
    produce_dlq(originals, keys, codes, 3);

    run_gantry(&r, (const char *[]){"dlq", "list", "--config", cfg, NULL});
    TH_EQ_INT(r.code, 0);
    CU_ASSERT(strstr(r.out, "# 3 entries") != NULL);
    TH_EQ_INT(count_lines_with(r.out, "unknown_model"), 2);
    CU_ASSERT(strstr(r.out, "0:1 ") && strstr(r.out, "invalid_json") &&
              strstr(r.out, "gantry.requests[0]@101") && strstr(r.out, "test reason"));

    run_gantry(&r, (const char *[]){"dlq", "list", "--config", cfg, "--code", "invalid_json",
                                    "--json", NULL});
    TH_EQ_INT(r.code, 0);
    json_t *e = json_loads(r.out, JSON_DISABLE_EOF_CHECK, NULL);
    CU_ASSERT_FATAL(e != NULL);
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(e, "dlq"), "offset")), 1);
    json_decref(e);

    /* replay needs a filter; dry-run publishes nothing. */
    run_gantry(&r, (const char *[]){"dlq", "replay", "--config", cfg, NULL});
    TH_EQ_INT(r.code, 2);
    run_gantry(&r, (const char *[]){"dlq", "replay", "--config", cfg, "--code", "unknown_model",
                                    "--dry-run", NULL});
    TH_EQ_INT(r.code, 0);
    TH_EQ_INT(count_lines_with(r.out, "would replay"), 2);
    TH_EQ_INT(th_topic_count(bootstrap, "gantry.requests"), 0);

    /* By code: both unknown_model entries, original key and bytes. */
    run_gantry(&r,
               (const char *[]){"dlq", "replay", "--config", cfg, "--code", "unknown_model", NULL});
    TH_EQ_INT(r.code, 0);
    CU_ASSERT(strstr(r.out, "replayed 2 of 2") != NULL);
    json_t *all = th_kafka_read_all(bootstrap, "gantry.requests");
    TH_EQ_INT(json_array_size(all), 2);
    int seen = 0;
    size_t i;
    json_t *m;
    json_array_foreach (all, i, m) {
        const char *k = json_string_value(json_object_get(m, "key"));
        const char *v = json_string_value(json_object_get(m, "value"));
        if (k && strcmp(k, "r-0") == 0 && v && strcmp(v, originals[0]) == 0)
            seen |= 1;
        if (k && strcmp(k, "r-2") == 0 && v && strcmp(v, originals[2]) == 0)
            seen |= 2;
    }
    TH_EQ_INT(seen, 3);
    json_decref(all);

    /* By offset: the unkeyed one, to another topic; a missing offset fails. */
    run_gantry(&r, (const char *[]){"dlq", "replay", "--config", cfg, "--offset", "0:1", "--to",
                                    "ops.replayed", NULL});
    TH_EQ_INT(r.code, 0);
    all = th_kafka_read_all(bootstrap, "ops.replayed");
    TH_EQ_INT(json_array_size(all), 1);
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(all, 0), "value")), originals[1]);
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(all, 0), "key")), "");
    json_decref(all);
    run_gantry(&r, (const char *[]){"dlq", "replay", "--config", cfg, "--offset", "0:99", NULL});
    TH_EQ_INT(r.code, 1);
    CU_ASSERT(strstr(r.err, "not found") != NULL);
    run_gantry(&r, (const char *[]){"dlq", "replay", "--config", cfg, "--offset", "x:1", NULL});
    TH_EQ_INT(r.code, 2);
    /* The DLQ itself is untouched by replays. */
    TH_EQ_INT(th_topic_count(bootstrap, "gantry.dlq"), 3);
}

static void stop_services(void)
{
    if (!started)
        return;
    th_proc_stop(&mock, SIGTERM, 10000);
    th_proc_stop(&kafka, SIGTERM, 10000);
    started = 0;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    static const th_test_t tests[] = {
        {"config check reports every problem with its key path",
         test_config_check_reports_every_problem},
        {"dispatcher and worker refuse the same file", test_daemons_refuse_the_same_file},
        {"config check summary, *_file secrets never printed", test_config_check_ok_and_secrets},
        {"allocations lists holders, tasks and ages of every pool",
         test_allocations_lists_holders_and_ages},
        {"dlq list and replay by code and offset", test_dlq_list_and_replay},
        {NULL, NULL},
    };
    int rc = th_run("cli_ops", tests);
    stop_services();
    curl_global_cleanup();
    return rc;
}
