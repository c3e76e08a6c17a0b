/* trace.h - W3C Trace Context (traceparent) and spans exported with OTLP/HTTP JSON.
 *
 * A traceparent travels in the `traceparent` Kafka header from a request to its
 * tasks, task results, usage events and final result, and in the `traceparent`
 * HTTP header to providers. Spans are queued in memory and POSTed in batches by
 * one exporter per process, on its libuv loop; without tracing.otlp_endpoint
 * the exporter is off and ending a span costs nothing. */
#ifndef GT_TRACE_H
#define GT_TRACE_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

#define GT_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

typedef struct gt_trace_ctx {
    char trace_id[33]; /* 32 lowercase hex, not all zero */
    char span_id[17];  /* 16 lowercase hex, not all zero: the span this context names */
    unsigned flags;    /* trace-flags; bit 0: sampled */
} gt_trace_ctx_t;

/* Parses a traceparent strictly: version 00, exactly 55 characters, lowercase
 * hex fields, non-zero trace and parent ids. Returns 0, or -1 (out untouched). */
int gt_trace_parse(const char *header, gt_trace_ctx_t *out);
/* Writes "00-<trace>-<span>-<flags>" into out (at least 56 bytes); returns out. */
char *gt_trace_format(const gt_trace_ctx_t *ctx, char *out);
/* A new trace: random trace and span ids (CSPRNG), sampled. Returns 0 or -1. */
int gt_trace_new(gt_trace_ctx_t *out);
/* A child of parent: same trace id and flags, a new random span id. parent and
 * out may be the same. Returns 0 or -1. */
int gt_trace_child(const gt_trace_ctx_t *parent, gt_trace_ctx_t *out);
/* The context of header when it parses, else a new trace; *adopted says which
 * (may be NULL). Returns 0 or -1 (no randomness). */
int gt_trace_adopt(const char *header, gt_trace_ctx_t *out, int *adopted);

/* ---- spans ------------------------------------------------------------------- */

/* OTLP SpanKind values. */
enum {
    GT_SPAN_INTERNAL = 1,
    GT_SPAN_SERVER = 2,
    GT_SPAN_CLIENT = 3,
    GT_SPAN_PRODUCER = 4,
    GT_SPAN_CONSUMER = 5
};

/* A span in progress: plain data, embed it anywhere; nothing to free. */
typedef struct gt_span {
    gt_trace_ctx_t ctx; /* this span's trace id and span id: what children and
                           outgoing traceparents name */
    char parent_id[17]; /* "" for a root span */
    char name[64];
    int kind;
    int64_t start_ns; /* wall clock, Unix ns */
} gt_span_t;

/* Starts a span as a child of parent (NULL: root of a new trace). Returns 0 or -1. */
int gt_span_start(gt_span_t *s, const gt_trace_ctx_t *parent, const char *name, int kind);
/* Ends s and queues it for export (nothing happens when the exporter is off).
 * error: NULL for status OK, else the status message (no content: never a
 * prompt, output or secret). attrs_fmt: NULL, or a json_pack format of an
 * object of string/integer/real/bool values with its arguments; it is built
 * only when the span is exported, so a hot path pays nothing for attributes
 * without an exporter. An attribute that cannot be packed (a NULL string)
 * drops the attributes, not the span. s may be ended only once. */
void gt_span_end(gt_span_t *s, const char *error, const char *attrs_fmt, ...);

/* ---- exporter (one per process) --------------------------------------------- */

/* Starts exporting spans to cfg->tracing_otlp_endpoint on loop (the tracing
 * settings are copied; a reload does not change them); process names the service when
 * tracing.service_name is unset. Without an endpoint this does nothing and
 * returns 0. Returns -1 when the HTTP client cannot start. */
int gt_trace_export_start(uv_loop_t *loop, const gt_config_t *cfg, const char *process);
/* Sends what is queued (one last POST, bounded by a short timeout), then
 * closes the exporter's handles; the loop must run afterwards. Spans ended
 * later are dropped. Safe to call when not started, and twice. */
void gt_trace_export_stop(void);
/* Counters (for metrics and tests): spans accepted by the collector, and
 * spans dropped (queue full, collector error or down). */
long gt_trace_exported(void);
long gt_trace_dropped(void);

/* The OTLP JSON request body (resourceSpans) for n spans, each one OTLP JSON
 * span object as gt_span_end queues them. Exposed for the benchmark. Returns a
 * malloc'd string, or NULL on out of memory. */
char *gt_trace_otlp_body(const char *service_name, char *const *spans, size_t n);

#endif
