/* wire_input.c - task input and parameter helpers for the wire runtimes. */
#include "wire_input.h"

#include <stdlib.h>
#include <string.h>

const json_t *gt_wire_chat_messages(const json_t *input)
{
    if (json_is_object(input))
        input = json_object_get(input, "messages");
    if (!json_is_array(input) || json_array_size(input) == 0)
        return NULL;
    size_t i;
    const json_t *m;
    json_array_foreach (input, i, m)
        if (!json_is_string(json_object_get(m, "role")) ||
            !json_is_string(json_object_get(m, "content")))
            return NULL;
    return input;
}

int gt_wire_embed_input_ok(const json_t *input)
{
    if (json_is_string(input))
        return 1;
    if (!json_is_array(input) || json_array_size(input) == 0)
        return 0;
    size_t i;
    const json_t *s;
    json_array_foreach (input, i, s)
        if (!json_is_string(s))
            return 0;
    return 1;
}

const json_t *gt_wire_param(const gt_wire_task_t *t, const char *key)
{
    return json_is_object(t->parameters) ? json_object_get(t->parameters, key) : NULL;
}

int64_t gt_wire_count(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v) : -1;
}

int gt_wire_join(char **dst, const char *sep, const char *src)
{
    size_t ol = *dst ? strlen(*dst) : 0, sl = *dst ? strlen(sep) : 0, n = strlen(src);
    char *p = realloc(*dst, ol + sl + n + 1);
    if (!p)
        return -1;
    memcpy(p + ol, sep, sl);
    memcpy(p + ol + sl, src, n + 1);
    *dst = p;
    return 0;
}
