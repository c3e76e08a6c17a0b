/* test_api.c - gantry-api's pieces that need no server: the api section of
 * the configuration and the mapping of vendor bodies to Gantry requests. */
#include <string.h>

#include "api.h"
#include "harness.h"

static const char base[] = "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9092\"}, \"api\": %s}";

/* The configuration with this api section, or NULL with the problems in err. */
static gt_config_t *load(const char *api, char *err, size_t len)
{
    char text[2048];
    snprintf(text, sizeof(text), base, api);
    return gt_config_parse(text, ".", err, len);
}

/* The api section of a configuration that must load. */
static const gt_api_config_t *section(gt_config_t *cfg)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg->api);
    return cfg->api;
}

/* A configuration whose api section must fail to load, naming want in err. */
static void refused(const char *api, const char *want)
{
    char err[1024];
    gt_config_t *cfg = load(api, err, sizeof(err));
    CU_ASSERT_PTR_NULL(cfg);
    gt_config_free(cfg);
    if (!cfg && !strstr(err, want))
        fprintf(stderr, "  missing \"%s\" in:\n%s\n", want, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
}

static void test_config_defaults(void)
{
    char err[1024];
    gt_config_t *cfg = load("{}", err, sizeof(err));
    const gt_api_config_t *ac = section(cfg);
    TH_EQ_STR(ac->host, "127.0.0.1");
    TH_EQ_INT(ac->port, 8090);
    TH_EQ_INT(ac->max_file_lines, 50000);
    TH_EQ_INT(ac->max_file_bytes, 200LL << 20);
    TH_EQ_INT(ac->min_window_s, 86400);
    TH_EQ_STR(ac->control_topic, "gantry.control");
    gt_config_free(cfg);
}

static void test_config_problems(void)
{
    refused("{\"colour\": 1}", "api.colour: unknown key");
    refused("{\"port\": 70000}", "api.port");
    refused("{\"models\": {\"gpt-4o\": 3}}", "api.models.gpt-4o");
    refused("{\"min_completion_window_s\": 100, \"max_completion_window_s\": 10}",
            "api.min_completion_window_s: above api.max_completion_window_s");
}

static void test_openai_map(void)
{
    char err[1024], why[256];
    gt_config_t *cfg =
        load("{\"models\": {\"gpt-4o-mini\": \"small\", \"*\": \"auto\"}}", err, sizeof(err));
    const gt_api_config_t *ac = section(cfg);
    json_t *body =
        json_loads("{\"model\": \"gpt-4o-mini\", \"max_tokens\": 9, \"temperature\": 0.5,"
                   " \"stop\": \"END\", \"messages\": [{\"role\": \"developer\","
                   " \"content\": \"be brief\"}, {\"role\": \"user\", \"content\":"
                   " [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": \"text\","
                   " \"text\": \"b\"}]}]}",
                   0, NULL);
    json_t *r = gt_api_openai_body(ac, "/v1/chat/completions", body, why, sizeof(why));
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
    r = gt_api_openai_body(ac, "/v1/completions", body, why, sizeof(why));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    TH_EQ_STR(json_string_value(json_object_get(r, "kind")), "generate");
    TH_EQ_STR(json_string_value(json_object_get(r, "model")), "auto"); /* "*" */
    TH_EQ_STR(json_string_value(json_object_get(r, "input")), "hi");
    json_decref(r);
    json_decref(body);

    body = json_loads("{\"model\": \"e\", \"input\": [\"x\", \"y\"]}", 0, NULL);
    r = gt_api_openai_body(ac, "/v1/embeddings", body, why, sizeof(why));
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
        CU_ASSERT_PTR_NULL(gt_api_openai_body(ac, bad[i].endpoint, body, why, sizeof(why)));
        CU_ASSERT_PTR_NOT_NULL(strstr(why, bad[i].why));
        json_decref(body);
    }
    gt_config_free(cfg);
}

static void test_anthropic_map(void)
{
    char err[1024], why[256];
    gt_config_t *cfg = load("{}", err, sizeof(err));
    const gt_api_config_t *ac = section(cfg);
    json_t *p = json_loads("{\"model\": \"claude\", \"max_tokens\": 5, \"system\": \"s\","
                           " \"stop_sequences\": [\"x\"],"
                           " \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
                           0, NULL);
    json_t *r = gt_api_anthropic_params(ac, p, why, sizeof(why));
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
    CU_ASSERT_PTR_NULL(gt_api_anthropic_params(ac, p, why, sizeof(why)));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "max_tokens"));
    json_decref(p);
    gt_config_free(cfg);
}

int main(void)
{
    gt_api_config_register();
    static const th_test_t tests[] = {{"api section defaults", test_config_defaults},
                                      {"api section problems", test_config_problems},
                                      {"OpenAI bodies to requests", test_openai_map},
                                      {"Anthropic params to requests", test_anthropic_map},
                                      {NULL, NULL}};
    return th_run("api", tests);
}
