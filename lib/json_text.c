/* json_text.c - compact JSON text for jansson values and jsonb output. The
 * serialiser writes what json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
 * writes; jansson's own spends most of its time decoding every string's
 * UTF-8 one code point at a time and calling back per piece, where only
 * three kinds of byte need escaping. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_text.h"

#define MAX_DEPTH 2048

void gt_json_text_init(gt_json_text_t *t, char *buf, size_t cap)
{
    *t = (gt_json_text_t){.p = buf, .cap = cap, .stack = buf};
}

void gt_json_text_free(gt_json_text_t *t)
{
    if (t->p != t->stack)
        free(t->p);
    t->p = t->stack;
    t->len = 0;
}

/* Room for n more bytes; 0, or -1 (failed) on out of memory. */
static int reserve(gt_json_text_t *t, size_t n)
{
    if (t->failed)
        return -1;
    if (t->len + n <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap * 2 : 256;
    while (cap < t->len + n)
        cap *= 2;
    char *p = t->p == t->stack ? malloc(cap) : realloc(t->p, cap);
    if (!p) {
        t->failed = 1;
        return -1;
    }
    if (t->p == t->stack && t->len)
        memcpy(p, t->stack, t->len);
    t->p = p;
    t->cap = cap;
    return 0;
}

void gt_json_text_raw(gt_json_text_t *t, const char *s, size_t n)
{
    if (reserve(t, n) == 0) {
        memcpy(t->p + t->len, s, n);
        t->len += n;
    }
}

static void put_char(gt_json_text_t *t, char c)
{
    if (reserve(t, 1) == 0)
        t->p[t->len++] = c;
}

/* A string with its quotes: runs of plain bytes copied whole; '"', '\\' and
 * control characters escaped as jansson escapes them. */
static void put_string(gt_json_text_t *t, const char *s, size_t n)
{
    put_char(t, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        gt_json_text_raw(t, s + run, i - run);
        run = i + 1;
        char seq[8];
        const char *e = seq;
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        default: snprintf(seq, sizeof(seq), "\\u%04X", c);
        }
        gt_json_text_raw(t, e, strlen(e));
    }
    gt_json_text_raw(t, s + run, n - run);
    put_char(t, '"');
}

/* As jansson's jsonp_dtostr: %.17g, always with a '.' or an exponent (else
 * it would read back as an integer), the exponent without '+' or leading
 * zeros. */
static void put_real(gt_json_text_t *t, double v)
{
    char b[40];
    int n = snprintf(b, sizeof(b), "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof(b) - 3) {
        t->failed = 1;
        return;
    }
    for (char *p = b; *p; p++)
        if (*p == ',') /* a locale's decimal comma */
            *p = '.';
    if (!strchr(b, '.') && !strchr(b, 'e')) {
        memcpy(b + n, ".0", 3);
        n += 2;
    }
    char *e = strchr(b, 'e');
    if (e) {
        char *start = e + 1, *end = e + 2;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, (size_t)(b + n - end) + 1);
            n -= (int)(end - start);
        }
    }
    gt_json_text_raw(t, b, (size_t)n);
}

static void put_value(gt_json_text_t *t, const json_t *v, int depth)
{
    if (!v || depth > MAX_DEPTH) {
        t->failed = 1;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        put_char(t, '{');
        int first = 1;
        for (void *it = json_object_iter((json_t *)v); it && !t->failed;
             it = json_object_iter_next((json_t *)v, it)) {
            if (!first)
                put_char(t, ',');
            first = 0;
            put_string(t, json_object_iter_key(it), json_object_iter_key_len(it));
            put_char(t, ':');
            put_value(t, json_object_iter_value(it), depth + 1);
        }
        put_char(t, '}');
        break;
    }
    case JSON_ARRAY: {
        put_char(t, '[');
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n && !t->failed; i++) {
            if (i)
                put_char(t, ',');
            put_value(t, json_array_get(v, i), depth + 1);
        }
        put_char(t, ']');
        break;
    }
    case JSON_STRING: put_string(t, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: {
        char b[24];
        int n = snprintf(b, sizeof(b), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        gt_json_text_raw(t, b, (size_t)n);
        break;
    }
    case JSON_REAL: put_real(t, json_real_value(v)); break;
    case JSON_TRUE: gt_json_text_raw(t, "true", 4); break;
    case JSON_FALSE: gt_json_text_raw(t, "false", 5); break;
    case JSON_NULL: gt_json_text_raw(t, "null", 4); break;
    }
}

void gt_json_text_value(gt_json_text_t *t, const json_t *v)
{
    put_value(t, v, 0);
}

char *gt_json_dump(const json_t *obj, char *buf, size_t cap, size_t *len)
{
    gt_json_text_t t;
    gt_json_text_init(&t, buf, cap);
    gt_json_text_value(&t, obj);
    if (t.failed) {
        gt_json_text_free(&t);
        return NULL;
    }
    *len = t.len;
    return t.p;
}

size_t gt_json_compact(char *text)
{
    char *out = text;
    int in_string = 0;
    for (const char *p = text; *p; p++) {
        if (in_string) {
            *out++ = *p;
            if (*p == '\\' && p[1])
                *out++ = *++p;
            else if (*p == '"')
                in_string = 0;
        } else if (*p == '"') {
            *out++ = *p;
            in_string = 1;
        } else if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r') {
            *out++ = *p;
        }
    }
    *out = '\0';
    return (size_t)(out - text);
}
