/* http.c - asynchronous HTTP client: libcurl multi driven by a libuv loop. */
#include "http.h"

#include <assert.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "retry.h"

/* A response larger than this is refused (CURLE_WRITE_ERROR): no provider
 * answer legitimately gets near it, and it bounds memory per request. */
#define HTTP_MAX_BODY (64u * 1024 * 1024)
/* Easy handles kept for reuse (curl_easy_reset): creating one per request
 * (about 6 KiB of state and its 16 KiB buffer, then freeing them) cost more
 * CPU than the request's own work. Bounded so that a burst's handles go. */
#define HTTP_IDLE_EASY 512
/* Connections curl keeps open between requests. Its default (4 x the
 * transfers in the multi at that moment) closes most of them whenever the
 * number in flight drops, and the next rise pays a new TCP (or TLS)
 * handshake each: keep enough for every request of a busy worker. */
#define HTTP_MAX_CONNECTS 10000L

typedef struct http_req http_req_t;

/* One uv_poll per socket curl asks us to watch; remembered with
 * curl_multi_assign and freed in its close callback. */
typedef struct http_sock {
    uv_poll_t poll;
    gt_http_t *h;
    curl_socket_t fd;
    int closed;                    /* uv_close called */
    struct http_sock *prev, *next; /* h->socks, so free can close leftovers */
} http_sock_t;

struct http_req {
    CURL *easy;
    gt_http_t *h;
    struct curl_slist *headers;
    char *body; /* owned copy of the request body */
    size_t body_len;
    char *resp;
    size_t resp_len, resp_cap;
    int64_t retry_after_ms;
    int64_t started_ms;
    gt_http_cb cb;
    void *arg;
    char errbuf[CURL_ERROR_SIZE];
    http_req_t *prev, *next; /* h->reqs */
};

struct gt_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    http_req_t *reqs;
    http_sock_t *socks;
    int in_flight;
    CURL *idle[HTTP_IDLE_EASY]; /* reset easy handles, for the next requests */
    int n_idle;
    int closing;      /* gt_http_free called */
    int open_handles; /* uv handles not yet closed: h is freed when it drops to 0 */
};

static void http_maybe_free(gt_http_t *h)
{
    if (h->closing && h->open_handles == 0)
        free(h);
}

static void http_req_unlink(http_req_t *r)
{
    gt_http_t *h = r->h;

    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    h->in_flight--;
}

static void http_req_free(http_req_t *r)
{
    gt_http_t *h = r->h;

    if (r->easy && !h->closing && h->n_idle < HTTP_IDLE_EASY) {
        /* Back to defaults (options, headers, buffers kept): it is out of the
         * multi, and its connection went to the multi's cache. */
        curl_easy_reset(r->easy);
        h->idle[h->n_idle++] = r->easy;
    } else if (r->easy) {
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->headers);
    free(r->body);
    free(r->resp);
    free(r);
}

/* Runs the callback once and frees r; r must already be out of the multi. */
static void http_req_finish(http_req_t *r, CURLcode code)
{
    gt_http_response_t resp;
    long status = 0;

    memset(&resp, 0, sizeof(resp));
    /* A half-received response is no response: status stays 0. */
    if (code == CURLE_OK)
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    resp.status = status;
    resp.curl_code = (int)code;
    resp.timed_out = code == CURLE_OPERATION_TIMEDOUT;
    if (code != CURLE_OK)
        resp.error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
    resp.body = r->resp ? r->resp : "";
    resp.body_len = r->resp_len;
    resp.retry_after_ms = r->retry_after_ms;
    resp.elapsed_ms = gt_clock_mono_ms() - r->started_ms;
    resp.request_bytes = r->body_len;
    r->cb(&resp, r->arg);
    http_req_free(r);
}

/* Completed transfers: curl only reports them through curl_multi_info_read,
 * so this runs after every curl_multi_socket_action. */
static void http_check_done(gt_http_t *h)
{
    CURLMsg *msg;
    int pending;

    while (!h->closing && (msg = curl_multi_info_read(h->multi, &pending))) {
        http_req_t *r = NULL;
        CURL *easy;
        CURLcode code;

        if (msg->msg != CURLMSG_DONE)
            continue;
        easy = msg->easy_handle;
        code = msg->data.result; /* msg is invalid once the handle is removed */
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
        curl_multi_remove_handle(h->multi, easy);
        http_req_unlink(r);
        /* The callback may start requests or even free h: the loop test
         * re-checks h->closing, and h itself lives until the loop runs. */
        http_req_finish(r, code);
    }
}

static void http_sock_close_cb(uv_handle_t *handle)
{
    http_sock_t *s = handle->data;
    gt_http_t *h = s->h;

    free(s);
    h->open_handles--;
    http_maybe_free(h);
}

static void http_sock_close(http_sock_t *s)
{
    gt_http_t *h = s->h;

    if (s->closed)
        return;
    s->closed = 1;
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, http_sock_close_cb);
}

static void http_poll_cb(uv_poll_t *poll, int status, int events)
{
    http_sock_t *s = poll->data;
    gt_http_t *h = s->h;
    int flags = 0;
    int running;

    if (h->closing || s->closed)
        return;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(h->multi, s->fd, flags, &running);
    http_check_done(h);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching one socket. */
static int http_socket_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    gt_http_t *h = userp;
    http_sock_t *s = socketp;
    int events = 0;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            http_sock_close(s);
            if (!h->closing) /* inside curl_multi_cleanup: curl forgets fd itself */
                curl_multi_assign(h->multi, fd, NULL);
        }
        return 0;
    }
    if (h->closing)
        return 0;
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->h = h;
        s->fd = fd;
        s->poll.data = s;
        s->next = h->socks;
        if (h->socks)
            h->socks->prev = s;
        h->socks = s;
        h->open_handles++;
        curl_multi_assign(h->multi, fd, s);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    return uv_poll_start(&s->poll, events, http_poll_cb) == 0 ? 0 : -1;
}

static void http_timer_cb(uv_timer_t *timer)
{
    gt_http_t *h = timer->data;
    int running;

    if (h->closing)
        return;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    http_check_done(h);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms the timer; calling curl from here
 * would re-enter the multi handle. */
static int http_timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
    gt_http_t *h = userp;

    if (h->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, http_timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t http_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    http_req_t *r = userp;
    size_t n = size * nmemb;

    if (n > HTTP_MAX_BODY - r->resp_len)
        return 0; /* CURLE_WRITE_ERROR */
    if (r->resp_len + n + 1 > r->resp_cap) {
        size_t cap = r->resp_cap ? r->resp_cap : 1024;
        char *p;

        while (cap < r->resp_len + n + 1)
            cap *= 2;
        p = realloc(r->resp, cap);
        if (!p)
            return 0;
        r->resp = p;
        r->resp_cap = cap;
    }
    memcpy(r->resp + r->resp_len, data, n);
    r->resp_len += n;
    r->resp[r->resp_len] = '\0';
    return n;
}

static size_t http_header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    static const char name[] = "retry-after:";
    http_req_t *r = userp;
    size_t n = size * nmemb;
    char value[128];
    size_t vlen;

    if (n > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        vlen = n - (sizeof(name) - 1);
        if (vlen >= sizeof(value))
            vlen = sizeof(value) - 1;
        memcpy(value, data + sizeof(name) - 1, vlen);
        value[vlen] = '\0';
        r->retry_after_ms = gt_retry_after_parse(value, gt_clock_wall_ms());
    }
    return n;
}

static void http_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

gt_http_t *gt_http_new(uv_loop_t *loop)
{
    static uv_once_t once = UV_ONCE_INIT;
    gt_http_t *h;

    /* curl_global_init is not thread safe in every libcurl build: once per
     * process, never cleaned up (other threads may hold clients). */
    uv_once(&once, http_global_init);
    h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->loop = loop;
    h->multi = curl_multi_init();
    if (!h->multi)
        goto fail;
    if (uv_timer_init(loop, &h->timer) != 0)
        goto fail;
    h->timer.data = h;
    h->open_handles = 1;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_socket_fn);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_timer_fn);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, HTTP_MAX_CONNECTS);
    return h;

fail:
    if (h->multi)
        curl_multi_cleanup(h->multi);
    free(h);
    return NULL;
}

int gt_http_request(gt_http_t *h, const char *method, const char *url, const char *const *headers,
                    const char *body, size_t body_len, int64_t timeout_ms, gt_http_cb cb, void *arg)
{
    http_req_t *r = NULL;
    CURL *e;

    assert(h && method && url && cb);
    if (h->closing)
        return -1;
    r = calloc(1, sizeof(*r));
    if (!r)
        goto fail;
    r->h = h;
    r->cb = cb;
    r->arg = arg;
    r->retry_after_ms = -1;
    r->started_ms = gt_clock_mono_ms();
    r->easy = e = h->n_idle > 0 ? h->idle[--h->n_idle] : curl_easy_init();
    if (!e)
        goto fail;

    /* A 100-continue round trip costs a full RTT per request (or a 1 s stall
     * with servers that ignore it). */
    if (!(r->headers = curl_slist_append(NULL, "Expect:")))
        goto fail;
    for (const char *const *hp = headers; hp && *hp; hp++) {
        struct curl_slist *l = curl_slist_append(r->headers, *hp);

        if (!l)
            goto fail;
        r->headers = l;
    }

    if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK)
        goto fail;
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
        strcmp(method, "PATCH") == 0) {
        /* POSTFIELDS does not copy: the request owns the copy until freed. */
        r->body = malloc(body_len + 1);
        if (!r->body)
            goto fail;
        if (body && body_len)
            memcpy(r->body, body, body_len);
        r->body[body_len] = '\0';
        r->body_len = body_len;
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }

    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    /* Signals cannot reach a thread that runs an event loop; the threaded
     * resolver needs no SIGALRM. */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);

    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    h->in_flight++;
    /* add_handle arms the timer through http_timer_fn; the transfer starts
     * from the loop, never from inside this call. */
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        http_req_unlink(r);
        goto fail;
    }
    return 0;

fail:
    if (r)
        http_req_free(r);
    return -1;
}

int gt_http_in_flight(const gt_http_t *h)
{
    return h->in_flight;
}

static void http_timer_close_cb(uv_handle_t *handle)
{
    gt_http_t *h = handle->data;

    h->open_handles--;
    http_maybe_free(h);
}

void gt_http_free(gt_http_t *h)
{
    if (!h || h->closing)
        return;
    h->closing = 1;

    /* Abort what is in flight, newest first; callbacks may not start new
     * requests (gt_http_request refuses once closing). */
    while (h->reqs) {
        http_req_t *r = h->reqs;

        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): r was unlinked from h->reqs before freed */
        curl_multi_remove_handle(h->multi, r->easy);
        http_req_unlink(r);
        snprintf(r->errbuf, sizeof(r->errbuf), "request aborted: client closed");
        http_req_finish(r, CURLE_ABORTED_BY_CALLBACK);
    }
    /* Sockets curl still watches: close our polls before curl closes the
     * descriptors; curl's CURL_POLL_REMOVE calls below then find them closed. */
    while (h->socks)
        http_sock_close(h->socks);
    while (h->n_idle > 0)
        curl_easy_cleanup(h->idle[--h->n_idle]);
    curl_multi_cleanup(h->multi);
    h->multi = NULL;
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, http_timer_close_cb);
}
