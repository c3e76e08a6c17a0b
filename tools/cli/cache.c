/* cache.c - `gantry cache purge`: empties a tenant's response cache entries
 * (response_cache, migration 060; docs/routing.md), optionally for one model. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void cache_usage(FILE *f)
{
    fprintf(f, "usage: gantry cache purge --tenant T [--model M] [--config FILE]\n"
               "\n"
               "Deletes the tenant's response cache entries (of model M only, with --model)\n"
               "and prints how many were deleted. Requests after it are misses.\n"
               "\n"
               "  -c, --config FILE  configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -t, --tenant T     tenant id\n"
               "  -m, --model M      logical model name\n"
               "  -h, --help         this help\n");
}

static const char sql_purge[] = "WITH d AS (DELETE FROM response_cache WHERE tenant_id = $1"
                                " AND ($2::text IS NULL OR model = $2) RETURNING bytes)"
                                " SELECT count(*), coalesce(sum(bytes), 0) FROM d";

int gt_cli_cache(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"tenant", required_argument, NULL, 't'},
        {"model", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *tenant = NULL, *model = NULL;
    int r, rc = GT_CLI_FAIL;
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        cache_usage(stdout);
        return GT_CLI_OK;
    }
    if (argc < 2 || strcmp(argv[1], "purge") != 0)
        return gt_cli_usage_error("cache", "expected the subcommand purge");
    argc--;
    argv++;
    while ((r = getopt_long(argc, argv, ":c:t:m:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 't': tenant = optarg; break;
        case 'm': model = optarg; break;
        case 'h': cache_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("cache purge", argv, r);
        }
    }
    if (optind < argc)
        return gt_cli_usage_error("cache purge", "unexpected argument '%s'", argv[optind]);
    if (!tenant || !*tenant)
        return gt_cli_usage_error("cache purge", "--tenant is required");
    PGconn *conn = gt_cli_billing_db("cache", config);
    if (!conn)
        return GT_CLI_FAIL;
    const char *params[] = {tenant, model};
    PGresult *res = gt_cli_sql(conn, "cache", sql_purge, 2, params);
    if (res) {
        printf("purged %s entr%s (%s bytes) of tenant %s%s%s\n", PQgetvalue(res, 0, 0),
               strcmp(PQgetvalue(res, 0, 0), "1") == 0 ? "y" : "ies", PQgetvalue(res, 0, 1), tenant,
               model ? ", model " : "", model ? model : "");
        rc = GT_CLI_OK;
    }
    PQclear(res);
    PQfinish(conn);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
