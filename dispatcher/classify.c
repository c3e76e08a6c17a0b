/* classify.c - maps a validated request to a model, lane, pool and resources.
 * "auto" routes like the seeds: a "simple" hint or a short input goes to a
 * small model, "complex" or long inputs to a large one, all from configuration. */
#include <stdio.h>
#include <string.h>

#include "classify.h"

static int64_t utf8_chars(const char *s)
{
    int64_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80; /* count lead bytes only */
    return n;
}

int64_t gt_classify_input_chars(const json_t *input)
{
    if (json_is_string(input))
        return utf8_chars(json_string_value(input));
    int64_t n = 0;
    size_t i;
    json_t *e;
    if (json_is_array(input)) {
        json_array_foreach (input, i, e)
            n += gt_classify_input_chars(e);
        return n;
    }
    json_t *msgs = json_object_get(input, "messages");
    json_array_foreach (msgs, i, e)
        n += gt_classify_input_chars(json_object_get(e, "content"));
    return n;
}

static int rule_matches(const gt_route_rule_t *r, const char *hint, const char *kind, int64_t chars)
{
    if (r->hint && (!hint || strcmp(r->hint, hint) != 0))
        return 0;
    if (r->kind && strcmp(r->kind, kind) != 0)
        return 0;
    if (r->max_input_chars && chars > r->max_input_chars)
        return 0;
    if (r->min_input_chars && chars < r->min_input_chars)
        return 0;
    return 1;
}

int gt_classify(const gt_config_t *cfg, const json_t *req, gt_route_t *out, const char **code,
                char *err, size_t errlen)
{
    const char *model = json_string_value(json_object_get(req, "model"));
    const char *kind = json_string_value(json_object_get(req, "kind"));
    const char *hint = json_string_value(json_object_get(json_object_get(req, "routing"), "hint"));
    json_t *batch = json_object_get(req, "batch");

    /* A batch routes as one job: by its largest item, so every item fits the model. */
    int64_t chars = 0;
    if (batch) {
        size_t i;
        json_t *item;
        json_array_foreach (batch, i, item) {
            int64_t c = gt_classify_input_chars(item);
            chars = c > chars ? c : chars;
        }
    } else {
        chars = gt_classify_input_chars(json_object_get(req, "input"));
    }
    out->input_chars = chars;
    out->model = NULL;

    if (model && strcmp(model, "auto") == 0) {
        for (size_t i = 0; i < cfg->n_routes && !out->model; i++)
            if (rule_matches(&cfg->routes[i], hint, kind, chars))
                out->model = gt_config_model(cfg, cfg->routes[i].model);
        if (!out->model && cfg->default_model)
            out->model = gt_config_model(cfg, cfg->default_model);
        if (!out->model) {
            *code = "no_route";
            snprintf(err, errlen, "no routing rule matches and routing.default is not set");
            return -1;
        }
    } else {
        out->model = gt_config_model(cfg, model);
        if (!out->model) {
            *code = "unknown_model";
            snprintf(err, errlen, "model \"%.200s\" is not configured", model ? model : "");
            return -1;
        }
    }
    if (out->model->max_input_chars && chars > out->model->max_input_chars) {
        *code = "too_large";
        snprintf(err, errlen, "input of %lld characters exceeds %lld for model %s",
                 (long long)chars, (long long)out->model->max_input_chars, out->model->name);
        return -1;
    }
    return 0;
}
