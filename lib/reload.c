/* reload.c - SIGHUP configuration reload: validate the whole file, swap in the
 * sections that may change, keep the old ones alive, say what needs a restart. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "reload.h"

/* Top-level sections read at every use through the live config. */
static const char *const reloadable[] = {"log", "tenants", NULL};

int gt_config_key_reloadable(const char *key)
{
    for (int i = 0; reloadable[i]; i++) {
        size_t n = strlen(reloadable[i]);
        if (strncmp(key, reloadable[i], n) == 0 && (key[n] == '\0' || key[n] == '.'))
            return 1;
    }
    return strcmp(key, "$comment") == 0;
}

/* Appends "top.sub" (or "top") of each difference between a and b, two levels
 * deep, to changed. */
static void diff_keys(json_t *a, json_t *b, json_t *changed)
{
    const char *k;
    json_t *v;
    json_t *keys = json_object();
    json_object_foreach (a, k, v)
        json_object_set(keys, k, json_true());
    json_object_foreach (b, k, v)
        json_object_set(keys, k, json_true());
    json_object_foreach (keys, k, v) {
        json_t *x = json_object_get(a, k), *y = json_object_get(b, k);
        if (x && y && json_equal(x, y))
            continue;
        /* A section added or removed: name its keys (tenants.acme). */
        json_t *empty = json_object();
        if (!x && json_is_object(y))
            x = empty;
        if (!y && json_is_object(x))
            y = empty;
        if (json_is_object(x) && json_is_object(y)) {
            json_t *sub = json_object();
            const char *sk;
            json_t *sv;
            json_object_foreach (x, sk, sv)
                json_object_set(sub, sk, json_true());
            json_object_foreach (y, sk, sv)
                json_object_set(sub, sk, json_true());
            json_object_foreach (sub, sk, sv) {
                json_t *p = json_object_get(x, sk), *q = json_object_get(y, sk);
                if (p && q && json_equal(p, q))
                    continue;
                char path[512];
                snprintf(path, sizeof(path), "%s.%s", k, sk);
                json_array_append_new(changed, json_string(path));
            }
            json_decref(sub);
        } else {
            json_array_append_new(changed, json_string(k));
        }
        json_decref(empty);
    }
    json_decref(keys);
}

int gt_config_reload(gt_config_t *live)
{
    char err[4096];
    err[0] = '\0';
    gt_config_t *next = gt_config_load(live->path, err, sizeof(err));
    if (!next) {
        /* One line per problem, as gt_config_load wrote them. */
        char *save = NULL;
        for (char *line = strtok_r(err, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            gt_error("reload: %s", line);
        gt_error("reload of %s failed: the configuration in force is unchanged", live->path);
        return -1;
    }

    json_t *changed = json_array();
    diff_keys(live->root, next->root, changed);
    int applied = 0, restart = 0;
    size_t i;
    json_t *key;
    json_array_foreach (changed, i, key) {
        const char *k = json_string_value(key);
        if (gt_config_key_reloadable(k)) {
            gt_info("reload: %s changed: applied", k);
            applied++;
        } else {
            gt_warn("reload: %s changed: needs a restart to take effect", k);
            restart++;
        }
    }

    /* Swap the reloadable sections: next keeps the old ones and is retired. */
    gt_tenant_t *tenants = live->tenants;
    size_t n_tenants = live->n_tenants;
    live->tenants = next->tenants;
    live->n_tenants = next->n_tenants;
    next->tenants = tenants;
    next->n_tenants = n_tenants;
    char *level = live->log_level;
    live->log_level = next->log_level;
    next->log_level = level;
    int lv = gt_log_parse_level(live->log_level);
    if (lv >= 0)
        gt_log_set_level((gt_log_level_t)lv);
    /* live->root describes what is in force: the applied sections come from
     * next (nothing borrows from them), the others stay as loaded. */
    for (int r = 0; reloadable[r]; r++) {
        json_t *v = json_object_get(next->root, reloadable[r]);
        if (v)
            json_object_set_new(live->root, reloadable[r], json_deep_copy(v));
        else
            json_object_del(live->root, reloadable[r]);
    }
    next->retired = live->retired;
    live->retired = next;

    gt_info("reloaded %s: %d change(s) applied, %d need a restart", live->path, applied, restart);
    json_decref(changed);
    return applied + restart;
}
