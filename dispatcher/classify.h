/* classify.h - maps a validated request to a model, lane, pool and resources. */
#ifndef GT_CLASSIFY_H
#define GT_CLASSIFY_H

#include <jansson.h>
#include <stdint.h>

#include "config.h"

typedef struct gt_route {
    const gt_model_t *model; /* borrowed from the configuration */
    int64_t input_chars;     /* size used for routing: the largest input, in code points */
} gt_route_t;

/* Resolves req (valid against request.v1) to a model: a named model must be
 * declared; "auto" takes the first routing rule that matches (hint, kind, input
 * size), else routing.default. Returns 0, or -1 with *code set to
 * "unknown_model", "no_route" or "too_large" and a reason in err. */
int gt_classify(const gt_config_t *cfg, const json_t *req, gt_route_t *out, const char **code,
                char *err, size_t errlen);

/* Characters (Unicode code points) of an input: a string, chat messages'
 * contents, or an array of strings. Never fails; non-text counts 0. */
int64_t gt_classify_input_chars(const json_t *input);

#endif
