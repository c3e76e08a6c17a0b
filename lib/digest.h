/* digest.h - SHA-256 in lowercase hex (OpenSSL), shared by the dispatcher's
 * request hash, the DLQ's truncated-entry digest and the workers' SigV4. */
#ifndef GT_DIGEST_H
#define GT_DIGEST_H

#include <stddef.h>

/* Lowercase hex of the n bytes at d into hex[2n + 1] (NUL-terminated). */
void gt_hex_lower(const unsigned char *d, size_t n, char *hex);

/* Lowercase hex SHA-256 of data into hex[65]. Never fails (OpenSSL's digest of
 * memory cannot fail short of a broken library; hex is then all zeros). */
void gt_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
