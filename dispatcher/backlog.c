/* backlog.c - the backlog gauges: one grouped query on the unfinished task
 * rows (index tasks_unfinished) and the rate limit holds, every
 * dispatcher.backlog_ms, never per request. */
#include "backlog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

struct gt_backlog {
    gt_dispatcher_t *d;
    uv_timer_t tick;
    int querying, closed;
    json_t *seen; /* "lane\ttenant" and "\ttenant" (holds) -> true: series to zero when gone */
};

/* Rows (kind, lane, tenant, waiting, running, oldest waiting seconds): kind
 * 't' per lane and tenant with unfinished inference tasks, 'h' per tenant
 * with requests held by its rate limit. */
static const char sql_backlog[] =
    "SELECT 't', t.lane, j.tenant_id,"
    "  count(*) FILTER (WHERE t.status IN ('pending', 'queued')),"
    "  count(*) FILTER (WHERE t.status = 'running'),"
    "  coalesce(extract(epoch FROM now() - min(j.created_at)"
    "    FILTER (WHERE t.status IN ('pending', 'queued'))), 0)"
    " FROM tasks t JOIN jobs j ON j.request_id = t.request_id"
    " WHERE t.status IN ('pending', 'queued', 'running') AND t.kind = 'inference'"
    " GROUP BY t.lane, j.tenant_id"
    " UNION ALL"
    " SELECT 'h', '', h.tenant_id, count(*), 0, 0 FROM rate_holds h"
    " WHERE h.released_at IS NULL GROUP BY h.tenant_id";

static gt_metric_t *m_tasks(void)
{
    return gt_metrics_gauge("gantry_backlog_tasks",
                            "Inference tasks not finished, per lane and tenant, by state: waiting "
                            "(not started: in PostgreSQL or on the lane topic) or running",
                            "lane,tenant,state");
}

static gt_metric_t *m_oldest(void)
{
    return gt_metrics_gauge("gantry_backlog_oldest_waiting_seconds",
                            "Age of the oldest waiting task per lane and tenant, from its job's "
                            "creation; 0 when none waits",
                            "lane,tenant");
}

static gt_metric_t *m_held(void)
{
    return gt_metrics_gauge("gantry_rate_limit_held",
                            "Requests held by their tenant's rate limit, waiting for the bucket",
                            "tenant");
}

static void set_series(const char *lane, const char *tenant, double waiting, double running,
                       double oldest, int hold)
{
    if (hold) {
        gt_metric_set(m_held(), waiting, tenant);
        return;
    }
    gt_metric_set(m_tasks(), waiting, lane, tenant, "waiting");
    gt_metric_set(m_tasks(), running, lane, tenant, "running");
    gt_metric_set(m_oldest(), oldest, lane, tenant);
}

static void on_backlog(const PGresult *res, const char *err, void *arg)
{
    gt_backlog_t *b = arg;
    b->querying = 0;
    if (err) {
        if (!b->closed)
            gt_warn("backlog query failed (gauges keep their last values): %s", err);
        return;
    }
    json_t *now = json_object();
    for (int i = 0; now && i < PQntuples(res); i++) {
        int hold = PQgetvalue(res, i, 0)[0] == 'h';
        const char *lane = PQgetvalue(res, i, 1), *tenant = PQgetvalue(res, i, 2);
        char key[600];
        snprintf(key, sizeof(key), "%s\t%s", hold ? "" : lane, tenant);
        json_object_set_new(now, key, json_true());
        set_series(lane, tenant, atof(PQgetvalue(res, i, 3)), atof(PQgetvalue(res, i, 4)),
                   atof(PQgetvalue(res, i, 5)), hold);
    }
    const char *key;
    json_t *v;
    json_object_foreach (b->seen, key, v) {
        if (!now || json_object_get(now, key))
            continue;
        const char *tab = strchr(key, '\t');
        char lane[512];
        snprintf(lane, sizeof(lane), "%.*s", (int)(tab - key), key);
        set_series(lane, tab + 1, 0, 0, 0, lane[0] == '\0');
    }
    if (now) {
        json_object_update(b->seen, now);
        json_decref(now);
    }
}

static void on_tick(uv_timer_t *t)
{
    gt_backlog_t *b = t->data;
    if (b->querying || b->closed || !b->d->pg)
        return;
    b->querying = 1;
    if (gt_pg_query(b->d->pg, sql_backlog, 0, NULL, on_backlog, b) != 0)
        b->querying = 0;
}

gt_backlog_t *gt_backlog_new(gt_dispatcher_t *d)
{
    gt_backlog_t *b = calloc(1, sizeof(*b));
    if (!b || !(b->seen = json_object())) {
        free(b);
        return NULL;
    }
    b->d = d;
    uv_timer_init(d->loop, &b->tick);
    b->tick.data = b;
    const json_t *ms = json_object_get(json_object_get(d->cfg->root, "dispatcher"), "backlog_ms");
    int64_t every = json_is_integer(ms) ? (int64_t)json_integer_value(ms) : 5000;
    if (every > 0 && d->pg)
        uv_timer_start(&b->tick, on_tick, 0, (uint64_t)every);
    return b;
}

void gt_backlog_close(gt_backlog_t *b)
{
    if (!b || b->closed)
        return;
    b->closed = 1;
    uv_close((uv_handle_t *)&b->tick, NULL);
}

void gt_backlog_free(gt_backlog_t *b)
{
    if (!b)
        return;
    json_decref(b->seen);
    free(b);
}
