/* jwt.h - RS256 JSON Web Tokens (RFC 7515/7519) signed with OpenSSL, and the
 * base64url encoding they use. Used for Google service-account assertions. */
#ifndef GT_JWT_H
#define GT_JWT_H

#include <jansson.h>
#include <stddef.h>

/* base64url without padding (RFC 4648 section 5). Returns a malloc'd
 * NUL-terminated string owned by the caller, or NULL on out of memory. */
char *gt_base64url_encode(const unsigned char *data, size_t len);

/* Decodes base64url (padding optional). Returns 0 with *out malloc'd (owned
 * by the caller, NUL-terminated for convenience) and *outlen set, or -1 on a
 * character outside the alphabet, a bad length or out of memory. */
int gt_base64url_decode(const char *s, size_t len, unsigned char **out, size_t *outlen);

/* Signs claims (an object, borrowed) with the RSA private key in PEM
 * (PKCS#8 "BEGIN PRIVATE KEY" or PKCS#1 "BEGIN RSA PRIVATE KEY"): returns
 * "header.payload.signature" with header {"alg":"RS256","typ":"JWT"} (plus
 * "kid" when kid is not NULL), malloc'd and owned by the caller. Returns NULL
 * with a reason in err (bad key, not RSA, out of memory). The key material is
 * never copied into err. */
char *gt_jwt_sign_rs256(const json_t *claims, const char *private_key_pem, const char *kid,
                        char *err, size_t errlen);

#endif
