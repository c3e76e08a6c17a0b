/* crypto_check.h - independent checks for the signers' tests: RSA key
 * generation and RS256 JWT verification written straight on OpenSSL (not on
 * workers/jwt.c, so a bug there cannot hide itself). */
#ifndef GT_CRYPTO_CHECK_H
#define GT_CRYPTO_CHECK_H

#include <jansson.h>

/* A fresh 2048-bit RSA key: returns its PKCS#8 PEM (malloc'd) and sets
 * *public_pem (malloc'd SubjectPublicKeyInfo PEM). NULL on failure. */
char *tc_rsa_keygen(char **public_pem);

/* 1 when token is "h.p.s" with header alg RS256 and s verifies over "h.p"
 * with public_pem; then *header and *claims (when not NULL) hold the decoded
 * JSON (caller decrefs). 0 otherwise. */
int tc_jwt_verify_rs256(const char *token, const char *public_pem, json_t **header,
                        json_t **claims);

/* Standard base64 of base64url text (OpenSSL decoder); malloc'd bytes, NUL-terminated. */
unsigned char *tc_b64url_decode(const char *s, size_t len, size_t *out_len);

#endif
