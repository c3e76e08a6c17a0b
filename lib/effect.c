/* effect.c - produces grouped per input, re-sent with backoff until the
 * broker acknowledges them, then one completion callback (see effect.h). */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "effect.h"
#include "json_text.h"
#include "log.h"
#include "metrics.h"
#include "retry.h"

#define EFFECT_BASE_MS 50
#define EFFECT_MAX_MS 5000

typedef enum { P_WAITING, P_IN_PRODUCER, P_ACKED } produce_state_t;

typedef struct produce {
    gt_effect_t *e;
    char *topic;
    char *key;
    size_t key_len;
    char *value;
    size_t len;
    gt_header_t *headers; /* names and values copied */
    size_t n_headers;
    produce_state_t state;
    int tries;
    int64_t due; /* mono ms of the next send while waiting */
} produce_t;

struct gt_effects {
    uv_loop_t *loop;
    gt_producer_t *producer;
    gt_retry_policy_t backoff;
    gt_metric_t *resends;
    gt_effect_t *live; /* pending effects, for close */
    int pending;
    long n_resends;
    int64_t warned_ms; /* the last re-send logged: one line a second at most */
    long unlogged;     /* re-sends since */
    int closing;
};

struct gt_effect {
    gt_effects_t *es;
    gt_effect_t *prev, *next; /* in es->live while pending */
    gt_effect_done_cb done;
    gt_effect_failed_cb failed;
    void *arg;
    produce_t **p;
    size_t n, cap;
    int in_producer; /* delivery reports still due */
    int sealed;
    int over;               /* completed, failed or abandoned: no more sends, no callbacks */
    int fail_set, fail_err; /* a failure before seal, reported by seal */
    char fail_topic[256], fail_reason[256];
    uv_timer_t timer;
    int timer_init, timer_closing, timer_closed;
};

static void effect_send(produce_t *p);

static void produce_free(produce_t *p)
{
    for (size_t i = 0; i < p->n_headers; i++) {
        free((char *)p->headers[i].name);
        free((char *)p->headers[i].value);
    }
    free(p->headers);
    free(p->topic);
    free(p->key);
    free(p->value);
    free(p);
}

static void effect_destroy(gt_effect_t *e)
{
    for (size_t i = 0; i < e->n; i++)
        produce_free(e->p[i]);
    free(e->p);
    free(e);
}

static void on_timer_closed(uv_handle_t *h)
{
    gt_effect_t *e = h->data;
    e->timer_closed = 1;
    if (e->in_producer == 0)
        effect_destroy(e);
}

/* Frees e once it is over and nothing (delivery report, timer) can name it. */
static void effect_maybe_free(gt_effect_t *e)
{
    if (!e->over || !e->sealed || e->in_producer > 0)
        return;
    if (!e->timer_init) {
        effect_destroy(e);
        return;
    }
    if (e->timer_closed) {
        effect_destroy(e);
        return;
    }
    if (!e->timer_closing) {
        e->timer_closing = 1;
        uv_close((uv_handle_t *)&e->timer, on_timer_closed);
    }
}

/* Leaves the pending list; callbacks are not called after this. */
static void effect_end(gt_effect_t *e)
{
    if (e->over)
        return;
    e->over = 1;
    gt_effects_t *es = e->es;
    if (e->prev)
        e->prev->next = e->next;
    else
        es->live = e->next;
    if (e->next)
        e->next->prev = e->prev;
    e->prev = e->next = NULL;
    es->pending--;
    if (e->timer_init && !e->timer_closing) {
        /* Closed now rather than at free: the loop may stop before the last
         * delivery report arrives (gt_producer_free's flush). */
        e->timer_closing = 1;
        uv_timer_stop(&e->timer);
        uv_close((uv_handle_t *)&e->timer, on_timer_closed);
    }
}

static void effect_maybe_done(gt_effect_t *e)
{
    if (e->over || !e->sealed)
        return;
    for (size_t i = 0; i < e->n; i++)
        if (e->p[i]->state != P_ACKED)
            return;
    effect_end(e);
    if (e->done)
        e->done(e->arg);
    effect_maybe_free(e);
}

/* Errors that sending again cannot fix. err as gt_producer_send returns it. */
static int is_permanent(int err)
{
    switch (err) {
    case -RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case -RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case -RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case -RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__INVALID_ARG: return 1;
    default: return 0;
    }
}

/* err 0: abandoned because the process stops. */
static void effect_fail(gt_effect_t *e, produce_t *p, int err, const char *reason)
{
    if (err)
        gt_error("giving up producing to %s: %s (a permanent error)", p->topic, reason);
    effect_end(e);
    if (!e->sealed) { /* the stage is still adding: seal reports it */
        e->fail_set = 1;
        e->fail_err = err;
        snprintf(e->fail_topic, sizeof(e->fail_topic), "%s", p->topic);
        snprintf(e->fail_reason, sizeof(e->fail_reason), "%s", reason);
        return;
    }
    if (e->failed)
        e->failed(p->topic, err, reason, e->arg);
    effect_maybe_free(e);
}

static void on_timer(uv_timer_t *t)
{
    gt_effect_t *e = t->data;
    int64_t now = gt_clock_mono_ms(), next = INT64_MAX;
    for (size_t i = 0; i < e->n && !e->over; i++) {
        produce_t *p = e->p[i];
        if (p->state != P_WAITING)
            continue;
        if (p->due <= now)
            effect_send(p);
        else if (p->due < next)
            next = p->due;
    }
    if (!e->over && next != INT64_MAX)
        uv_timer_start(&e->timer, on_timer, (uint64_t)(next - now), 0);
}

/* Schedules p's next send after the backoff of its try count. */
static void retry_later(produce_t *p, int err, const char *reason)
{
    gt_effect_t *e = p->e;
    gt_effects_t *es = e->es;
    if (es->closing) {
        /* Stopping: the input stays undone and is redelivered. */
        gt_warn("producing to %s failed while stopping (%s): its input is redelivered", p->topic,
                reason);
        effect_fail(e, p, 0, "abandoned: the process stops");
        return;
    }
    p->state = P_WAITING;
    /* NOLINTNEXTLINE(cert-msc30-c,cert-msc50-cpp): retry jitter, not a secret */
    double rnd = (double)rand() / ((double)RAND_MAX + 1.0);
    int64_t wait = gt_retry_backoff_ms(&es->backoff, p->tries, -1, rnd);
    p->due = gt_clock_mono_ms() + wait;
    es->n_resends++;
    gt_metric_add(es->resends, 1, p->topic);
    int64_t now = gt_clock_mono_ms();
    if (now - es->warned_ms >= 1000) { /* an outage refuses thousands: one line a second */
        gt_warn("producing to %s failed (%s, error %d, try %d): sending again in %lld ms"
                " (%ld other re-sends since the last line)",
                p->topic, reason, err, p->tries, (long long)wait, es->unlogged);
        es->warned_ms = now;
        es->unlogged = 0;
    } else {
        es->unlogged++;
    }
    if (!e->timer_init) {
        uv_timer_init(es->loop, &e->timer);
        e->timer.data = e;
        e->timer_init = 1;
    }
    uint64_t left = 0;
    if (uv_is_active((uv_handle_t *)&e->timer))
        left = uv_timer_get_due_in(&e->timer);
    if (!uv_is_active((uv_handle_t *)&e->timer) || left > (uint64_t)wait)
        uv_timer_start(&e->timer, on_timer, (uint64_t)wait, 0);
}

static void on_delivered(int err, const char *errstr, void *opaque)
{
    produce_t *p = opaque;
    gt_effect_t *e = p->e;
    e->in_producer--;
    if (e->over) {
        p->state = err ? P_WAITING : P_ACKED;
        effect_maybe_free(e);
        return;
    }
    if (!err) {
        p->state = P_ACKED;
        effect_maybe_done(e);
        return;
    }
    int code = err > 0 ? -err : err;
    if (is_permanent(code)) {
        effect_fail(e, p, code, errstr ? errstr : "delivery failed");
        return;
    }
    retry_later(p, code, errstr ? errstr : "delivery failed"); /* may free e (stopping) */
}

static void effect_send(produce_t *p)
{
    gt_effect_t *e = p->e;
    p->tries++;
    int rc = gt_producer_send(e->es->producer, p->topic, p->key, p->key_len, p->value, p->len,
                              p->headers, p->n_headers, on_delivered, p);
    if (rc == 0) {
        p->state = P_IN_PRODUCER;
        e->in_producer++;
        return;
    }
    /* librdkafka's own codes are -200..-100; broker codes come negated. */
    const char *reason = rc == -ENOMEM
                             ? "out of memory"
                             : rd_kafka_err2str((rd_kafka_resp_err_t)(rc <= -100 ? rc : -rc));
    if (is_permanent(rc)) {
        effect_fail(e, p, rc, reason);
        return;
    }
    retry_later(p, rc, reason);
}

gt_effects_t *gt_effects_new(uv_loop_t *loop, gt_producer_t *p)
{
    gt_effects_t *es = calloc(1, sizeof(*es));
    if (!es)
        return NULL;
    es->loop = loop;
    es->producer = p;
    es->backoff = (gt_retry_policy_t){
        .max_retries = 0, .base_ms = EFFECT_BASE_MS, .max_ms = EFFECT_MAX_MS, .jitter = 0.2};
    es->resends =
        gt_metrics_counter("gantry_effect_resends_total",
                           "Produces sent again after a refusal or a failed delivery", "topic");
    return es;
}

void gt_effects_close(gt_effects_t *es)
{
    if (!es)
        return;
    es->closing = 1;
    /* Those with a produce in the producer may still complete in its flush;
     * those waiting for a backoff are given up now. */
    for (gt_effect_t *e = es->live, *next; e; e = next) {
        next = e->next;
        for (size_t i = 0; i < e->n; i++) {
            if (e->p[i]->state == P_WAITING) {
                effect_fail(e, e->p[i], 0, "abandoned: the process stops");
                break;
            }
        }
    }
}

void gt_effects_free(gt_effects_t *es)
{
    free(es);
}

int gt_effects_pending(const gt_effects_t *es)
{
    return es ? es->pending : 0;
}

long gt_effects_resends(const gt_effects_t *es)
{
    return es ? es->n_resends : 0;
}

gt_effect_t *gt_effect_new(gt_effects_t *es, gt_effect_done_cb done, gt_effect_failed_cb failed,
                           void *arg)
{
    gt_effect_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->es = es;
    e->done = done;
    e->failed = failed;
    e->arg = arg;
    e->next = es->live;
    if (es->live)
        es->live->prev = e;
    es->live = e;
    es->pending++;
    return e;
}

static char *dup_bytes(const void *b, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        if (n)
            memcpy(s, b, n);
        s[n] = 0;
    }
    return s;
}

int gt_effect_add(gt_effect_t *e, const char *topic, const void *key, size_t key_len,
                  const void *value, size_t len, const gt_header_t *headers, size_t n_headers)
{
    if (e->sealed)
        return -1;
    produce_t *p = calloc(1, sizeof(*p));
    if (!p)
        return -1;
    p->e = e;
    p->topic = strdup(topic);
    p->key = key ? dup_bytes(key, key_len) : NULL;
    p->key_len = key ? key_len : 0;
    p->value = dup_bytes(value ? value : "", value ? len : 0);
    p->len = value ? len : 0;
    p->headers = n_headers ? calloc(n_headers, sizeof(*p->headers)) : NULL;
    int ok = p->topic && (!key || p->key) && p->value && (!n_headers || p->headers);
    for (size_t i = 0; ok && i < n_headers; i++) {
        p->headers[i].name = strdup(headers[i].name);
        p->headers[i].value = headers[i].value ? strdup(headers[i].value) : NULL;
        p->n_headers = i + 1;
        ok = p->headers[i].name && (!headers[i].value || p->headers[i].value);
    }
    if (ok && e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 2;
        produce_t **np = realloc(e->p, cap * sizeof(*np));
        if (np) {
            e->p = np;
            e->cap = cap;
        } else {
            ok = 0;
        }
    }
    if (!ok) {
        produce_free(p);
        return -1;
    }
    e->p[e->n++] = p;
    if (e->over) /* failed already: kept only to be freed */
        return 0;
    effect_send(p);
    return 0;
}

int gt_effect_add_json(gt_effect_t *e, const char *topic, const char *key, const json_t *obj,
                       const gt_header_t *headers, size_t n_headers)
{
    char buf[8192];
    size_t len;
    char *text = gt_json_dump(obj, buf, sizeof(buf), &len);
    if (!text)
        return -1;
    int rc = gt_effect_add(e, topic, key, key ? strlen(key) : 0, text, len, headers, n_headers);
    if (text != buf)
        free(text);
    return rc;
}

void gt_effect_seal(gt_effect_t *e)
{
    e->sealed = 1;
    if (e->over) {
        if (e->fail_set && e->failed)
            e->failed(e->fail_topic, e->fail_err, e->fail_reason, e->arg);
        effect_maybe_free(e);
        return;
    }
    effect_maybe_done(e);
}

void gt_effect_abandon(gt_effect_t *e)
{
    e->sealed = 1;
    e->fail_set = 0;
    effect_end(e);
    effect_maybe_free(e);
}

int gt_effect_send_json(gt_effects_t *es, const char *topic, const char *key, const json_t *obj,
                        const gt_header_t *headers, size_t n_headers)
{
    gt_effect_t *e = gt_effect_new(es, NULL, NULL, NULL);
    if (!e)
        return -1;
    int rc = gt_effect_add_json(e, topic, key, obj, headers, n_headers);
    if (rc != 0) {
        gt_effect_abandon(e);
        return -1;
    }
    gt_effect_seal(e);
    return 0;
}
