/* moderation.h - content moderation for the guard stage: an OpenAI-compatible
 * POST /v1/moderations when configured, a conservative keyword list when it is
 * not, or when it fails or times out. */
#ifndef GT_MODERATION_H
#define GT_MODERATION_H

#include <stddef.h>
#include <uv.h>

#include "config.h"

typedef struct gt_mod_verdict {
    double scores[GT_MOD_NCATEGORIES]; /* 0..1 per category (gt_mod_category_t) */
    const char *source;                /* "endpoint", "keywords" or "keywords-fallback" */
} gt_mod_verdict_t;

/* Called once per check on the loop thread (possibly before
 * gt_moderation_check returns); v is valid only during the call. */
typedef void (*gt_moderation_cb)(const gt_mod_verdict_t *v, void *arg);

typedef struct gt_moderation gt_moderation_t;

/* cfg is borrowed for the client's life. NULL on out of memory. */
gt_moderation_t *gt_moderation_new(uv_loop_t *loop, const gt_config_t *cfg);
/* Checks text[0, len). Returns 0 (cb will be or was called) or -1 (out of
 * memory; cb not called). */
int gt_moderation_check(gt_moderation_t *m, const char *text, size_t len, gt_moderation_cb cb,
                        void *arg);
/* Aborts checks in flight (their callbacks get the keyword verdict) and frees
 * m once its handles are closed: the loop must run afterwards. */
void gt_moderation_free(gt_moderation_t *m);

/* The keyword list alone: scores 1.0 for a category whose phrase occurs
 * (case-insensitive, on word boundaries), else 0. */
void gt_moderation_keywords(const char *text, size_t len, double scores[GT_MOD_NCATEGORIES]);
/* Parses a /v1/moderations response body into scores (the highest of a
 * category and its subcategories, e.g. "hate/threatening"). Returns 0 or -1. */
int gt_moderation_parse(const char *body, double scores[GT_MOD_NCATEGORIES]);
/* "harassment", "hate", "violence", "sexual", "self-harm". */
const char *gt_moderation_category_name(int category);
/* The first category over its threshold, or -1. */
int gt_moderation_flagged(const gt_mod_verdict_t *v, const double thresholds[GT_MOD_NCATEGORIES]);

#endif
