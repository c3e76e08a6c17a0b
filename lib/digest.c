/* digest.c - SHA-256 hex digests with OpenSSL (see digest.h). */
#include <openssl/evp.h>
#include <string.h>

#include "digest.h"

void gt_hex_lower(const unsigned char *d, size_t n, char *hex)
{
    static const char x[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = x[d[i] >> 4];
        hex[2 * i + 1] = x[d[i] & 15];
    }
    hex[2 * n] = '\0';
}

void gt_sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char md[32];
    unsigned int l = 32;
    memset(md, 0, sizeof(md));
    EVP_Digest(data, len, md, &l, EVP_sha256(), NULL);
    gt_hex_lower(md, 32, hex);
}
