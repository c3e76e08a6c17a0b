/* test_wire.c - the hf_endpoint, vertex_gemini and bedrock_anthropic wire
 * runtimes: exact requests for generate/chat/embed, realistic and malformed
 * answers, then each request sent over real HTTP on loopback to a recording
 * server (the Bedrock signature recomputed independently from what arrived,
 * the Vertex token exchange checked against the service account's public key). */
#include <jansson.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "config.h"
#include "crypto_check.h"
#include "gcp_auth.h"
#include "harness.h"
#include "http.h"
#include "provider.h"
#include "recorder.h"
#include "worker_config.h"

#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define HF_KEY "hf_SECRETtokenVALUE123"
#define AWS_AKID "AKIDEXAMPLE"
#define AWS_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define AWS_TOKEN "FQoGZXIvYXdzEXAMPLEsessiontoken"
#define GCP_TOKEN "ya29.c.test-access-token"
#define T_2024 ((time_t)1718000000) /* 2024-06-10T06:13:20Z */

static char *priv_pem, *pub_pem;

/* ---- helpers ----------------------------------------------------------------- */

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j)
        fprintf(stderr, "bad JSON in test: %s: %s\n", e.text, text);
    return j;
}

static const char *hdr(const gt_wire_request_t *r, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; r->headers && r->headers[i]; i++)
        if (strncasecmp(r->headers[i], name, nl) == 0 && r->headers[i][nl] == ':')
            return r->headers[i] + nl + 2;
    return NULL;
}

static size_t n_headers(const gt_wire_request_t *r)
{
    size_t n = 0;
    while (r->headers && r->headers[n])
        n++;
    return n;
}

/* The request body equals want (JSON text), compared as JSON. */
static void body_is(const gt_wire_request_t *r, const char *want)
{
    json_t *got = json_loadb(r->body, r->body_len, 0, NULL), *w = J(want);
    int eq = got && w && json_equal(got, w);
    if (!eq)
        fprintf(stderr, "  body:\n    got  %.*s\n    want %s\n", (int)r->body_len, r->body, want);
    CU_ASSERT(eq);
    json_decref(got);
    json_decref(w);
}

static void output_is(const json_t *got, const char *want)
{
    json_t *w = J(want);
    int eq = got && w && json_equal(got, w);
    if (!eq) {
        char *g = got ? json_dumps(got, JSON_COMPACT) : NULL;
        fprintf(stderr, "  output:\n    got  %s\n    want %s\n", g ? g : "(null)", want);
        free(g);
    }
    CU_ASSERT(eq);
    json_decref(w);
}

/* A secret appears in no header but the named one, nowhere in URL or body. */
static void secret_only_in(const gt_wire_request_t *r, const char *secret, const char *header)
{
    CU_ASSERT(strstr(r->url, secret) == NULL);
    CU_ASSERT(!r->body || strstr(r->body, secret) == NULL);
    for (size_t i = 0; r->headers && r->headers[i]; i++) {
        int allowed = header && strncasecmp(r->headers[i], header, strlen(header)) == 0;
        if (!allowed && strstr(r->headers[i], secret))
            fprintf(stderr, "  secret in header %s\n", r->headers[i]);
        CU_ASSERT(allowed || strstr(r->headers[i], secret) == NULL);
    }
}

typedef struct parsed {
    int rc;
    const char *why;
    gt_wire_answer_t a;
} parsed_t;

static parsed_t parse_with(const gt_runtime_t *rt, const char *kind, json_t *input,
                           const char *body)
{
    gt_wire_task_t t = {kind, input, NULL, "m", NULL};
    parsed_t p = {0};
    p.why = NULL;
    p.rc = rt->parse(&t, body, strlen(body), &p.a, &p.why);
    return p;
}

/* A parse that succeeded with want (JSON text) and these token counts; frees
 * its output. */
static void answer_is(parsed_t *p, const char *want, int64_t prompt_tokens,
                      int64_t completion_tokens)
{
    TH_EQ_INT(p->rc, 0);
    output_is(p->a.output, want);
    TH_EQ_INT(p->a.prompt_tokens, prompt_tokens);
    TH_EQ_INT(p->a.completion_tokens, completion_tokens);
    json_decref(p->a.output);
    p->a.output = NULL;
}

/* Parses a well-formed body: must give want (JSON text) and these token counts. */
static void parses_to(const gt_runtime_t *rt, const char *kind, json_t *input, const char *body,
                      const char *want, int64_t prompt_tokens, int64_t completion_tokens)
{
    parsed_t p = parse_with(rt, kind, input, body);
    answer_is(&p, want, prompt_tokens, completion_tokens);
}

/* Parses a well-formed body: must give want (JSON text), token counts unchecked. */
static void parses_output(const gt_runtime_t *rt, const char *kind, json_t *input, const char *body,
                          const char *want)
{
    parsed_t p = parse_with(rt, kind, input, body);
    TH_EQ_INT(p.rc, 0);
    output_is(p.a.output, want);
    json_decref(p.a.output);
}

/* Parses a malformed body: must fail with a reason. */
static void parse_fails(const gt_runtime_t *rt, const char *kind, const char *input,
                        const char *body, const char *why_part)
{
    json_t *in = J(input);
    parsed_t p = parse_with(rt, kind, in, body);
    TH_EQ_INT(p.rc, -1);
    CU_ASSERT(p.a.output == NULL);
    CU_ASSERT(p.why && strstr(p.why, why_part) != NULL);
    if (p.why && !strstr(p.why, why_part))
        fprintf(stderr, "  why \"%s\" lacks \"%s\"\n", p.why, why_part);
    json_decref(in);
}

static gt_provider_t hf_provider(const char *endpoint)
{
    gt_provider_t p = {0};
    p.name = "hf";
    p.runtime = "hf_endpoint";
    p.endpoint = (char *)endpoint;
    p.api_key = HF_KEY;
    return p;
}

static gt_provider_t vertex_provider(const char *endpoint)
{
    gt_provider_t p = {0};
    p.name = "vertex";
    p.runtime = "vertex_gemini";
    p.endpoint = (char *)endpoint;
    p.project = "my-project";
    p.location = "europe-west4";
    return p;
}

static gt_provider_t bedrock_provider(const char *endpoint, const char *session_token)
{
    gt_provider_t p = {0};
    p.name = "bedrock";
    p.runtime = "bedrock_anthropic";
    p.endpoint = (char *)endpoint;
    p.region = "us-west-2";
    p.access_key_id = AWS_AKID;
    p.secret_access_key = AWS_SECRET;
    p.session_token = (char *)session_token;
    return p;
}

/* Builds kind/input/parameters on rt for p; returns build's rc. */
static int build_with(const gt_runtime_t *rt, const gt_provider_t *p, const char *kind,
                      const char *input, const char *params, const char *model, const char *token,
                      gt_wire_request_t *out, const char **why)
{
    json_t *in = J(input), *pa = params ? J(params) : NULL;
    gt_wire_task_t t = {kind, in, pa, model, TRACEPARENT};
    gt_wire_auth_t auth = {token, T_2024};
    memset(out, 0, sizeof(*out));
    *why = NULL;
    int rc = rt->build(p, &t, &auth, out, why);
    json_decref(in);
    json_decref(pa);
    return rc;
}

/* A task the runtime cannot express: build fails with a reason naming why_part. */
static void build_fails(const gt_runtime_t *rt, const gt_provider_t *p, const char *kind,
                        const char *input, const char *params, const char *model, const char *token,
                        const char *why_part)
{
    gt_wire_request_t r;
    const char *why;
    TH_EQ_INT(build_with(rt, p, kind, input, params, model, token, &r, &why), -1);
    if (!why || !strstr(why, why_part))
        fprintf(stderr, "  why \"%s\" lacks \"%s\"\n", why ? why : "(null)", why_part);
    CU_ASSERT(why && strstr(why, why_part) != NULL);
    gt_wire_request_free(&r);
}

/* ---- hf_endpoint ------------------------------------------------------------- */

static void test_hf_build(void)
{
    gt_provider_t p = hf_provider("https://xyz.us-east-1.aws.endpoints.huggingface.cloud");
    gt_wire_request_t r;
    const char *why;
    TH_EQ_INT(build_with(&gt_runtime_hf_endpoint, &p, "generate", "\"The capital of France is\"",
                         "{\"max_tokens\": 20, \"temperature\": 0.7, \"top_p\": 0.9, "
                         "\"stop\": [\"\\n\"], \"seed\": 42, \"user\": \"u1\"}",
                         "meta-llama/Llama-3.1-8B", NULL, &r, &why),
              0);
    TH_EQ_STR(r.method, "POST");
    TH_EQ_STR(r.url, "https://xyz.us-east-1.aws.endpoints.huggingface.cloud");
    TH_EQ_STR(hdr(&r, "Authorization"), "Bearer " HF_KEY);
    TH_EQ_STR(hdr(&r, "Content-Type"), "application/json");
    TH_EQ_STR(hdr(&r, "traceparent"), TRACEPARENT);
    TH_EQ_INT(n_headers(&r), 4);
    body_is(&r, "{\"inputs\": \"The capital of France is\", \"parameters\": {"
                "\"max_new_tokens\": 20, \"temperature\": 0.7, \"top_p\": 0.9, \"stop\": [\"\\n\"],"
                "\"seed\": 42, \"details\": true, \"decoder_input_details\": true,"
                "\"return_full_text\": false}}");
    secret_only_in(&r, HF_KEY, "Authorization");
    gt_wire_request_free(&r);

    /* TGI refuses temperature 0 and top_p 1: greedy is its default, so they are left out. */
    TH_EQ_INT(build_with(&gt_runtime_hf_endpoint, &p, "generate", "\"x\"",
                         "{\"temperature\": 0, \"top_p\": 1}", NULL, NULL, &r, &why),
              0);
    body_is(&r, "{\"inputs\": \"x\", \"parameters\": {\"details\": true, "
                "\"decoder_input_details\": true, \"return_full_text\": false}}");
    gt_wire_request_free(&r);

    TH_EQ_INT(build_with(&gt_runtime_hf_endpoint, &p, "chat",
                         "[{\"role\": \"system\", \"content\": \"Be brief.\"},"
                         " {\"role\": \"user\", \"content\": \"Hi\"}]",
                         "{\"max_tokens\": 5, \"temperature\": 0}", "tgi", NULL, &r, &why),
              0);
    TH_EQ_STR(r.url, "https://xyz.us-east-1.aws.endpoints.huggingface.cloud/v1/chat/completions");
    body_is(&r, "{\"model\": \"tgi\", \"messages\": [{\"role\": \"system\", \"content\": "
                "\"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 5,"
                "\"temperature\": 0}");
    TH_EQ_STR(hdr(&r, "traceparent"), TRACEPARENT);
    gt_wire_request_free(&r);

    TH_EQ_INT(build_with(&gt_runtime_hf_endpoint, &p, "embed", "[\"a\", \"b\"]", NULL, NULL, NULL,
                         &r, &why),
              0);
    TH_EQ_STR(r.url, "https://xyz.us-east-1.aws.endpoints.huggingface.cloud");
    body_is(&r, "{\"inputs\": [\"a\", \"b\"]}");
    TH_EQ_STR(hdr(&r, "Authorization"), "Bearer " HF_KEY);
    gt_wire_request_free(&r);

    /* Inputs that cannot be expressed fail with a reason. */
    build_fails(&gt_runtime_hf_endpoint, &p, "chat", "\"not messages\"", NULL, NULL, NULL,
                "chat input");
    build_fails(&gt_runtime_hf_endpoint, &p, "embed", "[1, 2]", NULL, NULL, NULL, "embed input");
}

static void test_hf_parse(void)
{
    const gt_runtime_t *rt = &gt_runtime_hf_endpoint;
    json_t *s = json_string("The capital of France is");
    /* Inference Endpoints text-generation answer with details (TGI). */
    parses_to(
        rt, "generate", s,
        "[{\"generated_text\": \" Paris.\", \"details\": {\"finish_reason\": \"eos_token\","
        " \"generated_tokens\": 3, \"seed\": null, \"prefill\": [{\"id\": 128000, \"text\": "
        "\"<|begin_of_text|>\", \"logprob\": null}, {\"id\": 791, \"text\": \"The\", \"logprob\":"
        " -2.1}, {\"id\": 6864, \"text\": \" capital\", \"logprob\": -5.0}], \"tokens\": [{\"id\":"
        " 12366, \"text\": \" Paris\", \"logprob\": -0.1, \"special\": false}]}}]",
        "{\"text\": \" Paris.\", \"finish_reason\": \"eos_token\"}", 3, 3);
    /* TGI's /generate shape (an object), without details: no usage reported. */
    parses_to(rt, "generate", s, "{\"generated_text\": \"ok\"}", "{\"text\": \"ok\"}", -1, -1);
    /* Messages API (OpenAI shape). */
    parses_to(
        rt, "chat", s,
        "{\"object\": \"chat.completion\", \"id\": \"\", \"created\": 1718000000, \"model\": "
        "\"tgi\", \"system_fingerprint\": \"2.0.4-sha\", \"choices\": [{\"index\": 0, \"message\":"
        " {\"role\": \"assistant\", \"content\": \"Hello!\"}, \"logprobs\": null, "
        "\"finish_reason\": \"stop\"}], \"usage\": {\"prompt_tokens\": 21, \"completion_tokens\":"
        " 3, \"total_tokens\": 24}}",
        "{\"text\": \"Hello!\", \"finish_reason\": \"stop\"}", 21, 3);
    /* Feature extraction: a flat vector, TEI's [[...]] for one input, one per input. */
    parses_output(rt, "embed", s, "[0.1, -0.2, 0.3]", "{\"embedding\": [0.1, -0.2, 0.3]}");
    parses_output(rt, "embed", s, "[[0.1, -0.2, 0.3]]", "{\"embedding\": [0.1, -0.2, 0.3]}");
    json_t *two = J("[\"a\", \"b\"]");
    parses_output(rt, "embed", two, "[[1, 2], [3, 4]]",
                  "{\"embedding\": [1, 2], \"embeddings\": [[1, 2], [3, 4]]}");
    json_decref(two);
    json_decref(s);
}

/* Bodies of the wrong shape fail with a reason, never a guessed output. */
static void test_hf_parse_malformed(void)
{
    const gt_runtime_t *rt = &gt_runtime_hf_endpoint;
    parse_fails(rt, "generate", "\"x\"", "<html>502 Bad Gateway</html>", "not JSON");
    parse_fails(rt, "generate", "\"x\"", "{\"error\": \"Model is overloaded\"}", "error object");
    parse_fails(rt, "generate", "\"x\"", "[{\"text\": \"x\"}]", "generated_text");
    parse_fails(rt, "chat", "\"x\"", "{\"choices\": []}", "choices[0].message.content");
    parse_fails(rt, "embed", "\"x\"", "[[[0.1, 0.2], [0.3, 0.4]]]", "per-token");
    parse_fails(rt, "embed", "[\"a\", \"b\"]", "[[1, 2]]", "one embedding per input");
    parse_fails(rt, "embed", "\"x\"", "[\"a\"]", "not an array of embeddings");
}

/* ---- vertex_gemini ----------------------------------------------------------- */

#define VERTEX_BASE                                                                                \
    "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-project/"                       \
    "locations/europe-west4/publishers/google/models/"

static void test_vertex_build(void)
{
    gt_provider_t p = vertex_provider(NULL); /* default endpoint from the location */
    gt_wire_request_t r;
    const char *why;
    TH_EQ_INT(build_with(&gt_runtime_vertex_gemini, &p, "generate", "\"Why is the sky blue?\"",
                         "{\"max_tokens\": 256, \"temperature\": 0.2, \"top_p\": 0.95, "
                         "\"stop\": [\"END\"], \"user\": \"ignored\"}",
                         "gemini-1.5-flash-002", GCP_TOKEN, &r, &why),
              0);
    TH_EQ_STR(r.url, VERTEX_BASE "gemini-1.5-flash-002:generateContent");
    TH_EQ_STR(hdr(&r, "Authorization"), "Bearer " GCP_TOKEN);
    TH_EQ_STR(hdr(&r, "Content-Type"), "application/json");
    TH_EQ_STR(hdr(&r, "traceparent"), TRACEPARENT);
    body_is(&r, "{\"contents\": [{\"role\": \"user\", \"parts\": [{\"text\": \"Why is the sky "
                "blue?\"}]}], \"generationConfig\": {\"temperature\": 0.2, \"maxOutputTokens\": "
                "256, \"topP\": 0.95, \"stopSequences\": [\"END\"]}}");
    secret_only_in(&r, GCP_TOKEN, "Authorization");
    gt_wire_request_free(&r);

    /* Chat: system -> systemInstruction, assistant -> model, same-role turns merged. */
    TH_EQ_INT(build_with(&gt_runtime_vertex_gemini, &p, "chat",
                         "{\"messages\": [{\"role\": \"system\", \"content\": \"You are terse.\"},"
                         " {\"role\": \"user\", \"content\": \"Hi\"},"
                         " {\"role\": \"assistant\", \"content\": \"Hello.\"},"
                         " {\"role\": \"user\", \"content\": \"Weather?\"},"
                         " {\"role\": \"user\", \"content\": \"In Paris.\"}]}",
                         NULL, "gemini-1.5-pro-002", GCP_TOKEN, &r, &why),
              0);
    TH_EQ_STR(r.url, VERTEX_BASE "gemini-1.5-pro-002:generateContent");
    body_is(&r, "{\"systemInstruction\": {\"parts\": [{\"text\": \"You are terse.\"}]},"
                "\"contents\": [{\"role\": \"user\", \"parts\": [{\"text\": \"Hi\"}]},"
                "{\"role\": \"model\", \"parts\": [{\"text\": \"Hello.\"}]},"
                "{\"role\": \"user\", \"parts\": [{\"text\": \"Weather?\"}, {\"text\": \"In "
                "Paris.\"}]}]}");
    gt_wire_request_free(&r);

    /* Embed: the text-embedding model's :predict. */
    TH_EQ_INT(build_with(&gt_runtime_vertex_gemini, &p, "embed", "[\"one\", \"two\"]", NULL,
                         "text-embedding-005", GCP_TOKEN, &r, &why),
              0);
    TH_EQ_STR(r.url, VERTEX_BASE "text-embedding-005:predict");
    body_is(&r, "{\"instances\": [{\"content\": \"one\"}, {\"content\": \"two\"}]}");
    gt_wire_request_free(&r);

    /* An explicit endpoint, and the global location. */
    gt_provider_t g = vertex_provider(NULL);
    g.location = "global";
    TH_EQ_INT(build_with(&gt_runtime_vertex_gemini, &g, "generate", "\"x\"", NULL, "gemini-2.0",
                         GCP_TOKEN, &r, &why),
              0);
    TH_EQ_STR(r.url, "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global/"
                     "publishers/google/models/gemini-2.0:generateContent");
    gt_wire_request_free(&r);

    /* No token, bad roles, only system messages. */
    build_fails(&gt_runtime_vertex_gemini, &p, "generate", "\"x\"", NULL, "m", NULL,
                "access token");
    build_fails(&gt_runtime_vertex_gemini, &p, "chat", "[{\"role\": \"tool\", \"content\": \"x\"}]",
                NULL, "m", GCP_TOKEN, "roles");
    build_fails(&gt_runtime_vertex_gemini, &p, "chat",
                "[{\"role\": \"system\", \"content\": \"x\"}]", NULL, "m", GCP_TOKEN,
                "only system");
    CU_ASSERT(gt_runtime_vertex_gemini.needs_oauth == 1);
}

static void test_vertex_parse(void)
{
    const gt_runtime_t *rt = &gt_runtime_vertex_gemini;
    json_t *s = json_string("Why is the sky blue?");
    parses_to(
        rt, "generate", s,
        "{\"candidates\": [{\"content\": {\"role\": \"model\", \"parts\": [{\"text\": \"Rayleigh"
        " \"}, {\"text\": \"scattering.\"}]}, \"finishReason\": \"STOP\", \"avgLogprobs\": "
        "-0.12, \"safetyRatings\": [{\"category\": \"HARM_CATEGORY_HATE_SPEECH\", \"probability\":"
        " \"NEGLIGIBLE\", \"probabilityScore\": 0.05}]}], \"usageMetadata\": "
        "{\"promptTokenCount\": 7, \"candidatesTokenCount\": 4, \"totalTokenCount\": 11}, "
        "\"modelVersion\": \"gemini-1.5-flash-002\"}",
        "{\"text\": \"Rayleigh scattering.\", \"finish_reason\": \"STOP\"}", 7, 4);
    json_t *two = J("[\"one\", \"two\"]");
    parses_to(rt, "embed", two,
              "{\"predictions\": [{\"embeddings\": {\"statistics\": {\"truncated\": false, "
              "\"token_count\": 1}, \"values\": [0.01, -0.02]}}, {\"embeddings\": {\"statistics\": "
              "{\"truncated\": false, \"token_count\": 2.0}, \"values\": [0.03, 0.04]}}], "
              "\"metadata\": {\"billableCharacterCount\": 6}}",
              "{\"embedding\": [0.01, -0.02], \"embeddings\": [[0.01, -0.02], "
              "[0.03, 0.04]]}",
              3, 0);
    json_decref(two);
    json_decref(s);
}

/* Bodies of the wrong shape fail with a reason, never a guessed output. */
static void test_vertex_parse_malformed(void)
{
    const gt_runtime_t *rt = &gt_runtime_vertex_gemini;
    parse_fails(rt, "generate", "\"x\"",
                "{\"promptFeedback\": {\"blockReason\": \"SAFETY\"}, \"usageMetadata\": "
                "{\"promptTokenCount\": 5}}",
                "blocked");
    parse_fails(rt, "generate", "\"x\"",
                "{\"candidates\": [{\"finishReason\": \"SAFETY\", \"safetyRatings\": []}]}",
                "finishReason");
    parse_fails(rt, "generate", "\"x\"", "[1]", "not a JSON object");
    parse_fails(rt, "generate", "\"x\"", "{\"candidates\": []}", "no candidates");
    parse_fails(rt, "embed", "\"x\"", "{\"predictions\": [{\"embeddings\": {}}]}", "values");
}

/* ---- bedrock_anthropic ------------------------------------------------------- */

static void test_bedrock_build(void)
{
    gt_provider_t p = bedrock_provider(NULL, NULL); /* default endpoint from the region */
    gt_wire_request_t r;
    const char *why;
    TH_EQ_INT(build_with(&gt_runtime_bedrock_anthropic, &p, "chat",
                         "[{\"role\": \"system\", \"content\": \"Answer in French.\"},"
                         " {\"role\": \"user\", \"content\": \"Hello\"},"
                         " {\"role\": \"assistant\", \"content\": \"Bonjour\"},"
                         " {\"role\": \"user\", \"content\": \"Thanks\"}]",
                         "{\"max_tokens\": 300, \"temperature\": 0.5, \"top_p\": 0.9, "
                         "\"stop\": [\"\\n\\nHuman:\"], \"seed\": 1}",
                         "anthropic.claude-3-5-sonnet-20240620-v1:0", NULL, &r, &why),
              0);
    TH_EQ_STR(r.url, "https://bedrock-runtime.us-west-2.amazonaws.com/model/"
                     "anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke");
    TH_EQ_STR(hdr(&r, "Host"), "bedrock-runtime.us-west-2.amazonaws.com");
    TH_EQ_STR(hdr(&r, "X-Amz-Date"), "20240610T061320Z");
    TH_EQ_STR(hdr(&r, "Content-Type"), "application/json");
    TH_EQ_STR(hdr(&r, "traceparent"), TRACEPARENT);
    CU_ASSERT(hdr(&r, "X-Amz-Security-Token") == NULL);
    const char *auth = hdr(&r, "Authorization");
    CU_ASSERT_FATAL(auth != NULL);
    static const char pre[] = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240610/us-west-2/"
                              "bedrock/aws4_request, SignedHeaders=accept;content-type;host;"
                              "x-amz-date, Signature=";
    CU_ASSERT(strncmp(auth, pre, sizeof(pre) - 1) == 0);
    TH_EQ_INT(strlen(auth), sizeof(pre) - 1 + 64);
    body_is(&r, "{\"anthropic_version\": \"bedrock-2023-05-31\", \"max_tokens\": 300,"
                "\"system\": \"Answer in French.\", \"messages\": [{\"role\": \"user\", "
                "\"content\": \"Hello\"}, {\"role\": \"assistant\", \"content\": \"Bonjour\"},"
                "{\"role\": \"user\", \"content\": \"Thanks\"}], \"temperature\": 0.5,"
                "\"top_p\": 0.9, \"stop_sequences\": [\"\\n\\nHuman:\"]}");
    secret_only_in(&r, AWS_SECRET, NULL);
    gt_wire_request_free(&r);

    /* generate: one user turn, max_tokens defaults (Anthropic requires it). */
    gt_provider_t s =
        bedrock_provider("https://vpce-1.bedrock-runtime.us-west-2.vpce.amazonaws.com", AWS_TOKEN);
    TH_EQ_INT(build_with(&gt_runtime_bedrock_anthropic, &s, "generate", "\"Haiku about C\"", NULL,
                         "anthropic.claude-3-haiku-20240307-v1:0", NULL, &r, &why),
              0);
    TH_EQ_STR(r.url, "https://vpce-1.bedrock-runtime.us-west-2.vpce.amazonaws.com/model/"
                     "anthropic.claude-3-haiku-20240307-v1%3A0/invoke");
    TH_EQ_STR(hdr(&r, "X-Amz-Security-Token"), AWS_TOKEN);
    CU_ASSERT(strstr(hdr(&r, "Authorization"),
                     "SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token,") !=
              NULL);
    body_is(&r, "{\"anthropic_version\": \"bedrock-2023-05-31\", \"max_tokens\": 1024,"
                "\"messages\": [{\"role\": \"user\", \"content\": \"Haiku about C\"}]}");
    gt_wire_request_free(&r);

    /* Same-role turns are joined; a conversation must start with the user. */
    TH_EQ_INT(build_with(&gt_runtime_bedrock_anthropic, &p, "chat",
                         "[{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", "
                         "\"content\": \"b\"}]",
                         NULL, "m", NULL, &r, &why),
              0);
    body_is(&r, "{\"anthropic_version\": \"bedrock-2023-05-31\", \"max_tokens\": 1024,"
                "\"messages\": [{\"role\": \"user\", \"content\": \"a\\n\\nb\"}]}");
    gt_wire_request_free(&r);
    build_fails(&gt_runtime_bedrock_anthropic, &p, "chat",
                "[{\"role\": \"assistant\", \"content\": \"a\"}]", NULL, "m", NULL,
                "first non-system message");
    build_fails(&gt_runtime_bedrock_anthropic, &p, "embed", "\"x\"", NULL, "m", NULL,
                "cannot embed");
    gt_provider_t nokey = bedrock_provider(NULL, NULL);
    nokey.secret_access_key = NULL;
    build_fails(&gt_runtime_bedrock_anthropic, &nokey, "generate", "\"x\"", NULL, "m", NULL,
                "secret_access_key");
}

static void test_bedrock_parse(void)
{
    const gt_runtime_t *rt = &gt_runtime_bedrock_anthropic;
    json_t *s = json_string("Hello");
    parses_to(
        rt, "chat", s,
        "{\"id\": \"msg_bdrk_01XFDUDYJgAACzvnptvVoYEL\", \"type\": \"message\", \"role\": "
        "\"assistant\", \"model\": \"claude-3-5-sonnet-20240620\", \"content\": [{\"type\": "
        "\"text\", \"text\": \"Bonjour ! \"}, {\"type\": \"text\", \"text\": \"De rien.\"}], "
        "\"stop_reason\": \"end_turn\", \"stop_sequence\": null, \"usage\": {\"input_tokens\": "
        "25, \"output_tokens\": 9}}",
        "{\"text\": \"Bonjour ! De rien.\", \"finish_reason\": \"end_turn\"}", 25, 9);
    json_decref(s);
}

/* Bodies of the wrong shape fail with a reason, never a guessed output. */
static void test_bedrock_parse_malformed(void)
{
    const gt_runtime_t *rt = &gt_runtime_bedrock_anthropic;
    parse_fails(rt, "chat", "\"x\"", "{\"message\": \"Malformed input request\"}", "content[]");
    parse_fails(rt, "chat", "\"x\"", "not json", "not a JSON object");
}

/* ---- over loopback ----------------------------------------------------------- */

typedef struct sent {
    int done;
    long status;
    char *body;
} sent_t;

static void on_sent(const gt_http_response_t *resp, void *arg)
{
    sent_t *s = arg;
    s->done = 1;
    s->status = resp->status;
    s->body = strdup(resp->body ? resp->body : "");
}

/* Sends w with lib/http.h on a fresh loop and waits for the answer. */
static long send_wire(const gt_wire_request_t *w, char **body)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_http_t *h = gt_http_new(&loop);
    sent_t s = {0};
    int rc = gt_http_request(h, w->method, w->url, (const char *const *)w->headers, w->body,
                             w->body_len, 20000, on_sent, &s);
    CU_ASSERT(rc == 0);
    while (rc == 0 && !s.done)
        uv_run(&loop, UV_RUN_ONCE);
    gt_http_free(h);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    *body = s.body;
    return s.status;
}

/* What arrived is what was built: method, path, every built header, body. */
static void arrived_as_built(const th_recorded_t *q, const gt_wire_request_t *w)
{
    CU_ASSERT_FATAL(q != NULL);
    TH_EQ_STR(q->method, w->method);
    const char *path = strchr(strstr(w->url, "://") + 3, '/');
    TH_EQ_STR(q->path, path ? path : "/");
    for (size_t i = 0; w->headers[i]; i++) {
        char name[128];
        const char *colon = strchr(w->headers[i], ':');
        snprintf(name, sizeof(name), "%.*s", (int)(colon - w->headers[i]), w->headers[i]);
        TH_EQ_STR(th_recorded_header(q, name), colon + 2);
    }
    TH_EQ_INT(q->body_len, w->body_len);
    CU_ASSERT(q->body_len == w->body_len && memcmp(q->body, w->body, w->body_len) == 0);
}

/* Builds, sends to rec (which answers answer), checks arrival, parses. */
static parsed_t round_trip(th_recorder_t *rec, const gt_runtime_t *rt, const gt_provider_t *p,
                           const char *kind, const char *input, const char *model,
                           const char *token, const char *answer)
{
    parsed_t out = {0};
    gt_wire_request_t w;
    const char *why;
    size_t before = th_recorder_count(rec);
    th_recorder_reply(rec, 200, answer);
    out.rc = build_with(rt, p, kind, input, "{\"max_tokens\": 64, \"temperature\": 0.3}", model,
                        token, &w, &why);
    TH_EQ_INT(out.rc, 0);
    if (out.rc != 0)
        return out;
    char *body = NULL;
    TH_EQ_INT(send_wire(&w, &body), 200);
    TH_EQ_INT(th_recorder_count(rec), before + 1);
    arrived_as_built(th_recorder_get(rec, before), &w);
    json_t *in = J(input);
    gt_wire_task_t t = {kind, in, NULL, model, NULL};
    out.rc = rt->parse(&t, body, strlen(body), &out.a, &out.why);
    json_decref(in);
    free(body);
    gt_wire_request_free(&w);
    return out;
}

static void test_hf_loopback(void)
{
    th_recorder_t *rec = th_recorder_start();
    CU_ASSERT_FATAL(rec != NULL);
    gt_provider_t p = hf_provider(th_recorder_url(rec));
    parsed_t r = round_trip(rec, &gt_runtime_hf_endpoint, &p, "generate", "\"Hello\"", NULL, NULL,
                            "[{\"generated_text\": \" world\", \"details\": {\"finish_reason\": "
                            "\"length\", \"generated_tokens\": 2, \"prefill\": [{\"id\": 1}, "
                            "{\"id\": 2}]}}]");
    answer_is(&r, "{\"text\": \" world\", \"finish_reason\": \"length\"}", 2, 2);
    TH_EQ_STR(th_recorded_header(th_recorder_get(rec, 0), "Authorization"), "Bearer " HF_KEY);
    TH_EQ_STR(th_recorder_get(rec, 0)->path, "/");
    r = round_trip(rec, &gt_runtime_hf_endpoint, &p, "chat",
                   "[{\"role\": \"user\", \"content\": \"Hi\"}]", "tgi", NULL,
                   "{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"Hey\"},"
                   " \"finish_reason\": \"stop\"}], \"usage\": {\"prompt_tokens\": 9, "
                   "\"completion_tokens\": 2}}");
    TH_EQ_INT(r.rc, 0);
    TH_EQ_INT(r.a.prompt_tokens, 9);
    TH_EQ_INT(r.a.completion_tokens, 2);
    TH_EQ_STR(th_recorder_get(rec, 1)->path, "/v1/chat/completions");
    json_decref(r.a.output);
    r = round_trip(rec, &gt_runtime_hf_endpoint, &p, "embed", "\"Hello\"", NULL, NULL,
                   "[[0.5, 0.25]]");
    TH_EQ_INT(r.rc, 0);
    output_is(r.a.output, "{\"embedding\": [0.5, 0.25]}");
    json_decref(r.a.output);
    th_recorder_stop(rec);
}

/* ---- Bedrock: the signature recomputed from what the server received --------- */

static void hmac_sha256(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
    unsigned int l = 32;
    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &l);
}

static void hexify(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* An independent SigV4 check of a received request (header form, no query):
 * returns 1 when its Authorization signature is right for secret. */
static int signature_valid(const th_recorded_t *q, const char *secret, const char *region,
                           const char *service)
{
    const char *auth = th_recorded_header(q, "Authorization");
    const char *amz_date = th_recorded_header(q, "X-Amz-Date");
    char cred[256], signed_hdrs[512], sig[80];
    if (!auth || !amz_date ||
        sscanf(auth,
               "AWS4-HMAC-SHA256 Credential=%255[^,], SignedHeaders=%511[^,], "
               "Signature=%79s",
               cred, signed_hdrs, sig) != 3)
        return 0;
    char scope[256];
    snprintf(scope, sizeof(scope), "%.8s/%s/%s/aws4_request", amz_date, region, service);
    const char *slash = strchr(cred, '/');
    if (!slash || strcmp(slash + 1, scope) != 0)
        return 0;
    /* Canonical request, from the received bytes. */
    char canon[8192];
    size_t n = (size_t)snprintf(canon, sizeof(canon), "%s\n", q->method);
    for (const char *c = q->path; *c; c++) {
        unsigned char ch = (unsigned char)*c;
        if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/", ch))
            canon[n++] = (char)ch;
        else
            n += (size_t)sprintf(canon + n, "%%%02X", ch);
    }
    n += (size_t)snprintf(canon + n, sizeof(canon) - n, "\n\n");
    char list[512];
    snprintf(list, sizeof(list), "%s", signed_hdrs);
    for (char *save = NULL, *h = strtok_r(list, ";", &save); h; h = strtok_r(NULL, ";", &save)) {
        const char *v = th_recorded_header(q, h);
        if (!v)
            return 0;
        n += (size_t)snprintf(canon + n, sizeof(canon) - n, "%s:%s\n", h, v);
    }
    unsigned char md[32];
    unsigned int ml = 32;
    char body_hash[65], canon_hash[65];
    EVP_Digest(q->body, q->body_len, md, &ml, EVP_sha256(), NULL);
    hexify(md, 32, body_hash);
    snprintf(canon + n, sizeof(canon) - n, "\n%s\n%s", signed_hdrs, body_hash);
    EVP_Digest(canon, strlen(canon), md, &ml, EVP_sha256(), NULL);
    hexify(md, 32, canon_hash);
    char sts[1024];
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", amz_date, scope, canon_hash);
    char k0[256];
    snprintf(k0, sizeof(k0), "AWS4%s", secret);
    char date[9];
    snprintf(date, sizeof(date), "%.8s", amz_date);
    unsigned char k[32], s[32];
    hmac_sha256(k0, strlen(k0), date, k);
    hmac_sha256(k, 32, region, k);
    hmac_sha256(k, 32, service, k);
    hmac_sha256(k, 32, "aws4_request", k);
    hmac_sha256(k, 32, sts, s);
    char want[65];
    hexify(s, 32, want);
    return strcmp(want, sig) == 0;
}

static void test_bedrock_loopback(void)
{
    th_recorder_t *rec = th_recorder_start();
    CU_ASSERT_FATAL(rec != NULL);
    gt_provider_t p = bedrock_provider(th_recorder_url(rec), AWS_TOKEN);
    parsed_t r = round_trip(rec, &gt_runtime_bedrock_anthropic, &p, "chat",
                            "[{\"role\": \"system\", \"content\": \"Be kind.\"}, {\"role\": "
                            "\"user\", \"content\": \"Hello, café ☕\"}]",
                            "anthropic.claude-3-haiku-20240307-v1:0", NULL,
                            "{\"id\": \"msg_bdrk_1\", \"type\": \"message\", \"role\": "
                            "\"assistant\", \"content\": [{\"type\": \"text\", \"text\": "
                            "\"Hi!\"}], \"stop_reason\": \"end_turn\", \"usage\": "
                            "{\"input_tokens\": 14, \"output_tokens\": 4}}");
    answer_is(&r, "{\"text\": \"Hi!\", \"finish_reason\": \"end_turn\"}", 14, 4);
    const th_recorded_t *q = th_recorder_get(rec, 0);
    CU_ASSERT_FATAL(q != NULL);
    TH_EQ_STR(q->path, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke");
    char host[64];
    snprintf(host, sizeof(host), "127.0.0.1:%d", th_recorder_port(rec));
    TH_EQ_STR(th_recorded_header(q, "Host"), host);
    TH_EQ_STR(th_recorded_header(q, "X-Amz-Security-Token"), AWS_TOKEN);
    TH_EQ_STR(th_recorded_header(q, "X-Amz-Date"), "20240610T061320Z");
    TH_EQ_INT(signature_valid(q, AWS_SECRET, "us-west-2", "bedrock"), 1);
    /* The checker is not a rubber stamp: another secret does not verify. */
    TH_EQ_INT(signature_valid(q, "wrong-secret", "us-west-2", "bedrock"), 0);
    for (size_t i = 0; i < q->n_headers; i++)
        CU_ASSERT(strstr(q->headers[i], AWS_SECRET) == NULL);
    CU_ASSERT(strstr(q->body, AWS_SECRET) == NULL);
    th_recorder_stop(rec);
}

/* ---- Vertex: service-account token exchange, then generateContent ------------ */

typedef struct token_srv {
    const char *pub_pem;
    char token_uri[128];
    int expires_in;
    int exchanges, rejected; /* written on the server thread, read after the loop */
} token_srv_t;

#define SA_EMAIL "gantry-worker@my-project.iam.gserviceaccount.com"

/* Plays Google's token endpoint: checks the jwt-bearer grant, the assertion's
 * RS256 signature with the service account's public key, and its claims. */
static int token_handler(const th_recorded_t *q, int *status, char **body, void *arg)
{
    token_srv_t *ts = arg;
    if (strcmp(q->path, "/token") != 0)
        return -1;
    const char *grant = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&";
    const char *a = strstr(q->body, "assertion=");
    const char *ct = th_recorded_header(q, "Content-Type");
    json_t *claims = NULL;
    int ok = strcmp(q->method, "POST") == 0 && strncmp(q->body, grant, strlen(grant)) == 0 && a &&
             ct && strcmp(ct, "application/x-www-form-urlencoded") == 0;
    if (ok) {
        char jwt[4096];
        snprintf(jwt, sizeof(jwt), "%.*s", (int)strcspn(a + 10, "&"), a + 10);
        ok = tc_jwt_verify_rs256(jwt, ts->pub_pem, NULL, &claims);
    }
    if (ok) {
        json_t *iat = json_object_get(claims, "iat"), *exp = json_object_get(claims, "exp");
        ok = json_is_integer(iat) && json_is_integer(exp) &&
             json_integer_value(exp) - json_integer_value(iat) == 3600 &&
             strcmp(json_string_value(json_object_get(claims, "iss")), SA_EMAIL) == 0 &&
             strcmp(json_string_value(json_object_get(claims, "aud")), ts->token_uri) == 0 &&
             strcmp(json_string_value(json_object_get(claims, "scope")),
                    "https://www.googleapis.com/auth/cloud-platform") == 0;
    }
    json_decref(claims);
    *status = ok ? 200 : 400;
    if (ok) {
        int n = ++ts->exchanges;
        if (asprintf(body,
                     "{\"access_token\": \"ya29.c.recorded-%d\", \"expires_in\": %d, "
                     "\"token_type\": \"Bearer\"}",
                     n, ts->expires_in) < 0)
            *body = NULL;
    } else {
        ts->rejected++;
        *body = strdup("{\"error\": \"invalid_grant\", \"error_description\": \"Invalid JWT "
                       "Signature.\"}");
    }
    return 0;
}

typedef struct got {
    int calls;
    char *token;
    char *error;
} got_t;

static void on_token(const char *token, const char *error, void *arg)
{
    got_t *g = arg;
    g->calls++;
    free(g->token);
    free(g->error);
    g->token = token ? strdup(token) : NULL;
    g->error = error ? strdup(error) : NULL;
}

/* A caller that owns the auth and frees it on its answer. */
typedef struct free_on_token {
    gt_gcp_auth_t **auth;
    got_t *got;
} free_on_token_t;

static void on_token_free(const char *token, const char *error, void *arg)
{
    free_on_token_t *f = arg;
    on_token(token, error, f->got);
    gt_gcp_auth_free(*f->auth);
    *f->auth = NULL;
}

static void got_clear(got_t *g)
{
    free(g->token);
    free(g->error);
    memset(g, 0, sizeof(*g));
}

static char *credentials(const char *token_uri, const char *key_pem)
{
    json_t *c =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account", "project_id",
                  "my-project", "private_key_id", "0123abcd", "private_key", key_pem,
                  "client_email", SA_EMAIL, "client_id", "1234567890", "token_uri", token_uri);
    char *s = json_dumps(c, 0);
    json_decref(c);
    return s;
}

static void run_until(uv_loop_t *loop, const int *counter, int want)
{
    int64_t end = th_now_ms() + 20000;
    while (*counter < want && th_now_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
}

static void test_vertex_token_exchange(void)
{
    th_recorder_t *rec = th_recorder_start();
    CU_ASSERT_FATAL(rec != NULL);
    token_srv_t ts = {pub_pem, "", 3600, 0, 0};
    snprintf(ts.token_uri, sizeof(ts.token_uri), "%s/token", th_recorder_url(rec));
    th_recorder_handler(rec, token_handler, &ts);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_http_t *http = gt_http_new(&loop);
    char err[256] = "";
    char *creds = credentials(ts.token_uri, priv_pem);
    gt_gcp_auth_t *a = gt_gcp_auth_new(&loop, http, creds, err, sizeof(err));
    CU_ASSERT_FATAL(a != NULL);

    /* Two concurrent callers share one exchange. */
    got_t g1 = {0}, g2 = {0}, g3 = {0};
    gt_gcp_auth_get(a, on_token, &g1);
    gt_gcp_auth_get(a, on_token, &g2);
    TH_EQ_INT(g1.calls + g2.calls, 0);
    run_until(&loop, &g2.calls, 1);
    TH_EQ_INT(g1.calls, 1);
    TH_EQ_INT(g2.calls, 1);
    TH_EQ_STR(g1.token, "ya29.c.recorded-1");
    TH_EQ_STR(g2.token, "ya29.c.recorded-1");
    TH_EQ_INT(ts.exchanges, 1);
    TH_EQ_INT(ts.rejected, 0);
    TH_EQ_INT(gt_gcp_auth_exchanges(a), 1);
    /* Within expiry: answered inside the call, no new exchange. */
    gt_gcp_auth_get(a, on_token, &g3);
    TH_EQ_INT(g3.calls, 1);
    TH_EQ_STR(g3.token, "ya29.c.recorded-1");
    TH_EQ_INT(th_recorder_count(rec), 1);

    /* The token goes to generateContent as the bearer, and nothing of the key does. */
    th_recorder_handler(rec, NULL, NULL);
    gt_provider_t p = vertex_provider(th_recorder_url(rec));
    parsed_t r = round_trip(rec, &gt_runtime_vertex_gemini, &p, "chat",
                            "[{\"role\": \"system\", \"content\": \"Terse.\"}, {\"role\": "
                            "\"user\", \"content\": \"2+2?\"}]",
                            "gemini-1.5-flash-002", g3.token,
                            "{\"candidates\": [{\"content\": {\"role\": \"model\", \"parts\": "
                            "[{\"text\": \"4\"}]}, \"finishReason\": \"STOP\"}], "
                            "\"usageMetadata\": {\"promptTokenCount\": 8, "
                            "\"candidatesTokenCount\": 1, \"totalTokenCount\": 9}}");
    answer_is(&r, "{\"text\": \"4\", \"finish_reason\": \"STOP\"}", 8, 1);
    const th_recorded_t *q = th_recorder_get(rec, 1);
    CU_ASSERT_FATAL(q != NULL);
    TH_EQ_STR(q->path, "/v1/projects/my-project/locations/europe-west4/publishers/google/models/"
                       "gemini-1.5-flash-002:generateContent");
    TH_EQ_STR(th_recorded_header(q, "Authorization"), "Bearer ya29.c.recorded-1");
    TH_EQ_STR(th_recorded_header(q, "traceparent"), TRACEPARENT);
    CU_ASSERT(strstr(q->body, "PRIVATE KEY") == NULL);
    th_recorder_handler(rec, token_handler, &ts);
    gt_gcp_auth_free(a);

    /* A token that expires within the refresh margin (60 s) is fetched again. */
    ts.expires_in = 30;
    a = gt_gcp_auth_new(&loop, http, creds, err, sizeof(err));
    CU_ASSERT_FATAL(a != NULL);
    got_clear(&g1);
    gt_gcp_auth_get(a, on_token, &g1);
    run_until(&loop, &g1.calls, 1);
    TH_EQ_STR(g1.token, "ya29.c.recorded-2");
    gt_gcp_auth_get(a, on_token, &g1);
    TH_EQ_INT(g1.calls, 1); /* not from the cache */
    run_until(&loop, &g1.calls, 2);
    TH_EQ_STR(g1.token, "ya29.c.recorded-3");
    TH_EQ_INT(gt_gcp_auth_exchanges(a), 2);

    /* A caller that frees the auth when answered: the next caller still gets
     * the token (ASan would catch a read of the freed one). */
    got_clear(&g1);
    got_clear(&g2);
    ts.expires_in = 3600;
    gt_gcp_auth_t *doomed = gt_gcp_auth_new(&loop, http, creds, err, sizeof(err));
    CU_ASSERT_FATAL(doomed != NULL);
    free_on_token_t fo = {&doomed, &g1};
    gt_gcp_auth_get(doomed, on_token_free, &fo);
    gt_gcp_auth_get(doomed, on_token, &g2);
    run_until(&loop, &g2.calls, 1);
    CU_ASSERT(doomed == NULL);
    TH_EQ_STR(g1.token, "ya29.c.recorded-4");
    TH_EQ_STR(g2.token, "ya29.c.recorded-4");
    ts.expires_in = 30;

    /* Freed with a caller waiting: the caller hears "shutting down" at once. */
    got_clear(&g2);
    gt_gcp_auth_get(a, on_token, &g2);
    gt_gcp_auth_free(a);
    TH_EQ_INT(g2.calls, 1);
    CU_ASSERT(g2.token == NULL);
    TH_EQ_STR(g2.error, "shutting down");
    free(creds);

    /* A key the server does not know: invalid_grant, reported and not cached. */
    char *other_pub = NULL, *other = tc_rsa_keygen(&other_pub);
    creds = credentials(ts.token_uri, other);
    a = gt_gcp_auth_new(&loop, http, creds, err, sizeof(err));
    CU_ASSERT_FATAL(a != NULL);
    got_clear(&g1);
    gt_gcp_auth_get(a, on_token, &g1);
    run_until(&loop, &g1.calls, 1);
    CU_ASSERT(g1.token == NULL);
    CU_ASSERT(g1.error && strstr(g1.error, "HTTP 400 invalid_grant") != NULL);
    CU_ASSERT(g1.error && strstr(g1.error, "PRIVATE") == NULL);
    int rejected = ts.rejected;
    gt_gcp_auth_get(a, on_token, &g1);
    run_until(&loop, &g1.calls, 2);
    TH_EQ_INT(ts.rejected, rejected + 1);
    TH_EQ_INT(gt_gcp_auth_exchanges(a), 2);
    gt_gcp_auth_free(a);
    free(creds);
    free(other);
    free(other_pub);

    gt_http_free(http);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    got_clear(&g1), got_clear(&g2), got_clear(&g3);
    th_recorder_stop(rec);
}

static void test_gcp_bad_credentials(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_http_t *http = gt_http_new(&loop);
    char err[256] = "";
    CU_ASSERT(gt_gcp_auth_new(&loop, http, "not json", err, sizeof(err)) == NULL);
    CU_ASSERT(strstr(err, "service-account JSON") != NULL);
    CU_ASSERT(gt_gcp_auth_new(&loop, http, "{\"private_key\": \"x\"}", err, sizeof(err)) == NULL);
    CU_ASSERT(strstr(err, "client_email") != NULL);
    CU_ASSERT(gt_gcp_auth_new(&loop, http,
                              "{\"client_email\": \"a@b\", \"private_key\": \"-----BEGIN PRIVATE "
                              "KEY-----\\nsecretbits\\n-----END PRIVATE KEY-----\\n\"}",
                              err, sizeof(err)) == NULL);
    CU_ASSERT(strstr(err, "PEM private key") != NULL);
    CU_ASSERT(strstr(err, "secretbits") == NULL);
    CU_ASSERT(gt_gcp_auth_new(&loop, http, "{\"type\": \"authorized_user\"}", err, sizeof(err)) ==
              NULL);
    CU_ASSERT(strstr(err, "service_account") != NULL);
    gt_http_free(http);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

/* ---- through the call engine ------------------------------------------------- */

typedef struct engine_srv {
    token_srv_t tokens;
    int invokes; /* Bedrock calls seen; the first answers 503 */
} engine_srv_t;

static int engine_handler(const th_recorded_t *q, int *status, char **body, void *arg)
{
    engine_srv_t *es = arg;
    if (strcmp(q->path, "/token") == 0)
        return token_handler(q, status, body, &es->tokens);
    *status = 200;
    if (strstr(q->path, ":generateContent"))
        *body = strdup("{\"candidates\": [{\"content\": {\"role\": \"model\", \"parts\": "
                       "[{\"text\": \"Bonjour\"}]}, \"finishReason\": \"STOP\"}], "
                       "\"usageMetadata\": {\"promptTokenCount\": 11, "
                       "\"candidatesTokenCount\": 2, \"totalTokenCount\": 13}}");
    else if (strstr(q->path, "/invoke") && es->invokes++ == 0) {
        *status = 503;
        *body = strdup("{\"message\": \"ServiceUnavailableException\"}");
    } else if (strstr(q->path, "/invoke"))
        *body = strdup("{\"type\": \"message\", \"role\": \"assistant\", \"content\": [{\"type\":"
                       " \"text\", \"text\": \"Salut\"}], \"stop_reason\": \"end_turn\", "
                       "\"usage\": {\"input_tokens\": 12, \"output_tokens\": 3}}");
    else
        *body = strdup("[{\"generated_text\": \"Hallo\", \"details\": {\"generated_tokens\": 1,"
                       " \"prefill\": [{\"id\": 1}, {\"id\": 2}, {\"id\": 3}]}}]");
    return 0;
}

typedef struct done {
    int calls;
    int status;
    char code[64], provider[64];
    json_t *output;
    int64_t prompt_tokens, completion_tokens;
    size_t attempts;
} done_t;

static void on_done(gt_rt_call_t *call, const gt_task_outcome_t *out, void *arg)
{
    done_t *d = arg;
    (void)call;
    d->calls++;
    d->status = (int)out->status;
    snprintf(d->code, sizeof(d->code), "%s", out->error_code ? out->error_code : "");
    snprintf(d->provider, sizeof(d->provider), "%s", out->provider ? out->provider : "");
    d->output = out->output ? json_incref(out->output) : NULL;
    d->prompt_tokens = out->prompt_tokens;
    d->completion_tokens = out->completion_tokens;
    d->attempts = json_array_size(out->attempts);
}

static void no_events(const char *type, json_t *data, void *arg)
{
    (void)type, (void)arg;
    json_decref(data);
}

/* The engine (workers/provider.c) drives each runtime end to end: the Vertex
 * token from gcp_auth, a Bedrock 503 retried with a fresh signature, usage. */
static void test_through_engine(void)
{
    th_recorder_t *rec = th_recorder_start();
    CU_ASSERT_FATAL(rec != NULL);
    engine_srv_t es = {{pub_pem, "", 3600, 0, 0}, 0};
    snprintf(es.tokens.token_uri, sizeof(es.tokens.token_uri), "%s/token", th_recorder_url(rec));
    th_recorder_handler(rec, engine_handler, &es);
    char *creds = credentials(es.tokens.token_uri, priv_pem);
    const char *credfile = th_tmpfile(".json", creds);
    char text[4096], err[2048] = "";
    snprintf(text, sizeof(text),
             "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9092\"},"
             " \"providers\": {"
             "  \"vx\": {\"runtime\": \"vertex_gemini\", \"endpoint\": \"%s\","
             "          \"credentials_file\": \"%s\", \"project\": \"my-project\","
             "          \"location\": \"europe-west4\"},"
             "  \"bd\": {\"runtime\": \"bedrock_anthropic\", \"endpoint\": \"%s\","
             "          \"region\": \"us-west-2\", \"access_key_id\": \"" AWS_AKID "\","
             "          \"secret_access_key\": \"" AWS_SECRET "\","
             "          \"retry\": {\"max_retries\": 2, \"base_ms\": 10}},"
             "  \"hf\": {\"runtime\": \"hf_endpoint\", \"endpoint\": \"%s\","
             "          \"api_key\": \"" HF_KEY "\"}},"
             " \"models\": {"
             "  \"gemini\": {\"provider\": \"vx\", \"provider_model\": \"gemini-1.5-flash-002\"},"
             "  \"claude\": {\"provider\": \"bd\","
             "              \"provider_model\": \"anthropic.claude-3-haiku-20240307-v1:0\"},"
             "  \"llama\": {\"provider\": \"hf\"}}}",
             th_recorder_url(rec), credfile, th_recorder_url(rec), th_recorder_url(rec));
    gt_config_t *cfg = gt_config_parse(text, "/", err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "  config: %s\n", err);
    CU_ASSERT_FATAL(cfg != NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_http_t *http = gt_http_new(&loop);
    gt_prov_engine_t *e =
        gt_prov_engine_new(&loop, http, cfg, "w-wire", no_events, NULL, err, sizeof(err));
    if (!e)
        fprintf(stderr, "  engine: %s\n", err);
    CU_ASSERT_FATAL(e != NULL);

    static const struct {
        const char *model, *kind, *input, *provider, *text;
        int64_t prompt, completion;
        size_t attempts;
    } cases[] = {
        {"gemini", "chat", "[{\"role\": \"user\", \"content\": \"Hello\"}]", "vx", "Bonjour", 11, 2,
         1},
        {"gemini", "generate", "\"Hello again\"", "vx", "Bonjour", 11, 2, 1},
        {"claude", "chat", "[{\"role\": \"user\", \"content\": \"Hello\"}]", "bd", "Salut", 12, 3,
         2},
        {"llama", "generate", "\"Hello\"", "hf", "Hallo", 3, 1, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *in = J(cases[i].input);
        gt_task_spec_t spec = {"task-1",
                               "req-1",
                               "acme",
                               cases[i].kind,
                               in,
                               NULL,
                               gt_config_model(cfg, cases[i].model),
                               TRACEPARENT,
                               INT64_MAX,
                               0};
        done_t d = {0};
        const char *code = NULL;
        gt_prov_call_t *call = gt_prov_start(e, &spec, on_done, &d, &code);
        CU_ASSERT_FATAL(call != NULL);
        run_until(&loop, &d.calls, 1);
        TH_EQ_INT(d.calls, 1);
        TH_EQ_INT(d.status, GT_TASK_SUCCEEDED);
        TH_EQ_STR(d.code, "");
        TH_EQ_STR(d.provider, cases[i].provider);
        TH_EQ_STR(json_string_value(json_object_get(d.output, "text")), cases[i].text);
        TH_EQ_INT(d.prompt_tokens, cases[i].prompt);
        TH_EQ_INT(d.completion_tokens, cases[i].completion);
        TH_EQ_INT(d.attempts, cases[i].attempts);
        json_decref(d.output);
        json_decref(in);
    }
    /* One token exchange served both Vertex calls; both Bedrock attempts were signed right. */
    TH_EQ_INT(es.tokens.exchanges, 1);
    TH_EQ_INT(es.invokes, 2);
    size_t n = th_recorder_count(rec), signed_ok = 0;
    for (size_t i = 0; i < n; i++) {
        const th_recorded_t *q = th_recorder_get(rec, i);
        if (strstr(q->path, "/invoke"))
            signed_ok += (size_t)signature_valid(q, AWS_SECRET, "us-west-2", "bedrock");
        if (strstr(q->path, ":generateContent"))
            TH_EQ_STR(th_recorded_header(q, "Authorization"), "Bearer ya29.c.recorded-1");
        if (strcmp(q->path, "/token") != 0) { /* the task's trace, the call's span as parent */
            const char *tp = th_recorded_header(q, "traceparent");
            CU_ASSERT(tp && strlen(tp) == strlen(TRACEPARENT) &&
                      strncmp(tp, TRACEPARENT, 36) == 0 && strcmp(tp, TRACEPARENT) != 0);
        }
    }
    TH_EQ_INT(signed_ok, 2);
    gt_prov_engine_close(e);
    gt_http_free(http);
    uv_run(&loop, UV_RUN_DEFAULT);
    gt_prov_engine_free(e);
    uv_loop_close(&loop);
    gt_config_free(cfg);
    free(creds);
    th_recorder_stop(rec);
}

int main(void)
{
    gt_worker_config_register();
    priv_pem = tc_rsa_keygen(&pub_pem);
    if (!priv_pem)
        return 1;
    static const th_test_t tests[] = {
        {"hf_endpoint requests", test_hf_build},
        {"hf_endpoint answers", test_hf_parse},
        {"hf_endpoint malformed answers", test_hf_parse_malformed},
        {"vertex_gemini requests", test_vertex_build},
        {"vertex_gemini answers", test_vertex_parse},
        {"vertex_gemini malformed answers", test_vertex_parse_malformed},
        {"bedrock_anthropic requests", test_bedrock_build},
        {"bedrock_anthropic answers", test_bedrock_parse},
        {"bedrock_anthropic malformed answers", test_bedrock_parse_malformed},
        {"hf_endpoint over loopback", test_hf_loopback},
        {"bedrock over loopback: signature recomputed from the received request",
         test_bedrock_loopback},
        {"vertex token exchange and generateContent over loopback", test_vertex_token_exchange},
        {"bad service-account credentials", test_gcp_bad_credentials},
        {"each runtime through the call engine", test_through_engine},
        {NULL, NULL},
    };
    int rc = th_run("wire", tests);
    free(priv_pem);
    free(pub_pem);
    return rc;
}
