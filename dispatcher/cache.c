/* cache.c - the response cache: keys, PostgreSQL lookups and stores, and the
 * single-flight table that makes identical requests in one dispatcher wait
 * for one provider call (cache.h, docs/routing.md). */
#include "cache.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "digest.h"

typedef struct waiter {
    struct waiter *next;
    gt_cache_cb cb;
    void *arg;
    char *request_id;
    int64_t since; /* mono ms */
} waiter_t;

/* Requests for one (tenant, key) in this dispatcher: the one looking it up
 * (looker) or whose job runs (leader), and those waiting for it. */
typedef struct flight {
    gt_cache_t *c;
    char *id; /* "<tenant>\x1f<key>": its name in c->flights */
    char *tenant;
    char key[65];
    waiter_t *looker; /* its lookup is out */
    char *leader;     /* request_id whose job runs; NULL: none */
    waiter_t *waiters, **tail;
} flight_t;

struct gt_cache {
    gt_dispatcher_t *d;
    uv_timer_t timer;
    json_t *flights; /* id -> flight_t * (as an integer) */
    json_t *leaders; /* request_id -> flight_t * (as an integer) */
};

static const char sql_lookup[] =
    "SELECT output FROM response_cache WHERE tenant_id = $1 AND cache_key = $2"
    " AND expires_at > now()";

/* Stores $2 (the output) under the job's key if intake marked it cacheable,
 * unless larger than the tenant's cap $3; then evicts the tenant's expired
 * entries and its oldest ones past the cap. Returns (stored, evicted). */
static const char sql_store[] =
    "WITH j AS (SELECT tenant_id, model, cache_key, cache_ttl_ms FROM jobs"
    "  WHERE request_id = $1 AND cache_key IS NOT NULL AND cache_ttl_ms > 0),"
    " ins AS (INSERT INTO response_cache (tenant_id, cache_key, model, output, bytes, expires_at)"
    "  SELECT tenant_id, cache_key, model, $2::jsonb, octet_length($2::text),"
    "         now() + cache_ttl_ms * interval '1 millisecond' FROM j"
    "  WHERE octet_length($2::text) <= $3::bigint"
    "  ON CONFLICT (tenant_id, cache_key) DO UPDATE SET output = excluded.output,"
    "   bytes = excluded.bytes, created_at = now(), expires_at = excluded.expires_at"
    "  RETURNING bytes),"
    " old AS (SELECT r.tenant_id, r.cache_key FROM ("
    "   SELECT tenant_id, cache_key, expires_at,"
    "          sum(bytes) OVER (ORDER BY created_at DESC, cache_key) AS run"
    "   FROM response_cache WHERE tenant_id = (SELECT tenant_id FROM j)"
    "    AND cache_key <> (SELECT cache_key FROM j)) r"
    "  WHERE r.expires_at <= now() OR r.run + coalesce((SELECT bytes FROM ins), 0) > $3::bigint),"
    " ev AS (DELETE FROM response_cache d USING old"
    "  WHERE d.tenant_id = old.tenant_id AND d.cache_key = old.cache_key RETURNING 1)"
    " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM ev)";

void gt_cache_stat(const char *outcome, size_t bytes)
{
    gt_metric_add(gt_metrics_counter("gantry_cache_lookups_total",
                                     "Response cache lookups, by outcome (hit, miss; wait: "
                                     "answered by an identical request in flight)",
                                     "outcome"),
                  1, outcome);
    if (bytes)
        gt_metric_add(gt_metrics_counter("gantry_cache_bytes_total",
                                         "Bytes of cached outputs served (hit, wait) or stored",
                                         "op"),
                      (double)bytes, strcmp(outcome, "stored") == 0 ? "stored" : "served");
}

static void stat_stored(size_t bytes)
{
    gt_metric_add(gt_metrics_counter("gantry_cache_bytes_total",
                                     "Bytes of cached outputs served (hit, wait) or stored", "op"),
                  (double)bytes, "stored");
}

int gt_cache_configured(const gt_config_t *cfg, const char *tenant, const char *model)
{
    const gt_tenant_t *t = tenant ? gt_config_tenant(cfg, tenant) : NULL;
    const gt_model_t *m = model ? gt_config_model(cfg, model) : NULL;
    if (!t || !m || !m->cache_ttl_ms)
        return 0;
    for (size_t i = 0; i < t->cache.n_models; i++)
        if (strcmp(t->cache.models[i], "*") == 0 || strcmp(t->cache.models[i], model) == 0)
            return 1;
    return 0;
}

int gt_cache_tenant_on(const gt_config_t *cfg, const char *tenant)
{
    const gt_tenant_t *t = tenant ? gt_config_tenant(cfg, tenant) : NULL;
    return t && t->cache.n_models > 0;
}

int gt_cache_key(const gt_config_t *cfg, const json_t *req, const gt_model_t *m, char hex[65],
                 int64_t *ttl_ms)
{
    const char *tenant = json_string_value(json_object_get(req, "tenant_id"));
    if (!m || json_object_get(req, "batch") || !gt_cache_configured(cfg, tenant, m->name))
        return 0;
    json_t *want = json_object_get(json_object_get(req, "policy"), "cache");
    if (want ? !json_is_true(want) : !gt_config_tenant(cfg, tenant)->cache.by_default)
        return 0;
    /* Everything that changes the output; the input is the guarded (scrubbed)
     * form, so a scrubbing tenant's key never depends on raw values. */
    json_t *k =
        json_pack("{s:s, s:s, s:s, s:O?, s:O?, s:O?}", "v", "gantry.cache.v1", "tenant", tenant,
                  "model", m->name, "kind", json_object_get(req, "kind"), "input",
                  json_object_get(req, "input"), "parameters", json_object_get(req, "parameters"));
    char *text = k ? json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(k);
    if (!text)
        return -ENOMEM;
    gt_sha256_hex(text, strlen(text), hex);
    free(text);
    *ttl_ms = m->cache_ttl_ms;
    return 1;
}

static flight_t *map_get(json_t *map, const char *name)
{
    json_t *v = json_object_get(map, name);
    return v ? (flight_t *)(intptr_t)json_integer_value(v) : NULL;
}

static int map_set(json_t *map, const char *name, flight_t *f)
{
    return json_object_set_new(map, name, json_integer((json_int_t)(intptr_t)f));
}

static void waiter_free(waiter_t *w)
{
    if (w)
        free(w->request_id);
    free(w);
}

static void flight_free(flight_t *f)
{
    json_object_del(f->c->flights, f->id);
    free(f->id);
    free(f->tenant);
    free(f->leader);
    free(f);
}

static void on_lookup(const PGresult *res, const char *err, void *arg);

/* The flight's next waiter looks up (and may lead); none: the flight ends. */
static void flight_next(flight_t *f)
{
    while (f->waiters) {
        waiter_t *w = f->waiters;
        f->waiters = w->next;
        if (!f->waiters)
            f->tail = &f->waiters;
        f->looker = w;
        const char *params[] = {f->tenant, f->key};
        if (gt_pg_query(f->c->d->pg, sql_lookup, 2, params, on_lookup, f) == 0)
            return;
        f->looker = NULL;
        w->cb(NULL, "cannot send the cache lookup", w->arg);
        waiter_free(w);
    }
    flight_free(f);
}

/* Every waiter (and the looker) gets output; the flight ends. */
static void flight_deliver(flight_t *f, const json_t *output, const char *outcome)
{
    char *text = json_dumps(output, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t bytes = text ? strlen(text) : 0;
    free(text);
    if (f->looker) {
        waiter_t *w = f->looker;
        f->looker = NULL;
        gt_cache_stat("hit", bytes);
        w->cb(output, NULL, w->arg);
        waiter_free(w);
    }
    while (f->waiters) {
        waiter_t *w = f->waiters;
        f->waiters = w->next;
        gt_cache_stat(outcome, bytes);
        w->cb(output, NULL, w->arg);
        waiter_free(w);
    }
    flight_free(f);
}

static void on_lookup(const PGresult *res, const char *err, void *arg)
{
    flight_t *f = arg;
    waiter_t *w = f->looker;
    if (err) { /* transient ones were retried by gt_pg: permanent, or stopping */
        f->looker = NULL;
        w->cb(NULL, err, w->arg);
        waiter_free(w);
        flight_next(f);
        return;
    }
    if (PQntuples(res) == 1) {
        json_t *out = json_loads(PQgetvalue(res, 0, 0), JSON_DECODE_ANY, NULL);
        if (out) {
            flight_deliver(f, out, "hit");
            json_decref(out);
            return;
        }
    }
    /* A miss: the looker leads; identical requests wait for its job. */
    f->looker = NULL;
    f->leader = strdup(w->request_id);
    if (!f->leader || map_set(f->c->leaders, f->leader, f) != 0) {
        free(f->leader);
        f->leader = NULL;
    }
    gt_cache_stat("miss", 0);
    w->cb(NULL, NULL, w->arg);
    waiter_free(w);
    if (!f->leader) /* out of memory: nobody leads, the next one looks */
        flight_next(f);
}

int gt_cache_lookup(gt_cache_t *c, const char *tenant, const char *key, const char *request_id,
                    gt_cache_cb cb, void *arg)
{
    int rc = -ENOMEM;
    char *id = NULL;
    flight_t *f = NULL;
    waiter_t *w = calloc(1, sizeof(*w));
    if (!w || !(w->request_id = strdup(request_id)) || asprintf(&id, "%s\x1f%s", tenant, key) < 0) {
        id = NULL;
        goto out;
    }
    w->cb = cb;
    w->arg = arg;
    w->since = gt_clock_mono_ms();
    if ((f = map_get(c->flights, id))) { /* an identical request is in flight: wait */
        *f->tail = w;
        f->tail = &w->next;
        w = NULL;
        rc = 0;
        goto out;
    }
    f = calloc(1, sizeof(*f));
    if (!f || !(f->tenant = strdup(tenant)) || map_set(c->flights, id, f) != 0) {
        if (f)
            free(f->tenant);
        free(f);
        goto out;
    }
    f->c = c;
    f->id = id;
    id = NULL;
    snprintf(f->key, sizeof(f->key), "%s", key);
    f->tail = &f->waiters;
    f->looker = w;
    w = NULL;
    const char *params[] = {f->tenant, f->key};
    if (gt_pg_query(c->d->pg, sql_lookup, 2, params, on_lookup, f) != 0) {
        w = f->looker;
        flight_free(f);
        goto out;
    }
    rc = 0;
out:
    free(id);
    waiter_free(w);
    return rc;
}

void gt_cache_abandon(gt_cache_t *c, const char *request_id)
{
    flight_t *f = c && request_id ? map_get(c->leaders, request_id) : NULL;
    if (!f)
        return;
    json_object_del(c->leaders, request_id);
    free(f->leader);
    f->leader = NULL;
    flight_next(f);
}

typedef struct store {
    gt_cache_t *c;
    char *request_id;
    json_t *output;
    size_t bytes;
} store_t;

static void on_store(const PGresult *res, const char *err, void *arg)
{
    store_t *s = arg;
    gt_cache_t *c = s->c;
    int stored = !err && PQntuples(res) == 1 && atoi(PQgetvalue(res, 0, 0)) == 1;
    if (err)
        gt_log(GT_LOG_WARN, &(gt_log_ctx_t){.request_id = s->request_id},
               "storing the response in the cache failed (not cached): %s", err);
    if (stored)
        stat_stored(s->bytes);
    flight_t *f = map_get(c->leaders, s->request_id);
    if (f) {
        json_object_del(c->leaders, s->request_id);
        free(f->leader);
        f->leader = NULL;
        if (stored)
            flight_deliver(f, s->output, "wait");
        else
            flight_next(f);
    }
    json_decref(s->output);
    free(s->request_id);
    free(s);
}

void gt_cache_job_done(gt_cache_t *c, const char *request_id, const char *tenant,
                       const json_t *result, const json_t *output)
{
    if (!c)
        return;
    flight_t *f = map_get(c->leaders, request_id);
    const char *status = json_string_value(json_object_get(result, "status"));
    /* Only a whole success: never errors, partial batches or blocked outputs. */
    int cacheable = status && strcmp(status, "succeeded") == 0 && output && !json_is_null(output) &&
                    !json_is_array(json_object_get(result, "outputs")) &&
                    !json_is_object(json_object_get(result, "error")) &&
                    !json_is_true(json_object_get(result, "cached")) &&
                    (f || gt_cache_tenant_on(c->d->cfg, tenant));
    store_t *s = cacheable ? calloc(1, sizeof(*s)) : NULL;
    char *text = s ? json_dumps(output, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    const gt_tenant_t *t = gt_config_tenant(c->d->cfg, tenant);
    char cap[24];
    snprintf(cap, sizeof(cap), "%lld", (long long)(t ? t->cache.max_bytes : 0));
    if (text && (s->request_id = strdup(request_id))) {
        s->c = c;
        s->output = json_deep_copy(output);
        s->bytes = strlen(text);
        const char *params[] = {request_id, text, cap};
        if (s->output && gt_pg_query(c->d->pg_coord ? c->d->pg_coord : c->d->pg, sql_store, 3,
                                     params, on_store, s) == 0) {
            free(text);
            return;
        }
        json_decref(s->output);
    }
    if (s)
        free(s->request_id);
    free(s);
    free(text);
    gt_cache_abandon(c, request_id);
}

/* Waiters past GT_CACHE_WAIT_MS make their own call (as a miss, leading nothing). */
static void on_tick(uv_timer_t *t)
{
    gt_cache_t *c = t->data;
    int64_t now = gt_clock_mono_ms();
    const char *id;
    json_t *v;
    void *tmp;
    json_object_foreach_safe (c->flights, tmp, id, v) {
        flight_t *f = (flight_t *)(intptr_t)json_integer_value(v);
        waiter_t **p = &f->waiters;
        while (*p) {
            waiter_t *w = *p;
            if (now - w->since < GT_CACHE_WAIT_MS) {
                p = &w->next;
                continue;
            }
            *p = w->next;
            gt_log(GT_LOG_INFO, &(gt_log_ctx_t){.request_id = w->request_id},
                   "an identical request is still running after %d ms: calling the provider",
                   GT_CACHE_WAIT_MS);
            gt_cache_stat("miss", 0);
            w->cb(NULL, NULL, w->arg);
            waiter_free(w);
        }
        f->tail = p;
    }
}

gt_cache_t *gt_cache_new(gt_dispatcher_t *d)
{
    gt_cache_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->flights = json_object()) || !(c->leaders = json_object())) {
        if (c)
            json_decref(c->flights);
        free(c);
        return NULL;
    }
    c->d = d;
    uv_timer_init(d->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_tick, 1000, 1000);
    return c;
}

void gt_cache_close(gt_cache_t *c)
{
    if (!c || uv_is_closing((uv_handle_t *)&c->timer))
        return;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, NULL);
}

void gt_cache_free(gt_cache_t *c)
{
    if (!c)
        return;
    /* Flights still open hold requests that stay undone (redelivered). */
    const char *id;
    json_t *v;
    json_object_foreach (c->flights, id, v) {
        flight_t *f = (flight_t *)(intptr_t)json_integer_value(v);
        while (f->waiters) {
            waiter_t *w = f->waiters;
            f->waiters = w->next;
            waiter_free(w);
        }
        waiter_free(f->looker);
        free(f->id);
        free(f->tenant);
        free(f->leader);
        free(f);
    }
    json_decref(c->flights);
    json_decref(c->leaders);
    free(c);
}
