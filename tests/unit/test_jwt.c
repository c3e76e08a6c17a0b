/* test_jwt.c - RS256 JWT signing: a token signed with a fresh RSA key verifies
 * with its public key (OpenSSL, independently), a tampered one does not;
 * base64url round trips; bad keys are refused with a clear reason. */
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "crypto_check.h"
#include "harness.h"
#include "jwt.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

static char *priv_pem, *pub_pem;

static void test_base64url(void)
{
    static const struct {
        const char *in, *out;
    } v[] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff\xbf", "-_-_"}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *e = gt_base64url_encode((const unsigned char *)v[i].in, strlen(v[i].in));
        TH_EQ_STR(e, v[i].out);
        unsigned char *d = NULL;
        size_t n = 0;
        TH_EQ_INT(gt_base64url_decode(e, strlen(e), &d, &n), 0);
        TH_EQ_INT(n, strlen(v[i].in));
        CU_ASSERT(d && memcmp(d, v[i].in, n) == 0);
        free(e);
        free(d);
    }
    unsigned char *d = NULL;
    size_t n;
    TH_EQ_INT(gt_base64url_decode("ab+c", 4, &d, &n), -1);  /* '+' is not base64url */
    TH_EQ_INT(gt_base64url_decode("abcde", 5, &d, &n), -1); /* impossible length */
}

static void test_sign_and_verify(void)
{
    char err[256] = "";
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:i, s:i}", "iss", "svc@p.iam.gserviceaccount.com", "scope",
                  "https://www.googleapis.com/auth/cloud-platform", "aud",
                  "https://oauth2.googleapis.com/token", "iat", 1700000000, "exp", 1700003600);
    char *tok = gt_jwt_sign_rs256(claims, priv_pem, "kid-1", err, sizeof(err));
    CU_ASSERT_FATAL(tok != NULL);
    json_t *h = NULL, *c = NULL;
    TH_EQ_INT(tc_jwt_verify_rs256(tok, pub_pem, &h, &c), 1);
    TH_EQ_STR(json_string_value(json_object_get(h, "alg")), "RS256");
    TH_EQ_STR(json_string_value(json_object_get(h, "typ")), "JWT");
    TH_EQ_STR(json_string_value(json_object_get(h, "kid")), "kid-1");
    CU_ASSERT(json_equal(c, claims));
    json_decref(h);
    json_decref(c);

    /* Tampering: change one claim character, or one signature character. */
    char *bad = strdup(tok);
    char *dot = strchr(bad, '.') + 1;
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    TH_EQ_INT(tc_jwt_verify_rs256(bad, pub_pem, NULL, NULL), 0);
    strcpy(bad, tok);
    char *sig = strrchr(bad, '.') + 1;
    sig[10] = sig[10] == 'A' ? 'B' : 'A';
    TH_EQ_INT(tc_jwt_verify_rs256(bad, pub_pem, NULL, NULL), 0);
    /* Another key's public half does not verify it either. */
    char *pub2 = NULL, *priv2 = tc_rsa_keygen(&pub2);
    TH_EQ_INT(tc_jwt_verify_rs256(tok, pub2, NULL, NULL), 0);
    free(priv2);
    free(pub2);
    free(bad);
    free(tok);
    json_decref(claims);
}

static void test_bad_keys(void)
{
    char err[256] = "";
    json_t *claims = json_pack("{s:s}", "iss", "x");
    CU_ASSERT(gt_jwt_sign_rs256(claims,
                                "-----BEGIN PRIVATE KEY-----\nnot a key\n"
                                "-----END PRIVATE KEY-----\n",
                                NULL, err, sizeof(err)) == NULL);
    CU_ASSERT(strstr(err, "not a PEM private key") != NULL);
    CU_ASSERT(strstr(err, "not a key") == NULL); /* the key text never echoes */
    /* An EC key is a key, but not one RS256 can use. */
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, ec, NULL, NULL, 0, NULL, NULL);
    char *pem;
    long n = BIO_get_mem_data(b, &pem);
    char *ec_pem = strndup(pem, (size_t)n);
    CU_ASSERT(gt_jwt_sign_rs256(claims, ec_pem, NULL, err, sizeof(err)) == NULL);
    CU_ASSERT(strstr(err, "not an RSA key") != NULL);
    free(ec_pem);
    BIO_free(b);
    EVP_PKEY_free(ec);
    json_decref(claims);
}

int main(void)
{
    priv_pem = tc_rsa_keygen(&pub_pem);
    if (!priv_pem)
        return 1;
    static const th_test_t tests[] = {
        {"base64url round trips", test_base64url},
        {"RS256 verifies with the public key, tampering fails", test_sign_and_verify},
        {"bad keys are refused", test_bad_keys},
        {NULL, NULL},
    };
    int rc = th_run("jwt", tests);
    free(priv_pem);
    free(pub_pem);
    return rc;
}
