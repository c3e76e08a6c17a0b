/* base64.c - base64 and base64url over OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock;
 * base64url is the standard alphabet with '+/' read as '-_' and no padding. */
#include "base64.h"

#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define B64_ALPHABET "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

char *gt_base64_encode(const void *data, size_t len)
{
    if (len > (size_t)INT_MAX / 4 * 3)
        return NULL;
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* EVP_DecodeBlock skips surrounding whitespace and keeps the zero bytes that
 * padding stands for; the checks here make decoding strict and exact. */
unsigned char *gt_base64_decode(const char *s, size_t *out_len)
{
    size_t len = strlen(s);
    if (len % 4 || len > INT_MAX)
        return NULL;
    size_t body = strspn(s, B64_ALPHABET "+/");
    size_t pad = len - body;
    if (pad > 2 || strspn(s + body, "=") != pad)
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    if (!out)
        return NULL;
    int n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
    if (n < 0 || (size_t)n < pad) {
        free(out);
        return NULL;
    }
    n -= (int)pad;
    out[n] = '\0';
    if (out_len)
        *out_len = (size_t)n;
    return out;
}

char *gt_base64url_encode(const unsigned char *data, size_t len)
{
    char *out = gt_base64_encode(data, len);
    if (!out)
        return NULL;
    char *o = out;
    for (char *p = out; *p && *p != '='; p++)
        *o++ = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    *o = '\0';
    return out;
}

int gt_base64url_decode(const char *s, size_t len, unsigned char **out, size_t *outlen)
{
    int rc = -1;
    while (len > 0 && s[len - 1] == '=')
        len--;
    if (len % 4 == 1 || len > INT_MAX - 4)
        return -1;
    char *std = malloc(len + 4);
    if (!std)
        return -1;
    size_t i = 0;
    for (; i < len; i++) {
        char c = s[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!c || !strchr(B64_ALPHABET, c))
            goto out;
        std[i] = c;
    }
    for (; i % 4; i++)
        std[i] = '=';
    std[i] = '\0';
    unsigned char *bytes = gt_base64_decode(std, outlen);
    if (!bytes)
        goto out;
    *out = bytes;
    rc = 0;
out:
    free(std);
    return rc;
}
