/* mockcli.h - the command-line pieces every mock server shares: a usage error
 * that exits 2, number and range arguments, and running until a signal. */
#ifndef GT_MOCKCLI_H
#define GT_MOCKCLI_H

#include <getopt.h>
#include <signal.h>
#include <stdint.h>

/* Prints "PROG: <message> (see --help)" on stderr and exits with status 2. */
void mc_die_usage(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* The default case of a getopt_long loop (opterr 0, each option's val its
 * index in longs plus one): "option --X needs a value" or "unknown option". */
void mc_die_bad_option(const char *prog, const struct option *longs, char **argv)
    __attribute__((noreturn));

/* After the getopt_long loop: exits 2 on an operand left or no --port. */
void mc_check_operands(const char *prog, int argc, char **argv, int have_port);

/* "A" or "A-B" milliseconds, 0 <= A <= B <= one hour. Returns 0 or -1. */
int mc_parse_range(const char *s, int *lo, int *hi);
/* A finite number, the whole string. Returns 0 or -1. */
int mc_parse_double(const char *s, double *out);
/* An unsigned decimal integer, the whole string (no sign). Returns 0 or -1. */
int mc_parse_u64(const char *s, uint64_t *out);

/* Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it
 * starts after) and ignores SIGPIPE; call before starting any thread. */
void mc_block_signals(sigset_t *set);
/* Waits for one of the signals of set; returns its number. */
int mc_wait_signal(const sigset_t *set);

#endif
