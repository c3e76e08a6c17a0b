/* hf_endpoint.c - the hf_endpoint runtime: Hugging Face Inference Endpoints.
 * generate: POST {endpoint} {"inputs", "parameters"} (text-generation, TGI);
 * chat: POST {endpoint}/v1/chat/completions (TGI's Messages API, which applies
 * the model's own chat template); embed: POST {endpoint} {"inputs"}
 * (feature-extraction, TEI). Bearer token; usage from "details". */
#include <stdio.h>
#include <string.h>

#include "json_text.h"
#include "provider.h"
#include "wire_input.h"

/* text-generation parameters in TGI's names. TGI refuses temperature 0 and
 * top_p outside (0, 1): greedy decoding is its default, so those are left out. */
static int generation_parameters(const gt_wire_task_t *t, json_t *params)
{
    const json_t *v;
    int rc = 0;
    if ((v = gt_wire_param(t, "max_tokens")) && json_is_integer(v))
        rc |= json_object_set(params, "max_new_tokens", (json_t *)v);
    if ((v = gt_wire_param(t, "temperature")) && json_is_number(v) && json_number_value(v) > 0)
        rc |= json_object_set(params, "temperature", (json_t *)v);
    if ((v = gt_wire_param(t, "top_p")) && json_is_number(v) && json_number_value(v) > 0 &&
        json_number_value(v) < 1)
        rc |= json_object_set(params, "top_p", (json_t *)v);
    if ((v = gt_wire_param(t, "stop")) && json_is_array(v))
        rc |= json_object_set(params, "stop", (json_t *)v);
    if ((v = gt_wire_param(t, "seed")) && json_is_integer(v))
        rc |= json_object_set(params, "seed", (json_t *)v);
    /* details: generated_tokens; decoder_input_details: the prompt's tokens (prefill). */
    rc |= json_object_set_new(params, "details", json_true());
    rc |= json_object_set_new(params, "decoder_input_details", json_true());
    rc |= json_object_set_new(params, "return_full_text", json_false());
    return rc ? -1 : 0;
}

/* The same for the Messages API, in OpenAI's names. */
static int chat_parameters(const gt_wire_task_t *t, json_t *body)
{
    static const char *const keys[] = {
        "max_tokens",       "temperature",       "top_p", "stop", "seed",
        "presence_penalty", "frequency_penalty", NULL};
    int rc = 0;
    for (const char *const *k = keys; *k; k++) {
        const json_t *v = gt_wire_param(t, *k);
        if (v)
            rc |= json_object_set(body, *k, (json_t *)v);
    }
    return rc ? -1 : 0;
}

static int build(const gt_provider_t *p, const gt_wire_task_t *t, const gt_wire_auth_t *auth,
                 gt_wire_request_t *out, const char **why)
{
    json_t *body = json_object();
    char url[2048];
    int rc = -1;
    (void)auth;
    if (!body)
        goto oom;
    if (!p->endpoint || !*p->endpoint) {
        *why = "hf_endpoint needs the endpoint's URL";
        goto out;
    }
    if (strcmp(t->kind, "chat") == 0) {
        const json_t *msgs = gt_wire_chat_messages(t->input);
        if (!msgs) {
            *why = "chat input must be a non-empty array of {role, content} messages";
            goto out;
        }
        /* TGI ignores "model" (one model per endpoint); "tgi" is its documented placeholder. */
        if (json_object_set_new(body, "model", json_string(t->model ? t->model : "tgi")) ||
            json_object_set(body, "messages", (json_t *)msgs) || chat_parameters(t, body))
            goto oom;
        snprintf(url, sizeof(url), "%s/v1/chat/completions", p->endpoint);
    } else if (strcmp(t->kind, "embed") == 0) {
        if (!gt_wire_embed_input_ok(t->input)) {
            *why = "embed input must be a string or an array of strings";
            goto out;
        }
        if (json_object_set(body, "inputs", (json_t *)t->input))
            goto oom;
        snprintf(url, sizeof(url), "%s", p->endpoint);
    } else {
        if (!json_is_string(t->input)) {
            *why = "generate input must be a string";
            goto out;
        }
        json_t *params = json_object();
        if (!params || json_object_set(body, "inputs", (json_t *)t->input) ||
            json_object_set_new(body, "parameters", params) || generation_parameters(t, params))
            goto oom;
        snprintf(url, sizeof(url), "%s", p->endpoint);
    }
    if (gt_wire_request_init(out, "POST", url, body) != 0 ||
        gt_wire_header_add(out, "Content-Type: application/json") != 0 ||
        gt_wire_header_add(out, "Accept: application/json") != 0 ||
        (p->api_key && gt_wire_header_add(out, "Authorization: Bearer %s", p->api_key) != 0) ||
        (t->traceparent && gt_wire_header_add(out, "traceparent: %s", t->traceparent) != 0)) {
        gt_wire_request_free(out);
        goto oom;
    }
    rc = 0;
    goto out;
oom:
    *why = "out of memory";
out:
    json_decref(body);
    return rc;
}

/* One embedding: a non-empty array of numbers. */
static int is_vector(const json_t *v)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return 0;
    size_t i;
    const json_t *x;
    json_array_foreach (v, i, x)
        if (!json_is_number(x))
            return 0;
    return 1;
}

static int parse_embed(const gt_wire_task_t *t, json_t *doc, gt_wire_answer_t *out,
                       const char **why)
{
    size_t want = json_is_array(t->input) ? json_array_size(t->input) : 1;
    json_t *all = NULL;
    if (want == 1 && is_vector(doc)) { /* the pipeline's answer to a single string */
        all = json_pack("[O]", doc);
    } else if (json_is_array(doc) && json_array_size(doc) == want) {
        size_t i;
        json_t *v;
        json_array_foreach (doc, i, v)
            if (!is_vector(v)) {
                /* [[[...]]]: per-token features, the endpoint does no pooling. */
                *why = json_is_array(json_array_get(v, 0))
                           ? "response holds per-token features; deploy a pooling "
                             "(sentence-embedding) model"
                           : "response is not an array of embeddings";
                return -1;
            }
        all = json_incref(doc);
    } else {
        *why = "response is not one embedding per input";
        return -1;
    }
    out->output = all ? json_pack("{s:O}", "embedding", json_array_get(all, 0)) : NULL;
    if (out->output && want > 1)
        json_object_set(out->output, "embeddings", all);
    json_decref(all);
    if (!out->output) {
        *why = "out of memory";
        return -1;
    }
    /* Feature extraction reports no usage. */
    return 0;
}

static int parse(const gt_wire_task_t *t, const char *body, size_t len, gt_wire_answer_t *out,
                 const char **why)
{
    json_t *doc = gt_json_parse(body, len, 0, NULL);
    int rc = -1;
    out->output = NULL;
    out->prompt_tokens = out->completion_tokens = -1;
    if (!doc) {
        *why = "response is not JSON";
        goto out;
    }
    if (json_is_object(doc) && json_is_string(json_object_get(doc, "error"))) {
        *why = "response is an error object";
        goto out;
    }
    if (strcmp(t->kind, "embed") == 0) {
        rc = parse_embed(t, doc, out, why);
        goto out;
    }
    if (strcmp(t->kind, "chat") == 0) {
        json_t *choice = json_array_get(json_object_get(doc, "choices"), 0);
        json_t *text = json_object_get(json_object_get(choice, "message"), "content");
        if (!json_is_string(text)) {
            *why = "response has no choices[0].message.content";
            goto out;
        }
        out->output = json_pack("{s:O}", "text", text);
        json_t *fr = json_object_get(choice, "finish_reason");
        if (out->output && json_is_string(fr))
            json_object_set(out->output, "finish_reason", fr);
        json_t *usage = json_object_get(doc, "usage");
        out->prompt_tokens = gt_wire_count(usage, "prompt_tokens");
        out->completion_tokens = gt_wire_count(usage, "completion_tokens");
    } else {
        /* [{"generated_text", "details"}] (Inference Endpoints) or the object alone (TGI
         * /generate). */
        json_t *g = json_is_array(doc) ? json_array_get(doc, 0) : doc;
        json_t *text = json_object_get(g, "generated_text");
        if (!json_is_string(text)) {
            *why = "response has no generated_text";
            goto out;
        }
        out->output = json_pack("{s:O}", "text", text);
        json_t *details = json_object_get(g, "details");
        json_t *fr = json_object_get(details, "finish_reason");
        if (out->output && json_is_string(fr))
            json_object_set(out->output, "finish_reason", fr);
        out->completion_tokens = gt_wire_count(details, "generated_tokens");
        json_t *prefill = json_object_get(details, "prefill");
        if (json_is_array(prefill))
            out->prompt_tokens = (int64_t)json_array_size(prefill);
    }
    if (!out->output) {
        *why = "out of memory";
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) {
        json_decref(out->output);
        out->output = NULL;
    }
    json_decref(doc);
    return rc;
}

static void check(gt_cfg_ctx_t *c, const gt_provider_t *p, const char *path)
{
    if (!p->endpoint)
        gt_cfg_problem(c, path, "endpoint is required for runtime hf_endpoint");
    if (!p->api_key)
        gt_cfg_problem(c, path, "api_key (or api_key_file) is required for runtime hf_endpoint");
}

const gt_runtime_t gt_runtime_hf_endpoint = {"hf_endpoint", 0, build, parse, check};
