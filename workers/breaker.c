/* breaker.c - circuit breaker state machine (see breaker.h). */
#include "breaker.h"

void gt_breaker_init(gt_breaker_t *b, int threshold, int64_t recovery_ms)
{
    b->threshold = threshold < 1 ? 1 : threshold;
    b->recovery_ms = recovery_ms < 0 ? 0 : recovery_ms;
    b->state = GT_BREAKER_CLOSED;
    b->failures = 0;
    b->opened_at = 0;
    b->trial_out = 0;
}

static void set_state(gt_breaker_t *b, gt_breaker_state_t s, int *changed)
{
    if (b->state != s && changed)
        *changed = (int)s;
    b->state = s;
}

int gt_breaker_allow(gt_breaker_t *b, int64_t now_ms, int *changed)
{
    if (changed)
        *changed = -1;
    if (b->state == GT_BREAKER_OPEN && now_ms - b->opened_at >= b->recovery_ms) {
        set_state(b, GT_BREAKER_HALF_OPEN, changed);
        b->trial_out = 0;
    }
    switch (b->state) {
    case GT_BREAKER_CLOSED: return 1;
    case GT_BREAKER_HALF_OPEN:
        if (b->trial_out)
            return 0;
        b->trial_out = 1;
        return 1;
    default: return 0;
    }
}

void gt_breaker_success(gt_breaker_t *b, int64_t now_ms, int *changed)
{
    (void)now_ms;
    if (changed)
        *changed = -1;
    b->failures = 0;
    if (b->state == GT_BREAKER_HALF_OPEN) {
        b->trial_out = 0;
        set_state(b, GT_BREAKER_CLOSED, changed);
    }
    /* A success reported while open (a call allowed before it opened) does
     * not close it: only the half-open trial decides. */
}

void gt_breaker_failure(gt_breaker_t *b, int64_t now_ms, int64_t started_ms, int *changed)
{
    if (changed)
        *changed = -1;
    if (b->state == GT_BREAKER_HALF_OPEN) {
        b->trial_out = 0;
        b->opened_at = now_ms;
        set_state(b, GT_BREAKER_OPEN, changed);
        return;
    }
    if (b->state == GT_BREAKER_OPEN)
        return;
    if (b->failures > 0 && started_ms < b->failed_at)
        return; /* in flight when the last failure was seen: the same news */
    b->failed_at = now_ms;
    if (++b->failures >= b->threshold) {
        b->failures = 0;
        b->opened_at = now_ms;
        set_state(b, GT_BREAKER_OPEN, changed);
    }
}

void gt_breaker_cancel(gt_breaker_t *b)
{
    if (b->state == GT_BREAKER_HALF_OPEN)
        b->trial_out = 0;
}

gt_breaker_state_t gt_breaker_peek(const gt_breaker_t *b, int64_t now_ms)
{
    if (b->state == GT_BREAKER_OPEN && now_ms - b->opened_at >= b->recovery_ms)
        return GT_BREAKER_HALF_OPEN;
    return b->state;
}

const char *gt_breaker_state_name(gt_breaker_state_t s)
{
    return s == GT_BREAKER_OPEN ? "open" : s == GT_BREAKER_HALF_OPEN ? "half_open" : "closed";
}
