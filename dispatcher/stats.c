/* stats.c - the dispatcher's metrics: requests by status, dead letters by
 * code, budget rejections, ledger rows and batch latency, reaped leases. */
#include "stats.h"

#include <math.h>

#include "metrics.h"

void gt_stats_init(void)
{
    gt_stats_ledger_batch(0, -1);
}

void gt_stats_result(const char *status)
{
    gt_metric_add(gt_metrics_counter("gantry_requests_total",
                                     "Requests answered, by the status of their result", "status"),
                  1, status);
}

void gt_stats_dead_letter(const char *code)
{
    gt_metric_add(gt_metrics_counter("gantry_dlq_entries_total",
                                     "Messages sent to the dead-letter topic, by error code",
                                     "code"),
                  1, code);
}

void gt_stats_duplicate(const char *outcome)
{
    gt_metric_add(gt_metrics_counter("gantry_requests_duplicate_total",
                                     "Re-sent request_ids, by outcome: identical (dropped) or "
                                     "conflict (a different body, dead-lettered)",
                                     "outcome"),
                  1, outcome);
}

void gt_stats_budget_rejection(const char *tenant_id)
{
    gt_metric_add(gt_metrics_counter("gantry_budget_rejections_total",
                                     "Requests rejected because the tenant's hard budget limit "
                                     "was reached",
                                     "tenant"),
                  1, tenant_id);
}

void gt_stats_ledger_batch(long rows, double seconds)
{
    gt_metric_add(gt_metrics_counter("gantry_usage_rows_written_total",
                                     "Usage rows inserted by the ledger (redeliveries excluded)",
                                     NULL),
                  (double)rows);
    gt_metric_observe(gt_metrics_histogram("gantry_ledger_batch_duration_seconds",
                                           "Time from a ledger batch's send to its commit", NULL,
                                           NULL, 0),
                      seconds < 0 ? NAN : seconds); /* NaN: registered, not observed */
}

void gt_stats_reaped(const char *pool)
{
    gt_metric_add(gt_metrics_counter("gantry_allocations_reaped_total",
                                     "HostedAI allocations of silent holders released by the "
                                     "reaper",
                                     "pool"),
                  1, pool);
}
