/* config.h - gantry.json: load, expand ${ENV} and *_file secrets, validate with key paths. */
#ifndef GT_CONFIG_H
#define GT_CONFIG_H

/* The session.timeout.ms lib/kafka_consumer.c gives every consumer unless
 * kafka.properties or kafka.consumer_properties set another. */
#define GT_KAFKA_SESSION_TIMEOUT_MS 10000

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "retry.h"

typedef struct gt_pool {
    char *name;
    char *endpoint; /* base URL of the HostedAI API, e.g. http://127.0.0.1:8081 */
    char *api_key;  /* secret: from api_key (with ${ENV}) or api_key_file; never log */
    int overcommit;
    int breaker_failures;        /* consecutive failures that open its breaker, default 5 */
    int64_t breaker_recovery_ms; /* open -> half-open, default 60000 */
} gt_pool_t;

/* A hosted provider endpoint: providers.<name> in gantry.json. Limits hold
 * across all worker processes together. */
typedef struct gt_provider_limits {
    int max_in_flight; /* 0: unlimited */
    int64_t rpm, tpm;  /* requests / tokens per minute, 0: unlimited */
} gt_provider_limits_t;

typedef struct gt_provider {
    char *name;
    char *runtime;            /* openai | hf_endpoint | vertex_gemini | bedrock_anthropic */
    char *endpoint;           /* base URL without trailing slash */
    char *api_key;            /* secret (openai, hf_endpoint): bearer token; never log */
    char *credentials;        /* secret (vertex_gemini): service-account JSON text */
    char *project, *location; /* vertex_gemini */
    char *region;             /* bedrock_anthropic */
    char *access_key_id, *secret_access_key, *session_token; /* secrets (bedrock_anthropic) */
    gt_provider_limits_t limits;
    struct gt_tenant_limits { /* providers.<name>.tenants.<id> */
        char *tenant;
        gt_provider_limits_t limits;
    } * tenant_limits;
    size_t n_tenant_limits;
    int breaker_failures;         /* consecutive failures that open the breaker, default 5 */
    int64_t breaker_recovery_ms;  /* open -> half-open, default 60000 */
    gt_retry_policy_t retry;      /* providers.<name>.retry, default worker.retry */
    int64_t inference_timeout_ms; /* providers.<name>.timeouts.inference_ms, default worker's */
    int64_t slot_timeout_ms;      /* longest wait for a slot, default allocate timeout */
} gt_provider_t;

typedef struct gt_model {
    char *name;
    char *runtime;        /* "hostedai" or a provider runtime (see gt_provider_t) */
    char *pool;           /* pool name for hostedai */
    char *provider;       /* provider name for the other runtimes */
    char *provider_model; /* the provider's own model id (default: name) */
    char **fallbacks;     /* model names tried in order when this one cannot serve */
    size_t n_fallbacks;
    char *lane;    /* lane whose topic carries this model's tasks */
    double tflops; /* requirements */
    int64_t vram_mb;
    int64_t max_input_chars; /* 0: no limit */
    /* models.<name>.deployments (docs/routing.md): a logical model served by
     * other declared models (each a HostedAI pool, or a provider endpoint with
     * its provider model name); the dispatcher picks one per task. */
    struct gt_deployment {
        char *model;          /* a declared model without deployments of its own */
        int weight;           /* weighted: share, default 1 */
        int max_in_flight;    /* capacity seen by least_busy and cost; 0: unlimited */
        int64_t price_micros; /* cost: price of one request, default 0 */
    } * deployments;
    size_t n_deployments;
    char *strategy;       /* weighted (default) | least_busy | latency | cost */
    int64_t cache_ttl_ms; /* models.<name>.cache.ttl_ms: responses may be cached this
                             long (dispatcher/cache.h); 0: the model is never cached */
} gt_model_t;

/* One auto-routing rule: first match wins. Unset conditions match anything. */
typedef struct gt_route_rule {
    char *hint;              /* routing.hint equals this (e.g. "simple"), or NULL */
    char *kind;              /* request kind equals this, or NULL */
    int64_t max_input_chars; /* input size <= this, or 0 */
    int64_t min_input_chars; /* input size >= this, or 0 */
    char *model;
} gt_route_rule_t;

/* A tenant's settings: tenants.<id> in gantry.json. Sections belong to the
 * parts that use them (budget: billing and admission; guardrails: PII and
 * moderation). */
typedef struct gt_tenant {
    char *id;
    /* budget (tenants.<id>.budget; docs/billing.md): has_budget 0 = none */
    struct gt_budget {
        int has_budget;
        char currency[4];          /* ISO 4217, e.g. "USD" */
        int64_t monthly_micros;    /* the month's budget; soft thresholds are % of it */
        int64_t hard_limit_micros; /* no new work past this (default monthly_micros) */
        int thresholds_pct[8];     /* soft thresholds, ascending (default 80, 100) */
        int n_thresholds;
        int64_t reserve_micros_per_task; /* admission estimate; -1: the period's mean cost */
    } budget;
    /* guardrails (tenants.<id>.guardrails; docs/guardrails.md): has_guardrails 0 = none */
    struct gt_guardrails {
        int has_guardrails;
        int pii_mode;                     /* gt_scrub_mode_t (dispatcher/scrub.h), default mask */
        unsigned pii_types;               /* GT_PII_* bits (dispatcher/pii.h), default all */
        double pii_min_confidence;        /* default 0.5 */
        int pii_restore;                  /* mask: restore tokens in outputs, default 1 */
        char *hash_key;                   /* secret (hash_key or hash_key_file): never log */
        int hash_chars;                   /* default 16 */
        int pii_always;                   /* scrub for every provider, raw ones too; default 0 */
        char **raw, **scrubbed, **denied; /* provider names ("hostedai", "hostedai/<pool>") */
        size_t n_raw, n_scrubbed, n_denied;
        int default_access; /* GT_ACCESS_* of unlisted providers, default raw */
        int prefer_reroute; /* scrubbed-only: reroute to a raw fallback before scrubbing */
        int moderate_input, moderate_output; /* default 1, 1 */
        double thresholds[5];                /* GT_MOD_* categories, default 0.5 each */
        int64_t max_request_bytes;           /* 0: no limit */
        int max_batch;                       /* 0: dispatcher.max_batch */
        struct gt_token_limit {
            char *model; /* a model name, or "*" */
            int64_t tokens;
        } * max_input_tokens;
        size_t n_max_input_tokens;
    } guard;
    /* response cache (tenants.<id>.cache; docs/routing.md): n_models 0 = off */
    struct gt_tenant_cache {
        char **models; /* models whose responses are cached ("*": every
                          model with a models.<name>.cache section) */
        size_t n_models;
        int64_t max_bytes; /* size cap of the tenant's entries, default 16 MiB */
        int by_default;    /* 1: requests without policy.cache are cached too */
    } cache;
} gt_tenant_t;

typedef enum { GT_ACCESS_RAW, GT_ACCESS_SCRUBBED, GT_ACCESS_NONE } gt_access_t;
/* Moderation categories, in gt_guardrails thresholds order. */
typedef enum {
    GT_MOD_HARASSMENT,
    GT_MOD_HATE,
    GT_MOD_VIOLENCE,
    GT_MOD_SEXUAL,
    GT_MOD_SELF_HARM,
    GT_MOD_NCATEGORIES
} gt_mod_category_t;

typedef struct gt_topics {
    char *requests, *task_prefix, *task_results, *results, *usage, *dlq, *events;
    char *control; /* cancel messages (gantry.control.v1), default gantry.control */
} gt_topics_t;

typedef struct gt_config {
    json_t *root; /* the expanded document; owned */
    char *path;

    char *bootstrap_servers;
    json_t *kafka_props; /* extra librdkafka properties (object of strings), borrowed from root */
    json_t *kafka_consumer_props;    /* for consumers only (kafka.consumer_properties), borrowed */
    json_t *kafka_producer_props;    /* for producers only (kafka.producer_properties), borrowed */
    int64_t kafka_message_max_bytes; /* largest message produced (librdkafka's message.max.bytes,
                                        Kafka's 1,000,000); intake refuses what would not fit */
    int64_t kafka_revoke_grace_ms;   /* a revoke waits this long for the messages in flight on
                                        the partitions it takes away, default 10000 */
    int kafka_static_membership; /* consumers join with group.instance.id = the process's --id */
    gt_topics_t topics;
    char *group_dispatcher, *group_worker, *group_ledger;

    char *pg_conninfo; /* may contain a password: never log */

    gt_pool_t *pools;
    size_t n_pools;
    gt_provider_t *providers;
    size_t n_providers;
    gt_model_t *models;
    size_t n_models;
    char **lanes;
    size_t n_lanes; /* all lanes declared */
    gt_route_rule_t *routes;
    size_t n_routes;
    char *default_model; /* "auto" when no rule matches; NULL: reject */
    gt_tenant_t *tenants;
    size_t n_tenants;

    /* worker */
    char **worker_lanes;
    size_t n_worker_lanes;    /* lanes this worker consumes (default all) */
    int worker_max_in_flight; /* default 256 */
    gt_retry_policy_t retry;
    int64_t allocate_timeout_ms;  /* default 30000 */
    int64_t inference_timeout_ms; /* default 300000 */
    int64_t release_timeout_ms;   /* default 10000 */
    int64_t capacity_wait_ms;     /* longest wait for pool capacity, default 600000 */
    int64_t heartbeat_ms;         /* worker heartbeat event period, default 1000 */
    int64_t worker_drain_ms;      /* SIGTERM: time tasks get to finish, default 30000 */

    /* dispatcher */
    int dispatcher_max_in_flight; /* default 1024 */
    int max_batch;                /* default 1000 */
    int64_t dispatcher_drain_ms;  /* SIGTERM: time work in flight gets, default 30000 */
    int64_t claim_timeout_ms;     /* a job's claim older than this is taken over,
                                     default 30000 */
    int allow_unknown_tenants;    /* 1: serve tenants not in tenants (when that
                                     section exists), default 0 */
    /* moderation: an OpenAI-compatible /v1/moderations (docs/guardrails.md) */
    char *moderation_endpoint;     /* base URL; NULL: keyword list only */
    char *moderation_api_key;      /* secret: never log */
    char *moderation_model;        /* default "omni-moderation-latest" */
    int64_t moderation_timeout_ms; /* default 2000; then the keyword list */

    /* ledger */
    int ledger_batch_size;   /* default 500 */
    int64_t ledger_flush_ms; /* default 50 */
    int ledger_connections;  /* PostgreSQL connections batches spread over, default 2 */

    /* reaper */
    int64_t lease_ttl_ms;       /* holder silent this long is dead, default 10000 */
    int64_t reaper_interval_ms; /* default 2000 */

    int64_t commit_interval_ms; /* offset commit period, default 200 */
    char *log_level;            /* default "info" */

    /* admin: /health, /ready, /metrics (lib/admin.h) */
    char *admin_host; /* default "127.0.0.1" */
    int admin_port;   /* -1 (default): off; 0: ephemeral */

    /* tracing: OTLP/HTTP JSON export of spans (lib/trace.h) */
    char *tracing_otlp_endpoint; /* base URL ({endpoint}/v1/traces); NULL: off */
    char *tracing_service_name;  /* NULL: the process name */
    int64_t tracing_batch_ms;    /* export period, default 1000 */
    int tracing_queue_max;       /* spans held at most, default 2048 */
    json_t *tracing_headers;     /* extra headers (object of strings, may hold
                                    secrets: never log), borrowed; may be NULL */

    /* scheduling (docs/scheduling.md): read by workers (start gate) and the
     * dispatcher (releaser) */
    int64_t max_queue_ms;                /* longest wait of a task before it starts, 0
                                            (default): none; see gt_config_max_queue_ms */
    int64_t cancel_poll_ms;              /* workers look for cancelled jobs among their
                                            running tasks this often, default 250 */
    int64_t release_poll_ms;             /* the releaser looks at each fair lane at least this
                                            often (default 500) */
    int64_t release_stale_ms;            /* a release not confirmed for this long is published
                                            again (default 30000) */
    json_t *sched_lanes, *sched_tenants; /* scheduling.lanes / .tenants, borrowed; NULL */

    /* api: gantry-api's section (api/config.c, gt_api_config_register); NULL
     * in a process that did not add it. Owned; opaque to lib/. */
    struct gt_api_config *api;

    /* Versions whose sections a reload swapped out (lib/reload.h): kept until
     * this config is freed, because code may still hold pointers into them. */
    struct gt_config *retired;
} gt_config_t;

/* Loads and validates path: the shared sections, then those of the parts this
 * process added (config_section.h: gt_config_add_section). On failure returns NULL and writes every
 * problem, one per line as "key.path: reason", into err. The result is owned by the caller: free
 * with gt_config_free. */
gt_config_t *gt_config_load(const char *path, char *err, size_t errlen);
/* Same, from a JSON text (tests). base_dir resolves relative *_file paths. */
gt_config_t *gt_config_parse(const char *text, const char *base_dir, char *err, size_t errlen);
void gt_config_free(gt_config_t *cfg);

const gt_model_t *gt_config_model(const gt_config_t *cfg, const char *name);
const gt_pool_t *gt_config_pool(const gt_config_t *cfg, const char *name);
const gt_provider_t *gt_config_provider(const gt_config_t *cfg, const char *name);
/* The limits of tenant at provider p, or NULL when it has none. */
const gt_provider_limits_t *gt_provider_tenant_limits(const gt_provider_t *p, const char *tenant);
/* The tenant's settings, or NULL when tenants.<id> is not declared. */
const gt_tenant_t *gt_config_tenant(const gt_config_t *cfg, const char *id);
/* 1 when the configuration has a tenants section (even empty): then only its
 * tenants are served, unless dispatcher.allow_unknown_tenants. */
int gt_config_tenants_configured(const gt_config_t *cfg);
/* 1 when some model uses lane (models.<name>.lane), else 0. */
int gt_config_has_lane(const gt_config_t *cfg, const char *lane);
/* The queue time limit of a task of tenant in lane: the smallest of
 * scheduling.max_queue_ms, scheduling.lanes.<lane>.max_queue_ms and
 * scheduling.tenants.<tenant>.max_queue_ms that is set (> 0); 0: none.
 * lane and tenant may be NULL. Cannot fail. */
int64_t gt_config_max_queue_ms(const gt_config_t *cfg, const char *lane, const char *tenant);
/* Writes the topic of a lane ("gantry.tasks.<lane>") into buf. */
char *gt_config_lane_topic(const gt_config_t *cfg, const char *lane, char *buf, size_t len);

#endif
