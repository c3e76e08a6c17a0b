/* router.c - deployment choice per task: the four strategies over the health
 * learned from task results (router.h, docs/routing.md). */
#include "router.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "rand.h"

typedef struct dep_state {
    struct dep_state *next;
    char *model; /* the deployment's model name */
    int in_flight;
    double ewma_ms;
    int measured;       /* ewma_ms holds a sample */
    int fails;          /* consecutive failures */
    int64_t open_until; /* > 0: cooled down until then (monotonic ms) */
    int probing;        /* half-open: its one probe is out */
    int64_t wrr;        /* smooth weighted round-robin's current weight */
    int peers;          /* in flight from the other dispatchers (their last snapshots) */
} dep_state_t;

struct gt_router {
    dep_state_t *states; /* one per deployment seen: a handful, searched in order */
    uint64_t rng;
    /* The other dispatchers' last in-flight snapshots: {id: {"at": mono ms,
     * "routing": {deployment: n}}} (gt_router_peer). */
    json_t *peers;
};

gt_router_t *gt_router_new(uint64_t seed)
{
    gt_router_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->rng = seed;
    return r;
}

void gt_router_free(gt_router_t *r)
{
    if (!r)
        return;
    for (dep_state_t *s = r->states, *next; s; s = next) {
        next = s->next;
        free(s->model);
        free(s);
    }
    json_decref(r->peers);
    free(r);
}

static double uniform(gt_router_t *r)
{
    return gt_rand_unit_r(&r->rng);
}

static dep_state_t *state(gt_router_t *r, const char *model, int create)
{
    for (dep_state_t *s = r->states; s; s = s->next)
        if (strcmp(s->model, model) == 0)
            return s;
    if (!create)
        return NULL;
    dep_state_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->model = strdup(model))) {
        free(s);
        return NULL;
    }
    s->next = r->states;
    r->states = s;
    return s;
}

/* The breaker settings of a deployment: its pool's or provider's. */
static void breaker_of(const gt_config_t *cfg, const char *model, int *failures, int64_t *recovery)
{
    const gt_model_t *m = gt_config_model(cfg, model);
    const gt_pool_t *p = m && m->pool ? gt_config_pool(cfg, m->pool) : NULL;
    const gt_provider_t *pr = m && m->provider ? gt_config_provider(cfg, m->provider) : NULL;
    *failures = p ? p->breaker_failures : pr ? pr->breaker_failures : 5;
    *recovery = p ? p->breaker_recovery_ms : pr ? pr->breaker_recovery_ms : 60000;
}

const gt_model_t *gt_router_logical(const gt_config_t *cfg, const char *model)
{
    for (size_t i = 0; model && i < cfg->n_models; i++)
        for (size_t k = 0; k < cfg->models[i].n_deployments; k++)
            if (strcmp(cfg->models[i].deployments[k].model, model) == 0)
                return &cfg->models[i];
    return NULL;
}

int gt_router_in_flight(const gt_router_t *r, const char *model)
{
    dep_state_t *s = state((gt_router_t *)r, model, 0);
    return s ? s->in_flight : -1;
}

/* Tasks in flight on a deployment from every dispatcher: its own count plus
 * the others' last snapshots. */
static int busy(const dep_state_t *s)
{
    return s->in_flight + s->peers;
}

json_t *gt_router_snapshot(const gt_router_t *r)
{
    json_t *o = json_object();
    for (const dep_state_t *s = r ? r->states : NULL; o && s; s = s->next)
        if (s->in_flight > 0)
            json_object_set_new(o, s->model, json_integer(s->in_flight));
    return o;
}

/* Sums the fresh snapshots into each state's peers; forgets stale ones. */
static void peers_sum(gt_router_t *r, int64_t now_ms, int64_t fresh_ms)
{
    for (dep_state_t *s = r->states; s; s = s->next)
        s->peers = 0;
    const char *id;
    json_t *p, *tmp;
    json_object_foreach_safe (r->peers, tmp, id, p) {
        if (now_ms - json_integer_value(json_object_get(p, "at")) > fresh_ms) {
            json_object_del(r->peers, id);
            continue;
        }
        const char *model;
        json_t *n;
        json_object_foreach (json_object_get(p, "routing"), model, n) {
            dep_state_t *s = json_is_integer(n) ? state(r, model, 1) : NULL;
            if (s)
                s->peers += (int)json_integer_value(n);
        }
    }
}

void gt_router_peer(gt_router_t *r, const char *id, const json_t *routing, int64_t now_ms,
                    int64_t fresh_ms)
{
    if (!r)
        return;
    if (id && json_is_object(routing) && (r->peers || (r->peers = json_object())))
        json_object_set_new(r->peers, id,
                            json_pack("{s:I, s:O}", "at", (json_int_t)now_ms, "routing", routing));
    if (r->peers)
        peers_sum(r, now_ms, fresh_ms);
}

static void count(const char *logical, const char *deployment, const char *reason)
{
    gt_metric_add(gt_metrics_counter("gantry_routing_decisions_total",
                                     "Deployments chosen, by logical model and reason",
                                     "model,reason"),
                  1, logical, reason);
    gt_metric_add(gt_metrics_counter("gantry_deployment_requests_total",
                                     "Tasks sent to each deployment", "model,deployment"),
                  1, logical, deployment);
}

#define MAX_DEPLOYMENTS 64

const gt_model_t *gt_router_pick(gt_router_t *r, const gt_config_t *cfg, const gt_model_t *m,
                                 int64_t now_ms, const char **reason)
{
    if (!m->n_deployments)
        return m;
    size_t n = m->n_deployments < MAX_DEPLOYMENTS ? m->n_deployments : MAX_DEPLOYMENTS;
    dep_state_t *st[MAX_DEPLOYMENTS];
    int open[MAX_DEPLOYMENTS] = {0}, full[MAX_DEPLOYMENTS] = {0}, probe = -1;
    for (size_t i = 0; i < n; i++) {
        if (!(st[i] = state(r, m->deployments[i].model, 1)))
            return NULL;
        open[i] = st[i]->open_until > 0;
        if (open[i] && now_ms >= st[i]->open_until && !st[i]->probing && probe < 0)
            probe = (int)i; /* half-open: one probe */
        full[i] =
            m->deployments[i].max_in_flight > 0 && busy(st[i]) >= m->deployments[i].max_in_flight;
    }
    const char *strategy = m->strategy ? m->strategy : "weighted";
    const char *why = strategy;
    int pick = -1;
    if (probe >= 0) {
        pick = probe;
        st[pick]->probing = 1;
        why = "half_open";
    } else if (strcmp(strategy, "weighted") == 0) {
        int64_t total = 0;
        for (size_t i = 0; i < n; i++) {
            if (open[i])
                continue;
            st[i]->wrr += m->deployments[i].weight;
            total += m->deployments[i].weight;
            if (pick < 0 || st[i]->wrr > st[pick]->wrr)
                pick = (int)i;
        }
        if (pick >= 0)
            st[pick]->wrr -= total;
    } else if (strcmp(strategy, "least_busy") == 0) {
        for (size_t i = 0; i < n; i++)
            if (!open[i] && (pick < 0 || busy(st[i]) < busy(st[pick])))
                pick = (int)i;
    } else if (strcmp(strategy, "latency") == 0) {
        int avail = 0;
        for (size_t i = 0; i < n; i++)
            avail += !open[i] && !full[i];
        if (avail > 1 && uniform(r) < GT_ROUTER_EXPLORE) {
            int k = (int)(uniform(r) * avail);
            for (size_t i = 0; i < n; i++)
                if (!open[i] && !full[i] && k-- == 0)
                    pick = (int)i;
            why = "latency_explore";
        } else {
            /* unmeasured first (0 ms), then the lowest EWMA */
            for (size_t i = 0; i < n; i++) {
                if (open[i] || full[i])
                    continue;
                double li = st[i]->measured ? st[i]->ewma_ms : 0;
                double lp = pick >= 0 && st[pick]->measured ? st[pick]->ewma_ms : 0;
                if (pick < 0 || li < lp)
                    pick = (int)i;
            }
        }
    } else { /* cost: the cheapest closed one with capacity */
        int cheapest = -1;
        for (size_t i = 0; i < n; i++) {
            if (open[i])
                continue;
            if (cheapest < 0 ||
                m->deployments[i].price_micros < m->deployments[cheapest].price_micros)
                cheapest = (int)i;
            if (!full[i] &&
                (pick < 0 || m->deployments[i].price_micros < m->deployments[pick].price_micros))
                pick = (int)i;
        }
        if (pick >= 0 && cheapest >= 0 &&
            m->deployments[cheapest].price_micros < m->deployments[pick].price_micros)
            why = "cost_spill";
    }
    if (pick >= 0 && full[pick] && strcmp(strategy, "weighted") != 0 &&
        strcmp(strategy, "least_busy") != 0)
        pick = -1;
    if (pick < 0) { /* none available: full ones wait at the worker; else the soonest back */
        for (size_t i = 0; i < n; i++)
            if (!open[i] && (pick < 0 || busy(st[i]) < busy(st[pick])))
                pick = (int)i;
        why = "all_full";
        if (pick < 0) {
            for (size_t i = 0; i < n; i++)
                if (pick < 0 || st[i]->open_until < st[pick]->open_until)
                    pick = (int)i;
            why = "all_cooling";
        }
    }
    if (pick < 0) /* n >= 1: the loop above always picks; for the analyser */
        return m;
    st[pick]->in_flight++;
    *reason = why;
    const gt_model_t *dep = gt_config_model(cfg, m->deployments[pick].model);
    count(m->name, m->deployments[pick].model, why);
    return dep ? dep : m;
}

static void sample(dep_state_t *s, double latency_ms)
{
    s->ewma_ms = s->measured
                     ? GT_ROUTER_EWMA_ALPHA * latency_ms + (1 - GT_ROUTER_EWMA_ALPHA) * s->ewma_ms
                     : latency_ms;
    s->measured = 1;
}

void gt_router_result(gt_router_t *r, const gt_config_t *cfg, const char *model, int ok,
                      double latency_ms, int64_t now_ms)
{
    if (!r || !model || !gt_router_logical(cfg, model))
        return;
    dep_state_t *s = state(r, model, 1);
    if (!s)
        return;
    if (s->in_flight > 0)
        s->in_flight--;
    int failures;
    int64_t recovery;
    breaker_of(cfg, model, &failures, &recovery);
    if (ok) {
        if (latency_ms >= 0)
            sample(s, latency_ms);
        s->fails = 0;
        if (s->open_until && (s->probing || now_ms >= s->open_until)) {
            s->open_until = 0; /* the probe (or any success after the cool-down) closes it */
            s->probing = 0;
        }
        return;
    }
    s->fails++;
    if (s->probing || (!s->open_until && s->fails >= failures)) {
        s->open_until = now_ms + recovery; /* cooled down (again) */
        s->probing = 0;
    }
}

void gt_router_release(gt_router_t *r, const char *model)
{
    dep_state_t *s = r && model ? state(r, model, 0) : NULL;
    if (s && s->in_flight > 0)
        s->in_flight--;
}

void gt_router_cool(gt_router_t *r, const gt_config_t *cfg, const char *model, int64_t now_ms)
{
    dep_state_t *s = r && model && gt_router_logical(cfg, model) ? state(r, model, 1) : NULL;
    if (!s)
        return;
    int failures;
    int64_t recovery;
    breaker_of(cfg, model, &failures, &recovery);
    if (s->open_until < now_ms + recovery)
        s->open_until = now_ms + recovery;
    s->probing = 0;
}

void gt_router_event(gt_router_t *r, const gt_config_t *cfg, const char *type, const json_t *data,
                     int64_t now_ms)
{
    if (!r || !type || strcmp(type, "breaker.opened") != 0)
        return;
    const char *provider = json_string_value(json_object_get(data, "provider"));
    const char *pool = json_string_value(json_object_get(data, "pool"));
    json_t *rec = json_object_get(data, "recovery_ms");
    for (size_t i = 0; i < cfg->n_models; i++)
        for (size_t k = 0; k < cfg->models[i].n_deployments; k++) {
            const gt_model_t *dm = gt_config_model(cfg, cfg->models[i].deployments[k].model);
            int hit =
                dm && ((pool && dm->pool && strcmp(dm->pool, pool) == 0) ||
                       (!pool && provider && dm->provider && strcmp(dm->provider, provider) == 0));
            if (!hit)
                continue;
            dep_state_t *s = state(r, dm->name, 1);
            if (!s)
                continue;
            int64_t until = now_ms + (json_is_integer(rec) ? json_integer_value(rec) : 60000);
            if (s->open_until < until)
                s->open_until = until;
            s->probing = 0;
        }
}
