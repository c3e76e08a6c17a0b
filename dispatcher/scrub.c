/* scrub.c - mask, hash or remove the personal data in text and JSON. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "scrub.h"

struct gt_scrub {
    gt_scrub_opts_t o;
    json_t *tokens;  /* mask: "<type>:<value>" -> token */
    json_t *mapping; /* mask: token -> value */
    size_t counts[GT_PII_NTYPES];
    size_t next[GT_PII_NTYPES];
};

static int buf_finish(gt_buf_t *b, char **out, size_t *out_len)
{
    *out = gt_buf_take(b, out_len);
    return *out ? 0 : -1;
}

gt_scrub_t *gt_scrub_new(const gt_scrub_opts_t *o)
{
    if (o->mode == GT_SCRUB_HASH && (!o->key || !o->key_len))
        return NULL;
    gt_scrub_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->o = *o;
    if (!s->o.types)
        s->o.types = GT_PII_ALL;
    if (s->o.min_confidence <= 0)
        s->o.min_confidence = 0.5;
    if (s->o.hash_chars < 8 || s->o.hash_chars > 64)
        s->o.hash_chars = 16;
    if (o->mode == GT_SCRUB_MASK) {
        s->tokens = json_object();
        s->mapping = json_object();
        if (!s->tokens || !s->mapping) {
            gt_scrub_free(s);
            return NULL;
        }
    }
    return s;
}

void gt_scrub_free(gt_scrub_t *s)
{
    if (!s)
        return;
    json_decref(s->tokens);
    json_decref(s->mapping);
    free(s);
}

static void upper_name(gt_pii_type_t t, char *out, size_t len)
{
    const char *n = gt_pii_type_name(t);
    size_t k = 0;
    for (; n[k] && k + 1 < len; k++)
        out[k] = (char)(n[k] >= 'a' && n[k] <= 'z' ? n[k] - 32 : n[k]);
    out[k] = 0;
}

/* The mask token of a value: the same value of the same type, the same token. */
static int mask_token(gt_scrub_t *s, gt_pii_type_t t, const char *v, size_t n, char *tok,
                      size_t toklen)
{
    char key[320];
    size_t kl = 2;
    key[0] = (char)('a' + t), key[1] = ':';
    if (n > sizeof(key) - kl)
        n = sizeof(key) - kl; /* spans are bounded well below this */
    memcpy(key + kl, v, n);
    size_t keylen = kl + n;
    const char *known = json_string_value(json_object_getn(s->tokens, key, keylen));
    if (known) {
        snprintf(tok, toklen, "%s", known);
        return 0;
    }
    char name[16];
    upper_name(t, name, sizeof(name));
    snprintf(tok, toklen, "<%s_%zu>", name, ++s->next[t]);
    /* nocheck: raw text need not be UTF-8; spans from JSON strings always are */
    json_t *val = json_stringn_nocheck(v, n);
    if (!val)
        return -1;
    if (json_object_setn_new_nocheck(s->tokens, key, keylen, json_string(tok)) != 0) {
        json_decref(val);
        return -1;
    }
    return json_object_set_new(s->mapping, tok, val) != 0 ? -1 : 0;
}

static void hash_token(gt_scrub_t *s, gt_pii_type_t t, const char *v, size_t n, char *tok,
                       size_t toklen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), s->o.key, (int)s->o.key_len, (const unsigned char *)v, n, mac, &maclen);
    char hex[65];
    for (unsigned i = 0; i < maclen && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    hex[s->o.hash_chars] = 0;
    char name[16];
    upper_name(t, name, sizeof(name));
    snprintf(tok, toklen, "<%s:%s>", name, hex);
}

typedef struct scrub_pass {
    gt_scrub_t *s;
    const char *text;
    size_t done; /* bytes of text copied or replaced */
    gt_buf_t out;
    int err;
} scrub_pass_t;

static int on_finding(const gt_pii_finding_t *f, void *arg)
{
    scrub_pass_t *p = arg;
    gt_scrub_t *s = p->s;
    gt_buf_putn(&p->out, p->text + p->done, f->start - p->done);
    char tok[96];
    const char *v = p->text + f->start;
    size_t n = f->end - f->start;
    if (s->o.mode == GT_SCRUB_MASK) {
        if (mask_token(s, f->type, v, n, tok, sizeof(tok)) != 0) {
            p->err = 1;
            return 1;
        }
        gt_buf_putn(&p->out, tok, strlen(tok));
    } else if (s->o.mode == GT_SCRUB_HASH) {
        hash_token(s, f->type, v, n, tok, sizeof(tok));
        gt_buf_putn(&p->out, tok, strlen(tok));
    }
    s->counts[f->type]++;
    p->done = f->end;
    return p->out.oom;
}

int gt_scrub_text(gt_scrub_t *s, const char *text, size_t len, char **out, size_t *out_len)
{
    scrub_pass_t p = {.s = s, .text = text};
    p.out.cap = len + len / 8 + 64; /* tokens are about as long as what they replace */
    p.out.p = malloc(p.out.cap);
    if (!p.out.p)
        return -1;
    p.out.p[0] = 0;
    gt_pii_scan(text, len, s->o.types, s->o.min_confidence, on_finding, &p);
    if (p.err) {
        free(p.out.p);
        return -1;
    }
    gt_buf_putn(&p.out, text + p.done, len - p.done);
    return buf_finish(&p.out, out, out_len);
}

/* Deep copy of v with f applied to each string value. */
typedef int (*str_fn)(void *ctx, const char *text, size_t len, char **out, size_t *out_len);

static json_t *walk(const json_t *v, str_fn f, void *ctx, int depth)
{
    if (depth > 256)
        return NULL; /* deeper than any request we accept; treat as failure */
    if (json_is_string(v)) {
        char *o;
        size_t ol;
        if (f(ctx, json_string_value(v), json_string_length(v), &o, &ol) != 0)
            return NULL;
        json_t *r = json_stringn(o, ol);
        free(o);
        return r;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *e;
        json_array_foreach (v, i, e) {
            json_t *c = walk(e, f, ctx, depth + 1);
            if (!c || json_array_append_new(a, c) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        size_t kl;
        json_t *e;
        void *tmp;
        json_object_keylen_foreach_safe((json_t *)v, tmp, k, kl, e)
        {
            json_t *c = walk(e, f, ctx, depth + 1);
            if (!c || json_object_setn_new(o, k, kl, c) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    return json_deep_copy(v);
}

static int scrub_fn(void *ctx, const char *text, size_t len, char **out, size_t *out_len)
{
    return gt_scrub_text(ctx, text, len, out, out_len);
}

json_t *gt_scrub_json(gt_scrub_t *s, const json_t *v)
{
    return walk(v, scrub_fn, s, 0);
}

size_t gt_scrub_total(const gt_scrub_t *s)
{
    size_t n = 0;
    for (int t = 0; t < GT_PII_NTYPES; t++)
        n += s->counts[t];
    return n;
}

size_t gt_scrub_count(const gt_scrub_t *s, gt_pii_type_t t)
{
    return (unsigned)t < GT_PII_NTYPES ? s->counts[t] : 0;
}

json_t *gt_scrub_counts(const gt_scrub_t *s)
{
    json_t *o = json_object();
    for (int t = 0; o && t < GT_PII_NTYPES; t++)
        if (s->counts[t])
            json_object_set_new(o, gt_pii_type_name((gt_pii_type_t)t),
                                json_integer((json_int_t)s->counts[t]));
    return o;
}

const json_t *gt_scrub_mapping(const gt_scrub_t *s)
{
    return s->mapping;
}

int gt_scrub_restore_text(const json_t *mapping, const char *text, size_t len, char **out,
                          size_t *out_len)
{
    gt_buf_t b = {0};
    size_t done = 0, i = 0;
    while (i < len) {
        const char *lt = memchr(text + i, '<', len - i);
        if (!lt)
            break;
        i = (size_t)(lt - text);
        size_t j = i + 1;
        while (j < len && j - i < 40 &&
               ((text[j] >= 'A' && text[j] <= 'Z') || (text[j] >= '0' && text[j] <= '9') ||
                text[j] == '_'))
            j++;
        json_t *v =
            j < len && text[j] == '>' ? json_object_getn(mapping, text + i, j + 1 - i) : NULL;
        if (json_is_string(v)) {
            gt_buf_putn(&b, text + done, i - done);
            gt_buf_putn(&b, json_string_value(v), json_string_length(v));
            done = i = j + 1;
        } else {
            i++;
        }
    }
    gt_buf_putn(&b, text + done, len - done);
    return buf_finish(&b, out, out_len);
}

static int restore_fn(void *ctx, const char *text, size_t len, char **out, size_t *out_len)
{
    return gt_scrub_restore_text(ctx, text, len, out, out_len);
}

json_t *gt_scrub_restore_json(const json_t *mapping, const json_t *v)
{
    return walk(v, restore_fn, (void *)mapping, 0);
}
