/* migrate.c - `gantry migrate`: apply the numbered SQL migrations not yet applied. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "pg.h"

#ifndef GT_MIGRATIONS_DIR
#define GT_MIGRATIONS_DIR "migrations"
#endif

static void migrate_usage(FILE *f)
{
    fprintf(f, "usage: gantry migrate [--config FILE] [--dir DIR]\n"
               "\n"
               "Applies every DIR/NNN_name.sql not yet recorded in gantry_schema_migrations,\n"
               "each in its own transaction, in order. Safe to run twice or concurrently.\n"
               "\n"
               "  -c, --config FILE  configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -d, --dir DIR      migrations directory (default $GANTRY_MIGRATIONS_DIR,\n"
               "                     else " GT_MIGRATIONS_DIR ")\n"
               "  -h, --help         this help\n");
}

int gt_cli_migrate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *dir = NULL;
    gt_config_t *cfg = NULL;
    PGconn *conn = NULL;
    char err[1024] = "";
    int r, rc = GT_CLI_FAIL;

    while ((r = getopt_long(argc, argv, ":c:d:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'd': dir = optarg; break;
        case 'h': migrate_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("migrate", argv, r);
        }
    }
    if (optind < argc)
        return gt_cli_usage_error("migrate", "unexpected argument '%s'", argv[optind]);
    if (!dir)
        dir = getenv("GANTRY_MIGRATIONS_DIR");
    if (!dir || !*dir)
        dir = GT_MIGRATIONS_DIR;

    if (!(cfg = gt_cli_load_config(config)))
        goto out;
    if (!(conn = gt_pg_connect_sync(cfg->pg_conninfo, err, sizeof(err)))) {
        fprintf(stderr, "gantry migrate: %s\n", err);
        goto out;
    }
    int n = gt_pg_migrate(conn, dir, err, sizeof(err));
    if (n < 0) {
        fprintf(stderr, "gantry migrate: %s\n", err);
        goto out;
    }
    printf("applied %d migration(s)\n", n);
    rc = GT_CLI_OK;
out:
    PQfinish(conn);
    gt_config_free(cfg);
    return rc;
}
