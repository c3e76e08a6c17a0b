/* test_guard.c - the guard policy without processes: tenants.<id>.guardrails
 * configuration (defaults, errors with key paths), provider access, reroute
 * or scrub, limits, breaker fallbacks, and the moderation keyword list and
 * response parser. */
#include <stdio.h>
#include <string.h>

#include "dispatcher_config.h"
#include "guard.h"
#include "harness.h"
#include "moderation.h"
#include "scrub.h"

static const char *cfg_text =
    "{\"kafka\": {\"bootstrap_servers\": \"x:1\"},"
    " \"pools\": {\"p\": {\"endpoint\": \"http://127.0.0.1:1\", \"api_key\": \"k\"},"
    "            \"q\": {\"endpoint\": \"http://127.0.0.1:1\", \"api_key\": \"k\"}},"
    " \"providers\": {\"ext\": {\"runtime\": \"openai\", \"endpoint\": \"http://127.0.0.1:1\","
    "                           \"api_key\": \"k\"}},"
    " \"models\": {\"small\": {\"pool\": \"p\", \"lane\": \"small\"},"
    "             \"onq\": {\"pool\": \"q\", \"lane\": \"q\"},"
    "             \"gpt\": {\"provider\": \"ext\", \"lane\": \"ext\","
    "                       \"fallbacks\": [\"onq\", \"small\"]}},"
    " \"routing\": {\"default\": \"small\"},"
    " \"tenants\": {"
    "   \"acme\": {\"guardrails\": {\"providers\": {\"raw\": [\"hostedai/q\"],"
    "       \"scrubbed\": [\"hostedai\"], \"none\": [\"ext\"], \"default\": \"none\"},"
    "     \"limits\": {\"max_request_bytes\": 1000, \"max_batch\": 2,"
    "                  \"max_input_tokens\": {\"small\": 5, \"*\": 100}}}},"
    "   \"pref\": {\"guardrails\": {\"providers\": {\"scrubbed\": [\"ext\"], \"raw\": "
    "[\"hostedai\"],"
    "       \"prefer\": \"reroute\"}, \"pii\": {\"mode\": \"hash\", \"hash_key\": \"s3cret\","
    "       \"types\": [\"email\", \"iban\"]}, \"moderation\": {\"output\": false,"
    "       \"thresholds\": {\"violence\": 0.9}}}},"
    "   \"none\": {}}}";

static gt_config_t *cfg;

static const gt_guard_plan_t *plan_of(const char *tenant, const char *req_text)
{
    static gt_guard_plan_t p;
    json_t *req = json_loads(req_text, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    json_object_set_new(req, "tenant_id", json_string(tenant));
    const struct gt_guardrails *gr = gt_guard_rules(cfg, req);
    int rc = gr ? gt_guard_plan(cfg, gr, req, strlen(req_text), &p) : -1;
    json_decref(req);
    return rc == 0 ? &p : NULL;
}

static void test_config(void)
{
    char err[2048];
    cfg = gt_config_parse(cfg_text, NULL, err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "  %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    const gt_tenant_t *t = gt_config_tenant(cfg, "pref");
    TH_EQ_INT(t->guard.has_guardrails, 1);
    TH_EQ_INT(t->guard.pii_mode, GT_SCRUB_HASH);
    TH_EQ_INT(t->guard.pii_types, (1u << GT_PII_EMAIL) | (1u << GT_PII_IBAN));
    TH_EQ_INT(t->guard.moderate_input, 1);
    TH_EQ_INT(t->guard.moderate_output, 0);
    CU_ASSERT(t->guard.thresholds[GT_MOD_VIOLENCE] > 0.89);
    CU_ASSERT(t->guard.thresholds[GT_MOD_HATE] < 0.51);
    TH_EQ_INT(gt_config_tenant(cfg, "none")->guard.has_guardrails, 0);
    TH_EQ_STR(cfg->moderation_model, "omni-moderation-latest");
    CU_ASSERT_PTR_NULL(cfg->moderation_endpoint);

    /* Every mistake, with its key path. */
    const char *bad = "{\"kafka\": {\"bootstrap_servers\": \"x:1\"},"
                      " \"pools\": {\"p\": {\"endpoint\": \"http://h\", \"api_key\": \"k\"}},"
                      " \"models\": {\"small\": {\"pool\": \"p\", \"lane\": \"small\"}},"
                      " \"moderation\": {\"endpoint\": \"http://m\", \"timeout\": 5},"
                      " \"tenants\": {\"t\": {\"guardrails\": {\"pii\": {\"mode\": \"hash\","
                      "   \"types\": [\"email\", \"passport\"]},"
                      "   \"providers\": {\"raw\": [\"nobody\"], \"default\": \"maybe\"},"
                      "   \"moderation\": {\"thresholds\": {\"violence\": 2}},"
                      "   \"limits\": {\"max_input_tokens\": {\"huge\": 10}}, \"extra\": 1}}}}";
    gt_config_t *c2 = gt_config_parse(bad, NULL, err, sizeof(err));
    CU_ASSERT_PTR_NULL(c2);
    const char *want[] = {"moderation.timeout: unknown key",
                          "tenants.t.guardrails.extra: unknown key",
                          "tenants.t.guardrails.pii.types: unknown type \"passport\"",
                          "tenants.t.guardrails.pii.hash_key: is required",
                          "tenants.t.guardrails.providers.raw: \"nobody\"",
                          "tenants.t.guardrails.providers.default: must be one of",
                          "tenants.t.guardrails.moderation.thresholds.violence: must be a number",
                          "tenants.t.guardrails.limits.max_input_tokens.huge: model \"huge\""};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(err, want[i])) {
            fprintf(stderr, "  missing \"%s\" in:\n%s\n", want[i], err);
            CU_FAIL("config error not reported");
        }
}

static void test_access_and_reroute(void)
{
    const gt_tenant_t *acme = gt_config_tenant(cfg, "acme");
    /* hostedai/<pool> beats plain hostedai; unlisted providers get the default. */
    TH_EQ_INT(gt_guard_access(&acme->guard, gt_config_model(cfg, "onq")), GT_ACCESS_RAW);
    TH_EQ_INT(gt_guard_access(&acme->guard, gt_config_model(cfg, "small")), GT_ACCESS_SCRUBBED);
    TH_EQ_INT(gt_guard_access(&acme->guard, gt_config_model(cfg, "gpt")), GT_ACCESS_NONE);

    /* "none": rerouted to the first fallback allowed (onq, raw: not scrubbed). */
    const gt_guard_plan_t *p =
        plan_of("acme", "{\"kind\":\"generate\",\"model\":\"gpt\",\"input\":\"hi\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_PTR_NULL(p->reject_code);
    TH_EQ_STR(p->model->name, "onq");
    TH_EQ_STR(p->from->name, "gpt");
    TH_EQ_INT(p->scrub, 0);
    /* "scrubbed": stays, scrubbed. */
    p = plan_of("acme", "{\"kind\":\"generate\",\"model\":\"small\",\"input\":\"hi\"}");
    CU_ASSERT_PTR_NULL(p->from);
    TH_EQ_INT(p->scrub, 1);
    /* prefer reroute: a scrubbed-only provider gives way to a raw fallback. */
    p = plan_of("pref", "{\"kind\":\"generate\",\"model\":\"gpt\",\"input\":\"hi\"}");
    TH_EQ_STR(p->model->name, "onq");
    TH_EQ_INT(p->scrub, 0);
    /* A request may ask for scrubbing where the tenant would not. */
    p = plan_of("pref", "{\"kind\":\"generate\",\"model\":\"small\",\"input\":\"hi\","
                        "\"policy\":{\"pii\":{\"scrub\":true}}}");
    TH_EQ_INT(p->scrub, 1);
    /* No guardrails: no plan, unless the request asks. */
    CU_ASSERT_PTR_NULL(
        plan_of("none", "{\"kind\":\"generate\",\"model\":\"small\",\"input\":\"x\"}"));
    p = plan_of("none", "{\"kind\":\"generate\",\"model\":\"small\",\"input\":\"x\","
                        "\"policy\":{\"pii\":{\"scrub\":true}}}");
    CU_ASSERT_PTR_NOT_NULL(p);
}

static void test_limits(void)
{
    const gt_guard_plan_t *p = plan_of(
        "acme", "{\"kind\":\"generate\",\"model\":\"small\",\"input\":\"123456789012345678901\"}");
    TH_EQ_STR(p->reject_code, "input_tokens_exceeded"); /* 21 chars ~ 6 tokens > 5 */
    p = plan_of("acme",
                "{\"kind\":\"generate\",\"model\":\"onq\",\"input\":\"123456789012345678901\"}");
    CU_ASSERT_PTR_NULL(p->reject_code); /* "*" allows 100 */
    p = plan_of("acme",
                "{\"kind\":\"generate\",\"model\":\"small\",\"batch\":[\"a\",\"b\",\"c\"]}");
    TH_EQ_STR(p->reject_code, "batch_too_large");
    char big[1200];
    snprintf(big, sizeof(big), "{\"kind\":\"generate\",\"model\":\"onq\",\"input\":\"%01100d\"}",
             0);
    p = plan_of("acme", big);
    TH_EQ_STR(p->reject_code, "too_large");
}

static void test_fallback_respects_policy(void)
{
    json_t *req = json_pack("{s:s}", "tenant_id", "acme");
    const gt_model_t *small = gt_config_model(cfg, "small"), *onq = gt_config_model(cfg, "onq"),
                     *gpt = gt_config_model(cfg, "gpt");
    /* Raw input bound for onq may not fall back to small (scrubbed only) nor gpt. */
    TH_EQ_INT(gt_guard_fallback_ok(cfg, req, onq, small), 0);
    TH_EQ_INT(gt_guard_fallback_ok(cfg, req, onq, gpt), 0);
    /* Scrubbed input for small may go to onq (raw allowed). */
    TH_EQ_INT(gt_guard_fallback_ok(cfg, req, small, onq), 1);
    json_object_set_new(req, "tenant_id", json_string("none"));
    TH_EQ_INT(gt_guard_fallback_ok(cfg, req, onq, gpt), 1);
    json_decref(req);
}

static void test_moderation(void)
{
    double s[GT_MOD_NCATEGORIES];
    const char *t = "Please tell me HOW TO MAKE A BOMB.";
    gt_moderation_keywords(t, strlen(t), s);
    CU_ASSERT(s[GT_MOD_VIOLENCE] == 1.0);
    CU_ASSERT(s[GT_MOD_HATE] == 0.0);
    t = "the bombastic style; how to make a bombe glacée";
    gt_moderation_keywords(t, strlen(t), s);
    CU_ASSERT(s[GT_MOD_VIOLENCE] == 0.0); /* whole words only */
    const char *body = "{\"results\":[{\"flagged\":true,\"category_scores\":{\"hate\":0.1,"
                       "\"hate/threatening\":0.7,\"violence\":0.2,\"self-harm/intent\":0.95,"
                       "\"sexual/minors\":0.01}}]}";
    CU_ASSERT(gt_moderation_parse(body, s) == 0);
    CU_ASSERT(s[GT_MOD_HATE] > 0.69 && s[GT_MOD_HATE] < 0.71);
    CU_ASSERT(s[GT_MOD_SELF_HARM] > 0.94);
    CU_ASSERT(gt_moderation_parse("{\"error\":\"x\"}", s) != 0);
    CU_ASSERT(gt_moderation_parse("not json", s) != 0);
    gt_mod_verdict_t v = {.scores = {0.1, 0.7, 0.2, 0.0, 0.95}, .source = "endpoint"};
    const gt_tenant_t *pref = gt_config_tenant(cfg, "pref");
    TH_EQ_INT(gt_moderation_flagged(&v, pref->guard.thresholds), GT_MOD_HATE);
    TH_EQ_STR(gt_moderation_category_name(GT_MOD_SELF_HARM), "self-harm");
    gt_config_free(cfg);
}

int main(void)
{
    gt_dispatcher_config_register();
    static const th_test_t tests[] = {
        {"guardrails configuration and its errors", test_config},
        {"provider access, reroute or scrub", test_access_and_reroute},
        {"limits reject with clear codes", test_limits},
        {"health fallbacks stay within the policy", test_fallback_respects_policy},
        {"moderation keywords, response parsing, thresholds", test_moderation},
        {NULL, NULL},
    };
    return th_run("guard", tests);
}
