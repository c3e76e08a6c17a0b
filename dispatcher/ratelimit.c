/* ratelimit.c - rate limit admission: the requests of one loop turn are
 * charged against their keys' token buckets in one statement
 * (gantry_rate_take, migration 025); over the limit a request is held in
 * rate_holds (or rejected), and a releaser hands held requests back to the
 * requests topic as their buckets refill. */
#include "ratelimit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

/* One request waiting for the batch's answer. */
typedef struct item {
    gt_ratelimit_cb cb;
    void *arg;
    char *request_id, *tenant_id, *key, *body, *traceparent;
    double rpm, rburst, rcost, tpm, tburst, tcost;
    int verdict; /* from gantry_rate_take */
    int64_t retry_ms;
} item_t;

/* One statement's items (a loop turn's admissions, or the holds of one). */
typedef struct batch {
    gt_ratelimit_t *rl;
    item_t **items;
    size_t n, cap;
} batch_t;

struct gt_ratelimit {
    gt_dispatcher_t *d;
    uv_timer_t flush;   /* 0 ms: the end of this loop turn's admissions */
    uv_timer_t release; /* every rate_limits.release_ms */
    batch_t *pending;   /* admissions of this turn, not sent yet */
    int releasing;      /* a release statement is out */
    int closed, timers;
};

static const char sql_take[] =
    "SELECT idx, verdict, retry_ms FROM gantry_rate_take($1::jsonb) ORDER BY idx";

static const char sql_hold[] =
    "INSERT INTO rate_holds (request_id, key, tenant_id, rpm, rburst, rcost, tpm, tburst, tcost,"
    "                        body, traceparent)"
    " SELECT request_id, key, tenant_id, rpm, rburst, rcost, tpm, tburst, tcost, body,"
    "        traceparent"
    " FROM jsonb_to_recordset($1::jsonb) AS x(request_id text, key text, tenant_id text,"
    "      rpm float8, rburst float8, rcost float8, tpm float8, tburst float8, tcost float8,"
    "      body text, traceparent text)"
    " ON CONFLICT (request_id) DO NOTHING";

static const char sql_release[] =
    "SELECT request_id, body, traceparent FROM gantry_rate_release($1, $2::int, $3::bigint)";

/* Released holds are sent again when their request has not come back after this. */
#define STALE_MS "60000"
#define RELEASE_LIMIT "1000"

static const json_t *limits(const gt_config_t *cfg)
{
    return json_object_get(json_object_get(cfg->root, "dispatcher"), "rate_limits");
}

static int reject_mode(const gt_config_t *cfg)
{
    const char *m = json_string_value(json_object_get(limits(cfg), "on_limit"));
    return m && strcmp(m, "reject") == 0;
}

static gt_metric_t *m_decisions(void)
{
    return gt_metrics_counter("gantry_rate_limit_decisions_total",
                              "Rate limit admissions by tenant and verdict: admitted, held "
                              "(waiting for the bucket), rejected (rate_limited), released "
                              "(a held request handed back)",
                              "tenant,verdict");
}

static void item_free(item_t *it)
{
    if (!it)
        return;
    free(it->request_id);
    free(it->tenant_id);
    free(it->key);
    free(it->body);
    free(it->traceparent);
    free(it);
}

static void batch_free(batch_t *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        item_free(b->items[i]);
    free(b->items);
    free(b);
}

static int batch_add(batch_t *b, item_t *it)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        item_t **grown = realloc(b->items, cap * sizeof(*grown));
        if (!grown)
            return -1;
        b->items = grown;
        b->cap = cap;
    }
    b->items[b->n++] = it;
    return 0;
}

/* Answers every item of b with verdict (and frees b). */
static void batch_answer_all(batch_t *b, int verdict, const char *reason)
{
    for (size_t i = 0; i < b->n; i++)
        b->items[i]->cb(verdict, reason, b->items[i]->arg);
    batch_free(b);
}

static void on_held(const PGresult *res, const char *err, void *arg)
{
    batch_t *b = arg;
    (void)res;
    if (err) { /* never admitted unchecked, never dropped: the caller dead-letters */
        gt_error("rate limit: holding %zu request(s) failed: %s", b->n, err);
        batch_answer_all(b, GT_RATE_FAILED, err);
        return;
    }
    for (size_t i = 0; i < b->n; i++)
        gt_metric_add(m_decisions(), 1, b->items[i]->tenant_id, "held");
    batch_answer_all(b, GT_RATE_HELD, NULL);
}

static json_t *item_json(const item_t *it, size_t i)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:f}", "i", (json_int_t)i,
                     "key", it->key, "rid", it->request_id, "tenant_id", it->tenant_id, "rpm",
                     it->rpm, "rburst", it->rburst, "rcost", it->rcost, "tpm", it->tpm, "tburst",
                     it->tburst, "tcost", it->tcost);
}

/* The over items, in wait mode: held in one statement, then answered. */
static void hold(gt_ratelimit_t *rl, batch_t *over)
{
    json_t *rows = json_array();
    for (size_t i = 0; rows && i < over->n; i++) {
        const item_t *it = over->items[i];
        json_t *row = item_json(it, i);
        if (!row || json_object_set_new(row, "request_id", json_string(it->request_id)) != 0 ||
            json_object_set_new(row, "body", json_string(it->body)) != 0 ||
            json_object_set_new(row, "traceparent",
                                it->traceparent ? json_string(it->traceparent) : json_null()) !=
                0 ||
            json_array_append_new(rows, row) != 0) {
            json_decref(rows);
            rows = NULL;
        }
    }
    char *text = rows ? json_dumps(rows, JSON_COMPACT) : NULL;
    const char *params[] = {text};
    json_decref(rows);
    if (!text || gt_pg_query(rl->d->pg, sql_hold, 1, params, on_held, over) != 0)
        on_held(NULL, "cannot send query", over);
    free(text);
}

static void on_taken(const PGresult *res, const char *err, void *arg)
{
    batch_t *b = arg;
    gt_ratelimit_t *rl = b->rl;
    if (err || (size_t)PQntuples(res) != b->n) {
        gt_error("rate limit check failed, not admitting %zu request(s): %s", b->n,
                 err ? err : "answer does not match");
        batch_answer_all(b, GT_RATE_FAILED, err ? err : "rate limit check: no answer");
        return;
    }
    batch_t *over = calloc(1, sizeof(*over));
    int rejecting = reject_mode(rl->d->cfg);
    for (size_t i = 0; i < b->n; i++) {
        size_t idx = (size_t)atoll(PQgetvalue(res, (int)i, 0));
        item_t *it = b->items[idx < b->n ? idx : i]; /* ORDER BY idx: idx == i */
        const char *v = PQgetvalue(res, (int)i, 1);
        it->retry_ms = atoll(PQgetvalue(res, (int)i, 2));
        it->verdict = strcmp(v, "over") == 0 ? (rejecting ? GT_RATE_REJECTED : GT_RATE_HELD)
                                             : GT_RATE_ADMITTED;
    }
    for (size_t i = 0; i < b->n; i++) {
        item_t *it = b->items[i];
        if (it->verdict == GT_RATE_HELD && over && batch_add(over, it) == 0) {
            b->items[i] = NULL; /* over owns it now */
            continue;
        }
        if (it->verdict == GT_RATE_HELD) { /* out of memory: not admitted, left undone */
            it->cb(GT_RATE_FAILED, "out of memory holding the request", it->arg);
            continue;
        }
        char reason[512] = "";
        if (it->verdict == GT_RATE_REJECTED)
            snprintf(reason, sizeof(reason),
                     "tenant %s is over its rate limit (%s: %.0f requests, %.0f tokens per "
                     "minute); retry in %lld ms",
                     it->tenant_id, it->key, it->rpm, it->tpm, (long long)it->retry_ms);
        gt_metric_add(m_decisions(), 1, it->tenant_id,
                      it->verdict == GT_RATE_REJECTED ? "rejected" : "admitted");
        it->cb(it->verdict, reason[0] ? reason : NULL, it->arg);
    }
    batch_free(b);
    if (over && over->n) {
        over->rl = rl;
        hold(rl, over);
    } else {
        batch_free(over);
    }
}

/* End of the loop turn: this turn's admissions in one statement. */
static void on_flush(uv_timer_t *t)
{
    gt_ratelimit_t *rl = t->data;
    batch_t *b = rl->pending;
    rl->pending = NULL;
    if (!b)
        return;
    json_t *items = json_array();
    for (size_t i = 0; items && i < b->n; i++)
        if (json_array_append_new(items, item_json(b->items[i], i)) != 0) {
            json_decref(items);
            items = NULL;
        }
    char *text = items ? json_dumps(items, JSON_COMPACT) : NULL;
    json_decref(items);
    const char *params[] = {text};
    if (!text || !rl->d->pg || gt_pg_query(rl->d->pg, sql_take, 1, params, on_taken, b) != 0)
        on_taken(NULL, "cannot send query", b);
    free(text);
}

/* The limit object for tenant and model (the model's own entry, else the
 * tenant's, else rate_limits.default), its key in *key; NULL: no limit. */
static const json_t *limit_for(const gt_config_t *cfg, const char *tenant, const char *model,
                               char *key, size_t keylen)
{
    const json_t *l = limits(cfg);
    const json_t *t = json_object_get(json_object_get(l, "tenants"), tenant);
    const json_t *m = model ? json_object_get(json_object_get(t, "models"), model) : NULL;
    if (m) {
        snprintf(key, keylen, "%s/%s", tenant, model);
        return m;
    }
    snprintf(key, keylen, "%s", tenant);
    return t ? t : json_object_get(l, "default");
}

static double num(const json_t *o, const char *k, double def)
{
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : def;
}

int gt_ratelimit_admit(gt_ratelimit_t *rl, const json_t *req, const char *model, int requests,
                       int64_t tokens, const gt_msg_t *msg, gt_ratelimit_cb cb, void *arg)
{
    const char *tenant = json_string_value(json_object_get(req, "tenant_id"));
    const char *request_id = json_string_value(json_object_get(req, "request_id"));
    char key[512];
    const json_t *l = rl && tenant ? limit_for(rl->d->cfg, tenant, model, key, sizeof(key)) : NULL;
    double rpm = num(l, "requests_per_minute", 0), tpm = num(l, "tokens_per_minute", 0);
    if (!l || (rpm <= 0 && tpm <= 0) || !rl->d->pg || rl->closed)
        return 1;
    item_t *it = calloc(1, sizeof(*it));
    if (!it)
        return -1;
    it->cb = cb;
    it->arg = arg;
    it->rpm = rpm;
    it->tpm = tpm;
    it->rburst = num(l, "burst_requests", fmax(1, ceil(rpm / 60)));
    it->tburst = num(l, "burst_tokens", fmax(1, ceil(tpm / 60)));
    it->rcost = requests > 0 ? requests : 1;
    it->tcost = (double)tokens;
    it->request_id = request_id ? strdup(request_id) : NULL;
    it->tenant_id = strdup(tenant);
    it->key = strdup(key);
    it->body = msg && msg->value ? strndup(msg->value, msg->len) : NULL;
    char tp[128];
    if (msg && gt_msg_header(msg, "traceparent", tp, sizeof(tp)))
        it->traceparent = strdup(tp);
    if (!rl->pending && (rl->pending = calloc(1, sizeof(*rl->pending))))
        rl->pending->rl = rl;
    if (!it->request_id || !it->tenant_id || !it->key || !it->body || !rl->pending ||
        batch_add(rl->pending, it) != 0) {
        item_free(it);
        return -1;
    }
    if (rl->pending->n == 1)
        uv_timer_start(&rl->flush, on_flush, 0, 0);
    return 0;
}

int64_t gt_ratelimit_estimate(const gt_config_t *cfg, const json_t *req, int tasks)
{
    const json_t *input = json_object_get(req, "input");
    size_t chars = json_is_string(input) ? json_string_length(input)
                   : input               ? json_dumpb(input, NULL, 0, JSON_COMPACT)
                                         : 0;
    const json_t *mt = json_object_get(json_object_get(req, "parameters"), "max_tokens");
    int64_t per_task = json_is_integer(mt) ? (int64_t)json_integer_value(mt)
                                           : (int64_t)num(limits(cfg), "default_max_tokens", 256);
    return (int64_t)(chars / 4) + per_task * (tasks > 0 ? tasks : 1);
}

/* ---- the releaser ---- */

typedef struct released {
    gt_ratelimit_t *rl;
    char *request_id;
} released_t;

static void released_free(released_t *r)
{
    free(r->request_id);
    free(r);
}

static void on_sent(void *arg)
{
    released_free(arg);
}

/* err 0: stopping; the hold is released again once stale. Else the requests
 * topic refuses the bytes (they came from it): logged, sent again once stale. */
static void on_send_failed(const char *topic, int err, const char *reason, void *arg)
{
    released_t *r = arg;
    if (err)
        gt_log(GT_LOG_ERROR, &(gt_log_ctx_t){.request_id = r->request_id},
               "rate limit: cannot hand the held request back to %s: %s", topic, reason);
    released_free(r);
}

static void on_released(const PGresult *res, const char *err, void *arg)
{
    gt_ratelimit_t *rl = arg;
    rl->releasing = 0;
    if (err) {
        if (!rl->closed)
            gt_error("rate limit: releasing held requests failed: %s", err);
        return;
    }
    gt_dispatcher_t *d = rl->d;
    for (int i = 0; i < PQntuples(res); i++) {
        released_t *r = calloc(1, sizeof(*r));
        const char *id = PQgetvalue(res, i, 0), *body = PQgetvalue(res, i, 1);
        gt_header_t h = {"traceparent", PQgetvalue(res, i, 2)};
        gt_effect_t *e = r ? gt_effect_new(d->effects, on_sent, on_send_failed, r) : NULL;
        if (!e || !(r->request_id = strdup(id)) ||
            gt_effect_add(e, d->cfg->topics.requests, id, strlen(id), body, strlen(body), &h,
                          PQgetisnull(res, i, 2) ? 0 : 1) != 0) {
            gt_error("rate limit: out of memory handing %s back; sent again once stale", id);
            if (e)
                gt_effect_abandon(e);
            if (r)
                released_free(r);
            continue;
        }
        json_t *req = json_loads(body, 0, NULL);
        gt_metric_add(m_decisions(), 1, json_string_value(json_object_get(req, "tenant_id")),
                      "released");
        json_decref(req);
        gt_effect_seal(e);
    }
}

static void on_release_tick(uv_timer_t *t)
{
    gt_ratelimit_t *rl = t->data;
    if (rl->releasing || rl->closed || !rl->d->pg)
        return;
    const char *params[] = {rl->d->id, RELEASE_LIMIT, STALE_MS};
    rl->releasing = 1;
    if (gt_pg_query(rl->d->pg, sql_release, 3, params, on_released, rl) != 0)
        rl->releasing = 0;
}

gt_ratelimit_t *gt_ratelimit_new(gt_dispatcher_t *d)
{
    gt_ratelimit_t *rl = calloc(1, sizeof(*rl));
    if (!rl)
        return NULL;
    rl->d = d;
    uv_timer_init(d->loop, &rl->flush);
    uv_timer_init(d->loop, &rl->release);
    rl->flush.data = rl->release.data = rl;
    if (limits(d->cfg) && d->pg) {
        int64_t every = (int64_t)num(limits(d->cfg), "release_ms", 250);
        uv_timer_start(&rl->release, on_release_tick, (uint64_t)every, (uint64_t)every);
    }
    return rl;
}

static void on_timer_closed(uv_handle_t *h)
{
    gt_ratelimit_t *rl = h->data;
    rl->timers--;
}

void gt_ratelimit_close(gt_ratelimit_t *rl)
{
    if (!rl || rl->closed)
        return;
    rl->closed = 1;
    if (rl->pending) /* never sent: not admitted, their messages stay undone */
        batch_answer_all(rl->pending, GT_RATE_FAILED, "closed");
    rl->pending = NULL;
    rl->timers = 2;
    uv_close((uv_handle_t *)&rl->flush, on_timer_closed);
    uv_close((uv_handle_t *)&rl->release, on_timer_closed);
}

void gt_ratelimit_free(gt_ratelimit_t *rl)
{
    free(rl);
}

/* ---- configuration ---- */

static void check_limit(gt_cfg_ctx_t *c, json_t *l, const char *path, int models)
{
    static const char *const keys[] = {"requests_per_minute",
                                       "tokens_per_minute",
                                       "burst_requests",
                                       "burst_tokens",
                                       "models",
                                       NULL};
    if (!json_is_object(l)) {
        gt_cfg_problem(c, path, "must be an object");
        return;
    }
    gt_cfg_check_keys(c, l, path, keys);
    gt_cfg_num(c, l, "requests_per_minute", path, 0, 0, 1e9);
    gt_cfg_num(c, l, "tokens_per_minute", path, 0, 0, 1e12);
    gt_cfg_num(c, l, "burst_requests", path, 1, 1, 1e9);
    gt_cfg_num(c, l, "burst_tokens", path, 1, 1, 1e12);
    json_t *m = json_object_get(l, "models");
    if (m && !models) {
        gt_cfg_problem(c, path, "\"models\" is only allowed in a tenant's entry");
        return;
    }
    if (m && !json_is_object(m)) {
        char *sub = gt_cfg_join(path, "models");
        gt_cfg_problem(c, sub, "must be an object");
        free(sub);
        return;
    }
    const char *name;
    json_t *v;
    json_object_foreach (m, name, v) {
        char sub[600];
        snprintf(sub, sizeof(sub), "%s.models.%s", path, name);
        check_limit(c, v, sub, 0);
    }
}

void gt_ratelimit_config_check(gt_cfg_ctx_t *c, json_t *dispatcher)
{
    static const char *const keys[] = {"on_limit", "release_ms", "default_max_tokens",
                                       "default",  "tenants",    NULL};
    const char *path = "dispatcher.rate_limits";
    json_t *l = gt_cfg_obj(c, dispatcher, "rate_limits", "dispatcher", 0);
    if (!l)
        return;
    gt_cfg_check_keys(c, l, path, keys);
    char *mode = gt_cfg_str(c, l, "on_limit", path, "wait", 0);
    if (mode && strcmp(mode, "wait") != 0 && strcmp(mode, "reject") != 0)
        gt_cfg_problem(c, "dispatcher.rate_limits.on_limit", "must be wait or reject");
    free(mode);
    gt_cfg_int(c, l, "release_ms", path, 250, 10, 60000);
    gt_cfg_int(c, l, "default_max_tokens", path, 256, 0, 10000000);
    json_t *def = json_object_get(l, "default");
    if (def)
        check_limit(c, def, "dispatcher.rate_limits.default", 0);
    json_t *tenants = gt_cfg_obj(c, l, "tenants", path, 0);
    const char *name;
    json_t *v;
    json_object_foreach (tenants, name, v) {
        char sub[600];
        snprintf(sub, sizeof(sub), "%s.tenants.%s", path, name);
        check_limit(c, v, sub, 1);
    }
}
