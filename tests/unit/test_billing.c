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

/* Inserts events (a JSON array text) with the ledger's statement; returns rows inserted. */
static long long ledger(PGconn *c, const char *events)
{
    const char *params[] = {events};
    PGresult *r = PQexecParams(c, gt_ledger_insert_sql(), 1, NULL, params, NULL, NULL, 0);
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
    CU_ASSERT(strstr(out, "5 price(s) loaded, 0 already loaded") != NULL);
    TH_EQ_INT(cli(cfg, out, sizeof(out), "prices", "load", "--file", prices, NULL, NULL, NULL), 0);
    CU_ASSERT(strstr(out, "0 price(s) loaded, 5 already loaded") != NULL);
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
        {NULL, NULL},
    };
    return th_run("billing", tests);
}
