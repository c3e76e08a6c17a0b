/* schema.c - JSON Schema (draft 7 subset) compiled once, validated without allocation. */

/*
 * Contract details beyond schema.h:
 * - gt_schema_new() keeps a reference on doc and borrows strings and values
 *   from it: the caller must not modify doc afterwards (it may drop its own
 *   reference). It fails, never ignores, on a keyword it does not implement,
 *   a remote or $id-relative $ref, a $id below the root, or a key that is not
 *   a keyword unless some local $ref points into it (a definitions container).
 * - gt_schema_validate() only reads the compiled schema: one gt_schema_t may be
 *   used by many threads at once. It allocates nothing except for
 *   propertyNames (a temporary string per key) and on the error path.
 * - pattern/patternProperties are ECMA 262 regexes in the standard; PCRE2
 *   runs them as written, in UTF mode (schema_regex.h says with which options).
 *   Known differences from ECMAScript: \s, \d and \w are ASCII-only, and "."
 *   matches U+2028/U+2029.
 * - format "date-time" is checked (RFC 3339 section 5.6, leap seconds only at
 *   23:59:60 UTC); every other format is an annotation.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "embed.h"
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

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"null", T_NULL},     {"boolean", T_BOOLEAN}, {"object", T_OBJECT}, {"array", T_ARRAY},
    {"number", T_NUMBER}, {"integer", T_INTEGER}, {"string", T_STRING},
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

/* ---- small string builders ---- */

/* Fixed buffer; output is truncated, always NUL-terminated when cap > 0. */
typedef struct sbuf {
    char *p;
    size_t cap, len;
} sbuf_t;

static void sb_putn(sbuf_t *b, const char *s, size_t n)
{
    if (!b->p || b->cap == 0)
        return;
    size_t room = b->cap - 1 - b->len;
    if (n > room)
        n = room;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf_t *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

static void sb_vprintf(sbuf_t *b, const char *fmt, va_list ap)
{
    if (!b->p || b->cap == 0)
        return;
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    if (n < 0)
        return;
    b->len += (size_t)n;
    if (b->len > b->cap - 1)
        b->len = b->cap - 1;
}

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(b, fmt, ap);
    va_end(ap);
}

static void sb_put_token(sbuf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '~')
            sb_puts(b, "~0");
        else if (*s == '/')
            sb_puts(b, "~1");
        else
            sb_putn(b, s, 1);
    }
}

/* Shortest %g form that reads back as the same double. */
static void fmt_num(const num_t *n, char *out, size_t len)
{
    if (n->isint) {
        snprintf(out, len, "%lld", n->i);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, len, "%.*g", prec, n->d);
        if (strtod(out, NULL) == n->d)
            return;
    }
}

/* ---- JSON helpers ---- */

static num_t num_of(const json_t *j)
{
    num_t n = {1, 0, 0, 0.0};
    if (json_is_integer(j)) {
        n.isint = 1;
        n.i = json_integer_value(j);
        n.d = (double)n.i;
    } else {
        n.d = json_real_value(j);
    }
    return n;
}

static int num_cmp(const num_t *a, const num_t *b)
{
    if (a->isint && b->isint)
        return (a->i > b->i) - (a->i < b->i);
    return (a->d > b->d) - (a->d < b->d);
}

static int real_is_integral(double d)
{
    return isfinite(d) && d == floor(d);
}

static unsigned inst_types(const json_t *x)
{
    switch (json_typeof(x)) {
    case JSON_OBJECT: return T_OBJECT;
    case JSON_ARRAY: return T_ARRAY;
    case JSON_STRING: return T_STRING;
    case JSON_INTEGER: return T_NUMBER | T_INTEGER;
    case JSON_REAL: return real_is_integral(json_real_value(x)) ? T_NUMBER | T_INTEGER : T_NUMBER;
    case JSON_TRUE:
    case JSON_FALSE: return T_BOOLEAN;
    case JSON_NULL: return T_NULL;
    }
    return 0;
}

/* JSON Schema equality: like json_equal() but numbers compare by value (1 == 1.0). */
static int json_eq(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        num_t x = num_of(a), y = num_of(b);
        if (x.isint != y.isint) {
            /* An integral real equals an integer when it converts exactly. */
            const num_t *r = x.isint ? &y : &x, *i = x.isint ? &x : &y;
            if (!real_is_integral(r->d) || r->d < -9.2e18 || r->d > 9.2e18)
                return 0;
            return (long long)r->d == i->i;
        }
        return num_cmp(&x, &y) == 0;
    }
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_STRING: {
        size_t n = json_string_length(a);
        return n == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), n) == 0;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (!json_eq(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v) {
            const json_t *w = json_object_get(b, k);
            if (!w || !json_eq(v, w))
                return 0;
        }
        return 1;
    }
    default: return 1; /* true, false, null */
    }
}

static size_t utf8_length(const char *s, size_t n)
{
    size_t cp = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            cp++;
    return cp;
}

/* ---- RFC 3339 date-time ---- */

static int is_datetime(const char *s, size_t len)
{
    int64_t ms;
    return strlen(s) == len && gt_clock_parse(s, &ms) == 0;
}

/* ---- compiler ---- */

typedef struct ref_pending {
    node_t *node;
    char *ptr;   /* escaped JSON pointer, "" for the root */
    char *where; /* location of the $ref, for messages */
} ref_pending_t;

typedef struct map_entry {
    const json_t *doc;
    node_t *node;
} map_entry_t;

typedef struct cctx {
    gt_schema_t *s;
    char *err;
    size_t errlen;
    char loc[GT_SCHEMA_LOC_MAX];
    size_t loclen;
    int loc_overflow;
    map_entry_t *map;
    size_t nmap, capmap;
    ref_pending_t *refs;
    size_t nrefs, caprefs;
    char **unknown; /* locations of non-keyword keys */
    size_t nunknown, capunknown;
    char **targets; /* locations that $refs resolved to */
    size_t ntargets, captargets;
    const char *base; /* root $id without its fragment */
    size_t baselen;
} cctx_t;

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 16;
    void *p = realloc(*v, c * size);
    if (!p)
        return -1;
    *v = p;
    *cap = c;
    return 0;
}

static int cerr(cctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cerr(cctx_t *c, const char *fmt, ...)
{
    if (!c->err || c->errlen == 0 || c->err[0])
        return -1; /* keep the first error */
    sbuf_t b = {c->err, c->errlen, 0};
    va_list ap;
    sb_printf(&b, "#%s: ", c->loc);
    va_start(ap, fmt);
    sb_vprintf(&b, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t loc_push(cctx_t *c, const char *tok)
{
    size_t old = c->loclen;
    sbuf_t b = {c->loc, sizeof(c->loc), c->loclen};
    sb_putn(&b, "/", 1);
    sb_put_token(&b, tok);
    if (b.len >= sizeof(c->loc) - 1)
        c->loc_overflow = 1;
    c->loclen = b.len;
    return old;
}

static size_t loc_push_idx(cctx_t *c, size_t i)
{
    char tok[32];
    snprintf(tok, sizeof(tok), "%zu", i);
    return loc_push(c, tok);
}

static void loc_pop(cctx_t *c, size_t old)
{
    c->loclen = old;
    c->loc[old] = '\0';
}

static node_t *node_new(cctx_t *c, int kind)
{
    gt_schema_t *s = c->s;
    if (grow((void **)&s->nodes, &s->capnodes, s->nnodes, sizeof(*s->nodes)))
        return NULL;
    node_t *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->kind = kind;
    n->max_len = n->max_items = n->max_props = SIZE_MAX;
    s->nodes[s->nnodes++] = n;
    return n;
}

static void node_free(node_t *n)
{
    free(n->types_msg);
    free(n->enum_msg);
    free(n->const_msg);
    gt__schema_re_free(n->pattern);
    free(n->items_arr.v);
    free(n->props);
    for (size_t i = 0; i < n->npprops; i++)
        gt__schema_re_free(n->pprops[i].re);
    free(n->pprops);
    free(n->required);
    free(n->deps);
    free(n->all_of.v);
    free(n->any_of.v);
    free(n->one_of.v);
    free(n);
}

static node_t *compile(cctx_t *c, json_t *j);

/* Compiles the subschema under keyword kw (and optional extra token). */
static node_t *compile_at(cctx_t *c, json_t *j, const char *kw, const char *tok)
{
    size_t old = loc_push(c, kw);
    if (tok)
        loc_push(c, tok);
    node_t *n = compile(c, j);
    loc_pop(c, old);
    return n;
}

static int compile_list(cctx_t *c, json_t *v, const char *kw, nodelist_t *out, int allow_empty)
{
    size_t old = loc_push(c, kw);
    int rc = -1;
    if (!json_is_array(v) || (!allow_empty && json_array_size(v) == 0)) {
        cerr(c, "must be a non-empty array of schemas");
        goto out;
    }
    out->n = json_array_size(v);
    out->v = calloc(out->n ? out->n : 1, sizeof(*out->v));
    if (!out->v) {
        cerr(c, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < out->n; i++) {
        size_t o2 = loc_push_idx(c, i);
        out->v[i] = compile(c, json_array_get(v, i));
        loc_pop(c, o2);
        if (!out->v[i])
            goto out;
    }
    rc = 0;
out:
    loc_pop(c, old);
    return rc;
}

static int get_count(cctx_t *c, json_t *v, const char *kw, size_t *out)
{
    /* Draft 7 allows 2.0 for a count; a fraction or negative is a schema bug. */
    if (!(inst_types(v) & T_INTEGER) || json_number_value(v) < 0) {
        size_t old = loc_push(c, kw);
        cerr(c, "must be a non-negative integer");
        loc_pop(c, old);
        return -1;
    }
    double d = json_number_value(v);
    *out = json_is_integer(v) ? (size_t)json_integer_value(v) : d >= 1.8e19 ? SIZE_MAX : (size_t)d;
    return 0;
}

static int get_num(cctx_t *c, json_t *v, const char *kw, num_t *out)
{
    if (!json_is_number(v) || (json_is_real(v) && !isfinite(json_real_value(v)))) {
        size_t old = loc_push(c, kw);
        cerr(c, "must be a number%s",
             json_is_boolean(v) ? " (draft 4 boolean form is not supported)" : "");
        loc_pop(c, old);
        return -1;
    }
    *out = num_of(v);
    return 0;
}

/* Compact JSON text of v, cut at GT_SCHEMA_LIST_MAX; appends to d. */
static void ds_put_json(gt_buf_t *d, const json_t *v)
{
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!t) {
        d->oom = 1;
        return;
    }
    if (strlen(t) > GT_SCHEMA_LIST_MAX) {
        gt_buf_putn(d, t, GT_SCHEMA_LIST_MAX);
        gt_buf_puts(d, "...");
    } else {
        gt_buf_puts(d, t);
    }
    free(t);
}

static int kw_type(cctx_t *c, node_t *n, json_t *v)
{
    gt_buf_t msg = {0};
    json_t *one = v;
    size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
    gt_buf_puts(&msg, "must be ");
    for (size_t i = 0; i < cnt; i++) {
        if (json_is_array(v))
            one = json_array_get(v, i);
        size_t k, nt = sizeof(type_names) / sizeof(type_names[0]);
        for (k = 0; k < nt; k++)
            if (json_is_string(one) && strcmp(json_string_value(one), type_names[k].name) == 0)
                break;
        if (k == nt) {
            size_t old = loc_push(c, "type");
            cerr(c, "must be a type name or an array of type names");
            loc_pop(c, old);
            free(msg.p);
            return -1;
        }
        n->types |= type_names[k].bit;
        if (i)
            gt_buf_puts(&msg, i + 1 == cnt ? " or " : ", ");
        gt_buf_puts(&msg, type_names[k].name);
    }
    if (cnt == 0 || msg.oom) {
        free(msg.p);
        return cerr(c, "\"type\" must name at least one type");
    }
    n->types_msg = msg.p;
    return 0;
}

static int kw_enum(cctx_t *c, node_t *n, json_t *v)
{
    gt_buf_t msg = {0};
    if (!json_is_array(v))
        return cerr(c, "\"enum\" must be an array");
    gt_buf_puts(&msg, json_array_size(v) == 1 ? "must be " : "must be one of ");
    for (size_t i = 0; i < json_array_size(v) && !msg.oom; i++) {
        if (i)
            gt_buf_puts(&msg, ", ");
        if (msg.len > GT_SCHEMA_LIST_MAX) {
            gt_buf_puts(&msg, "...");
            break;
        }
        ds_put_json(&msg, json_array_get(v, i));
    }
    if (msg.oom) {
        free(msg.p);
        return cerr(c, "out of memory");
    }
    n->enumv = v;
    n->enum_msg = msg.p;
    return 0;
}

static int kw_const(cctx_t *c, node_t *n, json_t *v)
{
    gt_buf_t msg = {0};
    gt_buf_puts(&msg, "must be ");
    ds_put_json(&msg, v);
    if (msg.oom) {
        free(msg.p);
        return cerr(c, "out of memory");
    }
    n->constv = v;
    n->const_msg = msg.p;
    return 0;
}

static int prop_cmp(const void *a, const void *b)
{
    return strcmp(((const prop_t *)a)->name, ((const prop_t *)b)->name);
}

static int kw_properties(cctx_t *c, node_t *n, json_t *v)
{
    const char *k;
    json_t *sub;
    if (!json_is_object(v))
        return cerr(c, "\"properties\" must be an object");
    n->props = calloc(json_object_size(v) + 1, sizeof(*n->props));
    if (!n->props)
        return cerr(c, "out of memory");
    json_object_foreach(v, k, sub) {
        prop_t *p = &n->props[n->nprops++];
        p->name = k;
        if (!(p->schema = compile_at(c, sub, "properties", k)))
            return -1;
    }
    qsort(n->props, n->nprops, sizeof(*n->props), prop_cmp);
    return 0;
}

static int kw_pattern_properties(cctx_t *c, node_t *n, json_t *v)
{
    const char *k;
    json_t *sub;
    if (!json_is_object(v))
        return cerr(c, "\"patternProperties\" must be an object");
    n->pprops = calloc(json_object_size(v) + 1, sizeof(*n->pprops));
    if (!n->pprops)
        return cerr(c, "out of memory");
    json_object_foreach(v, k, sub) {
        patprop_t *p = &n->pprops[n->npprops++];
        char why[160];
        p->src = k;
        if (!(p->re = gt__schema_re_compile(k, why, sizeof(why)))) {
            size_t old = loc_push(c, "patternProperties");
            cerr(c, "cannot use pattern \"%s\": %s", k, why);
            loc_pop(c, old);
            return -1;
        }
        if (!(p->schema = compile_at(c, sub, "patternProperties", k)))
            return -1;
    }
    return 0;
}

static int kw_required(cctx_t *c, node_t *n, json_t *v)
{
    if (!json_is_array(v))
        return cerr(c, "\"required\" must be an array of strings");
    n->required = calloc(json_array_size(v) + 1, sizeof(*n->required));
    if (!n->required)
        return cerr(c, "out of memory");
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s))
            return cerr(c, "\"required\" must be an array of strings");
        n->required[n->nrequired++] = json_string_value(s);
    }
    return 0;
}

static int kw_dependencies(cctx_t *c, node_t *n, json_t *v)
{
    const char *k;
    json_t *sub;
    if (!json_is_object(v))
        return cerr(c, "\"dependencies\" must be an object");
    n->deps = calloc(json_object_size(v) + 1, sizeof(*n->deps));
    if (!n->deps)
        return cerr(c, "out of memory");
    json_object_foreach(v, k, sub) {
        dep_t *d = &n->deps[n->ndeps++];
        d->name = k;
        if (json_is_array(sub)) {
            for (size_t i = 0; i < json_array_size(sub); i++)
                if (!json_is_string(json_array_get(sub, i))) {
                    size_t old = loc_push(c, "dependencies");
                    loc_push(c, k);
                    cerr(c, "must be a schema or an array of property names");
                    loc_pop(c, old);
                    return -1;
                }
            d->names = sub;
        } else if (!(d->schema = compile_at(c, sub, "dependencies", k))) {
            return -1;
        }
    }
    return 0;
}

static int kw_definitions(cctx_t *c, json_t *v)
{
    const char *k;
    json_t *sub;
    if (!json_is_object(v))
        return cerr(c, "\"definitions\" must be an object");
    json_object_foreach(v, k, sub) {
        if (!compile_at(c, sub, "definitions", k))
            return -1;
    }
    return 0;
}

static int is_annotation(const char *k)
{
    static const char *const names[] = {
        "title",    "description", "default",          "examples",        "$comment",
        "readOnly", "writeOnly",   "contentMediaType", "contentEncoding",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(k, names[i]) == 0)
            return 1;
    return 0;
}

static int hexval(const char *s, int n, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        char c = s[i];
        int x = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (x < 0)
            return -1;
        v = v * 16 + (unsigned)x;
    }
    *out = v;
    return 0;
}

/* Percent-decodes a URI fragment. Returns a new string or NULL. */
static char *pct_decode(const char *s)
{
    char *out = malloc(strlen(s) + 1), *o = out;
    unsigned v;
    if (!out)
        return NULL;
    while (*s) {
        if (*s == '%' && s[1] && s[2] && hexval(s + 1, 2, &v) == 0) {
            *o++ = (char)v;
            s += 3;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

static int kw_ref(cctx_t *c, node_t *n, json_t *v)
{
    const char *r = json_string_value(v);
    char *ptr;
    if (!r)
        return cerr(c, "\"$ref\" must be a string");
    /* "<root $id>#..." is the same document; anything else is remote. */
    if (c->base && strncmp(r, c->base, c->baselen) == 0 && (r[c->baselen] == '#' || !r[c->baselen]))
        r += c->baselen;
    if (*r == '\0')
        r = "#";
    if (*r != '#')
        return cerr(c,
                    "$ref \"%s\": remote and relative references are not supported "
                    "(only \"#\" and \"#/json/pointer\")",
                    json_string_value(v));
    if (!(ptr = pct_decode(r + 1)))
        return cerr(c, "out of memory");
    if (*ptr && *ptr != '/') {
        free(ptr);
        return cerr(c, "$ref \"%s\": plain-name fragments are not supported", json_string_value(v));
    }
    if (grow((void **)&c->refs, &c->caprefs, c->nrefs, sizeof(*c->refs))) {
        free(ptr);
        return cerr(c, "out of memory");
    }
    c->refs[c->nrefs].node = n;
    c->refs[c->nrefs].ptr = ptr;
    c->refs[c->nrefs].where = strdup(c->loc);
    c->nrefs++;
    n->kind = N_REF;
    return 0;
}

static int map_add(cctx_t *c, const json_t *j, node_t *n)
{
    if (grow((void **)&c->map, &c->capmap, c->nmap, sizeof(*c->map)))
        return -1;
    c->map[c->nmap].doc = j;
    c->map[c->nmap].node = n;
    c->nmap++;
    return 0;
}

static int str_add(char ***v, size_t *n, size_t *cap, const char *s)
{
    char *d = strdup(s);
    if (!d || grow((void **)v, cap, *n, sizeof(**v))) {
        free(d);
        return -1;
    }
    (*v)[(*n)++] = d;
    return 0;
}

static int compile_keyword(cctx_t *c, node_t *n, const char *k, json_t *v, int root)
{
    char why[160];

    if (strcmp(k, "type") == 0)
        return kw_type(c, n, v);
    if (strcmp(k, "enum") == 0)
        return kw_enum(c, n, v);
    if (strcmp(k, "const") == 0)
        return kw_const(c, n, v);
    if (strcmp(k, "minimum") == 0)
        return n->has_num = 1, get_num(c, v, k, &n->minimum);
    if (strcmp(k, "maximum") == 0)
        return n->has_num = 1, get_num(c, v, k, &n->maximum);
    if (strcmp(k, "exclusiveMinimum") == 0)
        return n->has_num = 1, get_num(c, v, k, &n->xmin);
    if (strcmp(k, "exclusiveMaximum") == 0)
        return n->has_num = 1, get_num(c, v, k, &n->xmax);
    if (strcmp(k, "multipleOf") == 0) {
        n->has_num = 1;
        if (get_num(c, v, k, &n->multiple))
            return -1;
        if (n->multiple.d <= 0)
            return cerr(c, "\"multipleOf\" must be greater than 0");
        return 0;
    }
    if (strcmp(k, "minLength") == 0)
        return n->has_str = 1, get_count(c, v, k, &n->min_len);
    if (strcmp(k, "maxLength") == 0)
        return n->has_str = 1, get_count(c, v, k, &n->max_len);
    if (strcmp(k, "pattern") == 0) {
        if (!json_is_string(v))
            return cerr(c, "\"pattern\" must be a string");
        if (!(n->pattern = gt__schema_re_compile(json_string_value(v), why, sizeof(why))))
            return cerr(c, "cannot use pattern \"%s\": %s", json_string_value(v), why);
        n->has_str = 1;
        n->pattern_src = json_string_value(v);
        return 0;
    }
    if (strcmp(k, "format") == 0) {
        if (!json_is_string(v))
            return cerr(c, "\"format\" must be a string");
        if (strcmp(json_string_value(v), "date-time") == 0)
            n->datetime = n->has_str = 1;
        return 0; /* other formats are annotations */
    }
    if (strcmp(k, "items") == 0) {
        n->has_arr = 1;
        if (json_is_array(v)) {
            n->items_is_array = 1;
            return compile_list(c, v, k, &n->items_arr, 1);
        }
        return (n->items = compile_at(c, v, k, NULL)) ? 0 : -1;
    }
    if (strcmp(k, "additionalItems") == 0)
        return n->has_arr = 1, (n->additional_items = compile_at(c, v, k, NULL)) ? 0 : -1;
    if (strcmp(k, "contains") == 0)
        return n->has_arr = 1, (n->contains = compile_at(c, v, k, NULL)) ? 0 : -1;
    if (strcmp(k, "minItems") == 0)
        return n->has_arr = 1, get_count(c, v, k, &n->min_items);
    if (strcmp(k, "maxItems") == 0)
        return n->has_arr = 1, get_count(c, v, k, &n->max_items);
    if (strcmp(k, "uniqueItems") == 0) {
        if (!json_is_boolean(v))
            return cerr(c, "\"uniqueItems\" must be a boolean");
        n->unique = json_is_true(v);
        n->has_arr = 1;
        return 0;
    }
    if (strcmp(k, "properties") == 0)
        return n->has_obj = 1, kw_properties(c, n, v);
    if (strcmp(k, "patternProperties") == 0)
        return n->has_obj = 1, kw_pattern_properties(c, n, v);
    if (strcmp(k, "additionalProperties") == 0)
        return n->has_obj = 1, (n->additional_props = compile_at(c, v, k, NULL)) ? 0 : -1;
    if (strcmp(k, "propertyNames") == 0)
        return n->has_obj = 1, (n->property_names = compile_at(c, v, k, NULL)) ? 0 : -1;
    if (strcmp(k, "required") == 0)
        return n->has_obj = 1, kw_required(c, n, v);
    if (strcmp(k, "minProperties") == 0)
        return n->has_obj = 1, get_count(c, v, k, &n->min_props);
    if (strcmp(k, "maxProperties") == 0)
        return n->has_obj = 1, get_count(c, v, k, &n->max_props);
    if (strcmp(k, "dependencies") == 0)
        return n->has_obj = 1, kw_dependencies(c, n, v);
    if (strcmp(k, "allOf") == 0)
        return n->has_comb = 1, compile_list(c, v, k, &n->all_of, 0);
    if (strcmp(k, "anyOf") == 0)
        return n->has_comb = 1, compile_list(c, v, k, &n->any_of, 0);
    if (strcmp(k, "oneOf") == 0)
        return n->has_comb = 1, compile_list(c, v, k, &n->one_of, 0);
    if (strcmp(k, "not") == 0)
        return n->has_comb = 1, (n->not_ = compile_at(c, v, k, NULL)) ? 0 : -1;
    if (strcmp(k, "if") == 0)
        return n->has_comb = 1, (n->if_ = compile_at(c, v, k, NULL)) ? 0 : -1;
    if (strcmp(k, "then") == 0)
        return (n->then_ = compile_at(c, v, k, NULL)) ? 0 : -1;
    if (strcmp(k, "else") == 0)
        return (n->else_ = compile_at(c, v, k, NULL)) ? 0 : -1;
    if (strcmp(k, "definitions") == 0)
        return kw_definitions(c, v);
    if (strcmp(k, "$schema") == 0) {
        const char *u = json_string_value(v);
        if (!root)
            return cerr(c, "\"$schema\" is only supported at the root");
        if (!u || (strcmp(u, "http://json-schema.org/draft-07/schema#") != 0 &&
                   strcmp(u, "http://json-schema.org/draft-07/schema") != 0))
            return cerr(c, "unsupported $schema (only draft-07)");
        return 0;
    }
    if (strcmp(k, "$id") == 0) {
        if (!root)
            return cerr(c, "\"$id\" below the root is not supported");
        if (!json_is_string(v))
            return cerr(c, "\"$id\" must be a string");
        return 0;
    }
    if (strcmp(k, "description") == 0 && json_is_string(v))
        n->description = json_string_value(v);
    if (is_annotation(k))
        return 0;
    /* Not a keyword: fine only as a container that a $ref points into,
     * decided once all references are resolved. */
    size_t old = loc_push(c, k);
    int rc = str_add(&c->unknown, &c->nunknown, &c->capunknown, c->loc);
    loc_pop(c, old);
    return rc ? cerr(c, "out of memory") : 0;
}

static node_t *compile(cctx_t *c, json_t *j)
{
    node_t *n = NULL;
    const char *k;
    json_t *v;
    int root = j == c->s->doc;

    if (c->loc_overflow) {
        cerr(c, "schema nested too deeply");
        return NULL;
    }
    if (json_is_boolean(j)) {
        n = node_new(c, json_is_true(j) ? N_TRUE : N_FALSE);
        if (!n || map_add(c, j, n)) {
            cerr(c, "out of memory");
            return NULL;
        }
        return n;
    }
    if (!json_is_object(j)) {
        cerr(c, "a schema must be an object or a boolean");
        return NULL;
    }
    if (!(n = node_new(c, N_SCHEMA)) || map_add(c, j, n)) {
        cerr(c, "out of memory");
        return NULL;
    }
    if (root && json_is_string(json_object_get(j, "$id"))) {
        const char *id = json_string_value(json_object_get(j, "$id"));
        c->base = id;
        c->baselen = strcspn(id, "#");
    }
    if ((v = json_object_get(j, "$ref"))) {
        /* Draft 7: $ref makes every sibling keyword void. */
        size_t old = loc_push(c, "$ref");
        int rc = kw_ref(c, n, v);
        loc_pop(c, old);
        return rc ? NULL : n;
    }
    json_object_foreach(j, k, v) {
        if (compile_keyword(c, n, k, v, root))
            return NULL;
    }
    return n;
}

/* Finds the value at an escaped JSON pointer in doc, or NULL. */
static json_t *pointer_get(json_t *doc, const char *ptr, char *norm, size_t normlen)
{
    sbuf_t nb = {norm, normlen, 0};
    char tok[512];
    if (normlen)
        norm[0] = '\0';
    while (*ptr == '/') {
        size_t t = 0;
        ptr++;
        while (*ptr && *ptr != '/') {
            char ch = *ptr++;
            if (ch == '~') {
                if (*ptr != '0' && *ptr != '1')
                    return NULL;
                ch = *ptr++ == '0' ? '~' : '/';
            }
            if (t + 1 >= sizeof(tok))
                return NULL;
            tok[t++] = ch;
        }
        tok[t] = '\0';
        if (json_is_object(doc)) {
            doc = json_object_get(doc, tok);
        } else if (json_is_array(doc)) {
            char *end;
            if (!t || (tok[0] == '0' && t > 1) || tok[0] < '0' || tok[0] > '9')
                return NULL;
            unsigned long i = strtoul(tok, &end, 10);
            doc = *end ? NULL : json_array_get(doc, i);
        } else {
            return NULL;
        }
        if (!doc)
            return NULL;
        sb_putn(&nb, "/", 1);
        sb_put_token(&nb, tok);
    }
    return *ptr ? NULL : doc;
}

static int resolve_refs(cctx_t *c)
{
    /* Compiling a target may add references: the list grows as we go. */
    for (size_t i = 0; i < c->nrefs; i++) {
        ref_pending_t *r = &c->refs[i];
        char norm[GT_SCHEMA_LOC_MAX];
        json_t *t = pointer_get(c->s->doc, r->ptr, norm, sizeof(norm));
        node_t *target = NULL;

        c->loclen = strlen(r->where);
        memcpy(c->loc, r->where, c->loclen + 1);
        if (!t)
            return cerr(c, "$ref \"#%s\" points to nothing", r->ptr);
        for (size_t m = 0; m < c->nmap && !target; m++)
            if (c->map[m].doc == t && !json_is_boolean(t))
                target = c->map[m].node;
        if (!target) {
            loc_pop(c, 0);
            c->loclen = strlen(norm);
            memcpy(c->loc, norm, c->loclen + 1);
            if (!(target = compile(c, t)))
                return -1;
        }
        c->refs[i].node->ref = target;
        if (str_add(&c->targets, &c->ntargets, &c->captargets, norm))
            return cerr(c, "out of memory");
    }
    /* A chain of references that comes back to itself would never end. */
    for (size_t i = 0; i < c->nrefs; i++) {
        const node_t *n = c->refs[i].node;
        for (size_t hops = 0; n->kind == N_REF; hops++, n = n->ref)
            if (hops > c->nrefs) {
                loc_pop(c, 0);
                c->loclen = strlen(c->refs[i].where);
                memcpy(c->loc, c->refs[i].where, c->loclen + 1);
                return cerr(c, "$ref cycle");
            }
    }
    return 0;
}

static int check_unknown(cctx_t *c)
{
    for (size_t i = 0; i < c->nunknown; i++) {
        const char *u = c->unknown[i];
        size_t ul = strlen(u);
        int used = 0;
        for (size_t t = 0; t < c->ntargets && !used; t++)
            used = strncmp(c->targets[t], u, ul) == 0 &&
                   (c->targets[t][ul] == '\0' || c->targets[t][ul] == '/');
        if (!used) {
            const char *slash = strrchr(u, '/');
            c->loclen = (size_t)(slash - u);
            memcpy(c->loc, u, c->loclen);
            c->loc[c->loclen] = '\0';
            return cerr(c, "unknown or unsupported keyword \"%s\"", slash + 1);
        }
    }
    return 0;
}

void gt_schema_free(gt_schema_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nnodes; i++)
        node_free(s->nodes[i]);
    free(s->nodes);
    json_decref(s->doc);
    free(s);
}

gt_schema_t *gt_schema_new(json_t *doc, char *err, size_t errlen)
{
    cctx_t *c = NULL;
    gt_schema_t *s = NULL;
    int ok = 0;

    if (err && errlen)
        err[0] = '\0';
    if (!doc) {
        if (err && errlen)
            snprintf(err, errlen, "#: no schema document");
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    s = calloc(1, sizeof(*s));
    if (!c || !s) {
        if (err && errlen)
            snprintf(err, errlen, "#: out of memory");
        goto out;
    }
    s->doc = json_incref(doc);
    c->s = s;
    c->err = err;
    c->errlen = errlen;
    if (!(s->root = compile(c, doc)) || resolve_refs(c) || check_unknown(c))
        goto out;
    ok = 1;
out:
    if (c) {
        for (size_t i = 0; i < c->nrefs; i++) {
            free(c->refs[i].ptr);
            free(c->refs[i].where);
        }
        for (size_t i = 0; i < c->nunknown; i++)
            free(c->unknown[i]);
        for (size_t i = 0; i < c->ntargets; i++)
            free(c->targets[i]);
        free(c->refs);
        free(c->unknown);
        free(c->targets);
        free(c->map);
        free(c);
    }
    if (!ok) {
        gt_schema_free(s);
        return NULL;
    }
    return s;
}

gt_schema_t *gt_schema_embedded(const char *name, char *err, size_t errlen)
{
    const gt_embed_file_t *f = gt_embed_find(name);
    json_error_t jerr;
    json_t *doc;
    gt_schema_t *s;

    if (!f) {
        if (err && errlen)
            snprintf(err, errlen, "no embedded schema \"%s\"", name);
        return NULL;
    }
    if (!(doc = json_loadb(f->data, f->len, JSON_REJECT_DUPLICATES, &jerr))) {
        if (err && errlen)
            snprintf(err, errlen, "%s:%d:%d: %s", name, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    s = gt_schema_new(doc, err, errlen);
    json_decref(doc);
    return s;
}

/* ---- validator ---- */

/* One step from the instance root, on the C stack: building the pointer of
 * the failing value costs nothing until there is an error. */
typedef struct frame {
    const struct frame *up;
    const char *key; /* NULL: array index */
    size_t idx;
} frame_t;

typedef struct vstate {
    char *err;
    size_t errlen;
    int depth;
    int written;
} vstate_t;

static void put_path(sbuf_t *b, const frame_t *f)
{
    if (!f)
        return;
    put_path(b, f->up);
    if (f->key) {
        sb_putn(b, "/", 1);
        sb_put_token(b, f->key);
    } else {
        sb_printf(b, "/%zu", f->idx);
    }
}

static int fail(vstate_t *st, const frame_t *f, int loud, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(vstate_t *st, const frame_t *f, int loud, const char *fmt, ...)
{
    if (!loud || !st->err || !st->errlen || st->written)
        return -1;
    sbuf_t b = {st->err, st->errlen, 0};
    va_list ap;
    st->err[0] = '\0';
    put_path(&b, f);
    sb_puts(&b, ": ");
    va_start(ap, fmt);
    sb_vprintf(&b, fmt, ap);
    va_end(ap);
    st->written = 1;
    return -1;
}

static int validate(const node_t *n, const json_t *x, const frame_t *f, vstate_t *st, int loud);

static int v_number(const node_t *n, const json_t *x, const frame_t *f, vstate_t *st, int loud)
{
    num_t v = num_of(x);
    char b[64];
    if (n->minimum.present && num_cmp(&v, &n->minimum) < 0)
        return fmt_num(&n->minimum, b, sizeof(b)), fail(st, f, loud, "must be >= %s", b);
    if (n->xmin.present && num_cmp(&v, &n->xmin) <= 0)
        return fmt_num(&n->xmin, b, sizeof(b)), fail(st, f, loud, "must be > %s", b);
    if (n->maximum.present && num_cmp(&v, &n->maximum) > 0)
        return fmt_num(&n->maximum, b, sizeof(b)), fail(st, f, loud, "must be <= %s", b);
    if (n->xmax.present && num_cmp(&v, &n->xmax) >= 0)
        return fmt_num(&n->xmax, b, sizeof(b)), fail(st, f, loud, "must be < %s", b);
    if (n->multiple.present) {
        int ok;
        if (v.isint && n->multiple.isint) {
            ok = v.i % n->multiple.i == 0;
        } else {
            double q = v.d / n->multiple.d;
            /* Relative tolerance: 0.0075 / 0.0001 is 74.99999999999999. */
            ok = isfinite(q) && fabs(q - nearbyint(q)) <= 1e-9 * fmax(1.0, fabs(q));
        }
        if (!ok)
            return fmt_num(&n->multiple, b, sizeof(b)),
                   fail(st, f, loud, "must be a multiple of %s", b);
    }
    return 0;
}

static int v_string(const node_t *n, const json_t *x, const frame_t *f, vstate_t *st, int loud)
{
    const char *s = json_string_value(x);
    size_t len = json_string_length(x);
    if (n->min_len || n->max_len != SIZE_MAX) {
        size_t cp = n->min_len > len ? len : utf8_length(s, len);
        if (cp < n->min_len)
            return fail(st, f, loud, "must be at least %zu character%s long", n->min_len,
                        n->min_len == 1 ? "" : "s");
        if (cp > n->max_len)
            return fail(st, f, loud, "must be at most %zu character%s long", n->max_len,
                        n->max_len == 1 ? "" : "s");
    }
    if (n->pattern && !gt__schema_re_match(n->pattern, s, len))
        return fail(st, f, loud, "must match pattern \"%s\"", n->pattern_src);
    if (n->datetime && !is_datetime(s, len))
        return fail(st, f, loud, "must be an RFC 3339 date-time (e.g. 2024-05-01T12:00:00Z)");
    return 0;
}

static int v_array(const node_t *n, const json_t *x, const frame_t *f, vstate_t *st, int loud)
{
    size_t size = json_array_size(x);
    int r;
    if (size < n->min_items)
        return fail(st, f, loud, "must have at least %zu item%s", n->min_items,
                    n->min_items == 1 ? "" : "s");
    if (size > n->max_items)
        return fail(st, f, loud, "must have at most %zu item%s", n->max_items,
                    n->max_items == 1 ? "" : "s");
    if (n->items || n->items_is_array) {
        for (size_t i = 0; i < size; i++) {
            const node_t *is = n->items;
            frame_t fi = {f, NULL, i};
            if (n->items_is_array) {
                is = i < n->items_arr.n ? n->items_arr.v[i] : n->additional_items;
                if (!is)
                    break;
                if (is->kind == N_FALSE)
                    return fail(st, f, loud, "must have at most %zu item%s", n->items_arr.n,
                                n->items_arr.n == 1 ? "" : "s");
            }
            if ((r = validate(is, json_array_get(x, i), &fi, st, loud)))
                return r;
        }
    }
    if (n->contains) {
        int found = 0;
        for (size_t i = 0; i < size && !found; i++) {
            frame_t fi = {f, NULL, i};
            r = validate(n->contains, json_array_get(x, i), &fi, st, 0);
            if (r == -2)
                return r;
            found = r == 0;
        }
        if (!found)
            return fail(st, f, loud, "must contain an item that matches \"contains\"");
    }
    if (n->unique) {
        for (size_t i = 0; i < size; i++)
            for (size_t j = i + 1; j < size; j++)
                if (json_eq(json_array_get(x, i), json_array_get(x, j)))
                    return fail(st, f, loud,
                                "must not contain duplicate items (#%zu and #%zu are equal)", i, j);
    }
    return 0;
}

static int v_object(const node_t *n, const json_t *x, const frame_t *f, vstate_t *st, int loud)
{
    size_t size = json_object_size(x);
    const char *key;
    json_t *val;
    int r;

    if (size < n->min_props)
        return fail(st, f, loud, "must have at least %zu propert%s", n->min_props,
                    n->min_props == 1 ? "y" : "ies");
    if (size > n->max_props)
        return fail(st, f, loud, "must have at most %zu propert%s", n->max_props,
                    n->max_props == 1 ? "y" : "ies");
    for (size_t i = 0; i < n->nrequired; i++)
        if (!json_object_get(x, n->required[i]))
            return fail(st, f, loud, "missing required property \"%s\"", n->required[i]);
    for (size_t i = 0; i < n->ndeps; i++) {
        const dep_t *d = &n->deps[i];
        if (!json_object_get(x, d->name))
            continue;
        if (d->schema) {
            if ((r = validate(d->schema, x, f, st, loud)))
                return r;
            continue;
        }
        for (size_t k = 0; k < json_array_size(d->names); k++) {
            const char *need = json_string_value(json_array_get(d->names, k));
            if (!json_object_get(x, need))
                return fail(st, f, loud, "property \"%s\" requires property \"%s\"", d->name, need);
        }
    }
    if (!n->nprops && !n->npprops && !n->additional_props && !n->property_names)
        return 0;
    json_object_foreach((json_t *)x, key, val) {
        frame_t fk = {f, key, 0};
        int matched = 0;
        if (n->property_names) {
            json_t *name = json_string(key);
            if (!name) {
                st->written = 0;
                fail(st, f, 1, "out of memory");
                return -2;
            }
            r = validate(n->property_names, name, f, st, 0);
            json_decref(name);
            if (r == -2)
                return r;
            if (r)
                return fail(st, f, loud, "property name \"%s\" does not match \"propertyNames\"",
                            key);
        }
        if (n->nprops) {
            prop_t k = {key, NULL};
            const prop_t *p = bsearch(&k, n->props, n->nprops, sizeof(*n->props), prop_cmp);
            if (p) {
                matched = 1;
                if (p->schema->kind == N_FALSE)
                    return fail(st, f, loud, "property \"%s\" is not allowed", key);
                if ((r = validate(p->schema, val, &fk, st, loud)))
                    return r;
            }
        }
        for (size_t i = 0; i < n->npprops; i++) {
            if (!gt__schema_re_match(n->pprops[i].re, key, strlen(key)))
                continue;
            matched = 1;
            if ((r = validate(n->pprops[i].schema, val, &fk, st, loud)))
                return r;
        }
        if (!matched && n->additional_props) {
            if (n->additional_props->kind == N_FALSE)
                return fail(st, f, loud, "property \"%s\" is not allowed", key);
            if ((r = validate(n->additional_props, val, &fk, st, loud)))
                return r;
        }
    }
    return 0;
}

/* Appends why each alternative failed, relative to the combinator's own path. */
static void explain(const nodelist_t *l, const json_t *x, const frame_t *f, vstate_t *st,
                    sbuf_t *out)
{
    char path[256], msg[256];
    sbuf_t pb = {path, sizeof(path), 0};
    path[0] = '\0';
    put_path(&pb, f);
    for (size_t i = 0; i < l->n && i < 4; i++) {
        vstate_t sub = {msg, sizeof(msg), st->depth, 0};
        msg[0] = '\0';
        validate(l->v[i], x, f, &sub, 1);
        const char *m = msg;
        if (strncmp(m, path, pb.len) == 0)
            m += pb.len;
        if (strncmp(m, ": ", 2) == 0)
            m += 2;
        sb_printf(out, "%s#%zu: %s", i ? "; " : "", i, m);
    }
    if (l->n > 4)
        sb_puts(out, "; ...");
}

static int v_comb(const node_t *n, const json_t *x, const frame_t *f, vstate_t *st, int loud)
{
    int r;
    char why[512];
    sbuf_t wb = {why, sizeof(why), 0};
    why[0] = '\0';

    for (size_t i = 0; i < n->all_of.n; i++)
        if ((r = validate(n->all_of.v[i], x, f, st, loud)))
            return r;
    if (n->any_of.n) {
        int any = 0;
        for (size_t i = 0; i < n->any_of.n && !any; i++) {
            r = validate(n->any_of.v[i], x, f, st, 0);
            if (r == -2)
                return r;
            any = r == 0;
        }
        if (!any) {
            if (loud && st->err)
                explain(&n->any_of, x, f, st, &wb);
            return fail(st, f, loud, "must match at least one schema in anyOf (%s)", why);
        }
    }
    if (n->one_of.n) {
        size_t first = 0, count = 0;
        for (size_t i = 0; i < n->one_of.n && count < 2; i++) {
            r = validate(n->one_of.v[i], x, f, st, 0);
            if (r == -2)
                return r;
            if (r == 0 && count++ == 0)
                first = i;
            else if (r == 0)
                return fail(st, f, loud,
                            "must match exactly one schema in oneOf, but matches #%zu and #%zu",
                            first, i);
        }
        if (count == 0) {
            if (loud && st->err)
                explain(&n->one_of, x, f, st, &wb);
            return fail(st, f, loud,
                        "must match exactly one schema in oneOf, but matches none (%s)", why);
        }
    }
    if (n->not_) {
        r = validate(n->not_, x, f, st, 0);
        if (r == -2)
            return r;
        if (r == 0 && n->not_->kind == N_SCHEMA && n->not_->description)
            return fail(st, f, loud, "must not match \"not\" (%s)", n->not_->description);
        if (r == 0)
            return fail(st, f, loud, "must not match the schema in \"not\"");
    }
    if (n->if_) {
        r = validate(n->if_, x, f, st, 0);
        if (r == -2)
            return r;
        const node_t *next = r == 0 ? n->then_ : n->else_;
        if (next && (r = validate(next, x, f, st, loud)))
            return r;
    }
    return 0;
}

static int validate(const node_t *n, const json_t *x, const frame_t *f, vstate_t *st, int loud)
{
    int r = 0;

    while (n->kind == N_REF)
        n = n->ref; /* compile refused cycles of pure references */
    if (n->kind == N_TRUE)
        return 0;
    if (n->kind == N_FALSE)
        return fail(st, f, loud, "no value is allowed here");
    if (++st->depth > GT_SCHEMA_MAX_DEPTH) {
        st->written = 0;
        fail(st, f, 1, "schema recursion deeper than %d (recursive $ref?)", GT_SCHEMA_MAX_DEPTH);
        r = -2;
        goto out;
    }
    if (n->types && !(n->types & inst_types(x))) {
        r = fail(st, f, loud, "%s", n->types_msg);
        goto out;
    }
    if (n->enumv) {
        size_t i, cnt = json_array_size(n->enumv);
        for (i = 0; i < cnt; i++)
            if (json_eq(x, json_array_get(n->enumv, i)))
                break;
        if (i == cnt) {
            r = fail(st, f, loud, "%s", n->enum_msg);
            goto out;
        }
    }
    if (n->constv && !json_eq(x, n->constv)) {
        r = fail(st, f, loud, "%s", n->const_msg);
        goto out;
    }
    switch (json_typeof(x)) {
    case JSON_INTEGER:
    case JSON_REAL:
        if (n->has_num)
            r = v_number(n, x, f, st, loud);
        break;
    case JSON_STRING:
        if (n->has_str)
            r = v_string(n, x, f, st, loud);
        break;
    case JSON_ARRAY:
        if (n->has_arr)
            r = v_array(n, x, f, st, loud);
        break;
    case JSON_OBJECT:
        if (n->has_obj)
            r = v_object(n, x, f, st, loud);
        break;
    default: break;
    }
    if (r == 0 && n->has_comb)
        r = v_comb(n, x, f, st, loud);
out:
    st->depth--;
    return r;
}

int gt_schema_validate(const gt_schema_t *s, const json_t *instance, char *err, size_t errlen)
{
    vstate_t st = {err, errlen, 0, 0};
    if (err && errlen)
        err[0] = '\0';
    if (!s || !instance) {
        if (err && errlen)
            snprintf(err, errlen, ": no %s", s ? "instance" : "schema");
        return -1;
    }
    return validate(s->root, instance, NULL, &st, err != NULL) == 0 ? 0 : -1;
}
