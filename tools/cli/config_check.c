/* config_check.c - `gantry config check`: validate a gantry.json with the loader every
 * process uses, print every problem with its key path, or a summary of what it declares. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Large enough for every problem of a badly broken file: the loader stops
 * writing (but keeps counting) when the buffer is full. */
#define CHECK_ERR_LEN (256 * 1024)

static void check_usage(FILE *f)
{
    fprintf(f, "usage: gantry config check [--config FILE] [--quiet]\n"
               "\n"
               "Loads FILE exactly as gantry-dispatcher and gantry-worker do: expands ${ENV},\n"
               "reads *_file secrets, refuses unknown keys, checks types, ranges and\n"
               "references. Prints every problem as `FILE: key.path: reason` on stderr and\n"
               "exits 1; else prints what the file declares and exits 0. Secrets are never\n"
               "printed.\n"
               "\n"
               "  -c, --config FILE  configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -q, --quiet        print nothing on success\n"
               "  -h, --help         this help\n");
}

static void config_usage(FILE *f)
{
    fprintf(f, "usage: gantry config check [--config FILE]\n"
               "\n"
               "Subcommands:\n"
               "  check   validate a configuration file (gantry config check --help)\n");
}

/* Prints a list of names as "a, b, c" ("-" when empty). */
static void print_names(const char *label, size_t n,
                        const char *(*name)(const gt_config_t *, size_t), const gt_config_t *cfg)
{
    printf("  %-10s %zu", label, n);
    for (size_t i = 0; i < n; i++)
        printf("%s%s", i ? ", " : ": ", name(cfg, i));
    putchar('\n');
}

static const char *pool_name(const gt_config_t *c, size_t i)
{
    return c->pools[i].name;
}
static const char *provider_name(const gt_config_t *c, size_t i)
{
    return c->providers[i].name;
}
static const char *model_name(const gt_config_t *c, size_t i)
{
    return c->models[i].name;
}
static const char *lane_name(const gt_config_t *c, size_t i)
{
    return c->lanes[i];
}
static const char *tenant_name(const gt_config_t *c, size_t i)
{
    return c->tenants[i].id;
}

static void print_summary(const char *path, const gt_config_t *cfg)
{
    printf("%s: ok\n", path);
    /* bootstrap_servers holds no secret; the PostgreSQL conninfo may. */
    printf("  %-10s %s\n", "kafka", cfg->bootstrap_servers);
    printf("  %-10s %s\n", "postgres", cfg->pg_conninfo ? "configured" : "none");
    print_names("pools", cfg->n_pools, pool_name, cfg);
    print_names("providers", cfg->n_providers, provider_name, cfg);
    print_names("models", cfg->n_models, model_name, cfg);
    print_names("lanes", cfg->n_lanes, lane_name, cfg);
    print_names("tenants", cfg->n_tenants, tenant_name, cfg);
    printf("  %-10s %zu rule(s), default %s\n", "routing", cfg->n_routes,
           cfg->default_model ? cfg->default_model : "none (reject)");
    printf("  %-10s requests=%s tasks=%s<lane> results=%s dlq=%s\n", "topics", cfg->topics.requests,
           cfg->topics.task_prefix, cfg->topics.results, cfg->topics.dlq);
}

static int check(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG;
    int quiet = 0, r;

    while ((r = getopt_long(argc, argv, ":c:qh", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'q': quiet = 1; break;
        case 'h': check_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("config check", argv, r);
        }
    }
    if (optind < argc)
        return gt_cli_usage_error("config check", "unexpected argument '%s'", argv[optind]);

    char *err = calloc(1, CHECK_ERR_LEN);
    if (!err) {
        fprintf(stderr, "gantry config check: out of memory\n");
        return GT_CLI_FAIL;
    }
    gt_config_t *cfg = gt_config_load(config, err, CHECK_ERR_LEN);
    if (!cfg) {
        int n = 0;
        size_t plen = strlen(config);
        for (char *line = err, *next; *line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            else
                next = line + strlen(line);
            /* "cannot open" lines already name the file. */
            if (strncmp(line, config, plen) == 0 && line[plen] == ':')
                fprintf(stderr, "%s\n", line);
            else
                fprintf(stderr, "%s: %s\n", config, line);
            n++;
        }
        fprintf(stderr, "%s: %d problem(s)\n", config, n ? n : 1);
        free(err);
        return GT_CLI_FAIL;
    }
    free(err);
    if (!quiet)
        print_summary(config, cfg);
    gt_config_free(cfg);
    return fflush(stdout) == 0 ? GT_CLI_OK : GT_CLI_FAIL;
}

int gt_cli_config(int argc, char **argv)
{
    if (argc < 2)
        return gt_cli_usage_error("config", "missing subcommand (check)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        config_usage(stdout);
        return GT_CLI_OK;
    }
    if (strcmp(argv[1], "check") == 0) {
        optind = 1;
        return check(argc - 1, argv + 1);
    }
    return gt_cli_usage_error("config", "unknown subcommand '%s'", argv[1]);
}
