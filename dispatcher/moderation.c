/* moderation.c - the moderation client: /v1/moderations over lib/http, with
 * the keyword list as the answer whenever the endpoint cannot give one. */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "log.h"
#include "moderation.h"

struct gt_moderation {
    const gt_config_t *cfg;
    gt_http_t *http;
};

typedef struct check {
    gt_moderation_cb cb;
    void *arg;
    char *text; /* kept for the fallback */
    size_t len;
} check_t;

static const char *const names[GT_MOD_NCATEGORIES] = {"harassment", "hate", "violence", "sexual",
                                                      "self-harm"};

/* Conservative on purpose: phrases that are unambiguous out of context, so
 * the fallback blocks little that an endpoint would pass. */
static const struct {
    int cat;
    const char *phrase;
} keywords[] = {
    {GT_MOD_SELF_HARM, "kill myself"},
    {GT_MOD_SELF_HARM, "suicide method"},
    {GT_MOD_SELF_HARM, "ways to self-harm"},
    {GT_MOD_SELF_HARM, "end my life"},
    {GT_MOD_HARASSMENT, "kill yourself"},
    {GT_MOD_HARASSMENT, "you worthless piece of"},
    {GT_MOD_VIOLENCE, "i will kill you"},
    {GT_MOD_VIOLENCE, "how to make a bomb"},
    {GT_MOD_VIOLENCE, "build a pipe bomb"},
    {GT_MOD_VIOLENCE, "mass shooting plan"},
    {GT_MOD_HATE, "exterminate all"},
    {GT_MOD_HATE, "subhuman vermin"},
    {GT_MOD_SEXUAL, "explicit sexual content involving"},
    {GT_MOD_SEXUAL, "child sexual"},
};

const char *gt_moderation_category_name(int category)
{
    return category >= 0 && category < GT_MOD_NCATEGORIES ? names[category] : "unknown";
}

static int word_char(int c)
{
    return isalnum(c) || c >= 0x80;
}

void gt_moderation_keywords(const char *text, size_t len, double scores[GT_MOD_NCATEGORIES])
{
    for (int k = 0; k < GT_MOD_NCATEGORIES; k++)
        scores[k] = 0;
    for (size_t i = 0; i < len; i++) {
        if (i > 0 && word_char((unsigned char)text[i - 1]))
            continue; /* phrases start on a word boundary */
        for (size_t k = 0; k < sizeof(keywords) / sizeof(keywords[0]); k++) {
            const char *p = keywords[k].phrase;
            size_t n = strlen(p), j = 0;
            if (n > len - i)
                continue;
            while (j < n && tolower((unsigned char)text[i + j]) == p[j])
                j++;
            if (j == n && (i + n == len || !word_char((unsigned char)text[i + n])))
                scores[keywords[k].cat] = 1.0;
        }
    }
}

int gt_moderation_parse(const char *body, double scores[GT_MOD_NCATEGORIES])
{
    json_t *doc = json_loads(body, 0, NULL);
    json_t *cs =
        json_object_get(json_array_get(json_object_get(doc, "results"), 0), "category_scores");
    int rc = json_is_object(cs) ? 0 : -1;
    for (int k = 0; k < GT_MOD_NCATEGORIES; k++)
        scores[k] = 0;
    const char *key;
    json_t *v;
    json_object_foreach (cs, key, v) {
        for (int k = 0; k < GT_MOD_NCATEGORIES; k++) {
            size_t n = strlen(names[k]);
            if (strncmp(key, names[k], n) == 0 && (key[n] == 0 || key[n] == '/') &&
                json_number_value(v) > scores[k])
                scores[k] = json_number_value(v);
        }
    }
    json_decref(doc);
    return rc;
}

int gt_moderation_flagged(const gt_mod_verdict_t *v, const double thresholds[GT_MOD_NCATEGORIES])
{
    for (int k = 0; k < GT_MOD_NCATEGORIES; k++)
        if (v->scores[k] >= thresholds[k] && v->scores[k] > 0)
            return k;
    return -1;
}

gt_moderation_t *gt_moderation_new(uv_loop_t *loop, const gt_config_t *cfg)
{
    gt_moderation_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cfg = cfg;
    if (cfg->moderation_endpoint && !(m->http = gt_http_new(loop))) {
        free(m);
        return NULL;
    }
    return m;
}

static void on_response(const gt_http_response_t *resp, void *arg)
{
    check_t *c = arg;
    gt_mod_verdict_t v = {.source = "endpoint"};
    if (resp->status != 200 || gt_moderation_parse(resp->body, v.scores) != 0) {
        /* Down, slow or garbled: the keyword list answers; the request is not
         * held hostage by an optional service. */
        gt_log(GT_LOG_WARN, NULL, "moderation endpoint unavailable (status %ld%s%s): keyword list",
               resp->status, resp->error ? ", " : "", resp->error ? resp->error : "");
        gt_moderation_keywords(c->text, c->len, v.scores);
        v.source = "keywords-fallback";
    }
    c->cb(&v, c->arg);
    free(c->text);
    free(c);
}

int gt_moderation_check(gt_moderation_t *m, const char *text, size_t len, gt_moderation_cb cb,
                        void *arg)
{
    if (!m->http) {
        gt_mod_verdict_t v = {.source = "keywords"};
        gt_moderation_keywords(text, len, v.scores);
        cb(&v, arg);
        return 0;
    }
    check_t *c = calloc(1, sizeof(*c));
    json_t *body = json_pack("{s:s, s:s%}", "model", m->cfg->moderation_model, "input", text, len);
    char *text_body = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!c || !text_body || !(c->text = malloc(len + 1))) {
        free(c);
        free(text_body);
        return -1;
    }
    memcpy(c->text, text, len);
    c->text[len] = 0;
    c->len = len;
    c->cb = cb;
    c->arg = arg;
    char url[1024], auth[1100];
    snprintf(url, sizeof(url), "%s/v1/moderations", m->cfg->moderation_endpoint);
    const char *hdrs[3] = {"Content-Type: application/json", NULL, NULL};
    if (m->cfg->moderation_api_key) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", m->cfg->moderation_api_key);
        hdrs[1] = auth;
    }
    int rc = gt_http_request(m->http, "POST", url, hdrs, text_body, strlen(text_body),
                             m->cfg->moderation_timeout_ms, on_response, c);
    free(text_body);
    if (rc != 0) {
        gt_mod_verdict_t v = {.source = "keywords-fallback"};
        gt_moderation_keywords(c->text, c->len, v.scores);
        cb(&v, arg);
        free(c->text);
        free(c);
    }
    return 0;
}

void gt_moderation_free(gt_moderation_t *m)
{
    if (!m)
        return;
    if (m->http)
        gt_http_free(m->http);
    free(m);
}
