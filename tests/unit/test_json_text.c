/* test_json_text.c - lib/json_text: values serialised byte for byte as
 * json_dumps(JSON_COMPACT) writes them (escapes, reals, nesting, a text that
 * outgrows the caller's buffer), PostgreSQL's jsonb text (read off a real
 * server) made compact, strings left as they are, and parsing that accepts
 * and refuses what jansson does, each refusal with its byte. tests/fuzz's
 * fuzz_json compares both with jansson on generated input. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "json_text.h"

/* gt_json_dump against jansson's own for v, with a buffer of cap bytes. */
static void same_as_jansson(const json_t *v, size_t cap)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    char *buf = cap ? malloc(cap) : NULL;
    size_t len = 0;
    char *got = gt_json_dump(v, buf, cap, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    TH_EQ_INT(len, strlen(want));
    if (len != strlen(want) || memcmp(got, want, len) != 0)
        fprintf(stderr, "  want %s\n  got  %.*s\n", want, (int)len, got);
    CU_ASSERT(len == strlen(want) && memcmp(got, want, len) == 0);
    CU_ASSERT((got == buf) == (len <= cap)); /* the caller's buffer while it fits */
    if (got != buf)
        free(got);
    free(buf);
    free(want);
}

static void test_values(void)
{
    static const char *docs[] = {
        "{}",
        "[]",
        "\"\"",
        "0",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "true",
        "false",
        "null",
        "1.5",
        "0.1",
        "-0.0",
        "1e300",
        "1e-300",
        "2.5e-5",
        "123456789012345680000.0",
        "3.0",
        "1e20",
        "[1,[2,[3,{}]],{\"a\":[]}]",
        "{\"schema\":\"gantry.task-result.v1\",\"task_id\":\"r-1/0\",\"status\":\"succeeded\","
        "\"output\":{\"text\":\"h\\u00e9llo \\\"w\\\" \\\\ / \\n\\t\\r\\b\\f \\u0001\\u001f\\u007f "
        "\\u2028 \\ud83d\\ude00\"},\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":0.25}}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_error_t e;
        json_t *v = json_loads(docs[i], JSON_DECODE_ANY, &e);
        if (!v)
            fprintf(stderr, "  cannot read %s: %s\n", docs[i], e.text);
        CU_ASSERT_PTR_NOT_NULL_FATAL(v);
        same_as_jansson(v, 4096);
        same_as_jansson(v, 3); /* outgrows the buffer at once */
        same_as_jansson(v, 0);
        json_decref(v);
    }
    /* a NUL inside a string, and keys in the order they were set */
    json_t *o = json_object();
    json_object_set_new(o, "zeta", json_stringn("a\0b", 3));
    json_object_setn_new(o, "k\0ey", 4, json_integer(1));
    json_object_set_new(o, "alpha", json_real(1.0 / 3));
    same_as_jansson(o, 64);
    json_decref(o);
}

static void test_large(void)
{
    /* 100,000 strings of every byte class: the allocation grows many times */
    json_t *a = json_array();
    char s[64];
    for (int i = 0; i < 100000; i++) {
        snprintf(s, sizeof(s), "item %d \"q\" \\ \x01 \xc3\xa9", i);
        json_array_append_new(a, json_string(s));
    }
    same_as_jansson(a, 8192);
    json_decref(a);
}

static void test_raw(void)
{
    char buf[4];
    gt_json_text_t t;
    gt_json_text_init(&t, buf, sizeof(buf));
    gt_json_text_raw(&t, "[", 1);
    json_t *v = json_pack("{s:i}", "a", 1);
    gt_json_text_value(&t, v);
    gt_json_text_raw(&t, ",{\"b\":2}]", 9);
    CU_ASSERT_FALSE(t.failed);
    TH_EQ_INT(t.len, 17);
    CU_ASSERT(memcmp(t.p, "[{\"a\":1},{\"b\":2}]", 17) == 0);
    gt_json_text_free(&t);
    CU_ASSERT_PTR_EQUAL(t.p, buf);
    gt_json_text_value(&t, NULL); /* not a value: remembered */
    CU_ASSERT_TRUE(t.failed);
    gt_json_text_free(&t);
    json_decref(v);
}

static const struct {
    const char *in, *out;
} vectors[] = {
    /* SELECT '...'::jsonb on PostgreSQL 15: its spaces after ':' and ',' */
    {"{\"a\": \"tab\\there\\\\\", \"b\": [1, 2.50, {\"k\": \"a \\\"q\\\" , b: c\"}], \"e\": {},"
     " \"n\": null, \"t\": true, \"ea\": [], \"uni\": \"\xc3\xa9 \\u0001\"}",
     "{\"a\":\"tab\\there\\\\\",\"b\":[1,2.50,{\"k\":\"a \\\"q\\\" , b: c\"}],\"e\":{},"
     "\"n\":null,\"t\":true,\"ea\":[],\"uni\":\"\xc3\xa9 \\u0001\"}"},
    {"{}", "{}"},
    {"\"\"", "\"\""},
    {"[\"\\\\\", \" \", \"\\\\\\\"\"]", "[\"\\\\\",\" \",\"\\\\\\\"\"]"}, /* escapes end strings */
    {" {\n\t\"x\" :\r\n [ 1 , 2 ] } ", "{\"x\":[1,2]}"},
};

static void test_compact(void)
{
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        char *s = strdup(vectors[i].in);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        size_t n = gt_json_compact(s);
        TH_EQ_STR(s, vectors[i].out);
        TH_EQ_INT(n, strlen(vectors[i].out));
        /* the same value as before */
        json_t *a = json_loads(vectors[i].in, JSON_DECODE_ANY, NULL);
        json_t *b = json_loads(s, JSON_DECODE_ANY, NULL);
        CU_ASSERT_PTR_NOT_NULL(a);
        CU_ASSERT(json_equal(a, b));
        json_decref(a);
        json_decref(b);
        free(s);
    }
}

/* Accepted: the same value as json_loadb's, and the same text back. */
static void test_parse_accepts(void)
{
    static const char *docs[] = {
        "{}",
        "[]",
        " \t\r\n[ ] ",
        "[0,-0,1,-1,9223372036854775807,-9223372036854775808]",
        "[0.0,-0.0,1.5,2.5e-5,1E3,1e+3,1e-300,0.1]",
        "[true,false,null]",
        "{\"a\":{\"b\":[{\"c\":\"\"}]}}",
        "{\"k\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",
        "[\"\\u00e9\\u20AC\\ud83d\\ude00\",\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]",
        "{\"a\":1,\"a\":2}", /* the last one kept, as jansson keeps it */
        "{\"\\u00e9\":[],\"e\\u0301\":{}}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_error_t je;
        gt_json_error_t ge;
        json_t *want = json_loads(docs[i], 0, &je);
        json_t *got = gt_json_parse(docs[i], strlen(docs[i]), 0, &ge);
        if (!want || !got)
            fprintf(stderr, "  %s: jansson %s, gt %s\n", docs[i], want ? "ok" : je.text,
                    got ? "ok" : ge.text);
        CU_ASSERT_PTR_NOT_NULL_FATAL(want);
        CU_ASSERT_PTR_NOT_NULL_FATAL(got);
        CU_ASSERT(json_equal(want, got));
        same_as_jansson(got, 256);
        json_decref(want);
        json_decref(got);
    }
    json_t *dup = gt_json_parse("{\"a\":1,\"a\":2}", 13, 0, NULL);
    TH_EQ_INT(json_integer_value(json_object_get(dup, "a")), 2);
    json_decref(dup);
}

/* Refused, with where: what jansson refuses, and a NUL byte anywhere. */
static void test_parse_refuses(void)
{
    static const struct {
        const char *doc;
        size_t len, flags, position;
    } bad[] = {
        {"", 0, 0, 0},
        {"1", 1, 0, 0}, /* an object or an array only */
        {"\"s\"", 3, 0, 0},
        {"[1,]", 4, 0, 3},
        {"[01]", 4, 0, 2},
        {"[1.]", 4, 0, 1},
        {"[.5]", 4, 0, 1},
        {"[-]", 3, 0, 1},
        {"[1e]", 4, 0, 1},
        {"[tru]", 5, 0, 1},
        {"[nul", 4, 0, 1},
        {"{\"a\" 1}", 7, 0, 5},
        {"{\"a\":1,}", 8, 0, 7},
        {"{1:1}", 5, 0, 1},
        {"[\"\x01\"]", 4, 0, 2},         /* a control character */
        {"[\"\xc0\xaf\"]", 5, 0, 2},     /* an overlong '/' */
        {"[\"\xed\xa0\x80\"]", 6, 0, 2}, /* a surrogate in UTF-8 */
        {"[\"\xf4\x90\x80\x80\"]", 7, 0, 2},
        {"[\"\\ud800\"]", 9, 0, 2}, /* a high surrogate alone */
        {"[\"\\udc00\"]", 9, 0, 2},
        {"[\"\\u0000\"]", 9, 0, 2},
        {"[\"\\x\"]", 6, 0, 2},
        {"[\"abc", 5, 0, 5},
        {"[9223372036854775808]", 21, 0, 1},
        {"[1e400]", 7, 0, 1},
        {"[1] x", 5, 0, 4},
        {"[12\0]", 5, 0, 3}, /* jansson takes this one */
        {"{\"a\":1,\"a\":2}", 13, JSON_REJECT_DUPLICATES, 7},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gt_json_error_t e;
        json_t *v = gt_json_parse(bad[i].doc, bad[i].len, bad[i].flags, &e);
        if (v || e.position != bad[i].position)
            fprintf(stderr, "  case %zu (%.*s): %s at %zu\n", i, (int)bad[i].len, bad[i].doc,
                    v ? "accepted" : e.text, v ? 0 : e.position);
        CU_ASSERT_PTR_NULL(v);
        CU_ASSERT(e.text[0] != '\0');
        TH_EQ_INT(e.position, bad[i].position);
        json_decref(v);
    }
    /* 2,048 levels are read, 2,049 are not (as jansson counts them) */
    char deep[4200];
    for (int levels = 2047; levels <= 2049; levels++) {
        size_t n = 0;
        for (int i = 0; i < levels; i++)
            deep[n++] = '[';
        for (int i = 0; i < levels; i++)
            deep[n++] = ']';
        json_t *v = gt_json_parse(deep, n, 0, NULL);
        json_t *w = json_loadb(deep, n, 0, NULL);
        CU_ASSERT((v != NULL) == (levels <= 2048));
        CU_ASSERT((v != NULL) == (w != NULL));
        json_decref(v);
        json_decref(w);
    }
}

int main(void)
{
    static const th_test_t tests[] = {
        {"values are written as json_dumps writes them", test_values},
        {"a large text outgrows the caller's buffer intact", test_large},
        {"raw pieces and values make one text; a failure is remembered", test_raw},
        {"jsonb text is made compact, strings untouched", test_compact},
        {"parsing gives jansson's value for valid JSON", test_parse_accepts},
        {"parsing refuses invalid JSON and says where", test_parse_refuses},
        {NULL, NULL},
    };
    return th_run("json_text", tests);
}
