/* cluster.h - a whole Gantry on loopback for end-to-end tests: embedded Kafka,
 * a fresh PostgreSQL database, the mock HostedAI, a dispatcher and workers,
 * all real processes; plus helpers to read topics and query state. */
#ifndef GT_CLUSTER_H
#define GT_CLUSTER_H

#include <jansson.h>

#include "harness.h"

#define TH_MAX_WORKERS 8

typedef struct th_cluster_opts {
    double fail_rate;         /* mock HostedAI fault rate */
    const char *latency;      /* mock latency "A-B" ms */
    int workers;
    int worker_in_flight;
    const char *capacity_tflops;
    const char *extra_config; /* JSON object merged (recursively) into the generated config */
    int kafka_port;           /* clients' bootstrap port (a restarted Kafka keeps it); 0: any */
    const char *const *mock_args; /* more mock HostedAI arguments (NULL-terminated), or NULL */
} th_cluster_opts_t;

typedef struct th_cluster {
    th_proc_t kafka, mock, dispatcher, workers[TH_MAX_WORKERS];
    int n_workers;            /* slots used (stopped ones included) */
    char bootstrap[512];
    char mock_url[192];
    char conninfo[512];
    char config[256];
    char logdir[256];
} th_cluster_t;

int th_cluster_start(th_cluster_t *c, const th_cluster_opts_t *o);
/* (Re)starts the embedded Kafka into c->kafka and c->bootstrap (port as in
 * th_cluster_opts_t.kafka_port). Returns 0 or -1. */
int th_cluster_start_kafka(th_cluster_t *c, int port);
/* Starts one more worker; returns its slot or -1. */
int th_cluster_add_worker(th_cluster_t *c);
void th_cluster_stop(th_cluster_t *c);

/* Publishes the lines of a file with `gantry submit`. Returns 0 on success. */
int th_cluster_submit(th_cluster_t *c, const char *path);

/* Every message now in topic, as a JSON array of {key, value, partition,
 * offset, traceparent (when the message has that header)} (value as a
 * string). Caller owns it. */
json_t *th_kafka_read_all(const char *bootstrap, const char *topic);

/* Messages in gantry.results for request rid; *status (when non-NULL) gets the
 * last one's status (static buffer). */
long th_results_for(th_cluster_t *c, const char *rid, const char **status);

/* 1 when group has committed every message now in topic (a th_poll condition
 * once wrapped): what was published has been read and acted on. */
int th_group_caught_up(const char *bootstrap, const char *group, const char *topic);

/* Publishes one message and waits for it to be durable. Returns 0 or -1. */
int th_kafka_produce(const char *bootstrap, const char *topic, const char *key, const char *value);

/* Messages now in topic. */
long th_topic_count(const char *bootstrap, const char *topic);

/* A th_poll condition (arg: the cluster): the mock holds no allocation. */
int th_cluster_released_all(void *cluster);

/* A th_poll condition (arg: the cluster): one usage row per succeeded task. */
int th_cluster_usage_complete(void *cluster);

/* Asserts that gantry.results holds exactly one result for each of n
 * requests (the topic read to its end). Returns the duplicates seen. */
long th_check_one_result_each(th_cluster_t *c, long n);

/* Asserts billed once: usage rows = distinct tasks among them = succeeded
 * tasks. Returns the number of rows. */
long th_check_billed_once(th_cluster_t *c);

/* Lines of a process's log (logdir/name, e.g. "worker-0.log") containing
 * needle. */
long th_log_count(const th_cluster_t *c, const char *name, const char *needle);

/* First column of the first row of sql as a number (-1 on error). */
long th_sql_long(const char *conninfo, const char *sql);

/* GET url with the bearer key; parsed JSON or NULL. */
json_t *th_http_json(const char *url, const char *key);

/* Mock HostedAI stats field. */
long th_mock_stat(th_cluster_t *c, const char *field);

#endif
