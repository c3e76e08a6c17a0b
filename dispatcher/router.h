/* router.h - picks one deployment of a logical model per task with the model's
 * strategy (weighted, least_busy, latency, cost), from the health this
 * dispatcher learns from task results: in flight, latency EWMA, a breaker
 * per deployment that cools a failing one down and lets it back half-open.
 * docs/routing.md. Single-threaded (the dispatcher's loop). */
#ifndef GT_DISPATCHER_ROUTER_H
#define GT_DISPATCHER_ROUTER_H

#include <jansson.h>
#include <stdint.h>

#include "config.h"

/* The share of latency picks that explore a random available deployment, so
 * that a recovered or slowed-down one is measured again. */
#define GT_ROUTER_EXPLORE 0.05
/* Weight of the newest sample in the latency EWMA. */
#define GT_ROUTER_EWMA_ALPHA 0.2

typedef struct gt_router gt_router_t;

/* NULL on out of memory. seed: exploration's random sequence (tests fix it). */
gt_router_t *gt_router_new(uint64_t seed);
void gt_router_free(gt_router_t *r);

/* A deployment of logical model m for one task at now_ms (monotonic), counted
 * in flight until gt_router_result. *reason (static string) says why: the
 * strategy's name, "latency_explore", "cost_spill" (the cheaper ones are
 * full), "half_open" (a cooled-down deployment's one probe), "all_full" or
 * "all_cooling" (none available: the least bad one). Returns m itself when m
 * has no deployments, NULL on out of memory. */
const gt_model_t *gt_router_pick(gt_router_t *r, const gt_config_t *cfg, const gt_model_t *m,
                                 int64_t now_ms, const char **reason);
/* A task served by deployment model `model` ended (ok: succeeded), its
 * latency in ms (< 0: unknown). Failures past the deployment's breaker
 * threshold (its pool's or provider's breaker.failures) cool it down for
 * breaker.recovery_ms; then one probe (half-open) closes or reopens it. A
 * model that is no deployment is ignored. */
void gt_router_result(gt_router_t *r, const gt_config_t *cfg, const char *model, int ok,
                      double latency_ms, int64_t now_ms);
/* A pick whose task was never published (answered from the cache, rejected):
 * no longer in flight; nothing learned. */
void gt_router_release(gt_router_t *r, const char *model);
/* Another dispatcher or a worker saw the deployment's breaker open
 * (gantry.events breaker.opened for its provider or pool): cooled down here
 * too, until now_ms + its recovery time. */
void gt_router_cool(gt_router_t *r, const gt_config_t *cfg, const char *model, int64_t now_ms);

/* An event from gantry.events. breaker.opened (data: provider, pool,
 * recovery_ms): every deployment served by that provider (or HostedAI pool)
 * is cooled down here for recovery_ms, so dispatchers that never saw its
 * task results route around it alike. Other types are ignored: a deployment
 * comes back by its own half-open probe. */
void gt_router_event(gt_router_t *r, const gt_config_t *cfg, const char *type, const json_t *data,
                     int64_t now_ms);

/* This dispatcher's tasks in flight per deployment, {deployment: n} for
 * those with any (caller owns it; NULL on out of memory). The reaper sends it
 * with its probe every round, so other dispatchers count these tasks too. */
json_t *gt_router_snapshot(const gt_router_t *r);
/* Dispatcher id's snapshot (gt_router_snapshot), read at now_ms: replaces its
 * previous one. Capacity (max_in_flight) and least_busy then count the tasks
 * in flight from every dispatcher whose snapshot is younger than fresh_ms
 * (older ones are forgotten: a dispatcher that stopped frees its share).
 * id NULL: only forgets the stale ones (the reaper's every round). */
void gt_router_peer(gt_router_t *r, const char *id, const json_t *routing, int64_t now_ms,
                    int64_t fresh_ms);

/* The logical model whose deployments list model, or NULL. */
const gt_model_t *gt_router_logical(const gt_config_t *cfg, const char *model);
/* Tasks in flight on a deployment (as this router counted them), -1 unknown. */
int gt_router_in_flight(const gt_router_t *r, const char *model);

#endif
