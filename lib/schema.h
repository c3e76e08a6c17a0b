/* schema.h - JSON Schema (draft 7 subset) validation of messages. */
#ifndef GT_SCHEMA_H
#define GT_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

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
