/* budget.c - budget admission: one conditional upsert on the tenant's period
 * row (budget_periods) reserves the job's estimated cost only while
 * spent + reserved + estimate stays within the hard limit, and records the
 * soft thresholds it crossed (budget_warnings) so each is announced once. */
#include "budget.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "message.h"

typedef struct admit {
    gt_dispatcher_t *d;
    gt_budget_cb cb;
    void *arg;
    char *tenant_id;
    char currency[4];
    int64_t monthly, hard;
} admit_t;

/* $1 tenant, $2 request_id, $3 tasks, $4 hard limit, $5 monthly budget,
 * $6 soft thresholds (int[]), $7 estimate per task (NULL: the period's mean
 * cost per usage row), $8 currency. The row lock taken by the upsert
 * serialises dispatchers; a row created mid-period starts from the usage
 * already costed in that period. */
static const char sql_admit[] =
    "WITH per AS (SELECT billing_period(now()) AS period),"
    " known AS (SELECT 1 FROM jobs WHERE request_id = $2::text"
    "  UNION ALL SELECT 1 FROM budget_reservations WHERE request_id = $2::text),"
    " cur AS (SELECT b.* FROM budget_periods b, per"
    "  WHERE b.tenant_id = $1::text AND b.period = per.period),"
    " seed AS (SELECT coalesce(sum(u.cost_micros), 0) AS spent,"
    "   count(u.cost_micros) AS n FROM usage u, per"
    "  WHERE NOT EXISTS (SELECT 1 FROM cur) AND u.tenant_id = $1::text"
    "   AND u.occurred_at >= billing_period_start(per.period)),"
    " est AS (SELECT $3::bigint * coalesce($7::bigint,"
    "   (SELECT CASE WHEN usage_rows > 0 THEN spent_micros / usage_rows END FROM cur),"
    "   (SELECT CASE WHEN n > 0 THEN spent / n END FROM seed), 0) AS micros),"
    " up AS ("
    "  INSERT INTO budget_periods AS b (tenant_id, period, currency, monthly_micros,"
    "   hard_limit_micros, spent_micros, usage_rows, reserved_micros)"
    "  SELECT $1::text, per.period, $8::text, $5::bigint, $4::bigint, seed.spent, seed.n, "
    "est.micros FROM per, seed, est"
    "  WHERE NOT EXISTS (SELECT 1 FROM known) AND seed.spent + est.micros <= $4::bigint"
    "  ON CONFLICT (tenant_id, period) DO UPDATE"
    "   SET reserved_micros = b.reserved_micros + EXCLUDED.reserved_micros,"
    "       hard_limit_micros = EXCLUDED.hard_limit_micros,"
    "       monthly_micros = EXCLUDED.monthly_micros, updated_at = now()"
    "   WHERE b.spent_micros + b.reserved_micros + EXCLUDED.reserved_micros"
    "         <= EXCLUDED.hard_limit_micros"
    "  RETURNING b.period, b.spent_micros, b.reserved_micros),"
    " rsv AS ("
    "  INSERT INTO budget_reservations (request_id, tenant_id, period, micros)"
    "  SELECT $2::text, $1::text, up.period, est.micros FROM up, est WHERE est.micros > 0"
    "  ON CONFLICT (request_id) DO NOTHING),"
    " rej AS ("
    "  UPDATE budget_periods b SET rejected = b.rejected + 1 FROM per"
    "  WHERE b.tenant_id = $1::text AND b.period = per.period"
    "   AND NOT EXISTS (SELECT 1 FROM known) AND NOT EXISTS (SELECT 1 FROM up)"
    "  RETURNING b.spent_micros, b.reserved_micros),"
    " lvl AS (SELECT period, spent_micros + reserved_micros AS used FROM up"
    "  UNION ALL SELECT period, spent_micros + reserved_micros FROM cur"
    "  WHERE NOT EXISTS (SELECT 1 FROM up)),"
    " warn AS ("
    "  INSERT INTO budget_warnings (tenant_id, period, threshold_pct, used_micros)"
    "  SELECT $1::text, lvl.period, t, lvl.used FROM lvl, unnest($6::int[]) AS t"
    "  WHERE lvl.used * 100 >= t::bigint * $5::bigint"
    "  ON CONFLICT DO NOTHING RETURNING threshold_pct, used_micros)"
    " SELECT CASE WHEN EXISTS (SELECT 1 FROM known) THEN 'known'"
    "             WHEN EXISTS (SELECT 1 FROM up) THEN 'admitted' ELSE 'rejected' END,"
    "  (SELECT to_char(period, 'YYYY-MM') FROM per),"
    "  coalesce((SELECT spent_micros FROM up), (SELECT spent_micros FROM cur), 0),"
    "  coalesce((SELECT reserved_micros FROM up), (SELECT reserved_micros FROM cur), 0),"
    "  (SELECT micros FROM est),"
    "  (SELECT coalesce(json_agg(json_build_array(threshold_pct, used_micros)"
    "          ORDER BY threshold_pct), '[]') FROM warn)";

static void admit_free(admit_t *a)
{
    free(a->tenant_id);
    free(a);
}

static void warn(admit_t *a, const char *period, int pct, long long used)
{
    char event_id[512];
    snprintf(event_id, sizeof(event_id), "budget.warning:%s:%s:%d", a->tenant_id, period, pct);
    json_t *ev =
        gt_event_build("budget.warning", a->d->id, event_id,
                       json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:I}", "tenant_id", a->tenant_id,
                                 "period", period, "currency", a->currency, "threshold_pct", pct,
                                 "used_micros", (json_int_t)used, "monthly_micros",
                                 (json_int_t)a->monthly, "hard_limit_micros", (json_int_t)a->hard));
    gt_log(GT_LOG_WARN, &(gt_log_ctx_t){.tenant_id = a->tenant_id},
           "budget: %s used %lld of %lld micros (%d%% threshold) in %s", a->tenant_id, used,
           (long long)a->monthly, pct, period);
    if (ev && gt_effect_send_json(a->d->effects, a->d->cfg->topics.events, a->tenant_id, ev, NULL,
                                  0) != 0)
        gt_error("cannot queue budget.warning for %s", a->tenant_id);
    json_decref(ev);
}

static void on_admit(const PGresult *res, const char *err, void *arg)
{
    admit_t *a = arg;
    if (err || PQntuples(res) != 1) {
        /* Never admitted unchecked: transient failures were retried by gt_pg,
         * so this is a permanent error (or the process is stopping). */
        gt_log(GT_LOG_ERROR, &(gt_log_ctx_t){.tenant_id = a->tenant_id},
               "budget check failed, not admitting: %s", err ? err : "no answer");
        a->cb(-1, err ? err : "budget check: no answer", a->arg);
        admit_free(a);
        return;
    }
    const char *verdict = PQgetvalue(res, 0, 0), *period = PQgetvalue(res, 0, 1);
    long long spent = atoll(PQgetvalue(res, 0, 2)), reserved = atoll(PQgetvalue(res, 0, 3)),
              est = atoll(PQgetvalue(res, 0, 4));
    json_t *warns = json_loads(PQgetvalue(res, 0, 5), 0, NULL);
    size_t i;
    json_t *w;
    json_array_foreach (warns, i, w)
        warn(a, period, (int)json_integer_value(json_array_get(w, 0)),
             (long long)json_integer_value(json_array_get(w, 1)));
    json_decref(warns);
    if (strcmp(verdict, "rejected") == 0) {
        char reason[256];
        snprintf(reason, sizeof(reason),
                 "tenant %s reached its hard limit for %s: %lld spent + %lld reserved + %lld "
                 "estimated > %lld micro-%s",
                 a->tenant_id, period, spent, reserved, est, (long long)a->hard, a->currency);
        a->d->budget_rejections++;
        gt_stats_budget_rejection(a->tenant_id);
        a->cb(0, reason, a->arg);
    } else {
        a->cb(1, NULL, a->arg);
    }
    admit_free(a);
}

int gt_budget_admit(gt_dispatcher_t *d, const char *tenant_id, const char *request_id, int tasks,
                    gt_budget_cb cb, void *arg)
{
    const gt_tenant_t *t = gt_config_tenant(d->cfg, tenant_id);
    if (!t || !t->budget.has_budget || !d->pg)
        return 1;
    const struct gt_budget *b = &t->budget;
    admit_t *a = calloc(1, sizeof(*a));
    if (!a)
        return -1;
    a->d = d;
    a->cb = cb;
    a->arg = arg;
    a->tenant_id = strdup(tenant_id);
    snprintf(a->currency, sizeof(a->currency), "%s", b->currency);
    a->monthly = b->monthly_micros;
    a->hard = b->hard_limit_micros;
    char n_tasks[16], hard[24], monthly[24], per_task[24], thresholds[128];
    snprintf(n_tasks, sizeof(n_tasks), "%d", tasks);
    snprintf(hard, sizeof(hard), "%lld", (long long)b->hard_limit_micros);
    snprintf(monthly, sizeof(monthly), "%lld", (long long)b->monthly_micros);
    snprintf(per_task, sizeof(per_task), "%lld", (long long)b->reserve_micros_per_task);
    size_t off = (size_t)snprintf(thresholds, sizeof(thresholds), "{");
    for (int i = 0; i < b->n_thresholds; i++)
        off += (size_t)snprintf(thresholds + off, sizeof(thresholds) - off, "%s%d", i ? "," : "",
                                b->thresholds_pct[i]);
    snprintf(thresholds + off, sizeof(thresholds) - off, "}");
    const char *params[] = {tenant_id,
                            request_id,
                            n_tasks,
                            hard,
                            monthly,
                            thresholds,
                            b->reserve_micros_per_task >= 0 ? per_task : NULL,
                            b->currency};
    if (gt_pg_query(d->pg, sql_admit, 8, params, on_admit, a) != 0) {
        admit_free(a);
        return -1;
    }
    return 0;
}

static void on_released(const PGresult *res, const char *err, void *arg)
{
    (void)res;
    if (err)
        gt_log(GT_LOG_ERROR, &(gt_log_ctx_t){.request_id = arg},
               "releasing the budget reservation failed: %s", err);
    free(arg);
}

void gt_budget_release(gt_dispatcher_t *d, const char *request_id)
{
    static const char sql[] =
        "WITH r AS (DELETE FROM budget_reservations WHERE request_id = $1::text"
        "  AND NOT EXISTS (SELECT 1 FROM jobs WHERE request_id = $1::text)"
        "  RETURNING tenant_id, period, micros)"
        " UPDATE budget_periods b SET reserved_micros = greatest(0, b.reserved_micros - r.micros),"
        "  updated_at = now() FROM r WHERE b.tenant_id = r.tenant_id AND b.period = r.period";
    char *id = d->pg ? strdup(request_id) : NULL;
    const char *params[] = {request_id};
    if (id && gt_pg_query(d->pg, sql, 1, params, on_released, id) != 0)
        free(id);
}
