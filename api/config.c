/* config.c - gantry-api's section of gantry.json (api.*), loaded as a part's
 * section (lib/config_section.h) into cfg->api; topics.control is shared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config_section.h"
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

static void load_api(gt_cfg_ctx_t *c, gt_config_t *cfg)
{
    gt_api_config_t *ac = calloc(1, sizeof(*ac));
    if (!ac) {
        gt_cfg_problem(c, "api", "out of memory");
        return;
    }
    cfg->api = ac;
    json_t *a = gt_cfg_obj(c, cfg->root, "api", "", 0);
    if (a)
        gt_cfg_check_keys(c, a, "api", api_keys);
    ac->host = gt_cfg_str(c, a, "host", "api", "127.0.0.1", 0);
    ac->group = gt_cfg_str(c, a, "group", "api", "gantry-api", 0);
    ac->control_topic = cfg->topics.control;
    ac->port = (int)gt_cfg_int(c, a, "port", "api", 8090, 0, 65535);
    ac->max_file_lines = gt_cfg_int(c, a, "max_file_lines", "api", 50000, 1, 10000000);
    ac->max_file_bytes = gt_cfg_int(c, a, "max_file_bytes", "api", 200LL << 20, 1, 1LL << 40);
    ac->min_window_s = gt_cfg_int(c, a, "min_completion_window_s", "api", 86400, 1, 86400 * 30);
    ac->max_window_s = gt_cfg_int(c, a, "max_completion_window_s", "api", 86400, 1, 86400 * 30);
    if (ac->min_window_s > ac->max_window_s)
        gt_cfg_problem(c, "api.min_completion_window_s", "above api.max_completion_window_s");
    ac->pg_connections = (int)gt_cfg_int(c, a, "pg_connections", "api", 8, 1, 256);
    ac->publish_batch = (int)gt_cfg_int(c, a, "publish_batch", "api", 1000, 1, 100000);
    ac->models = gt_cfg_obj(c, a, "models", "api", 0);
    const char *k;
    json_t *val;
    json_object_foreach (ac->models, k, val) {
        if (!json_is_string(val)) {
            char path[512];
            snprintf(path, sizeof(path), "api.models.%s", k);
            gt_cfg_problem(c, path, "must be a string (a Gantry model or auto)");
        }
    }
}

static void free_api(gt_config_t *cfg)
{
    gt_api_config_t *ac = cfg->api;
    if (!ac)
        return;
    free(ac->host);
    free(ac->group);
    free(ac);
    cfg->api = NULL;
}

static const gt_config_section_t api_section = {.name = "api", .load = load_api, .free = free_api};

int gt_api_config_register(void)
{
    return gt_config_add_section(&api_section);
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
