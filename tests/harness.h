/* harness.h - helpers for CUnit tests: a runner, child processes, throwaway
 * databases and polling with deadlines (tests never sleep for a condition). */
#ifndef GT_HARNESS_H
#define GT_HARNESS_H

#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

typedef struct uv_loop_s uv_loop_t; /* <uv.h> not pulled in: it declares stat() */

/* Assertions that print both operands and end the test (as libuv's ASSERT_EQ):
 * one failure never cascades into many. th_run kills the children it left. */
#define TH_EQ_INT(a, b)                                                                            \
    do {                                                                                           \
        long long th_a_ = (long long)(a), th_b_ = (long long)(b);                                  \
        if (th_a_ != th_b_)                                                                        \
            fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a,    \
                    #b, th_a_, th_b_);                                                             \
        CU_ASSERT_FATAL(th_a_ == th_b_);                                                           \
    } while (0)
#define TH_EQ_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *th_a_ = (a), *th_b_ = (b);                                                     \
        int th_ok_ = th_a_ && th_b_ && strcmp(th_a_, th_b_) == 0;                                  \
        if (!th_ok_)                                                                               \
            fprintf(stderr, "  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__,    \
                    #a, #b, th_a_ ? th_a_ : "(null)", th_b_ ? th_b_ : "(null)");                   \
        CU_ASSERT_FATAL(th_ok_);                                                                   \
    } while (0)

/* CUnit's plain assertions record a failure and carry on; here every one of
 * them ends its test function at the first failure, like CU_ASSERT_*_FATAL
 * (a failed check leaves state the next checks would misread). Prefer
 * TH_EQ_INT/TH_EQ_STR for values: they also print both operands. */
#undef CU_ASSERT
#define CU_ASSERT(value) CU_ASSERT_FATAL(value)
#undef CU_ASSERT_TRUE
#define CU_ASSERT_TRUE(value) CU_ASSERT_TRUE_FATAL(value)
#undef CU_ASSERT_FALSE
#define CU_ASSERT_FALSE(value) CU_ASSERT_FALSE_FATAL(value)
#undef CU_ASSERT_EQUAL
#define CU_ASSERT_EQUAL(actual, expected) CU_ASSERT_EQUAL_FATAL(actual, expected)
#undef CU_ASSERT_NOT_EQUAL
#define CU_ASSERT_NOT_EQUAL(actual, expected) CU_ASSERT_NOT_EQUAL_FATAL(actual, expected)
#undef CU_ASSERT_PTR_EQUAL
#define CU_ASSERT_PTR_EQUAL(actual, expected) CU_ASSERT_PTR_EQUAL_FATAL(actual, expected)
#undef CU_ASSERT_PTR_NULL
#define CU_ASSERT_PTR_NULL(value) CU_ASSERT_PTR_NULL_FATAL(value)
#undef CU_ASSERT_PTR_NOT_NULL
#define CU_ASSERT_PTR_NOT_NULL(value) CU_ASSERT_PTR_NOT_NULL_FATAL(value)
#undef CU_ASSERT_STRING_EQUAL
#define CU_ASSERT_STRING_EQUAL(actual, expected) CU_ASSERT_STRING_EQUAL_FATAL(actual, expected)
#undef CU_ASSERT_DOUBLE_EQUAL
#define CU_ASSERT_DOUBLE_EQUAL(actual, expected, granularity)                                      \
    CU_ASSERT_DOUBLE_EQUAL_FATAL(actual, expected, granularity)

#ifdef __clang_analyzer__
/* The static analyzer cannot see that a failed fatal assertion longjmps out
 * of the test function: tell it so, or it follows the failed path on. */
#include <stdlib.h>
#define TH_ANALYZER_STOP(value)                                                                    \
    do {                                                                                           \
        if (!(value))                                                                              \
            abort();                                                                               \
    } while (0)
#undef CU_ASSERT_FATAL
#define CU_ASSERT_FATAL(value) TH_ANALYZER_STOP(value)
#undef CU_ASSERT_PTR_NOT_NULL_FATAL
#define CU_ASSERT_PTR_NOT_NULL_FATAL(value) TH_ANALYZER_STOP((value) != NULL)
#undef CU_ASSERT_PTR_NULL_FATAL
#define CU_ASSERT_PTR_NULL_FATAL(value) TH_ANALYZER_STOP((value) == NULL)
#endif

typedef struct th_test {
    const char *name;
    void (*fn)(void);
} th_test_t;

/* Runs the tests as one CUnit suite; returns the process exit code
 * (non-zero when any assertion failed). tests ends with {NULL, NULL}. */
int th_run(const char *suite, const th_test_t *tests);

/* Runs loop until cond(arg) holds (checked every 5 ms) or timeout_ms passes;
 * returns whether cond held. With cond NULL, runs for timeout_ms and returns 0. */
int th_loop_until(uv_loop_t *loop, int (*cond)(void *), void *arg, int timeout_ms);

/* Path of a built binary: $GANTRY_BUILD_DIR/rel (e.g. "tools/gantry-kafka-dev").
 * Returns a static buffer rotated over 8 calls. */
const char *th_bin(const char *rel);
/* Path in the source tree: $GANTRY_SOURCE_DIR/rel. Same buffer rules. */
const char *th_src(const char *rel);

/* A child process with its stdout on a pipe (stderr inherited, or to a file). */
typedef struct th_proc {
    pid_t pid;
    int out_fd;
    FILE *out;
    int exited;
    int status;
} th_proc_t;

/* Starts argv[0] with argv; stderr goes to stderr_path when non-NULL.
 * Returns 0 or -1. */
int th_proc_start(th_proc_t *p, const char *const argv[], const char *stderr_path);
/* Reads stdout lines until one starts with prefix; copies the rest of that
 * line (after the prefix, without newline) into out. Returns 0, or -1 on EOF
 * or when timeout_ms passes. */
int th_proc_wait_line(th_proc_t *p, const char *prefix, char *out, size_t len, int timeout_ms);
/* Sends sig and waits up to timeout_ms; returns the exit status (as from
 * waitpid) or -1 on timeout (the process is then SIGKILLed). */
int th_proc_stop(th_proc_t *p, int sig, int timeout_ms);

/* Starts gantry-mock-hostedai on a free port with the bearer key and extra
 * flags (NULL-terminated, at most 24), and waits for it to listen; writes
 * "http://ADDR:PORT" into base. Returns 0, or -1 (the process is then gone). */
int th_mock_hostedai_start(th_proc_t *p, const char *key, const char *const *extra, char *base,
                           size_t len);

/* A libcurl write callback (CURLOPT_WRITEFUNCTION) appending the n items of
 * size bytes to the malloc'd NUL-terminated string at *(char **)arg (NULL
 * at first; the caller frees it). Returns the bytes taken, 0 when out of
 * memory (curl then fails the transfer). */
size_t th_collect(char *ptr, size_t size, size_t n, void *arg);

/* A free TCP port on 127.0.0.1 (bound and released). */
int th_free_port(void);

/* Creates a fresh database on the test server ($GANTRY_TEST_PGHOST,
 * $GANTRY_TEST_PGPORT, user gantry) and writes its conninfo. Returns 0, or -1
 * with a message on stderr when no test server is configured. */
int th_pg_create_db(char *conninfo, size_t len);

/* Milliseconds on a monotonic clock. */
int64_t th_now_ms(void);

/* Polls cond(arg) every few milliseconds until it returns non-zero or
 * timeout_ms passes. Returns 1 if it became true, 0 on timeout. */
int th_poll(int (*cond)(void *arg), void *arg, int timeout_ms);

/* Writes text to a new temporary file and returns its path (static buffer
 * rotated over 8 calls); the file is removed at exit. */
const char *th_tmpfile(const char *suffix, const char *text);

#endif
