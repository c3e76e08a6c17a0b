/* providers.c - the dispatcher's view of provider health, fed by the workers'
 * breaker.* events on gantry.events, so routing avoids a model whose
 * provider's breaker is open (the task goes to the model's first healthy
 * fallback instead). Each worker has its own breaker: the latest event about a
 * provider wins, and an open breaker counts as healthy again once its recovery
 * time has passed (a worker's half-open trial needs traffic to happen). */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dispatcher.h"
#include "log.h"

struct gt_provider_health {
    json_t *down_until; /* provider -> mono ms until which it is avoided */
};

gt_provider_health_t *gt_provider_health_new(void)
{
    gt_provider_health_t *h = calloc(1, sizeof(*h));
    if (h && !(h->down_until = json_object())) {
        free(h);
        h = NULL;
    }
    return h;
}

void gt_provider_health_event(gt_provider_health_t *h, const char *type, const json_t *data)
{
    const char *provider = json_string_value(json_object_get(data, "provider"));
    if (!h || !type || !provider)
        return;
    if (strcmp(type, "breaker.opened") == 0) {
        json_t *rec = json_object_get(data, "recovery_ms");
        int64_t ms = json_is_integer(rec) ? (int64_t)json_integer_value(rec) : 60000;
        json_object_set_new(h->down_until, provider, json_integer(gt_clock_mono_ms() + ms));
        gt_info("provider %s: breaker open at a worker; routing avoids it for %lld ms", provider,
                (long long)ms);
    } else if (strcmp(type, "breaker.closed") == 0 || strcmp(type, "breaker.half_open") == 0) {
        if (json_object_get(h->down_until, provider))
            gt_info("provider %s: %s; routing uses it again", provider, type + 8);
        json_object_del(h->down_until, provider);
    }
}

int gt_provider_health_down(const gt_provider_health_t *h, const char *provider)
{
    json_t *until = h && provider ? json_object_get(h->down_until, provider) : NULL;
    return until && json_integer_value(until) > gt_clock_mono_ms();
}

const gt_model_t *gt_provider_health_route(const gt_provider_health_t *h, const gt_config_t *cfg,
                                           const gt_model_t *m)
{
    if (!h || !m || !gt_provider_health_down(h, m->provider))
        return m;
    for (size_t i = 0; i < m->n_fallbacks; i++) {
        const gt_model_t *f = gt_config_model(cfg, m->fallbacks[i]);
        if (f && !gt_provider_health_down(h, f->provider))
            return f;
    }
    return m; /* nothing healthier: the worker's own breaker decides */
}

void gt_provider_health_free(gt_provider_health_t *h)
{
    if (!h)
        return;
    json_decref(h->down_until);
    free(h);
}
