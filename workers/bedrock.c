/* bedrock.c - the bedrock_anthropic runtime: Amazon Bedrock InvokeModel with
 * the Anthropic Messages body, signed with AWS Signature Version 4 (service
 * "bedrock"). Endpoint default: https://bedrock-runtime.{region}.amazonaws.com. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_text.h"
#include "provider.h"
#include "sigv4.h"
#include "wire_input.h"

/* Anthropic requires max_tokens; this is used when the task sets none. */
#define BEDROCK_DEFAULT_MAX_TOKENS 1024

/* A model id or ARN as one path segment: unreserved bytes kept, the rest %XX
 * (':' -> %3A, '/' -> %2F), the way the AWS SDKs send it. */
static void path_segment(char *dst, size_t len, const char *src)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *src && o + 4 < len; src++) {
        unsigned char c = (unsigned char)*src;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '%';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    dst[o] = '\0';
}

/* Anthropic wants alternating user/assistant turns: consecutive messages of
 * one role are joined into one turn (blank line between). */
static int add_turn(json_t *messages, const char *role, const char *text)
{
    json_t *last = json_array_get(messages, json_array_size(messages) - 1);
    const char *lr = json_string_value(json_object_get(last, "role"));
    if (lr && strcmp(lr, role) == 0) {
        char *joined = strdup(json_string_value(json_object_get(last, "content")));
        if (!joined || gt_wire_join(&joined, "\n\n", text) != 0) {
            free(joined);
            return -1;
        }
        int rc = json_object_set_new(last, "content", json_string(joined));
        free(joined);
        return rc;
    }
    return json_array_append_new(messages, json_pack("{s:s, s:s}", "role", role, "content", text));
}

static int body_of(const gt_wire_task_t *t, json_t *body, const char **why)
{
    json_t *messages = json_array();
    char *system = NULL;
    int rc = -1;
    if (!messages || json_object_set_new(body, "messages", messages))
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
            const char *text = json_string_value(json_object_get(m, "content"));
            if (strcmp(role, "system") == 0) {
                if (gt_wire_join(&system, "\n\n", text) != 0)
                    goto oom;
            } else if (strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0) {
                if (add_turn(messages, role, text) != 0)
                    goto oom;
            } else {
                *why = "chat roles must be system, user or assistant";
                goto out;
            }
        }
        json_t *first = json_array_get(messages, 0);
        if (!first || strcmp(json_string_value(json_object_get(first, "role")), "user") != 0) {
            *why = "Anthropic models need the first non-system message to be the user's";
            goto out;
        }
    } else {
        if (!json_is_string(t->input)) {
            *why = "generate input must be a string";
            goto out;
        }
        if (add_turn(messages, "user", json_string_value(t->input)) != 0)
            goto oom;
    }
    if (system && json_object_set_new(body, "system", json_string(system)))
        goto oom;
    const json_t *mt = gt_wire_param(t, "max_tokens");
    if (json_object_set_new(body, "max_tokens",
                            json_is_integer(mt) ? json_incref((json_t *)mt)
                                                : json_integer(BEDROCK_DEFAULT_MAX_TOKENS)))
        goto oom;
    static const struct {
        const char *ours, *theirs;
    } map[] = {{"temperature", "temperature"},
               {"top_p", "top_p"},
               {"top_k", "top_k"},
               {"stop", "stop_sequences"}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        const json_t *v = gt_wire_param(t, map[i].ours);
        if (v && json_object_set(body, map[i].theirs, (json_t *)v))
            goto oom;
    }
    rc = 0;
    goto out;
oom:
    *why = "out of memory";
out:
    free(system);
    return rc;
}

static int build(const gt_provider_t *p, const gt_wire_task_t *t, const gt_wire_auth_t *auth,
                 gt_wire_request_t *out, const char **why)
{
    json_t *body = NULL;
    gt_sigv4_t sig = {0};
    char base[512], model[512], url[2048], err[128];
    int rc = -1;
    if (strcmp(t->kind, "embed") == 0) {
        *why = "bedrock_anthropic cannot embed: Anthropic models on Bedrock have no embeddings "
               "API (use an embedding model on another runtime)";
        return -1;
    }
    if (!p->region || !p->access_key_id || !p->secret_access_key) {
        *why = "bedrock_anthropic needs region, access_key_id and secret_access_key";
        return -1;
    }
    if (!t->model || !*t->model) {
        *why = "bedrock_anthropic needs the Bedrock model id";
        return -1;
    }
    body = json_pack("{s:s}", "anthropic_version", "bedrock-2023-05-31");
    if (!body) {
        *why = "out of memory";
        return -1;
    }
    if (body_of(t, body, why) != 0)
        goto out;
    if (p->endpoint && *p->endpoint)
        snprintf(base, sizeof(base), "%s", p->endpoint);
    else
        snprintf(base, sizeof(base), "https://bedrock-runtime.%s.amazonaws.com", p->region);
    path_segment(model, sizeof(model), t->model);
    snprintf(url, sizeof(url), "%s/model/%s/invoke", base, model);

    /* Host as the server sees it (the URL's authority) and the path SigV4 signs. */
    const char *auth_start = strstr(url, "://");
    auth_start = auth_start ? auth_start + 3 : url;
    const char *path = strchr(auth_start, '/');
    char host[512];
    snprintf(host, sizeof(host), "%.*s", (int)(path - auth_start), auth_start);
    if (gt_wire_request_init(out, "POST", url, body) != 0)
        goto oom;
    char host_hdr[600];
    snprintf(host_hdr, sizeof(host_hdr), "Host: %s", host);
    const char *const signed_hdrs[] = {"Accept: application/json", "Content-Type: application/json",
                                       host_hdr, NULL};
    gt_sigv4_params_t sp = {.access_key_id = p->access_key_id,
                            .secret_access_key = p->secret_access_key,
                            .session_token = p->session_token,
                            .region = p->region,
                            .service = "bedrock",
                            .now = auth ? auth->now : 0,
                            .normalize = 1};
    if (gt_sigv4_sign(&sp, "POST", path, signed_hdrs, out->body, out->body_len, &sig, err,
                      sizeof(err)) != 0) {
        gt_wire_request_free(out);
        *why = "request signing failed";
        goto out;
    }
    if (gt_wire_header_add(out, "%s", host_hdr) != 0 ||
        gt_wire_header_add(out, "Content-Type: application/json") != 0 ||
        gt_wire_header_add(out, "Accept: application/json") != 0 ||
        gt_wire_header_add(out, "X-Amz-Date: %s", sig.amz_date) != 0 ||
        (p->session_token && *p->session_token &&
         gt_wire_header_add(out, "X-Amz-Security-Token: %s", p->session_token) != 0) ||
        gt_wire_header_add(out, "Authorization: %s", sig.authorization) != 0 ||
        (t->traceparent && gt_wire_header_add(out, "traceparent: %s", t->traceparent) != 0)) {
        gt_wire_request_free(out);
        goto oom;
    }
    rc = 0;
    goto out;
oom:
    *why = "out of memory";
out:
    gt_sigv4_free(&sig);
    json_decref(body);
    return rc;
}

static int parse(const gt_wire_task_t *t, const char *body, size_t len, gt_wire_answer_t *out,
                 const char **why)
{
    json_t *doc = gt_json_parse(body, len, 0, NULL);
    char *text = NULL;
    int rc = -1;
    (void)t;
    out->output = NULL;
    out->prompt_tokens = out->completion_tokens = -1;
    if (!json_is_object(doc)) {
        *why = "response is not a JSON object";
        goto out;
    }
    json_t *content = json_object_get(doc, "content"), *block;
    if (!json_is_array(content)) {
        *why = "response has no content[]";
        goto out;
    }
    size_t i;
    json_array_foreach (content, i, block) {
        const char *type = json_string_value(json_object_get(block, "type"));
        const char *s = json_string_value(json_object_get(block, "text"));
        if (type && strcmp(type, "text") == 0 && s && gt_wire_join(&text, "", s) != 0) {
            *why = "out of memory";
            goto out;
        }
    }
    out->output = json_pack("{s:s}", "text", text ? text : "");
    json_t *sr = json_object_get(doc, "stop_reason");
    if (out->output && json_is_string(sr))
        json_object_set(out->output, "finish_reason", sr);
    if (!out->output) {
        *why = "out of memory";
        goto out;
    }
    json_t *usage = json_object_get(doc, "usage");
    out->prompt_tokens = gt_wire_count(usage, "input_tokens");
    out->completion_tokens = gt_wire_count(usage, "output_tokens");
    rc = 0;
out:
    free(text);
    json_decref(doc);
    return rc;
}

static void check(gt_cfg_ctx_t *c, const gt_provider_t *p, const char *path)
{
    if (!p->region)
        gt_cfg_problem(c, path, "region is required for runtime bedrock_anthropic");
    if (!p->access_key_id || !p->secret_access_key)
        gt_cfg_problem(c, path,
                       "access_key_id and secret_access_key (or secret_access_key_file) "
                       "are required for runtime bedrock_anthropic");
}

const gt_runtime_t gt_runtime_bedrock_anthropic = {"bedrock_anthropic", 0, build, parse, check};
