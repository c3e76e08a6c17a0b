/* ledger.c - consumes gantry.usage and writes usage rows to PostgreSQL in
 * batches, idempotently: event_id is unique, so a redelivered event is no
 * second row. Offsets are done only once their batch is committed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatcher.h"
#include "ledger_rows.h"
#include "log.h"
#include "message.h"
#include "trace.h"

#define LEDGER_MAX_CONNS 16

struct gt_ledger {
    gt_dispatcher_t *d;
    gt_consumer_t *consumer;
    gt_pg_t *pg[LEDGER_MAX_CONNS]; /* [0] is d->pg_ledger; the others are the ledger's own */
    int npg;
    uv_timer_t timer;
    gt_msg_t **msgs;        /* the batch being filled */
    json_t *events;         /* its events, same order (for inserting one by one) */
    gt_ledger_rows_t *rows; /* the same events as the statement's parameters */
    int n, cap;
    int paused;
    int draining; /* SIGTERM: no more events taken, never resumed */
    long rows_written, batches;
};

typedef struct batch {
    gt_ledger_t *l;
    gt_msg_t **msgs;
    json_t *events;
    gt_ledger_rows_t *rows;
    int n;
    uint64_t sent_ns; /* uv_hrtime() at send, for the batch latency */
} batch_t;

/* Inserts a batch of usage events with their cost (the price in force at each
 * event's time, as billing_price_for in migrations/031_batch_price.sql
 * picks it: exact model before '*', the tenant's own price before the list
 * price, within each its batch version first for a batch API's line, the
 * latest version in force; rounded half up per component) and adds
 * the cost to the tenants' budget periods, in one statement: a redelivered
 * event, or a second copy in the same batch, is no row and no spend. Events
 * without a price in force are stored uncosted (price_id NULL); the invoice
 * run costs them once their price is loaded. $1..$22 are one array per column
 * (gt_ledger_rows_params). The price lookup is set-based: each price version's
 * validity range [effective_from, next version) is joined by hash, not looked
 * up row by row. */
/* Each cost component is computed once (numeric arithmetic is a tenth of the
 * statement): the costs are columns of a subquery that the planner keeps
 * (OFFSET 0), and cost_micros sums those columns. NULL without a price. */
#define COST(expr) "CASE WHEN p.price_id IS NOT NULL THEN " expr " END"
/* billing_micros(qty, rate, per) in bigint arithmetic where that is exact:
 * for 0 <= qty, rate <= 1e9 the product fits and (qty * rate + per / 2) / per
 * is its quotient rounded half up, as numeric round() gives for non-negative
 * amounts (numeric arithmetic was a tenth of the statement). Anything else
 * (negative, larger, NULL) takes billing_micros itself. Allocation seconds
 * are rounded to 3 decimals once, in e, and costed as whole milliseconds. */
#define COST_INT(qty, rate, per, per_half)                                                         \
    "CASE WHEN " qty " BETWEEN 0 AND 1000000000 AND " rate " <= 1000000000 THEN (" qty " * " rate  \
    " + " per_half ") / " per " ELSE billing_micros(" qty ", " rate ", " per ") END"
#define COST_PROMPT COST_INT("e.prompt_tokens", "p.prompt_per_1k_micros", "1000", "500")
#define COST_COMPLETION COST_INT("e.completion_tokens", "p.completion_per_1k_micros", "1000", "500")
#define COST_ALLOC                                                                                 \
    "CASE WHEN e.allocation_seconds BETWEEN 0 AND 1000000"                                         \
    " AND p.allocation_second_micros <= 1000000000"                                                \
    " THEN ((e.allocation_seconds * 1000)::bigint * p.allocation_second_micros + 500) / 1000"      \
    " ELSE billing_micros(e.allocation_seconds, p.allocation_second_micros, 1) END"
#define COSTS                                                                                      \
    COST(COST_PROMPT)                                                                              \
    " AS cp, " COST(COST_COMPLETION) " AS cc, " COST(COST_ALLOC) " AS ca,"                         \
                                                                 " p.request_micros AS cr"
/* The version of a price key (provider, model, tenant) in force at the event's
 * time; batch: its batch version, joined for batch events only. */
#define PRICE_IN_FORCE(alias, model, tenant, batch)                                                \
    " LEFT JOIN pr " alias " ON " alias ".provider = e.provider AND " alias ".model = " model      \
    " AND " alias ".tenant_id " tenant " AND " alias ".batch = " batch                             \
    " AND e.occurred_at >= " alias ".effective_from AND e.occurred_at < " alias ".effective_to"
/* In billing_price_for's order: exact model before '*', the tenant's before
 * the list price, and within each key its batch version first for batch
 * events (migrations/031_batch_price.sql). */
#define PRICES_IN_FORCE                                                                            \
    PRICE_IN_FORCE("p1b", "e.model", "= e.tenant_id", "e.batch")                                   \
    PRICE_IN_FORCE("p1", "e.model", "= e.tenant_id", "false")                                      \
    PRICE_IN_FORCE("p2b", "e.model", "IS NULL", "e.batch")                                         \
    PRICE_IN_FORCE("p2", "e.model", "IS NULL", "false")                                            \
    PRICE_IN_FORCE("p3b", "'*'", "= e.tenant_id", "e.batch")                                       \
    PRICE_IN_FORCE("p3", "'*'", "= e.tenant_id", "false")                                          \
    PRICE_IN_FORCE("p4b", "'*'", "IS NULL", "e.batch")                                             \
    PRICE_IN_FORCE("p4", "'*'", "IS NULL", "false")
static const char sql_insert[] =
    /* unnest in the select list runs the 22 arrays in lockstep (as unnest
     * with several arrays in FROM does) without first copying each into a
     * tuplestore of its own */
    "WITH e AS ("
    " SELECT DISTINCT ON (e.event_id) e.*"
    " FROM (SELECT unnest($1::text[]) AS event_id, unnest($2::text[]) AS request_id,"
    "  unnest($3::text[]) AS task_id, unnest($4::text[]) AS tenant_id,"
    "  unnest($5::text[]) AS model, unnest($6::text[]) AS provider, unnest($7::text[]) AS pool,"
    "  unnest($8::text[]) AS allocation_id,"
    "  round(unnest($9::numeric[]), 3) AS allocation_seconds,"
    "  unnest($10::numeric[]) AS tflops, unnest($11::bigint[]) AS vram_mb,"
    "  unnest($12::bigint[]) AS prompt_tokens, unnest($13::bigint[]) AS completion_tokens,"
    "  unnest($14::bigint[]) AS request_bytes, unnest($15::bigint[]) AS response_bytes,"
    "  unnest($16::int[]) AS attempts, unnest($17::bigint[]) AS allocate_ms,"
    "  unnest($18::bigint[]) AS inference_ms, unnest($19::bigint[]) AS release_ms,"
    "  unnest($20::bigint[]) AS total_ms, unnest($21::timestamptz[]) AS occurred_at,"
    "  unnest($22::text[]) AS trace_id) e"
    " ORDER BY e.event_id),"
    " ids AS ("
    " INSERT INTO usage_event_ids (event_id, occurred_at) SELECT event_id, occurred_at FROM e"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
    " pr AS (SELECT price_id, provider, model, tenant_id, batch, effective_from,"
    " lead(effective_from, 1, 'infinity') OVER (PARTITION BY provider, model, tenant_id, batch"
    "  ORDER BY effective_from) AS effective_to FROM prices),"
    /* The price is resolved on narrow rows (the event's key columns only):
     * the joins below copy what flows through them into hash tables, and the
     * whole event is read once more only by the INSERT. A batch API's line
     * (gantry-api) is batch traffic. */
    " k AS (SELECT e.event_id, e.tenant_id, e.provider, e.model, e.occurred_at,"
    "  coalesce(e.tflops, 0) AS t, coalesce(e.vram_mb, 0) AS v,"
    "  bl.request_id IS NOT NULL AS batch FROM e JOIN ids USING (event_id)"
    "  LEFT JOIN api_batch_lines bl ON bl.request_id = e.request_id),"
    " c AS (SELECT e.event_id, e.batch, e.t, e.v, coalesce(p1b.price_id, p1.price_id,"
    "  p2b.price_id, p2.price_id, p3b.price_id, p3.price_id, p4b.price_id, p4.price_id) AS pid"
    " FROM k e" PRICES_IN_FORCE "),"
    /* the allocation-second rate by GPU class, once per distinct (price, class inputs) */
    " gk AS (SELECT k.pid, k.t, k.v, (SELECT g.allocation_second_micros FROM price_gpu_classes g"
    "  WHERE g.price_id = k.pid AND k.t >= g.min_tflops AND k.v >= g.min_vram_mb"
    "  ORDER BY g.min_tflops DESC, g.min_vram_mb DESC LIMIT 1) AS rate"
    " FROM (SELECT DISTINCT pid, t, v FROM c WHERE pid IS NOT NULL) k),"
    " ins AS ("
    " INSERT INTO usage (event_id, request_id, task_id, tenant_id, model, provider, pool,"
    "  allocation_id, allocation_seconds, tflops, vram_mb, prompt_tokens, completion_tokens,"
    "  request_bytes, response_bytes, attempts, allocate_ms, inference_ms, release_ms,"
    "  total_ms, occurred_at, price_id, currency, allocation_rate_micros, cost_prompt_micros,"
    "  cost_completion_micros, cost_allocation_micros, cost_request_micros, cost_micros,"
    "  trace_id, batch)"
    " SELECT event_id, request_id, task_id, tenant_id, model, provider, pool, allocation_id,"
    "  allocation_seconds, tflops, vram_mb, prompt_tokens, completion_tokens, request_bytes,"
    "  response_bytes, attempts, allocate_ms, inference_ms, release_ms, total_ms, occurred_at,"
    "  price_id, currency, rate, cp, cc, ca, cr, cp + cc + ca + cr, trace_id, batch"
    " FROM (SELECT e.event_id, e.request_id, e.task_id, e.tenant_id, e.model, e.provider,"
    "  e.pool, e.allocation_id, e.allocation_seconds, e.tflops,"
    "  e.vram_mb, e.prompt_tokens, e.completion_tokens, e.request_bytes, e.response_bytes,"
    "  e.attempts, e.allocate_ms, e.inference_ms, e.release_ms, e.total_ms, e.occurred_at,"
    "  p.price_id, p.currency, p.allocation_second_micros AS rate, " COSTS ", e.trace_id, c.batch"
    " FROM c JOIN e USING (event_id)"
    " LEFT JOIN (SELECT gk.pid, gk.t, gk.v, q.price_id, q.currency, q.prompt_per_1k_micros,"
    "   q.completion_per_1k_micros, q.request_micros,"
    "   coalesce(gk.rate, q.allocation_second_micros) AS allocation_second_micros"
    "   FROM gk JOIN prices q ON q.price_id = gk.pid) p"
    "  ON p.pid = c.pid AND p.t = c.t AND p.v = c.v OFFSET 0) x"
    " RETURNING tenant_id, occurred_at, cost_micros),"
    " s AS (SELECT tenant_id, billing_period(occurred_at) AS period, sum(cost_micros) AS cost,"
    "  count(*) AS n FROM ins WHERE cost_micros IS NOT NULL GROUP BY 1, 2),"
    /* budget rows locked in one order: two ledgers never deadlock on them */
    " lk AS (SELECT b.tenant_id, b.period, s.cost, s.n FROM budget_periods b"
    "  JOIN s ON b.tenant_id = s.tenant_id AND b.period = s.period"
    "  ORDER BY b.tenant_id, b.period FOR UPDATE OF b),"
    " spend AS ("
    " UPDATE budget_periods b SET spent_micros = b.spent_micros + lk.cost,"
    "  usage_rows = b.usage_rows + lk.n, updated_at = now()"
    "  FROM lk WHERE b.tenant_id = lk.tenant_id AND b.period = lk.period RETURNING 1)"
    " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM spend)";

const char *gt_ledger_insert_sql(void)
{
    return sql_insert;
}

static void flush(gt_ledger_t *l);

static void batch_free(batch_t *b)
{
    json_decref(b->events);
    gt_ledger_rows_free(b->rows);
    free(b->msgs);
    free(b);
}

static void maybe_resume(gt_ledger_t *l)
{
    if (l->paused && !l->draining &&
        gt_consumer_in_flight(l->consumer) < 4 * l->d->cfg->ledger_batch_size) {
        l->paused = 0;
        gt_consumer_resume(l->consumer);
    }
}

static void on_single(const PGresult *res, const char *err, void *arg);

/* The connection with the fewest statements waiting (one not up yet keeps its
 * own, which wait there: gt_pg sends them once it connects). */
static gt_pg_t *least_busy(const gt_ledger_t *l)
{
    gt_pg_t *best = l->pg[0];
    for (int i = 1; i < l->npg; i++)
        if (gt_pg_pending(l->pg[i]) < gt_pg_pending(best))
            best = l->pg[i];
    return best;
}

/* Sends b's rows with the batch statement; cb gets the outcome. Batches on
 * different connections commit in any order: each marks only its own
 * messages done, and the consumer commits up to the lowest undone offset. */
static void send_rows(batch_t *b, gt_pg_cb cb)
{
    const char *params[GT_LEDGER_NPARAMS];
    int lengths[GT_LEDGER_NPARAMS], formats[GT_LEDGER_NPARAMS];
    if (!b->rows || gt_ledger_rows_params(b->rows, params, lengths, formats) != 0 ||
        gt_pg_query_bin(least_busy(b->l), sql_insert, GT_LEDGER_NPARAMS, params, lengths, formats,
                        cb, b) != 0)
        cb(NULL, "cannot send query", b);
}

/* A batch failed on an SQL error: some event is bad in a way the schema let
 * through. Insert one by one so only that event goes to the DLQ. */
static void split(batch_t *b)
{
    for (int i = 0; i < b->n; i++) {
        batch_t *one = calloc(1, sizeof(*one));
        one->l = b->l;
        one->n = 1;
        one->sent_ns = uv_hrtime();
        one->msgs = malloc(sizeof(gt_msg_t *));
        one->msgs[0] = b->msgs[i];
        one->events = json_array();
        json_array_append(one->events, json_array_get(b->events, (size_t)i));
        one->rows = gt_ledger_rows_new();
        if (one->rows && gt_ledger_rows_add(one->rows, json_array_get(b->events, (size_t)i)) != 0) {
            gt_ledger_rows_free(one->rows);
            one->rows = NULL;
        }
        send_rows(one, on_single);
    }
    batch_free(b);
}

static void on_single(const PGresult *res, const char *err, void *arg)
{
    batch_t *b = arg;
    gt_ledger_t *l = b->l;
    char state[6];
    if (err) /* permanent (gt_pg retried the transient ones); bad data is invalid_usage */
        gt_dispatcher_dead_letter(
            l->d, l->consumer, b->msgs[0], "ledger.insert",
            gt_pg_err_sqlstate(err, state) == 0 &&
                    (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
                ? "invalid_usage"
                : "persist_failed",
            err, NULL);
    else {
        l->rows_written += atol(PQgetvalue(res, 0, 0));
        gt_stats_ledger_batch(atol(PQgetvalue(res, 0, 0)),
                              (double)(uv_hrtime() - b->sent_ns) / 1e9);
        gt_consumer_done(l->consumer, b->msgs[0]);
    }
    batch_free(b);
    maybe_resume(l);
}

static void on_inserted(const PGresult *res, const char *err, void *arg)
{
    batch_t *b = arg;
    gt_ledger_t *l = b->l;
    if (err && l->d->closing) { /* "closed": the events stay undone, redelivered */
        batch_free(b);
        return;
    }
    if (err) {
        /* Permanent: a statement timeout, a read-only failover or a full disk
         * are transient and were retried by gt_pg, never reach here. */
        gt_warn("usage batch of %d failed (%s): inserting one by one", b->n, err);
        split(b);
        return;
    }
    l->rows_written += atol(PQgetvalue(res, 0, 0));
    l->batches++;
    gt_stats_ledger_batch(atol(PQgetvalue(res, 0, 0)), (double)(uv_hrtime() - b->sent_ns) / 1e9);
    for (int i = 0; i < b->n; i++)
        gt_consumer_done(l->consumer, b->msgs[i]);
    batch_free(b);
    maybe_resume(l);
}

static void flush(gt_ledger_t *l)
{
    uv_timer_stop(&l->timer);
    if (l->n == 0)
        return;
    batch_t *b = calloc(1, sizeof(*b));
    b->l = l;
    b->msgs = l->msgs;
    b->events = l->events;
    b->rows = l->rows;
    b->n = l->n;
    b->sent_ns = uv_hrtime();
    l->msgs = calloc((size_t)l->cap, sizeof(gt_msg_t *));
    l->events = json_array();
    l->rows = gt_ledger_rows_new();
    l->n = 0;
    send_rows(b, on_inserted);
}

static void on_timer(uv_timer_t *t)
{
    flush(t->data);
}

static void on_usage(gt_consumer_t *c, gt_msg_t *msg, void *arg)
{
    gt_ledger_t *l = arg;
    char err[512];
    const char *code = NULL;
    json_t *ev = gt_message_parse(msg, l->d->usage_schema, &code, err, sizeof(err));
    if (!ev) {
        gt_dispatcher_dead_letter(l->d, c, msg, "ledger.parse",
                                  strcmp(code, "invalid_json") == 0 ? code : "invalid_usage", err,
                                  NULL);
        return;
    }
    /* The trace of the request it bills, from the traceparent header (not in the body). */
    char tp[128];
    gt_trace_ctx_t tc;
    if (gt_msg_header(msg, "traceparent", tp, sizeof(tp)) && gt_trace_parse(tp, &tc) == 0)
        json_object_set_new(ev, "trace_id", json_string(tc.trace_id));
    if (!l->rows || gt_ledger_rows_add(l->rows, ev) != 0) {
        /* out of memory: the batch statement cannot be built; one by one it is */
        gt_ledger_rows_free(l->rows);
        l->rows = NULL;
    }
    l->msgs[l->n++] = msg;
    json_array_append_new(l->events, ev);
    if (l->n >= l->cap || l->draining)
        flush(l);
    else if (l->n == 1)
        uv_timer_start(&l->timer, on_timer, (uint64_t)l->d->cfg->ledger_flush_ms, 0);
    /* A slow or absent database must not turn into unbounded memory. */
    if (!l->paused && gt_consumer_in_flight(c) >= 8 * l->cap) {
        l->paused = 1;
        gt_consumer_pause(c);
    }
}

gt_ledger_t *gt_ledger_new(gt_dispatcher_t *d, char *err, size_t errlen)
{
    gt_ledger_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->d = d;
    l->cap = d->cfg->ledger_batch_size;
    l->pg[l->npg++] = d->pg_ledger;
    while (l->npg < d->cfg->ledger_connections && l->npg < LEDGER_MAX_CONNS) {
        gt_pg_t *pg = gt_pg_new(d->loop, d->cfg->pg_conninfo);
        if (!pg)
            break; /* out of memory: fewer connections, same results */
        l->pg[l->npg++] = pg;
    }
    l->msgs = calloc((size_t)l->cap, sizeof(gt_msg_t *));
    l->events = json_array();
    l->rows = gt_ledger_rows_new();
    const char *topics[] = {d->cfg->topics.usage, NULL};
    gt_consumer_opts_t opts = {.group_id = d->cfg->group_ledger,
                               .instance_id = d->id,
                               .topics = topics,
                               .cb = on_usage,
                               .arg = l,
                               .commit_interval_ms = d->cfg->commit_interval_ms};
    l->consumer = gt_consumer_new(d->loop, d->cfg, &opts, err, errlen);
    if (!l->consumer) {
        for (int i = 1; i < l->npg; i++)
            gt_pg_free(l->pg[i]);
        json_decref(l->events);
        gt_ledger_rows_free(l->rows);
        free(l->msgs);
        free(l);
        return NULL;
    }
    /* only now: a timer handle once initialised may be freed only after its close callback */
    uv_timer_init(d->loop, &l->timer);
    l->timer.data = l;
    return l;
}

int gt_ledger_in_flight(const gt_ledger_t *l)
{
    return gt_consumer_in_flight(l->consumer);
}

void gt_ledger_drain(gt_ledger_t *l)
{
    l->draining = 1;
    l->paused = 1;
    gt_consumer_pause(l->consumer);
    flush(l);
}

void gt_ledger_close(gt_ledger_t *l)
{
    flush(l);
    /* as pg_ledger is freed by the dispatcher: unanswered batches fail as "closed"
     * and stay undone (redelivered) */
    for (int i = 1; i < l->npg; i++)
        gt_pg_free(l->pg[i]);
    l->npg = 1;
    gt_consumer_close_handles(l->consumer);
    uv_close((uv_handle_t *)&l->timer, NULL);
}

void gt_ledger_free(gt_ledger_t *l)
{
    gt_consumer_free(l->consumer);
    json_decref(l->events);
    gt_ledger_rows_free(l->rows);
    free(l->msgs);
    free(l);
}
