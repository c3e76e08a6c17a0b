/* mockcli.c - command-line pieces of the mock servers (see mockcli.h). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "mockcli.h"

void mc_die_usage(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see --help)\n");
    exit(2);
}

void mc_die_bad_option(const char *prog, const struct option *longs, char **argv)
{
    if (optopt)
        mc_die_usage(prog, "option --%s needs a value", longs[optopt - 1].name);
    mc_die_usage(prog, "unknown option '%s'", argv[optind - 1]);
}

void mc_check_operands(const char *prog, int argc, char **argv, int have_port)
{
    if (optind < argc)
        mc_die_usage(prog, "unexpected argument '%s'", argv[optind]);
    if (!have_port)
        mc_die_usage(prog, "--port is required");
}

int mc_parse_range(const char *s, int *lo, int *hi)
{
    char *end;
    errno = 0;
    long a = strtol(s, &end, 10), b = a;
    if (end == s || errno)
        return -1;
    if (*end == '-') {
        const char *t = end + 1;
        b = strtol(t, &end, 10);
        if (end == t || errno)
            return -1;
    }
    if (*end || a < 0 || b < a || b > 3600 * 1000)
        return -1;
    *lo = (int)a;
    *hi = (int)b;
    return 0;
}

int mc_parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return (end == s || *end != '\0' || errno || !isfinite(*out)) ? -1 : 0;
}

int mc_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (*s == '-')
        return -1;
    errno = 0;
    *out = strtoull(s, &end, 10);
    return (end == s || *end != '\0' || errno) ? -1 : 0;
}

void mc_block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int mc_wait_signal(const sigset_t *set)
{
    int sig = 0;
    while (sigwait(set, &sig) != 0)
        ;
    return sig;
}
