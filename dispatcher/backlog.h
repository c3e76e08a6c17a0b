/* backlog.h - the backlog to scale workers on: tasks waiting and running, and
 * the age of the oldest waiting task, per lane and tenant, read from the task
 * rows in PostgreSQL every dispatcher.backlog_ms (docs/observability.md). */
#ifndef GT_BACKLOG_H
#define GT_BACKLOG_H

#include "dispatcher.h"

typedef struct gt_backlog gt_backlog_t;

/* Starts the periodic query on d->pg (none without PostgreSQL or with
 * dispatcher.backlog_ms 0). Returns NULL on out of memory. The gauges are
 * gantry_backlog_tasks{lane,tenant,state} (state waiting or running),
 * gantry_backlog_oldest_waiting_seconds{lane,tenant} and
 * gantry_rate_limit_held{tenant}; a series that empties reads 0. A failed
 * query leaves the last values (and is logged). */
gt_backlog_t *gt_backlog_new(gt_dispatcher_t *d);
void gt_backlog_close(gt_backlog_t *b); /* stops; closes its timer (NULL is fine) */
void gt_backlog_free(gt_backlog_t *b);  /* after the loop closed the timer (NULL is fine) */

#endif
