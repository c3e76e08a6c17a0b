/* api.h - gantry-api: the OpenAI Batch and Anthropic Message Batches APIs
 * over HTTP (http.c, on libmicrohttpd threads with blocking PostgreSQL), and
 * the loop side (pump.c) that publishes lines as requests, records results
 * and ends batches. PostgreSQL (migration 030) is the only state they share. */
#ifndef GT_API_H
#define GT_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The api section of gantry.json (docs/configuration.md, docs/batch-api.md). */
typedef struct gt_api_config {
    char *host;                /* api.host, default 127.0.0.1 */
    int port;                  /* api.port, default 8090; 0: ephemeral */
    int64_t max_file_lines;    /* api.max_file_lines, default 50000 */
    int64_t max_file_bytes;    /* api.max_file_bytes, default 200 MB */
    int64_t min_window_s;      /* api.min_completion_window_s, default 86400 (24 h) */
    int64_t max_window_s;      /* api.max_completion_window_s, default 86400 */
    char *group;               /* api.group: consumer group of gantry.results, default gantry-api */
    const char *control_topic; /* topics.control (shared), borrowed from the config */
    int pg_connections;        /* api.pg_connections, HTTP threads' pool, default 8 */
    int publish_batch;         /* api.publish_batch: lines per publish round, default 1000 */
    json_t *models; /* api.models: vendor model name -> Gantry model ("*": any other); borrowed */
} gt_api_config_t;

/* Adds the api section to every later configuration load of this process
 * (lib/config_section.h): then a loaded gt_config_t's api points at it (owned
 * by the config, freed with it), and its problems fail the load. Call before
 * the first load. Returns 0, or the negative code of gt_config_add_section. */
int gt_api_config_register(void);

/* The Gantry model a vendor model name maps to (api.models, else the name
 * itself). Never NULL for a non-NULL name. */
const char *gt_api_model(const gt_api_config_t *ac, const char *vendor_model);

typedef struct gt_api_http gt_api_http_t;
/* Starts the API server (thread per connection). Prints nothing. Returns
 * NULL with err set when it cannot listen or connect. conninfo is copied. */
gt_api_http_t *gt_api_http_start(const gt_config_t *cfg, const gt_api_config_t *ac, char *err,
                                 size_t errlen);
int gt_api_http_port(const gt_api_http_t *h);
void gt_api_http_stop(gt_api_http_t *h);

/* Maps one OpenAI batch line body to a Gantry request (kind, model, input,
 * parameters) for endpoint. Returns the request without request_id and
 * tenant_id, or NULL with the reason in why. */
json_t *gt_api_openai_body(const gt_api_config_t *ac, const char *endpoint, const json_t *body,
                           char *why, size_t len);
/* The same for an Anthropic Messages params object. */
json_t *gt_api_anthropic_params(const gt_api_config_t *ac, const json_t *params, char *why,
                                size_t len);

/* SHA-256 hex of an API key secret (what api_keys stores). */
void gt_api_key_hash(const char *secret, char hex[65]);

#endif
