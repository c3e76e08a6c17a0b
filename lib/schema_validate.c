/* schema_validate.c - validates a JSON instance against a compiled schema,
 * without allocation; the first error as "<json pointer>: <reason>". */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema_internal.h"

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

static size_t utf8_length(const char *s, size_t n)
{
    size_t cp = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            cp++;
    return cp;
}

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
        gt__sb_putn(b, "/", 1);
        gt__sb_put_token(b, f->key);
    } else {
        gt__sb_printf(b, "/%zu", f->idx);
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
    gt__sb_puts(&b, ": ");
    va_start(ap, fmt);
    gt__sb_vprintf(&b, fmt, ap);
    va_end(ap);
    st->written = 1;
    return -1;
}

static int validate(const node_t *n, const json_t *x, const frame_t *f, vstate_t *st, int loud);

static int v_number(const node_t *n, const json_t *x, const frame_t *f, vstate_t *st, int loud)
{
    num_t v = gt__schema_num_of(x);
    char b[64];
    if (n->minimum.present && gt__schema_num_cmp(&v, &n->minimum) < 0)
        return fmt_num(&n->minimum, b, sizeof(b)), fail(st, f, loud, "must be >= %s", b);
    if (n->xmin.present && gt__schema_num_cmp(&v, &n->xmin) <= 0)
        return fmt_num(&n->xmin, b, sizeof(b)), fail(st, f, loud, "must be > %s", b);
    if (n->maximum.present && gt__schema_num_cmp(&v, &n->maximum) > 0)
        return fmt_num(&n->maximum, b, sizeof(b)), fail(st, f, loud, "must be <= %s", b);
    if (n->xmax.present && gt__schema_num_cmp(&v, &n->xmax) >= 0)
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
    if (n->datetime && !gt__schema_is_datetime(s, len))
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
                if (gt__schema_json_eq(json_array_get(x, i), json_array_get(x, j)))
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
    json_object_foreach ((json_t *)x, key, val) {
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
            const prop_t *p =
                bsearch(&k, n->props, n->nprops, sizeof(*n->props), gt__schema_prop_cmp);
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
        gt__sb_printf(out, "%s#%zu: %s", i ? "; " : "", i, m);
    }
    if (l->n > 4)
        gt__sb_puts(out, "; ...");
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
    if (n->types && !(n->types & gt__schema_inst_types(x))) {
        r = fail(st, f, loud, "%s", n->types_msg);
        goto out;
    }
    if (n->enumv) {
        size_t i, cnt = json_array_size(n->enumv);
        for (i = 0; i < cnt; i++)
            if (gt__schema_json_eq(x, json_array_get(n->enumv, i)))
                break;
        if (i == cnt) {
            r = fail(st, f, loud, "%s", n->enum_msg);
            goto out;
        }
    }
    if (n->constv && !gt__schema_json_eq(x, n->constv)) {
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
