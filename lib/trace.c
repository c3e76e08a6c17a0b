/* trace.c - W3C traceparent parse/format, span ids from OpenSSL's CSPRNG, and the
 * OTLP/HTTP JSON exporter: a bounded queue POSTed in batches through lib/http on
 * the loop; when the collector is slow or down, spans are dropped and counted,
 * never waited for. */
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "rand.h"
#include "trace.h"

#define EXPORT_MAX_BATCH 512 /* spans per POST */
#define EXPORT_TIMEOUT_MS 5000
#define EXPORT_FINAL_TIMEOUT_MS 2000

static const char hexdigits[] = "0123456789abcdef";

/* ---- traceparent -------------------------------------------------------------- */

static int lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return 0;
    return 1;
}

int gt_trace_parse(const char *h, gt_trace_ctx_t *out)
{
    if (!h || strlen(h) != GT_TRACEPARENT_LEN)
        return -1;
    if (h[0] != '0' || h[1] != '0' || h[2] != '-' || h[35] != '-' || h[52] != '-')
        return -1;
    if (!lower_hex(h + 3, 32) || !lower_hex(h + 36, 16) || !lower_hex(h + 53, 2))
        return -1;
    if (all_zero(h + 3, 32) || all_zero(h + 36, 16))
        return -1;
    memcpy(out->trace_id, h + 3, 32);
    out->trace_id[32] = 0;
    memcpy(out->span_id, h + 36, 16);
    out->span_id[16] = 0;
    out->flags = (unsigned)strtoul((char[]){h[53], h[54], 0}, NULL, 16);
    return 0;
}

char *gt_trace_format(const gt_trace_ctx_t *ctx, char *out)
{
    snprintf(out, GT_TRACEPARENT_LEN + 1, "00-%s-%s-%02x", ctx->trace_id, ctx->span_id,
             ctx->flags & 0xffu);
    return out;
}

/* n random bytes as 2n lowercase hex characters, never all zero. */
static int random_hex(char *out, size_t nbytes)
{
    unsigned char raw[16];
    for (int tries = 0; tries < 4; tries++) {
        if (gt_rand_secure(raw, nbytes) != 0)
            return -1;
        for (size_t i = 0; i < nbytes; i++) {
            out[2 * i] = hexdigits[raw[i] >> 4];
            out[2 * i + 1] = hexdigits[raw[i] & 15];
        }
        out[2 * nbytes] = 0;
        if (!all_zero(out, 2 * nbytes))
            return 0;
    }
    return -1;
}

int gt_trace_new(gt_trace_ctx_t *out)
{
    gt_trace_ctx_t t;
    if (random_hex(t.trace_id, 16) != 0 || random_hex(t.span_id, 8) != 0)
        return -1;
    t.flags = 1;
    *out = t;
    return 0;
}

int gt_trace_child(const gt_trace_ctx_t *parent, gt_trace_ctx_t *out)
{
    char span[17];
    if (random_hex(span, 8) != 0)
        return -1;
    if (out != parent)
        *out = *parent;
    memcpy(out->span_id, span, sizeof(span));
    return 0;
}

int gt_trace_adopt(const char *header, gt_trace_ctx_t *out, int *adopted)
{
    int ok = gt_trace_parse(header, out) == 0;
    if (adopted)
        *adopted = ok;
    return ok ? 0 : gt_trace_new(out);
}

/* ---- spans --------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int gt_span_start(gt_span_t *s, const gt_trace_ctx_t *parent, const char *name, int kind)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->kind = kind;
    s->start_ns = now_ns();
    if (parent) {
        snprintf(s->parent_id, sizeof(s->parent_id), "%s", parent->span_id);
        return gt_trace_child(parent, &s->ctx);
    }
    return gt_trace_new(&s->ctx);
}

/* s as a JSON string, quotes included. */
static void sb_json(gt_buf_t *b, const char *s)
{
    char esc[8];
    gt_buf_putn(b, "\"", 1);
    for (const char *run = s;; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        gt_buf_putn(b, run, (size_t)(s - run));
        if (!c)
            break;
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof(esc), "\\%c", c);
        else
            snprintf(esc, sizeof(esc), "\\u%04x", c);
        gt_buf_puts(b, esc);
        run = s + 1;
    }
    gt_buf_putn(b, "\"", 1);
}

/* OTLP JSON attributes: [{"key": k, "value": {"stringValue"|"intValue"|...}}]. */
static void sb_attrs(gt_buf_t *b, json_t *attrs)
{
    const char *k;
    json_t *v;
    char num[64];
    int first = 1;
    gt_buf_putn(b, "[", 1);
    json_object_foreach (attrs, k, v) {
        if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v))
            continue;
        gt_buf_puts(b, first ? "{\"key\":" : ",{\"key\":");
        first = 0;
        sb_json(b, k);
        if (json_is_string(v)) {
            gt_buf_puts(b, ",\"value\":{\"stringValue\":");
            sb_json(b, json_string_value(v));
            gt_buf_puts(b, "}}");
            continue;
        }
        if (json_is_integer(v)) /* OTLP JSON: 64-bit integers as strings */
            snprintf(num, sizeof(num), ",\"value\":{\"intValue\":\"%lld\"}}",
                     (long long)json_integer_value(v));
        else if (json_is_real(v))
            snprintf(num, sizeof(num), ",\"value\":{\"doubleValue\":%.17g}}", json_real_value(v));
        else
            snprintf(num, sizeof(num), ",\"value\":{\"boolValue\":%s}}",
                     json_is_true(v) ? "true" : "false");
        gt_buf_puts(b, num);
    }
    gt_buf_putn(b, "]", 1);
}

typedef struct exporter {
    uv_loop_t *loop;
    gt_http_t *http;
    uv_timer_t timer;
    char url[1024];
    char service[128];
    char **headers; /* "Name: value", NULL-terminated */
    char **ring;    /* spans waiting, as OTLP JSON objects; queue_max slots */
    size_t queue_max;
    size_t head, count;
    int in_flight; /* spans in the POST now */
    int stopping;
} exporter_t;

static exporter_t *ex_global;
static atomic_long exported_total, dropped_total;

long gt_trace_exported(void)
{
    return atomic_load(&exported_total);
}
long gt_trace_dropped(void)
{
    return atomic_load(&dropped_total);
}

/* Counted twice: the atomics for gt_trace_exported/dropped, the registry for /metrics. */
static void count_spans(int exported, long n)
{
    atomic_fetch_add(exported ? &exported_total : &dropped_total, n);
    gt_metric_add(exported ? gt_metrics_counter("gantry_trace_spans_exported_total",
                                                "Spans sent to the OTLP collector", NULL)
                           : gt_metrics_counter("gantry_trace_spans_dropped_total",
                                                "Spans dropped: queue full, collector down "
                                                "or refusing",
                                                NULL),
                  (double)n);
}

void gt_span_end(gt_span_t *s, const char *error, const char *attrs_fmt, ...)
{
    exporter_t *e = ex_global;
    if (!e || !s->ctx.trace_id[0])
        return;
    if (e->count + (size_t)e->in_flight >= e->queue_max) {
        count_spans(0, 1);
        return;
    }
    json_t *attrs = NULL;
    if (attrs_fmt) {
        va_list ap;
        va_start(ap, attrs_fmt);
        attrs = json_vpack_ex(NULL, 0, attrs_fmt, ap);
        va_end(ap);
    }
    char head[512];
    snprintf(head, sizeof(head),
             "{\"traceId\":\"%s\",\"spanId\":\"%s\"%s%s%s,\"kind\":%d,"
             "\"startTimeUnixNano\":\"%lld\",\"endTimeUnixNano\":\"%lld\",\"name\":",
             s->ctx.trace_id, s->ctx.span_id, s->parent_id[0] ? ",\"parentSpanId\":\"" : "",
             s->parent_id, s->parent_id[0] ? "\"" : "", s->kind, (long long)s->start_ns,
             (long long)now_ns());
    gt_buf_t b = {0};
    gt_buf_puts(&b, head);
    sb_json(&b, s->name);
    gt_buf_puts(&b, ",\"attributes\":");
    sb_attrs(&b, attrs);
    json_decref(attrs);
    gt_buf_puts(&b, error ? ",\"status\":{\"code\":2,\"message\":" : ",\"status\":{\"code\":1}}");
    if (error) {
        sb_json(&b, error);
        gt_buf_puts(&b, "}}");
    }
    char *text = gt_buf_take(&b, NULL);
    if (!text) {
        count_spans(0, 1);
        return;
    }
    size_t cap = e->queue_max;
    e->ring[(e->head + e->count) % cap] = text;
    e->count++;
    s->ctx.trace_id[0] = 0; /* ended */
}

char *gt_trace_otlp_body(const char *service_name, char *const *spans, size_t n)
{
    gt_buf_t b = {0};
    gt_buf_puts(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
                    "\"value\":{\"stringValue\":");
    sb_json(&b, service_name);
    gt_buf_puts(&b, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"gantry\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            gt_buf_putn(&b, ",", 1);
        gt_buf_puts(&b, spans[i]);
    }
    gt_buf_puts(&b, "]}]}]}");
    return gt_buf_take(&b, NULL);
}

/* ---- exporter ------------------------------------------------------------------ */

/* Frees up to n queued spans from the head of the ring. */
static void ring_pop(exporter_t *e, size_t n)
{
    size_t cap = e->queue_max;
    for (; n > 0 && e->count > 0; n--, e->count--) {
        free(e->ring[e->head]);
        e->ring[e->head] = NULL;
        e->head = (e->head + 1) % cap;
    }
}

static void exporter_free(exporter_t *e)
{
    if (!e)
        return;
    for (size_t i = 0; e->headers && e->headers[i]; i++) {
        memset(e->headers[i], 0, strlen(e->headers[i])); /* may hold a collector key */
        free(e->headers[i]);
    }
    free(e->headers);
    if (e->ring)
        ring_pop(e, e->count);
    free(e->ring);
    if (ex_global == e)
        ex_global = NULL;
    free(e);
}

static void on_timer_closed(uv_handle_t *h)
{
    exporter_t *e = h->data;
    if (!e->http)
        exporter_free(e);
    else
        e->timer.data = NULL; /* the HTTP callback frees e */
}

static void export_batch(exporter_t *e, int64_t timeout_ms);

static void on_posted(const gt_http_response_t *resp, void *arg)
{
    exporter_t *e = arg;
    int n = e->in_flight;
    e->in_flight = 0;
    if (resp->status >= 200 && resp->status < 300) {
        count_spans(1, n);
    } else {
        /* The collector is down or refused the batch: drop it, never pile up. */
        count_spans(0, n);
        gt_log(GT_LOG_DEBUG, NULL, "OTLP export of %d span(s) failed: %s%ld", n,
               resp->status ? "HTTP " : "curl error ",
               resp->status ? resp->status : (long)resp->curl_code);
    }
    if (!e->stopping)
        return;
    if (e->count > 0) {
        export_batch(e, EXPORT_FINAL_TIMEOUT_MS);
        if (e->in_flight)
            return;
    }
    gt_http_free(e->http); /* allowed from its own callback */
    e->http = NULL;
    if (!e->timer.data) /* timer already closed */
        exporter_free(e);
}

static void export_batch(exporter_t *e, int64_t timeout_ms)
{
    if (e->in_flight || e->count == 0 || !e->http)
        return;
    size_t cap = e->queue_max;
    size_t n = e->count < EXPORT_MAX_BATCH ? e->count : EXPORT_MAX_BATCH;
    char *spans[EXPORT_MAX_BATCH];
    for (size_t i = 0; i < n; i++)
        spans[i] = e->ring[(e->head + i) % cap];
    char *body = gt_trace_otlp_body(e->service, spans, n);
    ring_pop(e, n);
    if (!body) {
        count_spans(0, (long)n);
        return;
    }
    e->in_flight = (int)n;
    if (gt_http_request(e->http, "POST", e->url, (const char *const *)e->headers, body,
                        strlen(body), timeout_ms, on_posted, e) != 0) {
        e->in_flight = 0;
        count_spans(0, (long)n);
    }
    free(body);
}

static void on_tick(uv_timer_t *t)
{
    export_batch(t->data, EXPORT_TIMEOUT_MS);
}

int gt_trace_export_start(uv_loop_t *loop, const gt_config_t *cfg, const char *process)
{
    if (!cfg->tracing_otlp_endpoint || ex_global)
        return 0;
    exporter_t *e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    e->loop = loop;
    e->queue_max = (size_t)cfg->tracing_queue_max;
    snprintf(e->url, sizeof(e->url), "%s/v1/traces", cfg->tracing_otlp_endpoint);
    snprintf(e->service, sizeof(e->service), "%s",
             cfg->tracing_service_name ? cfg->tracing_service_name : process);
    size_t nh = json_object_size(cfg->tracing_headers) + 2, i = 0;
    e->headers = calloc(nh, sizeof(char *));
    e->ring = calloc(e->queue_max, sizeof(char *));
    e->http = gt_http_new(loop);
    if (!e->headers || !e->ring || !e->http)
        goto fail;
    e->headers[i++] = strdup("Content-Type: application/json");
    const char *k;
    json_t *v;
    json_object_foreach (cfg->tracing_headers, k, v) {
        size_t len = strlen(k) + strlen(json_string_value(v)) + 3;
        if (!(e->headers[i] = malloc(len)))
            goto fail;
        snprintf(e->headers[i++], len, "%s: %s", k, json_string_value(v));
    }
    if (!e->headers[0])
        goto fail;
    count_spans(1, 0); /* both series exist from the start, at 0 */
    count_spans(0, 0);
    uv_timer_init(loop, &e->timer);
    e->timer.data = e;
    uv_timer_start(&e->timer, on_tick, (uint64_t)cfg->tracing_batch_ms,
                   (uint64_t)cfg->tracing_batch_ms);
    ex_global = e;
    gt_log(GT_LOG_INFO, NULL, "exporting spans to %s as %s every %lld ms", e->url, e->service,
           (long long)cfg->tracing_batch_ms);
    return 0;
fail:
    if (e->http)
        gt_http_free(e->http); /* nothing in flight: frees once the loop runs */
    e->http = NULL;
    exporter_free(e);
    return -1;
}

void gt_trace_export_stop(void)
{
    exporter_t *e = ex_global;
    if (!e || e->stopping)
        return;
    e->stopping = 1;
    ex_global = NULL; /* spans ended from now on are not exported */
    uv_timer_stop(&e->timer);
    uv_close((uv_handle_t *)&e->timer, on_timer_closed);
    export_batch(e, EXPORT_FINAL_TIMEOUT_MS);
    if (!e->in_flight) {
        count_spans(0, (long)e->count);
        gt_http_free(e->http);
        e->http = NULL; /* on_timer_closed frees e */
    }
}
