/* jwt.c - RS256 JWT signing (EVP, SHA-256 with RSASSA-PKCS1-v1_5). */
#include "jwt.h"

#include "base64.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* base64url of a JSON value's compact, key-sorted serialization. */
static char *b64_json(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    if (!s)
        return NULL;
    char *e = gt_base64url_encode((const unsigned char *)s, strlen(s));
    free(s);
    return e;
}

char *gt_jwt_sign_rs256(const json_t *claims, const char *private_key_pem, const char *kid,
                        char *err, size_t errlen)
{
    char *head = NULL, *payload = NULL, *sig64 = NULL, *token = NULL, *input = NULL;
    unsigned char *sig = NULL;
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *md = NULL;
    BIO *bio = NULL;
    json_t *header = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");

    if (!json_is_object(claims) || !private_key_pem) {
        snprintf(err, errlen, "claims must be an object and the key set");
        goto out;
    }
    if (!header || (kid && json_object_set_new(header, "kid", json_string(kid)) != 0))
        goto oom;
    bio = BIO_new_mem_buf(private_key_pem, -1);
    if (!bio)
        goto oom;
    /* The passphrase callback is NULL with an empty passphrase: an encrypted
     * key fails instead of prompting on a terminal. */
    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"");
    if (!key) {
        snprintf(err, errlen, "private_key is not a PEM private key");
        goto out;
    }
    if (EVP_PKEY_base_id(key) != EVP_PKEY_RSA) {
        snprintf(err, errlen, "private_key is not an RSA key (RS256 needs RSA)");
        goto out;
    }
    if (!(head = b64_json(header)) || !(payload = b64_json(claims)))
        goto oom;
    size_t in_len = strlen(head) + 1 + strlen(payload);
    if (!(input = malloc(in_len + 1)))
        goto oom;
    snprintf(input, in_len + 1, "%s.%s", head, payload);
    size_t sig_len = 0;
    if (!(md = EVP_MD_CTX_new()) || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)input, in_len) != 1 ||
        !(sig = malloc(sig_len)) ||
        EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)input, in_len) != 1) {
        snprintf(err, errlen, "RS256 signing failed");
        goto out;
    }
    if (!(sig64 = gt_base64url_encode(sig, sig_len)))
        goto oom;
    size_t tl = in_len + 1 + strlen(sig64) + 1;
    if (!(token = malloc(tl)))
        goto oom;
    snprintf(token, tl, "%s.%s", input, sig64);
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    BIO_free(bio);
    json_decref(header);
    free(head);
    free(payload);
    free(input);
    free(sig);
    free(sig64);
    return token;
}
