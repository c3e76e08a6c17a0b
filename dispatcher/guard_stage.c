/* guard_stage.c - what the guard's two stages share: its gantry.events
 * decisions (types and counts, never values) and the text moderation reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard_stage.h"
#include "log.h"
#include "message.h"

void gt_guard_emit(gt_dispatcher_t *d, const char *type, const char *request_id,
                   const char *tenant_id, json_t *data)
{
    json_object_set_new(data, "request_id", json_string(request_id));
    json_object_set_new(data, "tenant_id", json_string(tenant_id));
    /* One decision of each type per request: a redelivered request repeats
     * its event under the same id, which consumers dedupe on. */
    char event_id[512];
    snprintf(event_id, sizeof(event_id), "%s:%s", request_id, type);
    json_t *ev = gt_event_build(type, d->id, event_id, data);
    if (!ev)
        return;
    /* Sent until acknowledged (a detached effect), like every produce. */
    if (gt_effect_send_json(d->effects, d->cfg->topics.events, request_id, ev, NULL, 0) != 0)
        gt_log(GT_LOG_WARN, &(gt_log_ctx_t){.request_id = request_id},
               "event %s not queued: out of memory", type);
    json_decref(ev);
}

void gt_guard_collect_text(const json_t *v, char **buf, size_t *len, size_t *cap)
{
    if (json_is_string(v)) {
        size_t n = json_string_length(v);
        if (*len + n + 2 > *cap) {
            size_t c = (*len + n + 2) * 2;
            char *p = realloc(*buf, c);
            if (!p)
                return;
            *buf = p;
            *cap = c;
        }
        memcpy(*buf + *len, json_string_value(v), n);
        *len += n;
        (*buf)[(*len)++] = '\n';
        (*buf)[*len] = 0;
        return;
    }
    size_t i;
    json_t *e;
    const char *k;
    if (json_is_array(v))
        json_array_foreach (v, i, e)
            gt_guard_collect_text(e, buf, len, cap);
    else if (json_is_object(v))
        json_object_foreach ((json_t *)v, k, e)
            gt_guard_collect_text(e, buf, len, cap);
}
