/* hostedai.h - HostedAI runtime: allocate, infer, release on the shared call
 * engine (engine.h: retries, deadlines, attempts, the pool's circuit breaker). */
#ifndef GT_HOSTEDAI_H
#define GT_HOSTEDAI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "http.h"
#include "runtime.h"

/* Extra release attempts after cfg->retry is exhausted: an allocation left
 * behind costs money until the reaper finds it. */
#define GT_HAI_RELEASE_EXTRA_RETRIES 3

/* Backoff cap of a release owed by the process (retried until HostedAI confirms it). */
#define GT_HAI_OWED_MAX_MS 30000

typedef struct gt_hai_call gt_hai_call_t;
typedef struct gt_hai_state gt_hai_state_t;

typedef struct gt_hai_env {
    uv_loop_t *loop;
    gt_http_t *http;
    const gt_config_t *cfg;  /* retry policy, timeouts, pools */
    const char *worker_id;   /* allocation label "holder" */
    const char *incarnation; /* allocation label "incarnation": this process start */
    gt_event_fn emit;        /* allocation.acquired/released/release_failed; may be NULL */
    void *emit_arg;
    gt_hai_state_t *state; /* leases and breakers of this process; NULL: calls run without */
} gt_hai_env_t;

/* ---- per-process state: leases held, releases owed, breakers ------------------
 *
 * Every allocation this incarnation knows of is "held" until HostedAI confirms
 * its release; every allocate attempt in flight is "allocating" (by its label
 * "attempt"). Heartbeats report both, so the lease reaper leaves them alone and
 * takes everything else. A release that failed, an allocate answered after its
 * call gave up, and an allocate whose answer never came (found by its labels:
 * GET /v1/allocations?label.attempt=...) become releases owed by the process,
 * retried with backoff (up to GT_HAI_OWED_MAX_MS apart) until they succeed. */

/* Returns NULL on out of memory. env is borrowed (its state field is not used)
 * and must outlive the state. */
gt_hai_state_t *gt_hai_state_new(const gt_hai_env_t *env);

/* New arrays (NULL on out of memory): allocation ids held, attempt labels in flight. */
json_t *gt_hai_state_held(const gt_hai_state_t *s);
json_t *gt_hai_state_allocating(const gt_hai_state_t *s);

/* Releases owed and label searches still to do. */
int gt_hai_state_pending(const gt_hai_state_t *s);

/* cb runs (on the loop) whenever the pending count drops to 0. */
void gt_hai_state_on_settled(gt_hai_state_t *s, void (*cb)(void *arg), void *arg);

/* Stops the timer; owed releases are abandoned (the reaper takes them once the
 * incarnation is gone). The loop must run afterwards; then gt_hai_state_free. */
void gt_hai_state_close(gt_hai_state_t *s);
/* Frees s after gt_hai_state_close and the loop run (and after gt_http_free). */
void gt_hai_state_free(gt_hai_state_t *s);

/* The callback (gt_rt_done_cb, call: the gt_hai_call_t) runs exactly once per
 * call unless it was cancelled, after any allocation has been released (or its
 * release given up); out->provider is "hostedai", out->pool the pool. out is
 * valid only during the call. The call must not be used after it returned.
 * As a runtime (gt_runtime_ops_hostedai, ctx: a gt_hai_env_t) it serves the
 * models of runtime "hostedai". */

/* Starts a task on its model's pool. env and spec are borrowed and must stay
 * valid until cb (env: until the call is freed, i.e. while the loop runs its
 * requests). Returns NULL when the task cannot even start (out of memory, or
 * unknown pool: then *code is set to a task error code, e.g. "unknown_pool"). */
gt_hai_call_t *gt_hai_start(const gt_hai_env_t *env, const gt_task_spec_t *spec, gt_rt_done_cb cb,
                            void *arg, const char **code);

/* Ends the call early (shutdown): an allocate in flight is awaited, an
 * inference is abandoned, backoffs are cut short, and the allocation is
 * released. cb still runs, with status failed and code "aborted". */
void gt_hai_abort(gt_hai_call_t *call);

/* Forgets cb: it will not run. The call frees itself once its HTTP requests
 * have finished (gt_http_free aborts them) and its timer is closed. */
void gt_hai_cancel(gt_hai_call_t *call);

/* Builds the /v1/inference body for a task (exposed for tests). Returns a new
 * object, or NULL when the input does not fit the kind (*why is set). */
json_t *gt_hai_inference_body(const char *allocation_id, const char *kind, const json_t *input,
                              const json_t *parameters, const char **why);

#endif
