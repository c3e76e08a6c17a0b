/* coordinator.c - the dispatcher's coordinator: applies task results to the
 * graph in PostgreSQL and, when a job's last task ends, runs the gather step
 * and publishes the job's one result. A result message's offset is done only
 * once its task row is written (and, if it completed the job, the result is on
 * Kafka and the job is marked). Finishing a job takes a claim on it in
 * PostgreSQL (naming this process incarnation), and the final result is
 * stored under that claim before it is published; a sweep finishes the jobs
 * whose claimant died, publishing the stored body if there is one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
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
#include "trace.h"

struct gt_coordinator {
    gt_dispatcher_t *d;
    uv_timer_t sweep;
    int sweeping;  /* a sweep query is out */
    int finishing; /* jobs the sweep is finishing now */
};

typedef struct coord {
    gt_dispatcher_t *d;
    gt_msg_t *msg; /* NULL when the sweep finishes the job */
    json_t *tr;    /* the task result; NULL with the sweep */
    char *request_id;
    char *tenant_id;
    char *reply_topic; /* the result also goes there; NULL: only cfg->topics.results */
    int batch;
    int64_t created_ms;
    char *status;      /* final job status */
    json_t *result;    /* final result */
    char *result_text; /* the same as stored, compact: the bytes published */
    size_t result_len;
    json_t *single; /* the job's result should c->tr be its only task (coord_single), or NULL */
    char traceparent[128]; /* the job's (stored at intake), else the task result's */
    gt_span_t span;        /* coordinator.result, while the result is published */
    int span_open;
    int64_t published_since; /* >= 0: a dead holder stored the result then (epoch ms) and
                                may have published it: look before publishing */
    json_t *cache_output;    /* the output before the guard, for the response cache; or NULL */
    /* Set when the task result was refused (see coord_refuse): the task is
     * failed in its stead and the original goes to the DLQ as the last step. */
    const char *refused_stage;
    char *refused_code, *refused_why;
    json_t *answer_usage; /* the usage event stored with intake's answer (a cache hit), or NULL */
    int apply_only;       /* sql_apply failed for good with its claim: applied alone, then claimed
                             by sql_claim (each step's own error then says which one failed) */
    int sent_result;      /* send_result published the result (not only answer_usage) */
} coord_t;

/* How far before the stored time a dead holder's result is looked for on
 * Kafka: the message's CreateTime comes from the dispatcher's clock, the
 * stored time from PostgreSQL's. */
#define COORD_CLOCK_SKEW_MS 60000
/* Per request to the cluster while looking. */
#define COORD_LOOKUP_TIMEOUT_MS 5000

/* Log context of a task result (lines about it carry its ids and trace). */
#define C_CTX(c)                                                                                   \
    (&(gt_log_ctx_t){.request_id = (c)->request_id,                                                \
                     .tenant_id = (c)->tenant_id,                                                  \
                     .task_id = json_string_value(json_object_get((c)->tr, "task_id")),            \
                     .trace_id = (c)->traceparent})

/* Applies the task result (once: terminal rows are never rewritten), reads
 * the job with how many of its other inference tasks are still open and, when
 * none is and $11 allows it, claims the job in the same statement (as
 * sql_claim does: one round trip and one transaction less per job). The
 * CTE's updates are invisible to the same statement's reads, hence the
 * task_id <> $1, and this task's result taken from $3 when it was applied
 * here. Columns: 0 job status, 1-4 tenant_id, batch, reply_topic, created ms,
 * With $11 false it only applies and reads (no claim, no guard row read).
 * 5 other open tasks, 6 the task exists, 7 applied here, 8 traceparent,
 * 9 claimed (1/0), 10 result stored by an earlier holder, 11 when (epoch
 * ms), 12 the stored answer's usage event, 13 the inference tasks' results
 * in order (a JSON array, when claimed), 14 the holder when another holds
 * the claim, 15 the job has a guard row, 16 the result stored by this
 * statement. A job of one inference task (not a batch) without a guard row
 * whose task result was applied here has its result ($15: gt_graph_result of
 * this task result, with the job's tenant_id and total_ms filled in here)
 * stored with the claim, as sql_store would store it: one statement for the
 * whole job but the final mark. Safe to run twice: a re-run applies nothing,
 * stores nothing (no task result applied, or a result stored already) and
 * re-takes this --id's own claim. */
static const char sql_apply[] =
    "WITH upd AS ("
    "  UPDATE tasks SET status = $2, result = $3::jsonb, output = $3::jsonb -> 'output',"
    "         error_code = $4, error_message = $5, attempts = $6, provider = $7, pool = $8,"
    "         worker_id = $9, completed_at = now()"
    "  WHERE task_id = $1 AND request_id = $10 AND status IN ('pending', 'queued', 'running')"
    "  RETURNING 1),"
    " open AS ("
    "  SELECT count(*) AS n FROM tasks t WHERE t.request_id = $10"
    "   AND t.kind = 'inference' AND t.status IN ('pending', 'queued', 'running')"
    "   AND t.task_id <> $1),"
    " spec AS ("
    "  SELECT $15::jsonb IS NOT NULL AND (SELECT count(*) FROM upd) = 1"
    "         AND NOT EXISTS (SELECT 1 FROM job_guardrails g WHERE g.request_id = $10) AS ok),"
    " claim AS ("
    "  UPDATE jobs SET status = 'completing', claimed_by = $12, claimed_at = now(),"
    "         claimed_incarnation = $14,"
    "         result = CASE WHEN result IS NULL AND NOT batch AND task_count = 1"
    "                        AND (SELECT ok FROM spec)"
    "           THEN $15::jsonb || jsonb_build_object('tenant_id', tenant_id, 'timings',"
    "                  coalesce($15::jsonb -> 'timings', '{}'::jsonb) || jsonb_build_object("
    "                    'total_ms', ((extract(epoch FROM now()) - extract(epoch FROM created_at))"
    "                                 * 1000)::bigint))"
    "           ELSE result END,"
    "         result_stored_at = CASE WHEN result IS NULL AND NOT batch AND task_count = 1"
    "                                  AND (SELECT ok FROM spec) THEN now()"
    "           ELSE result_stored_at END"
    "  WHERE request_id = $10 AND $11::boolean AND (SELECT n FROM open) = 0"
    "   AND EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = $1 AND t.request_id = $10)"
    "   AND (status = 'running' OR (status = 'completing' AND"
    "        (claimed_at IS NULL OR claimed_by = $12"
    "         OR claimed_at < now() - $13::bigint * interval '1 millisecond')))"
    "  RETURNING result, coalesce(result_stored_at, created_at) AS stored_at, answer_usage)"
    " SELECT j.status, j.tenant_id, j.batch, j.reply_topic,"
    "        (extract(epoch FROM j.created_at) * 1000)::bigint, (SELECT n FROM open),"
    "        EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = $1 AND t.request_id = $10),"
    "        (SELECT count(*) FROM upd), j.traceparent,"
    "        (SELECT count(*) FROM claim), CASE WHEN j.result IS NOT NULL THEN c.result END,"
    "        (extract(epoch FROM c.stored_at) * 1000)::bigint, c.answer_usage,"
    "        CASE WHEN c.stored_at IS NOT NULL AND c.result IS NULL THEN"
    "          (SELECT json_agg(CASE WHEN t.task_id = $1 AND (SELECT count(*) FROM upd) = 1"
    "                           THEN $3::jsonb ELSE t.result END ORDER BY t.idx)"
    "           FROM tasks t WHERE t.request_id = $10 AND t.kind = 'inference') END,"
    "        CASE WHEN c.stored_at IS NULL AND j.status = 'completing'"
    "          THEN coalesce(j.claimed_by, '') END,"
    "        $11::boolean AND EXISTS (SELECT 1 FROM job_guardrails g WHERE g.request_id = $10),"
    "        CASE WHEN j.result IS NULL THEN c.result END"
    " FROM jobs j LEFT JOIN claim c ON true WHERE j.request_id = $10";

/* sql_apply for many task results ($1: rows as coord_apply builds them,
 * pgbatch.h), in the common case only: a one-task job (not a batch) without
 * a guard row, the result naming its inference task, with no other result of
 * the job in the statement (counted by a window: a count per row was
 * quadratic, 1 ms of 7 at 61 results). Those are applied, claimed and their result
 * stored exactly as sql_apply would; one row per task result: i, handled
 * (false: nothing was done for it, it goes to sql_apply alone), then
 * sql_apply's columns. Tasks are locked in task_id order first, as
 * sql_queued locks them, so that two statements never deadlock; the UPDATE
 * then names the locked rows only (open when locked, and held: see the
 * gate's sql_claim in workers/gate.c). Safe to run twice as sql_apply is. */
static const char sql_apply_many[] =
    "WITH u AS (SELECT *, count(*) OVER (PARTITION BY request_id) AS same"
    "  FROM jsonb_to_recordset($1::jsonb) AS u(i int, task_id text,"
    "       status text, result jsonb, error_code text, error_message text, attempts int,"
    "       provider text, pool text, worker_id text, request_id text, single jsonb,"
    "       by text, inc text, tmo bigint)),"
    " q AS ("
    "  SELECT u.* FROM u JOIN jobs j ON j.request_id = u.request_id"
    "  WHERE j.task_count = 1 AND NOT j.batch"
    "   AND EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = u.task_id"
    "               AND t.request_id = u.request_id AND t.kind = 'inference')"
    "   AND NOT EXISTS (SELECT 1 FROM job_guardrails g WHERE g.request_id = u.request_id)"
    "   AND u.same = 1),"
    " lk AS ("
    "  SELECT t.task_id FROM tasks t JOIN q ON q.task_id = t.task_id AND q.request_id = "
    "t.request_id"
    "  WHERE t.status IN ('pending', 'queued', 'running') ORDER BY t.task_id FOR UPDATE OF t),"
    " upd AS ("
    "  UPDATE tasks t SET status = q.status, result = q.result, output = q.result -> 'output',"
    "         error_code = q.error_code, error_message = q.error_message, attempts = q.attempts,"
    "         provider = q.provider, pool = q.pool, worker_id = q.worker_id, completed_at = now()"
    "  FROM q WHERE t.task_id = ANY(ARRAY(SELECT task_id FROM lk))"
    "   AND t.task_id = q.task_id AND t.request_id = q.request_id"
    "  RETURNING t.request_id),"
    " claim AS ("
    "  UPDATE jobs j SET status = 'completing', claimed_by = q.by, claimed_at = now(),"
    "         claimed_incarnation = q.inc,"
    "         result = CASE WHEN j.result IS NULL"
    "                        AND EXISTS (SELECT 1 FROM upd WHERE upd.request_id = j.request_id)"
    "           THEN q.single || jsonb_build_object('tenant_id', j.tenant_id, 'timings',"
    "                  coalesce(q.single -> 'timings', '{}'::jsonb) || jsonb_build_object("
    "                    'total_ms', ((extract(epoch FROM now()) - extract(epoch FROM "
    "j.created_at))"
    "                                 * 1000)::bigint))"
    "           ELSE j.result END,"
    "         result_stored_at = CASE WHEN j.result IS NULL"
    "                        AND EXISTS (SELECT 1 FROM upd WHERE upd.request_id = j.request_id)"
    "           THEN now() ELSE j.result_stored_at END"
    "  FROM q WHERE j.request_id = q.request_id"
    "   AND (j.status = 'running' OR (j.status = 'completing' AND"
    "        (j.claimed_at IS NULL OR j.claimed_by = q.by"
    "         OR j.claimed_at < now() - q.tmo * interval '1 millisecond')))"
    "  RETURNING j.request_id, j.result, coalesce(j.result_stored_at, j.created_at) AS stored_at,"
    "            j.answer_usage)"
    " SELECT u.i, q.i IS NOT NULL, j.status, j.tenant_id, j.batch, j.reply_topic,"
    "        (extract(epoch FROM j.created_at) * 1000)::bigint, 0, true,"
    "        (SELECT count(*) FROM upd WHERE upd.request_id = u.request_id), j.traceparent,"
    "        (c.request_id IS NOT NULL)::int, CASE WHEN j.result IS NOT NULL THEN c.result END,"
    "        (extract(epoch FROM c.stored_at) * 1000)::bigint, c.answer_usage,"
    "        CASE WHEN c.stored_at IS NOT NULL AND c.result IS NULL THEN"
    "          (SELECT json_agg(CASE WHEN t.task_id = u.task_id"
    "                            AND EXISTS (SELECT 1 FROM upd WHERE upd.request_id = u.request_id)"
    "                           THEN u.result ELSE t.result END ORDER BY t.idx)"
    "           FROM tasks t WHERE t.request_id = u.request_id AND t.kind = 'inference') END,"
    "        CASE WHEN c.stored_at IS NULL AND j.status = 'completing'"
    "          THEN coalesce(j.claimed_by, '') END,"
    "        false, CASE WHEN j.result IS NULL THEN c.result END"
    " FROM u LEFT JOIN q ON q.i = u.i LEFT JOIN jobs j ON j.request_id = q.request_id"
    "  LEFT JOIN claim c ON c.request_id = q.request_id ORDER BY u.i";

/* Claims the job for this process incarnation ($2 the --id, $4 the
 * incarnation) unless another holds a claim younger than $3 ms. A claim of
 * the same --id is always taken: it is this incarnation's own (a re-run of
 * this statement after a lost connection; d->finalizing keeps two finishes of
 * one job apart within a process) or a dead incarnation's (a restart under
 * the same id), so --id must be unique among live dispatchers. Claimed: the
 * job's inference tasks in order, each with the result already stored by an
 * earlier holder (NULL if none) and when it was stored (epoch ms); a job with
 * no tasks (an answer stored by the intake) gives one row with a NULL idx,
 * and the answer's usage event last (NULL if none). Held by another: one row
 * (NULL, NULL, holder, NULL, NULL, NULL). Finished (or being claimed right
 * now): none. */
static const char sql_claim[] =
    "WITH claim AS ("
    "  UPDATE jobs SET status = 'completing', claimed_by = $2, claimed_at = now(),"
    "         claimed_incarnation = $4"
    "  WHERE request_id = $1 AND (status = 'running' OR (status = 'completing' AND"
    "        (claimed_at IS NULL OR claimed_by = $2"
    "         OR claimed_at < now() - $3::bigint * interval '1 millisecond')))"
    "  RETURNING request_id, result, coalesce(result_stored_at, created_at) AS stored_at,"
    "            answer_usage)"
    " SELECT t.idx, t.result, NULL, c.result,"
    "        (extract(epoch FROM c.stored_at) * 1000)::bigint, c.answer_usage FROM claim c"
    "  LEFT JOIN tasks t ON t.request_id = c.request_id AND t.kind = 'inference'"
    " UNION ALL"
    " SELECT NULL, NULL, coalesce(j.claimed_by, ''), NULL, NULL, NULL FROM jobs j"
    "  WHERE j.request_id = $1 AND j.status = 'completing' AND NOT EXISTS (SELECT 1 FROM claim)"
    " ORDER BY 1";

/* Jobs whose claimant went silent (it died between claiming and marking the
 * job done): the sweep finishes them, as no message may ever come for them.
 * A claim of this --id ($2) by another incarnation ($3) is a dead self's:
 * taken at once, not after the timeout. */
static const char sql_stale[] =
    "SELECT request_id, tenant_id, batch, reply_topic,"
    "       (extract(epoch FROM created_at) * 1000)::bigint, traceparent"
    " FROM jobs WHERE status = 'completing'"
    "  AND (claimed_at IS NULL OR claimed_at < now() - $1::bigint * interval '1 millisecond'"
    "       OR (claimed_by = $2 AND claimed_incarnation IS DISTINCT FROM $3))"
    " ORDER BY claimed_at NULLS FIRST LIMIT 64";

/* Stores the final result while the job is still 'completing' and this
 * incarnation holds the claim, before it is published: whoever publishes
 * later publishes these bytes (a result stored earlier wins). Returns the
 * stored result; no row when the claim was taken over meanwhile. By
 * jobs_pkey, as sql_complete. */
static const char sql_store[] =
    "UPDATE jobs SET result = coalesce(result, $2::jsonb),"
    "       result_stored_at = CASE WHEN result IS NULL THEN now() ELSE result_stored_at END"
    " WHERE request_id = $1 AND status COLLATE \"C\" = 'completing' AND claimed_by = $3"
    "  AND claimed_incarnation = $4"
    " RETURNING result";

/* Marks published jobs done ($1: rows of request_id r and final status s,
 * pgbatch.h): their results are the ones stored (every result is published
 * from the stored body), so they are not written again. Only 'completing'
 * jobs: safe to run twice. COLLATE "C" (the same equality, bytewise) keeps
 * the partial index jobs_completing out of the plan: a generic plan that
 * scanned it with request_id as a filter read every entry, dead ones
 * included, ~10,000 a call in bench/closedloop (2.6 ms for 17 jobs); by
 * jobs_pkey, a lookup per job. */
static const char sql_complete[] =
    "WITH u AS (SELECT * FROM json_to_recordset($1::json) AS u(r text, s text)),"
    " g AS ("
    "  UPDATE tasks SET status = 'succeeded', completed_at = now()"
    "  WHERE request_id = ANY(ARRAY(SELECT r FROM u)) AND kind = 'gather'"
    "   AND status = 'pending')"
    " UPDATE jobs j SET status = u.s, completed_at = now() FROM u"
    " WHERE j.request_id = ANY(ARRAY(SELECT r FROM u)) AND j.request_id = u.r"
    "  AND j.status COLLATE \"C\" = 'completing'";

static void coord_free(coord_t *c)
{
    if (c->span_open) {
        c->span_open = 0;
        gt_span_end(&c->span, c->status ? NULL : "result not published", "{s:s, s:s, s:s}",
                    "gantry.request_id", c->request_id, "gantry.tenant_id",
                    c->tenant_id ? c->tenant_id : "", "gantry.status", c->status ? c->status : "");
    }
    if (!c->msg && c->d->coordinator)
        c->d->coordinator->finishing--;
    json_decref(c->tr);
    json_decref(c->result);
    free(c->result_text);
    json_decref(c->single);
    json_decref(c->cache_output);
    json_decref(c->answer_usage);
    free(c->request_id);
    free(c->tenant_id);
    free(c->reply_topic);
    free(c->status);
    free(c->refused_code);
    free(c->refused_why);
    free(c);
}

/* The message is done: its effects are durable. A refused one is done once its
 * DLQ entry is (the failed task it stood for is already written). */
static void coord_finish(coord_t *c)
{
    if (c->msg && c->refused_code)
        gt_dispatcher_dead_letter(c->d, c->d->consumer, c->msg, c->refused_stage, c->refused_code,
                                  c->refused_why, c->request_id);
    else if (c->msg)
        gt_consumer_done(c->d->consumer, c->msg);
    coord_free(c);
}

static void on_completed(void *arg, const char *err)
{
    coord_t *c = arg;
    /* The result is durable: a cacheable one is stored, identical requests go on. */
    gt_cache_job_done(c->d->cache, c->request_id, c->tenant_id, c->result, c->cache_output);
    if (err) /* the result is on Kafka; a job left 'completing' is finished again on redelivery */
        gt_log(GT_LOG_ERROR, C_CTX(c), "marking job complete failed: %s", err);
    else if (json_object_get(c->result, "guardrails"))
        gt_guard_forget(c->d, c->request_id); /* the mask is no longer needed */
    json_object_del(c->d->finalizing, c->request_id);
    coord_finish(c);
}

static void on_stored(const PGresult *res, const char *err, void *arg);

/* The result is on gantry.results (and the reply topic): mark the job. */
static void mark_complete(coord_t *c)
{
    json_t *rows = json_pack("[{s:s, s:s}]", "r", c->request_id, "s", c->status);
    if (gt_pgbatch_add(c->d->completed, c, rows) != 0) /* it took rows either way */
        on_completed(c, "out of memory");
}

static void on_result_delivered(void *arg)
{
    coord_t *c = arg;
    if (c->sent_result) {
        c->d->results_published++;
        gt_stats_result(c->status);
    }
    mark_complete(c);
}

/* err 0: stopping, the result is published on redelivery (or by the sweep).
 * Else it cannot be produced at all (its reply topic unknown, too large). */
static void on_result_failed(const char *topic, int err, const char *reason, void *arg)
{
    coord_t *c = arg;
    json_object_del(c->d->finalizing, c->request_id);
    if (err && c->msg) {
        char why[512];
        snprintf(why, sizeof(why), "the result cannot be produced to %s: %s", topic, reason);
        gt_dispatcher_dead_letter(c->d, c->d->consumer, c->msg, "coordinator.result",
                                  "publish_failed", why, c->request_id);
    } else if (err) {
        gt_log(GT_LOG_ERROR, C_CTX(c), "the result cannot be produced to %s: %s", topic, reason);
    }
    coord_free(c); /* the offset is the dead letter's, or stays undone */
}

/* Where send_result publishes the result: gantry.results and the reply topic,
 * the reply topic alone (a dead holder published the rest), or nowhere (it
 * published both). A stored answer's usage event goes along every time: a
 * holder may die between the two, and the ledger keeps one per event_id. */
enum { SEND_ALL, SEND_REPLY, SEND_NONE };

static void send_result(coord_t *c, int where)
{
    if (where == SEND_NONE && !c->answer_usage) {
        mark_complete(c);
        return;
    }
    char tp[GT_TRACEPARENT_LEN + 1];
    gt_header_t h = {"traceparent", tp};
    gt_trace_ctx_t parent;
    if (!c->span_open && gt_trace_parse(c->traceparent, &parent) == 0)
        c->span_open =
            gt_span_start(&c->span, &parent, "coordinator.result", GT_SPAN_PRODUCER) == 0;
    int has_tp = c->span_open;
    if (has_tp)
        gt_trace_format(&c->span.ctx, tp);
    gt_effect_t *e = gt_effect_new(c->d->effects, on_result_delivered, on_result_failed, c);
    size_t nh = has_tp ? 1 : 0;
    int rc = e ? 0 : -1;
    if (rc == 0 && where == SEND_ALL)
        rc = gt_result_add_text(e, c->d->cfg, c->reply_topic, c->request_id, c->result_text,
                                c->result_len, &h, nh);
    else if (rc == 0 && where == SEND_REPLY)
        rc = gt_effect_add(e, c->reply_topic, c->request_id, strlen(c->request_id), c->result_text,
                           c->result_len, &h, nh);
    if (rc == 0 && c->answer_usage)
        rc = gt_effect_add_json(e, c->d->cfg->topics.usage,
                                json_string_value(json_object_get(c->answer_usage, "event_id")),
                                c->answer_usage, &h, nh);
    if (rc != 0) {
        gt_log(GT_LOG_ERROR, C_CTX(c),
               "out of memory queueing the result; it is published on redelivery");
        if (e)
            gt_effect_abandon(e);
        json_object_del(c->d->finalizing, c->request_id);
        coord_free(c); /* offset stays undone */
        return;
    }
    c->sent_result = where != SEND_NONE;
    gt_effect_seal(e);
}

typedef struct lookup {
    uv_work_t req;
    coord_t *c;
    int on_results, on_reply; /* found there */
    int rc;
    char err[256];
} lookup_t;

/* Off the loop: is the result (keyed by request_id) on each of its topics? */
static void lookup_work(uv_work_t *w)
{
    lookup_t *l = w->data;
    coord_t *c = l->c;
    const gt_config_t *cfg = c->d->cfg;
    const char *keys[] = {c->request_id};
    int64_t since = c->published_since - COORD_CLOCK_SKEW_MS;
    l->on_reply = !gt_result_reply_topic(cfg, c->reply_topic);
    l->rc = gt_kafka_find_keys(cfg, cfg->topics.results, keys, 1, since, &l->on_results,
                               COORD_LOOKUP_TIMEOUT_MS, l->err, sizeof(l->err));
    if (l->rc == 0 && !l->on_reply)
        l->rc = gt_kafka_find_keys(cfg, c->reply_topic, keys, 1, since, &l->on_reply,
                                   COORD_LOOKUP_TIMEOUT_MS, l->err, sizeof(l->err));
}

/* A holder that died after Kafka acknowledged its result and before it
 * marked the job leaves the result published and the job 'completing':
 * publishing what is already there would give the request two results. */
static void lookup_done(uv_work_t *w, int status)
{
    lookup_t *l = w->data;
    coord_t *c = l->c;
    int rc = status ? status : l->rc, on_results = l->on_results, on_reply = l->on_reply;
    if (rc != 0) {
        /* Never a guess: the claim is ours now, and the sweep decides again
         * once it is stale. A task result's offset is done (the sweep, not
         * a redelivery, finishes the job). */
        gt_log(GT_LOG_WARN, C_CTX(c),
               "cannot tell whether the job's previous claim published its result (%s); "
               "the claim sweep looks again in %lld ms",
               status ? uv_strerror(status) : l->err, (long long)c->d->cfg->claim_timeout_ms);
        free(l);
        json_object_del(c->d->finalizing, c->request_id);
        coord_finish(c);
        return;
    }
    free(l);
    if (on_results && on_reply) {
        gt_log(GT_LOG_INFO, C_CTX(c),
               "the job's previous claim published its result before it died; marking the job, "
               "not publishing it again");
        send_result(c, SEND_NONE);
        return;
    }
    if (on_results)
        gt_log(GT_LOG_INFO, C_CTX(c), "the result is on %s already; publishing it to %s only",
               c->d->cfg->topics.results, c->reply_topic);
    send_result(c, on_results ? SEND_REPLY : SEND_ALL);
}

/* Publishes the stored result body (stored: its jsonb text, compacted), the
 * same bytes whichever incarnation publishes it; when a dead holder stored
 * it, only where that holder had not published it. tree: the value stored,
 * when this process built it (as coord_single did), else NULL: read from
 * stored. Only its status and fields are read (the cache, the guard): the
 * bytes published are stored's, never a serialisation of tree. */
static void publish_stored(coord_t *c, const char *stored, json_t *tree)
{
    json_decref(c->result);
    c->result = tree ? json_incref(tree) : json_loads(stored, 0, NULL);
    free(c->result_text);
    if ((c->result_text = strdup(stored)))
        c->result_len = gt_json_compact(c->result_text);
    const char *st = json_string_value(json_object_get(c->result, "status"));
    if (!c->result || !st || !c->result_text) {
        gt_log(GT_LOG_ERROR, C_CTX(c), "the stored result is unreadable; left to the sweep");
        json_object_del(c->d->finalizing, c->request_id);
        coord_free(c); /* offset stays undone */
        return;
    }
    c->status = strdup(st);
    gt_log(GT_LOG_INFO, C_CTX(c), "job %s", c->status);
    if (c->published_since < 0) {
        send_result(c, SEND_ALL);
        return;
    }
    lookup_t *l = calloc(1, sizeof(*l));
    if (!l) {
        gt_log(GT_LOG_ERROR, C_CTX(c), "out of memory; the claim sweep finishes the job");
        json_object_del(c->d->finalizing, c->request_id);
        coord_finish(c);
        return;
    }
    l->c = c;
    l->req.data = l;
    int rc = uv_queue_work(c->d->loop, &l->req, lookup_work, lookup_done);
    if (rc != 0)
        lookup_done(&l->req, rc);
}

static void on_stored(const PGresult *res, const char *err, void *arg)
{
    coord_t *c = arg;
    if (err) {
        /* Not published unstored: a SIGKILL after it could make a second,
         * different result. Dead-lettered (permanent) or left undone. */
        json_object_del(c->d->finalizing, c->request_id);
        if (c->msg)
            gt_dispatcher_dead_letter(c->d, c->d->consumer, c->msg, "coordinator.store",
                                      "persist_failed", err, c->request_id);
        coord_free(c);
        return;
    }
    if (PQntuples(res) != 1) {
        gt_log(GT_LOG_INFO, C_CTX(c), "the job's claim was taken over: its holder publishes");
        json_object_del(c->d->finalizing, c->request_id);
        coord_finish(c);
        return;
    }
    publish_stored(c, PQgetvalue(res, 0, 0), NULL);
}

/* The guard stage restored or blocked the output and recorded its decisions. */
static void on_guarded(const char *err, void *arg)
{
    coord_t *c = arg;
    if (err) {
        /* Never published unguarded (unmoderated, masked): the job stays
         * claimed; the task result is dead-lettered, or left undone while
         * stopping; the sweep finishes the job once the claim is stale. */
        json_object_del(c->d->finalizing, c->request_id);
        if (c->msg)
            gt_dispatcher_dead_letter(c->d, c->d->consumer, c->msg, "coordinator.guard",
                                      "persist_failed", err, c->request_id);
        coord_free(c);
        return;
    }
    char *text = json_dumps(c->result, JSON_COMPACT);
    const char *params[] = {c->request_id, text, c->d->id, c->d->incarnation};
    if (!text || gt_pg_query(c->d->pg_coord, sql_store, 4, params, on_stored, c) != 0)
        on_stored(NULL, "cannot send query", c);
    free(text);
}

/* A dead holder stored the result (and may have published it): the same
 * body again, never a second, different one. */
static void coord_publish_earlier(coord_t *c, const char *stored, const char *stored_ms,
                                  const char *usage)
{
    gt_log(GT_LOG_WARN, C_CTX(c), "publishing the result stored by the job's previous claim");
    c->published_since = atoll(stored_ms);
    if (usage && !(c->answer_usage = json_loads(usage, 0, NULL))) {
        gt_log(GT_LOG_ERROR, C_CTX(c), "the stored usage event is unreadable; left to the sweep");
        json_object_del(c->d->finalizing, c->request_id);
        coord_free(c); /* offset stays undone */
        return;
    }
    publish_stored(c, stored, NULL);
}

/* The job is claimed: gathers its tasks' results (NULL: none stored) into the
 * job's result, then the guard's result stage (guarded: the job has a guard
 * row, or it is not known) and on_guarded. */
static void coord_gather(coord_t *c, json_t *const *results, int n, int guarded)
{
    c->result = gt_graph_result(c->request_id, c->tenant_id, c->batch, results, n, c->created_ms);
    const gt_model_t *logical =
        gt_router_logical(c->d->cfg, json_string_value(json_object_get(c->result, "model")));
    if (logical) { /* served by a deployment: the result names both */
        json_object_set(c->result, "deployment", json_object_get(c->result, "model"));
        json_object_set_new(c->result, "model", json_string(logical->name));
    }
    /* The cache keeps the output as the provider returned it (before a PII restore). */
    if (c->d->cache && !c->batch && gt_cache_tenant_on(c->d->cfg, c->tenant_id))
        c->cache_output = json_deep_copy(json_object_get(c->result, "output"));
    if (guarded)
        gt_guard_result(c->d, c->request_id, c->result, on_guarded, c);
    else
        on_guarded(NULL, c); /* no guard row: the result is untouched (guard.h) */
}

static void on_claimed(const PGresult *res, const char *err, void *arg)
{
    coord_t *c = arg;
    if (err) {
        /* Not "nothing to do": the job is neither finished nor claimed by
         * another. Transient failures were retried by gt_pg; a permanent one
         * dead-letters the task result (nothing while stopping: it stays
         * undone), a sweep's claim is tried again on the next sweep. */
        gt_log(GT_LOG_ERROR, C_CTX(c), "claiming the job failed: %s", err);
        json_object_del(c->d->finalizing, c->request_id);
        if (c->msg)
            gt_dispatcher_dead_letter(c->d, c->d->consumer, c->msg, "coordinator.claim",
                                      "persist_failed", err, c->request_id);
        coord_free(c);
        return;
    }
    int n = PQntuples(res);
    if (n == 1 && !PQgetisnull(res, 0, 2)) {
        /* Its holder publishes the result (this message is a duplicate, or a
         * redelivery after its partition moved); if that holder died, the
         * sweep takes the claim once it is stale. */
        gt_log(GT_LOG_INFO, C_CTX(c), "job is being finished by %s, which holds its claim",
               PQgetvalue(res, 0, 2));
        n = 0;
    }
    if (n == 0) { /* finished meanwhile, or claimed by another */
        json_object_del(c->d->finalizing, c->request_id);
        coord_finish(c);
        return;
    }
    if (!PQgetisnull(res, 0, 3)) {
        coord_publish_earlier(c, PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4),
                              PQgetisnull(res, 0, 5) ? NULL : PQgetvalue(res, 0, 5));
        return;
    }
    json_t **results = calloc((size_t)n, sizeof(json_t *));
    for (int i = 0; results && i < n; i++)
        results[i] = PQgetisnull(res, i, 1) ? NULL : json_loads(PQgetvalue(res, i, 1), 0, NULL);
    coord_gather(c, results, results ? n : 0, 1);
    for (int i = 0; results && i < n; i++)
        json_decref(results[i]);
    free(results);
}

static void coord_claim(coord_t *c)
{
    gt_dispatcher_t *d = c->d;
    char timeout[24];
    snprintf(timeout, sizeof(timeout), "%lld", (long long)d->cfg->claim_timeout_ms);
    const char *params[] = {c->request_id, d->id, timeout, d->incarnation};
    json_object_set_new(d->finalizing, c->request_id, json_true());
    if (gt_pg_query(d->pg_coord, sql_claim, 4, params, on_claimed, c) != 0)
        on_claimed(NULL, "cannot send query", c);
}

/* The job's columns as sql_apply and sql_stale both return them from col on:
 * tenant_id, batch, reply_topic, created_ms. */
static void coord_set_job(coord_t *c, const PGresult *res, int row, int col, int tp_col)
{
    c->tenant_id = strdup(PQgetvalue(res, row, col));
    c->batch = strcmp(PQgetvalue(res, row, col + 1), "t") == 0;
    c->reply_topic = PQgetisnull(res, row, col + 2) ? NULL : strdup(PQgetvalue(res, row, col + 2));
    c->created_ms = atoll(PQgetvalue(res, row, col + 3));
    if (!PQgetisnull(res, row, tp_col))
        snprintf(c->traceparent, sizeof(c->traceparent), "%s", PQgetvalue(res, row, tp_col));
}

static void coord_apply(coord_t *c);
static int coord_refuse(coord_t *c, const char *stage, const char *code, const char *why);

/* sql_apply's answer, its columns from o in row (-1: none) of res. */
static void applied(coord_t *c, const PGresult *res, int row, int o, const char *err)
{
    gt_dispatcher_t *d = c->d;
    /* PostgreSQL refused the result for good (a \u0000 that jsonb cannot
     * hold, say): its task still ends, failed with the reason. */
    if (err && !c->apply_only && !c->refused_code) {
        c->apply_only = 1; /* the claim or the guard row read may be what failed */
        coord_apply(c);
        return;
    }
    if (err && !c->refused_code && coord_refuse(c, "coordinator.apply", "persist_failed", err) == 0)
        return;
    if (err || row < 0 || strcmp(PQgetvalue(res, row, o + 6), "t") != 0) {
        gt_dispatcher_dead_letter(d, d->consumer, c->msg,
                                  c->refused_stage ? c->refused_stage : "coordinator.apply",
                                  c->refused_code ? c->refused_code
                                  : err           ? "persist_failed"
                                                  : "unknown_task",
                                  c->refused_why ? c->refused_why
                                  : err          ? err
                                                 : "no such task in this request",
                                  c->request_id);
        coord_free(c);
        return;
    }
    gt_release_kick(d->release, NULL); /* a slot may be free */
    coord_set_job(c, res, row, o + 1, o + 8);
    if (c->apply_only) { /* as before the claim was merged: the claim is its own step */
        const char *job_status = PQgetvalue(res, row, o + 0);
        if (atol(PQgetvalue(res, row, o + 5)) == 0 &&
            !json_object_get(d->finalizing, c->request_id) &&
            (strcmp(job_status, "running") == 0 || strcmp(job_status, "completing") == 0))
            coord_claim(c);
        else
            coord_finish(c);
        return;
    }
    if (strcmp(PQgetvalue(res, row, o + 9), "1") != 0) {
        /* Tasks still open, finished already, or another holds the claim
         * (a duplicate task result, or one redelivered while its old owner
         * publishes): that holder publishes; if it died, the sweep takes
         * the claim once it is stale. */
        if (atol(PQgetvalue(res, row, o + 5)) == 0 && !PQgetisnull(res, row, o + 14))
            gt_log(GT_LOG_INFO, C_CTX(c), "job is being finished by %s, which holds its claim",
                   PQgetvalue(res, row, o + 14));
        coord_finish(c);
        return;
    }
    /* Claimed, but a finish of this job started here since the statement
     * was sent (a cancel's or the sweep's claim, sent after it on this
     * connection, re-takes this --id's claim): that one goes on. */
    if (json_object_get(d->finalizing, c->request_id)) {
        coord_finish(c);
        return;
    }
    json_object_set_new(d->finalizing, c->request_id, json_true());
    if (!PQgetisnull(res, row, o + 16)) { /* gathered and stored with the claim: publish it */
        if (d->cache && !c->batch && gt_cache_tenant_on(d->cfg, c->tenant_id)) {
            json_t *out = json_object_get(c->tr, "output");
            c->cache_output = out ? json_deep_copy(out) : json_null();
        }
        publish_stored(c, PQgetvalue(res, row, o + 16), c->single);
        return;
    }
    if (!PQgetisnull(res, row, o + 10)) {
        coord_publish_earlier(c, PQgetvalue(res, row, o + 10), PQgetvalue(res, row, o + 11),
                              PQgetisnull(res, row, o + 12) ? NULL : PQgetvalue(res, row, o + 12));
        return;
    }
    json_t *arr =
        PQgetisnull(res, row, o + 13) ? NULL : json_loads(PQgetvalue(res, row, o + 13), 0, NULL);
    int n = (int)json_array_size(arr);
    json_t **results = n ? calloc((size_t)n, sizeof(json_t *)) : NULL;
    if (n && !results) {
        gt_log(GT_LOG_ERROR, C_CTX(c), "out of memory gathering the job; left to the sweep");
        json_decref(arr);
        json_object_del(d->finalizing, c->request_id);
        coord_finish(c); /* the task result is applied; the claim goes stale */
        return;
    }
    for (int i = 0; i < n; i++) {
        json_t *r = json_array_get(arr, (size_t)i);
        results[i] = json_is_null(r) ? NULL : r;
    }
    coord_gather(c, results, n, strcmp(PQgetvalue(res, row, o + 15), "t") == 0);
    free(results);
    json_decref(arr);
}

static void on_applied(const PGresult *res, const char *err, void *arg)
{
    applied(arg, res, res && PQntuples(res) > 0 ? 0 : -1, 0, err);
}

static void coord_apply_one(coord_t *c);

/* sql_apply_many's answer for c: applied as sql_apply would have, or not
 * the common case, or it failed even alone (pgbatch.h): sql_apply. */
static void on_applied_many(void *item, const PGresult *res, int row, const char *err)
{
    coord_t *c = item;
    if (err || row < 0 || strcmp(PQgetvalue(res, row, 1), "t") != 0) {
        coord_apply_one(c);
        return;
    }
    applied(c, res, row, 2, NULL);
}

/* The job's result should c->tr be its only task (sql_apply stores it with
 * the claim then); NULL when it cannot be built (out of memory): gathered
 * after the claim instead. */
static json_t *coord_single(coord_t *c)
{
    json_t *results[1] = {c->tr};
    json_t *as_job = gt_graph_result(c->request_id, "", 0, results, 1, gt_clock_wall_ms());
    const gt_model_t *logical =
        gt_router_logical(c->d->cfg, json_string_value(json_object_get(as_job, "model")));
    if (as_job && logical) { /* as coord_gather names a deployment's result */
        json_object_set(as_job, "deployment", json_object_get(as_job, "model"));
        json_object_set_new(as_job, "model", json_string(logical->name));
    }
    return as_job;
}

/* Writes c->tr onto its task row (once) and reads the job: with other task
 * results in sql_apply_many when it may be the common case (see there),
 * else alone. */
static void coord_apply(coord_t *c)
{
    gt_dispatcher_t *d = c->d;
    json_t *tr = c->tr;
    if (c->apply_only || c->refused_code || json_object_get(d->finalizing, c->request_id)) {
        coord_apply_one(c);
        return;
    }
    json_decref(c->single);
    json_t *single = c->single = coord_single(c);
    json_t *error = json_object_get(tr, "error");
    json_t *row =
        single
            ? json_pack("{s:O?, s:O?, s:O, s:O?, s:O?, s:I, s:O?, s:O?, s:O?, s:s, s:O, s:s, s:s,"
                        " s:I}",
                        "task_id", json_object_get(tr, "task_id"), "status",
                        json_object_get(tr, "status"), "result", tr, "error_code",
                        json_object_get(error, "code"), "error_message",
                        json_object_get(error, "message"), "attempts",
                        (json_int_t)json_array_size(json_object_get(tr, "attempts")), "provider",
                        json_object_get(tr, "provider"), "pool", json_object_get(tr, "pool"),
                        "worker_id", json_object_get(tr, "worker_id"), "request_id", c->request_id,
                        "single", single, "by", d->id, "inc", d->incarnation, "tmo",
                        (json_int_t)d->cfg->claim_timeout_ms)
            : NULL;
    /* NULL rows (out of memory) fail the add too: applied alone */
    if (gt_pgbatch_add(d->applied, c, row ? json_pack("[o]", row) : NULL) != 0)
        coord_apply_one(c);
}

/* sql_apply for c alone. */
static void coord_apply_one(coord_t *c)
{
    gt_dispatcher_t *d = c->d;
    json_t *tr = c->tr;
    char timeout[24];
    snprintf(timeout, sizeof(timeout), "%lld", (long long)d->cfg->claim_timeout_ms);
    json_t *error = json_object_get(tr, "error");
    char attempts[16], *text = json_dumps(tr, JSON_COMPACT);
    snprintf(attempts, sizeof(attempts), "%zu", json_array_size(json_object_get(tr, "attempts")));
    if (!c->apply_only && !c->single)
        c->single = coord_single(c);
    char *single = !c->apply_only && c->single ? json_dumps(c->single, JSON_COMPACT) : NULL;
    const char *params[] = {
        json_string_value(json_object_get(tr, "task_id")),
        json_string_value(json_object_get(tr, "status")),
        text,
        json_string_value(json_object_get(error, "code")),
        json_string_value(json_object_get(error, "message")),
        attempts,
        json_string_value(json_object_get(tr, "provider")),
        json_string_value(json_object_get(tr, "pool")),
        json_string_value(json_object_get(tr, "worker_id")),
        c->request_id,
        c->apply_only || json_object_get(d->finalizing, c->request_id) ? "false" : "true",
        d->id,
        timeout,
        d->incarnation,
        single,
    };
    if (!text || gt_pg_query(d->pg_coord, sql_apply, 15, params, on_applied, c) != 0)
        on_applied(NULL, "cannot send query", c);
    free(text);
    free(single);
}

/* A task result that cannot be applied as sent (it fails its schema, or
 * PostgreSQL refuses it for good) still ends its task when it names one: the
 * task is failed with the reason in its stead, so the job goes on to its one
 * result, and the original goes to the DLQ only after that (coord_finish). A
 * redelivery fails the task again as a no-op and finishes the same way.
 * Returns 0 when the failed task is being applied, -1 when the result names
 * no task (or out of memory): the caller dead-letters it alone. */
static int coord_refuse(coord_t *c, const char *stage, const char *code, const char *why)
{
    const char *task_id = json_string_value(json_object_get(c->tr, "task_id"));
    const char *rid = json_string_value(json_object_get(c->tr, "request_id"));
    if (!task_id || !*task_id || !rid || !*rid || strlen(task_id) > 256 || strlen(rid) > 200)
        return -1;
    json_t *failed = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s}}", "schema",
                               "gantry.task-result.v1", "task_id", task_id, "request_id", rid,
                               "status", "failed", "error", "code", code, "message", why);
    char *rid_copy = strdup(rid);
    if (!failed || !rid_copy || !(c->refused_code = strdup(code)) ||
        !(c->refused_why = strdup(why))) {
        json_decref(failed);
        free(rid_copy);
        return -1;
    }
    c->refused_stage = stage;
    gt_log(GT_LOG_WARN, C_CTX(c), "task result refused (%s: %s): the task fails in its stead", code,
           why);
    json_decref(c->tr);
    c->tr = failed;
    json_decref(c->single); /* built from the result refused */
    c->single = NULL;
    free(c->request_id);
    c->request_id = rid_copy;
    coord_apply(c);
    return 0;
}

void gt_coordinator_handle(gt_dispatcher_t *d, gt_msg_t *msg)
{
    char err[512];
    const char *code = NULL;
    json_t *tr = gt_message_parse(msg, d->task_result_schema, &code, err, sizeof(err));
    if (!tr) {
        code = strcmp(code, "invalid_json") == 0 ? code : "invalid_task_result";
        coord_t *c = calloc(1, sizeof(*c));
        if (c) {
            c->published_since = -1;
            c->d = d;
            c->msg = msg;
            c->tr = gt_json_parse(msg->value, msg->len, 0, NULL);
            if (coord_refuse(c, "coordinator.parse", code, err) == 0)
                return;
            coord_free(c);
        }
        gt_dispatcher_dead_letter(d, d->consumer, msg, "coordinator.parse", code, err, NULL);
        return;
    }
    /* Health of the deployment the task was routed to (router.h): latency,
     * failures. A success its worker-side fallback served is the deployment's
     * failure: counted as one, a dead deployment's tasks rescued by their
     * fallback would close its cool-down and draw traffic back to it. */
    json_t *timings = json_object_get(tr, "timings");
    json_t *total = json_object_get(timings, "total_ms");
    const char *model = json_string_value(json_object_get(tr, "model"));
    const char *served = json_string_value(json_object_get(tr, "served_model"));
    int ok = strcmp(json_string_value(json_object_get(tr, "status")), "succeeded") == 0 &&
             (!served || !model || strcmp(served, model) == 0);
    gt_router_result(d->router, d->cfg, model, ok,
                     json_is_number(total) ? json_number_value(total) : -1, gt_clock_mono_ms());
    coord_t *c = calloc(1, sizeof(*c));
    if (!c) {
        json_decref(tr);
        return; /* out of memory: the offset stays undone */
    }
    c->published_since = -1;
    c->d = d;
    c->msg = msg;
    c->tr = tr;
    c->request_id = strdup(json_string_value(json_object_get(tr, "request_id")));
    if (!gt_msg_header(msg, "traceparent", c->traceparent, sizeof(c->traceparent)))
        c->traceparent[0] = '\0';
    coord_apply(c);
}

void gt_coordinator_finish(gt_dispatcher_t *d, gt_msg_t *msg, const PGresult *res, int row, int col)
{
    const char *rid = PQgetvalue(res, row, col);
    coord_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->request_id = strdup(rid))) {
        gt_log(GT_LOG_ERROR, &(gt_log_ctx_t){.request_id = rid},
               "out of memory finishing the job: left undone");
        free(c);
        return;
    }
    c->d = d;
    c->msg = msg;
    if (!msg && d->coordinator) /* coord_free counts it down */
        d->coordinator->finishing++;
    coord_set_job(c, res, row, col + 1, col + 5);
    if (json_object_get(d->finalizing, rid)) { /* being finished here already */
        coord_finish(c);
        return;
    }
    coord_claim(c);
}

static void on_stale(const PGresult *res, const char *err, void *arg)
{
    gt_coordinator_t *co = arg;
    gt_dispatcher_t *d = co->d;
    co->sweeping = 0;
    if (err) {
        gt_warn("sweeping stale job claims failed (retried): %s", err);
        return;
    }
    for (int i = 0; i < PQntuples(res) && !d->closing; i++) {
        const char *rid = PQgetvalue(res, i, 0);
        if (json_object_get(d->finalizing, rid))
            continue;
        coord_t *c = calloc(1, sizeof(*c));
        if (!c)
            return;
        c->published_since = -1;
        c->d = d;
        c->request_id = strdup(rid);
        coord_set_job(c, res, i, 1, 5);
        co->finishing++;
        gt_log(GT_LOG_WARN, C_CTX(c), "taking over the job's stale claim (claimant gone)");
        coord_claim(c);
    }
}

static void on_sweep(uv_timer_t *t)
{
    gt_coordinator_t *co = t->data;
    gt_dispatcher_t *d = co->d;
    if (co->sweeping || d->closing || !gt_pg_connected(d->pg_coord))
        return;
    char timeout[24];
    snprintf(timeout, sizeof(timeout), "%lld", (long long)d->cfg->claim_timeout_ms);
    const char *params[] = {timeout, d->id, d->incarnation};
    co->sweeping = 1;
    if (gt_pg_query(d->pg_coord, sql_stale, 3, params, on_stale, co) != 0)
        co->sweeping = 0;
}

gt_coordinator_t *gt_coordinator_new(gt_dispatcher_t *d)
{
    gt_coordinator_t *co = calloc(1, sizeof(*co));
    /* The coordinator's batches live as long as the dispatcher (main.c frees them). */
    if (!co || !(d->completed = gt_pgbatch_new(&d->pg_coord, sql_complete, on_completed)) ||
        !(d->applied = gt_pgbatch_new_rows(&d->pg_coord, sql_apply_many, on_applied_many))) {
        free(co);
        return NULL;
    }
    co->d = d;
    /* A quarter of the timeout: a dead claimant's job waits at most 1.25x it. */
    int64_t every = d->cfg->claim_timeout_ms / 4;
    every = every < 100 ? 100 : every > 5000 ? 5000 : every;
    uv_timer_init(d->loop, &co->sweep);
    co->sweep.data = co;
    /* The first sweep soon after start: a dead incarnation's claims wait
     * for no timeout. */
    uv_timer_start(&co->sweep, on_sweep, 200, (uint64_t)every);
    return co;
}

int gt_coordinator_in_flight(const gt_coordinator_t *co)
{
    return co ? co->finishing + co->sweeping : 0;
}

void gt_coordinator_close(gt_coordinator_t *co)
{
    if (!co || uv_is_closing((uv_handle_t *)&co->sweep))
        return;
    uv_timer_stop(&co->sweep);
    uv_close((uv_handle_t *)&co->sweep, NULL);
}

void gt_coordinator_free(gt_coordinator_t *co)
{
    if (co)
        co->d->coordinator = NULL;
    free(co);
}
