/* schema_compile.c - compiles a JSON Schema document (draft 7 subset) once into
 * the node graph of schema_internal.h, refusing what it does not implement. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "embed.h"
#include "schema_internal.h"

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"null", T_NULL},     {"boolean", T_BOOLEAN}, {"object", T_OBJECT}, {"array", T_ARRAY},
    {"number", T_NUMBER}, {"integer", T_INTEGER}, {"string", T_STRING},
};

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
    gt__sb_printf(&b, "#%s: ", c->loc);
    va_start(ap, fmt);
    gt__sb_vprintf(&b, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t loc_push(cctx_t *c, const char *tok)
{
    size_t old = c->loclen;
    sbuf_t b = {c->loc, sizeof(c->loc), c->loclen};
    gt__sb_putn(&b, "/", 1);
    gt__sb_put_token(&b, tok);
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
    if (!(gt__schema_inst_types(v) & T_INTEGER) || json_number_value(v) < 0) {
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
    *out = gt__schema_num_of(v);
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

static int kw_properties(cctx_t *c, node_t *n, json_t *v)
{
    const char *k;
    json_t *sub;
    if (!json_is_object(v))
        return cerr(c, "\"properties\" must be an object");
    n->props = calloc(json_object_size(v) + 1, sizeof(*n->props));
    if (!n->props)
        return cerr(c, "out of memory");
    json_object_foreach (v, k, sub) {
        prop_t *p = &n->props[n->nprops++];
        p->name = k;
        if (!(p->schema = compile_at(c, sub, "properties", k)))
            return -1;
    }
    qsort(n->props, n->nprops, sizeof(*n->props), gt__schema_prop_cmp);
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
    json_object_foreach (v, k, sub) {
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
    json_object_foreach (v, k, sub) {
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
    json_object_foreach (v, k, sub) {
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
    json_object_foreach (j, k, v) {
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
        gt__sb_putn(&nb, "/", 1);
        gt__sb_put_token(&nb, tok);
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
