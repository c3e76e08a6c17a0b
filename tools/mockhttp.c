/* mockhttp.c - HTTP server core of the mock providers (see mockhttp.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "clock.h"
#include "mockhttp.h"

struct mh_req {
    mh_server_t *s;
    struct MHD_Connection *conn;
    char *body;
    size_t len, cap;
    int too_big;
    int handled;
    int suspended;
    unsigned status;
    char *reply;
    int retry_after;
    int64_t delay_ms, due_ms;
    int tag;
    int begun;
};

struct mh_server {
    struct MHD_Daemon *d;
    mh_config_t c;
    pthread_t timer;
    int timer_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    mh_req_t **heap;
    size_t hlen, hcap;
    int stopping;
    /* How late delayed replies were queued (resumed past their due time), ms. */
    uint64_t late_n;
    int64_t late_sum, late_max;
};

void mh_reply_text(mh_req_t *r, unsigned status, char *json_text)
{
    r->status = status;
    free(r->reply);
    r->reply = json_text;
}

void mh_reply_json(mh_req_t *r, unsigned status, json_t *body)
{
    mh_reply_text(r, status, body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL);
    json_decref(body);
}

void mh_reply_error(mh_req_t *r, unsigned status, const char *type, const char *message)
{
    mh_reply_json(
        r, status,
        json_pack("{s:{s:s, s:s, s:n}}", "error", "message", message, "type", type, "code"));
}

void mh_set_retry_after(mh_req_t *r, int seconds)
{
    r->retry_after = seconds;
}

void mh_set_delay(mh_req_t *r, int64_t ms)
{
    r->delay_ms = ms;
}

const char *mh_header(mh_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

void mh_set_tag(mh_req_t *r, int tag)
{
    r->tag = tag;
}

int mh_tag(const mh_req_t *r)
{
    return r->tag;
}

typedef struct arg_walk {
    mh_arg_fn fn;
    void *ctx;
} arg_walk_t;

static enum MHD_Result on_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    arg_walk_t *w = cls;
    (void)kind;
    w->fn(w->ctx, key, value);
    return MHD_YES;
}

void mh_query_args(mh_req_t *r, mh_arg_fn fn, void *ctx)
{
    arg_walk_t w = {fn, ctx};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, on_arg, &w);
}

int mh_too_big(const mh_req_t *r)
{
    return r->too_big;
}

/* ---- timer heap (by due_ms), under s->mu ------------------------------------ */

static void heap_swap(mh_server_t *s, size_t a, size_t b)
{
    mh_req_t *t = s->heap[a];
    s->heap[a] = s->heap[b];
    s->heap[b] = t;
}

static int heap_push(mh_server_t *s, mh_req_t *r)
{
    if (s->hlen == s->hcap) {
        size_t cap = s->hcap ? s->hcap * 2 : 1024;
        mh_req_t **p = realloc(s->heap, cap * sizeof(*p));
        if (!p)
            return -1;
        s->heap = p;
        s->hcap = cap;
    }
    size_t i = s->hlen++;
    s->heap[i] = r;
    while (i > 0 && s->heap[(i - 1) / 2]->due_ms > s->heap[i]->due_ms) {
        heap_swap(s, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    return 0;
}

static mh_req_t *heap_pop(mh_server_t *s)
{
    mh_req_t *top = s->heap[0];
    size_t i = 0;
    s->heap[0] = s->heap[--s->hlen];
    for (;;) {
        size_t l = 2 * i + 1, rr = l + 1, m = i;
        if (l < s->hlen && s->heap[l]->due_ms < s->heap[m]->due_ms)
            m = l;
        if (rr < s->hlen && s->heap[rr]->due_ms < s->heap[m]->due_ms)
            m = rr;
        if (m == i)
            break;
        heap_swap(s, i, m);
        i = m;
    }
    return top;
}

static void *timer_main(void *arg)
{
    mh_server_t *s = arg;
    enum { BATCH = 256 };
    mh_req_t *due[BATCH];
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int64_t now = gt_clock_mono_ms();
        size_t n = 0;
        while (n < BATCH && s->hlen > 0 && (s->stopping || s->heap[0]->due_ms <= now))
            due[n++] = heap_pop(s);
        if (n > 0) {
            pthread_mutex_unlock(&s->mu); /* MHD takes its own locks */
            for (size_t i = 0; i < n; i++)
                MHD_resume_connection(due[i]->conn);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->stopping)
            break;
        if (s->hlen == 0) {
            pthread_cond_wait(&s->cond, &s->mu);
        } else {
            int64_t wait = s->heap[0]->due_ms - now;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->cond, &s->mu, &ts);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- MHD glue --------------------------------------------------------------- */

static enum MHD_Result send_reply(mh_req_t *r)
{
    mh_server_t *s = r->s;
    if (s->c.replied)
        s->c.replied(s->c.ctx, r);
    size_t len = r->reply ? strlen(r->reply) : 0;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, r->reply, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        return MHD_NO;
    r->reply = NULL;
    if (len)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (r->retry_after >= 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", r->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, r->status ? r->status : 500, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    mh_server_t *s = cls;
    mh_req_t *r = *con_cls;
    (void)version;
    if (!r) {
        if (!(r = calloc(1, sizeof(*r))))
            return MHD_NO;
        r->s = s;
        r->conn = conn;
        r->retry_after = -1;
        *con_cls = r;
        if (s->c.begun) {
            r->begun = 1;
            s->c.begun(s->c.ctx, r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_big || r->len + n > s->c.max_body) {
            r->too_big = 1;
            return MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 1024;
            while (cap < r->len + n + 1)
                cap *= 2;
            char *p = realloc(r->body, cap);
            if (!p)
                return MHD_NO;
            r->body = p;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    if (r->suspended) {
        int64_t late = gt_clock_mono_ms() - r->due_ms;
        r->suspended = 0;
        pthread_mutex_lock(&s->mu);
        s->late_n++;
        s->late_sum += late > 0 ? late : 0;
        if (late > s->late_max)
            s->late_max = late;
        pthread_mutex_unlock(&s->mu);
        return send_reply(r);
    }
    if (!r->handled) {
        r->handled = 1;
        if (r->too_big && !s->c.handler_sees_too_big)
            mh_reply_error(r, 413, "invalid_request_error", "request body too large");
        else if (r->too_big)
            s->c.handler(s->c.ctx, r, method, url, NULL, 0);
        else
            s->c.handler(s->c.ctx, r, method, url, r->body, r->len);
    }
    if (r->delay_ms > 0) {
        int parked = 0;
        r->due_ms = gt_clock_mono_ms() + r->delay_ms;
        pthread_mutex_lock(&s->mu);
        if (!s->stopping) {
            MHD_suspend_connection(conn);
            if (heap_push(s, r) == 0) {
                r->suspended = 1;
                parked = 1;
                pthread_cond_signal(&s->cond);
            } else {
                MHD_resume_connection(conn);
            }
        }
        pthread_mutex_unlock(&s->mu);
        if (parked)
            return MHD_YES;
    }
    return send_reply(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    mh_server_t *s = cls;
    mh_req_t *r = *con_cls;
    (void)conn, (void)toe;
    if (!r)
        return;
    if (r->begun && s->c.done)
        s->c.done(s->c.ctx, r);
    free(r->body);
    free(r->reply);
    free(r);
    *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    mh_server_t *s = cls;
    (void)conn, (void)socket_context;
    if (s->c.connection)
        s->c.connection(s->c.ctx, toe == MHD_CONNECTION_NOTIFY_STARTED);
}

static unsigned raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1000;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1000000)
        return 1000000;
    return rl.rlim_cur > 64 ? (unsigned)rl.rlim_cur - 32 : 32;
}

mh_server_t *mh_start(const mh_config_t *c, unsigned *bound_port)
{
    mh_server_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->c = *c;
    if (!s->c.max_body)
        s->c.max_body = MH_MAX_BODY;
    const char *bind = c->bind;
    int port = c->port;
    unsigned threads = c->threads;
    pthread_condattr_t ca;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->timer, NULL, timer_main, s) != 0) {
        mh_stop(s);
        return NULL;
    }
    s->timer_started = 1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, bind, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad bind address %s\n", bind);
        mh_stop(s);
        return NULL;
    }
    unsigned limit = raise_fd_limit();
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &sa},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)limit, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, 120, NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, s},
        {threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                                MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
                            (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
    if (!s->d) {
        fprintf(stderr, "cannot listen on %s:%d: %s\n", bind, port, strerror(errno));
        mh_stop(s);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info ? info->port : (unsigned)port;
    return s;
}

json_t *mh_server_stats(mh_server_t *s)
{
    if (!s)
        return json_object();
    pthread_mutex_lock(&s->mu);
    json_t *j =
        json_pack("{s:I, s:f, s:I}", "delayed_replies", (json_int_t)s->late_n, "reply_late_avg_ms",
                  s->late_n ? (double)s->late_sum / (double)s->late_n : 0.0, "reply_late_max_ms",
                  (json_int_t)s->late_max);
    pthread_mutex_unlock(&s->mu);
    return j;
}

void mh_stop(mh_server_t *s)
{
    if (!s)
        return;
    if (s->timer_started) {
        /* The timer thread resumes every parked connection on its way out. */
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->timer, NULL);
    }
    if (s->d)
        MHD_stop_daemon(s->d);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s->heap);
    free(s);
}
