/* fallback.c - a task's model, then its fallbacks, on whichever runtime serves
 * each (see fallback.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fallback.h"
#include "log.h"

#define CHAIN_MAX 16

struct gt_chain {
    const gt_chain_env_t *env;
    const gt_task_spec_t *spec;
    gt_task_spec_t sub; /* spec with the model being tried */
    const gt_model_t *models[CHAIN_MAX];
    int n_models, cur;
    const gt_rt_instance_t *rt; /* the runtime of the call running */
    gt_rt_call_t *call;
    gt_chain_done_cb cb;
    void *arg;
    json_t *attempts;
    int retries; /* the task's retries spent by the models tried so far */
    int aborted;
};

static const gt_rt_instance_t *runtime_of(const gt_chain_env_t *env, const gt_model_t *m)
{
    for (size_t i = 0; i < env->n_runtimes; i++)
        if (env->runtimes[i].ops->serves(m))
            return &env->runtimes[i];
    return NULL;
}

static void chain_free(gt_chain_t *ch)
{
    json_decref(ch->attempts);
    free(ch);
}

/* Copies a call's attempts into the chain's, naming the model when fallbacks exist. */
static void take_attempts(gt_chain_t *ch, const json_t *attempts)
{
    size_t i;
    json_t *a;
    json_array_foreach (attempts, i, a) {
        json_t *c = json_copy(a);
        if (c && ch->n_models > 1)
            json_object_set_new(c, "model", json_string(ch->models[ch->cur]->name));
        json_array_append_new(ch->attempts, c);
    }
}

static int start_current(gt_chain_t *ch, const char **code);

static void on_done(gt_rt_call_t *call, const gt_task_outcome_t *sub, void *arg)
{
    gt_chain_t *ch = arg;
    int served = ch->cur;
    const gt_rt_instance_t *rt = ch->rt;
    (void)call;
    ch->call = NULL;
    ch->rt = NULL;
    take_attempts(ch, sub->attempts);
    if (sub->retries > ch->retries)
        ch->retries = sub->retries;
    const char *code = sub->error_code;
    if (sub->status == GT_TASK_FAILED && !ch->aborted && rt->ops->may_fall_back(code) &&
        ch->cur + 1 < ch->n_models) {
        gt_log_ctx_t ctx = {ch->spec->request_id, ch->spec->task_id, ch->spec->tenant_id,
                            ch->spec->traceparent};
        gt_log(GT_LOG_INFO, &ctx, "model %s could not serve (%s): falling back to %s",
               ch->models[ch->cur]->name, code, ch->models[ch->cur + 1]->name);
        const char *scode = NULL;
        for (ch->cur++; ch->cur < ch->n_models; ch->cur++) {
            if (start_current(ch, &scode) == 0)
                return;
            gt_log(GT_LOG_WARN, &ctx, "fallback %s cannot start (%s)", ch->models[ch->cur]->name,
                   scode);
        }
    }
    /* No fallback could start: report the last failure as it was. */
    gt_task_outcome_t out = *sub;
    out.attempts = ch->attempts;
    out.served_model = served > 0 ? ch->models[served]->name : NULL;
    gt_chain_done_cb cb = ch->cb;
    void *cb_arg = ch->arg;
    if (cb)
        cb(ch, &out, cb_arg);
    chain_free(ch);
}

/* Records that model m was skipped: its endpoint refuses calls now. */
static void skip_unavailable(gt_chain_t *ch, const gt_model_t *m)
{
    json_t *a = json_pack("{s:s, s:i, s:i, s:s, s:s}", "op", "inference", "status", 0, "ms", 0,
                          "model", m->name, "error", "circuit breaker open");
    if (a && (m->provider || m->pool))
        json_object_set_new(a, m->provider ? "provider" : "pool",
                            json_string(m->provider ? m->provider : m->pool));
    json_array_append_new(ch->attempts, a);
}

/* Starts models[cur]; skips (and records) a model whose endpoint's breaker is
 * open when another model follows. Returns 0 or -1 with *code. */
static int start_current(gt_chain_t *ch, const char **code)
{
    for (; ch->cur < ch->n_models; ch->cur++) {
        const gt_model_t *m = ch->models[ch->cur];
        const gt_rt_instance_t *rt = runtime_of(ch->env, m);
        ch->sub = *ch->spec;
        ch->sub.model = m;
        ch->sub.retries_spent = ch->retries;
        if (!rt) {
            *code = "unsupported_runtime";
        } else if (ch->cur + 1 < ch->n_models && rt->ops->unavailable(rt->ctx, m)) {
            skip_unavailable(ch, m);
            continue;
        } else {
            ch->rt = rt;
            ch->call = rt->ops->start(rt->ctx, &ch->sub, on_done, ch, code);
            if (ch->call)
                return 0;
            ch->rt = NULL;
        }
        if (ch->cur + 1 >= ch->n_models)
            return -1;
    }
    return -1;
}

gt_chain_t *gt_chain_start(const gt_chain_env_t *env, const gt_task_spec_t *spec,
                           gt_chain_done_cb cb, void *arg, const char **code)
{
    gt_chain_t *ch = calloc(1, sizeof(*ch));
    if (!ch || !(ch->attempts = json_array())) {
        free(ch);
        *code = "out_of_memory";
        return NULL;
    }
    ch->env = env;
    ch->spec = spec;
    ch->cb = cb;
    ch->arg = arg;
    ch->models[ch->n_models++] = spec->model;
    for (size_t i = 0; i < spec->model->n_fallbacks && ch->n_models < CHAIN_MAX; i++) {
        const gt_model_t *f = gt_config_model(env->cfg, spec->model->fallbacks[i]);
        if (f)
            ch->models[ch->n_models++] = f;
    }
    if (start_current(ch, code) != 0) {
        chain_free(ch);
        return NULL;
    }
    return ch;
}

void gt_chain_abort(gt_chain_t *ch)
{
    ch->aborted = 1;
    if (ch->call)
        ch->rt->ops->abort(ch->call); /* may finish ch right here */
}

void gt_chain_cancel(gt_chain_t *ch)
{
    ch->cb = NULL;
    if (ch->call)
        ch->rt->ops->cancel(ch->call);
    chain_free(ch);
}
