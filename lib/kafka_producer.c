/* kafka_producer.c - an idempotent librdkafka producer (acks=all) driven by a
 * libuv loop: delivery reports are served on the loop thread (lib/kafka.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "kafka_conf.h"
#include "log.h"

struct gt_producer {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int wake[2];
    uv_poll_t poll;
    int poll_active;
    int outstanding;
};

/* Per-message opaque: what to call when the delivery report arrives. */
typedef struct dr_ctx {
    gt_delivery_cb cb;
    void *opaque;
} dr_ctx_t;

static void producer_serve(gt_producer_t *p);
static void producer_on_poll(uv_poll_t *h, int status, int events);
static void producer_on_dr(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque);

static void producer_on_dr(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    gt_producer_t *p = opaque;
    dr_ctx_t *ctx = rkm->_private;
    (void)rk;

    p->outstanding--;
    if (!ctx)
        return;
    if (rkm->err)
        ctx->cb((int)rkm->err, rd_kafka_err2str(rkm->err), ctx->opaque);
    else
        ctx->cb(0, NULL, ctx->opaque);
    free(ctx);
}

/* rd_kafka_poll(0) serves a snapshot of the main queue. The wake-up byte is
 * written only when the queue goes from empty to non-empty, so serve until it
 * is empty: stopping early left delivery reports waiting for an unrelated
 * wake-up (hundreds of ms under load). */
static void producer_serve(gt_producer_t *p)
{
    while (rd_kafka_poll(p->rk, 0) > 0)
        ;
}

static void producer_on_poll(uv_poll_t *h, int status, int events)
{
    gt_producer_t *p = h->data;
    (void)status;
    (void)events;
    gt_kafka_wake_drain(p->wake[0]);
    producer_serve(p);
}

gt_producer_t *gt_producer_new(uv_loop_t *loop, const gt_config_t *cfg, char *err, size_t errlen)
{
    static const char *const forced[] = {"acks", "enable.idempotence", NULL};
    gt_producer_t *p = NULL;
    rd_kafka_conf_t *conf = NULL;
    char why[512];

    if (!cfg || !cfg->bootstrap_servers) {
        snprintf(err, errlen, "kafka: no bootstrap servers");
        return NULL;
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->loop = loop;
    p->wake[0] = p->wake[1] = -1;
    if (gt_kafka_wake_open(p->wake, err, errlen) < 0)
        goto fail;

    /* kafka.message_max_bytes, which intake's size checks use; properties may still set it. */
    char max_bytes[24];
    snprintf(max_bytes, sizeof(max_bytes), "%lld", (long long)cfg->kafka_message_max_bytes);
    conf = rd_kafka_conf_new();
    if (gt_kafka_conf_set(conf, "bootstrap.servers", cfg->bootstrap_servers, err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "linger.ms", "5", err, errlen) < 0 ||
        (cfg->kafka_message_max_bytes > 0 &&
         gt_kafka_conf_set(conf, "message.max.bytes", max_bytes, err, errlen) < 0) ||
        gt_kafka_conf_apply(conf, cfg->kafka_props, forced, err, errlen) < 0 ||
        gt_kafka_conf_apply(conf, cfg->kafka_producer_props, forced, err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "acks", "all", err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "enable.idempotence", "true", err, errlen) < 0)
        goto fail;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, producer_on_dr);
    rd_kafka_conf_set_error_cb(conf, gt_kafka_on_error);
    rd_kafka_conf_set_log_cb(conf, gt_kafka_on_log);

    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!p->rk) {
        snprintf(err, errlen, "kafka producer: %s", why);
        goto fail;
    }
    conf = NULL; /* owned by rk now */

    p->mainq = rd_kafka_queue_get_main(p->rk);
    rd_kafka_queue_io_event_enable(p->mainq, p->wake[1], "1", 1);
    if (uv_poll_init(loop, &p->poll, p->wake[0]) < 0) {
        snprintf(err, errlen, "uv_poll_init failed");
        goto fail;
    }
    /* From here on nothing fails: the handle needs a loop run to close. */
    p->poll.data = p;
    uv_poll_start(&p->poll, UV_READABLE, producer_on_poll);
    p->poll_active = 1;
    /* Serve what was queued before the io event was enabled (it wrote no byte). */
    producer_serve(p);
    return p;

fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (p->mainq)
        rd_kafka_queue_destroy(p->mainq);
    if (p->rk)
        rd_kafka_destroy(p->rk);
    gt_kafka_wake_close(p->wake);
    free(p);
    return NULL;
}

int gt_producer_send(gt_producer_t *p, const char *topic, const void *key, size_t key_len,
                     const void *value, size_t len, const gt_header_t *headers, size_t n_headers,
                     gt_delivery_cb cb, void *opaque)
{
    rd_kafka_headers_t *hdrs = NULL;
    dr_ctx_t *ctx = NULL;
    rd_kafka_resp_err_t err;

    if (cb) {
        ctx = malloc(sizeof(*ctx));
        if (!ctx)
            return -ENOMEM;
        ctx->cb = cb;
        ctx->opaque = opaque;
    }
    if (n_headers > 0) {
        hdrs = rd_kafka_headers_new(n_headers);
        for (size_t i = 0; i < n_headers; i++)
            rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                                headers[i].value ? -1 : 0);
    }
    err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                            RD_KAFKA_V_VALUE((void *)value, len),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
                            RD_KAFKA_V_OPAQUE(ctx), RD_KAFKA_V_END);
    if (err) {
        /* On failure the headers stay ours. */
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        free(ctx);
        return err < 0 ? (int)err : -(int)err;
    }
    /* ctx is the message's opaque now, freed by producer_on_dr */
    p->outstanding++; /* NOLINT(clang-analyzer-unix.Malloc) */
    return 0;
}

int gt_producer_outstanding(const gt_producer_t *p)
{
    return p->outstanding;
}

int gt_producer_probe(gt_producer_t *p, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    if (!p || rd_kafka_metadata(p->rk, 0, NULL, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    int ok = md->broker_cnt > 0;
    rd_kafka_metadata_destroy(md);
    return ok ? 0 : -1;
}

void gt_producer_close_handles(gt_producer_t *p)
{
    if (!p || !p->poll_active)
        return;
    uv_poll_stop(&p->poll);
    uv_close((uv_handle_t *)&p->poll, NULL);
    p->poll_active = 0;
}

void gt_producer_free(gt_producer_t *p, int timeout_ms)
{
    if (!p)
        return;
    /* The pipe is about to close: librdkafka must stop writing to it. */
    rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
    rd_kafka_queue_destroy(p->mainq);
    rd_kafka_flush(p->rk, timeout_ms);
    if (p->outstanding > 0) {
        /* Fail what is left so that every callback still runs exactly once. */
        gt_warn("kafka producer: %d messages not delivered after %d ms, purging", p->outstanding,
                timeout_ms);
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        for (int i = 0; i < 100 && p->outstanding > 0; i++)
            rd_kafka_poll(p->rk, 10);
    }
    rd_kafka_destroy(p->rk);
    gt_kafka_wake_close(p->wake);
    free(p);
}
