/* clock.h - wall and monotonic time helpers and RFC 3339 timestamps. */
#ifndef GT_CLOCK_H
#define GT_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds since the Unix epoch (wall clock). */
int64_t gt_clock_wall_ms(void);
/* Monotonic milliseconds, for durations and deadlines inside one process. */
int64_t gt_clock_mono_ms(void);
/* Monotonic nanoseconds, for timing short operations (benchmarks). */
int64_t gt_clock_mono_ns(void);
/* Writes "2026-11-22T10:00:00.123Z" into buf (at least 32 bytes). Returns buf. */
char *gt_clock_fmt(int64_t wall_ms, char *buf, size_t len);
/* Parses an RFC 3339 date-time (calendar-checked; a leap second only at
 * 23:59:60 UTC, counted as the next second) into epoch ms. Returns 0, or -1
 * if malformed. */
int gt_clock_parse(const char *s, int64_t *wall_ms);

#endif
