/* test_graph.c - task graphs: one node per plain request, N + gather per batch,
 * and the gather step's result in input order. */
#include <string.h>

#include "graph.h"
#include "harness.h"

static gt_model_t model = {.name = "small",
                           .runtime = "hostedai",
                           .pool = "p",
                           .lane = "small",
                           .tflops = 10,
                           .vram_mb = 16000};

static void test_plain(void)
{
    json_t *req = json_loads("{\"request_id\":\"r1\",\"tenant_id\":\"t\",\"kind\":\"generate\","
                             "\"model\":\"auto\",\"input\":\"hello\",\"priority\":3,"
                             "\"parameters\":{\"max_tokens\":5}}",
                             0, NULL);
    gt_route_t route = {.model = &model};
    gt_graph_t g;
    char err[128];
    CU_ASSERT_EQUAL_FATAL(gt_graph_build(req, &route, 10, 0, &g, err, sizeof(err)), 0);
    TH_EQ_INT(g.n_nodes, 1);
    TH_EQ_INT(g.batch, 0);
    TH_EQ_STR(g.nodes[0].task_id, "r1/0");
    json_t *t = g.nodes[0].task;
    TH_EQ_STR(json_string_value(json_object_get(t, "schema")), "gantry.task.v1");
    TH_EQ_STR(json_string_value(json_object_get(t, "model")), "small");
    TH_EQ_STR(json_string_value(json_object_get(t, "input")), "hello");
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(t, "requirements"), "vram_mb")),
              16000);
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(t, "parameters"), "max_tokens")),
              5);
    TH_EQ_INT(json_integer_value(json_object_get(t, "priority")), 3);
    json_t *rows = gt_graph_rows(&g);
    TH_EQ_INT(json_array_size(rows), 1);
    json_decref(rows);
    gt_graph_free(&g);
    json_decref(req);
}

static void test_batch(void)
{
    json_t *req = json_loads("{\"request_id\":\"b\",\"tenant_id\":\"t\",\"kind\":\"generate\","
                             "\"model\":\"small\",\"batch\":[\"a\",\"b\",\"c\"]}",
                             0, NULL);
    gt_route_t route = {.model = &model};
    gt_graph_t g;
    char err[128];
    CU_ASSERT_EQUAL_FATAL(gt_graph_build(req, &route, 10, 0, &g, err, sizeof(err)), 0);
    TH_EQ_INT(g.n_nodes, 4);
    TH_EQ_INT(g.n_inference, 3);
    TH_EQ_STR(json_string_value(json_object_get(g.nodes[2].task, "input")), "c");
    TH_EQ_INT(g.nodes[3].kind, GT_NODE_GATHER);
    TH_EQ_INT(g.nodes[3].n_deps, 3);
    TH_EQ_STR(g.nodes[3].task_id, "b/gather");
    gt_graph_free(&g);
    CU_ASSERT_EQUAL(gt_graph_build(req, &route, 2, 0, &g, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "exceeds the limit of 2"));
    json_decref(req);
}

static json_t *task_result(int i, const char *status)
{
    json_t *r = json_pack("{s:s, s:i, s:{s:s}, s:{s:i, s:i}, s:[{s:s}], s:s, s:s}", "status",
                          status, "index", i, "output", "text", i == 0 ? "zero" : "other", "usage",
                          "prompt_tokens", 10, "completion_tokens", 5, "attempts", "op",
                          "inference", "model", "small", "provider", "hostedai");
    if (strcmp(status, "succeeded") != 0)
        json_object_set_new(r, "error",
                            json_pack("{s:s, s:s}", "code", "hostedai_unavailable", "message",
                                      "503 after 3 retries"));
    return r;
}

static void test_gather(void)
{
    json_t *rs[3] = {task_result(0, "succeeded"), task_result(1, "failed"),
                     task_result(2, "succeeded")};
    json_t *res = gt_graph_result("b", "t", 1, rs, 3, 0);
    TH_EQ_STR(json_string_value(json_object_get(res, "status")), "failed");
    json_t *outs = json_object_get(res, "outputs");
    TH_EQ_INT(json_array_size(outs), 3);
    TH_EQ_INT(json_integer_value(json_object_get(json_array_get(outs, 1), "index")), 1);
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(outs, 1), "status")), "failed");
    TH_EQ_STR(json_string_value(
                  json_object_get(json_object_get(json_array_get(outs, 0), "output"), "text")),
              "zero");
    TH_EQ_INT(json_integer_value(json_object_get(json_object_get(res, "usage"), "prompt_tokens")),
              30);
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(res, "error"), "code")),
              "batch_partial_failure");
    json_decref(res);

    res = gt_graph_result("r", "t", 0, rs, 1, 0);
    TH_EQ_STR(json_string_value(json_object_get(res, "status")), "succeeded");
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(res, "output"), "text")), "zero");
    CU_ASSERT_PTR_NULL(json_object_get(res, "error"));
    json_decref(res);
    res = gt_graph_result("r", "t", 0, rs + 1, 1, 0);
    TH_EQ_STR(json_string_value(json_object_get(res, "status")), "failed");
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(res, "error"), "code")),
              "hostedai_unavailable");
    json_decref(res);
    for (int i = 0; i < 3; i++)
        json_decref(rs[i]);
}

/* A cancelled item makes the job cancelled; finished items keep their outputs. */
static void test_gather_cancelled(void)
{
    json_t *rs[3] = {task_result(0, "succeeded"), task_result(1, "cancelled"),
                     task_result(2, "failed")};
    json_t *res = gt_graph_result("b", "t", 1, rs, 3, 0);
    TH_EQ_STR(json_string_value(json_object_get(res, "status")), "cancelled");
    TH_EQ_STR(json_string_value(json_object_get(json_object_get(res, "error"), "code")),
              "cancelled");
    json_t *outs = json_object_get(res, "outputs");
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(outs, 0), "status")), "succeeded");
    TH_EQ_STR(json_string_value(
                  json_object_get(json_object_get(json_array_get(outs, 0), "output"), "text")),
              "zero");
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(outs, 1), "status")), "cancelled");
    json_decref(res);
    res = gt_graph_result("r", "t", 0, rs + 1, 1, 0);
    TH_EQ_STR(json_string_value(json_object_get(res, "status")), "cancelled");
    json_decref(res);
    for (int i = 0; i < 3; i++)
        json_decref(rs[i]);
}

int main(void)
{
    static const th_test_t tests[] = {{"plain request", test_plain},
                                      {"batch request", test_batch},
                                      {"gather", test_gather},
                                      {"gather a cancelled job", test_gather_cancelled},
                                      {NULL, NULL}};
    return th_run("graph", tests);
}
