/* ledger_rows.h - a batch of usage events as the parameters of the ledger's
 * statement: one PostgreSQL array per column (binary for text and integer
 * columns, a text literal for the others), built as events arrive. */
#ifndef GT_LEDGER_ROWS_H
#define GT_LEDGER_ROWS_H

#include <jansson.h>

/* Columns of a usage event, in the order of the statement's parameters
 * ($1..$22, gt_ledger_insert_sql). */
#define GT_LEDGER_NPARAMS 22

typedef struct gt_ledger_rows gt_ledger_rows_t;

/* An empty batch. Returns NULL on out of memory. */
gt_ledger_rows_t *gt_ledger_rows_new(void);

/* Appends a gantry.usage.v1 event (a parsed object; the "trace_id" member is
 * taken too). A missing or null member is SQL NULL; a string is taken as is
 * and a number in its JSON spelling (the statement casts, so a value of the
 * wrong type fails the statement, as a bad event does: an integer column that
 * meets another kind of value is sent as text from then on). Returns 0, or -1 on
 * out of memory (the batch is then unusable: free it). */
int gt_ledger_rows_add(gt_ledger_rows_t *r, const json_t *ev);

/* Number of events appended. */
int gt_ledger_rows_count(const gt_ledger_rows_t *r);

/* Fills params, lengths and formats (as gt_pg_query_bin and PQexecParams
 * take them: format 1 binary of that length, 0 text) with the
 * GT_LEDGER_NPARAMS arrays, valid until the next add or the free. Returns 0,
 * or -1 on out of memory. */
int gt_ledger_rows_params(gt_ledger_rows_t *r, const char *params[GT_LEDGER_NPARAMS],
                          int lengths[GT_LEDGER_NPARAMS], int formats[GT_LEDGER_NPARAMS]);

/* Frees the batch (NULL is fine). */
void gt_ledger_rows_free(gt_ledger_rows_t *r);

#endif
