/* test_effect.c - lib/effect (produces re-sent until acknowledged, one
 * completion per input) against gantry-kafka-dev's mock cluster. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <uv.h>

#include "effect.h"
#include "harness.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"

#define N_EFFECTS 40
#define PER_EFFECT 3

static th_proc_t broker;
static int broker_up;
static char bootstrap[512];

typedef struct eff_state {
    int done, failed, failed_err;
    int sealed;
    int done_before_seal;
} eff_state_t;

static void on_done(void *arg)
{
    eff_state_t *s = arg;
    if (!s->sealed)
        s->done_before_seal++;
    s->done++;
}

static void on_failed(const char *topic, int err, const char *reason, void *arg)
{
    eff_state_t *s = arg;
    (void)topic, (void)reason;
    s->failed++;
    s->failed_err = err;
}

static int no_pending(void *arg)
{
    return gt_effects_pending(arg) == 0;
}

/* Messages seen on a topic by a consumer of its own group: distinct values. */
typedef struct seen {
    json_t *values; /* object: value -> true */
} seen_t;

static void seen_on_msg(gt_consumer_t *c, gt_msg_t *msg, void *arg)
{
    seen_t *s = arg;
    char v[128];
    snprintf(v, sizeof(v), "%.*s", (int)(msg->len < 100 ? msg->len : 100),
             (const char *)msg->value);
    json_object_set_new(s->values, v, json_true());
    gt_consumer_done(c, msg);
}

typedef struct seen_wait {
    seen_t *s;
    size_t want;
} seen_wait_t;

static int seen_enough(void *arg)
{
    seen_wait_t *w = arg;
    return json_object_size(w->s->values) >= w->want;
}

static gt_config_t config_with(json_t *props)
{
    gt_config_t c = {0};
    c.bootstrap_servers = bootstrap;
    c.commit_interval_ms = 100;
    c.kafka_producer_props = props;
    return c;
}

static void teardown(uv_loop_t *loop, gt_effects_t *es, gt_producer_t *p, gt_consumer_t *c)
{
    gt_effects_close(es);
    gt_producer_close_handles(p);
    if (c)
        gt_consumer_close_handles(c);
    uv_run(loop, UV_RUN_DEFAULT);
    if (c)
        gt_consumer_free(c);
    gt_producer_free(p, 5000);
    gt_effects_free(es);
    TH_EQ_INT(uv_loop_close(loop), 0);
}

/* ---- tests ------------------------------------------------------------- */

static void test_start(void)
{
    const char *argv[] = {th_bin("tools/gantry-kafka-dev"), "--topics",
                          th_tmpfile(".txt", "t.effect 2\nt.big 1\nt.abandon 1\n"), NULL};
    TH_EQ_INT(th_proc_start(&broker, argv, NULL), 0);
    TH_EQ_INT(th_proc_wait_line(&broker, "bootstrap=", bootstrap, sizeof(bootstrap), 15000), 0);
    broker_up = 1;
}

/* A queue of one message: nearly every produce is refused at first and sent
 * again; every message arrives, each effect completes once, after its seal. */
static void test_refused_produces_arrive(void)
{
    CU_ASSERT_FATAL(broker_up);
    json_t *props = json_pack("{s:s}", "queue.buffering.max.messages", "1");
    gt_config_t c = config_with(props);
    char err[256];
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_producer_t *p = gt_producer_new(&loop, &c, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    gt_effects_t *es = gt_effects_new(&loop, p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(es);
    static eff_state_t st[N_EFFECTS];
    memset(st, 0, sizeof(st));
    for (int i = 0; i < N_EFFECTS; i++) {
        gt_effect_t *e = gt_effect_new(es, on_done, on_failed, &st[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(e);
        for (int j = 0; j < PER_EFFECT; j++) {
            char key[32], val[64];
            gt_header_t h = {"traceparent", "tp"};
            snprintf(key, sizeof(key), "k%d", i);
            snprintf(val, sizeof(val), "e%d-%d", i, j);
            TH_EQ_INT(gt_effect_add(e, "t.effect", key, strlen(key), val, strlen(val), &h, 1), 0);
        }
        st[i].sealed = 1;
        gt_effect_seal(e);
    }
    CU_ASSERT(gt_effects_resends(es) > 0); /* the queue refused */
    CU_ASSERT(gt_metric_value(gt_metrics_counter("gantry_effect_resends_total", "", "topic"),
                              "t.effect") > 0);
    CU_ASSERT(th_loop_until(&loop, no_pending, es, 60000));
    for (int i = 0; i < N_EFFECTS; i++) {
        TH_EQ_INT(st[i].done, 1);
        TH_EQ_INT(st[i].failed, 0);
        TH_EQ_INT(st[i].done_before_seal, 0);
    }
    fprintf(stderr, "  %d effects of %d produces, %ld re-sends\n", N_EFFECTS, PER_EFFECT,
            gt_effects_resends(es));

    /* Everything is on the topic. */
    seen_t s = {json_object()};
    const char *topics[] = {"t.effect", NULL};
    gt_consumer_opts_t o = {.group_id = "g-effect", .topics = topics, .cb = seen_on_msg, .arg = &s};
    gt_config_t cc = config_with(NULL);
    gt_consumer_t *cons = gt_consumer_new(&loop, &cc, &o, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cons);
    seen_wait_t w = {&s, N_EFFECTS * PER_EFFECT};
    CU_ASSERT(th_loop_until(&loop, seen_enough, &w, 30000));
    TH_EQ_INT((int)json_object_size(s.values), N_EFFECTS * PER_EFFECT);
    for (int i = 0; i < N_EFFECTS; i++)
        for (int j = 0; j < PER_EFFECT; j++) {
            char val[64];
            snprintf(val, sizeof(val), "e%d-%d", i, j);
            CU_ASSERT_PTR_NOT_NULL(json_object_get(s.values, val));
        }
    /* No completion ran twice meanwhile. */
    for (int i = 0; i < N_EFFECTS; i++)
        TH_EQ_INT(st[i].done, 1);
    teardown(&loop, es, p, cons);
    json_decref(s.values);
    json_decref(props);
}

/* A message over the producer's limit cannot be fixed by sending it again:
 * failed() runs once, done() never, though the other produce was delivered. */
static void test_too_large_is_permanent(void)
{
    CU_ASSERT_FATAL(broker_up);
    json_t *props = json_pack("{s:s}", "message.max.bytes", "10000");
    gt_config_t c = config_with(props);
    char err[256];
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_producer_t *p = gt_producer_new(&loop, &c, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    gt_effects_t *es = gt_effects_new(&loop, p);
    eff_state_t st = {0};
    gt_effect_t *e = gt_effect_new(es, on_done, on_failed, &st);
    char *big = malloc(20000);
    memset(big, 'x', 20000);
    TH_EQ_INT(gt_effect_add(e, "t.big", "k", 1, "small", 5, NULL, 0), 0);
    TH_EQ_INT(gt_effect_add(e, "t.big", "k", 1, big, 20000, NULL, 0), 0);
    TH_EQ_INT(st.failed, 0); /* reported at seal, not inside add */
    gt_effect_seal(e);
    TH_EQ_INT(st.failed, 1);
    CU_ASSERT(st.failed_err < 0);
    th_loop_until(&loop, NULL, NULL, 500);
    TH_EQ_INT(st.failed, 1);
    TH_EQ_INT(st.done, 0);
    TH_EQ_INT(gt_effects_pending(es), 0);
    TH_EQ_INT((int)gt_effects_resends(es), 0);
    free(big);
    teardown(&loop, es, p, NULL);
    json_decref(props);
}

/* Abandon: no callback, freed once its delivery reports are in (ASan checks
 * the freeing). Closing the effects gives up one waiting for its backoff with
 * failed(err 0), never done(). */
static void test_abandon(void)
{
    CU_ASSERT_FATAL(broker_up);
    json_t *props = json_pack("{s:s}", "queue.buffering.max.messages", "1");
    gt_config_t c = config_with(props);
    char err[256];
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_producer_t *p = gt_producer_new(&loop, &c, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    gt_effects_t *es = gt_effects_new(&loop, p);
    eff_state_t a = {0}, b = {0};
    gt_effect_t *ea = gt_effect_new(es, on_done, on_failed, &a);
    TH_EQ_INT(gt_effect_add(ea, "t.abandon", "k", 1, "a", 1, NULL, 0), 0); /* fills the queue */
    gt_effect_t *eb = gt_effect_new(es, on_done, on_failed, &b);
    TH_EQ_INT(gt_effect_add(eb, "t.abandon", "k", 1, "b", 1, NULL, 0), 0); /* refused: waits */
    CU_ASSERT(gt_effects_resends(es) >= 1);
    gt_effect_seal(eb);
    gt_effect_abandon(ea);
    TH_EQ_INT(gt_effects_pending(es), 1);
    gt_effects_close(es); /* stopping */
    TH_EQ_INT(b.failed, 1);
    TH_EQ_INT(b.failed_err, 0);
    TH_EQ_INT(gt_effects_pending(es), 0);
    th_loop_until(&loop, NULL, NULL, 500);
    TH_EQ_INT(a.done + a.failed, 0);
    TH_EQ_INT(b.done, 0);
    teardown(&loop, es, p, NULL);
    json_decref(props);
}

static void test_stop(void)
{
    CU_ASSERT_FATAL(broker_up);
    int st = th_proc_stop(&broker, SIGTERM, 10000);
    CU_ASSERT(st != -1 && WIFEXITED(st));
    broker_up = 0;
}

int main(void)
{
    static const th_test_t tests[] = {
        {"start", test_start},
        {"refused_produces_arrive", test_refused_produces_arrive},
        {"too_large_is_permanent", test_too_large_is_permanent},
        {"abandon", test_abandon},
        {"stop", test_stop},
        {NULL, NULL},
    };
    gt_log_init("test_effect", GT_LOG_INFO);
    int rc = th_run("effect", tests);
    if (broker_up)
        th_proc_stop(&broker, SIGKILL, 5000);
    gt_metrics_free();
    return rc;
}
