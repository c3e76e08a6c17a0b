/* executor.c - runs many tasks at once: parse, dispatch to a runtime, publish result and usage.
 *
 * A task owns its Kafka message until everything the message caused is
 * durable: the task result and, after a successful inference, the usage event
 * (or, for a message that is not a task, its DLQ copy). Only then is the
 * message marked done, so offsets are committed only past durable work. What
 * a task produces is one effect (lib/effect.c): re-sent after a backoff until
 * acknowledged, never dropped. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "effect.h"
#include "executor.h"
#include "fallback.h"
#include "gate.h"
#include "hostedai.h"
#include "provider.h"
#include "log.h"
#include "message.h"
#include "schema.h"
#include "trace.h"
#include "worker_config.h"
#include "wstats.h"

typedef struct ex_task ex_task_t;

typedef enum { TASK_RUNNING, TASK_DELIVERING, TASK_ENDED } task_state_t;

struct ex_task {
    gt_executor_t *ex;
    ex_task_t *prev, *next;
    gt_msg_t *msg;
    json_t *doc;
    task_state_t state;
    int in_list;
    const char *task_id, *request_id, *tenant_id; /* borrowed from doc */
    char traceparent[256]; /* this task's span: sent on with results, usage and provider calls */
    gt_span_t span;        /* worker.task, child of the task message's traceparent */
    int span_open;
    gt_task_spec_t spec;
    gt_chain_t *call; /* the model's runtime, then its fallbacks */
    int64_t created_wall, start_wall, start_mono;
    gt_effect_t *effect; /* what the task produces, until it is over */
    int replaced;        /* its result could not be produced: a failed one went instead */
    int gating;          /* its start gate query is out (gate.h) */
    int cancelled;       /* its job was cancelled while it ran: aborted, reported cancelled */
};

struct gt_executor {
    uv_loop_t *loop;
    const gt_config_t *cfg;
    char *worker_id;
    char incarnation[33]; /* random per process start: heartbeats and allocation labels */
    int max_in_flight;    /* tasks running at once (gate and runtime) */
    int max_held;         /* running + delivering: bounds memory while Kafka acknowledges */
    gt_producer_t *producer;
    gt_http_t *http;
    gt_consumer_t *consumer;
    gt_schema_t *schema;
    gt_hai_env_t hai;
    gt_prov_engine_t *prov;
    gt_rt_instance_t runtimes[2]; /* the chain's runtimes, in the order it asks them */
    gt_chain_env_t chain;
    const char *const *lanes;

    gt_effects_t *effects; /* the results, usage events, DLQ copies and events */
    uv_timer_t heartbeat;
    gt_gate_t *gate; /* start gate and cancel look-ups; NULL without PostgreSQL */
    uv_timer_t cancel_poll;
    int cancel_polling; /* a cancelled-jobs query is out */
    int handles_open;
    int heartbeat_on;

    ex_task_t *tasks;
    int n_tasks;   /* every task held, running or delivering */
    int n_running; /* tasks in TASK_RUNNING: the slots max_in_flight counts */

    int paused, draining, aborting, closed;
    int in_abort_loop, idle_notified;
    gt_executor_idle_cb idle_cb;
    void *idle_arg;
};

static void task_finish(ex_task_t *t, const gt_task_outcome_t *out);
static void task_maybe_free(ex_task_t *t);

static gt_log_ctx_t task_ctx(const ex_task_t *t)
{
    gt_log_ctx_t ctx = {t->request_id, t->task_id, t->tenant_id, t->traceparent};
    return ctx;
}

/* ---- in-flight accounting and backpressure -------------------------------- */

static void maybe_idle(gt_executor_t *ex)
{
    if (!ex->draining || ex->n_tasks > 0 || ex->idle_notified || ex->in_abort_loop || !ex->idle_cb)
        return;
    /* Releases still owed are given back before the process goes (drain time permitting). */
    if (ex->hai.state && gt_hai_state_pending(ex->hai.state) > 0)
        return;
    ex->idle_notified = 1;
    ex->idle_cb(ex, ex->idle_arg);
}

/* Holds the consumer while every slot runs a task (or too many results wait
 * for Kafka), lets it go as soon as one frees. A result waiting for its
 * acknowledgement holds no slot: the provider keeps max_in_flight calls. The
 * consumer's hold is a flag (lib/kafka.h), so there is no hysteresis. */
static void flow_update(gt_executor_t *ex)
{
    int full = ex->n_running >= ex->max_in_flight || ex->n_tasks >= ex->max_held;
    if (!ex->consumer || ex->draining || full == ex->paused)
        return;
    ex->paused = full;
    if (full) {
        gt_debug("in-flight limit reached (%d running, %d held): consumer held", ex->n_running,
                 ex->n_tasks);
        gt_consumer_pause(ex->consumer);
    } else {
        gt_consumer_resume(ex->consumer);
    }
}

/* Leaves TASK_RUNNING: its slot is free. */
static void task_stop_running(ex_task_t *t, task_state_t next)
{
    if (t->state == TASK_RUNNING && t->in_list)
        t->ex->n_running--;
    t->state = next;
}

static void list_add(gt_executor_t *ex, ex_task_t *t)
{
    t->next = ex->tasks;
    if (ex->tasks)
        ex->tasks->prev = t;
    ex->tasks = t;
    t->in_list = 1;
    ex->n_tasks++;
    ex->n_running++; /* t->state is TASK_RUNNING */
    gt_wstats_in_flight(ex->n_tasks);
    flow_update(ex);
}

static void list_remove(ex_task_t *t)
{
    gt_executor_t *ex = t->ex;
    if (!t->in_list)
        return;
    if (t->state == TASK_RUNNING)
        ex->n_running--;
    if (t->prev)
        t->prev->next = t->next;
    else
        ex->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->in_list = 0;
    ex->n_tasks--;
    gt_wstats_in_flight(ex->n_tasks);
    flow_update(ex);
}

static void task_free(ex_task_t *t)
{
    if (t->effect) /* only when the executor is freed: its message stays undone */
        gt_effect_abandon(t->effect);
    json_decref(t->doc);
    free(t);
}

/* Frees t once it has left the list and no callback can still name it. */
static void task_maybe_free(ex_task_t *t)
{
    if (t->state == TASK_ENDED && !t->in_list && !t->effect && !t->call && !t->gating)
        task_free(t);
}

/* Ends t without marking its message done: it will be redelivered. */
static void task_abandon(ex_task_t *t)
{
    gt_executor_t *ex = t->ex;
    task_stop_running(t, TASK_ENDED);
    /* What it produces is given up (the effect frees itself once its
     * delivery reports are in, calling nobody). */
    if (t->effect) {
        gt_effect_abandon(t->effect);
        t->effect = NULL;
    }
    list_remove(t);
    task_maybe_free(t);
    maybe_idle(ex);
}

static void task_done(ex_task_t *t)
{
    gt_executor_t *ex = t->ex;
    task_stop_running(t, TASK_ENDED);
    if (ex->consumer && t->msg)
        gt_consumer_done(ex->consumer, t->msg);
    t->msg = NULL;
    list_remove(t);
    task_maybe_free(t);
    maybe_idle(ex);
}

/* ---- deliveries ----------------------------------------------------------- */

/* Everything the task caused is acknowledged. */
static void on_effect_done(void *arg)
{
    ex_task_t *t = arg;
    t->effect = NULL;
    if (t->ex->closed) {
        task_maybe_free(t);
        return;
    }
    task_done(t);
}

static int task_add_delivery(ex_task_t *t, const char *topic, const char *key, json_t *doc);

/* A produce that cannot succeed (err < 0: larger than the producer's limit,
 * unknown topic), or the process stops (err 0). */
static void on_effect_failed(const char *topic, int err, const char *reason, void *arg)
{
    ex_task_t *t = arg;
    gt_executor_t *ex = t->ex;
    gt_log_ctx_t ctx = task_ctx(t);
    t->effect = NULL;
    if (err == 0 || ex->closed || !t->task_id || t->replaced) {
        if (err)
            gt_log(GT_LOG_ERROR, &ctx, "cannot produce to %s (%s): message left undone", topic,
                   reason);
        task_abandon(t);
        return;
    }
    /* The result (its output) is what cannot go: report the task failed
     * instead, so that its request still ends. */
    char at[40];
    gt_log(GT_LOG_ERROR, &ctx, "cannot produce to %s (%s): reporting the task failed", topic,
           reason);
    json_t *res =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:n, s:{s:s, s:s}, s:[], s:s}", "schema",
                  "gantry.task-result.v1", "task_id", t->task_id, "request_id", t->request_id,
                  "tenant_id", t->tenant_id, "status", "failed", "model",
                  json_string_value(json_object_get(t->doc, "model"))
                      ? json_string_value(json_object_get(t->doc, "model"))
                      : "",
                  "worker_id", ex->worker_id, "output", "error", "code", "too_large", "message",
                  "the task result is larger than the producer's limit", "attempts", "completed_at",
                  gt_clock_fmt(gt_clock_wall_ms(), at, sizeof(at)));
    json_t *index = json_object_get(t->doc, "index");
    if (res)
        json_object_set_new(res, "index",
                            json_is_integer(index) ? json_copy(index) : json_integer(0));
    t->replaced = 1;
    if (task_add_delivery(t, ex->cfg->topics.task_results, t->request_id, res) != 0) {
        task_abandon(t);
        return;
    }
    gt_effect_seal(t->effect);
}

/* Adds a produce of doc (stolen) to t's effect. Returns 0 or -1 on out of memory. */
static int task_add_delivery(ex_task_t *t, const char *topic, const char *key, json_t *doc)
{
    gt_executor_t *ex = t->ex;
    int rc = -1;
    if (!doc)
        goto out;
    if (!t->effect &&
        !(t->effect = gt_effect_new(ex->effects, on_effect_done, on_effect_failed, t)))
        goto out;
    gt_header_t hdr = {"traceparent", t->traceparent};
    rc = gt_effect_add_json(t->effect, topic, key, doc, &hdr, t->traceparent[0] ? 1 : 0);
out:
    json_decref(doc);
    return rc;
}

static void task_deliver(ex_task_t *t)
{
    task_stop_running(t, TASK_DELIVERING);
    flow_update(t->ex);
    if (!t->effect) {
        /* Could not even build a message (out of memory): leave it for redelivery. */
        gt_log_ctx_t ctx = task_ctx(t);
        gt_log(GT_LOG_ERROR, &ctx, "no message to publish; task left for redelivery");
        task_abandon(t);
        return;
    }
    gt_effect_seal(t->effect); /* on_effect_done marks the message done */
}

/* ---- events ----------------------------------------------------------------- */

void gt_executor_emit(gt_executor_t *ex, const char *type, json_t *data)
{
    /* The incarnation tells the reaper which start of this --id an event is of. */
    if (json_is_object(data) && !json_object_get(data, "incarnation"))
        json_object_set_new(data, "incarnation", json_string(ex->incarnation));
    json_t *ev = gt_event_build(type, ex->worker_id, NULL, data);
    if (!ev)
        return;
    /* Keyed by allocation so that its acquire and release stay in order. */
    const char *key =
        json_string_value(json_object_get(json_object_get(ev, "data"), "allocation_id"));
    /* Sent until acknowledged: the reaper and the ledger rely on them. */
    if (gt_effect_send_json(ex->effects, ex->cfg->topics.events, key ? key : ex->worker_id, ev,
                            NULL, 0) != 0)
        gt_warn("event %s not queued: out of memory", type);
    json_decref(ev);
}

static void emit_cb(const char *type, json_t *data, void *arg)
{
    gt_executor_emit(arg, type, data);
}

/* The last owed release is done: a drain may have been waiting for it. */
static void on_hai_settled(void *arg)
{
    maybe_idle(arg);
}

static void on_heartbeat(uv_timer_t *timer)
{
    gt_executor_t *ex = timer->data;
    json_t *lanes = json_array();
    for (size_t i = 0; ex->lanes && ex->lanes[i]; i++)
        json_array_append_new(lanes, json_string(ex->lanes[i]));
    /* The lease: every allocation this incarnation holds or may be getting
     * (allocate attempts in flight, by label). The reaper releases the rest. */
    json_t *held = ex->hai.state ? gt_hai_state_held(ex->hai.state) : json_array();
    json_t *allocating = ex->hai.state ? gt_hai_state_allocating(ex->hai.state) : json_array();
    gt_executor_emit(ex, "worker.heartbeat",
                     json_pack("{s:i, s:i, s:o, s:b, s:s, s:o, s:o}", "in_flight", ex->n_tasks,
                               "max_in_flight", ex->max_in_flight, "lanes", lanes, "draining",
                               ex->draining, "incarnation", ex->incarnation, "allocations",
                               held ? held : json_array(), "allocating",
                               allocating ? allocating : json_array()));
}

void gt_executor_start_heartbeat(gt_executor_t *ex)
{
    if (ex->closed)
        return;
    ex->heartbeat_on = 1;
    on_heartbeat(&ex->heartbeat);
    uv_timer_start(&ex->heartbeat, on_heartbeat, (uint64_t)ex->cfg->heartbeat_ms,
                   (uint64_t)ex->cfg->heartbeat_ms);
}

/* ---- results ---------------------------------------------------------------- */

static const char *status_name(gt_task_status_t s)
{
    return s == GT_TASK_SUCCEEDED ? "succeeded" : s == GT_TASK_EXPIRED ? "expired" : "failed";
}

static void set_ms(json_t *obj, const char *key, int64_t ms)
{
    if (ms >= 0)
        json_object_set_new(obj, key, json_integer(ms));
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static void task_finish(ex_task_t *t, const gt_task_outcome_t *out)
{
    gt_executor_t *ex = t->ex;
    const gt_config_t *cfg = ex->cfg;
    char at[40];
    int64_t total_ms = gt_clock_mono_ms() - t->start_mono;
    gt_log_ctx_t ctx = task_ctx(t);
    const char *model = json_string_value(json_object_get(t->doc, "model"));
    gt_wstats_task(out->served_model ? out->served_model : model,
                   out->provider ? out->provider : "hostedai", status_name(out->status),
                   (double)total_ms / 1000.0);
    json_t *index = json_object_get(t->doc, "index");

    if (t->span_open) {
        t->span_open = 0;
        gt_span_end(&t->span, out->status == GT_TASK_SUCCEEDED ? NULL : out->error_code,
                    "{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "gantry.request_id", t->request_id,
                    "gantry.task_id", t->task_id, "gantry.tenant_id", t->tenant_id, "gantry.model",
                    model ? model : "", "gantry.provider",
                    out->provider ? out->provider : "hostedai", "gantry.status",
                    status_name(out->status), "gantry.attempts",
                    (json_int_t)(out->attempts ? json_array_size(out->attempts) : 0),
                    "gantry.completion_tokens", (json_int_t)out->completion_tokens);
    }
    gt_task_outcome_t cancelled_out;
    if (t->cancelled && out->status != GT_TASK_SUCCEEDED) {
        /* Aborted because its job was cancelled: reported cancelled, not
         * billed (no usage event); its allocation was released by the abort. */
        cancelled_out = *out;
        cancelled_out.status = GT_TASK_FAILED;
        cancelled_out.error_code = "cancelled";
        cancelled_out.error_message = "the job was cancelled while the task ran";
        cancelled_out.output = NULL;
        out = &cancelled_out;
    }
    if (out->error_code && strcmp(out->error_code, "aborted") == 0) {
        gt_log(GT_LOG_INFO, &ctx, "task aborted by shutdown; it will be redelivered");
        task_abandon(t);
        return;
    }

    json_t *timings = json_object();
    if (t->created_wall > 0)
        set_ms(timings, "queued_ms",
               t->start_wall > t->created_wall ? t->start_wall - t->created_wall : 0);
    set_ms(timings, "allocate_ms", out->allocate_ms);
    set_ms(timings, "inference_ms", out->inference_ms);
    set_ms(timings, "release_ms", out->release_ms);
    if (out->capacity_wait_ms > 0)
        set_ms(timings, "capacity_wait_ms", out->capacity_wait_ms);
    set_ms(timings, "total_ms", total_ms);

    json_t *res = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "schema", "gantry.task-result.v1", "task_id",
        t->task_id, "request_id", t->request_id, "tenant_id", t->tenant_id, "status",
        t->cancelled && out->status != GT_TASK_SUCCEEDED ? "cancelled" : status_name(out->status),
        "model", model ? model : "", "worker_id", ex->worker_id);
    if (res)
        json_object_set_new(res, "index",
                            json_is_integer(index) ? json_copy(index) : json_integer(0));
    if (res) {
        /* Shared, not copied: the runtime drops its reference after this
         * callback and nobody changes either (the message is serialised below). */
        json_object_set_new(res, "output", out->output ? json_incref(out->output) : json_null());
        json_object_set_new(res, "error",
                            out->error_code
                                ? json_pack("{s:s, s:s}", "code", out->error_code, "message",
                                            out->error_message ? out->error_message : "")
                                : json_null());
        json_object_set_new(res, "provider",
                            out->provider ? json_string(out->provider)
                            : out->pool   ? json_string("hostedai")
                                          : json_null());
        json_object_set_new(res, "served_model", str_or_null(out->served_model));
        json_object_set_new(res, "pool", str_or_null(out->pool));
        json_object_set_new(res, "allocation_id", str_or_null(out->allocation_id));
        json_object_set_new(res, "attempts",
                            out->attempts ? json_incref(out->attempts) : json_array());
        json_object_set_new(res, "usage",
                            json_pack("{s:I, s:I}", "prompt_tokens", (json_int_t)out->prompt_tokens,
                                      "completion_tokens", (json_int_t)out->completion_tokens));
        json_object_set_new(res, "timings", json_incref(timings));
        json_object_set_new(res, "completed_at",
                            json_string(gt_clock_fmt(gt_clock_wall_ms(), at, sizeof(at))));
    }
    if (task_add_delivery(t, cfg->topics.task_results, t->request_id, res) != 0)
        gt_log(GT_LOG_ERROR, &ctx, "out of memory building the task result");

    if (out->status == GT_TASK_SUCCEEDED) {
        char event_id[512];
        const gt_model_t *m = t->spec.model;
        /* Deterministic: a redelivered task yields the same id, billed once. */
        snprintf(event_id, sizeof(event_id), "%s:usage", t->task_id);
        json_t *durations = json_object();
        set_ms(durations, "allocate_ms", out->allocate_ms);
        set_ms(durations, "inference_ms", out->inference_ms);
        set_ms(durations, "release_ms", out->release_ms);
        set_ms(durations, "total_ms", total_ms);
        json_t *usage = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:f, s:f, s:I, s:I, s:I, s:I, s:I, "
            "s:I, s:o, s:s}",
            "schema", "gantry.usage.v1", "event_id", event_id, "request_id", t->request_id,
            "task_id", t->task_id, "tenant_id", t->tenant_id, "model", model ? model : "",
            "provider", out->provider ? out->provider : "hostedai", "pool",
            out->pool ? out->pool : "", "allocation_id", str_or_null(out->allocation_id),
            "allocation_seconds", round(out->allocation_seconds * 1000.0) / 1000.0, "tflops",
            m ? m->tflops : 0.0, "vram_mb", (json_int_t)(m ? m->vram_mb : 0), "prompt_tokens",
            (json_int_t)out->prompt_tokens, "completion_tokens", (json_int_t)out->completion_tokens,
            "request_bytes", (json_int_t)out->request_bytes, "response_bytes",
            (json_int_t)out->response_bytes, "attempts",
            (json_int_t)(out->attempts ? json_array_size(out->attempts) : 0), "durations",
            durations, "occurred_at", gt_clock_fmt(gt_clock_wall_ms(), at, sizeof(at)));
        if (task_add_delivery(t, cfg->topics.usage, event_id, usage) != 0)
            gt_log(GT_LOG_ERROR, &ctx, "out of memory building the usage event");
    }
    json_decref(timings);
    gt_log(out->status == GT_TASK_SUCCEEDED ? GT_LOG_INFO : GT_LOG_WARN, &ctx,
           "task %s%s%s in %" PRId64 " ms", status_name(out->status), out->error_code ? ": " : "",
           out->error_code ? out->error_code : "", total_ms);
    task_deliver(t);
}

static void on_chain_done(gt_chain_t *call, const gt_task_outcome_t *out, void *arg)
{
    ex_task_t *t = arg;
    t->call = NULL;
    task_finish(t, out);
}

/* Ends t with an error decided before any runtime ran. */
static void task_fail_early(ex_task_t *t, gt_task_status_t status, const char *code,
                            const char *message)
{
    gt_task_outcome_t out = {0};
    out.status = status;
    out.error_code = code;
    out.error_message = message;
    out.allocate_ms = out.inference_ms = out.release_ms = -1;
    task_finish(t, &out);
}

/* ---- DLQ -------------------------------------------------------------------- */

static void task_to_dlq(ex_task_t *t, const char *code, const char *message)
{
    gt_executor_t *ex = t->ex;
    const gt_msg_t *msg = t->msg;
    char *key = msg->key ? strndup(msg->key, msg->key_len) : NULL;

    gt_warn("message %s[%d]@%" PRId64 " is not a valid task (%s): sent to the DLQ", msg->topic,
            (int)msg->partition, msg->offset, code);
    json_t *dlq = gt_dlq_build(msg, "worker.parse", code, message, NULL,
                               (size_t)ex->cfg->kafka_message_max_bytes);
    if (task_add_delivery(t, ex->cfg->topics.dlq, key, dlq) != 0)
        gt_error("out of memory building a DLQ message");
    free(key);
    task_deliver(t);
}

/* ---- intake ----------------------------------------------------------------- */

static void task_run(ex_task_t *t);

/* The start gate's answer (gate.h). */
static void on_gate(gt_gate_verdict_t v, void *arg)
{
    ex_task_t *t = arg;
    gt_executor_t *ex = t->ex;
    t->gating = 0;
    if (ex->closed || v == GT_GATE_CLOSED || ex->aborting) {
        if (!ex->closed)
            task_abandon(t);
        else
            task_maybe_free(t);
        return;
    }
    gt_log_ctx_t ctx = task_ctx(t);
    if (t->msg && !gt_consumer_owns(t->msg)) {
        /* Handed over while it waited at the gate (the claim retried through
         * a database fault past the revoke's grace): the next owner runs it,
         * and the gate lets that copy of the same message through as well. */
        gt_log(GT_LOG_INFO, &ctx, "task not started: its partition was handed over meanwhile");
        task_done(t);
        return;
    }
    if (v == GT_GATE_SKIP) {
        /* Cancelled before it started, or finished already (a redelivery):
         * nothing to run or report; its message is done. */
        gt_log(GT_LOG_INFO, &ctx, "task not started: cancelled or already finished");
        task_done(t);
        return;
    }
    if (v == GT_GATE_CANCELLED) {
        t->cancelled = 1; /* reported cancelled, unbilled */
        task_fail_early(t, GT_TASK_FAILED, "cancelled", "the job was cancelled");
        return;
    }
    if (v == GT_GATE_EXPIRED) {
        task_fail_early(t, GT_TASK_EXPIRED, "queue_time_exceeded",
                        "the task waited longer than its queue time limit");
        return;
    }
    task_run(t);
}

/* Running tasks whose job was cancelled are aborted (their allocations released). */
static void on_cancelled(const json_t *ids, void *arg)
{
    gt_executor_t *ex = arg;
    ex->cancel_polling = 0;
    if (ex->closed || json_array_size(ids) == 0)
        return;
    ex->in_abort_loop = 1;
    for (ex_task_t *t = ex->tasks, *next; t; t = next) {
        next = t->next;
        if (t->state != TASK_RUNNING || !t->call || t->cancelled)
            continue;
        size_t i;
        json_t *v;
        json_array_foreach (ids, i, v) {
            if (strcmp(json_string_value(v), t->request_id) == 0) {
                gt_log_ctx_t ctx = task_ctx(t);
                gt_log(GT_LOG_INFO, &ctx, "job cancelled: aborting the running task");
                t->cancelled = 1;
                gt_chain_abort(t->call); /* may finish t (and only t) right here */
                break;
            }
        }
    }
    ex->in_abort_loop = 0;
    maybe_idle(ex);
}

static void on_cancel_poll(uv_timer_t *timer)
{
    gt_executor_t *ex = timer->data;
    if (ex->cancel_polling || ex->closed || !ex->gate)
        return;
    json_t *ids = json_array();
    for (ex_task_t *t = ex->tasks; ids && t; t = t->next)
        if (t->state == TASK_RUNNING && t->call && !t->cancelled && t->request_id)
            json_array_append_new(ids, json_string(t->request_id));
    if (json_array_size(ids) > 0 && gt_gate_cancelled(ex->gate, ids, on_cancelled, ex) == 0)
        ex->cancel_polling = 1;
    json_decref(ids);
}

static void task_start(ex_task_t *t)
{
    gt_executor_t *ex = t->ex;
    json_t *doc = t->doc;
    gt_log_ctx_t ctx;

    t->task_id = json_string_value(json_object_get(doc, "task_id"));
    t->request_id = json_string_value(json_object_get(doc, "request_id"));
    t->tenant_id = json_string_value(json_object_get(doc, "tenant_id"));
    if (!t->task_id || !t->request_id || !t->tenant_id) {
        /* The schema requires them; guard anyway so nothing below sees NULL. */
        t->task_id = t->request_id = t->tenant_id = NULL;
        task_to_dlq(t, "schema_violation", "task_id, request_id and tenant_id are required");
        return;
    }
    ctx = task_ctx(t);
    const char *created = json_string_value(json_object_get(doc, "created_at"));
    if (created && gt_clock_parse(created, &t->created_wall) != 0)
        t->created_wall = 0;

    t->spec.task_id = t->task_id;
    t->spec.request_id = t->request_id;
    t->spec.tenant_id = t->tenant_id;
    t->spec.kind = json_string_value(json_object_get(doc, "kind"));
    t->spec.input = json_object_get(doc, "input");
    t->spec.parameters = json_object_get(doc, "parameters");
    t->spec.traceparent = t->traceparent[0] ? t->traceparent : NULL;
    t->spec.deadline_mono_ms = INT64_MAX;
    if (!t->spec.kind)
        t->spec.kind = "generate";

    const char *model = json_string_value(json_object_get(doc, "model"));
    t->spec.model = model ? gt_config_model(ex->cfg, model) : NULL;
    if (!t->spec.model) {
        char m[300];
        snprintf(m, sizeof(m), "model \"%.200s\" is not configured on this worker",
                 model ? model : "");
        task_fail_early(t, GT_TASK_FAILED, "unknown_model", m);
        return;
    }
    const char *deadline = json_string_value(json_object_get(doc, "deadline"));
    if (deadline) {
        int64_t dl;
        if (gt_clock_parse(deadline, &dl) != 0) {
            task_fail_early(t, GT_TASK_FAILED, "invalid_deadline", "deadline is not RFC 3339");
            return;
        }
        int64_t left = dl - t->start_wall;
        if (left <= 0) {
            task_fail_early(t, GT_TASK_EXPIRED, "deadline_exceeded",
                            "deadline passed before the task started");
            return;
        }
        t->spec.deadline_mono_ms = t->start_mono + left;
    }
    if (ex->gate) {
        const char *lane = json_string_value(json_object_get(doc, "lane"));
        char msg_id[48] = "";
        if (t->msg)
            snprintf(msg_id, sizeof(msg_id), "%d:%lld", (int)t->msg->partition,
                     (long long)t->msg->offset);
        t->gating = 1;
        if (gt_gate_claim(ex->gate, t->task_id, t->request_id,
                          gt_config_max_queue_ms(ex->cfg, lane, t->tenant_id),
                          t->msg ? msg_id : NULL, on_gate, t) == 0)
            return; /* on_gate goes on */
        t->gating = 0;
        gt_log(GT_LOG_ERROR, &ctx, "out of memory asking the start gate: left for redelivery");
        task_abandon(t);
        return;
    }
    task_run(t);
}

/* The task may start: hand it to its runtime (and fallbacks). */
static void task_run(ex_task_t *t)
{
    gt_executor_t *ex = t->ex;
    gt_log_ctx_t ctx = task_ctx(t);
    const char *code = "unsupported_runtime";
    t->call = gt_chain_start(&ex->chain, &t->spec, on_chain_done, t, &code);
    if (!t->call) {
        const char *runtime = t->spec.model->runtime;
        gt_log(GT_LOG_WARN, &ctx, "task cannot start on runtime %s: %s", runtime ? runtime : "?",
               code);
        task_fail_early(t, GT_TASK_FAILED, code,
                        strcmp(code, "unknown_pool") == 0 ? "the model's pool is not configured"
                        : strcmp(code, "unsupported_runtime") == 0
                            ? "the model's runtime is not served by this worker"
                            : "could not start the task");
    }
}

void gt_executor_on_message(gt_consumer_t *c, gt_msg_t *msg, void *arg)
{
    gt_executor_t *ex = arg;
    const char *code = NULL;
    char why[512];

    if (ex->closed)
        return;
    ex->consumer = c;
    if (ex->draining) {
        /* Taken from the queue after the drain began: left undone, redelivered. */
        if (!ex->paused) {
            gt_consumer_pause(c);
            ex->paused = 1;
        }
        return;
    }
    ex_task_t *t = calloc(1, sizeof(*t));
    if (!t) {
        gt_error("out of memory: message %s[%d]@%" PRId64 " left for redelivery", msg->topic,
                 (int)msg->partition, msg->offset);
        return;
    }
    t->ex = ex;
    t->msg = msg;
    t->state = TASK_RUNNING;
    t->start_wall = gt_clock_wall_ms();
    t->start_mono = gt_clock_mono_ms();
    /* The task's span continues the request's trace (a new one when the
     * header is missing or invalid); what goes on carries the task's span. */
    gt_trace_ctx_t parent;
    int adopted = gt_msg_header(msg, "traceparent", t->traceparent, sizeof(t->traceparent)) &&
                  gt_trace_parse(t->traceparent, &parent) == 0;
    t->traceparent[0] = '\0';
    if (gt_span_start(&t->span, adopted ? &parent : NULL, "worker.task", GT_SPAN_CONSUMER) == 0) {
        t->span_open = 1;
        gt_trace_format(&t->span.ctx, t->traceparent);
    }
    list_add(ex, t);

    why[0] = '\0';
    t->doc = gt_message_parse(msg, ex->schema, &code, why, sizeof(why));
    if (!t->doc) {
        task_to_dlq(t, code ? code : "invalid_json", why);
        return;
    }
    task_start(t);
}

/* ---- lifecycle -------------------------------------------------------------- */

gt_executor_t *gt_executor_new(uv_loop_t *loop, const gt_executor_opts_t *opts, char *err,
                               size_t errlen)
{
    gt_executor_t *ex = calloc(1, sizeof(*ex));
    if (!ex) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ex->loop = loop;
    ex->cfg = opts->cfg;
    ex->producer = opts->producer;
    ex->http = opts->http;
    ex->lanes = opts->lanes;
    ex->max_in_flight =
        opts->max_in_flight > 0 ? opts->max_in_flight : opts->cfg->worker_max_in_flight;
    if (ex->max_in_flight < 1)
        ex->max_in_flight = 1;
    ex->max_held = ex->max_in_flight * 2;
    ex->worker_id = strdup(opts->worker_id);
    if (!ex->worker_id) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    ex->schema = gt_schema_embedded("task.v1.json", err, errlen);
    if (!ex->schema)
        goto fail;
    ex->hai.loop = loop;
    ex->hai.http = opts->http;
    ex->hai.cfg = opts->cfg;
    ex->hai.worker_id = ex->worker_id;
    ex->hai.emit = emit_cb;
    ex->hai.emit_arg = ex;
    gt_random_hex(ex->incarnation);
    ex->hai.incarnation = ex->incarnation;
    ex->prov =
        gt_prov_engine_new(loop, opts->http, opts->cfg, ex->worker_id, emit_cb, ex, err, errlen);
    if (!ex->prov)
        goto fail;
    /* Last: it opens a loop handle (on out of memory the process exits anyway). */
    ex->hai.state = gt_hai_state_new(&ex->hai);
    if (!ex->hai.state) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    gt_hai_state_on_settled(ex->hai.state, on_hai_settled, ex);
    ex->runtimes[0] = (gt_rt_instance_t){&gt_runtime_ops_hostedai, &ex->hai};
    ex->runtimes[1] = (gt_rt_instance_t){&gt_runtime_ops_hosted, ex->prov};
    ex->chain.cfg = opts->cfg;
    ex->chain.runtimes = ex->runtimes;
    ex->chain.n_runtimes = sizeof(ex->runtimes) / sizeof(ex->runtimes[0]);
    ex->effects = gt_effects_new(loop, opts->producer);
    if (!ex->effects) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    uv_timer_init(loop, &ex->heartbeat);
    ex->heartbeat.data = ex;
    uv_timer_init(loop, &ex->cancel_poll);
    ex->cancel_poll.data = ex;
    ex->handles_open = 2;
    ex->gate = gt_gate_new(loop, opts->cfg);
    if (ex->gate)
        uv_timer_start(&ex->cancel_poll, on_cancel_poll, (uint64_t)opts->cfg->cancel_poll_ms,
                       (uint64_t)opts->cfg->cancel_poll_ms);
    return ex;
fail:
    gt_prov_engine_free(ex->prov);
    gt_schema_free(ex->schema);
    free(ex->worker_id);
    free(ex);
    return NULL;
}

int gt_executor_in_flight(const gt_executor_t *ex)
{
    return ex->n_tasks;
}

void gt_executor_drain(gt_executor_t *ex, gt_executor_idle_cb cb, void *arg)
{
    ex->idle_cb = cb;
    ex->idle_arg = arg;
    ex->draining = 1;
    if (!ex->paused && ex->consumer) {
        gt_consumer_pause(ex->consumer);
        ex->paused = 1;
    }
    maybe_idle(ex);
}

void gt_executor_abort(gt_executor_t *ex, gt_executor_idle_cb cb, void *arg)
{
    ex->aborting = 1;
    ex->in_abort_loop = 1;
    gt_executor_drain(ex, cb, arg);
    for (ex_task_t *t = ex->tasks, *next; t; t = next) {
        next = t->next;
        if (t->state == TASK_RUNNING && t->call)
            gt_chain_abort(t->call); /* may finish t (and only t) right here */
    }
    /* A produce waiting to be sent again will not be: its effect is given up
     * (on_effect_failed abandons the task) and its message stays undone. */
    gt_effects_close(ex->effects);
    ex->in_abort_loop = 0;
    maybe_idle(ex);
}

void gt_executor_detach(gt_executor_t *ex)
{
    ex->consumer = NULL;
}

static void on_close(uv_handle_t *h)
{
    gt_executor_t *ex = h->data;
    ex->handles_open--;
}

void gt_executor_close(gt_executor_t *ex)
{
    if (ex->closed)
        return;
    ex->closed = 1;
    ex->consumer = NULL;
    for (ex_task_t *t = ex->tasks; t; t = t->next) {
        if (t->call) {
            gt_chain_cancel(t->call);
            t->call = NULL;
        }
        if (t->effect) { /* nothing is marked done any more */
            gt_effect_abandon(t->effect);
            t->effect = NULL;
        }
        t->state = TASK_ENDED;
    }
    gt_effects_close(ex->effects);
    uv_close((uv_handle_t *)&ex->heartbeat, on_close);
    uv_close((uv_handle_t *)&ex->cancel_poll, on_close);
    gt_gate_free(ex->gate); /* pending gate answers arrive CLOSED, now */
    ex->gate = NULL;
    gt_hai_state_close(ex->hai.state);
    gt_prov_engine_close(ex->prov);
}

void gt_executor_free(gt_executor_t *ex)
{
    if (!ex)
        return;
    while (ex->tasks) {
        ex_task_t *t = ex->tasks;
        ex->tasks = t->next;
        task_free(t);
    }
    gt_schema_free(ex->schema);
    gt_prov_engine_free(ex->prov);
    gt_effects_free(ex->effects);
    gt_hai_state_free(ex->hai.state);
    free(ex->worker_id);
    free(ex);
}

const char *gt_executor_incarnation(const gt_executor_t *ex)
{
    return ex->incarnation;
}
