/* cache.h - the dispatcher's response cache (docs/routing.md): entries in
 * PostgreSQL (response_cache, migration 060) keyed per tenant, looked up at
 * intake, stored by the coordinator, with single-flight within a dispatcher. */
#ifndef GT_DISPATCHER_CACHE_H
#define GT_DISPATCHER_CACHE_H

#include <jansson.h>
#include <stdint.h>

#include "config.h"
#include "dispatcher.h"

/* How long a request waits for an identical one in flight in this dispatcher
 * before it makes its own call (the leader's coordinator may be elsewhere). */
#define GT_CACHE_WAIT_MS 60000

typedef struct gt_cache gt_cache_t;

/* The dispatcher's cache state (single-flight table, waiter timer). NULL on
 * out of memory. Close with gt_cache_close, free after the loop closed it. */
gt_cache_t *gt_cache_new(gt_dispatcher_t *d);
void gt_cache_close(gt_cache_t *c);
void gt_cache_free(gt_cache_t *c);

/* 1 when responses of tenant for model m may be cached by configuration
 * (tenants.<id>.cache.models names m or "*", and m has a cache section). */
int gt_cache_configured(const gt_config_t *cfg, const char *tenant, const char *model);

/* 1 when tenant caches the responses of some model (a cheap filter: whether
 * a job was cacheable is jobs.cache_key, set by intake). */
int gt_cache_tenant_on(const gt_config_t *cfg, const char *tenant);

/* The cache key of guarded request req served by model m: SHA-256 (hex) of
 * tenant, model, kind, the canonical input and parameters. Returns 1 and sets
 * hex and *ttl_ms when req is cacheable (configured, policy.cache true or the
 * tenant's default, not a batch), 0 when not, -ENOMEM. */
int gt_cache_key(const gt_config_t *cfg, const json_t *req, const gt_model_t *m, char hex[65],
                 int64_t *ttl_ms);

/* output: the stored output (borrowed, valid during the call) on a hit, NULL
 * on a miss; err non-NULL when the lookup failed permanently (the caller must
 * not treat that as a miss: nothing fails open). */
typedef void (*gt_cache_cb)(const json_t *output, const char *err, void *arg);

/* Looks key up for tenant on behalf of request_id; cb runs once, later, on
 * the loop. While an identical request (same tenant and key) is in flight in
 * this dispatcher, this one waits for it (at most GT_CACHE_WAIT_MS) and gets
 * its output. On a miss request_id becomes the key's leader: gt_cache_job_done
 * (coordinator) or gt_cache_abandon (intake) ends its flight. Returns 0 or
 * -ENOMEM (cb then never runs). */
int gt_cache_lookup(gt_cache_t *c, const char *tenant, const char *key, const char *request_id,
                    gt_cache_cb cb, void *arg);
/* The leader request_id will not produce a job (rejected, failed, duplicate):
 * the next waiter, if any, looks up and leads. No-op when it leads nothing. */
void gt_cache_abandon(gt_cache_t *c, const char *request_id);
/* Coordinator: the job's final result is durable. output is the task's output
 * before the guard restored it (the form the cache keeps; NULL: not cached).
 * Stores it when the result succeeded, is not a batch and was not blocked,
 * for a job that intake marked cacheable; then wakes the key's waiters. */
void gt_cache_job_done(gt_cache_t *c, const char *request_id, const char *tenant,
                       const json_t *result, const json_t *output);

/* Metrics: a lookup's outcome ("hit", "miss", "wait") and bytes served/stored. */
void gt_cache_stat(const char *outcome, size_t bytes);

#endif
