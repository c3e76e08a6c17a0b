/* test_e2e_trace.c - trace context and logs on real processes.
 *
 * Trace: requests sent with a known traceparent keep their trace id through the
 * task messages, task results, usage events and rows, and the final result;
 * HostedAI (the mock) and an OpenAI-compatible provider receive it; a loopback
 * OTLP collector (tests/recorder.c) receives valid OTLP JSON spans of that trace
 * with correct parent links. A request with no or an invalid traceparent gets a
 * new trace.
 *
 * Logs: every line of every Gantry process of the run (debug level) is one JSON
 * object with time, level, process and message; lines about a task carry its
 * request_id, task_id and trace_id; no line holds an API key, a prompt or an
 * output. */
#include <dirent.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "recorder.h"

#define OPENAI_KEY "sk-e2e-openai-5b1d0c77"
#define HAI_KEY "e2e-secret-key" /* the pool key tests/e2e/cluster.c configures */
#define COLLECTOR_KEY "otlp-e2e-collector-key"
#define TRACE_A "5f2c1a9e0b7d4c3e8a6f1b2d3c4e5f60" /* HostedAI requests */
#define SPAN_A "a1b2c3d4e5f60718"
#define TRACE_B "0e1d2c3b4a5968778695a4b3c2d1e0f1" /* the OpenAI-compatible provider */
#define SPAN_B "1122334455667788"
#define N_HAI 6
#define N_OAI 2
#define N_ALL (N_HAI + N_OAI + 2)
#define ECHO N_ALL /* one more request, to a provider whose 400 echoes the prompt */

static th_cluster_t cl;
static th_recorder_t *collector, *echoer;
static th_proc_t openai;
static char prompts[N_ALL + 1][128];
static char openai_addr[64];

/* Request i: 0..N_HAI-1 on HostedAI with TRACE_A; then N_OAI on the openai model
 * with TRACE_B; then one without a traceparent and one with an invalid one. */
static const char *rid(int i)
{
    static char b[8][32];
    static int k;
    char *s = b[k++ % 8];
    snprintf(s, 32, "trace-e2e-%d", i);
    return s;
}

static int send_requests(void)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", cl.bootstrap, err, sizeof(err));
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk)
        return -1;
    int rc = 0;
    for (int i = 0; i <= ECHO && rc == 0; i++) {
        json_t *req =
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "schema", "gantry.request.v1", "request_id",
                      rid(i), "tenant_id", "trace-tenant", "kind", "generate", "model",
                      i == ECHO                         ? "echo"
                      : i >= N_HAI && i < N_HAI + N_OAI ? "gpt"
                                                        : "small",
                      "input", prompts[i]);
        char *text = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        const char *tp = i < N_HAI                            ? "00-" TRACE_A "-" SPAN_A "-01"
                         : i < N_HAI + N_OAI                  ? "00-" TRACE_B "-" SPAN_B "-01"
                         : i >= N_HAI + N_OAI + 1 && i < ECHO ? "00-" TRACE_A "-0000000000000000-01"
                         : i == N_HAI + N_OAI                 ? NULL
                                                              : "00-" TRACE_B "-" SPAN_B "-01";
        rd_kafka_resp_err_t e;
        if (tp)
            e = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC("gantry.requests"), RD_KAFKA_V_KEY(rid(i), strlen(rid(i))),
                RD_KAFKA_V_VALUE(text, strlen(text)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_HEADER("traceparent", tp, -1), RD_KAFKA_V_END);
        else
            e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("gantry.requests"),
                                  RD_KAFKA_V_KEY(rid(i), strlen(rid(i))),
                                  RD_KAFKA_V_VALUE(text, strlen(text)),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        free(text);
        rc = e == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
    }
    if (rd_kafka_flush(rk, 20000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = -1;
    rd_kafka_destroy(rk);
    return rc;
}

static int all_results(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= N_ALL + 1;
}

static int all_usage_rows(void *arg)
{
    (void)arg;
    return th_sql_long(cl.conninfo,
                       "SELECT count(*) FROM usage WHERE tenant_id = 'trace-tenant'") >= N_ALL;
}

/* The trace id of a traceparent ("" when absent or malformed), in a rotating buffer. */
static const char *trace_of(const char *tp)
{
    static char b[8][33];
    static int k;
    char *s = b[k++ % 8];
    s[0] = 0;
    if (tp && strlen(tp) == 55) {
        memcpy(s, tp + 3, 32);
        s[32] = 0;
    }
    return s;
}

static int request_index(const char *id)
{
    for (int i = 0; id && i < N_ALL; i++)
        if (strcmp(id, rid(i)) == 0)
            return i;
    return -1;
}

static const char *expected_trace(int i)
{
    return i < N_HAI ? TRACE_A : i < N_HAI + N_OAI ? TRACE_B : NULL;
}

/* Every message of topic about our requests carries the request's trace (a new,
 * valid one for the last two). Returns how many were checked. */
static int check_topic(const char *topic, char fresh[2][33])
{
    json_t *all = th_kafka_read_all(cl.bootstrap, topic);
    size_t k;
    json_t *m;
    int n = 0;
    json_array_foreach (all, k, m) {
        json_t *v = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        int i = request_index(json_string_value(json_object_get(v, "request_id")));
        json_decref(v);
        if (i < 0)
            continue;
        n++;
        const char *tp = json_string_value(json_object_get(m, "traceparent"));
        const char *tr = trace_of(tp);
        if (!tp)
            fprintf(stderr, "  %s: %s has no traceparent\n", topic, rid(i));
        CU_ASSERT(tp && strlen(tp) == 55 && strncmp(tp, "00-", 3) == 0);
        if (expected_trace(i)) {
            TH_EQ_STR(tr, expected_trace(i));
            /* The parent is a Gantry span, not the producer's. */
            CU_ASSERT(tp && strstr(tp, i < N_HAI ? SPAN_A : SPAN_B) == NULL);
        } else {
            char *f = fresh[i - N_HAI - N_OAI];
            CU_ASSERT(strlen(tr) == 32 && strcmp(tr, TRACE_A) != 0 && strcmp(tr, TRACE_B) != 0);
            if (!f[0])
                snprintf(f, 33, "%s", tr);
            TH_EQ_STR(tr, f); /* one trace per request, whatever the topic */
        }
    }
    json_decref(all);
    return n;
}

/* ---- OTLP spans ------------------------------------------------------------------- */

/* Collects every span the collector received (validating the OTLP JSON shape). */
static json_t *collected_spans(void)
{
    json_t *by_id = json_object();
    size_t n = th_recorder_count(collector);
    for (size_t r = 0; r < n; r++) {
        const th_recorded_t *q = th_recorder_get(collector, r);
        TH_EQ_STR(q->path, "/v1/traces");
        TH_EQ_STR(th_recorded_header(q, "Content-Type"), "application/json");
        TH_EQ_STR(th_recorded_header(q, "Authorization"), "Bearer " COLLECTOR_KEY);
        json_t *doc = json_loads(q->body, 0, NULL);
        CU_ASSERT(doc != NULL);
        size_t i, j, k;
        json_t *rs, *ss, *sp;
        json_array_foreach (json_object_get(doc, "resourceSpans"), i, rs) {
            json_t *attr =
                json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
            const char *svc =
                json_string_value(json_object_get(json_object_get(attr, "value"), "stringValue"));
            CU_ASSERT(svc &&
                      (strcmp(svc, "gantry-dispatcher") == 0 || strcmp(svc, "gantry-worker") == 0));
            json_array_foreach (json_object_get(rs, "scopeSpans"), j, ss)
                json_array_foreach (json_object_get(ss, "spans"), k, sp) {
                    const char *tid = json_string_value(json_object_get(sp, "traceId"));
                    const char *sid = json_string_value(json_object_get(sp, "spanId"));
                    const char *st = json_string_value(json_object_get(sp, "startTimeUnixNano"));
                    const char *en = json_string_value(json_object_get(sp, "endTimeUnixNano"));
                    CU_ASSERT(tid && strlen(tid) == 32 && sid && strlen(sid) == 16);
                    CU_ASSERT(st && en && strtoll(en, NULL, 10) >= strtoll(st, NULL, 10));
                    CU_ASSERT(
                        json_is_integer(json_object_get(json_object_get(sp, "status"), "code")));
                    CU_ASSERT(json_is_array(json_object_get(sp, "attributes")));
                    if (sid) {
                        json_t *copy = json_deep_copy(sp);
                        json_object_set_new(copy, "service", json_string(svc ? svc : ""));
                        json_object_set_new(by_id, sid, copy);
                    }
                }
        }
        json_decref(doc);
    }
    return by_id;
}

/* The spans of trace named name (an array; caller owns). */
static json_t *named(json_t *by_id, const char *trace, const char *name)
{
    json_t *out = json_array();
    const char *k;
    json_t *sp;
    json_object_foreach (by_id, k, sp) {
        if (strcmp(json_string_value(json_object_get(sp, "traceId")), trace) == 0 &&
            strcmp(json_string_value(json_object_get(sp, "name")), name) == 0)
            json_array_append(out, sp);
    }
    return out;
}

static int spans_complete(void *arg)
{
    (void)arg;
    json_t *by_id = collected_spans();
    static const char *const want_a[] = {"dispatcher.intake",
                                         "worker.task",
                                         "hostedai.allocate",
                                         "hostedai.inference",
                                         "hostedai.release",
                                         "coordinator.result",
                                         NULL};
    int ok = 1;
    for (int i = 0; want_a[i]; i++) {
        json_t *l = named(by_id, TRACE_A, want_a[i]);
        ok &= json_array_size(l) >= N_HAI;
        json_decref(l);
    }
    json_t *l = named(by_id, TRACE_B, "provider.call");
    ok &= json_array_size(l) >= N_OAI;
    json_decref(l);
    l = named(by_id, TRACE_B, "coordinator.result");
    ok &= json_array_size(l) >= N_OAI;
    json_decref(l);
    json_decref(by_id);
    return ok;
}

/* Every span of name in trace has a parent named parent_name (or, for a NULL
 * parent_name, the producer's span parent_id). Returns how many were checked. */
static int check_parents(json_t *by_id, const char *trace, const char *name,
                         const char *parent_name, const char *parent_id)
{
    json_t *l = named(by_id, trace, name);
    size_t i;
    json_t *sp;
    json_array_foreach (l, i, sp) {
        const char *pid = json_string_value(json_object_get(sp, "parentSpanId"));
        CU_ASSERT_FATAL(pid != NULL);
        if (!parent_name) {
            TH_EQ_STR(pid, parent_id);
            continue;
        }
        json_t *parent = json_object_get(by_id, pid);
        if (!parent)
            fprintf(stderr, "  %s: parent %s not received\n", name, pid);
        CU_ASSERT_FATAL(parent != NULL);
        TH_EQ_STR(json_string_value(json_object_get(parent, "name")), parent_name);
        TH_EQ_STR(json_string_value(json_object_get(parent, "traceId")), trace);
    }
    int n = (int)json_array_size(l);
    json_decref(l);
    return n;
}

/* ---- the run -------------------------------------------------------------------- */

static int start(void)
{
    for (int i = 0; i <= ECHO; i++) /* words no log line could hold by chance */
        snprintf(prompts[i], sizeof(prompts[i]), "Describe the quokka-%d marmalade tangent %d",
                 i * 7919 + 31, i);
    collector = th_recorder_start();
    echoer = th_recorder_start();
    if (!collector || !echoer)
        return -1;
    /* Providers' error messages quote the request: this one quotes the prompt. */
    char echo[512];
    snprintf(echo, sizeof(echo),
             "{\"error\": {\"message\": \"Invalid prompt: '%s' is not allowed\","
             " \"type\": \"invalid_request_error\", \"code\": \"prompt_rejected\"}}",
             prompts[ECHO]);
    th_recorder_reply(echoer, 400, echo);
    char port[16], log[512];
    char *addr = openai_addr;
    snprintf(port, sizeof(port), "%d", th_free_port());
    snprintf(log, sizeof(log), "%s/trace-mock-openai.out", th_bin("tests"));
    const char *oargv[] = {th_bin("tools/gantry-mock-openai"),
                           "--port",
                           port,
                           "--api-key",
                           OPENAI_KEY,
                           "--latency-ms",
                           "2-5",
                           NULL};
    if (th_proc_start(&openai, oargv, log) != 0 ||
        th_proc_wait_line(&openai, "listening=", addr, sizeof(openai_addr), 10000) != 0)
        return -1;
    char extra[2048];
    snprintf(extra, sizeof(extra),
             "{\"providers\": {\"oai\": {\"runtime\": \"openai\", \"endpoint\": \"http://%s\","
             "   \"api_key\": \"%s\"},"
             "   \"echoer\": {\"runtime\": \"openai\", \"endpoint\": \"%s\", \"api_key\": \"%s\"}},"
             " \"models\": {\"gpt\": {\"provider\": \"oai\", \"lane\": \"external\","
             "   \"requirements\": {\"tflops\": 1, \"vram_mb\": 1}},"
             "   \"echo\": {\"provider\": \"echoer\", \"lane\": \"external\","
             "   \"requirements\": {\"tflops\": 1, \"vram_mb\": 1}}},"
             " \"tracing\": {\"otlp_endpoint\": \"%s\", \"batch_ms\": 100,"
             "   \"headers\": {\"Authorization\": \"Bearer %s\"}},"
             " \"log\": {\"level\": \"debug\"}}",
             addr, OPENAI_KEY, th_recorder_url(echoer), OPENAI_KEY, th_recorder_url(collector),
             COLLECTOR_KEY);
    /* Faults make retries (and their spans); four in a row, which would fail a task, are
     * vanishingly rare at 5%. */
    th_cluster_opts_t o = {
        .fail_rate = 0.05, .latency = "2-10", .workers = 2, .extra_config = extra};
    return th_cluster_start(&cl, &o);
}

static void test_trace_and_logs(void)
{
    CU_ASSERT_FATAL(start() == 0);
    CU_ASSERT_FATAL(send_requests() == 0);
    CU_ASSERT_FATAL(th_poll(all_results, NULL, 120000));
    CU_ASSERT(th_poll(all_usage_rows, NULL, 60000));
    CU_ASSERT(th_poll(spans_complete, NULL, 30000));

    /* Kafka: tasks, task results, usage events and results carry the trace. */
    char fresh[2][33] = {"", ""};
    CU_ASSERT(check_topic("gantry.tasks.small", fresh) >= N_HAI + 2);
    CU_ASSERT(check_topic("gantry.tasks.external", fresh) >= N_OAI);
    CU_ASSERT(check_topic("gantry.task-results", fresh) >= N_ALL);
    CU_ASSERT(check_topic("gantry.usage", fresh) >= N_ALL);
    TH_EQ_INT(check_topic("gantry.results", fresh), N_ALL);
    CU_ASSERT(strcmp(fresh[0], fresh[1]) != 0);

    /* The provider's error quoted the prompt: the result keeps only its code. */
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results");
    size_t k;
    json_t *m;
    int echo_seen = 0;
    json_array_foreach (all, k, m) {
        json_t *v = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *id = json_string_value(json_object_get(v, "request_id"));
        if (id && strcmp(id, rid(ECHO)) == 0) {
            echo_seen++;
            json_t *err = json_object_get(v, "error");
            TH_EQ_STR(json_string_value(json_object_get(v, "status")), "failed");
            TH_EQ_STR(json_string_value(json_object_get(err, "code")), "provider_rejected");
            const char *msg = json_string_value(json_object_get(err, "message"));
            CU_ASSERT(msg && strstr(msg, "prompt_rejected") && !strstr(msg, "quokka"));
        }
        json_decref(v);
    }
    json_decref(all);
    TH_EQ_INT(echo_seen, 1);
    TH_EQ_INT(th_recorder_count(echoer), 1);

    /* PostgreSQL: usage rows and jobs. */
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id LIKE "
                                       "'trace-e2e-%' AND trace_id = '" TRACE_A "'"),
              N_HAI);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM usage WHERE request_id LIKE "
                                       "'trace-e2e-%' AND trace_id = '" TRACE_B "'"),
              N_OAI);
    TH_EQ_INT(th_sql_long(cl.conninfo, "SELECT count(*) FROM jobs WHERE request_id LIKE "
                                       "'trace-e2e-%' AND traceparent LIKE '00-" TRACE_A "-%'"),
              N_HAI);

    /* Providers received the trace. */
    char url[256];
    snprintf(url, sizeof(url), "%s/v1/trace-ids", cl.mock_url);
    json_t *ids = th_http_json(url, HAI_KEY);
    /* allocate + inference + release per request, more with the injected faults */
    CU_ASSERT(json_integer_value(json_object_get(json_object_get(ids, "trace_ids"), TRACE_A)) >=
              3 * N_HAI);
    json_decref(ids);
    snprintf(url, sizeof(url), "http://%s/v1/stats", openai_addr);
    json_t *stats = th_http_json(url, OPENAI_KEY);
    const char *otp =
        json_string_value(json_object_get(json_object_get(stats, "last_request"), "traceparent"));
    TH_EQ_STR(trace_of(otp), TRACE_B);
    json_decref(stats);

    /* OTLP: every span of the two traces links to the right parent. */
    json_t *by_id = collected_spans();
    TH_EQ_INT(check_parents(by_id, TRACE_A, "dispatcher.intake", NULL, SPAN_A), N_HAI);
    CU_ASSERT(check_parents(by_id, TRACE_A, "worker.task", "dispatcher.intake", NULL) >= N_HAI);
    CU_ASSERT(check_parents(by_id, TRACE_A, "hostedai.allocate", "worker.task", NULL) >= N_HAI);
    CU_ASSERT(check_parents(by_id, TRACE_A, "hostedai.inference", "worker.task", NULL) >= N_HAI);
    CU_ASSERT(check_parents(by_id, TRACE_A, "hostedai.release", "worker.task", NULL) >= N_HAI);
    CU_ASSERT(check_parents(by_id, TRACE_A, "coordinator.result", "dispatcher.intake", NULL) >=
              N_HAI);
    TH_EQ_INT(check_parents(by_id, TRACE_B, "dispatcher.intake", NULL, SPAN_B), N_OAI + 1);
    CU_ASSERT(check_parents(by_id, TRACE_B, "provider.call", "worker.task", NULL) >= N_OAI);
    CU_ASSERT(check_parents(by_id, TRACE_B, "coordinator.result", "dispatcher.intake", NULL) >=
              N_OAI);
    /* The request without a valid traceparent has a root intake span. */
    json_t *roots = named(by_id, fresh[0], "dispatcher.intake");
    TH_EQ_INT(json_array_size(roots), 1);
    CU_ASSERT(json_object_get(json_array_get(roots, 0), "parentSpanId") == NULL);
    json_decref(roots);
    json_decref(by_id);
}

/* ---- logs ------------------------------------------------------------------------ */

static json_t *outputs; /* the output texts of the results */

static void collect_outputs(void)
{
    outputs = json_array();
    json_t *all = th_kafka_read_all(cl.bootstrap, "gantry.results");
    size_t k;
    json_t *m;
    json_array_foreach (all, k, m) {
        json_t *v = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        const char *text = json_string_value(json_object_get(json_object_get(v, "output"), "text"));
        if (request_index(json_string_value(json_object_get(v, "request_id"))) >= 0 && text &&
            strlen(text) >= 12)
            json_array_append_new(outputs, json_string(text));
        json_decref(v);
    }
    json_decref(all);
}

/* Checks one line of a Gantry process's log. */
static void check_line(const char *file, int lineno, const char *line, long *task_lines)
{
    static const char *const secrets[] = {OPENAI_KEY, HAI_KEY, COLLECTOR_KEY, NULL};
    for (int i = 0; secrets[i]; i++)
        if (strstr(line, secrets[i])) {
            fprintf(stderr, "  %s:%d holds a secret: %.200s\n", file, lineno, line);
            CU_FAIL("secret in a log line");
        }
    for (int i = 0; i <= ECHO; i++) {
        /* The prompt, and its distinctive word alone. */
        char word[32];
        snprintf(word, sizeof(word), "quokka-%d ", i * 7919 + 31);
        if (strstr(line, prompts[i]) || strstr(line, word)) {
            fprintf(stderr, "  %s:%d holds a prompt: %.200s\n", file, lineno, line);
            CU_FAIL("prompt in a log line");
        }
    }
    size_t k;
    json_t *o;
    json_array_foreach (outputs, k, o)
        if (strstr(line, json_string_value(o))) {
            fprintf(stderr, "  %s:%d holds an output: %.200s\n", file, lineno, line);
            CU_FAIL("output in a log line");
        }

    json_error_t e;
    json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &e);
    if (!json_is_object(j)) {
        fprintf(stderr, "  %s:%d is not one JSON object: %.200s\n", file, lineno, line);
        CU_FAIL("log line is not a JSON object");
        json_decref(j);
        return;
    }
    static const char *const fields[] = {"time", "level", "process", "message", NULL};
    for (int i = 0; fields[i]; i++)
        if (!json_is_string(json_object_get(j, fields[i]))) {
            fprintf(stderr, "  %s:%d lacks %s\n", file, lineno, fields[i]);
            CU_FAIL("log line lacks a required field");
        }
    const char *task = json_string_value(json_object_get(j, "task_id"));
    if (task) {
        (*task_lines)++;
        const char *req = json_string_value(json_object_get(j, "request_id"));
        const char *tr = json_string_value(json_object_get(j, "trace_id"));
        if (!req || !tr || strlen(tr) != 32 || strncmp(task, req, strlen(req)) != 0) {
            fprintf(stderr, "  %s:%d: a task line without its request or trace: %.200s\n", file,
                    lineno, line);
            CU_FAIL("task log line without request_id/trace_id");
        }
        int i = request_index(req);
        if (i >= 0 && expected_trace(i))
            TH_EQ_STR(tr, expected_trace(i));
    }
    json_decref(j);
}

static void test_logs(void)
{
    collect_outputs();
    CU_ASSERT(json_array_size(outputs) >= N_ALL);
    th_cluster_stop(&cl); /* every line written and flushed */
    th_proc_stop(&openai, SIGTERM, 10000);

    DIR *dir = opendir(cl.logdir);
    CU_ASSERT_FATAL(dir != NULL);
    struct dirent *de;
    long lines = 0, task_lines = 0;
    int files = 0;
    while ((de = readdir(dir))) {
        /* Gantry's processes; the mocks and the embedded Kafka are test tools. */
        if (strncmp(de->d_name, "dispatcher", 10) != 0 && strncmp(de->d_name, "worker-", 7) != 0)
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", cl.logdir, de->d_name);
        FILE *f = fopen(path, "r");
        CU_ASSERT_FATAL(f != NULL);
        files++;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        int lineno = 0;
        while ((n = getline(&line, &cap, f)) > 0) {
            lineno++;
            lines++;
            if (line[n - 1] == '\n')
                line[n - 1] = 0;
            check_line(de->d_name, lineno, line, &task_lines);
        }
        free(line);
        fclose(f);
    }
    closedir(dir);
    fprintf(stderr, "  %ld log lines in %d files, %ld about a task\n", lines, files, task_lines);
    TH_EQ_INT(files, 3);            /* the dispatcher and two workers */
    CU_ASSERT(task_lines >= N_ALL); /* one "task succeeded" line per task at least */
    json_decref(outputs);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"traceparent through Kafka, PostgreSQL, providers and OTLP", test_trace_and_logs},
        {"logs: JSON lines with ids and trace, no secret, prompt or output", test_logs},
        {NULL, NULL},
    };
    int rc = th_run("e2e_trace", tests);
    th_cluster_stop(&cl);
    if (openai.pid > 0 && !openai.exited)
        th_proc_stop(&openai, SIGTERM, 10000);
    if (collector)
        th_recorder_stop(collector);
    if (echoer)
        th_recorder_stop(echoer);
    return rc;
}
