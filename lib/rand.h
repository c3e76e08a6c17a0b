/* rand.h - the one small PRNG of Gantry (splitmix64): backoff jitter and
 * spreading, seeded streams for routing and the mocks, where only independence
 * or repeatability matters, never unpredictability; and gt_rand_secure, the one
 * way to OpenSSL's CSPRNG (ids that must not be guessed). */
#ifndef GT_RAND_H
#define GT_RAND_H

#include <stddef.h>
#include <stdint.h>

/* A uniform double in [0, 1). The process-wide state is seeded on first use
 * from the monotonic clock, the pid and its own address. Never fails. Not for
 * secrets (use OpenSSL's RAND_bytes) and not thread-safe: call it from the loop
 * thread only. */
double gt_rand_unit(void);

/* The next 64 bits of the stream whose state is *state (any value, 0 too):
 * the same seed gives the same sequence. Never fails; one state per thread. */
uint64_t gt_rand_next(uint64_t *state);

/* A uniform double in [0, 1) from the stream *state (see gt_rand_next). */
double gt_rand_unit_r(uint64_t *state);

/* A seed derived from n bytes (FNV-1a): the same bytes give the same stream. */
uint64_t gt_rand_seed_of(const void *p, size_t n);

/* n bytes from OpenSSL's CSPRNG (RAND_bytes), drawn from a per-thread pool
 * refilled 4 KiB at a time: a RAND_bytes call costs a lock, a getpid() and a
 * DRBG round, and a task asks for ids several times. Bytes are handed out once.
 * Not for a process that forks without exec after using it (parent and child
 * would share the pool). Returns 0, or -1 when OpenSSL has no randomness
 * (out untouched). */
int gt_rand_secure(void *out, size_t n);

#endif
