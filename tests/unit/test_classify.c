/* test_classify.c - routing a request to a model: named, auto by hint, kind and size. */
#include <string.h>

#include "classify.h"
#include "dispatcher_config.h"
#include "harness.h"

static const char *cfg_text =
    "{\"kafka\": {\"bootstrap_servers\": \"x:1\"},"
    " \"pools\": {\"p\": {\"endpoint\": \"http://127.0.0.1:1\", \"api_key\": \"k\"}},"
    " \"models\": {\"small\": {\"pool\": \"p\", \"lane\": \"small\", \"max_input_chars\": 4000},"
    "             \"large\": {\"pool\": \"p\", \"lane\": \"large\"},"
    "             \"embedder\": {\"pool\": \"p\", \"lane\": \"small\"}},"
    " \"routing\": {\"rules\": [{\"kind\": \"embed\", \"model\": \"embedder\"},"
    "                          {\"hint\": \"simple\", \"model\": \"small\"},"
    "                          {\"hint\": \"complex\", \"model\": \"large\"},"
    "                          {\"max_input_chars\": 200, \"model\": \"small\"}],"
    "             \"default\": \"large\"}}";

static gt_config_t *cfg;

static const char *route_of(const char *req_text, const char **code)
{
    json_t *req = json_loads(req_text, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    gt_route_t r;
    char err[256];
    *code = NULL;
    int rc = gt_classify(cfg, req, &r, code, err, sizeof(err));
    json_decref(req);
    return rc == 0 ? r.model->name : NULL;
}

static void test_named_and_unknown(void)
{
    const char *code;
    TH_EQ_STR(route_of("{\"kind\":\"generate\",\"model\":\"large\",\"input\":\"hi\"}", &code),
              "large");
    CU_ASSERT_PTR_NULL(
        route_of("{\"kind\":\"generate\",\"model\":\"gpt-9\",\"input\":\"hi\"}", &code));
    TH_EQ_STR(code, "unknown_model");
}

static void test_auto(void)
{
    const char *code;
    TH_EQ_STR(route_of("{\"kind\":\"generate\",\"model\":\"auto\",\"input\":\"long long\","
                       "\"routing\":{\"hint\":\"simple\"}}",
                       &code),
              "small");
    TH_EQ_STR(route_of("{\"kind\":\"generate\",\"model\":\"auto\",\"input\":\"short\","
                       "\"routing\":{\"hint\":\"complex\"}}",
                       &code),
              "large");
    TH_EQ_STR(route_of("{\"kind\":\"embed\",\"model\":\"auto\",\"input\":[\"a\",\"b\"],"
                       "\"routing\":{\"hint\":\"complex\"}}",
                       &code),
              "embedder");
    /* no hint: size decides */
    TH_EQ_STR(route_of("{\"kind\":\"generate\",\"model\":\"auto\",\"input\":\"tiny\"}", &code),
              "small");
    char big[600] = "{\"kind\":\"chat\",\"model\":\"auto\",\"input\":{\"messages\":[{\"role\":"
                    "\"user\",\"content\":\"";
    size_t n = strlen(big);
    memset(big + n, 'x', 300);
    strcpy(big + n + 300, "\"}]}}");
    TH_EQ_STR(route_of(big, &code), "large");
}

static void test_size_counts_code_points_and_limits(void)
{
    json_t *s = json_string("h\xc3\xa9llo \xe2\x82\xac"); /* héllo € */
    TH_EQ_INT(gt_classify_input_chars(s), 7);
    json_decref(s);
    const char *code;
    char req[5200];
    strcpy(req, "{\"kind\":\"generate\",\"model\":\"small\",\"input\":\"");
    size_t n = strlen(req);
    memset(req + n, 'y', 4001);
    strcpy(req + n + 4001, "\"}");
    CU_ASSERT_PTR_NULL(route_of(req, &code));
    TH_EQ_STR(code, "too_large");
}

int main(void)
{
    gt_dispatcher_config_register();
    char err[1024];
    cfg = gt_config_parse(cfg_text, NULL, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    static const th_test_t tests[] = {{"named and unknown models", test_named_and_unknown},
                                      {"auto routing", test_auto},
                                      {"sizes and limits", test_size_counts_code_points_and_limits},
                                      {NULL, NULL}};
    int rc = th_run("classify", tests);
    gt_config_free(cfg);
    return rc;
}
