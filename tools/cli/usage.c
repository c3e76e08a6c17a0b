/* usage.c - `gantry usage`: a tenant's usage and cost in a period, per
 * provider and model, with its budget when it has one. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage_usage(FILE *f)
{
    fprintf(
        f, "usage: gantry usage --tenant T [--period YYYY-MM] [--by-batch] [--json]\n"
           "                    [--config FILE]\n"
           "\n"
           "Prints the tenant's usage in the period (default: the current UTC month) per\n"
           "provider and model: requests, tokens, allocation-seconds and cost (from the\n"
           "price in force at each event; UNPRICED counts events with no price yet), the\n"
           "total, and the tenant's budget for the period when it has one.\n"
           "\n"
           "  -c, --config FILE  configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
           "  -t, --tenant T     tenant id\n"
           "  -p, --period P     billing period, e.g. 2026-11\n"
           "      --by-batch     per gantry-api batch instead (request_id <batch_id>:<custom_id>;\n"
           "                     docs/batch-api.md)\n"
           "      --json         one JSON object instead of a table\n"
           "  -h, --help         this help\n");
}

#define USAGE_ROWS                                                                                 \
    "SELECT provider, model, coalesce(currency, '-') AS currency, count(*) AS requests,"           \
    " sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,"           \
    " sum(allocation_seconds) AS allocation_seconds, coalesce(sum(cost_micros), 0) AS "            \
    "cost_micros,"                                                                                 \
    " count(*) FILTER (WHERE price_id IS NULL) AS unpriced FROM usage"                             \
    " WHERE tenant_id = $1 AND occurred_at >= billing_period_start($2::date)"                      \
    "  AND occurred_at < billing_period_start(($2::date + interval '1 month')::date)"

static const char sql_table[] =
    "SELECT * FROM (SELECT provider, model, currency, requests, prompt_tokens, completion_tokens,"
    " allocation_seconds AS alloc_seconds, (cost_micros::numeric / 1000000)::numeric(20, 6) AS "
    "cost,"
    " unpriced FROM (" USAGE_ROWS " GROUP BY provider, model, currency) r"
    " UNION ALL SELECT 'TOTAL', '', coalesce(currency, '-'), count(*), sum(prompt_tokens),"
    " sum(completion_tokens), sum(allocation_seconds),"
    " (coalesce(sum(cost_micros), 0)::numeric / 1000000)::numeric(20, 6),"
    " count(*) FILTER (WHERE price_id IS NULL) FROM usage"
    " WHERE tenant_id = $1 AND occurred_at >= billing_period_start($2::date)"
    "  AND occurred_at < billing_period_start(($2::date + interval '1 month')::date)"
    " GROUP BY currency) x ORDER BY provider = 'TOTAL', provider, model";

static const char sql_json[] =
    "SELECT json_build_object('tenant_id', $1::text, 'period', to_char($2::date, 'YYYY-MM'),"
    " 'rows', (SELECT coalesce(json_agg(r ORDER BY r.provider, r.model), '[]') FROM (" USAGE_ROWS
    "  GROUP BY provider, model, currency) r),"
    " 'budget', (SELECT to_json(b) FROM finance_budgets b WHERE b.tenant_id = $1"
    "  AND b.period = to_char($2::date, 'YYYY-MM')))";

/* gantry-api batches: request_id is <batch_id>:<custom_id>. */
#define USAGE_BATCHES                                                                              \
    "SELECT split_part(request_id, ':', 1) AS batch_id, coalesce(currency, '-') AS currency,"      \
    " count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,"                                  \
    " sum(completion_tokens) AS completion_tokens,"                                                \
    " (coalesce(sum(cost_micros), 0)::numeric / 1000000)::numeric(20, 6) AS cost,"                 \
    " count(*) FILTER (WHERE price_id IS NULL) AS unpriced FROM usage"                             \
    " WHERE tenant_id = $1 AND occurred_at >= billing_period_start($2::date)"                      \
    "  AND occurred_at < billing_period_start(($2::date + interval '1 month')::date)"              \
    "  AND request_id ~ '^(msg)?batch_[0-9a-f]+:' GROUP BY 1, 2 ORDER BY 1, 2"

static const char sql_batches[] = USAGE_BATCHES;
static const char sql_batches_json[] =
    "SELECT coalesce(json_agg(b), '[]') FROM (" USAGE_BATCHES ") b";

static const char sql_budget[] =
    "SELECT currency, monthly_micros, hard_limit_micros, spent_micros, reserved_micros, rejected"
    " FROM budget_periods WHERE tenant_id = $1 AND period = $2::date";

int gt_cli_usage(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"tenant", required_argument, NULL, 't'},
        {"period", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"by-batch", no_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *tenant = NULL, *period_arg = NULL;
    int json = 0, by_batch = 0, r, rc = GT_CLI_FAIL;
    while ((r = getopt_long(argc, argv, ":c:t:p:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 't': tenant = optarg; break;
        case 'p': period_arg = optarg; break;
        case 'j': json = 1; break;
        case 'b': by_batch = 1; break;
        case 'h': usage_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("usage", argv, r);
        }
    }
    if (optind < argc)
        return gt_cli_usage_error("usage", "unexpected argument '%s'", argv[optind]);
    if (!tenant)
        return gt_cli_usage_error("usage", "--tenant is required");
    char period[11];
    if (period_arg && gt_cli_parse_period(period_arg, period) != 0)
        return gt_cli_usage_error("usage", "bad --period '%s' (want YYYY-MM)", period_arg);
    PGconn *conn = gt_cli_billing_db("usage", config);
    if (!conn)
        return GT_CLI_FAIL;
    PGresult *res = NULL, *budget = NULL;
    if (!period_arg) {
        res = gt_cli_sql(conn, "usage", "SELECT billing_period(now())::text", 0, NULL);
        if (!res)
            goto out;
        snprintf(period, sizeof(period), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    const char *params[] = {tenant, period};
    if (by_batch) {
        if (!(res = gt_cli_sql(conn, "usage", json ? sql_batches_json : sql_batches, 2, params)))
            goto out;
        if (json)
            printf("%s\n", PQgetvalue(res, 0, 0));
        else if (PQntuples(res) == 0)
            printf("no batch usage\n");
        else
            gt_cli_print_table(res);
        rc = GT_CLI_OK;
        goto out;
    }
    if (!(res = gt_cli_sql(conn, "usage", json ? sql_json : sql_table, 2, params)))
        goto out;
    if (json) {
        printf("%s\n", PQgetvalue(res, 0, 0));
        rc = GT_CLI_OK;
        goto out;
    }
    printf("Tenant %s, period %.7s (UTC)\n\n", tenant, period);
    if (PQntuples(res) == 0)
        printf("no usage\n");
    else
        gt_cli_print_table(res);
    if (!(budget = gt_cli_sql(conn, "usage", sql_budget, 2, params)))
        goto out;
    if (PQntuples(budget) == 1)
        printf("\nBudget %s micro-%s (hard limit %s): spent %s, reserved for running jobs %s, "
               "%s request(s) rejected\n",
               PQgetvalue(budget, 0, 1), PQgetvalue(budget, 0, 0), PQgetvalue(budget, 0, 2),
               PQgetvalue(budget, 0, 3), PQgetvalue(budget, 0, 4), PQgetvalue(budget, 0, 5));
    rc = GT_CLI_OK;
out:
    PQclear(res);
    PQclear(budget);
    PQfinish(conn);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
