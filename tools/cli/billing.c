/* billing.c - helpers shared by the billing subcommands (prices, invoice,
 * reconcile, usage): database connection, parameterised queries, periods and
 * plain-text tables. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pg.h"

PGconn *gt_cli_billing_db(const char *cmd, const char *config)
{
    char err[1024];
    gt_config_t *cfg = gt_cli_load_config(config);
    if (!cfg)
        return NULL;
    PGconn *conn = NULL;
    if (!cfg->pg_conninfo)
        fprintf(stderr, "gantry %s: %s: postgres.conninfo is required\n", cmd, config);
    else if (!(conn = gt_pg_connect_sync(cfg->pg_conninfo, err, sizeof(err))))
        fprintf(stderr, "gantry %s: %s\n", cmd, err);
    gt_config_free(cfg);
    return conn;
}

PGresult *gt_cli_sql(PGconn *conn, const char *cmd, const char *sql, int n,
                     const char *const *params)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        if (!m)
            m = PQerrorMessage(conn);
        fprintf(stderr, "gantry %s: %s%s", cmd, m, m[0] && m[strlen(m) - 1] == '\n' ? "" : "\n");
        PQclear(res);
        return NULL;
    }
    return res;
}

int gt_cli_parse_period(const char *s, char out[11])
{
    if (!s || strlen(s) != 7 || s[4] != '-')
        return -1;
    for (int i = 0; i < 7; i++)
        if (i != 4 && !isdigit((unsigned char)s[i]))
            return -1;
    int month = atoi(s + 5);
    if (month < 1 || month > 12)
        return -1;
    snprintf(out, 11, "%.7s-01", s);
    return 0;
}

/* One line per cell: newlines and tabs in values would break the table. */
static void put_cell(const char *s, int width, int right, int last)
{
    int n = (int)strlen(s);
    if (right && !last)
        printf("%*s", width - n, "");
    for (; *s; s++)
        putchar(*s == '\n' || *s == '\r' || *s == '\t' ? ' ' : *s);
    if (!last)
        printf("%*s", right ? 2 : width - n + 2, "");
}

void gt_cli_print_table(const PGresult *res)
{
    int nf = PQnfields(res), nt = PQntuples(res);
    int *w = calloc((size_t)nf + 1, sizeof(int)), *right = calloc((size_t)nf + 1, sizeof(int));
    if (!w || !right)
        goto out;
    for (int f = 0; f < nf; f++) {
        Oid t = PQftype(res, f);
        right[f] = t == 20 || t == 21 || t == 23 || t == 1700; /* int8, int2, int4, numeric */
        w[f] = (int)strlen(PQfname(res, f));
        for (int r = 0; r < nt; r++)
            if (PQgetlength(res, r, f) > w[f])
                w[f] = PQgetlength(res, r, f);
    }
    for (int f = 0; f < nf; f++) {
        char head[128];
        snprintf(head, sizeof(head), "%s", PQfname(res, f));
        for (char *p = head; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        put_cell(head, w[f], right[f], f == nf - 1);
    }
    putchar('\n');
    for (int r = 0; r < nt; r++) {
        for (int f = 0; f < nf; f++)
            put_cell(PQgetvalue(res, r, f), w[f], right[f], f == nf - 1);
        putchar('\n');
    }
out:
    free(w);
    free(right);
}
