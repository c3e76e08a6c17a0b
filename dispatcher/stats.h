/* stats.h - the dispatcher's Prometheus metrics (lib/metrics.h), one call per
 * event so that call sites stay one line. */
#ifndef GT_DISPATCHER_STATS_H
#define GT_DISPATCHER_STATS_H

/* Registers the unlabelled metrics so that they show 0 before their first
 * event (dashboards and alerts see a series from the start). */
void gt_stats_init(void);
/* A result published (succeeded, failed, expired, rejected, blocked). */
void gt_stats_result(const char *status);
/* A message dead-lettered, by error code. */
void gt_stats_dead_letter(const char *code);
/* A re-sent request_id: outcome "identical" (dropped silently) or "conflict"
 * (a different body, dead-lettered as duplicate_conflict). */
void gt_stats_duplicate(const char *outcome);
/* A request refused at admission because its tenant's budget is spent. */
void gt_stats_budget_rejection(const char *tenant_id);
/* A ledger batch committed: rows inserted (duplicates excluded), its latency. */
void gt_stats_ledger_batch(long rows, double seconds);
/* An allocation of a silent holder released by the reaper. */
void gt_stats_reaped(const char *pool);

#endif
