/* reaper.c - the lease reaper: every HostedAI allocation is a lease that some
 * live worker incarnation must claim in its heartbeats; what none claims is released.
 *
 * Workers heartbeat on gantry.events with their incarnation (random per process
 * start, beside the configured --id), the allocation ids that incarnation holds
 * and the labels of its allocate attempts in flight. HostedAI lists allocations
 * with the labels the worker set (GET /v1/allocations: holder, incarnation,
 * attempt). An allocation older than two heartbeats is released when its
 * incarnation stopped, has been silent for lease_ttl_ms, was never heard of, or
 * is alive but no longer claims it in a heartbeat made after it existed (an
 * allocate answered after its task gave up). One claimed by a live incarnation
 * is never touched.
 *
 * Silence means something only while the reaper hears: it sends itself a probe
 * on gantry.events every round, and judges nothing until its own probes have
 * been coming back for a full lease_ttl_ms (a restarted reaper whose consumer
 * is not assigned yet, or a broker outage, is deaf, not a witness of deaths). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dispatcher.h"
#include "json_text.h"
#include "log.h"
#include "router.h"
#include "message.h"

/* Another dispatcher's in-flight snapshot counts for this many rounds. */
#define ROUTING_FRESH_ROUNDS 3
/* Incarnations silent this many lease TTLs are forgotten (memory stays bounded). */
#define REAPER_FORGET_TTLS 10

struct gt_reaper {
    gt_dispatcher_t *d;
    gt_consumer_t *consumer;
    gt_http_t *http;
    uv_timer_t timer;
    json_t *incs;      /* incarnation -> {holder, seen, at, stopped, allocations{}, allocating{}} */
    json_t *holders;   /* holder -> mono ms of its last heartbeat (-1: stopped), for
                          allocations without an incarnation label */
    json_t *reaping;   /* allocation ids with a DELETE in flight */
    char probe_id[33]; /* this reaper's probes */
    int64_t hearing_since; /* mono ms since own probes come back; 0: deaf */
    int64_t probe_back;    /* mono ms of the last own probe read */
    long reaped;
};

typedef struct reap_call {
    gt_reaper_t *r;
    const gt_pool_t *pool;
    char *allocation_id;
    char *holder;
    char *incarnation;
    const char *reason;
} reap_call_t;

static void auth_headers(const gt_pool_t *pool, char *auth, size_t len, const char *hdrs[3])
{
    snprintf(auth, len, "Authorization: Bearer %s", pool->api_key);
    hdrs[0] = auth;
    hdrs[1] = "Content-Type: application/json";
    hdrs[2] = NULL;
}

static void reap_call_free(reap_call_t *rc)
{
    free(rc->allocation_id);
    free(rc->holder);
    free(rc->incarnation);
    free(rc);
}

static void on_released(const gt_http_response_t *resp, void *arg)
{
    reap_call_t *rc = arg;
    gt_reaper_t *r = rc->r;
    if (r->reaping)
        json_object_del(r->reaping, rc->allocation_id);
    if (resp->status == 204 || resp->status == 200 || resp->status == 404) {
        r->reaped++;
        gt_stats_reaped(rc->pool->name);
        gt_warn("reaped allocation %s of %s (incarnation %s) in pool %s: %s", rc->allocation_id,
                rc->holder, rc->incarnation[0] ? rc->incarnation : "-", rc->pool->name, rc->reason);
        json_t *ev = gt_event_build("allocation.reaped", r->d->id, NULL,
                                    json_pack("{s:s, s:s, s:s, s:s, s:s}", "allocation_id",
                                              rc->allocation_id, "pool", rc->pool->name, "holder",
                                              rc->holder, "incarnation", rc->incarnation, "reason",
                                              rc->reason));
        if (ev)
            gt_effect_send_json(r->d->effects, r->d->cfg->topics.events, rc->allocation_id, ev,
                                NULL, 0);
        json_decref(ev);
    } else if (resp->curl_code != 42 /* aborted at shutdown */) {
        gt_warn("releasing allocation %s failed (status %ld): retried next round",
                rc->allocation_id, resp->status);
    }
    reap_call_free(rc);
}

static int in_set(const json_t *inc, const char *set, const char *key)
{
    return key && json_object_get(json_object_get(inc, set), key) != NULL;
}

/* Why allocation a (age_ms old) is to be released, or NULL to leave it. */
static const char *reap_reason(gt_reaper_t *r, const char *id, const json_t *labels, int64_t age_ms,
                               int64_t now, int64_t wall_now)
{
    const gt_config_t *cfg = r->d->cfg;
    int64_t ttl = cfg->lease_ttl_ms;
    const char *holder = json_string_value(json_object_get(labels, "holder"));
    const char *incarnation = json_string_value(json_object_get(labels, "incarnation"));
    const char *attempt = json_string_value(json_object_get(labels, "attempt"));

    /* Young: its holder's next heartbeat may not have reached us yet. */
    if (age_ms < 2 * cfg->heartbeat_ms)
        return NULL;
    if (!incarnation || !*incarnation) {
        /* Labelled by a worker without incarnations: judged by its holder. */
        json_t *seen = holder ? json_object_get(r->holders, holder) : NULL;
        if (!holder)
            return NULL; /* not Gantry's */
        if (!seen)
            return "holder never heard of";
        if (json_integer_value(seen) < 0)
            return "holder stopped";
        return now - json_integer_value(seen) > ttl ? "holder silent" : NULL;
    }
    json_t *inc = json_object_get(r->incs, incarnation);
    if (!inc)
        return "incarnation never heard of";
    if (json_is_true(json_object_get(inc, "stopped")))
        return "incarnation stopped";
    if (now - json_integer_value(json_object_get(inc, "seen")) > ttl)
        return "incarnation silent";
    if (in_set(inc, "allocations", id) || in_set(inc, "allocating", attempt))
        return NULL; /* claimed by a live incarnation: never touched */
    /* Alive, and not claiming it: released only when its latest heartbeat was
     * made after the allocation existed (a heartbeat of margin for clocks). */
    int64_t created_wall = wall_now - age_ms;
    if (json_integer_value(json_object_get(inc, "at")) >= created_wall + cfg->heartbeat_ms)
        return "not claimed by its live incarnation";
    return NULL;
}

static void reap(gt_reaper_t *r, const gt_pool_t *pool, const char *id, const json_t *labels,
                 const char *reason)
{
    const char *holder = json_string_value(json_object_get(labels, "holder"));
    const char *incarnation = json_string_value(json_object_get(labels, "incarnation"));
    if (json_object_get(r->reaping, id))
        return; /* a DELETE is already on its way */
    reap_call_t *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return;
    rc->r = r;
    rc->pool = pool;
    rc->reason = reason;
    rc->allocation_id = strdup(id);
    rc->holder = strdup(holder ? holder : "");
    rc->incarnation = strdup(incarnation ? incarnation : "");
    if (!rc->allocation_id || !rc->holder || !rc->incarnation) {
        reap_call_free(rc);
        return;
    }
    char url[1024], auth[1024];
    const char *hdrs[3];
    snprintf(url, sizeof(url), "%s/v1/allocate/%s", pool->endpoint, id);
    auth_headers(pool, auth, sizeof(auth), hdrs);
    if (gt_http_request(r->http, "DELETE", url, hdrs, NULL, 0, r->d->cfg->release_timeout_ms,
                        on_released, rc) != 0) {
        reap_call_free(rc);
        return;
    }
    json_object_set_new(r->reaping, id, json_true());
}

/* Heard long enough to judge silence? */
static int hearing(const gt_reaper_t *r, int64_t now)
{
    return r->hearing_since > 0 && now - r->hearing_since >= r->d->cfg->lease_ttl_ms;
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
    int64_t now = gt_clock_mono_ms(), wall_now = gt_clock_wall_ms();
    if (!hearing(r, now))
        return; /* went deaf while the list was on its way */
    json_t *doc = gt_json_parse(resp->body, resp->body_len, 0, NULL);
    json_t *list = json_object_get(doc, "allocations");
    size_t i;
    json_t *a;
    json_array_foreach (list, i, a) {
        const char *id = json_string_value(json_object_get(a, "allocation_id"));
        json_t *labels = json_object_get(a, "labels");
        json_t *age = json_object_get(a, "age_ms");
        if (!id || !json_is_integer(age))
            continue;
        const char *reason = reap_reason(r, id, labels, json_integer_value(age), now, wall_now);
        if (reason)
            reap(r, pool, id, labels, reason);
    }
    json_decref(doc);
}

/* The probe also carries this dispatcher's tasks in flight per deployment:
 * the other dispatchers' routers count them against capacity (router.h). */
static void send_probe(gt_reaper_t *r)
{
    json_t *ev = gt_event_build("reaper.probe", r->d->id, NULL,
                                json_pack("{s:s, s:o}", "reaper", r->probe_id, "routing",
                                          gt_router_snapshot(r->d->router)));
    if (ev)
        gt_effect_send_json(r->d->effects, r->d->cfg->topics.events, r->d->id, ev, NULL, 0);
    json_decref(ev);
}

static void forget_old(gt_reaper_t *r, int64_t now)
{
    int64_t horizon = REAPER_FORGET_TTLS * r->d->cfg->lease_ttl_ms;
    const char *k;
    json_t *v, *tmp;
    json_object_foreach_safe (r->incs, tmp, k, v) {
        if (now - json_integer_value(json_object_get(v, "seen")) > horizon)
            json_object_del(r->incs, k);
    }
}

static void on_tick(uv_timer_t *t)
{
    gt_reaper_t *r = t->data;
    const gt_config_t *cfg = r->d->cfg;
    int64_t now = gt_clock_mono_ms();
    /* A probe not back within two rounds (and a second): the reaper is deaf
     * (consumer unassigned, broker away), and must hear a full TTL again. */
    if (r->hearing_since && now - r->probe_back > 2 * cfg->reaper_interval_ms + 1000) {
        gt_warn("lease reaper: own probe not back for %lld ms: judging no lease until it has "
                "heard for %lld ms again",
                (long long)(now - r->probe_back), (long long)cfg->lease_ttl_ms);
        r->hearing_since = 0;
    }
    send_probe(r);
    forget_old(r, now);
    gt_router_peer(r->d->router, NULL, NULL, now, ROUTING_FRESH_ROUNDS * cfg->reaper_interval_ms);
    if (!hearing(r, now))
        return;
    for (size_t i = 0; i < cfg->n_pools; i++) {
        const gt_pool_t *pool = &cfg->pools[i];
        reap_call_t *lc = calloc(1, sizeof(*lc));
        if (!lc)
            return;
        lc->r = r;
        lc->pool = pool;
        char url[1024], auth[1024];
        const char *hdrs[3];
        snprintf(url, sizeof(url), "%s/v1/allocations", pool->endpoint);
        auth_headers(pool, auth, sizeof(auth), hdrs);
        if (gt_http_request(r->http, "GET", url, hdrs, NULL, 0, cfg->release_timeout_ms, on_listed,
                            lc) != 0)
            free(lc);
    }
}

/* A set {key: true} of the strings in array a. */
static json_t *set_of(const json_t *a)
{
    json_t *set = json_object();
    size_t i;
    json_t *v;
    json_array_foreach (a, i, v) {
        if (json_is_string(v))
            json_object_set_new(set, json_string_value(v), json_true());
    }
    return set;
}

static void on_heartbeat(gt_reaper_t *r, const char *source, const json_t *ev, int64_t now)
{
    const json_t *data = json_object_get(ev, "data");
    const char *incarnation = json_string_value(json_object_get(data, "incarnation"));
    json_object_set_new(r->holders, source, json_integer(now));
    if (!incarnation || !*incarnation)
        return;
    json_t *inc = json_object_get(r->incs, incarnation);
    if (json_is_true(json_object_get(inc, "stopped")))
        return; /* a heartbeat read after its stop (two partitions): the stop wins */
    int64_t at = 0;
    const char *ats = json_string_value(json_object_get(ev, "at"));
    if (!ats || gt_clock_parse(ats, &at) != 0)
        at = 0;
    json_object_set_new(r->incs, incarnation,
                        json_pack("{s:s, s:I, s:I, s:b, s:o, s:o}", "holder", source, "seen",
                                  (json_int_t)now, "at", (json_int_t)at, "stopped", 0,
                                  "allocations", set_of(json_object_get(data, "allocations")),
                                  "allocating", set_of(json_object_get(data, "allocating"))));
}

static void on_event(gt_consumer_t *c, gt_msg_t *msg, void *arg)
{
    gt_reaper_t *r = arg;
    json_t *ev = msg->value ? gt_json_parse(msg->value, msg->len, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *source = json_string_value(json_object_get(ev, "source"));
    const json_t *data = json_object_get(ev, "data");
    int64_t now = gt_clock_mono_ms();
    if (type && source) {
        if (strcmp(type, "worker.heartbeat") == 0) {
            on_heartbeat(r, source, ev, now);
        } else if (strcmp(type, "worker.stopped") == 0) {
            const char *incarnation = json_string_value(json_object_get(data, "incarnation"));
            json_object_set_new(r->holders, source, json_integer(-1));
            if (incarnation && *incarnation)
                json_object_set_new(r->incs, incarnation,
                                    json_pack("{s:s, s:I, s:I, s:b}", "holder", source, "seen",
                                              (json_int_t)now, "at", (json_int_t)0, "stopped", 1));
        } else if (strcmp(type, "reaper.probe") == 0) {
            const char *id = json_string_value(json_object_get(data, "reaper"));
            if (id && strcmp(id, r->probe_id) != 0)
                gt_router_peer(r->d->router, id, json_object_get(data, "routing"), now,
                               ROUTING_FRESH_ROUNDS * r->d->cfg->reaper_interval_ms);
            if (id && strcmp(id, r->probe_id) == 0) {
                r->probe_back = now;
                if (!r->hearing_since) {
                    r->hearing_since = now;
                    gt_info("lease reaper hears gantry.events: judging leases in %lld ms",
                            (long long)r->d->cfg->lease_ttl_ms);
                }
            }
        } else if (strncmp(type, "breaker.", 8) == 0) {
            gt_provider_health_event(r->d->providers, type, data);
            gt_router_event(r->d->router, r->d->cfg, type, data, gt_clock_mono_ms());
        }
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
    gt_random_hex(r->probe_id);
    r->incs = json_object();
    r->holders = json_object();
    r->reaping = json_object();
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
    if (!r->consumer || !r->http || !r->incs || !r->holders || !r->reaping) {
        if (r->http)
            gt_http_free(r->http);
        json_decref(r->incs);
        json_decref(r->holders);
        json_decref(r->reaping);
        free(r);
        return NULL;
    }
    d->providers = gt_provider_health_new(); /* NULL (out of memory): routing ignores health */
    uv_timer_init(d->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_tick, 0, (uint64_t)d->cfg->reaper_interval_ms);
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
    json_decref(r->incs);
    json_decref(r->holders);
    json_decref(r->reaping);
    free(r);
}
