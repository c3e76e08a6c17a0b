/* engine.c - the call engine shared by the runtimes (see engine.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine.h"
#include "rand.h"
#include "wstats.h"

static void on_timer_close(uv_handle_t *h)
{
    gt_eng_call_unref(h->data);
}

void *gt_eng_call_new(size_t size, uv_loop_t *loop, const gt_task_spec_t *spec,
                      void (*free_fn)(gt_eng_call_t *c))
{
    gt_eng_call_t *c = calloc(1, size);
    if (!c)
        return NULL;
    c->free_fn = free_fn;
    c->spec = spec;
    c->deadline = spec->deadline_mono_ms;
    c->status = GT_TASK_FAILED;
    c->task_id = strdup(spec->task_id ? spec->task_id : "");
    c->request_id = strdup(spec->request_id ? spec->request_id : "");
    c->tenant_id = strdup(spec->tenant_id ? spec->tenant_id : "");
    c->attempts = json_array();
    if (spec->traceparent && *spec->traceparent)
        snprintf(c->traceparent, sizeof(c->traceparent), "%s", spec->traceparent);
    if (!c->task_id || !c->request_id || !c->tenant_id || !c->attempts) {
        gt_eng_call_fini(c);
        free(c);
        return NULL;
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->refs = 2; /* owner + timer */
    return c;
}

void gt_eng_call_fini(gt_eng_call_t *c)
{
    free(c->task_id);
    free(c->request_id);
    free(c->tenant_id);
    json_decref(c->output);
    json_decref(c->attempts);
    c->task_id = c->request_id = c->tenant_id = NULL;
    c->output = c->attempts = NULL;
}

void gt_eng_call_unref(gt_eng_call_t *c)
{
    if (--c->refs == 0) {
        gt_eng_call_fini(c);
        c->free_fn(c);
    }
}

void gt_eng_call_close_timer(gt_eng_call_t *c)
{
    if (c->timer_closed)
        return;
    c->timer_closed = 1;
    uv_close((uv_handle_t *)&c->timer, on_timer_close);
}

gt_log_ctx_t gt_eng_call_ctx(const gt_eng_call_t *c)
{
    gt_log_ctx_t ctx = {c->request_id, c->task_id, c->tenant_id, c->traceparent};
    return ctx;
}

void gt_eng_fail(gt_eng_call_t *c, gt_task_status_t status, const char *code, const char *fmt, ...)
{
    if (c->code)
        return;
    c->status = status;
    c->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof(c->message), fmt, ap);
    va_end(ap);
    json_decref(c->output);
    c->output = NULL;
}

void gt_eng_attempt(gt_eng_call_t *c, const char *op, long status, int64_t ms, const char *provider,
                    const char *error)
{
    json_t *a = json_pack("{s:s, s:i, s:I}", "op", op, "status", (int)status, "ms",
                          (json_int_t)(ms < 0 ? 0 : ms));
    if (!a)
        return;
    if (provider)
        json_object_set_new(a, "provider", json_string(provider));
    json_object_set_new(a, "error", error ? json_string(error) : json_null());
    json_array_append_new(c->attempts, a);
}

const char *gt_eng_http_error(const gt_http_response_t *resp, char *buf, size_t len)
{
    if (resp->timed_out)
        snprintf(buf, len, "timeout");
    else if (resp->status == 0)
        snprintf(buf, len, "%s", resp->error ? resp->error : "transport error");
    else
        snprintf(buf, len, "HTTP %ld", resp->status);
    return buf;
}

int gt_eng_code_in(const char *code, const char *const *codes)
{
    for (size_t i = 0; code && codes[i]; i++)
        if (strcmp(code, codes[i]) == 0)
            return 1;
    return 0;
}

int64_t gt_eng_timeout(int64_t timeout_ms, int64_t deadline, int *by_deadline)
{
    int64_t left = deadline == INT64_MAX ? INT64_MAX : deadline - gt_clock_mono_ms();
    *by_deadline = 0;
    if (left < timeout_ms) {
        *by_deadline = 1;
        return left > 1 ? left : 1;
    }
    return timeout_ms;
}

gt_eng_next_t gt_eng_next(const gt_retry_policy_t *policy, int *retry, int max,
                          int64_t retry_after_ms, int64_t deadline, const char *operation,
                          int64_t *wait_ms)
{
    if (*retry >= max)
        return GT_ENG_GIVE_UP;
    (*retry)++;
    gt_wstats_retry(operation);
    *wait_ms = gt_retry_backoff_ms(policy, *retry, retry_after_ms, gt_rand_unit());
    if (deadline != INT64_MAX && gt_clock_mono_ms() + *wait_ms >= deadline)
        return GT_ENG_EXPIRE;
    return GT_ENG_RETRY;
}

static void breaker_changed(gt_eng_breaker_t *eb, int changed)
{
    static const char *const types[] = {"breaker.closed", "breaker.opened", "breaker.half_open"};
    if (changed < 0)
        return;
    const char *state = gt_breaker_state_name((gt_breaker_state_t)changed);
    const char *what = eb->pool ? "pool" : "provider";
    const char *who = eb->pool ? eb->pool : eb->name;
    gt_wstats_breaker(eb->name, changed != GT_BREAKER_CLOSED);
    if (changed == GT_BREAKER_OPEN)
        gt_warn("%s %s: circuit breaker open", what, who);
    else
        gt_info("%s %s: circuit breaker %s", what, who, state);
    if (!eb->emit)
        return;
    json_t *data = json_pack("{s:s, s:s, s:s, s:i, s:I}", "provider", eb->name, "endpoint",
                             eb->endpoint ? eb->endpoint : "", "state", state, "failures",
                             eb->b.threshold, "recovery_ms", (json_int_t)eb->b.recovery_ms);
    if (data && eb->pool)
        json_object_set_new(data, "pool", json_string(eb->pool));
    eb->emit(types[changed], data, eb->emit_arg);
}

void gt_eng_breaker_init(gt_eng_breaker_t *eb, const char *name, const char *endpoint,
                         const char *pool, int failures, int64_t recovery_ms, gt_event_fn emit,
                         void *emit_arg)
{
    memset(eb, 0, sizeof(*eb));
    snprintf(eb->name, sizeof(eb->name), "%s", name);
    eb->endpoint = endpoint;
    eb->pool = pool;
    eb->emit = emit;
    eb->emit_arg = emit_arg;
    gt_breaker_init(&eb->b, failures, recovery_ms);
}

int gt_eng_breaker_allow(gt_eng_breaker_t *eb, int64_t *out)
{
    int changed = -1;
    int64_t now = gt_clock_mono_ms();
    int ok = gt_breaker_allow(&eb->b, now, &changed);
    breaker_changed(eb, changed);
    if (ok)
        *out = now > 0 ? now : 1;
    return ok;
}

void gt_eng_breaker_verdict(gt_eng_breaker_t *eb, int64_t *out, int ok)
{
    int changed = -1;
    if (ok < 0) {
        if (*out)
            gt_breaker_cancel(&eb->b);
    } else if (ok) {
        gt_breaker_success(&eb->b, gt_clock_mono_ms(), &changed);
    } else {
        int64_t now = gt_clock_mono_ms();
        gt_breaker_failure(&eb->b, now, *out ? *out : now, &changed);
    }
    *out = 0;
    breaker_changed(eb, changed);
}

int gt_eng_breaker_unavailable(const gt_eng_breaker_t *eb)
{
    gt_breaker_state_t s = gt_breaker_peek(&eb->b, gt_clock_mono_ms());
    return s == GT_BREAKER_OPEN || (s == GT_BREAKER_HALF_OPEN && eb->b.trial_out);
}
