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
/* Called for one request: just before its reply is queued (after any delay),
 * or, as `begun`/`done` of mh_config_t, when its headers have arrived and
 * when it is over (answered or its connection gone). */
typedef void (*mh_replied_fn)(void *ctx, mh_req_t *r);
/* Called when a TCP connection opens (opened 1) or closes (0). */
typedef void (*mh_conn_fn)(void *ctx, int opened);
/* Called for each query-string argument of a request. */
typedef void (*mh_arg_fn)(void *ctx, const char *key, const char *value);

/* What a server is: where it listens and whom it calls. Only bind and handler
 * are required; every callback may be NULL. */
typedef struct mh_config {
    const char *bind; /* IPv4 address */
    int port;         /* 0: any free port */
    unsigned threads; /* > 1: a pool of that many polling threads */
    mh_handler_fn handler;
    mh_replied_fn replied; /* before each reply is queued */
    mh_replied_fn begun;   /* a request's headers arrived */
    mh_replied_fn done;    /* a begun request is over */
    mh_conn_fn connection;
    void *ctx;       /* first argument of every callback */
    size_t max_body; /* larger bodies are too big; 0: MH_MAX_BODY */
    /* 0: a too-big body gets 413 without the handler; 1: the handler is called
     * with no body and mh_too_big() true, and answers as it likes. */
    int handler_sees_too_big;
} mh_config_t;

/* Sets the reply: status and a JSON body (stolen; NULL for no body). */
void mh_reply_json(mh_req_t *r, unsigned status, json_t *body);
/* Sets the reply: status and JSON text already dumped (malloc'd, stolen; NULL
 * for no body). */
void mh_reply_text(mh_req_t *r, unsigned status, char *json_text);
/* {"error": {"message", "type", "code"}} as OpenAI-compatible servers answer. */
void mh_reply_error(mh_req_t *r, unsigned status, const char *type, const char *message);
void mh_set_retry_after(mh_req_t *r, int seconds);
void mh_set_delay(mh_req_t *r, int64_t ms);
/* A request header, or NULL. Valid while the handler runs. */
const char *mh_header(mh_req_t *r, const char *name);
/* One opaque word per request for the handler (e.g. "counted"). */
void mh_set_tag(mh_req_t *r, int tag);
int mh_tag(const mh_req_t *r);
/* Calls fn for each query-string argument; valid while the handler runs. */
void mh_query_args(mh_req_t *r, mh_arg_fn fn, void *ctx);
/* Was the body over the server's max_body (see handler_sees_too_big)? */
int mh_too_big(const mh_req_t *r);

/* Listens as c says and writes the bound port. Returns NULL with the reason
 * printed to stderr. c is copied. */
mh_server_t *mh_start(const mh_config_t *c, unsigned *bound_port);
/* The server's own timing: {"delayed_replies", "reply_late_avg_ms",
 * "reply_late_max_ms"}, how long past its due time each delayed reply was
 * queued (the mock's own lateness, apart from the client's). s NULL: {}.
 * Returns NULL on out of memory. */
json_t *mh_server_stats(mh_server_t *s);
/* Answers every parked request, stops and frees. */
void mh_stop(mh_server_t *s);

/* Request bodies larger than this get 413. */
#define MH_MAX_BODY (4 * 1024 * 1024)

#endif
