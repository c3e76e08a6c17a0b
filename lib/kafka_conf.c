/* kafka_conf.c - what lib/kafka_producer.c and lib/kafka_consumer.c share:
 * librdkafka properties from the configuration, the loop's wake-up pipe, and
 * librdkafka's log and error callbacks. */
#include "kafka_conf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* librdkafka writes one byte to fds[1] when a queue turns non-empty; both ends
 * are non-blocking so that neither librdkafka's threads nor the loop ever
 * wait on the pipe (a full pipe already means "wake up"). */
int gt_kafka_wake_open(int fds[2], char *err, size_t errlen)
{
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        fds[0] = fds[1] = -1;
        return -errno;
    }
    return 0;
}

void gt_kafka_wake_drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

void gt_kafka_wake_close(int fds[2])
{
    for (int i = 0; i < 2; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

int gt_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *val, char *err,
                      size_t errlen)
{
    char why[256];
    if (rd_kafka_conf_set(conf, key, val, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka property %s: %s", key, why);
        return -EINVAL;
    }
    return 0;
}

/* Applies librdkafka properties from the configuration. Keys in forced are what gantry's delivery
 * guarantees rest on: they are skipped with a warning (the caller sets them
 * afterwards). Numbers and booleans are accepted as a convenience. */
int gt_kafka_conf_apply(rd_kafka_conf_t *conf, const json_t *props, const char *const *forced,
                        char *err, size_t errlen)
{
    const char *key;
    json_t *val;
    char num[64];

    if (!props)
        return 0;
    if (!json_is_object(props)) {
        snprintf(err, errlen, "kafka properties: not an object");
        return -EINVAL;
    }
    json_object_foreach ((json_t *)props, key, val) {
        const char *s;
        int skip = 0;
        for (const char *const *f = forced; f && *f; f++)
            if (strcmp(*f, key) == 0)
                skip = 1;
        if (skip) {
            gt_warn("kafka property %s ignored: gantry sets it itself", key);
            continue;
        }
        if (json_is_string(val)) {
            s = json_string_value(val);
        } else if (json_is_integer(val)) {
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(val));
            s = num;
        } else if (json_is_real(val)) {
            snprintf(num, sizeof(num), "%g", json_real_value(val));
            s = num;
        } else if (json_is_boolean(val)) {
            s = json_is_true(val) ? "true" : "false";
        } else {
            snprintf(err, errlen, "kafka property %s: not a string", key);
            return -EINVAL;
        }
        if (gt_kafka_conf_set(conf, key, s, err, errlen) < 0)
            return -EINVAL;
    }
    return 0;
}

/* Called from librdkafka's own threads: gt_log is thread safe. */
void gt_kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    gt_log_level_t l = level <= 3   ? GT_LOG_ERROR
                       : level == 4 ? GT_LOG_WARN
                       : level <= 6 ? GT_LOG_INFO
                                    : GT_LOG_DEBUG;
    gt_log(l, NULL, "kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

/* Served from the main queue, i.e. on the loop thread. Most errors are
 * transient (brokers down, timeouts) and librdkafka recovers by itself. */
void gt_kafka_on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof(why));
        gt_error("kafka %s: fatal error %s: %s", rd_kafka_name(rk), rd_kafka_err2name(orig), why);
        return;
    }
    gt_warn("kafka %s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name((rd_kafka_resp_err_t)err),
            reason);
}
