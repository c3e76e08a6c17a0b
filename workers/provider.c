/* provider.c - hosted provider runtimes: the registry of wire formats and the
 * call engine (breaker -> slot -> build -> HTTP -> parse, with retries,
 * timeouts and the task deadline).
 *
 * A call holds references like a HostedAI call: one for its owner until it
 * finishes or is cancelled, one for its timer until the timer is closed, one
 * per HTTP request or token fetch in flight; it is freed when the last goes. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "clock.h"
#include "json_text.h"
#include "log.h"
#include "rand.h"
#include "provider.h"
#include "retry.h"
#include "slots.h"
#include "trace.h"

#if defined(__has_include)
#if __has_include("gcp_auth.h")
#include "gcp_auth.h"
#include "wstats.h"
#define GT_HAVE_GCP_AUTH 1
#endif
#endif

/* ---- wire helpers and registry --------------------------------------------- */

void gt_wire_request_free(gt_wire_request_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->headers && r->headers[i]; i++) {
        /* Headers carry keys and signatures: scrub before the memory is reused. */
        memset(r->headers[i], 0, strlen(r->headers[i]));
        free(r->headers[i]);
    }
    free(r->headers);
    free(r->method);
    free(r->url);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

int gt_wire_request_init(gt_wire_request_t *r, const char *method, const char *url,
                         const json_t *body)
{
    memset(r, 0, sizeof(*r));
    r->method = strdup(method);
    r->url = strdup(url);
    r->headers = calloc(1, sizeof(char *));
    r->body = body ? json_dumps(body, JSON_COMPACT) : NULL;
    r->body_len = r->body ? strlen(r->body) : 0;
    if (!r->method || !r->url || !r->headers || (body && !r->body)) {
        gt_wire_request_free(r);
        return -1;
    }
    return 0;
}

int gt_wire_header_add(gt_wire_request_t *r, const char *fmt, ...)
{
    size_t n = 0;
    while (r->headers && r->headers[n])
        n++;
    char **grown = realloc(r->headers, (n + 2) * sizeof(char *));
    if (!grown)
        return -1;
    r->headers = grown;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&r->headers[n], fmt, ap);
    va_end(ap);
    if (rc < 0) {
        r->headers[n] = NULL;
        return -1;
    }
    r->headers[n + 1] = NULL;
    return 0;
}

const gt_runtime_t *gt_runtime_find(const char *name)
{
#define GT_RUNTIME_REF(n) &gt_runtime_##n,
    static const gt_runtime_t *const all[] = {GT_WIRE_RUNTIMES(GT_RUNTIME_REF) NULL};
#undef GT_RUNTIME_REF
    for (size_t i = 0; name && all[i]; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}

const char *gt_runtime_names(void)
{
#define GT_RUNTIME_NAME(n) ", " #n
    static const char list[] = GT_WIRE_RUNTIMES(GT_RUNTIME_NAME);
#undef GT_RUNTIME_NAME
    return list + 2; /* past the first ", " */
}

/* ---- engine ------------------------------------------------------------------ */

typedef struct prov_state {
    const gt_provider_t *p;
    const gt_runtime_t *rt;
    gt_eng_breaker_t breaker;
#ifdef GT_HAVE_GCP_AUTH
    gt_gcp_auth_t *auth;
#endif
} prov_state_t;

struct gt_prov_engine {
    uv_loop_t *loop;
    gt_http_t *http;
    const gt_config_t *cfg;
    const char *worker_id;
    gt_event_fn emit;
    void *emit_arg;
    prov_state_t *provs;
    size_t n_provs;
    gt_slots_t *slots;
    int closed;
};

typedef enum { FAIL_NONE, FAIL_TIMEOUT, FAIL_UNAVAILABLE, FAIL_RATE_LIMITED } fail_t;

struct gt_prov_call {
    gt_eng_call_t base; /* first: the engine's part of the call */
    gt_prov_engine_t *e;
    prov_state_t *ps;
    gt_rt_done_cb cb;
    void *cb_arg;

    unsigned seq; /* bumped when the request in flight is abandoned */
    int retry;
    int in_flight;
    int finished, aborted;
    int64_t breaker_out; /* the breaker allowed the attempt in flight then (mono ms) */
    gt_slot_req_t *slot;
    int slot_waiting;
    fail_t last_fail;

    gt_span_t span;                       /* provider.call: slot wait, attempts and retries */
    char span_tp[GT_TRACEPARENT_LEN + 1]; /* names the span: sent to the provider */
    int span_open;
    int64_t start_mono, slot_start, slot_ms, infer_start;

    int64_t prompt_tokens, completion_tokens, request_bytes, response_bytes;
};

typedef struct prov_req {
    gt_prov_call_t *call;
    unsigned seq;
    int by_deadline;
} prov_req_t;

static void attempt(gt_prov_call_t *call);
static void finish(gt_prov_call_t *call);

static void prov_attempt(gt_prov_call_t *call, long status, int64_t ms, const char *error)
{
    gt_eng_attempt(&call->base, "inference", status, ms, call->ps->p->name, error);
}

static void prov_free(gt_eng_call_t *c)
{
    free(c);
}

/* The traceparent sent to the provider: the call's span, else the task's. */
static const char *outgoing_tp(const gt_prov_call_t *call)
{
    return call->span_tp[0] ? call->span_tp : call->base.spec->traceparent;
}

static prov_state_t *state_of(gt_prov_engine_t *e, const char *provider)
{
    for (size_t i = 0; provider && i < e->n_provs; i++)
        if (strcmp(e->provs[i].p->name, provider) == 0)
            return &e->provs[i];
    return NULL;
}

/* Gives back a breaker allowance that got no verdict (abandoned, expired). */
static void breaker_forget(gt_prov_call_t *call)
{
    if (call->breaker_out)
        gt_eng_breaker_verdict(&call->ps->breaker, &call->breaker_out, -1);
}

static void breaker_verdict(gt_prov_call_t *call, int ok)
{
    if (call->breaker_out)
        gt_eng_breaker_verdict(&call->ps->breaker, &call->breaker_out, ok);
}

static void finish(gt_prov_call_t *call)
{
    if (call->finished)
        return;
    call->finished = 1;
    breaker_forget(call);
    if (call->slot) {
        int64_t tokens = (call->prompt_tokens > 0 ? call->prompt_tokens : 0) +
                         (call->completion_tokens > 0 ? call->completion_tokens : 0);
        gt_slots_release(call->slot, tokens);
        call->slot = NULL;
    }
    if (!call->base.code)
        call->base.status = GT_TASK_SUCCEEDED;
    gt_task_outcome_t out = {0};
    out.status = call->base.status;
    out.error_code = call->base.code;
    out.error_message = call->base.code ? call->base.message : NULL;
    out.output = call->base.status == GT_TASK_SUCCEEDED ? call->base.output : NULL;
    out.provider = call->ps->p->name;
    out.attempts = call->base.attempts;
    out.retries = call->retry;
    out.prompt_tokens = call->prompt_tokens > 0 ? call->prompt_tokens : 0;
    out.completion_tokens = call->completion_tokens > 0 ? call->completion_tokens : 0;
    out.allocate_ms = call->slot_start ? call->slot_ms : -1;
    out.inference_ms = call->infer_start ? gt_clock_mono_ms() - call->infer_start : -1;
    out.release_ms = -1;
    out.request_bytes = call->request_bytes;
    out.response_bytes = call->response_bytes;
    if (call->span_open) {
        call->span_open = 0;
        gt_span_end(&call->span, call->base.code, "{s:s, s:s, s:s, s:i, s:I, s:I}",
                    "gantry.task_id", call->base.task_id ? call->base.task_id : "",
                    "gantry.provider", call->ps->p->name, "gantry.runtime",
                    call->ps->p->runtime ? call->ps->p->runtime : "", "gantry.retries", call->retry,
                    "gantry.prompt_tokens", (json_int_t)out.prompt_tokens,
                    "gantry.completion_tokens", (json_int_t)out.completion_tokens);
    }
    if (call->cb)
        call->cb((gt_rt_call_t *)call, &out, call->cb_arg);
    call->cb = NULL;
    gt_eng_call_close_timer(&call->base);
    gt_eng_call_unref(&call->base); /* the owner's */
}

static void expire(gt_prov_call_t *call, const char *during)
{
    breaker_forget(call);
    gt_eng_fail(&call->base, GT_TASK_EXPIRED, "deadline_exceeded", "task deadline reached %s",
                during);
    finish(call);
}

static void on_backoff(uv_timer_t *t)
{
    attempt(t->data);
}

static const char *fail_code(fail_t f)
{
    return f == FAIL_TIMEOUT        ? "provider_timeout"
           : f == FAIL_RATE_LIMITED ? "provider_rate_limited"
                                    : "provider_unavailable";
}

/* The error code of a provider's error body ({"error": {"code"|"type": ...}}, or a
 * top-level "code"/"type"), when it looks like an identifier; "" otherwise. Free
 * text is never taken: providers echo the request in their messages. */
static const char *provider_error_code(const gt_http_response_t *resp, char *buf, size_t len)
{
    json_t *doc = resp->body_len ? gt_json_parse(resp->body, resp->body_len, 0, NULL) : NULL;
    json_t *e = json_object_get(doc, "error");
    const char *c = NULL;
    const char *const fields[] = {"code", "type"};
    for (int i = 0; i < 2 && !c; i++)
        c = json_string_value(json_object_get(json_is_object(e) ? e : doc, fields[i]));
    buf[0] = 0;
    if (c && strlen(c) < len && strlen(c) <= 48 &&
        strspn(c, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == strlen(c))
        snprintf(buf, len, "%s", c);
    json_decref(doc);
    return buf;
}

static void on_http(const gt_http_response_t *resp, void *arg)
{
    prov_req_t *req = arg;
    gt_prov_call_t *call = req->call;
    int by_deadline = req->by_deadline;
    int current = req->seq == call->seq && !call->finished;
    free(req);
    if (!current) {
        gt_eng_call_unref(&call->base);
        return;
    }
    call->in_flight = 0;
    gt_log_ctx_t ctx = gt_eng_call_ctx(&call->base);
    const gt_provider_t *p = call->ps->p;
    long st = resp->status;
    call->request_bytes += (int64_t)resp->request_bytes;
    call->response_bytes += (int64_t)resp->body_len;

    if (st >= 200 && st < 300) {
        gt_wire_answer_t ans = {0};
        const char *why = NULL;
        gt_wire_task_t wt = {call->base.spec->kind, call->base.spec->input,
                             call->base.spec->parameters, call->base.spec->model->provider_model,
                             outgoing_tp(call)};
        prov_attempt(call, st, resp->elapsed_ms, NULL);
        breaker_verdict(call, 1);
        if (call->ps->rt->parse(&wt, resp->body, resp->body_len, &ans, &why) != 0) {
            json_decref(ans.output);
            gt_eng_fail(&call->base, GT_TASK_FAILED, "provider_bad_response", "provider %s: %s",
                        p->name, why ? why : "unexpected response");
        } else {
            call->base.output = ans.output;
            call->prompt_tokens = ans.prompt_tokens;
            call->completion_tokens = ans.completion_tokens;
        }
        finish(call);
        gt_eng_call_unref(&call->base);
        return;
    }
    char err[160];
    gt_eng_http_error(resp, err, sizeof(err));
    prov_attempt(call, st, resp->elapsed_ms, err);
    if (st == 0 && resp->timed_out && by_deadline) {
        expire(call, "during the provider call");
        gt_eng_call_unref(&call->base);
        return;
    }
    if (!gt_retry_is_retryable(st)) {
        /* The provider answered: it is up, the request is at fault. */
        breaker_verdict(call, 1);
        /* Only the provider's machine-readable code: its error text may echo the prompt. */
        char code[64];
        gt_eng_fail(&call->base, GT_TASK_FAILED, "provider_rejected",
                    "provider %s answered HTTP %ld%s%s", p->name, st,
                    provider_error_code(resp, code, sizeof(code))[0] ? ": " : "", code);
        finish(call);
        gt_eng_call_unref(&call->base);
        return;
    }
    call->last_fail = st == 0 && resp->timed_out ? FAIL_TIMEOUT
                      : st == 429                ? FAIL_RATE_LIMITED
                                                 : FAIL_UNAVAILABLE;
    if (st == 429)
        breaker_forget(call); /* throttled, not broken */
    else
        breaker_verdict(call, 0);
    int64_t wait = 0;
    gt_eng_next_t next =
        gt_eng_next(&p->retry, &call->retry, call->aborted ? call->retry : p->retry.max_retries,
                    resp->retry_after_ms, call->base.deadline, "provider", &wait);
    if (next == GT_ENG_GIVE_UP) {
        gt_eng_fail(&call->base, GT_TASK_FAILED, fail_code(call->last_fail),
                    "provider %s: %s after %d attempt(s)", p->name, err, call->retry + 1);
        finish(call);
        gt_eng_call_unref(&call->base);
        return;
    }
    if (next == GT_ENG_EXPIRE) {
        expire(call, "before the next retry");
        gt_eng_call_unref(&call->base);
        return;
    }
    gt_log(GT_LOG_DEBUG, &ctx, "provider %s: %s; retry %d in %" PRId64 " ms", p->name, err,
           call->retry, wait);
    uv_timer_start(&call->base.timer, on_backoff, (uint64_t)wait, 0);
    gt_eng_call_unref(&call->base);
}

static void send_request(gt_prov_call_t *call, const char *access_token)
{
    const gt_provider_t *p = call->ps->p;
    gt_wire_task_t wt = {call->base.spec->kind, call->base.spec->input, call->base.spec->parameters,
                         call->base.spec->model->provider_model, outgoing_tp(call)};
    gt_wire_auth_t auth = {access_token, time(NULL)};
    gt_wire_request_t wr;
    const char *why = NULL;
    memset(&wr, 0, sizeof(wr));
    if (call->ps->rt->build(p, &wt, &auth, &wr, &why) != 0) {
        breaker_forget(call);
        gt_eng_fail(&call->base, GT_TASK_FAILED, "unsupported_input", "provider %s: %s", p->name,
                    why ? why : "cannot build the request");
        finish(call);
        return;
    }
    int64_t now = gt_clock_mono_ms(), timeout = p->inference_timeout_ms;
    prov_req_t *req = calloc(1, sizeof(*req));
    if (req) {
        req->call = call;
        req->seq = call->seq;
        timeout = gt_eng_timeout(timeout, call->base.deadline, &req->by_deadline);
    }
    if (!call->infer_start)
        call->infer_start = now;
    if (!req || gt_http_request(call->e->http, wr.method, wr.url, (const char *const *)wr.headers,
                                wr.body, wr.body_len, timeout, on_http, req) != 0) {
        free(req);
        gt_wire_request_free(&wr);
        breaker_forget(call);
        gt_eng_fail(&call->base, GT_TASK_FAILED, call->aborted ? "aborted" : "provider_unavailable",
                    "could not start the request to provider %s", p->name);
        finish(call);
        return;
    }
    gt_wire_request_free(&wr);
    call->base.refs++;
    call->in_flight = 1;
}

#ifdef GT_HAVE_GCP_AUTH
typedef struct token_wait {
    gt_prov_call_t *call;
    unsigned seq;
} token_wait_t;

static void on_token(const char *token, const char *error, void *arg)
{
    token_wait_t *tw = arg;
    gt_prov_call_t *call = tw->call;
    int current = tw->seq == call->seq && !call->finished;
    free(tw);
    if (current) {
        call->in_flight = 0;
        if (!token) {
            breaker_verdict(call, 0);
            gt_eng_fail(&call->base, GT_TASK_FAILED, "provider_auth_failed",
                        "provider %s: no access token: %s", call->ps->p->name,
                        error ? error : "unknown error");
            finish(call);
        } else {
            send_request(call, token);
        }
    }
    gt_eng_call_unref(&call->base);
}
#endif

static void attempt(gt_prov_call_t *call)
{
    prov_state_t *ps = call->ps;
    if (call->finished)
        return;
    if (call->aborted) {
        gt_eng_fail(&call->base, GT_TASK_FAILED, "aborted", "aborted by shutdown");
        finish(call);
        return;
    }
    int64_t now = gt_clock_mono_ms();
    if (now >= call->base.deadline) {
        expire(call, "before the provider call");
        return;
    }
    if (!gt_eng_breaker_allow(&ps->breaker, &call->breaker_out)) {
        prov_attempt(call, 0, 0, "circuit breaker open");
        gt_eng_fail(&call->base, GT_TASK_FAILED, "provider_unavailable",
                    "provider %s: circuit breaker open", ps->p->name);
        finish(call);
        return;
    }
    if (ps->rt->needs_oauth) {
#ifdef GT_HAVE_GCP_AUTH
        token_wait_t *tw = ps->auth ? calloc(1, sizeof(*tw)) : NULL;
        if (tw) {
            tw->call = call;
            tw->seq = call->seq;
            call->base.refs++;
            call->in_flight = 1;
            gt_gcp_auth_get(ps->auth, on_token, tw); /* may answer right here */
            return;
        }
#endif
        breaker_forget(call);
        gt_eng_fail(&call->base, GT_TASK_FAILED, "provider_auth_failed",
                    "provider %s: no service-account token source", ps->p->name);
        finish(call);
        return;
    }
    send_request(call, NULL);
}

static void on_slot(gt_slot_req_t *r, int rc, const char *why, void *arg)
{
    gt_prov_call_t *call = arg;
    call->slot_waiting = 0;
    call->slot_ms = gt_clock_mono_ms() - call->slot_start;
    if (rc != 0) {
        call->slot = NULL; /* gave up: nothing is held */
        if (gt_clock_mono_ms() >= call->base.deadline)
            expire(call, "while waiting for a provider slot");
        else {
            gt_eng_fail(&call->base, GT_TASK_FAILED, "provider_slot_timeout",
                        "provider %s: no slot: %s", call->ps->p->name, why ? why : "timed out");
            finish(call);
        }
        return;
    }
    (void)r;
    attempt(call);
}

static void on_begin(uv_timer_t *t)
{
    gt_prov_call_t *call = t->data;
    gt_prov_engine_t *e = call->e;
    const gt_provider_t *p = call->ps->p;
    if (e->slots && gt_slots_needed(p, call->base.tenant_id)) {
        int64_t now = gt_clock_mono_ms();
        int64_t give_up = now + p->slot_timeout_ms;
        if (call->base.deadline < give_up)
            give_up = call->base.deadline;
        call->slot_start = now;
        call->slot_waiting = 1;
        call->slot = gt_slots_acquire(e->slots, p, call->base.tenant_id, call->base.task_id,
                                      give_up, on_slot, call);
        if (!call->slot) {
            call->slot_waiting = 0;
            gt_eng_fail(&call->base, GT_TASK_FAILED, "out_of_memory", "cannot queue for a slot");
            finish(call);
        }
        return;
    }
    attempt(call);
}

gt_prov_call_t *gt_prov_start(gt_prov_engine_t *e, const gt_task_spec_t *spec, gt_rt_done_cb cb,
                              void *arg, const char **code)
{
    prov_state_t *ps = state_of(e, spec->model ? spec->model->provider : NULL);
    if (!ps) {
        *code = "unknown_provider";
        return NULL;
    }
    if (!ps->rt) {
        *code = "unsupported_runtime";
        return NULL;
    }
    gt_prov_call_t *call = gt_eng_call_new(sizeof(*call), e->loop, spec, prov_free);
    if (!call) {
        *code = "out_of_memory";
        return NULL;
    }
    call->e = e;
    call->ps = ps;
    call->retry = spec->retries_spent;
    call->cb = cb;
    call->cb_arg = arg;
    call->start_mono = gt_clock_mono_ms();
    call->prompt_tokens = call->completion_tokens = -1;
    gt_trace_ctx_t parent;
    if (spec->traceparent && gt_trace_parse(spec->traceparent, &parent) == 0) {
        call->span_open = gt_span_start(&call->span, &parent, "provider.call", GT_SPAN_CLIENT) == 0;
        if (call->span_open)
            gt_trace_format(&call->span.ctx, call->span_tp);
    }
    /* Everything runs from the loop: cb never runs inside gt_prov_start. */
    uv_timer_start(&call->base.timer, on_begin, 0, 0);
    return call;
}

/* Stops whatever the call waits for; a request in flight is abandoned. */
static void call_stop(gt_prov_call_t *call)
{
    if (call->in_flight) {
        call->seq++;
        call->in_flight = 0;
    }
    breaker_forget(call);
    if (!call->base.timer_closed)
        uv_timer_stop(&call->base.timer);
    if (call->slot) {
        gt_slots_release(call->slot, 0);
        call->slot = NULL;
        call->slot_waiting = 0;
    }
}

void gt_prov_abort(gt_prov_call_t *call)
{
    if (call->finished)
        return;
    call->aborted = 1;
    call_stop(call);
    gt_eng_fail(&call->base, GT_TASK_FAILED, "aborted", "aborted by shutdown");
    finish(call);
}

void gt_prov_cancel(gt_prov_call_t *call)
{
    if (call->finished)
        return;
    call->cb = NULL;
    call_stop(call);
    finish(call);
}

int gt_prov_unavailable(gt_prov_engine_t *e, const gt_model_t *model)
{
    prov_state_t *ps = state_of(e, model ? model->provider : NULL);
    if (!ps)
        return 0;
    return gt_eng_breaker_unavailable(&ps->breaker);
}

gt_prov_engine_t *gt_prov_engine_new(uv_loop_t *loop, gt_http_t *http, const gt_config_t *cfg,
                                     const char *worker_id, gt_event_fn emit, void *emit_arg,
                                     char *err, size_t errlen)
{
    gt_prov_engine_t *e = calloc(1, sizeof(*e));
    if (!e || !(e->provs = calloc(cfg->n_providers + 1, sizeof(prov_state_t)))) {
        free(e);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->loop = loop;
    e->http = http;
    e->cfg = cfg;
    e->worker_id = worker_id;
    e->emit = emit;
    e->emit_arg = emit_arg;
    for (size_t i = 0; i < cfg->n_providers; i++) {
        prov_state_t *ps = &e->provs[e->n_provs++];
        ps->p = &cfg->providers[i];
        ps->rt = gt_runtime_find(ps->p->runtime);
        gt_eng_breaker_init(
            &ps->breaker, ps->p->name,
            ps->p->endpoint ? ps->p->endpoint : (ps->p->region ? ps->p->region : ps->p->runtime),
            NULL, ps->p->breaker_failures, ps->p->breaker_recovery_ms, emit, emit_arg);
#ifdef GT_HAVE_GCP_AUTH
        if (ps->rt && ps->rt->needs_oauth && ps->p->credentials) {
            ps->auth = gt_gcp_auth_new(loop, http, ps->p->credentials, err, errlen);
            if (!ps->auth) {
                char why[256];
                snprintf(why, sizeof(why), "%s", err);
                snprintf(err, errlen, "providers.%s: %s", ps->p->name, why);
                gt_prov_engine_free(e);
                return NULL;
            }
        }
#endif
    }
    err[0] = '\0';
    e->slots = gt_slots_new(loop, cfg, worker_id, err, errlen);
    if (!e->slots && err[0]) {
        gt_prov_engine_free(e);
        return NULL;
    }
    return e;
}

void gt_prov_engine_close(gt_prov_engine_t *e)
{
    if (!e || e->closed)
        return;
    e->closed = 1;
    if (e->slots)
        gt_slots_free(e->slots); /* frees itself once its handles are closed */
    e->slots = NULL;
}

void gt_prov_engine_free(gt_prov_engine_t *e)
{
    if (!e)
        return;
#ifdef GT_HAVE_GCP_AUTH
    for (size_t i = 0; i < e->n_provs; i++)
        gt_gcp_auth_free(e->provs[i].auth);
#endif
    if (e->slots)
        gt_slots_free(e->slots);
    free(e->provs);
    free(e);
}

/* ---- as a runtime (runtime.h) ------------------------------------------------- */

static int prov_serves(const gt_model_t *m)
{
    return gt_runtime_find(m->runtime) != NULL;
}

static gt_rt_call_t *prov_start(void *ctx, const gt_task_spec_t *spec, gt_rt_done_cb cb, void *arg,
                                const char **code)
{
    return (gt_rt_call_t *)gt_prov_start(ctx, spec, cb, arg, code);
}

static void prov_abort(gt_rt_call_t *call)
{
    gt_prov_abort((gt_prov_call_t *)call);
}

static void prov_cancel(gt_rt_call_t *call)
{
    gt_prov_cancel((gt_prov_call_t *)call);
}

static int prov_unavailable(void *ctx, const gt_model_t *m)
{
    return gt_prov_unavailable(ctx, m);
}

/* The provider could not serve (down, slow, throttling, no slot, no token, a
 * task its API cannot express): another model may. */
static int prov_may_fall_back(const char *code)
{
    static const char *const codes[] = {"provider_unavailable",
                                        "provider_timeout",
                                        "provider_rate_limited",
                                        "provider_slot_timeout",
                                        "provider_auth_failed",
                                        "unsupported_input",
                                        NULL};
    return gt_eng_code_in(code, codes);
}

const gt_runtime_ops_t gt_runtime_ops_hosted = {
    "hosted",    prov_serves,      prov_start,         prov_abort,
    prov_cancel, prov_unavailable, prov_may_fall_back,
};
