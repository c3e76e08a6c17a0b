/* bench/signers.c - cost of request signing on one core: SigV4 over a
 * Bedrock-sized request, a whole bedrock_anthropic build (JSON body +
 * SigV4), and an RS256 JWT assertion (made once per token, ~hourly).
 * Prints per-operation times; asserts nothing. Usage: gantry-bench-signers [N] */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "jwt.h"
#include "provider.h"
#include "sigv4.h"

static double now_s(void)
{
    return (double)gt_clock_mono_ns() / 1e9;
}

static void report(const char *what, int n, double s)
{
    printf("%-44s %8d ops %9.2f us/op %10.0f ops/s\n", what, n, s / n * 1e6, n / s);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    char body[1024];
    memset(body, 'a', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    const char *headers[] = {"Host: bedrock-runtime.us-west-2.amazonaws.com",
                             "Content-Type: application/json", "Accept: application/json", NULL};
    gt_sigv4_params_t p = {"AKIDEXAMPLE",
                           "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                           NULL,
                           "us-west-2",
                           "bedrock",
                           time(NULL),
                           0,
                           1,
                           0};
    char err[256];
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        gt_sigv4_t s;
        if (gt_sigv4_sign(&p, "POST", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
                          headers, body, strlen(body), &s, err, sizeof(err)) != 0)
            return 1;
        gt_sigv4_free(&s);
    }
    report("sigv4 sign (1 KB body)", n, now_s() - t0);

    gt_provider_t prov = {0};
    prov.region = "us-west-2";
    prov.access_key_id = "AKIDEXAMPLE";
    prov.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    json_t *in = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content",
                           "You are terse.", "role", "user", "content", body);
    json_t *params = json_pack("{s:i, s:f}", "max_tokens", 256, "temperature", 0.3);
    gt_wire_task_t t = {"chat", in, params, "anthropic.claude-3-haiku-20240307-v1:0", NULL};
    gt_wire_auth_t auth = {NULL, time(NULL)};
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        gt_wire_request_t r;
        const char *why;
        if (gt_runtime_bedrock_anthropic.build(&prov, &t, &auth, &r, &why) != 0)
            return 1;
        gt_wire_request_free(&r);
    }
    report("bedrock_anthropic build (JSON + SigV4)", n, now_s() - t0);
    json_decref(in);
    json_decref(params);

    EVP_PKEY *k = EVP_RSA_gen(2048);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    char *pem_data;
    long pl = BIO_get_mem_data(b, &pem_data);
    char *pem = strndup(pem_data, (size_t)pl);
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:i, s:i}", "iss", "svc@p.iam.gserviceaccount.com", "scope",
                  "https://www.googleapis.com/auth/cloud-platform", "aud",
                  "https://oauth2.googleapis.com/token", "iat", 1700000000, "exp", 1700003600);
    int m = n / 100 > 0 ? n / 100 : 1;
    t0 = now_s();
    for (int i = 0; i < m; i++) {
        char *tok = gt_jwt_sign_rs256(claims, pem, "k1", err, sizeof(err));
        if (!tok) {
            free(pem);
            return 1;
        }
        free(tok);
    }
    report("jwt RS256 assertion (2048-bit, PEM parsed)", m, now_s() - t0);
    json_decref(claims);
    free(pem);
    BIO_free(b);
    EVP_PKEY_free(k);
    return 0;
}
