/* cli.h - the gantry command-line tool: subcommands and the helpers they share. */
#ifndef GT_CLI_H
#define GT_CLI_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "config.h"

/* Exit codes: 0 success, 1 failure (bad configuration, unreachable service,
 * a request that failed), 2 bad usage. */
enum { GT_CLI_OK = 0, GT_CLI_FAIL = 1, GT_CLI_USAGE = 2 };

#define GT_CLI_DEFAULT_CONFIG "gantry.json"

/* Each subcommand gets argv with argv[0] = its own name and returns the
 * process exit code. */
int gt_cli_migrate(int argc, char **argv);
int gt_cli_submit(int argc, char **argv);
int gt_cli_cancel(int argc, char **argv); /* cancel.c */
int gt_cli_results(int argc, char **argv);
int gt_cli_status(int argc, char **argv);
int gt_cli_config(int argc, char **argv);
int gt_cli_allocations(int argc, char **argv);
int gt_cli_dlq(int argc, char **argv);
int gt_cli_prices(int argc, char **argv);    /* prices.c */
int gt_cli_invoice(int argc, char **argv);   /* invoice.c */
int gt_cli_reconcile(int argc, char **argv); /* reconcile.c */
int gt_cli_usage(int argc, char **argv);     /* usage.c */
int gt_cli_keys(int argc, char **argv);      /* keys.c */
int gt_cli_cache(int argc, char **argv);     /* cache.c: cache purge */

/* Prints "gantry CMD: <message> (see gantry CMD --help)" as one line on
 * stderr and returns GT_CLI_USAGE. */
int gt_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports the option getopt_long rejected as a usage error; r is what
 * getopt_long returned (':' for a missing value: optstrings start with ':'). */
int gt_cli_bad_option(const char *cmd, char **argv, int r);

/* Loads path; on failure prints the loader's message on stderr and returns
 * NULL. The caller frees the result with gt_config_free. */
gt_config_t *gt_cli_load_config(const char *path);

/* A librdkafka configuration for cfg->bootstrap_servers plus cfg->kafka_props
 * (applied last, so they override). Returns NULL with a reason in err. */
rd_kafka_conf_t *gt_cli_kafka_conf(const gt_config_t *cfg, char *err, size_t errlen);

/* Billing subcommands' helpers (billing.c). */
/* Loads config and connects to its PostgreSQL; NULL with a message on stderr. */
PGconn *gt_cli_billing_db(const char *cmd, const char *config);
/* Runs sql with text params; NULL with the server's message on stderr. */
PGresult *gt_cli_sql(PGconn *conn, const char *cmd, const char *sql, int n,
                     const char *const *params);
/* "YYYY-MM" -> "YYYY-MM-01" in out; returns 0 or -1. */
int gt_cli_parse_period(const char *s, char out[11]);
/* Prints res as a table: upper-case column names, numbers right-aligned. */
void gt_cli_print_table(const PGresult *res);

/* Parses a non-negative decimal integer; returns 0 or -1. */
int gt_cli_parse_ms(const char *s, long long *out);

#endif
