/* ledger_rows.c - a batch of usage events as one PostgreSQL array per column
 * (see ledger_rows.h): cheap to build and for the server to read. Text and
 * integer columns go in the arrays' binary format (array input in text was
 * an eighth of the statement: quoting, two passes per array, an input
 * function per element); numeric and timestamptz keep the text format, which
 * the server parses as it always did. */
#include "ledger_rows.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* element types (pg_type OIDs) of the binary columns */
#define OID_INT8 20
#define OID_INT4 23
#define OID_TEXT 25
/* a binary array's header: ndim, has-nulls flag, element type, then the one
 * dimension's length and lower bound (int32 each, network order) */
#define BIN_HEADER 20

typedef enum { COL_TEXT, COL_INT8, COL_INT4, COL_LITERAL } col_kind_t;

typedef struct col {
    char *buf;
    size_t len, cap;
    col_kind_t kind; /* COL_LITERAL: a text array literal; the others binary */
    int has_null;
} col_t;

struct gt_ledger_rows {
    col_t cols[GT_LEDGER_NPARAMS];
    int n;
};

/* Each column's array as the statement's casts declare it. */
static const col_kind_t col_kinds[GT_LEDGER_NPARAMS] = {
    COL_TEXT,    COL_TEXT,    COL_TEXT, COL_TEXT, COL_TEXT,    COL_TEXT, COL_TEXT, COL_TEXT,
    COL_LITERAL, COL_LITERAL, COL_INT8, COL_INT8, COL_INT8,    COL_INT8, COL_INT8, COL_INT4,
    COL_INT8,    COL_INT8,    COL_INT8, COL_INT8, COL_LITERAL, COL_TEXT};

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

static int col_put_be(col_t *c, uint64_t v, int bytes)
{
    char b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (char)(v >> (8 * (bytes - 1 - i)));
    return col_put(c, b, (size_t)bytes);
}

static uint64_t get_be(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

/* A binary element: its length (-1: NULL) and bytes. */
static int col_put_elem(col_t *c, const char *s, size_t n)
{
    if (n > INT32_MAX)
        return -1;
    return col_put_be(c, (uint64_t)(uint32_t)n, 4) != 0 ? -1 : col_put(c, s, n);
}

static int col_put_null(col_t *c)
{
    c->has_null = 1;
    return col_put_be(c, UINT32_MAX, 4);
}

/* An integer column that meets a value of another kind (a string, a real, an
 * out-of-range attempts) goes on as a text literal, so that the server casts
 * it as before (and a bad value fails the statement as before): the elements
 * so far are rewritten as text. */
static int col_to_literal(col_t *c, int nrows)
{
    col_t t = {.kind = COL_LITERAL};
    int bytes = c->kind == COL_INT4 ? 4 : 8;
    size_t at = BIN_HEADER;
    for (int i = 0; i < nrows; i++) {
        uint32_t len = (uint32_t)get_be((const unsigned char *)c->buf + at, 4);
        at += 4;
        int rc = col_put(&t, i ? "," : "{", 1);
        if (rc == 0 && len == UINT32_MAX)
            rc = col_put(&t, "NULL", 4);
        else if (rc == 0) {
            uint64_t u = get_be((const unsigned char *)c->buf + at, bytes);
            json_int_t v = bytes == 4 ? (json_int_t)(int32_t)(uint32_t)u : (json_int_t)(int64_t)u;
            rc = col_put_int(&t, v);
            at += (size_t)bytes;
        }
        if (rc != 0) {
            free(t.buf);
            return -1;
        }
    }
    free(c->buf);
    *c = t;
    return 0;
}

/* Appends v to binary column c (row nrows of the batch). */
static int col_put_binary(col_t *c, const json_t *v, int nrows)
{
    char num[64];
    int k;
    if (!v || json_is_null(v))
        return col_put_null(c);
    if (c->kind == COL_TEXT) { /* the text the literal would have held */
        switch (json_typeof(v)) {
        case JSON_STRING: return col_put_elem(c, json_string_value(v), json_string_length(v));
        case JSON_INTEGER: {
            col_t t = {0};
            int rc =
                col_put_int(&t, json_integer_value(v)) != 0 ? -1 : col_put_elem(c, t.buf, t.len);
            free(t.buf);
            return rc;
        }
        case JSON_REAL:
            k = snprintf(num, sizeof(num), "%.17g", json_real_value(v));
            return col_put_elem(c, num, (size_t)k);
        case JSON_TRUE: return col_put_elem(c, "true", 4);
        case JSON_FALSE: return col_put_elem(c, "false", 5);
        default: {
            char *text = json_dumps(v, JSON_COMPACT);
            int rc = text ? col_put_elem(c, text, strlen(text)) : -1;
            free(text);
            return rc;
        }
        }
    }
    json_int_t i = json_is_integer(v) ? json_integer_value(v) : 0;
    if (!json_is_integer(v) || (c->kind == COL_INT4 && (i < INT32_MIN || i > INT32_MAX))) {
        if (col_to_literal(c, nrows) != 0)
            return -1;
        return col_put(c, nrows ? "," : "{", 1) != 0 ? -1 : col_put_value(c, v);
    }
    int bytes = c->kind == COL_INT4 ? 4 : 8;
    return col_put_be(c, (uint64_t)bytes, 4) != 0 ? -1 : col_put_be(c, (uint64_t)i, bytes);
}

gt_ledger_rows_t *gt_ledger_rows_new(void)
{
    gt_ledger_rows_t *r = calloc(1, sizeof(gt_ledger_rows_t));
    if (!r)
        return NULL;
    for (int i = 0; i < GT_LEDGER_NPARAMS; i++) {
        r->cols[i].kind = col_kinds[i];
        /* room for the header, written by gt_ledger_rows_params */
        if (r->cols[i].kind != COL_LITERAL && col_put(&r->cols[i], "", 0) == 0)
            r->cols[i].len = BIN_HEADER;
    }
    return r;
}

int gt_ledger_rows_add(gt_ledger_rows_t *r, const json_t *ev)
{
    const json_t *durations = json_object_get(ev, "durations");
    for (int i = 0; i < GT_LEDGER_NPARAMS; i++) {
        col_t *c = &r->cols[i];
        const json_t *v = json_object_get(
            i >= FIRST_DURATION && i < FIRST_DURATION + 4 ? durations : ev, col_keys[i]);
        if (c->kind != COL_LITERAL
                ? col_put_binary(c, v, r->n) != 0
                : col_put(c, r->n ? "," : "{", 1) != 0 || col_put_value(c, v) != 0)
            return -1;
    }
    r->n++;
    return 0;
}

int gt_ledger_rows_count(const gt_ledger_rows_t *r)
{
    return r->n;
}

int gt_ledger_rows_params(gt_ledger_rows_t *r, const char *params[GT_LEDGER_NPARAMS],
                          int lengths[GT_LEDGER_NPARAMS], int formats[GT_LEDGER_NPARAMS])
{
    for (int i = 0; i < GT_LEDGER_NPARAMS; i++) {
        col_t *c = &r->cols[i];
        if (c->kind == COL_LITERAL) {
            /* the closing brace is written past len, so a later add overwrites it */
            if (col_put(c, r->n ? "}" : "{}", r->n ? 1 : 2) != 0)
                return -1;
            c->len -= r->n ? 1 : 2;
            params[i] = c->buf;
            lengths[i] = 0;
            formats[i] = 0;
            continue;
        }
        if (!c->buf || c->len > INT32_MAX)
            return -1; /* the header's room could not be had */
        static const uint32_t oids[] = {
            [COL_TEXT] = OID_TEXT, [COL_INT8] = OID_INT8, [COL_INT4] = OID_INT4};
        /* no rows: a zero-dimensional (empty) array, the header's first 12 bytes */
        uint32_t head[5] = {r->n ? 1 : 0, (uint32_t)c->has_null, oids[c->kind], (uint32_t)r->n, 1};
        size_t at = 0;
        for (int h = 0; h < 5; h++, at += 4)
            for (int b = 0; b < 4; b++)
                c->buf[at + (size_t)b] = (char)(head[h] >> (8 * (3 - b)));
        params[i] = c->buf;
        lengths[i] = r->n ? (int)c->len : 12;
        formats[i] = 1;
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
