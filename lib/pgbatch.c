/* pgbatch.c - one statement for many waiting rows, one statement in flight per
 * batch; an item its statement failed or left unanswered goes again alone. */
#include "pgbatch.h"

#include <stdlib.h>
#include <string.h>

#include "json_text.h"

/* An item and its rows, kept until it is answered: it may be sent again alone. */
typedef struct pgbatch_item {
    void *item;
    json_t *rows;
} pgbatch_item_t;

/* A FIFO of items (waiting for the next statement, or to go alone). */
typedef struct pgbatch_queue {
    pgbatch_item_t *v;
    int head, n, cap;
} pgbatch_queue_t;

struct gt_pgbatch {
    gt_pg_t **pg;
    const char *sql;
    gt_pgbatch_done done;
    gt_pgbatch_row_done row_done; /* instead of done: items get their rows */
    pgbatch_queue_t waiting;      /* go together in the next statement */
    pgbatch_queue_t alone;        /* go one per statement, before the waiting */
    int sending;                  /* a statement is in flight */
};

/* What one statement carries: its items, answered together. */
typedef struct pgbatch_sent {
    gt_pgbatch_t *b;
    pgbatch_item_t *items;
    int n;
} pgbatch_sent_t;

static void pgbatch_send(gt_pgbatch_t *b);

static int queue_push(pgbatch_queue_t *q, pgbatch_item_t it)
{
    if (q->head + q->n == q->cap) {
        if (q->head > 0) { /* reuse the room the taken items left */
            memmove(q->v, q->v + q->head, (size_t)q->n * sizeof(*q->v));
            q->head = 0;
        }
        if (q->n == q->cap) {
            int cap = q->cap ? q->cap * 2 : 16;
            pgbatch_item_t *v = realloc(q->v, (size_t)cap * sizeof(*v));
            if (!v)
                return -1;
            q->v = v;
            q->cap = cap;
        }
    }
    q->v[q->head + q->n++] = it;
    return 0;
}

/* Takes up to max items off the front of q into a new array (NULL: out of memory). */
static pgbatch_item_t *queue_take(pgbatch_queue_t *q, int max, int *n)
{
    *n = q->n < max ? q->n : max;
    pgbatch_item_t *v = malloc((size_t)*n * sizeof(*v));
    if (!v)
        return NULL;
    memcpy(v, q->v + q->head, (size_t)*n * sizeof(*v));
    q->head += *n;
    q->n -= *n;
    if (q->n == 0)
        q->head = 0;
    return v;
}

/* Answers it with its row (or err) and frees its rows. */
static void answer(gt_pgbatch_t *b, pgbatch_item_t *it, const PGresult *res, int row,
                   const char *err)
{
    json_decref(it->rows);
    if (b->row_done)
        b->row_done(it->item, res, row, err);
    else
        b->done(it->item, err);
}

/* Sends it alone after the statement in flight, or, out of memory, answers it. */
static void again_alone(gt_pgbatch_t *b, pgbatch_item_t *it, const PGresult *res, int row,
                        const char *err)
{
    if (queue_push(&b->alone, *it) != 0)
        answer(b, it, res, row, err);
}

/* gt_pg's answer to a statement: a failed statement of several items, and an
 * item a statement returned no row for, go again alone; the rest are done. */
static void on_answer(const PGresult *res, const char *err, void *arg)
{
    pgbatch_sent_t *s = arg;
    gt_pgbatch_t *b = s->b;
    int several = s->n > 1, cursor = 0;
    int nrows = !err && b->row_done ? PQntuples(res) : 0;
    for (int i = 0; i < s->n; i++) {
        pgbatch_item_t *it = &s->items[i];
        if (err) {
            if (several && strcmp(err, "closed") != 0)
                again_alone(b, it, NULL, -1, err);
            else
                answer(b, it, NULL, -1, err);
            continue;
        }
        int row = -1;
        while (cursor < nrows && atoi(PQgetvalue(res, cursor, 0)) < i)
            cursor++;
        if (cursor < nrows && atoi(PQgetvalue(res, cursor, 0)) == i)
            row = cursor++;
        if (row < 0 && b->row_done && several)
            again_alone(b, it, res, row, NULL);
        else
            answer(b, it, res, row, NULL);
    }
    free(s->items);
    free(s);
    b->sending = 0;
    pgbatch_send(b);
}

/* Writes the statement's parameter into t (NUL terminated): every item's
 * rows, numbered by item for a batch with results per item. t->failed on
 * out of memory. */
static void rows_text(const gt_pgbatch_t *b, const pgbatch_item_t *items, int n, gt_json_text_t *t)
{
    int first = 1;
    gt_json_text_raw(t, "[", 1);
    for (int i = 0; i < n && !t->failed; i++) {
        size_t k;
        json_t *row;
        json_array_foreach (items[i].rows, k, row) {
            if (b->row_done && json_object_set_new(row, "i", json_integer(i)) != 0)
                t->failed = 1;
            if (!first)
                gt_json_text_raw(t, ",", 1);
            first = 0;
            gt_json_text_value(t, row);
        }
    }
    gt_json_text_raw(t, "]", 2); /* with the NUL */
}

/* Answers the items with err and frees them. */
static void answer_all(gt_pgbatch_t *b, pgbatch_item_t *items, int n, const char *err)
{
    for (int i = 0; i < n; i++)
        answer(b, &items[i], NULL, -1, err);
    free(items);
}

/* Sends the next statement: the first item to go alone, else every waiting
 * one. One that cannot be sent is answered (nothing for the server to say,
 * so nothing goes again) and the next is tried. */
static void pgbatch_send(gt_pgbatch_t *b)
{
    while (!b->sending && (b->alone.n || b->waiting.n)) {
        pgbatch_queue_t *q = b->alone.n ? &b->alone : &b->waiting;
        int n;
        pgbatch_item_t *items = queue_take(q, q == &b->alone ? 1 : q->n, &n);
        pgbatch_sent_t *s = items ? malloc(sizeof(*s)) : NULL;
        char stack[16384]; /* gt_pg copies it */
        gt_json_text_t t;
        gt_json_text_init(&t, stack, sizeof(stack));
        if (s)
            rows_text(b, items, n, &t);
        const char *text = s && !t.failed ? t.p : NULL;
        if (!items) { /* out of memory: what would have gone fails, none waits for good */
            while (q->n) {
                pgbatch_item_t it = q->v[q->head++];
                q->n--;
                answer(b, &it, NULL, -1, "out of memory");
            }
            continue;
        }
        if (!text) {
            free(s);
            gt_json_text_free(&t);
            answer_all(b, items, n, "out of memory");
            continue;
        }
        *s = (pgbatch_sent_t){b, items, n};
        const char *params[] = {text};
        if (gt_pg_query(*b->pg, b->sql, 1, params, on_answer, s) == 0) {
            b->sending = 1;
        } else {
            free(s);
            answer_all(b, items, n, "cannot send query");
        }
        gt_json_text_free(&t);
    }
}

gt_pgbatch_t *gt_pgbatch_new(gt_pg_t **pg, const char *sql, gt_pgbatch_done done)
{
    gt_pgbatch_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
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
    if (!json_is_array(rows) || queue_push(&b->waiting, (pgbatch_item_t){item, rows}) != 0) {
        json_decref(rows);
        return -1;
    }
    pgbatch_send(b);
    return 0;
}

void gt_pgbatch_free(gt_pgbatch_t *b)
{
    if (!b)
        return;
    /* Items still queued were never sent (the owner frees the connection
     * first, which answers the one in flight): they are the owner's to drop. */
    for (int i = 0; i < b->waiting.n; i++)
        json_decref(b->waiting.v[b->waiting.head + i].rows);
    for (int i = 0; i < b->alone.n; i++)
        json_decref(b->alone.v[b->alone.head + i].rows);
    free(b->waiting.v);
    free(b->alone.v);
    free(b);
}
