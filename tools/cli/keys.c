/* keys.c - `gantry keys create|revoke|list`: gantry-api keys per tenant. The
 * secret is printed once at create; PostgreSQL keeps only its SHA-256. */
#include <getopt.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "digest.h"

static void keys_usage(FILE *f)
{
    fprintf(f, "usage: gantry keys create --tenant T [--config FILE]\n"
               "       gantry keys revoke KEY_ID [--config FILE]\n"
               "       gantry keys list [--tenant T] [--config FILE]\n"
               "\n"
               "create prints \"KEY_ID SECRET\" on one line: the secret is shown only\n"
               "now (stored as its SHA-256). Clients send it as Authorization: Bearer\n"
               "SECRET (OpenAI SDKs) or x-api-key: SECRET (Anthropic SDKs) to gantry-api.\n"
               "revoke: the key answers 401 from then on. Exit 1 on an unknown key.\n"
               "\n"
               "  -c, --config FILE  configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -t, --tenant T     the tenant the key acts for\n"
               "  -h, --help         this help\n");
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

int gt_cli_keys(int argc, char **argv)
{
    const char *config = GT_CLI_DEFAULT_CONFIG, *tenant = NULL;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"tenant", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int ch, rc = GT_CLI_FAIL;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":c:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 't': tenant = optarg; break;
        case 'h': keys_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("keys", argv, ch);
        }
    }
    const char *verb = optind < argc ? argv[optind] : NULL;
    if (!verb)
        return gt_cli_usage_error("keys", "create, revoke or list expected");
    int create = !strcmp(verb, "create"), revoke = !strcmp(verb, "revoke"),
        list = !strcmp(verb, "list");
    if (!create && !revoke && !list)
        return gt_cli_usage_error("keys", "unknown action %s", verb);
    if (create && (!tenant || !*tenant || optind + 1 != argc))
        return gt_cli_usage_error("keys", "create needs --tenant T");
    if (revoke && optind + 2 != argc)
        return gt_cli_usage_error("keys", "revoke needs one KEY_ID");
    PGconn *conn = gt_cli_billing_db("keys", config);
    if (!conn)
        return GT_CLI_FAIL;
    PGresult *res = NULL;
    if (create) {
        unsigned char b[24], idb[8];
        char secret[3 + 49], id[4 + 17], digest[65];
        if (RAND_bytes(b, sizeof(b)) != 1 || RAND_bytes(idb, sizeof(idb)) != 1) {
            fprintf(stderr, "gantry keys: no randomness\n");
            goto out;
        }
        memcpy(secret, "gk-", 3);
        hex(b, sizeof(b), secret + 3);
        memcpy(id, "key_", 4);
        hex(idb, sizeof(idb), id + 4);
        gt_sha256_hex(secret, strlen(secret), digest);
        const char *p[3] = {id, tenant, digest};
        res = gt_cli_sql(conn, "keys",
                         "INSERT INTO api_keys (key_id, tenant_id, key_sha256) VALUES ($1, $2, $3)",
                         3, p);
        if (!res)
            goto out;
        printf("%s %s\n", id, secret);
        rc = GT_CLI_OK;
    } else if (revoke) {
        const char *p[1] = {argv[optind + 1]};
        res = gt_cli_sql(conn, "keys",
                         "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
                         " WHERE key_id = $1",
                         1, p);
        if (!res)
            goto out;
        if (strcmp(PQcmdTuples(res), "1") != 0) {
            fprintf(stderr, "gantry keys: no key %s\n", argv[optind + 1]);
            goto out;
        }
        printf("revoked %s\n", argv[optind + 1]);
        rc = GT_CLI_OK;
    } else {
        const char *p[1] = {tenant};
        res = gt_cli_sql(conn, "keys",
                         "SELECT key_id, tenant_id, created_at, coalesce(revoked_at::text, '')"
                         " AS revoked_at FROM api_keys WHERE $1::text IS NULL OR tenant_id = $1"
                         " ORDER BY created_at",
                         1, p);
        if (!res)
            goto out;
        gt_cli_print_table(res);
        rc = GT_CLI_OK;
    }
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}
