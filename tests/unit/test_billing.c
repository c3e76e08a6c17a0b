/* test_billing.c - billing on a real PostgreSQL: costing through the ledger's
 * own statement, price versions, invoice runs, immutability, late usage,
 * the finance role and the exact sums. */
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "dispatcher.h"
#include "dispatcher_config.h"
#include "harness.h"
#include "ledger_rows.h"
#include "pg.h"

static PGconn *db(void)
{
    char conninfo[512], err[512];
    CU_ASSERT_FATAL(th_pg_create_db(conninfo, sizeof(conninfo)) == 0);
    PGconn *c = gt_pg_connect_sync(conninfo, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    if (gt_pg_migrate(c, th_src("migrations"), err, sizeof(err)) < 0)
        fprintf(stderr, "migrate: %s\n", err);
    return c;
}

/* Runs sql (printf-style); returns 0 when it succeeded. */
static int run(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(PGconn *c, const char *fmt, ...)
{
    char sql[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok ? 0 : -1;
}

/* First column of the first row as a number (-1 on error or NULL). */
static long long num(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static long long num(PGconn *c, const char *fmt, ...)
{
    char sql[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = atoll(PQgetvalue(r, 0, 0));
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "  query failed: %s  %s\n", sql, PQerrorMessage(c));
    PQclear(r);
    return v;
}

static void price(PGconn *c, const char *json)
{
    const char *params[] = {json};
    PGresult *r = PQexecParams(c, "SELECT billing_load_price($1::jsonb, 'test')", 1, NULL, params,
                               NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "  price: %s", PQerrorMessage(c));
    CU_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
}

/* Inserts events (a JSON array text) with the ledger's statement, as the ledger
 * builds its parameters; returns rows inserted. */
static long long ledger(PGconn *c, const char *events)
{
    json_t *arr = json_loads(events, 0, NULL);
    gt_ledger_rows_t *rows = gt_ledger_rows_new();
    const char *params[GT_LEDGER_NPARAMS];
    int lengths[GT_LEDGER_NPARAMS], formats[GT_LEDGER_NPARAMS];
    CU_ASSERT_FATAL(arr != NULL && rows != NULL);
    for (size_t i = 0; i < json_array_size(arr); i++)
        CU_ASSERT_FATAL(gt_ledger_rows_add(rows, json_array_get(arr, i)) == 0);
    CU_ASSERT_FATAL(gt_ledger_rows_params(rows, params, lengths, formats) == 0);
    PGresult *r = PQexecParams(c, gt_ledger_insert_sql(), GT_LEDGER_NPARAMS, NULL, params, lengths,
                               formats, 0);
    json_decref(arr);
    gt_ledger_rows_free(rows);
    long long n = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        n = atoll(PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "  ledger: %s", PQerrorMessage(c));
    PQclear(r);
    return n;
}

/* One usage event as JSON (into buf). */
static const char *event(char *buf, size_t len, const char *id, const char *tenant,
                         const char *model, long prompt, long completion, const char *alloc_s,
                         const char *at)
{
    snprintf(buf, len,
             "{\"event_id\":\"%s\",\"request_id\":\"r-%s\",\"task_id\":\"r-%s/0\","
             "\"tenant_id\":\"%s\",\"model\":\"%s\",\"provider\":\"hostedai\",\"pool\":\"p\","
             "\"allocation_id\":\"a\",\"allocation_seconds\":%s,\"tflops\":50,\"vram_mb\":16000,"
             "\"prompt_tokens\":%ld,\"completion_tokens\":%ld,\"request_bytes\":1,"
             "\"response_bytes\":1,\"attempts\":1,\"durations\":{},\"occurred_at\":\"%s\"}",
             id, id, id, tenant, model, alloc_s, prompt, completion, at);
    return buf;
}

static long long one(PGconn *c, const char *id, const char *tenant, const char *model, long prompt,
                     long completion, const char *alloc_s, const char *at)
{
    char ev[2048], arr[2100];
    event(ev, sizeof(ev), id, tenant, model, prompt, completion, alloc_s, at);
    snprintf(arr, sizeof(arr), "[%s]", ev);
    return ledger(c, arr);
}

static const char price_m1_v1[] =
    "{\"provider\":\"hostedai\",\"model\":\"m1\",\"currency\":\"USD\","
    "\"effective_from\":\"2026-01-01T00:00:00Z\",\"prompt_per_1k_micros\":1500,"
    "\"completion_per_1k_micros\":2000,\"request_micros\":100,\"allocation_second_micros\":10,"
    "\"gpu_classes\":[{\"min_tflops\":40,\"min_vram_mb\":8000,\"allocation_second_micros\":700},"
    "{\"min_tflops\":100,\"min_vram_mb\":80000,\"allocation_second_micros\":3000}]}";
/* From 2026-09-15 the prompt price doubles. */
static const char price_m1_v2[] =
    "{\"provider\":\"hostedai\",\"model\":\"m1\",\"currency\":\"USD\","
    "\"effective_from\":\"2026-09-15T00:00:00Z\",\"prompt_per_1k_micros\":3000,"
    "\"completion_per_1k_micros\":2000,\"request_micros\":100,\"allocation_second_micros\":10}";

static void test_price_change_mid_period(void)
{
    PGconn *c = db();
    price(c, price_m1_v1);
    price(c, price_m1_v2);
    /* before and after the change; 333 tokens * 1.5 = 499.5 -> 500 (half up) */
    TH_EQ_INT(one(c, "e1", "t1", "m1", 333, 1000, "2.5", "2026-09-14T23:59:59.999Z"), 1);
    TH_EQ_INT(one(c, "e2", "t1", "m1", 333, 1000, "2.5", "2026-09-15T00:00:00Z"), 1);
    /* (migration 060 also loads the zero ('cache', '*') list price, from 1970) */
    long long v1 = num(c, "SELECT price_id FROM prices WHERE model = 'm1'"
                          " AND effective_from < '2026-02-01'");
    long long v2 = num(c, "SELECT price_id FROM prices WHERE model = 'm1'"
                          " AND effective_from > '2026-02-01'");
    TH_EQ_INT(num(c, "SELECT price_id FROM usage WHERE event_id = 'e1'"), v1);
    TH_EQ_INT(num(c, "SELECT price_id FROM usage WHERE event_id = 'e2'"), v2);
    /* e1: 500 + 2000 + 2.5 s * 700 (GPU class 40 TFLOPS/8 GB) + 100 */
    TH_EQ_INT(num(c, "SELECT cost_prompt_micros FROM usage WHERE event_id = 'e1'"), 500);
    TH_EQ_INT(num(c, "SELECT cost_micros FROM usage WHERE event_id = 'e1'"),
              500 + 2000 + 1750 + 100);
    /* e2: 333 * 3 = 999, the new version has no GPU classes: 2.5 s * 10 */
    TH_EQ_INT(num(c, "SELECT cost_micros FROM usage WHERE event_id = 'e2'"), 999 + 2000 + 25 + 100);
    TH_EQ_INT(num(c, "SELECT billing_invoice_run('2026-09-01')"), 1);
    /* one line per price version and component */
    TH_EQ_INT(num(c, "SELECT count(DISTINCT price_id) FROM invoice_lines"), 2);
    TH_EQ_INT(num(c,
                  "SELECT amount_micros FROM invoice_lines WHERE price_id = %lld"
                  " AND component = 'prompt_tokens'",
                  v1),
              500);
    TH_EQ_INT(num(c,
                  "SELECT unit_price_micros FROM invoice_lines WHERE price_id = %lld"
                  " AND component = 'prompt_tokens'",
                  v2),
              3000);
    TH_EQ_INT(num(c, "SELECT total_micros FROM invoices"), 4350 + 3124);
    /* a tenant override wins over the list price while in force */
    price(c,
          "{\"provider\":\"hostedai\",\"model\":\"m1\",\"tenant_id\":\"vip\",\"currency\":\"USD\","
          "\"effective_from\":\"2026-01-01T00:00:00Z\",\"prompt_per_1k_micros\":1}");
    TH_EQ_INT(one(c, "e3", "vip", "m1", 1000, 0, "0", "2026-10-01T00:00:00Z"), 1);
    TH_EQ_INT(num(c, "SELECT cost_micros FROM usage WHERE event_id = 'e3'"), 1);
    /* prices are never edited in place */
    CU_ASSERT(run(c, "UPDATE prices SET prompt_per_1k_micros = 1") != 0);
    CU_ASSERT(run(c, "DELETE FROM prices") != 0);
    /* the same version with other figures is refused; identical is a no-op */
    char changed[sizeof(price_m1_v2) + 8];
    snprintf(changed, sizeof(changed), "%s", price_m1_v2);
    memcpy(strstr(changed, "3000"), "3001", 4);
    const char *params[] = {changed};
    PGresult *r = PQexecParams(c, "SELECT billing_load_price($1::jsonb, 'x')", 1, NULL, params,
                               NULL, NULL, 0);
    CU_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR);
    PQclear(r);
    TH_EQ_INT(num(c, "SELECT count(*) FROM prices WHERE provider <> 'cache'"),
              3); /* + 060's cache price */
    PQfinish(c);
}

static void test_invoice_run_idempotent_and_redelivery(void)
{
    PGconn *c = db();
    price(c, price_m1_v1);
    char batch[8192], ev[2048];
    size_t off = (size_t)snprintf(batch, sizeof(batch), "[");
    for (int i = 0; i < 3; i++) {
        char id[16], at[40];
        snprintf(id, sizeof(id), "x%d", i);
        snprintf(at, sizeof(at), "2026-10-0%dT10:00:00Z", i + 1);
        off += (size_t)snprintf(
            batch + off, sizeof(batch) - off, "%s%s", i ? "," : "",
            event(ev, sizeof(ev), id, i == 2 ? "t2" : "t1", "m1", 1001, 7, "0.333", at));
    }
    snprintf(batch + off, sizeof(batch) - off, "]");
    TH_EQ_INT(ledger(c, batch), 3);
    long long total = num(c, "SELECT sum(cost_micros) FROM usage");
    /* the same batch again (Kafka redelivery), and one event re-run later with
     * another occurred_at: no new row, no new cost */
    TH_EQ_INT(ledger(c, batch), 0);
    TH_EQ_INT(one(c, "x1", "t1", "m1", 1001, 7, "0.333", "2026-10-09T00:00:00Z"), 0);
    TH_EQ_INT(num(c, "SELECT sum(cost_micros) FROM usage"), total);
    TH_EQ_INT(num(c, "SELECT billing_invoice_run('2026-10-01')"), 2);
    long long invoices = num(c, "SELECT count(*) FROM invoices"),
              lines = num(c, "SELECT count(*) FROM invoice_lines");
    TH_EQ_INT(num(c, "SELECT billing_invoice_run('2026-10-01')"), 0);
    TH_EQ_INT(num(c, "SELECT billing_invoice_run('2026-10-01', 't1')"), 0);
    TH_EQ_INT(num(c, "SELECT count(*) FROM invoices"), invoices);
    TH_EQ_INT(num(c, "SELECT count(*) FROM invoice_lines"), lines);
    /* totals = sum of lines = sum of costed usage, to the micro-unit */
    TH_EQ_INT(num(c, "SELECT sum(total_micros) FROM invoices"), total);
    TH_EQ_INT(num(c, "SELECT sum(amount_micros) FROM invoice_lines"), total);
    TH_EQ_INT(num(c, "SELECT count(*) FROM invoices i WHERE total_micros <>"
                     " (SELECT sum(amount_micros) FROM invoice_lines l"
                     "   WHERE l.invoice_id = i.invoice_id)"),
              0);
    TH_EQ_INT(num(c, "SELECT total_micros FROM invoices WHERE tenant_id = 't1'"),
              num(c, "SELECT sum(cost_micros) FROM usage WHERE tenant_id = 't1'"));
    /* the current month cannot be invoiced before it ends */
    CU_ASSERT(run(c, "SELECT billing_invoice_run(billing_period(now()))") != 0);
    PQfinish(c);
}

/* A database whose one usage row (tenant t1, model m1 at price_m1_v1) is
 * invoiced for period. */
static PGconn *invoiced(const char *id, long prompt, long completion, const char *alloc_s,
                        const char *at, const char *period)
{
    PGconn *c = db();
    price(c, price_m1_v1);
    TH_EQ_INT(one(c, id, "t1", "m1", prompt, completion, alloc_s, at), 1);
    TH_EQ_INT(num(c, "SELECT billing_invoice_run('%s')", period), 1);
    return c;
}

static void test_issued_invoice_is_immutable(void)
{
    PGconn *c = invoiced("i1", 100, 100, "1", "2026-10-02T00:00:00Z", "2026-10-01");
    CU_ASSERT(run(c, "UPDATE invoices SET total_micros = total_micros + 1") != 0);
    CU_ASSERT(run(c, "DELETE FROM invoices") != 0);
    CU_ASSERT(run(c, "UPDATE invoice_lines SET amount_micros = 0") != 0);
    CU_ASSERT(run(c, "DELETE FROM invoice_lines") != 0);
    CU_ASSERT(run(c, "TRUNCATE invoice_lines, invoices") != 0);
    CU_ASSERT(run(c, "INSERT INTO invoice_lines SELECT invoice_id, 99, kind, usage_period,"
                     " provider, model, price_id, component, quantity, unit, unit_price_micros,"
                     " amount_micros, usage_rows FROM invoice_lines LIMIT 1") != 0);
    TH_EQ_INT(num(c, "SELECT count(*) FROM invoices WHERE status = 'issued'"), 1);
    /* lines are checked per statement (migration 016): an invoice and a price must exist,
     * and a draft invoice with lines cannot be deleted */
    long long pid = num(c, "SELECT price_id FROM prices WHERE model = 'm1'");
    CU_ASSERT_FATAL(run(c, "INSERT INTO invoices (tenant_id, period, currency, cutoff)"
                           " VALUES ('t2', '2026-10-01', 'USD', now())") == 0);
    long long draft = num(c, "SELECT invoice_id FROM invoices WHERE tenant_id = 't2'");
    static const char line[] = "INSERT INTO invoice_lines VALUES (%lld, 1, 'usage', '2026-10-01',"
                               " 'hostedai', 'm1', %lld, 'requests', 1, 'request', 0, 0, 1)";
    CU_ASSERT(run(c, line, draft + 1000, pid) != 0); /* no such invoice */
    CU_ASSERT(run(c, line, draft, pid + 1000) != 0); /* no such price */
    TH_EQ_INT(run(c, line, draft, pid), 0);
    CU_ASSERT(run(c, "DELETE FROM invoices WHERE invoice_id = %lld", draft) != 0);
    TH_EQ_INT(num(c, "SELECT count(*) FROM invoice_lines WHERE invoice_id = %lld", draft), 1);
    PQfinish(c);
}

static void test_late_usage_is_an_adjustment(void)
{
    PGconn *c = invoiced("s1", 1000, 0, "0", "2026-09-10T00:00:00Z", "2026-09-01");
    long long sept = num(c, "SELECT total_micros FROM invoices WHERE period = '2026-09-01'");
    /* September usage arrives after September was invoiced */
    TH_EQ_INT(one(c, "s2", "t1", "m1", 2000, 0, "0", "2026-09-29T00:00:00Z"), 1);
    TH_EQ_INT(one(c, "o1", "t1", "m1", 1000, 0, "0", "2026-10-03T00:00:00Z"), 1);
    TH_EQ_INT(num(c, "SELECT billing_invoice_run('2026-10-01')"), 1);
    TH_EQ_INT(num(c, "SELECT total_micros FROM invoices WHERE period = '2026-09-01'"), sept);
    TH_EQ_INT(num(c, "SELECT count(*) FROM invoice_lines l JOIN invoices i USING (invoice_id)"
                     " WHERE i.period = '2026-10-01' AND l.kind = 'adjustment'"
                     " AND l.usage_period = '2026-09-01'"),
              2); /* prompt + request */
    long long s2 = num(c, "SELECT cost_micros FROM usage WHERE event_id = 's2'");
    long long o1 = num(c, "SELECT cost_micros FROM usage WHERE event_id = 'o1'");
    TH_EQ_INT(num(c, "SELECT adjustment_micros FROM invoices WHERE period = '2026-10-01'"), s2);
    TH_EQ_INT(num(c, "SELECT total_micros FROM invoices WHERE period = '2026-10-01'"), s2 + o1);
    /* billed once: a later period does not bill it again */
    TH_EQ_INT(num(c, "SELECT sum(total_micros) FROM invoices"),
              num(c, "SELECT sum(cost_micros) FROM usage"));
    PQfinish(c);
}

/* A database with one invoiced usage row, in a session as gantry_finance. */
static PGconn *finance_session(void)
{
    PGconn *c = invoiced("f1", 1000, 0, "0", "2026-10-02T00:00:00Z", "2026-10-01");
    CU_ASSERT_FATAL(run(c, "SET ROLE gantry_finance") == 0);
    return c;
}

/* Finance reads no request, output or raw billing table and changes no price. */
static void test_finance_role_denied(void)
{
    PGconn *c = finance_session();
    CU_ASSERT(run(c, "SELECT request FROM jobs") != 0);
    CU_ASSERT(run(c, "SELECT output FROM tasks") != 0);
    CU_ASSERT(run(c, "SELECT * FROM usage") != 0);
    CU_ASSERT(run(c, "SELECT * FROM invoices") != 0);
    CU_ASSERT(run(c, "INSERT INTO prices (provider, model, currency, effective_from)"
                     " VALUES ('a', 'b', 'USD', now())") != 0);
    CU_ASSERT(run(c, "RESET ROLE") == 0);
    PQfinish(c);
}

/* Finance's views agree with each other and hold the prices. */
static void test_finance_role_views(void)
{
    PGconn *c = finance_session();
    TH_EQ_INT(num(c, "SELECT count(*) FROM finance_invoices"), 1);
    TH_EQ_INT(num(c, "SELECT sum(amount_micros) FROM finance_invoice_lines"),
              num(c, "SELECT total_micros FROM finance_invoices"));
    TH_EQ_INT(num(c, "SELECT sum(cost_micros) FROM finance_usage_daily"),
              num(c, "SELECT total_micros FROM finance_invoices"));
    /* the price loaded here, and migration 060's zero price of cache hits */
    TH_EQ_INT(num(c, "SELECT count(*) FROM finance_prices"), 2);
    TH_EQ_INT(num(c, "SELECT count(*) FROM finance_prices WHERE provider = 'cache'"
                     " AND model = '*' AND request_micros = 0"),
              1);
    CU_ASSERT(run(c, "RESET ROLE") == 0);
    PQfinish(c);
}

static void test_partitions(void)
{
    PGconn *c = db();
    price(c, price_m1_v1);
    /* a month without a partition lands in the default one, and moves out when
     * its partition is created */
    TH_EQ_INT(one(c, "old", "t1", "m1", 1, 0, "0", "2024-02-10T00:00:00Z"), 1);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_default"), 1);
    CU_ASSERT(run(c, "SELECT usage_ensure_partition('2024-02-01')") == 0);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_default"), 0);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_2024_02"), 1);
    CU_ASSERT(run(c, "SELECT usage_detach_partition('2024-02-01')") == 0);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage"), 0);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_2024_02"), 1); /* kept for archiving */
    PQfinish(c);
}

static void test_budget_config(void)
{
    char err[4096] = "";
    gt_config_t *cfg = gt_config_parse(
        "{\"kafka\": {\"bootstrap_servers\": \"x:1\"}, \"pools\": {}, \"models\": {},"
        " \"tenants\": {\"a\": {\"budget\": {\"monthly_micros\": 5000000}},"
        "  \"b\": {\"budget\": {\"currency\": \"EUR\", \"monthly_micros\": 100,"
        "   \"hard_limit_micros\": 120, \"soft_thresholds_pct\": [50, 90],"
        "   \"reserve_micros_per_task\": 7}}, \"c\": {}}}",
        ".", err, sizeof(err));
    if (!cfg)
        fprintf(stderr, "  %s\n", err);
    CU_ASSERT_FATAL(cfg != NULL);
    const gt_tenant_t *a = gt_config_tenant(cfg, "a"), *b = gt_config_tenant(cfg, "b");
    TH_EQ_INT(a->budget.has_budget, 1);
    TH_EQ_STR(a->budget.currency, "USD");
    TH_EQ_INT(a->budget.hard_limit_micros, 5000000);
    TH_EQ_INT(a->budget.n_thresholds, 2);
    TH_EQ_INT(a->budget.thresholds_pct[1], 100);
    TH_EQ_INT(a->budget.reserve_micros_per_task, -1);
    TH_EQ_STR(b->budget.currency, "EUR");
    TH_EQ_INT(b->budget.hard_limit_micros, 120);
    TH_EQ_INT(b->budget.thresholds_pct[0], 50);
    TH_EQ_INT(b->budget.reserve_micros_per_task, 7);
    TH_EQ_INT(gt_config_tenant(cfg, "c")->budget.has_budget, 0);
    gt_config_free(cfg);

    cfg = gt_config_parse(
        "{\"kafka\": {\"bootstrap_servers\": \"x:1\"}, \"pools\": {}, \"models\": {},"
        " \"tenants\": {\"a\": {\"budget\": {\"currency\": \"usd\", \"soft_thresholds_pct\":"
        " [80, 50], \"hard_limit_micros\": 0, \"monthly\": 1}}}}",
        ".", err, sizeof(err));
    CU_ASSERT(cfg == NULL);
    CU_ASSERT(strstr(err, "tenants.a.budget.currency") != NULL);
    CU_ASSERT(strstr(err, "tenants.a.budget.monthly_micros: is required") != NULL);
    CU_ASSERT(strstr(err, "tenants.a.budget.soft_thresholds_pct") != NULL);
    CU_ASSERT(strstr(err, "tenants.a.budget.hard_limit_micros") != NULL);
    CU_ASSERT(strstr(err, "monthly") != NULL);
    gt_config_free(cfg);
}

/* The backbone's usage rows survive the move to the partitioned table. */
static void test_migration_keeps_usage(void)
{
    char conninfo[512], err[512], dir[] = "/tmp/gantry-mig-XXXXXX", cmd[1024];
    CU_ASSERT_FATAL(th_pg_create_db(conninfo, sizeof(conninfo)) == 0);
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s/'", th_src("migrations/001_init.sql"), dir);
    CU_ASSERT_FATAL(system(cmd) == 0);
    PGconn *c = gt_pg_connect_sync(conninfo, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    TH_EQ_INT(gt_pg_migrate(c, dir, err, sizeof(err)), 1);
    CU_ASSERT(run(c, "INSERT INTO usage (event_id, request_id, task_id, tenant_id, model, provider,"
                     " allocation_seconds, prompt_tokens, occurred_at, recorded_at)"
                     " SELECT 'old-' || i, 'r' || i, 'r' || i || '/0', 't1', 'm1', 'hostedai', 1.5,"
                     " 100, '2025-06-01T00:00:00Z'::timestamptz + i * interval '9 days',"
                     " '2025-06-01T00:00:00Z'::timestamptz + i * interval '9 days'"
                     " FROM generate_series(1, 50) i") == 0);
    CU_ASSERT(gt_pg_migrate(c, th_src("migrations"), err, sizeof(err)) >= 1);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage"), 50);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_event_ids"), 50);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_default"), 0); /* every month got a partition */
    TH_EQ_INT(num(c, "SELECT sum(prompt_tokens) FROM usage"), 5000);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage WHERE recorded_at = occurred_at"), 50);
    /* still unique by event_id */
    TH_EQ_INT(one(c, "old-7", "t1", "m1", 1, 1, "1", "2026-10-01T00:00:00Z"), 0);
    PQfinish(c);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CU_ASSERT(system(cmd) == 0);
}

/* Runs `gantry ARGS... --config cfg`; captures stdout into out; returns the exit code. */
static int cli(const char *cfg, char *out, size_t len, const char *a1, const char *a2,
               const char *a3, const char *a4, const char *a5, const char *a6, const char *a7)
{
    const char *argv[] = {th_bin("tools/gantry"), a1, a2, a3, a4, a5, a6, a7, NULL, NULL, NULL};
    int n = 1;
    while (argv[n])
        n++;
    argv[n] = "--config";
    argv[n + 1] = cfg;
    th_proc_t p;
    if (th_proc_start(&p, argv, NULL) != 0)
        return -1;
    size_t used = fread(out, 1, len - 1, p.out);
    out[used] = '\0';
    int st = th_proc_stop(&p, 0, 60000);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void)
{
    char conninfo[512], err[512], cfgtext[1024], out[16384];
    CU_ASSERT_FATAL(th_pg_create_db(conninfo, sizeof(conninfo)) == 0);
    snprintf(cfgtext, sizeof(cfgtext),
             "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:1\"}, \"postgres\": {\"conninfo\":"
             " \"%s\"}, \"pools\": {}, \"models\": {}}",
             conninfo);
    const char *cfg = th_tmpfile(".json", cfgtext);
    TH_EQ_INT(cli(cfg, out, sizeof(out), "migrate", NULL, NULL, NULL, NULL, NULL, NULL), 0);
    const char *prices = th_src("deploy/prices.example.json");
    TH_EQ_INT(cli(cfg, out, sizeof(out), "prices", "load", "--file", prices, NULL, NULL, NULL), 0);
    CU_ASSERT(strstr(out, "6 price(s) loaded, 0 already loaded") != NULL);
    TH_EQ_INT(cli(cfg, out, sizeof(out), "prices", "load", "--file", prices, NULL, NULL, NULL), 0);
    CU_ASSERT(strstr(out, "0 price(s) loaded, 6 already loaded") != NULL);
    const char *bad = th_tmpfile(".json", "{\"prices\": [{\"provider\": \"x\", \"model\": \"y\","
                                          " \"currency\": \"USD\", \"prompt_per_1k_micros\": 1.5,"
                                          " \"effective_from\": \"2026-01-01T00:00:00Z\"}]}");
    TH_EQ_INT(cli(cfg, out, sizeof(out), "prices", "load", "--file", bad, NULL, NULL, NULL), 1);

    PGconn *c = gt_pg_connect_sync(conninfo, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    char ev[2048], batch[4200];
    size_t off = (size_t)snprintf(batch, sizeof(batch), "[");
    off += (size_t)snprintf(batch + off, sizeof(batch) - off, "%s,",
                            event(ev, sizeof(ev), "c1", "acme", "llama-3.1-70b", 1000, 500, "2",
                                  "2026-10-01T10:00:00Z"));
    snprintf(
        batch + off, sizeof(batch) - off, "%s]",
        event(ev, sizeof(ev), "c2", "acme", "llama-3.1-70b", 3000, 0, "1", "2026-10-02T10:00:00Z"));
    TH_EQ_INT(ledger(c, batch), 2);
    /* acme's override (300 / 900 per 1k, 1000 per second) */
    long long total = num(c, "SELECT sum(cost_micros) FROM usage");
    TH_EQ_INT(total, 300 + 450 + 2000 + 900 + 1000);
    TH_EQ_INT(cli(cfg, out, sizeof(out), "invoice", "run", "--period", "2026-10", NULL, NULL, NULL),
              0);
    CU_ASSERT(strstr(out, "2026-10: 1 invoice(s) issued") != NULL);
    TH_EQ_INT(cli(cfg, out, sizeof(out), "invoice", "run", "--period", "2026-10", NULL, NULL, NULL),
              0);
    CU_ASSERT(strstr(out, "2026-10: 0 invoice(s) issued") != NULL);
    TH_EQ_INT(cli(cfg, out, sizeof(out), "invoice", "show", "--period", "2026-10", "--tenant",
                  "acme", NULL),
              0);
    CU_ASSERT(strstr(out, "Total        0.004650 USD") != NULL);
    TH_EQ_INT(cli(cfg, out, sizeof(out), "invoice", "export", "--period", "2026-10", "--format",
                  "csv", NULL),
              0);
    int lines = 0;
    for (const char *q = out; (q = strchr(q, '\n')); q++)
        lines++;
    TH_EQ_INT(lines, 1 + 3); /* header + prompt, completion, allocation */
    TH_EQ_INT(cli(cfg, out, sizeof(out), "invoice", "export", "--period", "2026-10", "--format",
                  "json", NULL),
              0);
    json_t *inv = json_loads(out, 0, NULL);
    TH_EQ_INT(json_integer_value(json_object_get(json_array_get(inv, 0), "total_micros")), total);
    json_decref(inv);
    TH_EQ_INT(
        cli(cfg, out, sizeof(out), "usage", "--tenant", "acme", "--period", "2026-10", NULL, NULL),
        0);
    CU_ASSERT(strstr(out, "0.004650") != NULL);

    const char *match = th_tmpfile(".csv", "date,model,component,quantity\n"
                                           "2026-10-01,llama-3.1-70b,prompt_tokens,1000\n"
                                           "2026-10-02,llama-3.1-70b,prompt_tokens,3000\n"
                                           "2026-10-02,llama-3.1-70b,allocation_seconds,1.000\n"
                                           "2026-10-01,llama-3.1-70b,allocation_seconds,2\n");
    TH_EQ_INT(cli(cfg, out, sizeof(out), "reconcile", "--provider", "hostedai", "--file", match,
                  "--period", "2026-10"),
              0);
    CU_ASSERT(strstr(out, "0 difference(s)") != NULL);
    const char *diff = th_tmpfile(".csv", "date,model,component,quantity\n"
                                          "2026-10-01,llama-3.1-70b,prompt_tokens,1100\n"
                                          "2026-10-03,llama-3.1-70b,prompt_tokens,7\n"
                                          "2026-11-01,llama-3.1-70b,prompt_tokens,7\n");
    TH_EQ_INT(cli(cfg, out, sizeof(out), "reconcile", "--provider", "hostedai", "--file", diff,
                  "--period", "2026-10"),
              1);
    /* 10-01 +100, 10-02 -3000 (provider billed nothing), 10-03 +7; November ignored */
    CU_ASSERT(strstr(out, "3 difference(s), 1 line(s) outside the period ignored") != NULL);
    CU_ASSERT(strstr(out, "2026-10-02  llama-3.1-70b  prompt_tokens") != NULL);
    PQfinish(c);
}

/* Appends one event to a JSON array being built in buf (opened with "["). */
static void add_event(char *buf, size_t len, const char *id, const char *tenant,
                      const char *provider, const char *model, const char *gpu, const char *at)
{
    size_t off = strlen(buf);
    snprintf(buf + off, len - off,
             "%s{\"event_id\":\"%s\",\"request_id\":\"r-%s\",\"task_id\":\"r-%s/0\","
             "\"tenant_id\":\"%s\",\"model\":\"%s\",\"provider\":\"%s\",%s"
             "\"allocation_seconds\":1.2345,\"prompt_tokens\":777,\"completion_tokens\":55,"
             "\"request_bytes\":1,\"response_bytes\":1,\"attempts\":1,"
             "\"durations\":{\"total_ms\":9},\"occurred_at\":\"%s\"}",
             off > 1 ? "," : "", id, id, id, tenant, model, provider, gpu, at);
}

/* The ledger's set-based price lookup picks what billing_price_for picks, for
 * every mix of tenant override, wildcard model, version and GPU class. */
static void test_ledger_costing_matches_price_for(void)
{
    PGconn *c = db();
    price(c, price_m1_v1);
    price(c, price_m1_v2);
    price(c, "{\"provider\":\"hostedai\",\"model\":\"m1\",\"tenant_id\":\"vip\",\"currency\":"
             "\"USD\",\"effective_from\":\"2026-03-01T00:00:00Z\",\"prompt_per_1k_micros\":7,"
             "\"gpu_classes\":[{\"min_tflops\":10,\"min_vram_mb\":1000,"
             "\"allocation_second_micros\":5}]}");
    price(c, "{\"provider\":\"hostedai\",\"model\":\"*\",\"currency\":\"USD\","
             "\"effective_from\":\"2026-05-01T00:00:00Z\",\"prompt_per_1k_micros\":11}");
    price(c, "{\"provider\":\"hostedai\",\"model\":\"*\",\"tenant_id\":\"vip\",\"currency\":"
             "\"USD\",\"effective_from\":\"2026-07-01T00:00:00Z\",\"prompt_per_1k_micros\":13}");
    /* batch versions: the list price of m1, and vip's '*' price */
    price(c, "{\"provider\":\"hostedai\",\"model\":\"m1\",\"batch\":true,\"currency\":\"USD\","
             "\"effective_from\":\"2026-03-01T00:00:00Z\",\"prompt_per_1k_micros\":750}");
    price(c, "{\"provider\":\"hostedai\",\"model\":\"*\",\"tenant_id\":\"vip\",\"batch\":true,"
             "\"currency\":\"USD\",\"effective_from\":\"2026-08-01T00:00:00Z\","
             "\"prompt_per_1k_micros\":6}");
    /* every other event is a line of a batch API's batch */
    CU_ASSERT(run(c,
                  "INSERT INTO api_batches (batch_id, tenant_id, flavor, endpoint, status,"
                  " expires_at) VALUES ('batch_c', 't1', 'openai', '/v1/chat/completions',"
                  " 'in_progress', now() + interval '1 day');"
                  " INSERT INTO api_batch_lines (batch_id, line, custom_id, request_id)"
                  " SELECT 'batch_c', g, 'x' || g, 'r-c' || g FROM generate_series(0, 400, 2) g") ==
              0);
    static const char *const tenants[] = {"t1", "vip"};
    static const char *const models[] = {"m1", "m2"};
    static const char *const providers[] = {"hostedai", "cache", "nobody"};
    static const char *const gpus[] = {"", "\"tflops\":50,\"vram_mb\":16000,",
                                       "\"tflops\":120,\"vram_mb\":90000,",
                                       "\"tflops\":120,\"vram_mb\":4000,"};
    static const char *const ats[] = {"2025-12-31T23:59:59Z",     "2026-02-10T00:00:00Z",
                                      "2026-04-01T00:00:00Z",     "2026-06-01T00:00:00Z",
                                      "2026-09-14T23:59:59.999Z", "2026-09-15T00:00:00Z",
                                      "2026-10-01T00:00:00Z"};
    static char batch[256 * 1024];
    snprintf(batch, sizeof(batch), "[");
    int n = 0;
    for (int t = 0; t < 2; t++)
        for (int m = 0; m < 2; m++)
            for (int p = 0; p < 3; p++)
                for (int g = 0; g < 4; g++)
                    for (int a = 0; a < 7; a++) {
                        char id[32];
                        snprintf(id, sizeof(id), "c%d", n++);
                        add_event(batch, sizeof(batch), id, tenants[t], providers[p], models[m],
                                  gpus[g], ats[a]);
                    }
    strcat(batch, "]");
    TH_EQ_INT(ledger(c, batch), n);
    /* billing_price_for is the reference (row by row, as the ledger did before) */
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage u LEFT JOIN LATERAL billing_price_for("
                     "u.tenant_id, u.provider, u.model, u.occurred_at, u.tflops, u.vram_mb,"
                     " u.batch) p"
                     " ON true WHERE u.price_id IS DISTINCT FROM p.price_id"
                     " OR u.allocation_rate_micros IS DISTINCT FROM p.allocation_second_micros"
                     " OR (p.price_id IS NOT NULL AND (u.cost_prompt_micros IS DISTINCT FROM"
                     "  billing_micros(u.prompt_tokens, p.prompt_per_1k_micros, 1000)"
                     "  OR u.cost_allocation_micros IS DISTINCT FROM"
                     "  billing_micros(u.allocation_seconds, p.allocation_second_micros, 1)))"
                     " OR (p.price_id IS NULL AND u.cost_micros IS NOT NULL)"),
              0);
    /* the cases are all there: every price used, uncosted rows, GPU-class rates */
    TH_EQ_INT(num(c, "SELECT count(DISTINCT price_id) FROM usage"),
              num(c, "SELECT count(*) FROM prices"));
    CU_ASSERT(num(c, "SELECT count(*) FROM usage WHERE price_id IS NULL") > 0);
    CU_ASSERT(num(c, "SELECT count(DISTINCT allocation_rate_micros) FROM usage") >= 4);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage WHERE batch"), n / 2);
    /* 1.2345 as a double is 1.2344999999999999 (what jansson prints, as before) */
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage WHERE allocation_seconds <> 1.234"), 0);
    PQfinish(c);
}

/* A batch API's line pays the batch version of its price; other traffic the
 * price as before; a tenant's own price stays its price for batch work unless
 * it has its own batch version too. */
static void test_batch_price(void)
{
    PGconn *c = db();
    price(c, price_m1_v1);
    static const char batch_m1[] =
        "{\"provider\":\"hostedai\",\"model\":\"m1\",\"batch\":true,\"currency\":\"USD\","
        "\"effective_from\":\"2026-01-01T00:00:00Z\",\"prompt_per_1k_micros\":750}";
    price(c, batch_m1);
    price(c, batch_m1); /* the same version again: unchanged */
    TH_EQ_INT(num(c, "SELECT count(*) FROM prices WHERE batch"), 1);
    /* the same batch version with other figures is refused */
    CU_ASSERT(run(c, "SELECT billing_load_price('{\"provider\":\"hostedai\",\"model\":\"m1\","
                     "\"batch\":true,\"currency\":\"USD\",\"effective_from\":"
                     "\"2026-01-01T00:00:00Z\",\"prompt_per_1k_micros\":1}', 't')") != 0);
    price(c, "{\"provider\":\"hostedai\",\"model\":\"m1\",\"tenant_id\":\"vip\",\"currency\":"
             "\"USD\",\"effective_from\":\"2026-01-01T00:00:00Z\",\"prompt_per_1k_micros\":7}");
    CU_ASSERT(run(c, "INSERT INTO api_batches (batch_id, tenant_id, flavor, endpoint, status,"
                     " expires_at) VALUES ('batch_p', 't1', 'openai', '/v1/chat/completions',"
                     " 'in_progress', now() + interval '1 day');"
                     " INSERT INTO api_batch_lines (batch_id, line, custom_id, request_id) VALUES"
                     " ('batch_p', 1, 'a', 'r-bt1'), ('batch_p', 2, 'b', 'r-bvip')") == 0);
    TH_EQ_INT(one(c, "bt1", "t1", "m1", 1000, 0, "0", "2026-02-01T00:00:00Z"), 1);
    TH_EQ_INT(one(c, "ot1", "t1", "m1", 1000, 0, "0", "2026-02-01T00:00:00Z"), 1);
    TH_EQ_INT(one(c, "bvip", "vip", "m1", 1000, 0, "0", "2026-02-01T00:00:00Z"), 1);
    TH_EQ_INT(num(c, "SELECT cost_prompt_micros FROM usage WHERE event_id = 'bt1' AND batch"), 750);
    TH_EQ_INT(num(c, "SELECT cost_prompt_micros FROM usage WHERE event_id = 'ot1' AND NOT batch"),
              1500);
    TH_EQ_INT(num(c, "SELECT cost_prompt_micros FROM usage WHERE event_id = 'bvip' AND batch"), 7);
    /* its own price_id: the invoice shows batch work on its own line */
    TH_EQ_INT(num(c, "SELECT count(DISTINCT price_id) FROM usage"), 3);
    PQfinish(c);
}

/* The ledger costs in bigint arithmetic where that is exact, and falls back
 * to billing_micros elsewhere: on half-way amounts, at and past the bounds of
 * the fast path and on negative quantities, every cost equals billing_micros. */
static void test_ledger_integer_costing_edges(void)
{
    PGconn *c = db();
    /* the completion rate is past the fast path's bound (1e9) */
    price(c, "{\"provider\":\"hostedai\",\"model\":\"big\",\"currency\":\"USD\","
             "\"effective_from\":\"2026-01-01T00:00:00Z\",\"prompt_per_1k_micros\":999999999,"
             "\"completion_per_1k_micros\":1000000001,\"request_micros\":1,"
             "\"allocation_second_micros\":1000000000}");
    price(c, price_m1_v1);
    static const long tokens[] = {0,          1,          499,        500,       501,
                                  1499,       1500,       -3,         999999999, 1000000000,
                                  1000000001, 9000000000, 2147483648, 7};
    static const char *const secs[] = {"0",         "0.0005",     "0.0015",      "0.0025",
                                       "1.2345",    "0.0004999",  "999999.9995", "1000000",
                                       "1000000.5", "2000000.25", "-0.0015",     "3.14159"};
    static char batch[256 * 1024];
    snprintf(batch, sizeof(batch), "[");
    int n = 0;
    for (size_t t = 0; t < sizeof(tokens) / sizeof(tokens[0]); t++)
        for (size_t s = 0; s < sizeof(secs) / sizeof(secs[0]); s++)
            for (int m = 0; m < 2; m++) {
                char id[32], ev[2048];
                snprintf(id, sizeof(id), "ic%d", n++);
                event(ev, sizeof(ev), id, "t1", m ? "m1" : "big", tokens[t],
                      tokens[(t + 3) % (sizeof(tokens) / sizeof(tokens[0]))], secs[s],
                      "2026-02-10T00:00:00Z");
                size_t len = strlen(batch);
                snprintf(batch + len, sizeof(batch) - len, "%s%s", n > 1 ? "," : "", ev);
            }
    strcat(batch, "]");
    TH_EQ_INT(ledger(c, batch), n);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage WHERE price_id IS NULL"), 0);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage u JOIN prices p USING (price_id)"
                     " WHERE u.cost_prompt_micros IS DISTINCT FROM"
                     "  billing_micros(u.prompt_tokens, p.prompt_per_1k_micros, 1000)"
                     " OR u.cost_completion_micros IS DISTINCT FROM"
                     "  billing_micros(u.completion_tokens, p.completion_per_1k_micros, 1000)"
                     " OR u.cost_allocation_micros IS DISTINCT FROM"
                     "  billing_micros(u.allocation_seconds, u.allocation_rate_micros, 1)"
                     " OR u.cost_micros IS DISTINCT FROM u.cost_prompt_micros"
                     "  + u.cost_completion_micros + u.cost_allocation_micros"
                     "  + u.cost_request_micros"),
              0);
    /* the half-way amounts round up, and a negative quantity as numeric round() does */
    TH_EQ_INT(num(c, "SELECT count(DISTINCT cost_prompt_micros) FROM usage"
                     " WHERE model = 'm1' AND prompt_tokens = 1"),
              1);
    TH_EQ_INT(num(c, "SELECT min(cost_prompt_micros) FROM usage"
                     " WHERE model = 'm1' AND prompt_tokens = 1"),
              2); /* 1.5 */
    TH_EQ_INT(num(c, "SELECT min(cost_prompt_micros) FROM usage"
                     " WHERE model = 'm1' AND prompt_tokens = -3"),
              -5); /* -4.5 */
    PQfinish(c);
}

/* Integer and text columns go to the server in binary; a value of another
 * kind than its column's is cast by the server as it was in text: "12" and
 * 2.0 are integers, a number in a text column its spelling, and what the
 * server refuses (attempts past int4, "abc" for a count) fails the statement,
 * as a bad event always did. */
static void test_ledger_binary_columns(void)
{
    PGconn *c = db();
    price(c, price_m1_v1);
    static const char head[] =
        "{\"event_id\":\"%s\",\"request_id\":\"r\",\"task_id\":\"t\",\"tenant_id\":\"t1\","
        "\"model\":\"m1\",\"provider\":\"hostedai\",\"occurred_at\":\"2026-02-10T00:00:00Z\","
        "\"allocation_seconds\":0,\"request_bytes\":0,\"response_bytes\":0,";
    char batch[4096], ev[1024];
    snprintf(batch, sizeof(batch), "[");
    snprintf(ev, sizeof(ev), head, "b1");
    strcat(batch, ev);
    strcat(batch, "\"pool\":7,\"prompt_tokens\":1000,\"completion_tokens\":3,"
                  "\"attempts\":2,\"durations\":{\"total_ms\":5}},");
    snprintf(ev, sizeof(ev), head, "b2");
    strcat(batch, ev);
    strcat(batch, "\"pool\":\"p\\\"q\",\"prompt_tokens\":\"12\",\"completion_tokens\":2.0,"
                  "\"attempts\":1,\"durations\":{}}]");
    TH_EQ_INT(ledger(c, batch), 2);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage WHERE event_id = 'b1' AND pool = '7'"
                     " AND prompt_tokens = 1000 AND completion_tokens = 3 AND attempts = 2"
                     " AND total_ms = 5 AND allocate_ms IS NULL AND cost_prompt_micros = 1500"),
              1);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage WHERE event_id = 'b2' AND pool = 'p\"q'"
                     " AND prompt_tokens = 12 AND completion_tokens = 2 AND total_ms IS NULL"),
              1);
    snprintf(batch, sizeof(batch), "[");
    snprintf(ev, sizeof(ev), head, "b3");
    strcat(batch, ev);
    strcat(batch, "\"prompt_tokens\":1,\"completion_tokens\":1,\"attempts\":3000000000,"
                  "\"durations\":{}}]");
    TH_EQ_INT(ledger(c, batch), -1);
    snprintf(batch, sizeof(batch), "[");
    snprintf(ev, sizeof(ev), head, "b4");
    strcat(batch, ev);
    strcat(batch, "\"prompt_tokens\":\"abc\",\"completion_tokens\":1,\"attempts\":1,"
                  "\"durations\":{}}]");
    TH_EQ_INT(ledger(c, batch), -1);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage"), 2);
    /* an empty batch: empty arrays of each kind */
    TH_EQ_INT(ledger(c, "[]"), 0);
    PQfinish(c);
}

/* A duplicate event in one batch (even reported at another time) and across
 * batches is one row and one charge. */
static void test_ledger_duplicates_charged_once(void)
{
    PGconn *c = db();
    price(c, price_m1_v1);
    CU_ASSERT_FATAL(run(c, "INSERT INTO budget_periods (tenant_id, period, currency,"
                           " monthly_micros) VALUES ('t1', '2026-10-01', 'USD', 1000000000)") == 0);
    char batch[8192] = "[";
    add_event(batch, sizeof(batch), "d1", "t1", "hostedai", "m1", "", "2026-10-01T10:00:00Z");
    add_event(batch, sizeof(batch), "d2", "t1", "hostedai", "m1", "", "2026-10-02T10:00:00Z");
    add_event(batch, sizeof(batch), "d1", "t1", "hostedai", "m1", "", "2026-10-01T10:00:00Z");
    add_event(batch, sizeof(batch), "d2", "t1", "hostedai", "m1", "", "2026-10-03T10:00:00Z");
    strcat(batch, "]");
    TH_EQ_INT(ledger(c, batch), 2);
    TH_EQ_INT(ledger(c, batch), 0); /* redelivered */
    char again[4096] = "[";
    add_event(again, sizeof(again), "d3", "t1", "hostedai", "m1", "", "2026-10-04T10:00:00Z");
    add_event(again, sizeof(again), "d2", "t1", "hostedai", "m1", "", "2026-10-05T10:00:00Z");
    strcat(again, "]");
    TH_EQ_INT(ledger(c, again), 1); /* d2 again, in another batch */
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage"), 3);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_event_ids"), 3);
    long long cost = num(c, "SELECT sum(cost_micros) FROM usage");
    CU_ASSERT(cost > 0);
    TH_EQ_INT(num(c, "SELECT spent_micros FROM budget_periods WHERE tenant_id = 't1'"), cost);
    TH_EQ_INT(num(c, "SELECT usage_rows FROM budget_periods WHERE tenant_id = 't1'"), 3);
    PQfinish(c);
}

typedef struct outcome {
    int done;
    long long rows;
    char sqlstate[6];
} outcome_t;

static void on_outcome(const PGresult *res, const char *err, void *arg)
{
    outcome_t *o = arg;
    o->done = 1;
    if (err)
        gt_pg_err_sqlstate(err, o->sqlstate);
    else
        o->rows = atoll(PQgetvalue(res, 0, 0));
}

static int outcome_done(void *arg)
{
    return ((outcome_t *)arg)->done;
}

static int pg_gone(void *arg)
{
    return *(int *)arg;
}

static void pg_freed(const PGresult *res, const char *err, void *arg)
{
    (void)res;
    (void)err;
    *(int *)arg = 1;
}

/* Runs the ledger's statement on events through gt_pg, as the ledger does. */
static outcome_t ledger_async(const char *conninfo, const char *events)
{
    outcome_t o = {0};
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_pg_t *pg = gt_pg_new(&loop, conninfo);
    json_t *arr = json_loads(events, 0, NULL);
    gt_ledger_rows_t *rows = gt_ledger_rows_new();
    const char *params[GT_LEDGER_NPARAMS];
    int lengths[GT_LEDGER_NPARAMS], formats[GT_LEDGER_NPARAMS];
    CU_ASSERT_FATAL(pg && arr && rows);
    for (size_t i = 0; i < json_array_size(arr); i++)
        CU_ASSERT_FATAL(gt_ledger_rows_add(rows, json_array_get(arr, i)) == 0);
    CU_ASSERT_FATAL(gt_ledger_rows_params(rows, params, lengths, formats) == 0);
    TH_EQ_INT(gt_pg_query_bin(pg, gt_ledger_insert_sql(), GT_LEDGER_NPARAMS, params, lengths,
                              formats, on_outcome, &o),
              0);
    CU_ASSERT(th_loop_until(&loop, outcome_done, &o, 60000));
    int freed = 0; /* the last answer before the free: the loop is then idle */
    TH_EQ_INT(gt_pg_query(pg, "SELECT 1", 0, NULL, pg_freed, &freed), 0);
    CU_ASSERT(th_loop_until(&loop, pg_gone, &freed, 60000));
    gt_pg_free(pg);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    json_decref(arr);
    gt_ledger_rows_free(rows);
    return o;
}

static int both_done(void *arg)
{
    const outcome_t *o = arg;
    return o[0].done && o[1].done;
}

/* Two connections (ledger.connections) writing overlapping batches at once:
 * each event is one row and one charge, and the budget rows do not deadlock. */
static void test_ledger_concurrent_batches(void)
{
    char conninfo[512], err[512];
    CU_ASSERT_FATAL(th_pg_create_db(conninfo, sizeof(conninfo)) == 0);
    PGconn *c = gt_pg_connect_sync(conninfo, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_FATAL(gt_pg_migrate(c, th_src("migrations"), err, sizeof(err)) >= 0);
    price(c, price_m1_v1);
    CU_ASSERT_FATAL(run(c, "INSERT INTO budget_periods (tenant_id, period, currency,"
                           " monthly_micros) SELECT 't' || i, '2026-10-01', 'USD', 1000000000"
                           " FROM generate_series(0, 9) i") == 0);
    static char batch[2][128 * 1024];
    for (int k = 0; k < 2; k++) {
        snprintf(batch[k], sizeof(batch[k]), "[");
        for (int i = 0; i < 300; i++) { /* k = 0: e0..e299, k = 1: e150..e449 */
            char id[16], tenant[8];
            snprintf(id, sizeof(id), "e%d", i + 150 * k);
            snprintf(tenant, sizeof(tenant), "t%d", (i + 150 * k) % 10);
            add_event(batch[k], sizeof(batch[k]), id, tenant, "hostedai", "m1", "",
                      "2026-10-02T10:00:00Z");
        }
        strcat(batch[k], "]");
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_pg_t *pg[2];
    gt_ledger_rows_t *rows[2];
    outcome_t o[2] = {{0}, {0}};
    for (int k = 0; k < 2; k++) {
        json_t *arr = json_loads(batch[k], 0, NULL);
        const char *params[GT_LEDGER_NPARAMS];
        int lengths[GT_LEDGER_NPARAMS], formats[GT_LEDGER_NPARAMS];
        pg[k] = gt_pg_new(&loop, conninfo);
        rows[k] = gt_ledger_rows_new();
        CU_ASSERT_FATAL(arr && pg[k] && rows[k]);
        for (size_t i = 0; i < json_array_size(arr); i++)
            CU_ASSERT_FATAL(gt_ledger_rows_add(rows[k], json_array_get(arr, i)) == 0);
        CU_ASSERT_FATAL(gt_ledger_rows_params(rows[k], params, lengths, formats) == 0);
        TH_EQ_INT(gt_pg_query_bin(pg[k], gt_ledger_insert_sql(), GT_LEDGER_NPARAMS, params, lengths,
                                  formats, on_outcome, &o[k]),
                  0);
        json_decref(arr);
    }
    CU_ASSERT(th_loop_until(&loop, both_done, o, 60000));
    TH_EQ_STR(o[0].sqlstate, "");
    TH_EQ_STR(o[1].sqlstate, "");
    TH_EQ_INT(o[0].rows + o[1].rows, 450);
    for (int k = 0; k < 2; k++) {
        gt_pg_free(pg[k]);
        gt_ledger_rows_free(rows[k]);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage"), 450);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_event_ids"), 450);
    TH_EQ_INT(num(c, "SELECT sum(usage_rows) FROM budget_periods"), 450);
    TH_EQ_INT(num(c, "SELECT sum(spent_micros) FROM budget_periods"),
              num(c, "SELECT sum(cost_micros) FROM usage"));
    PQfinish(c);
}

/* A batch whose statement fails mid-way (after some rows went in) leaves
 * nothing behind: a transient failure is retried whole and charges each
 * event once; a permanent one fails the batch with its SQLSTATE and no row. */
static void test_ledger_failed_statement_retried_whole(void)
{
    char conninfo[512], err[512];
    CU_ASSERT_FATAL(th_pg_create_db(conninfo, sizeof(conninfo)) == 0);
    PGconn *c = gt_pg_connect_sync(conninfo, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_FATAL(gt_pg_migrate(c, th_src("migrations"), err, sizeof(err)) >= 0);
    price(c, price_m1_v1);
    CU_ASSERT_FATAL(run(c, "INSERT INTO budget_periods (tenant_id, period, currency,"
                           " monthly_micros) VALUES ('t1', '2026-10-01', 'USD', 1000000000)") == 0);
    /* the third row inserted fails the statement once, as a serialization failure
     * would (a sequence counts the rows: it is not rolled back with them) */
    CU_ASSERT_FATAL(run(c,
                        "CREATE SEQUENCE fault_rows;"
                        "CREATE FUNCTION fault_mid() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                        " IF nextval('fault_rows') = 3 THEN RAISE EXCEPTION 'injected'"
                        " USING ERRCODE = '40001'; END IF;"
                        " IF NEW.event_id = 'bad' THEN RAISE EXCEPTION 'bad event'"
                        " USING ERRCODE = '22023'; END IF; RETURN NULL; END $$;"
                        "CREATE TRIGGER fault_mid AFTER INSERT ON usage FOR EACH ROW"
                        " EXECUTE FUNCTION fault_mid()") == 0);
    char batch[8192] = "[";
    for (int i = 0; i < 5; i++) {
        char id[16], at[40];
        snprintf(id, sizeof(id), "f%d", i);
        snprintf(at, sizeof(at), "2026-10-0%dT10:00:00Z", i + 1);
        add_event(batch, sizeof(batch), id, "t1", "hostedai", "m1", "", at);
    }
    strcat(batch, "]");
    outcome_t o = ledger_async(conninfo, batch);
    TH_EQ_INT(o.done, 1);
    TH_EQ_STR(o.sqlstate, "");
    TH_EQ_INT(o.rows, 5);
    TH_EQ_INT(num(c, "SELECT last_value FROM fault_rows"), 3 + 5); /* two attempts */
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage"), 5);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_event_ids"), 5);
    TH_EQ_INT(num(c, "SELECT usage_rows FROM budget_periods"), 5);
    TH_EQ_INT(num(c, "SELECT spent_micros FROM budget_periods"),
              num(c, "SELECT sum(cost_micros) FROM usage"));
    /* permanent: the batch fails whole, nothing of it is written */
    char bad[8192] = "[";
    add_event(bad, sizeof(bad), "g1", "t1", "hostedai", "m1", "", "2026-10-07T10:00:00Z");
    add_event(bad, sizeof(bad), "bad", "t1", "hostedai", "m1", "", "2026-10-07T10:00:00Z");
    add_event(bad, sizeof(bad), "g2", "t1", "hostedai", "m1", "", "2026-10-07T10:00:00Z");
    strcat(bad, "]");
    o = ledger_async(conninfo, bad);
    TH_EQ_INT(o.done, 1);
    TH_EQ_STR(o.sqlstate, "22023");
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage"), 5);
    TH_EQ_INT(num(c, "SELECT count(*) FROM usage_event_ids"), 5);
    TH_EQ_INT(num(c, "SELECT usage_rows FROM budget_periods"), 5);
    PQfinish(c);
}

int main(void)
{
    gt_dispatcher_config_register();
    static const th_test_t tests[] = {
        {"price change mid-period prices both sides", test_price_change_mid_period},
        {"invoice run idempotent, redelivery changes no total",
         test_invoice_run_idempotent_and_redelivery},
        {"issued invoice is immutable", test_issued_invoice_is_immutable},
        {"late usage is an adjustment on the next invoice", test_late_usage_is_an_adjustment},
        {"finance role reads views, not prompts: no raw tables", test_finance_role_denied},
        {"finance role reads views, not prompts: consistent views", test_finance_role_views},
        {"usage partitions: default, attach, detach", test_partitions},
        {"cli: prices, invoice run/show/export, usage, reconcile", test_cli},
        {"migration keeps the backbone's usage rows", test_migration_keeps_usage},
        {"tenants.<id>.budget configuration", test_budget_config},
        {"ledger: set-based costing equals billing_price_for",
         test_ledger_costing_matches_price_for},
        {"batch traffic pays its own price", test_batch_price},
        {"ledger: bigint costing equals billing_micros at the edges",
         test_ledger_integer_costing_edges},
        {"ledger: binary columns, and values of another kind cast as before",
         test_ledger_binary_columns},
        {"ledger: a duplicate in a batch and across batches is charged once",
         test_ledger_duplicates_charged_once},
        {"ledger: overlapping batches on two connections charge once",
         test_ledger_concurrent_batches},
        {"ledger: a statement failing mid-way is retried whole, or fails whole",
         test_ledger_failed_statement_retried_whole},
        {NULL, NULL},
    };
    return th_run("billing", tests);
}
