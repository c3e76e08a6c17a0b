/* config_section.h - the interface a part (dispatcher/, workers/) loads its own
 * sections of gantry.json with; lib/config.c loads the shared ones. */
#ifndef GT_CONFIG_SECTION_H
#define GT_CONFIG_SECTION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* One load in progress: collects problems ("key.path: reason"). */
typedef struct gt_cfg_ctx gt_cfg_ctx_t;

/* A part's sections. load runs after the shared sections are loaded (so it
 * may read cfg's pools, providers, models, tenants and worker settings) and
 * the document's ${ENV} and *_file values are resolved; it reports every
 * problem with gt_cfg_problem and must leave cfg freeable by free. free
 * releases what load allocated (it may be NULL); it runs before the shared
 * sections are freed, also on a config whose load failed. */
typedef struct gt_config_section {
    const char *name;
    void (*load)(gt_cfg_ctx_t *c, gt_config_t *cfg);
    void (*free)(gt_config_t *cfg);
} gt_config_section_t;

/* Adds s (static storage) to every later gt_config_load/gt_config_parse of
 * this process, after those added before. A process adds the sections of the
 * parts it runs, before its first load; a top-level section no added loader
 * claims is accepted unread (its part validates it, and so does `gantry
 * config check`, which adds every part). Adding s again is a no-op. Returns
 * 0, or -ENOSPC past 8 sections. Not thread safe: call it at start-up. */
int gt_config_add_section(const gt_config_section_t *s);

/* Reports a problem at key path (NULL or "": the root). */
void gt_cfg_problem(gt_cfg_ctx_t *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "path.key" (or "key" at the root), malloc'd; NULL when out of memory. */
char *gt_cfg_join(const char *path, const char *key);
/* Reports each key of obj not in allowed (NULL-terminated) as unknown. */
void gt_cfg_check_keys(gt_cfg_ctx_t *c, json_t *obj, const char *path, const char *const *allowed);
/* Readers of parent's or obj's member key (path names obj). Absent: def (a
 * string def is strdup'd; NULL stays NULL) and, when required, a problem.
 * Present with the wrong type or out of [min, max]: a problem and def. */
json_t *gt_cfg_obj(gt_cfg_ctx_t *c, json_t *parent, const char *key, const char *path,
                   int required);
char *gt_cfg_str(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, const char *def,
                 int required);
int64_t gt_cfg_int(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, int64_t def,
                   int64_t min, int64_t max);
double gt_cfg_num(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, double def,
                  double min, double max);
int gt_cfg_bool(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, int def);
/* A NULL-terminated list of *n non-empty strings, or NULL when absent. */
char **gt_cfg_str_list(gt_cfg_ctx_t *c, json_t *obj, const char *key, const char *path, size_t *n);
/* Frees a gt_cfg_str_list result (NULL is fine). */
void gt_cfg_free_str_list(char **list, size_t n);

#endif
