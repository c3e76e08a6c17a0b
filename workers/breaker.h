/* breaker.h - circuit breaker for one provider endpoint: closed, open, half-open.
 *
 * Closed: calls go; `failures` consecutive failures open it. Open: calls are
 * refused until `recovery_ms` has passed, then it is half-open. Half-open:
 * exactly one trial call goes; its success closes the breaker, its failure
 * opens it again for another recovery period. Time is passed in (monotonic
 * ms) so tests need no clock. Not thread-safe: one loop owns a breaker. */
#ifndef GT_BREAKER_H
#define GT_BREAKER_H

#include <stdint.h>

typedef enum { GT_BREAKER_CLOSED, GT_BREAKER_OPEN, GT_BREAKER_HALF_OPEN } gt_breaker_state_t;

typedef struct gt_breaker {
    int threshold;       /* consecutive failures that open it (>= 1) */
    int64_t recovery_ms; /* open -> half-open */
    gt_breaker_state_t state;
    int failures;      /* consecutive, while closed */
    int64_t failed_at; /* when the last counted failure was reported */
    int64_t opened_at;
    int trial_out; /* half-open: the trial call is in flight */
} gt_breaker_t;

/* Starts closed. threshold < 1 is taken as 1. This function can't fail. */
void gt_breaker_init(gt_breaker_t *b, int threshold, int64_t recovery_ms);

/* May a call go now? Returns 1 and, in half-open, takes the single trial (the
 * caller must then report gt_breaker_success/failure or gt_breaker_cancel).
 * Returns 0 when open (or half-open with the trial out). *changed is set to
 * the new state when this call moved it (open -> half-open), else -1. */
int gt_breaker_allow(gt_breaker_t *b, int64_t now_ms, int *changed);

/* Reports the outcome of an allowed call; *changed as for gt_breaker_allow
 * (e.g. GT_BREAKER_OPEN when this failure opened it). A failure counts
 * towards the threshold only if its call started (started_ms) at or after
 * the last counted failure was reported: calls that were already in flight
 * when the provider was seen failing say nothing new. "Consecutive" is in
 * the order the provider was tried, so a burst of concurrent calls answered
 * by fast errors (while its successes take longer) counts once, and a
 * provider must fail that many times in a row, each after the previous
 * failure was known, to open. */
void gt_breaker_success(gt_breaker_t *b, int64_t now_ms, int *changed);
void gt_breaker_failure(gt_breaker_t *b, int64_t now_ms, int64_t started_ms, int *changed);

/* An allowed call ended without an outcome that says anything about the
 * provider (cancelled, shutdown): a half-open trial is given back. */
void gt_breaker_cancel(gt_breaker_t *b);

/* The state as the router sees it now (open turns half-open once due). */
gt_breaker_state_t gt_breaker_peek(const gt_breaker_t *b, int64_t now_ms);

/* "closed", "open", "half_open". */
const char *gt_breaker_state_name(gt_breaker_state_t s);

#endif
