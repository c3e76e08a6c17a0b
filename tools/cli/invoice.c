/* invoice.c - `gantry invoice run|show|export`: issues a period's invoices
 * (idempotently, in PostgreSQL: billing_invoice_run), prints one as a table,
 * and exports a period's issued invoices as CSV or JSON for finance tools. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void invoice_usage(FILE *f)
{
    fprintf(f, "usage: gantry invoice run --period YYYY-MM [--tenant T] [--config FILE]\n"
               "       gantry invoice show (--period YYYY-MM --tenant T | --id N) [--config FILE]\n"
               "       gantry invoice export --period YYYY-MM --format csv|json [--output FILE]\n"
               "\n"
               "run: issues one invoice per tenant (and currency) for a period that is over,\n"
               "with lines per model, provider, price and component, plus adjustment lines for\n"
               "late usage of earlier, already invoiced periods. Running it again creates\n"
               "nothing. Issued invoices never change. show: an invoice as a table. export:\n"
               "every issued invoice line of the period (amounts in integer micro-units).\n"
               "\n"
               "  -c, --config FILE   configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -p, --period P      billing period (a UTC month), e.g. 2026-11\n"
               "  -t, --tenant T      only this tenant\n"
               "      --id N          invoice id\n"
               "      --format F      csv or json\n"
               "  -o, --output FILE   write the export there (default stdout)\n"
               "  -h, --help          this help\n");
}

static const char sql_show_head[] =
    "SELECT invoice_id, tenant_id, period, currency, status, issued_at, cutoff,"
    " usage_micros, adjustment_micros, total_micros"
    " FROM finance_invoices WHERE ($1::bigint IS NOT NULL AND invoice_id = $1::bigint)"
    "  OR ($1::bigint IS NULL AND tenant_id = $2 AND period = $3) ORDER BY currency";

static const char sql_show_lines[] =
    "SELECT line_no AS line, kind, usage_period AS used_in, provider, model, price_id AS price,"
    " component, quantity, unit, unit_price_micros AS unit_price,"
    " (amount_micros::numeric / 1000000)::numeric(20, 6) AS amount"
    " FROM finance_invoice_lines WHERE invoice_id = $1 ORDER BY line_no";

static const char sql_export_json[] =
    "SELECT coalesce(json_agg(json_build_object('invoice_id', i.invoice_id, 'tenant_id',"
    " i.tenant_id, 'period', i.period, 'currency', i.currency, 'issued_at', i.issued_at,"
    " 'usage_micros', i.usage_micros, 'adjustment_micros', i.adjustment_micros, 'total_micros',"
    " i.total_micros, 'lines', (SELECT json_agg(to_jsonb(l) - 'invoice_id' ORDER BY l.line_no)"
    "   FROM finance_invoice_lines l WHERE l.invoice_id = i.invoice_id))"
    " ORDER BY i.tenant_id, i.currency), '[]')"
    " FROM finance_invoices i WHERE i.period = $1";

static const char *money(const char *micros, char *buf, size_t len)
{
    long long v = atoll(micros);
    snprintf(buf, len, "%s%lld.%06lld", v < 0 ? "-" : "", llabs(v) / 1000000, llabs(v) % 1000000);
    return buf;
}

static int show(PGconn *conn, const char *id, const char *tenant, const char *period)
{
    const char *params[] = {id, tenant, period ? period : NULL};
    char p7[8] = "";
    if (period) /* the views show periods as YYYY-MM */
        snprintf(p7, sizeof(p7), "%.7s", period), params[2] = p7;
    PGresult *head = gt_cli_sql(conn, "invoice", sql_show_head, 3, params);
    if (!head)
        return GT_CLI_FAIL;
    if (PQntuples(head) == 0) {
        fprintf(stderr, "gantry invoice: no issued invoice %s%s%s%s\n", id ? id : "",
                tenant ? tenant : "", tenant ? " " : "", period ? p7 : "");
        PQclear(head);
        return GT_CLI_FAIL;
    }
    int rc = GT_CLI_OK;
    for (int r = 0; r < PQntuples(head); r++) {
        char a[48], b[48], c[48];
        const char *cur = PQgetvalue(head, r, 3);
        printf("Invoice %s  tenant %s  period %s  %s  %s %s\n", PQgetvalue(head, r, 0),
               PQgetvalue(head, r, 1), PQgetvalue(head, r, 2), cur, PQgetvalue(head, r, 4),
               PQgetvalue(head, r, 5));
        printf("Usage recorded up to %s\n\n", PQgetvalue(head, r, 6));
        const char *lp[] = {PQgetvalue(head, r, 0)};
        PGresult *lines = gt_cli_sql(conn, "invoice", sql_show_lines, 1, lp);
        if (!lines) {
            rc = GT_CLI_FAIL;
            break;
        }
        gt_cli_print_table(lines);
        PQclear(lines);
        printf("\nUsage        %s %s\nAdjustments  %s %s\nTotal        %s %s\n",
               money(PQgetvalue(head, r, 7), a, sizeof(a)), cur,
               money(PQgetvalue(head, r, 8), b, sizeof(b)), cur,
               money(PQgetvalue(head, r, 9), c, sizeof(c)), cur);
        if (r + 1 < PQntuples(head))
            printf("\n");
    }
    PQclear(head);
    return rc;
}

static int export_csv(PGconn *conn, const char *period, FILE *out)
{
    char sql[1024];
    /* period is validated YYYY-MM-01: safe as a literal (COPY takes no parameters) */
    snprintf(sql, sizeof(sql),
             "COPY (SELECT i.invoice_id, i.tenant_id, i.period, i.currency, i.issued_at,"
             " l.line_no, l.kind, l.usage_period, l.provider, l.model, l.price_id, l.component,"
             " l.quantity, l.unit, l.unit_price_micros, l.amount_micros, i.total_micros AS"
             " invoice_total_micros FROM finance_invoices i JOIN finance_invoice_lines l USING"
             " (invoice_id) WHERE i.period = '%.7s' ORDER BY i.tenant_id, i.currency, l.line_no)"
             " TO STDOUT WITH (FORMAT csv, HEADER)",
             period);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        fprintf(stderr, "gantry invoice: %s", PQerrorMessage(conn));
        PQclear(res);
        return GT_CLI_FAIL;
    }
    PQclear(res);
    char *buf;
    int n, rc = GT_CLI_OK;
    while ((n = PQgetCopyData(conn, &buf, 0)) > 0) {
        if (fwrite(buf, 1, (size_t)n, out) != (size_t)n)
            rc = GT_CLI_FAIL;
        PQfreemem(buf);
    }
    while ((res = PQgetResult(conn))) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "gantry invoice: %s", PQerrorMessage(conn));
            rc = GT_CLI_FAIL;
        }
        PQclear(res);
    }
    return rc;
}

int gt_cli_invoice(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"period", required_argument, NULL, 'p'},
        {"tenant", required_argument, NULL, 't'}, {"id", required_argument, NULL, 'i'},
        {"format", required_argument, NULL, 'F'}, {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *period_arg = NULL, *tenant = NULL, *id = NULL,
               *format = NULL, *output = NULL;
    int r, rc = GT_CLI_FAIL;
    long long idv;
    while ((r = getopt_long(argc, argv, ":c:p:t:o:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'p': period_arg = optarg; break;
        case 't': tenant = optarg; break;
        case 'i': id = optarg; break;
        case 'F': format = optarg; break;
        case 'o': output = optarg; break;
        case 'h': invoice_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("invoice", argv, r);
        }
    }
    if (optind >= argc)
        return gt_cli_usage_error("invoice", "missing action (run, show or export)");
    const char *action = argv[optind++];
    if (optind < argc)
        return gt_cli_usage_error("invoice", "unexpected argument '%s'", argv[optind]);
    char period[11];
    if (period_arg && gt_cli_parse_period(period_arg, period) != 0)
        return gt_cli_usage_error("invoice", "bad --period '%s' (want YYYY-MM)", period_arg);
    if (id && gt_cli_parse_ms(id, &idv) != 0)
        return gt_cli_usage_error("invoice", "bad --id '%s'", id);
    int is_run = strcmp(action, "run") == 0, is_show = strcmp(action, "show") == 0,
        is_export = strcmp(action, "export") == 0;
    if (!is_run && !is_show && !is_export)
        return gt_cli_usage_error("invoice", "unknown action '%s'", action);
    if ((is_run || is_export) && !period_arg)
        return gt_cli_usage_error("invoice", "%s needs --period YYYY-MM", action);
    if (is_show && !id && !(period_arg && tenant))
        return gt_cli_usage_error("invoice", "show needs --id N, or --period and --tenant");
    if (is_export && (!format || (strcmp(format, "csv") != 0 && strcmp(format, "json") != 0)))
        return gt_cli_usage_error("invoice", "export needs --format csv or json");

    PGconn *conn = gt_cli_billing_db("invoice", config);
    if (!conn)
        return GT_CLI_FAIL;
    PGresult *res = NULL;
    if (is_run) {
        /* keep monthly partitions ahead of the ledger (the default one catches the rest) */
        res = gt_cli_sql(conn, "invoice",
                         "SELECT usage_ensure_partition((billing_period(now())"
                         " + make_interval(months => k))::date) FROM generate_series(0, 3) k",
                         0, NULL);
        if (res) {
            PQclear(res);
            const char *params[] = {period, tenant};
            res =
                gt_cli_sql(conn, "invoice", "SELECT billing_invoice_run($1::date, $2)", 2, params);
        }
        if (res) {
            printf("%.7s: %s invoice(s) issued%s%s\n", period, PQgetvalue(res, 0, 0),
                   tenant ? " for tenant " : "", tenant ? tenant : "");
            rc = GT_CLI_OK;
        }
    } else if (is_show) {
        rc = show(conn, id, tenant, period_arg ? period : NULL);
    } else {
        FILE *out = output ? fopen(output, "w") : stdout;
        if (!out) {
            fprintf(stderr, "gantry invoice: cannot write %s\n", output);
        } else if (strcmp(format, "csv") == 0) {
            rc = export_csv(conn, period, out);
        } else {
            char p7[8];
            snprintf(p7, sizeof(p7), "%.7s", period);
            const char *params[] = {p7};
            res = gt_cli_sql(conn, "invoice", sql_export_json, 1, params);
            if (res) {
                fprintf(out, "%s\n", PQgetvalue(res, 0, 0));
                rc = GT_CLI_OK;
            }
        }
        if (out && out != stdout && fclose(out) != 0)
            rc = GT_CLI_FAIL;
    }
    PQclear(res);
    PQfinish(conn);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
