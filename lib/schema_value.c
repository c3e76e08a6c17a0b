/* schema_value.c - JSON values as JSON Schema sees them (numbers by value,
 * type bits, equality) and the fixed buffer schema messages are built in. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "schema_internal.h"

void gt__sb_putn(sbuf_t *b, const char *s, size_t n)
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

void gt__sb_puts(sbuf_t *b, const char *s)
{
    gt__sb_putn(b, s, strlen(s));
}

void gt__sb_vprintf(sbuf_t *b, const char *fmt, va_list ap)
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

void gt__sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gt__sb_vprintf(b, fmt, ap);
    va_end(ap);
}

void gt__sb_put_token(sbuf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '~')
            gt__sb_puts(b, "~0");
        else if (*s == '/')
            gt__sb_puts(b, "~1");
        else
            gt__sb_putn(b, s, 1);
    }
}

num_t gt__schema_num_of(const json_t *j)
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

int gt__schema_num_cmp(const num_t *a, const num_t *b)
{
    if (a->isint && b->isint)
        return (a->i > b->i) - (a->i < b->i);
    return (a->d > b->d) - (a->d < b->d);
}

static int real_is_integral(double d)
{
    return isfinite(d) && d == floor(d);
}

unsigned gt__schema_inst_types(const json_t *x)
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
int gt__schema_json_eq(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        num_t x = gt__schema_num_of(a), y = gt__schema_num_of(b);
        if (x.isint != y.isint) {
            /* An integral real equals an integer when it converts exactly. */
            const num_t *r = x.isint ? &y : &x, *i = x.isint ? &x : &y;
            if (!real_is_integral(r->d) || r->d < -9.2e18 || r->d > 9.2e18)
                return 0;
            return (long long)r->d == i->i;
        }
        return gt__schema_num_cmp(&x, &y) == 0;
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
            if (!gt__schema_json_eq(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)a, k, v) {
            const json_t *w = json_object_get(b, k);
            if (!w || !gt__schema_json_eq(v, w))
                return 0;
        }
        return 1;
    }
    default: return 1; /* true, false, null */
    }
}

int gt__schema_prop_cmp(const void *a, const void *b)
{
    return strcmp(((const prop_t *)a)->name, ((const prop_t *)b)->name);
}
