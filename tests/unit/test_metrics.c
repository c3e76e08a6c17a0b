/* test_metrics.c - the metrics registry and /metrics, /health, /ready of the
 * admin server, read back through a strict Prometheus text-format parser. */
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "harness.h"
#include "metrics.h"

/* ---- a strict parser of the text exposition format (0.0.4) ------------- */

#define MAX_SERIES 512

typedef struct prom {
    char err[256];
    int samples;
    char series[MAX_SERIES][640]; /* name{labels} seen, for duplicates */
    char typed[64][128];
    char types[64][32];
    int n_typed;
    /* histogram state: the series (without le) whose buckets are running */
    char hist_key[256];
    double last_le, last_count;
    int in_hist;
} prom_t;

static int is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static int is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

static const char *type_of(prom_t *p, const char *name)
{
    for (int i = 0; i < p->n_typed; i++)
        if (strcmp(p->typed[i], name) == 0)
            return p->types[i];
    return NULL;
}

static int parse_value(const char *s, double *v)
{
    if (strcmp(s, "+Inf") == 0 || strcmp(s, "-Inf") == 0 || strcmp(s, "NaN") == 0) {
        *v = strcmp(s, "NaN") == 0 ? NAN : s[0] == '+' ? INFINITY : -INFINITY;
        return 0;
    }
    char *end;
    *v = strtod(s, &end);
    return *s && !*end && !strpbrk(s, "iInN") ? 0 : -1;
}

/* One sample line. Returns 0, or -1 with p->err set. */
static int parse_sample(prom_t *p, const char *line)
{
    char name[128], labels[256] = "", le[128] = "", key[640];
    const char *s = line;
    size_t n = 0;
    if (!is_name_start(*s))
        return snprintf(p->err, sizeof(p->err), "bad metric name: %.180s", line), -1;
    while (is_name_char(*s) && n < sizeof(name) - 1)
        name[n++] = *s++;
    name[n] = '\0';
    size_t ln = 0;
    if (*s == '{') {
        s++;
        while (*s != '}') {
            char lname[64], lval[128];
            size_t k = 0, v = 0;
            if (!is_name_start(*s))
                return snprintf(p->err, sizeof(p->err), "bad label name: %.180s", line), -1;
            while (is_name_char(*s) && k < sizeof(lname) - 1)
                lname[k++] = *s++;
            lname[k] = '\0';
            if (s[0] != '=' || s[1] != '"')
                return snprintf(p->err, sizeof(p->err), "label without =\": %.180s", line), -1;
            s += 2;
            while (*s != '"') {
                if (!*s || *s == '\n')
                    return snprintf(p->err, sizeof(p->err), "unterminated label: %.180s", line), -1;
                if (*s == '\\') {
                    s++;
                    if (*s != '\\' && *s != '"' && *s != 'n')
                        return snprintf(p->err, sizeof(p->err), "bad escape: %.180s", line), -1;
                }
                if (v < sizeof(lval) - 1)
                    lval[v++] = *s;
                s++;
            }
            lval[v] = '\0';
            s++;
            if (strcmp(lname, "le") == 0)
                snprintf(le, sizeof(le), "%s", lval);
            else
                ln += (size_t)snprintf(labels + ln, sizeof(labels) - ln, "%s=%s,", lname, lval);
            if (*s == ',')
                s++;
            else if (*s != '}')
                return snprintf(p->err, sizeof(p->err), "bad label list: %.180s", line), -1;
        }
        s++;
    }
    if (*s != ' ')
        return snprintf(p->err, sizeof(p->err), "no space before the value: %.180s", line), -1;
    double val;
    if (parse_value(s + 1, &val) != 0)
        return snprintf(p->err, sizeof(p->err), "bad value: %.180s", line), -1;

    /* The family: histogram samples carry a suffix. */
    char family[128];
    snprintf(family, sizeof(family), "%s", name);
    const char *suffix = "";
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < 3; i++) {
        size_t fl = strlen(name), sl = strlen(sfx[i]);
        if (fl > sl && strcmp(name + fl - sl, sfx[i]) == 0) {
            char base[128];
            snprintf(base, sizeof(base), "%.*s", (int)(fl - sl), name);
            const char *t = type_of(p, base);
            if (t && strcmp(t, "histogram") == 0) {
                snprintf(family, sizeof(family), "%s", base);
                suffix = sfx[i];
            }
        }
    }
    const char *type = type_of(p, family);
    if (!type)
        return snprintf(p->err, sizeof(p->err), "sample before its TYPE: %.180s", line), -1;
    if (strcmp(type, "counter") == 0 && !(val >= 0))
        return snprintf(p->err, sizeof(p->err), "negative counter: %.180s", line), -1;
    snprintf(key, sizeof(key), "%s{%s}le=%s", name, labels, le);
    for (int i = 0; i < p->samples && i < MAX_SERIES; i++)
        if (strcmp(p->series[i], key) == 0)
            return snprintf(p->err, sizeof(p->err), "duplicate series: %.180s", line), -1;
    if (p->samples < MAX_SERIES)
        snprintf(p->series[p->samples], sizeof(p->series[0]), "%s", key);
    p->samples++;

    if (strcmp(type, "histogram") == 0) {
        char hk[256];
        snprintf(hk, sizeof(hk), "%s{%s}", family, labels);
        if (strcmp(suffix, "_bucket") == 0) {
            double bound;
            if (!*le || parse_value(le, &bound) != 0)
                return snprintf(p->err, sizeof(p->err), "bucket without le: %.180s", line), -1;
            if (!p->in_hist || strcmp(p->hist_key, hk) != 0) {
                if (p->in_hist)
                    return snprintf(p->err, sizeof(p->err), "histogram %.180s lacks +Inf",
                                    p->hist_key), -1;
                snprintf(p->hist_key, sizeof(p->hist_key), "%s", hk);
                p->in_hist = 1;
                p->last_le = -INFINITY;
                p->last_count = 0;
            }
            if (!(bound > p->last_le) || val < p->last_count)
                return snprintf(p->err, sizeof(p->err), "buckets not cumulative: %.180s", line), -1;
            p->last_le = bound;
            p->last_count = val;
        } else if (strcmp(suffix, "_count") == 0) {
            if (strcmp(p->hist_key, hk) != 0 || !isinf(p->last_le) || val != p->last_count)
                return snprintf(p->err, sizeof(p->err), "_count differs from +Inf: %.180s", line),
                       -1;
            p->in_hist = 0;
            p->hist_key[0] = '\0';
        } else if (*le) {
            return snprintf(p->err, sizeof(p->err), "le on a non-bucket: %.180s", line), -1;
        }
    } else if (*le) {
        return snprintf(p->err, sizeof(p->err), "le outside a histogram: %.180s", line), -1;
    }
    return 0;
}

/* Returns the number of samples, or -1 with p->err set. */
static int prom_parse(prom_t *p, const char *text)
{
    memset(p, 0, sizeof(*p));
    const char *s = text;
    while (*s) {
        const char *nl = strchr(s, '\n');
        if (!nl)
            return snprintf(p->err, sizeof(p->err), "last line lacks a newline"), -1;
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)(nl - s), s);
        s = nl + 1;
        if (!line[0])
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32], extra[8];
            if (sscanf(line + 7, "%127s %31s %7s", name, type, extra) != 2)
                return snprintf(p->err, sizeof(p->err), "bad TYPE: %.180s", line), -1;
            if (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram") &&
                strcmp(type, "summary") && strcmp(type, "untyped"))
                return snprintf(p->err, sizeof(p->err), "unknown type: %.180s", line), -1;
            if (type_of(p, name))
                return snprintf(p->err, sizeof(p->err), "second TYPE: %.180s", line), -1;
            if (p->n_typed == 64)
                return snprintf(p->err, sizeof(p->err), "too many families"), -1;
            snprintf(p->typed[p->n_typed], sizeof(p->typed[0]), "%s", name);
            snprintf(p->types[p->n_typed], sizeof(p->types[0]), "%s", type);
            p->n_typed++;
            continue;
        }
        if (line[0] == '#') {
            if (strncmp(line, "# HELP ", 7) == 0 && !is_name_start(line[7]))
                return snprintf(p->err, sizeof(p->err), "bad HELP: %.180s", line), -1;
            continue;
        }
        if (parse_sample(p, line) != 0)
            return -1;
    }
    if (p->in_hist)
        return snprintf(p->err, sizeof(p->err), "histogram %.180s lacks _count", p->hist_key), -1;
    return p->samples;
}

static prom_t P;

/* ---- the parser rejects what it must ------------------------------------ */

static void test_parser_rejects(void)
{
    static const char *const bad[] = {
        "x 1\n",                                                  /* no TYPE */
        "# TYPE x counter\nx -1\n",                              /* negative counter */
        "# TYPE x gauge\nx{a=\"b} 1\n",                          /* unterminated */
        "# TYPE x gauge\nx{a=\"\\q\"} 1\n",                      /* bad escape */
        "# TYPE x gauge\nx 1\nx 2\n",                            /* duplicate */
        "# TYPE x gauge\nx one\n",                               /* bad value */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n"
        "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",         /* not cumulative */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n", /* no +Inf */
        "# TYPE x gauge\nx 1",                                   /* no final newline */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int n = prom_parse(&P, bad[i]);
        if (n >= 0)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CU_ASSERT(n < 0);
    }
    CU_ASSERT(prom_parse(&P, "# HELP x a\n# TYPE x gauge\nx{a=\"q\\\"\\n\\\\\"} +Inf\n") == 1);
}

/* ---- the registry -------------------------------------------------------- */

static void test_render_and_escape(void)
{
    gt_metric_t *c = gt_metrics_counter("t_requests_total", "Requests\nby \\ status", "status");
    gt_metric_t *g = gt_metrics_gauge("t_in_flight", "In flight", NULL);
    static const double b[] = {0.1, 1, 10};
    gt_metric_t *h = gt_metrics_histogram("t_duration_seconds", "Durations", "model", b, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_EQUAL(gt_metrics_counter("t_requests_total", "again", "status"), c);
    CU_ASSERT_PTR_NULL(gt_metrics_gauge("t_requests_total", "other type", "status"));
    CU_ASSERT_PTR_NULL(gt_metrics_counter("t_requests_total", "other labels", "code"));
    gt_metric_add(c, 1, "succeeded");
    gt_metric_add(c, 2, "succeeded");
    gt_metric_add(c, 1, "we\"ird\\\nvalue");
    gt_metric_add(c, -5, "succeeded"); /* counters never go down */
    gt_metric_set(g, 7);
    gt_metric_add(g, -2);
    gt_metric_observe(h, 0.05, "m");
    gt_metric_observe(h, 0.1, "m"); /* le is inclusive */
    gt_metric_observe(h, 5, "m");
    gt_metric_observe(h, 50, "m");
    TH_EQ_INT((int)gt_metric_value(c, "succeeded"), 3);
    TH_EQ_INT((int)gt_metric_value(g), 5);
    TH_EQ_INT((int)gt_metric_value(h, "m"), 4);
    size_t len = 0;
    char *text = gt_metrics_render(&len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    TH_EQ_INT((int)len, (int)strlen(text));
    int n = prom_parse(&P, text);
    if (n < 0)
        fprintf(stderr, "  %s\n%s", P.err, text);
    CU_ASSERT(n > 0);
    CU_ASSERT(strstr(text, "# HELP t_requests_total Requests\\nby \\\\ status\n") != NULL);
    CU_ASSERT(strstr(text, "t_requests_total{status=\"succeeded\"} 3\n") != NULL);
    CU_ASSERT(strstr(text, "t_requests_total{status=\"we\\\"ird\\\\\\nvalue\"} 1\n") != NULL);
    CU_ASSERT(strstr(text, "t_in_flight 5\n") != NULL);
    CU_ASSERT(strstr(text, "t_duration_seconds_bucket{model=\"m\",le=\"0.1\"} 2\n") != NULL);
    CU_ASSERT(strstr(text, "t_duration_seconds_bucket{model=\"m\",le=\"10\"} 3\n") != NULL);
    CU_ASSERT(strstr(text, "t_duration_seconds_bucket{model=\"m\",le=\"+Inf\"} 4\n") != NULL);
    CU_ASSERT(strstr(text, "t_duration_seconds_sum{model=\"m\"} 55.15\n") != NULL);
    CU_ASSERT(strstr(text, "t_duration_seconds_count{model=\"m\"} 4\n") != NULL);
    free(text);
    gt_metric_remove(c, "succeeded");
    TH_EQ_INT((int)gt_metric_value(c, "succeeded"), 0);
    text = gt_metrics_render(NULL);
    CU_ASSERT(strstr(text, "status=\"succeeded\"") == NULL);
    CU_ASSERT(prom_parse(&P, text) > 0);
    free(text);
}

static void *hammer(void *arg)
{
    gt_metric_t *m = arg;
    for (int i = 0; i < 100000; i++) {
        gt_metric_add(m, 1, i % 2 ? "odd" : "even");
        gt_metric_observe(gt_metrics_histogram("t_hammer_seconds", "x", NULL, NULL, 0), 0.001);
    }
    return NULL;
}

static void test_threads_sum_exactly(void)
{
    gt_metric_t *m = gt_metrics_counter("t_hammer_total", "Concurrent adds", "parity");
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, hammer, m);
    /* Scrapes while the threads write must parse every time. */
    for (int i = 0; i < 50; i++) {
        char *text = gt_metrics_render(NULL);
        CU_ASSERT(prom_parse(&P, text) > 0);
        free(text);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    TH_EQ_INT((int)gt_metric_value(m, "odd"), 200000);
    TH_EQ_INT((int)gt_metric_value(m, "even"), 200000);
    TH_EQ_INT((int)gt_metric_value(gt_metrics_histogram("t_hammer_seconds", "x", NULL, NULL, 0)),
              400000);
}

/* ---- the admin server ---------------------------------------------------- */

typedef struct body {
    char *data;
    size_t len;
} body_t;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    body_t *b = arg;
    char *d = realloc(b->data, b->len + size * n + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, p, size * n);
    b->data = d;
    b->len += size * n;
    d[b->len] = '\0';
    return size * n;
}

static void body_reset(body_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

static long get(int port, const char *path, body_t *body)
{
    char url[128];
    long code = 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    return code;
}

static int flag_ok = 0;

static int check_flag(void *arg, char *detail, size_t len)
{
    snprintf(detail, len, "flag %d", *(int *)arg);
    return *(int *)arg;
}

static void test_admin_endpoints(void)
{
    char err[256];
    gt_admin_t *a = gt_admin_start("127.0.0.1", 0, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    int port = gt_admin_port(a);
    CU_ASSERT(port > 0);
    TH_EQ_INT(gt_admin_add_check(a, "dep", check_flag, &flag_ok), 0);
    body_t b = {0};
    TH_EQ_INT((int)get(port, "/health", &b), 200);
    body_reset(&b);
    TH_EQ_INT((int)get(port, "/ready", &b), 503);
    CU_ASSERT(b.data && strstr(b.data, "\"ready\":false") && strstr(b.data, "flag 0"));
    flag_ok = 1;
    body_reset(&b);
    TH_EQ_INT((int)get(port, "/ready", &b), 200);
    CU_ASSERT(b.data && strstr(b.data, "\"ready\":true"));
    body_reset(&b);
    TH_EQ_INT((int)get(port, "/metrics", &b), 200);
    CU_ASSERT(b.data && prom_parse(&P, b.data) > 0);
    CU_ASSERT(b.data && strstr(b.data, "t_in_flight 5\n"));
    body_reset(&b);
    TH_EQ_INT((int)get(port, "/nope", &b), 404);
    body_reset(&b);
    gt_admin_stop(a);
    int p;
    TH_EQ_INT(gt_admin_parse_port("0", &p), 0);
    TH_EQ_INT(gt_admin_parse_port("65536", &p), -1);
    TH_EQ_INT(gt_admin_parse_port("80x", &p), -1);
    CU_ASSERT_PTR_NULL(gt_admin_start("not-an-ip", 0, err, sizeof(err)));
}

int main(void)
{
    static const th_test_t tests[] = {
        {"the parser rejects malformed exposition text", test_parser_rejects},
        {"render: types, labels, escaping, histogram buckets", test_render_and_escape},
        {"adds from four threads sum exactly while scraped", test_threads_sum_exactly},
        {"admin: /health, /ready with a failing then passing check, /metrics", test_admin_endpoints},
        {NULL, NULL},
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = th_run("metrics", tests);
    gt_metrics_free();
    curl_global_cleanup();
    return rc;
}
