/* provider.h - the wire contract of a hosted provider runtime: build the HTTP
 * request for a task, map the provider's answer back. Pure functions; the call
 * engine does HTTP, retries, slots, breakers and fallbacks. */
#ifndef GT_PROVIDER_H
#define GT_PROVIDER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "config_section.h"

/* What a runtime needs from a task. Borrowed. */
typedef struct gt_wire_task {
    const char *kind;         /* "generate", "chat" or "embed" */
    const json_t *input;      /* string, chat messages array, or array of strings (embed) */
    const json_t *parameters; /* object or NULL: temperature, max_tokens, top_p, stop ... */
    const char *model;        /* the provider's model id (gt_model_t.provider_model) */
    const char *traceparent;  /* W3C trace context to forward, or NULL */
} gt_wire_task_t;

/* An HTTP request ready to send. Every field is owned: gt_wire_request_free. */
typedef struct gt_wire_request {
    char *method; /* "POST" */
    char *url;
    char **headers; /* NULL-terminated "Name: value" */
    char *body;
    size_t body_len;
} gt_wire_request_t;

void gt_wire_request_free(gt_wire_request_t *r);

/* Helpers for runtimes' build functions. init zeroes r and sets method, url
 * and the compact JSON of body (borrowed). header_add appends one printf-style
 * "Name: value". Both return 0 or -1 on out of memory (r stays freeable). */
int gt_wire_request_init(gt_wire_request_t *r, const char *method, const char *url,
                         const json_t *body);
int gt_wire_header_add(gt_wire_request_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A provider's successful answer, in Gantry's terms. output is owned by the
 * caller: {"text": ...} for generate/chat, {"embedding": [...]} (and
 * "embeddings": [[...], ...] for several inputs) for embed. */
typedef struct gt_wire_answer {
    json_t *output;
    int64_t prompt_tokens,
        completion_tokens; /* from the provider's usage fields; -1: not reported */
} gt_wire_answer_t;

/* Context a build may need besides the task. */
typedef struct gt_wire_auth {
    const char *access_token; /* OAuth2 bearer (vertex_gemini), or NULL */
    time_t now;               /* request time (SigV4 X-Amz-Date) */
} gt_wire_auth_t;

typedef struct gt_runtime {
    const char *name; /* the runtime's name in configuration */
    int needs_oauth;  /* build needs auth->access_token (service-account token) */
    /* Builds the request. Returns 0, or -1 with *why set (static text) when
     * the task cannot be expressed for this provider (e.g. embed on a
     * chat-only API): the task fails with code "unsupported_input". */
    int (*build)(const gt_provider_t *p, const gt_wire_task_t *t, const gt_wire_auth_t *auth,
                 gt_wire_request_t *out, const char **why);
    /* Maps a 2xx body. Returns 0, or -1 with *why set when the body does not
     * have the documented shape (the task fails with "provider_bad_response"). */
    int (*parse)(const gt_wire_task_t *t, const char *body, size_t len, gt_wire_answer_t *out,
                 const char **why);
    /* Reports (gt_cfg_problem at path) what providers.<name> lacks for this
     * runtime, at configuration load (workers/worker_config.c). */
    void (*check)(gt_cfg_ctx_t *c, const gt_provider_t *p, const char *path);
} gt_runtime_t;

/* THE table of wire runtimes, in the order they are listed to users. Adding a
 * provider is one file that defines `const gt_runtime_t gt_runtime_<name>`
 * and one X(<name>) here; the name is also its "runtime" in configuration. */
#define GT_WIRE_RUNTIMES(X) X(openai) X(hf_endpoint) X(vertex_gemini) X(bedrock_anthropic)

#define GT_RUNTIME_DECLARE(n) extern const gt_runtime_t gt_runtime_##n;
GT_WIRE_RUNTIMES(GT_RUNTIME_DECLARE)
#undef GT_RUNTIME_DECLARE

/* The runtime called name, or NULL ("hostedai" is not a wire runtime). */
const gt_runtime_t *gt_runtime_find(const char *name);
/* The names of the table, ", "-separated ("openai, hf_endpoint, ..."). */
const char *gt_runtime_names(void);

/* ---- the call engine ---------------------------------------------------------
 * One per worker. A call: breaker check -> slot (when the provider or the
 * tenant has limits) -> build -> HTTP -> parse, with retries (cfg retry
 * policy of the provider: timeouts, 408, 429 and 5xx; Retry-After honoured),
 * the provider's inference timeout and the task deadline (status expired).
 * Whatever ends the call, its slot is released. */
#include <uv.h>

#include "http.h"
#include "runtime.h"

typedef struct gt_prov_engine gt_prov_engine_t;
typedef struct gt_prov_call gt_prov_call_t;

/* cfg, http and worker_id are borrowed and outlive the engine. emit publishes
 * breaker.opened / breaker.half_open / breaker.closed. Returns NULL with a
 * reason in err (out of memory, PostgreSQL needed for limits but not set). */
gt_prov_engine_t *gt_prov_engine_new(uv_loop_t *loop, gt_http_t *http, const gt_config_t *cfg,
                                     const char *worker_id, gt_event_fn emit, void *emit_arg,
                                     char *err, size_t errlen);

/* The callback (gt_rt_done_cb, call: the gt_prov_call_t) runs exactly once
 * unless cancelled; out->provider names the provider; out is valid only during
 * the call. As a runtime (gt_runtime_ops_hosted, ctx: the engine) it serves
 * the models whose runtime is in the wire table (gt_runtime_find). */

/* Starts spec on spec->model's provider. spec is borrowed until cb. Returns
 * NULL when it cannot start (*code: "unknown_provider", "unsupported_runtime",
 * "out_of_memory"). */
gt_prov_call_t *gt_prov_start(gt_prov_engine_t *e, const gt_task_spec_t *spec, gt_rt_done_cb cb,
                              void *arg, const char **code);
/* Ends the call early (shutdown): cb runs with code "aborted". */
void gt_prov_abort(gt_prov_call_t *call);
/* Forgets cb; the call frees itself once its requests and timer are done. */
void gt_prov_cancel(gt_prov_call_t *call);

/* 1 when model's provider breaker refuses calls now (open, or half-open with
 * its trial out): a caller goes to the next fallback at once. */
int gt_prov_unavailable(gt_prov_engine_t *e, const gt_model_t *model);

/* Closes loop handles (slot polling, PostgreSQL); the loop must run after. */
void gt_prov_engine_close(gt_prov_engine_t *e);
void gt_prov_engine_free(gt_prov_engine_t *e);

#endif
