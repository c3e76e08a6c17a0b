/* wstats.c - the worker's metrics: tasks in flight and their duration, the
 * HostedAI calls (allocations, durations, errors, outstanding) and retries. */
#include "wstats.h"

#include "metrics.h"

void gt_wstats_init(void)
{
    gt_wstats_in_flight(0);
    gt_metrics_histogram("hosted_ai_allocation_duration_seconds",
                         "Time of a successful allocate call", NULL, NULL, 0);
}

void gt_wstats_in_flight(int n)
{
    gt_metric_set(gt_metrics_gauge("gantry_tasks_in_flight", "Tasks this worker is running", NULL),
                  n);
}

void gt_wstats_task(const char *model, const char *provider, const char *status, double s)
{
    gt_metric_observe(gt_metrics_histogram("gantry_task_duration_seconds",
                                           "Task time in the worker, from receipt to its end",
                                           "model,provider", NULL, 0),
                      s, model, provider);
    gt_metric_add(gt_metrics_counter("gantry_tasks_total", "Tasks ended, by status", "status"), 1,
                  status);
}

static gt_metric_t *outstanding(void)
{
    return gt_metrics_gauge("hosted_ai_allocations_outstanding",
                            "HostedAI allocations this worker holds", "pool");
}

void gt_wstats_allocated(const char *pool, const char *model, double s)
{
    gt_metric_add(gt_metrics_counter("hosted_ai_allocations_total", "HostedAI allocations acquired",
                                     "pool,model"),
                  1, pool, model);
    gt_metric_observe(gt_metrics_histogram("hosted_ai_allocation_duration_seconds",
                                           "Time of a successful allocate call", NULL, NULL, 0),
                      s);
    gt_metric_add(outstanding(), 1, pool);
}

void gt_wstats_released(const char *pool)
{
    gt_metric_add(outstanding(), -1, pool);
}

void gt_wstats_inference(const char *model, double s)
{
    gt_metric_observe(gt_metrics_histogram("hosted_ai_inference_duration_seconds",
                                           "Time of a successful inference call", "model", NULL, 0),
                      s, model);
}

void gt_wstats_hostedai_error(const char *type, const char *operation)
{
    gt_metric_add(gt_metrics_counter("hosted_ai_errors_total",
                                     "Failed HostedAI calls, by error type and operation",
                                     "type,operation"),
                  1, type, operation);
}

void gt_wstats_breaker(const char *provider, int open)
{
    gt_metric_set(gt_metrics_gauge("gantry_breaker_open",
                                   "1 while a provider endpoint's circuit breaker is open or "
                                   "half-open",
                                   "provider"),
                  open, provider);
}

void gt_wstats_slots(const char *provider, const char *scope, int delta)
{
    gt_metric_add(gt_metrics_gauge("gantry_provider_slots_in_use",
                                   "Provider slots (requests in flight) this worker holds",
                                   "provider,scope"),
                  delta, provider, scope);
}

void gt_wstats_retry(const char *operation)
{
    gt_metric_add(gt_metrics_counter("gantry_retries_total", "Calls tried again after a failure",
                                     "operation"),
                  1, operation);
}

void gt_wstats_capacity_wait(const char *pool)
{
    gt_metric_add(gt_metrics_counter("gantry_capacity_waits_total",
                                     "Allocate answers saying the pool is full, each followed by "
                                     "a wait (not a retry)",
                                     "pool"),
                  1, pool);
}

void gt_wstats_capacity_waited(const char *pool, double s)
{
    gt_metric_observe(gt_metrics_histogram("gantry_capacity_wait_seconds",
                                           "Time a task waited for pool capacity", "pool", NULL, 0),
                      s, pool);
}

void gt_wstats_releases_owed(int n)
{
    gt_metric_set(gt_metrics_gauge("gantry_releases_owed",
                                   "HostedAI releases this worker still retries (failed "
                                   "releases, allocations found after their task gave up)",
                                   NULL),
                  n);
}
