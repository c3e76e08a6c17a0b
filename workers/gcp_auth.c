/* gcp_auth.c - service-account JWT assertion -> OAuth2 access token, cached,
 * one exchange shared by concurrent callers. */
#include "gcp_auth.h"
#include "json_text.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jwt.h"

#define GCP_DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define GCP_DEFAULT_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define GCP_REFRESH_MARGIN_S 60  /* refresh this long before expiry */
#define GCP_ASSERTION_TTL_S 3600 /* Google's maximum assertion lifetime */
#define GCP_EXCHANGE_TIMEOUT_MS 30000

typedef struct waiter {
    gt_gcp_token_cb cb;
    void *arg;
    struct waiter *next;
} waiter_t;

/* One token request; outlives a when a is freed while it runs. */
typedef struct exchange {
    gt_gcp_auth_t *a; /* NULL once a is freed */
} exchange_t;

struct gt_gcp_auth {
    uv_loop_t *loop;
    gt_http_t *http;
    char *client_email, *private_key, *key_id, *token_uri, *scope;
    char *token;         /* cached access token, or NULL */
    time_t token_expiry; /* wall-clock expiry of token */
    exchange_t *running; /* the exchange in flight, or NULL */
    waiter_t *waiters, **tail;
    unsigned exchanges;
};

static void wipe_free(char *s)
{
    if (s) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

static char *dup_field(const json_t *doc, const char *key)
{
    const char *v = json_string_value(json_object_get(doc, key));
    return v && *v ? strdup(v) : NULL;
}

gt_gcp_auth_t *gt_gcp_auth_new(uv_loop_t *loop, gt_http_t *http, const char *credentials_json,
                               char *err, size_t errlen)
{
    json_t *doc = credentials_json ? json_loads(credentials_json, 0, NULL) : NULL;
    gt_gcp_auth_t *a = NULL;
    if (!json_is_object(doc)) {
        /* No json_error_t text: it could quote part of the key. */
        snprintf(err, errlen, "credentials are not a service-account JSON object");
        goto out;
    }
    const char *type = json_string_value(json_object_get(doc, "type"));
    if (type && strcmp(type, "service_account") != 0) {
        snprintf(err, errlen, "credentials type is \"%.40s\", want \"service_account\"", type);
        goto out;
    }
    if (!(a = calloc(1, sizeof(*a))))
        goto oom;
    a->loop = loop;
    a->http = http;
    a->tail = &a->waiters;
    a->client_email = dup_field(doc, "client_email");
    a->private_key = dup_field(doc, "private_key");
    a->key_id = dup_field(doc, "private_key_id");
    a->token_uri = dup_field(doc, "token_uri");
    if (!a->token_uri)
        a->token_uri = strdup(GCP_DEFAULT_TOKEN_URI);
    a->scope = strdup(GCP_DEFAULT_SCOPE);
    if (!a->client_email || !a->private_key) {
        snprintf(err, errlen, "credentials lack %s",
                 !a->client_email ? "client_email" : "private_key");
        gt_gcp_auth_free(a);
        a = NULL;
        goto out;
    }
    if (!a->token_uri || !a->scope) {
        gt_gcp_auth_free(a);
        a = NULL;
        goto oom;
    }
    /* Sign once now so a bad key fails at start-up, not on the first task. */
    json_t *probe = json_pack("{s:s}", "iss", a->client_email);
    char *tok = probe ? gt_jwt_sign_rs256(probe, a->private_key, NULL, err, errlen) : NULL;
    json_decref(probe);
    if (!tok) {
        if (!probe)
            snprintf(err, errlen, "out of memory");
        gt_gcp_auth_free(a);
        a = NULL;
        goto out;
    }
    free(tok);
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    if (doc) {
        /* Wipe the parsed private key before jansson frees it. */
        json_t *pk = json_object_get(doc, "private_key");
        if (json_is_string(pk))
            memset((char *)json_string_value(pk), 0, json_string_length(pk));
    }
    json_decref(doc);
    return a;
}

int gt_gcp_auth_set_scope(gt_gcp_auth_t *a, const char *scope)
{
    char *s = strdup(scope);
    if (!s)
        return -1;
    free(a->scope);
    a->scope = s;
    return 0;
}

unsigned gt_gcp_auth_exchanges(const gt_gcp_auth_t *a)
{
    return a->exchanges;
}

/* Answers every waiter; cb may call get again (it then queues on a fresh
 * list) or free a, token included: the rest are answered from a copy. */
static void answer_all(gt_gcp_auth_t *a, const char *token, const char *error)
{
    waiter_t *w = a->waiters;
    a->waiters = NULL;
    a->tail = &a->waiters;
    char *copy = token ? strdup(token) : NULL;
    if (token && !copy)
        error = "out of memory";
    while (w) {
        waiter_t *next = w->next;
        w->cb(copy, copy ? NULL : error, w->arg);
        free(w);
        w = next;
    }
    wipe_free(copy);
}

/* application/x-www-form-urlencoded value: unreserved bytes kept, the rest %XX. */
static void form_escape(char *dst, const char *src)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *src; src++) {
        unsigned char c = (unsigned char)*src;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            *dst++ = (char)c;
        } else {
            *dst++ = '%';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 15];
        }
    }
    *dst = '\0';
}

static void on_exchange(const gt_http_response_t *resp, void *arg)
{
    exchange_t *x = arg;
    gt_gcp_auth_t *a = x->a;
    json_t *doc = NULL;
    char error[256];
    free(x);
    if (!a)
        return; /* freed while we ran */
    a->running = NULL;
    if (resp->status == 0) {
        snprintf(error, sizeof(error), "token exchange failed: %s",
                 resp->timed_out ? "timed out"
                 : resp->error   ? resp->error
                                 : "no response");
        goto fail;
    }
    doc = gt_json_parse(resp->body, resp->body_len, 0, NULL);
    if (resp->status < 200 || resp->status > 299) {
        /* Google answers {"error": "invalid_grant", "error_description": ...}. */
        const char *e = json_string_value(json_object_get(doc, "error"));
        const char *d = json_string_value(json_object_get(doc, "error_description"));
        snprintf(error, sizeof(error), "token exchange: HTTP %ld%s%.60s%s%.120s", resp->status,
                 e ? " " : "", e ? e : "", d ? ": " : "", d ? d : "");
        goto fail;
    }
    const char *tok = json_string_value(json_object_get(doc, "access_token"));
    json_t *exp = json_object_get(doc, "expires_in");
    if (!tok || !*tok || !json_is_integer(exp) || json_integer_value(exp) <= 0) {
        snprintf(error, sizeof(error),
                 "token exchange: answer lacks access_token or a positive expires_in");
        goto fail;
    }
    wipe_free(a->token);
    if (!(a->token = strdup(tok))) {
        snprintf(error, sizeof(error), "out of memory");
        goto fail;
    }
    a->token_expiry = time(NULL) + (time_t)json_integer_value(exp);
    json_decref(doc);
    answer_all(a, a->token, NULL);
    return;
fail:
    json_decref(doc);
    answer_all(a, NULL, error);
}

/* Starts the exchange; returns 0 or -1 with error set. */
static int start_exchange(gt_gcp_auth_t *a, char *error, size_t errlen)
{
    time_t now = time(NULL);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", a->client_email, "scope",
                               a->scope, "aud", a->token_uri, "iat", (json_int_t)now, "exp",
                               (json_int_t)(now + GCP_ASSERTION_TTL_S));
    char *jwt = NULL, *body = NULL;
    exchange_t *x = NULL;
    int rc = -1;
    if (!claims) {
        snprintf(error, errlen, "out of memory");
        goto out;
    }
    if (!(jwt = gt_jwt_sign_rs256(claims, a->private_key, a->key_id, error, errlen)))
        goto out;
    static const char grant[] = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
                                "&assertion=";
    size_t n = sizeof(grant) + strlen(jwt) * 3;
    if (!(body = malloc(n)) || !(x = calloc(1, sizeof(*x)))) {
        snprintf(error, errlen, "out of memory");
        goto out;
    }
    memcpy(body, grant, sizeof(grant));
    form_escape(body + sizeof(grant) - 1, jwt); /* a JWT is form-safe already; escape anyway */
    static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                          "Accept: application/json", NULL};
    x->a = a;
    if (gt_http_request(a->http, "POST", a->token_uri, headers, body, strlen(body),
                        GCP_EXCHANGE_TIMEOUT_MS, on_exchange, x) != 0) {
        snprintf(error, errlen, "token exchange could not start");
        goto out;
    }
    a->running = x;
    a->exchanges++;
    x = NULL;
    rc = 0;
out:
    json_decref(claims);
    wipe_free(jwt);
    wipe_free(body);
    free(x);
    return rc;
}

void gt_gcp_auth_get(gt_gcp_auth_t *a, gt_gcp_token_cb cb, void *arg)
{
    if (a->token && time(NULL) < a->token_expiry - GCP_REFRESH_MARGIN_S) {
        cb(a->token, NULL, arg);
        return;
    }
    waiter_t *w = malloc(sizeof(*w));
    if (!w) {
        cb(NULL, "out of memory", arg);
        return;
    }
    w->cb = cb;
    w->arg = arg;
    w->next = NULL;
    *a->tail = w;
    a->tail = &w->next;
    if (a->running)
        return;
    char error[256];
    if (start_exchange(a, error, sizeof(error)) != 0)
        answer_all(a, NULL, error);
}

void gt_gcp_auth_free(gt_gcp_auth_t *a)
{
    if (!a)
        return;
    if (a->running)
        a->running->a = NULL;
    a->running = NULL;
    answer_all(a, NULL, "shutting down");
    free(a->client_email);
    wipe_free(a->private_key);
    free(a->key_id);
    free(a->token_uri);
    free(a->scope);
    wipe_free(a->token);
    free(a);
}
