/* recorder.h - a recording HTTP server for tests (libmicrohttpd on 127.0.0.1,
 * its own thread): keeps every request's method, raw path, headers and body,
 * and answers with a canned reply or a test-supplied handler. */
#ifndef GT_RECORDER_H
#define GT_RECORDER_H

#include <stddef.h>

typedef struct th_recorded {
    char *method;
    char *path;     /* as sent, percent-escapes kept, without the query */
    char **headers; /* "Name: value" in arrival order, NULL-terminated */
    size_t n_headers;
    char *body; /* NUL-terminated, "" when empty */
    size_t body_len;
} th_recorded_t;

/* Decides a reply on the server thread: set *status and *body (malloc'd, the
 * recorder frees it). Return 0, or -1 to use the canned reply. */
typedef int (*th_recorder_fn)(const th_recorded_t *req, int *status, char **body, void *arg);

typedef struct th_recorder th_recorder_t;

/* Starts on a free port; NULL on failure. Canned reply: 200 "{}". */
th_recorder_t *th_recorder_start(void);
int th_recorder_port(const th_recorder_t *r);
/* "http://127.0.0.1:PORT" (static per recorder). */
const char *th_recorder_url(const th_recorder_t *r);
/* Sets the canned reply (copied) and its Content-Type (application/json). */
void th_recorder_reply(th_recorder_t *r, int status, const char *body);
void th_recorder_handler(th_recorder_t *r, th_recorder_fn fn, void *arg);
/* Requests recorded so far. */
size_t th_recorder_count(th_recorder_t *r);
/* The i-th request (0-based); stays valid until th_recorder_stop. NULL if none. */
const th_recorded_t *th_recorder_get(th_recorder_t *r, size_t i);
/* A header's value by case-insensitive name (first match), or NULL. */
const char *th_recorded_header(const th_recorded_t *q, const char *name);
/* Stops the server and frees everything it recorded. */
void th_recorder_stop(th_recorder_t *r);

#endif
