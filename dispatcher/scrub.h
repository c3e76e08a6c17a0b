/* scrub.h - replaces the personal data that pii.h finds: masks with typed
 * tokens (<EMAIL_1>, consistent within one scrubber), keyed hashes or
 * removal; walks JSON values; restores masked tokens. */
#ifndef GT_SCRUB_H
#define GT_SCRUB_H

#include <jansson.h>
#include <stddef.h>

#include "pii.h"

typedef enum { GT_SCRUB_MASK, GT_SCRUB_HASH, GT_SCRUB_REMOVE } gt_scrub_mode_t;

typedef struct gt_scrub_opts {
    gt_scrub_mode_t mode;
    unsigned types;           /* GT_PII_* bits to scrub; 0: all */
    double min_confidence;    /* findings below are kept; 0: 0.5 */
    const unsigned char *key; /* hash: HMAC-SHA256 key, borrowed for the scrubber's life */
    size_t key_len;
    int hash_chars; /* hash: hex characters kept, 8..64; 0: 16 */
} gt_scrub_opts_t;

/* One scrubber per request: mask tokens are numbered per type in the order
 * values are first seen, so the same value gets the same token everywhere in
 * that request. */
typedef struct gt_scrub gt_scrub_t;

/* Returns NULL on out of memory or when hash mode has no key. */
gt_scrub_t *gt_scrub_new(const gt_scrub_opts_t *o);
void gt_scrub_free(gt_scrub_t *s);

/* Scrubs text[0, len). On success returns 0 and a malloc'd NUL-terminated
 * copy in *out (length in *out_len, optional) that the caller frees; -1 on
 * out of memory. */
int gt_scrub_text(gt_scrub_t *s, const char *text, size_t len, char **out, size_t *out_len);

/* A deep copy of v with every string value scrubbed; object keys, numbers,
 * booleans and null are left alone. NULL on out of memory. Caller owns it. */
json_t *gt_scrub_json(gt_scrub_t *s, const json_t *v);

/* Values replaced so far, in total and of one type. */
size_t gt_scrub_total(const gt_scrub_t *s);
size_t gt_scrub_count(const gt_scrub_t *s, gt_pii_type_t t);
/* {"email": 2, ...} of the types replaced (counts, never values). Caller owns it. */
json_t *gt_scrub_counts(const gt_scrub_t *s);

/* Mask mode: the token -> original value mapping ({"<EMAIL_1>": "a@b.c"}).
 * Secret: never log it, never send it on Kafka. Borrowed; NULL in other modes. */
const json_t *gt_scrub_mapping(const gt_scrub_t *s);

/* Replaces the tokens of mapping found in text by their values. Returns 0 and
 * a malloc'd copy in *out, or -1 on out of memory. Unknown tokens stay. */
int gt_scrub_restore_text(const json_t *mapping, const char *text, size_t len, char **out,
                          size_t *out_len);
/* A deep copy of v with tokens restored in every string. Caller owns it. */
json_t *gt_scrub_restore_json(const json_t *mapping, const json_t *v);

#endif
