/* trace.c - W3C traceparent parse/format, span ids from OpenSSL's CSPRNG, and the
 * OTLP/HTTP JSON exporter: a bounded queue POSTed in batches through lib/http on
 * the loop; when the collector is slow or down, spans are dropped and counted,
 * never waited for. */
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "log.h"
#include "trace.h"

#define EXPORT_MAX_BATCH 512      /* spans per POST */
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
        if (RAND_bytes(raw, (int)nbytes) != 1)
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

typedef struct exporter {
    uv_loop_t *loop;
    const gt_config_t *cfg;
    gt_http_t *http;
    uv_timer_t timer;
    char url[1024];
    char service[128];
    char **headers;       /* "Name: value", NULL-terminated */
    json_t *queue;        /* span objects waiting */
    int in_flight;        /* spans in the POST now */
    int stopping;
} exporter_t;

static exporter_t *ex_global;
static atomic_long exported_total, dropped_total;

long gt_trace_exported(void) { return atomic_load(&exported_total); }
long gt_trace_dropped(void) { return atomic_load(&dropped_total); }

static json_t *attr_value(json_t *v)
{
    char num[32];
    if (json_is_integer(v)) { /* OTLP JSON: 64-bit integers as strings */
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        return json_pack("{s:s}", "intValue", num);
    }
    if (json_is_real(v))
        return json_pack("{s:f}", "doubleValue", json_real_value(v));
    if (json_is_boolean(v))
        return json_pack("{s:b}", "boolValue", json_is_true(v));
    if (json_is_string(v))
        return json_pack("{s:s}", "stringValue", json_string_value(v));
    return NULL;
}

static json_t *attr_list(json_t *attrs)
{
    json_t *list = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(attrs, k, v) {
        json_t *av = attr_value(v);
        if (av)
            json_array_append_new(list, json_pack("{s:s, s:o}", "key", k, "value", av));
    }
    return list;
}

void gt_span_end(gt_span_t *s, const char *error, json_t *attrs)
{
    exporter_t *e = ex_global;
    if (!e || e->stopping || !s->ctx.trace_id[0]) {
        json_decref(attrs);
        return;
    }
    if ((int)json_array_size(e->queue) + e->in_flight >= e->cfg->tracing_queue_max) {
        atomic_fetch_add(&dropped_total, 1);
        json_decref(attrs);
        return;
    }
    char start[24], end[24];
    snprintf(start, sizeof(start), "%lld", (long long)s->start_ns);
    snprintf(end, sizeof(end), "%lld", (long long)now_ns());
    json_t *span = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:o, s:{s:i}}", "traceId",
                             s->ctx.trace_id, "spanId", s->ctx.span_id, "name", s->name, "kind",
                             s->kind, "startTimeUnixNano", start, "endTimeUnixNano", end,
                             "attributes", attr_list(attrs), "status", "code", error ? 2 : 1);
    json_decref(attrs);
    if (!span) {
        atomic_fetch_add(&dropped_total, 1);
        return;
    }
    if (s->parent_id[0])
        json_object_set_new(span, "parentSpanId", json_string(s->parent_id));
    if (error)
        json_object_set_new(json_object_get(span, "status"), "message", json_string(error));
    json_array_append_new(e->queue, span);
    s->ctx.trace_id[0] = 0; /* ended */
}

json_t *gt_trace_otlp_document(const char *service_name, json_t *spans)
{
    return json_pack("{s:[{s:{s:[{s:s, s:{s:s}}]}, s:[{s:{s:s}, s:O}]}]}", "resourceSpans",
                     "resource", "attributes", "key", "service.name", "value", "stringValue",
                     service_name, "scopeSpans", "scope", "name", "gantry", "spans", spans);
}

/* ---- exporter ------------------------------------------------------------------ */

static void exporter_free(exporter_t *e)
{
    if (!e)
        return;
    for (size_t i = 0; e->headers && e->headers[i]; i++)
        free(e->headers[i]);
    free(e->headers);
    json_decref(e->queue);
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
        atomic_fetch_add(&exported_total, n);
    } else {
        /* The collector is down or refused the batch: drop it, never pile up. */
        atomic_fetch_add(&dropped_total, n);
        gt_log(GT_LOG_DEBUG, NULL, "OTLP export of %d span(s) failed: %s%ld", n,
               resp->status ? "HTTP " : "", resp->status ? resp->status
                                                          : (long)resp->curl_code);
    }
    if (!e->stopping)
        return;
    if (json_array_size(e->queue) > 0) {
        export_batch(e, EXPORT_FINAL_TIMEOUT_MS);
        if (e->in_flight)
            return;
    }
    gt_http_free(e->http); /* allowed from its own callback */
    e->http = NULL;
    if (!e->timer.data)    /* timer already closed */
        exporter_free(e);
}

static void export_batch(exporter_t *e, int64_t timeout_ms)
{
    size_t n = json_array_size(e->queue);
    if (e->in_flight || n == 0 || !e->http)
        return;
    if (n > EXPORT_MAX_BATCH)
        n = EXPORT_MAX_BATCH;
    json_t *batch = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(batch, json_array_get(e->queue, i));
    json_t *rest = json_array();
    for (size_t i = n; i < json_array_size(e->queue); i++)
        json_array_append(rest, json_array_get(e->queue, i));
    json_decref(e->queue);
    e->queue = rest;
    json_t *doc = gt_trace_otlp_document(e->service, batch);
    json_decref(batch);
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!body) {
        atomic_fetch_add(&dropped_total, (long)n);
        return;
    }
    e->in_flight = (int)n;
    if (gt_http_request(e->http, "POST", e->url, (const char *const *)e->headers, body,
                        strlen(body), timeout_ms, on_posted, e) != 0) {
        e->in_flight = 0;
        atomic_fetch_add(&dropped_total, (long)n);
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
    e->cfg = cfg;
    snprintf(e->url, sizeof(e->url), "%s/v1/traces", cfg->tracing_otlp_endpoint);
    snprintf(e->service, sizeof(e->service), "%s",
             cfg->tracing_service_name ? cfg->tracing_service_name : process);
    size_t nh = json_object_size(cfg->tracing_headers) + 2, i = 0;
    e->headers = calloc(nh, sizeof(char *));
    e->queue = json_array();
    e->http = gt_http_new(loop);
    if (!e->headers || !e->queue || !e->http)
        goto fail;
    e->headers[i++] = strdup("Content-Type: application/json");
    const char *k;
    json_t *v;
    json_object_foreach(cfg->tracing_headers, k, v) {
        size_t len = strlen(k) + strlen(json_string_value(v)) + 3;
        if (!(e->headers[i] = malloc(len)))
            goto fail;
        snprintf(e->headers[i++], len, "%s: %s", k, json_string_value(v));
    }
    if (!e->headers[0])
        goto fail;
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
        atomic_fetch_add(&dropped_total, (long)json_array_size(e->queue));
        gt_http_free(e->http);
        e->http = NULL; /* on_timer_closed frees e */
    }
}
