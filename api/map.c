/* map.c - a vendor request body (OpenAI chat/completions/embeddings line,
 * Anthropic Messages params) as a Gantry request: kind, model, input,
 * parameters. What cannot be mapped is refused with the reason. */
#include <stdio.h>
#include <string.h>

#include "api.h"

/* A message's content: a string, or an array of {type: text, text} parts. */
static json_t *content_text(const json_t *c)
{
    if (json_is_string(c))
        return json_incref((json_t *)c);
    if (!json_is_array(c) || !json_array_size(c))
        return NULL;
    size_t i, total = 0;
    json_t *part;
    json_array_foreach (c, i, part) {
        json_t *t = json_object_get(part, "text");
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!type || strcmp(type, "text") != 0 || !json_is_string(t))
            return NULL;
        total += json_string_length(t) + 1;
    }
    char *buf = malloc(total + 1);
    if (!buf)
        return NULL;
    size_t n = 0;
    json_array_foreach (c, i, part) {
        json_t *t = json_object_get(part, "text");
        if (n)
            buf[n++] = '\n';
        memcpy(buf + n, json_string_value(t), json_string_length(t));
        n += json_string_length(t);
    }
    json_t *s = json_stringn(buf, n);
    free(buf);
    return s;
}

static int role_ok(const char *r)
{
    return r && (!strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant") ||
                 !strcmp(r, "tool") || !strcmp(r, "developer"));
}

/* messages -> [{role, content: string}], with a system prompt first when given. */
static json_t *map_messages(const json_t *msgs, const json_t *system, char *why, size_t len)
{
    json_t *out = json_array();
    if (!out)
        return NULL;
    if (system) {
        json_t *t = content_text(system);
        if (!t) {
            snprintf(why, len, "system: must be a string or text blocks");
            goto bad;
        }
        json_array_append_new(out, json_pack("{s:s,s:o}", "role", "system", "content", t));
    }
    if (!json_is_array(msgs) || !json_array_size(msgs)) {
        snprintf(why, len, "messages: must be a non-empty array");
        goto bad;
    }
    size_t i;
    json_t *m;
    json_array_foreach (msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role_ok(role)) {
            snprintf(why, len, "messages[%zu].role: must be system, user, assistant or tool", i);
            goto bad;
        }
        json_t *t = content_text(json_object_get(m, "content"));
        if (!t) {
            snprintf(why, len, "messages[%zu].content: must be a string or text parts", i);
            goto bad;
        }
        json_array_append_new(out,
                              json_pack("{s:s,s:o}", "role",
                                        strcmp(role, "developer") ? role : "system", "content", t));
    }
    return out;
bad:
    json_decref(out);
    return NULL;
}

/* Copies the sampling parameters the request schema knows. */
static int map_params(const json_t *body, json_t *params, const char *max_key, char *why,
                      size_t len)
{
    json_t *v;
    if ((v = json_object_get(body, max_key)) ||
        (v = json_object_get(body, "max_completion_tokens"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            snprintf(why, len, "%s: must be a positive integer", max_key);
            return -1;
        }
        json_object_set(params, "max_tokens", v);
    }
    if ((v = json_object_get(body, "temperature"))) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 2) {
            snprintf(why, len, "temperature: must be a number in 0..2");
            return -1;
        }
        json_object_set(params, "temperature", v);
    }
    if ((v = json_object_get(body, "top_p"))) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
            snprintf(why, len, "top_p: must be a number in 0..1");
            return -1;
        }
        json_object_set(params, "top_p", v);
    }
    if ((v = json_object_get(body, "seed")) && json_is_integer(v))
        json_object_set(params, "seed", v);
    v = json_object_get(body, "stop");
    if (!v)
        v = json_object_get(body, "stop_sequences");
    if (json_is_string(v)) {
        json_object_set_new(params, "stop", json_pack("[O]", v));
    } else if (json_is_array(v)) {
        size_t i;
        json_t *s;
        json_array_foreach (v, i, s) {
            if (!json_is_string(s)) {
                snprintf(why, len, "stop: must be a string or strings");
                return -1;
            }
        }
        json_object_set(params, "stop", v);
    }
    return 0;
}

static json_t *request(const gt_api_config_t *ac, const char *kind, const json_t *body,
                       json_t *input, json_t *params, char *why, size_t len)
{
    const char *model = json_string_value(json_object_get(body, "model"));
    if (!model || !*model) {
        snprintf(why, len, "model: required");
        json_decref(input);
        json_decref(params);
        return NULL;
    }
    json_t *r = json_pack("{s:s,s:s,s:s,s:o}", "schema", "gantry.request.v1", "kind", kind, "model",
                          gt_api_model(ac, model), "input", input);
    if (r && json_object_size(params))
        json_object_set(r, "parameters", params);
    json_decref(params);
    return r;
}

json_t *gt_api_openai_body(const gt_api_config_t *ac, const char *endpoint, const json_t *body,
                           char *why, size_t len)
{
    if (!json_is_object(body)) {
        snprintf(why, len, "body: must be an object");
        return NULL;
    }
    if (json_is_true(json_object_get(body, "stream"))) {
        snprintf(why, len, "stream: not supported in a batch");
        return NULL;
    }
    json_t *params = json_object();
    json_t *input = NULL;
    if (!params)
        return NULL;
    if (!strcmp(endpoint, "/v1/chat/completions")) {
        json_t *msgs = map_messages(json_object_get(body, "messages"), NULL, why, len);
        if (!msgs || map_params(body, params, "max_tokens", why, len))
            goto bad_msgs;
        input = json_pack("{s:o}", "messages", msgs);
        return request(ac, "chat", body, input, params, why, len);
    bad_msgs:
        json_decref(msgs);
        goto bad;
    }
    if (!strcmp(endpoint, "/v1/completions")) {
        json_t *p = json_object_get(body, "prompt");
        if (json_is_array(p) && json_array_size(p) == 1)
            p = json_array_get(p, 0);
        if (!json_is_string(p)) {
            snprintf(why, len, "prompt: must be a string");
            goto bad;
        }
        if (map_params(body, params, "max_tokens", why, len))
            goto bad;
        return request(ac, "generate", body, json_incref(p), params, why, len);
    }
    if (!strcmp(endpoint, "/v1/embeddings")) {
        json_t *in = json_object_get(body, "input");
        if (json_is_array(in)) {
            size_t i;
            json_t *s;
            json_array_foreach (in, i, s) {
                if (!json_is_string(s)) {
                    snprintf(why, len,
                             "input: must be a string or strings (token arrays are not"
                             " supported)");
                    goto bad;
                }
            }
            if (!json_array_size(in)) {
                snprintf(why, len, "input: must not be empty");
                goto bad;
            }
        } else if (!json_is_string(in)) {
            snprintf(why, len, "input: must be a string or strings");
            goto bad;
        }
        return request(ac, "embed", body, json_incref(in), params, why, len);
    }
    snprintf(why, len, "endpoint %s: not supported", endpoint);
bad:
    json_decref(params);
    return NULL;
}

json_t *gt_api_anthropic_params(const gt_api_config_t *ac, const json_t *p, char *why, size_t len)
{
    if (!json_is_object(p)) {
        snprintf(why, len, "params: must be an object");
        return NULL;
    }
    if (!json_is_integer(json_object_get(p, "max_tokens"))) {
        snprintf(why, len, "params.max_tokens: required");
        return NULL;
    }
    json_t *params = json_object();
    json_t *msgs =
        map_messages(json_object_get(p, "messages"), json_object_get(p, "system"), why, len);
    if (!params || !msgs || map_params(p, params, "max_tokens", why, len)) {
        json_decref(params);
        json_decref(msgs);
        return NULL;
    }
    return request(ac, "chat", p, json_pack("{s:o}", "messages", msgs), params, why, len);
}
