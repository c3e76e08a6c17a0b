/* metrics.h - the process's Prometheus metrics: counters, gauges and
 * histograms with labels, updated from any thread, rendered in the text
 * exposition format (version 0.0.4) for /metrics. */
#ifndef GT_METRICS_H
#define GT_METRICS_H

#include <stddef.h>

typedef struct gt_metric gt_metric_t;

/* Registers a metric in the process-wide registry, or returns the one already
 * registered under name (same type and labels; otherwise NULL). labels lists
 * the label names separated by commas ("pool,model"), or is NULL. Histogram
 * buckets are upper bounds in increasing order, +Inf implied; NULL gives the
 * latency default (5 ms .. 60 s). The registry owns metrics until
 * gt_metrics_free. Every update function accepts m == NULL as a no-op. */
gt_metric_t *gt_metrics_counter(const char *name, const char *help, const char *labels);
gt_metric_t *gt_metrics_gauge(const char *name, const char *help, const char *labels);
gt_metric_t *gt_metrics_histogram(const char *name, const char *help, const char *labels,
                                  const double *buckets, int n_buckets);

/* The variadic arguments are the label values (const char *, NULL read as
 * ""), one per declared label, in order. A new label set starts at 0. */
void gt_metric_add(gt_metric_t *m, double v, ...);     /* counter (v >= 0) or gauge */
void gt_metric_set(gt_metric_t *m, double v, ...);     /* gauge */
void gt_metric_observe(gt_metric_t *m, double v, ...); /* histogram */
void gt_metric_remove(gt_metric_t *m, ...);            /* drops one label set */

/* The value of one series (for tests and /ready); 0 when absent. Histograms
 * give their count. */
double gt_metric_value(gt_metric_t *m, ...);

/* Renders every metric. Returns a NUL-terminated string the caller frees,
 * its length in *len, or NULL on out of memory. */
char *gt_metrics_render(size_t *len);

/* Renders the series of a one-label metric as a JSON object
 * {"label value": value, ...} (caller frees), or NULL. */
char *gt_metrics_json(gt_metric_t *m);

/* Frees every metric (at exit, after the admin server stopped). */
void gt_metrics_free(void);

#endif
