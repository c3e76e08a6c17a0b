/* pgbatch.h - one statement for many waiting rows: rows added while the
 * batch's statement is in flight go together in the next one, so under load
 * a loop turn's requests share a round trip and a transaction, and at low
 * load each row goes at once. One bad item fails only itself: when the server
 * fails a statement of several items, each of them goes again alone. */
#ifndef GT_PGBATCH_H
#define GT_PGBATCH_H

#include <jansson.h>

#include "pg.h"

typedef struct gt_pgbatch gt_pgbatch_t;

/* Called once per item added, on the loop, after the statement that carried
 * its rows was answered: err NULL when it committed, else the error of the
 * statement that carried it alone (gt_pg's; "closed" while stopping, which
 * is never tried again), or "cannot send query" / "out of memory". */
typedef void (*gt_pgbatch_done)(void *item, const char *err);

/* As gt_pgbatch_done, for a statement that answers each item: res is the
 * statement's result and row the item's row in it, or -1 when it returned
 * none for the item even alone (res NULL and row -1 with err). */
typedef void (*gt_pgbatch_row_done)(void *item, const PGresult *res, int row, const char *err);

/* sql takes one parameter, $1: a JSON array of the rows of every item in the
 * batch (read it with json_to_recordset). *pg is read at each send, so the
 * owner may free and NULL its connection (later sends then fail into done).
 * Returns NULL on out of memory. */
gt_pgbatch_t *gt_pgbatch_new(gt_pg_t **pg, const char *sql, gt_pgbatch_done done);

/* As gt_pgbatch_new, for a statement with results per item: each of an
 * item's rows (JSON objects) carries "i", the item's ordinal in its
 * statement (from 0), and the statement returns at most one row per item,
 * ordered by i, with i in column 0. An item it returns no row for goes again
 * alone, after it committed: a statement may so leave an item it cannot
 * decide together with the others (a second row for the same key). */
gt_pgbatch_t *gt_pgbatch_new_rows(gt_pg_t **pg, const char *sql, gt_pgbatch_row_done done);

/* Adds item with rows (a JSON array of row objects; the reference is stolen,
 * and kept until item is answered) and sends the batch unless a statement of
 * it is in flight. Returns 0, or -1 when rows is NULL or not an array, or on
 * out of memory (nothing added: done is not called for item). */
int gt_pgbatch_add(gt_pgbatch_t *b, void *item, json_t *rows);

/* Frees the batch, after its connection was freed (which answered the
 * statement in flight, and so every item, "closed"). NULL is fine. */
void gt_pgbatch_free(gt_pgbatch_t *b);

#endif
