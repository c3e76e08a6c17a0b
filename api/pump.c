/* pump.c - gantry-api's loop side: publishes batch lines to gantry.requests
 * and cancels to the control topic (lib/effect), records results from
 * gantry.results once per line, ends batches (files, status) and announces
 * them on gantry.events. Everything it decides is in PostgreSQL first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "effect.h"
#include "json_text.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "pump.h"

#define TICK_MS 200

struct gt_api_pump {
    uv_loop_t *loop;
    const gt_config_t *cfg;
    const gt_api_config_t *ac;
    gt_pg_t *pg;
    gt_effects_t *es;
    gt_consumer_t *consumer;
    uv_timer_t tick;
    char source[128];
    int publishing; /* a publish round is out (select, produce, mark) */
    int cancelling; /* a cancel round is out */
    int sweeping;   /* the sweep's queries are out */
    int records;    /* results being recorded */
    int events_out; /* end events produced and not yet marked sent */
    int closing;
};

static gt_metric_t *m_published, *m_results, *m_ended;

/* ---- publish -------------------------------------------------------------- */

typedef struct round {
    gt_api_pump_t *p;
    json_t *keys; /* [{batch_id, line}] to mark */
    int cancel;
} round_t;

static void round_marked(const PGresult *res, const char *err, void *arg)
{
    round_t *r = arg;
    if (err)
        gt_log(GT_LOG_WARN, NULL, "api: marking a round: %s", err);
    if (r->cancel)
        r->p->cancelling = 0;
    else
        r->p->publishing = 0;
    json_decref(r->keys);
    free(r);
}

static void round_done(void *arg)
{
    round_t *r = arg;
    char *s = json_dumps(r->keys, JSON_COMPACT);
    const char *p[1] = {s};
    int rc =
        s ? gt_pg_query(r->p->pg,
                        r->cancel ? "UPDATE api_batch_lines l SET cancel_sent = true FROM"
                                    " jsonb_to_recordset($1::jsonb) AS x(batch_id text, line int)"
                                    " WHERE l.batch_id = x.batch_id AND l.line = x.line"
                                  : "UPDATE api_batch_lines l SET published = true FROM"
                                    " jsonb_to_recordset($1::jsonb) AS x(batch_id text, line int)"
                                    " WHERE l.batch_id = x.batch_id AND l.line = x.line",
                        1, p, round_marked, r)
          : -1;
    free(s);
    if (rc)
        round_marked(NULL, "cannot queue", r);
}

static void round_failed(const char *topic, int err, const char *reason, void *arg)
{
    round_t *r = arg;
    gt_log(GT_LOG_ERROR, NULL, "api: producing to %s: %s", topic, reason ? reason : "given up");
    if (r->cancel)
        r->p->cancelling = 0;
    else
        r->p->publishing = 0;
    json_decref(r->keys);
    free(r);
}

/* Rows: batch_id, line, request_id, request (or ending for cancels). */
static void on_round_rows(const PGresult *res, const char *err, void *arg)
{
    round_t *r = arg;
    gt_api_pump_t *p = r->p;
    int n = res ? PQntuples(res) : 0;
    gt_effect_t *e = n ? gt_effect_new(p->es, round_done, round_failed, r) : NULL;
    if (err || !n || !e) {
        if (err && strcmp(err, "closed") != 0)
            gt_log(GT_LOG_WARN, NULL, "api: selecting lines: %s", err);
        round_marked(NULL, NULL, r); /* nothing out: the next tick tries again */
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *rid = PQgetvalue(res, i, 2);
        json_array_append_new(r->keys, json_pack("{s:s,s:i}", "batch_id", PQgetvalue(res, i, 0),
                                                 "line", atoi(PQgetvalue(res, i, 1))));
        if (r->cancel) {
            json_t *m = json_pack("{s:s,s:s,s:s,s:s}", "schema", "gantry.control.v1", "type",
                                  "cancel", "request_id", rid, "reason",
                                  strcmp(PQgetvalue(res, i, 3), "expire") == 0
                                      ? "batch completion_window expired"
                                      : "batch cancelled");
            gt_effect_add_json(e, p->ac->control_topic, rid, m, NULL, 0);
            json_decref(m);
        } else {
            const char *v = PQgetvalue(res, i, 3);
            gt_effect_add(e, p->cfg->topics.requests, rid, strlen(rid), v, strlen(v), NULL, 0);
        }
    }
    gt_metric_add(m_published, n, r->cancel ? "cancel" : "request");
    gt_effect_seal(e);
}

static void start_round(gt_api_pump_t *p, int cancel)
{
    round_t *r = calloc(1, sizeof(*r));
    if (!r || !(r->keys = json_array())) {
        free(r);
        return;
    }
    r->p = p;
    r->cancel = cancel;
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", p->ac->publish_batch);
    const char *params[1] = {lim};
    const char *sql =
        cancel ? "SELECT l.batch_id, l.line, l.request_id, b.ending FROM api_batches b"
                 " JOIN api_batch_lines l USING (batch_id)"
                 " WHERE b.ending IS NOT NULL AND b.status IN ('in_progress', 'cancelling')"
                 " AND l.published AND l.state = 'pending' AND NOT l.cancel_sent"
                 " ORDER BY b.batch_id, l.line LIMIT $1"
               : "SELECT l.batch_id, l.line, l.request_id, l.request::text FROM api_batches b"
                 " JOIN api_batch_lines l USING (batch_id)"
                 " WHERE b.status = 'in_progress' AND b.ending IS NULL AND NOT l.published"
                 " AND l.state = 'pending' ORDER BY b.created_at, l.batch_id, l.line LIMIT $1";
    if (cancel)
        p->cancelling = 1;
    else
        p->publishing = 1;
    if (gt_pg_query(p->pg, sql, 1, params, on_round_rows, r)) {
        json_decref(r->keys);
        free(r);
        if (cancel)
            p->cancelling = 0;
        else
            p->publishing = 0;
    }
}

/* ---- ending batches --------------------------------------------------------- */

typedef struct ending {
    gt_api_pump_t *p;
    char batch_id[64];
} ending_t;

static void on_event_marked(const PGresult *res, const char *err, void *arg)
{
    ending_t *en = arg;
    if (err)
        gt_log(GT_LOG_WARN, NULL, "api: marking an event sent: %s", err);
    en->p->events_out--;
    free(en);
}

static void on_event_done(void *arg)
{
    ending_t *en = arg;
    const char *params[1] = {en->batch_id};
    if (gt_pg_query(en->p->pg, "UPDATE api_batches SET event_sent = true WHERE batch_id = $1", 1,
                    params, on_event_marked, en))
        on_event_marked(NULL, "cannot queue", en);
}

static void on_event_failed(const char *topic, int err, const char *reason, void *arg)
{
    ending_t *en = arg;
    gt_log(GT_LOG_ERROR, NULL, "api: batch event to %s: %s", topic, reason ? reason : "given up");
    en->p->events_out--;
    free(en);
}

/* Rows: batch_id, tenant_id, flavor, status, counts (json). One event each,
 * event_id batch.<status>:<batch_id> (a re-send is recognisable). */
static void on_events(const PGresult *res, const char *err, void *arg)
{
    gt_api_pump_t *p = arg;
    int n = res ? PQntuples(res) : 0;
    for (int i = 0; i < n; i++) {
        ending_t *en = calloc(1, sizeof(*en));
        if (!en)
            break;
        en->p = p;
        snprintf(en->batch_id, sizeof(en->batch_id), "%s", PQgetvalue(res, i, 0));
        const char *st = PQgetvalue(res, i, 3);
        char type[48], eid[128], at[40];
        snprintf(type, sizeof(type), "batch.%s", st);
        snprintf(eid, sizeof(eid), "%s:%s", type, en->batch_id);
        gt_clock_fmt(gt_clock_wall_ms(), at, sizeof(at));
        json_t *counts = json_loads(PQgetvalue(res, i, 4), 0, NULL);
        json_t *ev =
            json_pack("{s:s,s:s,s:s,s:s,s:s,s:{s:s,s:s,s:s,s:s,s:o*}}", "schema", "gantry.event.v1",
                      "event_id", eid, "type", type, "source", p->source, "at", at, "data",
                      "batch_id", en->batch_id, "tenant_id", PQgetvalue(res, i, 1), "api",
                      PQgetvalue(res, i, 2), "status", st, "request_counts", counts);
        gt_effect_t *e = ev ? gt_effect_new(p->es, on_event_done, on_event_failed, en) : NULL;
        if (!e) {
            json_decref(ev);
            free(en);
            continue;
        }
        p->events_out++;
        gt_effect_add_json(e, p->cfg->topics.events, en->batch_id, ev, NULL, 0);
        gt_effect_seal(e);
        json_decref(ev);
        gt_metric_add(m_ended, 1, st);
    }
    (void)err;
}

static const char events_sql[] =
    "SELECT batch_id, tenant_id, flavor, status, jsonb_build_object("
    " 'total', total,"
    " 'succeeded', (SELECT count(*) FROM api_batch_lines l WHERE l.batch_id = b.batch_id AND state "
    "= 'succeeded'),"
    " 'errored', (SELECT count(*) FROM api_batch_lines l WHERE l.batch_id = b.batch_id AND state = "
    "'errored'),"
    " 'cancelled', (SELECT count(*) FROM api_batch_lines l WHERE l.batch_id = b.batch_id AND state "
    "= 'cancelled'),"
    " 'expired', (SELECT count(*) FROM api_batch_lines l WHERE l.batch_id = b.batch_id AND state = "
    "'expired'))::text"
    " FROM api_batches b WHERE NOT event_sent AND status IN ('completed', 'cancelled', 'expired')"
    " LIMIT 100";

/* The end event goes out from the next sweep (the only sender: none twice). */
static void on_finalized(const PGresult *res, const char *err, void *arg)
{
    if (err)
        gt_log(GT_LOG_WARN, NULL, "api: finalizing: %s", err);
}

static void finalize(gt_api_pump_t *p, const char *batch_id)
{
    const char *params[1] = {batch_id};
    gt_pg_query(p->pg, "SELECT gantry_api_finalize($1)", 1, params, on_finalized, p);
}

static void on_finalizable(const PGresult *res, const char *err, void *arg)
{
    gt_api_pump_t *p = arg;
    for (int i = 0; res && i < PQntuples(res); i++)
        finalize(p, PQgetvalue(res, i, 0));
}

static void on_sweep_done(const PGresult *res, const char *err, void *arg)
{
    gt_api_pump_t *p = arg;
    p->sweeping = 0;
    on_events(res, err, p);
}

static void on_ignored(const PGresult *res, const char *err, void *arg)
{
    if (err)
        gt_log(GT_LOG_WARN, NULL, "api: sweep: %s", err);
}

/* Expiry, lines of ending batches that never went out, batches whose lines
 * all ended (never stuck in finalizing), events not yet sent. In order on one
 * connection, each seeing the one before. */
static void sweep(gt_api_pump_t *p)
{
    p->sweeping = 1;
    gt_pg_query(p->pg,
                "UPDATE api_batches SET ending = 'expire' WHERE status = 'in_progress'"
                " AND ending IS NULL AND expires_at < now()",
                0, NULL, on_ignored, p);
    if (!p->publishing) /* a round out may be producing these lines right now */
        gt_pg_query(p->pg,
                    "UPDATE api_batch_lines l SET state = CASE b.ending WHEN 'cancel' THEN"
                    " 'cancelled' ELSE 'expired' END FROM api_batches b"
                    " WHERE b.batch_id = l.batch_id AND b.ending IS NOT NULL"
                    " AND b.status IN ('in_progress', 'cancelling')"
                    " AND l.state = 'pending' AND NOT l.published",
                    0, NULL, on_ignored, p);
    gt_pg_query(p->pg,
                "SELECT batch_id FROM api_batches b WHERE status IN ('in_progress', 'cancelling',"
                " 'finalizing') AND NOT EXISTS (SELECT 1 FROM api_batch_lines l WHERE"
                " l.batch_id = b.batch_id AND l.state = 'pending') LIMIT 100",
                0, NULL, on_finalizable, p);
    gt_pg_query(p->pg, events_sql, 0, NULL, on_sweep_done, p);
}

/* ---- results ------------------------------------------------------------------ */

typedef struct rec {
    gt_api_pump_t *p;
    gt_msg_t *msg;
} rec_t;

static void on_recorded(const PGresult *res, const char *err, void *arg)
{
    rec_t *r = arg;
    gt_api_pump_t *p = r->p;
    p->records--;
    if (err && strcmp(err, "closed") == 0) {
        free(r); /* stopping: left undone, redelivered */
        return;
    }
    if (err)
        gt_log(GT_LOG_ERROR, NULL, "api: recording a result: %s", err);
    else if (res && PQntuples(res) && !PQgetisnull(res, 0, 0))
        finalize(p, PQgetvalue(res, 0, 0));
    gt_consumer_done(p->consumer, r->msg);
    free(r);
}

/* A result of one of our lines (request_id batch_...:custom_id or
 * msgbatch_...:custom_id) is recorded; any other is done at once. */
static void on_result(gt_consumer_t *c, gt_msg_t *msg, void *arg)
{
    gt_api_pump_t *p = arg;
    json_t *o = gt_json_parse(msg->value, msg->len, 0, NULL);
    const char *rid = json_string_value(json_object_get(o, "request_id"));
    const char *st = json_string_value(json_object_get(o, "status"));
    int ours = rid && st && (!strncmp(rid, "batch_", 6) || !strncmp(rid, "msgbatch_", 9)) &&
               strchr(rid, ':');
    rec_t *r = ours ? calloc(1, sizeof(*r)) : NULL;
    char *text = r ? json_dumps(o, JSON_COMPACT) : NULL;
    if (!text) {
        free(r);
        json_decref(o);
        gt_consumer_done(c, msg);
        return;
    }
    const char *state = !strcmp(st, "succeeded")   ? "succeeded"
                        : !strcmp(st, "cancelled") ? "cancelled"
                        : !strcmp(st, "expired")   ? "expired"
                                                   : "errored";
    r->p = p;
    r->msg = msg;
    const char *params[3] = {rid, state, text};
    p->records++;
    gt_metric_add(m_results, 1, state);
    if (gt_pg_query(p->pg, "SELECT gantry_api_record($1, $2, $3::jsonb)", 3, params, on_recorded,
                    r)) {
        p->records--;
        free(r);
        gt_consumer_done(c, msg);
    }
    free(text);
    json_decref(o);
    if (gt_consumer_in_flight(c) >= 1000)
        gt_consumer_pause(c);
}

/* ---- tick ---------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    gt_api_pump_t *p = t->data;
    if (p->closing)
        return;
    if (gt_consumer_in_flight(p->consumer) < 750)
        gt_consumer_resume(p->consumer);
    if (!gt_pg_connected(p->pg))
        return;
    /* The sweep first: its statements reach PostgreSQL before the next
     * publish round's select, which so never picks a line it just ended. */
    if (!p->sweeping && !p->events_out)
        sweep(p);
    if (!p->publishing)
        start_round(p, 0);
    if (!p->cancelling)
        start_round(p, 1);
}

gt_api_pump_t *gt_api_pump_new(uv_loop_t *loop, const gt_config_t *cfg, const gt_api_config_t *ac,
                               gt_effects_t *es, const char *source, char *err, size_t errlen)
{
    gt_api_pump_t *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!m_published) {
        m_published =
            gt_metrics_counter("gantry_api_published_total",
                               "batch lines produced (request) and cancels (cancel)", "kind");
        m_results = gt_metrics_counter("gantry_api_results_total",
                                       "results of batch lines consumed, by line state", "state");
        m_ended = gt_metrics_counter("gantry_api_batches_ended_total",
                                     "batches announced ended, by status", "status");
    }
    p->loop = loop;
    p->cfg = cfg;
    p->ac = ac;
    p->es = es;
    snprintf(p->source, sizeof(p->source), "%s", source);
    p->pg = gt_pg_new(loop, cfg->pg_conninfo);
    const char *topics[] = {cfg->topics.results, NULL};
    gt_consumer_opts_t o = {.group_id = ac->group, .topics = topics, .cb = on_result, .arg = p};
    if (!p->pg || !(p->consumer = gt_consumer_new(loop, cfg, &o, err, errlen))) {
        if (p->pg)
            gt_pg_free(p->pg);
        free(p);
        return NULL;
    }
    uv_timer_init(loop, &p->tick);
    p->tick.data = p;
    uv_timer_start(&p->tick, on_tick, TICK_MS, TICK_MS);
    return p;
}

int gt_api_pump_connected(const gt_api_pump_t *p)
{
    return gt_pg_connected(p->pg);
}

int gt_api_pump_busy(const gt_api_pump_t *p)
{
    return p->publishing + p->cancelling + p->records + gt_consumer_in_flight(p->consumer);
}

void gt_api_pump_close(gt_api_pump_t *p)
{
    p->closing = 1;
    uv_timer_stop(&p->tick);
    uv_close((uv_handle_t *)&p->tick, NULL);
    gt_consumer_close_handles(p->consumer);
    gt_pg_free(p->pg);
    p->pg = NULL;
}

void gt_api_pump_free(gt_api_pump_t *p)
{
    if (!p)
        return;
    gt_consumer_free(p->consumer);
    free(p);
}
