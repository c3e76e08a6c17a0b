/* fallback.h - runs a task on its model, then on the model's fallbacks in order
 * when the model cannot serve it: its endpoint's breaker is open, or its
 * runtime says the error may go elsewhere (gt_runtime_ops_t.may_fall_back).
 * Knows runtimes only through runtime.h: any runtime may be a fallback. The
 * task has one retry budget: each model gets its first try, and its retries
 * count on from what the models before it spent (a fallback never restarts
 * the retry count, so a chain of n models makes at most max_retries + n calls). */
#ifndef GT_FALLBACK_H
#define GT_FALLBACK_H

#include <stddef.h>

#include "config.h"
#include "runtime.h"

typedef struct gt_chain gt_chain_t;

typedef struct gt_chain_env {
    const gt_config_t *cfg;
    const gt_rt_instance_t *runtimes; /* a model runs on the first that serves it */
    size_t n_runtimes;
} gt_chain_env_t;

/* Called exactly once unless cancelled. out->attempts holds every attempt of
 * every model tried (each with its "model" when a fallback ran, and its
 * "provider"); out->provider / out->pool / out->served_model name what served
 * the task (or was tried last). Valid only during the call. */
typedef void (*gt_chain_done_cb)(gt_chain_t *ch, const gt_task_outcome_t *out, void *arg);

/* env and spec are borrowed until cb. Returns NULL when not even the first
 * model can start (*code set: the runtime's, e.g. "unknown_pool", or
 * "unsupported_runtime" when no runtime serves the model). */
gt_chain_t *gt_chain_start(const gt_chain_env_t *env, const gt_task_spec_t *spec,
                           gt_chain_done_cb cb, void *arg, const char **code);
/* Shutdown: the running call is aborted (allocations released); cb runs with "aborted". */
void gt_chain_abort(gt_chain_t *ch);
/* Forgets cb; the running call is cancelled. ch is invalid afterwards. */
void gt_chain_cancel(gt_chain_t *ch);

#endif
