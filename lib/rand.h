/* rand.h - the one small PRNG of Gantry: backoff jitter and spreading, where
 * only independence between processes matters, never unpredictability. */
#ifndef GT_RAND_H
#define GT_RAND_H

/* A uniform double in [0, 1). The process-wide xorshift64 state is seeded on
 * first use from the monotonic clock, the pid and its own address. Never fails.
 * Not for secrets (use OpenSSL's RAND_bytes) and not thread-safe: call it from
 * the loop thread only. */
double gt_rand_unit(void);

#endif
