/* test_ratelimit.c - the rate limit buckets of migration 025 on a real
 * PostgreSQL (gantry_rate_take, gantry_rate_release: admission, refill,
 * holds in order, debt, stale releases, concurrent takers) and the
 * dispatcher.rate_limits configuration and token estimate. */
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dispatcher_config.h"
#include "harness.h"
#include "pg.h"
#include "ratelimit.h"

static char conninfo[512];

static PGconn *db(void)
{
    char err[512];
    CU_ASSERT_FATAL(th_pg_create_db(conninfo, sizeof(conninfo)) == 0);
    PGconn *c = gt_pg_connect_sync(conninfo, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_FATAL(gt_pg_migrate(c, th_src("migrations"), err, sizeof(err)) >= 1);
    return c;
}

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
    if (!ok)
        fprintf(stderr, "sql: %s\n", PQerrorMessage(c));
    PQclear(r);
    return ok ? 0 : -1;
}

/* One value of a query as a long (-1 on error). */
static long one(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)
                 ? atol(PQgetvalue(r, 0, 0))
                 : -1;
    PQclear(r);
    return v;
}

/* Takes n requests of key (rpm, burst, 1 request and tcost tokens each, tpm)
 * with ids prefix0..; writes the verdicts as a string of a(dmitted),
 * k(nown), o(ver) into out. Returns the sum of retry_ms of the over ones. */
static long take(PGconn *c, const char *key, const char *prefix, int n, double rpm, double burst,
                 double tpm, double tburst, double tcost, char *out)
{
    char *items = malloc(256 * (size_t)n + 16);
    size_t off = (size_t)sprintf(items, "[");
    for (int i = 0; i < n; i++)
        off += (size_t)sprintf(items + off,
                               "%s{\"i\":%d,\"key\":\"%s\",\"rid\":\"%s%d\",\"rpm\":%g,"
                               "\"rburst\":%g,\"rcost\":1,\"tpm\":%g,\"tburst\":%g,\"tcost\":%g}",
                               i ? "," : "", i, key, prefix, i, rpm, burst, tpm, tburst, tcost);
    sprintf(items + off, "]");
    const char *params[] = {items};
    PGresult *r =
        PQexecParams(c, "SELECT verdict, retry_ms FROM gantry_rate_take($1::jsonb) ORDER BY idx", 1,
                     NULL, params, NULL, NULL, 0);
    long retry = 0;
    out[0] = '\0';
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "take: %s\n", PQerrorMessage(c));
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
        out[i] = PQgetvalue(r, i, 0)[0] == 'a' ? 'a' : PQgetvalue(r, i, 0)[0] == 'k' ? 'k' : 'o';
        out[i + 1] = '\0';
        if (out[i] == 'o')
            retry += atol(PQgetvalue(r, i, 1));
    }
    PQclear(r);
    free(items);
    return retry;
}

/* Moves key's bucket ms into the past (as if that much time had gone by). */
static void age(PGconn *c, const char *key, int ms)
{
    CU_ASSERT(run(c,
                  "UPDATE rate_buckets SET updated_at = updated_at - %d * interval '1 ms'"
                  " WHERE key = '%s'",
                  ms, key) == 0);
}

static void hold(PGconn *c, const char *id, const char *key, double rpm, double burst)
{
    CU_ASSERT(run(c,
                  "INSERT INTO rate_holds (request_id, key, tenant_id, rpm, rburst, rcost, tpm,"
                  " tburst, tcost, body) VALUES ('%s', '%s', 't', %g, %g, 1, 0, 1, 0,"
                  " '{\"request_id\":\"%s\"}')",
                  id, key, rpm, burst, id) == 0);
}

/* Released request_ids, comma separated, into out. */
static int release(PGconn *c, char *out, size_t len)
{
    PGresult *r =
        PQexec(c, "SELECT request_id FROM gantry_rate_release('test', 1000, 60000) ORDER BY 1");
    out[0] = '\0';
    size_t off = 0;
    int n = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : -1;
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%s", i ? "," : "", PQgetvalue(r, i, 0));
    PQclear(r);
    return n;
}

static void test_burst_then_over(void)
{
    PGconn *c = db();
    char v[64];
    /* 600 rpm, burst 10: ten go, the rest wait 100 ms each for a token. */
    long retry = take(c, "acme", "r", 14, 600, 10, 0, 1, 0, v);
    TH_EQ_STR(v, "aaaaaaaaaaoooo");
    CU_ASSERT(retry >= 4 * 99 && retry <= 4 * 101);
    /* Another key has its own bucket. */
    take(c, "beta", "b", 2, 600, 10, 0, 1, 0, v);
    TH_EQ_STR(v, "aa");
    /* Half a second later: five more tokens. */
    age(c, "acme", 500);
    take(c, "acme", "s", 7, 600, 10, 0, 1, 0, v);
    TH_EQ_STR(v, "aaaaaoo");
    /* Refill is capped at the burst. */
    age(c, "acme", 3600 * 1000);
    take(c, "acme", "u", 12, 600, 10, 0, 1, 0, v);
    TH_EQ_STR(v, "aaaaaaaaaaoo");
    PQfinish(c);
}

static void test_tokens_and_debt(void)
{
    PGconn *c = db();
    char v[64];
    /* Tokens only (rpm 0): 6000 tpm, burst 100; 40 tokens a request. */
    take(c, "tok", "t", 4, 0, 1, 6000, 100, 40, v);
    TH_EQ_STR(v, "aaoo"); /* 100 -> 60 -> 20: the third needs 40 */
    /* A request bigger than the burst goes when the bucket is full, into debt. */
    age(c, "tok", 60 * 1000);
    take(c, "tok", "big", 1, 0, 1, 6000, 100, 250, v);
    TH_EQ_STR(v, "a");
    CU_ASSERT(one(c, "SELECT tok_level::int FROM rate_buckets WHERE key = 'tok'") == -150);
    /* The debt is paid back before anything else goes: 1 s gives 100 tokens. */
    age(c, "tok", 1000);
    take(c, "tok", "after", 1, 0, 1, 6000, 100, 1, v);
    TH_EQ_STR(v, "o");
    age(c, "tok", 1600);
    take(c, "tok", "after", 1, 0, 1, 6000, 100, 1, v);
    TH_EQ_STR(v, "a");
    PQfinish(c);
}

static void test_holds_in_order(void)
{
    PGconn *c = db();
    char v[64], rel[256];
    take(c, "acme", "r", 2, 60, 2, 0, 1, 0, v); /* 1 a second, burst 2: empty now */
    TH_EQ_STR(v, "aa");
    hold(c, "h1", "acme", 60, 2);
    hold(c, "h2", "acme", 60, 2);
    hold(c, "h3", "acme", 60, 2);
    /* Nothing to release yet; a full bucket elsewhere releases nothing here. */
    TH_EQ_INT(release(c, rel, sizeof(rel)), 0);
    /* While holds wait, a newcomer waits behind them even when tokens exist. */
    age(c, "acme", 1000);
    take(c, "acme", "new", 1, 60, 2, 0, 1, 0, v);
    TH_EQ_STR(v, "o");
    TH_EQ_INT(release(c, rel, sizeof(rel)), 1);
    TH_EQ_STR(rel, "h1");
    age(c, "acme", 2000);
    TH_EQ_INT(release(c, rel, sizeof(rel)), 2);
    TH_EQ_STR(rel, "h2,h3");
    TH_EQ_INT(release(c, rel, sizeof(rel)), 0); /* each hold is released once */
    /* A released hold's request comes back: known, not charged, hold gone. */
    CU_ASSERT(one(c, "SELECT count(*) FROM rate_holds") == 3);
    take(c, "acme", "h", 1, 60, 2, 0, 1, 0, v); /* rid h0: no hold of that name */
    TH_EQ_STR(v, "o");                          /* the bucket is empty */
    char *items = "[{\"i\":0,\"key\":\"acme\",\"rid\":\"h2\",\"rpm\":60,\"rburst\":2,"
                  "\"rcost\":1,\"tpm\":0,\"tburst\":1,\"tcost\":0}]";
    const char *params[] = {items};
    PGresult *r = PQexecParams(c, "SELECT verdict FROM gantry_rate_take($1::jsonb)", 1, NULL,
                               params, NULL, NULL, 0);
    TH_EQ_STR(PQgetvalue(r, 0, 0), "known");
    PQclear(r);
    CU_ASSERT(one(c, "SELECT count(*) FROM rate_holds WHERE request_id = 'h2'") == 0);
    /* A job that exists is known too (a redelivered request is not charged twice). */
    CU_ASSERT(run(c, "INSERT INTO jobs (request_id, tenant_id, kind, model, lane, task_count,"
                     " request) VALUES ('r0', 't', 'generate', 'm', 'l', 1, '{}')") == 0);
    take(c, "acme", "r", 1, 60, 2, 0, 1, 0, v);
    TH_EQ_STR(v, "k");
    /* A released hold whose request never came back is released again once
     * stale, not charged; one whose job exists is dropped. */
    CU_ASSERT(run(c, "UPDATE rate_holds SET released_at = now() - interval '61 s'") == 0);
    CU_ASSERT(run(c, "INSERT INTO jobs (request_id, tenant_id, kind, model, lane, task_count,"
                     " request) VALUES ('h3', 't', 'generate', 'm', 'l', 1, '{}')") == 0);
    long before = one(c, "SELECT (req_level * 1000)::int FROM rate_buckets WHERE key = 'acme'");
    TH_EQ_INT(release(c, rel, sizeof(rel)), 1);
    TH_EQ_STR(rel, "h1");
    CU_ASSERT(one(c, "SELECT count(*) FROM rate_holds WHERE request_id = 'h3'") == 0);
    CU_ASSERT(one(c, "SELECT (req_level * 1000)::int FROM rate_buckets WHERE key = 'acme'") ==
              before);
    PQfinish(c);
}

/* A bucket another dispatcher is releasing is skipped, not waited for. */
static void test_release_skips_locked(void)
{
    PGconn *c = db();
    char err[512], v[64], rel[256];
    PGconn *c2 = gt_pg_connect_sync(conninfo, err, sizeof(err));
    CU_ASSERT_FATAL(c2 != NULL);
    take(c, "acme", "r", 1, 60, 1, 0, 1, 0, v);
    hold(c, "h1", "acme", 60, 1);
    age(c, "acme", 5000);
    CU_ASSERT(run(c2, "BEGIN") == 0);
    CU_ASSERT(run(c2, "SELECT 1 FROM rate_buckets WHERE key = 'acme' FOR UPDATE") == 0);
    TH_EQ_INT(release(c, rel, sizeof(rel)), 0);
    CU_ASSERT(run(c2, "COMMIT") == 0);
    TH_EQ_INT(release(c, rel, sizeof(rel)), 1);
    PQfinish(c2);
    PQfinish(c);
}

/* Four processes take from one bucket as fast as they can: together they
 * never get more than the burst plus what the elapsed time refilled. */
static void test_concurrent_takers(void)
{
    PGconn *c = db();
    PQfinish(c);
    int64_t t0 = th_now_ms();
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            char err[512], v[8], prefix[16];
            PGconn *cc = gt_pg_connect_sync(conninfo, err, sizeof(err));
            int admitted = 0;
            for (int i = 0; cc && i < 150; i++) {
                snprintf(prefix, sizeof(prefix), "k%d-%d-", k, i);
                take(cc, "shared", prefix, 1, 6000, 20, 0, 1, 0, v);
                admitted += v[0] == 'a';
            }
            PQfinish(cc);
            _exit(admitted > 250 ? 250 : admitted);
        }
    }
    int total = 0;
    for (int k = 0; k < 4; k++) {
        int st;
        waitpid(kids[k], &st, 0);
        total += WIFEXITED(st) ? WEXITSTATUS(st) : 0;
    }
    int64_t elapsed = th_now_ms() - t0;
    /* 6000 rpm is 100 a second: at most 20 + 100 per second elapsed. */
    long most = 20 + (long)(elapsed / 10) + 1;
    fprintf(stderr, "concurrent: %d admitted in %lld ms (at most %ld)\n", total, (long long)elapsed,
            most);
    CU_ASSERT(total >= 20);
    CU_ASSERT(total <= most);
}

/* A configuration with dispatcher (the object's text, braces included). */
static gt_config_t *parse(const char *dispatcher, char *err, size_t errlen)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"kafka\": {\"bootstrap_servers\": \"127.0.0.1:9092\"},"
             " \"dispatcher\": %s}",
             dispatcher);
    gt_config_t *cfg = gt_config_parse(text, "/", err, errlen);
    if (!cfg)
        fprintf(stderr, "config: %s\n", err);
    return cfg;
}

static void test_config(void)
{
    char err[1024];
    const char *good =
        "{\"rate_limits\": {\"on_limit\": \"reject\", \"default\": "
        "{\"requests_per_minute\": 60}, \"tenants\": {\"acme\": {\"requests_per_minute\": 600,"
        " \"tokens_per_minute\": 100000, \"burst_requests\": 5, \"models\": {\"m\": "
        "{\"tokens_per_minute\": 1000}}}}}}";
    gt_config_t *cfg = parse(good, err, sizeof(err));
    CU_ASSERT(cfg != NULL);
    json_t *req = json_pack("{s:s, s:{s:i}}", "input", "0123456789abcdef0123", "parameters",
                            "max_tokens", 100);
    TH_EQ_INT(gt_ratelimit_estimate(cfg, req, 1), 5 + 100);
    json_object_del(req, "parameters");
    TH_EQ_INT(gt_ratelimit_estimate(cfg, req, 3), 5 + 3 * 256);
    json_decref(req);
    gt_config_free(cfg);
    const char *bad[] = {
        "{\"rate_limits\": {\"on_limit\": \"drop\"}}",
        "{\"rate_limits\": {\"default\": {\"models\": {}}}}",
        "{\"rate_limits\": {\"tenants\": {\"a\": {\"rpm\": 3}}}}",
        "{\"rate_limits\": {\"tenants\": {\"a\": {\"requests_per_minute\": -1}}}}",
        "{\"backlog_ms\": -5}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[4096];
        snprintf(text, sizeof(text),
                 "{\"kafka\": {\"bootstrap_servers\": \"x:1\"}, \"dispatcher\": %s}", bad[i]);
        cfg = gt_config_parse(text, "/", err, sizeof(err));
        CU_ASSERT(cfg == NULL);
        CU_ASSERT(strstr(err, "dispatcher") != NULL);
        gt_config_free(cfg);
    }
}

int main(void)
{
    gt_dispatcher_config_register();
    static const th_test_t tests[] = {
        {"burst, then over with the wait; refill capped at the burst", test_burst_then_over},
        {"tokens per minute; a big request leaves debt", test_tokens_and_debt},
        {"holds wait in order, block newcomers, are released once", test_holds_in_order},
        {"release skips a bucket another dispatcher holds", test_release_skips_locked},
        {"concurrent takers never exceed the bucket", test_concurrent_takers},
        {"dispatcher.rate_limits configuration and token estimate", test_config},
        {NULL, NULL},
    };
    return th_run("ratelimit", tests);
}
