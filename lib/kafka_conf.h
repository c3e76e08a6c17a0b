/* kafka_conf.h - internal to lib/kafka_producer.c and lib/kafka_consumer.c:
 * librdkafka properties, the loop wake-up pipe and librdkafka's callbacks. */
#ifndef GT_KAFKA_CONF_H
#define GT_KAFKA_CONF_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>

/* Opens the pipe librdkafka writes one byte to when a queue turns non-empty;
 * both ends non-blocking. Returns 0, or -errno with a reason in err (fds are
 * then -1). */
int gt_kafka_wake_open(int fds[2], char *err, size_t errlen);
/* Reads every byte waiting on fd. */
void gt_kafka_wake_drain(int fd);
/* Closes both ends (those not -1) and sets them to -1. */
void gt_kafka_wake_close(int fds[2]);

/* Sets one property. Returns 0, or -EINVAL with "kafka property KEY: why" in err. */
int gt_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *val, char *err,
                      size_t errlen);
/* Applies the properties of the object props (NULL: none; numbers and booleans
 * are turned into strings), skipping with a warning those in forced (NULL-
 * terminated, may be NULL): the caller sets them. Returns 0, or -EINVAL with a
 * reason in err. */
int gt_kafka_conf_apply(rd_kafka_conf_t *conf, const json_t *props, const char *const *forced,
                        char *err, size_t errlen);

/* librdkafka's log callback (any thread) and error callback (loop thread). */
void gt_kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
void gt_kafka_on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque);

#endif
