/* kafka_reader.c - one-off, blocking reads of a topic: its partitions and
 * watermarks (gt_kafka_partitions), and which keys were produced since a time,
 * read back from its end with its own short-lived client (gt_kafka_find_keys,
 * lib/kafka.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "kafka_conf.h"

/* Reads [start, end) of one partition with the simple consumer: marks the keys
 * found and says whether the first message read is older than since_ms. */
static int find_keys_window(rd_kafka_topic_t *rkt, int32_t p, int64_t start, int64_t end,
                            const char *const *keys, size_t n, int64_t since_ms, int *found,
                            int *older, int timeout_ms, char *err, size_t errlen)
{
    int rc = 0, first = 1;
    if (rd_kafka_consume_start(rkt, p, start) != 0) {
        snprintf(err, errlen, "%s [%d]: cannot read from %lld: %s", rd_kafka_topic_name(rkt), p,
                 (long long)start, rd_kafka_err2str(rd_kafka_last_error()));
        return -EIO;
    }
    for (int64_t next = start; next < end;) {
        rd_kafka_message_t *m = rd_kafka_consume(rkt, p, timeout_ms);
        if (!m) {
            snprintf(err, errlen, "%s [%d]: no message within %d ms", rd_kafka_topic_name(rkt), p,
                     timeout_ms);
            rc = -ETIMEDOUT;
            break;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err) {
            snprintf(err, errlen, "%s [%d]: %s", rd_kafka_topic_name(rkt), p,
                     rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            rc = -EIO;
            break;
        }
        next = m->offset + 1;
        if (first) {
            int64_t ts = rd_kafka_message_timestamp(m, NULL);
            *older = ts >= 0 && ts < since_ms;
            first = 0;
        }
        for (size_t i = 0; i < n && m->offset < end; i++)
            if (m->key_len == strlen(keys[i]) && memcmp(m->key, keys[i], m->key_len) == 0)
                found[i] = 1;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consume_stop(rkt, p);
    return rc;
}

int gt_kafka_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, gt_kafka_part_t **parts,
                        int *n, char *err, size_t errlen)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    gt_kafka_part_t *out = NULL;
    int rc = -EIO;
    rd_kafka_resp_err_t e =
        rkt ? rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms) : rd_kafka_last_error();
    if (!e && !md)
        e = RD_KAFKA_RESP_ERR__FAIL; /* no topic handle and no error recorded */
    if (!e && (md->topic_cnt != 1 || md->topics[0].err))
        e = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        snprintf(err, errlen, "%s: metadata: %s", topic, rd_kafka_err2str(e));
        rc = -ENOENT;
        goto out;
    }
    if (e) {
        snprintf(err, errlen, "%s: metadata: %s", topic, rd_kafka_err2str(e));
        goto out;
    }
    int cnt = md->topics[0].partition_cnt;
    if (!(out = calloc((size_t)cnt + 1, sizeof(*out)))) {
        snprintf(err, errlen, "%s: out of memory", topic);
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < cnt; i++) {
        out[i].id = md->topics[0].partitions[i].id;
        if ((e = rd_kafka_query_watermark_offsets(rk, topic, out[i].id, &out[i].lo, &out[i].hi,
                                                  timeout_ms))) {
            snprintf(err, errlen, "%s [%d]: watermarks: %s", topic, out[i].id, rd_kafka_err2str(e));
            goto out;
        }
    }
    *parts = out;
    *n = cnt;
    out = NULL;
    rc = 0;
out:
    free(out);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return rc;
}

int gt_kafka_find_keys(const gt_config_t *cfg, const char *topic, const char *const *keys, size_t n,
                       int64_t since_ms, int *found, int timeout_ms, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    gt_kafka_part_t *parts = NULL;
    int nparts = 0;
    char why[512];
    int rc = -EINVAL;

    if (!cfg || !cfg->bootstrap_servers) {
        snprintf(err, errlen, "kafka: no bootstrap servers");
        goto out;
    }
    /* A one-off read: no fetch held open, no backoff between its requests. */
    if (gt_kafka_conf_set(conf, "bootstrap.servers", cfg->bootstrap_servers, err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "fetch.wait.max.ms", "10", err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "fetch.error.backoff.ms", "10", err, errlen) < 0 ||
        gt_kafka_conf_apply(conf, cfg->kafka_props, NULL, err, errlen) < 0 ||
        gt_kafka_conf_apply(conf, cfg->kafka_consumer_props, NULL, err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "enable.partition.eof", "true", err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "enable.auto.commit", "false", err, errlen) < 0)
        goto out;
    rd_kafka_conf_set_log_cb(conf, gt_kafka_on_log);
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why)))) {
        snprintf(err, errlen, "kafka: %s", why);
        goto out;
    }
    conf = NULL;
    rc = -EIO;
    if (!(rkt = rd_kafka_topic_new(rk, topic, NULL))) {
        snprintf(err, errlen, "%s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto out;
    }
    if ((rc = gt_kafka_partitions(rk, topic, timeout_ms, &parts, &nparts, err, errlen)) != 0) {
        rc = rc == -ENOENT ? -EIO : rc; /* an unknown topic cannot be read either */
        goto out;
    }
    for (int i = 0; i < nparts; i++) {
        int32_t p = parts[i].id;
        int64_t lo = parts[i].lo, hi = parts[i].hi;
        for (int64_t end = hi, window = 256; end > lo; end -= window, window *= 2) {
            int64_t start = end - window < lo ? lo : end - window;
            int older = 0;
            if ((rc = find_keys_window(rkt, p, start, end, keys, n, since_ms, found, &older,
                                       timeout_ms, err, errlen)) != 0)
                goto out;
            if (older || start == lo)
                break;
        }
    }
    rc = 0;
out:
    free(parts);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return rc;
}
