/* ratelimit.h - per-tenant (and tenant+model) limits of requests and tokens
 * per minute (dispatcher.rate_limits), one token bucket per key in
 * PostgreSQL shared by every dispatcher. See docs/scheduling.md#rate-limits. */
#ifndef GT_RATELIMIT_H
#define GT_RATELIMIT_H

#include "config_section.h"
#include "dispatcher.h"

typedef struct gt_ratelimit gt_ratelimit_t;

/* Verdicts of gt_ratelimit_admit. */
enum {
    GT_RATE_FAILED = -1,  /* the check failed permanently (reason: gt_pg's error, or
                             "closed" while stopping): not admitted */
    GT_RATE_HELD = 0,     /* over the limit, on_limit "wait": the request's bytes are held
                             durably in rate_holds and come back on the requests topic when
                             the bucket refills; the caller marks its message done */
    GT_RATE_ADMITTED = 1, /* go ahead (charged, or known: not charged twice) */
    GT_RATE_REJECTED = 2  /* over the limit, on_limit "reject": answer rate_limited (reason) */
};
typedef void (*gt_ratelimit_cb)(int verdict, const char *reason, void *arg);

/* The limiter of an intake dispatcher, or NULL on out of memory. With no
 * dispatcher.rate_limits it admits everything without a query. Starts the
 * releaser (every rate_limits.release_ms) when limits are configured. */
gt_ratelimit_t *gt_ratelimit_new(gt_dispatcher_t *d);
/* Stops the releaser and closes its timers; answers still due come through
 * their callbacks (GT_RATE_FAILED, "closed") as the pg handle is freed. */
void gt_ratelimit_close(gt_ratelimit_t *rl);
void gt_ratelimit_free(gt_ratelimit_t *rl); /* after the loop closed its timers */

/* Admits req (its tenant_id and model; requests: its inference tasks; tokens:
 * the estimate, gt_ratelimit_estimate) received as msg (whose bytes are held
 * when it must wait). Returns 1 when no limit applies (cb is not called), 0
 * when cb will answer on the loop (exactly once, never from inside this
 * call), -1 on out of memory (cb is not called: not admitted, the caller
 * leaves its message undone). Requests of one loop turn are decided together
 * in one statement. Nothing fails open: while PostgreSQL is down the answer
 * waits (gt_pg retries). */
int gt_ratelimit_admit(gt_ratelimit_t *rl, const json_t *req, const char *model, int requests,
                       int64_t tokens, const gt_msg_t *msg, gt_ratelimit_cb cb, void *arg);

/* Tokens a request is charged at admission: its input's characters / 4 plus
 * parameters.max_tokens (rate_limits.default_max_tokens when absent) per
 * task. */
int64_t gt_ratelimit_estimate(const gt_config_t *cfg, const json_t *req, int tasks);

/* dispatcher.rate_limits checked at load (problems reported through c). */
void gt_ratelimit_config_check(gt_cfg_ctx_t *c, json_t *dispatcher);

#endif
