/* test_sigv4.c - the SigV4 signer against AWS's published test suite
 * (tests/data/sigv4, from awslabs/aws-c-auth): canonical request, string to
 * sign, signature and Authorization header must match exactly. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "sigv4.h"

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", th_src("tests/data/sigv4"), dir);
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "/%s", name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    size_t r;
    while (s && (r = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *t = realloc(s, cap *= 2);
            if (!t)
                free(s);
            s = t;
        }
    }
    fclose(f);
    if (!s)
        return NULL;
    s[n] = '\0';
    if (len)
        *len = n;
    return s;
}

/* A parsed request.txt: "METHOD target HTTP/1.1", headers (folded lines joined
 * with "\n"), blank line, body. */
typedef struct req {
    char method[16];
    char target[512];
    char *headers[16];
    const char *body;
    size_t body_len;
} req_t;

static int parse_request(char *text, size_t len, req_t *r)
{
    memset(r, 0, sizeof(*r));
    char *nl = strchr(text, '\n');
    if (!nl)
        return -1;
    *nl = '\0';
    char *sp = strchr(text, ' '), *http = strstr(text, " HTTP/");
    if (!sp || !http || http < sp)
        return -1;
    snprintf(r->method, sizeof(r->method), "%.*s", (int)(sp - text), text);
    snprintf(r->target, sizeof(r->target), "%.*s", (int)(http - sp - 1), sp + 1);
    char *line = nl + 1;
    size_t nh = 0;
    while (line < text + len) {
        char *end = strchr(line, '\n');
        if (!end)
            end = text + len;
        if (end == line) { /* blank line: the body follows */
            r->body = end + 1 <= text + len ? end + 1 : end;
            r->body_len = (size_t)(text + len - r->body);
            break;
        }
        int more = *end == '\n';
        *end = '\0';
        if ((line[0] == ' ' || line[0] == '\t') && nh > 0) {
            size_t ol = strlen(r->headers[nh - 1]);
            r->headers[nh - 1] = realloc(r->headers[nh - 1], ol + strlen(line) + 2);
            snprintf(r->headers[nh - 1] + ol, strlen(line) + 2, "\n%s", line);
        } else if (nh + 1 < 16) {
            r->headers[nh++] = strdup(line);
        }
        if (!more)
            break;
        line = end + 1;
    }
    return 0;
}

static void req_free(req_t *r)
{
    for (size_t i = 0; r->headers[i]; i++)
        free(r->headers[i]);
}

static time_t parse_ts(const char *ts)
{
    struct tm tm = {0};
    if (!strptime(ts, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return 0;
    return timegm(&tm);
}

/* Trims trailing newlines (the expected files end without one, mostly). */
static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

static void run_case(const char *name)
{
    size_t rl = 0;
    char *ctx_text = slurp(name, "context.json", NULL), *rq = slurp(name, "request.txt", &rl);
    char *want_cr = slurp(name, "header-canonical-request.txt", NULL);
    char *want_sts = slurp(name, "header-string-to-sign.txt", NULL);
    char *want_sig = slurp(name, "header-signature.txt", NULL);
    char *signed_req = slurp(name, "header-signed-request.txt", NULL);
    json_t *ctx = ctx_text ? json_loads(ctx_text, 0, NULL) : NULL;
    req_t r;
    gt_sigv4_t s;
    char err[256] = "";
    fprintf(stderr, "  case %s\n", name);
    CU_ASSERT_FATAL(ctx && rq && want_cr && want_sts && want_sig && signed_req);
    CU_ASSERT_FATAL(parse_request(rq, rl, &r) == 0);
    json_t *cred = json_object_get(ctx, "credentials");
    gt_sigv4_params_t p = {
        .access_key_id = json_string_value(json_object_get(cred, "access_key_id")),
        .secret_access_key = json_string_value(json_object_get(cred, "secret_access_key")),
        .session_token = json_string_value(json_object_get(cred, "token")),
        .region = json_string_value(json_object_get(ctx, "region")),
        .service = json_string_value(json_object_get(ctx, "service")),
        .now = parse_ts(json_string_value(json_object_get(ctx, "timestamp"))),
        .sign_body = json_is_true(json_object_get(ctx, "sign_body")),
        .normalize = !json_is_false(json_object_get(ctx, "normalize")),
        .omit_session_token = json_is_true(json_object_get(ctx, "omit_session_token")),
    };
    int rc = gt_sigv4_sign(&p, r.method, r.target, (const char *const *)r.headers, r.body,
                           r.body_len, &s, err, sizeof(err));
    TH_EQ_INT(rc, 0);
    if (rc == 0) {
        chomp(want_cr), chomp(want_sts), chomp(want_sig);
        TH_EQ_STR(s.canonical_request, want_cr);
        TH_EQ_STR(s.string_to_sign, want_sts);
        TH_EQ_STR(s.signature, want_sig);
        char *auth = strstr(signed_req, "\nAuthorization:");
        CU_ASSERT_FATAL(auth != NULL);
        auth += strlen("\nAuthorization:");
        *strchr(auth, '\n') = '\0';
        TH_EQ_STR(s.authorization, auth);
        char *date = strstr(signed_req, "X-Amz-Date:");
        CU_ASSERT_FATAL(date != NULL);
        date += strlen("X-Amz-Date:");
        *strchr(date, '\n') = '\0';
        TH_EQ_STR(s.amz_date, date);
        gt_sigv4_free(&s);
    } else {
        fprintf(stderr, "  %s: %s\n", name, err);
    }
    req_free(&r);
    json_decref(ctx);
    free(ctx_text), free(rq), free(want_cr), free(want_sts), free(want_sig), free(signed_req);
}

static const char *const vanilla[] = {"get-vanilla",
                                      "get-vanilla-query",
                                      "get-vanilla-empty-query-key",
                                      "get-vanilla-query-order-encoded",
                                      "get-vanilla-query-order-key-case",
                                      "get-vanilla-query-unreserved",
                                      "get-vanilla-utf8-query",
                                      "get-vanilla-with-session-token",
                                      "get-unreserved",
                                      "get-utf8",
                                      NULL};
static const char *const posts[] = {"post-vanilla",
                                    "post-vanilla-query",
                                    "post-vanilla-empty-query-value",
                                    "post-x-www-form-urlencoded",
                                    "post-x-www-form-urlencoded-parameters",
                                    "post-header-key-case",
                                    "post-header-key-sort",
                                    "post-header-value-case",
                                    "post-sts-header-after",
                                    "post-sts-header-before",
                                    NULL};
static const char *const headers[] = {"get-header-value-trim", "get-header-key-duplicate",
                                      "get-header-value-multiline", "get-header-value-order", NULL};
static const char *const paths[] = {"get-relative-normalized",
                                    "get-relative-relative-normalized",
                                    "get-relative-relative-unnormalized",
                                    "get-relative-unnormalized",
                                    "get-slash-dot-slash-normalized",
                                    "get-slash-dot-slash-unnormalized",
                                    "get-slash-normalized",
                                    "get-slash-pointless-dot-normalized",
                                    "get-slash-pointless-dot-unnormalized",
                                    "get-slash-unnormalized",
                                    "get-slashes-normalized",
                                    "get-slashes-unnormalized",
                                    "get-space-normalized",
                                    "get-space-unnormalized",
                                    NULL};

static void test_get_vanilla_family(void)
{
    for (const char *const *c = vanilla; *c; c++)
        run_case(*c);
}

static void test_post_family(void)
{
    for (const char *const *c = posts; *c; c++)
        run_case(*c);
}

static void test_header_families(void)
{
    for (const char *const *c = headers; *c; c++)
        run_case(*c);
}

static void test_path_normalization(void)
{
    for (const char *const *c = paths; *c; c++)
        run_case(*c);
}

/* Bad input gets a clear error, not a signature. */
static void test_rejects_bad_headers(void)
{
    gt_sigv4_params_t p = {"AKID", "secret", NULL, "us-east-1", "bedrock", 1440938160, 0, 1, 0};
    gt_sigv4_t s;
    char err[128] = "";
    const char *no_host[] = {"Content-Type: application/json", NULL};
    TH_EQ_INT(gt_sigv4_sign(&p, "POST", "/", no_host, "", 0, &s, err, sizeof(err)), -1);
    CU_ASSERT(strstr(err, "Host") != NULL);
    CU_ASSERT(s.authorization == NULL);
    const char *bad[] = {"Host: x", "no colon here", NULL};
    TH_EQ_INT(gt_sigv4_sign(&p, "POST", "/", bad, "", 0, &s, err, sizeof(err)), -1);
    CU_ASSERT(strstr(err, "Name: value") != NULL);
    /* The secret never appears in what the signer returns. */
    const char *ok[] = {"Host: bedrock-runtime.us-east-1.amazonaws.com", NULL};
    TH_EQ_INT(gt_sigv4_sign(&p, "POST", "/model/m%3A0/invoke", ok, "{}", 2, &s, err, sizeof(err)),
              0);
    CU_ASSERT(strstr(s.canonical_request, "secret") == NULL);
    CU_ASSERT(strstr(s.authorization, "secret") == NULL);
    /* An escaped ':' in the path is encoded once more, as AWS does for Bedrock model ids. */
    CU_ASSERT(strstr(s.canonical_request, "\n/model/m%253A0/invoke\n") != NULL);
    gt_sigv4_free(&s);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"get-vanilla family", test_get_vanilla_family},
        {"post-vanilla and x-www-form-urlencoded families", test_post_family},
        {"header trim, duplicates, folding, order", test_header_families},
        {"path normalization", test_path_normalization},
        {"bad headers are refused", test_rejects_bad_headers},
        {NULL, NULL},
    };
    return th_run("sigv4", tests);
}
