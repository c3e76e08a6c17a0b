/* pump.h - gantry-api's loop side (pump.c): publishing, results, endings. */
#ifndef GT_API_PUMP_H
#define GT_API_PUMP_H

#include <uv.h>

#include "api.h"
#include "effect.h"

typedef struct gt_api_pump gt_api_pump_t;

/* Starts the results consumer (group api.group) and the 200 ms tick that
 * publishes lines, sends cancels, expires and ends batches. Every produce
 * goes through es. Returns NULL with err set. */
gt_api_pump_t *gt_api_pump_new(uv_loop_t *loop, const gt_config_t *cfg, const gt_api_config_t *ac,
                               gt_effects_t *es, const char *source, char *err, size_t errlen);
/* 1 once its PostgreSQL connection is up. */
int gt_api_pump_connected(const gt_api_pump_t *p);
/* Work out: rounds, results being recorded, messages in flight. */
int gt_api_pump_busy(const gt_api_pump_t *p);
/* Stops the tick and the consumer's handles, fails its queries (their work
 * stays undone and is redone by the next process); the loop must run once more. */
void gt_api_pump_close(gt_api_pump_t *p);
/* After the loop ran: leaves the group, frees. NULL is fine. */
void gt_api_pump_free(gt_api_pump_t *p);

#endif
