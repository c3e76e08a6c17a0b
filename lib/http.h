/* http.h - asynchronous HTTP client: libcurl multi driven by a libuv loop.
 * Thousands of requests in flight in one thread; connections are reused. */
#ifndef GT_HTTP_H
#define GT_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct gt_http gt_http_t;

typedef struct gt_http_response {
    long status;       /* HTTP status, 0 when no response (transport error/timeout) */
    int curl_code;     /* CURLcode, 0 on transport success */
    int timed_out;     /* 1 when the request hit its timeout */
    const char *error; /* transport error text, or NULL */
    const char *body;  /* NUL-terminated response body (may be "") */
    size_t body_len;
    int64_t retry_after_ms; /* parsed Retry-After, or -1 */
    int64_t elapsed_ms;
    size_t request_bytes; /* bytes of the request body sent */
} gt_http_response_t;

/* Called once per request on the loop thread; resp is valid only during the call. */
typedef void (*gt_http_cb)(const gt_http_response_t *resp, void *arg);

gt_http_t *gt_http_new(uv_loop_t *loop);

/* Starts a request. headers is NULL-terminated ("Name: value"), may be NULL;
 * body (may be NULL) is copied. timeout_ms bounds the whole request (<= 0:
 * none). TLS peer and host verification is always on. Returns 0, or -1 if the
 * request could not be started or h is being freed (cb is then not called).
 * cb may start new requests and may call gt_http_free. */
int gt_http_request(gt_http_t *h, const char *method, const char *url, const char *const *headers,
                    const char *body, size_t body_len, int64_t timeout_ms, gt_http_cb cb,
                    void *arg);

/* Requests in flight. */
int gt_http_in_flight(const gt_http_t *h);

/* Aborts requests in flight (their callbacks run with curl_code
 * CURLE_ABORTED_BY_CALLBACK), closes the loop handles and frees h once they
 * are closed: the loop must run afterwards. */
void gt_http_free(gt_http_t *h);

#endif
