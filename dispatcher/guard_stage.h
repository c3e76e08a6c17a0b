/* guard_stage.h - internal to the guard's stages (guard_intake.c,
 * guard_result.c, guard_sweep.c): their events, moderation text and sweep. */
#ifndef GT_GUARD_STAGE_H
#define GT_GUARD_STAGE_H

#include <jansson.h>
#include <stddef.h>

#include "dispatcher.h"

/* Sends a guard decision event of type on topics.events, id
 * "<request_id>:<type>" (a redelivered request repeats it under that id), as a
 * detached effect. Sets request_id and tenant_id in data (borrowed). Out of
 * memory: logged, not sent. */
void gt_guard_emit(gt_dispatcher_t *d, const char *type, const char *request_id,
                   const char *tenant_id, json_t *data);

/* Appends every string value of v, newline-separated, to *buf (*len used, *cap
 * allocated; *buf may start NULL with both 0) for moderation. Out of memory:
 * what did not fit is left out. */
void gt_guard_collect_text(const json_t *v, char **buf, size_t *len, size_t *cap);

/* At most once a minute (driven by the requests that create rows): deletes
 * the guard rows older than 10 minutes whose job is not running. Failures
 * are logged; the next sweep tries again. */
void gt_guard_sweep_maybe(gt_dispatcher_t *d);

#endif
