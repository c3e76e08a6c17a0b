/* recorder.c - the recording HTTP server for tests (libmicrohttpd). */
#include "recorder.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct th_recorder {
    struct MHD_Daemon *d;
    int port;
    char url[64];
    pthread_mutex_t mu;
    th_recorded_t **reqs;
    size_t n, cap;
    int status;
    char *canned;
    th_recorder_fn fn;
    void *fn_arg;
};

static void recorded_free(th_recorded_t *q)
{
    if (!q)
        return;
    for (size_t i = 0; i < q->n_headers; i++)
        free(q->headers[i]);
    free(q->headers);
    free(q->method);
    free(q->path);
    free(q->body);
    free(q);
}

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    th_recorded_t *q = cls;
    (void)kind;
    char **h = realloc(q->headers, (q->n_headers + 2) * sizeof(char *));
    if (!h)
        return MHD_NO;
    q->headers = h;
    size_t n = strlen(key) + strlen(value ? value : "") + 3;
    if ((h[q->n_headers] = malloc(n)))
        snprintf(h[q->n_headers++], n, "%s: %s", key, value ? value : "");
    h[q->n_headers] = NULL;
    return MHD_YES;
}

/* Keeps percent-escapes: the recorder shows what went on the wire. */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls, (void)c;
    return strlen(s);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    th_recorder_t *r = cls;
    th_recorded_t *q = *con_cls;
    (void)version;
    if (!q) {
        if (!(q = calloc(1, sizeof(*q))) || !(q->method = strdup(method)) ||
            !(q->path = strdup(url)) || !(q->body = calloc(1, 1))) {
            recorded_free(q);
            return MHD_NO;
        }
        MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header, q);
        *con_cls = q;
        return MHD_YES;
    }
    if (*upload_data_size) {
        char *b = realloc(q->body, q->body_len + *upload_data_size + 1);
        if (!b)
            return MHD_NO;
        memcpy(b + q->body_len, upload_data, *upload_data_size);
        q->body = b;
        q->body_len += *upload_data_size;
        b[q->body_len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* The whole request is in: record it, then answer. */
    *con_cls = NULL;
    int status = 0;
    char *body = NULL;
    pthread_mutex_lock(&r->mu);
    th_recorder_fn fn = r->fn;
    void *arg = r->fn_arg;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        th_recorded_t **g = realloc(r->reqs, cap * sizeof(*g));
        if (g) {
            r->reqs = g;
            r->cap = cap;
        }
    }
    int kept = r->n < r->cap;
    if (kept)
        r->reqs[r->n++] = q;
    pthread_mutex_unlock(&r->mu);
    if (!fn || fn(q, &status, &body, arg) != 0) {
        pthread_mutex_lock(&r->mu);
        status = r->status;
        body = strdup(r->canned);
        pthread_mutex_unlock(&r->mu);
    }
    if (!kept)
        recorded_free(q);
    if (!body)
        return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* A request that ended before it was complete (client gone). */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    recorded_free(*con_cls);
    *con_cls = NULL;
}

th_recorder_t *th_recorder_start(void)
{
    th_recorder_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->status = 200;
    r->canned = strdup("{}");
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                            on_request, r, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_UNESCAPE_CALLBACK,
                            no_unescape, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, r,
                            MHD_OPTION_END);
    if (!r->d || !r->canned) {
        th_recorder_stop(r);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(r->d, MHD_DAEMON_INFO_BIND_PORT);
    r->port = info ? info->port : 0;
    snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d", r->port);
    return r;
}

int th_recorder_port(const th_recorder_t *r)
{
    return r->port;
}

const char *th_recorder_url(const th_recorder_t *r)
{
    return r->url;
}

void th_recorder_reply(th_recorder_t *r, int status, const char *body)
{
    char *b = strdup(body);
    pthread_mutex_lock(&r->mu);
    if (b) {
        free(r->canned);
        r->canned = b;
    }
    r->status = status;
    pthread_mutex_unlock(&r->mu);
}

void th_recorder_handler(th_recorder_t *r, th_recorder_fn fn, void *arg)
{
    pthread_mutex_lock(&r->mu);
    r->fn = fn;
    r->fn_arg = arg;
    pthread_mutex_unlock(&r->mu);
}

size_t th_recorder_count(th_recorder_t *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

const th_recorded_t *th_recorder_get(th_recorder_t *r, size_t i)
{
    pthread_mutex_lock(&r->mu);
    const th_recorded_t *q = i < r->n ? r->reqs[i] : NULL;
    pthread_mutex_unlock(&r->mu);
    return q;
}

const char *th_recorded_header(const th_recorded_t *q, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; q && i < q->n_headers; i++)
        if (strncasecmp(q->headers[i], name, nl) == 0 && q->headers[i][nl] == ':')
            return q->headers[i] + nl + 2;
    return NULL;
}

void th_recorder_stop(th_recorder_t *r)
{
    if (!r)
        return;
    if (r->d)
        MHD_stop_daemon(r->d);
    for (size_t i = 0; i < r->n; i++)
        recorded_free(r->reqs[i]);
    free(r->reqs);
    free(r->canned);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
