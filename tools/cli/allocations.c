/* allocations.c - `gantry allocations`: list the allocations every HostedAI pool holds now
 * (GET /v1/allocations) with their holder, task, model and age: the leak detector's view. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cli.h"
#include "http.h"
#include "json_text.h"

/* One pool's listing, filled by its response callback. */
typedef struct listing {
    const gt_pool_t *pool;
    json_t *allocs; /* the "allocations" array, owned; NULL on failure */
    char error[256];
} listing_t;

static void allocations_usage(FILE *f)
{
    fprintf(f, "usage: gantry allocations [--config FILE] [--pool NAME] [--min-age-ms N] [--json]\n"
               "                          [--timeout-ms N]\n"
               "\n"
               "Lists the allocations HostedAI holds now, from every configured pool\n"
               "(GET /v1/allocations, all pools at once): pool, allocation, holder (the\n"
               "worker that allocated it), task, model and age, oldest first. An allocation\n"
               "older than reaper.lease_ttl_ms whose holder no longer heartbeats is a leak\n"
               "that the reaper releases (docs/operations.md). Prints a total per pool last.\n"
               "Exits 1 when a pool cannot be listed (the others are still printed).\n"
               "\n"
               "  -c, --config FILE   configuration (default ./" GT_CLI_DEFAULT_CONFIG ")\n"
               "  -p, --pool NAME     only this pool\n"
               "  -a, --min-age-ms N  only allocations at least N ms old\n"
               "  -j, --json          one JSON object per allocation (with \"pool\")\n"
               "  -T, --timeout-ms N  per pool request (default 10000)\n"
               "  -h, --help          this help\n");
}

static void on_listed(const gt_http_response_t *resp, void *arg)
{
    listing_t *l = arg;
    if (resp->status != 200) {
        if (resp->status)
            snprintf(l->error, sizeof(l->error), "HTTP %ld", resp->status);
        else
            snprintf(l->error, sizeof(l->error), "%s", resp->error ? resp->error : "no response");
        return;
    }
    json_t *doc = gt_json_parse(resp->body, resp->body_len, 0, NULL);
    json_t *list = json_object_get(doc, "allocations");
    if (json_is_array(list))
        l->allocs = json_incref(list);
    else
        snprintf(l->error, sizeof(l->error), "response has no \"allocations\" array");
    json_decref(doc);
}

static json_int_t age_of(json_t *a)
{
    return json_integer_value(json_object_get(a, "age_ms"));
}

static int older_first(const void *x, const void *y)
{
    json_int_t ax = age_of(*(json_t *const *)x), ay = age_of(*(json_t *const *)y);
    return ax < ay ? 1 : ax > ay ? -1 : 0;
}

static const char *label(json_t *a, const char *key)
{
    const char *s = json_string_value(json_object_get(json_object_get(a, "labels"), key));
    return s ? s : "-";
}

static void format_age(json_int_t ms, char *buf, size_t len)
{
    if (ms < 10000)
        snprintf(buf, len, "%lldms", (long long)ms);
    else if (ms < 600000)
        snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
    else if (ms < 36000000)
        snprintf(buf, len, "%.1fm", (double)ms / 60000.0);
    else
        snprintf(buf, len, "%.1fh", (double)ms / 3600000.0);
}

/* Prints one pool's allocations of at least min_age ms, oldest first.
 * Returns how many were printed. */
static size_t print_pool(const listing_t *l, long long min_age, int as_json)
{
    size_t n = json_array_size(l->allocs), shown = 0;
    json_t **v = calloc(n + 1, sizeof(*v));
    if (!v)
        return 0;
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(l->allocs, i);
    qsort(v, n, sizeof(*v), older_first);
    for (size_t i = 0; i < n; i++) {
        json_t *a = v[i];
        if (age_of(a) < min_age)
            continue;
        shown++;
        if (as_json) {
            json_t *o = json_pack("{s:s, s:O, s:s, s:s, s:O, s:I, s:O}", "pool", l->pool->name,
                                  "allocation_id", json_object_get(a, "allocation_id"), "holder",
                                  label(a, "holder"), "task_id", label(a, "task_id"), "model",
                                  json_object_get(a, "model"), "age_ms", age_of(a), "created_at",
                                  json_object_get(a, "created_at"));
            char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
            if (s)
                puts(s);
            free(s);
            json_decref(o);
            continue;
        }
        char age[32];
        format_age(age_of(a), age, sizeof(age));
        const char *id = json_string_value(json_object_get(a, "allocation_id"));
        const char *model = json_string_value(json_object_get(a, "model"));
        printf("%-12s %-36s %-28s %-40s %-16s %8s\n", l->pool->name, id ? id : "-",
               label(a, "holder"), label(a, "task_id"), model ? model : "-", age);
    }
    free(v);
    return shown;
}

int gt_cli_allocations(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"pool", required_argument, NULL, 'p'},
        {"min-age-ms", required_argument, NULL, 'a'},
        {"json", no_argument, NULL, 'j'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = GT_CLI_DEFAULT_CONFIG, *only_pool = NULL;
    long long min_age = 0, timeout_ms = 10000;
    int as_json = 0, r, rc = GT_CLI_FAIL;
    gt_config_t *cfg = NULL;
    listing_t *ls = NULL;
    gt_http_t *http = NULL;
    uv_loop_t loop;
    int loop_ok = 0;

    while ((r = getopt_long(argc, argv, ":c:p:a:jT:h", opts, NULL)) != -1) {
        switch (r) {
        case 'c': config = optarg; break;
        case 'p': only_pool = optarg; break;
        case 'a':
            if (gt_cli_parse_ms(optarg, &min_age) != 0)
                return gt_cli_usage_error("allocations", "--min-age-ms: not a number of ms: '%s'",
                                          optarg);
            break;
        case 'j': as_json = 1; break;
        case 'T':
            if (gt_cli_parse_ms(optarg, &timeout_ms) != 0 || timeout_ms == 0)
                return gt_cli_usage_error("allocations", "--timeout-ms: not a number of ms: '%s'",
                                          optarg);
            break;
        case 'h': allocations_usage(stdout); return GT_CLI_OK;
        default: return gt_cli_bad_option("allocations", argv, r);
        }
    }
    if (optind < argc)
        return gt_cli_usage_error("allocations", "unexpected argument '%s'", argv[optind]);

    if (!(cfg = gt_cli_load_config(config)))
        goto out;
    if (only_pool && !gt_config_pool(cfg, only_pool)) {
        fprintf(stderr, "gantry allocations: pool \"%s\" is not in %s\n", only_pool, config);
        goto out;
    }
    if (cfg->n_pools == 0) {
        fprintf(stderr, "gantry allocations: %s declares no pools\n", config);
        rc = GT_CLI_OK;
        goto out;
    }
    if (!(ls = calloc(cfg->n_pools, sizeof(*ls))) || uv_loop_init(&loop) != 0) {
        fprintf(stderr, "gantry allocations: out of memory\n");
        goto out;
    }
    loop_ok = 1;
    if (!(http = gt_http_new(&loop))) {
        fprintf(stderr, "gantry allocations: cannot start the HTTP client\n");
        goto out;
    }
    for (size_t i = 0; i < cfg->n_pools; i++) {
        const gt_pool_t *pool = &cfg->pools[i];
        ls[i].pool = pool;
        if (only_pool && strcmp(pool->name, only_pool) != 0)
            continue;
        char url[1024], auth[1024];
        snprintf(url, sizeof(url), "%s/v1/allocations", pool->endpoint);
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", pool->api_key);
        const char *hdrs[] = {auth, "Accept: application/json", NULL};
        if (gt_http_request(http, "GET", url, hdrs, NULL, 0, timeout_ms, on_listed, &ls[i]) != 0)
            snprintf(ls[i].error, sizeof(ls[i].error), "cannot start the request");
        memset(auth, 0, sizeof(auth));
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* until every listing has answered or timed out */

    if (!as_json)
        printf("%-12s %-36s %-28s %-40s %-16s %8s\n", "POOL", "ALLOCATION", "HOLDER", "TASK",
               "MODEL", "AGE");
    size_t total = 0;
    int failed = 0;
    for (size_t i = 0; i < cfg->n_pools; i++)
        if (ls[i].allocs)
            total += print_pool(&ls[i], min_age, as_json);
    for (size_t i = 0; i < cfg->n_pools; i++) {
        if (only_pool && strcmp(ls[i].pool->name, only_pool) != 0)
            continue;
        if (!ls[i].allocs) {
            failed++;
            fprintf(stderr, "gantry allocations: pool %s (%s): %s\n", ls[i].pool->name,
                    ls[i].pool->endpoint, ls[i].error[0] ? ls[i].error : "no answer");
        } else if (!as_json) {
            printf("# pool %s: %zu outstanding\n", ls[i].pool->name, json_array_size(ls[i].allocs));
        }
    }
    if (!as_json)
        printf("# total: %zu shown\n", total);
    rc = failed ? GT_CLI_FAIL : GT_CLI_OK;
out:
    if (http) {
        gt_http_free(http);
        uv_run(&loop, UV_RUN_DEFAULT); /* let the handles close */
    }
    if (loop_ok)
        uv_loop_close(&loop);
    for (size_t i = 0; ls && i < cfg->n_pools; i++)
        json_decref(ls[i].allocs);
    free(ls);
    gt_config_free(cfg);
    if (fflush(stdout) != 0 && rc == GT_CLI_OK)
        rc = GT_CLI_FAIL;
    return rc;
}
