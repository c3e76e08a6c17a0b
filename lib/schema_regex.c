/* schema_regex.c - ECMA-262 "pattern" regexes for lib/schema through PCRE2
 * (no translation: PCRE2's compatibility options cover what JSON Schema uses). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "schema_regex.h"

/* Work bounds for one match: beyond them the string is refused (see header). */
#define GT_SCHEMA_RE_MATCH_LIMIT 1000000u
#define GT_SCHEMA_RE_HEAP_KIB (16u * 1024u)

struct gt__schema_re {
    pcre2_code *code;
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t md_key;
static pcre2_compile_context *ccontext;
static pcre2_match_context *mcontext;
static int init_ok;

static void md_free(void *md)
{
    pcre2_match_data_free(md);
}

static void init(void)
{
    if (pthread_key_create(&md_key, md_free) != 0)
        return;
    ccontext = pcre2_compile_context_create(NULL);
    mcontext = pcre2_match_context_create(NULL);
    if (!ccontext || !mcontext)
        return;
    /* ECMAScript's "." excludes line terminators; CR and LF are the ones
     * PCRE2 can exclude without also excluding VT, FF and NEL. */
    pcre2_set_newline(ccontext, PCRE2_NEWLINE_ANYCRLF);
    pcre2_set_match_limit(mcontext, GT_SCHEMA_RE_MATCH_LIMIT);
    pcre2_set_heap_limit(mcontext, GT_SCHEMA_RE_HEAP_KIB);
    init_ok = 1;
}

gt__schema_re_t *gt__schema_re_compile(const char *src, char *why, size_t whylen)
{
    gt__schema_re_t *re = NULL;
    int err;
    PCRE2_SIZE off;

    pthread_once(&once, init);
    if (!init_ok) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    if (!(re = calloc(1, sizeof(*re)))) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_ALT_BSUX |
                    PCRE2_MATCH_UNSET_BACKREF | PCRE2_ALLOW_EMPTY_CLASS | PCRE2_DOLLAR_ENDONLY;
    re->code = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, opts, &err, &off, ccontext);
    if (!re->code) {
        PCRE2_UCHAR msg[160];
        if (pcre2_get_error_message(err, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", err);
        snprintf(why, whylen, "%s at offset %zu", (const char *)msg, (size_t)off);
        free(re);
        return NULL;
    }
    (void)pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* interpreter if no JIT */
    return re;
}

int gt__schema_re_match(const gt__schema_re_t *re, const char *s, size_t len)
{
    pcre2_match_data *md = pthread_getspecific(md_key);
    if (!md) {
        /* One ovector pair is enough: only whether it matches counts. */
        if (!(md = pcre2_match_data_create(1, NULL)))
            return 0;
        if (pthread_setspecific(md_key, md) != 0) {
            pcre2_match_data_free(md);
            return 0;
        }
    }
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, 0, md, mcontext);
    return rc >= 0; /* 0: matched, ovector too small for the groups */
}

void gt__schema_re_free(gt__schema_re_t *re)
{
    if (!re)
        return;
    pcre2_code_free(re->code);
    free(re);
}
