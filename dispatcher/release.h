/* release.h - the dispatcher's releaser: publishes the tasks that wait in
 * PostgreSQL in lanes with configured slots (scheduling.lanes.<lane>.slots),
 * by priority band and tenant share (docs/scheduling.md). */
#ifndef GT_RELEASE_H
#define GT_RELEASE_H

#include "dispatcher.h"

typedef struct gt_release gt_release_t;

/* The slots of lane (scheduling.lanes.<lane>.slots); 0: the lane is not
 * released fairly (its tasks are published at intake, as without this). */
int gt_release_lane_slots(const gt_config_t *cfg, const char *lane);

/* A releaser on its own PostgreSQL connection, looking at every lane with
 * slots at least every scheduling.release_poll_ms. Returns NULL when no lane
 * has slots (nothing to do) or on out of memory (*oom set). */
gt_release_t *gt_release_new(gt_dispatcher_t *d, int *oom);

/* Something changed in lane (NULL: in every lane): tasks were stored waiting,
 * or some ended. Runs one release now, or right after the one running.
 * r may be NULL (no-op). */
void gt_release_kick(gt_release_t *r, const char *lane);

/* Releases whose tasks are being published or marked, and statements out. */
int gt_release_in_flight(const gt_release_t *r);

/* Stops looking; closes the timer and the connection (statements out fail
 * "closed": their tasks stay claimed and are published again later). */
void gt_release_close(gt_release_t *r);
/* After the loop closed the timer. NULL is fine. */
void gt_release_free(gt_release_t *r);

#endif
