/* json_text.c - compact JSON text for jansson values and jsonb output. The
 * serialiser writes what json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
 * writes; jansson's own spends most of its time decoding every string's
 * UTF-8 one code point at a time and calling back per piece, where only
 * three kinds of byte need escaping. */
#include <errno.h>
#include <math.h>
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

/* The parser: a cursor over the text, recursive descent. */
typedef struct parser {
    const unsigned char *s, *p, *end;
    size_t flags;
    int depth;
    gt_json_error_t *e;
    char *tmp; /* decoded strings with escapes */
    size_t tmp_cap;
} parser_t;

static json_t *parse_value(parser_t *ps);

static json_t *fail(parser_t *ps, const unsigned char *at, const char *what)
{
    if (ps->e && !ps->e->text[0]) {
        snprintf(ps->e->text, sizeof(ps->e->text), "%s", what);
        ps->e->position = (size_t)(at - ps->s);
    }
    return NULL;
}

static void skip_ws(parser_t *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence starting at p (lead byte >= 0x80), or
 * 0: overlong forms, surrogates and code points past U+10FFFF are refused,
 * as jansson refuses them. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], cp;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

static void put_utf8(char *o, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        o[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*n)++] = (char)(0xC0 | (cp >> 6));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        o[(*n)++] = (char)(0xE0 | (cp >> 12));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        o[(*n)++] = (char)(0xF0 | (cp >> 18));
        o[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* Length of the character at p inside a string, other than '"' and '\\':
 * 1, or its UTF-8 sequence's; 0 (failed) for a control character or bytes
 * that are not UTF-8. */
static size_t plain_len(parser_t *ps, const unsigned char *p)
{
    if (*p < 0x20) {
        fail(ps, p, "control character in a string");
        return 0;
    }
    if (*p < 0x80)
        return 1;
    size_t k = utf8_len(p, ps->end);
    if (!k)
        fail(ps, p, "invalid UTF-8");
    return k;
}

/* A string at ps->p (the opening quote): its bytes in *out, *n long, either
 * in the text itself (no escapes) or decoded into ps->tmp. 0, or -1 failed. */
static int parse_string(parser_t *ps, const char **out, size_t *n)
{
    const unsigned char *start = ++ps->p, *p = start;
    /* The plain run: most strings have no escapes at all. */
    while (p < ps->end && *p != '"' && *p != '\\') {
        size_t m = plain_len(ps, p);
        if (!m)
            return -1;
        p += m;
    }
    if (p >= ps->end) {
        fail(ps, p, "unterminated string");
        return -1;
    }
    if (*p == '"') {
        *out = (const char *)start;
        *n = (size_t)(p - start);
        ps->p = p + 1;
        return 0;
    }
    /* Escapes: decoded, never longer than the text they come from. */
    size_t need = (size_t)(ps->end - start);
    if (need > ps->tmp_cap) {
        char *t = realloc(ps->tmp, need);
        if (!t) {
            fail(ps, p, "out of memory");
            return -1;
        }
        ps->tmp = t;
        ps->tmp_cap = need;
    }
    size_t k = (size_t)(p - start);
    memcpy(ps->tmp, start, k);
    while (p < ps->end && *p != '"') {
        if (*p != '\\') {
            size_t m = plain_len(ps, p);
            if (!m)
                return -1;
            memcpy(ps->tmp + k, p, m);
            k += m;
            p += m;
            continue;
        }
        if (ps->end - p < 2) {
            fail(ps, p, "unterminated string");
            return -1;
        }
        const unsigned char *esc = p;
        p += 2;
        switch (esc[1]) {
        case '"': ps->tmp[k++] = '"'; break;
        case '\\': ps->tmp[k++] = '\\'; break;
        case '/': ps->tmp[k++] = '/'; break;
        case 'b': ps->tmp[k++] = '\b'; break;
        case 'f': ps->tmp[k++] = '\f'; break;
        case 'n': ps->tmp[k++] = '\n'; break;
        case 'r': ps->tmp[k++] = '\r'; break;
        case 't': ps->tmp[k++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (ps->end - p < 4 || hex4(p, &cp) != 0) {
                fail(ps, esc, "invalid \\u escape");
                return -1;
            }
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(ps, esc, "invalid Unicode: a lone low surrogate");
                return -1;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (ps->end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) != 0 ||
                    lo < 0xDC00 || lo > 0xDFFF) {
                    fail(ps, esc, "invalid Unicode: a high surrogate without its low one");
                    return -1;
                }
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) {
                fail(ps, esc, "\\u0000 is not allowed");
                return -1;
            }
            put_utf8(ps->tmp, &k, cp);
            break;
        }
        default: fail(ps, esc, "invalid escape"); return -1;
        }
    }
    if (p >= ps->end) {
        fail(ps, p, "unterminated string");
        return -1;
    }
    *out = ps->tmp;
    *n = k;
    ps->p = p + 1;
    return 0;
}

static json_t *parse_number(parser_t *ps)
{
    const unsigned char *start = ps->p, *p = start;
    int real = 0;
    if (p < ps->end && *p == '-')
        p++;
    if (p < ps->end && *p == '0') {
        p++;
    } else if (p < ps->end && *p >= '1' && *p <= '9') {
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return fail(ps, start, "invalid token");
    }
    if (p < ps->end && *p == '.') {
        real = 1;
        p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return fail(ps, start, "invalid number");
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;
        if (p < ps->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= ps->end || *p < '0' || *p > '9')
            return fail(ps, start, "invalid number");
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    /* strtoll/strtod need a terminated copy: the text may end right here. */
    char buf[64], *copy = buf;
    size_t n = (size_t)(p - start);
    if (n >= sizeof(buf) && !(copy = malloc(n + 1)))
        return fail(ps, start, "out of memory");
    memcpy(copy, start, n);
    copy[n] = '\0';
    json_t *v = NULL;
    errno = 0;
    if (!real) {
        long long i = strtoll(copy, NULL, 10);
        if (errno == ERANGE)
            fail(ps, start, *start == '-' ? "too big negative integer" : "too big integer");
        else if (!(v = json_integer((json_int_t)i)))
            fail(ps, start, "out of memory");
    } else {
        double d = strtod(copy, NULL);
        if (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL))
            fail(ps, start, "real number overflow");
        else if (!(v = json_real(d)))
            fail(ps, start, "out of memory");
    }
    if (copy != buf)
        free(copy);
    ps->p = p;
    return v;
}

static json_t *parse_literal(parser_t *ps, const char *word, size_t n, json_t *v)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return fail(ps, ps->p, "invalid token");
    ps->p += n;
    return v;
}

/* Past an opening bracket and the whitespace after it: 1 when close follows
 * (the container is empty; consumed), else 0. */
static int opened_empty(parser_t *ps, unsigned char close)
{
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 1;
    }
    return 0;
}

/* After a member: 1 on ',' (another follows), 0 on close (consumed), -1
 * (failed, saying what was expected) otherwise. */
static int next_member(parser_t *ps, unsigned char close, const char *expected)
{
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        skip_ws(ps);
        return 1;
    }
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 0;
    }
    fail(ps, ps->p, expected);
    return -1;
}

static json_t *parse_object(parser_t *ps)
{
    json_t *o = json_object();
    if (!o)
        return fail(ps, ps->p, "out of memory");
    if (opened_empty(ps, '}'))
        return o;
    int more;
    do {
        if (ps->p >= ps->end || *ps->p != '"') {
            fail(ps, ps->p, "string or '}' expected");
            goto bad;
        }
        const unsigned char *at = ps->p;
        const char *k;
        size_t kn;
        if (parse_string(ps, &k, &kn) != 0)
            goto bad;
        /* The key is copied before the value may reuse ps->tmp. */
        char kbuf[128], *key = kbuf;
        if (kn >= sizeof(kbuf) && !(key = malloc(kn + 1))) {
            fail(ps, at, "out of memory");
            goto bad;
        }
        memcpy(key, k, kn);
        key[kn] = '\0';
        int dup = (ps->flags & JSON_REJECT_DUPLICATES) && json_object_getn(o, key, kn);
        skip_ws(ps);
        json_t *v = NULL;
        if (dup)
            fail(ps, at, "duplicate object key");
        else if (ps->p >= ps->end || *ps->p != ':')
            fail(ps, ps->p, "':' expected");
        else {
            ps->p++;
            skip_ws(ps);
            v = parse_value(ps);
        }
        int rc = v ? json_object_setn_new_nocheck(o, key, kn, v) : -1;
        if (key != kbuf)
            free(key);
        if (rc != 0) {
            fail(ps, at, "out of memory");
            goto bad;
        }
    } while ((more = next_member(ps, '}', "',' or '}' expected")) == 1);
    if (more == 0)
        return o;
bad:
    json_decref(o);
    return NULL;
}

static json_t *parse_array(parser_t *ps)
{
    json_t *a = json_array();
    if (!a)
        return fail(ps, ps->p, "out of memory");
    if (opened_empty(ps, ']'))
        return a;
    int more;
    do {
        json_t *v = parse_value(ps);
        if (!v || json_array_append_new(a, v) != 0) {
            fail(ps, ps->p, "out of memory");
            json_decref(a);
            return NULL;
        }
    } while ((more = next_member(ps, ']', "',' or ']' expected")) == 1);
    if (more == 0)
        return a;
    json_decref(a);
    return NULL;
}

/* Every value counts a level, as in jansson (a scalar inside 2,048 arrays is
 * one too deep there as well). */
static json_t *parse_value(parser_t *ps)
{
    if (ps->p >= ps->end)
        return fail(ps, ps->p, "unexpected end of text");
    if (ps->depth >= MAX_DEPTH)
        return fail(ps, ps->p, "maximum parsing depth reached");
    ps->depth++;
    json_t *v;
    const unsigned char *at = ps->p;
    switch (*ps->p) {
    case '{': v = parse_object(ps); break;
    case '[': v = parse_array(ps); break;
    case '"': {
        const char *s;
        size_t n;
        v = NULL;
        if (parse_string(ps, &s, &n) == 0 && !(v = json_stringn_nocheck(s, n)))
            fail(ps, at, "out of memory");
        break;
    }
    case 't': v = parse_literal(ps, "true", 4, json_true()); break;
    case 'f': v = parse_literal(ps, "false", 5, json_false()); break;
    case 'n': v = parse_literal(ps, "null", 4, json_null()); break;
    default: v = parse_number(ps);
    }
    ps->depth--;
    return v;
}

json_t *gt_json_parse(const char *s, size_t len, size_t flags, gt_json_error_t *e)
{
    if (!s) {
        if (e)
            *e = (gt_json_error_t){"no text", 0};
        return NULL;
    }
    parser_t ps = {.s = (const unsigned char *)s,
                   .p = (const unsigned char *)s,
                   .end = (const unsigned char *)s + len,
                   .flags = flags,
                   .e = e};
    if (e)
        e->text[0] = '\0';
    skip_ws(&ps);
    json_t *v = NULL;
    if (ps.p >= ps.end || (*ps.p != '{' && *ps.p != '['))
        fail(&ps, ps.p, "'[' or '{' expected");
    else if ((v = parse_value(&ps))) {
        skip_ws(&ps);
        if (ps.p < ps.end) {
            fail(&ps, ps.p, "end of text expected");
            json_decref(v);
            v = NULL;
        }
    }
    free(ps.tmp);
    return v;
}
