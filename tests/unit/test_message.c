/* test_message.c - lib/message's gt_json_compact: PostgreSQL's jsonb text
 * (read off a real server) made compact, strings left as they are. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "message.h"

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

int main(void)
{
    static const th_test_t tests[] = {
        {"jsonb text is made compact, strings untouched", test_compact},
        {NULL, NULL},
    };
    return th_run("message", tests);
}
