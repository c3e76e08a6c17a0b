/* prom.c - a strict reader of the Prometheus text exposition format (0.0.4)
 * for tests, and a plain HTTP GET to scrape with. */
#include "prom.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static int is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

static const char *type_of(prom_t *p, const char *name)
{
    for (int i = 0; i < p->n_typed; i++)
        if (strcmp(p->typed[i], name) == 0)
            return p->types[i];
    return NULL;
}

static int parse_value(const char *s, double *v)
{
    if (strcmp(s, "+Inf") == 0 || strcmp(s, "-Inf") == 0 || strcmp(s, "NaN") == 0) {
        *v = strcmp(s, "NaN") == 0 ? NAN : s[0] == '+' ? INFINITY : -INFINITY;
        return 0;
    }
    char *end;
    *v = strtod(s, &end);
    return *s && !*end && !strpbrk(s, "iInN") ? 0 : -1;
}

/* One sample line. Returns 0, or -1 with p->err set. */
static int parse_sample(prom_t *p, const char *line)
{
    char name[128], labels[256] = "", le[128] = "", key[640];
    const char *s = line;
    size_t n = 0;
    if (!is_name_start(*s))
        return snprintf(p->err, sizeof(p->err), "bad metric name: %.180s", line), -1;
    while (is_name_char(*s) && n < sizeof(name) - 1)
        name[n++] = *s++;
    name[n] = '\0';
    size_t ln = 0;
    if (*s == '{') {
        s++;
        while (*s != '}') {
            char lname[64], lval[128];
            size_t k = 0, v = 0;
            if (!is_name_start(*s))
                return snprintf(p->err, sizeof(p->err), "bad label name: %.180s", line), -1;
            while (is_name_char(*s) && k < sizeof(lname) - 1)
                lname[k++] = *s++;
            lname[k] = '\0';
            if (s[0] != '=' || s[1] != '"')
                return snprintf(p->err, sizeof(p->err), "label without =\": %.180s", line), -1;
            s += 2;
            while (*s != '"') {
                if (!*s || *s == '\n')
                    return snprintf(p->err, sizeof(p->err), "unterminated label: %.180s", line), -1;
                if (*s == '\\') {
                    s++;
                    if (*s != '\\' && *s != '"' && *s != 'n')
                        return snprintf(p->err, sizeof(p->err), "bad escape: %.180s", line), -1;
                }
                if (v < sizeof(lval) - 1)
                    lval[v++] = *s;
                s++;
            }
            lval[v] = '\0';
            s++;
            if (strcmp(lname, "le") == 0)
                snprintf(le, sizeof(le), "%s", lval);
            else
                ln += (size_t)snprintf(labels + ln, sizeof(labels) - ln, "%s=%s,", lname, lval);
            if (*s == ',')
                s++;
            else if (*s != '}')
                return snprintf(p->err, sizeof(p->err), "bad label list: %.180s", line), -1;
        }
        s++;
    }
    if (*s != ' ')
        return snprintf(p->err, sizeof(p->err), "no space before the value: %.180s", line), -1;
    double val;
    if (parse_value(s + 1, &val) != 0)
        return snprintf(p->err, sizeof(p->err), "bad value: %.180s", line), -1;

    /* The family: histogram samples carry a suffix. */
    char family[128];
    snprintf(family, sizeof(family), "%s", name);
    const char *suffix = "";
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < 3; i++) {
        size_t fl = strlen(name), sl = strlen(sfx[i]);
        if (fl > sl && strcmp(name + fl - sl, sfx[i]) == 0) {
            char base[128];
            snprintf(base, sizeof(base), "%.*s", (int)(fl - sl), name);
            const char *t = type_of(p, base);
            if (t && strcmp(t, "histogram") == 0) {
                snprintf(family, sizeof(family), "%s", base);
                suffix = sfx[i];
            }
        }
    }
    const char *type = type_of(p, family);
    if (!type)
        return snprintf(p->err, sizeof(p->err), "sample before its TYPE: %.180s", line), -1;
    if (strcmp(type, "counter") == 0 && !(val >= 0))
        return snprintf(p->err, sizeof(p->err), "negative counter: %.180s", line), -1;
    snprintf(key, sizeof(key), "%s{%s}le=%s", name, labels, le);
    for (int i = 0; i < p->samples && i < MAX_SERIES; i++)
        if (strcmp(p->series[i], key) == 0)
            return snprintf(p->err, sizeof(p->err), "duplicate series: %.180s", line), -1;
    if (p->samples < MAX_SERIES)
        snprintf(p->series[p->samples], sizeof(p->series[0]), "%s", key);
    p->samples++;

    if (strcmp(type, "histogram") == 0) {
        char hk[640];
        snprintf(hk, sizeof(hk), "%s{%s}", family, labels);
        if (strcmp(suffix, "_bucket") == 0) {
            double bound;
            if (!*le || parse_value(le, &bound) != 0)
                return snprintf(p->err, sizeof(p->err), "bucket without le: %.180s", line), -1;
            if (!p->in_hist || strcmp(p->hist_key, hk) != 0) {
                if (p->in_hist)
                    return snprintf(p->err, sizeof(p->err), "histogram %.180s lacks +Inf",
                                    p->hist_key),
                           -1;
                snprintf(p->hist_key, sizeof(p->hist_key), "%s", hk);
                p->in_hist = 1;
                p->last_le = -INFINITY;
                p->last_count = 0;
            }
            if (!(bound > p->last_le) || val < p->last_count)
                return snprintf(p->err, sizeof(p->err), "buckets not cumulative: %.180s", line), -1;
            p->last_le = bound;
            p->last_count = val;
        } else if (strcmp(suffix, "_count") == 0) {
            if (strcmp(p->hist_key, hk) != 0 || !isinf(p->last_le) || val != p->last_count)
                return snprintf(p->err, sizeof(p->err), "_count differs from +Inf: %.180s", line),
                       -1;
            p->in_hist = 0;
            p->hist_key[0] = '\0';
        } else if (*le) {
            return snprintf(p->err, sizeof(p->err), "le on a non-bucket: %.180s", line), -1;
        }
    } else if (*le) {
        return snprintf(p->err, sizeof(p->err), "le outside a histogram: %.180s", line), -1;
    }
    return 0;
}

/* Returns the number of samples, or -1 with p->err set. */
int prom_parse(prom_t *p, const char *text)
{
    memset(p, 0, sizeof(*p));
    const char *s = text;
    while (*s) {
        const char *nl = strchr(s, '\n');
        if (!nl)
            return snprintf(p->err, sizeof(p->err), "last line lacks a newline"), -1;
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)(nl - s), s);
        s = nl + 1;
        if (!line[0])
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32], extra[8];
            if (sscanf(line + 7, "%127s %31s %7s", name, type, extra) != 2)
                return snprintf(p->err, sizeof(p->err), "bad TYPE: %.180s", line), -1;
            if (strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0 &&
                strcmp(type, "histogram") != 0 && strcmp(type, "summary") != 0 &&
                strcmp(type, "untyped") != 0)
                return snprintf(p->err, sizeof(p->err), "unknown type: %.180s", line), -1;
            if (type_of(p, name))
                return snprintf(p->err, sizeof(p->err), "second TYPE: %.180s", line), -1;
            if (p->n_typed == 64)
                return snprintf(p->err, sizeof(p->err), "too many families"), -1;
            snprintf(p->typed[p->n_typed], sizeof(p->typed[0]), "%s", name);
            snprintf(p->types[p->n_typed], sizeof(p->types[0]), "%s", type);
            p->n_typed++;
            continue;
        }
        if (line[0] == '#') {
            if (strncmp(line, "# HELP ", 7) == 0 && !is_name_start(line[7]))
                return snprintf(p->err, sizeof(p->err), "bad HELP: %.180s", line), -1;
            continue;
        }
        if (parse_sample(p, line) != 0)
            return -1;
    }
    if (p->in_hist)
        return snprintf(p->err, sizeof(p->err), "histogram %.180s lacks _count", p->hist_key), -1;
    return p->samples;
}

double prom_sum(const char *text, const char *name, const char *match)
{
    double sum = 0;
    size_t nl = strlen(name);
    for (const char *s = text; s && *s;) {
        const char *eol = strchr(s, '\n');
        size_t len = eol ? (size_t)(eol - s) : strlen(s);
        if (len > nl && strncmp(s, name, nl) == 0 && (s[nl] == '{' || s[nl] == ' ')) {
            char line[2048];
            snprintf(line, sizeof(line), "%.*s", (int)len, s);
            char *sp = strrchr(line, ' ');
            if (sp && (!match || strstr(line, match)))
                sum += strtod(sp + 1, NULL);
        }
        s = eol ? eol + 1 : NULL;
    }
    return sum;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    prom_body_t *b = arg;
    char *d = realloc(b->data, b->len + size * n + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, p, size * n);
    b->data = d;
    b->len += size * n;
    d[b->len] = '\0';
    return size * n;
}

long prom_get(const char *url, prom_body_t *body)
{
    long code = 0;
    free(body->data);
    body->data = NULL;
    body->len = 0;
    CURL *c = curl_easy_init();
    if (!c)
        return 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    return code;
}
