/* gate.h - a worker's start gate in PostgreSQL (docs/scheduling.md): a task
 * starts only if its row says it may (not cancelled, not past its queue time
 * limit), and running tasks whose job was cancelled are found and aborted. */
#ifndef GT_GATE_H
#define GT_GATE_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

typedef struct gt_gate gt_gate_t;

typedef enum {
    GT_GATE_START,     /* run it (also: the task is not known to PostgreSQL, e.g. sent by hand) */
    GT_GATE_EXPIRED,   /* it waited longer than its queue time limit: end it expired, unrun */
    GT_GATE_SKIP,      /* cancelled before it started, or already finished: do not run it */
    GT_GATE_CANCELLED, /* its job is cancelled but the task not marked: report it cancelled */
    GT_GATE_CLOSED,    /* the gate is closing: leave the task undone (redelivered) */
} gt_gate_verdict_t;

typedef void (*gt_gate_cb)(gt_gate_verdict_t v, void *arg);
/* ids: a JSON array (borrowed) of the request_ids asked about that are cancelled. */
typedef void (*gt_gate_cancelled_cb)(const json_t *ids, void *arg);

/* A gate on its own connection to cfg->pg_conninfo. Returns NULL when no
 * PostgreSQL is configured (tasks then start ungated) or on out of memory. */
gt_gate_t *gt_gate_new(uv_loop_t *loop, const gt_config_t *cfg);

/* Asks whether task_id (of request_id) may start; max_queue_ms > 0 bounds
 * the time since its job was created. Marks it 'running' when it may, under
 * msg_id (the Kafka message's "partition:offset", or NULL): a task running
 * under another message is a second copy and answers SKIP. The claims of a
 * loop turn go to PostgreSQL in one statement. cb runs exactly once, on the
 * loop, with CLOSED when the gate is freed first; not inside this call,
 * unless PostgreSQL could not be asked at all (out of memory: then START,
 * logged). A permanent SQL error answers START (logged): the gate never
 * loses a task. Returns 0, or -1 on out of memory (cb not run). */
int gt_gate_claim(gt_gate_t *g, const char *task_id, const char *request_id, int64_t max_queue_ms,
                  const char *msg_id, gt_gate_cb cb, void *arg);

/* Which of request_ids (a JSON array of strings, borrowed) have been
 * cancelled. cb runs once, on the loop, with an empty array on error or when
 * closing. Returns 0, or -1 on out of memory (cb not run). */
int gt_gate_cancelled(gt_gate_t *g, const json_t *request_ids, gt_gate_cancelled_cb cb, void *arg);

/* Fails what is pending (CLOSED / empty) and frees the gate. NULL is fine. */
void gt_gate_free(gt_gate_t *g);

#endif
