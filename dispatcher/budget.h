/* budget.h - admission of new jobs against tenants' monthly budgets
 * (tenants.<id>.budget), decided atomically in PostgreSQL so that several
 * dispatchers share one view of each tenant's spend. See docs/billing.md. */
#ifndef GT_BUDGET_H
#define GT_BUDGET_H

#include "dispatcher.h"

/* admitted: 1 = go ahead, 0 = over the hard limit (reason says by how much),
 * -1 = the check failed permanently (reason is gt_pg's error, SQLSTATE first,
 * or "closed" while stopping): the job is not admitted. */
typedef void (*gt_budget_cb)(int admitted, const char *reason, void *arg);

/* Admits a job of `tasks` inference tasks for tenant_id. Returns 1 when the
 * tenant has no budget (admitted, cb is not called), 0 when the decision will
 * come through cb on the loop (exactly once, never from inside this call),
 * -1 when it cannot be checked now (out of memory, connection closed: cb is
 * not called; not admitted, the caller leaves its message undone).
 *
 * An admitted job reserves its estimated cost in the tenant's period row until
 * it ends; costed usage (the ledger) moves into spent. A request_id that is
 * already a job or holds a reservation is admitted again without reserving
 * (redelivery). Crossing a soft threshold emits one budget.warning event per
 * tenant, period and threshold over all dispatchers (deduplicated in
 * PostgreSQL). Nothing fails open: an unreachable database or a transient
 * error only delays the answer (gt_pg retries the statement); a permanent SQL
 * error answers -1. The statement is safe to run twice: a request_id that
 * holds a reservation is "known" and reserves nothing more. */
int gt_budget_admit(gt_dispatcher_t *d, const char *tenant_id, const char *request_id, int tasks,
                    gt_budget_cb cb, void *arg);

/* Gives back the reservation of a request that never became a job (its
 * persisting failed). Fire and forget; safe when there is none. */
void gt_budget_release(gt_dispatcher_t *d, const char *request_id);

#endif
