/* config.c - gantry-api's section of gantry.json (api.*, topics.control),
 * read from the loaded document; lib/config.c only admits the section. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "digest.h"

static const char *const api_keys[] = {"host",
                                       "port",
                                       "max_file_lines",
                                       "max_file_bytes",
                                       "min_completion_window_s",
                                       "max_completion_window_s",
                                       "group",
                                       "pg_connections",
                                       "publish_batch",
                                       "models",
                                       NULL};

static int get_int(json_t *o, const char *key, int64_t def, int64_t lo, int64_t hi, int64_t *out,
                   char *err, size_t errlen)
{
    json_t *v = o ? json_object_get(o, key) : NULL;
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(err, errlen, "api.%s: must be an integer in %lld..%lld", key, (long long)lo,
                 (long long)hi);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_str(json_t *o, const char *path, const char *key, const char *def, char **out,
                   char *err, size_t errlen)
{
    json_t *v = o ? json_object_get(o, key) : NULL;
    if (v && (!json_is_string(v) || !json_string_length(v))) {
        snprintf(err, errlen, "%s.%s: must be a non-empty string", path, key);
        return -1;
    }
    *out = strdup(v ? json_string_value(v) : def);
    return *out ? 0 : -1;
}

int gt_api_config_load(const gt_config_t *cfg, gt_api_config_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    json_t *a = json_object_get(cfg->root, "api");
    json_t *topics = json_object_get(cfg->root, "topics");
    int64_t v;
    int rc = -1;
    if (a && !json_is_object(a)) {
        snprintf(err, errlen, "api: must be an object");
        goto out;
    }
    const char *k;
    json_t *val;
    json_object_foreach (a, k, val) {
        int known = 0;
        for (const char *const *p = api_keys; *p; p++)
            known |= strcmp(*p, k) == 0;
        if (!known) {
            snprintf(err, errlen, "api.%s: unknown key", k);
            goto out;
        }
    }
    if (get_str(a, "api", "host", "127.0.0.1", &out->host, err, errlen) ||
        get_str(a, "api", "group", "gantry-api", &out->group, err, errlen) ||
        get_str(topics, "topics", "control", "gantry.control", &out->control_topic, err, errlen))
        goto out;
    if (get_int(a, "port", 8090, 0, 65535, &v, err, errlen))
        goto out;
    out->port = (int)v;
    if (get_int(a, "max_file_lines", 50000, 1, 10000000, &out->max_file_lines, err, errlen) ||
        get_int(a, "max_file_bytes", 200LL << 20, 1, 1LL << 40, &out->max_file_bytes, err,
                errlen) ||
        get_int(a, "min_completion_window_s", 86400, 1, 86400 * 30, &out->min_window_s, err,
                errlen) ||
        get_int(a, "max_completion_window_s", 86400, 1, 86400 * 30, &out->max_window_s, err,
                errlen))
        goto out;
    if (out->min_window_s > out->max_window_s) {
        snprintf(err, errlen, "api.min_completion_window_s: above api.max_completion_window_s");
        goto out;
    }
    if (get_int(a, "pg_connections", 8, 1, 256, &v, err, errlen))
        goto out;
    out->pg_connections = (int)v;
    if (get_int(a, "publish_batch", 1000, 1, 100000, &v, err, errlen))
        goto out;
    out->publish_batch = (int)v;
    out->models = a ? json_object_get(a, "models") : NULL;
    if (out->models) {
        if (!json_is_object(out->models)) {
            snprintf(err, errlen, "api.models: must be an object of strings");
            goto out;
        }
        json_object_foreach (out->models, k, val) {
            if (!json_is_string(val)) {
                snprintf(err, errlen, "api.models.%s: must be a string (a Gantry model or auto)",
                         k);
                goto out;
            }
        }
    }
    rc = 0;
out:
    if (rc)
        gt_api_config_free(out);
    return rc;
}

void gt_api_config_free(gt_api_config_t *ac)
{
    free(ac->host);
    free(ac->group);
    free(ac->control_topic);
    memset(ac, 0, sizeof(*ac));
}

const char *gt_api_model(const gt_api_config_t *ac, const char *vendor_model)
{
    json_t *m = ac->models ? json_object_get(ac->models, vendor_model) : NULL;
    if (!m && ac->models)
        m = json_object_get(ac->models, "*");
    return m ? json_string_value(m) : vendor_model;
}

void gt_api_key_hash(const char *secret, char hex[65])
{
    gt_sha256_hex(secret, strlen(secret), hex);
}
