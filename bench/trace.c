/* bench/trace.c - cost of tracing on the loop thread, one core: traceparent
 * parse, child + format, a span start/end with the exporter off and on (the
 * span's JSON queued), and serialising a 512-span OTLP batch. Prints
 * per-operation times; asserts nothing. Usage: gantry-bench-trace [N] */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "clock.h"
#include "config.h"
#include "trace.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static double now_s(void)
{
    return (double)gt_clock_mono_ns() / 1e9;
}

static void report(const char *what, int n, double s)
{
    printf("%-50s %8d ops %9.3f us/op %11.0f ops/s\n", what, n, s / n * 1e6, n / s);
}

/* Four attributes, as a task's span carries. */
#define ATTRS                                                                                      \
    "{s:s, s:s, s:s, s:i}", "gantry.request_id", "req-000123", "gantry.task_id", "req-000123/0",   \
        "gantry.model", "small", "gantry.attempts", 1

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 200000;
    gt_trace_ctx_t t, c;
    char out[GT_TRACEPARENT_LEN + 1];
    volatile int sink = 0;

    double t0 = now_s();
    for (int i = 0; i < n; i++)
        sink += gt_trace_parse(TP, &t);
    report("traceparent parse", n, now_s() - t0);

    t0 = now_s();
    for (int i = 0; i < n; i++) {
        gt_trace_child(&t, &c);
        sink += gt_trace_format(&c, out)[0];
    }
    report("child span id (RAND_bytes) + format", n, now_s() - t0);

    gt_span_t s;
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        gt_span_start(&s, &t, "worker.task", GT_SPAN_CONSUMER);
        gt_span_end(&s, NULL, ATTRS);
    }
    report("span start+end, exporter off (4 attributes)", n, now_s() - t0);

    /* Exporter on, the loop never run: every span is built and queued. */
    char text[512], err[512];
    snprintf(
        text, sizeof(text),
        "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:1\"}, \"tracing\": {\"otlp_endpoint\":"
        " \"http://127.0.0.1:9\", \"queue_max\": %d}}",
        n + 1);
    gt_config_t *cfg = gt_config_parse(text, ".", err, sizeof(err));
    uv_loop_t loop;
    uv_loop_init(&loop);
    if (!cfg || gt_trace_export_start(&loop, cfg, "bench") != 0) {
        fprintf(stderr, "cannot start the exporter: %s\n", err);
        return 1;
    }
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        gt_span_start(&s, &t, "worker.task", GT_SPAN_CONSUMER);
        gt_span_end(&s, i % 10 ? NULL : "hostedai_unavailable", ATTRS);
    }
    report("span start+end, exporter on (JSON queued)", n, now_s() - t0);

    /* A full batch, as the exporter sends it. */
    char *spans[512];
    for (int i = 0; i < 512; i++) {
        char one[512];
        snprintf(
            one, sizeof(one),
            "{\"traceId\":\"%s\",\"spanId\":\"%s\",\"parentSpanId\":\"%s\",\"kind\":5,"
            "\"startTimeUnixNano\":\"%d\",\"endTimeUnixNano\":\"%d\",\"name\":\"worker.task\","
            "\"attributes\":[{\"key\":\"gantry.model\",\"value\":{\"stringValue\":\"small\"}}],"
            "\"status\":{\"code\":1}}",
            t.trace_id, t.span_id, t.span_id, 1700000000 + i, 1700000001 + i);
        spans[i] = strdup(one);
    }
    int batches = 200;
    size_t bytes = 0;
    t0 = now_s();
    for (int i = 0; i < batches; i++) {
        char *body = gt_trace_otlp_body("bench", spans, 512);
        bytes = strlen(body);
        free(body);
    }
    double el = now_s() - t0;
    report("OTLP request body of 512 spans (per span)", batches * 512, el);
    printf("%-50s %8zu bytes/batch\n", "  batch size", bytes);
    for (int i = 0; i < 512; i++)
        free(spans[i]);

    gt_trace_export_stop();
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
        ;
    uv_loop_close(&loop);
    printf("spans dropped at stop (collector unreachable): %ld\n", gt_trace_dropped());
    gt_config_free(cfg);
    return sink == 42 ? 2 : 0;
}
