/* main.c - gantry CLI entry point: subcommand dispatch, --help and shared helpers. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cli.h"
#include "dispatcher_config.h"
#include "log.h"
#include "worker_config.h"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command_t;

static const command_t commands[] = {
    {"migrate", gt_cli_migrate, "apply database migrations not yet applied"},
    {"submit", gt_cli_submit, "publish inference requests to the requests topic"},
    {"cancel", gt_cli_cancel, "cancel a request's job (control topic)"},
    {"results", gt_cli_results, "print results from the results topic"},
    {"status", gt_cli_status, "show a job and its tasks from PostgreSQL"},
    {"usage", gt_cli_usage, "a tenant's usage and cost in a period"},
    {"prices", gt_cli_prices, "load or list the price book"},
    {"invoice", gt_cli_invoice, "issue, show or export a period's invoices"},
    {"reconcile", gt_cli_reconcile, "compare a provider's invoice with Gantry's usage"},
    {"config", gt_cli_config, "check a configuration file (config check)"},
    {"allocations", gt_cli_allocations, "list outstanding HostedAI allocations"},
    {"cache", gt_cli_cache, "purge a tenant's response cache entries (cache purge)"},
    {"dlq", gt_cli_dlq, "list dead letters, replay chosen ones (dlq list|replay)"},
    {"keys", gt_cli_keys, "create, revoke or list gantry-api keys (keys create --tenant T)"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: gantry <command> [options]\n"
               "\n"
               "Commands:\n");
    for (const command_t *c = commands; c->name; c++)
        fprintf(f, "  %-12s %s\n", c->name, c->summary);
    fprintf(f, "\n"
               "Every command takes --config FILE (default ./" GT_CLI_DEFAULT_CONFIG ").\n"
               "Run `gantry <command> --help` for its options.\n"
               "Exit status: 0 success, 1 failure, 2 bad usage.\n");
}

int gt_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "gantry%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see gantry%s%s --help)\n", cmd ? " " : "", cmd ? cmd : "");
    return GT_CLI_USAGE;
}

int gt_cli_bad_option(const char *cmd, char **argv, int r)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "?";
    if (r == ':')
        return gt_cli_usage_error(cmd, "option %s needs a value", arg);
    if (optopt)
        return gt_cli_usage_error(cmd, "unknown option -%c", optopt);
    return gt_cli_usage_error(cmd, "unknown option %s", arg);
}

gt_config_t *gt_cli_load_config(const char *path)
{
    char err[4096] = "";
    gt_config_t *cfg = gt_config_load(path, err, sizeof(err));
    if (!cfg) {
        /* One problem per line, each naming the file once. */
        size_t plen = strlen(path);
        for (char *line = err, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            if (strncmp(line, path, plen) == 0 && line[plen] == ':')
                fprintf(stderr, "gantry: %s\n", line);
            else
                fprintf(stderr, "gantry: %s: %s\n", path, line);
        }
        if (!err[0])
            fprintf(stderr, "gantry: %s: invalid configuration\n", path);
    }
    return cfg;
}

rd_kafka_conf_t *gt_cli_kafka_conf(const gt_config_t *cfg, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *key;
    json_t *val;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->bootstrap_servers, err, errlen) !=
        RD_KAFKA_CONF_OK)
        goto fail;
    json_object_foreach (cfg->kafka_props, key, val) {
        char num[64];
        const char *s = NULL;
        if (json_is_string(val))
            s = json_string_value(val);
        else if (json_is_integer(val))
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(val)), s = num;
        else if (json_is_real(val))
            snprintf(num, sizeof(num), "%g", json_real_value(val)), s = num;
        else if (json_is_boolean(val))
            s = json_is_true(val) ? "true" : "false";
        if (!s) {
            snprintf(err, errlen, "kafka.properties.%s: must be a string", key);
            goto fail;
        }
        char why[256];
        if (rd_kafka_conf_set(conf, key, s, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "kafka.properties.%s: %s", key, why);
            goto fail;
        }
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int gt_cli_parse_ms(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    /* A closed stdout (gantry results | head) must end the process quietly
     * through write errors, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    gt_log_init("gantry", GT_LOG_WARN);
    /* The CLI reads (and `config check` validates) every part's sections. */
    gt_dispatcher_config_register();
    gt_worker_config_register();
    gt_api_config_register();
    const char *lvl = getenv("GANTRY_LOG_LEVEL");
    if (lvl && gt_log_parse_level(lvl) >= 0)
        gt_log_set_level((gt_log_level_t)gt_log_parse_level(lvl));

    if (argc < 2)
        return gt_cli_usage_error(NULL, "missing command");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        if (strcmp(cmd, "help") == 0 && argc > 2) {
            /* gantry help CMD == gantry CMD --help */
            for (const command_t *c = commands; c->name; c++) {
                if (strcmp(c->name, argv[2]) == 0) {
                    char *hargv[] = {argv[2], "--help", NULL};
                    return c->fn(2, hargv);
                }
            }
            return gt_cli_usage_error(NULL, "unknown command '%s'", argv[2]);
        }
        usage(stdout);
        return GT_CLI_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("gantry 0.1.0\n");
        return GT_CLI_OK;
    }
    for (const command_t *c = commands; c->name; c++) {
        if (strcmp(c->name, cmd) == 0) {
            optind = 1;
            opterr = 0;
            return c->fn(argc - 1, argv + 1);
        }
    }
    if (cmd[0] == '-')
        return gt_cli_usage_error(NULL, "unknown option '%s' before the command", cmd);
    return gt_cli_usage_error(NULL, "unknown command '%s'", cmd);
}
