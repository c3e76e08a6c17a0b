/* engine.h - the call engine every runtime runs on: a call's life (references,
 * timer, log context, first failure wins), its attempts, its retries with
 * backoff and Retry-After under the task deadline, and named circuit breakers.
 * HostedAI (allocate -> infer -> release) and the hosted providers (one
 * request) are state machines built on these pieces; none has its own. */
#ifndef GT_ENGINE_H
#define GT_ENGINE_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "breaker.h"
#include "http.h"
#include "log.h"
#include "retry.h"
#include "runtime.h"
#include "trace.h"

/* ---- a call -------------------------------------------------------------------
 * The first member of each runtime's call. References: one for the owner until
 * the call finishes or is cancelled, one for the timer until it is closed, one
 * per request in flight; free_fn runs when the last goes. */
typedef struct gt_eng_call {
    int refs;
    void (*free_fn)(struct gt_eng_call *c); /* frees the runtime's call, after gt_eng_call_fini */
    uv_timer_t timer;
    int timer_closed;
    const gt_task_spec_t *spec;               /* borrowed until the callback */
    char *task_id, *request_id, *tenant_id;   /* "" when the spec has none */
    char traceparent[GT_TRACEPARENT_LEN + 1]; /* the task's ("" when none) */
    int64_t deadline;                         /* mono ms, INT64_MAX: none */
    json_t *attempts;                         /* [{op, status, ms, error[, provider]}] */
    json_t *output;                           /* the answer once succeeded */
    gt_task_status_t status;
    const char *code; /* the first failure's code, NULL: none */
    char message[256];
} gt_eng_call_t;

/* Allocates a runtime's call of size bytes (zeroed; gt_eng_call_t first),
 * keeps spec (borrowed until the callback), copies its ids and trace context,
 * creates the attempts array, initialises the timer (data: the call) and sets
 * refs to 2 (owner + timer). Returns NULL on out of memory. */
void *gt_eng_call_new(size_t size, uv_loop_t *loop, const gt_task_spec_t *spec,
                      void (*free_fn)(gt_eng_call_t *c));
/* Frees what gt_eng_call_new took but c itself (free_fn does that). */
void gt_eng_call_fini(gt_eng_call_t *c);
void gt_eng_call_unref(gt_eng_call_t *c);
/* Closes the timer once; its reference goes when libuv has closed it. */
void gt_eng_call_close_timer(gt_eng_call_t *c);
gt_log_ctx_t gt_eng_call_ctx(const gt_eng_call_t *c);

/* Records the failure that explains the task; later ones (a failed release
 * after a failed inference) do not override it. Drops any output. */
void gt_eng_fail(gt_eng_call_t *c, gt_task_status_t status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Appends an attempt {op, status, ms, error[, provider]} (provider omitted when NULL). */
void gt_eng_attempt(gt_eng_call_t *c, const char *op, long status, int64_t ms, const char *provider,
                    const char *error);

/* "timeout", the transport error, or "HTTP <status>", into buf (returned). */
const char *gt_eng_http_error(const gt_http_response_t *resp, char *buf, size_t len);

/* 1 when code is one of the NULL-terminated codes (a runtime's may_fall_back). */
int gt_eng_code_in(const char *code, const char *const *codes);

/* ---- deadlines and retries ------------------------------------------------------ */

/* The timeout for a request started now: timeout_ms, cut to what is left of
 * deadline (at least 1 ms); *by_deadline is 1 when it was cut. */
int64_t gt_eng_timeout(int64_t timeout_ms, int64_t deadline, int *by_deadline);

typedef enum { GT_ENG_RETRY, GT_ENG_GIVE_UP, GT_ENG_EXPIRE } gt_eng_next_t;

/* After a retryable failure: GT_ENG_GIVE_UP when *retry has reached max;
 * otherwise *retry is counted (and the retry metric of operation), *wait_ms is
 * the backoff of policy honouring retry_after_ms (-1: none), and the result is
 * GT_ENG_EXPIRE when that wait would pass deadline (INT64_MAX: none), else
 * GT_ENG_RETRY: arm the timer for *wait_ms. */
gt_eng_next_t gt_eng_next(const gt_retry_policy_t *policy, int *retry, int max,
                          int64_t retry_after_ms, int64_t deadline, const char *operation,
                          int64_t *wait_ms);

/* ---- circuit breakers ------------------------------------------------------------ */

/* The breaker of one endpoint: a hosted provider or a HostedAI pool. Its events
 * (breaker.opened / half_open / closed) and gauge carry name. */
typedef struct gt_eng_breaker {
    gt_breaker_t b;
    char name[300];       /* the provider's, or "hostedai:<pool>" */
    const char *endpoint; /* borrowed, for events */
    const char *pool;     /* borrowed, NULL for providers */
    gt_event_fn emit;     /* may be NULL */
    void *emit_arg;
} gt_eng_breaker_t;

/* Starts closed. name is copied; endpoint and pool are borrowed. */
void gt_eng_breaker_init(gt_eng_breaker_t *eb, const char *name, const char *endpoint,
                         const char *pool, int failures, int64_t recovery_ms, gt_event_fn emit,
                         void *emit_arg);
/* May a call go now? 1: yes, *out is set to when (mono ms, > 0: the call owes a
 * verdict); 0: refused. */
int gt_eng_breaker_allow(gt_eng_breaker_t *eb, int64_t *out);
/* The verdict of a call: ok 1 success, 0 failure (both counted even without
 * an allowance: a later phase of an allowed call), -1 nothing said about the
 * endpoint's health (a half-open trial held is given back). A failure of a
 * call allowed before the last counted failure does not count again
 * (gt_breaker_failure); one without an allowance counts as started now.
 * Clears *out. */
void gt_eng_breaker_verdict(gt_eng_breaker_t *eb, int64_t *out, int ok);
/* 1 when the breaker refuses calls now (open, or half-open with its trial out). */
int gt_eng_breaker_unavailable(const gt_eng_breaker_t *eb);

#endif
