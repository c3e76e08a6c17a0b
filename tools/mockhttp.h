/* mockhttp.h - the HTTP server core of the mock providers: libmicrohttpd with
 * one epoll thread (or a pool), request bodies collected, and replies that may
 * be delayed without holding a thread (the connection is suspended and a
 * timer thread resumes it when due), so thousands of slow requests cost no
 * threads. */
#ifndef GT_MOCKHTTP_H
#define GT_MOCKHTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mh_server mh_server_t;
typedef struct mh_req mh_req_t;

/* Called once per request when its body is complete (body NUL-terminated,
 * NULL when empty), on a server thread. It must set a reply (mh_reply*); it
 * may delay it. Requests of one server may be handled concurrently when
 * threads > 1. */
typedef void (*mh_handler_fn)(void *ctx, mh_req_t *r, const char *method, const char *url,
                              const char *body, size_t len);
/* Called just before a reply is queued (after any delay); may be NULL. */
typedef void (*mh_replied_fn)(void *ctx, mh_req_t *r);

/* Sets the reply: status and a JSON body (stolen; NULL for no body). */
void mh_reply_json(mh_req_t *r, unsigned status, json_t *body);
/* {"error": {"message", "type", "code"}} as OpenAI-compatible servers answer. */
void mh_reply_error(mh_req_t *r, unsigned status, const char *type, const char *message);
void mh_set_retry_after(mh_req_t *r, int seconds);
void mh_set_delay(mh_req_t *r, int64_t ms);
/* A request header, or NULL. Valid while the handler runs. */
const char *mh_header(mh_req_t *r, const char *name);
/* One opaque word per request for the handler (e.g. "counted"). */
void mh_set_tag(mh_req_t *r, int tag);
int mh_tag(const mh_req_t *r);

/* Listens on bind:port (0: any free port) and writes the bound port. Returns
 * NULL with errno-style reason printed to stderr. */
mh_server_t *mh_start(const char *bind, int port, unsigned threads, mh_handler_fn handler,
                      mh_replied_fn replied, void *ctx, unsigned *bound_port);
/* Answers every parked request, stops and frees. */
void mh_stop(mh_server_t *s);

/* Request bodies larger than this get 413. */
#define MH_MAX_BODY (4 * 1024 * 1024)

#endif
