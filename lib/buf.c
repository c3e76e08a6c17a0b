/* buf.c - growing strings (see buf.h): capacity doubles, so n appends cost
 * O(total length). */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow(gt_buf_t *b, size_t need)
{
    if (b->oom)
        return -1;
    if (b->len + need + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + need + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void gt_buf_putn(gt_buf_t *b, const char *s, size_t n)
{
    if (grow(b, n) != 0)
        return;
    if (n > 0) /* s may be NULL when n is 0; memcpy's may not */
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0'; /* NOLINT(clang-analyzer-core.NullDereference): grow() allocated p */
}

void gt_buf_puts(gt_buf_t *b, const char *s)
{
    gt_buf_putn(b, s, strlen(s));
}

void gt_buf_putc(gt_buf_t *b, char c)
{
    gt_buf_putn(b, &c, 1);
}

void gt_buf_printf(gt_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || grow(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *gt_buf_take(gt_buf_t *b, size_t *len)
{
    if (!b->p && !b->oom)
        gt_buf_putn(b, "", 0);
    char *p = b->oom ? NULL : b->p;
    if (b->oom)
        free(b->p);
    if (len)
        *len = p ? b->len : 0;
    *b = (gt_buf_t){0};
    return p;
}

void gt_buf_free(gt_buf_t *b)
{
    free(b->p);
    *b = (gt_buf_t){0};
}
