/* status.c - `gantry status`: a job row and its tasks from PostgreSQL, as a table or JSON. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pg.h"

/* The request body (prompts) and outputs stay out: status is for operators. */
static const char job_sql[] =
    "SELECT request_id, tenant_id, kind, model, lane, status, priority, task_count, batch,"
    " deadline, reply_topic, source_topic, source_partition, source_offset,"
    " created_at, completed_at"
    " FROM jobs WHERE request_id = $1";

static const char tasks_sql[] =
    "SELECT task_id, kind, status, coalesce(model, '') AS model, coalesce(pool, '') AS pool,"
    " attempts::text AS attempts,"
    " coalesce(error_code || ': ' || error_message, error_code, error_message, '') AS error"
    " FROM tasks WHERE request_id = $1 ORDER BY idx";

static const char json_sql[] =
    "SELECT jsonb_build_object("
    " 'job', (SELECT to_jsonb(j) - 'request' - 'result' FROM jobs j WHERE request_id = $1),"
    " 'tasks', coalesce((SELECT jsonb_agg(jsonb_build_object("
    "   'task_id', task_id, 'idx', idx, 'kind', kind, 'status', status, 'model', model,"
    "   'provider', provider, 'pool', pool, 'lane', lane, 'attempts', attempts,"
    "   'error_code', error_code, 'error_message', error_message, 'worker_id', worker_id,"
    "   'queued_at', queued_at, 'completed_at', completed_at) ORDER BY idx)"
    "   FROM tasks WHERE request_id = $1), '[]'::jsonb))"
    " WHERE EXISTS (SELECT 1 FROM jobs WHERE request_id = $1)";

static void status_usage(FILE *f)
{
    fprintf(f, "usage: gantry status [--config FILE] [--json] REQUEST_ID\n"
               "\n"
               "Prints the job and its tasks (task_id, kind, status, model, pool, attempts,\n"
               "error) from PostgreSQL. Exit 1 when the request is unknown.\n"
               "\n"
               "  -c, --config FILE  configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "      --json         one JSON object {\"job\": {...}, \"tasks\": [...]}\n"
               "  -h, --help         this help\n");
}

static PGresult *query(PGconn *conn, const char *sql, const char *id)
{
    const char *params[1] = {id};
    PGresult *res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *m = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
        fprintf(stderr, "gantry status: %s%s", m, m[0] && m[strlen(m) - 1] == '\n' ? "" : "\n");
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Prints a cell on one line: newlines and tabs in messages would break the
 * table. */
static void put_cell(const char *s, int width, int last)
{
    int n = 0;
    for (; *s; s++, n++)
        putchar(*s == '\n' || *s == '\r' || *s == '\t' ? ' ' : *s);
    if (!last)
        printf("%*s", width - n + 2, "");
}

static void print_tasks(const PGresult *res)
{
    static const char *const heads[] = {"TASK_ID", "KIND",     "STATUS", "MODEL",
                                        "POOL",    "ATTEMPTS", "ERROR"};
    int nf = PQnfields(res), nt = PQntuples(res);
    int w[7] = {0};
    for (int f = 0; f < nf && f < 7; f++) {
        w[f] = (int)strlen(heads[f]);
        for (int t = 0; t < nt; t++)
            if (PQgetlength(res, t, f) > w[f])
                w[f] = PQgetlength(res, t, f);
    }
    for (int f = 0; f < nf && f < 7; f++)
        put_cell(heads[f], w[f], f == nf - 1);
    putchar('\n');
    for (int t = 0; t < nt; t++) {
        for (int f = 0; f < nf && f < 7; f++)
            put_cell(PQgetvalue(res, t, f), w[f], f == nf - 1);
        putchar('\n');
    }
}

static void print_job(const PGresult *res)
{
    int nf = PQnfields(res), w = 0;
    for (int f = 0; f < nf; f++)
        if ((int)strlen(PQfname(res, f)) > w)
            w = (int)strlen(PQfname(res, f));
    for (int f = 0; f < nf; f++) {
        if (PQgetisnull(res, 0, f))
            continue; /* unset columns are noise here */
        printf("%-*s  ", w, PQfname(res, f));
        put_cell(PQgetvalue(res, 0, f), 0, 1);
        putchar('\n');
    }
}

int gt_cli_status(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *id = NULL;
    int json = 0, r, rc = GT_CLI_FAIL;
    gt_config_t *cfg = NULL;
    PGconn *conn = NULL;
    PGresult *job = NULL, *tasks = NULL;
    char err[1024];

    while ((r = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'j': json = 1; break;
        case 'h': status_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("status", argv, r);
        }
    }
    if (optind >= argc)
        return gt_cli_usage_error("status", "missing REQUEST_ID");
    id = argv[optind++];
    if (optind < argc)
        return gt_cli_usage_error("status", "unexpected argument '%s'", argv[optind]);

    if (!(cfg = gt_cli_load_config(config)))
        goto out;
    if (!(conn = gt_pg_connect_sync(cfg->pg_conninfo, err, sizeof(err)))) {
        fprintf(stderr, "gantry status: %s\n", err);
        goto out;
    }
    if (json) {
        if (!(job = query(conn, json_sql, id)))
            goto out;
        if (PQntuples(job) == 0) {
            fprintf(stderr, "gantry status: no such request: %s\n", id);
            goto out;
        }
        printf("%s\n", PQgetvalue(job, 0, 0));
        rc = GT_CLI_OK;
        goto out;
    }
    if (!(job = query(conn, job_sql, id)))
        goto out;
    if (PQntuples(job) == 0) {
        fprintf(stderr, "gantry status: no such request: %s\n", id);
        goto out;
    }
    if (!(tasks = query(conn, tasks_sql, id)))
        goto out;
    print_job(job);
    printf("\n");
    print_tasks(tasks);
    rc = GT_CLI_OK;
out:
    PQclear(job);
    PQclear(tasks);
    PQfinish(conn);
    gt_config_free(cfg);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
