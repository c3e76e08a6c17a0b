/* ledger.c - benchmark of the usage ledger's database path: N usage events
 * (default 1,000,000) over T tenants inserted in batches through the ledger's
 * own statement (gt_ledger_insert_sql: dedupe, costing, budgets) on the async
 * gt_pg connections (ledger.connections, default 2), as gantry-dispatcher does;
 * then the invoice run for the month those events fall in. Prints events/s and
 * the invoice run's time. --statement FILE runs a variant of the statement
 * (same 22 parameters) instead, to measure what a part of it costs;
 * --print-statement prints the ledger's (bench/ledger_instr.sh uses it).
 * Run with bench/ledger.sh (which starts PostgreSQL and migrates). */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "clock.h"
#include "dispatcher.h"
#include "ledger_rows.h"
#include "pg.h"

typedef struct bench {
    uv_loop_t *loop;
    gt_pg_t *pg[16]; /* batches go to the one with the fewest pending, as in the ledger */
    int npg;
    long events, sent, done, tenants;
    int batch, in_flight, max_in_flight;
    long inserted;
    int failed;
    int backend_pid; /* the connection's server process, for its CPU time */
    int64_t month_start_ms;
    const char *sql; /* the ledger's statement, or --statement's */
} bench_t;

static void send_more(bench_t *b);

static void free_all(bench_t *b)
{
    for (int i = 0; i < b->npg; i++)
        gt_pg_free(b->pg[i]);
    b->npg = 0;
}

static gt_pg_t *least_busy(const bench_t *b)
{
    gt_pg_t *best = b->pg[0];
    for (int i = 1; i < b->npg; i++)
        if (gt_pg_pending(b->pg[i]) < gt_pg_pending(best))
            best = b->pg[i];
    return best;
}

/* CPU seconds (user + system) of process pid from /proc, with those of its
 * children it has waited for when reaped is set; or -1. *ppid: its parent. */
static double pid_cpu(int pid, int *ppid, int reaped)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* fields after the command name */
    unsigned long ut = 0, st = 0;
    long cut = 0, cst = 0;
    int parent = 0;
    if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", &parent,
                     &ut, &st, &cut, &cst) != 5)
        return -1;
    if (ppid)
        *ppid = parent;
    return (double)(ut + st + (reaped ? (unsigned long)(cut + cst) : 0)) /
           (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of the whole PostgreSQL server that runs backend: its postmaster
 * with every child, live (backends, parallel workers, WAL writer) or ended, or -1. */
static double server_cpu(int backend)
{
    int postmaster = 0;
    if (pid_cpu(backend, &postmaster, 0) < 0)
        return -1;
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    double sum = pid_cpu(postmaster, NULL, 1);
    for (struct dirent *e; (e = readdir(d));) {
        int pid = atoi(e->d_name), parent = 0;
        double s = pid > 0 ? pid_cpu(pid, &parent, 0) : -1;
        if (s >= 0 && parent == postmaster)
            sum += s;
    }
    closedir(d);
    return sum;
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void on_pid(const PGresult *res, const char *err, void *arg)
{
    bench_t *b = arg;
    if (!err)
        b->backend_pid = atoi(PQgetvalue(res, 0, 0));
}

static void on_batch(const PGresult *res, const char *err, void *arg)
{
    bench_t *b = arg;
    b->in_flight--;
    if (err) {
        fprintf(stderr, "ledger-bench: batch failed: %s\n", err);
        b->failed = 1;
    } else {
        b->inserted += atol(PQgetvalue(res, 0, 0));
    }
    if (b->failed) {
        if (b->in_flight == 0)
            free_all(b);
        return;
    }
    send_more(b);
    if (b->in_flight == 0 && b->sent == b->events)
        free_all(b); /* ends the loop */
}

/* The contents of file path (NUL-terminated, malloc'd), or NULL. */
static char *read_file(const char *path)
{
    char *text = NULL;
    FILE *f = fopen(path, "rb");
    long len = -1;
    if (!f || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    text = malloc((size_t)len + 1);
    if (text && fread(text, 1, (size_t)len, f) != (size_t)len) {
        free(text);
        text = NULL;
    }
    if (text)
        text[len] = '\0';
out:
    if (f)
        fclose(f);
    return text;
}

/* A batch of events shaped like gantry.usage.v1 (what the ledger receives, as
 * jansson objects), turned into the statement's column arrays as the ledger does. */
static gt_ledger_rows_t *make_batch(bench_t *b, long first, int n)
{
    gt_ledger_rows_t *rows = gt_ledger_rows_new();
    for (int i = 0; i < n; i++) {
        long k = first + i;
        char id[64], req[48], task[64], tenant[32], at[64];
        snprintf(id, sizeof(id), "bench-%ld/0:usage", k);
        snprintf(req, sizeof(req), "bench-%ld", k);
        snprintf(task, sizeof(task), "bench-%ld/0", k);
        snprintf(tenant, sizeof(tenant), "tenant-%05ld", k % b->tenants);
        /* spread over the first 27 days of the month */
        gt_clock_fmt(b->month_start_ms + (k * 2333) % (27LL * 86400000), at, sizeof(at));
        json_t *ev = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:f, s:f, s:I, s:I, "
            "s:I, s:I, s:I, s:i, s:{s:i, s:i, s:i, s:i}, s:s}",
            "schema", "gantry.usage.v1", "event_id", id, "request_id", req, "task_id", task,
            "tenant_id", tenant, "model", k % 3 ? "llama-3.1-8b" : "llama-3.1-70b", "provider",
            "hostedai", "pool", "gpu-pool-a", "allocation_id", req, "allocation_seconds",
            0.05 + (double)(k % 100) / 1000.0, "tflops", k % 3 ? 20.0 : 80.0, "vram_mb",
            (json_int_t)(k % 3 ? 16000 : 80000), "prompt_tokens", (json_int_t)(50 + k % 500),
            "completion_tokens", (json_int_t)(20 + k % 200), "request_bytes", (json_int_t)400,
            "response_bytes", (json_int_t)900, "attempts", 1, "durations", "allocate_ms", 10,
            "inference_ms", 40, "release_ms", 5, "total_ms", 55, "occurred_at", at);
        int rc = rows && ev ? gt_ledger_rows_add(rows, ev) : -1;
        json_decref(ev);
        if (rc != 0) {
            gt_ledger_rows_free(rows);
            return NULL;
        }
    }
    return rows;
}

static void send_more(bench_t *b)
{
    while (b->in_flight < b->max_in_flight && b->sent < b->events) {
        int n = (int)(b->events - b->sent < b->batch ? b->events - b->sent : b->batch);
        gt_ledger_rows_t *rows = make_batch(b, b->sent, n);
        const char *params[GT_LEDGER_NPARAMS];
        int lengths[GT_LEDGER_NPARAMS], formats[GT_LEDGER_NPARAMS];
        if (!rows || gt_ledger_rows_params(rows, params, lengths, formats) != 0 ||
            gt_pg_query_bin(least_busy(b), b->sql, GT_LEDGER_NPARAMS, params, lengths, formats,
                            on_batch, b) != 0) {
            fprintf(stderr, "ledger-bench: cannot send\n");
            b->failed = 1;
            gt_ledger_rows_free(rows);
            return;
        }
        gt_ledger_rows_free(rows);
        b->sent += n;
        b->in_flight++;
    }
}

int main(int argc, char **argv)
{
    bench_t b = {.events = 1000000, .tenants = 10000, .batch = 500, .max_in_flight = 4};
    const char *conninfo = NULL;
    static const struct option opts[] = {
        {"conninfo", required_argument, NULL, 'c'},  {"events", required_argument, NULL, 'n'},
        {"tenants", required_argument, NULL, 't'},   {"batch", required_argument, NULL, 'b'},
        {"in-flight", required_argument, NULL, 'f'}, {"connections", required_argument, NULL, 'k'},
        {"budgets", no_argument, NULL, 'B'},         {"statement", required_argument, NULL, 's'},
        {"print-statement", no_argument, NULL, 'P'}, {NULL, 0, NULL, 0}};
    int connections = 2;    /* ledger.connections' default */
    int budgets = 0;        /* --budgets: every tenant has a budget for the month */
    char *statement = NULL; /* --statement FILE: a variant of the ledger's, same parameters */
    int ch;
    while ((ch = getopt_long(argc, argv, "c:n:t:b:f:k:", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': conninfo = optarg; break;
        case 'n': b.events = atol(optarg); break;
        case 't': b.tenants = atol(optarg); break;
        case 'b': b.batch = atoi(optarg); break;
        case 'f': b.max_in_flight = atoi(optarg); break;
        case 'k': connections = atoi(optarg); break;
        case 'B': budgets = 1; break;
        case 's':
            free(statement);
            if (!(statement = read_file(optarg))) {
                fprintf(stderr, "gantry-bench-ledger: cannot read %s\n", optarg);
                return 2;
            }
            break;
        case 'P': /* for bench/ledger_instr.sh */ fputs(gt_ledger_insert_sql(), stdout); return 0;
        default:
            fprintf(stderr, "usage: gantry-bench-ledger --conninfo C [--events N] [--tenants T]"
                            " [--batch B] [--in-flight F] [--connections K] [--budgets]"
                            " [--statement FILE] [--print-statement]\n");
            return 2;
        }
    }
    if (!conninfo || b.events <= 0 || b.tenants <= 0 || b.batch <= 0 || b.max_in_flight <= 0 ||
        connections <= 0 || connections > 16) {
        fprintf(stderr, "gantry-bench-ledger: --conninfo is required (and counts positive)\n");
        return 2;
    }
    b.sql = statement ? statement : gt_ledger_insert_sql();
    char err[512];
    PGconn *sync = gt_pg_connect_sync(conninfo, err, sizeof(err));
    if (!sync) {
        fprintf(stderr, "gantry-bench-ledger: %s\n", err);
        return 1;
    }
    /* the events fall in last month, which is over and can be invoiced */
    PGresult *r =
        PQexec(sync, "SELECT (extract(epoch FROM billing_period_start("
                     "(billing_period(now()) - interval '1 month')::date)) * 1000)::bigint,"
                     " (billing_period(now()) - interval '1 month')::date::text");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "gantry-bench-ledger: %s", PQerrorMessage(sync));
        return 1;
    }
    b.month_start_ms = atoll(PQgetvalue(r, 0, 0));
    char period[16];
    snprintf(period, sizeof(period), "%s", PQgetvalue(r, 0, 1));
    PQclear(r);

    if (budgets) { /* each batch then adds its spend to one budget row per tenant */
        char tenants[32];
        snprintf(tenants, sizeof(tenants), "%ld", b.tenants);
        const char *bp[] = {tenants, period};
        r = PQexecParams(sync,
                         "INSERT INTO budget_periods (tenant_id, period, currency, monthly_micros)"
                         " SELECT 'tenant-' || lpad(k::text, 5, '0'), $2::date, 'USD', 1e15"
                         " FROM generate_series(0, $1::bigint - 1) k",
                         2, NULL, bp, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "gantry-bench-ledger: budgets: %s", PQerrorMessage(sync));
            return 1;
        }
        PQclear(r);
    }
    b.loop = uv_default_loop();
    for (b.npg = 0; b.npg < connections; b.npg++)
        if (!(b.pg[b.npg] = gt_pg_new(b.loop, conninfo)))
            return 1;
    /* the server process first, so its CPU time is read around the inserts only */
    if (gt_pg_query(b.pg[0], "SELECT pg_backend_pid()", 0, NULL, on_pid, &b) != 0)
        return 1;
    while (!b.backend_pid && uv_run(b.loop, UV_RUN_ONCE))
        ;
    double server0 = server_cpu(b.backend_pid), client0 = self_cpu();
    int64_t t0 = gt_clock_mono_ms();
    send_more(&b);
    uv_run(b.loop, UV_RUN_DEFAULT);
    int64_t t1 = gt_clock_mono_ms();
    double server1 = server_cpu(b.backend_pid), client1 = self_cpu();
    uv_loop_close(b.loop);
    if (b.failed)
        return 1;
    double secs = (double)(t1 - t0) / 1000.0;
    printf("ledger: %ld events (%ld rows) over %ld tenants in %.1f s: %.0f events/s"
           " (batches of %d, %d in flight over %d connections%s)\n",
           b.events, b.inserted, b.tenants, secs, (double)b.events / secs, b.batch, b.max_in_flight,
           connections, budgets ? ", budgets" : "");
    if (server0 >= 0 && server1 >= 0) /* CPU time does not depend on what else the machine runs */
        printf("ledger CPU per event: PostgreSQL %.2f us (all its processes), client %.2f us\n",
               (server1 - server0) * 1e6 / (double)b.events,
               (client1 - client0) * 1e6 / (double)b.events);

    /* A month's usage is long vacuumed when it is invoiced (autovacuum): hint bits
     * set, statistics taken. Done here, and timed apart, so the run is measured on
     * such a table and not on rows no one has read yet. */
    int64_t tv = gt_clock_mono_ms();
    r = PQexec(sync, "VACUUM (ANALYZE) usage");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fprintf(stderr, "gantry-bench-ledger: vacuum: %s", PQerrorMessage(sync));
    PQclear(r);
    printf("vacuum (analyze) usage: %.2f s (not part of the invoice run)\n",
           (double)(gt_clock_mono_ms() - tv) / 1000.0);
    const char *params[] = {period};
    double inv0 = server_cpu(PQbackendPID(sync));
    int64_t t2 = gt_clock_mono_ms();
    r = PQexecParams(sync, "SELECT billing_invoice_run($1::date)", 1, NULL, params, NULL, NULL, 0);
    int64_t t3 = gt_clock_mono_ms();
    double inv1 = server_cpu(PQbackendPID(sync));
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "gantry-bench-ledger: invoice run: %s", PQerrorMessage(sync));
        PQclear(r);
        PQfinish(sync);
        return 1;
    }
    printf("invoice run %.7s: %s invoices over %ld usage rows in %.2f s (PostgreSQL CPU %.2f s)\n",
           period, PQgetvalue(r, 0, 0), b.inserted, (double)(t3 - t2) / 1000.0, inv1 - inv0);
    PQclear(r);
    r = PQexec(sync, "SELECT (SELECT sum(total_micros) FROM invoices) = (SELECT sum(cost_micros)"
                     " FROM usage), (SELECT count(*) FROM invoice_lines),"
                     " (SELECT sum(spent_micros) FROM budget_periods) = (SELECT sum(cost_micros)"
                     " FROM usage)");
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        printf("invoice totals equal costed usage: %s; %s invoice lines%s\n",
               strcmp(PQgetvalue(r, 0, 0), "t") == 0 ? "yes" : "NO", PQgetvalue(r, 0, 1),
               !budgets                                ? ""
               : strcmp(PQgetvalue(r, 0, 2), "t") == 0 ? "; budget spend equals it: yes"
                                                       : "; budget spend equals it: NO");
    PQclear(r);
    PQfinish(sync);
    free(statement);
    return 0;
}
