/* crypto_check.c - RSA keys and RS256 verification for tests, on OpenSSL alone. */
#include "crypto_check.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

static char *bio_text(BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, data, (size_t)n);
        s[n] = '\0';
    }
    return s;
}

char *tc_rsa_keygen(char **public_pem)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);
    BIO *priv = BIO_new(BIO_s_mem()), *pub = BIO_new(BIO_s_mem());
    char *out = NULL;
    *public_pem = NULL;
    if (k && priv && pub && PEM_write_bio_PrivateKey(priv, k, NULL, NULL, 0, NULL, NULL) == 1 &&
        PEM_write_bio_PUBKEY(pub, k) == 1) {
        out = bio_text(priv);
        *public_pem = bio_text(pub);
    }
    EVP_PKEY_free(k);
    BIO_free(priv);
    BIO_free(pub);
    return out;
}

unsigned char *tc_b64url_decode(const char *s, size_t len, size_t *out_len)
{
    size_t padded = (len + 3) / 4 * 4;
    char *std = malloc(padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    if (!std || !out)
        goto fail;
    for (size_t i = 0; i < padded; i++)
        std[i] = i >= len ? '=' : s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    std[padded] = '\0';
    int n = EVP_DecodeBlock(out, (unsigned char *)std, (int)padded);
    if (n < 0)
        goto fail;
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (padded - len >= 1)
        n -= (int)(padded - len);
    out[n] = '\0';
    *out_len = (size_t)n;
    free(std);
    return out;
fail:
    free(std);
    free(out);
    return NULL;
}

static json_t *decode_json(const char *s, size_t len)
{
    size_t n;
    unsigned char *raw = tc_b64url_decode(s, len, &n);
    json_t *j = raw ? json_loadb((const char *)raw, n, 0, NULL) : NULL;
    free(raw);
    return j;
}

int tc_jwt_verify_rs256(const char *token, const char *public_pem, json_t **header, json_t **claims)
{
    const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    json_t *h = NULL, *c = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    EVP_PKEY *k = NULL;
    EVP_MD_CTX *md = NULL;
    BIO *b = NULL;
    int ok = 0;
    if (!d2 || strchr(d2 + 1, '.'))
        goto out;
    h = decode_json(token, (size_t)(d1 - token));
    c = decode_json(d1 + 1, (size_t)(d2 - d1 - 1));
    sig = tc_b64url_decode(d2 + 1, strlen(d2 + 1), &sig_len);
    const char *alg = json_string_value(json_object_get(h, "alg"));
    if (!h || !c || !sig || !alg || strcmp(alg, "RS256") != 0)
        goto out;
    b = BIO_new_mem_buf(public_pem, -1);
    k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    md = EVP_MD_CTX_new();
    ok =
        k && md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
        EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)token, (size_t)(d2 - token)) == 1;
out:
    if (ok && header)
        *header = json_incref(h);
    if (ok && claims)
        *claims = json_incref(c);
    json_decref(h);
    json_decref(c);
    free(sig);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    BIO_free(b);
    return ok;
}
