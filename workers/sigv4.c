/* sigv4.c - AWS Signature Version 4 (header form), as specified in
 * docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html. */
#include "sigv4.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "digest.h"

static int unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* URI-encodes s[0..n) (RFC 3986 unreserved kept, uppercase hex); '/' kept when keep_slash. */
static void buf_uri_encode(gt_buf_t *b, const char *s, size_t n, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        /* NOLINTNEXTLINE(clang-analyzer-core.uninitialized.Assign): n <= strlen(s) */
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            gt_buf_putc(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            gt_buf_putn(b, e, 3);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string (invalid escapes are kept as they are). */
static char *uri_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < n && (h = hexval(s[i + 1])) >= 0 &&
            (l = hexval(s[i + 2])) >= 0) {
            *o++ = (char)(h << 4 | l);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

/* The canonical URI of path[0..n). */
static void canonical_uri(gt_buf_t *b, const char *path, size_t n, int normalize)
{
    if (n == 0) {
        gt_buf_putc(b, '/');
        return;
    }
    if (!normalize) {
        buf_uri_encode(b, path, n, 1);
        return;
    }
    /* RFC 3986 remove_dot_segments, and empty segments dropped (AWS's normalization). */
    const char **seg = malloc(sizeof(*seg) * (n + 1));
    size_t *seglen = malloc(sizeof(*seglen) * (n + 1)), nseg = 0;
    if (!seg || !seglen) {
        b->oom = 1;
        goto out;
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && path[j] != '/')
            j++;
        size_t l = j - i;
        if (l == 0 || (l == 1 && path[i] == '.')) {
            /* skip */
        } else if (l == 2 && path[i] == '.' && path[i + 1] == '.') {
            if (nseg > 0)
                nseg--;
        } else {
            seg[nseg] = path + i;
            seglen[nseg++] = l;
        }
        i = j + 1;
    }
    gt_buf_putc(b, '/');
    for (size_t k = 0; k < nseg; k++) {
        if (k > 0)
            gt_buf_putc(b, '/');
        buf_uri_encode(b, seg[k], seglen[k], 0);
    }
    if (nseg > 0 && path[n - 1] == '/')
        gt_buf_putc(b, '/');
out:
    free(seg);
    free(seglen);
}

typedef struct kv {
    char *k, *v; /* encoded; for headers: lowercase name and folded value */
    size_t order;
} kv_t;

static int kv_cmp(const void *a, const void *b)
{
    const kv_t *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    if (c)
        return c;
    c = strcmp(x->v, y->v);
    return c;
}

static int hdr_cmp(const void *a, const void *b)
{
    const kv_t *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

static void kv_free(kv_t *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].k);
        free(v[i].v);
    }
    free(v);
}

static char *encoded(const char *s, size_t n)
{
    char *d = uri_decode(s, n);
    if (!d)
        return NULL;
    gt_buf_t b = {0};
    buf_uri_encode(&b, d, strlen(d), 0);
    free(d);
    return gt_buf_take(&b, NULL);
}

/* The canonical query string of q[0..n). */
static void canonical_query(gt_buf_t *b, const char *q, size_t n)
{
    size_t cap = 1, cnt = 0;
    for (size_t i = 0; i < n; i++)
        cap += q[i] == '&';
    kv_t *v = calloc(cap, sizeof(*v));
    if (!v) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && q[j] != '&')
            j++;
        if (j > i) {
            const char *eq = memchr(q + i, '=', j - i);
            size_t kl = eq ? (size_t)(eq - (q + i)) : j - i;
            v[cnt].k = encoded(q + i, kl);
            v[cnt].v = eq ? encoded(eq + 1, (size_t)(q + j - eq - 1)) : strdup("");
            if (!v[cnt].k || !v[cnt].v)
                b->oom = 1;
            cnt++;
            if (b->oom)
                break;
        }
        i = j + 1;
    }
    if (!b->oom) {
        qsort(v, cnt, sizeof(*v), kv_cmp);
        for (size_t i = 0; i < cnt; i++) {
            if (i)
                gt_buf_putc(b, '&');
            gt_buf_puts(b, v[i].k);
            gt_buf_putc(b, '=');
            gt_buf_puts(b, v[i].v);
        }
    }
    kv_free(v, cnt);
}

/* Trims and folds whitespace runs (including line folds) to one space. */
static char *fold_value(const char *s)
{
    char *out = malloc(strlen(s) + 1), *o = out;
    if (!out)
        return NULL;
    int space = 0;
    while (*s && isspace((unsigned char)*s))
        s++;
    for (; *s; s++) {
        if (isspace((unsigned char)*s)) {
            space = 1;
            continue;
        }
        if (space && o > out)
            *o++ = ' ';
        space = 0;
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

static void hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
    unsigned int l = 32;
    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &l);
}

static int add_hdr(kv_t *v, size_t *n, const char *name, size_t nlen, const char *value)
{
    v[*n].k = malloc(nlen + 1);
    v[*n].v = fold_value(value);
    v[*n].order = *n;
    (*n)++;
    if (!v[*n - 1].k || !v[*n - 1].v)
        return -1;
    for (size_t i = 0; i < nlen; i++)
        v[*n - 1].k[i] = (char)tolower((unsigned char)name[i]);
    v[*n - 1].k[nlen] = '\0';
    return 0;
}

int gt_sigv4_sign(const gt_sigv4_params_t *p, const char *method, const char *path_query,
                  const char *const *headers, const char *body, size_t body_len, gt_sigv4_t *out,
                  char *err, size_t errlen)
{
    gt_buf_t cr = {0}, sh = {0}, sts = {0}, auth = {0};
    kv_t *hv = NULL;
    size_t nh = 0, cap = 4;
    int rc = -1, have_host = 0;
    memset(out, 0, sizeof(*out));

    struct tm tm;
    gmtime_r(&p->now, &tm);
    strftime(out->amz_date, sizeof(out->amz_date), "%Y%m%dT%H%M%SZ", &tm);
    char date[9];
    memcpy(date, out->amz_date, 8);
    date[8] = '\0';
    gt_sha256_hex(body ? body : "", body ? body_len : 0, out->payload_hash);

    for (size_t i = 0; headers && headers[i]; i++)
        cap++;
    if (!(hv = calloc(cap, sizeof(*hv))))
        goto oom;
    for (size_t i = 0; headers && headers[i]; i++) {
        const char *h = headers[i], *colon = strchr(h, ':');
        size_t nl = colon ? (size_t)(colon - h) : 0;
        while (nl > 0 && isspace((unsigned char)h[nl - 1]))
            nl--;
        if (!colon || nl == 0) {
            snprintf(err, errlen, "header %zu is not \"Name: value\"", i);
            goto out;
        }
        if (add_hdr(hv, &nh, h, nl, colon + 1) != 0)
            goto oom;
        have_host |= strcmp(hv[nh - 1].k, "host") == 0;
    }
    if (!have_host) {
        snprintf(err, errlen, "the request has no Host header");
        goto out;
    }
    if (add_hdr(hv, &nh, "x-amz-date", 10, out->amz_date) != 0)
        goto oom;
    if (p->session_token && *p->session_token && !p->omit_session_token &&
        add_hdr(hv, &nh, "x-amz-security-token", 20, p->session_token) != 0)
        goto oom;
    if (p->sign_body && add_hdr(hv, &nh, "x-amz-content-sha256", 20, out->payload_hash) != 0)
        goto oom;
    qsort(hv, nh, sizeof(*hv), hdr_cmp);

    /* Canonical request. */
    const char *q = strchr(path_query, '?');
    size_t plen = q ? (size_t)(q - path_query) : strlen(path_query);
    gt_buf_puts(&cr, method);
    gt_buf_putc(&cr, '\n');
    canonical_uri(&cr, path_query, plen, p->normalize);
    gt_buf_putc(&cr, '\n');
    if (q)
        canonical_query(&cr, q + 1, strlen(q + 1));
    gt_buf_putc(&cr, '\n');
    for (size_t i = 0; i < nh; i++) {
        int first = i == 0 || strcmp(hv[i].k, hv[i - 1].k) != 0;
        int last = i + 1 == nh || strcmp(hv[i].k, hv[i + 1].k) != 0;
        if (first) {
            gt_buf_puts(&cr, hv[i].k);
            gt_buf_putc(&cr, ':');
            if (sh.len)
                gt_buf_putc(&sh, ';');
            gt_buf_puts(&sh, hv[i].k);
        } else {
            gt_buf_putc(&cr, ',');
        }
        gt_buf_puts(&cr, hv[i].v);
        if (last)
            gt_buf_putc(&cr, '\n');
    }
    gt_buf_putc(&cr, '\n');
    gt_buf_puts(&cr, sh.p ? sh.p : "");
    gt_buf_putc(&cr, '\n');
    gt_buf_puts(&cr, out->payload_hash);
    if (cr.oom || sh.oom)
        goto oom;

    /* String to sign. */
    char cr_hash[65], scope[256];
    gt_sha256_hex(cr.p, cr.len, cr_hash);
    snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date, p->region, p->service);
    gt_buf_puts(&sts, "AWS4-HMAC-SHA256\n");
    gt_buf_puts(&sts, out->amz_date);
    gt_buf_putc(&sts, '\n');
    gt_buf_puts(&sts, scope);
    gt_buf_putc(&sts, '\n');
    gt_buf_puts(&sts, cr_hash);
    if (sts.oom)
        goto oom;

    /* Signing key: HMAC chain over date, region, service, "aws4_request". */
    size_t sl = strlen(p->secret_access_key);
    char *k0 = malloc(sl + 5);
    if (!k0)
        goto oom;
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, p->secret_access_key, sl + 1);
    unsigned char k[32], sig[32];
    hmac(k0, sl + 4, date, k);
    memset(k0, 0, sl + 4);
    free(k0);
    hmac(k, 32, p->region, k);
    hmac(k, 32, p->service, k);
    hmac(k, 32, "aws4_request", k);
    hmac(k, 32, sts.p, sig);
    memset(k, 0, sizeof(k));
    gt_hex_lower(sig, 32, out->signature);

    gt_buf_puts(&auth, "AWS4-HMAC-SHA256 Credential=");
    gt_buf_puts(&auth, p->access_key_id);
    gt_buf_putc(&auth, '/');
    gt_buf_puts(&auth, scope);
    gt_buf_puts(&auth, ", SignedHeaders=");
    gt_buf_puts(&auth, sh.p);
    gt_buf_puts(&auth, ", Signature=");
    gt_buf_puts(&auth, out->signature);
    if (auth.oom)
        goto oom;
    out->canonical_request = cr.p;
    out->string_to_sign = sts.p;
    out->signed_headers = sh.p;
    out->authorization = auth.p;
    cr.p = sts.p = sh.p = auth.p = NULL;
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    kv_free(hv, nh);
    free(cr.p);
    free(sh.p);
    free(sts.p);
    free(auth.p);
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

void gt_sigv4_free(gt_sigv4_t *s)
{
    if (!s)
        return;
    free(s->canonical_request);
    free(s->string_to_sign);
    free(s->signed_headers);
    free(s->authorization);
    memset(s, 0, sizeof(*s));
}
