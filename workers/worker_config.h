/* worker_config.h - loads the worker's sections of gantry.json (providers.<name>
 * .retry and .timeouts, defaulting to worker.retry and worker.timeouts). */
#ifndef GT_WORKER_CONFIG_H
#define GT_WORKER_CONFIG_H

#include "config.h"

/* Adds the worker's section loader to this process's configuration loads
 * (gt_config_add_section); call it before the first gt_config_load. Returns 0
 * or -ENOSPC. */
int gt_worker_config_register(void);

#endif
