/* fuzz_json.c - libFuzzer target: lib/json_text against jansson on the same
 * bytes. gt_json_parse accepts exactly what json_loadb accepts and builds an
 * equal value, and gt_json_dump writes that value byte for byte as
 * json_dumps does (so key order is the same too). The first byte picks the
 * flags (JSON_REJECT_DUPLICATES or none). The one difference: a NUL byte,
 * which only jansson lets through after a number. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t flags = data[0] & 1 ? JSON_REJECT_DUPLICATES : 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    json_error_t jerr;
    gt_json_error_t gerr;
    json_t *got = gt_json_parse(text, len, flags, &gerr);
    if (memchr(text, '\0', len)) {
        /* JSON has no NUL byte outside a string, nor inside one unescaped;
         * jansson's lexer takes one after a number as the number's end and
         * reads on ("[12\0]" is [12] there). Refused here, always. */
        if (got)
            abort();
        return 0;
    }
    json_t *want = json_loadb(text, len, flags, &jerr);
    if (!want != !got)
        abort(); /* one accepts what the other refuses */
    if (!got && (!gerr.text[0] || gerr.position > len))
        abort(); /* a refusal says why and where */
    if (want && !json_equal(want, got))
        abort();
    if (want) {
        char *a = json_dumps(want, JSON_COMPACT);
        char buf[256];
        size_t n = 0;
        char *b = gt_json_dump(got, buf, sizeof(buf), &n);
        if (!a || !b || n != strlen(a) || memcmp(a, b, n) != 0)
            abort();
        free(a);
        if (b != buf)
            free(b);
    }
    json_decref(want);
    json_decref(got);
    return 0;
}
