/* cluster.h - a whole Gantry on loopback for end-to-end tests: embedded Kafka,
 * a fresh PostgreSQL database, the mock HostedAI, a dispatcher and workers,
 * all real processes; plus helpers to read topics and query state. */
#ifndef GT_CLUSTER_H
#define GT_CLUSTER_H

#include <jansson.h>

#include "harness.h"

#define TH_MAX_WORKERS 8

typedef struct th_cluster_opts {
    double fail_rate;    /* mock HostedAI fault rate */
    const char *latency; /* mock latency "A-B" ms */
    int workers;
    int worker_in_flight;
    const char *capacity_tflops;
    const char *extra_config;     /* JSON object merged (recursively) into the generated config */
    int kafka_port;               /* clients' bootstrap port (a restarted Kafka keeps it); 0: any */
    const char *const *mock_args; /* more mock HostedAI arguments (NULL-terminated), or NULL */
    int kafka_brokers;            /* brokers of the embedded Kafka (ids 1..N); 0: 1 */
    int kafka_partitions;         /* partitions of every topic (--partitions); 0: its defaults */
} th_cluster_opts_t;

typedef struct th_cluster {
    th_proc_t kafka, mock, dispatcher, workers[TH_MAX_WORKERS];
    int n_workers; /* slots used (stopped ones included) */
    char bootstrap[512];
    char mock_url[192];
    char conninfo[512];
    char config[256];
    char logdir[256];
    char kafka_ctl[320]; /* the embedded Kafka's control FIFO (logdir/kafka.ctl) */
    int kafka_brokers;
    int kafka_partitions;
} th_cluster_t;

int th_cluster_start(th_cluster_t *c, const th_cluster_opts_t *o);
/* (Re)starts the embedded Kafka into c->kafka and c->bootstrap (port as in
 * th_cluster_opts_t.kafka_port). Returns 0 or -1. */
int th_cluster_start_kafka(th_cluster_t *c, int port);
/* Sends one command to the embedded Kafka's control channel (see
 * gantry-kafka-dev --help) and waits up to 10 s for its answer. Returns 0 when
 * it answered "ok" (the fault is then in place), -1 otherwise (printed). */
int th_cluster_kafka_cmd(th_cluster_t *c, const char *cmd);
/* Broker id (1..kafka_brokers, -1: all) down: connections dropped, new ones
 * refused, leaders stay where they are. With one broker: all of Kafka. */
int th_cluster_broker_down(th_cluster_t *c, int id);
int th_cluster_broker_up(th_cluster_t *c, int id);
/* Moves the leader of topic[partition] to broker id (-1: no leader). */
int th_cluster_partition_leader(th_cluster_t *c, const char *topic, int partition, int id);

/* Starts a dispatcher into p with --id id and the cluster's configuration
 * (log: logdir/<id>.log; logdir/dispatcher.log for the cluster's own,
 * "dispatcher-e2e"). Returns 0 or -1. */
int th_cluster_start_dispatcher(th_cluster_t *c, th_proc_t *p, const char *id);
/* Starts the worker of a slot again under the same --id (after it exited or
 * was killed and reaped). Returns 0 or -1. */
int th_cluster_restart_worker(th_cluster_t *c, int slot);

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

/* Asserts billed once, counted on the gantry.usage topic and in PostgreSQL:
 * every succeeded task has usage events on the topic and no other task has;
 * all events of a task carry one event_id (so the ledger stores one charge);
 * one usage row per task, as many rows as succeeded tasks, and no row for a
 * task without an event. max_events_per_task > 0 also bounds the events a
 * task has on the topic (1: exactly one; 0: a re-run task may repeat its
 * event, as after a SIGKILL). Returns the number of rows. */
long th_check_usage(th_cluster_t *c, int max_events_per_task);
/* th_check_usage(c, 0). */
long th_check_billed_once(th_cluster_t *c);

/* Messages between the committed offset of group and the end of topic, over
 * all partitions (a partition without a commit counts from its start); -1
 * when the offsets cannot be read. When why is non-NULL it gets the lagging
 * partitions ("p3 committed 17 end 64, ..."). */
long th_group_lag(const char *bootstrap, const char *group, const char *topic, char *why,
                  size_t len);

/* First column of every row of sql, as a JSON array of strings (NULL on
 * error, printed). Caller owns it. */
json_t *th_sql_column(const char *conninfo, const char *sql);

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
