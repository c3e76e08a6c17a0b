/* harness.c - helpers for CUnit tests: runner, child processes, throwaway
 * databases and polling with deadlines. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "clock.h"
#include "harness.h"

static void kill_leftovers(void);

/* The failed assertions, printed again when the test exits: a test's main
 * prints its logs after th_run, and CI shows only the end of the output. */
static char recap[4096];

static void print_recap(void)
{
    if (recap[0])
        fprintf(stderr, "\nFailed assertions:\n%s", recap);
}

static void keep_recap(void)
{
    size_t used = 0;
    for (CU_pFailureRecord f = CU_get_failure_list(); f && used < sizeof(recap) - 1; f = f->pNext) {
        int n = snprintf(recap + used, sizeof(recap) - used, "  %s: %s:%u: %s\n",
                         f->pTest && f->pTest->pName ? f->pTest->pName : "?",
                         f->strFileName ? f->strFileName : "?", f->uiLineNumber,
                         f->strCondition ? f->strCondition : "?");
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (recap[0])
        atexit(print_recap);
}

int th_run(const char *suite, const th_test_t *tests)
{
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite(suite, NULL, NULL);
    for (const th_test_t *t = tests; s && t->name; t++)
        CU_add_test(s, t->name, t->fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    keep_recap();
    CU_cleanup_registry();
    kill_leftovers();
    return (failures > 0 || run == 0) ? 1 : 0;
}

static const char *path_in(const char *envname, const char *fallback, const char *rel)
{
    static char bufs[8][4096];
    static int next;
    char *b = bufs[next++ & 7];
    const char *root = getenv(envname);
    snprintf(b, sizeof(bufs[0]), "%s/%s", root ? root : fallback, rel);
    return b;
}

const char *th_bin(const char *rel)
{
    return path_in("GANTRY_BUILD_DIR", ".", rel);
}
const char *th_src(const char *rel)
{
    return path_in("GANTRY_SOURCE_DIR", "..", rel);
}

/* Every child started, so that a test stopped by a fatal assertion leaves no
 * process running behind it (th_run kills what is still alive). */
static pid_t started[256];
static int n_started;

static void kill_leftovers(void)
{
    for (int i = 0; i < n_started; i++) {
        int st;
        if (waitpid(started[i], &st, WNOHANG) == 0) {
            kill(started[i], SIGKILL);
            waitpid(started[i], &st, 0);
        }
    }
    n_started = 0;
}

int th_proc_start(th_proc_t *p, const char *const argv[], const char *stderr_path)
{
    int fds[2];
    memset(p, 0, sizeof(*p));
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (stderr_path) {
            int fd = open(stderr_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, STDERR_FILENO);
                close(fd);
            }
        }
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    if (n_started < (int)(sizeof(started) / sizeof(started[0])))
        started[n_started++] = pid;
    p->pid = pid;
    p->out_fd = fds[0];
    p->out = fdopen(fds[0], "r");
    return p->out ? 0 : -1;
}

int64_t th_now_ms(void)
{
    return gt_clock_mono_ms();
}

int th_proc_wait_line(th_proc_t *p, const char *prefix, char *out, size_t len, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    char line[4096];
    size_t used = 0;
    /* Read byte by byte with poll so the deadline holds and nothing past the
     * line is consumed from the pipe. */
    while (th_now_ms() < deadline) {
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)(deadline - th_now_ms()));
        if (r <= 0)
            continue;
        char ch;
        ssize_t n = read(p->out_fd, &ch, 1);
        if (n <= 0)
            return -1;
        if (ch != '\n') {
            if (used + 1 < sizeof(line))
                line[used++] = ch;
            continue;
        }
        line[used] = 0;
        used = 0;
        size_t pl = strlen(prefix);
        if (strncmp(line, prefix, pl) == 0) {
            snprintf(out, len, "%s", line + pl);
            return 0;
        }
    }
    return -1;
}

size_t th_collect(char *ptr, size_t size, size_t n, void *arg)
{
    char **buf = arg;
    size_t old = *buf ? strlen(*buf) : 0, add = size * n;
    char *grown = realloc(*buf, old + add + 1);
    if (!grown)
        return 0;
    memcpy(grown + old, ptr, add);
    grown[old + add] = '\0';
    *buf = grown;
    return add;
}

int th_mock_hostedai_start(th_proc_t *p, const char *key, const char *const *extra, char *base,
                           size_t len)
{
    const char *argv[32] = {th_bin("tools/gantry-mock-hostedai"), "--port", "0", "--api-key", key};
    char addr[64];
    int n = 5;
    for (; extra && *extra && n < 30; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    if (th_proc_start(p, argv, NULL) != 0)
        return -1;
    if (th_proc_wait_line(p, "listening=", addr, sizeof(addr), 10000) != 0) {
        th_proc_stop(p, SIGKILL, 1000);
        return -1;
    }
    snprintf(base, len, "http://%s", addr);
    return 0;
}

int th_proc_stop(th_proc_t *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    int rc = 0;
    int64_t deadline = th_now_ms() + timeout_ms;
    for (int signalled = 0; !p->exited;) {
        pid_t r = waitpid(p->pid, &p->status, WNOHANG);
        if (r == p->pid ||
            r < 0) { /* r < 0: th_run's cleanup reaped it; never signal a reused pid */
            if (r < 0)
                p->status = -1;
            p->exited = 1;
        } else if (!signalled) {
            kill(p->pid, sig);
            signalled = 1;
        } else if (th_now_ms() >= deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &p->status, 0);
            p->exited = 1;
            rc = -1;
        } else {
            struct timespec ts = {0, 5 * 1000000};
            nanosleep(&ts, NULL); /* reaping a child has no fd to poll */
        }
    }
    if (p->out)
        fclose(p->out);
    p->out = NULL;
    return rc ? rc : p->status;
}

int th_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

int th_pg_create_db(char *conninfo, size_t len)
{
    const char *host = getenv("GANTRY_TEST_PGHOST"), *port = getenv("GANTRY_TEST_PGPORT");
    if (!host || !port) {
        fprintf(stderr, "GANTRY_TEST_PGHOST/GANTRY_TEST_PGPORT are not set: start a test server "
                        "with `eval \"$(tests/pg.sh start DIR)\"` or run tests/run.sh\n");
        return -1;
    }
    char admin[512], name[64];
    snprintf(admin, sizeof(admin), "host=%s port=%s user=gantry dbname=postgres", host, port);
    snprintf(name, sizeof(name), "t_%d_%lld", (int)getpid(), (long long)th_now_ms());
    PGconn *c = PQconnectdb(admin);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect to test server: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "create database: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    snprintf(conninfo, len, "host=%s port=%s user=gantry dbname=%s", host, port, name);
    return ok ? 0 : -1;
}

int th_poll(int (*cond)(void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return 1;
        if (th_now_ms() >= deadline)
            return 0;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}

static char tmp_paths[64][256];
static int n_tmp;

static void tmp_cleanup(void)
{
    for (int i = 0; i < n_tmp; i++)
        unlink(tmp_paths[i]);
}

const char *th_tmpfile(const char *suffix, const char *text)
{
    if (n_tmp >= 64)
        return NULL;
    char *path = tmp_paths[n_tmp];
    snprintf(path, sizeof(tmp_paths[0]), "/tmp/gantry-test-XXXXXX%s", suffix ? suffix : "");
    int fd = mkstemps(path, suffix ? (int)strlen(suffix) : 0);
    if (fd < 0)
        return NULL;
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) {
        close(fd);
        return NULL;
    }
    close(fd);
    if (n_tmp++ == 0)
        atexit(tmp_cleanup);
    return path;
}

typedef struct th_loop_ctx {
    int (*cond)(void *);
    void *arg;
    int met;
    int64_t deadline;
} th_loop_ctx_t;

static void th_loop_tick(uv_timer_t *t)
{
    th_loop_ctx_t *r = t->data;
    r->met = r->cond ? r->cond(r->arg) : 0;
    if (r->met || th_now_ms() >= r->deadline)
        uv_stop(t->loop);
}

int th_loop_until(uv_loop_t *loop, int (*cond)(void *), void *arg, int timeout_ms)
{
    th_loop_ctx_t r = {cond, arg, 0, th_now_ms() + timeout_ms};
    uv_timer_t t;
    uv_timer_init(loop, &t);
    t.data = &r;
    uv_timer_start(&t, th_loop_tick, 0, 5);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_timer_stop(&t);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return r.met || (cond && cond(arg));
}
