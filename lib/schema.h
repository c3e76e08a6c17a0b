/* schema.h - JSON Schema (draft 7 subset) validation of messages: compiled once
 * (lib/schema_compile.c), validated without allocation (lib/schema_validate.c). */
#ifndef GT_SCHEMA_H
#define GT_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

/*
 * Contracts in detail:
 * - gt_schema_new() keeps a reference on doc and borrows strings and values
 *   from it: the caller must not modify doc afterwards (it may drop its own
 *   reference). It fails, never ignores, on a keyword it does not implement,
 *   a remote or $id-relative $ref, a $id below the root, or a key that is not
 *   a keyword unless some local $ref points into it (a definitions container).
 * - gt_schema_validate() only reads the compiled schema: one gt_schema_t may be
 *   used by many threads at once. It allocates nothing except for
 *   propertyNames (a temporary string per key), on the error path, and for
 *   its first pattern match on a thread (PCRE2 match data, kept per thread).
 * - pattern/patternProperties are ECMA 262 regexes in the standard; PCRE2
 *   runs them as written, in UTF mode (schema_regex.h says with which options).
 *   Known differences from ECMAScript: \s, \d and \w are ASCII-only, and "."
 *   matches U+2028/U+2029.
 * - format "date-time" is checked (RFC 3339 section 5.6, leap seconds only at
 *   23:59:60 UTC); every other format is an annotation.
 */

typedef struct gt_schema gt_schema_t;

/* Compiles a schema document (takes a reference on doc). Returns NULL with a
 * reason in err when the schema uses something unsupported or is malformed. */
gt_schema_t *gt_schema_new(json_t *doc, char *err, size_t errlen);
/* Loads one of the embedded schemas by file name ("request.v1.json"). */
gt_schema_t *gt_schema_embedded(const char *name, char *err, size_t errlen);
void gt_schema_free(gt_schema_t *s);

/* Returns 0 when instance is valid, else -1 with the first error written into
 * err as "<json pointer>: <reason>" (e.g. "/kind: not one of the allowed values"). */
int gt_schema_validate(const gt_schema_t *s, const json_t *instance, char *err, size_t errlen);

#endif
