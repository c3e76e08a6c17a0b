/* graph.h - a job's task graph: built from a request, gathered into a result.
 * A plain request is one inference node; a batch of N inputs is N inference
 * nodes plus a gather node (run by the dispatcher) that depends on all of them. */
#ifndef GT_GRAPH_H
#define GT_GRAPH_H

#include <jansson.h>
#include <stdint.h>

#include "classify.h"

typedef enum { GT_NODE_INFERENCE, GT_NODE_GATHER } gt_node_kind_t;

typedef struct gt_node {
    int idx;
    gt_node_kind_t kind;
    char *task_id; /* "<request_id>/<idx>", or "<request_id>/gather" */
    int *deps;     /* indexes this node waits for */
    int n_deps;
    json_t *task; /* gantry.task.v1 message of an inference node, else NULL */
    char *text;   /* task serialised compactly, text_len bytes (set by the intake's size
                     check, the bytes it publishes; freed by gt_graph_free), or NULL */
    size_t text_len;
} gt_node_t;

typedef struct gt_graph {
    gt_node_t *nodes;
    int n_nodes;
    int n_inference;
    int batch; /* 1 when built from a "batch" request */
} gt_graph_t;

/* Builds the graph of req (valid request.v1, routed by route). Returns 0, or
 * -1 with a reason in err (batch larger than max_batch). On success the caller
 * owns g's contents: release with gt_graph_free. */
int gt_graph_build(const json_t *req, const gt_route_t *route, int max_batch, int64_t now_wall_ms,
                   gt_graph_t *g, char *err, size_t errlen);
void gt_graph_free(gt_graph_t *g);

/* The nodes as a JSON array of task rows {task_id, idx, kind, depends_on,
 * model, pool, lane} for persisting. Caller owns it. */
json_t *gt_graph_rows(const gt_graph_t *g);

/* The gather step: builds the gantry.result.v1 of a job from its inference
 * task results, given in index order (results[i] is a task-result.v1, NULL if
 * missing). created_wall_ms is the job's creation time. Caller owns it. */
json_t *gt_graph_result(const char *request_id, const char *tenant_id, int batch,
                        json_t *const *results, int n, int64_t created_wall_ms);

#endif
