/* schema_regex.h - JSON Schema "pattern" regexes (ECMA-262) compiled and
 * matched with PCRE2 in UTF mode; internal to lib/schema_*.c. */
#ifndef GT_SCHEMA_REGEX_H
#define GT_SCHEMA_REGEX_H

#include <stddef.h>

typedef struct gt__schema_re gt__schema_re_t;

/* Compiles an ECMA-262 pattern (UTF-8, as JSON strings are) with the options
 * that make PCRE2 read it the ECMAScript way: \uXXXX, an unset backreference
 * matching empty, "[]" and "[^]", "$" only at the end, "." not matching CR or
 * LF. JIT-compiled when the platform has it. Returns the compiled pattern, or
 * NULL with the reason (PCRE2's message and offset) in why. */
gt__schema_re_t *gt__schema_re_compile(const char *src, char *why, size_t whylen);

/* Returns 1 when re matches somewhere in s[0..len) (not anchored), 0 when it
 * does not, when s is not valid UTF-8 around any match, or when matching
 * passes its backtracking limits (a string that needs that much work is
 * refused rather than allowed). Thread-safe; allocates only the first time a
 * thread matches (a per-thread match buffer, freed when the thread exits). */
int gt__schema_re_match(const gt__schema_re_t *re, const char *s, size_t len);

/* Frees re; NULL is a no-op. */
void gt__schema_re_free(gt__schema_re_t *re);

#endif
