/* config.c - gantry.json: load, expand ${ENV} and *_file secrets, validate the
 * shared sections and run the parts' section loaders (config_section.h). Every
 * problem is reported with its key path, all at once: a file is fixed in one pass. */
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_section.h"

struct gt_cfg_ctx {
    char *err;
    size_t errlen, used;
    int problems;
    const char *base_dir;
};

/* The parts' sections (gt_config_add_section), loaded after the shared ones. */
static const gt_config_section_t *sections[8];
static size_t n_sections;

int gt_config_add_section(const gt_config_section_t *s)
{
    for (size_t i = 0; i < n_sections; i++)
        if (sections[i] == s)
            return 0;
    if (n_sections == sizeof(sections) / sizeof(sections[0]))
        return -ENOSPC;
    sections[n_sections++] = s;
    return 0;
}

void gt_cfg_problem(gt_cfg_ctx_t *c, const char *path, const char *fmt, ...)
{
    c->problems++;
    if (!c->err || c->used + 2 >= c->errlen)
        return;
    int n = snprintf(c->err + c->used, c->errlen - c->used, "%s%s: ", c->used ? "\n" : "",
                     path && *path ? path : "(root)");
    if (n > 0)
        c->used += (size_t)n < c->errlen - c->used ? (size_t)n : c->errlen - c->used - 1;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(c->err + c->used, c->errlen - c->used, fmt, ap);
    va_end(ap);
    if (n > 0)
        c->used += (size_t)n < c->errlen - c->used ? (size_t)n : c->errlen - c->used - 1;
}

char *gt_cfg_join(const char *path, const char *key)
{
    size_t n = strlen(path) + strlen(key) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s%s", path, *path ? "." : "", key);
    return s;
}

/* Expands ${NAME} in s. Returns a new string, or NULL (problem reported). */
static char *expand_env(gt_cfg_ctx_t *c, const char *path, const char *s)
{
    size_t cap = strlen(s) + 1, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = s; *p;) {
        const char *val = NULL;
        size_t vlen = 1;
        char name[256];
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            size_t n = end ? (size_t)(end - p - 2) : 0;
            if (!end || n == 0 || n >= sizeof(name)) {
                gt_cfg_problem(c, path, "malformed ${...} reference");
                free(out);
                return NULL;
            }
            memcpy(name, p + 2, n);
            name[n] = 0;
            val = getenv(name);
            if (!val) {
                gt_cfg_problem(c, path, "environment variable %s is not set", name);
                free(out);
                return NULL;
            }
            vlen = strlen(val);
            p = end + 1;
        } else {
            val = p++;
        }
        if (len + vlen + 1 > cap) {
            cap = (len + vlen + 1) * 2;
            char *grown = realloc(out, cap);
            if (!grown) {
                free(out);
                return NULL;
            }
            out = grown;
        }
        memcpy(out + len, val, vlen);
        len += vlen;
    }
    out[len] = 0;
    return out;
}

static char *read_secret_file(gt_cfg_ctx_t *c, const char *path, const char *file)
{
    char full[4096];
    if (file[0] == '/' || !c->base_dir)
        snprintf(full, sizeof(full), "%s", file);
    else
        snprintf(full, sizeof(full), "%s/%s", c->base_dir, file);
    FILE *f = fopen(full, "rb");
    if (!f) {
        gt_cfg_problem(c, path, "cannot read %s: %s", full, strerror(errno));
        return NULL;
    }
    char *buf = malloc(65537);
    size_t n = buf ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = 0;
    return buf;
}

/* Walks the document: expands ${ENV} in every string and replaces each
 * "<name>_file": path by "<name>": contents. */
static void resolve(gt_cfg_ctx_t *c, json_t *node, const char *path)
{
    if (json_is_object(node)) {
        const char *key;
        json_t *val;
        json_t *secrets = json_object(); /* name -> contents, applied after the walk */
        json_t *file_keys = json_array();
        json_object_foreach (node, key, val) {
            char *sub = gt_cfg_join(path, key);
            if (!sub)
                break;
            if (json_is_string(val)) {
                char *s = expand_env(c, sub, json_string_value(val));
                size_t kl = strlen(key);
                if (s && kl > 5 && strcmp(key + kl - 5, "_file") == 0) {
                    char *secret = read_secret_file(c, sub, s);
                    if (secret) {
                        char name[256];
                        snprintf(name, sizeof(name), "%.*s", (int)(kl - 5), key);
                        json_object_set_new(secrets, name, json_string(secret));
                        free(secret);
                    }
                    json_array_append_new(file_keys, json_string(key));
                } else if (s) {
                    json_object_set_new(node, key, json_string(s));
                }
                free(s);
            } else {
                resolve(c, val, sub);
            }
            free(sub);
        }
        size_t i;
        json_array_foreach (file_keys, i, val)
            json_object_del(node, json_string_value(val));
        json_object_update(node, secrets);
        json_decref(file_keys);
        json_decref(secrets);
    } else if (json_is_array(node)) {
        size_t i;
        json_t *val;
        json_array_foreach (node, i, val) {
            char sub[512];
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            if (json_is_string(val)) {
                char *s = expand_env(c, sub, json_string_value(val));
                if (s)
                    json_array_set_new(node, i, json_string(s));
                free(s);
            } else {
                resolve(c, val, sub);
            }
        }
    }
}

/* Reports keys of obj not in allowed (NULL-terminated): typos must not pass silently. */
void gt_cfg_check_keys(gt_cfg_ctx_t *c, json_t *obj, const char *path, const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach (obj, key, val) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok) {
            char *sub = gt_cfg_join(path, key);
            gt_cfg_problem(c, sub, "unknown key");
            free(sub);
        }
    }
}

json_t *gt_cfg_obj(gt_cfg_ctx_t *c, json_t *parent, const char *key, const char *path, int required)
{
    json_t *v = json_object_get(parent, key);
    char *sub = gt_cfg_join(path, key);
    if (!v && required)
        gt_cfg_problem(c, sub, "is required");
    else if (v && !json_is_object(v)) {
        gt_cfg_problem(c, sub, "must be an object");
        v = NULL;
    }
    free(sub);
    return v;
}

char *gt_cfg_str(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, const char *def,
                 int required)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v) {
        if (required) {
            char *sub = gt_cfg_join(path, key);
            gt_cfg_problem(c, sub, "is required");
            free(sub);
        }
        return def ? strdup(def) : NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        char *sub = gt_cfg_join(path, key);
        gt_cfg_problem(c, sub, "must be a non-empty string");
        free(sub);
        return def ? strdup(def) : NULL;
    }
    return strdup(json_string_value(v));
}

int64_t gt_cfg_int(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, int64_t def,
                   int64_t min, int64_t max)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v)
        return def;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char *sub = gt_cfg_join(path, key);
        gt_cfg_problem(c, sub, "must be an integer in [%lld, %lld]", (long long)min,
                       (long long)max);
        free(sub);
        return def;
    }
    return json_integer_value(v);
}

double gt_cfg_num(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, double def,
                  double min, double max)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v)
        return def;
    if (!json_is_number(v) || json_number_value(v) < min || json_number_value(v) > max) {
        char *sub = gt_cfg_join(path, key);
        gt_cfg_problem(c, sub, "must be a number in [%g, %g]", min, max);
        free(sub);
        return def;
    }
    return json_number_value(v);
}

int gt_cfg_bool(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, int def)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v)
        return def;
    if (!json_is_boolean(v)) {
        char *sub = gt_cfg_join(path, key);
        gt_cfg_problem(c, sub, "must be true or false");
        free(sub);
        return def;
    }
    return json_is_true(v);
}

/* A list of strings, or NULL when absent. */
char **gt_cfg_str_list(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, size_t *n)
{
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    *n = 0;
    if (!v)
        return NULL;
    char *sub = gt_cfg_join(path, key);
    char **out = NULL;
    if (!json_is_array(v)) {
        gt_cfg_problem(c, sub, "must be an array of strings");
        goto out;
    }
    out = calloc(json_array_size(v) + 1, sizeof(char *));
    size_t i;
    json_t *e;
    json_array_foreach (v, i, e) {
        if (!json_is_string(e) || json_string_length(e) == 0) {
            gt_cfg_problem(c, sub, "element %zu must be a non-empty string", i);
            continue;
        }
        out[(*n)++] = strdup(json_string_value(e));
    }
out:
    free(sub);
    return out;
}

int gt_config_has_lane(const gt_config_t *cfg, const char *lane)
{
    for (size_t i = 0; i < cfg->n_lanes; i++)
        if (strcmp(cfg->lanes[i], lane) == 0)
            return 1;
    return 0;
}

static void add_lane(gt_config_t *cfg, const char *lane)
{
    if (gt_config_has_lane(cfg, lane))
        return;
    char **grown = realloc(cfg->lanes, (cfg->n_lanes + 2) * sizeof(char *));
    if (!grown)
        return;
    cfg->lanes = grown;
    cfg->lanes[cfg->n_lanes++] = strdup(lane);
    cfg->lanes[cfg->n_lanes] = NULL;
}

static void load_kafka(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const keys[] = {
        "bootstrap_servers", "properties",        "consumer_properties", "producer_properties",
        "revoke_grace_ms",   "message_max_bytes", "static_membership",   NULL};
    json_t *k = gt_cfg_obj(c, cfg->root, "kafka", "", 1);
    if (k)
        gt_cfg_check_keys(c, k, "kafka", keys);
    cfg->bootstrap_servers = gt_cfg_str(c, k, "bootstrap_servers", "kafka", NULL, 1);
    cfg->kafka_revoke_grace_ms = gt_cfg_int(c, k, "revoke_grace_ms", "kafka", 10000, 0, 600000);
    /* librdkafka's own range for message.max.bytes; Kafka's default. */
    cfg->kafka_message_max_bytes =
        gt_cfg_int(c, k, "message_max_bytes", "kafka", 1000000, 1000, 1000000000);
    cfg->kafka_static_membership = gt_cfg_bool(c, k, "static_membership", "kafka", 0);
    json_t **props[] = {&cfg->kafka_props, &cfg->kafka_consumer_props, &cfg->kafka_producer_props};
    const char *names[] = {"properties", "consumer_properties", "producer_properties"};
    for (int i = 0; i < 3; i++) {
        *props[i] = k ? gt_cfg_obj(c, k, names[i], "kafka", 0) : NULL;
        const char *key;
        json_t *v;
        json_object_foreach (*props[i], key, v) {
            if (!json_is_string(v)) {
                char path[512];
                snprintf(path, sizeof(path), "kafka.%s.%s", names[i], key);
                gt_cfg_problem(c, path, "must be a string");
            }
        }
    }

    static const char *const tkeys[] = {"requests", "task_prefix", "task_results",
                                        "results",  "usage",       "dlq",
                                        "events",   "control",     NULL};
    json_t *t = gt_cfg_obj(c, cfg->root, "topics", "", 0);
    if (t)
        gt_cfg_check_keys(c, t, "topics", tkeys);
    cfg->topics.requests = gt_cfg_str(c, t, "requests", "topics", "gantry.requests", 0);
    cfg->topics.task_prefix = gt_cfg_str(c, t, "task_prefix", "topics", "gantry.tasks.", 0);
    cfg->topics.task_results = gt_cfg_str(c, t, "task_results", "topics", "gantry.task-results", 0);
    cfg->topics.results = gt_cfg_str(c, t, "results", "topics", "gantry.results", 0);
    cfg->topics.usage = gt_cfg_str(c, t, "usage", "topics", "gantry.usage", 0);
    cfg->topics.dlq = gt_cfg_str(c, t, "dlq", "topics", "gantry.dlq", 0);
    cfg->topics.events = gt_cfg_str(c, t, "events", "topics", "gantry.events", 0);
    cfg->topics.control = gt_cfg_str(c, t, "control", "topics", "gantry.control", 0);

    static const char *const gkeys[] = {"dispatcher", "worker", "ledger", NULL};
    json_t *g = gt_cfg_obj(c, cfg->root, "groups", "", 0);
    if (g)
        gt_cfg_check_keys(c, g, "groups", gkeys);
    cfg->group_dispatcher = gt_cfg_str(c, g, "dispatcher", "groups", "gantry-dispatcher", 0);
    cfg->group_worker = gt_cfg_str(c, g, "worker", "groups", "gantry-worker", 0);
    cfg->group_ledger = gt_cfg_str(c, g, "ledger", "groups", "gantry-ledger", 0);
}

/* Appends key='value' to a libpq conninfo, quoting as libpq requires. */
static char *conninfo_append(char *conninfo, const char *key, const char *value)
{
    size_t n = strlen(conninfo) + strlen(key) + 2 * strlen(value) + 8;
    char *out = malloc(n);
    if (!out)
        return conninfo;
    size_t pos = (size_t)snprintf(out, n, "%s %s='", conninfo, key);
    for (const char *p = value; *p; p++) {
        if (*p == '\'' || *p == '\\')
            out[pos++] = '\\';
        out[pos++] = *p;
    }
    out[pos++] = '\'';
    out[pos] = 0;
    free(conninfo);
    return out;
}

static void load_postgres(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const keys[] = {"conninfo", "password", NULL};
    json_t *p = gt_cfg_obj(c, cfg->root, "postgres", "", 0);
    if (!p)
        return;
    gt_cfg_check_keys(c, p, "postgres", keys);
    cfg->pg_conninfo = gt_cfg_str(c, p, "conninfo", "postgres", NULL, 1);
    char *password = gt_cfg_str(c, p, "password", "postgres", NULL, 0);
    if (password && cfg->pg_conninfo)
        cfg->pg_conninfo = conninfo_append(cfg->pg_conninfo, "password", password);
    free(password);
}

static void load_pools(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const keys[] = {"endpoint", "api_key", "overcommit", "breaker", NULL};
    static const char *const bkeys[] = {"failures", "recovery_ms", NULL};
    json_t *pools = gt_cfg_obj(c, cfg->root, "pools", "", 0);
    if (!pools)
        return;
    cfg->pools = calloc(json_object_size(pools) + 1, sizeof(gt_pool_t));
    const char *name;
    json_t *p;
    json_object_foreach (pools, name, p) {
        char path[512];
        snprintf(path, sizeof(path), "pools.%s", name);
        if (!json_is_object(p)) {
            gt_cfg_problem(c, path, "must be an object");
            continue;
        }
        gt_cfg_check_keys(c, p, path, keys);
        gt_pool_t *pool = &cfg->pools[cfg->n_pools++];
        pool->name = strdup(name);
        pool->endpoint = gt_cfg_str(c, p, "endpoint", path, NULL, 1);
        pool->api_key = gt_cfg_str(c, p, "api_key", path, NULL, 1);
        pool->overcommit = gt_cfg_bool(c, p, "overcommit", path, 0);
        char sub[600];
        snprintf(sub, sizeof(sub), "%s.breaker", path);
        json_t *b = gt_cfg_obj(c, p, "breaker", path, 0);
        if (b)
            gt_cfg_check_keys(c, b, sub, bkeys);
        pool->breaker_failures = (int)gt_cfg_int(c, b, "failures", sub, 5, 1, 1000000);
        pool->breaker_recovery_ms = gt_cfg_int(c, b, "recovery_ms", sub, 60000, 1, 86400000);
        if (pool->endpoint && strncmp(pool->endpoint, "http://", 7) != 0 &&
            strncmp(pool->endpoint, "https://", 8) != 0)
            gt_cfg_problem(c, path, "endpoint must be an http:// or https:// URL");
        size_t el = pool->endpoint ? strlen(pool->endpoint) : 0;
        if (el && pool->endpoint[el - 1] == '/')
            pool->endpoint[el - 1] = 0; /* paths are appended as "/v1/..." */
    }
}

/* Every runtime but HostedAI's is a provider's; which names exist, and what
 * each needs, the workers check (workers/worker_config.c). */
static int is_provider_runtime(const char *r)
{
    return r && strcmp(r, "hostedai") != 0;
}

static void load_limits(gt_cfg_ctx_t *c, json_t *o, const char *path, gt_provider_limits_t *l)
{
    l->max_in_flight = (int)gt_cfg_int(c, o, "max_in_flight", path, 0, 0, 1000000);
    l->rpm = gt_cfg_int(c, o, "rpm", path, 0, 0, INT64_MAX);
    l->tpm = gt_cfg_int(c, o, "tpm", path, 0, 0, INT64_MAX);
}

/* providers.<name>: runtime, endpoint, credentials and limits. Retry and
 * timeouts need worker.* defaults: workers/worker_config.c loads them. */
static void load_providers(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const keys[] = {"runtime",       "endpoint",      "api_key",
                                       "credentials",   "project",       "location",
                                       "region",        "access_key_id", "secret_access_key",
                                       "session_token", "max_in_flight", "rpm",
                                       "tpm",           "tenants",       "breaker",
                                       "retry",         "timeouts",      NULL};
    static const char *const bkeys[] = {"failures", "recovery_ms", NULL};
    static const char *const lkeys[] = {"max_in_flight", "rpm", "tpm", NULL};
    json_t *provs = gt_cfg_obj(c, cfg->root, "providers", "", 0);
    if (!provs)
        return;
    cfg->providers = calloc(json_object_size(provs) + 1, sizeof(gt_provider_t));
    const char *name;
    json_t *pj;
    json_object_foreach (provs, name, pj) {
        char path[512], sub[600];
        snprintf(path, sizeof(path), "providers.%s", name);
        if (!json_is_object(pj)) {
            gt_cfg_problem(c, path, "must be an object");
            continue;
        }
        gt_cfg_check_keys(c, pj, path, keys);
        gt_provider_t *p = &cfg->providers[cfg->n_providers++];
        p->name = strdup(name);
        p->runtime = gt_cfg_str(c, pj, "runtime", path, NULL, 1);
        p->endpoint = gt_cfg_str(c, pj, "endpoint", path, NULL, 0);
        p->api_key = gt_cfg_str(c, pj, "api_key", path, NULL, 0);
        p->credentials = gt_cfg_str(c, pj, "credentials", path, NULL, 0);
        p->project = gt_cfg_str(c, pj, "project", path, NULL, 0);
        p->location = gt_cfg_str(c, pj, "location", path, NULL, 0);
        p->region = gt_cfg_str(c, pj, "region", path, NULL, 0);
        p->access_key_id = gt_cfg_str(c, pj, "access_key_id", path, NULL, 0);
        p->secret_access_key = gt_cfg_str(c, pj, "secret_access_key", path, NULL, 0);
        p->session_token = gt_cfg_str(c, pj, "session_token", path, NULL, 0);
        load_limits(c, pj, path, &p->limits);
        if (p->endpoint && strncmp(p->endpoint, "http://", 7) != 0 &&
            strncmp(p->endpoint, "https://", 8) != 0)
            gt_cfg_problem(c, path, "endpoint must be an http:// or https:// URL");
        size_t el = p->endpoint ? strlen(p->endpoint) : 0;
        while (el && p->endpoint[el - 1] == '/')
            p->endpoint[--el] = 0;
        snprintf(sub, sizeof(sub), "%s.breaker", path);
        json_t *b = gt_cfg_obj(c, pj, "breaker", path, 0);
        if (b)
            gt_cfg_check_keys(c, b, sub, bkeys);
        p->breaker_failures = (int)gt_cfg_int(c, b, "failures", sub, 5, 1, 1000000);
        p->breaker_recovery_ms = gt_cfg_int(c, b, "recovery_ms", sub, 60000, 1, 86400000);
        json_t *tl = gt_cfg_obj(c, pj, "tenants", path, 0);
        if (tl) {
            p->tenant_limits = calloc(json_object_size(tl) + 1, sizeof(*p->tenant_limits));
            const char *tid;
            json_t *tj;
            json_object_foreach (tl, tid, tj) {
                char tpath[800];
                snprintf(tpath, sizeof(tpath), "%s.tenants.%s", path, tid);
                if (!json_is_object(tj)) {
                    gt_cfg_problem(c, tpath, "must be an object");
                    continue;
                }
                gt_cfg_check_keys(c, tj, tpath, lkeys);
                struct gt_tenant_limits *t = &p->tenant_limits[p->n_tenant_limits++];
                t->tenant = strdup(tid);
                load_limits(c, tj, tpath, &t->limits);
            }
        }
    }
}

/* Every fallback is a declared model other than its own, and following
 * fallbacks never comes back to where it started. */
static void check_fallbacks(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_models; i++) {
        gt_model_t *m = &cfg->models[i];
        char path[512];
        snprintf(path, sizeof(path), "models.%s.fallbacks", m->name);
        for (size_t f = 0; f < m->n_fallbacks; f++)
            if (!gt_config_model(cfg, m->fallbacks[f]))
                gt_cfg_problem(c, path, "model \"%s\" is not declared in models", m->fallbacks[f]);
    }
    /* Depth-first search from each model; colours: 0 new, 1 on the path, 2 done. */
    int *colour = calloc(cfg->n_models + 1, sizeof(int));
    size_t *stack = calloc(cfg->n_models + 1, sizeof(size_t));
    size_t *next = calloc(cfg->n_models + 1, sizeof(size_t));
    if (!colour || !stack || !next)
        goto out;
    for (size_t s = 0; s < cfg->n_models; s++) {
        if (colour[s])
            continue;
        size_t depth = 0;
        stack[depth++] = s;
        colour[s] = 1;
        next[s] = 0;
        while (depth) {
            size_t v = stack[depth - 1];
            gt_model_t *m = &cfg->models[v];
            if (next[v] >= m->n_fallbacks) {
                colour[v] = 2;
                depth--;
                continue;
            }
            const gt_model_t *fm = gt_config_model(cfg, m->fallbacks[next[v]++]);
            if (!fm)
                continue;
            size_t w = (size_t)(fm - cfg->models);
            if (colour[w] == 1) {
                char path[512];
                snprintf(path, sizeof(path), "models.%s.fallbacks", m->name);
                gt_cfg_problem(c, path, "fallback \"%s\" leads back to \"%s\" (a cycle)", fm->name,
                               m->name);
            } else if (colour[w] == 0) {
                colour[w] = 1;
                next[w] = 0;
                stack[depth++] = w;
            }
        }
    }
out:
    free(colour);
    free(stack);
    free(next);
}

static void load_models(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const keys[] = {
        "runtime",        "pool",      "lane",  "requirements", "max_input_chars", "provider",
        "provider_model", "fallbacks", "cache", "deployments",  "strategy",        NULL};
    static const char *const dkeys[] = {"model", "weight", "max_in_flight", "price_micros", NULL};
    static const char *const rkeys[] = {"tflops", "vram_mb", NULL};
    static const char *const ckeys[] = {"ttl_ms", NULL};
    json_t *models = gt_cfg_obj(c, cfg->root, "models", "", 0);
    if (!models)
        return;
    cfg->models = calloc(json_object_size(models) + 1, sizeof(gt_model_t));

    const char *name;
    json_t *m;
    json_object_foreach (models, name, m) {
        char path[512], rpath[600];
        snprintf(path, sizeof(path), "models.%s", name);
        if (!json_is_object(m)) {
            gt_cfg_problem(c, path, "must be an object");
            continue;
        }
        if (strcmp(name, "auto") == 0)
            gt_cfg_problem(c, path, "\"auto\" is reserved for automatic routing");
        gt_cfg_check_keys(c, m, path, keys);
        gt_model_t *model = &cfg->models[cfg->n_models++];
        model->name = strdup(name);
        model->provider = gt_cfg_str(c, m, "provider", path, NULL, 0);
        const gt_provider_t *prov = gt_config_provider(cfg, model->provider);
        /* A model served by a provider takes the provider's runtime by default. */
        model->runtime = gt_cfg_str(c, m, "runtime", path,
                                    prov && prov->runtime ? prov->runtime : "hostedai", 0);
        model->provider_model = gt_cfg_str(c, m, "provider_model", path, name, 0);
        model->fallbacks = gt_cfg_str_list(c, m, "fallbacks", path, &model->n_fallbacks);
        model->pool = gt_cfg_str(c, m, "pool", path, NULL, 0);
        model->lane = gt_cfg_str(c, m, "lane", path, "default", 0);
        model->max_input_chars = gt_cfg_int(c, m, "max_input_chars", path, 0, 0, INT64_MAX);
        snprintf(rpath, sizeof(rpath), "%s.requirements", path);
        json_t *r = gt_cfg_obj(c, m, "requirements", path, 0);
        if (r)
            gt_cfg_check_keys(c, r, rpath, rkeys);
        model->tflops = gt_cfg_num(c, r, "tflops", rpath, 0, 0, 1e9);
        model->vram_mb = gt_cfg_int(c, r, "vram_mb", rpath, 0, 0, INT64_MAX);
        snprintf(rpath, sizeof(rpath), "%s.cache", path);
        json_t *cj = gt_cfg_obj(c, m, "cache", path, 0);
        if (cj) {
            gt_cfg_check_keys(c, cj, rpath, ckeys);
            model->cache_ttl_ms = gt_cfg_int(c, cj, "ttl_ms", rpath, 3600000, 1, 31LL * 86400000);
        }
        if (is_provider_runtime(model->runtime)) {
            if (!model->provider)
                gt_cfg_problem(c, path, "provider is required for runtime %s", model->runtime);
            else if (!prov)
                gt_cfg_problem(c, path, "provider \"%s\" is not declared in providers",
                               model->provider);
            else if (prov->runtime && strcmp(prov->runtime, model->runtime) != 0)
                gt_cfg_problem(c, path, "runtime \"%s\" differs from provider %s's runtime \"%s\"",
                               model->runtime, prov->name, prov->runtime);
        } else if (model->provider) {
            gt_cfg_problem(c, path, "provider is only for provider runtimes, not %s",
                           model->runtime ? model->runtime : "?");
        }
        json_t *deps = json_object_get(m, "deployments");
        model->strategy = gt_cfg_str(c, m, "strategy", path, "weighted", 0);
        if (model->strategy && strcmp(model->strategy, "weighted") != 0 &&
            strcmp(model->strategy, "least_busy") != 0 && strcmp(model->strategy, "latency") != 0 &&
            strcmp(model->strategy, "cost") != 0)
            gt_cfg_problem(c, path,
                           "strategy \"%s\" is not one of weighted, least_busy, latency, cost",
                           model->strategy);
        if (deps && (!json_is_array(deps) || json_array_size(deps) == 0)) {
            gt_cfg_problem(c, path, "deployments must be a non-empty array");
        } else if (deps) {
            model->deployments = calloc(json_array_size(deps), sizeof(*model->deployments));
            size_t di;
            json_t *dj;
            json_array_foreach (deps, di, dj) {
                char dpath[640];
                snprintf(dpath, sizeof(dpath), "%s.deployments[%zu]", path, di);
                if (!json_is_object(dj)) {
                    gt_cfg_problem(c, dpath, "must be an object");
                    continue;
                }
                gt_cfg_check_keys(c, dj, dpath, dkeys);
                struct gt_deployment *dep = &model->deployments[model->n_deployments++];
                dep->model = gt_cfg_str(c, dj, "model", dpath, NULL, 1);
                dep->weight = (int)gt_cfg_int(c, dj, "weight", dpath, 1, 1, 1000000);
                dep->max_in_flight =
                    (int)gt_cfg_int(c, dj, "max_in_flight", dpath, 0, 0, 100000000);
                dep->price_micros = gt_cfg_int(c, dj, "price_micros", dpath, 0, 0, INT64_MAX);
            }
        }
        if (model->n_deployments) {
            /* served by its deployments: no pool or provider of its own */
        } else if (model->runtime && strcmp(model->runtime, "hostedai") == 0) {
            if (!model->pool)
                gt_cfg_problem(c, path, "pool is required for runtime hostedai");
            else if (!gt_config_pool(cfg, model->pool))
                gt_cfg_problem(c, path, "pool \"%s\" is not declared in pools", model->pool);
        }
        if (model->lane)
            add_lane(cfg, model->lane);
    }
    for (size_t i = 0; i < cfg->n_models; i++)
        for (size_t k = 0; k < cfg->models[i].n_deployments; k++) {
            const char *dn = cfg->models[i].deployments[k].model;
            const gt_model_t *dm = dn ? gt_config_model(cfg, dn) : NULL;
            char dpath[640];
            snprintf(dpath, sizeof(dpath), "models.%s.deployments[%zu].model", cfg->models[i].name,
                     k);
            if (dn && !dm)
                gt_cfg_problem(c, dpath, "model \"%s\" is not declared in models", dn);
            else if (dm && dm->n_deployments)
                gt_cfg_problem(c, dpath, "model \"%s\" has deployments of its own", dn);
        }
}

static void load_tenant_budget(gt_cfg_ctx_t *c, gt_tenant_t *t, json_t *b, const char *path)
{
    static const char *const keys[] = {"currency",
                                       "monthly_micros",
                                       "hard_limit_micros",
                                       "soft_thresholds_pct",
                                       "reserve_micros_per_task",
                                       NULL};
    struct gt_budget *bu = &t->budget;
    gt_cfg_check_keys(c, b, path, keys);
    char *cur = gt_cfg_str(c, b, "currency", path, "USD", 0);
    if (strlen(cur) != 3 || !isupper((unsigned char)cur[0]) || !isupper((unsigned char)cur[1]) ||
        !isupper((unsigned char)cur[2])) {
        char *sub = gt_cfg_join(path, "currency");
        gt_cfg_problem(c, sub, "must be a 3-letter ISO 4217 code such as \"USD\"");
        free(sub);
    }
    snprintf(bu->currency, sizeof(bu->currency), "%s", cur);
    free(cur);
    if (!json_object_get(b, "monthly_micros")) {
        char *sub = gt_cfg_join(path, "monthly_micros");
        gt_cfg_problem(c, sub, "is required");
        free(sub);
    }
    bu->monthly_micros = gt_cfg_int(c, b, "monthly_micros", path, 1, 1, INT64_MAX / 1000);
    bu->hard_limit_micros =
        gt_cfg_int(c, b, "hard_limit_micros", path, bu->monthly_micros, 1, INT64_MAX / 1000);
    bu->reserve_micros_per_task =
        gt_cfg_int(c, b, "reserve_micros_per_task", path, -1, -1, INT64_MAX / 1000000);
    json_t *th = json_object_get(b, "soft_thresholds_pct");
    char *sub = gt_cfg_join(path, "soft_thresholds_pct");
    if (!th) {
        bu->thresholds_pct[0] = 80, bu->thresholds_pct[1] = 100, bu->n_thresholds = 2;
    } else if (!json_is_array(th) || json_array_size(th) > 8) {
        gt_cfg_problem(c, sub, "must be an array of at most 8 percentages");
    } else {
        size_t i;
        json_t *v;
        json_array_foreach (th, i, v) {
            json_int_t pct = json_is_integer(v) ? json_integer_value(v) : 0;
            if (pct < 1 || pct > 1000 || (i > 0 && pct <= bu->thresholds_pct[i - 1])) {
                gt_cfg_problem(c, sub, "must hold ascending integers in [1, 1000]");
                break;
            }
            bu->thresholds_pct[bu->n_thresholds++] = (int)pct;
        }
    }
    free(sub);
    bu->has_budget = 1;
}

static void load_tracing(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const keys[] = {"otlp_endpoint", "service_name", "batch_ms",
                                       "queue_max",     "headers",      NULL};
    json_t *t = gt_cfg_obj(c, cfg->root, "tracing", "", 0);
    if (t)
        gt_cfg_check_keys(c, t, "tracing", keys);
    cfg->tracing_otlp_endpoint = gt_cfg_str(c, t, "otlp_endpoint", "tracing", NULL, 0);
    cfg->tracing_service_name = gt_cfg_str(c, t, "service_name", "tracing", NULL, 0);
    cfg->tracing_batch_ms = gt_cfg_int(c, t, "batch_ms", "tracing", 1000, 10, 600000);
    cfg->tracing_queue_max = (int)gt_cfg_int(c, t, "queue_max", "tracing", 2048, 1, 1000000);
    cfg->tracing_headers = t ? gt_cfg_obj(c, t, "headers", "tracing", 0) : NULL;
    const char *key;
    json_t *v;
    json_object_foreach (cfg->tracing_headers, key, v) {
        char path[512];
        snprintf(path, sizeof(path), "tracing.headers.%s", key);
        if (!json_is_string(v))
            gt_cfg_problem(c, path, "must be a string");
        else if (!*key || strpbrk(key, ": \r\n") || strpbrk(json_string_value(v), "\r\n"))
            gt_cfg_problem(c, path, "not a valid HTTP header");
    }
    size_t n = cfg->tracing_otlp_endpoint ? strlen(cfg->tracing_otlp_endpoint) : 0;
    if (n && strncmp(cfg->tracing_otlp_endpoint, "http://", 7) != 0 &&
        strncmp(cfg->tracing_otlp_endpoint, "https://", 8) != 0)
        gt_cfg_problem(c, "tracing.otlp_endpoint", "must be an http:// or https:// URL");
    while (n > 0 && cfg->tracing_otlp_endpoint[n - 1] == '/')
        cfg->tracing_otlp_endpoint[--n] = 0;
}

static void load_tenants(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    /* guardrails and cache: dispatcher/dispatcher_config.c */
    static const char *const keys[] = {"budget", "guardrails", "cache", NULL};
    json_t *tenants = gt_cfg_obj(c, cfg->root, "tenants", "", 0);
    if (!tenants)
        return;
    cfg->tenants = calloc(json_object_size(tenants) + 1, sizeof(gt_tenant_t));
    const char *id;
    json_t *tj;
    json_object_foreach (tenants, id, tj) {
        char path[512], sub[600];
        snprintf(path, sizeof(path), "tenants.%s", id);
        if (!json_is_object(tj)) {
            gt_cfg_problem(c, path, "must be an object");
            continue;
        }
        gt_cfg_check_keys(c, tj, path, keys);
        gt_tenant_t *t = &cfg->tenants[cfg->n_tenants++];
        t->id = strdup(id);
        snprintf(sub, sizeof(sub), "%s.budget", path);
        json_t *b = gt_cfg_obj(c, tj, "budget", path, 0);
        if (b)
            load_tenant_budget(c, t, b, sub);
    }
}

/* A consumer's session can outlast a lease: while a dead member still holds
 * the reaper's partitions (or a worker's), heartbeats go unread for up to
 * session.timeout.ms. The lease TTL must cover that, so the TTL is refused
 * when a configured session timeout (GT_KAFKA_SESSION_TIMEOUT_MS unless
 * overridden) is longer. */
static void check_session_timeout(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    const char *where = NULL;
    long long session = GT_KAFKA_SESSION_TIMEOUT_MS;
    json_t *props[] = {cfg->kafka_props, cfg->kafka_consumer_props};
    const char *names[] = {"kafka.properties", "kafka.consumer_properties"};
    for (int i = 0; i < 2; i++) {
        const char *v = json_string_value(json_object_get(props[i], "session.timeout.ms"));
        char *end;
        long long n = v ? strtoll(v, &end, 10) : 0;
        if (v && end != v && *end == '\0' && n > 0) {
            session = n;
            where = names[i];
        }
    }
    if (session > cfg->lease_ttl_ms)
        gt_cfg_problem(
            c, "reaper.lease_ttl_ms",
            "must be at least the Kafka consumer session timeout (session.timeout.ms %lld%s%s): "
            "a session can outlast the lease, so heartbeats go unread while it lasts",
            session, where ? " in " : ", the default", where ? where : "");
}

static void load_processes(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const wkeys[] = {
        "lanes",    "max_in_flight",    "retry", "timeouts", "heartbeat_ms",
        "drain_ms", "capacity_wait_ms", NULL};
    static const char *const retry_keys[] = {"max_retries", "base_ms", "max_ms", "jitter", NULL};
    static const char *const tkeys[] = {"allocate_ms", "inference_ms", "release_ms", NULL};
    json_t *w = gt_cfg_obj(c, cfg->root, "worker", "", 0);
    if (w)
        gt_cfg_check_keys(c, w, "worker", wkeys);
    cfg->worker_lanes = gt_cfg_str_list(c, w, "lanes", "worker", &cfg->n_worker_lanes);
    for (size_t i = 0; i < cfg->n_worker_lanes; i++)
        if (!gt_config_has_lane(cfg, cfg->worker_lanes[i]))
            gt_cfg_problem(c, "worker.lanes", "lane \"%s\" is used by no model",
                           cfg->worker_lanes[i]);
    if (!cfg->worker_lanes) { /* default: every lane */
        cfg->worker_lanes = calloc(cfg->n_lanes + 1, sizeof(char *));
        for (size_t i = 0; i < cfg->n_lanes; i++)
            cfg->worker_lanes[i] = strdup(cfg->lanes[i]);
        cfg->n_worker_lanes = cfg->n_lanes;
    }
    cfg->worker_max_in_flight = (int)gt_cfg_int(c, w, "max_in_flight", "worker", 256, 1, 100000);
    cfg->heartbeat_ms = gt_cfg_int(c, w, "heartbeat_ms", "worker", 1000, 10, 600000);
    cfg->worker_drain_ms = gt_cfg_int(c, w, "drain_ms", "worker", 30000, 0, 3600000);
    cfg->capacity_wait_ms = gt_cfg_int(c, w, "capacity_wait_ms", "worker", 600000, 0, 86400000);
    json_t *r = w ? gt_cfg_obj(c, w, "retry", "worker", 0) : NULL;
    if (r)
        gt_cfg_check_keys(c, r, "worker.retry", retry_keys);
    gt_retry_policy_default(&cfg->retry);
    cfg->retry.max_retries =
        (int)gt_cfg_int(c, r, "max_retries", "worker.retry", cfg->retry.max_retries, 0, 100);
    cfg->retry.base_ms =
        gt_cfg_int(c, r, "base_ms", "worker.retry", cfg->retry.base_ms, 1, 3600000);
    cfg->retry.max_ms = gt_cfg_int(c, r, "max_ms", "worker.retry", cfg->retry.max_ms, 1, 3600000);
    cfg->retry.jitter = gt_cfg_num(c, r, "jitter", "worker.retry", cfg->retry.jitter, 0, 1);
    json_t *t = w ? gt_cfg_obj(c, w, "timeouts", "worker", 0) : NULL;
    if (t)
        gt_cfg_check_keys(c, t, "worker.timeouts", tkeys);
    cfg->allocate_timeout_ms =
        gt_cfg_int(c, t, "allocate_ms", "worker.timeouts", 30000, 1, 86400000);
    cfg->inference_timeout_ms =
        gt_cfg_int(c, t, "inference_ms", "worker.timeouts", 300000, 1, 86400000);
    cfg->release_timeout_ms = gt_cfg_int(c, t, "release_ms", "worker.timeouts", 10000, 1, 86400000);

    static const char *const rkeys[] = {"lease_ttl_ms", "interval_ms", NULL};
    json_t *rp = gt_cfg_obj(c, cfg->root, "reaper", "", 0);
    if (rp)
        gt_cfg_check_keys(c, rp, "reaper", rkeys);
    cfg->lease_ttl_ms = gt_cfg_int(c, rp, "lease_ttl_ms", "reaper", 10000, 100, 86400000);
    cfg->reaper_interval_ms = gt_cfg_int(c, rp, "interval_ms", "reaper", 2000, 10, 86400000);
    if (cfg->lease_ttl_ms <= 2 * cfg->heartbeat_ms)
        gt_cfg_problem(c, "reaper.lease_ttl_ms", "must exceed twice worker.heartbeat_ms (%lld)",
                       (long long)cfg->heartbeat_ms);
    check_session_timeout(c, cfg);

    static const char *const logkeys[] = {"level", NULL};
    json_t *lg = gt_cfg_obj(c, cfg->root, "log", "", 0);
    if (lg)
        gt_cfg_check_keys(c, lg, "log", logkeys);
    cfg->log_level = gt_cfg_str(c, lg, "level", "log", "info", 0);
    if (cfg->log_level && strcmp(cfg->log_level, "debug") != 0 &&
        strcmp(cfg->log_level, "info") != 0 && strcmp(cfg->log_level, "warn") != 0 &&
        strcmp(cfg->log_level, "error") != 0)
        gt_cfg_problem(c, "log.level", "must be one of debug, info, warn, error");
    cfg->commit_interval_ms = gt_cfg_int(c, cfg->root, "commit_interval_ms", "", 200, 1, 600000);

    static const char *const adminkeys[] = {"host", "port", NULL};
    json_t *ad = gt_cfg_obj(c, cfg->root, "admin", "", 0);
    if (ad)
        gt_cfg_check_keys(c, ad, "admin", adminkeys);
    cfg->admin_host = gt_cfg_str(c, ad, "host", "admin", "127.0.0.1", 0);
    cfg->admin_port = (int)gt_cfg_int(c, ad, "port", "admin", -1, 0, 65535);
}

/* scheduling (docs/scheduling.md), shared: queue time limits and the cancel
 * poll (workers' start gate), lane slots and tenant weights (the dispatcher's
 * releaser). The per-lane and per-tenant objects stay in root (borrowed) and
 * are read by gt_config_max_queue_ms and dispatcher/release.c. */
static void load_scheduling(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    static const char *const schedkeys[] = {
        "max_queue_ms",    "cancel_poll_ms",   "lanes", "tenants",
        "release_poll_ms", "release_stale_ms", NULL};
    static const char *const lanesub[] = {"max_queue_ms", "slots", NULL};
    static const char *const tenantsub[] = {"max_queue_ms", "weight", NULL};
    json_t *s = gt_cfg_obj(c, cfg->root, "scheduling", "", 0);
    if (s)
        gt_cfg_check_keys(c, s, "scheduling", schedkeys);
    cfg->max_queue_ms = gt_cfg_int(c, s, "max_queue_ms", "scheduling", 0, 0, 30LL * 86400000);
    cfg->cancel_poll_ms = gt_cfg_int(c, s, "cancel_poll_ms", "scheduling", 250, 10, 600000);
    /* priorities and tenant fairness (dispatcher/release.c) */
    cfg->release_poll_ms = gt_cfg_int(c, s, "release_poll_ms", "scheduling", 500, 10, 600000);
    cfg->release_stale_ms = gt_cfg_int(c, s, "release_stale_ms", "scheduling", 30000, 100, 3600000);
    const char *groups[] = {"lanes", "tenants"};
    for (int g = 0; g < 2; g++) {
        char path[300];
        snprintf(path, sizeof(path), "scheduling.%s", groups[g]);
        json_t *obj = gt_cfg_obj(c, s, groups[g], "scheduling", 0);
        const char *name;
        json_t *v;
        json_object_foreach (obj, name, v) {
            char sub[600];
            snprintf(sub, sizeof(sub), "%s.%s", path, name);
            if (!json_is_object(v)) {
                gt_cfg_problem(c, sub, "must be an object");
                continue;
            }
            gt_cfg_check_keys(c, v, sub, g == 0 ? lanesub : tenantsub);
            gt_cfg_int(c, v, "max_queue_ms", sub, 0, 0, 30LL * 86400000);
            if (g == 0) /* the lane's in-flight slots: set, its tasks are released fairly */
                gt_cfg_int(c, v, "slots", sub, 0, 0, 1000000);
            else /* the tenant's weight in a lane's share (default 1) */
                gt_cfg_int(c, v, "weight", sub, 1, 1, 10000);
            if (g == 0 && !gt_config_has_lane(cfg, name))
                gt_cfg_problem(c, sub, "no model uses lane \"%s\"", name);
        }
        if (g == 0)
            cfg->sched_lanes = obj;
        else
            cfg->sched_tenants = obj;
    }
}

int64_t gt_config_max_queue_ms(const gt_config_t *cfg, const char *lane, const char *tenant)
{
    int64_t best = cfg->max_queue_ms;
    const json_t *objs[] = {lane ? json_object_get(cfg->sched_lanes, lane) : NULL,
                            tenant ? json_object_get(cfg->sched_tenants, tenant) : NULL};
    for (int i = 0; i < 2; i++) {
        json_int_t v = json_integer_value(json_object_get(objs[i], "max_queue_ms"));
        if (v > 0 && (best <= 0 || v < best))
            best = v;
    }
    return best;
}

gt_config_t *gt_config_parse(const char *text, const char *base_dir, char *err, size_t errlen)
{
    /* Every top-level section, whichever loader reads it. */
    static const char *const top[] = {"kafka",
                                      "topics",
                                      "groups",
                                      "postgres",
                                      "pools",
                                      "models",
                                      "routing",
                                      "worker",
                                      "dispatcher",
                                      "ledger",
                                      "reaper",
                                      "log",
                                      "commit_interval_ms",
                                      "$comment",
                                      "tenants",
                                      "providers",
                                      "moderation",
                                      "tracing",
                                      "admin",
                                      "api",
                                      "scheduling",
                                      NULL};
    gt_cfg_ctx_t c = {.err = err, .errlen = errlen, .base_dir = base_dir};
    if (err && errlen)
        err[0] = 0;
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        gt_cfg_problem(&c, "", "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                       jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        gt_cfg_problem(&c, "", "must be a JSON object");
        json_decref(root);
        return NULL;
    }
    gt_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg) {
        json_decref(root);
        return NULL;
    }
    cfg->root = root;
    resolve(&c, root, "");
    gt_cfg_check_keys(&c, root, "", top);
    load_kafka(&c, cfg);
    load_postgres(&c, cfg);
    load_pools(&c, cfg);
    load_providers(&c, cfg);
    load_models(&c, cfg);
    check_fallbacks(&c, cfg);
    load_tenants(&c, cfg);
    load_tracing(&c, cfg);
    load_processes(&c, cfg);
    load_scheduling(&c, cfg);
    for (size_t i = 0; i < n_sections; i++)
        sections[i]->load(&c, cfg);
    if (c.problems) {
        gt_config_free(cfg);
        return NULL;
    }
    return cfg;
}

gt_config_t *gt_config_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(text);
        snprintf(err, errlen, "%s: cannot read", path);
        return NULL;
    }
    fclose(f);
    text[n] = 0;
    char *copy = strdup(path);
    gt_config_t *cfg = gt_config_parse(text, dirname(copy), err, errlen);
    free(copy);
    free(text);
    if (cfg)
        cfg->path = strdup(path);
    return cfg;
}

void gt_cfg_free_str_list(char **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
}

void gt_config_free(gt_config_t *cfg)
{
    if (!cfg)
        return;
    gt_config_free(cfg->retired);
    for (size_t i = n_sections; i-- > 0;)
        if (sections[i]->free)
            sections[i]->free(cfg);
    free(cfg->path);
    free(cfg->bootstrap_servers);
    char **topics[] = {&cfg->topics.requests, &cfg->topics.task_prefix, &cfg->topics.task_results,
                       &cfg->topics.results,  &cfg->topics.usage,       &cfg->topics.dlq,
                       &cfg->topics.events,   &cfg->topics.control};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
        free(*topics[i]);
    free(cfg->group_dispatcher);
    free(cfg->group_worker);
    free(cfg->group_ledger);
    free(cfg->pg_conninfo);
    for (size_t i = 0; i < cfg->n_pools; i++) {
        free(cfg->pools[i].name);
        free(cfg->pools[i].endpoint);
        free(cfg->pools[i].api_key);
    }
    free(cfg->pools);
    for (size_t i = 0; i < cfg->n_models; i++) {
        gt_model_t *m = &cfg->models[i];
        free(m->name);
        free(m->runtime);
        free(m->pool);
        free(m->lane);
        free(m->provider);
        free(m->provider_model);
        gt_cfg_free_str_list(m->fallbacks, m->n_fallbacks);
        for (size_t k = 0; k < m->n_deployments; k++)
            free(m->deployments[k].model);
        free(m->deployments);
        free(m->strategy);
    }
    free(cfg->models);
    for (size_t i = 0; i < cfg->n_providers; i++) {
        gt_provider_t *p = &cfg->providers[i];
        char **fields[] = {&p->name,          &p->runtime,           &p->endpoint,     &p->api_key,
                           &p->credentials,   &p->project,           &p->location,     &p->region,
                           &p->access_key_id, &p->secret_access_key, &p->session_token};
        for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
            if (*fields[f] && f >= 3) /* secrets and the rest: scrub before the memory is reused */
                memset(*fields[f], 0, strlen(*fields[f]));
            free(*fields[f]);
        }
        for (size_t t = 0; t < p->n_tenant_limits; t++)
            free(p->tenant_limits[t].tenant);
        free(p->tenant_limits);
    }
    free(cfg->providers);
    for (size_t i = 0; i < cfg->n_tenants; i++)
        free(cfg->tenants[i].id);
    free(cfg->tenants);
    gt_cfg_free_str_list(cfg->lanes, cfg->n_lanes);
    gt_cfg_free_str_list(cfg->worker_lanes, cfg->n_worker_lanes);
    free(cfg->log_level);
    free(cfg->admin_host);
    free(cfg->tracing_otlp_endpoint);
    free(cfg->tracing_service_name);
    json_decref(cfg->root);
    free(cfg);
}

const gt_model_t *gt_config_model(const gt_config_t *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_models; i++)
        if (strcmp(cfg->models[i].name, name) == 0)
            return &cfg->models[i];
    return NULL;
}

const gt_pool_t *gt_config_pool(const gt_config_t *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_pools; i++)
        if (strcmp(cfg->pools[i].name, name) == 0)
            return &cfg->pools[i];
    return NULL;
}

const gt_provider_t *gt_config_provider(const gt_config_t *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_providers; i++)
        if (strcmp(cfg->providers[i].name, name) == 0)
            return &cfg->providers[i];
    return NULL;
}

const gt_provider_limits_t *gt_provider_tenant_limits(const gt_provider_t *p, const char *tenant)
{
    for (size_t i = 0; tenant && i < p->n_tenant_limits; i++)
        if (strcmp(p->tenant_limits[i].tenant, tenant) == 0)
            return &p->tenant_limits[i].limits;
    return NULL;
}

int gt_config_tenants_configured(const gt_config_t *cfg)
{
    return cfg->tenants != NULL; /* load_tenants allocates it whenever the section exists */
}

const gt_tenant_t *gt_config_tenant(const gt_config_t *cfg, const char *id)
{
    for (size_t i = 0; id && i < cfg->n_tenants; i++)
        if (strcmp(cfg->tenants[i].id, id) == 0)
            return &cfg->tenants[i];
    return NULL;
}

char *gt_config_lane_topic(const gt_config_t *cfg, const char *lane, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s", cfg->topics.task_prefix, lane);
    return buf;
}
