/* gcp_auth.h - OAuth2 access tokens for Google APIs from a service-account
 * JSON key: a signed RS256 JWT assertion exchanged at the key's token_uri
 * (RFC 7523 jwt-bearer grant), cached until about 60 s before it expires. */
#ifndef GT_GCP_AUTH_H
#define GT_GCP_AUTH_H

#include <stddef.h>
#include <uv.h>

#include "http.h"

typedef struct gt_gcp_auth gt_gcp_auth_t;

/* credentials_json is the service-account key text ("client_email",
 * "private_key", optional "token_uri" [default
 * https://oauth2.googleapis.com/token], optional "private_key_id"); it is
 * copied, and the copy is wiped on free. loop and http are borrowed and must
 * outlive the object. Returns NULL with a reason in err (never the key) when
 * the JSON or the key is unusable. */
gt_gcp_auth_t *gt_gcp_auth_new(uv_loop_t *loop, gt_http_t *http, const char *credentials_json,
                               char *err, size_t errlen);

/* token is NULL on failure, with error set; both valid only during the call. */
typedef void (*gt_gcp_token_cb)(const char *token, const char *error, void *arg);

/* Calls cb exactly once with a valid access token. A cached token answers
 * inside the call; otherwise one exchange is started and every caller that
 * arrives while it runs waits for that same exchange. A failed exchange fails
 * all its waiters and is not cached (the next get tries again). */
void gt_gcp_auth_get(gt_gcp_auth_t *a, gt_gcp_token_cb cb, void *arg);

/* Overrides the "scope" claim (default
 * https://www.googleapis.com/auth/cloud-platform). Returns 0 or -1. */
int gt_gcp_auth_set_scope(gt_gcp_auth_t *a, const char *scope);

/* Exchanges performed so far (for tests and metrics). */
unsigned gt_gcp_auth_exchanges(const gt_gcp_auth_t *a);

/* Frees a. Callers still waiting get cb(NULL, "shutting down") now; an
 * exchange in flight finishes detached and its answer is dropped. */
void gt_gcp_auth_free(gt_gcp_auth_t *a);

#endif
