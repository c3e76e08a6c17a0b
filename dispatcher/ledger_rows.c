/* ledger_rows.c - a batch of usage events as one PostgreSQL array literal per
 * column (see ledger_rows.h): cheap to build and for the server to read. */
#include "ledger_rows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct col {
    char *buf;
    size_t len, cap;
} col_t;

struct gt_ledger_rows {
    col_t cols[GT_LEDGER_NPARAMS];
    int n;
};

/* The event's members per column; the four from FIRST_DURATION on are
 * members of its durations object. */
#define FIRST_DURATION 16
static const char *const col_keys[GT_LEDGER_NPARAMS] = {
    "event_id",    "request_id",    "task_id",           "tenant_id",          "model",
    "provider",    "pool",          "allocation_id",     "allocation_seconds", "tflops",
    "vram_mb",     "prompt_tokens", "completion_tokens", "request_bytes",      "response_bytes",
    "attempts",    "allocate_ms",   "inference_ms",      "release_ms",         "total_ms",
    "occurred_at", "trace_id"};

static int col_put(col_t *c, const char *s, size_t n)
{
    if (c->len + n + 2 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (c->len + n + 2 > cap)
            cap *= 2;
        char *b = realloc(c->buf, cap);
        if (!b)
            return -1;
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, s, n);
    c->len += n;
    c->buf[c->len] = '\0';
    return 0;
}

/* Appends s as a quoted array element ("..." with \ and " escaped). */
static int col_put_quoted(col_t *c, const char *s, size_t n)
{
    if (col_put(c, "\"", 1) != 0)
        return -1;
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '"' && s[i] != '\\')
            continue;
        if (col_put(c, s + from, i - from) != 0 || col_put(c, "\\", 1) != 0)
            return -1;
        from = i;
    }
    return col_put(c, s + from, n - from) != 0 ? -1 : col_put(c, "\"", 1);
}

/* Appends the decimal spelling of i (as %lld would print it, without printf:
 * most of a usage event is integers). */
static int col_put_int(col_t *c, json_int_t i)
{
    char num[24];
    char *p = num + sizeof(num);
    /* negated as unsigned: the most negative value has no positive counterpart */
    unsigned long long u = i < 0 ? 0ULL - (unsigned long long)i : (unsigned long long)i;
    do {
        *--p = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    if (i < 0)
        *--p = '-';
    return col_put(c, p, (size_t)(num + sizeof(num) - p));
}

static int col_put_value(col_t *c, const json_t *v)
{
    char num[64];
    int k;
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_STRING: return col_put_quoted(c, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return col_put_int(c, json_integer_value(v));
    case JSON_REAL: /* the digits jansson would print: the same numeric as before */
        k = snprintf(num, sizeof(num), "%.17g", json_real_value(v));
        return col_put(c, num, (size_t)k);
    case JSON_TRUE: return col_put(c, "true", 4);
    case JSON_FALSE: return col_put(c, "false", 5);
    case JSON_OBJECT:
    case JSON_ARRAY: {
        char *text = json_dumps(v, JSON_COMPACT);
        int rc = text ? col_put_quoted(c, text, strlen(text)) : -1;
        free(text);
        return rc;
    }
    default: return col_put(c, "NULL", 4);
    }
}

gt_ledger_rows_t *gt_ledger_rows_new(void)
{
    return calloc(1, sizeof(gt_ledger_rows_t));
}

int gt_ledger_rows_add(gt_ledger_rows_t *r, const json_t *ev)
{
    const json_t *durations = json_object_get(ev, "durations");
    for (int i = 0; i < GT_LEDGER_NPARAMS; i++) {
        col_t *c = &r->cols[i];
        const json_t *v = json_object_get(
            i >= FIRST_DURATION && i < FIRST_DURATION + 4 ? durations : ev, col_keys[i]);
        if (col_put(c, r->n ? "," : "{", 1) != 0 || col_put_value(c, v) != 0)
            return -1;
    }
    r->n++;
    return 0;
}

int gt_ledger_rows_count(const gt_ledger_rows_t *r)
{
    return r->n;
}

int gt_ledger_rows_params(gt_ledger_rows_t *r, const char *params[GT_LEDGER_NPARAMS])
{
    for (int i = 0; i < GT_LEDGER_NPARAMS; i++) {
        col_t *c = &r->cols[i];
        /* the closing brace is written past len, so a later add overwrites it */
        if (col_put(c, r->n ? "}" : "{}", r->n ? 1 : 2) != 0)
            return -1;
        c->len -= r->n ? 1 : 2;
        params[i] = c->buf;
    }
    return 0;
}

void gt_ledger_rows_free(gt_ledger_rows_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < GT_LEDGER_NPARAMS; i++)
        free(r->cols[i].buf);
    free(r);
}
