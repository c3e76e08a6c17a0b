/* deadletter.c - the dispatcher's dead letters: a message that cannot be
 * processed goes to the DLQ with its original bytes and a reason, and its
 * offset is done only once that entry is durable. */
#include <stdlib.h>
#include <string.h>

#include "dispatcher.h"
#include "log.h"
#include "message.h"

static void on_dead_letter_delivered(int err, const char *errstr, void *opaque);

typedef struct dead_letter {
    gt_dispatcher_t *d;
    gt_consumer_t *c;
    gt_msg_t *msg;
    char *stage, *code, *message, *request_id;
} dead_letter_t;

static void dead_letter_send(dead_letter_t *dl)
{
    if (gt_dlq_send(dl->d->producer, dl->d->cfg, dl->msg, dl->stage, dl->code, dl->message,
                    dl->request_id, on_dead_letter_delivered, dl) != 0) {
        gt_error("cannot queue a DLQ entry for %s[%d]@%lld", dl->msg->topic,
                 (int)dl->msg->partition, (long long)dl->msg->offset);
        /* The offset stays undone: the message is redelivered after a restart. */
        free(dl->stage);
        free(dl->code);
        free(dl->message);
        free(dl->request_id);
        free(dl);
    }
}

static void on_dead_letter_delivered(int err, const char *errstr, void *opaque)
{
    dead_letter_t *dl = opaque;
    if (err && dl->d->closing) {
        /* Stopping: the offset stays undone, the message is redelivered. */
        gt_warn("DLQ delivery failed while stopping (%s): the message is redelivered", errstr);
        free(dl->stage);
        free(dl->code);
        free(dl->message);
        free(dl->request_id);
        free(dl);
        return;
    }
    if (err) {
        gt_warn("DLQ delivery failed, re-sending: %s", errstr);
        dead_letter_send(dl);
        return;
    }
    dl->d->dead_letters++;
    gt_stats_dead_letter(dl->code);
    gt_consumer_done(dl->c, dl->msg);
    free(dl->stage);
    free(dl->code);
    free(dl->message);
    free(dl->request_id);
    free(dl);
}

void gt_dispatcher_dead_letter(gt_dispatcher_t *d, gt_consumer_t *c, gt_msg_t *msg,
                               const char *stage, const char *code, const char *message,
                               const char *request_id)
{
    if (d->closing) {
        /* Past the drain, failures come from the shutdown itself (queries
         * failed as "closed"): not the message's fault, so no dead letter. */
        gt_log(GT_LOG_WARN, &(gt_log_ctx_t){.request_id = request_id},
               "%s[%d]@%lld left undone at %s while stopping (%s): it is redelivered",
               msg->topic, (int)msg->partition, (long long)msg->offset, stage, message);
        return;
    }
    gt_log(GT_LOG_WARN, &(gt_log_ctx_t){.request_id = request_id},
           "dead letter from %s[%d]@%lld at %s: %s", msg->topic, (int)msg->partition,
           (long long)msg->offset, stage, code);
    dead_letter_t *dl = calloc(1, sizeof(*dl));
    dl->d = d;
    dl->c = c;
    dl->msg = msg;
    dl->stage = strdup(stage);
    dl->code = strdup(code);
    dl->message = strdup(message);
    dl->request_id = request_id ? strdup(request_id) : NULL;
    dead_letter_send(dl);
}
