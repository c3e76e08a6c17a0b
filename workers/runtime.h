/* runtime.h - the runtime seam of the worker: the task a runtime runs, the
 * outcome it reports, and the operations every runtime (HostedAI, the hosted
 * providers) offers to fallback chains and the executor. */
#ifndef GT_RUNTIME_H
#define GT_RUNTIME_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef enum { GT_TASK_SUCCEEDED, GT_TASK_FAILED, GT_TASK_EXPIRED } gt_task_status_t;

/* A task handed to a runtime. Everything is borrowed from the executor's task
 * and stays valid until the runtime's completion callback has returned. */
typedef struct gt_task_spec {
    const char *task_id, *request_id, *tenant_id;
    const char *kind; /* "generate", "chat" or "embed" */
    const json_t *input;
    const json_t *parameters; /* object or NULL */
    const gt_model_t *model;
    const char *traceparent;  /* W3C trace context from the task message, or NULL */
    int64_t deadline_mono_ms; /* gt_clock_mono_ms() bound for every call, INT64_MAX: none */
    /* Retries the task already spent on earlier models of its fallback chain:
     * a runtime counts its retries from here, so a fallback gets its first try
     * but never a fresh retry budget (fallback.c). 0 for the task's model. */
    int retries_spent;
} gt_task_spec_t;

/* What a runtime reports when a task ends. Valid only during the callback; the
 * executor copies what it keeps. */
typedef struct gt_task_outcome {
    gt_task_status_t status;
    const char *error_code; /* NULL on success */
    const char *error_message;
    json_t *output;            /* borrowed; NULL unless succeeded */
    const char *pool;          /* NULL when no pool was involved */
    const char *provider;      /* what served (or was last tried): a provider's name, "hostedai" */
    const char *served_model;  /* model that ran it when a fallback did; NULL: the task's */
    const char *allocation_id; /* NULL when nothing was allocated */
    json_t *attempts;          /* borrowed array of {op, status, ms, error} (may be NULL) */
    int64_t prompt_tokens, completion_tokens;
    int64_t allocate_ms, inference_ms, release_ms; /* -1 when the phase did not run */
    double allocation_seconds;                     /* allocate response to release response */
    int64_t capacity_wait_ms;              /* waited for pool capacity; -1 (or 0): no wait */
    int64_t request_bytes, response_bytes; /* of the inference call */
    int retries; /* the task's retries spent when the call ended, spec->retries_spent included */
} gt_task_outcome_t;

/* Fire-and-forget event publisher (gantry.event.v1); steals data. */
typedef void (*gt_event_fn)(const char *type, json_t *data, void *arg);

/* A runtime's call, opaque to its users. */
typedef struct gt_rt_call gt_rt_call_t;

/* Called exactly once per call unless it was cancelled; out is valid only
 * during the callback and the call must not be used after it returned. */
typedef void (*gt_rt_done_cb)(gt_rt_call_t *call, const gt_task_outcome_t *out, void *arg);

/* What every runtime offers. ctx is the runtime's own state (gt_rt_instance_t.ctx). */
typedef struct gt_runtime_ops {
    const char *name; /* for logs: "hostedai", "hosted" */
    /* 1 when this runtime runs the tasks of model. */
    int (*serves)(const gt_model_t *model);
    /* Starts spec (borrowed until cb). cb never runs inside start. Returns
     * NULL when the call cannot start, with *code a task error code
     * ("unknown_pool", "unknown_provider", "unsupported_runtime", "out_of_memory"). */
    gt_rt_call_t *(*start)(void *ctx, const gt_task_spec_t *spec, gt_rt_done_cb cb, void *arg,
                           const char **code);
    /* Ends the call early (shutdown): what it holds is given back, cb runs
     * with code "aborted" (possibly inside this call). */
    void (*abort)(gt_rt_call_t *call);
    /* Forgets cb; the call frees itself once its requests and timer are done. */
    void (*cancel)(gt_rt_call_t *call);
    /* 1 when model's endpoint refuses calls now (its breaker is open, or
     * half-open with the trial out): a chain goes to the next model at once. */
    int (*unavailable)(void *ctx, const gt_model_t *model);
    /* 1 when a call that ended with this error code may go to the next model
     * of the chain (the endpoint could not serve; the task is not at fault). */
    int (*may_fall_back)(const char *code);
} gt_runtime_ops_t;

/* A runtime as a chain sees it: its operations and its state. */
typedef struct gt_rt_instance {
    const gt_runtime_ops_t *ops;
    void *ctx;
} gt_rt_instance_t;

/* The runtimes of this worker, by the model runtime they serve: HostedAI
 * (ctx: gt_hai_env_t *) and the hosted providers (ctx: gt_prov_engine_t *).
 * A new kind of runtime adds its ops here and a gt_rt_instance_t in the executor. */
extern const gt_runtime_ops_t gt_runtime_ops_hostedai;
extern const gt_runtime_ops_t gt_runtime_ops_hosted;

#endif
