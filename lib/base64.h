/* base64.h - base64 (RFC 4648 section 4, padded) and base64url (section 5,
 * unpadded), the one encoder in Gantry, over OpenSSL's EVP_EncodeBlock. */
#ifndef GT_BASE64_H
#define GT_BASE64_H

#include <stddef.h>

/* Base64, padded. Returns a malloc'd NUL-terminated string owned by the
 * caller, or NULL on out of memory or an input too large for OpenSSL (> 1.5 GiB). */
char *gt_base64_encode(const void *data, size_t len);

/* Decodes padded base64. Returns malloc'd bytes (owned by the caller) and
 * their length in *out_len (optional), or NULL if s is malformed (a length
 * not a multiple of 4, a character outside the alphabet, '=' other than at
 * the end) or on out of memory. */
unsigned char *gt_base64_decode(const char *s, size_t *out_len);

/* base64url without padding. Returns a malloc'd NUL-terminated string owned
 * by the caller, or NULL on out of memory. */
char *gt_base64url_encode(const unsigned char *data, size_t len);

/* Decodes base64url (padding optional). Returns 0 with *out malloc'd (owned
 * by the caller, NUL-terminated for convenience) and *outlen set, or -1 on a
 * character outside the alphabet, a bad length or out of memory. */
int gt_base64url_decode(const char *s, size_t len, unsigned char **out, size_t *outlen);

#endif
