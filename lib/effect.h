/* effect.h - the one way a stage produces what an input message causes: every
 * produce is re-sent until the broker acknowledges it, then the stage is told,
 * once, so that it marks its input done (librdkafka delivery reports grouped
 * per input).
 *
 * An effect groups the produces one input causes. Their bytes are copied. A
 * produce refused at queue time (queue full, out of memory, broker down) or
 * whose delivery report failed is sent again after a bounded exponential
 * backoff with jitter (50 ms doubling to 5 s), never dropped. When the effect
 * is sealed and every produce is acknowledged, done() runs exactly once. A
 * problem re-sending cannot fix (message larger than the producer's limit,
 * unknown or forbidden topic) calls failed() instead, once, and done() never
 * runs: the stage dead-letters. Callbacks run on the loop thread, from
 * gt_effect_seal or later, never inside gt_effect_add; the effect frees
 * itself after its callback, the stage never frees it. */
#ifndef GT_EFFECT_H
#define GT_EFFECT_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "kafka.h"

typedef struct gt_effects gt_effects_t;
typedef struct gt_effect gt_effect_t;

/* All produces acknowledged: the stage marks its input done (or goes on). */
typedef void (*gt_effect_done_cb)(void *arg);
/* A permanent failure of one produce to topic (err: a negative
 * rd_kafka_resp_err_t as gt_producer_send returns, or a delivery report's
 * code negated): the stage dead-letters its input. err 0: the process stops
 * (gt_effects_close) and gave the effect up: the stage frees its state and
 * leaves its input undone (redelivered). Either way the effect is over: no
 * done(), the other produces are not re-sent. */
typedef void (*gt_effect_failed_cb)(const char *topic, int err, const char *reason, void *arg);

/* The effects of one process (one loop, one producer). Returns NULL on out of
 * memory. Registers gantry_effect_resends_total{topic}. */
gt_effects_t *gt_effects_new(uv_loop_t *loop, gt_producer_t *p);

/* Shutdown: gives up every pending effect with a produce waiting for its
 * backoff (failed() with err 0) and, from now on, a produce that fails gives
 * its effect up the same way instead of being re-sent. The
 * loop must run once more (timers close). Successful deliveries reported
 * later (gt_producer_free's flush) still complete their effects. */
void gt_effects_close(gt_effects_t *es);
/* After gt_effects_close, the loop run and gt_producer_free. NULL is fine. */
void gt_effects_free(gt_effects_t *es);

/* Effects not yet completed, failed or abandoned. */
int gt_effects_pending(const gt_effects_t *es);
/* Re-sends so far (all topics). */
long gt_effects_resends(const gt_effects_t *es);

/* A new, empty effect. done may be NULL (a detached effect: delivered all the
 * same, nobody told); failed may be NULL (the failure is logged). Returns NULL
 * on out of memory. */
gt_effect_t *gt_effect_new(gt_effects_t *es, gt_effect_done_cb done, gt_effect_failed_cb failed,
                           void *arg);

/* Adds one produce and sends it now (or, when refused, after a backoff). key,
 * value and headers are copied. Returns 0, or -1 on out of memory or after
 * seal (nothing added). A permanent refusal is reported through failed()
 * at seal. */
int gt_effect_add(gt_effect_t *e, const char *topic, const void *key, size_t key_len,
                  const void *value, size_t len, const gt_header_t *headers, size_t n_headers);
/* The same for a JSON object (serialised compactly; not stolen); key may be NULL. */
int gt_effect_add_json(gt_effect_t *e, const char *topic, const char *key, const json_t *obj,
                       const gt_header_t *headers, size_t n_headers);

/* No more produces: done() runs once all are acknowledged (inside this call
 * when they already are, or when there are none). */
void gt_effect_seal(gt_effect_t *e);

/* Gives up without calling back: the input stays undone (it is redelivered
 * later). Produces in the producer still report; the effect is freed then. */
void gt_effect_abandon(gt_effect_t *e);

/* A one-produce detached effect: sent until acknowledged, nobody told.
 * Returns 0 or -1 on out of memory. */
int gt_effect_send_json(gt_effects_t *es, const char *topic, const char *key, const json_t *obj,
                        const gt_header_t *headers, size_t n_headers);

#endif
