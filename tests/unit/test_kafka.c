/* test_kafka.c - lib/kafka_producer.c and lib/kafka_consumer.c (on libuv) and the
 * gantry-kafka-dev tool, against the tool's mock cluster. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "harness.h"
#include "kafka.h"
#include "metrics.h"
#include "log.h"

#define N_BASIC 2000
#define MAX_PARTS 16

static const char *const test_topics = "# topics of test_kafka\n"
                                       "t.basic 4\n"
                                       "t.pause 2\n"
                                       "t.restart 3\n"
                                       "t.group 4\n"
                                       "t.stuck 1\n"
                                       "t.static 2\n";

static th_proc_t broker;
static int broker_up;
static char bootstrap[512];
static gt_config_t cfg;

/* ---- helpers ----------------------------------------------------------- */

/* Closes the handles of whatever is given, lets the loop finish them, then
 * frees; the loop must have nothing else left. */
static void teardown(uv_loop_t *loop, gt_producer_t *p, gt_consumer_t *c1, gt_consumer_t *c2)
{
    if (p)
        gt_producer_close_handles(p);
    if (c1)
        gt_consumer_close_handles(c1);
    if (c2)
        gt_consumer_close_handles(c2);
    uv_run(loop, UV_RUN_DEFAULT);
    gt_consumer_free(c1);
    gt_consumer_free(c2);
    if (p)
        gt_producer_free(p, 5000);
    TH_EQ_INT(uv_loop_close(loop), 0);
}

/* A plain librdkafka consumer that never subscribes: reads a group's
 * committed offsets and the watermarks without joining the group. */
static rd_kafka_t *checker_new(const char *group)
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", cfg.bootstrap_servers, why, sizeof(why));
    rd_kafka_conf_set(conf, "group.id", group, why, sizeof(why));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    CU_ASSERT_PTR_NOT_NULL_FATAL(rk);
    return rk;
}

static void checker_free(rd_kafka_t *rk)
{
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

/* Committed offset per partition (-1 when none); returns 0 or -1. */
static int committed(rd_kafka_t *rk, const char *topic, int nparts, int64_t *out)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    int rc = 0;
    for (int i = 0; i < nparts; i++)
        rd_kafka_topic_partition_list_add(l, topic, i);
    if (rd_kafka_committed(rk, l, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = -1;
    for (int i = 0; i < nparts && rc == 0; i++)
        out[i] = l->elems[i].offset >= 0 ? l->elems[i].offset : -1;
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

static int high_watermarks(rd_kafka_t *rk, const char *topic, int nparts, int64_t *hi)
{
    for (int i = 0; i < nparts; i++) {
        int64_t lo;
        if (rd_kafka_query_watermark_offsets(rk, topic, i, &lo, &hi[i], 5000))
            return -1;
    }
    return 0;
}

/* Produces n messages "<prefix><id>" with key "k<id>" and a traceparent
 * header; on_delivery counts into *delivered / *failed. */
typedef struct dcount {
    int delivered, failed;
} dcount_t;

static void on_delivery(int err, const char *errstr, void *opaque)
{
    dcount_t *d = opaque;
    if (err) {
        fprintf(stderr, "  delivery failed: %s\n", errstr);
        d->failed++;
    } else {
        d->delivered++;
    }
}

static int produce(gt_producer_t *p, const char *topic, const char *prefix, int from, int n,
                   dcount_t *d)
{
    for (int i = from; i < from + n; i++) {
        char key[32], val[64], tp[64];
        gt_header_t h[2] = {{"traceparent", tp}, {"empty", NULL}};
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "%s%d", prefix, i);
        snprintf(tp, sizeof(tp), "tp-%d", i);
        if (gt_producer_send(p, topic, key, strlen(key), val, strlen(val), h, 2, on_delivery, d))
            return -1;
    }
    return 0;
}

/* Waits for `want` deliveries. */
typedef struct dwait {
    dcount_t d;
    int want;
} dwait_t;

static int in_path(const char *prog)
{
    const char *path = getenv("PATH");
    char buf[1024];
    while (path && *path) {
        const char *colon = strchr(path, ':');
        size_t n = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
        if (access(buf, X_OK) == 0)
            return 1;
        path = colon ? colon + 1 : NULL;
    }
    return 0;
}

/* Runs the tool with up to two arguments (stderr discarded) and returns its
 * wait status. */
static int run_tool(const char *a1, const char *a2)
{
    th_proc_t p;
    const char *argv[] = {th_bin("tools/gantry-kafka-dev"), a1, a2, NULL};
    if (th_proc_start(&p, argv, "/dev/null") < 0)
        return -1;
    char line[256];
    th_proc_wait_line(&p, "\x01never", line, sizeof(line), 5000); /* to EOF */
    return th_proc_stop(&p, 0, 5000);
}

/* ---- tests ------------------------------------------------------------- */

static void test_tool_usage(void)
{
    int st = run_tool("--help", NULL);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    st = run_tool("--bogus", NULL);
    CU_ASSERT(WIFEXITED(st));
    TH_EQ_INT(WEXITSTATUS(st), 2);
    st = run_tool("--brokers", "zero");
    TH_EQ_INT(WEXITSTATUS(st), 2);
    st = run_tool("--topics", th_tmpfile(".txt", "ok 1\nbad/name 2\n"));
    TH_EQ_INT(WEXITSTATUS(st), 2);
}

static void test_start(void)
{
    const char *argv[] = {th_bin("tools/gantry-kafka-dev"), "--topics",
                          th_tmpfile(".txt", test_topics), NULL};
    TH_EQ_INT(th_proc_start(&broker, argv, NULL), 0);
    TH_EQ_INT(th_proc_wait_line(&broker, "bootstrap=", bootstrap, sizeof(bootstrap), 15000), 0);
    CU_ASSERT_FATAL(strncmp(bootstrap, "127.0.0.1:", 10) == 0);
    cfg.bootstrap_servers = bootstrap;
    cfg.commit_interval_ms = 100;
    /* Also exercises kafka_props. The mock holds a rejoining group for up
     * to the session timeout, so a short one keeps the restart test quick. */
    cfg.kafka_props =
        json_pack("{s:s, s:s}", "session.timeout.ms", "3000", "heartbeat.interval.ms", "500");
    broker_up = 1;
}

static void test_kcat_lists_topics(void)
{
    char cmd[700], buf[512], all[16384] = "";
    CU_ASSERT_FATAL(broker_up);
    if (!in_path("kcat")) {
        fprintf(stderr, "  kcat not on PATH: skipped\n");
        return;
    }
    snprintf(cmd, sizeof(cmd), "kcat -b '%s' -L -m 10 2>/dev/null", bootstrap);
    FILE *f = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    while (fgets(buf, sizeof(buf), f))
        strncat(all, buf, sizeof(all) - strlen(all) - 1);
    TH_EQ_INT(pclose(f), 0);
    CU_ASSERT(strstr(all, "topic \"t.basic\" with 4 partitions") != NULL);
    CU_ASSERT(strstr(all, "topic \"t.pause\" with 2 partitions") != NULL);
    CU_ASSERT(strstr(all, "topic \"t.restart\" with 3 partitions") != NULL);
    CU_ASSERT(strstr(all, "topic \"t.group\" with 4 partitions") != NULL);
}

/* -- produce 2000, consume in a group, done out of order, commits reach the
 *    high watermarks */

#define HOLD 37

typedef struct basic {
    dwait_t dw;
    gt_consumer_t *c;
    unsigned char seen[N_BASIC];
    int received, dups, bad, headers_ok;
    int per_part[MAX_PARTS];
    gt_msg_t *held[HOLD];
    int n_held;
} basic_t;

/* Done in a scrambled order: reverse, every other one first. */
static void basic_flush(basic_t *b)
{
    for (int i = b->n_held - 1; i >= 0; i -= 2)
        gt_consumer_done(b->c, b->held[i]);
    for (int i = b->n_held - 2; i >= 0; i -= 2)
        gt_consumer_done(b->c, b->held[i]);
    b->n_held = 0;
}

static void basic_on_msg(gt_consumer_t *c, gt_msg_t *m, void *arg)
{
    basic_t *b = arg;
    char val[32], tp[32], want[32];
    int id;
    b->c = c;
    snprintf(val, sizeof(val), "%.*s", (int)m->len, (const char *)m->value);
    if (sscanf(val, "m%d", &id) != 1 || id < 0 || id >= N_BASIC) {
        b->bad++;
    } else {
        if (b->seen[id]++)
            b->dups++;
        snprintf(want, sizeof(want), "tp-%d", id);
        if (gt_msg_header(m, "traceparent", tp, sizeof(tp)) && strcmp(tp, want) == 0 &&
            gt_msg_header(m, "empty", tp, sizeof(tp)) && tp[0] == '\0' &&
            !gt_msg_header(m, "absent", tp, sizeof(tp)) &&
            !gt_msg_header(m, "traceparent", tp, 3) /* does not fit */)
            b->headers_ok++;
    }
    if (m->partition >= 0 && m->partition < MAX_PARTS)
        b->per_part[m->partition]++;
    b->received++;
    b->held[b->n_held++] = m;
    if (b->n_held == HOLD)
        basic_flush(b);
}

static int basic_all_received(void *arg)
{
    basic_t *b = arg;
    /* The tail that never fills a batch is done from here. */
    if (b->n_held && b->received >= N_BASIC)
        basic_flush(b);
    return b->received >= N_BASIC && b->dw.d.delivered + b->dw.d.failed >= N_BASIC;
}

typedef struct commit_wait {
    rd_kafka_t *checker;
    const char *topic;
    int nparts;
    const int64_t *want;
    int64_t got[MAX_PARTS];
    int64_t next_check;
} commit_wait_t;

/* rd_kafka_committed blocks: checked every 100 ms only. */
static int commits_reached(void *arg)
{
    commit_wait_t *w = arg;
    if (th_now_ms() < w->next_check)
        return 0;
    w->next_check = th_now_ms() + 100;
    if (committed(w->checker, w->topic, w->nparts, w->got) < 0)
        return 0;
    for (int i = 0; i < w->nparts; i++)
        if (w->got[i] != w->want[i])
            return 0;
    return 1;
}

static void test_produce_consume(void)
{
    static basic_t b;
    uv_loop_t loop;
    char err[256];
    const char *topics[] = {"t.basic", NULL};
    int64_t hi[4];
    CU_ASSERT_FATAL(broker_up);
    memset(&b, 0, sizeof(b));
    b.dw.want = N_BASIC;
    uv_loop_init(&loop);

    gt_producer_t *p = gt_producer_new(&loop, &cfg, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    gt_consumer_opts_t o = {.group_id = "g-basic",
                            .topics = topics,
                            .cb = basic_on_msg,
                            .arg = &b,
                            .max_per_wakeup = 7};
    gt_consumer_t *c = gt_consumer_new(&loop, &cfg, &o, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    b.c = c;

    int64_t t0 = th_now_ms();
    TH_EQ_INT(produce(p, "t.basic", "m", 0, N_BASIC, &b.dw.d), 0);
    TH_EQ_INT(gt_producer_outstanding(p), N_BASIC);
    CU_ASSERT(th_loop_until(&loop, basic_all_received, &b, 60000));
    fprintf(stderr, "  produced and consumed %d in %" PRId64 " ms\n", b.received, th_now_ms() - t0);
    TH_EQ_INT(b.dw.d.delivered, N_BASIC);
    TH_EQ_INT(b.dw.d.failed, 0);
    TH_EQ_INT(gt_producer_outstanding(p), 0);
    TH_EQ_INT(b.received, N_BASIC);
    TH_EQ_INT(b.dups, 0);
    TH_EQ_INT(b.bad, 0);
    TH_EQ_INT(b.headers_ok, N_BASIC);
    TH_EQ_INT(gt_consumer_in_flight(c), 0);
    int missing = 0, used_parts = 0;
    for (int i = 0; i < N_BASIC; i++)
        missing += b.seen[i] == 0;
    for (int i = 0; i < 4; i++)
        used_parts += b.per_part[i] > 0;
    TH_EQ_INT(missing, 0);
    CU_ASSERT(used_parts > 1); /* keys spread over partitions */

    /* The commit timer, not the final commit of gt_consumer_free, gets the
     * group to the end of every partition. */
    rd_kafka_t *chk = checker_new("g-basic");
    TH_EQ_INT(high_watermarks(chk, "t.basic", 4, hi), 0);
    TH_EQ_INT(hi[0] + hi[1] + hi[2] + hi[3], N_BASIC);
    commit_wait_t w = {chk, "t.basic", 4, hi, {0}, 0};
    CU_ASSERT(th_loop_until(&loop, commits_reached, &w, 15000));
    for (int i = 0; i < 4; i++)
        TH_EQ_INT(w.got[i], hi[i]);

    teardown(&loop, p, c, NULL);
    TH_EQ_INT(committed(chk, "t.basic", 4, w.got), 0);
    for (int i = 0; i < 4; i++)
        TH_EQ_INT(w.got[i], hi[i]);
    checker_free(chk);
}

/* -- pause / resume ------------------------------------------------------ */

typedef struct pr {
    int received, dups, from_b, pause_at, paused_at_count;
    unsigned char seen[400];
} pr_t;

static void pr_on_msg(gt_consumer_t *c, gt_msg_t *m, void *arg)
{
    pr_t *s = arg;
    int id;
    char val[32];
    snprintf(val, sizeof(val), "%.*s", (int)m->len, (const char *)m->value);
    if (sscanf(val, "p%d", &id) == 1 && id >= 0 && id < 400) {
        if (s->seen[id]++)
            s->dups++;
        if (id >= 200)
            s->from_b++;
    }
    s->received++;
    gt_consumer_done(c, m);
    if (s->received == s->pause_at) {
        gt_consumer_pause(c);
        s->paused_at_count = s->received;
    }
}

static int pr_received_200(void *arg)
{
    return ((pr_t *)arg)->received >= 200;
}

static int pr_received_400(void *arg)
{
    return ((pr_t *)arg)->received >= 400;
}

static int dw_done(void *arg)
{
    dwait_t *dw = arg;
    return dw->d.delivered + dw->d.failed >= dw->want;
}

static void test_pause_resume(void)
{
    static pr_t s;
    uv_loop_t loop;
    char err[256];
    const char *topics[] = {"t.pause", NULL};
    dwait_t dw = {{0, 0}, 200};
    CU_ASSERT_FATAL(broker_up);
    memset(&s, 0, sizeof(s));
    s.pause_at = -1;
    uv_loop_init(&loop);
    gt_producer_t *p = gt_producer_new(&loop, &cfg, err, sizeof(err));
    /* A backlog smaller than batch B: librdkafka itself gets paused too. */
    gt_consumer_opts_t o = {
        .group_id = "g-pause", .topics = topics, .cb = pr_on_msg, .arg = &s, .max_backlog = 20};
    gt_consumer_t *c = gt_consumer_new(&loop, &cfg, &o, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);

    /* Batch A: consumed fully. */
    TH_EQ_INT(produce(p, "t.pause", "p", 0, 200, &dw.d), 0);
    CU_ASSERT(th_loop_until(&loop, pr_received_200, &s, 30000));
    TH_EQ_INT(s.received, 200);

    /* Paused: batch B is produced but not fetched. Proving an absence
     * needs a time window: one second is many fetch rounds here. */
    gt_consumer_pause(c);
    dw.want = 300;
    TH_EQ_INT(produce(p, "t.pause", "p", 200, 100, &dw.d), 0);
    CU_ASSERT(th_loop_until(&loop, dw_done, &dw, 15000));
    th_loop_until(&loop, NULL, NULL, 1000);
    TH_EQ_INT(s.from_b, 0);
    TH_EQ_INT(s.received, 200);

    /* Resumed: batch B arrives; pausing again from inside the callback
     * after 50 of them, then resuming, loses and repeats nothing. */
    s.pause_at = 250;
    gt_consumer_resume(c);
    dw.want = 400;
    TH_EQ_INT(produce(p, "t.pause", "p", 300, 100, &dw.d), 0);
    CU_ASSERT(th_loop_until(&loop, dw_done, &dw, 15000));
    th_loop_until(&loop, NULL, NULL, 1000);
    fprintf(stderr, "  paused at %d messages, %d handed out after the pause call\n",
            s.paused_at_count, s.received - s.paused_at_count);
    CU_ASSERT(s.received < 400);
    gt_consumer_resume(c);
    CU_ASSERT(th_loop_until(&loop, pr_received_400, &s, 30000));
    TH_EQ_INT(s.received, 400);
    TH_EQ_INT(s.dups, 0);
    TH_EQ_INT(dw.d.failed, 0);
    teardown(&loop, p, c, NULL);
}

/* -- restart in the same group resumes at the first offset not done ------- */

#define RS_N 300

typedef struct rs {
    int received, dups;
    int64_t hold[3];
    int64_t first[3];
    unsigned char seen[RS_N];
    int n_held;
} rs_t;

static void rs_on_msg(gt_consumer_t *c, gt_msg_t *m, void *arg)
{
    rs_t *s = arg;
    int id = -1;
    char val[32];
    snprintf(val, sizeof(val), "%.*s", (int)m->len, (const char *)m->value);
    if (sscanf(val, "r%d", &id) == 1 && id >= 0 && id < RS_N && s->seen[id]++)
        s->dups++;
    s->received++;
    if (m->partition < 0 || m->partition >= 3)
        return;
    if (s->first[m->partition] < 0 || m->offset < s->first[m->partition])
        s->first[m->partition] = m->offset;
    if (m->offset == s->hold[m->partition]) {
        s->n_held++; /* never done: gt_consumer_free releases it */
        return;
    }
    gt_consumer_done(c, m);
}

typedef struct count_wait {
    int *counter;
    int want;
} count_wait_t;

static int count_reached(void *arg)
{
    count_wait_t *w = arg;
    return *w->counter >= w->want;
}

static void test_restart_resumes(void)
{
    static rs_t s;
    uv_loop_t loop;
    char err[256];
    const char *topics[] = {"t.restart", NULL};
    dwait_t dw = {{0, 0}, RS_N};
    int64_t hi[3];
    CU_ASSERT_FATAL(broker_up);
    memset(&s, 0, sizeof(s));
    uv_loop_init(&loop);
    gt_producer_t *p = gt_producer_new(&loop, &cfg, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    TH_EQ_INT(produce(p, "t.restart", "r", 0, RS_N, &dw.d), 0);
    CU_ASSERT(th_loop_until(&loop, dw_done, &dw, 15000));
    TH_EQ_INT(dw.d.delivered, RS_N);

    rd_kafka_t *chk = checker_new("g-restart");
    TH_EQ_INT(high_watermarks(chk, "t.restart", 3, hi), 0);
    int expect_b = 0;
    for (int i = 0; i < 3; i++) {
        s.hold[i] = hi[i] > 0 ? hi[i] / 2 : -1;
        s.first[i] = -1;
        expect_b += hi[i] > 0 ? (int)(hi[i] - s.hold[i]) : 0;
    }

    /* First consumer: everything done but one message per partition. */
    gt_consumer_opts_t o = {.group_id = "g-restart", .topics = topics, .cb = rs_on_msg, .arg = &s};
    gt_consumer_t *c = gt_consumer_new(&loop, &cfg, &o, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    count_wait_t cw = {&s.received, RS_N};
    CU_ASSERT(th_loop_until(&loop, count_reached, &cw, 30000));
    TH_EQ_INT(s.received, RS_N);
    int64_t want[3];
    for (int i = 0; i < 3; i++)
        want[i] = hi[i] > 0 ? s.hold[i] : -1;
    commit_wait_t w = {chk, "t.restart", 3, want, {0}, 0};
    CU_ASSERT(th_loop_until(&loop, commits_reached, &w, 15000));
    TH_EQ_INT(gt_consumer_in_flight(c), s.n_held);
    gt_consumer_close_handles(c);
    uv_run(&loop, UV_RUN_NOWAIT); /* the producer stays: one round closes c's handles */
    gt_consumer_free(c);
    TH_EQ_INT(committed(chk, "t.restart", 3, w.got), 0);
    for (int i = 0; i < 3; i++)
        TH_EQ_INT(w.got[i], want[i]);

    /* Second consumer, same group: starts at each held offset. */
    memset(s.seen, 0, sizeof(s.seen));
    s.received = s.dups = 0;
    for (int i = 0; i < 3; i++) {
        s.first[i] = -1;
        s.hold[i] = -1; /* done everything now */
    }
    int64_t t0 = th_now_ms();
    c = gt_consumer_new(&loop, &cfg, &o, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    cw.want = expect_b;
    CU_ASSERT(th_loop_until(&loop, count_reached, &cw, 30000));
    fprintf(stderr, "  restarted consumer got its first %d messages after %" PRId64 " ms\n",
            s.received, th_now_ms() - t0);
    commit_wait_t w2 = {chk, "t.restart", 3, hi, {0}, 0};
    CU_ASSERT(th_loop_until(&loop, commits_reached, &w2, 15000));
    TH_EQ_INT(s.received, expect_b);
    TH_EQ_INT(s.dups, 0);
    for (int i = 0; i < 3; i++)
        if (hi[i] > 0)
            TH_EQ_INT(s.first[i], want[i]);
    teardown(&loop, p, c, NULL);
    checker_free(chk);
}

/* -- two members of one group share the partitions ----------------------- */

#define TM_MAX 20000
#define TM_HOLD 20

typedef struct twom {
    int per_member[2];
    int distinct, dups;
    int produced;
    unsigned char seen[TM_MAX];
    gt_producer_t *p;
    gt_consumer_t *c0;
    dcount_t d;
    gt_msg_t *held[TM_HOLD]; /* member 0 keeps these across the rebalance */
    int n_held;
    int64_t next_produce;
} twom_t;

static void tm_on_msg(gt_consumer_t *c, gt_msg_t *m, void *arg, int member)
{
    twom_t *s = arg;
    int id = -1;
    char val[32];
    snprintf(val, sizeof(val), "%.*s", (int)m->len, (const char *)m->value);
    if (sscanf(val, "g%d", &id) == 1 && id >= 0 && id < TM_MAX) {
        if (s->seen[id]++)
            s->dups++;
        else
            s->distinct++;
    }
    s->per_member[member]++;
    if (member == 0 && s->n_held < TM_HOLD) {
        s->held[s->n_held++] = m;
        return;
    }
    gt_consumer_done(c, m);
}

static void tm_on_msg0(gt_consumer_t *c, gt_msg_t *m, void *arg)
{
    tm_on_msg(c, m, arg, 0);
}

static void tm_on_msg1(gt_consumer_t *c, gt_msg_t *m, void *arg)
{
    tm_on_msg(c, m, arg, 1);
}

/* Keeps a trickle of messages flowing until member `want` has some. */
static int tm_trickle(twom_t *s, int want)
{
    if (s->per_member[want] > 0)
        return 1;
    if (s->produced + 10 <= TM_MAX && th_now_ms() >= s->next_produce) {
        produce(s->p, "t.group", "g", s->produced, 10, &s->d);
        s->produced += 10;
        s->next_produce = th_now_ms() + 50;
    }
    return 0;
}

static int tm_first_busy(void *arg)
{
    return tm_trickle(arg, 0);
}

static int tm_second_busy(void *arg)
{
    return tm_trickle(arg, 1);
}

static int tm_all_seen(void *arg)
{
    twom_t *s = arg;
    return s->d.delivered + s->d.failed >= s->produced && s->distinct >= s->produced;
}

/* A second member joins a busy group: eager rebalance, commit on revoke,
 * and messages of revoked partitions done afterwards. */
static void test_two_members(void)
{
    static twom_t s;
    uv_loop_t loop;
    char err[256];
    const char *topics[] = {"t.group", NULL};
    CU_ASSERT_FATAL(broker_up);
    memset(&s, 0, sizeof(s));
    uv_loop_init(&loop);
    s.p = gt_producer_new(&loop, &cfg, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s.p);
    gt_consumer_opts_t o0 = {.group_id = "g-two", .topics = topics, .cb = tm_on_msg0, .arg = &s};
    gt_consumer_opts_t o1 = {.group_id = "g-two", .topics = topics, .cb = tm_on_msg1, .arg = &s};
    gt_consumer_t *c0 = gt_consumer_new(&loop, &cfg, &o0, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c0);
    int64_t t0 = th_now_ms();
    CU_ASSERT(th_loop_until(&loop, tm_first_busy, &s, 30000));
    fprintf(stderr, "  first member consuming after %" PRId64 " ms\n", th_now_ms() - t0);

    gt_consumer_t *c1 = gt_consumer_new(&loop, &cfg, &o1, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c1);
    t0 = th_now_ms();
    CU_ASSERT(th_loop_until(&loop, tm_second_busy, &s, 30000));
    fprintf(stderr, "  second member consuming after %" PRId64 " ms\n", th_now_ms() - t0);
    /* Member 0 lost partitions meanwhile; finishing its held messages now
     * must only free those of revoked partitions. */
    TH_EQ_INT(gt_consumer_in_flight(c0), s.n_held);
    for (int i = 0; i < s.n_held; i++)
        gt_consumer_done(c0, s.held[i]);
    TH_EQ_INT(gt_consumer_in_flight(c0), 0);

    CU_ASSERT(th_loop_until(&loop, tm_all_seen, &s, 30000));
    /* Redeliveries are expected: member 0's held messages kept the commits
     * of its revoked partitions back. */
    fprintf(stderr, "  %d produced, members got %d + %d, %d redelivered\n", s.produced,
            s.per_member[0], s.per_member[1], s.dups);
    CU_ASSERT(s.per_member[0] > 0);
    CU_ASSERT(s.per_member[1] > 0);
    TH_EQ_INT(s.distinct, s.produced);
    TH_EQ_INT(s.d.failed, 0);
    teardown(&loop, s.p, c0, c1);
}

/* -- a revoke waits for the messages in flight on its partitions ---------- */

typedef struct revoke_wait {
    twom_t *s;
    gt_consumer_t *c0;
} revoke_wait_t;

static int rw_revoking(void *arg)
{
    revoke_wait_t *w = arg;
    tm_trickle(w->s, 1);
    return gt_consumer_revoking(w->c0) > 0;
}

static double revokes(const char *group, const char *outcome)
{
    return gt_metric_value(gt_metrics_counter("gantry_consumer_revokes_total", "", "group,outcome"),
                           group, outcome);
}

/* Member 0 holds messages when member 1 joins. With a grace, member 0 keeps
 * its partitions (the group waits) until those messages are done, or, when
 * they never are, until the grace runs out. */
static void revoke_grace(const char *group, int64_t grace_ms, int release)
{
    static twom_t s;
    uv_loop_t loop;
    char err[256];
    const char *topics[] = {"t.group", NULL};
    gt_config_t gcfg = cfg;
    gcfg.kafka_revoke_grace_ms = grace_ms;
    memset(&s, 0, sizeof(s));
    uv_loop_init(&loop);
    s.p = gt_producer_new(&loop, &gcfg, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s.p);
    gt_consumer_opts_t o0 = {.group_id = group, .topics = topics, .cb = tm_on_msg0, .arg = &s};
    gt_consumer_opts_t o1 = {.group_id = group, .topics = topics, .cb = tm_on_msg1, .arg = &s};
    gt_consumer_t *c0 = gt_consumer_new(&loop, &gcfg, &o0, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c0);
    CU_ASSERT(th_loop_until(&loop, tm_first_busy, &s, 30000));
    CU_ASSERT_FATAL(s.n_held > 0);

    gt_consumer_t *c1 = gt_consumer_new(&loop, &gcfg, &o1, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(c1);
    revoke_wait_t w = {&s, c0};
    CU_ASSERT_FATAL(th_loop_until(&loop, rw_revoking, &w, 30000));
    /* The group cannot finish its rebalance while member 0 keeps them. */
    TH_EQ_INT(s.per_member[1], 0);
    TH_EQ_INT(gt_consumer_in_flight(c0), s.n_held);
    int64_t t0 = th_now_ms();
    if (release) {
        for (int i = 0; i < s.n_held; i++)
            gt_consumer_done(c0, s.held[i]);
        s.n_held = TM_HOLD; /* hold no more */
    }
    CU_ASSERT(th_loop_until(&loop, tm_second_busy, &s, 30000));
    TH_EQ_INT(gt_consumer_revoking(c0), 0);
    fprintf(stderr, "  %s: member 1 consuming %" PRId64 " ms after %s\n", group, th_now_ms() - t0,
            release ? "member 0 finished its work" : "the revoke began waiting");
    TH_EQ_INT(revokes(group, release ? "after_work" : "grace_expired"), 1);
    if (!release) { /* done after the hand-over: only freed */
        for (int i = 0; i < s.n_held; i++)
            gt_consumer_done(c0, s.held[i]);
    }
    TH_EQ_INT(gt_consumer_in_flight(c0), 0);
    /* Everything produced is read (the topic also holds earlier tests' messages). */
    CU_ASSERT(th_loop_until(&loop, tm_all_seen, &s, 30000));
    teardown(&loop, s.p, c0, c1);
}

static void test_revoke_waits_for_work(void)
{
    CU_ASSERT_FATAL(broker_up);
    revoke_grace("g-grace-done", 20000, 1);
}

static void test_revoke_grace_expires(void)
{
    CU_ASSERT_FATAL(broker_up);
    revoke_grace("g-grace-over", 1500, 0);
}

/* -- stuck is visible: a message handed out and never done holds the lag
 *    (measured against the committed offset) up and its age grows */

#define STUCK_N 5

typedef struct stuck {
    gt_msg_t *first;
    int received;
} stuck_t;

static void stuck_on_msg(gt_consumer_t *c, gt_msg_t *m, void *arg)
{
    stuck_t *s = arg;
    s->received++;
    if (m->offset == 0 && !s->first)
        s->first = m; /* held: the stuck one */
    else
        gt_consumer_done(c, m);
}

static double stuck_lag(void)
{
    return gt_metric_value(gt_metrics_gauge("gantry_consumer_lag", "", "group,topic,partition"),
                           "g-stuck", "t.stuck", "0");
}

static double stuck_age(void)
{
    return gt_metric_value(
        gt_metrics_gauge("gantry_consumer_oldest_undone_seconds", "", "group,topic,partition"),
        "g-stuck", "t.stuck", "0");
}

typedef struct stuck_wait {
    double lag_min, lag_max, age_min, age_max;
} stuck_wait_t;

static int stuck_reached(void *arg)
{
    stuck_wait_t *w = arg;
    double lag = stuck_lag(), age = stuck_age();
    return lag >= w->lag_min && lag <= w->lag_max && age >= w->age_min && age <= w->age_max;
}

static void test_stuck_visible(void)
{
    CU_ASSERT_FATAL(broker_up);
    uv_loop_t loop;
    char err[256];
    stuck_t s = {0};
    dwait_t dw = {{0, 0}, STUCK_N};
    const char *topics[] = {"t.stuck", NULL};
    uv_loop_init(&loop);
    gt_producer_t *p = gt_producer_new(&loop, &cfg, err, sizeof(err));
    gt_consumer_opts_t o = {.group_id = "g-stuck", .topics = topics, .cb = stuck_on_msg, .arg = &s};
    gt_consumer_t *c = gt_consumer_new(&loop, &cfg, &o, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    TH_EQ_INT(produce(p, "t.stuck", "s", 0, STUCK_N, &dw.d), 0);
    count_wait_t cw = {&s.received, STUCK_N};
    CU_ASSERT_FATAL(th_loop_until(&loop, count_reached, &cw, 30000));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s.first);

    /* The four after it are done and read, but nothing can be committed past
     * the first: all five are lag, and its age grows. */
    stuck_wait_t held = {STUCK_N, STUCK_N, 0.5, 1e9};
    CU_ASSERT(th_loop_until(&loop, stuck_reached, &held, 10000));
    double age1 = stuck_age();
    TH_EQ_INT((int)stuck_lag(), STUCK_N);
    stuck_wait_t older = {STUCK_N, STUCK_N, age1 + 0.5, 1e9};
    CU_ASSERT(th_loop_until(&loop, stuck_reached, &older, 10000));
    fprintf(stderr, "  stuck: lag %.0f, oldest undone %.1f s then %.1f s\n", stuck_lag(), age1,
            stuck_age());
    TH_EQ_INT(gt_consumer_in_flight(c), 1);

    /* Done: the commit goes through, both return to 0. */
    gt_consumer_done(c, s.first);
    stuck_wait_t clear = {0, 0, 0, 0};
    CU_ASSERT(th_loop_until(&loop, stuck_reached, &clear, 10000));
    TH_EQ_INT((int)stuck_lag(), 0);
    CU_ASSERT(stuck_age() == 0);
    teardown(&loop, p, c, NULL);
}

/* -- --port: a fixed bootstrap port in front of the mock cluster ---------- */

typedef struct fp {
    int received;
} fp_t;

static void fp_on_msg(gt_consumer_t *c, gt_msg_t *m, void *arg)
{
    ((fp_t *)arg)->received++;
    gt_consumer_done(c, m);
}

static void test_fixed_port(void)
{
    th_proc_t dev;
    char port[16], line[256], want[64], err[256];
    snprintf(port, sizeof(port), "%d", th_free_port());
    const char *argv[] = {
        th_bin("tools/gantry-kafka-dev"), "--brokers", "1", "--port", port, "--topics",
        th_tmpfile(".txt", "t.fixed\n"),  NULL};
    TH_EQ_INT(th_proc_start(&dev, argv, NULL), 0);
    TH_EQ_INT(th_proc_wait_line(&dev, "bootstrap=", line, sizeof(line), 15000), 0);
    snprintf(want, sizeof(want), "127.0.0.1:%s", port);
    TH_EQ_STR(line, want);

    gt_config_t c2 = {0};
    c2.bootstrap_servers = line;
    uv_loop_t loop;
    uv_loop_init(&loop);
    fp_t s = {0};
    dwait_t dw = {{0, 0}, 20};
    const char *topics[] = {"t.fixed", NULL};
    gt_producer_t *p = gt_producer_new(&loop, &c2, err, sizeof(err));
    gt_consumer_opts_t o = {.group_id = "g-fixed", .topics = topics, .cb = fp_on_msg, .arg = &s};
    gt_consumer_t *c = gt_consumer_new(&loop, &c2, &o, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    TH_EQ_INT(produce(p, "t.fixed", "f", 0, 20, &dw.d), 0);
    count_wait_t cw = {&s.received, 20};
    CU_ASSERT(th_loop_until(&loop, count_reached, &cw, 30000));
    TH_EQ_INT(s.received, 20);
    TH_EQ_INT(dw.d.delivered, 20);
    teardown(&loop, p, c, NULL);

    int st = th_proc_stop(&dev, SIGTERM, 10000);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* kafka.static_membership: the consumer joins with group.instance.id (the
 * mock accepts it, and ignores it) and consumes as usual. */
static void test_static_member(void)
{
    CU_ASSERT_FATAL(broker_up);
    char err[256];
    uv_loop_t loop;
    uv_loop_init(&loop);
    gt_config_t scfg = cfg;
    scfg.kafka_static_membership = 1;
    fp_t s = {0};
    dwait_t dw = {{0, 0}, 20};
    const char *topics[] = {"t.static", NULL};
    gt_producer_t *p = gt_producer_new(&loop, &scfg, err, sizeof(err));
    gt_consumer_opts_t o = {.group_id = "g-static",
                            .topics = topics,
                            .cb = fp_on_msg,
                            .arg = &s,
                            .instance_id = "static-1"};
    gt_consumer_t *c = gt_consumer_new(&loop, &scfg, &o, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    TH_EQ_INT(produce(p, "t.static", "m", 0, 20, &dw.d), 0);
    count_wait_t cw = {&s.received, 20};
    CU_ASSERT(th_loop_until(&loop, count_reached, &cw, 30000));
    TH_EQ_INT(s.received, 20);
    teardown(&loop, p, c, NULL);
}

static void test_stop(void)
{
    CU_ASSERT_FATAL(broker_up);
    int st = th_proc_stop(&broker, SIGTERM, 10000);
    CU_ASSERT(st != -1 && WIFEXITED(st));
    TH_EQ_INT(WEXITSTATUS(st), 0);
    broker_up = 0;
}

int main(void)
{
    static const th_test_t tests[] = {
        {"tool_usage", test_tool_usage},
        {"start", test_start},
        {"kcat_lists_topics", test_kcat_lists_topics},
        {"produce_consume", test_produce_consume},
        {"pause_resume", test_pause_resume},
        {"restart_resumes", test_restart_resumes},
        {"two_members", test_two_members},
        {"revoke_waits_for_work", test_revoke_waits_for_work},
        {"revoke_grace_expires", test_revoke_grace_expires},
        {"stuck_visible", test_stuck_visible},
        {"fixed_port", test_fixed_port},
        {"static_member", test_static_member},
        {"stop", test_stop},
        {NULL, NULL},
    };
    gt_log_init("test_kafka", GT_LOG_INFO);
    int rc = th_run("kafka", tests);
    if (broker_up)
        th_proc_stop(&broker, SIGKILL, 5000);
    json_decref(cfg.kafka_props);
    return rc;
}
