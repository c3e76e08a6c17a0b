/* reconcile.c - `gantry reconcile`: compares a provider's billed quantities
 * (a CSV file, format in docs/billing.md) with Gantry's usage of that provider
 * in a period, per model, UTC day and component, and prints the differences. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void reconcile_usage(FILE *f)
{
    fprintf(f, "usage: gantry reconcile --provider NAME --file FILE.csv --period YYYY-MM [--all]\n"
               "                        [--config FILE]\n"
               "\n"
               "FILE.csv has a header line \"date,model,component,quantity\" then one line per\n"
               "billed quantity: date YYYY-MM-DD (UTC), Gantry's model name, component\n"
               "(prompt_tokens, completion_tokens, allocation_seconds or requests), quantity.\n"
               "Prints, per day, model and component, the provider's quantity, Gantry's and the\n"
               "difference; only the components the file bills are compared. Exit status 0 when\n"
               "everything matches, 1 when there are differences (or on error), 2 bad usage.\n"
               "\n"
               "  -c, --config FILE    configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -P, --provider NAME  provider (as in usage rows, e.g. hostedai)\n"
               "  -f, --file FILE      the provider's invoice lines (CSV)\n"
               "  -p, --period P       billing period (a UTC month), e.g. 2026-11\n"
               "      --all            print matching rows too\n"
               "  -h, --help           this help\n");
}

static const char sql_compare[] =
    "WITH p AS (SELECT (x ->> 'day')::date AS day, x ->> 'model' AS model,"
    "   x ->> 'component' AS component, sum((x ->> 'quantity')::numeric) AS qty"
    "  FROM json_array_elements($1::json) x GROUP BY 1, 2, 3),"
    " g AS (SELECT (u.occurred_at AT TIME ZONE 'UTC')::date AS day, u.model, c.component,"
    "   sum(c.q) AS qty FROM usage u CROSS JOIN LATERAL (VALUES"
    "    ('prompt_tokens', u.prompt_tokens::numeric),"
    "    ('completion_tokens', u.completion_tokens::numeric),"
    "    ('allocation_seconds', u.allocation_seconds), ('requests', 1::numeric)) AS c(component, q)"
    "  WHERE u.provider = $2 AND u.occurred_at >= billing_period_start($3::date)"
    "   AND u.occurred_at < billing_period_start(($3::date + interval '1 month')::date)"
    "   AND c.component IN (SELECT component FROM p)"
    "  GROUP BY 1, 2, 3)"
    " SELECT to_char(coalesce(p.day, g.day), 'YYYY-MM-DD') AS day,"
    "  coalesce(p.model, g.model) AS model, coalesce(p.component, g.component) AS component,"
    "  coalesce(p.qty, 0) AS provider, coalesce(g.qty, 0) AS gantry,"
    "  coalesce(p.qty, 0) - coalesce(g.qty, 0) AS difference,"
    "  CASE WHEN coalesce(g.qty, 0) = 0 THEN NULL ELSE"
    "   round(100 * (coalesce(p.qty, 0) - g.qty) / g.qty, 2) END AS diff_pct"
    " FROM p FULL JOIN g ON p.day = g.day AND p.model = g.model AND p.component = g.component"
    " WHERE $4::boolean OR coalesce(p.qty, 0) <> coalesce(g.qty, 0)"
    " ORDER BY 1, 2, 3";

/* Splits a CSV line without quoting into at most n fields; returns the count. */
static int split(char *line, char **f, int n)
{
    int k = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line; k < n; k++) {
        f[k] = p;
        char *comma = strchr(p, ',');
        if (!comma)
            return k + 1;
        *comma = '\0';
        p = comma + 1;
    }
    return k + 1; /* too many fields */
}

static json_t *read_csv(const char *file, const char *period, int *outside)
{
    FILE *in = fopen(file, "r");
    if (!in) {
        fprintf(stderr, "gantry reconcile: cannot read %s\n", file);
        return NULL;
    }
    json_t *rows = json_array();
    char line[1024];
    int lineno = 0, ok = 1;
    while (ok && fgets(line, sizeof(line), in)) {
        char *f[5];
        lineno++;
        if (line[0] == '\n' || line[0] == '\r' || line[0] == '#')
            continue;
        int n = split(line, f, 5);
        if (lineno == 1) {
            if (n != 4 || strcmp(f[0], "date") != 0 || strcmp(f[1], "model") != 0 ||
                strcmp(f[2], "component") != 0 || strcmp(f[3], "quantity") != 0) {
                fprintf(stderr,
                        "gantry reconcile: %s:1: header must be date,model,component,quantity\n",
                        file);
                ok = 0;
            }
            continue;
        }
        char *end;
        double q = n == 4 ? strtod(f[3], &end) : 0;
        int comp_ok =
            n == 4 && (!strcmp(f[2], "prompt_tokens") || !strcmp(f[2], "completion_tokens") ||
                       !strcmp(f[2], "allocation_seconds") || !strcmp(f[2], "requests"));
        if (n != 4 || strlen(f[0]) != 10 || f[0][4] != '-' || f[0][7] != '-' || !f[1][0] ||
            !comp_ok || end == f[3] || *end || q < 0) {
            fprintf(stderr, "gantry reconcile: %s:%d: want YYYY-MM-DD,model,component,quantity\n",
                    file, lineno);
            ok = 0;
            continue;
        }
        if (strncmp(f[0], period, 7) != 0) {
            (*outside)++;
            continue;
        }
        /* quantity goes to SQL as text: numeric, no binary rounding */
        json_array_append_new(rows, json_pack("{s:s, s:s, s:s, s:s}", "day", f[0], "model", f[1],
                                              "component", f[2], "quantity", f[3]));
    }
    fclose(in);
    if (!ok || lineno == 0) {
        if (ok)
            fprintf(stderr, "gantry reconcile: %s is empty\n", file);
        json_decref(rows);
        return NULL;
    }
    return rows;
}

int gt_cli_reconcile(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"provider", required_argument, NULL, 'P'},
        {"file", required_argument, NULL, 'f'},
        {"period", required_argument, NULL, 'p'},
        {"all", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *provider = NULL, *file = NULL, *period_arg = NULL;
    int all = 0, r, rc = GT_CLI_FAIL, outside = 0;
    while ((r = getopt_long(argc, argv, ":c:P:f:p:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'P': provider = optarg; break;
        case 'f': file = optarg; break;
        case 'p': period_arg = optarg; break;
        case 'a': all = 1; break;
        case 'h': reconcile_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("reconcile", argv, r);
        }
    }
    if (optind < argc)
        return gt_cli_usage_error("reconcile", "unexpected argument '%s'", argv[optind]);
    if (!provider || !file || !period_arg)
        return gt_cli_usage_error("reconcile", "--provider, --file and --period are required");
    char period[11];
    if (gt_cli_parse_period(period_arg, period) != 0)
        return gt_cli_usage_error("reconcile", "bad --period '%s' (want YYYY-MM)", period_arg);
    json_t *rows = read_csv(file, period, &outside);
    if (!rows)
        return GT_CLI_FAIL;
    PGconn *conn = gt_cli_billing_db("reconcile", config);
    char *text = json_dumps(rows, JSON_COMPACT);
    PGresult *res = NULL;
    if (conn && text) {
        const char *params[] = {text, provider, period, all ? "true" : "false"};
        res = gt_cli_sql(conn, "reconcile", sql_compare, 4, params);
    }
    if (res) {
        long diffs = 0;
        for (int i = 0; i < PQntuples(res); i++)
            diffs +=
                strcmp(PQgetvalue(res, i, 5), "0") != 0 && strtod(PQgetvalue(res, i, 5), NULL) != 0;
        if (PQntuples(res))
            gt_cli_print_table(res);
        printf("%s %.7s: %zu provider line(s), %ld difference(s)%s", provider, period,
               json_array_size(rows), diffs, outside ? "" : "\n");
        if (outside)
            printf(", %d line(s) outside the period ignored\n", outside);
        rc = diffs ? GT_CLI_FAIL : GT_CLI_OK;
    }
    PQclear(res);
    free(text);
    json_decref(rows);
    PQfinish(conn);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
