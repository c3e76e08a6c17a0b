/* buf.h - a growing NUL-terminated string for building text (JSON, SQL,
 * canonical requests, exposition text). Appends never fail on the spot: out
 * of memory is remembered and seen once, at gt_buf_take. */
#ifndef GT_BUF_H
#define GT_BUF_H

#include <stddef.h>

/* Zero-initialise (gt_buf_t b = {0}). p is NULL until the first append. */
typedef struct gt_buf {
    char *p;
    size_t len, cap;
    int oom;
} gt_buf_t;

void gt_buf_putn(gt_buf_t *b, const char *s, size_t n);
void gt_buf_puts(gt_buf_t *b, const char *s);
void gt_buf_putc(gt_buf_t *b, char c);
void gt_buf_printf(gt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Hands the string over to the caller ("" when nothing was added) with its
 * length in *len (may be NULL); NULL after an out of memory. The buffer is
 * empty again either way. */
char *gt_buf_take(gt_buf_t *b, size_t *len);

void gt_buf_free(gt_buf_t *b);

#endif
