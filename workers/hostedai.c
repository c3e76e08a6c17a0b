/* hostedai.c - HostedAI runtime: per task a small state machine allocate -> infer -> release.
 *
 * A call holds references: one for its owner until it finishes (or is
 * cancelled), one for its backoff timer until the timer is closed, and one
 * per HTTP request in flight. It is freed when the last one goes, so an HTTP
 * callback never touches freed memory, even for a request the call abandoned.
 * Release happens exactly once after a successful allocate, whatever ends the
 * task: success, inference error, timeout, deadline or shutdown; what a call
 * cannot release itself (a release that keeps failing, an allocate answered
 * after the call gave up or never answered) becomes a release owed by the
 * process state (gt_hai_state_t, at the end of this file).
 *
 * A full pool (capacity answer) is not a failure: the allocate waits, with
 * backoff honouring Retry-After, until the deadline or worker.capacity_wait_ms,
 * without using up retries and without counting against the pool's breaker. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "hostedai.h"
#include "json_text.h"
#include "log.h"
#include "rand.h"
#include "retry.h"
#include "trace.h"
#include "wstats.h"

enum { OP_ALLOCATE, OP_INFERENCE, OP_RELEASE, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"allocate", "inference", "release"};

/* Why an attempt failed, in the order of the error codes reported. */
typedef enum {
    FAIL_NONE,
    FAIL_TIMEOUT,
    FAIL_UNAVAILABLE, /* transport error or 5xx */
    FAIL_RATE_LIMITED,
    FAIL_CAPACITY,  /* the pool is full now: wait */
    FAIL_TOO_LARGE, /* larger than the whole pool: waiting cannot help */
    FAIL_REJECTED,
    FAIL_BAD_RESPONSE,
} fail_t;

static const char *const fail_codes[] = {
    NULL,
    "hostedai_timeout",
    "hostedai_unavailable",
    "hostedai_rate_limited",
    "hostedai_capacity",
    "hostedai_capacity",
    "hostedai_rejected",
    "hostedai_bad_response",
};

struct gt_hai_call {
    gt_eng_call_t base; /* first: the engine's part of the call */
    const gt_hai_env_t *env;
    const gt_pool_t *pool;
    gt_rt_done_cb cb;
    void *cb_arg;

    unsigned seq; /* bumped when the request in flight is abandoned */
    int op;
    int retry;     /* retries done for op (allocate and inference count on from retries_spent) */
    int retries;   /* the task's retries spent: the most an allocate or inference took */
    int in_flight; /* a request of the current seq is in flight */
    int waiting;   /* the timer is armed for the next attempt */
    int finished;  /* cb ran or the call was cancelled */
    int aborted;

    gt_span_t span[OP_COUNT]; /* one per operation, while it runs */
    int span_open[OP_COUNT];
    char *headers[5]; /* NULL-terminated; [0] holds the API key: never log */
    char *allocation_id;
    char attempt[96];    /* label "attempt" of the allocate in flight ("" when none) */
    int64_t breaker_out; /* the pool's breaker allowed the allocate in flight then (mono ms) */
    int64_t cap_wait_ms; /* time spent waiting for capacity */
    int cap_waits;

    /* outcome */
    int64_t prompt_tokens, completion_tokens;
    int64_t op_start[OP_COUNT], op_ms[OP_COUNT];
    int64_t allocated_at, released_at;
    int64_t request_bytes, response_bytes;
};

/* One HTTP request in flight. */
typedef struct hai_req {
    gt_hai_call_t *call;
    unsigned seq;
    int op;
    int by_deadline; /* its timeout was cut to the task deadline */
} hai_req_t;

static void op_begin(gt_hai_call_t *call, int op);
static void send_attempt(gt_hai_call_t *call);
static void finish(gt_hai_call_t *call);
static void go_release(gt_hai_call_t *call);

/* The process state's side of a call (defined at the end of this file). */
static void hs_allocating(gt_hai_state_t *s, const char *attempt, const char *pool, int on);
static void hs_held(gt_hai_state_t *s, const char *id, const char *pool, int on);
static void hs_owe_release(gt_hai_state_t *s, const gt_pool_t *pool, const char *id,
                           const char *task_id, int counted);
static void hs_sweep(gt_hai_state_t *s, const gt_pool_t *pool, const char *attempt,
                     const char *task_id, int sweeps);
static gt_eng_breaker_t *hs_breaker(gt_hai_state_t *s, const gt_pool_t *pool);
static unsigned long hs_next_attempt(gt_hai_state_t *s);

/* Delays between the searches for an allocate that never answered: at once,
 * then for one that HostedAI created late. */
static const int64_t sweep_delays_ms[] = {0, 1000, 5000};
#define N_SWEEPS ((int)(sizeof(sweep_delays_ms) / sizeof(sweep_delays_ms[0])))

/* The engine's free_fn: what the engine does not own. */
static void hai_free(gt_eng_call_t *c)
{
    gt_hai_call_t *call = (gt_hai_call_t *)c;
    for (int i = 0; call->headers[i]; i++) {
        /* The key sits in [0]: scrub it before the memory is reused. */
        memset(call->headers[i], 0, strlen(call->headers[i]));
        free(call->headers[i]);
    }
    free(call->allocation_id);
    free(call);
}

static void close_timer(gt_hai_call_t *call)
{
    if (call->base.timer_closed)
        return;
    call->waiting = 0;
    gt_eng_call_close_timer(&call->base);
}

static void emit_allocation(gt_hai_call_t *call, const char *type, const char *error)
{
    if (!call->env->emit)
        return;
    json_t *data = json_pack("{s:s, s:s, s:s}", "allocation_id", call->allocation_id, "pool",
                             call->pool->name, "task_id", call->base.task_id);
    if (data && error)
        json_object_set_new(data, "error", json_string(error));
    if (data && call->released_at)
        json_object_set_new(
            data, "allocation_seconds",
            json_real(round((double)(call->released_at - call->allocated_at)) / 1000.0));
    call->env->emit(type, data, call->env->emit_arg);
}

/* A span per operation (allocate, inference, release), child of the task's span. */
static void op_span_start(gt_hai_call_t *call, int op)
{
    gt_trace_ctx_t parent;
    if (call->span_open[op] || gt_trace_parse(call->base.traceparent, &parent) != 0)
        return;
    char name[64];
    snprintf(name, sizeof(name), "hostedai.%s", op_names[op]);
    call->span_open[op] = gt_span_start(&call->span[op], &parent, name, GT_SPAN_CLIENT) == 0;
}

static void op_span_end(gt_hai_call_t *call, int op)
{
    if (!call->span_open[op])
        return;
    call->span_open[op] = 0;
    /* The last attempt's error ("HTTP 503", "timeout"): never a body. */
    json_t *last = json_array_get(call->base.attempts, json_array_size(call->base.attempts) - 1);
    const char *error = json_string_value(json_object_get(last, "error"));
    gt_span_end(&call->span[op], error, "{s:s, s:s, s:s, s:i, s:s}", "gantry.task_id",
                call->base.task_id, "hostedai.pool", call->pool->name, "hostedai.operation",
                op_names[op], "gantry.retries", call->retry, "gantry.allocation_id",
                call->allocation_id ? call->allocation_id : "");
}

static void op_end(gt_hai_call_t *call)
{
    call->op_ms[call->op] = gt_clock_mono_ms() - call->op_start[call->op];
    op_span_end(call, call->op);
}

static void expire(gt_hai_call_t *call)
{
    op_end(call);
    gt_eng_fail(&call->base, GT_TASK_EXPIRED, "deadline_exceeded",
                "task deadline reached during %s", op_names[call->op]);
    go_release(call);
}

static void on_timer(uv_timer_t *t)
{
    gt_hai_call_t *call = t->data;
    call->waiting = 0;
    send_attempt(call);
}

static void arm(gt_hai_call_t *call, int64_t delay_ms)
{
    call->waiting = 1;
    uv_timer_start(&call->base.timer, on_timer, (uint64_t)(delay_ms > 0 ? delay_ms : 0), 0);
}

/* The allocate attempt in flight is over. ambiguous: no answer says whether
 * HostedAI allocated (timeout, transport error, 5xx), so the process searches
 * for it by its label and releases what it finds. */
static void allocate_settled(gt_hai_call_t *call, int ambiguous, int timed_out)
{
    if (!call->attempt[0])
        return;
    if (ambiguous)
        hs_sweep(call->env->state, call->pool, call->attempt, call->base.task_id,
                 timed_out ? N_SWEEPS : 1);
    else
        hs_allocating(call->env->state, call->attempt, call->pool->name, 0);
    call->attempt[0] = '\0';
}

/* The pool's breaker hears how a call went: ok 1 success, 0 failure, -1
 * nothing said about the pool's health (capacity, a rejected request, shutdown). */
static void breaker_verdict(gt_hai_call_t *call, int ok)
{
    gt_eng_breaker_t *b = hs_breaker(call->env->state, call->pool);
    if (!b)
        return;
    /* A later phase (inference, release) was not allowed by the breaker: it
     * counts as started when its operation began, so a burst of concurrent
     * inferences answered by fast errors is one failure (gt_breaker_failure). */
    if (ok >= 0 && !call->breaker_out && call->op_start[call->op] > 0)
        call->breaker_out = call->op_start[call->op];
    gt_eng_breaker_verdict(b, &call->breaker_out, ok);
}

static void op_begin(gt_hai_call_t *call, int op)
{
    call->op = op;
    /* A release is this call's own duty (and may run after the task's
     * callback, when spec is gone); the other operations share the task's budget. */
    call->retry = op == OP_RELEASE ? 0 : call->base.spec->retries_spent;
    call->op_start[op] = gt_clock_mono_ms();
    op_span_start(call, op);
    send_attempt(call);
}

static char *build_body(gt_hai_call_t *call, size_t *len)
{
    const gt_task_spec_t *spec = call->base.spec;
    json_t *body = NULL;
    const char *why = NULL;
    if (call->op == OP_ALLOCATE) {
        /* The labels find the allocation again when its answer never comes
         * (attempt) and tell the reaper whose it is (holder, incarnation). */
        body = json_pack("{s:s, s:{s:f, s:I, s:s}, s:b, s:{s:s, s:s, s:s, s:s}}", "pool_id",
                         call->pool->name, "requirements", "tflops", spec->model->tflops, "vram_mb",
                         (json_int_t)spec->model->vram_mb, "model", spec->model->name, "overcommit",
                         call->pool->overcommit, "labels", "holder", call->env->worker_id,
                         "task_id", call->base.task_id, "incarnation",
                         call->env->incarnation ? call->env->incarnation : "", "attempt",
                         call->attempt);
    } else if (call->op == OP_INFERENCE) {
        body = gt_hai_inference_body(call->allocation_id, spec->kind, spec->input, spec->parameters,
                                     &why);
    }
    if (!body)
        return NULL;
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    *len = s ? strlen(s) : 0;
    return s;
}

static void on_response(const gt_http_response_t *resp, void *arg);

static void send_attempt(gt_hai_call_t *call)
{
    const gt_config_t *cfg = call->env->cfg;
    int op = call->op;
    int64_t now = gt_clock_mono_ms();
    int64_t timeout = op == OP_ALLOCATE    ? cfg->allocate_timeout_ms
                      : op == OP_INFERENCE ? cfg->inference_timeout_ms
                                           : cfg->release_timeout_ms;
    int by_deadline = 0;
    char url[2048];
    char *body = NULL;
    size_t body_len = 0;
    const char *method = "POST";

    if (call->aborted && op != OP_RELEASE) {
        /* Nothing new starts once aborted; only the release goes out. */
        op_end(call);
        gt_eng_fail(&call->base, GT_TASK_FAILED, "aborted", "worker shutting down");
        go_release(call);
        return;
    }
    /* The deadline bounds every call but the release: what was acquired is
     * always given back. */
    if (op != OP_RELEASE && call->base.deadline != INT64_MAX) {
        int64_t left = call->base.deadline - now;
        if (left <= 0) {
            expire(call);
            return;
        }
        timeout = gt_eng_timeout(timeout, call->base.deadline, &by_deadline);
    }
    if (op == OP_ALLOCATE) {
        gt_eng_breaker_t *b = hs_breaker(call->env->state, call->pool);
        if (b && !gt_eng_breaker_allow(b, &call->breaker_out)) {
            gt_eng_attempt(&call->base, op_names[op], 0, 0, NULL, "circuit breaker open");
            op_end(call);
            gt_eng_fail(&call->base, GT_TASK_FAILED, fail_codes[FAIL_UNAVAILABLE],
                        "pool %s: circuit breaker open", call->pool->name);
            go_release(call);
            return;
        }
        snprintf(call->attempt, sizeof(call->attempt), "%s:%lu",
                 call->env->incarnation ? call->env->incarnation : call->env->worker_id,
                 hs_next_attempt(call->env->state));
        hs_allocating(call->env->state, call->attempt, call->pool->name, 1);
    }
    if (op == OP_RELEASE) {
        snprintf(url, sizeof(url), "%s/v1/allocate/%s", call->pool->endpoint, call->allocation_id);
        method = "DELETE";
    } else {
        snprintf(url, sizeof(url), "%s/v1/%s", call->pool->endpoint,
                 op == OP_ALLOCATE ? "allocate" : "inference");
        body = build_body(call, &body_len);
        if (!body) {
            allocate_settled(call, 0, 0);
            op_end(call);
            gt_eng_fail(&call->base, GT_TASK_FAILED, "invalid_input", "input does not fit kind %s",
                        call->base.spec->kind);
            go_release(call);
            return;
        }
    }
    hai_req_t *req = malloc(sizeof(*req));
    if (!req) {
        free(body);
        allocate_settled(call, 0, 0);
        op_end(call);
        gt_eng_fail(&call->base, GT_TASK_FAILED, "internal", "out of memory");
        go_release(call);
        return;
    }
    req->call = call;
    req->seq = call->seq;
    req->op = op;
    req->by_deadline = by_deadline;
    call->base.refs++; /* dropped by on_response */
    call->in_flight = 1;
    if (gt_http_request(call->env->http, method, url, (const char *const *)call->headers, body,
                        body_len, timeout, on_response, req) != 0) {
        /* Could not even start: count it as a transport failure and back off. */
        gt_http_response_t r = {0};
        r.error = "request could not be started";
        r.retry_after_ms = -1;
        on_response(&r, req);
    }
    free(body);
}

/* The provider's machine-readable error code, {"error": {"code": ...}} or
 * {"error": "..."}, copied into buf; "" when there is none. */
static const char *error_code_of(const gt_http_response_t *resp, char *buf, size_t len)
{
    json_t *doc = resp->body_len ? gt_json_parse(resp->body, resp->body_len, 0, NULL) : NULL;
    json_t *e = json_object_get(doc, "error");
    const char *code =
        json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "code"));
    snprintf(buf, len, "%s", code ? code : "");
    json_decref(doc);
    return buf;
}

static fail_t classify(int op, const gt_http_response_t *resp)
{
    char code[64];
    if (resp->timed_out)
        return FAIL_TIMEOUT;
    if (resp->status == 0 || resp->status >= 500 || resp->status == 408)
        return FAIL_UNAVAILABLE;
    if (op == OP_ALLOCATE && resp->status == 409) {
        /* "insufficient_capacity": the request exceeds the whole pool. */
        error_code_of(resp, code, sizeof(code));
        return strcmp(code, "insufficient_capacity") == 0 ? FAIL_TOO_LARGE : FAIL_CAPACITY;
    }
    if (resp->status == 429) {
        /* A full pool may answer 429: that is capacity, not rate limiting. */
        error_code_of(resp, code, sizeof(code));
        if (op == OP_ALLOCATE && (strstr(code, "pool") || strstr(code, "capacity")))
            return FAIL_CAPACITY;
        return FAIL_RATE_LIMITED;
    }
    return FAIL_REJECTED;
}

/* Handles a 2xx. Returns 0, or -1 when the body is not what the contract says. */
static int take_success(gt_hai_call_t *call, const gt_http_response_t *resp)
{
    json_t *doc = NULL;
    int rc = -1;

    if (call->op == OP_RELEASE)
        return 0; /* the body does not matter */
    doc = gt_json_parse(resp->body, resp->body_len, 0, NULL);
    if (!json_is_object(doc))
        goto out;
    if (call->op == OP_ALLOCATE) {
        const char *id = json_string_value(json_object_get(doc, "allocation_id"));
        if (!id || !*id || strchr(id, '/'))
            goto out;
        call->allocation_id = strdup(id);
        if (!call->allocation_id)
            goto out;
        rc = 0;
        goto out;
    }
    /* inference */
    json_t *text = json_object_get(doc, "text");
    json_t *emb = json_object_get(doc, "embedding");
    json_t *embs = json_object_get(doc, "embeddings");
    if (json_is_array(emb))
        call->base.output = json_pack("{s:O}", "embedding", emb);
    else if (json_is_array(embs) && json_is_array(json_array_get(embs, 0)) &&
             json_array_size(embs) == 1)
        /* One input, one vector. */
        call->base.output = json_pack("{s:O}", "embedding", json_array_get(embs, 0));
    else if (json_is_array(embs) && json_is_array(json_array_get(embs, 0)))
        /* Several inputs: task-result.v1 wants "embedding" to be one vector,
         * so the first goes there and all of them in "embeddings". */
        call->base.output =
            json_pack("{s:O, s:O}", "embedding", json_array_get(embs, 0), "embeddings", embs);
    else if (json_is_string(text))
        call->base.output = json_pack("{s:O}", "text", text);
    else
        goto out;
    json_t *usage = json_object_get(doc, "usage");
    call->prompt_tokens = json_integer_value(json_object_get(usage, "prompt_tokens"));
    call->completion_tokens = json_integer_value(json_object_get(usage, "completion_tokens"));
    call->request_bytes = (int64_t)resp->request_bytes;
    call->response_bytes = (int64_t)resp->body_len;
    rc = call->base.output ? 0 : -1;
out:
    json_decref(doc);
    return rc;
}

/* The allocation id of a 2xx allocate answer, or NULL (copied into buf). */
static const char *allocated_id(const gt_http_response_t *resp, char *buf, size_t len)
{
    json_t *doc = gt_json_parse(resp->body, resp->body_len, 0, NULL);
    const char *id = json_string_value(json_object_get(doc, "allocation_id"));
    int ok = id && *id && !strchr(id, '/') && strlen(id) < len;
    if (ok)
        snprintf(buf, len, "%s", id);
    json_decref(doc);
    return ok ? buf : NULL;
}

/* Could a failed allocate have allocated anyway? Not when the connection was
 * refused (nothing was sent) or HostedAI answered a 4xx. */
static int maybe_allocated(const gt_http_response_t *resp)
{
    if (resp->timed_out || resp->status >= 500)
        return 1;
    return resp->status == 0 && resp->curl_code != 7 /* CURLE_COULDNT_CONNECT */ &&
           resp->curl_code != 6 /* CURLE_COULDNT_RESOLVE_HOST */;
}

/* An answer the call no longer waits for (cancelled, or abandoned by abort). */
static void on_stale(gt_hai_call_t *call, int op, const gt_http_response_t *resp)
{
    char id[256];
    gt_log_ctx_t ctx = gt_eng_call_ctx(&call->base);
    if (op != OP_ALLOCATE)
        return;
    if (resp->status >= 200 && resp->status < 300) {
        if (allocated_id(resp, id, sizeof(id))) {
            gt_log(GT_LOG_WARN, &ctx,
                   "allocate answered (%s) after the task gave up on it: "
                   "releasing it",
                   id);
            hs_owe_release(call->env->state, call->pool, id, call->base.task_id, 0);
        }
        allocate_settled(call, 0, 0);
    } else {
        allocate_settled(call, maybe_allocated(resp), resp->timed_out || resp->status == 0);
    }
}

/* A capacity answer: wait and ask again (Retry-After honoured) until the
 * deadline or worker.capacity_wait_ms. Returns 1 when a wait is armed, 0 when
 * waiting is over (the call has then been ended). */
static int capacity_wait(gt_hai_call_t *call, const gt_http_response_t *resp)
{
    const gt_config_t *cfg = call->env->cfg;
    int64_t now = gt_clock_mono_ms();
    int step = call->cap_waits + 1 < 16 ? call->cap_waits + 1 : 16;
    int64_t wait = gt_retry_backoff_ms(&cfg->retry, step, resp->retry_after_ms, gt_rand_unit());
    /* Spread the waiters a Retry-After would send back all at once. */
    wait += (int64_t)(gt_rand_unit() * 0.2 * (double)wait);
    if (call->cap_wait_ms + wait > cfg->capacity_wait_ms) {
        char detail[200];
        op_end(call);
        snprintf(detail, sizeof(detail), "pool %s stayed full for %" PRId64 " ms (%d waits)",
                 call->pool->name, call->cap_wait_ms, call->cap_waits);
        gt_eng_fail(&call->base, GT_TASK_FAILED, fail_codes[FAIL_CAPACITY], "%s", detail);
        go_release(call);
        return 0;
    }
    if (call->base.deadline != INT64_MAX && now + wait >= call->base.deadline) {
        call->cap_wait_ms += call->base.deadline > now ? call->base.deadline - now : 0;
        op_end(call);
        gt_eng_fail(&call->base, GT_TASK_EXPIRED, "deadline_exceeded",
                    "task deadline reached while waiting for capacity of pool %s",
                    call->pool->name);
        go_release(call);
        return 0;
    }
    call->cap_waits++;
    call->cap_wait_ms += wait;
    gt_wstats_capacity_wait(call->pool->name);
    arm(call, wait);
    return 1;
}

static void on_response(const gt_http_response_t *resp, void *arg)
{
    hai_req_t *req = arg;
    gt_hai_call_t *call = req->call;
    int op = req->op, by_deadline = req->by_deadline;
    int stale = req->seq != call->seq || call->finished;
    char err[160];
    gt_log_ctx_t ctx = gt_eng_call_ctx(&call->base);

    free(req);

    if (stale) {
        on_stale(call, op, resp);
        goto out;
    }
    call->in_flight = 0;

    int64_t ms = resp->elapsed_ms;
    if (resp->status >= 200 && resp->status < 300) {
        if (take_success(call, resp) == 0) {
            gt_eng_attempt(&call->base, op_names[op], resp->status, ms, NULL, NULL);
            op_end(call);
            if (op == OP_ALLOCATE) {
                allocate_settled(call, 0, 0);
                breaker_verdict(call, 1);
                hs_held(call->env->state, call->allocation_id, call->pool->name, 1);
                call->allocated_at = gt_clock_mono_ms();
                gt_wstats_allocated(call->pool->name, call->base.spec->model->name,
                                    (double)ms / 1e3);
                emit_allocation(call, "allocation.acquired", NULL);
                if (call->aborted) {
                    gt_eng_fail(&call->base, GT_TASK_FAILED, "aborted", "worker shutting down");
                    go_release(call);
                } else {
                    op_begin(call, OP_INFERENCE);
                }
            } else if (op == OP_INFERENCE) {
                breaker_verdict(call, 1);
                gt_wstats_inference(call->base.spec->model->name, (double)ms / 1e3);
                call->base.status = GT_TASK_SUCCEEDED;
                go_release(call);
            } else {
                hs_held(call->env->state, call->allocation_id, NULL, 0);
                call->released_at = gt_clock_mono_ms();
                gt_wstats_released(call->pool->name);
                emit_allocation(call, "allocation.released", NULL);
                finish(call);
            }
            goto out;
        }
        gt_eng_attempt(&call->base, op_names[op], resp->status, ms, NULL, "unparseable response");
        op_end(call);
        if (op == OP_ALLOCATE) {
            /* Something may have been allocated: look for it by its label. */
            allocate_settled(call, 1, 0);
            breaker_verdict(call, 0);
        }
        gt_eng_fail(&call->base, GT_TASK_FAILED, fail_codes[FAIL_BAD_RESPONSE],
                    "%s answered with an unexpected body", op_names[op]);
        go_release(call);
        goto out;
    }

    if (op == OP_RELEASE && resp->status == 404) {
        /* Already gone (the reaper got there first): nothing is held any more. */
        gt_eng_attempt(&call->base, op_names[op], resp->status, ms, NULL, "not found");
        op_end(call);
        hs_held(call->env->state, call->allocation_id, NULL, 0);
        call->released_at = gt_clock_mono_ms();
        gt_wstats_released(call->pool->name);
        gt_log(GT_LOG_WARN, &ctx, "release of %s: allocation not found", call->allocation_id);
        emit_allocation(call, "allocation.released", NULL);
        finish(call);
        goto out;
    }

    fail_t f = classify(op, resp);
    gt_eng_http_error(resp, err, sizeof(err));
    gt_eng_attempt(&call->base, op_names[op], resp->status, ms, NULL, err);
    gt_wstats_hostedai_error(fail_codes[f], op_names[op]);
    if (op == OP_ALLOCATE)
        allocate_settled(call, maybe_allocated(resp), f == FAIL_TIMEOUT || resp->status == 0);
    if (op != OP_RELEASE)
        breaker_verdict(call, f == FAIL_TIMEOUT || f == FAIL_UNAVAILABLE ? 0 : -1);

    if (op != OP_RELEASE && f == FAIL_TIMEOUT && by_deadline) {
        expire(call);
        goto out;
    }
    if (op == OP_ALLOCATE && f == FAIL_CAPACITY && !call->aborted) {
        /* Not a failure: the retries stay for real errors. */
        capacity_wait(call, resp);
        goto out;
    }
    int max = call->env->cfg->retry.max_retries;
    if (op == OP_RELEASE)
        max += GT_HAI_RELEASE_EXTRA_RETRIES;
    if (f != FAIL_REJECTED && f != FAIL_TOO_LARGE && !(call->aborted && op != OP_RELEASE)) {
        static const char *const retry_ops[OP_COUNT] = {"hostedai.allocate", "hostedai.inference",
                                                        "hostedai.release"};
        int64_t wait = 0;
        gt_eng_next_t next =
            gt_eng_next(&call->env->cfg->retry, &call->retry, max, resp->retry_after_ms,
                        op == OP_RELEASE ? INT64_MAX : call->base.deadline, retry_ops[op], &wait);
        if (next == GT_ENG_EXPIRE) {
            expire(call);
            goto out;
        }
        if (next == GT_ENG_RETRY) {
            gt_log(GT_LOG_DEBUG, &ctx, "%s failed (%s), retry %d in %" PRId64 " ms", op_names[op],
                   err, call->retry, wait);
            arm(call, wait);
            goto out;
        }
    }
    op_end(call);
    if (op != OP_RELEASE && call->retry > call->retries)
        call->retries = call->retry;
    if (op == OP_RELEASE) {
        /* Still held: the process keeps trying (the task's result does not wait for it). */
        gt_log(GT_LOG_WARN, &ctx,
               "release of %s failed after %d attempts (%s); the worker "
               "keeps retrying it",
               call->allocation_id, call->retry + 1, err);
        emit_allocation(call, "allocation.release_failed", err);
        hs_owe_release(call->env->state, call->pool, call->allocation_id, call->base.task_id, 1);
        call->released_at = gt_clock_mono_ms();
        finish(call);
        goto out;
    }
    if (call->aborted) {
        gt_eng_fail(&call->base, GT_TASK_FAILED, "aborted", "worker shutting down");
    } else {
        gt_eng_fail(&call->base, GT_TASK_FAILED, fail_codes[f], "%s failed after %d attempt%s: %s",
                    op_names[op], call->retry + 1, call->retry ? "s" : "", err);
    }
    go_release(call);
out:
    gt_eng_call_unref(&call->base);
}

static void go_release(gt_hai_call_t *call)
{
    if (call->finished)
        return;
    if (!call->allocation_id || call->released_at) {
        finish(call);
        return;
    }
    op_begin(call, OP_RELEASE);
}

static void finish(gt_hai_call_t *call)
{
    if (call->finished)
        return;
    call->finished = 1;
    close_timer(call);
    if (call->cap_waits)
        gt_wstats_capacity_waited(call->pool->name, (double)call->cap_wait_ms / 1000.0);
    if (call->cb) {
        gt_task_outcome_t out = {0};
        out.status = call->base.status;
        out.error_code = call->base.code;
        out.error_message = call->base.code ? call->base.message : NULL;
        out.output = call->base.status == GT_TASK_SUCCEEDED ? call->base.output : NULL;
        out.pool = call->pool->name;
        out.provider = "hostedai";
        out.allocation_id = call->allocation_id;
        out.attempts = call->base.attempts;
        out.retries = call->retries;
        out.prompt_tokens = call->prompt_tokens;
        out.completion_tokens = call->completion_tokens;
        out.allocate_ms = call->op_ms[OP_ALLOCATE];
        out.inference_ms = call->op_ms[OP_INFERENCE];
        out.release_ms = call->op_ms[OP_RELEASE];
        out.capacity_wait_ms = call->cap_waits ? call->cap_wait_ms : -1;
        if (call->allocated_at && call->released_at)
            out.allocation_seconds = (double)(call->released_at - call->allocated_at) / 1000.0;
        out.request_bytes = call->request_bytes;
        out.response_bytes = call->response_bytes;
        call->cb((gt_rt_call_t *)call, &out, call->cb_arg);
    }
    gt_eng_call_unref(&call->base); /* the owner's reference */
}

gt_hai_call_t *gt_hai_start(const gt_hai_env_t *env, const gt_task_spec_t *spec, gt_rt_done_cb cb,
                            void *arg, const char **code)
{
    gt_hai_call_t *call = NULL;
    const gt_pool_t *pool = gt_config_pool(env->cfg, spec->model->pool);
    char line[1024];

    *code = "internal";
    if (!pool) {
        *code = "unknown_pool";
        return NULL;
    }
    call = gt_eng_call_new(sizeof(*call), env->loop, spec, hai_free);
    if (!call)
        goto fail;
    call->env = env;
    call->pool = pool;
    call->retries = spec->retries_spent;
    call->cb = cb;
    call->cb_arg = arg;
    for (int i = 0; i < OP_COUNT; i++)
        call->op_ms[i] = -1;
    int n = 0;
    snprintf(line, sizeof(line), "Authorization: Bearer %s", pool->api_key ? pool->api_key : "");
    call->headers[n++] = strdup(line);
    call->headers[n++] = strdup("Content-Type: application/json");
    call->headers[n++] = strdup("Accept: application/json");
    if (spec->traceparent && *spec->traceparent) {
        snprintf(line, sizeof(line), "traceparent: %s", spec->traceparent);
        call->headers[n++] = strdup(line);
    }
    memset(line, 0, sizeof(line));
    for (int i = 0; i < n; i++)
        if (!call->headers[i])
            goto fail;
    call->op = OP_ALLOCATE;
    call->op_start[OP_ALLOCATE] = gt_clock_mono_ms();
    op_span_start(call, OP_ALLOCATE);
    /* The first attempt goes out from the loop, so cb never runs inside this call. */
    arm(call, 0);
    return call;
fail:
    memset(line, 0, sizeof(line));
    if (call) {
        /* Nothing was sent: the timer closes and the last reference frees the call. */
        call->finished = 1;
        close_timer(call);
        gt_eng_call_unref(&call->base);
    }
    return NULL;
}

void gt_hai_abort(gt_hai_call_t *call)
{
    if (call->finished || call->aborted)
        return;
    call->aborted = 1;
    if (call->op == OP_RELEASE)
        return; /* already giving back; let it finish */
    if (call->waiting) {
        uv_timer_stop(&call->base.timer);
        call->waiting = 0;
        op_end(call);
        gt_eng_fail(&call->base, GT_TASK_FAILED, "aborted", "worker shutting down");
        go_release(call);
        return;
    }
    if (call->in_flight && call->op == OP_INFERENCE) {
        /* Abandon the inference (its answer is ignored) and give the GPU back now. */
        call->seq++;
        call->in_flight = 0;
        gt_eng_attempt(&call->base, op_names[OP_INFERENCE], 0,
                       gt_clock_mono_ms() - call->op_start[OP_INFERENCE], NULL, "aborted");
        op_end(call);
        gt_eng_fail(&call->base, GT_TASK_FAILED, "aborted", "worker shutting down");
        go_release(call);
    }
    /* An allocate in flight is awaited: its answer may hold something to release. */
}

void gt_hai_cancel(gt_hai_call_t *call)
{
    call->cb = NULL;
    if (call->finished)
        return;
    call->finished = 1;
    call->seq++;
    /* What it holds is given back by the process; an allocate in flight is
     * settled when its answer comes (on_stale). */
    if (call->allocation_id && !call->released_at)
        hs_owe_release(call->env->state, call->pool, call->allocation_id, call->base.task_id, 1);
    if (call->breaker_out)
        breaker_verdict(call, -1);
    close_timer(call);
    gt_eng_call_unref(&call->base);
}

/* Flattens chat messages into "role: content\n" lines. */
static char *flatten_messages(const json_t *messages)
{
    size_t cap = 256, len = 0, i;
    char *s = malloc(cap);
    json_t *m;
    if (!s)
        return NULL;
    s[0] = '\0';
    json_array_foreach (messages, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *content = json_string_value(json_object_get(m, "content"));
        if (!role || !content) {
            free(s);
            return NULL;
        }
        size_t need = strlen(role) + strlen(content) + 4;
        if (len + need >= cap) {
            while (len + need >= cap)
                cap *= 2;
            char *grown = realloc(s, cap);
            if (!grown) {
                free(s);
                return NULL;
            }
            s = grown;
        }
        len += (size_t)snprintf(s + len, cap - len, "%s: %s\n", role, content);
    }
    return s;
}

json_t *gt_hai_inference_body(const char *allocation_id, const char *kind, const json_t *input,
                              const json_t *parameters, const char **why)
{
    json_t *body = json_pack("{s:s}", "allocation_id", allocation_id ? allocation_id : "");
    *why = NULL;
    if (!body)
        goto oom;
    if (strcmp(kind, "chat") == 0) {
        const json_t *messages = json_is_array(input) ? input : json_object_get(input, "messages");
        if (!json_is_array(messages)) {
            *why = "chat input must be an array of messages";
            goto fail;
        }
        char *flat = flatten_messages(messages);
        if (!flat) {
            *why = "chat messages need string role and content";
            goto fail;
        }
        json_object_set_new(body, "prompt", json_string(flat));
        free(flat);
        json_object_set_new(body, "messages", json_deep_copy(messages));
    } else if (strcmp(kind, "embed") == 0) {
        if (!json_is_string(input) && !json_is_array(input)) {
            *why = "embed input must be a string or an array of strings";
            goto fail;
        }
        json_object_set_new(body, "input", json_deep_copy(input));
    } else {
        const json_t *prompt = json_is_string(input) ? input : json_object_get(input, "prompt");
        if (!json_is_string(prompt)) {
            *why = "generate input must be a string";
            goto fail;
        }
        json_object_set_new(body, "prompt", json_deep_copy(prompt));
    }
    json_t *t = json_object_get(parameters, "temperature");
    json_t *mt = json_object_get(parameters, "max_tokens");
    if (json_is_number(t))
        json_object_set_new(body, "temperature", json_deep_copy(t));
    if (json_is_integer(mt))
        json_object_set_new(body, "max_tokens", json_deep_copy(mt));
    return body;
oom:
    *why = "out of memory";
fail:
    json_decref(body);
    return NULL;
}

/* ---- per-process state: leases held, releases owed, breakers ---------------- */

enum { JOB_RELEASE, JOB_SWEEP };

/* A release owed, or a label search for an allocate whose answer never came. */
typedef struct hs_job {
    struct hs_job *next;
    gt_hai_state_t *s;
    int kind;
    const gt_pool_t *pool;
    char *key;     /* allocation id (release) or attempt label (sweep) */
    char *task_id; /* for events and logs */
    int counted;   /* release: counted in hosted_ai_allocations_outstanding;
                      sweep: searches to make */
    int tries;     /* attempts (searches) made so far */
    int64_t due;   /* mono ms of the next try */
    int in_flight;
} hs_job_t;

struct gt_hai_state {
    const gt_hai_env_t *env;
    json_t *held;       /* allocation id -> pool name */
    json_t *allocating; /* attempt label -> pool name */
    hs_job_t *jobs;
    int n_jobs;
    unsigned long next_attempt;
    uv_timer_t timer;
    int closed;
    gt_eng_breaker_t *breakers; /* one per cfg pool, same order, named "hostedai:<pool>" */
    size_t n_breakers;
    void (*settled_cb)(void *arg);
    void *settled_arg;
};

static void hs_arm(gt_hai_state_t *s);

static unsigned long hs_next_attempt(gt_hai_state_t *s)
{
    static unsigned long fallback;
    return s ? ++s->next_attempt : ++fallback;
}

static void hs_allocating(gt_hai_state_t *s, const char *attempt, const char *pool, int on)
{
    if (!s || !attempt || !*attempt)
        return;
    if (on)
        json_object_set_new(s->allocating, attempt, json_string(pool));
    else
        json_object_del(s->allocating, attempt);
}

static void hs_held(gt_hai_state_t *s, const char *id, const char *pool, int on)
{
    if (!s || !id)
        return;
    if (on)
        json_object_set_new(s->held, id, json_string(pool));
    else
        json_object_del(s->held, id);
}

static void hs_emit(gt_hai_state_t *s, const char *type, const hs_job_t *j, const char *id)
{
    if (!s->env->emit)
        return;
    json_t *data = json_pack("{s:s, s:s, s:s}", "allocation_id", id, "pool", j->pool->name,
                             "task_id", j->task_id ? j->task_id : "");
    if (data && j->kind == JOB_SWEEP)
        json_object_set_new(data, "found_by", json_string("labels"));
    s->env->emit(type, data, s->env->emit_arg);
}

static hs_job_t *hs_job_new(gt_hai_state_t *s, int kind, const gt_pool_t *pool, const char *key,
                            const char *task_id)
{
    hs_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->s = s;
    j->kind = kind;
    j->pool = pool;
    j->key = strdup(key);
    j->task_id = strdup(task_id ? task_id : "");
    if (!j->key || !j->task_id) {
        free(j->key);
        free(j->task_id);
        free(j);
        return NULL;
    }
    j->due = gt_clock_mono_ms();
    j->next = s->jobs;
    s->jobs = j;
    s->n_jobs++;
    gt_wstats_releases_owed(s->n_jobs);
    return j;
}

/* Unlinks and frees j; the settled callback runs when nothing is left. */
static void hs_job_free(gt_hai_state_t *s, hs_job_t *j)
{
    for (hs_job_t **pp = &s->jobs; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            s->n_jobs--;
            break;
        }
    }
    gt_wstats_releases_owed(s->n_jobs);
    free(j->key);
    free(j->task_id);
    free(j);
    if (s->n_jobs == 0 && !s->closed && s->settled_cb)
        s->settled_cb(s->settled_arg);
}

static void hs_owe_release(gt_hai_state_t *s, const gt_pool_t *pool, const char *id,
                           const char *task_id, int counted)
{
    if (!s || s->closed) {
        gt_warn("allocation %s in pool %s cannot be released by this process now: left to "
                "the lease reaper",
                id, pool->name);
        return;
    }
    for (hs_job_t *j = s->jobs; j; j = j->next)
        if (j->kind == JOB_RELEASE && strcmp(j->key, id) == 0)
            return; /* already owed */
    hs_held(s, id, pool->name, 1);
    hs_job_t *j = hs_job_new(s, JOB_RELEASE, pool, id, task_id);
    if (!j) {
        gt_error("out of memory: allocation %s left to the lease reaper", id);
        return;
    }
    j->counted = counted;
    hs_arm(s);
}

static void hs_sweep(gt_hai_state_t *s, const gt_pool_t *pool, const char *attempt,
                     const char *task_id, int sweeps)
{
    if (!s || s->closed)
        return;
    /* Reported as allocating until the last search, so the reaper waits for it. */
    hs_job_t *j = hs_job_new(s, JOB_SWEEP, pool, attempt, task_id);
    if (!j) {
        hs_allocating(s, attempt, NULL, 0);
        return;
    }
    j->counted = sweeps < N_SWEEPS ? sweeps : N_SWEEPS;
    hs_arm(s);
}

static void hs_auth(const gt_pool_t *pool, char *auth, size_t len, const char *hdrs[3])
{
    snprintf(auth, len, "Authorization: Bearer %s", pool->api_key ? pool->api_key : "");
    hdrs[0] = auth;
    hdrs[1] = "Accept: application/json";
    hdrs[2] = NULL;
}

/* A job's request answered: its state, or NULL when the state closed (j freed). */
static gt_hai_state_t *hs_answered(hs_job_t *j)
{
    gt_hai_state_t *s = j->s;
    j->in_flight = 0;
    if (s->closed) {
        hs_job_free(s, j);
        return NULL;
    }
    return s;
}

static void hs_on_released(const gt_http_response_t *resp, void *arg)
{
    hs_job_t *j = arg;
    gt_hai_state_t *s = hs_answered(j);
    if (!s)
        return;
    if ((resp->status >= 200 && resp->status < 300) || resp->status == 404) {
        gt_info("owed release of allocation %s in pool %s done after %d attempt%s%s", j->key,
                j->pool->name, j->tries, j->tries == 1 ? "" : "s",
                resp->status == 404 ? " (it was already gone)" : "");
        hs_held(s, j->key, NULL, 0);
        if (j->counted)
            gt_wstats_released(j->pool->name);
        hs_emit(s, "allocation.released", j, j->key);
        hs_job_free(s, j);
        return;
    }
    int64_t wait = gt_retry_backoff_ms(&s->env->cfg->retry, j->tries < 16 ? j->tries : 16,
                                       resp->retry_after_ms, gt_rand_unit());
    if (wait > GT_HAI_OWED_MAX_MS)
        wait = GT_HAI_OWED_MAX_MS;
    gt_debug("owed release of %s failed (status %ld), again in %lld ms", j->key, resp->status,
             (long long)wait);
    j->due = gt_clock_mono_ms() + wait;
    hs_arm(s);
}

static void hs_on_listed(const gt_http_response_t *resp, void *arg)
{
    hs_job_t *j = arg;
    gt_hai_state_t *s = hs_answered(j);
    if (!s)
        return;
    if (resp->status == 200) {
        json_t *doc = gt_json_parse(resp->body, resp->body_len, 0, NULL);
        size_t i;
        json_t *a;
        json_array_foreach (json_object_get(doc, "allocations"), i, a) {
            const char *id = json_string_value(json_object_get(a, "allocation_id"));
            const char *label =
                json_string_value(json_object_get(json_object_get(a, "labels"), "attempt"));
            /* The filter is HostedAI's; the check is ours. */
            if (!id || !label || strcmp(label, j->key) != 0 || json_object_get(s->held, id))
                continue;
            gt_warn("allocate of task %s timed out here but succeeded at pool %s (%s): "
                    "releasing it",
                    j->task_id, j->pool->name, id);
            hs_emit(s, "allocation.acquired", j, id);
            hs_owe_release(s, j->pool, id, j->task_id, 0);
        }
        json_decref(doc);
    }
    if (j->tries >= j->counted) {
        hs_allocating(s, j->key, NULL, 0);
        hs_job_free(s, j);
        return;
    }
    j->due = gt_clock_mono_ms() + sweep_delays_ms[j->tries];
    hs_arm(s);
}

static void hs_run(gt_hai_state_t *s, hs_job_t *j)
{
    const gt_config_t *cfg = s->env->cfg;
    char url[2048], auth[1024];
    const char *hdrs[3];
    int rc;
    hs_auth(j->pool, auth, sizeof(auth), hdrs);
    j->in_flight = 1;
    j->tries++;
    if (j->kind == JOB_RELEASE) {
        snprintf(url, sizeof(url), "%s/v1/allocate/%s", j->pool->endpoint, j->key);
        rc = gt_http_request(s->env->http, "DELETE", url, hdrs, NULL, 0, cfg->release_timeout_ms,
                             hs_on_released, j);
    } else {
        /* Attempt labels are "<hex>:<n>": nothing to escape in a query. */
        snprintf(url, sizeof(url), "%s/v1/allocations?label.attempt=%s", j->pool->endpoint, j->key);
        rc = gt_http_request(s->env->http, "GET", url, hdrs, NULL, 0, cfg->release_timeout_ms,
                             hs_on_listed, j);
    }
    memset(auth, 0, sizeof(auth));
    if (rc != 0) {
        j->in_flight = 0;
        j->tries--;
        j->due = gt_clock_mono_ms() + 1000;
    }
}

static void hs_on_timer(uv_timer_t *t)
{
    gt_hai_state_t *s = t->data;
    int64_t now = gt_clock_mono_ms();
    /* hs_run never frees a job (its callbacks come from the loop later). */
    for (hs_job_t *j = s->jobs; j; j = j->next)
        if (!j->in_flight && j->due <= now)
            hs_run(s, j);
    hs_arm(s);
}

static void hs_arm(gt_hai_state_t *s)
{
    int64_t due = INT64_MAX, now = gt_clock_mono_ms();
    if (s->closed)
        return;
    for (hs_job_t *j = s->jobs; j; j = j->next)
        if (!j->in_flight && j->due < due)
            due = j->due;
    if (due == INT64_MAX)
        uv_timer_stop(&s->timer);
    else
        uv_timer_start(&s->timer, hs_on_timer, (uint64_t)(due > now ? due - now : 0), 0);
}

static gt_eng_breaker_t *hs_breaker(gt_hai_state_t *s, const gt_pool_t *pool)
{
    if (!s)
        return NULL;
    const gt_config_t *cfg = s->env->cfg;
    for (size_t i = 0; i < s->n_breakers && i < cfg->n_pools; i++)
        if (&cfg->pools[i] == pool)
            return &s->breakers[i];
    return NULL;
}

gt_hai_state_t *gt_hai_state_new(const gt_hai_env_t *env)
{
    gt_hai_state_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->env = env;
    s->held = json_object();
    s->allocating = json_object();
    s->n_breakers = env->cfg->n_pools;
    s->breakers = calloc(s->n_breakers + 1, sizeof(gt_eng_breaker_t));
    if (!s->held || !s->allocating || !s->breakers) {
        json_decref(s->held);
        json_decref(s->allocating);
        free(s->breakers);
        free(s);
        return NULL;
    }
    for (size_t i = 0; i < s->n_breakers; i++) {
        const gt_pool_t *p = &env->cfg->pools[i];
        char name[300];
        /* "hostedai:<pool>": routing by provider name never confuses it with a provider. */
        snprintf(name, sizeof(name), "hostedai:%s", p->name);
        gt_eng_breaker_init(&s->breakers[i], name, p->endpoint ? p->endpoint : "", p->name,
                            p->breaker_failures, p->breaker_recovery_ms, env->emit, env->emit_arg);
    }
    uv_timer_init(env->loop, &s->timer);
    s->timer.data = s;
    return s;
}

static json_t *keys_of(const json_t *obj)
{
    json_t *a = json_array();
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)obj, k, v) {
        (void)v;
        json_array_append_new(a, json_string(k));
    }
    return a;
}

json_t *gt_hai_state_held(const gt_hai_state_t *s)
{
    return keys_of(s->held);
}

json_t *gt_hai_state_allocating(const gt_hai_state_t *s)
{
    return keys_of(s->allocating);
}

int gt_hai_state_pending(const gt_hai_state_t *s)
{
    return s->n_jobs;
}

void gt_hai_state_on_settled(gt_hai_state_t *s, void (*cb)(void *arg), void *arg)
{
    s->settled_cb = cb;
    s->settled_arg = arg;
}

void gt_hai_state_close(gt_hai_state_t *s)
{
    if (s->closed)
        return;
    s->closed = 1;
    if (s->n_jobs)
        gt_warn("%d HostedAI release(s) or search(es) left undone: the lease reaper takes "
                "what they held",
                s->n_jobs);
    uv_close((uv_handle_t *)&s->timer, NULL);
}

void gt_hai_state_free(gt_hai_state_t *s)
{
    if (!s)
        return;
    while (s->jobs) {
        hs_job_t *j = s->jobs;
        s->jobs = j->next;
        free(j->key);
        free(j->task_id);
        free(j);
    }
    json_decref(s->held);
    json_decref(s->allocating);
    free(s->breakers);
    free(s);
}

/* ---- as a runtime (runtime.h) ------------------------------------------------- */

/* The pool could not serve (down, slow, throttling, full): another model may. */
static const char *const fall_back_codes[] = {"hostedai_unavailable", "hostedai_timeout",
                                              "hostedai_rate_limited", "hostedai_capacity", NULL};

static int hai_serves(const gt_model_t *m)
{
    return m->runtime && strcmp(m->runtime, "hostedai") == 0;
}

static int hai_unavailable(void *ctx, const gt_model_t *m)
{
    const gt_hai_env_t *env = ctx;
    const gt_eng_breaker_t *b = hs_breaker(env->state, gt_config_pool(env->cfg, m->pool));
    return b && gt_eng_breaker_unavailable(b);
}

static gt_rt_call_t *hai_start(void *ctx, const gt_task_spec_t *spec, gt_rt_done_cb cb, void *arg,
                               const char **code)
{
    return (gt_rt_call_t *)gt_hai_start(ctx, spec, cb, arg, code);
}

static int hai_may_fall_back(const char *code)
{
    return gt_eng_code_in(code, fall_back_codes);
}

static void hai_abort(gt_rt_call_t *call)
{
    gt_hai_abort((gt_hai_call_t *)call);
}

/* Cancelled while holding an allocation: the process state owes its release. */
static void hai_cancel(gt_rt_call_t *call)
{
    gt_hai_cancel((gt_hai_call_t *)call);
}

const gt_runtime_ops_t gt_runtime_ops_hostedai = {
    "hostedai", hai_serves, hai_start, hai_abort, hai_cancel, hai_unavailable, hai_may_fall_back,
};
