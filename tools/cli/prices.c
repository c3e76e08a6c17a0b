/* prices.c - `gantry prices load|list`: loads a price book file into the
 * versioned price tables (never editing a loaded price) and lists it. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void prices_usage(FILE *f)
{
    fprintf(f, "usage: gantry prices load --file FILE [--config FILE]\n"
               "       gantry prices list [--config FILE]\n"
               "\n"
               "load: adds the price book entries of FILE (format: deploy/prices.example.json,\n"
               "docs/billing.md) in one transaction. An entry already loaded with the same\n"
               "figures is skipped; one with other figures is refused (prices are versioned:\n"
               "add a new entry with a later effective_from). \"batch\": true prices only the\n"
               "lines of batch API batches (gantry-api). list: every version loaded.\n"
               "\n"
               "  -c, --config FILE  configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -f, --file FILE    price book (JSON)\n"
               "  -h, --help         this help\n");
}

/* Checks one entry; returns 0 or -1 with a reason in err. */
static int check_entry(json_t *e, const char *currency, char *err, size_t len)
{
    static const char *const keys[] = {"provider",
                                       "model",
                                       "tenant_id",
                                       "currency",
                                       "effective_from",
                                       "prompt_per_1k_micros",
                                       "completion_per_1k_micros",
                                       "request_micros",
                                       "allocation_second_micros",
                                       "gpu_classes",
                                       "batch",
                                       NULL};
    if (!json_is_object(e))
        return snprintf(err, len, "must be an object"), -1;
    const char *k;
    json_t *v;
    json_object_foreach (e, k, v) {
        int ok = 0;
        for (int i = 0; keys[i]; i++)
            ok |= strcmp(keys[i], k) == 0;
        if (!ok)
            return snprintf(err, len, "unknown key \"%s\"", k), -1;
        if (strstr(k, "micros") && (!json_is_integer(v) || json_integer_value(v) < 0))
            return snprintf(err, len, "%s must be a non-negative integer (micro-units)", k), -1;
    }
    if (!json_object_get(e, "currency") && currency)
        json_object_set_new(e, "currency", json_string(currency));
    static const char *const required[] = {"provider", "model", "currency", "effective_from", NULL};
    for (int i = 0; required[i]; i++)
        if (!json_is_string(json_object_get(e, required[i])))
            return snprintf(err, len, "%s is required (a string)", required[i]), -1;
    json_t *classes = json_object_get(e, "gpu_classes");
    size_t i;
    json_array_foreach (classes, i, v) {
        json_t *rate = json_object_get(v, "allocation_second_micros");
        if (!json_is_integer(rate) || json_integer_value(rate) < 0)
            return snprintf(err, len, "gpu_classes[%zu].allocation_second_micros is required", i),
                   -1;
    }
    if (classes && !json_is_array(classes))
        return snprintf(err, len, "gpu_classes must be an array"), -1;
    json_t *batch = json_object_get(e, "batch");
    if (batch && !json_is_boolean(batch))
        return snprintf(err, len, "batch must be true or false"), -1;
    return 0;
}

static int load(PGconn *conn, const char *file)
{
    json_error_t jerr;
    json_t *doc = json_load_file(file, 0, &jerr);
    int rc = GT_CLI_FAIL, inserted = 0, unchanged = 0;
    PGresult *res = NULL;
    if (!doc) {
        fprintf(stderr, "gantry prices: %s:%d: %s\n", file, jerr.line, jerr.text);
        return GT_CLI_FAIL;
    }
    json_t *list = json_is_array(doc) ? doc : json_object_get(doc, "prices");
    const char *currency = json_string_value(json_object_get(doc, "currency"));
    if (!json_is_array(list) || json_array_size(list) == 0) {
        fprintf(stderr, "gantry prices: %s: expected {\"prices\": [...]} with at least one entry\n",
                file);
        goto out;
    }
    if (!(res = gt_cli_sql(conn, "prices", "BEGIN", 0, NULL)))
        goto out;
    PQclear(res);
    res = NULL;
    size_t i;
    json_t *e;
    json_array_foreach (list, i, e) {
        char err[256];
        if (check_entry(e, currency, err, sizeof(err)) != 0) {
            fprintf(stderr, "gantry prices: %s: prices[%zu]: %s\n", file, i, err);
            goto out;
        }
        char *text = json_dumps(e, JSON_COMPACT);
        const char *params[] = {text, file};
        res = gt_cli_sql(conn, "prices", "SELECT billing_load_price($1::jsonb, $2)", 2, params);
        free(text);
        if (!res) {
            fprintf(stderr, "gantry prices: %s: prices[%zu] refused; nothing was loaded\n", file,
                    i);
            goto out;
        }
        if (strcmp(PQgetvalue(res, 0, 0), "inserted") == 0)
            inserted++;
        else
            unchanged++;
        PQclear(res);
        res = NULL;
    }
    res = gt_cli_sql(conn, "prices", "COMMIT", 0, NULL);
    if (res) {
        printf("%d price(s) loaded, %d already loaded\n", inserted, unchanged);
        rc = GT_CLI_OK;
    }
out:
    PQclear(res);
    json_decref(doc);
    return rc;
}

int gt_cli_prices(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"file", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *file = NULL;
    int r, rc = GT_CLI_FAIL;
    while ((r = getopt_long(argc, argv, ":c:f:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'f': file = optarg; break;
        case 'h': prices_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("prices", argv, r);
        }
    }
    if (optind >= argc)
        return gt_cli_usage_error("prices", "missing action (load or list)");
    const char *action = argv[optind++];
    if (optind < argc)
        return gt_cli_usage_error("prices", "unexpected argument '%s'", argv[optind]);
    if (strcmp(action, "load") == 0 && !file)
        return gt_cli_usage_error("prices", "load needs --file FILE");
    if (strcmp(action, "load") != 0 && strcmp(action, "list") != 0)
        return gt_cli_usage_error("prices", "unknown action '%s'", action);
    PGconn *conn = gt_cli_billing_db("prices", config);
    if (!conn)
        return GT_CLI_FAIL;
    if (strcmp(action, "load") == 0) {
        rc = load(conn, file);
    } else {
        PGresult *res = gt_cli_sql(
            conn, "prices",
            "SELECT price_id AS id, provider, model, coalesce(tenant_id, '*') AS tenant, currency,"
            " to_char(effective_from AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS"
            " effective_from, prompt_per_1k_micros AS prompt_1k, completion_per_1k_micros AS"
            " completion_1k, request_micros AS request, allocation_second_micros AS alloc_s,"
            " coalesce(gpu_classes::text, '') AS gpu_classes,"
            " CASE WHEN batch THEN 'batch' ELSE 'any' END AS traffic"
            " FROM finance_prices ORDER BY provider, model, tenant_id NULLS FIRST, batch,"
            " effective_from",
            0, NULL);
        if (res) {
            gt_cli_print_table(res);
            rc = GT_CLI_OK;
        }
        PQclear(res);
    }
    PQfinish(conn);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
