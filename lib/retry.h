/* retry.h - retry policy: which outcomes are retryable and how long to back off. */
#ifndef GT_RETRY_H
#define GT_RETRY_H

#include <stdint.h>

typedef struct gt_retry_policy {
    int max_retries; /* retries after the first attempt (default 3) */
    int64_t base_ms; /* first backoff (default 100): 100, 200, 400, 800 ... */
    int64_t max_ms;  /* cap on one backoff, Retry-After included (default 30000) */
    double jitter;   /* fraction of the backoff randomised, 0..1 (default 0.2) */
} gt_retry_policy_t;

void gt_retry_policy_default(gt_retry_policy_t *p);

/* True for outcomes worth retrying: transport errors and timeouts (http_status 0),
 * 408, 429 and 5xx. */
int gt_retry_is_retryable(long http_status);

/* Backoff before retry number `retry` (1-based): base * 2^(retry-1), with
 * +-jitter/2 applied using rnd in [0,1), capped at max_ms. A Retry-After of
 * retry_after_ms >= 0 raises the delay to at least that value (still capped).
 * This function can't fail. */
int64_t gt_retry_backoff_ms(const gt_retry_policy_t *p, int retry, int64_t retry_after_ms,
                            double rnd);

/* Parses a Retry-After header value (delta-seconds or an HTTP date relative to
 * now_wall_ms). Returns milliseconds >= 0, or -1 if absent/malformed. */
int64_t gt_retry_after_parse(const char *value, int64_t now_wall_ms);

#endif
