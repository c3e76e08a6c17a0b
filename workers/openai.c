/* openai.c - the openai runtime: any OpenAI-compatible server (OpenAI, vLLM, TGI,
 * llama.cpp): /v1/completions for generate, /v1/chat/completions for chat,
 * /v1/embeddings for embed; bearer key; tokens from the "usage" object. */
#include <stdio.h>
#include <string.h>

#include "json_text.h"
#include "provider.h"

/* Parameters passed through as they are; anything else is not OpenAI's. */
static const char *const passthrough[] = {
    "temperature",       "max_tokens", "top_p", "stop", "presence_penalty",
    "frequency_penalty", "seed",       "user",  NULL};

/* Chat input: an array of {role, content}, or {"messages": [...]}. */
static const json_t *chat_messages(const json_t *input)
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

static int embed_input_ok(const json_t *input)
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

static int build(const gt_provider_t *p, const gt_wire_task_t *t, const gt_wire_auth_t *auth,
                 gt_wire_request_t *out, const char **why)
{
    const char *path;
    json_t *body = json_pack("{s:s}", "model", t->model ? t->model : "");
    int rc = -1;
    (void)auth;
    if (!body) {
        *why = "out of memory";
        return -1;
    }
    if (strcmp(t->kind, "chat") == 0) {
        const json_t *msgs = chat_messages(t->input);
        if (!msgs) {
            *why = "chat input must be a non-empty array of {role, content} messages";
            goto out;
        }
        path = "/chat/completions";
        json_object_set_new(body, "messages", json_deep_copy(msgs));
    } else if (strcmp(t->kind, "embed") == 0) {
        if (!embed_input_ok(t->input)) {
            *why = "embed input must be a string or an array of strings";
            goto out;
        }
        path = "/embeddings";
        json_object_set_new(body, "input", json_deep_copy(t->input));
    } else {
        if (!json_is_string(t->input)) {
            *why = "generate input must be a string";
            goto out;
        }
        path = "/completions";
        json_object_set_new(body, "prompt", json_deep_copy(t->input));
    }
    if (strcmp(t->kind, "embed") != 0 && json_is_object(t->parameters))
        for (const char *const *k = passthrough; *k; k++) {
            json_t *v = json_object_get(t->parameters, *k);
            if (v)
                json_object_set_new(body, *k, json_deep_copy(v));
        }
    /* The endpoint is the server's base URL, with or without its /v1. */
    size_t el = strlen(p->endpoint);
    int has_v1 = el >= 3 && strcmp(p->endpoint + el - 3, "/v1") == 0;
    char url[2048];
    snprintf(url, sizeof(url), "%s%s%s", p->endpoint, has_v1 ? "" : "/v1", path);
    if (gt_wire_request_init(out, "POST", url, body) != 0 ||
        gt_wire_header_add(out, "Content-Type: application/json") != 0 ||
        (p->api_key && gt_wire_header_add(out, "Authorization: Bearer %s", p->api_key) != 0) ||
        (t->traceparent && gt_wire_header_add(out, "traceparent: %s", t->traceparent) != 0)) {
        gt_wire_request_free(out);
        *why = "out of memory";
        goto out;
    }
    rc = 0;
out:
    json_decref(body);
    return rc;
}

static int64_t usage_field(const json_t *usage, const char *key)
{
    const json_t *v = json_object_get(usage, key);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v) : -1;
}

static int parse(const gt_wire_task_t *t, const char *body, size_t len, gt_wire_answer_t *out,
                 const char **why)
{
    json_t *doc = gt_json_parse(body, len, 0, NULL);
    int rc = -1;
    out->output = NULL;
    out->prompt_tokens = out->completion_tokens = -1;
    if (!json_is_object(doc)) {
        *why = "response is not a JSON object";
        goto out;
    }
    if (strcmp(t->kind, "embed") == 0) {
        json_t *data = json_object_get(doc, "data");
        size_t n = json_array_size(data), i;
        json_t *all = json_array(), *d;
        json_array_foreach (data, i, d) {
            json_t *e = json_object_get(d, "embedding");
            if (!json_is_array(e))
                break;
            json_array_append(all, e);
        }
        if (n == 0 || json_array_size(all) != n) {
            json_decref(all);
            *why = "response has no data[].embedding";
            goto out;
        }
        out->output = json_pack("{s:O}", "embedding", json_array_get(all, 0));
        if (n > 1)
            json_object_set_new(out->output, "embeddings", all);
        else
            json_decref(all);
    } else {
        json_t *choice = json_array_get(json_object_get(doc, "choices"), 0);
        json_t *text = strcmp(t->kind, "chat") == 0
                           ? json_object_get(json_object_get(choice, "message"), "content")
                           : json_object_get(choice, "text");
        if (!json_is_string(text)) {
            *why = strcmp(t->kind, "chat") == 0 ? "response has no choices[0].message.content"
                                                : "response has no choices[0].text";
            goto out;
        }
        out->output = json_pack("{s:O}", "text", text);
        json_t *fr = json_object_get(choice, "finish_reason");
        if (out->output && json_is_string(fr))
            json_object_set(out->output, "finish_reason", fr);
    }
    if (!out->output) {
        *why = "out of memory";
        goto out;
    }
    json_t *usage = json_object_get(doc, "usage");
    out->prompt_tokens = usage_field(usage, "prompt_tokens");
    out->completion_tokens = usage_field(usage, "completion_tokens");
    if (out->completion_tokens < 0 && strcmp(t->kind, "embed") == 0 && out->prompt_tokens >= 0)
        out->completion_tokens = 0; /* embeddings report prompt tokens only */
    rc = 0;
out:
    json_decref(doc);
    return rc;
}

static void check(gt_cfg_ctx_t *c, const gt_provider_t *p, const char *path)
{
    if (!p->endpoint)
        gt_cfg_problem(c, path, "endpoint is required for runtime openai");
}

const gt_runtime_t gt_runtime_openai = {"openai", 0, build, parse, check};
