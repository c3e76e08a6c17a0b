/* test_trace.c - W3C traceparent parse/format (strict), ids from the CSPRNG, child
 * spans, log lines with trace_id, and the OTLP/HTTP JSON exporter against a
 * recording collector: batching, the document's shape, headers, and a bounded
 * queue that drops and counts when the collector is down. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "harness.h"
#include "log.h"
#include "metrics.h"
#include "rand.h"
#include "recorder.h"
#include "trace.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int is_lower_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", s[i]))
            return 0;
    return 1;
}

static void test_parse_format(void)
{
    gt_trace_ctx_t t;
    char out[GT_TRACEPARENT_LEN + 1];
    TH_EQ_INT(gt_trace_parse(TP, &t), 0);
    TH_EQ_STR(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    TH_EQ_STR(t.span_id, "00f067aa0ba902b7");
    TH_EQ_INT(t.flags, 1);
    TH_EQ_STR(gt_trace_format(&t, out), TP);
    TH_EQ_INT(gt_trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &t), 0);
    TH_EQ_INT(t.flags, 0);
    TH_EQ_STR(gt_trace_format(&t, out), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
}

static void test_parse_rejects(void)
{
    static const char *const bad[] = {
        "",
        "00",
        /* version */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* all-zero ids */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        /* uppercase, non-hex */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        /* lengths and delimiters */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        NULL,
    };
    for (int i = 0; bad[i]; i++) {
        gt_trace_ctx_t t;
        memset(&t, 'x', sizeof(t));
        int rc = gt_trace_parse(bad[i], &t);
        if (rc == 0)
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        TH_EQ_INT(rc, -1);
        TH_EQ_INT(t.trace_id[0], 'x'); /* untouched */
    }
    gt_trace_ctx_t t;
    TH_EQ_INT(gt_trace_parse(NULL, &t), -1);
}

static void test_new_and_child(void)
{
    gt_trace_ctx_t a, b, c;
    char out[GT_TRACEPARENT_LEN + 1];
    TH_EQ_INT(gt_trace_new(&a), 0);
    TH_EQ_INT(gt_trace_new(&b), 0);
    CU_ASSERT(is_lower_hex(a.trace_id, 32));
    CU_ASSERT(is_lower_hex(a.span_id, 16));
    CU_ASSERT(strcmp(a.trace_id, b.trace_id) != 0);
    TH_EQ_INT(a.flags, 1);
    /* What we format, we parse back. */
    TH_EQ_INT(gt_trace_parse(gt_trace_format(&a, out), &c), 0);
    TH_EQ_STR(c.trace_id, a.trace_id);
    TH_EQ_STR(c.span_id, a.span_id);
    /* A child keeps the trace id and flags, never the span id. */
    gt_trace_ctx_t p;
    gt_trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &p);
    TH_EQ_INT(gt_trace_child(&p, &c), 0);
    TH_EQ_STR(c.trace_id, p.trace_id);
    TH_EQ_INT(c.flags, 0);
    CU_ASSERT(strcmp(c.span_id, p.span_id) != 0);
    CU_ASSERT(is_lower_hex(c.span_id, 16));
    /* In place. */
    gt_trace_ctx_t q = p;
    TH_EQ_INT(gt_trace_child(&q, &q), 0);
    TH_EQ_STR(q.trace_id, p.trace_id);
    CU_ASSERT(strcmp(q.span_id, p.span_id) != 0);
    /* adopt: a valid header is taken, anything else starts a new trace. */
    int adopted = -1;
    TH_EQ_INT(gt_trace_adopt(TP, &c, &adopted), 0);
    TH_EQ_INT(adopted, 1);
    TH_EQ_STR(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    TH_EQ_INT(gt_trace_adopt("garbage", &c, &adopted), 0);
    TH_EQ_INT(adopted, 0);
    CU_ASSERT(is_lower_hex(c.trace_id, 32));
    CU_ASSERT(strcmp(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736") != 0);
}

static void test_span_start(void)
{
    gt_trace_ctx_t p;
    gt_span_t s, root;
    gt_trace_parse(TP, &p);
    TH_EQ_INT(gt_span_start(&s, &p, "worker.task", GT_SPAN_CONSUMER), 0);
    TH_EQ_STR(s.ctx.trace_id, p.trace_id);
    TH_EQ_STR(s.parent_id, p.span_id);
    CU_ASSERT(strcmp(s.ctx.span_id, p.span_id) != 0);
    CU_ASSERT(s.start_ns > 1600000000LL * 1000000000LL);
    TH_EQ_INT(gt_span_start(&root, NULL, "intake", GT_SPAN_INTERNAL), 0);
    TH_EQ_STR(root.parent_id, "");
    CU_ASSERT(is_lower_hex(root.ctx.trace_id, 32));
    gt_span_end(&s, NULL, "{s:s}", "k", "v"); /* no exporter: nothing happens */
}

/* ---- exporter ------------------------------------------------------------------ */

typedef struct loop_wait {
    uv_loop_t *loop;
    th_recorder_t *rec;
    size_t want;
    long exported0;
} loop_wait_t;

static int exported(void *arg)
{
    loop_wait_t *w = arg;
    uv_run(w->loop, UV_RUN_NOWAIT);
    return gt_trace_exported() - w->exported0 >= (long)w->want;
}

static int recorded(void *arg)
{
    loop_wait_t *w = arg;
    uv_run(w->loop, UV_RUN_NOWAIT);
    return th_recorder_count(w->rec) >= w->want;
}

static gt_config_t *tracing_config(const char *endpoint, int queue_max)
{
    char text[1024], err[1024];
    snprintf(text, sizeof(text),
             "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:1\"},"
             " \"tracing\": {\"otlp_endpoint\": \"%s/\", \"batch_ms\": 20, \"queue_max\": %d,"
             "   \"headers\": {\"X-Collector-Key\": \"collector-secret\"}}}",
             endpoint, queue_max);
    gt_config_t *cfg = gt_config_parse(text, ".", err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "  config: %s\n", err);
    return cfg;
}

static void run_until_closed(uv_loop_t *loop)
{
    int64_t end = th_now_ms() + 10000;
    while (uv_run(loop, UV_RUN_NOWAIT) != 0 && th_now_ms() < end)
        ;
}

static void test_export(void)
{
    th_recorder_t *rec = th_recorder_start();
    CU_ASSERT_FATAL(rec != NULL);
    gt_config_t *cfg = tracing_config(th_recorder_url(rec), 100);
    CU_ASSERT_FATAL(cfg != NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    long exported0 = gt_trace_exported();
    TH_EQ_INT(gt_trace_export_start(&loop, cfg, "test-trace"), 0);

    gt_trace_ctx_t p;
    gt_trace_parse(TP, &p);
    gt_span_t parent, child;
    gt_span_start(&parent, &p, "dispatcher.intake", GT_SPAN_CONSUMER);
    gt_span_start(&child, &parent.ctx, "worker.task", GT_SPAN_CONSUMER);
    gt_span_end(&child, "hostedai_unavailable", "{s:s, s:i, s:b, s:f}", "gantry.task_id", "t-1",
                "gantry.retries", 3, "gantry.ok", 0, "gantry.ratio", 0.5);
    gt_span_end(&parent, NULL, NULL);

    loop_wait_t w = {&loop, rec, 1, 0};
    CU_ASSERT_FATAL(th_poll(recorded, &w, 10000));
    const th_recorded_t *q = th_recorder_get(rec, 0);
    TH_EQ_STR(q->method, "POST");
    TH_EQ_STR(q->path, "/v1/traces");
    TH_EQ_STR(th_recorded_header(q, "Content-Type"), "application/json");
    TH_EQ_STR(th_recorded_header(q, "X-Collector-Key"), "collector-secret");

    json_error_t e;
    json_t *doc = json_loads(q->body, 0, &e);
    CU_ASSERT_FATAL(doc != NULL);
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *attr =
        json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    TH_EQ_STR(json_string_value(json_object_get(attr, "key")), "service.name");
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(attr, "value"), "stringValue")),
              "test-trace");
    json_t *spans = json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans");
    TH_EQ_INT(json_array_size(spans), 2);
    json_t *c = json_array_get(spans, 0), *pa = json_array_get(spans, 1);
    TH_EQ_STR(json_string_value(json_object_get(c, "name")), "worker.task");
    TH_EQ_STR(json_string_value(json_object_get(c, "traceId")), p.trace_id);
    TH_EQ_STR(json_string_value(json_object_get(pa, "traceId")), p.trace_id);
    /* Parent links: the child names the parent; the parent names the incoming span. */
    TH_EQ_STR(json_string_value(json_object_get(c, "parentSpanId")),
              json_string_value(json_object_get(pa, "spanId")));
    TH_EQ_STR(json_string_value(json_object_get(pa, "parentSpanId")), p.span_id);
    TH_EQ_INT(json_integer_value(json_object_get(c, "kind")), GT_SPAN_CONSUMER);
    /* Times are decimal strings of Unix nanoseconds, end >= start. */
    const char *st = json_string_value(json_object_get(c, "startTimeUnixNano"));
    const char *en = json_string_value(json_object_get(c, "endTimeUnixNano"));
    CU_ASSERT_FATAL(st && en);
    CU_ASSERT(strtoll(st, NULL, 10) > 1600000000LL * 1000000000LL);
    CU_ASSERT(strtoll(en, NULL, 10) >= strtoll(st, NULL, 10));
    /* Status: error with its message on the child, OK on the parent. */
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(c, "status"), "code")), 2);
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(c, "status"), "message")),
              "hostedai_unavailable");
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(pa, "status"), "code")), 1);
    /* Attributes as OTLP key/value pairs; integers as strings. */
    json_t *attrs = json_object_get(c, "attributes");
    TH_EQ_INT(json_array_size(attrs), 4);
    size_t i;
    json_t *a;
    int seen = 0;
    json_array_foreach (attrs, i, a) {
        const char *k = json_string_value(json_object_get(a, "key"));
        json_t *v = json_object_get(a, "value");
        if (strcmp(k, "gantry.task_id") == 0)
            seen += strcmp(json_string_value(json_object_get(v, "stringValue")), "t-1") == 0;
        if (strcmp(k, "gantry.retries") == 0)
            seen += strcmp(json_string_value(json_object_get(v, "intValue")), "3") == 0;
        if (strcmp(k, "gantry.ok") == 0)
            seen += json_is_false(json_object_get(v, "boolValue"));
        if (strcmp(k, "gantry.ratio") == 0)
            seen += json_real_value(json_object_get(v, "doubleValue")) == 0.5;
    }
    TH_EQ_INT(seen, 4);
    json_decref(doc);
    w.want = 2; /* the collector's answer reaches the exporter: counted as exported */
    w.exported0 = exported0;
    CU_ASSERT(th_poll(exported, &w, 10000));
    TH_EQ_INT(gt_trace_exported() - exported0, 2);

    /* Stop flushes what is left in one last POST. */
    gt_span_t last;
    gt_span_start(&last, &p, "coordinator.result", GT_SPAN_PRODUCER);
    gt_span_end(&last, NULL, NULL);
    gt_trace_export_stop();
    gt_trace_export_stop(); /* twice is harmless */
    run_until_closed(&loop);
    TH_EQ_INT(th_recorder_count(rec), 2);
    TH_EQ_INT(gt_trace_exported() - exported0, 3);
    /* After stop, spans go nowhere. */
    gt_span_start(&last, &p, "late", GT_SPAN_INTERNAL);
    gt_span_end(&last, NULL, "{}");
    TH_EQ_INT(uv_loop_close(&loop), 0);
    gt_config_free(cfg);
    th_recorder_stop(rec);
}

static void test_export_collector_down(void)
{
    /* Nothing listens on the port: every batch fails, the queue stays bounded. */
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", th_free_port());
    gt_config_t *cfg = tracing_config(url, 10);
    CU_ASSERT_FATAL(cfg != NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    long dropped0 = gt_trace_dropped(), exported0 = gt_trace_exported();
    TH_EQ_INT(gt_trace_export_start(&loop, cfg, "test-trace"), 0);
    gt_trace_ctx_t p;
    gt_trace_parse(TP, &p);
    for (int i = 0; i < 50; i++) { /* 40 over the bound: dropped at once, never queued */
        gt_span_t s;
        gt_span_start(&s, &p, "s", GT_SPAN_INTERNAL);
        gt_span_end(&s, NULL, "{s:i}", "i", i);
    }
    TH_EQ_INT(gt_trace_dropped() - dropped0, 40);
    gt_trace_export_stop();
    run_until_closed(&loop);
    /* The 10 queued ones failed to send: dropped and counted too. */
    TH_EQ_INT(gt_trace_dropped() - dropped0, 50);
    TH_EQ_INT(gt_trace_exported() - exported0, 0);
    /* /metrics shows the same counts. */
    TH_EQ_INT(gt_metric_value(gt_metrics_counter("gantry_trace_spans_dropped_total", "", NULL)),
              gt_trace_dropped());
    TH_EQ_INT(gt_metric_value(gt_metrics_counter("gantry_trace_spans_exported_total", "", NULL)),
              gt_trace_exported());
    TH_EQ_INT(uv_loop_close(&loop), 0);
    gt_config_free(cfg);
}

/* One log line written with ctx, as read back from stderr. */
static json_t *log_line(const gt_log_ctx_t *ctx)
{
    FILE *f = tmpfile();
    int saved = dup(2);
    dup2(fileno(f), 2);
    gt_log(GT_LOG_INFO, ctx, "task %s", "done");
    dup2(saved, 2);
    close(saved);
    char buf[4096] = "";
    rewind(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    CU_ASSERT(n > 0 && buf[n - 1] == '\n' && strchr(buf, '\n') == buf + n - 1);
    return json_loads(buf, 0, NULL);
}

static void test_log_trace_id(void)
{
    gt_log_init("test-trace", GT_LOG_INFO);
    json_t *j = log_line(
        &(gt_log_ctx_t){.request_id = "r-1", .task_id = "r-1:0", .tenant_id = "t", .trace_id = TP});
    CU_ASSERT_FATAL(j != NULL);
    TH_EQ_STR(json_string_value(json_object_get(j, "trace_id")),
              "4bf92f3577b34da6a3ce929d0e0e4736");
    TH_EQ_STR(json_string_value(json_object_get(j, "request_id")), "r-1");
    TH_EQ_STR(json_string_value(json_object_get(j, "task_id")), "r-1:0");
    TH_EQ_STR(json_string_value(json_object_get(j, "process")), "test-trace");
    TH_EQ_STR(json_string_value(json_object_get(j, "level")), "info");
    TH_EQ_STR(json_string_value(json_object_get(j, "message")), "task done");
    CU_ASSERT(json_string_value(json_object_get(j, "time")) != NULL);
    json_decref(j);
    /* A bare trace id is written as it is; an empty one not at all. */
    j = log_line(&(gt_log_ctx_t){.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"});
    TH_EQ_STR(json_string_value(json_object_get(j, "trace_id")),
              "4bf92f3577b34da6a3ce929d0e0e4736");
    json_decref(j);
    j = log_line(&(gt_log_ctx_t){.request_id = "r-2", .trace_id = ""});
    CU_ASSERT(json_object_get(j, "trace_id") == NULL);
    json_decref(j);
    /* A malformed header a producer sent is not echoed into the log. */
    j = log_line(&(gt_log_ctx_t){.request_id = "r-3", .trace_id = "secret-ish garbage"});
    CU_ASSERT(json_object_get(j, "trace_id") == NULL);
    json_decref(j);
    j = log_line(
        &(gt_log_ctx_t){.trace_id = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"});
    CU_ASSERT(json_object_get(j, "trace_id") == NULL);
    json_decref(j);
}

/* The pooled CSPRNG behind ids: draws across the pool's 4 KiB refill and
 * larger than it, never the same bytes twice, never all zero. */
static void test_secure_pool(void)
{
    enum { N = 700 };
    static unsigned char ids[N][16];
    for (int i = 0; i < N; i++) /* 11,200 bytes: the pool refills twice */
        CU_ASSERT_EQUAL(gt_rand_secure(ids[i], sizeof(ids[i])), 0);
    for (int i = 0; i < N; i++) {
        static const unsigned char zero[16];
        CU_ASSERT_NOT_EQUAL(memcmp(ids[i], zero, 16), 0);
        for (int j = i + 1; j < N; j++)
            CU_ASSERT_NOT_EQUAL(memcmp(ids[i], ids[j], 16), 0);
    }
    static unsigned char big[10000], big2[10000];
    CU_ASSERT_EQUAL(gt_rand_secure(big, sizeof(big)), 0);
    CU_ASSERT_EQUAL(gt_rand_secure(big2, sizeof(big2)), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(big, big2, sizeof(big)), 0);
    size_t zeros = 0; /* ~39 expected; a pool handed out zeroed would give 10,000 */
    for (size_t i = 0; i < sizeof(big); i++)
        zeros += big[i] == 0;
    CU_ASSERT(zeros < 200);
}

static void test_config_errors(void)
{
    char err[2048];
    gt_config_t *cfg = gt_config_parse(
        "{\"kafka\": {\"bootstrap_servers\": \"x\"}, \"tracing\": {\"otlp_endpoint\": \"ftp://c\","
        " \"batch_ms\": 1, \"queue_max\": 0, \"headers\": {\"A\": 1, \"B:\": \"v\"}, \"x\": 1}}",
        ".", err, sizeof(err));
    CU_ASSERT(cfg == NULL);
    static const char *const want[] = {"tracing.otlp_endpoint",
                                       "tracing.batch_ms",
                                       "tracing.queue_max",
                                       "tracing.headers.A",
                                       "tracing.headers.B:",
                                       "tracing.x",
                                       NULL};
    for (int i = 0; want[i]; i++) {
        if (!strstr(err, want[i]))
            fprintf(stderr, "  missing %s in:\n%s\n", want[i], err);
        CU_ASSERT(strstr(err, want[i]) != NULL);
    }
    cfg = gt_config_parse("{\"kafka\": {\"bootstrap_servers\": \"x\"}}", ".", err, sizeof(err));
    CU_ASSERT_FATAL(cfg != NULL);
    CU_ASSERT(cfg->tracing_otlp_endpoint == NULL);
    TH_EQ_INT(cfg->tracing_batch_ms, 1000);
    TH_EQ_INT(cfg->tracing_queue_max, 2048);
    /* Off without an endpoint: start does nothing. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    TH_EQ_INT(gt_trace_export_start(&loop, cfg, "x"), 0);
    gt_trace_export_stop();
    TH_EQ_INT(uv_run(&loop, UV_RUN_NOWAIT), 0);
    TH_EQ_INT(uv_loop_close(&loop), 0);
    gt_config_free(cfg);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"traceparent parse and format", test_parse_format},
        {"invalid traceparents are rejected", test_parse_rejects},
        {"new traces, children and adopt", test_new_and_child},
        {"spans name their parent", test_span_start},
        {"OTLP JSON export to a collector", test_export},
        {"collector down: bounded queue, drops counted", test_export_collector_down},
        {"tracing configuration", test_config_errors},
        {"ids come from a pooled CSPRNG, never repeated", test_secure_pool},
        {"log lines carry the trace id", test_log_trace_id},
        {NULL, NULL},
    };
    return th_run("trace", tests);
}
