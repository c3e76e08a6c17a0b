/* reaper.c - the lease reaper: allocations are leases held by workers that
 * heartbeat on gantry.events. An allocation whose holder has been silent for
 * lease_ttl_ms (a worker killed mid-task) is released here, so nothing stays
 * allocated after a crash. HostedAI lists allocations with the labels the
 * worker set at allocation (GET /v1/allocations). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dispatcher.h"
#include "log.h"
#include "message.h"

struct gt_reaper {
    gt_dispatcher_t *d;
    gt_consumer_t *consumer;
    gt_http_t *http;
    uv_timer_t timer;
    json_t *last_seen;     /* holder -> monotonic ms of its last heartbeat (-1: stopped) */
    int64_t started_ms;
    long reaped;
};

typedef struct reap_call {
    gt_reaper_t *r;
    const gt_pool_t *pool;
    char *allocation_id;
    char *holder;
} reap_call_t;

static void auth_headers(const gt_pool_t *pool, char *auth, size_t len, const char *hdrs[3])
{
    snprintf(auth, len, "Authorization: Bearer %s", pool->api_key);
    hdrs[0] = auth;
    hdrs[1] = "Content-Type: application/json";
    hdrs[2] = NULL;
}

static void on_released(const gt_http_response_t *resp, void *arg)
{
    reap_call_t *rc = arg;
    gt_reaper_t *r = rc->r;
    if (resp->status == 204 || resp->status == 200 || resp->status == 404) {
        r->reaped++;
        gt_stats_reaped(rc->pool->name);
        gt_warn("reaped allocation %s of silent holder %s in pool %s", rc->allocation_id,
                rc->holder, rc->pool->name);
        json_t *ev = gt_event_build("allocation.reaped", r->d->id, NULL,
                                    json_pack("{s:s, s:s, s:s}", "allocation_id",
                                              rc->allocation_id, "pool", rc->pool->name,
                                              "holder", rc->holder));
        if (ev)
            gt_message_send(r->d->producer, r->d->cfg->topics.events, rc->allocation_id, ev,
                            NULL, 0, NULL, NULL);
        json_decref(ev);
    } else if (resp->curl_code != 42 /* aborted at shutdown */) {
        gt_warn("releasing allocation %s failed (status %ld): retried next round",
                rc->allocation_id, resp->status);
    }
    free(rc->allocation_id);
    free(rc->holder);
    free(rc);
}

static int holder_dead(gt_reaper_t *r, const char *holder, int64_t age_ms, int64_t now)
{
    int64_t ttl = r->d->cfg->lease_ttl_ms;
    json_t *seen = json_object_get(r->last_seen, holder);
    if (seen && json_integer_value(seen) < 0)
        return 1; /* said it stopped, yet holds something */
    if (age_ms < ttl)
        return 0; /* young: its holder's heartbeat may not have reached us yet */
    if (seen)
        return now - json_integer_value(seen) > ttl;
    return now - r->started_ms > ttl; /* never heard of it in a whole lease */
}

static void on_listed(const gt_http_response_t *resp, void *arg)
{
    reap_call_t *lc = arg;
    gt_reaper_t *r = lc->r;
    const gt_pool_t *pool = lc->pool;
    free(lc);
    if (resp->status != 200) {
        if (resp->curl_code != 42)
            gt_debug("listing allocations of pool %s failed (status %ld)", pool->name,
                     resp->status);
        return;
    }
    json_t *doc = json_loadb(resp->body, resp->body_len, 0, NULL);
    json_t *list = json_object_get(doc, "allocations");
    int64_t now = gt_clock_mono_ms();
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) {
        const char *id = json_string_value(json_object_get(a, "allocation_id"));
        const char *holder =
            json_string_value(json_object_get(json_object_get(a, "labels"), "holder"));
        int64_t age = json_integer_value(json_object_get(a, "age_ms"));
        if (!id || !holder || !holder_dead(r, holder, age, now))
            continue;
        reap_call_t *rc = calloc(1, sizeof(*rc));
        rc->r = r;
        rc->pool = pool;
        rc->allocation_id = strdup(id);
        rc->holder = strdup(holder);
        char url[1024], auth[1024];
        const char *hdrs[3];
        snprintf(url, sizeof(url), "%s/v1/allocate/%s", pool->endpoint, id);
        auth_headers(pool, auth, sizeof(auth), hdrs);
        if (gt_http_request(r->http, "DELETE", url, hdrs, NULL, 0,
                            r->d->cfg->release_timeout_ms, on_released, rc) != 0) {
            free(rc->allocation_id);
            free(rc->holder);
            free(rc);
        }
    }
    json_decref(doc);
}

static void on_tick(uv_timer_t *t)
{
    gt_reaper_t *r = t->data;
    const gt_config_t *cfg = r->d->cfg;
    for (size_t i = 0; i < cfg->n_pools; i++) {
        const gt_pool_t *pool = &cfg->pools[i];
        reap_call_t *lc = calloc(1, sizeof(*lc));
        lc->r = r;
        lc->pool = pool;
        char url[1024], auth[1024];
        const char *hdrs[3];
        snprintf(url, sizeof(url), "%s/v1/allocations", pool->endpoint);
        auth_headers(pool, auth, sizeof(auth), hdrs);
        if (gt_http_request(r->http, "GET", url, hdrs, NULL, 0, cfg->release_timeout_ms,
                            on_listed, lc) != 0)
            free(lc);
    }
}

static void on_event(gt_consumer_t *c, gt_msg_t *msg, void *arg)
{
    gt_reaper_t *r = arg;
    json_t *ev = msg->value ? json_loadb(msg->value, msg->len, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *source = json_string_value(json_object_get(ev, "source"));
    if (type && source) {
        if (strcmp(type, "worker.heartbeat") == 0)
            json_object_set_new(r->last_seen, source, json_integer(gt_clock_mono_ms()));
        else if (strcmp(type, "worker.stopped") == 0)
            json_object_set_new(r->last_seen, source, json_integer(-1));
        else if (strncmp(type, "breaker.", 8) == 0)
            gt_provider_health_event(r->d->providers, type, json_object_get(ev, "data"));
    }
    json_decref(ev);
    gt_consumer_done(c, msg);
}

gt_reaper_t *gt_reaper_new(gt_dispatcher_t *d, char *err, size_t errlen)
{
    gt_reaper_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->d = d;
    r->started_ms = gt_clock_mono_ms();
    r->last_seen = json_object();
    r->http = gt_http_new(d->loop);
    /* Every reaper must see every heartbeat: a group of its own, from now on. */
    char group[256];
    snprintf(group, sizeof(group), "gantry-reaper-%s", d->id);
    const char *topics[] = {d->cfg->topics.events, NULL};
    gt_consumer_opts_t opts = {.group_id = group,
                               .topics = topics,
                               .cb = on_event,
                               .arg = r,
                               .auto_offset_reset = "latest",
                               .commit_interval_ms = 5000};
    r->consumer = gt_consumer_new(d->loop, d->cfg, &opts, err, errlen);
    if (!r->consumer || !r->http) {
        if (r->http)
            gt_http_free(r->http);
        json_decref(r->last_seen);
        free(r);
        return NULL;
    }
    d->providers = gt_provider_health_new(); /* NULL (out of memory): routing ignores health */
    uv_timer_init(d->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_tick, (uint64_t)d->cfg->reaper_interval_ms,
                   (uint64_t)d->cfg->reaper_interval_ms);
    return r;
}

void gt_reaper_close(gt_reaper_t *r)
{
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, NULL);
    gt_consumer_close_handles(r->consumer);
    gt_http_free(r->http);
    r->http = NULL;
}

void gt_reaper_free(gt_reaper_t *r)
{
    gt_provider_health_free(r->d->providers);
    r->d->providers = NULL;
    gt_consumer_free(r->consumer);
    json_decref(r->last_seen);
    free(r);
}
