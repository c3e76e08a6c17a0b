/* sigv4.h - AWS Signature Version 4 for the Authorization header: canonical
 * request, string to sign, signing key and signature (HMAC-SHA256, OpenSSL). */
#ifndef GT_SIGV4_H
#define GT_SIGV4_H

#include <stddef.h>
#include <time.h>

/* Who signs and how. Strings are borrowed. */
typedef struct gt_sigv4_params {
    const char *access_key_id;
    const char *secret_access_key; /* secret: used only inside HMAC, never copied out */
    const char *session_token;     /* temporary credentials, or NULL */
    const char *region, *service;  /* "us-east-1", "bedrock" */
    time_t now;                    /* signing time (UTC) */
    int sign_body; /* 1: also sign an x-amz-content-sha256 header (add it to the request) */
    int normalize; /* 1: remove "." and ".." segments and repeated slashes from the path */
    int omit_session_token; /* 1: the token header is sent but not signed (STS "header after") */
} gt_sigv4_params_t;

/* The results; every string is owned: gt_sigv4_free. */
typedef struct gt_sigv4 {
    char *canonical_request;
    char *string_to_sign;
    char *signed_headers;  /* "host;x-amz-date" */
    char *authorization;   /* the Authorization header's value */
    char signature[65];    /* lowercase hex */
    char amz_date[17];     /* X-Amz-Date: 20150830T123600Z */
    char payload_hash[65]; /* hex SHA-256 of the body (x-amz-content-sha256) */
} gt_sigv4_t;

/* Signs a request. path_query is the request target as sent ("/a/b?x=1"),
 * raw or percent-encoded; each path segment is URI-encoded once more as
 * SigV4 requires for every service but S3. headers are "Name: value" lines,
 * NULL-terminated, and must include Host; repeated names are joined with ","
 * in order, values are trimmed and inner whitespace runs (line folds too)
 * collapse to one space. The signer adds x-amz-date, x-amz-security-token
 * (when session_token is set and not omitted) and x-amz-content-sha256 (when
 * sign_body) to what it signs: the caller must send them as well, with the
 * values in out and p. Returns 0, or -1 with a reason in err (missing Host,
 * malformed header, out of memory); out is then zeroed. */
int gt_sigv4_sign(const gt_sigv4_params_t *p, const char *method, const char *path_query,
                  const char *const *headers, const char *body, size_t body_len, gt_sigv4_t *out,
                  char *err, size_t errlen);

void gt_sigv4_free(gt_sigv4_t *s);

#endif
