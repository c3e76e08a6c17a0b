/* vertex.c - the vertex_gemini runtime: Vertex AI Gemini generateContent
 * (generate, chat) and text-embedding models' :predict (embed), with an
 * OAuth2 bearer token from the provider's service account (gcp_auth.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_text.h"
#include "provider.h"
#include "wire_input.h"

/* {endpoint}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{verb} */
static int model_url(const gt_provider_t *p, const char *model, const char *verb, char *url,
                     size_t len)
{
    char base[512];
    const char *loc = p->location ? p->location : "";
    if (p->endpoint && *p->endpoint)
        snprintf(base, sizeof(base), "%s", p->endpoint);
    else if (strcmp(loc, "global") == 0)
        snprintf(base, sizeof(base), "https://aiplatform.googleapis.com");
    else
        snprintf(base, sizeof(base), "https://%s-aiplatform.googleapis.com", loc);
    int n = snprintf(url, len, "%s/v1/projects/%s/locations/%s/publishers/google/models/%s:%s",
                     base, p->project ? p->project : "", loc, model, verb);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

/* Appends {role, parts:[{text}]} to contents, merging into the previous turn
 * when it has the same role (Gemini expects alternating turns). */
static int add_turn(json_t *contents, const char *role, const json_t *text)
{
    json_t *last = json_array_get(contents, json_array_size(contents) - 1);
    const char *lr = json_string_value(json_object_get(last, "role"));
    json_t *part = json_pack("{s:O}", "text", (json_t *)text);
    if (!part)
        return -1;
    if (lr && strcmp(lr, role) == 0)
        return json_array_append_new(json_object_get(last, "parts"), part);
    return json_array_append_new(contents, json_pack("{s:s, s:[o]}", "role", role, "parts", part));
}

static int generation_config(const gt_wire_task_t *t, json_t *body)
{
    static const struct {
        const char *ours, *theirs;
    } map[] = {{"temperature", "temperature"},
               {"max_tokens", "maxOutputTokens"},
               {"top_p", "topP"},
               {"top_k", "topK"},
               {"stop", "stopSequences"},
               {"seed", "seed"},
               {"presence_penalty", "presencePenalty"},
               {"frequency_penalty", "frequencyPenalty"}};
    json_t *gc = json_object();
    if (!gc)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        const json_t *v = gt_wire_param(t, map[i].ours);
        if (v)
            rc |= json_object_set(gc, map[i].theirs, (json_t *)v);
    }
    if (json_object_size(gc) == 0) {
        json_decref(gc);
        return rc ? -1 : 0;
    }
    return rc | json_object_set_new(body, "generationConfig", gc) ? -1 : 0;
}

static int build(const gt_provider_t *p, const gt_wire_task_t *t, const gt_wire_auth_t *auth,
                 gt_wire_request_t *out, const char **why)
{
    json_t *body = json_object();
    char url[2048];
    int rc = -1;
    if (!body)
        goto oom;
    if (!auth || !auth->access_token) {
        *why = "vertex_gemini needs an access token from the service account";
        goto out;
    }
    if (!t->model || !*t->model || !p->project || !p->location) {
        *why = "vertex_gemini needs a model, project and location";
        goto out;
    }
    if (strcmp(t->kind, "embed") == 0) {
        /* Text-embedding models (text-embedding-005, gemini-embedding-001) answer :predict. */
        if (!gt_wire_embed_input_ok(t->input)) {
            *why = "embed input must be a string or an array of strings";
            goto out;
        }
        json_t *inst = json_array();
        if (!inst || json_object_set_new(body, "instances", inst))
            goto oom;
        if (json_is_string(t->input)) {
            if (json_array_append_new(inst, json_pack("{s:O}", "content", (json_t *)t->input)))
                goto oom;
        } else {
            size_t i;
            json_t *s;
            json_array_foreach (t->input, i, s)
                if (json_array_append_new(inst, json_pack("{s:O}", "content", s)))
                    goto oom;
        }
        if (model_url(p, t->model, "predict", url, sizeof(url)) != 0) {
            *why = "model URL too long";
            goto out;
        }
    } else {
        json_t *contents = json_array(), *system = NULL;
        if (!contents || json_object_set_new(body, "contents", contents))
            goto oom;
        if (strcmp(t->kind, "chat") == 0) {
            const json_t *msgs = gt_wire_chat_messages(t->input);
            if (!msgs) {
                *why = "chat input must be a non-empty array of {role, content} messages";
                goto out;
            }
            size_t i;
            const json_t *m;
            json_array_foreach (msgs, i, m) {
                const char *role = json_string_value(json_object_get(m, "role"));
                const json_t *text = json_object_get(m, "content");
                if (strcmp(role, "system") == 0) {
                    if (!system && (!(system = json_pack("{s:[]}", "parts")) ||
                                    json_object_set_new(body, "systemInstruction", system)))
                        goto oom;
                    if (json_array_append_new(json_object_get(system, "parts"),
                                              json_pack("{s:O}", "text", (json_t *)text)))
                        goto oom;
                    continue;
                }
                if (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0) {
                    *why = "chat roles must be system, user or assistant";
                    goto out;
                }
                if (add_turn(contents, strcmp(role, "user") == 0 ? "user" : "model", text))
                    goto oom;
            }
            if (json_array_size(contents) == 0) {
                *why = "chat input has only system messages";
                goto out;
            }
        } else {
            if (!json_is_string(t->input)) {
                *why = "generate input must be a string";
                goto out;
            }
            if (add_turn(contents, "user", t->input))
                goto oom;
        }
        if (generation_config(t, body))
            goto oom;
        if (model_url(p, t->model, "generateContent", url, sizeof(url)) != 0) {
            *why = "model URL too long";
            goto out;
        }
    }
    if (gt_wire_request_init(out, "POST", url, body) != 0 ||
        gt_wire_header_add(out, "Content-Type: application/json") != 0 ||
        gt_wire_header_add(out, "Accept: application/json") != 0 ||
        gt_wire_header_add(out, "Authorization: Bearer %s", auth->access_token) != 0 ||
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

static int parse_embed(const gt_wire_task_t *t, json_t *doc, gt_wire_answer_t *out,
                       const char **why)
{
    json_t *preds = json_object_get(doc, "predictions"), *p;
    size_t want = json_is_array(t->input) ? json_array_size(t->input) : 1, i;
    json_t *all = json_array();
    int64_t tokens = 0;
    if (!all)
        goto oom;
    json_array_foreach (preds, i, p) {
        json_t *emb = json_object_get(p, "embeddings");
        json_t *values = json_object_get(emb, "values");
        if (!json_is_array(values) || json_array_size(values) == 0)
            break;
        json_array_append(all, values);
        /* token_count is documented as a number (integral, sometimes written 6.0). */
        json_t *tc = json_object_get(json_object_get(emb, "statistics"), "token_count");
        int64_t n =
            json_is_number(tc) && json_number_value(tc) >= 0 ? (int64_t)json_number_value(tc) : -1;
        tokens = tokens >= 0 && n >= 0 ? tokens + n : -1;
    }
    if (json_array_size(all) != want || json_array_size(preds) != want) {
        json_decref(all);
        *why = "response has not one predictions[].embeddings.values per input";
        return -1;
    }
    out->output = json_pack("{s:O}", "embedding", json_array_get(all, 0));
    if (out->output && want > 1)
        json_object_set(out->output, "embeddings", all);
    json_decref(all);
    if (!out->output)
        goto oom;
    out->prompt_tokens = tokens;
    out->completion_tokens = tokens >= 0 ? 0 : -1;
    return 0;
oom:
    *why = "out of memory";
    return -1;
}

static int parse(const gt_wire_task_t *t, const char *body, size_t len, gt_wire_answer_t *out,
                 const char **why)
{
    json_t *doc = gt_json_parse(body, len, 0, NULL);
    int rc = -1;
    char *text = NULL;
    out->output = NULL;
    out->prompt_tokens = out->completion_tokens = -1;
    if (!json_is_object(doc)) {
        *why = "response is not a JSON object";
        goto out;
    }
    if (strcmp(t->kind, "embed") == 0) {
        rc = parse_embed(t, doc, out, why);
        goto out;
    }
    json_t *cand = json_array_get(json_object_get(doc, "candidates"), 0);
    if (!cand) {
        /* A blocked prompt answers 200 with promptFeedback.blockReason and no candidates. */
        *why = json_object_get(json_object_get(doc, "promptFeedback"), "blockReason")
                   ? "prompt blocked by Vertex AI safety filters (promptFeedback.blockReason)"
                   : "response has no candidates";
        goto out;
    }
    json_t *parts = json_object_get(json_object_get(cand, "content"), "parts"), *part;
    size_t i;
    json_array_foreach (parts, i, part) {
        const char *s = json_string_value(json_object_get(part, "text"));
        if (s && gt_wire_join(&text, "", s) != 0) {
            *why = "out of memory";
            goto out;
        }
    }
    if (!text) {
        *why = json_is_string(json_object_get(cand, "finishReason"))
                   ? "candidate has no text parts (see finishReason)"
                   : "response has no candidates[0].content.parts[].text";
        goto out;
    }
    out->output = json_pack("{s:s}", "text", text);
    json_t *fr = json_object_get(cand, "finishReason");
    if (out->output && json_is_string(fr))
        json_object_set(out->output, "finish_reason", fr);
    if (!out->output) {
        *why = "out of memory";
        goto out;
    }
    json_t *usage = json_object_get(doc, "usageMetadata");
    out->prompt_tokens = gt_wire_count(usage, "promptTokenCount");
    out->completion_tokens = gt_wire_count(usage, "candidatesTokenCount");
    if (usage && out->completion_tokens < 0 && out->prompt_tokens >= 0)
        out->completion_tokens = 0; /* omitted when the candidate is empty */
    rc = 0;
out:
    free(text);
    json_decref(doc);
    return rc;
}

static void check(gt_cfg_ctx_t *c, const gt_provider_t *p, const char *path)
{
    if (!p->credentials)
        gt_cfg_problem(c, path, "credentials_file is required for runtime vertex_gemini");
    if (!p->project || !p->location)
        gt_cfg_problem(c, path, "project and location are required for runtime vertex_gemini");
}

const gt_runtime_t gt_runtime_vertex_gemini = {"vertex_gemini", 1, build, parse, check};
