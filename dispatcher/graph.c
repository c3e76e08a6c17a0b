/* graph.c - builds a job's task graph from a request and gathers the task
 * results into the job's result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "graph.h"

static char *task_id_of(const char *request_id, const char *suffix)
{
    size_t n = strlen(request_id) + strlen(suffix) + 2;
    char *id = malloc(n);
    if (id)
        snprintf(id, n, "%s/%s", request_id, suffix);
    return id;
}

/* The task message of one inference node: everything a stateless worker needs. */
static json_t *task_message(const json_t *req, const gt_route_t *route, const char *task_id,
                            int idx, json_t *input, int64_t now_wall_ms)
{
    const gt_model_t *m = route->model;
    char ts[40];
    json_t *params = json_object_get(req, "parameters");
    json_t *deadline = json_object_get(req, "deadline");
    json_t *prio = json_object_get(req, "priority");
    return json_pack("{s:s, s:s, s:O, s:O, s:i, s:O, s:s, s:s, s:s?, s:s, s:{s:f, s:I}, s:O,"
                     " s:o, s:o, s:o, s:s, s:i}",
                     "schema", "gantry.task.v1", "task_id", task_id, "request_id",
                     json_object_get(req, "request_id"), "tenant_id",
                     json_object_get(req, "tenant_id"), "index", idx, "kind",
                     json_object_get(req, "kind"), "model", m->name, "runtime", m->runtime, "pool",
                     m->pool, "lane", m->lane, "requirements", "tflops", m->tflops, "vram_mb",
                     (json_int_t)m->vram_mb, "input", input, "parameters",
                     params ? json_incref(params) : json_object(), "deadline",
                     deadline ? json_incref(deadline) : json_null(), "priority",
                     prio ? json_incref(prio) : json_integer(0), "created_at",
                     gt_clock_fmt(now_wall_ms, ts, sizeof(ts)), "attempt", 1);
}

int gt_graph_build(const json_t *req, const gt_route_t *route, int max_batch, int64_t now_wall_ms,
                   gt_graph_t *g, char *err, size_t errlen)
{
    const char *request_id = json_string_value(json_object_get(req, "request_id"));
    json_t *batch = json_object_get(req, "batch");
    int n = batch ? (int)json_array_size(batch) : 1;
    memset(g, 0, sizeof(*g));
    if (batch && n > max_batch) {
        snprintf(err, errlen, "batch of %d inputs exceeds the limit of %d", n, max_batch);
        return -1;
    }
    g->batch = batch != NULL;
    g->n_inference = n;
    g->n_nodes = n + (batch ? 1 : 0);
    g->nodes = calloc((size_t)g->n_nodes, sizeof(gt_node_t));
    if (!g->nodes)
        goto oom;
    for (int i = 0; i < n; i++) {
        char idx[16];
        snprintf(idx, sizeof(idx), "%d", i);
        gt_node_t *node = &g->nodes[i];
        node->idx = i;
        node->kind = GT_NODE_INFERENCE;
        node->task_id = task_id_of(request_id, idx);
        json_t *input = batch ? json_array_get(batch, (size_t)i) : json_object_get(req, "input");
        node->task =
            node->task_id ? task_message(req, route, node->task_id, i, input, now_wall_ms) : NULL;
        if (!node->task)
            goto oom;
    }
    if (batch) {
        gt_node_t *gather = &g->nodes[n];
        gather->idx = n;
        gather->kind = GT_NODE_GATHER;
        gather->task_id = task_id_of(request_id, "gather");
        gather->deps = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1)); /* malloc(0) may be NULL */
        if (!gather->task_id || !gather->deps)
            goto oom;
        for (int i = 0; i < n; i++)
            gather->deps[i] = i;
        gather->n_deps = n;
    }
    return 0;
oom:
    gt_graph_free(g);
    snprintf(err, errlen, "out of memory");
    return -1;
}

void gt_graph_free(gt_graph_t *g)
{
    for (int i = 0; g->nodes && i < g->n_nodes; i++) {
        free(g->nodes[i].task_id);
        free(g->nodes[i].deps);
        json_decref(g->nodes[i].task);
        free(g->nodes[i].text);
    }
    free(g->nodes);
    memset(g, 0, sizeof(*g));
}

json_t *gt_graph_rows(const gt_graph_t *g)
{
    json_t *rows = json_array();
    for (int i = 0; rows && i < g->n_nodes; i++) {
        const gt_node_t *node = &g->nodes[i];
        json_t *deps = json_array();
        for (int d = 0; d < node->n_deps; d++)
            json_array_append_new(deps, json_integer(node->deps[d]));
        json_t *t = node->task;
        json_array_append_new(
            rows,
            json_pack("{s:s, s:i, s:s, s:o, s:O?, s:O?, s:O?}", "task_id", node->task_id, "idx",
                      node->idx, "kind", node->kind == GT_NODE_GATHER ? "gather" : "inference",
                      "depends_on", deps, "model", json_object_get(t, "model"), "pool",
                      json_object_get(t, "pool"), "lane", json_object_get(t, "lane")));
    }
    return rows;
}

static json_int_t int_at(const json_t *obj, const char *a, const char *b)
{
    return json_integer_value(json_object_get(json_object_get(obj, a), b));
}

json_t *gt_graph_result(const char *request_id, const char *tenant_id, int batch,
                        json_t *const *results, int n, int64_t created_wall_ms)
{
    char ts[40];
    json_int_t prompt = 0, completion = 0, attempts = 0;
    int succeeded = 0, failed = 0, expired = 0, cancelled = 0;
    json_t *outputs = json_array();
    for (int i = 0; i < n; i++) {
        const json_t *r = results[i];
        const char *st = r ? json_string_value(json_object_get(r, "status")) : NULL;
        if (!st)
            st = "failed";
        prompt += int_at(r, "usage", "prompt_tokens");
        completion += int_at(r, "usage", "completion_tokens");
        attempts += (json_int_t)json_array_size(json_object_get(r, "attempts"));
        succeeded += strcmp(st, "succeeded") == 0;
        expired += strcmp(st, "expired") == 0;
        cancelled += strcmp(st, "cancelled") == 0;
        if (strcmp(st, "succeeded") != 0 && strcmp(st, "expired") != 0 &&
            strcmp(st, "cancelled") != 0)
            failed++;
        json_t *item = json_pack("{s:i, s:s}", "index", i, "status", st);
        json_t *out = json_object_get(r, "output");
        json_t *error = json_object_get(r, "error");
        json_object_set(item, "output", out ? out : json_null());
        if (error)
            json_object_set(item, "error", error);
        json_array_append_new(outputs, item);
    }
    /* A cancelled job is cancelled whatever its other items did (docs/scheduling.md). */
    const char *status = cancelled ? "cancelled"
                         : failed  ? "failed"
                         : expired ? "expired"
                                   : "succeeded";
    const json_t *any = n > 0 ? results[0] : NULL;
    json_t *res = json_pack("{s:s, s:s, s:s, s:s, s:{s:I, s:I}, s:I, s:{s:I}, s:s}", "schema",
                            "gantry.result.v1", "request_id", request_id, "tenant_id", tenant_id,
                            "status", status, "usage", "prompt_tokens", prompt, "completion_tokens",
                            completion, "attempts", attempts, "timings", "total_ms",
                            (json_int_t)(gt_clock_wall_ms() - created_wall_ms), "completed_at",
                            gt_clock_fmt(gt_clock_wall_ms(), ts, sizeof(ts)));
    if (!res) {
        json_decref(outputs);
        return NULL;
    }
    json_t *model = json_object_get(any, "model"), *provider = json_object_get(any, "provider");
    json_object_set(res, "model", model ? model : json_null());
    json_object_set(res, "provider", provider ? provider : json_null());
    if (batch) {
        json_object_set_new(res, "outputs", outputs);
        if (cancelled) {
            char msg[128];
            snprintf(msg, sizeof(msg), "cancelled: %d of %d items succeeded", succeeded, n);
            json_object_set_new(res, "error",
                                json_pack("{s:s, s:s}", "code", "cancelled", "message", msg));
        } else if (failed || expired) {
            char msg[128];
            snprintf(msg, sizeof(msg), "%d of %d items did not succeed", n - succeeded, n);
            json_object_set_new(
                res, "error",
                json_pack("{s:s, s:s}", "code", "batch_partial_failure", "message", msg));
        }
    } else {
        json_t *item = json_array_get(outputs, 0);
        json_t *out = json_object_get(item, "output");
        json_object_set(res, "output", out ? out : json_null());
        json_t *error = json_object_get(item, "error");
        if (error)
            json_object_set(res, "error", error);
        json_t *timings = json_object_get(any, "timings");
        if (json_is_object(timings))
            json_object_update_missing(json_object_get(res, "timings"), timings);
        json_decref(outputs);
    }
    return res;
}
