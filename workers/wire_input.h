/* wire_input.h - reading a task's input and parameters, shared by the wire
 * runtimes (hf_endpoint, vertex_gemini, bedrock_anthropic). */
#ifndef GT_WIRE_INPUT_H
#define GT_WIRE_INPUT_H

#include <jansson.h>
#include <stdint.h>

#include "provider.h"

/* Chat input: an array of {role, content} with string contents, or
 * {"messages": [...]}. Returns the (borrowed) array, or NULL when invalid. */
const json_t *gt_wire_chat_messages(const json_t *input);

/* Embed input: a string or a non-empty array of strings. 1 when valid. */
int gt_wire_embed_input_ok(const json_t *input);

/* t->parameters[key] (borrowed), or NULL. */
const json_t *gt_wire_param(const gt_wire_task_t *t, const char *key);

/* obj[key] when it is a non-negative integer, else -1. */
int64_t gt_wire_count(const json_t *obj, const char *key);

/* Appends src to the malloc'd *dst with sep between (sep skipped while *dst
 * is NULL). Returns 0 or -1 on out of memory. */
int gt_wire_join(char **dst, const char *sep, const char *src);

#endif
