/* json_text.h - JSON text without a second pass: jansson values serialised
 * compactly (byte for byte as json_dumps with JSON_COMPACT writes them, at a
 * fraction of its cost), and PostgreSQL's jsonb text made compact. */
#ifndef GT_JSON_TEXT_H
#define GT_JSON_TEXT_H

#include <jansson.h>
#include <stddef.h>

/* A text being written: into the caller's buffer (usually on the stack) while
 * it fits, then into an allocation of its own. gt_json_text_init first. */
typedef struct gt_json_text {
    char *p;
    size_t len, cap;
    char *stack; /* the caller's buffer: p until the text outgrows it */
    int failed;  /* out of memory, or a value that cannot be written */
} gt_json_text_t;

void gt_json_text_init(gt_json_text_t *t, char *buf, size_t cap);

/* Appends v (any JSON value) serialised compactly; raw bytes as they are.
 * Failures (out of memory, a nesting deeper than 2048, an invalid value) are
 * remembered in t->failed. */
void gt_json_text_value(gt_json_text_t *t, const json_t *v);
void gt_json_text_raw(gt_json_text_t *t, const char *s, size_t n);

/* Frees what t allocated (not the caller's buffer). */
void gt_json_text_free(gt_json_text_t *t);

/* obj serialised compactly into buf (cap bytes, not terminated) when it fits,
 * else into a new allocation. Returns buf or that allocation (the caller
 * frees it when it is not buf) with its length in *len; NULL when obj cannot
 * be serialised or on out of memory. */
char *gt_json_dump(const json_t *obj, char *buf, size_t cap, size_t *len);

/* Why a text is not JSON: what, and at which byte (from 0). */
typedef struct gt_json_error {
    char text[128];
    size_t position;
} gt_json_error_t;

/* Parses len bytes as JSON, accepting what json_loadb(s, len, flags, ...)
 * accepts and building the same value (flags JSON_REJECT_DUPLICATES or 0,
 * the only ones honoured): an object or an array, strict RFC 8259 grammar,
 * valid UTF-8, no \u0000, integers that fit json_int_t, finite reals, at
 * most 2048 levels; a repeated key refused with JSON_REJECT_DUPLICATES, else
 * the last value kept. Returns the value (caller owns), or NULL with e (may
 * be NULL) filled, out of memory included; s NULL is "no text". One
 * difference: a NUL byte is always refused (jansson lets one through after a
 * number). For what arrives on the wire; jansson still reads files (its
 * errors carry line and column, for people). Several times faster than
 * jansson's parser, which reads a byte at a time through its stream. */
json_t *gt_json_parse(const char *s, size_t len, size_t flags, gt_json_error_t *e);

/* Removes in place the whitespace outside strings of the JSON text (NUL
 * terminated), as PostgreSQL writes jsonb ({"a": 1, "b": [1, 2]}): the same
 * value, compact, in the same order. Returns the new length. */
size_t gt_json_compact(char *text);

#endif
