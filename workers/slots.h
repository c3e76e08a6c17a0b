/* slots.h - provider slots shared by every worker process through PostgreSQL:
 * at most max_in_flight calls at once and rpm/tpm per minute, per provider and
 * per (provider, tenant). Rows in gantry_provider_slots are leases: a holder
 * renews them while alive, and a dead holder's slots come back once its lease
 * lapses. Waiting never blocks the loop: waiters poll with backoff. */
#ifndef GT_SLOTS_H
#define GT_SLOTS_H

#include <stdint.h>
#include <uv.h>

#include "config.h"

typedef struct gt_slots gt_slots_t;
typedef struct gt_slot_req gt_slot_req_t;

/* rc 0: the slot(s) are held until gt_slots_release. rc -1: gave up (the
 * give-up time passed); why is static text. Runs on the loop, never inside
 * gt_slots_acquire. */
typedef void (*gt_slot_cb)(gt_slot_req_t *r, int rc, const char *why, void *arg);

/* 1 when a call of tenant at p needs a slot (p or the tenant there has limits). */
int gt_slots_needed(const gt_provider_t *p, const char *tenant);

/* Returns NULL with err set on out of memory, or when some provider has limits
 * and postgres.conninfo is missing; NULL with err "" when no provider has
 * limits (nothing to share). cfg and worker_id are borrowed. */
gt_slots_t *gt_slots_new(uv_loop_t *loop, const gt_config_t *cfg, const char *worker_id, char *err,
                         size_t errlen);

/* Queues a request for p's (and the tenant's) slot. give_up_mono_ms: a
 * gt_clock_mono_ms() bound. Returns NULL on out of memory. */
gt_slot_req_t *gt_slots_acquire(gt_slots_t *s, const gt_provider_t *p, const char *tenant,
                                const char *task_id, int64_t give_up_mono_ms, gt_slot_cb cb,
                                void *arg);

/* The slot-acquire statement ($1 provider, $2 scope, $3 max_in_flight, $4
 * holder, $5 task_id, $6 lease ms; returns the slot taken, or no row). Safe
 * to re-run: a slot the same holder and task hold is taken again first, so
 * gt_pg's re-send after a lost connection never takes a second one. Exposed
 * for tests. */
extern const char gt_slots_sql_acquire[];

/* Ends r: a held slot is freed (tokens, >= 0, are counted in the minute's
 * tpm), a waiting request is withdrawn (cb will not run). r is invalid after. */
void gt_slots_release(gt_slot_req_t *r, int64_t tokens);

/* Slots held by this process now (for stats and tests). */
int gt_slots_held(const gt_slots_t *s);

/* Releases what is held, closes the loop handles and the connection; frees s
 * once closed (the loop must run afterwards). Pending requests are dropped
 * without callback. */
void gt_slots_free(gt_slots_t *s);

#endif
