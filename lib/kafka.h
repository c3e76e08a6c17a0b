/* kafka.h - librdkafka producers and consumers driven by a libuv loop
 * (kafka_producer.c, kafka_consumer.c, and kafka_reader.c for a one-off read;
 * kafka_conf.c holds what they share).
 *
 * Both wake the loop through rd_kafka_queue_io_event_enable() and a uv_poll on
 * a pipe; every callback below runs on the loop thread. Consumers never
 * auto-commit: the application marks each message done, and the consumer
 * commits per partition up to the lowest offset not yet done. */
#ifndef GT_KAFKA_H
#define GT_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

typedef struct gt_header {
    const char *name;
    const char *value;
} gt_header_t;

/* ---- producer ---------------------------------------------------------- */

typedef struct gt_producer gt_producer_t;

/* err is 0 when the message is durable (acks=all), else an rd_kafka_resp_err_t;
 * errstr is NULL on success. Runs on the loop thread. */
typedef void (*gt_delivery_cb)(int err, const char *errstr, void *opaque);

/* Creates an idempotent producer (acks=all) for cfg->bootstrap_servers plus
 * cfg->kafka_props. Returns NULL with a reason in err. */
gt_producer_t *gt_producer_new(uv_loop_t *loop, const gt_config_t *cfg, char *err, size_t errlen);

/* Queues a message; key, value and headers are copied. cb (may be NULL) is
 * called exactly once, later, on the loop thread. Returns 0, or a negative
 * rd_kafka_resp_err_t if it could not be queued (cb is then not called):
 * librdkafka's own negative codes as they are, broker codes negated, and
 * -ENOMEM. */
int gt_producer_send(gt_producer_t *p, const char *topic, const void *key, size_t key_len,
                     const void *value, size_t len, const gt_header_t *headers, size_t n_headers,
                     gt_delivery_cb cb, void *opaque);

/* Messages queued and not yet delivered or failed. */
int gt_producer_outstanding(const gt_producer_t *p);

/* A metadata round trip to the cluster, for readiness checks: blocks up to
 * timeout_ms, thread-safe (call it off the loop). Returns 0 when a broker
 * answered, -1 otherwise. */
int gt_producer_probe(gt_producer_t *p, int timeout_ms);

/* Blocks up to timeout_ms for outstanding deliveries (their callbacks run;
 * what is left then is purged and reported as failed), then destroys the
 * producer. Call it only once the loop no longer runs the
 * producer's handles, i.e. after gt_producer_close_handles + loop run. */
void gt_producer_free(gt_producer_t *p, int timeout_ms);
/* Stops the loop handles (async close); the loop must run once more after. */
void gt_producer_close_handles(gt_producer_t *p);

/* ---- consumer ---------------------------------------------------------- */

typedef struct gt_consumer gt_consumer_t;

/* A consumed message. Owned by the consumer; valid until gt_consumer_done(). */
typedef struct gt_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;
    size_t key_len;
    const void *value;
    size_t len;
    int64_t timestamp_ms;
    rd_kafka_message_t *rkm; /* private */
    void *priv;              /* private: partition tracker */
} gt_msg_t;

typedef void (*gt_consume_cb)(gt_consumer_t *c, gt_msg_t *msg, void *arg);

typedef struct gt_consumer_opts {
    const char *group_id;
    const char *const *topics; /* NULL-terminated */
    gt_consume_cb cb;
    void *arg;
    const char *auto_offset_reset; /* default "earliest" */
    int64_t commit_interval_ms;    /* default cfg->commit_interval_ms, else 200 */
    int max_per_wakeup;      /* messages handed out before yielding to the loop, default 500 */
    int max_backlog;         /* messages held while paused before librdkafka pauses, default 1000 */
    const char *instance_id; /* the process's --id: group.instance.id when
                                cfg->kafka_static_membership (NULL: dynamic member) */
} gt_consumer_opts_t;

gt_consumer_t *gt_consumer_new(uv_loop_t *loop, const gt_config_t *cfg,
                               const gt_consumer_opts_t *opts, char *err, size_t errlen);

/* Marks msg processed (its effects durable) and frees it. Its offset becomes
 * committable once every earlier offset of the partition is done. A message of
 * a partition that was revoked meanwhile is only freed. */
void gt_consumer_done(gt_consumer_t *c, gt_msg_t *msg);

/* Returns the value of the last header name of msg (copied into buf and
 * NUL-terminated), or NULL when absent or longer than len - 1. */
const char *gt_msg_header(const gt_msg_t *msg, const char *name, char *buf, size_t len);

/* Stops / restarts handing out messages. While paused, up to max_backlog
 * fetched messages are held (then fetching stops on every assigned partition,
 * also on partitions assigned later) and are handed out first on resume.
 * Messages already handed out stay valid. Cheap: call it at every limit. */
void gt_consumer_pause(gt_consumer_t *c);
void gt_consumer_resume(gt_consumer_t *c);

/* Every second, per assigned partition: gantry_consumer_lag (high watermark
 * minus the offset the broker acknowledged committing) and
 * gantry_consumer_oldest_undone_seconds (age of the oldest message handed
 * out and not done, 0 when none). */

/* Messages handed out and not yet done. */
int gt_consumer_in_flight(const gt_consumer_t *c);

/* 1 while msg's partition is still this consumer's; 0 once it was handed
 * over (a revoke whose grace passed with msg in flight): its next owner has
 * the message too, so what it starts now would run twice. msg stays to be
 * done (gt_consumer_done) either way. */
int gt_consumer_owns(const gt_msg_t *msg);

/* In a rebalance, partitions taken from this consumer are kept until the
 * messages in flight on them are done or kafka.revoke_grace_ms passes (no
 * more of their messages are handed out meanwhile, and the group waits), then
 * what is done on them is committed asynchronously and they are handed over
 * when the broker answers (at most 5 s later); the loop never blocks on it.
 * Returns how many partitions wait so now (for their work or their commit). */
int gt_consumer_revoking(const gt_consumer_t *c);

/* Stops delivering messages and closes the loop handles (async close). */
void gt_consumer_close_handles(gt_consumer_t *c);
/* Commits what is done, leaves the group and destroys the consumer. Messages
 * not done by then are freed uncommitted (they will be redelivered). Blocking:
 * call after the loop has finished with the handles. */
void gt_consumer_free(gt_consumer_t *c);

/* Which of keys[0..n) is the key of a message on topic produced at or after
 * since_ms (the message's CreateTime): found[i] is set to 1 for each, left
 * alone otherwise. Every partition is read back from its end, in windows that
 * double, until a window starts with a message older than since_ms (or at the
 * partition's start), so the cost is the messages produced since then.
 * Blocking, with its own short-lived client: call it off the loop thread.
 * Returns 0, or a negative code with err set when the cluster cannot be read
 * within timeout_ms per request (the topic unknown, the broker down): the
 * caller decides again later, it never guesses. */
int gt_kafka_find_keys(const gt_config_t *cfg, const char *topic, const char *const *keys, size_t n,
                       int64_t since_ms, int *found, int timeout_ms, char *err, size_t errlen);

/* One partition of a topic and its watermarks when it was asked. */
typedef struct gt_kafka_part {
    int32_t id;
    int64_t lo, hi; /* the first offset held and the next offset produced */
} gt_kafka_part_t;

/* The partitions of topic and their watermarks, asked through rk (any
 * client), timeout_ms per request. Blocking. On 0, *parts (malloc'd, the
 * caller frees it) holds *n entries. Returns -ENOENT when the topic does not
 * exist, -EIO (or -ENOMEM) with err set when the cluster cannot tell. */
int gt_kafka_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, gt_kafka_part_t **parts,
                        int *n, char *err, size_t errlen);

#endif
