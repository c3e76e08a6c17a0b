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
#include "prom.h"

static prom_t P;

/* ---- the parser rejects what it must ------------------------------------ */

static void test_parser_rejects(void)
{
    static const char *const bad[] = {
        "x 1\n",                            /* no TYPE */
        "# TYPE x counter\nx -1\n",         /* negative counter */
        "# TYPE x gauge\nx{a=\"b} 1\n",     /* unterminated */
        "# TYPE x gauge\nx{a=\"\\q\"} 1\n", /* bad escape */
        "# TYPE x gauge\nx 1\nx 2\n",       /* duplicate */
        "# TYPE x gauge\nx one\n",          /* bad value */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n"
        "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",                  /* not cumulative */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n", /* no +Inf */
        "# TYPE x gauge\nx 1",                                            /* no final newline */
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

static long get(int port, const char *path, prom_body_t *body)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    return prom_get(url, body);
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
    prom_body_t b = {0};
    TH_EQ_INT((int)get(port, "/health", &b), 200);
    TH_EQ_INT((int)get(port, "/ready", &b), 503);
    CU_ASSERT(b.data && strstr(b.data, "\"ready\":false") && strstr(b.data, "flag 0"));
    flag_ok = 1;
    TH_EQ_INT((int)get(port, "/ready", &b), 200);
    CU_ASSERT(b.data && strstr(b.data, "\"ready\":true"));
    TH_EQ_INT((int)get(port, "/metrics", &b), 200);
    CU_ASSERT(b.data && prom_parse(&P, b.data) > 0);
    CU_ASSERT(b.data && strstr(b.data, "t_in_flight 5\n"));
    TH_EQ_INT((int)get(port, "/nope", &b), 404);
    free(b.data);
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
        {"admin: /health, /ready with a failing then passing check, /metrics",
         test_admin_endpoints},
        {NULL, NULL},
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = th_run("metrics", tests);
    gt_metrics_free();
    curl_global_cleanup();
    return rc;
}
