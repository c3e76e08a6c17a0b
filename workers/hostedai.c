/* hostedai.c - HostedAI runtime: per task a small state machine allocate -> infer -> release.
 *
 * A call holds references: one for its owner until it finishes (or is
 * cancelled), one for its backoff timer until the timer is closed, and one
 * per HTTP request in flight. It is freed when the last one goes, so an HTTP
 * callback never touches freed memory, even for a request the call abandoned.
 * Release happens exactly once after a successful allocate, whatever ends the
 * task: success, inference error, timeout, deadline or shutdown. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "hostedai.h"
#include "log.h"
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
    FAIL_CAPACITY,
    FAIL_REJECTED,
    FAIL_BAD_RESPONSE,
} fail_t;

static const char *const fail_codes[] = {
    NULL,
    "hostedai_timeout",
    "hostedai_unavailable",
    "hostedai_rate_limited",
    "hostedai_capacity",
    "hostedai_rejected",
    "hostedai_bad_response",
};

struct gt_hai_call {
    const gt_hai_env_t *env;
    const gt_pool_t *pool;
    const gt_task_spec_t *spec; /* borrowed until cb */
    gt_hai_done_cb cb;
    void *cb_arg;

    int refs;
    unsigned seq;       /* bumped when the request in flight is abandoned */
    int op;
    int retry;          /* retries done for op */
    int in_flight;      /* a request of the current seq is in flight */
    int waiting;        /* the timer is armed for the next attempt */
    int finished;       /* cb ran or the call was cancelled */
    int aborted;
    int timer_closed;
    uv_timer_t timer;

    char *task_id, *request_id, *tenant_id; /* log context */
    char traceparent[GT_TRACEPARENT_LEN + 1]; /* the task's ("" when none): span parent */
    gt_span_t span[OP_COUNT];                 /* one per operation, while it runs */
    int span_open[OP_COUNT];
    int64_t deadline;   /* mono ms, INT64_MAX: none */
    char *headers[5];   /* NULL-terminated; [0] holds the API key: never log */
    char *allocation_id;

    /* outcome */
    gt_task_status_t status;
    const char *code;
    char message[256];
    json_t *output;
    json_t *attempts;
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

static void call_unref(gt_hai_call_t *call);
static void op_begin(gt_hai_call_t *call, int op);
static void send_attempt(gt_hai_call_t *call);
static void finish(gt_hai_call_t *call);
static void go_release(gt_hai_call_t *call);

/* Backoff jitter needs no quality, only independence between workers. */
static double hai_rand(void)
{
    static uint64_t s;
    if (s == 0)
        s = (uint64_t)gt_clock_mono_ms() * 6364136223846793005ULL ^ (uint64_t)getpid() ^ 1;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (double)(s >> 11) / 9007199254740992.0;
}

static gt_log_ctx_t call_ctx(const gt_hai_call_t *call)
{
    gt_log_ctx_t ctx = {call->request_id, call->task_id, call->tenant_id, call->traceparent};
    return ctx;
}

static void call_free(gt_hai_call_t *call)
{
    free(call->task_id);
    free(call->request_id);
    free(call->tenant_id);
    for (int i = 0; call->headers[i]; i++) {
        /* The key sits in [0]: scrub it before the memory is reused. */
        memset(call->headers[i], 0, strlen(call->headers[i]));
        free(call->headers[i]);
    }
    free(call->allocation_id);
    json_decref(call->output);
    json_decref(call->attempts);
    free(call);
}

static void call_unref(gt_hai_call_t *call)
{
    if (--call->refs == 0)
        call_free(call);
}

static void on_timer_close(uv_handle_t *h)
{
    call_unref(h->data);
}

static void close_timer(gt_hai_call_t *call)
{
    if (call->timer_closed)
        return;
    call->timer_closed = 1;
    call->waiting = 0;
    uv_close((uv_handle_t *)&call->timer, on_timer_close);
}

static void emit_allocation(gt_hai_call_t *call, const char *type, const char *error)
{
    if (!call->env->emit)
        return;
    json_t *data = json_pack("{s:s, s:s, s:s}", "allocation_id", call->allocation_id, "pool",
                             call->pool->name, "task_id", call->task_id);
    if (data && error)
        json_object_set_new(data, "error", json_string(error));
    if (data && call->released_at)
        json_object_set_new(data, "allocation_seconds",
                            json_real(round((double)(call->released_at - call->allocated_at)) / 1000.0));
    call->env->emit(type, data, call->env->emit_arg);
}

static void record_attempt(gt_hai_call_t *call, int op, long status, int64_t ms, const char *error)
{
    json_t *a = json_pack("{s:s, s:i, s:I}", "op", op_names[op], "status", (int)status, "ms",
                          (json_int_t)ms);
    if (!a)
        return;
    json_object_set_new(a, "error", error ? json_string(error) : json_null());
    json_array_append_new(call->attempts, a);
}

/* A span per operation (allocate, inference, release), child of the task's span. */
static void op_span_start(gt_hai_call_t *call, int op)
{
    gt_trace_ctx_t parent;
    if (call->span_open[op] || gt_trace_parse(call->traceparent, &parent) != 0)
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
    json_t *last = json_array_get(call->attempts, json_array_size(call->attempts) - 1);
    const char *error = json_string_value(json_object_get(last, "error"));
    gt_span_end(&call->span[op], error,
                json_pack("{s:s, s:s, s:s, s:i, s:s}", "gantry.task_id", call->task_id,
                          "hostedai.pool", call->pool->name, "hostedai.operation", op_names[op],
                          "gantry.retries", call->retry, "gantry.allocation_id",
                          call->allocation_id ? call->allocation_id : ""));
}

static void op_end(gt_hai_call_t *call)
{
    call->op_ms[call->op] = gt_clock_mono_ms() - call->op_start[call->op];
    op_span_end(call, call->op);
}

static void set_failure(gt_hai_call_t *call, gt_task_status_t status, const char *code,
                        const char *fmt, const char *detail)
{
    /* The first failure explains the task; later ones (a failed release) do not override it. */
    if (call->code)
        return;
    call->status = status;
    call->code = code;
    snprintf(call->message, sizeof(call->message), fmt, detail ? detail : "");
    json_decref(call->output);
    call->output = NULL;
}

static void expire(gt_hai_call_t *call)
{
    op_end(call);
    set_failure(call, GT_TASK_EXPIRED, "deadline_exceeded", "task deadline reached during %s",
                op_names[call->op]);
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
    uv_timer_start(&call->timer, on_timer, (uint64_t)(delay_ms > 0 ? delay_ms : 0), 0);
}

static void op_begin(gt_hai_call_t *call, int op)
{
    call->op = op;
    call->retry = 0;
    call->op_start[op] = gt_clock_mono_ms();
    op_span_start(call, op);
    send_attempt(call);
}

static char *build_body(gt_hai_call_t *call, size_t *len)
{
    const gt_task_spec_t *spec = call->spec;
    json_t *body = NULL;
    const char *why = NULL;
    if (call->op == OP_ALLOCATE) {
        body = json_pack("{s:s, s:{s:f, s:I, s:s}, s:b, s:{s:s, s:s}}", "pool_id",
                         call->pool->name, "requirements", "tflops", spec->model->tflops,
                         "vram_mb", (json_int_t)spec->model->vram_mb, "model", spec->model->name,
                         "overcommit", call->pool->overcommit, "labels", "holder",
                         call->env->worker_id, "task_id", call->task_id);
    } else if (call->op == OP_INFERENCE) {
        body = gt_hai_inference_body(call->allocation_id, spec->kind, spec->input,
                                     spec->parameters, &why);
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
        set_failure(call, GT_TASK_FAILED, "aborted", "%sworker shutting down", NULL);
        go_release(call);
        return;
    }
    /* The deadline bounds every call but the release: what was acquired is
     * always given back. */
    if (op != OP_RELEASE && call->deadline != INT64_MAX) {
        int64_t left = call->deadline - now;
        if (left <= 0) {
            expire(call);
            return;
        }
        if (left < timeout) {
            timeout = left;
            by_deadline = 1;
        }
    }
    if (op == OP_RELEASE) {
        snprintf(url, sizeof(url), "%s/v1/allocate/%s", call->pool->endpoint, call->allocation_id);
        method = "DELETE";
    } else {
        snprintf(url, sizeof(url), "%s/v1/%s", call->pool->endpoint,
                 op == OP_ALLOCATE ? "allocate" : "inference");
        body = build_body(call, &body_len);
        if (!body) {
            op_end(call);
            set_failure(call, GT_TASK_FAILED, "invalid_input",
                        "input does not fit kind %s", call->spec->kind);
            go_release(call);
            return;
        }
    }
    hai_req_t *req = malloc(sizeof(*req));
    if (!req) {
        free(body);
        op_end(call);
        set_failure(call, GT_TASK_FAILED, "internal", "%sout of memory", NULL);
        go_release(call);
        return;
    }
    req->call = call;
    req->seq = call->seq;
    req->op = op;
    req->by_deadline = by_deadline;
    call->refs++; /* dropped by on_response */
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
    json_t *doc = resp->body_len ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
    json_t *e = json_object_get(doc, "error");
    const char *code = json_is_string(e) ? json_string_value(e)
                                         : json_string_value(json_object_get(e, "code"));
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
    if (op == OP_ALLOCATE && resp->status == 409)
        return FAIL_CAPACITY;
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
    json_error_t jerr;
    json_t *doc = NULL;
    int rc = -1;

    if (call->op == OP_RELEASE)
        return 0; /* the body does not matter */
    doc = json_loadb(resp->body, resp->body_len, 0, &jerr);
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
        call->output = json_pack("{s:O}", "embedding", emb);
    else if (json_is_array(embs) && json_is_array(json_array_get(embs, 0)) &&
             json_array_size(embs) == 1)
        /* One input, one vector. */
        call->output = json_pack("{s:O}", "embedding", json_array_get(embs, 0));
    else if (json_is_array(embs) && json_is_array(json_array_get(embs, 0)))
        /* Several inputs: task-result.v1 wants "embedding" to be one vector,
         * so the first goes there and all of them in "embeddings". */
        call->output = json_pack("{s:O, s:O}", "embedding", json_array_get(embs, 0),
                                 "embeddings", embs);
    else if (json_is_string(text))
        call->output = json_pack("{s:O}", "text", text);
    else
        goto out;
    json_t *usage = json_object_get(doc, "usage");
    call->prompt_tokens = json_integer_value(json_object_get(usage, "prompt_tokens"));
    call->completion_tokens = json_integer_value(json_object_get(usage, "completion_tokens"));
    call->request_bytes = (int64_t)resp->request_bytes;
    call->response_bytes = (int64_t)resp->body_len;
    rc = call->output ? 0 : -1;
out:
    json_decref(doc);
    return rc;
}

static void on_response(const gt_http_response_t *resp, void *arg)
{
    hai_req_t *req = arg;
    gt_hai_call_t *call = req->call;
    int op = req->op, by_deadline = req->by_deadline;
    int stale = req->seq != call->seq || call->finished;
    char err[160];
    gt_log_ctx_t ctx = call_ctx(call);

    free(req);

    if (stale) {
        if (op == OP_ALLOCATE && resp->status >= 200 && resp->status < 300)
            gt_log(GT_LOG_WARN, &ctx, "allocate answered after the task was cancelled; "
                   "the lease reaper will release it");
        goto out;
    }
    call->in_flight = 0;

    int64_t ms = resp->elapsed_ms;
    if (resp->status >= 200 && resp->status < 300) {
        if (take_success(call, resp) == 0) {
            record_attempt(call, op, resp->status, ms, NULL);
            op_end(call);
            if (op == OP_ALLOCATE) {
                call->allocated_at = gt_clock_mono_ms();
                gt_wstats_allocated(call->pool->name, call->spec->model->name, (double)ms / 1e3);
                emit_allocation(call, "allocation.acquired", NULL);
                if (call->aborted) {
                    set_failure(call, GT_TASK_FAILED, "aborted", "%sworker shutting down", NULL);
                    go_release(call);
                } else {
                    op_begin(call, OP_INFERENCE);
                }
            } else if (op == OP_INFERENCE) {
                gt_wstats_inference(call->spec->model->name, (double)ms / 1e3);
                call->status = GT_TASK_SUCCEEDED;
                go_release(call);
            } else {
                call->released_at = gt_clock_mono_ms();
                gt_wstats_released(call->pool->name);
                emit_allocation(call, "allocation.released", NULL);
                finish(call);
            }
            goto out;
        }
        record_attempt(call, op, resp->status, ms, "unparseable response");
        op_end(call);
        set_failure(call, GT_TASK_FAILED, fail_codes[FAIL_BAD_RESPONSE],
                    "%s answered with an unexpected body", op_names[op]);
        /* An unparseable allocate leaves no id to release: the reaper's job. */
        go_release(call);
        goto out;
    }

    if (op == OP_RELEASE && resp->status == 404) {
        /* Already gone (the reaper got there first): nothing is held any more. */
        record_attempt(call, op, resp->status, ms, "not found");
        op_end(call);
        call->released_at = gt_clock_mono_ms();
        gt_wstats_released(call->pool->name);
        gt_log(GT_LOG_WARN, &ctx, "release of %s: allocation not found", call->allocation_id);
        emit_allocation(call, "allocation.released", NULL);
        finish(call);
        goto out;
    }

    fail_t f = classify(op, resp);
    if (resp->timed_out)
        snprintf(err, sizeof(err), "timeout");
    else if (resp->status == 0)
        snprintf(err, sizeof(err), "%s", resp->error ? resp->error : "transport error");
    else
        snprintf(err, sizeof(err), "HTTP %ld", resp->status);
    record_attempt(call, op, resp->status, ms, err);
    gt_wstats_hostedai_error(fail_codes[f], op_names[op]);

    if (op != OP_RELEASE && f == FAIL_TIMEOUT && by_deadline) {
        expire(call);
        goto out;
    }
    int max = call->env->cfg->retry.max_retries;
    if (op == OP_RELEASE)
        max += GT_HAI_RELEASE_EXTRA_RETRIES;
    if (f != FAIL_REJECTED && call->retry < max && !(call->aborted && op != OP_RELEASE)) {
        call->retry++;
        gt_wstats_retry(op == OP_ALLOCATE ? "hostedai.allocate" : op == OP_INFERENCE
                                                                  ? "hostedai.inference"
                                                                  : "hostedai.release");
        int64_t wait = gt_retry_backoff_ms(&call->env->cfg->retry, call->retry,
                                           resp->retry_after_ms, hai_rand());
        if (op != OP_RELEASE && call->deadline != INT64_MAX &&
            gt_clock_mono_ms() + wait >= call->deadline) {
            expire(call);
            goto out;
        }
        gt_log(GT_LOG_DEBUG, &ctx, "%s failed (%s), retry %d in %" PRId64 " ms", op_names[op],
               err, call->retry, wait);
        arm(call, wait);
        goto out;
    }
    op_end(call);
    if (op == OP_RELEASE) {
        call->released_at = gt_clock_mono_ms();
        gt_wstats_released(call->pool->name);
        gt_log(GT_LOG_ERROR, &ctx, "release of %s failed after %d attempts (%s); left to the "
               "lease reaper", call->allocation_id, call->retry + 1, err);
        emit_allocation(call, "allocation.release_failed", err);
        finish(call);
        goto out;
    }
    if (call->aborted) {
        set_failure(call, GT_TASK_FAILED, "aborted", "%sworker shutting down", NULL);
    } else {
        char detail[200];
        snprintf(detail, sizeof(detail), "%s failed after %d attempt%s: %s", op_names[op],
                 call->retry + 1, call->retry ? "s" : "", err);
        set_failure(call, GT_TASK_FAILED, fail_codes[f], "%s", detail);
    }
    go_release(call);
out:
    call_unref(call);
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
    if (call->cb) {
        gt_task_outcome_t out = {0};
        out.status = call->status;
        out.error_code = call->code;
        out.error_message = call->code ? call->message : NULL;
        out.output = call->status == GT_TASK_SUCCEEDED ? call->output : NULL;
        out.pool = call->pool->name;
        out.allocation_id = call->allocation_id;
        out.attempts = call->attempts;
        out.prompt_tokens = call->prompt_tokens;
        out.completion_tokens = call->completion_tokens;
        out.allocate_ms = call->op_ms[OP_ALLOCATE];
        out.inference_ms = call->op_ms[OP_INFERENCE];
        out.release_ms = call->op_ms[OP_RELEASE];
        if (call->allocated_at && call->released_at)
            out.allocation_seconds = (double)(call->released_at - call->allocated_at) / 1000.0;
        out.request_bytes = call->request_bytes;
        out.response_bytes = call->response_bytes;
        call->cb(call, &out, call->cb_arg);
    }
    call_unref(call); /* the owner's reference */
}

gt_hai_call_t *gt_hai_start(const gt_hai_env_t *env, const gt_task_spec_t *spec,
                            gt_hai_done_cb cb, void *arg, const char **code)
{
    gt_hai_call_t *call = NULL;
    const gt_pool_t *pool = gt_config_pool(env->cfg, spec->model->pool);
    char line[1024];

    *code = "internal";
    if (!pool) {
        *code = "unknown_pool";
        return NULL;
    }
    call = calloc(1, sizeof(*call));
    if (!call)
        goto fail;
    call->env = env;
    call->pool = pool;
    call->spec = spec;
    call->cb = cb;
    call->cb_arg = arg;
    call->deadline = spec->deadline_mono_ms;
    call->status = GT_TASK_FAILED;
    for (int i = 0; i < OP_COUNT; i++)
        call->op_ms[i] = -1;
    call->task_id = strdup(spec->task_id ? spec->task_id : "");
    call->request_id = strdup(spec->request_id ? spec->request_id : "");
    call->tenant_id = strdup(spec->tenant_id ? spec->tenant_id : "");
    call->attempts = json_array();
    if (!call->task_id || !call->request_id || !call->tenant_id || !call->attempts)
        goto fail;
    int n = 0;
    snprintf(line, sizeof(line), "Authorization: Bearer %s", pool->api_key ? pool->api_key : "");
    call->headers[n++] = strdup(line);
    call->headers[n++] = strdup("Content-Type: application/json");
    call->headers[n++] = strdup("Accept: application/json");
    if (spec->traceparent && *spec->traceparent) {
        snprintf(call->traceparent, sizeof(call->traceparent), "%s", spec->traceparent);
        snprintf(line, sizeof(line), "traceparent: %s", spec->traceparent);
        call->headers[n++] = strdup(line);
    }
    memset(line, 0, sizeof(line));
    for (int i = 0; i < n; i++)
        if (!call->headers[i])
            goto fail;
    uv_timer_init(env->loop, &call->timer);
    call->timer.data = call;
    call->refs = 2; /* owner + timer */
    call->op = OP_ALLOCATE;
    call->op_start[OP_ALLOCATE] = gt_clock_mono_ms();
    op_span_start(call, OP_ALLOCATE);
    /* The first attempt goes out from the loop, so cb never runs inside this call. */
    arm(call, 0);
    return call;
fail:
    memset(line, 0, sizeof(line));
    if (call)
        call_free(call);
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
        uv_timer_stop(&call->timer);
        call->waiting = 0;
        op_end(call);
        set_failure(call, GT_TASK_FAILED, "aborted", "%sworker shutting down", NULL);
        go_release(call);
        return;
    }
    if (call->in_flight && call->op == OP_INFERENCE) {
        /* Abandon the inference (its answer is ignored) and give the GPU back now. */
        call->seq++;
        call->in_flight = 0;
        record_attempt(call, OP_INFERENCE, 0, gt_clock_mono_ms() - call->op_start[OP_INFERENCE],
                       "aborted");
        op_end(call);
        set_failure(call, GT_TASK_FAILED, "aborted", "%sworker shutting down", NULL);
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
    close_timer(call);
    call_unref(call);
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
    json_array_foreach(messages, i, m) {
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
