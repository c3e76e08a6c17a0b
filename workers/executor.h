/* executor.h - runs many tasks at once: parse, dispatch to a runtime, publish result and usage. */
#ifndef GT_EXECUTOR_H
#define GT_EXECUTOR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "http.h"
#include "kafka.h"
#include "runtime.h"

/* ---- executor --------------------------------------------------------------- */

typedef struct gt_executor gt_executor_t;

typedef struct gt_executor_opts {
    const gt_config_t *cfg;   /* borrowed; outlives the executor */
    const char *worker_id;    /* copied */
    int max_in_flight;        /* pause the consumer at this many tasks; <= 0: cfg value */
    gt_producer_t *producer;  /* borrowed */
    gt_http_t *http;          /* borrowed */
    const char *const *lanes; /* NULL-terminated, reported by heartbeats; borrowed */
} gt_executor_opts_t;

/* Returns NULL with a reason in err (embedded schema missing, out of memory). */
gt_executor_t *gt_executor_new(uv_loop_t *loop, const gt_executor_opts_t *opts, char *err,
                               size_t errlen);

/* The gt_consume_cb to give the consumer (arg: the executor). Takes ownership
 * of msg: it is passed to gt_consumer_done once the result, usage event or
 * DLQ message it caused is acknowledged, never before. */
void gt_executor_on_message(gt_consumer_t *c, gt_msg_t *msg, void *arg);

/* Tasks accepted and not yet done (including those waiting for deliveries). */
int gt_executor_in_flight(const gt_executor_t *ex);

/* Publishes an event on cfg->topics.events; fire-and-forget, failures are
 * logged. Steals data (may be NULL). */
void gt_executor_emit(gt_executor_t *ex, const char *type, json_t *data);

/* This process start's incarnation id (32 hex digits, random per start). */
const char *gt_executor_incarnation(const gt_executor_t *ex);

/* Starts the worker.heartbeat timer (cfg->heartbeat_ms): each heartbeat carries
 * the incarnation, the allocation ids it holds ("allocations") and the labels
 * of its allocate attempts in flight ("allocating"): the lease the reaper reads. */
void gt_executor_start_heartbeat(gt_executor_t *ex);

/* Called once the executor has no task left after gt_executor_drain/abort. */
typedef void (*gt_executor_idle_cb)(gt_executor_t *ex, void *arg);

/* Stops taking tasks: messages arriving from now on are left undone (they are
 * redelivered). Tasks in flight run to their end; cb runs when none is left
 * (possibly from inside this call). */
void gt_executor_drain(gt_executor_t *ex, gt_executor_idle_cb cb, void *arg);

/* Aborts every task in flight: allocations are released, no result is
 * published, the message is not marked done (so it is redelivered). Tasks
 * whose result is already being delivered keep waiting for the delivery.
 * Implies drain; cb as for gt_executor_drain. */
void gt_executor_abort(gt_executor_t *ex, gt_executor_idle_cb cb, void *arg);

/* Forgets the consumer: later completions no longer call gt_consumer_done.
 * Call before gt_consumer_free when tasks may still be pending. */
void gt_executor_detach(gt_executor_t *ex);

/* Closes the executor's loop handles and cancels runtime calls; the loop must
 * run afterwards. Tasks still pending are abandoned (their messages are not
 * marked done). Implies gt_executor_detach. */
void gt_executor_close(gt_executor_t *ex);

/* Frees the executor. Call after the loop has closed its handles and after
 * gt_producer_free (delivery reports name the executor's tasks until then). */
void gt_executor_free(gt_executor_t *ex);

#endif
