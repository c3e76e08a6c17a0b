/* jwt.h - RS256 JSON Web Tokens (RFC 7515/7519) signed with OpenSSL.
 * Used for Google service-account assertions; base64url is in base64.h. */
#ifndef GT_JWT_H
#define GT_JWT_H

#include <jansson.h>
#include <stddef.h>

/* Signs claims (an object, borrowed) with the RSA private key in PEM
 * (PKCS#8 "BEGIN PRIVATE KEY" or PKCS#1 "BEGIN RSA PRIVATE KEY"): returns
 * "header.payload.signature" with header {"alg":"RS256","typ":"JWT"} (plus
 * "kid" when kid is not NULL), malloc'd and owned by the caller. Returns NULL
 * with a reason in err (bad key, not RSA, out of memory). The key material is
 * never copied into err. */
char *gt_jwt_sign_rs256(const json_t *claims, const char *private_key_pem, const char *kid,
                        char *err, size_t errlen);

#endif
