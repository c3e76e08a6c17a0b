/* test_api.c - gantry-api's pieces that need no server: the api section of
 * the configuration and the mapping of vendor bodies to Gantry requests. */
#include <string.h>

#include "api.h"
#include "harness.h"

static const char base[] = "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9092\"}, \"api\": %s}";

static int load(const char *api, gt_api_config_t *ac, char *err, size_t len)
{
    char text[2048];
    snprintf(text, sizeof(text), base, api);
    char cerr[1024];
    gt_config_t *cfg = gt_config_parse(text, ".", cerr, sizeof(cerr));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    int rc = gt_api_config_load(cfg, ac, err, len);
    if (rc == 0)
        ac->models = json_incref(ac->models); /* outlive cfg in the test */
    gt_config_free(cfg);
    return rc;
}

static void test_config(void)
{
    gt_api_config_t ac;
    char err[256];
    TH_EQ_INT(load("{}", &ac, err, sizeof(err)), 0);
    TH_EQ_STR(ac.host, "127.0.0.1");
    TH_EQ_INT(ac.port, 8090);
    TH_EQ_INT(ac.max_file_lines, 50000);
    TH_EQ_INT(ac.max_file_bytes, 200LL << 20);
    TH_EQ_INT(ac.min_window_s, 86400);
    TH_EQ_STR(ac.control_topic, "gantry.control");
    gt_api_config_free(&ac);
    CU_ASSERT(load("{\"colour\": 1}", &ac, err, sizeof(err)) < 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "api.colour: unknown key"));
    CU_ASSERT(load("{\"port\": 70000}", &ac, err, sizeof(err)) < 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "api.port"));
    CU_ASSERT(load("{\"models\": {\"gpt-4o\": 3}}", &ac, err, sizeof(err)) < 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "api.models.gpt-4o"));
    CU_ASSERT(load("{\"min_completion_window_s\": 100, \"max_completion_window_s\": 10}", &ac, err,
                   sizeof(err)) < 0);
}

static void test_openai_map(void)
{
    gt_api_config_t ac;
    char err[256], why[256];
    TH_EQ_INT(
        load("{\"models\": {\"gpt-4o-mini\": \"small\", \"*\": \"auto\"}}", &ac, err, sizeof(err)),
        0);
    json_t *body =
        json_loads("{\"model\": \"gpt-4o-mini\", \"max_tokens\": 9, \"temperature\": 0.5,"
                   " \"stop\": \"END\", \"messages\": [{\"role\": \"developer\","
                   " \"content\": \"be brief\"}, {\"role\": \"user\", \"content\":"
                   " [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": \"text\","
                   " \"text\": \"b\"}]}]}",
                   0, NULL);
    json_t *r = gt_api_openai_body(&ac, "/v1/chat/completions", body, why, sizeof(why));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    TH_EQ_STR(json_string_value(json_object_get(r, "kind")), "chat");
    TH_EQ_STR(json_string_value(json_object_get(r, "model")), "small");
    json_t *msgs = json_object_get(json_object_get(r, "input"), "messages");
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "system");
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 1), "content")), "a\nb");
    json_t *params = json_object_get(r, "parameters");
    TH_EQ_INT(json_integer_value(json_object_get(params, "max_tokens")), 9);
    TH_EQ_STR(json_string_value(json_array_get(json_object_get(params, "stop"), 0)), "END");
    json_decref(r);
    json_decref(body);

    body = json_loads("{\"model\": \"other\", \"prompt\": \"hi\"}", 0, NULL);
    r = gt_api_openai_body(&ac, "/v1/completions", body, why, sizeof(why));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    TH_EQ_STR(json_string_value(json_object_get(r, "kind")), "generate");
    TH_EQ_STR(json_string_value(json_object_get(r, "model")), "auto"); /* "*" */
    TH_EQ_STR(json_string_value(json_object_get(r, "input")), "hi");
    json_decref(r);
    json_decref(body);

    body = json_loads("{\"model\": \"e\", \"input\": [\"x\", \"y\"]}", 0, NULL);
    r = gt_api_openai_body(&ac, "/v1/embeddings", body, why, sizeof(why));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    TH_EQ_STR(json_string_value(json_object_get(r, "kind")), "embed");
    TH_EQ_INT(json_array_size(json_object_get(r, "input")), 2);
    json_decref(r);
    json_decref(body);

    static const struct {
        const char *endpoint, *body, *why;
    } bad[] = {
        {"/v1/chat/completions", "{\"model\": \"m\"}", "messages"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
         "model"},
        {"/v1/chat/completions",
         "{\"model\": \"m\", \"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", "role"},
        {"/v1/chat/completions",
         "{\"model\": \"m\", \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": "
         "\"x\"}]}",
         "stream"},
        {"/v1/chat/completions",
         "{\"model\": \"m\", \"temperature\": 3, \"messages\": [{\"role\": \"user\", \"content\": "
         "\"x\"}]}",
         "temperature"},
        {"/v1/completions", "{\"model\": \"m\", \"prompt\": 5}", "prompt"},
        {"/v1/embeddings", "{\"model\": \"m\", \"input\": [1, 2]}", "input"},
        {"/v1/responses", "{\"model\": \"m\"}", "endpoint"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        body = json_loads(bad[i].body, 0, NULL);
        why[0] = 0;
        CU_ASSERT_PTR_NULL(gt_api_openai_body(&ac, bad[i].endpoint, body, why, sizeof(why)));
        CU_ASSERT_PTR_NOT_NULL(strstr(why, bad[i].why));
        json_decref(body);
    }
    json_decref(ac.models);
    gt_api_config_free(&ac);
}

static void test_anthropic_map(void)
{
    gt_api_config_t ac;
    char err[256], why[256];
    TH_EQ_INT(load("{}", &ac, err, sizeof(err)), 0);
    json_t *p = json_loads("{\"model\": \"claude\", \"max_tokens\": 5, \"system\": \"s\","
                           " \"stop_sequences\": [\"x\"],"
                           " \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
                           0, NULL);
    json_t *r = gt_api_anthropic_params(&ac, p, why, sizeof(why));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    json_t *msgs = json_object_get(json_object_get(r, "input"), "messages");
    TH_EQ_INT(json_array_size(msgs), 2);
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 0), "content")), "s");
    TH_EQ_STR(json_string_value(json_object_get(r, "model")), "claude");
    json_decref(r);
    json_decref(p);
    p = json_loads(
        "{\"model\": \"claude\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", 0,
        NULL);
    CU_ASSERT_PTR_NULL(gt_api_anthropic_params(&ac, p, why, sizeof(why)));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "max_tokens"));
    json_decref(p);
    gt_api_config_free(&ac);
}

int main(void)
{
    static const th_test_t tests[] = {{"api section", test_config},
                                      {"OpenAI bodies to requests", test_openai_map},
                                      {"Anthropic params to requests", test_anthropic_map},
                                      {NULL, NULL}};
    return th_run("api", tests);
}
