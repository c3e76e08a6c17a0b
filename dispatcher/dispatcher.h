/* dispatcher.h - state shared by the dispatcher's roles (intake, coordinator,
 * ledger, reaper), all running on one libuv loop. */
#ifndef GT_DISPATCHER_H
#define GT_DISPATCHER_H

#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "effect.h"
#include "http.h"
#include "kafka.h"
#include "pg.h"
#include "schema.h"
#include "stats.h"

typedef struct gt_ledger gt_ledger_t;
typedef struct gt_reaper gt_reaper_t;
typedef struct gt_coordinator gt_coordinator_t;
typedef struct gt_provider_health gt_provider_health_t;

typedef struct gt_dispatcher {
    uv_loop_t *loop;
    const gt_config_t *cfg;
    char id[128];         /* this process, e.g. "dispatcher-host-123" */
    char incarnation[33]; /* random at start: tells this run of --id from a dead
                             one (job claims) */
    gt_producer_t *producer;
    gt_effects_t *effects;   /* every produce a message causes goes through these */
    gt_pg_t *pg;             /* intake (and budget admission, guard's intake side) */
    gt_pg_t *pg_coord;       /* the coordinator and guard's result side; NULL without
                                the role */
    gt_pg_t *pg_ledger;      /* the ledger's batches; NULL without the role */
    gt_consumer_t *consumer; /* requests and task results (group_dispatcher) */
    gt_schema_t *request_schema, *task_result_schema, *usage_schema, *event_schema;
    gt_schema_t *control_schema;   /* gantry.control.v1 (cancel.c) */
    json_t *intake_active;         /* request_ids in intake now -> SHA-256 of their body */
    json_t *finalizing;            /* request_ids whose result is being published */
    gt_coordinator_t *coordinator; /* the coordinator role's sweep; NULL without the role */
    gt_ledger_t *ledger;
    gt_reaper_t *reaper;
    struct gt_router *router;        /* deployment choice and health (router.h) */
    struct gt_release *release;      /* publishes tasks waiting in lanes with slots
                                        (release.h); NULL when no lane has slots */
    struct gt_cache *cache;          /* response cache single-flight (cache.h); NULL without
                                        intake and coordinator */
    gt_provider_health_t *providers; /* breaker states seen on gantry.events (owned by the
                                        reaper, which consumes them); NULL without it */
    long requests_accepted, requests_duplicate, dead_letters, results_published;
    long budget_rejections;           /* requests answered rejected/budget_exceeded */
    struct gt_moderation *moderation; /* guard stage's moderation client (moderation.h) */
    struct gt_ratelimit *ratelimit;   /* tenants' rate limits (ratelimit.h); NULL without intake */
    struct gt_backlog *backlog;       /* backlog gauges (backlog.h); NULL without PostgreSQL */
    int closing;                      /* shutting down past the drain: failures are not dead
                                         letters, their messages stay undone (redelivered) */
    /* Statements shared by many requests (pgbatch.h), made at start-up by
     * their roles (gt_intake_open, gt_coordinator_new):
     * intake's "tasks queued" update, the coordinator's "job done" mark;
     * intake's job insert and the coordinator's apply of one-task jobs'
     * results, answered per item. */
    struct gt_pgbatch *queued, *completed, *inserted, *applied;
} gt_dispatcher_t;

/* Creates intake's statement batches (d->inserted, d->queued; main.c frees
 * them). Returns 0, or -1 on out of memory. */
int gt_intake_open(gt_dispatcher_t *d);
/* Consumer callback of intake: one request message. */
void gt_intake_handle(gt_dispatcher_t *d, gt_msg_t *msg);
/* Consumer callback of the coordinator: one task result message. */
void gt_coordinator_handle(gt_dispatcher_t *d, gt_msg_t *msg);
/* Consumer callback of the control topic: one gantry.control.v1 (cancel.c).
 * Answered with a cancel.* event; msg is done once that event is durable and,
 * when the cancel left nothing running, the job's result is published. */
void gt_cancel_handle(gt_dispatcher_t *d, gt_msg_t *msg);
/* Finishes the job in row of res (columns from col: request_id, tenant_id,
 * batch, reply_topic, created_ms, traceparent) as a task result completing
 * it would: claim, gather, publish. msg (may be NULL) is marked done once
 * the result is published, or when another holder finishes the job. */
void gt_coordinator_finish(gt_dispatcher_t *d, gt_msg_t *msg, const PGresult *res, int row,
                           int col);

/* The coordinator's sweep: finishes jobs whose claim went stale (their
 * claimant died after claiming; dispatcher.claim_timeout_ms). */
gt_coordinator_t *gt_coordinator_new(gt_dispatcher_t *d);
int gt_coordinator_in_flight(const gt_coordinator_t *co); /* sweep work not yet done */
void gt_coordinator_close(gt_coordinator_t *co);          /* stops the sweep; closes its timer */
void gt_coordinator_free(gt_coordinator_t *co);           /* after the loop closed it */

/* Sends msg to the DLQ and marks it done once the DLQ entry is durable. */
void gt_dispatcher_dead_letter(gt_dispatcher_t *d, gt_consumer_t *c, gt_msg_t *msg,
                               const char *stage, const char *code, const char *message,
                               const char *request_id);

/* Ledger: consumes usage events and writes them to PostgreSQL in batches. */
gt_ledger_t *gt_ledger_new(gt_dispatcher_t *d, char *err, size_t errlen);
int gt_ledger_in_flight(const gt_ledger_t *l);
/* The ledger's batch statement: $1..$22 the columns of a batch of gantry.usage.v1
 * events as arrays (gt_ledger_rows_params, ledger_rows.h); inserts the new ones with
 * their cost and adds it to budgets; returns (rows inserted, budget rows updated).
 * Exposed so the ledger benchmark and tests run the very same statement. */
const char *gt_ledger_insert_sql(void);
/* SIGTERM: stops taking usage events and writes the pending batch now. */
void gt_ledger_drain(gt_ledger_t *l);
void gt_ledger_close(gt_ledger_t *l); /* stops taking messages; closes handles */
void gt_ledger_free(gt_ledger_t *l);  /* after the loop closed the handles */

/* Lease reaper: releases HostedAI allocations whose holder stopped heartbeating. */
gt_reaper_t *gt_reaper_new(gt_dispatcher_t *d, char *err, size_t errlen);
void gt_reaper_close(gt_reaper_t *r);
void gt_reaper_free(gt_reaper_t *r);

/* Provider health from the workers' breaker.* events (dispatcher/providers.c). */
gt_provider_health_t *gt_provider_health_new(void);
void gt_provider_health_event(gt_provider_health_t *h, const char *type, const json_t *data);
/* 1 while some worker reported the provider's breaker open (within its recovery time). */
int gt_provider_health_down(const gt_provider_health_t *h, const char *provider);
/* m, or its first fallback whose provider is not down when m's is (m if none). */
const gt_model_t *gt_provider_health_route(const gt_provider_health_t *h, const gt_config_t *cfg,
                                           const gt_model_t *m);
void gt_provider_health_free(gt_provider_health_t *h);

#endif
