/* kafka_consumer.c - a librdkafka consumer driven by a libuv loop: per-partition
 * commits of what is done, a bounded backlog for pausing, the revoke's grace for
 * work in flight, and lag gauges (lib/kafka.h). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "kafka_conf.h"
#include "log.h"
#include "metrics.h"
#include "offsets.h"

#define GT_CONTAINER_OF(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))
#define CONSUMER_CLOSE_TIMEOUT_S 10

/* Commit state of one assigned partition. Messages point at it; a revoked
 * partition leaves the list and lives on until its last message is done. */
typedef struct gt_part {
    struct gt_part *next;
    char *topic;
    int32_t partition;
    gt_offsets_t *offs;
    int refs;
    int revoked;
    int revoking;    /* revoked by the group, kept until its messages in flight are done */
    int64_t acked;   /* offset the broker acknowledged committing, -1: none yet */
    int64_t base;    /* first offset handed out since assigned, -1: none yet */
    uint64_t oldest; /* scratch of consumer_report_lag: oldest hand-out time, loop ms */
} gt_part_t;

/* A handed-out message, linked so that gt_consumer_free can release the
 * ones never done (librdkafka must not be destroyed under live messages). */
typedef struct gt_inmsg {
    gt_msg_t msg;
    struct gt_inmsg *prev, *next;
    uint64_t handed_at; /* loop time */
} gt_inmsg_t;

struct gt_consumer {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *cq;
    int wake[2];
    uv_poll_t poll;
    uv_idle_t idle;
    uv_timer_t timer;
    int handles_open;
    int closing;

    gt_consume_cb cb;
    void *arg;
    int max_per_wakeup;
    int max_backlog;
    uint64_t commit_interval_ms;
    char group_id[128]; /* for metrics */
    uint64_t lag_at;    /* next lag report, loop time */

    /* Pausing is done here, not in librdkafka: there a resume takes effect
     * only at the broker thread's next fetch decision (up to a second later),
     * which a worker cycling at its in-flight limit hits on every batch. So a
     * held consumer keeps polling into a bounded backlog, and only a full
     * backlog pauses librdkafka. */
    int held;                /* gt_consumer_pause: deliver nothing */
    int rd_paused;           /* librdkafka's partitions paused (the backlog is full) */
    rd_kafka_message_t **bl; /* backlog ring, in fetch order */
    size_t bl_cap, bl_head, bl_len;
    int in_flight;
    /* A revoke waits (up to revoke_grace_ms) for the messages in flight on
     * the partitions it takes, so that their next owner starts after that
     * work rather than running it again. */
    uint64_t revoke_grace_ms;
    rd_kafka_topic_partition_list_t *revoking; /* NULL: no revoke waiting */
    uint64_t revoke_deadline;                  /* loop time */
    int revoke_coop;
    /* Then its commit is asynchronous; revoke_on_commit hands the partitions
     * over when the broker answers (or revoke_check when it does not). */
    int revoke_committing;
    uint64_t revoke_commit_deadline; /* loop time */
    uintptr_t revoke_seq;            /* tells the current revoke's commit answer from a late one */
    gt_part_t *parts;                /* currently assigned */
    gt_inmsg_t *msgs;                /* handed out, not done */
};

static gt_part_t *part_find(gt_consumer_t *c, const char *topic, int32_t partition);
static gt_part_t *part_add(gt_consumer_t *c, const char *topic, int32_t partition);
static void part_unref(gt_part_t *pt);
static void part_revoke(gt_consumer_t *c, gt_part_t *pt);
enum { COMMIT_SYNC, COMMIT_ASYNC, COMMIT_REVOKE }; /* consumer_commit's modes */
static int consumer_commit(gt_consumer_t *c, const rd_kafka_topic_partition_list_t *only, int mode);
static void revoke_on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque);
static void revoke_handover(gt_consumer_t *c, const rd_kafka_topic_partition_list_t *list,
                            int coop);
static void revoke_commit(gt_consumer_t *c, int sync);
static void consumer_set_paused(gt_consumer_t *c, int pause);
static void revoke_check(gt_consumer_t *c, int now);
static void backlog_drop(gt_consumer_t *c, const char *topic, int32_t partition);
static void backlog_push(gt_consumer_t *c, rd_kafka_message_t *rkm);
static void backlog_maybe_refill(gt_consumer_t *c);
static void consumer_deliver(gt_consumer_t *c, rd_kafka_message_t *rkm);
static void consumer_serve(gt_consumer_t *c);
static void consumer_on_poll(uv_poll_t *h, int status, int events);
static void consumer_on_idle(uv_idle_t *h);
static void consumer_on_timer(uv_timer_t *h);
static void consumer_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *list, void *opaque);
static void consumer_on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *offsets, void *opaque);

/* Assignments are small (tens of partitions): a list is enough. */
static gt_part_t *part_find(gt_consumer_t *c, const char *topic, int32_t partition)
{
    for (gt_part_t *pt = c->parts; pt; pt = pt->next)
        if (pt->partition == partition && strcmp(pt->topic, topic) == 0)
            return pt;
    return NULL;
}

static gt_part_t *part_add(gt_consumer_t *c, const char *topic, int32_t partition)
{
    gt_part_t *pt = calloc(1, sizeof(*pt));
    if (!pt)
        return NULL;
    pt->topic = strdup(topic);
    pt->offs = gt_offsets_new();
    if (!pt->topic || !pt->offs) {
        free(pt->topic);
        gt_offsets_free(pt->offs);
        free(pt);
        return NULL;
    }
    pt->partition = partition;
    pt->acked = pt->base = -1;
    pt->next = c->parts;
    c->parts = pt;
    return pt;
}

static void part_unref(gt_part_t *pt)
{
    if (--pt->refs > 0 || !pt->revoked)
        return;
    free(pt->topic);
    gt_offsets_free(pt->offs);
    free(pt);
}

static gt_metric_t *lag_metric(void)
{
    return gt_metrics_gauge("gantry_consumer_lag",
                            "Messages between the group's committed offset and the partition's "
                            "high watermark: a message never done holds it up, so it grows",
                            "group,topic,partition");
}

static gt_metric_t *oldest_metric(void)
{
    return gt_metrics_gauge("gantry_consumer_oldest_undone_seconds",
                            "Age of the oldest message handed out and not yet done, per "
                            "partition (0: none)",
                            "group,topic,partition");
}

/* Per assigned partition: lag from librdkafka's cached high watermark and the
 * last commit the broker acknowledged (before any, the offset this
 * assignment started at), and the age of the oldest undone message. No broker
 * round trip, and one walk over the messages in flight: cheap on the loop. */
static void consumer_report_lag(gt_consumer_t *c)
{
    uint64_t now = uv_now(c->loop);
    for (gt_part_t *pt = c->parts; pt; pt = pt->next)
        pt->oldest = now;
    for (gt_inmsg_t *im = c->msgs; im; im = im->next) {
        gt_part_t *pt = im->msg.priv;
        if (pt && !pt->revoked && im->handed_at < pt->oldest)
            pt->oldest = im->handed_at;
    }
    for (gt_part_t *pt = c->parts; pt; pt = pt->next) {
        char part[16];
        snprintf(part, sizeof(part), "%" PRId32, pt->partition);
        gt_metric_set(oldest_metric(), (double)(now - pt->oldest) / 1000.0, c->group_id, pt->topic,
                      part);
        int64_t lo = 0, hi = -1;
        if (rd_kafka_get_watermark_offsets(c->rk, pt->topic, pt->partition, &lo, &hi) != 0 ||
            hi < 0)
            continue;
        int64_t from = pt->acked >= 0 ? pt->acked : pt->base;
        if (from < 0) {
            /* Nothing handed out yet: the position is where the group's
             * committed offset (or auto.offset.reset) put us. */
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(l, pt->topic, pt->partition);
            from = rd_kafka_position(c->rk, l) == 0 ? l->elems[0].offset : -1;
            rd_kafka_topic_partition_list_destroy(l);
        }
        if (from < 0)
            from = lo;
        gt_metric_set(lag_metric(), (double)(hi > from ? hi - from : 0), c->group_id, pt->topic,
                      part);
    }
}

/* Unlinks pt; it is freed now or when its last message is done. */
static void part_revoke(gt_consumer_t *c, gt_part_t *pt)
{
    char part[16];
    snprintf(part, sizeof(part), "%" PRId32, pt->partition);
    gt_metric_remove(lag_metric(), c->group_id, pt->topic, part);
    gt_metric_remove(oldest_metric(), c->group_id, pt->topic, part);
    for (gt_part_t **pp = &c->parts; *pp; pp = &(*pp)->next) {
        if (*pp == pt) {
            *pp = pt->next;
            break;
        }
    }
    pt->revoked = 1;
    pt->next = NULL;
    pt->refs++;
    part_unref(pt);
}

/* Commits every assigned partition (or those in only) whose done prefix
 * advanced. Offsets are marked committed when the request is issued, so a
 * slow commit is not sent twice; a failure forgets the mark (see
 * consumer_on_commit) and the next round retries. COMMIT_REVOKE also sends
 * an offset already sent but not yet acknowledged, so that its answer tells
 * when the partition is safe to hand over (revoke_on_commit). Returns how many
 * partitions the commit carries (0: none, nothing will answer). */
static int consumer_commit(gt_consumer_t *c, const rd_kafka_topic_partition_list_t *only, int mode)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    rd_kafka_resp_err_t err;
    int n;

    for (gt_part_t *pt = c->parts; pt; pt = pt->next) {
        int64_t off;
        if (only && !rd_kafka_topic_partition_list_find(only, pt->topic, pt->partition))
            continue;
        off = gt_offsets_committable(pt->offs);
        if (off < 0 && mode == COMMIT_REVOKE && gt_offsets_committed(pt->offs) != pt->acked)
            off = gt_offsets_committed(pt->offs);
        if (off < 0)
            continue;
        rd_kafka_topic_partition_list_add(l, pt->topic, pt->partition)->offset = off;
        gt_offsets_mark_committed(pt->offs, off);
    }
    n = l->cnt;
    if (n > 0) {
        if (mode == COMMIT_REVOKE)
            err = rd_kafka_commit_queue(c->rk, l, c->cq, revoke_on_commit, (void *)c->revoke_seq);
        else
            err = rd_kafka_commit(c->rk, l, mode == COMMIT_ASYNC);
        if (err) {
            /* consumer_on_commit reports it (sync commits too). */
            gt_debug("kafka consumer: commit failed: %s", rd_kafka_err2str(err));
            for (int i = 0; i < l->cnt; i++) {
                gt_part_t *pt = part_find(c, l->elems[i].topic, l->elems[i].partition);
                if (pt)
                    gt_offsets_mark_committed(pt->offs, -1);
            }
            if (mode == COMMIT_REVOKE)
                n = 0; /* no answer will come */
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return n;
}

/* Served on the loop thread (main queue is forwarded to the consumer queue). */
static void consumer_on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    gt_consumer_t *c = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    if (err)
        gt_warn("kafka consumer: commit failed: %s", rd_kafka_err2str(err));
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &offsets->elems[i];
        gt_part_t *pt = part_find(c, e->topic, e->partition);
        if (!pt)
            continue;
        if (err || e->err)
            gt_offsets_mark_committed(pt->offs, -1);
        else if (e->offset > pt->acked)
            pt->acked = e->offset;
    }
}

/* The answer to a revoke's commit, served from the consumer queue on the loop
 * thread (its own callback: the configured one is not called for it). */
static void revoke_on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    gt_consumer_t *c = rd_kafka_opaque(rk);
    consumer_on_commit(rk, err, offsets, c);
    if (!c->revoking || !c->revoke_committing || (uintptr_t)opaque != c->revoke_seq)
        return; /* a late answer: that revoke was handed over already */
    gt_debug("kafka consumer: revoke commit answered (%s), handing %d partition(s) over",
             err ? rd_kafka_err2str(err) : "ok", c->revoking->cnt);
    rd_kafka_topic_partition_list_t *list = c->revoking;
    c->revoking = NULL;
    c->revoke_committing = 0;
    revoke_handover(c, list, c->revoke_coop);
    rd_kafka_topic_partition_list_destroy(list);
}

static void consumer_set_paused(gt_consumer_t *c, int pause)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(c->rk, &l) != RD_KAFKA_RESP_ERR_NO_ERROR || !l)
        return;
    for (int i = l->cnt - 1; !pause && i >= 0; i--) { /* revoking ones stay paused */
        gt_part_t *pt = part_find(c, l->elems[i].topic, l->elems[i].partition);
        if (pt && pt->revoking)
            rd_kafka_topic_partition_list_del_by_idx(l, i);
    }
    if (l->cnt > 0) {
        rd_kafka_resp_err_t err =
            pause ? rd_kafka_pause_partitions(c->rk, l) : rd_kafka_resume_partitions(c->rk, l);
        if (err)
            gt_warn("kafka consumer: %s failed: %s", pause ? "pause" : "resume",
                    rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Counts how revokes ended: at once (nothing in flight), after the work in
 * flight finished, or when the grace ran out (that work runs again). */
static void count_revoke(gt_consumer_t *c, const char *outcome)
{
    gt_metric_add(gt_metrics_counter("gantry_consumer_revokes_total",
                                     "Partition revokes by how they ended: immediate, after_work "
                                     "(waited for the messages in flight), grace_expired (handed "
                                     "over with messages in flight)",
                                     "group,outcome"),
                  1, c->group_id, outcome);
}

/* Gives the partitions in list up: forgets them, drops their backlog and
 * unassigns (librdkafka's rebalance waits for that). */
static void revoke_handover(gt_consumer_t *c, const rd_kafka_topic_partition_list_t *list, int coop)
{
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; i < list->cnt; i++) {
        gt_part_t *pt = part_find(c, list->elems[i].topic, list->elems[i].partition);
        if (pt)
            part_revoke(c, pt);
        backlog_drop(c, list->elems[i].topic, list->elems[i].partition);
    }
    if (coop)
        error = rd_kafka_incremental_unassign(c->rk, list);
    else
        aerr = rd_kafka_assign(c->rk, NULL);
    if (error) {
        gt_warn("kafka consumer: incremental unassign failed: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    if (aerr)
        gt_warn("kafka consumer: unassign failed: %s", rd_kafka_err2str(aerr));
}

/* Commits what is done on c->revoking, then hands those partitions over, so
 * that their next owner starts after what we finished. The commit is
 * asynchronous: the loop goes on and revoke_on_commit hands over when the
 * broker answers (revoke_check after REVOKE_COMMIT_TIMEOUT_MS without an
 * answer). sync is for shutdown, where blocking is allowed; a lost assignment
 * cannot be committed any more. */
#define REVOKE_COMMIT_TIMEOUT_MS 5000
static void revoke_commit(gt_consumer_t *c, int sync)
{
    rd_kafka_topic_partition_list_t *list = c->revoking;
    int lost = rd_kafka_assignment_lost(c->rk);
    if (!lost && !sync) {
        c->revoke_seq++;
        if (consumer_commit(c, list, COMMIT_REVOKE) > 0) {
            /* Nothing more of theirs is handed out while the answer is awaited. */
            for (int i = 0; i < list->cnt; i++) {
                gt_part_t *pt = part_find(c, list->elems[i].topic, list->elems[i].partition);
                if (pt)
                    pt->revoking = 1;
                backlog_drop(c, list->elems[i].topic, list->elems[i].partition);
            }
            rd_kafka_pause_partitions(c->rk, list);
            c->revoke_committing = 1;
            c->revoke_commit_deadline = uv_now(c->loop) + REVOKE_COMMIT_TIMEOUT_MS;
            return;
        }
    } else if (!lost) {
        consumer_commit(c, list, COMMIT_SYNC);
    }
    c->revoking = NULL;
    revoke_handover(c, list, c->revoke_coop);
    rd_kafka_topic_partition_list_destroy(list);
}

/* Messages handed out and not done on the partitions of list. */
static int revoke_busy(gt_consumer_t *c, const rd_kafka_topic_partition_list_t *list)
{
    int n = 0;
    for (int i = 0; i < list->cnt; i++) {
        gt_part_t *pt = part_find(c, list->elems[i].topic, list->elems[i].partition);
        n += pt ? pt->refs : 0;
    }
    return n;
}

/* Ends a waiting revoke once its messages are done, its grace is over, or
 * now is set (closing). */
static void revoke_check(gt_consumer_t *c, int now)
{
    if (!c->revoking)
        return;
    if (c->revoke_committing) {
        if (!now && uv_now(c->loop) < c->revoke_commit_deadline)
            return;
        /* When closing, librdkafka's close still waits for that commit. */
        if (!now)
            gt_warn("kafka consumer: no answer to the revoke's commit after %d ms, handing over",
                    REVOKE_COMMIT_TIMEOUT_MS);
        rd_kafka_topic_partition_list_t *list = c->revoking;
        c->revoking = NULL;
        c->revoke_committing = 0;
        revoke_handover(c, list, c->revoke_coop);
        rd_kafka_topic_partition_list_destroy(list);
        return;
    }
    int busy = revoke_busy(c, c->revoking);
    if (busy && !now && uv_now(c->loop) < c->revoke_deadline)
        return;
    if (busy)
        gt_warn("kafka consumer: handing over %d partition(s) with %d message(s) still in "
                "flight: their next owner runs them again",
                c->revoking->cnt, busy);
    else
        gt_info("kafka consumer: in-flight work on the revoked partitions done, handing them over");
    count_revoke(c, busy ? "grace_expired" : "after_work");
    revoke_commit(c, c->closing);
}

/* Runs inside rd_kafka_consumer_poll (loop thread) and inside
 * rd_kafka_consumer_close (gt_consumer_free). */
static void consumer_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                  rd_kafka_topic_partition_list_t *list, void *opaque)
{
    gt_consumer_t *c = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        gt_info("kafka consumer: assigned %d partitions", list->cnt);
        for (int i = 0; i < list->cnt; i++) {
            const char *t = list->elems[i].topic;
            int32_t part = list->elems[i].partition;
            if (!part_find(c, t, part) && !part_add(c, t, part))
                gt_error("kafka consumer: out of memory tracking %s [%" PRId32 "]", t, part);
        }
        if (coop)
            error = rd_kafka_incremental_assign(rk, list);
        else
            aerr = rd_kafka_assign(rk, list);
        /* librdkafka starts new partitions fetching; pause keeps its promise.
         * A partition we paused while revoking it keeps that pause in
         * librdkafka if it comes back to us: lift it. */
        if (list->cnt > 0) {
            if (c->rd_paused)
                rd_kafka_pause_partitions(rk, list);
            else
                rd_kafka_resume_partitions(rk, list);
        }
        break;

    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS: {
        int busy = revoke_busy(c, list);
        gt_info("kafka consumer: revoked %d partitions (%d message(s) in flight on them)",
                list->cnt, busy);
        if (c->revoking) {
            /* One revoke waits already (its rebalance failed under it): this
             * one is handed over now, with a commit nobody waits for. */
            count_revoke(c, "immediate");
            if (!rd_kafka_assignment_lost(rk))
                consumer_commit(c, list, COMMIT_ASYNC);
            revoke_handover(c, list, coop);
            break;
        }
        if (!busy || c->closing || c->revoke_grace_ms == 0 || rd_kafka_assignment_lost(rk)) {
            count_revoke(c, "immediate");
            c->revoking = rd_kafka_topic_partition_list_copy(list);
            c->revoke_coop = coop;
            revoke_commit(c, c->closing); /* closing: inside gt_consumer_free's thread */
            break;
        }
        /* Keep them while their work finishes: nothing more is handed out
         * from them, and librdkafka waits for our unassign (revoke_check). */
        for (int i = 0; i < list->cnt; i++) {
            gt_part_t *pt = part_find(c, list->elems[i].topic, list->elems[i].partition);
            if (pt)
                pt->revoking = 1;
            backlog_drop(c, list->elems[i].topic, list->elems[i].partition);
        }
        rd_kafka_pause_partitions(rk, list);
        c->revoking = rd_kafka_topic_partition_list_copy(list);
        c->revoke_coop = coop;
        c->revoke_deadline = uv_now(c->loop) + c->revoke_grace_ms;
        break;
    }

    default:
        gt_warn("kafka consumer: rebalance error: %s", rd_kafka_err2str(err));
        if (c->revoking) {
            rd_kafka_topic_partition_list_destroy(c->revoking);
            c->revoking = NULL;
            c->revoke_committing = 0;
        }
        while (c->parts)
            part_revoke(c, c->parts);
        backlog_drop(c, NULL, -1);
        aerr = rd_kafka_assign(rk, NULL);
        break;
    }
    if (error) {
        gt_warn("kafka consumer: incremental assignment failed: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    if (aerr)
        gt_warn("kafka consumer: assignment failed: %s", rd_kafka_err2str(aerr));
}

static void consumer_deliver(gt_consumer_t *c, rd_kafka_message_t *rkm)
{
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    gt_inmsg_t *im = malloc(sizeof(*im));
    gt_part_t *pt;

    if (!im) {
        /* Not tracked, so never committed past: it comes back after a restart. */
        gt_error("kafka consumer: out of memory, dropping %s [%" PRId32 "] @%" PRId64, topic,
                 rkm->partition, rkm->offset);
        rd_kafka_message_destroy(rkm);
        return;
    }
    pt = part_find(c, topic, rkm->partition);
    if (pt && pt->revoking) {
        /* Fetched before the pause; its next owner reads it (never tracked,
         * so never committed). */
        rd_kafka_message_destroy(rkm);
        free(im);
        return;
    }
    /* An offset not above the last tracked one (a re-fetch) is already
     * accounted for by its first copy: this copy only frees on done. */
    if (pt && gt_offsets_track(pt->offs, rkm->offset) < 0) {
        gt_debug("kafka consumer: untracked %s [%" PRId32 "] @%" PRId64, topic, rkm->partition,
                 rkm->offset);
        pt = NULL;
    }
    if (pt) {
        pt->refs++;
        if (pt->base < 0)
            pt->base = rkm->offset;
    }

    im->handed_at = uv_now(c->loop);
    im->msg.topic = topic;
    im->msg.partition = rkm->partition;
    im->msg.offset = rkm->offset;
    im->msg.key = rkm->key;
    im->msg.key_len = rkm->key_len;
    im->msg.value = rkm->payload;
    im->msg.len = rkm->len;
    im->msg.timestamp_ms = rd_kafka_message_timestamp(rkm, NULL);
    im->msg.rkm = rkm;
    im->msg.priv = pt;
    im->prev = NULL;
    im->next = c->msgs;
    if (c->msgs)
        c->msgs->prev = im;
    c->msgs = im;
    c->in_flight++;
    c->cb(c, &im->msg, c->arg);
}

/* Hands out up to max_per_wakeup messages. rd_kafka_consumer_poll also runs
 * the rebalance, commit and error callbacks. When the cap stops us with
 * messages left, no new wake-up byte will come (the queue never went empty),
 * so the idle handle carries on at the next loop iteration. */
static void consumer_serve(gt_consumer_t *c)
{
    int n = 0;

    while (!c->closing) {
        rd_kafka_message_t *rkm;
        if (n >= c->max_per_wakeup) {
            uv_idle_start(&c->idle, consumer_on_idle);
            return;
        }
        if (!c->held && c->bl_len > 0) {
            rkm = c->bl[c->bl_head];
            c->bl_head = (c->bl_head + 1) % c->bl_cap;
            c->bl_len--;
            backlog_maybe_refill(c);
            consumer_deliver(c, rkm);
            n++;
            continue;
        }
        rkm = rd_kafka_consumer_poll(c->rk, 0);
        if (!rkm)
            break;
        if (!rkm->err && c->held) {
            backlog_push(c, rkm);
            continue;
        }
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                gt_warn("kafka consumer: %s [%" PRId32 "]: %s",
                        rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "-", rkm->partition,
                        rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        consumer_deliver(c, rkm);
        n++;
    }
    if (c->handles_open)
        uv_idle_stop(&c->idle);
}

/* Lets librdkafka fetch again once the backlog that paused it is half gone:
 * a consumer held and let go on every task at its in-flight limit would
 * otherwise pause and resume librdkafka (an op to its threads and a purge of
 * what it prefetched) on every message. librdkafka resumes from the position
 * after the last message it handed us, i.e. after the backlog. */
static void backlog_maybe_refill(gt_consumer_t *c)
{
    if (c->rd_paused && !c->held && c->bl_len <= (size_t)c->max_backlog / 2) {
        c->rd_paused = 0;
        consumer_set_paused(c, 0);
    }
}

/* Keeps a message fetched while held. A full backlog pauses librdkafka; the
 * ring still grows for what was already on its way. */
static void backlog_push(gt_consumer_t *c, rd_kafka_message_t *rkm)
{
    if (c->bl_len == c->bl_cap) {
        size_t cap = c->bl_cap ? c->bl_cap * 2 : 256;
        rd_kafka_message_t **bl = malloc(cap * sizeof(*bl));
        if (!bl) {
            /* Never delivered, so never committed past: it comes back later. */
            gt_error("kafka consumer: out of memory, dropping %s [%" PRId32 "] @%" PRId64,
                     rd_kafka_topic_name(rkm->rkt), rkm->partition, rkm->offset);
            rd_kafka_message_destroy(rkm);
            return;
        }
        for (size_t i = 0; i < c->bl_len; i++)
            bl[i] = c->bl[(c->bl_head + i) % c->bl_cap];
        free(c->bl);
        c->bl = bl;
        c->bl_cap = cap;
        c->bl_head = 0;
    }
    c->bl[(c->bl_head + c->bl_len) % c->bl_cap] = rkm;
    c->bl_len++;
    if (!c->rd_paused && c->bl_len >= (size_t)c->max_backlog) {
        c->rd_paused = 1;
        consumer_set_paused(c, 1);
    }
}

/* Frees the held messages of one partition (topic NULL: of all). They were
 * never delivered, so their offsets were never committed: the partition's
 * next owner fetches them. */
static void backlog_drop(gt_consumer_t *c, const char *topic, int32_t partition)
{
    size_t kept = 0;
    for (size_t i = 0; i < c->bl_len; i++) {
        rd_kafka_message_t *m = c->bl[(c->bl_head + i) % c->bl_cap];
        if (!topic ||
            (m->partition == partition && strcmp(rd_kafka_topic_name(m->rkt), topic) == 0))
            rd_kafka_message_destroy(m);
        else
            c->bl[(c->bl_head + kept++) % c->bl_cap] = m;
    }
    c->bl_len = kept;
}

static void consumer_on_poll(uv_poll_t *h, int status, int events)
{
    gt_consumer_t *c = h->data;
    (void)status;
    (void)events;
    gt_kafka_wake_drain(c->wake[0]);
    consumer_serve(c);
}

static void consumer_on_idle(uv_idle_t *h)
{
    consumer_serve(h->data);
}

/* Commits, and polls too: an idle consumer must still call poll within
 * max.poll.interval.ms or librdkafka leaves the group. */
static void consumer_on_timer(uv_timer_t *h)
{
    gt_consumer_t *c = h->data;
    consumer_commit(c, NULL, COMMIT_ASYNC);
    revoke_check(c, 0);
    consumer_serve(c);
    uint64_t now = uv_now(c->loop);
    if (now >= c->lag_at) {
        c->lag_at = now + 1000;
        consumer_report_lag(c);
    }
}

gt_consumer_t *gt_consumer_new(uv_loop_t *loop, const gt_config_t *cfg,
                               const gt_consumer_opts_t *opts, char *err, size_t errlen)
{
    static const char *const forced[] = {"group.id", "enable.auto.commit",
                                         "enable.auto.offset.store", NULL};
    gt_consumer_t *c = NULL;
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics = NULL;
    rd_kafka_resp_err_t rerr;
    char why[512];

    if (!cfg || !cfg->bootstrap_servers) {
        snprintf(err, errlen, "kafka: no bootstrap servers");
        return NULL;
    }
    if (!opts || !opts->group_id || !opts->topics || !opts->topics[0] || !opts->cb) {
        snprintf(err, errlen, "kafka consumer: group_id, topics and cb are required");
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->loop = loop;
    c->wake[0] = c->wake[1] = -1;
    c->cb = opts->cb;
    c->arg = opts->arg;
    c->max_per_wakeup = opts->max_per_wakeup > 0 ? opts->max_per_wakeup : 500;
    c->max_backlog = opts->max_backlog > 0 ? opts->max_backlog : 1000;
    snprintf(c->group_id, sizeof(c->group_id), "%s", opts->group_id);
    c->commit_interval_ms = opts->commit_interval_ms > 0  ? (uint64_t)opts->commit_interval_ms
                            : cfg->commit_interval_ms > 0 ? (uint64_t)cfg->commit_interval_ms
                                                          : 200;
    c->revoke_grace_ms = cfg->kafka_revoke_grace_ms > 0 ? (uint64_t)cfg->kafka_revoke_grace_ms : 0;
    if (gt_kafka_wake_open(c->wake, err, errlen) < 0)
        goto fail;

    char session_ms[24]; /* the value lib/config.c checks lease TTLs against */
    snprintf(session_ms, sizeof(session_ms), "%d", GT_KAFKA_SESSION_TIMEOUT_MS);
    conf = rd_kafka_conf_new();
    if (gt_kafka_conf_set(conf, "bootstrap.servers", cfg->bootstrap_servers, err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "session.timeout.ms", session_ms, err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "heartbeat.interval.ms", "1000", err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "max.poll.interval.ms", "300000", err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "partition.assignment.strategy", "range,roundrobin", err, errlen) <
            0 ||
        gt_kafka_conf_set(conf, "enable.partition.eof", "false", err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "auto.offset.reset",
                          opts->auto_offset_reset ? opts->auto_offset_reset : "earliest", err,
                          errlen) < 0 ||
        gt_kafka_conf_apply(conf, cfg->kafka_props, forced, err, errlen) < 0 ||
        gt_kafka_conf_apply(conf, cfg->kafka_consumer_props, forced, err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "group.id", opts->group_id, err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "enable.auto.commit", "false", err, errlen) < 0 ||
        gt_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, errlen) < 0)
        goto fail;
    /* Static membership (KIP-345): a member that restarts under the same id
     * within session.timeout.ms takes its partitions back, no rebalance. */
    if (cfg->kafka_static_membership && opts->instance_id && *opts->instance_id &&
        gt_kafka_conf_set(conf, "group.instance.id", opts->instance_id, err, errlen) < 0)
        goto fail;
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, consumer_on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, consumer_on_commit);
    rd_kafka_conf_set_error_cb(conf, gt_kafka_on_error);
    rd_kafka_conf_set_log_cb(conf, gt_kafka_on_log);

    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!c->rk) {
        snprintf(err, errlen, "kafka consumer: %s", why);
        goto fail;
    }
    conf = NULL; /* owned by rk now */

    /* The main queue (errors, commit results) now feeds the consumer queue,
     * so one io event covers both. */
    rd_kafka_poll_set_consumer(c->rk);
    c->cq = rd_kafka_queue_get_consumer(c->rk);
    rd_kafka_queue_io_event_enable(c->cq, c->wake[1], "1", 1);

    topics = rd_kafka_topic_partition_list_new(4);
    for (const char *const *t = opts->topics; *t; t++)
        rd_kafka_topic_partition_list_add(topics, *t, RD_KAFKA_PARTITION_UA);
    rerr = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (rerr) {
        snprintf(err, errlen, "kafka subscribe: %s", rd_kafka_err2str(rerr));
        goto fail;
    }

    if (uv_poll_init(loop, &c->poll, c->wake[0]) < 0) {
        snprintf(err, errlen, "uv_poll_init failed");
        goto fail;
    }
    /* From here on nothing fails: the handles need a loop run to close. */
    uv_idle_init(loop, &c->idle);
    uv_timer_init(loop, &c->timer);
    c->poll.data = c->idle.data = c->timer.data = c;
    c->handles_open = 1;
    uv_poll_start(&c->poll, UV_READABLE, consumer_on_poll);
    uv_timer_start(&c->timer, consumer_on_timer, c->commit_interval_ms, c->commit_interval_ms);
    /* Serve whatever was queued before the io event was enabled. */
    uv_idle_start(&c->idle, consumer_on_idle);
    return c;

fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (c->cq) {
        rd_kafka_queue_io_event_enable(c->cq, -1, NULL, 0);
        rd_kafka_queue_destroy(c->cq);
    }
    if (c->rk) {
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
    }
    gt_kafka_wake_close(c->wake);
    free(c);
    return NULL;
}

void gt_consumer_done(gt_consumer_t *c, gt_msg_t *msg)
{
    gt_inmsg_t *im = GT_CONTAINER_OF(msg, gt_inmsg_t, msg);
    gt_part_t *pt = msg->priv;

    if (im->prev)
        im->prev->next = im->next;
    else
        c->msgs = im->next;
    if (im->next)
        im->next->prev = im->prev;
    c->in_flight--;
    if (pt) {
        if (!pt->revoked)
            gt_offsets_done(pt->offs, msg->offset);
        part_unref(pt);
    }
    rd_kafka_message_destroy(msg->rkm);
    free(im);
}

const char *gt_msg_header(const gt_msg_t *msg, const char *name, char *buf, size_t len)
{
    rd_kafka_headers_t *hdrs;
    const void *val;
    size_t size;

    if (rd_kafka_message_headers(msg->rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    if (rd_kafka_header_get_last(hdrs, name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    if (!val)
        size = 0;
    if (size >= len)
        return NULL;
    if (size > 0)
        memcpy(buf, val, size);
    buf[size] = '\0';
    return buf;
}

void gt_consumer_pause(gt_consumer_t *c)
{
    c->held = 1;
}

void gt_consumer_resume(gt_consumer_t *c)
{
    if (!c->held)
        return;
    c->held = 0;
    backlog_maybe_refill(c);
    /* Messages may be waiting that no new wake-up byte will announce. */
    if (c->handles_open && !c->closing)
        uv_idle_start(&c->idle, consumer_on_idle);
}

int gt_consumer_owns(const gt_msg_t *msg)
{
    const gt_part_t *pt = msg->priv;
    return !pt || !pt->revoked;
}

int gt_consumer_in_flight(const gt_consumer_t *c)
{
    return c->in_flight;
}

int gt_consumer_revoking(const gt_consumer_t *c)
{
    return c->revoking ? c->revoking->cnt : 0;
}

void gt_consumer_close_handles(gt_consumer_t *c)
{
    if (!c || c->closing)
        return;
    revoke_check(c, 1); /* what is in flight now is handed back in any case */
    c->closing = 1;
    if (!c->handles_open)
        return;
    uv_poll_stop(&c->poll);
    uv_idle_stop(&c->idle);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->poll, NULL);
    uv_close((uv_handle_t *)&c->idle, NULL);
    uv_close((uv_handle_t *)&c->timer, NULL);
}

typedef struct closer {
    gt_consumer_t *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} closer_t;

/* Commits and leaves the group: both block, for as long as a rebalance the
 * coordinator is running takes. */
static void *consumer_close_thread(void *arg)
{
    closer_t *cl = arg;
    consumer_commit(cl->c, NULL, COMMIT_SYNC);
    rd_kafka_consumer_close(cl->c->rk); /* the revoke callback runs from here */
    pthread_mutex_lock(&cl->mu);
    cl->done = 1;
    pthread_cond_signal(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
    return NULL;
}

void gt_consumer_free(gt_consumer_t *c)
{
    if (!c)
        return;
    c->closing = 1; /* from here on blocking is allowed: a waiting revoke commits synchronously */
    revoke_check(c, 1);
    rd_kafka_queue_io_event_enable(c->cq, -1, NULL, 0);
    rd_kafka_queue_destroy(c->cq);
    /* Messages never done are released uncommitted: they will be redelivered. */
    backlog_drop(c, NULL, -1);
    free(c->bl);
    c->bl = NULL;
    while (c->msgs) {
        gt_inmsg_t *im = c->msgs;
        c->msgs = im->next;
        if (im->msg.priv)
            part_unref(im->msg.priv);
        rd_kafka_message_destroy(im->msg.rkm);
        free(im);
        c->in_flight--;
    }
    /* Bounded: a process must stop even when the group is stuck rebalancing.
     * Past the deadline the group's session timeout hands the partitions on,
     * and what was not committed is redelivered (processing is idempotent). */
    closer_t local = {0}, *heap = calloc(1, sizeof(*heap));
    closer_t *cl = heap ? heap : &local; /* a detached closer must outlive this frame */
    cl->c = c;
    pthread_mutex_init(&cl->mu, NULL);
    pthread_cond_init(&cl->cv, NULL);
    pthread_t th;
    int finished = 1;
    if (!heap || pthread_create(&th, NULL, consumer_close_thread, heap) != 0) {
        consumer_close_thread(cl);
    } else {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += CONSUMER_CLOSE_TIMEOUT_S;
        pthread_mutex_lock(&cl->mu);
        while (!cl->done)
            if (pthread_cond_timedwait(&cl->cv, &cl->mu, &until) != 0)
                break;
        finished = cl->done;
        pthread_mutex_unlock(&cl->mu);
        if (finished) {
            pthread_join(th, NULL);
        } else {
            gt_warn("kafka consumer: leaving the group took over %d s; exiting without it",
                    CONSUMER_CLOSE_TIMEOUT_S);
            pthread_detach(th);
            return; /* c and the closer stay with the thread until the process exits */
        }
    }
    pthread_mutex_destroy(&cl->mu);
    pthread_cond_destroy(&cl->cv);
    free(heap);
    while (c->parts)
        part_revoke(c, c->parts);
    rd_kafka_destroy(c->rk);
    gt_kafka_wake_close(c->wake);
    free(c);
}
