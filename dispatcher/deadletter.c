/* deadletter.c - the dispatcher's dead letters: a message that cannot be
 * processed goes to the DLQ with its original bytes and a reason, and its
 * offset is done only once that entry is durable. */
#include <stdlib.h>
#include <string.h>

#include "dispatcher.h"
#include "log.h"
#include "message.h"

typedef struct dead_letter {
    gt_dispatcher_t *d;
    gt_consumer_t *c;
    gt_msg_t *msg;
    char *code;
} dead_letter_t;

static void dead_letter_free(dead_letter_t *dl)
{
    free(dl->code);
    free(dl);
}

static void on_dead_letter_durable(void *arg)
{
    dead_letter_t *dl = arg;
    dl->d->dead_letters++;
    gt_stats_dead_letter(dl->code);
    gt_consumer_done(dl->c, dl->msg);
    dead_letter_free(dl);
}

/* err 0: stopping. Else the entry itself cannot be produced, which
 * gt_dlq_build's size limit rules out: the message stays undone. */
static void on_dead_letter_failed(const char *topic, int err, const char *reason, void *arg)
{
    dead_letter_t *dl = arg;
    if (err)
        gt_error("cannot produce the DLQ entry of %s[%d]@%lld to %s: %s", dl->msg->topic,
                 (int)dl->msg->partition, (long long)dl->msg->offset, topic, reason);
    dead_letter_free(dl);
}

void gt_dispatcher_dead_letter(gt_dispatcher_t *d, gt_consumer_t *c, gt_msg_t *msg,
                               const char *stage, const char *code, const char *message,
                               const char *request_id)
{
    if (d->closing) {
        /* Past the drain, failures come from the shutdown itself (queries
         * failed as "closed"): not the message's fault, so no dead letter. */
        gt_log(GT_LOG_WARN, &(gt_log_ctx_t){.request_id = request_id},
               "%s[%d]@%lld left undone at %s while stopping (%s): it is redelivered", msg->topic,
               (int)msg->partition, (long long)msg->offset, stage, message);
        return;
    }
    gt_log(GT_LOG_WARN, &(gt_log_ctx_t){.request_id = request_id},
           "dead letter from %s[%d]@%lld at %s: %s", msg->topic, (int)msg->partition,
           (long long)msg->offset, stage, code);
    dead_letter_t *dl = calloc(1, sizeof(*dl));
    gt_effect_t *e =
        dl ? gt_effect_new(d->effects, on_dead_letter_durable, on_dead_letter_failed, dl) : NULL;
    if (dl) {
        dl->d = d;
        dl->c = c;
        dl->msg = msg;
        dl->code = strdup(code);
    }
    if (!e || !dl->code || gt_dlq_send(e, d->cfg, msg, stage, code, message, request_id) != 0) {
        /* Out of memory: the offset stays undone, the message is redelivered. */
        gt_error("cannot build a DLQ entry for %s[%d]@%lld", msg->topic, (int)msg->partition,
                 (long long)msg->offset);
        if (e)
            gt_effect_abandon(e);
        if (dl)
            dead_letter_free(dl);
        return;
    }
    gt_effect_seal(e);
}
