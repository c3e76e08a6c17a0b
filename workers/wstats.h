/* wstats.h - the worker's Prometheus metrics (lib/metrics.h), one call per
 * event so that call sites stay one line. Durations in seconds. */
#ifndef GT_WORKER_STATS_H
#define GT_WORKER_STATS_H

/* Registers the unlabelled metrics so that they show 0 before their first
 * event. */
void gt_wstats_init(void);
void gt_wstats_in_flight(int n);
/* A task ended: its model, the provider that served it ("hostedai" for a
 * pool), its status and duration from receipt to end. */
void gt_wstats_task(const char *model, const char *provider, const char *status, double s);
void gt_wstats_allocated(const char *pool, const char *model, double s);
void gt_wstats_inference(const char *model, double s);
/* An allocation held by this worker is no longer (released, gone or left to
 * the reaper). */
void gt_wstats_released(const char *pool);
void gt_wstats_hostedai_error(const char *type, const char *operation);
/* A provider endpoint's breaker changed: open is 1 while open or half-open. */
void gt_wstats_breaker(const char *provider, int open);
/* Provider slots (PostgreSQL rows) this worker holds at provider/scope: +1, -1. */
void gt_wstats_slots(const char *provider, const char *scope, int delta);
/* An allocate found its pool full and waits before asking again. */
void gt_wstats_capacity_wait(const char *pool);
/* A task that waited for capacity stopped waiting (allocated, or gave up): total wait. */
void gt_wstats_capacity_waited(const char *pool, double s);
/* Releases the process still owes HostedAI (failed, or of allocations found late). */
void gt_wstats_releases_owed(int n);
/* A failed call tried again; operation is "hostedai.allocate", "provider" ... */
void gt_wstats_retry(const char *operation);

#endif
