/* admin.h - the process's operator HTTP endpoint, on its own thread:
 * GET /health (alive), GET /ready (dependencies reachable: 200 or 503 with a
 * JSON body of every check) and GET /metrics (Prometheus text format). */
#ifndef GT_ADMIN_H
#define GT_ADMIN_H

#include <stddef.h>

typedef struct gt_admin gt_admin_t;

/* A readiness check: runs on the admin thread for every GET /ready, so it
 * must be thread-safe and quick (it may block up to a second). Returns 1 when
 * ready; may write a short detail (JSON-escaped by the caller) into detail. */
typedef int (*gt_admin_check_fn)(void *arg, char *detail, size_t len);

/* Listens on host:port (port 0: an ephemeral port). Returns NULL and sets err
 * when it cannot. */
gt_admin_t *gt_admin_start(const char *host, int port, char *err, size_t errlen);

/* Parses a --admin-port value (0..65535) into *port. Returns 0 or -1. */
int gt_admin_parse_port(const char *s, int *port);

/* The port actually bound. */
int gt_admin_port(const gt_admin_t *a);

/* Adds a readiness check (call before traffic; name is copied). A NULL fn
 * makes a pushed check: not ready until the loop thread reports otherwise
 * with gt_admin_set_ready, so /ready never touches loop objects. */
int gt_admin_add_check(gt_admin_t *a, const char *name, gt_admin_check_fn fn, void *arg);

/* Sets a pushed check's state (any thread; a NULL a is ignored). */
void gt_admin_set_ready(gt_admin_t *a, const char *name, int ok);

struct gt_config;
struct gt_producer;
/* What the daemons do: when cfg->admin_port (or port_override, when >= 0) is
 * set, starts the server with a "kafka" check (a metadata round trip through
 * the producer; librdkafka handles are thread-safe) and, when uses_pg, a
 * pushed "postgres" check the loop keeps current with gt_admin_set_ready
 * (gt_pg_connected), and prints
 * "admin=HOST:PORT" on stdout. *out stays NULL when the server is off.
 * Returns 0, or -1 with err set. */
int gt_admin_open(const struct gt_config *cfg, int port_override, struct gt_producer *producer,
                  int uses_pg, gt_admin_t **out, char *err, size_t errlen);

/* Stops the thread and frees; a NULL a is ignored. */
void gt_admin_stop(gt_admin_t *a);

#endif
