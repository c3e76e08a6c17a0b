/* worker_config.h - loads the worker's sections of gantry.json (providers.<name>
 * .retry and .timeouts, defaulting to worker.retry and worker.timeouts). */
#ifndef GT_WORKER_CONFIG_H
#define GT_WORKER_CONFIG_H

#include <stdint.h>

#include "config.h"

/* Adds the worker's section loader to this process's configuration loads
 * (gt_config_add_section); call it before the first gt_config_load. Returns 0
 * or -ENOSPC. */
int gt_worker_config_register(void);

/* The queue time limit of a task of tenant in lane: the smallest of
 * scheduling.max_queue_ms, scheduling.lanes.<lane>.max_queue_ms and
 * scheduling.tenants.<tenant>.max_queue_ms that is set (> 0); 0: none.
 * lane and tenant may be NULL. Cannot fail. */
int64_t gt_worker_config_max_queue_ms(const gt_config_t *cfg, const char *lane, const char *tenant);

#endif
