/* test_e2e_effects.c - refused produces on real processes: the dispatcher and the worker
 * run with a producer queue of one message (queue.buffering.max.messages=1), so most of
 * what they produce is refused at first and sent again by lib/effect.c. Every request still
 * gets exactly one result (on gantry.results, and on its reply_topic when it names one),
 * every succeeded task is billed once, no allocation stays outstanding, and the committed
 * offsets reach the end of the input topics: nothing lost, nothing stuck. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

#define N 100
#define N_REPLY 10
#define REPLY "e2e.effect-replies"

static th_cluster_t cl;

static int produce_requests(void)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", cl.bootstrap, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk)
        return -1;
    int rc = 0;
    for (int i = 0; i < N && rc == 0; i++) {
        char id[64], v[512];
        snprintf(id, sizeof(id), "effect-e2e-%d", i);
        snprintf(v, sizeof(v),
                 "{\"schema\": \"gantry.request.v1\", \"request_id\": \"%s\", \"tenant_id\": "
                 "\"t1\", \"kind\": \"generate\", \"model\": \"small\", \"input\": \"hello %d\"%s}",
                 id, i, i < N_REPLY ? ", \"reply_topic\": \"" REPLY "\"" : "");
        if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("gantry.requests"),
                              RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE(v, strlen(v)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR)
            rc = -1;
    }
    if (rd_kafka_flush(rk, 20000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = -1;
    rd_kafka_destroy(rk);
    return rc;
}

static int results_complete(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, "gantry.results") >= N;
}

static int caught_up(void *arg)
{
    (void)arg;
    return th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.requests") &&
           th_group_caught_up(cl.bootstrap, "gantry-dispatcher", "gantry.task-results");
}

static int replies_complete(void *arg)
{
    (void)arg;
    return th_topic_count(cl.bootstrap, REPLY) >= N_REPLY;
}

static void test_refused_produces(void)
{
    th_cluster_opts_t o = {.workers = 1,
                           .latency = "5-20",
                           .extra_config = "{\"kafka\": {\"producer_properties\":"
                                           " {\"queue.buffering.max.messages\": \"1\"}}}"};
    CU_ASSERT_FATAL(th_cluster_start(&cl, &o) == 0);
    CU_ASSERT_FATAL(produce_requests() == 0);
    CU_ASSERT_FATAL(th_poll(results_complete, NULL, 120000));
    CU_ASSERT(th_poll(caught_up, NULL, 60000));
    CU_ASSERT(th_poll(replies_complete, NULL, 30000));
    CU_ASSERT(th_poll(th_cluster_usage_complete, &cl, 60000));
    CU_ASSERT(th_poll(th_cluster_released_all, &cl, 30000));
    th_check_one_result_each(&cl, N);
    TH_EQ_INT(th_topic_count(cl.bootstrap, REPLY), N_REPLY);
    th_check_billed_once(&cl);
    TH_EQ_INT(th_topic_count(cl.bootstrap, "gantry.dlq"), 0);
    /* The queue did refuse: the effects sent again (logged at most once a second). */
    long d = th_log_count(&cl, "dispatcher.log", "sending again");
    long w = th_log_count(&cl, "worker-0.log", "sending again");
    fprintf(stderr, "  re-send lines: dispatcher %ld, worker %ld\n", d, w);
    CU_ASSERT(d > 0);
    CU_ASSERT(w > 0);
    th_cluster_stop(&cl);
    TH_EQ_INT(cl.dispatcher.status, 0);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"a producer queue of one: every request answered once, nothing stuck",
         test_refused_produces},
        {NULL, NULL},
    };
    int rc = th_run("e2e_effects", tests);
    th_cluster_stop(&cl);
    return rc;
}
