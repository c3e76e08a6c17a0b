/* intake.c - the dispatcher's intake: validate, deduplicate, classify, build
 * the task graph, persist it and publish the ready tasks. A request's offset
 * is done only once its job is in PostgreSQL and its tasks are on Kafka. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "cache.h"
#include "classify.h"
#include "clock.h"
#include "release.h"
#include "router.h"
#include "dispatcher.h"
#include "graph.h"
#include "guard.h"
#include "log.h"
#include "json_text.h"
#include "message.h"
#include "pgbatch.h"
#include "digest.h"
#include "ratelimit.h"
#include "stats.h"
#include "trace.h"

typedef struct intake {
    gt_dispatcher_t *d;
    gt_msg_t *msg;
    json_t *req;
    gt_graph_t graph;
    char *request_id;
    char body_sha[65];     /* SHA-256 of the request as received (request_hash) */
    char traceparent[128]; /* the intake span: tasks and a rejection carry it */
    int has_traceparent;
    gt_span_t span; /* dispatcher.intake, child of the request's traceparent */
    int span_open;
    json_t *published;                 /* task_ids sent, marked queued once all are durable */
    json_t *rejection;                 /* the rejected result being published, or NULL */
    void (*answer)(struct intake *in); /* publishes the rejection once it is stored */
    char cache_key[65];                /* response cache key when cacheable (cache.h), else "" */
    int64_t cache_ttl_ms;
    int cache_lead;       /* missed: leads its key's flight until its job exists */
    json_t *cached;       /* the answer from the cache being published, or NULL */
    json_t *cached_usage; /* its usage event, stored with it (jobs.answer_usage) */
    const char *picked;   /* the deployment the router chose, until its tasks are published */
    int held;             /* tasks stored waiting for the releaser (release.h) */
} intake_t;

/* Log context of a request in intake (lines about it carry its ids and trace). */
#define IN_CTX(in)                                                                                 \
    (&(gt_log_ctx_t){.request_id = (in)->request_id,                                               \
                     .tenant_id = json_string_value(json_object_get((in)->req, "tenant_id")),      \
                     .trace_id = (in)->traceparent})

/* Writes the jobs and task graphs of requests ($1: rows as persist builds
 * them, pgbatch.h): one row per request, i and 1 when its job was created
 * here (0: it existed, a redelivered request). An error fails the statement
 * and pgbatch inserts each of its requests alone, so one bad request fails
 * only itself. */
static const char sql_insert[] =
    "WITH u AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS u(i int, request_id text,"
    "       tenant_id text, kind text, model text, lane text, priority int,"
    "       deadline timestamptz, reply_topic text, task_count int, batch boolean,"
    "       request jsonb, source_topic text, source_partition int, source_offset bigint,"
    "       tasks jsonb, traceparent text, request_sha256 text, cache_key text,"
    "       cache_ttl_ms bigint)),"
    " j AS ("
    "  INSERT INTO jobs (request_id, tenant_id, kind, model, lane, priority, deadline,"
    "                    reply_topic, task_count, batch, request, source_topic,"
    "                    source_partition, source_offset, traceparent,"
    "                    request_sha256, cache_key, cache_ttl_ms)"
    "  SELECT request_id, tenant_id, kind, model, lane, priority, deadline, reply_topic,"
    "         task_count, batch, request, source_topic, source_partition, source_offset,"
    "         traceparent, request_sha256, cache_key, cache_ttl_ms FROM u ORDER BY request_id"
    "  ON CONFLICT (request_id) DO NOTHING RETURNING request_id),"
    " t AS ("
    "  INSERT INTO tasks (task_id, request_id, idx, kind, depends_on, model, pool, lane,"
    "                     tenant_id, priority, hold, waiting_since, message)"
    "  SELECT r.task_id, j.request_id, r.idx, r.kind, r.depends_on, r.model, r.pool, r.lane,"
    "         u.tenant_id, u.priority, CASE WHEN r.message IS NOT NULL THEN 'waiting' END,"
    "         CASE WHEN r.message IS NOT NULL THEN now() END, r.message"
    "  FROM j JOIN u ON u.request_id = j.request_id,"
    "       jsonb_to_recordset(u.tasks) AS r(task_id text, idx int, kind text,"
    "       depends_on int[], model text, pool text, lane text, message jsonb))"
    " SELECT u.i, (j.request_id IS NOT NULL)::int FROM u"
    "  LEFT JOIN j ON j.request_id = u.request_id ORDER BY u.i";

/* Crash recovery: inference tasks of an existing job that never reached Kafka. */
static const char sql_pending[] =
    "SELECT j.request, coalesce(array_to_json(array_agg(t.idx ORDER BY t.idx)"
    "         FILTER (WHERE t.task_id IS NOT NULL)), '[]'), j.traceparent, j.request_sha256"
    " FROM jobs j LEFT JOIN tasks t ON t.request_id = j.request_id"
    "  AND t.kind = 'inference' AND t.status = 'pending' AND t.hold IS NULL"
    " WHERE j.request_id = $1 GROUP BY j.request, j.traceparent, j.request_sha256";

/* Marks the published tasks of many requests queued at once ($1: rows of
 * request_id r, task_id t; pgbatch.h). Bounded by the requests: their open
 * tasks come from the tasks_unfinished index whatever the statistics say. By
 * task_id alone, a generic plan built on stale statistics scanned every open
 * task (0.8-4 ms a request under load). The rows are locked in task_id
 * order first, as the coordinator's sql_apply_many locks them: two
 * statements of many rows each never deadlock. */
static const char sql_queued[] =
    "WITH u AS (SELECT * FROM json_to_recordset($1::json) AS u(r text, t text)),"
    " lk AS (SELECT task_id FROM tasks"
    "  WHERE request_id = ANY(ARRAY(SELECT r FROM u)) AND status = 'pending'"
    "   AND task_id = ANY(ARRAY(SELECT t FROM u)) ORDER BY task_id FOR UPDATE)"
    " UPDATE tasks SET status = 'queued', queued_at = now()"
    " WHERE request_id = ANY(ARRAY(SELECT r FROM u)) AND status = 'pending'"
    "  AND task_id = ANY(ARRAY(SELECT task_id FROM lk))";

static void intake_free(intake_t *in)
{
    if (in->span_open) {
        in->span_open = 0;
        gt_span_end(&in->span, NULL, "{s:s, s:s, s:i, s:b}", "gantry.request_id",
                    in->request_id ? in->request_id : "", "gantry.tenant_id",
                    in->req ? json_string_value(json_object_get(in->req, "tenant_id")) : "",
                    "gantry.tasks", in->graph.n_inference, "gantry.rejected",
                    in->rejection != NULL);
    }
    if (in->request_id)
        json_object_del(in->d->intake_active, in->request_id);
    if (in->cache_lead)
        gt_cache_abandon(in->d->cache, in->request_id);
    if (in->picked)
        gt_router_release(in->d->router, in->picked);
    json_decref(in->cached);
    json_decref(in->cached_usage);
    gt_graph_free(&in->graph);
    json_decref(in->req);
    json_decref(in->published);
    json_decref(in->rejection);
    free(in->request_id);
    free(in);
}

/* Everything the request caused is durable: its offset may be committed. */
static void intake_finish(intake_t *in)
{
    gt_consumer_done(in->d->consumer, in->msg);
    intake_free(in);
}

/* The "queued" update that carried the request's tasks was answered: the
 * request is done. */
static void on_queued(void *item, const char *err)
{
    intake_t *in = item;
    if (err) /* the tasks are on Kafka: a stale 'pending' only delays status display */
        gt_log(GT_LOG_WARN, IN_CTX(in), "marking tasks queued failed: %s", err);
    intake_finish(in);
}

/* Every task is on Kafka: mark them queued, then the request is done. Tasks
 * of a lane with slots wait in PostgreSQL: the releaser publishes them. */
static void on_tasks_durable(void *arg)
{
    intake_t *in = arg;
    gt_dispatcher_t *d = in->d;
    if (in->held) {
        gt_release_kick(d->release, NULL);
        if (json_array_size(in->published) == 0) {
            intake_finish(in);
            return;
        }
    }
    json_t *rows = json_array();
    size_t k;
    json_t *v;
    json_array_foreach (in->published, k, v)
        json_array_append_new(rows, json_pack("{s:s, s:O}", "r", in->request_id, "t", v));
    if (gt_pgbatch_add(d->queued, in, rows) != 0) /* it took rows either way */
        on_queued(in, "out of memory");
}

/* err 0: stopping; the request stays undone and its tasks are recovered as
 * 'pending' on redelivery. Else a task cannot be produced at all (the size
 * check before storing should have refused it): dead-lettered. */
static void on_tasks_failed(const char *topic, int err, const char *reason, void *arg)
{
    intake_t *in = arg;
    if (err) {
        char why[512];
        snprintf(why, sizeof(why), "a task cannot be produced to %s: %s", topic, reason);
        gt_log(GT_LOG_ERROR, IN_CTX(in), "%s", why);
        gt_dispatcher_dead_letter(in->d, in->d->consumer, in->msg, "intake.publish",
                                  "publish_failed", why, in->request_id);
    }
    intake_free(in);
}

static int publish_node(intake_t *in, gt_effect_t *e, const gt_node_t *node)
{
    char topic[256];
    gt_config_lane_topic(in->d->cfg, json_string_value(json_object_get(node->task, "lane")), topic,
                         sizeof(topic));
    gt_header_t h = {"traceparent", in->traceparent};
    json_array_append_new(in->published, json_string(node->task_id));
    size_t nh = in->has_traceparent ? 1 : 0;
    if (!node->text) /* out of memory at the size check */
        return gt_effect_add_json(e, topic, node->task_id, node->task, &h, nh);
    return gt_effect_add(e, topic, node->task_id, strlen(node->task_id), node->text, node->text_len,
                         &h, nh);
}

/* Publishes the inference nodes listed in idxs (NULL: every node without
 * dependencies) as one effect; on_tasks_durable goes on. */
static void publish_ready(intake_t *in, const json_t *idxs)
{
    in->picked = NULL; /* its task results end the deployment's in-flight count */
    gt_effect_t *e = gt_effect_new(in->d->effects, on_tasks_durable, on_tasks_failed, in);
    if (!e) {
        gt_log(GT_LOG_ERROR, IN_CTX(in), "out of memory publishing tasks: left undone");
        intake_free(in);
        return;
    }
    for (int i = 0; i < in->graph.n_nodes; i++) {
        const gt_node_t *node = &in->graph.nodes[i];
        if (node->kind != GT_NODE_INFERENCE || node->n_deps)
            continue;
        if (gt_release_lane_slots(in->d->cfg,
                                  json_string_value(json_object_get(node->task, "lane")))) {
            in->held++; /* stored waiting: the releaser publishes it */
            continue;
        }
        int wanted = !idxs;
        size_t k;
        json_t *v;
        json_array_foreach (idxs, k, v)
            wanted |= json_integer_value(v) == node->idx;
        if (wanted && publish_node(in, e, node) != 0) {
            /* Out of memory: the request stays undone; its tasks are
             * recovered as 'pending' on redelivery. */
            gt_log(GT_LOG_ERROR, IN_CTX(in), "cannot queue task %s for Kafka", node->task_id);
            gt_effect_abandon(e);
            intake_free(in);
            return;
        }
    }
    gt_effect_seal(e);
}

static int build(intake_t *in, const json_t *req, const char **code, char *err, size_t errlen)
{
    gt_route_t route;
    if (gt_classify(in->d->cfg, req, &route, code, err, errlen) != 0)
        return -1;
    /* A model whose provider's breaker is open goes to its first healthy fallback. */
    const gt_model_t *healthy = gt_provider_health_route(in->d->providers, in->d->cfg, route.model);
    if (healthy != route.model && gt_guard_fallback_ok(in->d->cfg, req, route.model, healthy)) {
        gt_log(GT_LOG_INFO, IN_CTX(in), "model %s: provider %s is degraded; routed to fallback %s",
               route.model->name, route.model->provider, healthy->name);
        route.model = healthy;
    }
    /* A logical model with deployments: one of them serves (router.h). */
    if (route.model->n_deployments && in->d->router) {
        const char *why = NULL;
        const gt_model_t *dep =
            gt_router_pick(in->d->router, in->d->cfg, route.model, gt_clock_mono_ms(), &why);
        if (dep && dep != route.model) {
            if (in->picked) /* built again (recovery): the earlier pick is replaced */
                gt_router_release(in->d->router, in->picked);
            in->picked = dep->name;
            route.model = dep;
        }
    }
    if (gt_graph_build(req, &route, in->d->cfg->max_batch, gt_clock_wall_ms(), &in->graph, err,
                       errlen) != 0) {
        *code = "too_large";
        return -1;
    }
    /* Sizes before anything is stored: a task Kafka refuses would leave its
     * job running for good. The result carries outputs, not the input. Each
     * task is serialised once, here: publish_node sends these bytes. */
    size_t limit = (size_t)in->d->cfg->kafka_message_max_bytes;
    for (int i = 0; i < in->graph.n_nodes; i++) {
        gt_node_t *node = &in->graph.nodes[i];
        if (node->kind != GT_NODE_INFERENCE || !node->task)
            continue;
        char buf[8192];
        size_t len = 0;
        char *text = gt_json_dump(node->task, buf, sizeof(buf), &len);
        if (text == buf && (text = malloc(len)))
            memcpy(text, buf, len);
        node->text = text;
        node->text_len = len;
        if (!text) /* out of memory: measured alone, serialised again to publish */
            len = json_dumpb(node->task, NULL, 0, JSON_COMPACT);
        /* Room for the key, the traceparent header and the record's overhead. */
        size_t n = len + 1024;
        if (limit && n > limit) {
            *code = "too_large";
            snprintf(err, errlen, "its task would be %zu bytes, over kafka.message_max_bytes (%zu)",
                     n, limit);
            gt_graph_free(&in->graph);
            return -1;
        }
    }
    return 0;
}

static void on_pending(const PGresult *res, const char *err, void *arg)
{
    intake_t *in = arg;
    if (err) {
        /* Its pending tasks are unknown: never mark this copy done unchecked
         * (transient failures were retried by gt_pg; this one is permanent,
         * or the process is stopping and the copy stays undone). */
        gt_dispatcher_dead_letter(in->d, in->d->consumer, in->msg, "intake.recover",
                                  "persist_failed", err, in->request_id);
        intake_free(in);
        return;
    }
    if (PQntuples(res) != 1) {
        gt_log(GT_LOG_ERROR, IN_CTX(in), "recovery lookup: job vanished");
        intake_finish(in); /* nothing left to recover */
        return;
    }
    /* The first body wins: a different one is a producer bug, kept in the DLQ
     * and the job left untouched. A job stored before the hash (NULL) counts
     * as identical. */
    if (!PQgetisnull(res, 0, 3) && strcmp(PQgetvalue(res, 0, 3), in->body_sha) != 0) {
        gt_stats_duplicate("conflict");
        gt_log(GT_LOG_WARN, IN_CTX(in),
               "duplicate request_id with a different body: dead-lettered");
        gt_dispatcher_dead_letter(in->d, in->d->consumer, in->msg, "intake.dedupe",
                                  "duplicate_conflict",
                                  "a job with this request_id exists with a different body; the "
                                  "first body won",
                                  in->request_id);
        intake_free(in);
        return;
    }
    gt_stats_duplicate("identical");
    json_t *stored = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    json_t *idxs = json_loads(PQgetvalue(res, 0, 1), 0, NULL);
    const char *code;
    char msg[256];
    if (json_array_size(idxs) > 0 && stored && build(in, stored, &code, msg, sizeof(msg)) == 0) {
        /* The job's own trace (its intake span), whatever this copy carried. */
        if (!PQgetisnull(res, 0, 2) && strlen(PQgetvalue(res, 0, 2)) < sizeof(in->traceparent))
            snprintf(in->traceparent, sizeof(in->traceparent), "%s", PQgetvalue(res, 0, 2));
        gt_log(GT_LOG_INFO, IN_CTX(in), "re-publishing %zu task(s) that never reached Kafka",
               json_array_size(idxs));
        publish_ready(in, idxs);
    } else {
        intake_finish(in);
    }
    json_decref(stored);
    json_decref(idxs);
}

/* The job's insert was answered: created here, or it existed (a duplicate:
 * its pending tasks are recovered). */
static void inserted(intake_t *in, int created)
{
    gt_dispatcher_t *d = in->d;
    if (created) {
        d->requests_accepted++;
        in->cache_lead = 0; /* its job ends the flight (gt_cache_job_done) */
        publish_ready(in, NULL);
        return;
    }
    d->requests_duplicate++;
    gt_log(GT_LOG_INFO, IN_CTX(in), "duplicate request: job exists");
    gt_graph_free(&in->graph);
    const char *params[] = {in->request_id};
    if (gt_pg_query(d->pg, sql_pending, 1, params, on_pending, in) != 0)
        on_pending(NULL, "cannot send query", in);
}

/* The statement that carried the request alone, or with others, was answered. */
static void on_inserted(void *item, const PGresult *res, int row, const char *err)
{
    intake_t *in = item;
    gt_dispatcher_t *d = in->d;
    if (!err && row < 0)
        err = "the insert answered nothing for the request";
    if (err) {
        /* A permanent SQL error (gt_pg retried the transient ones): a bug or
         * a constraint the schema let through. Keep the message, with the
         * SQLSTATE in the reason. While stopping ("closed") nothing is
         * dead-lettered and the message stays undone. */
        gt_dispatcher_dead_letter(d, d->consumer, in->msg, "intake.persist", "persist_failed", err,
                                  in->request_id);
        gt_budget_release(d, in->request_id);
        intake_free(in);
        return;
    }
    inserted(in, atoi(PQgetvalue(res, row, 1)) == 1);
}

static void persist(intake_t *in);

/* A rejection is stored as the job's answer, under this incarnation's claim,
 * before it is published, as a result is (coordinator.c): a redelivered copy
 * of the request finds the job and is not answered twice, and a dispatcher
 * that dies before marking it leaves a claim that the coordinator's sweep
 * finishes (publishing the stored answer only if it is not on Kafka). The
 * row has no tasks; a too_large request's body is left out (it is in the
 * DLQ entry). A cache hit is stored the same way, with its usage event
 * ($15), which whoever publishes the stored answer publishes with it. */
static const char sql_answer[] =
    "INSERT INTO jobs (request_id, tenant_id, kind, model, lane, reply_topic, task_count,"
    "                  request, status, result, result_stored_at, claimed_by,"
    "                  claimed_incarnation, claimed_at, traceparent, request_sha256,"
    "                  source_topic, source_partition, source_offset, answer_usage)"
    " VALUES ($1, $2, coalesce($3, ''), coalesce($4, ''), '', $5, 0, $6::jsonb, 'completing',"
    "         $7::jsonb, now(), $8, $9, now(), $10, $11, $12, $13, $14, $15::jsonb)"
    " ON CONFLICT (request_id) DO NOTHING RETURNING 1";

static const char sql_answered[] =
    "UPDATE jobs SET status = $3, completed_at = now()"
    " WHERE request_id = $1 AND status COLLATE \"C\" = 'completing'"
    "  AND claimed_incarnation = $2"; /* by jobs_pkey, as the coordinator's sql_complete */

static void on_answered(const PGresult *res, const char *err, void *arg)
{
    intake_t *in = arg;
    (void)res;
    if (err) /* on Kafka already: the claim sweep marks the job once the claim is stale */
        gt_log(GT_LOG_WARN, IN_CTX(in), "marking the rejected job failed: %s", err);
    intake_finish(in);
}

/* The rejection is on Kafka: mark the job, then the request is done. */
static void mark_answered(intake_t *in)
{
    const json_t *answer = in->cached ? in->cached : in->rejection;
    const char *status = json_string_value(json_object_get(answer, "status"));
    const char *params[] = {in->request_id, in->d->incarnation, status ? status : "rejected"};
    if (gt_pg_query(in->d->pg, sql_answered, 3, params, on_answered, in) != 0)
        on_answered(NULL, "cannot send query", in);
}

static void on_answer_stored(const PGresult *res, const char *err, void *arg)
{
    intake_t *in = arg;
    if (err) { /* transient errors were retried by gt_pg: permanent, or stopping */
        gt_dispatcher_dead_letter(in->d, in->d->consumer, in->msg, "intake.reject",
                                  "persist_failed", err, in->request_id);
        intake_free(in);
        return;
    }
    if (PQntuples(res) == 0) { /* the job exists: a duplicate, checked as any other */
        in->d->requests_duplicate++;
        gt_log(GT_LOG_INFO, IN_CTX(in), "duplicate request: job exists");
        const char *params[] = {in->request_id};
        if (gt_pg_query(in->d->pg, sql_pending, 1, params, on_pending, in) != 0)
            on_pending(NULL, "cannot send query", in);
        return;
    }
    in->answer(in);
}

/* Stores the answer (in->cached, else in->rejection) as the job's, then
 * in->answer publishes it. */
static void store_answer(intake_t *in, void (*answer)(intake_t *in), int with_body)
{
    const json_t *req = in->req;
    gt_msg_t *msg = in->msg;
    char part[16], off[24];
    char *req_text = with_body ? json_dumps(req, JSON_COMPACT) : NULL;
    char *answer_text = json_dumps(in->cached ? in->cached : in->rejection, JSON_COMPACT);
    char *usage_text = in->cached_usage ? json_dumps(in->cached_usage, JSON_COMPACT) : NULL;
    in->answer = answer;
    snprintf(part, sizeof(part), "%d", (int)msg->partition);
    snprintf(off, sizeof(off), "%lld", (long long)msg->offset);
    const char *params[] = {
        in->request_id,
        json_string_value(json_object_get(req, "tenant_id")),
        json_string_value(json_object_get(req, "kind")),
        json_string_value(json_object_get(req, "model")),
        json_string_value(json_object_get(req, "reply_topic")),
        req_text ? req_text : "{}",
        answer_text,
        in->d->id,
        in->d->incarnation,
        in->has_traceparent ? in->traceparent : NULL,
        in->body_sha[0] ? in->body_sha : NULL,
        msg->topic,
        part,
        off,
        usage_text,
    };
    if (!answer_text || (in->cached_usage && !usage_text) ||
        !json_string_value(json_object_get(req, "tenant_id")))
        on_answer_stored(NULL, "cannot store the rejection", in);
    else if (gt_pg_query(in->d->pg, sql_answer, 15, params, on_answer_stored, in) != 0)
        on_answer_stored(NULL, "cannot send query", in);
    free(req_text);
    free(answer_text);
    free(usage_text);
}

static void on_rejection_durable(void *arg)
{
    intake_t *in = arg;
    in->d->results_published++;
    gt_stats_result(json_string_value(json_object_get(in->rejection, "status")));
    mark_answered(in);
}

/* err 0: stopping, answered on redelivery. Else the reply topic cannot take
 * it (unknown, forbidden): the request goes to the DLQ. */
static void on_rejection_failed(const char *topic, int err, const char *reason, void *arg)
{
    intake_t *in = arg;
    if (err) {
        char why[512];
        snprintf(why, sizeof(why), "the rejected result cannot be produced to %s: %s", topic,
                 reason);
        gt_dispatcher_dead_letter(in->d, in->d->consumer, in->msg, "intake.reject",
                                  "publish_failed", why, in->request_id);
    }
    intake_free(in);
}

/* The rejected result to gantry.results and the reply topic, one effect. */
static void send_rejection(intake_t *in)
{
    const char *reply = json_string_value(json_object_get(in->req, "reply_topic"));
    gt_header_t h = {"traceparent", in->traceparent};
    gt_effect_t *e = gt_effect_new(in->d->effects, on_rejection_durable, on_rejection_failed, in);
    if (!e || gt_result_add(e, in->d->cfg, reply, in->request_id, in->rejection, &h,
                            in->has_traceparent ? 1 : 0) != 0) {
        gt_log(GT_LOG_ERROR, IN_CTX(in),
               "out of memory queueing the rejected result; it is answered on redelivery");
        if (e)
            gt_effect_abandon(e);
        intake_free(in); /* offset stays undone */
        return;
    }
    gt_effect_seal(e);
}

static void on_too_large_durable(void *arg)
{
    intake_t *in = arg;
    in->d->results_published++;
    in->d->dead_letters++;
    gt_stats_result("rejected");
    gt_stats_dead_letter("too_large");
    mark_answered(in);
}

/* err 0: stopping, answered on redelivery; else left undone (logged). */
static void on_too_large_failed(const char *topic, int err, const char *reason, void *arg)
{
    intake_t *in = arg;
    if (err)
        gt_log(GT_LOG_ERROR, IN_CTX(in), "cannot produce the too_large answer to %s: %s", topic,
               reason);
    intake_free(in);
}

/* A request that cannot be run within the size limits: answered rejected /
 * too_large, with its DLQ entry (which always fits), both one effect; no job
 * row is written. */
static void send_too_large(intake_t *in)
{
    gt_dispatcher_t *d = in->d;
    const char *why =
        json_string_value(json_object_get(json_object_get(in->rejection, "error"), "message"));
    const char *reply = json_string_value(json_object_get(in->req, "reply_topic"));
    gt_header_t h = {"traceparent", in->traceparent};
    gt_effect_t *e = gt_effect_new(d->effects, on_too_large_durable, on_too_large_failed, in);
    if (!e || !in->rejection ||
        gt_result_add(e, d->cfg, reply, in->request_id, in->rejection, &h,
                      in->has_traceparent ? 1 : 0) != 0 ||
        gt_dlq_send(e, d->cfg, in->msg, "intake.classify", "too_large", why, in->request_id) != 0) {
        gt_log(GT_LOG_ERROR, IN_CTX(in), "out of memory answering too_large: left undone");
        if (e)
            gt_effect_abandon(e);
        intake_free(in);
        return;
    }
    gt_effect_seal(e);
}

/* Answers the request rejected/code (why), stored as the job's answer before
 * send publishes it (with_body: the request is stored too). */
static void reject(intake_t *in, const char *code, const char *why, void (*send)(intake_t *in),
                   int with_body)
{
    char at[64];
    gt_log(GT_LOG_WARN, IN_CTX(in), "rejected: %s: %s", code, why);
    in->rejection =
        json_pack("{s:s, s:s, s:O, s:s, s:{s:s, s:s}, s:s}", "schema", "gantry.result.v1",
                  "request_id", in->request_id, "tenant_id", json_object_get(in->req, "tenant_id"),
                  "status", "rejected", "error", "code", code, "message", why, "completed_at",
                  gt_clock_fmt(gt_clock_wall_ms(), at, sizeof(at)));
    store_answer(in, send, with_body);
}

static void answer_too_large(intake_t *in, const char *why)
{
    reject(in, "too_large", why, send_too_large, 0);
}

/* Budget answer: persist the job, or answer rejected/budget_exceeded (stored
 * as the job's answer: a redelivered copy is answered by it, not again). */
static void on_admitted(int admitted, const char *reason, void *arg)
{
    intake_t *in = arg;
    if (admitted > 0) {
        persist(in);
        return;
    }
    if (admitted < 0) { /* not admitted unchecked: dead letter (none while stopping) */
        gt_dispatcher_dead_letter(in->d, in->d->consumer, in->msg, "intake.budget",
                                  "persist_failed", reason, in->request_id);
        intake_free(in);
        return;
    }
    reject(in, "budget_exceeded", reason, send_rejection, 1);
}

static void intake_start(gt_dispatcher_t *d, gt_msg_t *msg, json_t *req);
static void admit(intake_t *in);

/* The logical model of the request's task (a deployment's logical model). */
static const char *served_model(const intake_t *in)
{
    const char *m = json_string_value(json_object_get(in->graph.nodes[0].task, "model"));
    const gt_model_t *logical = gt_router_logical(in->d->cfg, m);
    return logical ? logical->name : m ? m : "";
}

static void on_cached_durable(void *arg)
{
    intake_t *in = arg;
    in->d->results_published++;
    gt_stats_result(json_string_value(json_object_get(in->cached, "status")));
    if (json_object_get(in->cached, "guardrails"))
        gt_guard_forget(in->d, in->request_id); /* the mask is no longer needed */
    mark_answered(in);
}

/* The cache hit's usage event: no provider ran; provider "cache" prices it
 * (price book: ('cache', model), else ('cache', '*'), zero by default). */
static json_t *cached_usage(intake_t *in, const json_t *output)
{
    char at[64], task_id[300], event_id[320];
    snprintf(task_id, sizeof(task_id), "%s/0", in->request_id);
    snprintf(event_id, sizeof(event_id), "%s:usage", task_id);
    char *out = json_dumps(output, JSON_COMPACT | JSON_ENCODE_ANY);
    char *input = json_dumps(json_object_get(in->req, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *u = json_pack(
        "{s:s, s:s, s:s, s:s, s:O, s:s, s:s, s:n, s:n, s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:i,"
        " s:{s:i}, s:s, s:b}",
        "schema", "gantry.usage.v1", "event_id", event_id, "request_id", in->request_id, "task_id",
        task_id, "tenant_id", json_object_get(in->req, "tenant_id"), "model", served_model(in),
        "provider", "cache", "pool", "allocation_id", "allocation_seconds", 0, "tflops", 0,
        "vram_mb", 0, "prompt_tokens", 0, "completion_tokens", 0, "request_bytes",
        (json_int_t)(input ? strlen(input) : 0), "response_bytes",
        (json_int_t)(out ? strlen(out) : 0), "attempts", 1, "durations", "total_ms", 0,
        "occurred_at", gt_clock_fmt(gt_clock_wall_ms(), at, sizeof(at)), "cached", 1);
    free(out);
    free(input);
    return u;
}

/* The cached answer is stored as the job's: its result and its usage event,
 * one effect. */
static void send_cached(intake_t *in)
{
    const char *reply = json_string_value(json_object_get(in->req, "reply_topic"));
    gt_header_t h = {"traceparent", in->traceparent};
    const json_t *usage = in->cached_usage;
    gt_effect_t *e = gt_effect_new(in->d->effects, on_cached_durable, on_rejection_failed, in);
    if (!e ||
        gt_result_add(e, in->d->cfg, reply, in->request_id, in->cached, &h,
                      in->has_traceparent ? 1 : 0) != 0 ||
        gt_effect_add_json(e, in->d->cfg->topics.usage,
                           json_string_value(json_object_get(usage, "event_id")), usage, &h,
                           in->has_traceparent ? 1 : 0) != 0) {
        gt_log(GT_LOG_ERROR, IN_CTX(in), "out of memory answering from the cache: left undone");
        if (e)
            gt_effect_abandon(e);
        intake_free(in);
        return;
    }
    gt_effect_seal(e);
}

/* The guard restored (a masked request) and moderated the cached output. It
 * is stored as the job's answer before it is published, as a rejection is:
 * a redelivered copy finds the job and is not answered again. */
static void on_cached_guarded(const char *err, void *arg)
{
    intake_t *in = arg;
    if (err) { /* never published unguarded */
        gt_dispatcher_dead_letter(in->d, in->d->consumer, in->msg, "intake.cache", "persist_failed",
                                  err, in->request_id);
        intake_free(in);
        return;
    }
    if (!(in->cached_usage = cached_usage(in, json_object_get(in->cached, "output")))) {
        gt_log(GT_LOG_ERROR, IN_CTX(in), "out of memory answering from the cache: left undone");
        intake_free(in);
        return;
    }
    store_answer(in, send_cached, 1);
}

/* The cache answered: a hit (output), a miss (NULL: the request runs), or a
 * failed lookup (err: never a miss unchecked). */
static void on_cache(const json_t *output, const char *err, void *arg)
{
    intake_t *in = arg;
    if (err) {
        gt_dispatcher_dead_letter(in->d, in->d->consumer, in->msg, "intake.cache", "persist_failed",
                                  err, in->request_id);
        intake_free(in);
        return;
    }
    if (!output) {
        in->cache_lead = 1;
        admit(in);
        return;
    }
    gt_log(GT_LOG_DEBUG, IN_CTX(in), "answered from the response cache");
    json_t *tr = json_pack("{s:s, s:O, s:s, s:s, s:[]}", "status", "succeeded", "output", output,
                           "model", served_model(in), "provider", "cache", "attempts");
    json_t *results[1] = {tr};
    in->cached = tr ? gt_graph_result(in->request_id,
                                      json_string_value(json_object_get(in->req, "tenant_id")), 0,
                                      results, 1, gt_clock_wall_ms())
                    : NULL;
    json_decref(tr);
    if (!in->cached) {
        gt_log(GT_LOG_ERROR, IN_CTX(in), "out of memory answering from the cache: left undone");
        intake_free(in);
        return;
    }
    json_object_set_new(in->cached, "cached", json_true());
    gt_guard_result(in->d, in->request_id, in->cached, on_cached_guarded, in);
}

/* "Same body": SHA-256 of the canonical JSON (compact, sorted keys) of the
 * request as received, so that key order and spacing do not matter. */
static int request_hash(const json_t *req, char hex[65])
{
    char *text = json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return -1;
    gt_sha256_hex(text, strlen(text), hex);
    free(text);
    return 0;
}

/* When tenants are configured, only they are served (unless
 * dispatcher.allow_unknown_tenants). */
static int tenant_unknown(const gt_config_t *cfg, const json_t *req)
{
    return gt_config_tenants_configured(cfg) && !cfg->allow_unknown_tenants &&
           !gt_config_tenant(cfg, json_string_value(json_object_get(req, "tenant_id")));
}

/* A copy of a request_id in intake now, with another body: which body came
 * first is the stored job's (the copy in intake may itself be a conflicting
 * re-send of it); with no job yet, the copy in intake is the first. */
typedef struct dup_check {
    gt_dispatcher_t *d;
    gt_msg_t *msg;
    char *request_id;
    char sha[65], active[65];
} dup_check_t;

static const char sql_stored_hash[] = "SELECT request_sha256 FROM jobs WHERE request_id = $1";

static void on_stored_hash(const PGresult *res, const char *err, void *arg)
{
    dup_check_t *c = arg;
    if (err) { /* permanent (transient ones were retried) or stopping: as on_pending */
        gt_dispatcher_dead_letter(c->d, c->d->consumer, c->msg, "intake.dedupe", "persist_failed",
                                  err, c->request_id);
    } else {
        const char *first = c->active;
        if (PQntuples(res) == 1) /* NULL: stored before migration 008, counts as identical */
            first = PQgetisnull(res, 0, 0) ? c->sha : PQgetvalue(res, 0, 0);
        if (strcmp(first, c->sha) == 0) {
            gt_stats_duplicate("identical");
            gt_consumer_done(c->d->consumer, c->msg);
        } else {
            gt_stats_duplicate("conflict");
            gt_log(GT_LOG_WARN, &(gt_log_ctx_t){.request_id = c->request_id},
                   "duplicate request_id with a different body: dead-lettered");
            gt_dispatcher_dead_letter(c->d, c->d->consumer, c->msg, "intake.dedupe",
                                      "duplicate_conflict",
                                      "a request with this request_id exists with a different "
                                      "body; the first body won",
                                      c->request_id);
        }
    }
    free(c->request_id);
    free(c);
}

static void in_flight_conflict(gt_dispatcher_t *d, gt_msg_t *msg, const char *request_id,
                               const char *sha, const char *active)
{
    dup_check_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->request_id = strdup(request_id))) {
        gt_log(GT_LOG_ERROR, &(gt_log_ctx_t){.request_id = request_id},
               "out of memory checking a duplicate: left undone");
        free(c);
        return;
    }
    c->d = d;
    c->msg = msg;
    snprintf(c->sha, sizeof(c->sha), "%s", sha);
    snprintf(c->active, sizeof(c->active), "%s", active);
    const char *params[] = {c->request_id};
    if (gt_pg_query(d->pg, sql_stored_hash, 1, params, on_stored_hash, c) != 0)
        on_stored_hash(NULL, "cannot send query", c);
}

/* Puts the request back in intake_active with its hash (set by the handler). */
static void mark_active(intake_t *in)
{
    json_object_set_new(in->d->intake_active, in->request_id, json_string(in->body_sha));
}

int gt_intake_open(gt_dispatcher_t *d)
{
    d->inserted = gt_pgbatch_new_rows(&d->pg, sql_insert, on_inserted);
    d->queued = gt_pgbatch_new(&d->pg, sql_queued, on_queued);
    return d->inserted && d->queued ? 0 : -1;
}

void gt_intake_handle(gt_dispatcher_t *d, gt_msg_t *msg)
{
    char err[512];
    const char *code = NULL;
    json_t *req = gt_message_parse(msg, d->request_schema, &code, err, sizeof(err));
    const char *request_id = NULL;
    if (!req) {
        /* Salvage the request_id, when there is one, so the entry can be found. */
        json_t *loose = msg->value ? gt_json_parse(msg->value, msg->len, 0, NULL) : NULL;
        request_id = json_string_value(json_object_get(loose, "request_id"));
        gt_dispatcher_dead_letter(d, d->consumer, msg,
                                  strcmp(code, "invalid_json") == 0 ? "intake.parse"
                                                                    : "intake.validate",
                                  code, err, request_id);
        json_decref(loose);
        return;
    }
    request_id = json_string_value(json_object_get(req, "request_id"));
    char sha[65];
    if (request_hash(req, sha) != 0) {
        gt_log(GT_LOG_ERROR, &(gt_log_ctx_t){.request_id = request_id},
               "out of memory hashing the request: left undone");
        json_decref(req);
        return;
    }
    json_t *in_flight = json_object_get(d->intake_active, request_id);
    if (in_flight) {
        const char *active = json_string_value(in_flight); /* NULL: no hash, as identical */
        d->requests_duplicate++;
        if (!active || strcmp(active, sha) == 0) { /* the same request is in intake now */
            gt_stats_duplicate("identical");
            gt_consumer_done(d->consumer, msg);
        } else {
            in_flight_conflict(d, msg, request_id, sha, active);
        }
        json_decref(req);
        return;
    }
    /* The hash rides in intake_active across the guard stage, which scrubs req. */
    json_object_set_new(d->intake_active, request_id, json_string(sha));
    if (tenant_unknown(d->cfg, req)) {
        intake_start(d, msg, req); /* answered there; not guarded (no moderation call) */
        return;
    }
    /* Guard stage first (limits, moderation, routing policy, scrubbing): what
     * it lets through is what gets persisted and published. */
    gt_guard_intake(d, msg, req, intake_start);
}

/* The guarded request: classify, build, admit, persist, publish. */
static void intake_start(gt_dispatcher_t *d, gt_msg_t *msg, json_t *req)
{
    char err[512];
    const char *code = NULL;
    const char *request_id = json_string_value(json_object_get(req, "request_id"));
    intake_t *in = calloc(1, sizeof(*in));
    in->d = d;
    in->msg = msg;
    in->req = req;
    in->request_id = strdup(request_id);
    const char *sha = json_string_value(json_object_get(d->intake_active, request_id));
    snprintf(in->body_sha, sizeof(in->body_sha), "%s", sha ? sha : "");
    json_object_del(d->intake_active, request_id); /* set again below once built */
    in->published = json_array();
    /* The request's trace goes on (a new one when the producer sent none or an
     * invalid one); tasks and the stored job carry the intake span. */
    gt_trace_ctx_t parent;
    int adopted = gt_msg_header(msg, "traceparent", in->traceparent, sizeof(in->traceparent)) &&
                  gt_trace_parse(in->traceparent, &parent) == 0;
    in->traceparent[0] = '\0';
    if (gt_span_start(&in->span, adopted ? &parent : NULL, "dispatcher.intake", GT_SPAN_CONSUMER) ==
        0) {
        in->span_open = 1;
        gt_trace_format(&in->span.ctx, in->traceparent);
    }
    in->has_traceparent = in->traceparent[0] != '\0';
    if (tenant_unknown(d->cfg, req)) { /* answered (the answer stored), not billed */
        char why[256];
        snprintf(why, sizeof(why), "tenant \"%.100s\" is not configured",
                 json_string_value(json_object_get(req, "tenant_id")));
        mark_active(in);
        reject(in, "unknown_tenant", why, send_rejection, 1);
        return;
    }
    if (build(in, req, &code, err, sizeof(err)) != 0) {
        if (strcmp(code, "too_large") == 0) {
            mark_active(in);
            answer_too_large(in, err);
            return;
        }
        gt_dispatcher_dead_letter(d, d->consumer, msg, "intake.classify", code, err, request_id);
        free(in->request_id);
        in->request_id = NULL; /* not in intake_active yet */
        intake_free(in);
        return;
    }
    mark_active(in);
    const char *task_model = json_string_value(json_object_get(in->graph.nodes[0].task, "model"));
    const gt_model_t *model = gt_router_logical(d->cfg, task_model); /* keyed on the logical one */
    if (!model)
        model = gt_config_model(d->cfg, task_model);
    int ck = gt_cache_key(d->cfg, req, model, in->cache_key, &in->cache_ttl_ms);
    if (ck <= 0)
        in->cache_key[0] = '\0';
    if (ck > 0 && d->cache) {
        if (gt_cache_lookup(d->cache, json_string_value(json_object_get(req, "tenant_id")),
                            in->cache_key, request_id, on_cache, in) != 0) {
            gt_log(GT_LOG_ERROR, IN_CTX(in), "out of memory looking up the cache: left undone");
            intake_free(in);
        }
        return; /* on_cache goes on */
    }
    admit(in);
}

static void admit_budget(intake_t *in);

/* Rate limit answer (ratelimit.h): go on to the budget; held (its bytes wait
 * in PostgreSQL and come back on the requests topic: this copy is done); or
 * answered rejected/rate_limited, stored as the job's answer like a budget
 * rejection. */
static void on_rate(int verdict, const char *reason, void *arg)
{
    intake_t *in = arg;
    if (verdict == GT_RATE_ADMITTED) {
        admit_budget(in);
        return;
    }
    if (verdict == GT_RATE_HELD) {
        gt_log(GT_LOG_DEBUG, IN_CTX(in), "over its rate limit: held until its bucket refills");
        intake_finish(in);
        return;
    }
    if (verdict == GT_RATE_FAILED) { /* not admitted unchecked: dead letter (none while stopping) */
        gt_dispatcher_dead_letter(in->d, in->d->consumer, in->msg, "intake.ratelimit",
                                  "persist_failed", reason, in->request_id);
        intake_free(in);
        return;
    }
    reject(in, "rate_limited", reason, send_rejection, 1);
}

/* Rate limits, then the budget, then persist. */
static void admit(intake_t *in)
{
    int n = in->graph.n_inference;
    int rc =
        gt_ratelimit_admit(in->d->ratelimit, in->req, served_model(in), n,
                           gt_ratelimit_estimate(in->d->cfg, in->req, n), in->msg, on_rate, in);
    if (rc == 0)
        return; /* on_rate goes on */
    if (rc < 0) {
        gt_log(GT_LOG_ERROR, IN_CTX(in), "cannot check the rate limit now: left undone");
        intake_free(in); /* never admitted unchecked; redelivered */
        return;
    }
    admit_budget(in);
}

/* Budget admission, then persist. */
static void admit_budget(intake_t *in)
{
    gt_dispatcher_t *d = in->d;
    const json_t *req = in->req;
    const char *request_id = in->request_id;
    int rc = gt_budget_admit(d, json_string_value(json_object_get(req, "tenant_id")), request_id,
                             in->graph.n_inference, on_admitted, in);
    if (rc == 0)
        return; /* on_admitted goes on */
    if (rc < 0) {
        gt_log(GT_LOG_ERROR, IN_CTX(in), "cannot check the budget now: left undone");
        intake_free(in); /* never admitted unchecked; redelivered */
        return;
    }
    persist(in);
}

/* The request's tasks as rows for sql_insert: in a lane with slots, a
 * task waits in PostgreSQL with its message. */
static json_t *task_rows(intake_t *in)
{
    json_t *rows = gt_graph_rows(&in->graph);
    for (int i = 0; i < in->graph.n_nodes && (size_t)i < json_array_size(rows); i++) {
        const gt_node_t *node = &in->graph.nodes[i];
        if (node->kind == GT_NODE_INFERENCE && !node->n_deps &&
            gt_release_lane_slots(in->d->cfg,
                                  json_string_value(json_object_get(node->task, "lane"))))
            json_object_set(json_array_get(rows, i), "message", node->task);
    }
    return rows;
}

/* Writes the job and its graph with other requests' (sql_insert);
 * on_inserted goes on. */
static void persist(intake_t *in)
{
    gt_dispatcher_t *d = in->d;
    const json_t *req = in->req;
    const gt_node_t *first = &in->graph.nodes[0];
    json_t *prio = json_object_get(req, "priority");
    json_t *tasks = task_rows(in);
    json_t *row =
        tasks ? json_pack("{s:s, s:O, s:O, s:O, s:O, s:I, s:O?, s:O?, s:i, s:b, s:O, s:s, s:i,"
                          " s:I, s:o, s:s?, s:s?, s:s?}",
                          "request_id", in->request_id, "tenant_id",
                          json_object_get(req, "tenant_id"), "kind", json_object_get(req, "kind"),
                          "model", json_object_get(first->task, "model"), "lane",
                          json_object_get(first->task, "lane"), "priority",
                          (json_int_t)(prio ? json_integer_value(prio) : 0), "deadline",
                          json_object_get(req, "deadline"), "reply_topic",
                          json_object_get(req, "reply_topic"), "task_count", in->graph.n_inference,
                          "batch", in->graph.batch, "request", req, "source_topic", in->msg->topic,
                          "source_partition", (int)in->msg->partition, "source_offset",
                          (json_int_t)in->msg->offset, "tasks", tasks, "traceparent",
                          in->has_traceparent ? in->traceparent : NULL, "request_sha256",
                          in->body_sha[0] ? in->body_sha : NULL, "cache_key",
                          in->cache_key[0] ? in->cache_key : NULL)
              : NULL;
    if (row && in->cache_key[0])
        json_object_set_new(row, "cache_ttl_ms", json_integer(in->cache_ttl_ms));
    if (gt_pgbatch_add(d->inserted, in, row ? json_pack("[o]", row) : NULL) != 0)
        on_inserted(in, NULL, -1, "out of memory");
}
