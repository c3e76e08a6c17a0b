/* test_providers.c - hosted provider runtimes on real processes: the openai wire
 * format and usage mapping, 429 with Retry-After, a 503 storm opening the
 * breaker and routing to a HostedAI fallback, half-open recovery, deadlines
 * (a HostedAI fallback's allocation released), and two workers sharing a
 * provider limit of 8 in flight through PostgreSQL.
 *
 * One environment for the suite: gantry-kafka-dev, four gantry-mock-openai
 * servers, two gantry-mock-hostedai pools, a fresh database and workers. */
#include <curl/curl.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "harness.h"
#include "pg.h"
#include "provider.h"
#include "schema.h"
#include "slots.h"

#define KEY "sk-test-provider-key"
#define TRACEPARENT "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

typedef struct env {
    int up;
    th_proc_t kafka, main_p, storm, limited, slow, pool, slowpool, worker, w2, w3;
    char bootstrap[256], main_a[64], storm_a[64], limited_a[64], slow_a[64], pool_a[64],
        slowpool_a[64];
    char conninfo[512];
    const char *config;
    char log[256];
    rd_kafka_t *reader, *producer;
    json_t *results, *usage, *events; /* task_id -> result, event_id -> usage, type -> count */
    int invalid;
} env_t;

static env_t E;

/* ---- helpers ------------------------------------------------------------- */

/* GET (body NULL) or POST body to http://addr/path; parsed answer or NULL. */
static json_t *http_json(const char *addr, const char *path, const char *body, const char *key)
{
    char url[256], auth[128];
    char *out = NULL;
    json_t *doc = NULL;
    struct curl_slist *hdrs = NULL;
    if (key) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        hdrs = curl_slist_append(hdrs, auth);
    }
    CURL *c = curl_easy_init();
    snprintf(url, sizeof(url), "http://%s%s", addr, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, th_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    if (curl_easy_perform(c) == CURLE_OK && out)
        doc = json_loads(out, 0, NULL);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    free(out);
    return doc;
}

static long long stat_of(const char *addr, const char *key)
{
    json_t *s = http_json(addr, "/v1/stats", NULL, KEY);
    json_t *v = json_object_get(s, key);
    long long r = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(s);
    return r;
}

static void force_status(const char *addr, int status)
{
    char body[64];
    snprintf(body, sizeof(body), "{\"status\": %d}", status);
    json_t *r = http_json(addr, "/admin/fail", body, NULL);
    TH_EQ_INT(json_integer_value(json_object_get(r, "forced_status")), status);
    json_decref(r);
}

static int start_proc(th_proc_t *p, const char *const argv[], const char *prefix, char *out,
                      size_t len)
{
    if (th_proc_start(p, argv, E.log) != 0)
        return -1;
    return th_proc_wait_line(p, prefix, out, len, 20000);
}

static int start_openai(th_proc_t *p, char *addr, const char *latency)
{
    const char *argv[] = {th_bin("tools/gantry-mock-openai"),
                          "--port",
                          "0",
                          "--api-key",
                          KEY,
                          "--latency-ms",
                          latency,
                          "--retry-after",
                          "1",
                          NULL};
    return start_proc(p, argv, "listening=", addr, 64);
}

static int start_hostedai(th_proc_t *p, char *addr, const char *latency)
{
    const char *argv[] = {th_bin("tools/gantry-mock-hostedai"),
                          "--port",
                          "0",
                          "--api-key",
                          KEY,
                          "--latency-ms",
                          latency,
                          NULL};
    return start_proc(p, argv, "listening=", addr, 64);
}

static int start_worker(th_proc_t *p, const char *id, const char *lanes)
{
    const char *argv[] = {
        th_bin("workers/gantry-worker"), "--config", E.config, "--id", id, "--lanes", lanes, NULL};
    char line[128];
    return start_proc(p, argv, "worker_id=", line, sizeof(line));
}

static rd_kafka_t *kafka_client(rd_kafka_type_t type, const char *group)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", E.bootstrap, err, sizeof(err));
    if (group) {
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

static void publish(const char *id, const char *model, const char *kind, json_t *input,
                    const char *lane, int64_t deadline_in_ms)
{
    char now[40], dl[40], topic[64];
    gt_clock_fmt(gt_clock_wall_ms(), now, sizeof(now));
    json_t *t = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:o, s:{s:f, s:i}, "
                          "s:s, s:i}",
                          "schema", "gantry.task.v1", "task_id", id, "request_id", id, "tenant_id",
                          "acme", "index", 0, "kind", kind, "model", model, "runtime", "openai",
                          "lane", lane, "input", input, "parameters", "temperature", 0.3,
                          "max_tokens", 12, "created_at", now, "attempt", 1);
    if (deadline_in_ms > 0)
        json_object_set_new(
            t, "deadline",
            json_string(gt_clock_fmt(gt_clock_wall_ms() + deadline_in_ms, dl, sizeof(dl))));
    char *s = json_dumps(t, JSON_COMPACT);
    snprintf(topic, sizeof(topic), "gantry.tasks.%s", lane);
    rd_kafka_resp_err_t e =
        rd_kafka_producev(E.producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(id, strlen(id)),
                          RD_KAFKA_V_VALUE(s, strlen(s)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_HEADER("traceparent", TRACEPARENT, -1), RD_KAFKA_V_END);
    TH_EQ_INT(e, 0);
    free(s);
    json_decref(t);
}

static void flush_tasks(void)
{
    TH_EQ_INT(rd_kafka_flush(E.producer, 10000), 0);
}

static void pump_once(void)
{
    static gt_schema_t *sr, *su, *se;
    char why[256];
    if (!sr) {
        sr = gt_schema_embedded("task-result.v1.json", why, sizeof(why));
        su = gt_schema_embedded("usage.v1.json", why, sizeof(why));
        se = gt_schema_embedded("event.v1.json", why, sizeof(why));
    }
    rd_kafka_message_t *m = rd_kafka_consumer_poll(E.reader, 100);
    if (!m)
        return;
    if (m->err) {
        rd_kafka_message_destroy(m);
        return;
    }
    const char *topic = rd_kafka_topic_name(m->rkt);
    json_t *doc = json_loadb(m->payload, m->len, 0, NULL);
    const gt_schema_t *sch = !strcmp(topic, "gantry.task-results") ? sr
                             : !strcmp(topic, "gantry.usage")      ? su
                                                                   : se;
    if (!doc || gt_schema_validate(sch, doc, why, sizeof(why)) != 0) {
        fprintf(stderr, "  invalid message on %s: %s: %.*s\n", topic, doc ? why : "not JSON",
                (int)m->len, (const char *)m->payload);
        E.invalid++;
    } else if (sch == sr) {
        json_object_set(E.results, json_string_value(json_object_get(doc, "task_id")), doc);
    } else if (sch == su) {
        json_object_set(E.usage, json_string_value(json_object_get(doc, "event_id")), doc);
    } else {
        const char *type = json_string_value(json_object_get(doc, "type"));
        json_object_set_new(E.events, type,
                            json_integer(json_integer_value(json_object_get(E.events, type)) + 1));
        if (strncmp(type, "breaker.", 8) == 0) {
            /* Secrets never travel in events. */
            CU_ASSERT(strstr((const char *)m->payload, KEY) == NULL);
            CU_ASSERT(json_is_string(json_object_get(json_object_get(doc, "data"), "provider")));
        }
    }
    json_decref(doc);
    rd_kafka_message_destroy(m);
}

static int have_result(void *id)
{
    return json_object_get(E.results, id) != NULL;
}

static int pump_until(int (*cond)(void *), void *arg, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    while (!cond(arg) && th_now_ms() < end)
        pump_once();
    return cond(arg);
}

static json_t *result_of(const char *id)
{
    if (!pump_until(have_result, (void *)id, 60000))
        fprintf(stderr, "  no result for %s\n", id);
    return json_object_get(E.results, id);
}

static const char *str_at(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static const char *err_code(json_t *r)
{
    return str_at(json_object_get(r, "error"), "code");
}

static int events_of(const char *type)
{
    return (int)json_integer_value(json_object_get(E.events, type));
}

static int event_seen(void *type)
{
    return events_of(type) > 0;
}

static int env_up(void)
{
    char cfg[8192], err[512];
    if (E.up)
        return E.up > 0 ? 0 : -1;
    E.up = -1;
    snprintf(E.log, sizeof(E.log), "%s", th_tmpfile(".log", ""));
    if (th_pg_create_db(E.conninfo, sizeof(E.conninfo)) != 0)
        return -1;
    PGconn *c = gt_pg_connect_sync(E.conninfo, err, sizeof(err));
    if (!c || gt_pg_migrate(c, th_src("migrations"), err, sizeof(err)) < 0) {
        fprintf(stderr, "migrate: %s\n", err);
        if (c)
            PQfinish(c);
        return -1;
    }
    PQfinish(c);
    const char *kargv[] = {th_bin("tools/gantry-kafka-dev"), "--brokers", "1", NULL};
    if (start_proc(&E.kafka, kargv, "bootstrap=", E.bootstrap, sizeof(E.bootstrap)) != 0 ||
        start_openai(&E.main_p, E.main_a, "5-15") != 0 ||
        start_openai(&E.storm, E.storm_a, "2-5") != 0 ||
        start_openai(&E.limited, E.limited_a, "60-80") != 0 ||
        start_openai(&E.slow, E.slow_a, "3000-3000") != 0 ||
        start_hostedai(&E.pool, E.pool_a, "5-10") != 0 ||
        start_hostedai(&E.slowpool, E.slowpool_a, "8000-8000") != 0) {
        fprintf(stderr, "a test process did not start\n");
        return -1;
    }
    snprintf(
        cfg, sizeof(cfg),
        "{\"kafka\": {\"bootstrap_servers\": \"%s\"},"
        " \"postgres\": {\"conninfo\": \"%s\"},"
        " \"pools\": {\"pool\": {\"endpoint\": \"http://%s\", \"api_key\": \"%s\"},"
        "   \"slowpool\": {\"endpoint\": \"http://%s\", \"api_key\": \"%s\"}},"
        " \"providers\": {"
        "  \"main\": {\"runtime\": \"openai\", \"endpoint\": \"http://%s\", \"api_key\": \"%s\"},"
        "  \"storm\": {\"runtime\": \"openai\", \"endpoint\": \"http://%s/v1\", \"api_key\": "
        "\"%s\","
        "    \"breaker\": {\"failures\": 3, \"recovery_ms\": 3000},"
        "    \"retry\": {\"max_retries\": 2, \"base_ms\": 10}},"
        "  \"limited\": {\"runtime\": \"openai\", \"endpoint\": \"http://%s\", \"api_key\": \"%s\","
        "    \"max_in_flight\": 8},"
        "  \"slow\": {\"runtime\": \"openai\", \"endpoint\": \"http://%s\", \"api_key\": \"%s\"},"
        "  \"flaky\": {\"runtime\": \"openai\", \"endpoint\": \"http://%s\", \"api_key\": \"%s\","
        "    \"retry\": {\"max_retries\": 2, \"base_ms\": 10}},"
        "  \"flaky-b\": {\"runtime\": \"openai\", \"endpoint\": \"http://%s\", \"api_key\": \"%s\","
        "    \"retry\": {\"max_retries\": 2, \"base_ms\": 10}}},"
        " \"models\": {"
        "  \"gpt\": {\"provider\": \"main\", \"provider_model\": \"gpt-4o-mini\", \"lane\": "
        "\"prov\"},"
        "  \"stormy\": {\"provider\": \"storm\", \"lane\": \"prov\", \"fallbacks\": [\"local\"]},"
        "  \"stormy-slow\": {\"provider\": \"storm\", \"lane\": \"prov\", \"fallbacks\": "
        "[\"local-slow\"]},"
        "  \"local\": {\"runtime\": \"hostedai\", \"pool\": \"pool\", \"lane\": \"prov\","
        "    \"requirements\": {\"tflops\": 1, \"vram_mb\": 1024}},"
        "  \"local-slow\": {\"runtime\": \"hostedai\", \"pool\": \"slowpool\", \"lane\": \"prov\","
        "    \"requirements\": {\"tflops\": 1, \"vram_mb\": 1024}},"
        "  \"sluggish\": {\"provider\": \"slow\", \"lane\": \"prov\"},"
        "  \"chained\": {\"provider\": \"flaky\", \"lane\": \"prov\", \"fallbacks\": "
        "[\"chained-b\"]},"
        "  \"chained-b\": {\"provider\": \"flaky-b\", \"lane\": \"prov\"},"
        "  \"capped\": {\"provider\": \"limited\", \"lane\": \"limited\"}},"
        " \"worker\": {\"max_in_flight\": 64, \"heartbeat_ms\": 200,"
        "   \"retry\": {\"max_retries\": 3, \"base_ms\": 20, \"max_ms\": 3000}},"
        " \"log\": {\"level\": \"info\"}}",
        E.bootstrap, E.conninfo, E.pool_a, KEY, E.slowpool_a, KEY, E.main_a, KEY, E.storm_a, KEY,
        E.limited_a, KEY, E.slow_a, KEY, E.main_a, KEY, E.main_a, KEY);
    E.config = th_tmpfile(".json", cfg);
    E.results = json_object();
    E.usage = json_object();
    E.events = json_object();
    E.producer = kafka_client(RD_KAFKA_PRODUCER, NULL);
    E.reader = kafka_client(RD_KAFKA_CONSUMER, "test-providers-reader");
    if (!E.producer || !E.reader)
        return -1;
    rd_kafka_poll_set_consumer(E.reader);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(3);
    rd_kafka_topic_partition_list_add(topics, "gantry.task-results", RD_KAFKA_PARTITION_UA);
    rd_kafka_topic_partition_list_add(topics, "gantry.usage", RD_KAFKA_PARTITION_UA);
    rd_kafka_topic_partition_list_add(topics, "gantry.events", RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(E.reader, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (start_worker(&E.worker, "worker-prov-1", "prov") != 0)
        return -1;
    E.up = 1;
    return 0;
}

/* ---- wire format (pure functions) ------------------------------------------ */

static void test_openai_wire(void)
{
    gt_provider_t p = {
        .name = "oa", .runtime = "openai", .endpoint = "http://h:1", .api_key = "sk-1"};
    const gt_runtime_t *rt = gt_runtime_find("openai");
    CU_ASSERT_PTR_NOT_NULL_FATAL(rt);
    CU_ASSERT_PTR_NULL(gt_runtime_find("hostedai"));
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    json_t *params =
        json_pack("{s:f, s:i, s:s}", "temperature", 0.5, "max_tokens", 9, "colour", "red");
    gt_wire_task_t t = {"chat", msgs, params, "gpt-4o", TRACEPARENT};
    gt_wire_auth_t auth = {NULL, 0};
    gt_wire_request_t r;
    const char *why = NULL;
    TH_EQ_INT(rt->build(&p, &t, &auth, &r, &why), 0);
    TH_EQ_STR(r.method, "POST");
    TH_EQ_STR(r.url, "http://h:1/v1/chat/completions");
    TH_EQ_STR(r.headers[0], "Content-Type: application/json");
    TH_EQ_STR(r.headers[1], "Authorization: Bearer sk-1");
    TH_EQ_STR(r.headers[2], "traceparent: " TRACEPARENT);
    CU_ASSERT_PTR_NULL(r.headers[3]);
    json_t *b = json_loadb(r.body, r.body_len, 0, NULL);
    TH_EQ_STR(str_at(b, "model"), "gpt-4o");
    TH_EQ_INT(json_array_size(json_object_get(b, "messages")), 1);
    TH_EQ_INT(json_integer_value(json_object_get(b, "max_tokens")), 9);
    CU_ASSERT_PTR_NULL(json_object_get(b, "colour")); /* not OpenAI's */
    json_decref(b);
    gt_wire_request_free(&r);

    /* generate -> /v1/completions (endpoint given with its /v1), embed -> /v1/embeddings. */
    p.endpoint = "http://h:1/v1";
    json_t *prompt = json_string("once upon");
    t.kind = "generate";
    t.input = prompt;
    TH_EQ_INT(rt->build(&p, &t, &auth, &r, &why), 0);
    TH_EQ_STR(r.url, "http://h:1/v1/completions");
    gt_wire_request_free(&r);
    t.kind = "embed";
    TH_EQ_INT(rt->build(&p, &t, &auth, &r, &why), 0);
    TH_EQ_STR(r.url, "http://h:1/v1/embeddings");
    CU_ASSERT(strstr(r.body, "\"temperature\"") == NULL);
    gt_wire_request_free(&r);
    t.kind = "generate";
    t.input = msgs;
    TH_EQ_INT(rt->build(&p, &t, &auth, &r, &why), -1);
    CU_ASSERT_PTR_NOT_NULL(why);

    /* Usage mapping. */
    gt_wire_answer_t a;
    const char *chat = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"yo\"},"
                       "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":7,"
                       "\"completion_tokens\":2}}";
    t.kind = "chat";
    TH_EQ_INT(rt->parse(&t, chat, strlen(chat), &a, &why), 0);
    TH_EQ_STR(str_at(a.output, "text"), "yo");
    TH_EQ_INT(a.prompt_tokens, 7);
    TH_EQ_INT(a.completion_tokens, 2);
    json_decref(a.output);
    const char *emb = "{\"data\":[{\"embedding\":[0.1,0.2]},{\"embedding\":[0.3,0.4]}],"
                      "\"usage\":{\"prompt_tokens\":4,\"total_tokens\":4}}";
    t.kind = "embed";
    TH_EQ_INT(rt->parse(&t, emb, strlen(emb), &a, &why), 0);
    TH_EQ_INT(json_array_size(json_object_get(a.output, "embedding")), 2);
    TH_EQ_INT(json_array_size(json_object_get(a.output, "embeddings")), 2);
    TH_EQ_INT(a.prompt_tokens, 4);
    TH_EQ_INT(a.completion_tokens, 0);
    json_decref(a.output);
    t.kind = "generate";
    TH_EQ_INT(rt->parse(&t, "{\"choices\":[]}", 14, &a, &why), -1);
    TH_EQ_INT(rt->parse(&t, "nope", 4, &a, &why), -1);
    json_decref(prompt);
    json_decref(msgs);
    json_decref(params);
}

/* ---- worker-process tests ------------------------------------------------------ */

static void test_request_and_usage(void)
{
    CU_ASSERT_FATAL(env_up() == 0);
    json_t *msgs = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content", "be brief",
                             "role", "user", "content", "what carries the requests?");
    publish("p-chat", "gpt", "chat", msgs, "prov", 0);
    flush_tasks();
    json_t *r = result_of("p-chat");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    TH_EQ_STR(str_at(r, "status"), "succeeded");
    TH_EQ_STR(str_at(r, "provider"), "main");
    CU_ASSERT(json_is_null(json_object_get(r, "served_model")));
    CU_ASSERT(json_is_string(json_object_get(json_object_get(r, "output"), "text")));
    json_t *attempts = json_object_get(r, "attempts");
    TH_EQ_INT(json_array_size(attempts), 1);
    TH_EQ_INT(json_integer_value(json_object_get(json_array_get(attempts, 0), "status")), 200);

    /* What the provider saw: path, body, auth, trace context. */
    json_t *stats = http_json(E.main_a, "/v1/stats", NULL, KEY);
    json_t *last = json_object_get(stats, "last_request");
    TH_EQ_STR(str_at(last, "path"), "/v1/chat/completions");
    CU_ASSERT(json_is_true(json_object_get(last, "authorized")));
    /* The task's trace id; the parent is the worker's provider.call span. */
    const char *tp = str_at(last, "traceparent");
    CU_ASSERT(tp && strlen(tp) == strlen(TRACEPARENT) && strncmp(tp, TRACEPARENT, 36) == 0 &&
              strcmp(tp, TRACEPARENT) != 0);
    TH_EQ_STR(str_at(last, "content_type"), "application/json");
    json_t *body = json_object_get(last, "body");
    TH_EQ_STR(str_at(body, "model"), "gpt-4o-mini");
    TH_EQ_INT(json_array_size(json_object_get(body, "messages")), 2);
    TH_EQ_INT(json_integer_value(json_object_get(body, "max_tokens")), 12);

    /* Usage tokens are the provider's own counts, in the result and the usage event. */
    json_t *u = NULL;
    for (int64_t end = th_now_ms() + 10000; !u && th_now_ms() < end; pump_once())
        u = json_object_get(E.usage, "p-chat:usage");
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    TH_EQ_STR(str_at(u, "provider"), "main");
    TH_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")),
              json_integer_value(json_object_get(stats, "prompt_tokens")));
    TH_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")),
              json_integer_value(json_object_get(stats, "completion_tokens")));
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(r, "usage"), "prompt_tokens")),
              json_integer_value(json_object_get(stats, "prompt_tokens")));
    CU_ASSERT(json_integer_value(json_object_get(u, "prompt_tokens")) > 0);
    json_decref(stats);

    publish("p-embed", "gpt", "embed", json_pack("[s, s]", "one", "two"), "prov", 0);
    publish("p-gen", "gpt", "generate", json_string("tell a story"), "prov", 0);
    flush_tasks();
    r = result_of("p-embed");
    TH_EQ_STR(str_at(r, "status"), "succeeded");
    TH_EQ_INT(json_array_size(json_object_get(json_object_get(r, "output"), "embeddings")), 2);
    r = result_of("p-gen");
    TH_EQ_STR(str_at(r, "status"), "succeeded");
    TH_EQ_INT(stat_of(E.main_a, "completions"), 1);
    TH_EQ_INT(stat_of(E.main_a, "embeddings"), 1);
}

static int mock_failed_once(void *addr)
{
    return stat_of(addr, "failed") >= 1;
}

/* A 429 with Retry-After: 1 delays the retry by a second, not by the 20 ms backoff. */
static void test_retry_after(void)
{
    CU_ASSERT_FATAL(env_up() == 0);
    force_status(E.main_a, 429);
    publish("p-429", "gpt", "generate", json_string("patience"), "prov", 0);
    flush_tasks();
    CU_ASSERT_FATAL(th_poll(mock_failed_once, E.main_a, 20000));
    force_status(E.main_a, 0);
    json_t *r = result_of("p-429");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    TH_EQ_STR(str_at(r, "status"), "succeeded");
    json_t *attempts = json_object_get(r, "attempts");
    CU_ASSERT(json_array_size(attempts) >= 2);
    TH_EQ_INT(json_integer_value(json_object_get(json_array_get(attempts, 0), "status")), 429);
    json_t *last = json_array_get(attempts, json_array_size(attempts) - 1);
    TH_EQ_INT(json_integer_value(json_object_get(last, "status")), 200);
    /* Between the 429 and the success: at least the second the provider asked for. */
    CU_ASSERT(json_integer_value(json_object_get(json_object_get(r, "timings"), "inference_ms")) >=
              950);
    /* A 429 says nothing about the provider's health. */
    TH_EQ_INT(events_of("breaker.opened"), 0);
}

/* 503 storm: the breaker opens after 3 failures, tasks go to the HostedAI
 * fallback; once the provider is back, a half-open trial closes it again. */
static void test_breaker_and_fallback(void)
{
    CU_ASSERT_FATAL(env_up() == 0);
    force_status(E.storm_a, 503);
    publish("p-storm-1", "stormy", "generate", json_string("storm one"), "prov", 0);
    flush_tasks();
    json_t *r = result_of("p-storm-1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    TH_EQ_STR(str_at(r, "status"), "succeeded");
    TH_EQ_STR(str_at(r, "provider"), "hostedai");
    TH_EQ_STR(str_at(r, "pool"), "pool");
    TH_EQ_STR(str_at(r, "served_model"), "local");
    json_t *attempts = json_object_get(r, "attempts");
    /* 1 + 2 retries at the storm provider, then allocate/inference/release. */
    TH_EQ_INT(json_array_size(attempts), 6);
    for (int i = 0; i < 3; i++) {
        json_t *a = json_array_get(attempts, (size_t)i);
        TH_EQ_INT(json_integer_value(json_object_get(a, "status")), 503);
        TH_EQ_STR(str_at(a, "provider"), "storm");
        TH_EQ_STR(str_at(a, "model"), "stormy");
    }
    TH_EQ_STR(str_at(json_array_get(attempts, 3), "op"), "allocate");
    TH_EQ_STR(str_at(json_array_get(attempts, 3), "model"), "local");
    CU_ASSERT(pump_until(event_seen, "breaker.opened", 10000));

    /* Open: the next task does not even call the provider. */
    long long before = stat_of(E.storm_a, "requests_total");
    publish("p-storm-2", "stormy", "generate", json_string("storm two"), "prov", 0);
    flush_tasks();
    r = result_of("p-storm-2");
    TH_EQ_STR(str_at(r, "status"), "succeeded");
    TH_EQ_STR(str_at(r, "served_model"), "local");
    attempts = json_object_get(r, "attempts");
    TH_EQ_STR(str_at(json_array_get(attempts, 0), "error"), "circuit breaker open");
    TH_EQ_INT(stat_of(E.storm_a, "requests_total"), before);

    /* An expired deadline on the fallback: its allocation is released. */
    publish("p-storm-late", "stormy-slow", "generate", json_string("too slow"), "prov", 3000);
    flush_tasks();
    r = result_of("p-storm-late");
    TH_EQ_STR(str_at(r, "status"), "expired");
    TH_EQ_STR(err_code(r), "deadline_exceeded");
    CU_ASSERT(json_is_string(json_object_get(r, "allocation_id")));
    TH_EQ_INT(stat_of(E.slowpool_a, "outstanding_allocations"), 0);
    TH_EQ_INT(stat_of(E.slowpool_a, "releases_total"), 1);

    /* Recovery: the provider is back; after recovery_ms one trial closes the breaker. */
    force_status(E.storm_a, 0);
    char id[32];
    json_t *served = NULL;
    for (int i = 0; i < 40 && !served; i++) {
        snprintf(id, sizeof(id), "p-recover-%d", i);
        publish(id, "stormy", "generate", json_string("are you back"), "prov", 0);
        flush_tasks();
        r = result_of(id);
        if (r && !strcmp(str_at(r, "provider") ? str_at(r, "provider") : "", "storm"))
            served = r;
        else
            th_poll(event_seen, "never-an-event", 200); /* pace the probes */
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(served);
    TH_EQ_STR(str_at(served, "status"), "succeeded");
    CU_ASSERT(json_is_null(json_object_get(served, "served_model")));
    CU_ASSERT(pump_until(event_seen, "breaker.closed", 10000));
    /* On a slow machine a trial may come before the storm ends and open it again. */
    CU_ASSERT(events_of("breaker.half_open") >= 1);
    CU_ASSERT(events_of("breaker.opened") >= 1);
    TH_EQ_INT(events_of("breaker.half_open"), events_of("breaker.opened"));
    TH_EQ_INT(stat_of(E.pool_a, "outstanding_allocations"), 0);
}

/* A fallback does not restart the retry count: the model spends 1 + 2
 * retries, its fallback then gets its first try and no retry of its own
 * (both fail here: the same mock answers 503 for both providers). */
static void test_fallback_shares_retries(void)
{
    CU_ASSERT_FATAL(env_up() == 0);
    long long before = stat_of(E.main_a, "requests_total");
    force_status(E.main_a, 503);
    publish("p-chain", "chained", "generate", json_string("try everything"), "prov", 0);
    flush_tasks();
    json_t *r = result_of("p-chain");
    force_status(E.main_a, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    TH_EQ_STR(str_at(r, "status"), "failed");
    TH_EQ_INT(stat_of(E.main_a, "requests_total") - before, 4);
    json_t *attempts = json_object_get(r, "attempts");
    TH_EQ_INT(json_array_size(attempts), 4);
    TH_EQ_STR(str_at(json_array_get(attempts, 2), "model"), "chained");
    TH_EQ_STR(str_at(json_array_get(attempts, 3), "model"), "chained-b");
}

/* A deadline reached during a provider call ends the task as expired. */
static void test_provider_deadline(void)
{
    CU_ASSERT_FATAL(env_up() == 0);
    publish("p-late", "sluggish", "generate", json_string("slowly"), "prov", 700);
    flush_tasks();
    json_t *r = result_of("p-late");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    TH_EQ_STR(str_at(r, "status"), "expired");
    TH_EQ_STR(err_code(r), "deadline_exceeded");
    TH_EQ_STR(str_at(r, "provider"), "slow");
}

/* Slot rows held now (-1 on error). */
static long held_slot_rows(void)
{
    char err[256];
    PGconn *c = gt_pg_connect_sync(E.conninfo, err, sizeof(err));
    long n = -1;
    if (!c)
        return -1;
    PGresult *r = PQexec(c, "SELECT count(*) FROM gantry_provider_slots WHERE holder IS NOT NULL"
                            " AND lease_until > now()");
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return n;
}

static int no_slot_held(void *arg)
{
    (void)arg;
    return held_slot_rows() == 0;
}

typedef struct peak_watch {
    int n;
    long long peak;
} peak_watch_t;

static int all_capped_done(void *arg)
{
    peak_watch_t *w = arg;
    long long now = stat_of(E.limited_a, "concurrent");
    if (now > w->peak)
        w->peak = now;
    pump_once();
    for (int i = 0; i < w->n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "p-cap-%03d", i);
        if (!json_object_get(E.results, id))
            return 0;
    }
    return 1;
}

/* Holds every slot row of the limited provider for a holder that "died" with
 * a lease that lapses in lapse_ms. Returns the rows written. */
static long seed_dead_holder(int lapse_ms)
{
    char err[256], sql[512];
    PGconn *c = gt_pg_connect_sync(E.conninfo, err, sizeof(err));
    long n = -1;
    if (!c)
        return -1;
    snprintf(
        sql, sizeof(sql),
        "INSERT INTO gantry_provider_slots (provider, scope, slot, holder, task_id, lease_until)"
        " SELECT 'limited', '', g, 'dead-worker/1/1', 'lost-task',"
        " now() + interval '%d milliseconds' FROM generate_series(0, 7) g",
        lapse_ms);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
        n = atol(PQcmdTuples(r));
    PQclear(r);
    PQfinish(c);
    return n;
}

/* Two worker processes, one provider limit of 8 in flight: the provider never
 * sees more than 8 requests at once, and every task completes. The slots start
 * held by a dead worker: they come back when its lease lapses. */
static void test_shared_limit(void)
{
    CU_ASSERT_FATAL(env_up() == 0);
    int64_t seeded = gt_clock_wall_ms();
    TH_EQ_INT(seed_dead_holder(1500), 8);
    CU_ASSERT_FATAL(start_worker(&E.w2, "worker-cap-2", "limited") == 0);
    CU_ASSERT_FATAL(start_worker(&E.w3, "worker-cap-3", "limited") == 0);
    peak_watch_t w = {60, 0};
    for (int i = 0; i < w.n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "p-cap-%03d", i);
        publish(id, "capped", "generate", json_sprintf("capped %d", i), "limited", 0);
    }
    flush_tasks();
    int64_t end = th_now_ms() + 90000;
    while (!all_capped_done(&w) && th_now_ms() < end)
        ;
    CU_ASSERT(all_capped_done(&w));
    int ok = 0, by_w2 = 0, by_w3 = 0;
    for (int i = 0; i < w.n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "p-cap-%03d", i);
        json_t *r = json_object_get(E.results, id);
        ok += r && !strcmp(str_at(r, "status"), "succeeded");
        by_w2 += r && !strcmp(str_at(r, "worker_id"), "worker-cap-2");
        by_w3 += r && !strcmp(str_at(r, "worker_id"), "worker-cap-3");
    }
    long long peak = stat_of(E.limited_a, "peak_concurrent");
    fprintf(stderr,
            "  shared limit 8: provider peak %lld (sampled %lld), w2 %d, w3 %d, %lld ms in all\n",
            peak, w.peak, by_w2, by_w3, (long long)(gt_clock_wall_ms() - seeded));
    TH_EQ_INT(ok, w.n);
    CU_ASSERT(by_w2 > 0 && by_w3 > 0); /* both workers took part */
    CU_ASSERT(peak <= 8);
    CU_ASSERT(peak >= 2); /* the limit, not a trickle, shaped the traffic */
    /* At least once: a task redelivered by the rebalance when the second worker
     * joined may have been called twice, never more than 8 at a time. */
    CU_ASSERT(stat_of(E.limited_a, "ok") >= w.n);
    /* Nothing completed before the dead holder's leases lapsed. */
    int64_t earliest = INT64_MAX;
    for (int i = 0; i < w.n; i++) {
        char id[32];
        int64_t at;
        snprintf(id, sizeof(id), "p-cap-%03d", i);
        json_t *r = json_object_get(E.results, id);
        if (r && gt_clock_parse(str_at(r, "completed_at"), &at) == 0 && at < earliest)
            earliest = at;
    }
    CU_ASSERT(earliest != INT64_MAX && earliest - seeded >= 1400);
    /* Every slot row is free again. A release is its own statement, queued
     * when the call ends: it may commit just after the result is out. */
    CU_ASSERT(th_poll(no_slot_held, NULL, 10000));
    TH_EQ_INT(held_slot_rows(), 0);
    TH_EQ_INT(WEXITSTATUS(th_proc_stop(&E.w2, SIGTERM, 30000)), 0);
    TH_EQ_INT(WEXITSTATUS(th_proc_stop(&E.w3, SIGTERM, 30000)), 0);
    TH_EQ_INT(E.invalid, 0); /* every message on the way matched its schema */
}

/* Runs the slot-acquire statement; returns the slot, -1 for none, -2 on error. */
static int acquire_sql(PGconn *c, const char *holder, const char *task)
{
    const char *params[] = {"rerun", "", "2", holder, task, "60000"};
    PGresult *r = PQexecParams(c, gt_slots_sql_acquire, 6, NULL, params, NULL, NULL, 0);
    int slot = PQresultStatus(r) != PGRES_TUPLES_OK ? -2
               : PQntuples(r) == 1                  ? atoi(PQgetvalue(r, 0, 0))
                                                    : -1;
    PQclear(r);
    return slot;
}

/* A re-run of the acquire (gt_pg re-sends one whose connection was lost, and
 * the first attempt may have committed) takes the slot the task already
 * holds, never a second one. */
static void test_slot_acquire_rerun(void)
{
    char err[256];
    CU_ASSERT_FATAL(env_up() == 0);
    PGconn *c = gt_pg_connect_sync(E.conninfo, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    PQclear(PQexec(c, "INSERT INTO gantry_provider_slots (provider, scope, slot)"
                      " VALUES ('rerun', '', 0), ('rerun', '', 1)"));
    int first = acquire_sql(c, "w/inc", "task-a");
    CU_ASSERT(first >= 0);
    TH_EQ_INT(acquire_sql(c, "w/inc", "task-a"), first); /* the re-run */
    int other = acquire_sql(c, "w/inc", "task-b");
    CU_ASSERT(other >= 0 && other != first);
    TH_EQ_INT(acquire_sql(c, "w/inc", "task-c"), -1); /* both held: none left */
    TH_EQ_INT(acquire_sql(c, "w/inc", "task-b"), other);
    PGresult *r = PQexec(c, "SELECT count(*) FROM gantry_provider_slots WHERE provider = 'rerun'"
                            " AND holder = 'w/inc' AND task_id = 'task-a'");
    TH_EQ_STR(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    PQclear(PQexec(c, "DELETE FROM gantry_provider_slots WHERE provider = 'rerun'"));
    PQfinish(c);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"openai wire format and usage mapping", test_openai_wire},
        {"request format and usage over loopback", test_request_and_usage},
        {"429 with Retry-After honoured", test_retry_after},
        {"503 storm: breaker, fallback, deadline, half-open recovery", test_breaker_and_fallback},
        {"a fallback does not restart the retry count", test_fallback_shares_retries},
        {"deadline during a provider call", test_provider_deadline},
        {"two workers share a provider limit of 8", test_shared_limit},
        {"slot acquire is safe to re-run", test_slot_acquire_rerun},
        {NULL, NULL},
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = th_run("providers", tests);
    th_proc_t *procs[] = {&E.worker,  &E.w2,   &E.w3,   &E.main_p,  &E.storm,
                          &E.limited, &E.slow, &E.pool, &E.slowpool};
    for (size_t i = 0; i < sizeof(procs) / sizeof(procs[0]); i++)
        if (procs[i]->pid && !procs[i]->exited)
            th_proc_stop(procs[i], SIGTERM, 10000);
    if (E.reader) /* th_run stopped Kafka: a close would wait for its coordinator */
        rd_kafka_destroy_flags(E.reader, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (E.producer)
        rd_kafka_destroy(E.producer);
    json_decref(E.results);
    json_decref(E.usage);
    json_decref(E.events);
    if (E.kafka.pid)
        th_proc_stop(&E.kafka, SIGTERM, 10000);
    if ((rc || getenv("GANTRY_TEST_VERBOSE")) && E.log[0]) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "tail -n 150 '%s' >&2", E.log);
        if (system(cmd) != 0)
            fprintf(stderr, "log: %s\n", E.log);
    }
    curl_global_cleanup();
    return rc;
}
