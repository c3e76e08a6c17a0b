/* reload.h - SIGHUP: re-read the configuration and apply, on the loop thread,
 * the sections that may change while running; report those that need a restart. */
#ifndef GT_RELOAD_H
#define GT_RELOAD_H

#include "config.h"

/* Re-reads live->path and validates the whole file. On any problem logs each
 * one and returns -1: live is left as it was. Otherwise moves the reloadable
 * sections (log.level, tenants) into live, sets the log level, logs every
 * changed key (never its value) as applied or as needing a restart, and
 * returns the number of changed keys. The swapped-out tenants stay allocated
 * until live is freed (live->retired), so pointers taken before stay valid.
 * Not thread safe: call it where live is read (the loop thread). */
int gt_config_reload(gt_config_t *live);

/* Whether a change to this key path ("tenants.acme", "log.level") takes effect
 * on reload (1) or needs a restart (0). */
int gt_config_key_reloadable(const char *key);

#endif
