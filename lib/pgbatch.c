/* pgbatch.c - one statement for many waiting rows, one statement in flight per batch. */
#include "pgbatch.h"

#include <stdlib.h>

struct gt_pgbatch {
    gt_pg_t **pg;
    const char *sql;
    gt_pgbatch_done done;
    gt_pgbatch_row_done row_done; /* instead of done: items get their rows */
    json_t *rows;                 /* rows of the waiting items */
    void **waiting;               /* items whose rows are in rows */
    int n, cap;
    int sending; /* a statement is in flight */
};

/* What one statement carries: its items, answered together. */
typedef struct pgbatch_sent {
    gt_pgbatch_t *b;
    void **items;
    int n;
} pgbatch_sent_t;

static void pgbatch_send(gt_pgbatch_t *b);

/* Answers item i of s with its row (the statement's rows are ordered by i). */
static void answer_item(gt_pgbatch_t *b, void *item, const PGresult *res, const char *err, int i,
                        int *cursor)
{
    if (!b->row_done) {
        b->done(item, err);
        return;
    }
    int row = -1, nrows = res ? PQntuples(res) : 0;
    while (*cursor < nrows && atoi(PQgetvalue(res, *cursor, 0)) < i)
        (*cursor)++;
    if (*cursor < nrows && atoi(PQgetvalue(res, *cursor, 0)) == i)
        row = (*cursor)++;
    b->row_done(item, res, row, err);
}

static void on_answer(const PGresult *res, const char *err, void *arg)
{
    pgbatch_sent_t *s = arg;
    gt_pgbatch_t *b = s->b;
    int cursor = 0;
    for (int i = 0; i < s->n; i++)
        answer_item(b, s->items[i], err ? NULL : res, err, i, &cursor);
    free(s->items);
    free(s);
    b->sending = 0;
    pgbatch_send(b);
}

/* Takes the waiting items (their rows are in the text sent, or dropped):
 * the next rows start a new batch. */
static void **take_waiting(gt_pgbatch_t *b, int *n)
{
    void **items = b->waiting;
    *n = b->n;
    b->waiting = NULL;
    b->n = b->cap = 0;
    json_array_clear(b->rows);
    return items;
}

static void pgbatch_send(gt_pgbatch_t *b)
{
    if (b->sending || b->n == 0)
        return;
    pgbatch_sent_t *s = calloc(1, sizeof(*s));
    char *text = s ? json_dumps(b->rows, JSON_COMPACT) : NULL;
    if (!text) { /* out of memory: the waiting items fail, none waits for good */
        free(s);
        int n;
        void **items = take_waiting(b, &n);
        for (int i = 0; i < n; i++)
            answer_item(b, items[i], NULL, "out of memory", i, &(int){0});
        free(items);
        return;
    }
    s->b = b;
    s->items = take_waiting(b, &s->n);
    b->sending = 1;
    const char *params[] = {text};
    if (gt_pg_query(*b->pg, b->sql, 1, params, on_answer, s) != 0)
        on_answer(NULL, "cannot send query", s);
    free(text);
}

gt_pgbatch_t *gt_pgbatch_new(gt_pg_t **pg, const char *sql, gt_pgbatch_done done)
{
    gt_pgbatch_t *b = calloc(1, sizeof(*b));
    if (!b || !(b->rows = json_array())) {
        free(b);
        return NULL;
    }
    b->pg = pg;
    b->sql = sql;
    b->done = done;
    return b;
}

gt_pgbatch_t *gt_pgbatch_new_rows(gt_pg_t **pg, const char *sql, gt_pgbatch_row_done done)
{
    gt_pgbatch_t *b = gt_pgbatch_new(pg, sql, NULL);
    if (b)
        b->row_done = done;
    return b;
}

int gt_pgbatch_add(gt_pgbatch_t *b, void *item, json_t *rows)
{
    if (!rows)
        return -1;
    size_t k;
    json_t *row;
    json_array_foreach (rows, k, row) {
        if (b->row_done && json_object_set_new(row, "i", json_integer(b->n)) != 0) {
            json_decref(rows);
            return -1;
        }
    }
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 16;
        void **w = realloc(b->waiting, (size_t)cap * sizeof(*w));
        if (!w) {
            json_decref(rows);
            return -1;
        }
        b->waiting = w;
        b->cap = cap;
    }
    int rc = json_array_extend(b->rows, rows);
    json_decref(rows);
    if (rc != 0)
        return -1;
    b->waiting[b->n++] = item;
    pgbatch_send(b);
    return 0;
}

void gt_pgbatch_free(gt_pgbatch_t *b)
{
    if (!b)
        return;
    json_decref(b->rows);
    free(b->waiting);
    free(b);
}
