/* prom.h - for tests: a strict parser of the Prometheus text exposition
 * format (what promtool would refuse, it refuses), sums of samples, and an
 * HTTP GET to scrape with. */
#ifndef GT_TEST_PROM_H
#define GT_TEST_PROM_H

#include <stddef.h>

#define MAX_SERIES 512

typedef struct prom {
    char err[256];
    int samples;
    char series[MAX_SERIES][640]; /* name{labels} seen, for duplicates */
    char typed[64][128];
    char types[64][32];
    int n_typed;
    /* histogram state: the series (without le) whose buckets are running */
    char hist_key[640];
    double last_le, last_count;
    int in_hist;
} prom_t;

/* Checks names, label syntax and escapes, values, TYPE before samples and
 * once, no duplicate series, counters not negative, histogram buckets
 * cumulative with +Inf equal to _count. Returns the number of samples, or -1
 * with p->err set. */
int prom_parse(prom_t *p, const char *text);

/* Sum of the samples of metric name (exactly; "x_count" for a histogram's
 * count) whose line contains match (e.g. "status=\"succeeded\""; NULL: all). */
double prom_sum(const char *text, const char *name, const char *match);

typedef struct prom_body {
    char *data;
    size_t len;
} prom_body_t;

/* GET url into body (replacing what it held; free body->data when done).
 * Returns the HTTP status, or 0 when the request failed. */
long prom_get(const char *url, prom_body_t *body);

#endif
