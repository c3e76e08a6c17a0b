/* test_moderation.c - the moderation client over real HTTP: gantry-mock-openai
 * answers /v1/moderations on loopback. The request is OpenAI's (model, input,
 * bearer key), its scores decide, and when the endpoint refuses, is down or is
 * too slow the keyword list decides instead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatcher_config.h"
#include "harness.h"
#include "http.h"
#include "moderation.h"

#define KEY "mod-test-key"

static th_proc_t mock;
static char addr[64];
static uv_loop_t loop;

typedef struct answer {
    int done;
    gt_mod_verdict_t v;
    char source[32];
} answer_t;

static void on_verdict(const gt_mod_verdict_t *v, void *arg)
{
    answer_t *a = arg;
    a->v = *v;
    snprintf(a->source, sizeof(a->source), "%s", v->source);
    a->done = 1;
}

static gt_config_t *config(const char *endpoint, const char *key, int timeout_ms)
{
    char text[1024], err[1024];
    snprintf(text, sizeof(text),
             "{\"kafka\": {\"bootstrap_servers\": \"x:1\"}, \"moderation\": {\"endpoint\": \"%s\","
             " \"api_key\": \"%s\", \"timeout_ms\": %d}}",
             endpoint, key, timeout_ms);
    gt_config_t *c = gt_config_parse(text, NULL, err, sizeof(err));
    if (!c)
        fprintf(stderr, "  config: %s\n", err);
    return c;
}

/* One check with a fresh client; the loop runs until its answer. */
static answer_t check(const gt_config_t *cfg, const char *text)
{
    answer_t a = {0};
    gt_moderation_t *m = gt_moderation_new(&loop, cfg);
    CU_ASSERT_FATAL(m != NULL);
    CU_ASSERT_FATAL(gt_moderation_check(m, text, strlen(text), on_verdict, &a) == 0);
    int64_t end = th_now_ms() + 20000;
    while (!a.done && th_now_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
    CU_ASSERT(a.done);
    gt_moderation_free(m);
    uv_run(&loop, UV_RUN_DEFAULT);
    return a;
}

static void on_stats(const gt_http_response_t *resp, void *arg)
{
    json_t **out = arg;
    *out = resp->status == 200 ? json_loads(resp->body, 0, NULL) : json_null();
}

static json_t *mock_stats(void)
{
    char url[128];
    snprintf(url, sizeof(url), "http://%s/v1/stats", addr);
    json_t *out = NULL;
    gt_http_t *h = gt_http_new(&loop);
    CU_ASSERT_FATAL(gt_http_request(h, "GET", url, NULL, NULL, 0, 5000, on_stats, &out) == 0);
    int64_t end = th_now_ms() + 10000;
    while (!out && th_now_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
    gt_http_free(h);
    uv_run(&loop, UV_RUN_DEFAULT);
    return out;
}

static void test_endpoint_decides(void)
{
    char url[128];
    snprintf(url, sizeof(url), "http://%s", addr);
    gt_config_t *cfg = config(url, KEY, 5000);
    CU_ASSERT_FATAL(cfg != NULL);
    double defaults[GT_MOD_NCATEGORIES] = {0.5, 0.5, 0.5, 0.5, 0.5};

    answer_t a = check(cfg, "a calm question [flag:violence]");
    TH_EQ_STR(a.source, "endpoint");
    CU_ASSERT(a.v.scores[GT_MOD_VIOLENCE] > 0.92 && a.v.scores[GT_MOD_VIOLENCE] < 0.94);
    CU_ASSERT(a.v.scores[GT_MOD_HATE] < 0.01);
    TH_EQ_INT(gt_moderation_flagged(&a.v, defaults), GT_MOD_VIOLENCE);

    /* What was sent: OpenAI's body, the configured model, the bearer key. */
    json_t *st = mock_stats();
    json_t *last = json_object_get(st, "last_request");
    TH_EQ_STR(json_string_value(json_object_get(last, "path")), "/v1/moderations");
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(last, "body"), "model")),
              "omni-moderation-latest");
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(last, "body"), "input")),
              "a calm question [flag:violence]");
    CU_ASSERT(json_is_true(json_object_get(last, "authorized")));
    TH_EQ_STR(json_string_value(json_object_get(last, "content_type")), "application/json");
    TH_EQ_INT(json_integer_value(json_object_get(st, "moderations")), 1);
    json_decref(st);

    /* A subcategory counts for its category. */
    a = check(cfg, "[flag:self-harm/intent]");
    TH_EQ_STR(a.source, "endpoint");
    TH_EQ_INT(gt_moderation_flagged(&a.v, defaults), GT_MOD_SELF_HARM);

    /* The endpoint is the authority: a phrase of the keyword list it does
     * not flag passes. */
    a = check(cfg, "how to make a bomb");
    TH_EQ_STR(a.source, "endpoint");
    TH_EQ_INT(gt_moderation_flagged(&a.v, defaults), -1);
    gt_config_free(cfg);
}

static void test_fallbacks(void)
{
    double defaults[GT_MOD_NCATEGORIES] = {0.5, 0.5, 0.5, 0.5, 0.5};
    char url[128];
    snprintf(url, sizeof(url), "http://%s", addr);
    const char *text = "how to make a bomb [flag:hate]";
    struct {
        const char *why, *endpoint, *key;
        int timeout_ms;
    } cases[] = {
        {"refused (401)", url, "wrong-key", 5000},
        {"too slow", url, KEY, 5}, /* the mock answers in 50 ms */
        {"down", "http://127.0.0.1:1", KEY, 5000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gt_config_t *cfg = config(cases[i].endpoint, cases[i].key, cases[i].timeout_ms);
        CU_ASSERT_FATAL(cfg != NULL);
        answer_t a = check(cfg, text);
        fprintf(stderr, "  %s: %s\n", cases[i].why, a.source);
        TH_EQ_STR(a.source, "keywords-fallback");
        /* The keyword list's verdict, not the marker's. */
        TH_EQ_INT(gt_moderation_flagged(&a.v, defaults), GT_MOD_VIOLENCE);
        CU_ASSERT(a.v.scores[GT_MOD_HATE] == 0.0);
        gt_config_free(cfg);
    }
    json_t *st = mock_stats();
    TH_EQ_INT(json_integer_value(json_object_get(st, "unauthorized")), 1);
    json_decref(st);
}

int main(void)
{
    gt_dispatcher_config_register();
    uv_loop_init(&loop);
    const char *argv[] = {th_bin("tools/gantry-mock-openai"),
                          "--port",
                          "0",
                          "--api-key",
                          KEY,
                          "--latency-ms",
                          "50-50",
                          NULL};
    if (th_proc_start(&mock, argv, NULL) != 0 ||
        th_proc_wait_line(&mock, "listening=", addr, sizeof(addr), 20000) != 0) {
        fprintf(stderr, "cannot start gantry-mock-openai\n");
        return 1;
    }
    static const th_test_t tests[] = {
        {"the endpoint's scores decide", test_endpoint_decides},
        {"refused, slow or down: the keyword list decides", test_fallbacks},
        {NULL, NULL},
    };
    int rc = th_run("moderation", tests); /* stops the mock with the other children */
    uv_loop_close(&loop);
    return rc;
}
