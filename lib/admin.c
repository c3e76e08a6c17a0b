/* admin.c - /health, /ready and /metrics over libmicrohttpd on its own
 * thread, so a scrape never runs on (or waits for) the process's loop. */
#include "admin.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "kafka.h"
#include "metrics.h"

#define MAX_CHECKS 8

typedef struct check {
    char *name;
    gt_admin_check_fn fn; /* NULL: the state the loop pushed (gt_admin_set_ready) */
    void *arg;
    atomic_int pushed;
} check_t;

struct gt_admin {
    struct MHD_Daemon *d;
    int port;
    check_t checks[MAX_CHECKS];
    int n_checks;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             char *body, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    char *body = strdup(text);
    return body ? reply(conn, status, "text/plain; charset=utf-8", body, strlen(body)) : MHD_NO;
}

/* Every check runs; ready only when all pass. Breaker states are detail:
 * an open breaker reroutes work, it does not make the process unready. */
static enum MHD_Result ready(gt_admin_t *a, struct MHD_Connection *conn)
{
    json_t *o = json_object(), *checks = json_object();
    int ok = 1;
    for (int i = 0; i < a->n_checks; i++) {
        char detail[256] = "";
        int r;
        if (a->checks[i].fn) {
            r = a->checks[i].fn(a->checks[i].arg, detail, sizeof(detail));
        } else {
            r = atomic_load(&a->checks[i].pushed);
            snprintf(detail, sizeof(detail), "%s", r ? "connected" : "not connected");
        }
        ok &= r == 1;
        json_object_set_new(checks, a->checks[i].name,
                            json_pack("{s:b,s:s}", "ok", r == 1, "detail", detail));
    }
    json_object_set_new(o, "ready", json_boolean(ok));
    json_object_set_new(o, "checks", checks);
    char *breakers = gt_metrics_json(gt_metrics_gauge(
        "gantry_breaker_open", "1 while a provider endpoint's circuit breaker is open or half-open",
        "provider"));
    json_t *b = breakers ? json_loads(breakers, 0, NULL) : NULL;
    free(breakers);
    json_object_set_new(o, "breakers_open", b ? b : json_object());
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!body)
        return MHD_NO;
    return reply(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", body,
                 strlen(body));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **ctx)
{
    gt_admin_t *a = cls;
    (void)version;
    (void)upload;
    (void)upload_len;
    (void)ctx;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only\n");
    if (strcmp(url, "/health") == 0)
        return reply_text(conn, MHD_HTTP_OK, "ok\n");
    if (strcmp(url, "/ready") == 0)
        return ready(a, conn);
    if (strcmp(url, "/metrics") == 0) {
        size_t len = 0;
        char *text = gt_metrics_render(&len);
        if (!text)
            return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
    }
    return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found: /health, /ready, /metrics\n");
}

gt_admin_t *gt_admin_start(const char *host, int port, char *err, size_t errlen)
{
    struct sockaddr_in sa4;
    struct sockaddr_in6 sa6;
    const struct sockaddr *sa;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    gt_admin_t *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!host)
        host = "127.0.0.1";
    memset(&sa4, 0, sizeof(sa4));
    memset(&sa6, 0, sizeof(sa6));
    if (inet_pton(AF_INET, host, &sa4.sin_addr) == 1) {
        sa4.sin_family = AF_INET;
        sa4.sin_port = htons((uint16_t)port);
        sa = (const struct sockaddr *)&sa4;
    } else if (inet_pton(AF_INET6, host, &sa6.sin6_addr) == 1) {
        sa6.sin6_family = AF_INET6;
        sa6.sin6_port = htons((uint16_t)port);
        sa = (const struct sockaddr *)&sa6;
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "admin: host \"%s\" is not an IP address", host);
        free(a);
        return NULL;
    }
    a->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR,
                            sa, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_CONNECTION_LIMIT,
                            64u, MHD_OPTION_END);
    if (!a->d) {
        snprintf(err, errlen, "admin: cannot listen on %s:%d", host, port);
        free(a);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info ? info->port : port;
    return a;
}

int gt_admin_parse_port(const char *s, int *port)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : -1;
    if (!s || !*s || *end || v < 0 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

int gt_admin_port(const gt_admin_t *a)
{
    return a ? a->port : -1;
}

int gt_admin_add_check(gt_admin_t *a, const char *name, gt_admin_check_fn fn, void *arg)
{
    if (!a || !name || a->n_checks == MAX_CHECKS)
        return -1;
    char *n = strdup(name);
    if (!n)
        return -1;
    /* Checks are added before the first request could look at them. */
    check_t *c = &a->checks[a->n_checks];
    c->name = n;
    c->fn = fn;
    c->arg = arg;
    atomic_init(&c->pushed, 0);
    a->n_checks++;
    return 0;
}

static int check_kafka(void *arg, char *detail, size_t len)
{
    int ok = gt_producer_probe(arg, 1000) == 0;
    snprintf(detail, len, "%s", ok ? "brokers reachable" : "no broker answered within 1 s");
    return ok;
}

void gt_admin_set_ready(gt_admin_t *a, const char *name, int ok)
{
    for (int i = 0; a && i < a->n_checks; i++)
        if (!a->checks[i].fn && strcmp(a->checks[i].name, name) == 0)
            atomic_store(&a->checks[i].pushed, ok ? 1 : 0);
}

int gt_admin_open(const gt_config_t *cfg, int port_override, gt_producer_t *producer, int uses_pg,
                  gt_admin_t **out, char *err, size_t errlen)
{
    int port = port_override >= 0 ? port_override : cfg->admin_port;
    *out = NULL;
    if (port < 0)
        return 0;
    gt_admin_t *a = gt_admin_start(cfg->admin_host, port, err, errlen);
    if (!a)
        return -1;
    if (producer)
        gt_admin_add_check(a, "kafka", check_kafka, producer);
    if (uses_pg)
        gt_admin_add_check(a, "postgres", NULL, NULL); /* pushed by the loop */
    printf("admin=%s:%d\n", cfg->admin_host ? cfg->admin_host : "127.0.0.1", a->port);
    fflush(stdout);
    *out = a;
    return 0;
}

void gt_admin_stop(gt_admin_t *a)
{
    if (!a)
        return;
    if (a->d)
        MHD_stop_daemon(a->d);
    for (int i = 0; i < a->n_checks; i++)
        free(a->checks[i].name);
    free(a);
}
