/* fallback.c - a task's model, then its fallbacks (see fallback.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fallback.h"
#include "log.h"

#define CHAIN_MAX 16

struct gt_chain {
    const gt_chain_env_t *env;
    const gt_task_spec_t *spec;
    gt_task_spec_t sub;          /* spec with the model being tried */
    const gt_model_t *models[CHAIN_MAX];
    int n_models, cur;
    gt_hai_call_t *hai;
    gt_prov_call_t *prov;
    gt_chain_done_cb cb;
    void *arg;
    json_t *attempts;
    int aborted;
};

int gt_chain_fallback_code(const char *code)
{
    static const char *const codes[] = {
        "provider_unavailable", "provider_timeout", "provider_rate_limited",
        "provider_slot_timeout", "provider_auth_failed", "unsupported_input",
        "hostedai_unavailable", "hostedai_timeout", "hostedai_rate_limited",
        "hostedai_capacity", NULL};
    for (int i = 0; code && codes[i]; i++)
        if (strcmp(code, codes[i]) == 0)
            return 1;
    return 0;
}

static int is_hostedai(const gt_model_t *m)
{
    return m->runtime && strcmp(m->runtime, "hostedai") == 0;
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
    json_array_foreach(attempts, i, a) {
        json_t *c = json_copy(a);
        if (c && ch->n_models > 1)
            json_object_set_new(c, "model", json_string(ch->models[ch->cur]->name));
        json_array_append_new(ch->attempts, c);
    }
}

static int start_current(gt_chain_t *ch, const char **code);

static void done(gt_chain_t *ch, const gt_task_outcome_t *sub)
{
    int served = ch->cur;
    take_attempts(ch, sub->attempts);
    const char *code = sub->error_code;
    if (sub->status == GT_TASK_FAILED && !ch->aborted && gt_chain_fallback_code(code) &&
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
    if (!out.provider && out.pool)
        out.provider = "hostedai";
    gt_chain_done_cb cb = ch->cb;
    void *arg = ch->arg;
    ch->hai = NULL;
    ch->prov = NULL;
    if (cb)
        cb(ch, &out, arg);
    chain_free(ch);
}

static void on_hai_done(gt_hai_call_t *call, const gt_task_outcome_t *out, void *arg)
{
    gt_chain_t *ch = arg;
    (void)call;
    ch->hai = NULL;
    done(ch, out);
}

static void on_prov_done(gt_prov_call_t *call, const gt_task_outcome_t *out, void *arg)
{
    gt_chain_t *ch = arg;
    (void)call;
    ch->prov = NULL;
    done(ch, out);
}

/* Starts models[cur]; skips (and records) a provider whose breaker is open
 * when another model follows. Returns 0 or -1 with *code. */
static int start_current(gt_chain_t *ch, const char **code)
{
    for (; ch->cur < ch->n_models; ch->cur++) {
        const gt_model_t *m = ch->models[ch->cur];
        ch->sub = *ch->spec;
        ch->sub.model = m;
        if (is_hostedai(m)) {
            ch->hai = gt_hai_start(ch->env->hai, &ch->sub, on_hai_done, ch, code);
            if (ch->hai)
                return 0;
        } else {
            if (ch->cur + 1 < ch->n_models && gt_prov_unavailable(ch->env->prov, m)) {
                json_t *a = json_pack("{s:s, s:i, s:i, s:s, s:s, s:s}", "op", "inference",
                                      "status", 0, "ms", 0, "provider", m->provider, "model",
                                      m->name, "error", "circuit breaker open");
                json_array_append_new(ch->attempts, a);
                continue;
            }
            ch->prov = gt_prov_start(ch->env->prov, &ch->sub, on_prov_done, ch, code);
            if (ch->prov)
                return 0;
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
    if (ch->hai)
        gt_hai_abort(ch->hai); /* may finish ch right here */
    else if (ch->prov)
        gt_prov_abort(ch->prov);
}

void gt_chain_cancel(gt_chain_t *ch)
{
    ch->cb = NULL;
    if (ch->hai)
        gt_hai_cancel(ch->hai);
    else if (ch->prov)
        gt_prov_cancel(ch->prov);
    chain_free(ch);
}
