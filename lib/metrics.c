/* metrics.c - Prometheus registry: one mutex over a few dozen metrics; an
 * update is a lookup among a metric's label sets and an add, well under a
 * microsecond, so loop threads never wait on a scrape for long. */
#include "metrics.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define MAX_LABELS 8

typedef enum { K_COUNTER, K_GAUGE, K_HISTOGRAM } kind_t;

typedef struct series {
    struct series *next;
    char **values;
    double v;                 /* counter, gauge; histogram sum */
    unsigned long long count; /* histogram */
    unsigned long long *buckets;
} series_t;

struct gt_metric {
    struct gt_metric *next;
    char *name, *help;
    char *labels_src; /* labels as registered: the lookup fast path compares it */
    kind_t kind;
    int n_labels;
    char *labels[MAX_LABELS];
    double *bounds;
    int n_bounds;
    series_t *series, **tail;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static gt_metric_t *metrics, **metrics_tail = &metrics;

static const double default_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60};

static void metric_free(gt_metric_t *m)
{
    while (m->series) {
        series_t *s = m->series;
        m->series = s->next;
        for (int i = 0; i < m->n_labels; i++)
            free(s->values[i]);
        free(s->values);
        free(s->buckets);
        free(s);
    }
    for (int i = 0; i < m->n_labels; i++)
        free(m->labels[i]);
    free(m->bounds);
    free(m->labels_src);
    free(m->name);
    free(m->help);
    free(m);
}

/* Splits "a, b" into m->labels. Returns 0 or -1. */
static int parse_labels(gt_metric_t *m, const char *labels)
{
    const char *p = labels;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if (n == 0)
            break;
        if (m->n_labels == MAX_LABELS)
            return -1;
        char *l = malloc(n + 1);
        if (!l)
            return -1;
        memcpy(l, p, n);
        l[n] = '\0';
        m->labels[m->n_labels++] = l;
        p += n;
    }
    return 0;
}

static int same_labels(const gt_metric_t *m, const gt_metric_t *want)
{
    if (m->n_labels != want->n_labels)
        return 0;
    for (int i = 0; i < m->n_labels; i++)
        if (strcmp(m->labels[i], want->labels[i]) != 0)
            return 0;
    return 1;
}

static gt_metric_t *metric_register(kind_t kind, const char *name, const char *help,
                                    const char *labels, const double *bounds, int n_bounds)
{
    gt_metric_t *m = NULL, *found = NULL;
    if (!name)
        return NULL;
    /* Fast path: call sites look their metric up on every update, so an already
     * registered one with the same labels string costs a list scan, no allocation. */
    pthread_mutex_lock(&mu);
    for (gt_metric_t *x = metrics; x; x = x->next) {
        if (strcmp(x->name, name) == 0 && x->kind == kind &&
            strcmp(x->labels_src, labels ? labels : "") == 0) {
            pthread_mutex_unlock(&mu);
            return x;
        }
    }
    pthread_mutex_unlock(&mu);
    m = calloc(1, sizeof(*m));
    if (!m)
        goto fail;
    m->kind = kind;
    m->tail = &m->series;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    m->labels_src = strdup(labels ? labels : "");
    if (!m->name || !m->help || !m->labels_src || parse_labels(m, labels) != 0)
        goto fail;
    if (kind == K_HISTOGRAM) {
        if (!bounds) {
            bounds = default_bounds;
            n_bounds = (int)(sizeof(default_bounds) / sizeof(default_bounds[0]));
        }
        m->bounds = malloc(sizeof(double) * (size_t)(n_bounds > 0 ? n_bounds : 1));
        if (!m->bounds)
            goto fail;
        for (int i = 0; i < n_bounds; i++) {
            if (i > 0 && !(bounds[i] > bounds[i - 1]))
                goto fail;
            m->bounds[i] = bounds[i];
        }
        m->n_bounds = n_bounds;
    }
    pthread_mutex_lock(&mu);
    for (gt_metric_t *x = metrics; x; x = x->next) {
        if (strcmp(x->name, name) == 0) {
            found = x->kind == kind && same_labels(x, m) ? x : NULL;
            pthread_mutex_unlock(&mu);
            metric_free(m);
            return found;
        }
    }
    *metrics_tail = m;
    metrics_tail = &m->next;
    pthread_mutex_unlock(&mu);
    return m;
fail:
    if (m)
        metric_free(m);
    return NULL;
}

gt_metric_t *gt_metrics_counter(const char *name, const char *help, const char *labels)
{
    return metric_register(K_COUNTER, name, help, labels, NULL, 0);
}

gt_metric_t *gt_metrics_gauge(const char *name, const char *help, const char *labels)
{
    return metric_register(K_GAUGE, name, help, labels, NULL, 0);
}

gt_metric_t *gt_metrics_histogram(const char *name, const char *help, const char *labels,
                                  const double *buckets, int n_buckets)
{
    return metric_register(K_HISTOGRAM, name, help, labels, buckets, n_buckets);
}

/* With mu held: the series for the label values, created when create is set. */
static series_t *series_get(gt_metric_t *m, const char **vals, int create)
{
    for (series_t *s = m->series; s; s = s->next) {
        int i = 0;
        while (i < m->n_labels && strcmp(s->values[i], vals[i]) == 0)
            i++;
        if (i == m->n_labels)
            return s;
    }
    if (!create)
        return NULL;
    series_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->values = calloc((size_t)m->n_labels + 1, sizeof(char *));
    if (m->kind == K_HISTOGRAM)
        s->buckets = calloc((size_t)m->n_bounds + 1, sizeof(*s->buckets));
    int ok = s->values && (m->kind != K_HISTOGRAM || s->buckets);
    for (int i = 0; ok && i < m->n_labels; i++)
        ok = (s->values[i] = strdup(vals[i])) != NULL;
    if (!ok) {
        for (int i = 0; s->values && i < m->n_labels; i++)
            free(s->values[i]);
        free(s->values);
        free(s->buckets);
        free(s);
        return NULL;
    }
    *m->tail = s;
    m->tail = &s->next;
    return s;
}

static void collect(const gt_metric_t *m, va_list ap, const char **vals)
{
    for (int i = 0; i < m->n_labels; i++) {
        const char *v = va_arg(ap, const char *);
        vals[i] = v ? v : "";
    }
}

enum { OP_ADD, OP_SET, OP_OBSERVE };

static void update(gt_metric_t *m, int op, double v, va_list ap)
{
    const char *vals[MAX_LABELS];
    collect(m, ap, vals);
    pthread_mutex_lock(&mu);
    series_t *s = series_get(m, vals, 1);
    if (s) {
        if (op == OP_ADD)
            s->v += v;
        else if (op == OP_SET)
            s->v = v;
        else {
            int i = 0;
            while (i < m->n_bounds && v > m->bounds[i])
                i++;
            s->buckets[i]++; /* counts per bucket; cumulated when rendered */
            s->count++;
            s->v += v;
        }
    }
    pthread_mutex_unlock(&mu);
}

void gt_metric_add(gt_metric_t *m, double v, ...)
{
    if (!m || m->kind == K_HISTOGRAM || (m->kind == K_COUNTER && !(v >= 0)))
        return;
    va_list ap;
    va_start(ap, v);
    update(m, OP_ADD, v, ap);
    va_end(ap);
}

void gt_metric_set(gt_metric_t *m, double v, ...)
{
    if (!m || m->kind != K_GAUGE)
        return;
    va_list ap;
    va_start(ap, v);
    update(m, OP_SET, v, ap);
    va_end(ap);
}

void gt_metric_observe(gt_metric_t *m, double v, ...)
{
    if (!m || m->kind != K_HISTOGRAM || isnan(v))
        return;
    va_list ap;
    va_start(ap, v);
    update(m, OP_OBSERVE, v, ap);
    va_end(ap);
}

void gt_metric_remove(gt_metric_t *m, ...)
{
    if (!m)
        return;
    const char *vals[MAX_LABELS];
    va_list ap;
    va_start(ap, m);
    collect(m, ap, vals);
    va_end(ap);
    pthread_mutex_lock(&mu);
    series_t **pp = &m->series;
    m->tail = &m->series;
    while (*pp) {
        series_t *s = *pp;
        int i = 0;
        while (i < m->n_labels && strcmp(s->values[i], vals[i]) == 0)
            i++;
        if (i == m->n_labels) {
            *pp = s->next;
            for (int k = 0; k < m->n_labels; k++)
                free(s->values[k]);
            free(s->values);
            free(s->buckets);
            free(s);
            continue;
        }
        pp = &s->next;
        m->tail = pp;
    }
    pthread_mutex_unlock(&mu);
}

double gt_metric_value(gt_metric_t *m, ...)
{
    if (!m)
        return 0;
    const char *vals[MAX_LABELS];
    va_list ap;
    va_start(ap, m);
    collect(m, ap, vals);
    va_end(ap);
    pthread_mutex_lock(&mu);
    series_t *s = series_get(m, vals, 0);
    double v = !s ? 0 : m->kind == K_HISTOGRAM ? (double)s->count : s->v;
    pthread_mutex_unlock(&mu);
    return v;
}

/* ---- rendering ---------------------------------------------------------- */

/* Shortest form that reads back as the same double; Prometheus spellings
 * for the infinities and NaN. */
static const char *fmt_num(double v, char s[40])
{
    if (isnan(v))
        return "NaN";
    if (isinf(v))
        return v > 0 ? "+Inf" : "-Inf";
    snprintf(s, 40, "%.15g", v);
    if (strtod(s, NULL) != v)
        snprintf(s, 40, "%.17g", v);
    return s;
}

/* Label values escape \, " and newline; HELP text escapes \ and newline. */
static void put_escaped(gt_buf_t *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            gt_buf_puts(b, "\\\\");
        else if (*s == '\n')
            gt_buf_puts(b, "\\n");
        else if (quote && *s == '"')
            gt_buf_puts(b, "\\\"");
        else
            gt_buf_putn(b, s, 1);
    }
}

static void put_labels(gt_buf_t *b, const gt_metric_t *m, const series_t *s, const char *le)
{
    if (m->n_labels == 0 && !le)
        return;
    gt_buf_puts(b, "{");
    for (int i = 0; i < m->n_labels; i++) {
        if (i)
            gt_buf_puts(b, ",");
        gt_buf_puts(b, m->labels[i]);
        gt_buf_puts(b, "=\"");
        put_escaped(b, s->values[i], 1);
        gt_buf_puts(b, "\"");
    }
    if (le) {
        gt_buf_puts(b, m->n_labels ? ",le=\"" : "le=\"");
        gt_buf_puts(b, le);
        gt_buf_puts(b, "\"");
    }
    gt_buf_puts(b, "}");
}

static void render_series(gt_buf_t *b, const gt_metric_t *m, const series_t *s)
{
    char num[40];
    if (m->kind != K_HISTOGRAM) {
        gt_buf_puts(b, m->name);
        put_labels(b, m, s, NULL);
        gt_buf_printf(b, " %s\n", fmt_num(s->v, num));
        return;
    }
    unsigned long long cum = 0;
    for (int i = 0; i <= m->n_bounds; i++) {
        cum += s->buckets[i];
        gt_buf_printf(b, "%s_bucket", m->name);
        put_labels(b, m, s, i < m->n_bounds ? fmt_num(m->bounds[i], num) : "+Inf");
        gt_buf_printf(b, " %llu\n", cum);
    }
    gt_buf_printf(b, "%s_sum", m->name);
    put_labels(b, m, s, NULL);
    gt_buf_printf(b, " %s\n%s_count", fmt_num(s->v, num), m->name);
    put_labels(b, m, s, NULL);
    gt_buf_printf(b, " %llu\n", s->count);
}

char *gt_metrics_render(size_t *len)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    gt_buf_t b = {0};
    pthread_mutex_lock(&mu);
    for (gt_metric_t *m = metrics; m; m = m->next) {
        gt_buf_puts(&b, "# HELP ");
        gt_buf_puts(&b, m->name);
        gt_buf_puts(&b, " ");
        put_escaped(&b, m->help, 0);
        gt_buf_puts(&b, "\n# TYPE ");
        gt_buf_puts(&b, m->name);
        gt_buf_puts(&b, " ");
        gt_buf_puts(&b, types[m->kind]);
        gt_buf_puts(&b, "\n");
        if (m->n_labels == 0 && !m->series) {
            series_t zero = {0};
            unsigned long long zb[64] = {0};
            zero.buckets = zb;
            if (m->n_bounds < 64)
                render_series(&b, m, &zero);
        }
        for (series_t *s = m->series; s; s = s->next)
            render_series(&b, m, s);
    }
    pthread_mutex_unlock(&mu);
    return gt_buf_take(&b, len);
}

char *gt_metrics_json(gt_metric_t *m)
{
    if (!m || m->n_labels != 1)
        return NULL;
    json_t *o = json_object();
    pthread_mutex_lock(&mu);
    for (series_t *s = m->series; s && o; s = s->next)
        json_object_set_new(o, s->values[0],
                            json_real(m->kind == K_HISTOGRAM ? (double)s->count : s->v));
    pthread_mutex_unlock(&mu);
    char *out = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return out;
}

void gt_metrics_free(void)
{
    pthread_mutex_lock(&mu);
    while (metrics) {
        gt_metric_t *m = metrics;
        metrics = m->next;
        metric_free(m);
    }
    metrics_tail = &metrics;
    pthread_mutex_unlock(&mu);
}
