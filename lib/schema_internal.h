/* schema_internal.h - the compiled form of a JSON Schema, shared by the
 * compiler (schema_compile.c) and the validator (schema_validate.c), and the
 * helpers both use (schema_value.c, schema_format.c); not a public header. */
#ifndef GT_SCHEMA_INTERNAL_H
#define GT_SCHEMA_INTERNAL_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>

#include "schema.h"
#include "schema_regex.h"

/* Validation recursion limit in schema nodes: stops $ref loops that consume
 * no instance (e.g. {"allOf": [{"$ref": "#"}]}) before the C stack does. */
#define GT_SCHEMA_MAX_DEPTH 2000
/* Longest schema location kept while compiling (escaped JSON pointer). */
#define GT_SCHEMA_LOC_MAX 2048
/* Messages listing allowed values are cut after this many bytes. */
#define GT_SCHEMA_LIST_MAX 240

enum {
    T_NULL = 1 << 0,
    T_BOOLEAN = 1 << 1,
    T_OBJECT = 1 << 2,
    T_ARRAY = 1 << 3,
    T_NUMBER = 1 << 4,
    T_INTEGER = 1 << 5,
    T_STRING = 1 << 6,
};

enum { N_TRUE, N_FALSE, N_SCHEMA, N_REF };

typedef struct node node_t;

typedef struct num {
    int present;
    int isint;
    long long i;
    double d;
} num_t;

typedef struct prop {
    const char *name;
    node_t *schema;
} prop_t;

typedef struct patprop {
    gt__schema_re_t *re;
    const char *src;
    node_t *schema;
} patprop_t;

typedef struct dep {
    const char *name;
    node_t *schema;      /* schema dependency, or NULL */
    const json_t *names; /* property dependency: array of strings, or NULL */
} dep_t;

typedef struct nodelist {
    node_t **v;
    size_t n;
} nodelist_t;

struct node {
    int kind;
    node_t *ref; /* N_REF: target */
    /* Which keyword groups are present, to skip whole groups fast. */
    int has_num, has_str, has_arr, has_obj, has_comb;

    unsigned types; /* 0: no type keyword */
    char *types_msg;
    const json_t *enumv;
    char *enum_msg;
    const json_t *constv;
    char *const_msg;

    num_t minimum, maximum, xmin, xmax, multiple;

    size_t min_len, max_len;
    gt__schema_re_t *pattern;
    const char *pattern_src;
    int datetime;

    node_t *items;        /* items as one schema */
    nodelist_t items_arr; /* items as an array of schemas */
    int items_is_array;
    node_t *additional_items;
    node_t *contains;
    size_t min_items, max_items;
    int unique;

    prop_t *props; /* sorted by name for bsearch */
    size_t nprops;
    patprop_t *pprops;
    size_t npprops;
    node_t *additional_props;
    node_t *property_names;
    const char **required;
    size_t nrequired;
    size_t min_props, max_props;
    dep_t *deps;
    size_t ndeps;

    nodelist_t all_of, any_of, one_of;
    node_t *not_, *if_, *then_, *else_;
    const char *description; /* says why in a "not" failure */
};

struct gt_schema {
    json_t *doc;
    node_t *root;
    node_t **nodes; /* every node, for freeing */
    size_t nnodes, capnodes;
};

/* Fixed buffer; output is truncated, always NUL-terminated when cap > 0. */
typedef struct sbuf {
    char *p;
    size_t cap, len;
} sbuf_t;

/* Appends to b, truncating at its capacity; these cannot fail. */
void gt__sb_putn(sbuf_t *b, const char *s, size_t n);
void gt__sb_puts(sbuf_t *b, const char *s);
void gt__sb_vprintf(sbuf_t *b, const char *fmt, va_list ap);
void gt__sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s escaped as a JSON pointer token (~0, ~1). */
void gt__sb_put_token(sbuf_t *b, const char *s);

/* A JSON number as JSON Schema compares it (integers exactly). */
num_t gt__schema_num_of(const json_t *j);
/* Returns <0, 0 or >0 as a is less than, equal to or greater than b. */
int gt__schema_num_cmp(const num_t *a, const num_t *b);
/* The T_* bits of x's type (an integral real is also an integer). */
unsigned gt__schema_inst_types(const json_t *x);
/* JSON Schema equality: like json_equal() but numbers compare by value (1 == 1.0). */
int gt__schema_json_eq(const json_t *a, const json_t *b);

/* qsort/bsearch order of prop_t by name (strcmp). */
int gt__schema_prop_cmp(const void *a, const void *b);

/* Whether s[0..len) is an RFC 3339 date-time (format "date-time"). */
int gt__schema_is_datetime(const char *s, size_t len);

#endif
